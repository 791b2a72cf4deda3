//! qcow2 images (placeholder until the qcow2 reader lands).

use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::source::OpenOptions;
use std::path::Path;

/// A qcow2 image.
pub struct Qcow2Reader;

impl Qcow2Reader {
    /// Open `path`.
    pub fn open(_path: &Path, _opts: &OpenOptions, _depth: usize) -> Result<Box<dyn BlockSource>> {
        Err(Error::unsupported("qcow2 reader not built yet"))
    }
}
