//! Partition tables and volume managers: what volumes a disk holds.
//!
//! [`scan`] reads a disk through [`BlockSource`] and returns a [`Layout`]: the
//! table scheme (GPT, MBR or none), and every volume found, each openable as a
//! window of the disk ([`Volume::open`]). Partitions come from [`mbr`] (primary
//! entries and the extended/logical EBR chain) or [`gpt`] (primary and backup
//! headers and entry arrays, CRC-checked; a protective or hybrid MBR is
//! recognised). LVM2 physical volumes found on the disk or on a partition are
//! decoded by [`lvm`] and their linear logical volumes are added as volumes of
//! scheme `lvm`. Problems that still leave a usable answer (a bad backup GPT,
//! a refused striped LV) are reported in [`Layout::warnings`].
//!
//! Everything is read-only and bounded: table sizes are checked against
//! [`crate::limits`], chains have loop and depth guards.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod gpt;
pub mod lvm;
pub mod mbr;

use crate::block::slice::Slice;
use crate::block::{BlockSource, Extent};
use crate::error::{Error, Result};
use std::sync::Arc;

/// How a volume was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// An MBR (DOS) partition, primary or logical.
    Mbr,
    /// A GPT partition.
    Gpt,
    /// No partition table: the whole disk.
    None,
    /// An LVM2 logical volume.
    Lvm,
}

/// One volume of a disk: a partition, the whole disk, or a logical volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Volume {
    /// Partition number as Linux names it (`sda1` is 1; MBR logicals from 5);
    /// for logical volumes, their order in the VG metadata from 1.
    pub index: u32,
    /// First byte on the disk (for LVs: of the first segment).
    pub start_bytes: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Where the volume came from.
    pub scheme: Scheme,
    /// Partition type: a GPT type GUID (lower case) or an MBR type byte as `0x83`;
    /// for LVs the segment type (`linear`).
    pub type_id: String,
    /// A friendly name for the type, where known ("EFI System", "Linux LVM").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// GPT partition name, or `vg/lv` for logical volumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GPT unique partition GUID (PARTUUID), or the LV's UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// MBR active flag, or GPT legacy-BIOS-bootable attribute (bit 2).
    pub bootable: bool,
    /// An EFI system partition (GPT type or MBR type 0xEF).
    pub esp: bool,
    /// The volume holds an LVM2 physical volume label.
    pub lvm_pv: bool,
    /// Disk ranges `(offset, len)` making up the volume, in order (one for
    /// partitions; one per segment for logical volumes).
    #[serde(skip)]
    pub segments: Vec<(u64, u64)>,
}

impl Volume {
    /// A plain contiguous volume.
    pub(crate) fn contiguous(index: u32, start: u64, size: u64, scheme: Scheme) -> Self {
        Volume {
            index,
            start_bytes: start,
            size_bytes: size,
            scheme,
            type_id: String::new(),
            type_name: None,
            name: None,
            uuid: None,
            bootable: false,
            esp: false,
            lvm_pv: false,
            segments: vec![(start, size)],
        }
    }

    /// Open the volume as a block source over `disk`.
    pub fn open(&self, disk: &Arc<dyn BlockSource>) -> Result<Arc<dyn BlockSource>> {
        match self.segments.as_slice() {
            [(start, len)] => Ok(Arc::new(Slice::new(disk.clone(), *start, *len)?)),
            segs => Ok(Arc::new(Concat::new(disk.clone(), segs)?)),
        }
    }
}

/// The partition layout of a disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// The table scheme of the disk itself: `gpt`, `mbr` or `none`.
    pub scheme: Scheme,
    /// Logical sector size the table was found with (512 or 4096).
    pub sector_size: u32,
    /// GPT disk GUID, or the MBR disk signature as 8 hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// The MBR of a GPT disk holds real partitions besides the 0xEE entry.
    pub hybrid_mbr: bool,
    /// Volumes in table order, logical volumes last.
    pub volumes: Vec<Volume>,
    /// Problems that did not stop the scan.
    pub warnings: Vec<String>,
}

impl Layout {
    /// An EFI system partition exists (the disk boots with UEFI).
    pub fn has_esp(&self) -> bool {
        self.volumes.iter().any(|v| v.esp)
    }
}

/// Find the partitions and logical volumes of `disk`.
pub fn scan(disk: &Arc<dyn BlockSource>) -> Result<Layout> {
    let size = disk.size();
    if size < 512 {
        return Err(Error::corrupt_msg(format!(
            "disk of {size} bytes is too small to hold a partition table or a filesystem"
        )));
    }
    let mut warnings = Vec::new();
    let mut sector0 = [0u8; 512];
    disk.read_at(0, &mut sector0)?;
    let mbr = mbr::parse_sector0(&sector0, size);

    let mut layout = match gpt::find(disk.as_ref(), &mut warnings)? {
        Some(g) => {
            let hybrid = mbr
                .as_ref()
                .is_some_and(|m| m.has_protective() && m.entries.len() > 1);
            if mbr.as_ref().is_some_and(|m| !m.has_protective()) {
                warnings.push(
                    "GPT headers found but the MBR has no protective 0xEE entry; using GPT"
                        .to_string(),
                );
            }
            Layout {
                scheme: Scheme::Gpt,
                sector_size: g.sector_size,
                disk_id: Some(g.disk_guid.clone()),
                hybrid_mbr: hybrid,
                volumes: g.volumes,
                warnings: Vec::new(),
            }
        }
        None => match mbr {
            Some(m) if m.has_protective() => {
                return Err(Error::corrupt_msg(
                    "MBR is protective (type 0xEE) but no valid GPT header was found at LBA 1 \
                     (512- or 4096-byte sectors) nor at the last LBA",
                ));
            }
            Some(m) => {
                let vols = mbr::volumes(disk.as_ref(), &m, &mut warnings)?;
                Layout {
                    scheme: Scheme::Mbr,
                    sector_size: 512,
                    disk_id: Some(format!("{:08x}", m.disk_signature)),
                    hybrid_mbr: false,
                    volumes: vols,
                    warnings: Vec::new(),
                }
            }
            None => {
                if mbr::has_signature(&sector0) {
                    warnings.push(
                        "sector 0 has the MBR signature 0x55AA but no valid partition entries \
                         (bad status byte, or a partition past the end of the disk); \
                         reading the disk as having no partition table"
                            .to_string(),
                    );
                }
                Layout {
                    scheme: Scheme::None,
                    sector_size: 512,
                    disk_id: None,
                    hybrid_mbr: false,
                    volumes: vec![Volume::contiguous(1, 0, size, Scheme::None)],
                    warnings: Vec::new(),
                }
            }
        },
    };

    // LVM2 physical volumes: on any volume found so far.
    let mut pvs = Vec::new();
    for v in &mut layout.volumes {
        let src = match v.open(disk) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("volume {}: {e}", v.index));
                continue;
            }
        };
        match lvm::read_pv(src.as_ref()) {
            Ok(Some(pv)) => {
                v.lvm_pv = true;
                pvs.push((v.start_bytes, pv));
            }
            Ok(None) => {}
            Err(e) => {
                v.lvm_pv = true;
                warnings.push(format!("LVM physical volume on volume {}: {e}", v.index));
            }
        }
    }
    if !pvs.is_empty() {
        let lvs = lvm::logical_volumes(&pvs, size, &mut warnings);
        layout.volumes.extend(lvs);
    }
    layout.warnings.extend(warnings);
    Ok(layout)
}

/// Several ranges of a disk read as one device (a multi-segment linear LV).
pub struct Concat {
    inner: Arc<dyn BlockSource>,
    /// `(offset in the volume, offset on the disk, len)`.
    parts: Vec<(u64, u64, u64)>,
    size: u64,
}

impl Concat {
    /// Concatenate `segs` (disk offset, len) of `inner`.
    pub fn new(inner: Arc<dyn BlockSource>, segs: &[(u64, u64)]) -> Result<Self> {
        let mut parts = Vec::new();
        let mut pos = 0u64;
        for &(start, len) in segs {
            if start.checked_add(len).is_none_or(|e| e > inner.size()) {
                return Err(Error::corrupt_msg(format!(
                    "volume segment of {len} bytes at byte {start} runs past the end of the {}-byte disk",
                    inner.size()
                )));
            }
            parts.push((pos, start, len));
            pos = pos
                .checked_add(len)
                .ok_or_else(|| Error::corrupt_msg("volume size overflows"))?;
        }
        Ok(Concat {
            inner,
            parts,
            size: pos,
        })
    }

    /// `(volume offset, disk offset, len)` pieces covering `[offset, offset+len)`.
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        for &(vo, d, l) in &self.parts {
            let ve = vo.saturating_add(l);
            let s = offset.max(vo);
            let e = end.min(ve);
            if s < e {
                out.push((
                    s,
                    d.saturating_add(s.saturating_sub(vo)),
                    e.saturating_sub(s),
                ));
            }
        }
        out
    }
}

impl BlockSource for Concat {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = crate::bytes::u(buf.len());
        crate::block::check_range(self.size, offset, len)?;
        for (vo, d, l) in self.pieces(offset, len) {
            let a = crate::bytes::us(vo.saturating_sub(offset));
            let b = a.saturating_add(crate::bytes::us(l));
            let piece = buf
                .get_mut(a..b)
                .ok_or_else(|| Error::invalid("concat read out of range"))?;
            self.inner.read_at(d, piece)?;
        }
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        crate::block::check_range(self.size, offset, len)?;
        let mut m = crate::block::MapBuilder::new();
        for (vo, d, l) in self.pieces(offset, len) {
            for e in self.inner.map(d, l)? {
                let o = vo.saturating_add(e.offset.saturating_sub(d));
                m.push(o, e.len, e.kind);
            }
        }
        Ok(m.finish())
    }
    fn format_name(&self) -> &'static str {
        "concat"
    }
}
