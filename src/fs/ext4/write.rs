//! ext4 writer: applies [`FsAction`]s to an ext4 filesystem inside a
//! copy-on-write [`Overlay`] (the input image is never written).
//!
//! Built on the reader in the parent module (superblock, descriptors, inode
//! lookup, directory parsing). Layout and checksums follow the kernel's
//! "ext4 Data Structures and Algorithms" (Documentation/filesystems/ext4/):
//! "Super Block" (s_checksum, crc32c over the first 0x3FC bytes), "Block Group
//! Descriptors" (bg_checksum: crc32c(seed, group, desc) & 0xFFFF with
//! metadata_csum, crc16(uuid, group, desc) with gdt_csum; bitmap checksums),
//! "Index Nodes" (i_checksum_lo/hi: crc32c(seed, ino, generation, inode)),
//! "Extent Tree" (ext4_extent_tail after eh_max entries), "Linear (Classic)
//! Directories" (ext4_dir_entry_tail in the last 12 bytes of each leaf).
//! The checksum seed is crc32c(~0, s_uuid), or s_checksum_seed with csum_seed.
//!
//! What it does: mkdir -p, create or replace regular files (extents in the
//! inode, or an extent tree of any needed depth: leaves, then index blocks),
//! fast and slow symlinks, hard links (not to directories), chmod, chown,
//! set-times (with the epoch bits of the `_extra` fields when the inode has
//! them), extended attributes (in the inode body, then one external block;
//! see [`super::xattr`]), delete of files, links and empty directories (an
//! xattr block loses a reference or is freed). Entries go into linear
//! directories (a new block when full) and into the leaves of an htree
//! directory (legacy, half-MD4 or TEA hash as the root says, signed or
//! unsigned chars as the superblock says); a full leaf is split by hash and
//! indexed in its parent; a full dx_node is split into the root (a full root
//! is refused: no new index level is added).
//! Allocation prefers the
//! parent's group; BLOCK_UNINIT / INODE_UNINIT groups are initialised when
//! used. Filesystems whose journal needs recovery, that recorded errors, or
//! that use a feature this writer does not maintain (inline_data among
//! them) are refused, naming why.
//!
//! Arithmetic here works on values the reader already bounded (block size at
//! most 64 KiB, groups, inodes and blocks from a checked superblock), so the
//! module allows plain arithmetic and `as` casts between those widths; all
//! slice access goes through checked helpers.
#![allow(clippy::arithmetic_side_effects, clippy::as_conversions)]

use super::{xattr, Ext4, Inode, ROOT_INO};
use crate::bytes::{le16, le32, sub, us};
use crate::error::{Error, Result};
use crate::fs::{resolve, FileType};
use crate::inject::FsAction;
use crate::overlay::VolumeDev;
use crate::source::vhdx::crc::update as crc32c_raw;

// s_feature_incompat ("Super Block").
const IN_FILETYPE: u32 = 0x2;
const IN_RECOVER: u32 = 0x4;
const IN_EXTENTS: u32 = 0x40;
const IN_64BIT: u32 = 0x80;
const IN_FLEX_BG: u32 = 0x200;
const IN_CSUM_SEED: u32 = 0x2000;
const IN_LARGEDIR: u32 = 0x4000;
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x100, "mmp"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
// s_feature_ro_compat.
const RO_GDT_CSUM: u32 = 0x10;
const RO_METADATA_CSUM: u32 = 0x400;
const RO_SUPPORTED: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x400 | 0x8000;
const RO_NAMES: &[(u32, &str)] = &[
    (0x80, "snapshot"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x10000, "orphan_present"),
];
// bg_flags.
const BG_INODE_UNINIT: u16 = 0x1;
const BG_BLOCK_UNINIT: u16 = 0x2;
// i_flags.
const INDEX_FL: u32 = 0x1000;
const EXTENTS_FL: u32 = 0x8_0000;
const HUGE_FILE_FL: u32 = 0x4_0000;
/// Longest initialised extent ("Extent Tree": ee_len up to 32768).
const MAX_EXTENT_LEN: u64 = 32768;
/// Longest fast symlink: the 60 bytes of i_block, less the terminating NUL.
const FAST_SYMLINK_MAX: usize = 59;
/// Directory entry file types (ext4_dir_entry_2.file_type).
const FT_FILE: u8 = 1;
const FT_DIR: u8 = 2;
const FT_SYMLINK: u8 = 7;
/// Deepest mkdir -p.
const MAX_DEPTH: usize = 256;

fn put16(b: &mut [u8], off: usize, v: u16) {
    if let Some(d) = b.get_mut(off..off + 2) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    if let Some(d) = b.get_mut(off..off + 4) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}
fn bit(b: &[u8], i: u64) -> bool {
    b.get(us(i / 8)).is_some_and(|x| x & (1 << (i % 8)) != 0)
}
fn set_bit(b: &mut [u8], i: u64, on: bool) {
    if let Some(x) = b.get_mut(us(i / 8)) {
        if on {
            *x |= 1 << (i % 8);
        } else {
            *x &= !(1 << (i % 8));
        }
    }
}
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    // CRC-16 (poly 0x8005, reflected 0xA001), as lib/crc16.c that gdt_csum uses.
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}
fn enospc(what: &str) -> Error {
    Error::invalid(format!(
        "no space left on the ext4 filesystem (ENOSPC): {what}"
    ))
}
fn rec_need(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// A writable ext4 filesystem on a region of an overlay.
pub struct Ext4Writer {
    dev: VolumeDev,
    len: u64,
    rd: Ext4,
    sb: Vec<u8>,
    bs: u64,
    groups: u64,
    ds: usize,
    csum: bool,
    gdt_csum: bool,
    seed: u32,
    now: u32,
    gen: u32,
    extra_isize: u16,
}

/// A file or directory inode as the writer needs it.
struct Node {
    ino: u32,
    raw: Vec<u8>,
    off: u64,
}

impl Node {
    fn mode(&self) -> u16 {
        le16(&self.raw, 0)
    }
    fn flags(&self) -> u32 {
        le32(&self.raw, 0x20)
    }
    fn links(&self) -> u16 {
        le16(&self.raw, 0x1A)
    }
    fn size(&self) -> u64 {
        u64::from(le32(&self.raw, 4)) | (u64::from(le32(&self.raw, 0x6C)) << 32)
    }
    fn set_size(&mut self, s: u64) {
        put32(&mut self.raw, 4, s as u32);
        put32(&mut self.raw, 0x6C, (s >> 32) as u32);
    }
    fn blocks512(&self) -> u64 {
        u64::from(le32(&self.raw, 0x1C)) | (u64::from(le16(&self.raw, 0x74)) << 32)
    }
    fn set_blocks512(&mut self, v: u64) {
        put32(&mut self.raw, 0x1C, v as u32);
        put16(&mut self.raw, 0x74, (v >> 32) as u16);
    }
    fn ftype(&self) -> FileType {
        match self.mode() & 0xF000 {
            0x4000 => FileType::Dir,
            0x8000 => FileType::File,
            0xA000 => FileType::Symlink,
            _ => FileType::Other,
        }
    }
    fn iblock(&self) -> Vec<u8> {
        sub(&self.raw, 0x28, 60).to_vec()
    }
    fn set_iblock(&mut self, b: &[u8]) {
        if let Some(d) = self.raw.get_mut(0x28..0x28 + 60) {
            d.fill(0);
            if let Some(d) = d.get_mut(..b.len().min(60)) {
                d.copy_from_slice(sub(b, 0, b.len().min(60)));
            }
        }
    }
}

impl Ext4Writer {
    /// Open the filesystem on the volume `dev` for writing, refusing
    /// (naming the reason) what this writer cannot keep consistent.
    pub fn open(dev: VolumeDev) -> Result<Self> {
        let len = dev.len();
        let rd = Ext4::open(dev.source())?;
        let mut sb = vec![0u8; 1024];
        dev.read_at(super::SUPERBLOCK_OFFSET, &mut sb)?;
        let s = rd.superblock().clone();
        let refuse = |why: String| {
            Err(Error::unsupported(format!(
                "ext4 filesystem cannot be written: {why}"
            )))
        };
        if s.incompat & IN_RECOVER != 0 {
            return refuse(
                "its journal needs recovery (needs_recovery is set); mount it once or run e2fsck first"
                    .into(),
            );
        }
        let state = le16(&sb, 0x3A);
        if state & 2 != 0 || le32(&sb, 0x194) != 0 {
            return refuse(
                "it has errors recorded (s_state / s_error_count); run e2fsck first".into(),
            );
        }
        if state & 1 == 0 {
            return refuse("it was not cleanly unmounted (s_state)".into());
        }
        for (b, n) in INCOMPAT_NAMES {
            if s.incompat & b != 0 {
                return refuse(format!(
                    "the incompatible feature {n} is not supported by the writer"
                ));
            }
        }
        for (b, n) in RO_NAMES {
            if s.ro_compat & b != 0 {
                return refuse(format!("the feature {n} is not supported by the writer"));
            }
        }
        let known = IN_FILETYPE | IN_EXTENTS | IN_64BIT | IN_FLEX_BG | IN_CSUM_SEED | IN_LARGEDIR;
        if s.incompat & !known != 0 {
            return refuse(format!(
                "unknown incompatible feature bits {:#x}",
                s.incompat & !known
            ));
        }
        if s.ro_compat & !RO_SUPPORTED != 0 {
            return refuse(format!(
                "unknown read-only-compatible feature bits {:#x}",
                s.ro_compat & !RO_SUPPORTED
            ));
        }
        if s.incompat & IN_EXTENTS == 0 || s.incompat & IN_FILETYPE == 0 {
            return refuse(
                "it lacks the extents or filetype feature (ext2/ext3 layouts are not written)"
                    .into(),
            );
        }
        if le32(&sb, 0x24) != s.blocks_per_group as u32 || le32(&sb, 0x1C) != le32(&sb, 0x18) {
            return refuse("bigalloc clusters are not supported".into());
        }
        let groups = (s.blocks_count - s.first_data_block).div_ceil(s.blocks_per_group);
        if groups == 0
            || groups.saturating_mul(u64::from(s.inodes_per_group)) < u64::from(s.inodes_count)
        {
            return Err(Error::corrupt(
                "ext4 superblock",
                "s_inodes_count",
                1024,
                "at most groups x inodes per group",
                s.inodes_count,
            ));
        }
        let csum = s.ro_compat & RO_METADATA_CSUM != 0;
        let seed = if s.incompat & IN_CSUM_SEED != 0 {
            le32(&sb, 0x270)
        } else {
            crc32c_raw(!0, sub(&sb, 0x68, 16))
        };
        let now = crate::target::default_timestamp()?.min(u64::from(u32::MAX)) as u32;
        let max_extra = (s.inode_size as u16).saturating_sub(128);
        let want = le16(&sb, 0x15E).max(le16(&sb, 0x15C));
        let extra_isize = if max_extra == 0 {
            0
        } else if want == 0 {
            32.min(max_extra)
        } else {
            want.min(max_extra)
        };
        Ok(Ext4Writer {
            dev,
            len,
            rd,
            sb,
            bs: s.block_size,
            groups,
            ds: us(s.desc_size),
            csum,
            gdt_csum: !csum && s.ro_compat & RO_GDT_CSUM != 0,
            seed,
            now,
            gen: 0x6f6e_7200,
            extra_isize,
        })
    }

    /// A block address read from the filesystem must stay inside it.
    fn inside(&self, off: u64, len: usize, what: &str) -> Result<()> {
        if off.checked_add(len as u64).is_none_or(|e| e > self.len) {
            return Err(Error::corrupt_msg(format!(
                "ext4 writer: {what} at byte {off} outside the {}-byte filesystem",
                self.len
            )));
        }
        Ok(())
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.inside(off, data.len(), "write")?;
        self.dev.write_at(off, data)
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.inside(off, buf.len(), "read")?;
        self.dev.read_at(off, buf)
    }
    fn blocks_count(&self) -> u64 {
        self.rd.sb.blocks_count
    }
    fn read_blk(&self, blk: u64) -> Result<Vec<u8>> {
        if blk >= self.blocks_count() {
            return Err(Error::corrupt_msg(format!(
                "ext4: block {blk} past the end"
            )));
        }
        let mut b = vec![0u8; us(self.bs)];
        self.read(blk * self.bs, &mut b)?;
        Ok(b)
    }
    fn write_blk(&self, blk: u64, b: &[u8]) -> Result<()> {
        if blk >= self.blocks_count() || blk == 0 {
            return Err(Error::corrupt_msg(format!(
                "ext4 writer: refusing to write block {blk}"
            )));
        }
        self.write(blk * self.bs, b)
    }

    // ---- group descriptors -------------------------------------------------

    fn gd_off(&self, g: u64) -> u64 {
        (self.rd.sb.first_data_block + 1) * self.bs + g * self.ds as u64
    }
    fn gd(&self, g: u64) -> Result<Vec<u8>> {
        let mut d = vec![0u8; self.ds];
        self.read(self.gd_off(g), &mut d)?;
        Ok(d)
    }
    fn gd_get(&self, d: &[u8], lo: usize, hi: usize, wide: bool) -> u64 {
        if wide {
            let mut v = u64::from(le32(d, lo));
            if self.ds >= 64 {
                v |= u64::from(le32(d, hi)) << 32;
            }
            v
        } else {
            let mut v = u64::from(le16(d, lo));
            if self.ds >= 64 {
                v |= u64::from(le16(d, hi)) << 16;
            }
            v
        }
    }
    fn gd_set16(&self, d: &mut [u8], lo: usize, hi: usize, v: u64) {
        put16(d, lo, v as u16);
        if self.ds >= 64 {
            put16(d, hi, (v >> 16) as u16);
        }
    }
    fn put_gd(&self, g: u64, d: &mut [u8]) -> Result<()> {
        if self.csum {
            let mut c = crc32c_raw(self.seed, &(g as u32).to_le_bytes());
            c = crc32c_raw(c, sub(d, 0, 0x1E));
            c = crc32c_raw(c, &[0, 0]);
            c = crc32c_raw(c, d.get(0x20..).unwrap_or(&[]));
            put16(d, 0x1E, c as u16);
        } else if self.gdt_csum {
            let mut c = crc16(!0, sub(&self.sb, 0x68, 16));
            c = crc16(c, &(g as u32).to_le_bytes());
            c = crc16(c, sub(d, 0, 0x1E));
            c = crc16(c, d.get(0x20..).unwrap_or(&[]));
            put16(d, 0x1E, c);
        }
        self.write(self.gd_off(g), d)
    }
    fn block_bitmap_blk(&self, d: &[u8]) -> u64 {
        self.gd_get(d, 0, 0x20, true)
    }
    fn inode_bitmap_blk(&self, d: &[u8]) -> u64 {
        self.gd_get(d, 4, 0x24, true)
    }
    fn inode_table_blk(&self, d: &[u8]) -> u64 {
        self.gd_get(d, 8, 0x28, true)
    }
    fn group_first(&self, g: u64) -> u64 {
        self.rd.sb.first_data_block + g * self.rd.sb.blocks_per_group
    }
    fn group_len(&self, g: u64) -> u64 {
        (self.blocks_count() - self.group_first(g)).min(self.rd.sb.blocks_per_group)
    }
    fn itable_blocks(&self) -> u64 {
        (u64::from(self.rd.sb.inodes_per_group) * self.rd.sb.inode_size).div_ceil(self.bs)
    }

    /// The block bitmap of group `g` (built as e2fsprogs does for BLOCK_UNINIT).
    fn block_bitmap(&self, g: u64, d: &[u8]) -> Result<Vec<u8>> {
        let flags = le16(d, 0x12);
        let len = self.group_len(g);
        if flags & BG_BLOCK_UNINIT == 0 {
            return self.read_blk(self.block_bitmap_blk(d));
        }
        let mut b = vec![0u8; us(self.bs)];
        let first = self.group_first(g);
        if self.rd.has_super(g) {
            let gdt = (self.groups * self.ds as u64).div_ceil(self.bs);
            let resv = u64::from(le16(&self.sb, 0xCE));
            let n = 1 + gdt + resv;
            // With 4 KiB blocks group 0's superblock shares block 0 with the boot sector.
            for i in 0..n.min(len) {
                set_bit(&mut b, i, true);
            }
        }
        for h in 0..self.groups {
            let hd = if h == g { d.to_vec() } else { self.gd(h)? };
            let mut mark = |blk: u64, n: u64| {
                for x in blk..blk + n {
                    if x >= first && x < first + len {
                        set_bit(&mut b, x - first, true);
                    }
                }
            };
            mark(self.block_bitmap_blk(&hd), 1);
            mark(self.inode_bitmap_blk(&hd), 1);
            mark(self.inode_table_blk(&hd), self.itable_blocks());
        }
        for i in len..self.bs * 8 {
            set_bit(&mut b, i, true);
        }
        Ok(b)
    }

    fn put_block_bitmap(&self, g: u64, d: &mut [u8], b: &[u8]) -> Result<()> {
        self.write_blk(self.block_bitmap_blk(d), b)?;
        put16(d, 0x12, le16(d, 0x12) & !BG_BLOCK_UNINIT);
        if self.csum {
            let c = crc32c_raw(self.seed, sub(b, 0, us(self.rd.sb.blocks_per_group / 8)));
            self.gd_set16(d, 0x18, 0x38, u64::from(c));
        }
        self.put_gd(g, d)
    }

    fn inode_bitmap(&self, d: &[u8]) -> Result<Vec<u8>> {
        if le16(d, 0x12) & BG_INODE_UNINIT == 0 {
            return self.read_blk(self.inode_bitmap_blk(d));
        }
        let mut b = vec![0u8; us(self.bs)];
        for i in u64::from(self.rd.sb.inodes_per_group)..self.bs * 8 {
            set_bit(&mut b, i, true);
        }
        Ok(b)
    }

    fn put_inode_bitmap(&self, g: u64, d: &mut [u8], b: &[u8]) -> Result<()> {
        self.write_blk(self.inode_bitmap_blk(d), b)?;
        put16(d, 0x12, le16(d, 0x12) & !BG_INODE_UNINIT);
        if self.csum {
            let c = crc32c_raw(
                self.seed,
                sub(b, 0, us(u64::from(self.rd.sb.inodes_per_group) / 8)),
            );
            self.gd_set16(d, 0x1A, 0x3A, u64::from(c));
        }
        self.put_gd(g, d)
    }

    fn free_blocks_total(&self) -> Result<u64> {
        let mut t = 0u64;
        for g in 0..self.groups {
            let d = self.gd(g)?;
            t += self.gd_get(&d, 0xC, 0x2C, false);
        }
        Ok(t)
    }

    /// Superblock free counts from the descriptors, then its checksum.
    fn flush_sb(&mut self) -> Result<()> {
        let (mut fb, mut fi) = (0u64, 0u64);
        for g in 0..self.groups {
            let d = self.gd(g)?;
            fb += self.gd_get(&d, 0xC, 0x2C, false);
            fi += self.gd_get(&d, 0xE, 0x2E, false);
        }
        put32(&mut self.sb, 0xC, fb as u32);
        if self.rd.sb.incompat & IN_64BIT != 0 {
            put32(&mut self.sb, 0x158, (fb >> 32) as u32);
        }
        put32(&mut self.sb, 0x10, fi as u32);
        if self.csum {
            let c = crc32c_raw(!0, sub(&self.sb, 0, 0x3FC));
            put32(&mut self.sb, 0x3FC, c);
        }
        let sb = self.sb.clone();
        self.write(super::SUPERBLOCK_OFFSET, &sb)
    }

    // ---- allocation ---------------------------------------------------------

    fn group_of_ino(&self, ino: u32) -> u64 {
        u64::from((ino - 1) / self.rd.sb.inodes_per_group)
    }

    /// Allocate `count` blocks near group `goal`; returns runs (start, len).
    fn alloc_blocks(&self, count: u64, goal: u64) -> Result<Vec<(u64, u64)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let free = self.free_blocks_total()?;
        if count > free {
            return Err(enospc(&format!("{count} blocks needed, {free} free")));
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut left = count;
        for k in 0..self.groups {
            let g = (goal + k) % self.groups;
            let mut d = self.gd(g)?;
            let gfree = self.gd_get(&d, 0xC, 0x2C, false);
            if gfree == 0 {
                continue;
            }
            let mut b = self.block_bitmap(g, &d)?;
            let first = self.group_first(g);
            let mut taken = 0u64;
            for i in 0..self.group_len(g) {
                if left == 0 {
                    break;
                }
                if bit(&b, i) {
                    continue;
                }
                set_bit(&mut b, i, true);
                let blk = first + i;
                match runs.last_mut() {
                    Some((s, l)) if *s + *l == blk && *l < MAX_EXTENT_LEN => *l += 1,
                    _ => runs.push((blk, 1)),
                }
                left -= 1;
                taken += 1;
            }
            if taken > 0 {
                if taken > gfree {
                    return Err(Error::corrupt_msg(format!(
                        "ext4 group {g}: bitmap has more free blocks than bg_free_blocks_count"
                    )));
                }
                self.gd_set16(&mut d, 0xC, 0x2C, gfree - taken);
                self.put_block_bitmap(g, &mut d, &b)?;
            }
            if left == 0 {
                // Zero fresh blocks' stale content is not needed: callers write every block.
                return Ok(runs);
            }
        }
        Err(enospc(&format!("{left} more blocks needed")))
    }

    fn free_blocks(&self, start: u64, n: u64) -> Result<()> {
        let mut blk = start;
        let end = start + n;
        while blk < end {
            if blk < self.rd.sb.first_data_block || blk >= self.blocks_count() {
                return Err(Error::corrupt_msg(format!(
                    "ext4: freeing block {blk} outside the filesystem"
                )));
            }
            let g = (blk - self.rd.sb.first_data_block) / self.rd.sb.blocks_per_group;
            let first = self.group_first(g);
            let stop = end.min(first + self.group_len(g));
            let mut d = self.gd(g)?;
            let mut b = self.block_bitmap(g, &d)?;
            let mut freed = 0u64;
            for x in blk..stop {
                if bit(&b, x - first) {
                    set_bit(&mut b, x - first, false);
                    freed += 1;
                }
            }
            let gfree = self.gd_get(&d, 0xC, 0x2C, false);
            self.gd_set16(&mut d, 0xC, 0x2C, gfree + freed);
            self.put_block_bitmap(g, &mut d, &b)?;
            blk = stop;
        }
        Ok(())
    }

    fn alloc_inode(&self, goal: u64, dir: bool) -> Result<u32> {
        let ipg = u64::from(self.rd.sb.inodes_per_group);
        let first_ino = u64::from(le32(&self.sb, 0x54).max(11));
        for k in 0..self.groups {
            let g = (goal + k) % self.groups;
            let mut d = self.gd(g)?;
            let free = self.gd_get(&d, 0xE, 0x2E, false);
            if free == 0 {
                continue;
            }
            let mut b = self.inode_bitmap(&d)?;
            for i in 0..ipg {
                let ino = g * ipg + i + 1;
                if ino < first_ino || bit(&b, i) {
                    continue;
                }
                set_bit(&mut b, i, true);
                self.gd_set16(&mut d, 0xE, 0x2E, free - 1);
                if dir {
                    let u = self.gd_get(&d, 0x10, 0x30, false);
                    self.gd_set16(&mut d, 0x10, 0x30, u + 1);
                }
                if self.csum || self.gdt_csum {
                    let unused = self.gd_get(&d, 0x1C, 0x32, false);
                    if i >= ipg.saturating_sub(unused) {
                        self.gd_set16(&mut d, 0x1C, 0x32, ipg - i - 1);
                    }
                }
                self.put_inode_bitmap(g, &mut d, &b)?;
                return u32::try_from(ino)
                    .map_err(|_| Error::corrupt_msg("ext4 inode number overflows"));
            }
        }
        Err(enospc("no free inodes"))
    }

    fn free_inode(&self, ino: u32, dir: bool) -> Result<()> {
        let g = self.group_of_ino(ino);
        let i = u64::from((ino - 1) % self.rd.sb.inodes_per_group);
        let mut d = self.gd(g)?;
        let mut b = self.inode_bitmap(&d)?;
        set_bit(&mut b, i, false);
        let free = self.gd_get(&d, 0xE, 0x2E, false);
        self.gd_set16(&mut d, 0xE, 0x2E, free + 1);
        if dir {
            let u = self.gd_get(&d, 0x10, 0x30, false);
            self.gd_set16(&mut d, 0x10, 0x30, u.saturating_sub(1));
        }
        self.put_inode_bitmap(g, &mut d, &b)
    }

    // ---- inodes -------------------------------------------------------------

    fn node(&self, ino: u32) -> Result<Node> {
        let i: Inode = self.rd.inode(ino)?;
        let mut raw = vec![0u8; us(self.rd.sb.inode_size)];
        self.read(i.offset, &mut raw)?;
        Ok(Node {
            ino,
            raw,
            off: i.offset,
        })
    }

    fn inode_seed(&self, ino: u32, gen: u32) -> u32 {
        let c = crc32c_raw(self.seed, &ino.to_le_bytes());
        crc32c_raw(c, &gen.to_le_bytes())
    }

    fn put_node(&self, n: &mut Node) -> Result<()> {
        if self.csum {
            let big = n.raw.len() > 128 && 128 + usize::from(le16(&n.raw, 0x80)) >= 0x84;
            put16(&mut n.raw, 0x7C, 0);
            if big {
                put16(&mut n.raw, 0x82, 0);
            }
            let c = crc32c_raw(self.inode_seed(n.ino, le32(&n.raw, 0x64)), &n.raw);
            put16(&mut n.raw, 0x7C, c as u16);
            if big {
                put16(&mut n.raw, 0x82, (c >> 16) as u16);
            }
        }
        self.write(n.off, &n.raw)
    }

    fn new_node(&mut self, ino: u32, mode: u16, uid: u32, gid: u32, links: u16) -> Result<Node> {
        let mut n = self.node(ino)?;
        n.raw.fill(0);
        put16(&mut n.raw, 0, mode);
        put16(&mut n.raw, 2, uid as u16);
        put16(&mut n.raw, 0x78, (uid >> 16) as u16);
        put16(&mut n.raw, 0x18, gid as u16);
        put16(&mut n.raw, 0x7A, (gid >> 16) as u16);
        for off in [0x8, 0xC, 0x10] {
            put32(&mut n.raw, off, self.now);
        }
        put16(&mut n.raw, 0x1A, links);
        self.gen = self.gen.wrapping_add(1);
        put32(&mut n.raw, 0x64, self.gen ^ ino);
        if n.raw.len() > 128 {
            put16(&mut n.raw, 0x80, self.extra_isize);
            if self.extra_isize >= 0x18 {
                put32(&mut n.raw, 0x90, self.now);
            }
        }
        Ok(n)
    }

    /// Every block an extent-mapped inode owns: (data runs, tree blocks).
    fn owned_blocks(&self, n: &Node) -> Result<(Vec<DataRun>, Vec<u64>)> {
        let mut data = Vec::new();
        let mut tree = Vec::new();
        if n.flags() & EXTENTS_FL == 0 {
            // A fast symlink keeps its target in i_block (e2fsprogs and the
            // kernel decide by size); i_blocks may count an xattr block.
            let fast = n.ftype() == FileType::Symlink && n.size() < 60;
            if fast || n.blocks512() == self.ea_blocks512(n) {
                return Ok((data, tree));
            }
            return Err(Error::unsupported(format!(
                "ext4 inode {}: block-mapped (non-extent) files are not supported by the writer",
                n.ino
            )));
        }
        self.walk(n, &n.iblock(), 0, &mut data, &mut tree)?;
        Ok((data, tree))
    }

    fn walk(
        &self,
        n: &Node,
        node: &[u8],
        level: u16,
        data: &mut Vec<(u64, u64, u64)>,
        tree: &mut Vec<u64>,
    ) -> Result<()> {
        if le16(node, 0) != 0xF30A || level > 5 {
            return Err(Error::corrupt(
                format!("ext4 extent tree of inode {}", n.ino),
                "eh_magic",
                n.off + 0x28,
                "0xf30a",
                le16(node, 0),
            ));
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if (entries + 1) * 12 > node.len() {
            return Err(Error::corrupt_msg(format!(
                "ext4 inode {}: eh_entries too large",
                n.ino
            )));
        }
        for i in 0..entries {
            let e = sub(node, 12 + i * 12, 12);
            if depth == 0 {
                let mut len = u64::from(le16(e, 4));
                if len > MAX_EXTENT_LEN {
                    len -= MAX_EXTENT_LEN;
                }
                let phys = (u64::from(le16(e, 6)) << 32) | u64::from(le32(e, 8));
                data.push((u64::from(le32(e, 0)), phys, len));
            } else {
                let leaf = (u64::from(le16(e, 8)) << 32) | u64::from(le32(e, 4));
                tree.push(leaf);
                if tree.len() > 100_000 {
                    return Err(Error::corrupt_msg("ext4 extent tree too large"));
                }
                let b = self.read_blk(leaf)?;
                self.walk(n, &b, level + 1, data, tree)?;
            }
        }
        Ok(())
    }

    /// Free all blocks of `n` (its data and extent tree) and empty its i_block.
    fn release_blocks(&self, n: &mut Node) -> Result<()> {
        let (data, tree) = self.owned_blocks(n)?;
        for (_, p, l) in data {
            self.free_blocks(p, l)?;
        }
        for t in tree {
            self.free_blocks(t, 1)?;
        }
        n.set_blocks512(self.ea_blocks512(n));
        n.set_size(0);
        Ok(())
    }

    /// Write `data` into fresh blocks and map them in `n` (i_block, size, i_blocks).
    fn store_data(&self, n: &mut Node, data: &[u8], goal: u64) -> Result<()> {
        let nblocks = (data.len() as u64).div_ceil(self.bs);
        let runs = self.alloc_blocks(nblocks, goal)?;
        let mut logical = 0u64;
        let mut extents = Vec::new();
        for &(p, l) in &runs {
            let from = us(logical * self.bs);
            let to = us(((logical + l) * self.bs).min(data.len() as u64));
            let mut buf = data.get(from..to).unwrap_or(&[]).to_vec();
            buf.resize(us(l * self.bs), 0);
            self.write(p * self.bs, &buf)?;
            extents.push((logical, p, l));
            logical += l;
        }
        let tree_blocks = self.build_tree(n, &extents, goal)?;
        let fl = (n.flags() | EXTENTS_FL) & !HUGE_FILE_FL;
        put32(&mut n.raw, 0x20, fl);
        n.set_size(data.len() as u64);
        n.set_blocks512((nblocks + tree_blocks) * (self.bs / 512) + self.ea_blocks512(n));
        Ok(())
    }

    /// Map `extents` (logical, physical, length; in order) in `n`: in i_block
    /// when at most 4, else a tree built bottom-up ("Extent Tree"): leaves of
    /// up to `max` extents, index blocks of up to `max` entries, until at most
    /// 4 entries remain for the root. Returns the tree blocks allocated.
    fn build_tree(&self, n: &mut Node, extents: &[DataRun], goal: u64) -> Result<u64> {
        let mut root = vec![0u8; 60];
        put16(&mut root, 0, 0xF30A);
        put16(&mut root, 4, 4);
        let max = (self.bs as usize - 12) / 12;
        let mut items: Vec<(u64, [u8; 12])> = extents
            .iter()
            .map(|&(lg, p, l)| {
                let mut e = [0u8; 12];
                put_extent(&mut e, 0, lg, p, l);
                (lg, e)
            })
            .collect();
        let mut depth = 0u16;
        let mut tree_blocks = 0u64;
        while items.len() > 4 {
            if depth >= 4 {
                return Err(Error::unsupported(format!(
                    "ext4 writer: inode {} would need an extent tree deeper than 5 levels",
                    n.ino
                )));
            }
            let mut next = Vec::new();
            for chunk in items.chunks(max) {
                let lb = self
                    .alloc_blocks(1, goal)?
                    .first()
                    .map(|r| r.0)
                    .ok_or_else(|| enospc("extent block"))?;
                let mut b = vec![0u8; us(self.bs)];
                put16(&mut b, 0, 0xF30A);
                put16(&mut b, 2, chunk.len() as u16);
                put16(&mut b, 4, max as u16);
                put16(&mut b, 6, depth);
                for (i, (_, e)) in chunk.iter().enumerate() {
                    if let Some(d) = b.get_mut(12 + i * 12..24 + i * 12) {
                        d.copy_from_slice(e);
                    }
                }
                self.extent_tail(n, &mut b);
                self.write_blk(lb, &b)?;
                tree_blocks += 1;
                let first = chunk.first().map_or(0, |c| c.0);
                let mut idx = [0u8; 12];
                put32(&mut idx, 0, first as u32);
                put32(&mut idx, 4, lb as u32);
                put16(&mut idx, 8, (lb >> 32) as u16);
                next.push((first, idx));
            }
            items = next;
            depth += 1;
        }
        put16(&mut root, 2, items.len() as u16);
        put16(&mut root, 6, depth);
        for (i, (_, e)) in items.iter().enumerate() {
            if let Some(d) = root.get_mut(12 + i * 12..24 + i * 12) {
                d.copy_from_slice(e);
            }
        }
        n.set_iblock(&root);
        Ok(tree_blocks)
    }

    fn extent_tail(&self, n: &Node, b: &mut [u8]) {
        if self.csum {
            let at = 12 + 12 * usize::from(le16(b, 4));
            let c = crc32c_raw(self.inode_seed(n.ino, le32(&n.raw, 0x64)), sub(b, 0, at));
            put32(b, at, c);
        }
    }

    // ---- directories --------------------------------------------------------

    /// (logical, physical) of every block of a directory.
    fn dir_blocks(&self, dir: &Node) -> Result<Vec<(u64, u64)>> {
        let (data, _) = self.owned_blocks(dir)?;
        let mut out = Vec::new();
        for (lg, p, l) in data {
            for k in 0..l {
                out.push((lg + k, p + k));
                if out.len() > 1 << 20 {
                    return Err(Error::corrupt_msg("ext4 directory too large"));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn dir_tail(&self, dir: &Node, b: &mut [u8]) {
        if self.csum {
            let bs = b.len();
            let t = bs - 12;
            put32(b, t, 0);
            put16(b, t + 4, 12);
            if let Some(x) = b.get_mut(t + 6) {
                *x = 0;
            }
            if let Some(x) = b.get_mut(t + 7) {
                *x = 0xDE;
            }
            let c = crc32c_raw(self.inode_seed(dir.ino, le32(&dir.raw, 0x64)), sub(b, 0, t));
            put32(b, t + 8, c);
        }
    }

    fn usable(&self) -> usize {
        us(self.bs) - if self.csum { 12 } else { 0 }
    }

    /// Try to place an entry in block `b`; true when it fit.
    fn place(&self, b: &mut [u8], name: &[u8], ino: u32, ft: u8) -> bool {
        let need = rec_need(name.len());
        let end = self.usable();
        let mut pos = 0usize;
        while pos + 8 <= end {
            let e_ino = le32(b, pos);
            let rec = usize::from(le16(b, pos + 4));
            if rec < 8 || pos + rec > end {
                return false;
            }
            let used = if e_ino == 0 {
                0
            } else {
                rec_need(usize::from(b.get(pos + 6).copied().unwrap_or(0)))
            };
            if rec >= used + need {
                let at = pos + used;
                if used > 0 {
                    put16(b, pos + 4, used as u16);
                }
                put32(b, at, ino);
                put16(b, at + 4, (rec - used) as u16);
                if let Some(x) = b.get_mut(at + 6) {
                    *x = name.len() as u8;
                }
                if let Some(x) = b.get_mut(at + 7) {
                    *x = ft;
                }
                if let Some(d) = b.get_mut(at + 8..at + 8 + name.len()) {
                    d.copy_from_slice(name);
                }
                return true;
            }
            pos += rec;
        }
        false
    }

    fn add_entry(&mut self, dir: &mut Node, name: &str, ino: u32, ft: u8) -> Result<()> {
        let nm = name.as_bytes();
        if nm.is_empty() || nm.len() > 255 || nm.contains(&b'/') {
            return Err(Error::invalid(format!("invalid file name {name:?}")));
        }
        let blocks = self.dir_blocks(dir)?;
        if dir.flags() & INDEX_FL != 0 {
            return self.add_htree(dir, &blocks, nm, ino, ft);
        }
        for &(_, p) in &blocks {
            let mut b = self.read_blk(p)?;
            if self.place(&mut b, nm, ino, ft) {
                self.dir_tail(dir, &mut b);
                return self.write_blk(p, &b);
            }
        }
        // A new block at the end of the directory.
        let logical = blocks.last().map_or(0, |x| x.0 + 1);
        let goal = self.group_of_ino(dir.ino);
        let run = self.alloc_blocks(1, goal)?;
        let p = run
            .first()
            .map(|r| r.0)
            .ok_or_else(|| enospc("directory block"))?;
        let mut b = vec![0u8; us(self.bs)];
        put16(&mut b, 4, self.usable() as u16);
        self.place(&mut b, nm, ino, ft);
        self.dir_tail(dir, &mut b);
        self.write_blk(p, &b)?;
        self.append_extent(dir, logical, p)?;
        dir.set_size(dir.size() + self.bs);
        dir.set_blocks512(dir.blocks512() + self.bs / 512);
        Ok(())
    }

    /// Map one more block at `logical` -> `p` in an extent tree of depth 0 or 1.
    fn append_extent(&self, n: &mut Node, logical: u64, p: u64) -> Result<()> {
        let mut root = n.iblock();
        let depth = le16(&root, 6);
        let extend = |node: &mut [u8]| -> bool {
            let entries = usize::from(le16(node, 2));
            let max = usize::from(le16(node, 4));
            if entries > 0 {
                let at = 12 + (entries - 1) * 12;
                let e = sub(node, at, 12).to_vec();
                let len = u64::from(le16(&e, 4));
                let phys = (u64::from(le16(&e, 6)) << 32) | u64::from(le32(&e, 8));
                if len < MAX_EXTENT_LEN
                    && u64::from(le32(&e, 0)) + len == logical
                    && phys + len == p
                {
                    put16(node, at + 4, (len + 1) as u16);
                    return true;
                }
            }
            if entries < max {
                put_extent(node, 12 + entries * 12, logical, p, 1);
                put16(node, 2, (entries + 1) as u16);
                return true;
            }
            false
        };
        if depth == 0 {
            if extend(&mut root) {
                n.set_iblock(&root);
                return Ok(());
            }
        } else if depth == 1 {
            let entries = usize::from(le16(&root, 2));
            if entries > 0 {
                let at = 12 + (entries - 1) * 12;
                let leaf = (u64::from(le16(&root, at + 8)) << 32) | u64::from(le32(&root, at + 4));
                let mut b = self.read_blk(leaf)?;
                if extend(&mut b) {
                    self.extent_tail(n, &mut b);
                    return self.write_blk(leaf, &b);
                }
            }
        }
        // The last leaf (or the inode) is full: rebuild the tree with the new
        // block, freeing the old tree blocks.
        let (mut data, tree) = self.owned_blocks(n)?;
        match data.last_mut() {
            Some((lg, ph, l)) if *lg + *l == logical && *ph + *l == p && *l < MAX_EXTENT_LEN => {
                *l += 1
            }
            _ => data.push((logical, p, 1)),
        }
        data.sort_unstable();
        for &t in &tree {
            self.free_blocks(t, 1)?;
        }
        let built = self.build_tree(n, &data, self.group_of_ino(n.ino))?;
        let b512 = n.blocks512() - tree.len() as u64 * (self.bs / 512) + built * (self.bs / 512);
        n.set_blocks512(b512);
        Ok(())
    }

    fn add_htree(
        &self,
        dir: &mut Node,
        blocks: &[(u64, u64)],
        nm: &[u8],
        ino: u32,
        ft: u8,
    ) -> Result<()> {
        let phys = |lg: u64| blocks.iter().find(|b| b.0 == lg).map(|b| b.1);
        let root_p = phys(0).ok_or_else(|| Error::corrupt_msg("ext4 htree without block 0"))?;
        let root = self.read_blk(root_p)?;
        // dx_root: "." (12 bytes), ".." (rec_len to block end), then dx_root_info at 0x18.
        let hash_version = root.get(0x1C).copied().unwrap_or(0);
        let info_len = usize::from(root.get(0x1D).copied().unwrap_or(8));
        let levels = root.get(0x1E).copied().unwrap_or(0);
        if levels > 1 {
            return Err(Error::unsupported("ext4 htree with more than two levels"));
        }
        let hash_of = |name: &[u8]| self.dx_hash(hash_version, name);
        let hash = hash_of(nm)?;
        let mut node = root.clone();
        let mut node_p = root_p;
        let mut off = 0x18 + info_len;
        let mut leaf_lg = 0u64;
        let mut root_slot = 0usize;
        let mut slot = 0usize;
        for level in 0..=levels {
            let count = usize::from(le16(&node, off + 2));
            let limit = usize::from(le16(&node, off));
            if count == 0 || count > limit || off + limit * 8 > node.len() {
                return Err(Error::corrupt_msg(format!(
                    "ext4 htree of inode {}: bad dx count",
                    dir.ino
                )));
            }
            slot = 0;
            for i in 1..count {
                if le32(&node, off + i * 8) > hash {
                    break;
                }
                slot = i;
            }
            let chosen = u64::from(le32(&node, off + slot * 8 + 4) & 0x0FFF_FFFF);
            if level == levels {
                leaf_lg = chosen;
            } else {
                root_slot = slot;
                node_p = phys(chosen)
                    .ok_or_else(|| Error::corrupt_msg("ext4 htree: index block not mapped"))?;
                node = self.read_blk(node_p)?;
                off = 8;
            }
        }
        let p = phys(leaf_lg).ok_or_else(|| Error::corrupt_msg("ext4 htree: leaf not mapped"))?;
        let mut b = self.read_blk(p)?;
        if self.place(&mut b, nm, ino, ft) {
            self.dir_tail(dir, &mut b);
            return self.write_blk(p, &b);
        }
        if levels == 1 && le16(&node, off + 2) >= le16(&node, off) {
            // The dx_node is full: split it first, indexing its upper half in the root.
            let mut root = root;
            let (np, nb, ns) = self.split_index(
                dir,
                (root_p, &mut root, 0x18 + info_len, root_slot),
                node_p,
                &mut node,
                slot,
            )?;
            (node_p, node, slot) = (np, nb, ns);
        }
        self.split_leaf(
            dir,
            (p, &b),
            (node_p, &mut node, off, slot),
            (nm, ino, ft, hash),
            &hash_of,
        )
    }

    /// Split the full htree leaf `leaf` (physical block, bytes) in two by
    /// hash, add the new entry to its half, and index the new block right
    /// after the leaf's entry in its index node (which must have room).
    fn split_leaf(
        &self,
        dir: &mut Node,
        leaf: (u64, &[u8]),
        parent: (u64, &mut [u8], usize, usize),
        new: (&[u8], u32, u8, u32),
        hash_of: &dyn Fn(&[u8]) -> Result<u32>,
    ) -> Result<()> {
        let (leaf_p, b) = leaf;
        let (node_p, node, off, slot) = parent;
        let count = usize::from(le16(node, off + 2));
        let limit = usize::from(le16(node, off));
        if count >= limit {
            return Err(Error::unsupported(format!(
                "ext4 writer: htree index of directory inode {} is full (adding an index level is not supported)",
                dir.ino
            )));
        }
        // Live entries of the leaf, plus the new one, by hash.
        let mut ents: Vec<(u32, Vec<u8>, u32, u8)> = Vec::new();
        let end = self.usable();
        let mut pos = 0usize;
        while pos + 8 <= end {
            let rec = usize::from(le16(b, pos + 4));
            if rec < 8 || pos + rec > end {
                break;
            }
            let e_ino = le32(b, pos);
            let nl = usize::from(b.get(pos + 6).copied().unwrap_or(0));
            if e_ino != 0 && pos + 8 + nl <= end {
                let name = sub(b, pos + 8, nl).to_vec();
                let ft = b.get(pos + 7).copied().unwrap_or(0);
                ents.push((hash_of(&name)?, name, e_ino, ft));
            }
            pos += rec;
        }
        let (nm, ino, ft, hash) = new;
        ents.push((hash, nm.to_vec(), ino, ft));
        ents.sort_by_key(|e| e.0);
        // Split near half the bytes, on a change of hash (equal hashes stay together).
        let total: usize = ents.iter().map(|e| rec_need(e.1.len())).sum();
        let mut acc = 0usize;
        let mut mid = ents.len();
        for (i, e) in ents.iter().enumerate() {
            if acc >= total / 2 {
                mid = i;
                break;
            }
            acc += rec_need(e.1.len());
        }
        let boundary = |i: usize| {
            i > 0 && matches!((ents.get(i), ents.get(i - 1)), (Some(a), Some(b)) if a.0 != b.0)
        };
        let mut m = mid;
        while m < ents.len() && !boundary(m) {
            m += 1;
        }
        if m == ents.len() {
            m = mid;
            while m > 0 && !boundary(m) {
                m -= 1;
            }
        }
        if m == 0 {
            return Err(Error::unsupported(format!(
                "ext4 writer: htree leaf of directory inode {} is full of one hash value",
                dir.ino
            )));
        }
        let (lo, hi) = ents.split_at(m);
        let split_hash = hi.first().map_or(0, |e| e.0);
        let fill = |part: &[(u32, Vec<u8>, u32, u8)]| -> Result<Vec<u8>> {
            let mut nb = vec![0u8; us(self.bs)];
            put16(&mut nb, 4, self.usable() as u16);
            for (_, name, i, t) in part {
                if !self.place(&mut nb, name, *i, *t) {
                    return Err(Error::unsupported(format!(
                        "ext4 writer: htree leaf split of directory inode {} does not fit",
                        dir.ino
                    )));
                }
            }
            self.dir_tail(dir, &mut nb);
            Ok(nb)
        };
        let lo_b = fill(lo)?;
        let hi_b = fill(hi)?;
        // The new block goes at the end of the directory.
        let logical = dir.size() / self.bs;
        let run = self.alloc_blocks(1, self.group_of_ino(dir.ino))?;
        let np = run
            .first()
            .map(|r| r.0)
            .ok_or_else(|| enospc("directory block"))?;
        self.append_extent(dir, logical, np)?;
        dir.set_size(dir.size() + self.bs);
        dir.set_blocks512(dir.blocks512() + self.bs / 512);
        self.write_blk(leaf_p, &lo_b)?;
        self.write_blk(np, &hi_b)?;
        // Insert (split_hash, logical) after the leaf's slot in the index node.
        dx_insert(node, off, slot + 1, split_hash, logical);
        self.dx_csum(dir, node, off);
        self.write_blk(node_p, node)
    }

    /// Split the full dx_node `node` (at `node_p`; count/limit at 8) in two:
    /// its upper half moves to a new block indexed in the root right after
    /// `root.3` (the node's slot there). Returns the node (block, bytes) now
    /// holding the entry that was at `slot`, and its slot there.
    fn split_index(
        &self,
        dir: &mut Node,
        root: (u64, &mut [u8], usize, usize),
        node_p: u64,
        node: &mut [u8],
        slot: usize,
    ) -> Result<(u64, Vec<u8>, usize)> {
        let (root_p, rb, roff, rslot) = root;
        if le16(rb, roff + 2) >= le16(rb, roff) {
            return Err(Error::unsupported(format!(
                "ext4 writer: htree index of directory inode {} is full (adding a third index level is not supported)",
                dir.ino
            )));
        }
        let off = 8;
        let count = usize::from(le16(node, off + 2));
        let limit = le16(node, off);
        let h = count / 2;
        if h == 0 {
            return Err(Error::corrupt_msg(format!(
                "ext4 htree of inode {}: dx_node too small to split",
                dir.ino
            )));
        }
        let split_hash = le32(node, off + h * 8);
        let logical = dir.size() / self.bs;
        let np = self
            .alloc_blocks(1, self.group_of_ino(dir.ino))?
            .first()
            .map(|r| r.0)
            .ok_or_else(|| enospc("directory block"))?;
        self.append_extent(dir, logical, np)?;
        dir.set_size(dir.size() + self.bs);
        dir.set_blocks512(dir.blocks512() + self.bs / 512);
        // A dx_node: an empty dirent spanning the block, then count/limit.
        let mut nb = vec![0u8; us(self.bs)];
        put16(&mut nb, 4, self.bs.min(65535) as u16);
        put16(&mut nb, off, limit);
        put16(&mut nb, off + 2, (count - h) as u16);
        put32(&mut nb, off + 4, le32(node, off + h * 8 + 4));
        for i in 1..count - h {
            let e = sub(node, off + (h + i) * 8, 8).to_vec();
            if let Some(d) = nb.get_mut(off + i * 8..off + i * 8 + 8) {
                d.copy_from_slice(&e);
            }
        }
        if let Some(d) = node.get_mut(off + h * 8..off + count * 8) {
            d.fill(0);
        }
        put16(node, off + 2, h as u16);
        dx_insert(rb, roff, rslot + 1, split_hash, logical);
        self.dx_csum(dir, node, off);
        self.dx_csum(dir, &mut nb, off);
        self.dx_csum(dir, rb, roff);
        self.write_blk(node_p, node)?;
        self.write_blk(np, &nb)?;
        self.write_blk(root_p, rb)?;
        Ok(if slot >= h {
            (np, nb, slot - h)
        } else {
            (node_p, node.to_vec(), slot)
        })
    }

    /// dx_tail checksum of an htree index block (root or node) whose
    /// count/limit sits at `off` ("Hash Tree Directories", dx_tail).
    fn dx_csum(&self, dir: &Node, b: &mut [u8], off: usize) {
        if !self.csum {
            return;
        }
        let limit = usize::from(le16(b, off));
        let count = usize::from(le16(b, off + 2));
        let t = off + limit * 8;
        let mut c = crc32c_raw(
            self.inode_seed(dir.ino, le32(&dir.raw, 0x64)),
            sub(b, 0, off + count * 8),
        );
        c = crc32c_raw(c, sub(b, t, 4));
        c = crc32c_raw(c, &[0; 4]);
        put32(b, t + 4, c);
    }

    /// The htree hash of `name` for the root's hash version ("Hash Tree
    /// Directories": 0 legacy, 1 half-MD4, 2 TEA; +3 when the superblock says
    /// chars are unsigned), with the kernel's end-of-directory adjustment.
    fn dx_hash(&self, version: u8, name: &[u8]) -> Result<u32> {
        let unsigned = le32(&self.sb, 0x160) & 0x2 != 0;
        let (base, unsigned) = match version {
            0..=2 => (version, unsigned),
            3..=5 => (version - 3, true),
            v => {
                return Err(Error::unsupported(format!(
                    "ext4 htree hash version {v} is not supported by the writer"
                )))
            }
        };
        let h = match base {
            0 => legacy_hash(name, unsigned),
            1 => half_md4_hash(name, self.hash_seed(), unsigned),
            _ => tea_hash(name, self.hash_seed(), unsigned),
        } & !1;
        Ok(if h == 0x7FFF_FFFF << 1 {
            0x7FFF_FFFE << 1
        } else {
            h
        })
    }

    fn hash_seed(&self) -> [u32; 4] {
        let mut s = [0u32; 4];
        for (i, x) in s.iter_mut().enumerate() {
            *x = le32(&self.sb, 0xEC + i * 4);
        }
        if s == [0; 4] {
            s = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
        }
        s
    }

    /// Remove entry `name` from `dir`; returns its inode number.
    fn remove_entry(&self, dir: &Node, name: &str) -> Result<u32> {
        let nm = name.as_bytes();
        for (_, p) in self.dir_blocks(dir)? {
            let mut b = self.read_blk(p)?;
            let end = self.usable();
            let mut pos = 0usize;
            let mut prev: Option<usize> = None;
            while pos + 8 <= end {
                let rec = usize::from(le16(&b, pos + 4));
                if rec < 8 {
                    break;
                }
                let ino = le32(&b, pos);
                let nl = usize::from(b.get(pos + 6).copied().unwrap_or(0));
                if ino != 0 && nl == nm.len() && sub(&b, pos + 8, nl) == nm {
                    match prev {
                        Some(pp) => {
                            let prec = usize::from(le16(&b, pp + 4));
                            put16(&mut b, pp + 4, (prec + rec) as u16);
                        }
                        None => put32(&mut b, pos, 0),
                    }
                    self.dir_tail(dir, &mut b);
                    self.write_blk(p, &b)?;
                    return Ok(ino);
                }
                prev = Some(pos);
                pos += rec;
            }
        }
        Err(Error::invalid(format!(
            "ext4: no entry {name:?} in directory inode {}",
            dir.ino
        )))
    }

    // ---- paths --------------------------------------------------------------

    fn resolve(&self, path: &str, follow: bool) -> Result<String> {
        resolve(&self.rd, path, follow)
    }

    fn split(path: &str) -> Result<(String, String)> {
        crate::fs::write::split_parent(path)
    }

    /// mkdir -p; returns the directory's inode.
    fn mkdir_p(&mut self, path: &str, mode: u32, log: &mut Vec<String>) -> Result<u32> {
        let mut cur = ROOT_INO;
        let mut sofar = String::new();
        for (depth, c) in path.split('/').filter(|c| !c.is_empty()).enumerate() {
            if depth > MAX_DEPTH {
                return Err(Error::invalid("path too deep"));
            }
            sofar.push('/');
            sofar.push_str(c);
            let real = self.resolve(&sofar, true)?;
            match self.rd.lookup(&real)? {
                Some(i) if i.file_type() == FileType::Dir => {
                    cur = i.ino;
                    sofar = real;
                }
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "{real} exists and is not a directory"
                    )))
                }
                None => {
                    let (parent, name) = Self::split(&real)?;
                    let pino = self.rd.lookup(&parent)?.map(|i| i.ino).ok_or_else(|| {
                        Error::invalid(format!("{parent}: missing parent directory"))
                    })?;
                    cur = self.create_dir(pino, &name, mode)?;
                    log.push(format!("mkdir {real}"));
                    sofar = real;
                }
            }
        }
        Ok(cur)
    }

    fn create_dir(&mut self, parent: u32, name: &str, mode: u32) -> Result<u32> {
        let mut pn = self.node(parent)?;
        if pn.links() >= 64_999 {
            return Err(Error::unsupported(
                "ext4 writer: parent directory link count is at its limit",
            ));
        }
        let goal = self.group_of_ino(parent);
        let ino = self.alloc_inode(goal, true)?;
        let mut n = self.new_node(ino, 0x4000 | (mode & 0o7777) as u16, 0, 0, 2)?;
        let mut b = vec![0u8; us(self.bs)];
        put32(&mut b, 0, ino);
        put16(&mut b, 4, 12);
        put16(&mut b, 6, 0x0201);
        if let Some(x) = b.get_mut(8) {
            *x = b'.';
        }
        put32(&mut b, 12, parent);
        put16(&mut b, 16, (self.usable() - 12) as u16);
        put16(&mut b, 18, 0x0202);
        if let Some(d) = b.get_mut(20..22) {
            d.copy_from_slice(b"..");
        }
        let run = self.alloc_blocks(1, self.group_of_ino(ino))?;
        let p = run
            .first()
            .map(|r| r.0)
            .ok_or_else(|| enospc("directory block"))?;
        let mut root = vec![0u8; 60];
        put16(&mut root, 0, 0xF30A);
        put16(&mut root, 2, 1);
        put16(&mut root, 4, 4);
        put_extent(&mut root, 12, 0, p, 1);
        n.set_iblock(&root);
        put32(&mut n.raw, 0x20, EXTENTS_FL);
        n.set_size(self.bs);
        n.set_blocks512(self.bs / 512);
        self.dir_tail(&n, &mut b);
        self.write_blk(p, &b)?;
        self.put_node(&mut n)?;
        self.add_entry(&mut pn, name, ino, FT_DIR)?;
        if pn.links() > 1 {
            let l = pn.links() + 1;
            put16(&mut pn.raw, 0x1A, l);
        }
        self.put_node(&mut pn)?;
        Ok(ino)
    }

    fn parent_for_create(
        &mut self,
        path: &str,
        log: &mut Vec<String>,
    ) -> Result<(String, u32, String)> {
        let real = self.resolve(path, false)?;
        let (parent, name) = Self::split(&real)?;
        let pino = self.mkdir_p(&parent, 0o755, log)?;
        Ok((real, pino, name))
    }

    fn write_file(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        log: &mut Vec<String>,
    ) -> Result<()> {
        let real = self.resolve(path, true)?;
        let perm = (mode & 0o7777) as u16;
        if let Some(i) = self.rd.lookup(&real)? {
            if i.file_type() != FileType::File {
                return Err(Error::invalid(format!(
                    "{real} exists and is not a regular file"
                )));
            }
            let mut n = self.node(i.ino)?;
            self.release_blocks(&mut n)?;
            put16(&mut n.raw, 0, 0x8000 | perm);
            put16(&mut n.raw, 2, uid as u16);
            put16(&mut n.raw, 0x78, (uid >> 16) as u16);
            put16(&mut n.raw, 0x18, gid as u16);
            put16(&mut n.raw, 0x7A, (gid >> 16) as u16);
            for off in [0xC, 0x10] {
                put32(&mut n.raw, off, self.now);
            }
            let goal = self.group_of_ino(n.ino);
            self.store_data(&mut n, data, goal)?;
            self.put_node(&mut n)?;
            log.push(format!("replace {real} ({} bytes)", data.len()));
            return Ok(());
        }
        let (real, pino, name) = self.parent_for_create(&real, log)?;
        let goal = self.group_of_ino(pino);
        let ino = self.alloc_inode(goal, false)?;
        let mut n = self.new_node(ino, 0x8000 | perm, uid, gid, 1)?;
        self.store_data(&mut n, data, goal)?;
        self.put_node(&mut n)?;
        let mut pn = self.node(pino)?;
        self.add_entry(&mut pn, &name, ino, FT_FILE)?;
        self.put_node(&mut pn)?;
        log.push(format!("create {real} ({} bytes)", data.len()));
        Ok(())
    }

    fn symlink(&mut self, target: &str, path: &str, log: &mut Vec<String>) -> Result<()> {
        let t = target.as_bytes();
        if t.is_empty() || t.len() >= us(self.bs) || t.contains(&0) {
            return Err(Error::invalid(format!(
                "symlink target {target:?}: empty, too long or with a NUL"
            )));
        }
        let real = self.resolve(path, false)?;
        if let Some(i) = self.rd.lookup(&real)? {
            if i.file_type() != FileType::Symlink {
                return Err(Error::invalid(format!(
                    "{real} exists and is not a symlink"
                )));
            }
            self.delete(&real, log)?;
        }
        let (real, pino, name) = self.parent_for_create(&real, log)?;
        let goal = self.group_of_ino(pino);
        let ino = self.alloc_inode(goal, false)?;
        let mut n = self.new_node(ino, 0xA1FF, 0, 0, 1)?;
        if t.len() <= FAST_SYMLINK_MAX {
            n.set_iblock(t);
            n.set_size(t.len() as u64);
        } else {
            self.store_data(&mut n, t, goal)?;
        }
        self.put_node(&mut n)?;
        let mut pn = self.node(pino)?;
        self.add_entry(&mut pn, &name, ino, FT_SYMLINK)?;
        self.put_node(&mut pn)?;
        log.push(format!("symlink {real} -> {target}"));
        Ok(())
    }

    fn chmod(&mut self, path: &str, mode: u32, log: &mut Vec<String>) -> Result<()> {
        let real = self.resolve(path, true)?;
        let i = self
            .rd
            .lookup(&real)?
            .ok_or_else(|| Error::invalid(format!("chmod: {real}: no such file")))?;
        let mut n = self.node(i.ino)?;
        let m = (n.mode() & 0xF000) | (mode & 0o7777) as u16;
        put16(&mut n.raw, 0, m);
        put32(&mut n.raw, 0xC, self.now);
        self.put_node(&mut n)?;
        log.push(format!("chmod {mode:o} {real}"));
        Ok(())
    }

    fn delete(&mut self, path: &str, log: &mut Vec<String>) -> Result<()> {
        let real = self.resolve(path, false)?;
        let Some(i) = self.rd.lookup(&real)? else {
            log.push(format!("delete {real}: absent"));
            return Ok(());
        };
        let (parent, name) = Self::split(&real)?;
        let pi = self
            .rd
            .lookup(&parent)?
            .ok_or_else(|| Error::invalid(format!("{parent}: missing")))?;
        let mut n = self.node(i.ino)?;
        let is_dir = n.ftype() == FileType::Dir;
        if is_dir && !self.rd.dir_entries(&i)?.is_empty() {
            return Err(Error::invalid(format!(
                "delete {real}: directory not empty"
            )));
        }
        let mut pn = self.node(pi.ino)?;
        self.remove_entry(&pn, &name)?;
        if is_dir && pn.links() > 2 {
            // A count of 1 means "more than 65000" under dir_nlink: left as is.
            let l = pn.links() - 1;
            put16(&mut pn.raw, 0x1A, l);
        }
        self.put_node(&mut pn)?;
        let links = if is_dir {
            0
        } else {
            n.links().saturating_sub(1)
        };
        if links == 0 {
            self.release_blocks(&mut n)?;
            self.release_xattr_block(&mut n)?;
            put16(&mut n.raw, 0x1A, 0);
            put32(&mut n.raw, 0x14, self.now.max(1));
            self.put_node(&mut n)?;
            self.free_inode(n.ino, is_dir)?;
        } else {
            put16(&mut n.raw, 0x1A, links);
            self.put_node(&mut n)?;
        }
        log.push(format!("delete {real}"));
        Ok(())
    }

    // ---- links, owners, times, xattrs ---------------------------------------

    fn hardlink(&mut self, target: &str, path: &str, log: &mut Vec<String>) -> Result<()> {
        let treal = self.resolve(target, false)?;
        let ti = self
            .rd
            .lookup(&treal)?
            .ok_or_else(|| Error::invalid(format!("hard link: {treal}: no such file")))?;
        if ti.file_type() == FileType::Dir {
            return Err(Error::invalid(format!(
                "hard link: {treal} is a directory (directories cannot be hard-linked)"
            )));
        }
        let ft = dirent_type(ti.mode);
        let real = self.resolve(path, false)?;
        if let Some(i) = self.rd.lookup(&real)? {
            if i.ino == ti.ino {
                log.push(format!("hard link {real} => {treal}: already linked"));
                return Ok(());
            }
            if i.file_type() == FileType::Dir {
                return Err(Error::invalid(format!(
                    "hard link: {real} exists and is a directory"
                )));
            }
            self.delete(&real, log)?;
        }
        if self.node(ti.ino)?.links() >= 65_000 {
            return Err(Error::invalid(format!(
                "hard link: {treal} has the most links ext4 allows (65000)"
            )));
        }
        let (real, pino, name) = self.parent_for_create(&real, log)?;
        let mut pn = self.node(pino)?;
        self.add_entry(&mut pn, &name, ti.ino, ft)?;
        self.put_node(&mut pn)?;
        let mut n = self.node(ti.ino)?;
        let l = n.links() + 1;
        put16(&mut n.raw, 0x1A, l);
        self.touch_ctime(&mut n);
        self.put_node(&mut n)?;
        log.push(format!("hard link {real} => {treal}"));
        Ok(())
    }

    fn existing(&self, path: &str, follow: bool, what: &str) -> Result<(String, Node)> {
        let real = self.resolve(path, follow)?;
        let i = self
            .rd
            .lookup(&real)?
            .ok_or_else(|| Error::invalid(format!("{what}: {real}: no such file")))?;
        Ok((real, self.node(i.ino)?))
    }

    fn chown(&mut self, path: &str, uid: u32, gid: u32, log: &mut Vec<String>) -> Result<()> {
        let (real, mut n) = self.existing(path, true, "chown")?;
        put16(&mut n.raw, 2, uid as u16);
        put16(&mut n.raw, 0x78, (uid >> 16) as u16);
        put16(&mut n.raw, 0x18, gid as u16);
        put16(&mut n.raw, 0x7A, (gid >> 16) as u16);
        self.touch_ctime(&mut n);
        self.put_node(&mut n)?;
        log.push(format!("chown {uid}:{gid} {real}"));
        Ok(())
    }

    /// Store `secs` in the time field at `lo` and the epoch bits of its
    /// `_extra` field at `extra` ("Inode Timestamps"; nanoseconds 0).
    fn put_time(n: &mut Node, lo: usize, extra: usize, secs: i64) -> Result<()> {
        let wide = n.has_field(extra);
        let max = if wide {
            (3i64 << 32) + i64::from(i32::MAX)
        } else {
            i64::from(i32::MAX)
        };
        if secs < i64::from(i32::MIN) || secs > max {
            return Err(Error::invalid(format!(
                "time {secs} is outside what this ext4 inode can store ({} to {max})",
                i32::MIN
            )));
        }
        let low = secs as i32;
        put32(&mut n.raw, lo, low as u32);
        if wide {
            let epoch = ((secs - i64::from(low)) >> 32) & 3;
            put32(&mut n.raw, extra, epoch as u32);
        }
        Ok(())
    }

    fn touch_ctime(&self, n: &mut Node) {
        // `now` fits in 32 unsigned bits; before 2106 the epoch bits are 0 or 1.
        let _ = Self::put_time(n, 0xC, 0x84, i64::from(self.now));
    }

    fn set_times(
        &mut self,
        path: &str,
        atime: i64,
        mtime: i64,
        log: &mut Vec<String>,
    ) -> Result<()> {
        let (real, mut n) = self.existing(path, true, "set times")?;
        Self::put_time(&mut n, 0x8, 0x8C, atime)?;
        Self::put_time(&mut n, 0x10, 0x88, mtime)?;
        self.touch_ctime(&mut n);
        self.put_node(&mut n)?;
        log.push(format!(
            "set times of {real} (atime {atime}, mtime {mtime})"
        ));
        Ok(())
    }

    fn ea_blocks512(&self, n: &Node) -> u64 {
        if n.file_attr_block() != 0 {
            self.bs / 512
        } else {
            0
        }
    }

    /// Read and check the external xattr block of `n`.
    fn xattr_block(&self, n: &Node) -> Result<Option<(u64, Vec<u8>)>> {
        let blk = n.file_attr_block();
        if blk == 0 {
            return Ok(None);
        }
        let b = self.read_blk(blk)?;
        if le32(&b, 0) != xattr::MAGIC || le32(&b, 8) != 1 {
            return Err(Error::corrupt(
                format!("ext4 xattr block {blk} of inode {}", n.ino),
                "h_magic / h_blocks",
                blk * self.bs,
                "0xea020000 and 1 block",
                format!("{:#x} and {}", le32(&b, 0), le32(&b, 8)),
            ));
        }
        Ok(Some((blk, b)))
    }

    fn xattr_block_csum(&self, blk: u64, b: &mut [u8]) {
        if self.csum {
            // ext4_xattr_block_csum: seed, le64 block number, block with h_checksum 0.
            put32(b, 0x10, 0);
            let c = crc32c_raw(self.seed, &blk.to_le_bytes());
            let c = crc32c_raw(c, b);
            put32(b, 0x10, c);
        }
    }

    /// Drop `n`'s reference to its xattr block (freed when it was the last).
    fn release_xattr_block(&self, n: &mut Node) -> Result<()> {
        let Some((blk, mut b)) = self.xattr_block(n)? else {
            return Ok(());
        };
        let refs = le32(&b, 4);
        if refs > 1 {
            put32(&mut b, 4, refs - 1);
            self.xattr_block_csum(blk, &mut b);
            self.write_blk(blk, &b)?;
        } else {
            self.free_blocks(blk, 1)?;
        }
        let ea = self.ea_blocks512(n);
        n.set_blocks512(n.blocks512().saturating_sub(ea));
        n.set_file_attr_block(0);
        Ok(())
    }

    /// Start of the in-inode xattr area (where its magic goes), or None
    /// when the inode has no room for one.
    fn ibody_start(&self, n: &mut Node) -> Option<usize> {
        if n.raw.len() <= 128 {
            return None;
        }
        if n.extra_isize() == 0 && self.extra_isize >= 4 {
            // An old inode without extra fields: give it the filesystem's.
            let e = usize::from(self.extra_isize);
            if let Some(d) = n.raw.get_mut(0x80..128 + e) {
                d.fill(0);
            }
            put16(&mut n.raw, 0x80, self.extra_isize);
        }
        let start = 128 + n.extra_isize();
        (n.extra_isize() >= 4 && start + 8 + 16 <= n.raw.len()).then_some(start)
    }

    fn set_xattr(
        &mut self,
        path: &str,
        name: &str,
        value: &[u8],
        log: &mut Vec<String>,
    ) -> Result<()> {
        // Like lsetxattr: the path itself, a symlink is labelled, not followed.
        let (real, mut n) = self.existing(path, false, "set xattr")?;
        let new = xattr::Xattr::from_user(name, value)?;
        let start = self.ibody_start(&mut n);
        let what = format!("inode {}", n.ino);
        let mut all = match start {
            Some(s) if le32(&n.raw, s) == xattr::MAGIC => {
                xattr::parse(n.raw.get(s..).unwrap_or(&[]), 4, 4, &what)?
            }
            _ => Vec::new(),
        };
        let old_block = self.xattr_block(&n)?;
        if let Some((_, b)) = &old_block {
            all.extend(xattr::parse(b, xattr::BLOCK_HEADER, 0, &what)?);
        }
        all.retain(|x| !(x.index == new.index && x.name == new.name));
        all.push(new);
        // In the inode body while they fit (magic and end marker take 8), then the block.
        let cap = start.map_or(0, |s| n.raw.len() - s);
        let (mut inb, mut blk) = (Vec::new(), Vec::new());
        let mut used = 8;
        for x in all {
            let need = x.entry_len() + x.value_len();
            if start.is_some() && used + need <= cap {
                used += need;
                inb.push(x);
            } else {
                blk.push(x);
            }
        }
        // Build the block first: a value too large fails before anything is written.
        let mut bbuf = Vec::new();
        if !blk.is_empty() {
            xattr::sort_for_block(&mut blk);
            bbuf = vec![0u8; us(self.bs)];
            put32(&mut bbuf, 0, xattr::MAGIC);
            put32(&mut bbuf, 4, 1);
            put32(&mut bbuf, 8, 1);
            let hashes = xattr::encode(&mut bbuf, xattr::BLOCK_HEADER, 0, &blk, true)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "set xattr {name} on {real}: the attributes do not fit in the inode and one {}-byte block",
                        self.bs
                    ))
                })?;
            put32(&mut bbuf, 0xC, xattr::block_hash(&hashes));
        }
        if let Some(s) = start {
            let area = n.raw.get_mut(s..).unwrap_or(&mut []);
            area.fill(0);
            if !inb.is_empty() {
                put32(area, 0, xattr::MAGIC);
                xattr::encode(area, 4, 4, &inb, false)
                    .ok_or_else(|| Error::invalid("ext4 writer: in-inode xattr layout"))?;
            }
        }
        if bbuf.is_empty() {
            self.release_xattr_block(&mut n)?;
        } else {
            let target = match &old_block {
                Some((b, old)) if le32(old, 4) == 1 => *b,
                _ => {
                    self.release_xattr_block(&mut n)?;
                    let run = self.alloc_blocks(1, self.group_of_ino(n.ino))?;
                    let b = run
                        .first()
                        .map(|r| r.0)
                        .ok_or_else(|| enospc("xattr block"))?;
                    n.set_file_attr_block(b);
                    n.set_blocks512(n.blocks512() + self.bs / 512);
                    b
                }
            };
            self.xattr_block_csum(target, &mut bbuf);
            self.write_blk(target, &bbuf)?;
        }
        self.touch_ctime(&mut n);
        self.put_node(&mut n)?;
        log.push(format!(
            "set xattr {name} on {real} ({} bytes)",
            value.len()
        ));
        Ok(())
    }

    /// Apply one action.
    pub fn apply_action(&mut self, a: &FsAction, log: &mut Vec<String>) -> Result<()> {
        match a {
            FsAction::Mkdir { path, mode } => {
                let real = self.resolve(path, true)?;
                self.mkdir_p(&real, *mode, log).map(|_| ())
            }
            FsAction::WriteFile {
                path,
                data,
                mode,
                uid,
                gid,
            } => self.write_file(path, data, *mode, *uid, *gid, log),
            FsAction::Symlink { target, path } => self.symlink(target, path, log),
            FsAction::Chmod { path, mode } => self.chmod(path, *mode, log),
            FsAction::Delete { path } => self.delete(path, log),
            FsAction::Hardlink { target, path } => self.hardlink(target, path, log),
            FsAction::Chown { path, uid, gid } => self.chown(path, *uid, *gid, log),
            FsAction::SetTimes { path, atime, mtime } => self.set_times(path, *atime, *mtime, log),
            FsAction::SetXattr { path, name, value } => self.set_xattr(path, name, value, log),
        }
    }

    /// Write the superblock (free counts, checksum). Call once at the end.
    pub fn finish(mut self) -> Result<()> {
        self.flush_sb()
    }
}

impl Node {
    fn file_attr_block(&self) -> u64 {
        u64::from(le32(&self.raw, 0x68)) | (u64::from(le16(&self.raw, 0x76)) << 32)
    }
    fn set_file_attr_block(&mut self, b: u64) {
        put32(&mut self.raw, 0x68, b as u32);
        put16(&mut self.raw, 0x76, (b >> 32) as u16);
    }
    /// i_extra_isize (0 for 128-byte inodes).
    fn extra_isize(&self) -> usize {
        if self.raw.len() > 128 {
            usize::from(le16(&self.raw, 0x80))
        } else {
            0
        }
    }
    /// True when the inode's extra fields reach the 4 bytes at `off`.
    fn has_field(&self, off: usize) -> bool {
        self.raw.len() > 128 && 128 + self.extra_isize() >= off + 4
    }
}

/// ext4_dir_entry_2.file_type for an inode mode.
fn dirent_type(mode: u16) -> u8 {
    match mode & 0xF000 {
        0x1000 => 5,
        0x2000 => 3,
        0x4000 => FT_DIR,
        0x6000 => 4,
        0x8000 => FT_FILE,
        0xA000 => FT_SYMLINK,
        0xC000 => 6,
        _ => 0,
    }
}

/// Insert the dx_entry (hash, block) at position `pos` of the index whose
/// count/limit sits at `off` (the caller checked count < limit).
fn dx_insert(node: &mut [u8], off: usize, pos: usize, hash: u32, block: u64) {
    let count = usize::from(le16(node, off + 2));
    let at = off + pos * 8;
    let end = off + count * 8;
    if let Some(win) = node.get_mut(at..end + 8) {
        win.copy_within(0..end - at, 8);
    }
    put32(node, at, hash);
    put32(node, at + 4, block as u32);
    put16(node, off + 2, (count + 1) as u16);
}

/// (logical, physical, length) of an extent.
type DataRun = (u64, u64, u64);

fn put_extent(b: &mut [u8], at: usize, logical: u64, p: u64, len: u64) {
    put32(b, at, logical as u32);
    put16(b, at + 4, len as u16);
    put16(b, at + 6, (p >> 32) as u16);
    put32(b, at + 8, p as u32);
}

/// The htree "half MD4" name hash (fs/ext4/hash.c, DX_HASH_HALF_MD4): names
/// packed 32 bytes at a time into 8 words, folded with the half-MD4 transform.
pub fn half_md4_hash(name: &[u8], seed: [u32; 4], unsigned: bool) -> u32 {
    let mut buf = seed;
    let mut rest = name;
    loop {
        let (chunk, next) = rest.split_at(rest.len().min(32));
        let mut input = [0u32; 8];
        str2hashbuf(chunk, rest.len(), &mut input, unsigned);
        half_md4_transform(&mut buf, &input);
        if rest.len() <= 32 {
            break;
        }
        rest = next;
    }
    buf[1] & !1
}

fn str2hashbuf(msg: &[u8], len: usize, out: &mut [u32], unsigned: bool) {
    let words = out.len();
    let len32 = len as u32;
    let pad = len32 | (len32 << 8);
    let pad = pad | (pad << 16);
    let mut val = pad;
    let n = msg.len().min(words * 4);
    let mut idx = 0usize;
    for (i, &c) in msg.iter().take(n).enumerate() {
        let cv = if unsigned {
            u32::from(c)
        } else {
            i32::from(c as i8) as u32
        };
        if i % 4 == 0 {
            val = pad;
        }
        val = cv.wrapping_add(val << 8);
        if i % 4 == 3 {
            if let Some(o) = out.get_mut(idx) {
                *o = val;
            }
            idx += 1;
            val = pad;
        }
    }
    if idx < words {
        if let Some(o) = out.get_mut(idx) {
            *o = val;
        }
        idx += 1;
    }
    while idx < words {
        if let Some(o) = out.get_mut(idx) {
            *o = pad;
        }
        idx += 1;
    }
}

/// The htree "TEA" name hash (fs/ext4/hash.c, DX_HASH_TEA): 16 bytes at a
/// time into 4 words, 16 rounds of the TEA transform each.
#[allow(clippy::indexing_slicing)] // fixed-size arrays indexed by constants
pub fn tea_hash(name: &[u8], seed: [u32; 4], unsigned: bool) -> u32 {
    let mut buf = seed;
    let mut rest = name;
    loop {
        let (chunk, next) = rest.split_at(rest.len().min(16));
        let mut input = [0u32; 4];
        str2hashbuf(chunk, rest.len(), &mut input, unsigned);
        let (mut b0, mut b1) = (buf[0], buf[1]);
        let [a, b, c, d] = input;
        let mut sum = 0u32;
        for _ in 0..16 {
            sum = sum.wrapping_add(0x9E37_79B9);
            b0 = b0.wrapping_add(
                (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
            );
            b1 = b1.wrapping_add(
                (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
            );
        }
        buf[0] = buf[0].wrapping_add(b0);
        buf[1] = buf[1].wrapping_add(b1);
        if rest.len() <= 16 {
            break;
        }
        rest = next;
    }
    buf[0]
}

/// The htree "legacy" name hash (fs/ext4/hash.c, dx_hack_hash).
pub fn legacy_hash(name: &[u8], unsigned: bool) -> u32 {
    let (mut h0, mut h1) = (0x12a3_fe2du32, 0x37ab_e8f9u32);
    for &c in name {
        let cv = if unsigned {
            u32::from(c)
        } else {
            i32::from(c as i8) as u32
        };
        let mut h = h1.wrapping_add(h0 ^ cv.wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

#[allow(clippy::indexing_slicing)] // fixed-size arrays indexed by constants
fn half_md4_transform(buf: &mut [u32; 4], inp: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    macro_rules! round {
        ($fn:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($fn($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    round!(f, a, b, c, d, inp[0], 3);
    round!(f, d, a, b, c, inp[1], 7);
    round!(f, c, d, a, b, inp[2], 11);
    round!(f, b, c, d, a, inp[3], 19);
    round!(f, a, b, c, d, inp[4], 3);
    round!(f, d, a, b, c, inp[5], 7);
    round!(f, c, d, a, b, inp[6], 11);
    round!(f, b, c, d, a, inp[7], 19);
    round!(g, a, b, c, d, inp[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, inp[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, inp[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, inp[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, inp[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, inp[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, inp[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, inp[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, inp[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, inp[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

impl crate::fs::write::FsWriter for Ext4Writer {
    fn apply_one(&mut self, action: &FsAction, log: &mut Vec<String>) -> Result<()> {
        self.apply_action(action, log)
    }
    fn finish(self) -> Result<()> {
        Ext4Writer::finish(self)
    }
}

/// Apply `actions` to the ext4 filesystem on the volume `dev`;
/// returns a log line per change.
pub fn apply(dev: &VolumeDev, actions: &[FsAction]) -> Result<Vec<String>> {
    crate::fs::write::run(Ext4Writer::open(dev.clone())?, actions)
}
