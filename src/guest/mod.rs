//! Offline guest inspection: what is inside a disk, without booting it.
//!
//! [`inspect`] scans the partition layout ([`crate::partition`]), probes every
//! volume for a filesystem ([`crate::fs::probe`]), picks the root filesystem
//! (the one holding `/etc/os-release`, `/usr/lib/os-release` or `/etc/fstab`),
//! mounts the others where the guest's `/etc/fstab` puts them (by UUID, LABEL,
//! PARTUUID/PARTLABEL, `/dev/disk/by-*`, `/dev/sdXN`-style device names or LVM
//! names) into a [`GuestFs`], and gathers the Linux facts of [`linux`]. The
//! result is an [`Inspection`], serialised with the stable JSON schema of
//! `docs/inspect-schema.md`.
//!
//! Every failure below the disk level (a damaged filesystem, an unreadable
//! file) becomes a warning in the result, so one bad volume does not hide the
//! rest.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod initramfs;
pub mod linux;
pub mod rpmdb;
pub mod windows;

use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::fs::{self, DirEntry, FileSystem, FileType, Metadata};
use crate::partition::{self, Layout, Scheme, Volume};
use std::sync::Arc;

/// Version of the JSON schema (docs/inspect-schema.md). Bumped only on
/// incompatible changes; new optional fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole inspection result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The disk and its partition layout.
    pub disk: DiskInfo,
    /// Every volume with the filesystem found on it.
    pub volumes: Vec<VolumeInfo>,
    /// "linux", "windows" or null when no operating system was recognised.
    pub os: Option<String>,
    /// Linux facts, when the root is a Linux system.
    pub linux: Option<linux::LinuxInfo>,
    /// Windows facts, when a volume holds a Windows system root.
    pub windows: Option<windows::WindowsInfo>,
    /// Problems that did not stop the inspection.
    pub warnings: Vec<String>,
}

/// Disk-level facts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskInfo {
    /// Virtual size in bytes.
    pub size_bytes: u64,
    /// Image format ("raw", "qcow2", ...).
    pub format: String,
    /// "gpt", "mbr" or "none".
    pub partition_table: Scheme,
    /// Logical sector size the table was read with.
    pub sector_size: u32,
    /// GPT disk GUID or MBR disk signature.
    pub disk_id: Option<String>,
    /// GPT disk whose MBR also lists partitions.
    pub hybrid_mbr: bool,
    /// "uefi" when an EFI system partition exists, else "bios".
    pub boot_mode: String,
}

/// A volume and what is on it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeInfo {
    /// The volume as the partition scan found it.
    #[serde(flatten)]
    pub volume: Volume,
    /// The filesystem found, if any.
    pub filesystem: Option<FsInfo>,
    /// Where the guest mounts it ("/", "/boot", "/boot/efi"), if it does.
    pub mount_point: Option<String>,
}

/// A recognised filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsInfo {
    /// "ext2", "ext3", "ext4", "vfat", "xfs", "ntfs", ...
    pub kind: String,
    /// UUID as blkid prints it.
    pub uuid: Option<String>,
    /// Volume label.
    pub label: Option<String>,
}

/// The guest's filesystems mounted at their mount points: one [`FileSystem`]
/// whose paths cross mounts, so [`fs::resolve`] follows symlinks across them.
pub struct GuestFs {
    /// (mount point, filesystem), longest mount point first.
    mounts: Vec<(String, Arc<dyn FileSystem>)>,
}

impl GuestFs {
    /// Just a root.
    pub fn new(root: Arc<dyn FileSystem>) -> Self {
        GuestFs {
            mounts: vec![("/".into(), root)],
        }
    }

    /// Mount `fs` at `at` (an absolute path).
    pub fn mount(&mut self, at: &str, fs: Arc<dyn FileSystem>) {
        let at = if at.len() > 1 {
            at.trim_end_matches('/')
        } else {
            at
        };
        self.mounts.retain(|(m, _)| m != at);
        self.mounts.push((at.to_string(), fs));
        self.mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    }

    fn route<'a>(&'a self, path: &str) -> Result<(&'a dyn FileSystem, String)> {
        for (m, f) in &self.mounts {
            if m == "/" {
                return Ok((f.as_ref(), path.to_string()));
            }
            if let Some(rest) = path.strip_prefix(m.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    let p = if rest.is_empty() {
                        "/".to_string()
                    } else {
                        rest.to_string()
                    };
                    return Ok((f.as_ref(), p));
                }
            }
        }
        Err(Error::invalid("guest has no root filesystem"))
    }

    /// Read a text file by guest path (symlinks followed); `None` if absent.
    pub fn text(&self, path: &str) -> Result<Option<String>> {
        Ok(
            fs::read_guest_file(self, path, crate::limits::MAX_GUEST_TEXT_BYTES)?
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        )
    }

    /// Entries of a directory by guest path (symlinks followed); empty if absent.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let p = fs::resolve(self, path, true)?;
        match self.stat(&p)? {
            Some(m) if m.file_type == FileType::Dir => self.read_dir(&p),
            _ => Ok(Vec::new()),
        }
    }

    /// Metadata after following symlinks; `None` if absent.
    pub fn stat_follow(&self, path: &str) -> Result<Option<Metadata>> {
        let p = fs::resolve(self, path, true)?;
        self.stat(&p)
    }
}

impl FileSystem for GuestFs {
    fn kind(&self) -> &'static str {
        "guest"
    }
    fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        let (f, p) = self.route(path)?;
        f.stat(&p)
    }
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let (f, p) = self.route(path)?;
        f.read_dir(&p)
    }
    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let (f, p) = self.route(path)?;
        f.read_file(&p, limit)
    }
    fn read_link(&self, path: &str) -> Result<String> {
        let (f, p) = self.route(path)?;
        f.read_link(&p)
    }
}

/// A probed volume.
pub struct Probed {
    /// The volume.
    pub volume: Volume,
    /// Its filesystem, if recognised.
    pub fs: Option<Arc<dyn FileSystem>>,
}

/// Inspect a disk.
pub fn inspect(src: Arc<dyn BlockSource>) -> Result<Inspection> {
    let layout = partition::scan(&src)?;
    let mut warnings = layout.warnings.clone();
    let probed = probe_volumes(&src, &layout, &mut warnings);
    let mut out = Inspection {
        schema_version: SCHEMA_VERSION,
        disk: DiskInfo {
            size_bytes: src.size(),
            format: src.format_name().to_string(),
            partition_table: layout.scheme,
            sector_size: layout.sector_size,
            disk_id: layout.disk_id.clone(),
            hybrid_mbr: layout.hybrid_mbr,
            boot_mode: if layout.has_esp() { "uefi" } else { "bios" }.into(),
        },
        volumes: probed
            .iter()
            .map(|p| VolumeInfo {
                volume: p.volume.clone(),
                filesystem: p.fs.as_ref().map(|f| FsInfo {
                    kind: f.kind().to_string(),
                    uuid: f.uuid(),
                    label: f.label(),
                }),
                mount_point: None,
            })
            .collect(),
        os: None,
        linux: None,
        windows: None,
        warnings: Vec::new(),
    };
    // The root: the first filesystem that looks like a Linux root.
    let mut root = None;
    'vols: for (i, p) in probed.iter().enumerate() {
        let Some(f) = p.fs.as_ref() else { continue };
        for path in ["/etc/os-release", "/usr/lib/os-release", "/etc/fstab"] {
            match fs::resolve(f.as_ref(), path, true).and_then(|r| f.stat(&r)) {
                Ok(Some(_)) => {
                    root = Some(i);
                    break 'vols;
                }
                Ok(None) => {}
                Err(e) => {
                    warnings.push(format!("{} ({}): {e}", describe(&p.volume), f.kind()));
                    // Try the other marker files: a damaged /etc still leaves
                    // /usr/lib/os-release and a partial inspection.
                }
            }
        }
    }
    if let Some(ri) = root {
        out.os = Some("linux".into());
        let info = linux::inspect(&probed, ri, &mut out.volumes, &mut warnings);
        out.linux = Some(info);
    } else {
        inspect_windows(&probed, &mut out, &mut warnings);
    }
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert(w.clone()));
    out.warnings = warnings;
    Ok(out)
}

/// Find a volume holding a Windows system root and inspect it; the BCD store
/// may live on another volume (the ESP or "System Reserved").
fn inspect_windows(probed: &[Probed], out: &mut Inspection, warnings: &mut Vec<String>) {
    for (i, p) in probed.iter().enumerate() {
        let Some(f) = p.fs.as_ref() else { continue };
        match windows::find_system_root(f.as_ref()) {
            Ok(Some(_)) => {}
            Ok(None) => continue,
            Err(e) => {
                warnings.push(format!("{} ({}): {e}", describe(&p.volume), f.kind()));
                continue;
            }
        }
        match windows::inspect(f.as_ref()) {
            Ok(mut info) => {
                if !info.bcd_present {
                    info.bcd_present = probed.iter().enumerate().any(|(j, q)| {
                        j != i
                            && q.fs
                                .as_ref()
                                .is_some_and(|g| windows::bcd_present(g.as_ref()).unwrap_or(false))
                    });
                }
                warnings.extend(info.warnings.iter().cloned());
                out.os = Some("windows".into());
                if let Some(v) = out.volumes.get_mut(i) {
                    v.mount_point = Some("C:".into());
                }
                out.windows = Some(info);
                return;
            }
            Err(e) => warnings.push(format!("{} (windows): {e}", describe(&p.volume))),
        }
    }
}

fn probe_volumes(
    src: &Arc<dyn BlockSource>,
    layout: &Layout,
    warnings: &mut Vec<String>,
) -> Vec<Probed> {
    layout
        .volumes
        .iter()
        .map(|v| {
            let fs = match v.open(src).and_then(fs::probe) {
                Ok(Some(f)) => Some(Arc::from(f)),
                Ok(None) => None,
                Err(e) => {
                    warnings.push(format!("volume {} ({}): {e}", v.index, describe(v)));
                    None
                }
            };
            Probed {
                volume: v.clone(),
                fs,
            }
        })
        .collect()
}

/// Short description of a volume for messages: "gpt partition 2", "lvm rhel/root".
pub fn describe(v: &Volume) -> String {
    match (&v.scheme, &v.name) {
        (Scheme::Lvm, Some(n)) => format!("LV {n}"),
        (Scheme::None, _) => "whole disk".into(),
        (s, _) => format!(
            "{} partition {}",
            serde_json::to_value(s)
                .ok()
                .and_then(|x| x.as_str().map(str::to_string))
                .unwrap_or_default(),
            v.index
        ),
    }
}

/// The short, grouped human rendering of an inspection.
pub fn render_text(r: &Inspection) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let d = &r.disk;
    let table = serde_json::to_value(d.partition_table)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "disk: {} bytes, {}, partition table {table} ({}-byte sectors), boot mode {}",
        d.size_bytes, d.format, d.sector_size, d.boot_mode
    );
    let _ = writeln!(s, "volumes:");
    for v in &r.volumes {
        let fsd = v.filesystem.as_ref().map_or("-".to_string(), |f| {
            format!(
                "{}{}{}",
                f.kind,
                f.uuid
                    .as_ref()
                    .map(|u| format!(" UUID={u}"))
                    .unwrap_or_default(),
                f.label
                    .as_ref()
                    .map(|l| format!(" LABEL={l}"))
                    .unwrap_or_default()
            )
        });
        let _ = writeln!(
            s,
            "  {:<16} {:>12} bytes at {:<12} type {}{}{}{}  {fsd}{}",
            describe(&v.volume),
            v.volume.size_bytes,
            v.volume.start_bytes,
            v.volume.type_id,
            v.volume
                .type_name
                .as_ref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default(),
            if v.volume.esp { " esp" } else { "" },
            if v.volume.bootable { " boot" } else { "" },
            v.mount_point
                .as_ref()
                .map(|m| format!("  mounted at {m}"))
                .unwrap_or_default()
        );
    }
    if let Some(l) = &r.linux {
        let di = &l.distro;
        let _ = writeln!(
            s,
            "os: linux {} {} {}",
            di.pretty_name
                .as_deref()
                .or(di.name.as_deref())
                .unwrap_or("?"),
            di.version_id
                .as_deref()
                .map(|v| format!("version {v}"))
                .unwrap_or_default(),
            di.codename
                .as_deref()
                .map(|c| format!("({c})"))
                .unwrap_or_default()
        );
        if let Some(h) = &l.hostname {
            let _ = writeln!(s, "hostname: {h}");
        }
        let _ = writeln!(
            s,
            "root: {} UUID={}",
            l.root.fs_kind,
            l.root.uuid.as_deref().unwrap_or("?")
        );
        let _ = writeln!(s, "fstab:");
        for e in &l.fstab {
            let _ = writeln!(
                s,
                "  {} {} {} {}",
                e.spec, e.mount_point, e.fs_type, e.options
            );
        }
        let b = &l.boot_loader;
        let _ = writeln!(s, "boot loader: {}", b.kind.as_deref().unwrap_or("unknown"));
        if let Some(c) = &b.grub_cmdline_linux {
            let _ = writeln!(s, "  GRUB_CMDLINE_LINUX=\"{c}\"");
        }
        if let Some(c) = &b.grub_cmdline_linux_default {
            let _ = writeln!(s, "  GRUB_CMDLINE_LINUX_DEFAULT=\"{c}\"");
        }
        for e in &b.bls_entries {
            let _ = writeln!(
                s,
                "  BLS {}: {}",
                e.file,
                e.options.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(s, "kernels:");
        for k in &l.kernels {
            let hv: Vec<String> = k.hyperv.iter().map(|(m, st)| format!("{m}={st}")).collect();
            let _ = writeln!(
                s,
                "  {}{}  {}",
                k.version,
                k.initramfs
                    .as_ref()
                    .map(|i| format!(" (initramfs {} modules)", i.modules.len()))
                    .unwrap_or_default(),
                hv.join(" ")
            );
        }
        let _ = writeln!(
            s,
            "init: {}  sshd enabled: {}",
            l.init_system,
            if l.sshd_enabled { "yes" } else { "no" }
        );
        if let Some(w) = &l.agents.walinuxagent {
            let _ = writeln!(
                s,
                "walinuxagent: {} (Provisioning.Agent={})",
                w.version.as_deref().unwrap_or("version unknown"),
                w.provisioning_agent.as_deref().unwrap_or("-")
            );
        }
        if let Some(c) = &l.agents.cloud_init {
            let _ = writeln!(
                s,
                "cloud-init: {} datasource_list={}",
                c.version.as_deref().unwrap_or("version unknown"),
                c.datasource_list
                    .as_ref()
                    .map(|v| format!("[{}]", v.join(", ")))
                    .unwrap_or("-".into())
            );
        }
        let p = &l.packages;
        let _ = writeln!(
            s,
            "packages: {}",
            match (&p.manager, p.parsed) {
                (Some(m), true) => format!("{m}, {} installed", p.count),
                (Some(_), false) => p.note.clone().unwrap_or_default(),
                (None, _) => "none found".into(),
            }
        );
        let _ = writeln!(
            s,
            "network: {}{}",
            if l.network.styles.is_empty() {
                "none found".to_string()
            } else {
                l.network.styles.join(", ")
            },
            if l.network.persistent_net_rules.is_empty() {
                String::new()
            } else {
                format!(
                    " (+{} persistent-net rules)",
                    l.network.persistent_net_rules.len()
                )
            }
        );
    } else if let Some(w) = &r.windows {
        for line in w.human_lines() {
            let _ = writeln!(s, "{line}");
        }
    } else {
        let _ = writeln!(s, "os: none recognised");
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
