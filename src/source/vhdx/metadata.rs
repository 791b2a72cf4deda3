//! The metadata region (VHDX spec v1.0 §3.5): a 64 KiB table (signature
//! "metadata", up to 2047 32-byte entries) naming items by GUID, and the items
//! onramp reads — file parameters (block size, leave-blocks-allocated,
//! has-parent), virtual disk size, virtual disk id, logical and physical
//! sector size, and the parent locator (§3.5.2.6) of differencing disks.
//! An unknown item marked required is refused (§3.5.1.2).

use super::guid::Guid;
use super::header::{le16, le32, le64};
use super::log::FileView;
use super::region::Region;
use crate::error::{Error, Result};
use crate::limits;

/// Size of the metadata table at the start of the region (§3.5.1).
pub const TABLE_SIZE: usize = 64 << 10;
/// Most metadata entries (§3.5.1.1: "must be less than or equal to 2047").
pub const MAX_ENTRIES: u16 = 2047;

/// File Parameters (§3.5.2.1).
pub const FILE_PARAMETERS: Guid = Guid::parse("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
/// Virtual Disk Size (§3.5.2.2).
pub const VIRTUAL_DISK_SIZE: Guid = Guid::parse("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
/// Virtual Disk ID (§3.5.2.3).
pub const VIRTUAL_DISK_ID: Guid = Guid::parse("BECA12AB-B2E6-4523-93EF-C309E000C746");
/// Logical Sector Size (§3.5.2.4).
pub const LOGICAL_SECTOR_SIZE: Guid = Guid::parse("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
/// Physical Sector Size (§3.5.2.5).
pub const PHYSICAL_SECTOR_SIZE: Guid = Guid::parse("CDA348C7-445D-4471-9CC9-E9885251C556");
/// Parent Locator (§3.5.2.6).
pub const PARENT_LOCATOR: Guid = Guid::parse("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
/// The VHDX parent locator type (§3.5.2.6.1).
pub const VHDX_LOCATOR_TYPE: Guid = Guid::parse("B04AEFB7-D19E-4A81-B789-25B8E9445913");

/// Smallest and largest block size (§3.5.2.1: "at least 1 MB and at most 256 MB").
pub const MIN_BLOCK: u32 = 1 << 20;
/// See [`MIN_BLOCK`].
pub const MAX_BLOCK: u32 = 256 << 20;

/// The parsed metadata.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Payload block size.
    pub block_size: u32,
    /// Blocks stay allocated (fixed disks).
    pub leave_blocks_allocated: bool,
    /// Differencing disk.
    pub has_parent: bool,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Virtual disk id.
    pub virtual_disk_id: Guid,
    /// 512 or 4096.
    pub logical_sector_size: u32,
    /// 512 or 4096.
    pub physical_sector_size: u32,
    /// Parent locator key/value pairs (differencing disks).
    pub parent_locator: Vec<(String, String)>,
    /// Number of metadata entries.
    pub entry_count: u16,
}

struct Item {
    offset: u32,
    length: u32,
    entry_at: u64,
}

/// Read and check the metadata region `r`.
pub fn read(view: &FileView, r: Region) -> Result<Metadata> {
    const S: &str = "VHDX metadata table";
    let base = r.file_offset;
    let mut t = vec![0u8; TABLE_SIZE];
    view.read(base, &mut t, S)?;
    if t.get(..8) != Some(&b"metadata"[..]) {
        return Err(Error::corrupt(
            S,
            "signature",
            base,
            "\"metadata\"",
            format!("{:?}", String::from_utf8_lossy(t.get(..8).unwrap_or(&[]))),
        ));
    }
    let count = le16(&t, 10);
    if count > MAX_ENTRIES {
        return Err(Error::corrupt(
            S,
            "entry_count",
            base.saturating_add(10),
            "at most 2047",
            count,
        ));
    }
    let rlen = r.length;
    let mut items: Vec<(Guid, Item)> = Vec::new();
    for i in 0..count {
        let e = usize::from(i).saturating_mul(32).saturating_add(32);
        let eat = base.saturating_add(u64::try_from(e).unwrap_or(0));
        let id = Guid::read(&t, e);
        let offset = le32(&t, e.saturating_add(16));
        let length = le32(&t, e.saturating_add(20));
        let flags = le32(&t, e.saturating_add(24));
        let is_required = flags & 4 != 0;
        let table_size = u32::try_from(TABLE_SIZE).unwrap_or(u32::MAX);
        if length > 0
            && (offset < table_size || offset.checked_add(length).is_none_or(|x| x > rlen))
        {
            return Err(Error::corrupt(
                S,
                format!("entry {i} offset/length"),
                eat.saturating_add(16),
                format!("an item between 64 KiB and the region's {rlen} bytes"),
                format!("{length} bytes at region offset {offset}"),
            ));
        }
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            VIRTUAL_DISK_ID,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ]
        .contains(&id);
        if !known {
            if is_required {
                return Err(Error::unsupported(format!(
                    "VHDX metadata entry {i}: unknown item {id} is marked required"
                )));
            }
            continue;
        }
        if items.iter().any(|(g, _)| *g == id) {
            return Err(Error::corrupt(
                S,
                format!("entry {i} item_id"),
                eat,
                "each item once",
                format!("a second {id}"),
            ));
        }
        items.push((
            id,
            Item {
                offset,
                length,
                entry_at: eat,
            },
        ));
    }
    let get = |id: Guid, name: &str, want_len: u32| -> Result<Vec<u8>> {
        let (_, it) = items
            .iter()
            .find(|(g, _)| *g == id)
            .ok_or_else(|| Error::corrupt(S, "entries", base, format!("a {name} item"), "none"))?;
        if want_len != 0 && it.length != want_len {
            return Err(Error::corrupt(
                S,
                format!("{name} length"),
                it.entry_at.saturating_add(20),
                want_len,
                it.length,
            ));
        }
        if u64::from(it.length) > limits::MAX_HEADER_BYTES {
            return Err(Error::corrupt(
                S,
                format!("{name} length"),
                it.entry_at.saturating_add(20),
                format!("at most {}", limits::MAX_HEADER_BYTES),
                it.length,
            ));
        }
        let mut v = vec![0u8; usize::try_from(it.length).unwrap_or(0)];
        view.read(base.saturating_add(u64::from(it.offset)), &mut v, name)?;
        Ok(v)
    };
    let at_item = |id: Guid| -> u64 {
        items
            .iter()
            .find(|(g, _)| *g == id)
            .map_or(base, |(_, it)| base.saturating_add(u64::from(it.offset)))
    };
    let fp = get(FILE_PARAMETERS, "file parameters", 8)?;
    let block_size = le32(&fp, 0);
    let flags = le32(&fp, 4);
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(Error::corrupt(
            "VHDX file parameters",
            "block_size",
            at_item(FILE_PARAMETERS),
            "a power of two from 1 MiB to 256 MiB",
            block_size,
        ));
    }
    let has_parent = flags & 2 != 0;
    let vs = get(VIRTUAL_DISK_SIZE, "virtual disk size", 8)?;
    let virtual_size = le64(&vs, 0);
    let lss = le32(&get(LOGICAL_SECTOR_SIZE, "logical sector size", 4)?, 0);
    if lss != 512 && lss != 4096 {
        return Err(Error::corrupt(
            "VHDX logical sector size",
            "logical_sector_size",
            at_item(LOGICAL_SECTOR_SIZE),
            "512 or 4096",
            lss,
        ));
    }
    let pss = le32(&get(PHYSICAL_SECTOR_SIZE, "physical sector size", 4)?, 0);
    if pss != 512 && pss != 4096 {
        return Err(Error::corrupt(
            "VHDX physical sector size",
            "physical_sector_size",
            at_item(PHYSICAL_SECTOR_SIZE),
            "512 or 4096",
            pss,
        ));
    }
    if virtual_size == 0
        || virtual_size > limits::MAX_VIRTUAL_SIZE
        || virtual_size.checked_rem(u64::from(lss)) != Some(0)
    {
        return Err(Error::corrupt(
            "VHDX virtual disk size",
            "virtual_disk_size",
            at_item(VIRTUAL_DISK_SIZE),
            format!(
                "a non-zero multiple of the {lss}-byte logical sector, at most {} bytes (64 TiB)",
                limits::MAX_VIRTUAL_SIZE
            ),
            virtual_size,
        ));
    }
    let virtual_disk_id = Guid::read(&get(VIRTUAL_DISK_ID, "virtual disk id", 16)?, 0);
    let parent_locator = if has_parent {
        let pl = get(PARENT_LOCATOR, "parent locator", 0)?;
        parse_locator(&pl, at_item(PARENT_LOCATOR))?
    } else {
        Vec::new()
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: flags & 1 != 0,
        has_parent,
        virtual_size,
        virtual_disk_id,
        logical_sector_size: lss,
        physical_sector_size: pss,
        parent_locator,
        entry_count: count,
    })
}

/// Parse the parent locator item (§3.5.2.6): header (locator type GUID,
/// reserved, key_value_count) and 12-byte entries pointing at UTF-16LE keys
/// and values inside the item.
fn parse_locator(b: &[u8], at: u64) -> Result<Vec<(String, String)>> {
    const S: &str = "VHDX parent locator";
    let ty = Guid::read(b, 0);
    if ty != VHDX_LOCATOR_TYPE {
        return Err(Error::unsupported(format!(
            "VHDX parent locator of type {ty} (only the VHDX locator type {VHDX_LOCATOR_TYPE} is read)"
        )));
    }
    let count = le16(b, 18);
    let need = usize::from(count).saturating_mul(12).saturating_add(20);
    if need > b.len() {
        return Err(Error::corrupt(
            S,
            "key_value_count",
            at.saturating_add(18),
            format!(
                "at most {} entries in the {}-byte item",
                b.len().saturating_sub(20) / 12,
                b.len()
            ),
            count,
        ));
    }
    let mut out = Vec::new();
    for i in 0..usize::from(count) {
        let e = i.saturating_mul(12).saturating_add(20);
        let ko = usize::try_from(le32(b, e)).unwrap_or(usize::MAX);
        let vo = usize::try_from(le32(b, e.saturating_add(4))).unwrap_or(usize::MAX);
        let kl = usize::from(le16(b, e.saturating_add(8)));
        let vl = usize::from(le16(b, e.saturating_add(10)));
        let key = b.get(ko..ko.saturating_add(kl));
        let val = b.get(vo..vo.saturating_add(vl));
        let (Some(key), Some(val)) = (key, val) else {
            return Err(Error::corrupt(
                S,
                format!("entry {i} key/value offset"),
                at.saturating_add(u64::try_from(e).unwrap_or(0)),
                format!("key and value inside the {}-byte item", b.len()),
                format!("key {kl} bytes at {ko}, value {vl} bytes at {vo}"),
            ));
        };
        out.push((
            crate::source::vhd::locate::utf16le(key),
            crate::source::vhd::locate::utf16le(val),
        ));
    }
    Ok(out)
}
