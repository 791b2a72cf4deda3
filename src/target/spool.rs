//! Two-phase writing for formats whose metadata precedes their data
//! (dynamic VHD, VHDX, qcow2).
//!
//! An [`OutputFile`] is append-only and hashed while written, but these
//! formats put things in front of the data that depend on the data:
//! which blocks are allocated (a block of the source map that reads as zeros
//! is not allocated), the identity GUIDs (derived from the content, so two
//! different disks never share one), and for compressed qcow2 every
//! compressed cluster's size (which fixes where every later cluster, L2 table
//! and refcount lands).
//!
//! So writing happens in two phases:
//!
//! 1. [`collect`] streams the source once through [`stream`] on a grid of
//!    `grain` bytes. On rayon workers each grain is checked for zeros, hashed
//!    (XXH3-128) and optionally compressed; in order, the non-zero grains are
//!    appended to a spool file beside the output (unlinked at once, so it never
//!    outlives the run) and recorded as [`Grain`]s. Zero extents of the map are
//!    never read.
//! 2. The writer, now knowing every allocation and size, lays out its
//!    metadata, writes it through the [`OutputFile`] front to back, and copies
//!    the spooled grains after it with a [`SpoolReader`] (sequential, from the
//!    page cache in the common case).
//!
//! The price is that the allocated data is written twice (spool, then
//! output) and the spool needs as much free space as the data it holds
//! (compressed, when compressing). The records cost 16 bytes per non-zero
//! grain (256 MiB per TiB of data at 64 KiB grains).

use super::output::OutputFile;
use super::stream::{stream, Piece};
use crate::block::{check_range, is_zero, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

/// One non-zero grain, in the order it sits in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grain {
    /// Grain index in the virtual disk (offset / grain size).
    pub index: u64,
    /// Bytes stored in the spool (the grain size unless compressed).
    pub len: u32,
    /// Whether the stored bytes are compressed.
    pub compressed: bool,
}

/// The result of phase 1; see the module docs.
pub struct Spool {
    file: File,
    /// Grain size in bytes.
    pub grain: u64,
    /// Non-zero grains in disk order; their spool offsets are the running sum of `len`.
    pub grains: Vec<Grain>,
    content: u128,
}

/// A compressor for [`collect`]: returns the compressed bytes when they are
/// smaller than the input, `None` to store the grain as it is.
pub type Compressor<'a> = &'a (dyn Fn(&[u8]) -> Result<Option<Vec<u8>>> + Sync);

enum Worked {
    Zero,
    Data { hash: u128, compressed: bool },
}

/// Phase 1: spool the non-zero grains of `src`; see the module docs.
/// `grain` must be a power of two no larger than [`crate::block::MAP_WINDOW`].
pub fn collect(
    src: &dyn BlockSource,
    out: &OutputFile,
    grain: u64,
    compress: Option<Compressor<'_>>,
) -> Result<Spool> {
    let file = out.spool_file()?;
    let grain_len = usize::try_from(grain).map_err(|_| Error::invalid("grain too large"))?;
    let aligned = AlignedMap { inner: src, grain };
    let mut grains = Vec::new();
    let mut pos = 0u64;
    let mut content = Xxh3::new();
    content.update(&grain.to_le_bytes());
    stream(
        &aligned,
        grain,
        |_, buf| {
            if buf.len() < grain_len {
                buf.resize(grain_len, 0);
            }
            if is_zero(buf) {
                *buf = Vec::new();
                return Ok(Worked::Zero);
            }
            let hash = xxh3_128(buf);
            if let Some(c) = compress {
                if let Some(z) = c(buf)? {
                    *buf = z;
                    return Ok(Worked::Data {
                        hash,
                        compressed: true,
                    });
                }
            }
            Ok(Worked::Data {
                hash,
                compressed: false,
            })
        },
        |piece| {
            if let Piece::Data {
                offset,
                buf,
                extra: Worked::Data { hash, compressed },
            } = piece
            {
                let index = offset / grain;
                file.write_all_at(&buf, pos)
                    .ctx(|| "write the spool file".to_string())?;
                pos += buf.len() as u64;
                content.update(&index.to_le_bytes());
                content.update(&hash.to_le_bytes());
                grains.push(Grain {
                    index,
                    len: u32::try_from(buf.len()).map_err(|_| Error::invalid("grain too large"))?,
                    compressed,
                });
            }
            Ok(())
        },
    )?;
    Ok(Spool {
        file,
        grain,
        grains,
        content: content.digest128(),
    })
}

impl Spool {
    /// A deterministic GUID (RFC 9562 byte order, version 8, variant 10)
    /// derived from the disk's content, its virtual size and `label` (so one
    /// disk's several GUIDs differ).
    pub fn guid(&self, virtual_size: u64, label: &str) -> [u8; 16] {
        let mut h = Xxh3::new();
        h.update(&self.content.to_le_bytes());
        h.update(&virtual_size.to_le_bytes());
        h.update(label.as_bytes());
        let mut g = h.digest128().to_be_bytes();
        g[6] = (g[6] & 0x0f) | 0x80;
        g[8] = (g[8] & 0x3f) | 0x80;
        g
    }

    /// Read the spooled grains back in order.
    pub fn reader(&self) -> Result<SpoolReader<'_>> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(0))
            .ctx(|| "rewind the spool file".to_string())?;
        Ok(SpoolReader {
            inner: BufReader::with_capacity(8 << 20, f),
        })
    }
}

/// Sequential reader over the spool.
pub struct SpoolReader<'a> {
    inner: BufReader<&'a File>,
}

impl SpoolReader<'_> {
    /// The next grain's stored bytes.
    pub fn next(&mut self, g: &Grain) -> Result<Vec<u8>> {
        let mut v = vec![0u8; g.len as usize];
        self.inner
            .read_exact(&mut v)
            .ctx(|| "read the spool file".to_string())?;
        Ok(v)
    }
}

/// A view of a source whose map is coarsened to a grain grid: a grain
/// touching any data is data as a whole (clipped to the disk's end), so
/// [`stream`] hands out whole, aligned grains.
struct AlignedMap<'a> {
    inner: &'a dyn BlockSource,
    grain: u64,
}

impl BlockSource for AlignedMap<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let size = self.size();
        check_range(size, offset, len)?;
        let g = self.grain;
        let end = offset + len;
        let wide_start = offset / g * g;
        let wide_end = end.div_ceil(g).saturating_mul(g).min(size);
        // Data grain ranges [a, b) in bytes, merged.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for e in self.inner.map(wide_start, wide_end - wide_start)? {
            if e.kind != ExtentKind::Data {
                continue;
            }
            let a = e.offset / g * g;
            let b = e.end().div_ceil(g).saturating_mul(g);
            match ranges.last_mut() {
                Some(last) if last.1 >= a => last.1 = last.1.max(b),
                _ => ranges.push((a, b)),
            }
        }
        let mut m = MapBuilder::new();
        let mut cur = offset;
        for (a, b) in ranges {
            let a = a.clamp(offset, end);
            let b = b.clamp(offset, end);
            if b <= a {
                continue;
            }
            m.push(cur, a - cur, ExtentKind::Zero);
            m.push(a, b - a, ExtentKind::Data);
            cur = b;
        }
        m.push(cur, end - cur, ExtentKind::Zero);
        Ok(m.finish())
    }
    fn format_name(&self) -> &'static str {
        self.inner.format_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::full_map;

    struct Fake(Vec<Extent>, u64);
    impl BlockSource for Fake {
        fn size(&self) -> u64 {
            self.1
        }
        fn read_at(&self, _: u64, _: &mut [u8]) -> Result<()> {
            Ok(())
        }
        fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
            let mut m = MapBuilder::new();
            let end = offset + len;
            for e in &self.0 {
                let a = e.offset.max(offset);
                let b = e.end().min(end);
                if a < b {
                    m.push(a, b - a, e.kind);
                }
            }
            Ok(m.finish())
        }
        fn format_name(&self) -> &'static str {
            "fake"
        }
    }

    #[test]
    fn aligned_map_rounds_data_out_to_grains() {
        let d = |offset, len| Extent {
            offset,
            len,
            kind: ExtentKind::Data,
        };
        let z = |offset, len| Extent {
            offset,
            len,
            kind: ExtentKind::Zero,
        };
        let src = Fake(
            vec![z(0, 100), d(100, 10), z(110, 890), d(1000, 24), z(1024, 76)],
            1100,
        );
        let a = AlignedMap {
            inner: &src,
            grain: 256,
        };
        assert_eq!(
            full_map(&a).unwrap(),
            vec![d(0, 256), z(256, 512), d(768, 256), z(1024, 76)]
        );
        assert_eq!(a.map(300, 600).unwrap(), vec![z(300, 468), d(768, 132)]);
    }
}
