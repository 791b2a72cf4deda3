//! streamOptimized VMDK: the format AWS VM Import and VMware (OVF/OVA) take.
//!
//! Layout written, following VMware's "Virtual Disk Format 1.1" specification
//! (sections "Hosted Sparse Extent Header" and "Stream-Optimized Compressed
//! Sparse Extents"):
//!
//! ```text
//! sector 0        sparse extent header, gdOffset = GD_AT_END
//! sector 1..21    embedded descriptor (createType="streamOptimized")
//! sector 128..    for every non-zero 64 KiB grain, in LBA order:
//!                   grain marker (lba u64, size u32) + zlib stream, padded to 512
//!                 after the grains of each 512-grain span (32 MiB): a grain
//!                   table marker + that grain table (also when it is empty)
//!                 grain directory marker + grain directory
//!                 footer marker + footer (the header with the real gdOffset)
//!                 end-of-stream marker
//! ```
//!
//! Grain table entries hold the sector of the grain's marker. Zero grains are
//! never compressed or written (entry 0, which reads as zeros). Every grain
//! table is written, even an empty one (2.5 KiB per 32 MiB of disk), because
//! VMware's own writers give every directory entry a table and importers
//! that follow them may not expect a zero directory entry.
//!
//! Grains are compressed (zlib, the spec's `compressAlgorithm` 1) in parallel
//! on rayon workers through [`stream`]; the file is written in order.
//!
//! Determinism: the descriptor's CID is derived from the disk (virtual size
//! and allocation map, hashed with XXH3); there are no timestamps or random
//! values in the format. The extent line names the output file, as VMware does.

use super::output::OutputFile;
use super::stream::{stream, Piece};
use super::{target_size, WriteOptions, WriteReport};
use crate::block::{for_each_window, is_zero, BlockSource, ExtentKind};
use crate::error::{Error, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::Write as _;
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// Sector size of the format.
pub const SECTOR: u64 = 512;
/// `magicNumber`: "KDMV" read as a little-endian u32 (spec: SPARSE_MAGICNUMBER 0x564d444b).
pub const MAGIC: u32 = 0x564d_444b;
/// `version` 3: required for compressed grains with markers (streamOptimized).
pub const VERSION: u32 = 3;
/// `flags`: bit 0 valid new-line detection test, bit 16 compressed grains, bit 17 markers.
pub const FLAGS: u32 = (1 << 0) | (1 << 16) | (1 << 17);
/// `grainSize` in sectors: 128 (64 KiB), the size VMware writes.
pub const GRAIN_SECTORS: u64 = 128;
/// Grain size in bytes.
pub const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// `numGTEsPerGT`: 512 (the spec's fixed value).
pub const GTES_PER_GT: u64 = 512;
/// `gdOffset` in the first header of a stream: the directory is at the end (spec: GD_AT_END).
pub const GD_AT_END: u64 = u64::MAX;
/// `compressAlgorithm`: 1 = deflate (RFC 1950 zlib streams).
pub const COMPRESSION_DEFLATE: u16 = 1;
/// Descriptor location and reserved size in sectors.
pub const DESCRIPTOR_OFFSET: u64 = 1;
/// Sectors reserved for the descriptor (as qemu and VMware reserve).
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// `overHead`: sectors before the first grain (one grain's worth, so grains start aligned).
pub const OVERHEAD_SECTORS: u64 = 128;

/// Marker types (spec: MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER).
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Bytes of the grain marker before the compressed data: lba u64 + size u32.
const GRAIN_MARKER_BYTES: usize = 12;

/// The 512-byte sparse extent header.
pub fn header(capacity_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    h[48..56].copy_from_slice(&0u64.to_le_bytes()); // rgdOffset: no redundant directory
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
    h[72] = 0; // uncleanShutdown
    h[73] = b'\n'; // singleEndLineChar
    h[74] = b' '; // nonEndLineChar
    h[75] = b'\r'; // doubleEndLineChar1
    h[76] = b'\n'; // doubleEndLineChar2
    h[77..79].copy_from_slice(&COMPRESSION_DEFLATE.to_le_bytes());
    h
}

/// A metadata marker sector: `num_sectors` of metadata of `kind` follow.
fn marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    // size (u32 at 8) is 0 for metadata markers.
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// CHS geometry as VMware reports it for a SCSI (lsilogic) disk: 255 heads,
/// 63 sectors per track, cylinders capped at 65535.
fn geometry(capacity_sectors: u64) -> (u64, u64, u64) {
    let heads = 255;
    let sectors = 63;
    let cylinders = capacity_sectors.div_ceil(heads * sectors).clamp(1, 65535);
    (cylinders, heads, sectors)
}

/// The embedded descriptor text.
pub fn descriptor(capacity_sectors: u64, cid: u32, extent_name: &str) -> String {
    let (c, h, s) = geometry(capacity_sectors);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{extent_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{c}\"\n\
         ddb.geometry.heads = \"{h}\"\n\
         ddb.geometry.sectors = \"{s}\"\n\
         ddb.toolsVersion = \"0\"\n"
    )
}

/// The extent file name written in the descriptor: the output's own name,
/// with characters that would break the quoted descriptor value replaced.
fn extent_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk.vmdk".into());
    name.chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect()
}

/// Content ID: XXH3 of the capacity and the allocation map (see module docs).
fn content_id(src: &dyn BlockSource, capacity_sectors: u64) -> Result<u32> {
    let mut h = Xxh3::new();
    h.update(&capacity_sectors.to_le_bytes());
    for_each_window(src, |e| {
        if e.kind == ExtentKind::Data {
            h.update(&e.offset.to_le_bytes());
            h.update(&e.len.to_le_bytes());
        }
        Ok(())
    })?;
    let d = h.digest();
    // Never write the CID VMware reserves for "no parent" (ffffffff).
    let cid = (d as u32) ^ ((d >> 32) as u32);
    Ok(if cid == u32::MAX { 0xfffffffe } else { cid })
}

/// Compress one full grain into a grain record (marker + zlib stream + padding).
fn grain_record(lba: u64, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 512);
    out.extend_from_slice(&lba.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let mut z = ZlibEncoder::new(out, Compression::default());
    z.write_all(data)
        .map_err(|e| Error::io("compress grain", e))?;
    let mut out = z.finish().map_err(|e| Error::io("compress grain", e))?;
    let size = u32::try_from(out.len() - GRAIN_MARKER_BYTES)
        .map_err(|_| Error::invalid("compressed grain too large"))?;
    out[8..12].copy_from_slice(&size.to_le_bytes());
    let padded = out.len().div_ceil(SECTOR as usize) * SECTOR as usize;
    out.resize(padded, 0);
    Ok(out)
}

/// What a worker made of one piece.
enum Done {
    /// A full grain, compressed (or `None`: it was all zeros).
    Grain(Option<Vec<u8>>),
    /// Part of a grain: assembled by the writer thread.
    Partial,
}

/// Writer state: current grain table and the directory built so far.
struct Writer {
    out: OutputFile,
    /// Grain table being filled (index of the table, entries).
    gt_index: u64,
    gt: Vec<u32>,
    /// Grain directory entries (sector of each table, 0 when absent).
    gd: Vec<u32>,
    /// A grain being assembled from partial pieces: (grain index, bytes).
    partial: Option<(u64, Vec<u8>)>,
}

impl Writer {
    fn sector(&self) -> Result<u32> {
        let s = self.out.position() / SECTOR;
        u32::try_from(s).map_err(|_| {
            Error::invalid("streamOptimized VMDK output exceeds 2 TiB of compressed data (32-bit sector offsets)")
        })
    }

    /// Move the table cursor to `gt_index`, flushing finished tables.
    fn seek_table(&mut self, gt_index: u64) -> Result<()> {
        while self.gt_index < gt_index {
            self.flush_table()?;
            self.gt_index += 1;
        }
        Ok(())
    }

    /// Write the current grain table (every table is written, even an empty
    /// one: VMware's own writers give every directory entry a table).
    fn flush_table(&mut self) -> Result<()> {
        self.out
            .write(&marker(GTES_PER_GT * 4 / SECTOR, MARKER_GT))?;
        let at = self.sector()?;
        let mut bytes = Vec::with_capacity(self.gt.len() * 4);
        for e in &self.gt {
            bytes.extend_from_slice(&e.to_le_bytes());
        }
        self.out.write_owned(bytes)?;
        if let Some(slot) = usize::try_from(self.gt_index)
            .ok()
            .and_then(|i| self.gd.get_mut(i))
        {
            *slot = at;
        }
        self.gt.iter_mut().for_each(|e| *e = 0);
        Ok(())
    }

    fn put_grain(&mut self, grain: u64, record: Option<Vec<u8>>) -> Result<()> {
        let Some(record) = record else {
            return Ok(());
        };
        self.seek_table(grain / GTES_PER_GT)?;
        let at = self.sector()?;
        self.gt[(grain % GTES_PER_GT) as usize] = at;
        self.out.write_owned(record)
    }

    fn flush_partial(&mut self) -> Result<()> {
        if let Some((grain, buf)) = self.partial.take() {
            let rec = if is_zero(&buf) {
                None
            } else {
                Some(grain_record(grain * GRAIN_SECTORS, &buf)?)
            };
            self.put_grain(grain, rec)?;
        }
        Ok(())
    }
}

/// Write `src` as a streamOptimized VMDK.
pub fn write(
    src: &dyn BlockSource,
    out: OutputFile,
    path: &Path,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let wanted = target_size(src.size(), opts.size)?;
    let size = wanted.div_ceil(SECTOR) * SECTOR;
    let mut notes = Vec::new();
    if size != wanted {
        notes.push(format!(
            "virtual size rounded up from {wanted} to {size} bytes (VMDK sizes are whole 512-byte sectors)"
        ));
    }
    let capacity = size / SECTOR;
    let grains = size.div_ceil(GRAIN_BYTES);
    let tables = grains.div_ceil(GTES_PER_GT);
    let gd_len = usize::try_from(tables)
        .ok()
        .filter(|&n| (n as u64) * 4 <= crate::limits::MAX_TABLE_BYTES)
        .ok_or_else(|| Error::invalid(format!("disk of {size} bytes is too large for VMDK")))?;
    let cid = content_id(src, capacity)?;
    let src_size = src.size();

    let mut w = Writer {
        out,
        gt_index: 0,
        gt: vec![0u32; GTES_PER_GT as usize],
        gd: vec![0u32; gd_len],
        partial: None,
    };
    w.out.write(&header(capacity, GD_AT_END))?;
    let desc = descriptor(capacity, cid, &extent_name(path));
    let mut desc = desc.into_bytes();
    if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        return Err(Error::invalid("VMDK descriptor too long"));
    }
    desc.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    w.out.write_owned(desc)?;
    w.out
        .skip_zeros((OVERHEAD_SECTORS - DESCRIPTOR_OFFSET - DESCRIPTOR_SECTORS) * SECTOR)?;

    stream(
        src,
        GRAIN_BYTES,
        |offset, buf| {
            let grain = offset / GRAIN_BYTES;
            let full = offset % GRAIN_BYTES == 0
                && (buf.len() as u64 == GRAIN_BYTES
                    || (offset + buf.len() as u64 == src_size && src_size == size));
            if !full {
                return Ok(Done::Partial);
            }
            let data = std::mem::take(buf);
            if is_zero(&data) {
                return Ok(Done::Grain(None));
            }
            let rec = if data.len() as u64 == GRAIN_BYTES {
                grain_record(grain * GRAIN_SECTORS, &data)?
            } else {
                let mut g = data;
                g.resize(GRAIN_BYTES as usize, 0);
                grain_record(grain * GRAIN_SECTORS, &g)?
            };
            Ok(Done::Grain(Some(rec)))
        },
        |p| match p {
            Piece::Data {
                offset,
                buf,
                extra: Done::Grain(rec),
            } => {
                let _ = buf;
                w.flush_partial()?;
                w.put_grain(offset / GRAIN_BYTES, rec)
            }
            Piece::Data {
                offset,
                buf,
                extra: Done::Partial,
            } => {
                let grain = offset / GRAIN_BYTES;
                if w.partial.as_ref().is_some_and(|(g, _)| *g != grain) {
                    w.flush_partial()?;
                }
                let (_, g) = w
                    .partial
                    .get_or_insert_with(|| (grain, vec![0u8; GRAIN_BYTES as usize]));
                let at = (offset % GRAIN_BYTES) as usize;
                g[at..at + buf.len()].copy_from_slice(&buf);
                Ok(())
            }
            Piece::Zero { .. } => Ok(()),
        },
    )?;
    w.flush_partial()?;
    w.seek_table(tables.saturating_sub(1))?;
    if tables > 0 {
        w.flush_table()?;
    }

    let gd_sectors = (tables * 4).div_ceil(SECTOR);
    w.out.write(&marker(gd_sectors, MARKER_GD))?;
    let gd_offset = u64::from(w.sector()?);
    let mut gd = Vec::with_capacity((gd_sectors * SECTOR) as usize);
    for e in &w.gd {
        gd.extend_from_slice(&e.to_le_bytes());
    }
    gd.resize((gd_sectors * SECTOR) as usize, 0);
    w.out.write_owned(gd)?;
    w.out.write(&marker(1, MARKER_FOOTER))?;
    w.out.write(&header(capacity, gd_offset))?;
    w.out.write(&marker(0, MARKER_EOS))?;
    let output = w.out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = header(2048, GD_AT_END);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes(h[8..12].try_into().unwrap()), 0x30001);
        assert_eq!(u64::from_le_bytes(h[56..64].try_into().unwrap()), u64::MAX);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes(h[77..79].try_into().unwrap()), 1);
    }

    #[test]
    fn grain_record_is_padded_and_sized() {
        let data = vec![7u8; GRAIN_BYTES as usize];
        let r = grain_record(128, &data).unwrap();
        assert_eq!(r.len() % 512, 0);
        assert_eq!(u64::from_le_bytes(r[0..8].try_into().unwrap()), 128);
        let n = u32::from_le_bytes(r[8..12].try_into().unwrap()) as usize;
        let mut d = flate2::read::ZlibDecoder::new(&r[12..12 + n]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut back).unwrap();
        assert_eq!(back, data);
    }
}
