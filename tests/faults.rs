//! Nothing lost under faults (issue 12): SIGKILL at random points of `convert`
//! and `build` leaves nothing under the final name and a rerun succeeds; a full
//! output filesystem gives a clean error and no partial file; no output is
//! replaced without `--force`; and (strace) no host file outside the input is
//! opened when an image names a backing file, a parent or an OVA member outside
//! its directory.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A raw disk of `mib` MiB that is dense with data (so conversion takes a while).
fn dense_raw(path: &Path, mib: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(mib << 20).unwrap();
    let block = pattern(7, 1 << 20);
    for i in 0..mib {
        // Leave every fourth MiB a hole.
        if i % 4 != 3 {
            f.write_all_at(&block, i << 20).unwrap();
        }
    }
}

/// Files in `dir` other than the inputs named in `keep`.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    v.sort();
    v
}

/// Start `onramp args`, SIGKILL it after `delay`; true if it was still running.
fn kill_after(args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(onramp_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    running
}

/// Delays spread over a run: a small deterministic pseudo-random set.
fn delays() -> Vec<Duration> {
    let r = pattern(12, 6);
    [3u64, 15, 60, 150, 400, 1000]
        .iter()
        .zip(r)
        .map(|(ms, j)| Duration::from_millis(ms + u64::from(j) % 37))
        .collect()
}

#[test]
fn sigkill_convert_leaves_nothing_and_rerun_succeeds() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = d.path().join("in.raw");
    // Large enough, and hashed twice, that most kills land mid-way even on a
    // quiet machine where the conversion itself is fast.
    dense_raw(&src, 128);
    let guard = InputGuard::new(&src);
    let out = d.path().join("out.vhd");
    let mut killed = 0;
    for delay in delays() {
        let running = kill_after(
            &[
                "convert",
                s(&src),
                s(&out),
                "--to",
                "azure-vhd",
                "--digest",
                "sha256",
                "--digest",
                "md5",
            ],
            delay,
        );
        if running {
            killed += 1;
            assert!(
                !out.exists(),
                "killed after {delay:?}: {} exists",
                out.display()
            );
        } else {
            // Finished before the kill: the output is complete.
            assert!(qemu_compare(&src, "raw", &out, "vpc"));
            std::fs::remove_file(&out).unwrap();
        }
        // A rerun after the kill succeeds (stale temp files do not block it).
        onramp_ok(&["convert", s(&src), s(&out), "--to", "azure-vhd"]);
        assert!(qemu_compare(&src, "raw", &out, "vpc"));
        std::fs::remove_file(&out).unwrap();
    }
    assert!(killed >= 2, "too few runs were killed mid-way ({killed})");
    guard.check();
}

#[test]
fn sigkill_build_leaves_nothing_and_rerun_succeeds() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = d.path().join("src.raw");
    dense_raw(&src, 48);
    let guard = InputGuard::new(&src);
    let recipe = d.path().join("k.yaml");
    std::fs::write(
        &recipe,
        "name: k\nsource:\n  path: src.raw\ntarget:\n  format: azure-vhd\noutput:\n  dir: out\n",
    )
    .unwrap();
    let art = d.path().join("out/k.vhd");
    let manifest = d.path().join("out/k.vhd.manifest.json");
    let mut killed = 0;
    for delay in delays() {
        if kill_after(&["build", s(&recipe), "--rebuild"], delay) {
            killed += 1;
            // Either nothing, or a complete earlier artifact with its manifest.
            if art.exists() {
                assert!(manifest.exists(), "artifact without manifest after kill");
                assert!(qemu_compare(&src, "raw", &art, "vpc"));
            }
        }
        onramp_ok(&["build", s(&recipe), "--rebuild"]);
        assert!(qemu_compare(&src, "raw", &art, "vpc"));
        assert!(manifest.exists());
        // Start the next round from nothing, so "nothing under the final name" is checked.
        std::fs::remove_file(&art).unwrap();
        std::fs::remove_file(&manifest).unwrap();
    }
    assert!(killed >= 2, "too few builds were killed mid-way ({killed})");
    let left: Vec<String> = leftovers(&d.path().join("out"), &[])
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "visible leftovers in out/: {left:?}");
    guard.check();
}

/// A small filesystem to fill: a tmpfs when we may mount one (root), else None.
struct SmallFs {
    dir: PathBuf,
    mounted: bool,
}

impl SmallFs {
    fn new(parent: &Path) -> SmallFs {
        let dir = parent.join("small");
        std::fs::create_dir(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs", s(&dir)])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        SmallFs { dir, mounted }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}

#[test]
fn out_of_space_is_a_clean_error_without_partial_file() {
    let d = tempdir();
    let src = d.path().join("in.raw");
    dense_raw(&src, 24);
    let guard = InputGuard::new(&src);
    let small = SmallFs::new(d.path());
    for to in ["raw", "azure-vhd", "qcow2", "vhdx"] {
        let out = small.dir.join(format!("out.{to}"));
        let o = if small.mounted {
            // ENOSPC on an 8 MiB tmpfs.
            Command::new(onramp_bin())
                .args(["convert", s(&src), s(&out), "--to", to])
                .output()
                .unwrap()
        } else {
            // Not allowed to mount: a file size limit (EFBIG) stands in for ENOSPC.
            eprintln!("no tmpfs mount (not root?): using prlimit --fsize");
            Command::new("prlimit")
                .arg("--fsize=8388608")
                .arg(onramp_bin())
                .args(["convert", s(&src), s(&out), "--to", to])
                .output()
                .unwrap()
        };
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{to}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{to}: one line: {err}");
        assert!(!err.contains("panicked"), "{to}: {err}");
        assert!(
            leftovers(&small.dir, &[]).is_empty(),
            "{to}: partial files left: {:?}",
            leftovers(&small.dir, &[])
        );
    }
    guard.check();
}

#[test]
fn no_overwrite_without_force() {
    let d = tempdir();
    let src = d.path().join("in.raw");
    make_raw_with_holes(&src, 3 << 20);
    let targets = [
        "azure-vhd",
        "raw",
        "vhd-dynamic",
        "vhdx",
        "qcow2",
        "vmdk-stream",
        "gce-tar",
    ];
    for to in targets {
        let out = d.path().join(format!("existing.{to}"));
        std::fs::write(&out, b"precious").unwrap();
        let o = onramp(&["convert", s(&src), s(&out), "--to", to]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{to}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
        assert_eq!(std::fs::read(&out).unwrap(), b"precious", "{to} overwrote");
        onramp_ok(&["convert", s(&src), s(&out), "--to", to, "--force"]);
        assert_ne!(std::fs::read(&out).unwrap(), b"precious");
    }
}

/// Paths `onramp args` tried to open (strace -f), with the exit code: every
/// attempt, and those that succeeded.
fn opened(args: &[&str], log: &Path) -> (Option<i32>, Vec<String>, Vec<String>) {
    let st = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,open,openat2,creat",
            "-o",
            s(log),
        ])
        .arg(onramp_bin())
        .args(args)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    let path_of = |l: &str| {
        let a = l.find('"')?;
        let b = l[a + 1..].find('"')? + a + 1;
        Some(l[a + 1..b].to_string())
    };
    let tried = text.lines().filter_map(path_of).collect();
    // The loader probes LD_LIBRARY_PATH (cargo's build dirs): only opens that
    // succeeded count as files read.
    let ok = text
        .lines()
        .filter(|l| !l.contains("= -1 "))
        .filter_map(path_of)
        .collect();
    (st.status.code(), tried, ok)
}

/// System paths any process opens (loader, libc, /proc, /sys, /dev).
fn system_path(p: &str) -> bool {
    ["/lib", "/usr/lib", "/etc/ld.so", "/proc/", "/sys/", "/dev/"]
        .iter()
        .any(|pre| p.starts_with(pre))
}

/// Assert no decoy was even tried, and every path opened is a system path,
/// the input, or inside `out_dir`.
fn assert_only(tried: &[String], paths: &[String], input: &Path, out_dir: &Path, decoys: &[&Path]) {
    for p in tried {
        for dcy in decoys {
            assert!(
                !p.contains(&*dcy.file_name().unwrap().to_string_lossy()),
                "tried to open decoy {p}"
            );
        }
    }
    for p in paths {
        let ok = system_path(p) || Path::new(p) == input || Path::new(p).starts_with(out_dir);
        assert!(ok, "opened a host file outside the input: {p}");
    }
}

/// Fix the VHD footer checksum of the 512 bytes at `at`.
fn vhd_footer_sum(b: &mut [u8], at: usize) {
    b[at + 64..at + 68].fill(0);
    let sum = b[at..at + 512]
        .iter()
        .fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
    b[at + 64..at + 68].copy_from_slice(&(!sum).to_be_bytes());
}

/// Turn a qemu-made dynamic VHD into a differencing one whose parent locator
/// (platform code W2ku, absolute path, UTF-16LE) names `parent`.
fn make_differencing(vhd: &Path, parent: &str) {
    let mut b = std::fs::read(vhd).unwrap();
    let n = b.len();
    let dynh = u64::from_be_bytes(b[16..24].try_into().unwrap()) as usize;
    for at in [0, n - 512] {
        b[at + 60..at + 64].copy_from_slice(&4u32.to_be_bytes());
        vhd_footer_sum(&mut b, at);
    }
    // Parent unique id (+40) and name (+64, UTF-16BE).
    b[dynh + 40..dynh + 56].copy_from_slice(&[0x11; 16]);
    let name: Vec<u8> = parent.encode_utf16().flat_map(u16::to_be_bytes).collect();
    b[dynh + 64..dynh + 64 + name.len()].copy_from_slice(&name);
    // Locator data in the header's reserved tail (+768, 256 bytes).
    let data: Vec<u8> = parent.encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert!(data.len() <= 256);
    let data_at = dynh + 768;
    b[data_at..data_at + data.len()].copy_from_slice(&data);
    let loc = dynh + 576;
    b[loc..loc + 4].copy_from_slice(b"W2ku");
    b[loc + 4..loc + 8].copy_from_slice(&1u32.to_be_bytes()); // data space: sectors
    b[loc + 8..loc + 12].copy_from_slice(&(data.len() as u32).to_be_bytes());
    b[loc + 16..loc + 24].copy_from_slice(&(data_at as u64).to_be_bytes());
    // Dynamic header checksum (+36) over 1024 bytes.
    b[dynh + 36..dynh + 40].fill(0);
    let sum = b[dynh..dynh + 1024]
        .iter()
        .fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
    b[dynh + 36..dynh + 40].copy_from_slice(&(!sum).to_be_bytes());
    std::fs::write(vhd, b).unwrap();
}

#[test]
fn strace_no_host_file_outside_the_input_is_opened() {
    if !require(&["strace", "qemu-img", "tar"]) {
        return;
    }
    let d = tempdir();
    let outside = d.path().join("outside");
    let imgs = d.path().join("imgs");
    let outdir = d.path().join("outdir");
    for p in [&outside, &imgs, &outdir] {
        std::fs::create_dir(p).unwrap();
    }
    let raw = outside.join("decoy-parent.raw");
    make_raw_with_holes(&raw, 2 << 20);
    let base = outside.join("decoy-base.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&raw),
        s(&base),
    ]);
    let log = d.path().join("strace.log");

    // qcow2 whose backing file is outside the image directory (absolute and relative).
    let mut cases: Vec<PathBuf> = Vec::new();
    let ov = imgs.join("overlay-abs.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&ov),
    ]);
    cases.push(ov);
    let ov = imgs.join("overlay-rel.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "../outside/decoy-base.qcow2",
        "-F",
        "qcow2",
        "-o",
        "size=2M",
        s(&ov),
    ]);
    cases.push(ov);
    // Differencing VHD whose parent is outside.
    let parent = outside.join("decoy-parent.vhd");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "force_size=on",
        s(&raw),
        s(&parent),
    ]);
    let diff = imgs.join("diff.vhd");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "force_size=on",
        s(&raw),
        s(&diff),
    ]);
    make_differencing(&diff, s(&parent));
    cases.push(diff);
    // OVA whose OVF names a disk outside the archive.
    let stage = d.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    let stream = stage.join("disk.vmdk");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&raw),
        s(&stream),
    ]);
    let href = s(&outside.join("decoy-disk.vmdk")).to_string();
    std::fs::copy(&stream, outside.join("decoy-disk.vmdk")).unwrap();
    std::fs::write(
        stage.join("x.ovf"),
        format!(
            "<?xml version=\"1.0\"?>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
             xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\"><References>\
             <File ovf:href=\"{href}\" ovf:id=\"f1\"/></References><DiskSection>\
             <Disk ovf:capacity=\"2097152\" ovf:diskId=\"d1\" ovf:fileRef=\"f1\" \
             ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\
             </DiskSection></Envelope>\n"
        ),
    )
    .unwrap();
    let ova = imgs.join("x.ova");
    run(
        "tar",
        &[
            "--format=ustar",
            "-C",
            s(&stage),
            "-cf",
            s(&ova),
            "x.ovf",
            "disk.vmdk",
        ],
    );
    cases.push(ova);

    let decoys = [
        base.as_path(),
        raw.as_path(),
        parent.as_path(),
        Path::new("decoy-disk.vmdk"),
    ];
    for img in &cases {
        for extra in [&[][..], &["--allow-backing"][..]] {
            let out = outdir.join("o.raw");
            let _ = std::fs::remove_file(&out);
            let mut args = vec!["convert", s(img), s(&out), "--to", "raw"];
            args.extend_from_slice(extra);
            let (code, tried, paths) = opened(&args, &log);
            assert_eq!(
                code,
                Some(2),
                "{} {extra:?}: must be refused",
                img.display()
            );
            assert_only(&tried, &paths, img, &outdir, &decoys);
            assert!(
                paths.iter().any(|p| Path::new(p) == img.as_path()),
                "strace saw no open of the input itself: {paths:?}"
            );
        }
    }
}
