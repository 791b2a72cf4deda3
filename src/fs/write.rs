//! Which writer edits which filesystem.
//!
//! Injection plans [`FsAction`]s through the read-only [`FileSystem`](super::FileSystem)
//! seam; [`apply`] hands them to the writer for the filesystem's kind, on a
//! [`VolumeDev`] (a partition or linear logical volume inside the overlay).

use crate::error::{Error, Result};
use crate::inject::FsAction;
use crate::overlay::VolumeDev;

/// Filesystem kinds (as [`FileSystem::kind`](super::FileSystem::kind) names them)
/// that onramp can write.
pub const WRITABLE: &[&str] = &["ext2", "ext3", "ext4", "ntfs"];

/// Apply `actions` to the filesystem of kind `kind` on `dev`; returns a log
/// line per change.
pub fn apply(dev: &VolumeDev, kind: &str, actions: &[FsAction]) -> Result<Vec<String>> {
    match kind {
        "ext2" | "ext3" | "ext4" => super::ext4::write::apply(dev, actions),
        "ntfs" => super::ntfs::write::apply(dev, actions),
        other => Err(Error::unsupported(format!(
            "writing to {other} filesystems is not supported (onramp writes {})",
            WRITABLE.join(", ")
        ))),
    }
}
