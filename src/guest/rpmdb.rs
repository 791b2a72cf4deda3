//! Installed packages from the rpm sqlite database (`rpmdb.sqlite`, the
//! default backend of RHEL 9, Fedora 33+, Rocky/Alma 9, openSUSE Tumbleweed
//! before ndb): the `Packages` table holds one row per package, `hnum INTEGER
//! PRIMARY KEY` and `blob` — the package's header as rpm stores it.
//!
//! The table is read with [`crate::fs::sqlite`]; each blob is an rpm header
//! without its 8-byte magic (rpm's `headerExport`/`headerImport` "blob" form,
//! docs/manual/format.md and hregions.md in the rpm sources):
//! - `il` (u32 BE, index entries), `dl` (u32 BE, data bytes);
//! - `il` entries of 16 bytes: tag, type, offset (into the data), count;
//! - `dl` bytes of data.
//!
//! Only the tags that name a package are read: NAME (1000), VERSION (1001),
//! RELEASE (1002), EPOCH (1003), ARCH (1022). A damaged header skips that
//! package (the caller warns); a damaged database is an error.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use crate::error::{Error, Result};
use crate::fs::sqlite::{Database, Value};
use crate::limits;

/// Header tags (rpm's rpmtag.h, documented in docs/manual/tags.md).
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
/// Header data types (rpmtag.h `rpmTagType_e`).
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// One installed package as rpm names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackage {
    /// NAME.
    pub name: String,
    /// EPOCH, when the package has one.
    pub epoch: Option<u32>,
    /// VERSION.
    pub version: String,
    /// RELEASE.
    pub release: String,
    /// ARCH ("x86_64", "noarch"); none for gpg-pubkey pseudo-packages.
    pub arch: Option<String>,
}

impl RpmPackage {
    /// `[EPOCH:]VERSION-RELEASE`, as `rpm -q --qf '%{EVR}'` prints it.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }
}

/// What [`read_packages`] found: the packages, and the rows it skipped.
#[derive(Debug, Default)]
pub struct RpmDb {
    /// Packages in `hnum` order.
    pub packages: Vec<RpmPackage>,
    /// One message per row whose header could not be read.
    pub skipped: Vec<String>,
}

/// Read every package of an `rpmdb.sqlite` file held in memory.
pub fn read_packages(file: &[u8]) -> Result<RpmDb> {
    let db = Database::open(file)?;
    let root = db
        .table_root("Packages")?
        .ok_or_else(|| Error::corrupt_msg("rpmdb.sqlite has no Packages table"))?;
    let mut out = RpmDb::default();
    db.for_each_row(root, &mut |hnum, cols| {
        // Columns: hnum (INTEGER PRIMARY KEY, stored as NULL: the rowid), blob.
        match cols.get(1) {
            Some(Value::Blob(b)) => match parse_header(b) {
                Ok(p) => out.packages.push(p),
                Err(e) => {
                    if out.skipped.len() < limits::MAX_RPMDB_SKIP_MESSAGES {
                        out.skipped.push(format!("rpm header {hnum}: {e}"));
                    }
                }
            },
            other => {
                if out.skipped.len() < limits::MAX_RPMDB_SKIP_MESSAGES {
                    out.skipped.push(format!(
                        "Packages row {hnum}: expected a blob, found {}",
                        match other {
                            None => "no column",
                            Some(Value::Null) => "NULL",
                            Some(Value::Int(_)) => "an integer",
                            Some(Value::Float(_)) => "a float",
                            Some(Value::Text(_)) => "text",
                            Some(Value::Blob(_)) => "a blob",
                        }
                    ));
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn hcorrupt(field: &str, off: usize, expected: &str, found: impl std::fmt::Display) -> Error {
    Error::corrupt(
        "rpm header",
        field,
        u64::try_from(off).unwrap_or(u64::MAX),
        expected,
        found,
    )
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_be_bytes(a))
}

/// Parse the identifying tags out of one header blob.
pub fn parse_header(blob: &[u8]) -> Result<RpmPackage> {
    let il = be32(blob, 0).ok_or_else(|| hcorrupt("index length", 0, "4 bytes", "truncated"))?;
    let dl = be32(blob, 4).ok_or_else(|| hcorrupt("data length", 4, "4 bytes", "truncated"))?;
    if il == 0 || il > limits::MAX_RPM_HEADER_TAGS {
        return Err(hcorrupt(
            "index length",
            0,
            &format!("1..={}", limits::MAX_RPM_HEADER_TAGS),
            il,
        ));
    }
    if dl > limits::MAX_RPM_HEADER_DATA {
        return Err(hcorrupt(
            "data length",
            4,
            &format!("at most {}", limits::MAX_RPM_HEADER_DATA),
            dl,
        ));
    }
    // Both are bounded above (16 bits and 24 bits), so this cannot overflow.
    let il = usize::try_from(il).unwrap_or(usize::MAX);
    let dl = usize::try_from(dl).unwrap_or(usize::MAX);
    let data_start = il.saturating_mul(16).saturating_add(8);
    let total = data_start.saturating_add(dl);
    if blob.len() < total {
        return Err(hcorrupt(
            "length",
            0,
            &format!("{total} bytes (8 + 16 x {il} + {dl})"),
            blob.len(),
        ));
    }
    let data = blob.get(data_start..total).unwrap_or(&[]);
    let mut name = None;
    let mut version = None;
    let mut release = None;
    let mut epoch = None;
    let mut arch = None;
    for i in 0..il {
        let at = i.saturating_mul(16).saturating_add(8);
        let (Some(tag), Some(ty), Some(off), Some(count)) = (
            be32(blob, at),
            be32(blob, at.saturating_add(4)),
            be32(blob, at.saturating_add(8)),
            be32(blob, at.saturating_add(12)),
        ) else {
            return Err(hcorrupt("index entry", at, "16 bytes", "truncated"));
        };
        if !matches!(
            tag,
            TAG_NAME | TAG_VERSION | TAG_RELEASE | TAG_EPOCH | TAG_ARCH
        ) {
            continue;
        }
        // The offset is a signed 32-bit value; only non-negative ones point
        // into the data store.
        let o = usize::try_from(off)
            .ok()
            .filter(|o| *o < dl && off <= 0x7fff_ffff)
            .ok_or_else(|| {
                hcorrupt(
                    &format!("offset of tag {tag}"),
                    at.saturating_add(8),
                    &format!("0..{dl}"),
                    off,
                )
            })?;
        if tag == TAG_EPOCH {
            if ty != TYPE_INT32 || count == 0 {
                return Err(hcorrupt(
                    "EPOCH type",
                    at.saturating_add(4),
                    "INT32 (4), count >= 1",
                    format!("type {ty}, count {count}"),
                ));
            }
            epoch = Some(be32(data, o).ok_or_else(|| {
                hcorrupt(
                    "EPOCH value",
                    data_start.saturating_add(o),
                    "4 bytes",
                    "past the data",
                )
            })?);
            continue;
        }
        if ty != TYPE_STRING && ty != TYPE_I18NSTRING {
            return Err(hcorrupt(
                &format!("type of tag {tag}"),
                at.saturating_add(4),
                "STRING (6) or I18NSTRING (9)",
                ty,
            ));
        }
        // A NUL-terminated string inside the data store (for I18NSTRING the
        // first of `count` strings: the C locale).
        let rest = data.get(o..).unwrap_or(&[]);
        let end = rest.iter().position(|b| *b == 0).ok_or_else(|| {
            hcorrupt(
                &format!("string of tag {tag}"),
                data_start.saturating_add(o),
                "a NUL terminator inside the data",
                "none",
            )
        })?;
        let s = String::from_utf8_lossy(rest.get(..end).unwrap_or(&[])).into_owned();
        match tag {
            TAG_NAME => name = Some(s),
            TAG_VERSION => version = Some(s),
            TAG_RELEASE => release = Some(s),
            _ => arch = Some(s),
        }
    }
    let missing = |t: &str| hcorrupt(t, 0, "present", "absent");
    Ok(RpmPackage {
        name: name.ok_or_else(|| missing("NAME tag"))?,
        version: version.ok_or_else(|| missing("VERSION tag"))?,
        release: release.ok_or_else(|| missing("RELEASE tag"))?,
        epoch,
        arch,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A header blob with the given (tag, type, value) entries.
    fn header(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, v) in entries {
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&ty.to_be_bytes());
            index.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(v);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&index);
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn parses_and_rejects() {
        let h = header(&[
            (TAG_NAME, TYPE_STRING, b"bash\0"),
            (TAG_VERSION, TYPE_STRING, b"5.1.8\0"),
            (TAG_RELEASE, TYPE_STRING, b"9.el9\0"),
            (TAG_EPOCH, TYPE_INT32, &2u32.to_be_bytes()),
            (TAG_ARCH, TYPE_STRING, b"x86_64\0"),
        ]);
        let p = parse_header(&h).unwrap();
        assert_eq!(p.name, "bash");
        assert_eq!(p.evr(), "2:5.1.8-9.el9");
        assert_eq!(p.arch.as_deref(), Some("x86_64"));
        // Every truncation is an error, never a panic.
        for n in 0..h.len() {
            assert!(parse_header(&h[..n]).is_err(), "truncated to {n}");
        }
        // Every single-byte change is an error or a result, never a panic.
        for i in 0..h.len() {
            let mut m = h.clone();
            m[i] ^= 0xff;
            let _ = parse_header(&m);
        }
        // A string without its NUL.
        let h = header(&[(TAG_NAME, TYPE_STRING, b"bash")]);
        assert!(parse_header(&h).unwrap_err().to_string().contains("NUL"));
        // Missing VERSION.
        let h = header(&[(TAG_NAME, TYPE_STRING, b"bash\0")]);
        assert!(parse_header(&h)
            .unwrap_err()
            .to_string()
            .contains("VERSION"));
    }
}
