//! Windows registry hives (the "regf" format): a read-only parser and a small
//! writer for building test fixtures (see [`writer`]).
//!
//! A hive is a file format, not a filesystem: [`Hive::parse`] takes the bytes
//! of a hive file (read from a guest filesystem) and answers key and value
//! lookups. Layout as described in Maxim Suhanov's "Windows registry file
//! format specification" (github.com/msuhanov/regf):
//!
//! - base block (4096 bytes, "Base block"): signature `regf`, primary and
//!   secondary sequence numbers (unequal = the hive was not written cleanly and
//!   a transaction log is pending; reported by [`Hive::pending_log`]),
//!   root cell offset, hive bins data size, checksum (XOR of the first 508
//!   bytes as little-endian dwords);
//! - hive bins ("Hive bin"): `hbin`, offset relative to the first bin, size (a
//!   multiple of 4096); cells follow the 32-byte bin header;
//! - cells ("Cell"): an `i32` size (negative = allocated) then data; every
//!   offset in the hive is relative to the first bin (file offset 4096);
//! - key nodes `nk`, values `vk`, subkey lists `lf`/`lh`/`li`/`ri`, value
//!   lists, security `sk`, big data `db` (values over 16344 bytes).
//!
//! Every offset is checked to land on an allocated cell inside one hive bin;
//! a cell that runs past its bin is corrupt; `ri` nesting is bounded by
//! [`limits::MAX_RECURSION_DEPTH`]; counts are bounded by the cell holding them.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod editor;
pub mod windows;
pub mod writer;

use crate::error::{Error, Result};
use crate::limits;

/// Size of the base block and file offset of the first hive bin ("Base block").
pub const BASE_BLOCK_SIZE: usize = 4096;
/// Size of a hive bin header ("Hive bin").
pub const HBIN_HEADER_SIZE: usize = 32;
/// Bytes covered by the base block checksum ("Base block", offset 508).
pub const CHECKSUM_COVERED: usize = 508;
/// Largest value data stored in one cell; bigger values use `db` big data
/// records in hives of version 1.4 and later ("Big data").
pub const MAX_DIRECT_DATA: usize = 16344;
/// "No cell" marker for offsets.
pub const NO_CELL: u32 = 0xFFFF_FFFF;

/// nk flag: the name is stored in (extended) ASCII, not UTF-16LE ("Key node" flags).
pub const KEY_COMP_NAME: u16 = 0x0020;
/// nk flag: the root key of the hive.
pub const KEY_HIVE_ENTRY: u16 = 0x0004;
/// nk flag: the key cannot be deleted.
pub const KEY_NO_DELETE: u16 = 0x0008;
/// vk flag: the name is stored in (extended) ASCII ("Key value" flags).
pub const VALUE_COMP_NAME: u16 = 0x0001;

/// Registry value types ("Data types").
pub mod types {
    /// No type.
    pub const REG_NONE: u32 = 0;
    /// UTF-16LE string, NUL terminated.
    pub const REG_SZ: u32 = 1;
    /// UTF-16LE string with %VARIABLES%.
    pub const REG_EXPAND_SZ: u32 = 2;
    /// Binary data.
    pub const REG_BINARY: u32 = 3;
    /// Little-endian 32-bit number.
    pub const REG_DWORD: u32 = 4;
    /// Big-endian 32-bit number.
    pub const REG_DWORD_BIG_ENDIAN: u32 = 5;
    /// UTF-16LE symbolic link target.
    pub const REG_LINK: u32 = 6;
    /// List of UTF-16LE strings, each NUL terminated, ending with an empty one.
    pub const REG_MULTI_SZ: u32 = 7;
    /// Little-endian 64-bit number.
    pub const REG_QWORD: u32 = 11;
}

/// Read a little-endian u16 at `off` of `b`.
fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([*s.first()?, *s.get(1)?]))
}

/// Read a little-endian u32 at `off` of `b`.
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

/// Read a little-endian u64 at `off` of `b`.
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

fn to_u64(x: usize) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

fn to_usize(x: u32) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// The base block checksum of `block` (at least 508 bytes): XOR of the first
/// 127 dwords; 0 becomes 1 and 0xFFFFFFFF becomes 0xFFFFFFFE ("Base block" notes).
pub fn checksum(block: &[u8]) -> u32 {
    let mut x = 0u32;
    for c in block.get(..CHECKSUM_COVERED).unwrap_or(&[]).chunks_exact(4) {
        x ^= u32::from_le_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
            c.get(3).copied().unwrap_or(0),
        ]);
    }
    match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    }
}

/// Hash of a name in an `lh` list: over the upper-cased UTF-16 code units,
/// `h = h * 37 + c` ("Hash leaf" note).
pub fn name_hash(name: &str) -> u32 {
    let mut h = 0u32;
    for c in name.to_uppercase().encode_utf16() {
        h = h.wrapping_mul(37).wrapping_add(u32::from(c));
    }
    h
}

/// Case-insensitive comparison key of a registry name (Windows compares names
/// upper-cased).
pub fn fold(name: &str) -> String {
    name.to_uppercase()
}

/// Facts from the base block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BaseBlock {
    /// Primary sequence number (incremented when a write starts).
    pub primary_sequence: u32,
    /// Secondary sequence number (incremented when the write ends).
    pub secondary_sequence: u32,
    /// Last written time (FILETIME).
    pub timestamp: u64,
    /// Format version major (1).
    pub major_version: u32,
    /// Format version minor (3..6).
    pub minor_version: u32,
    /// Offset of the root key cell, relative to the first hive bin.
    pub root_cell: u32,
    /// Bytes of hive bins after the base block.
    pub hive_bins_size: u32,
    /// Checksum stored in the base block.
    pub checksum: u32,
    /// File name stored in the base block (informational).
    pub file_name: String,
}

/// A parsed hive over borrowed bytes.
#[derive(Debug)]
pub struct Hive<'a> {
    data: &'a [u8],
    base: BaseBlock,
    /// Hive bins as (file offset start, file offset end), ascending.
    bins: Vec<(usize, usize)>,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", content = "data")]
pub enum ValueData {
    /// REG_NONE: raw bytes.
    None(Vec<u8>),
    /// REG_SZ.
    String(String),
    /// REG_EXPAND_SZ.
    ExpandString(String),
    /// REG_BINARY.
    Binary(Vec<u8>),
    /// REG_DWORD.
    Dword(u32),
    /// REG_DWORD_BIG_ENDIAN.
    DwordBigEndian(u32),
    /// REG_MULTI_SZ.
    MultiString(Vec<String>),
    /// REG_QWORD.
    Qword(u64),
    /// Any other type (or a number of the wrong length): type and raw bytes.
    Other {
        /// Registry type code.
        ty: u32,
        /// Raw bytes.
        bytes: Vec<u8>,
    },
}

/// One value of a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Value {
    /// Name ("" is the key's default value).
    pub name: String,
    /// Registry type code (see [`types`]).
    pub ty: u32,
    /// Raw data bytes.
    pub data: Vec<u8>,
}

/// Decode UTF-16LE bytes up to the first NUL (an odd trailing byte is ignored).
pub fn utf16_string(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Decode a REG_MULTI_SZ: NUL-separated UTF-16LE strings ending at an empty one.
pub fn utf16_multi(b: &[u8]) -> Vec<String> {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    let mut out = Vec::new();
    for part in units.split(|&u| u == 0) {
        if part.is_empty() {
            break;
        }
        out.push(String::from_utf16_lossy(part));
    }
    out
}

impl Value {
    /// The value decoded by its type.
    pub fn decode(&self) -> ValueData {
        let d = &self.data;
        match self.ty {
            types::REG_NONE => ValueData::None(d.clone()),
            types::REG_SZ => ValueData::String(utf16_string(d)),
            types::REG_EXPAND_SZ => ValueData::ExpandString(utf16_string(d)),
            types::REG_BINARY => ValueData::Binary(d.clone()),
            types::REG_MULTI_SZ => ValueData::MultiString(utf16_multi(d)),
            types::REG_DWORD if d.len() == 4 => ValueData::Dword(u32_at(d, 0).unwrap_or_default()),
            types::REG_DWORD_BIG_ENDIAN if d.len() == 4 => {
                ValueData::DwordBigEndian(u32_at(d, 0).unwrap_or_default().swap_bytes())
            }
            types::REG_QWORD if d.len() == 8 => ValueData::Qword(u64_at(d, 0).unwrap_or_default()),
            ty => ValueData::Other {
                ty,
                bytes: d.clone(),
            },
        }
    }

    /// A string value (REG_SZ, REG_EXPAND_SZ, REG_LINK; first of a REG_MULTI_SZ).
    pub fn as_string(&self) -> Option<String> {
        match self.ty {
            types::REG_SZ | types::REG_EXPAND_SZ | types::REG_LINK => {
                Some(utf16_string(&self.data))
            }
            types::REG_MULTI_SZ => utf16_multi(&self.data).into_iter().next(),
            _ => None,
        }
    }

    /// Strings of a REG_MULTI_SZ (a single string for REG_SZ/REG_EXPAND_SZ).
    pub fn as_strings(&self) -> Option<Vec<String>> {
        match self.ty {
            types::REG_MULTI_SZ => Some(utf16_multi(&self.data)),
            types::REG_SZ | types::REG_EXPAND_SZ => Some(vec![utf16_string(&self.data)]),
            _ => None,
        }
    }

    /// A number: REG_DWORD, REG_DWORD_BIG_ENDIAN, REG_QWORD (or 4/8 bytes of
    /// REG_BINARY/REG_NONE, as some software stores flags that way).
    pub fn as_u64(&self) -> Option<u64> {
        match (self.ty, self.data.len()) {
            (types::REG_DWORD_BIG_ENDIAN, 4) => {
                u32_at(&self.data, 0).map(|v| u64::from(v.swap_bytes()))
            }
            (types::REG_DWORD | types::REG_BINARY | types::REG_NONE, 4) => {
                u32_at(&self.data, 0).map(u64::from)
            }
            (types::REG_QWORD | types::REG_BINARY | types::REG_NONE, 8) => u64_at(&self.data, 0),
            // Some installers write numbers as strings.
            (types::REG_SZ, _) => utf16_string(&self.data).trim().parse().ok(),
            _ => None,
        }
    }
}

/// A key inside a [`Hive`].
#[derive(Debug, Clone, Copy)]
pub struct Key<'h, 'a> {
    hive: &'h Hive<'a>,
    /// Cell offset (relative to the first bin).
    offset: u32,
}

impl<'a> Hive<'a> {
    /// Parse the base block and hive bins of `data` (a whole hive file).
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        let s = "registry hive base block";
        if to_u64(data.len()) > limits::MAX_HIVE_BYTES {
            return Err(Error::corrupt(
                "registry hive",
                "file size",
                0,
                format!("at most {} bytes", limits::MAX_HIVE_BYTES),
                data.len(),
            ));
        }
        let bb = data
            .get(..BASE_BLOCK_SIZE)
            .ok_or_else(|| Error::corrupt(s, "length", 0, "at least 4096 bytes", data.len()))?;
        let sig = bb.get(..4).unwrap_or_default();
        if sig != b"regf" {
            return Err(Error::corrupt(
                s,
                "signature",
                0,
                "\"regf\"",
                format!("{sig:02x?}"),
            ));
        }
        let f = |o: usize| u32_at(bb, o).unwrap_or_default();
        let stored = f(508);
        let computed = checksum(bb);
        if stored != computed {
            return Err(Error::corrupt(
                s,
                "checksum",
                508,
                format!("{computed:#010x}"),
                format!("{stored:#010x}"),
            ));
        }
        let major = f(20);
        if major != 1 {
            return Err(Error::corrupt(s, "major version", 20, 1, major));
        }
        let ftype = f(28);
        if ftype != 0 {
            return Err(Error::corrupt(
                s,
                "file type",
                28,
                "0 (primary file)",
                ftype,
            ));
        }
        let size = f(40);
        if !size.is_multiple_of(4096) || size == 0 {
            return Err(Error::corrupt(
                s,
                "hive bins data size",
                40,
                "a non-zero multiple of 4096",
                size,
            ));
        }
        let end = BASE_BLOCK_SIZE.saturating_add(to_usize(size));
        if end > data.len() {
            return Err(Error::corrupt(
                s,
                "hive bins data size",
                40,
                format!(
                    "at most {} (file is {} bytes)",
                    data.len().saturating_sub(BASE_BLOCK_SIZE),
                    data.len()
                ),
                size,
            ));
        }
        let name_bytes = bb.get(48..112).unwrap_or_default();
        let base = BaseBlock {
            primary_sequence: f(4),
            secondary_sequence: f(8),
            timestamp: u64_at(bb, 12).unwrap_or_default(),
            major_version: major,
            minor_version: f(24),
            root_cell: f(36),
            hive_bins_size: size,
            checksum: stored,
            file_name: utf16_string(name_bytes),
        };
        // Walk the hive bins: contiguous, each a multiple of 4096.
        let mut bins = Vec::new();
        let mut pos = BASE_BLOCK_SIZE;
        while pos < end {
            let hs = "hive bin header";
            let off = to_u64(pos);
            let hdr = data
                .get(pos..pos.saturating_add(HBIN_HEADER_SIZE))
                .ok_or_else(|| Error::corrupt(hs, "length", off, "32 bytes", "end of file"))?;
            if hdr.get(..4) != Some(b"hbin") {
                return Err(Error::corrupt(
                    hs,
                    "signature",
                    off,
                    "\"hbin\"",
                    format!("{:02x?}", hdr.get(..4).unwrap_or_default()),
                ));
            }
            let rel = u32_at(hdr, 4).unwrap_or_default();
            let expect_rel = pos.saturating_sub(BASE_BLOCK_SIZE);
            if to_usize(rel) != expect_rel {
                return Err(Error::corrupt(
                    hs,
                    "offset",
                    off.saturating_add(4),
                    expect_rel,
                    rel,
                ));
            }
            let bsize = to_usize(u32_at(hdr, 8).unwrap_or_default());
            let bend = pos.saturating_add(bsize);
            if bsize == 0 || !bsize.is_multiple_of(4096) || bend > end {
                return Err(Error::corrupt(
                    hs,
                    "size",
                    off.saturating_add(8),
                    format!("a non-zero multiple of 4096 ending by byte {end}"),
                    bsize,
                ));
            }
            bins.push((pos, bend));
            pos = bend;
        }
        let hive = Hive { data, base, bins };
        // The root must be a key node.
        let root = hive.root()?;
        root.nk()?;
        Ok(hive)
    }

    /// The base block facts.
    pub fn base_block(&self) -> &BaseBlock {
        &self.base
    }

    /// True when the sequence numbers differ: the hive was not written back
    /// cleanly and changes may sit in a transaction log (.LOG1/.LOG2) that this
    /// reader does not replay.
    pub fn pending_log(&self) -> bool {
        self.base.primary_sequence != self.base.secondary_sequence
    }

    /// The root key.
    pub fn root(&self) -> Result<Key<'_, 'a>> {
        Ok(Key {
            hive: self,
            offset: self.base.root_cell,
        })
    }

    /// Open a key by a `\`-separated path below the root, case-insensitive;
    /// `Ok(None)` if absent. A leading `\` is ignored.
    pub fn open_key(&self, path: &str) -> Result<Option<Key<'_, 'a>>> {
        let mut k = self.root()?;
        for part in path.split(['\\', '/']).filter(|p| !p.is_empty()) {
            match k.subkey(part)? {
                Some(c) => k = c,
                None => return Ok(None),
            }
        }
        Ok(Some(k))
    }

    /// Convenience: the value `name` of key `path`, if both exist.
    pub fn get(&self, path: &str, name: &str) -> Result<Option<Value>> {
        match self.open_key(path)? {
            Some(k) => k.value(name),
            None => Ok(None),
        }
    }

    /// The data of the allocated cell at `offset` (relative to the first bin),
    /// without its size field; checked to lie inside one hive bin.
    fn cell(&self, offset: u32, what: &str) -> Result<&'a [u8]> {
        let s = format!("registry {what} cell");
        let abs = BASE_BLOCK_SIZE.saturating_add(to_usize(offset));
        let abs64 = to_u64(abs);
        // Find the bin holding abs.
        let idx = self.bins.partition_point(|&(start, _)| start <= abs);
        let (bstart, bend) = idx
            .checked_sub(1)
            .and_then(|i| self.bins.get(i).copied())
            .filter(|&(_, e)| abs < e)
            .ok_or_else(|| {
                Error::corrupt(
                    &s,
                    "offset",
                    abs64,
                    "an offset inside the hive bins",
                    offset,
                )
            })?;
        if !offset.is_multiple_of(8) || abs < bstart.saturating_add(HBIN_HEADER_SIZE) {
            return Err(Error::corrupt(
                &s,
                "offset",
                abs64,
                "8-aligned, after the bin header",
                offset,
            ));
        }
        let raw = u32_at(self.data, abs)
            .ok_or_else(|| Error::corrupt(&s, "size", abs64, "4 bytes", "end of file"))?;
        let size = i32::from_le_bytes(raw.to_le_bytes());
        if size >= 0 {
            return Err(Error::corrupt(
                &s,
                "size",
                abs64,
                "a negative size (allocated cell)",
                size,
            ));
        }
        let len = to_usize(size.unsigned_abs());
        let cend = abs.saturating_add(len);
        if len < 8 || cend > bend {
            return Err(Error::corrupt(
                &s,
                "size",
                abs64,
                format!("at least 8 and ending inside its hive bin (by byte {bend})"),
                len,
            ));
        }
        self.data
            .get(abs.saturating_add(4)..cend)
            .ok_or_else(|| Error::corrupt(&s, "size", abs64, "inside the file", len))
    }

    /// The file offset of a cell's data (for error messages).
    fn file_off(offset: u32) -> u64 {
        to_u64(BASE_BLOCK_SIZE)
            .saturating_add(u64::from(offset))
            .saturating_add(4)
    }

    /// Collect the key-node offsets of a subkey list cell (lf/lh/li/ri).
    fn list_subkeys(&self, list: u32, depth: usize, out: &mut Vec<u32>) -> Result<()> {
        if depth > limits::MAX_RECURSION_DEPTH {
            return Err(Error::corrupt(
                "registry subkey list",
                "nesting",
                Self::file_off(list),
                format!(
                    "at most {} levels of index root (ri) lists",
                    limits::MAX_RECURSION_DEPTH
                ),
                depth,
            ));
        }
        let c = self.cell(list, "subkey list")?;
        let fo = Self::file_off(list);
        let sig = c.get(..2).unwrap_or_default();
        let count = to_usize(u32::from(u16_at(c, 2).unwrap_or_default()));
        let (stride, nested) = match sig {
            b"lf" | b"lh" => (8usize, false),
            b"li" => (4, false),
            b"ri" => (4, true),
            _ => {
                return Err(Error::corrupt(
                    "registry subkey list",
                    "signature",
                    fo,
                    "lf, lh, li or ri",
                    String::from_utf8_lossy(sig),
                ))
            }
        };
        let need = count.saturating_mul(stride).saturating_add(4);
        if need > c.len() {
            return Err(Error::corrupt(
                "registry subkey list",
                "number of elements",
                fo.saturating_add(2),
                format!(
                    "at most {} for a {}-byte cell",
                    c.len().saturating_sub(4).checked_div(stride).unwrap_or(0),
                    c.len()
                ),
                count,
            ));
        }
        for i in 0..count {
            let o = u32_at(c, i.saturating_mul(stride).saturating_add(4)).unwrap_or(NO_CELL);
            if nested {
                self.list_subkeys(o, depth.saturating_add(1), out)?;
            } else {
                out.push(o);
            }
        }
        Ok(())
    }
}

/// Decode a registry name: ASCII/Latin-1 when `compressed`, else UTF-16LE.
fn decode_name(b: &[u8], compressed: bool) -> String {
    if compressed {
        b.iter().map(|&c| char::from(c)).collect()
    } else {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        String::from_utf16_lossy(&units)
    }
}

/// nk fixed fields (offsets inside the cell data, "Key node").
mod nk {
    pub const FLAGS: usize = 2;
    pub const TIMESTAMP: usize = 4;
    pub const PARENT: usize = 16;
    pub const SUBKEYS: usize = 20;
    pub const SUBKEY_LIST: usize = 28;
    pub const VALUES: usize = 36;
    pub const VALUE_LIST: usize = 40;
    pub const SECURITY: usize = 44;
    pub const CLASS: usize = 48;
    pub const NAME_LEN: usize = 72;
    pub const CLASS_LEN: usize = 74;
    pub const NAME: usize = 76;
}

impl<'h, 'a> Key<'h, 'a> {
    fn nk(&self) -> Result<&'a [u8]> {
        let c = self.hive.cell(self.offset, "key node")?;
        let fo = Hive::file_off(self.offset);
        if c.get(..2) != Some(b"nk") {
            return Err(Error::corrupt(
                "registry key node",
                "signature",
                fo,
                "\"nk\"",
                String::from_utf8_lossy(c.get(..2).unwrap_or_default()),
            ));
        }
        let nl = to_usize(u32::from(u16_at(c, nk::NAME_LEN).unwrap_or_default()));
        if nk::NAME.saturating_add(nl) > c.len() {
            return Err(Error::corrupt(
                "registry key node",
                "key name length",
                fo.saturating_add(to_u64(nk::NAME_LEN)),
                format!("at most {}", c.len().saturating_sub(nk::NAME)),
                nl,
            ));
        }
        Ok(c)
    }

    /// Cell offset of this key (relative to the first hive bin).
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// The key's name.
    pub fn name(&self) -> Result<String> {
        let c = self.nk()?;
        let flags = u16_at(c, nk::FLAGS).unwrap_or_default();
        let nl = to_usize(u32::from(u16_at(c, nk::NAME_LEN).unwrap_or_default()));
        let b = c
            .get(nk::NAME..nk::NAME.saturating_add(nl))
            .unwrap_or_default();
        Ok(decode_name(b, flags & KEY_COMP_NAME != 0))
    }

    /// Last written time (FILETIME).
    pub fn timestamp(&self) -> Result<u64> {
        Ok(u64_at(self.nk()?, nk::TIMESTAMP).unwrap_or_default())
    }

    /// Class name, if any.
    pub fn class_name(&self) -> Result<Option<String>> {
        let c = self.nk()?;
        let off = u32_at(c, nk::CLASS).unwrap_or(NO_CELL);
        let len = to_usize(u32::from(u16_at(c, nk::CLASS_LEN).unwrap_or_default()));
        if off == NO_CELL || len == 0 {
            return Ok(None);
        }
        let cc = self.hive.cell(off, "class name")?;
        let b = cc.get(..len).ok_or_else(|| {
            Error::corrupt(
                "registry key node",
                "class name length",
                Hive::file_off(self.offset),
                format!("at most {}", cc.len()),
                len,
            )
        })?;
        Ok(Some(decode_name(b, false)))
    }

    /// Offset of the parent key cell.
    pub fn parent_offset(&self) -> Result<u32> {
        Ok(u32_at(self.nk()?, nk::PARENT).unwrap_or(NO_CELL))
    }

    /// Offset of the security (sk) cell.
    pub fn security_offset(&self) -> Result<u32> {
        Ok(u32_at(self.nk()?, nk::SECURITY).unwrap_or(NO_CELL))
    }

    /// The subkeys, in list order.
    pub fn subkeys(&self) -> Result<Vec<Key<'h, 'a>>> {
        let c = self.nk()?;
        let n = u32_at(c, nk::SUBKEYS).unwrap_or_default();
        let list = u32_at(c, nk::SUBKEY_LIST).unwrap_or(NO_CELL);
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut offs = Vec::new();
        self.hive.list_subkeys(list, 0, &mut offs)?;
        if offs.len() != to_usize(n) {
            return Err(Error::corrupt(
                "registry key node",
                "number of subkeys",
                Hive::file_off(self.offset).saturating_add(to_u64(nk::SUBKEYS)),
                format!("{} (entries in its subkey list)", offs.len()),
                n,
            ));
        }
        let mut out = Vec::with_capacity(offs.len());
        for o in offs {
            let k = Key {
                hive: self.hive,
                offset: o,
            };
            k.nk()?;
            out.push(k);
        }
        Ok(out)
    }

    /// The subkey called `name` (case-insensitive), if any.
    pub fn subkey(&self, name: &str) -> Result<Option<Key<'h, 'a>>> {
        let want = fold(name);
        for k in self.subkeys()? {
            if fold(&k.name()?) == want {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    fn value_offsets(&self) -> Result<Vec<u32>> {
        let c = self.nk()?;
        let n = to_usize(u32_at(c, nk::VALUES).unwrap_or_default());
        if n == 0 {
            return Ok(Vec::new());
        }
        let list = u32_at(c, nk::VALUE_LIST).unwrap_or(NO_CELL);
        let lc = self.hive.cell(list, "value list")?;
        if n.saturating_mul(4) > lc.len() {
            return Err(Error::corrupt(
                "registry key node",
                "number of values",
                Hive::file_off(self.offset).saturating_add(to_u64(nk::VALUES)),
                format!("at most {} (size of the value list cell)", lc.len() / 4),
                n,
            ));
        }
        Ok((0..n)
            .map(|i| u32_at(lc, i.saturating_mul(4)).unwrap_or(NO_CELL))
            .collect())
    }

    /// All values, in list order.
    pub fn values(&self) -> Result<Vec<Value>> {
        self.value_offsets()?
            .into_iter()
            .map(|o| self.read_value(o))
            .collect()
    }

    /// The names of the values (cheaper than [`values`](Self::values)).
    pub fn value_names(&self) -> Result<Vec<String>> {
        self.value_offsets()?
            .into_iter()
            .map(|o| self.vk_name(o).map(|(n, _)| n))
            .collect()
    }

    /// The value called `name` (case-insensitive; "" is the default value).
    pub fn value(&self, name: &str) -> Result<Option<Value>> {
        let want = fold(name);
        for o in self.value_offsets()? {
            let (n, _) = self.vk_name(o)?;
            if fold(&n) == want {
                return self.read_value(o).map(Some);
            }
        }
        Ok(None)
    }

    fn vk_name(&self, off: u32) -> Result<(String, &'a [u8])> {
        let c = self.hive.cell(off, "key value")?;
        let fo = Hive::file_off(off);
        if c.get(..2) != Some(b"vk") {
            return Err(Error::corrupt(
                "registry key value",
                "signature",
                fo,
                "\"vk\"",
                String::from_utf8_lossy(c.get(..2).unwrap_or_default()),
            ));
        }
        let nl = to_usize(u32::from(u16_at(c, 2).unwrap_or_default()));
        let flags = u16_at(c, 16).unwrap_or_default();
        let b = c.get(20..20usize.saturating_add(nl)).ok_or_else(|| {
            Error::corrupt(
                "registry key value",
                "name length",
                fo.saturating_add(2),
                format!("at most {}", c.len().saturating_sub(20)),
                nl,
            )
        })?;
        Ok((decode_name(b, flags & VALUE_COMP_NAME != 0), c))
    }

    fn read_value(&self, off: u32) -> Result<Value> {
        let (name, c) = self.vk_name(off)?;
        let fo = Hive::file_off(off);
        let raw_size = u32_at(c, 4).unwrap_or_default();
        let doff = u32_at(c, 8).unwrap_or(NO_CELL);
        let ty = u32_at(c, 12).unwrap_or_default();
        let s = "registry key value";
        let data = if raw_size & 0x8000_0000 != 0 {
            // Data stored in the offset field itself.
            let len = to_usize(raw_size & 0x7FFF_FFFF);
            if len > 4 {
                return Err(Error::corrupt(
                    s,
                    "data size",
                    fo.saturating_add(4),
                    "at most 4 for resident data",
                    len,
                ));
            }
            c.get(8..8usize.saturating_add(len))
                .unwrap_or_default()
                .to_vec()
        } else {
            let len = to_usize(raw_size);
            if to_u64(len) > limits::MAX_HIVE_BYTES {
                return Err(Error::corrupt(
                    s,
                    "data size",
                    fo.saturating_add(4),
                    format!("at most {}", limits::MAX_HIVE_BYTES),
                    len,
                ));
            }
            if len == 0 {
                Vec::new()
            } else {
                let dc = self.hive.cell(doff, "value data")?;
                if len > MAX_DIRECT_DATA
                    && self.hive.base.minor_version >= 4
                    && dc.get(..2) == Some(b"db")
                {
                    self.big_data(doff, dc, len)?
                } else {
                    dc.get(..len)
                        .ok_or_else(|| {
                            Error::corrupt(
                                s,
                                "data size",
                                fo.saturating_add(4),
                                format!("at most {} (size of the data cell)", dc.len()),
                                len,
                            )
                        })?
                        .to_vec()
                }
            }
        };
        Ok(Value { name, ty, data })
    }

    fn big_data(&self, off: u32, db: &[u8], len: usize) -> Result<Vec<u8>> {
        let s = "registry big data";
        let fo = Hive::file_off(off);
        let n = to_usize(u32::from(u16_at(db, 2).unwrap_or_default()));
        let list = u32_at(db, 4).unwrap_or(NO_CELL);
        let needed = len.div_ceil(MAX_DIRECT_DATA);
        if n < needed {
            return Err(Error::corrupt(
                s,
                "number of segments",
                fo.saturating_add(2),
                format!("at least {needed} for {len} bytes"),
                n,
            ));
        }
        let lc = self.hive.cell(list, "big data segment list")?;
        if n.saturating_mul(4) > lc.len() {
            return Err(Error::corrupt(
                s,
                "number of segments",
                fo.saturating_add(2),
                format!("at most {}", lc.len() / 4),
                n,
            ));
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..n {
            if out.len() >= len {
                break;
            }
            let so = u32_at(lc, i.saturating_mul(4)).unwrap_or(NO_CELL);
            let seg = self.hive.cell(so, "big data segment")?;
            let want = len.saturating_sub(out.len()).min(MAX_DIRECT_DATA);
            let part = seg.get(..want).ok_or_else(|| {
                Error::corrupt(
                    "registry big data segment",
                    "size",
                    Hive::file_off(so),
                    format!("at least {want}"),
                    seg.len(),
                )
            })?;
            out.extend_from_slice(part);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
