//! The 512-byte VHD hard disk footer (Microsoft "Virtual Hard Disk Image
//! Format Specification" v1.0, "Hard Disk Footer Format"), parsed and built.
//!
//! All fields are big-endian. The checksum is the one's complement of the sum
//! of all footer bytes with the checksum field taken as zero.

use crate::error::{Error, Result};

/// Footer size in bytes (spec: 512; some old images write 511, which we refuse).
pub const FOOTER_SIZE: usize = 512;
/// [`FOOTER_SIZE`] as a file offset.
pub const FOOTER_SIZE_U64: u64 = 512;
/// `cookie`: "conectix".
pub const COOKIE: &[u8; 8] = b"conectix";
/// `data_offset` of a fixed disk: all ones.
pub const FIXED_DATA_OFFSET: u64 = u64::MAX;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01T00:00:00Z).
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// Largest CHS product the footer can describe (65535 × 16 × 255 sectors).
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// `disk_type` values (spec table "Disk Type").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// 2: fixed hard disk.
    Fixed,
    /// 3: dynamic hard disk.
    Dynamic,
    /// 4: differencing hard disk.
    Differencing,
}

impl DiskType {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }
    /// The on-disk value.
    pub fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// A parsed footer; field names follow the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Features (bit 1 "reserved" must be set; bit 0 "temporary").
    pub features: u32,
    /// File format version, 0x00010000.
    pub file_format_version: u32,
    /// Offset of the dynamic disk header; all ones for fixed disks.
    pub data_offset: u64,
    /// Seconds since 2000-01-01 UTC.
    pub time_stamp: u32,
    /// Four bytes naming the creating application ("win ", "qem2", "vpc ", ...).
    pub creator_application: [u8; 4],
    /// Creator version (major.minor in 16 bits each).
    pub creator_version: u32,
    /// Creator host OS ("Wi2k" or "Mac ").
    pub creator_host_os: [u8; 4],
    /// Size at creation, in bytes.
    pub original_size: u64,
    /// Current size, in bytes.
    pub current_size: u64,
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
    /// Disk type.
    pub disk_type: DiskType,
    /// Checksum as stored.
    pub checksum: u32,
    /// 128-bit unique id.
    pub unique_id: [u8; 16],
    /// Saved state flag.
    pub saved_state: u8,
}

fn arr4(b: &[u8], off: usize) -> [u8; 4] {
    <[u8; 4]>::try_from(crate::bytes::sub(b, off, 4)).unwrap_or([0; 4])
}

/// Big-endian u32 at `off` (0 when out of range).
pub(super) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(arr4(b, off))
}

/// Big-endian u64 at `off` (0 when out of range).
pub(super) fn be64(b: &[u8], off: usize) -> u64 {
    let a = <[u8; 8]>::try_from(crate::bytes::sub(b, off, 8)).unwrap_or([0; 8]);
    u64::from_be_bytes(a)
}

/// The VHD checksum (footer and dynamic header alike): one's complement of
/// the byte sum with the checksum field `field` taken as zero.
pub(super) fn ones_complement_sum(b: &[u8], field: std::ops::Range<usize>) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !field.contains(i))
        .fold(0u32, |acc, (_, &x)| acc.wrapping_add(u32::from(x)));
    !sum
}

/// The checks the footer and the dynamic header open with: the 8-byte
/// `cookie` at byte 0, then the big-endian checksum in `field` against
/// [`ones_complement_sum`]. `offset` is where `b` was read; returns the
/// stored checksum.
pub(super) fn check_cookie_and_checksum(
    structure: &'static str,
    b: &[u8],
    offset: u64,
    cookie: &[u8; 8],
    field: std::ops::Range<usize>,
) -> Result<u32> {
    let found = b.get(..8).unwrap_or(&[]);
    if found != cookie {
        return Err(Error::corrupt(
            structure,
            "cookie",
            offset,
            format!("{:?}", String::from_utf8_lossy(cookie)),
            format!("{:?}", String::from_utf8_lossy(found)),
        ));
    }
    let stored = be32(b, field.start);
    let computed = ones_complement_sum(b, field.clone());
    if stored != computed {
        return Err(Error::corrupt(
            structure,
            "checksum",
            offset.saturating_add(crate::bytes::u(field.start)),
            format!("{computed:#010x}"),
            format!("{stored:#010x}"),
        ));
    }
    Ok(stored)
}

/// Four-character codes (creator application, platform code) as text, with
/// unprintable bytes shown as '.'.
pub(super) fn printable(code: &[u8]) -> String {
    code.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                char::from(c)
            } else {
                '.'
            }
        })
        .collect()
}

/// One's complement of the byte sum, with bytes 64..68 (the checksum) as zero.
pub fn checksum(b: &[u8; FOOTER_SIZE]) -> u32 {
    ones_complement_sum(b, 64..68)
}

impl Footer {
    /// Parse and check a footer read at byte `offset` of the file.
    pub fn parse(b: &[u8; FOOTER_SIZE], offset: u64) -> Result<Footer> {
        let stored = check_cookie_and_checksum("VHD footer", b, offset, COOKIE, 64..68)?;
        let dt = be32(b, 60);
        let disk_type = DiskType::from_u32(dt).ok_or_else(|| {
            Error::corrupt(
                "VHD footer",
                "disk_type",
                offset.saturating_add(60),
                "2 (fixed), 3 (dynamic) or 4 (differencing)",
                dt,
            )
        })?;
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(b.get(68..84).unwrap_or(&[0; 16]));
        let geometry = be32(b, 56);
        let [c_hi, c_lo, heads, spt] = geometry.to_be_bytes();
        Ok(Footer {
            features: be32(b, 8),
            file_format_version: be32(b, 12),
            data_offset: be64(b, 16),
            time_stamp: be32(b, 24),
            creator_application: arr4(b, 28),
            creator_version: be32(b, 32),
            creator_host_os: arr4(b, 36),
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            cylinders: u16::from_be_bytes([c_hi, c_lo]),
            heads,
            sectors_per_track: spt,
            disk_type,
            checksum: stored,
            unique_id,
            saved_state: b.get(84).copied().unwrap_or(0),
        })
    }

    /// Serialise, computing the checksum.
    pub fn to_bytes(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        let mut put = |off: usize, v: &[u8]| {
            if let Some(d) = b.get_mut(off..off.saturating_add(v.len())) {
                d.copy_from_slice(v);
            }
        };
        put(0, COOKIE);
        put(8, &self.features.to_be_bytes());
        put(12, &self.file_format_version.to_be_bytes());
        put(16, &self.data_offset.to_be_bytes());
        put(24, &self.time_stamp.to_be_bytes());
        put(28, &self.creator_application);
        put(32, &self.creator_version.to_be_bytes());
        put(36, &self.creator_host_os);
        put(40, &self.original_size.to_be_bytes());
        put(48, &self.current_size.to_be_bytes());
        put(56, &self.cylinders.to_be_bytes());
        put(58, &[self.heads, self.sectors_per_track]);
        put(60, &self.disk_type.code().to_be_bytes());
        put(68, &self.unique_id);
        put(84, &[self.saved_state]);
        let c = checksum(&b);
        if let Some(d) = b.get_mut(64..68) {
            d.copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    /// Sectors described by the CHS geometry.
    pub fn chs_sectors(&self) -> u64 {
        u64::from(self.cylinders)
            .saturating_mul(u64::from(self.heads))
            .saturating_mul(u64::from(self.sectors_per_track))
    }

    /// Whether readers that follow qemu's vpc driver trust `current_size`
    /// (rather than CHS) for this creator: Hyper-V "win ", qemu "qem2",
    /// Disk2vhd "d2v ", XenConverter "CTXS", XenServer "tap\0", Azure "wa\0\0";
    /// or when CHS is at its maximum.
    pub fn uses_current_size(&self) -> bool {
        matches!(
            &self.creator_application,
            b"win " | b"qem2" | b"d2v " | b"CTXS" | b"tap\0" | b"wa\0\0"
        ) || self.chs_sectors() >= MAX_CHS_SECTORS
    }

    /// Virtual size in bytes, following the creator rule of [`uses_current_size`](Self::uses_current_size).
    pub fn virtual_size(&self) -> u64 {
        if self.uses_current_size() {
            self.current_size
        } else {
            self.chs_sectors().saturating_mul(512)
        }
    }

    /// The creator application as printable text.
    pub fn creator_application_str(&self) -> String {
        printable(&self.creator_application)
    }
}

/// CHS geometry for `total_sectors`, by the algorithm in the VHD spec's appendix
/// ("CHS Calculation"). Returns (cylinders, heads, sectors per track).
// The input is clamped to MAX_CHS_SECTORS (< 2^28) and every divisor is a
// non-zero constant, so none of this arithmetic can overflow or divide by zero.
#[allow(clippy::arithmetic_side_effects)]
pub fn chs_geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_CHS_SECTORS);
    let (spt, heads, cyl_times_heads): (u64, u64, u64);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cyl_times_heads = total / spt;
    } else {
        let mut s = 17u64;
        let mut cth = total / s;
        let mut h = cth.div_ceil(1024).max(4);
        if cth >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / s;
        }
        if cth >= h * 1024 {
            s = 63;
            h = 16;
            cth = total / s;
        }
        spt = s;
        heads = h;
        cyl_times_heads = cth;
    }
    let cyl = cyl_times_heads / heads;
    (
        u16::try_from(cyl).unwrap_or(u16::MAX),
        u8::try_from(heads).unwrap_or(16),
        u8::try_from(spt).unwrap_or(255),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_spec_examples() {
        // 20 MiB = 40960 sectors -> 17 spt path.
        let (c, h, s) = chs_geometry(40960);
        assert!(u64::from(c) * u64::from(h) * u64::from(s) <= 40960);
        assert_eq!((h, s), (4, 17));
        assert_eq!(chs_geometry(u64::MAX), (65535, 16, 255));
    }

    #[test]
    fn roundtrip_and_checksum() {
        let f = Footer {
            features: 2,
            file_format_version: 0x0001_0000,
            data_offset: FIXED_DATA_OFFSET,
            time_stamp: 0,
            creator_application: *b"win ",
            creator_version: 0x000a_0000,
            creator_host_os: *b"Wi2k",
            original_size: 1 << 20,
            current_size: 1 << 20,
            cylinders: 1,
            heads: 4,
            sectors_per_track: 17,
            disk_type: DiskType::Fixed,
            checksum: 0,
            unique_id: [7; 16],
            saved_state: 0,
        };
        let b = f.to_bytes();
        let g = Footer::parse(&b, 0).expect("parses");
        assert_eq!(g.current_size, 1 << 20);
        let mut bad = b;
        bad[100] ^= 1;
        assert!(Footer::parse(&bad, 0).is_err());
    }
}
