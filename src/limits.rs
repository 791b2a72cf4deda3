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
/// their contents skipped; lz4 legacy blocks are decompressed into memory up to
/// [`MAX_INITRAMFS_BYTES`]).
pub const MAX_INITRAMFS_UNPACKED: u64 = 1 << 30;

/// Most cpio entries listed from one initramfs: 1,000,000.
pub const MAX_CPIO_ENTRIES: usize = 1_000_000;

/// Longest cpio entry name: 4096 bytes (Linux `PATH_MAX`, which the kernel's
/// initramfs unpacker also enforces).
pub const MAX_CPIO_NAME: u64 = 4096;

/// Largest text file read during guest inspection (os-release, fstab,
/// grub.cfg, dpkg status...): 64 MiB.
pub const MAX_GUEST_TEXT_BYTES: u64 = 64 << 20;
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
/// Largest VMDK grain: 0x200000 sectors (1 GiB), qemu's vmdk driver bound
/// ("Invalid granularity, image may be corrupt"). The VMDK spec's grains are
/// 8 to 128 sectors in practice.
pub const MAX_VMDK_GRAIN_SECTORS: u64 = 0x20_0000;

/// Most grain table entries per grain table: 512 (VMDK spec 1.1 "Hosted
/// Sparse Extent Header": numGTEsPerGT is 512; qemu refuses more with
/// "L2 table size too big").
pub const MAX_VMDK_GTES_PER_GT: u32 = 512;

/// Most extents in one VMDK descriptor: 4096 (8 TiB, VMware Workstation's
/// largest virtual disk, in twoGbMaxExtent* 2 GiB pieces).
pub const MAX_VMDK_EXTENTS: usize = 4096;

/// Largest VDI block: 64 MiB (VirtualBox uses 1 MiB, qemu reads only 1 MiB).
pub const MAX_VDI_BLOCK_BYTES: u64 = 64 << 20;

/// Largest OVF descriptor read from an OVA: 4 MiB (real descriptors are tens
/// of KiB; DSP0243 sets no bound).
pub const MAX_OVF_BYTES: u64 = 4 << 20;

/// Largest OVA manifest (.mf) read: 1 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Most members walked in an OVA tar archive: 4096.
pub const MAX_TAR_MEMBERS: usize = 4096;

/// Largest GNU long-name ('L') or pax ('x') extended header read: 64 KiB
/// (Linux PATH_MAX is 4096; pax headers hold a few records).
pub const MAX_TAR_EXT_HEADER: u64 = 64 << 10;

/// Largest grain of a compressed (streamOptimized) VMDK: 16 MiB, the buffer
/// one grain decompresses into (the spec's grains are 64 KiB; bounding this
/// keeps a hostile grainSize from allocating gigabytes per read).
pub const MAX_VMDK_COMPRESSED_GRAIN_BYTES: u64 = 16 << 20;
/// Largest qcow2 refcount table read: 8 MiB, qemu's `QCOW_MAX_REFTABLE_SIZE`
/// (block/qcow2.h; qcow2 spec "qemu has an implementation limit of 8 MB").
pub const MAX_QCOW2_REFTABLE_BYTES: u64 = 8 << 20;

/// Largest qcow2 L1 table read: 32 MiB, qemu's `QCOW_MAX_L1_SIZE` (block/qcow2.h).
pub const MAX_QCOW2_L1_BYTES: u64 = MAX_TABLE_BYTES;

/// Most qcow2 internal snapshots accepted: 65536, qemu's `QCOW_MAX_SNAPSHOTS`.
pub const MAX_QCOW2_SNAPSHOTS: u32 = 65536;

/// Largest qcow2 snapshot table: 64 MiB, qemu's `QCOW_MAX_SNAPSHOTS_SIZE`
/// (1 KiB per entry on average times `QCOW_MAX_SNAPSHOTS`).
pub const MAX_QCOW2_SNAPSHOT_TABLE_BYTES: u64 = 1024 * 65536;

/// Largest extra data in one qcow2 snapshot table entry: 1 KiB, qemu's
/// `QCOW_MAX_SNAPSHOT_EXTRA_DATA`.
pub const MAX_QCOW2_SNAPSHOT_EXTRA_DATA: u32 = 1024;

/// Memory for cached, decoded qcow2 L2 tables per image: 32 MiB, qemu's
/// `DEFAULT_L2_CACHE_MAX_SIZE` on Linux (block/qcow2.h), which keeps the
/// whole process under the 128 MiB target of issue 5.
pub const QCOW2_L2_CACHE_BYTES: u64 = 32 << 20;
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

/// Longest XFS extended attribute value: 64 KiB (`XFS_XATTR_SIZE_MAX`,
/// fs/xfs/libxfs/xfs_da_format.h, equal to Linux's `XATTR_SIZE_MAX`).
pub const XFS_XATTR_SIZE_MAX: usize = 1 << 16;

/// Longest XFS symlink target: 1024 bytes (`XFS_SYMLINK_MAXLEN`,
/// fs/xfs/libxfs/xfs_format.h).
pub const XFS_SYMLINK_MAXLEN: u64 = 1024;

/// Most filesystem blocks of an XFS remote symlink: 3 (`XFS_SYMLINK_MAPS`,
/// fs/xfs/libxfs/xfs_symlink_remote.h).
pub const XFS_SYMLINK_MAPS: u64 = 3;

/// Largest agent bundle or .deb read, and most bytes unpacked from one
/// (all members together): 256 MiB. onramp's own bound; agents are a few MiB
/// (Debian's waagent .deb is about 0.3 MiB, its data about 2 MiB).
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// Most members in one bundle tar or .deb data/control tar: 65536. onramp's
/// own bound (a large Debian package such as linux-image holds ~6000 files).
pub const MAX_BUNDLE_MEMBERS: usize = 65536;

/// Most members in a .deb's ar archive: 16 (deb(5) requires exactly three:
/// debian-binary, control.tar.*, data.tar.*; later ones are ignored by dpkg
/// but still bounded here).
pub const MAX_DEB_AR_MEMBERS: usize = 16;

/// Largest rpm package database (`rpmdb.sqlite`) read into memory: 512 MiB.
/// onramp's own bound; a RHEL 9 server's database is 5-40 MiB (about 60 KiB
/// per installed package).
pub const MAX_RPMDB_BYTES: u64 = 512 << 20;

/// Deepest SQLite table b-tree walked: 64 levels. onramp's own bound: with
/// 512-byte pages and the smallest interior fan-out a 2^64-row table is far
/// shallower (sqlite.org/fileformat2.html §1.6; SQLite itself stops at 20,
/// `BTCURSOR_MAX_DEPTH` in btreeInt.h).
pub const MAX_SQLITE_BTREE_DEPTH: usize = 64;

/// Most rows visited in one SQLite table: 2^22. onramp's own bound; an rpm
/// database holds one row per package (a few thousand).
pub const MAX_SQLITE_ROWS: usize = 1 << 22;

/// Largest SQLite record payload assembled (local part plus overflow chain):
/// 1 GB, SQLite's default `SQLITE_MAX_LENGTH` (sqlite.org/limits.html); it is
/// also never more than the file holds.
pub const MAX_SQLITE_PAYLOAD_BYTES: u64 = 1_000_000_000;

/// Most columns decoded from one SQLite record: 32767, SQLite's largest
/// `SQLITE_MAX_COLUMN` (sqlite.org/limits.html).
pub const MAX_SQLITE_COLUMNS: usize = 32767;

/// Most index entries in one rpm header: 65535 (rpm's `hdrchkTags`,
/// lib/header_internal.h: "a limit of 65K tags").
pub const MAX_RPM_HEADER_TAGS: u32 = 0xffff;

/// Largest data store of one rpm header: 16 MiB - 1 (rpm's `hdrchkData`,
/// lib/header_internal.h, rejects sizes with any of the top 8 bits set).
pub const MAX_RPM_HEADER_DATA: u32 = 0x00ff_ffff;

/// Most "skipped package" messages kept from one rpm database: 16. onramp's
/// own bound (the count of skipped rows is always reported).
pub const MAX_RPMDB_SKIP_MESSAGES: usize = 16;

/// Largest SELinux `file_contexts` text read from a guest (and each of its
/// `.homedirs`, `.local`, `.subs`, `.subs_dist` companions): 16 MiB (the
/// targeted policy of RHEL 9 ships about 0.5 MiB of file_contexts).
pub const MAX_FILE_CONTEXTS_BYTES: u64 = 16 << 20;
