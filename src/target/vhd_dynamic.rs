//! Dynamic VHD output (Microsoft "Virtual Hard Disk Image Format
//! Specification" v1.0: "Hard Disk Footer Format", "Dynamic Disk Header
//! Format", "Block Allocation Table and Data Blocks").
//!
//! Layout, written front to back (see [`super::spool`] for the two phases):
//!
//! | offset | what |
//! |---|---|
//! | 0 | copy of the footer (`data_offset` = 512) |
//! | 512 | dynamic disk header (1024 bytes, cookie `cxsparse`) |
//! | 1536 | BAT: one big-endian u32 per 2 MiB block, the block's sector offset or `0xFFFFFFFF`; padded with `0xFF` to a sector |
//! | … | zero padding so that every block's data starts on a 4 KiB boundary |
//! | each present block | 512-byte sector bitmap (all ones) + 2 MiB of data |
//! | end | the footer |
//!
//! Blocks whose bytes are all zero are not allocated. The virtual size is the
//! requested size rounded up to a whole sector (VHD sizes count sectors);
//! the creator application is "win " so that qemu (block/vpc.c) and Hyper-V
//! take `current_size` as the size (see [`super::azure_vhd`]). Timestamp from
//! SOURCE_DATE_EPOCH; unique id derived from the content
//! ([`Spool::guid`](super::spool::Spool::guid)).

use super::azure_vhd::{CREATOR_APPLICATION, CREATOR_HOST_OS, CREATOR_VERSION};
use super::output::OutputFile;
use super::spool::collect;
use super::stream::write_sparse;
use super::{target_size, WriteOptions, WriteReport};
use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::source::vhd::footer::{chs_geometry, DiskType, Footer, VHD_EPOCH_UNIX};

/// Block size: 2 MiB, the spec's default and what Hyper-V and qemu write.
pub const BLOCK_SIZE: u64 = 2 << 20;
/// Sector size of the format.
const SECTOR: u64 = 512;
/// Size of a block's sector bitmap: one bit per sector of the block, rounded
/// to a sector (2 MiB / 512 / 8 = 512 bytes).
const BITMAP_BYTES: u64 = BLOCK_SIZE / SECTOR / 8;
/// Granularity of the zero check inside a block (1 MiB; two per block).
const GRAIN: u64 = 1 << 20;
/// Dynamic disk header size (spec: 1024 bytes).
pub const HEADER_SIZE: usize = 1024;
/// Dynamic header cookie.
pub const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// Dynamic header version 1.0.
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// Largest dynamic VHD: 2040 GiB (spec, "Dynamic Disk Header Format" /
/// Hyper-V's limit; block sector offsets are 32-bit).
pub const MAX_SIZE: u64 = 2040 << 30;

/// The dynamic disk header for a disk of `max_table_entries` blocks whose BAT
/// starts at `table_offset`.
pub fn dynamic_header(table_offset: u64, max_table_entries: u32) -> [u8; HEADER_SIZE] {
    let mut b = [0u8; HEADER_SIZE];
    b[0..8].copy_from_slice(HEADER_COOKIE);
    b[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    b[16..24].copy_from_slice(&table_offset.to_be_bytes());
    b[24..28].copy_from_slice(&HEADER_VERSION.to_be_bytes());
    b[28..32].copy_from_slice(&max_table_entries.to_be_bytes());
    b[32..36].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    let sum = b
        .iter()
        .fold(0u32, |acc, &x| acc.wrapping_add(u32::from(x)));
    b[36..40].copy_from_slice(&(!sum).to_be_bytes());
    b
}

/// Write `src` as a dynamic VHD.
pub fn write(
    src: &dyn BlockSource,
    mut out: OutputFile,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let wanted = target_size(src.size(), opts.size)?;
    let size = wanted
        .checked_next_multiple_of(SECTOR)
        .ok_or_else(|| Error::invalid("size overflows"))?;
    if size > MAX_SIZE {
        return Err(Error::unsupported(format!(
            "a dynamic VHD holds at most 2040 GiB; this disk is {size} bytes (use --to vhdx)"
        )));
    }
    let mut notes = Vec::new();
    if size != wanted {
        notes.push(format!(
            "virtual size rounded up from {wanted} to {size} bytes (VHD sizes are whole 512-byte sectors)"
        ));
    }
    let spool = collect(src, &out, GRAIN, None)?;
    let entries = size.div_ceil(BLOCK_SIZE);
    let max_table_entries =
        u32::try_from(entries).map_err(|_| Error::invalid("too many VHD blocks"))?;
    let table_offset = 3 * SECTOR;
    let bat_bytes = (entries * 4).next_multiple_of(SECTOR);
    // First bitmap at 4 KiB - 512 (mod 4 KiB), so every block's data is 4 KiB aligned.
    let first_block = (table_offset + bat_bytes + SECTOR).next_multiple_of(4096) - SECTOR;

    // Present blocks, in order, and the BAT.
    let grains_per_block = BLOCK_SIZE / GRAIN;
    let mut present: Vec<u64> = spool
        .grains
        .iter()
        .map(|g| g.index / grains_per_block)
        .collect();
    present.dedup();
    let mut bat =
        vec![0xffu8; usize::try_from(bat_bytes).map_err(|_| Error::invalid("BAT too large"))?];
    let stride = BITMAP_BYTES + BLOCK_SIZE;
    for (i, &blk) in present.iter().enumerate() {
        let sector = (first_block + i as u64 * stride) / SECTOR;
        let sector =
            u32::try_from(sector).map_err(|_| Error::invalid("VHD block offset beyond 2 TiB"))?;
        let at = usize::try_from(blk * 4).map_err(|_| Error::invalid("BAT too large"))?;
        bat[at..at + 4].copy_from_slice(&sector.to_be_bytes());
    }

    let (cylinders, heads, sectors_per_track) = chs_geometry(size / SECTOR);
    let footer = Footer {
        features: 2,
        file_format_version: 0x0001_0000,
        data_offset: SECTOR,
        time_stamp: u32::try_from(opts.timestamp.saturating_sub(VHD_EPOCH_UNIX))
            .unwrap_or(u32::MAX),
        creator_application: CREATOR_APPLICATION,
        creator_version: CREATOR_VERSION,
        creator_host_os: CREATOR_HOST_OS,
        original_size: size,
        current_size: size,
        cylinders,
        heads,
        sectors_per_track,
        disk_type: DiskType::Dynamic,
        checksum: 0,
        unique_id: spool.guid(size, "vhd unique_id"),
        saved_state: 0,
    }
    .to_bytes();

    out.write(&footer)?;
    out.write(&dynamic_header(table_offset, max_table_entries))?;
    out.write_owned(bat)?;
    out.skip_zeros(first_block - out.position())?;
    let bitmap = vec![0xffu8; BITMAP_BYTES as usize];
    let mut reader = spool.reader()?;
    let mut grains = spool.grains.iter().peekable();
    for &blk in &present {
        out.write(&bitmap)?;
        for gi in blk * grains_per_block..(blk + 1) * grains_per_block {
            match grains.next_if(|g| g.index == gi) {
                Some(g) => {
                    let buf = reader.next(g)?;
                    let at = out.position();
                    write_sparse(&mut out, at, buf)?;
                }
                None => out.skip_zeros(GRAIN)?,
            }
        }
    }
    out.write(&footer)?;
    let output = out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes,
    })
}
