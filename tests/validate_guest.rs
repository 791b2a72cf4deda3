//! Guest and layout rules of `onramp validate`: a clean Linux and a clean
//! Windows guest pass every rule of their profiles, and one fixture per rule
//! violates exactly that rule. The guests are inspection results (the facts
//! the rules are judged on); an end-to-end run on a real partitioned disk
//! checks the layout rules and the skip-on-uninspectable path through the CLI.

mod common;
use common::*;
use onramp::guest::linux::*;
use onramp::guest::windows::*;
use onramp::guest::{DiskInfo, FsInfo, Inspection, VolumeInfo};
use onramp::partition::{Scheme, Volume};
use onramp::validate::{evaluate, Facts, KernelFacts, LayoutFacts, Status};
use std::collections::BTreeMap;

fn volume(index: u32, type_id: &str, fs: Option<&str>) -> VolumeInfo {
    VolumeInfo {
        volume: Volume {
            index,
            start_bytes: u64::from(index) << 20,
            size_bytes: 1 << 20,
            scheme: Scheme::Gpt,
            type_id: type_id.into(),
            type_name: None,
            name: None,
            uuid: None,
            bootable: false,
            esp: false,
            lvm_pv: false,
            segments: vec![],
        },
        filesystem: fs.map(|k| FsInfo {
            kind: k.into(),
            uuid: None,
            label: None,
        }),
        mount_point: None,
    }
}

fn inspection(linux: Option<LinuxInfo>, windows: Option<WindowsInfo>) -> Inspection {
    Inspection {
        schema_version: 1,
        disk: DiskInfo {
            size_bytes: 64 << 20,
            format: "raw".into(),
            partition_table: Scheme::Gpt,
            sector_size: 512,
            disk_id: None,
            hybrid_mbr: false,
            boot_mode: "uefi".into(),
        },
        volumes: vec![volume(
            1,
            "0fc63daf-8483-4772-8e79-3d69d8477de4",
            Some("ext4"),
        )],
        os: None,
        linux,
        windows,
        warnings: vec![],
    }
}

fn layout() -> LayoutFacts {
    LayoutFacts {
        scheme: Some(Scheme::Gpt),
        has_esp: true,
        disk_size: 64 << 20,
        gpt_backup: Some((131071, 131071)),
        ..LayoutFacts::default()
    }
}

/// A fixed VHD of 64 MiB, as `onramp convert` would write it.
fn disk() -> onramp::validate::DiskFacts {
    onramp::validate::DiskFacts {
        input_format: "vhd".into(),
        from_file_footer: false,
        cookie_ok: true,
        checksum_ok: true,
        disk_type: 2,
        current_size: 64 << 20,
        file_size: (64 << 20) + 512,
    }
}

fn clean_linux() -> Facts {
    let mut hv = BTreeMap::new();
    for m in ["hv_vmbus", "hv_storvsc", "hv_netvsc", "hv_utils"] {
        hv.insert(m.to_string(), "builtin".to_string());
    }
    let l = LinuxInfo {
        root: RootInfo {
            volume: 0,
            fs_kind: "ext4".into(),
            uuid: None,
            label: None,
        },
        fstab: vec![FstabEntry {
            spec: "UUID=0000-1111".into(),
            mount_point: "/".into(),
            fs_type: "ext4".into(),
            options: "defaults".into(),
            swap: false,
            volume: Some(0),
        }],
        boot_loader: BootLoader {
            grub_cmdline_linux: Some("console=tty1 console=ttyS0,115200n8".into()),
            ..BootLoader::default()
        },
        kernels: vec![Kernel {
            version: "6.1.0-13-amd64".into(),
            hyperv: hv,
            ..Kernel::default()
        }],
        enabled_units: vec![EnabledUnit {
            unit: "walinuxagent.service".into(),
            wanted_by: "multi-user.target".into(),
        }],
        sshd_enabled: true,
        agents: Agents {
            walinuxagent: Some(WaAgent {
                enabled: true,
                ..WaAgent::default()
            }),
            cloud_init: None,
        },
        ..LinuxInfo::default()
    };
    let drivers = [
        "virtio_scsi",
        "virtio_net",
        "virtio_pci",
        "ena",
        "nvme",
        "udf",
        "vfat",
    ]
    .iter()
    .map(|m| (m.to_string(), "builtin".to_string()))
    .collect();
    Facts {
        disk: disk(),
        layout: Some(layout()),
        inspection: Some(inspection(Some(l), None)),
        kernel: Some(KernelFacts {
            version: "6.1.0-13-amd64".into(),
            drivers,
        }),
        ..Facts::default()
    }
}

fn svc(name: &str, start: u64) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        present: true,
        start: Some(start),
        start_type: None,
        image_path: None,
    }
}

fn clean_windows() -> Facts {
    let w = WindowsInfo {
        system_root: "/Windows".into(),
        rdp: Rdp {
            enabled: Some(true),
            deny_ts_connections: Some(0),
            port: Some(3389),
        },
        generalization: Generalization {
            image_state: Some("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE".into()),
            generalized: true,
            ..Generalization::default()
        },
        san_policy: Some(1),
        real_time_is_universal: Some(1),
        services: vec![
            svc("WindowsAzureGuestAgent", 2),
            svc("RdAgent", 2),
            svc("TermService", 3),
        ],
        pagefiles: vec!["D:\\pagefile.sys".into()],
        firewall: Firewall {
            domain: Some(true),
            private: Some(true),
            public: Some(true),
        },
        bcd_present: true,
        ..WindowsInfo::default()
    };
    let mut i = inspection(None, Some(w));
    i.volumes = vec![volume(
        1,
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
        Some("ntfs"),
    )];
    Facts {
        disk: disk(),
        layout: Some(layout()),
        inspection: Some(i),
        ..Facts::default()
    }
}

fn failed(profile: &str, f: &Facts) -> Vec<String> {
    evaluate(profile, f, &[])
        .unwrap()
        .into_iter()
        .filter(|x| x.status == Status::Fail)
        .map(|x| x.rule)
        .collect()
}

fn lx(f: &mut Facts) -> &mut LinuxInfo {
    f.inspection.as_mut().unwrap().linux.as_mut().unwrap()
}
fn wn(f: &mut Facts) -> &mut WindowsInfo {
    f.inspection.as_mut().unwrap().windows.as_mut().unwrap()
}

#[test]
fn clean_guests_pass_every_rule() {
    for p in ["azure-linux", "gce", "aws"] {
        assert_eq!(failed(p, &clean_linux()), Vec::<String>::new(), "{p}");
    }
    assert_eq!(
        failed("azure-windows", &clean_windows()),
        Vec::<String>::new()
    );
    // Guest rules ran (not skipped) in the clean cases.
    let n = evaluate("azure-linux", &clean_linux(), &[])
        .unwrap()
        .iter()
        .filter(|x| x.rule.starts_with("azure.linux.") && x.status == Status::Pass)
        .count();
    assert_eq!(n, 9);
    let n = evaluate("azure-windows", &clean_windows(), &[])
        .unwrap()
        .iter()
        .filter(|x| x.rule.starts_with("azure.windows.") && x.status == Status::Pass)
        .count();
    assert_eq!(n, 11);
}

type Mutation = Box<dyn Fn(&mut Facts)>;

#[test]
fn each_linux_rule_has_a_violating_fixture() {
    let cases: Vec<(&str, &str, Mutation)> = vec![
        (
            "azure-linux",
            "azure.linux.hyperv-drivers",
            Box::new(|f| {
                lx(f).kernels[0]
                    .hyperv
                    .insert("hv_storvsc".into(), "module".into());
            }),
        ),
        (
            "azure-linux",
            "azure.linux.console-ttys0",
            Box::new(|f| {
                lx(f).boot_loader.grub_cmdline_linux = Some("quiet console=ttyS1".into());
            }),
        ),
        (
            "azure-linux",
            "azure.linux.no-swap",
            Box::new(|f| {
                lx(f).fstab.push(FstabEntry {
                    spec: "UUID=abcd".into(),
                    mount_point: "none".into(),
                    fs_type: "swap".into(),
                    options: "sw".into(),
                    swap: true,
                    volume: None,
                });
            }),
        ),
        (
            "azure-linux",
            "azure.linux.no-swap",
            Box::new(|f| {
                f.inspection.as_mut().unwrap().volumes.push(volume(
                    2,
                    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
                    None,
                ));
            }),
        ),
        (
            "azure-linux",
            "azure.linux.provisioning-agent",
            Box::new(|f| {
                lx(f).agents.walinuxagent.as_mut().unwrap().enabled = false;
            }),
        ),
        // Both enabled, waagent still provisioning: they race.
        (
            "azure-linux",
            "azure.linux.provisioning-agent",
            Box::new(|f| {
                let l = lx(f);
                l.agents.cloud_init = Some(CloudInit::default());
                l.enabled_units.push(EnabledUnit {
                    unit: "cloud-init.service".into(),
                    wanted_by: "multi-user.target".into(),
                });
                l.agents.walinuxagent.as_mut().unwrap().provisioning_agent = Some("waagent".into());
            }),
        ),
        (
            "azure-linux",
            "azure.linux.sshd",
            Box::new(|f| lx(f).sshd_enabled = false),
        ),
        (
            "azure-linux",
            "azure.linux.fstab-stable-names",
            Box::new(|f| {
                lx(f).fstab[0].spec = "/dev/sda1".into();
            }),
        ),
        (
            "azure-linux",
            "azure.linux.no-persistent-net-rules",
            Box::new(|f| {
                lx(f).network.persistent_net_rules.push(PersistentNet {
                    mac: "52:54:00:12:34:56".into(),
                    name: "eth0".into(),
                });
            }),
        ),
        (
            "azure-linux",
            "azure.linux.root-fs",
            Box::new(|f| lx(f).root.fs_kind = "reiserfs".into()),
        ),
        (
            "azure-linux",
            "azure.linux.udf-vfat",
            Box::new(|f| {
                f.kernel
                    .as_mut()
                    .unwrap()
                    .drivers
                    .insert("udf".into(), "missing".into());
            }),
        ),
        (
            "gce",
            "gce.linux.virtio-drivers",
            Box::new(|f| {
                f.kernel
                    .as_mut()
                    .unwrap()
                    .drivers
                    .insert("virtio_scsi".into(), "module".into());
            }),
        ),
        (
            "aws",
            "aws.linux.ena-nvme",
            Box::new(|f| {
                f.kernel
                    .as_mut()
                    .unwrap()
                    .drivers
                    .insert("ena".into(), "missing".into());
            }),
        ),
    ];
    for (profile, rule, m) in cases {
        let mut f = clean_linux();
        m(&mut f);
        assert_eq!(failed(profile, &f), vec![rule.to_string()], "{rule}");
    }
    // The documented combination: cloud-init provisions, waagent with
    // Provisioning.Agent=auto alongside.
    let mut f = clean_linux();
    let l = lx(&mut f);
    l.agents.cloud_init = Some(CloudInit::default());
    l.enabled_units.push(EnabledUnit {
        unit: "cloud-init.service".into(),
        wanted_by: "multi-user.target".into(),
    });
    l.agents.walinuxagent.as_mut().unwrap().provisioning_agent = Some("auto".into());
    assert!(failed("azure-linux", &f).is_empty());
}

#[test]
fn each_windows_rule_has_a_violating_fixture() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "azure.windows.generalized",
            Box::new(|f| wn(f).generalization.generalized = false),
        ),
        (
            "azure.windows.rdp",
            Box::new(|f| wn(f).rdp.port = Some(3390)),
        ),
        (
            "azure.windows.san-policy",
            Box::new(|f| wn(f).san_policy = Some(2)),
        ),
        (
            "azure.windows.utc-clock",
            Box::new(|f| wn(f).real_time_is_universal = None),
        ),
        (
            "azure.windows.firewall",
            Box::new(|f| wn(f).firewall.public = Some(false)),
        ),
        ("azure.windows.bcd", Box::new(|f| wn(f).bcd_present = false)),
        (
            "azure.windows.vm-agent",
            Box::new(|f| wn(f).services.retain(|s| s.name != "RdAgent")),
        ),
        (
            "azure.windows.pagefile",
            Box::new(|f| wn(f).pagefiles = vec!["C:\\pagefile.sys 0 0".into()]),
        ),
        (
            "azure.windows.termservice",
            Box::new(|f| wn(f).services[2].start = Some(4)),
        ),
        (
            "azure.windows.sql-sysprep",
            Box::new(|f| {
                wn(f).sql_server.push(SqlInstance {
                    name: "MSSQLSERVER".into(),
                    id: "MSSQL16.MSSQLSERVER".into(),
                    version: None,
                    patch_level: None,
                    edition: None,
                })
            }),
        ),
        (
            "azure.windows.sharepoint",
            Box::new(|f| {
                wn(f).sharepoint.push(SharePoint {
                    version: "16.0".into(),
                    build: None,
                })
            }),
        ),
    ];
    for (rule, m) in cases {
        let mut f = clean_windows();
        m(&mut f);
        assert_eq!(
            failed("azure-windows", &f),
            vec![rule.to_string()],
            "{rule}"
        );
    }
    // --specialized: not generalized is fine, and SQL Server needs no SysPrep path.
    let mut f = clean_windows();
    wn(&mut f).generalization.generalized = false;
    f.specialized = true;
    assert!(failed("azure-windows", &f).is_empty());
}

#[test]
fn each_layout_rule_has_a_violating_fixture() {
    let cases: Vec<(&str, &str, Mutation)> = vec![
        (
            "azure-linux",
            "azure.disk.generation",
            Box::new(|f| f.generation = Some(1)),
        ),
        (
            "azure-linux",
            "disk.partitions-inside",
            Box::new(|f| {
                f.layout.as_mut().unwrap().outside.push((
                    "GPT partition 1".into(),
                    1 << 20,
                    100 << 20,
                ));
            }),
        ),
        (
            "azure-linux",
            "disk.gpt-backup-at-end",
            Box::new(|f| {
                f.layout.as_mut().unwrap().gpt_backup = Some((65535, 131071));
            }),
        ),
        (
            "aws",
            "aws.disk.boot-mode",
            Box::new(|f| f.layout.as_mut().unwrap().has_esp = false),
        ),
    ];
    for (profile, rule, m) in cases {
        let mut f = clean_linux();
        m(&mut f);
        assert_eq!(failed(profile, &f), vec![rule.to_string()], "{rule}");
    }
    // MBR (BIOS) with --generation 2 fails; hybrid passes both.
    let mut f = clean_linux();
    let l = f.layout.as_mut().unwrap();
    l.scheme = Some(Scheme::Mbr);
    l.has_esp = false;
    l.bios_bootable = true;
    l.gpt_backup = None;
    f.generation = Some(2);
    assert_eq!(
        failed("azure-linux", &f),
        vec!["azure.disk.generation".to_string()]
    );
    let l = f.layout.as_mut().unwrap();
    l.scheme = Some(Scheme::Gpt);
    l.has_esp = true;
    l.hybrid_mbr = true;
    for g in [1, 2] {
        f.generation = Some(g);
        assert!(
            failed("azure-linux", &f).is_empty(),
            "hybrid, generation {g}"
        );
    }
}

#[test]
fn uninspectable_guest_skips_guest_rules_and_runs_disk_rules() {
    let mut f = clean_linux();
    f.inspection = None;
    f.inspection_error = Some("corrupt superblock".into());
    f.disk.current_size = 10 << 20;
    f.disk.file_size = (10 << 20) + 512;
    let r = evaluate("azure-linux", &f, &[]).unwrap();
    for x in &r {
        if x.rule.starts_with("azure.linux.") {
            assert_eq!(x.status, Status::Skipped, "{}", x.rule);
            assert!(x.message.contains("corrupt superblock"));
        }
    }
    assert!(r
        .iter()
        .any(|x| x.rule == "azure.disk.min-size" && x.status == Status::Fail));
}

/// A real GPT disk (sgdisk), grown with truncate so its backup header is no
/// longer at the end: the CLI reports the layout rules on it.
#[test]
fn gpt_disk_resized_warns_about_backup_header_via_cli() {
    if !require(&["sgdisk", "python3"]) {
        return;
    }
    let d = tempdir();
    let raw = d.path().join("g.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
            s(&raw),
        ],
    );
    let o = onramp(&["validate", s(&raw), "--format", "json", "--generation", "2"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let st = |id: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(st("azure.disk.generation"), "pass", "{v:#}");
    assert_eq!(st("disk.gpt-backup-at-end"), "pass");
    // No filesystem: inspection finds no guest, so the azure profile stays generic.
    assert_eq!(v["profile"], "azure");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let junit = d.path().join("r.xml");
    let o = onramp(&[
        "validate",
        s(&raw),
        "--format",
        "junit",
        "--report",
        s(&junit),
        "--strict",
        "--generation",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let py = "import sys, xml.etree.ElementTree as ET\nr = ET.parse(sys.argv[1]).getroot()\nprint(','.join(sorted(c.get('name') for c in r.findall('.//testcase') if c.find('failure') is not None)))\n";
    let out = run("python3", &["-c", py, s(&junit)]);
    assert_eq!(out.trim(), "azure.disk.generation,disk.gpt-backup-at-end");
}

fn w(dir: &std::path::Path, p: &str, c: &[u8]) {
    let f = dir.join(p);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, c).unwrap();
}

fn symlink(dir: &std::path::Path, p: &str, target: &str) {
    let f = dir.join(p);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, f).unwrap();
}

/// An MBR disk with one ext4 root built by `mkfs.ext4 -d` from a synthetic
/// Debian tree ready for Azure; `fstab_root` is the fstab spec of `/`.
fn linux_disk(dir: &std::path::Path, name: &str, fstab_root: &str) -> std::path::PathBuf {
    let t = dir.join(format!("{name}.tree"));
    let kver = "6.1.0-13-amd64";
    w(
        &t,
        "etc/os-release",
        b"NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
    );
    w(
        &t,
        "etc/fstab",
        format!("{fstab_root} / ext4 errors=remount-ro 0 1\nproc /proc proc defaults 0 0\n")
            .as_bytes(),
    );
    w(&t, "etc/default/grub", b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0\"\n");
    w(&t, &format!("boot/vmlinuz-{kver}"), &pattern(3, 20_000));
    w(&t, &format!("boot/config-{kver}"), b"CONFIG_HYPERV=y\nCONFIG_HYPERV_STORAGE=y\nCONFIG_HYPERV_NET=y\nCONFIG_HYPERV_UTILS=y\nCONFIG_SCSI_VIRTIO=y\nCONFIG_VIRTIO_NET=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_ENA_ETHERNET=m\nCONFIG_BLK_DEV_NVME=y\nCONFIG_UDF_FS=m\nCONFIG_VFAT_FS=m\n");
    w(
        &t,
        &format!("lib/modules/{kver}/modules.dep"),
        b"kernel/fs/udf/udf.ko:\nkernel/fs/fat/vfat.ko:\n",
    );
    for (unit, target) in [
        ("ssh.service", "multi-user.target"),
        ("walinuxagent.service", "multi-user.target"),
    ] {
        symlink(
            &t,
            &format!("etc/systemd/system/{target}.wants/{unit}"),
            &format!("/lib/systemd/system/{unit}"),
        );
    }
    symlink(&t, "sbin/init", "/lib/systemd/systemd");
    w(&t, "lib/systemd/systemd", b"\x7fELF");
    w(
        &t,
        "usr/lib/python3/dist-packages/azurelinuxagent/common/version.py",
        b"AGENT_NAME = \"WALinuxAgent\"\nAGENT_VERSION = '2.9.0.4'\n",
    );
    w(
        &t,
        "etc/waagent.conf",
        b"Provisioning.Enabled=y\nProvisioning.Agent=waagent\n",
    );
    let part = dir.join(format!("{name}.part"));
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "root_owner=0:0",
            "-U",
            "1b2c3d4e-0000-4000-8000-00000000a001",
            "-d",
            s(&t),
            s(&part),
            "40M",
        ],
    );
    let disk = dir.join(format!("{name}.raw"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run("sh", &["-ec", &format!("printf 'label: dos\\nstart=2048, size=81920, type=83, bootable\\n' | PATH=/usr/sbin:/sbin:$PATH sfdisk --no-reread --no-tell-kernel -q {}", s(&disk))]);
    run(
        "dd",
        &[
            &format!("if={}", s(&part)),
            &format!("of={}", s(&disk)),
            "bs=1M",
            "seek=1",
            "conv=notrunc",
            "status=none",
        ],
    );
    disk
}

fn cli_failed(img: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value, Vec<String>) {
    let mut args = vec!["validate", s(img), "--format", "json"];
    args.extend_from_slice(extra);
    let o = onramp(&args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect();
    (o.status.code().unwrap_or(-1), v, f)
}

/// End to end: a real ext4 Linux guest on an MBR disk; `azure` picks
/// azure-linux, every rule passes (raw input judged on the projected VHD, and
/// again on the VHD `onramp convert` writes); a /dev/sda1 fstab fails exactly
/// the fstab rule; `--generation 2` fails exactly the generation rule.
#[test]
fn real_linux_guest_via_cli() {
    if !require(&["mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let disk = linux_disk(
        d.path(),
        "clean",
        "UUID=1b2c3d4e-0000-4000-8000-00000000a001",
    );
    let (code, v, f) = cli_failed(&disk, &[]);
    assert_eq!(v["profile"], "azure-linux", "{v:#}");
    assert!(f.is_empty(), "{f:?} {v:#}");
    assert_eq!(code, 0);
    let skipped: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| {
            x["status"] == "skipped" && x["rule"].as_str().unwrap().starts_with("azure.linux")
        })
        .map(|x| x["rule"].as_str().unwrap())
        .collect();
    assert!(skipped.is_empty(), "{skipped:?}");
    for p in ["gce", "aws"] {
        let (_, v, f) = cli_failed(&disk, &["--profile", p]);
        assert!(
            f.iter().all(|r| r == "gce.disk.size-gib"),
            "{p}: {f:?} {v:#}"
        );
    }
    let vhd = d.path().join("clean.vhd");
    onramp_ok(&["convert", s(&disk), s(&vhd), "--to", "azure-vhd", "-q"]);
    let (code, v, f) = cli_failed(&vhd, &["--strict"]);
    assert_eq!((code, f.len()), (0, 0), "{v:#}");
    let (code, _, f) = cli_failed(&vhd, &["--generation", "2"]);
    assert_eq!((code, f), (1, vec!["azure.disk.generation".to_string()]));

    let bad = linux_disk(d.path(), "sdx", "/dev/sda1");
    let (code, _, f) = cli_failed(&bad, &[]);
    assert_eq!(f, vec!["azure.linux.fstab-stable-names".to_string()]);
    assert_eq!(code, 0, "a warning fails only with --strict");
    let (code, _, _) = cli_failed(&bad, &["--strict"]);
    assert_eq!(code, 1);
}
