//! Seeded random operation sequences through the whole XFS writer at once:
//! many creates in one directory (short form → block → leaf → node), enough
//! new files for new inode chunks, big files and deletes (extent lists,
//! bmbt forks, free-space tree merges), xattrs from tiny to multi-KB (short
//! form ↔ leaf, remote values, removal), hard links, local and remote
//! symlinks, chmod/chown/set-times and replacing files, on several mkfs
//! configurations. After every batch the image is judged by xfsprogs:
//! `xfs_repair -n` clean, `xfs_db ls` of every directory equals the model
//! (hard links share inode numbers), and for a sample of inodes the bytes,
//! mode, owner, link count and attributes as xfs_db reads them.
//!
//! A failing seed is printed; `ONRAMP_XFS_PROP_SEEDS=N` runs N sequences.

mod common;

use common::xfs::{db_attrs, db_cat, db_field, db_ls, mkfs_proto, repair_clean, with_overlay};
use common::{pattern, require, tempdir};
use onramp::fs::xfs::write::XfsWriter;
use onramp::inject::FsAction;
use std::collections::BTreeMap;
use std::path::Path;

/// splitmix64.
struct Sm(u64);
impl Sm {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len() as u64) as usize])
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Link(String),
}

#[derive(Clone, Debug)]
struct Inode {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Paths → inode ids (hard links share one) and the inodes.
#[derive(Default)]
struct Model {
    paths: BTreeMap<String, usize>,
    inodes: Vec<Inode>,
}

impl Model {
    fn add(&mut self, path: &str, kind: Kind, mode: u32, uid: u32, gid: u32) {
        self.inodes.push(Inode {
            kind,
            mode,
            uid,
            gid,
            xattrs: BTreeMap::new(),
        });
        self.paths.insert(path.into(), self.inodes.len() - 1);
    }
    fn node(&self, p: &str) -> &Inode {
        &self.inodes[self.paths[p]]
    }
    fn node_mut(&mut self, p: &str) -> &mut Inode {
        let i = self.paths[p];
        &mut self.inodes[i]
    }
    fn nlink(&self, p: &str) -> usize {
        let i = self.paths[p];
        match self.inodes[i].kind {
            Kind::Dir => {
                2 + self
                    .children(p)
                    .iter()
                    .filter(|c| self.node(c).kind == Kind::Dir)
                    .count()
            }
            _ => self.paths.values().filter(|&&j| j == i).count(),
        }
    }
    fn children(&self, d: &str) -> Vec<String> {
        let pre = if d == "/" {
            "/".to_string()
        } else {
            format!("{d}/")
        };
        self.paths
            .keys()
            .filter(|k| k.len() > pre.len() && k.starts_with(&pre) && !k[pre.len()..].contains('/'))
            .cloned()
            .collect()
    }
    fn of(&self, f: impl Fn(&Kind) -> bool) -> Vec<String> {
        self.paths
            .iter()
            .filter(|(_, &i)| f(&self.inodes[i].kind))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// One operation: an action, or an attribute removal (not an `FsAction`).
enum Op {
    A(FsAction),
    RmXattr(String, String),
}

const BIG_DIR: &str = "/a";

/// Generate `n` operations against `m` (updating it).
fn batch(r: &mut Sm, m: &mut Model, n: usize, fill: &mut usize) -> Vec<Op> {
    let mut ops = Vec::new();
    while ops.len() < n {
        let dirs = m.of(|k| *k == Kind::Dir);
        let files = m.of(|k| matches!(k, Kind::File(_)));
        let nondirs = m.of(|k| *k != Kind::Dir);
        match r.below(100) {
            // Many creates in the big directory (long-ish names fill blocks fast).
            0..=29 => {
                *fill += 1;
                let p = format!(
                    "{BIG_DIR}/entry_with_a_long_name_{:05}_{}",
                    *fill,
                    r.below(1000)
                );
                let data = pattern(r.next(), r.below(3000) as usize);
                ops.push(Op::A(FsAction::WriteFile {
                    path: p.clone(),
                    data: data.clone(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                }));
                m.add(&p, Kind::File(data), 0o644, 0, 0);
            }
            // Big (and, after deletes, fragmented) files elsewhere.
            30..=36 => {
                let d = r.pick(&dirs).unwrap().clone();
                if d == BIG_DIR {
                    continue;
                }
                let p = format!("{}/big{}", d.trim_end_matches('/'), r.below(40));
                if m.paths.contains_key(&p) {
                    continue;
                }
                let data = pattern(r.next(), 20_000 + r.below(400_000) as usize);
                let (mode, uid, gid) = (0o600, r.below(3000) as u32, r.below(3000) as u32);
                ops.push(Op::A(FsAction::WriteFile {
                    path: p.clone(),
                    data: data.clone(),
                    mode,
                    uid,
                    gid,
                }));
                m.add(&p, Kind::File(data), mode, uid, gid);
            }
            // Replace an existing file (same inode: every hard link sees it).
            37..=42 => {
                let Some(p) = r.pick(&files).cloned() else {
                    continue;
                };
                let len = [0, 50, 5000, 100_000][r.below(4) as usize] + r.below(500) as usize;
                let data = pattern(r.next(), len);
                let (mode, uid, gid) = (0o640, r.below(100) as u32, 7);
                ops.push(Op::A(FsAction::WriteFile {
                    path: p.clone(),
                    data: data.clone(),
                    mode,
                    uid,
                    gid,
                }));
                let n = m.node_mut(&p);
                n.kind = Kind::File(data);
                (n.mode, n.uid, n.gid) = (mode, uid, gid);
            }
            // Delete a non-directory or an empty directory.
            43..=56 => {
                let mut v = nondirs.clone();
                v.extend(
                    dirs.iter()
                        .filter(|d| !["/", BIG_DIR].contains(&d.as_str()))
                        .filter(|d| m.children(d).is_empty())
                        .cloned(),
                );
                let Some(p) = r.pick(&v).cloned() else {
                    continue;
                };
                ops.push(Op::A(FsAction::Delete { path: p.clone() }));
                m.paths.remove(&p);
            }
            57..=59 => {
                let d = r.pick(&dirs).unwrap().clone();
                let p = format!("{}/sub{}", d.trim_end_matches('/'), r.below(6));
                if m.paths.contains_key(&p) || p.matches('/').count() > 4 {
                    continue;
                }
                ops.push(Op::A(FsAction::Mkdir {
                    path: p.clone(),
                    mode: 0o755,
                }));
                m.add(&p, Kind::Dir, 0o755, 0, 0);
            }
            60..=64 => {
                let d = r.pick(&dirs).unwrap().clone();
                let p = format!("{}/ln{}", d.trim_end_matches('/'), r.below(30));
                if m.paths.contains_key(&p) {
                    continue;
                }
                // Short (inline) or long (remote; two blocks at 1 KiB blocks).
                let cap = [40, 1000][r.below(2) as usize];
                let t = format!("/t{}", "y".repeat(r.below(cap) as usize));
                ops.push(Op::A(FsAction::Symlink {
                    target: t.clone(),
                    path: p.clone(),
                }));
                m.add(&p, Kind::Link(t), 0o777, 0, 0);
            }
            65..=69 => {
                let Some(t) = r.pick(&nondirs).cloned() else {
                    continue;
                };
                let d = r.pick(&dirs).unwrap().clone();
                let p = format!("{}/hl{}", d.trim_end_matches('/'), r.below(30));
                if m.paths.contains_key(&p) {
                    continue;
                }
                ops.push(Op::A(FsAction::Hardlink {
                    target: t.clone(),
                    path: p.clone(),
                }));
                let i = m.paths[&t];
                m.paths.insert(p, i);
            }
            70..=74 => {
                let Some(p) = r.pick(&files).cloned() else {
                    continue;
                };
                let mode = 0o400 + r.below(0o7000 - 0o400) as u32;
                ops.push(Op::A(FsAction::Chmod {
                    path: p.clone(),
                    mode,
                }));
                m.node_mut(&p).mode = mode & 0o7777;
            }
            75..=77 => {
                let Some(p) = r.pick(&files).cloned() else {
                    continue;
                };
                let (uid, gid) = (r.below(70_000) as u32, r.below(70_000) as u32);
                ops.push(Op::A(FsAction::Chown {
                    path: p.clone(),
                    uid,
                    gid,
                }));
                let n = m.node_mut(&p);
                (n.uid, n.gid) = (uid, gid);
            }
            78..=79 => {
                let Some(p) = r.pick(&nondirs).cloned() else {
                    continue;
                };
                ops.push(Op::A(FsAction::SetTimes {
                    path: p,
                    atime: r.below(2_000_000_000) as i64,
                    mtime: r.below(2_000_000_000) as i64,
                }));
            }
            // Attributes: a few files collect many, from tiny to multi-KB.
            80..=94 => {
                let pool: Vec<String> = files.iter().take(6).cloned().collect();
                let Some(p) = r.pick(&pool).cloned() else {
                    continue;
                };
                let name = format!(
                    "{}a{}",
                    ["user.", "trusted.", "security."][r.below(3) as usize],
                    r.below(24)
                );
                let len = match r.below(10) {
                    0..=5 => r.below(40),
                    6..=8 => 100 + r.below(900),
                    _ => 2000 + r.below(6000),
                } as usize;
                let value: Vec<u8> = (0..len)
                    .map(|i| b'a' + ((i as u64 * 7 + r.0) % 26) as u8)
                    .collect();
                ops.push(Op::A(FsAction::SetXattr {
                    path: p.clone(),
                    name: name.clone(),
                    value: value.clone(),
                }));
                m.node_mut(&p).xattrs.insert(name, value);
            }
            _ => {
                let with: Vec<String> = m
                    .paths
                    .keys()
                    .filter(|p| !m.node(p).xattrs.is_empty())
                    .cloned()
                    .collect();
                let Some(p) = r.pick(&with).cloned() else {
                    continue;
                };
                let names: Vec<String> = m.node(&p).xattrs.keys().cloned().collect();
                let name = r.pick(&names).unwrap().clone();
                m.node_mut(&p).xattrs.remove(&name);
                ops.push(Op::RmXattr(p, name));
            }
        }
    }
    ops
}

fn apply(img: &Path, ops: &[Op]) -> Result<(), String> {
    with_overlay(img, img, |dev| {
        let mut w = XfsWriter::open(dev.clone()).map_err(|e| e.to_string())?;
        let mut log = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::A(a) => w.apply_action(a, &mut log),
                Op::RmXattr(p, n) => w.remove_xattr(p, n, &mut log),
            }
            .map_err(|e| format!("op {i}: {e}"))?;
        }
        w.finish().map_err(|e| e.to_string())
    })
}

/// Check `img` against `m`; `sample` inodes get the expensive checks.
fn check(img: &Path, m: &Model, r: &mut Sm, stats: &mut Stats) {
    repair_clean(img);
    let mut ino_of: BTreeMap<usize, u64> = BTreeMap::new();
    for d in m.of(|k| *k == Kind::Dir) {
        let got = db_ls(img, &d);
        let want = m.children(&d);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let mut wn: Vec<&str> = want.iter().map(|p| p.rsplit('/').next().unwrap()).collect();
        wn.sort();
        assert_eq!(names, wn, "listing of {d}");
        for (n, ino) in &got {
            let p = if d == "/" {
                format!("/{n}")
            } else {
                format!("{d}/{n}")
            };
            let id = m.paths[&p];
            assert_eq!(
                *ino_of.entry(id).or_insert(*ino),
                *ino,
                "{p}: hard link inode"
            );
        }
        if d == BIG_DIR {
            stats.max_dir = stats.max_dir.max(got.len());
            stats.dir_forms.insert(dir_form(img, &d));
        }
    }
    let paths: Vec<&String> = m.paths.keys().collect();
    for _ in 0..6 {
        let p = paths[r.below(paths.len() as u64) as usize];
        let n = m.node(p);
        let mode: u32 =
            u32::from_str_radix(db_field(img, p, "core.mode").trim_start_matches('0'), 8)
                .unwrap_or(0);
        assert_eq!(mode & 0o7777, n.mode, "{p}: mode {mode:o}");
        assert_eq!(db_field(img, p, "core.uid"), n.uid.to_string(), "{p}: uid");
        assert_eq!(db_field(img, p, "core.gid"), n.gid.to_string(), "{p}: gid");
        assert_eq!(
            db_field(img, p, "core.nlinkv2"),
            m.nlink(p).to_string(),
            "{p}: nlink"
        );
        if let Kind::File(data) = &n.kind {
            assert!(
                db_cat(img, p) == *data,
                "{p}: bytes differ ({} bytes)",
                data.len()
            );
        }
    }
    // Every file with attributes, and the biggest file's fork.
    for p in m.paths.keys().filter(|p| !m.node(p).xattrs.is_empty()) {
        let got = db_attrs(img, p);
        let want = &m.node(p).xattrs;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{p}: xattr names"
        );
        assert!(got == *want, "{p}: xattr values");
        stats.max_attrs = stats.max_attrs.max(want.len());
        stats.attr_forms.insert(db_field(img, p, "core.aformat"));
    }
    for p in m.of(|k| matches!(k, Kind::File(d) if d.len() > 20_000)) {
        let nx: usize = db_field(img, &p, "core.nextents").parse().unwrap();
        stats.max_extents = stats.max_extents.max(nx);
        stats.file_forms.insert(db_field(img, &p, "core.format"));
    }
    stats.icount = stats.icount.max(common::xfs::sb_value(img, "icount"));
}

/// Short form, block, leaf, node (free index blocks at
/// XFS_DIR2_FREE_OFFSET, 64 GiB) or btree (bmbt data fork) directory `d`.
fn dir_form(img: &Path, d: &str) -> String {
    let f = db_field(img, d, "core.format");
    let bs = common::xfs::sb_value(img, "blocksize") as u64;
    let dbs = bs << common::xfs::sb_value(img, "dirblklog");
    let bmap = common::xfs::db_bmap(img, d);
    let leaf_off = (32u64 << 30) / bs;
    let free_off = (64u64 << 30) / bs;
    let form = if f.starts_with("1 ") {
        "short form"
    } else if f.starts_with("3 ") {
        "btree"
    } else if bmap.iter().any(|e| e.0 >= free_off) {
        "node"
    } else if bmap.iter().any(|e| e.0 >= leaf_off) {
        "leaf"
    } else {
        "block"
    };
    let data = bmap
        .iter()
        .filter(|e| e.0 < leaf_off)
        .map(|e| e.2)
        .sum::<u64>()
        * bs
        / dbs;
    format!("{form} ({} extents, {data} dir blocks)", bmap.len())
}

#[derive(Default, Debug)]
struct Stats {
    max_dir: usize,
    dir_forms: std::collections::BTreeSet<String>,
    attr_forms: std::collections::BTreeSet<String>,
    file_forms: std::collections::BTreeSet<String>,
    max_attrs: usize,
    max_extents: usize,
    icount: usize,
}

fn write(path: &str, data: &[u8], mode: u32, uid: u32, gid: u32) -> FsAction {
    FsAction::WriteFile {
        path: path.into(),
        data: data.to_vec(),
        mode,
        uid,
        gid,
    }
}

/// Write 300 small files, fill every other free block with filler files
/// (greedily, halving the size on each refusal), delete every other small
/// file and write a file that can only be stored in those holes (many
/// extents: a bmbt data fork), then delete the fillers (large free-space
/// merges). Checked after every step.
fn squeeze(img: &Path, m: &mut Model, r: &mut Sm, stats: &mut Stats) {
    let bs = common::xfs::sb_value(img, "blocksize");
    let mut ops = Vec::new();
    for d in ["/b/frag", "/b/fill"] {
        ops.push(Op::A(FsAction::Mkdir {
            path: d.into(),
            mode: 0o700,
        }));
        m.add(d, Kind::Dir, 0o700, 0, 0);
    }
    let n = 300;
    for i in 0..n {
        let p = format!("/b/frag/f{i}");
        let d = pattern(r.next(), 2 * bs);
        ops.push(Op::A(write(&p, &d, 0o644, 0, 0)));
        m.add(&p, Kind::File(d), 0o644, 0, 0);
    }
    apply(img, &ops).unwrap_or_else(|e| panic!("squeeze: {e}"));
    let mut size = 4usize << 20;
    let mut fills = Vec::new();
    while size >= bs {
        let p = format!("/b/fill/x{}", fills.len());
        let d = pattern(r.next(), size);
        if apply(img, &[Op::A(write(&p, &d, 0o600, 1, 1))]).is_ok() {
            m.add(&p, Kind::File(d), 0o600, 1, 1);
            fills.push(p);
        } else {
            size /= 2;
        }
    }
    check(img, m, r, stats);
    let mut ops = Vec::new();
    for i in (0..n).step_by(2) {
        let p = format!("/b/frag/f{i}");
        ops.push(Op::A(FsAction::Delete { path: p.clone() }));
        m.paths.remove(&p);
    }
    let spread = pattern(r.next(), n / 4 * 2 * bs);
    ops.push(Op::A(write("/b/frag/spread", &spread, 0o644, 0, 0)));
    m.add("/b/frag/spread", Kind::File(spread), 0o644, 0, 0);
    apply(img, &ops).unwrap_or_else(|e| panic!("squeeze holes: {e}"));
    check(img, m, r, stats);
    let ops: Vec<Op> = fills
        .iter()
        .map(|p| Op::A(FsAction::Delete { path: p.clone() }))
        .collect();
    apply(img, &ops).unwrap_or_else(|e| panic!("squeeze free: {e}"));
    for p in fills {
        m.paths.remove(&p);
    }
    check(img, m, r, stats);
}

const CONFIGS: &[(&str, &[&str], u64)] = &[
    ("defaults", &[], 48),
    ("b1k", &["-b", "size=1024", "-n", "size=4096"], 48),
    (
        "noreflink",
        &["-m", "reflink=0,finobt=0", "-i", "sparse=0"],
        40,
    ),
    ("i1k", &["-i", "size=1024"], 64),
];

#[test]
fn random_sequences_across_format_boundaries() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair"]) {
        return;
    }
    let n: u64 = std::env::var("ONRAMP_XFS_PROP_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempdir();
    for seed in 1..=n {
        let (cname, args, mib) = CONFIGS[(seed as usize - 1) % CONFIGS.len()];
        eprintln!("xfs_prop: seed {seed} config {cname}");
        let mut r = Sm(seed);
        let img = mkfs_proto(
            dir.path(),
            &format!("s{seed}"),
            "a d--755 0 0\n$\nb d--755 0 0\n$\n",
            args,
            mib,
        );
        let mut m = Model::default();
        m.add("/", Kind::Dir, 0o755, 0, 0);
        m.add("/a", Kind::Dir, 0o755, 0, 0);
        m.add("/b", Kind::Dir, 0o755, 0, 0);
        let mut stats = Stats::default();
        let mut fill = 0;
        if seed % 3 != 0 {
            squeeze(&img, &mut m, &mut r, &mut stats);
        }
        for b in 0..3 {
            let n = 50 + r.below(250) as usize;
            let mut ops = batch(&mut r, &mut m, n, &mut fill);
            if b == 1 {
                // A burst of creates in one directory: leaf → node form.
                for _ in 0..300 + r.below(400) {
                    fill += 1;
                    let p = format!("{BIG_DIR}/burst_of_entries_with_long_names_{fill:05}");
                    let data = pattern(r.next(), r.below(200) as usize);
                    ops.push(Op::A(write(&p, &data, 0o644, 0, 0)));
                    m.add(&p, Kind::File(data), 0o644, 0, 0);
                }
            }
            apply(&img, &ops).unwrap_or_else(|e| panic!("seed {seed} ({cname}) batch {b}: {e}"));
            check(&img, &m, &mut r, &mut stats);
        }
        eprintln!("xfs_prop: seed {seed} {cname}: {stats:?}");
        std::fs::remove_file(&img).unwrap();
    }
}
