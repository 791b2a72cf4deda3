//! ext2, ext3 and ext4, read-only: superblock, group descriptors, inodes,
//! extent trees and classic block maps, linear and htree directories (an htree
//! is read as a linear directory: its index blocks look like empty entries),
//! fast and slow symlinks, small inline-data files.
//!
//! On-disk layout follows the kernel's "ext4 Data Structures and Algorithms"
//! (Documentation/filesystems/ext4/, sections "Super Block", "Block Group
//! Descriptors", "Index Nodes", "The Contents of inode.i_block", "Directory
//! Entries"); byte offsets in the comments are from those tables. The journal
//! is not replayed: an unclean filesystem reads as its last checkpoint.
//! Checksums (metadata_csum, gdt_csum) are not verified; every field that
//! drives a read or a loop is bounds-checked instead.
//!
//! Written here rather than using the `ext4-view` crate (MIT/Apache, no
//! unsafe, bounded): its `Ext4` handle is `Rc`-based and so neither `Send` nor
//! `Sync`, which the [`FileSystem`] seam requires, and the ext4 writer a later
//! issue needs must share these structures anyway.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod write;
mod xattr;

use super::{DirEntry, FileSystem, FileType, Metadata};
use crate::block::BlockSource;
use crate::bytes::{cstr, le16, le32, sub, u, u8_at, us, uuid_be};
use crate::error::{Error, Result};
use crate::limits::{
    MAX_DIR_BYTES, MAX_DIR_ENTRIES, MAX_EXT4_EXTENT_DEPTH, MAX_FILE_RUNS, MAX_SYMLINK_BYTES,
};
use std::sync::Arc;

/// Byte offset of the superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// `s_magic`.
pub const MAGIC: u16 = 0xEF53;
/// Root directory inode.
pub const ROOT_INO: u32 = 2;

// s_feature_incompat bits ("Super Block" table).
const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_DIRDATA: u32 = 0x1000;
// s_feature_ro_compat bits.
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_EXT4_ONLY: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400;
// s_feature_compat bits.
const COMPAT_HAS_JOURNAL: u32 = 0x4;
// i_flags bits ("Index Nodes", i_flags).
const EXT4_EXTENTS_FL: u32 = 0x8_0000;
const EXT4_INLINE_DATA_FL: u32 = 0x1000_0000;
/// Extent header magic (`eh_magic`).
const EXTENT_MAGIC: u16 = 0xF30A;

/// The parsed superblock.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Block size in bytes.
    pub block_size: u64,
    /// `s_inodes_count`.
    pub inodes_count: u32,
    /// `s_blocks_count` (lo + hi).
    pub blocks_count: u64,
    /// `s_first_data_block`.
    pub first_data_block: u64,
    /// `s_blocks_per_group`.
    pub blocks_per_group: u64,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// Inode record size.
    pub inode_size: u64,
    /// Group descriptor size.
    pub desc_size: u64,
    /// `s_first_meta_bg`.
    pub first_meta_bg: u64,
    /// Feature sets.
    pub compat: u32,
    /// Incompatible features.
    pub incompat: u32,
    /// Read-only-compatible features.
    pub ro_compat: u32,
    /// Filesystem UUID.
    pub uuid: String,
    /// Volume label.
    pub label: String,
    /// "ext2", "ext3" or "ext4" (blkid's classification).
    pub kind: &'static str,
}

fn sb_err(
    field: &str,
    off: u64,
    exp: impl std::fmt::Display,
    got: impl std::fmt::Display,
) -> Error {
    Error::corrupt(
        "ext4 superblock",
        field,
        SUPERBLOCK_OFFSET.saturating_add(off),
        exp,
        got,
    )
}

impl Superblock {
    /// Parse the 1024-byte superblock.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let magic = le16(b, 0x38);
        if magic != MAGIC {
            return Err(sb_err("s_magic", 0x38, "0xef53", format!("{magic:#06x}")));
        }
        let log = le32(b, 0x18);
        if log > 6 {
            return Err(sb_err("s_log_block_size", 0x18, "0..=6", log));
        }
        let block_size = 1024u64 << log;
        let rev = le32(b, 0x4C);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(le16(b, 0x58))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(sb_err(
                "s_inode_size",
                0x58,
                "a power of two from 128 to the block size",
                inode_size,
            ));
        }
        let incompat = le32(b, 0x60);
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            let d = u64::from(le16(b, 0xFE));
            if d < 32 || !d.is_power_of_two() || d > 1024 {
                return Err(sb_err("s_desc_size", 0xFE, "32..=1024, a power of two", d));
            }
            d
        } else {
            32
        };
        let bpg = u64::from(le32(b, 0x20));
        if bpg == 0 || bpg > block_size.saturating_mul(8) {
            return Err(sb_err(
                "s_blocks_per_group",
                0x20,
                format!("1..={}", block_size.saturating_mul(8)),
                bpg,
            ));
        }
        let ipg = le32(b, 0x28);
        if ipg == 0 || u64::from(ipg) > block_size.saturating_mul(8) {
            return Err(sb_err(
                "s_inodes_per_group",
                0x28,
                format!("1..={}", block_size.saturating_mul(8)),
                ipg,
            ));
        }
        let mut blocks_count = u64::from(le32(b, 0x4));
        if incompat & INCOMPAT_64BIT != 0 {
            blocks_count |= u64::from(le32(b, 0x150)) << 32;
        }
        let unsupported =
            incompat & (INCOMPAT_COMPRESSION | INCOMPAT_JOURNAL_DEV | INCOMPAT_DIRDATA);
        if unsupported != 0 {
            return Err(Error::unsupported(format!(
                "ext4 incompatible feature flags {unsupported:#x} (compression, journal device or dirdata) are not supported"
            )));
        }
        let compat = le32(b, 0x5C);
        let ro_compat = le32(b, 0x64);
        let kind = if incompat & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG) != 0
            || ro_compat & RO_COMPAT_EXT4_ONLY != 0
        {
            "ext4"
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        };
        Ok(Superblock {
            block_size,
            inodes_count: le32(b, 0x0),
            blocks_count,
            first_data_block: u64::from(le32(b, 0x14)),
            blocks_per_group: bpg,
            inodes_per_group: ipg,
            inode_size,
            desc_size,
            first_meta_bg: u64::from(le32(b, 0x104)),
            compat,
            incompat,
            ro_compat,
            uuid: uuid_be(sub(b, 0x68, 16)),
            label: cstr(sub(b, 0x78, 16)),
            kind,
        })
    }
}

/// An inode as far as reading needs it.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u32,
    /// `i_mode`.
    pub mode: u16,
    /// Owner (lo + hi).
    pub uid: u32,
    /// Group (lo + hi).
    pub gid: u32,
    /// Size in bytes (lo + hi).
    pub size: u64,
    /// `i_mtime`.
    pub mtime: i64,
    /// `i_flags`.
    pub flags: u32,
    /// `i_blocks_lo`.
    pub blocks_lo: u32,
    /// `i_file_acl_lo`.
    pub file_acl: u32,
    /// `i_block`: extent tree root, block map, inline data or symlink text.
    pub block: [u8; 60],
    /// Byte offset of the inode record on the volume (for error messages).
    pub offset: u64,
}

impl Inode {
    /// Kind from the mode bits.
    pub fn file_type(&self) -> FileType {
        match self.mode & 0xF000 {
            0x4000 => FileType::Dir,
            0x8000 => FileType::File,
            0xA000 => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

/// A run of file blocks: logical block, physical block (None = hole), length.
#[derive(Debug, Clone, Copy)]
struct Run {
    logical: u64,
    physical: Option<u64>,
    len: u64,
}

type PushFn<'a> = dyn FnMut(u64, u32, &mut Vec<Run>) -> Result<()> + 'a;

/// An ext2/3/4 filesystem on a block source.
pub struct Ext4 {
    src: Arc<dyn BlockSource>,
    sb: Superblock,
}

impl Ext4 {
    /// Open: read and check the superblock. `Ok(None)` when there is no ext magic.
    pub fn probe(src: Arc<dyn BlockSource>) -> Result<Option<Self>> {
        if src.size() < SUPERBLOCK_OFFSET.saturating_add(1024) {
            return Ok(None);
        }
        let mut b = vec![0u8; 1024];
        src.read_at(SUPERBLOCK_OFFSET, &mut b)?;
        if le16(&b, 0x38) != MAGIC {
            return Ok(None);
        }
        let sb = Superblock::parse(&b)?;
        Ok(Some(Ext4 { src, sb }))
    }

    /// Open, failing when there is no ext2/3/4 filesystem.
    pub fn open(src: Arc<dyn BlockSource>) -> Result<Self> {
        Self::probe(src)?.ok_or_else(|| sb_err("s_magic", 0x38, "0xef53", "another value"))
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn read_block(&self, blk: u64, what: &str) -> Result<Vec<u8>> {
        let mut b = vec![0u8; us(self.sb.block_size)];
        self.read_blocks(blk, &mut b, what)?;
        Ok(b)
    }

    fn read_blocks(&self, blk: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let n = u(buf.len()).div_ceil(self.sb.block_size);
        if blk.checked_add(n).is_none_or(|e| e > self.sb.blocks_count) {
            return Err(Error::corrupt(
                what,
                "block number",
                blk.saturating_mul(self.sb.block_size),
                format!("below s_blocks_count {}", self.sb.blocks_count),
                blk,
            ));
        }
        let off = blk
            .checked_mul(self.sb.block_size)
            .ok_or_else(|| Error::corrupt_msg(format!("{what}: block {blk} overflows")))?;
        self.src.read_at(off, buf)
    }

    fn has_super(&self, group: u64) -> bool {
        if self.sb.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || group <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < group {
                p = p.saturating_mul(base);
            }
            p == group
        })
    }

    /// Byte offset of the descriptor of `group`.
    fn desc_offset(&self, group: u64) -> Result<u64> {
        let bs = self.sb.block_size;
        let dpb = bs.checked_div(self.sb.desc_size).unwrap_or(1).max(1);
        let mg = group.checked_div(dpb).unwrap_or(0);
        let within = group
            .checked_rem(dpb)
            .unwrap_or(0)
            .saturating_mul(self.sb.desc_size);
        let block = if self.sb.incompat & INCOMPAT_META_BG == 0 || mg < self.sb.first_meta_bg {
            self.sb
                .first_data_block
                .saturating_add(1)
                .saturating_add(mg)
        } else {
            let first = mg.saturating_mul(dpb);
            self.sb
                .first_data_block
                .saturating_add(first.saturating_mul(self.sb.blocks_per_group))
                .saturating_add(u64::from(self.has_super(first)))
        };
        block
            .checked_mul(bs)
            .and_then(|o| o.checked_add(within))
            .ok_or_else(|| {
                Error::corrupt_msg(format!("ext4 group descriptor {group}: offset overflows"))
            })
    }

    /// Read inode `ino`.
    pub fn inode(&self, ino: u32) -> Result<Inode> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Error::corrupt(
                "ext4 directory entry",
                "inode",
                0,
                format!("1..={}", self.sb.inodes_count),
                ino,
            ));
        }
        let idx = ino.saturating_sub(1);
        let group = u64::from(idx.checked_div(self.sb.inodes_per_group).unwrap_or(0));
        let index = u64::from(idx.checked_rem(self.sb.inodes_per_group).unwrap_or(0));
        let doff = self.desc_offset(group)?;
        let mut d = vec![0u8; us(self.sb.desc_size)];
        self.src.read_at(doff, &mut d)?;
        let mut table = u64::from(le32(&d, 0x8));
        if self.sb.desc_size >= 64 {
            table |= u64::from(le32(&d, 0x28)) << 32;
        }
        if table == 0 || table >= self.sb.blocks_count {
            return Err(Error::corrupt(
                "ext4 group descriptor",
                "bg_inode_table",
                doff.saturating_add(8),
                format!("a block below {}", self.sb.blocks_count),
                table,
            ));
        }
        let off = table
            .checked_mul(self.sb.block_size)
            .and_then(|t| t.checked_add(index.saturating_mul(self.sb.inode_size)))
            .ok_or_else(|| Error::corrupt_msg(format!("ext4 inode {ino}: offset overflows")))?;
        let mut r = [0u8; 256];
        let n = us(self.sb.inode_size.min(256));
        if let Some(rec) = r.get_mut(..n) {
            self.src.read_at(off, rec)?;
        }
        let r = &r;
        let mut block = [0u8; 60];
        block.copy_from_slice(sub(r, 0x28, 60));
        Ok(Inode {
            ino,
            mode: le16(r, 0x0),
            uid: u32::from(le16(r, 0x2)) | (u32::from(le16(r, 0x78)) << 16),
            gid: u32::from(le16(r, 0x18)) | (u32::from(le16(r, 0x7A)) << 16),
            size: u64::from(le32(r, 0x4)) | (u64::from(le32(r, 0x6C)) << 32),
            mtime: i64::from(le32(r, 0x10)),
            flags: le32(r, 0x20),
            blocks_lo: le32(r, 0x1C),
            file_acl: le32(r, 0x68),
            block,
            offset: off,
        })
    }

    /// Block runs of the first `nblocks` logical blocks of `ino`.
    fn runs(&self, ino: &Inode, nblocks: u64) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        if ino.flags & EXT4_EXTENTS_FL != 0 {
            self.extent_node(ino, &ino.block, 0, None, &mut out)?;
        } else {
            self.block_map(ino, nblocks, &mut out)?;
        }
        Ok(out)
    }

    fn extent_node(
        &self,
        ino: &Inode,
        node: &[u8],
        level: u16,
        want_depth: Option<u16>,
        out: &mut Vec<Run>,
    ) -> Result<()> {
        let corrupt = |field: &str, exp: String, got: String| {
            Error::corrupt(
                format!("ext4 extent tree of inode {}", ino.ino),
                field,
                ino.offset.saturating_add(0x28),
                exp,
                got,
            )
        };
        let magic = le16(node, 0);
        if magic != EXTENT_MAGIC {
            return Err(corrupt(
                "eh_magic",
                "0xf30a".into(),
                format!("{magic:#06x}"),
            ));
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if depth > MAX_EXT4_EXTENT_DEPTH
            || want_depth.is_some_and(|w| w != depth)
            || level > MAX_EXT4_EXTENT_DEPTH
        {
            return Err(corrupt(
                "eh_depth",
                format!("at most {MAX_EXT4_EXTENT_DEPTH}, one less than its parent"),
                depth.to_string(),
            ));
        }
        if entries.saturating_add(1).saturating_mul(12) > node.len() {
            return Err(corrupt(
                "eh_entries",
                format!("at most {}", (node.len() / 12).saturating_sub(1)),
                entries.to_string(),
            ));
        }
        for i in 0..entries {
            let e = sub(node, 12usize.saturating_add(i.saturating_mul(12)), 12);
            if depth == 0 {
                let logical = u64::from(le32(e, 0));
                let mut len = u64::from(le16(e, 4));
                let uninit = len > 32768;
                if uninit {
                    len = len.saturating_sub(32768);
                }
                let phys = (u64::from(le16(e, 6)) << 32) | u64::from(le32(e, 8));
                if len == 0 {
                    continue;
                }
                if out.len() >= MAX_FILE_RUNS {
                    return Err(corrupt(
                        "extents",
                        format!("at most {MAX_FILE_RUNS}"),
                        "more".into(),
                    ));
                }
                out.push(Run {
                    logical,
                    physical: if uninit { None } else { Some(phys) },
                    len,
                });
            } else {
                let leaf = (u64::from(le16(e, 8)) << 32) | u64::from(le32(e, 4));
                let child = self.read_block(leaf, "ext4 extent index")?;
                self.extent_node(
                    ino,
                    &child,
                    level.saturating_add(1),
                    Some(depth.saturating_sub(1)),
                    out,
                )?;
            }
        }
        Ok(())
    }

    fn block_map(&self, ino: &Inode, nblocks: u64, out: &mut Vec<Run>) -> Result<()> {
        let inum = ino.ino;
        let mut push = |logical: u64, phys: u32, out: &mut Vec<Run>| -> Result<()> {
            let physical = (phys != 0).then_some(u64::from(phys));
            if let Some(last) = out.last_mut() {
                let contiguous = match (last.physical, physical) {
                    (Some(a), Some(b)) => a.saturating_add(last.len) == b,
                    (None, None) => true,
                    _ => false,
                };
                if contiguous && last.logical.saturating_add(last.len) == logical {
                    last.len = last.len.saturating_add(1);
                    return Ok(());
                }
            }
            if out.len() >= MAX_FILE_RUNS {
                return Err(Error::corrupt_msg(format!(
                    "ext4 inode {inum}: more than {MAX_FILE_RUNS} block runs"
                )));
            }
            out.push(Run {
                logical,
                physical,
                len: 1,
            });
            Ok(())
        };
        let ptrs = self.sb.block_size / 4;
        let mut logical = 0u64;
        for i in 0..12usize {
            if logical >= nblocks {
                return Ok(());
            }
            push(logical, le32(&ino.block, i.saturating_mul(4)), out)?;
            logical = logical.saturating_add(1);
        }
        for (level, slot) in [(1u32, 12usize), (2, 13), (3, 14)] {
            if logical >= nblocks {
                return Ok(());
            }
            let blk = le32(&ino.block, slot.saturating_mul(4));
            if blk == 0 {
                // A hole spanning the whole indirect tree: nothing to read.
                logical = logical.saturating_add(ptrs.saturating_pow(level));
                continue;
            }
            self.indirect(u64::from(blk), level, &mut logical, nblocks, &mut push, out)?;
        }
        Ok(())
    }

    fn indirect(
        &self,
        blk: u64,
        level: u32,
        logical: &mut u64,
        nblocks: u64,
        push: &mut PushFn<'_>,
        out: &mut Vec<Run>,
    ) -> Result<()> {
        let b = self.read_block(blk, "ext4 indirect block")?;
        let ptrs = self.sb.block_size / 4;
        for i in 0..us(ptrs) {
            if *logical >= nblocks {
                return Ok(());
            }
            let p = le32(&b, i.saturating_mul(4));
            if level == 1 {
                if p != 0 {
                    push(*logical, p, out)?;
                }
                *logical = logical.saturating_add(1);
            } else if p == 0 {
                *logical = logical.saturating_add(ptrs.saturating_pow(level.saturating_sub(1)));
            } else {
                self.indirect(
                    u64::from(p),
                    level.saturating_sub(1),
                    logical,
                    nblocks,
                    push,
                    out,
                )?;
            }
        }
        Ok(())
    }

    /// Contents of `ino`, failing when larger than `limit`.
    pub fn read_inode_data(&self, ino: &Inode, limit: u64) -> Result<Vec<u8>> {
        if ino.size > limit {
            return Err(Error::invalid(format!(
                "ext4 inode {} is {} bytes, more than the {limit}-byte read limit",
                ino.ino, ino.size
            )));
        }
        if ino.flags & EXT4_INLINE_DATA_FL != 0 {
            if ino.size > 60 {
                return Err(Error::unsupported(format!(
                    "ext4 inode {}: inline data continued in the system.data attribute is not supported",
                    ino.ino
                )));
            }
            return Ok(sub(&ino.block, 0, us(ino.size)).to_vec());
        }
        let mut data = crate::bytes::zeroed(ino.size)?;
        let bs = self.sb.block_size;
        let nblocks = ino.size.div_ceil(bs);
        for r in self.runs(ino, nblocks)? {
            let Some(phys) = r.physical else { continue };
            if r.logical >= nblocks {
                continue;
            }
            let len = r.len.min(nblocks.saturating_sub(r.logical));
            let start = r.logical.saturating_mul(bs);
            let end = start.saturating_add(len.saturating_mul(bs)).min(ino.size);
            let dst = data
                .get_mut(us(start)..us(end))
                .ok_or_else(|| Error::corrupt_msg("ext4 extent outside the file"))?;
            self.read_blocks(phys, dst, &format!("ext4 data of inode {}", ino.ino))?;
        }
        Ok(data)
    }

    fn dir_entries(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        if dir.file_type() != FileType::Dir {
            return Err(Error::invalid(format!(
                "ext4 inode {} is not a directory",
                dir.ino
            )));
        }
        let (data, chunk, start) = if dir.flags & EXT4_INLINE_DATA_FL != 0 {
            (dir.block.to_vec(), 56usize, 4usize)
        } else {
            (
                self.read_inode_data(dir, MAX_DIR_BYTES)?,
                us(self.sb.block_size),
                0,
            )
        };
        let filetype = self.sb.incompat & INCOMPAT_FILETYPE != 0;
        let mut out = Vec::new();
        let body = data.get(start..).unwrap_or(&[]);
        for (bi, blk) in body.chunks(chunk).enumerate() {
            let mut pos = 0usize;
            while pos.saturating_add(8) <= blk.len() {
                let ino = le32(blk, pos);
                let rec_len = usize::from(le16(blk, pos.saturating_add(4)));
                let name_len = if filetype {
                    usize::from(u8_at(blk, pos.saturating_add(6)))
                } else {
                    usize::from(le16(blk, pos.saturating_add(6)))
                };
                let at = u(bi.saturating_mul(chunk).saturating_add(pos));
                if rec_len < 8 || rec_len % 4 != 0 || pos.saturating_add(rec_len) > blk.len() {
                    return Err(Error::corrupt(
                        format!("ext4 directory (inode {}) entry", dir.ino),
                        "rec_len",
                        at,
                        format!(
                            "a multiple of 4 from 8 to {}",
                            blk.len().saturating_sub(pos)
                        ),
                        rec_len,
                    ));
                }
                if name_len.saturating_add(8) > rec_len {
                    return Err(Error::corrupt(
                        format!("ext4 directory (inode {}) entry", dir.ino),
                        "name_len",
                        at,
                        format!("at most rec_len - 8 = {}", rec_len.saturating_sub(8)),
                        name_len,
                    ));
                }
                let name = sub(blk, pos.saturating_add(8), name_len);
                if ino != 0 && name != b"." && name != b".." && !name.is_empty() {
                    if out.len() >= MAX_DIR_ENTRIES {
                        return Err(Error::corrupt_msg(format!(
                            "ext4 directory inode {} has more than {MAX_DIR_ENTRIES} entries",
                            dir.ino
                        )));
                    }
                    let ft = match u8_at(blk, pos.saturating_add(7)) {
                        1 if filetype => FileType::File,
                        2 if filetype => FileType::Dir,
                        7 if filetype => FileType::Symlink,
                        _ => FileType::Other,
                    };
                    out.push(DirEntry {
                        name: String::from_utf8_lossy(name).into_owned(),
                        file_type: ft,
                        ino: u64::from(ino),
                    });
                }
                pos = pos.saturating_add(rec_len);
            }
        }
        Ok(out)
    }

    /// Inode of an absolute path (no symlinks followed); `None` when absent.
    pub fn lookup(&self, path: &str) -> Result<Option<Inode>> {
        let mut cur = self.inode(ROOT_INO)?;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if cur.file_type() != FileType::Dir {
                return Ok(None);
            }
            let entries = self.dir_entries(&cur)?;
            match entries.into_iter().find(|e| e.name == c) {
                Some(e) => cur = self.inode(u32::try_from(e.ino).unwrap_or(0))?,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    fn need(&self, path: &str) -> Result<Inode> {
        self.lookup(path)?
            .ok_or_else(|| Error::invalid(format!("{path}: no such file in the ext4 filesystem")))
    }

    /// Symlink target of an inode.
    pub fn link_target(&self, ino: &Inode) -> Result<String> {
        if ino.file_type() != FileType::Symlink {
            return Err(Error::invalid(format!(
                "ext4 inode {} is not a symlink",
                ino.ino
            )));
        }
        let fast = ino.size < 60
            && ino.flags & (EXT4_EXTENTS_FL | EXT4_INLINE_DATA_FL) == 0
            && (ino.blocks_lo == 0 || ino.file_acl != 0);
        let bytes = if fast || ino.flags & EXT4_INLINE_DATA_FL != 0 {
            sub(&ino.block, 0, us(ino.size.min(60))).to_vec()
        } else {
            self.read_inode_data(ino, MAX_SYMLINK_BYTES)?
        };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl FileSystem for Ext4 {
    fn kind(&self) -> &'static str {
        self.sb.kind
    }
    fn uuid(&self) -> Option<String> {
        Some(self.sb.uuid.clone())
    }
    fn label(&self) -> Option<String> {
        (!self.sb.label.is_empty()).then(|| self.sb.label.clone())
    }
    fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        Ok(self.lookup(path)?.map(|i| Metadata {
            file_type: i.file_type(),
            size: i.size,
            mode: u32::from(i.mode),
            uid: i.uid,
            gid: i.gid,
            mtime: i.mtime,
            ino: u64::from(i.ino),
        }))
    }
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let i = self.need(path)?;
        self.dir_entries(&i)
    }
    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let i = self.need(path)?;
        if i.file_type() != FileType::File {
            return Err(Error::invalid(format!("{path} is not a regular file")));
        }
        self.read_inode_data(&i, limit)
    }
    fn read_link(&self, path: &str) -> Result<String> {
        let i = self.need(path)?;
        self.link_target(&i)
    }
}
