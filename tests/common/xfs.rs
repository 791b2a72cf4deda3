//! xfs_db helpers shared by the XFS reader and writer tests: listings,
//! inode fields, block maps and address conversions as xfsprogs print them.
#![allow(dead_code)]

use super::{run, s};
use std::collections::BTreeMap;
use std::path::Path;

pub fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut a: Vec<String> = vec!["-r".into(), s(img).into()];
    for c in cmds {
        a.push("-c".into());
        a.push((*c).into());
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    run("xfs_db", &a)
}

/// `print FIELD` value of the inode at `path`, as xfs_db prints it.
pub fn db_field(img: &Path, path: &str, field: &str) -> String {
    let out = xfs_db(img, &[&format!("path {path}"), &format!("print {field}")]);
    out.split_once(" = ")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("xfs_db print {field} for {path}: {out}"))
}

pub fn db_ino(img: &Path, path: &str) -> u64 {
    let out = xfs_db(img, &[&format!("path {path}"), "inode"]);
    // "current inode number is 131"
    out.split_whitespace().last().unwrap().parse().unwrap()
}

/// Byte offset of an xfs_db `convert` result (`convert inode N byte` etc.).
pub fn db_byte(img: &Path, kind: &str, n: u64) -> u64 {
    let out = xfs_db(img, &[&format!("convert {kind} {n} byte")]);
    // "0x10600 (67072)"
    let v = out
        .split('(')
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches(')');
    v.parse().unwrap()
}

/// (file offset, fsblock, count, flag) of every data fork extent of `path`.
pub fn db_bmap(img: &Path, path: &str) -> Vec<(u64, u64, u64, u64)> {
    xfs_db(img, &[&format!("path {path}"), "bmap"])
        .lines()
        .filter(|l| l.starts_with("data offset"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[2].parse().unwrap(),
                w[4].parse().unwrap(),
                w[7].parse().unwrap(),
                w[9].parse().unwrap(),
            )
        })
        .collect()
}

/// `xfs_db ls` of a directory: (name, inode) without "." and "..".
pub fn db_ls(img: &Path, path: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = xfs_db(img, &[&format!("ls {path}")])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 6).then(|| (w[5].to_string(), w[1].parse().unwrap()))
        })
        .filter(|(n, _)| n != "." && n != "..")
        .collect();
    v.sort();
    v
}

pub fn read_bytes(img: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(img).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, at).unwrap();
    v
}

/// A numeric field of the primary superblock (`xfs_db -c "sb 0" -c "print FIELD"`).
pub fn sb_value(img: &Path, field: &str) -> usize {
    xfs_db(img, &["sb 0", &format!("print {field}")])
        .split(" = ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Run `f` on a copy-on-write overlay of `img` (a [`VolumeDev`] over the
/// whole image), then write `img` plus the overlay's data ranges to `out`
/// (which may be `img` itself). When `f` fails nothing is written.
pub fn with_overlay<T>(
    img: &Path,
    out: &Path,
    f: impl FnOnce(&onramp::overlay::VolumeDev) -> Result<T, String>,
) -> Result<T, String> {
    use onramp::block::{BlockSource, ExtentKind};
    use onramp::overlay::{Overlay, VolumeDev};
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    let base: Arc<dyn BlockSource> = Arc::new(onramp::source::raw::RawReader::open(img).unwrap());
    let size = base.size();
    let ov = Arc::new(Overlay::new(base, None));
    let dev = VolumeDev::range(ov.clone(), 0, size).unwrap();
    let r = f(&dev)?;
    if img != out {
        std::fs::copy(img, out).unwrap();
    }
    let file = std::fs::OpenOptions::new().write(true).open(out).unwrap();
    for e in ov.map(0, size).unwrap() {
        if e.kind != ExtentKind::Data {
            continue;
        }
        let mut o = e.offset;
        while o < e.offset + e.len {
            let n = (e.offset + e.len - o).min(1 << 20) as usize;
            let mut buf = vec![0u8; n];
            ov.read_at(o, &mut buf).unwrap();
            file.write_all_at(&buf, o).unwrap();
            o += n as u64;
        }
    }
    Ok(r)
}

/// Apply `actions` to the XFS filesystem in `img` through the library
/// (overlay + VolumeDev, as `onramp customize` does) and write the changed
/// ranges back into `img`. On error `img` is left untouched.
pub fn apply_in_place(
    img: &Path,
    actions: &[onramp::inject::FsAction],
) -> Result<Vec<String>, String> {
    with_overlay(img, img, |dev| {
        onramp::fs::write::apply(dev, "xfs", actions).map_err(|e| e.to_string())
    })
}

/// `xfs_repair -n` exits 0 and reports nothing it would fix or recount
/// (`-o force_geometry` for single-AG filesystems, which it cannot otherwise
/// cross-check).
pub fn repair_clean(img: &Path) {
    let mut args = vec!["-n"];
    if sb_value(img, "agcount") == 1 {
        args.extend(["-o", "force_geometry"]);
    }
    args.push(s(img));
    let o = super::run_output("xfs_repair", &args);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let bad = out
        .lines()
        .any(|l| l.to_lowercase().contains("would") || l.contains("counted") || l.contains("bad "));
    assert!(
        o.status.success() && !bad,
        "xfs_repair -n {}:\n{out}",
        img.display()
    );
}

/// A numeric field of AG `agno`'s AGF or AGI (`xfs_db -c "agf 0" -c "print bnolevel"`).
pub fn ag_value(img: &Path, hdr: &str, agno: u32, field: &str) -> u64 {
    let out = xfs_db(img, &[&format!("{hdr} {agno}"), &format!("print {field}")]);
    out.split(" = ")
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("xfs_db {hdr} {agno} print {field}: {out}"))
}

/// File bytes through xfs_db's block map and raw reads.
pub fn db_cat(img: &Path, path: &str) -> Vec<u8> {
    let size: usize = db_field(img, path, "core.size").parse().unwrap();
    let bs: u64 = sb_value(img, "blocksize") as u64;
    let mut out = vec![0u8; size];
    for (off, fsb, n, _) in db_bmap(img, path) {
        let at = db_byte(img, "fsblock", fsb);
        let from = (off * bs) as usize;
        let to = ((off + n) * bs).min(size as u64) as usize;
        if from < to {
            out[from..to].copy_from_slice(&read_bytes(img, at, to - from));
        }
    }
    out
}

/// Numeric fields of AG `agno`'s AGI (`xfs_db -c "agi N" -c "print F..."`).
pub fn agi_values(img: &Path, agno: u32, fields: &[&str]) -> Vec<u64> {
    let out = xfs_db(
        img,
        &[
            &format!("agi {agno}"),
            &format!("print {}", fields.join(" ")),
        ],
    );
    fields
        .iter()
        .map(|f| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{f} = ")))
                .unwrap_or_else(|| panic!("agi {agno} {f}: {out}"))
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("agi {agno} {f}: {out}"))
        })
        .collect()
}

/// A sparse `size_mib` image made by `mkfs.xfs -p` from `proto` (the lines
/// of the root directory after "d--755 0 0"), with extra mkfs `args`.
/// Sizes under the 300 MiB minimum use the fstests override.
pub fn mkfs_proto(
    dir: &Path,
    name: &str,
    proto: &str,
    args: &[&str],
    size_mib: u64,
) -> std::path::PathBuf {
    let text = format!("/dummy\n0 0\nd--755 0 0\n{proto}$\n");
    mkfs_protofile(dir, name, &text, args, size_mib)
}

/// A sparse `size_mib` image made by `mkfs.xfs -p` from the whole protofile
/// `text`, with extra mkfs `args`; `xfs_repair -n` clean.
pub fn mkfs_protofile(
    dir: &Path,
    name: &str,
    text: &str,
    args: &[&str],
    size_mib: u64,
) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.proto"));
    std::fs::write(&p, text).unwrap();
    let img = dir.join(format!("{name}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(size_mib << 20)
        .unwrap();
    let mut a: Vec<&str> = vec!["-q", "-f", "-p", s(&p)];
    a.extend_from_slice(args);
    a.push(s(&img));
    let mut cmd = std::process::Command::new("mkfs.xfs");
    cmd.args(&a);
    if size_mib < 300 {
        cmd.env("TEST_DIR", "1")
            .env("TEST_DEV", "1")
            .env("QA_CHECK_FS", "1");
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    repair_clean(&img);
    img
}

/// Apply `actions` through the library (overlay + VolumeDev) to a copy of `img`.
pub fn apply_to_copy(
    img: &Path,
    out: &Path,
    actions: &[onramp::inject::FsAction],
) -> Result<Vec<String>, String> {
    with_overlay(img, out, |dev| {
        onramp::fs::write::apply(dev, "xfs", actions).map_err(|e| e.to_string())
    })
}

/// `key = value` pairs of xfs_db output, in order.
pub fn fields(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// An xfs_db string: quoted, non-printable bytes as `\ooo` octal escapes.
pub fn unquote(v: &str) -> Vec<u8> {
    let b = v.trim().trim_matches('"').as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |a, c| a * 8 + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

pub fn prefix(root: &str, secure: &str) -> &'static str {
    match (root, secure) {
        ("1", _) => "trusted.",
        (_, "1") => "security.",
        _ => "user.",
    }
}

/// Every attribute of `path` as xfs_db reads it (short form, or the leaf
/// block's entries with local values and remote values from their blocks).
pub fn db_attrs(img: &Path, path: &str) -> BTreeMap<String, Vec<u8>> {
    let ino = db_ino(img, path);
    let inode = format!("inode {ino}");
    let mut out = BTreeMap::new();
    let aformat = db_field(img, path, "core.aformat");
    let forkoff = db_field(img, path, "core.forkoff");
    if forkoff == "0" {
        return out;
    }
    if aformat.starts_with("1 ") {
        let f = fields(&xfs_db(img, &[&inode, "p a.sfattr"]));
        let get = |i: usize, k: &str| {
            f.iter()
                .find(|(n, _)| *n == format!("a.sfattr.list[{i}].{k}"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let count: usize = f
            .iter()
            .find(|(k, _)| k == "a.sfattr.hdr.count")
            .unwrap()
            .1
            .parse()
            .unwrap();
        for i in 0..count {
            let name = String::from_utf8(unquote(&get(i, "name"))).unwrap();
            let pre = prefix(&get(i, "root"), &get(i, "secure"));
            out.insert(format!("{pre}{name}"), unquote(&get(i, "value")));
        }
        return out;
    }
    assert!(aformat.starts_with("2 "), "{path}: attr format {aformat}");
    let leaf = xfs_db(img, &[&inode, "ablock 0", "p"]);
    let f = fields(&leaf);
    assert!(
        f.iter()
            .any(|(k, v)| k == "hdr.info.crc" && v.contains("(correct)")),
        "{leaf}"
    );
    // entries[...] = [hashval,nameidx,incomplete,root,secure,local] lines follow.
    let entries: Vec<Vec<String>> = leaf
        .lines()
        .skip_while(|l| !l.starts_with("entries["))
        .skip(1)
        .take_while(|l| l.contains(":["))
        .map(|l| {
            l.split_once(":[")
                .unwrap()
                .1
                .trim_end()
                .trim_end_matches(']')
                .split(',')
                .map(str::to_string)
                .collect()
        })
        .collect();
    let bs = sb_value(img, "blocksize");
    let mut prev_hash = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let hash = u64::from_str_radix(e[0].trim_start_matches("0x"), 16).unwrap();
        assert!(hash >= prev_hash, "{path}: leaf entries not in hash order");
        prev_hash = hash;
        let get = |k: &str| {
            f.iter()
                .find(|(n, _)| *n == format!("nvlist[{i}].{k}"))
                .map(|(_, v)| v.clone())
        };
        let name = String::from_utf8(unquote(&get("name").unwrap())).unwrap();
        let full = format!("{}{name}", prefix(&e[3], &e[4]));
        let value = if e[5] == "1" {
            // xfs_db prints no value line for an empty value.
            match get("value") {
                Some(v) => unquote(&v),
                None if get("valuelen").as_deref() == Some("0") => Vec::new(),
                None => panic!("{i}: {leaf}"),
            }
        } else {
            let blk =
                u64::from_str_radix(get("valueblk").unwrap().trim_start_matches("0x"), 16).unwrap();
            let len: usize = get("valuelen").unwrap().parse().unwrap();
            let nblk = len.div_ceil(bs - 56) as u64;
            let mut cmds = vec![inode.clone()];
            for b in blk..blk + nblk {
                cmds.push(format!("ablock {b}"));
                cmds.push("p".into());
            }
            let c: Vec<&str> = cmds.iter().map(String::as_str).collect();
            let rf = fields(&xfs_db(img, &c));
            let mut v = Vec::new();
            for (k, x) in &rf {
                match k.as_str() {
                    "hdr.magic" => assert_eq!(x, "0x5841524d"),
                    "hdr.crc" => assert!(x.contains("(correct)"), "{full}: remote crc {x}"),
                    "hdr.offset" => assert_eq!(x.parse::<usize>().unwrap(), v.len()),
                    "hdr.owner" => assert_eq!(x.parse::<u64>().unwrap(), ino),
                    "data" => v.extend_from_slice(&unquote(x)),
                    _ => {}
                }
            }
            v.truncate(len);
            assert_eq!(v.len(), len, "{full}: remote value length");
            v
        };
        out.insert(full, value);
    }
    out
}
