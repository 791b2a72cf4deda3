//! The Block Allocation Table of dynamic and differencing VHDs (spec "Block
//! Allocation Table and Data Blocks"): `max_table_entries` big-endian u32
//! sector offsets, `0xFFFFFFFF` for an unallocated block. Each allocated block
//! is a sector bitmap (one bit per 512-byte sector, most significant bit
//! first, padded to a sector boundary) followed by `block_size` data bytes.

use super::header::DynHeader;
use crate::error::{Error, Result};
use crate::limits;
use crate::source::raw::read_exact_at;
use std::fs::File;

/// BAT value of an unallocated block.
pub const UNUSED: u32 = 0xFFFF_FFFF;

/// The loaded and checked BAT.
#[derive(Debug)]
pub struct Bat {
    /// One entry per block: sector offset of the block's bitmap, or [`UNUSED`].
    pub entries: Vec<u32>,
    /// Bytes of the sector bitmap in front of each block (a whole number of sectors).
    pub bitmap_bytes: u64,
}

/// Bytes of the bitmap in front of a block of `block_size` bytes.
pub fn bitmap_bytes(block_size: u32) -> u64 {
    let sectors = u64::from(block_size / 512);
    sectors.div_ceil(8).div_ceil(512).saturating_mul(512)
}

impl Bat {
    /// Read the BAT of `hdr` from `file` and check it against the virtual size
    /// `size`, the footer's `current_size` and the data area ending at `data_end`
    /// (the trailing footer's offset).
    pub fn load(
        file: &File,
        hdr: &DynHeader,
        size: u64,
        current_size: u64,
        data_end: u64,
    ) -> Result<Bat> {
        const S: &str = "VHD dynamic disk header";
        let entries_field = hdr.offset.saturating_add(28);
        let n = u64::from(hdr.max_table_entries);
        let bytes = n.saturating_mul(4);
        if bytes > limits::MAX_TABLE_BYTES {
            return Err(Error::corrupt(
                S,
                "max_table_entries",
                entries_field,
                format!(
                    "at most {} (onramp's {} MiB table limit)",
                    limits::MAX_TABLE_BYTES / 4,
                    limits::MAX_TABLE_BYTES >> 20
                ),
                n,
            ));
        }
        let bs = u64::from(hdr.block_size);
        // qemu (vpc.c): "Page table too small" when the BAT cannot cover the disk.
        if n.saturating_mul(bs) < size {
            return Err(Error::corrupt(
                S,
                "max_table_entries",
                entries_field,
                format!(
                    "at least {} to cover the {size}-byte disk",
                    size.div_ceil(bs)
                ),
                n,
            ));
        }
        // More entries than either size the footer describes needs is not a
        // disk any creator writes; refusing it bounds the BAT by the disk.
        let needed = size.max(current_size).div_ceil(bs);
        if n > needed {
            return Err(Error::corrupt(
                S,
                "max_table_entries",
                entries_field,
                format!(
                    "at most {needed} for a {}-byte disk",
                    size.max(current_size)
                ),
                n,
            ));
        }
        let end = hdr.table_offset.checked_add(bytes);
        if end.is_none_or(|e| e > data_end) {
            return Err(Error::corrupt(
                S,
                "table_offset",
                hdr.offset.saturating_add(16),
                format!("a {bytes}-byte BAT ending before the footer at byte {data_end}"),
                hdr.table_offset,
            ));
        }
        let mut raw = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
        read_exact_at(file, hdr.table_offset, &mut raw, "VHD BAT")?;
        let bitmap_bytes = bitmap_bytes(hdr.block_size);
        let span = bitmap_bytes.saturating_add(bs);
        // The disk's own metadata (VHD spec "Dynamic Disk Header Format": footer
        // copy at 0, 1024-byte dynamic header, BAT): a block over any of it would
        // hand metadata out as guest data, so it is refused (qemu reads it).
        let bat_end = hdr.table_offset.saturating_add(bytes);
        let metadata = [
            (0u64, 512u64, "the footer copy"),
            (
                hdr.offset,
                hdr.offset.saturating_add(1024),
                "the dynamic disk header",
            ),
            (hdr.table_offset, bat_end, "the BAT"),
        ];
        let mut entries = Vec::with_capacity(raw.len() / 4);
        for (i, c) in raw.chunks_exact(4).enumerate() {
            let v = u32::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
                c.get(2).copied().unwrap_or(0),
                c.get(3).copied().unwrap_or(0),
            ]);
            if v != UNUSED {
                let start = u64::from(v).saturating_mul(512);
                if start.saturating_add(span) > data_end {
                    let at = u64::try_from(i)
                        .unwrap_or(0)
                        .saturating_mul(4)
                        .saturating_add(hdr.table_offset);
                    return Err(Error::corrupt(
                        "VHD BAT",
                        format!("entry {i}"),
                        at,
                        format!(
                            "a block ({span} bytes with its bitmap) ending before the footer at byte {data_end}"
                        ),
                        format!("sector {v} (byte {start})"),
                    ));
                }
            }
            if v != UNUSED {
                let start = u64::from(v).saturating_mul(512);
                let end = start.saturating_add(span);
                if let Some((_, _, what)) =
                    metadata.iter().find(|(ms, me, _)| start < *me && *ms < end)
                {
                    let at = u64::try_from(i)
                        .unwrap_or(0)
                        .saturating_mul(4)
                        .saturating_add(hdr.table_offset);
                    return Err(Error::corrupt(
                        "VHD BAT",
                        format!("entry {i}"),
                        at,
                        format!("a block clear of {what}"),
                        format!("sector {v} (byte {start}), overlapping {what}"),
                    ));
                }
            }
            entries.push(v);
        }
        Ok(Bat {
            entries,
            bitmap_bytes,
        })
    }
}
