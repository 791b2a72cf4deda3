//! Dynamic VHDX output (Microsoft "[MS-VHDX]: Virtual Hard Disk v2 (VHDX)
//! File Format", v1.0 and later revisions; section numbers below are theirs).
//!
//! Layout, written front to back (see [`super::spool`] for the two phases):
//!
//! | offset | what |
//! |---|---|
//! | 0 | file type identifier (2.2.1): `vhdxfile`, creator "onramp" |
//! | 64 KiB, 128 KiB | the two headers (2.2.2), sequence numbers 1 and 2, empty log (`LogGuid` zero) |
//! | 192 KiB, 256 KiB | region table and its copy (2.2.3): BAT and metadata regions, both required |
//! | 1 MiB | log region, 1 MiB of zeros (a hole) |
//! | 2 MiB | metadata region, 1 MiB (2.6): file parameters, virtual disk size, page 83 data, logical (512) and physical (4096) sector size |
//! | 3 MiB | BAT (2.5): payload entries with a sector-bitmap entry after every chunk-ratio of them; rounded to 1 MiB |
//! | then | payload blocks, `FULLY_PRESENT`, in disk order; blocks that read as zeros are `NOT_PRESENT` and take no space |
//!
//! Every checksum is CRC-32C (Castagnoli), computed by the small table-driven
//! [`crc32c`] here. All GUIDs (file write, data write, page 83) derive from
//! the content ([`Spool::guid`](super::spool::Spool::guid)); nothing is random
//! and there is no timestamp in the format.

use super::output::OutputFile;
use super::spool::collect;
use super::stream::write_sparse;
use super::{target_size, WriteOptions, WriteReport};
use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::limits::MAX_VIRTUAL_SIZE;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Default payload block size: 32 MiB (what Hyper-V creates for dynamic disks).
pub const DEFAULT_BLOCK_SIZE: u64 = 32 * MIB;
/// Smallest and largest block sizes (2.6.2.1: 1 MiB to 256 MiB, a power of two).
pub const MIN_BLOCK_SIZE: u64 = MIB;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: u64 = 256 * MIB;
/// Logical sector size written (2.6.2.4).
pub const LOGICAL_SECTOR: u64 = 512;
/// Physical sector size written (2.6.2.5).
pub const PHYSICAL_SECTOR: u32 = 4096;
/// Granularity of the zero check inside a block.
const GRAIN: u64 = MIB;

const HEADER1_OFFSET: u64 = 64 * KIB;
const REGION_TABLE_SIZE: usize = 64 * 1024;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;
/// Offset of the first metadata item inside the metadata region (2.6.1: items
/// start at or after 64 KiB).
const METADATA_ITEMS_OFFSET: u32 = 64 * 1024;

/// BAT payload block states (2.5.1.1).
pub const PAYLOAD_BLOCK_NOT_PRESENT: u64 = 0;
/// See [`PAYLOAD_BLOCK_NOT_PRESENT`].
pub const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;

/// Region GUIDs (2.2.3.2).
pub const BAT_GUID: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
/// See [`BAT_GUID`].
pub const METADATA_GUID: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
/// Metadata item GUIDs (2.6.2).
pub const FILE_PARAMETERS_GUID: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
/// See [`FILE_PARAMETERS_GUID`].
pub const VIRTUAL_DISK_SIZE_GUID: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
/// See [`FILE_PARAMETERS_GUID`].
pub const PAGE83_DATA_GUID: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";
/// See [`FILE_PARAMETERS_GUID`].
pub const LOGICAL_SECTOR_SIZE_GUID: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";
/// See [`FILE_PARAMETERS_GUID`].
pub const PHYSICAL_SECTOR_SIZE_GUID: &str = "CDA348C7-445D-4471-9CC9-E9885251C556";

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC32C_TABLE: [u32; 256] = crc32c_table();

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and
/// final xor all ones), as VHDX checksums use (2.2.2: "CRC-32C").
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC32C_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8)
    })
}

/// A GUID written "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" in its on-disk
/// (Microsoft, mixed-endian) byte layout: the first three fields little-endian.
pub fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .collect::<Vec<u8>>()
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("0"), 16).unwrap_or(0))
        .collect();
    let mut rfc = [0u8; 16];
    rfc.copy_from_slice(&hex[..16]);
    ms_layout(rfc)
}

/// RFC 9562 byte order to the Microsoft on-disk layout.
pub fn ms_layout(mut g: [u8; 16]) -> [u8; 16] {
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

/// Chunk ratio (2.5): payload blocks described by one sector bitmap block.
pub fn chunk_ratio(block_size: u64) -> u64 {
    ((1u64 << 23) * LOGICAL_SECTOR) / block_size
}

/// BAT entries of a dynamic (non-differencing) disk (2.5).
pub fn total_bat_entries(size: u64, block_size: u64) -> u64 {
    let blocks = size.div_ceil(block_size);
    blocks + blocks.saturating_sub(1) / chunk_ratio(block_size)
}

fn header(seq: u64, file_write: [u8; 16], data_write: [u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    put(&mut b, 0, b"head");
    put(&mut b, 8, &seq.to_le_bytes());
    put(&mut b, 16, &file_write);
    put(&mut b, 32, &data_write);
    // 48..64 LogGuid: zero (no log to replay).
    put(&mut b, 64, &0u16.to_le_bytes()); // LogVersion
    put(&mut b, 66, &1u16.to_le_bytes()); // Version
    put(&mut b, 68, &(LOG_LENGTH as u32).to_le_bytes());
    put(&mut b, 72, &LOG_OFFSET.to_le_bytes());
    let c = crc32c(&b);
    put(&mut b, 4, &c.to_le_bytes());
    b
}

fn region_table(bat_length: u32) -> Vec<u8> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    put(&mut b, 0, b"regi");
    put(&mut b, 8, &2u32.to_le_bytes());
    let entries = [
        (BAT_GUID, BAT_OFFSET, bat_length),
        (METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH as u32),
    ];
    for (i, (g, off, len)) in entries.iter().enumerate() {
        let e = 16 + 32 * i;
        put(&mut b, e, &guid_bytes(g));
        put(&mut b, e + 16, &off.to_le_bytes());
        put(&mut b, e + 24, &len.to_le_bytes());
        put(&mut b, e + 28, &1u32.to_le_bytes()); // Required
    }
    let c = crc32c(&b);
    put(&mut b, 4, &c.to_le_bytes());
    b
}

/// The metadata region (2.6): table at 0, items from 64 KiB.
fn metadata_region(size: u64, block_size: u64, page83: [u8; 16]) -> Vec<u8> {
    const IS_VIRTUAL_DISK: u32 = 2;
    const IS_REQUIRED: u32 = 4;
    let mut file_params = Vec::new();
    file_params.extend_from_slice(&(block_size as u32).to_le_bytes());
    file_params.extend_from_slice(&0u32.to_le_bytes()); // not LeaveBlocksAllocated, no parent
    let items: [(&str, Vec<u8>, u32); 5] = [
        (FILE_PARAMETERS_GUID, file_params, IS_REQUIRED),
        (
            VIRTUAL_DISK_SIZE_GUID,
            size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            PAGE83_DATA_GUID,
            page83.to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            LOGICAL_SECTOR_SIZE_GUID,
            (LOGICAL_SECTOR as u32).to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            PHYSICAL_SECTOR_SIZE_GUID,
            PHYSICAL_SECTOR.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
    ];
    let mut b = vec![0u8; METADATA_LENGTH as usize];
    put(&mut b, 0, b"metadata");
    put(&mut b, 10, &(items.len() as u16).to_le_bytes());
    let mut data_off = METADATA_ITEMS_OFFSET;
    for (i, (g, data, flags)) in items.iter().enumerate() {
        let e = 32 + 32 * i;
        put(&mut b, e, &guid_bytes(g));
        put(&mut b, e + 16, &data_off.to_le_bytes());
        put(&mut b, e + 20, &(data.len() as u32).to_le_bytes());
        put(&mut b, e + 24, &flags.to_le_bytes());
        put(&mut b, data_off as usize, data);
        data_off += (data.len() as u32).next_multiple_of(8);
    }
    b
}

/// The `--block-size` to use, checked.
pub fn block_size(opts: &WriteOptions) -> Result<u64> {
    let bs = opts.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
        return Err(Error::invalid(format!(
            "--block-size {bs} is not valid for VHDX: it must be a power of two from 1M to 256M"
        )));
    }
    Ok(bs)
}

/// Write `src` as a dynamic VHDX.
pub fn write(
    src: &dyn BlockSource,
    mut out: OutputFile,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let block_size = block_size(opts)?;
    let wanted = target_size(src.size(), opts.size)?;
    let size = wanted
        .checked_next_multiple_of(LOGICAL_SECTOR)
        .ok_or_else(|| Error::invalid("size overflows"))?;
    if size > MAX_VIRTUAL_SIZE {
        return Err(Error::unsupported(format!(
            "a VHDX holds at most 64 TiB; this disk is {size} bytes"
        )));
    }
    if size == 0 {
        return Err(Error::invalid(
            "the disk is empty and a VHDX cannot be 0 bytes; give --size",
        ));
    }
    let mut notes = Vec::new();
    if size != wanted {
        notes.push(format!(
            "virtual size rounded up from {wanted} to {size} bytes (VHDX sizes are whole 512-byte sectors)"
        ));
    }
    let spool = collect(src, &out, GRAIN, None)?;
    let ratio = chunk_ratio(block_size);
    let entries = total_bat_entries(size, block_size);
    let bat_length = (entries * 8).next_multiple_of(MIB).max(MIB);
    let bat_length32 =
        u32::try_from(bat_length).map_err(|_| Error::invalid("VHDX BAT too large"))?;
    let data_start = BAT_OFFSET + bat_length;

    let grains_per_block = block_size / GRAIN;
    let mut present: Vec<u64> = spool
        .grains
        .iter()
        .map(|g| g.index / grains_per_block)
        .collect();
    present.dedup();
    let mut bat = vec![0u8; bat_length as usize];
    for (i, &blk) in present.iter().enumerate() {
        let file_off = data_start + i as u64 * block_size;
        let entry = (file_off / MIB) << 20 | PAYLOAD_BLOCK_FULLY_PRESENT;
        let at = ((blk + blk / ratio) * 8) as usize;
        put(&mut bat, at, &entry.to_le_bytes());
    }
    debug_assert_eq!(PAYLOAD_BLOCK_NOT_PRESENT, 0);

    let file_write = ms_layout(spool.guid(size, "vhdx FileWriteGuid"));
    let data_write = ms_layout(spool.guid(size, "vhdx DataWriteGuid"));
    let page83 = ms_layout(spool.guid(size, "vhdx Page83Data"));

    // File type identifier (2.2.1).
    let mut ident = vec![0u8; 64 * 1024];
    put(&mut ident, 0, b"vhdxfile");
    let creator: Vec<u8> = concat!("onramp ", env!("CARGO_PKG_VERSION"))
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    put(&mut ident, 8, &creator);
    out.write_owned(ident)?;
    let h1 = header(1, file_write, data_write);
    let h2 = header(2, file_write, data_write);
    out.write_owned(h1)?;
    out.skip_zeros(HEADER1_OFFSET - 4096)?;
    out.write_owned(h2)?;
    out.skip_zeros(HEADER1_OFFSET - 4096)?;
    let rt = region_table(bat_length32);
    out.write(&rt)?;
    out.write_owned(rt)?;
    out.skip_zeros(LOG_OFFSET - out.position())?;
    out.skip_zeros(LOG_LENGTH)?;
    write_sparse_here(&mut out, metadata_region(size, block_size, page83))?;
    write_sparse_here(&mut out, bat)?;
    debug_assert_eq!(out.position(), data_start);

    let mut reader = spool.reader()?;
    let mut grains = spool.grains.iter().peekable();
    for &blk in &present {
        for gi in blk * grains_per_block..(blk + 1) * grains_per_block {
            match grains.next_if(|g| g.index == gi) {
                Some(g) => {
                    let buf = reader.next(g)?;
                    write_sparse_here(&mut out, buf)?;
                }
                None => out.skip_zeros(GRAIN)?,
            }
        }
    }
    let output = out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes,
    })
}

fn write_sparse_here(out: &mut OutputFile, buf: Vec<u8>) -> Result<()> {
    let at = out.position();
    write_sparse(out, at, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn guid_layout() {
        assert_eq!(
            guid_bytes(BAT_GUID),
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
    }

    #[test]
    fn bat_entries() {
        assert_eq!(chunk_ratio(32 * MIB), 128);
        // 128 blocks: no bitmap entry needed between; 129 blocks: one.
        assert_eq!(total_bat_entries(128 * 32 * MIB, 32 * MIB), 128);
        assert_eq!(total_bat_entries(129 * 32 * MIB, 32 * MIB), 130);
    }
}
