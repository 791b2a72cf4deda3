//! XFS reader against images made by `mkfs.xfs -p protofile` (xfsprogs).
//!
//! Ground truth: the protofile's source tree (contents, modes, owners, link
//! targets) and `xfs_db -r` (directory listings with inode numbers, data fork
//! formats, block maps, UUID, label). Mutated images (superblock, inode core,
//! extent records, directory blocks, bmbt blocks, symlink blocks) are read in
//! a child process under `timeout 10` and `prlimit --as=256MiB`: each must
//! give a clear error, never a panic, a hang or runaway memory.

mod common;

use common::xfs::{db_bmap, db_byte, db_field, db_ino, db_ls, read_bytes, sb_value, xfs_db};
use common::{pattern, require, run, s, tempdir};
use onramp::block::slice::Slice;
use onramp::block::BlockSource;
use onramp::fs::xfs::{self, XfsReader};
use onramp::fs::{FileSystem, FileType};
use onramp::source::raw::RawReader;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

// ---------------------------------------------------------------- fixtures

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Dir {
        mode: u32,
    },
    Link(String),
}

/// A source tree, its protofile and what every path must read back as.
struct Tree {
    proto: PathBuf,
    expect: BTreeMap<String, Node>,
}

struct ProtoWriter {
    src: PathBuf,
    lines: Vec<String>,
    expect: BTreeMap<String, Node>,
    stack: Vec<String>,
    nfiles: usize,
    shared: BTreeMap<Vec<u8>, PathBuf>,
}

impl ProtoWriter {
    fn path(&self, name: &str) -> String {
        let mut p = String::new();
        for d in &self.stack {
            p.push('/');
            p.push_str(d);
        }
        p.push('/');
        p.push_str(name);
        p
    }
    fn file(&mut self, name: &str, data: &[u8], mode: &str, uid: u32, gid: u32) {
        // Identical contents share one source file (keeps big dirs cheap).
        let src = if let Some(p) = self.shared.get(data) {
            p.clone()
        } else {
            self.nfiles += 1;
            let p = self.src.join(format!("f{}", self.nfiles));
            std::fs::write(&p, data).unwrap();
            self.shared.insert(data.to_vec(), p.clone());
            p
        };
        self.lines
            .push(format!("{name} -{mode} {uid} {gid} {}", src.display()));
        let m = u32::from_str_radix(&mode[2..], 8).unwrap()
            | if mode.starts_with('u') { 0o4000 } else { 0 }
            | if mode.as_bytes()[1] == b'g' {
                0o2000
            } else {
                0
            };
        self.expect.insert(
            self.path(name),
            Node::File {
                data: data.to_vec(),
                mode: 0o100000 | m,
                uid,
                gid,
            },
        );
    }
    fn link(&mut self, name: &str, target: &str) {
        self.lines.push(format!("{name} l--777 0 0 {target}"));
        self.expect
            .insert(self.path(name), Node::Link(target.to_string()));
    }
    fn dir(&mut self, name: &str) {
        self.lines.push(format!("{name} d--755 0 0"));
        self.expect
            .insert(self.path(name), Node::Dir { mode: 0o040755 });
        self.stack.push(name.to_string());
    }
    fn end(&mut self) {
        self.lines.push("$".into());
        self.stack.pop();
    }
}

/// The tree every image holds. `big_dirs` adds the 1000- and 20000-entry
/// directories (node and btree form).
fn make_tree(dir: &Path, big_dirs: bool) -> Tree {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut w = ProtoWriter {
        src,
        lines: vec![
            "onramp-xfs-fixture".into(),
            "0 0".into(),
            "d--755 0 0".into(),
        ],
        expect: BTreeMap::new(),
        stack: Vec::new(),
        nfiles: 0,
        shared: BTreeMap::new(),
    };
    w.expect.insert("/".into(), Node::Dir { mode: 0o040755 });
    w.file("small", b"hello, xfs\n", "--644", 1000, 100);
    w.file("empty", b"", "--600", 0, 0);
    w.file("mid", &pattern(2, 70_000), "--640", 7, 8);
    w.file("big", &pattern(3, 3 * 1024 * 1024 + 123), "--644", 0, 0);
    w.file("suid", b"#!/bin/sh\n", "u-755", 0, 0);
    w.link("short", "small");
    w.link("abs", "/nest/a/b/deepfile");
    // Longer than any inode's literal area, short enough for one 1 KiB
    // block with the v5 header.
    let long: String = (0..15)
        .map(|i| format!("component{i:02}-{}", "x".repeat(28)))
        .collect::<Vec<_>>()
        .join("/");
    assert!(long.len() > 500 && long.len() < 1024 - 56);
    w.link("long", &long);
    let counts: &[(&str, usize)] = if big_dirs {
        &[
            ("few", 5),
            ("blk", 50),
            ("leaf", 300),
            ("node1k", 1000),
            ("node", 20000),
        ]
    } else {
        &[("few", 5), ("blk", 50), ("leaf", 300)]
    };
    for &(d, n) in counts {
        w.dir(d);
        for i in 0..n {
            // A few distinct contents, the rest shared.
            let data = if i % 97 == 0 {
                format!("{d} entry {i}\n").into_bytes()
            } else {
                b"entry\n".to_vec()
            };
            w.file(&format!("entry_{i:06}_abcdefgh"), &data, "--644", 0, 0);
        }
        w.end();
    }
    w.dir("nest");
    w.dir("a");
    w.dir("b");
    w.file("deepfile", b"deep\n", "--644", 0, 0);
    w.end();
    w.link("up", "../../small");
    w.end();
    w.end();
    w.lines.push("$".into());
    let proto = dir.join("proto");
    std::fs::write(&proto, w.lines.join("\n") + "\n").unwrap();
    Tree {
        proto,
        expect: w.expect,
    }
}

/// A 300 MiB sparse image (mkfs.xfs's minimum) made from `tree` with `args`.
fn mkfs(dir: &Path, name: &str, tree: &Tree, args: &[&str]) -> PathBuf {
    let img = dir.join(name);
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(300 << 20).unwrap();
    drop(f);
    let mut a: Vec<&str> = vec!["-q", "-f", "-p", s(&tree.proto)];
    a.extend_from_slice(args);
    a.push(s(&img));
    run("mkfs.xfs", &a);
    fix_remote_symlinks(&img, tree);
    // The fixture itself must be a valid filesystem.
    run("xfs_repair", &["-n", s(&img)]);
    img
}

/// mkfs.xfs 6.1 writes the target of a remote symlink from a protofile
/// without the v5 `xfs_dsymlink_hdr` (XSLM magic, offset, bytes, crc, uuid,
/// owner, blkno), which `xfs_repair -n` flags ("bad symlink header ... would
/// junk entry"). Newer xfsprogs write it. Add the header where it is missing;
/// [`mkfs`] then checks the result with `xfs_repair -n`.
fn fix_remote_symlinks(img: &Path, tree: &Tree) {
    use std::os::unix::fs::FileExt;
    if !xfs_db(img, &["version"]).contains("CRC") {
        return;
    }
    let uuid_text = xfs_db(img, &["uuid"]);
    let hex: String = uuid_text
        .trim()
        .strip_prefix("UUID = ")
        .unwrap()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let uuid: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let bsize: usize = sb_value(img, "blocksize");
    for (path, node) in &tree.expect {
        let Node::Link(target) = node else { continue };
        if db_field(img, path, "core.format") != "2 (extents)" {
            continue;
        }
        let ext = db_bmap(img, path);
        assert_eq!(ext.len(), 1, "{path}: {ext:?}");
        let at = db_byte(img, "fsblock", ext[0].1);
        if read_bytes(img, at, 4) == b"XSLM" {
            continue;
        }
        let ino = db_ino(img, path);
        let mut blk = vec![0u8; bsize * ext[0].2 as usize];
        blk[0..4].copy_from_slice(b"XSLM");
        blk[8..12].copy_from_slice(&(target.len() as u32).to_be_bytes());
        blk[16..32].copy_from_slice(&uuid);
        blk[32..40].copy_from_slice(&ino.to_be_bytes());
        blk[40..48].copy_from_slice(&(at / 512).to_be_bytes());
        blk[56..56 + target.len()].copy_from_slice(target.as_bytes());
        xfs::crc::set(&mut blk, 12).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
        f.write_all_at(&blk, at).unwrap();
    }
}

fn open(img: &Path) -> Box<dyn FileSystem> {
    let raw: Arc<dyn BlockSource> = Arc::new(RawReader::open(img).unwrap());
    xfs::probe(raw).unwrap().expect("XFS detected")
}

// ---------------------------------------------------------------- checks

/// Everything in `tree` reads back right; every directory listing equals
/// `xfs_db ls` (names and inode numbers). Files in the 20000-entry
/// directory are sampled (each lookup scans the directory).
fn check_tree(img: &Path, fs: &dyn FileSystem, tree: &Tree) {
    assert_eq!(fs.kind(), "xfs");
    // Inode numbers of every path, from xfs_db's listings.
    let mut db_inos: BTreeMap<String, u64> = BTreeMap::new();
    db_inos.insert("/".into(), db_ino(img, "/"));
    for (path, node) in &tree.expect {
        if let Node::Dir { .. } = node {
            let prefix = if path == "/" {
                "/".to_string()
            } else {
                format!("{path}/")
            };
            for (name, ino) in db_ls(img, path) {
                db_inos.insert(format!("{prefix}{name}"), ino);
            }
        }
    }
    for (path, want) in &tree.expect {
        // Every 50th file of the 20000-entry directory (all of its names are
        // compared with xfs_db below).
        if path.starts_with("/node/") && !path.ends_with("0_abcdefgh") {
            continue;
        }
        let st = fs
            .stat(path)
            .unwrap_or_else(|e| panic!("stat {path}: {e}"))
            .unwrap_or_else(|| panic!("{path} missing"));
        match want {
            Node::File {
                data,
                mode,
                uid,
                gid,
            } => {
                assert_eq!(st.file_type, FileType::File, "{path}");
                assert_eq!(st.mode, *mode, "{path} mode");
                assert_eq!((st.uid, st.gid), (*uid, *gid), "{path} owner");
                assert_eq!(st.size, data.len() as u64, "{path} size");
                let got = fs.read_file(path, 1 << 30).unwrap();
                assert!(got == *data, "{path}: contents differ");
            }
            Node::Dir { mode } => {
                assert_eq!(st.file_type, FileType::Dir, "{path}");
                assert_eq!(st.mode, *mode, "{path} mode");
                let mut ours: Vec<(String, u64)> = fs
                    .read_dir(path)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.name, e.ino))
                    .collect();
                ours.sort();
                let prefix = if path == "/" {
                    "/".to_string()
                } else {
                    format!("{path}/")
                };
                let mut theirs: Vec<(String, u64)> = db_inos
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), *v)))
                    .filter(|(r, _)| !r.is_empty() && !r.contains('/'))
                    .collect();
                theirs.sort();
                assert_eq!(ours, theirs, "{path}: listing vs xfs_db ls");
                // Types and names against the source tree.
                let mut want_names: Vec<String> = tree
                    .expect
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .filter(|r| !r.is_empty() && !r.contains('/'))
                    .map(str::to_string)
                    .collect();
                want_names.sort();
                let names: Vec<String> = ours.into_iter().map(|(n, _)| n).collect();
                assert_eq!(names, want_names, "{path}: names vs source tree");
                for e in fs.read_dir(path).unwrap() {
                    let child = format!("{prefix}{}", e.name);
                    let t = match tree.expect.get(&child).unwrap() {
                        Node::File { .. } => FileType::File,
                        Node::Dir { .. } => FileType::Dir,
                        Node::Link(_) => FileType::Symlink,
                    };
                    assert_eq!(e.file_type, t, "{child} type");
                }
            }
            Node::Link(target) => {
                assert_eq!(st.file_type, FileType::Symlink, "{path}");
                assert_eq!(st.size, target.len() as u64);
                assert_eq!(&fs.read_link(path).unwrap(), target, "{path} target");
            }
        }
        assert_eq!(st.ino, db_inos[path], "{path}: inode number vs xfs_db");
        // mkfs.xfs stamps every inode with the time it ran.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - 3600..=now + 60).contains(&st.mtime),
            "{path} mtime {}",
            st.mtime
        );
    }
    // Guest path resolution through our symlinks.
    assert_eq!(
        onramp::fs::read_guest_file(fs, "/abs", 100)
            .unwrap()
            .unwrap(),
        b"deep\n"
    );
    assert_eq!(
        onramp::fs::read_guest_file(fs, "/nest/a/up", 100)
            .unwrap()
            .unwrap(),
        b"hello, xfs\n"
    );
    assert!(fs.stat("/nope").unwrap().is_none());
    assert!(fs.stat("/small/under-a-file").unwrap().is_none());
    // The caller's limit is enforced.
    let e = fs.read_file("/big", 1000).unwrap_err();
    assert!(e.message().contains("limit"), "{e}");
    // UUID and label agree with xfs_db.
    let uuid = xfs_db(img, &["uuid"]);
    assert_eq!(
        uuid.trim().strip_prefix("UUID = ").unwrap(),
        fs.uuid().unwrap()
    );
    let label = xfs_db(img, &["label"]);
    let label = label
        .trim()
        .strip_prefix("label = ")
        .unwrap()
        .trim_matches('"');
    assert_eq!(fs.label().unwrap_or_default(), label);
}

/// The data fork formats the tree must exercise, asserted with xfs_db.
fn check_formats(img: &Path, v5: bool, big_dirs: bool) {
    let fmt = |p: &str| db_field(img, p, "core.format");
    assert_eq!(fmt("/few"), "1 (local)", "short form directory");
    assert_eq!(fmt("/short"), "1 (local)", "inline symlink");
    assert_eq!(fmt("/long"), "2 (extents)", "remote symlink");
    assert_eq!(fmt("/big"), "2 (extents)");
    // Block form: one directory block whose magic is XD2B / XDB3.
    let bsize: u64 = sb_value(img, "blocksize") as u64;
    let dirblklog: u32 = sb_value(img, "dirblklog") as u32;
    let dbs = bsize << dirblklog;
    assert_eq!(fmt("/blk"), "2 (extents)");
    assert_eq!(
        db_field(img, "/blk", "core.size"),
        dbs.to_string(),
        "/blk is one block"
    );
    let magic = xfs_db(img, &["path /blk", "dblock 0", "print"]);
    let want = if v5 { "0x58444233" } else { "0x58443242" };
    assert!(
        magic.contains(&format!("magic = {want}\n")),
        "/blk block magic: {magic}"
    );
    // Leaf form: a single LEAF1 block at the leaf offset (32 GiB).
    let leaf_dblock = (32u64 << 30) / bsize;
    let leaf = xfs_db(
        img,
        &["path /leaf", &format!("dblock {leaf_dblock}"), "print"],
    );
    let want = if v5 { "0x3df1" } else { "0xd2f1" };
    assert!(
        leaf.contains(&format!("magic = {want}\n")),
        "/leaf leaf magic: {leaf}"
    );
    if big_dirs {
        // Node form: a da-btree node at the leaf offset.
        let node = xfs_db(
            img,
            &["path /node1k", &format!("dblock {leaf_dblock}"), "print"],
        );
        let want = if v5 { "0x3ebe" } else { "0xfebe" };
        assert!(
            node.contains(&format!("magic = {want}\n")),
            "/node1k node magic: {node}"
        );
        // Node form again, with its data fork in B+tree format.
        assert_eq!(fmt("/node"), "3 (btree)", "btree-format directory");
    }
}

struct Built {
    img: PathBuf,
    tree: Tree,
}

fn build(dir: &Path, name: &str, args: &[&str], big_dirs: bool) -> Built {
    let tree = make_tree(&dir.join(format!("{name}.tree")), big_dirs);
    let img = mkfs(dir, name, &tree, args);
    Built { img, tree }
}

// ---------------------------------------------------------------- tests

#[test]
fn v5_defaults_every_format() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair"]) {
        return;
    }
    let t = tempdir();
    let b = build(t.path(), "v5.img", &["-L", "onrampxfs"], true);
    assert!(
        xfs_db(&b.img, &["version"]).contains("CRC"),
        "defaults are v5"
    );
    check_formats(&b.img, true, true);
    let fs = open(&b.img);
    check_tree(&b.img, fs.as_ref(), &b.tree);
    assert_eq!(fs.label().as_deref(), Some("onrampxfs"));
    let t0 = std::time::Instant::now();
    assert_eq!(fs.read_dir("/node").unwrap().len(), 20000);
    let t1 = std::time::Instant::now();
    let big = fs.read_file("/big", 1 << 30).unwrap();
    let t2 = std::time::Instant::now();
    for i in (0..20000).step_by(10) {
        fs.stat(&format!("/node/entry_{i:06}_abcdefgh"))
            .unwrap()
            .unwrap();
    }
    let t3 = std::time::Instant::now();
    eprintln!(
        "list 20000-entry btree dir: {:?}; read {} bytes: {:?}; 2000 hashed lookups there: {:?}",
        t1 - t0,
        big.len(),
        t2 - t1,
        t3 - t2
    );
    // Full listing of the btree-format directory vs xfs_db, already done in
    // check_tree; also read every 1000th file there through the reader.
    for i in (0..20000).step_by(1000) {
        let p = format!("/node/entry_{i:06}_abcdefgh");
        let want = if i % 97 == 0 {
            format!("node entry {i}\n").into_bytes()
        } else {
            b"entry\n".to_vec()
        };
        assert_eq!(fs.read_file(&p, 100).unwrap(), want, "{p}");
    }
}

#[test]
fn v5_through_a_partition_slice() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair"]) {
        return;
    }
    let t = tempdir();
    let b = build(t.path(), "p.img", &[], false);
    // Put the filesystem at 1 MiB inside a larger disk.
    let disk = t.path().join("disk.raw");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len((300 << 20) + (2 << 20)).unwrap();
    drop(f);
    run(
        "dd",
        &[
            &format!("if={}", s(&b.img)),
            &format!("of={}", s(&disk)),
            "bs=1M",
            "seek=1",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    let raw: Arc<dyn BlockSource> = Arc::new(RawReader::open(&disk).unwrap());
    assert!(
        xfs::probe(Arc::clone(&raw)).unwrap().is_none(),
        "no XFS at 0"
    );
    let slice: Arc<dyn BlockSource> = Arc::new(Slice::new(raw, 1 << 20, 300 << 20).unwrap());
    let fs = xfs::probe(slice).unwrap().unwrap();
    check_tree(&b.img, fs.as_ref(), &b.tree);
}

#[test]
fn v4_no_crc() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair"]) {
        return;
    }
    let t = tempdir();
    // mkfs.xfs 6.x still makes v4 (with a deprecation warning).
    let b = build(t.path(), "v4.img", &["-m", "crc=0"], true);
    assert!(!xfs_db(&b.img, &["version"]).contains("CRC"), "v4");
    check_formats(&b.img, false, true);
    let fs = open(&b.img);
    check_tree(&b.img, fs.as_ref(), &b.tree);
}

#[test]
fn v4_without_ftype() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair"]) {
        return;
    }
    let t = tempdir();
    let b = build(
        t.path(),
        "v4n.img",
        &["-m", "crc=0", "-n", "ftype=0"],
        false,
    );
    check_formats(&b.img, false, false);
    let fs = open(&b.img);
    // Types come from the inodes when entries carry none.
    check_tree(&b.img, fs.as_ref(), &b.tree);
}

#[test]
fn directory_block_size_variants() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair"]) {
        return;
    }
    let t = tempdir();
    for (name, args) in [
        ("n8k.img", vec!["-n", "size=8192"]),
        ("b1k-n4k.img", vec!["-b", "size=1024", "-n", "size=4096"]),
        ("n64k.img", vec!["-n", "size=65536"]),
        (
            "v4-b512-n16k.img",
            vec!["-m", "crc=0", "-b", "size=512", "-n", "size=16384"],
        ),
    ] {
        let b = build(t.path(), name, &args, false);
        let fs = open(&b.img);
        check_tree(&b.img, fs.as_ref(), &b.tree);
        std::fs::remove_file(&b.img).unwrap();
    }
}

/// Extents rewritten with `xfs_db -x` (which also fixes the CRCs): an
/// unwritten extent reads as zeros; an extent moved up leaves a hole.
#[test]
fn unwritten_extents_and_holes() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair"]) {
        return;
    }
    let t = tempdir();
    let b = build(t.path(), "u.img", &[], false);
    let Node::File { data: mid, .. } = b.tree.expect["/mid"].clone() else {
        panic!()
    };
    let ext = db_bmap(&b.img, "/mid");
    assert_eq!(ext.len(), 1, "{ext:?}");
    let ino = db_ino(&b.img, "/mid");
    let ino_big = db_ino(&b.img, "/big");
    run(
        "xfs_db",
        &[
            "-x",
            "-c",
            &format!("inode {ino}"),
            "-c",
            "write u3.bmx[0].startoff 2",
            "-c",
            &format!("inode {ino_big}"),
            "-c",
            "write u3.bmx[0].extentflag 1",
            s(&b.img),
        ],
    );
    assert_eq!(db_bmap(&b.img, "/mid")[0].0, 2, "xfs_db moved the extent");
    assert_eq!(
        db_bmap(&b.img, "/big")[0].3,
        1,
        "xfs_db flagged it unwritten"
    );
    let fs = open(&b.img);
    let got = fs.read_file("/mid", 1 << 20).unwrap();
    let mut want = vec![0u8; 8192];
    want.extend_from_slice(&mid[..mid.len() - 8192]);
    assert_eq!(got.len(), mid.len());
    assert!(got == want, "hole of two blocks, then the data");
    let big = fs.read_file("/big", 1 << 30).unwrap();
    assert_eq!(big.len(), 3 * 1024 * 1024 + 123);
    assert!(
        big.iter().all(|&b| b == 0),
        "unwritten extent reads as zeros"
    );
}

// ---------------------------------------------------------------- mutations

/// A raw image with some bytes replaced (for corruption cases).
struct Patched {
    inner: RawReader,
    patches: Vec<(u64, Vec<u8>)>,
}

impl BlockSource for Patched {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> onramp::Result<()> {
        self.inner.read_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        for (at, bytes) in &self.patches {
            let pend = at + bytes.len() as u64;
            if *at < end && pend > offset {
                let lo = (*at).max(offset);
                let hi = pend.min(end);
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&bytes[(lo - at) as usize..(hi - at) as usize]);
            }
        }
        Ok(())
    }
    fn format_name(&self) -> &'static str {
        "patched"
    }
}

fn encode_patches(p: &[(u64, Vec<u8>)]) -> String {
    p.iter()
        .map(|(o, b)| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("{o}:{hex}")
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn decode_patches(s: &str) -> Vec<(u64, Vec<u8>)> {
    s.split(';')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (o, h) = x.split_once(':').unwrap();
            let bytes = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect();
            (o.parse().unwrap(), bytes)
        })
        .collect()
}

/// Read everything reachable, by inode (cycle- and depth-guarded), stopping
/// at the first error.
fn walk_all(fs: &XfsReader) -> onramp::Result<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![(fs.root()?, 0usize)];
    let mut n = 0usize;
    while let Some((d, depth)) = todo.pop() {
        if depth > 64 || !seen.insert(d.ino) {
            continue;
        }
        for e in fs.dir_entries(&d)? {
            n += 1;
            // The hashed lookup agrees with the listing (sampled: the child
            // runs against a 10 s timeout in a debug build).
            let found = if n % 16 != 1 {
                Some(e.ino)
            } else {
                fs.lookup_in(&d, e.name.as_bytes())?
            };

            if found != Some(e.ino) {
                return Err(onramp::Error::corrupt_msg(format!(
                    "MISMATCH: lookup of {:?} in {} gave {found:?}, listing says {}",
                    e.name, d.ino, e.ino
                )));
            }
            let i = fs.inode(e.ino)?;
            match i.file_type() {
                FileType::Dir => todo.push((i, depth + 1)),
                FileType::File => {
                    fs.file_bytes(&i, 64 << 20)?;
                }
                FileType::Symlink => {
                    fs.link_target(&i)?;
                }
                FileType::Other => {}
            }
        }
    }
    Ok(n)
}

/// Runs only as a child of [`run_case`] (environment set): open the patched
/// image, read everything, print the outcome.
#[test]
fn mutation_child() {
    let (Ok(img), Ok(patches)) = (std::env::var("XFS_MUT_IMG"), std::env::var("XFS_MUT_PATCH"))
    else {
        return;
    };
    let src = Patched {
        inner: RawReader::open(Path::new(&img)).unwrap(),
        patches: decode_patches(&patches),
    };
    let outcome = match xfs::probe(Arc::new(src)) {
        Ok(None) => "NOTXFS".to_string(),
        Err(e) => format!("ERR {:?} {}", e.kind(), e.message()),
        Ok(Some(_)) => {
            let src = Patched {
                inner: RawReader::open(Path::new(&img)).unwrap(),
                patches: decode_patches(&patches),
            };
            match XfsReader::open(Arc::new(src)).and_then(|fs| walk_all(&fs)) {
                Ok(n) => format!("OK {n}"),
                Err(e) => format!("ERR {:?} {}", e.kind(), e.message()),
            }
        }
    };
    println!("OUTCOME: {outcome}");
}

/// Run the child on `img` with `patches` under timeout and an address-space
/// limit; return its outcome line.
fn run_case(img: &Path, patches: &[(u64, Vec<u8>)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("timeout")
        .args(["30", "prlimit", "--as=268435456"])
        .arg(&exe)
        .args([
            "--exact",
            "mutation_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("XFS_MUT_IMG", img)
        .env("XFS_MUT_PATCH", encode_patches(patches))
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME: ").map(|(_, o)| o))
        .unwrap_or_else(|| panic!("no outcome: {stdout}"))
        .to_string()
}

/// A structure of `len` bytes at `at` with `edits` applied (byte offset in
/// the structure, new bytes), and its v5 CRC at `crc_off` recomputed when
/// given — so that the field checks behind the CRC are reached.
fn patch(
    img: &Path,
    at: u64,
    len: usize,
    edits: &[(usize, &[u8])],
    crc_off: Option<usize>,
) -> (u64, Vec<u8>) {
    let mut b = read_bytes(img, at, len);
    for (o, bytes) in edits {
        b[*o..*o + bytes.len()].copy_from_slice(bytes);
    }
    if let Some(c) = crc_off {
        xfs::crc::set(&mut b, c).unwrap();
    }
    (at, b)
}

struct Image {
    img: PathBuf,
    v5: bool,
    isize: usize,
    bsize: usize,
}

fn mutation_image(v5: bool) -> &'static Option<Image> {
    static V5: OnceLock<Option<Image>> = OnceLock::new();
    static V4: OnceLock<Option<Image>> = OnceLock::new();
    let cell = if v5 { &V5 } else { &V4 };
    cell.get_or_init(|| {
        if !require(&["mkfs.xfs", "xfs_db", "xfs_repair", "timeout", "prlimit"]) {
            return None;
        }
        // Shared by the cases of one test binary run; replaced on the next run.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fs_xfs_mut_{}", if v5 { "v5" } else { "v4" }));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let args: &[&str] = if v5 { &[] } else { &["-m", "crc=0"] };
        let b = build(&dir, "m.img", args, true);
        // Sanity: the unmutated image reads fully in the child.
        let ok = run_case(&b.img, &[]);
        assert!(ok.starts_with("OK "), "unmutated: {ok}");
        Some(Image {
            isize: sb_value(&b.img, "inodesize"),
            bsize: sb_value(&b.img, "blocksize"),
            img: b.img,
            v5,
        })
    })
}

/// One corruption: what to change, and a word the error must contain.
struct Case {
    name: &'static str,
    patches: Vec<(u64, Vec<u8>)>,
    expect: &'static str,
}

fn cases(m: &Image) -> Vec<Case> {
    let img = &m.img;
    let sb_crc = m.v5.then_some(224);
    let i_crc = m.v5.then_some(100);
    let core = if m.v5 { 176 } else { 100 };
    let sb = |edits: &[(usize, &[u8])]| vec![patch(img, 0, 512, edits, sb_crc)];
    let ino = |path: &str, edits: &[(usize, &[u8])]| {
        let at = db_byte(img, "inode", db_ino(img, path));
        vec![patch(img, at, m.isize, edits, i_crc)]
    };
    let first_block = |path: &str| db_byte(img, "fsblock", db_bmap(img, path)[0].1);
    let dir_crc = m.v5.then_some(4);
    let dhdr = if m.v5 { 64 } else { 16 };
    let dblk = |path: &str, edits: &[(usize, &[u8])]| {
        vec![patch(img, first_block(path), m.bsize, edits, dir_crc)]
    };
    let mut v = vec![
        Case {
            name: "sb magic",
            patches: sb(&[(0, b"XFSX")]),
            expect: "NOTXFS",
        },
        Case {
            name: "sb blocksize",
            patches: sb(&[(4, &3000u32.to_be_bytes())]),
            expect: "sb_blocksize",
        },
        Case {
            name: "sb agcount 0",
            patches: sb(&[(88, &0u32.to_be_bytes())]),
            expect: "sb_agcount",
        },
        Case {
            name: "sb dblocks past the device",
            patches: sb(&[(8, &(1u64 << 40).to_be_bytes())]),
            expect: "sb_dblocks",
        },
        Case {
            name: "sb agblklog",
            patches: sb(&[(124, &[40])]),
            expect: "sb_agblklog",
        },
        Case {
            name: "sb inodesize",
            patches: sb(&[(104, &300u16.to_be_bytes())]),
            expect: "sb_inodesize",
        },
        Case {
            name: "sb sectsize 0",
            patches: sb(&[(102, &0u16.to_be_bytes())]),
            expect: "sb_sectsize",
        },
        Case {
            name: "sb dirblklog",
            patches: sb(&[(192, &[12])]),
            expect: "sb_dirblklog",
        },
        Case {
            name: "sb rootino",
            patches: sb(&[(56, &(1u64 << 60).to_be_bytes())]),
            expect: "sb_rootino",
        },
        Case {
            name: "sb version 9",
            patches: sb(&[(100, &0xb4a9u16.to_be_bytes())]),
            expect: "sb_versionnum",
        },
        Case {
            name: "root inode magic",
            patches: ino("/", &[(0, b"XX")]),
            expect: "di_magic",
        },
        Case {
            name: "root inode format",
            patches: ino("/", &[(5, &[9])]),
            expect: "di_format",
        },
        Case {
            name: "inode version",
            patches: ino("/small", &[(4, &[7])]),
            expect: "di_version",
        },
        Case {
            name: "free inode in a directory",
            patches: ino("/small", &[(2, &[0, 0])]),
            expect: "di_mode",
        },
        Case {
            name: "negative size",
            patches: ino("/small", &[(56, &(u64::MAX - 5).to_be_bytes())]),
            expect: "di_size",
        },
        Case {
            name: "size beyond the read limit",
            patches: ino("/small", &[(56, &(1u64 << 40).to_be_bytes())]),
            expect: "limit",
        },
        Case {
            name: "nextents beyond the fork",
            patches: ino("/big", &[(76, &1000u32.to_be_bytes())]),
            expect: "di_nextents",
        },
        Case {
            name: "forkoff past the literal area",
            patches: ino("/big", &[(82, &[255])]),
            expect: "di_forkoff",
        },
        Case {
            name: "extent outside the filesystem",
            patches: ino("/big", &[(core, &[0x7f; 16])]),
            expect: "xfs_bmbt_rec",
        },
        Case {
            name: "extent of 0 blocks",
            patches: ino("/big", &[(core + 13, &[0, 0, 0])]),
            expect: "br_blockcount",
        },
        Case {
            name: "short form dir count",
            patches: ino("/few", &[(core, &[200])]),
            expect: "short form directory",
        },
        Case {
            name: "short form dir namelen 0",
            patches: ino("/few", &[(core + 6, &[0])]),
            expect: "namelen",
        },
        Case {
            name: "short form dir size",
            patches: ino("/few", &[(56, &4000u64.to_be_bytes())]),
            expect: "di_size",
        },
        Case {
            name: "local symlink longer than its fork",
            patches: ino("/short", &[(56, &1000u64.to_be_bytes())]),
            expect: "di_size",
        },
        Case {
            name: "symlink longer than 1024",
            patches: ino("/long", &[(56, &5000u64.to_be_bytes())]),
            expect: "di_size",
        },
        Case {
            name: "block dir magic",
            patches: dblk("/blk", &[(0, b"XXXX")]),
            expect: "magic",
        },
        Case {
            name: "block dir tail count",
            patches: dblk("/blk", &[(m.bsize - 8, &u32::MAX.to_be_bytes())]),
            expect: "xfs_dir2_block_tail",
        },
        Case {
            // A longer name shifts where the entry's tag must be.
            name: "dir entry namelen 255",
            patches: dblk("/blk", &[(dhdr + 8, &[255])]),
            expect: "tag",
        },
        Case {
            name: "unused dir entry of length 0",
            patches: dblk("/blk", &[(dhdr, &[0xff, 0xff, 0, 0])]),
            expect: "length",
        },
        Case {
            name: "dir entry tag",
            patches: dblk("/leaf", &[(dhdr + 14, &[0x12, 0x34])]),
            expect: "tag",
        },
        Case {
            name: "data block magic of a node dir",
            patches: dblk("/node1k", &[(0, b"XXXX")]),
            expect: "magic",
        },
    ];
    // The hash index of leaf and node directories.
    let leaf_blk = (32u64 << 30) / m.bsize as u64;
    let leaf_at = |path: &str| {
        let e = db_bmap(img, path);
        let x = e.iter().find(|x| x.0 == leaf_blk).unwrap();
        db_byte(img, "fsblock", x.1)
    };
    let da_crc = m.v5.then_some(12);
    let (count_off, lvl_off) = if m.v5 { (56, 58) } else { (12, 14) };
    v.extend([
        Case {
            name: "leaf block magic",
            patches: vec![patch(
                img,
                leaf_at("/leaf"),
                m.bsize,
                &[(8, &[0x12, 0x34])],
                da_crc,
            )],
            expect: "magic",
        },
        Case {
            name: "leaf block count",
            patches: vec![patch(
                img,
                leaf_at("/leaf"),
                m.bsize,
                &[(count_off, &[0xff, 0xff])],
                da_crc,
            )],
            expect: "count",
        },
        Case {
            name: "da node level",
            patches: vec![patch(
                img,
                leaf_at("/node1k"),
                m.bsize,
                &[(lvl_off, &[0, 9])],
                da_crc,
            )],
            expect: "level",
        },
        Case {
            name: "da node child pointer",
            patches: vec![patch(
                img,
                leaf_at("/node1k"),
                m.bsize,
                &[(dhdr + 4, &[0, 0, 0, 1]), (dhdr + 12, &[0, 0, 0, 1])],
                da_crc,
            )],
            expect: "before",
        },
    ]);
    // The B+tree directory: root in the inode, leaves on disk.
    let node = db_ino(img, "/node");
    let node_at = db_byte(img, "inode", node);
    let fork_len = m.isize - core;
    let maxrecs = (fork_len - 4) / 16;
    let ptr_off = core + 4 + maxrecs * 8;
    let ptr = u64::from_be_bytes(
        read_bytes(img, node_at + ptr_off as u64, 8)
            .try_into()
            .unwrap(),
    );
    let leaf_at = db_byte(img, "fsblock", ptr);
    let bmbt_crc = m.v5.then_some(64);
    v.extend([
        Case {
            name: "bmbt root level too deep",
            patches: vec![patch(
                img,
                node_at,
                m.isize,
                &[(core, &200u16.to_be_bytes())],
                i_crc,
            )],
            expect: "bb_level",
        },
        Case {
            name: "bmbt root numrecs",
            patches: vec![patch(
                img,
                node_at,
                m.isize,
                &[(core + 2, &u16::MAX.to_be_bytes())],
                i_crc,
            )],
            expect: "bb_numrecs",
        },
        Case {
            name: "bmbt root pointer outside the filesystem",
            patches: vec![patch(
                img,
                node_at,
                m.isize,
                &[(ptr_off, &u64::MAX.to_be_bytes())],
                i_crc,
            )],
            expect: "ptr",
        },
        Case {
            name: "bmbt block magic",
            patches: vec![patch(img, leaf_at, m.bsize, &[(0, b"XXXX")], bmbt_crc)],
            expect: "bb_magic",
        },
        Case {
            name: "bmbt block level",
            patches: vec![patch(
                img,
                leaf_at,
                m.bsize,
                &[(4, &1u16.to_be_bytes())],
                bmbt_crc,
            )],
            expect: "bb_level",
        },
        Case {
            name: "bmbt block numrecs",
            patches: vec![patch(
                img,
                leaf_at,
                m.bsize,
                &[(6, &u16::MAX.to_be_bytes())],
                bmbt_crc,
            )],
            expect: "bb_numrecs",
        },
    ]);
    if m.v5 {
        let sl_at = first_block("/long");
        v.extend([
            Case {
                name: "superblock crc",
                patches: vec![patch(img, 0, 512, &[(4, &8192u32.to_be_bytes())], None)],
                expect: "sb_crc",
            },
            Case {
                name: "inode crc",
                patches: vec![patch(
                    img,
                    db_byte(img, "inode", db_ino(img, "/small")),
                    m.isize,
                    &[(8, &[1])],
                    None,
                )],
                expect: "di_crc",
            },
            Case {
                name: "dir block crc",
                patches: dblk("/blk", &[])
                    .into_iter()
                    .map(|(a, mut b)| {
                        b[100] ^= 1;
                        (a, b)
                    })
                    .collect(),
                expect: "crc",
            },
            Case {
                name: "remote symlink magic",
                patches: vec![patch(img, sl_at, m.bsize, &[(0, b"XXXX")], Some(12))],
                expect: "sl_magic",
            },
            Case {
                name: "remote symlink owner",
                patches: vec![patch(
                    img,
                    sl_at,
                    m.bsize,
                    &[(32, &7u64.to_be_bytes())],
                    Some(12),
                )],
                expect: "sl_owner",
            },
            Case {
                name: "unknown incompat feature",
                patches: sb(&[(216, &(1u32 << 20).to_be_bytes())]),
                expect: "bit 20",
            },
            Case {
                name: "inode number mismatch",
                patches: ino("/small", &[(152, &5u64.to_be_bytes())]),
                expect: "di_ino",
            },
        ]);
    }
    v
}

fn run_mutations(v5: bool) {
    let Some(m) = mutation_image(v5) else {
        return;
    };
    let mut failures = Vec::new();
    for c in cases(m) {
        let out = run_case(&m.img, &c.patches);
        let ok = if c.expect == "NOTXFS" {
            out == "NOTXFS"
        } else {
            out.starts_with("ERR ") && out.contains(c.expect)
        };
        eprintln!("{:>45}: {out}", c.name);
        if !ok {
            failures.push(format!("{}: wanted {:?}, got {out}", c.name, c.expect));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn mutations_v5() {
    run_mutations(true);
}

#[test]
fn mutations_v4() {
    run_mutations(false);
}
