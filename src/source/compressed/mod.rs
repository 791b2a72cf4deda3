//! Compressed inputs: `.gz` (every member, RFC 1952), `.xz` (every stream),
//! `.zst` (every frame), and GCE's `.tar.gz` holding `disk.raw`.
//!
//! The compressed stream is decompressed once into a sparse temporary file
//! (all-zero 4 KiB blocks become holes), then the result is opened by its
//! magic through [`open_depth`](super::open_depth) one level deeper, so a
//! `.gz` of a `.gz` is bounded by [`limits::MAX_COMPRESSION_DEPTH`].
//!
//! When the decompressed stream is a tar whose first member is a regular or
//! GNU sparse file named `disk.raw` (what GCE imports, [`gnutar`]), that member
//! is extracted sparsely instead and must be the only one.
//!
//! Bounds: decompressed bytes are capped by [`limits::max_decompressed_bytes`]
//! (`ONRAMP_MAX_DECOMPRESSED_BYTES` overrides it); a full disk surfaces as an
//! I/O error naming the temporary directory.
//!
//! The temporary file lives in [`OpenOptions::temp_dir`] (the output's
//! directory when converting) or the system temporary directory. It is created
//! already unlinked (`O_TMPFILE`, or created and removed at once) and reopened
//! through `/proc/self/fd`, so it vanishes on every exit path, even a kill;
//! where `/proc` is missing, a named file is deleted when the reader drops.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod gnutar;

use super::{open_depth, Format, OpenOptions};
use crate::block::{is_zero, BlockSource, Extent};
use crate::error::{Error, IoContext, Result};
use crate::limits;
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Block size at which zeros become holes (qemu-img's `-S` default).
const HOLE_GRAIN: usize = 4096;
/// Decompression buffer.
const BUF_BYTES: usize = 1 << 20;

/// Keeps the temporary file alive while the reader uses it, and gone after.
enum TempGuard {
    /// Unlinked already; the open file keeps the data until it is closed.
    Unlinked(#[allow(dead_code)] File),
    /// A named file, deleted on drop.
    Named(#[allow(dead_code)] tempfile::TempPath),
}

/// A disk that was decompressed into a temporary file.
pub struct DecompressedReader {
    inner: Box<dyn BlockSource>,
    _guard: TempGuard,
    compression: Format,
    compressed_size: u64,
    decompressed_bytes: u64,
    gce_tar: bool,
}

impl BlockSource for DecompressedReader {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.inner.map(offset, len)
    }
    fn format_name(&self) -> &'static str {
        self.compression.name()
    }
    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("compression".into(), json!(self.compression.name()));
        m.insert("compressed_size".into(), json!(self.compressed_size));
        m.insert("decompressed_bytes".into(), json!(self.decompressed_bytes));
        if self.gce_tar {
            m.insert("container".into(), json!("gce-tar (disk.raw)"));
        }
        m.insert("inner_format".into(), json!(self.inner.format_name()));
        m.insert("inner".into(), Value::Object(self.inner.details()));
        m
    }
}

/// A temporary file and the path the inner reader opens it by.
struct Temp {
    file: File,
    open_path: PathBuf,
    guard: TempGuard,
}

fn temp_dir(opts: &OpenOptions) -> PathBuf {
    match &opts.temp_dir {
        Some(d) if d.as_os_str().is_empty() => PathBuf::from("."),
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    }
}

fn make_temp(dir: &Path) -> Result<Temp> {
    use std::os::fd::AsRawFd;
    let ctx = || format!("create a temporary file in {}", dir.display());
    let file = tempfile::tempfile_in(dir).ctx(ctx)?;
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if proc_path.exists() {
        let keep = file.try_clone().ctx(ctx)?;
        return Ok(Temp {
            file,
            open_path: proc_path,
            guard: TempGuard::Unlinked(keep),
        });
    }
    drop(file);
    let named = tempfile::Builder::new()
        .prefix(".onramp-decompress-")
        .tempfile_in(dir)
        .ctx(ctx)?;
    let (file, path) = named.into_parts();
    Ok(Temp {
        file,
        open_path: path.to_path_buf(),
        guard: TempGuard::Named(path),
    })
}

/// Writes decompressed bytes at positions, leaving zero blocks as holes.
pub(crate) struct SparseOut<'a> {
    file: &'a File,
    dir: &'a Path,
}

impl SparseOut<'_> {
    /// Write `data` at `offset`, skipping all-zero blocks on the absolute 4 KiB grid.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut i = 0usize;
        while i < data.len() {
            let abs = offset.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
            let into = usize::try_from(abs % 4096).unwrap_or(0);
            let step = HOLE_GRAIN.saturating_sub(into).max(1);
            let end = i.saturating_add(step).min(data.len());
            let block = data.get(i..end).unwrap_or(&[]);
            if !is_zero(block) {
                // Extend over following non-zero blocks for one larger write.
                let mut run_end = end;
                while run_end < data.len() {
                    let next = run_end.saturating_add(HOLE_GRAIN).min(data.len());
                    if is_zero(data.get(run_end..next).unwrap_or(&[])) {
                        break;
                    }
                    run_end = next;
                }
                let run = data.get(i..run_end).unwrap_or(&[]);
                self.file.write_all_at(run, abs).map_err(|e| {
                    Error::io(
                        format!(
                            "write decompressed data to a temporary file in {}",
                            self.dir.display()
                        ),
                        e,
                    )
                })?;
                i = run_end;
            } else {
                i = end;
            }
        }
        Ok(())
    }
}

/// Read until `buf` is full or the stream ends; decoder errors are corruption.
pub(crate) fn fill(r: &mut dyn Read, buf: &mut [u8], what: &str, at: u64) -> Result<usize> {
    let mut n = 0usize;
    while n < buf.len() {
        let rest = buf.get_mut(n..).unwrap_or(&mut []);
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n = n.saturating_add(k),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let at = at.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                return Err(Error::corrupt_msg(format!(
                    "{what} stream is damaged after {at} decompressed bytes: {e}"
                )));
            }
        }
    }
    Ok(n)
}

/// Counts decompressed bytes against the limit.
pub(crate) struct Budget {
    pub(crate) used: u64,
    pub(crate) limit: u64,
    pub(crate) what: &'static str,
}

impl Budget {
    pub(crate) fn take(&mut self, n: usize) -> Result<()> {
        self.used = self
            .used
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        if self.used > self.limit {
            return Err(Error::unsupported(format!(
                "{} input decompresses to more than {} bytes, the limit (set {} to raise it)",
                self.what,
                self.limit,
                limits::MAX_DECOMPRESSED_ENV
            )));
        }
        Ok(())
    }
}

/// Open a compressed image.
pub fn open(
    path: &Path,
    compression: Format,
    opts: &OpenOptions,
    depth: usize,
) -> Result<Box<dyn BlockSource>> {
    if depth >= limits::MAX_COMPRESSION_DEPTH {
        return Err(Error::unsupported(format!(
            "compressed data nested more than {} levels deep",
            limits::MAX_COMPRESSION_DEPTH
        )));
    }
    let input = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let compressed_size = input.metadata().ctx(|| "stat".into())?.len();
    let what = compression.name();
    let buffered = std::io::BufReader::with_capacity(1 << 16, input);
    let mut decoder: Box<dyn Read> = match compression {
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(buffered)),
        Format::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| Error::io("start zstd decoder", e))?,
        ),
        other => {
            return Err(Error::invalid(format!(
                "{} is not a compression format",
                other.name()
            )))
        }
    };
    let dir = temp_dir(opts);
    let temp = make_temp(&dir)?;
    let out = SparseOut {
        file: &temp.file,
        dir: &dir,
    };
    let mut budget = Budget {
        used: 0,
        limit: limits::max_decompressed_bytes(),
        what,
    };

    let mut head = vec![0u8; 512];
    let n = fill(decoder.as_mut(), &mut head, what, 0)?;
    budget.take(n)?;
    let head = head.get(..n).unwrap_or(&[]);
    let (len, gce_tar) = match gnutar::disk_raw_header(head)? {
        Some(member) => {
            let len = gnutar::extract(member, decoder.as_mut(), &out, &mut budget)?;
            (len, true)
        }
        None => {
            out.write_at(0, head)?;
            let mut pos = u64::try_from(head.len()).unwrap_or(u64::MAX);
            if head.len() == 512 {
                let mut buf = vec![0u8; BUF_BYTES];
                loop {
                    let k = fill(decoder.as_mut(), &mut buf, what, pos)?;
                    if k == 0 {
                        break;
                    }
                    budget.take(k)?;
                    out.write_at(pos, buf.get(..k).unwrap_or(&[]))?;
                    pos = pos.saturating_add(u64::try_from(k).unwrap_or(u64::MAX));
                }
            }
            (pos, false)
        }
    };
    temp.file
        .set_len(len)
        .ctx(|| format!("size the temporary file in {}", dir.display()))?;
    let inner_opts = OpenOptions {
        format: None,
        // Nothing beside a temporary file is the image's directory.
        allow_backing: false,
        temp_dir: opts.temp_dir.clone(),
    };
    let inner = open_depth(&temp.open_path, &inner_opts, depth.saturating_add(1)).map_err(|e| {
        let msg = format!("inside the {what} data: {}", e.message());
        Error::new(e.kind(), msg)
    })?;
    Ok(Box::new(DecompressedReader {
        inner,
        _guard: temp.guard,
        compression,
        compressed_size,
        decompressed_bytes: budget.used,
        gce_tar,
    }))
}
