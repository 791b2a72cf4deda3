//! The block layer: what every later stage sees of a disk.
//!
//! A [`BlockSource`] is a virtual disk of fixed size with positional reads
//! through `&self` (callable from several threads at once, no shared cursor)
//! and an allocation map: ordered, non-overlapping [`Extent`]s covering a
//! range exactly, each [`ExtentKind::Data`] or [`ExtentKind::Zero`]. Writers,
//! hashing and upload consume the map instead of scanning bytes.

pub mod conformance;
pub mod slice;

use crate::error::{Error, Result};

/// Whether a range of the virtual disk holds data or reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Allocated: must be read (it may still happen to hold zeros).
    Data,
    /// Unallocated or explicitly zero: reads as zeros without I/O.
    Zero,
}

/// A range of the virtual disk and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    /// First byte of the range in the virtual disk.
    pub offset: u64,
    /// Length in bytes (never 0 in a map).
    pub len: u64,
    /// Data or Zero.
    pub kind: ExtentKind,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// A virtual disk: positional reads and an allocation map.
pub trait BlockSource: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// Fill `buf` with the bytes at `offset`. Fails if the range runs past [`size`](Self::size).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The allocation map of `[offset, offset + len)`: ordered, non-overlapping,
    /// merged extents covering the range exactly. The default says "all data".
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size(), offset, len)?;
        Ok(if len == 0 {
            Vec::new()
        } else {
            vec![Extent {
                offset,
                len,
                kind: ExtentKind::Data,
            }]
        })
    }

    /// Short format name ("raw", "qcow2", "vhd", ...).
    fn format_name(&self) -> &'static str;

    /// Format-specific facts for `onramp info`, as an ordered JSON object.
    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

impl<T: BlockSource + ?Sized> BlockSource for Box<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(offset, buf)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        (**self).map(offset, len)
    }
    fn format_name(&self) -> &'static str {
        (**self).format_name()
    }
    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        (**self).details()
    }
}

/// Check that `[offset, offset+len)` lies inside a disk of `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!(
            "read of {len} bytes at offset {offset} runs past the end of the {size}-byte disk"
        ))),
    }
}

/// Appends extents to a map, merging neighbours of the same kind.
///
/// Readers build maps with it so that every map is merged and contiguous.
#[derive(Debug, Default)]
pub struct MapBuilder {
    extents: Vec<Extent>,
}

impl MapBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append `[offset, offset+len)` of `kind`; it must start where the last one ended.
    pub fn push(&mut self, offset: u64, len: u64, kind: ExtentKind) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.extents.last_mut() {
            debug_assert_eq!(last.end(), offset, "map extents must be contiguous");
            if last.kind == kind && last.end() == offset {
                last.len = last.len.saturating_add(len);
                return;
            }
        }
        self.extents.push(Extent { offset, len, kind });
    }

    /// The merged map.
    pub fn finish(self) -> Vec<Extent> {
        self.extents
    }
}

/// Total bytes of Data extents in the whole map of `src`.
pub fn allocated_bytes(src: &dyn BlockSource) -> Result<u64> {
    let mut total = 0u64;
    for_each_window(src, |ext| {
        if ext.kind == ExtentKind::Data {
            total = total.saturating_add(ext.len);
        }
        Ok(())
    })?;
    Ok(total)
}

/// Size of the windows in which whole-disk walks ask for the map, so that a
/// fragmented multi-TiB disk never needs its whole map in memory: 1 GiB.
pub const MAP_WINDOW: u64 = 1 << 30;

/// Call `f` with every extent of the whole disk, window by window, merging
/// extents that continue across window boundaries.
pub fn for_each_window(
    src: &dyn BlockSource,
    mut f: impl FnMut(Extent) -> Result<()>,
) -> Result<()> {
    let size = src.size();
    let mut pending: Option<Extent> = None;
    let mut off = 0u64;
    while off < size {
        let len = MAP_WINDOW.min(size - off);
        for ext in src.map(off, len)? {
            match pending.as_mut() {
                Some(p) if p.kind == ext.kind && p.end() == ext.offset => {
                    p.len = p.len.saturating_add(ext.len);
                }
                _ => {
                    if let Some(p) = pending.take() {
                        f(p)?;
                    }
                    pending = Some(ext);
                }
            }
        }
        off += len;
    }
    if let Some(p) = pending {
        f(p)?;
    }
    Ok(())
}

/// The whole allocation map (for tests and `info`; whole-disk work should use
/// [`for_each_window`]).
pub fn full_map(src: &dyn BlockSource) -> Result<Vec<Extent>> {
    let mut v = Vec::new();
    for_each_window(src, |e| {
        v.push(e);
        Ok(())
    })?;
    Ok(v)
}

/// True when every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    let (head, body) = buf.split_at(buf.len() - buf.len() % 16);
    body.iter().all(|&b| b == 0)
        && head
            .chunks_exact(16)
            .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_finds_any_nonzero_byte() {
        let mut b = vec![0u8; 1000];
        assert!(is_zero(&b));
        for i in [0, 15, 16, 500, 991, 999] {
            b[i] = 1;
            assert!(!is_zero(&b), "byte {i}");
            b[i] = 0;
        }
    }

    #[test]
    fn map_builder_merges() {
        let mut m = MapBuilder::new();
        m.push(0, 10, ExtentKind::Data);
        m.push(10, 5, ExtentKind::Data);
        m.push(15, 5, ExtentKind::Zero);
        m.push(20, 0, ExtentKind::Data);
        m.push(20, 1, ExtentKind::Data);
        assert_eq!(m.finish().len(), 3);
    }
}
