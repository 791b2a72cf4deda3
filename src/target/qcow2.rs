//! qcow2 version 3 output, optionally with compressed clusters (qemu
//! `docs/interop/qcow2.txt`; section names below are its headings).
//!
//! Fixed choices: 64 KiB clusters (`cluster_bits` 16), `refcount_order` 4
//! (16-bit refcounts), no backing file, no snapshots, no extensions.
//!
//! ## Why two phases
//!
//! The output is written front to back through [`OutputFile`], which hashes
//! as it appends, and qcow2 wants its header at offset 0. The header names the
//! L1 and refcount tables; the L1 table names the L2 tables; the L2 tables
//! name every data cluster; the refcount blocks count every host cluster. With
//! compression, where each cluster lands depends on the compressed size of
//! every cluster before it, and a host cluster's refcount on how many
//! compressed clusters share it — none of it known until everything is
//! compressed. Patching the header afterwards would break the streaming
//! digest, and keeping compressed data in memory would break the memory bound.
//! So (see [`super::spool`]) phase 1 reads the source once, compressing
//! clusters in parallel on rayon workers, and spools the non-zero ones in
//! order; phase 2 lays out the whole file and writes it in one sequential
//! pass:
//!
//! | clusters | what |
//! |---|---|
//! | 0 | header (112 bytes: v3 fields plus `compression_type`), end of extensions |
//! | 1.. | L1 table (`l1_size` = virtual clusters / 8192, rounded up) |
//! | .. | refcount table |
//! | .. | refcount blocks covering every host cluster of the file |
//! | .. | L2 tables, one per L1 entry that maps any data, in L1 order |
//! | .. | data: uncompressed clusters cluster-aligned; compressed clusters packed byte after byte |
//!
//! The refcount table and block counts depend on the file size, which
//! depends on them; the layout iterates to the fixed point (two rounds at
//! most in practice).
//!
//! Clusters that read as zeros are not allocated (L2 entry 0). Compression
//! (`--compress`): `deflate` is compression type 0 — raw deflate with a 4 KiB
//! window (window bits 12), as qemu's `qcow2_compress` writes and its
//! decompressor insists on; `zstd` is compression type 1, which also sets
//! incompatible feature bit 3 ("Compression type bit"; bit 4 is Extended L2).
//! A cluster whose compressed form is not smaller is stored uncompressed.
//! Refcounts of compressed data follow the descriptor's sector rounding: a
//! compressed cluster counts once on every host cluster its sectors touch,
//! which is what `qemu-img check` verifies.

use super::output::OutputFile;
use super::spool::collect;
use super::stream::write_sparse;
use super::{target_size, Compression, WriteOptions, WriteReport};
use crate::block::BlockSource;
use crate::error::{Error, Result};
use crate::limits::{MAX_TABLE_BYTES, MAX_VIRTUAL_SIZE};

/// `cluster_bits`: 64 KiB clusters, qemu's default.
pub const CLUSTER_BITS: u32 = 16;
/// Cluster size in bytes.
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// `refcount_order`: 16-bit refcounts, qemu's default.
pub const REFCOUNT_ORDER: u32 = 4;
/// Header length written: the 104 bytes of version 3 plus `compression_type`, padded to 8.
pub const HEADER_LENGTH: u32 = 112;
/// Header magic "QFI\xfb".
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Incompatible feature bit 3: a non-zlib compression type.
pub const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
/// L1/L2 "copied" flag (bit 63): refcount exactly one.
pub const OFLAG_COPIED: u64 = 1 << 63;
/// L2 "compressed" flag (bit 62).
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Entries per L2 table.
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Entries per refcount block (16-bit refcounts).
const REFBLOCK_ENTRIES: u64 = CLUSTER * 8 / 16;
/// Bit where a compressed descriptor's sector count starts: 62 - (cluster_bits - 8).
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
/// zlib level for deflate clusters: 6, zlib's default, which qemu uses.
const DEFLATE_LEVEL: u32 = 6;
/// zstd level: 3, zstd's default, which qemu uses.
const ZSTD_LEVEL: i32 = 3;

/// Compress one cluster for qcow2; `None` when it does not shrink.
pub fn compress_cluster(kind: Compression, buf: &[u8]) -> Result<Option<Vec<u8>>> {
    let limit = buf.len();
    match kind {
        Compression::Deflate => {
            let mut c = flate2::Compress::new_with_window_bits(
                flate2::Compression::new(DEFLATE_LEVEL),
                false,
                12,
            );
            let mut out = Vec::with_capacity(limit);
            let st = c
                .compress_vec(buf, &mut out, flate2::FlushCompress::Finish)
                .map_err(|e| Error::invalid(format!("deflate failed: {e}")))?;
            Ok((st == flate2::Status::StreamEnd && out.len() < limit).then_some(out))
        }
        Compression::Zstd => {
            let out = zstd::bulk::compress(buf, ZSTD_LEVEL)
                .map_err(|e| Error::io("zstd compression".to_string(), e))?;
            Ok((out.len() < limit).then_some(out))
        }
    }
}

fn clusters(bytes: u64) -> u64 {
    bytes.div_ceil(CLUSTER)
}

/// Write `src` as qcow2.
pub fn write(
    src: &dyn BlockSource,
    mut out: OutputFile,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let wanted = target_size(src.size(), opts.size)?;
    let size = wanted
        .checked_next_multiple_of(512)
        .ok_or_else(|| Error::invalid("size overflows"))?;
    if size > MAX_VIRTUAL_SIZE {
        return Err(Error::unsupported(format!(
            "onramp writes qcow2 images up to 64 TiB; this disk is {size} bytes"
        )));
    }
    let mut notes = Vec::new();
    if size != wanted {
        notes.push(format!(
            "virtual size rounded up from {wanted} to {size} bytes (qemu reads qcow2 sizes in whole 512-byte sectors)"
        ));
    }
    let compressor = opts
        .compress
        .map(|k| move |b: &[u8]| compress_cluster(k, b));
    let spool = collect(
        src,
        &out,
        CLUSTER,
        compressor
            .as_ref()
            .map(|c| c as &(dyn Fn(&[u8]) -> Result<Option<Vec<u8>>> + Sync)),
    )?;

    // Guest side: L1.
    let l1_size = clusters(size).div_ceil(L2_ENTRIES);
    if l1_size * 8 > MAX_TABLE_BYTES {
        return Err(Error::unsupported("qcow2 L1 table would exceed 32 MiB"));
    }
    let l1_clusters = clusters(l1_size * 8);
    let mut l2_tables: Vec<u64> = spool.grains.iter().map(|g| g.index / L2_ENTRIES).collect();
    l2_tables.dedup();
    let n_l2 = l2_tables.len() as u64;

    // Data placement relative to the (cluster-aligned) start of the data area.
    let mut rel = Vec::with_capacity(spool.grains.len());
    let mut pos = 0u64;
    for g in &spool.grains {
        if !g.compressed {
            pos = pos.next_multiple_of(CLUSTER);
        }
        rel.push(pos);
        pos += if g.compressed {
            u64::from(g.len)
        } else {
            CLUSTER
        };
    }
    let data_end_rel = pos;
    let data_clusters = clusters(data_end_rel);

    // Fixed point for the refcount structures.
    let fixed = 1 + l1_clusters + n_l2;
    let (mut rtc, mut rbc) = (1u64, 1u64);
    loop {
        let total = fixed + rtc + rbc + data_clusters;
        let rbc2 = total.div_ceil(REFBLOCK_ENTRIES).max(1);
        let rtc2 = clusters(rbc2 * 8).max(1);
        if rbc2 <= rbc && rtc2 <= rtc {
            break;
        }
        (rbc, rtc) = (rbc.max(rbc2), rtc.max(rtc2));
    }
    let l1_off = CLUSTER;
    let rt_off = l1_off + l1_clusters * CLUSTER;
    let rb_off = rt_off + rtc * CLUSTER;
    let l2_off = rb_off + rbc * CLUSTER;
    let data_off = l2_off + n_l2 * CLUSTER;
    let total_clusters = data_off / CLUSTER + data_clusters;
    if total_clusters > rbc * REFBLOCK_ENTRIES {
        return Err(Error::invalid(
            "internal error: qcow2 refcount layout too small",
        ));
    }

    // Refcounts of every host cluster.
    let n_rc = usize::try_from(rbc * REFBLOCK_ENTRIES)
        .map_err(|_| Error::invalid("qcow2 refcount table too large"))?;
    let mut refcounts = vec![0u16; n_rc];
    for c in refcounts.iter_mut().take((data_off / CLUSTER) as usize) {
        *c = 1;
    }
    let mut l2_entries_of = Vec::with_capacity(spool.grains.len());
    for (g, &r) in spool.grains.iter().zip(&rel) {
        let host = data_off + r;
        let (first, last, entry) = if g.compressed {
            let len = u64::from(g.len);
            let extra = ((host + len - 1) >> 9) - (host >> 9);
            let end = ((host + len - 1) | 511) + 1;
            (
                host / CLUSTER,
                (end - 1) / CLUSTER,
                OFLAG_COMPRESSED | (extra << CSIZE_SHIFT) | host,
            )
        } else {
            (host / CLUSTER, host / CLUSTER, OFLAG_COPIED | host)
        };
        for c in first..=last {
            let rc = &mut refcounts[c as usize];
            *rc = rc.saturating_add(1);
        }
        l2_entries_of.push(entry);
    }

    // Header.
    let mut h = vec![0u8; HEADER_LENGTH as usize];
    let mut put = |off: usize, v: &[u8]| h[off..off + v.len()].copy_from_slice(v);
    put(0, &MAGIC);
    put(4, &3u32.to_be_bytes());
    put(20, &CLUSTER_BITS.to_be_bytes());
    put(24, &size.to_be_bytes());
    put(36, &(l1_size as u32).to_be_bytes());
    put(40, &l1_off.to_be_bytes());
    put(48, &rt_off.to_be_bytes());
    put(56, &(rtc as u32).to_be_bytes());
    let zstd = opts.compress == Some(Compression::Zstd);
    let incompat = if zstd { INCOMPAT_COMPRESSION_TYPE } else { 0 };
    put(72, &incompat.to_be_bytes());
    put(96, &REFCOUNT_ORDER.to_be_bytes());
    put(100, &HEADER_LENGTH.to_be_bytes());
    put(104, &[u8::from(zstd)]);
    out.write_owned(h)?;
    out.skip_zeros(CLUSTER - u64::from(HEADER_LENGTH))?;

    // L1.
    let mut l1 = vec![0u8; (l1_clusters * CLUSTER) as usize];
    for (k, &t) in l2_tables.iter().enumerate() {
        let e = OFLAG_COPIED | (l2_off + k as u64 * CLUSTER);
        l1[(t * 8) as usize..(t * 8 + 8) as usize].copy_from_slice(&e.to_be_bytes());
    }
    write_here(&mut out, l1)?;

    // Refcount table and blocks.
    let mut rt = vec![0u8; (rtc * CLUSTER) as usize];
    for i in 0..rbc {
        let e = rb_off + i * CLUSTER;
        rt[(i * 8) as usize..(i * 8 + 8) as usize].copy_from_slice(&e.to_be_bytes());
    }
    write_here(&mut out, rt)?;
    for block in refcounts.chunks(REFBLOCK_ENTRIES as usize) {
        let b: Vec<u8> = block.iter().flat_map(|c| c.to_be_bytes()).collect();
        write_here(&mut out, b)?;
    }

    // L2 tables.
    let mut gi = 0usize;
    for &t in &l2_tables {
        let mut l2 = vec![0u8; CLUSTER as usize];
        while let Some(g) = spool.grains.get(gi).filter(|g| g.index / L2_ENTRIES == t) {
            let at = ((g.index % L2_ENTRIES) * 8) as usize;
            l2[at..at + 8].copy_from_slice(&l2_entries_of[gi].to_be_bytes());
            gi += 1;
        }
        write_here(&mut out, l2)?;
    }
    debug_assert_eq!(out.position(), data_off);

    // Data.
    let mut reader = spool.reader()?;
    for (g, &r) in spool.grains.iter().zip(&rel) {
        out.skip_zeros(data_off + r - out.position())?;
        let buf = reader.next(g)?;
        if g.compressed {
            out.write_owned(buf)?;
        } else {
            write_here(&mut out, buf)?;
        }
    }
    let end = out.position();
    out.skip_zeros(end.next_multiple_of(512) - end)?;
    let output = out.finish()?;
    Ok(WriteReport {
        output,
        virtual_size: size,
        notes,
    })
}

/// Append `buf` at the current position, zero 4 KiB grains as holes.
fn write_here(out: &mut OutputFile, buf: Vec<u8>) -> Result<()> {
    let at = out.position();
    write_sparse(out, at, buf)
}
