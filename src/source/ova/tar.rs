//! Just enough of the tar format (POSIX.1-1988 ustar, POSIX.1-2001 pax, GNU)
//! to list the members of an OVA without extracting it: 512-byte headers
//! (name 0, mode 100, size 124, chksum 148, typeflag 156, linkname 157,
//! magic 257, prefix 345), each followed by its data padded to 512 bytes.
//!
//! Header checksums are verified; sizes are octal or GNU base-256 and must lie
//! inside the file; GNU long names (`L`) and pax `path`/`size` records are
//! honoured. Members with absolute paths or `..`, links, device nodes and
//! FIFOs are refused.

use crate::error::{Error, Result};
use crate::limits::{MAX_TAR_EXT_HEADER, MAX_TAR_MEMBERS};
use crate::source::range::FileRange;

/// Tar block size.
pub const BLOCK: u64 = 512;

/// One regular file in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Path inside the archive (normalised: no leading `./`).
    pub name: String,
    /// Byte offset of the data in the archive.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Parse a numeric header field: octal text (NUL/space padded) or GNU
/// base-256 (high bit of the first byte set).
pub fn parse_number(field: &[u8]) -> Option<u64> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(first & 0x3f);
        for &b in field.get(1..)? {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let mut v = 0u64;
    let mut seen = false;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                v = v
                    .checked_mul(8)?
                    .checked_add(u64::from(b.checked_sub(b'0')?))?;
                seen = true;
            }
            b' ' | 0 if !seen => {}
            b' ' | 0 => break,
            _ => return None,
        }
    }
    Some(v)
}

fn field(h: &[u8], at: usize, len: usize) -> &[u8] {
    h.get(at..at.saturating_add(len)).unwrap_or(&[])
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned()
}

/// Check a member name: relative, no `..` component. Returns it without a
/// leading `./`.
pub fn check_name(name: &str, at: u64) -> Result<String> {
    let bad = name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.split('/').any(|c| c == "..");
    if bad || name.is_empty() {
        return Err(Error::invalid(format!(
            "OVA member \"{}\" (tar header at byte {at}) has an absolute path or '..'; refused",
            name.chars().take(200).collect::<String>()
        )));
    }
    let mut n = name;
    while let Some(r) = n.strip_prefix("./") {
        n = r;
    }
    Ok(n.to_string())
}

/// Verify the header checksum (unsigned sum with the chksum field as spaces;
/// the historic signed sum is accepted too).
pub fn check_sum(h: &[u8; 512], at: u64) -> Result<()> {
    let stored = parse_number(field(h, 148, 8));
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned = unsigned.saturating_add(u64::from(b));
        signed = signed.saturating_add(i64::from(i8::from_ne_bytes([b])));
    }
    let ok = stored.is_some_and(|s| s == unsigned || i64::try_from(s).is_ok_and(|s| s == signed));
    if !ok {
        return Err(Error::corrupt(
            "tar header",
            "chksum",
            at.saturating_add(148),
            unsigned,
            stored.map_or_else(|| "not a number".to_string(), |s| s.to_string()),
        ));
    }
    Ok(())
}

/// Parse pax extended header records `LEN key=value\n`; returns (path, size).
fn parse_pax(data: &[u8]) -> (Option<String>, Option<u64>) {
    let mut path = None;
    let mut size = None;
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let len: usize = match std::str::from_utf8(rest.get(..sp).unwrap_or(&[]))
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(l) if l > sp && l <= rest.len() => l,
            _ => break,
        };
        let rec = rest.get(sp.saturating_add(1)..len).unwrap_or(&[]);
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            let k = rec.get(..eq).unwrap_or(&[]);
            let v = String::from_utf8_lossy(rec.get(eq.saturating_add(1)..).unwrap_or(&[]));
            match k {
                b"path" => path = Some(v.into_owned()),
                b"size" => size = v.parse().ok(),
                _ => {}
            }
        }
        rest = rest.get(len..).unwrap_or(&[]);
    }
    (path, size)
}

/// List the regular-file members of the tar archive in `archive`.
pub fn list(archive: &FileRange) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut long_name: Option<String> = None;
    let mut pax: (Option<String>, Option<u64>) = (None, None);
    let mut headers = 0usize;
    loop {
        if pos.saturating_add(BLOCK) > archive.len() {
            // No end-of-archive blocks: accept a clean end at a block boundary.
            if pos == archive.len() {
                break;
            }
            return Err(Error::corrupt(
                "tar archive",
                "length",
                pos,
                "whole 512-byte blocks",
                archive.len(),
            ));
        }
        let mut h = [0u8; 512];
        archive.read_exact_at(pos, &mut h, "tar header")?;
        if h.iter().all(|&b| b == 0) {
            break; // end of archive
        }
        headers = headers.saturating_add(1);
        if headers > MAX_TAR_MEMBERS.saturating_mul(3) || out.len() >= MAX_TAR_MEMBERS {
            return Err(Error::unsupported(format!(
                "OVA holds more than {MAX_TAR_MEMBERS} members"
            )));
        }
        check_sum(&h, pos)?;
        let typeflag = h.get(156).copied().unwrap_or(0);
        let header_size = parse_number(field(&h, 124, 12)).ok_or_else(|| {
            Error::corrupt(
                "tar header",
                "size",
                pos.saturating_add(124),
                "an octal or base-256 number",
                format!("{:02x?}", field(&h, 124, 12)),
            )
        })?;
        let size = if matches!(typeflag, b'0' | 0 | b'7') {
            pax.1.take().unwrap_or(header_size)
        } else {
            header_size
        };
        let data_at = pos.saturating_add(BLOCK);
        if data_at.checked_add(size).is_none_or(|e| e > archive.len()) {
            return Err(Error::corrupt(
                "tar header",
                "size",
                pos.saturating_add(124),
                format!("member data inside the {}-byte archive", archive.len()),
                size,
            ));
        }
        let mut name = cstr(field(&h, 0, 100));
        if field(&h, 257, 5) == b"ustar" && field(&h, 257, 6) == b"ustar\0" {
            let prefix = cstr(field(&h, 345, 155));
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(l) = long_name.take() {
            name = l;
        }
        if let Some(p) = pax.0.take() {
            name = p;
        }
        let read_ext = |what: &str| -> Result<Vec<u8>> {
            if size > MAX_TAR_EXT_HEADER {
                return Err(Error::corrupt(
                    "tar header",
                    "size",
                    pos.saturating_add(124),
                    format!("at most {MAX_TAR_EXT_HEADER} bytes for a {what}"),
                    size,
                ));
            }
            let mut v = vec![0u8; usize::try_from(size).unwrap_or(0)];
            archive.read_exact_at(data_at, &mut v, what)?;
            Ok(v)
        };
        match typeflag {
            b'0' | 0 | b'7' => {
                let n = check_name(&name, pos)?;
                out.push(Member {
                    name: n,
                    offset: data_at,
                    size,
                });
            }
            b'5' => {
                check_name(&name, pos)?;
            }
            b'L' => {
                let v = read_ext("GNU long name")?;
                long_name = Some(cstr(&v));
            }
            b'x' => {
                let v = read_ext("pax extended header")?;
                pax = parse_pax(&v);
            }
            b'g' => {}
            b'1' | b'2' | b'K' => {
                return Err(Error::invalid(format!(
                    "OVA member \"{}\" (tar header at byte {pos}) is a {}; links are refused",
                    name.chars().take(200).collect::<String>(),
                    if typeflag == b'1' { "hard link" } else { "symbolic link" }
                )))
            }
            b'3' | b'4' | b'6' => {
                return Err(Error::invalid(format!(
                    "OVA member \"{}\" (tar header at byte {pos}) is a device node or FIFO; refused",
                    name.chars().take(200).collect::<String>()
                )))
            }
            other => {
                return Err(Error::unsupported(format!(
                    "OVA member \"{}\" (tar header at byte {pos}) has tar type {:?}, which onramp does not read",
                    name.chars().take(200).collect::<String>(),
                    char::from(other)
                )))
            }
        }
        let padded = size.div_ceil(BLOCK).saturating_mul(BLOCK);
        pos = data_at.saturating_add(padded);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"00000001750\0"), Some(1000));
        assert_eq!(parse_number(b"     1750 \0"), Some(1000));
        assert_eq!(
            parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
        assert_eq!(parse_number(b"12x"), None);
        assert_eq!(parse_number(&[0xff; 12]), None);
    }

    #[test]
    fn names() {
        assert_eq!(check_name("./a.ovf", 0).unwrap(), "a.ovf");
        assert!(check_name("../a", 0).is_err());
        assert!(check_name("x/../../a", 0).is_err());
        assert!(check_name("/etc/passwd", 0).is_err());
        assert_eq!(check_name("a..b.vmdk", 0).unwrap(), "a..b.vmdk");
    }

    #[test]
    fn pax_records() {
        let (p, s) = parse_pax(b"19 path=dir/x.vmdk\n15 size=123456\n");
        assert_eq!(p.as_deref(), Some("dir/x.vmdk"));
        assert_eq!(s, Some(123456));
    }
}
