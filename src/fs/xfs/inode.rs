//! On-disk inodes (`struct xfs_dinode`): the core (v1/v2 on v4 filesystems,
//! v3 with CRC, LSN, inode number and UUID on v5) and the data fork bytes
//! that follow it in the literal area.
//!
//! Source: "XFS Algorithms & Data Structures", chapter "On-disk Inode";
//! kernel `fs/xfs/libxfs/xfs_format.h` (`struct xfs_dinode`, `XFS_DINODE_FMT_*`,
//! `XFS_DIFLAG*`) and `xfs_inode_buf.c` (`xfs_dinode_verify`).

use super::buf::Buf;
use super::crc;
use super::sb::Geometry;
use crate::error::{Error, Result};
use crate::fs::FileType;

/// `XFS_DINODE_MAGIC`: "IN".
pub const XFS_DINODE_MAGIC: u16 = 0x494e;
/// Byte offset of `di_crc` in a v3 inode.
pub const XFS_DINODE_CRC_OFF: usize = 100;
/// Size of the v1/v2 inode core (literal area starts here).
pub const XFS_DINODE_CORE_V2: usize = 100;
/// Size of the v3 inode core.
pub const XFS_DINODE_CORE_V3: usize = 176;

/// Data fork formats (`enum xfs_dinode_fmt`).
pub const XFS_DINODE_FMT_DEV: u8 = 0;
/// Data inside the inode (short form directory, inline symlink).
pub const XFS_DINODE_FMT_LOCAL: u8 = 1;
/// An array of extent records in the inode.
pub const XFS_DINODE_FMT_EXTENTS: u8 = 2;
/// The root of a block-mapping B+tree in the inode.
pub const XFS_DINODE_FMT_BTREE: u8 = 3;

/// `XFS_DIFLAG_REALTIME`: data lives on the realtime device.
pub const XFS_DIFLAG_REALTIME: u16 = 1 << 0;
/// `XFS_DIFLAG2_BIGTIME`: timestamps are 64-bit nanosecond counters.
pub const XFS_DIFLAG2_BIGTIME: u64 = 1 << 3;
/// `XFS_DIFLAG2_NREXT64`: 64-bit data fork extent counter.
pub const XFS_DIFLAG2_NREXT64: u64 = 1 << 4;
/// `XFS_BIGTIME_EPOCH_OFFSET`: bigtime 0 is this many seconds before the Unix epoch.
pub const XFS_BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

/// File type bits of `di_mode` (POSIX `S_IFMT`).
pub const S_IFMT: u16 = 0o170000;
/// Directory.
pub const S_IFDIR: u16 = 0o040000;
/// Regular file.
pub const S_IFREG: u16 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u16 = 0o120000;

/// The inode fields onramp reads, named as in `struct xfs_dinode`, plus the
/// data fork bytes.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Dinode {
    /// Inode number.
    pub ino: u64,
    /// Absolute byte offset of the inode.
    pub pos: u64,
    pub di_mode: u16,
    pub di_version: u8,
    pub di_format: u8,
    pub di_uid: u32,
    pub di_gid: u32,
    pub di_nlink: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    pub di_size: u64,
    pub di_nblocks: u64,
    /// Data fork extent count (`di_nextents` or `di_big_nextents`).
    pub di_nextents: u64,
    pub di_forkoff: u8,
    pub di_aformat: u8,
    pub di_flags: u16,
    pub di_flags2: u64,
    /// Byte offset of the data fork inside the inode.
    pub fork_off: usize,
    /// The data fork bytes (literal area up to the attribute fork).
    pub data_fork: Vec<u8>,
}

const DI: &str = "xfs inode";

impl Dinode {
    /// Parse and verify inode `ino` from its `inode_size` bytes at `pos`.
    pub fn parse(g: &Geometry, ino: u64, pos: u64, raw: &[u8]) -> Result<Self> {
        let structure = format!("{DI} {ino}");
        let b = Buf::new(raw, &structure, pos);
        let magic = b.u16(0, "di_magic")?;
        if magic != XFS_DINODE_MAGIC {
            return Err(b.corrupt(0, "di_magic", "0x494e (IN)", format!("{magic:#x}")));
        }
        let version = b.u8(4, "di_version")?;
        let core = match (g.v5, version) {
            (true, 3) => XFS_DINODE_CORE_V3,
            (false, 1 | 2) => XFS_DINODE_CORE_V2,
            _ => {
                return Err(b.corrupt(
                    4,
                    "di_version",
                    if g.v5 {
                        "3 on a v5 filesystem"
                    } else {
                        "1 or 2 on a v4 filesystem"
                    },
                    version,
                ))
            }
        };
        if version == 3 {
            crc::verify(raw, XFS_DINODE_CRC_OFF, &structure, "di_crc", pos)?;
            let di_ino = b.u64(152, "di_ino")?;
            if di_ino != ino {
                return Err(b.corrupt(152, "di_ino", ino, di_ino));
            }
            let uuid = b.uuid(160, "di_uuid")?;
            if uuid != g.meta_uuid {
                return Err(b.corrupt(
                    160,
                    "di_uuid",
                    super::sb::format_uuid(&g.meta_uuid),
                    super::sb::format_uuid(&uuid),
                ));
            }
        }
        let di_mode = b.u16(2, "di_mode")?;
        let di_format = b.u8(5, "di_format")?;
        let di_nlink = if version == 1 {
            u32::from(b.u16(6, "di_onlink")?)
        } else {
            b.u32(16, "di_nlink")?
        };
        let di_flags2 = if version == 3 {
            b.u64(120, "di_flags2")?
        } else {
            0
        };
        let bigtime = version == 3 && di_flags2 & XFS_DIFLAG2_BIGTIME != 0;
        if bigtime && !g.has_bigtime {
            return Err(b.corrupt(
                120,
                "di_flags2",
                "no BIGTIME flag (feature off)",
                format!("{di_flags2:#x}"),
            ));
        }
        let nrext64 = version == 3 && di_flags2 & XFS_DIFLAG2_NREXT64 != 0;
        if nrext64 && !g.has_nrext64 {
            return Err(b.corrupt(
                120,
                "di_flags2",
                "no NREXT64 flag (feature off)",
                format!("{di_flags2:#x}"),
            ));
        }
        let mtime = if bigtime {
            let ns = b.u64(40, "di_mtime")?;
            i64::try_from(ns / 1_000_000_000)
                .unwrap_or(i64::MAX)
                .saturating_sub(XFS_BIGTIME_EPOCH_OFFSET)
        } else {
            let sec = b.u32(40, "di_mtime")?;
            i64::from(i32::from_be_bytes(sec.to_be_bytes()))
        };
        let di_size = b.u64(56, "di_size")?;
        if di_size > i64::MAX.unsigned_abs() {
            return Err(b.corrupt(
                56,
                "di_size",
                "a non-negative 64-bit size",
                format!("{di_size:#x}"),
            ));
        }
        let di_nextents = if nrext64 {
            b.u64(24, "di_big_nextents")?
        } else {
            u64::from(b.u32(76, "di_nextents")?)
        };
        let di_forkoff = b.u8(82, "di_forkoff")?;
        let literal = raw.len().saturating_sub(core);
        let data_len = if di_forkoff == 0 {
            literal
        } else {
            let off = usize::from(di_forkoff).saturating_mul(8);
            if off >= literal {
                return Err(b.corrupt(
                    82,
                    "di_forkoff",
                    format!("less than {} (literal area / 8)", literal / 8),
                    di_forkoff,
                ));
            }
            off
        };
        let data_fork = b.bytes(core, data_len, "data fork")?.to_vec();
        let d = Dinode {
            ino,
            pos,
            di_mode,
            di_version: version,
            di_format,
            di_uid: b.u32(8, "di_uid")?,
            di_gid: b.u32(12, "di_gid")?,
            di_nlink,
            mtime,
            di_size,
            di_nblocks: b.u64(64, "di_nblocks")?,
            di_nextents,
            di_forkoff,
            di_aformat: b.u8(83, "di_aformat")?,
            di_flags: b.u16(90, "di_flags")?,
            di_flags2,
            fork_off: core,
            data_fork,
        };
        d.check_format(&b)?;
        Ok(d)
    }

    /// The data fork format must suit the file type (`xfs_dinode_verify`).
    fn check_format(&self, b: &Buf<'_>) -> Result<()> {
        let fmt = self.di_format;
        let ok = match self.di_mode & S_IFMT {
            0 => {
                return Err(b.corrupt(
                    2,
                    "di_mode",
                    "an allocated inode (non-zero mode)",
                    "0 (free inode)",
                ));
            }
            S_IFREG => matches!(fmt, XFS_DINODE_FMT_EXTENTS | XFS_DINODE_FMT_BTREE),
            S_IFDIR | S_IFLNK => matches!(
                fmt,
                XFS_DINODE_FMT_LOCAL | XFS_DINODE_FMT_EXTENTS | XFS_DINODE_FMT_BTREE
            ),
            0o020000 | 0o060000 | 0o010000 | 0o140000 => fmt == XFS_DINODE_FMT_DEV,
            _ => {
                return Err(b.corrupt(
                    2,
                    "di_mode",
                    "a known file type",
                    format!("{:#o}", self.di_mode),
                ));
            }
        };
        if !ok {
            return Err(b.corrupt(
                5,
                "di_format",
                format!("a data fork format valid for mode {:#o}", self.di_mode),
                fmt,
            ));
        }
        if fmt == XFS_DINODE_FMT_LOCAL
            && self.di_size > u64::try_from(self.data_fork.len()).unwrap_or(0)
        {
            return Err(b.corrupt(
                56,
                "di_size",
                format!("at most {} (local data fork size)", self.data_fork.len()),
                self.di_size,
            ));
        }
        if fmt == XFS_DINODE_FMT_EXTENTS {
            let cap = u64::try_from(self.data_fork.len() / 16).unwrap_or(0);
            if self.di_nextents > cap {
                return Err(b.corrupt(
                    76,
                    "di_nextents",
                    format!("at most {cap} extents in the inode's data fork"),
                    self.di_nextents,
                ));
            }
        }
        Ok(())
    }

    /// The kind of file.
    pub fn file_type(&self) -> FileType {
        match self.di_mode & S_IFMT {
            S_IFREG => FileType::File,
            S_IFDIR => FileType::Dir,
            S_IFLNK => FileType::Symlink,
            _ => FileType::Other,
        }
    }

    /// An error for an operation that needs a different file type.
    pub fn wrong_type(&self, wanted: &str) -> Error {
        Error::invalid(format!(
            "xfs inode {} is not a {wanted} (mode {:#o})",
            self.ino, self.di_mode
        ))
    }
}
