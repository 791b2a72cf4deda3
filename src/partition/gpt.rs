//! GUID Partition Tables (UEFI 2.10 §5.3 "GUID Partition Table (GPT) Disk Layout").
//!
//! The primary header is at LBA 1, its backup at the last LBA; each points at
//! an entry array. Header fields (table 5-5): Signature "EFI PART" @0,
//! HeaderSize @12, HeaderCRC32 @16 (CRC32 of HeaderSize bytes with this field
//! zeroed), MyLBA @24, AlternateLBA @32, FirstUsableLBA @40, LastUsableLBA @48,
//! DiskGUID @56, PartitionEntryLBA @72, NumberOfPartitionEntries @80,
//! SizeOfPartitionEntry @84 (128 × 2^n), PartitionEntryArrayCRC32 @88.
//! Entries (table 5-6): PartitionTypeGUID @0, UniquePartitionGUID @16,
//! StartingLBA @32, EndingLBA @40 (inclusive), Attributes @48, PartitionName
//! @56 (36 UTF-16LE code units).
//!
//! Both logical sector sizes in use (512 and 4096) are tried. A copy with a bad
//! CRC is reported and the good copy is used; copies that disagree are reported.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::{Scheme, Volume};
use crate::block::BlockSource;
use crate::bytes::{guid, le16, le32, le64, sub, us};
use crate::error::{Error, Result};
use crate::limits::MAX_GPT_ENTRY_BYTES;

/// "EFI PART".
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// EFI System Partition type GUID.
pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// What was found.
#[derive(Debug, Clone)]
pub struct Gpt {
    /// Logical sector size the headers were found with.
    pub sector_size: u32,
    /// Disk GUID.
    pub disk_guid: String,
    /// Partitions in entry order (index = entry number + 1).
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    disk_guid: String,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Known partition type GUIDs (UEFI spec, Discoverable Partitions Specification, Microsoft docs).
pub fn type_name(g: &str) -> Option<&'static str> {
    Some(match g {
        ESP => "EFI System",
        "21686148-6449-6e6f-744e-656564454649" => "BIOS boot",
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux filesystem",
        "e6d6d379-f507-44c2-a23c-238f2a3df928" => "Linux LVM",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
        "b921b045-1df0-41c3-af44-4c6f280d3fae" => "Linux root (ARM64)",
        "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
        "933ac7e1-2eb4-4f13-b844-0e14e2aef915" => "Linux home",
        "a19d880f-05fc-4d3b-a006-743f0f84911e" => "Linux RAID",
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" => "Microsoft basic data",
        "e3c9e316-0b5c-4db8-817d-f92df00215ae" => "Microsoft reserved",
        "de94bba4-06d1-4d40-a16a-bfd50179d6ac" => "Windows recovery",
        _ => return None,
    })
}

fn crc32(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

/// Parse and CRC-check a header sector; `Err(reason)` when it is not valid.
fn parse_header(sec: &[u8], lba: u64, ss: u64) -> std::result::Result<Header, String> {
    if sub(sec, 0, 8) != SIGNATURE {
        return Err("no \"EFI PART\" signature".into());
    }
    let hsize = le32(sec, 12);
    if hsize < 92 || u64::from(hsize) > ss {
        return Err(format!(
            "HeaderSize at byte 12 is {hsize}, expected 92..={ss}"
        ));
    }
    let mut h = sub(sec, 0, us(u64::from(hsize))).to_vec();
    if let Some(f) = h.get_mut(16..20) {
        f.fill(0);
    }
    let want = le32(sec, 16);
    let got = crc32(&h);
    if want != got {
        return Err(format!(
            "HeaderCRC32 at byte 16 is {want:#010x}, computed {got:#010x}"
        ));
    }
    let my_lba = le64(sec, 24);
    if my_lba != lba {
        return Err(format!("MyLBA at byte 24 is {my_lba}, expected {lba}"));
    }
    let entry_size = le32(sec, 84);
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(format!(
            "SizeOfPartitionEntry at byte 84 is {entry_size}, expected 128 × 2^n"
        ));
    }
    let num_entries = le32(sec, 80);
    let bytes = u64::from(num_entries).saturating_mul(u64::from(entry_size));
    if bytes > MAX_GPT_ENTRY_BYTES {
        return Err(format!(
            "NumberOfPartitionEntries at byte 80 is {num_entries} ({bytes} bytes of entries), \
             more than the {MAX_GPT_ENTRY_BYTES}-byte limit"
        ));
    }
    Ok(Header {
        my_lba,
        alternate_lba: le64(sec, 32),
        disk_guid: guid(sub(sec, 56, 16)),
        entries_lba: le64(sec, 72),
        num_entries,
        entry_size,
        entries_crc: le32(sec, 88),
    })
}

/// Read the entry array of `h` and check its CRC.
fn read_entries(
    disk: &dyn BlockSource,
    h: &Header,
    ss: u64,
) -> std::result::Result<Vec<u8>, String> {
    let bytes = u64::from(h.num_entries).saturating_mul(u64::from(h.entry_size));
    let off = h
        .entries_lba
        .checked_mul(ss)
        .filter(|o| o.checked_add(bytes).is_some_and(|e| e <= disk.size()))
        .ok_or_else(|| {
            format!(
                "PartitionEntryLBA {} (+{bytes} bytes) lies outside the disk",
                h.entries_lba
            )
        })?;
    let mut buf = vec![0u8; us(bytes)];
    disk.read_at(off, &mut buf).map_err(|e| e.to_string())?;
    let got = crc32(&buf);
    if got != h.entries_crc {
        return Err(format!(
            "PartitionEntryArrayCRC32 is {:#010x}, computed {got:#010x}",
            h.entries_crc
        ));
    }
    Ok(buf)
}

struct Copy {
    header: Header,
    entries: Vec<u8>,
}

fn read_copy(disk: &dyn BlockSource, lba: u64, ss: u64) -> std::result::Result<Copy, String> {
    let off = lba
        .checked_mul(ss)
        .filter(|o| o.checked_add(ss).is_some_and(|e| e <= disk.size()))
        .ok_or_else(|| format!("LBA {lba} lies outside the disk"))?;
    let mut sec = vec![0u8; us(ss)];
    disk.read_at(off, &mut sec).map_err(|e| e.to_string())?;
    let header = parse_header(&sec, lba, ss)?;
    let entries = read_entries(disk, &header, ss)?;
    Ok(Copy { header, entries })
}

/// Look for a GPT with 512- then 4096-byte sectors. Returns `None` when neither
/// copy has a signature at any sector size; a damaged copy is a warning.
pub fn find(disk: &dyn BlockSource, warnings: &mut Vec<String>) -> Result<Option<Gpt>> {
    for ss in [512u64, 4096] {
        let total = disk.size().checked_div(ss).unwrap_or(0);
        if total < 3 {
            continue;
        }
        let last = total.saturating_sub(1);
        let primary = read_copy(disk, 1, ss);
        let backup_lba = match &primary {
            Ok(p) if p.header.alternate_lba != last => {
                warnings.push(format!(
                    "GPT primary header AlternateLBA is {}, but the last LBA is {last}",
                    p.header.alternate_lba
                ));
                last
            }
            _ => last,
        };
        let backup = read_copy(disk, backup_lba, ss);
        let has_sig = |lba: u64| -> bool {
            let mut s = [0u8; 8];
            lba.checked_mul(ss)
                .is_some_and(|o| disk.read_at(o, &mut s).is_ok() && &s == SIGNATURE)
        };
        let chosen = match (primary, backup) {
            (Ok(p), Ok(b)) => {
                if p.entries != b.entries || p.header.disk_guid != b.header.disk_guid {
                    warnings.push(
                        "GPT primary and backup disagree (entries or disk GUID); using the primary"
                            .into(),
                    );
                }
                if b.header.alternate_lba != p.header.my_lba {
                    warnings.push(format!(
                        "GPT backup header AlternateLBA is {}, expected {}",
                        b.header.alternate_lba, p.header.my_lba
                    ));
                }
                p
            }
            (Ok(p), Err(e)) => {
                warnings.push(format!(
                    "GPT backup header at LBA {backup_lba}: {e}; using the primary"
                ));
                p
            }
            (Err(e), Ok(b)) => {
                warnings.push(format!(
                    "GPT primary header at LBA 1: {e}; using the backup"
                ));
                b
            }
            (Err(pe), Err(be)) => {
                if has_sig(1) || has_sig(last) {
                    return Err(Error::corrupt_msg(format!(
                        "GPT ({ss}-byte sectors): primary header at LBA 1: {pe}; \
                         backup header at LBA {backup_lba}: {be}"
                    )));
                }
                continue;
            }
        };
        let ss32 = u32::try_from(ss).unwrap_or(512);
        return Ok(Some(Gpt {
            sector_size: ss32,
            disk_guid: chosen.header.disk_guid.clone(),
            volumes: entries_to_volumes(&chosen, ss, disk.size(), warnings),
        }));
    }
    Ok(None)
}

fn entries_to_volumes(
    c: &Copy,
    ss: u64,
    disk_size: u64,
    warnings: &mut Vec<String>,
) -> Vec<Volume> {
    let mut out = Vec::new();
    let es = us(u64::from(c.header.entry_size));
    for (i, e) in c.entries.chunks(es.max(1)).enumerate() {
        let tguid = sub(e, 0, 16);
        if tguid.iter().all(|&b| b == 0) {
            continue;
        }
        let index = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        let first = le64(e, 32);
        let last = le64(e, 40);
        let start = first.checked_mul(ss);
        let size = last
            .checked_sub(first)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(ss));
        let (start, size) = match (start, size) {
            (Some(s), Some(z)) if s.checked_add(z).is_some_and(|end| end <= disk_size) => (s, z),
            _ => {
                warnings.push(format!(
                    "GPT entry {index}: StartingLBA {first} / EndingLBA {last} do not describe a \
                     range inside the disk; skipped"
                ));
                continue;
            }
        };
        let mut v = Volume::contiguous(index, start, size, Scheme::Gpt);
        let t = guid(tguid);
        v.esp = t == ESP;
        v.type_name = type_name(&t).map(str::to_string);
        v.type_id = t;
        v.uuid = Some(guid(sub(e, 16, 16)));
        let attrs = le64(e, 48);
        v.bootable = attrs & 4 != 0;
        let name: Vec<u16> = (0..36usize)
            .map(|k| le16(e, 56usize.saturating_add(k.saturating_mul(2))))
            .take_while(|&c| c != 0)
            .collect();
        let name = String::from_utf16_lossy(&name);
        if !name.is_empty() {
            v.name = Some(name);
        }
        out.push(v);
    }
    out
}
