//! Validation reports: human text, JSON, JUnit XML and SARIF.

use super::{Finding, Severity, Status};
use serde_json::{json, Value};

/// A whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The image validated.
    pub image: String,
    /// Profile used (after `azure` picked linux or windows).
    pub profile: String,
    /// What the disk rules were judged on (the file itself, or the disk onramp would write).
    pub judged_on: String,
    /// One finding per rule.
    pub findings: Vec<Finding>,
    /// Counts.
    pub summary: Summary,
}

/// Counts by outcome.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Rules that passed.
    pub passed: usize,
    /// Failed rules of severity error.
    pub errors: usize,
    /// Failed rules of severity warning.
    pub warnings: usize,
    /// Failed rules of severity info.
    pub infos: usize,
    /// Failed rules waived by the user.
    pub waived: usize,
    /// Rules that did not apply.
    pub skipped: usize,
}

impl Report {
    /// Build from findings, computing the summary.
    pub fn new(image: String, profile: String, judged_on: String, findings: Vec<Finding>) -> Self {
        let mut s = Summary::default();
        for f in &findings {
            match (f.status, f.severity) {
                (Status::Pass, _) => s.passed += 1,
                (Status::Skipped, _) => s.skipped += 1,
                (Status::Waived, _) => s.waived += 1,
                (Status::Fail, Severity::Error) => s.errors += 1,
                (Status::Fail, Severity::Warning) => s.warnings += 1,
                (Status::Fail, Severity::Info) => s.infos += 1,
            }
        }
        Report {
            image,
            profile,
            judged_on,
            findings,
            summary: s,
        }
    }

    /// Whether the image passes: no errors (and no warnings when `strict`).
    pub fn passes(&self, strict: bool) -> bool {
        self.summary.errors == 0 && (!strict || self.summary.warnings == 0)
    }

    /// Human text grouped by severity; colour only when `colour`.
    pub fn to_text(&self, colour: bool) -> String {
        let paint = |code: &str, s: &str| {
            if colour {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut out = format!(
            "{}: profile {} ({})\n",
            self.image, self.profile, self.judged_on
        );
        for (sev, label, code) in [
            (Severity::Error, "ERROR", "31;1"),
            (Severity::Warning, "WARNING", "33;1"),
            (Severity::Info, "INFO", "36"),
        ] {
            for f in self
                .findings
                .iter()
                .filter(|f| f.severity == sev && f.status == Status::Fail)
            {
                out.push_str(&format!(
                    "{} {}: {}\n    {}\n    fix: {}\n",
                    paint(code, label),
                    f.rule,
                    f.title,
                    f.message,
                    f.fix
                ));
            }
        }
        for f in self.findings.iter().filter(|f| f.status == Status::Waived) {
            out.push_str(&format!(
                "{} {}: {} (waived: {})\n",
                paint("35", "WAIVED"),
                f.rule,
                f.message,
                f.waiver.as_deref().unwrap_or("")
            ));
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{} passed, {} errors, {} warnings, {} info, {} waived, {} not applicable\n",
            s.passed, s.errors, s.warnings, s.infos, s.waived, s.skipped
        ));
        out
    }

    /// JSON (the documented schema: this struct serialised).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// JUnit XML: one testcase per rule; failures for failed errors and
    /// warnings, `skipped` for rules that did not apply or were waived.
    pub fn to_junit(&self) -> String {
        let failures = self.summary.errors + self.summary.warnings;
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str(&format!(
            "<testsuites name=\"onramp validate\" tests=\"{}\" failures=\"{}\">\n",
            self.findings.len(),
            failures
        ));
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            xml(&format!("{} {}", self.profile, self.image)),
            self.findings.len(),
            failures,
            self.summary.skipped + self.summary.waived
        ));
        for f in &self.findings {
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\">",
                xml(&self.profile),
                xml(&f.rule)
            ));
            match f.status {
                Status::Fail if f.severity != Severity::Info => x.push_str(&format!(
                    "\n      <failure type=\"{}\" message=\"{}\">{}&#10;fix: {}</failure>\n    ",
                    f.severity.name(),
                    xml(&f.title),
                    xml(&f.message),
                    xml(&f.fix)
                )),
                Status::Skipped => {
                    x.push_str(&format!("<skipped message=\"{}\"/>", xml(&f.message)))
                }
                Status::Waived => x.push_str(&format!(
                    "<skipped message=\"waived: {}\"/>",
                    xml(f.waiver.as_deref().unwrap_or(""))
                )),
                _ => {}
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }

    /// SARIF 2.1.0 (for code-scanning dashboards).
    pub fn to_sarif(&self) -> String {
        let rules: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({"id": f.rule, "shortDescription": {"text": f.title},
                       "help": {"text": f.fix}, "helpUri": f.doc})
            })
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .map(|f| {
                json!({"ruleId": f.rule, "level": match f.severity {
                        Severity::Error => "error", Severity::Warning => "warning", Severity::Info => "note"},
                       "message": {"text": f.message},
                       "locations": [{"physicalLocation": {"artifactLocation": {"uri": self.image}}}]})
            })
            .collect();
        serde_json::to_string_pretty(&json!({
            "version": "2.1.0",
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "runs": [{"tool": {"driver": {"name": "onramp", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
                      "results": results}]
        }))
        .unwrap_or_default()
    }
}

/// Escape text for XML attributes and content.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}
