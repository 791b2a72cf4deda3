//! Pre-upload validation: rules as data, grouped in cloud profiles, judged on
//! facts gathered from the image (its footer read directly, its partitions,
//! the guest inspection), reported as text, JSON, JUnit or SARIF.
//!
//! Every rule has a stable id, a severity, a title, why it matters, how to fix
//! it (naming the onramp option that does where there is one) and a link to
//! the cloud's documentation. `docs/rules.md` is generated from [`RULES`]
//! (`onramp validate --list-rules --format markdown`) and a test keeps them equal.

pub mod disk;
pub mod guest;
pub mod layout;
pub mod report;

use crate::error::{Error, Result};
pub use disk::DiskFacts;
pub use guest::KernelFacts;
pub use layout::LayoutFacts;
pub use report::Report;

/// How bad a failed rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The cloud will reject the image or the VM will not work.
    Error,
    /// Likely to cause trouble; fails only with `--strict`.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What happened to one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The rule holds.
    Pass,
    /// The rule does not hold.
    Fail,
    /// The rule does not hold, but a reviewed waiver covers it.
    Waived,
    /// The rule does not apply to this image.
    Skipped,
}

/// The outcome of evaluating one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Holds (with a short statement of what was seen).
    Pass(String),
    /// Does not hold: what is wrong, concretely.
    Fail(String),
    /// Not applicable, and why.
    Skip(String),
}

/// Everything rules are judged on.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The disk.
    pub disk: DiskFacts,
    /// Requested VM generation (1 or 2), if any.
    pub generation: Option<u8>,
    /// The image is a data disk (size limit 32 TiB, no OS rules).
    pub data_disk: bool,
    /// The image is specialized on purpose (Windows: not generalized).
    pub specialized: bool,
    /// The partition layout (`None` when the disk could not be opened).
    pub layout: Option<LayoutFacts>,
    /// The guest inspection.
    pub inspection: Option<crate::guest::Inspection>,
    /// Why the guest could not be inspected (guest rules are then skipped).
    pub inspection_error: Option<String>,
    /// Driver states of the default Linux kernel beyond the Hyper-V ones.
    pub kernel: Option<KernelFacts>,
}

/// A validation rule.
pub struct Rule {
    /// Stable id, e.g. `azure.disk.size-mib-aligned`.
    pub id: &'static str,
    /// Severity when it fails.
    pub severity: Severity,
    /// One line.
    pub title: &'static str,
    /// Why it matters.
    pub why: &'static str,
    /// How to fix it.
    pub fix: &'static str,
    /// Documentation link.
    pub doc: &'static str,
    /// Profiles it belongs to.
    pub profiles: &'static [&'static str],
    /// The check.
    pub check: fn(&Facts) -> Outcome,
}

/// One finding in a report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// Rule id.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// Outcome.
    pub status: Status,
    /// Rule title.
    pub title: String,
    /// What was seen.
    pub message: String,
    /// How to fix.
    pub fix: String,
    /// Documentation link.
    pub doc: String,
    /// The waiver's reason, when waived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiver: Option<String>,
}

/// Every rule onramp knows.
pub static RULES: std::sync::LazyLock<Vec<Rule>> = std::sync::LazyLock::new(|| {
    disk::DISK_RULES
        .iter()
        .chain(layout::LAYOUT_RULES)
        .chain(guest::GUEST_RULES)
        .map(|r| Rule { ..*r })
        .collect()
});

/// Profile names accepted by `--profile`.
pub const PROFILES: &[&str] = &["azure", "azure-linux", "azure-windows", "gce", "aws"];

/// The rule with `id`.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// Parse `RULE_ID=reason` waivers, rejecting unknown rule ids and empty reasons.
pub fn parse_waivers(items: &[(String, String)]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|(id, reason)| {
            if rule(id).is_none() {
                return Err(Error::invalid(format!(
                    "waiver names unknown rule {id:?} (see docs/rules.md)"
                )));
            }
            if reason.trim().is_empty() {
                return Err(Error::invalid(format!("waiver for {id} needs a reason")));
            }
            Ok((id.clone(), reason.clone()))
        })
        .collect()
}

/// Evaluate `profile` over `facts`.
pub fn evaluate(
    profile: &str,
    facts: &Facts,
    waivers: &[(String, String)],
) -> Result<Vec<Finding>> {
    if !PROFILES.contains(&profile) {
        return Err(Error::invalid(format!(
            "unknown profile {profile:?} (one of: {})",
            PROFILES.join(", ")
        )));
    }
    let family = |p: &str| p == profile || (profile.starts_with(p) && p.len() < profile.len());
    Ok(RULES
        .iter()
        .filter(|r| r.profiles.iter().any(|p| family(p)))
        .map(|r| {
            let (status, message) = match (r.check)(facts) {
                Outcome::Pass(m) => (Status::Pass, m),
                Outcome::Fail(m) => (Status::Fail, m),
                Outcome::Skip(m) => (Status::Skipped, m),
            };
            let waiver = waivers
                .iter()
                .find(|(id, _)| id == r.id)
                .map(|(_, why)| why.clone());
            let status = match (status, &waiver) {
                (Status::Fail, Some(_)) => Status::Waived,
                (s, _) => s,
            };
            Finding {
                rule: r.id.to_string(),
                severity: r.severity,
                status,
                title: r.title.to_string(),
                message,
                fix: r.fix.to_string(),
                doc: r.doc.to_string(),
                waiver,
            }
        })
        .collect())
}

/// `azure` becomes `azure-linux` or `azure-windows` when inspection finds
/// that guest; other profiles are kept.
pub fn pick_profile<'a>(profile: &'a str, facts: &Facts) -> &'a str {
    if profile != "azure" {
        return profile;
    }
    match facts.inspection.as_ref() {
        Some(i) if i.linux.is_some() => "azure-linux",
        Some(i) if i.windows.is_some() => "azure-windows",
        _ => profile,
    }
}

/// docs/rules.md, generated from [`RULES`].
pub fn rules_markdown() -> String {
    let mut s = String::from(
        "# Validation rules\n\nGenerated from the rule table in `src/validate/` by\n`onramp validate --list-rules`; a test keeps this file equal to it.\n\n",
    );
    for p in PROFILES {
        let rules: Vec<&Rule> = RULES.iter().filter(|r| r.profiles.contains(p)).collect();
        if rules.is_empty() {
            continue;
        }
        s.push_str(&format!("## Profile `{p}`\n\n"));
        if *p == "azure" {
            s.push_str("`azure` also runs `azure-linux` or `azure-windows`, picked by inspecting the guest.\n\n");
        }
        for r in rules {
            s.push_str(&format!(
                "### `{}` ({})\n\n{}\n\n- Why: {}\n- Fix: {}\n- Docs: <{}>\n\n",
                r.id,
                r.severity.name(),
                r.title,
                r.why,
                r.fix,
                r.doc
            ));
        }
    }
    s
}

/// A validation request (from the CLI or a recipe).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Profile name.
    pub profile: String,
    /// Waivers (rule id, reason).
    pub waivers: Vec<(String, String)>,
    /// VM generation.
    pub generation: Option<u8>,
    /// Data disk.
    pub data_disk: bool,
    /// Specialized on purpose.
    pub specialized: bool,
}

/// Validate the image at `path`.
pub fn validate(
    path: &std::path::Path,
    open: &crate::source::OpenOptions,
    req: &Request,
) -> Result<Report> {
    let waivers = parse_waivers(&req.waivers)?;
    // Disk rules read a VHD's footer straight from the file, before (and
    // whether or not) any reader accepts it.
    let disk = match DiskFacts::from_vhd_file(path).map_err(|e| e.at(path))? {
        Some(d) => d,
        None => {
            let src = crate::source::open(path, open)?;
            DiskFacts::projected(src.as_ref()).map_err(|e| e.at(path))?
        }
    };
    let mut facts = Facts {
        disk,
        generation: req.generation,
        data_disk: req.data_disk,
        specialized: req.specialized,
        ..Facts::default()
    };
    if !PROFILES.contains(&req.profile.as_str()) {
        // Same message as evaluate, before any inspection work.
        evaluate(&req.profile, &facts, &waivers)?;
    }
    // Layout and guest facts: failures here skip those rules, never the disk rules.
    match crate::source::open(path, open) {
        Ok(src) => {
            let src: std::sync::Arc<dyn crate::block::BlockSource> = std::sync::Arc::from(src);
            facts.layout = Some(LayoutFacts::gather(&src));
            if !req.data_disk {
                match crate::guest::inspect(src.clone()) {
                    Ok(i) => {
                        facts.kernel = guest::kernel_facts(&src, &i);
                        facts.inspection = Some(i);
                    }
                    Err(e) => facts.inspection_error = Some(e.to_string()),
                }
            }
        }
        Err(e) => facts.inspection_error = Some(format!("the image could not be opened: {e}")),
    }
    let profile = pick_profile(&req.profile, &facts);
    let findings = evaluate(profile, &facts, &waivers)?;
    Ok(Report::new(
        path.display().to_string(),
        profile.to_string(),
        facts.disk.judged_on(),
        findings,
    ))
}
