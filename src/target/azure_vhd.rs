//! Azure's fixed VHD: the raw disk, a whole number of MiB, followed by the
//! 512-byte footer (disk type 2, data offset all ones).
//!
//! Creator application "win " (Hyper-V): every qemu since the size heuristics
//! were introduced takes `current_size` as the disk size for it, rather than
//! the CHS geometry (block/vpc.c, `vpc_ignore_current_size`), and it is what
//! Hyper-V — Azure's hypervisor — writes itself. The geometry is still
//! computed by the spec's algorithm for readers that want it.
//!
//! Determinism: the timestamp comes from SOURCE_DATE_EPOCH (else 2000-01-01);
//! the unique id is an XXH3-128 over the offset and the XXH3-128 of every
//! data piece that is not all zeros (hashed on the workers, in parallel),
//! with the RFC 9562 version 8 (custom) and variant bits set.

use super::output::OutputFile;
use super::raw::write_data;
use super::{target_size, WriteOptions, WriteReport};
use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::source::vhd::footer::{
    chs_geometry, DiskType, Footer, FIXED_DATA_OFFSET, VHD_EPOCH_UNIX,
};
use xxhash_rust::xxh3::Xxh3;

const MIB: u64 = 1 << 20;

/// `creator_application` written by onramp; see the module docs.
pub const CREATOR_APPLICATION: [u8; 4] = *b"win ";
/// `creator_version`: 10.0, as Hyper-V on Windows Server 2016 and later writes.
pub const CREATOR_VERSION: u32 = 0x000a_0000;
/// `creator_host_os`: "Wi2k" (Windows).
pub const CREATOR_HOST_OS: [u8; 4] = *b"Wi2k";

/// Build the fixed-disk footer for `size` bytes.
pub fn fixed_footer(size: u64, timestamp_unix: u64, unique_id: [u8; 16]) -> Footer {
    let (cylinders, heads, sectors_per_track) = chs_geometry(size / 512);
    let ts = timestamp_unix.saturating_sub(VHD_EPOCH_UNIX);
    Footer {
        features: 2,
        file_format_version: 0x0001_0000,
        data_offset: FIXED_DATA_OFFSET,
        time_stamp: u32::try_from(ts).unwrap_or(u32::MAX),
        creator_application: CREATOR_APPLICATION,
        creator_version: CREATOR_VERSION,
        creator_host_os: CREATOR_HOST_OS,
        original_size: size,
        current_size: size,
        cylinders,
        heads,
        sectors_per_track,
        disk_type: DiskType::Fixed,
        checksum: 0,
        unique_id,
        saved_state: 0,
    }
}

/// Round up to a whole MiB.
pub fn round_up_mib(n: u64) -> Result<u64> {
    n.div_ceil(MIB)
        .checked_mul(MIB)
        .ok_or_else(|| Error::invalid("size overflows"))
}

/// Write `src` as an Azure fixed VHD.
pub fn write(
    src: &dyn BlockSource,
    mut out: OutputFile,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let wanted = target_size(src.size(), opts.size)?;
    let size = round_up_mib(wanted)?;
    let mut notes = Vec::new();
    if size != wanted {
        notes.push(format!(
            "virtual size rounded up from {wanted} to {size} bytes (Azure needs a whole number of MiB)"
        ));
    }
    if size < 20 * MIB {
        notes.push(format!(
            "virtual size {size} bytes is below Azure's 20 MiB minimum; use --size 20M or more"
        ));
    }
    let mut id_hash = Xxh3::new();
    write_data(src, &mut out, size, Some(&mut id_hash))?;
    id_hash.update(&size.to_le_bytes());
    let mut unique_id = id_hash.digest128().to_be_bytes();
    unique_id[6] = (unique_id[6] & 0x0f) | 0x80;
    unique_id[8] = (unique_id[8] & 0x3f) | 0x80;
    let footer = fixed_footer(size, opts.timestamp, unique_id);
    out.write(&footer.to_bytes())?;
    let output = out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes,
    })
}
