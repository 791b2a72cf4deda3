//! The qcow2 header (versions 2 and 3) and its header extensions.
//!
//! Layout from qemu's `docs/interop/qcow2.txt`, sections "Header",
//! "Additional fields", "Header extensions" and "Feature name table". All
//! numbers are big-endian. Parsing checks every field against the spec and
//! against the bounds in [`crate::limits`]; nothing here allocates more than
//! one cluster (at most 2 MiB) from a value read on disk.

use crate::error::{Error, Result};
use crate::limits;

/// "QFI\xfb" (spec: Header, bytes 0-3).
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Length of a version 2 header (spec: "For version 2, the header is exactly 72 bytes").
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest version 3 header (spec: "at least 104 bytes").
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Smallest `cluster_bits` (512-byte clusters; qemu `MIN_CLUSTER_BITS`).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest `cluster_bits` (2 MiB clusters; qemu `MAX_CLUSTER_BITS`).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest `refcount_order` (spec: "This value may not exceed 6").
pub const MAX_REFCOUNT_ORDER: u32 = 6;

/// Incompatible feature bit 0: dirty (spec: incompatible_features).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: compression type field is used.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Every incompatible bit this reader understands.
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Header extension types (spec: "Header extensions").
pub mod ext {
    /// End of the header extension area.
    pub const END: u32 = 0;
    /// Backing file format name string.
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    /// Feature name table.
    pub const FEATURE_NAMES: u32 = 0x6803_f857;
    /// Bitmaps extension.
    pub const BITMAPS: u32 = 0x2385_2875;
    /// Full disk encryption header pointer.
    pub const CRYPTO: u32 = 0x0537_be77;
    /// External data file name string.
    pub const DATA_FILE: u32 = 0x4441_5441;
}

/// How compressed clusters are compressed (spec: header byte 104, compression_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// 0: raw deflate (zlib without header, as qemu writes it).
    Zlib,
    /// 1: zstd.
    Zstd,
}

impl CompressionType {
    /// Name as qemu-img prints it.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// Which feature bitmap a feature-name-table entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// incompatible_features
    Incompatible,
    /// compatible_features
    Compatible,
    /// autoclear_features
    Autoclear,
}

/// One entry of the feature name table extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// The bitmap it belongs to.
    pub kind: FeatureKind,
    /// Bit number 0-63.
    pub bit: u8,
    /// Name (trailing NULs removed).
    pub name: String,
}

/// The parsed, validated header of a qcow2 image.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name (0: none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (0 for v2).
    pub incompatible_features: u64,
    /// Compatible feature bits (0 for v2).
    pub compatible_features: u64,
    /// Autoclear feature bits (0 for v2).
    pub autoclear_features: u64,
    /// Refcount width is 1 << refcount_order bits (4 for v2).
    pub refcount_order: u32,
    /// Header length in bytes (72 for v2).
    pub header_length: u32,
    /// Compression of compressed clusters.
    pub compression_type: CompressionType,
}

fn be32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = off.checked_add(4).and_then(|e| b.get(off..e)) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = off.checked_add(8).and_then(|e| b.get(off..e)) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Read a big-endian u64 at `off` of `b` (0 when out of range; callers bound `off`).
pub fn read_be64(b: &[u8], off: usize) -> u64 {
    be64(b, off)
}

const HDR: &str = "qcow2 header";

impl Header {
    /// Parse the fixed header from the first bytes of the file (`b` holds at
    /// least the first 112 bytes, or the whole file when it is shorter).
    pub fn parse(b: &[u8], file_size: u64) -> Result<Self> {
        if b.len() < 4 || b.get(0..4) != Some(&MAGIC[..]) {
            return Err(Error::corrupt(
                HDR,
                "magic",
                0,
                "QFI\\xfb",
                "something else",
            ));
        }
        if b.len() < 8 {
            return Err(Error::corrupt(
                HDR,
                "version",
                4,
                "a complete header",
                format!("a {}-byte file", b.len()),
            ));
        }
        let version = be32(b, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(format!(
                "qcow2 version {version} (only versions 2 and 3 exist)"
            )));
        }
        let need = if version == 2 {
            V2_HEADER_LEN
        } else {
            V3_MIN_HEADER_LEN
        };
        let need_usize = usize::try_from(need).unwrap_or(usize::MAX);
        if b.len() < need_usize {
            return Err(Error::corrupt(
                HDR,
                "header_length",
                0,
                format!("a header of at least {need} bytes"),
                format!("a {}-byte file (truncated header)", b.len()),
            ));
        }
        let cluster_bits = be32(b, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::corrupt(
                HDR,
                "cluster_bits",
                20,
                format!("{MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"),
                cluster_bits,
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(b, 8),
            backing_file_size: be32(b, 16),
            cluster_bits,
            size: be64(b, 24),
            crypt_method: be32(b, 32),
            l1_size: be32(b, 36),
            l1_table_offset: be64(b, 40),
            refcount_table_offset: be64(b, 48),
            refcount_table_clusters: be32(b, 56),
            nb_snapshots: be32(b, 60),
            snapshots_offset: be64(b, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: CompressionType::Zlib,
        };
        if version >= 3 {
            h.incompatible_features = be64(b, 72);
            h.compatible_features = be64(b, 80);
            h.autoclear_features = be64(b, 88);
            h.refcount_order = be32(b, 96);
            h.header_length = be32(b, 100);
            if h.header_length < V3_MIN_HEADER_LEN
                || !h.header_length.is_multiple_of(8)
                || u64::from(h.header_length) > cluster_size
            {
                return Err(Error::corrupt(
                    HDR,
                    "header_length",
                    100,
                    format!("a multiple of 8 in {V3_MIN_HEADER_LEN}..={cluster_size}"),
                    h.header_length,
                ));
            }
            if u64::from(h.header_length) > file_size {
                return Err(Error::corrupt(
                    HDR,
                    "header_length",
                    100,
                    format!("at most the file size {file_size}"),
                    h.header_length,
                ));
            }
            if h.refcount_order > MAX_REFCOUNT_ORDER {
                return Err(Error::corrupt(
                    HDR,
                    "refcount_order",
                    96,
                    format!("0..={MAX_REFCOUNT_ORDER}"),
                    h.refcount_order,
                ));
            }
            let ctype = if h.header_length > 104 {
                b.get(104).copied().unwrap_or(0)
            } else {
                0
            };
            let flagged = h.incompatible_features & INCOMPAT_COMPRESSION != 0;
            h.compression_type = match (ctype, flagged) {
                (0, false) => CompressionType::Zlib,
                (1, true) => CompressionType::Zstd,
                (0, true) => {
                    return Err(Error::corrupt(
                        HDR,
                        "compression_type",
                        104,
                        "non-zero when incompatible bit 3 (compression type) is set",
                        0,
                    ))
                }
                (t, false) => {
                    return Err(Error::corrupt(
                        HDR,
                        "compression_type",
                        104,
                        "0 (zlib) when incompatible bit 3 is clear",
                        t,
                    ))
                }
                (t, true) => {
                    return Err(Error::unsupported(format!(
                        "qcow2 compression_type {t} (known: 0 zlib, 1 zstd)"
                    )))
                }
            };
        }
        if h.size > limits::MAX_VIRTUAL_SIZE {
            return Err(Error::unsupported(format!(
                "qcow2 virtual size {} exceeds onramp's limit of {} bytes",
                h.size,
                limits::MAX_VIRTUAL_SIZE
            )));
        }
        Ok(h)
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits.min(MAX_CLUSTER_BITS)
    }

    /// Extended L2 entries (incompatible bit 4).
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }

    /// Where the header extension area starts (spec: "Directly after the image header").
    pub fn extensions_start(&self) -> u64 {
        u64::from(self.header_length)
    }
}

/// What the header extensions told us.
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    /// Backing file format name.
    pub backing_format: Option<String>,
    /// Feature name table entries.
    pub feature_names: Vec<FeatureName>,
    /// External data file name, if the extension is present.
    pub data_file: Option<String>,
    /// The bitmaps extension is present.
    pub bitmaps: bool,
    /// The full disk encryption header extension is present.
    pub crypto: bool,
    /// Types of extensions we skipped.
    pub unknown: Vec<u32>,
}

/// Feature-name entry size (spec: "Feature name table", bytes 0-47).
const FEATURE_ENTRY: usize = 48;

/// Parse the header extensions from `area`, the bytes from the end of the
/// header to the end of the first cluster (or of the file). `base` is the
/// file offset of `area[0]`, for error messages.
pub fn parse_extensions(area: &[u8], base: u64) -> Result<Extensions> {
    let mut out = Extensions::default();
    let mut pos = 0usize;
    let at = |p: usize| base.saturating_add(u64::try_from(p).unwrap_or(u64::MAX));
    let mut seen: Vec<u32> = Vec::new();
    loop {
        let hdr_end = pos.saturating_add(8);
        if hdr_end > area.len() {
            // The area ended without an end marker: qemu stops here too.
            break;
        }
        let typ = be32(area, pos);
        let len = be32(area, pos.saturating_add(4));
        if typ == ext::END {
            break;
        }
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        let data_end = hdr_end.saturating_add(len_usize);
        if u64::from(len) > limits::MAX_HEADER_BYTES || data_end > area.len() {
            return Err(Error::corrupt(
                "qcow2 header extension",
                format!("length (extension type {typ:#010x})"),
                at(pos.saturating_add(4)),
                format!(
                    "at most {} bytes (the rest of the first cluster)",
                    area.len().saturating_sub(hdr_end)
                ),
                len,
            ));
        }
        let data = area.get(hdr_end..data_end).unwrap_or(&[]);
        if typ != ext::FEATURE_NAMES && seen.contains(&typ) {
            return Err(Error::corrupt(
                "qcow2 header extension",
                "type",
                at(pos),
                format!("at most one extension of type {typ:#010x}"),
                "a second one",
            ));
        }
        seen.push(typ);
        match typ {
            ext::BACKING_FORMAT => {
                out.backing_format = Some(string_ext(data, "backing format", at(hdr_end))?);
            }
            ext::DATA_FILE => {
                out.data_file = Some(String::from_utf8_lossy(data).into_owned());
            }
            ext::FEATURE_NAMES => {
                for e in data.chunks_exact(FEATURE_ENTRY) {
                    let kind = match e.first().copied().unwrap_or(0xff) {
                        0 => FeatureKind::Incompatible,
                        1 => FeatureKind::Compatible,
                        2 => FeatureKind::Autoclear,
                        _ => continue,
                    };
                    let bit = e.get(1).copied().unwrap_or(0);
                    let raw = e.get(2..).unwrap_or(&[]);
                    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                    let name = String::from_utf8_lossy(raw.get(..end).unwrap_or(&[])).into_owned();
                    out.feature_names.push(FeatureName { kind, bit, name });
                }
            }
            ext::BITMAPS => out.bitmaps = true,
            ext::CRYPTO => out.crypto = true,
            other => out.unknown.push(other),
        }
        // Data is padded to the next multiple of 8.
        let padded = len_usize
            .checked_add(7)
            .map(|l| l & !7usize)
            .unwrap_or(usize::MAX);
        pos = hdr_end.saturating_add(padded);
    }
    Ok(out)
}

fn string_ext(data: &[u8], what: &str, off: u64) -> Result<String> {
    // A string extension is not NUL terminated, but tolerate trailing NULs.
    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
    std::str::from_utf8(data.get(..end).unwrap_or(&[]))
        .map(str::to_owned)
        .map_err(|_| {
            Error::corrupt(
                "qcow2 header extension",
                what,
                off,
                "UTF-8 text",
                "invalid UTF-8",
            )
        })
}

/// Names of the bits set in `bits` of `kind`: the image's own feature name
/// table first, else the names the spec gives, else `bit N`.
pub fn feature_names(bits: u64, kind: FeatureKind, table: &[FeatureName]) -> Vec<String> {
    let mut v = Vec::new();
    for bit in 0u8..64 {
        if bits & (1u64 << bit) == 0 {
            continue;
        }
        let from_table = table
            .iter()
            .find(|f| f.kind == kind && f.bit == bit)
            .map(|f| f.name.clone());
        let builtin = match (kind, bit) {
            (FeatureKind::Incompatible, 0) => Some("dirty bit"),
            (FeatureKind::Incompatible, 1) => Some("corrupt bit"),
            (FeatureKind::Incompatible, 2) => Some("external data file"),
            (FeatureKind::Incompatible, 3) => Some("compression type"),
            (FeatureKind::Incompatible, 4) => Some("extended L2 entries"),
            (FeatureKind::Compatible, 0) => Some("lazy refcounts"),
            (FeatureKind::Autoclear, 0) => Some("bitmaps"),
            (FeatureKind::Autoclear, 1) => Some("raw external data"),
            _ => None,
        };
        v.push(
            from_table
                .or_else(|| builtin.map(str::to_owned))
                .unwrap_or_else(|| format!("bit {bit}")),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3() -> Vec<u8> {
        let mut b = vec![0u8; 112];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b
    }

    #[test]
    fn parses_v3() {
        let h = Header::parse(&v3(), 1 << 20).unwrap();
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.compression_type, CompressionType::Zlib);
    }

    #[test]
    fn rejects_bad_fields() {
        let mut b = v3();
        b[20..24].copy_from_slice(&22u32.to_be_bytes());
        let e = Header::parse(&b, 1 << 20).unwrap_err();
        assert!(e.message().contains("cluster_bits"), "{e}");
        let e = Header::parse(&v3()[..50], 1 << 20).unwrap_err();
        assert!(e.message().contains("truncated"), "{e}");
        let mut b = v3();
        b[104] = 1;
        let e = Header::parse(&b, 1 << 20).unwrap_err();
        assert!(e.message().contains("compression_type"), "{e}");
    }

    #[test]
    fn extensions_bounded() {
        let mut a = vec![0u8; 64];
        a[0..4].copy_from_slice(&ext::BACKING_FORMAT.to_be_bytes());
        a[4..8].copy_from_slice(&5u32.to_be_bytes());
        a[8..13].copy_from_slice(b"qcow2");
        a[16..20].copy_from_slice(&0x1234u32.to_be_bytes());
        a[20..24].copy_from_slice(&1000u32.to_be_bytes());
        let e = parse_extensions(&a, 112).unwrap_err();
        assert!(e.message().contains("length"), "{e}");
        a[20..24].copy_from_slice(&3u32.to_be_bytes());
        let x = parse_extensions(&a, 112).unwrap();
        assert_eq!(x.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(x.unknown, vec![0x1234]);
    }
}
