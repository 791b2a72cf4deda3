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

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

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

/// Read `buf` at `offset` of an optional parent: zeros where there is no
/// parent or beyond the parent's size.
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
