//! The VMDK text descriptor (VMware "Virtual Disk Format 1.1", section
//! "The Descriptor File"): `key=value` lines (version, CID, parentCID,
//! createType, parentFileNameHint), extent lines
//! `ACCESS SECTORS TYPE "FILENAME" [OFFSET]`, and `ddb.*` disk database lines.
//!
//! It is either a standalone file or embedded in a hosted sparse extent
//! (descriptorOffset/descriptorSize of the sparse header).

use crate::error::{Error, Result};
use crate::limits::MAX_VMDK_EXTENTS;

/// Extent types of the spec's extent lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    /// `FLAT`: the sectors are stored as is in the file from `offset`.
    Flat,
    /// `SPARSE`: a hosted sparse extent (KDMV header, grain tables).
    Sparse,
    /// `ZERO`: reads as zeros, no file.
    Zero,
}

impl ExtentType {
    /// Spec name.
    pub fn name(self) -> &'static str {
        match self {
            ExtentType::Flat => "FLAT",
            ExtentType::Sparse => "SPARSE",
            ExtentType::Zero => "ZERO",
        }
    }
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Extent type.
    pub kind: ExtentType,
    /// File name (checked: no `/`, `\`, or `..`); empty for ZERO.
    pub file: String,
    /// Offset into the file in sectors (FLAT only).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub struct Descriptor {
    /// `version=`.
    pub version: Option<String>,
    /// `CID=` (content id, hex).
    pub cid: Option<String>,
    /// `parentCID=`; `ffffffff` means no parent.
    pub parent_cid: Option<String>,
    /// `createType=`.
    pub create_type: String,
    /// `parentFileNameHint=`.
    pub parent_hint: Option<String>,
    /// Extent lines in order.
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` entries in order.
    pub ddb: Vec<(String, String)>,
}

/// createType values onramp reads.
pub const SUPPORTED_CREATE_TYPES: &[&str] = &[
    "monolithicSparse",
    "streamOptimized",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
];

impl Descriptor {
    /// True when the descriptor names a parent (parentCID other than ffffffff).
    pub fn has_parent(&self) -> bool {
        self.parent_cid
            .as_deref()
            .is_some_and(|p| !p.eq_ignore_ascii_case("ffffffff"))
    }

    /// Total size of all extents in bytes.
    pub fn total_bytes(&self) -> Result<u64> {
        let mut total = 0u64;
        for e in &self.extents {
            total = e
                .sectors
                .checked_mul(512)
                .and_then(|b| total.checked_add(b))
                .ok_or_else(|| Error::corrupt_msg("VMDK descriptor: extent sizes overflow"))?;
        }
        Ok(total)
    }

    /// Parse descriptor text (NUL-terminated text is cut at the first NUL).
    pub fn parse(bytes: &[u8]) -> Result<Descriptor> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(bytes.get(..end).unwrap_or(&[]));
        let mut d = Descriptor::default();
        for (n, raw) in text.lines().enumerate() {
            let lineno = n.saturating_add(1);
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") && !line.contains('=') {
                if d.extents.len() >= MAX_VMDK_EXTENTS {
                    return Err(Error::corrupt(
                        "VMDK descriptor",
                        "extent lines",
                        0,
                        format!("at most {MAX_VMDK_EXTENTS}"),
                        "more",
                    ));
                }
                d.extents.push(parse_extent(line, lineno)?);
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(Error::corrupt_msg(format!(
                    "VMDK descriptor line {lineno}: not `key=value` nor an extent line: {:?}",
                    short(line)
                )));
            };
            let key = k.trim();
            let val = unquote(v.trim()).to_string();
            match key {
                "version" => d.version = Some(val),
                "CID" => d.cid = Some(val),
                "parentCID" => d.parent_cid = Some(val),
                "createType" => d.create_type = val,
                "parentFileNameHint" => d.parent_hint = Some(val),
                k if k.starts_with("ddb.") && d.ddb.len() < 256 => {
                    d.ddb.push((k.to_string(), val));
                }
                _ => {}
            }
        }
        if d.create_type.is_empty() {
            return Err(Error::corrupt(
                "VMDK descriptor",
                "createType",
                0,
                "a create type",
                "none",
            ));
        }
        Ok(d)
    }

    /// Refuse create types onramp does not read, naming them.
    pub fn check_create_type(&self) -> Result<()> {
        if SUPPORTED_CREATE_TYPES.contains(&self.create_type.as_str()) {
            return Ok(());
        }
        Err(Error::unsupported(format!(
            "VMDK createType \"{}\" is not read by onramp (supported: {})",
            short(&self.create_type),
            SUPPORTED_CREATE_TYPES.join(", ")
        )))
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(s)
}

/// Check an extent or parent file name: a plain name in the descriptor's
/// own directory. Refuses `/`, `\`, `..` and empty names.
pub fn check_file_name(name: &str, what: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0')
        || name == "."
        || name.contains("..");
    if bad {
        return Err(Error::invalid(format!(
            "{what} \"{}\" is not a plain file name in the descriptor's own directory \
             (names with '/', '\\' or '..' are refused)",
            short(name)
        )));
    }
    Ok(())
}

fn parse_extent(line: &str, lineno: usize) -> Result<ExtentLine> {
    let bad = |what: &str| {
        Error::corrupt_msg(format!(
            "VMDK descriptor line {lineno}: extent line {what}: {:?}",
            short(line)
        ))
    };
    let mut rest = line;
    let mut word = || -> Option<&str> {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (w, r) = t.split_at(end);
        rest = r;
        (!w.is_empty()).then_some(w)
    };
    let access = word().ok_or_else(|| bad("has no access mode"))?.to_string();
    let sectors: u64 = word()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| bad("has no valid sector count"))?;
    let kind_word = word().ok_or_else(|| bad("has no extent type"))?.to_string();
    let kind = match kind_word.as_str() {
        "FLAT" => ExtentType::Flat,
        "SPARSE" => ExtentType::Sparse,
        "ZERO" => ExtentType::Zero,
        other => {
            return Err(Error::unsupported(format!(
                "VMDK extent type {} (descriptor line {lineno}) is not read by onramp \
                 (supported: FLAT, SPARSE, ZERO)",
                short(other)
            )))
        }
    };
    let mut file = String::new();
    let mut offset = 0u64;
    let t = rest.trim_start();
    if kind != ExtentType::Zero || t.starts_with('"') {
        let t = t
            .strip_prefix('"')
            .ok_or_else(|| bad("has no quoted file name"))?;
        let close = t
            .find('"')
            .ok_or_else(|| bad("has an unterminated file name"))?;
        file = t.get(..close).unwrap_or("").to_string();
        let after = t.get(close.saturating_add(1)..).unwrap_or("").trim();
        if !after.is_empty() {
            let o = after.split_whitespace().next().unwrap_or("");
            offset = o.parse().map_err(|_| bad("has an invalid offset"))?;
        }
        check_file_name(&file, "VMDK extent file")?;
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_descriptor() {
        let t = b"# Disk DescriptorFile\nversion=1\nCID=52a3c0f1\nparentCID=ffffffff\n\
createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\nRW 4194304 FLAT \"a b-f001.vmdk\" 0\n\
RW 100 FLAT \"x-f002.vmdk\" 7\nRW 8 ZERO\n\nddb.virtualHWVersion = \"4\"\n\0garbage";
        let d = Descriptor::parse(t).unwrap();
        assert_eq!(d.create_type, "twoGbMaxExtentFlat");
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file, "a b-f001.vmdk");
        assert_eq!(d.extents[1].offset, 7);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert!(!d.has_parent());
        assert_eq!(d.total_bytes().unwrap(), (4194304 + 108) * 512);
        assert_eq!(d.ddb[0].1, "4");
    }

    #[test]
    fn refuses_traversal_and_vmfs() {
        for name in ["../x", "/etc/passwd", "a/b", "..", "", "c:\\x"] {
            let t = format!("createType=\"monolithicFlat\"\nRW 8 FLAT \"{name}\" 0\n");
            let e = Descriptor::parse(t.as_bytes()).unwrap_err();
            assert!(e.message().contains(name), "{name}: {e}");
        }
        let e = Descriptor::parse(b"createType=\"vmfs\"\nRW 8 VMFS \"x.vmdk\"\n").unwrap_err();
        assert!(e.message().contains("VMFS"));
        let d = Descriptor::parse(b"createType=\"seSparse\"\n").unwrap();
        assert!(d
            .check_create_type()
            .unwrap_err()
            .message()
            .contains("seSparse"));
    }
}
