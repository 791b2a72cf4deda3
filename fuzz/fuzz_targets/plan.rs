//! Fuzz the Azure upload range planner (`publish::azure::plan`): every planned
//! Put Page range is 512-aligned, at most 4 MiB, the ranges are sorted and
//! disjoint, and together they cover exactly the non-zero sectors of the data.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::publish::azure::plan::{
    nonzero_sectors, normalise, plan_ranges, subtract, MAX_PUT_PAGE, PAGE,
};

/// Check the planner's invariants for `input` on a disk of `size` bytes.
fn check(input: &[(u64, u64)], size: u64) {
    let out = plan_ranges(input, size);
    let limit = size.div_ceil(PAGE) * PAGE;
    for w in out.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "not sorted/disjoint: {out:?}");
    }
    for &(s, l) in &out {
        assert_eq!(s % PAGE, 0, "start not aligned");
        assert_eq!(l % PAGE, 0, "length not aligned");
        assert!(l > 0 && l <= MAX_PUT_PAGE, "bad length {l}");
        assert!(s + l <= limit, "range past the disk");
    }
    let widened = normalise(
        input
            .iter()
            .filter(|r| r.1 > 0)
            .filter_map(|&(o, l)| {
                let s = o / PAGE * PAGE;
                let e = (o.saturating_add(l).div_ceil(PAGE).saturating_mul(PAGE)).min(limit);
                (e > s).then(|| (s, e - s))
            })
            .collect(),
    );
    assert_eq!(normalise(out.clone()), widened, "coverage differs");
    assert!(subtract(&widened, &out).is_empty());
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // Mode 0: the bytes are a disk; plan its non-zero sectors (the real path).
    // Mode 1: the bytes are (offset, len) pairs on a disk up to 64 GiB.
    if data[0] & 1 == 0 {
        let disk = &data[1..];
        let mut nz = Vec::new();
        // Scan in odd-sized pieces on 512-byte boundaries, as scan_nonzero does.
        let piece = (usize::from(data[0] >> 1) + 1) * 512;
        let mut base = 0usize;
        for chunk in disk.chunks(piece) {
            nonzero_sectors(base as u64, chunk, &mut nz);
            base += chunk.len();
        }
        // Every reported range is non-zero sector-wise and every non-zero byte is covered.
        // (nz is sorted and disjoint: binary search for the range holding each byte.)
        for (i, b) in disk.iter().enumerate() {
            if *b != 0 {
                let i = i as u64;
                let k = nz.partition_point(|&(o, _)| o <= i);
                let hit = k > 0 && i < nz[k - 1].0 + nz[k - 1].1;
                assert!(hit, "byte {i} missed");
            }
        }
        check(&nz, disk.len() as u64);
        // Each planned range holds at least one non-zero byte per 4 MiB piece.
        for (s, l) in plan_ranges(&nz, disk.len() as u64) {
            let e = ((s + l) as usize).min(disk.len());
            assert!(disk[s as usize..e].iter().any(|&b| b != 0), "all-zero range planned");
        }
    } else {
        let rest = &data[1..];
        let mut words = rest
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()));
        let Some(size) = words.next() else { return };
        // Up to 64 GiB: a 64 TiB span is 16 Mi ranges per input, too slow to fuzz.
        let size = size % (64 << 30);
        let mut input = Vec::new();
        while let (Some(o), Some(l)) = (words.next(), words.next()) {
            if input.len() >= 256 || size == 0 {
                break;
            }
            let o = o % size;
            // Mostly short runs, sometimes long ones.
            let l = if l & 1 == 0 { (l >> 1) % 100_000 } else { (l >> 1) % (size - o + 1) };
            input.push((o, l.min(size - o)));
        }
        check(&input, size);
    }
});
