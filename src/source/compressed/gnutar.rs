//! The tar inside a GCE image (`tar --format=oldgnu -Sczf img.tar.gz disk.raw`):
//! one member `disk.raw`, a regular file (`0`) or an old-GNU sparse file (`S`).
//!
//! Layout (GNU tar manual, "Basic Tar Format" and "GNU sparse files", old GNU
//! format): 512-byte header; name at 0 (100 bytes), size at 124 (12), chksum at
//! 148 (8), typeflag at 156, magic "ustar  \0" (old GNU) or "ustar\0" + "00" at
//! 257; for `S`, four (offset, numbytes) pairs of 12-byte numbers at 386,
//! `isextended` at 482 and `realsize` at 483; extension headers hold 21 pairs
//! and `isextended` at 504. The regions' bytes follow the headers, each region
//! padded to 512 bytes as GNU tar reads and writes them. Numbers are octal, or
//! base-256 (big-endian, first byte 0x80) when large.
//!
//! Anything else (another first member, long names, PAX headers) is not a GCE
//! image: the caller then keeps the whole tar and opens it by its magic.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::{fill, Budget, SparseOut};
use crate::block::is_zero;
use crate::error::{Error, Result};
use crate::limits;
use std::io::Read;

const BLOCK: u64 = 512;
/// The member name GCE requires.
pub const MEMBER_NAME: &str = "disk.raw";

/// A parsed `disk.raw` header.
#[derive(Debug)]
pub struct Member {
    sparse: bool,
    size: u64,
    realsize: u64,
    entries: Vec<(u64, u64)>,
    extended: bool,
}

fn field(h: &[u8], at: usize, len: usize) -> &[u8] {
    at.checked_add(len)
        .and_then(|end| h.get(at..end))
        .unwrap_or(&[])
}

/// Parse a tar numeric field (octal, or GNU base-256).
fn number(h: &[u8], at: usize, len: usize, name: &str, base: u64) -> Result<u64> {
    let f = field(h, at, len);
    let bad = |found: String| {
        Error::corrupt(
            "tar header",
            name,
            base.saturating_add(u64::try_from(at).unwrap_or(0)),
            "an octal or base-256 number",
            found,
        )
    };
    match f.first() {
        Some(&b) if b & 0x80 != 0 => {
            if b != 0x80 {
                return Err(bad("a negative or oversized base-256 value".into()));
            }
            let mut v = 0u64;
            for &byte in f.get(1..).unwrap_or(&[]) {
                if v >> 56 != 0 {
                    return Err(bad("a base-256 value over 64 bits".into()));
                }
                v = (v << 8) | u64::from(byte);
            }
            Ok(v)
        }
        _ => {
            let mut v = 0u64;
            let mut seen = false;
            for &c in f {
                match c {
                    b' ' | 0 if !seen => continue,
                    b' ' | 0 => break,
                    b'0'..=b'7' => {
                        seen = true;
                        v = v
                            .checked_mul(8)
                            .and_then(|v| v.checked_add(u64::from(c.saturating_sub(b'0'))))
                            .ok_or_else(|| bad("an octal value over 64 bits".into()))?;
                    }
                    other => return Err(bad(format!("byte 0x{other:02x}"))),
                }
            }
            Ok(v)
        }
    }
}

fn entries_from(h: &[u8], at: usize, count: usize, base: u64) -> Result<Vec<(u64, u64)>> {
    let mut v = Vec::new();
    for i in 0..count {
        let off = i.saturating_mul(24).saturating_add(at);
        if field(h, off, 1).first().copied().unwrap_or(0) == 0 {
            break;
        }
        let o = number(h, off, 12, "sparse offset", base)?;
        let n = number(h, off.saturating_add(12), 12, "sparse numbytes", base)?;
        v.push((o, n));
    }
    Ok(v)
}

/// If `head` (the first 512 decompressed bytes) is a tar header for a regular
/// or old-GNU sparse `disk.raw`, parse it; `None` if it is anything else.
pub fn disk_raw_header(head: &[u8]) -> Result<Option<Member>> {
    if head.len() != 512 {
        return Ok(None);
    }
    let magic = field(head, 257, 8);
    let is_tar = magic == b"ustar  \0" || magic.get(..6) == Some(b"ustar\0".as_slice());
    if !is_tar {
        return Ok(None);
    }
    let name_raw = field(head, 0, 100);
    let name_len = name_raw.iter().position(|&b| b == 0).unwrap_or(100);
    let name = name_raw.get(..name_len).unwrap_or(&[]);
    if name != MEMBER_NAME.as_bytes() && name != b"./disk.raw" {
        return Ok(None);
    }
    let typeflag = field(head, 156, 1).first().copied().unwrap_or(0);
    let sparse = match typeflag {
        b'0' | 0 => false,
        b'S' => true,
        _ => return Ok(None),
    };
    let stored = number(head, 148, 8, "chksum", 0)?;
    let sum: u64 = head
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != sum {
        return Err(Error::corrupt(
            "tar header of disk.raw",
            "chksum",
            148,
            format!("{sum:o} (octal)"),
            format!("{stored:o}"),
        ));
    }
    let size = number(head, 124, 12, "size", 0)?;
    let (realsize, entries, extended) = if sparse {
        (
            number(head, 483, 12, "realsize", 0)?,
            entries_from(head, 386, 4, 0)?,
            field(head, 482, 1).first().copied().unwrap_or(0) != 0,
        )
    } else {
        (size, vec![(0, size)], false)
    };
    if realsize > limits::MAX_VIRTUAL_SIZE {
        return Err(Error::unsupported(format!(
            "disk.raw is {realsize} bytes, over the {} byte limit",
            limits::MAX_VIRTUAL_SIZE
        )));
    }
    Ok(Some(Member {
        sparse,
        size,
        realsize,
        entries,
        extended,
    }))
}

/// Extract `disk.raw` (the header already parsed) into `out`; returns its size.
pub(crate) fn extract(
    mut m: Member,
    r: &mut dyn Read,
    out: &SparseOut<'_>,
    budget: &mut Budget,
) -> Result<u64> {
    let what = budget.what;
    // Tar stream position, for messages.
    let mut pos = BLOCK;
    let mut block = [0u8; 512];
    while m.extended {
        let n = fill(r, &mut block, what, pos)?;
        budget.take(n)?;
        if n != block.len() {
            return Err(Error::corrupt_msg(format!(
                "tar: disk.raw sparse extension header at byte {pos} is truncated"
            )));
        }
        m.entries.extend(entries_from(&block, 0, 21, pos)?);
        m.extended = block.get(504).copied().unwrap_or(0) != 0;
        if m.entries.len() > limits::MAX_TAR_SPARSE_ENTRIES {
            return Err(Error::unsupported(format!(
                "tar: disk.raw has more than {} sparse regions",
                limits::MAX_TAR_SPARSE_ENTRIES
            )));
        }
        pos = pos.saturating_add(BLOCK);
    }
    // Check the map: ordered, inside realsize, adding up to the stored size.
    let mut last_end = 0u64;
    let mut total = 0u64;
    for &(o, n) in &m.entries {
        let end = o.checked_add(n).filter(|&e| e <= m.realsize);
        match end {
            Some(end) if o >= last_end => {
                last_end = end;
                total = total.saturating_add(n);
            }
            _ => {
                return Err(Error::corrupt(
                    "tar sparse map of disk.raw",
                    "offset",
                    0,
                    format!("ordered regions inside realsize {}", m.realsize),
                    format!("region at {o} of {n} bytes after {last_end}"),
                ))
            }
        }
    }
    if total > m.size {
        return Err(Error::corrupt(
            "tar header of disk.raw",
            "size",
            124,
            format!("at least {total} (the sparse regions)"),
            m.size,
        ));
    }
    let _ = m.sparse;
    let mut buf = vec![0u8; 1 << 20];
    for &(o, n) in &m.entries {
        let padded = n.div_ceil(BLOCK).saturating_mul(BLOCK);
        let mut done = 0u64;
        while done < padded {
            let want = usize::try_from(padded.saturating_sub(done))
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let chunk = buf.get_mut(..want).unwrap_or(&mut []);
            let k = fill(r, chunk, what, pos)?;
            budget.take(k)?;
            if k != want {
                return Err(Error::corrupt_msg(format!(
                    "tar: disk.raw data ends early at byte {} of the tar stream",
                    pos.saturating_add(u64::try_from(k).unwrap_or(0))
                )));
            }
            // Only the region's own bytes (not the block padding) are written.
            let keep = usize::try_from(n.saturating_sub(done).min(u64::try_from(k).unwrap_or(0)))
                .unwrap_or(0);
            out.write_at(o.saturating_add(done), chunk.get(..keep).unwrap_or(&[]))?;
            let k64 = u64::try_from(k).unwrap_or(0);
            done = done.saturating_add(k64);
            pos = pos.saturating_add(k64);
        }
    }
    // What follows must be the end of the archive: zero blocks only.
    loop {
        let k = fill(r, &mut buf, what, pos)?;
        if k == 0 {
            break;
        }
        budget.take(k)?;
        if !is_zero(buf.get(..k).unwrap_or(&[])) {
            return Err(Error::unsupported(
                "the tar holds more than disk.raw; a GCE image tar holds only disk.raw",
            ));
        }
        pos = pos.saturating_add(u64::try_from(k).unwrap_or(0));
    }
    Ok(m.realsize)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut h = [0u8; 24];
        h[..12].copy_from_slice(b"00014000000\0");
        assert_eq!(number(&h, 0, 12, "x", 0).unwrap(), 0o14000000);
        h[12] = 0x80;
        h[20..24].copy_from_slice(&[0, 0, 1, 0]);
        assert_eq!(number(&h, 12, 12, "x", 0).unwrap(), 256);
        h[0] = b'9';
        assert!(number(&h, 0, 12, "x", 0).is_err());
    }

    #[test]
    fn other_tars_are_not_gce() {
        let mut h = [0u8; 512];
        h[..7].copy_from_slice(b"foo.ovf");
        h[257..265].copy_from_slice(b"ustar  \0");
        assert!(disk_raw_header(&h).unwrap().is_none());
    }
}
