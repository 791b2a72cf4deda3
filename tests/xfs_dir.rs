//! XFS writer, directories in node and B+tree form (and the conversions
//! from leaf form), judged by xfsprogs: after every phase `xfs_repair -n`
//! reports nothing, `xfs_db ls` lists exactly the expected names with the
//! expected inode numbers, `xfs_db path` finds entries through the hash
//! index, and injected files read back through xfs_db's block map.

mod common;

use common::xfs::{apply_to_copy, db_bmap, db_cat, db_field, db_ino, db_ls, repair_clean};
use common::{require, run_output, s, tempdir};
use onramp::inject::FsAction;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TOOLS: &[&str] = &["mkfs.xfs", "xfs_db", "xfs_repair"];

/// A 300 MiB image (the mkfs.xfs minimum, sparse) whose /big holds
/// `n` entries: empty files, every 10th an empty directory, every 15th a
/// symlink. With `data`, the files get one block each, written between the
/// directory's own blocks, which fragments /big into a B+tree-mapped fork.
/// /pool holds [`POOL`] empty files: deleting them frees inodes in existing
/// chunks for the writer to use (it does not allocate inode chunks).
/// /keep is a file the tests hard-link into /big.
fn image(dir: &Path, name: &str, args: &[&str], n: usize, data: bool) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    std::fs::write(&src, if data { "some bytes\n" } else { "" }).unwrap();
    let mut p = String::from("/dummy\n0 0\nd--755 0 0\nbig d--755 0 0\n");
    for i in 0..n {
        let nm = big_name(i);
        if i % 10 == 0 {
            p += &format!("{nm} d--755 0 0\n$\n");
        } else if i % 15 == 0 {
            p += &format!("{nm} l--777 0 0 /etc/target_{i}\n");
        } else {
            p += &format!("{nm} ---644 0 0 {}\n", s(&src));
        }
    }
    p += "$\npool d--755 0 0\n";
    for i in 0..POOL {
        p += &format!("pool_file_{i:04} ---644 0 0 {}\n", s(&src));
    }
    p += &format!("$\nkeep ---644 0 0 {}\n$\n", s(&src));
    common::xfs::mkfs_protofile(dir, name, &p, args, 300)
}

const POOL: usize = 800;

/// Deletes of every /pool file.
fn drain_pool() -> Vec<FsAction> {
    (0..POOL)
        .map(|i| FsAction::Delete {
            path: format!("/pool/pool_file_{i:04}"),
        })
        .collect()
}

fn big_name(i: usize) -> String {
    format!("entry_with_a_long_name_number_{i:05}")
}

/// Directory block of `path` at `byte` offset of its address space is mapped.
fn has_block_at(img: &Path, path: &str, byte: u64) -> bool {
    let bs: u64 = common::xfs::sb_value(img, "blocksize") as u64;
    db_bmap(img, path)
        .iter()
        .any(|&(off, _, n, _)| off <= byte / bs && byte / bs < off + n)
}

const LEAF_OFFSET: u64 = 1 << 35;
const FREE_OFFSET: u64 = 1 << 36;

/// Node form: a free-index block and a LEAFN or da-node block at the leaf offset.
fn is_node_form(img: &Path, path: &str) -> bool {
    if !has_block_at(img, path, FREE_OFFSET) {
        return false;
    }
    let bs: u64 = common::xfs::sb_value(img, "blocksize") as u64;
    let out = common::xfs::xfs_db(
        img,
        &[
            &format!("path {path}"),
            &format!("dblock {}", LEAF_OFFSET / bs),
            "print",
        ],
    );
    out.contains("magic = 0x3dff") || out.contains("magic = 0x3ebe")
}

/// The expected listing of /big: name -> inode (None for entries added by
/// the writer, whose numbers are looked up through `xfs_db path`).
type Model = BTreeMap<String, Option<u64>>;

/// Apply `actions` to `from` into `to`, then check it against `model`:
/// repair clean, exact listing, inode numbers (old entries keep theirs,
/// a sample of new ones found through the hash index), `files` read back.
fn phase(from: &Path, to: &Path, actions: &[FsAction], model: &Model, files: &[(String, Vec<u8>)]) {
    apply_to_copy(from, to, actions).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    repair_clean(to);
    let got = db_ls(to, "/big");
    let names: Vec<&String> = got.iter().map(|(n, _)| n).collect();
    let want: Vec<&String> = model.keys().collect();
    assert_eq!(names, want, "{}: listing of /big", to.display());
    let mut sampled = 0;
    for (n, ino) in &got {
        match model[n] {
            Some(old) => assert_eq!(*ino, old, "{n}"),
            None if sampled < 6 => {
                sampled += 1;
                assert_eq!(db_ino(to, &format!("/big/{n}")), *ino, "{n}");
            }
            None => {}
        }
    }
    for (p, data) in files {
        assert_eq!(&db_cat(to, p), data, "{}: {p}", to.display());
    }
}

fn write(path: String, data: &[u8]) -> FsAction {
    FsAction::WriteFile {
        path,
        data: data.to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

/// Adds of files, directories (with mkdir -p below them; named `*_tree_*`),
/// symlinks and hard links to /keep.
fn adds(
    tag: &str,
    count: usize,
    model: &mut Model,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Vec<FsAction> {
    let mut v = Vec::new();
    for i in 0..count {
        let mut name = format!("{tag}_added_entry_with_a_longer_name_{i:04}");
        match i % 6 {
            0 => {
                name = format!("{tag}_tree_{i:04}");
                v.push(FsAction::Mkdir {
                    path: format!("/big/{name}/below/deeper"),
                    mode: 0o755,
                });
            }
            1 => v.push(FsAction::Symlink {
                target: format!("/usr/lib/{name}"),
                path: format!("/big/{name}"),
            }),
            2 | 3 => v.push(FsAction::Hardlink {
                target: "/keep".into(),
                path: format!("/big/{name}"),
            }),
            _ => {
                let data = format!("{tag} file {i}\n").repeat(1 + i % 5).into_bytes();
                if i % 50 == 4 {
                    files.push((format!("/big/{name}"), data.clone()));
                }
                v.push(write(format!("/big/{name}"), &data));
            }
        }
        model.insert(name, None);
    }
    v
}

/// Deletes of `count` entries (every `step`-th of the model), skipping
/// directories that are not empty.
fn removes(count: usize, step: usize, model: &mut Model, keep: &[String]) -> Vec<FsAction> {
    let victims: Vec<String> = model
        .keys()
        .filter(|n| !n.contains("_tree_"))
        .filter(|n| !keep.contains(n))
        .step_by(step)
        .take(count)
        .cloned()
        .collect();
    victims
        .into_iter()
        .map(|n| {
            model.remove(&n);
            FsAction::Delete {
                path: format!("/big/{n}"),
            }
        })
        .collect()
}

/// Add, remove, add again in a node-form /big of `n` entries.
fn node_cycle(name: &str, args: &[&str], n: usize) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), name, args, n, false);
    assert!(
        is_node_form(&img, "/big"),
        "{name}: mkfs made no node-form /big"
    );
    assert_eq!(db_field(&img, "/big", "core.format"), "2 (extents)");
    let mut model: Model = db_ls(&img, "/big")
        .into_iter()
        .map(|(n, i)| (n, Some(i)))
        .collect();
    assert_eq!(model.len(), n);
    let mut files = Vec::new();
    // 1: 300 entries more.
    let mut a = drain_pool();
    a.extend(adds("one", 300, &mut model, &mut files));
    let p1 = dir.path().join("p1.img");
    phase(&img, &p1, &a, &model, &files);
    assert!(is_node_form(&p1, "/big"));
    assert!(db_ls(&p1, "/big/one_tree_0006/below")
        .iter()
        .any(|e| e.0 == "deeper"));
    // 2: 500 fewer (files, empty directories, symlinks, new and old).
    let keep: Vec<String> = files
        .iter()
        .map(|f| f.0.trim_start_matches("/big/").to_string())
        .collect();
    let a = removes(500, 2, &mut model, &keep);
    assert_eq!(a.len(), 500);
    let p2 = dir.path().join("p2.img");
    phase(&p1, &p2, &a, &model, &files);
    std::fs::remove_file(&p1).unwrap();
    // 3: entries again, the agent's unit file among them.
    let mut a = adds("two", 200, &mut model, &mut files);
    let unit = b"[Unit]\nDescription=agent\n[Service]\nExecStart=/usr/bin/agent\n".to_vec();
    a.push(write("/big/onramp-agent.service".into(), &unit));
    model.insert("onramp-agent.service".into(), None);
    files.push(("/big/onramp-agent.service".into(), unit));
    let p3 = dir.path().join("p3.img");
    phase(&p2, &p3, &a, &model, &files);
    // New directory blocks extend the fork's extents where the next disk
    // block is free, so the fork stays in the inode.
    eprintln!(
        "{name}: /big extents {} -> {}",
        db_field(&img, "/big", "core.nextents"),
        db_field(&p3, "/big", "core.nextents")
    );
    assert_eq!(db_field(&p3, "/big", "core.format"), "2 (extents)");
}

#[test]
fn node_form_directory_4k_blocks() {
    node_cycle("n4k", &[], 2000);
}

#[test]
fn node_form_directory_1k_blocks_4k_dir_blocks() {
    node_cycle("n1k", &["-b", "size=1024", "-n", "size=4096"], 1000);
}

#[test]
fn node_form_directory_1k_blocks_8k_dir_blocks() {
    node_cycle("n8k", &["-b", "size=1024", "-n", "size=8192"], 1500);
}

#[test]
fn leaf_form_directory_converts_to_node_and_back() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "leaf", &[], 200, false);
    assert!(has_block_at(&img, "/big", LEAF_OFFSET));
    assert!(!is_node_form(&img, "/big"));
    let mut model: Model = db_ls(&img, "/big")
        .into_iter()
        .map(|(n, i)| (n, Some(i)))
        .collect();
    let mut files = Vec::new();
    let mut a = drain_pool();
    a.extend(adds("grow", 500, &mut model, &mut files));
    let p1 = dir.path().join("p1.img");
    phase(&img, &p1, &a, &model, &files);
    assert!(is_node_form(&p1, "/big"));
    // Shrink: back to leaf form.
    let a = removes(650, 1, &mut model, &[]);
    let p2 = dir.path().join("p2.img");
    phase(&p1, &p2, &a, &model, &[]);
    assert!(!has_block_at(&p2, "/big", FREE_OFFSET));
    assert!(has_block_at(&p2, "/big", LEAF_OFFSET));
    // Empty it: back to a single directory block.
    let mut a = Vec::new();
    for n in std::mem::take(&mut model).into_keys() {
        if n.contains("_tree_") {
            for sub in ["/below/deeper", "/below", ""] {
                a.push(FsAction::Delete {
                    path: format!("/big/{n}{sub}"),
                });
            }
        } else {
            a.push(FsAction::Delete {
                path: format!("/big/{n}"),
            });
        }
    }
    let p3 = dir.path().join("p3.img");
    phase(&p2, &p3, &a, &model, &[]);
    assert_eq!(db_field(&p3, "/big", "core.size"), "4096");
    assert_eq!(db_field(&p3, "/big", "core.nblocks"), "1");
}

#[test]
fn block_form_directory_grows_into_node_form() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "block", &[], 40, false);
    assert_eq!(db_field(&img, "/big", "core.size"), "4096");
    let mut model: Model = db_ls(&img, "/big")
        .into_iter()
        .map(|(n, i)| (n, Some(i)))
        .collect();
    let mut files = Vec::new();
    let mut a = drain_pool();
    a.extend(adds("b", 700, &mut model, &mut files));
    let p1 = dir.path().join("p1.img");
    phase(&img, &p1, &a, &model, &files);
    assert!(is_node_form(&p1, "/big"));
}

#[test]
fn btree_form_directory() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "bt", &[], 2000, true);
    assert_eq!(db_field(&img, "/big", "core.format"), "3 (btree)");
    let mut model: Model = db_ls(&img, "/big")
        .into_iter()
        .map(|(n, i)| (n, Some(i)))
        .collect();
    let mut files = Vec::new();
    // Removing, then adding fewer than were removed, keeps the block set.
    let mut a = drain_pool();
    a.extend(removes(300, 4, &mut model, &[]));
    let p1 = dir.path().join("p1.img");
    phase(&img, &p1, &a, &model, &files);
    assert_eq!(db_field(&p1, "/big", "core.format"), "3 (btree)");
    let a = adds("bt", 200, &mut model, &mut files);
    let p2 = dir.path().join("p2.img");
    phase(&p1, &p2, &a, &model, &files);
    assert_eq!(db_bmap(&p2, "/big"), db_bmap(&img, "/big"));
    // Growing past its blocks rewrites the bmbt.
    let a = adds("more", 700, &mut model, &mut files);
    let p3 = dir.path().join("p3.img");
    phase(&p2, &p3, &a, &model, &files);
    assert_eq!(db_field(&p3, "/big", "core.format"), "3 (btree)");
    assert_ne!(db_bmap(&p3, "/big"), db_bmap(&p2, "/big"));
}

/// The case this exists for: a RHEL-like /usr/lib/systemd/system (unit
/// files with contents, symlinks, `.wants` directories; big enough for node
/// form, its blocks interleaved with the units' data) gets the agent's unit,
/// and a `.wants` symlink is added next to it.
#[test]
fn systemd_unit_directory_gets_the_agent_unit() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let unit_src = dir.path().join("unit.src");
    std::fs::write(
        &unit_src,
        "[Unit]\nDescription=a unit\n\n[Service]\nExecStart=/usr/bin/true\n",
    )
    .unwrap();
    let mut p = String::from("/dummy\n0 0\nd--755 0 0\n");
    p += "usr d--755 0 0\nlib d--755 0 0\nsystemd d--755 0 0\nsystem d--755 0 0\n";
    for i in 0..600 {
        let nm = format!("systemd-service-number-{i:03}-with-a-name.service");
        match i % 20 {
            0 => p += &format!("{nm}.wants d--755 0 0\n$\n"),
            1 => p += &format!("{nm} l--777 0 0 /dev/null\n"),
            _ => p += &format!("{nm} ---644 0 0 {}\n", s(&unit_src)),
        }
    }
    p += "$\n$\n$\n$\n$\n";
    let proto = dir.path().join("sd.proto");
    std::fs::write(&proto, p).unwrap();
    let img = dir.path().join("sd.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let o = run_output("mkfs.xfs", &["-q", "-f", "-p", s(&proto), s(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sd = "/usr/lib/systemd/system";
    assert!(is_node_form(&img, sd));
    let format = db_field(&img, sd, "core.format");
    let before = db_ls(&img, sd);
    let unit = b"[Unit]\nDescription=onramp agent\n\n[Service]\nExecStart=/usr/bin/agent\n";
    let actions = vec![
        write(format!("{sd}/onramp-agent.service"), unit),
        FsAction::Symlink {
            target: format!("{sd}/onramp-agent.service"),
            path: format!(
                "{sd}/systemd-service-number-000-with-a-name.service.wants/onramp-agent.service"
            ),
        },
    ];
    let out = dir.path().join("out.img");
    apply_to_copy(&img, &out, &actions).unwrap();
    repair_clean(&out);
    let after = db_ls(&out, sd);
    assert_eq!(after.len(), before.len() + 1);
    assert!(before.iter().all(|e| after.contains(e)));
    assert_eq!(db_cat(&out, &format!("{sd}/onramp-agent.service")), unit);
    assert_eq!(db_field(&out, sd, "core.format"), format);
}
