//! XFS writer: applies [`FsAction`]s to a v5 (CRC) XFS filesystem on a
//! [`VolumeDev`] (a partition or a linear logical volume inside the
//! copy-on-write overlay; the input image is never written).
//!
//! Built on the reader in the parent module (superblock geometry, inodes,
//! directories, extent maps). Layouts follow "XFS Algorithms & Data
//! Structures" (kernel Documentation/filesystems/xfs/) and the kernel's
//! `fs/xfs/libxfs/xfs_format.h`, `xfs_da_format.h`:
//!
//! - space: extents are carved from the end of the best-fitting free extent
//!   (or taken whole); the by-block and by-size trees, the AGF
//!   (`agf_freeblks`, `agf_longest`, `agf_btreeblks`), the AG free list and
//!   `sb_fdblocks` are updated; freed extents are merged with their
//!   neighbours; the trees split, merge and change height as needed
//!   ([`btree`]); the blocks the kernel keeps back are never handed out and
//!   a full filesystem is refused with "no space" ([`agfl`]);
//! - inodes: a free inode of an existing chunk is taken from the finobt (or
//!   inobt), respecting sparse-chunk hole masks; inobt, finobt, AGI and
//!   `sb_ifree` follow; freed inodes go back the same way; new (full or
//!   sparse) chunks are allocated when none is free ([`ichunk`]);
//! - directories: short form in the inode, converted to a single directory
//!   block ("XDB3": entries, hash-sorted leaf, tail, bestfree) when full;
//!   both forms are rewritten whole (entries compacted), which only moves
//!   entries inside the block; leaf-form directories (data blocks plus one
//!   LEAF1 hash block) get entries added and removed in place ([`leafdir`]);
//!   node- and B+tree-form directories, and block or leaf directories that
//!   outgrow their form, are rebuilt whole from their entry list ([`nodedir`]);
//! - files: data in extents in the inode's data fork, or in a bmbt when
//!   the records do not fit there ([`bmbt`]); symlinks local or in
//!   one remote block with its "XSLM" header; extended attributes
//!   (security.selinux, user.*, trusted.*) in short form or one leaf block
//!   with remote value blocks ([`attr`]);
//! - every block written gets its CRC; LSNs of existing blocks are kept, new
//!   blocks get 0 (never ahead of the log).
//!
//! Refused, naming the reason: v4 filesystems, a log that was not cleanly
//! unmounted (head record is not an unmount record, [`log`]), an external
//! log, quotas, reverse-mapping B+trees (rmapbt), parent pointers, unknown
//! features, B+tree-format attribute forks, and freeing shared (reflinked)
//! extents.
//!
//! Arithmetic here works on values the reader already bounded (block size at
//! most 64 KiB, AG and inode numbers from a checked superblock, record counts
//! checked against the block's capacity before use), so the module allows
//! plain arithmetic, `as` casts between those widths and slice indexing within
//! block-sized buffers.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing
)]

mod agfl;
mod attr;
mod bmbt;
pub mod btree;
mod ichunk;
mod leafdir;
pub mod log;
mod nodedir;

use super::bmap::{data_extents, BmbtIrec};
use super::crc;
use super::dir::{da_hashname, for_each_entry, XFS_DIR3_BLOCK_MAGIC};
use super::inode::{
    Dinode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, XFS_DIFLAG2_BIGTIME, XFS_DIFLAG2_NREXT64,
    XFS_DINODE_FMT_BTREE, XFS_DINODE_FMT_EXTENTS, XFS_DINODE_FMT_LOCAL,
};
use super::sb::{
    Geometry, XFS_SB_CRC_OFF, XFS_SB_FEAT_INCOMPAT_PARENT, XFS_SB_FEAT_INCOMPAT_SPINODES,
    XFS_SB_FEAT_RO_COMPAT_FINOBT, XFS_SB_FEAT_RO_COMPAT_INOBTCNT, XFS_SB_FEAT_RO_COMPAT_REFLINK,
    XFS_SB_FEAT_RO_COMPAT_RMAPBT,
};
use super::{XfsReader, XFS_SYMLINK_CRC_OFF, XFS_SYMLINK_HDR_LEN, XFS_SYMLINK_MAGIC};
use crate::error::{Error, Result};
use crate::fs::{resolve, FileType};
use crate::inject::FsAction;
use crate::overlay::VolumeDev;
use btree::{FINO, INO, REFC};
use std::ops::ControlFlow;

/// Size of the v3 inode core (data fork starts here).
const CORE: usize = 176;
/// Byte offset of `di_crc`.
const DI_CRC: usize = 100;
/// `XFS_AGF_MAGIC` "XAGF" / `XFS_AGI_MAGIC` "XAGI".
const AGF_MAGIC: u32 = 0x5841_4746;
const AGI_MAGIC: u32 = 0x5841_4749;
/// Byte offsets of the AGF and AGI crc fields.
const AGF_CRC: usize = 216;
const AGI_CRC: usize = 312;
/// `NULLAGINO`, the end of an unlinked list.
const NULLAGINO: u32 = u32::MAX;
/// Directory entry file types (`XFS_DIR3_FT_*`).
const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;
const FT_SYMLINK: u8 = 7;
/// Attribute namespace flags (`XFS_ATTR_ROOT`, `XFS_ATTR_SECURE`).
const ATTR_ROOT: u8 = 0x02;
const ATTR_SECURE: u8 = 0x04;
/// Longest extent record (`XFS_MAX_BMBT_EXTLEN`, 21 bits).
const MAX_EXTLEN: u64 = (1 << 21) - 1;
/// Deepest path walked by mkdir -p.
const MAX_DEPTH: usize = 256;
/// Longest symlink target (`XFS_SYMLINK_MAXLEN`).
const SYMLINK_MAXLEN: usize = 1024;
/// Most extents the writer gives one file it writes (a file this
/// fragmented means free space is nearly exhausted).
const MAX_WRITE_EXTENTS: usize = 1 << 16;

/// Big-endian reads and writes on block buffers (0 / no-op out of range).
pub(crate) fn g16(b: &[u8], o: usize) -> u16 {
    b.get(o..o.saturating_add(2))
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map_or(0, u16::from_be_bytes)
}
pub(crate) fn g32(b: &[u8], o: usize) -> u32 {
    b.get(o..o.saturating_add(4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_be_bytes)
}
pub(crate) fn g64(b: &[u8], o: usize) -> u64 {
    b.get(o..o.saturating_add(8))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_be_bytes)
}
fn put(b: &mut [u8], o: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(o..o.saturating_add(v.len())) {
        s.copy_from_slice(v);
    }
}
pub(crate) fn p16(b: &mut [u8], o: usize, v: u16) {
    put(b, o, &v.to_be_bytes());
}
pub(crate) fn p32(b: &mut [u8], o: usize, v: u32) {
    put(b, o, &v.to_be_bytes());
}
pub(crate) fn p64(b: &mut [u8], o: usize, v: u64) {
    put(b, o, &v.to_be_bytes());
}

/// A directory entry as the writer rebuilds directories.
#[derive(Clone, Debug)]
struct Ent {
    name: Vec<u8>,
    ino: u64,
    ftype: u8,
}

/// `XFS_DIR3_DATA_ENTSIZE`: an entry in a v5 data block with file type.
fn entsize(namelen: usize) -> usize {
    (8 + 1 + namelen + 1 + 2 + 7) & !7
}

/// An XFS filesystem opened for writing.
pub struct XfsWriter {
    dev: VolumeDev,
    rd: XfsReader,
    pub(crate) geo: Geometry,
    finobt: bool,
    sparse: bool,
    reflink: bool,
    now: (i64, u32),
    d_ifree: i64,
    d_fdblocks: i64,
}

impl XfsWriter {
    /// Open the filesystem at byte 0 of `dev`, refusing what this writer does
    /// not maintain (see the module docs).
    pub fn open(dev: VolumeDev) -> Result<Self> {
        let rd = XfsReader::open(dev.source())?;
        let geo = rd.geo.clone();
        let sb = &geo.sb;
        if !geo.v5 {
            return Err(Error::unsupported(
                "xfs: writing version 4 (non-CRC) filesystems is not supported; onramp writes v5 (crc=1) XFS",
            ));
        }
        let ro = sb.sb_features_ro_compat;
        if ro & XFS_SB_FEAT_RO_COMPAT_RMAPBT != 0 {
            return Err(Error::unsupported(
                "xfs: the filesystem has a reverse-mapping B+tree (rmapbt=1), which this writer does not maintain",
            ));
        }
        let known_ro = XFS_SB_FEAT_RO_COMPAT_FINOBT
            | XFS_SB_FEAT_RO_COMPAT_REFLINK
            | XFS_SB_FEAT_RO_COMPAT_INOBTCNT;
        if ro & !known_ro != 0 {
            return Err(Error::unsupported(format!(
                "xfs: read-only-compatible features {:#x} are not maintained by this writer",
                ro & !known_ro
            )));
        }
        if sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_PARENT != 0 {
            return Err(Error::unsupported(
                "xfs: parent pointers (parent=1) are not maintained by this writer",
            ));
        }
        if sb.sb_features_log_incompat != 0 {
            return Err(Error::unsupported(format!(
                "xfs: log-incompatible features {:#x} are set: the log needs recovery by the kernel first",
                sb.sb_features_log_incompat
            )));
        }
        if sb.sb_features_compat != 0 {
            return Err(Error::unsupported(format!(
                "xfs: compatible features {:#x} are not known to this writer",
                sb.sb_features_compat
            )));
        }
        let mut sec = vec![0u8; usize::from(sb.sb_sectsize)];
        dev.read_at(0, &mut sec)?;
        if g16(&sec, 176) != 0 {
            return Err(Error::unsupported(format!(
                "xfs: quotas are enabled (sb_qflags {:#x}); writing would leave quota usage wrong",
                g16(&sec, 176)
            )));
        }
        if sb.sb_logstart == 0 {
            return Err(Error::unsupported(
                "xfs: the log is on an external device, so onramp cannot check that it is clean",
            ));
        }
        let log_pos = geo
            .fsb_to_byte(sb.sb_logstart, u64::from(sb.sb_logblocks))
            .ok_or_else(|| {
                Error::corrupt_msg("xfs: the internal log lies outside the filesystem")
            })?;
        let log_len = u64::from(sb.sb_logblocks) << geo.block_log;
        let d2 = dev.clone();
        log::check_clean(&move |o, b| d2.read_at(o, b), log_pos, log_len)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos()))
            .unwrap_or((0, 0));
        Ok(XfsWriter {
            finobt: ro & XFS_SB_FEAT_RO_COMPAT_FINOBT != 0,
            sparse: sb.sb_features_incompat & XFS_SB_FEAT_INCOMPAT_SPINODES != 0,
            reflink: ro & XFS_SB_FEAT_RO_COMPAT_REFLINK != 0,
            dev,
            rd,
            geo,
            now,
            d_ifree: 0,
            d_fdblocks: 0,
        })
    }

    // ---- raw access ----------------------------------------------------------

    fn bs(&self) -> usize {
        self.geo.block_size as usize
    }

    pub(crate) fn ag_pos(&self, agno: u32, agbno: u32) -> u64 {
        (u64::from(agno) * u64::from(self.geo.ag_blocks) + u64::from(agbno)) << self.geo.block_log
    }

    fn read(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.dev.read_at(pos, &mut v)?;
        Ok(v)
    }

    pub(crate) fn read_agblock(&self, agno: u32, agbno: u32) -> Result<Vec<u8>> {
        if agbno >= self.geo.ag_blocks || agno >= self.geo.ag_count {
            return Err(Error::corrupt_msg(format!(
                "xfs: block {agno}/{agbno} is outside the filesystem"
            )));
        }
        self.read(self.ag_pos(agno, agbno), self.bs())
    }

    /// Checksum `b` (crc at `crc_off`) and write it at `pos`.
    pub(crate) fn write_meta(&self, pos: u64, b: &mut [u8], crc_off: usize) -> Result<()> {
        crc::set(b, crc_off).ok_or_else(|| Error::invalid("xfs: crc outside block"))?;
        self.dev.write_at(pos, b)
    }

    fn sect(&self) -> u64 {
        u64::from(self.geo.sb.sb_sectsize)
    }

    fn ag_hdr(&self, agno: u32, which: u64, magic: u32) -> Result<(u64, Vec<u8>)> {
        let pos = self.ag_pos(agno, 0) + which * self.sect();
        let b = self.read(pos, self.sect() as usize)?;
        if g32(&b, 0) != magic || g32(&b, 8) != agno {
            return Err(Error::corrupt(
                if which == 1 { "xfs AGF" } else { "xfs AGI" },
                "magicnum/seqno",
                pos,
                format!("{magic:#x} for AG {agno}"),
                format!("{:#x} for AG {}", g32(&b, 0), g32(&b, 8)),
            ));
        }
        Ok((pos, b))
    }

    fn agf(&self, agno: u32) -> Result<(u64, Vec<u8>)> {
        self.ag_hdr(agno, 1, AGF_MAGIC)
    }

    fn agi(&self, agno: u32) -> Result<(u64, Vec<u8>)> {
        self.ag_hdr(agno, 2, AGI_MAGIC)
    }

    fn ino_bits(&self) -> u32 {
        self.geo.agblk_log + self.geo.inopb_log
    }

    fn ag_of_ino(&self, ino: u64) -> u32 {
        (ino >> self.ino_bits()) as u32
    }

    fn fsb(&self, agno: u32, agbno: u32) -> u64 {
        (u64::from(agno) << self.geo.agblk_log) | u64::from(agbno)
    }

    fn split_fsb(&self, fsb: u64) -> (u32, u32) {
        (
            (fsb >> self.geo.agblk_log) as u32,
            (fsb & ((1u64 << self.geo.agblk_log) - 1)) as u32,
        )
    }

    // ---- free space ------------------------------------------------------------

    /// Allocate up to `want` contiguous blocks, preferring AG `pref`:
    /// (AG, AG block, count); "no space" before the kernel's set-aside ([`agfl`]).
    fn alloc(&mut self, pref: u32, want: u64) -> Result<(u32, u32, u32)> {
        self.space_alloc(pref, want)
    }

    /// Return `len` blocks at `agno`/`agbno` to the free-space trees.
    fn free(&mut self, agno: u32, agbno: u32, len: u32) -> Result<()> {
        let end = agbno + len;
        // A shared or CoW-staging record overlapping the range is the one just
        // before it or the first at or after its start (records do not overlap).
        for dom in [0, 1 << 31].into_iter().filter(|_| self.reflink) {
            let (prev, next) = self.bt_seek(&REFC, agno, (u64::from(agbno | dom), 0))?;
            for r in prev.into_iter().chain(next) {
                let s = g32(&r, 0) & 0x7fff_ffff;
                let e = s + g32(&r, 4);
                if s < end && agbno < e {
                    return Err(Error::unsupported(format!(
                        "xfs: blocks {agno}/{agbno}+{len} are shared (reflink); freeing shared extents is not implemented"
                    )));
                }
            }
        }
        self.space_free(agno, agbno, len)
    }

    // ---- inodes ------------------------------------------------------------------

    fn ino_tree(&self, agi: &[u8]) -> (&'static btree::Tree, u32, u32) {
        if self.finobt {
            (&FINO, g32(agi, 328), g32(agi, 332))
        } else {
            (&INO, g32(agi, 20), g32(agi, 24))
        }
    }

    /// (startino, holemask, freecount, free mask) of an inobt record.
    fn ino_rec(&self, r: &[u8]) -> (u32, u16, u32, u64) {
        if self.sparse {
            (g32(r, 0), g16(r, 4), u32::from(r[7]), g64(r, 8))
        } else {
            (g32(r, 0), 0, g32(r, 4), g64(r, 8))
        }
    }

    fn set_ino_rec(&self, r: &mut [u8], freecount: u32, free: u64) {
        if self.sparse {
            r[7] = freecount as u8;
        } else {
            p32(r, 4, freecount);
        }
        p64(r, 8, free);
    }

    /// Take a free inode, preferring AG `pref`; allocates a new inode chunk
    /// ([`ichunk`]) when no existing chunk has one.
    fn ialloc(&mut self, pref: u32) -> Result<u64> {
        for k in 0..self.geo.ag_count {
            let agno = (pref + k) % self.geo.ag_count;
            let (_, agi) = self.agi(agno)?;
            if g32(&agi, 28) == 0 {
                continue;
            }
            let (t, root, lv) = self.ino_tree(&agi);
            let recs = self.bt_records(t, agno, root, lv)?;
            let Some(rec) = recs.into_iter().find(|r| self.ino_rec(r).2 > 0) else {
                continue;
            };
            let (start, hole, fc, free) = self.ino_rec(&rec);
            let Some(i) = (0..64u32).find(|&i| free >> i & 1 == 1 && hole >> (i / 4) & 1 == 0)
            else {
                return Err(Error::corrupt_msg(format!(
                    "xfs AG {agno}: inode chunk {start} counts {fc} free inodes but has none"
                )));
            };
            let nfree = free & !(1u64 << i);
            let key = (u64::from(start), 0);
            let p = self.bt_find(&INO, agno, g32(&agi, 20), g32(&agi, 24), key)?;
            let mut r = self.bt_get(&INO, agno, &p)?.unwrap_or_default();
            self.set_ino_rec(&mut r, fc - 1, nfree);
            self.bt_update(&INO, agno, &p, &r)?;
            if self.finobt {
                let p = self.bt_find(&FINO, agno, g32(&agi, 328), g32(&agi, 332), key)?;
                if fc == 1 {
                    self.bt_delete(&FINO, agno, &p)?;
                } else {
                    self.bt_update(&FINO, agno, &p, &r)?;
                }
            }
            // The tree edits may have moved roots and block counts: re-read.
            let (pos, mut agi) = self.agi(agno)?;
            let v = g32(&agi, 28) - 1;
            p32(&mut agi, 28, v);
            self.write_meta(pos, &mut agi, AGI_CRC)?;
            self.d_ifree -= 1;
            return Ok((u64::from(agno) << self.ino_bits()) | u64::from(start + i));
        }
        // No free inode anywhere: allocate a new chunk, then take from it.
        let agno = self.new_chunk(pref)?;
        self.ialloc(agno)
    }

    /// Mark inode `ino` free in the inode trees (its core is cleared by the caller).
    fn ifree(&mut self, ino: u64) -> Result<()> {
        let agno = self.ag_of_ino(ino);
        let agino = (ino & ((1u64 << self.ino_bits()) - 1)) as u32;
        let (_, agi) = self.agi(agno)?;
        let recs = self.bt_records(&INO, agno, g32(&agi, 20), g32(&agi, 24))?;
        let rec = recs
            .into_iter()
            .find(|r| g32(r, 0) <= agino && agino < g32(r, 0) + 64)
            .ok_or_else(|| Error::corrupt_msg(format!("xfs: inode {ino} is in no inode chunk")))?;
        let (start, _, fc, free) = self.ino_rec(&rec);
        let bit = 1u64 << (agino - start);
        if free & bit != 0 {
            return Err(Error::corrupt_msg(format!(
                "xfs: inode {ino} is already free"
            )));
        }
        let key = (u64::from(start), 0);
        let p = self.bt_find(&INO, agno, g32(&agi, 20), g32(&agi, 24), key)?;
        let mut r = rec.clone();
        self.set_ino_rec(&mut r, fc + 1, free | bit);
        self.bt_update(&INO, agno, &p, &r)?;
        if self.finobt {
            let (root, lv) = (g32(&agi, 328), g32(&agi, 332));
            let p = self.bt_lookup(&FINO, agno, root, lv, key)?;
            match self.bt_get(&FINO, agno, &p)? {
                Some(old) if g32(&old, 0) == start => self.bt_update(&FINO, agno, &p, &r)?,
                _ => self.bt_insert(&FINO, agno, &p, &r)?,
            }
        }
        let (pos, mut agi) = self.agi(agno)?;
        let v = g32(&agi, 28) + 1;
        p32(&mut agi, 28, v);
        self.write_meta(pos, &mut agi, AGI_CRC)?;
        self.d_ifree += 1;
        Ok(())
    }

    fn iread(&self, ino: u64) -> Result<(u64, Vec<u8>)> {
        let pos = self.geo.inode_pos(ino)?;
        Ok((pos, self.read(pos, self.geo.inode_size as usize)?))
    }

    fn iwrite(&self, pos: u64, raw: &mut [u8]) -> Result<()> {
        self.write_meta(pos, raw, DI_CRC)
    }

    fn put_time(&self, raw: &mut [u8], off: usize, (sec, ns): (i64, u32)) {
        if g64(raw, 120) & XFS_DIFLAG2_BIGTIME != 0 {
            let v = (sec + (1i64 << 31)).max(0) as u64 * 1_000_000_000 + u64::from(ns);
            p64(raw, off, v);
        } else {
            p32(
                raw,
                off,
                sec.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32 as u32,
            );
            p32(raw, off + 4, ns);
        }
    }

    /// ctime (and mtime when `mtime`) to now.
    fn touch(&self, raw: &mut [u8], mtime: bool) {
        self.put_time(raw, 48, self.now);
        if mtime {
            self.put_time(raw, 40, self.now);
        }
        p64(raw, 104, g64(raw, 104) + 1);
    }

    /// Allocate and initialise an inode near `parent`; returns (ino, pos, raw).
    fn new_inode(
        &mut self,
        parent: u64,
        mode: u16,
        uid: u32,
        gid: u32,
        nlink: u32,
    ) -> Result<(u64, u64, Vec<u8>)> {
        let ino = self.ialloc(self.ag_of_ino(parent))?;
        let (pos, old) = self.iread(ino)?;
        let mut raw = vec![0u8; old.len()];
        p16(&mut raw, 0, 0x494e);
        p16(&mut raw, 2, mode);
        raw[4] = 3;
        raw[5] = XFS_DINODE_FMT_EXTENTS;
        p32(&mut raw, 8, uid);
        p32(&mut raw, 12, gid);
        p32(&mut raw, 16, nlink);
        raw[83] = XFS_DINODE_FMT_EXTENTS;
        p32(&mut raw, 92, g32(&old, 92).wrapping_add(1));
        p32(&mut raw, 96, NULLAGINO);
        p64(&mut raw, 112, g64(&old, 112));
        if self.geo.has_bigtime {
            p64(&mut raw, 120, XFS_DIFLAG2_BIGTIME);
        }
        for off in [32, 40, 48, 144] {
            self.put_time(&mut raw, off, self.now);
        }
        p64(&mut raw, 104, 1);
        p64(&mut raw, 152, ino);
        put(&mut raw, 160, &self.geo.meta_uuid);
        Ok((ino, pos, raw))
    }

    /// Bytes of the data fork (literal area up to the attribute fork).
    fn dfork_cap(&self, raw: &[u8]) -> usize {
        match raw[82] {
            0 => self.geo.inode_size as usize - CORE,
            f => usize::from(f) * 8,
        }
    }

    fn set_nextents(raw: &mut [u8], n: u64) {
        if g64(raw, 120) & XFS_DIFLAG2_NREXT64 != 0 {
            p64(raw, 24, n);
        } else {
            p32(raw, 76, n as u32);
        }
    }

    /// Write `data` into newly allocated extents near AG `ag`; fills the data
    /// fork of `raw` (extents format) and sets size and block count.
    fn store_data(&mut self, raw: &mut [u8], data: &[u8]) -> Result<()> {
        let ino = g64(raw, 152);
        let bs = self.bs();
        let mut left = data.len().div_ceil(bs) as u64;
        let mut recs: Vec<BmbtIrec> = Vec::new();
        let mut off = 0u64;
        while left > 0 {
            if recs.len() >= MAX_WRITE_EXTENTS {
                return Err(Error::unsupported(format!(
                    "xfs: the file would need more than {MAX_WRITE_EXTENTS} extents (free space too fragmented)"
                )));
            }
            let (agno, agbno, got) = self.alloc(self.ag_of_ino(ino), left)?;
            let from = (off as usize) * bs;
            let to = (from + got as usize * bs).min(data.len());
            let mut chunk = data[from..to].to_vec();
            chunk.resize(got as usize * bs, 0);
            self.dev.write_at(self.ag_pos(agno, agbno), &chunk)?;
            recs.push(BmbtIrec {
                startoff: off,
                startblock: self.fsb(agno, agbno),
                blockcount: u64::from(got),
                unwritten: false,
            });
            off += u64::from(got);
            left -= u64::from(got);
        }
        // Add to di_nblocks rather than set it: a replaced file keeps its
        // attribute fork blocks (leaf and remote values), which count too.
        p64(raw, 64, g64(raw, 64).saturating_add(off));
        self.set_data_fork(raw, &recs)?;
        p64(raw, 56, data.len() as u64);
        Ok(())
    }

    /// Make the data fork of `raw` map exactly `recs` (sorted by file
    /// offset, non-overlapping): extents format in the inode when they fit,
    /// otherwise a B+tree of bmbt blocks. Any bmbt blocks the fork had
    /// before are freed; `di_nblocks` follows the bmbt blocks (callers
    /// account for the data blocks themselves).
    fn set_data_fork(&mut self, raw: &mut [u8], recs: &[BmbtIrec]) -> Result<()> {
        self.drop_bmbt(raw)?;
        let cap = self.dfork_cap(raw);
        if recs.len() * 16 > cap {
            return self.build_bmbt(raw, recs);
        }
        raw[CORE..CORE + cap].fill(0);
        for (i, r) in recs.iter().enumerate() {
            put(raw, CORE + i * 16, &r.encode());
        }
        raw[5] = XFS_DINODE_FMT_EXTENTS;
        Self::set_nextents(raw, recs.len() as u64);
        Ok(())
    }

    /// Free the data fork blocks of inode `d` (extents or btree format, bmbt
    /// blocks included) and empty the fork in `raw`.
    fn release(&mut self, d: &Dinode, raw: &mut [u8]) -> Result<()> {
        match d.di_format {
            XFS_DINODE_FMT_EXTENTS | XFS_DINODE_FMT_BTREE => {}
            XFS_DINODE_FMT_LOCAL => {
                let cap = self.dfork_cap(raw);
                raw[CORE..CORE + cap].fill(0);
                p64(raw, 56, 0);
                return Ok(());
            }
            f => {
                return Err(Error::unsupported(format!(
                    "xfs inode {}: data fork format {f} cannot be freed",
                    d.ino
                )))
            }
        }
        let extents = data_extents(&self.rd, d)?;
        self.drop_bmbt(raw)?;
        let mut freed = 0u64;
        for e in extents {
            let (agno, agbno) = self.split_fsb(e.startblock);
            self.free(agno, agbno, e.blockcount as u32)?;
            freed += e.blockcount;
        }
        let cap = self.dfork_cap(raw);
        raw[CORE..CORE + cap].fill(0);
        Self::set_nextents(raw, 0);
        p64(raw, 56, 0);
        p64(raw, 64, g64(raw, 64).saturating_sub(freed));
        Ok(())
    }

    // ---- directories -------------------------------------------------------------

    fn is_block_dir(&self, d: &Dinode) -> Result<bool> {
        match d.di_format {
            XFS_DINODE_FMT_LOCAL => Ok(false),
            XFS_DINODE_FMT_EXTENTS if d.di_size == u64::from(self.geo.dir_block_size) => Ok(true),
            _ => Err(Error::unsupported(format!(
                "xfs directory inode {}: adding or removing entries in node or B+tree form directories is not implemented (short form, single-block and leaf form are)",
                d.ino
            ))),
        }
    }

    fn dir_ents(&self, d: &Dinode) -> Result<Vec<Ent>> {
        let mut v = Vec::new();
        for_each_entry(&self.rd, d, &mut |e| {
            v.push(Ent {
                name: e.name.to_vec(),
                ino: e.ino,
                ftype: e.ftype.unwrap_or(0),
            });
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(v)
    }

    fn dir_parent(&self, d: &Dinode) -> Result<u64> {
        if d.di_format == XFS_DINODE_FMT_LOCAL {
            let f = &d.data_fork;
            return Ok(if f.get(1).copied().unwrap_or(0) == 0 {
                u64::from(g32(f, 2))
            } else {
                g64(f, 2)
            });
        }
        let (pos, _) = self.dir_block(d)?;
        let b = self.read(pos, self.geo.dir_block_size as usize)?;
        if b.get(88) != Some(&2) || b.get(89..91) != Some(b"..") {
            return Err(Error::corrupt(
                format!("xfs directory inode {} block", d.ino),
                "second entry",
                pos + 80,
                "\"..\"",
                "another entry",
            ));
        }
        Ok(g64(&b, 80))
    }

    /// Byte position and first fs block of a single-block directory.
    fn dir_block(&self, d: &Dinode) -> Result<(u64, u64)> {
        let ext = data_extents(&self.rd, d)?;
        let need = 1u64 << self.geo.dir_blk_log;
        match ext.first() {
            Some(e) if e.startoff == 0 && e.blockcount >= need && !e.unwritten => {
                let pos = self.geo.fsb_to_byte(e.startblock, need).ok_or_else(|| {
                    Error::corrupt_msg(format!("xfs directory inode {}: block outside", d.ino))
                })?;
                Ok((pos, e.startblock))
            }
            _ => Err(Error::unsupported(format!(
                "xfs directory inode {}: its directory block is not one contiguous extent",
                d.ino
            ))),
        }
    }

    /// Rewrite directory `dino` (whose parent is `parent`) to hold `ents`.
    fn dir_store(&mut self, dino: u64, ents: &[Ent]) -> Result<()> {
        let d = self.rd.inode(dino)?;
        let parent = self.dir_parent(&d)?;
        let block = self.is_block_dir(&d)?;
        if build_block(self.geo.dir_block_size as usize, dino, parent, ents).is_none() {
            return self.dir_rebuild(&d, parent, ents);
        }
        let (pos, mut raw) = self.iread(dino)?;
        let cap = self.dfork_cap(&raw);
        if !block {
            if let Some(sf) = build_sf(parent, ents) {
                if sf.len() <= cap {
                    raw[CORE..CORE + cap].fill(0);
                    put(&mut raw, CORE, &sf);
                    p64(&mut raw, 56, sf.len() as u64);
                    self.touch(&mut raw, true);
                    return self.iwrite(pos, &mut raw);
                }
            }
        }
        let dbs = self.geo.dir_block_size as usize;
        let (bpos, lsn) = if block {
            let (bpos, _) = self.dir_block(&d)?;
            let old = self.read(bpos, 24)?;
            (bpos, g64(&old, 16))
        } else {
            let need = 1u64 << self.geo.dir_blk_log;
            let (agno, agbno, got) = self.alloc(self.ag_of_ino(dino), need)?;
            if u64::from(got) < need {
                self.free(agno, agbno, got)?;
                return Err(Error::unsupported(
                    "xfs: no contiguous free space for a directory block",
                ));
            }
            raw[CORE..CORE + cap].fill(0);
            let rec = BmbtIrec {
                startoff: 0,
                startblock: self.fsb(agno, agbno),
                blockcount: need,
                unwritten: false,
            };
            put(&mut raw, CORE, &rec.encode());
            raw[5] = XFS_DINODE_FMT_EXTENTS;
            Self::set_nextents(&mut raw, 1);
            p64(&mut raw, 56, dbs as u64);
            let nb = g64(&raw, 64) + need;
            p64(&mut raw, 64, nb);
            (self.ag_pos(agno, agbno), 0)
        };
        let mut b = build_block(dbs, dino, parent, ents).ok_or_else(|| {
            Error::unsupported(format!(
                "xfs directory inode {dino}: {} entries do not fit in one directory block (converting to leaf form is not implemented)",
                ents.len()
            ))
        })?;
        p64(&mut b, 8, bpos >> 9);
        p64(&mut b, 16, lsn);
        put(&mut b, 24, &self.geo.meta_uuid);
        p64(&mut b, 40, dino);
        self.write_meta(bpos, &mut b, 4)?;
        self.touch(&mut raw, true);
        self.iwrite(pos, &mut raw)
    }

    fn add_entry(&mut self, dino: u64, name: &[u8], ino: u64, ftype: u8) -> Result<()> {
        let d = self.rd.inode(dino)?;
        if let Some(l) = self.leaf_dir(&d)? {
            if self.rd.lookup_in(&d, name)?.is_some() {
                return Err(Error::invalid(format!(
                    "xfs: {:?} already exists in directory inode {dino}",
                    String::from_utf8_lossy(name)
                )));
            }
            return self.leaf_add(&d, l, name, ino, ftype);
        }
        if self.node_dir(&d) {
            return self.node_add(&d, name, ino, ftype);
        }
        self.is_block_dir(&d)?;
        let mut ents = self.dir_ents(&d)?;
        if ents.iter().any(|e| e.name == name) {
            return Err(Error::invalid(format!(
                "xfs: {:?} already exists in directory inode {dino}",
                String::from_utf8_lossy(name)
            )));
        }
        ents.push(Ent {
            name: name.to_vec(),
            ino,
            ftype,
        });
        self.dir_store(dino, &ents)
    }

    fn remove_entry(&mut self, dino: u64, name: &[u8]) -> Result<()> {
        let d = self.rd.inode(dino)?;
        if let Some(l) = self.leaf_dir(&d)? {
            return self.leaf_remove(&d, l, name);
        }
        if self.node_dir(&d) {
            return self.node_remove(&d, name);
        }
        self.is_block_dir(&d)?;
        let mut ents = self.dir_ents(&d)?;
        let before = ents.len();
        ents.retain(|e| e.name != name);
        if ents.len() == before {
            return Err(Error::invalid(format!(
                "xfs: no entry {:?} in directory inode {dino}",
                String::from_utf8_lossy(name)
            )));
        }
        self.dir_store(dino, &ents)
    }

    fn adjust_nlink(&self, ino: u64, delta: i32) -> Result<u32> {
        let (pos, mut raw) = self.iread(ino)?;
        let n = (g32(&raw, 16) as i64 + i64::from(delta)).max(0) as u32;
        p32(&mut raw, 16, n);
        self.touch(&mut raw, false);
        self.iwrite(pos, &mut raw)?;
        Ok(n)
    }

    // ---- paths -------------------------------------------------------------------

    fn resolve(&self, path: &str, follow: bool) -> Result<String> {
        resolve(&self.rd, path, follow)
    }

    fn split(path: &str) -> Result<(String, String)> {
        crate::fs::write::split_parent(path)
    }

    fn mkdir_p(&mut self, path: &str, mode: u32, log: &mut Vec<String>) -> Result<u64> {
        let mut cur = self.geo.sb.sb_rootino;
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
                    let (_, name) = Self::split(&real)?;
                    let (ino, pos, mut raw) =
                        self.new_inode(cur, S_IFDIR | (mode & 0o7777) as u16, 0, 0, 2)?;
                    raw[5] = XFS_DINODE_FMT_LOCAL;
                    let sf = build_sf(cur, &[]).unwrap_or_default();
                    put(&mut raw, CORE, &sf);
                    p64(&mut raw, 56, sf.len() as u64);
                    self.iwrite(pos, &mut raw)?;
                    self.add_entry(cur, name.as_bytes(), ino, FT_DIR)?;
                    self.adjust_nlink(cur, 1)?;
                    log.push(format!("mkdir {real}"));
                    cur = ino;
                    sofar = real;
                }
            }
        }
        Ok(cur)
    }

    /// (resolved path, parent inode, name) for a new entry at `real`;
    /// missing parents are created.
    fn parent_for_create(&mut self, real: &str, log: &mut Vec<String>) -> Result<(u64, String)> {
        let (parent, name) = Self::split(real)?;
        if name.len() > 255 {
            return Err(Error::invalid(format!(
                "{real}: name longer than 255 bytes"
            )));
        }
        let pino = self.mkdir_p(&parent, 0o755, log)?;
        Ok((pino, name))
    }

    fn existing(&self, path: &str, follow: bool) -> Result<(String, Dinode)> {
        let real = self.resolve(path, follow)?;
        let d = self
            .rd
            .lookup(&real)?
            .ok_or_else(|| Error::invalid(format!("{real}: no such file or directory")))?;
        Ok((real, d))
    }

    // ---- actions -----------------------------------------------------------------

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
        if let Some(d) = self.rd.lookup(&real)? {
            if d.file_type() != FileType::File {
                return Err(Error::invalid(format!(
                    "{real} exists and is not a regular file"
                )));
            }
            let (pos, mut raw) = self.iread(d.ino)?;
            self.release(&d, &mut raw)?;
            p16(&mut raw, 2, S_IFREG | perm);
            p32(&mut raw, 8, uid);
            p32(&mut raw, 12, gid);
            self.store_data(&mut raw, data)?;
            self.touch(&mut raw, true);
            self.iwrite(pos, &mut raw)?;
            log.push(format!("replace {real} ({} bytes)", data.len()));
            return Ok(());
        }
        let (pino, name) = self.parent_for_create(&real, log)?;
        let (ino, pos, mut raw) = self.new_inode(pino, S_IFREG | perm, uid, gid, 1)?;
        self.store_data(&mut raw, data)?;
        self.iwrite(pos, &mut raw)?;
        self.add_entry(pino, name.as_bytes(), ino, FT_REG)?;
        log.push(format!("create {real} ({} bytes)", data.len()));
        Ok(())
    }

    fn symlink(&mut self, target: &str, path: &str, log: &mut Vec<String>) -> Result<()> {
        let t = target.as_bytes();
        let bs = self.bs();
        if t.is_empty() || t.len() > SYMLINK_MAXLEN || t.contains(&0) {
            return Err(Error::invalid(format!(
                "symlink target {target:?}: empty, longer than {SYMLINK_MAXLEN} bytes or with a NUL"
            )));
        }
        let real = self.resolve(path, false)?;
        if self.rd.lookup(&real)?.is_some() {
            return Err(Error::invalid(format!("{real} already exists")));
        }
        let (pino, name) = self.parent_for_create(&real, log)?;
        let (ino, pos, mut raw) = self.new_inode(pino, S_IFLNK | 0o777, 0, 0, 1)?;
        if t.len() <= self.dfork_cap(&raw) {
            raw[5] = XFS_DINODE_FMT_LOCAL;
            put(&mut raw, CORE, t);
            p64(&mut raw, 56, t.len() as u64);
        } else {
            // Remote: as many blocks as the target needs with a header in
            // each (`xfs_symlink_blocks`); like the kernel, each extent is one
            // buffer with one "XSLM" header covering all its blocks.
            let nblk = t.len().div_ceil(bs - XFS_SYMLINK_HDR_LEN) as u64;
            let (mut recs, mut done, mut off) = (Vec::new(), 0usize, 0u64);
            while done < t.len() {
                let (agno, agbno, got) =
                    self.alloc(self.ag_of_ino(ino), nblk.saturating_sub(off))?;
                let bpos = self.ag_pos(agno, agbno);
                let mut b = vec![0u8; got as usize * bs];
                let n = (b.len() - XFS_SYMLINK_HDR_LEN).min(t.len() - done);
                p32(&mut b, 0, XFS_SYMLINK_MAGIC);
                p32(&mut b, 4, done as u32);
                p32(&mut b, 8, n as u32);
                put(&mut b, 16, &self.geo.meta_uuid);
                p64(&mut b, 32, ino);
                p64(&mut b, 40, bpos >> 9);
                put(&mut b, XFS_SYMLINK_HDR_LEN, &t[done..done + n]);
                self.write_meta(bpos, &mut b, XFS_SYMLINK_CRC_OFF)?;
                done += n;
                recs.push(BmbtIrec {
                    startoff: off,
                    startblock: self.fsb(agno, agbno),
                    blockcount: u64::from(got),
                    unwritten: false,
                });
                off += u64::from(got);
            }
            p64(&mut raw, 64, off);
            self.set_data_fork(&mut raw, &recs)?;
            p64(&mut raw, 56, t.len() as u64);
        }
        self.iwrite(pos, &mut raw)?;
        self.add_entry(pino, name.as_bytes(), ino, FT_SYMLINK)?;
        log.push(format!("symlink {real} -> {target}"));
        Ok(())
    }

    fn chmod(&mut self, path: &str, mode: u32, log: &mut Vec<String>) -> Result<()> {
        let (real, d) = self.existing(path, true)?;
        let (pos, mut raw) = self.iread(d.ino)?;
        p16(&mut raw, 2, (d.di_mode & S_IFMT) | (mode & 0o7777) as u16);
        self.touch(&mut raw, false);
        self.iwrite(pos, &mut raw)?;
        log.push(format!("chmod {mode:o} {real}"));
        Ok(())
    }

    fn chown(&mut self, path: &str, uid: u32, gid: u32, log: &mut Vec<String>) -> Result<()> {
        let (real, d) = self.existing(path, false)?;
        let (pos, mut raw) = self.iread(d.ino)?;
        p32(&mut raw, 8, uid);
        p32(&mut raw, 12, gid);
        self.touch(&mut raw, false);
        self.iwrite(pos, &mut raw)?;
        log.push(format!("chown {uid}:{gid} {real}"));
        Ok(())
    }

    fn set_times(
        &mut self,
        path: &str,
        atime: i64,
        mtime: i64,
        log: &mut Vec<String>,
    ) -> Result<()> {
        let (real, d) = self.existing(path, false)?;
        let (pos, mut raw) = self.iread(d.ino)?;
        self.put_time(&mut raw, 32, (atime, 0));
        self.put_time(&mut raw, 40, (mtime, 0));
        self.touch(&mut raw, false);
        self.iwrite(pos, &mut raw)?;
        log.push(format!(
            "set times of {real} (atime {atime}, mtime {mtime})"
        ));
        Ok(())
    }

    fn hardlink(&mut self, target: &str, path: &str, log: &mut Vec<String>) -> Result<()> {
        let (treal, d) = self.existing(target, false)?;
        if d.file_type() == FileType::Dir {
            return Err(Error::invalid(format!(
                "{treal} is a directory; cannot hard-link it"
            )));
        }
        let real = self.resolve(path, false)?;
        if self.rd.lookup(&real)?.is_some() {
            return Err(Error::invalid(format!("{real} already exists")));
        }
        let (pino, name) = self.parent_for_create(&real, log)?;
        let ft = match d.file_type() {
            FileType::File => FT_REG,
            FileType::Symlink => FT_SYMLINK,
            _ => {
                return Err(Error::unsupported(format!(
                    "{treal}: hard links to special files are not supported"
                )))
            }
        };
        self.add_entry(pino, name.as_bytes(), d.ino, ft)?;
        self.adjust_nlink(d.ino, 1)?;
        log.push(format!("hardlink {real} -> {treal}"));
        Ok(())
    }

    fn delete(&mut self, path: &str, log: &mut Vec<String>) -> Result<()> {
        let real = self.resolve(path, false)?;
        let Some(d) = self.rd.lookup(&real)? else {
            log.push(format!("delete {real}: absent"));
            return Ok(());
        };
        let (parent, name) = Self::split(&real)?;
        let pd = self
            .rd
            .lookup(&parent)?
            .ok_or_else(|| Error::invalid(format!("{parent}: missing")))?;
        let is_dir = d.file_type() == FileType::Dir;
        if is_dir {
            if !self.dir_ents(&d)?.is_empty() {
                return Err(Error::invalid(format!("{real}: directory not empty")));
            }
        } else if !matches!(d.file_type(), FileType::File | FileType::Symlink) {
            return Err(Error::unsupported(format!(
                "{real}: deleting special files is not supported"
            )));
        }
        self.attr_check_free(&d)?;
        self.remove_entry(pd.ino, name.as_bytes())?;
        let links = if is_dir {
            self.adjust_nlink(pd.ino, -1)?;
            0
        } else {
            self.adjust_nlink(d.ino, -1)?
        };
        if links == 0 {
            let (pos, mut raw) = self.iread(d.ino)?;
            self.release(&d, &mut raw)?;
            self.attr_release(d.ino, &raw)?;
            let gen = g32(&raw, 92).wrapping_add(1);
            let lsn = g64(&raw, 112);
            let flags2 = if self.geo.has_bigtime {
                XFS_DIFLAG2_BIGTIME
            } else {
                0
            };
            raw[2..].fill(0);
            raw[4] = 3;
            raw[5] = XFS_DINODE_FMT_EXTENTS;
            raw[83] = XFS_DINODE_FMT_EXTENTS;
            p32(&mut raw, 92, gen);
            p32(&mut raw, 96, NULLAGINO);
            p64(&mut raw, 112, lsn);
            p64(&mut raw, 120, flags2);
            p64(&mut raw, 152, d.ino);
            put(&mut raw, 160, &self.geo.meta_uuid);
            self.iwrite(pos, &mut raw)?;
            self.ifree(d.ino)?;
        }
        log.push(format!("delete {real}"));
        Ok(())
    }

    fn set_xattr(
        &mut self,
        path: &str,
        full: &str,
        value: &[u8],
        log: &mut Vec<String>,
    ) -> Result<()> {
        let (real, d) = self.existing(path, false)?;
        let (flags, name) = attr::split_name(full)?;
        self.attr_change(&d, flags, name.as_bytes(), Some(value))?;
        log.push(format!(
            "set xattr {full} on {real} ({} bytes)",
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

    /// Write the superblock counters (`sb_ifree`, `sb_fdblocks`) and checksum.
    pub fn finish(self) -> Result<()> {
        if self.d_ifree == 0 && self.d_fdblocks == 0 {
            return Ok(());
        }
        let mut sec = self.read(0, self.sect() as usize)?;
        let ifree = (g64(&sec, 136) as i64 + self.d_ifree).max(0) as u64;
        let fd = (g64(&sec, 144) as i64 + self.d_fdblocks).max(0) as u64;
        p64(&mut sec, 136, ifree);
        p64(&mut sec, 144, fd);
        self.write_meta(0, &mut sec, XFS_SB_CRC_OFF)
    }
}

fn alloc_rec(start: u32, count: u32) -> [u8; 8] {
    let mut r = [0u8; 8];
    p32(&mut r, 0, start);
    p32(&mut r, 4, count);
    r
}

/// A short-form directory (4-byte inode numbers) holding `ents`; `None`
/// when an inode number needs 8 bytes or there are more than 255 entries.
fn build_sf(parent: u64, ents: &[Ent]) -> Option<Vec<u8>> {
    if ents.len() > 255 || parent > u64::from(u32::MAX) {
        return None;
    }
    let mut v = vec![ents.len() as u8, 0];
    v.extend_from_slice(&(parent as u32).to_be_bytes());
    let mut off = 64 + entsize(1) + entsize(2);
    for e in ents {
        if e.ino > u64::from(u32::MAX) {
            return None;
        }
        v.push(e.name.len() as u8);
        v.extend_from_slice(&(off as u16).to_be_bytes());
        v.extend_from_slice(&e.name);
        v.push(e.ftype);
        v.extend_from_slice(&(e.ino as u32).to_be_bytes());
        off += entsize(e.name.len());
    }
    Some(v)
}

/// A single-block directory ("XDB3") of `dbs` bytes holding ".", ".." and
/// `ents`, with its hash-sorted leaf and tail; header identity fields
/// (blkno, lsn, uuid, owner) are left for the caller. `None` if it does not fit.
fn build_block(dbs: usize, dino: u64, parent: u64, ents: &[Ent]) -> Option<Vec<u8>> {
    let all = with_dots(dino, parent, ents);
    let data: usize = all.iter().map(|e| entsize(e.name.len())).sum();
    let leaf_start = dbs.checked_sub(8 + 8 * all.len())?;
    let mut off = 64;
    if off + data > leaf_start {
        return None;
    }
    let mut b = vec![0u8; dbs];
    p32(&mut b, 0, XFS_DIR3_BLOCK_MAGIC);
    let mut leaf: Vec<(u32, u32)> = Vec::new();
    for e in &all {
        let sz = entsize(e.name.len());
        p64(&mut b, off, e.ino);
        b[off + 8] = e.name.len() as u8;
        put(&mut b, off + 9, &e.name);
        b[off + 9 + e.name.len()] = e.ftype;
        p16(&mut b, off + sz - 2, off as u16);
        leaf.push((da_hashname(&e.name), (off / 8) as u32));
        off += sz;
    }
    let free = leaf_start - off;
    if free > 0 {
        p16(&mut b, off, 0xffff);
        p16(&mut b, off + 2, free as u16);
        p16(&mut b, off + free - 2, off as u16);
        p16(&mut b, 48, off as u16);
        p16(&mut b, 50, free as u16);
    }
    leaf.sort_unstable();
    for (i, (h, a)) in leaf.iter().enumerate() {
        p32(&mut b, leaf_start + i * 8, *h);
        p32(&mut b, leaf_start + i * 8 + 4, *a);
    }
    p32(&mut b, dbs - 8, all.len() as u32);
    Some(b)
}

/// A directory's entries as stored in its data blocks: "." and ".." first.
fn with_dots(dino: u64, parent: u64, ents: &[Ent]) -> Vec<Ent> {
    let dot = |name: &[u8], ino| Ent {
        name: name.to_vec(),
        ino,
        ftype: FT_DIR,
    };
    let mut all = vec![dot(b".", dino), dot(b"..", parent)];
    all.extend_from_slice(ents);
    all
}

impl crate::fs::write::FsWriter for XfsWriter {
    fn apply_one(&mut self, action: &FsAction, log: &mut Vec<String>) -> Result<()> {
        self.apply_action(action, log)
    }
    fn finish(self) -> Result<()> {
        XfsWriter::finish(self)
    }
}

/// Apply `actions` to the XFS filesystem on `dev`; returns a log line per change.
pub fn apply(dev: &VolumeDev, actions: &[FsAction]) -> Result<Vec<String>> {
    crate::fs::write::run(XfsWriter::open(dev.clone())?, actions)
}
