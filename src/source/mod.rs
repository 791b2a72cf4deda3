//! Detect and open input images. Every reader here is a [`BlockSource`].
//!
//! Detection is by magic only ([`detect`]): exactly one format matches, or the
//! user is told it is ambiguous; raw only when nothing else matches; formats we
//! know but do not read are named and refused. `--from` always wins.
//!
//! Code in this module reads untrusted bytes: arithmetic on disk values is
//! checked, `as` casts and `unwrap` are linted against.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod compressed;
pub mod detect;
pub mod qcow2;
pub mod raw;
pub mod vhd;

use crate::block::BlockSource;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub use detect::{detect, Format};

/// How an input may be opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The format named by `--from`; `None` means detect by magic.
    pub format: Option<Format>,
    /// Follow backing files / parents (only inside the image's own directory).
    pub allow_backing: bool,
    /// Directory for temporary files (decompressed inputs); defaults to the
    /// output's directory, else the system temp directory.
    pub temp_dir: Option<PathBuf>,
}

/// Open `path` as a virtual disk.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn BlockSource>> {
    open_depth(path, opts, 0).map_err(|e| e.at(path))
}

/// Open with a backing-chain depth counter (readers that follow parents call
/// this with `depth + 1`).
pub(crate) fn open_depth(
    path: &Path,
    opts: &OpenOptions,
    depth: usize,
) -> Result<Box<dyn BlockSource>> {
    let format = match opts.format {
        Some(f) => f,
        None => detect(path)?,
    };
    match format {
        Format::Raw => Ok(Box::new(raw::RawReader::open(path)?)),
        Format::Qcow2 => qcow2::Qcow2Reader::open(path, opts, depth),
        Format::Vhd => Ok(Box::new(vhd::VhdReader::open(path)?)),
        Format::Gzip | Format::Xz | Format::Zstd => compressed::open(path, format, opts, depth),
        other => Err(Error::unsupported(format!(
            "reading {} images is not implemented in this build",
            other.name()
        ))),
    }
}
