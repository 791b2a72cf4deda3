//! XFS writer: the allocation-group B+trees grow and shrink and a nearly
//! full filesystem fails cleanly. Judged by xfsprogs: `xfs_repair -n` must be
//! clean after every step (nothing it would fix, no counter it would
//! recount), `xfs_db` reads the tree heights from the AGF/AGI and reads back
//! the files.
//!
//! Fixtures are 64 MiB `mkfs.xfs -p protofile` images (below mkfs.xfs's
//! 300 MB floor, which it lifts for test environments: `TEST_DIR`,
//! `TEST_DEV` and `QA_CHECK_FS` set, as fstests does).

mod common;

use common::xfs::{ag_value, apply_in_place, db_cat, db_ls, repair_clean, sb_value, xfs_db};
use common::{pattern, require, s, tempdir};
use onramp::inject::FsAction;
use std::path::{Path, PathBuf};

const TOOLS: &[&str] = &["mkfs.xfs", "xfs_db", "xfs_repair"];

/// A 64 MiB image from `proto` (protofile body after the boot line).
fn small_image(dir: &Path, name: &str, args: &[&str], proto: &str) -> PathBuf {
    let pf = dir.join(format!("{name}.proto"));
    std::fs::write(&pf, format!("/dummy\n0 0\nd--755 0 0\n{proto}$\n")).unwrap();
    let img = dir.join(format!("{name}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let o = std::process::Command::new("mkfs.xfs")
        .args(["-q", "-f", "-p", s(&pf)])
        .args(args)
        .arg(&img)
        .env("TEST_DIR", dir)
        .env("TEST_DEV", &img)
        .env("QA_CHECK_FS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    repair_clean(&img);
    img
}

fn write(path: &str, data: Vec<u8>) -> FsAction {
    FsAction::WriteFile {
        path: path.into(),
        data,
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

fn delete(path: &str) -> FsAction {
    FsAction::Delete { path: path.into() }
}

/// One AG of `dirs` leaf-form directories of `per_dir` one-block files;
/// every other file is deleted (the free-space trees grow to at least
/// `levels` levels), then a big file and 16-block files consume the holes
/// (the trees merge back to one level), then those files are deleted again.
/// Best fit by size puts the 16-block files into the big extent's remainder
/// first, then assembles them from single holes.
fn fragment_and_refill(bs: usize, dirs: usize, per_dir: usize, levels: u64) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let src = dir.path().join("one.src");
    std::fs::write(&src, pattern(5, bs)).unwrap();
    let mut p = String::new();
    for d in 0..dirs {
        p += &format!("d{d:02} d--755 0 0\n");
        for f in 0..per_dir {
            p += &format!("f{f:03} ---644 0 0 {}\n", s(&src));
        }
        p += "$\n";
    }
    let bsz = bs.to_string();
    // reflink=0: the kernel's refcount-tree reservation (2.5% of the AG at
    // 1 KiB blocks) would keep more holes free than one leaf holds.
    let args = [
        "-d",
        "agcount=1",
        "-b",
        &format!("size={bsz}"),
        "-m",
        "reflink=0",
    ];
    let img = small_image(dir.path(), "frag", &args, &p);
    assert_eq!(ag_value(&img, "agf", 0, "bnolevel"), 1);

    // Every other file goes: one-block holes.
    let actions: Vec<FsAction> = (0..dirs)
        .flat_map(|d| {
            (1..per_dir)
                .step_by(2)
                .map(move |f| delete(&format!("/d{d:02}/f{f:03}")))
        })
        .collect();
    let holes = actions.len() as u64;
    apply_in_place(&img, &actions).unwrap();
    repair_clean(&img);
    let (bno, cnt) = (
        ag_value(&img, "agf", 0, "bnolevel"),
        ag_value(&img, "agf", 0, "cntlevel"),
    );
    eprintln!(
        "{holes} holes in {bs}-byte blocks: bnolevel {bno} cntlevel {cnt} btreeblks {} flcount {}",
        ag_value(&img, "agf", 0, "btreeblks"),
        ag_value(&img, "agf", 0, "flcount")
    );
    assert!(
        bno >= levels && cnt >= levels,
        "bnolevel {bno}, cntlevel {cnt}"
    );
    assert!(ag_value(&img, "agf", 0, "btreeblks") >= 2);
    assert_eq!(db_ls(&img, "/d01").len(), per_dir - per_dir / 2);
    assert_eq!(db_cat(&img, "/d00/f002"), pattern(5, bs));

    // A big file takes the large free extent, then 16-block files are
    // assembled from the holes: the trees shrink back to one level.
    let longest = ag_value(&img, "agf", 0, "longest");
    let big = pattern(6, (longest as usize - 200) * bs);
    apply_in_place(&img, &[write("/big", big.clone())]).unwrap();
    repair_clean(&img);
    // About 100 holes stay free: more than the kernel keeps back here, fewer
    // than two minimum-size leaves.
    let n = (holes + 200 - 100) / 16;
    let name = |i: u64| format!("/d{:02}/n{i:03}", i % dirs as u64);
    let actions: Vec<FsAction> = (0..n)
        .map(|i| write(&name(i), pattern(100 + i, 16 * bs)))
        .collect();
    apply_in_place(&img, &actions).unwrap();
    repair_clean(&img);
    let (bno, cnt) = (
        ag_value(&img, "agf", 0, "bnolevel"),
        ag_value(&img, "agf", 0, "cntlevel"),
    );
    eprintln!(
        "{n} files later: bnolevel {bno} cntlevel {cnt} flcount {} freeblks {}",
        ag_value(&img, "agf", 0, "flcount"),
        ag_value(&img, "agf", 0, "freeblks")
    );
    assert_eq!((bno, cnt), (1, 1), "trees did not collapse");
    assert_eq!(ag_value(&img, "agf", 0, "btreeblks"), 0);
    assert_eq!(db_cat(&img, "/big"), big);
    for i in [0, n / 2, n - 1] {
        assert_eq!(db_cat(&img, &name(i)), pattern(100 + i, 16 * bs));
    }
    // Freeing them again splits the trees once more.
    let actions: Vec<FsAction> = (0..n).map(|i| delete(&name(i))).collect();
    apply_in_place(&img, &actions).unwrap();
    repair_clean(&img);
    assert!(ag_value(&img, "agf", 0, "bnolevel") >= 2);
}

#[test]
fn free_space_trees_split_and_collapse() {
    fragment_and_refill(4096, 4, 320, 2);
}

#[test]
fn free_space_trees_of_1k_blocks_grow_to_three_levels() {
    fragment_and_refill(1024, 99, 110, 3);
}

#[test]
fn nearly_full_filesystem_says_no_space() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = small_image(dir.path(), "full", &[], "etc d--755 0 0\n$\n");
    let bs = sb_value(&img, "blocksize") as u64;
    let ags = sb_value(&img, "agcount") as u64;
    let fd = sb_value(&img, "fdblocks") as u64;
    // Leave about 2 MiB free (part of it is the kernel's to keep).
    let big = pattern(7, ((fd - 512) * bs) as usize);
    apply_in_place(&img, &[write("/big", big.clone())]).unwrap();
    repair_clean(&img);
    let mut written = Vec::new();
    let mut err = String::new();
    for (i, size) in std::iter::repeat_n(64 << 10, 40)
        .chain(std::iter::repeat_n(4096, 40))
        .enumerate()
    {
        let path = format!("/etc/f{i:02}");
        match apply_in_place(&img, &[write(&path, pattern(i as u64, size))]) {
            Ok(_) => {
                repair_clean(&img);
                written.push((path, i, size));
            }
            Err(e) if size == 4096 => {
                err = e;
                break;
            }
            Err(e) => {
                assert!(e.contains("no space"), "{e}");
            }
        }
    }
    eprintln!("{} files written, then: {err}", written.len());
    assert!(err.contains("no space"), "{err}");
    assert!(written.len() > 10, "{written:?}");
    // The failed step left the image as it was; what was written reads back.
    repair_clean(&img);
    let fd = sb_value(&img, "fdblocks") as u64;
    // At least the set-aside is left; not much more than it and the
    // metadata reservations (a few dozen blocks per AG here).
    assert!(fd >= 8 * ags && fd < 8 * ags + 100 * ags, "fdblocks {fd}");
    for agno in 0..ags as u32 {
        // The AG free lists stay at the kernel's minimum for one-level trees.
        assert!(ag_value(&img, "agf", agno, "flcount") >= 4);
    }
    for (path, i, size) in &written {
        assert_eq!(&db_cat(&img, path), &pattern(*i as u64, *size), "{path}");
    }
    assert_eq!(db_cat(&img, "/big"), big);
    // Deleting the big file gives the space back.
    apply_in_place(&img, &[delete("/big")]).unwrap();
    repair_clean(&img);
    assert!(sb_value(&img, "fdblocks") as u64 > fd + (big.len() as u64 / bs) - 64);
}

#[test]
fn finobt_splits_and_collapses() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let empty = dir.path().join("empty.src");
    std::fs::write(&empty, b"").unwrap();
    // 42 leaf-form directories of 410 empty files: about 270 full chunks.
    let mut p = String::new();
    for d in 0..42 {
        p += &format!("d{d:02} d--755 0 0\n");
        for f in 0..410 {
            p += &format!("f{f:03} ---644 0 0 {}\n", s(&empty));
        }
        p += "$\n";
    }
    let img = small_image(
        dir.path(),
        "ino",
        &["-d", "agcount=1", "-i", "size=512"],
        &p,
    );
    assert!(ag_value(&img, "agi", 0, "level") >= 2);
    assert_eq!(ag_value(&img, "agi", 0, "free_level"), 1);
    // One file of every inode chunk goes: every chunk gets a finobt record.
    let mut seen = std::collections::BTreeSet::new();
    let mut actions = Vec::new();
    let mut gone = [0usize; 42];
    for (d, g) in gone.iter_mut().enumerate() {
        for (name, ino) in db_ls(&img, &format!("/d{d:02}")) {
            if seen.insert(ino / 64) {
                actions.push(delete(&format!("/d{d:02}/{name}")));
                *g += 1;
            }
        }
    }
    assert!(actions.len() > 260, "{}", actions.len());
    eprintln!(
        "{} chunks, inobt level {}",
        actions.len(),
        ag_value(&img, "agi", 0, "level")
    );
    apply_in_place(&img, &actions).unwrap();
    repair_clean(&img);
    eprintln!(
        "finobt level {} after freeing one inode per chunk, fblocks {}",
        ag_value(&img, "agi", 0, "free_level"),
        ag_value(&img, "agi", 0, "fino_blocks")
    );
    assert!(ag_value(&img, "agi", 0, "free_level") >= 2);
    // Refill the holes: chunks fill up, the finobt merges back to one level.
    let n = actions.len();
    let actions: Vec<FsAction> = (0..n)
        .map(|i| write(&format!("/d{:02}/new{i:03}", i % 42), vec![]))
        .collect();
    apply_in_place(&img, &actions).unwrap();
    repair_clean(&img);
    assert_eq!(ag_value(&img, "agi", 0, "free_level"), 1);
    assert_eq!(ag_value(&img, "agi", 0, "fino_blocks"), 1);
    let added = (0..n).filter(|i| i % 42 == 7).count();
    assert_eq!(db_ls(&img, "/d07").len(), 410 - gone[7] + added);
    assert!(db_ls(&img, "/d07").iter().any(|e| e.0 == "new007"));
    let out = xfs_db(&img, &["agi 0", "print freecount"]);
    assert!(out.contains("freecount = "), "{out}");
}

#[test]
fn shared_blocks_are_not_freed() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let src = dir.path().join("f.src");
    std::fs::write(&src, pattern(8, 3 * 4096)).unwrap();
    let proto = format!("f ---644 0 0 {0}\ng ---644 0 0 {0}\n", s(&src));
    let img = small_image(dir.path(), "refc", &[], &proto);
    // Mark the middle block of /f shared in AG 0's refcount tree.
    let (_, fsb, n, _) = common::xfs::db_bmap(&img, "/f")[0];
    assert!(n == 3 && fsb < ag_value(&img, "agf", 0, "length"));
    let out = common::run(
        "xfs_db",
        &[
            "-x",
            "-c",
            "agf 0",
            "-c",
            "addr refcntroot",
            "-c",
            "write numrecs 1",
            "-c",
            &format!("write recs[1].startblock {}", fsb + 1),
            "-c",
            "write recs[1].blockcount 1",
            "-c",
            "write recs[1].refcount 2",
            s(&img),
        ],
    );
    assert!(out.contains("refcount = 2"), "{out}");
    let err = apply_in_place(&img, &[delete("/f")]).unwrap_err();
    assert!(err.contains("shared"), "{err}");
    // Unshared blocks are freed as usual.
    apply_in_place(&img, &[delete("/g")]).unwrap();
    assert!(db_ls(&img, "/").iter().all(|e| e.0 != "g"));
}

/// xorshift64: reproducible test randomness.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_writes_and_deletes_in_two_ags() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    // 75 empty files in each of 8 directories: inodes to reuse (no new
    // chunks here); directories stay in block form (up to ~125 entries).
    let empty = dir.path().join("empty.src");
    std::fs::write(&empty, b"").unwrap();
    let mut p = String::new();
    for d in 0..8 {
        p += &format!("d{d} d--755 0 0\n");
        for e in 0..75 {
            p += &format!("e{e:03} ---644 0 0 {}\n", s(&empty));
        }
        p += "$\n";
    }
    let args = ["-d", "agcount=2", "-b", "size=1024", "-n", "size=4096"];
    let img = small_image(dir.path(), "rand", &args, &p);
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut live: Vec<(String, u64, usize)> = Vec::new();
    let (mut next, mut deepest) = (0u64, 1u64);
    // Round 0 writes 560 small files, round 1 deletes every other one
    // (holes in both AGs), then random writes and deletes mix.
    for round in 0..8 {
        let mut actions = Vec::new();
        if round == 1 {
            // Every other file: about 140 one- or two-block holes per AG.
            let (keep, gone): (Vec<_>, Vec<_>) = live.drain(..).partition(|f| f.1 / 2 % 2 == 1);
            actions.extend(gone.iter().map(|f| delete(&f.0)));
            live = keep;
        }
        if round == 0 {
            for d in 0..8 {
                actions.extend((0..75).map(|e| delete(&format!("/d{d}/e{e:03}"))));
            }
        }
        let (ops, wmax, wpct) = match round {
            0 => (560, 2, 10),
            1 => (0, 1, 0),
            _ => (80, 24, 5),
        };
        for _ in 0..ops {
            if r.below(10) < wpct {
                let size = (1 + r.below(wmax) as usize) * 1024 - r.below(1024) as usize;
                let path = format!("/d{}/f{next:04}", next % 8);
                actions.push(write(&path, pattern(next, size)));
                live.push((path, next, size));
                next += 1;
            } else {
                let (path, _, _) = live.swap_remove(r.below(live.len() as u64) as usize);
                actions.push(delete(&path));
            }
        }
        apply_in_place(&img, &actions).unwrap();
        repair_clean(&img);
        for agno in 0..2 {
            deepest = deepest.max(ag_value(&img, "agf", agno, "bnolevel"));
        }
        for _ in 0..3 {
            let (path, seed, size) = &live[r.below(live.len() as u64) as usize];
            assert_eq!(
                &db_cat(&img, path),
                &pattern(*seed, *size),
                "round {round}: {path}"
            );
        }
    }
    eprintln!("{} files live, deepest bnobt {deepest}", live.len());
    assert!(deepest >= 2, "the free-space trees never split");
}
