//! `onramp boot-test` end to end: build a small bootable Debian bookworm disk
//! with scripts/make-bootable-debian (debootstrap minbase + cloud kernel, no boot
//! loader, cached under target/boot-cache), `onramp build` a recipe that injects
//! the demo agent (fixtures/agents/azure-ready) into it, boot the artifact by
//! direct kernel boot under TCG, see the agent start on the serial console, and
//! check the artifact is unchanged (sha256). Two boots in all. Skipped with a
//! message when debootstrap / qemu-system-x86_64 / qemu-img are missing, unless
//! CI=true.

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

/// The recipe the end-to-end test builds: the bootable Debian image to an
/// Azure fixed VHD with the demo agent (fixtures/agents/azure-ready) injected.
fn agent_recipe(dir: &Path, source: &Path) -> PathBuf {
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/agents/azure-ready");
    let r = dir.join("boot-debian.yaml");
    std::fs::write(
        &r,
        format!(
            "name: boot-debian\n\
             source:\n  path: {}\n\
             target:\n  cloud: azure\n  format: azure-vhd\n\
             agent: {}\n\
             validate:\n  profile: azure\n  waivers:\n\
             \x20   - rule: azure.linux.console-ttys0\n\
             \x20     reason: no boot loader; boot-test boots it directly with console=ttyS0\n\
             \x20   - rule: azure.linux.sshd\n\
             \x20     reason: minbase test image without openssh-server\n\
             output:\n  dir: out\n",
            source.display(),
            agent.display()
        ),
    )
    .unwrap();
    r
}

/// The whole chain of issue #13, in two TCG boots: `onramp build` injects the
/// demo agent into the Debian image, `onramp boot-test` of the artifact sees
/// userspace, the image's own marker unit, and the agent's "onramp-agent:
/// started" line on the serial console; the artifact is unchanged. Then the
/// source image (no agent) booted with the same expectation fails with exit 1:
/// the marker comes from the injection, not from the image.
#[test]
fn built_image_with_injected_agent_boots_and_agent_starts() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let src = build_image(dir.path());
    let recipe = agent_recipe(dir.path(), &src);
    let started = std::time::Instant::now();
    let o = onramp(&["build", s(&recipe), "--json"]);
    assert_eq!(o.status.code(), Some(0), "build failed:\n{}", text(&o));
    eprintln!("onramp build: {:.1} s", started.elapsed().as_secs_f64());
    let img = dir.path().join("out/boot-debian.vhd");
    assert!(img.exists(), "{}", text(&o));
    let before = sha256_file(&img);
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    let log = dir.path().join("console.log");

    // Positive: TCG, userspace + the image's marker unit (by name and by its
    // Description) + its line + the injected agent's start marker.
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
        // No --expect-serial for the agent: injection recorded its marker in
        // the guest (/var/lib/onramp/boot-expect) and boot-test expects it by default.
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
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 5);
    let agent = checks
        .iter()
        .find(|c| c["what"] == "^onramp-agent: started$")
        .unwrap();
    assert_eq!(agent["passed"], true);
    eprintln!(
        "TCG boot to all checks: {} s in qemu ({:.1} s wall); agent started at {} s",
        v["seconds"],
        started.elapsed().as_secs_f64(),
        agent["at_seconds"]
    );
    // The console log is the real serial output: the kernel, systemd starting
    // the injected unit, and the agent's own line.
    let console = std::fs::read_to_string(&log).unwrap();
    assert!(console.contains("Linux version"), "{console}");
    assert!(
        console.contains("onramp-azure-read"),
        "systemd starts the injected unit:\n{console}"
    );
    assert!(console.contains("onramp-agent: started"), "{console}");
    assert_eq!(sha256_file(&img), before, "boot-test modified the artifact");
    assert_eq!(std::fs::metadata(&img).unwrap().modified().unwrap(), mtime);

    // Negative: the source image has no agent and no such unit. Userspace
    // comes up, the agent never does: exit 1 after the settle time, with the
    // console tail printed.
    let started = std::time::Instant::now();
    let o = onramp(&[
        "boot-test",
        s(&src),
        "--timeout",
        "600",
        "--settle",
        "3",
        "--expect-serial",
        r"^onramp-agent: started$",
        "--expect-unit",
        "nonexistent",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("MISS unit nonexistent"), "{out}");
    assert!(out.contains("MISS serial ^onramp-agent: started$"), "{out}");
    assert!(out.contains("last 30 console lines:"), "{out}");
    assert!(out.contains("  | "), "{out}");
    eprintln!(
        "negative run ({:.1} s wall):\n{out}",
        started.elapsed().as_secs_f64()
    );
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
