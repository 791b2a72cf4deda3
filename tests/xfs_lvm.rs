//! Root on a two-segment linear LV, with lvm2 itself as fixture builder and
//! oracle: `pvcreate`/`vgcreate`/`lvcreate`/`lvextend` lay the PV out on a
//! loop device over the image's partition (no activation: `--driverloaded n`,
//! so no device-mapper is needed); after `onramp customize`, lvm2 reads the
//! output image back through a read-only loop device (`vgck`, `lvs` segment
//! map), the LV is extracted along lvm2's map and judged by `xfs_repair -n`
//! and `xfs_db`, and onramp's own map of the LV must equal lvm2's.
//!
//! When loop devices or lvm2 do not work here (no root, no /dev/loop*), the
//! test says so and stops: the hand-built PV of xfs_write.rs
//! `root_on_a_two_segment_linear_lv` (extraction + xfs_repair -n) is then the
//! oracle that ran.

mod common;

use common::xfs::db_field;
use common::{onramp_ok, pattern, require, run_output, s, tempdir, InputGuard};
use std::path::{Path, PathBuf};
use std::process::Output;

const MIB: u64 = 1 << 20;
/// The partition holding the PV starts at 1 MiB and has this size.
const PART_MIB: u64 = 330;

/// lvm2 confined to one device, with no backups in /etc/lvm.
struct Lvm {
    sysdir: tempfile::TempDir,
}

impl Lvm {
    fn new(dev: &str) -> Lvm {
        let sysdir = tempdir();
        std::fs::write(
            sysdir.path().join("lvm.conf"),
            format!(
                "devices {{\n filter = [ \"a|^{dev}$|\", \"r|.*|\" ]\n obtain_device_list_from_udev = 0\n}}\nbackup {{\n backup = 0\n archive = 0\n}}\n"
            ),
        )
        .unwrap();
        Lvm { sysdir }
    }

    fn command(&self, cmd: &str) -> std::process::Command {
        let mut c = std::process::Command::new(cmd);
        c.env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .env("LVM_SYSTEM_DIR", self.sysdir.path())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
        c
    }

    /// Run an lvm2 command that never touches device-mapper.
    fn run(&self, cmd: &str, args: &[&str]) -> Output {
        self.command(cmd)
            .args(["--driverloaded", "n"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let o = self.run(cmd, args);
        assert!(
            o.status.success(),
            "{cmd} {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// Deactivates the VG on drop, in case the host's udev rules auto-activated
/// it when the loop device appeared (the LVs are created with the activation
/// skip flag, so they should not be).
struct Deactivate<'a>(&'a Lvm, String);

impl Drop for Deactivate<'_> {
    fn drop(&mut self) {
        let _ = self.0.command("vgchange").args(["-an", &self.1]).output();
    }
}

/// A loop device over part of an image file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(img: &Path, offset: u64, size: u64, read_only: bool) -> Result<Loop, String> {
        let mut a = vec!["-f", "--show"];
        if read_only {
            a.push("-r");
        }
        let (o, l) = (offset.to_string(), size.to_string());
        a.extend_from_slice(&["-o", &o, "--sizelimit", &l, s(img)]);
        let out = run_output("losetup", &a);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Loop(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = run_output("losetup", &["-d", &self.0]);
    }
}

/// lvm2's segment map of `vg/root`: (LV byte offset, length, PV byte offset).
fn lvm_segments(lvm: &Lvm, vg: &str) -> Vec<(u64, u64, u64)> {
    let pe_start: u64 = lvm
        .ok(
            "pvs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "pe_start",
            ],
        )
        .trim()
        .parse()
        .unwrap();
    let ext: u64 = lvm
        .ok(
            "vgs",
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "vg_extent_size",
                vg,
            ],
        )
        .trim()
        .parse()
        .unwrap();
    let out = lvm.ok(
        "lvs",
        &[
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "seg_start,seg_size,seg_pe_ranges,segtype",
            &format!("{vg}/root"),
        ],
    );
    // "0 159383552 /dev/loop0:0-37 linear"
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[3], "linear", "{l}");
            let first: u64 = f[2]
                .rsplit(':')
                .next()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                pe_start + first * ext,
            )
        })
        .collect()
}

fn dd(src: &Path, from: u64, dst: &Path, to: u64, len: u64) {
    let o = run_output(
        "dd",
        &[
            &format!("if={}", s(src)),
            &format!("of={}", s(dst)),
            "bs=1M",
            &format!("skip={}", from / MIB),
            &format!("seek={}", to / MIB),
            &format!("count={}", len / MIB),
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    assert!(o.status.success());
}

/// A 300 MiB XFS root (mkfs.xfs minimum) from a protofile.
fn root_fs(dir: &Path) -> PathBuf {
    let w = |n: &str, t: &[u8]| {
        let p = dir.join(n);
        std::fs::write(&p, t).unwrap();
        p
    };
    let osr = w("osr", b"ID=rhel\nID_LIKE=fedora\nVERSION_ID=9.4\n");
    let fstab = w("fstab", b"/dev/mapper/rhel-root / xfs defaults 0 0\n");
    let keep = w("keep", &pattern(5, 70_000));
    let proto = format!(
        "/dummy\n0 0\nd--755 0 0\netc d--755 0 0\nos-release ---644 0 0 {}\nfstab ---644 0 0 {}\nkeep ---600 0 0 {}\n$\n$\n",
        s(&osr),
        s(&fstab),
        s(&keep)
    );
    let pf = w("proto", proto.as_bytes());
    let img = dir.join("root.xfs");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    let o = run_output("mkfs.xfs", &["-q", "-f", "-p", s(&pf), s(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    img
}

#[test]
fn lvm2_built_two_segment_lv_is_the_oracle() {
    if !require(&[
        "losetup",
        "pvcreate",
        "vgcreate",
        "lvcreate",
        "lvextend",
        "lvs",
        "vgck",
        "sfdisk",
        "mkfs.xfs",
        "xfs_repair",
        "xfs_db",
    ]) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let disk = d.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len((PART_MIB + 2) * MIB)
        .unwrap();
    common::lvm::sfdisk(&disk, "label: dos\nstart=2048, type=8e\n");
    let part = (MIB, PART_MIB * MIB);
    let vg = format!("onrampt{}", std::process::id());
    // Build the PV/VG/LVs with lvm2 on a loop device over the partition.
    let segs = {
        let lo = match Loop::attach(&disk, part.0, part.1, false) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "oracle: lvm2 not usable here (losetup: {e}); root_on_a_two_segment_linear_lv in xfs_write.rs (hand-built PV, extraction + xfs_repair -n) is the LVM oracle that ran"
                );
                return;
            }
        };
        let lvm = Lvm::new(&lo.0);
        let _off = Deactivate(&lvm, vg.clone());
        lvm.ok("pvcreate", &["-y", &lo.0]);
        lvm.ok("vgcreate", &["-s", "4m", &vg, &lo.0]);
        // root: 152 MiB, then "gap" (8 MiB), then root grows by 148 MiB into
        // a second segment after the gap: 300 MiB in two linear segments.
        for a in [
            ["-an", "-ky", "-Zn", "-y", "-n", "root", "-L", "152m", &vg],
            ["-an", "-ky", "-Zn", "-y", "-n", "gap", "-L", "8m", &vg],
        ] {
            lvm.ok("lvcreate", &a);
        }
        lvm.ok("lvextend", &["-y", "-L", "+148m", &format!("{vg}/root")]);
        let segs = lvm_segments(&lvm, &vg);
        assert_eq!(segs.len(), 2, "{segs:?}");
        segs
    };
    let fs = root_fs(d);
    for &(lv_off, len, pv_off) in &segs {
        dd(&fs, lv_off, &disk, part.0 + pv_off, len);
    }
    let guard = InputGuard::new(&disk);
    let out = d.join("out.raw");
    let agent = pattern(41, 1_500_000);
    let up = d.join("agent.bin");
    std::fs::write(&up, &agent).unwrap();
    onramp_ok(&[
        "customize",
        s(&disk),
        s(&out),
        "--to",
        "raw",
        "--upload",
        &format!("{}:/usr/bin/agent", up.display()),
        "--write",
        "/etc/agent.conf:lvm=1",
    ]);
    guard.check();
    // lvm2 reads the output: metadata intact, same segment map.
    let lo = Loop::attach(&out, part.0, part.1, true).expect("losetup -r on the output");
    let lvm = Lvm::new(&lo.0);
    let off = Deactivate(&lvm, vg.clone());
    lvm.ok("vgck", &[&vg]);
    let after = lvm_segments(&lvm, &vg);
    assert_eq!(after, segs, "lvm2's map of {vg}/root changed");
    drop(off);
    drop(lo);
    // onramp's map of the LV is lvm2's.
    let src: std::sync::Arc<dyn onramp::block::BlockSource> =
        std::sync::Arc::new(onramp::source::raw::RawReader::open(&out).unwrap());
    let layout = onramp::partition::scan(&src).unwrap();
    let lv = layout
        .volumes
        .iter()
        .find(|v| v.name.as_deref() == Some(&format!("{vg}/root")))
        .expect("onramp finds the LV");
    let theirs: Vec<(u64, u64)> = segs.iter().map(|&(_, n, p)| (part.0 + p, n)).collect();
    assert_eq!(
        lv.segments, theirs,
        "onramp's segment map differs from lvm2's"
    );
    // Extract the LV along lvm2's map and judge it with xfsprogs.
    let lvimg = d.join("lv.img");
    std::fs::File::create(&lvimg)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    for &(lv_off, len, pv_off) in &segs {
        dd(&out, part.0 + pv_off, &lvimg, lv_off, len);
    }
    let o = run_output("xfs_repair", &["-n", s(&lvimg)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && !text.contains("would"),
        "xfs_repair -n:\n{text}"
    );
    assert_eq!(
        db_field(&lvimg, "/usr/bin/agent", "core.size"),
        agent.len().to_string()
    );
    assert_eq!(db_field(&lvimg, "/etc/agent.conf", "core.size"), "5");
    // Nothing outside the LV's extents changed (PV label and metadata included).
    let (a, b) = (std::fs::read(&disk).unwrap(), std::fs::read(&out).unwrap());
    let inside = |o: u64| {
        segs.iter()
            .any(|&(_, n, p)| o >= part.0 + p && o < part.0 + p + n)
    };
    let outside = a
        .chunks(4096)
        .zip(b.chunks(4096))
        .enumerate()
        .find(|(i, (x, y))| x != y && !inside(*i as u64 * 4096))
        .map(|(i, _)| i * 4096);
    assert_eq!(outside, None, "a write landed outside the LV");
    eprintln!(
        "oracle: lvm2 (pvcreate/vgcreate/lvcreate/lvextend fixture; vgck + lvs segment map on the output; LV extracted along lvm2's map, xfs_repair -n clean)"
    );
}
