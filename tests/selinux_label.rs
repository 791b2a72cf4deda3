//! SELinux labelling without booting: files onramp creates in a guest with
//! SELinux enforcing get their `security.selinux` label from the policy's
//! file_contexts. Judged by tools we did not write: `matchpathcon -f`
//! (libselinux) is the oracle for the lookup, `debugfs ea_get` (ext4) and
//! `xfs_db` (XFS) read the labels back, e2fsck / xfs_repair -n check the
//! filesystems. The file_contexts lines are taken from the targeted policy.

mod common;

use common::xfs::xfs_db;
use common::{require, run, run_output, s, tempdir, InputGuard};
use onramp::inject::selinux::{FileContexts, Kind};
use std::path::{Path, PathBuf};

/// Lines as in RHEL's targeted policy file_contexts (a small subset).
const FILE_CONTEXTS: &str = r"# targeted policy subset
/.*	system_u:object_r:default_t:s0
/[^/]+	--	system_u:object_r:etc_runtime_t:s0
/	-d	system_u:object_r:root_t:s0
/etc	-d	system_u:object_r:etc_t:s0
/etc/.*	system_u:object_r:etc_t:s0
/etc/hostname	--	system_u:object_r:hostname_etc_t:s0
/etc/selinux(/.*)?	system_u:object_r:selinux_config_t:s0
/etc/systemd/system(/.*)?	system_u:object_r:systemd_unit_file_t:s0
/usr(/.*)?	system_u:object_r:usr_t:s0
/usr/bin(/.*)?	system_u:object_r:bin_t:s0
/usr/bin/tmux	--	system_u:object_r:bin_t:s0
/usr/sbin/waagent	--	system_u:object_r:waagent_exec_t:s0
/usr/lib/systemd/system(/.*)?	system_u:object_r:systemd_unit_file_t:s0
/usr/lib/systemd/system/waagent.*	--	system_u:object_r:waagent_unit_file_t:s0
/usr/share/doc(/.*)?	system_u:object_r:usr_t:s0
/opt(/.*)?	system_u:object_r:usr_t:s0
/var	-d	system_u:object_r:var_t:s0
/var/.*	system_u:object_r:var_t:s0
/var/lib(/.*)?	system_u:object_r:var_lib_t:s0
/var/lib/waagent(/.*)?	system_u:object_r:waagent_var_lib_t:s0
/var/log(/.*)?	system_u:object_r:var_log_t:s0
/var/log/waagent\.log.*	--	system_u:object_r:waagent_log_t:s0
/tmp	-d	system_u:object_r:tmp_t:s0
/tmp/.*	<<none>>
/root(/.*)?	system_u:object_r:admin_home_t:s0
/lib	-l	system_u:object_r:lib_t:s0
";

const LOCAL: &str = "/opt/agent(/.*)?\tsystem_u:object_r:agent_local_t:s0\n";
const SUBS_DIST: &str = "/usr/local /usr\n/var/roothome /root\n/usr/lib64 /usr/lib\n";
const SUBS: &str = "/srv/agent /opt/agent\n";

/// `matchpathcon -f` (libselinux) is the oracle for our lookup.
#[test]
fn lookup_agrees_with_matchpathcon() {
    if !require(&["matchpathcon"]) {
        return;
    }
    let dir = tempdir();
    let fc = dir.path().join("file_contexts");
    std::fs::write(&fc, FILE_CONTEXTS).unwrap();
    std::fs::write(dir.path().join("file_contexts.local"), LOCAL).unwrap();
    std::fs::write(dir.path().join("file_contexts.subs_dist"), SUBS_DIST).unwrap();
    std::fs::write(dir.path().join("file_contexts.subs"), SUBS).unwrap();
    let ours = FileContexts::parse(
        &[
            ("file_contexts", FILE_CONTEXTS),
            ("file_contexts.local", LOCAL),
        ],
        SUBS,
        SUBS_DIST,
    );
    assert!(ours.skipped.is_empty(), "{:?}", ours.skipped);
    let paths = [
        "/",
        "/etc",
        "/etc/hostname",
        "/etc/passwd",
        "/etc/selinux/config",
        "/etc/systemd/system",
        "/etc/systemd/system/waagent.service",
        "/usr",
        "/usr/bin/tmux",
        "/usr/bin/new",
        "/usr/local/bin/agent",
        "/usr/sbin/waagent",
        "/usr/lib/systemd/system/waagent.service",
        "/usr/lib64/systemd/system/waagent.service",
        "/usr/lib/onramp/firstboot.sh",
        "/var",
        "/var/lib/waagent",
        "/var/lib/waagent/x/y",
        "/var/log/waagent.log",
        "/var/log/waagent.log.1",
        "/var/roothome/.bashrc",
        "/tmp",
        "/tmp/x",
        "/opt/agent/bin/run",
        "/srv/agent/conf",
        "/srv/agentx",
        "/.autorelabel",
        "/lib",
        "/unknown/deep/path",
    ];
    let kinds = [
        (Kind::File, "file"),
        (Kind::Dir, "dir"),
        (Kind::Link, "link"),
    ];
    let mut checked = 0;
    for p in paths {
        for (k, m) in kinds {
            let o = run_output("matchpathcon", &["-f", s(&fc), "-m", m, p]);
            let out = String::from_utf8_lossy(&o.stdout);
            // "PATH\tCONTEXT", or a failure when nothing matches.
            let theirs = if o.status.success() {
                let c = out.trim_end().rsplit('\t').next().unwrap().to_string();
                (c != "<<none>>").then_some(c)
            } else {
                None
            };
            assert_eq!(
                ours.lookup(p, k).unwrap().map(str::to_string),
                theirs,
                "{p} ({m}): matchpathcon says {out:?}"
            );
            checked += 1;
        }
    }
    eprintln!("oracle matchpathcon (libselinux): {checked} lookups agree");
}

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A RHEL-like root tree with SELinux enforcing and the targeted policy's
/// text file_contexts (when `with_fc`).
fn tree(dir: &Path, with_fc: bool) -> PathBuf {
    let t = dir.join("tree");
    put(
        &t,
        "etc/os-release",
        "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\n",
    );
    put(&t, "etc/fstab", "/dev/sda1 / xfs defaults 0 0\n");
    put(&t, "etc/hostname", "rhel\n");
    put(
        &t,
        "etc/selinux/config",
        "# SELinux\nSELINUX=enforcing\nSELINUXTYPE=targeted\n",
    );
    let fcdir = "etc/selinux/targeted/contexts/files";
    if with_fc {
        put(&t, &format!("{fcdir}/file_contexts"), FILE_CONTEXTS);
        put(&t, &format!("{fcdir}/file_contexts.local"), LOCAL);
        put(&t, &format!("{fcdir}/file_contexts.subs_dist"), SUBS_DIST);
        put(&t, &format!("{fcdir}/file_contexts.subs"), SUBS);
    } else {
        put(&t, &format!("{fcdir}/file_contexts.bin"), "compiled");
    }
    put(&t, "usr/bin/bash", "#!bash\n");
    put(&t, "var/lib/rpm/x", "rpm\n");
    std::fs::create_dir_all(t.join("tmp")).unwrap();
    t
}

/// An XFS protofile (mkfs.xfs -p) reproducing the tree at `t`.
fn protofile(t: &Path) -> String {
    fn walk(d: &Path, out: &mut String) {
        let mut ents: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap()).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let name = e.file_name().into_string().unwrap();
            if e.file_type().unwrap().is_dir() {
                *out += &format!("{name} d--755 0 0\n");
                walk(&e.path(), out);
                *out += "$\n";
            } else {
                *out += &format!("{name} ---644 0 0 {}\n", s(&e.path()));
            }
        }
    }
    let mut p = String::from("/dummy\n0 0\nd--755 0 0\n");
    walk(t, &mut p);
    p += "$\n";
    p
}

/// An MBR disk with the filesystem image `fsimg` as its one partition at 1 MiB.
fn disk_with(dir: &Path, fsimg: &Path, mib: u64) -> PathBuf {
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len((mib + 2) << 20)
        .unwrap();
    common::lvm::sfdisk(&disk, "label: dos\nstart=2048, type=83\n");
    dd(fsimg, 0, &disk, 1 << 20, mib << 20);
    disk
}

/// Copy `len` bytes from `src` at `from` to `dst` at `to` (sparse).
fn dd(src: &Path, from: u64, dst: &Path, to: u64, len: u64) {
    run(
        "dd",
        &[
            &format!("if={}", s(src)),
            &format!("of={}", s(dst)),
            "bs=1M",
            &format!("skip={}", from >> 20),
            &format!("seek={}", to >> 20),
            &format!("count={}", len >> 20),
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

fn mkfs(kind: &str, dir: &Path, t: &Path) -> (PathBuf, u64) {
    let img = dir.join("fs.img");
    if kind == "ext4" {
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "root_owner=0:0",
                "-d",
                s(t),
                s(&img),
                "32M",
            ],
        );
        (img, 32)
    } else {
        let proto = dir.join("proto");
        std::fs::write(&proto, protofile(t)).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(300 << 20)
            .unwrap();
        run("mkfs.xfs", &["-q", "-f", "-p", s(&proto), s(&img)]);
        (img, 300)
    }
}

/// The `security.selinux` value of `path` as the filesystem's own tools print
/// it, without the trailing NUL; `None` when the file has no label.
fn label_of(kind: &str, fsimg: &Path, path: &str) -> Option<String> {
    if kind == "ext4" {
        let o = run_output(
            "debugfs",
            &["-R", &format!("ea_get {path} security.selinux"), s(fsimg)],
        );
        let out = String::from_utf8_lossy(&o.stdout);
        // security.selinux (27) = "system_u:object_r:bin_t:s0\000"
        let v = out.split_once(" = \"")?.1.trim_end();
        let v = v.strip_suffix('"').unwrap_or(v);
        Some(v.strip_suffix("\\000").unwrap_or(v).to_string())
    } else {
        let out = xfs_db(fsimg, &[&format!("path {path}"), "print a"]);
        // a.sfattr.list[0].name = "selinux" ... a.sfattr.list[0].value = "...\000"
        let mut name = None;
        for l in out.lines() {
            let Some((k, v)) = l.trim().split_once(" = ") else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            if k.ends_with(".name") {
                name = Some(v.to_string());
            } else if k.ends_with(".value") && name.as_deref() == Some("selinux") {
                return Some(v.strip_suffix("\\000").unwrap_or(v).to_string());
            }
        }
        None
    }
}

fn check_fs(kind: &str, fsimg: &Path) {
    let o = if kind == "ext4" {
        run_output("e2fsck", &["-fn", s(fsimg)])
    } else {
        run_output("xfs_repair", &["-n", s(fsimg)])
    };
    assert!(
        o.status.success(),
        "{kind} check:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn exists(kind: &str, fsimg: &Path, path: &str) -> bool {
    if kind == "ext4" {
        let o = run_output("debugfs", &["-R", &format!("stat {path}"), s(fsimg)]);
        !String::from_utf8_lossy(&o.stderr).contains("File not found")
    } else {
        let o = run_output("xfs_db", &["-r", s(fsimg), "-c", &format!("path {path}")]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        !all.contains("not found") && !all.contains("No such")
    }
}

fn tools(kind: &str) -> &'static [&'static str] {
    if kind == "ext4" {
        &["mkfs.ext4", "debugfs", "e2fsck", "sfdisk"]
    } else {
        &["mkfs.xfs", "xfs_db", "xfs_repair", "sfdisk"]
    }
}

/// Customize a fresh SELinux guest on `kind`; returns the output's root
/// filesystem (extracted) and onramp's stdout+stderr.
fn customize(kind: &str, dir: &Path, with_fc: bool, extra: &[&str]) -> (PathBuf, String) {
    let t = tree(dir, with_fc);
    let (fsimg, mib) = mkfs(kind, dir, &t);
    let disk = disk_with(dir, &fsimg, mib);
    let guard = InputGuard::new(&disk);
    let out = dir.join("out.raw");
    let mut args = vec![
        "customize",
        s(&disk),
        s(&out),
        "--to",
        "raw",
        "--write",
        "/usr/bin/newtool:#!/bin/sh\n",
        "--write",
        "/etc/systemd/system/agent.service:[Unit]\n",
        "--mkdir",
        "/var/lib/waagent/events",
        "--write",
        "/usr/lib/systemd/system/waagent.service:[Service]\n",
        "--write",
        "/usr/local/bin/agent:x",
        "--write",
        "/etc/hostname:newname\n",
        "--link",
        "/usr/bin/newtool:/usr/bin/newtool-link",
        "--write",
        "/srv/agent/conf:y",
    ];
    args.extend_from_slice(extra);
    let o = common::onramp(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    guard.check();
    let root = dir.join("out.fs");
    std::fs::File::create(&root)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    dd(&out, 1 << 20, &root, 0, mib << 20);
    check_fs(kind, &root);
    (root, text)
}

/// Every created or replaced path, with the label the policy gives it.
const EXPECTED: &[(&str, &str)] = &[
    ("/usr/bin/newtool", "system_u:object_r:bin_t:s0"),
    ("/usr/bin/newtool-link", "system_u:object_r:bin_t:s0"),
    (
        "/etc/systemd/system/agent.service",
        "system_u:object_r:systemd_unit_file_t:s0",
    ),
    ("/etc/systemd", "system_u:object_r:etc_t:s0"),
    ("/var/lib/waagent", "system_u:object_r:waagent_var_lib_t:s0"),
    (
        "/var/lib/waagent/events",
        "system_u:object_r:waagent_var_lib_t:s0",
    ),
    (
        "/usr/lib/systemd/system/waagent.service",
        "system_u:object_r:waagent_unit_file_t:s0",
    ),
    ("/usr/lib", "system_u:object_r:usr_t:s0"),
    ("/usr/local/bin", "system_u:object_r:bin_t:s0"),
    ("/usr/local/bin/agent", "system_u:object_r:bin_t:s0"),
    ("/etc/hostname", "system_u:object_r:hostname_etc_t:s0"),
    ("/srv", "system_u:object_r:default_t:s0"),
    ("/srv/agent/conf", "system_u:object_r:agent_local_t:s0"),
];

fn labels_from_file_contexts(kind: &str) {
    if !require(tools(kind)) {
        return;
    }
    let dir = tempdir();
    let (root, text) = customize(kind, dir.path(), true, &[]);
    assert!(
        text.contains("labelled 18 files from /etc/selinux/targeted/contexts/files/file_contexts (no relabel at boot needed)"),
        "{text}"
    );
    assert!(
        text.contains("label /usr/bin/newtool system_u:object_r:bin_t:s0"),
        "{text}"
    );
    for (p, ctx) in EXPECTED {
        assert_eq!(
            label_of(kind, &root, p).as_deref(),
            Some(*ctx),
            "{kind} {p}"
        );
    }
    // Untouched files keep no label (the fixture had none); no relabel at boot.
    assert_eq!(label_of(kind, &root, "/usr/bin/bash"), None);
    assert!(!exists(kind, &root, "/.autorelabel"), "{text}");
    eprintln!("{kind}: labels read back with {}", tools(kind)[1]);
}

#[test]
fn ext4_labels_from_file_contexts() {
    labels_from_file_contexts("ext4");
}

#[test]
fn xfs_labels_from_file_contexts() {
    labels_from_file_contexts("xfs");
}

/// A path the policy leaves `<<none>>` cannot be labelled: labels for the
/// rest, and /.autorelabel for a full relabel at boot.
#[test]
fn unlabelled_path_falls_back_to_autorelabel() {
    if !require(tools("ext4")) {
        return;
    }
    let dir = tempdir();
    let (root, text) = customize("ext4", dir.path(), true, &["--write", "/tmp/scratch:z"]);
    assert!(text.contains("/tmp/scratch"), "{text}");
    assert!(text.contains("wrote /.autorelabel"), "{text}");
    assert!(exists("ext4", &root, "/.autorelabel"));
    assert_eq!(label_of("ext4", &root, "/tmp/scratch"), None);
    assert_eq!(
        label_of("ext4", &root, "/usr/bin/newtool").as_deref(),
        Some("system_u:object_r:bin_t:s0")
    );
}

/// Only the compiled file_contexts.bin: relabel at boot, as before.
#[test]
fn no_text_file_contexts_falls_back_to_autorelabel() {
    if !require(tools("xfs")) {
        return;
    }
    let dir = tempdir();
    let (root, text) = customize("xfs", dir.path(), false, &[]);
    assert!(text.contains("no readable text"), "{text}");
    assert!(exists("xfs", &root, "/.autorelabel"));
    assert_eq!(label_of("xfs", &root, "/usr/bin/newtool"), None);
}

/// `--selinux-relabel` forces the relabel at boot and writes no labels.
#[test]
fn selinux_relabel_flag_forces_autorelabel() {
    if !require(tools("ext4")) {
        return;
    }
    let dir = tempdir();
    let (root, text) = customize("ext4", dir.path(), true, &["--selinux-relabel"]);
    assert!(text.contains("--selinux-relabel"), "{text}");
    assert!(exists("ext4", &root, "/.autorelabel"));
    assert_eq!(label_of("ext4", &root, "/usr/bin/newtool"), None);
}
