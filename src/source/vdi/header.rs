//! The VirtualBox VDI header, version 1.1 (VirtualBox source
//! `VDICore.h`, `VDIHEADER1`; qemu `block/vdi.c` `VdiHeader`): a 64-byte
//! text "pre-header", then little-endian fields from byte 0x40.
//!
//! | offset | field |
//! |---|---|
//! | 0x40 | signature 0xbeda107f |
//! | 0x44 | version (0x00010001 = 1.1) |
//! | 0x48 | header size |
//! | 0x4c | image type (1 dynamic, 2 static, 3 undo, 4 diff) |
//! | 0x50 | image flags |
//! | 0x54 | description (256 bytes) |
//! | 0x154 | offset of the block map |
//! | 0x158 | offset of the data |
//! | 0x15c | legacy geometry: cylinders, heads, sectors, sector size |
//! | 0x170 | disk size (u64) |
//! | 0x178 | block size |
//! | 0x17c | block extra data |
//! | 0x180 | blocks in image |
//! | 0x184 | blocks allocated |
//! | 0x188 | UUID of this image, 0x198 last snapshot, 0x1a8 link, 0x1b8 parent |

use crate::error::{Error, Result};
use crate::limits::{MAX_TABLE_BYTES, MAX_VDI_BLOCK_BYTES, MAX_VIRTUAL_SIZE};

/// `signature`.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// `version` 1.1.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// Bytes read for the header (through the parent UUID and LCHS geometry).
pub const HEADER_BYTES: usize = 0x200;
/// `image type` 1: dynamic (blocks allocated on write).
pub const TYPE_DYNAMIC: u32 = 1;
/// `image type` 2: static (all blocks preallocated).
pub const TYPE_STATIC: u32 = 2;
/// Block map entry: block not allocated (reads as zeros).
pub const BLOCK_FREE: u32 = 0xffff_ffff;
/// Block map entry: block discarded / zero (reads as zeros).
pub const BLOCK_ZERO: u32 = 0xffff_fffe;

/// The parsed header; names follow VirtualBox's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiHeader {
    /// Pre-header text up to its first NUL or newline.
    pub text: String,
    /// `version`.
    pub version: u32,
    /// `cbHeader`.
    pub header_size: u32,
    /// `u32Type`.
    pub image_type: u32,
    /// `fFlags`.
    pub flags: u32,
    /// `szComment`.
    pub description: String,
    /// `offBlocks`.
    pub offset_bmap: u32,
    /// `offData`.
    pub offset_data: u32,
    /// Legacy sector size.
    pub sector_size: u32,
    /// `cbDisk`.
    pub disk_size: u64,
    /// `cbBlock`.
    pub block_size: u32,
    /// `cbBlockExtra`.
    pub block_extra: u32,
    /// `cBlocks`.
    pub blocks_in_image: u32,
    /// `cBlocksAllocated`.
    pub blocks_allocated: u32,
    /// `uuidCreate`.
    pub uuid_image: [u8; 16],
    /// `uuidModify`.
    pub uuid_last_snap: [u8; 16],
    /// `uuidLinkage`.
    pub uuid_link: [u8; 16],
    /// `uuidParentModify`.
    pub uuid_parent: [u8; 16],
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = at.checked_add(4).and_then(|e| b.get(at..e)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn uuid(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    if let Some(s) = at.checked_add(16).and_then(|e| b.get(at..e)) {
        a.copy_from_slice(s);
    }
    a
}

/// Format a VDI UUID (RTUUID, little-endian first three fields) as text.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = *u;
    let tail: String = rest.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{a3:02x}{a2:02x}{a1:02x}{a0:02x}-{b1:02x}{b0:02x}-{c1:02x}{c0:02x}-{}-{}",
        tail.get(..4).unwrap_or(""),
        tail.get(4..).unwrap_or("")
    )
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned()
}

impl VdiHeader {
    /// Parse and check the header (`b` holds the first [`HEADER_BYTES`]).
    pub fn parse(b: &[u8]) -> Result<Self> {
        let bad = |field: &str, at: u64, expected: String, found: String| {
            Err(Error::corrupt("VDI header", field, at, expected, found))
        };
        let sig = le32(b, 0x40);
        if sig != SIGNATURE {
            return bad(
                "signature",
                0x40,
                format!("{SIGNATURE:#010x}"),
                format!("{sig:#010x}"),
            );
        }
        let text = cstr(b.get(..0x40).unwrap_or(&[]))
            .trim_end_matches('\n')
            .to_string();
        let mut disk = [0u8; 8];
        disk.copy_from_slice(b.get(0x170..0x178).unwrap_or(&[0; 8]));
        let h = VdiHeader {
            text,
            version: le32(b, 0x44),
            header_size: le32(b, 0x48),
            image_type: le32(b, 0x4c),
            flags: le32(b, 0x50),
            description: cstr(b.get(0x54..0x154).unwrap_or(&[])),
            offset_bmap: le32(b, 0x154),
            offset_data: le32(b, 0x158),
            sector_size: le32(b, 0x168),
            // `VBoxManage convertfromraw` can write sizes that are not whole
            // sectors; like qemu's vdi driver, round up to 512.
            disk_size: u64::from_le_bytes(disk)
                .checked_next_multiple_of(512)
                .unwrap_or(u64::MAX),
            block_size: le32(b, 0x178),
            block_extra: le32(b, 0x17c),
            blocks_in_image: le32(b, 0x180),
            blocks_allocated: le32(b, 0x184),
            uuid_image: uuid(b, 0x188),
            uuid_last_snap: uuid(b, 0x198),
            uuid_link: uuid(b, 0x1a8),
            uuid_parent: uuid(b, 0x1b8),
        };
        if h.version != VERSION_1_1 {
            return Err(Error::unsupported(format!(
                "VDI header version {:#010x} (only 1.1, 0x00010001, is read)",
                h.version
            )));
        }
        if h.image_type != TYPE_DYNAMIC && h.image_type != TYPE_STATIC {
            return match h.image_type {
                3 | 4 => Err(Error::unsupported(format!(
                    "VDI image type {} ({}) is not read by onramp (only dynamic and static)",
                    h.image_type,
                    if h.image_type == 3 {
                        "undo"
                    } else {
                        "differencing"
                    }
                ))),
                t => bad(
                    "image type",
                    0x4c,
                    "1 (dynamic) or 2 (static)".into(),
                    t.to_string(),
                ),
            };
        }
        if h.uuid_link != [0; 16] || h.uuid_parent != [0; 16] {
            return Err(Error::unsupported(
                "VDI image has a parent (link/parent UUID set); differencing VDIs are not read",
            ));
        }
        if !h.offset_bmap.is_multiple_of(512) || h.offset_bmap < 0x200 {
            return bad(
                "offset of blocks",
                0x154,
                "a multiple of 512, at least 512".into(),
                h.offset_bmap.to_string(),
            );
        }
        if !h.offset_data.is_multiple_of(512) || h.offset_data < 0x200 {
            return bad(
                "offset of data",
                0x158,
                "a multiple of 512, at least 512".into(),
                h.offset_data.to_string(),
            );
        }
        if h.sector_size != 512 && h.sector_size != 0 {
            return bad(
                "sector size",
                0x168,
                "512".into(),
                h.sector_size.to_string(),
            );
        }
        let bs = u64::from(h.block_size);
        if bs < 512 || !bs.is_power_of_two() || bs > MAX_VDI_BLOCK_BYTES {
            return bad(
                "block size",
                0x178,
                format!("a power of two from 512 to {MAX_VDI_BLOCK_BYTES}"),
                h.block_size.to_string(),
            );
        }
        if h.block_extra != 0 {
            return Err(Error::unsupported(format!(
                "VDI block extra data of {} bytes is not read (only 0)",
                h.block_extra
            )));
        }
        let map_bytes = u64::from(h.blocks_in_image).saturating_mul(4);
        if map_bytes > MAX_TABLE_BYTES {
            return bad(
                "blocks in image",
                0x180,
                format!(
                    "at most {} (a block map of {MAX_TABLE_BYTES} bytes)",
                    MAX_TABLE_BYTES / 4
                ),
                h.blocks_in_image.to_string(),
            );
        }
        let covered = u64::from(h.blocks_in_image).saturating_mul(bs);
        if h.disk_size > covered || h.disk_size > MAX_VIRTUAL_SIZE {
            return bad(
                "disk size",
                0x170,
                format!(
                    "at most blocks in image × block size = {covered} (and {MAX_VIRTUAL_SIZE})"
                ),
                h.disk_size.to_string(),
            );
        }
        if h.blocks_allocated > h.blocks_in_image {
            return bad(
                "blocks allocated",
                0x184,
                format!("at most blocks in image ({})", h.blocks_in_image),
                h.blocks_allocated.to_string(),
            );
        }
        Ok(h)
    }
}
