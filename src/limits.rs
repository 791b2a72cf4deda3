//! Every bound onramp puts on values read from untrusted images, in one place.
//!
//! Each limit cites where its value comes from. Parsers check sizes and counts
//! read from disk against these before allocating or looping.

/// Largest virtual disk onramp accepts: 64 TiB (VHDX's spec maximum; qcow2 images
/// of qemu are capped lower in practice, Azure data disks at 32 TiB).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// Largest metadata table read into memory at once (qcow2 L1, VHD BAT, VHDX BAT,
/// VMDK grain directory): 32 MiB, qemu's `QCOW_MAX_L1_SIZE` for qcow2.
pub const MAX_TABLE_BYTES: u64 = 32 << 20;

/// Deepest chain of backing files / parents followed: 16 (issue 2; qemu has no
/// fixed limit, but real chains are a handful deep).
pub const MAX_BACKING_DEPTH: usize = 16;

/// Longest backing file name in a qcow2 header: 1023 bytes (qcow2 spec,
/// "backing_file_size ... must not exceed 1023").
pub const MAX_BACKING_NAME: u64 = 1023;

/// Largest header extension area / descriptor text parsed: 1 MiB.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Most decompressed bytes accepted from a `.gz`/`.xz`/`.zst` input: 4 TiB.
pub const MAX_DECOMPRESSED_BYTES: u64 = 4 << 40;

/// Deepest recursion in nested on-disk structures (registry cells, extent trees).
pub const MAX_RECURSION_DEPTH: usize = 32;

/// Size of the chunks the conversion engine reads and writes: 1 MiB.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Largest registry hive file read into memory: 512 MiB. The format's offsets
/// are 32-bit and Windows caps a hive near 2 GiB, but real SYSTEM and SOFTWARE
/// hives are well under 200 MiB; this keeps memory bounded.
pub const MAX_HIVE_BYTES: u64 = 512 << 20;

/// Most entries read from one NTFS `$I30` directory index: 4 Mi. Windows has
/// no small fixed cap, but real directories (WinSxS) hold ~100 000 entries;
/// this bounds a corrupt or cyclic index B-tree.
pub const MAX_NTFS_INDEX_ENTRIES: usize = 4 << 20;

/// Environment variable that overrides [`MAX_DECOMPRESSED_BYTES`] (bytes; for
/// tests and for hosts with less scratch space).
pub const MAX_DECOMPRESSED_ENV: &str = "ONRAMP_MAX_DECOMPRESSED_BYTES";

/// The decompression limit in force: [`MAX_DECOMPRESSED_ENV`] when set to a
/// whole number of bytes, else [`MAX_DECOMPRESSED_BYTES`]. Read here only.
pub fn max_decompressed_bytes() -> u64 {
    std::env::var(MAX_DECOMPRESSED_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(MAX_DECOMPRESSED_BYTES)
}

/// Deepest nesting of compressed inputs (a `.gz` of a `.gz` ...): 4. Real
/// images are compressed once; a GCE tar.gz counts as one level.
pub const MAX_COMPRESSION_DEPTH: usize = 4;

/// Most sparse map entries accepted in a GNU tar member: 2 Mi (32 MiB of
/// (offset, length) pairs, the [`MAX_TABLE_BYTES`] budget).
pub const MAX_TAR_SPARSE_ENTRIES: usize = 2 << 20;
