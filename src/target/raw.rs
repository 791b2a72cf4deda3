//! Sparse raw output: the disk's bytes, zero runs left as holes.

use super::output::OutputFile;
use super::stream::{stream, write_sparse, Piece};
use super::{target_size, WriteOptions, WriteReport};
use crate::block::BlockSource;
use crate::error::Result;
use crate::limits::CHUNK_BYTES;

/// Stream the disk's data into `out` (holes for zeros), then pad with a hole to
/// `size`. `seen` is called in order with every data piece before it is written.
pub fn write_data(
    src: &dyn BlockSource,
    out: &mut OutputFile,
    size: u64,
    mut seen: impl FnMut(u64, &[u8]),
) -> Result<()> {
    stream(
        src,
        CHUNK_BYTES as u64,
        |_, _| Ok(()),
        |p| match p {
            Piece::Data { offset, buf, .. } => {
                seen(offset, &buf);
                write_sparse(out, offset, buf)
            }
            Piece::Zero { len, .. } => out.skip_zeros(len),
        },
    )?;
    out.skip_zeros(size - src.size())
}

/// Write `src` as sparse raw.
pub fn write(
    src: &dyn BlockSource,
    mut out: OutputFile,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let size = target_size(src.size(), opts.size)?;
    write_data(src, &mut out, size, |_, _| {})?;
    let output = out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes: Vec::new(),
    })
}
