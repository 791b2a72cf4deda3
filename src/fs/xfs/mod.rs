//! XFS (v4 and v5) read access: superblock, inodes by number, data forks
//! (local, extents, B+tree), directories in every format, symlinks and
//! regular files, all through a positional [`BlockSource`].
//!
//! What it owns: [`XfsReader`] (the [`FileSystem`] implementation) and
//! [`probe`]. The modules keep the on-disk structures with the spec's names
//! so that a later writer can build on them: [`sb`] (superblock, geometry),
//! [`inode`] (dinode core, data fork), [`bmap`] (extent records, bmbt),
//! [`dir`] (short form, block, leaf, node, btree directories), [`crc`].
//!
//! Source: "XFS Algorithms & Data Structures" (the XFS on-disk format book,
//! kernel Documentation/filesystems/xfs/) and the kernel's `fs/xfs/libxfs/`
//! headers. Read-only: the log is not replayed, so a filesystem that was not
//! cleanly unmounted is read as its metadata blocks stand. Non-goals here:
//! extended attributes, the realtime device, quota and free-space trees (not
//! needed to list directories and read files).
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod bmap;
pub mod buf;
pub mod crc;
pub mod dir;
pub mod inode;
pub mod sb;
pub mod write;

use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::fs::{DirEntry, FileSystem, FileType, Metadata};
use crate::limits::{MAX_XFS_DIR_ENTRIES, XFS_SYMLINK_MAPS, XFS_SYMLINK_MAXLEN};
use bmap::{data_extents, read_mapped};
use buf::Buf;
use inode::{Dinode, XFS_DIFLAG_REALTIME, XFS_DINODE_FMT_LOCAL};
use sb::Geometry;
use std::ops::ControlFlow;
use std::sync::Arc;

/// `XFS_SYMLINK_MAGIC`: "XSLM", remote symlink block header on v5.
pub const XFS_SYMLINK_MAGIC: u32 = 0x5853_4c4d;
/// Size of `struct xfs_dsymlink_hdr`.
pub const XFS_SYMLINK_HDR_LEN: usize = 56;
/// Byte offset of `sl_crc` in the remote symlink header.
pub const XFS_SYMLINK_CRC_OFF: usize = 12;

/// Directory entry file types (`XFS_DIR3_FT_*`).
fn ftype_kind(ft: u8) -> Option<FileType> {
    match ft {
        1 => Some(FileType::File),
        2 => Some(FileType::Dir),
        3..=6 => Some(FileType::Other),
        7 => Some(FileType::Symlink),
        _ => None,
    }
}

/// An XFS filesystem opened for reading.
pub struct XfsReader {
    src: Arc<dyn BlockSource>,
    /// Validated superblock geometry.
    pub geo: Geometry,
}

impl std::fmt::Debug for XfsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XfsReader({})", self.geo.uuid_string())
    }
}

/// `Some(reader)` when `src` starts with an XFS superblock (magic XFSB),
/// `None` when it does not; an XFS superblock that fails validation is an error.
pub fn probe(src: Arc<dyn BlockSource>) -> Result<Option<Box<dyn FileSystem>>> {
    if src.size() < u64::from(sb::XFS_MIN_SECTORSIZE) {
        return Ok(None);
    }
    let mut magic = [0u8; 4];
    src.read_at(0, &mut magic)?;
    if u32::from_be_bytes(magic) != sb::XFS_SB_MAGIC {
        return Ok(None);
    }
    Ok(Some(Box::new(XfsReader::open(src)?)))
}

impl XfsReader {
    /// Open the filesystem at byte 0 of `src`.
    pub fn open(src: Arc<dyn BlockSource>) -> Result<Self> {
        let size = src.size();
        let s2 = Arc::clone(&src);
        let geo = Geometry::read(&move |off, buf| s2.read_at(off, buf), size)?;
        Ok(XfsReader { src, geo })
    }

    /// `len` bytes at absolute byte `pos` (`len` is a block-sized value).
    pub fn read_vec(&self, pos: u64, len: u64) -> Result<Vec<u8>> {
        let n = usize::try_from(len).map_err(|_| Error::invalid("xfs: read too large"))?;
        let mut v = vec![0u8; n];
        self.src.read_at(pos, &mut v)?;
        Ok(v)
    }

    /// Read and verify inode `ino`.
    pub fn inode(&self, ino: u64) -> Result<Dinode> {
        let pos = self.geo.inode_pos(ino)?;
        let raw = self.read_vec(pos, u64::from(self.geo.inode_size))?;
        Dinode::parse(&self.geo, ino, pos, &raw)
    }

    /// The root directory inode.
    pub fn root(&self) -> Result<Dinode> {
        let d = self.inode(self.geo.sb.sb_rootino)?;
        if d.file_type() != FileType::Dir {
            return Err(Error::corrupt(
                "xfs superblock",
                "sb_rootino",
                56,
                "a directory inode",
                format!("inode {} with mode {:#o}", d.ino, d.di_mode),
            ));
        }
        Ok(d)
    }

    /// Inode number of `name` in directory `dir`, if present.
    pub fn lookup_in(&self, dir: &Dinode, name: &[u8]) -> Result<Option<u64>> {
        dir::lookup(self, dir, name)
    }

    /// The inode at absolute guest `path` (no symlinks followed), if any.
    pub fn lookup(&self, path: &str) -> Result<Option<Dinode>> {
        let mut stack: Vec<Dinode> = vec![self.root()?];
        for c in path.split('/').filter(|c| !c.is_empty()) {
            match c {
                "." => continue,
                ".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let Some(cur) = stack.last() else {
                return Ok(None);
            };
            if cur.file_type() != FileType::Dir {
                return Ok(None);
            }
            let Some(ino) = self.lookup_in(cur, c.as_bytes())? else {
                return Ok(None);
            };
            let next = self.inode(ino)?;
            stack.push(next);
        }
        Ok(stack.pop())
    }

    fn lookup_existing(&self, path: &str) -> Result<Dinode> {
        self.lookup(path)?
            .ok_or_else(|| Error::invalid(format!("xfs: {path}: no such file or directory")))
    }

    /// Entries of directory inode `dir` (without "." and "..").
    pub fn dir_entries(&self, dir: &Dinode) -> Result<Vec<DirEntry>> {
        if dir.file_type() != FileType::Dir {
            return Err(dir.wrong_type("directory"));
        }
        let mut out: Vec<DirEntry> = Vec::new();
        dir::for_each_entry(self, dir, &mut |e| {
            if out.len() >= MAX_XFS_DIR_ENTRIES {
                return Err(Error::unsupported(format!(
                    "xfs directory inode {} has more than {MAX_XFS_DIR_ENTRIES} entries",
                    dir.ino
                )));
            }
            self.geo.inode_pos(e.ino).map_err(|err| {
                Error::corrupt_msg(format!(
                    "xfs directory inode {}: entry {:?}: {}",
                    dir.ino,
                    String::from_utf8_lossy(e.name),
                    err.message()
                ))
            })?;
            let file_type = match e.ftype.and_then(ftype_kind) {
                Some(t) => t,
                None => self.inode(e.ino)?.file_type(),
            };
            out.push(DirEntry {
                name: String::from_utf8_lossy(e.name).into_owned(),
                file_type,
                ino: e.ino,
            });
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Contents of regular file inode `d`; fails if larger than `limit`.
    pub fn file_bytes(&self, d: &Dinode, limit: u64) -> Result<Vec<u8>> {
        if d.file_type() != FileType::File {
            return Err(d.wrong_type("regular file"));
        }
        if d.di_size > limit {
            return Err(Error::invalid(format!(
                "xfs inode {}: file is {} bytes, larger than the {limit}-byte limit",
                d.ino, d.di_size
            )));
        }
        if d.di_flags & XFS_DIFLAG_REALTIME != 0 {
            return Err(Error::unsupported(format!(
                "xfs inode {}: file data on the realtime device is not supported",
                d.ino
            )));
        }
        let extents = data_extents(self, d)?;
        let n = usize::try_from(d.di_size)
            .map_err(|_| Error::invalid("xfs: file too large for memory"))?;
        let mut out = vec![0u8; n];
        read_mapped(self, d.ino, &extents, 0, &mut out, false)?;
        Ok(out)
    }

    /// Target bytes of symlink inode `d`.
    pub fn link_target(&self, d: &Dinode) -> Result<Vec<u8>> {
        if d.file_type() != FileType::Symlink {
            return Err(d.wrong_type("symbolic link"));
        }
        let structure = format!("xfs inode {}", d.ino);
        let ib = Buf::new(&[], &structure, d.pos);
        if d.di_size == 0 || d.di_size > XFS_SYMLINK_MAXLEN {
            return Err(ib.corrupt(
                56,
                "di_size",
                format!("a symlink length in 1..={XFS_SYMLINK_MAXLEN}"),
                d.di_size,
            ));
        }
        let size = usize::try_from(d.di_size).unwrap_or(0);
        let target = if d.di_format == XFS_DINODE_FMT_LOCAL {
            d.data_fork.get(..size).unwrap_or_default().to_vec()
        } else {
            self.remote_symlink(d, size)?
        };
        if target.contains(&0) {
            return Err(ib.corrupt(56, "symlink target", "no NUL byte", "a NUL byte"));
        }
        Ok(target)
    }

    fn remote_symlink(&self, d: &Dinode, size: usize) -> Result<Vec<u8>> {
        let extents = data_extents(self, d)?;
        let blocks: u64 = extents
            .iter()
            .map(|e| e.blockcount)
            .fold(0, u64::saturating_add);
        if blocks > XFS_SYMLINK_MAPS {
            return Err(Error::corrupt(
                format!("xfs inode {}", d.ino),
                "di_nblocks",
                d.pos,
                format!("at most {XFS_SYMLINK_MAPS} blocks for a symlink"),
                blocks,
            ));
        }
        if !self.geo.v5 {
            let mut out = vec![0u8; size];
            read_mapped(self, d.ino, &extents, 0, &mut out, true)?;
            return Ok(out);
        }
        // v5: each mapping starts with an xfs_dsymlink_hdr (XSLM).
        let mut out: Vec<u8> = Vec::with_capacity(size);
        for e in &extents {
            if out.len() >= size {
                break;
            }
            if e.unwritten {
                return Err(Error::corrupt_msg(format!(
                    "xfs inode {}: unwritten symlink block",
                    d.ino
                )));
            }
            let pos = self
                .geo
                .fsb_to_byte(e.startblock, e.blockcount)
                .ok_or_else(|| {
                    Error::corrupt_msg(format!(
                        "xfs inode {}: symlink extent outside the filesystem",
                        d.ino
                    ))
                })?;
            let len = e
                .blockcount
                .checked_shl(self.geo.block_log)
                .unwrap_or(u64::MAX);
            let data = self.read_vec(pos, len)?;
            let structure = format!("xfs inode {} remote symlink block", d.ino);
            let b = Buf::new(&data, &structure, pos);
            let magic = b.u32(0, "sl_magic")?;
            if magic != XFS_SYMLINK_MAGIC {
                return Err(b.corrupt(0, "sl_magic", "0x58534c4d (XSLM)", format!("{magic:#x}")));
            }
            crc::verify(&data, XFS_SYMLINK_CRC_OFF, &structure, "sl_crc", pos)?;
            let space = data.len().saturating_sub(XFS_SYMLINK_HDR_LEN);
            let want = space.min(size.saturating_sub(out.len()));
            let sl_offset = b.u32(4, "sl_offset")?;
            if usize::try_from(sl_offset).ok() != Some(out.len()) {
                return Err(b.corrupt(4, "sl_offset", out.len(), sl_offset));
            }
            let sl_bytes = b.u32(8, "sl_bytes")?;
            if usize::try_from(sl_bytes).ok() != Some(want) {
                return Err(b.corrupt(8, "sl_bytes", want, sl_bytes));
            }
            let uuid = b.uuid(16, "sl_uuid")?;
            if uuid != self.geo.meta_uuid {
                return Err(b.corrupt(
                    16,
                    "sl_uuid",
                    sb::format_uuid(&self.geo.meta_uuid),
                    sb::format_uuid(&uuid),
                ));
            }
            let owner = b.u64(32, "sl_owner")?;
            if owner != d.ino {
                return Err(b.corrupt(32, "sl_owner", d.ino, owner));
            }
            let blkno = b.u64(40, "sl_blkno")?;
            if blkno != pos >> 9 {
                return Err(b.corrupt(40, "sl_blkno", pos >> 9, blkno));
            }
            out.extend_from_slice(b.bytes(XFS_SYMLINK_HDR_LEN, want, "symlink data")?);
        }
        if out.len() != size {
            return Err(Error::corrupt(
                format!("xfs inode {}", d.ino),
                "di_size",
                d.pos.saturating_add(56),
                format!("{} (bytes in the remote symlink blocks)", out.len()),
                size,
            ));
        }
        Ok(out)
    }

    fn metadata(d: &Dinode) -> Metadata {
        Metadata {
            file_type: d.file_type(),
            size: d.di_size,
            mode: u32::from(d.di_mode),
            uid: d.di_uid,
            gid: d.di_gid,
            mtime: d.mtime,
            ino: d.ino,
        }
    }
}

impl FileSystem for XfsReader {
    fn kind(&self) -> &'static str {
        "xfs"
    }

    fn uuid(&self) -> Option<String> {
        Some(self.geo.uuid_string())
    }

    fn label(&self) -> Option<String> {
        self.geo.label()
    }

    fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        Ok(self.lookup(path)?.as_ref().map(Self::metadata))
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let d = self.lookup_existing(path)?;
        self.dir_entries(&d)
    }

    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let d = self.lookup_existing(path)?;
        self.file_bytes(&d, limit)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let d = self.lookup_existing(path)?;
        let t = self.link_target(&d)?;
        Ok(String::from_utf8_lossy(&t).into_owned())
    }
}
