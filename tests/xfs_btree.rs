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
