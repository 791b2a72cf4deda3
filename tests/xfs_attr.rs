//! XFS writer extended attributes beyond short form: leaf-form attribute
//! forks, remote (multi-block) values, replace, remove, converting back to
//! short form, and deleting files with a leaf attribute fork. Judged by
//! xfsprogs: `xfs_repair -n` clean (exit 0, no "would" lines) after every
//! step, and the attributes read back through `xfs_db` (short-form lists,
//! `ablock 0` leaf entries and name/value lists, `ablock N` remote blocks
//! with their header and crc checked by xfs_db).

mod common;

use common::xfs::{db_attrs, db_field, repair_clean, sb_value, with_overlay};
use common::{require, run_output, s, tempdir};
use onramp::fs::xfs::write::XfsWriter;
use onramp::inject::FsAction;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TOOLS: &[&str] = &["mkfs.xfs", "xfs_db", "xfs_repair"];

/// A 300 MiB (mkfs.xfs minimum, sparse) image holding /f (a 20 KB file),
/// /d (a short-form directory with one entry) and /l (an inline symlink).
fn image(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let data = dir.join("f.src");
    std::fs::write(&data, common::pattern(5, 20_000)).unwrap();
    let text = format!(
        "/dummy\n0 0\nd--755 0 0\nf ---644 0 0 {0}\ng ---644 0 0 {0}\nd d--755 0 0\nx ---644 0 0 {0}\n$\nl l--777 0 0 /some/where\n$\n",
        s(&data)
    );
    common::xfs::mkfs_protofile(dir, name, &text, args, 300)
}

/// Apply `f` to a writer on `img`, in place.
fn edit(
    img: &Path,
    f: impl FnOnce(&mut XfsWriter, &mut Vec<String>) -> onramp::error::Result<()>,
) -> Result<Vec<String>, String> {
    with_overlay(img, img, |dev| {
        let mut w = XfsWriter::open(dev.clone()).map_err(|e| e.to_string())?;
        let mut log = Vec::new();
        f(&mut w, &mut log).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        Ok(log)
    })
}

fn set(img: &Path, path: &str, sets: &[(&str, Vec<u8>)]) -> Result<Vec<String>, String> {
    edit(img, |w, log| {
        for (name, value) in sets {
            w.apply_action(
                &FsAction::SetXattr {
                    path: path.into(),
                    name: (*name).into(),
                    value: value.clone(),
                },
                log,
            )?;
        }
        Ok(())
    })
}

fn remove(img: &Path, path: &str, names: &[&str]) {
    edit(img, |w, log| {
        for n in names {
            w.remove_xattr(path, n, log)?;
        }
        Ok(())
    })
    .unwrap();
}

/// A printable value (xfs_db prints it verbatim).
fn val(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i * 7 + seed * 13 + i / 26) % 26) as u8)
        .collect()
}

/// Apply `sets` to `path` of `img`, update the model, and check both oracles.
fn step(img: &Path, path: &str, model: &mut BTreeMap<String, Vec<u8>>, sets: &[(&str, Vec<u8>)]) {
    set(img, path, sets).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (n, v) in sets {
        model.insert((*n).to_string(), v.clone());
    }
    check(img, path, model);
}

fn check(img: &Path, path: &str, model: &BTreeMap<String, Vec<u8>>) {
    repair_clean(img);
    let got = db_attrs(img, path);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        model.keys().collect::<Vec<_>>(),
        "{path}: attribute names"
    );
    for (k, v) in model {
        assert!(
            got[k] == *v,
            "{path}: value of {k} differs ({} vs {} bytes)",
            got[k].len(),
            v.len()
        );
    }
}

fn leaf_lifecycle(name: &str, args: &[&str]) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), name, args);
    let free0 = sb_value(&img, "fdblocks");
    let fblocks: usize = db_field(&img, "/f", "core.nblocks").parse().unwrap();

    for path in ["/f", "/d", "/l"] {
        let mut m = BTreeMap::new();
        // Short form first.
        step(
            &img,
            path,
            &mut m,
            &[("security.selinux", b"system_u:object_r:etc_t:s0\0".to_vec())],
        );
        assert!(db_field(&img, path, "core.aformat").starts_with("1 "));
        // Many small attributes: short form overflows into a leaf block.
        // Enough 20-byte entries to overflow the inode's literal area.
        let n = (sb_value(&img, "inodesize") - 176) / 20 + 2;
        let many: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| (format!("user.attr_{i:02}"), val(i, 10)))
            .collect();
        let many: Vec<(&str, Vec<u8>)> =
            many.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        step(&img, path, &mut m, &many);
        assert!(
            db_field(&img, path, "core.aformat").starts_with("2 "),
            "{path}"
        );
        // Values of 300 B, 3000 B (local in a 4 KiB leaf, remote in 1 KiB),
        // 64 KiB (remote, many blocks) and a trusted one.
        step(
            &img,
            path,
            &mut m,
            &[
                ("user.v300", val(1, 300)),
                ("user.v3000", val(2, 3000)),
                ("user.v64k", val(3, 65536)),
                ("trusted.t", val(4, 255)),
            ],
        );
        // Replace with shorter and longer values.
        step(
            &img,
            path,
            &mut m,
            &[
                ("user.v3000", val(5, 100)),
                ("user.v300", val(6, 5000)),
                ("user.v64k", val(7, 20_000)),
                ("user.attr_05", val(8, 1000)),
                ("security.selinux", b"system_u:object_r:bin_t:s0\0".to_vec()),
            ],
        );
        // Remove some (including remote ones).
        let gone = [
            "user.v64k",
            "user.attr_00",
            "user.attr_01",
            "user.v300",
            "user.nope",
        ];
        remove(&img, path, &gone);
        for g in gone {
            m.remove(g);
        }
        check(&img, path, &m);
        assert!(
            db_field(&img, path, "core.aformat").starts_with("2 "),
            "{path}"
        );
    }
    // /d: remove down to short form, then everything (the fork goes away).
    let mut m = db_attrs(&img, "/d");
    let names: Vec<String> = m
        .keys()
        .filter(|k| *k != "security.selinux")
        .cloned()
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    remove(&img, "/d", &names);
    m.retain(|k, _| k == "security.selinux");
    check(&img, "/d", &m);
    assert!(db_field(&img, "/d", "core.aformat").starts_with("1 "));
    remove(&img, "/d", &["security.selinux"]);
    check(&img, "/d", &BTreeMap::new());
    assert_eq!(db_field(&img, "/d", "core.forkoff"), "0");
    assert_eq!(db_field(&img, "/d", "core.nblocks"), "0");
    // The short-form directory still takes entries.
    edit(&img, |w, log| {
        for i in 0..3 {
            w.apply_action(
                &FsAction::WriteFile {
                    path: format!("/d/n{i}"),
                    data: b"x".to_vec(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
                log,
            )?;
        }
        Ok(())
    })
    .unwrap();
    repair_clean(&img);
    // Delete /f and /l with their leaf attribute forks and remote values; the
    // new /d files (one block each) stay: every other block comes back.
    edit(&img, |w, log| {
        w.apply_action(&FsAction::Delete { path: "/f".into() }, log)?;
        w.apply_action(&FsAction::Delete { path: "/l".into() }, log)
    })
    .unwrap();
    repair_clean(&img);
    assert_eq!(sb_value(&img, "fdblocks"), free0 + fblocks - 3);
}

#[test]
fn leaf_attrs_defaults() {
    leaf_lifecycle("defaults", &[]);
}

#[test]
fn leaf_attrs_1k_blocks() {
    leaf_lifecycle("b1k", &["-b", "size=1024"]);
}

#[test]
fn leaf_attrs_1k_inodes() {
    leaf_lifecycle("i1k", &["-i", "size=1024"]);
}

#[test]
fn leaf_attrs_nrext64() {
    leaf_lifecycle("nrext64", &["-i", "nrext64=1"]);
}

#[test]
fn refusals_name_the_reason() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "refuse", &["-b", "size=1024"]);
    let e = set(&img, "/f", &[("user.huge", val(0, 70_000))]).unwrap_err();
    assert!(e.contains("XATTR_SIZE_MAX"), "{e}");
    // More names than one 1 KiB leaf holds: node form is refused, nothing written.
    let many: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                format!("user.a_rather_long_attribute_name_{i:03}"),
                val(i, 4),
            )
        })
        .collect();
    let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let e = set(&img, "/g", &many).unwrap_err();
    assert!(e.contains("node-form"), "{e}");
    repair_clean(&img);
}

/// `xfs_db -x` (libxfs's own attribute code) on inode `path` of `img`.
fn libxfs(img: &Path, path: &str, cmds: &[String]) {
    let mut a: Vec<String> = vec![
        "-x".into(),
        s(img).into(),
        "-c".into(),
        format!("path {path}"),
    ];
    for c in cmds {
        a.push("-c".into());
        a.push(c.clone());
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = run_output("xfs_db", &a);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "xfs_db {a:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn libxfs_reads_and_changes_what_onramp_wrote_and_back() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "interop", &[]);
    // onramp builds a leaf with local and remote values; libxfs removes a
    // remote one and adds its own (values of 'v').
    let mut m = BTreeMap::new();
    let sets: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("user.k{i:02}"), val(i, 30)))
        .chain([
            ("user.r1".to_string(), val(1, 9000)),
            ("user.r2".to_string(), val(2, 5000)),
        ])
        .collect();
    let sets: Vec<(&str, Vec<u8>)> = sets.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    step(&img, "/f", &mut m, &sets);
    libxfs(
        &img,
        "/f",
        &[
            "attr_remove -u r1".into(),
            "attr_set -u -v 6000 lx".into(),
            "attr_remove -u k03".into(),
        ],
    );
    m.remove("user.r1");
    m.remove("user.k03");
    m.insert("user.lx".into(), vec![b'v'; 6000]);
    check(&img, "/f", &m);
    // onramp changes what libxfs wrote.
    step(
        &img,
        "/f",
        &mut m,
        &[("user.lx", val(9, 700)), ("user.k04", val(9, 4500))],
    );
    remove(&img, "/f", &["user.r2"]);
    m.remove("user.r2");
    check(&img, "/f", &m);

    // A node-form fork made by libxfs: changing it is refused by name;
    // deleting the file frees every attribute block.
    let free0 = sb_value(&img, "fdblocks");
    let gblocks: usize = db_field(&img, "/g", "core.nblocks").parse().unwrap();
    let many: Vec<String> = (0..200)
        .map(|i| format!("attr_set -u -v 40 n{i:03}"))
        .collect();
    libxfs(&img, "/g", &many);
    repair_clean(&img);
    let e = set(&img, "/g", &[("user.more", val(0, 10))]).unwrap_err();
    assert!(e.contains("node form"), "{e}");
    edit(&img, |w, log| {
        w.apply_action(&FsAction::Delete { path: "/g".into() }, log)
    })
    .unwrap();
    repair_clean(&img);
    assert_eq!(sb_value(&img, "fdblocks"), free0 + gblocks);
}
