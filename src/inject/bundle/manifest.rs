//! `agent.yaml`: the manifest of an agent bundle. Parsing is strict
//! (unknown fields are errors, reported with line and column like recipes).
//!
//! ```yaml
//! name: azure-ready
//! version: "1.0"
//! files:
//!   - {src: azure-ready.sh, dest: /usr/lib/onramp/azure-ready.sh, mode: "0755", owner: "root:root"}
//!   - {src: onramp-azure-ready.service, dest: /etc/systemd/system/onramp-azure-ready.service}
//! systemd_units: [onramp-azure-ready.service]
//! sysvinit:
//!   - {script: /etc/init.d/onramp-azure-ready, runlevels: "2345"}
//! config:
//!   - {dest: /etc/onramp/agent.conf, template: "region={{region}}\n", mode: "0600"}
//! windows:            # used on Windows guests (src/inject/windows.rs)
//!   files:
//!     - {src: Packages/WaAppAgent.exe, dest: 'C:\WindowsAzure\Packages\WaAppAgent.exe'}
//!   services:
//!     - {name: RdAgent, image_path: 'C:\WindowsAzure\Packages\WaAppAgent.exe',
//!        display_name: RdAgent, start: auto, account: LocalSystem, type: own, dependencies: [RpcSs]}
//!   registry:
//!     - {key: 'HKLM\SYSTEM\CurrentControlSet\Services\RdAgent', name: Description, type: sz, value: "..."}
//! ```

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Largest agent.yaml read: 1 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Agent name.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Files copied from the bundle into the guest.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// systemd units to enable (their unit files are among `files`).
    #[serde(default)]
    pub systemd_units: Vec<String>,
    /// Init scripts enabled instead when the guest has no systemd.
    #[serde(default)]
    pub sysvinit: Vec<SysvSpec>,
    /// Configuration files rendered from inline templates.
    #[serde(default)]
    pub config: Vec<ConfigSpec>,
    /// A regex matching the line the agent prints on the serial console when it
    /// starts; `onramp boot-test` expects it by default (else it expects the
    /// `systemd_units` to be reported started).
    #[serde(default)]
    pub boot_marker: Option<String>,
    /// Windows part (issue 11): used on Windows guests, ignored on Linux ones.
    #[serde(default)]
    pub windows: Option<WindowsSpec>,
}

/// `files:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path inside the bundle (relative).
    pub src: String,
    /// Absolute guest path.
    pub dest: String,
    /// Octal mode ("0755"); default "0644".
    #[serde(default)]
    pub mode: Option<String>,
    /// "uid:gid" or "user:group" names looked up in the guest; default root.
    #[serde(default)]
    pub owner: Option<String>,
    /// Render `{{var}}` placeholders in the content.
    #[serde(default)]
    pub template: bool,
}

/// `sysvinit:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysvSpec {
    /// Guest path of the init script (one of `files`), e.g. /etc/init.d/agent.
    pub script: String,
    /// Runlevels to start in, e.g. "2345".
    pub runlevels: String,
}

/// `config:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Absolute guest path.
    pub dest: String,
    /// Inline text with `{{var}}` placeholders.
    pub template: String,
    /// Octal mode; default "0644".
    #[serde(default)]
    pub mode: Option<String>,
}

/// `windows:` section (issue 11: files, services, registry values).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsSpec {
    /// Files to place.
    #[serde(default)]
    pub files: Vec<WindowsFile>,
    /// Services to register.
    #[serde(default)]
    pub services: Vec<WindowsService>,
    /// Registry values to set.
    #[serde(default)]
    pub registry: Vec<WindowsRegistryValue>,
}

/// A Windows file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsFile {
    /// Path inside the bundle.
    pub src: String,
    /// Windows path, e.g. `C:\WindowsAzure\GuestAgent\agent.exe`.
    pub dest: String,
}

/// A Windows service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsService {
    /// Service key name.
    pub name: String,
    /// ImagePath.
    pub image_path: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Start type: boot, system, auto, manual, disabled.
    #[serde(default)]
    pub start: Option<String>,
    /// ObjectName (account), e.g. LocalSystem.
    #[serde(default)]
    pub account: Option<String>,
    /// DependOnService.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Service type: `own` (own process, 0x10; the default), `share` (0x20),
    /// or a number.
    #[serde(default, rename = "type")]
    pub service_type: Option<String>,
}

/// A registry value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsRegistryValue {
    /// Hive: `SYSTEM` or `SOFTWARE`; when absent it is taken from the key's
    /// prefix (`HKLM\SYSTEM\...`, `SOFTWARE\...`).
    #[serde(default)]
    pub hive: Option<String>,
    /// Key path, e.g. `HKLM\SYSTEM\CurrentControlSet\Control\TimeZoneInformation`
    /// (`CurrentControlSet` means every control set `Select` points at).
    pub key: String,
    /// Value name ("" for the default value).
    pub name: String,
    /// Type: sz, expand_sz, multi_sz, dword, qword, binary.
    #[serde(rename = "type")]
    pub kind: String,
    /// Value, as text: a number (decimal or 0x hex) for dword/qword, hex bytes
    /// for binary ("01 02 ff"), strings separated by `\n` for multi_sz.
    #[serde(default)]
    pub value: String,
    /// multi_sz strings as a list (instead of `value`).
    #[serde(default)]
    pub values: Vec<String>,
}

/// Parse manifest text; `file` is used in errors only.
pub fn parse(file: &Path, text: &str) -> Result<Manifest> {
    let m = serde_saphyr::from_str::<Manifest>(text).map_err(|e| {
        // serde-saphyr renders a source snippet after the first line; keep the line.
        let full = e.to_string();
        let first = full.lines().next().unwrap_or("").trim();
        let msg = first.strip_prefix("error: ").unwrap_or(first);
        Error::invalid(format!("agent manifest {msg}")).at(file)
    })?;
    if m.name.is_empty() || m.name.contains(['/', '\0']) {
        return Err(Error::invalid(format!(
            "agent manifest name {:?} is not a plain name",
            m.name
        ))
        .at(file));
    }
    for u in &m.systemd_units {
        if u.is_empty() || u.contains(['/', '\0']) {
            return Err(Error::invalid(format!("systemd unit {u:?} is not a unit name")).at(file));
        }
    }
    Ok(m)
}
