//! VMware VMDK images (VMware "Virtual Disk Format 1.1"): a text descriptor
//! listing extents, each FLAT (plain sectors), SPARSE (hosted sparse extent,
//! [`sparse`]; compressed streamOptimized, [`stream`]) or ZERO.
//!
//! Read: monolithicSparse, streamOptimized, monolithicFlat,
//! twoGbMaxExtentSparse, twoGbMaxExtentFlat. The descriptor is a standalone
//! file or embedded in a sparse extent. Extent files are opened only from the
//! descriptor's own directory, by plain names ([`descriptor::check_file_name`]).
//! A parent (parentCID other than ffffffff) is refused unless backing files are
//! allowed, and is then opened by its parentFileNameHint from the same
//! directory. Other create types (vmfs, vmfsSparse, seSparse, ...) are refused
//! by name.

pub mod descriptor;
pub mod sparse;
pub mod stream;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, Result};
use crate::limits::{MAX_BACKING_DEPTH, MAX_HEADER_BYTES};
use crate::source::range::FileRange;
use crate::source::vhd::locate;
use crate::source::OpenOptions;
use descriptor::{check_file_name, Descriptor, ExtentType};
use serde_json::{json, Map, Value};
use sparse::{Grain, SparseExtent, SECTOR};
use std::path::{Path, PathBuf};

/// Where one extent's bytes come from.
#[derive(Debug)]
enum ExtData {
    Flat(FileRange),
    Sparse(Box<SparseExtent>),
    Zero,
}

/// One extent placed in the virtual disk.
#[derive(Debug)]
struct VExtent {
    start: u64,
    len: u64,
    file: String,
    offset_sectors: u64,
    access: String,
    data: ExtData,
}

/// A VMDK image opened for reading.
pub struct VmdkReader {
    descriptor: Option<Descriptor>,
    create_type: String,
    extents: Vec<VExtent>,
    size: u64,
    parent: Option<Box<dyn BlockSource>>,
}

impl std::fmt::Debug for VmdkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmdkReader({}, {} extents)",
            self.create_type,
            self.extents.len()
        )
    }
}

impl VmdkReader {
    /// Open `path` (a descriptor file or a sparse extent) as a boxed source.
    pub fn open(path: &Path, opts: &OpenOptions, depth: usize) -> Result<Box<dyn BlockSource>> {
        Ok(Box::new(Self::open_reader(path, opts, depth)?))
    }

    /// Open `path` (a descriptor file or a sparse extent).
    pub fn open_reader(path: &Path, opts: &OpenOptions, depth: usize) -> Result<Self> {
        let range = FileRange::open(path)?;
        let mut magic = [0u8; 4];
        range.read_exact_at(0, &mut magic, "VMDK magic")?;
        let mut r = match &magic {
            b"KDMV" => Self::from_sparse_range(range)?,
            b"COWD" => {
                return Err(Error::unsupported(
                    "VMDK3 (COWD) sparse extents (vmfsSparse / old hosted sparse) are not read by onramp",
                ))
            }
            _ => Self::from_descriptor_file(path, &range)?,
        };
        if let Some(d) = r.descriptor.as_ref().filter(|d| d.has_parent()) {
            let hint = d.parent_hint.clone().unwrap_or_default();
            let pcid = d.parent_cid.clone().unwrap_or_default();
            if !opts.allow_backing {
                return Err(Error::invalid(format!(
                    "VMDK has a parent (parentCID={pcid}, parentFileNameHint=\"{hint}\"); \
                     pass --allow-backing to read it from the image's own directory"
                )));
            }
            check_file_name(&hint, "VMDK parentFileNameHint")?;
            let next = depth.saturating_add(1);
            if next > MAX_BACKING_DEPTH {
                return Err(Error::invalid(format!(
                    "VMDK backing chain deeper than {MAX_BACKING_DEPTH}"
                )));
            }
            let p = dir_of(path).join(&hint);
            // Refuse a parent that is a symbolic link (the reader reopens it).
            drop(FileRange::open_beside(&p, "VMDK parent")?);
            let popts = OpenOptions {
                format: None,
                ..opts.clone()
            };
            let parent = crate::source::open_depth(&p, &popts, next).map_err(|e| e.at(&p))?;
            r.parent = Some(parent);
        }
        Ok(r)
    }

    /// A single hosted sparse extent held in `range` (a `.vmdk` file, or a
    /// member of an OVA). A parent it names is refused.
    pub fn from_sparse_range(range: FileRange) -> Result<Self> {
        let name = range
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_sparse_named(range, name)
    }

    /// Like [`VmdkReader::from_sparse_range`], naming the extent `name` in
    /// details (e.g. the member name inside an OVA).
    pub fn from_sparse_named(range: FileRange, name: String) -> Result<Self> {
        let sp = SparseExtent::open(range)?;
        // An extent of a multi-extent disk may carry an empty descriptor area.
        let descriptor = match &sp.descriptor {
            Some(b) if b.iter().any(|&c| c != 0 && !c.is_ascii_whitespace()) => {
                Some(Descriptor::parse(b)?)
            }
            _ => None,
        };
        let create_type = descriptor
            .as_ref()
            .map(|d| d.create_type.clone())
            .unwrap_or_else(|| {
                if sp.header.compressed() {
                    "streamOptimized".into()
                } else {
                    "monolithicSparse".into()
                }
            });
        let size = sp.size();
        Ok(VmdkReader {
            descriptor,
            create_type,
            extents: vec![VExtent {
                start: 0,
                len: size,
                file: name,
                offset_sectors: 0,
                access: "RW".into(),
                data: ExtData::Sparse(Box::new(sp)),
            }],
            size,
            parent: None,
        })
    }

    /// True when this image names a parent.
    pub fn has_parent(&self) -> bool {
        self.descriptor.as_ref().is_some_and(Descriptor::has_parent)
    }

    fn from_descriptor_file(path: &Path, range: &FileRange) -> Result<Self> {
        let head = range.read_up_to(0, 512, "VMDK descriptor")?;
        let text_end = head.iter().position(|&c| c == 0).unwrap_or(head.len());
        let text = head.get(..text_end).unwrap_or(&[]);
        let binary = text.is_empty()
            || text
                .iter()
                .any(|&c| c < 0x20 && c != b'\n' && c != b'\r' && c != b'\t');
        if binary {
            return Err(Error::corrupt(
                "VMDK file",
                "magicNumber",
                0,
                "\"KDMV\" (a sparse extent) or a text descriptor",
                format!("{:02x?} (binary)", head.get(..4).unwrap_or(&[])),
            ));
        }
        if range.len() > MAX_HEADER_BYTES {
            return Err(Error::corrupt(
                "VMDK descriptor file",
                "length",
                0,
                format!("at most {MAX_HEADER_BYTES} bytes of text"),
                range.len(),
            ));
        }
        let text = range.read_up_to(0, MAX_HEADER_BYTES, "VMDK descriptor")?;
        let d = Descriptor::parse(&text)?;
        d.check_create_type()?;
        if d.extents.is_empty() {
            return Err(Error::corrupt(
                "VMDK descriptor",
                "extent lines",
                0,
                "at least one extent",
                "none",
            ));
        }
        let dir = dir_of(path);
        let mut extents = Vec::with_capacity(d.extents.len());
        let mut start = 0u64;
        for (i, e) in d.extents.iter().enumerate() {
            let len = e.sectors.checked_mul(SECTOR).ok_or_else(|| {
                Error::corrupt_msg(format!("VMDK descriptor extent {i}: size overflows"))
            })?;
            let data = match e.kind {
                ExtentType::Zero => ExtData::Zero,
                ExtentType::Flat => {
                    check_file_name(&e.file, "VMDK extent file")?;
                    let p = dir.join(&e.file);
                    let whole = FileRange::open_beside(&p, "VMDK extent").map_err(|x| x.at(&p))?;
                    let off = e.offset.checked_mul(SECTOR).ok_or_else(|| {
                        Error::corrupt_msg(format!("VMDK extent \"{}\": offset overflows", e.file))
                    })?;
                    ExtData::Flat(
                        whole
                            .sub(off, len, &format!("VMDK flat extent \"{}\"", e.file))
                            .map_err(|x| x.at(&p))?,
                    )
                }
                ExtentType::Sparse => {
                    check_file_name(&e.file, "VMDK extent file")?;
                    let p = dir.join(&e.file);
                    let sp = SparseExtent::open(FileRange::open_beside(&p, "VMDK extent")?)
                        .map_err(|x| x.at(&p))?;
                    if sp.size() < len {
                        return Err(Error::corrupt(
                            "VMDK sparse header",
                            "capacity",
                            sp.header_at.saturating_add(12),
                            format!("at least the descriptor's {} sectors", e.sectors),
                            sp.header.capacity,
                        )
                        .at(&p));
                    }
                    ExtData::Sparse(Box::new(sp))
                }
            };
            extents.push(VExtent {
                start,
                len,
                file: e.file.clone(),
                offset_sectors: e.offset,
                access: e.access.clone(),
                data,
            });
            start = start.checked_add(len).ok_or_else(|| {
                Error::corrupt_msg("VMDK descriptor: extent sizes overflow".to_string())
            })?;
        }
        if start > crate::limits::MAX_VIRTUAL_SIZE {
            return Err(Error::corrupt(
                "VMDK descriptor",
                "extent sizes",
                0,
                format!("at most {} bytes in all", crate::limits::MAX_VIRTUAL_SIZE),
                start,
            ));
        }
        Ok(VmdkReader {
            create_type: d.create_type.clone(),
            descriptor: Some(d),
            extents,
            size: start,
            parent: None,
        })
    }

    /// Index of the extent holding byte `off`.
    fn extent_at(&self, off: u64) -> usize {
        self.extents
            .partition_point(|e| e.start.saturating_add(e.len) <= off)
    }

    /// Fill `buf` (virtual offset `off`) from the parent, zeros past its end.
    fn parent_fill(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        locate::read_parent(self.parent.as_deref(), off, buf)
    }

    /// The parent's map of `[off, off+len)`, Zero past its end.
    fn parent_map(&self, off: u64, len: u64, m: &mut MapBuilder) -> Result<()> {
        locate::map_parent(self.parent.as_deref(), off, len, m)
    }
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl BlockSource for VmdkReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let total = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        check_range(self.size, offset, total)?;
        let mut done = 0usize;
        let mut i = self.extent_at(offset);
        while done < buf.len() {
            let pos = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            let e = self
                .extents
                .get(i)
                .ok_or_else(|| Error::invalid("VMDK read past the last extent".to_string()))?;
            let local = pos.saturating_sub(e.start);
            let n = usize::try_from(e.len.saturating_sub(local))
                .unwrap_or(usize::MAX)
                .min(buf.len().saturating_sub(done));
            let out = buf
                .get_mut(done..done.saturating_add(n))
                .ok_or_else(|| Error::invalid("VMDK read: internal range error".to_string()))?;
            match &e.data {
                ExtData::Zero => out.fill(0),
                ExtData::Flat(r) => r.read_exact_at(local, out, "VMDK flat extent")?,
                ExtData::Sparse(sp) => {
                    let base = e.start;
                    sp.read(local, out, &mut |lo, b| {
                        self.parent_fill(base.saturating_add(lo), b)
                    })
                    .map_err(|x| x.at(sp_path(e)))?;
                }
            }
            done = done.saturating_add(n);
            i = i.saturating_add(1);
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        let end = offset.saturating_add(len);
        let mut m = MapBuilder::new();
        let mut pos = offset;
        let mut i = self.extent_at(offset);
        while pos < end {
            let e = self
                .extents
                .get(i)
                .ok_or_else(|| Error::invalid("VMDK map past the last extent".to_string()))?;
            let local = pos.saturating_sub(e.start);
            let n = e.len.saturating_sub(local).min(end.saturating_sub(pos));
            match &e.data {
                ExtData::Zero => m.push(pos, n, ExtentKind::Zero),
                ExtData::Flat(r) => r.push_map(local, n, pos, &mut m)?,
                ExtData::Sparse(sp) => {
                    sp.walk(local, n, |lo, ln, g| {
                        let v = e.start.saturating_add(lo);
                        match g {
                            Grain::Data(_) | Grain::Compressed(_) => {
                                m.push(v, ln, ExtentKind::Data)
                            }
                            Grain::Zero => m.push(v, ln, ExtentKind::Zero),
                            Grain::Unalloc => self.parent_map(v, ln, &mut m)?,
                        }
                        Ok(())
                    })
                    .map_err(|x| x.at(sp_path(e)))?;
                }
            }
            pos = pos.saturating_add(n);
            i = i.saturating_add(1);
        }
        Ok(m.finish())
    }

    fn format_name(&self) -> &'static str {
        "vmdk"
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("create_type".into(), json!(self.create_type));
        if let Some(d) = &self.descriptor {
            m.insert("descriptor_version".into(), json!(d.version));
            m.insert("cid".into(), json!(d.cid));
            m.insert("parent_cid".into(), json!(d.parent_cid));
            if let Some(h) = &d.parent_hint {
                m.insert("parent_file_name_hint".into(), json!(h));
            }
            for (k, v) in &d.ddb {
                if k == "ddb.adapterType" || k == "ddb.virtualHWVersion" {
                    m.insert(k.clone(), json!(v));
                }
            }
        }
        let mut exts = Vec::new();
        for e in &self.extents {
            let mut x = Map::new();
            x.insert("file".into(), json!(e.file));
            x.insert("access".into(), json!(e.access));
            x.insert("sectors".into(), json!(e.len / SECTOR));
            match &e.data {
                ExtData::Zero => {
                    x.insert("type".into(), json!("ZERO"));
                }
                ExtData::Flat(_) => {
                    x.insert("type".into(), json!("FLAT"));
                    x.insert("offset_sectors".into(), json!(e.offset_sectors));
                }
                ExtData::Sparse(sp) => {
                    let h = &sp.header;
                    x.insert("type".into(), json!("SPARSE"));
                    x.insert("version".into(), json!(h.version));
                    x.insert("flags".into(), json!(format!("{:#010x}", h.flags)));
                    x.insert("grain_size_bytes".into(), json!(sp.grain_bytes()));
                    x.insert("num_gtes_per_gt".into(), json!(h.num_gtes_per_gt));
                    x.insert(
                        "compression".into(),
                        json!(if h.compressed() { "deflate" } else { "none" }),
                    );
                    x.insert("grain_directory_at".into(), json!(sp.gd_at()));
                    x.insert("header_from_footer".into(), json!(sp.header_at != 0));
                    x.insert("unclean_shutdown".into(), json!(h.unclean_shutdown));
                }
            }
            exts.push(Value::Object(x));
        }
        m.insert("extents".into(), Value::Array(exts));
        if let Some(p) = &self.parent {
            m.insert("parent_format".into(), json!(p.format_name()));
        }
        m
    }
}

fn sp_path(e: &VExtent) -> &Path {
    match &e.data {
        ExtData::Sparse(sp) => sp.path(),
        _ => Path::new(""),
    }
}
