//! Agent bundles (issue 7): a directory or .tar.gz holding `agent.yaml`
//! ([`manifest`]), or a Debian .deb ([`deb`]), planned into
//! [`FsAction`]s against the guest's read-only [`FileSystem`].
//!
//! Bundle bytes are untrusted: tar members are unpacked by [`tar`] with its
//! safety rules, sizes are bounded by [`crate::limits::MAX_BUNDLE_BYTES`].
//! Guest paths in the plan are canonical: parent directories are resolved
//! inside the guest (so `/lib/...` lands in `/usr/lib/...` on merged-/usr
//! guests), the final component is not followed.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod deb;
pub mod manifest;
pub mod tar;

use super::{parse_mode, FsAction, MAX_EDIT_BYTES};
use crate::error::{Error, IoContext, Result};
use crate::fs::{read_guest_file, resolve, FileSystem, FileType};
use crate::limits::MAX_BUNDLE_BYTES;
use manifest::Manifest;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// A loaded bundle.
#[derive(Debug, Clone)]
pub enum Bundle {
    /// agent.yaml bundle: the manifest and the bundle's regular files by
    /// relative name.
    Agent {
        /// The manifest.
        manifest: Manifest,
        /// Files of the bundle, by normalised relative path.
        files: BTreeMap<String, Vec<u8>>,
    },
    /// A Debian binary package.
    Deb(deb::Deb),
}

impl Bundle {
    /// Name of the agent or package.
    pub fn name(&self) -> &str {
        match self {
            Bundle::Agent { manifest, .. } => &manifest.name,
            Bundle::Deb(d) => &d.package,
        }
    }
    /// Version of the agent or package.
    pub fn version(&self) -> &str {
        match self {
            Bundle::Agent { manifest, .. } => &manifest.version,
            Bundle::Deb(d) => &d.version,
        }
    }
}

/// The plan for one bundle: actions plus warnings (unmet dependencies,
/// maintainer scripts not run, ...).
#[derive(Debug, Clone, Default)]
pub struct BundlePlan {
    /// Filesystem actions, in order.
    pub actions: Vec<FsAction>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut v = Vec::new();
    f.take(MAX_BUNDLE_BYTES.saturating_add(1))
        .read_to_end(&mut v)
        .ctx(|| format!("read {}", path.display()))?;
    if u64::try_from(v.len()).unwrap_or(u64::MAX) > MAX_BUNDLE_BYTES {
        return Err(Error::unsupported(format!(
            "bundle {} is larger than {MAX_BUNDLE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(v)
}

/// Load a bundle: a directory with agent.yaml, a .tar.gz (or .tar) with
/// agent.yaml at its root or in one top-level directory, or a .deb.
pub fn load(path: &Path) -> Result<Bundle> {
    if path.is_dir() {
        return load_dir(path);
    }
    let data = read_bounded(path)?;
    if data.starts_with(deb::AR_MAGIC) {
        return Ok(Bundle::Deb(deb::parse(&data, &path.display().to_string())?));
    }
    let what = format!("bundle {}", path.display());
    let mut r = tar::decompressed(&data, &what)?;
    let entries = tar::read_tar(&mut r, &what)?;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in entries {
        if let tar::Kind::File(d) = e.kind {
            files.insert(e.name, d);
        }
    }
    if !files.contains_key("agent.yaml") {
        // `tar czf x.tar.gz dir`: one top-level directory holds everything.
        let tops: std::collections::BTreeSet<&str> = files
            .keys()
            .map(|k| k.split('/').next().unwrap_or(""))
            .collect();
        let top = match tops.into_iter().collect::<Vec<_>>().as_slice() {
            [one] => one.to_string(),
            _ => String::new(),
        };
        let prefix = format!("{top}/");
        if top.is_empty() || !files.contains_key(&format!("{prefix}agent.yaml")) {
            return Err(Error::invalid(format!(
                "{what}: no agent.yaml at its root (nor in a single top-level directory), and it is not a .deb"
            )));
        }
        files = files
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v)))
            .collect();
    }
    let text = files
        .get("agent.yaml")
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    let manifest = manifest::parse(&path.join("agent.yaml"), &text)?;
    for f in manifest_sources(&manifest) {
        let src = tar::normalise(f, "bundle")?;
        if !files.contains_key(&src) {
            return Err(Error::invalid(format!(
                "{what}: file {f:?} named in agent.yaml is not a regular file of the archive"
            )));
        }
    }
    Ok(Bundle::Agent { manifest, files })
}

/// Bundle files named by the manifest: `files:` and `windows: files:`.
fn manifest_sources(m: &Manifest) -> impl Iterator<Item = &str> {
    m.files.iter().map(|f| f.src.as_str()).chain(
        m.windows
            .iter()
            .flat_map(|w| w.files.iter().map(|f| f.src.as_str())),
    )
}

fn load_dir(dir: &Path) -> Result<Bundle> {
    let mpath = dir.join("agent.yaml");
    let text = std::fs::read_to_string(&mpath).ctx(|| format!("read {}", mpath.display()))?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > manifest::MAX_MANIFEST_BYTES {
        return Err(Error::unsupported("agent.yaml is larger than 1 MiB").at(&mpath));
    }
    let manifest = manifest::parse(&mpath, &text)?;
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    for f in manifest_sources(&manifest) {
        let src = tar::normalise(f, "bundle")?;
        let p = dir.join(&src);
        let meta = std::fs::symlink_metadata(&p).ctx(|| format!("stat {}", p.display()))?;
        if !meta.is_file() {
            return Err(Error::invalid(format!(
                "bundle file {} is not a regular file",
                p.display()
            )));
        }
        total = total.saturating_add(meta.len());
        if total > MAX_BUNDLE_BYTES {
            return Err(Error::unsupported(format!(
                "bundle {} holds more than {MAX_BUNDLE_BYTES} bytes",
                dir.display()
            )));
        }
        let d = std::fs::read(&p).ctx(|| format!("read {}", p.display()))?;
        files.insert(src, d);
    }
    Ok(Bundle::Agent { manifest, files })
}

/// Plan a bundle; warnings are dropped (see [`plan_bundle_report`]).
pub fn plan_bundle(
    bundle: &Bundle,
    guest: &dyn FileSystem,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<FsAction>> {
    Ok(plan_bundle_report(bundle, guest, vars)?.actions)
}

/// Plan a bundle into filesystem actions and warnings.
pub fn plan_bundle_report(
    bundle: &Bundle,
    guest: &dyn FileSystem,
    vars: &BTreeMap<String, String>,
) -> Result<BundlePlan> {
    match bundle {
        Bundle::Agent { manifest, files } => plan_agent(manifest, files, guest, vars),
        Bundle::Deb(d) => deb::plan(d, guest),
    }
}

/// Does the guest run systemd (/lib/systemd/systemd or /usr/lib/systemd/systemd)?
pub fn guest_has_systemd(guest: &dyn FileSystem) -> Result<bool> {
    for p in ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"] {
        let r = resolve(guest, p, true)?;
        if guest
            .stat(&r)?
            .is_some_and(|m| m.file_type == FileType::File)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Render `{{name}}` placeholders (whitespace inside the braces allowed;
/// `{{name:-default}}` has a default); unknown names are errors naming `what`.
pub fn render(template: &str, vars: &BTreeMap<String, String>, what: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(rest.get(..i).unwrap_or(""));
        let after = rest.get(i.saturating_add(2)..).unwrap_or("");
        let Some(j) = after.find("}}") else {
            return Err(Error::invalid(format!(
                "{what}: unclosed '{{{{' placeholder"
            )));
        };
        let inner = after.get(..j).unwrap_or("").trim();
        // `{{name:-default}}` falls back to the default when `name` is not set.
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner, None),
        };
        let v = vars
            .get(name)
            .map(String::as_str)
            .or(default)
            .ok_or_else(|| {
                let known: Vec<&str> = vars.keys().map(String::as_str).collect();
                Error::invalid(format!(
                    "{what}: unknown template variable {{{{{name}}}}} (known: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        out.push_str(v);
        rest = after.get(j.saturating_add(2)..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// `[Install]` targets of a unit file: (kind, target) with kind "wants" for
/// WantedBy= and "requires" for RequiredBy=.
pub fn install_targets(unit: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut in_install = false;
    for line in unit.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let kind = match k.trim() {
            "WantedBy" => "wants",
            "RequiredBy" => "requires",
            _ => continue,
        };
        for t in v.split_whitespace() {
            out.push((kind, t.to_string()));
        }
    }
    out
}

/// Actions enabling `unit` (installed at guest path `unit_path`) for its
/// `[Install]` targets: `/etc/systemd/system/<target>.wants/<unit>` symlinks.
pub fn enable_unit(
    guest: &dyn FileSystem,
    unit: &str,
    unit_path: &str,
    text: &str,
) -> Result<Vec<FsAction>> {
    let mut out = Vec::new();
    for (kind, target) in install_targets(text) {
        if target.contains(['/', '\0']) {
            return Err(Error::invalid(format!(
                "unit {unit}: install target {target:?} is not a unit name"
            )));
        }
        let dir = canonical_dir(guest, &format!("/etc/systemd/system/{target}.{kind}"))?;
        out.push(FsAction::Mkdir {
            path: dir.clone(),
            mode: 0o755,
        });
        out.push(FsAction::Symlink {
            target: unit_path.to_string(),
            path: format!("{dir}/{unit}"),
        });
    }
    Ok(out)
}

/// Canonical guest path of a directory (final symlink followed).
pub fn canonical_dir(guest: &dyn FileSystem, path: &str) -> Result<String> {
    resolve(guest, path, true)
}

/// Canonical guest path of a file or link (final component kept).
pub fn canonical_leaf(guest: &dyn FileSystem, path: &str) -> Result<String> {
    resolve(guest, path, false)
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => path.get(..i).unwrap_or("/"),
    }
}

fn check_dest(dest: &str) -> Result<()> {
    if !dest.starts_with('/') || dest.contains('\0') || dest.split('/').any(|c| c == "..") {
        return Err(Error::invalid(format!(
            "bundle destination {dest:?} must be an absolute guest path without '..'"
        )));
    }
    Ok(())
}

/// Look a user or group name up in the guest's /etc/passwd or /etc/group.
fn lookup_id(guest: &dyn FileSystem, db: &str, name: &str) -> Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    if name == "root" {
        return Ok(0);
    }
    let text = read_guest_file(guest, db, MAX_EDIT_BYTES)?.unwrap_or_default();
    for line in String::from_utf8_lossy(&text).lines() {
        let mut f = line.split(':');
        if f.next() == Some(name) {
            if let Some(id) = f.nth(1).and_then(|s| s.parse().ok()) {
                return Ok(id);
            }
        }
    }
    Err(Error::invalid(format!(
        "owner {name:?} is not numeric and not found in the guest's {db}"
    )))
}

/// Parse `uid:gid` / `user:group` / `user`.
pub fn parse_owner(guest: &dyn FileSystem, owner: Option<&str>) -> Result<(u32, u32)> {
    let Some(o) = owner else {
        return Ok((0, 0));
    };
    let (u, g) = o.split_once(':').unwrap_or((o, o));
    Ok((
        lookup_id(guest, "/etc/passwd", u)?,
        lookup_id(guest, "/etc/group", g)?,
    ))
}

fn plan_agent(
    m: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    guest: &dyn FileSystem,
    vars: &BTreeMap<String, String>,
) -> Result<BundlePlan> {
    let mut plan = BundlePlan::default();
    let mut made_dirs: std::collections::BTreeSet<String> = Default::default();
    let mut installed: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let mut mkdir_parent = |plan: &mut BundlePlan, dest: &str| -> Result<()> {
        let d = canonical_dir(guest, parent(dest))?;
        if made_dirs.insert(d.clone()) {
            plan.actions.push(FsAction::Mkdir {
                path: d,
                mode: 0o755,
            });
        }
        Ok(())
    };
    for f in &m.files {
        check_dest(&f.dest)?;
        let src = tar::normalise(&f.src, "bundle")?;
        let data = files
            .get(&src)
            .ok_or_else(|| Error::invalid(format!("bundle file {:?} is missing", f.src)))?;
        let data = if f.template {
            let text = std::str::from_utf8(data).map_err(|_| {
                Error::invalid(format!(
                    "bundle file {:?} is a template but not UTF-8",
                    f.src
                ))
            })?;
            render(text, vars, &format!("bundle file {}", f.src))?.into_bytes()
        } else {
            data.clone()
        };
        let mode = parse_mode(f.mode.as_deref().unwrap_or("0644"))?;
        let (uid, gid) = parse_owner(guest, f.owner.as_deref())?;
        mkdir_parent(&mut plan, &f.dest)?;
        let path = canonical_leaf(guest, &f.dest)?;
        installed.insert(f.dest.clone(), (path.clone(), data.clone()));
        plan.actions.push(FsAction::WriteFile {
            path,
            data,
            mode,
            uid,
            gid,
        });
    }
    for c in &m.config {
        check_dest(&c.dest)?;
        let text = render(&c.template, vars, &format!("config {}", c.dest))?;
        let mode = parse_mode(c.mode.as_deref().unwrap_or("0644"))?;
        mkdir_parent(&mut plan, &c.dest)?;
        plan.actions.push(FsAction::WriteFile {
            path: canonical_leaf(guest, &c.dest)?,
            data: text.into_bytes(),
            mode,
            uid: 0,
            gid: 0,
        });
    }
    let systemd = guest_has_systemd(guest)?;
    if systemd {
        for unit in &m.systemd_units {
            let (dest, data) = installed
                .iter()
                .find(|(d, _)| d.rsplit('/').next() == Some(unit.as_str()))
                .map(|(d, (_, data))| (d.clone(), data))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "systemd unit {unit} is not among the bundle's files"
                    ))
                })?;
            let text = String::from_utf8_lossy(data);
            if install_targets(&text).is_empty() {
                return Err(Error::invalid(format!(
                    "systemd unit {unit} has no [Install] WantedBy= or RequiredBy=: cannot enable it"
                )));
            }
            plan.actions.extend(enable_unit(guest, unit, &dest, &text)?);
        }
    } else if !m.sysvinit.is_empty() {
        for s in &m.sysvinit {
            check_dest(&s.script)?;
            if !installed.contains_key(&s.script) {
                return Err(Error::invalid(format!(
                    "sysvinit script {} is not among the bundle's files",
                    s.script
                )));
            }
            let base = s.script.rsplit('/').next().unwrap_or("");
            if s.runlevels.is_empty()
                || !s.runlevels.chars().all(|c| c.is_ascii_digit() || c == 'S')
            {
                return Err(Error::invalid(format!(
                    "sysvinit runlevels {:?} must be digits (and S), e.g. \"2345\"",
                    s.runlevels
                )));
            }
            for rl in s.runlevels.chars() {
                let dir = canonical_dir(guest, &format!("/etc/rc{rl}.d"))?;
                plan.actions.push(FsAction::Mkdir {
                    path: dir.clone(),
                    mode: 0o755,
                });
                plan.actions.push(FsAction::Symlink {
                    target: s.script.clone(),
                    path: format!("{dir}/S99{base}"),
                });
            }
        }
    } else if !m.systemd_units.is_empty() {
        return Err(Error::unsupported(format!(
            "the guest has no systemd (/lib/systemd/systemd) and agent {} has no sysvinit fallback",
            m.name
        )));
    }
    let expect = boot_expectations(m, systemd)?;
    if !expect.is_empty() {
        mkdir_parent(&mut plan, crate::boot::EXPECT_FILE)?;
        plan.actions.push(FsAction::WriteFile {
            path: canonical_leaf(guest, crate::boot::EXPECT_FILE)?,
            data: expect.into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
    }
    Ok(plan)
}

/// What `onramp boot-test` should see when this agent starts, in the format of
/// [`crate::boot::EXPECT_FILE`]: the agent's serial marker, else its units.
fn boot_expectations(m: &Manifest, systemd: bool) -> Result<String> {
    let mut out = String::new();
    if let Some(re) = &m.boot_marker {
        regex::Regex::new(re)
            .map_err(|e| Error::invalid(format!("boot_marker {re:?} is not a regex: {e}")))?;
        if re.contains('\n') {
            return Err(Error::invalid("boot_marker must be one line"));
        }
        out.push_str(&format!("serial {re}\n"));
    } else if systemd {
        for u in &m.systemd_units {
            out.push_str(&format!("unit {u}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let mut v = BTreeMap::new();
        v.insert("region".to_string(), "westeurope".to_string());
        assert_eq!(
            render("r={{region}} {{ region }}!", &v, "t").unwrap(),
            "r=westeurope westeurope!"
        );
        assert_eq!(
            render("{{a:-x y}}/{{region:-no}}", &v, "t").unwrap(),
            "x y/westeurope"
        );
        let e = render("x={{nope}}", &v, "t").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        assert!(render("x={{open", &v, "t").is_err());
    }

    #[test]
    fn install_sections() {
        let u = "[Unit]\nWantedBy=no.target\n[Install]\nWantedBy=multi-user.target graphical.target\nRequiredBy=x.target\n";
        assert_eq!(
            install_targets(u),
            vec![
                ("wants", "multi-user.target".to_string()),
                ("wants", "graphical.target".to_string()),
                ("requires", "x.target".to_string())
            ]
        );
    }
}
