//! OVA appliances (DMTF DSP0243 "Open Virtualization Format", section
//! "OVF Packages"): a tar archive ([`tar`]) holding an OVF descriptor
//! ([`ovf`]), an optional manifest (`.mf`, lines `SHA1(file)= hex` /
//! `SHA256(file)= hex`) and the disk files.
//!
//! The disk is read where it lies inside the tar (a member is contiguous), as
//! a [`FileRange`]: nothing is extracted. The default disk is the boot disk
//! (the first disk the first VirtualSystem's hardware references, else the
//! first in DiskSection); `--disk N` picks disk N in DiskSection order
//! (0-based). Every manifest digest is verified before the disk is opened.

pub mod ovf;
pub mod tar;

use crate::block::{BlockSource, Extent};
use crate::error::{Error, Result};
use crate::limits::{MAX_MANIFEST_BYTES, MAX_OVF_BYTES};
use crate::source::range::FileRange;
use crate::source::vmdk::VmdkReader;
use crate::source::{detect, Format, OpenOptions};
use serde_json::{json, Map, Value};
use sha2::Digest;
use std::path::Path;

/// An OVA opened for reading: one of its disks.
pub struct OvaReader {
    inner: Box<dyn BlockSource>,
    details: Map<String, Value>,
}

impl std::fmt::Debug for OvaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OvaReader({})", self.inner.format_name())
    }
}

/// One manifest line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// "SHA1" or "SHA256" (or "SHA512").
    pub algo: String,
    /// The file named.
    pub file: String,
    /// Lower-case hex digest.
    pub digest: String,
}

/// Parse a manifest: `ALGO(file)= hex` lines (blank lines ignored).
pub fn parse_manifest(text: &str) -> Result<Vec<ManifestEntry>> {
    let mut v = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let parsed = l.split_once('(').and_then(|(algo, rest)| {
            let (file, dig) = rest.rsplit_once(")=")?;
            Some((algo.trim(), file, dig.trim()))
        });
        let Some((algo, file, dig)) = parsed else {
            return Err(Error::corrupt_msg(format!(
                "OVA manifest line {}: expected `ALGO(file)= digest`, found {:?}",
                n.saturating_add(1),
                l.chars().take(120).collect::<String>()
            )));
        };
        v.push(ManifestEntry {
            algo: algo.to_ascii_uppercase(),
            file: file.to_string(),
            digest: dig.to_ascii_lowercase(),
        });
    }
    Ok(v)
}

fn hash_range<D: Digest>(r: &FileRange) -> Result<String> {
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < r.len() {
        let n = usize::try_from(r.len().saturating_sub(off).min(1 << 20)).unwrap_or(0);
        let b = buf.get_mut(..n).unwrap_or(&mut []);
        r.read_exact_at(off, b, "OVA member")?;
        h.update(&*b);
        off = off.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
    Ok(crate::target::output::hex(&h.finalize()))
}

fn member_text(archive: &FileRange, m: &tar::Member, max: u64, what: &str) -> Result<String> {
    if m.size > max {
        return Err(Error::corrupt(
            what,
            "size",
            m.offset,
            format!("at most {max} bytes"),
            m.size,
        ));
    }
    let r = archive.sub(m.offset, m.size, what)?;
    let bytes = r.read_up_to(0, max, what)?;
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    String::from_utf8(bytes.to_vec())
        .map_err(|e| Error::corrupt_msg(format!("{what} \"{}\" is not UTF-8: {e}", m.name)))
}

impl OvaReader {
    /// Open `path` and the disk chosen by `opts.disk` (default: boot disk).
    pub fn open(path: &Path, opts: &OpenOptions, _depth: usize) -> Result<Box<dyn BlockSource>> {
        Ok(Box::new(Self::open_reader(path, opts)?))
    }

    /// Open as the concrete type.
    pub fn open_reader(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let archive = FileRange::open(path)?;
        let members = tar::list(&archive)?;
        let find = |name: &str| members.iter().find(|m| m.name == name);
        let ovf_m = members
            .iter()
            .find(|m| m.name.to_ascii_lowercase().ends_with(".ovf"))
            .ok_or_else(|| Error::corrupt_msg("OVA holds no OVF descriptor (.ovf member)"))?;
        let ovf_text = member_text(&archive, ovf_m, MAX_OVF_BYTES, "OVF descriptor")?;
        let env = ovf::parse(&ovf_text)?;

        // Manifest: verify every digest it lists.
        let mut manifest = Map::new();
        let stem = ovf_m
            .name
            .get(..ovf_m.name.len().saturating_sub(4))
            .unwrap_or("");
        let mf = find(&format!("{stem}.mf")).or_else(|| {
            members
                .iter()
                .find(|m| m.name.to_ascii_lowercase().ends_with(".mf"))
        });
        match mf {
            None => {
                manifest.insert("present".into(), json!(false));
            }
            Some(mf) => {
                let text = member_text(&archive, mf, MAX_MANIFEST_BYTES, "OVA manifest")?;
                let entries = parse_manifest(&text)?;
                let mut checked = Vec::new();
                for e in &entries {
                    let m = find(&e.file).ok_or_else(|| {
                        Error::corrupt_msg(format!(
                            "OVA manifest {} lists \"{}\", which is not in the archive",
                            mf.name, e.file
                        ))
                    })?;
                    let r = archive.sub(m.offset, m.size, "OVA member")?;
                    let got = match e.algo.as_str() {
                        "SHA1" => hash_range::<sha1::Sha1>(&r)?,
                        "SHA256" => hash_range::<sha2::Sha256>(&r)?,
                        "SHA512" => hash_range::<sha2::Sha512>(&r)?,
                        other => {
                            return Err(Error::unsupported(format!(
                                "OVA manifest digest algorithm {other} (onramp verifies SHA1, SHA256, SHA512)"
                            )))
                        }
                    };
                    if got != e.digest {
                        return Err(Error::corrupt(
                            format!("OVA manifest {}", mf.name),
                            format!("{}({})", e.algo, e.file),
                            m.offset,
                            &e.digest,
                            format!("{got} (digest of the member)"),
                        ));
                    }
                    checked.push(json!({"file": e.file, "algorithm": e.algo, "ok": true}));
                }
                manifest.insert("present".into(), json!(true));
                manifest.insert("file".into(), json!(mf.name));
                manifest.insert("verified".into(), json!(true));
                manifest.insert("entries".into(), Value::Array(checked));
            }
        }

        if env.disks.is_empty() {
            return Err(Error::corrupt_msg(format!(
                "OVF descriptor {} lists no disks (DiskSection/Disk)",
                ovf_m.name
            )));
        }
        let boot = env.boot_disk().unwrap_or(0);
        let chosen = opts.disk.unwrap_or(boot);
        let disk = env.disks.get(chosen).ok_or_else(|| {
            Error::invalid(format!(
                "--disk {chosen}: the OVA has {} disk(s), numbered 0 to {}",
                env.disks.len(),
                env.disks.len().saturating_sub(1)
            ))
        })?;
        let file = env.file_of(disk).ok_or_else(|| {
            Error::corrupt_msg(format!(
                "OVF Disk \"{}\" refers to file \"{}\", which References does not list",
                disk.disk_id,
                disk.file_ref.as_deref().unwrap_or("")
            ))
        })?;
        if let Some(c) = file
            .compression
            .as_deref()
            .filter(|c| !c.is_empty() && *c != "identity")
        {
            return Err(Error::unsupported(format!(
                "OVF File \"{}\" is compressed ({c}); onramp does not read compressed OVF files",
                file.href
            )));
        }
        if file.chunk_size.is_some() {
            return Err(Error::unsupported(format!(
                "OVF File \"{}\" is split in chunks (ovf:chunkSize); not read",
                file.href
            )));
        }
        let href = tar::check_name(&file.href, ovf_m.offset)?;
        let member = find(&href).ok_or_else(|| {
            Error::corrupt_msg(format!(
                "OVF File \"{}\" (href \"{}\") is not a member of the OVA",
                file.id, file.href
            ))
        })?;
        let range = archive.sub(member.offset, member.size, "OVA disk member")?;
        let mut head = [0u8; 1024];
        let hn = usize::try_from(range.len().min(1024)).unwrap_or(0);
        range.read_exact_at(0, head.get_mut(..hn).unwrap_or(&mut []), "OVA disk member")?;
        let mut tail = [0u8; 512];
        let has_tail = range.len() >= 512;
        if has_tail {
            range.read_exact_at(
                range.len().saturating_sub(512),
                &mut tail,
                "OVA disk member",
            )?;
        }
        let fmt =
            detect::detect_bytes(head.get(..hn).unwrap_or(&[]), has_tail.then_some(&tail[..]))?;
        let inner: Box<dyn BlockSource> = match fmt {
            Format::Vmdk if head.starts_with(b"KDMV") => {
                let r = VmdkReader::from_sparse_named(range, member.name.clone())?;
                if r.has_parent() {
                    return Err(Error::unsupported(format!(
                        "VMDK \"{}\" in the OVA has a parent; differencing disks inside an OVA are not read",
                        member.name
                    )));
                }
                Box::new(r)
            }
            Format::Raw => Box::new(range),
            other => {
                return Err(Error::unsupported(format!(
                    "disk \"{}\" in the OVA is {}; onramp reads sparse/streamOptimized VMDK or raw disks inside an OVA",
                    member.name,
                    if other == Format::Vmdk { "a VMDK descriptor" } else { other.name() }
                )))
            }
        };

        let mut d = Map::new();
        d.insert("ovf".into(), json!(ovf_m.name));
        if let Some(n) = &env.system_name {
            d.insert("virtual_system".into(), json!(n));
        }
        d.insert(
            "members".into(),
            Value::Array(
                members
                    .iter()
                    .map(|m| json!({"name": m.name, "offset": m.offset, "size": m.size}))
                    .collect(),
            ),
        );
        let disks: Vec<Value> = env
            .disks
            .iter()
            .enumerate()
            .map(|(i, dk)| {
                let f = env.file_of(dk);
                json!({
                    "index": i,
                    "disk_id": dk.disk_id,
                    "href": f.map(|f| f.href.clone()),
                    "capacity_bytes": dk.capacity_bytes(),
                    "format": dk.format,
                    "boot": i == boot,
                })
            })
            .collect();
        d.insert("disks".into(), Value::Array(disks));
        d.insert("open_disk".into(), json!(chosen));
        d.insert("open_member".into(), json!(member.name));
        d.insert("manifest".into(), Value::Object(manifest));
        let mut inner_d = Map::new();
        inner_d.insert("format".into(), json!(inner.format_name()));
        inner_d.extend(inner.details());
        d.insert("disk".into(), Value::Object(inner_d));
        Ok(OvaReader { inner, details: d })
    }
}

impl BlockSource for OvaReader {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.inner.map(offset, len)
    }
    fn format_name(&self) -> &'static str {
        "ova"
    }
    fn details(&self) -> Map<String, Value> {
        self.details.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines() {
        let m = parse_manifest("SHA256(a b.ovf)= ABCD\n\nSHA1(x.vmdk)=ef01\n").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].file, "a b.ovf");
        assert_eq!(m[0].digest, "abcd");
        assert_eq!(m[1].algo, "SHA1");
        assert!(parse_manifest("garbage\n").is_err());
    }
}
