//! qcow2 images, versions 2 and 3, read positionally through `&self`.
//!
//! Spec: qemu `docs/interop/qcow2.txt`. This module owns opening an image
//! (header, extensions, refusals), its metadata layout, the backing chain and
//! the [`BlockSource`] implementation: reads and the allocation map.
//!
//! Supported: every cluster size qemu allows (512 B to 2 MiB), zero clusters,
//! compressed clusters (deflate and zstd), extended L2 entries (subclusters),
//! backing files inside the image's own directory when asked for. Refused
//! with a clear error: encryption, external data files, unknown incompatible
//! features. Stricter than qemu: a table entry or compressed descriptor
//! pointing past the end of the file or into the image's own metadata is a
//! corrupt-image error (see [`table`]).
//!
//! Why not the qcow2-rs or imago crates: qcow2-rs is async-only, panics on
//! malformed input and resolves backing names against the working directory;
//! imago lacks zstd and extended L2 entries. See README, Dependencies.

pub mod compress;
pub mod header;
pub mod table;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, IoContext, Result};
use crate::limits;
use crate::source::chain::{self, ChainGuard};
use crate::source::raw::read_exact_at;
use crate::source::{Format, OpenOptions};
use header::{feature_names, CompressionType, Extensions, FeatureKind, Header};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use table::{misaligned, EntryAt, Geometry, L2Cache, L2Table, Mapping, Metadata};

/// A qcow2 image opened for reading.
pub struct Qcow2Reader {
    file: File,
    path: PathBuf,
    header: Header,
    ext: Extensions,
    geo: Geometry,
    /// L2 table offset for each L1 entry that covers the virtual disk (0: none).
    l1: Vec<u64>,
    meta: Metadata,
    cache: L2Cache,
    backing_name: Option<String>,
    backing: Option<Box<dyn BlockSource>>,
    /// Unique per opened image, keys the per-thread decompressed cluster.
    id: usize,
}

/// Source of [`Qcow2Reader::id`].
static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

impl std::fmt::Debug for Qcow2Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Reader")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

const HDR: &str = "qcow2 header";

/// One piece of a walk over the virtual disk.
#[derive(Debug, Clone, Copy)]
enum Seg {
    Zero,
    Backing,
    Data(u64),
    Compressed {
        offset: u64,
        len: u64,
        /// Offset of the wanted bytes inside the decompressed cluster.
        in_cluster: u64,
        l1_index: u64,
        l2_index: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    guest: u64,
    len: u64,
    seg: Seg,
}

/// Merges adjacent pieces of the same kind before handing them on.
struct Merger<'f> {
    pending: Option<Piece>,
    f: &'f mut dyn FnMut(Piece) -> Result<()>,
}

impl Merger<'_> {
    fn push(&mut self, p: Piece) -> Result<()> {
        if p.len == 0 {
            return Ok(());
        }
        if let Some(q) = self.pending.as_mut() {
            let mergeable = match (q.seg, p.seg) {
                (Seg::Zero, Seg::Zero) | (Seg::Backing, Seg::Backing) => true,
                (Seg::Data(a), Seg::Data(b)) => a.checked_add(q.len) == Some(b),
                _ => false,
            };
            if mergeable && q.guest.checked_add(q.len) == Some(p.guest) {
                q.len = q.len.saturating_add(p.len);
                return Ok(());
            }
        }
        if let Some(q) = self.pending.replace(p) {
            (self.f)(q)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if let Some(q) = self.pending.take() {
            (self.f)(q)?;
        }
        Ok(())
    }
}

fn usize_of(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(format!("{v} does not fit in memory")))
}

impl Qcow2Reader {
    /// Open `path`. `depth` is this image's place in a backing chain (0: the
    /// image the user named).
    pub fn open(path: &Path, opts: &OpenOptions, depth: usize) -> Result<Self> {
        let _guard = ChainGuard::enter(path)?;
        let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
        let file_size = file.metadata().ctx(|| "stat".into())?.len();

        // The fixed header: 112 bytes cover every field we know.
        let mut head = vec![0u8; usize_of(file_size.min(112))?];
        read_exact_at(&file, 0, &mut head, "qcow2 header")?;
        let header = Header::parse(&head, file_size)?;
        let cs = header.cluster_size();

        if header.crypt_method != 0 {
            let kind = match header.crypt_method {
                1 => "AES",
                2 => "LUKS",
                _ => "unknown",
            };
            return Err(Error::unsupported(format!(
                "{HDR} field crypt_method at byte 32 is {} ({kind} encryption): encrypted qcow2 images are not supported; decrypt with qemu-img convert first",
                header.crypt_method
            )));
        }

        // The first cluster holds the header extensions and the backing name.
        let first_len = cs.min(file_size);
        let mut first = vec![0u8; usize_of(first_len)?];
        read_exact_at(&file, 0, &mut first, "qcow2 header cluster")?;
        let ext_start = header.extensions_start();
        let mut ext_end = first_len;
        if header.backing_file_offset > ext_start && header.backing_file_offset < ext_end {
            ext_end = header.backing_file_offset;
        }
        let area = first
            .get(usize_of(ext_start)?..usize_of(ext_end.max(ext_start))?)
            .unwrap_or(&[]);
        let ext = header::parse_extensions(area, ext_start)?;

        let unknown = header.incompatible_features & !header::INCOMPAT_KNOWN;
        if unknown != 0 {
            let names = feature_names(unknown, FeatureKind::Incompatible, &ext.feature_names);
            let bits: Vec<String> = (0..64u32)
                .filter(|b| unknown & (1u64 << b) != 0)
                .map(|b| b.to_string())
                .collect();
            return Err(Error::unsupported(format!(
                "{HDR} field incompatible_features at byte 72: unknown incompatible feature bit {} ({}) is set; onramp cannot read this image safely",
                bits.join(", "),
                names.join(", ")
            )));
        }
        if header.incompatible_features & header::INCOMPAT_DATA_FILE != 0 || ext.data_file.is_some()
        {
            return Err(Error::unsupported(format!(
                "{HDR} field incompatible_features at byte 72: the image keeps its data in an external data file{}; such images are not supported",
                ext.data_file
                    .as_deref()
                    .map(|n| format!(" ({n:?})"))
                    .unwrap_or_default()
            )));
        }
        if ext.crypto {
            return Err(Error::unsupported(
                "qcow2 full disk encryption header extension present: encrypted images are not supported",
            ));
        }

        let backing_name = Self::backing_name(&header, &first, file_size)?;
        let geo = Geometry::new(
            header.cluster_bits,
            header.extended_l2(),
            header.version,
            file_size,
        );
        let mut meta = Metadata::new(cs);
        meta.add_range(0, cs, "the header cluster");

        // L1 table.
        let l1_bytes = u64::from(header.l1_size).saturating_mul(8);
        if l1_bytes > limits::MAX_QCOW2_L1_BYTES {
            return Err(Error::corrupt(
                HDR,
                "l1_size",
                36,
                format!(
                    "at most {} entries (qemu's QCOW_MAX_L1_SIZE)",
                    limits::MAX_QCOW2_L1_BYTES / 8
                ),
                header.l1_size,
            ));
        }
        let needed_l1 = header.size.div_ceil(geo.l2_span());
        if u64::from(header.l1_size) < needed_l1 {
            return Err(Error::corrupt(
                HDR,
                "l1_size",
                36,
                format!(
                    "at least {needed_l1} entries for a {}-byte disk",
                    header.size
                ),
                header.l1_size,
            ));
        }
        Self::check_table_pos(
            header.l1_table_offset,
            l1_bytes,
            cs,
            file_size,
            "l1_table_offset",
            40,
        )?;
        meta.add_range(
            header.l1_table_offset,
            round_up(l1_bytes, cs),
            "the L1 table",
        );

        // Refcount table and blocks.
        let rt_bytes = u64::from(header.refcount_table_clusters).saturating_mul(cs);
        if rt_bytes > limits::MAX_QCOW2_REFTABLE_BYTES {
            return Err(Error::corrupt(
                HDR,
                "refcount_table_clusters",
                56,
                format!(
                    "at most {} clusters (qemu's QCOW_MAX_REFTABLE_SIZE of {} bytes)",
                    limits::MAX_QCOW2_REFTABLE_BYTES
                        .checked_div(cs)
                        .unwrap_or(0),
                    limits::MAX_QCOW2_REFTABLE_BYTES
                ),
                header.refcount_table_clusters,
            ));
        }
        Self::check_table_pos(
            header.refcount_table_offset,
            rt_bytes,
            cs,
            file_size,
            "refcount_table_offset",
            48,
        )?;
        meta.add_range(header.refcount_table_offset, rt_bytes, "the refcount table");
        let mut rt = vec![0u8; usize_of(rt_bytes)?];
        read_exact_at(
            &file,
            header.refcount_table_offset,
            &mut rt,
            "qcow2 refcount table",
        )?;
        let mut refblocks = Vec::new();
        for (i, e) in rt.chunks_exact(8).enumerate() {
            let v = header::read_be64(e, 0);
            if v == 0 {
                continue;
            }
            let i = u64::try_from(i).unwrap_or(u64::MAX);
            let byte = header
                .refcount_table_offset
                .saturating_add(i.saturating_mul(8));
            let off = v & table::REFT_OFFSET_MASK;
            if v & !table::REFT_OFFSET_MASK != 0 || misaligned(off, cs) {
                return Err(Error::corrupt(
                    "qcow2 refcount table",
                    format!("entry {i}"),
                    byte,
                    format!("a refcount block offset aligned to {cs} bytes"),
                    format!("{v:#x}"),
                ));
            }
            if off.checked_add(cs).is_none_or(|end| end > file_size) {
                return Err(Error::corrupt(
                    "qcow2 refcount table",
                    format!("entry {i}"),
                    byte,
                    format!("a refcount block inside the {file_size}-byte file"),
                    format!("offset {off} (past end of file)"),
                ));
            }
            refblocks.push(off);
        }
        drop(rt);
        meta.set_refblocks(refblocks);

        Self::snapshots(&file, &header, &mut meta, file_size)?;
        meta.seal();

        // L1 entries that cover the disk; the rest (if any) are ignored as qemu does.
        let mut l1raw = vec![0u8; usize_of(needed_l1.saturating_mul(8))?];
        read_exact_at(&file, header.l1_table_offset, &mut l1raw, "qcow2 L1 table")?;
        let mut l1 = Vec::with_capacity(l1raw.len() / 8);
        let mut l2s = Vec::new();
        for (i, e) in l1raw.chunks_exact(8).enumerate() {
            let v = header::read_be64(e, 0);
            let i = u64::try_from(i).unwrap_or(u64::MAX);
            let byte = header.l1_table_offset.saturating_add(i.saturating_mul(8));
            let off = v & table::L1_OFFSET_MASK;
            let bad = |expected: String, found: String| {
                Error::corrupt(
                    "qcow2 L1 table",
                    format!("entry {i}"),
                    byte,
                    expected,
                    found,
                )
            };
            if v & table::L1_RESERVED_MASK != 0 {
                return Err(bad(
                    "reserved bits 0-8 and 56-62 clear".into(),
                    format!("{v:#018x}"),
                ));
            }
            if off != 0 {
                if misaligned(off, cs) {
                    return Err(bad(
                        format!("an L2 table offset aligned to {cs} bytes"),
                        format!("{off:#x}"),
                    ));
                }
                if off.checked_add(cs).is_none_or(|end| end > file_size) {
                    return Err(bad(
                        format!("an L2 table inside the {file_size}-byte file"),
                        format!("offset {off} (past end of file)"),
                    ));
                }
                if let Some(what) = meta.overlaps(off, off.saturating_add(cs)) {
                    return Err(bad(
                        "an L2 table outside the image's other metadata".into(),
                        format!("offset {off}, inside {what}"),
                    ));
                }
                l2s.push(off);
            }
            l1.push(off);
        }
        drop(l1raw);
        meta.set_l2_tables(l2s);

        // Each image further down a backing chain gets half the cache of the
        // one above it (at least 1 MiB), so a 16-deep chain stays bounded.
        let budget = limits::QCOW2_L2_CACHE_BYTES
            .checked_shr(u32::try_from(depth).unwrap_or(u32::MAX))
            .unwrap_or(0)
            .max(1 << 20);
        let cache = L2Cache::new(budget, cs, needed_l1);

        let backing = match &backing_name {
            None => None,
            Some(name) => Some(Self::open_backing(path, name, &ext, opts, depth)?),
        };

        Ok(Qcow2Reader {
            file,
            path: path.to_path_buf(),
            header,
            ext,
            geo,
            l1,
            meta,
            cache,
            backing_name,
            backing,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    fn backing_name(header: &Header, first: &[u8], file_size: u64) -> Result<Option<String>> {
        if header.backing_file_offset == 0 {
            return Ok(None);
        }
        let len = u64::from(header.backing_file_size);
        if len > limits::MAX_BACKING_NAME {
            return Err(Error::corrupt(
                HDR,
                "backing_file_size",
                16,
                format!("at most {}", limits::MAX_BACKING_NAME),
                len,
            ));
        }
        let end = header.backing_file_offset.saturating_add(len);
        let limit = header.cluster_size().min(file_size);
        if end > limit {
            return Err(Error::corrupt(
                HDR,
                "backing_file_offset",
                8,
                format!("a name inside the first cluster ({limit} bytes)"),
                format!("{len} bytes at byte {}", header.backing_file_offset),
            ));
        }
        let bytes = first
            .get(usize_of(header.backing_file_offset)?..usize_of(end)?)
            .unwrap_or(&[]);
        let name = std::str::from_utf8(bytes).map_err(|_| {
            Error::corrupt(
                "qcow2 backing file name",
                "name",
                header.backing_file_offset,
                "UTF-8 text",
                "invalid UTF-8",
            )
        })?;
        Ok(Some(name.to_owned()))
    }

    fn check_table_pos(
        offset: u64,
        len: u64,
        cs: u64,
        file_size: u64,
        field: &str,
        field_at: u64,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if misaligned(offset, cs) {
            return Err(Error::corrupt(
                HDR,
                field,
                field_at,
                format!("an offset aligned to the {cs}-byte cluster size"),
                offset,
            ));
        }
        if offset < cs {
            return Err(Error::corrupt(
                HDR,
                field,
                field_at,
                "an offset after the header cluster",
                offset,
            ));
        }
        if offset.checked_add(len).is_none_or(|end| end > file_size) {
            return Err(Error::corrupt(
                HDR,
                field,
                field_at,
                format!("a {len}-byte table inside the {file_size}-byte file"),
                format!("{offset} (past end of file)"),
            ));
        }
        Ok(())
    }

    /// Walk the snapshot table to learn its extent and its L1 tables.
    fn snapshots(file: &File, header: &Header, meta: &mut Metadata, file_size: u64) -> Result<()> {
        let n = header.nb_snapshots;
        if n == 0 {
            return Ok(());
        }
        let cs = header.cluster_size();
        if n > limits::MAX_QCOW2_SNAPSHOTS {
            return Err(Error::corrupt(
                HDR,
                "nb_snapshots",
                60,
                format!(
                    "at most {} (qemu's QCOW_MAX_SNAPSHOTS)",
                    limits::MAX_QCOW2_SNAPSHOTS
                ),
                n,
            ));
        }
        Self::check_table_pos(
            header.snapshots_offset,
            40,
            cs,
            file_size,
            "snapshots_offset",
            64,
        )?;
        let mut pos = header.snapshots_offset;
        let table_end_limit = header
            .snapshots_offset
            .saturating_add(limits::MAX_QCOW2_SNAPSHOT_TABLE_BYTES)
            .min(file_size);
        for i in 0..n {
            let mut e = [0u8; 40];
            if pos.saturating_add(40) > table_end_limit {
                return Err(Error::corrupt(
                    "qcow2 snapshot table",
                    format!("entry {i}"),
                    pos,
                    format!(
                        "an entry inside the file and the {}-byte table limit",
                        limits::MAX_QCOW2_SNAPSHOT_TABLE_BYTES
                    ),
                    "past the end",
                ));
            }
            read_exact_at(file, pos, &mut e, "qcow2 snapshot table")?;
            let l1_off = header::read_be64(&e, 0);
            let l1_size = u64::from(u32::from_be_bytes([e[8], e[9], e[10], e[11]]));
            let id_len = u64::from(u16::from_be_bytes([e[12], e[13]]));
            let name_len = u64::from(u16::from_be_bytes([e[14], e[15]]));
            let extra = u32::from_be_bytes([e[36], e[37], e[38], e[39]]);
            if extra > limits::MAX_QCOW2_SNAPSHOT_EXTRA_DATA {
                return Err(Error::corrupt(
                    "qcow2 snapshot table",
                    format!("entry {i} extra_data_size"),
                    pos.saturating_add(36),
                    format!("at most {}", limits::MAX_QCOW2_SNAPSHOT_EXTRA_DATA),
                    extra,
                ));
            }
            let l1_bytes = l1_size.saturating_mul(8);
            if l1_bytes > limits::MAX_QCOW2_L1_BYTES
                || misaligned(l1_off, cs)
                || l1_off.saturating_add(l1_bytes) > file_size
            {
                return Err(Error::corrupt(
                    "qcow2 snapshot table",
                    format!("entry {i} l1_table_offset/l1_size"),
                    pos,
                    "an aligned snapshot L1 table inside the file",
                    format!("{l1_size} entries at byte {l1_off}"),
                ));
            }
            meta.add_range(l1_off, round_up(l1_bytes, cs), "a snapshot L1 table");
            let len = 40u64
                .saturating_add(u64::from(extra))
                .saturating_add(id_len)
                .saturating_add(name_len);
            // qemu does not write the padding after the last entry, so the
            // file may end before it.
            let unpadded_end = pos.saturating_add(len);
            pos = pos.saturating_add(round_up(len, 8));
            if unpadded_end > table_end_limit {
                return Err(Error::corrupt(
                    "qcow2 snapshot table",
                    format!("entry {i}"),
                    unpadded_end,
                    "an entry inside the file and the snapshot table limit",
                    "past the end",
                ));
            }
        }
        let len = pos.saturating_sub(header.snapshots_offset);
        meta.add_range(
            header.snapshots_offset,
            round_up(len, cs),
            "the snapshot table",
        );
        Ok(())
    }

    fn open_backing(
        path: &Path,
        name: &str,
        ext: &Extensions,
        opts: &OpenOptions,
        depth: usize,
    ) -> Result<Box<dyn BlockSource>> {
        if !opts.allow_backing {
            return Err(Error::invalid(format!(
                "the image has a backing file {name:?}; pass --allow-backing to read through it (only files inside the image's own directory are followed)"
            )));
        }
        let next = depth.saturating_add(1);
        chain::check_depth(next, name)?;
        let resolved = chain::resolve_inside(path, name)?;
        let format = match ext.backing_format.as_deref() {
            None => None,
            Some(f) => Some(backing_format(f).ok_or_else(|| {
                Error::unsupported(format!(
                    "backing file {name:?} has format {f:?}, which onramp does not read"
                ))
            })?),
        };
        let mut bopts = opts.clone();
        bopts.format = format;
        crate::source::open_depth(&resolved, &bopts, next).map_err(|e| {
            let msg = format!("backing file {name:?}: {}", e.message());
            Error::new(e.kind(), msg).at(&resolved)
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The validated L2 table for `l1_index`, or None when the L1 entry is empty.
    fn l2(&self, l1_index: u64) -> Result<Option<L2Table>> {
        let off = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        if off == 0 {
            return Ok(None);
        }
        if let Some(t) = self.cache.get(l1_index) {
            return Ok(Some(t));
        }
        let mut buf = vec![0u8; usize_of(self.geo.cluster_size)?];
        read_exact_at(&self.file, off, &mut buf, "qcow2 L2 table")?;
        let t = table::parse_l2(&self.geo, &self.meta, &buf, off, l1_index)?;
        self.cache.put(l1_index, t.clone());
        Ok(Some(t))
    }

    /// Walk `[offset, offset+len)` (inside the disk) as merged pieces.
    fn walk(&self, offset: u64, len: u64, f: &mut dyn FnMut(Piece) -> Result<()>) -> Result<()> {
        let end = offset.saturating_add(len);
        let cb = self.geo.cluster_bits;
        let cs = self.geo.cluster_size;
        let span_bits = cb.saturating_add(self.geo.l2_bits);
        let mask = self.geo.l2_entries().saturating_sub(1);
        let mut m = Merger { pending: None, f };
        let mut pos = offset;
        while pos < end {
            let l1_index = pos >> span_bits;
            let span_end = l1_index
                .checked_add(1)
                .and_then(|n| n.checked_shl(span_bits))
                .unwrap_or(u64::MAX)
                .min(end);
            let Some(t) = self.l2(l1_index)? else {
                m.push(Piece {
                    guest: pos,
                    len: span_end.saturating_sub(pos),
                    seg: Seg::Backing,
                })?;
                pos = span_end;
                continue;
            };
            while pos < span_end {
                let l2_index = (pos >> cb) & mask;
                let in_cluster = pos & cs.saturating_sub(1);
                let n = cs
                    .saturating_sub(in_cluster)
                    .min(span_end.saturating_sub(pos));
                let mapping = usize::try_from(l2_index)
                    .ok()
                    .and_then(|i| t.get(i))
                    .copied()
                    .unwrap_or(Mapping::Unallocated);
                let piece = |seg| Piece {
                    guest: pos,
                    len: n,
                    seg,
                };
                match mapping {
                    Mapping::Unallocated => m.push(piece(Seg::Backing))?,
                    Mapping::Zero => m.push(piece(Seg::Zero))?,
                    Mapping::Data(h) => m.push(piece(Seg::Data(h.saturating_add(in_cluster))))?,
                    Mapping::Compressed { offset, len } => m.push(piece(Seg::Compressed {
                        offset,
                        len,
                        in_cluster,
                        l1_index,
                        l2_index,
                    }))?,
                    Mapping::Sub { host, alloc, zero } => {
                        self.walk_subclusters(&mut m, pos, in_cluster, n, host, alloc, zero)?
                    }
                }
                pos = pos.saturating_add(n);
            }
        }
        m.finish()
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_subclusters(
        &self,
        m: &mut Merger<'_>,
        pos: u64,
        in_cluster: u64,
        n: u64,
        host: u64,
        alloc: u32,
        zero: u32,
    ) -> Result<()> {
        let scs = self.geo.subcluster_size();
        let first = in_cluster.checked_div(scs).unwrap_or(0);
        let stop = in_cluster.saturating_add(n);
        let mut sc = first;
        while sc < u64::from(table::SUBCLUSTERS) {
            let sc_start = sc.saturating_mul(scs);
            if sc_start >= stop {
                break;
            }
            let a = sc_start.max(in_cluster);
            let b = sc_start.saturating_add(scs).min(stop);
            let bit = 1u32
                .checked_shl(u32::try_from(sc).unwrap_or(31))
                .unwrap_or(0);
            let seg = if alloc & bit != 0 {
                Seg::Data(host.saturating_add(a))
            } else if zero & bit != 0 {
                Seg::Zero
            } else {
                Seg::Backing
            };
            m.push(Piece {
                guest: pos.saturating_add(a.saturating_sub(in_cluster)),
                len: b.saturating_sub(a),
                seg,
            })?;
            sc = sc.saturating_add(1);
        }
        Ok(())
    }

    /// Read host bytes; bytes past the end of the file read as zeros (only a
    /// cluster that starts inside the file gets here, see [`table`]).
    fn read_host(&self, host: u64, dst: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < dst.len() {
            let rest = dst.get_mut(done..).unwrap_or(&mut []);
            let off = host.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            match self.file.read_at(rest, off) {
                Ok(0) => {
                    rest.fill(0);
                    break;
                }
                Ok(k) => done = done.saturating_add(k),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("read {} at byte {off}", self.path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    fn read_backing(&self, guest: u64, dst: &mut [u8]) -> Result<()> {
        let Some(b) = self.backing.as_ref() else {
            dst.fill(0);
            return Ok(());
        };
        let bsize = b.size();
        let within = usize::try_from(bsize.saturating_sub(guest))
            .unwrap_or(usize::MAX)
            .min(dst.len());
        let (head, tail) = dst.split_at_mut(within);
        if !head.is_empty() {
            b.read_at(guest, head)?;
        }
        tail.fill(0);
        Ok(())
    }

    fn read_compressed(
        &self,
        offset: u64,
        len: u64,
        in_cluster: u64,
        at: (u64, u64),
        dst: &mut [u8],
    ) -> Result<()> {
        let cs = self.geo.cluster_size;
        let ctype = self.header.compression_type;
        let what = || {
            (
                format!("L2 table of L1 entry {} entry {}", at.0, at.1),
                offset,
            )
        };
        compress::with_scratch(|s| {
            let key = (self.id, offset);
            if s.cluster_key != Some(key) {
                let avail = len.min(self.geo.file_size.saturating_sub(offset));
                s.input.resize(usize_of(avail)?, 0);
                read_exact_at(&self.file, offset, &mut s.input, "qcow2 compressed cluster")?;
            }
            let whole = in_cluster == 0 && u64::try_from(dst.len()).ok() == Some(cs);
            if whole && s.cluster_key != Some(key) {
                return s.decompress_into(ctype, dst, &what);
            }
            let mut cluster = std::mem::take(&mut s.cluster);
            let r = if s.cluster_key == Some(key) {
                Ok(())
            } else {
                s.cluster_key = None;
                cluster.resize(usize_of(cs)?, 0);
                s.decompress_into(ctype, &mut cluster, &what)
            };
            let r = r.and_then(|()| {
                let src = usize::try_from(in_cluster)
                    .ok()
                    .and_then(|a| Some(a..a.checked_add(dst.len())?))
                    .and_then(|range| cluster.get(range))
                    .ok_or_else(|| Error::invalid("compressed read outside its cluster"))?;
                dst.copy_from_slice(src);
                Ok(())
            });
            if r.is_ok() {
                s.cluster_key = Some(key);
            }
            s.cluster = cluster;
            r
        })
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    let to = to.max(1);
    v.div_ceil(to).saturating_mul(to)
}

/// qemu's driver names for backing formats.
fn backing_format(name: &str) -> Option<Format> {
    Some(match name {
        "raw" => Format::Raw,
        "qcow2" => Format::Qcow2,
        "vpc" => Format::Vhd,
        "vhdx" => Format::Vhdx,
        "vmdk" => Format::Vmdk,
        "vdi" => Format::Vdi,
        _ => return None,
    })
}

impl BlockSource for Qcow2Reader {
    fn size(&self) -> u64 {
        self.header.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        check_range(self.header.size, offset, len)?;
        self.walk(offset, len, &mut |p| {
            let a = usize_of(p.guest.saturating_sub(offset))?;
            let dst = a
                .checked_add(usize_of(p.len)?)
                .and_then(|b| buf.get_mut(a..b))
                .ok_or_else(|| Error::invalid("qcow2 walk left the buffer"))?;
            match p.seg {
                Seg::Zero => {
                    dst.fill(0);
                    Ok(())
                }
                Seg::Backing => self.read_backing(p.guest, dst),
                Seg::Data(h) => self.read_host(h, dst),
                Seg::Compressed {
                    offset,
                    len,
                    in_cluster,
                    l1_index,
                    l2_index,
                } => self.read_compressed(offset, len, in_cluster, (l1_index, l2_index), dst),
            }
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.header.size, offset, len)?;
        let mut mb = MapBuilder::new();
        self.walk(offset, len, &mut |p| {
            match p.seg {
                Seg::Zero => mb.push(p.guest, p.len, ExtentKind::Zero),
                Seg::Data(_) | Seg::Compressed { .. } => mb.push(p.guest, p.len, ExtentKind::Data),
                Seg::Backing => match self.backing.as_ref() {
                    None => mb.push(p.guest, p.len, ExtentKind::Zero),
                    Some(b) => {
                        let within = b.size().saturating_sub(p.guest).min(p.len);
                        if within > 0 {
                            for e in b.map(p.guest, within)? {
                                mb.push(e.offset, e.len, e.kind);
                            }
                        }
                        mb.push(
                            p.guest.saturating_add(within),
                            p.len.saturating_sub(within),
                            ExtentKind::Zero,
                        );
                    }
                },
            }
            Ok(())
        })?;
        Ok(mb.finish())
    }

    fn format_name(&self) -> &'static str {
        "qcow2"
    }

    fn details(&self) -> Map<String, Value> {
        let h = &self.header;
        let names = |bits, kind| feature_names(bits, kind, &self.ext.feature_names);
        let mut m = Map::new();
        m.insert("version".into(), json!(h.version));
        m.insert("cluster_size".into(), json!(h.cluster_size()));
        m.insert(
            "compression_type".into(),
            json!(match h.compression_type {
                CompressionType::Zlib => "zlib",
                CompressionType::Zstd => "zstd",
            }),
        );
        m.insert(
            "incompatible_features".into(),
            json!(names(h.incompatible_features, FeatureKind::Incompatible)),
        );
        m.insert(
            "compatible_features".into(),
            json!(names(h.compatible_features, FeatureKind::Compatible)),
        );
        m.insert(
            "autoclear_features".into(),
            json!(names(h.autoclear_features, FeatureKind::Autoclear)),
        );
        m.insert(
            "dirty".into(),
            json!(h.incompatible_features & header::INCOMPAT_DIRTY != 0),
        );
        m.insert(
            "corrupt".into(),
            json!(h.incompatible_features & header::INCOMPAT_CORRUPT != 0),
        );
        m.insert("extended_l2".into(), json!(h.extended_l2()));
        m.insert("refcount_order".into(), json!(h.refcount_order));
        m.insert(
            "refcount_bits".into(),
            json!(1u64 << h.refcount_order.min(6)),
        );
        m.insert("header_length".into(), json!(h.header_length));
        m.insert("l1_size".into(), json!(h.l1_size));
        m.insert("backing_file".into(), json!(self.backing_name));
        m.insert("backing_format".into(), json!(self.ext.backing_format));
        if let Some(b) = &self.backing {
            m.insert("backing_detected_format".into(), json!(b.format_name()));
        }
        m.insert("snapshots".into(), json!(h.nb_snapshots));
        m.insert("bitmaps_extension".into(), json!(self.ext.bitmaps));
        if !self.ext.unknown.is_empty() {
            let u: Vec<String> = self
                .ext
                .unknown
                .iter()
                .map(|t| format!("{t:#010x}"))
                .collect();
            m.insert("unknown_extensions".into(), json!(u));
        }
        m
    }
}

impl Qcow2Reader {
    /// The L1 index and L2 index of a guest offset (for tools and tests).
    pub fn entry_of(&self, guest: u64) -> EntryAt {
        let cb = self.geo.cluster_bits;
        let l1_index = guest >> cb.saturating_add(self.geo.l2_bits);
        let l2_index = (guest >> cb) & self.geo.l2_entries().saturating_sub(1);
        let table = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        let entry_bytes = u64::try_from(self.geo.words())
            .unwrap_or(1)
            .saturating_mul(8);
        EntryAt {
            l1_index,
            l2_index,
            byte: table.saturating_add(l2_index.saturating_mul(entry_bytes)),
        }
    }
}
