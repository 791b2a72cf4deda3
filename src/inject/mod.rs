//! Offline guest edits: customize operations, planned as filesystem actions.
//!
//! [`Op`]s are what users ask for (`onramp customize` flags, a recipe's
//! `customize:` list). [`plan`] turns them into concrete [`FsAction`]s by
//! reading the guest through the read-only [`FileSystem`] seam — so
//! `--dry-run` shows exactly what would change — and a filesystem writer
//! applies the actions through the overlay (the input is never written).

pub mod bundle;
pub mod edit;
pub mod selinux;
pub mod windows;

use crate::error::{Error, Result};
use crate::fs::{read_guest_file, resolve, FileSystem, FileType};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Largest guest file read to edit it (configuration files): 16 MiB.
pub const MAX_EDIT_BYTES: u64 = 16 << 20;

/// One customize operation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Create or replace a file with this content.
    Write {
        /// Guest path.
        path: String,
        /// Content (text).
        content: String,
    },
    /// Copy a host file into the guest.
    Upload {
        /// Host path (read by onramp).
        host: PathBuf,
        /// Guest path.
        guest: String,
    },
    /// mkdir -p.
    Mkdir(String),
    /// Create a symbolic link `link` -> `target`.
    Link {
        /// Link target (stored as given).
        target: String,
        /// Guest path of the link.
        link: String,
    },
    /// chmod.
    Chmod {
        /// Octal mode, e.g. "0644".
        mode: String,
        /// Guest path.
        path: String,
    },
    /// Delete a file, link or empty directory.
    Delete(String),
    /// Create a hard link `link` to the existing file `target`.
    Hardlink {
        /// Existing guest file.
        target: String,
        /// Guest path of the new link.
        link: String,
    },
    /// chown: `owner` is "UID:GID" (numeric).
    Chown {
        /// "UID:GID".
        owner: String,
        /// Guest path.
        path: String,
    },
    /// Set access and modification times (seconds since the Unix epoch).
    SetTimes {
        /// Guest path.
        path: String,
        /// Modification time (and access time).
        mtime: i64,
    },
    /// Set an extended attribute (e.g. `security.selinux`).
    SetXattr {
        /// Guest path.
        path: String,
        /// Attribute name with its namespace prefix (`user.`, `security.`, `trusted.`).
        name: String,
        /// Value (text; a trailing NUL is added for `security.selinux`).
        value: String,
    },
    /// Append a line to a file (created if absent).
    AppendLine {
        /// Guest path.
        path: String,
        /// The line (without newline).
        line: String,
    },
    /// Add an argument to the kernel command line (grub defaults, grub.cfg, BLS).
    KernelArg(String),
    /// Run a command once at first boot.
    FirstbootCommand(String),
    /// Set the hostname.
    Hostname(String),
    /// Comment out swap entries in /etc/fstab.
    NoSwap(bool),
    /// Windows: the Azure settings safe to set offline (RDP enabled on port
    /// 3389, SAN policy OnlineAll, RealTimeIsUniversal = 1).
    AzureWindowsSettings(bool),
    /// SELinux guests: relabel everything at first boot (`/.autorelabel`)
    /// instead of labelling the new files from the policy's file_contexts.
    SelinuxRelabel(bool),
}

/// A concrete change to the guest filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum FsAction {
    /// Create a directory and its missing parents.
    Mkdir {
        /// Guest path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Create or replace a regular file.
    WriteFile {
        /// Guest path.
        path: String,
        /// Content.
        #[serde(serialize_with = "ser_len")]
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Create a symbolic link.
    Symlink {
        /// Link target.
        target: String,
        /// Guest path of the link.
        path: String,
    },
    /// Change permission bits.
    Chmod {
        /// Guest path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Remove a file, link or empty directory.
    Delete {
        /// Guest path.
        path: String,
    },
    /// Create a hard link `path` to the existing non-directory `target`.
    Hardlink {
        /// Existing guest path.
        target: String,
        /// Guest path of the new link.
        path: String,
    },
    /// Change owner and group.
    Chown {
        /// Guest path.
        path: String,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Set access and modification times.
    SetTimes {
        /// Guest path.
        path: String,
        /// Access time, seconds since the Unix epoch.
        atime: i64,
        /// Modification time, seconds since the Unix epoch.
        mtime: i64,
    },
    /// Set an extended attribute.
    SetXattr {
        /// Guest path.
        path: String,
        /// Full name with namespace prefix (`security.selinux`).
        name: String,
        /// Raw value.
        #[serde(serialize_with = "ser_len")]
        value: Vec<u8>,
    },
}

fn ser_len<S: serde::Serializer>(d: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{} bytes", d.len()))
}

impl FsAction {
    /// One line for `--dry-run`.
    pub fn describe(&self) -> String {
        match self {
            FsAction::Mkdir { path, mode } => format!("mkdir -p {path} (mode {mode:o})"),
            FsAction::WriteFile {
                path,
                data,
                mode,
                uid,
                gid,
            } => {
                format!(
                    "write {path} ({} bytes, mode {mode:o}, owner {uid}:{gid})",
                    data.len()
                )
            }
            FsAction::Symlink { target, path } => format!("symlink {path} -> {target}"),
            FsAction::Chmod { path, mode } => format!("chmod {mode:o} {path}"),
            FsAction::Delete { path } => format!("delete {path}"),
            FsAction::Hardlink { target, path } => format!("hard link {path} => {target}"),
            FsAction::Chown { path, uid, gid } => format!("chown {uid}:{gid} {path}"),
            FsAction::SetTimes { path, atime, mtime } => {
                format!("set times of {path} (atime {atime}, mtime {mtime})")
            }
            FsAction::SetXattr { path, name, value } if name == "security.selinux" => {
                let ctx = String::from_utf8_lossy(value.strip_suffix(&[0]).unwrap_or(value));
                format!("label {path} {ctx} (security.selinux)")
            }
            FsAction::SetXattr { path, name, value } => {
                format!("set xattr {name} on {path} ({} bytes)", value.len())
            }
        }
    }
}

fn guest_path(p: &str) -> Result<String> {
    if !p.starts_with('/') {
        return Err(Error::invalid(format!("guest path {p:?} must be absolute")));
    }
    if p.contains('\0') {
        return Err(Error::invalid("guest path contains a NUL byte"));
    }
    Ok(p.to_string())
}

/// Split `A:B` at the first colon (for `--write PATH:CONTENT` and friends).
pub fn split_pair<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str)> {
    s.split_once(':')
        .ok_or_else(|| Error::invalid(format!("{flag} expects A:B, found {s:?}")))
}

/// Parse an octal mode like "0644" or "755".
pub fn parse_mode(s: &str) -> Result<u32> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| Error::invalid(format!("mode {s:?} is not an octal mode like 0644")))
}

/// Parse "UID:GID" (numeric ids).
pub fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::invalid(format!("owner {s:?} is not numeric UID:GID like 0:0"));
    let (u, g) = s.split_once(':').ok_or_else(bad)?;
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

/// Check an extended attribute name: a known namespace and a non-empty rest.
pub fn xattr_value(name: &str, value: &str) -> Result<Vec<u8>> {
    let ok = ["user.", "security.", "trusted.", "system."]
        .iter()
        .any(|ns| name.strip_prefix(ns).is_some_and(|r| !r.is_empty()))
        && name.len() <= 255;
    if !ok {
        return Err(Error::invalid(format!(
            "xattr name {name:?} needs a namespace prefix (user., security., trusted., system.) and at most 255 bytes"
        )));
    }
    let mut v = value.as_bytes().to_vec();
    if name == "security.selinux" && !v.ends_with(&[0]) {
        // The kernel stores SELinux labels NUL-terminated.
        v.push(0);
    }
    Ok(v)
}

/// Plans edits against the guest, tracking files the plan itself changes.
struct Planner<'a> {
    fs: &'a dyn FileSystem,
    actions: Vec<FsAction>,
    pending: BTreeMap<String, Option<Vec<u8>>>,
}

impl Planner<'_> {
    fn current(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let path = resolve(self.fs, path, true)?;
        if let Some(p) = self.pending.get(&path) {
            return Ok(p.clone());
        }
        read_guest_file(self.fs, &path, MAX_EDIT_BYTES)
    }

    fn existing_mode(&self, path: &str) -> Result<Option<(u32, u32, u32)>> {
        let p = resolve(self.fs, path, true)?;
        Ok(self
            .fs
            .stat(&p)?
            .filter(|m| m.file_type == FileType::File)
            .map(|m| (m.mode & 0o7777, m.uid, m.gid)))
    }

    fn write(&mut self, path: &str, data: Vec<u8>, default_mode: u32) -> Result<()> {
        // Plans name canonical guest paths: symlinks resolved inside the guest.
        let resolved = resolve(self.fs, path, true)?;
        let path = resolved.as_str();
        let (mode, uid, gid) = self.existing_mode(path)?.unwrap_or((default_mode, 0, 0));
        self.pending.insert(path.to_string(), Some(data.clone()));
        // A later write to the same path replaces an earlier one in the plan.
        self.actions
            .retain(|a| !matches!(a, FsAction::WriteFile { path: p, .. } if p == path));
        self.actions.push(FsAction::WriteFile {
            path: path.to_string(),
            data,
            mode,
            uid,
            gid,
        });
        Ok(())
    }

    fn edit(&mut self, path: &str, f: impl Fn(&str) -> Option<String>) -> Result<bool> {
        let Some(cur) = self.current(path)? else {
            return Ok(false);
        };
        let text = String::from_utf8_lossy(&cur).into_owned();
        if let Some(new) = f(&text) {
            self.write(path, new.into_bytes(), 0o644)?;
        }
        Ok(true)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let p = resolve(self.fs, dir, true)?;
        match self.fs.stat(&p)? {
            Some(m) if m.file_type == FileType::Dir => Ok(self
                .fs
                .read_dir(&p)?
                .into_iter()
                .map(|e| format!("{}/{}", p.trim_end_matches('/'), e.name))
                .collect()),
            _ => Ok(Vec::new()),
        }
    }
}

/// The systemd unit that runs the firstboot script once.
pub const FIRSTBOOT_UNIT: &str = "[Unit]
Description=onramp first-boot commands
After=network-online.target
Wants=network-online.target
ConditionPathExists=/usr/lib/onramp/firstboot.sh

[Service]
Type=oneshot
ExecStart=/bin/sh /usr/lib/onramp/firstboot.sh
ExecStartPost=/bin/systemctl disable onramp-firstboot.service
RemainAfterExit=no

[Install]
WantedBy=multi-user.target
";

/// Turn operations into filesystem actions, reading the guest as needed.
pub fn plan(ops: &[Op], fs: &dyn FileSystem) -> Result<Vec<FsAction>> {
    let mut p = Planner {
        fs,
        actions: Vec::new(),
        pending: BTreeMap::new(),
    };
    let mut firstboot: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Write { path, content } => {
                let path = guest_path(path)?;
                p.write(&path, content.clone().into_bytes(), 0o644)?;
            }
            Op::Upload { host, guest } => {
                let path = guest_path(guest)?;
                let data = std::fs::read(host).map_err(|e| {
                    Error::invalid(format!("--upload: cannot read {}: {e}", host.display()))
                })?;
                p.write(&path, data, 0o644)?;
            }
            Op::Mkdir(path) => {
                let path = guest_path(path)?;
                p.actions.push(FsAction::Mkdir { path, mode: 0o755 });
            }
            Op::Link { target, link } => {
                let path = guest_path(link)?;
                p.actions.push(FsAction::Symlink {
                    target: target.clone(),
                    path,
                });
            }
            Op::Chmod { mode, path } => {
                let path = guest_path(path)?;
                p.actions.push(FsAction::Chmod {
                    path,
                    mode: parse_mode(mode)?,
                });
            }
            Op::Delete(path) => {
                let path = guest_path(path)?;
                p.pending.insert(path.clone(), None);
                p.actions.push(FsAction::Delete { path });
            }
            Op::Hardlink { target, link } => {
                p.actions.push(FsAction::Hardlink {
                    target: guest_path(target)?,
                    path: guest_path(link)?,
                });
            }
            Op::Chown { owner, path } => {
                let (uid, gid) = parse_owner(owner)?;
                p.actions.push(FsAction::Chown {
                    path: guest_path(path)?,
                    uid,
                    gid,
                });
            }
            Op::SetTimes { path, mtime } => {
                p.actions.push(FsAction::SetTimes {
                    path: guest_path(path)?,
                    atime: *mtime,
                    mtime: *mtime,
                });
            }
            Op::SetXattr { path, name, value } => {
                p.actions.push(FsAction::SetXattr {
                    path: guest_path(path)?,
                    value: xattr_value(name, value)?,
                    name: name.clone(),
                });
            }
            Op::AppendLine { path, line } => {
                let path = guest_path(path)?;
                let cur = p.current(&path)?.unwrap_or_default();
                let text = String::from_utf8_lossy(&cur).into_owned();
                p.write(&path, edit::append_line(&text, line).into_bytes(), 0o644)?;
            }
            Op::KernelArg(arg) => {
                if arg.is_empty() || arg.contains(char::is_whitespace) {
                    return Err(Error::invalid(format!(
                        "--kernel-arg takes one argument without spaces, found {arg:?}"
                    )));
                }
                let mut touched =
                    p.edit("/etc/default/grub", |t| edit::grub_default_add_arg(t, arg))?;
                for cfg in [
                    "/boot/grub/grub.cfg",
                    "/boot/grub2/grub.cfg",
                    "/boot/efi/EFI/BOOT/grub.cfg",
                ] {
                    touched |= p.edit(cfg, |t| edit::grub_cfg_add_arg(t, arg))?;
                }
                for entry in p.list("/boot/loader/entries")? {
                    if entry.ends_with(".conf") {
                        touched |= p.edit(&entry, |t| edit::bls_add_arg(t, arg))?;
                    }
                }
                touched |= p.edit("/etc/kernel/cmdline", |t| {
                    let new = format!("{}\n", edit::add_kernel_arg(t.trim(), arg));
                    (new != t).then_some(new)
                })?;
                if !touched {
                    return Err(Error::unsupported(
                        "--kernel-arg: the guest has no /etc/default/grub, grub.cfg, BLS entries or /etc/kernel/cmdline to edit",
                    ));
                }
            }
            Op::FirstbootCommand(cmd) => firstboot.push(cmd.clone()),
            Op::Hostname(name) => {
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                if !ok {
                    return Err(Error::invalid(format!(
                        "--hostname: {name:?} is not a valid host name"
                    )));
                }
                p.write("/etc/hostname", format!("{name}\n").into_bytes(), 0o644)?;
            }
            Op::NoSwap(on) => {
                if *on {
                    p.edit("/etc/fstab", edit::fstab_no_swap)?;
                }
            }
            Op::SelinuxRelabel(_) => {}
            Op::AzureWindowsSettings(on) => {
                if *on {
                    return Err(Error::unsupported(
                        "--azure-settings (azure-windows-settings) applies to Windows guests; this is a Linux guest",
                    ));
                }
            }
        }
    }
    if !firstboot.is_empty() {
        let mut script =
            String::from("#!/bin/sh\n# Written by onramp: runs once at first boot.\nset -e\n");
        for c in &firstboot {
            script.push_str(c);
            script.push('\n');
        }
        script.push_str("rm -f /usr/lib/onramp/firstboot.sh\n");
        p.actions.push(FsAction::Mkdir {
            path: "/usr/lib/onramp".into(),
            mode: 0o755,
        });
        p.write("/usr/lib/onramp/firstboot.sh", script.into_bytes(), 0o755)?;
        p.write(
            "/etc/systemd/system/onramp-firstboot.service",
            FIRSTBOOT_UNIT.as_bytes().to_vec(),
            0o644,
        )?;
        p.actions.push(FsAction::Mkdir {
            path: "/etc/systemd/system/multi-user.target.wants".into(),
            mode: 0o755,
        });
        p.actions.push(FsAction::Symlink {
            target: "/etc/systemd/system/onramp-firstboot.service".into(),
            path: "/etc/systemd/system/multi-user.target.wants/onramp-firstboot.service".into(),
        });
    }
    Ok(p.actions)
}

/// SELinux in the guest: when `/etc/selinux/config` says `SELINUX=enforcing`
/// or `permissive` and `actions` change the filesystem, files onramp creates
/// carry no security label. Like virt-customize's `--selinux-relabel` without
/// booting, schedule a full relabel at first boot: an empty `/.autorelabel`
/// (read by selinux-autorelabel in RHEL-family guests). Returns the action and
/// a plan warning saying so, or `None` when SELinux is disabled or absent.
pub fn selinux_relabel(
    fs: &dyn FileSystem,
    actions: &[FsAction],
) -> Result<Option<(FsAction, String)>> {
    if actions.is_empty() {
        return Ok(None);
    }
    let Some(m) = fs.stat("/etc/selinux/config")? else {
        return Ok(None);
    };
    if m.file_type != FileType::File {
        return Ok(None);
    }
    let mode = selinux::config(fs)?.map(|(m, _)| m);
    let Some(mode) = mode.filter(|m| m == "enforcing" || m == "permissive") else {
        return Ok(None);
    };
    if actions
        .iter()
        .any(|a| matches!(a, FsAction::WriteFile { path, .. } if path == "/.autorelabel"))
    {
        return Ok(None);
    }
    Ok(Some((
        FsAction::WriteFile {
            path: "/.autorelabel".into(),
            data: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
        format!(
            "SELinux is {mode} in the guest (/etc/selinux/config): onramp wrote /.autorelabel so the first boot relabels the files it wrote (that boot takes longer and reboots once)"
        ),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{DirEntry, Metadata};

    /// A tiny in-memory filesystem: path -> (type, content).
    struct MemFs(BTreeMap<String, (FileType, Vec<u8>)>);

    impl FileSystem for MemFs {
        fn kind(&self) -> &'static str {
            "mem"
        }
        fn stat(&self, path: &str) -> Result<Option<Metadata>> {
            if path == "/" {
                return Ok(Some(meta(FileType::Dir, 0)));
            }
            Ok(self.0.get(path).map(|(t, d)| meta(*t, d.len() as u64)))
        }
        fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
            let prefix = format!("{}/", path.trim_end_matches('/'));
            Ok(self
                .0
                .iter()
                .filter_map(|(k, (t, _))| {
                    let rest = k.strip_prefix(&prefix)?;
                    (!rest.contains('/')).then(|| DirEntry {
                        name: rest.to_string(),
                        file_type: *t,
                        ino: 0,
                    })
                })
                .collect())
        }
        fn read_file(&self, path: &str, _limit: u64) -> Result<Vec<u8>> {
            Ok(self.0.get(path).map(|x| x.1.clone()).unwrap_or_default())
        }
        fn read_link(&self, path: &str) -> Result<String> {
            Ok(String::from_utf8_lossy(&self.0[path].1).into_owned())
        }
    }

    fn meta(file_type: FileType, size: u64) -> Metadata {
        Metadata {
            file_type,
            size,
            mode: 0o640,
            uid: 0,
            gid: 0,
            mtime: 0,
            ino: 1,
        }
    }

    fn guest() -> MemFs {
        let mut m = BTreeMap::new();
        let mut put = |p: &str, t: FileType, c: &str| {
            m.insert(p.to_string(), (t, c.as_bytes().to_vec()));
        };
        put("/etc", FileType::Dir, "");
        put("/etc/default", FileType::Dir, "");
        put(
            "/etc/default/grub",
            FileType::File,
            "GRUB_CMDLINE_LINUX=\"quiet\"\n",
        );
        put(
            "/etc/fstab",
            FileType::File,
            "LABEL=r / ext4 defaults 0 1\n/swap none swap sw 0 0\n",
        );
        put("/boot", FileType::Dir, "");
        put("/boot/grub", FileType::Symlink, "/grub2");
        put("/grub2", FileType::Dir, "");
        put("/grub2/grub.cfg", FileType::File, "linux /vmlinuz ro\n");
        put("/boot/loader", FileType::Dir, "");
        put("/boot/loader/entries", FileType::Dir, "");
        put(
            "/boot/loader/entries/a.conf",
            FileType::File,
            "options ro\n",
        );
        MemFs(m)
    }

    fn written<'a>(acts: &'a [FsAction], path: &str) -> &'a str {
        acts.iter()
            .find_map(|a| match a {
                FsAction::WriteFile { path: p, data, .. } if p == path => {
                    std::str::from_utf8(data).ok()
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{path} not written in {acts:?}"))
    }

    #[test]
    fn selinux_enforcing_schedules_a_relabel() {
        let mut m = BTreeMap::new();
        m.insert(
            "/etc/selinux/config".to_string(),
            (
                FileType::File,
                b"# x\nSELINUX=enforcing\nSELINUXTYPE=targeted\n".to_vec(),
            ),
        );
        let fs = MemFs(m);
        let acts = vec![FsAction::Mkdir {
            path: "/x".into(),
            mode: 0o755,
        }];
        let (a, w) = selinux_relabel(&fs, &acts).unwrap().unwrap();
        assert!(matches!(a, FsAction::WriteFile { ref path, .. } if path == "/.autorelabel"));
        assert!(w.contains("enforcing"));
        assert!(selinux_relabel(&fs, &[]).unwrap().is_none());
        let mut m = BTreeMap::new();
        m.insert(
            "/etc/selinux/config".to_string(),
            (FileType::File, b"SELINUX=disabled\n".to_vec()),
        );
        assert!(selinux_relabel(&MemFs(m), &acts).unwrap().is_none());
    }

    #[test]
    fn plans_kernel_arg_everywhere_and_keeps_modes() {
        let fs = guest();
        let acts = plan(
            &[Op::KernelArg("console=ttyS0".into()), Op::NoSwap(true)],
            &fs,
        )
        .unwrap();
        assert!(written(&acts, "/etc/default/grub").contains("quiet console=ttyS0"));
        // /boot/grub is an absolute symlink: resolved inside the guest.
        assert!(written(&acts, "/grub2/grub.cfg").contains("linux /vmlinuz ro console=ttyS0"));
        assert!(written(&acts, "/boot/loader/entries/a.conf").contains("options ro console=ttyS0"));
        assert!(written(&acts, "/etc/fstab").contains("# disabled by onramp"));
        assert!(acts.iter().any(
            |a| matches!(a, FsAction::WriteFile { path, mode: 0o640, .. } if path == "/etc/fstab")
        ));
    }

    #[test]
    fn later_ops_see_earlier_ones() {
        let fs = guest();
        let acts = plan(
            &[
                Op::AppendLine {
                    path: "/etc/motd".into(),
                    line: "one".into(),
                },
                Op::AppendLine {
                    path: "/etc/motd".into(),
                    line: "two".into(),
                },
                Op::FirstbootCommand("echo hi".into()),
                Op::Hostname("web-1".into()),
            ],
            &fs,
        )
        .unwrap();
        assert_eq!(written(&acts, "/etc/motd"), "one\ntwo\n");
        assert_eq!(written(&acts, "/etc/hostname"), "web-1\n");
        assert!(written(&acts, "/usr/lib/onramp/firstboot.sh").contains("echo hi"));
        assert!(plan(&[Op::Hostname("bad name".into())], &fs).is_err());
        assert!(plan(&[Op::Mkdir("relative".into())], &fs).is_err());
    }
}
