//! Short-format (per-AG) B+trees as the writer edits them: the free-space
//! trees by block and by size (bnobt "AB3B", cntbt "AB3C"), the inode trees
//! (inobt "IAB3", finobt "FIB3") and, read-only, the refcount tree ("R3FC").
//!
//! Layout ("XFS Algorithms & Data Structures", "B+trees", short format v5):
//! a 56-byte header (magic, level, numrecs, left/right siblings, blkno, lsn,
//! uuid, owner AG, crc at byte 52), then records (leaves) or keys followed by
//! pointers at `56 + maxrecs * keylen` (nodes).
//!
//! Edits stay inside existing blocks: records are updated, removed and
//! inserted in a leaf and the low keys of the parents are fixed up. A leaf
//! that would split (full) or be left empty below the root is refused, naming
//! the tree, rather than restructured.

use super::{g16, g32, p16, XfsWriter};
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

    fn bt_fix_keys(&self, t: &Tree, agno: u32, path: &Path) -> Result<()> {
        for d in (1..path.len()).rev() {
            let child = self.read_agblock(agno, path[d].0)?;
            if g16(&child, 6) == 0 {
                break;
            }
            let first = child[HDR..HDR + t.keylen].to_vec();
            let (pb, pi) = path[d - 1];
            let mut parent = self.read_agblock(agno, pb)?;
            let at = HDR + pi * t.keylen;
            if parent[at..at + t.keylen] == first[..] {
                break;
            }
            parent[at..at + t.keylen].copy_from_slice(&first);
            self.bt_write(agno, pb, &mut parent)?;
            if pi != 0 {
                break;
            }
        }
        Ok(())
    }

    /// Overwrite the record at `path` (its key may change only within its
    /// neighbours' order).
    pub fn bt_update(&self, t: &Tree, agno: u32, path: &Path, rec: &[u8]) -> Result<()> {
        let (bno, i) = *path.last().ok_or_else(|| Error::invalid("empty path"))?;
        let mut b = self.bt_read(t, agno, bno, Some(0))?;
        b[HDR + i * t.reclen..HDR + (i + 1) * t.reclen].copy_from_slice(rec);
        self.bt_write(agno, bno, &mut b)?;
        if i == 0 {
            self.bt_fix_keys(t, agno, path)?;
        }
        Ok(())
    }

    /// Remove the record at `path`.
    pub fn bt_delete(&self, t: &Tree, agno: u32, path: &Path) -> Result<()> {
        let (bno, i) = *path.last().ok_or_else(|| Error::invalid("empty path"))?;
        let mut b = self.bt_read(t, agno, bno, Some(0))?;
        let n = usize::from(g16(&b, 6));
        if n <= 1 && path.len() > 1 {
            return Err(Error::unsupported(format!(
                "xfs AG {agno}: removing the last record of a {} leaf (merging B+tree blocks) is not implemented",
                t.name
            )));
        }
        let s = HDR + i * t.reclen;
        b.copy_within(s + t.reclen..HDR + n * t.reclen, s);
        let end = HDR + (n - 1) * t.reclen;
        b[end..end + t.reclen].fill(0);
        p16(&mut b, 6, (n - 1) as u16);
        self.bt_write(agno, bno, &mut b)?;
        if i == 0 {
            self.bt_fix_keys(t, agno, path)?;
        }
        Ok(())
    }

    /// Insert `rec` at `path` (from [`bt_lookup`](Self::bt_lookup) of its key).
    pub fn bt_insert(&self, t: &Tree, agno: u32, path: &Path, rec: &[u8]) -> Result<()> {
        let (bno, i) = *path.last().ok_or_else(|| Error::invalid("empty path"))?;
        let mut b = self.bt_read(t, agno, bno, Some(0))?;
        let n = usize::from(g16(&b, 6));
        if n >= t.maxrecs(b.len(), true) {
            return Err(Error::unsupported(format!(
                "xfs AG {agno}: the {} leaf block {bno} is full (splitting B+tree blocks is not implemented)",
                t.name
            )));
        }
        let s = HDR + i * t.reclen;
        b.copy_within(s..HDR + n * t.reclen, s + t.reclen);
        b[s..s + t.reclen].copy_from_slice(rec);
        p16(&mut b, 6, (n + 1) as u16);
        self.bt_write(agno, bno, &mut b)?;
        if i == 0 {
            self.bt_fix_keys(t, agno, path)?;
        }
        Ok(())
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
