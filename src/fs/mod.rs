//! Filesystems inside guest disks, read through a [`BlockSource`] (usually a
//! partition [`Slice`](crate::block::slice::Slice)).
//!
//! Every filesystem reader implements [`FileSystem`]; guest inspection and
//! injection only use this trait. Paths are guest paths: absolute, `/`-separated,
//! resolved inside the filesystem (see [`resolve`]): `..` stops at the root,
//! absolute symlinks are re-rooted, and symlink chains are bounded.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use crate::error::{Error, Result};

/// Kind of a directory entry / inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// What `stat` says about a file (without following a final symlink).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    /// Kind.
    pub file_type: FileType,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits and type bits as stored (POSIX filesystems), or 0.
    pub mode: u32,
    /// Owner uid (0 where the filesystem has none).
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Inode / MFT record number, where meaningful.
    pub ino: u64,
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DirEntry {
    /// Name (no `/`).
    pub name: String,
    /// Kind, as the directory says (may be `Other` if unknown).
    pub file_type: FileType,
    /// Inode / record number.
    pub ino: u64,
}

/// Read access to one filesystem. Paths are absolute guest paths already
/// resolved by [`resolve`] (no symlinks in the middle, no `.`/`..`).
pub trait FileSystem: Send + Sync {
    /// "ext4", "xfs", "vfat", "ntfs", ...
    fn kind(&self) -> &'static str;
    /// Filesystem UUID as usually printed (blkid style), if any.
    fn uuid(&self) -> Option<String> {
        None
    }
    /// Volume label, if any.
    fn label(&self) -> Option<String> {
        None
    }
    /// Metadata of `path` without following a final symlink; `Ok(None)` if absent.
    fn stat(&self, path: &str) -> Result<Option<Metadata>>;
    /// Entries of the directory at `path` (without `.` and `..`).
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>>;
    /// Contents of the regular file at `path`; fails if larger than `limit` bytes.
    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>>;
    /// Target of the symlink at `path`.
    fn read_link(&self, path: &str) -> Result<String>;
}

/// Most symlinks followed while resolving one path (Linux's MAXSYMLINKS is 40).
pub const MAX_SYMLINK_FOLLOWS: usize = 40;

/// Resolve `path` inside the guest: `.` and `..` are handled lexically with
/// `..` stopping at the root; symlinks in the middle (and at the end when
/// `follow_final`) are followed, absolute targets re-rooted at the guest root.
/// Returns the canonical guest path (which may not exist when only the last
/// component is missing).
pub fn resolve(fs: &dyn FileSystem, path: &str, follow_final: bool) -> Result<String> {
    let mut follows = 0usize;
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = components(path).into_iter().rev().collect();
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        let is_last = todo.is_empty();
        if is_last && !follow_final {
            break;
        }
        let cur = join(&done);
        match fs.stat(&cur)? {
            Some(m) if m.file_type == FileType::Symlink => {
                follows = follows.saturating_add(1);
                if follows > MAX_SYMLINK_FOLLOWS {
                    return Err(Error::corrupt_msg(format!(
                        "too many levels of symbolic links resolving {path} (more than {MAX_SYMLINK_FOLLOWS})"
                    )));
                }
                let target = fs.read_link(&cur)?;
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for t in components(&target).into_iter().rev() {
                    todo.push(t);
                }
            }
            Some(_) => {}
            None => {
                if !is_last {
                    // A missing directory in the middle: the rest cannot exist.
                    for t in todo.drain(..).rev() {
                        done.push(t);
                    }
                }
                break;
            }
        }
    }
    Ok(join(&done))
}

fn components(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn join(c: &[String]) -> String {
    if c.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for x in c {
            s.push('/');
            s.push_str(x);
        }
        s
    }
}

/// Read a file by guest path, following symlinks inside the guest.
pub fn read_guest_file(fs: &dyn FileSystem, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let p = resolve(fs, path, true)?;
    match fs.stat(&p)? {
        Some(m) if m.file_type == FileType::File => fs.read_file(&p, limit).map(Some),
        _ => Ok(None),
    }
}

pub mod ext4;
pub mod fat;
pub mod ntfs;
pub mod regf;
pub mod sqlite;
pub mod write;
pub mod xfs;

use crate::block::BlockSource;
use std::sync::Arc;

/// A filesystem probe: `Ok(None)` when its magic is absent, `Err` when the
/// magic is there but the structures are damaged or unsupported.
pub type ProbeFn = fn(Arc<dyn BlockSource>) -> Result<Option<Box<dyn FileSystem>>>;

/// Every filesystem reader, tried in order by [`probe`]. Readers add one line each.
pub const PROBES: &[(&str, ProbeFn)] = &[
    ("ext", |s| Ok(boxed(ext4::Ext4::probe(s)?))),
    ("vfat", |s| Ok(boxed(fat::Fat::probe(s)?))),
    ("xfs", xfs::probe),
    ("ntfs", ntfs::probe),
];

/// Box a concrete filesystem for [`PROBES`].
pub fn boxed<F: FileSystem + 'static>(f: Option<F>) -> Option<Box<dyn FileSystem>> {
    f.map(|f| {
        let b: Box<dyn FileSystem> = Box::new(f);
        b
    })
}

/// Recognise the filesystem on `src` (a partition or logical volume).
/// `Ok(None)` when no reader recognises it (swap, empty, unknown).
pub fn probe(src: Arc<dyn BlockSource>) -> Result<Option<Box<dyn FileSystem>>> {
    for (_, p) in PROBES {
        if let Some(fs) = p(src.clone())? {
            return Ok(Some(fs));
        }
    }
    Ok(None)
}
