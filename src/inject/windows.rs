//! Customizing a Windows guest offline (issue 11, "Windows injection").
//!
//! [`plan`] turns customize [`Op`]s and an agent bundle's `windows:` section
//! into [`FsAction`]s on the system volume (the NTFS volume holding
//! `\Windows\System32\config\SYSTEM`), read through the read-only
//! [`FileSystem`] seam, exactly as the Linux planner does:
//!
//! - Windows paths (`C:\WindowsAzure\Packages\x.exe`, `C:/...`, `\...` or
//!   `/...`) map to guest paths on the system volume (`/WindowsAzure/...`);
//!   components that already exist are spelled as stored (NTFS names are
//!   case-insensitive), missing parents get a `Mkdir`;
//! - registry edits (services, values, Azure settings, host name, the
//!   first-boot service) are applied with the [`HiveEditor`] to the SYSTEM and
//!   SOFTWARE hives read from the guest, and each edited hive becomes one
//!   `WriteFile` replacing it. The editor refuses a hive with a pending
//!   transaction log; the hive it writes has equal sequence numbers, so
//!   Windows ignores the old SYSTEM.LOG1/LOG2 beside it (regf specification,
//!   "Dirty state of a hive");
//! - service keys go into every control set `Select` points at (Current,
//!   Default, LastKnownGood): `CurrentControlSet` only exists at run time;
//! - first-boot commands: a generalized image (sysprep'd) gets them in
//!   `C:\Windows\Setup\Scripts\SetupComplete.cmd` (appended when it exists),
//!   which Windows Setup runs once as SYSTEM at the end of setup; a
//!   specialized image never runs Setup again, so it gets a one-shot service
//!   `onramp-firstboot` that runs `C:\Windows\Setup\Scripts\onramp-firstboot.cmd`
//!   at boot and deletes itself. docs/windows.md says why.
//!
//! Linux-only operations (symlinks, modes, owners, xattrs, kernel arguments,
//! swap) are refused on a Windows guest with a message naming them.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::bundle::manifest::{Manifest, WindowsRegistryValue, WindowsService};
use super::bundle::{tar, Bundle};
use super::{FsAction, Op, MAX_EDIT_BYTES};
use crate::error::{Error, Result};
use crate::fs::regf::editor::{encode, HiveEditor};
use crate::fs::regf::windows::{
    add_service, azure_settings, control_sets, service_type, start, ServiceSpec,
};
use crate::fs::regf::ValueData;
use crate::fs::{FileSystem, FileType};
use crate::limits;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the one-shot first-boot service on specialized images.
pub const FIRSTBOOT_SERVICE: &str = "onramp-firstboot";

/// What [`plan`] produces.
#[derive(Debug, Clone, Default)]
pub struct WindowsPlan {
    /// Filesystem actions on the system volume, hives last.
    pub actions: Vec<FsAction>,
    /// One line per registry edit (for `--dry-run` and build manifests).
    pub registry: Vec<String>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// Map a Windows path (`C:\a\b`, `C:/a/b`, `\a\b`, `/a/b`) to a guest path on
/// the system volume (`/a/b`). Other drive letters, `..`, alternate data
/// streams and characters NTFS names cannot hold are refused.
pub fn guest_path(p: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid(format!("Windows path {p:?}: {why}"));
    let mut rest = p.trim();
    let mut chars = rest.chars();
    if let (Some(d), Some(':')) = (chars.next(), chars.next()) {
        if !d.eq_ignore_ascii_case(&'c') {
            return Err(bad(
                "only C: (the system volume) can be written; other drives are other disks",
            ));
        }
        rest = rest.get(2..).unwrap_or("");
    }
    if !rest.starts_with(['\\', '/']) {
        return Err(bad("must be absolute (C:\\... or \\...)"));
    }
    let mut out = String::new();
    for c in rest
        .split(['\\', '/'])
        .filter(|c| !c.is_empty() && *c != ".")
    {
        if c == ".." {
            return Err(bad("'..' is not allowed"));
        }
        if c.contains(['<', '>', ':', '"', '|', '?', '*', '\0']) || c.ends_with([' ', '.']) {
            return Err(bad(&format!(
                "component {c:?} is not a valid NTFS file name"
            )));
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        return Err(bad("names the root of the volume"));
    }
    Ok(out)
}

/// The Windows spelling of a guest path: `/WindowsAzure/x` -> `C:\WindowsAzure\x`.
pub fn windows_path(guest: &str) -> String {
    format!("C:{}", guest.replace('/', "\\"))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => path.get(..i).unwrap_or("/"),
    }
}

/// Parse a number: decimal or `0x` hex.
fn parse_num(s: &str, what: &str) -> Result<u64> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse::<u64>(),
    };
    r.map_err(|_| Error::invalid(format!("{what}: {s:?} is not a number (decimal or 0x hex)")))
}

/// Parse hex bytes: "01 02 ff", "01,02,ff" or "0102ff".
fn parse_hex(s: &str, what: &str) -> Result<Vec<u8>> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',' && *c != ':')
        .collect();
    let bad = || Error::invalid(format!("{what}: {s:?} is not hex bytes like \"01 02 ff\""));
    if !digits.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..digits.len() / 2)
        .map(|i| {
            let at = i.saturating_mul(2);
            digits
                .get(at..at.saturating_add(2))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Start type of a bundle service: boot, system, auto (default), manual, disabled, or 0-4.
pub fn parse_start(s: Option<&str>) -> Result<u32> {
    let Some(s) = s else {
        return Ok(start::AUTO);
    };
    Ok(match s.to_ascii_lowercase().as_str() {
        "boot" => start::BOOT,
        "system" => start::SYSTEM,
        "auto" | "automatic" => start::AUTO,
        "manual" | "demand" => start::DEMAND,
        "disabled" => start::DISABLED,
        n => match n.parse::<u32>() {
            Ok(v) if v <= start::DISABLED => v,
            _ => {
                return Err(Error::invalid(format!(
                    "service start {s:?}: expected boot, system, auto, manual or disabled"
                )))
            }
        },
    })
}

/// Service type of a bundle service: own (0x10, default), share (0x20), kernel, filesystem, or a number.
pub fn parse_service_type(s: Option<&str>) -> Result<u32> {
    let Some(s) = s else {
        return Ok(service_type::WIN32_OWN_PROCESS);
    };
    Ok(match s.to_ascii_lowercase().as_str() {
        "own" | "own_process" | "win32_own_process" => service_type::WIN32_OWN_PROCESS,
        "share" | "share_process" | "win32_share_process" => service_type::WIN32_SHARE_PROCESS,
        "kernel" | "kernel_driver" => 1,
        "filesystem" | "file_system_driver" => 2,
        other => u32::try_from(parse_num(other, "service type")?)
            .map_err(|_| Error::invalid(format!("service type {s:?} does not fit 32 bits")))?,
    })
}

/// Typed data of a bundle registry value.
pub fn registry_data(v: &WindowsRegistryValue) -> Result<ValueData> {
    let what = format!("registry value {}\\{}", v.key, v.name);
    let kind = v.kind.to_ascii_lowercase();
    let kind = kind.strip_prefix("reg_").unwrap_or(&kind);
    Ok(match kind {
        "sz" => ValueData::String(v.value.clone()),
        "expand_sz" => ValueData::ExpandString(v.value.clone()),
        "multi_sz" => ValueData::MultiString(if v.values.is_empty() {
            v.value
                .split('\n')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        } else {
            v.values.clone()
        }),
        "dword" => ValueData::Dword(
            u32::try_from(parse_num(&v.value, &what)?)
                .map_err(|_| Error::invalid(format!("{what}: {} does not fit a DWORD", v.value)))?,
        ),
        "qword" => ValueData::Qword(parse_num(&v.value, &what)?),
        "binary" => ValueData::Binary(parse_hex(&v.value, &what)?),
        other => {
            return Err(Error::invalid(format!(
                "{what}: type {other:?} is not one of sz, expand_sz, multi_sz, dword, qword, binary"
            )))
        }
    })
}

/// Split a bundle key into (hive, key inside the hive).
pub fn split_hive_key(hive: Option<&str>, key: &str) -> Result<(Hive, String)> {
    let mut parts: Vec<&str> = key.split('\\').filter(|p| !p.is_empty()).collect();
    if parts.first().is_some_and(|p| {
        p.eq_ignore_ascii_case("HKLM") || p.eq_ignore_ascii_case("HKEY_LOCAL_MACHINE")
    }) {
        parts.remove(0);
    }
    let from_key = parts.first().and_then(|p| Hive::from_name(p));
    let h = match (hive, from_key) {
        (Some(h), k) => {
            let h = Hive::from_name(h).ok_or_else(|| {
                Error::invalid(format!("registry hive {h:?}: expected SYSTEM or SOFTWARE"))
            })?;
            if k == Some(h) {
                parts.remove(0);
            }
            h
        }
        (None, Some(k)) => {
            parts.remove(0);
            k
        }
        (None, None) => {
            return Err(Error::invalid(format!(
                "registry key {key:?}: name the hive (hive: SYSTEM|SOFTWARE, or a key starting with HKLM\\SYSTEM or HKLM\\SOFTWARE)"
            )))
        }
    };
    Ok((h, parts.join("\\")))
}

/// The hives onramp edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hive {
    /// `System32\config\SYSTEM` (HKLM\SYSTEM).
    System,
    /// `System32\config\SOFTWARE` (HKLM\SOFTWARE).
    Software,
}

impl Hive {
    fn from_name(s: &str) -> Option<Hive> {
        if s.eq_ignore_ascii_case("SYSTEM") {
            Some(Hive::System)
        } else if s.eq_ignore_ascii_case("SOFTWARE") {
            Some(Hive::Software)
        } else {
            None
        }
    }
    /// File name in `System32\config`.
    pub fn name(self) -> &'static str {
        match self {
            Hive::System => "SYSTEM",
            Hive::Software => "SOFTWARE",
        }
    }
}

fn describe_data(d: &ValueData) -> String {
    let (ty, bytes) = encode(d);
    let tn = match ty {
        1 => "REG_SZ",
        2 => "REG_EXPAND_SZ",
        3 => "REG_BINARY",
        4 => "REG_DWORD",
        7 => "REG_MULTI_SZ",
        11 => "REG_QWORD",
        _ => "REG_?",
    };
    let v = match d {
        ValueData::String(s) | ValueData::ExpandString(s) => format!("{s:?}"),
        ValueData::Dword(v) => v.to_string(),
        ValueData::Qword(v) => v.to_string(),
        ValueData::MultiString(v) => format!("{v:?}"),
        _ => format!("{} bytes", bytes.len()),
    };
    format!("{tn} {v}")
}

struct Planner<'a> {
    fs: &'a dyn FileSystem,
    /// System root as stored, e.g. `/Windows`.
    root: String,
    out: WindowsPlan,
    hives: BTreeMap<Hive, (String, HiveEditor)>,
    /// Files the plan wrote (Some) or deleted (None), by upper-cased path.
    pending: BTreeMap<String, Option<Vec<u8>>>,
    /// Directories the plan creates, upper-cased.
    dirs: BTreeSet<String>,
}

impl Planner<'_> {
    /// Canonical spelling of `path` (existing components as stored) and the
    /// type of what it names, if it exists.
    fn lookup(&self, path: &str) -> Result<(String, Option<FileType>)> {
        let mut cur = String::new();
        let mut ty = Some(FileType::Dir);
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let found = match ty {
                Some(FileType::Dir) => {
                    let dir = if cur.is_empty() { "/" } else { cur.as_str() };
                    let want = comp.to_uppercase();
                    self.fs
                        .read_dir(dir)?
                        .into_iter()
                        .find(|e| e.name.to_uppercase() == want)
                }
                _ => None,
            };
            cur.push('/');
            match found {
                Some(e) => {
                    cur.push_str(&e.name);
                    ty = self.fs.stat(&cur)?.map(|m| m.file_type);
                }
                None => {
                    cur.push_str(comp);
                    ty = None;
                }
            }
        }
        if cur.is_empty() {
            cur.push('/');
        }
        Ok((cur, ty))
    }

    fn ensure_dir(&mut self, path: &str) -> Result<String> {
        let (canon, ty) = self.lookup(path)?;
        match ty {
            Some(FileType::Dir) => return Ok(canon),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{} exists and is not a directory",
                    windows_path(&canon)
                )))
            }
            None => {}
        }
        if self.dirs.insert(canon.to_uppercase()) {
            let mut p = parent(&canon);
            while p != "/" && self.dirs.insert(p.to_uppercase()) {
                p = parent(p);
            }
            self.out.actions.push(FsAction::Mkdir {
                path: canon.clone(),
                mode: 0o755,
            });
        }
        Ok(canon)
    }

    fn write(&mut self, path: &str, data: Vec<u8>) -> Result<()> {
        let dir = self.ensure_dir(parent(path))?;
        let name = path.rsplit('/').next().unwrap_or("");
        let (canon, ty) = self.lookup(&format!("{}/{name}", dir.trim_end_matches('/')))?;
        if ty == Some(FileType::Dir) {
            return Err(Error::invalid(format!(
                "{} is a directory, not a file",
                windows_path(&canon)
            )));
        }
        self.pending
            .insert(canon.to_uppercase(), Some(data.clone()));
        self.out.actions.retain(
            |a| !matches!(a, FsAction::WriteFile { path: p, .. } if p.eq_ignore_ascii_case(&canon)),
        );
        self.out.actions.push(FsAction::WriteFile {
            path: canon,
            data,
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
        Ok(())
    }

    fn current(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let (canon, ty) = self.lookup(path)?;
        if let Some(p) = self.pending.get(&canon.to_uppercase()) {
            return Ok(p.clone());
        }
        match ty {
            Some(FileType::File) => self.fs.read_file(&canon, MAX_EDIT_BYTES).map(Some),
            _ => Ok(None),
        }
    }

    fn hive(&mut self, h: Hive) -> Result<&mut HiveEditor> {
        if !self.hives.contains_key(&h) {
            let p = format!("{}/System32/config/{}", self.root, h.name());
            let (canon, ty) = self.lookup(&p)?;
            if ty != Some(FileType::File) {
                return Err(Error::invalid(format!(
                    "Windows: the {} hive {} is missing",
                    h.name(),
                    windows_path(&canon)
                )));
            }
            let bytes = self.fs.read_file(&canon, limits::MAX_HIVE_BYTES)?;
            let ed = HiveEditor::open(bytes).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "{} hive {}: {}",
                        h.name(),
                        windows_path(&canon),
                        e.message()
                    ),
                )
            })?;
            self.hives.insert(h, (canon, ed));
        }
        self.hives
            .get_mut(&h)
            .map(|(_, e)| e)
            .ok_or_else(|| Error::invalid("registry hive not loaded"))
    }

    /// Set a value; a SYSTEM key starting with `CurrentControlSet` goes into
    /// every control set `Select` points at.
    fn set(&mut self, h: Hive, key: &str, name: &str, data: &ValueData) -> Result<()> {
        let ed = self.hive(h)?;
        let mut parts: Vec<&str> = key.split('\\').filter(|p| !p.is_empty()).collect();
        let keys: Vec<String> = if h == Hive::System
            && parts
                .first()
                .is_some_and(|p| p.eq_ignore_ascii_case("CurrentControlSet"))
        {
            parts.remove(0);
            let rest = parts.join("\\");
            control_sets(ed)?
                .into_iter()
                .map(|cs| {
                    if rest.is_empty() {
                        cs
                    } else {
                        format!("{cs}\\{rest}")
                    }
                })
                .collect()
        } else {
            vec![parts.join("\\")]
        };
        for k in &keys {
            ed.set_value(k, name, data)?;
        }
        let shown = if name.is_empty() { "(default)" } else { name };
        for k in keys {
            self.out.registry.push(format!(
                "registry {}\\{k}: {shown} = {}",
                h.name(),
                describe_data(data)
            ));
        }
        Ok(())
    }

    fn service(&mut self, svc: &ServiceSpec) -> Result<()> {
        let sets = add_service(self.hive(Hive::System)?, svc)?;
        self.out.registry.push(format!(
            "registry SYSTEM: service {} (ImagePath {:?}, Start {}, Type {:#x}, {}) in {}",
            svc.name,
            svc.image_path,
            crate::guest::windows::start_type_name(u64::from(svc.start)),
            svc.service_type,
            svc.object_name.as_deref().unwrap_or("LocalSystem"),
            sets.join(", ")
        ));
        Ok(())
    }

    fn bundle(&mut self, m: &Manifest, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let Some(w) = &m.windows else {
            return Err(Error::unsupported(format!(
                "agent bundle {} has no windows: section, and this is a Windows guest",
                m.name
            )));
        };
        if !m.files.is_empty() || !m.systemd_units.is_empty() || !m.config.is_empty() {
            self.out.warnings.push(format!(
                "agent bundle {}: its Linux files, units and config are not used on a Windows guest",
                m.name
            ));
        }
        for f in &w.files {
            let src = tar::normalise(&f.src, "bundle")?;
            let data = files
                .get(&src)
                .ok_or_else(|| Error::invalid(format!("bundle file {:?} is missing", f.src)))?;
            let dest = guest_path(&f.dest)?;
            self.write(&dest, data.clone())?;
        }
        for s in &w.services {
            self.service(&service_spec(s)?)?;
        }
        for r in &w.registry {
            let (h, key) = split_hive_key(r.hive.as_deref(), &r.key)?;
            let data = registry_data(r)?;
            self.set(h, &key, &r.name, &data)?;
        }
        Ok(())
    }

    fn op(&mut self, op: &Op, firstboot: &mut Vec<String>) -> Result<()> {
        let linux_only = |what: &str| {
            Err(Error::unsupported(format!(
                "{what} is a Linux operation; this is a Windows guest"
            )))
        };
        match op {
            Op::Write { path, content } => {
                self.write(&guest_path(path)?, content.clone().into_bytes())?
            }
            Op::Upload { host, guest } => {
                let data = std::fs::read(host).map_err(|e| {
                    Error::invalid(format!("--upload: cannot read {}: {e}", host.display()))
                })?;
                self.write(&guest_path(guest)?, data)?;
            }
            Op::Mkdir(p) => {
                self.ensure_dir(&guest_path(p)?)?;
            }
            Op::Delete(p) => {
                let (canon, _) = self.lookup(&guest_path(p)?)?;
                self.pending.insert(canon.to_uppercase(), None);
                self.out.actions.push(FsAction::Delete { path: canon });
            }
            Op::AppendLine { path, line } => {
                let path = guest_path(path)?;
                let cur = self.current(&path)?.unwrap_or_default();
                self.write(&path, append_crlf(cur, line))?;
            }
            Op::FirstbootCommand(c) => firstboot.push(c.clone()),
            Op::Hostname(name) => self.hostname(name)?,
            Op::AzureWindowsSettings(on) => {
                if *on {
                    let sets = azure_settings(self.hive(Hive::System)?)?;
                    self.out.registry.push(format!(
                        "registry SYSTEM: Azure settings (fDenyTSConnections=0, RDP-Tcp PortNumber=3389, partmgr SanPolicy=1 OnlineAll, RealTimeIsUniversal=1) in {}",
                        sets.join(", ")
                    ));
                }
            }
            Op::NoSwap(false) => {}
            Op::SelinuxRelabel(false) => {}
            Op::SelinuxRelabel(true) => return linux_only("--selinux-relabel"),
            Op::NoSwap(true) => return linux_only("--no-swap"),
            Op::Link { .. } => return linux_only("--link"),
            Op::Chmod { .. } => return linux_only("--chmod"),
            Op::Hardlink { .. } => return linux_only("--hardlink"),
            Op::Chown { .. } => return linux_only("--chown"),
            Op::SetTimes { .. } => return linux_only("--set-times"),
            Op::SetXattr { .. } => return linux_only("--xattr"),
            Op::KernelArg(_) => return linux_only("--kernel-arg"),
        }
        Ok(())
    }

    /// ComputerName (NetBIOS, upper case) and the Tcpip host name, in every
    /// selected control set.
    fn hostname(&mut self, name: &str) -> Result<()> {
        let ok = !name.is_empty()
            && name.len() <= 15
            && !name.chars().all(|c| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(Error::invalid(format!(
                "--hostname: {name:?} is not a valid Windows computer name (1-15 letters, digits or '-', not all digits)"
            )));
        }
        let up = ValueData::String(name.to_ascii_uppercase());
        let host = ValueData::String(name.to_string());
        self.set(
            Hive::System,
            "CurrentControlSet\\Control\\ComputerName\\ComputerName",
            "ComputerName",
            &up,
        )?;
        self.set(
            Hive::System,
            "CurrentControlSet\\Services\\Tcpip\\Parameters",
            "Hostname",
            &host,
        )?;
        self.set(
            Hive::System,
            "CurrentControlSet\\Services\\Tcpip\\Parameters",
            "NV Hostname",
            &host,
        )
    }

    fn firstboot(&mut self, cmds: &[String]) -> Result<()> {
        if cmds.is_empty() {
            return Ok(());
        }
        let generalized = crate::guest::windows::inspect(self.fs)?
            .generalization
            .generalized;
        let scripts = format!("{}/Setup/Scripts", self.root);
        if generalized {
            let path = format!("{scripts}/SetupComplete.cmd");
            let mut text = match self.current(&path)? {
                Some(cur) => {
                    let mut t = String::from_utf8_lossy(&cur).into_owned();
                    if !t.is_empty() && !t.ends_with('\n') {
                        t.push_str("\r\n");
                    }
                    t
                }
                None => String::from("@echo off\r\n"),
            };
            text.push_str(
                "rem onramp: first-boot commands (run once by Windows Setup, as SYSTEM)\r\n",
            );
            for c in cmds {
                text.push_str(c);
                text.push_str("\r\n");
            }
            self.write(&path, text.into_bytes())?;
        } else {
            let path = format!("{scripts}/{FIRSTBOOT_SERVICE}.cmd");
            let mut text = format!(
                "@echo off\r\nrem Written by onramp: first-boot commands, run once by the {FIRSTBOOT_SERVICE} service.\r\n\
                 sc.exe config {FIRSTBOOT_SERVICE} start= disabled >nul 2>&1\r\n"
            );
            for c in cmds {
                text.push_str(c);
                text.push_str("\r\n");
            }
            text.push_str(&format!(
                "sc.exe delete {FIRSTBOOT_SERVICE} >nul 2>&1\r\ndel \"%~f0\"\r\n"
            ));
            self.write(&path, text.into_bytes())?;
            let root_rel = path
                .strip_prefix(&self.root)
                .unwrap_or(&path)
                .replace('/', "\\");
            // cmd.exe is not a service program: the outer cmd starts the
            // script detached and exits at once (the service control manager
            // logs that the service stopped), the script runs to completion.
            self.service(&ServiceSpec {
                name: FIRSTBOOT_SERVICE.into(),
                image_path: format!(
                    "%SystemRoot%\\System32\\cmd.exe /c start \"{FIRSTBOOT_SERVICE}\" /b %SystemRoot%\\System32\\cmd.exe /c \"%SystemRoot%{root_rel}\""
                ),
                start: start::AUTO,
                service_type: service_type::WIN32_OWN_PROCESS,
                object_name: Some("LocalSystem".into()),
                display_name: Some("onramp first-boot commands".into()),
                depends_on: Vec::new(),
            })?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<WindowsPlan> {
        let hives = std::mem::take(&mut self.hives);
        for (_, (path, ed)) in hives {
            let bytes = ed.finish()?;
            // `path` is canonical and exists: no Mkdir, and no copy kept in
            // `pending` (hives can be 100 MiB and more).
            self.out.actions.retain(
                |a| !matches!(a, FsAction::WriteFile { path: p, .. } if p.eq_ignore_ascii_case(&path)),
            );
            self.out.actions.push(FsAction::WriteFile {
                path,
                data: bytes,
                mode: 0o644,
                uid: 0,
                gid: 0,
            });
        }
        Ok(self.out)
    }
}

fn append_crlf(cur: Vec<u8>, line: &str) -> Vec<u8> {
    let mut out = cur;
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend(b"\r\n");
    }
    out.extend(line.as_bytes());
    out.extend(b"\r\n");
    out
}

/// A bundle service as a [`ServiceSpec`].
pub fn service_spec(s: &WindowsService) -> Result<ServiceSpec> {
    if s.image_path.trim().is_empty() {
        return Err(Error::invalid(format!(
            "service {}: image_path is empty",
            s.name
        )));
    }
    Ok(ServiceSpec {
        name: s.name.clone(),
        image_path: s.image_path.clone(),
        start: parse_start(s.start.as_deref())?,
        service_type: parse_service_type(s.service_type.as_deref())?,
        object_name: Some(s.account.clone().unwrap_or_else(|| "LocalSystem".into())),
        display_name: s.display_name.clone(),
        depends_on: s.dependencies.clone(),
    })
}

/// Plan `ops` (and a bundle's `windows:` section) against the Windows system
/// volume `fs`. Bundle files first, then the operations in order, then the
/// first-boot script and the edited hives.
pub fn plan(ops: &[Op], bundle: Option<&Bundle>, fs: &dyn FileSystem) -> Result<WindowsPlan> {
    let root = crate::guest::windows::find_system_root(fs)?.ok_or_else(|| {
        Error::invalid(
            "no Windows system root (\\Windows\\System32\\config\\SYSTEM) on this volume",
        )
    })?;
    let mut p = Planner {
        fs,
        root,
        out: WindowsPlan::default(),
        hives: BTreeMap::new(),
        pending: BTreeMap::new(),
        dirs: BTreeSet::new(),
    };
    match bundle {
        Some(Bundle::Agent { manifest, files }) => p.bundle(manifest, files)?,
        Some(Bundle::Deb(d)) => {
            return Err(Error::unsupported(format!(
                "{} is a Debian package; this is a Windows guest (use an agent.yaml bundle with a windows: section)",
                d.package
            )))
        }
        None => {}
    }
    let mut firstboot = Vec::new();
    for op in ops {
        p.op(op, &mut firstboot)?;
    }
    p.firstboot(&firstboot)?;
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths() {
        assert_eq!(
            guest_path("C:\\WindowsAzure\\Packages\\a.exe").unwrap(),
            "/WindowsAzure/Packages/a.exe"
        );
        assert_eq!(guest_path("c:/x//y/").unwrap(), "/x/y");
        assert_eq!(guest_path("\\x").unwrap(), "/x");
        assert!(guest_path("D:\\x").is_err());
        assert!(guest_path("C:\\a\\..\\b").is_err());
        assert!(guest_path("C:\\a:stream").is_err());
        assert!(guest_path("relative\\x").is_err());
        assert!(guest_path("C:\\").is_err());
        assert_eq!(windows_path("/a/b"), "C:\\a\\b");
    }

    #[test]
    fn registry_specs() {
        let (h, k) = split_hive_key(None, "HKLM\\SYSTEM\\CurrentControlSet\\X").unwrap();
        assert_eq!((h, k.as_str()), (Hive::System, "CurrentControlSet\\X"));
        let (h, k) = split_hive_key(Some("software"), "Microsoft\\Y").unwrap();
        assert_eq!((h, k.as_str()), (Hive::Software, "Microsoft\\Y"));
        let (h, k) = split_hive_key(Some("SOFTWARE"), "HKEY_LOCAL_MACHINE\\SOFTWARE\\Z").unwrap();
        assert_eq!((h, k.as_str()), (Hive::Software, "Z"));
        assert!(split_hive_key(None, "HKLM\\SAM\\X").is_err());
        let v = |kind: &str, value: &str| WindowsRegistryValue {
            hive: None,
            key: "SYSTEM\\K".into(),
            name: "n".into(),
            kind: kind.into(),
            value: value.into(),
            values: vec![],
        };
        assert_eq!(
            registry_data(&v("dword", "0x10")).unwrap(),
            ValueData::Dword(16)
        );
        assert_eq!(
            registry_data(&v("REG_QWORD", "5")).unwrap(),
            ValueData::Qword(5)
        );
        assert_eq!(
            registry_data(&v("binary", "01 02 ff")).unwrap(),
            ValueData::Binary(vec![1, 2, 255])
        );
        assert_eq!(
            registry_data(&v("multi_sz", "a\nb")).unwrap(),
            ValueData::MultiString(vec!["a".into(), "b".into()])
        );
        assert!(registry_data(&v("dword", "0x1_0000_0000")).is_err());
        assert!(registry_data(&v("dword", "4294967296")).is_err());
        assert!(registry_data(&v("binary", "0")).is_err());
        assert!(registry_data(&v("link", "x")).is_err());
        assert_eq!(parse_start(Some("Manual")).unwrap(), 3);
        assert_eq!(parse_start(None).unwrap(), 2);
        assert!(parse_start(Some("sometimes")).is_err());
        assert_eq!(parse_service_type(Some("share")).unwrap(), 0x20);
        assert_eq!(parse_service_type(Some("0x110")).unwrap(), 0x110);
    }
}
