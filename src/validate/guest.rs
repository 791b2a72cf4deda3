//! Guest rules: judged on [`crate::guest::inspect`]'s answer, plus a few
//! kernel facts read here from the guest's own files (kernel config,
//! `modules.builtin`, `modules.dep`) for drivers inspection does not report
//! (virtio, ENA, NVMe, udf, vfat). When inspection fails, every guest rule is
//! skipped with the reason and the disk rules still run.

use super::{Facts, Outcome, Rule, Severity};
use crate::block::BlockSource;
use crate::guest::linux::{Kernel, LinuxInfo};
use crate::guest::windows::WindowsInfo;
use crate::guest::{GuestFs, Inspection};
use std::collections::BTreeMap;
use std::sync::Arc;

const AZ_LINUX_DOC: &str =
    "https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic";
const AZ_WIN_DOC: &str =
    "https://learn.microsoft.com/azure/virtual-machines/windows/prepare-for-upload-vhd-image";
const AZ_AGENT_DOC: &str =
    "https://learn.microsoft.com/azure/virtual-machines/linux/using-cloud-init";
const GCE_DOC: &str = "https://cloud.google.com/compute/docs/import/configuring-imports";
const AWS_DOC: &str = "https://docs.aws.amazon.com/vm-import/latest/userguide/prerequisites.html";

/// Drivers whose state [`KernelFacts`] records: (module, kernel config symbol).
pub const EXTRA_DRIVERS: [(&str, &str); 7] = [
    ("virtio_scsi", "CONFIG_SCSI_VIRTIO"),
    ("virtio_net", "CONFIG_VIRTIO_NET"),
    ("virtio_pci", "CONFIG_VIRTIO_PCI"),
    ("ena", "CONFIG_ENA_ETHERNET"),
    ("nvme", "CONFIG_BLK_DEV_NVME"),
    ("udf", "CONFIG_UDF_FS"),
    ("vfat", "CONFIG_VFAT_FS"),
];

/// Driver states of the default kernel, for drivers beyond Hyper-V's.
#[derive(Debug, Clone, Default)]
pub struct KernelFacts {
    /// The default kernel's release.
    pub version: String,
    /// Module -> "builtin", "initramfs", "module", "missing" or "unknown"
    /// (the same words as [`Kernel::hyperv`]).
    pub drivers: BTreeMap<String, String>,
}

/// Compare kernel releases by their numeric runs (`5.10.0` < `5.15.0` < `6.1.0`).
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The kernel the guest boots by default: the first `linux` line of grub.cfg
/// (GRUB_DEFAULT=0), else the newest BLS entry, else the newest kernel.
pub fn default_kernel(l: &LinuxInfo) -> Option<&Kernel> {
    let by_name = |name: &str| {
        l.kernels
            .iter()
            .filter(|k| name.contains(&format!("vmlinuz-{}", k.version)))
            .max_by_key(|k| k.version.len())
    };
    if let Some(k) = l
        .boot_loader
        .grub_cfg_linux_lines
        .iter()
        .find_map(|x| by_name(x))
    {
        return Some(k);
    }
    if let Some(k) = l
        .boot_loader
        .bls_entries
        .iter()
        .filter_map(|e| e.linux.as_deref().and_then(by_name))
        .max_by_key(|k| version_key(&k.version))
    {
        return Some(k);
    }
    l.kernels.iter().max_by_key(|k| version_key(&k.version))
}

/// Read [`KernelFacts`] for the default kernel of an inspected Linux guest.
pub fn kernel_facts(src: &Arc<dyn BlockSource>, ins: &Inspection) -> Option<KernelFacts> {
    let l = ins.linux.as_ref()?;
    let k = default_kernel(l)?;
    let layout = crate::partition::scan(src).ok()?;
    let open = |i: usize| -> Option<Arc<dyn crate::fs::FileSystem>> {
        let v = layout.volumes.get(i)?;
        crate::fs::probe(v.open(src).ok()?).ok()?.map(Arc::from)
    };
    let mut g = GuestFs::new(open(l.root.volume)?);
    for e in &l.fstab {
        if let Some(i) = e.volume {
            if e.mount_point.starts_with('/') && e.mount_point != "/" && i != l.root.volume {
                if let Some(f) = open(i) {
                    g.mount(&e.mount_point, f);
                }
            }
        }
    }
    let text = |p: &str| g.text(p).ok().flatten();
    let v = &k.version;
    let config = k
        .config
        .as_deref()
        .and_then(text)
        .or_else(|| text(&format!("/boot/config-{v}")));
    let builtin = text(&format!("/lib/modules/{v}/modules.builtin"));
    let dep = text(&format!("/lib/modules/{v}/modules.dep"));
    let initrd = k.initramfs.as_ref().map(|i| i.modules.as_slice());
    let drivers = EXTRA_DRIVERS
        .iter()
        .map(|(m, sym)| {
            (
                m.to_string(),
                crate::guest::linux::driver_state(
                    config.as_deref(),
                    builtin.as_deref(),
                    dep.as_deref(),
                    initrd,
                    m,
                    sym,
                )
                .to_string(),
            )
        })
        .collect();
    Some(KernelFacts {
        version: v.clone(),
        drivers,
    })
}

// ---------------------------------------------------------------- helpers

/// The guest facts `pick` selects, or why the rule is skipped.
fn inspected<'a, T>(
    f: &'a Facts,
    pick: impl FnOnce(&'a crate::guest::Inspection) -> Option<&'a T>,
    os: &str,
) -> Result<&'a T, Outcome> {
    if f.data_disk {
        return Err(Outcome::Skip("data disk".into()));
    }
    match (&f.inspection, &f.inspection_error) {
        (_, Some(e)) => Err(Outcome::Skip(format!(
            "the guest could not be inspected: {e}"
        ))),
        (Some(i), None) => pick(i).ok_or_else(|| Outcome::Skip(format!("not a {os} guest"))),
        (None, None) => Err(Outcome::Skip("the guest was not inspected".into())),
    }
}

fn linux(f: &Facts) -> Result<&LinuxInfo, Outcome> {
    inspected(f, |i| i.linux.as_ref(), "Linux")
}

fn windows(f: &Facts) -> Result<&WindowsInfo, Outcome> {
    inspected(f, |i| i.windows.as_ref(), "Windows")
}

macro_rules! get {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(o) => return o,
        }
    };
}

/// Check that `mods` are "builtin" or "initramfs" (or, with `loadable`,
/// also "module") in `states`.
fn drivers_ok(
    what: &str,
    version: &str,
    states: &BTreeMap<String, String>,
    mods: &[&str],
    loadable: bool,
) -> Outcome {
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for m in mods {
        let s = states.get(*m).map_or("unknown", |s| s.as_str());
        let ok = s == "builtin" || s == "initramfs" || (loadable && s == "module");
        if ok {
            good.push(format!("{m} {s}"));
        } else {
            bad.push(format!("{m} {s}"));
        }
    }
    if bad.is_empty() {
        Outcome::Pass(format!("kernel {version}: {}", good.join(", ")))
    } else {
        Outcome::Fail(format!(
            "kernel {version}: {what} not available: {}",
            bad.join(", ")
        ))
    }
}

fn kernel_drivers(f: &Facts, what: &str, mods: &[&str], loadable: bool) -> Outcome {
    let l = get!(linux(f));
    let Some(k) = default_kernel(l) else {
        return Outcome::Fail("no kernel found in /boot or /lib/modules".into());
    };
    match &f.kernel {
        Some(kf) if kf.version == k.version => {
            drivers_ok(what, &k.version, &kf.drivers, mods, loadable)
        }
        _ => Outcome::Fail(format!(
            "kernel {}: its configuration and module lists could not be read",
            k.version
        )),
    }
}

// ---------------------------------------------------------------- Linux

fn hyperv(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    let Some(k) = default_kernel(l) else {
        return Outcome::Fail("no kernel found in /boot or /lib/modules".into());
    };
    drivers_ok(
        "Hyper-V drivers",
        &k.version,
        &k.hyperv,
        &["hv_vmbus", "hv_storvsc", "hv_netvsc"],
        false,
    )
}

fn has_console(s: &str) -> bool {
    s.split_whitespace()
        .any(|t| t == "console=ttyS0" || t.starts_with("console=ttyS0,"))
}

fn console(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    let b = &l.boot_loader;
    let mut seen = Vec::new();
    for (name, v) in [
        ("GRUB_CMDLINE_LINUX", &b.grub_cmdline_linux),
        ("GRUB_CMDLINE_LINUX_DEFAULT", &b.grub_cmdline_linux_default),
    ] {
        if let Some(v) = v {
            seen.push(name.to_string());
            if has_console(v) {
                return Outcome::Pass(format!("{name} has console=ttyS0"));
            }
        }
    }
    if b.grub_cfg_linux_lines.iter().any(|x| has_console(x)) {
        return Outcome::Pass("grub.cfg linux lines have console=ttyS0".into());
    }
    if !b.grub_cfg_linux_lines.is_empty() {
        seen.push("grub.cfg".into());
    }
    for e in &b.bls_entries {
        if e.options.as_deref().is_some_and(has_console) {
            return Outcome::Pass(format!("BLS entry {} has console=ttyS0", e.file));
        }
        seen.push(e.file.clone());
    }
    if seen.is_empty() {
        Outcome::Fail(
            "no kernel command line found (no /etc/default/grub, grub.cfg or BLS entries)".into(),
        )
    } else {
        Outcome::Fail(format!(
            "console=ttyS0 is not on the kernel command line ({})",
            seen.join(", ")
        ))
    }
}

const SWAP_GUID: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";

fn swap(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    let mut found: Vec<String> = l
        .fstab
        .iter()
        .filter(|e| e.swap)
        .map(|e| format!("fstab swap {}", e.spec))
        .collect();
    if let Some(i) = &f.inspection {
        for v in &i.volumes {
            let kind = v.filesystem.as_ref().map(|x| x.kind.as_str());
            if v.volume.type_id == SWAP_GUID || v.volume.type_id == "0x82" || kind == Some("swap") {
                found.push(format!(
                    "swap partition {}",
                    crate::guest::describe(&v.volume)
                ));
            }
        }
    }
    if found.is_empty() {
        Outcome::Pass("no swap on the OS disk".into())
    } else {
        Outcome::Fail(found.join("; "))
    }
}

fn cloud_init_enabled(l: &LinuxInfo) -> bool {
    l.agents.cloud_init.is_some()
        && l.enabled_units.iter().any(|u| {
            u.unit.starts_with("cloud-init")
                || u.unit.starts_with("cloud-config")
                || u.unit.starts_with("cloud-final")
        })
}

fn agent(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    let wa = l.agents.walinuxagent.as_ref().filter(|w| w.enabled);
    let ci = cloud_init_enabled(l);
    if let Some(c) = &l.agents.cloud_init {
        if let Some(ds) = &c.datasource_list {
            if ci && !ds.iter().any(|d| d.eq_ignore_ascii_case("Azure")) {
                return Outcome::Fail(format!(
                    "cloud-init datasource_list {ds:?} does not include Azure"
                ));
            }
        }
    }
    let prov = wa
        .and_then(|w| w.provisioning_agent.clone())
        .map(|p| p.to_ascii_lowercase());
    let prov_enabled = wa
        .and_then(|w| w.provisioning_enabled.clone())
        .map(|p| p.to_ascii_lowercase());
    let report_ready = l
        .enabled_units
        .iter()
        .any(|u| u.unit == "onramp-azure-ready.service");
    match (wa, ci) {
        (None, false) if report_ready => Outcome::Pass(
            "onramp's report-ready agent (onramp-azure-ready.service) reports provisioning complete, as Azure documents for images without a provisioning agent".into(),
        ),
        (None, false) => Outcome::Fail(
            "no provisioning agent enabled (neither walinuxagent/waagent, cloud-init, nor onramp's report-ready agent)".into(),
        ),
        (None, true) => Outcome::Pass("cloud-init provisions".into()),
        (Some(_), false) => match prov.as_deref() {
            Some("cloud-init") => Outcome::Fail(
                "waagent.conf has Provisioning.Agent=cloud-init but cloud-init is not enabled"
                    .into(),
            ),
            _ => Outcome::Pass("WALinuxAgent provisions".into()),
        },
        (Some(_), true) => {
            let ok = matches!(prov.as_deref(), Some("auto") | Some("cloud-init"))
                || (prov.is_none() && prov_enabled.as_deref() == Some("n"));
            if ok {
                Outcome::Pass(
                    "cloud-init provisions; WALinuxAgent (Provisioning.Agent=auto) handles extensions".into(),
                )
            } else {
                Outcome::Fail(format!(
                    "both WALinuxAgent and cloud-init are enabled and waagent.conf has Provisioning.Agent={}: both would provision",
                    prov.as_deref().unwrap_or("(unset)")
                ))
            }
        }
    }
}

fn sshd(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    if l.sshd_enabled {
        Outcome::Pass("sshd is enabled".into())
    } else {
        Outcome::Fail("sshd is not enabled".into())
    }
}

fn fstab(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    let bad: Vec<&str> = l
        .fstab
        .iter()
        .map(|e| e.spec.as_str())
        .filter(|s| {
            ["/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd", "/dev/nvme"]
                .iter()
                .any(|p| s.starts_with(p))
        })
        .collect();
    if bad.is_empty() {
        Outcome::Pass("fstab names devices by UUID, LABEL or stable paths".into())
    } else {
        Outcome::Fail(format!(
            "fstab names kernel device paths: {}",
            bad.join(", ")
        ))
    }
}

fn net_rules(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    let r = &l.network.persistent_net_rules;
    if r.is_empty() {
        Outcome::Pass("no MAC-bound persistent net rules".into())
    } else {
        Outcome::Fail(
            r.iter()
                .map(|p| format!("{} bound to {}", p.name, p.mac))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

fn root_fs(f: &Facts) -> Outcome {
    let l = get!(linux(f));
    let k = l.root.fs_kind.as_str();
    if ["ext4", "ext3", "ext2", "xfs", "btrfs"].contains(&k) {
        Outcome::Pass(format!("root filesystem is {k}"))
    } else {
        Outcome::Fail(format!("root filesystem is {k:?}"))
    }
}

fn udf_vfat(f: &Facts) -> Outcome {
    kernel_drivers(f, "udf/vfat", &["udf", "vfat"], true)
}

fn virtio(f: &Facts) -> Outcome {
    kernel_drivers(
        f,
        "virtio drivers",
        &["virtio_scsi", "virtio_net", "virtio_pci"],
        false,
    )
}

fn ena_nvme(f: &Facts) -> Outcome {
    kernel_drivers(f, "ENA/NVMe drivers", &["ena", "nvme"], true)
}

// ---------------------------------------------------------------- Windows

fn generalized(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    let g = &w.generalization;
    let state = g.image_state.as_deref().unwrap_or("unknown");
    if f.specialized {
        Outcome::Pass(format!("specialized on purpose (ImageState {state})"))
    } else if g.generalized {
        Outcome::Pass(format!("generalized (ImageState {state})"))
    } else {
        Outcome::Fail(format!("not generalized (ImageState {state})"))
    }
}

fn rdp(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    match (w.rdp.enabled, w.rdp.port) {
        (Some(true), Some(3389)) => Outcome::Pass("RDP enabled on port 3389".into()),
        (e, p) => Outcome::Fail(format!(
            "RDP {} on port {}",
            match e {
                Some(true) => "enabled",
                Some(false) => "disabled (fDenyTSConnections=1)",
                None => "state unknown",
            },
            p.map_or("unknown".to_string(), |p| p.to_string())
        )),
    }
}

fn san(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    match w.san_policy {
        Some(1) => Outcome::Pass("SAN policy OnlineAll".into()),
        Some(v) => Outcome::Fail(format!(
            "SAN policy is {v} ({}), not OnlineAll (1)",
            crate::guest::windows::san_policy_name(v)
        )),
        None => Outcome::Fail("SAN policy is not set (Windows defaults to offline shared)".into()),
    }
}

fn rtiu(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    match w.real_time_is_universal {
        Some(1) => Outcome::Pass("RealTimeIsUniversal = 1".into()),
        v => Outcome::Fail(format!(
            "RealTimeIsUniversal is {}",
            v.map_or("unset".to_string(), |v| v.to_string())
        )),
    }
}

fn firewall(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    let off: Vec<&str> = [
        ("Domain", w.firewall.domain),
        ("Private", w.firewall.private),
        ("Public", w.firewall.public),
    ]
    .iter()
    .filter(|(_, v)| *v != Some(true))
    .map(|(n, _)| *n)
    .collect();
    if off.is_empty() {
        Outcome::Pass("Domain, Private and Public profiles on".into())
    } else {
        Outcome::Fail(format!(
            "firewall profiles off or unset: {}",
            off.join(", ")
        ))
    }
}

fn bcd(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    if w.bcd_present {
        Outcome::Pass("BCD store present".into())
    } else {
        Outcome::Fail("no BCD store (Boot\\BCD or EFI\\Microsoft\\Boot\\BCD) on any volume".into())
    }
}

fn service<'a>(w: &'a WindowsInfo, n: &str) -> Option<&'a crate::guest::windows::ServiceInfo> {
    w.services
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(n) && s.present)
}

fn vm_agent(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    let missing: Vec<&str> = ["WindowsAzureGuestAgent", "RdAgent"]
        .into_iter()
        .filter(|n| service(w, n).is_none())
        .collect();
    if missing.is_empty() {
        Outcome::Pass("WindowsAzureGuestAgent and RdAgent services present".into())
    } else {
        Outcome::Fail(format!("services absent: {}", missing.join(", ")))
    }
}

fn pagefile(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    if w.pagefiles.is_empty() {
        return Outcome::Pass("no paging file configured".into());
    }
    if w.pagefiles
        .iter()
        .all(|p| p.trim().to_ascii_uppercase().starts_with("D:"))
    {
        Outcome::Pass(format!(
            "paging file on the temporary disk: {}",
            w.pagefiles.join("; ")
        ))
    } else {
        Outcome::Fail(format!(
            "PagingFiles is {:?}, not on D: (the temporary disk)",
            w.pagefiles
        ))
    }
}

fn term_service(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    match service(w, "TermService").map(|s| s.start) {
        None => Outcome::Fail("the TermService service is absent".into()),
        Some(Some(s @ (2 | 3))) => Outcome::Pass(format!(
            "TermService start type {}",
            crate::guest::windows::start_type_name(s)
        )),
        Some(Some(s)) => Outcome::Fail(format!(
            "TermService start type is {}",
            crate::guest::windows::start_type_name(s)
        )),
        Some(None) => Outcome::Fail("TermService has no Start value".into()),
    }
}

fn sql(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    if w.sql_server.is_empty() {
        return Outcome::Pass("no SQL Server instance".into());
    }
    if f.specialized {
        return Outcome::Pass("SQL Server present; image is specialized".into());
    }
    let names: Vec<&str> = w.sql_server.iter().map(|s| s.name.as_str()).collect();
    Outcome::Fail(format!(
        "SQL Server instance(s) {} in a generalized image",
        names.join(", ")
    ))
}

fn sharepoint(f: &Facts) -> Outcome {
    let w = get!(windows(f));
    if w.sharepoint.is_empty() {
        Outcome::Pass("no SharePoint".into())
    } else {
        let v: Vec<&str> = w.sharepoint.iter().map(|s| s.version.as_str()).collect();
        Outcome::Fail(format!("SharePoint {} installed", v.join(", ")))
    }
}

/// The guest rules.
pub const GUEST_RULES: &[Rule] = &[
    Rule {
        id: "azure.linux.hyperv-drivers",
        severity: Severity::Error,
        title: "Hyper-V drivers are available to the default kernel at boot",
        why: "Without hv_vmbus, hv_storvsc and hv_netvsc built in or in the initramfs the kernel cannot see its disk or network on Azure.",
        fix: "Rebuild the initramfs with the Hyper-V drivers (dracut --add-drivers \"hv_vmbus hv_storvsc hv_netvsc\", or list them in /etc/initramfs-tools/modules) before converting.",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: hyperv,
    },
    Rule {
        id: "azure.linux.console-ttys0",
        severity: Severity::Error,
        title: "console=ttyS0 is on the kernel command line",
        why: "Azure's boot diagnostics and serial console read the first serial port; without it a boot failure cannot be seen.",
        fix: "`onramp customize IMAGE --kernel-arg console=ttyS0` (or add it to GRUB_CMDLINE_LINUX).",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: console,
    },
    Rule {
        id: "azure.linux.no-swap",
        severity: Severity::Warning,
        title: "No swap on the OS disk",
        why: "Swap on the OS disk is slow and billed; the provisioning agent puts swap on the temporary resource disk.",
        fix: "`onramp customize IMAGE --no-swap` (removes fstab swap entries), then configure swap through cloud-init or waagent.conf (ResourceDisk.EnableSwap).",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: swap,
    },
    Rule {
        id: "azure.linux.provisioning-agent",
        severity: Severity::Error,
        title: "Exactly one provisioning agent is enabled, consistently configured",
        why: "With no agent the VM never reports ready (OSProvisioningTimedOut); with WALinuxAgent and cloud-init both provisioning they race. cloud-init alongside waagent with Provisioning.Agent=auto is the documented combination.",
        fix: "`onramp customize IMAGE --agent fixtures/agents/azure-ready` installs and enables a consistent agent configuration.",
        doc: AZ_AGENT_DOC,
        profiles: &["azure-linux"],
        check: agent,
    },
    Rule {
        id: "azure.linux.sshd",
        severity: Severity::Error,
        title: "sshd is enabled",
        why: "Azure Linux VMs are reached over SSH; a disabled sshd leaves only the serial console.",
        fix: "Enable it in the guest (systemctl enable sshd / ssh) before converting.",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: sshd,
    },
    Rule {
        id: "azure.linux.fstab-stable-names",
        severity: Severity::Warning,
        title: "fstab names filesystems by UUID or LABEL, not /dev/sdX",
        why: "Device names change on Azure (the temporary disk and data disks shift letters); a /dev/sdX entry may mount the wrong disk or stop the boot.",
        fix: "Replace /dev/sdX entries with UUID= or LABEL= in /etc/fstab before converting.",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: fstab,
    },
    Rule {
        id: "azure.linux.no-persistent-net-rules",
        severity: Severity::Warning,
        title: "No MAC-bound persistent network rules",
        why: "The VM gets a new MAC address on Azure; a rule binding eth0 to the old MAC renames the interface and the VM has no network.",
        fix: "Delete /etc/udev/rules.d/70-persistent-net.rules (and 75-persistent-net-generator.rules) before converting.",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: net_rules,
    },
    Rule {
        id: "azure.linux.root-fs",
        severity: Severity::Error,
        title: "The root filesystem type is supported",
        why: "Azure's endorsed distributions boot from ext4, XFS or Btrfs roots.",
        fix: "Rebuild the image with an ext4, XFS or Btrfs root.",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: root_fs,
    },
    Rule {
        id: "azure.linux.udf-vfat",
        severity: Severity::Warning,
        title: "udf and vfat are available to the kernel",
        why: "Azure provisioning data arrives on a UDF-formatted virtual CD (and vfat for some agents); without udf the agent cannot read it.",
        fix: "Install or enable the udf and vfat modules (remove any `install udf /bin/true` blacklist in /etc/modprobe.d).",
        doc: AZ_LINUX_DOC,
        profiles: &["azure-linux"],
        check: udf_vfat,
    },
    Rule {
        id: "gce.linux.virtio-drivers",
        severity: Severity::Error,
        title: "virtio drivers are available to the default kernel at boot",
        why: "Compute Engine disks and NICs are virtio-scsi and virtio-net devices; the kernel needs virtio_scsi, virtio_net and virtio_pci built in or in the initramfs.",
        fix: "Rebuild the initramfs with the virtio drivers (dracut --add-drivers \"virtio_scsi virtio_net virtio_pci\") before converting.",
        doc: GCE_DOC,
        profiles: &["gce"],
        check: virtio,
    },
    Rule {
        id: "aws.linux.ena-nvme",
        severity: Severity::Warning,
        title: "ENA and NVMe drivers are installed",
        why: "Nitro instance types expose disks as NVMe and the network as ENA; without these drivers the import works only on older instance types.",
        fix: "Install the ena and nvme drivers (and add nvme to the initramfs) before converting.",
        doc: AWS_DOC,
        profiles: &["aws"],
        check: ena_nvme,
    },
    Rule {
        id: "azure.windows.generalized",
        severity: Severity::Error,
        title: "The image is generalized (Sysprep) unless marked specialized",
        why: "A generalized image is expected for image galleries and new VMs; an image that is neither generalized nor declared specialized fails provisioning.",
        fix: "Run `sysprep /generalize /oobe /shutdown` in the guest, or pass `--specialized` if the image is meant as a specialized disk.",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: generalized,
    },
    Rule {
        id: "azure.windows.rdp",
        severity: Severity::Error,
        title: "Remote Desktop is enabled on port 3389",
        why: "Without RDP on 3389 the VM cannot be reached.",
        fix: "Set fDenyTSConnections=0 and PortNumber=3389 (Terminal Server\\WinStations\\RDP-Tcp) before converting.",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: rdp,
    },
    Rule {
        id: "azure.windows.san-policy",
        severity: Severity::Error,
        title: "The SAN policy is OnlineAll",
        why: "With another SAN policy, data disks attached in Azure stay offline.",
        fix: "`diskpart` then `san policy=onlineall` (HKLM\\SYSTEM\\...\\Services\\partmgr\\Parameters SanPolicy=1).",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: san,
    },
    Rule {
        id: "azure.windows.utc-clock",
        severity: Severity::Error,
        title: "RealTimeIsUniversal = 1",
        why: "Azure's hardware clock is UTC; without RealTimeIsUniversal Windows reads it as local time.",
        fix: "Set HKLM\\SYSTEM\\CurrentControlSet\\Control\\TimeZoneInformation RealTimeIsUniversal=1 (DWORD).",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: rtiu,
    },
    Rule {
        id: "azure.windows.firewall",
        severity: Severity::Warning,
        title: "Windows Firewall profiles are on",
        why: "Microsoft's upload checklist turns on the Domain, Private and Public profiles (with RDP allowed).",
        fix: "`Set-NetFirewallProfile -Profile Domain,Public,Private -Enabled True` before converting.",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: firewall,
    },
    Rule {
        id: "azure.windows.bcd",
        severity: Severity::Error,
        title: "A BCD store is present",
        why: "Windows Boot Manager needs the BCD store to boot.",
        fix: "Rebuild it with `bcdboot C:\\Windows` before converting.",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: bcd,
    },
    Rule {
        id: "azure.windows.vm-agent",
        severity: Severity::Warning,
        title: "The Azure VM Agent services are present",
        why: "Without WindowsAzureGuestAgent and RdAgent there are no extensions, password reset or health reporting.",
        fix: "Install the Azure VM Agent MSI in the guest, or inject it offline with `onramp customize IMAGE OUT --to azure-vhd --agent DIR` (a bundle like fixtures/agents/azure-vm-agent-windows holding the real agent files).",
        doc: "https://learn.microsoft.com/azure/virtual-machines/extensions/agent-windows",
        profiles: &["azure-windows"],
        check: vm_agent,
    },
    Rule {
        id: "azure.windows.pagefile",
        severity: Severity::Warning,
        title: "The paging file is on the temporary disk (D:)",
        why: "Microsoft recommends the paging file on the D: temporary disk, not the OS disk.",
        fix: "Set Memory Management PagingFiles to `D:\\pagefile.sys` before converting.",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: pagefile,
    },
    Rule {
        id: "azure.windows.termservice",
        severity: Severity::Error,
        title: "The Remote Desktop service (TermService) starts automatically or manually",
        why: "A disabled TermService means no RDP.",
        fix: "`Set-Service -Name TermService -StartupType Manual` (or Automatic) before converting.",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: term_service,
    },
    Rule {
        id: "azure.windows.sql-sysprep",
        severity: Severity::Warning,
        title: "SQL Server in a generalized image was prepared through its SysPrep path",
        why: "SQL Server installed normally does not survive Sysprep generalization; it must be prepared with SQL Server's own image preparation (PrepareImage) and completed after deployment.",
        fix: "Install SQL Server with `setup.exe /ACTION=PrepareImage` before Sysprep and complete it after deployment, or pass `--specialized`.",
        doc: "https://learn.microsoft.com/sql/database-engine/install-windows/considerations-for-installing-sql-server-using-sysprep",
        profiles: &["azure-windows"],
        check: sql,
    },
    Rule {
        id: "azure.windows.sharepoint",
        severity: Severity::Info,
        title: "SharePoint is configured after deployment",
        why: "A SharePoint farm's configuration is tied to the machine; it must be (re)configured after the VM is deployed.",
        fix: "Run the SharePoint Products Configuration Wizard after deployment.",
        doc: AZ_WIN_DOC,
        profiles: &["azure-windows"],
        check: sharepoint,
    },
];
