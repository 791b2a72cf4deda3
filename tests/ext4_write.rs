//! ext4 writer through `onramp customize`: judged by e2fsck -fn and debugfs.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOOLS: &[&str] = &["mkfs.ext4", "e2fsck", "debugfs", "sfdisk"];

/// A guest tree, an ext4 partition made with `mkfs.ext4 -d` and `opts`, in an MBR disk.
fn disk(dir: &Path, name: &str, mib: u64, opts: &[&str], big_dir: usize) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("big")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=debian\n").unwrap();
    std::fs::write(
        tree.join("etc/fstab"),
        "UUID=x / ext4 defaults 0 1\n/swap none swap sw 0 0\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/keep"), pattern(3, 50_000)).unwrap();
    for i in 0..big_dir {
        std::fs::write(tree.join(format!("big/entry_with_a_long_name_{i}")), "x").unwrap();
    }
    let part = dir.join(format!("{name}.part"));
    let f = std::fs::File::create(&part).unwrap();
    f.set_len(mib << 20).unwrap();
    let mut args: Vec<&str> = vec!["-q", "-F", "-E", "root_owner=0:0", "-d"];
    let t = tree.to_str().unwrap().to_string();
    args.push(&t);
    args.extend_from_slice(opts);
    args.push(part.to_str().unwrap());
    let o = Command::new("mkfs.ext4").args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "mkfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let img = dir.join(format!("{name}.img"));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len((mib + 1) << 20).unwrap();
    drop(f);
    let mut c = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, type=83\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let data = std::fs::read(&part).unwrap();
    let fh = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    fh.write_all_at(&data, 1 << 20).unwrap();
    img
}

fn extract(raw: &Path, out: &Path) {
    let d = std::fs::read(raw).unwrap();
    std::fs::write(out, &d[1 << 20..]).unwrap();
}

fn fsck_ok(part: &Path) {
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(part)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn debugfs(part: &Path, req: &str) -> Vec<u8> {
    Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(part)
        .output()
        .unwrap()
        .stdout
}

fn customize_and_check(name: &str, mib: u64, opts: &[&str], big: usize) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = disk(dir.path(), name, mib, opts, big);
    let before = dir.path().join("before.part");
    extract(&img, &before);
    let guard = InputGuard::new(&img);
    let up = dir.path().join("up.bin");
    let updata = pattern(9, 300_000);
    std::fs::write(&up, &updata).unwrap();
    let out = dir.path().join("out.raw");
    let long = "t".repeat(100);
    onramp_ok(&[
        "customize",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "raw",
        "--write",
        "/etc/hello:hi there",
        "--mkdir",
        "/opt/a/b",
        "--upload",
        &format!("{}:/opt/a/up.bin", up.display()),
        "--link",
        "/etc/hello:/opt/fast",
        "--link",
        &format!("{long}:/opt/slow"),
        "--chmod",
        "0600:/etc/hello",
        "--write",
        "/big/new_entry:new",
        "--hostname",
        "myhost",
        "--no-swap",
        "--delete",
        "/big/entry_with_a_long_name_3",
    ]);
    guard.check();
    let part = dir.path().join("after.part");
    extract(&out, &part);
    fsck_ok(&part);
    assert_eq!(debugfs(&part, "cat /etc/hello"), b"hi there");
    assert_eq!(debugfs(&part, "cat /etc/hostname"), b"myhost\n");
    assert_eq!(debugfs(&part, "cat /opt/a/up.bin"), updata);
    assert_eq!(debugfs(&part, "cat /big/new_entry"), b"new");
    assert_eq!(
        debugfs(&part, "cat /etc/keep"),
        debugfs(&before, "cat /etc/keep")
    );
    let st = String::from_utf8_lossy(&debugfs(&part, "stat /etc/hello")).into_owned();
    assert!(st.contains("Mode:  0600"), "{st}");
    let st = String::from_utf8_lossy(&debugfs(&part, "stat /opt/fast")).into_owned();
    assert!(st.contains("Fast link dest: \"/etc/hello\""), "{st}");
    let st = String::from_utf8_lossy(&debugfs(&part, "stat /opt/slow")).into_owned();
    assert!(st.contains("Size: 100"), "{st}");
    let fstab = String::from_utf8_lossy(&debugfs(&part, "cat /etc/fstab")).into_owned();
    assert!(fstab.contains("# disabled by onramp"), "{fstab}");
    let ls = String::from_utf8_lossy(&debugfs(&part, "ls /big")).into_owned();
    // A removed entry first in its block keeps its slot with inode 0 (as the kernel
    // does), so check by lookup rather than by listing.
    assert!(debugfs(&part, "stat /big/entry_with_a_long_name_3").is_empty());
    assert!(ls.contains("entry_with_a_long_name_4"));
}

#[test]
fn default_4k() {
    customize_and_check("d4k", 32, &[], 20);
}
#[test]
fn blocks_1k() {
    customize_and_check("d1k", 32, &["-b", "1024"], 20);
}
#[test]
fn no_metadata_csum() {
    customize_and_check("nocsum", 32, &["-O", "^metadata_csum"], 20);
}
#[test]
fn no_64bit() {
    customize_and_check("no64", 32, &["-O", "^64bit"], 20);
}
#[test]
fn no_flex_bg() {
    customize_and_check("noflex", 32, &["-b", "1024", "-O", "^flex_bg"], 20);
}
#[test]
fn no_dir_index() {
    customize_and_check("nodx", 32, &["-O", "^dir_index"], 300);
}
#[test]
fn no_journal() {
    customize_and_check("nojournal", 32, &["-O", "^has_journal"], 20);
}
#[test]
fn htree_directory() {
    customize_and_check("htree", 48, &["-b", "1024"], 3000);
}

fn refused(name: &str, opts: &[&str], tweak: Option<&str>, want: &str) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = disk(dir.path(), name, 16, opts, 0);
    if let Some(t) = tweak {
        // Patch the superblock with debugfs (it recomputes the checksum), then put it back.
        let part = dir.path().join("p.part");
        extract(&img, &part);
        let o = Command::new("debugfs")
            .args(["-w", "-R", t])
            .arg(&part)
            .output()
            .unwrap();
        assert!(o.status.success());
        let data = std::fs::read(&part).unwrap();
        use std::os::unix::fs::FileExt;
        let fh = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        fh.write_all_at(&data, 1 << 20).unwrap();
    }
    let out = dir.path().join("out.raw");
    let o = onramp(&[
        "customize",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "raw",
        "--write",
        "/etc/x:y",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(want), "{err}");
    assert!(!out.exists());
}

#[test]
fn refuses_recovery() {
    refused(
        "rec",
        &[],
        Some("feature needs_recovery"),
        "journal needs recovery",
    );
}
#[test]
fn refuses_errors() {
    refused("err", &[], Some("ssv state 3"), "errors recorded");
}
#[test]
fn refuses_inline_data() {
    refused("inl", &["-O", "inline_data"], None, "inline_data");
}

#[test]
fn nearly_full() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = disk(dir.path(), "full", 8, &["-m", "0"], 0);
    let out = dir.path().join("out.raw");
    let huge = dir.path().join("huge.bin");
    std::fs::write(&huge, pattern(1, 9 << 20)).unwrap();
    let o = onramp(&[
        "customize",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "raw",
        "--upload",
        &format!("{}:/huge", huge.display()),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("ENOSPC"));
    assert!(!out.exists());
    let small = dir.path().join("small.bin");
    std::fs::write(&small, pattern(2, 1 << 20)).unwrap();
    onramp_ok(&[
        "customize",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "raw",
        "--upload",
        &format!("{}:/small", small.display()),
    ]);
    let part = dir.path().join("after.part");
    extract(&out, &part);
    fsck_ok(&part);
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

/// Hard links, owners, times and xattrs through `onramp customize`, read back by debugfs.
fn new_ops(name: &str, opts: &[&str]) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = disk(dir.path(), name, 32, opts, 0);
    let before = dir.path().join("before.part");
    extract(&img, &before);
    let guard = InputGuard::new(&img);
    let out = dir.path().join("out.raw");
    let big = "v".repeat(600);
    let small_inodes = opts.contains(&"128");
    // Past 2038 needs the epoch bits of i_mtime_extra (256-byte inodes only).
    let far = if small_inodes {
        2_000_000_000
    } else {
        2_500_000_000u64
    };
    onramp_ok(&[
        "customize",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "raw",
        "--write",
        "/etc/doomed:x",
        "--hardlink",
        "/etc/keep:/opt/keep2",
        "--hardlink",
        "/etc/os-release:/etc/os-link",
        "--hardlink",
        "/etc/doomed:/etc/doomed2",
        "--chown",
        "1000:1001:/etc/keep",
        "--chown",
        "70000:70001:/etc/fstab",
        "--set-times",
        "/etc/keep:1700000000",
        "--set-times",
        &format!("/etc/fstab:{far}"),
        "--xattr",
        "/etc/keep:user.foo=bar",
        "--xattr",
        "/etc/keep:security.selinux=system_u:object_r:etc_t:s0",
        "--xattr",
        "/etc/keep:user.foo=baz",
        "--xattr",
        &format!("/etc/fstab:user.big={big}"),
        "--xattr",
        "/etc/fstab:trusted.t=1",
        "--xattr",
        &format!("/etc/doomed:user.big={big}"),
        "--delete",
        "/etc/doomed",
        "--delete",
        "/etc/os-link",
    ]);
    guard.check();
    let part = dir.path().join("after.part");
    extract(&out, &part);
    fsck_ok(&part);
    let st = text(debugfs(&part, "stat /etc/keep"));
    assert!(st.contains("Links: 2"), "{st}");
    assert!(st.contains("User:  1000   Group:  1001"), "{st}");
    assert!(st.contains("mtime: 0x6553f100"), "{st}");
    assert!(st.contains("atime: 0x6553f100"), "{st}");
    let ino = |p: &str| {
        let s = text(debugfs(&part, &format!("stat {p}")));
        s.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(ino("/etc/keep"), ino("/opt/keep2"));
    assert_eq!(
        debugfs(&part, "cat /opt/keep2"),
        debugfs(&before, "cat /etc/keep")
    );
    let st = text(debugfs(&part, "stat /etc/os-release"));
    assert!(st.contains("Links: 1"), "{st}");
    let st = text(debugfs(&part, "stat /etc/doomed2"));
    assert!(st.contains("Links: 1"), "{st}");
    let st = text(debugfs(&part, "stat /etc/fstab"));
    assert!(st.contains("User: 70000   Group: 70001"), "{st}");
    assert!(
        st.contains(if small_inodes { "2033" } else { "2049" }),
        "{st}"
    );
    let ea = text(debugfs(&part, "ea_list /etc/keep"));
    assert!(ea.contains("user.foo (3) = \"baz\""), "{ea}");
    assert!(!ea.contains("bar"), "{ea}");
    assert!(
        ea.contains("security.selinux (27) = \"system_u:object_r:etc_t:s0\\000\""),
        "{ea}"
    );
    let ea = text(debugfs(&part, "ea_list /etc/fstab"));
    assert!(ea.contains("user.big (600)"), "{ea}");
    assert!(ea.contains("trusted.t (1) = \"1\""), "{ea}");
    assert!(
        !st.contains("File ACL: 0"),
        "600-byte value lands in a block: {st}"
    );
    let got = text(debugfs(&part, "ea_get /etc/fstab user.big"));
    assert!(
        got.contains(&format!("user.big (600) = \"{big}\"")),
        "{got}"
    );
}

#[test]
fn new_ops_4k() {
    new_ops("ops4k", &[]);
}
#[test]
fn new_ops_1k() {
    new_ops("ops1k", &["-b", "1024"]);
}
#[test]
fn new_ops_no_csum() {
    new_ops("opsnocsum", &["-O", "^metadata_csum"]);
}
#[test]
fn new_ops_small_inodes() {
    new_ops("ops128", &["-I", "128", "-O", "^metadata_csum"]);
}

#[test]
fn hardlink_to_directory_refused() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = disk(dir.path(), "hld", 16, &[], 0);
    let out = dir.path().join("out.raw");
    let o = onramp(&[
        "customize",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "raw",
        "--hardlink",
        "/etc:/etc2",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("directory"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
}

#[test]
fn agent_bundle_owners_land() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = disk(dir.path(), "own", 16, &[], 0);
    let b = dir.path().join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("a.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(
        b.join("agent.yaml"),
        "name: owners\nversion: \"1\"\nfiles:\n  - {src: a.sh, dest: /usr/lib/x/a.sh, mode: \"0750\", owner: \"1234:70000\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out.raw");
    onramp_ok(&[
        "customize",
        img.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "raw",
        "--agent",
        b.to_str().unwrap(),
    ]);
    let part = dir.path().join("after.part");
    extract(&out, &part);
    fsck_ok(&part);
    let st = text(debugfs(&part, "stat /usr/lib/x/a.sh"));
    assert!(st.contains("User:  1234   Group: 70000"), "{st}");
    assert!(st.contains("Mode:  0750"), "{st}");
}
