//! Sparse raw output: the disk's bytes, zero runs left as holes.

use super::output::OutputFile;
use super::stream::{data_runs, placed_sparse, stream, Piece};
use super::{target_size, WriteOptions, WriteReport};
use crate::block::BlockSource;
use crate::error::Result;
use crate::limits::CHUNK_BYTES;
use std::ops::Range;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

/// What a worker did with one data piece.
struct Placed {
    /// Its non-zero ranges, already written in place.
    runs: Vec<Range<usize>>,
    /// XXH3-128 of the piece, when a content hash is wanted and it is not all zeros.
    hash: Option<u128>,
}

/// Stream the disk's data into `out` (holes for zeros), then pad with a hole to
/// `size`. The workers write the data in place themselves (the output is the
/// disk byte for byte from the current position), so writes run in parallel
/// and the in-order sink only advances the position and the digests.
///
/// With `content`, every piece that is not all zeros adds its offset and
/// the XXH3-128 of its bytes (computed on the workers) to it, in order: a
/// fingerprint of the disk's content for formats that want a deterministic id.
pub fn write_data(
    src: &dyn BlockSource,
    out: &mut OutputFile,
    size: u64,
    mut content: Option<&mut Xxh3>,
) -> Result<()> {
    let placed = out.placed_writer()?;
    let want_hash = content.is_some();
    stream(
        src,
        CHUNK_BYTES as u64,
        |offset, buf| {
            let runs = data_runs(offset, buf);
            for r in &runs {
                placed.write_at(offset + r.start as u64, &buf[r.clone()])?;
            }
            let hash = (want_hash && !runs.is_empty()).then(|| xxh3_128(buf));
            Ok(Placed { runs, hash })
        },
        |p| match p {
            Piece::Data { offset, buf, extra } => {
                if let (Some(h), Some(c)) = (extra.hash, content.as_deref_mut()) {
                    c.update(&offset.to_le_bytes());
                    c.update(&h.to_le_bytes());
                }
                placed_sparse(out, buf, &extra.runs)
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
    write_data(src, &mut out, size, None)?;
    let output = out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes: Vec::new(),
    })
}
