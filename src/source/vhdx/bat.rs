//! The VHDX Block Allocation Table (VHDX spec v1.0 §2.5): 64-bit entries,
//! state in bits 0-2, file offset in MiB in bits 20-63. Payload block entries
//! are interleaved with sector bitmap block entries: after every
//! `chunk_ratio` payload entries comes one sector bitmap entry, where
//! `chunk_ratio = 2^23 × logical_sector_size / block_size` (§2.5: the sectors
//! one 1 MiB bitmap block describes, over the sectors of one block).

use super::header::MIB;
use super::log::FileView;
use super::metadata::Metadata;
use super::region::Region;
use crate::error::{Error, Result};
use crate::limits;

/// Payload state: no data here; the parent's (or zeros) (§2.5.1).
pub const PAYLOAD_NOT_PRESENT: u8 = 0;
/// Payload state: contents undefined; read as zeros.
pub const PAYLOAD_UNDEFINED: u8 = 1;
/// Payload state: reads as zeros.
pub const PAYLOAD_ZERO: u8 = 2;
/// Payload state: unmapped (trimmed); read as zeros.
pub const PAYLOAD_UNMAPPED: u8 = 3;
/// The pre-1.0 draft's value for UNMAPPED, still accepted by qemu (vhdx.h
/// `PAYLOAD_BLOCK_UNMAPPED_v095`).
pub const PAYLOAD_UNMAPPED_V095: u8 = 5;
/// Payload state: the whole block is in the file.
pub const PAYLOAD_FULLY_PRESENT: u8 = 6;
/// Payload state: sectors come from the file or the parent per the sector bitmap.
pub const PAYLOAD_PARTIALLY_PRESENT: u8 = 7;
/// Sector bitmap state: not allocated (§2.5.2).
pub const SB_NOT_PRESENT: u8 = 0;
/// Sector bitmap state: allocated.
pub const SB_PRESENT: u8 = 6;
/// Bytes in a sector bitmap block (§2.5.2: 1 MiB).
pub const SB_BLOCK: u64 = 1 << 20;

/// The loaded and checked BAT.
#[derive(Debug)]
pub struct Bat {
    entries: Vec<u64>,
    /// Payload blocks per sector bitmap block.
    pub chunk_ratio: u64,
    /// Number of payload blocks covering the virtual disk.
    pub data_blocks: u64,
    /// Block size in bytes.
    pub block_size: u64,
}

/// A payload block's state and file offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// State bits.
    pub state: u8,
    /// File offset in bytes.
    pub offset: u64,
}

fn split(v: u64) -> Entry {
    Entry {
        state: u8::try_from(v & 7).unwrap_or(0),
        offset: (v >> 20).saturating_mul(MIB),
    }
}

impl Bat {
    /// Read and check the BAT region `r` for metadata `m`.
    pub fn load(view: &FileView, r: Region, m: &Metadata) -> Result<Bat> {
        const S: &str = "VHDX BAT";
        let bs = u64::from(m.block_size);
        let chunk_ratio = (1u64 << 23)
            .saturating_mul(u64::from(m.logical_sector_size))
            .checked_div(bs)
            .unwrap_or(1);
        let chunk_ratio = chunk_ratio.max(1);
        let data_blocks = m.virtual_size.div_ceil(bs.max(1));
        let sb_blocks = data_blocks.div_ceil(chunk_ratio);
        // §2.5: total entries with and without a parent.
        let total = if m.has_parent {
            sb_blocks.saturating_mul(chunk_ratio.saturating_add(1))
        } else {
            data_blocks.saturating_add(
                data_blocks
                    .saturating_sub(1)
                    .checked_div(chunk_ratio)
                    .unwrap_or(0),
            )
        };
        let bytes = total.saturating_mul(8);
        if bytes > limits::MAX_TABLE_BYTES {
            return Err(Error::unsupported(format!(
                "VHDX BAT of {total} entries ({bytes} bytes) is larger than onramp's {} MiB table limit",
                limits::MAX_TABLE_BYTES >> 20
            )));
        }
        if bytes > u64::from(r.length) {
            return Err(Error::corrupt(
                "VHDX region table",
                "BAT length",
                r.file_offset,
                format!("at least {bytes} bytes for {total} entries ({} bytes virtual, {bs}-byte blocks)", m.virtual_size),
                r.length,
            ));
        }
        let mut raw = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
        view.read(r.file_offset, &mut raw, S)?;
        let file_len = view.len();
        let mut entries = Vec::with_capacity(raw.len() / 8);
        for (i, c) in raw.chunks_exact(8).enumerate() {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            let v = u64::from_le_bytes(a);
            let idx = u64::try_from(i).unwrap_or(0);
            let at = r.file_offset.saturating_add(idx.saturating_mul(8));
            let e = split(v);
            let is_sb = idx.checked_rem(chunk_ratio.saturating_add(1)) == Some(chunk_ratio);
            if is_sb {
                match e.state {
                    SB_NOT_PRESENT => {}
                    SB_PRESENT => check_span(e, SB_BLOCK, file_len, at, i, "sector bitmap")?,
                    s => {
                        return Err(Error::corrupt(
                            S,
                            format!("entry {i} state"),
                            at,
                            "0 or 6 (sector bitmap block)",
                            s,
                        ));
                    }
                }
            } else {
                let blk =
                    idx.saturating_sub(idx.checked_div(chunk_ratio.saturating_add(1)).unwrap_or(0));
                let start = blk.saturating_mul(bs);
                let span = bs.min(m.virtual_size.saturating_sub(start));
                match e.state {
                    PAYLOAD_NOT_PRESENT
                    | PAYLOAD_UNDEFINED
                    | PAYLOAD_ZERO
                    | PAYLOAD_UNMAPPED
                    | PAYLOAD_UNMAPPED_V095 => {}
                    PAYLOAD_FULLY_PRESENT => check_span(e, span, file_len, at, i, "payload")?,
                    PAYLOAD_PARTIALLY_PRESENT if m.has_parent => {
                        check_span(e, span, file_len, at, i, "payload")?
                    }
                    s => {
                        return Err(Error::corrupt(
                            S,
                            format!("entry {i} state"),
                            at,
                            if m.has_parent {
                                "0, 1, 2, 3, 6 or 7"
                            } else {
                                "0, 1, 2, 3 or 6 (7 only in differencing disks)"
                            },
                            s,
                        ));
                    }
                }
            }
            entries.push(v);
        }
        Ok(Bat {
            entries,
            chunk_ratio,
            data_blocks,
            block_size: bs,
        })
    }

    /// The entry of payload block `blk`.
    pub fn payload(&self, blk: u64) -> Entry {
        let idx = blk.saturating_add(blk.checked_div(self.chunk_ratio).unwrap_or(0));
        self.get(idx)
    }

    /// The sector bitmap entry for payload block `blk`'s chunk.
    pub fn bitmap_for(&self, blk: u64) -> Entry {
        let chunk = blk.checked_div(self.chunk_ratio).unwrap_or(0);
        let idx = chunk
            .saturating_mul(self.chunk_ratio.saturating_add(1))
            .saturating_add(self.chunk_ratio);
        self.get(idx)
    }

    fn get(&self, idx: u64) -> Entry {
        let v = usize::try_from(idx)
            .ok()
            .and_then(|i| self.entries.get(i))
            .copied()
            .unwrap_or(0);
        split(v)
    }

    /// Count payload blocks per state (for `info`).
    pub fn state_counts(&self) -> [u64; 8] {
        let mut c = [0u64; 8];
        for b in 0..self.data_blocks {
            let s = usize::from(self.payload(b).state);
            if let Some(x) = c.get_mut(s) {
                *x = x.saturating_add(1);
            }
        }
        c
    }
}

fn check_span(e: Entry, span: u64, file_len: u64, at: u64, i: usize, what: &str) -> Result<()> {
    if e.offset < MIB || e.offset.checked_add(span).is_none_or(|x| x > file_len) {
        return Err(Error::corrupt(
            "VHDX BAT",
            format!("entry {i} file_offset"),
            at,
            format!(
                "a {what} block of {span} bytes at or after 1 MiB, inside the {file_len}-byte file"
            ),
            e.offset,
        ));
    }
    Ok(())
}
