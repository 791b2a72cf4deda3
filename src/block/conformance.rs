//! The conformance suite every [`BlockSource`] must pass.
//!
//! Tests call [`check`] with a reader and the raw file holding the same disk
//! (made by `qemu-img convert -O raw`, the oracle). It checks: the map covers
//! `[0, size)` exactly, ordered and without overlap, for the whole disk and for
//! unaligned windows; Zero extents read as zeros; reads past the end fail; the
//! content equals the reference, read in odd-sized pieces and from several
//! threads at once.

use super::{full_map, BlockSource, ExtentKind};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Run the suite; returns a description of the first failure.
pub fn check(src: &dyn BlockSource, reference_raw: &Path) -> Result<(), String> {
    let reference = File::open(reference_raw).map_err(|e| format!("open reference: {e}"))?;
    let ref_len = reference.metadata().map_err(|e| e.to_string())?.len();
    let size = src.size();
    if ref_len != size {
        return Err(format!("size {size} != reference size {ref_len}"));
    }

    // 1. The whole map covers [0, size) exactly.
    let map = full_map(src).map_err(|e| format!("map: {e}"))?;
    let mut pos = 0u64;
    for e in &map {
        if e.offset != pos || e.len == 0 {
            return Err(format!("map gap/overlap/empty at {pos}: {e:?}"));
        }
        pos = e.end();
    }
    if pos != size {
        return Err(format!("map ends at {pos}, disk size {size}"));
    }

    // 2. Unaligned windows cover exactly their range.
    for (off, len) in windows(size) {
        let m = src
            .map(off, len)
            .map_err(|e| format!("map({off},{len}): {e}"))?;
        let mut p = off;
        for e in &m {
            if e.offset != p || e.len == 0 {
                return Err(format!("window map({off},{len}) gap at {p}: {e:?}"));
            }
            p = e.end();
        }
        if p != off + len {
            return Err(format!("window map({off},{len}) ends at {p}"));
        }
    }

    // 3. Content equals the reference; Zero extents read as zeros.
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    for e in &map {
        let mut off = e.offset;
        while off < e.end() {
            let n = usize::try_from((e.end() - off).min(1 << 20)).unwrap_or(1 << 20);
            // Poisoned, so that a reader leaving bytes unwritten is caught
            // (the engine reuses buffers without clearing them).
            a[..n].fill(0xa5);
            src.read_at(off, &mut a[..n])
                .map_err(|err| format!("read_at({off},{n}): {err}"))?;
            reference
                .read_exact_at(&mut b[..n], off)
                .map_err(|err| format!("reference read: {err}"))?;
            if e.kind == ExtentKind::Zero && a[..n].iter().any(|&x| x != 0) {
                return Err(format!("Zero extent at {off} reads non-zero"));
            }
            if a[..n] != b[..n] {
                let i = a[..n]
                    .iter()
                    .zip(&b[..n])
                    .position(|(x, y)| x != y)
                    .unwrap_or(0);
                return Err(format!("content differs at byte {}", off + i as u64));
            }
            off += n as u64;
        }
    }

    // 4. Odd-sized reads at odd offsets, and from several threads at once.
    let offs: Vec<u64> = [
        0u64,
        1,
        511,
        4095,
        65537,
        size / 3,
        size / 2 + 7,
        size.saturating_sub(3),
    ]
    .into_iter()
    .filter(|&o| o < size)
    .collect();
    let errs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = offs
            .iter()
            .map(|&off| {
                let reference = &reference;
                s.spawn(move || -> Result<(), String> {
                    let n = usize::try_from((size - off).min(200_003)).unwrap_or(0);
                    let mut x = vec![0xa5u8; n];
                    let mut y = vec![0u8; n];
                    src.read_at(off, &mut x)
                        .map_err(|e| format!("read_at({off},{n}): {e}"))?;
                    reference
                        .read_exact_at(&mut y, off)
                        .map_err(|e| e.to_string())?;
                    if x != y {
                        return Err(format!("odd read at {off} len {n} differs"));
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("thread panicked".into()))
                    .err()
            })
            .collect()
    });
    if let Some(e) = errs.into_iter().next() {
        return Err(e);
    }

    // 5. Reads past the end fail.
    let mut one = [0u8; 1];
    if src.read_at(size, &mut one).is_ok() {
        return Err("read at size succeeded".into());
    }
    let mut two = [0u8; 2];
    if size > 0 && src.read_at(size - 1, &mut two).is_ok() {
        return Err("read straddling the end succeeded".into());
    }
    if src.read_at(u64::MAX, &mut one).is_ok() {
        return Err("read at u64::MAX succeeded".into());
    }
    if src.map(size, 1).is_ok() {
        return Err("map past the end succeeded".into());
    }
    Ok(())
}

fn windows(size: u64) -> Vec<(u64, u64)> {
    let mut v = vec![(0, size)];
    if size > 10 {
        v.push((1, size - 2));
        v.push((size / 3, size / 3));
        v.push((size - 1, 1));
        v.push((size / 2 + 511, (size / 2).saturating_sub(511).min(12345)));
    }
    v
}
