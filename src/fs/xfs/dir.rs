//! Version 2 directories in every format:
//!
//! - short form: entries inside the inode (`xfs_dir2_sf_hdr` + entries);
//! - block: one directory block (magic XD2B / XDB3) holding entries, the hash
//!   leaf and a tail;
//! - leaf, node and B+tree: data blocks (XD2D / XDD3) in the first 32 GiB of
//!   the directory's address space, with leaf blocks from
//!   `XFS_DIR2_LEAF_OFFSET` (32 GiB) and free-space index blocks from
//!   `XFS_DIR2_FREE_OFFSET` (64 GiB). Entries live only in data blocks, so a
//!   listing reads the data blocks (found through the data fork, extents or
//!   bmbt) and skips the rest by offset range.
//!
//! Source: "XFS Algorithms & Data Structures", chapter "Directories"; kernel
//! `fs/xfs/libxfs/xfs_da_format.h` and `xfs_dir2_data.c` (entry checks).

use super::bmap::{data_extents, read_mapped};
use super::buf::Buf;
use super::crc;
use super::inode::{Dinode, XFS_DINODE_FMT_BTREE, XFS_DINODE_FMT_EXTENTS, XFS_DINODE_FMT_LOCAL};
use super::XfsReader;
use crate::error::{Error, Result};
use crate::limits::MAX_XFS_DIR_BYTES;
use std::ops::ControlFlow;

/// "XD2B": single-block directory, v4.
pub const XFS_DIR2_BLOCK_MAGIC: u32 = 0x5844_3242;
/// "XDB3": single-block directory, v5.
pub const XFS_DIR3_BLOCK_MAGIC: u32 = 0x5844_4233;
/// "XD2D": directory data block, v4.
pub const XFS_DIR2_DATA_MAGIC: u32 = 0x5844_3244;
/// "XDD3": directory data block, v5.
pub const XFS_DIR3_DATA_MAGIC: u32 = 0x5844_4433;
/// Marks an unused region inside a data block (`XFS_DIR2_DATA_FREE_TAG`).
pub const XFS_DIR2_DATA_FREE_TAG: u16 = 0xffff;
/// Start of the leaf section of the directory address space (32 GiB).
pub const XFS_DIR2_LEAF_OFFSET: u64 = 1 << 35;
/// v4 data block header (`xfs_dir2_data_hdr`: magic + 3 bestfree pairs).
pub const XFS_DIR2_DATA_HDR_LEN: usize = 16;
/// v5 data block header (`xfs_dir3_data_hdr`: `xfs_dir3_blk_hdr` + bestfree + pad).
pub const XFS_DIR3_DATA_HDR_LEN: usize = 64;
/// Byte offset of the crc in a v5 directory block header.
pub const XFS_DIR3_CRC_OFF: usize = 4;

/// A directory entry as stored: name bytes, inode number, file type byte
/// (`XFS_DIR3_FT_*`) when the filesystem has ftype.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    /// Name bytes (never "." or "..").
    pub name: &'a [u8],
    /// Inode number.
    pub ino: u64,
    /// File type byte, when present.
    pub ftype: Option<u8>,
}

/// Callback for [`for_each_entry`]: `Break` stops the walk.
pub type Visit<'v> = dyn FnMut(RawEntry<'_>) -> Result<ControlFlow<()>> + 'v;

/// Call `f` for every entry of directory `dir` (except "." and "..").
pub fn for_each_entry(fs: &XfsReader, dir: &Dinode, f: &mut Visit<'_>) -> Result<()> {
    match dir.di_format {
        XFS_DINODE_FMT_LOCAL => shortform(fs, dir, f),
        XFS_DINODE_FMT_EXTENTS | XFS_DINODE_FMT_BTREE => blocks(fs, dir, f),
        other => Err(Error::corrupt(
            format!("xfs inode {}", dir.ino),
            "di_format",
            dir.pos.saturating_add(5),
            "local, extents or btree for a directory",
            other,
        )),
    }
}

fn shortform(fs: &XfsReader, dir: &Dinode, f: &mut Visit<'_>) -> Result<()> {
    let structure = format!("xfs inode {} short form directory", dir.ino);
    let size = usize::try_from(dir.di_size).unwrap_or(usize::MAX);
    let data = dir.data_fork.get(..size).ok_or_else(|| {
        Error::corrupt(
            structure.as_str(),
            "di_size",
            dir.pos.saturating_add(56),
            format!("at most {}", dir.data_fork.len()),
            dir.di_size,
        )
    })?;
    let at = dir
        .pos
        .saturating_add(u64::try_from(dir.fork_off).unwrap_or(0));
    let b = Buf::new(data, &structure, at);
    let count = b.u8(0, "count")?;
    let i8count = b.u8(1, "i8count")?;
    let ino_len = if i8count == 0 { 4usize } else { 8 };
    if i8count > count {
        return Err(b.corrupt(1, "i8count", format!("at most count ({count})"), i8count));
    }
    // Parent inode follows the two counts.
    let parent = read_ino(&b, 2, ino_len, "parent")?;
    fs.geo
        .inode_pos(parent)
        .map_err(|_| b.corrupt(2, "parent", "an inode number inside the filesystem", parent))?;
    let mut pos = 2usize.saturating_add(ino_len);
    let ft_len = usize::from(fs.geo.has_ftype);
    for _ in 0..count {
        let namelen = usize::from(b.u8(pos, "namelen")?);
        if namelen == 0 {
            return Err(b.corrupt(pos, "namelen", "at least 1", 0));
        }
        // namelen(1) + offset(2) + name + [ftype] + inumber
        let name = b.bytes(pos.saturating_add(3), namelen, "name")?;
        let ft_off = pos.saturating_add(3).saturating_add(namelen);
        let ftype = if fs.geo.has_ftype {
            Some(b.u8(ft_off, "ftype")?)
        } else {
            None
        };
        let ino_off = ft_off.saturating_add(ft_len);
        let ino = read_ino(&b, ino_off, ino_len, "inumber")?;
        check_name(&b, pos, name)?;
        pos = ino_off.saturating_add(ino_len);
        if f(RawEntry { name, ino, ftype })?.is_break() {
            return Ok(());
        }
    }
    if pos != data.len() {
        return Err(b.corrupt(
            0,
            "count",
            format!("entries filling di_size ({} bytes)", data.len()),
            format!("{count} entries ending at byte {pos}"),
        ));
    }
    Ok(())
}

fn read_ino(b: &Buf<'_>, off: usize, len: usize, field: &str) -> Result<u64> {
    if len == 4 {
        b.u32(off, field).map(u64::from)
    } else {
        b.u64(off, field)
    }
}

fn check_name(b: &Buf<'_>, off: usize, name: &[u8]) -> Result<()> {
    if name.contains(&0) || name.contains(&b'/') {
        return Err(b.corrupt(
            off,
            "name",
            "a name without NUL or '/'",
            String::from_utf8_lossy(name).escape_debug(),
        ));
    }
    Ok(())
}

fn blocks(fs: &XfsReader, dir: &Dinode, f: &mut Visit<'_>) -> Result<()> {
    let extents = data_extents(fs, dir)?;
    let g = &fs.geo;
    let dbs = u64::from(g.dir_block_size);
    // Directory blocks (in units of directory blocks) that hold data.
    let leaf_dblock = XFS_DIR2_LEAF_OFFSET >> (g.block_log.saturating_add(g.dir_blk_log));
    let mut last: Option<u64> = None;
    let mut bytes_read = 0u64;
    let mut buf = vec![0u8; usize::try_from(dbs).unwrap_or(0)];
    // Block form when the whole fork maps exactly one directory block
    // (`xfs_dir2_format`: last mapped offset == directory block size).
    let fork_end = extents
        .last()
        .map(|e| e.end().checked_shl(g.block_log).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let is_block_form = fork_end == dbs;
    for e in &extents {
        let first = e.startoff >> g.dir_blk_log;
        let end = e.end().saturating_sub(1) >> g.dir_blk_log;
        let mut db = first;
        while db <= end && db < leaf_dblock {
            if last.is_some_and(|l| db <= l) {
                db = db.saturating_add(1);
                continue;
            }
            last = Some(db);
            bytes_read = bytes_read.saturating_add(dbs);
            if bytes_read > MAX_XFS_DIR_BYTES {
                return Err(Error::unsupported(format!(
                    "xfs directory inode {} has more than {MAX_XFS_DIR_BYTES} bytes of data blocks",
                    dir.ino
                )));
            }
            let offset = db.saturating_mul(dbs);
            read_mapped(fs, dir.ino, &extents, offset, &mut buf, true)?;
            let pos = disk_pos(fs, &extents, offset);
            let single = is_block_form && db == 0;
            if data_block(fs, dir, &buf, pos, single, f)?.is_break() {
                return Ok(());
            }
            db = db.saturating_add(1);
        }
    }
    Ok(())
}

/// Disk byte position of directory offset `offset` (for headers and errors).
fn disk_pos(fs: &XfsReader, extents: &[super::bmap::BmbtIrec], offset: u64) -> u64 {
    let blk = offset >> fs.geo.block_log;
    extents
        .iter()
        .find(|e| e.startoff <= blk && blk < e.end())
        .and_then(|e| {
            fs.geo.fsb_to_byte(
                e.startblock.saturating_add(blk.saturating_sub(e.startoff)),
                1,
            )
        })
        .unwrap_or(0)
}

fn data_block(
    fs: &XfsReader,
    dir: &Dinode,
    data: &[u8],
    pos: u64,
    single: bool,
    f: &mut Visit<'_>,
) -> Result<ControlFlow<()>> {
    let g = &fs.geo;
    let structure = format!("xfs directory {} data block", dir.ino);
    let b = Buf::new(data, &structure, pos);
    let magic = b.u32(0, "magic")?;
    let (block_magic, data_magic, hdr) = if g.v5 {
        (
            XFS_DIR3_BLOCK_MAGIC,
            XFS_DIR3_DATA_MAGIC,
            XFS_DIR3_DATA_HDR_LEN,
        )
    } else {
        (
            XFS_DIR2_BLOCK_MAGIC,
            XFS_DIR2_DATA_MAGIC,
            XFS_DIR2_DATA_HDR_LEN,
        )
    };
    let end = if magic == block_magic && single {
        // Block tail: count, stale (u32 each) at the very end; the hash leaf
        // entries (8 bytes each) sit right before it.
        let tail = data.len().saturating_sub(8);
        let count =
            usize::try_from(b.u32(tail, "xfs_dir2_block_tail count")?).unwrap_or(usize::MAX);
        let leaf_bytes = count.saturating_mul(8);
        if leaf_bytes > tail.saturating_sub(hdr) {
            return Err(b.corrupt(
                tail,
                "xfs_dir2_block_tail count",
                format!("at most {}", tail.saturating_sub(hdr) / 8),
                count,
            ));
        }
        tail.saturating_sub(leaf_bytes)
    } else if magic == data_magic && !single {
        data.len()
    } else {
        let want = if single { block_magic } else { data_magic };
        return Err(b.corrupt(0, "magic", format!("{want:#x}"), format!("{magic:#x}")));
    };
    if g.v5 {
        crc::verify(data, XFS_DIR3_CRC_OFF, &structure, "crc", pos)?;
        let blkno = b.u64(8, "blkno")?;
        if blkno != pos >> 9 {
            return Err(b.corrupt(8, "blkno", pos >> 9, blkno));
        }
        let uuid = b.uuid(24, "uuid")?;
        if uuid != g.meta_uuid {
            return Err(b.corrupt(
                24,
                "uuid",
                super::sb::format_uuid(&g.meta_uuid),
                super::sb::format_uuid(&uuid),
            ));
        }
        let owner = b.u64(40, "owner")?;
        if owner != dir.ino {
            return Err(b.corrupt(40, "owner", dir.ino, owner));
        }
    }
    let ft_len = usize::from(g.has_ftype);
    let mut off = hdr;
    // Each step advances by at least 8 bytes, so this ends within
    // data.len() / 8 iterations.
    while off < end {
        let tag = b.u16(off, "freetag")?;
        if tag == XFS_DIR2_DATA_FREE_TAG {
            let len = usize::from(b.u16(off.saturating_add(2), "length")?);
            if len < 8 || len % 8 != 0 || off.saturating_add(len) > end {
                return Err(b.corrupt(
                    off.saturating_add(2),
                    "length",
                    format!("a multiple of 8, at least 8, ending by byte {end}"),
                    len,
                ));
            }
            off = off.saturating_add(len);
            continue;
        }
        let ino = b.u64(off, "inumber")?;
        let namelen = usize::from(b.u8(off.saturating_add(8), "namelen")?);
        if namelen == 0 {
            return Err(b.corrupt(off.saturating_add(8), "namelen", "at least 1", 0));
        }
        // inumber(8) + namelen(1) + name + [ftype] + tag(2), rounded up to 8.
        let raw = 11usize.saturating_add(namelen).saturating_add(ft_len);
        let len = raw.saturating_add(7) & !7;
        if off.saturating_add(len) > end {
            return Err(b.corrupt(
                off.saturating_add(8),
                "namelen",
                format!("an entry ending by byte {end}"),
                format!("{namelen} (entry of {len} bytes at byte {off})"),
            ));
        }
        let name = b.bytes(off.saturating_add(9), namelen, "name")?;
        let ftype = if g.has_ftype {
            Some(b.u8(off.saturating_add(9).saturating_add(namelen), "ftype")?)
        } else {
            None
        };
        let tag_off = off.saturating_add(len).saturating_sub(2);
        let tag = b.u16(tag_off, "tag")?;
        if usize::from(tag) != off {
            return Err(b.corrupt(tag_off, "tag", off, tag));
        }
        check_name(&b, off.saturating_add(9), name)?;
        off = off.saturating_add(len);
        if name == b"." || name == b".." {
            continue;
        }
        if f(RawEntry { name, ino, ftype })?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}
