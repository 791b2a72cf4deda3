//! Windows settings written into a SYSTEM hive through the [`HiveEditor`]
//! (issue 11, "Windows injection"): service registration and the Azure
//! settings that are safe to set offline.
//!
//! Service keys follow the documented layout of
//! `HKLM\SYSTEM\CurrentControlSet\Services\<name>` (ImagePath, Start, Type,
//! ErrorControl, ObjectName, DisplayName, DependOnService); they go into every
//! control set that `Select` points at (Current, Default, LastKnownGood), since
//! `CurrentControlSet` is only a link created at boot.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::editor::HiveEditor;
use super::ValueData;
use crate::error::{Error, Result};

/// Service start types (`Start`).
pub mod start {
    /// Loaded by the boot loader.
    pub const BOOT: u32 = 0;
    /// Loaded at kernel initialisation.
    pub const SYSTEM: u32 = 1;
    /// Started by the service control manager at boot.
    pub const AUTO: u32 = 2;
    /// Started on demand.
    pub const DEMAND: u32 = 3;
    /// Disabled.
    pub const DISABLED: u32 = 4;
}

/// Service types (`Type`).
pub mod service_type {
    /// A service in its own process.
    pub const WIN32_OWN_PROCESS: u32 = 0x10;
    /// A service sharing a process.
    pub const WIN32_SHARE_PROCESS: u32 = 0x20;
}

/// A service to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Key name under Services.
    pub name: String,
    /// Command line of the service binary (REG_EXPAND_SZ).
    pub image_path: String,
    /// Start type (see [`start`]).
    pub start: u32,
    /// Service type (see [`service_type`]).
    pub service_type: u32,
    /// Account (e.g. `LocalSystem`); omitted when `None`.
    pub object_name: Option<String>,
    /// Display name; omitted when `None`.
    pub display_name: Option<String>,
    /// Services this one depends on (`DependOnService`, REG_MULTI_SZ); omitted when empty.
    pub depends_on: Vec<String>,
}

/// The control sets `Select` points at (`ControlSet001`, ...), deduplicated,
/// in the order Current, Default, LastKnownGood.
pub fn control_sets(ed: &HiveEditor) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in ["Current", "Default", "LastKnownGood"] {
        let Some(v) = ed.get("Select", name)? else {
            continue;
        };
        let n = v.as_u64().ok_or_else(|| {
            Error::invalid(format!("SYSTEM hive: Select\\{name} is not a number"))
        })?;
        if n == 0 || n > 999 {
            continue;
        }
        let cs = format!("ControlSet{n:03}");
        if ed.reader()?.open_key(&cs)?.is_none() {
            return Err(Error::invalid(format!(
                "SYSTEM hive: Select\\{name} points at {cs}, which does not exist"
            )));
        }
        if !out.contains(&cs) {
            out.push(cs);
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "SYSTEM hive has no Select\\Current control set: is this a SYSTEM hive?",
        ));
    }
    Ok(out)
}

/// Register `svc` in every control set `Select` points at; returns those
/// control sets. An existing service key is updated value by value.
pub fn add_service(system: &mut HiveEditor, svc: &ServiceSpec) -> Result<Vec<String>> {
    if svc.name.is_empty() || svc.name.contains(['\\', '/']) {
        return Err(Error::invalid(format!(
            "invalid service name {:?}",
            svc.name
        )));
    }
    let sets = control_sets(system)?;
    for cs in &sets {
        let key = format!("{cs}\\Services\\{}", svc.name);
        system.set_value(&key, "Type", &ValueData::Dword(svc.service_type))?;
        system.set_value(&key, "Start", &ValueData::Dword(svc.start))?;
        system.set_value(&key, "ErrorControl", &ValueData::Dword(1))?;
        system.set_value(
            &key,
            "ImagePath",
            &ValueData::ExpandString(svc.image_path.clone()),
        )?;
        if let Some(o) = &svc.object_name {
            system.set_value(&key, "ObjectName", &ValueData::String(o.clone()))?;
        }
        if let Some(d) = &svc.display_name {
            system.set_value(&key, "DisplayName", &ValueData::String(d.clone()))?;
        }
        if !svc.depends_on.is_empty() {
            system.set_value(
                &key,
                "DependOnService",
                &ValueData::MultiString(svc.depends_on.clone()),
            )?;
        }
    }
    Ok(sets)
}

/// Azure settings safe to set offline, in every selected control set: RDP
/// enabled (`Control\Terminal Server\fDenyTSConnections` = 0) on port 3389
/// (`...\WinStations\RDP-Tcp\PortNumber`), SAN policy
/// OnlineAll (`Services\partmgr\Parameters\SanPolicy` = 1), hardware clock in
/// UTC (`Control\TimeZoneInformation\RealTimeIsUniversal` = 1). Returns the
/// control sets written.
pub fn azure_settings(system: &mut HiveEditor) -> Result<Vec<String>> {
    let sets = control_sets(system)?;
    for cs in &sets {
        system.set_value(
            &format!("{cs}\\Control\\Terminal Server"),
            "fDenyTSConnections",
            &ValueData::Dword(0),
        )?;
        system.set_value(
            &format!("{cs}\\Control\\Terminal Server\\WinStations\\RDP-Tcp"),
            "PortNumber",
            &ValueData::Dword(3389),
        )?;
        system.set_value(
            &format!("{cs}\\Services\\partmgr\\Parameters"),
            "SanPolicy",
            &ValueData::Dword(1),
        )?;
        system.set_value(
            &format!("{cs}\\Control\\TimeZoneInformation"),
            "RealTimeIsUniversal",
            &ValueData::Dword(1),
        )?;
    }
    Ok(sets)
}
