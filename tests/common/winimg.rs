//! hivex oracle helpers for the Windows test files (hivexget / hivexsh output
//! parsing) and an NTFS image holding a list of files, built with the
//! fixtures of [`super::windows`].

use super::windows::{mkntfs, with_ntfs_mounted};
use super::{require, run, s};
use onramp::fs::regf::types;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Parse one line of `hivexget HIVE KEY` (.reg style) into (name, type, data).
pub fn parse_reg_line(line: &str) -> Option<(String, u32, Vec<u8>)> {
    let (name, rest) = if let Some(r) = line.strip_prefix("@=") {
        (String::new(), r)
    } else {
        let l = line.strip_prefix('"')?;
        // Name ends at the first unescaped quote followed by '='.
        let mut name = String::new();
        let mut it = l.char_indices();
        let mut end = None;
        while let Some((i, ch)) = it.next() {
            match ch {
                '\\' => {
                    if let Some((_, n)) = it.next() {
                        name.push(n);
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => name.push(c),
            }
        }
        // hivexget prints the default value's name as "@".
        (
            if name == "@" { String::new() } else { name },
            l.get(end? + 2..)?,
        )
    };
    let unq = |s: &str| -> String {
        let s = s
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(s);
        s.replace("\\\"", "\"").replace("\\\\", "\\")
    };
    let utf16z = |s: &str| -> Vec<u8> {
        let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        v.extend([0, 0]);
        v
    };
    if let Some(h) = rest.strip_prefix("dword:") {
        let v = u32::from_str_radix(h, 16).ok()?;
        return Some((name, types::REG_DWORD, v.to_le_bytes().to_vec()));
    }
    if let Some(r) = rest.strip_prefix("str(") {
        let (t, s) = r.split_once("):")?;
        return Some((name, t.parse().ok()?, utf16z(&unq(s))));
    }
    if rest.starts_with('"') {
        return Some((name, types::REG_SZ, utf16z(&unq(rest))));
    }
    let (t, hex) = if let Some(r) = rest.strip_prefix("hex(") {
        let (t, h) = r.split_once("):")?;
        (t.parse().ok()?, h)
    } else {
        (types::REG_BINARY, rest.strip_prefix("hex:")?)
    };
    let bytes = hex
        .split(',')
        .filter(|x| !x.is_empty())
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()?;
    Some((name, t, bytes))
}

pub fn hivexsh_ls(hive: &Path, path: &str) -> Vec<String> {
    let mut c = Command::new("hivexsh");
    c.arg(s(hive))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn hivexsh");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let p = if path.is_empty() {
            "\\".to_string()
        } else {
            format!("\\{path}")
        };
        writeln!(stdin, "cd {p}\nls").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn ntfs_tools() -> bool {
    require(&[
        "mkntfs", "ntfs-3g", "ntfscp", "ntfscat", "ntfsls", "python3", "umount",
    ])
}

/// Values of `path` as hivexget prints them, parsed.
pub fn hivex_values(hive: &Path, path: &str) -> Vec<(String, u32, Vec<u8>)> {
    let out = run(
        "hivexget",
        &[s(hive), if path.is_empty() { "\\" } else { path }],
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_reg_line(l).unwrap_or_else(|| panic!("unparsed hivexget line {l:?}")))
        .collect()
}

/// One value with hivexget (its printed form, trimmed; "" when absent).
pub fn hivexget(hive: &Path, key: &str, name: &str) -> String {
    let o = Command::new("hivexget")
        .args([s(hive), key, name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// An NTFS image holding `files` (path relative to the root, content); None
/// when FUSE is unavailable (see [`with_ntfs_mounted`]).
pub fn ntfs_with_files(
    dir: &Path,
    name: &str,
    size: &str,
    files: &[(&str, Vec<u8>)],
) -> Option<PathBuf> {
    let img = dir.join(name);
    mkntfs(&img, size, "WINSYS");
    with_ntfs_mounted(&img, &dir.join(format!("{name}.mnt")), |mnt| {
        for (rel, data) in files {
            let mp = mnt.join(rel);
            std::fs::create_dir_all(mp.parent().unwrap()).unwrap();
            std::fs::write(&mp, data).unwrap();
        }
    })?;
    Some(img)
}
