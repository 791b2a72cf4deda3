//! Which writer edits which filesystem.
//!
//! Injection plans [`FsAction`]s through the read-only [`FileSystem`](super::FileSystem)
//! seam; [`apply`] hands them to the writer for the filesystem's kind, on a
//! [`VolumeDev`] (a partition or linear logical volume inside the overlay).

use crate::error::{Error, ErrorKind, Result};
use crate::inject::FsAction;
use crate::overlay::VolumeDev;

/// Filesystem kinds (as [`FileSystem::kind`](super::FileSystem::kind) names them)
/// that onramp can write.
pub const WRITABLE: &[&str] = &["ext2", "ext3", "ext4", "xfs", "ntfs"];

/// Apply `actions` to the filesystem of kind `kind` on `dev`; returns a log
/// line per change.
pub fn apply(dev: &VolumeDev, kind: &str, actions: &[FsAction]) -> Result<Vec<String>> {
    match kind {
        "ext2" | "ext3" | "ext4" => super::ext4::write::apply(dev, actions),
        "ntfs" => super::ntfs::write::apply(dev, actions),
        "xfs" => super::xfs::write::apply(dev, actions),
        other => Err(Error::unsupported(format!(
            "writing to {other} filesystems is not supported (onramp writes {})",
            WRITABLE.join(", ")
        ))),
    }
}

/// (parent directory, final name) of an absolute guest path, for writers
/// creating or removing an entry; the root directory has neither.
pub fn split_parent(path: &str) -> Result<(String, String)> {
    let t = path.trim_end_matches('/');
    match t.rsplit_once('/') {
        Some((p, n)) if !n.is_empty() => {
            Ok((if p.is_empty() { "/".into() } else { p.into() }, n.into()))
        }
        _ => Err(Error::invalid(format!(
            "{path:?}: cannot create or remove the root directory"
        ))),
    }
}

/// A filesystem writer opened on one volume: applies actions one by one,
/// then writes its summary structures (free counts, bitmaps) once.
pub trait FsWriter {
    /// Apply one action, appending a log line per change.
    fn apply_one(&mut self, action: &FsAction, log: &mut Vec<String>) -> Result<()>;
    /// Write what is kept in memory until the end. Call once.
    fn finish(self) -> Result<()>;
}

/// Apply `actions` with `writer` in order; a failing action is named in the
/// error (corruption errors already name their structure and stay as they are).
pub fn run<W: FsWriter>(mut writer: W, actions: &[FsAction]) -> Result<Vec<String>> {
    let mut log = Vec::new();
    for a in actions {
        writer.apply_one(a, &mut log).map_err(|e| {
            if e.kind() == ErrorKind::Corrupt {
                e
            } else {
                Error::new(e.kind(), format!("{}: {e}", a.describe()))
            }
        })?;
    }
    writer.finish()?;
    Ok(log)
}
