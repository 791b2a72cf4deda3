//! New inode chunks: what the writer does when no existing chunk has a free
//! inode (the kernel's `xfs_ialloc_ag_alloc` and `xfs_ialloc_inode_init`,
//! fs/xfs/libxfs/xfs_ialloc.c; layouts from xfs_format.h and "XFS
//! Algorithms & Data Structures", "Inode B+trees" / "Sparse Inodes").
//!
//! - A full chunk is `XFS_INODES_PER_CHUNK` (64) inodes, `64 * inodesize /
//!   blocksize` blocks, placed at an AG block that is a multiple of
//!   `sb_inoalignmt` when the superblock has the ALIGN feature (xfs_repair
//!   rejects inode records whose first block is not). The preferred AG is
//!   tried first, then the others in order.
//! - With sparse inodes (`XFS_SB_FEAT_INCOMPAT_SPINODES`) and no aligned full
//!   chunk anywhere, a sparse chunk of `sb_spino_align` blocks (aligned to
//!   `sb_spino_align`) is taken; its record starts at the chunk-aligned
//!   (`sb_inoalignmt`) inode below it and the hole mask marks the absent
//!   groups of 4 inodes. Places whose aligned chunk already has a record are
//!   skipped (the kernel would merge into that record; not merging is also
//!   valid, only less dense).
//! - Every inode of the allocated blocks is initialised as the kernel and
//!   mkfs do: zeroed, magic "IN", version 3, generation 0, `di_next_unlinked`
//!   = NULLAGINO, `di_ino`, `di_uuid` = meta UUID, CRC; mode 0 (free).
//! - The inobt record (all inodes free, holes marked free too) and, with
//!   finobt, the same finobt record are inserted; `agi_count`,
//!   `agi_freecount`, `agi_newino`, `sb_icount` and (through the writer's
//!   pending delta) `sb_ifree` follow. The blocks come out of the free-space
//!   trees by [`XfsWriter::alloc_aligned`], which updates both trees, the AGF
//!   and (through the pending delta) `sb_fdblocks`.
//!
//! Refused, naming the reason: more than 64 inodes per block (chunks smaller
//! than a block), and the inode limit `sb_imax_pct`.

use super::btree::{BNO, CNT, FINO, INO};
use super::{alloc_rec, g16, g32, g64, p16, p32, p64, put, XfsWriter, AGI_CRC, DI_CRC, NULLAGINO};
use crate::error::{Error, Result};
use crate::fs::xfs::crc;
use crate::fs::xfs::sb::XFS_SB_CRC_OFF;

/// `XFS_INODES_PER_CHUNK`.
const INODES_PER_CHUNK: u32 = 64;
/// `XFS_INODES_PER_HOLEMASK_BIT`: inodes covered by one hole mask bit.
const INODES_PER_HOLEMASK_BIT: u32 = 4;
/// `XFS_SB_VERSION_ALIGNBIT`: inode chunks are aligned to `sb_inoalignmt`.
const SB_VERSION_ALIGNBIT: u16 = 0x0080;
/// Superblock byte offsets (xfs_format.h `struct xfs_dsb`).
const SB_VERSIONNUM: usize = 100;
const SB_IMAX_PCT: usize = 127;
const SB_ICOUNT: usize = 128;
const SB_INOALIGNMT: usize = 180;
/// AGI byte offsets (`struct xfs_agi`).
const AGI_LENGTH: usize = 12;
const AGI_COUNT: usize = 16;
const AGI_ROOT: usize = 20;
const AGI_LEVEL: usize = 24;
const AGI_FREECOUNT: usize = 28;
const AGI_NEWINO: usize = 32;
const AGI_FREE_ROOT: usize = 328;
const AGI_FREE_LEVEL: usize = 332;
/// AGF byte offsets (`struct xfs_agf`).
const AGF_LENGTH: usize = 12;
const AGF_BNO_ROOT: usize = 16;
const AGF_CNT_ROOT: usize = 20;
const AGF_BNO_LEVEL: usize = 28;
const AGF_CNT_LEVEL: usize = 32;

/// How a piece is cut out of a free extent, cheapest first: from either end
/// (one record updated in each tree), from the middle (an extra record
/// inserted in each tree), or the whole extent (a record removed from each).
fn cut_cost(s: u32, c: u32, a: u32, len: u32) -> u8 {
    match (a > s, a + len < s + c) {
        (true, false) | (false, true) => 0,
        (true, true) => 1,
        (false, false) => 2,
    }
}

/// The sparse-chunk hole mask of a chunk whose inodes `first..first+count`
/// (relative to its first inode) exist: one bit per 4 inodes, set where
/// there are none.
fn hole_mask(first: u32, count: u32) -> u16 {
    let (first, bits) = (
        first / INODES_PER_HOLEMASK_BIT,
        count / INODES_PER_HOLEMASK_BIT,
    );
    if bits >= 16 {
        return 0;
    }
    let present = ((1u32 << bits) - 1) << first;
    !(present as u16)
}

/// The inode-chunk geometry of a filesystem.
struct ChunkGeo {
    /// Inodes per block.
    inopb: u32,
    /// Blocks of a full chunk (`ialloc_blks`).
    blks: u32,
    /// Alignment of a full chunk's first block (`sb_inoalignmt` or 1).
    align: u32,
    /// Blocks (and alignment) of a sparse allocation; 0 without sparse inodes.
    sparse_blks: u32,
}

impl XfsWriter {
    fn chunk_geo(&self, sb: &[u8]) -> Result<ChunkGeo> {
        let bs = self.geo.block_size;
        let inopb = bs / self.geo.inode_size;
        if inopb == 0 || inopb > INODES_PER_CHUNK {
            return Err(Error::unsupported(format!(
                "xfs: {inopb} inodes per block: inode chunks smaller than a block are not allocated by this writer"
            )));
        }
        let blks = INODES_PER_CHUNK / inopb;
        let align = if g16(sb, SB_VERSIONNUM) & SB_VERSION_ALIGNBIT != 0 {
            g32(sb, SB_INOALIGNMT).max(1)
        } else {
            1
        };
        let sparse_blks = if self.sparse {
            let sp = self.geo.sb.sb_spino_align;
            // Sparse inodes require chunk-sized inode alignment (mkfs sets
            // sb_inoalignmt = ialloc_blks) and a whole number of 4-inode groups.
            if sp == 0
                || sp >= blks
                || !blks.is_multiple_of(sp)
                || align != blks
                || !(sp * inopb).is_multiple_of(INODES_PER_HOLEMASK_BIT)
            {
                0
            } else {
                sp
            }
        } else {
            0
        };
        if align > self.geo.ag_blocks || blks > self.geo.ag_blocks {
            return Err(Error::corrupt_msg(format!(
                "xfs: inode alignment {align} / chunk of {blks} blocks exceeds the AG size"
            )));
        }
        Ok(ChunkGeo {
            inopb,
            blks,
            align,
            sparse_blks,
        })
    }

    /// Allocate `len` blocks at a multiple of `align` inside AG `agno`, with
    /// the first block at or after `min` and the last before `max`; `ok`
    /// vets a candidate start. Returns the first block, or `None` when no
    /// free extent fits.
    pub(crate) fn alloc_aligned(
        &mut self,
        agno: u32,
        len: u32,
        align: u32,
        (min, max): (u32, u32),
        ok: &dyn Fn(u32) -> bool,
    ) -> Result<Option<u32>> {
        let align = align.max(1);
        let (_, agf) = self.agf(agno)?;
        let max = max.min(g32(&agf, AGF_LENGTH));
        let recs = self.bt_records(
            &BNO,
            agno,
            g32(&agf, AGF_BNO_ROOT),
            g32(&agf, AGF_BNO_LEVEL),
        )?;
        // (cost, start) of the best cut; per extent the lowest aligned start
        // that fits, and its aligned tail when that is cheaper.
        let mut best: Option<(u8, u32, (u32, u32))> = None;
        let ag_len = u64::from(g32(&agf, AGF_LENGTH));
        for r in &recs {
            let (s, c) = (g32(r, 0), g32(r, 4));
            if c == 0 || u64::from(s) + u64::from(c) > ag_len {
                return Err(Error::corrupt_msg(format!(
                    "xfs AG {agno}: bnobt record {s}+{c} lies outside the AG ({ag_len} blocks)"
                )));
            }
            let end = (u64::from(s) + u64::from(c)).min(u64::from(max));
            let lo = s.max(min).div_ceil(align) * align;
            let mut cands = Vec::with_capacity(2);
            if u64::from(lo) + u64::from(len) <= end {
                cands.push(lo);
                let tail = ((end - u64::from(len)) as u32) / align * align;
                if tail > lo {
                    cands.push(tail);
                }
            }
            for a in cands {
                if !ok(a) {
                    continue;
                }
                let cost = cut_cost(s, c, a, len);
                if best.is_none_or(|(bc, ba, _)| (cost, a) < (bc, ba)) {
                    best = Some((cost, a, (s, c)));
                }
            }
        }
        let Some((_, a, (s, c))) = best else {
            return Ok(None);
        };
        self.cut_free(agno, (s, c), a, len)?;
        Ok(Some(a))
    }

    /// Remove `a..a+len` from the free extent `(s, c)` in both free-space
    /// trees and the AGF.
    fn cut_free(&mut self, agno: u32, (s, c): (u32, u32), a: u32, len: u32) -> Result<()> {
        let left = a - s;
        let right = s + c - (a + len);
        let roots = |agf: &[u8]| {
            (
                g32(agf, AGF_BNO_ROOT),
                g32(agf, AGF_BNO_LEVEL),
                g32(agf, AGF_CNT_ROOT),
                g32(agf, AGF_CNT_LEVEL),
            )
        };
        let (_, agf) = self.agf(agno)?;
        let (br, bl, _, _) = roots(&agf);
        let p = self.bt_find(&BNO, agno, br, bl, (u64::from(s), 0))?;
        match (left > 0, right > 0) {
            (true, false) => {
                self.bt_update(&BNO, agno, &p, &alloc_rec(s, left))?;
                let (_, agf) = self.agf(agno)?;
                self.cnt_move(agno, &agf, (s, c), (s, left))?;
            }
            (false, true) => {
                self.bt_update(&BNO, agno, &p, &alloc_rec(a + len, right))?;
                let (_, agf) = self.agf(agno)?;
                self.cnt_move(agno, &agf, (s, c), (a + len, right))?;
            }
            (true, true) => {
                self.bt_update(&BNO, agno, &p, &alloc_rec(s, left))?;
                let (_, agf) = self.agf(agno)?;
                let (br, bl, _, _) = roots(&agf);
                let p = self.bt_lookup(&BNO, agno, br, bl, (u64::from(a + len), 0))?;
                self.bt_insert(&BNO, agno, &p, &alloc_rec(a + len, right))?;
                let (_, agf) = self.agf(agno)?;
                self.cnt_move(agno, &agf, (s, c), (s, left))?;
                let (_, agf) = self.agf(agno)?;
                let (_, _, cr, cl) = roots(&agf);
                let key = (u64::from(right), u64::from(a + len));
                let p = self.bt_lookup(&CNT, agno, cr, cl, key)?;
                self.bt_insert(&CNT, agno, &p, &alloc_rec(a + len, right))?;
            }
            (false, false) => {
                self.bt_delete(&BNO, agno, &p)?;
                let (_, agf) = self.agf(agno)?;
                let (_, _, cr, cl) = roots(&agf);
                let p = self.bt_find(&CNT, agno, cr, cl, (u64::from(c), u64::from(s)))?;
                self.bt_delete(&CNT, agno, &p)?;
            }
        }
        let (pos, agf) = self.agf(agno)?;
        self.agf_finish(agno, pos, agf, -i64::from(len))
    }

    /// Allocate and initialise a new inode chunk (full, or sparse when no
    /// aligned full chunk fits anywhere), preferring AG `pref`; returns its AG.
    pub(super) fn new_chunk(&mut self, pref: u32) -> Result<u32> {
        let sb = self.read(0, self.sect() as usize)?;
        let cg = self.chunk_geo(&sb)?;
        let pct = u64::from(sb[SB_IMAX_PCT]);
        if pct != 0 {
            // xfs_set_maxicount: a percentage of the data blocks, in whole chunks.
            let blocks = self.geo.data_blocks * pct / 100;
            let max = blocks / u64::from(cg.blks) * u64::from(INODES_PER_CHUNK);
            if g64(&sb, SB_ICOUNT) + u64::from(INODES_PER_CHUNK) > max {
                return Err(Error::unsupported(format!(
                    "xfs: no free inode and the inode limit (imaxpct {pct}%: {max} inodes) is reached"
                )));
            }
        }
        let n = self.geo.ag_count;
        for k in 0..n {
            let agno = (pref + k) % n;
            if let Some(a) =
                self.alloc_aligned(agno, cg.blks, cg.align, (1, u32::MAX), &|_| true)?
            {
                self.init_chunk(agno, &cg, a, a, cg.blks)?;
                return Ok(agno);
            }
        }
        if cg.sparse_blks != 0 {
            for k in 0..n {
                let agno = (pref + k) % n;
                let (_, agi) = self.agi(agno)?;
                let recs =
                    self.bt_records(&INO, agno, g32(&agi, AGI_ROOT), g32(&agi, AGI_LEVEL))?;
                let starts: Vec<u32> = recs.iter().map(|r| g32(r, 0)).collect();
                let (inopb, align) = (cg.inopb, cg.align);
                // The record's chunk must start past block 0 and end inside the AG.
                let agi_len = g32(&agi, AGI_LENGTH);
                let ok = |a: u32| {
                    let cs = a / align * align;
                    cs > 0 && cs + cg.blks <= agi_len && !starts.contains(&(cs * inopb))
                };
                let span = (align, agi_len);
                if let Some(a) =
                    self.alloc_aligned(agno, cg.sparse_blks, cg.sparse_blks, span, &ok)?
                {
                    let cs = a / align * align;
                    self.init_chunk(agno, &cg, cs, a, cg.sparse_blks)?;
                    return Ok(agno);
                }
            }
        }
        Err(Error::unsupported(format!(
            "xfs: no free inode and no room for a new inode chunk ({} blocks aligned to {}{})",
            cg.blks,
            cg.align,
            if cg.sparse_blks != 0 {
                format!(", nor a sparse chunk of {} blocks", cg.sparse_blks)
            } else {
                String::new()
            }
        )))
    }

    /// Initialise the inodes of blocks `a..a+len` (inside the chunk starting
    /// at block `cs`) and record the chunk in the inode trees, AGI and
    /// superblock.
    fn init_chunk(&mut self, agno: u32, cg: &ChunkGeo, cs: u32, a: u32, len: u32) -> Result<()> {
        let bs = self.bs();
        let isz = self.geo.inode_size as usize;
        let startino = cs * cg.inopb;
        let mut buf = vec![0u8; bs * len as usize];
        for (i, raw) in buf.chunks_exact_mut(isz).enumerate() {
            let agino = a * cg.inopb + i as u32;
            let ino = (u64::from(agno) << self.ino_bits()) | u64::from(agino);
            p16(raw, 0, 0x494e);
            raw[4] = 3;
            p32(raw, 96, NULLAGINO);
            p64(raw, 152, ino);
            put(raw, 160, &self.geo.meta_uuid);
            crc::set(raw, DI_CRC).ok_or_else(|| Error::invalid("xfs: inode crc"))?;
        }
        self.dev.write_at(self.ag_pos(agno, a), &buf)?;
        let count = len * cg.inopb;
        // Hole mask: one bit per 4 inodes, set where the chunk has no blocks.
        let holemask = hole_mask((a - cs) * cg.inopb, count);
        let mut rec = [0u8; 16];
        p32(&mut rec, 0, startino);
        if self.sparse {
            p16(&mut rec, 4, holemask);
            rec[6] = count as u8;
            rec[7] = count as u8;
        } else {
            p32(&mut rec, 4, count);
        }
        p64(&mut rec, 8, u64::MAX);
        let key = (u64::from(startino), 0);
        let (_, agi) = self.agi(agno)?;
        let p = self.bt_lookup(&INO, agno, g32(&agi, AGI_ROOT), g32(&agi, AGI_LEVEL), key)?;
        if self
            .bt_get(&INO, agno, &p)?
            .is_some_and(|r| g32(&r, 0) == startino)
        {
            return Err(Error::corrupt_msg(format!(
                "xfs AG {agno}: inobt already has a record for inode {startino}"
            )));
        }
        self.bt_insert(&INO, agno, &p, &rec)?;
        if self.finobt {
            let (_, agi) = self.agi(agno)?;
            let (r, l) = (g32(&agi, AGI_FREE_ROOT), g32(&agi, AGI_FREE_LEVEL));
            let p = self.bt_lookup(&FINO, agno, r, l, key)?;
            self.bt_insert(&FINO, agno, &p, &rec)?;
        }
        let (pos, mut agi) = self.agi(agno)?;
        let (c, f) = (g32(&agi, AGI_COUNT), g32(&agi, AGI_FREECOUNT));
        p32(&mut agi, AGI_COUNT, c + count);
        p32(&mut agi, AGI_FREECOUNT, f + count);
        p32(&mut agi, AGI_NEWINO, startino);
        self.write_meta(pos, &mut agi, AGI_CRC)?;
        self.d_ifree += i64::from(count);
        let mut sb = self.read(0, self.sect() as usize)?;
        let icount = g64(&sb, SB_ICOUNT);
        p64(&mut sb, SB_ICOUNT, icount + u64::from(count));
        self.write_meta(0, &mut sb, XFS_SB_CRC_OFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole_masks() {
        assert_eq!(hole_mask(0, 64), 0);
        // Lower half present (blocks 0..4 of an 8-block chunk, 8 inodes each).
        assert_eq!(hole_mask(0, 32), 0xff00);
        assert_eq!(hole_mask(32, 32), 0x00ff);
        // Inodes 16..32 present: hole mask bits 4..8 clear.
        assert_eq!(hole_mask(16, 16), 0xff0f);
    }

    #[test]
    fn cheapest_cut_first() {
        assert_eq!(cut_cost(10, 20, 10, 8), 0); // head
        assert_eq!(cut_cost(10, 20, 22, 8), 0); // tail
        assert_eq!(cut_cost(10, 20, 16, 8), 1); // middle: one more record
        assert_eq!(cut_cost(16, 8, 16, 8), 2); // whole: one record fewer
    }
}
