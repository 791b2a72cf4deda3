//! qcow2 cluster mapping: L1 and L2 tables, the image's own metadata layout
//! (so that table entries pointing into it are caught), and a bounded L2 cache.
//!
//! Spec: qemu `docs/interop/qcow2.txt`, "Cluster mapping", "Extended L2
//! Entries", "Host cluster management" and "Snapshots". Every L2 table is
//! validated once when it is loaded: an entry that points past the end of the
//! file or into the header, L1, L2, refcount or snapshot clusters is a
//! corrupt-image error naming the table, the entry index and its byte offset.
//! qemu is laxer (it reads zeros past the end and trusts overlaps on read).

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// L1 entry bits 9-55: offset of the L2 table (spec: "L1 table entry").
pub const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 entry reserved bits 0-8 and 56-62.
pub const L1_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
/// L2 entry bit 62: compressed cluster (spec: "L2 table entry").
pub const L2_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 63: refcount exactly one.
pub const L2_COPIED: u64 = 1 << 63;
/// Standard descriptor bit 0: reads as zeros (v3 without extended L2).
pub const L2_ZERO: u64 = 1;
/// Standard descriptor bits 9-55: host cluster offset.
pub const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Standard descriptor reserved bits 1-8 and 56-61.
pub const L2_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// Refcount table entry bits 9-63 (spec: "Refcount table entry").
pub const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// Subclusters per cluster with extended L2 entries (spec: "Extended L2 Entries").
pub const SUBCLUSTERS: u32 = 32;

/// What one guest cluster maps to, decoded from a validated L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated here: read the backing file, else zeros.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// A whole standard cluster at this host offset.
    Data(u64),
    /// A compressed cluster: `len` bytes of compressed data at `offset`
    /// (the last sector may end past the end of the file by under 512 bytes).
    Compressed {
        /// Host byte offset of the compressed stream.
        offset: u64,
        /// Bytes the descriptor covers.
        len: u64,
    },
    /// A standard cluster with subclusters: host offset (0 when none) and
    /// the allocation and reads-as-zero bitmaps.
    Sub {
        /// Host cluster offset.
        host: u64,
        /// Bit i: subcluster i allocated.
        alloc: u32,
        /// Bit i: subcluster i reads as zeros.
        zero: u32,
    },
}

/// True unless `v` is a multiple of `align`.
pub fn misaligned(v: u64, align: u64) -> bool {
    v.checked_rem(align).is_none_or(|r| r != 0)
}

/// Fixed facts about the image's table geometry.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// log2 cluster size.
    pub cluster_bits: u32,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// log2 of the L2 entries per table.
    pub l2_bits: u32,
    /// Extended (128-bit) L2 entries.
    pub extended: bool,
    /// Image version (2 or 3).
    pub version: u32,
    /// Length of the image file.
    pub file_size: u64,
}

impl Geometry {
    /// Build from the header fields (cluster_bits is already checked to be 9..=21).
    pub fn new(cluster_bits: u32, extended: bool, version: u32, file_size: u64) -> Self {
        let entry_bits = if extended { 4 } else { 3 };
        Geometry {
            cluster_bits,
            cluster_size: 1u64 << cluster_bits,
            l2_bits: cluster_bits.saturating_sub(entry_bits),
            extended,
            version,
            file_size,
        }
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        1u64 << self.l2_bits
    }

    /// Guest bytes covered by one L2 table.
    pub fn l2_span(&self) -> u64 {
        1u64 << self.cluster_bits.saturating_add(self.l2_bits)
    }

    /// u64 words per L2 entry.
    pub fn words(&self) -> usize {
        if self.extended {
            2
        } else {
            1
        }
    }

    /// Bits in the compressed descriptor's offset field (spec: x = 62 - (cluster_bits - 8)).
    pub fn compressed_offset_bits(&self) -> u32 {
        62u32.saturating_sub(self.cluster_bits.saturating_sub(8))
    }

    /// Bytes per subcluster.
    pub fn subcluster_size(&self) -> u64 {
        self.cluster_size
            .checked_div(u64::from(SUBCLUSTERS))
            .unwrap_or(16)
    }
}

/// The clusters and ranges of the image's own metadata, for overlap checks.
#[derive(Debug, Default)]
pub struct Metadata {
    /// Byte ranges [start, end) with what they hold, sorted by start.
    ranges: Vec<(u64, u64, &'static str)>,
    /// Running maximum of `ranges[..=i].1`.
    max_end: Vec<u64>,
    /// Sorted offsets of one-cluster L2 tables.
    l2_tables: Vec<u64>,
    /// Sorted offsets of one-cluster refcount blocks.
    refblocks: Vec<u64>,
    cluster_size: u64,
}

impl Metadata {
    /// Start an empty set for clusters of `cluster_size` bytes.
    pub fn new(cluster_size: u64) -> Self {
        Metadata {
            cluster_size,
            ..Default::default()
        }
    }

    /// Add a metadata range.
    pub fn add_range(&mut self, start: u64, len: u64, what: &'static str) {
        if len > 0 {
            self.ranges.push((start, start.saturating_add(len), what));
        }
    }

    /// Set the L2 table offsets (unsorted).
    pub fn set_l2_tables(&mut self, mut v: Vec<u64>) {
        v.sort_unstable();
        v.dedup();
        self.l2_tables = v;
    }

    /// Set the refcount block offsets (unsorted).
    pub fn set_refblocks(&mut self, mut v: Vec<u64>) {
        v.sort_unstable();
        v.dedup();
        self.refblocks = v;
    }

    /// Sort the ranges; call after the last [`add_range`](Self::add_range).
    pub fn seal(&mut self) {
        self.ranges.sort_unstable();
        let mut m = 0u64;
        self.max_end = self
            .ranges
            .iter()
            .map(|r| {
                m = m.max(r.1);
                m
            })
            .collect();
    }

    /// What `[start, end)` overlaps among ranges only (not L2 tables or refcount blocks).
    pub fn overlaps_range(&self, start: u64, end: u64) -> Option<&'static str> {
        let idx = self.ranges.partition_point(|r| r.0 < end);
        let before = idx.checked_sub(1)?;
        if self.max_end.get(before).copied().unwrap_or(0) <= start {
            return None;
        }
        self.ranges
            .get(..idx)
            .unwrap_or(&[])
            .iter()
            .rev()
            .find(|r| r.1 > start)
            .map(|r| r.2)
    }

    fn overlaps_clusters(set: &[u64], cs: u64, start: u64, end: u64) -> bool {
        let i = set.partition_point(|&x| x.saturating_add(cs) <= start);
        set.get(i).is_some_and(|&x| x < end)
    }

    /// What `[start, end)` overlaps among all metadata, if anything.
    pub fn overlaps(&self, start: u64, end: u64) -> Option<&'static str> {
        if let Some(w) = self.overlaps_range(start, end) {
            return Some(w);
        }
        if Self::overlaps_clusters(&self.l2_tables, self.cluster_size, start, end) {
            return Some("an L2 table");
        }
        if Self::overlaps_clusters(&self.refblocks, self.cluster_size, start, end) {
            return Some("a refcount block");
        }
        None
    }
}

/// Where an L2 entry lives, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct EntryAt {
    /// Index into the L1 table.
    pub l1_index: u64,
    /// Index of the entry in its L2 table.
    pub l2_index: u64,
    /// File offset of the entry.
    pub byte: u64,
}

fn l2_err(at: EntryAt, expected: impl std::fmt::Display, found: impl std::fmt::Display) -> Error {
    Error::corrupt(
        format!("qcow2 L2 table of L1 entry {}", at.l1_index),
        format!("entry {}", at.l2_index),
        at.byte,
        expected,
        found,
    )
}

/// Decode and validate one L2 entry (`word2` is the bitmap for extended entries).
pub fn decode(
    geo: &Geometry,
    meta: &Metadata,
    word: u64,
    word2: u64,
    at: EntryAt,
) -> Result<Mapping> {
    if word & L2_COMPRESSED != 0 {
        if geo.extended && word2 != 0 {
            return Err(l2_err(
                at,
                "a zero subcluster bitmap for a compressed cluster",
                format!("{word2:#018x}"),
            ));
        }
        let x = geo.compressed_offset_bits();
        let offset_mask = (1u64 << x).saturating_sub(1);
        let offset = word & offset_mask;
        let size_bits = 62u32.saturating_sub(x);
        let sectors = (word >> x) & ((1u64 << size_bits).saturating_sub(1));
        if offset >> 56 != 0 {
            return Err(l2_err(
                at,
                "a compressed cluster offset below 2^56",
                format!("{offset:#x}"),
            ));
        }
        // The data spans from `offset` to the end of sector (offset/512 + sectors).
        let end = (offset & !511u64).saturating_add(sectors.saturating_add(1).saturating_mul(512));
        let len = end.saturating_sub(offset);
        let file_end_rounded = geo.file_size.saturating_add(511) & !511u64;
        if offset >= geo.file_size || end > file_end_rounded {
            return Err(l2_err(
                at,
                format!("compressed data inside the {}-byte file", geo.file_size),
                format!("{len} bytes at byte {offset} (compressed descriptor past end of file)"),
            ));
        }
        if let Some(what) = meta.overlaps(offset, end) {
            return Err(l2_err(
                at,
                "compressed data outside the image's metadata",
                format!("{len} bytes at byte {offset}, inside {what}"),
            ));
        }
        return Ok(Mapping::Compressed { offset, len });
    }
    if word & L2_RESERVED_MASK != 0 {
        return Err(l2_err(
            at,
            "reserved bits 1-8 and 56-61 clear",
            format!("{word:#018x}"),
        ));
    }
    let host = word & L2_OFFSET_MASK;
    let cs = geo.cluster_size;
    if misaligned(host, cs) {
        return Err(l2_err(
            at,
            format!("a host cluster offset aligned to {cs} bytes"),
            format!("{host:#x}"),
        ));
    }
    if geo.extended {
        if word & L2_ZERO != 0 {
            return Err(l2_err(
                at,
                "bit 0 clear with extended L2 entries",
                "bit 0 set",
            ));
        }
        let alloc = u32::try_from(word2 & 0xffff_ffff).unwrap_or(0);
        let zero = u32::try_from(word2 >> 32).unwrap_or(0);
        if alloc & zero != 0 {
            return Err(l2_err(
                at,
                "no subcluster both allocated and reading as zeros",
                format!("bitmap {word2:#018x}"),
            ));
        }
        if alloc != 0 {
            if host == 0 {
                return Err(l2_err(
                    at,
                    "a host cluster offset for allocated subclusters",
                    "offset 0",
                ));
            }
            let last = 31u32.saturating_sub(alloc.leading_zeros());
            let first = alloc.trailing_zeros();
            let sc = geo.subcluster_size();
            let lo = host.saturating_add(u64::from(first).saturating_mul(sc));
            let hi = host.saturating_add(u64::from(last).saturating_add(1).saturating_mul(sc));
            check_data(geo, meta, lo, hi, at)?;
        }
        if alloc == 0 && zero == 0 {
            return Ok(Mapping::Unallocated);
        }
        return Ok(Mapping::Sub { host, alloc, zero });
    }
    if word & L2_ZERO != 0 {
        // A zero cluster (qemu honours the flag in v2 images too).
        return Ok(Mapping::Zero);
    }
    if host == 0 {
        return Ok(Mapping::Unallocated);
    }
    check_data(geo, meta, host, host.saturating_add(cs), at)?;
    Ok(Mapping::Data(host))
}

/// A data range must start inside the file (qemu reads zeros for a cluster
/// cut short by the end of the file; so do we) and overlap no metadata.
fn check_data(geo: &Geometry, meta: &Metadata, start: u64, end: u64, at: EntryAt) -> Result<()> {
    if start >= geo.file_size {
        return Err(l2_err(
            at,
            format!("a data cluster inside the {}-byte file", geo.file_size),
            format!("host offset {start} (past end of file)"),
        ));
    }
    if let Some(what) = meta.overlaps(start, end) {
        return Err(l2_err(
            at,
            "a data cluster outside the image's metadata",
            format!("host offset {start}, inside {what}"),
        ));
    }
    Ok(())
}

/// A validated L2 table: one decoded mapping per entry.
pub type L2Table = Arc<[Mapping]>;

/// Parse and validate the L2 table read from `bytes` (one cluster) at file
/// offset `table_off`, for L1 entry `l1_index`.
pub fn parse_l2(
    geo: &Geometry,
    meta: &Metadata,
    bytes: &[u8],
    table_off: u64,
    l1_index: u64,
) -> Result<L2Table> {
    let words = geo.words();
    let entry_bytes = words.saturating_mul(8);
    let mut v = Vec::with_capacity(bytes.len().checked_div(entry_bytes).unwrap_or(0));
    for (i, e) in bytes.chunks_exact(entry_bytes).enumerate() {
        let w1 = super::header::read_be64(e, 0);
        let w2 = if words == 2 {
            super::header::read_be64(e, 8)
        } else {
            0
        };
        let idx = u64::try_from(i).unwrap_or(u64::MAX);
        let at = EntryAt {
            l1_index,
            l2_index: idx,
            byte: table_off
                .saturating_add(idx.saturating_mul(u64::try_from(entry_bytes).unwrap_or(8))),
        };
        v.push(decode(geo, meta, w1, w2, at)?);
    }
    Ok(v.into())
}

/// A bounded, direct-mapped cache of validated L2 tables, keyed by L1 index.
///
/// Direct mapping keeps lookups O(1) with one uncontended lock per slot, so
/// several reader threads rarely wait on each other; sequential reads map
/// neighbouring tables to neighbouring slots.
pub struct L2Cache {
    slots: Vec<Mutex<Option<(u64, L2Table)>>>,
}

impl L2Cache {
    /// A cache of at most `budget_bytes` of tables of `table_bytes` each,
    /// and never more slots than `tables` (the L1 size).
    pub fn new(budget_bytes: u64, table_bytes: u64, tables: u64) -> Self {
        // A decoded Mapping is 24 bytes per entry: count that, not the disk size.
        let per_table = table_bytes.saturating_mul(3).max(1);
        let n = budget_bytes
            .checked_div(per_table)
            .unwrap_or(1)
            .clamp(1, tables.max(1));
        let n = usize::try_from(n).unwrap_or(1);
        L2Cache {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, l1_index: u64) -> Option<&Mutex<Option<(u64, L2Table)>>> {
        let n = u64::try_from(self.slots.len()).unwrap_or(1).max(1);
        let i = usize::try_from(l1_index.checked_rem(n).unwrap_or(0)).ok()?;
        self.slots.get(i)
    }

    /// The cached table for `l1_index`, if present.
    pub fn get(&self, l1_index: u64) -> Option<L2Table> {
        let slot = self.slot(l1_index)?;
        let g = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.as_ref() {
            Some((k, t)) if *k == l1_index => Some(Arc::clone(t)),
            _ => None,
        }
    }

    /// Store `table` for `l1_index`, replacing whatever shared its slot.
    pub fn put(&self, l1_index: u64, table: L2Table) {
        if let Some(slot) = self.slot(l1_index) {
            let mut g = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *g = Some((l1_index, table));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry::new(16, false, 3, 10 << 20)
    }

    fn at() -> EntryAt {
        EntryAt {
            l1_index: 0,
            l2_index: 5,
            byte: 0x30000 + 40,
        }
    }

    #[test]
    fn decodes_standard_entries() {
        let g = geo();
        let mut m = Metadata::new(g.cluster_size);
        m.add_range(0, 65536, "the header cluster");
        m.add_range(0x30000, 65536, "the L1 table");
        m.seal();
        assert_eq!(decode(&g, &m, 0, 0, at()).unwrap(), Mapping::Unallocated);
        assert_eq!(decode(&g, &m, 1, 0, at()).unwrap(), Mapping::Zero);
        assert_eq!(
            decode(&g, &m, L2_COPIED | 0x50000, 0, at()).unwrap(),
            Mapping::Data(0x50000)
        );
        let e = decode(&g, &m, 0x30000, 0, at()).unwrap_err();
        assert!(e.message().contains("L1 table"), "{e}");
        assert!(e.message().contains("entry 5"), "{e}");
        let e = decode(&g, &m, 20 << 20, 0, at()).unwrap_err();
        assert!(e.message().contains("past end of file"), "{e}");
        let e = decode(&g, &m, 0x50200, 0, at()).unwrap_err();
        assert!(
            e.message().contains("reserved") || e.message().contains("aligned"),
            "{e}"
        );
    }

    #[test]
    fn decodes_compressed_entries() {
        let g = geo();
        let m = Metadata::new(g.cluster_size);
        // x = 62 - 8 = 54; offset 0x60010, 2 additional sectors.
        let w = L2_COMPRESSED | (2u64 << 54) | 0x60010;
        assert_eq!(
            decode(&g, &m, w, 0, at()).unwrap(),
            Mapping::Compressed {
                offset: 0x60010,
                len: 3 * 512 - 0x10
            }
        );
        let w = L2_COMPRESSED | (11u64 << 20);
        assert!(decode(&g, &m, w, 0, at()).is_err());
    }

    #[test]
    fn metadata_overlap() {
        let mut m = Metadata::new(512);
        m.add_range(1000, 100, "a");
        m.add_range(0, 10, "b");
        m.set_l2_tables(vec![4096, 2048]);
        m.seal();
        assert_eq!(m.overlaps(5, 6), Some("b"));
        assert_eq!(m.overlaps(10, 1000), None);
        assert_eq!(m.overlaps(1099, 1100), Some("a"));
        assert_eq!(m.overlaps(2559, 2560), Some("an L2 table"));
        assert_eq!(m.overlaps(2560, 4096), None);
    }
}
