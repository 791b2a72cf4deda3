//! Leaf-form directories ("XFS Algorithms & Data Structures", "Leaf
//! Directories"): data blocks ("XDD3") in the first 32 GiB of the directory's
//! address space and one hash-index leaf block ("LEAF1", magic 0x3df1 on v5)
//! at `XFS_DIR2_LEAF_OFFSET`, whose tail holds the best free length of each
//! data block (`bests[]`, `bestcount`).
//!
//! Adding an entry takes the first data block whose best free region fits
//! (or appends a new data block), splits that free region, recomputes the
//! block's bestfree table, and inserts (hash, address) in hash order into the
//! leaf. Removing frees the entry's region (merged with free neighbours) and
//! drops its leaf entry. A full leaf (which the kernel converts to node form)
//! is refused.

use super::{entsize, g16, g32, g64, p16, p32, p64, put, XfsWriter};
use crate::error::{Error, Result};
use crate::fs::xfs::bmap::{data_extents, BmbtIrec};
use crate::fs::xfs::dir::{da_hashname, XFS_DIR2_LEAF_OFFSET, XFS_DIR3_DATA_MAGIC};
use crate::fs::xfs::inode::{Dinode, XFS_DINODE_FMT_BTREE, XFS_DINODE_FMT_EXTENTS};

/// `XFS_DIR3_LEAF1_MAGIC`.
const LEAF1_MAGIC: u16 = 0x3df1;
/// v5 leaf header length (`xfs_dir3_leaf_hdr`).
const LEAF_HDR: usize = 64;
/// v5 data block header length.
const DATA_HDR: usize = 64;
/// Free-region tag.
const FREE_TAG: u16 = 0xffff;

/// A leaf-form directory's geometry.
pub(super) struct Leaf {
    extents: Vec<BmbtIrec>,
    /// Byte position of the leaf block.
    leaf_pos: u64,
}

impl XfsWriter {
    fn dir_blk_pos(&self, ext: &[BmbtIrec], fblock: u64) -> Option<u64> {
        let n = 1u64 << self.geo.dir_blk_log;
        ext.iter()
            .find(|e| {
                e.startoff <= fblock && fblock + n <= e.startoff + e.blockcount && !e.unwritten
            })
            .and_then(|e| {
                self.geo
                    .fsb_to_byte(e.startblock + (fblock - e.startoff), n)
            })
    }

    /// Byte position of data block `db` of leaf directory `d`.
    fn data_blk_pos(&self, d: &Dinode, l: &Leaf, db: usize) -> Result<u64> {
        let fpd = 1u64 << self.geo.dir_blk_log;
        self.dir_blk_pos(&l.extents, db as u64 * fpd)
            .ok_or_else(|| {
                Error::corrupt_msg(format!(
                    "xfs directory inode {}: data block {db} unmapped",
                    d.ino
                ))
            })
    }

    /// `Some` when `d` is a leaf-form directory (extents, one LEAF1 block).
    pub(super) fn leaf_dir(&self, d: &Dinode) -> Result<Option<Leaf>> {
        // Not di_size: a leaf directory with one data block has the size of a block directory.
        if !matches!(d.di_format, XFS_DINODE_FMT_EXTENTS | XFS_DINODE_FMT_BTREE) {
            return Ok(None);
        }
        let extents = data_extents(&self.rd, d)?;
        let lblk = XFS_DIR2_LEAF_OFFSET >> self.geo.block_log;
        let Some(leaf_pos) = self.dir_blk_pos(&extents, lblk) else {
            return Ok(None);
        };
        let b = self.read(leaf_pos, 16)?;
        if g16(&b, 8) != LEAF1_MAGIC {
            return Ok(None);
        }
        Ok(Some(Leaf { extents, leaf_pos }))
    }

    /// Walk the regions of a data block: (offset, length, is_free).
    fn regions(&self, b: &[u8], pos: u64) -> Result<Vec<(usize, usize, bool)>> {
        let mut v = Vec::new();
        let mut o = DATA_HDR;
        while o < b.len() {
            let (len, free) = if g16(b, o) == FREE_TAG {
                (usize::from(g16(b, o + 2)), true)
            } else {
                (
                    entsize(usize::from(b.get(o + 8).copied().unwrap_or(0))),
                    false,
                )
            };
            if len == 0 || len % 8 != 0 || o + len > b.len() {
                return Err(Error::corrupt(
                    "xfs directory data block",
                    "entry length",
                    pos + o as u64,
                    "a multiple of 8 inside the block",
                    len,
                ));
            }
            v.push((o, len, free));
            o += len;
        }
        Ok(v)
    }

    /// Coalesce adjacent free regions, rewrite their headers and tags, and
    /// rebuild the bestfree table; returns the longest free length.
    fn data_fixup(&self, b: &mut [u8], pos: u64) -> Result<usize> {
        let regs = self.regions(b, pos)?;
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (o, l, free) in regs {
            if !free {
                continue;
            }
            match merged.last_mut() {
                Some((mo, ml)) if *mo + *ml == o => *ml += l,
                _ => merged.push((o, l)),
            }
        }
        for &(o, l) in &merged {
            p16(b, o, FREE_TAG);
            p16(b, o + 2, l as u16);
            p16(b, o + l - 2, o as u16);
        }
        let mut best = merged.clone();
        best.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        b[48..60].fill(0);
        for (i, (o, l)) in best.iter().take(3).enumerate() {
            p16(b, 48 + i * 4, *o as u16);
            p16(b, 50 + i * 4, *l as u16);
        }
        Ok(best.first().map_or(0, |x| x.1))
    }

    fn leaf_read(&self, l: &Leaf) -> Result<Vec<u8>> {
        self.read(l.leaf_pos, self.geo.dir_block_size as usize)
    }

    pub(super) fn leaf_add(
        &mut self,
        d: &Dinode,
        l: Leaf,
        name: &[u8],
        ino: u64,
        ftype: u8,
    ) -> Result<()> {
        let dbs = self.geo.dir_block_size as usize;
        let fpd = 1u64 << self.geo.dir_blk_log; // fs blocks per dir block
        let need = entsize(name.len());
        let mut leaf = self.leaf_read(&l)?;
        let bestcount = g32(&leaf, dbs - 4) as usize;
        let bests_at = dbs - 4 - 2 * bestcount;
        let count = usize::from(g16(&leaf, 56));
        if bestcount == 0 || LEAF_HDR + count * 8 > bests_at {
            return Err(Error::corrupt_msg(format!(
                "xfs directory inode {}: bad leaf tail",
                d.ino
            )));
        }
        let (pos_ino, mut raw) = self.iread(d.ino)?;
        let mut db = (0..bestcount).find(|&i| usize::from(g16(&leaf, bests_at + 2 * i)) >= need);
        let mut bests_at = bests_at;
        let mut new_block = None;
        if db.is_none() {
            // A new data block at the end of the data section; the bests array grows.
            if LEAF_HDR + (count + 1) * 8 > bests_at - 2 {
                // The leaf block is full: rebuild in node form.
                return self.node_add(d, name, ino, ftype);
            }
            let (agno, agbno, got) = self.alloc(self.ag_of_ino(d.ino), fpd)?;
            if u64::from(got) < fpd {
                self.free(agno, agbno, got)?;
                return Err(Error::unsupported(
                    "xfs: no contiguous free space for a directory block",
                ));
            }
            let idx = bestcount;
            let rec = BmbtIrec {
                startoff: idx as u64 * fpd,
                startblock: self.fsb(agno, agbno),
                blockcount: fpd,
                unwritten: false,
            };
            // Keep extent records sorted by file offset: data blocks precede the leaf.
            let mut recs = l.extents.clone();
            recs.push(rec);
            recs.sort_by_key(|r| r.startoff);
            self.set_data_fork(&mut raw, &recs)?;
            let nb = g64(&raw, 64) + fpd;
            p64(&mut raw, 64, nb);
            p64(&mut raw, 56, ((idx + 1) * dbs) as u64);
            let bpos = self.ag_pos(agno, agbno);
            let mut b = vec![0u8; dbs];
            p32(&mut b, 0, XFS_DIR3_DATA_MAGIC);
            p64(&mut b, 8, bpos >> 9);
            put(&mut b, 24, &self.geo.meta_uuid);
            p64(&mut b, 40, d.ino);
            p16(&mut b, DATA_HDR, FREE_TAG);
            p16(&mut b, DATA_HDR + 2, (dbs - DATA_HDR) as u16);
            p16(&mut b, dbs - 2, DATA_HDR as u16);
            // Grow bests: shift the array down by 2 bytes.
            leaf.copy_within(bests_at..dbs - 4, bests_at - 2);
            bests_at -= 2;
            p16(&mut leaf, dbs - 6, (dbs - DATA_HDR) as u16);
            p32(&mut leaf, dbs - 4, (bestcount + 1) as u32);
            new_block = Some((bpos, b));
            db = Some(idx);
        }
        let db = db.unwrap_or(0);
        if LEAF_HDR + (count + 1) * 8 > bests_at {
            // The leaf block is full: rebuild in node form.
            return self.node_add(d, name, ino, ftype);
        }
        let (bpos, mut b) = match new_block {
            Some(x) => x,
            None => {
                let bpos = self.data_blk_pos(d, &l, db)?;
                (bpos, self.read(bpos, dbs)?)
            }
        };
        let regs = self.regions(&b, bpos)?;
        let (o, len, _) = regs
            .into_iter()
            .find(|&(_, len, free)| free && len >= need)
            .ok_or_else(|| {
                Error::corrupt_msg(format!(
                    "xfs directory inode {}: bests[{db}] overstates free space",
                    d.ino
                ))
            })?;
        b[o..o + need].fill(0);
        p64(&mut b, o, ino);
        b[o + 8] = name.len() as u8;
        put(&mut b, o + 9, name);
        b[o + 9 + name.len()] = ftype;
        p16(&mut b, o + need - 2, o as u16);
        if len > need {
            p16(&mut b, o + need, FREE_TAG);
            p16(&mut b, o + need + 2, (len - need) as u16);
        }
        let best = self.data_fixup(&mut b, bpos)?;
        self.write_meta(bpos, &mut b, 4)?;
        // Leaf: (hash, address) in hash order.
        let addr = ((db * dbs + o) / 8) as u32;
        let hash = da_hashname(name);
        let mut i = 0;
        while i < count && g32(&leaf, LEAF_HDR + i * 8) <= hash {
            i += 1;
        }
        let at = LEAF_HDR + i * 8;
        leaf.copy_within(at..LEAF_HDR + count * 8, at + 8);
        p32(&mut leaf, at, hash);
        p32(&mut leaf, at + 4, addr);
        p16(&mut leaf, 56, (count + 1) as u16);
        p16(&mut leaf, bests_at + 2 * db, best as u16);
        self.write_meta(l.leaf_pos, &mut leaf, 12)?;
        self.touch(&mut raw, true);
        self.iwrite(pos_ino, &mut raw)
    }

    pub(super) fn leaf_remove(&mut self, d: &Dinode, l: Leaf, name: &[u8]) -> Result<()> {
        let dbs = self.geo.dir_block_size as usize;
        let mut leaf = self.leaf_read(&l)?;
        let bestcount = g32(&leaf, dbs - 4) as usize;
        let bests_at = dbs - 4 - 2 * bestcount;
        let count = usize::from(g16(&leaf, 56));
        let hash = da_hashname(name);
        for i in 0..count {
            let at = LEAF_HDR + i * 8;
            if g32(&leaf, at) != hash {
                continue;
            }
            let addr = g32(&leaf, at + 4) as usize * 8;
            if addr == 0 {
                continue;
            }
            let (db, o) = (addr / dbs, addr % dbs);
            if db >= bestcount {
                continue;
            }
            let bpos = self.data_blk_pos(d, &l, db)?;
            let mut b = self.read(bpos, dbs)?;
            let nl = usize::from(b.get(o + 8).copied().unwrap_or(0));
            if b.get(o + 9..o + 9 + nl) != Some(name) {
                continue;
            }
            let len = entsize(nl);
            b[o..o + len].fill(0);
            p16(&mut b, o, FREE_TAG);
            p16(&mut b, o + 2, len as u16);
            p16(&mut b, o + len - 2, o as u16);
            let best = self.data_fixup(&mut b, bpos)?;
            if best == dbs - DATA_HDR {
                // The data block would be empty (xfs_repair junks those):
                // rebuild the directory without it.
                return self.node_remove(d, name);
            }
            self.write_meta(bpos, &mut b, 4)?;
            leaf.copy_within(at + 8..LEAF_HDR + count * 8, at);
            let end = LEAF_HDR + (count - 1) * 8;
            leaf[end..end + 8].fill(0);
            p16(&mut leaf, 56, (count - 1) as u16);
            p16(&mut leaf, bests_at + 2 * db, best as u16);
            self.write_meta(l.leaf_pos, &mut leaf, 12)?;
            let (pos_ino, mut raw) = self.iread(d.ino)?;
            self.touch(&mut raw, true);
            return self.iwrite(pos_ino, &mut raw);
        }
        Err(Error::invalid(format!(
            "xfs: no entry {:?} in directory inode {}",
            String::from_utf8_lossy(name),
            d.ino
        )))
    }
}
