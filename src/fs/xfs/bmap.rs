//! Block mapping of inode forks: packed 128-bit extent records
//! (`xfs_bmbt_rec`), the extent list kept in the inode, and the block-mapping
//! B+tree (`bmbt`: root `xfs_bmdr_block` in the inode, long-format blocks with
//! magic BMAP (v4) or BMA3 (v5) on disk). Also reads byte ranges of a fork
//! through its extents: holes and unwritten extents read as zeros.
//!
//! Source: "XFS Algorithms & Data Structures", chapters "Data Extents" and
//! "B+trees"; kernel `fs/xfs/libxfs/xfs_bmap_btree.h` / `xfs_format.h`.

use super::buf::Buf;
use super::crc;
use super::inode::{Dinode, XFS_DINODE_FMT_BTREE, XFS_DINODE_FMT_EXTENTS};
use super::XfsReader;
use crate::error::{Error, Result};
use crate::limits::{MAX_XFS_BMBT_LEVELS, MAX_XFS_EXTENTS};

/// `XFS_BMAP_MAGIC`: "BMAP".
pub const XFS_BMAP_MAGIC: u32 = 0x424d_4150;
/// `XFS_BMAP_CRC_MAGIC`: "BMA3".
pub const XFS_BMAP_CRC_MAGIC: u32 = 0x424d_4133;
/// Long-format B+tree block header size, v4 (`XFS_BTREE_LBLOCK_LEN`).
pub const XFS_BTREE_LBLOCK_LEN: usize = 24;
/// Long-format B+tree block header size, v5 (`XFS_BTREE_LBLOCK_CRC_LEN`).
pub const XFS_BTREE_LBLOCK_CRC_LEN: usize = 72;
/// Byte offset of `bb_crc` in a v5 long-format block.
pub const XFS_BTREE_LBLOCK_CRC_OFF: usize = 64;
/// Largest file offset in blocks (`XFS_MAX_FILEOFF`: 54-bit startoff).
pub const XFS_MAX_FILEOFF: u64 = (1 << 54) - 1;

/// One decoded extent record (`struct xfs_bmbt_irec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmbtIrec {
    /// First file block (`br_startoff`).
    pub startoff: u64,
    /// First filesystem block (`br_startblock`, `agno << agblklog | agbno`).
    pub startblock: u64,
    /// Length in blocks (`br_blockcount`).
    pub blockcount: u64,
    /// `XFS_EXT_UNWRITTEN`: allocated but reads as zeros.
    pub unwritten: bool,
}

impl BmbtIrec {
    /// Unpack a 16-byte big-endian record: bit 127 unwritten flag, 54 bits
    /// startoff, 52 bits startblock, 21 bits blockcount.
    pub fn decode(rec: [u8; 16]) -> Self {
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(rec.get(..8).unwrap_or(&[0; 8]));
        lo.copy_from_slice(rec.get(8..).unwrap_or(&[0; 8]));
        let l0 = u64::from_be_bytes(hi);
        let l1 = u64::from_be_bytes(lo);
        BmbtIrec {
            unwritten: l0 >> 63 != 0,
            startoff: (l0 >> 9) & XFS_MAX_FILEOFF,
            startblock: ((l0 & 0x1ff) << 43) | (l1 >> 21),
            blockcount: l1 & ((1 << 21) - 1),
        }
    }

    /// Pack into the 16-byte on-disk form (the inverse of [`decode`](Self::decode);
    /// fields are masked to their widths).
    pub fn encode(&self) -> [u8; 16] {
        let l0 = (u64::from(self.unwritten) << 63)
            | ((self.startoff & XFS_MAX_FILEOFF) << 9)
            | ((self.startblock >> 43) & 0x1ff);
        let l1 = ((self.startblock & ((1 << 43) - 1)) << 21) | (self.blockcount & ((1 << 21) - 1));
        let mut out = [0u8; 16];
        out.get_mut(..8)
            .unwrap_or(&mut [0; 8])
            .copy_from_slice(&l0.to_be_bytes());
        out.get_mut(8..)
            .unwrap_or(&mut [0; 8])
            .copy_from_slice(&l1.to_be_bytes());
        out
    }

    /// One past the last file block.
    pub fn end(&self) -> u64 {
        self.startoff.saturating_add(self.blockcount)
    }
}

/// Decode and check record `i` of `b` at `off` (inside the fs, non-empty,
/// after the previous one).
fn check_rec(
    fs: &XfsReader,
    b: &Buf<'_>,
    off: usize,
    prev_end: u64,
    field: &str,
) -> Result<BmbtIrec> {
    let raw = b.bytes(off, 16, field)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(raw);
    let r = BmbtIrec::decode(a);
    if r.blockcount == 0 {
        return Err(b.corrupt(off, field, "br_blockcount at least 1", 0));
    }
    if r.startoff < prev_end {
        return Err(b.corrupt(
            off,
            field,
            format!("br_startoff at least {prev_end} (extents in order, not overlapping)"),
            r.startoff,
        ));
    }
    if r.end() > XFS_MAX_FILEOFF {
        return Err(b.corrupt(
            off,
            field,
            "an extent ending below file block 2^54",
            r.end(),
        ));
    }
    if fs.geo.fsb_to_byte(r.startblock, r.blockcount).is_none() {
        return Err(b.corrupt(
            off,
            field,
            "an extent inside one allocation group of the filesystem",
            format!("{} blocks at fsblock {}", r.blockcount, r.startblock),
        ));
    }
    if r.unwritten && !fs.geo.has_extflg {
        return Err(b.corrupt(off, field, "no unwritten flag (EXTFLGBIT off)", "unwritten"));
    }
    Ok(r)
}

/// All extents of `inode`'s data fork, in file order, checked.
pub fn data_extents(fs: &XfsReader, inode: &Dinode) -> Result<Vec<BmbtIrec>> {
    let structure = format!("xfs inode {} data fork", inode.ino);
    let fork_at = inode
        .pos
        .saturating_add(u64::try_from(inode.fork_off).unwrap_or(0));
    let b = Buf::new(&inode.data_fork, &structure, fork_at);
    if inode.di_nextents > MAX_XFS_EXTENTS {
        return Err(Error::unsupported(format!(
            "xfs inode {} has {} extents, more than onramp reads ({MAX_XFS_EXTENTS})",
            inode.ino, inode.di_nextents
        )));
    }
    let n = usize::try_from(inode.di_nextents).unwrap_or(usize::MAX);
    let mut out: Vec<BmbtIrec> = Vec::new();
    match inode.di_format {
        XFS_DINODE_FMT_EXTENTS => {
            out.reserve(n);
            let mut prev = 0u64;
            for i in 0..n {
                let r = check_rec(fs, &b, i.saturating_mul(16), prev, "xfs_bmbt_rec")?;
                prev = r.end();
                out.push(r);
            }
        }
        XFS_DINODE_FMT_BTREE => {
            let level = b.u16(0, "bb_level")?;
            let numrecs = b.u16(2, "bb_numrecs")?;
            if level == 0 || usize::from(level) >= MAX_XFS_BMBT_LEVELS {
                return Err(b.corrupt(
                    0,
                    "bb_level",
                    format!("1..{MAX_XFS_BMBT_LEVELS} (bmbt root in the inode)"),
                    level,
                ));
            }
            // xfs_bmdr_maxrecs: (fork size - 4) / (key 8 + ptr 8).
            let maxrecs = inode.data_fork.len().saturating_sub(4) / 16;
            if numrecs == 0 || usize::from(numrecs) > maxrecs {
                return Err(b.corrupt(2, "bb_numrecs", format!("1..={maxrecs}"), numrecs));
            }
            let mut walk = Walk {
                fs,
                ino: inode.ino,
                limit: n,
                out: &mut out,
                prev_end: 0,
            };
            let ptr_base = 4usize.saturating_add(maxrecs.saturating_mul(8));
            for i in 0..usize::from(numrecs) {
                let off = ptr_base.saturating_add(i.saturating_mul(8));
                let ptr = b.u64(off, "bmdr ptr")?;
                walk.block(ptr, b.pos(off), level.saturating_sub(1), 1)?;
            }
        }
        f => {
            return Err(b.corrupt(
                0,
                "di_format",
                "extents (2) or btree (3) for a block-mapped fork",
                f,
            ))
        }
    }
    if out.len() != n {
        return Err(Error::corrupt(
            format!("xfs inode {}", inode.ino),
            "di_nextents",
            inode.pos.saturating_add(76),
            format!("{} (extents found in the bmbt)", out.len()),
            n,
        ));
    }
    Ok(out)
}

struct Walk<'a> {
    fs: &'a XfsReader,
    ino: u64,
    limit: usize,
    out: &'a mut Vec<BmbtIrec>,
    prev_end: u64,
}

impl Walk<'_> {
    /// Visit bmbt block `fsbno`, which must be at `level`; `depth` counts
    /// the blocks above it (bounded by [`MAX_XFS_BMBT_LEVELS`]).
    fn block(&mut self, fsbno: u64, ptr_pos: u64, level: u16, depth: usize) -> Result<()> {
        let fs = self.fs;
        if depth >= MAX_XFS_BMBT_LEVELS {
            return Err(Error::corrupt_msg(format!(
                "xfs inode {}: bmbt deeper than {MAX_XFS_BMBT_LEVELS} levels",
                self.ino
            )));
        }
        let bs = fs.geo.block_size;
        let pos = fs.geo.fsb_to_byte(fsbno, 1).ok_or_else(|| {
            Error::corrupt(
                format!("xfs inode {} bmbt", self.ino),
                "ptr",
                ptr_pos,
                "a filesystem block inside the filesystem",
                fsbno,
            )
        })?;
        let data = fs.read_vec(pos, u64::from(bs))?;
        let structure = format!("xfs inode {} bmbt block", self.ino);
        let b = Buf::new(&data, &structure, pos);
        let magic = b.u32(0, "bb_magic")?;
        let (want, hdr) = if fs.geo.v5 {
            (XFS_BMAP_CRC_MAGIC, XFS_BTREE_LBLOCK_CRC_LEN)
        } else {
            (XFS_BMAP_MAGIC, XFS_BTREE_LBLOCK_LEN)
        };
        if magic != want {
            return Err(b.corrupt(0, "bb_magic", format!("{want:#x}"), format!("{magic:#x}")));
        }
        if fs.geo.v5 {
            crc::verify(&data, XFS_BTREE_LBLOCK_CRC_OFF, &structure, "bb_crc", pos)?;
            let blkno = b.u64(24, "bb_blkno")?;
            if blkno != pos >> 9 {
                return Err(b.corrupt(24, "bb_blkno", pos >> 9, blkno));
            }
            let uuid = b.uuid(40, "bb_uuid")?;
            if uuid != fs.geo.meta_uuid {
                return Err(b.corrupt(
                    40,
                    "bb_uuid",
                    super::sb::format_uuid(&fs.geo.meta_uuid),
                    super::sb::format_uuid(&uuid),
                ));
            }
            let owner = b.u64(56, "bb_owner")?;
            if owner != self.ino {
                return Err(b.corrupt(56, "bb_owner", self.ino, owner));
            }
        }
        let lvl = b.u16(4, "bb_level")?;
        if lvl != level {
            return Err(b.corrupt(4, "bb_level", level, lvl));
        }
        let numrecs = usize::from(b.u16(6, "bb_numrecs")?);
        let space = data.len().saturating_sub(hdr);
        // Leaf records are 16 bytes; node entries are a key (8) plus a pointer (8).
        let maxrecs = space / 16;
        if numrecs == 0 || numrecs > maxrecs {
            return Err(b.corrupt(6, "bb_numrecs", format!("1..={maxrecs}"), numrecs));
        }
        if level == 0 {
            for i in 0..numrecs {
                if self.out.len() >= self.limit {
                    return Err(Error::corrupt(
                        format!("xfs inode {}", self.ino),
                        "di_nextents",
                        0,
                        self.limit,
                        "more extent records in the bmbt",
                    ));
                }
                let off = hdr.saturating_add(i.saturating_mul(16));
                let r = check_rec(fs, &b, off, self.prev_end, "xfs_bmbt_rec")?;
                self.prev_end = r.end();
                self.out.push(r);
            }
        } else {
            let ptr_base = hdr.saturating_add(maxrecs.saturating_mul(8));
            for i in 0..numrecs {
                let off = ptr_base.saturating_add(i.saturating_mul(8));
                let ptr = b.u64(off, "bmbt ptr")?;
                self.block(
                    ptr,
                    b.pos(off),
                    level.saturating_sub(1),
                    depth.saturating_add(1),
                )?;
            }
        }
        Ok(())
    }
}

/// Fill `buf` with the fork bytes at byte `offset`, through `extents` (in
/// file order): holes and unwritten extents are zeros. With `strict`, a hole
/// or unwritten extent anywhere in the range is an error (directory blocks).
pub fn read_mapped(
    fs: &XfsReader,
    ino: u64,
    extents: &[BmbtIrec],
    offset: u64,
    buf: &mut [u8],
    strict: bool,
) -> Result<()> {
    buf.fill(0);
    let bl = fs.geo.block_log;
    let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
    let end = offset.saturating_add(len);
    // First extent that ends after `offset`.
    let first_block = offset >> bl;
    let start = extents.partition_point(|e| e.end() <= first_block);
    let mut covered = 0u64;
    for e in extents.get(start..).unwrap_or_default() {
        let e_start = e.startoff.checked_shl(bl).unwrap_or(u64::MAX);
        if e_start >= end {
            break;
        }
        let e_end = e.end().checked_shl(bl).unwrap_or(u64::MAX);
        let a = e_start.max(offset);
        let z = e_end.min(end);
        if a >= z {
            continue;
        }
        if e.unwritten {
            if strict {
                return Err(Error::corrupt_msg(format!(
                    "xfs inode {ino}: unwritten extent at file block {} inside directory data",
                    e.startoff
                )));
            }
            continue;
        }
        let disk = fs
            .geo
            .fsb_to_byte(e.startblock, e.blockcount)
            .ok_or_else(|| {
                Error::corrupt_msg(format!("xfs inode {ino}: extent outside the filesystem"))
            })?
            .saturating_add(a.saturating_sub(e_start));
        let lo = usize::try_from(a.saturating_sub(offset)).unwrap_or(usize::MAX);
        let hi = usize::try_from(z.saturating_sub(offset)).unwrap_or(usize::MAX);
        let dst = buf
            .get_mut(lo..hi)
            .ok_or_else(|| Error::corrupt_msg("xfs: extent arithmetic"))?;
        fs.src.read_at(disk, dst)?;
        covered = covered.saturating_add(z.saturating_sub(a));
    }
    if strict && covered != len {
        return Err(Error::corrupt_msg(format!(
            "xfs inode {ino}: directory block at byte {offset} is not fully mapped (hole in directory data)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rec_roundtrip() {
        let r = BmbtIrec {
            startoff: 0x2_1234_5678,
            startblock: 0xf_ffff_ffff_ffff,
            blockcount: 0x1f_ffff,
            unwritten: true,
        };
        assert_eq!(BmbtIrec::decode(r.encode()), r);
        let z = BmbtIrec {
            startoff: 9,
            startblock: 99348,
            blockcount: 1,
            unwritten: false,
        };
        assert_eq!(BmbtIrec::decode(z.encode()), z);
    }
}
