//! `onramp boot-test` end to end: build a small bootable Debian bookworm disk
//! with scripts/make-bootable-debian (debootstrap minbase + cloud kernel, no boot
//! loader, cached under target/boot-cache), boot it by direct kernel boot under
//! TCG, and check the artifact is unchanged (sha256). Skipped with a message when
//! debootstrap / qemu-system-x86_64 / qemu-img are missing, unless CI=true.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOOLS: &[&str] = &["debootstrap", "qemu-system-x86_64", "qemu-img", "mkfs.ext4"];

fn build_image(dir: &Path) -> PathBuf {
    let out = dir.join("debian.qcow2");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-bootable-debian");
    let started = std::time::Instant::now();
    let o = Command::new(&script)
        .arg(&out)
        .output()
        .expect("run make-bootable-debian");
    assert!(
        o.status.success(),
        "make-bootable-debian failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "make-bootable-debian: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn debian_boots_and_checks_pass_and_fail() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = build_image(dir.path());
    let before = sha256_file(&img);
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    let log = dir.path().join("console.log");

    // Positive: TCG, userspace + the image's marker unit (by name and by its
    // Description) + the line it prints.
    let started = std::time::Instant::now();
    let o = onramp(&[
        "boot-test",
        s(&img),
        "--accel",
        "tcg",
        "--timeout",
        "600",
        "--expect-unit",
        "onramp-hello",
        "--expect-unit",
        "onramp boot marker",
        "--expect-serial",
        r"onramp-hello: guest userspace is up",
        "--console-log",
        s(&log),
        "--json",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "boot-test failed:\n{out}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["boot_path"], "direct");
    assert_eq!(v["accel"], "tcg");
    assert!(v["cmdline"].as_str().unwrap().contains("console=ttyS0"));
    assert_eq!(v["checks"].as_array().unwrap().len(), 4);
    eprintln!(
        "TCG boot to all checks: {} s in qemu ({:.1} s wall)",
        v["seconds"],
        started.elapsed().as_secs_f64()
    );
    // The console log is the real serial output.
    let console = std::fs::read_to_string(&log).unwrap();
    assert!(console.contains("Linux version"), "{console}");
    assert_eq!(sha256_file(&img), before, "boot-test modified the artifact");
    assert_eq!(std::fs::metadata(&img).unwrap().modified().unwrap(), mtime);

    // Negative: a unit that does not exist. Userspace comes up, the unit never
    // does: exit 1 after the settle time, with the console tail printed.
    let o = onramp(&[
        "boot-test",
        s(&img),
        "--timeout",
        "600",
        "--settle",
        "3",
        "--expect-unit",
        "nonexistent",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("MISS unit nonexistent"), "{out}");
    assert!(out.contains("last 30 console lines:"), "{out}");
    assert!(out.contains("  | "), "{out}");
    eprintln!("negative run:\n{out}");
    assert_eq!(sha256_file(&img), before, "boot-test modified the artifact");
}

#[test]
fn bad_input_is_exit_2() {
    let dir = tempdir();
    // Not an image at all: a file too small for any format.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, b"hello").unwrap();
    let o = onramp(&["boot-test", s(&junk), "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A bad regex.
    let raw = dir.path().join("empty.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let o = onramp(&["boot-test", s(&raw), "--expect-serial", "("]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A blank disk: nothing to boot.
    let o = onramp(&["boot-test", s(&raw)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Missing file.
    let o = onramp(&["boot-test", s(&dir.path().join("absent.qcow2"))]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
}
