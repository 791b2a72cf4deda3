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

/// Deepest XFS block-mapping B+tree walked, counting the root in the inode:
/// 9, the kernel's `XFS_BTREE_MAXLEVELS` ("max of all btrees",
/// fs/xfs/libxfs/xfs_btree.h).
pub const MAX_XFS_BMBT_LEVELS: usize = 9;

/// Most extent records of one XFS inode fork held in memory: 2^20 (32 MiB of
/// records). onramp's own bound; the format allows 2^31 - 1 (2^48 with nrext64).
pub const MAX_XFS_EXTENTS: u64 = 1 << 20;

/// Most entries returned for one XFS directory: 2^21. onramp's own bound
/// (a directory of 2 million names); the format has no practical limit.
pub const MAX_XFS_DIR_ENTRIES: usize = 1 << 21;

/// Most directory data-block bytes read for one XFS directory listing or
/// lookup: 1 GiB. onramp's bound; the format's data section is 32 GiB
/// (`XFS_DIR2_LEAF_OFFSET`).
pub const MAX_XFS_DIR_BYTES: u64 = 1 << 30;

/// Longest XFS symlink target: 1024 bytes (`XFS_SYMLINK_MAXLEN`,
/// fs/xfs/libxfs/xfs_format.h).
pub const XFS_SYMLINK_MAXLEN: u64 = 1024;

/// Most filesystem blocks of an XFS remote symlink: 3 (`XFS_SYMLINK_MAPS`,
/// fs/xfs/libxfs/xfs_symlink_remote.h).
pub const XFS_SYMLINK_MAPS: u64 = 3;
