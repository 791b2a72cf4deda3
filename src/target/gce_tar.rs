//! Google Compute Engine's import format: a gzip'd tar holding one sparse
//! file named `disk.raw`, as `tar --format=oldgnu -Sczf` makes it.
//!
//! GCE's rules ("Import a boot disk image manually" / "Image management best
//! practices", cloud.google.com/compute/docs): the disk's bytes in a file
//! named `disk.raw`, archived with tar in the `oldgnu` format and compressed
//! with gzip; the raw disk's size must be a whole number of GB — Google's
//! GB is the binary GiB here (disk sizes are whole `diskSizeGb`, 2^30 bytes),
//! so onramp grows `disk.raw` to the next multiple of 1 GiB and says so in a
//! note. The growth is a hole: it costs nothing in the archive.
//!
//! The tar stream (GNU tar manual, "GNU sparse files", old GNU format):
//!
//! - one `S` (sparse) header: name `disk.raw`, mode 0644, uid/gid 0 (`root`),
//!   mtime from [`WriteOptions::timestamp`], `size` = bytes stored, the first
//!   4 sparse entries (offset, numbytes), `isextended`, `realsize`;
//! - extension headers of 21 entries each while `isextended` is set;
//! - the data regions back to back (each a multiple of 512 bytes: regions are
//!   the source's data extents widened to 512-byte boundaries), then a last
//!   entry (realsize, 0) when the file ends in a hole, as GNU tar writes;
//! - two zero blocks, padded to GNU tar's 10240-byte record.
//!
//! Numbers use octal, or GNU's base-256 form (first byte 0x80) when they do
//! not fit — which GNU tar and every GNU-compatible reader understand.
//!
//! Zero regions are never read, stored or compressed (the map says where the
//! data is, as GNU tar's SEEK_DATA/SEEK_HOLE detection does).
//!
//! gzip: RFC 1952 allows a file of several members, which gzip and GNU tar
//! read as one stream. The tar stream is cut every [`MEMBER_BYTES`] into
//! members compressed independently on rayon workers and written in order.
//! Member headers carry no name and mtime 0; the cut points depend only on the
//! tar stream, so the output is byte-identical across runs and thread counts.

use super::output::OutputFile;
use super::stream::{stream, Piece};
use super::{target_size, WriteOptions, WriteReport};
use crate::block::{check_range, for_each_window, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, Result};
use flate2::{Compression, GzBuilder};
use rayon::prelude::*;
use std::io::Write as _;

/// GCE's size unit for `disk.raw`: 1 GiB.
pub const GIB: u64 = 1 << 30;
/// Tar block size.
const BLOCK: u64 = 512;
/// GNU tar's default record size (blocking factor 20).
const RECORD: u64 = 20 * BLOCK;
/// Bytes of tar stream per gzip member: 4 MiB.
pub const MEMBER_BYTES: usize = 4 << 20;
/// gzip level (gzip's default, 6).
const LEVEL: u32 = 6;
/// Name of the member GCE requires.
pub const MEMBER_NAME: &str = "disk.raw";
/// Sparse entries in the main oldgnu header / in each extension header.
const MAIN_ENTRIES: usize = 4;
const EXT_ENTRIES: usize = 21;

/// Write a numeric field: octal with a NUL, or base-256 when too large.
fn num(field: &mut [u8], v: u64) {
    let w = field.len();
    let digits = w - 1;
    if digits >= 22 || v < (1u64 << (3 * digits)) {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let be = v.to_be_bytes();
        field[w - 8..].copy_from_slice(&be);
    }
}

/// One sparse entry (offset, numbytes) into 24 bytes.
fn entry(dst: &mut [u8], (offset, len): (u64, u64)) {
    num(&mut dst[0..12], offset);
    num(&mut dst[12..24], len);
}

/// The main oldgnu sparse header.
fn main_header(
    stored: u64,
    realsize: u64,
    mtime: u64,
    entries: &[(u64, u64)],
    extended: bool,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..MEMBER_NAME.len()].copy_from_slice(MEMBER_NAME.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    num(&mut h[124..136], stored);
    num(&mut h[136..148], mtime);
    h[156] = b'S';
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    for (i, e) in entries.iter().take(MAIN_ENTRIES).enumerate() {
        entry(&mut h[386 + i * 24..410 + i * 24], *e);
    }
    h[482] = u8::from(extended);
    num(&mut h[483..495], realsize);
    // Checksum: sum of all bytes with the field itself as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    h
}

/// One extension header of up to 21 entries.
fn ext_header(entries: &[(u64, u64)], extended: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    for (i, e) in entries.iter().take(EXT_ENTRIES).enumerate() {
        entry(&mut h[i * 24..(i + 1) * 24], *e);
    }
    h[504] = u8::from(extended);
    h
}

/// The source seen as `disk.raw`: grown to `size` with zeros, and its data
/// extents widened to 512-byte boundaries (tar regions are whole blocks).
struct Padded<'a> {
    inner: &'a dyn BlockSource,
    size: u64,
}

impl BlockSource for Padded<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let inner = self.inner.size();
        let n = inner.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(n);
        if n > 0 {
            self.inner.read_at(offset, head)?;
        }
        tail.fill(0);
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        let end = offset + len;
        let inner_end = end.min(self.inner.size());
        let mut data: Vec<(u64, u64)> = Vec::new();
        if offset < inner_end {
            for e in self.inner.map(offset, inner_end - offset)? {
                if e.kind != ExtentKind::Data {
                    continue;
                }
                let s = (e.offset / BLOCK * BLOCK).max(offset);
                let t = e.end().div_ceil(BLOCK).saturating_mul(BLOCK).min(end);
                match data.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(t),
                    _ => data.push((s, t)),
                }
            }
        }
        let mut m = MapBuilder::new();
        let mut pos = offset;
        for (s, t) in data {
            m.push(pos, s - pos, ExtentKind::Zero);
            m.push(s, t - s, ExtentKind::Data);
            pos = t;
        }
        m.push(pos, end - pos, ExtentKind::Zero);
        Ok(m.finish())
    }

    fn format_name(&self) -> &'static str {
        "raw"
    }
}

/// The gzip side: tar bytes in, members out, in order.
struct Gz {
    out: OutputFile,
    pending: Vec<u8>,
    batch: usize,
    tar_bytes: u64,
}

impl Gz {
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        self.tar_bytes += bytes.len() as u64;
        if self.pending.len() >= self.batch * MEMBER_BYTES {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Compress whole members of `pending` (all of it when `last`).
    fn flush(&mut self, last: bool) -> Result<()> {
        let whole = if last {
            self.pending.len()
        } else {
            self.pending.len() / MEMBER_BYTES * MEMBER_BYTES
        };
        if whole == 0 {
            return Ok(());
        }
        let members: Vec<Vec<u8>> = self.pending[..whole]
            .par_chunks(MEMBER_BYTES)
            .map(member)
            .collect::<Result<_>>()?;
        self.pending.drain(..whole);
        for m in members {
            self.out.write_owned(m)?;
        }
        Ok(())
    }
}

/// One gzip member: no name, mtime 0.
fn member(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(data.len() / 3), Compression::new(LEVEL));
    enc.write_all(data).map_err(|e| Error::io("gzip", e))?;
    enc.finish().map_err(|e| Error::io("gzip", e))
}

/// Write `src` as a GCE tar.gz.
pub fn write(src: &dyn BlockSource, out: OutputFile, opts: &WriteOptions) -> Result<WriteReport> {
    let wanted = target_size(src.size(), opts.size)?;
    let size = wanted
        .div_ceil(GIB)
        .max(1)
        .checked_mul(GIB)
        .ok_or_else(|| Error::invalid("size overflows"))?;
    let mut notes = Vec::new();
    if size != wanted {
        notes.push(format!(
            "disk.raw grown from {wanted} to {size} bytes (GCE needs a whole number of GiB)"
        ));
    }
    let disk = Padded { inner: src, size };

    // Walk 1: how many regions, how many bytes stored.
    let mut regions = 0u64;
    let mut stored = 0u64;
    let mut last_end = 0u64;
    for_each_window(&disk, |e| {
        if e.kind == ExtentKind::Data {
            regions += 1;
            stored += e.len;
            last_end = e.end();
        }
        Ok(())
    })?;
    let terminal = last_end < size || regions == 0;
    let n_entries = regions + u64::from(terminal);

    let batch = (rayon::current_num_threads() * 2).clamp(2, 16);
    let mut gz = Gz {
        out,
        pending: Vec::with_capacity(batch * MEMBER_BYTES + (1 << 20)),
        batch,
        tar_bytes: 0,
    };

    // Walk 2: the headers, streamed (entries are never all held in memory).
    let mut first: Vec<(u64, u64)> = Vec::with_capacity(MAIN_ENTRIES);
    let mut ext: Vec<(u64, u64)> = Vec::with_capacity(EXT_ENTRIES);
    let mut emitted = 0u64;
    let mut on_entry = |gz: &mut Gz, e: (u64, u64)| -> Result<()> {
        emitted += 1;
        if first.len() < MAIN_ENTRIES {
            first.push(e);
            if first.len() == MAIN_ENTRIES || emitted == n_entries {
                let h = main_header(stored, size, opts.timestamp, &first, emitted < n_entries);
                gz.push(&h)?;
            }
            return Ok(());
        }
        ext.push(e);
        if ext.len() == EXT_ENTRIES || emitted == n_entries {
            gz.push(&ext_header(&ext, emitted < n_entries))?;
            ext.clear();
        }
        Ok(())
    };
    for_each_window(&disk, |e| {
        if e.kind == ExtentKind::Data {
            on_entry(&mut gz, (e.offset, e.len))?;
        }
        Ok(())
    })?;
    if terminal {
        on_entry(&mut gz, (size, 0))?;
    }
    if emitted != n_entries {
        return Err(Error::invalid(
            "the source's allocation map changed while it was being read",
        ));
    }

    // The data regions, back to back.
    let header_bytes = gz.tar_bytes;
    stream(
        &disk,
        crate::limits::CHUNK_BYTES as u64,
        |_, _| Ok(()),
        |p| match p {
            Piece::Data { buf, .. } => gz.push(&buf),
            Piece::Zero { .. } => Ok(()),
        },
    )?;
    if gz.tar_bytes - header_bytes != stored {
        return Err(Error::invalid(
            "the source's allocation map changed while it was being read",
        ));
    }
    // End of archive: two zero blocks, then pad to a whole record.
    let end = gz.tar_bytes + 2 * BLOCK;
    let padded = end.div_ceil(RECORD) * RECORD;
    let zeros = vec![0u8; (padded - gz.tar_bytes) as usize];
    gz.push(&zeros)?;
    gz.flush(true)?;
    let output = gz.out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_and_base256() {
        let mut f = [0u8; 12];
        num(&mut f, 0o14000000);
        assert_eq!(&f, b"00014000000\0");
        num(&mut f, 10 << 30);
        assert_eq!(f[0], 0x80);
        assert_eq!(u64::from_be_bytes(f[4..12].try_into().unwrap()), 10 << 30);
    }

    #[test]
    fn header_checksum_matches_gnu_layout() {
        let h = main_header(4096, 3 << 20, 0, &[(1 << 20, 4096), (3 << 20, 0)], false);
        let mut c = h;
        c[148..156].copy_from_slice(b"        ");
        let sum: u32 = c.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(&h[148..154], format!("{sum:06o}").as_bytes());
        assert_eq!(&h[257..265], b"ustar  \0");
        assert_eq!(h[156], b'S');
    }
}
