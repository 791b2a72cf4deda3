//! Free space of an allocation group as the writer changes it: the AG free
//! list (AGFL) that feeds and takes back the free-space B+tree blocks, the
//! free extents in the by-block and by-size trees, the AGF counters, and the
//! space the kernel holds back.
//!
//! Layouts from "XFS Algorithms & Data Structures" ("AG Free Block List",
//! "AG Free Space Management") and the kernel's `fs/xfs/libxfs/xfs_format.h`
//! (`struct xfs_agfl`, `struct xfs_agf`); the policies are our own reading of
//! `xfs_alloc.c`:
//!
//! - the AGFL is the sector after the AGI: "XAFL" magic, AG number, UUID,
//!   LSN, CRC at byte 32, then `(sectsize - 36) / 4` block numbers used as a
//!   ring from `agf_flfirst` to `agf_fllast` (`agf_flcount` of them);
//! - a block taken from the list for the bnobt/cntbt counts in
//!   `agf_btreeblks`, a block given back leaves it; blocks on the list and in
//!   those trees stay in `sb_fdblocks` (the kernel sums `agf_freeblks +
//!   agf_flcount + agf_btreeblks`), so moving blocks between free extents and
//!   the list changes `agf_freeblks` but not the superblock;
//! - after every allocation and free the list is brought to the minimum the
//!   kernel wants (`xfs_alloc_min_freelist`: per tree `(levels + 1) * 2 - 2`,
//!   bounded by the deepest possible tree) by moving single blocks out of the
//!   smallest free extent, and surplus blocks (from merged tree blocks) go back
//!   to free space;
//! - allocation is best fit by size (the smallest free extent that holds the
//!   request, else the largest, used whole or cut from its end) and refuses
//!   with "no space" rather than take the blocks the kernel keeps back: the
//!   global set-aside (`xfs_alloc_set_aside`: 4 + 4 blocks per AG for the
//!   AGFL and the free-space trees) and, per AG, the free-list minimum.
//!   Per AG it also holds back the metadata reservation the kernel makes in
//!   memory at mount time (room for the largest possible refcount and
//!   free-inode B+trees, `xfs_ag_resv_init`), so the kernel finds it free.

use super::btree::{BNO, CNT, NULLAGBLOCK};
use super::{alloc_rec, g32, p32, XfsWriter, AGF_CRC, MAX_EXTLEN};
use crate::error::{Error, Result};

/// `XFS_AGFL_MAGIC` "XAFL".
const AGFL_MAGIC: u32 = 0x5841_464c;
/// Byte offset of the AGFL crc and of its first block number (v5 header).
const AGFL_CRC: usize = 32;
const AGFL_HDR: usize = 36;
/// AGF field offsets (`struct xfs_agf`).
const AGF_FLFIRST: usize = 40;
const AGF_FLLAST: usize = 44;
const AGF_FLCOUNT: usize = 48;
const AGF_FREEBLKS: usize = 52;
const AGF_LONGEST: usize = 56;
const AGF_BTREEBLKS: usize = 60;
/// Blocks per AG the kernel never hands out (`XFS_ALLOCBT_AGFL_RESERVE` + 4,
/// `xfs_alloc_set_aside`).
const SET_ASIDE_PER_AG: u64 = 8;
/// Rounds of AGFL refill/trim before giving up (each round moves one block).
const MAX_FIX_ROUNDS: usize = 64;

impl XfsWriter {
    fn agfl_len(&self) -> usize {
        (usize::from(self.geo.sb.sb_sectsize) - AGFL_HDR) / 4
    }

    fn agfl(&self, agno: u32) -> Result<(u64, Vec<u8>)> {
        let pos = self.ag_pos(agno, 0) + 3 * u64::from(self.geo.sb.sb_sectsize);
        let b = self.read(pos, usize::from(self.geo.sb.sb_sectsize))?;
        if g32(&b, 0) != AGFL_MAGIC || g32(&b, 4) != agno {
            return Err(Error::corrupt(
                "xfs AGFL",
                "magicnum/seqno",
                pos,
                format!("{AGFL_MAGIC:#x} for AG {agno}"),
                format!("{:#x} for AG {}", g32(&b, 0), g32(&b, 4)),
            ));
        }
        Ok((pos, b))
    }

    fn agfl_bad(&self, agno: u32, agf: &[u8]) -> Error {
        Error::corrupt_msg(format!(
            "xfs AG {agno}: AGF free list first {} last {} count {} does not fit a list of {}",
            g32(agf, AGF_FLFIRST),
            g32(agf, AGF_FLLAST),
            g32(agf, AGF_FLCOUNT),
            self.agfl_len()
        ))
    }

    /// Take a block off the AG free list (for a bnobt/cntbt block when `btree`).
    pub(super) fn agfl_get(&mut self, agno: u32, btree: bool) -> Result<u32> {
        let (apos, mut agf) = self.agf(agno)?;
        let size = self.agfl_len();
        let (first, count) = (g32(&agf, AGF_FLFIRST) as usize, g32(&agf, AGF_FLCOUNT));
        if first >= size || count as usize > size {
            return Err(self.agfl_bad(agno, &agf));
        }
        if count == 0 {
            return Err(Error::unsupported(format!(
                "xfs AG {agno}: no space left (the AG free list is empty)"
            )));
        }
        let (lpos, mut fl) = self.agfl(agno)?;
        let at = AGFL_HDR + first * 4;
        let bno = g32(&fl, at);
        if bno >= self.geo.ag_blocks {
            return Err(Error::corrupt_msg(format!(
                "xfs AG {agno}: AGFL slot {first} holds block {bno}"
            )));
        }
        p32(&mut fl, at, NULLAGBLOCK);
        self.write_meta(lpos, &mut fl, AGFL_CRC)?;
        p32(&mut agf, AGF_FLFIRST, ((first + 1) % size) as u32);
        p32(&mut agf, AGF_FLCOUNT, count - 1);
        if btree {
            let v = g32(&agf, AGF_BTREEBLKS) + 1;
            p32(&mut agf, AGF_BTREEBLKS, v);
        }
        self.write_meta(apos, &mut agf, AGF_CRC)?;
        Ok(bno)
    }

    /// Put block `bno` on the AG free list (a freed bnobt/cntbt block when `btree`).
    pub(super) fn agfl_put(&mut self, agno: u32, bno: u32, btree: bool) -> Result<()> {
        let (apos, mut agf) = self.agf(agno)?;
        let size = self.agfl_len();
        let (last, count) = (g32(&agf, AGF_FLLAST) as usize, g32(&agf, AGF_FLCOUNT));
        if last >= size || count as usize > size {
            return Err(self.agfl_bad(agno, &agf));
        }
        if count as usize == size {
            return Err(Error::unsupported(format!(
                "xfs AG {agno}: the AG free list is full ({size} blocks)"
            )));
        }
        let (lpos, mut fl) = self.agfl(agno)?;
        let slot = (last + 1) % size;
        p32(&mut fl, AGFL_HDR + slot * 4, bno);
        self.write_meta(lpos, &mut fl, AGFL_CRC)?;
        p32(&mut agf, AGF_FLLAST, slot as u32);
        p32(&mut agf, AGF_FLCOUNT, count + 1);
        if btree {
            let v = g32(&agf, AGF_BTREEBLKS).saturating_sub(1);
            p32(&mut agf, AGF_BTREEBLKS, v);
        }
        self.write_meta(apos, &mut agf, AGF_CRC)
    }

    /// Deepest possible free-space tree (`m_alloc_maxlevels`,
    /// `xfs_btree_compute_maxlevels` over half the AG's blocks).
    fn alloc_maxlevels(&self) -> u32 {
        let bs = self.geo.block_size as u64;
        let leaf_min = ((bs - 56) / 8 / 2).max(1);
        let node_min = ((bs - 56) / 12 / 2).max(2);
        let mut blocks = (u64::from(self.geo.ag_blocks) + 1)
            .div_ceil(2)
            .div_ceil(leaf_min);
        let mut level = 1;
        while blocks > 1 {
            blocks = blocks.div_ceil(node_min);
            level += 1;
        }
        level
    }

    /// `xfs_alloc_min_freelist` for the current tree heights in `agf`.
    fn min_freelist(&self, agf: &[u8]) -> u32 {
        let max = self.alloc_maxlevels();
        let per = |lv: u32| (lv + 1).min(max) * 2 - 2;
        per(g32(agf, 28)) + per(g32(agf, 32))
    }

    /// Bring the AG free list to the kernel's minimum, moving single blocks
    /// between it and free space.
    pub(super) fn agfl_fix(&mut self, agno: u32) -> Result<()> {
        for _ in 0..MAX_FIX_ROUNDS {
            let (_, agf) = self.agf(agno)?;
            let need = self.min_freelist(&agf);
            let have = g32(&agf, AGF_FLCOUNT);
            if have < need {
                let Some(r) = self.bt_seek(&CNT, agno, (0, 0))?.1 else {
                    return Ok(());
                };
                let bno = self.ext_take(agno, (g32(&r, 0), g32(&r, 4)), 1)?;
                self.agfl_put(agno, bno, false)?;
            } else if have > need {
                let bno = self.agfl_get(agno, false)?;
                self.ext_give(agno, bno, 1)?;
            } else {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Move the by-size record `old` (start, count) to `new`.
    fn cnt_move(&mut self, agno: u32, old: (u32, u32), new: (u32, u32)) -> Result<()> {
        let (root, lv) = self.bt_root(&CNT, agno)?;
        let okey = (u64::from(old.1), u64::from(old.0));
        let nkey = (u64::from(new.1), u64::from(new.0));
        let po = self.bt_find(&CNT, agno, root, lv, okey)?;
        let pn = self.bt_lookup(&CNT, agno, root, lv, nkey)?;
        let rec = alloc_rec(new.0, new.1);
        let (ob, oi) = po[po.len() - 1];
        let (nb, ni) = pn[pn.len() - 1];
        if ob == nb && (ni == oi || ni == oi + 1) {
            return self.bt_update(&CNT, agno, &po, &rec);
        }
        self.bt_delete(&CNT, agno, &po)?;
        let (root, lv) = self.bt_root(&CNT, agno)?;
        let pn = self.bt_lookup(&CNT, agno, root, lv, nkey)?;
        self.bt_insert(&CNT, agno, &pn, &rec)
    }

    fn cnt_insert(&mut self, agno: u32, start: u32, count: u32) -> Result<()> {
        let (root, lv) = self.bt_root(&CNT, agno)?;
        let p = self.bt_lookup(&CNT, agno, root, lv, (u64::from(count), u64::from(start)))?;
        self.bt_insert(&CNT, agno, &p, &alloc_rec(start, count))
    }

    fn cnt_delete(&mut self, agno: u32, start: u32, count: u32) -> Result<()> {
        let (root, lv) = self.bt_root(&CNT, agno)?;
        let p = self.bt_find(&CNT, agno, root, lv, (u64::from(count), u64::from(start)))?;
        self.bt_delete(&CNT, agno, &p)
    }

    fn bno_path(&self, agno: u32, start: u32, exact: bool) -> Result<Vec<(u32, usize)>> {
        let (root, lv) = self.bt_root(&BNO, agno)?;
        let key = (u64::from(start), 0);
        if exact {
            self.bt_find(&BNO, agno, root, lv, key)
        } else {
            self.bt_lookup(&BNO, agno, root, lv, key)
        }
    }

    /// Add `dfree` to `agf_freeblks` and recompute `agf_longest`.
    fn agf_free_delta(&mut self, agno: u32, dfree: i64) -> Result<()> {
        let longest = self.bt_last(&CNT, agno)?.map_or(0, |r| g32(&r, 4));
        let (pos, mut agf) = self.agf(agno)?;
        let free = i64::from(g32(&agf, AGF_FREEBLKS)) + dfree;
        p32(&mut agf, AGF_FREEBLKS, u32::try_from(free).unwrap_or(0));
        p32(&mut agf, AGF_LONGEST, longest);
        self.write_meta(pos, &mut agf, AGF_CRC)
    }

    /// Take the last `take` blocks of the free extent `ext` (start, count);
    /// returns the first block taken.
    fn ext_take(&mut self, agno: u32, ext: (u32, u32), take: u32) -> Result<u32> {
        let at = ext.0 + ext.1 - take;
        self.ext_cut(agno, ext, at, take)?;
        Ok(at)
    }

    /// Remove `at..at+len` (inside it) from the free extent `ext` (start,
    /// count) in both free-space trees and `agf_freeblks`: the extent
    /// shrinks, splits in two, or goes.
    fn ext_cut(&mut self, agno: u32, ext: (u32, u32), at: u32, len: u32) -> Result<()> {
        let (start, count) = ext;
        let left = at - start;
        let right = start + count - (at + len);
        let p = self.bno_path(agno, start, true)?;
        match (left > 0, right > 0) {
            (false, false) => {
                self.bt_delete(&BNO, agno, &p)?;
                self.cnt_delete(agno, start, count)?;
            }
            (true, false) => {
                self.bt_update(&BNO, agno, &p, &alloc_rec(start, left))?;
                self.cnt_move(agno, ext, (start, left))?;
            }
            (false, true) => {
                self.bt_update(&BNO, agno, &p, &alloc_rec(at + len, right))?;
                self.cnt_move(agno, ext, (at + len, right))?;
            }
            (true, true) => {
                self.bt_update(&BNO, agno, &p, &alloc_rec(start, left))?;
                let p = self.bno_path(agno, at + len, false)?;
                self.bt_insert(&BNO, agno, &p, &alloc_rec(at + len, right))?;
                self.cnt_move(agno, ext, (start, left))?;
                self.cnt_insert(agno, at + len, right)?;
            }
        }
        self.agf_free_delta(agno, -i64::from(len))
    }

    /// Whether `len` more blocks may be handed out in AG `agno` (the kernel's
    /// set-aside, free-list minimum and metadata reservations respected).
    pub(super) fn may_take(&self, agno: u32, len: u32) -> Result<bool> {
        let (_, agf) = self.agf(agno)?;
        let room = self.ag_avail(agno, &agf)?.min(self.fs_avail()?);
        Ok(u64::from(len) <= room)
    }

    /// Return `len` blocks at `agbno` to free space, merging with neighbours.
    pub(super) fn ext_give(&mut self, agno: u32, agbno: u32, len: u32) -> Result<()> {
        let end = agbno + len;
        // The free extents around `agbno`: the last one starting before it and the next one.
        let (prev, next) = self.bt_seek(&BNO, agno, (u64::from(agbno), 0))?;
        let ext = |r: Vec<u8>| (g32(&r, 0), g32(&r, 4));
        let (prev, next) = (prev.map(ext), next.map(ext));
        if prev.is_some_and(|(s, c)| s + c > agbno) || next.is_some_and(|(s, _)| s < end) {
            return Err(Error::corrupt_msg(format!(
                "xfs: blocks {agno}/{agbno}+{len} are already free"
            )));
        }
        let left = prev.filter(|&(s, c)| s + c == agbno);
        let right = next.filter(|&(s, _)| s == end);
        match (left, right) {
            (Some(l), Some(r)) => {
                let merged = (l.0, l.1 + len + r.1);
                let pr = self.bno_path(agno, r.0, true)?;
                self.bt_delete(&BNO, agno, &pr)?;
                let pl = self.bno_path(agno, l.0, true)?;
                self.bt_update(&BNO, agno, &pl, &alloc_rec(merged.0, merged.1))?;
                self.cnt_delete(agno, r.0, r.1)?;
                self.cnt_move(agno, l, merged)?;
            }
            (Some(l), None) => {
                let merged = (l.0, l.1 + len);
                let pl = self.bno_path(agno, l.0, true)?;
                self.bt_update(&BNO, agno, &pl, &alloc_rec(merged.0, merged.1))?;
                self.cnt_move(agno, l, merged)?;
            }
            (None, Some(r)) => {
                let merged = (agbno, r.1 + len);
                let pr = self.bno_path(agno, r.0, true)?;
                self.bt_update(&BNO, agno, &pr, &alloc_rec(merged.0, merged.1))?;
                self.cnt_move(agno, r, merged)?;
            }
            (None, None) => {
                let p = self.bno_path(agno, agbno, false)?;
                self.bt_insert(&BNO, agno, &p, &alloc_rec(agbno, len))?;
                self.cnt_insert(agno, agbno, len)?;
            }
        }
        self.agf_free_delta(agno, i64::from(len))
    }

    /// The per-AG metadata reservation the kernel makes at mount
    /// (`xfs_ag_resv_init`, `XFS_AG_RESV_METADATA`): room for the largest
    /// refcount B+tree (reflink) and free-inode B+tree (finobt) the AG could
    /// need, less the blocks they already use.
    fn meta_reserve(&self, agno: u32, agf: &[u8]) -> Result<u64> {
        let bs = u64::from(self.geo.block_size) - 56;
        let mut blocks = u64::from(g32(agf, 12));
        let log_ag = self.geo.sb.sb_logstart >> self.geo.agblk_log;
        if log_ag == u64::from(agno) {
            blocks = blocks.saturating_sub(u64::from(self.geo.sb.sb_logblocks));
        }
        let (mut ask, mut used) = (0u64, 0u64);
        if self.reflink {
            ask += btree_calc_size(bs / 12 / 2, bs / 8 / 2, blocks);
            used += u64::from(g32(agf, 84));
        }
        if self.finobt {
            let recs = blocks * u64::from(self.geo.sb.sb_inopblock) / 64;
            ask += btree_calc_size(bs / 16 / 2, bs / 8 / 2, recs);
            let (_, agi) = self.agi(agno)?;
            used += u64::from(g32(&agi, 340).max(1));
        }
        Ok(ask.saturating_sub(used))
    }

    /// Blocks that may still be handed out in AG `agno` (free extents plus
    /// the free list, less the free-list minimum and the metadata reservation).
    fn ag_avail(&self, agno: u32, agf: &[u8]) -> Result<u64> {
        Ok(
            (u64::from(g32(agf, AGF_FREEBLKS)) + u64::from(g32(agf, AGF_FLCOUNT)))
                .saturating_sub(u64::from(self.min_freelist(agf)))
                .saturating_sub(self.meta_reserve(agno, agf)?),
        )
    }

    /// Blocks that may still be handed out in the whole filesystem (less the
    /// set-aside and the metadata reservations).
    fn fs_avail(&self) -> Result<u64> {
        let mut sum = 0u64;
        let mut keep = SET_ASIDE_PER_AG * u64::from(self.geo.ag_count);
        for agno in 0..self.geo.ag_count {
            let (_, agf) = self.agf(agno)?;
            sum += u64::from(g32(&agf, AGF_FREEBLKS)) + u64::from(g32(&agf, AGF_FLCOUNT));
            keep += self.meta_reserve(agno, &agf)?;
        }
        Ok(sum.saturating_sub(keep))
    }

    /// Allocate up to `want` contiguous blocks in AG `agno` within `limit`:
    /// (AG block, count), or `None` when the AG has no room.
    fn alloc_ag(&mut self, agno: u32, want: u32, limit: u64) -> Result<Option<(u32, u32)>> {
        let (_, agf) = self.agf(agno)?;
        let room = self.ag_avail(agno, &agf)?.min(limit);
        let want = u64::from(want).min(room) as u32;
        if want == 0 {
            return Ok(None);
        }
        // Best fit: the smallest extent that holds `want`, else the largest.
        let ext = match self.bt_seek(&CNT, agno, (u64::from(want), 0))?.1 {
            Some(r) => Some(r),
            None => self.bt_last(&CNT, agno)?,
        }
        .map(|r| (g32(&r, 0), g32(&r, 4)));
        let Some(ext) = ext.filter(|e| e.1 > 0) else {
            return Ok(None);
        };
        let take = want.min(ext.1);
        let bno = self.ext_take(agno, ext, take)?;
        self.d_fdblocks -= i64::from(take);
        self.agfl_fix(agno)?;
        Ok(Some((bno, take)))
    }

    fn no_space(&self) -> Error {
        Error::unsupported(format!(
            "xfs: no space left on the filesystem (the kernel keeps {} blocks per AG, the AG free lists and its metadata reservations back)",
            SET_ASIDE_PER_AG
        ))
    }

    /// Allocate up to `want` contiguous blocks, preferring AG `pref`:
    /// (AG, AG block, count).
    pub(super) fn space_alloc(&mut self, pref: u32, want: u64) -> Result<(u32, u32, u32)> {
        let want = want.clamp(1, MAX_EXTLEN) as u32;
        let limit = self.fs_avail()?;
        for k in 0..self.geo.ag_count {
            let agno = (pref + k) % self.geo.ag_count;
            if let Some((bno, got)) = self.alloc_ag(agno, want, limit)? {
                return Ok((agno, bno, got));
            }
        }
        Err(self.no_space())
    }

    /// One block in AG `agno` (for an inode B+tree block).
    pub(super) fn alloc_in_ag(&mut self, agno: u32) -> Result<u32> {
        let limit = self.fs_avail()?;
        match self.alloc_ag(agno, 1, limit)? {
            Some((bno, _)) => Ok(bno),
            None => Err(self.no_space()),
        }
    }

    /// Take `at..at+len` out of the free extent `ext` (start, count) in AG
    /// `agno`: free-space trees, AGF, free list and superblock count.
    pub(super) fn space_take(
        &mut self,
        agno: u32,
        ext: (u32, u32),
        at: u32,
        len: u32,
    ) -> Result<()> {
        self.ext_cut(agno, ext, at, len)?;
        self.d_fdblocks -= i64::from(len);
        self.agfl_fix(agno)
    }

    /// Return `len` blocks at `agno`/`agbno` to free space.
    pub(super) fn space_free(&mut self, agno: u32, agbno: u32, len: u32) -> Result<()> {
        self.ext_give(agno, agbno, len)?;
        self.d_fdblocks += i64::from(len);
        self.agfl_fix(agno)
    }
}

/// Blocks of the largest B+tree holding `records` with at least `leaf_min`
/// records per leaf and `node_min` pointers per node (`xfs_btree_calc_size`).
fn btree_calc_size(leaf_min: u64, node_min: u64, records: u64) -> u64 {
    let (mut recs, mut per, mut total) = (records, leaf_min.max(1), 0u64);
    let mut guard = 0;
    while recs > 1 && guard < 16 {
        recs = recs.div_ceil(per);
        total += recs;
        per = node_min.max(2);
        guard += 1;
    }
    total
}
