//! Windows guest fixtures shared by the inspect and validate tests: SYSTEM and
//! SOFTWARE hives (built with onramp's regf fixture writer) imitating Windows
//! Server 2022 with SQL Server and SharePoint, and NTFS volumes made by mkntfs
//! and filled through an ntfs-3g (FUSE) mount.

use super::{run, run_output, s};
use onramp::fs::regf::writer::KeySpec;
use onramp::fs::regf::Value;
use std::path::Path;

pub const CCS: &str = "ControlSet001";

pub fn system_hive() -> KeySpec {
    let mut r = KeySpec::new("ROOT");
    let c = |p: &str| format!("{CCS}\\{p}");
    r.set("Select", Value::dword("Current", 1))
        .set("Select", Value::dword("Default", 1))
        .set("Select", Value::dword("LastKnownGood", 2))
        .set("Setup", Value::sz("CmdLine", "oobe\\windeploy.exe"))
        .set("Setup", Value::dword("SetupType", 2))
        .set(
            "Setup\\Status\\SysprepStatus",
            Value::dword("GeneralizationState", 7),
        )
        .set(
            &c("Control\\Session Manager\\Environment"),
            Value::sz("PROCESSOR_ARCHITECTURE", "AMD64"),
        )
        .set(
            &c("Control\\ComputerName\\ComputerName"),
            Value::sz("ComputerName", "SQLSP01"),
        )
        .set(
            &c("Services\\Tcpip\\Parameters"),
            Value::sz("Hostname", "sqlsp01"),
        )
        .set(
            &c("Control\\Terminal Server"),
            Value::dword("fDenyTSConnections", 0),
        )
        .set(
            &c("Control\\Terminal Server\\WinStations\\RDP-Tcp"),
            Value::dword("PortNumber", 3389),
        )
        .set(
            &c("Services\\partmgr\\Parameters"),
            Value::dword("SanPolicy", 1),
        )
        .set(
            &c("Control\\TimeZoneInformation"),
            Value::dword("RealTimeIsUniversal", 1),
        )
        .set(
            &c("Control\\TimeZoneInformation"),
            Value::sz("TimeZoneKeyName", "UTC"),
        )
        .set(
            &c("Services\\WindowsAzureGuestAgent"),
            Value::dword("Start", 2),
        )
        .set(
            &c("Services\\WindowsAzureGuestAgent"),
            Value::expand_sz(
                "ImagePath",
                "C:\\WindowsAzure\\GuestAgent\\WindowsAzureGuestAgent.exe",
            ),
        )
        .set(&c("Services\\RdAgent"), Value::dword("Start", 2))
        .set(
            &c("Services\\RdAgent"),
            Value::expand_sz("ImagePath", "C:\\WindowsAzure\\Packages\\WaAppAgent.exe"),
        )
        .set(&c("Services\\TermService"), Value::dword("Start", 3))
        .set(
            &c("Services\\TermService"),
            Value::expand_sz(
                "ImagePath",
                "%SystemRoot%\\System32\\svchost.exe -k NetworkService",
            ),
        )
        .set(
            &c("Control\\Session Manager\\Memory Management"),
            Value::multi_sz("PagingFiles", &["?:\\pagefile.sys"]),
        )
        .set(
            &c("Services\\SharedAccess\\Parameters\\FirewallPolicy\\DomainProfile"),
            Value::dword("EnableFirewall", 1),
        )
        .set(
            &c("Services\\SharedAccess\\Parameters\\FirewallPolicy\\StandardProfile"),
            Value::dword("EnableFirewall", 0),
        )
        .set(
            &c("Services\\SharedAccess\\Parameters\\FirewallPolicy\\PublicProfile"),
            Value::dword("EnableFirewall", 1),
        )
        // A stale second control set that must not be read.
        .set(
            "ControlSet002\\Services\\partmgr\\Parameters",
            Value::dword("SanPolicy", 3),
        );
    // Many services, as a real SYSTEM hive has (forces bigger lists).
    for i in 0..150 {
        r.set(
            &c(&format!("Services\\svc{i:03}")),
            Value::dword("Start", 3),
        );
    }
    r
}

pub fn software_hive() -> KeySpec {
    let mut r = software_base();
    add_sql_server(&mut r);
    add_sharepoint(&mut r);
    let un = "Microsoft\\Windows\\CurrentVersion\\Uninstall";
    let un32 = "WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall";
    r.set(&format!("{un}\\NoName"), Value::dword("SystemComponent", 1))
        .set(
            &format!("{un32}\\Notepad++"),
            Value::sz("DisplayName", "Notepad++ (32-bit x86)"),
        )
        .set(
            &format!("{un32}\\Notepad++"),
            Value::sz("DisplayVersion", "8.6"),
        );
    r
}

/// SOFTWARE of a generalized Windows Server 2022 Datacenter with no applications.
pub fn software_base() -> KeySpec {
    let mut r = KeySpec::new("ROOT");
    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    r.set(
        cv,
        Value::sz("ProductName", "Windows Server 2022 Datacenter"),
    )
    .set(cv, Value::sz("EditionID", "ServerDatacenter"))
    .set(cv, Value::sz("InstallationType", "Server"))
    .set(cv, Value::sz("CurrentVersion", "6.3"))
    .set(cv, Value::sz("DisplayVersion", "21H2"))
    .set(cv, Value::sz("CurrentBuildNumber", "20348"))
    .set(cv, Value::sz("CurrentBuild", "20348"))
    .set(cv, Value::dword("UBR", 2113))
    .set(cv, Value::dword("CurrentMajorVersionNumber", 10))
    .set(cv, Value::dword("CurrentMinorVersionNumber", 0))
    .set(
        "Microsoft\\Windows\\CurrentVersion\\Setup\\State",
        Value::sz("ImageState", "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"),
    );
    r
}

/// SQL Server 2019 (MSSQLSERVER): its Uninstall entry and instance keys.
pub fn add_sql_server(r: &mut KeySpec) {
    let un = "Microsoft\\Windows\\CurrentVersion\\Uninstall";
    let k = format!("{un}\\{{F2A5B2D1-0000-4B8B-9A1E-SQL2019}}");
    r.set(
        &k,
        Value::sz("DisplayName", "Microsoft SQL Server 2019 (64-bit)"),
    )
    .set(&k, Value::sz("DisplayVersion", "15.0.2000.5"))
    .set(&k, Value::sz("Publisher", "Microsoft Corporation"))
    .set(
        "Microsoft\\Microsoft SQL Server\\Instance Names\\SQL",
        Value::sz("MSSQLSERVER", "MSSQL15.MSSQLSERVER"),
    );
    let setup = "Microsoft\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\Setup";
    r.set(setup, Value::sz("Version", "15.0.2000.5"))
        .set(setup, Value::sz("PatchLevel", "15.0.2000.5"))
        .set(setup, Value::sz("Edition", "Enterprise Edition"));
}

/// SharePoint Server 2019: its Uninstall entry and Web Server Extensions keys.
pub fn add_sharepoint(r: &mut KeySpec) {
    let un = "Microsoft\\Windows\\CurrentVersion\\Uninstall";
    r.set(
        &format!("{un}\\SharePoint"),
        Value::sz("DisplayName", "Microsoft SharePoint Server 2019"),
    )
    .set(
        &format!("{un}\\SharePoint"),
        Value::sz("DisplayVersion", "16.0.10337.12109"),
    )
    .set(
        "Microsoft\\Shared Tools\\Web Server Extensions\\16.0",
        Value::sz("Version", "16.0.10337.12109"),
    )
    .set(
        "Microsoft\\Shared Tools\\Web Server Extensions\\16.0\\WSS",
        Value::sz("SetupType", "CLEAN_INSTALL"),
    )
    .set(
        "Microsoft\\Shared Tools\\Web Server Extensions\\Common",
        Value::dword("x", 1),
    );
}

/// A fresh NTFS filesystem image of `size` ("16M") labelled `label` (mkntfs,
/// 512-byte sectors, 4 KiB clusters, quick format).
pub fn mkntfs(img: &Path, size: &str, label: &str) {
    run("truncate", &["-s", size, s(img)]);
    run(
        "mkntfs",
        &[
            "-F",
            "-q",
            "-s",
            "512",
            "-c",
            "4096",
            "--fast",
            "--force",
            "-L",
            label,
            s(img),
        ],
    );
}

/// Mount `img` with ntfs-3g at `mnt`, run `fill(mnt)`, unmount (also when
/// `fill` panics). Directories need a mount: ntfscp only copies files. Returns
/// None (the caller skips; under CI this panics) when FUSE mounting is not
/// possible here.
pub fn with_ntfs_mounted<R>(img: &Path, mnt: &Path, fill: impl FnOnce(&Path) -> R) -> Option<R> {
    std::fs::create_dir_all(mnt).unwrap();
    let m = run_output("ntfs-3g", &["-o", "compression", s(img), s(mnt)]);
    if !m.status.success() {
        let msg = format!(
            "ntfs-3g mount failed: {}",
            String::from_utf8_lossy(&m.stderr)
        );
        if super::in_ci() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fill(mnt)));
    let u = run_output("umount", &[s(mnt)]);
    assert!(
        u.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&u.stderr)
    );
    match result {
        Ok(r) => Some(r),
        Err(e) => std::panic::resume_unwind(e),
    }
}
