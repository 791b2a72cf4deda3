//! Linux facts from a guest's files: distribution, fstab, boot loader, kernels
//! and their Hyper-V drivers, init system and enabled units, Azure agents,
//! packages and network configuration style.
//!
//! Every file is read through [`GuestFs`] with a size bound; an unreadable or
//! malformed file becomes a warning and leaves its field empty.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::{initramfs, GuestFs, Probed, VolumeInfo};
use crate::fs::{self, FileType};
use crate::partition::Scheme;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Hyper-V drivers a VM needs on Azure, with the kernel config symbol of each.
pub const HYPERV_DRIVERS: [(&str, &str); 4] = [
    ("hv_vmbus", "CONFIG_HYPERV"),
    ("hv_storvsc", "CONFIG_HYPERV_STORAGE"),
    ("hv_netvsc", "CONFIG_HYPERV_NET"),
    ("hv_utils", "CONFIG_HYPERV_UTILS"),
];

/// Most kernels / BLS entries / units / grub lines reported.
const MAX_ITEMS: usize = 10_000;
/// Most installed packages listed (dpkg or rpm): 1,000,000.
const MAX_PACKAGES: usize = 1_000_000;

/// All Linux facts.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinuxInfo {
    /// Distribution.
    pub distro: Distro,
    /// `/etc/hostname`.
    pub hostname: Option<String>,
    /// The root filesystem.
    pub root: RootInfo,
    /// `/etc/fstab` entries in file order.
    pub fstab: Vec<FstabEntry>,
    /// Boot loader configuration.
    pub boot_loader: BootLoader,
    /// Installed kernels, sorted by version string.
    pub kernels: Vec<Kernel>,
    /// "systemd", "sysvinit", "upstart" or "unknown".
    pub init_system: String,
    /// Units enabled through `/etc/systemd/system/*.wants` / `*.requires` symlinks.
    pub enabled_units: Vec<EnabledUnit>,
    /// An ssh/sshd service or socket is enabled.
    pub sshd_enabled: bool,
    /// Azure guest agents.
    pub agents: Agents,
    /// Installed packages.
    pub packages: Packages,
    /// Network configuration style.
    pub network: Network,
}

/// Distribution identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Distro {
    /// os-release `ID` (or lsb `DISTRIB_ID` lower-cased).
    pub id: Option<String>,
    /// os-release `NAME`.
    pub name: Option<String>,
    /// os-release `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// `VERSION_ID` / `DISTRIB_RELEASE` / the number in redhat-release.
    pub version_id: Option<String>,
    /// `VERSION_CODENAME` / `DISTRIB_CODENAME` / the word in parentheses of redhat-release.
    pub codename: Option<String>,
    /// `ID_LIKE`, split.
    pub id_like: Vec<String>,
    /// Files the facts came from.
    pub sources: Vec<String>,
}

/// The root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RootInfo {
    /// Index of its volume in `volumes` (0-based position).
    pub volume: usize,
    /// Filesystem kind.
    pub fs_kind: String,
    /// Filesystem UUID.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
}

/// One line of `/etc/fstab`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabEntry {
    /// First field (`UUID=...`, `/dev/sda1`, ...).
    pub spec: String,
    /// Mount point (`none` or `swap` for swap).
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount options.
    pub options: String,
    /// A swap entry.
    pub swap: bool,
    /// Position in `volumes` of the volume the spec names, when found on this disk.
    pub volume: Option<usize>,
}

/// Boot loader configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BootLoader {
    /// "grub2", "grub2+bls", "bls" or null.
    pub kind: Option<String>,
    /// `GRUB_CMDLINE_LINUX` from /etc/default/grub.
    pub grub_cmdline_linux: Option<String>,
    /// `GRUB_CMDLINE_LINUX_DEFAULT` from /etc/default/grub.
    pub grub_cmdline_linux_default: Option<String>,
    /// The grub.cfg read.
    pub grub_cfg: Option<String>,
    /// `linux`/`linuxefi`/`linux16` lines of grub.cfg, without the keyword.
    pub grub_cfg_linux_lines: Vec<String>,
    /// Boot Loader Specification entries (/boot/loader/entries/*.conf).
    pub bls_entries: Vec<BlsEntry>,
}

/// One BLS entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlsEntry {
    /// File name.
    pub file: String,
    /// `title`.
    pub title: Option<String>,
    /// `version`.
    pub version: Option<String>,
    /// `linux`.
    pub linux: Option<String>,
    /// `options`.
    pub options: Option<String>,
}

/// One installed kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Kernel {
    /// Release string (`6.1.0-13-amd64`).
    pub version: String,
    /// `/boot/vmlinuz-VERSION` present.
    pub vmlinuz: Option<String>,
    /// `/lib/modules/VERSION` present.
    pub modules_dir: bool,
    /// `/boot/config-VERSION` present.
    pub config: Option<String>,
    /// The initramfs, if found.
    pub initramfs: Option<InitramfsInfo>,
    /// For each Hyper-V driver: "builtin", "initramfs", "module" (installed but
    /// not in the initramfs), "missing" or "unknown" (no config, no module list).
    pub hyperv: BTreeMap<String, String>,
}

/// An initramfs and its modules.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InitramfsInfo {
    /// Guest path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Segment compressions in order ("none", "gzip", "zstd", "xz", "lz4").
    pub segments: Vec<String>,
    /// Count of entries.
    pub entries: usize,
    /// Kernel module file names inside.
    pub modules: Vec<String>,
    /// Why it could not be (fully) read.
    pub error: Option<String>,
}

/// A unit enabled by a `.wants`/`.requires` symlink.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnabledUnit {
    /// The unit (`ssh.service`).
    pub unit: String,
    /// The target or unit that wants it (`multi-user.target`).
    pub wanted_by: String,
}

/// Azure agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Agents {
    /// WALinuxAgent, if installed.
    pub walinuxagent: Option<WaAgent>,
    /// cloud-init, if installed.
    pub cloud_init: Option<CloudInit>,
}

/// WALinuxAgent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WaAgent {
    /// Version (from its version.py or the package database).
    pub version: Option<String>,
    /// `Provisioning.Agent` of /etc/waagent.conf.
    pub provisioning_agent: Option<String>,
    /// `Provisioning.Enabled` of /etc/waagent.conf.
    pub provisioning_enabled: Option<String>,
    /// Its service is enabled.
    pub enabled: bool,
}

/// cloud-init.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CloudInit {
    /// Version (package database or its version.py).
    pub version: Option<String>,
    /// `datasource_list` from /etc/cloud/cloud.cfg and cloud.cfg.d/*.cfg (last wins).
    pub datasource_list: Option<Vec<String>>,
    /// File that set `datasource_list`.
    pub datasource_list_from: Option<String>,
}

/// Installed packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Packages {
    /// "dpkg", "rpm" or null.
    pub manager: Option<String>,
    /// The database could be read.
    pub parsed: bool,
    /// Why not, when not ("rpmdb present, not parsed").
    pub note: Option<String>,
    /// Count of installed packages (when parsed).
    pub count: usize,
    /// Packages (when parsed), sorted by name.
    pub list: Vec<Package>,
}

/// One package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: Option<String>,
}

/// Network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Network {
    /// Styles found: "netplan", "ifupdown", "networkmanager", "network-scripts",
    /// "wicked", "systemd-networkd".
    pub styles: Vec<String>,
    /// Config files that showed each style.
    pub files: Vec<String>,
    /// Interface names pinned to MAC addresses by persistent-net udev rules.
    pub persistent_net_rules: Vec<PersistentNet>,
}

/// A persistent-net rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PersistentNet {
    /// MAC address.
    pub mac: String,
    /// Interface name.
    pub name: String,
}

struct Ctx<'a> {
    g: GuestFs,
    warnings: &'a mut Vec<String>,
}

impl Ctx<'_> {
    fn text(&mut self, p: &str) -> Option<String> {
        match self.g.text(p) {
            Ok(t) => t,
            Err(e) => {
                self.warnings.push(format!("{p}: {e}"));
                None
            }
        }
    }
    fn list(&mut self, p: &str) -> Vec<fs::DirEntry> {
        match self.g.list(p) {
            Ok(mut v) => {
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v.truncate(MAX_ITEMS);
                v
            }
            Err(e) => {
                self.warnings.push(format!("{p}: {e}"));
                Vec::new()
            }
        }
    }
    fn exists(&mut self, p: &str) -> bool {
        matches!(self.g.stat_follow(p), Ok(Some(_)))
    }
    fn size(&mut self, p: &str) -> Option<u64> {
        self.g.stat_follow(p).ok().flatten().map(|m| m.size)
    }
}

/// Parse `KEY=value` lines (os-release, lsb-release, /etc/default/grub), unquoting.
pub fn parse_kv(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            m.insert(k.trim().to_string(), v.to_string());
        }
    }
    m
}

/// Gather Linux facts with `probed[root]` as the root filesystem.
pub fn inspect(
    probed: &[Probed],
    root: usize,
    vols: &mut [VolumeInfo],
    warnings: &mut Vec<String>,
) -> LinuxInfo {
    let Some(root_fs) = probed.get(root).and_then(|p| p.fs.clone()) else {
        return LinuxInfo::default();
    };
    let mut c = Ctx {
        g: GuestFs::new(root_fs.clone()),
        warnings,
    };
    let mut info = LinuxInfo {
        root: RootInfo {
            volume: root,
            fs_kind: root_fs.kind().to_string(),
            uuid: root_fs.uuid(),
            label: root_fs.label(),
        },
        ..LinuxInfo::default()
    };
    if let Some(v) = vols.get_mut(root) {
        v.mount_point = Some("/".into());
    }
    // fstab first: mount the other filesystems so /boot, /usr, /var resolve.
    if let Some(t) = c.text("/etc/fstab") {
        info.fstab = parse_fstab(&t);
        for e in &mut info.fstab {
            e.volume = find_volume(&e.spec, probed);
            if e.swap || e.mount_point == "/" || !e.mount_point.starts_with('/') {
                continue;
            }
            match e.volume.and_then(|i| probed.get(i).map(|p| (i, p))) {
                Some((i, p)) => {
                    if let Some(f) = &p.fs {
                        c.g.mount(&e.mount_point, Arc::clone(f));
                        if let Some(v) = vols.get_mut(i) {
                            v.mount_point = Some(e.mount_point.clone());
                        }
                    }
                }
                None => {
                    if !matches!(
                        e.fs_type.as_str(),
                        "proc"
                            | "sysfs"
                            | "tmpfs"
                            | "devpts"
                            | "nfs"
                            | "nfs4"
                            | "cifs"
                            | "auto"
                            | "none"
                            | "bind"
                            | "debugfs"
                            | "securityfs"
                    ) {
                        c.warnings.push(format!(
                            "fstab: {} for {} is not on this disk",
                            e.spec, e.mount_point
                        ));
                    }
                }
            }
        }
    }
    info.distro = distro(&mut c);
    info.hostname = c
        .text("/etc/hostname")
        .or_else(|| c.text("/etc/HOSTNAME"))
        .and_then(|t| {
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
        });
    info.boot_loader = boot_loader(&mut c);
    info.kernels = kernels(&mut c);
    info.init_system = init_system(&mut c);
    info.enabled_units = enabled_units(&mut c);
    info.sshd_enabled = info.enabled_units.iter().any(|u| {
        matches!(
            u.unit.as_str(),
            "ssh.service" | "sshd.service" | "ssh.socket" | "sshd.socket"
        )
    });
    info.packages = packages(&mut c);
    info.agents = agents(&mut c, &info.packages, &info.enabled_units);
    info.network = network(&mut c);
    info
}

fn distro(c: &mut Ctx<'_>) -> Distro {
    let mut d = Distro::default();
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(t) = c.text(p) {
            let m = parse_kv(&t);
            d.id = m.get("ID").cloned();
            d.name = m.get("NAME").cloned();
            d.pretty_name = m.get("PRETTY_NAME").cloned();
            d.version_id = m.get("VERSION_ID").cloned();
            d.codename = m
                .get("VERSION_CODENAME")
                .cloned()
                .or_else(|| m.get("UBUNTU_CODENAME").cloned())
                .filter(|s| !s.is_empty());
            d.id_like = m
                .get("ID_LIKE")
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
            d.sources.push(p.into());
            break;
        }
    }
    if let Some(t) = c.text("/etc/lsb-release") {
        let m = parse_kv(&t);
        if d.id.is_none() {
            d.id = m.get("DISTRIB_ID").map(|s| s.to_lowercase());
        }
        if d.version_id.is_none() {
            d.version_id = m.get("DISTRIB_RELEASE").cloned();
        }
        if d.codename.is_none() {
            d.codename = m.get("DISTRIB_CODENAME").cloned();
        }
        if d.pretty_name.is_none() {
            d.pretty_name = m.get("DISTRIB_DESCRIPTION").cloned();
        }
        d.sources.push("/etc/lsb-release".into());
    }
    if let Some(t) = c.text("/etc/redhat-release") {
        // "Red Hat Enterprise Linux release 9.2 (Plow)"
        let line = t.lines().next().unwrap_or("").trim().to_string();
        if d.version_id.is_none() {
            d.version_id = line
                .split_whitespace()
                .find(|w| w.chars().next().is_some_and(|ch| ch.is_ascii_digit()))
                .map(str::to_string);
        }
        if d.codename.is_none() {
            d.codename = line
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(x, _)| x.to_string());
        }
        if d.pretty_name.is_none() {
            d.pretty_name = Some(line);
        }
        d.sources.push("/etc/redhat-release".into());
    }
    d
}

/// Parse fstab lines.
pub fn parse_fstab(t: &str) -> Vec<FstabEntry> {
    t.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (spec, mp, ty) = (f.first()?, f.get(1)?, f.get(2).copied().unwrap_or("auto"));
            Some(FstabEntry {
                spec: unescape(spec),
                mount_point: unescape(mp),
                fs_type: ty.to_string(),
                options: f.get(3).copied().unwrap_or("defaults").to_string(),
                swap: ty == "swap",
                volume: None,
            })
        })
        .take(MAX_ITEMS)
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t")
}

/// The volume (position in `probed`) an fstab spec names.
fn find_volume(spec: &str, probed: &[Probed]) -> Option<usize> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let by_fs = |f: &dyn Fn(&dyn fs::FileSystem) -> bool| {
        probed
            .iter()
            .position(|p| p.fs.as_ref().is_some_and(|x| f(x.as_ref())))
    };
    let (kind, val) = if let Some(v) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        ("uuid", v)
    } else if let Some(v) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        ("label", v)
    } else if let Some(v) = spec
        .strip_prefix("PARTUUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partuuid/"))
    {
        ("partuuid", v)
    } else if let Some(v) = spec
        .strip_prefix("PARTLABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partlabel/"))
    {
        ("partlabel", v)
    } else {
        ("dev", spec)
    };
    let val = val.trim_matches('"');
    match kind {
        "uuid" => by_fs(&|f| f.uuid().is_some_and(|u| eq(&u, val))),
        "label" => by_fs(&|f| f.label().is_some_and(|l| l == val.replace("\\x20", " "))),
        "partuuid" => probed.iter().position(|p| {
            p.volume.scheme != Scheme::Lvm && p.volume.uuid.as_deref().is_some_and(|u| eq(u, val))
        }),
        "partlabel" => probed
            .iter()
            .position(|p| p.volume.scheme == Scheme::Gpt && p.volume.name.as_deref() == Some(val)),
        _ => {
            let dev = val.strip_prefix("/dev/")?;
            // LVM: /dev/mapper/vg-lv (dashes in names doubled) or /dev/vg/lv.
            let lv = if let Some(m) = dev.strip_prefix("mapper/") {
                split_mapper(m)
            } else if dev.matches('/').count() == 1 && !dev.starts_with("disk/") {
                dev.split_once('/')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            } else {
                None
            };
            if let Some((vg, l)) = lv {
                let want = format!("{vg}/{l}");
                return probed.iter().position(|p| {
                    p.volume.scheme == Scheme::Lvm && p.volume.name.as_deref() == Some(&want)
                });
            }
            let n = partition_number(dev)?;
            probed
                .iter()
                .position(|p| {
                    matches!(p.volume.scheme, Scheme::Mbr | Scheme::Gpt) && p.volume.index == n
                })
                .or_else(|| {
                    (n == 0)
                        .then(|| probed.iter().position(|p| p.volume.scheme == Scheme::None))
                        .flatten()
                })
        }
    }
}

fn split_mapper(m: &str) -> Option<(String, String)> {
    // Split at the first single dash; "--" stands for a dash inside a name.
    let b = m.as_bytes();
    let mut i = 0usize;
    while i < b.len() {
        if b.get(i) == Some(&b'-') {
            if b.get(i.saturating_add(1)) == Some(&b'-') {
                i = i.saturating_add(2);
                continue;
            }
            let vg = m.get(..i)?.replace("--", "-");
            let lv = m.get(i.saturating_add(1)..)?.replace("--", "-");
            return Some((vg, lv));
        }
        i = i.saturating_add(1);
    }
    None
}

/// Partition number of a Linux device name: sda2 -> 2, nvme0n1p3 -> 3, vda -> 0.
fn partition_number(dev: &str) -> Option<u32> {
    let known = ["sd", "vd", "xvd", "hd"];
    if known.iter().any(|k| dev.starts_with(k)) {
        let digits: String = dev
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Some(digits.parse().unwrap_or(0));
    }
    if dev.starts_with("nvme") || dev.starts_with("mmcblk") {
        return match dev.rsplit_once('p') {
            Some((_, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                n.parse().ok()
            }
            _ => Some(0),
        };
    }
    None
}

fn boot_loader(c: &mut Ctx<'_>) -> BootLoader {
    let mut b = BootLoader::default();
    if let Some(t) = c.text("/etc/default/grub") {
        let m = parse_kv(&t);
        b.grub_cmdline_linux = m.get("GRUB_CMDLINE_LINUX").cloned();
        b.grub_cmdline_linux_default = m.get("GRUB_CMDLINE_LINUX_DEFAULT").cloned();
    }
    let mut cfgs: Vec<String> = vec!["/boot/grub/grub.cfg".into(), "/boot/grub2/grub.cfg".into()];
    for d in c.list("/boot/efi/EFI") {
        if d.file_type == FileType::Dir {
            cfgs.push(format!("/boot/efi/EFI/{}/grub.cfg", d.name));
        }
    }
    for p in cfgs {
        if let Some(t) = c.text(&p) {
            b.grub_cfg_linux_lines = t
                .lines()
                .map(str::trim)
                .filter_map(|l| {
                    ["linux ", "linuxefi ", "linux16 ", "linux\t"]
                        .iter()
                        .find_map(|k| l.strip_prefix(k))
                        .map(|r| r.trim().to_string())
                })
                .take(MAX_ITEMS)
                .collect();
            // A stub that only sources another grub.cfg (UEFI shims) is not the real one.
            let real = !b.grub_cfg_linux_lines.is_empty() || !t.contains("configfile");
            b.grub_cfg = Some(p);
            if real {
                break;
            }
        }
    }
    for e in c.list("/boot/loader/entries") {
        if !e.name.ends_with(".conf") {
            continue;
        }
        if let Some(t) = c.text(&format!("/boot/loader/entries/{}", e.name)) {
            let mut ent = BlsEntry {
                file: e.name.clone(),
                ..BlsEntry::default()
            };
            for l in t.lines() {
                let l = l.trim();
                let (k, v) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
                let v = Some(v.trim().to_string());
                match k {
                    "title" => ent.title = v,
                    "version" => ent.version = v,
                    "linux" => ent.linux = v,
                    "options" => ent.options = v,
                    _ => {}
                }
            }
            b.bls_entries.push(ent);
        }
    }
    let grub = b.grub_cfg.is_some() || b.grub_cmdline_linux.is_some();
    b.kind = match (grub, !b.bls_entries.is_empty()) {
        (true, true) => Some("grub2+bls".into()),
        (true, false) => Some("grub2".into()),
        (false, true) => Some("bls".into()),
        _ => None,
    };
    b
}

fn kernels(c: &mut Ctx<'_>) -> Vec<Kernel> {
    let mut versions: BTreeMap<String, Kernel> = BTreeMap::new();
    let boot = c.list("/boot");
    for e in &boot {
        if let Some(v) = e
            .name
            .strip_prefix("vmlinuz-")
            .or_else(|| e.name.strip_prefix("vmlinux-"))
        {
            if v.contains("rescue") {
                continue;
            }
            versions.entry(v.to_string()).or_default().vmlinuz = Some(format!("/boot/{}", e.name));
        }
    }
    for e in c.list("/lib/modules") {
        if e.file_type == FileType::Dir || e.file_type == FileType::Other {
            versions.entry(e.name.clone()).or_default().modules_dir = true;
        }
    }
    let mut out = Vec::new();
    for (v, mut k) in versions.into_iter().take(64) {
        k.version = v.clone();
        // Config: /boot/config-V, else /lib/modules/V/config (Fedora/SUSE put it there too).
        let mut config_text = None;
        for p in [
            format!("/boot/config-{v}"),
            format!("/lib/modules/{v}/config"),
        ] {
            if let Some(t) = c.text(&p) {
                k.config = Some(p);
                config_text = Some(t);
                break;
            }
        }
        let builtin_list = c.text(&format!("/lib/modules/{v}/modules.builtin"));
        let dep = c.text(&format!("/lib/modules/{v}/modules.dep"));
        let mut initrd_mods: Option<Vec<String>> = None;
        for p in [
            format!("/boot/initrd.img-{v}"),
            format!("/boot/initramfs-{v}.img"),
            format!("/boot/initrd-{v}"),
            format!("/boot/initramfs-{v}"),
        ] {
            let Some(size) = c.size(&p) else { continue };
            let mut info = InitramfsInfo {
                path: p.clone(),
                size,
                ..InitramfsInfo::default()
            };
            match fs::read_guest_file(&c.g, &p, crate::limits::MAX_INITRAMFS_BYTES)
                .and_then(|d| initramfs::list(&d.unwrap_or_default()))
            {
                Ok(l) => {
                    info.segments = l.segments;
                    info.entries = l.entries;
                    info.modules = l.modules;
                    initrd_mods = Some(info.modules.clone());
                }
                Err(e) => {
                    c.warnings.push(format!("{p}: {e}"));
                    info.error = Some(e.to_string());
                }
            }
            k.initramfs = Some(info);
            break;
        }
        for (m, sym) in HYPERV_DRIVERS {
            let state = driver_state(
                config_text.as_deref(),
                builtin_list.as_deref(),
                dep.as_deref(),
                initrd_mods.as_deref(),
                m,
                sym,
            );
            k.hyperv.insert(m.to_string(), state.to_string());
        }
        out.push(k);
    }
    out
}

/// State of module `m` (config symbol `sym`) from the kernel's files.
pub fn driver_state(
    config: Option<&str>,
    builtin: Option<&str>,
    dep: Option<&str>,
    initramfs: Option<&[String]>,
    m: &str,
    sym: &str,
) -> &'static str {
    let cfg = config.and_then(|t| {
        t.lines().find_map(|l| {
            let l = l.trim();
            if l == format!("# {sym} is not set") {
                return Some('n');
            }
            l.strip_prefix(sym)
                .and_then(|r| r.strip_prefix('='))
                .and_then(|v| v.chars().next())
        })
    });
    let in_builtin = builtin.is_some_and(|t| t.lines().any(|l| module_base(l) == m));
    let in_initrd = initramfs.is_some_and(|l| l.iter().any(|x| module_base(x) == m));
    let in_dep = dep.is_some_and(|t| {
        t.lines()
            .any(|l| module_base(l.split(':').next().unwrap_or("")) == m)
    });
    if cfg == Some('y') || in_builtin {
        "builtin"
    } else if in_initrd {
        "initramfs"
    } else if cfg == Some('m') || in_dep {
        "module"
    } else if cfg.is_some() || dep.is_some() {
        "missing"
    } else {
        "unknown"
    }
}

/// `kernel/drivers/hv/hv_vmbus.ko.xz` -> `hv_vmbus`.
fn module_base(p: &str) -> String {
    let b = p.trim().rsplit('/').next().unwrap_or("");
    let b = b.split(".ko").next().unwrap_or(b);
    b.replace('-', "_")
}

fn init_system(c: &mut Ctx<'_>) -> String {
    if let Ok(t) = fs::resolve(&c.g, "/sbin/init", true) {
        if t.contains("systemd") {
            return "systemd".into();
        }
        if t.contains("upstart") {
            return "upstart".into();
        }
    }
    if c.exists("/lib/systemd/systemd") || c.exists("/usr/lib/systemd/systemd") {
        return "systemd".into();
    }
    if c.exists("/etc/init/rc-sysinit.conf") {
        return "upstart".into();
    }
    if c.exists("/etc/inittab") || c.exists("/sbin/init") {
        return "sysvinit".into();
    }
    "unknown".into()
}

fn enabled_units(c: &mut Ctx<'_>) -> Vec<EnabledUnit> {
    let mut out = Vec::new();
    for d in c.list("/etc/systemd/system") {
        let Some(by) = d
            .name
            .strip_suffix(".wants")
            .or_else(|| d.name.strip_suffix(".requires"))
        else {
            continue;
        };
        for u in c.list(&format!("/etc/systemd/system/{}", d.name)) {
            if out.len() < MAX_ITEMS {
                out.push(EnabledUnit {
                    unit: u.name,
                    wanted_by: by.to_string(),
                });
            }
        }
    }
    out
}

fn packages(c: &mut Ctx<'_>) -> Packages {
    let mut p = Packages::default();
    if let Some(t) = c.text("/var/lib/dpkg/status") {
        p.manager = Some("dpkg".into());
        p.parsed = true;
        for para in t.split("\n\n") {
            let mut name = None;
            let mut version = None;
            let mut arch = None;
            let mut installed = false;
            for l in para.lines() {
                if let Some(v) = l.strip_prefix("Package:") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = l.strip_prefix("Version:") {
                    version = Some(v.trim().to_string());
                } else if let Some(v) = l.strip_prefix("Architecture:") {
                    arch = Some(v.trim().to_string());
                } else if let Some(v) = l.strip_prefix("Status:") {
                    installed = v.trim().ends_with(" installed");
                }
            }
            if let (Some(name), Some(version), true) = (name, version, installed) {
                if p.list.len() < MAX_PACKAGES {
                    p.list.push(Package {
                        name,
                        version,
                        arch,
                    });
                }
            }
        }
        p.list.sort_by(|a, b| a.name.cmp(&b.name));
        p.count = p.list.len();
        return p;
    }
    for db in [
        "/var/lib/rpm/rpmdb.sqlite",
        "/usr/lib/sysimage/rpm/rpmdb.sqlite",
        "/var/lib/rpm/Packages",
        "/usr/lib/sysimage/rpm/Packages",
        "/var/lib/rpm/Packages.db",
    ] {
        if c.exists(db) {
            p.manager = Some("rpm".into());
            if db.ends_with(".sqlite") {
                rpm_sqlite(c, db, &mut p);
            } else {
                // Berkeley DB (RHEL 7/8) and ndb (SUSE) are not read.
                p.note = Some(format!("rpmdb present ({db}), not parsed"));
            }
            return p;
        }
    }
    p
}

/// Packages from an rpm sqlite database ([`super::rpmdb`]). A damaged
/// database leaves `parsed` false with a note and a warning; a damaged
/// package header skips that package with a warning.
fn rpm_sqlite(c: &mut Ctx<'_>, db: &str, p: &mut Packages) {
    let bytes = match fs::read_guest_file(&c.g, db, crate::limits::MAX_RPMDB_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            p.note = Some(format!("rpmdb present ({db}), not readable: {e}"));
            c.warnings.push(format!("{db}: {e}"));
            return;
        }
    };
    match super::rpmdb::read_packages(&bytes) {
        Ok(r) => {
            p.parsed = true;
            for s in &r.skipped {
                c.warnings.push(format!("{db}: {s}"));
            }
            let wal = format!("{db}-wal");
            if c.size(&wal).is_some_and(|n| n > 0) {
                c.warnings.push(format!(
                    "{wal} is not empty: changes not yet checkpointed into {db} are not listed"
                ));
            }
            p.list = r
                .packages
                .into_iter()
                .take(MAX_PACKAGES)
                .map(|x| Package {
                    version: x.evr(),
                    name: x.name,
                    arch: x.arch,
                })
                .collect();
            p.list
                .sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
            p.count = p.list.len();
        }
        Err(e) => {
            p.note = Some(format!("rpmdb present ({db}), not parsed: {e}"));
            c.warnings.push(format!("{db}: {e}"));
        }
    }
}

fn python_version(c: &mut Ctx<'_>, rel: &str, key: &str) -> Option<String> {
    let mut dirs = Vec::new();
    for lib in ["/usr/lib", "/usr/lib64", "/usr/local/lib"] {
        for e in c.list(lib) {
            if e.name.starts_with("python3") {
                dirs.push(format!("{lib}/{}", e.name));
            }
        }
    }
    for d in dirs {
        for sp in ["dist-packages", "site-packages"] {
            if let Some(t) = c.text(&format!("{d}/{sp}/{rel}")) {
                for l in t.lines() {
                    let l = l.trim();
                    if let Some(r) = l.strip_prefix(key) {
                        let r = r.trim_start().strip_prefix('=').unwrap_or("").trim();
                        let v = r.trim_matches(|ch| ch == '"' || ch == '\'');
                        if !v.is_empty() {
                            return Some(v.to_string());
                        }
                    }
                }
            }
        }
    }
    None
}

fn pkg_version(p: &Packages, names: &[&str]) -> Option<String> {
    p.list
        .iter()
        .find(|x| names.contains(&x.name.as_str()))
        .map(|x| x.version.clone())
}

fn agents(c: &mut Ctx<'_>, pk: &Packages, units: &[EnabledUnit]) -> Agents {
    let mut a = Agents::default();
    let conf = c.text("/etc/waagent.conf");
    let installed = conf.is_some()
        || c.exists("/usr/sbin/waagent")
        || c.exists("/usr/bin/waagent")
        || pkg_version(pk, &["walinuxagent", "WALinuxAgent"]).is_some();
    if installed {
        let mut w = WaAgent {
            version: python_version(c, "azurelinuxagent/common/version.py", "AGENT_VERSION")
                .or_else(|| pkg_version(pk, &["walinuxagent", "WALinuxAgent"])),
            enabled: units
                .iter()
                .any(|u| matches!(u.unit.as_str(), "walinuxagent.service" | "waagent.service")),
            ..WaAgent::default()
        };
        if let Some(t) = conf {
            let m = parse_kv(&t);
            w.provisioning_agent = m.get("Provisioning.Agent").cloned();
            w.provisioning_enabled = m.get("Provisioning.Enabled").cloned();
        }
        a.walinuxagent = Some(w);
    }
    let cfg = c.text("/etc/cloud/cloud.cfg");
    let ci_installed = cfg.is_some()
        || c.exists("/usr/bin/cloud-init")
        || pkg_version(pk, &["cloud-init"]).is_some();
    if ci_installed {
        let mut ci = CloudInit {
            version: pkg_version(pk, &["cloud-init"])
                .or_else(|| python_version(c, "cloudinit/version.py", "__VERSION__")),
            ..CloudInit::default()
        };
        let mut files: Vec<(String, String)> = Vec::new();
        if let Some(t) = cfg {
            files.push(("/etc/cloud/cloud.cfg".into(), t));
        }
        for e in c.list("/etc/cloud/cloud.cfg.d") {
            if e.name.ends_with(".cfg") {
                let p = format!("/etc/cloud/cloud.cfg.d/{}", e.name);
                if let Some(t) = c.text(&p) {
                    files.push((p, t));
                }
            }
        }
        for (p, t) in files {
            if let Some(l) = datasource_list(&t) {
                ci.datasource_list = Some(l);
                ci.datasource_list_from = Some(p);
            }
        }
        a.cloud_init = Some(ci);
    }
    a
}

/// `datasource_list` of a cloud-init YAML config: flow (`[ Azure, None ]`) or
/// block (`- Azure`) form.
pub fn datasource_list(t: &str) -> Option<Vec<String>> {
    let mut lines = t.lines().peekable();
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix("datasource_list:") else {
            continue;
        };
        let rest = rest.split('#').next().unwrap_or("").trim();
        let clean = |s: &str| {
            s.trim()
                .trim_matches(|ch| ch == '"' || ch == '\'')
                .to_string()
        };
        if let Some(inner) = rest.strip_prefix('[') {
            let inner = inner.split(']').next().unwrap_or("");
            return Some(
                inner
                    .split(',')
                    .map(clean)
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        }
        let mut v = Vec::new();
        while let Some(n) = lines.peek() {
            let tn = n.trim();
            if let Some(item) = tn.strip_prefix("- ") {
                v.push(clean(item.split('#').next().unwrap_or("")));
                lines.next();
            } else if tn.is_empty() || tn.starts_with('#') {
                lines.next();
            } else {
                break;
            }
        }
        return Some(v);
    }
    None
}

fn network(c: &mut Ctx<'_>) -> Network {
    let mut n = Network::default();
    let add = |n: &mut Network, style: &str, file: String| {
        if !n.styles.iter().any(|s| s == style) {
            n.styles.push(style.to_string());
        }
        n.files.push(file);
    };
    for e in c.list("/etc/netplan") {
        if e.name.ends_with(".yaml") || e.name.ends_with(".yml") {
            add(&mut n, "netplan", format!("/etc/netplan/{}", e.name));
        }
    }
    if let Some(t) = c.text("/etc/network/interfaces") {
        let real = t.lines().map(str::trim).any(|l| {
            (l.starts_with("iface ") && !l.starts_with("iface lo ")) || l.starts_with("source")
        });
        if real {
            add(&mut n, "ifupdown", "/etc/network/interfaces".into());
        }
    }
    for e in c.list("/etc/NetworkManager/system-connections") {
        add(
            &mut n,
            "networkmanager",
            format!("/etc/NetworkManager/system-connections/{}", e.name),
        );
    }
    for e in c.list("/etc/sysconfig/network-scripts") {
        if e.name.starts_with("ifcfg-") && e.name != "ifcfg-lo" {
            add(
                &mut n,
                "network-scripts",
                format!("/etc/sysconfig/network-scripts/{}", e.name),
            );
        }
    }
    for e in c.list("/etc/sysconfig/network") {
        if e.name.starts_with("ifcfg-") && e.name != "ifcfg-lo" {
            add(
                &mut n,
                "wicked",
                format!("/etc/sysconfig/network/{}", e.name),
            );
        }
    }
    for e in c.list("/etc/systemd/network") {
        if e.name.ends_with(".network") {
            add(
                &mut n,
                "systemd-networkd",
                format!("/etc/systemd/network/{}", e.name),
            );
        }
    }
    if let Some(t) = c.text("/etc/udev/rules.d/70-persistent-net.rules") {
        for l in t.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let get = |key: &str| {
                l.split(key)
                    .nth(1)
                    .and_then(|r| r.split('"').nth(1))
                    .map(str::to_string)
            };
            if let (Some(mac), Some(name)) = (get("ATTR{address}=="), get("NAME=")) {
                n.persistent_net_rules.push(PersistentNet { mac, name });
            }
        }
    }
    n
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn small_parsers() {
        assert_eq!(
            split_mapper("rhel-root"),
            Some(("rhel".into(), "root".into()))
        );
        assert_eq!(
            split_mapper("my--vg-lv--a"),
            Some(("my-vg".into(), "lv-a".into()))
        );
        assert_eq!(partition_number("sda2"), Some(2));
        assert_eq!(partition_number("nvme0n1p3"), Some(3));
        assert_eq!(partition_number("vda"), Some(0));
        assert_eq!(
            datasource_list("datasource_list: [ Azure, 'None' ]\n"),
            Some(vec!["Azure".into(), "None".into()])
        );
        assert_eq!(
            datasource_list("a: 1\ndatasource_list:\n  - Azure\n  - NoCloud\nb: 2\n"),
            Some(vec!["Azure".into(), "NoCloud".into()])
        );
        assert_eq!(module_base("kernel/drivers/hv/hv_vmbus.ko.zst"), "hv_vmbus");
        let kv = parse_kv("A=\"x y\"\n# c\nB='z'\nC=w\n");
        assert_eq!(kv["A"], "x y");
        assert_eq!(kv["B"], "z");
    }
}
