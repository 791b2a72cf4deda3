//! xfs_db helpers shared by the XFS reader and writer tests: listings,
//! inode fields, block maps and address conversions as xfsprogs print them.
#![allow(dead_code)]

use super::{run, run_output, s};
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
/// (which may be `img` itself).
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

/// `xfs_repair -n` must exit 0; returns its output.
pub fn repair_ok(img: &Path) -> String {
    let o = run_output("xfs_repair", &["-n", s(img)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "xfs_repair -n {}:\n{text}",
        img.display()
    );
    text
}

/// [`repair_ok`], and no line saying what repair would change.
pub fn repair_clean(img: &Path) {
    let text = repair_ok(img);
    assert!(
        !text.lines().any(|l| l.contains("would")),
        "xfs_repair -n {} reports problems:\n{text}",
        img.display()
    );
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

/// Apply `actions` through the library (overlay + VolumeDev), then write the
/// overlay's data ranges into a sparse copy of `img`.
pub fn apply_to_copy(
    img: &Path,
    out: &Path,
    actions: &[onramp::inject::FsAction],
) -> Result<Vec<String>, String> {
    with_overlay(img, out, |dev| {
        onramp::fs::write::apply(dev, "xfs", actions).map_err(|e| e.to_string())
    })
}
