//! SELinux labels for the files onramp creates, without booting the guest.
//!
//! When `/etc/selinux/config` says `SELINUX=enforcing` or `permissive`, every
//! file, directory and symlink a plan creates (or replaces) gets the
//! `security.selinux` label the guest's policy assigns to its path, read from
//! the policy's text `file_contexts` (`/etc/selinux/<SELINUXTYPE>/contexts/files/`)
//! — what `restorecon` would set after a relabel. When that is not possible
//! for every path (no text `file_contexts`, a line our regex engine cannot
//! compile, a path with no entry or `<<none>>`), or when the user asks for it
//! (`--selinux-relabel`), the plan falls back to `/.autorelabel`: a full
//! relabel at first boot, as virt-customize's `--selinux-relabel` on a guest.
//!
//! Lookup follows libselinux's file backend (`label_file.c`, file_contexts(5)),
//! checked against `matchpathcon -f` (libselinux 3.4) in tests/selinux_label.rs:
//! - inputs, in order: `file_contexts`, `file_contexts.homedirs`,
//!   `file_contexts.local`; a line is `REGEX [TYPE] CONTEXT` (`#` comments),
//!   TYPE one of `--` `-d` `-l` `-c` `-b` `-s` `-p`, CONTEXT `<<none>>` meaning
//!   "leave unlabelled";
//! - each REGEX is anchored as `^REGEX$`;
//! - specifications without regex meta characters (`.^$?*+|[({`, a backslash
//!   escaping the next character) are "exact" and sorted after all the others
//!   (libselinux <= 3.7 `sort_specs`: "Move exact pathname specifications to the
//!   end"); lookup scans from the end, so the LAST matching exact path wins,
//!   else the LAST matching regex in input order (libselinux >= 3.8 keeps this:
//!   literal specs first, "regex specs which are matched in reverse input order");
//! - a spec with a TYPE only matches files of that type;
//! - before lookup the path goes through the path equivalences of
//!   `file_contexts.subs` then `file_contexts.subs_dist` (`selabel_sub_key`):
//!   `SRC DST` lines, the first (scanning from the last line) whose SRC is the
//!   path or a parent directory of it wins; its prefix is replaced by DST.

use super::FsAction;
use crate::error::Result;
use crate::fs::{read_guest_file, resolve, FileSystem, FileType};
use crate::limits::MAX_FILE_CONTEXTS_BYTES;
use regex::{Regex, RegexBuilder};
use std::sync::OnceLock;

/// SELinux state of the guest from `/etc/selinux/config`: (`SELINUX=` mode in
/// lower case, `SELINUXTYPE=` policy name). `None` when the file is absent.
pub fn config(fs: &dyn FileSystem) -> Result<Option<(String, String)>> {
    let Some(m) = fs.stat("/etc/selinux/config")? else {
        return Ok(None);
    };
    if m.file_type != FileType::File {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&fs.read_file("/etc/selinux/config", 1 << 20)?).into_owned();
    let value = |key: &str| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .rev()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let mode = value("SELINUX=").map(|m| m.to_ascii_lowercase());
    // SELINUXTYPE defaults to "targeted" (selinux_config(5)).
    let ty = value("SELINUXTYPE=").unwrap_or_else(|| "targeted".into());
    Ok(mode.map(|m| (m, ty)))
}

/// The file type a specification applies to (file_contexts(5) TYPE field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--` regular file.
    File,
    /// `-d` directory.
    Dir,
    /// `-l` symbolic link.
    Link,
    /// `-c` character device.
    Char,
    /// `-b` block device.
    Block,
    /// `-s` socket.
    Socket,
    /// `-p` named pipe.
    Fifo,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "--" => Kind::File,
            "-d" => Kind::Dir,
            "-l" => Kind::Link,
            "-c" => Kind::Char,
            "-b" => Kind::Block,
            "-s" => Kind::Socket,
            "-p" => Kind::Fifo,
            _ => return None,
        })
    }
}

struct Spec {
    /// The regex as written.
    pattern: String,
    /// "file:line", for messages.
    origin: String,
    /// Text every match starts with: specs whose prefix the path lacks are
    /// skipped without compiling their regex.
    prefix: String,
    /// Compiled on first use (a real policy has thousands of lines; a plan
    /// needs a few of them).
    re: OnceLock<std::result::Result<Regex, String>>,
    kind: Option<Kind>,
    /// `None` for `<<none>>`.
    context: Option<String>,
}

impl Spec {
    fn regex(&self) -> &std::result::Result<Regex, String> {
        self.re.get_or_init(|| {
            RegexBuilder::new(&format!("^{}$", self.pattern))
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .build()
                .map_err(|e| e.to_string().lines().last().unwrap_or("").to_string())
        })
    }
}

/// The literal text every match of `re` (anchored at its start) begins with:
/// the characters before the first meta character or backslash, minus the
/// last one when a `?`, `*` or `{` makes it optional; empty when the regex has
/// an alternation `|` outside parentheses.
fn literal_prefix(re: &str) -> String {
    let (mut depth, mut class, mut esc) = (0usize, false, false);
    for c in re.chars() {
        match (esc, class, c) {
            (true, _, _) => esc = false,
            (_, _, '\\') => esc = true,
            (_, true, ']') => class = false,
            (_, true, _) => {}
            (_, _, '[') => class = true,
            (_, _, '(') => depth = depth.saturating_add(1),
            (_, _, ')') => depth = depth.saturating_sub(1),
            (_, _, '|') if depth == 0 => return String::new(),
            _ => {}
        }
    }
    let mut out = String::new();
    for c in re.chars() {
        match c {
            '?' | '*' | '{' => {
                out.pop();
                break;
            }
            '.' | '^' | '$' | '+' | '|' | '[' | '(' | '\\' => break,
            _ => out.push(c),
        }
    }
    out
}

/// A loaded file_contexts database.
pub struct FileContexts {
    /// Regex specs in input order, then exact specs in input order.
    specs: Vec<Spec>,
    /// `file_contexts.subs` and `.subs_dist`, each with the last line first.
    subs: Vec<(String, String)>,
    dist_subs: Vec<(String, String)>,
    /// Lines skipped (not `REGEX [TYPE] CONTEXT`, or an unknown TYPE).
    pub skipped: Vec<String>,
}

/// Does a file_contexts regex use any meta character (libselinux
/// `spec_hasMetaChars`: `.^$?*+|[({`, a backslash skipping the next character)?
fn has_meta(re: &str) -> bool {
    let mut it = re.chars();
    while let Some(c) = it.next() {
        match c {
            '.' | '^' | '$' | '?' | '*' | '+' | '|' | '[' | '(' | '{' => return true,
            '\\' => {
                it.next();
            }
            _ => {}
        }
    }
    false
}

fn parse_subs(text: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect();
    // libselinux prepends each line to its list: the last line is tried first.
    v.reverse();
    v
}

/// libselinux `selabel_sub`: the first equivalence whose source is `path` or a
/// parent directory of it rewrites that prefix.
fn sub(list: &[(String, String)], path: &str) -> Option<String> {
    list.iter().find_map(|(src, dst)| {
        let rest = path.strip_prefix(src.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        // A "/" destination does not double the slash.
        let rest = if dst == "/" {
            rest.strip_prefix('/').unwrap_or(rest)
        } else {
            rest
        };
        Some(format!("{dst}{rest}"))
    })
}

impl FileContexts {
    /// Parse file_contexts inputs (`(name, text)`, in load order) and the
    /// `.subs` / `.subs_dist` texts.
    pub fn parse(inputs: &[(&str, &str)], subs: &str, dist_subs: &str) -> FileContexts {
        let mut regex = Vec::new();
        let mut exact = Vec::new();
        let mut skipped = Vec::new();
        for (name, text) in inputs {
            for (i, line) in text.lines().enumerate() {
                let l = line.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                let w: Vec<&str> = l.split_whitespace().collect();
                let lineno = i.saturating_add(1);
                let (re, kind, ctx) = match w.as_slice() {
                    [re, ctx] => (*re, None, *ctx),
                    [re, ty, ctx] => match Kind::parse(ty) {
                        Some(k) => (*re, Some(k), *ctx),
                        None => {
                            skipped.push(format!("{name}:{lineno}: unknown file type {ty:?}"));
                            continue;
                        }
                    },
                    _ => {
                        skipped.push(format!("{name}:{lineno}: expected REGEX [TYPE] CONTEXT"));
                        continue;
                    }
                };
                let spec = Spec {
                    pattern: re.to_string(),
                    origin: format!("{name}:{lineno}"),
                    prefix: literal_prefix(re),
                    re: OnceLock::new(),
                    kind,
                    context: (ctx != "<<none>>").then(|| ctx.to_string()),
                };
                if has_meta(re) {
                    regex.push(spec);
                } else {
                    exact.push(spec);
                }
            }
        }
        regex.extend(exact);
        FileContexts {
            specs: regex,
            subs: parse_subs(subs),
            dist_subs: parse_subs(dist_subs),
            skipped,
        }
    }

    /// Load the policy's text file_contexts from the guest. `Ok(None)` when
    /// `file_contexts` is absent or too large (only the compiled
    /// `file_contexts.bin` is not read).
    pub fn load(fs: &dyn FileSystem, policy: &str) -> Result<Option<FileContexts>> {
        if policy.is_empty() || policy.contains('/') || policy.starts_with('.') {
            return Ok(None);
        }
        let dir = format!("/etc/selinux/{policy}/contexts/files");
        let read = |name: &str| -> Result<Option<String>> {
            let p = resolve(fs, &format!("{dir}/{name}"), true)?;
            match fs.stat(&p)? {
                Some(m) if m.file_type == FileType::File && m.size <= MAX_FILE_CONTEXTS_BYTES => {
                    Ok(read_guest_file(fs, &p, MAX_FILE_CONTEXTS_BYTES)?
                        .map(|b| String::from_utf8_lossy(&b).into_owned()))
                }
                _ => Ok(None),
            }
        };
        let Some(base) = read("file_contexts")? else {
            return Ok(None);
        };
        let home = read("file_contexts.homedirs")?.unwrap_or_default();
        let local = read("file_contexts.local")?.unwrap_or_default();
        let subs = read("file_contexts.subs")?.unwrap_or_default();
        let dist = read("file_contexts.subs_dist")?.unwrap_or_default();
        Ok(Some(FileContexts::parse(
            &[
                ("file_contexts", &base),
                ("file_contexts.homedirs", &home),
                ("file_contexts.local", &local),
            ],
            &subs,
            &dist,
        )))
    }

    /// The context for `path` of type `kind`: `None` when no entry matches or
    /// the winning entry is `<<none>>` (libselinux `selabel_lookup` ENOENT);
    /// `Err` naming the line when a spec that could win has a regex the
    /// `regex` crate does not support (look-around, back-references).
    pub fn lookup(&self, path: &str, kind: Kind) -> std::result::Result<Option<&str>, String> {
        // selabel_sub_key: .subs first, then .subs_dist on its result.
        let key = match sub(&self.subs, path) {
            Some(p) => sub(&self.dist_subs, &p).unwrap_or(p),
            None => sub(&self.dist_subs, path).unwrap_or_else(|| path.to_string()),
        };
        for s in self.specs.iter().rev() {
            if !s.kind.is_none_or(|k| k == kind) || !key.starts_with(&s.prefix) {
                continue;
            }
            match s.regex() {
                Ok(re) if re.is_match(&key) => return Ok(s.context.as_deref()),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "{}: regex {:?} not supported ({e})",
                        s.origin, s.pattern
                    ))
                }
            }
        }
        Ok(None)
    }
}

/// Every path the actions create or replace, with its type, in creation
/// order: missing parent directories included (the writers create them), paths
/// deleted later dropped, hard links (an existing inode) left out.
pub fn created(fs: &dyn FileSystem, actions: &[FsAction]) -> Result<Vec<(String, Kind)>> {
    let mut made: Vec<(String, Kind)> = Vec::new();
    fn push(made: &mut Vec<(String, Kind)>, p: String, k: Kind) {
        if !made.iter().any(|(q, _)| *q == p) {
            made.push((p, k));
        }
    }
    // Like the writers' mkdir -p: each component resolved in the guest.
    let dirs = |made: &mut Vec<(String, Kind)>, path: &str| -> Result<()> {
        let mut sofar = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            sofar.push('/');
            sofar.push_str(c);
            let real = resolve(fs, &sofar, true)?;
            if !made.iter().any(|(q, _)| *q == real) && fs.stat(&real)?.is_none() {
                made.push((real.clone(), Kind::Dir));
            }
            sofar = real;
        }
        Ok(())
    };
    let parent = |p: &str| {
        p.rsplit_once('/')
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    };
    for a in actions {
        match a {
            FsAction::Mkdir { path, .. } => dirs(&mut made, path)?,
            FsAction::WriteFile { path, .. } => {
                let real = resolve(fs, path, true)?;
                dirs(&mut made, &parent(&real))?;
                push(&mut made, real, Kind::File);
            }
            FsAction::Symlink { path, .. } => {
                let real = resolve(fs, path, false)?;
                dirs(&mut made, &parent(&real))?;
                push(&mut made, real, Kind::Link);
            }
            FsAction::Hardlink { path, .. } => {
                let real = resolve(fs, path, false)?;
                dirs(&mut made, &parent(&real))?;
            }
            FsAction::Delete { path } => {
                let real = resolve(fs, path, false)?;
                let under = format!("{real}/");
                made.retain(|(q, _)| *q != real && !q.starts_with(&under));
            }
            _ => {}
        }
    }
    Ok(made)
}

/// Labels and/or `/.autorelabel` for a plan (see the module docs): the actions
/// to append and the lines that say what was done. Nothing when SELinux is
/// disabled or absent in the guest, or `actions` is empty.
pub fn label(
    fs: &dyn FileSystem,
    actions: &[FsAction],
    force_relabel: bool,
) -> Result<(Vec<FsAction>, Vec<String>)> {
    let none = || Ok((Vec::new(), Vec::new()));
    let Some((mode, policy)) = config(fs)? else {
        return none();
    };
    if actions.is_empty() || !(mode == "enforcing" || mode == "permissive") {
        return none();
    }
    let relabel = |why: String, mut acts: Vec<FsAction>| -> Result<(Vec<FsAction>, Vec<String>)> {
        let mut notes = Vec::new();
        if let Some((a, w)) = super::selinux_relabel(fs, actions)? {
            acts.push(a);
            notes.push(format!("{w}: {why}"));
        }
        Ok((acts, notes))
    };
    if force_relabel {
        return relabel("asked for (--selinux-relabel)".into(), Vec::new());
    }
    let dir = format!("/etc/selinux/{policy}/contexts/files");
    let Some(fc) = FileContexts::load(fs, &policy)? else {
        return relabel(
            format!("no readable text {dir}/file_contexts (at most {MAX_FILE_CONTEXTS_BYTES} bytes) to label them from"),
            Vec::new(),
        );
    };
    // Paths the user labels explicitly keep the user's label.
    let mut explicit = Vec::new();
    for a in actions {
        if let FsAction::SetXattr { path, name, .. } = a {
            if name == "security.selinux" {
                explicit.push(resolve(fs, path, false)?);
            }
        }
    }
    let mut acts = Vec::new();
    let mut unlabelled = Vec::new();
    let mut unknown = None;
    for (path, kind) in created(fs, actions)? {
        if explicit.contains(&path) {
            continue;
        }
        match fc.lookup(&path, kind) {
            Ok(Some(ctx)) => {
                let mut value = ctx.as_bytes().to_vec();
                value.push(0);
                acts.push(FsAction::SetXattr {
                    path,
                    name: "security.selinux".into(),
                    value,
                });
            }
            Ok(None) => unlabelled.push(path),
            Err(e) => {
                unknown.get_or_insert(e);
                unlabelled.push(path);
            }
        }
    }
    let n = acts.len();
    if unlabelled.is_empty() && fc.skipped.is_empty() {
        return Ok((
            acts,
            vec![format!(
                "SELinux is {mode} in the guest (/etc/selinux/config): labelled {n} files from {dir}/file_contexts (no relabel at boot needed)"
            )],
        ));
    }
    let mut why = format!("labelled {n} files from {dir}/file_contexts");
    if !unlabelled.is_empty() {
        let shown: Vec<&str> = unlabelled.iter().take(5).map(String::as_str).collect();
        why += &format!(
            "; {} have no entry, <<none>> or an unsupported regex ({}{})",
            unlabelled.len(),
            shown.join(", "),
            if unlabelled.len() > 5 { ", ..." } else { "" }
        );
    }
    if let Some(e) = unknown {
        why += &format!("; {e}");
    }
    if !fc.skipped.is_empty() {
        why += &format!(
            "; {} file_contexts lines skipped (first: {})",
            fc.skipped.len(),
            fc.skipped.first().map(String::as_str).unwrap_or("")
        );
    }
    relabel(why, acts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FC: &str = "\
/.*\t\t\tsystem_u:object_r:default_t:s0
/usr/.*\t\t\tsystem_u:object_r:usr_t:s0
/usr/bin(/.*)?\t\tsystem_u:object_r:bin_t:s0
/usr/bin/tmux\t--\tsystem_u:object_r:tmux_exec_t:s0
/tmp/.*\t\t\t<<none>>
/tmp\t\t-d\tsystem_u:object_r:tmp_t:s0
/etc/foo\t-d\tsystem_u:object_r:foo_t:s0
/etc/foo\t--\tsystem_u:object_r:foofile_t:s0
/etc/bar\\.d(/.*)?\tsystem_u:object_r:bar_t:s0
/etc/bar\\.d/x\tsystem_u:object_r:barx_t:s0
/etc/bar\\.d/.*\tsystem_u:object_r:barlate_t:s0
/bad(?=x)\tsystem_u:object_r:bad_t:s0
";

    #[test]
    fn libselinux_order_rules() {
        let fc = FileContexts::parse(&[("fc", FC)], "/web /srv/www\n", "/srv/www /usr/bin\n");
        let l = |p, k| fc.lookup(p, k).unwrap();
        assert_eq!(
            l("/usr/bin/x", Kind::File),
            Some("system_u:object_r:bin_t:s0")
        );
        assert_eq!(
            l("/usr/bin/tmux", Kind::File),
            Some("system_u:object_r:tmux_exec_t:s0")
        );
        assert_eq!(
            l("/usr/bin/tmux", Kind::Link),
            Some("system_u:object_r:bin_t:s0")
        );
        assert_eq!(l("/usr/lib", Kind::Dir), Some("system_u:object_r:usr_t:s0"));
        assert_eq!(l("/tmp/a", Kind::File), None);
        assert_eq!(l("/tmp", Kind::Dir), Some("system_u:object_r:tmp_t:s0"));
        assert_eq!(l("/etc/foo", Kind::Dir), Some("system_u:object_r:foo_t:s0"));
        // Exact paths beat a later regex; among regexes the last wins.
        assert_eq!(
            l("/etc/bar.d/x", Kind::File),
            Some("system_u:object_r:barx_t:s0")
        );
        assert_eq!(
            l("/etc/bar.d/y", Kind::File),
            Some("system_u:object_r:barlate_t:s0")
        );
        assert_eq!(
            l("/etc/bar.d", Kind::Dir),
            Some("system_u:object_r:bar_t:s0")
        );
        // Equivalences: .subs then .subs_dist.
        assert_eq!(l("/web/a", Kind::File), Some("system_u:object_r:bin_t:s0"));
        assert_eq!(
            l("/webx", Kind::File),
            Some("system_u:object_r:default_t:s0")
        );
        assert!(fc.lookup("/badx", Kind::File).is_err());
        assert!(fc.skipped.is_empty(), "{:?}", fc.skipped);
        assert_eq!(literal_prefix("/usr/lib/systemd(/.*)?"), "/usr/lib/systemd");
        assert_eq!(literal_prefix("/usr/bin/ab?c"), "/usr/bin/a");
        assert_eq!(literal_prefix("/etc/x\\.d"), "/etc/x");
        assert_eq!(literal_prefix("/a/(b|c)"), "/a/");
        assert_eq!(literal_prefix("/a/b|/c"), "");
        assert_eq!(literal_prefix("/a/[|]x"), "/a/");
        assert!(has_meta("/a.b") && !has_meta("/a\\.b") && !has_meta("/usr/bin"));
    }

    #[test]
    fn created_paths_include_missing_parents() {
        struct Empty;
        impl FileSystem for Empty {
            fn kind(&self) -> &'static str {
                "mem"
            }
            fn stat(&self, p: &str) -> Result<Option<crate::fs::Metadata>> {
                Ok((p == "/" || p == "/etc").then_some(crate::fs::Metadata {
                    file_type: FileType::Dir,
                    size: 0,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    ino: 2,
                }))
            }
            fn read_dir(&self, _: &str) -> Result<Vec<crate::fs::DirEntry>> {
                Ok(Vec::new())
            }
            fn read_file(&self, _: &str, _: u64) -> Result<Vec<u8>> {
                Ok(Vec::new())
            }
            fn read_link(&self, _: &str) -> Result<String> {
                Ok(String::new())
            }
        }
        let acts = vec![
            FsAction::WriteFile {
                path: "/etc/a/b/c.conf".into(),
                data: Vec::new(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            FsAction::Symlink {
                target: "/x".into(),
                path: "/etc/a/l".into(),
            },
            FsAction::Mkdir {
                path: "/opt/q".into(),
                mode: 0o755,
            },
            FsAction::Delete {
                path: "/opt/q".into(),
            },
        ];
        let c = created(&Empty, &acts).unwrap();
        assert_eq!(
            c,
            vec![
                ("/etc/a".to_string(), Kind::Dir),
                ("/etc/a/b".to_string(), Kind::Dir),
                ("/etc/a/b/c.conf".to_string(), Kind::File),
                ("/etc/a/l".to_string(), Kind::Link),
                ("/opt".to_string(), Kind::Dir),
            ]
        );
    }
}
