//! Microsoft VHD images. Fixed disks: the data followed by a 512-byte footer.
//! (Dynamic and differencing disks: see issue 3.)

pub mod footer;

use crate::block::{check_range, BlockSource, Extent};
use crate::error::{Error, IoContext, Result};
use crate::source::raw::{read_exact_at, RawReader};
use footer::{DiskType, Footer, FOOTER_SIZE};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::path::Path;

/// A VHD image opened for reading.
#[derive(Debug)]
pub struct VhdReader {
    footer: Footer,
    file_size: u64,
    size: u64,
    data: RawReader,
}

impl VhdReader {
    /// Open `path` and check its footer.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
        let file_size = file.metadata().ctx(|| "stat".into())?.len();
        let foot_off = file_size
            .checked_sub(footer::FOOTER_SIZE_U64)
            .ok_or_else(|| {
                Error::corrupt("VHD file", "length", 0, "at least 512 bytes", file_size)
            })?;
        let mut b = [0u8; FOOTER_SIZE];
        read_exact_at(&file, foot_off, &mut b, "VHD footer")?;
        let footer = Footer::parse(&b, foot_off)?;
        if footer.disk_type != DiskType::Fixed {
            return Err(Error::unsupported(format!(
                "{} VHD disks are not read by this build (only fixed)",
                footer.disk_type.name()
            )));
        }
        let size = footer.virtual_size();
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
        Ok(VhdReader {
            footer,
            file_size,
            size,
            data,
        })
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }
}

impl BlockSource for VhdReader {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(
            self.size,
            offset,
            u64::try_from(buf.len()).unwrap_or(u64::MAX),
        )?;
        self.data.read_at(offset, buf)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        self.data.map(offset, len)
    }
    fn format_name(&self) -> &'static str {
        "vhd"
    }
    fn details(&self) -> Map<String, Value> {
        footer_details(&self.footer, self.file_size)
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
