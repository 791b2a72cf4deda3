//! A small in-memory tar reader for agent bundles and .deb control/data
//! archives (POSIX ustar, pax `x` headers, GNU `L`/`K` long names), with the
//! safety rules of issue 7: absolute member names (a leading `./` is fine),
//! `..` components, device nodes, FIFOs, relative symlink targets climbing
//! above the root and hard links to names outside the archive root are
//! refused, naming the member. Sizes are bounded by
//! [`MAX_BUNDLE_BYTES`] (all members together) and counts by
//! [`MAX_BUNDLE_MEMBERS`].
//!
//! Header layout: see [`crate::source::ova::tar`] (whose number parser and
//! checksum check are reused here); that reader lists an OVA's files in
//! place, this one unpacks a decompressed stream.

use crate::error::{Error, Result};
use crate::limits::{MAX_BUNDLE_BYTES, MAX_BUNDLE_MEMBERS, MAX_TAR_EXT_HEADER};
use crate::source::ova::tar::{check_sum, parse_number};
use std::collections::BTreeMap;
use std::io::Read;

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Regular file (hard links are turned into copies of their target).
    File(Vec<u8>),
    /// Directory.
    Dir,
    /// Symbolic link, target as stored.
    Symlink(String),
}

/// One member, its name normalised: relative, no leading `./`, no trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalised relative name ("" for the root `./`).
    pub name: String,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Kind and content.
    pub kind: Kind,
}

fn field(h: &[u8], at: usize, len: usize) -> &[u8] {
    at.checked_add(len)
        .and_then(|e| h.get(at..e))
        .unwrap_or(&[])
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned()
}

fn shown(name: &str) -> String {
    name.chars().take(200).collect()
}

/// Normalise a member name: refuse absolute paths and `..`; drop a leading
/// `./`, `.` components and a trailing `/`.
pub fn normalise(name: &str, what: &str) -> Result<String> {
    let bad = name.starts_with('/')
        || name.contains('\0')
        || name.contains('\\')
        || name.split('/').any(|c| c == "..");
    if bad || name.is_empty() {
        return Err(Error::invalid(format!(
            "{what} member \"{}\" has an absolute path or a '..' component; refused",
            shown(name)
        )));
    }
    Ok(name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/"))
}

/// Does the relative symlink `target`, stored at member `name`, stay inside
/// the archive root? Absolute targets are re-rooted in the guest: fine.
pub fn symlink_stays_inside(name: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth: usize = name.split('/').filter(|c| !c.is_empty()).count();
    depth = depth.saturating_sub(1); // the link's directory
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth = depth.saturating_add(1),
        }
    }
    true
}

/// Parse pax records `LEN key=value\n`: path, linkpath, size.
fn parse_pax(data: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
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
            let k = String::from_utf8_lossy(rec.get(..eq).unwrap_or(&[])).into_owned();
            let v = String::from_utf8_lossy(rec.get(eq.saturating_add(1)..).unwrap_or(&[]));
            out.insert(k, v.into_owned());
        }
        rest = rest.get(len..).unwrap_or(&[]);
    }
    out
}

fn read_full(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<usize> {
    let mut got = 0usize;
    while got < buf.len() {
        let n = r
            .read(buf.get_mut(got..).unwrap_or(&mut []))
            .map_err(|e| Error::io(format!("read {what}"), e))?;
        if n == 0 {
            break;
        }
        got = got.saturating_add(n);
    }
    Ok(got)
}

/// Unpack a (decompressed) tar stream into memory. `what` names the archive
/// in errors ("bundle", "data.tar of waagent.deb", ...).
pub fn read_tar(r: &mut dyn Read, what: &str) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut total: u64 = 0;
    let mut pos: u64 = 0;
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut pax: BTreeMap<String, String> = BTreeMap::new();
    let mut headers = 0usize;
    loop {
        let mut h = [0u8; 512];
        let got = read_full(r, &mut h, what)?;
        if got == 0 {
            break; // no end-of-archive blocks: accept a clean end
        }
        if got < h.len() {
            return Err(Error::corrupt(
                what,
                "tar header",
                pos,
                "a whole 512-byte header",
                format!("{got} bytes"),
            ));
        }
        if h.iter().all(|&b| b == 0) {
            break;
        }
        headers = headers.saturating_add(1);
        if headers > MAX_BUNDLE_MEMBERS.saturating_mul(3) || out.len() >= MAX_BUNDLE_MEMBERS {
            return Err(Error::unsupported(format!(
                "{what} holds more than {MAX_BUNDLE_MEMBERS} members"
            )));
        }
        check_sum(&h, pos)?;
        let typeflag = h.get(156).copied().unwrap_or(0);
        let mut name = cstr(field(&h, 0, 100));
        if field(&h, 257, 6) == b"ustar\0" {
            let prefix = cstr(field(&h, 345, 155));
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let mut link = cstr(field(&h, 157, 100));
        let is_ext = matches!(typeflag, b'L' | b'K' | b'x' | b'g');
        if !is_ext {
            if let Some(l) = long_name.take() {
                name = l;
            }
            if let Some(l) = long_link.take() {
                link = l;
            }
            if let Some(p) = pax.remove("path") {
                name = p;
            }
            if let Some(l) = pax.remove("linkpath") {
                link = l;
            }
        }
        let header_size = parse_number(field(&h, 124, 12)).ok_or_else(|| {
            Error::corrupt(
                what,
                "tar size",
                pos.saturating_add(124),
                "an octal or base-256 number",
                format!("{:02x?}", field(&h, 124, 12)),
            )
        })?;
        let size = match (is_ext, pax.remove("size").and_then(|s| s.parse().ok())) {
            (false, Some(s)) => s,
            _ => header_size,
        };
        if !is_ext {
            pax.clear();
        }
        let limit = if is_ext {
            MAX_TAR_EXT_HEADER
        } else {
            MAX_BUNDLE_BYTES.saturating_sub(total)
        };
        if size > limit {
            return Err(Error::unsupported(format!(
                "{what} member \"{}\" is {size} bytes: more than onramp unpacks ({limit} bytes left of the {MAX_BUNDLE_BYTES}-byte bound)",
                shown(&name)
            )));
        }
        let has_data = matches!(typeflag, b'0' | 0 | b'7' | b'L' | b'K' | b'x' | b'g');
        let data = if has_data {
            let n = usize::try_from(size).map_err(|_| Error::invalid("tar member too large"))?;
            let mut v = vec![0u8; n];
            let got = read_full(r, &mut v, what)?;
            if got < n {
                return Err(Error::corrupt(
                    what,
                    "tar member data",
                    pos.saturating_add(512),
                    format!("{n} bytes for \"{}\"", shown(&name)),
                    format!("{got} bytes before the end"),
                ));
            }
            total = total.saturating_add(size);
            v
        } else {
            Vec::new()
        };
        // Skip the padding (and the data of members without content).
        let skip = if has_data {
            size.div_ceil(512).saturating_mul(512).saturating_sub(size)
        } else {
            size.div_ceil(512).saturating_mul(512)
        };
        std::io::copy(&mut r.take(skip), &mut std::io::sink())
            .map_err(|e| Error::io(format!("read {what}"), e))?;
        pos = pos
            .saturating_add(512)
            .saturating_add(size.div_ceil(512).saturating_mul(512));
        let mode =
            u32::try_from(parse_number(field(&h, 100, 8)).unwrap_or(0) & 0o7777).unwrap_or(0o644);
        let uid = u32::try_from(parse_number(field(&h, 108, 8)).unwrap_or(0)).unwrap_or(0);
        let gid = u32::try_from(parse_number(field(&h, 116, 8)).unwrap_or(0)).unwrap_or(0);
        let kind = match typeflag {
            b'L' => {
                long_name = Some(cstr(&data));
                continue;
            }
            b'K' => {
                long_link = Some(cstr(&data));
                continue;
            }
            b'x' => {
                pax = parse_pax(&data);
                continue;
            }
            b'g' => continue,
            b'0' | 0 | b'7' => Kind::File(data),
            b'5' => Kind::Dir,
            b'2' => {
                if link.is_empty() || link.contains('\0') {
                    return Err(Error::invalid(format!(
                        "{what} member \"{}\" is a symbolic link with an empty target; refused",
                        shown(&name)
                    )));
                }
                if !symlink_stays_inside(&normalise(&name, what)?, &link) {
                    return Err(Error::invalid(format!(
                        "{what} member \"{}\" is a symbolic link to \"{}\", which points outside the archive root; refused",
                        shown(&name),
                        shown(&link)
                    )));
                }
                Kind::Symlink(link)
            }
            b'1' => {
                let target = normalise(&link, what).map_err(|_| {
                    Error::invalid(format!(
                        "{what} member \"{}\" is a hard link to \"{}\", which points outside the archive root; refused",
                        shown(&name),
                        shown(&link)
                    ))
                })?;
                let copy = index
                    .get(&target)
                    .and_then(|&i| out.get(i))
                    .and_then(|e| match &e.kind {
                        Kind::File(d) => Some(d.clone()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{what} member \"{}\" is a hard link to \"{}\", which is not an earlier regular file of the archive; refused",
                            shown(&name),
                            shown(&link)
                        ))
                    })?;
                let len = u64::try_from(copy.len()).unwrap_or(u64::MAX);
                if len > MAX_BUNDLE_BYTES.saturating_sub(total) {
                    return Err(Error::unsupported(format!(
                        "{what} unpacks to more than {MAX_BUNDLE_BYTES} bytes"
                    )));
                }
                total = total.saturating_add(len);
                Kind::File(copy)
            }
            b'3' | b'4' | b'6' => {
                return Err(Error::invalid(format!(
                    "{what} member \"{}\" is a {}; device nodes and FIFOs are refused",
                    shown(&name),
                    if typeflag == b'6' {
                        "FIFO"
                    } else {
                        "device node"
                    }
                )))
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{what} member \"{}\" has tar type {:?}, which onramp does not unpack",
                    shown(&name),
                    char::from(other)
                )))
            }
        };
        let name = normalise(&name, what)?;
        index.insert(name.clone(), out.len());
        out.push(Entry {
            name,
            mode,
            uid,
            gid,
            kind,
        });
    }
    Ok(out)
}

/// Wrap `data` in the decompressor its magic names (gzip, xz, zstd) or
/// none, bounding the decompressed stream to [`MAX_BUNDLE_BYTES`] + 1 MiB of
/// tar headers.
pub fn decompressed<'a>(data: &'a [u8], what: &str) -> Result<Box<dyn Read + 'a>> {
    let bound = MAX_BUNDLE_BYTES.saturating_add(1 << 20);
    let r: Box<dyn Read + 'a> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(data))
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::new(data)
                .map_err(|e| Error::io(format!("start zstd decoder for {what}"), e))?,
        )
    } else {
        Box::new(data)
    };
    Ok(Box::new(r.take(bound)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_bounds() {
        assert!(symlink_stays_inside("usr/bin/x", "../lib/y"));
        assert!(symlink_stays_inside("usr/bin/x", "../../etc/y"));
        assert!(!symlink_stays_inside("usr/bin/x", "../../../etc/y"));
        assert!(!symlink_stays_inside("x", "../y"));
        assert!(symlink_stays_inside("x", "/etc/passwd"));
        assert!(symlink_stays_inside("a/x", "b/../../y"));
    }

    #[test]
    fn names() {
        assert_eq!(normalise("./usr/bin/", "t").unwrap(), "usr/bin");
        assert_eq!(normalise("./", "t").unwrap(), "");
        assert!(normalise("/etc/x", "t").is_err());
        assert!(normalise("a/../../x", "t").is_err());
    }
}
