//! Block-mapping B+tree (bmbt) data forks: when an inode's extent records
//! do not fit in its data fork, they go into long-format v5 bmbt blocks
//! ("BMA3") with the root (`xfs_bmdr_block`) in the inode.
//!
//! The tree is rebuilt whole from the sorted record list on every change
//! (the old bmbt blocks are freed first): records are spread evenly over
//! the fewest leaves that hold them, leaf keys over the fewest nodes, level
//! by level, until the top level fits in the inode's root. Even spreading
//! keeps every block below the root's children at least half full, which is
//! what `xfs_repair` asks of non-root blocks (`m_bmap_dmnr`).
//!
//! Layout ("XFS Algorithms & Data Structures", "B+tree Extent List" and
//! "Long Format B+trees"; kernel `xfs_format.h`, `xfs_bmap_btree.h`):
//!
//! - block header, 72 bytes: magic, level, numrecs, leftsib and rightsib
//!   (64-bit fs blocks, `NULLFSBLOCK` at the ends of a level), blkno (the
//!   block's 512-byte sector address), lsn, uuid (`sb_meta_uuid`), owner
//!   (the inode number), crc at byte 64;
//! - leaves: 16-byte packed extent records after the header;
//! - nodes: `maxrecs = (blocksize - 72) / 16` 8-byte keys (`br_startoff` of
//!   the child's first record), then `maxrecs` 8-byte fs block pointers;
//! - the root in the inode: level and numrecs (2 bytes each), then keys at
//!   byte 4 and pointers at `4 + maxrecs * 8`, where `maxrecs` is
//!   `xfs_bmdr_maxrecs(fork size) = (fork size - 4) / 16` and the fork size is
//!   the literal area, or `di_forkoff * 8` when an attribute fork is present.
//!
//! The inode gets `di_format` 3 (btree), `di_nextents` = record count and
//! the bmbt blocks in `di_nblocks`. When the records fit in the inode again,
//! the fork goes back to extents format and the bmbt blocks are freed.

use super::{g16, g32, g64, p16, p32, p64, put, XfsWriter, CORE};
use crate::error::{Error, Result};
use crate::fs::xfs::bmap::{
    BmbtIrec, XFS_BMAP_CRC_MAGIC, XFS_BTREE_LBLOCK_CRC_LEN, XFS_BTREE_LBLOCK_CRC_OFF,
};
use crate::fs::xfs::inode::{XFS_DINODE_FMT_BTREE, XFS_DINODE_FMT_EXTENTS};
use crate::limits::{MAX_XFS_BMBT_LEVELS, MAX_XFS_EXTENTS};

/// `NULLFSBLOCK`: no sibling.
const NULLFSBLOCK: u64 = u64::MAX;
/// `sizeof(xfs_bmdr_block_t)`: level and numrecs of the root in the inode.
const BMDR_HDR: usize = 4;
/// Byte offset of `di_nblocks`.
const DI_NBLOCKS: usize = 64;

/// Split `n` items into `k` groups as evenly as possible (sizes, in order).
fn spread(n: usize, k: usize) -> Vec<usize> {
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

impl XfsWriter {
    /// Records a bmbt block holds (leaf records, or node key/pointer pairs:
    /// both are 16 bytes).
    fn bmbt_maxrecs(&self) -> usize {
        (self.bs() - XFS_BTREE_LBLOCK_CRC_LEN) / 16
    }

    /// Every bmbt block (fs block numbers, top level first) of the data
    /// fork in `raw`; empty unless the fork is in btree format.
    pub(super) fn bmbt_blocks(&self, raw: &[u8]) -> Result<Vec<u64>> {
        if raw[5] != XFS_DINODE_FMT_BTREE {
            return Ok(Vec::new());
        }
        let ino = g64(raw, 152);
        let cap = self.dfork_cap(raw);
        let root = &raw[CORE..CORE + cap];
        let rmax = cap.saturating_sub(BMDR_HDR) / 16;
        let level = usize::from(g16(root, 0));
        let n = usize::from(g16(root, 2));
        if level == 0 || level >= MAX_XFS_BMBT_LEVELS || n == 0 || n > rmax {
            return Err(Error::corrupt(
                format!("xfs inode {ino} bmbt root"),
                "bb_level/bb_numrecs",
                0,
                format!("level 1..{MAX_XFS_BMBT_LEVELS}, 1..={rmax} records"),
                format!("level {level}, {n} records"),
            ));
        }
        let ptrs = BMDR_HDR + rmax * 8;
        let mut cur: Vec<u64> = (0..n).map(|i| g64(root, ptrs + i * 8)).collect();
        let mut out = Vec::new();
        let nmax = self.bmbt_maxrecs();
        for lvl in (0..level).rev() {
            out.extend_from_slice(&cur);
            if out.len() as u64 > MAX_XFS_EXTENTS {
                return Err(Error::unsupported(format!(
                    "xfs inode {ino}: more than {MAX_XFS_EXTENTS} bmbt blocks"
                )));
            }
            if lvl == 0 {
                break;
            }
            let mut next = Vec::new();
            for fsb in cur {
                let b = self.bmbt_read(ino, fsb, lvl)?;
                let k = usize::from(g16(&b, 6));
                if k == 0 || k > nmax {
                    return Err(Error::corrupt(
                        format!("xfs inode {ino} bmbt block {fsb}"),
                        "bb_numrecs",
                        6,
                        format!("1..={nmax}"),
                        k,
                    ));
                }
                let base = XFS_BTREE_LBLOCK_CRC_LEN + nmax * 8;
                next.extend((0..k).map(|i| g64(&b, base + i * 8)));
            }
            cur = next;
        }
        Ok(out)
    }

    /// Read bmbt block `fsb` of inode `ino`, which must be a BMA3 block at
    /// `level` owned by the inode.
    fn bmbt_read(&self, ino: u64, fsb: u64, level: usize) -> Result<Vec<u8>> {
        let pos = self.geo.fsb_to_byte(fsb, 1).ok_or_else(|| {
            Error::corrupt_msg(format!(
                "xfs inode {ino}: bmbt pointer {fsb} is outside the filesystem"
            ))
        })?;
        let b = self.read(pos, self.bs())?;
        if g32(&b, 0) != XFS_BMAP_CRC_MAGIC
            || usize::from(g16(&b, 4)) != level
            || g64(&b, 56) != ino
        {
            return Err(Error::corrupt(
                format!("xfs inode {ino} bmbt block {fsb}"),
                "bb_magic/bb_level/bb_owner",
                pos,
                format!("BMA3, level {level}, owner {ino}"),
                format!(
                    "{:#x}, level {}, owner {}",
                    g32(&b, 0),
                    g16(&b, 4),
                    g64(&b, 56)
                ),
            ));
        }
        Ok(b)
    }

    /// Free the bmbt blocks of the data fork in `raw` (if it is in btree
    /// format), take them out of `di_nblocks` and leave an empty extents
    /// fork. The data extents are not touched.
    pub(super) fn drop_bmbt(&mut self, raw: &mut [u8]) -> Result<()> {
        if raw[5] != XFS_DINODE_FMT_BTREE {
            return Ok(());
        }
        let mut blocks = self.bmbt_blocks(raw)?;
        blocks.sort_unstable();
        let mut runs: Vec<(u64, u32)> = Vec::new();
        for &b in &blocks {
            match runs.last_mut() {
                Some((s, n))
                    if *s + u64::from(*n) == b && self.split_fsb(*s).0 == self.split_fsb(b).0 =>
                {
                    *n += 1
                }
                _ => runs.push((b, 1)),
            }
        }
        for (s, n) in runs {
            let (agno, agbno) = self.split_fsb(s);
            self.free(agno, agbno, n)?;
        }
        let nb = g64(raw, DI_NBLOCKS).saturating_sub(blocks.len() as u64);
        p64(raw, DI_NBLOCKS, nb);
        let cap = self.dfork_cap(raw);
        raw[CORE..CORE + cap].fill(0);
        raw[5] = XFS_DINODE_FMT_EXTENTS;
        Self::set_nextents(raw, 0);
        Ok(())
    }

    /// Map `recs` (sorted, non-overlapping, too many for the inode) through
    /// a new bmbt: allocate and write its blocks near the inode, put the
    /// root in the data fork of `raw`, set btree format, `di_nextents` and
    /// add the blocks to `di_nblocks`. The fork must hold no bmbt already
    /// ([`drop_bmbt`](Self::drop_bmbt) first).
    pub(super) fn build_bmbt(&mut self, raw: &mut [u8], recs: &[BmbtIrec]) -> Result<()> {
        let ino = g64(raw, 152);
        let cap = self.dfork_cap(raw);
        let rmax = cap.saturating_sub(BMDR_HDR) / 16;
        let nmax = self.bmbt_maxrecs();
        if rmax == 0 || nmax < 2 {
            return Err(Error::unsupported(format!(
                "xfs inode {ino}: its data fork ({cap} bytes) is too small for a bmbt root"
            )));
        }
        if recs.len() as u64 > MAX_XFS_EXTENTS {
            return Err(Error::unsupported(format!(
                "xfs inode {ino}: {} extents are more than onramp writes ({MAX_XFS_EXTENTS})",
                recs.len()
            )));
        }
        // Block counts per level, leaves first.
        let mut plan: Vec<Vec<usize>> = Vec::new();
        let mut n = recs.len();
        loop {
            let k = n.div_ceil(nmax);
            plan.push(spread(n, k));
            if k <= rmax {
                break;
            }
            if plan.len() + 1 >= MAX_XFS_BMBT_LEVELS {
                return Err(Error::unsupported(format!(
                    "xfs inode {ino}: {} extents need a bmbt deeper than {MAX_XFS_BMBT_LEVELS} levels",
                    recs.len()
                )));
            }
            n = k;
        }
        let total: usize = plan.iter().map(Vec::len).sum();
        let mut fsbs: Vec<u64> = Vec::with_capacity(total);
        let mut got_runs: Vec<(u32, u32, u32)> = Vec::new();
        while fsbs.len() < total {
            match self.alloc(self.ag_of_ino(ino), (total - fsbs.len()) as u64) {
                Ok((agno, agbno, got)) => {
                    got_runs.push((agno, agbno, got));
                    let first = self.fsb(agno, agbno);
                    fsbs.extend((0..u64::from(got)).map(|i| first + i));
                }
                Err(e) => {
                    // Give back what this tree had taken before failing.
                    for (agno, agbno, got) in got_runs {
                        self.free(agno, agbno, got)?;
                    }
                    return Err(e);
                }
            }
        }
        let bs = self.bs();
        let hdr = XFS_BTREE_LBLOCK_CRC_LEN;
        let mut used = 0usize;
        // (first key, fs block) of each block of the level below.
        let mut below: Vec<(u64, u64)> = Vec::new();
        for (lvl, sizes) in plan.iter().enumerate() {
            let blocks = &fsbs[used..used + sizes.len()];
            used += sizes.len();
            let mut level_keys = Vec::with_capacity(sizes.len());
            let mut at = 0usize;
            for (i, (&size, &fsb)) in sizes.iter().zip(blocks).enumerate() {
                let mut b = vec![0u8; bs];
                p32(&mut b, 0, XFS_BMAP_CRC_MAGIC);
                p16(&mut b, 4, lvl as u16);
                p16(&mut b, 6, size as u16);
                let left = if i == 0 { NULLFSBLOCK } else { blocks[i - 1] };
                let right = blocks.get(i + 1).copied().unwrap_or(NULLFSBLOCK);
                p64(&mut b, 8, left);
                p64(&mut b, 16, right);
                let pos = self.geo.fsb_to_byte(fsb, 1).ok_or_else(|| {
                    Error::corrupt_msg(format!("xfs: allocated block {fsb} is outside"))
                })?;
                p64(&mut b, 24, pos >> 9);
                put(&mut b, 40, &self.geo.meta_uuid);
                p64(&mut b, 56, ino);
                if lvl == 0 {
                    let part = &recs[at..at + size];
                    for (j, r) in part.iter().enumerate() {
                        put(&mut b, hdr + j * 16, &r.encode());
                    }
                    level_keys.push((part[0].startoff, fsb));
                } else {
                    let part = &below[at..at + size];
                    let ptrs = hdr + nmax * 8;
                    for (j, &(key, ptr)) in part.iter().enumerate() {
                        p64(&mut b, hdr + j * 8, key);
                        p64(&mut b, ptrs + j * 8, ptr);
                    }
                    level_keys.push((part[0].0, fsb));
                }
                at += size;
                self.write_meta(pos, &mut b, XFS_BTREE_LBLOCK_CRC_OFF)?;
            }
            below = level_keys;
        }
        raw[CORE..CORE + cap].fill(0);
        p16(raw, CORE, plan.len() as u16);
        p16(raw, CORE + 2, below.len() as u16);
        let ptrs = CORE + BMDR_HDR + rmax * 8;
        for (j, &(key, ptr)) in below.iter().enumerate() {
            p64(raw, CORE + BMDR_HDR + j * 8, key);
            p64(raw, ptrs + j * 8, ptr);
        }
        raw[5] = XFS_DINODE_FMT_BTREE;
        Self::set_nextents(raw, recs.len() as u64);
        let nb = g64(raw, DI_NBLOCKS) + total as u64;
        p64(raw, DI_NBLOCKS, nb);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_is_even_and_complete() {
        assert_eq!(spread(10, 3), vec![4, 3, 3]);
        assert_eq!(spread(254, 2), vec![127, 127]);
        assert_eq!(spread(5, 1), vec![5]);
        for n in 1..600usize {
            let k = n.div_ceil(59);
            let s = spread(n, k);
            assert_eq!(s.iter().sum::<usize>(), n);
            assert!(s.iter().all(|&x| x <= 59));
            if k > 1 {
                assert!(s.iter().all(|&x| x >= 59 / 2), "{n}: {s:?}");
            }
        }
    }
}
