//! Which bytes to send: the non-zero 512-byte sectors of the image, found from
//! the host file system's allocation map (SEEK_DATA/SEEK_HOLE through
//! [`crate::source::raw::RawReader`]) and a zero test of every allocated sector,
//! then cut into Put Page requests by [`plan_ranges`].
//!
//! Put Page rules (Azure Storage REST API, "Put Page"): the range must start on
//! a 512-byte boundary, end one byte before a 512-byte boundary and be at most
//! 4 MiB long.

use crate::block::{BlockSource, ExtentKind};
use crate::error::Result;
use crate::source::raw::RawReader;

/// A page blob page: every Put Page range is aligned to it.
pub const PAGE: u64 = 512;
/// The largest range one Put Page may write (4 MiB).
pub const MAX_PUT_PAGE: u64 = 4 << 20;

/// Turn byte ranges `(offset, len)` holding non-zero data into Put Page ranges:
/// sorted, disjoint, each 512-aligned at both ends and at most 4 MiB, and their
/// union is exactly the union of the inputs widened to 512-byte pages (and
/// clipped to `size`, rounded up to a page). Empty inputs are ignored; inputs
/// may overlap or come in any order. Long runs are cut on the 4 MiB grid, so
/// the same data always gives the same ranges.
pub fn plan_ranges(nonzero: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let limit = size.div_ceil(PAGE).saturating_mul(PAGE);
    let mut spans: Vec<(u64, u64)> = nonzero
        .iter()
        .filter(|&&(_, len)| len > 0)
        .filter_map(|&(off, len)| {
            let start = off / PAGE * PAGE;
            let end = off
                .saturating_add(len)
                .div_ceil(PAGE)
                .saturating_mul(PAGE)
                .min(limit);
            (start < end).then_some((start, end))
        })
        .collect();
    spans.sort_unstable();
    // Merge overlapping or touching spans.
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = Vec::with_capacity(merged.len());
    for (s, e) in merged {
        let mut pos = s;
        while pos < e {
            let grid_end = (pos / MAX_PUT_PAGE + 1).saturating_mul(MAX_PUT_PAGE);
            let end = grid_end.min(e);
            out.push((pos, end - pos));
            pos = end;
        }
    }
    out
}

/// Byte ranges of `data` (which starts at absolute offset `base`) whose
/// 512-byte sectors are not all zero, appended to `out` (adjacent sectors merged).
pub fn nonzero_sectors(base: u64, data: &[u8], out: &mut Vec<(u64, u64)>) {
    let mut off = base;
    for sector in data.chunks(512) {
        let len = sector.len() as u64;
        if sector.iter().any(|&b| b != 0) {
            match out.last_mut() {
                Some(last) if last.0 + last.1 == off => last.1 += len,
                _ => out.push((off, len)),
            }
        }
        off += len;
    }
}

/// The non-zero byte ranges of a file: allocated extents only, zero sectors dropped.
pub fn scan_nonzero(reader: &RawReader) -> Result<Vec<(u64, u64)>> {
    let size = reader.size();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4 << 20];
    for ext in reader.map(0, size)? {
        if ext.kind != ExtentKind::Data {
            continue;
        }
        let mut pos = ext.offset;
        let end = ext.offset + ext.len;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..n];
            reader.read_at(pos, chunk)?;
            nonzero_sectors(pos, chunk, &mut out);
            pos += n as u64;
        }
    }
    Ok(out)
}

/// Sorted disjoint ranges minus sorted disjoint ranges (both `(offset, len)`).
pub fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, l) in a {
        let e = s + l;
        let mut pos = s;
        while j < b.len() && b[j].0 + b[j].1 <= pos {
            j += 1;
        }
        let mut k = j;
        while pos < e {
            match b.get(k) {
                Some(&(bs, bl)) if bs < e => {
                    if bs > pos {
                        out.push((pos, bs - pos));
                    }
                    pos = pos.max(bs + bl);
                    k += 1;
                }
                _ => {
                    out.push((pos, e - pos));
                    pos = e;
                }
            }
        }
    }
    out
}

/// Does the sorted disjoint set `set` cover `[off, off+len)` entirely?
pub fn covered(set: &[(u64, u64)], off: u64, len: u64) -> bool {
    subtract(&[(off, len)], set).is_empty()
}

/// Normalise ranges: sort and merge overlapping or touching ones.
pub fn normalise(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|r| r.1 > 0);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, l) in v {
        match out.last_mut() {
            Some(last) if s <= last.0 + last.1 => {
                let e = (last.0 + last.1).max(s + l);
                last.1 = e - last.0;
            }
            _ => out.push((s, l)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[(u64, u64)], size: u64) {
        let out = plan_ranges(input, size);
        let limit = size.div_ceil(PAGE) * PAGE;
        for w in out.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "sorted and disjoint: {out:?}");
        }
        for &(s, l) in &out {
            assert_eq!(s % PAGE, 0);
            assert_eq!(l % PAGE, 0);
            assert!(l > 0 && l <= MAX_PUT_PAGE);
            assert!(s + l <= limit);
        }
        // Coverage: union of out == union of widened inputs (within size).
        let widened = normalise(
            input
                .iter()
                .filter(|r| r.1 > 0)
                .map(|&(o, l)| {
                    let s = o / PAGE * PAGE;
                    let e = ((o + l).div_ceil(PAGE) * PAGE).min(limit);
                    (s, e.saturating_sub(s))
                })
                .collect(),
        );
        assert_eq!(normalise(out.clone()), widened, "input {input:?}");
    }

    #[test]
    fn plan_examples() {
        assert!(plan_ranges(&[], 1 << 20).is_empty());
        assert_eq!(plan_ranges(&[(1, 1)], 4096), vec![(0, 512)]);
        assert_eq!(plan_ranges(&[(511, 2)], 4096), vec![(0, 1024)]);
        assert_eq!(
            plan_ranges(&[(0, 9 << 20)], 16 << 20),
            vec![(0, 4 << 20), (4 << 20, 4 << 20), (8 << 20, 1 << 20)]
        );
        assert_eq!(
            plan_ranges(&[(1 << 20, 4 << 20)], 16 << 20),
            vec![(1 << 20, 3 << 20), (4 << 20, 1 << 20)]
        );
        assert_eq!(plan_ranges(&[(1024, 10), (0, 600)], 4096), vec![(0, 1536)]);
        check(&[(100, 5000), (3000, 1), (1 << 22, 1 << 23)], 64 << 20);
    }

    #[test]
    fn plan_properties_random() {
        // A small xorshift so the test needs no extra crate; many seeds.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let size = (next() % (64 << 20)) / 512 * 512 + 512;
            let n = next() % 20;
            let input: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let o = next() % size;
                    let l = next() % (if next() % 4 == 0 { 12 << 20 } else { 5000 });
                    (o, l.min(size - o))
                })
                .collect();
            check(&input, size);
        }
    }

    #[test]
    fn sectors_and_sets() {
        let mut d = vec![0u8; 4096];
        d[0] = 1;
        d[600] = 1;
        d[4095] = 1;
        let mut out = Vec::new();
        nonzero_sectors(1 << 20, &d, &mut out);
        assert_eq!(out, vec![((1 << 20), 1024), ((1 << 20) + 3584, 512)]);
        assert_eq!(
            subtract(&[(0, 100), (200, 100)], &[(50, 170)]),
            vec![(0, 50), (220, 80)]
        );
        assert!(covered(&[(0, 10), (10, 10)], 5, 15));
        assert!(!covered(&[(0, 10), (11, 10)], 5, 15));
    }
}
