//! Node- and B+tree-form directories, and every conversion into or out of
//! them ("XFS Algorithms & Data Structures", "Node Directories" and "B+tree
//! Directories"; kernel `fs/xfs/libxfs/xfs_da_format.h`).
//!
//! A node directory keeps its entries in data blocks ("XDD3") in the first
//! 32 GiB of its address space; from `XFS_DIR2_LEAF_OFFSET` (32 GiB) a hash
//! B+tree of leaf blocks ("LEAFN", 0x3dff: hash-sorted (hash, address)
//! pairs) under interior "da" nodes (0x3ebe: (hashval, before) pairs, the
//! root always at the first leaf-section block); from
//! `XFS_DIR2_FREE_OFFSET` (64 GiB) free-index blocks ("XDF3": `firstdb`,
//! `nvalid`, `nused` and the best free length of each data block). A
//! B+tree directory is the same with its data fork mapped by a bmbt.
//!
//! Rather than splitting and merging blocks in place, this writer rebuilds
//! the whole directory from its entry list whenever an entry is added to or
//! removed from a node/B+tree directory, or a block or leaf directory
//! outgrows its form: entries are laid into data blocks ("." and ".." first),
//! the hash index is built into one LEAF1 block when it fits beside the
//! bests array, otherwise into LEAFN blocks under as many node levels as
//! needed (siblings linked through `forw`/`back`) plus free-index blocks;
//! when everything fits one directory block it goes back to block form.
//! The directory keeps the blocks it already has at the offsets it still
//! uses (their LSNs are kept), gets new ones from the free-space trees and
//! frees the rest; the data fork is rewritten through `set_data_fork` only
//! when the block set changed. A directory whose fork is a bmbt keeps at
//! least as many data blocks and leaf-section blocks as it had, so that
//! adding or removing an entry usually leaves its mapping untouched.

use super::btree::BNO;
use super::{build_block, entsize, g16, g32, g64, p16, p32, p64, put, with_dots, Ent, XfsWriter};
use crate::error::{Error, Result};
use crate::fs::xfs::bmap::{data_extents, BmbtIrec};
use crate::fs::xfs::crc;
use crate::fs::xfs::dir::{
    da_hashname, XFS_DA3_NODE_MAGIC, XFS_DA_NODE_MAXDEPTH, XFS_DIR2_LEAF_OFFSET,
    XFS_DIR3_DATA_MAGIC, XFS_DIR3_LEAF1_MAGIC, XFS_DIR3_LEAFN_MAGIC,
};
use crate::fs::xfs::inode::{
    Dinode, XFS_DINODE_FMT_BTREE, XFS_DINODE_FMT_EXTENTS, XFS_DINODE_FMT_LOCAL,
};
use std::collections::BTreeMap;

/// Start of the free-index section of the directory address space
/// (`XFS_DIR2_FREE_OFFSET`, 64 GiB).
const XFS_DIR2_FREE_OFFSET: u64 = 2 << 35;
/// `XFS_DIR3_FREE_MAGIC`: "XDF3".
const XFS_DIR3_FREE_MAGIC: u32 = 0x5844_4633;
/// Every v5 directory block header here is 64 bytes (`xfs_dir3_data_hdr`,
/// `xfs_dir3_leaf_hdr`, `xfs_da3_node_hdr`, `xfs_dir3_free_hdr`).
const HDR: usize = 64;
/// Free-region tag in data blocks.
const FREE_TAG: u16 = 0xffff;

/// One directory block to write: its first file block, whether its header
/// is an `xfs_da3_blkinfo` (leaf and node blocks; crc at 12) rather than an
/// `xfs_dir3_blk_hdr` (data, block and free blocks; crc at 4), and its bytes.
struct OutBlock {
    fblock: u64,
    da: bool,
    buf: Vec<u8>,
}

/// The directory shape a rebuild must at least keep (B+tree-mapped forks).
#[derive(Default, Clone, Copy)]
struct Keep {
    data: usize,
    leaf_sec: usize,
    node: bool,
}

/// Split `n` items into `parts` runs as even as possible: run lengths.
fn even(n: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .collect()
}

/// Data block index of each entry, packing blocks of `cap` bytes in order.
fn pack(sizes: &[usize], cap: usize) -> Vec<usize> {
    let mut v = Vec::with_capacity(sizes.len());
    let (mut db, mut cur) = (0, 0);
    for &s in sizes {
        if cur > 0 && cur + s > cap {
            db += 1;
            cur = 0;
        }
        cur += s;
        v.push(db);
    }
    v
}

/// Spread the entries over exactly `nd` data blocks, none empty, by
/// cumulative byte targets; `None` if that does not fit.
fn spread(sizes: &[usize], cap: usize, nd: usize) -> Option<Vec<usize>> {
    if nd == 0 || sizes.len() < nd {
        return None;
    }
    let total: usize = sizes.iter().sum();
    let mut v = Vec::with_capacity(sizes.len());
    let (mut db, mut cur, mut placed) = (0usize, 0usize, 0usize);
    for (k, &s) in sizes.iter().enumerate() {
        let left_after = sizes.len() - k;
        let must_move = cur > 0 && (cur + s > cap || left_after <= nd - 1 - db);
        let target_met = cur > 0 && placed * nd >= (db + 1) * total;
        if (must_move || target_met) && db + 1 < nd {
            db += 1;
            cur = 0;
        }
        if cur + s > cap {
            return None;
        }
        cur += s;
        placed += s;
        v.push(db);
    }
    (db + 1 == nd).then_some(v)
}

/// Number of interior node blocks above `leaves` leaf blocks when each node
/// holds `per` entries (0 for a single leaf, which is then the root).
fn node_blocks(leaves: usize, per: usize) -> usize {
    let mut n = 0;
    let mut level = leaves;
    while level > 1 {
        level = level.div_ceil(per);
        n += level;
    }
    n
}

impl XfsWriter {
    /// True for a directory this module rebuilds: one whose data fork is a
    /// bmbt, or an extents directory larger than one block that
    /// [`leaf_dir`](Self::leaf_dir) did not take (node form).
    pub(super) fn node_dir(&self, d: &Dinode) -> bool {
        d.di_format == XFS_DINODE_FMT_BTREE
            || (d.di_format == XFS_DINODE_FMT_EXTENTS
                && d.di_size > u64::from(self.geo.dir_block_size))
    }

    /// Add `name` to directory `d` by rebuilding it.
    pub(super) fn node_add(&mut self, d: &Dinode, name: &[u8], ino: u64, ftype: u8) -> Result<()> {
        let mut ents = self.dir_ents(d)?;
        if ents.iter().any(|e| e.name == name) {
            return Err(Error::invalid(format!(
                "xfs: {:?} already exists in directory inode {}",
                String::from_utf8_lossy(name),
                d.ino
            )));
        }
        ents.push(Ent {
            name: name.to_vec(),
            ino,
            ftype,
        });
        let parent = self.dir_parent(d)?;
        self.dir_rebuild(d, parent, &ents)
    }

    /// Remove `name` from directory `d` by rebuilding it.
    pub(super) fn node_remove(&mut self, d: &Dinode, name: &[u8]) -> Result<()> {
        let mut ents = self.dir_ents(d)?;
        let before = ents.len();
        ents.retain(|e| e.name != name);
        if ents.len() == before {
            return Err(Error::invalid(format!(
                "xfs: no entry {:?} in directory inode {}",
                String::from_utf8_lossy(name),
                d.ino
            )));
        }
        let parent = self.dir_parent(d)?;
        self.dir_rebuild(d, parent, &ents)
    }

    /// The directory's current mapping, one fs block at a time (file block
    /// to fs block); empty for a short-form directory.
    fn dir_map(&self, d: &Dinode) -> Result<BTreeMap<u64, u64>> {
        let mut m = BTreeMap::new();
        if d.di_format == XFS_DINODE_FMT_LOCAL {
            return Ok(m);
        }
        for e in data_extents(&self.rd, d)? {
            if e.unwritten {
                return Err(Error::corrupt_msg(format!(
                    "xfs directory inode {}: unwritten extent at file block {}",
                    d.ino, e.startoff
                )));
            }
            if m.len() as u64 + e.blockcount > (crate::limits::MAX_XFS_DIR_BYTES >> 9) {
                return Err(Error::unsupported(format!(
                    "xfs directory inode {}: too many blocks to rebuild",
                    d.ino
                )));
            }
            for i in 0..e.blockcount {
                m.insert(e.startoff + i, e.startblock + i);
            }
        }
        Ok(m)
    }

    /// Rewrite directory `d` (parent `parent`) to hold exactly `ents`, in
    /// block, leaf or node form (see the module docs).
    pub(super) fn dir_rebuild(&mut self, d: &Dinode, parent: u64, ents: &[Ent]) -> Result<()> {
        let leaf0 = XFS_DIR2_LEAF_OFFSET >> self.geo.block_log;
        let free0 = XFS_DIR2_FREE_OFFSET >> self.geo.block_log;
        let old = self.dir_map(d)?;
        let keep = if d.di_format == XFS_DINODE_FMT_BTREE {
            let dirblocks = |lo: u64, hi: u64| {
                old.range(lo..hi)
                    .map(|(f, _)| f >> self.geo.dir_blk_log)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            };
            Keep {
                data: dirblocks(0, leaf0),
                leaf_sec: dirblocks(leaf0, free0),
                node: old.range(free0..).next().is_some(),
            }
        } else {
            Keep::default()
        };
        let blocks = self.dir_layout(d.ino, parent, ents, keep)?;
        self.dir_commit(d, &old, blocks)
    }

    /// Lay `ents` out as directory blocks (header identity fields are
    /// filled in when written).
    fn dir_layout(
        &self,
        dino: u64,
        parent: u64,
        ents: &[Ent],
        keep: Keep,
    ) -> Result<Vec<OutBlock>> {
        let dbs = self.geo.dir_block_size as usize;
        let fpd = 1u64 << self.geo.dir_blk_log;
        let leaf0 = XFS_DIR2_LEAF_OFFSET >> self.geo.block_log;
        let free0 = XFS_DIR2_FREE_OFFSET >> self.geo.block_log;
        if keep.data <= 1 && keep.leaf_sec == 0 {
            if let Some(buf) = build_block(dbs, dino, parent, ents) {
                return Ok(vec![OutBlock {
                    fblock: 0,
                    da: false,
                    buf,
                }]);
            }
        }
        let all = with_dots(dino, parent, ents);
        let sizes: Vec<usize> = all.iter().map(|e| entsize(e.name.len())).collect();
        let cap = dbs - HDR;
        let packed = pack(&sizes, cap);
        let need = packed.last().map_or(1, |l| l + 1);
        let place = if keep.data > need {
            spread(&sizes, cap, keep.data).unwrap_or(packed)
        } else {
            packed
        };
        let nd = place.last().map_or(1, |l| l + 1);
        // Data blocks, leaf entries (hash, address) and bests.
        let mut out: Vec<OutBlock> = Vec::new();
        let mut leaf: Vec<(u32, u32)> = Vec::with_capacity(all.len());
        let mut bests: Vec<u16> = Vec::with_capacity(nd);
        let mut k = 0;
        for db in 0..nd {
            let mut b = vec![0u8; dbs];
            p32(&mut b, 0, XFS_DIR3_DATA_MAGIC);
            let mut off = HDR;
            while k < all.len() && place[k] == db {
                let e = &all[k];
                let sz = sizes[k];
                p64(&mut b, off, e.ino);
                b[off + 8] = e.name.len() as u8;
                put(&mut b, off + 9, &e.name);
                b[off + 9 + e.name.len()] = e.ftype;
                p16(&mut b, off + sz - 2, off as u16);
                leaf.push((da_hashname(&e.name), ((db * dbs + off) / 8) as u32));
                off += sz;
                k += 1;
            }
            let free = dbs - off;
            if free > 0 {
                p16(&mut b, off, FREE_TAG);
                p16(&mut b, off + 2, free as u16);
                p16(&mut b, dbs - 2, off as u16);
                p16(&mut b, 48, off as u16);
                p16(&mut b, 50, free as u16);
            }
            bests.push(free as u16);
            out.push(OutBlock {
                fblock: db as u64 * fpd,
                da: false,
                buf: b,
            });
        }
        leaf.sort_by_key(|&(h, _)| h);
        let n = leaf.len();
        // Leaf form: one LEAF1 block with the bests array in its tail.
        if !keep.node && keep.leaf_sec <= 1 && HDR + n * 8 + nd * 2 + 4 <= dbs {
            let mut b = vec![0u8; dbs];
            p16(&mut b, 8, XFS_DIR3_LEAF1_MAGIC);
            p16(&mut b, 56, n as u16);
            for (i, (h, a)) in leaf.iter().enumerate() {
                p32(&mut b, HDR + i * 8, *h);
                p32(&mut b, HDR + i * 8 + 4, *a);
            }
            let bests_at = dbs - 4 - 2 * nd;
            for (i, v) in bests.iter().enumerate() {
                p16(&mut b, bests_at + 2 * i, *v);
            }
            p32(&mut b, dbs - 4, nd as u32);
            out.push(OutBlock {
                fblock: leaf0,
                da: true,
                buf: b,
            });
            return Ok(out);
        }
        // Node form: LEAFN blocks under da nodes.
        let per = (dbs - HDR) / 8;
        let mut nl = n.div_ceil(per).max(1);
        while nl < n && nl + node_blocks(nl, per) < keep.leaf_sec {
            nl += 1;
        }
        let fblock = |k: u64| leaf0 + k * fpd;
        let mut next = 1u64; // next free leaf-section directory block (0 is the root)
                             // (fblock, last hash) of each block of the level being built.
        let mut level: Vec<(u64, u32)> = Vec::new();
        let mut bufs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut at = 0;
        for cnt in even(n, nl) {
            let f = if nl == 1 {
                fblock(0)
            } else {
                next += 1;
                fblock(next - 1)
            };
            let mut b = vec![0u8; dbs];
            p16(&mut b, 8, XFS_DIR3_LEAFN_MAGIC);
            p16(&mut b, 56, cnt as u16);
            for (i, (h, a)) in leaf[at..at + cnt].iter().enumerate() {
                p32(&mut b, HDR + i * 8, *h);
                p32(&mut b, HDR + i * 8 + 4, *a);
            }
            at += cnt;
            level.push((f, leaf[at - 1].0));
            bufs.push((f, b));
        }
        link_siblings(&mut bufs, &level);
        let mut all_bufs = std::mem::take(&mut bufs);
        let mut lvl = 1u16;
        while level.len() > 1 {
            if lvl > XFS_DA_NODE_MAXDEPTH - 1 {
                return Err(Error::unsupported(format!(
                    "xfs directory inode {dino}: {n} entries need more than {XFS_DA_NODE_MAXDEPTH} hash tree levels"
                )));
            }
            let root = level.len() <= per;
            let groups = if root {
                vec![level.len()]
            } else {
                even(level.len(), level.len().div_ceil(per))
            };
            let mut up: Vec<(u64, u32)> = Vec::new();
            let mut ubufs: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut c = 0;
            for cnt in groups {
                let f = if root {
                    fblock(0)
                } else {
                    next += 1;
                    fblock(next - 1)
                };
                let mut b = vec![0u8; dbs];
                p16(&mut b, 8, XFS_DA3_NODE_MAGIC);
                p16(&mut b, 56, cnt as u16);
                p16(&mut b, 58, lvl);
                for (i, (cf, h)) in level[c..c + cnt].iter().enumerate() {
                    p32(&mut b, HDR + i * 8, *h);
                    p32(&mut b, HDR + i * 8 + 4, *cf as u32);
                }
                c += cnt;
                up.push((f, level[c - 1].1));
                ubufs.push((f, b));
            }
            if !root {
                link_siblings(&mut ubufs, &up);
            }
            all_bufs.extend(ubufs);
            level = up;
            lvl += 1;
        }
        for (f, buf) in all_bufs {
            out.push(OutBlock {
                fblock: f,
                da: true,
                buf,
            });
        }
        // Free-index blocks: the best free length of each data block.
        let maxbests = (dbs - HDR) / 2;
        for (i, chunk) in bests.chunks(maxbests).enumerate() {
            let mut b = vec![0u8; dbs];
            p32(&mut b, 0, XFS_DIR3_FREE_MAGIC);
            p32(&mut b, 48, (i * maxbests) as u32);
            p32(&mut b, 52, chunk.len() as u32);
            p32(&mut b, 56, chunk.len() as u32);
            for (j, v) in chunk.iter().enumerate() {
                p16(&mut b, HDR + 2 * j, *v);
            }
            out.push(OutBlock {
                fblock: free0 + i as u64 * fpd,
                da: false,
                buf: b,
            });
        }
        Ok(out)
    }

    /// Map `blocks` (reusing what `old` maps at the same offsets, allocating
    /// the rest, freeing what is no longer used), write them with their v5
    /// headers, and update the inode.
    fn dir_commit(
        &mut self,
        d: &Dinode,
        old: &BTreeMap<u64, u64>,
        blocks: Vec<OutBlock>,
    ) -> Result<()> {
        let fpd = 1u64 << self.geo.dir_blk_log;
        let dbs = self.geo.dir_block_size as u64;
        let leaf0 = XFS_DIR2_LEAF_OFFSET >> self.geo.block_log;
        // Directory blocks with no mapping yet, in file order.
        let mut missing: Vec<u64> = Vec::new();
        for b in &blocks {
            let mapped = (0..fpd)
                .filter(|i| old.contains_key(&(b.fblock + i)))
                .count() as u64;
            if mapped == 0 {
                missing.push(b.fblock);
            } else if mapped != fpd {
                return Err(Error::unsupported(format!(
                    "xfs directory inode {}: directory block at file block {} is partly mapped",
                    d.ino, b.fblock
                )));
            }
        }
        missing.sort_unstable();
        let mut new = old.clone();
        let mut got_ext: Vec<(u32, u32, u32)> = Vec::new();
        let r = self.dir_alloc(d.ino, &missing, &mut new, &mut got_ext);
        if let Err(e) = r {
            for (a, b, c) in got_ext {
                self.free(a, b, c)?;
            }
            return Err(e);
        }
        let allocated: u64 = got_ext.iter().map(|x| u64::from(x.2)).sum();
        let want: std::collections::BTreeSet<u64> = blocks
            .iter()
            .flat_map(|b| (0..fpd).map(move |i| b.fblock + i))
            .collect();
        new.retain(|f, _| want.contains(f));
        let (pos_ino, mut raw) = self.iread(d.ino)?;
        if new != *old || d.di_format == XFS_DINODE_FMT_LOCAL {
            let recs = extents_of(&new, self.geo.agblk_log);
            if let Err(e) = self.set_data_fork(&mut raw, &recs) {
                for (a, b, c) in got_ext {
                    self.free(a, b, c)?;
                }
                return Err(e);
            }
        }
        // Write every block.
        for mut b in blocks {
            let fsbs: Vec<u64> = (0..fpd)
                .filter_map(|i| new.get(&(b.fblock + i)).copied())
                .collect();
            if fsbs.len() as u64 != fpd {
                return Err(Error::invalid(format!(
                    "xfs directory inode {}: block at file block {} left unmapped",
                    d.ino, b.fblock
                )));
            }
            let pos = self.fsb_pos(fsbs[0])?;
            let lsn = if old.contains_key(&b.fblock) {
                let h = self.read(pos, HDR)?;
                if matches!(g16(&h, 8), 0x3df1 | 0x3dff | 0x3ebe) {
                    g64(&h, 24)
                } else {
                    g64(&h, 16)
                }
            } else {
                0
            };
            let (blk, crc_off) = if b.da { (16, 12) } else { (8, 4) };
            p64(&mut b.buf, blk, pos >> 9);
            p64(&mut b.buf, blk + 8, lsn);
            put(&mut b.buf, blk + 16, &self.geo.meta_uuid);
            p64(&mut b.buf, blk + 32, d.ino);
            crc::set(&mut b.buf, crc_off)
                .ok_or_else(|| Error::invalid("xfs: crc outside block"))?;
            let bs = self.bs();
            let mut i = 0;
            while i < fsbs.len() {
                let mut j = i + 1;
                while j < fsbs.len() && fsbs[j] == fsbs[j - 1] + 1 {
                    j += 1;
                }
                let at = self.fsb_pos(fsbs[i])?;
                self.dev.write_at(at, &b.buf[i * bs..j * bs])?;
                i = j;
            }
        }
        // Free what is no longer mapped.
        let gone: BTreeMap<u64, u64> = old
            .iter()
            .filter(|(f, _)| !want.contains(f))
            .map(|(f, p)| (*f, *p))
            .collect();
        let mut freed = 0u64;
        for e in extents_of(&gone, self.geo.agblk_log) {
            let mut s = e.startblock;
            let end = e.startblock + e.blockcount;
            while s < end {
                let (agno, agbno) = self.split_fsb(s);
                let room = u64::from(self.geo.ag_blocks.saturating_sub(agbno)).max(1);
                let n = (end - s).min(room);
                self.free(agno, agbno, n as u32)?;
                freed += n;
                s += n;
            }
        }
        let nd = want.iter().filter(|&&f| f < leaf0).count() as u64 / fpd;
        // di_size ends at the last data block (a block-form directory: its one block).
        p64(&mut raw, 56, nd * dbs);
        let nb = (g64(&raw, 64) + allocated).saturating_sub(freed);
        p64(&mut raw, 64, nb);
        self.touch(&mut raw, true);
        self.iwrite(pos_ino, &mut raw)
    }

    /// Allocate contiguous runs for the directory blocks starting at file
    /// blocks `missing`, recording them in `map` and `got`.
    fn dir_alloc(
        &mut self,
        ino: u64,
        missing: &[u64],
        map: &mut BTreeMap<u64, u64>,
        got: &mut Vec<(u32, u32, u32)>,
    ) -> Result<()> {
        let fpd = 1u64 << self.geo.dir_blk_log;
        let mut i = 0;
        while i < missing.len() {
            // A run of consecutive directory blocks.
            let mut j = i + 1;
            while j < missing.len() && missing[j] == missing[j - 1] + fpd {
                j += 1;
            }
            let mut k = i;
            while k < j {
                let want = (j - k) as u64 * fpd;
                // Right after the block before it, when that is free: the
                // fork's extent grows instead of a new one being added.
                let after = missing[k]
                    .checked_sub(1)
                    .and_then(|f| map.get(&f))
                    .map(|&p| self.split_fsb(p + 1));
                let exact = match after {
                    Some((agno, agbno)) if agbno != 0 => self
                        .alloc_exact(agno, agbno, want as u32)?
                        .then_some((agno, agbno, want as u32)),
                    _ => None,
                };
                let (agno, agbno, n) = match exact {
                    Some(x) => x,
                    None => self.alloc(self.ag_of_ino(ino), want)?,
                };
                let usable = u64::from(n) / fpd * fpd;
                if usable < u64::from(n) {
                    self.free(agno, agbno + usable as u32, n - usable as u32)?;
                }
                if usable == 0 {
                    return Err(Error::unsupported(
                        "xfs: no contiguous free space for a directory block",
                    ));
                }
                got.push((agno, agbno, usable as u32));
                let start = self.fsb(agno, agbno);
                for b in 0..usable / fpd {
                    for x in 0..fpd {
                        map.insert(missing[k] + x, start + b * fpd + x);
                    }
                    k += 1;
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Take `len` blocks at exactly `agno`/`agbno` when a free extent of at
    /// least `len` blocks starts there; false otherwise.
    fn alloc_exact(&mut self, agno: u32, agbno: u32, len: u32) -> Result<bool> {
        if agno >= self.geo.ag_count || agbno >= self.geo.ag_blocks || len == 0 {
            return Ok(false);
        }
        let (root, lv) = self.bt_root(&BNO, agno)?;
        let p = self.bt_lookup(&BNO, agno, root, lv, (u64::from(agbno), 0))?;
        let Some(r) = self.bt_get(&BNO, agno, &p)? else {
            return Ok(false);
        };
        let (start, count) = (g32(&r, 0), g32(&r, 4));
        if start != agbno || count < len || !self.may_take(agno, len)? {
            return Ok(false);
        }
        self.space_take(agno, (start, count), agbno, len)?;
        Ok(true)
    }

    fn fsb_pos(&self, fsb: u64) -> Result<u64> {
        self.geo
            .fsb_to_byte(fsb, 1)
            .ok_or_else(|| Error::corrupt_msg(format!("xfs: fs block {fsb} is outside")))
    }
}

/// Set `forw`/`back` of the blocks of one tree level (`bufs` in hash order,
/// `level` their file blocks).
fn link_siblings(bufs: &mut [(u64, Vec<u8>)], level: &[(u64, u32)]) {
    let n = bufs.len();
    for (i, (_, b)) in bufs.iter_mut().enumerate() {
        if i + 1 < n {
            p32(b, 0, level[i + 1].0 as u32);
        }
        if i > 0 {
            p32(b, 4, level[i - 1].0 as u32);
        }
    }
}

/// Extent records of a block map (merged where both file and disk blocks
/// run on, within one AG (`agblk_log` bits of AG block), at most
/// `MAX_EXTLEN` long).
fn extents_of(m: &BTreeMap<u64, u64>, agblk_log: u32) -> Vec<BmbtIrec> {
    let mut v: Vec<BmbtIrec> = Vec::new();
    for (&f, &p) in m {
        if let Some(l) = v.last_mut() {
            if l.end() == f
                && l.startblock + l.blockcount == p
                && p & ((1u64 << agblk_log) - 1) != 0
                && l.blockcount < super::MAX_EXTLEN
            {
                l.blockcount += 1;
                continue;
            }
        }
        v.push(BmbtIrec {
            startoff: f,
            startblock: p,
            blockcount: 1,
            unwritten: false,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreading_and_packing() {
        let s = vec![16, 16, 48, 48, 48, 48];
        assert_eq!(pack(&s, 100), vec![0, 0, 0, 1, 1, 2]);
        let v = spread(&s, 100, 4).unwrap();
        assert_eq!(v.last(), Some(&3));
        assert!(spread(&s, 100, 7).is_none());
        assert_eq!(even(10, 3), vec![4, 3, 3]);
        assert_eq!(node_blocks(1, 504), 0);
        assert_eq!(node_blocks(7, 504), 1);
        assert_eq!(node_blocks(505, 504), 3);
    }
}
