//! The region table (VHDX spec v1.0 §2.2): 64 KiB at 192 KiB (a second copy at
//! 256 KiB), signature "regi", CRC-32C over the 64 KiB, then up to 2047
//! 32-byte entries naming regions by GUID. onramp knows the BAT and metadata
//! regions; an unknown region marked required is refused (§2.2.2: "if ...
//! Required is set and the implementation does not recognise the region, it
//! must fail to open the file").

use super::guid::Guid;
use super::header::{check_signature_and_crc, le32, le64, MIB};
use super::log::FileView;
use crate::error::{Error, Result};

/// Offsets of region table 1 and 2 (§2.1).
pub const TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Size of a region table (§2.2).
pub const TABLE_SIZE: usize = 64 << 10;
/// Most entries a region table may hold (§2.2.1: "must be less than or equal to 2047").
pub const MAX_ENTRIES: u32 = 2047;
/// BAT region GUID (§2.2.2).
pub const BAT_GUID: Guid = Guid::parse("2DC27766-F623-4200-9D64-115E9BFD4A08");
/// Metadata region GUID (§2.2.2).
pub const METADATA_GUID: Guid = Guid::parse("8B7CA206-4790-4B9A-B8FE-575F050F886E");

/// One region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Byte offset in the file (multiple of 1 MiB).
    pub file_offset: u64,
    /// Length in bytes (multiple of 1 MiB).
    pub length: u32,
}

/// The regions onramp uses.
#[derive(Debug, Clone)]
pub struct Regions {
    /// Which copy was used (1 or 2).
    pub table: u8,
    /// The BAT region.
    pub bat: Region,
    /// The metadata region.
    pub metadata: Region,
    /// Number of entries in the table.
    pub entry_count: u32,
}

fn parse(b: &[u8], offset: u64, slot: u8, file_len: u64) -> Result<Regions> {
    let s = format!("VHDX region table {slot}");
    let at = |o: u64| offset.saturating_add(o);
    check_signature_and_crc(&s, b, offset, b"regi")?;
    let count = le32(b, 8);
    if count > MAX_ENTRIES {
        return Err(Error::corrupt(
            &s,
            "entry_count",
            at(8),
            "at most 2047",
            count,
        ));
    }
    let mut bat = None;
    let mut meta = None;
    for i in 0..count {
        let e = usize::try_from(i)
            .unwrap_or(0)
            .saturating_mul(32)
            .saturating_add(16);
        let eat = at(u64::try_from(e).unwrap_or(0));
        let guid = Guid::read(b, e);
        let r = Region {
            file_offset: le64(b, e.saturating_add(16)),
            length: le32(b, e.saturating_add(24)),
        };
        let required = le32(b, e.saturating_add(28)) & 1 == 1;
        let len = u64::from(r.length);
        if r.file_offset < MIB
            || !r.file_offset.is_multiple_of(MIB)
            || len == 0
            || !len.is_multiple_of(MIB)
        {
            return Err(Error::corrupt(
                &s,
                format!("entry {i} file_offset/length"),
                eat.saturating_add(16),
                "a non-empty region aligned to 1 MiB, at or after 1 MiB",
                format!("{len} bytes at byte {}", r.file_offset),
            ));
        }
        if r.file_offset.checked_add(len).is_none_or(|e| e > file_len) {
            return Err(Error::corrupt(
                &s,
                format!("entry {i} file_offset"),
                eat.saturating_add(16),
                format!("a {len}-byte region inside the {file_len}-byte file"),
                r.file_offset,
            ));
        }
        let slot_ref = if guid == BAT_GUID {
            &mut bat
        } else if guid == METADATA_GUID {
            &mut meta
        } else if required {
            return Err(Error::unsupported(format!(
                "VHDX region table {slot} entry {i}: unknown region {guid} is marked required"
            )));
        } else {
            continue;
        };
        if slot_ref.is_some() {
            return Err(Error::corrupt(
                &s,
                format!("entry {i} guid"),
                eat,
                "each region once",
                format!("a second {guid} entry"),
            ));
        }
        *slot_ref = Some(r);
    }
    let bat =
        bat.ok_or_else(|| Error::corrupt(&s, "entries", at(16), "a BAT region entry", "none"))?;
    let metadata = meta
        .ok_or_else(|| Error::corrupt(&s, "entries", at(16), "a metadata region entry", "none"))?;
    Ok(Regions {
        table: slot,
        bat,
        metadata,
        entry_count: count,
    })
}

/// Read region table 1, or table 2 when table 1 is not valid.
pub fn read(view: &FileView) -> Result<Regions> {
    let mut errors = Vec::new();
    for (i, off) in TABLE_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; TABLE_SIZE];
        view.read(*off, &mut b, "VHDX region table")?;
        let slot = if i == 0 { 1 } else { 2 };
        match parse(&b, *off, slot, view.len()) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => errors.push(e),
            Err(e) => return Err(e),
        }
    }
    let msgs: Vec<String> = errors.iter().map(|e| e.message().to_string()).collect();
    Err(Error::corrupt_msg(format!(
        "VHDX: neither region table is valid: {}",
        msgs.join("; ")
    )))
}
