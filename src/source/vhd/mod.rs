//! Microsoft VHD images: fixed, dynamic and differencing (Microsoft "Virtual
//! Hard Disk Image Format Specification" v1.0).
//!
//! - **Fixed**: the data followed by a 512-byte footer ([`footer`]).
//! - **Dynamic**: a footer copy at byte 0, a dynamic disk header
//!   ([`header`]), a Block Allocation Table ([`bat`]) and blocks, each a sector
//!   bitmap then data, and the footer at the end. Both footer copies must
//!   carry valid checksums and agree byte for byte; qemu reads only the first
//!   copy, we refuse an image whose copies disagree as corrupt. Like qemu's vpc
//!   driver (and the images every creator writes, bitmap all ones), an
//!   allocated block of a dynamic disk reads entirely from the file; an
//!   unallocated block reads as zeros.
//! - **Differencing**: a dynamic disk whose unallocated blocks, and whose
//!   sectors with a clear bitmap bit, come from a parent VHD. The parent is
//!   opened only with `--allow-backing`, only through the relative `W2ru`
//!   locator, only inside the child's own directory ([`locate`]); its footer
//!   `unique_id` must equal the child's `parent_unique_id`.
//!
//! ## Virtual size
//!
//! The footer holds both `current_size` and a CHS geometry, and creators
//! disagree on which one is the disk size. We follow qemu's vpc driver
//! ([`Footer::uses_current_size`]): `current_size` for Hyper-V (`win `),
//! qemu with `force_size` (`qem2`), Disk2vhd (`d2v `), XenConverter (`CTXS`),
//! XenServer (`tap\0`) and Azure (`wa\0\0`), and whenever the geometry is at
//! its maximum (65535/16/255); otherwise (Virtual PC `vpc `, older qemu
//! `qemu`, unknown creators) cylinders × heads × sectors × 512.

pub mod bat;
pub mod footer;
pub mod header;
pub(crate) mod locate;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, Result};
use crate::limits;
use crate::source::raw::{read_exact_at, RawReader};
use crate::source::{Format, OpenOptions};
use bat::{Bat, UNUSED};
use footer::{DiskType, Footer, FOOTER_SIZE};
use header::{DynHeader, HEADER_SIZE, PLATFORM_W2RU};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A VHD image opened for reading.
pub struct VhdReader {
    footer: Footer,
    file_size: u64,
    size: u64,
    kind: Kind,
}

enum Kind {
    Fixed(RawReader),
    Sparse(Box<Sparse>),
}

/// A dynamic or differencing disk.
struct Sparse {
    file: File,
    path: PathBuf,
    header: DynHeader,
    bat: Bat,
    block_size: u64,
    /// The parent of a differencing disk (None for dynamic disks).
    parent: Option<Parent>,
    /// Locators as (code, decoded path) for `info`.
    locators: Vec<(String, String)>,
}

struct Parent {
    path: PathBuf,
    src: Box<dyn BlockSource>,
}

impl std::fmt::Debug for VhdReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdReader")
            .field("footer", &self.footer)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Name of a footer field by byte offset (for mismatch messages).
fn footer_field(off: usize) -> &'static str {
    match off {
        0..=7 => "cookie",
        8..=11 => "features",
        12..=15 => "file_format_version",
        16..=23 => "data_offset",
        24..=27 => "time_stamp",
        28..=31 => "creator_application",
        32..=35 => "creator_version",
        36..=39 => "creator_host_os",
        40..=47 => "original_size",
        48..=55 => "current_size",
        56..=59 => "disk_geometry",
        60..=63 => "disk_type",
        64..=67 => "checksum",
        68..=83 => "unique_id",
        84 => "saved_state",
        _ => "reserved",
    }
}

impl VhdReader {
    /// Open `path` without following a parent (differencing disks are refused).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &OpenOptions::default(), 0)
    }

    /// Open `path`; a differencing disk's parent is opened (through
    /// [`crate::source::open_depth`] at `depth + 1`) only when
    /// `opts.allow_backing` is set.
    pub fn open_with(path: &Path, opts: &OpenOptions, depth: usize) -> Result<Self> {
        let (file, file_size) = locate::open_file(path)?;
        let foot_off = file_size
            .checked_sub(footer::FOOTER_SIZE_U64)
            .ok_or_else(|| {
                Error::corrupt("VHD file", "length", 0, "at least 512 bytes", file_size)
            })?;
        let mut b = [0u8; FOOTER_SIZE];
        read_exact_at(&file, foot_off, &mut b, "VHD footer")?;
        let footer = Footer::parse(&b, foot_off)?;
        let size = footer.virtual_size();
        if size > limits::MAX_VIRTUAL_SIZE {
            return Err(Error::corrupt(
                "VHD footer",
                "current_size",
                foot_off.saturating_add(48),
                format!("at most {} bytes", limits::MAX_VIRTUAL_SIZE),
                size,
            ));
        }
        if footer.disk_type == DiskType::Fixed {
            if size > foot_off {
                return Err(Error::corrupt(
                    "VHD footer",
                    "current_size",
                    foot_off.saturating_add(48),
                    format!("at most {foot_off} (the data before the footer)"),
                    size,
                ));
            }
            let data = RawReader::from_file(file, path)?;
            return Ok(VhdReader {
                footer,
                file_size,
                size,
                kind: Kind::Fixed(data),
            });
        }
        // Dynamic and differencing: the copy at byte 0 must match.
        let mut c = [0u8; FOOTER_SIZE];
        read_exact_at(&file, 0, &mut c, "VHD footer copy")?;
        Footer::parse(&c, 0)?;
        if let Some(i) = c.iter().zip(b.iter()).position(|(x, y)| x != y) {
            let field = footer_field(i);
            return Err(Error::corrupt(
                "VHD footer copy",
                field,
                u64::try_from(i).unwrap_or(0),
                format!("the same bytes as the footer at byte {foot_off}"),
                "a different value (the two footer copies disagree)",
            ));
        }
        let hdr_end = footer.data_offset.checked_add(1024);
        if footer.data_offset < 512 || hdr_end.is_none_or(|e| e > foot_off) {
            return Err(Error::corrupt(
                "VHD footer",
                "data_offset",
                foot_off.saturating_add(16),
                format!("the offset of a 1024-byte header between byte 512 and {foot_off}"),
                footer.data_offset,
            ));
        }
        let mut hb = [0u8; HEADER_SIZE];
        read_exact_at(
            &file,
            footer.data_offset,
            &mut hb,
            "VHD dynamic disk header",
        )?;
        let header = DynHeader::parse(&hb, footer.data_offset)?;
        let bat = Bat::load(&file, &header, size, footer.current_size, foot_off)?;
        let mut locators = Vec::new();
        let mut relative = None;
        for (i, l) in header.locators.iter().enumerate() {
            if l.platform_code == 0 {
                continue;
            }
            if l.platform_data_length > header::MAX_LOCATOR_BYTES
                || l.platform_data_offset
                    .checked_add(u64::from(l.platform_data_length))
                    .is_none_or(|e| e > foot_off)
            {
                return Err(Error::corrupt(
                    "VHD parent locator",
                    format!("entry {i} platform_data_offset/length"),
                    header.locator_field_offset(i),
                    format!(
                        "at most {} bytes inside the file before byte {foot_off}",
                        header::MAX_LOCATOR_BYTES
                    ),
                    format!(
                        "{} bytes at byte {}",
                        l.platform_data_length, l.platform_data_offset
                    ),
                ));
            }
            let mut data = vec![0u8; usize::try_from(l.platform_data_length).unwrap_or(0)];
            read_exact_at(
                &file,
                l.platform_data_offset,
                &mut data,
                "VHD parent locator",
            )?;
            let text = l.decode(&data);
            if l.platform_code == PLATFORM_W2RU && relative.is_none() {
                relative = Some(text.clone());
            }
            locators.push((l.code_str(), text));
        }
        let parent = if footer.disk_type == DiskType::Differencing {
            Some(open_parent(
                path,
                opts,
                depth,
                &header,
                relative.as_deref(),
                &locators,
            )?)
        } else {
            None
        };
        let block_size = u64::from(header.block_size);
        Ok(VhdReader {
            footer,
            file_size,
            size,
            kind: Kind::Sparse(Box::new(Sparse {
                file,
                path: path.to_path_buf(),
                header,
                bat,
                block_size,
                parent,
                locators,
            })),
        })
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }
}

fn open_parent(
    path: &Path,
    opts: &OpenOptions,
    depth: usize,
    header: &DynHeader,
    relative: Option<&str>,
    locators: &[(String, String)],
) -> Result<Parent> {
    let mut wanted = format!("{:?}", header.parent_unicode_name);
    for (code, p) in locators {
        wanted.push_str(&format!(", {code} {p:?}"));
    }
    locate::parent_allowed("VHD", opts, depth, &wanted)?;
    let ppath = locate::resolve(path, relative, &wanted)?;
    // The parent's identity: its footer unique_id must be the one the child names.
    let (pf, plen) = locate::open_file(&ppath)?;
    let mut pb = [0u8; FOOTER_SIZE];
    read_exact_at(
        &pf,
        plen.saturating_sub(footer::FOOTER_SIZE_U64),
        &mut pb,
        "parent VHD footer",
    )
    .map_err(|e| e.at(&ppath))?;
    let pfoot = Footer::parse(&pb, plen.saturating_sub(512)).map_err(|e| e.at(&ppath))?;
    if pfoot.unique_id != header.parent_unique_id {
        return Err(Error::corrupt(
            "VHD dynamic disk header",
            "parent_unique_id",
            header.offset.saturating_add(40),
            format!(
                "the unique_id of parent {} ({})",
                ppath.display(),
                crate::target::output::hex(&pfoot.unique_id)
            ),
            crate::target::output::hex(&header.parent_unique_id),
        ));
    }
    drop(pf);
    let src = locate::open_parent_as(&ppath, Format::Vhd, opts, depth)?;
    Ok(Parent { path: ppath, src })
}

impl Sparse {
    fn parent_src(&self) -> Option<&dyn BlockSource> {
        self.parent.as_ref().map(|p| p.src.as_ref())
    }

    /// Visit `[offset, offset+len)` in pieces that each come from one place:
    /// `Some(file_offset)` for this file, `None` for the parent / zeros.
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, Option<u64>) -> Result<()>,
    ) -> Result<()> {
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let blk = pos.checked_div(self.block_size).unwrap_or(0);
            let in_blk = pos.checked_rem(self.block_size).unwrap_or(0);
            let n = (self.block_size.saturating_sub(in_blk)).min(end.saturating_sub(pos));
            let entry = usize::try_from(blk)
                .ok()
                .and_then(|i| self.bat.entries.get(i))
                .copied()
                .unwrap_or(UNUSED);
            if entry == UNUSED {
                f(pos, n, None)?;
            } else {
                let bstart = u64::from(entry).saturating_mul(512);
                let data = bstart.saturating_add(self.bat.bitmap_bytes);
                if self.parent.is_none() {
                    f(pos, n, Some(data.saturating_add(in_blk)))?;
                } else {
                    // Sector-granular: read the bitmap bytes covering the range.
                    let s0 = in_blk / 512;
                    let s1 = in_blk.saturating_add(n).div_ceil(512);
                    let b0 = s0 / 8;
                    let b1 = s1.div_ceil(8);
                    let mut bits = vec![0u8; usize::try_from(b1.saturating_sub(b0)).unwrap_or(0)];
                    read_exact_at(
                        &self.file,
                        bstart.saturating_add(b0),
                        &mut bits,
                        "VHD block bitmap",
                    )
                    .map_err(|e| e.at(&self.path))?;
                    let blk_base = pos.saturating_sub(in_blk);
                    locate::bit_runs(&bits, s0, s1, true, |a, b, set| {
                        let ra = blk_base.saturating_add(a.saturating_mul(512)).max(pos);
                        let rb = blk_base
                            .saturating_add(b.saturating_mul(512))
                            .min(pos.saturating_add(n));
                        let src = set.then(|| data.saturating_add(ra.saturating_sub(blk_base)));
                        f(ra, rb.saturating_sub(ra), src)
                    })?;
                }
            }
            pos = pos.saturating_add(n);
        }
        Ok(())
    }
}

impl BlockSource for VhdReader {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        check_range(self.size, offset, len)?;
        match &self.kind {
            Kind::Fixed(r) => r.read_at(offset, buf),
            Kind::Sparse(s) => s.walk(offset, len, |pos, n, src| {
                let piece = locate::piece(buf, offset, pos, n)?;
                match src {
                    Some(off) => {
                        read_exact_at(&s.file, off, piece, "VHD block").map_err(|e| e.at(&s.path))
                    }
                    None => locate::read_parent(s.parent_src(), pos, piece),
                }
            }),
        }
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        match &self.kind {
            Kind::Fixed(r) => r.map(offset, len),
            Kind::Sparse(s) => {
                let mut m = MapBuilder::new();
                s.walk(offset, len, |pos, n, src| match src {
                    Some(_) => {
                        m.push(pos, n, ExtentKind::Data);
                        Ok(())
                    }
                    None => locate::map_parent(s.parent_src(), pos, n, &mut m),
                })?;
                Ok(m.finish())
            }
        }
    }
    fn format_name(&self) -> &'static str {
        "vhd"
    }
    fn details(&self) -> Map<String, Value> {
        let mut m = footer_details(&self.footer, self.file_size);
        if let Kind::Sparse(s) = &self.kind {
            let h = &s.header;
            let allocated = s.bat.entries.iter().filter(|&&e| e != UNUSED).count();
            m.insert(
                "dynamic_header".into(),
                json!({
                    "offset": h.offset,
                    "data_offset": format!("{:#018x}", h.data_offset),
                    "table_offset": h.table_offset,
                    "header_version": format!("{:#010x}", h.header_version),
                    "max_table_entries": h.max_table_entries,
                    "block_size": h.block_size,
                    "checksum": format!("{:#010x}", h.checksum),
                    "parent_unique_id": crate::target::output::hex(&h.parent_unique_id),
                    "parent_time_stamp": h.parent_time_stamp,
                    "parent_unicode_name": h.parent_unicode_name,
                    "parent_locators": s.locators.iter().map(|(c, p)| json!({"platform_code": c, "path": p})).collect::<Vec<_>>(),
                    "allocated_blocks": allocated,
                }),
            );
            if let Some(p) = &s.parent {
                m.insert("parent".into(), json!(p.path.display().to_string()));
                m.insert("parent_details".into(), Value::Object(p.src.details()));
            }
        }
        m
    }
}

/// Every footer field, plus whether Azure's size rules hold.
pub fn footer_details(f: &Footer, file_size: u64) -> Map<String, Value> {
    const MIB: u64 = 1 << 20;
    let mut m = Map::new();
    m.insert("disk_type".into(), json!(f.disk_type.name()));
    m.insert("features".into(), json!(format!("{:#010x}", f.features)));
    m.insert(
        "file_format_version".into(),
        json!(format!("{:#010x}", f.file_format_version)),
    );
    m.insert(
        "data_offset".into(),
        json!(format!("{:#018x}", f.data_offset)),
    );
    m.insert("time_stamp".into(), json!(f.time_stamp));
    m.insert(
        "creator_application".into(),
        json!(f.creator_application_str()),
    );
    m.insert(
        "creator_version".into(),
        json!(format!("{:#010x}", f.creator_version)),
    );
    m.insert(
        "creator_host_os".into(),
        json!(String::from_utf8_lossy(&f.creator_host_os)),
    );
    m.insert("original_size".into(), json!(f.original_size));
    m.insert("current_size".into(), json!(f.current_size));
    m.insert(
        "disk_geometry".into(),
        json!({"cylinders": f.cylinders, "heads": f.heads, "sectors_per_track": f.sectors_per_track}),
    );
    m.insert("checksum".into(), json!(format!("{:#010x}", f.checksum)));
    m.insert(
        "unique_id".into(),
        json!(crate::target::output::hex(&f.unique_id)),
    );
    m.insert("saved_state".into(), json!(f.saved_state));
    m.insert(
        "size_source".into(),
        json!(if f.uses_current_size() {
            "current_size"
        } else {
            "chs"
        }),
    );
    let fixed = f.disk_type == DiskType::Fixed;
    let mib_aligned = f.current_size.is_multiple_of(MIB);
    let file_ok = !fixed || Some(file_size) == f.current_size.checked_add(512);
    let min_ok = f.current_size >= 20 * MIB;
    let max_ok = f.current_size <= (4u64 << 40);
    m.insert(
        "azure".into(),
        json!({
            "fixed": fixed,
            "size_mib_aligned": mib_aligned,
            "file_size_is_size_plus_footer": file_ok,
            "at_least_20_mib": min_ok,
            "os_disk_at_most_4_tib": max_ok,
            "ok": fixed && mib_aligned && file_ok && min_ok && max_ok,
        }),
    );
    m
}
