//! The resume journal: `<image>.onramp-upload.json`, the ranges an upload has
//! committed to one blob. It is keyed by the blob URL (without secrets), the
//! image size, mtime and a sha256 prefix, so a journal never applies to a
//! different image or blob; it is written atomically (temp file, fsync, rename).

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a journal belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalKey {
    /// Blob URL without query.
    pub url: String,
    /// Image size in bytes.
    pub size: u64,
    /// Image mtime, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// First 16 hex digits of the image's sha256.
    pub sha256_prefix: String,
}

/// The journal file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// Format version (1).
    pub version: u32,
    /// What it belongs to.
    pub key: JournalKey,
    /// This upload created the blob (zero-skipping may be trusted).
    pub created: bool,
    /// Committed ranges `(offset, len)`, sorted and merged.
    pub committed: Vec<(u64, u64)>,
}

/// Where the journal of `image` lives.
pub fn path_for(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".onramp-upload.json");
    image.with_file_name(name)
}

/// Load the journal at `path` if it exists, parses and matches `key`.
pub fn load(path: &Path, key: &JournalKey) -> Option<Journal> {
    let bytes = std::fs::read(path).ok()?;
    let j: Journal = serde_json::from_slice(&bytes).ok()?;
    (j.version == 1 && &j.key == key).then_some(j)
}

/// Write `j` to `path` atomically and durably.
pub fn save(path: &Path, j: &Journal) -> Result<()> {
    let body = serde_json::to_vec(j).map_err(|e| Error::invalid(format!("journal: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".onramp-upload-")
        .tempfile_in(dir)
        .ctx(|| format!("create journal in {}", dir.display()))?;
    tmp.write_all(&body)
        .and_then(|_| tmp.as_file().sync_all())
        .ctx(|| "write journal".into())?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("rename journal to {}", path.display()), e.error))?;
    Ok(())
}
