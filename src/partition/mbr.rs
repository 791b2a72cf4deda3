//! Master Boot Record partition tables: four primary entries in sector 0 and
//! the chain of Extended Boot Records (EBRs) that hold logical partitions.
//!
//! Layout (the IBM PC MBR as documented by UEFI 2.10 §5.2.1 "Legacy Master Boot
//! Record"): partition records at bytes 446, 462, 478, 494 (16 bytes each:
//! status, CHS start, type, CHS end, starting LBA u32, size in LBA u32);
//! signature 0x55 0xAA at 510. The disk signature is the u32 at 440.
//! An EBR repeats the layout: its first record is a logical partition relative
//! to the EBR itself, its second points at the next EBR relative to the start
//! of the extended partition. LBAs here are 512-byte sectors.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::{Scheme, Volume};
use crate::block::BlockSource;
use crate::bytes::{le32, u8_at};
use crate::error::Result;
use crate::limits::MAX_LOGICAL_PARTITIONS;

/// Sector size MBR LBAs are counted in.
pub const SECTOR: u64 = 512;
/// Offset of the first partition record (UEFI 2.10 table 5-1).
const RECORDS: usize = 446;
/// MBR partition type of a GPT protective entry.
pub const TYPE_PROTECTIVE: u8 = 0xEE;
/// MBR partition type of an EFI system partition.
pub const TYPE_ESP: u8 = 0xEF;

/// One non-empty partition record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Slot 1..=4.
    pub slot: u32,
    /// Status byte (0x80 active).
    pub status: u8,
    /// Partition type byte.
    pub ptype: u8,
    /// Starting LBA.
    pub start_lba: u32,
    /// Size in sectors.
    pub sectors: u32,
}

/// A parsed sector 0 that looks like an MBR.
#[derive(Debug, Clone)]
pub struct Mbr {
    /// Disk signature (bytes 440..444).
    pub disk_signature: u32,
    /// Non-empty primary records.
    pub entries: Vec<Entry>,
}

impl Mbr {
    /// Has a GPT protective (0xEE) record.
    pub fn has_protective(&self) -> bool {
        self.entries.iter().any(|e| e.ptype == TYPE_PROTECTIVE)
    }
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0F | 0x85)
}

fn records(sector: &[u8]) -> Vec<Entry> {
    let mut v = Vec::new();
    for slot in 0u32..4 {
        let o = RECORDS.saturating_add(crate::bytes::us(u64::from(slot) * 16));
        let e = Entry {
            slot: slot.saturating_add(1),
            status: u8_at(sector, o),
            ptype: u8_at(sector, o.saturating_add(4)),
            start_lba: le32(sector, o.saturating_add(8)),
            sectors: le32(sector, o.saturating_add(12)),
        };
        if e.ptype != 0 && e.sectors != 0 {
            v.push(e);
        }
    }
    v
}

/// Sector 0 ends in 0x55AA and is not a FAT/NTFS boot sector (so it was meant
/// to be an MBR, whether or not its entries are valid).
pub fn has_signature(sector: &[u8; 512]) -> bool {
    sector[510] == 0x55
        && sector[511] == 0xAA
        && &sector[3..11] != b"NTFS    "
        && &sector[54..57] != b"FAT"
        && &sector[82..87] != b"FAT32"
}

/// Parse sector 0 as an MBR. `None` when it has no 0x55AA signature, when its
/// records are implausible (bad status byte, past the end of the disk), or when
/// it is the boot sector of a FAT/NTFS filesystem at offset 0.
pub fn parse_sector0(sector: &[u8; 512], disk_size: u64) -> Option<Mbr> {
    if sector[510] != 0x55 || sector[511] != 0xAA {
        return None;
    }
    // A filesystem boot sector (FAT's "FAT" type strings, NTFS OEM id) is not a table.
    let oem = &sector[3..11];
    if oem == b"NTFS    " || &sector[54..57] == b"FAT" || &sector[82..87] == b"FAT32" {
        return None;
    }
    let entries = records(sector);
    let disk_sectors = disk_size / SECTOR;
    for e in &entries {
        if e.status != 0 && e.status != 0x80 {
            return None;
        }
        // A protective entry may claim 0xFFFFFFFF sectors on a large disk.
        if e.ptype != TYPE_PROTECTIVE
            && u64::from(e.start_lba).saturating_add(u64::from(e.sectors)) > disk_sectors
        {
            return None;
        }
    }
    if entries.is_empty() {
        return None;
    }
    Some(Mbr {
        disk_signature: le32(sector, 440),
        entries,
    })
}

fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0E => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0B | 0x0C => "W95 FAT32",
        0x05 | 0x0F | 0x85 => "Extended",
        0x27 => "Hidden NTFS WinRE",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8E => "Linux LVM",
        0xEE => "GPT protective",
        0xEF => "EFI System",
        0xFD => "Linux raid autodetect",
        _ => return None,
    })
}

fn volume(index: u32, e: &Entry, base_lba: u64) -> Volume {
    let start = base_lba
        .saturating_add(u64::from(e.start_lba))
        .saturating_mul(SECTOR);
    let size = u64::from(e.sectors).saturating_mul(SECTOR);
    let mut v = Volume::contiguous(index, start, size, Scheme::Mbr);
    v.type_id = format!("0x{:02x}", e.ptype);
    v.type_name = type_name(e.ptype).map(str::to_string);
    v.bootable = e.status == 0x80;
    v.esp = e.ptype == TYPE_ESP;
    v
}

/// The volumes of an MBR disk: primaries in slot order (extended containers
/// are not volumes), then logical partitions numbered from 5.
pub fn volumes(
    disk: &dyn BlockSource,
    mbr: &Mbr,
    warnings: &mut Vec<String>,
) -> Result<Vec<Volume>> {
    let mut out = Vec::new();
    let disk_sectors = disk.size() / SECTOR;
    let mut ext: Option<&Entry> = None;
    for e in &mbr.entries {
        if is_extended(e.ptype) {
            if ext.is_some() {
                warnings.push(format!(
                    "MBR slot {} is a second extended partition; ignored",
                    e.slot
                ));
            } else {
                ext = Some(e);
            }
            continue;
        }
        out.push(volume(e.slot, e, 0));
    }
    if let Some(x) = ext {
        logical(disk, x, disk_sectors, &mut out, warnings)?;
    }
    Ok(out)
}

fn logical(
    disk: &dyn BlockSource,
    ext: &Entry,
    disk_sectors: u64,
    out: &mut Vec<Volume>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let ext_start = u64::from(ext.start_lba);
    let ext_end = ext_start
        .saturating_add(u64::from(ext.sectors))
        .min(disk_sectors);
    let mut seen = std::collections::HashSet::new();
    let mut ebr_lba = ext_start;
    let mut index = 5u32;
    loop {
        if !seen.insert(ebr_lba) {
            warnings.push(format!(
                "EBR chain loops back to LBA {ebr_lba}; logical partitions after it ignored"
            ));
            return Ok(());
        }
        if seen.len() > MAX_LOGICAL_PARTITIONS {
            warnings.push(format!(
                "EBR chain longer than {MAX_LOGICAL_PARTITIONS}; the rest is ignored"
            ));
            return Ok(());
        }
        if ebr_lba < ext_start || ebr_lba >= ext_end {
            warnings.push(format!(
                "EBR at LBA {ebr_lba} lies outside the extended partition \
                 (LBA {ext_start}..{ext_end}); chain stopped"
            ));
            return Ok(());
        }
        let mut s = [0u8; 512];
        disk.read_at(ebr_lba.saturating_mul(SECTOR), &mut s)?;
        if s[510] != 0x55 || s[511] != 0xAA {
            warnings.push(format!(
                "EBR at byte {} has no 0x55AA signature; chain stopped",
                ebr_lba.saturating_mul(SECTOR)
            ));
            return Ok(());
        }
        let recs = records(&s);
        let mut next = None;
        for r in &recs {
            if is_extended(r.ptype) {
                next.get_or_insert(ext_start.saturating_add(u64::from(r.start_lba)));
            } else if r.slot == 1 {
                let v = volume(index, r, ebr_lba);
                let end = v.start_bytes.saturating_add(v.size_bytes);
                if end > ext_end.saturating_mul(SECTOR)
                    || v.start_bytes < ebr_lba.saturating_mul(SECTOR)
                {
                    warnings.push(format!(
                        "logical partition {index} (bytes {}..{end}) lies outside its extended partition; skipped",
                        v.start_bytes
                    ));
                } else {
                    out.push(v);
                }
                index = index.saturating_add(1);
            }
        }
        match next {
            Some(n) => ebr_lba = n,
            None => return Ok(()),
        }
    }
}
