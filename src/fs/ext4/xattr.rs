//! ext4 extended attributes: parsing and laying out the in-inode area and the
//! external attribute block.
//!
//! Layout from the kernel's "ext4 Data Structures and Algorithms", section
//! "Extended Attributes" (fs/ext4/xattr.h): a 4-byte magic 0xEA020000 right
//! after `i_extra_isize` in the inode body (value offsets count from the first
//! entry), or a 32-byte `ext4_xattr_header` (h_magic, h_refcount, h_blocks,
//! h_hash, h_checksum) at the start of the block named by `i_file_acl` (value
//! offsets count from the block start). Entries are 16 bytes plus the name,
//! padded to 4; a zero u32 ends the list; values are padded to 4 and packed
//! from the end of the area. Names are stored without their namespace prefix,
//! as an index ("Attribute Name Indices"). Hashes follow the kernel's
//! `ext4_xattr_hash_entry` and `ext4_xattr_rehash`. POSIX ACLs are stored in
//! the ext4 on-disk ACL format (fs/ext4/acl.h), converted from the xattr form.
//!
//! Arithmetic works on lengths bounded by the area (at most one block of at
//! most 64 KiB), so the module allows plain arithmetic and casts between
//! those widths; slice access is checked.
#![allow(clippy::arithmetic_side_effects, clippy::as_conversions)]

use crate::bytes::{le16, le32, sub, us};
use crate::error::{Error, Result};

/// `h_magic` and the in-inode area magic.
pub const MAGIC: u32 = 0xEA02_0000;
/// Size of the external block's header (`ext4_xattr_header`).
pub const BLOCK_HEADER: usize = 32;
/// Size of an entry before its name (`ext4_xattr_entry`).
const ENTRY_HEADER: usize = 16;

/// Name prefixes and their indices ("Attribute Name Indices"); full-name
/// matches (the ACLs) first, so that they win over `system.`.
const PREFIXES: &[(u8, &str, bool)] = &[
    (2, "system.posix_acl_access", true),
    (3, "system.posix_acl_default", true),
    (8, "system.richacl", true),
    (1, "user.", false),
    (4, "trusted.", false),
    (6, "security.", false),
    (7, "system.", false),
];

/// One attribute: name index, name without its prefix, value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// `e_name_index`.
    pub index: u8,
    /// Name without the namespace prefix.
    pub name: Vec<u8>,
    /// Value bytes (on-disk form).
    pub value: Vec<u8>,
}

impl Xattr {
    /// Build from a full name ("security.selinux") and a value in the form
    /// userspace passes to setxattr (POSIX ACLs are converted to disk form).
    pub fn from_user(full: &str, value: &[u8]) -> Result<Self> {
        for &(index, prefix, whole) in PREFIXES {
            let rest = if whole {
                (full == prefix).then_some("")
            } else {
                full.strip_prefix(prefix).filter(|r| !r.is_empty())
            };
            if let Some(rest) = rest {
                if rest.len() > 255 {
                    return Err(Error::invalid(format!(
                        "xattr name {full:?} longer than 255 bytes"
                    )));
                }
                let value = if index == 2 || index == 3 {
                    acl_to_disk(value)?
                } else {
                    value.to_vec()
                };
                return Ok(Xattr {
                    index,
                    name: rest.as_bytes().to_vec(),
                    value,
                });
            }
        }
        Err(Error::unsupported(format!(
            "xattr {full:?}: ext4 has no name index for this namespace (user., trusted., security., system.)"
        )))
    }

    /// Bytes of the entry (header and padded name).
    pub fn entry_len(&self) -> usize {
        pad4(ENTRY_HEADER + self.name.len())
    }

    /// Bytes of the padded value.
    pub fn value_len(&self) -> usize {
        pad4(self.value.len())
    }

    /// The kernel's sort key for entries in a block (index, name length, name).
    fn key(&self) -> (u8, usize, &[u8]) {
        (self.index, self.name.len(), &self.name)
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// `ext4_xattr_hash_entry`: name bytes, then the value as little-endian words.
pub fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    let mut padded = value.to_vec();
    padded.resize(pad4(value.len()), 0);
    for w in padded.chunks_exact(4) {
        h = (h << 16) ^ (h >> 16) ^ le32(w, 0);
    }
    h
}

/// `ext4_xattr_rehash`: the block hash over the entry hashes (0 when any is 0).
pub fn block_hash(hashes: &[u32]) -> u32 {
    let mut h = 0u32;
    for &e in hashes {
        if e == 0 {
            return 0;
        }
        h = (h << 16) ^ (h >> 16) ^ e;
    }
    h
}

/// Parse the entry list starting at `start` of `area`; value offsets count
/// from `base`. `what` names the area in errors.
pub fn parse(area: &[u8], start: usize, base: usize, what: &str) -> Result<Vec<Xattr>> {
    let bad =
        |field: &str, why: String| Error::corrupt_msg(format!("ext4 {what}: xattr {field}: {why}"));
    let mut out = Vec::new();
    let mut pos = start;
    loop {
        if pos + 4 > area.len() {
            return Err(bad("entry list", "runs past the end of the area".into()));
        }
        if le32(area, pos) == 0 {
            return Ok(out);
        }
        if pos + ENTRY_HEADER > area.len() || out.len() > area.len() / ENTRY_HEADER {
            return Err(bad("entry list", "runs past the end of the area".into()));
        }
        let nl = usize::from(area.get(pos).copied().unwrap_or(0));
        let index = area.get(pos + 1).copied().unwrap_or(0);
        let voff = usize::from(le16(area, pos + 2));
        let inum = le32(area, pos + 4);
        let vsize = us(u64::from(le32(area, pos + 8)));
        if inum != 0 {
            return Err(Error::unsupported(format!(
                "ext4 {what}: an xattr value lives in its own inode (ea_inode); not supported by the writer"
            )));
        }
        let name = area
            .get(pos + ENTRY_HEADER..pos + ENTRY_HEADER + nl)
            .ok_or_else(|| bad("e_name_len", format!("{nl} runs past the area")))?
            .to_vec();
        let value = base
            .checked_add(voff)
            .and_then(|a| area.get(a..a.checked_add(vsize)?))
            .ok_or_else(|| {
                bad(
                    "e_value_offs",
                    format!("value at {voff} of {vsize} bytes runs past the area"),
                )
            })?
            .to_vec();
        out.push(Xattr { index, name, value });
        pos += pad4(ENTRY_HEADER + nl);
    }
}

/// Lay `list` out into `area` (zeroed first): entries from `start`, values
/// packed down from the end, offsets relative to `base`. Entry hashes are
/// written when `hashes` is set; returns them, or None when it does not fit.
pub fn encode(
    area: &mut [u8],
    start: usize,
    base: usize,
    list: &[Xattr],
    hashes: bool,
) -> Option<Vec<u32>> {
    let need_e: usize = list.iter().map(Xattr::entry_len).sum();
    let need_v: usize = list.iter().map(Xattr::value_len).sum();
    if start + need_e + 4 + need_v > area.len() {
        return None;
    }
    area.get_mut(start..)?.fill(0);
    let mut pos = start;
    let mut vend = area.len();
    let mut out = Vec::new();
    for x in list {
        let voff = if x.value.is_empty() {
            0
        } else {
            vend -= x.value_len();
            area.get_mut(vend..vend + x.value.len())?
                .copy_from_slice(&x.value);
            vend - base
        };
        let h = if hashes {
            entry_hash(&x.name, &x.value)
        } else {
            0
        };
        let e = area.get_mut(pos..pos + x.entry_len())?;
        *e.get_mut(0)? = x.name.len() as u8;
        *e.get_mut(1)? = x.index;
        e.get_mut(2..4)?
            .copy_from_slice(&(voff as u16).to_le_bytes());
        e.get_mut(8..12)?
            .copy_from_slice(&(x.value.len() as u32).to_le_bytes());
        e.get_mut(12..16)?.copy_from_slice(&h.to_le_bytes());
        e.get_mut(ENTRY_HEADER..ENTRY_HEADER + x.name.len())?
            .copy_from_slice(&x.name);
        out.push(h);
        pos += x.entry_len();
    }
    Some(out)
}

/// Sort entries as the kernel keeps them in a block (it searches them sorted).
pub fn sort_for_block(list: &mut [Xattr]) {
    list.sort_by(|a, b| a.key().cmp(&b.key()));
}

/// Convert a POSIX ACL from the xattr form (`posix_acl_xattr_header` version 2,
/// 8-byte entries) to ext4's disk form (version 1; short 4-byte entries for
/// USER_OBJ, GROUP_OBJ, MASK, OTHER). A value already in disk form is kept.
fn acl_to_disk(v: &[u8]) -> Result<Vec<u8>> {
    let bad = || Error::invalid("POSIX ACL value: not a valid posix_acl_xattr (version 2) value");
    if v.len() >= 4 && le32(v, 0) == 1 {
        return Ok(v.to_vec());
    }
    if v.len() < 4 || le32(v, 0) != 2 || !(v.len() - 4).is_multiple_of(8) {
        return Err(bad());
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in sub(v, 4, v.len() - 4).chunks_exact(8) {
        let tag = le16(e, 0);
        match tag {
            0x01 | 0x04 | 0x10 | 0x20 => out.extend_from_slice(sub(e, 0, 4)),
            0x02 | 0x08 => out.extend_from_slice(e),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_indices() {
        let x = Xattr::from_user("security.selinux", b"a\0").unwrap();
        assert_eq!((x.index, x.name.as_slice()), (6, &b"selinux"[..]));
        let x = Xattr::from_user("user.k", b"").unwrap();
        assert_eq!(x.index, 1);
        let acl = [2u32.to_le_bytes(), [1, 0, 6, 0], [255; 4]].concat();
        let x = Xattr::from_user("system.posix_acl_access", &acl).unwrap();
        assert_eq!((x.index, x.name.len()), (2, 0));
        assert_eq!(x.value, [1, 0, 0, 0, 1, 0, 6, 0]);
        assert!(Xattr::from_user("foo.bar", b"").is_err());
        assert!(Xattr::from_user("user.", b"").is_err());
    }

    #[test]
    fn encode_then_parse() {
        let list = vec![
            Xattr::from_user("user.a", b"hello").unwrap(),
            Xattr::from_user("trusted.bb", b"").unwrap(),
        ];
        let mut area = vec![0u8; 128];
        let h = encode(&mut area, BLOCK_HEADER, 0, &list, true).unwrap();
        assert_eq!(h[0], entry_hash(b"a", b"hello"));
        assert_eq!(parse(&area, BLOCK_HEADER, 0, "t").unwrap(), list);
        let mut small = vec![0u8; 40];
        assert!(encode(&mut small, 4, 4, &list, false).is_none());
    }
}
