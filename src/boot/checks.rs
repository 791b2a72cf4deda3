//! What `onramp boot-test` looks for on the serial console.
//!
//! - Userspace reached: a line matching one of [`USERSPACE`]: systemd's
//!   "Reached target" for the multi-user, graphical or getty/login-prompt
//!   targets (by description or unit name), "Startup finished", or a getty
//!   `login:` prompt.
//! - `--expect-unit NAME`: systemd's console status line for the unit. systemd
//!   prints `[  OK  ] Started <X>.` (also `Finished`, `Reached target`,
//!   `Listening on`, `Mounted` for oneshot services, targets, sockets and
//!   mounts), where `<X>` is the unit's Description, its name, or (systemd ≥ 252,
//!   `StatusUnitFormat=combined`) `<name> - <Description>`. NAME matches when
//!   `<X>` equals NAME, NAME with `.service` appended when NAME has no unit
//!   suffix, or the Description= read from the unit file in the guest
//!   (`/etc/systemd/system`, `/usr/lib/systemd/system`, `/lib/systemd/system`);
//!   or when `<X>` starts with `<name> - `. A `Failed to start <X>` line for an
//!   expected unit fails the test at once.
//! - `--expect-serial REGEX`: some console line (ANSI colour codes removed)
//!   matches REGEX (Rust `regex` syntax).

use crate::error::{Error, Result};
use crate::guest::GuestFs;
use regex::Regex;

/// Lines that say userspace is up.
pub const USERSPACE: &[&str] = &[
    r"Reached target .*(Multi-User System|Graphical Interface|Login Prompts|multi-user\.target|graphical\.target|getty\.target)",
    r"Startup finished in ",
    r"(^|\s)login: *$",
];

/// Verbs systemd prints before a unit that came up.
const STARTED: &[&str] = &[
    "Started ",
    "Finished ",
    "Reached target ",
    "Listening on ",
    "Mounted ",
];

/// Most bytes of a unit file read to find its Description.
const MAX_UNIT_FILE_BYTES: u64 = 1 << 20;

/// One check and its state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// "userspace", "unit" or "serial".
    pub kind: String,
    /// The unit name or regex ("userspace" for the default check).
    pub what: String,
    /// Seen.
    pub passed: bool,
    /// The console line that satisfied it.
    pub line: Option<String>,
    /// Seconds after QEMU started.
    pub at_seconds: Option<f64>,
}

struct Unit {
    check: Check,
    /// Unit name with suffix ("foo.service").
    name: String,
    /// Strings `<X>` may equal.
    names: Vec<String>,
    /// Description= from the guest's unit file.
    description: Option<String>,
}

/// All the checks of one boot test.
pub struct Checks {
    userspace: Option<(Check, Vec<Regex>)>,
    units: Vec<Unit>,
    serial: Vec<(Check, Regex)>,
    failed: Option<String>,
}

fn new_check(kind: &str, what: &str) -> Check {
    Check {
        kind: kind.into(),
        what: what.into(),
        passed: false,
        line: None,
        at_seconds: None,
    }
}

fn description(g: &GuestFs, unit: &str) -> Option<String> {
    for d in [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ] {
        let p = format!("{d}/{unit}");
        let Ok(Some(b)) = crate::fs::read_guest_file(g, &p, MAX_UNIT_FILE_BYTES) else {
            continue;
        };
        let t = String::from_utf8_lossy(&b);
        let d = t.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Description")
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
                .map(|r| r.trim().to_string())
        });
        if d.is_some() {
            return d;
        }
    }
    None
}

impl Checks {
    /// Compile the `--expect-serial` regexes (a bad one is invalid input).
    pub fn new(serial: &[String]) -> Result<Self> {
        let mut s = Vec::new();
        for r in serial {
            let re =
                Regex::new(r).map_err(|e| Error::invalid(format!("--expect-serial {r:?}: {e}")))?;
            s.push((new_check("serial", r), re));
        }
        Ok(Checks {
            userspace: None,
            units: Vec::new(),
            serial: s,
            failed: None,
        })
    }

    /// Require userspace to be reached.
    pub fn require_userspace(&mut self) {
        let res = USERSPACE
            .iter()
            .filter_map(|r| Regex::new(r).ok())
            .collect();
        self.userspace = Some((new_check("userspace", "userspace"), res));
    }

    /// Expect these units; their descriptions come from the guest when it has them.
    pub fn set_units(&mut self, units: &[String], g: Option<&GuestFs>) {
        const SUFFIXES: &[&str] = &[
            ".service", ".socket", ".target", ".mount", ".timer", ".path", ".swap", ".device",
            ".scope", ".slice",
        ];
        self.units = units
            .iter()
            .map(|u| {
                let name = if SUFFIXES.iter().any(|s| u.ends_with(s)) {
                    u.clone()
                } else {
                    format!("{u}.service")
                };
                let mut names = vec![u.clone(), name.clone()];
                let description = g.and_then(|g| description(g, &name));
                if let Some(d) = &description {
                    names.push(d.clone());
                }
                names.dedup();
                Unit {
                    check: new_check("unit", u),
                    name,
                    names,
                    description,
                }
            })
            .collect();
    }

    /// Forget what was seen (a new QEMU run).
    pub fn reset(&mut self) {
        let clear = |c: &mut Check| {
            c.passed = false;
            c.line = None;
            c.at_seconds = None;
        };
        if let Some((c, _)) = &mut self.userspace {
            clear(c);
        }
        for u in &mut self.units {
            clear(&mut u.check);
        }
        for (c, _) in &mut self.serial {
            clear(c);
        }
        self.failed = None;
    }

    /// Look at one console line, seen `t` seconds after start.
    pub fn feed(&mut self, line: &str, t: f64) {
        let hit = |c: &mut Check| {
            if !c.passed {
                c.passed = true;
                c.line = Some(line.trim().to_string());
                c.at_seconds = Some(t);
            }
        };
        if let Some((c, res)) = &mut self.userspace {
            if !c.passed && res.iter().any(|r| r.is_match(line)) {
                hit(c);
            }
        }
        for (c, re) in &mut self.serial {
            if !c.passed && re.is_match(line) {
                hit(c);
            }
        }
        for u in &mut self.units {
            if !u.check.passed && STARTED.iter().any(|v| unit_after(line, v, u)) {
                hit(&mut u.check);
            }
            if self.failed.is_none() && unit_after(line, "Failed to start ", u) {
                self.failed = Some(format!(
                    "unit {} failed to start: {}",
                    u.check.what,
                    line.trim()
                ));
            }
        }
    }

    /// When userspace was reached, if it is a check and was seen.
    pub fn userspace_at(&self) -> Option<f64> {
        self.userspace.as_ref().and_then(|(c, _)| c.at_seconds)
    }

    /// A failure seen on the console that ends the test.
    pub fn failure(&self) -> Option<String> {
        self.failed.clone()
    }

    /// Every check passed.
    pub fn all_passed(&self) -> bool {
        self.userspace.as_ref().is_none_or(|(c, _)| c.passed)
            && self.units.iter().all(|u| u.check.passed)
            && self.serial.iter().all(|(c, _)| c.passed)
    }

    /// Checks not yet passed, described.
    pub fn missing(&self) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| match c.kind.as_str() {
                "userspace" => "userspace reached".to_string(),
                k => format!("{k} {}", c.what),
            })
            .collect()
    }

    /// All checks in order: userspace, units, serial.
    pub fn list(&self) -> Vec<Check> {
        let mut v = Vec::new();
        if let Some((c, _)) = &self.userspace {
            v.push(c.clone());
        }
        v.extend(self.units.iter().map(|u| u.check.clone()));
        v.extend(self.serial.iter().map(|(c, _)| c.clone()));
        v
    }
}

/// `line` says `<verb><X>` with `<X>` naming unit `u`. systemd shortens long
/// status texts to the console width with "…" in the middle; then the visible
/// head and tail must both fit one full form.
fn unit_after(line: &str, verb: &str, u: &Unit) -> bool {
    let Some(i) = line.find(verb) else {
        return false;
    };
    let rest = line
        .get(i.saturating_add(verb.len())..)
        .unwrap_or("")
        .trim_end();
    let x = rest.strip_suffix('.').unwrap_or(rest);
    let head = format!("{} - ", u.name);
    let mut fulls = u.names.clone();
    if let Some(d) = &u.description {
        fulls.push(format!("{head}{d}"));
    }
    match x.split_once('\u{2026}') {
        None => {
            fulls.iter().any(|n| n == x)
                || x.starts_with(&head)
                || x.split_once(" - ")
                    .is_some_and(|(_, d)| u.names.iter().any(|n| n == d))
        }
        Some((a, b)) => {
            a.starts_with(&head)
                || fulls.iter().any(|f| {
                    f.len() >= a.len().saturating_add(b.len()) && f.starts_with(a) && f.ends_with(b)
                })
                // "<name head>…<name tail> - <description>".
                || (!a.is_empty()
                    && u.name.starts_with(a)
                    && b.split_once(" - ").is_some_and(|(t, _)| {
                        u.name.ends_with(t) && u.name.len() > a.len().saturating_add(t.len())
                    }))
                || u.names.iter().any(|n| {
                    // "<name>…<end of description>" where the description is the NAME given.
                    !b.is_empty() && n.ends_with(b) && n.len() > b.len() && u.name.starts_with(a)
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(units: &[&str], serial: &[&str]) -> Checks {
        let s: Vec<String> = serial.iter().map(|s| s.to_string()).collect();
        let mut c = Checks::new(&s).unwrap();
        let u: Vec<String> = units.iter().map(|s| s.to_string()).collect();
        c.set_units(&u, None);
        c.require_userspace();
        c
    }

    #[test]
    fn units_match_name_and_combined_format() {
        let mut c = checks(&["foo", "bar.socket"], &["hello \\d+"]);
        c.feed("[  OK  ] Started foo.service - Foo Agent.", 1.0);
        assert!(!c.all_passed());
        c.feed("[  OK  ] Listening on bar.socket.", 2.0);
        c.feed("hello 42", 3.0);
        assert!(!c.all_passed());
        c.feed(
            "[  OK  ] Reached target multi-user.target - Multi-User System.",
            4.0,
        );
        assert!(c.all_passed(), "{:?}", c.missing());
    }

    #[test]
    fn failed_unit_fails_and_near_names_do_not_match() {
        let mut c = checks(&["foo"], &[]);
        c.feed("[  OK  ] Started foobar.service - Other.", 1.0);
        c.feed("[  OK  ] Started foo.service.bak.", 1.0);
        assert!(!c.list()[1].passed);
        c.feed("[FAILED] Failed to start foo.service - Foo Agent.", 2.0);
        assert!(c.failure().is_some());
    }

    #[test]
    fn descriptions_and_ellipsized_lines_match() {
        let mut c = checks(&["onramp boot marker", "serial-getty@ttyS0"], &[]);
        c.feed(
            "[  OK  ] Finished onramp-hello.service - onramp boot marker.",
            1.0,
        );
        c.feed(
            "[  OK  ] Started serial-getty@ttyS0\u{2026}rvice - Serial Getty on ttyS0.",
            1.0,
        );
        c.feed("[  OK  ] Reached target getty.target - Login Prompts.", 2.0);
        assert!(c.all_passed(), "{:?}", c.missing());
    }

    #[test]
    fn login_prompt_is_userspace() {
        let mut c = checks(&[], &[]);
        c.feed("onramp-boot login: ", 9.0);
        assert!(c.all_passed());
    }

    #[test]
    fn bad_regex_is_invalid_input() {
        let e = Checks::new(&["(".to_string()]).err().unwrap();
        assert_eq!(e.kind().exit_code(), 2);
    }
}
