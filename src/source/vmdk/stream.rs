//! streamOptimized pieces of a hosted sparse extent (VMware "Virtual Disk
//! Format 1.1", section "The Stream-Optimized Compressed Sparse Extent"):
//!
//! - a grain marker precedes every compressed grain: `lba` (u64, the grain's
//!   first sector in the virtual disk), `size` (u32, compressed bytes), then a
//!   zlib (RFC 1950) deflate stream that inflates to one grain;
//! - metadata markers (`size` 0, then `type` u32: 0 end-of-stream, 1 grain
//!   table, 2 grain directory, 3 footer) each fill one sector;
//! - when the first header's gdOffset is `GD_AT_END`, the header in force is the
//!   footer: the last three sectors are footer marker, footer (a full sparse
//!   header), end-of-stream marker.

use super::sparse::{SparseHeader, HEADER_SIZE, SECTOR};
use crate::error::{Error, Result};
use crate::source::range::FileRange;
use std::io::Read;

/// Metadata marker type: end of stream.
pub const MARKER_EOS: u32 = 0;
/// Metadata marker type: grain table follows.
pub const MARKER_GT: u32 = 1;
/// Metadata marker type: grain directory follows.
pub const MARKER_GD: u32 = 2;
/// Metadata marker type: footer follows.
pub const MARKER_FOOTER: u32 = 3;
/// Bytes of a grain marker before the compressed data (lba u64 + size u32).
pub const MARKER_HEADER_BYTES: u64 = 12;

fn marker(b: &[u8]) -> (u64, u32, u32) {
    let mut v = [0u8; 8];
    let mut s = [0u8; 4];
    let mut t = [0u8; 4];
    v.copy_from_slice(b.get(0..8).unwrap_or(&[0; 8]));
    s.copy_from_slice(b.get(8..12).unwrap_or(&[0; 4]));
    t.copy_from_slice(b.get(12..16).unwrap_or(&[0; 4]));
    (
        u64::from_le_bytes(v),
        u32::from_le_bytes(s),
        u32::from_le_bytes(t),
    )
}

/// Read the footer: returns the footer header and its byte offset.
pub fn read_footer(range: &FileRange) -> Result<(SparseHeader, u64)> {
    let tail = 3 * SECTOR;
    let at = range
        .len()
        .checked_sub(tail)
        .filter(|&a| a >= SECTOR)
        .ok_or_else(|| {
            Error::corrupt(
                "VMDK streamOptimized file",
                "length",
                0,
                "room for header, footer marker, footer and end-of-stream marker",
                range.len(),
            )
        })?;
    let mut b = [0u8; 1536];
    range.read_exact_at(at, &mut b, "VMDK footer")?;
    let (_, size, kind) = marker(&b);
    if size != 0 || kind != MARKER_FOOTER {
        return Err(Error::corrupt(
            "VMDK footer marker",
            "type",
            at.saturating_add(12),
            format!("size 0, type {MARKER_FOOTER} (footer) three sectors before the end"),
            format!("size {size}, type {kind}"),
        ));
    }
    let eos_at = at.saturating_add(2 * SECTOR);
    let (val, size, kind) = marker(b.get(1024..).unwrap_or(&[]));
    if val != 0 || size != 0 || kind != MARKER_EOS {
        return Err(Error::corrupt(
            "VMDK end-of-stream marker",
            "type",
            eos_at.saturating_add(12),
            "an all-zero end-of-stream marker in the last sector",
            format!("val {val}, size {size}, type {kind}"),
        ));
    }
    let foot_at = at.saturating_add(SECTOR);
    let mut h = [0u8; HEADER_SIZE];
    h.copy_from_slice(b.get(512..1024).unwrap_or(&[0; 512]));
    let header = SparseHeader::parse(&h, foot_at)?;
    if header.gd_offset == super::sparse::GD_AT_END {
        return Err(Error::corrupt(
            "VMDK footer",
            "gdOffset",
            foot_at.saturating_add(56),
            "the grain directory's sector",
            "GD_AT_END again",
        ));
    }
    Ok((header, foot_at))
}

thread_local! {
    /// This thread's whole-buffer decompressor (allocated once).
    static LIBDEFLATE: std::cell::RefCell<Option<libdeflater::Decompressor>> =
        const { std::cell::RefCell::new(None) };
}

/// Inflate a whole zlib stream into `out` with libdeflate (about twice as
/// fast as a streaming inflater), zero-filling after a short stream. Returns
/// false when it does not accept the stream (corrupt, or more than `out`
/// holds): the caller's streaming decoder then decides and words the error.
fn inflate_fast(comp: &[u8], out: &mut [u8]) -> bool {
    LIBDEFLATE.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else {
            return false;
        };
        let d = d.get_or_insert_with(libdeflater::Decompressor::new);
        match d.zlib_decompress(comp, out) {
            Ok(n) => {
                if let Some(rest) = out.get_mut(n..) {
                    rest.fill(0);
                }
                true
            }
            Err(_) => false,
        }
    })
}

/// Read the compressed grain whose marker is at byte `at`, expected to hold
/// virtual sector `lba`, inflating into `out` (one grain; a short stream
/// leaves the rest zero).
pub fn read_grain(range: &FileRange, at: u64, lba: u64, out: &mut [u8]) -> Result<()> {
    let mut m = [0u8; 12];
    range.read_exact_at(at, &mut m, "VMDK grain marker")?;
    let (found_lba, size, _) = marker(&m);
    if found_lba != lba {
        return Err(Error::corrupt(
            "VMDK grain marker",
            "lba",
            at,
            lba,
            found_lba,
        ));
    }
    let grain = u64::try_from(out.len()).unwrap_or(u64::MAX);
    // Deflate never grows data by more than ~0.03% plus a few bytes; twice the
    // grain is generous and still bounds the buffer.
    let max = grain.saturating_mul(2).saturating_add(1024);
    let data_at = at.saturating_add(MARKER_HEADER_BYTES);
    let avail = range.len().saturating_sub(data_at);
    if size == 0 || u64::from(size) > max || u64::from(size) > avail {
        return Err(Error::corrupt(
            "VMDK grain marker",
            "size",
            at.saturating_add(8),
            format!("1 to {} compressed bytes inside the file", max.min(avail)),
            size,
        ));
    }
    let mut comp = vec![0u8; usize::try_from(size).unwrap_or(0)];
    range.read_exact_at(data_at, &mut comp, "VMDK compressed grain")?;
    if inflate_fast(&comp, out) {
        return Ok(());
    }
    out.fill(0);
    let mut dec = flate2::read::ZlibDecoder::new(comp.as_slice());
    let mut filled = 0usize;
    loop {
        let rest = out.get_mut(filled..).unwrap_or(&mut []);
        if rest.is_empty() {
            break;
        }
        match dec.read(rest) {
            Ok(0) => break,
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::corrupt(
                    "VMDK compressed grain",
                    "deflate stream",
                    data_at,
                    "a valid zlib stream",
                    format!("error: {e}"),
                ))
            }
        }
    }
    let mut extra = [0u8; 1];
    if matches!(dec.read(&mut extra), Ok(n) if n > 0) {
        return Err(Error::corrupt(
            "VMDK compressed grain",
            "deflate stream",
            data_at,
            format!("at most {grain} inflated bytes (one grain)"),
            "more",
        ));
    }
    Ok(())
}
