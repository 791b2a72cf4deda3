//! NTFS, read-only, through Colin Finck's `ntfs` crate (MIT OR Apache-2.0).
//!
//! The crate parses the boot sector, MFT records (with their update sequence
//! arrays), attributes (resident, non-resident with data runs, sparse runs,
//! attribute lists) and `$I30` index B-trees; it reads through `Read + Seek`.
//! [`BlockReader`] is the adapter at that edge: a short-lived cursor of its own
//! over a positional [`BlockSource`], so the source itself holds no shared
//! position and a [`NtfsFs`] can serve several threads.
//!
//! What this module adds on top, because image bytes are hostile:
//! - directory walks iterate the index with a count bound
//!   ([`limits::MAX_NTFS_INDEX_ENTRIES`]) instead of the crate's B-tree
//!   descent, so a cyclic index cannot loop forever; lookups are
//!   case-insensitive (upper-cased names, as Windows compares them);
//! - file reads check the `$DATA` length against the caller's limit before
//!   allocating;
//! - compressed `$DATA` (the crate returns raw clusters) is decompressed here
//!   ([`lznt1`]); EFS-encrypted data is refused clearly;
//! - reparse points (symbolic links, junctions) are reported as
//!   [`FileType::Symlink`] with a target rewritten into this volume (`C:\x` ->
//!   `/x`); targets on other volumes are refused; other reparse tags (dedup,
//!   WOF, cloud files) are [`FileType::Other`] — never followed;
//! - a panic inside the crate on malformed input is caught at this boundary
//!   and reported as corruption (defence in depth: the crate forbids unsafe
//!   code and validates most fields, but it indexes slices).
//!
//! On-disk layout: NTFS boot sector OEM id "NTFS    " at byte 3; MFT record 5
//! is the root directory (see the crate's documentation and the NTFS
//! documentation of the Linux-NTFS project).
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod lznt1;
pub mod write;

use super::{DirEntry, FileSystem, FileType, Metadata};
use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::limits;
use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsFile, NtfsReadSeek};
use std::io::{Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// OEM id at byte 3 of an NTFS boot sector.
pub const OEM_ID: &[u8; 8] = b"NTFS    ";
/// MFT record number of the root directory.
pub const ROOT_RECORD: u64 = 5;
/// Reparse tag of a symbolic link (IO_REPARSE_TAG_SYMLINK, [MS-FSCC] 2.1.2.1).
pub const TAG_SYMLINK: u32 = 0xA000_000C;
/// Reparse tag of a junction / mount point (IO_REPARSE_TAG_MOUNT_POINT).
pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;

/// `Read + Seek` over a positional [`BlockSource`], with its own position.
pub struct BlockReader<'a> {
    src: &'a dyn BlockSource,
    pos: u64,
}

impl<'a> BlockReader<'a> {
    /// A reader at offset 0.
    pub fn new(src: &'a dyn BlockSource) -> Self {
        BlockReader { src, pos: 0 }
    }
}

impl Read for BlockReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.src.size();
        if self.pos >= size {
            return Ok(0);
        }
        let left = size.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let part = buf.get_mut(..n).unwrap_or_default();
        self.src
            .read_at(self.pos, part)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos = self
            .pos
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        Ok(n)
    }
}

impl Seek for BlockReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.src.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the volume",
            )),
        }
    }
}

/// An NTFS volume.
pub struct NtfsFs {
    src: Arc<dyn BlockSource>,
    ntfs: Ntfs,
    label: Option<String>,
    serial: u64,
}

fn ntfs_err(what: &str, e: ntfs::NtfsError) -> Error {
    match e {
        ntfs::NtfsError::Io(io) => Error::io(format!("NTFS: {what}"), io),
        other => Error::corrupt_msg(format!("NTFS: {what}: {other}")),
    }
}

/// Run `f`, turning a panic inside the ntfs crate into a corruption error.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::corrupt_msg(format!(
            "NTFS: {what}: malformed structure (the NTFS parser rejected it)"
        ))),
    }
}

/// `Ok(Some(fs))` if `src` holds an NTFS boot sector, `Ok(None)` if not.
pub fn probe(src: Arc<dyn BlockSource>) -> Result<Option<Box<dyn FileSystem>>> {
    if src.size() < 512 {
        return Ok(None);
    }
    let mut b = [0u8; 11];
    src.read_at(0, &mut b)?;
    if b.get(3..11) != Some(&OEM_ID[..]) {
        return Ok(None);
    }
    Ok(Some(Box::new(NtfsFs::open(src)?)))
}

/// A directory entry as read from an index: name, record, namespace, flags.
struct IndexItem {
    name: String,
    record: u64,
    dos_only: bool,
    is_dir: bool,
}

fn filetime_to_unix(t: u64) -> i64 {
    // FILETIME counts 100 ns since 1601-01-01; 11644473600 s to 1970.
    let secs = i64::try_from(t.checked_div(10_000_000).unwrap_or(0)).unwrap_or(i64::MAX);
    secs.saturating_sub(11_644_473_600)
}

impl NtfsFs {
    /// Open the volume: boot sector, MFT, `$UpCase`, volume name.
    pub fn open(src: Arc<dyn BlockSource>) -> Result<Self> {
        guard("opening the volume", || {
            let mut r = BlockReader::new(&*src);
            let mut ntfs = Ntfs::new(&mut r).map_err(|e| ntfs_err("boot sector", e))?;
            ntfs.read_upcase_table(&mut r)
                .map_err(|e| ntfs_err("$UpCase", e))?;
            let label = match ntfs.volume_name(&mut r) {
                Some(Ok(n)) => Some(n.name().to_string_lossy()),
                _ => None,
            };
            let serial = ntfs.serial_number();
            // The root directory must be readable.
            let root = ntfs
                .file(&mut r, ROOT_RECORD)
                .map_err(|e| ntfs_err("root directory record", e))?;
            if !root.is_directory() {
                return Err(Error::corrupt_msg(
                    "NTFS: MFT record 5 (root directory) is not a directory",
                ));
            }
            drop(root);
            Ok(NtfsFs {
                src: src.clone(),
                ntfs,
                label,
                serial,
            })
        })
    }

    fn reader(&self) -> BlockReader<'_> {
        BlockReader::new(&*self.src)
    }

    fn file(&self, r: &mut BlockReader<'_>, record: u64) -> Result<NtfsFile<'_>> {
        self.ntfs
            .file(r, record)
            .map_err(|e| ntfs_err(&format!("MFT record {record}"), e))
    }

    /// Entries of the directory at `record`, bounded.
    fn index_items(&self, r: &mut BlockReader<'_>, record: u64) -> Result<Vec<IndexItem>> {
        let dir = self.file(r, record)?;
        let index = dir
            .directory_index(r)
            .map_err(|e| ntfs_err(&format!("$I30 index of MFT record {record}"), e))?;
        let mut it = index.entries();
        let mut out = Vec::new();
        let mut seen = 0usize;
        while let Some(e) = it.next(r) {
            let e = e.map_err(|e| ntfs_err(&format!("$I30 entry of MFT record {record}"), e))?;
            seen = seen.saturating_add(1);
            if seen > limits::MAX_NTFS_INDEX_ENTRIES {
                return Err(Error::corrupt_msg(format!(
                    "NTFS: $I30 index of MFT record {record} has more than {} entries (or loops)",
                    limits::MAX_NTFS_INDEX_ENTRIES
                )));
            }
            let Some(key) = e.key() else { continue };
            let key = key.map_err(|e| ntfs_err(&format!("$I30 key in MFT record {record}"), e))?;
            out.push(IndexItem {
                name: key.name().to_string_lossy(),
                record: e.file_reference().file_record_number(),
                dos_only: key.namespace() == NtfsFileNamespace::Dos,
                is_dir: key.is_directory(),
            });
        }
        Ok(out)
    }

    /// MFT record of `path`, or None.
    fn lookup(&self, r: &mut BlockReader<'_>, path: &str) -> Result<Option<u64>> {
        let mut rec = ROOT_RECORD;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let want = comp.to_uppercase();
            let items = self.index_items(r, rec)?;
            match items.iter().find(|i| i.name.to_uppercase() == want) {
                Some(i) => rec = i.record,
                None => return Ok(None),
            }
            if rec < 16 && rec != ROOT_RECORD && !comp.starts_with('$') {
                return Err(Error::corrupt_msg(format!(
                    "NTFS: directory entry {comp:?} points at system MFT record {rec}"
                )));
            }
        }
        Ok(Some(rec))
    }

    fn lookup_required(&self, r: &mut BlockReader<'_>, path: &str) -> Result<u64> {
        self.lookup(r, path)?
            .ok_or_else(|| Error::invalid(format!("NTFS: no such file: {path}")))
    }

    fn reparse_tag_and_data(
        &self,
        r: &mut BlockReader<'_>,
        f: &NtfsFile<'_>,
    ) -> Result<Option<(u32, Vec<u8>)>> {
        let mut attrs = f.attributes();
        while let Some(item) = attrs.next(r) {
            let item = item.map_err(|e| ntfs_err("attribute", e))?;
            let a = item.to_attribute().map_err(|e| ntfs_err("attribute", e))?;
            if a.ty().map_err(|e| ntfs_err("attribute type", e))? != NtfsAttributeType::ReparsePoint
            {
                continue;
            }
            let len = a.value_length();
            if len > 16 * 1024 {
                return Err(Error::corrupt_msg(format!(
                    "NTFS: $REPARSE_POINT of {len} bytes (at most 16384)"
                )));
            }
            let mut v = a.value(r).map_err(|e| ntfs_err("$REPARSE_POINT", e))?;
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            v.read_exact(r, &mut buf)
                .map_err(|e| ntfs_err("$REPARSE_POINT", e))?;
            let tag = buf
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .unwrap_or(0);
            return Ok(Some((tag, buf)));
        }
        Ok(None)
    }

    fn kind_of(&self, r: &mut BlockReader<'_>, f: &NtfsFile<'_>) -> Result<FileType> {
        let info = f.info().map_err(|e| ntfs_err("$STANDARD_INFORMATION", e))?;
        if info
            .file_attributes()
            .contains(NtfsFileAttributeFlags::REPARSE_POINT)
        {
            return Ok(match self.reparse_tag_and_data(r, f)? {
                Some((TAG_SYMLINK | TAG_MOUNT_POINT, _)) => FileType::Symlink,
                Some(_) if f.is_directory() => FileType::Dir,
                _ => FileType::Other,
            });
        }
        Ok(if f.is_directory() {
            FileType::Dir
        } else {
            FileType::File
        })
    }

    /// Read a compressed `$DATA` of `len` bytes: compression units of 16
    /// clusters, each raw, sparse or LZNT1 (see [`lznt1`]).
    fn read_compressed(
        &self,
        v: NtfsAttributeValue<'_, '_>,
        len: u64,
        path: &str,
    ) -> Result<Vec<u8>> {
        let NtfsAttributeValue::NonResident(v) = v else {
            return Err(Error::unsupported(format!(
                "NTFS: {path} is compressed and split over several MFT records (attribute list); not supported"
            )));
        };
        let cs = u64::from(self.ntfs.cluster_size());
        if cs > 4096 {
            return Err(Error::corrupt_msg(format!(
                "NTFS: {path} is compressed on a volume with {cs}-byte clusters (NTFS compresses only with clusters up to 4096 bytes)"
            )));
        }
        let unit_clusters: u64 = 16;
        let unit = cs.saturating_mul(unit_clusters);
        let units = len.div_ceil(unit.max(1));
        let total_clusters = units.saturating_mul(unit_clusters);
        // Position of every cluster of the value (None: sparse), bounded by `len`.
        let mut clusters: Vec<Option<u64>> = Vec::new();
        for run in v.data_runs() {
            let run = run.map_err(|e| ntfs_err(&format!("data runs of {path}"), e))?;
            let n = run.allocated_size().checked_div(cs).unwrap_or(0);
            let pos = run.data_position().value().map(u64::from);
            for i in 0..n {
                if u64::try_from(clusters.len()).unwrap_or(u64::MAX) >= total_clusters {
                    break;
                }
                clusters.push(pos.map(|p| p.saturating_add(i.saturating_mul(cs))));
            }
        }
        let mapped = u64::try_from(clusters.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(cs);
        if mapped < len {
            return Err(Error::corrupt_msg(format!(
                "NTFS: $DATA of {path}: data size {len} exceeds the {mapped} bytes its data runs map"
            )));
        }
        clusters.resize(
            usize::try_from(total_clusters).map_err(|_| Error::invalid("file too large"))?,
            None,
        );
        let unit_len = usize::try_from(unit).unwrap_or(0);
        let cs_len = usize::try_from(cs).unwrap_or(0);
        let mut out: Vec<u8> = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for u in clusters.chunks(usize::try_from(unit_clusters).unwrap_or(16)) {
            // Allocated clusters come first in a unit; the rest is sparse.
            let allocated: Vec<u64> = u.iter().map_while(|c| *c).collect();
            if u.iter().skip(allocated.len()).any(Option::is_some) {
                return Err(Error::corrupt_msg(format!(
                    "NTFS: a compression unit of {path} has data after a hole"
                )));
            }
            let mut raw = vec![0u8; allocated.len().saturating_mul(cs_len)];
            for (c, pos) in raw.chunks_mut(cs_len.max(1)).zip(&allocated) {
                self.src.read_at(*pos, c)?;
            }
            if allocated.len() == u.len() {
                out.extend_from_slice(&raw);
            } else if allocated.is_empty() {
                out.resize(out.len().saturating_add(unit_len), 0);
            } else {
                out.extend(lznt1::decompress_unit(&raw, unit_len)?);
            }
        }
        out.truncate(usize::try_from(len).unwrap_or(0));
        Ok(out)
    }

    fn data_len(&self, r: &mut BlockReader<'_>, f: &NtfsFile<'_>) -> Result<Option<u64>> {
        match f.data(r, "") {
            None => Ok(None),
            Some(item) => {
                let item = item.map_err(|e| ntfs_err("$DATA", e))?;
                let a = item.to_attribute().map_err(|e| ntfs_err("$DATA", e))?;
                Ok(Some(a.value_length()))
            }
        }
    }
}

/// Parse a symlink / mount point reparse buffer ([MS-FSCC] 2.1.2.4, 2.1.2.5)
/// into a path inside this volume.
fn reparse_target(tag: u32, d: &[u8]) -> Result<String> {
    let u16_at = |o: usize| -> Option<usize> {
        d.get(o..o.checked_add(2)?)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(|b| usize::from(u16::from_le_bytes(b)))
    };
    let bad = || Error::corrupt_msg("NTFS: malformed reparse point buffer".to_string());
    let (base, relative) = match tag {
        TAG_SYMLINK => {
            let flags = d
                .get(16..20)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(bad)?;
            (20usize, flags & 1 != 0)
        }
        TAG_MOUNT_POINT => (16usize, false),
        _ => {
            return Err(Error::unsupported(format!(
                "NTFS: reparse tag {tag:#010x} is not a link"
            )))
        }
    };
    // Prefer the print name, fall back to the substitute name.
    let (so, sl, po, pl) = (
        u16_at(8).ok_or_else(bad)?,
        u16_at(10).ok_or_else(bad)?,
        u16_at(12).ok_or_else(bad)?,
        u16_at(14).ok_or_else(bad)?,
    );
    let get = |o: usize, l: usize| -> Option<String> {
        let s = base.checked_add(o)?;
        let b = d.get(s..s.checked_add(l)?)?;
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        Some(String::from_utf16_lossy(&units))
    };
    let name = match get(po, pl).filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => get(so, sl).ok_or_else(bad)?,
    };
    if relative {
        return Ok(name.replace('\\', "/"));
    }
    let n = name
        .strip_prefix("\\??\\")
        .or_else(|| name.strip_prefix("\\\\?\\"))
        .unwrap_or(&name);
    // Drive-letter paths are re-rooted at this volume's root.
    let mut chars = n.chars();
    match (chars.next(), chars.next(), chars.next()) {
        (Some(l), Some(':'), Some('\\') | None) if l.is_ascii_alphabetic() => {
            let rest = n.get(2..).unwrap_or("");
            let p = rest.replace('\\', "/");
            Ok(if p.is_empty() { "/".to_string() } else { p })
        }
        _ => Err(Error::unsupported(format!(
            "NTFS: link target {name:?} lies outside this volume"
        ))),
    }
}

impl FileSystem for NtfsFs {
    fn kind(&self) -> &'static str {
        "ntfs"
    }

    fn uuid(&self) -> Option<String> {
        // blkid prints the 64-bit volume serial number as 16 hex digits.
        Some(format!("{:016X}", self.serial))
    }

    fn label(&self) -> Option<String> {
        self.label.clone().filter(|l| !l.is_empty())
    }

    fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        guard(&format!("stat {path}"), || {
            let mut r = self.reader();
            let Some(rec) = self.lookup(&mut r, path)? else {
                return Ok(None);
            };
            let f = self.file(&mut r, rec)?;
            let file_type = self.kind_of(&mut r, &f)?;
            let info = f.info().map_err(|e| ntfs_err("$STANDARD_INFORMATION", e))?;
            let size = if file_type == FileType::File {
                self.data_len(&mut r, &f)?.unwrap_or(0)
            } else {
                0
            };
            Ok(Some(Metadata {
                file_type,
                size,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: filetime_to_unix(info.modification_time().nt_timestamp()),
                ino: rec,
            }))
        })
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        guard(&format!("read_dir {path}"), || {
            let mut r = self.reader();
            let rec = self.lookup_required(&mut r, path)?;
            let items = self.index_items(&mut r, rec)?;
            Ok(items
                .into_iter()
                .filter(|i| !i.dos_only && i.name != ".")
                .map(|i| DirEntry {
                    name: i.name,
                    file_type: if i.is_dir {
                        FileType::Dir
                    } else {
                        FileType::File
                    },
                    ino: i.record,
                })
                .collect())
        })
    }

    fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        guard(&format!("read {path}"), || {
            let mut r = self.reader();
            let rec = self.lookup_required(&mut r, path)?;
            let f = self.file(&mut r, rec)?;
            if self.kind_of(&mut r, &f)? != FileType::File {
                return Err(Error::invalid(format!(
                    "NTFS: {path} is not a regular file"
                )));
            }
            let Some(item) = f.data(&mut r, "") else {
                return Ok(Vec::new());
            };
            let item = item.map_err(|e| ntfs_err("$DATA", e))?;
            let a = item.to_attribute().map_err(|e| ntfs_err("$DATA", e))?;
            let flags = a.flags();
            if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
                return Err(Error::unsupported(format!(
                    "NTFS: {path} is EFS-encrypted; its data cannot be read offline"
                )));
            }
            let len = a.value_length();
            if len > limit {
                return Err(Error::invalid(format!(
                    "NTFS: {path} is {len} bytes, more than the {limit}-byte limit"
                )));
            }
            if flags.contains(NtfsAttributeFlags::COMPRESSED) {
                let v = a
                    .value(&mut r)
                    .map_err(|e| ntfs_err(&format!("$DATA of {path}"), e))?;
                return self.read_compressed(v, len, path);
            }
            let mut v = a
                .value(&mut r)
                .map_err(|e| ntfs_err(&format!("$DATA of {path}"), e))?;
            // The data size must lie within what the data runs map (sparse
            // runs included): this bounds the allocation below by the run list.
            if let NtfsAttributeValue::NonResident(nr) = &v {
                let mut mapped = 0u64;
                for run in nr.data_runs() {
                    let run = run.map_err(|e| ntfs_err(&format!("data runs of {path}"), e))?;
                    mapped = mapped.saturating_add(run.allocated_size());
                }
                if len > mapped {
                    return Err(Error::corrupt_msg(format!(
                        "NTFS: $DATA of {path}: data size {len} exceeds the {mapped} bytes its data runs map"
                    )));
                }
            }
            let mut buf =
                vec![0u8; usize::try_from(len).map_err(|_| Error::invalid("file too large"))?];
            v.read_exact(&mut r, &mut buf)
                .map_err(|e| ntfs_err(&format!("$DATA of {path}"), e))?;
            Ok(buf)
        })
    }

    fn read_link(&self, path: &str) -> Result<String> {
        guard(&format!("read_link {path}"), || {
            let mut r = self.reader();
            let rec = self.lookup_required(&mut r, path)?;
            let f = self.file(&mut r, rec)?;
            match self.reparse_tag_and_data(&mut r, &f)? {
                Some((tag, d)) => reparse_target(tag, &d),
                None => Err(Error::invalid(format!("NTFS: {path} is not a link"))),
            }
        })
    }
}

#[cfg(test)]
mod tests;
