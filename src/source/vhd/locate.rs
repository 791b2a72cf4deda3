//! Finding a differencing disk's parent: only by a relative name, only inside
//! the child's own directory (shared by the VHD and VHDX readers).
//!
//! Policy (issue 3): a parent is followed only with `--allow-backing`; the
//! name must come from a *relative* locator (VHD `W2ru`, VHDX `relative_path`)
//! and, after dropping a leading `.\` or `./`, be a plain file name — no
//! directory separators, no `..`, no drive letter. Absolute locators (VHD
//! `W2ku`, VHDX `absolute_win32_path`, `volume_path`) are never opened. The
//! resolved file must canonicalise into the child's directory (so a symlink
//! cannot lead outside it).

use crate::block::BlockSource;
use crate::error::{Error, IoContext, Result};
use crate::limits;
use crate::source::{Format, OpenOptions};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Open `path` for reading; the file and its length.
pub(crate) fn open_file(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let len = file.metadata().ctx(|| "stat".into())?.len();
    Ok((file, len))
}

/// The gate in front of any parent lookup: refused without `--allow-backing`
/// (naming the parent as the image gives it, `wanted`) and past
/// [`limits::MAX_BACKING_DEPTH`]. `kind` is "VHD" or "VHDX".
pub(crate) fn parent_allowed(
    kind: &str,
    opts: &OpenOptions,
    depth: usize,
    wanted: &str,
) -> Result<()> {
    if !opts.allow_backing {
        return Err(Error::invalid(format!(
            "differencing {kind}: its parent is {wanted}; pass --allow-backing to read it \
             (only a relative parent inside the image's directory is opened)"
        )));
    }
    if depth.saturating_add(1) >= limits::MAX_BACKING_DEPTH {
        return Err(Error::invalid(format!(
            "differencing {kind}: parent chain deeper than {} images",
            limits::MAX_BACKING_DEPTH
        )));
    }
    Ok(())
}

/// Open the parent at `ppath` (resolved and its identity checked) as
/// `format`, one level deeper in the chain; errors name the parent.
pub(crate) fn open_parent_as(
    ppath: &Path,
    format: Format,
    opts: &OpenOptions,
    depth: usize,
) -> Result<Box<dyn BlockSource>> {
    let popts = OpenOptions {
        format: Some(format),
        ..opts.clone()
    };
    crate::source::open_depth(ppath, &popts, depth.saturating_add(1)).map_err(|e| e.at(ppath))
}

/// Resolve `relative` (as stored in the image, Windows separators allowed)
/// against the directory of `image`. `wanted` describes every name the image
/// gives for its parent, for error messages.
pub(crate) fn resolve(image: &Path, relative: Option<&str>, wanted: &str) -> Result<PathBuf> {
    let Some(rel) = relative else {
        return Err(Error::unsupported(format!(
            "differencing disk: the image names its parent only by absolute path ({wanted}); \
             onramp opens parents only through a relative locator inside the image's own \
             directory"
        )));
    };
    let trimmed = rel
        .strip_prefix(".\\")
        .or_else(|| rel.strip_prefix("./"))
        .unwrap_or(rel);
    let plain = !trimmed.is_empty()
        && trimmed != "."
        && trimmed != ".."
        && !trimmed.contains(['/', '\\', ':', '\0']);
    if !plain {
        return Err(Error::invalid(format!(
            "differencing disk: parent {rel:?} is not a plain file name in the image's own \
             directory; refusing to follow it (parents named: {wanted})"
        )));
    }
    let dir = image.parent().unwrap_or_else(|| Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let candidate = dir.join(trimmed);
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("resolve directory {}", dir.display()), e))?;
    let canon = candidate.canonicalize().map_err(|e| {
        Error::invalid(format!(
            "differencing disk: parent {} not found ({e}); the image asks for {wanted}",
            candidate.display()
        ))
    })?;
    if canon.parent() != Some(canon_dir.as_path()) {
        return Err(Error::invalid(format!(
            "differencing disk: parent {} resolves to {}, outside the image's directory; \
             refusing (the image asks for {wanted})",
            candidate.display(),
            canon.display()
        )));
    }
    Ok(canon)
}

/// Decode UTF-16 code units, stopping at the first NUL; lossy.
pub(crate) fn utf16_lossy(units: impl Iterator<Item = u16>) -> String {
    let v: Vec<u16> = units.take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&v)
}

/// Decode UTF-16LE bytes (stopping at NUL).
pub(crate) fn utf16le(b: &[u8]) -> String {
    utf16_lossy(b.chunks_exact(2).map(|c| {
        u16::from_le_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ])
    }))
}

/// Decode UTF-16BE bytes (stopping at NUL).
pub(crate) fn utf16be(b: &[u8]) -> String {
    utf16_lossy(b.chunks_exact(2).map(|c| {
        u16::from_be_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ])
    }))
}

/// Iterate runs of equal bits of a sector bitmap over sectors `[s0, s1)`,
/// calling `f(start, end, set)` for each; `bits` holds the bitmap bytes
/// starting at byte `s0 / 8`. VHD orders the bits of a byte MSB-first
/// (`msb_first`), VHDX LSB-first.
pub(crate) fn bit_runs(
    bits: &[u8],
    s0: u64,
    s1: u64,
    msb_first: bool,
    mut f: impl FnMut(u64, u64, bool) -> Result<()>,
) -> Result<()> {
    let base = s0 & !7;
    let get = |s: u64| -> bool {
        let rel = s.saturating_sub(base);
        let byte = usize::try_from(rel / 8)
            .ok()
            .and_then(|i| bits.get(i))
            .copied()
            .unwrap_or(0);
        let shift = if msb_first {
            7u64.saturating_sub(rel % 8)
        } else {
            rel % 8
        };
        (byte >> shift) & 1 == 1
    };
    let mut s = s0;
    while s < s1 {
        let v = get(s);
        let mut e = s.saturating_add(1);
        while e < s1 && get(e) == v {
            e = e.saturating_add(1);
        }
        f(s, e, v)?;
        s = e;
    }
    Ok(())
}

/// The part of `buf` (which holds the disk from byte `offset`) for the
/// `n` bytes at disk byte `pos`: a piece the block walk of a read hands out.
pub(crate) fn piece(buf: &mut [u8], offset: u64, pos: u64, n: u64) -> Result<&mut [u8]> {
    let a = usize::try_from(pos.saturating_sub(offset)).unwrap_or(0);
    let b = a.saturating_add(usize::try_from(n).unwrap_or(0));
    buf.get_mut(a..b).ok_or_else(|| Error::invalid("bad piece"))
}

/// Read `buf` at `offset` of an optional parent (VHD, VHDX and VMDK chains):
/// zeros where there is no parent or beyond the parent's size.
pub(crate) fn read_parent(
    parent: Option<&dyn crate::block::BlockSource>,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    let psize = parent.map_or(0, |p| p.size());
    let avail = usize::try_from(psize.saturating_sub(offset)).unwrap_or(usize::MAX);
    let n = avail.min(buf.len());
    let (head, tail) = buf.split_at_mut(n);
    if let Some(p) = parent {
        if !head.is_empty() {
            p.read_at(offset, head)?;
        }
    }
    tail.fill(0);
    Ok(())
}

/// Append the map of `[offset, offset+len)` of an optional parent to `m`:
/// Zero where there is no parent or beyond its size.
pub(crate) fn map_parent(
    parent: Option<&dyn crate::block::BlockSource>,
    offset: u64,
    len: u64,
    m: &mut crate::block::MapBuilder,
) -> Result<()> {
    use crate::block::ExtentKind;
    let psize = parent.map_or(0, |p| p.size());
    let inside = psize.saturating_sub(offset).min(len);
    if let Some(p) = parent {
        if inside > 0 {
            for e in p.map(offset, inside)? {
                m.push(e.offset, e.len, e.kind);
            }
        }
    }
    m.push(
        offset.saturating_add(inside),
        len.saturating_sub(inside),
        ExtentKind::Zero,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_plain_names() {
        let d = std::env::temp_dir();
        let img = d.join("child.vhd");
        for bad in [
            "..\\x.vhd",
            "../x.vhd",
            "C:\\x.vhd",
            "sub\\x.vhd",
            "/etc/passwd",
            "..",
        ] {
            assert!(resolve(&img, Some(bad), "x").is_err(), "{bad}");
        }
        assert!(resolve(&img, None, "C:\\p.vhd").is_err());
    }
}
