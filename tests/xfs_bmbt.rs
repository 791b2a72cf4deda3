//! XFS writer: B+tree-format (bmbt) data forks, judged by xfsprogs.
//!
//! The fixture is a 32 MiB, 1 KiB-block, two-AG filesystem from a protofile
//! (no reflink) whose two directories each hold 300 small files (two blocks
//! in the first test, five in the second) followed by a filler that takes
//! nearly all the rest of that AG. Deleting every other small file (through
//! the writer) leaves ~150 small holes per AG, so a new file takes about one
//! extent per hole. Then, with `xfs_repair -n` clean (no "would" line)
//! after every step and `xfs_db` reading the files back:
//!
//! - a 100-block file takes ~40 extents: btree format, one leaf;
//! - replacing it with a 5-block file goes back to extents format;
//! - with a short-form xattr shrinking the data fork to 56 bytes (a root of
//!   3 pointers), a 420-block file needs ~190 extents = 4 leaves of at most
//!   59 records: a node block under a level-2 root; deleting it returns
//!   every block (same free count as before);
//! - a leaf directory (5-block holes this time, so each new 4 KiB directory
//!   block takes its own hole) grown by hard links past 21 extents goes to
//!   btree format; entries are then removed and added through the bmbt.
//!
//! The source image and untouched files stay unchanged.

mod common;

use common::xfs::{
    db_bmap, db_cat, db_field, db_ls, mkfs_proto, repair_clean, sb_value, with_overlay, xfs_db,
};
use common::{pattern, require, run_output, s, tempdir, InputGuard};
use onramp::inject::FsAction;
use std::path::{Path, PathBuf};

const TOOLS: &[&str] = &["mkfs.xfs", "xfs_db", "xfs_repair"];
/// 1 KiB blocks, two allocation groups (32 MiB image); no reflink, whose
/// refcount-tree reservation (about 2.5% of each AG at 1 KiB blocks) would
/// leave the nearly full fixture no space to hand out.
const MKFS: &[&str] = &["-b", "size=1024", "-d", "agcount=2", "-m", "reflink=0"];
/// Small files per directory.
const SMALL: usize = 300;
/// Free blocks left after each filler.
const SLACK: u64 = 24;

/// A numeric field of an xfs_db command's output (`field = N`).
fn db_num(img: &Path, cmds: &[&str], field: &str) -> u64 {
    let out = xfs_db(img, cmds);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field} = ")))
        .unwrap_or_else(|| panic!("{field} in {out}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The fragmented fixture (see the module docs): small files of
/// `blocks` 1 KiB blocks; `head` is protofile text put in the root
/// directory before /a and /b (allocated before the fillers).
fn fixture(dir: &Path, blocks: usize, head: &str) -> PathBuf {
    let small = dir.join("small.src");
    std::fs::write(&small, pattern(1, blocks << 10)).unwrap();
    let proto = |fill: &[u64]| {
        let mut p = String::from(head);
        for (k, d) in ["a", "b"].iter().enumerate() {
            p += &format!("{d} d--755 0 0\n");
            for i in 0..SMALL {
                p += &format!("f{i:03} ---644 0 0 {}\n", s(&small));
            }
            if let Some(&n) = fill.get(k) {
                let f = dir.join(format!("fill{k}.src"));
                std::fs::File::create(&f).unwrap().set_len(n << 10).unwrap();
                p += &format!("filler ---644 0 0 {}\n", s(&f));
            }
            p += "$\n";
        }
        p += "opt d--755 0 0\n$\n";
        mkfs_proto(dir, "source", &p, MKFS, 32)
    };
    let img = proto(&[]);
    let agblklog = sb_value(&img, "agblklog");
    let mut fill = Vec::new();
    for d in ["a", "b"] {
        let fsb = db_bmap(&img, &format!("/{d}/f000"))[0].1;
        let ag = fsb >> agblklog;
        let longest = db_num(&img, &[&format!("agf {ag}"), "print longest"], "longest");
        assert!(longest > 1000, "AG {ag}: longest free extent {longest}");
        fill.push(longest - SLACK);
    }
    proto(&fill);
    for ag in 0..2 {
        let longest = db_num(&img, &[&format!("agf {ag}"), "print longest"], "longest");
        assert!(
            longest <= 2 * SLACK,
            "AG {ag}: longest free extent {longest}"
        );
    }
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

/// Apply `actions` to a copy of `from` named `name`; xfs_repair -n clean.
fn step(dir: &Path, from: &Path, name: &str, actions: &[FsAction]) -> PathBuf {
    let out = dir.join(format!("{name}.img"));
    with_overlay(from, &out, |dev| {
        onramp::fs::write::apply(dev, "xfs", actions).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    repair_clean(&out);
    out
}

fn fdblocks(img: &Path) -> usize {
    sb_value(img, "fdblocks")
}

/// The fixture with every other small file deleted through the writer:
/// (source, fragmented copy).
fn fragmented(dir: &Path, blocks: usize, head: &str) -> (PathBuf, PathBuf) {
    let src = fixture(dir, blocks, head);
    let dels: Vec<FsAction> = ["a", "b"]
        .iter()
        .flat_map(|d| {
            (1..SMALL).step_by(2).map(move |i| FsAction::Delete {
                path: format!("/{d}/f{i:03}"),
            })
        })
        .collect();
    let frag = step(dir, &src, "frag", &dels);
    (src, frag)
}

/// Untouched small files are unchanged, deleted ones are gone.
fn small_files_intact(img: &Path, blocks: usize) {
    let want = pattern(1, blocks << 10);
    assert_eq!(db_cat(img, "/a/f000"), want);
    assert_eq!(db_cat(img, "/b/f218"), want);
    let o = run_output("xfs_db", &["-r", "-c", "path /a/f001", s(img)]);
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("not found") || text.contains("No such"),
        "{text}"
    );
}

#[test]
fn bmbt_forks_grow_shrink_and_free() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let (src, frag) = fragmented(d, 2, "");
    let guard = InputGuard::new(&src);

    // One level: ~40 extents (2-block holes) under a level-1 root.
    let big1 = pattern(7, 100 << 10);
    let one = step(d, &frag, "one", &[write("/opt/big1", big1.clone())]);
    assert_eq!(db_field(&one, "/opt/big1", "core.format"), "3 (btree)");
    let ext = db_bmap(&one, "/opt/big1");
    assert!(ext.len() > 21, "{} extents: {ext:?}", ext.len());
    assert_eq!(ext.iter().map(|e| e.2).sum::<u64>(), 100);
    assert_eq!(
        db_field(&one, "/opt/big1", "core.nextents"),
        ext.len().to_string()
    );
    assert_eq!(db_field(&one, "/opt/big1", "u3.bmbt.level"), "1");
    // Data blocks plus the leaves.
    eprintln!("/opt/big1: {} extents", ext.len());
    assert_eq!(
        db_field(&one, "/opt/big1", "core.nblocks"),
        (100 + ext.len().div_ceil(59)).to_string()
    );
    assert!(db_cat(&one, "/opt/big1") == big1, "/opt/big1 bytes differ");

    // Replaced by a small file: back to extents, the leaf freed.
    let small = pattern(8, 5000);
    let back = step(d, &one, "back", &[write("/opt/big1", small.clone())]);
    assert_eq!(db_field(&back, "/opt/big1", "core.format"), "2 (extents)");
    assert_eq!(db_field(&back, "/opt/big1", "core.nblocks"), "5");
    assert_eq!(db_cat(&back, "/opt/big1"), small);
    assert_eq!(fdblocks(&back) + 5, fdblocks(&frag));

    // A 56-byte data fork (3 root pointers) next to a short-form xattr.
    let attr = step(
        d,
        &back,
        "attr",
        &[
            write("/opt/big2", b"x".to_vec()),
            FsAction::SetXattr {
                path: "/opt/big2".into(),
                name: "user.padding_name_xyz".into(),
                value: vec![b'v'; 254],
            },
        ],
    );
    assert_eq!(db_field(&attr, "/opt/big2", "core.forkoff"), "7");

    // Two levels: 4+ leaves under one node under the root.
    let big2 = pattern(9, 420 << 10);
    let two_lv = step(d, &attr, "two", &[write("/opt/big2", big2.clone())]);
    assert_eq!(db_field(&two_lv, "/opt/big2", "core.format"), "3 (btree)");
    assert_eq!(db_field(&two_lv, "/opt/big2", "u3.bmbt.level"), "2");
    let ext = db_bmap(&two_lv, "/opt/big2");
    eprintln!("/opt/big2: {} extents", ext.len());
    assert!(ext.len() > 3 * 59, "{} extents", ext.len());
    assert_eq!(ext.iter().map(|e| e.2).sum::<u64>(), 420);
    let leaves = ext.len().div_ceil(59) as u64;
    assert_eq!(
        db_field(&two_lv, "/opt/big2", "core.nblocks"),
        (420 + leaves + 1).to_string()
    );
    assert!(
        db_cat(&two_lv, "/opt/big2") == big2,
        "/opt/big2 bytes differ"
    );
    assert_eq!(
        db_field(&two_lv, "/opt/big2", "a.sfattr.list[0].name"),
        "\"padding_name_xyz\""
    );

    // Deleting the two-level file returns every block it had.
    let gone = step(
        d,
        &two_lv,
        "gone",
        &[FsAction::Delete {
            path: "/opt/big2".into(),
        }],
    );
    assert_eq!(fdblocks(&gone), fdblocks(&back));
    assert_eq!(db_cat(&gone, "/opt/big1"), small);

    for img in [&frag, &one, &back, &two_lv, &gone] {
        small_files_intact(img, 2);
    }
    guard.check();
}

/// A 255-byte name for directory entry `i`.
fn long_name(i: usize) -> String {
    let p = format!("entry{i:04}_");
    let pad = "x".repeat(255 - p.len());
    p + &pad
}

/// A leaf directory (4 KiB directory blocks of 14 long names each) grown
/// by hard links until its data blocks, one per free-space hole, take more
/// extents than the inode holds: its data fork becomes a bmbt, and entries
/// are then removed and added through it.
#[test]
fn leaf_directory_in_btree_format() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let empty = d.join("empty.src");
    std::fs::write(&empty, b"").unwrap();
    let mut head = String::from("c d--755 0 0\n");
    for i in 0..28 {
        head += &format!("{} ---644 0 0 {}\n", long_name(i), s(&empty));
    }
    head += "$\n";
    let (src, frag) = fragmented(d, 5, &head);
    let guard = InputGuard::new(&src);
    assert_eq!(db_field(&frag, "/c", "core.format"), "2 (extents)");
    let target = format!("/c/{}", long_name(0));
    let link = |i: usize| FsAction::Hardlink {
        target: target.clone(),
        path: format!("/c/{}", long_name(i)),
    };
    let grown = step(
        d,
        &frag,
        "grown",
        &(28..28 + 14 * 22).map(link).collect::<Vec<_>>(),
    );
    assert_eq!(db_field(&grown, "/c", "core.format"), "3 (btree)");
    let ext = db_bmap(&grown, "/c");
    assert!(ext.len() > 21, "{} extents", ext.len());
    let mut want: Vec<String> = (0..28 + 14 * 22).map(long_name).collect();
    want.sort();
    let names = |img: &Path| -> Vec<String> { db_ls(img, "/c").into_iter().map(|e| e.0).collect() };
    assert_eq!(names(&grown), want);
    assert_eq!(
        db_field(&grown, &target, "core.nlinkv2"),
        (1 + 14 * 22).to_string()
    );

    // Remove every third added entry and add a block's worth more.
    let mut acts: Vec<FsAction> = (28..28 + 14 * 22)
        .step_by(3)
        .map(|i| FsAction::Delete {
            path: format!("/c/{}", long_name(i)),
        })
        .collect();
    acts.extend((28 + 14 * 22..28 + 14 * 24).map(link));
    let again = step(d, &grown, "again", &acts);
    assert_eq!(db_field(&again, "/c", "core.format"), "3 (btree)");
    let mut want: Vec<String> = (0..28 + 14 * 24)
        .filter(|i| !(28..28 + 14 * 22).contains(i) || (i - 28) % 3 != 0)
        .map(long_name)
        .collect();
    want.sort();
    assert_eq!(names(&again), want);
    // The target plus every link left (names 28 and up).
    assert_eq!(
        db_field(&again, &target, "core.nlinkv2"),
        (1 + want.len() - 28).to_string()
    );
    for img in [&frag, &grown, &again] {
        small_files_intact(img, 5);
    }
    guard.check();
}
