//! Debian binary packages (deb(5)): an ar archive (`!<arch>\n`, then 60-byte
//! member headers: name 16, mtime 12, uid 6, gid 6, mode 8, size 10 (decimal),
//! magic "`\n"; data padded to an even offset) holding `debian-binary`,
//! `control.tar.{gz,xz,zst}` and `data.tar.{gz,xz,zst}` (or uncompressed).
//!
//! Planning unpacks data.tar into the guest, enables the package's systemd
//! units, and records the package in dpkg's database (deb-status(5):
//! /var/lib/dpkg/status stanza; /var/lib/dpkg/info/<pkg>.{list,md5sums,conffiles}).
//! Dependencies are not installed: unmet Depends become warnings, and
//! maintainer scripts are not run (a warning names them).

use super::tar::{self, Entry, Kind};
use super::{canonical_dir, canonical_leaf, enable_unit, guest_has_systemd, BundlePlan};
use crate::error::{Error, Result};
use crate::fs::read_guest_file;
use crate::inject::{FsAction, MAX_EDIT_BYTES};
use crate::limits::MAX_DEB_AR_MEMBERS;
use md5::{Digest, Md5};
use std::collections::{BTreeMap, BTreeSet};

/// ar global header.
pub const AR_MAGIC: &[u8] = b"!<arch>\n";

/// A parsed .deb.
#[derive(Debug, Clone)]
pub struct Deb {
    /// Package name.
    pub package: String,
    /// Version.
    pub version: String,
    /// Control fields in file order (name, value with continuation lines).
    pub control: Vec<(String, String)>,
    /// Other control.tar files (md5sums, conffiles, postinst...).
    pub control_files: BTreeMap<String, Vec<u8>>,
    /// data.tar members.
    pub data: Vec<Entry>,
}

impl Deb {
    /// A control field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.control
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The members of an ar archive: (name, data).
pub fn ar_members<'a>(data: &'a [u8], what: &str) -> Result<Vec<(String, &'a [u8])>> {
    if !data.starts_with(AR_MAGIC) {
        return Err(Error::corrupt(
            what,
            "ar magic",
            0,
            "!<arch>",
            "other bytes",
        ));
    }
    let mut out = Vec::new();
    let mut pos: usize = AR_MAGIC.len();
    while pos < data.len() {
        if out.len() >= MAX_DEB_AR_MEMBERS {
            return Err(Error::unsupported(format!(
                "{what}: more than {MAX_DEB_AR_MEMBERS} ar members"
            )));
        }
        let at = u64::try_from(pos).unwrap_or(u64::MAX);
        let h = pos
            .checked_add(60)
            .and_then(|e| data.get(pos..e))
            .ok_or_else(|| {
                Error::corrupt(what, "ar member header", at, "60 bytes", "end of file")
            })?;
        if h.get(58..60) != Some(b"`\n") {
            return Err(Error::corrupt(
                what,
                "ar member fmag",
                at.saturating_add(58),
                "`\\n",
                format!("{:02x?}", h.get(58..60).unwrap_or(&[])),
            ));
        }
        let name = String::from_utf8_lossy(h.get(..16).unwrap_or(&[]))
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size_text = String::from_utf8_lossy(h.get(48..58).unwrap_or(&[]))
            .trim()
            .to_string();
        let size: usize = size_text.parse().map_err(|_| {
            Error::corrupt(
                what,
                "ar member size",
                at.saturating_add(48),
                "a decimal number",
                size_text.clone(),
            )
        })?;
        let start = pos.saturating_add(60);
        let body = start
            .checked_add(size)
            .and_then(|e| data.get(start..e))
            .ok_or_else(|| {
                Error::corrupt(
                    what,
                    "ar member size",
                    at.saturating_add(48),
                    format!("member {name:?} inside the {}-byte file", data.len()),
                    size,
                )
            })?;
        out.push((name, body));
        pos = start.saturating_add(size);
        if pos % 2 == 1 {
            pos = pos.saturating_add(1);
        }
    }
    Ok(out)
}

/// Parse a deb822 stanza: fields in order, continuation lines kept (with
/// their leading space) joined by newlines.
pub fn parse_control(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Parse a .deb held in memory.
pub fn parse(data: &[u8], what: &str) -> Result<Deb> {
    let members = ar_members(data, what)?;
    match members.first() {
        Some((n, d)) if n == "debian-binary" && d.starts_with(b"2.") => {}
        _ => {
            return Err(Error::invalid(format!(
                "{what}: first ar member is not debian-binary with format 2.x: not a .deb"
            )))
        }
    }
    let find = |prefix: &str| {
        members
            .iter()
            .find(|(n, _)| {
                n.strip_prefix(prefix)
                    .is_some_and(|s| matches!(s, "" | ".gz" | ".xz" | ".zst"))
            })
            .map(|(_, d)| *d)
            .ok_or_else(|| Error::invalid(format!("{what}: no {prefix}{{,.gz,.xz,.zst}} member")))
    };
    let cwhat = format!("control.tar of {what}");
    let centries = tar::read_tar(
        &mut *tar::decompressed(find("control.tar")?, &cwhat)?,
        &cwhat,
    )?;
    let dwhat = format!("data.tar of {what}");
    let dentries = tar::read_tar(&mut *tar::decompressed(find("data.tar")?, &dwhat)?, &dwhat)?;
    let mut control_files = BTreeMap::new();
    for e in centries {
        if let Kind::File(d) = e.kind {
            control_files.insert(e.name, d);
        }
    }
    let control_text = control_files
        .remove("control")
        .ok_or_else(|| Error::invalid(format!("{what}: control.tar has no control file")))?;
    let control = parse_control(&String::from_utf8_lossy(&control_text));
    let get = |k: &str| {
        control
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let package = get("Package")
        .filter(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .ok_or_else(|| Error::invalid(format!("{what}: control has no valid Package field")))?;
    let version = get("Version")
        .ok_or_else(|| Error::invalid(format!("{what}: control has no Version field")))?;
    Ok(Deb {
        package,
        version,
        control,
        control_files,
        data: dentries,
    })
}

/// Installed packages in a dpkg status text: name -> provided names too.
fn installed_names(status: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for stanza in status.split("\n\n") {
        let f = parse_control(stanza);
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if !get("Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        if let Some(p) = get("Package") {
            out.insert(p.to_string());
        }
        if let Some(pr) = get("Provides") {
            for p in pr.split(',') {
                out.insert(dep_name(p));
            }
        }
    }
    out
}

fn dep_name(s: &str) -> String {
    let s = s.trim();
    let end = s.find([' ', '(', '[', '<']).unwrap_or(s.len());
    let n = s.get(..end).unwrap_or(s);
    n.split(':').next().unwrap_or(n).to_string()
}

/// Depends groups (`a | b`) none of whose alternatives is installed.
pub fn missing_depends(depends: &str, status: &str) -> Vec<String> {
    let have = installed_names(status);
    depends
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .filter(|g| !g.split('|').any(|alt| have.contains(&dep_name(alt))))
        .map(|g| g.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Remove the stanza of `package` from a status text.
fn without_package(status: &str, package: &str) -> String {
    let mut out = String::new();
    for stanza in status.split("\n\n") {
        let s = stanza.trim_matches('\n');
        if s.is_empty() {
            continue;
        }
        let f = parse_control(s);
        if f.iter().any(|(k, v)| k == "Package" && v == package) {
            continue;
        }
        out.push_str(s);
        out.push_str("\n\n");
    }
    out
}

/// The status stanza dpkg would write for `deb` with these conffiles.
pub fn status_stanza(deb: &Deb, conffiles: &[(String, String)]) -> String {
    let mut s = format!("Package: {}\nStatus: install ok installed\n", deb.package);
    let push = |s: &mut String, k: &str, v: &str| {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push('\n');
    };
    for (k, v) in &deb.control {
        if k == "Package" || k == "Description" {
            continue;
        }
        push(&mut s, k, v);
    }
    if !conffiles.is_empty() {
        s.push_str("Conffiles:\n");
        for (p, m) in conffiles {
            s.push_str(&format!(" {p} {m}\n"));
        }
    }
    if let Some(d) = deb.field("Description") {
        push(&mut s, "Description", d);
    }
    s
}

fn md5_hex(d: &[u8]) -> String {
    Md5::digest(d).iter().map(|b| format!("{b:02x}")).collect()
}

const UNIT_DIRS: [&str; 2] = ["lib/systemd/system/", "usr/lib/systemd/system/"];

/// Plan installing `deb` into the guest.
pub fn plan(deb: &Deb, guest: &dyn crate::fs::FileSystem) -> Result<BundlePlan> {
    let mut plan = BundlePlan::default();
    let mut list: Vec<String> = vec!["/.".to_string()];
    let mut files: BTreeMap<String, &[u8]> = BTreeMap::new();
    for e in &deb.data {
        if e.name.is_empty() {
            continue;
        }
        let gp = format!("/{}", e.name);
        list.push(gp.clone());
        match &e.kind {
            Kind::Dir => plan.actions.push(FsAction::Mkdir {
                path: canonical_dir(guest, &gp)?,
                mode: e.mode,
            }),
            Kind::File(d) => {
                files.insert(e.name.clone(), d);
                plan.actions.push(FsAction::WriteFile {
                    path: canonical_leaf(guest, &gp)?,
                    data: d.clone(),
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                });
            }
            Kind::Symlink(t) => plan.actions.push(FsAction::Symlink {
                target: t.clone(),
                path: canonical_leaf(guest, &gp)?,
            }),
        }
    }
    // systemd units with an [Install] section.
    let systemd = guest_has_systemd(guest)?;
    for (name, d) in &files {
        let Some(unit) = UNIT_DIRS.iter().find_map(|p| name.strip_prefix(p)) else {
            continue;
        };
        if unit.contains('/') || !unit.ends_with(".service") {
            continue;
        }
        let text = String::from_utf8_lossy(d);
        if super::install_targets(&text).is_empty() {
            continue;
        }
        if systemd {
            plan.actions
                .extend(enable_unit(guest, unit, &format!("/{name}"), &text)?);
        } else {
            plan.warnings.push(format!(
                "the guest has no systemd: unit {unit} of {} is not enabled",
                deb.package
            ));
        }
    }
    // dpkg database.
    let status_path = "/var/lib/dpkg/status";
    let status = read_guest_file(guest, status_path, MAX_EDIT_BYTES)?;
    let Some(status) = status else {
        plan.warnings.push(format!(
            "the guest has no {status_path}: {} is unpacked but not recorded in a dpkg database",
            deb.package
        ));
        return Ok(plan);
    };
    let status = String::from_utf8_lossy(&status).into_owned();
    if let Some(dep) = deb.field("Depends").or(deb.field("Pre-Depends")) {
        for m in missing_depends(dep, &status) {
            plan.warnings.push(format!(
                "{} depends on {m}, which the guest does not have installed (dependencies are not installed)",
                deb.package
            ));
        }
    }
    let scripts: Vec<&str> = ["preinst", "postinst"]
        .into_iter()
        .filter(|s| deb.control_files.contains_key(*s))
        .collect();
    if !scripts.is_empty() {
        plan.warnings.push(format!(
            "{}'s maintainer scripts ({}) are not run offline",
            deb.package,
            scripts.join(", ")
        ));
    }
    let mut conffiles = Vec::new();
    let conf_text = deb
        .control_files
        .get("conffiles")
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    for line in conf_text.lines() {
        // Newer dpkg allows flags before the path ("remove-on-upgrade /etc/x").
        let Some(p) = line.split_whitespace().last() else {
            continue;
        };
        let rel = p.trim_start_matches('/');
        let sum = files.get(rel).map(|d| md5_hex(d)).ok_or_else(|| {
            Error::invalid(format!(
                "{}: conffile {p} is not a regular file of data.tar",
                deb.package
            ))
        })?;
        conffiles.push((p.to_string(), sum));
    }
    let mut new_status = without_package(&status, &deb.package);
    new_status.push_str(&status_stanza(deb, &conffiles));
    let info = canonical_dir(guest, "/var/lib/dpkg/info")?;
    plan.actions.push(FsAction::WriteFile {
        path: canonical_leaf(guest, status_path)?,
        data: new_status.into_bytes(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    });
    plan.actions.push(FsAction::Mkdir {
        path: info.clone(),
        mode: 0o755,
    });
    let mut info_file = |ext: &str, data: Vec<u8>| {
        plan.actions.push(FsAction::WriteFile {
            path: format!("{info}/{}.{ext}", deb.package),
            data,
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
    };
    info_file("list", format!("{}\n", list.join("\n")).into_bytes());
    let md5sums = match deb.control_files.get("md5sums") {
        Some(m) => m.clone(),
        None => files
            .iter()
            .map(|(n, d)| format!("{}  {n}\n", md5_hex(d)))
            .collect::<String>()
            .into_bytes(),
    };
    info_file("md5sums", md5sums);
    if !conffiles.is_empty() {
        info_file("conffiles", conf_text.into_bytes());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends() {
        let status = "Package: libc6\nStatus: install ok installed\nProvides: libc\n\nPackage: gone\nStatus: deinstall ok config-files\n";
        assert_eq!(
            missing_depends("libc6 (>= 2.3), python3:any, gone | libc, x | y", status),
            vec!["python3:any".to_string(), "x | y".to_string()]
        );
    }

    #[test]
    fn control_fields() {
        let c = parse_control("Package: a\nDescription: short\n long line\n .\n more\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].1, "short\n long line\n .\n more");
    }

    #[test]
    fn ar_bounds() {
        let mut d = AR_MAGIC.to_vec();
        d.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "debian-binary", 0, 0, 0, 100644, 999999
            )
            .as_bytes(),
        );
        assert!(ar_members(&d, "t").is_err());
    }
}
