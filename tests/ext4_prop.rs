//! Property test of the ext4 writer: seeded random sequences of mkdir, write,
//! append, symlink, hard link, chmod, chown, set-times, xattr and delete,
//! applied through the library writer on fresh mkfs.ext4 images (4 KiB and
//! 1 KiB blocks, metadata_csum on and off). After each sequence `e2fsck -fn`
//! must pass and debugfs (the oracle) must read back exactly the model: the
//! tree, types, modes, owners, link counts, times, contents, link targets
//! and extended attributes.
mod common;
use common::*;
use onramp::fs::write::apply;
use onramp::inject::FsAction;
use onramp::overlay::{Overlay, VolumeDev};
use onramp::source::raw::RawReader;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const TOOLS: &[&str] = &["mkfs.ext4", "e2fsck", "debugfs", "tune2fs"];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| b'a' + (self.next() % 26) as u8).collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Link(String),
}

#[derive(Clone, Debug)]
struct Ino {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<i64>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
struct Model {
    paths: BTreeMap<String, usize>,
    inos: Vec<Ino>,
    /// 256-byte inodes: times past 2038 (epoch bits in the _extra fields).
    wide: bool,
}

fn parent_of(p: &str) -> &str {
    match p.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => "/",
    }
}

impl Model {
    fn kind(&self, p: &str) -> Option<&Kind> {
        self.paths.get(p).map(|&i| &self.inos[i].kind)
    }
    fn add(&mut self, p: &str, kind: Kind, mode: u32, uid: u32, gid: u32) {
        self.inos.push(Ino {
            kind,
            mode,
            uid,
            gid,
            mtime: None,
            xattrs: BTreeMap::new(),
        });
        self.paths.insert(p.to_string(), self.inos.len() - 1);
    }
    /// Paths created by the sequence (not "/" or lost+found) matching `f`.
    fn pick(&self, rng: &mut Rng, f: impl Fn(&Kind) -> bool) -> Option<String> {
        let c: Vec<&String> = self
            .paths
            .iter()
            .filter(|(p, &i)| *p != "/" && *p != "/lost+found" && f(&self.inos[i].kind))
            .map(|(p, _)| p)
            .collect();
        (!c.is_empty()).then(|| c[rng.below(c.len())].clone())
    }
    fn children(&self, d: &str) -> Vec<String> {
        self.paths
            .keys()
            .filter(|p| *p != "/" && parent_of(p) == d)
            .cloned()
            .collect()
    }
}

/// One random action, applied to the model too; None when it does not apply.
fn step(m: &mut Model, rng: &mut Rng) -> Option<FsAction> {
    let dirs: Vec<String> = m
        .paths
        .iter()
        .filter(|(p, &i)| *p != "/lost+found" && m.inos[i].kind == Kind::Dir)
        .map(|(p, _)| p.clone())
        .collect();
    let parent = dirs[rng.below(dirs.len())].clone();
    let name = format!("n{}", rng.below(8));
    let fresh = if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    };
    let absent = !m.paths.contains_key(&fresh);
    let is_file = |k: &Kind| matches!(k, Kind::File(_));
    let file_or_dir = |k: &Kind| !matches!(k, Kind::Link(_));
    match rng.below(12) {
        0 if absent => {
            m.add(&fresh, Kind::Dir, 0o755, 0, 0);
            Some(FsAction::Mkdir {
                path: fresh,
                mode: 0o755,
            })
        }
        1 | 2 if absent || m.kind(&fresh).is_some_and(is_file) => {
            let len = match rng.below(4) {
                0 => 0,
                1 => rng.below(100),
                2 => rng.below(9000),
                _ => rng.below(60_000),
            };
            let data = rng.bytes(len);
            let mode = [0o644, 0o600, 0o755, 0o4755][rng.below(4)];
            let (uid, gid) = (rng.below(3) as u32 * 1000, rng.below(70_000) as u32);
            match m.paths.get(&fresh) {
                Some(&i) => {
                    let n = &mut m.inos[i];
                    n.kind = Kind::File(data.clone());
                    (n.mode, n.uid, n.gid, n.mtime) = (mode, uid, gid, None);
                }
                None => m.add(&fresh, Kind::File(data.clone()), mode, uid, gid),
            }
            Some(FsAction::WriteFile {
                path: fresh,
                data,
                mode,
                uid,
                gid,
            })
        }
        3 => {
            // Append, as the planner does it: the whole new content.
            let p = m.pick(rng, is_file)?;
            let i = m.paths[&p];
            let n = &mut m.inos[i];
            let Kind::File(old) = &n.kind else {
                return None;
            };
            let mut data = old.clone();
            let more = rng.below(5000);
            data.extend(rng.bytes(more));
            n.kind = Kind::File(data.clone());
            n.mtime = None;
            Some(FsAction::WriteFile {
                path: p,
                data,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
            })
        }
        4 if absent => {
            let len = [5, 30, 59, 60, 200][rng.below(5)];
            let target = format!(
                "t/{}",
                String::from_utf8(rng.bytes(len - 2)).unwrap_or_default()
            );
            m.add(&fresh, Kind::Link(target.clone()), 0o777, 0, 0);
            Some(FsAction::Symlink {
                target,
                path: fresh,
            })
        }
        5 if absent => {
            let t = m.pick(rng, |k| *k != Kind::Dir)?;
            let i = m.paths[&t];
            m.paths.insert(fresh.clone(), i);
            Some(FsAction::Hardlink {
                target: t,
                path: fresh,
            })
        }
        6 => {
            let p = m.pick(rng, file_or_dir)?;
            let mode = [0o644, 0o600, 0o755, 0o1777, 0o2750][rng.below(5)];
            m.inos[m.paths[&p]].mode = mode;
            Some(FsAction::Chmod { path: p, mode })
        }
        7 => {
            let p = m.pick(rng, file_or_dir)?;
            let (uid, gid) = (rng.below(100_000) as u32, rng.below(100) as u32);
            let i = m.paths[&p];
            (m.inos[i].uid, m.inos[i].gid) = (uid, gid);
            Some(FsAction::Chown { path: p, uid, gid })
        }
        8 => {
            let p = m.pick(rng, file_or_dir)?;
            let t = (rng.next() % if m.wide { 1 << 33 } else { 1 << 31 }) as i64;
            m.inos[m.paths[&p]].mtime = Some(t);
            Some(FsAction::SetTimes {
                path: p,
                atime: t,
                mtime: t,
            })
        }
        9 | 10 => {
            let p = m.pick(rng, |_| true)?;
            let name = ["user.a", "user.bb", "security.selinux", "trusted.t"][rng.below(4)];
            let len = [0, 3, 40, 150][rng.below(4)];
            let value = rng.bytes(len);
            let i = m.paths[&p];
            m.inos[i].xattrs.insert(name.to_string(), value.clone());
            Some(FsAction::SetXattr {
                path: p,
                name: name.to_string(),
                value,
            })
        }
        11 => {
            let p = m.pick(rng, |_| true)?;
            if m.kind(&p) == Some(&Kind::Dir) && !m.children(&p).is_empty() {
                return None;
            }
            m.paths.remove(&p);
            Some(FsAction::Delete { path: p })
        }
        _ => None,
    }
}

fn debugfs_script(part: &Path, script: &str) -> String {
    let f = part.with_extension("cmds");
    std::fs::write(&f, script).unwrap();
    let o = Command::new("debugfs")
        .arg("-f")
        .arg(&f)
        .arg(part)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The output of each command of a `debugfs -f` run, by command line.
fn sections(out: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if let Some(c) = line.strip_prefix("debugfs: ") {
            cur = Some(c.to_string());
            m.insert(c.to_string(), String::new());
        } else if let Some(c) = &cur {
            let s = m.get_mut(c).unwrap();
            s.push_str(line);
            s.push('\n');
        }
    }
    m
}

fn field<'a>(stat: &'a str, key: &str) -> &'a str {
    let at = stat
        .find(key)
        .unwrap_or_else(|| panic!("{key} not in {stat}"));
    stat[at + key.len()..].split_whitespace().next().unwrap()
}

/// Compare the image against the model with debugfs.
fn check(part: &Path, m: &Model, ctx: &str) {
    let dump = part.with_extension("dump");
    std::fs::create_dir_all(&dump).unwrap();
    let mut script = String::new();
    let names: Vec<&String> = m.paths.keys().collect();
    for (k, p) in names.iter().enumerate() {
        let i = &m.inos[m.paths[*p]];
        script.push_str(&format!("stat {p}\nea_list {p}\n"));
        match &i.kind {
            Kind::Dir => script.push_str(&format!("ls -p {p}\n")),
            Kind::File(_) => script.push_str(&format!("dump {p} {}/{k}\n", dump.display())),
            Kind::Link(t) if t.len() >= 60 => {
                script.push_str(&format!("dump {p} {}/{k}\n", dump.display()))
            }
            Kind::Link(_) => {}
        }
        for (x, _) in i.xattrs.iter() {
            script.push_str(&format!("ea_get -f {}/{k}.{x} {p} {x}\n", dump.display()));
        }
    }
    let out = sections(&debugfs_script(part, &script));
    let mut ino_of: BTreeMap<usize, String> = BTreeMap::new();
    for (k, p) in names.iter().enumerate() {
        let id = m.paths[*p];
        let i = &m.inos[id];
        let st = &out[&format!("stat {p}")];
        let e = format!("{ctx}: {p}:\n{st}");
        let ino = field(st, "Inode:").to_string();
        if let Some(other) = ino_of.insert(id, ino.clone()) {
            assert_eq!(other, ino, "{e}: hard links share the inode");
        }
        let links = m.paths.values().filter(|&&x| x == id).count();
        let want_links = match i.kind {
            Kind::Dir => {
                2 + m
                    .children(p)
                    .iter()
                    .filter(|c| m.kind(c) == Some(&Kind::Dir))
                    .count()
            }
            _ => links,
        };
        assert_eq!(field(st, "Links:"), want_links.to_string(), "{e}");
        if *p == "/" || *p == "/lost+found" {
            continue;
        }
        let ty = match i.kind {
            Kind::Dir => "directory",
            Kind::File(_) => "regular",
            Kind::Link(_) => "symlink",
        };
        assert_eq!(field(st, "Type:"), ty, "{e}");
        if !matches!(i.kind, Kind::Link(_)) {
            assert_eq!(field(st, "Mode:"), format!("0{:o}", i.mode), "{e}");
            assert_eq!(field(st, "User:"), i.uid.to_string(), "{e}");
            assert_eq!(field(st, "Group:"), i.gid.to_string(), "{e}");
        }
        if let Some(t) = i.mtime {
            let raw = field(st, "mtime:");
            let (lo, ex) = raw.split_once(':').unwrap_or((raw, "0"));
            let lo = u32::from_str_radix(lo.trim_start_matches("0x"), 16).unwrap() as i32;
            let ex = u32::from_str_radix(ex, 16).unwrap();
            assert_eq!(i64::from(lo) + (i64::from(ex & 3) << 32), t, "{e}");
        }
        match &i.kind {
            Kind::File(d) => {
                let got = std::fs::read(dump.join(k.to_string())).unwrap();
                assert!(got == *d, "{e}: content differs");
            }
            Kind::Link(t) if t.len() >= 60 => {
                let got = std::fs::read(dump.join(k.to_string())).unwrap();
                assert_eq!(String::from_utf8_lossy(&got), *t, "{e}");
            }
            Kind::Link(t) => {
                assert!(st.contains(&format!("Fast link dest: \"{t}\"")), "{e}");
            }
            Kind::Dir => {
                let ls = &out[&format!("ls -p {p}")];
                let mut got: Vec<String> = ls
                    .lines()
                    .filter_map(|l| l.split('/').nth(5).map(str::to_string))
                    .filter(|n| !n.is_empty() && n != "." && n != "..")
                    .collect();
                got.sort();
                let mut want: Vec<String> = m
                    .children(p)
                    .iter()
                    .map(|c| c.rsplit('/').next().unwrap().to_string())
                    .collect();
                want.sort();
                assert_eq!(got, want, "{e}: {ls}");
            }
        }
        let ea = &out[&format!("ea_list {p}")];
        let listed = ea.matches(" (").count();
        assert_eq!(listed, i.xattrs.len(), "{e}: {ea}");
        for (x, v) in &i.xattrs {
            assert!(ea.contains(&format!("{x} ({})", v.len())), "{e}: {ea}");
            let got = std::fs::read(dump.join(format!("{k}.{x}"))).unwrap_or_default();
            assert!(got == *v, "{e}: xattr {x} value differs");
        }
    }
}

fn run_seq(opts: &[&str], seed: u64) {
    let dir = tempdir();
    let part = dir.path().join("fs.part");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mut args = vec!["-q", "-F", "-E", "root_owner=0:0"];
    args.extend_from_slice(opts);
    let o = Command::new("mkfs.ext4")
        .args(&args)
        .arg(&part)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut m = Model {
        wide: !opts.contains(&"128"),
        ..Model::default()
    };
    m.add("/", Kind::Dir, 0o755, 0, 0);
    m.add("/lost+found", Kind::Dir, 0o700, 0, 0);
    let src = Arc::new(RawReader::open(&part).unwrap());
    let ov = Arc::new(Overlay::new(src, None));
    let dev = VolumeDev::range(ov.clone(), 0, 16 << 20).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ctx = format!("{opts:?} seed {seed}");
    // Three batches: the writer is reopened on what the previous one left.
    let mut all = Vec::new();
    for _ in 0..3 {
        let mut batch = Vec::new();
        while batch.len() < 12 {
            if let Some(a) = step(&mut m, &mut rng) {
                batch.push(a);
            }
        }
        apply(&dev, "ext4", &batch)
            .unwrap_or_else(|e| panic!("{ctx}: {e}\nafter {all:#?}\nbatch {batch:#?}"));
        all.extend(batch);
    }
    let out = dir.path().join("after.part");
    let mut buf = vec![0u8; 16 << 20];
    dev.read_at(0, &mut buf).unwrap();
    std::fs::write(&out, &buf).unwrap();
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{ctx}: e2fsck -fn:\n{}\nactions {all:#?}",
        String::from_utf8_lossy(&o.stdout)
    );
    check(&out, &m, &ctx);
}

fn sequences(opts: &[&str]) {
    if !require(TOOLS) {
        return;
    }
    for seed in 1..=6 {
        run_seq(opts, seed);
    }
}

#[test]
fn random_sequences_4k() {
    sequences(&[]);
}
#[test]
fn random_sequences_1k() {
    sequences(&["-b", "1024"]);
}
#[test]
fn random_sequences_4k_no_csum() {
    sequences(&["-O", "^metadata_csum"]);
}
#[test]
fn random_sequences_1k_no_csum_128_inodes() {
    sequences(&["-b", "1024", "-O", "^metadata_csum", "-I", "128"]);
}

/// Fill an htree directory (made by mkfs.ext4 -d) until its leaves split;
/// e2fsck checks the index (hash order, counts, checksums), debugfs lists
/// every name.
fn htree_split(opts: &[&str], hash: Option<&str>, initial: usize, levels: u8) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("big")).unwrap();
    for i in 0..initial {
        std::fs::write(tree.join(format!("big/entry_with_a_long_name_{i}")), "x").unwrap();
    }
    let part = dir.path().join("fs.part");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mut args = vec!["-q", "-F", "-E", "root_owner=0:0", "-d"];
    let t = tree.to_str().unwrap().to_string();
    args.push(&t);
    args.extend_from_slice(opts);
    let o = Command::new("mkfs.ext4")
        .args(&args)
        .arg(&part)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if let Some(alg) = hash {
        let o = Command::new("tune2fs")
            .args(["-E", &format!("hash_alg={alg}")])
            .arg(&part)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Index every directory (and rehash with the default hash): e2fsck -D.
    let o = Command::new("e2fsck")
        .arg("-fyD")
        .arg(&part)
        .output()
        .unwrap();
    assert!(o.status.code().unwrap_or(8) <= 1, "e2fsck -fyD");
    let flags = |p: &Path| {
        let o = Command::new("debugfs")
            .args(["-R", "stat /big"])
            .arg(p)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        u32::from_str_radix(field(&s, "Flags:").trim_start_matches("0x"), 16).unwrap()
    };
    assert!(flags(&part) & 0x1000 != 0, "mkfs made /big an htree");
    let src = Arc::new(RawReader::open(&part).unwrap());
    let ov = Arc::new(Overlay::new(src, None));
    let dev = VolumeDev::range(ov, 0, 16 << 20).unwrap();
    let actions: Vec<FsAction> = (0..300)
        .map(|i| FsAction::WriteFile {
            path: format!("/big/added_{i}_{}", "y".repeat(i % 40)),
            data: vec![],
            mode: 0o644,
            uid: 0,
            gid: 0,
        })
        .collect();
    apply(&dev, "ext4", &actions).unwrap();
    let out = dir.path().join("after.part");
    let mut buf = vec![0u8; 16 << 20];
    dev.read_at(0, &mut buf).unwrap();
    std::fs::write(&out, &buf).unwrap();
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{opts:?}: e2fsck -fn:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(flags(&out) & 0x1000 != 0, "still an htree");
    let ls = debugfs_script(&out, "ls -p /big\n");
    let names: std::collections::BTreeSet<&str> =
        ls.lines().filter_map(|l| l.split('/').nth(5)).collect();
    for i in 0..initial {
        assert!(names.contains(format!("entry_with_a_long_name_{i}").as_str()));
    }
    let dump = debugfs_script(&out, "htree_dump /big\n");
    assert!(
        dump.contains(&format!("Indirect levels: {levels}")),
        "{}",
        &dump[..dump.len().min(400)]
    );
    let version = match hash {
        Some("legacy") => 0,
        Some("tea") => 2,
        _ => 1,
    };
    assert!(
        dump.contains(&format!("Hash Version: {version}")),
        "{}",
        &dump[..dump.len().min(400)]
    );
    for a in &actions {
        let FsAction::WriteFile { path, .. } = a else {
            unreachable!()
        };
        assert!(names.contains(&path[5..]), "{path} listed");
    }
}

#[test]
fn htree_split_1k_half_md4() {
    htree_split(&["-b", "1024"], None, 400, 0);
}
#[test]
fn htree_split_1k_tea_no_csum() {
    htree_split(&["-b", "1024", "-O", "^metadata_csum"], Some("tea"), 400, 0);
}
#[test]
fn htree_split_1k_legacy() {
    htree_split(&["-b", "1024"], Some("legacy"), 400, 0);
}
#[test]
fn htree_split_4k() {
    htree_split(&[], None, 400, 0);
}
#[test]
fn htree_split_1k_two_levels() {
    htree_split(&["-b", "1024", "-N", "8192"], None, 4000, 1);
}

/// Fragment free space (900 one-block files, every other one deleted), then
/// write a file that must use the holes: about 450 extents, more than the
/// inode and four leaves hold, so the tree grows an index level (depth 2).
#[test]
fn deep_extent_tree_on_fragmented_space() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let part = dir.path().join("fs.part");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "1024", "-E", "root_owner=0:0"])
        .arg(&part)
        .output()
        .unwrap();
    assert!(o.status.success());
    let src = Arc::new(RawReader::open(&part).unwrap());
    let ov = Arc::new(Overlay::new(src, None));
    let dev = VolumeDev::range(ov, 0, 16 << 20).unwrap();
    let small: Vec<FsAction> = (0..900)
        .map(|i| FsAction::WriteFile {
            path: format!("/s/{i}"),
            data: vec![b's'; 1000],
            mode: 0o644,
            uid: 0,
            gid: 0,
        })
        .collect();
    apply(&dev, "ext4", &small).unwrap();
    let del: Vec<FsAction> = (0..900)
        .step_by(2)
        .map(|i| FsAction::Delete {
            path: format!("/s/{i}"),
        })
        .collect();
    apply(&dev, "ext4", &del).unwrap();
    let data = pattern(7, 700 * 1024);
    apply(
        &dev,
        "ext4",
        &[FsAction::WriteFile {
            path: "/s/big".into(),
            data: data.clone(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }],
    )
    .unwrap();
    let out = dir.path().join("after.part");
    let mut buf = vec![0u8; 16 << 20];
    dev.read_at(0, &mut buf).unwrap();
    std::fs::write(&out, &buf).unwrap();
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let d = dir.path().join("big.out");
    let s = debugfs_script(
        &out,
        &format!("dump /s/big {}\nex /s/big\nstat /s/1\n", d.display()),
    );
    assert!(std::fs::read(&d).unwrap() == data, "content read back");
    let ex = &sections(&s)["ex /s/big"];
    assert!(ex.contains(" 0/ 2 "), "a depth-2 tree:\n{ex}");
    assert!(ex.contains(" 2/ 2 "), "{ex}");
}
