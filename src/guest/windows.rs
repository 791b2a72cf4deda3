//! Offline inspection of a Windows guest: reads the SYSTEM and SOFTWARE
//! registry hives (through [`crate::fs::regf`]) from the system volume and
//! reports what a cloud migration needs to know.
//!
//! Registry locations (documented by Microsoft; names as Windows stores them):
//! - `SOFTWARE\Microsoft\Windows NT\CurrentVersion`: ProductName, EditionID,
//!   InstallationType, CurrentVersion, DisplayVersion/ReleaseId,
//!   CurrentBuildNumber/CurrentBuild, UBR, CurrentMajor/MinorVersionNumber;
//! - `SYSTEM\Select` Current: the control set in use (`ControlSet00N`);
//! - `SYSTEM\<ccs>\Control\Session Manager\Environment` PROCESSOR_ARCHITECTURE;
//! - `SYSTEM\<ccs>\Control\ComputerName\ComputerName` ComputerName and
//!   `SYSTEM\<ccs>\Services\Tcpip\Parameters` Hostname;
//! - Uninstall keys, native and `WOW6432Node`;
//! - `SOFTWARE\Microsoft\Microsoft SQL Server\Instance Names\SQL` and each
//!   instance's `Setup` (Version, Edition, PatchLevel);
//! - `SOFTWARE\Microsoft\Shared Tools\Web Server Extensions\<ver>` (SharePoint);
//! - `SYSTEM\<ccs>\Control\Terminal Server` fDenyTSConnections and
//!   `...\WinStations\RDP-Tcp` PortNumber;
//! - `SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State` ImageState,
//!   `SYSTEM\Setup\Status\SysprepStatus` GeneralizationState, `SYSTEM\Setup` CmdLine;
//! - `SYSTEM\<ccs>\Services\partmgr\Parameters` SanPolicy;
//! - `SYSTEM\<ccs>\Control\TimeZoneInformation` RealTimeIsUniversal;
//! - `SYSTEM\<ccs>\Services\{WindowsAzureGuestAgent,RdAgent,TermService}` Start;
//! - `SYSTEM\<ccs>\Control\Session Manager\Memory Management` PagingFiles;
//! - `SYSTEM\<ccs>\Services\SharedAccess\Parameters\FirewallPolicy\*Profile` EnableFirewall.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use crate::error::{Error, Result};
use crate::fs::regf::{Hive, Key, Value};
use crate::fs::{FileSystem, FileType};
use crate::limits;

/// Everything [`inspect`] learns about a Windows installation. Fields are
/// `None` when the registry does not hold the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WindowsInfo {
    /// Guest path of the system root, e.g. `/Windows`.
    pub system_root: String,
    /// ProductName, e.g. "Windows Server 2022 Datacenter".
    pub product_name: Option<String>,
    /// EditionID, e.g. "ServerDatacenter".
    pub edition: Option<String>,
    /// InstallationType: "Server", "Server Core", "Client".
    pub installation_type: Option<String>,
    /// CurrentVersion (the NT version string, "6.3" since Windows 8.1).
    pub current_version: Option<String>,
    /// CurrentMajorVersionNumber.CurrentMinorVersionNumber, e.g. "10.0", when present.
    pub version: Option<String>,
    /// DisplayVersion (or ReleaseId on older builds), e.g. "21H2".
    pub display_version: Option<String>,
    /// CurrentBuildNumber (or CurrentBuild), e.g. "20348".
    pub build: Option<String>,
    /// Update build revision (UBR).
    pub ubr: Option<u64>,
    /// PROCESSOR_ARCHITECTURE as Windows says it: "AMD64", "x86", "ARM64".
    pub architecture: Option<String>,
    /// ComputerName.
    pub hostname: Option<String>,
    /// Tcpip Hostname (the DNS host name; normally equal to ComputerName up to case).
    pub tcpip_hostname: Option<String>,
    /// Control set in use (SYSTEM\Select Current).
    pub current_control_set: String,
    /// Installed applications from the Uninstall keys.
    pub applications: Vec<Application>,
    /// SQL Server instances.
    pub sql_server: Vec<SqlInstance>,
    /// SharePoint installations.
    pub sharepoint: Vec<SharePoint>,
    /// Remote Desktop settings.
    pub rdp: Rdp,
    /// Sysprep / generalization state.
    pub generalization: Generalization,
    /// SAN policy (partmgr SanPolicy): 1 OnlineAll, 2 OfflineShared, 3 OfflineAll, 4 OfflineInternal.
    pub san_policy: Option<u64>,
    /// Name of the SAN policy value.
    pub san_policy_name: Option<String>,
    /// RealTimeIsUniversal (1: the hardware clock is UTC, as on Azure/Linux hosts).
    pub real_time_is_universal: Option<u64>,
    /// Services that matter for Azure: WindowsAzureGuestAgent, RdAgent, TermService.
    pub services: Vec<ServiceInfo>,
    /// PagingFiles entries (e.g. "?:\pagefile.sys" or "C:\pagefile.sys 0 0").
    pub pagefiles: Vec<String>,
    /// Windows Firewall profile states.
    pub firewall: Firewall,
    /// A BCD store was found on this volume (`Boot/BCD` or `EFI/Microsoft/Boot/BCD`).
    /// The caller ORs in [`bcd_present`] of the other partitions (system/EFI).
    pub bcd_present: bool,
    /// Things worth knowing, e.g. a hive with a pending transaction log.
    pub warnings: Vec<String>,
}

/// One Uninstall entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Application {
    /// DisplayName.
    pub name: String,
    /// DisplayVersion.
    pub version: Option<String>,
    /// Publisher.
    pub publisher: Option<String>,
    /// Uninstall subkey name (a product code GUID or a name).
    pub key: String,
    /// Found under WOW6432Node (a 32-bit application on 64-bit Windows).
    pub wow64: bool,
}

/// A SQL Server database engine instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SqlInstance {
    /// Instance name, e.g. "MSSQLSERVER" (the default instance).
    pub name: String,
    /// Instance id, e.g. "MSSQL15.MSSQLSERVER" (15 = SQL Server 2019).
    pub id: String,
    /// Setup Version, e.g. "15.0.2000.5".
    pub version: Option<String>,
    /// Setup PatchLevel.
    pub patch_level: Option<String>,
    /// Setup Edition, e.g. "Enterprise Edition".
    pub edition: Option<String>,
}

/// A SharePoint installation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharePoint {
    /// Major version key, e.g. "16.0".
    pub version: String,
    /// Build from the Version value, e.g. "16.0.10337.12109".
    pub build: Option<String>,
}

/// Remote Desktop.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rdp {
    /// fDenyTSConnections == 0.
    pub enabled: Option<bool>,
    /// fDenyTSConnections as stored.
    pub deny_ts_connections: Option<u64>,
    /// RDP-Tcp PortNumber.
    pub port: Option<u64>,
}

/// Sysprep state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Generalization {
    /// ImageState, e.g. "IMAGE_STATE_COMPLETE" or "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE".
    pub image_state: Option<String>,
    /// SysprepStatus GeneralizationState (7 after a generalize pass).
    pub generalization_state: Option<u64>,
    /// SYSTEM\Setup CmdLine (e.g. "oobe\windeploy.exe" on a sysprepped image).
    pub setup_cmdline: Option<String>,
    /// The image is generalized (ImageState a GENERALIZE_RESEAL state, or GeneralizationState 7).
    pub generalized: bool,
}

/// A service key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// The service key exists.
    pub present: bool,
    /// Start value: 0 boot, 1 system, 2 automatic, 3 manual, 4 disabled.
    pub start: Option<u64>,
    /// Start type name.
    pub start_type: Option<String>,
    /// ImagePath.
    pub image_path: Option<String>,
}

/// Firewall profiles (EnableFirewall != 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Firewall {
    /// DomainProfile.
    pub domain: Option<bool>,
    /// StandardProfile (shown as "Private" by Windows).
    pub private: Option<bool>,
    /// PublicProfile.
    pub public: Option<bool>,
}

/// Services [`inspect`] reports.
pub const SERVICES: [&str; 3] = ["WindowsAzureGuestAgent", "RdAgent", "TermService"];

/// Name of a service Start value.
pub fn start_type_name(v: u64) -> &'static str {
    match v {
        0 => "boot",
        1 => "system",
        2 => "automatic",
        3 => "manual",
        4 => "disabled",
        _ => "unknown",
    }
}

/// Name of a SAN policy value.
pub fn san_policy_name(v: u64) -> &'static str {
    match v {
        1 => "OnlineAll",
        2 => "OfflineShared",
        3 => "OfflineAll",
        4 => "OfflineInternal",
        _ => "unknown",
    }
}

/// Resolve `path` (absolute, `/`-separated) case-insensitively, component by
/// component; returns the path as stored and its type.
pub fn find_ci(fs: &dyn FileSystem, path: &str) -> Result<Option<(String, FileType)>> {
    let mut cur = String::from("/");
    let mut ty = FileType::Dir;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if ty != FileType::Dir {
            return Ok(None);
        }
        let want = comp.to_uppercase();
        let entries = match fs.read_dir(&cur) {
            Ok(e) => e,
            Err(_) => return Ok(None),
        };
        let Some(e) = entries.into_iter().find(|e| e.name.to_uppercase() == want) else {
            return Ok(None);
        };
        if !cur.ends_with('/') {
            cur.push('/');
        }
        cur.push_str(&e.name);
        ty = match fs.stat(&cur)? {
            Some(m) => m.file_type,
            None => return Ok(None),
        };
    }
    Ok(Some((cur, ty)))
}

/// The system root (`/Windows` or `/WINNT`, any case) holding the SYSTEM and
/// SOFTWARE hives, if this filesystem has one.
pub fn find_system_root(fs: &dyn FileSystem) -> Result<Option<String>> {
    for cand in ["/Windows", "/WINNT"] {
        if let Some((root, FileType::Dir)) = find_ci(fs, cand)? {
            let sys = find_ci(fs, &format!("{root}/System32/config/SYSTEM"))?;
            let soft = find_ci(fs, &format!("{root}/System32/config/SOFTWARE"))?;
            if matches!(sys, Some((_, FileType::File))) && matches!(soft, Some((_, FileType::File)))
            {
                return Ok(Some(root));
            }
        }
    }
    Ok(None)
}

/// True when this filesystem holds a BCD store (`/Boot/BCD` on a BIOS system
/// partition or the Windows volume, `/EFI/Microsoft/Boot/BCD` on an ESP).
pub fn bcd_present(fs: &dyn FileSystem) -> Result<bool> {
    for p in ["/Boot/BCD", "/EFI/Microsoft/Boot/BCD"] {
        if let Some((_, FileType::File)) = find_ci(fs, p)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_hive(fs: &dyn FileSystem, root: &str, name: &str) -> Result<Vec<u8>> {
    let (p, _) = find_ci(fs, &format!("{root}/System32/config/{name}"))?.ok_or_else(|| {
        Error::corrupt_msg(format!("Windows: {root}/System32/config/{name} is missing"))
    })?;
    fs.read_file(&p, limits::MAX_HIVE_BYTES)
}

fn string(k: &Option<Key<'_, '_>>, name: &str) -> Result<Option<String>> {
    Ok(match k {
        Some(k) => k.value(name)?.and_then(|v| v.as_string()),
        None => None,
    })
}

fn number(k: &Option<Key<'_, '_>>, name: &str) -> Result<Option<u64>> {
    Ok(match k {
        Some(k) => k.value(name)?.and_then(|v| v.as_u64()),
        None => None,
    })
}

fn value(k: &Option<Key<'_, '_>>, name: &str) -> Result<Option<Value>> {
    match k {
        Some(k) => k.value(name),
        None => Ok(None),
    }
}

/// Inspect the Windows installation on `fs` (the volume holding the system
/// root). Fails if there is none.
pub fn inspect(fs: &dyn FileSystem) -> Result<WindowsInfo> {
    let root = find_system_root(fs)?
        .ok_or_else(|| Error::invalid("no Windows system root (Windows/System32/config/SYSTEM and SOFTWARE) on this filesystem"))?;
    let system_bytes = read_hive(fs, &root, "SYSTEM")?;
    let software_bytes = read_hive(fs, &root, "SOFTWARE")?;
    let system = Hive::parse(&system_bytes)
        .map_err(|e| Error::new(e.kind(), format!("SYSTEM hive: {}", e.message())))?;
    let software = Hive::parse(&software_bytes)
        .map_err(|e| Error::new(e.kind(), format!("SOFTWARE hive: {}", e.message())))?;
    let mut info = WindowsInfo {
        system_root: root,
        ..Default::default()
    };
    for (n, h) in [("SYSTEM", &system), ("SOFTWARE", &software)] {
        if h.pending_log() {
            let b = h.base_block();
            info.warnings.push(format!(
                "{n} hive has a pending transaction log (sequence numbers {} != {}): recent changes may sit in {n}.LOG1/LOG2, which are not replayed",
                b.primary_sequence, b.secondary_sequence
            ));
        }
    }

    // Version.
    let cv = software.open_key("Microsoft\\Windows NT\\CurrentVersion")?;
    info.product_name = string(&cv, "ProductName")?;
    info.edition = string(&cv, "EditionID")?;
    info.installation_type = string(&cv, "InstallationType")?;
    info.current_version = string(&cv, "CurrentVersion")?;
    info.display_version = match string(&cv, "DisplayVersion")? {
        Some(v) => Some(v),
        None => string(&cv, "ReleaseId")?,
    };
    info.build = match string(&cv, "CurrentBuildNumber")? {
        Some(v) => Some(v),
        None => string(&cv, "CurrentBuild")?,
    };
    info.ubr = number(&cv, "UBR")?;
    if let (Some(ma), Some(mi)) = (
        number(&cv, "CurrentMajorVersionNumber")?,
        number(&cv, "CurrentMinorVersionNumber")?,
    ) {
        info.version = Some(format!("{ma}.{mi}"));
    }

    // Control set.
    let select = system.open_key("Select")?;
    let current = number(&select, "Current")?.unwrap_or(1);
    let ccs = format!("ControlSet{current:03}");
    if system.open_key(&ccs)?.is_none() {
        info.warnings.push(format!(
            "SYSTEM\\Select Current points at {ccs}, which does not exist"
        ));
    }
    let sk = |p: &str| system.open_key(&format!("{ccs}\\{p}"));
    info.current_control_set = ccs.clone();
    info.architecture = string(
        &sk("Control\\Session Manager\\Environment")?,
        "PROCESSOR_ARCHITECTURE",
    )?;
    info.hostname = string(&sk("Control\\ComputerName\\ComputerName")?, "ComputerName")?;
    info.tcpip_hostname = string(&sk("Services\\Tcpip\\Parameters")?, "Hostname")?;

    // Applications.
    for (base, wow64) in [
        ("Microsoft\\Windows\\CurrentVersion\\Uninstall", false),
        (
            "WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
            true,
        ),
    ] {
        if let Some(k) = software.open_key(base)? {
            for app in k.subkeys()? {
                let a = Some(app);
                if let Some(name) = string(&a, "DisplayName")? {
                    info.applications.push(Application {
                        name,
                        version: string(&a, "DisplayVersion")?,
                        publisher: string(&a, "Publisher")?,
                        key: app.name()?,
                        wow64,
                    });
                }
            }
        }
    }

    // SQL Server.
    for base in [
        "Microsoft\\Microsoft SQL Server",
        "WOW6432Node\\Microsoft\\Microsoft SQL Server",
    ] {
        if let Some(names) = software.open_key(&format!("{base}\\Instance Names\\SQL"))? {
            for v in names.values()? {
                let Some(id) = v.as_string() else { continue };
                let setup = software.open_key(&format!("{base}\\{id}\\Setup"))?;
                if info.sql_server.iter().any(|s| s.id == id) {
                    continue;
                }
                info.sql_server.push(SqlInstance {
                    name: v.name.clone(),
                    version: string(&setup, "Version")?,
                    patch_level: string(&setup, "PatchLevel")?,
                    edition: string(&setup, "Edition")?,
                    id,
                });
            }
        }
    }

    // SharePoint.
    if let Some(wse) = software.open_key("Microsoft\\Shared Tools\\Web Server Extensions")? {
        for k in wse.subkeys()? {
            let name = k.name()?;
            let numeric = !name.is_empty() && name.chars().all(|c| c.is_ascii_digit() || c == '.');
            let build = k.value("Version")?.and_then(|v| v.as_string());
            if numeric && (build.is_some() || k.subkey("WSS")?.is_some()) {
                info.sharepoint.push(SharePoint {
                    version: name,
                    build,
                });
            }
        }
    }

    // RDP.
    let ts = sk("Control\\Terminal Server")?;
    info.rdp.deny_ts_connections = number(&ts, "fDenyTSConnections")?;
    info.rdp.enabled = info.rdp.deny_ts_connections.map(|v| v == 0);
    info.rdp.port = number(
        &sk("Control\\Terminal Server\\WinStations\\RDP-Tcp")?,
        "PortNumber",
    )?;

    // Generalization.
    let g = &mut info.generalization;
    g.image_state = string(
        &software.open_key("Microsoft\\Windows\\CurrentVersion\\Setup\\State")?,
        "ImageState",
    )?;
    g.generalization_state = number(
        &system.open_key("Setup\\Status\\SysprepStatus")?,
        "GeneralizationState",
    )?;
    g.setup_cmdline = string(&system.open_key("Setup")?, "CmdLine")?;
    g.generalized = g
        .image_state
        .as_deref()
        .is_some_and(|s| s.starts_with("IMAGE_STATE_GENERALIZE_RESEAL"))
        || g.generalization_state == Some(7);

    info.san_policy = number(&sk("Services\\partmgr\\Parameters")?, "SanPolicy")?;
    info.san_policy_name = info.san_policy.map(|v| san_policy_name(v).to_string());
    info.real_time_is_universal =
        number(&sk("Control\\TimeZoneInformation")?, "RealTimeIsUniversal")?;

    for name in SERVICES {
        let k = sk(&format!("Services\\{name}"))?;
        let start = number(&k, "Start")?;
        info.services.push(ServiceInfo {
            name: name.to_string(),
            present: k.is_some(),
            start,
            start_type: start.map(|v| start_type_name(v).to_string()),
            image_path: string(&k, "ImagePath")?,
        });
    }

    if let Some(v) = value(
        &sk("Control\\Session Manager\\Memory Management")?,
        "PagingFiles",
    )? {
        info.pagefiles = v.as_strings().unwrap_or_default();
    }

    let fw = |p: &str| -> Result<Option<bool>> {
        Ok(number(
            &sk(&format!(
                "Services\\SharedAccess\\Parameters\\FirewallPolicy\\{p}"
            ))?,
            "EnableFirewall",
        )?
        .map(|v| v != 0))
    };
    info.firewall = Firewall {
        domain: fw("DomainProfile")?,
        private: fw("StandardProfile")?,
        public: fw("PublicProfile")?,
    };

    info.bcd_present = bcd_present(fs)?;
    Ok(info)
}

impl WindowsInfo {
    /// Short human-readable lines for `onramp inspect` (grouped, one fact a line).
    pub fn human_lines(&self) -> Vec<String> {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
        let mut l = vec![
            format!(
                "Windows: {} ({}), version {}{} build {}{}, {}",
                o(&self.product_name),
                o(&self.edition),
                o(&self
                    .version
                    .clone()
                    .or_else(|| self.current_version.clone())),
                self.display_version
                    .as_ref()
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default(),
                o(&self.build),
                self.ubr.map(|u| format!(".{u}")).unwrap_or_default(),
                o(&self.architecture)
            ),
            format!(
                "  system root: {}   hostname: {}",
                self.system_root,
                o(&self.hostname)
            ),
        ];
        for s in &self.sql_server {
            l.push(format!(
                "  SQL Server: instance {} ({}) version {} {}",
                s.name,
                s.id,
                o(&s.version),
                o(&s.edition)
            ));
        }
        for s in &self.sharepoint {
            l.push(format!(
                "  SharePoint: {} (build {})",
                s.version,
                o(&s.build)
            ));
        }
        l.push(format!(
            "  RDP: {}{}",
            match self.rdp.enabled {
                Some(true) => "enabled",
                Some(false) => "disabled",
                None => "?",
            },
            self.rdp
                .port
                .map(|p| format!(", port {p}"))
                .unwrap_or_default()
        ));
        l.push(format!(
            "  generalized: {} (ImageState {}, GeneralizationState {})",
            if self.generalization.generalized {
                "yes"
            } else {
                "no"
            },
            o(&self.generalization.image_state),
            self.generalization
                .generalization_state
                .map_or("?".into(), |v| v.to_string())
        ));
        l.push(format!(
            "  SAN policy: {}   RealTimeIsUniversal: {}",
            o(&self.san_policy_name),
            self.real_time_is_universal
                .map_or("?".into(), |v| v.to_string())
        ));
        for s in &self.services {
            l.push(format!(
                "  service {}: {}",
                s.name,
                if s.present {
                    o(&s.start_type)
                } else {
                    "absent".into()
                }
            ));
        }
        let fw = |v: Option<bool>| match v {
            Some(true) => "on",
            Some(false) => "off",
            None => "?",
        };
        l.push(format!(
            "  firewall: domain {}, private {}, public {}   pagefile: {}   BCD: {}",
            fw(self.firewall.domain),
            fw(self.firewall.private),
            fw(self.firewall.public),
            if self.pagefiles.is_empty() {
                "none".into()
            } else {
                self.pagefiles.join("; ")
            },
            if self.bcd_present {
                "present"
            } else {
                "not on this volume"
            }
        ));
        l.push(format!("  applications: {}", self.applications.len()));
        for w in &self.warnings {
            l.push(format!("  warning: {w}"));
        }
        l
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::fs::regf::checksum;
    use crate::fs::regf::writer::{build, KeySpec};
    use crate::fs::{DirEntry, Metadata};
    use std::collections::BTreeMap;

    /// A tiny in-memory filesystem: file paths to contents (directories implied).
    struct MemFs(BTreeMap<String, Vec<u8>>);

    impl MemFs {
        fn is_dir(&self, p: &str) -> bool {
            p == "/" || self.0.keys().any(|k| k.starts_with(&format!("{p}/")))
        }
    }

    impl FileSystem for MemFs {
        fn kind(&self) -> &'static str {
            "mem"
        }
        fn stat(&self, path: &str) -> Result<Option<Metadata>> {
            let m = |file_type, size| Metadata {
                file_type,
                size,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: 0,
                ino: 0,
            };
            Ok(match self.0.get(path) {
                Some(d) => Some(m(FileType::File, u64::try_from(d.len()).unwrap())),
                None if self.is_dir(path) => Some(m(FileType::Dir, 0)),
                None => None,
            })
        }
        fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
            let prefix = if path == "/" {
                "/".to_string()
            } else {
                format!("{path}/")
            };
            let mut names: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|r| r.split('/').next().unwrap().to_string())
                .collect();
            names.dedup();
            Ok(names
                .into_iter()
                .map(|name| DirEntry {
                    file_type: FileType::Other,
                    name,
                    ino: 0,
                })
                .collect())
        }
        fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
            let d = self.0.get(path).ok_or_else(|| Error::invalid("missing"))?;
            assert!(u64::try_from(d.len()).unwrap() <= limit);
            Ok(d.clone())
        }
        fn read_link(&self, _: &str) -> Result<String> {
            Err(Error::invalid("no links"))
        }
    }

    fn hives() -> (KeySpec, KeySpec) {
        let mut sys = KeySpec::new("ROOT");
        sys.set("Select", Value::dword("Current", 2))
            .set(
                "ControlSet002\\Control\\ComputerName\\ComputerName",
                Value::sz("ComputerName", "HOST2"),
            )
            .set(
                "ControlSet001\\Control\\ComputerName\\ComputerName",
                Value::sz("ComputerName", "STALE"),
            )
            .set("ControlSet002\\Services\\RdAgent", Value::dword("Start", 4))
            .set(
                "ControlSet002\\Control\\Session Manager\\Memory Management",
                Value::multi_sz(
                    "PagingFiles",
                    &["C:\\pagefile.sys 0 0", "D:\\pagefile.sys 1024 4096"],
                ),
            );
        let mut soft = KeySpec::new("ROOT");
        soft.set(
            "Microsoft\\Windows NT\\CurrentVersion",
            Value::sz("ProductName", "Windows Server 2016 Standard"),
        )
        .set(
            "Microsoft\\Windows NT\\CurrentVersion",
            Value::sz("ReleaseId", "1607"),
        )
        .set(
            "Microsoft\\Windows NT\\CurrentVersion",
            Value::sz("CurrentBuild", "14393"),
        )
        .set(
            "Microsoft\\Windows\\CurrentVersion\\Setup\\State",
            Value::sz("ImageState", "IMAGE_STATE_COMPLETE"),
        );
        (sys, soft)
    }

    fn fs_with(sys: Vec<u8>, soft: Vec<u8>) -> MemFs {
        let mut m = BTreeMap::new();
        // Odd case on purpose: lookups are case-insensitive.
        m.insert("/WINDOWS/system32/Config/system".to_string(), sys);
        m.insert("/WINDOWS/system32/Config/SOFTWARE".to_string(), soft);
        m.insert("/EFI/Microsoft/Boot/BCD".to_string(), vec![1]);
        MemFs(m)
    }

    #[test]
    fn current_control_set_fallbacks_and_case() {
        let (sys, soft) = hives();
        let fs = fs_with(
            build(&sys, "SYSTEM").unwrap(),
            build(&soft, "SOFTWARE").unwrap(),
        );
        let i = inspect(&fs).unwrap();
        assert_eq!(i.system_root, "/WINDOWS");
        assert_eq!(i.current_control_set, "ControlSet002");
        assert_eq!(i.hostname.as_deref(), Some("HOST2"));
        assert_eq!(i.display_version.as_deref(), Some("1607"));
        assert_eq!(i.build.as_deref(), Some("14393"));
        assert_eq!(i.version, None);
        assert!(!i.generalization.generalized);
        assert_eq!(
            i.pagefiles,
            vec!["C:\\pagefile.sys 0 0", "D:\\pagefile.sys 1024 4096"]
        );
        assert_eq!(i.services[0].name, "WindowsAzureGuestAgent");
        assert!(!i.services[0].present);
        assert_eq!(i.services[1].start_type.as_deref(), Some("disabled"));
        assert_eq!(i.rdp, Rdp::default());
        assert!(i.bcd_present);
        assert!(i.warnings.is_empty());
        assert!(i.sql_server.is_empty() && i.sharepoint.is_empty() && i.applications.is_empty());
    }

    #[test]
    fn pending_log_is_reported_and_corrupt_hives_fail() {
        let (sys, soft) = hives();
        let mut s = build(&sys, "SYSTEM").unwrap();
        s[4] = 9;
        let c = checksum(&s);
        s[508..512].copy_from_slice(&c.to_le_bytes());
        let fs = fs_with(s.clone(), build(&soft, "SOFTWARE").unwrap());
        let i = inspect(&fs).unwrap();
        assert_eq!(i.warnings.len(), 1);
        assert!(
            i.warnings[0].contains("SYSTEM hive has a pending transaction log"),
            "{:?}",
            i.warnings
        );
        s[508] ^= 1;
        let fs = fs_with(s, build(&soft, "SOFTWARE").unwrap());
        let e = inspect(&fs).unwrap_err();
        assert!(
            e.message()
                .starts_with("SYSTEM hive: registry hive base block field checksum"),
            "{e}"
        );
    }

    #[test]
    fn no_system_root_is_a_clear_error() {
        let fs = MemFs(BTreeMap::from([(
            "/Windows/System32/config/SYSTEM".to_string(),
            vec![0u8; 8],
        )]));
        let e = inspect(&fs).unwrap_err();
        assert!(e.message().contains("no Windows system root"), "{e}");
    }
}
