//! Windows fixtures shared by the Windows test files: SYSTEM and SOFTWARE
//! hive specs (built with our regf fixture writer), hivexget/hivexsh output
//! parsing, and NTFS volumes made with mkntfs and filled through an ntfs-3g
//! (FUSE) mount.

use super::{in_ci, require, run, run_output, s};
use onramp::fs::regf::types;
use onramp::fs::regf::writer::KeySpec;
use onramp::fs::regf::Value;
use std::path::Path;
use std::process::Command;

/// The control set the fixture SYSTEM hive uses.
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
    let mut r = KeySpec::new("ROOT");
    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    let un = "Microsoft\\Windows\\CurrentVersion\\Uninstall";
    let un32 = "WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall";
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
    )
    .set(
        &format!("{un}\\{{F2A5B2D1-0000-4B8B-9A1E-SQL2019}}"),
        Value::sz("DisplayName", "Microsoft SQL Server 2019 (64-bit)"),
    )
    .set(
        &format!("{un}\\{{F2A5B2D1-0000-4B8B-9A1E-SQL2019}}"),
        Value::sz("DisplayVersion", "15.0.2000.5"),
    )
    .set(
        &format!("{un}\\{{F2A5B2D1-0000-4B8B-9A1E-SQL2019}}"),
        Value::sz("Publisher", "Microsoft Corporation"),
    )
    .set(
        &format!("{un}\\SharePoint"),
        Value::sz("DisplayName", "Microsoft SharePoint Server 2019"),
    )
    .set(
        &format!("{un}\\SharePoint"),
        Value::sz("DisplayVersion", "16.0.10337.12109"),
    )
    .set(&format!("{un}\\NoName"), Value::dword("SystemComponent", 1))
    .set(
        &format!("{un32}\\Notepad++"),
        Value::sz("DisplayName", "Notepad++ (32-bit x86)"),
    )
    .set(
        &format!("{un32}\\Notepad++"),
        Value::sz("DisplayVersion", "8.6"),
    )
    .set(
        "Microsoft\\Microsoft SQL Server\\Instance Names\\SQL",
        Value::sz("MSSQLSERVER", "MSSQL15.MSSQLSERVER"),
    )
    .set(
        "Microsoft\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\Setup",
        Value::sz("Version", "15.0.2000.5"),
    )
    .set(
        "Microsoft\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\Setup",
        Value::sz("PatchLevel", "15.0.2000.5"),
    )
    .set(
        "Microsoft\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\Setup",
        Value::sz("Edition", "Enterprise Edition"),
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
    r
}

/// Parse one line of `hivexget HIVE KEY` (.reg style) into (name, type, data).
pub fn parse_reg_line(line: &str) -> Option<(String, u32, Vec<u8>)> {
    let (name, rest) = if let Some(r) = line.strip_prefix("@=") {
        (String::new(), r)
    } else {
        let l = line.strip_prefix('"')?;
        // Name ends at the first unescaped quote followed by '='.
        let mut name = String::new();
        let mut it = l.char_indices();
        let mut end = None;
        while let Some((i, ch)) = it.next() {
            match ch {
                '\\' => {
                    if let Some((_, n)) = it.next() {
                        name.push(n);
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => name.push(c),
            }
        }
        // hivexget prints the default value's name as "@".
        (
            if name == "@" { String::new() } else { name },
            l.get(end? + 2..)?,
        )
    };
    let unq = |s: &str| -> String {
        let s = s
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(s);
        s.replace("\\\"", "\"").replace("\\\\", "\\")
    };
    let utf16z = |s: &str| -> Vec<u8> {
        let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        v.extend([0, 0]);
        v
    };
    if let Some(h) = rest.strip_prefix("dword:") {
        let v = u32::from_str_radix(h, 16).ok()?;
        return Some((name, types::REG_DWORD, v.to_le_bytes().to_vec()));
    }
    if let Some(r) = rest.strip_prefix("str(") {
        let (t, s) = r.split_once("):")?;
        return Some((name, t.parse().ok()?, utf16z(&unq(s))));
    }
    if rest.starts_with('"') {
        return Some((name, types::REG_SZ, utf16z(&unq(rest))));
    }
    let (t, hex) = if let Some(r) = rest.strip_prefix("hex(") {
        let (t, h) = r.split_once("):")?;
        (t.parse().ok()?, h)
    } else {
        (types::REG_BINARY, rest.strip_prefix("hex:")?)
    };
    let bytes = hex
        .split(',')
        .filter(|x| !x.is_empty())
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()?;
    Some((name, t, bytes))
}

pub fn hivexsh_ls(hive: &Path, path: &str) -> Vec<String> {
    let mut c = Command::new("hivexsh");
    c.arg(s(hive))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn hivexsh");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let p = if path.is_empty() {
            "\\".to_string()
        } else {
            format!("\\{path}")
        };
        writeln!(stdin, "cd {p}\nls").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn ntfs_tools() -> bool {
    require(&[
        "mkntfs", "ntfs-3g", "ntfscp", "ntfscat", "ntfsls", "python3", "umount",
    ])
}

/// Make an empty NTFS image of `size` (a `truncate -s` size) labelled `label`.
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

/// Mount `img` at `mnt` (created) with ntfs-3g (FUSE: directories need a
/// mount, ntfscp only copies files). Returns false (test skipped; a failure
/// under CI) when FUSE mounting is not possible here.
pub fn mount_ntfs(img: &Path, mnt: &Path) -> bool {
    std::fs::create_dir_all(mnt).unwrap();
    let m = run_output("ntfs-3g", &["-o", "compression", s(img), s(mnt)]);
    if !m.status.success() {
        let msg = format!(
            "ntfs-3g mount failed: {}",
            String::from_utf8_lossy(&m.stderr)
        );
        if in_ci() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return false;
    }
    true
}

/// Unmount an ntfs-3g mount.
pub fn umount(mnt: &Path) {
    let u = run_output("umount", &[s(mnt)]);
    assert!(
        u.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&u.stderr)
    );
}

/// An NTFS image holding `files` (path relative to the root, content); None
/// when FUSE is unavailable (see [`mount_ntfs`]).
pub fn ntfs_with_files(
    dir: &Path,
    name: &str,
    size: &str,
    files: &[(&str, Vec<u8>)],
) -> Option<std::path::PathBuf> {
    let img = dir.join(name);
    mkntfs(&img, size, "WINSYS");
    let mnt = dir.join(format!("{name}.mnt"));
    if !mount_ntfs(&img, &mnt) {
        return None;
    }
    let result = std::panic::catch_unwind(|| {
        for (rel, data) in files {
            let mp = mnt.join(rel);
            std::fs::create_dir_all(mp.parent().unwrap()).unwrap();
            std::fs::write(&mp, data).unwrap();
        }
    });
    umount(&mnt);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    Some(img)
}

/// Values of `path` as hivexget prints them, parsed.
pub fn hivex_values(hive: &Path, path: &str) -> Vec<(String, u32, Vec<u8>)> {
    let out = run(
        "hivexget",
        &[s(hive), if path.is_empty() { "\\" } else { path }],
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_reg_line(l).unwrap_or_else(|| panic!("unparsed hivexget line {l:?}")))
        .collect()
}

/// One value with hivexget (its printed form, trimmed; "" when absent).
pub fn hivexget(hive: &Path, key: &str, name: &str) -> String {
    let o = Command::new("hivexget")
        .args([s(hive), key, name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
