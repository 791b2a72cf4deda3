//! Shared test helpers: oracle tools, fixture generation, input guards.
//!
//! Fixtures are built at test time with qemu-img, mkfs.ext4 -d and sfdisk.
//! A test that needs a tool calls [`require`]: when the tool is missing it
//! fails loudly under CI=true and is skipped (with a message) elsewhere.
#![allow(dead_code)]

pub mod lvm;
pub mod rpm;
pub mod windows;
pub mod winimg;
pub mod xfs;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True when running under CI (tools must be present).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn find_tool(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// Check that every tool is on PATH. Missing under CI: panic. Missing
/// elsewhere: print why and return false so the test can return early.
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !find_tool(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!("required oracle tool(s) missing in CI: {missing:?} (.ci/run must install them)");
    }
    eprintln!("SKIPPED: missing tool(s) {missing:?}");
    false
}

/// Run a command, panic with its stderr unless it succeeds; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let mut c = Command::new(cmd);
    c.args(args).env("PATH", path_with_sbin());
    let out = c.output().unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command and return its whole Output (for tests that expect failure).
pub fn run_output(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("PATH", path_with_sbin())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"))
}

fn path_with_sbin() -> String {
    let p = std::env::var("PATH").unwrap_or_default();
    format!("{p}:/usr/sbin:/sbin")
}

/// `qemu-img ARGS`, must succeed.
pub fn qemu_img(args: &[&str]) -> String {
    run("qemu-img", args)
}

/// `qemu-img compare -f FA -F FB A B` succeeded (identical contents).
pub fn qemu_compare(a: &Path, fa: &str, b: &Path, fb: &str) -> bool {
    let out = run_output("qemu-img", &["compare", "-f", fa, "-F", fb, s(a), s(b)]);
    out.status.success()
}

/// Path as &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The onramp binary under test.
pub fn onramp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_onramp"))
}

/// Run onramp with `args`.
pub fn onramp(args: &[&str]) -> Output {
    Command::new(onramp_bin())
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("spawn onramp")
}

/// Run onramp and insist on exit 0; returns stdout.
pub fn onramp_ok(args: &[&str]) -> String {
    let out = onramp(args);
    assert!(
        out.status.success(),
        "onramp {args:?} exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(p: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(p).expect("open for sha256");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read for sha256");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Allocated bytes of a file on the host (st_blocks * 512).
pub fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).expect("stat").blocks() * 512
}

/// Records an input's sha256 and mtime; [`InputGuard::check`] asserts both unchanged.
pub struct InputGuard {
    path: PathBuf,
    sha: String,
    mtime: std::time::SystemTime,
}

impl InputGuard {
    /// Snapshot `p`.
    pub fn new(p: &Path) -> Self {
        InputGuard {
            path: p.to_path_buf(),
            sha: sha256_file(p),
            mtime: std::fs::metadata(p)
                .and_then(|m| m.modified())
                .expect("mtime"),
        }
    }
    /// Assert the input is unchanged.
    pub fn check(&self) {
        assert_eq!(
            sha256_file(&self.path),
            self.sha,
            "input {} was modified",
            self.path.display()
        );
        let m = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(m, self.mtime, "input {} mtime changed", self.path.display());
    }
}

/// Deterministic pseudo-random bytes (xorshift), so fixtures are reproducible.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A sparse raw file of `size` bytes with data at a few places (including
/// unaligned ones and the very end), and holes elsewhere.
pub fn make_raw_with_holes(path: &Path, size: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).expect("create raw");
    f.set_len(size).expect("set_len");
    let spots = [
        (0u64, 4096usize),
        (65536 + 512, 70_000),
        (size / 3, 1 << 20),
        (size / 2 + 1234, 5000),
    ];
    for (i, (off, len)) in spots.iter().enumerate() {
        let len = (*len as u64).min(size.saturating_sub(*off)) as usize;
        f.write_all_at(&pattern(i as u64 + 1, len), *off)
            .expect("write");
    }
    let tail = 777usize.min(size as usize);
    f.write_all_at(&pattern(99, tail), size - tail as u64)
        .expect("write tail");
}

/// A small ext4 root tree for fixtures.
pub fn make_root_tree(dir: &Path) {
    let w = |p: &str, c: &[u8]| {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(f, c).expect("write");
    };
    w(
        "etc/os-release",
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
    );
    w("etc/hostname", b"demo\n");
    w(
        "etc/fstab",
        b"UUID=0e6c1a5e-0000-4000-8000-000000000001 / ext4 errors=remount-ro 0 1\n",
    );
    w("boot/vmlinuz-6.1.0-demo", &pattern(7, 300_000));
    w("usr/share/doc/big.bin", &pattern(8, 2_000_000));
    for i in 0..50 {
        w(
            &format!("var/lib/many/file{i:03}"),
            format!("file {i}\n").as_bytes(),
        );
    }
}

/// An MBR disk of `size_mib` MiB with one ext4 partition at 1 MiB built with
/// `mkfs.ext4 -d` from [`make_root_tree`]. Needs mkfs.ext4 and sfdisk.
pub fn make_ext4_disk(dir: &Path, name: &str, size_mib: u64) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    make_root_tree(&tree);
    let part = dir.join(format!("{name}.part"));
    let part_mib = size_mib - 2;
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "root_owner=0:0",
            "-U",
            "0e6c1a5e-0000-4000-8000-000000000001",
            "-d",
            s(&tree),
            s(&part),
            &format!("{part_mib}M"),
        ],
    );
    let disk = dir.join(format!("{name}.raw"));
    let f = std::fs::File::create(&disk).expect("create disk");
    f.set_len(size_mib << 20).expect("set_len");
    drop(f);
    let script = format!(
        "label: dos\nstart=2048, size={}, type=83\n",
        part_mib * 2048
    );
    let mut c = Command::new("sfdisk")
        .env("PATH", path_with_sbin())
        .args(["--no-reread", "--no-tell-kernel", "-q", s(&disk)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn sfdisk");
    {
        use std::io::Write;
        c.stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("script");
    }
    assert!(c.wait().expect("sfdisk").success(), "sfdisk failed");
    run(
        "dd",
        &[
            &format!("if={}", s(&part)),
            &format!("of={}", s(&disk)),
            "bs=1M",
            "seek=1",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    std::fs::remove_file(&part).ok();
    disk
}

/// A fresh temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("onramp-test")
        .tempdir()
        .expect("tempdir")
}
pub mod convert;
