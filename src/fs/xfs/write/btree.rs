//! Short-format (per-AG) B+trees as the writer edits them: the free-space
//! trees by block and by size (bnobt "AB3B", cntbt "AB3C"), the inode trees
//! (inobt "IAB3", finobt "FIB3") and, read-only, the refcount tree ("R3FC").
//!
//! Layout ("XFS Algorithms & Data Structures", "B+trees", short format v5):
//! a 56-byte header (magic, level, numrecs, left/right siblings, blkno, lsn,
//! uuid, owner AG, crc at byte 52), then records (leaves) or keys followed by
//! pointers at `56 + maxrecs * keylen` (nodes).
//!
//! Edits follow the kernel's `xfs_btree.c` shapes (written here from the
//! format description, not copied): records are updated, removed and
//! inserted in a leaf and the low keys of the parents are fixed up; a full
//! block splits (the upper half of its entries moves to a new right sibling,
//! the sibling links and the old right neighbour's left link follow, and the
//! new block's low key and pointer go into the parent, recursively); a root
//! that splits gets a new root above it (`agf_roots`/`agf_levels`,
//! `agi_root`/`agi_level`, `agi_free_root`/`agi_free_level`). Below the root
//! every block keeps at least half its capacity (`xfs_repair` checks
//! `minrecs`): a block left underfull by a delete borrows an entry from a
//! sibling under the same parent or is merged with it, the emptied block is
//! unlinked and its pointer deleted from the parent, recursively; a root node
//! left with one child is removed and the tree loses a level.
//!
//! Blocks of the free-space trees come from and go back to the AG free list
//! ([`super::agfl`], counted in `agf_btreeblks`); inode-tree blocks are
//! allocated and freed like file blocks, counted in `agi_iblocks` /
//! `agi_fblocks` when the filesystem has `inobtcount`.

use super::super::sb::XFS_SB_FEAT_RO_COMPAT_INOBTCNT;
use super::{g16, g32, p16, p32, put, XfsWriter, AGF_CRC, AGI_CRC};
use crate::error::{Error, Result};

/// Header length of a v5 short-format block (`XFS_BTREE_SBLOCK_CRC_LEN`).
pub const HDR: usize = 56;
/// Byte offset of `bb_crc` in a v5 short-format block.
pub const CRC_OFF: usize = 52;
/// No sibling (`NULLAGBLOCK`).
pub const NULLAGBLOCK: u32 = u32::MAX;
/// Deepest tree walked (`XFS_BTREE_MAXLEVELS` is 9).
const MAX_LEVELS: u32 = 9;

/// Which tree; the key order each uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// By start block.
    Bno,
    /// By (block count, start block).
    Cnt,
    /// Inode chunks by start inode.
    Ino,
    /// Refcount records by start block.
    Refc,
}

/// One tree's on-disk shape.
#[derive(Clone, Copy, Debug)]
pub struct Tree {
    /// v5 magic.
    pub magic: u32,
    /// Record length.
    pub reclen: usize,
    /// Key length.
    pub keylen: usize,
    /// Name for messages.
    pub name: &'static str,
    /// Key order.
    pub kind: Kind,
}

/// Free space by block ("AB3B").
pub const BNO: Tree = Tree {
    magic: 0x4142_3342,
    reclen: 8,
    keylen: 8,
    name: "bnobt",
    kind: Kind::Bno,
};
/// Free space by size ("AB3C").
pub const CNT: Tree = Tree {
    magic: 0x4142_3343,
    reclen: 8,
    keylen: 8,
    name: "cntbt",
    kind: Kind::Cnt,
};
/// Inode chunks ("IAB3").
pub const INO: Tree = Tree {
    magic: 0x4941_4233,
    reclen: 16,
    keylen: 4,
    name: "inobt",
    kind: Kind::Ino,
};
/// Chunks with free inodes ("FIB3").
pub const FINO: Tree = Tree {
    magic: 0x4649_4233,
    reclen: 16,
    keylen: 4,
    name: "finobt",
    kind: Kind::Ino,
};
/// Reference counts ("R3FC").
pub const REFC: Tree = Tree {
    magic: 0x5233_4643,
    reclen: 12,
    keylen: 4,
    name: "refcountbt",
    kind: Kind::Refc,
};

/// A record's or key's sort key.
pub type Key = (u64, u64);

impl Tree {
    /// The key of a record (or of a node key: same leading layout).
    pub fn key(&self, rec: &[u8]) -> Key {
        match self.kind {
            Kind::Cnt => (u64::from(g32(rec, 4)), u64::from(g32(rec, 0))),
            _ => (u64::from(g32(rec, 0)), 0),
        }
    }
    fn maxrecs(&self, bs: usize, leaf: bool) -> usize {
        let per = if leaf { self.reclen } else { self.keylen + 4 };
        (bs - HDR) / per
    }
}

/// Root-to-leaf path: (AG block, index) per level; the leaf index is where
/// the searched key is or would be inserted.
pub type Path = Vec<(u32, usize)>;

/// A block decoded into its entries: records (leaf) or key ++ pointer (node).
struct Blk {
    bno: u32,
    level: u32,
    left: u32,
    right: u32,
    ents: Vec<Vec<u8>>,
    raw: Vec<u8>,
}

/// The records on either side of a key: (before, at or after).
pub type Around = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Where a tree's root, level and (optional) block count live in the AG
/// headers: (in the AGI?, root offset, level offset, block count offset).
type Slot = (bool, usize, usize, Option<usize>);

impl XfsWriter {
    fn bt_read(&self, t: &Tree, agno: u32, agbno: u32, level: Option<u32>) -> Result<Vec<u8>> {
        let b = self.read_agblock(agno, agbno)?;
        let magic = g32(&b, 0);
        let lv = u32::from(g16(&b, 4));
        let n = usize::from(g16(&b, 6));
        let leaf = lv == 0;
        if magic != t.magic
            || level.is_some_and(|l| l != lv)
            || n > t.maxrecs(b.len(), leaf)
            || g32(&b, 48) != agno
        {
            return Err(Error::corrupt(
                format!("xfs {} block {agno}/{agbno}", t.name),
                "bb_magic/bb_level/bb_numrecs/bb_owner",
                self.ag_pos(agno, agbno),
                format!("{:#x}, level {level:?}, owner AG {agno}", t.magic),
                format!("{magic:#x}, level {lv}, {n} records, owner {}", g32(&b, 48)),
            ));
        }
        Ok(b)
    }

    fn bt_write(&self, agno: u32, agbno: u32, b: &mut [u8]) -> Result<()> {
        self.write_meta(self.ag_pos(agno, agbno), b, CRC_OFF)
    }

    fn blk_read(&self, t: &Tree, agno: u32, bno: u32, level: u32) -> Result<Blk> {
        let raw = self.bt_read(t, agno, bno, Some(level))?;
        let n = usize::from(g16(&raw, 6));
        let mut ents = Vec::with_capacity(n);
        if level == 0 {
            for i in 0..n {
                ents.push(raw[HDR + i * t.reclen..HDR + (i + 1) * t.reclen].to_vec());
            }
        } else {
            let pofs = HDR + t.maxrecs(raw.len(), false) * t.keylen;
            for i in 0..n {
                let mut e = raw[HDR + i * t.keylen..HDR + (i + 1) * t.keylen].to_vec();
                e.extend_from_slice(&raw[pofs + i * 4..pofs + i * 4 + 4]);
                ents.push(e);
            }
        }
        Ok(Blk {
            bno,
            level,
            left: g32(&raw, 8),
            right: g32(&raw, 12),
            ents,
            raw,
        })
    }

    /// A fresh block header (LSN 0: never ahead of the log).
    fn blk_new(&self, t: &Tree, agno: u32, bno: u32, level: u32) -> Blk {
        let mut raw = vec![0u8; self.geo.block_size as usize];
        p32(&mut raw, 0, t.magic);
        super::p64(&mut raw, 16, self.ag_pos(agno, bno) >> 9);
        put(&mut raw, 32, &self.geo.meta_uuid);
        p32(&mut raw, 48, agno);
        Blk {
            bno,
            level,
            left: NULLAGBLOCK,
            right: NULLAGBLOCK,
            ents: Vec::new(),
            raw,
        }
    }

    fn blk_write(&self, t: &Tree, agno: u32, b: &mut Blk) -> Result<()> {
        let leaf = b.level == 0;
        let max = t.maxrecs(b.raw.len(), leaf);
        if b.ents.len() > max {
            return Err(Error::invalid(format!(
                "xfs {} block {agno}/{}: {} entries exceed {max}",
                t.name,
                b.bno,
                b.ents.len()
            )));
        }
        p16(&mut b.raw, 4, b.level as u16);
        p16(&mut b.raw, 6, b.ents.len() as u16);
        p32(&mut b.raw, 8, b.left);
        p32(&mut b.raw, 12, b.right);
        b.raw[HDR..].fill(0);
        if leaf {
            for (i, e) in b.ents.iter().enumerate() {
                put(&mut b.raw, HDR + i * t.reclen, e);
            }
        } else {
            let pofs = HDR + max * t.keylen;
            for (i, e) in b.ents.iter().enumerate() {
                put(&mut b.raw, HDR + i * t.keylen, &e[..t.keylen]);
                put(&mut b.raw, pofs + i * 4, &e[t.keylen..t.keylen + 4]);
            }
        }
        self.bt_write(agno, b.bno, &mut b.raw)
    }

    fn set_sibling_left(&self, t: &Tree, agno: u32, bno: u32, level: u32, left: u32) -> Result<()> {
        if bno == NULLAGBLOCK {
            return Ok(());
        }
        let mut b = self.blk_read(t, agno, bno, level)?;
        b.left = left;
        self.blk_write(t, agno, &mut b)
    }

    fn slot(&self, t: &Tree) -> Result<Slot> {
        let cnt = self.geo.sb.sb_features_ro_compat & XFS_SB_FEAT_RO_COMPAT_INOBTCNT != 0;
        match t.magic {
            m if m == BNO.magic => Ok((false, 16, 28, None)),
            m if m == CNT.magic => Ok((false, 20, 32, None)),
            m if m == INO.magic => Ok((true, 20, 24, cnt.then_some(336))),
            m if m == FINO.magic => Ok((true, 328, 332, cnt.then_some(340))),
            m if m == REFC.magic => Ok((false, 88, 92, None)),
            _ => Err(Error::invalid(format!("xfs: unknown tree {}", t.name))),
        }
    }

    /// Current (root, levels) of a tree, read from the AGF or AGI.
    pub fn bt_root(&self, t: &Tree, agno: u32) -> Result<(u32, u32)> {
        let (in_agi, ro, lo, _) = self.slot(t)?;
        let (_, h) = if in_agi {
            self.agi(agno)?
        } else {
            self.agf(agno)?
        };
        Ok((g32(&h, ro), g32(&h, lo)))
    }

    /// Rewrite the AG header fields of tree `t`: root and levels, and add
    /// `dblocks` to its block count (when the filesystem keeps one).
    fn set_root(&self, t: &Tree, agno: u32, root: Option<(u32, u32)>, dblocks: i64) -> Result<()> {
        let (in_agi, ro, lo, co) = self.slot(t)?;
        let ((pos, mut h), crc) = if in_agi {
            (self.agi(agno)?, AGI_CRC)
        } else {
            (self.agf(agno)?, AGF_CRC)
        };
        if let Some((r, l)) = root {
            p32(&mut h, ro, r);
            p32(&mut h, lo, l);
        }
        if let Some(co) = co {
            let v = i64::from(g32(&h, co)) + dblocks;
            p32(&mut h, co, u32::try_from(v).unwrap_or(0));
        }
        self.write_meta(pos, &mut h, crc)
    }

    /// A new block for tree `t`: from the AG free list for the free-space
    /// trees, from free space for the inode trees.
    fn bt_alloc_block(&mut self, t: &Tree, agno: u32) -> Result<u32> {
        match t.kind {
            Kind::Bno | Kind::Cnt => self.agfl_get(agno, true),
            Kind::Ino => {
                let bno = self.alloc_in_ag(agno)?;
                self.set_root(t, agno, None, 1)?;
                Ok(bno)
            }
            Kind::Refc => Err(Error::unsupported(
                "xfs: the refcount B+tree is not modified by this writer",
            )),
        }
    }

    fn bt_free_block(&mut self, t: &Tree, agno: u32, bno: u32) -> Result<()> {
        match t.kind {
            Kind::Bno | Kind::Cnt => self.agfl_put(agno, bno, true),
            Kind::Ino => {
                self.set_root(t, agno, None, -1)?;
                self.free(agno, bno, 1)
            }
            Kind::Refc => Err(Error::unsupported(
                "xfs: the refcount B+tree is not modified by this writer",
            )),
        }
    }

    /// Path to `key` in the tree rooted at `root` with `levels` levels.
    pub fn bt_lookup(&self, t: &Tree, agno: u32, root: u32, levels: u32, key: Key) -> Result<Path> {
        if levels == 0 || levels > MAX_LEVELS {
            return Err(Error::corrupt_msg(format!(
                "xfs AG {agno}: {} has {levels} levels",
                t.name
            )));
        }
        let mut path = Path::new();
        let mut bno = root;
        for lv in (0..levels).rev() {
            let b = self.bt_read(t, agno, bno, Some(lv))?;
            let n = usize::from(g16(&b, 6));
            if lv > 0 {
                let mx = t.maxrecs(b.len(), false);
                let mut i = 0;
                while i + 1 < n && t.key(&b[HDR + (i + 1) * t.keylen..]) <= key {
                    i += 1;
                }
                if n == 0 {
                    return Err(Error::corrupt_msg(format!(
                        "xfs AG {agno}: empty {} node {bno}",
                        t.name
                    )));
                }
                path.push((bno, i));
                bno = g32(&b, HDR + mx * t.keylen + i * 4);
            } else {
                let mut i = 0;
                while i < n && t.key(&b[HDR + i * t.reclen..]) < key {
                    i += 1;
                }
                path.push((bno, i));
            }
        }
        Ok(path)
    }

    /// The record at the leaf position of `path`, if any.
    pub fn bt_get(&self, t: &Tree, agno: u32, path: &Path) -> Result<Option<Vec<u8>>> {
        let Some(&(bno, i)) = path.last() else {
            return Ok(None);
        };
        let b = self.bt_read(t, agno, bno, Some(0))?;
        if i < usize::from(g16(&b, 6)) {
            Ok(Some(
                b[HDR + i * t.reclen..HDR + (i + 1) * t.reclen].to_vec(),
            ))
        } else {
            Ok(None)
        }
    }

    /// Path to the record with exactly `key`, or an error naming the tree.
    pub fn bt_find(&self, t: &Tree, agno: u32, root: u32, levels: u32, key: Key) -> Result<Path> {
        let p = self.bt_lookup(t, agno, root, levels, key)?;
        match self.bt_get(t, agno, &p)? {
            Some(r) if t.key(&r) == key => Ok(p),
            _ => Err(Error::corrupt_msg(format!(
                "xfs AG {agno}: {} has no record with key {key:?}",
                t.name
            ))),
        }
    }

    /// Carry the low key of the block at depth `d` of `path` up into its
    /// ancestors, as far as it is their first entry.
    fn fix_low(&self, t: &Tree, agno: u32, path: &Path, d: usize) -> Result<()> {
        let levels = path.len();
        let mut k = d;
        while k > 0 {
            let child = self.blk_read(t, agno, path[k].0, (levels - 1 - k) as u32)?;
            let Some(first) = child.ents.first() else {
                break;
            };
            let key = first[..t.keylen].to_vec();
            let (pb, pi) = path[k - 1];
            let mut p = self.blk_read(t, agno, pb, (levels - k) as u32)?;
            let Some(e) = p.ents.get_mut(pi) else {
                return Err(Error::corrupt_msg(format!(
                    "xfs AG {agno}: {} node {pb} has no entry {pi}",
                    t.name
                )));
            };
            if e[..t.keylen] == key[..] {
                break;
            }
            e[..t.keylen].copy_from_slice(&key);
            self.blk_write(t, agno, &mut p)?;
            if pi != 0 {
                break;
            }
            k -= 1;
        }
        Ok(())
    }

    /// Overwrite the record at `path` (its key may change only within its
    /// neighbours' order).
    pub fn bt_update(&mut self, t: &Tree, agno: u32, path: &Path, rec: &[u8]) -> Result<()> {
        let (bno, i) = *path.last().ok_or_else(|| Error::invalid("empty path"))?;
        let mut b = self.blk_read(t, agno, bno, 0)?;
        let Some(e) = b.ents.get_mut(i) else {
            return Err(Error::invalid(format!(
                "xfs AG {agno}: {} leaf {bno} has no record {i}",
                t.name
            )));
        };
        e.copy_from_slice(&rec[..t.reclen]);
        self.blk_write(t, agno, &mut b)?;
        if i == 0 {
            self.fix_low(t, agno, path, path.len() - 1)?;
        }
        Ok(())
    }

    /// Remove the record at `path` (from a lookup in the current tree).
    pub fn bt_delete(&mut self, t: &Tree, agno: u32, path: &Path) -> Result<()> {
        let (_, i) = *path.last().ok_or_else(|| Error::invalid("empty path"))?;
        self.del_at(t, agno, path, path.len() - 1, i)
    }

    /// Insert `rec` at `path` (from [`bt_lookup`](Self::bt_lookup) of its key
    /// in the current tree).
    pub fn bt_insert(&mut self, t: &Tree, agno: u32, path: &Path, rec: &[u8]) -> Result<()> {
        let (_, i) = *path.last().ok_or_else(|| Error::invalid("empty path"))?;
        self.ins_at(t, agno, path, path.len() - 1, i, rec[..t.reclen].to_vec())
    }

    /// Insert entry `ent` at index `i` of the block at depth `d` of `path`,
    /// splitting it (and its ancestors) when full.
    fn ins_at(
        &mut self,
        t: &Tree,
        agno: u32,
        path: &Path,
        d: usize,
        i: usize,
        ent: Vec<u8>,
    ) -> Result<()> {
        let levels = path.len();
        let level = (levels - 1 - d) as u32;
        let mut b = self.blk_read(t, agno, path[d].0, level)?;
        if i > b.ents.len() {
            return Err(Error::invalid(format!(
                "xfs AG {agno}: insert position {i} past the end of {} block {}",
                t.name, b.bno
            )));
        }
        b.ents.insert(i, ent);
        let max = t.maxrecs(b.raw.len(), level == 0);
        if b.ents.len() <= max {
            self.blk_write(t, agno, &mut b)?;
            if i == 0 {
                self.fix_low(t, agno, path, d)?;
            }
            return Ok(());
        }
        // Split: the upper half moves to a new right sibling.
        let nbno = self.bt_alloc_block(t, agno)?;
        let mut nb = self.blk_new(t, agno, nbno, level);
        let keep = b.ents.len().div_ceil(2);
        nb.ents = b.ents.split_off(keep);
        nb.left = b.bno;
        nb.right = b.right;
        self.set_sibling_left(t, agno, b.right, level, nbno)?;
        b.right = nbno;
        self.blk_write(t, agno, &mut b)?;
        self.blk_write(t, agno, &mut nb)?;
        if i == 0 {
            self.fix_low(t, agno, path, d)?;
        }
        let mut nkey = nb.ents[0][..t.keylen].to_vec();
        nkey.extend_from_slice(&nbno.to_be_bytes());
        if d == 0 {
            if levels as u32 >= MAX_LEVELS {
                return Err(Error::unsupported(format!(
                    "xfs AG {agno}: the {} would grow past {MAX_LEVELS} levels",
                    t.name
                )));
            }
            let rbno = self.bt_alloc_block(t, agno)?;
            let mut r = self.blk_new(t, agno, rbno, level + 1);
            let mut lkey = b.ents[0][..t.keylen].to_vec();
            lkey.extend_from_slice(&b.bno.to_be_bytes());
            r.ents = vec![lkey, nkey];
            self.blk_write(t, agno, &mut r)?;
            return self.set_root(t, agno, Some((rbno, levels as u32 + 1)), 0);
        }
        let (_, pi) = path[d - 1];
        self.ins_at(t, agno, path, d - 1, pi + 1, nkey)
    }

    /// Remove entry `i` of the block at depth `d` of `path`, rebalancing or
    /// merging an underfull block with a sibling under the same parent and
    /// collapsing a root node left with one child.
    fn del_at(&mut self, t: &Tree, agno: u32, path: &Path, d: usize, i: usize) -> Result<()> {
        let levels = path.len();
        let level = (levels - 1 - d) as u32;
        let mut b = self.blk_read(t, agno, path[d].0, level)?;
        if i >= b.ents.len() {
            return Err(Error::invalid(format!(
                "xfs AG {agno}: {} block {} has no entry {i}",
                t.name, b.bno
            )));
        }
        b.ents.remove(i);
        if d == 0 {
            if level > 0 && b.ents.len() == 1 {
                return self.kill_root(t, agno, b, levels);
            }
            return self.blk_write(t, agno, &mut b);
        }
        let min = t.maxrecs(b.raw.len(), level == 0) / 2;
        if b.ents.len() >= min {
            self.blk_write(t, agno, &mut b)?;
            if i == 0 {
                self.fix_low(t, agno, path, d)?;
            }
            return Ok(());
        }
        let (pb, pi) = path[d - 1];
        let p = self.blk_read(t, agno, pb, level + 1)?;
        let ptr = |e: &Vec<u8>| g32(e, t.keylen);
        if let Some(re) = p.ents.get(pi + 1) {
            let mut r = self.blk_read(t, agno, ptr(re), level)?;
            if r.ents.len() > min {
                // Borrow the right sibling's first entry.
                b.ents.push(r.ents.remove(0));
                self.blk_write(t, agno, &mut b)?;
                self.blk_write(t, agno, &mut r)?;
                if i == 0 {
                    self.fix_low(t, agno, path, d)?;
                }
                let mut p = self.blk_read(t, agno, pb, level + 1)?;
                let key = r.ents[0][..t.keylen].to_vec();
                p.ents[pi + 1][..t.keylen].copy_from_slice(&key);
                return self.blk_write(t, agno, &mut p);
            }
            // Merge the right sibling into this block.
            b.ents.append(&mut r.ents);
            b.right = r.right;
            self.set_sibling_left(t, agno, r.right, level, b.bno)?;
            self.blk_write(t, agno, &mut b)?;
            if i == 0 {
                self.fix_low(t, agno, path, d)?;
            }
            self.bt_free_block(t, agno, r.bno)?;
            return self.del_at(t, agno, path, d - 1, pi + 1);
        }
        if pi > 0 {
            let mut l = self.blk_read(t, agno, ptr(&p.ents[pi - 1]), level)?;
            if l.ents.len() > min {
                // Borrow the left sibling's last entry.
                let e = l.ents.pop().unwrap_or_default();
                b.ents.insert(0, e);
                self.blk_write(t, agno, &mut b)?;
                self.blk_write(t, agno, &mut l)?;
                return self.fix_low(t, agno, path, d);
            }
            // Merge this block into the left sibling.
            l.ents.append(&mut b.ents);
            l.right = b.right;
            self.set_sibling_left(t, agno, b.right, level, l.bno)?;
            self.blk_write(t, agno, &mut l)?;
            self.bt_free_block(t, agno, b.bno)?;
            return self.del_at(t, agno, path, d - 1, pi);
        }
        // The only child of its parent (a root node with one entry).
        self.blk_write(t, agno, &mut b)?;
        if !b.ents.is_empty() && i == 0 {
            self.fix_low(t, agno, path, d)?;
        }
        if d == 1 && p.ents.len() == 1 {
            return self.kill_root(t, agno, p, levels);
        }
        Ok(())
    }

    /// The root node `root` has one child: make the child the root.
    fn kill_root(&mut self, t: &Tree, agno: u32, root: Blk, levels: usize) -> Result<()> {
        let child = g32(&root.ents[0], t.keylen);
        self.set_root(t, agno, Some((child, levels as u32 - 1)), 0)?;
        self.bt_free_block(t, agno, root.bno)
    }

    /// The records just before `key` and at or after it (current tree).
    pub fn bt_seek(&self, t: &Tree, agno: u32, key: Key) -> Result<Around> {
        let (root, levels) = self.bt_root(t, agno)?;
        let path = self.bt_lookup(t, agno, root, levels, key)?;
        let (bno, i) = *path.last().ok_or_else(|| Error::invalid("empty path"))?;
        let b = self.blk_read(t, agno, bno, 0)?;
        let prev = match i.checked_sub(1) {
            Some(j) => b.ents.get(j).cloned(),
            None if b.left != NULLAGBLOCK => self.blk_read(t, agno, b.left, 0)?.ents.pop(),
            None => None,
        };
        let next = match b.ents.get(i) {
            Some(e) => Some(e.clone()),
            None if b.right != NULLAGBLOCK => {
                self.blk_read(t, agno, b.right, 0)?.ents.into_iter().next()
            }
            None => None,
        };
        Ok((prev, next))
    }

    /// The last record of the tree (current tree), if any.
    pub fn bt_last(&self, t: &Tree, agno: u32) -> Result<Option<Vec<u8>>> {
        let (mut bno, levels) = self.bt_root(t, agno)?;
        if levels == 0 || levels > MAX_LEVELS {
            return Err(Error::corrupt_msg(format!(
                "xfs AG {agno}: {} has {levels} levels",
                t.name
            )));
        }
        for lv in (1..levels).rev() {
            let b = self.blk_read(t, agno, bno, lv)?;
            let Some(e) = b.ents.last() else {
                return Err(Error::corrupt_msg(format!(
                    "xfs AG {agno}: empty {} node {bno}",
                    t.name
                )));
            };
            bno = g32(e, t.keylen);
        }
        Ok(self.blk_read(t, agno, bno, 0)?.ents.pop())
    }

    /// Every record of the tree, in key order (leftmost leaf, then right siblings).
    pub fn bt_records(&self, t: &Tree, agno: u32, root: u32, levels: u32) -> Result<Vec<Vec<u8>>> {
        if levels == 0 || levels > MAX_LEVELS {
            return Err(Error::corrupt_msg(format!(
                "xfs AG {agno}: {} has {levels} levels",
                t.name
            )));
        }
        let mut bno = root;
        for lv in (1..levels).rev() {
            let b = self.bt_read(t, agno, bno, Some(lv))?;
            let mx = t.maxrecs(b.len(), false);
            bno = g32(&b, HDR + mx * t.keylen);
        }
        let mut out = Vec::new();
        let mut guard = 0u64;
        while bno != NULLAGBLOCK {
            guard += 1;
            if guard > u64::from(self.geo.ag_blocks) {
                return Err(Error::corrupt_msg(format!(
                    "xfs AG {agno}: {} leaf sibling chain loops",
                    t.name
                )));
            }
            let b = self.bt_read(t, agno, bno, Some(0))?;
            let n = usize::from(g16(&b, 6));
            for i in 0..n {
                out.push(b[HDR + i * t.reclen..HDR + (i + 1) * t.reclen].to_vec());
            }
            bno = g32(&b, 12);
        }
        Ok(out)
    }
}
