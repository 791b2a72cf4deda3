//! New inode chunks in the XFS writer, judged by xfsprogs: images whose
//! existing inode chunks are full get hundreds of files injected, so the
//! writer must allocate new chunks (full ones, and sparse ones where free
//! space is too fragmented for an aligned full chunk). `xfs_repair -n` must be
//! clean, `xfs_db` reads the files back (inode numbers in the new chunks,
//! bytes right), and the AGI and superblock inode counters add up.

mod common;

use common::xfs::{agi_values, db_cat, db_ls, mkfs_proto, repair_clean, sb_value, xfs_db};
use common::{onramp_ok, require, s, tempdir, InputGuard};
use std::path::Path;

const TOOLS: &[&str] = &["mkfs.xfs", "xfs_db", "xfs_repair"];

/// Protofile lines for `n` inodes in the root directory: /etc/os-release
/// (so customize finds a Linux root) and `n - 2` one-line files.
fn files(dir: &Path, n: usize) -> String {
    let osr = dir.join("osr.src");
    std::fs::write(&osr, "ID=rhel\nVERSION_ID=9.4\n").unwrap();
    let src = dir.join("small.src");
    std::fs::write(&src, "x\n").unwrap();
    let mut p = format!("etc d--755 0 0\nos-release ---644 0 0 {}\n$\n", s(&osr));
    for i in 0..n - 2 {
        p += &format!("p{i:03} ---644 0 0 {}\n", s(&src));
    }
    p
}

/// (icount, ifree) summed over the AGIs; checked against the superblock.
fn inode_counts(img: &Path) -> (u64, u64) {
    let ags = sb_value(img, "agcount") as u32;
    let (mut c, mut f) = (0, 0);
    for ag in 0..ags {
        let v = agi_values(img, ag, &["count", "freecount"]);
        c += v[0];
        f += v[1];
    }
    assert_eq!(sb_value(img, "icount") as u64, c, "sb_icount vs AGIs");
    assert_eq!(sb_value(img, "ifree") as u64, f, "sb_ifree vs AGIs");
    (c, f)
}

/// Inject `dirs` x `per` files through `onramp customize`; check them back.
/// Returns the output image and the inode numbers of the new files.
fn inject(dir: &Path, img: &Path, dirs: usize, per: usize) -> (std::path::PathBuf, Vec<u64>) {
    let guard = InputGuard::new(img);
    let out = dir.join("out.raw");
    let mut a: Vec<String> = ["customize", s(img), s(&out), "--to", "raw"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    for d in 0..dirs {
        for i in 0..per {
            a.push("--write".into());
            a.push(format!("/d{d}/f{i:03}:file {d} {i}"));
        }
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    onramp_ok(&a);
    guard.check();
    repair_clean(&out);
    let mut inos = Vec::new();
    for d in 0..dirs {
        let ls = db_ls(&out, &format!("/d{d}"));
        assert_eq!(ls.len(), per, "/d{d}: {ls:?}");
        inos.extend(ls.iter().map(|e| e.1));
    }
    for (d, i) in [(0, 0), (dirs - 1, per - 1), (dirs / 2, per / 2)] {
        let want = format!("file {d} {i}");
        assert_eq!(db_cat(&out, &format!("/d{d}/f{i:03}")), want.as_bytes());
    }
    (out, inos)
}

/// Inode B+tree records of every AG (single-leaf trees, as in these small
/// fixtures): (first inode number, hole mask or 0, inodes in the chunk).
fn chunks(img: &Path) -> Vec<(u64, u16, u64)> {
    let ags = sb_value(img, "agcount") as u32;
    let shift = sb_value(img, "agblklog") + sb_value(img, "inopblog");
    let mut v = Vec::new();
    for ag in 0..ags {
        let out = xfs_db(img, &[&format!("agi {ag}"), "addr root", "print recs"]);
        let sparse = out.contains("holemask");
        for l in out.lines() {
            let Some((_, r)) = l.split_once(":[") else {
                continue;
            };
            let f: Vec<&str> = r.trim_end_matches(']').split(',').collect();
            let start = (u64::from(ag) << shift) + f[0].parse::<u64>().unwrap();
            if sparse {
                let hole = f[1].trim_start_matches("0x");
                let hole = u16::from_str_radix(hole, if f[1].starts_with("0x") { 16 } else { 10 });
                v.push((start, hole.unwrap(), f[2].parse().unwrap()));
            } else {
                v.push((start, 0, 64));
            }
        }
    }
    v
}

/// Whether inode `ino` lies in an allocated part of one of `chunks`.
fn in_chunks(chunks: &[(u64, u16, u64)], ino: u64) -> bool {
    chunks
        .iter()
        .any(|&(s, h, _)| (s..s + 64).contains(&ino) && h >> ((ino - s) / 4) & 1 == 0)
}

/// A fixture whose inode chunks are (nearly) full, then 200 files in 5 new
/// directories: 205 new inodes, most of them in new chunks of 64.
fn full_chunks(name: &str, args: &[&str]) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = mkfs_proto(dir.path(), name, &files(dir.path(), 61), args, 300);
    let (c0, f0) = inode_counts(&img);
    let before = chunks(&img);
    assert!(f0 < 100, "fixture: few free inodes ({f0})");
    let (out, inos) = inject(dir.path(), &img, 5, 40);
    let (icount, ifree) = inode_counts(&out);
    let new_chunks = (205 - f0).div_ceil(64);
    assert_eq!(icount, c0 + 64 * new_chunks);
    assert_eq!(ifree, icount - (c0 - f0) - 205);
    let after = chunks(&out);
    assert_eq!(
        after.len() as u64,
        before.len() as u64 + new_chunks,
        "{after:?}"
    );
    assert!(
        after.iter().all(|c| c.1 == 0 && c.2 == 64),
        "full chunks: {after:?}"
    );
    let mut uniq = inos.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), inos.len());
    let fresh = inos.iter().filter(|&&i| !in_chunks(&before, i)).count() as u64;
    assert!(fresh + f0 >= 200, "{fresh} files in new chunks");
    assert!(inos.iter().all(|&i| in_chunks(&after, i)));
}

#[test]
fn new_chunks_at_defaults() {
    full_chunks("defaults", &[]);
}

#[test]
fn new_chunks_without_sparse_inodes() {
    full_chunks("nosparse", &["-i", "sparse=0"]);
}

#[test]
fn new_chunks_without_finobt() {
    full_chunks("nofinobt", &["-m", "finobt=0"]);
}

/// 1 KiB blocks: two inodes per block, 32-block chunks.
#[test]
fn new_chunks_with_1k_blocks() {
    full_chunks("b1k", &["-b", "size=1024"]);
}

/// A 32 MiB filesystem packed with pairs of 7- and 9-block files, whose
/// 7-block files are then emptied (inodes stay in use): free space is 7-block holes, none holding
/// an aligned 8-block (64-inode) chunk but each holding an aligned 4-block
/// run, so new inodes go into sparse chunks (32 inodes, half the hole mask).
#[test]
fn sparse_chunks_in_fragmented_free_space() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let (a, b) = (d.join("a.src"), d.join("b.src"));
    std::fs::write(&a, common::pattern(1, 7 * 4096)).unwrap();
    std::fs::write(&b, common::pattern(2, 9 * 4096)).unwrap();
    let mut p = files(d, 2);
    let pair = |x: &str, y: &str, i: usize| {
        format!("{x}{i} ---644 0 0 {}\n{y}{i} ---644 0 0 {}\n", s(&a), s(&b))
    };
    for i in 0..245 {
        p += &pair("a", "b", i);
    }
    p += "z d--755 0 0\n";
    for i in 0..172 {
        p += &pair("c", "d", i);
    }
    p += "$\n";
    let img = mkfs_proto(d, "frag", &p, &[], 32);
    let freesp = xfs_db(&img, &["freesp -s"]);
    assert!(
        !freesp.contains("   8      15"),
        "fixture is packed: {freesp}"
    );
    // Punch the holes (truncating keeps the inodes allocated).
    let mid = d.join("mid.raw");
    let mut args: Vec<String> = ["customize", s(&img), s(&mid), "--to", "raw"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    for i in 0..245 {
        args.extend(["--write".into(), format!("/a{i}:")]);
    }
    for i in 0..172 {
        args.extend(["--write".into(), format!("/z/c{i}:")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    onramp_ok(&args);
    repair_clean(&mid);
    let (c0, f0) = inode_counts(&mid);
    let before = chunks(&mid);
    assert!(before.iter().all(|c| c.1 == 0), "{before:?}");
    let (out, inos) = inject(d, &mid, 3, 50);
    let (icount, ifree) = inode_counts(&out);
    assert_eq!(icount - ifree, c0 - f0 + 153);
    let after = chunks(&out);
    eprintln!("chunks before {before:?}\nchunks after {after:?}");
    let sparse: Vec<_> = after.iter().filter(|c| c.1 != 0).collect();
    assert!(!sparse.is_empty(), "no sparse chunk: {after:?}");
    for c in &sparse {
        assert_eq!(c.2, 64 - 4 * u64::from(c.1.count_ones()), "{c:?}");
    }
    assert_eq!(after.iter().map(|c| c.2).sum::<u64>(), icount);
    assert!(inos.iter().all(|&i| in_chunks(&after, i)));
    assert!(inos
        .iter()
        .any(|&i| sparse.iter().any(|c| in_chunks(&[**c], i))));
    assert_eq!(db_cat(&out, "/b7"), common::pattern(2, 9 * 4096));
}
