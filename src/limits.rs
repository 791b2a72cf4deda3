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

/// Most logical partitions followed in an MBR extended-partition EBR chain: 128
/// (Linux's DOS partition parser stops at its partition-count limit, DISK_MAX_PARTS 256;
/// real disks have a handful).
pub const MAX_LOGICAL_PARTITIONS: usize = 128;

/// Largest GPT partition entry array read: 1 MiB (the UEFI minimum is 16 KiB,
/// 128 entries of 128 bytes; tools never write more than a few hundred entries).
pub const MAX_GPT_ENTRY_BYTES: u64 = 1 << 20;

/// Largest LVM2 metadata text parsed: 4 MiB (lvm2's default metadata area is
/// 1 MiB; `pvcreate --metadatasize` is rarely above a few MiB).
pub const MAX_LVM_METADATA_BYTES: u64 = 4 << 20;

/// Most tokens / nesting levels accepted in LVM metadata text: nesting 32 as
/// [`MAX_RECURSION_DEPTH`]; values per list 65536.
pub const MAX_LVM_LIST_ITEMS: usize = 65536;

/// Largest directory read into memory by a filesystem reader: 64 MiB
/// (ext4 directories with the largedir feature can reach 4 GiB in theory; real
/// system directories are a few MiB at most).
pub const MAX_DIR_BYTES: u64 = 64 << 20;

/// Most entries returned for one directory: 1,000,000.
pub const MAX_DIR_ENTRIES: usize = 1_000_000;

/// Deepest ext4 extent tree: 5 levels (Linux `EXT4_MAX_EXTENT_DEPTH`).
pub const MAX_EXT4_EXTENT_DEPTH: u16 = 5;

/// Most extents / block runs gathered for one file: 1,048,576.
pub const MAX_FILE_RUNS: usize = 1 << 20;

/// Longest symlink target read: 4096 bytes (Linux `PATH_MAX`).
pub const MAX_SYMLINK_BYTES: u64 = 4096;

/// Largest initramfs file read from a guest: 256 MiB (distribution initramfs
/// images are 10-150 MiB).
pub const MAX_INITRAMFS_BYTES: u64 = 256 << 20;

/// Most bytes decompressed from one initramfs: 1 GiB (entries are streamed and
/// their contents skipped, except for xz, which is decompressed into memory
/// up to [`MAX_INITRAMFS_BYTES`]).
pub const MAX_INITRAMFS_UNPACKED: u64 = 1 << 30;

/// Most cpio entries listed from one initramfs: 1,000,000.
pub const MAX_CPIO_ENTRIES: usize = 1_000_000;

/// Longest cpio entry name: 4096 bytes (Linux `PATH_MAX`, which the kernel's
/// initramfs unpacker also enforces).
pub const MAX_CPIO_NAME: u64 = 4096;

/// Largest text file read during guest inspection (os-release, fstab,
/// grub.cfg, dpkg status...): 64 MiB.
pub const MAX_GUEST_TEXT_BYTES: u64 = 64 << 20;
