//! Windows injection (issue 11): planning against NTFS volumes made with
//! mkntfs + ntfs-3g holding hives from our regf fixture writer; the edited
//! hives read back with hivexget in every control set `Select` points at;
//! refusals; and, when the NTFS writer is present, `onramp customize` end to
//! end checked with ntfscat, ntfsls, `ntfsfix -n`, hivexget, inspect and
//! validate.

mod common;

use common::windows::{software_hive, system_hive};
use common::winimg::{self, hivex_values, hivexget};
use common::{onramp, onramp_ok, require, s, tempdir};
use onramp::block::BlockSource;
use onramp::fs::ntfs::NtfsFs;
use onramp::fs::regf::editor::HiveEditor;
use onramp::fs::regf::writer::{build, KeySpec};
use onramp::fs::regf::{checksum, types, ValueData};
use onramp::inject::bundle;
use onramp::inject::windows::plan;
use onramp::inject::{FsAction, Op};
use onramp::source::raw::RawReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const BUNDLE: &str = "fixtures/agents/azure-vm-agent-windows";
const SETUP_COMPLETE: &str = "@echo off\r\necho existing step\r\n";

fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLE)
}

/// The fixture SYSTEM hive without the agent services (they are what we inject).
fn system_without_agent() -> KeySpec {
    let mut spec = system_hive();
    let cs = spec
        .subkeys
        .iter_mut()
        .find(|k| k.name == "ControlSet001")
        .unwrap();
    let svcs = cs
        .subkeys
        .iter_mut()
        .find(|k| k.name == "Services")
        .unwrap();
    svcs.subkeys
        .retain(|k| k.name != "RdAgent" && k.name != "WindowsAzureGuestAgent");
    spec
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Generalized,
    Specialized,
    PendingLog,
}

/// SYSTEM and SOFTWARE hive bytes for a guest of `kind`, with RDP denied,
/// SAN policy OfflineAll and no RealTimeIsUniversal (what injection fixes).
fn hives(kind: Kind) -> (Vec<u8>, Vec<u8>) {
    let mut sys = HiveEditor::open(build(&system_without_agent(), "SYSTEM").unwrap()).unwrap();
    sys.set_value(
        "ControlSet001\\Control\\Terminal Server",
        "fDenyTSConnections",
        &ValueData::Dword(1),
    )
    .unwrap();
    sys.set_value(
        "ControlSet001\\Services\\partmgr\\Parameters",
        "SanPolicy",
        &ValueData::Dword(3),
    )
    .unwrap();
    assert!(sys
        .delete_value(
            "ControlSet001\\Control\\TimeZoneInformation",
            "RealTimeIsUniversal"
        )
        .unwrap());
    let mut soft = HiveEditor::open(build(&software_hive(), "SOFTWARE").unwrap()).unwrap();
    if kind == Kind::Specialized {
        sys.delete_value("Setup\\Status\\SysprepStatus", "GeneralizationState")
            .unwrap();
        soft.set_value(
            "Microsoft\\Windows\\CurrentVersion\\Setup\\State",
            "ImageState",
            &ValueData::String("IMAGE_STATE_COMPLETE".into()),
        )
        .unwrap();
    }
    let mut sys = sys.finish().unwrap();
    if kind == Kind::PendingLog {
        // Secondary sequence number behind the primary one: a log is pending.
        sys[8] = sys[8].wrapping_sub(1);
        let c = checksum(&sys[..4096]);
        sys[508..512].copy_from_slice(&c.to_le_bytes());
    }
    (sys, soft.finish().unwrap())
}

fn tools() -> bool {
    winimg::ntfs_tools() && require(&["hivexget", "hivexsh", "ntfsfix", "ntfsinfo"])
}

/// A Windows system volume (the whole disk is the NTFS volume).
fn windows_volume(dir: &Path, kind: Kind) -> Option<PathBuf> {
    let (sys, soft) = hives(kind);
    let mut files = vec![
        ("Windows/System32/config/SYSTEM", sys),
        ("Windows/System32/config/SOFTWARE", soft),
        (
            "Boot/BCD",
            build(&KeySpec::new("NewStoreRoot"), "BCD").unwrap(),
        ),
        (
            "Windows/System32/drivers/etc/hosts",
            b"127.0.0.1 localhost\r\n".to_vec(),
        ),
    ];
    if kind == Kind::Generalized {
        files.push((
            "Windows/Setup/Scripts/SetupComplete.cmd",
            SETUP_COMPLETE.as_bytes().to_vec(),
        ));
    }
    winimg::ntfs_with_files(dir, "win.img", "24M", &files)
}

/// A temporary directory holding a Windows volume of `kind`; None when the
/// tools (or, with `needs_writer`, the NTFS writer) are missing here.
fn guest(kind: Kind, needs_writer: bool) -> Option<(tempfile::TempDir, PathBuf)> {
    if !tools() || (needs_writer && !ntfs_writable()) {
        return None;
    }
    let dir = tempdir();
    let img = windows_volume(dir.path(), kind)?;
    Some((dir, img))
}

fn open_fs(img: &Path) -> NtfsFs {
    let src: Arc<dyn BlockSource> = Arc::new(RawReader::open(img).unwrap());
    NtfsFs::open(src).unwrap()
}

fn written<'a>(acts: &'a [FsAction], path: &str) -> &'a [u8] {
    acts.iter()
        .find_map(|a| match a {
            FsAction::WriteFile { path: p, data, .. } if p == path => Some(data.as_slice()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{path} not written: {acts:#?}"))
}

/// Check the injected SYSTEM hive with hivexget: services and Azure settings
/// in both control sets Select points at (Current/Default 1, LastKnownGood 2).
fn check_system_hive(p: &Path) {
    for cs in ["ControlSet001", "ControlSet002"] {
        let get = |k: &str, v: &str| hivexget(p, &format!("{cs}\\{k}"), v);
        assert_eq!(
            get("Services\\RdAgent", "ImagePath"),
            "C:\\WindowsAzure\\Packages\\WaAppAgent.exe",
            "{cs}"
        );
        assert_eq!(get("Services\\RdAgent", "Start"), "2");
        assert_eq!(get("Services\\RdAgent", "Type"), "16");
        assert_eq!(get("Services\\RdAgent", "ErrorControl"), "1");
        assert_eq!(get("Services\\RdAgent", "ObjectName"), "LocalSystem");
        assert_eq!(get("Services\\RdAgent", "DisplayName"), "RdAgent");
        assert_eq!(
            get("Services\\WindowsAzureGuestAgent", "ImagePath"),
            "C:\\WindowsAzure\\GuestAgent\\WindowsAzureGuestAgent.exe"
        );
        assert_eq!(
            get("Services\\WindowsAzureGuestAgent", "DisplayName"),
            "Windows Azure Guest Agent"
        );
        assert_eq!(
            get("Services\\WindowsAzureGuestAgent", "Description"),
            "Azure VM Agent (injected offline by onramp)"
        );
        // REG_EXPAND_SZ and REG_MULTI_SZ, typed, through hivexget's .reg output.
        let vals = hivex_values(p, &format!("{cs}\\Services\\WindowsAzureGuestAgent"));
        let ty = |n: &str| vals.iter().find(|v| v.0 == n).map(|v| v.1);
        assert_eq!(ty("ImagePath"), Some(types::REG_EXPAND_SZ));
        assert_eq!(ty("DependOnService"), Some(types::REG_MULTI_SZ));
        assert_eq!(
            get("Control\\Terminal Server", "fDenyTSConnections"),
            "0",
            "{cs}"
        );
        assert_eq!(
            get(
                "Control\\Terminal Server\\WinStations\\RDP-Tcp",
                "PortNumber"
            ),
            "3389"
        );
        assert_eq!(get("Services\\partmgr\\Parameters", "SanPolicy"), "1");
        assert_eq!(
            get("Control\\TimeZoneInformation", "RealTimeIsUniversal"),
            "1"
        );
    }
    // Untouched parts of the hive are still there.
    assert_eq!(hivexget(p, "ControlSet001\\Services\\svc149", "Start"), "3");
    assert_eq!(hivexget(p, "ControlSet003\\Services\\RdAgent", "Start"), "");
}

/// Every value type of the bundle's registry section, in SOFTWARE, with hivexget.
fn check_software_hive(p: &Path) {
    let vals = hivex_values(p, "onramp\\Agents\\azure-vm-agent-windows");
    let get = |n: &str| {
        vals.iter()
            .find(|v| v.0 == n)
            .map(|v| (v.1, v.2.clone()))
            .unwrap_or_else(|| panic!("{n} missing: {vals:?}"))
    };
    let utf16z = |s: &str| -> Vec<u8> {
        let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        v.extend([0, 0]);
        v
    };
    assert_eq!(get("Version"), (types::REG_SZ, utf16z("0-standin")));
    assert_eq!(
        get("InstallDir"),
        (types::REG_EXPAND_SZ, utf16z("%SystemDrive%\\WindowsAzure"))
    );
    let mut multi = utf16z("RdAgent");
    multi.extend(utf16z("WindowsAzureGuestAgent"));
    multi.extend([0, 0]);
    assert_eq!(get("Services"), (types::REG_MULTI_SZ, multi));
    assert_eq!(
        get("Injected"),
        (types::REG_DWORD, 1u32.to_le_bytes().to_vec())
    );
    assert_eq!(
        get("Stamp"),
        (
            types::REG_QWORD,
            0x0123_4567_89ab_cdefu64.to_le_bytes().to_vec()
        )
    );
    assert_eq!(get("Marker"), (types::REG_BINARY, b"onramp".to_vec()));
    // The rest of SOFTWARE is intact.
    assert_eq!(
        hivexget(
            p,
            "Microsoft\\Windows NT\\CurrentVersion",
            "CurrentBuildNumber"
        ),
        "20348"
    );
}

#[test]
fn plan_places_files_registers_services_in_every_selected_control_set() {
    let Some((dir, img)) = guest(Kind::Generalized, false) else {
        return;
    };
    let fs = open_fs(&img);
    // The same bundle as a .tar.gz plans the same actions.
    let tgz = dir.path().join("agent.tar.gz");
    common::run(
        "tar",
        &[
            "czf",
            s(&tgz),
            "-C",
            s(bundle_dir().parent().unwrap()),
            "azure-vm-agent-windows",
        ],
    );
    let b = bundle::load(&bundle_dir()).unwrap();
    let from_tgz = plan(&[], Some(&bundle::load(&tgz).unwrap()), &fs).unwrap();
    assert_eq!(from_tgz.actions, plan(&[], Some(&b), &fs).unwrap().actions);
    let ops = [
        Op::AzureWindowsSettings(true),
        Op::Hostname("sqlsp02".into()),
        Op::Write {
            path: "c:\\windows\\system32\\drivers\\etc\\onramp.txt".into(),
            content: "x".into(),
        },
        Op::AppendLine {
            path: "C:\\Windows\\System32\\drivers\\etc\\hosts".into(),
            line: "10.0.0.4 wireserver".into(),
        },
        Op::Mkdir("C:\\Temp\\onramp".into()),
        Op::FirstbootCommand("echo first boot > C:\\first.txt".into()),
    ];
    let p = plan(&ops, Some(&b), &fs).unwrap();
    let acts = &p.actions;
    // Missing directories are created (once); existing ones are spelled as stored.
    let mkdirs: Vec<&str> = acts
        .iter()
        .filter_map(|a| match a {
            FsAction::Mkdir { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        mkdirs,
        [
            "/WindowsAzure/Packages",
            "/WindowsAzure/GuestAgent",
            "/Temp/onramp"
        ]
    );
    let stand_in = std::fs::read(bundle_dir().join("Packages/WaAppAgent.exe")).unwrap();
    assert_eq!(
        written(acts, "/WindowsAzure/Packages/WaAppAgent.exe"),
        stand_in
    );
    assert_eq!(
        written(acts, "/Windows/System32/drivers/etc/onramp.txt"),
        b"x"
    );
    assert_eq!(
        written(acts, "/Windows/System32/drivers/etc/hosts"),
        b"127.0.0.1 localhost\r\n10.0.0.4 wireserver\r\n"
    );
    // Generalized image: SetupComplete.cmd is appended to, not replaced.
    let sc = String::from_utf8(written(acts, "/Windows/Setup/Scripts/SetupComplete.cmd").to_vec())
        .unwrap();
    assert!(sc.starts_with(SETUP_COMPLETE), "{sc}");
    assert!(sc.ends_with("echo first boot > C:\\first.txt\r\n"), "{sc}");
    // The hives come last, each written once.
    let n = acts.len();
    assert!(
        matches!(&acts[n - 2], FsAction::WriteFile { path, .. } if path == "/Windows/System32/config/SYSTEM")
    );
    assert!(
        matches!(&acts[n - 1], FsAction::WriteFile { path, .. } if path == "/Windows/System32/config/SOFTWARE")
    );
    // The dry-run lines name the registry edits.
    assert!(p
        .registry
        .iter()
        .any(|l| l.contains("service RdAgent") && l.contains("ControlSet001, ControlSet002")));
    let sys = dir.path().join("SYSTEM.new");
    std::fs::write(&sys, written(acts, "/Windows/System32/config/SYSTEM")).unwrap();
    check_system_hive(&sys);
    for cs in ["ControlSet001", "ControlSet002"] {
        assert_eq!(
            hivexget(
                &sys,
                &format!("{cs}\\Control\\ComputerName\\ComputerName"),
                "ComputerName"
            ),
            "SQLSP02"
        );
    }
    assert_eq!(
        hivexget(&sys, "ControlSet001\\Services\\onramp-firstboot", "Start"),
        "",
        "generalized images use SetupComplete.cmd, not the service"
    );
    let soft = dir.path().join("SOFTWARE.new");
    std::fs::write(&soft, written(acts, "/Windows/System32/config/SOFTWARE")).unwrap();
    check_software_hive(&soft);
    // hivexsh reopens and commits both (-w: its writer accepts our hives).
    for h in [&sys, &soft] {
        let out = std::process::Command::new("hivexsh")
            .args(["-w", s(h)])
            .stdin(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn specialized_image_gets_a_one_shot_firstboot_service() {
    let Some((dir, img)) = guest(Kind::Specialized, false) else {
        return;
    };
    let fs = open_fs(&img);
    let p = plan(
        &[
            Op::FirstbootCommand("net user".into()),
            Op::FirstbootCommand("ipconfig /all".into()),
        ],
        None,
        &fs,
    )
    .unwrap();
    let script = String::from_utf8(
        written(&p.actions, "/Windows/Setup/Scripts/onramp-firstboot.cmd").to_vec(),
    )
    .unwrap();
    assert!(script.contains("sc.exe config onramp-firstboot start= disabled"));
    assert!(
        script.contains("\r\nnet user\r\nipconfig /all\r\n"),
        "{script}"
    );
    assert!(script.contains("sc.exe delete onramp-firstboot"));
    assert!(!p.actions.iter().any(
        |a| matches!(a, FsAction::WriteFile { path, .. } if path.ends_with("SetupComplete.cmd"))
    ));
    let sys = dir.path().join("SYSTEM.new");
    std::fs::write(&sys, written(&p.actions, "/Windows/System32/config/SYSTEM")).unwrap();
    for cs in ["ControlSet001", "ControlSet002"] {
        let k = format!("{cs}\\Services\\onramp-firstboot");
        assert_eq!(hivexget(&sys, &k, "Start"), "2");
        assert_eq!(hivexget(&sys, &k, "ObjectName"), "LocalSystem");
        assert!(hivexget(&sys, &k, "ImagePath")
            .ends_with("cmd.exe /c \"%SystemRoot%\\Setup\\Scripts\\onramp-firstboot.cmd\""));
    }
}

#[test]
fn refusals_pending_log_linux_ops_and_bad_bundles() {
    let Some((_dir, img)) = guest(Kind::PendingLog, false) else {
        return;
    };
    let fs = open_fs(&img);
    let e = plan(&[Op::AzureWindowsSettings(true)], None, &fs)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SYSTEM hive") && e.contains("pending transaction log"),
        "{e}"
    );
    // Plans that do not touch the registry still work on that volume.
    plan(&[Op::Mkdir("C:\\x".into())], None, &fs).unwrap();
    for (op, flag) in [
        (Op::KernelArg("console=ttyS0".into()), "--kernel-arg"),
        (
            Op::Chmod {
                mode: "0644".into(),
                path: "/x".into(),
            },
            "--chmod",
        ),
        (
            Op::Link {
                target: "/a".into(),
                link: "/b".into(),
            },
            "--link",
        ),
    ] {
        let e = plan(&[op], None, &fs).unwrap_err().to_string();
        assert!(e.contains(flag) && e.contains("Windows guest"), "{e}");
    }
    let e = plan(
        &[Op::Write {
            path: "D:\\data\\x".into(),
            content: String::new(),
        }],
        None,
        &fs,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("only C:"), "{e}");
    // A bundle without a windows: section.
    let linux =
        bundle::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/agents/azure-ready"))
            .unwrap();
    let e = plan(&[], Some(&linux), &fs).unwrap_err().to_string();
    assert!(e.contains("no windows: section"), "{e}");
    // The Linux planner refuses the Windows-only op.
    let e = onramp::inject::plan(&[Op::AzureWindowsSettings(true)], &fs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Windows guests"), "{e}");
}

/// `ntfsfix -n` finds nothing to fix.
fn assert_ntfs_clean(img: &Path) {
    let fix = common::run_output("ntfsfix", &["-n", s(img)]);
    assert!(
        fix.status.success(),
        "{}",
        String::from_utf8_lossy(&fix.stdout)
    );
}

/// A file of an NTFS image, read by ntfscat.
fn ntfscat(img: &Path, path: &str) -> Vec<u8> {
    let o = std::process::Command::new("ntfscat")
        .args([s(img), path])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ntfscat {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// Copy a file out of an NTFS image with ntfscat to `to`; returns `to`.
fn extract(img: &Path, path: &str, to: &Path) -> PathBuf {
    std::fs::write(to, ntfscat(img, path)).unwrap();
    to.to_path_buf()
}

fn ntfs_writable() -> bool {
    if onramp::fs::write::WRITABLE.contains(&"ntfs") {
        return true;
    }
    eprintln!("SKIPPED: this build has no NTFS writer (fs::write::WRITABLE lacks ntfs)");
    false
}

#[test]
fn customize_dry_run_lists_files_and_registry_edits() {
    let Some((dir, img)) = guest(Kind::Generalized, true) else {
        return;
    };
    let out = dir.path().join("out.raw");
    let plan = onramp_ok(&[
        "customize",
        s(&img),
        s(&out),
        "--to",
        "raw",
        "--agent",
        s(&bundle_dir()),
        "--azure-settings",
        "--dry-run",
    ]);
    for want in [
        "mkdir -p /WindowsAzure/Packages",
        "write /WindowsAzure/Packages/WaAppAgent.exe",
        "write /WindowsAzure/GuestAgent/WindowsAzureGuestAgent.exe",
        "write /Windows/System32/config/SYSTEM",
        "write /Windows/System32/config/SOFTWARE",
        "service WindowsAzureGuestAgent",
        "Azure settings",
    ] {
        assert!(plan.contains(want), "{want:?} not in the plan:\n{plan}");
    }
    assert!(!out.exists());
}

#[test]
fn customize_end_to_end_checked_with_ntfs3g_and_hivex() {
    let Some((dir, img)) = guest(Kind::Generalized, true) else {
        return;
    };
    let before = common::sha256_file(&img);
    let out = dir.path().join("out.raw");
    onramp_ok(&[
        "customize",
        s(&img),
        s(&out),
        "--to",
        "raw",
        "--agent",
        s(&bundle_dir()),
        "--azure-settings",
        "--firstboot-command",
        "echo hello",
    ]);
    assert_eq!(common::sha256_file(&img), before, "input changed");
    // ntfs-3g's own tools read the result.
    assert_ntfs_clean(&out);
    let cat = |p: &str| ntfscat(&out, p);
    for f in [
        "Packages/WaAppAgent.exe",
        "Packages/WaAppAgent.exe.config",
        "GuestAgent/WindowsAzureGuestAgent.exe",
    ] {
        assert_eq!(
            cat(&format!("/WindowsAzure/{f}")),
            std::fs::read(bundle_dir().join(f)).unwrap(),
            "{f}"
        );
    }
    let info = common::run(
        "ntfsinfo",
        &["-F", "/WindowsAzure/Packages/WaAppAgent.exe", s(&out)],
    );
    assert!(info.contains("WaAppAgent.exe"), "{info}");
    let ls = common::run("ntfsls", &["-p", "/WindowsAzure/Packages", s(&out)]);
    assert!(ls.lines().any(|l| l == "WaAppAgent.exe"), "{ls}");
    assert!(ls.lines().any(|l| l == "WaAppAgent.exe.config"), "{ls}");
    let sc = String::from_utf8(cat("/Windows/Setup/Scripts/SetupComplete.cmd")).unwrap();
    assert!(
        sc.starts_with(SETUP_COMPLETE) && sc.ends_with("echo hello\r\n"),
        "{sc}"
    );
    let sys = extract(
        &out,
        "/Windows/System32/config/SYSTEM",
        &dir.path().join("SYSTEM.out"),
    );
    check_system_hive(&sys);
    let soft = extract(
        &out,
        "/Windows/System32/config/SOFTWARE",
        &dir.path().join("SOFTWARE.out"),
    );
    check_software_hive(&soft);
    // Our reader agrees with ntfscat.
    let fs = open_fs(&out);
    assert_eq!(
        onramp::fs::FileSystem::read_file(&fs, "/Windows/System32/config/SYSTEM", 64 << 20)
            .unwrap(),
        std::fs::read(&sys).unwrap()
    );
    // Inspection and validation see the agent and the settings.
    let insp: serde_json::Value =
        serde_json::from_str(&onramp_ok(&["inspect", s(&out), "--json"])).unwrap();
    let svcs = &insp["windows"]["services"];
    for name in ["WindowsAzureGuestAgent", "RdAgent"] {
        let svc = svcs
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap();
        assert_eq!(svc["present"], true, "{name}: {svc}");
        assert_eq!(svc["start"], 2, "{name}");
    }
    assert_eq!(insp["windows"]["rdp"]["enabled"], true);
    // A second pass over the output (hives replaced again, files replaced).
    let out2 = dir.path().join("out2.raw");
    onramp_ok(&[
        "customize",
        s(&out),
        s(&out2),
        "--to",
        "raw",
        "--agent",
        s(&bundle_dir()),
        "--hostname",
        "web-02",
    ]);
    assert_ntfs_clean(&out2);
    let sys2 = extract(
        &out2,
        "/Windows/System32/config/SYSTEM",
        &dir.path().join("SYSTEM.out2"),
    );
    check_system_hive(&sys2);
    assert_eq!(
        hivexget(
            &sys2,
            "ControlSet002\\Control\\ComputerName\\ComputerName",
            "ComputerName"
        ),
        "WEB-02"
    );
    assert_eq!(insp["windows"]["san_policy"], 1);
    let v = onramp(&[
        "validate",
        s(&out),
        "--profile",
        "azure",
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&v.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&v.stdout)));
    let text = report.to_string();
    for rule in [
        "azure.windows.vm-agent",
        "azure.windows.rdp",
        "azure.windows.san-policy",
        "azure.windows.utc-clock",
    ] {
        let r = find_rule(&report, rule).unwrap_or_else(|| panic!("{rule} not in {text}"));
        assert_eq!(r["status"], "pass", "{rule}: {r}");
    }
}

fn find_rule<'a>(v: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("rule").and_then(|x| x.as_str()) == Some(id) {
                return Some(v);
            }
            m.values().find_map(|x| find_rule(x, id))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_rule(x, id)),
        _ => None,
    }
}

#[test]
fn recipe_with_windows_agent_and_settings_plans_the_edits() {
    let Some((dir, img)) = guest(Kind::Generalized, true) else {
        return;
    };
    let r = dir.path().join("win.yaml");
    std::fs::write(
        &r,
        format!(
            "name: win\nsource:\n  path: {}\ntarget:\n  cloud: azure\n  format: azure-vhd\nagent: {}\ncustomize:\n  - azure-windows-settings: true\n  - firstboot-command: echo hi\noutput:\n  dir: out\n",
            s(&img),
            s(&bundle_dir())
        ),
    )
    .unwrap();
    let plan = onramp_ok(&["build", s(&r), "--dry-run", "--json"]);
    for want in [
        "write /WindowsAzure/Packages/WaAppAgent.exe",
        "write /Windows/Setup/Scripts/SetupComplete.cmd",
        "write /Windows/System32/config/SYSTEM",
        "service RdAgent",
        "Azure settings",
    ] {
        assert!(plan.contains(want), "{want:?} not in the plan:\n{plan}");
    }
}

/// Byte offset of the Windows partition in the GPT test disk (sector 10240).
const PART_START: u64 = 10240 * 512;

#[test]
fn customize_finds_the_system_volume_in_a_gpt_disk() {
    if !require(&["sfdisk"]) {
        return;
    }
    let Some((dir, vol)) = guest(Kind::Generalized, true) else {
        return;
    };
    // GPT: a 4 MiB partition without a filesystem, then the Windows volume.
    let disk = dir.path().join("disk.raw");
    common::run("truncate", &["-s", "32M", s(&disk)]);
    let mut sf = std::process::Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel", s(&disk)])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        sf.stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\nstart=2048, size=8192, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE\nstart=10240, size=49152, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n")
            .unwrap();
    }
    assert!(sf.wait().unwrap().success());
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(SeekFrom::Start(PART_START)).unwrap();
        f.write_all(&std::fs::read(&vol).unwrap()).unwrap();
    }
    let out = dir.path().join("out.raw");
    onramp_ok(&[
        "customize",
        s(&disk),
        s(&out),
        "--to",
        "raw",
        "--azure-settings",
    ]);
    let part = dir.path().join("part.ntfs");
    let bytes = std::fs::read(&out).unwrap();
    let start = PART_START as usize;
    std::fs::write(&part, &bytes[start..start + (24 << 20)]).unwrap();
    assert_ntfs_clean(&part);
    let sys = extract(
        &part,
        "/Windows/System32/config/SYSTEM",
        &dir.path().join("SYSTEM.gpt"),
    );
    for cs in ["ControlSet001", "ControlSet002"] {
        assert_eq!(
            hivexget(
                &sys,
                &format!("{cs}\\Services\\partmgr\\Parameters"),
                "SanPolicy"
            ),
            "1"
        );
    }
    // Outside the partition nothing changed.
    let first = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        b[..PART_START as usize].to_vec()
    };
    assert!(
        first(&disk) == first(&out),
        "bytes before the partition changed"
    );
    // --root names the volume explicitly; the other partition is refused.
    let out2 = dir.path().join("out2.raw");
    onramp_ok(&[
        "customize",
        s(&disk),
        s(&out2),
        "--to",
        "raw",
        "--azure-settings",
        "--root",
        "2",
    ]);
    let bad = onramp(&[
        "customize",
        s(&disk),
        s(&out2),
        "--to",
        "raw",
        "--azure-settings",
        "--root",
        "1",
        "--force",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
