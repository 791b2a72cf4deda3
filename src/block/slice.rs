//! A window of another [`BlockSource`]: a partition, a logical volume, a tar
//! member. Reads and maps are translated by the window's start.

use super::{check_range, BlockSource, Extent};
use crate::error::{Error, Result};
use std::sync::Arc;

/// `len` bytes of `inner` starting at `start`.
#[derive(Clone)]
pub struct Slice {
    inner: Arc<dyn BlockSource>,
    start: u64,
    len: u64,
}

impl Slice {
    /// A window; fails if it does not lie inside `inner`.
    pub fn new(inner: Arc<dyn BlockSource>, start: u64, len: u64) -> Result<Self> {
        match start.checked_add(len) {
            Some(end) if end <= inner.size() => Ok(Slice { inner, start, len }),
            _ => Err(Error::corrupt_msg(format!(
                "region of {len} bytes at byte {start} runs past the end of the {}-byte disk",
                inner.size()
            ))),
        }
    }

    /// Where the window starts in the inner disk.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slice({}+{})", self.start, self.len)
    }
}

impl BlockSource for Slice {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(
            self.len,
            offset,
            u64::try_from(buf.len()).unwrap_or(u64::MAX),
        )?;
        self.inner.read_at(self.start + offset, buf)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.len, offset, len)?;
        let mut v = self.inner.map(self.start + offset, len)?;
        for e in &mut v {
            e.offset -= self.start;
        }
        Ok(v)
    }
    fn format_name(&self) -> &'static str {
        "slice"
    }
}
