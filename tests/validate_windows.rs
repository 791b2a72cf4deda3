//! `onramp validate` on real Windows disk images (issue #8): an MBR disk
//! whose NTFS partition (mkntfs, filled through an ntfs-3g mount) holds
//! SYSTEM and SOFTWARE hives from onramp's regf fixture writer and a BCD
//! store. The clean image passes `--profile azure-windows --strict` (and
//! `--profile azure` picks windows) with exit 0; for each Windows rule one
//! image violates exactly that rule: the JSON report (parsed with serde_json)
//! names exactly that rule failing, and the exit code follows its severity
//! (error: 1; warning: 1 only with --strict; info: 0).
//!
//! One base volume is built with a mount; each case copies it and replaces a
//! hive with ntfscp (ntfscat reads it back identical: the oracle that the
//! image holds what the case says), or removes the BCD through a mount.

mod common;

use common::windows::{
    add_sharepoint, add_sql_server, mkntfs, software_base, system_hive, with_ntfs_mounted, CCS,
};
use common::{onramp, require, run, s, tempdir};
use onramp::fs::regf::writer::{build, KeySpec};
use onramp::fs::regf::Value;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SYSTEM: &str = "/Windows/System32/config/SYSTEM";
const SOFTWARE: &str = "/Windows/System32/config/SOFTWARE";
/// The NTFS partition: 24 MiB at 1 MiB of a 32 MiB disk.
const PART_START: u64 = 1 << 20;
const NTFS_SIZE: &str = "24M";
const DISK_SIZE: u64 = 32 << 20;

/// SYSTEM of a clean image: every Azure Windows rule holds.
fn clean_system() -> KeySpec {
    let mut r = system_hive();
    let fw = format!("{CCS}\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\StandardProfile");
    r.set(&fw, Value::dword("EnableFirewall", 1));
    // Azure puts the paging file on the temporary disk (D:).
    r.set(
        &format!("{CCS}\\Control\\Session Manager\\Memory Management"),
        Value::multi_sz("PagingFiles", &["D:\\pagefile.sys 0 0"]),
    );
    r
}

fn sys_with(path: &str, v: Value) -> KeySpec {
    let mut r = clean_system();
    r.set(&format!("{CCS}\\{path}"), v);
    r
}

struct Case {
    rule: &'static str,
    severity: &'static str,
    system: KeySpec,
    software: KeySpec,
    bcd: bool,
}

fn cases() -> Vec<Case> {
    let case = |rule, severity, system, software| Case {
        rule,
        severity,
        system,
        software,
        bcd: true,
    };
    let mut not_generalized_sw = software_base();
    not_generalized_sw.set(
        "Microsoft\\Windows\\CurrentVersion\\Setup\\State",
        Value::sz("ImageState", "IMAGE_STATE_COMPLETE"),
    );
    let mut not_generalized_sys = clean_system();
    not_generalized_sys.set(
        "Setup\\Status\\SysprepStatus",
        Value::dword("GeneralizationState", 4),
    );
    let mut no_rdagent = clean_system();
    no_rdagent
        .key(&format!("{CCS}\\Services"))
        .subkeys
        .retain(|k| k.name != "RdAgent");
    let mut sql = software_base();
    add_sql_server(&mut sql);
    let mut sp = software_base();
    add_sharepoint(&mut sp);
    vec![
        case(
            "azure.windows.generalized",
            "error",
            not_generalized_sys,
            not_generalized_sw,
        ),
        case(
            "azure.windows.rdp",
            "error",
            sys_with(
                "Control\\Terminal Server\\WinStations\\RDP-Tcp",
                Value::dword("PortNumber", 3390),
            ),
            software_base(),
        ),
        case(
            "azure.windows.san-policy",
            "error",
            sys_with(
                "Services\\partmgr\\Parameters",
                Value::dword("SanPolicy", 2),
            ),
            software_base(),
        ),
        case(
            "azure.windows.utc-clock",
            "error",
            sys_with(
                "Control\\TimeZoneInformation",
                Value::dword("RealTimeIsUniversal", 0),
            ),
            software_base(),
        ),
        case(
            "azure.windows.firewall",
            "warning",
            sys_with(
                "Services\\SharedAccess\\Parameters\\FirewallPolicy\\PublicProfile",
                Value::dword("EnableFirewall", 0),
            ),
            software_base(),
        ),
        Case {
            bcd: false,
            ..case(
                "azure.windows.bcd",
                "error",
                clean_system(),
                software_base(),
            )
        },
        case(
            "azure.windows.vm-agent",
            "warning",
            no_rdagent,
            software_base(),
        ),
        case(
            "azure.windows.pagefile",
            "warning",
            sys_with(
                "Control\\Session Manager\\Memory Management",
                Value::multi_sz("PagingFiles", &["C:\\pagefile.sys 0 0"]),
            ),
            software_base(),
        ),
        case(
            "azure.windows.termservice",
            "error",
            sys_with("Services\\TermService", Value::dword("Start", 4)),
            software_base(),
        ),
        case("azure.windows.sql-sysprep", "warning", clean_system(), sql),
        case("azure.windows.sharepoint", "info", clean_system(), sp),
    ]
}

/// Write `data` into `file` at `offset`.
fn write_at(file: &Path, offset: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
}

/// Replace a file of the NTFS image with ntfscp, and check ntfscat reads the
/// new bytes back.
fn ntfs_replace(img: &Path, work: &Path, guest: &str, data: &[u8]) {
    let host = work.join(guest.rsplit('/').next().unwrap());
    std::fs::write(&host, data).unwrap();
    run("ntfscp", &["-q", "-f", s(img), s(&host), guest]);
    let back = std::process::Command::new("ntfscat")
        .args([s(img), guest])
        .output()
        .unwrap();
    assert!(back.status.success());
    assert!(back.stdout == data, "ntfscat {guest} differs after ntfscp");
}

/// A disk image: the MBR (sfdisk: one bootable NTFS partition) of `base`
/// with `ntfs` at [`PART_START`].
fn disk(base: &Path, ntfs: &Path, out: &Path) {
    std::fs::copy(base, out).unwrap();
    write_at(out, PART_START, &std::fs::read(ntfs).unwrap());
}

/// `onramp validate --format json`: (exit code, report).
fn validate(img: &Path, profile: &str, strict: bool) -> (i32, serde_json::Value) {
    let mut args = vec!["validate", s(img), "--profile", profile, "--format", "json"];
    if strict {
        args.push("--strict");
    }
    let o = onramp(&args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "validate JSON: {e}\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap(), v)
}

fn failed(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn windows_images_clean_and_one_violation_per_rule() {
    if !require(&["mkntfs", "ntfs-3g", "ntfscp", "ntfscat", "sfdisk", "umount"]) {
        return;
    }
    let started = std::time::Instant::now();
    let d = tempdir();
    let work = d.path();
    // The base volume: clean hives and a BCD store.
    let base_ntfs = work.join("base.ntfs");
    mkntfs(&base_ntfs, NTFS_SIZE, "Windows");
    let filled = with_ntfs_mounted(&base_ntfs, &work.join("mnt"), |m| {
        let cfg = m.join("Windows/System32/config");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            cfg.join("SYSTEM"),
            build(&clean_system(), "SYSTEM").unwrap(),
        )
        .unwrap();
        std::fs::write(
            cfg.join("SOFTWARE"),
            build(&software_base(), "SOFTWARE").unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(m.join("Boot")).unwrap();
        std::fs::write(
            m.join("Boot/BCD"),
            build(&KeySpec::new("NewStoreRoot"), "BCD").unwrap(),
        )
        .unwrap();
    });
    if filled.is_none() {
        return;
    }
    // The base disk: an MBR with one bootable NTFS (type 7) partition.
    let base_disk = work.join("base-mbr.raw");
    std::fs::File::create(&base_disk)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    let sectors = std::fs::metadata(&base_ntfs).unwrap().len() / 512;
    let script = format!(
        "label: dos\nstart={}, size={sectors}, type=7, bootable\n",
        PART_START / 512
    );
    let mut c = std::process::Command::new("sfdisk")
        .args(["-q", s(&base_disk)])
        .env(
            "PATH",
            format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap()),
        )
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
    let clean = work.join("clean.raw");
    disk(&base_disk, &base_ntfs, &clean);
    eprintln!("base image: {:.1} s", started.elapsed().as_secs_f64());

    // Clean: every rule of azure-windows passes or is skipped, even --strict.
    let (code, v) = validate(&clean, "azure-windows", true);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["profile"], "azure-windows");
    assert!(failed(&v).is_empty(), "{v:#}");
    let findings = v["findings"].as_array().unwrap();
    for c in cases() {
        let f = findings.iter().find(|f| f["rule"] == c.rule).unwrap();
        assert_eq!(f["status"], "pass", "{}: {f:#}", c.rule);
        assert_eq!(f["severity"], c.severity, "{}", c.rule);
    }
    // `--profile azure` picks windows from the inspection.
    let (code, v) = validate(&clean, "azure", true);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["profile"], "azure-windows");
    assert!(failed(&v).is_empty(), "{v:#}");

    // One violation per rule.
    let clean_sys = build(&clean_system(), "SYSTEM").unwrap();
    let clean_sw = build(&software_base(), "SOFTWARE").unwrap();
    let all = cases();
    for c in &all {
        let case_dir = work.join(c.rule);
        std::fs::create_dir_all(&case_dir).unwrap();
        let ntfs = case_dir.join("vol.ntfs");
        std::fs::copy(&base_ntfs, &ntfs).unwrap();
        let sys = build(&c.system, "SYSTEM").unwrap();
        if sys != clean_sys {
            ntfs_replace(&ntfs, &case_dir, SYSTEM, &sys);
        }
        let sw = build(&c.software, "SOFTWARE").unwrap();
        if sw != clean_sw {
            ntfs_replace(&ntfs, &case_dir, SOFTWARE, &sw);
        }
        if !c.bcd {
            with_ntfs_mounted(&ntfs, &case_dir.join("mnt"), |m| {
                std::fs::remove_file(m.join("Boot/BCD")).unwrap()
            })
            .unwrap();
        }
        let img = case_dir.join("disk.raw");
        disk(&base_disk, &ntfs, &img);
        let (code, v) = validate(&img, "azure-windows", false);
        assert_eq!(failed(&v), vec![c.rule.to_string()], "{}: {v:#}", c.rule);
        let want = if c.severity == "error" { 1 } else { 0 };
        assert_eq!(code, want, "{} without --strict", c.rule);
        let (code, v) = validate(&img, "azure-windows", true);
        assert_eq!(failed(&v), vec![c.rule.to_string()], "{}", c.rule);
        let want = if c.severity == "info" { 0 } else { 1 };
        assert_eq!(code, want, "{} with --strict", c.rule);
    }
    // --specialized: the not-generalized image passes.
    let img: PathBuf = work.join("azure.windows.generalized/disk.raw");
    let o = onramp(&[
        "validate",
        s(&img),
        "--profile",
        "azure-windows",
        "--specialized",
        "--strict",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    eprintln!(
        "clean + {} violating Windows images built and validated: {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
}
