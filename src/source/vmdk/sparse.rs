//! The hosted sparse extent (VMware "Virtual Disk Format 1.1", section
//! "Hosted Sparse Extents"): a 512-byte little-endian header (`KDMV`), an
//! optional embedded descriptor, a grain directory (GD) of u32 sector offsets
//! of grain tables (GT), and grain tables of u32 sector offsets of grains.
//!
//! GT entry 0 is an unallocated grain (reads from the parent, else zeros);
//! entry 1 with the zeroed-grain flag (bit 2) reads as zeros. In compressed
//! extents (streamOptimized) entries point at grain markers (see
//! [`super::stream`]).

use super::stream;
use crate::block::check_range;
use crate::error::{Error, Result};
use crate::limits::{
    MAX_HEADER_BYTES, MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE, MAX_VMDK_COMPRESSED_GRAIN_BYTES,
    MAX_VMDK_GRAIN_SECTORS, MAX_VMDK_GTES_PER_GT,
};
use crate::source::range::FileRange;

/// `magicNumber`: "KDMV" read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
/// Header size (spec: the header fills sector 0).
pub const HEADER_SIZE: usize = 512;
/// `gdOffset` of a streamOptimized header whose real values are in the footer.
pub const GD_AT_END: u64 = u64::MAX;
/// flags bit 0: the newline-detection bytes are valid.
pub const FLAG_NL_DETECT: u32 = 1;
/// flags bit 1: a redundant grain directory exists.
pub const FLAG_RGD: u32 = 1 << 1;
/// flags bit 2: GT entry 1 means "zeroed grain".
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// flags bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// flags bit 17: the extent has metadata markers.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// `compressAlgorithm` 1: deflate (zlib stream, RFC 1950).
pub const COMPRESSION_DEFLATE: u16 = 1;
/// Sector size all VMDK offsets count in.
pub const SECTOR: u64 = 512;

/// A parsed sparse header; field names follow the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// `version` (1, 2 or 3).
    pub version: u32,
    /// `flags`.
    pub flags: u32,
    /// `capacity` in sectors.
    pub capacity: u64,
    /// `grainSize` in sectors.
    pub grain_size: u64,
    /// `descriptorOffset` in sectors.
    pub descriptor_offset: u64,
    /// `descriptorSize` in sectors.
    pub descriptor_size: u64,
    /// `numGTEsPerGT`.
    pub num_gtes_per_gt: u32,
    /// `rgdOffset` in sectors.
    pub rgd_offset: u64,
    /// `gdOffset` in sectors.
    pub gd_offset: u64,
    /// `overHead` in sectors.
    pub overhead: u64,
    /// `uncleanShutdown`.
    pub unclean_shutdown: bool,
    /// singleEndLineChar, nonEndLineChar, doubleEndLineChar1, doubleEndLineChar2.
    pub check_bytes: [u8; 4],
    /// `compressAlgorithm`.
    pub compress_algorithm: u16,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = at.checked_add(4).and_then(|e| b.get(at..e)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = at.checked_add(8).and_then(|e| b.get(at..e)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl SparseHeader {
    /// Parse a header found at byte `at` of the file (for error offsets).
    /// Checks magic and version only; see [`SparseHeader::validate`].
    pub fn parse(b: &[u8; HEADER_SIZE], at: u64) -> Result<Self> {
        let magic = le32(b, 0);
        if magic != MAGIC {
            return Err(Error::corrupt(
                "VMDK sparse header",
                "magicNumber",
                at,
                format!("{MAGIC:#010x} (\"KDMV\")"),
                format!("{magic:#010x}"),
            ));
        }
        let version = le32(b, 4);
        if !(1..=3).contains(&version) {
            return Err(Error::corrupt(
                "VMDK sparse header",
                "version",
                at.saturating_add(4),
                "1, 2 or 3",
                version,
            ));
        }
        let mut check_bytes = [0u8; 4];
        check_bytes.copy_from_slice(b.get(73..77).unwrap_or(&[0; 4]));
        Ok(SparseHeader {
            version,
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_size: le64(b, 20),
            descriptor_offset: le64(b, 28),
            descriptor_size: le64(b, 36),
            num_gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            unclean_shutdown: b.get(72).is_some_and(|&x| x != 0),
            check_bytes,
            compress_algorithm: u16::from_le_bytes([
                b.get(77).copied().unwrap_or(0),
                b.get(78).copied().unwrap_or(0),
            ]),
        })
    }

    /// Check every field the reader relies on against the spec and limits.
    pub fn validate(&self, at: u64) -> Result<()> {
        let field = |name: &str, off: u64, expected: String, found: String| {
            Err(Error::corrupt(
                "VMDK sparse header",
                name,
                at.saturating_add(off),
                expected,
                found,
            ))
        };
        if self.flags & FLAG_NL_DETECT != 0 && self.check_bytes != *b"\n \r\n" {
            return field(
                "singleEndLineChar..doubleEndLineChar2",
                73,
                "0a 20 0d 0a (damaged by a text-mode transfer?)".into(),
                format!("{:02x?}", self.check_bytes),
            );
        }
        if self.grain_size == 0
            || !self.grain_size.is_power_of_two()
            || self.grain_size > MAX_VMDK_GRAIN_SECTORS
        {
            return field(
                "grainSize",
                20,
                format!("a power of two from 1 to {MAX_VMDK_GRAIN_SECTORS} sectors"),
                self.grain_size.to_string(),
            );
        }
        if self.num_gtes_per_gt == 0 || self.num_gtes_per_gt > MAX_VMDK_GTES_PER_GT {
            return field(
                "numGTEsPerGT",
                44,
                format!("1 to {MAX_VMDK_GTES_PER_GT}"),
                self.num_gtes_per_gt.to_string(),
            );
        }
        let max_sectors = MAX_VIRTUAL_SIZE / SECTOR;
        if self.capacity > max_sectors {
            return field(
                "capacity",
                12,
                format!("at most {max_sectors} sectors"),
                self.capacity.to_string(),
            );
        }
        if self.compressed() {
            if self.compress_algorithm != COMPRESSION_DEFLATE {
                return field(
                    "compressAlgorithm",
                    77,
                    "1 (deflate) when grains are compressed".into(),
                    self.compress_algorithm.to_string(),
                );
            }
            let gb = self.grain_size.saturating_mul(SECTOR);
            if gb > MAX_VMDK_COMPRESSED_GRAIN_BYTES {
                return field(
                    "grainSize",
                    20,
                    format!(
                        "at most {} sectors in a compressed extent",
                        MAX_VMDK_COMPRESSED_GRAIN_BYTES / SECTOR
                    ),
                    self.grain_size.to_string(),
                );
            }
        } else if self.compress_algorithm > COMPRESSION_DEFLATE {
            return field(
                "compressAlgorithm",
                77,
                "0 or 1".into(),
                self.compress_algorithm.to_string(),
            );
        }
        Ok(())
    }

    /// Grains are compressed (flags bit 16).
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
}

/// A loaded grain table: its byte offset and entries.
type Table = (u64, Vec<u32>);

/// What a grain table entry says about one grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Not allocated here: the parent's bytes, else zeros.
    Unalloc,
    /// Explicitly zero.
    Zero,
    /// Stored as is at this byte offset of the extent file.
    Data(u64),
    /// A grain marker + compressed data at this byte offset.
    Compressed(u64),
}

/// An open hosted sparse extent.
#[derive(Debug)]
pub struct SparseExtent {
    range: FileRange,
    /// The header in force (the footer's for streamOptimized).
    pub header: SparseHeader,
    /// Where that header lies in the file.
    pub header_at: u64,
    /// The embedded descriptor, if any.
    pub descriptor: Option<Vec<u8>>,
    gd: Vec<u32>,
    gd_at: u64,
    grain_bytes: u64,
    gt_span: u64,
    size: u64,
}

impl SparseExtent {
    /// Open a sparse extent held in `range`.
    pub fn open(range: FileRange) -> Result<Self> {
        let mut b = [0u8; HEADER_SIZE];
        range.read_exact_at(0, &mut b, "VMDK sparse header")?;
        let first = SparseHeader::parse(&b, 0)?;
        let (header, header_at) = if first.gd_offset == GD_AT_END {
            stream::read_footer(&range)?
        } else {
            (first.clone(), 0)
        };
        header.validate(header_at)?;
        let grain_bytes = header.grain_size.saturating_mul(SECTOR);
        let gt_span = grain_bytes.saturating_mul(u64::from(header.num_gtes_per_gt));
        let size = header.capacity.saturating_mul(SECTOR);
        let descriptor = read_embedded_descriptor(&range, &first)?;

        let gd_entries = size.div_ceil(gt_span);
        let gd_bytes = gd_entries.saturating_mul(4);
        if gd_bytes > MAX_TABLE_BYTES {
            return Err(Error::corrupt(
                "VMDK sparse header",
                "capacity",
                header_at.saturating_add(12),
                format!(
                    "a grain directory of at most {MAX_TABLE_BYTES} bytes \
                     (capacity / (grainSize * numGTEsPerGT) entries)"
                ),
                format!("{} sectors needing {gd_bytes} bytes", header.capacity),
            ));
        }
        let gd_at = header.gd_offset.checked_mul(SECTOR).ok_or_else(|| {
            Error::corrupt(
                "VMDK sparse header",
                "gdOffset",
                header_at.saturating_add(56),
                "a sector offset inside the file",
                header.gd_offset,
            )
        })?;
        let mut raw = vec![0u8; usize::try_from(gd_bytes).unwrap_or(0)];
        if gd_at.checked_add(gd_bytes).is_none_or(|e| e > range.len()) {
            return Err(Error::corrupt(
                "VMDK sparse header",
                "gdOffset",
                header_at.saturating_add(56),
                format!(
                    "a grain directory of {gd_bytes} bytes inside the {}-byte file",
                    range.len()
                ),
                format!("sector {}", header.gd_offset),
            ));
        }
        range.read_exact_at(gd_at, &mut raw, "VMDK grain directory")?;
        let gd: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        let gt_bytes = u64::from(header.num_gtes_per_gt).saturating_mul(4);
        for (i, &e) in gd.iter().enumerate() {
            let at = gd_at.saturating_add(u64::try_from(i).unwrap_or(0).saturating_mul(4));
            let end = u64::from(e).saturating_mul(SECTOR).saturating_add(gt_bytes);
            if e != 0 && end > range.len() {
                return Err(Error::corrupt(
                    "VMDK grain directory",
                    format!("entry {i}"),
                    at,
                    format!("a grain table inside the {}-byte file", range.len()),
                    format!("sector {e} (grain table ends at byte {end})"),
                ));
            }
        }
        Ok(SparseExtent {
            range,
            header,
            header_at,
            descriptor,
            gd,
            gd_at,
            grain_bytes,
            gt_span,
            size,
        })
    }

    /// Virtual size (capacity) in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_bytes
    }

    /// The grain table `gdi`, or None when its GD entry is 0 (all unallocated).
    fn table(&self, gdi: usize) -> Result<Option<Table>> {
        let e = match self.gd.get(gdi) {
            Some(&0) | None => return Ok(None),
            Some(&e) => e,
        };
        let at = u64::from(e).saturating_mul(SECTOR);
        let n = usize::try_from(self.header.num_gtes_per_gt).unwrap_or(0);
        let mut raw = vec![0u8; n.saturating_mul(4)];
        self.range.read_exact_at(at, &mut raw, "VMDK grain table")?;
        Ok(Some((
            at,
            raw.chunks_exact(4).map(|c| le32(c, 0)).collect(),
        )))
    }

    /// Decode GT entry `idx` of the table at `gt_at` for grain starting at `vstart`.
    fn grain(&self, gt_at: u64, idx: usize, entry: u32, vstart: u64) -> Result<Grain> {
        if entry == 0 {
            return Ok(Grain::Unalloc);
        }
        if entry == 1 && self.header.flags & FLAG_ZERO_GRAIN != 0 {
            return Ok(Grain::Zero);
        }
        let off = u64::from(entry).saturating_mul(SECTOR);
        let need = if self.header.compressed() {
            stream::MARKER_HEADER_BYTES
        } else {
            self.grain_bytes.min(self.size.saturating_sub(vstart))
        };
        let end = off.saturating_add(need);
        if end > self.range.len() {
            return Err(Error::corrupt(
                "VMDK grain table",
                format!("entry {idx}"),
                gt_at.saturating_add(u64::try_from(idx).unwrap_or(0).saturating_mul(4)),
                format!("a grain inside the {}-byte file", self.range.len()),
                format!("sector {entry} (grain ends at byte {end})"),
            ));
        }
        Ok(if self.header.compressed() {
            Grain::Compressed(off)
        } else {
            Grain::Data(off)
        })
    }

    /// Walk `[offset, offset+len)` grain by grain: `f(start, len, grain)` with
    /// runs inside one grain each.
    pub fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, Grain) -> Result<()>,
    ) -> Result<()> {
        check_range(self.size, offset, len)?;
        let end = offset.saturating_add(len);
        let mut pos = offset;
        let mut cached: Option<(usize, Option<Table>)> = None;
        while pos < end {
            let gdi =
                usize::try_from(pos.checked_div(self.gt_span).unwrap_or(0)).unwrap_or(usize::MAX);
            if cached.as_ref().is_none_or(|(i, _)| *i != gdi) {
                cached = Some((gdi, self.table(gdi)?));
            }
            let table = cached.as_ref().and_then(|(_, t)| t.as_ref());
            let Some((gt_at, gt)) = table else {
                // Whole grain table unallocated.
                let next = pos
                    .saturating_sub(pos.checked_rem(self.gt_span).unwrap_or(0))
                    .saturating_add(self.gt_span)
                    .min(end);
                f(pos, next.saturating_sub(pos), Grain::Unalloc)?;
                pos = next;
                continue;
            };
            let in_gt = pos.checked_rem(self.gt_span).unwrap_or(0);
            let idx = usize::try_from(in_gt.checked_div(self.grain_bytes).unwrap_or(0))
                .unwrap_or(usize::MAX);
            let vstart = pos.saturating_sub(pos.checked_rem(self.grain_bytes).unwrap_or(0));
            let entry = gt.get(idx).copied().unwrap_or(0);
            let g = self.grain(*gt_at, idx, entry, vstart)?;
            let next = vstart.saturating_add(self.grain_bytes).min(end);
            f(pos, next.saturating_sub(pos), g)?;
            pos = next;
        }
        Ok(())
    }

    /// Read `buf` at `offset`; unallocated runs are zero-filled and reported
    /// to `unalloc(offset, buf)` so a parent can fill them.
    pub fn read(
        &self,
        offset: u64,
        buf: &mut [u8],
        unalloc: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let mut scratch: Option<(u64, Vec<u8>)> = None;
        self.walk(offset, len, |pos, n, g| {
            let from = usize::try_from(pos.saturating_sub(offset)).unwrap_or(usize::MAX);
            let to = from.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            let out = buf
                .get_mut(from..to)
                .ok_or_else(|| Error::invalid("VMDK read: internal range error".to_string()))?;
            let within = pos.checked_rem(self.grain_bytes).unwrap_or(0);
            match g {
                Grain::Zero => out.fill(0),
                Grain::Unalloc => {
                    out.fill(0);
                    unalloc(pos, out)?;
                }
                Grain::Data(at) => {
                    self.range
                        .read_exact_at(at.saturating_add(within), out, "VMDK grain")?;
                }
                Grain::Compressed(at) => {
                    let vstart = pos.saturating_sub(within);
                    if scratch.as_ref().is_none_or(|(a, _)| *a != at) {
                        let mut g = vec![0u8; usize::try_from(self.grain_bytes).unwrap_or(0)];
                        stream::read_grain(&self.range, at, vstart / SECTOR, &mut g)?;
                        scratch = Some((at, g));
                    }
                    let w = usize::try_from(within).unwrap_or(usize::MAX);
                    let src = scratch
                        .as_ref()
                        .and_then(|(_, g)| g.get(w..w.saturating_add(out.len())))
                        .ok_or_else(|| {
                            Error::invalid("VMDK read: internal grain range error".to_string())
                        })?;
                    out.copy_from_slice(src);
                }
            }
            Ok(())
        })
    }

    /// Byte offset of the grain directory.
    pub fn gd_at(&self) -> u64 {
        self.gd_at
    }
}

/// The descriptor embedded in a sparse extent (descriptorOffset/Size of the
/// first header), bounded by [`MAX_HEADER_BYTES`].
fn read_embedded_descriptor(range: &FileRange, h: &SparseHeader) -> Result<Option<Vec<u8>>> {
    if h.descriptor_offset == 0 || h.descriptor_size == 0 {
        return Ok(None);
    }
    let bytes = h.descriptor_size.saturating_mul(SECTOR);
    if bytes > MAX_HEADER_BYTES {
        return Err(Error::corrupt(
            "VMDK sparse header",
            "descriptorSize",
            36,
            format!("at most {} sectors", MAX_HEADER_BYTES / SECTOR),
            h.descriptor_size,
        ));
    }
    let at = h.descriptor_offset.saturating_mul(SECTOR);
    if at.checked_add(bytes).is_none_or(|e| e > range.len()) {
        return Err(Error::corrupt(
            "VMDK sparse header",
            "descriptorOffset",
            28,
            format!("a descriptor inside the {}-byte file", range.len()),
            format!(
                "sector {} + {} sectors",
                h.descriptor_offset, h.descriptor_size
            ),
        ));
    }
    let mut v = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
    range.read_exact_at(at, &mut v, "VMDK embedded descriptor")?;
    Ok(Some(v))
}

impl SparseExtent {
    /// The extent file's path.
    pub fn path(&self) -> &std::path::Path {
        self.range.path()
    }
}
