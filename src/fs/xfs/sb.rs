//! The XFS superblock (`struct xfs_dsb`, sector 0 of allocation group 0) and
//! the geometry derived from it: block, sector, inode and directory block
//! sizes, allocation groups, and how inode and block numbers map to bytes.
//!
//! Source: "XFS Algorithms & Data Structures", chapter "Allocation Groups /
//! Superblocks"; kernel `fs/xfs/libxfs/xfs_format.h` (layout, feature bits)
//! and `xfs_sb.c` (`xfs_validate_sb_common`, the checks mirrored here).

use super::buf::Buf;
use super::crc;
use crate::error::{Error, Result};

/// `XFS_SB_MAGIC`: "XFSB".
pub const XFS_SB_MAGIC: u32 = 0x5846_5342;
/// Byte offset of `sb_crc` in the superblock (`XFS_SB_CRC_OFF`).
pub const XFS_SB_CRC_OFF: usize = 224;
/// Bytes of the superblock fields parsed here (through `sb_meta_uuid`).
pub const XFS_SB_PARSED_LEN: usize = 264;

/// `XFS_SB_VERSION_NUMBITS`: low 4 bits of `sb_versionnum` hold the version.
pub const XFS_SB_VERSION_NUMBITS: u16 = 0x000f;
/// `XFS_SB_VERSION_SHAREDBIT`: never supported by Linux.
pub const XFS_SB_VERSION_SHAREDBIT: u16 = 0x0200;
/// `XFS_SB_VERSION_DIRV2BIT`: version 2 directories (required).
pub const XFS_SB_VERSION_DIRV2BIT: u16 = 0x2000;
/// `XFS_SB_VERSION_BORGBIT`: ASCII case-insensitive names.
pub const XFS_SB_VERSION_BORGBIT: u16 = 0x4000;
/// `XFS_SB_VERSION_MOREBITSBIT`: `sb_features2` is valid.
pub const XFS_SB_VERSION_MOREBITSBIT: u16 = 0x8000;
/// `XFS_SB_VERSION_EXTFLGBIT`: unwritten extent flag in extent records.
pub const XFS_SB_VERSION_EXTFLGBIT: u16 = 0x1000;

/// `sb_features2` bits known for v4 (`XFS_SB_VERSION2_OKBITS`: LAZYSBCOUNT,
/// ATTR2, PROJID32, FTYPE).
pub const XFS_SB_VERSION2_OKBITS: u32 = 0x0000_0002 | 0x0000_0008 | 0x0000_0080 | 0x0000_0200;
/// `XFS_SB_VERSION2_FTYPE`: file type in directory entries (v4).
pub const XFS_SB_VERSION2_FTYPE: u32 = 0x0000_0200;

/// Incompatible v5 features (`XFS_SB_FEAT_INCOMPAT_*`).
pub const XFS_SB_FEAT_INCOMPAT_FTYPE: u32 = 1 << 0;
/// Sparse inode chunks.
pub const XFS_SB_FEAT_INCOMPAT_SPINODES: u32 = 1 << 1;
/// Metadata UUID differs from the user-visible UUID.
pub const XFS_SB_FEAT_INCOMPAT_META_UUID: u32 = 1 << 2;
/// 64-bit nanosecond timestamps.
pub const XFS_SB_FEAT_INCOMPAT_BIGTIME: u32 = 1 << 3;
/// `xfs_repair` must run before mounting.
pub const XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
/// 64-bit data fork extent counters.
pub const XFS_SB_FEAT_INCOMPAT_NREXT64: u32 = 1 << 5;
/// File range exchange log items (no on-disk change outside the log).
pub const XFS_SB_FEAT_INCOMPAT_EXCHRANGE: u32 = 1 << 6;
/// Parent pointers (extended attributes; directories unchanged).
pub const XFS_SB_FEAT_INCOMPAT_PARENT: u32 = 1 << 7;

/// Read-only-compatible v5 features (`XFS_SB_FEAT_RO_COMPAT_*`): free inode
/// B+tree, reverse-mapping B+tree, reference-count B+tree (reflink), inode
/// B+tree block counters. They do not change how files are read, so the
/// reader accepts any ro_compat bits; a writer must refuse the ones it does
/// not maintain.
pub const XFS_SB_FEAT_RO_COMPAT_FINOBT: u32 = 1 << 0;
/// See [`XFS_SB_FEAT_RO_COMPAT_FINOBT`].
pub const XFS_SB_FEAT_RO_COMPAT_RMAPBT: u32 = 1 << 1;
/// See [`XFS_SB_FEAT_RO_COMPAT_FINOBT`].
pub const XFS_SB_FEAT_RO_COMPAT_REFLINK: u32 = 1 << 2;
/// See [`XFS_SB_FEAT_RO_COMPAT_FINOBT`].
pub const XFS_SB_FEAT_RO_COMPAT_INOBTCNT: u32 = 1 << 3;

/// Incompatible features this reader understands.
pub const SUPPORTED_INCOMPAT: u32 = XFS_SB_FEAT_INCOMPAT_FTYPE
    | XFS_SB_FEAT_INCOMPAT_SPINODES
    | XFS_SB_FEAT_INCOMPAT_META_UUID
    | XFS_SB_FEAT_INCOMPAT_BIGTIME
    | XFS_SB_FEAT_INCOMPAT_NREXT64
    | XFS_SB_FEAT_INCOMPAT_EXCHRANGE
    | XFS_SB_FEAT_INCOMPAT_PARENT;

/// Name of an incompatible feature bit, for error messages.
pub fn incompat_name(bit: u32) -> &'static str {
    match bit {
        0 => "ftype",
        1 => "sparse inodes",
        2 => "meta_uuid",
        3 => "bigtime",
        4 => "needsrepair",
        5 => "nrext64",
        6 => "exchange-range",
        7 => "parent pointers",
        8 => "metadir",
        9 => "zoned",
        10 => "zone gaps",
        _ => "unknown",
    }
}

/// Smallest and largest filesystem block (`XFS_MIN_BLOCKSIZE`, `XFS_MAX_BLOCKSIZE`).
pub const XFS_MIN_BLOCKSIZE: u32 = 512;
/// See [`XFS_MIN_BLOCKSIZE`].
pub const XFS_MAX_BLOCKSIZE: u32 = 65536;
/// Smallest v5 (CRC) block size (`XFS_MIN_CRC_BLOCKSIZE`).
pub const XFS_MIN_CRC_BLOCKSIZE: u32 = 1024;
/// Sector size bounds (`XFS_MIN_SECTORSIZE`, `XFS_MAX_SECTORSIZE`).
pub const XFS_MIN_SECTORSIZE: u16 = 512;
/// See [`XFS_MIN_SECTORSIZE`].
pub const XFS_MAX_SECTORSIZE: u16 = 32768;
/// Inode size bounds (`XFS_DINODE_MIN_SIZE`, `XFS_DINODE_MAX_SIZE`).
pub const XFS_DINODE_MIN_SIZE: u16 = 256;
/// See [`XFS_DINODE_MIN_SIZE`].
pub const XFS_DINODE_MAX_SIZE: u16 = 2048;
/// Largest directory block (`XFS_MAX_BLOCKSIZE`, the dir2 limit).
pub const XFS_DIR2_MAX_BLOCKSIZE: u32 = 65536;

/// The superblock fields onramp reads, named as in `struct xfs_dsb`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Superblock {
    pub sb_magicnum: u32,
    pub sb_blocksize: u32,
    pub sb_dblocks: u64,
    pub sb_rblocks: u64,
    pub sb_uuid: [u8; 16],
    pub sb_logstart: u64,
    pub sb_rootino: u64,
    pub sb_agblocks: u32,
    pub sb_agcount: u32,
    pub sb_logblocks: u32,
    pub sb_versionnum: u16,
    pub sb_sectsize: u16,
    pub sb_inodesize: u16,
    pub sb_inopblock: u16,
    pub sb_fname: [u8; 12],
    pub sb_blocklog: u8,
    pub sb_sectlog: u8,
    pub sb_inodelog: u8,
    pub sb_inopblog: u8,
    pub sb_agblklog: u8,
    pub sb_inprogress: u8,
    pub sb_icount: u64,
    pub sb_dirblklog: u8,
    pub sb_features2: u32,
    pub sb_features_compat: u32,
    pub sb_features_ro_compat: u32,
    pub sb_features_incompat: u32,
    pub sb_features_log_incompat: u32,
    pub sb_crc: u32,
    pub sb_spino_align: u32,
    pub sb_lsn: u64,
    pub sb_meta_uuid: [u8; 16],
}

const SB: &str = "xfs superblock";

impl Superblock {
    /// Parse the fields from the first sector (at least 264 bytes). No
    /// validation beyond bounds; see [`Superblock::validate`].
    pub fn parse(sector: &[u8]) -> Result<Self> {
        let b = Buf::new(sector, SB, 0);
        let mut fname = [0u8; 12];
        fname.copy_from_slice(b.bytes(108, 12, "sb_fname")?);
        Ok(Superblock {
            sb_magicnum: b.u32(0, "sb_magicnum")?,
            sb_blocksize: b.u32(4, "sb_blocksize")?,
            sb_dblocks: b.u64(8, "sb_dblocks")?,
            sb_rblocks: b.u64(16, "sb_rblocks")?,
            sb_uuid: b.uuid(32, "sb_uuid")?,
            sb_logstart: b.u64(48, "sb_logstart")?,
            sb_rootino: b.u64(56, "sb_rootino")?,
            sb_agblocks: b.u32(84, "sb_agblocks")?,
            sb_agcount: b.u32(88, "sb_agcount")?,
            sb_logblocks: b.u32(96, "sb_logblocks")?,
            sb_versionnum: b.u16(100, "sb_versionnum")?,
            sb_sectsize: b.u16(102, "sb_sectsize")?,
            sb_inodesize: b.u16(104, "sb_inodesize")?,
            sb_inopblock: b.u16(106, "sb_inopblock")?,
            sb_fname: fname,
            sb_blocklog: b.u8(120, "sb_blocklog")?,
            sb_sectlog: b.u8(121, "sb_sectlog")?,
            sb_inodelog: b.u8(122, "sb_inodelog")?,
            sb_inopblog: b.u8(123, "sb_inopblog")?,
            sb_agblklog: b.u8(124, "sb_agblklog")?,
            sb_inprogress: b.u8(126, "sb_inprogress")?,
            sb_icount: b.u64(128, "sb_icount")?,
            sb_dirblklog: b.u8(192, "sb_dirblklog")?,
            sb_features2: b.u32(200, "sb_features2")?,
            sb_features_compat: b.u32(208, "sb_features_compat")?,
            sb_features_ro_compat: b.u32(212, "sb_features_ro_compat")?,
            sb_features_incompat: b.u32(216, "sb_features_incompat")?,
            sb_features_log_incompat: b.u32(220, "sb_features_log_incompat")?,
            sb_crc: u32::from_le_bytes(
                <[u8; 4]>::try_from(b.bytes(XFS_SB_CRC_OFF, 4, "sb_crc")?)
                    .map_err(|_| b.corrupt(XFS_SB_CRC_OFF, "sb_crc", 4, "?"))?,
            ),
            sb_spino_align: b.u32(228, "sb_spino_align")?,
            sb_lsn: b.u64(240, "sb_lsn")?,
            sb_meta_uuid: b.uuid(248, "sb_meta_uuid")?,
        })
    }

    /// The version number (4 or 5).
    pub fn version(&self) -> u16 {
        self.sb_versionnum & XFS_SB_VERSION_NUMBITS
    }

    /// True for v5 (CRC-enabled) filesystems.
    pub fn is_v5(&self) -> bool {
        self.version() == 5
    }
}

/// The validated geometry, in plain units. Built by [`Geometry::from_sb`].
#[derive(Debug, Clone)]
pub struct Geometry {
    /// The raw superblock.
    pub sb: Superblock,
    /// v5 (CRCs, v3 inodes, self-describing metadata).
    pub v5: bool,
    /// Filesystem block size in bytes, and its log2.
    pub block_size: u32,
    /// log2 of `block_size`.
    pub block_log: u32,
    /// Inode size in bytes.
    pub inode_size: u32,
    /// log2 of inodes per block.
    pub inopb_log: u32,
    /// log2 of the AG size rounded up (the AG block number width).
    pub agblk_log: u32,
    /// Blocks per allocation group.
    pub ag_blocks: u32,
    /// Number of allocation groups.
    pub ag_count: u32,
    /// Data blocks in the filesystem.
    pub data_blocks: u64,
    /// Directory block size in bytes (`block_size << sb_dirblklog`).
    pub dir_block_size: u32,
    /// log2 of filesystem blocks per directory block.
    pub dir_blk_log: u32,
    /// Directory entries carry a file type byte.
    pub has_ftype: bool,
    /// Extent records may carry the unwritten flag.
    pub has_extflg: bool,
    /// Inodes may use 64-bit nanosecond timestamps.
    pub has_bigtime: bool,
    /// Inodes may use 64-bit extent counters.
    pub has_nrext64: bool,
    /// UUID stamped into v5 metadata blocks.
    pub meta_uuid: [u8; 16],
}

fn log2_exact(v: u64) -> Option<u32> {
    if v.is_power_of_two() {
        Some(v.trailing_zeros())
    } else {
        None
    }
}

impl Geometry {
    /// Read, checksum (v5) and validate the superblock at byte 0 of `read`'s
    /// device, whose size is `device_size` bytes.
    pub fn read(read: &dyn Fn(u64, &mut [u8]) -> Result<()>, device_size: u64) -> Result<Self> {
        let mut first = vec![0u8; usize::from(XFS_MIN_SECTORSIZE)];
        read(0, &mut first)?;
        let sb = Superblock::parse(&first)?;
        let b = Buf::new(&first, SB, 0);
        if sb.sb_magicnum != XFS_SB_MAGIC {
            return Err(b.corrupt(
                0,
                "sb_magicnum",
                "0x58465342 (XFSB)",
                format!("{:#x}", sb.sb_magicnum),
            ));
        }
        let ss = sb.sb_sectsize;
        if !(XFS_MIN_SECTORSIZE..=XFS_MAX_SECTORSIZE).contains(&ss) || !ss.is_power_of_two() {
            return Err(b.corrupt(102, "sb_sectsize", "a power of two in 512..=32768", ss));
        }
        let mut sector = vec![0u8; usize::from(ss)];
        read(0, &mut sector)?;
        if sb.is_v5() {
            crc::verify(&sector, XFS_SB_CRC_OFF, SB, "sb_crc", 0)?;
        }
        let sb = Superblock::parse(&sector)?;
        Self::from_sb(sb, device_size)
    }

    /// Validate a parsed superblock (`xfs_validate_sb_common` and the
    /// feature checks of `xfs_sb_good_version`).
    pub fn from_sb(sb: Superblock, device_size: u64) -> Result<Self> {
        let c = |off: usize,
                 field: &str,
                 expected: &dyn std::fmt::Display,
                 found: &dyn std::fmt::Display| {
            Error::corrupt(SB, field, u64::try_from(off).unwrap_or(0), expected, found)
        };
        let version = sb.version();
        match version {
            4 => {
                if sb.sb_versionnum & XFS_SB_VERSION_DIRV2BIT == 0 {
                    return Err(Error::unsupported(
                        "xfs: version 4 superblock without version 2 directories (DIRV2BIT clear) is not supported",
                    ));
                }
                if sb.sb_versionnum & XFS_SB_VERSION_SHAREDBIT != 0 {
                    return Err(Error::unsupported(
                        "xfs: sb_versionnum has the SHAREDBIT (0x0200) feature, which Linux never supported",
                    ));
                }
                if sb.sb_versionnum & XFS_SB_VERSION_MOREBITSBIT != 0 {
                    let unknown = sb.sb_features2 & !XFS_SB_VERSION2_OKBITS;
                    if unknown != 0 {
                        return Err(Error::unsupported(format!(
                            "xfs: unknown version 4 feature bits {unknown:#x} in sb_features2"
                        )));
                    }
                }
            }
            5 => {
                let unknown = sb.sb_features_incompat & !SUPPORTED_INCOMPAT;
                if unknown != 0 {
                    let bit = unknown.trailing_zeros();
                    return Err(Error::unsupported(format!(
                        "xfs: incompatible feature bit {bit} ({}, mask {unknown:#x} in sb_features_incompat) is not supported",
                        incompat_name(bit)
                    )));
                }
            }
            v => return Err(c(100, "sb_versionnum", &"version 4 or 5", &v)),
        }
        if sb.sb_versionnum & XFS_SB_VERSION_BORGBIT != 0 {
            // Case-insensitive lookup is not implemented; names still read fine,
            // but exact-match lookups might miss. Refuse clearly instead.
            return Err(Error::unsupported(
                "xfs: ASCII case-insensitive directories (BORGBIT) are not supported",
            ));
        }
        let bs = sb.sb_blocksize;
        let min_bs = if version == 5 {
            XFS_MIN_CRC_BLOCKSIZE
        } else {
            XFS_MIN_BLOCKSIZE
        };
        let block_log = log2_exact(u64::from(bs))
            .filter(|_| (min_bs..=XFS_MAX_BLOCKSIZE).contains(&bs))
            .ok_or_else(|| {
                c(
                    4,
                    "sb_blocksize",
                    &format!("a power of two in {min_bs}..=65536"),
                    &bs,
                )
            })?;
        if u32::from(sb.sb_blocklog) != block_log {
            return Err(c(120, "sb_blocklog", &block_log, &sb.sb_blocklog));
        }
        let ss = sb.sb_sectsize;
        let sect_log = log2_exact(u64::from(ss))
            .filter(|_| {
                (XFS_MIN_SECTORSIZE..=XFS_MAX_SECTORSIZE).contains(&ss) && u32::from(ss) <= bs
            })
            .ok_or_else(|| {
                c(
                    102,
                    "sb_sectsize",
                    &"a power of two in 512..=32768, at most the block size",
                    &ss,
                )
            })?;
        if u32::from(sb.sb_sectlog) != sect_log {
            return Err(c(121, "sb_sectlog", &sect_log, &sb.sb_sectlog));
        }
        let is = sb.sb_inodesize;
        let min_is = if version == 5 {
            512
        } else {
            XFS_DINODE_MIN_SIZE
        };
        let inode_log = log2_exact(u64::from(is))
            .filter(|_| (min_is..=XFS_DINODE_MAX_SIZE).contains(&is) && u32::from(is) <= bs)
            .ok_or_else(|| {
                c(
                    104,
                    "sb_inodesize",
                    &format!("a power of two in {min_is}..=2048, at most the block size"),
                    &is,
                )
            })?;
        if u32::from(sb.sb_inodelog) != inode_log {
            return Err(c(122, "sb_inodelog", &inode_log, &sb.sb_inodelog));
        }
        let inopb_log = block_log.saturating_sub(inode_log);
        if u32::from(sb.sb_inopblog) != inopb_log
            || u32::from(sb.sb_inopblock) != (1u32 << inopb_log)
        {
            return Err(c(
                106,
                "sb_inopblock",
                &format!("{} (log {inopb_log})", 1u32 << inopb_log),
                &format!("{} (log {})", sb.sb_inopblock, sb.sb_inopblog),
            ));
        }
        let agb = sb.sb_agblocks;
        // XFS_MIN_AG_BLOCKS is 64; the AG block number must fit in 2^agblklog.
        if agb < 64 {
            return Err(c(84, "sb_agblocks", &"at least 64", &agb));
        }
        let agblk_log = 32u32.saturating_sub(agb.wrapping_sub(1).leading_zeros());
        if u32::from(sb.sb_agblklog) != agblk_log {
            return Err(c(124, "sb_agblklog", &agblk_log, &sb.sb_agblklog));
        }
        // An AG inode number (agino) is 32 bits wide.
        if agblk_log.saturating_add(inopb_log) > 32 {
            return Err(c(
                124,
                "sb_agblklog",
                &"sb_agblklog + sb_inopblog at most 32",
                &agblk_log.saturating_add(inopb_log),
            ));
        }
        let agc = sb.sb_agcount;
        if agc == 0 {
            return Err(c(88, "sb_agcount", &"at least 1", &agc));
        }
        let full = u64::from(agc).saturating_mul(u64::from(agb));
        let lower = u64::from(agc.saturating_sub(1)).saturating_mul(u64::from(agb));
        if sb.sb_dblocks > full || sb.sb_dblocks <= lower {
            return Err(c(
                8,
                "sb_dblocks",
                &format!(
                    "in {}..={full} (sb_agcount x sb_agblocks)",
                    lower.saturating_add(1)
                ),
                &sb.sb_dblocks,
            ));
        }
        let fs_bytes = sb.sb_dblocks.saturating_mul(u64::from(bs));
        if fs_bytes > device_size {
            return Err(c(
                8,
                "sb_dblocks",
                &format!(
                    "at most {device_size} bytes of device ({} blocks)",
                    device_size >> block_log
                ),
                &format!("{} blocks ({fs_bytes} bytes)", sb.sb_dblocks),
            ));
        }
        let dir_blk_log = u32::from(sb.sb_dirblklog);
        let dir_block_size = bs
            .checked_shl(dir_blk_log)
            .filter(|d| dir_blk_log < 16 && *d <= XFS_DIR2_MAX_BLOCKSIZE)
            .ok_or_else(|| {
                c(
                    192,
                    "sb_dirblklog",
                    &"a directory block of at most 65536 bytes",
                    &sb.sb_dirblklog,
                )
            })?;
        if sb.sb_inprogress != 0 {
            return Err(c(126, "sb_inprogress", &0, &sb.sb_inprogress));
        }
        if version == 5 && sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR != 0 {
            return Err(Error::unsupported(format!(
                "xfs: incompatible feature bit 4 ({}) is set: the filesystem must be repaired with xfs_repair first",
                incompat_name(4)
            )));
        }
        let has_ftype = if version == 5 {
            sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_FTYPE != 0
        } else {
            sb.sb_versionnum & XFS_SB_VERSION_MOREBITSBIT != 0
                && sb.sb_features2 & XFS_SB_VERSION2_FTYPE != 0
        };
        let meta_uuid =
            if version == 5 && sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_META_UUID != 0 {
                sb.sb_meta_uuid
            } else {
                sb.sb_uuid
            };
        let g = Geometry {
            v5: version == 5,
            block_size: bs,
            block_log,
            inode_size: u32::from(is),
            inopb_log,
            agblk_log,
            ag_blocks: agb,
            ag_count: agc,
            data_blocks: sb.sb_dblocks,
            dir_block_size,
            dir_blk_log,
            has_ftype,
            has_extflg: version == 5 || sb.sb_versionnum & XFS_SB_VERSION_EXTFLGBIT != 0,
            has_bigtime: version == 5
                && sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_BIGTIME != 0,
            has_nrext64: version == 5
                && sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_NREXT64 != 0,
            meta_uuid,
            sb,
        };
        g.inode_pos(g.sb.sb_rootino).map_err(|_| {
            c(
                56,
                "sb_rootino",
                &"an inode number inside the filesystem",
                &g.sb.sb_rootino,
            )
        })?;
        Ok(g)
    }

    /// Byte offset of filesystem block `fsbno` (`agno << agblklog | agbno`),
    /// checking that `count` blocks from it stay inside one AG and the
    /// filesystem.
    pub fn fsb_to_byte(&self, fsbno: u64, count: u64) -> Option<u64> {
        let agno = fsbno.checked_shr(self.agblk_log)?;
        let agbno = fsbno & low_mask(self.agblk_log);
        if agno >= u64::from(self.ag_count) {
            return None;
        }
        let end = agbno.checked_add(count)?;
        if end > u64::from(self.ag_blocks) {
            return None;
        }
        let linear = agno
            .checked_mul(u64::from(self.ag_blocks))?
            .checked_add(agbno)?;
        if linear.checked_add(count)? > self.data_blocks {
            return None;
        }
        linear.checked_shl(self.block_log)
    }

    /// Byte offset of inode `ino` (AG number, AG block and index from
    /// `sb_agblklog` / `sb_inopblog`: "Inode Numbers" in the XFS book).
    pub fn inode_pos(&self, ino: u64) -> Result<u64> {
        let bad = || {
            Error::corrupt_msg(format!(
                "xfs inode number {ino} is outside the filesystem ({} AGs of {} blocks, {} inodes per block)",
                self.ag_count,
                self.ag_blocks,
                1u32 << self.inopb_log
            ))
        };
        let ino_bits = self.agblk_log.saturating_add(self.inopb_log);
        let agno = ino.checked_shr(ino_bits).ok_or_else(bad)?;
        let agino = ino & low_mask(ino_bits);
        let agbno = agino >> self.inopb_log;
        let index = agino & low_mask(self.inopb_log);
        if agno >= u64::from(self.ag_count) || agno > u64::from(u32::MAX) {
            return Err(bad());
        }
        let fsbno = (agno << self.agblk_log) | agbno;
        let block = self.fsb_to_byte(fsbno, 1).ok_or_else(bad)?;
        Ok(block.saturating_add(
            index
                .checked_shl(self.block_log.saturating_sub(self.inopb_log))
                .unwrap_or(u64::MAX),
        ))
    }

    /// The user-visible UUID, blkid style.
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.sb.sb_uuid)
    }

    /// The label (`sb_fname` up to the first NUL), if any.
    pub fn label(&self) -> Option<String> {
        let end = self
            .sb
            .sb_fname
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.sb.sb_fname.len());
        let name = self.sb.sb_fname.get(..end).unwrap_or_default();
        (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
    }
}

/// `bits` low bits set.
fn low_mask(bits: u32) -> u64 {
    1u64.checked_shl(bits)
        .map_or(u64::MAX, |v| v.wrapping_sub(1))
}

/// Lower-case 8-4-4-4-12 hex.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}
