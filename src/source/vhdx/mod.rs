//! Microsoft VHDX images: fixed, dynamic and differencing ("VHDX Format
//! Specification" v1.0, 2012; MS-VHDX).
//!
//! Opening goes: file identifier and the two headers ([`header`], the current
//! one by sequence number, CRC-32C in [`crc`]); the log ([`log`]), replayed in
//! memory into a [`log::FileView`] when the header says it is not empty (the
//! input is never written); the region table ([`region`]); the metadata
//! ([`metadata`]); the BAT ([`bat`]). Every later read of the file goes
//! through the view, so replayed metadata, BAT and data are what is read.
//!
//! Payload block states read as: FULLY_PRESENT from the file; NOT_PRESENT from
//! the parent (differencing) or zeros; ZERO, UNMAPPED and UNDEFINED as zeros
//! (as qemu's vhdx driver does); PARTIALLY_PRESENT (differencing only) per
//! logical sector from the file where the sector bitmap bit is set (bit `i` of
//! byte `i / 8`, least significant first) and from the parent where it is
//! clear. A differencing disk's parent is opened only with
//! `--allow-backing`, through the `relative_path` locator entry inside the
//! child's own directory (never `absolute_win32_path` or `volume_path`); its
//! current header's `data_write_guid` must equal `parent_linkage` (or
//! `parent_linkage2`).
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod bat;
pub mod crc;
pub mod guid;
pub mod header;
pub mod log;
pub mod metadata;
pub mod region;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, Result};
use crate::source::vhd::locate;
use crate::source::{Format, OpenOptions};
use bat::Bat;
use header::Headers;
use log::{FileView, ReplayInfo};
use metadata::Metadata;
use region::Regions;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// A VHDX image opened for reading.
pub struct VhdxReader {
    view: FileView,
    headers: Headers,
    replay: ReplayInfo,
    regions: Regions,
    meta: Metadata,
    bat: Bat,
    parent: Option<(PathBuf, Box<dyn BlockSource>)>,
}

impl std::fmt::Debug for VhdxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdxReader")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Where a piece of the virtual disk comes from.
enum Src {
    File(u64),
    Zero,
    Parent,
}

impl VhdxReader {
    /// Open `path` without following a parent.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &OpenOptions::default(), 0)
    }

    /// Open `path`; a parent is opened (through [`crate::source::open_depth`]
    /// at `depth + 1`) only when `opts.allow_backing` is set.
    pub fn open_with(path: &Path, opts: &OpenOptions, depth: usize) -> Result<Self> {
        let (file, file_len) = locate::open_file(path)?;
        let headers = header::read_headers(&file, file_len)?;
        let (view, replay) = log::replay(file, path, &headers.current)?;
        let regions = region::read(&view)?;
        let meta = metadata::read(&view, regions.metadata)?;
        let bat = Bat::load(&view, regions.bat, &meta)?;
        let parent = if meta.has_parent {
            Some(open_parent(path, opts, depth, &meta)?)
        } else {
            None
        };
        Ok(VhdxReader {
            view,
            headers,
            replay,
            regions,
            meta,
            bat,
            parent,
        })
    }

    /// The parsed metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    fn parent_src(&self) -> Option<&dyn BlockSource> {
        self.parent.as_ref().map(|(_, p)| p.as_ref())
    }

    /// Visit `[offset, offset+len)` in pieces of one source each.
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, Src) -> Result<()>,
    ) -> Result<()> {
        let bs = self.bat.block_size;
        let lss = u64::from(self.meta.logical_sector_size);
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let blk = pos.checked_div(bs).unwrap_or(0);
            let in_blk = pos.checked_rem(bs).unwrap_or(0);
            let n = bs.saturating_sub(in_blk).min(end.saturating_sub(pos));
            let e = self.bat.payload(blk);
            match e.state {
                bat::PAYLOAD_FULLY_PRESENT => {
                    f(pos, n, Src::File(e.offset.saturating_add(in_blk)))?
                }
                bat::PAYLOAD_NOT_PRESENT => f(
                    pos,
                    n,
                    if self.parent.is_some() {
                        Src::Parent
                    } else {
                        Src::Zero
                    },
                )?,
                bat::PAYLOAD_PARTIALLY_PRESENT => {
                    let sb = self.bat.bitmap_for(blk);
                    if sb.state != bat::SB_PRESENT {
                        return Err(Error::corrupt(
                            "VHDX BAT",
                            format!("sector bitmap entry for block {blk}"),
                            self.regions.bat.file_offset,
                            "a present sector bitmap block for a partially present payload block",
                            format!("state {}", sb.state),
                        ));
                    }
                    // Sector index inside the chunk this bitmap block covers.
                    let spb = bs.checked_div(lss).unwrap_or(0);
                    let first = blk
                        .checked_rem(self.bat.chunk_ratio)
                        .unwrap_or(0)
                        .saturating_mul(spb);
                    let s0 = first.saturating_add(in_blk.checked_div(lss).unwrap_or(0));
                    let s1 = first.saturating_add(in_blk.saturating_add(n).div_ceil(lss));
                    let b0 = s0 / 8;
                    let b1 = s1.div_ceil(8);
                    let mut bits = vec![0u8; usize::try_from(b1.saturating_sub(b0)).unwrap_or(0)];
                    self.view.read(
                        sb.offset.saturating_add(b0),
                        &mut bits,
                        "VHDX sector bitmap",
                    )?;
                    let blk_base = pos.saturating_sub(in_blk);
                    locate::bit_runs(&bits, s0, s1, false, |s, t, v| {
                        let ra = blk_base
                            .saturating_add(s.saturating_sub(first).saturating_mul(lss))
                            .max(pos);
                        let rb = blk_base
                            .saturating_add(t.saturating_sub(first).saturating_mul(lss))
                            .min(pos.saturating_add(n));
                        let src = if v {
                            Src::File(e.offset.saturating_add(ra.saturating_sub(blk_base)))
                        } else {
                            Src::Parent
                        };
                        f(ra, rb.saturating_sub(ra), src)
                    })?;
                }
                _ => f(pos, n, Src::Zero)?,
            }
            pos = pos.saturating_add(n);
        }
        Ok(())
    }
}

fn open_parent(
    path: &Path,
    opts: &OpenOptions,
    depth: usize,
    meta: &Metadata,
) -> Result<(PathBuf, Box<dyn BlockSource>)> {
    let get = |k: &str| {
        meta.parent_locator
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let wanted = meta
        .parent_locator
        .iter()
        .filter(|(k, _)| k.ends_with("path"))
        .map(|(k, v)| format!("{k} {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let wanted = if wanted.is_empty() {
        "no path".to_string()
    } else {
        wanted
    };
    locate::parent_allowed("VHDX", opts, depth, &wanted)?;
    let linkage = get("parent_linkage").ok_or_else(|| {
        Error::corrupt_msg(
            "VHDX parent locator: no parent_linkage entry (spec §3.5.2.6.1 requires it)",
        )
    })?;
    let ppath = locate::resolve(path, get("relative_path"), &wanted)?;
    // Identity: the parent's data_write_guid must be the one the child links to.
    let (pf, plen) = locate::open_file(&ppath)?;
    let ph = header::read_headers(&pf, plen).map_err(|e| e.at(&ppath))?;
    drop(pf);
    let dwg = format!("{{{}}}", ph.current.data_write_guid);
    let matches = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case(&dwg));
    if !matches(Some(linkage)) && !matches(get("parent_linkage2")) {
        return Err(Error::corrupt(
            "VHDX parent locator",
            "parent_linkage",
            0,
            format!("the data_write_guid of parent {} ({dwg})", ppath.display()),
            linkage,
        ));
    }
    let src = locate::open_parent_as(&ppath, Format::Vhdx, opts, depth)?;
    Ok((ppath, src))
}

impl BlockSource for VhdxReader {
    fn size(&self) -> u64 {
        self.meta.virtual_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        check_range(self.size(), offset, len)?;
        self.walk(offset, len, |pos, n, src| {
            let piece = locate::piece(buf, offset, pos, n)?;
            match src {
                Src::File(off) => self.view.read(off, piece, "VHDX payload block"),
                Src::Zero => {
                    piece.fill(0);
                    Ok(())
                }
                Src::Parent => locate::read_parent(self.parent_src(), pos, piece),
            }
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size(), offset, len)?;
        let mut m = MapBuilder::new();
        self.walk(offset, len, |pos, n, src| match src {
            Src::File(_) => {
                m.push(pos, n, ExtentKind::Data);
                Ok(())
            }
            Src::Zero => {
                m.push(pos, n, ExtentKind::Zero);
                Ok(())
            }
            Src::Parent => locate::map_parent(self.parent_src(), pos, n, &mut m),
        })?;
        Ok(m.finish())
    }

    fn format_name(&self) -> &'static str {
        "vhdx"
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let h = &self.headers;
        let hj = |x: &header::Header| {
            json!({
                "slot": x.slot,
                "sequence_number": x.sequence_number,
                "checksum": format!("{:#010x}", x.checksum),
                "file_write_guid": x.file_write_guid.to_string(),
                "data_write_guid": x.data_write_guid.to_string(),
                "log_guid": x.log_guid.to_string(),
                "log_offset": x.log_offset,
                "log_length": x.log_length,
            })
        };
        m.insert("creator".into(), json!(h.creator));
        m.insert("current_header".into(), hj(&h.current));
        match (&h.other, &h.other_error) {
            (Some(o), _) => {
                m.insert("other_header".into(), hj(o));
            }
            (None, Some(e)) => {
                m.insert("other_header".into(), json!({"invalid": e}));
            }
            _ => {}
        }
        let subformat = if self.meta.has_parent {
            "differencing"
        } else if self.meta.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        };
        m.insert("subformat".into(), json!(subformat));
        m.insert("block_size".into(), json!(self.meta.block_size));
        m.insert(
            "logical_sector_size".into(),
            json!(self.meta.logical_sector_size),
        );
        m.insert(
            "physical_sector_size".into(),
            json!(self.meta.physical_sector_size),
        );
        m.insert("virtual_size".into(), json!(self.meta.virtual_size));
        m.insert(
            "virtual_disk_id".into(),
            json!(self.meta.virtual_disk_id.to_string()),
        );
        m.insert(
            "leave_blocks_allocated".into(),
            json!(self.meta.leave_blocks_allocated),
        );
        m.insert("has_parent".into(), json!(self.meta.has_parent));
        m.insert(
            "log".into(),
            json!({
                "present": self.replay.log_present,
                "replayed_in_memory": self.replay.entries_replayed > 0,
                "entries_replayed": self.replay.entries_replayed,
                "writes_replayed": self.replay.writes,
                "sequence": self.replay.sequence.map(|(a, b)| json!([a, b])),
            }),
        );
        m.insert(
            "regions".into(),
            json!({
                "table": self.regions.table,
                "entry_count": self.regions.entry_count,
                "bat": {"file_offset": self.regions.bat.file_offset, "length": self.regions.bat.length},
                "metadata": {"file_offset": self.regions.metadata.file_offset, "length": self.regions.metadata.length},
            }),
        );
        let c = self.bat.state_counts();
        m.insert(
            "payload_blocks".into(),
            json!({
                "total": self.bat.data_blocks,
                "chunk_ratio": self.bat.chunk_ratio,
                "not_present": c[0],
                "undefined": c[1],
                "zero": c[2],
                "unmapped": c[3].saturating_add(c[5]),
                "fully_present": c[6],
                "partially_present": c[7],
            }),
        );
        if self.meta.has_parent {
            m.insert(
                "parent_locator".into(),
                Value::Object(
                    self.meta
                        .parent_locator
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect(),
                ),
            );
        }
        if let Some((p, src)) = &self.parent {
            m.insert("parent".into(), json!(p.display().to_string()));
            m.insert("parent_details".into(), Value::Object(src.details()));
        }
        m
    }
}
