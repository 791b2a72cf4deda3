//! The VHDX log (VHDX spec v1.0 §2.3) and its in-memory replay.
//!
//! When the current header's `log_guid` is non-zero the log may hold metadata
//! writes (region tables, metadata, BAT, occasionally data) that reached the
//! log but not their final place. Hyper-V and qemu replay them into the file
//! when they open it for writing; onramp never writes its input, so it
//! replays them into an overlay ([`FileView`]) through which every read of the
//! file goes.
//!
//! Finding the active sequence (§2.3.3): every 4 KiB-aligned position of the
//! circular log is tried as the start of a chain of valid entries (signature
//! "loge", CRC-32C over the entry, `log_guid` equal to the header's, every
//! descriptor and data sector carrying the entry's sequence number) with
//! consecutive sequence numbers, each starting where the previous ended. A
//! chain is a candidate when its last entry's `tail` names the offset of an
//! entry in it; the active sequence runs from that tail entry to the head of
//! the candidate with the largest sequence number. No valid entry at all
//! means nothing needs replaying (a torn first write; the spec and qemu
//! agree). A valid entry newer than the active sequence's head (its tail
//! entry is gone) is refused: replaying the older sequence would read stale
//! data, and replaying the newer entry alone — what qemu 10 does, its search
//! ignores `tail` — would skip writes it depends on. Anything else we cannot
//! replay (a log above [`MAX_LOG_BYTES`], a search over its read budget, too
//! many writes) is refused too; stale data is never read.
//!
//! Replay order and shape (§2.3.1): entries from tail to head, descriptors in
//! order; a data descriptor writes 4 KiB at `file_offset` made of its
//! `leading_bytes` (8), bytes 8..4092 of its data sector, and its
//! `trailing_bytes` (4); a zero descriptor zeroes `zero_length` bytes. The
//! file then reads as at least `last_file_offset` long (zeros past its end).

use super::crc::crc32c_without;
use super::guid::Guid;
use super::header::{le32, le64, Header};
use crate::error::{Error, Result};
use crate::source::raw::read_exact_at;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Log entry signature "loge" (§2.3.1.1).
const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
/// Zero descriptor signature "zero" (§2.3.1.2).
const ZERO_SIGNATURE: &[u8; 4] = b"zero";
/// Data descriptor signature "desc" (§2.3.1.3).
const DESC_SIGNATURE: &[u8; 4] = b"desc";
/// Data sector signature "data" (§2.3.1.4).
const DATA_SIGNATURE: &[u8; 4] = b"data";
/// Log sector size (§2.3: "the log is composed of 4 KB sectors").
pub const LOG_SECTOR: u64 = 4096;
/// Largest log onramp replays in memory: 32 MiB. Hyper-V and qemu create
/// 1 MiB logs by default (qemu `log_size`, VHDX spec §2.3 "typically 1 MB").
pub const MAX_LOG_BYTES: u64 = 32 << 20;
/// Most bytes read while searching the log, as a multiple of its length: a
/// well-formed log is read about once; a crafted one with overlapping
/// "entries" at every sector would otherwise cost length² reads.
const SEARCH_READ_FACTOR: u64 = 8;
/// Most writes (descriptors) replayed: 65536, a 256 MiB log of single-sector
/// entries; logs this busy are refused rather than replayed slowly.
const MAX_REPLAY_WRITES: usize = 65536;

/// One write the replay applies: data, or zeros when `data` is None.
#[derive(Debug, Clone)]
struct Write {
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
}

/// What the replay found, for `info`.
#[derive(Debug, Clone, Default)]
pub struct ReplayInfo {
    /// The header's log_guid was non-zero.
    pub log_present: bool,
    /// Entries replayed from the active sequence.
    pub entries_replayed: usize,
    /// Sequence numbers of the active sequence (tail, head).
    pub sequence: Option<(u64, u64)>,
    /// Writes applied (data sectors + zero ranges).
    pub writes: usize,
}

/// The VHDX file as it reads after log replay: the file's bytes, then the
/// replayed writes in log order; zeros past the end of the file up to the
/// length the log says the file has.
#[derive(Debug)]
pub struct FileView {
    file: File,
    path: PathBuf,
    file_len: u64,
    len: u64,
    writes: Vec<Write>,
}

impl FileView {
    /// The logical length (file length, or larger when the log extends it).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the logical length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Read `buf` at `offset` of the replayed file; `what` names the structure.
    pub fn read(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let n = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                Error::corrupt_msg(format!(
                    "{what}: {n} bytes at byte {offset} run past the end of the {}-byte file",
                    self.len
                ))
            })?;
        let in_file = usize::try_from(self.file_len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let k = in_file.min(buf.len());
        let (head, tail) = buf.split_at_mut(k);
        if !head.is_empty() {
            read_exact_at(&self.file, offset, head, what).map_err(|e| e.at(&self.path))?;
        }
        tail.fill(0);
        for w in &self.writes {
            let we = w.offset.saturating_add(w.len);
            if we <= offset || w.offset >= end {
                continue;
            }
            let a = w.offset.max(offset);
            let b = we.min(end);
            let dst0 = usize::try_from(a.saturating_sub(offset)).unwrap_or(0);
            let dst1 = usize::try_from(b.saturating_sub(offset)).unwrap_or(0);
            let Some(dst) = buf.get_mut(dst0..dst1) else {
                continue;
            };
            match &w.data {
                None => dst.fill(0),
                Some(d) => {
                    let s0 = usize::try_from(a.saturating_sub(w.offset)).unwrap_or(0);
                    let s1 = usize::try_from(b.saturating_sub(w.offset)).unwrap_or(0);
                    if let Some(src) = d.get(s0..s1) {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A validated log entry's summary.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    len: u64,
    tail: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
}

struct Log<'a> {
    file: &'a File,
    offset: u64,
    length: u64,
    guid: Guid,
    /// Bytes still allowed to be read while searching.
    budget: std::cell::Cell<u64>,
}

impl Log<'_> {
    /// Read `n` bytes of the circular log starting at log position `pos`.
    fn read(&self, pos: u64, n: u64) -> Result<Vec<u8>> {
        let left = self.budget.get().checked_sub(n).ok_or_else(|| {
            Error::unsupported(
                "VHDX log: the log needs replaying but its entries overlap so much that \
                 searching it exceeds onramp's read budget; refusing rather than reading \
                 stale data",
            )
        })?;
        self.budget.set(left);
        let mut v = vec![0u8; usize::try_from(n).unwrap_or(0)];
        let mut done = 0u64;
        while done < n {
            let p = pos
                .saturating_add(done)
                .checked_rem(self.length)
                .unwrap_or(0);
            let k = (self.length.saturating_sub(p)).min(n.saturating_sub(done));
            let a = usize::try_from(done).unwrap_or(0);
            let b = usize::try_from(done.saturating_add(k)).unwrap_or(0);
            if let Some(dst) = v.get_mut(a..b) {
                read_exact_at(self.file, self.offset.saturating_add(p), dst, "VHDX log")?;
            }
            done = done.saturating_add(k);
        }
        Ok(v)
    }

    /// Parse and fully validate the entry at log position `pos`; None when it
    /// is not a valid entry of this log. Returns the entry and its bytes.
    fn entry(&self, pos: u64) -> Result<Option<(Entry, Vec<u8>)>> {
        let first = self.read(pos, LOG_SECTOR)?;
        if first.get(..4) != Some(&ENTRY_SIGNATURE[..]) {
            return Ok(None);
        }
        let len = u64::from(le32(&first, 8));
        let dcount = u64::from(le32(&first, 24));
        if len == 0
            || !len.is_multiple_of(LOG_SECTOR)
            || len > self.length
            || Guid::read(&first, 32) != self.guid
        {
            return Ok(None);
        }
        let desc_bytes = dcount.saturating_mul(32).saturating_add(64);
        let hdr_sectors = desc_bytes.div_ceil(LOG_SECTOR);
        if hdr_sectors.saturating_mul(LOG_SECTOR) > len {
            return Ok(None);
        }
        let bytes = self.read(pos, len)?;
        if le32(&bytes, 4) != crc32c_without(&bytes, 4) {
            return Ok(None);
        }
        let seq = le64(&bytes, 16);
        let tail = u64::from(le32(&bytes, 12));
        if seq == 0 || !tail.is_multiple_of(LOG_SECTOR) || tail >= self.length {
            return Ok(None);
        }
        // Descriptors and data sectors must carry the entry's sequence number.
        let mut data_sectors = 0u64;
        for i in 0..dcount {
            let d = usize::try_from(i.saturating_mul(32).saturating_add(64)).unwrap_or(0);
            let sig = bytes.get(d..d.saturating_add(4));
            let dseq = le64(&bytes, d.saturating_add(24));
            if dseq != seq {
                return Ok(None);
            }
            if sig == Some(&DESC_SIGNATURE[..]) {
                data_sectors = data_sectors.saturating_add(1);
            } else if sig != Some(&ZERO_SIGNATURE[..]) {
                return Ok(None);
            }
        }
        let need = hdr_sectors
            .saturating_add(data_sectors)
            .saturating_mul(LOG_SECTOR);
        if need > len {
            return Ok(None);
        }
        for k in 0..data_sectors {
            let off = usize::try_from(hdr_sectors.saturating_add(k).saturating_mul(LOG_SECTOR))
                .unwrap_or(0);
            let sig = bytes.get(off..off.saturating_add(4));
            let hi = u64::from(le32(&bytes, off.saturating_add(4)));
            let lo = u64::from(le32(&bytes, off.saturating_add(4092)));
            if sig != Some(&DATA_SIGNATURE[..]) || (hi << 32 | lo) != seq {
                return Ok(None);
            }
        }
        Ok(Some((
            Entry {
                seq,
                len,
                tail,
                flushed_file_offset: le64(&bytes, 48),
                last_file_offset: le64(&bytes, 56),
            },
            bytes,
        )))
    }
}

/// Open the replayed view of `file` for the current header `h`.
pub fn replay(file: File, path: &Path, h: &Header) -> Result<(FileView, ReplayInfo)> {
    let file_len = file.metadata().map_err(|e| Error::io("stat", e))?.len();
    let mut info = ReplayInfo::default();
    let mut view = FileView {
        file,
        path: path.to_path_buf(),
        file_len,
        len: file_len,
        writes: Vec::new(),
    };
    if h.log_guid.is_zero() {
        return Ok((view, info));
    }
    info.log_present = true;
    let length = u64::from(h.log_length);
    if length > MAX_LOG_BYTES {
        return Err(Error::unsupported(format!(
            "VHDX log of {length} bytes needs replaying but is larger than onramp's \
             {MAX_LOG_BYTES}-byte in-memory replay limit; refusing rather than reading stale \
             data (open it read-write once in Hyper-V or `qemu-img check -r all` on a copy)"
        )));
    }
    let log = Log {
        file: &view.file,
        offset: h.log_offset,
        length,
        guid: h.log_guid,
        budget: std::cell::Cell::new(length.saturating_mul(SEARCH_READ_FACTOR)),
    };
    // Parse each position once.
    let mut cache: HashMap<u64, Option<Entry>> = HashMap::new();
    let mut lookup = |pos: u64| -> Result<Option<Entry>> {
        if let Some(e) = cache.get(&pos) {
            return Ok(e.clone());
        }
        let e = log.entry(pos)?.map(|(e, _)| e);
        cache.insert(pos, e.clone());
        Ok(e)
    };
    let sectors = length / LOG_SECTOR;
    let mut in_chain = vec![false; usize::try_from(sectors).unwrap_or(0)];
    // Best candidate: (head seq, positions from tail to head).
    let mut best: Option<(u64, Vec<(u64, Entry)>)> = None;
    for s in 0..sectors {
        let pos = s.saturating_mul(LOG_SECTOR);
        if in_chain
            .get(usize::try_from(s).unwrap_or(usize::MAX))
            .copied()
            .unwrap_or(true)
        {
            continue;
        }
        let Some(first) = lookup(pos)? else { continue };
        let mut chain = vec![(pos, first)];
        while let Some((p, e)) = chain.last() {
            if u64::try_from(chain.len()).unwrap_or(u64::MAX) > sectors {
                break;
            }
            let next = p.saturating_add(e.len).checked_rem(length).unwrap_or(0);
            let want = e.seq.saturating_add(1);
            if chain.iter().any(|(q, _)| *q == next) {
                break;
            }
            match lookup(next)? {
                Some(n) if n.seq == want => chain.push((next, n)),
                _ => break,
            }
        }
        for (p, _) in chain.iter().skip(1) {
            if let Some(f) = in_chain.get_mut(usize::try_from(p / LOG_SECTOR).unwrap_or(usize::MAX))
            {
                *f = true;
            }
        }
        let Some((_, head)) = chain.last() else {
            continue;
        };
        let head_seq = head.seq;
        let tail = head.tail;
        if let Some(i) = chain.iter().position(|(p, _)| *p == tail) {
            if best.as_ref().is_none_or(|(bs, _)| head_seq > *bs) {
                let seqv: Vec<(u64, Entry)> = chain.get(i..).unwrap_or(&[]).to_vec();
                best = Some((head_seq, seqv));
            }
        }
    }
    // The newest valid entry anywhere in the log. Entries carry the header's
    // log_guid, so they all belong to this log session; one newer than the
    // active sequence's head (or one with no complete sequence at all) means
    // a later write whose tail entry is gone: replaying the older sequence
    // would give stale data, replaying the newer entry alone (as qemu does)
    // would skip writes it depends on. Refuse.
    let newest = cache
        .iter()
        .filter_map(|(p, e)| e.as_ref().map(|e| (e.seq, *p, e.tail)))
        .max();
    let best_seq = best.as_ref().map(|(s, _)| *s);
    if let Some((seq, pos, tail)) = newest {
        if best_seq.is_none_or(|b| seq > b) {
            return Err(Error::corrupt_msg(format!(
                "VHDX log: the entry with sequence number {seq} at log offset {pos} is valid but \
                 the sequence it belongs to is incomplete (its tail, log offset {tail}, is not a \
                 valid entry of the same sequence); onramp cannot replay this log safely and \
                 refuses rather than read stale data"
            )));
        }
    }
    let Some((_, active)) = best else {
        // A non-zero log_guid and no valid entry: nothing was committed.
        return Ok((view, info));
    };
    let (Some((_, tail_e)), Some((_, head_e))) = (active.first(), active.last()) else {
        return Ok((view, info));
    };
    info.sequence = Some((tail_e.seq, head_e.seq));
    if file_len < head_e.flushed_file_offset {
        return Err(Error::corrupt(
            "VHDX log entry",
            "flushed_file_offset",
            h.log_offset,
            format!("at most the file length {file_len}"),
            head_e.flushed_file_offset,
        ));
    }
    let last_file_offset = head_e.last_file_offset;
    let mut writes = Vec::new();
    for (pos, _) in &active {
        let Some((_, bytes)) = log.entry(*pos)? else {
            return Err(Error::corrupt_msg("VHDX log entry changed while reading"));
        };
        let dcount = u64::from(le32(&bytes, 24));
        let hdr_sectors = dcount
            .saturating_mul(32)
            .saturating_add(64)
            .div_ceil(LOG_SECTOR);
        let mut data_k = 0u64;
        for i in 0..dcount {
            if writes.len() > MAX_REPLAY_WRITES {
                return Err(Error::unsupported(format!(
                "VHDX log: {} writes to replay, more than onramp's {MAX_REPLAY_WRITES}; refusing \
                 rather than reading stale data",
                writes.len()
            )));
            }
            let d = usize::try_from(i.saturating_mul(32).saturating_add(64)).unwrap_or(0);
            let at = h.log_offset.saturating_add(
                pos.saturating_add(u64::try_from(d).unwrap_or(0))
                    .checked_rem(length)
                    .unwrap_or(0),
            );
            let file_offset = le64(&bytes, d.saturating_add(16));
            if !file_offset.is_multiple_of(LOG_SECTOR) {
                return Err(Error::corrupt(
                    "VHDX log descriptor",
                    "file_offset",
                    at,
                    "a multiple of 4096",
                    file_offset,
                ));
            }
            if bytes.get(d..d.saturating_add(4)) == Some(&ZERO_SIGNATURE[..]) {
                let zl = le64(&bytes, d.saturating_add(8));
                if !zl.is_multiple_of(LOG_SECTOR) || file_offset.checked_add(zl).is_none() {
                    return Err(Error::corrupt(
                        "VHDX log zero descriptor",
                        "zero_length",
                        at,
                        "a multiple of 4096",
                        zl,
                    ));
                }
                writes.push(Write {
                    offset: file_offset,
                    len: zl,
                    data: None,
                });
            } else {
                let s = usize::try_from(
                    hdr_sectors
                        .saturating_add(data_k)
                        .saturating_mul(LOG_SECTOR),
                )
                .unwrap_or(0);
                data_k = data_k.saturating_add(1);
                let mut sector = Vec::with_capacity(4096);
                // leading_bytes (8) from the descriptor, 4084 bytes from the
                // data sector, trailing_bytes (4) from the descriptor (§2.3.1.3-4).
                sector.extend_from_slice(
                    bytes
                        .get(d.saturating_add(8)..d.saturating_add(16))
                        .unwrap_or(&[0; 8]),
                );
                sector.extend_from_slice(
                    bytes
                        .get(s.saturating_add(8)..s.saturating_add(4092))
                        .unwrap_or(&[0; 4084]),
                );
                sector.extend_from_slice(
                    bytes
                        .get(d.saturating_add(4)..d.saturating_add(8))
                        .unwrap_or(&[0; 4]),
                );
                writes.push(Write {
                    offset: file_offset,
                    len: LOG_SECTOR,
                    data: Some(sector),
                });
            }
        }
        info.entries_replayed = info.entries_replayed.saturating_add(1);
    }
    info.writes = writes.len();
    let data_end = writes
        .iter()
        .filter(|w| w.data.is_some())
        .map(|w| w.offset.saturating_add(w.len))
        .max()
        .unwrap_or(0);
    view.len = file_len.max(last_file_offset).max(data_end);
    view.writes = writes;
    Ok((view, info))
}
