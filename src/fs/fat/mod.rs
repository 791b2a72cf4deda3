//! FAT12, FAT16 and FAT32, read-only (the EFI system partition).
//!
//! Layout from Microsoft's "FAT: General Overview of On-Disk Format" (FAT
//! specification 1.03): the BIOS Parameter Block in sector 0 (BPB_BytsPerSec
//! @11, BPB_SecPerClus @13, BPB_RsvdSecCnt @14, BPB_NumFATs @16,
//! BPB_RootEntCnt @17, BPB_TotSec16 @19, BPB_FATSz16 @22, BPB_TotSec32 @32,
//! BPB_FATSz32 @36, BPB_RootClus @44; BS_VolID @39/@67 and BS_VolLab @43/@71
//! for FAT12/16 and FAT32), FAT32 when BPB_FATSz16 is 0 (as Linux decides),
//! else FAT12 below 4085 clusters and FAT16 above, 32-byte directory entries with
//! long-name (VFAT) entries before their short entry.
//!
//! Written here rather than adapting the `fatfs` crate (MIT): `fatfs` needs a
//! `Read + Write + Seek` stream with interior mutability (`RefCell`), so it is
//! not `Sync` and would need a lock and a cursor adapter around the positional
//! [`BlockSource`]; reading is a few hundred lines.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::{DirEntry, FileSystem, FileType, Metadata};
use crate::block::BlockSource;
use crate::bytes::{le16, le32, sub, u, u8_at, us};
use crate::error::{Error, Result};
use crate::limits::{MAX_DIR_BYTES, MAX_DIR_ENTRIES, MAX_TABLE_BYTES};
use std::sync::Arc;

/// FAT variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    /// 12-bit entries.
    Fat12,
    /// 16-bit entries.
    Fat16,
    /// 28-bit entries in 32 bits.
    Fat32,
}

/// A FAT filesystem on a block source.
pub struct Fat {
    src: Arc<dyn BlockSource>,
    fat_type: FatType,
    cluster_size: u64,
    /// Byte offset of cluster 2.
    data_start: u64,
    /// Count of data clusters.
    clusters: u32,
    /// Byte offset and length of the FAT12/16 root directory region.
    root_region: (u64, u64),
    root_cluster: u32,
    fat: Vec<u8>,
    uuid: String,
    label: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    attr: u8,
    cluster: u32,
    size: u32,
    mtime: i64,
}

fn bpb_err(
    field: &str,
    off: u64,
    exp: impl std::fmt::Display,
    got: impl std::fmt::Display,
) -> Error {
    Error::corrupt("FAT boot sector (BPB)", field, off, exp, got)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
#[allow(clippy::arithmetic_side_effects)] // bounded: year 1980..2107, month 1..12, day 1..31
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[allow(clippy::arithmetic_side_effects)] // bounded bit fields of two u16s
fn fat_time(date: u16, time: u16) -> i64 {
    let y = 1980 + i64::from(date >> 9);
    let m = i64::from((date >> 5) & 0xF).clamp(1, 12);
    let d = i64::from(date & 0x1F).clamp(1, 31);
    let secs = i64::from(time >> 11) * 3600
        + i64::from((time >> 5) & 0x3F) * 60
        + i64::from(time & 0x1F) * 2;
    days_from_civil(y, m, d) * 86_400 + secs
}

fn lfn_checksum(short: &[u8]) -> u8 {
    short.iter().fold(0u8, |s, &c| {
        ((s & 1) << 7).wrapping_add(s >> 1).wrapping_add(c)
    })
}

impl Fat {
    /// Recognise a FAT boot sector; `Ok(None)` when it is not one.
    pub fn probe(src: Arc<dyn BlockSource>) -> Result<Option<Self>> {
        if src.size() < 512 {
            return Ok(None);
        }
        let mut b = [0u8; 512];
        src.read_at(0, &mut b)?;
        let jump = u8_at(&b, 0);
        let fat_string = sub(&b, 54, 3) == b"FAT" || sub(&b, 82, 3) == b"FAT";
        if !(jump == 0xEB || jump == 0xE9) || !fat_string {
            return Ok(None);
        }
        Self::parse(src, &b).map(Some)
    }

    fn parse(src: Arc<dyn BlockSource>, b: &[u8]) -> Result<Self> {
        let bps = u64::from(le16(b, 11));
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(bpb_err(
                "BPB_BytsPerSec",
                11,
                "512, 1024, 2048 or 4096",
                bps,
            ));
        }
        let spc = u64::from(u8_at(b, 13));
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bpb_err(
                "BPB_SecPerClus",
                13,
                "a power of two from 1 to 128",
                spc,
            ));
        }
        let rsvd = u64::from(le16(b, 14));
        if rsvd == 0 {
            return Err(bpb_err("BPB_RsvdSecCnt", 14, "at least 1", 0));
        }
        let nfats = u64::from(u8_at(b, 16));
        if nfats == 0 {
            return Err(bpb_err("BPB_NumFATs", 16, "at least 1", 0));
        }
        let root_ent = u64::from(le16(b, 17));
        let tot = match le16(b, 19) {
            0 => u64::from(le32(b, 32)),
            t => u64::from(t),
        };
        let fatsz = match le16(b, 22) {
            0 => u64::from(le32(b, 36)),
            f => u64::from(f),
        };
        if fatsz == 0 {
            return Err(bpb_err("BPB_FATSz32", 36, "at least 1", 0));
        }
        let root_bytes = root_ent.saturating_mul(32);
        let root_secs = root_bytes.div_ceil(bps);
        let first_data = rsvd
            .saturating_add(nfats.saturating_mul(fatsz))
            .saturating_add(root_secs);
        if tot <= first_data || tot.saturating_mul(bps) > src.size() {
            return Err(bpb_err(
                "BPB_TotSec32",
                32,
                format!(
                    "more than {first_data} sectors and at most the volume's {}",
                    src.size().checked_div(bps).unwrap_or(0)
                ),
                tot,
            ));
        }
        let clusters64 = tot.saturating_sub(first_data).checked_div(spc).unwrap_or(0);
        let clusters = u32::try_from(clusters64)
            .unwrap_or(u32::MAX)
            .min(0x0FFF_FFF5);
        // Linux (fs/fat/inode.c) and blkid take a zero BPB_FATSz16 to mean FAT32,
        // whatever the cluster count; mkfs.fat -F 32 makes small FAT32 volumes.
        let fat_type = if le16(b, 22) == 0 {
            FatType::Fat32
        } else if clusters < 4085 {
            FatType::Fat12
        } else {
            FatType::Fat16
        };
        let fat_bytes = fatsz.saturating_mul(bps);
        if fat_bytes > MAX_TABLE_BYTES {
            return Err(bpb_err(
                "BPB_FATSz32",
                36,
                format!("a FAT of at most {MAX_TABLE_BYTES} bytes"),
                fat_bytes,
            ));
        }
        let mut fat = vec![0u8; us(fat_bytes)];
        src.read_at(rsvd.saturating_mul(bps), &mut fat)?;
        let (id_off, lab_off) = if fat_type == FatType::Fat32 {
            (67, 71)
        } else {
            (39, 43)
        };
        let id = le32(b, id_off);
        let uuid = format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF);
        let bpb_label = String::from_utf8_lossy(sub(b, lab_off, 11))
            .trim_end()
            .to_string();
        let mut fs = Fat {
            src,
            fat_type,
            cluster_size: spc.saturating_mul(bps),
            data_start: first_data.saturating_mul(bps),
            clusters,
            root_region: (
                rsvd.saturating_add(nfats.saturating_mul(fatsz))
                    .saturating_mul(bps),
                root_bytes,
            ),
            root_cluster: le32(b, 44),
            fat,
            uuid,
            label: None,
        };
        // blkid prefers the volume-label entry of the root directory.
        let root = fs.root_raw()?;
        let mut label = None;
        for rec in root.chunks(32) {
            match u8_at(rec, 0) {
                0 => break,
                0xE5 => continue,
                _ => {}
            }
            if u8_at(rec, 11) & 0x1F == 0x08 {
                label = Some(
                    String::from_utf8_lossy(sub(rec, 0, 11))
                        .trim_end()
                        .to_string(),
                );
                break;
            }
        }
        fs.label = label
            .or((bpb_label != "NO NAME" && !bpb_label.is_empty()).then_some(bpb_label))
            .filter(|l| !l.is_empty());
        Ok(fs)
    }

    /// FAT12, FAT16 or FAT32.
    pub fn fat_type(&self) -> FatType {
        self.fat_type
    }

    fn next(&self, c: u32) -> u32 {
        let n = us(u64::from(c));
        match self.fat_type {
            FatType::Fat12 => {
                let off = n.saturating_add(n / 2);
                let v = le16(&self.fat, off);
                if c & 1 == 1 {
                    u32::from(v >> 4)
                } else {
                    u32::from(v & 0xFFF)
                }
            }
            FatType::Fat16 => u32::from(le16(&self.fat, n.saturating_mul(2))),
            FatType::Fat32 => le32(&self.fat, n.saturating_mul(4)) & 0x0FFF_FFFF,
        }
    }

    fn is_eoc(&self, v: u32) -> bool {
        match self.fat_type {
            FatType::Fat12 => v >= 0xFF8,
            FatType::Fat16 => v >= 0xFFF8,
            FatType::Fat32 => v >= 0x0FFF_FFF8,
        }
    }

    /// Cluster chain from `start`, guarded against loops and bad numbers.
    fn chain(&self, start: u32, max_bytes: u64) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut c = start;
        let max_len = u(us(u64::from(self.clusters)));
        let last_valid = self.clusters.saturating_add(1);
        loop {
            if c < 2 || c > last_valid {
                return Err(Error::corrupt(
                    "FAT cluster chain",
                    "next cluster",
                    u64::from(start),
                    format!("2..={last_valid} or end of chain"),
                    c,
                ));
            }
            out.push(c);
            if u(out.len()) > max_len
                || u(out.len()).saturating_mul(self.cluster_size)
                    > max_bytes.saturating_add(self.cluster_size)
            {
                return Err(Error::corrupt_msg(format!(
                    "FAT cluster chain from cluster {start} is longer than its file or loops"
                )));
            }
            let n = self.next(c);
            if self.is_eoc(n) {
                return Ok(out);
            }
            c = n;
        }
    }

    fn read_chain(&self, start: u32, size: u64) -> Result<Vec<u8>> {
        let chain = self.chain(start, size)?;
        let total = u(chain.len()).saturating_mul(self.cluster_size);
        let mut out = crate::bytes::zeroed(total.min(size))?;
        for (i, c) in chain.iter().enumerate() {
            let pos = u(i).saturating_mul(self.cluster_size);
            if pos >= size {
                break;
            }
            let n = self.cluster_size.min(size.saturating_sub(pos));
            let off = self
                .data_start
                .saturating_add(u64::from(c.saturating_sub(2)).saturating_mul(self.cluster_size));
            if let Some(dst) = out.get_mut(us(pos)..us(pos.saturating_add(n))) {
                self.src.read_at(off, dst)?;
            }
        }
        Ok(out)
    }

    fn root_raw(&self) -> Result<Vec<u8>> {
        if self.fat_type == FatType::Fat32 {
            self.read_chain(self.root_cluster, MAX_DIR_BYTES)
        } else {
            let (off, len) = self.root_region;
            let mut b = vec![0u8; us(len.min(MAX_DIR_BYTES))];
            self.src.read_at(off, &mut b)?;
            Ok(b)
        }
    }

    fn parse_dir(&self, raw: &[u8]) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut lfn: Vec<(u8, Vec<u16>)> = Vec::new();
        let mut lfn_sum = 0u8;
        for rec in raw.chunks_exact(32) {
            let first = u8_at(rec, 0);
            if first == 0 {
                break;
            }
            if first == 0xE5 {
                lfn.clear();
                continue;
            }
            let attr = u8_at(rec, 11);
            if attr & 0x3F == 0x0F {
                let seq = first & 0x1F;
                if first & 0x40 != 0 {
                    lfn.clear();
                }
                lfn_sum = u8_at(rec, 13);
                let mut units = Vec::with_capacity(13);
                for (o, n) in [(1usize, 5usize), (14, 6), (28, 2)] {
                    for k in 0..n {
                        units.push(le16(rec, o.saturating_add(k.saturating_mul(2))));
                    }
                }
                lfn.push((seq, units));
                continue;
            }
            if attr & 0x08 != 0 {
                lfn.clear();
                continue;
            }
            let short = sub(rec, 0, 11);
            let name = if !lfn.is_empty() && lfn_checksum(short) == lfn_sum {
                lfn.sort_by_key(|(s, _)| *s);
                let units: Vec<u16> = lfn
                    .iter()
                    .flat_map(|(_, u)| u.iter().copied())
                    .take_while(|&c| c != 0 && c != 0xFFFF)
                    .collect();
                String::from_utf16_lossy(&units)
            } else {
                let nt = u8_at(rec, 12);
                let mut base: Vec<u8> = sub(rec, 0, 8).to_vec();
                if base.first() == Some(&0x05) {
                    if let Some(f) = base.first_mut() {
                        *f = 0xE5;
                    }
                }
                let mut base = String::from_utf8_lossy(&base).trim_end().to_string();
                let mut ext = String::from_utf8_lossy(sub(rec, 8, 3))
                    .trim_end()
                    .to_string();
                if nt & 0x08 != 0 {
                    base = base.to_ascii_lowercase();
                }
                if nt & 0x10 != 0 {
                    ext = ext.to_ascii_lowercase();
                }
                if ext.is_empty() {
                    base
                } else {
                    format!("{base}.{ext}")
                }
            };
            lfn.clear();
            if name == "." || name == ".." {
                continue;
            }
            if out.len() >= MAX_DIR_ENTRIES {
                return Err(Error::corrupt_msg("FAT directory has too many entries"));
            }
            out.push(Entry {
                name,
                attr,
                cluster: (u32::from(le16(rec, 20)) << 16) | u32::from(le16(rec, 26)),
                size: le32(rec, 28),
                mtime: fat_time(le16(rec, 24), le16(rec, 22)),
            });
        }
        Ok(out)
    }

    fn dir_of(&self, e: Option<&Entry>) -> Result<Vec<Entry>> {
        let raw = match e {
            None => self.root_raw()?,
            Some(e) if e.cluster == 0 => self.root_raw()?,
            Some(e) => self.read_chain(e.cluster, MAX_DIR_BYTES)?,
        };
        self.parse_dir(&raw)
    }

    /// `None` for the root; `Some(Some(entry))` when found.
    fn lookup(&self, path: &str) -> Result<Option<Option<Entry>>> {
        let mut cur: Option<Entry> = None;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if cur.as_ref().is_some_and(|e| e.attr & 0x10 == 0) {
                return Ok(None);
            }
            let want = c.to_lowercase();
            let entries = self.dir_of(cur.as_ref())?;
            match entries.into_iter().find(|e| e.name.to_lowercase() == want) {
                Some(e) => cur = Some(e),
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }
}

fn kind(e: Option<&Entry>) -> FileType {
    match e {
        None => FileType::Dir,
        Some(e) if e.attr & 0x10 != 0 => FileType::Dir,
        Some(_) => FileType::File,
    }
}

impl FileSystem for Fat {
    fn kind(&self) -> &'static str {
        "vfat"
    }
    fn uuid(&self) -> Option<String> {
        Some(self.uuid.clone())
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        Ok(self.lookup(path)?.map(|e| Metadata {
            file_type: kind(e.as_ref()),
            size: e.as_ref().map_or(0, |e| u64::from(e.size)),
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: e.as_ref().map_or(0, |e| e.mtime),
            ino: e.as_ref().map_or(0, |e| u64::from(e.cluster)),
        }))
    }
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        match self.lookup(path)? {
            Some(e) if kind(e.as_ref()) == FileType::Dir => Ok(self
                .dir_of(e.as_ref())?
                .into_iter()
                .map(|x| DirEntry {
                    file_type: kind(Some(&x)),
                    ino: u64::from(x.cluster),
                    name: x.name,
                })
                .collect()),
            _ => Err(Error::invalid(format!(
                "{path}: no such directory in the FAT filesystem"
            ))),
        }
    }
    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        match self.lookup(path)? {
            Some(Some(e)) if e.attr & 0x10 == 0 => {
                let size = u64::from(e.size);
                if size > limit {
                    return Err(Error::invalid(format!(
                        "{path} is {size} bytes, more than the {limit}-byte read limit"
                    )));
                }
                if size == 0 {
                    return Ok(Vec::new());
                }
                let data = self.read_chain(e.cluster, size)?;
                if u(data.len()) < size {
                    return Err(Error::corrupt(
                        "FAT directory entry",
                        "DIR_FileSize",
                        u64::from(e.cluster),
                        format!("at most the {} bytes of its cluster chain", data.len()),
                        size,
                    ));
                }
                Ok(data)
            }
            _ => Err(Error::invalid(format!(
                "{path}: no such file in the FAT filesystem"
            ))),
        }
    }
    fn read_link(&self, path: &str) -> Result<String> {
        Err(Error::invalid(format!("{path}: FAT has no symbolic links")))
    }
}
