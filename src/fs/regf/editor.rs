//! A registry hive editor: edits the bytes of an existing hive (as read from a
//! guest) and produces new hive bytes (issue 11, "Registry hive writer").
//!
//! Layout as in the "Windows registry file format specification" (see the
//! parent module). What the editor maintains:
//!
//! - cells are allocated first-fit from free cells (positive size) of the
//!   existing hive bins, splitting them (all cell sizes are multiples of 8), or
//!   from a new hive bin appended at the end (a multiple of 4096 bytes; the
//!   base block's "hive bins data size" grows); replaced cells are freed
//!   (size made positive), not merged;
//! - `lf`/`lh`/`li` subkey lists stay sorted by upper-cased name, with `lh`
//!   hashes from [`name_hash`] and `lf` hints of the first 4 characters; a list
//!   grows by allocating a bigger cell; under an `ri` index root the new key
//!   goes into the leaf whose range covers its name;
//! - key nodes: subkey and value counts, value lists, largest subkey / value
//!   name and value data lengths, last written timestamps;
//! - new keys share their parent's security cell (`sk`), whose reference count
//!   is incremented (decremented on delete, the cell unlinked and freed at 0);
//! - on [`HiveEditor::finish`] the base block gets primary == secondary
//!   sequence numbers (both incremented), the timestamp and its checksum.
//!
//! Transaction logs: a hive whose sequence numbers differ has changes pending
//! in HIVE.LOG1/LOG2 that must be replayed first; [`HiveEditor::open`] refuses
//! it. A hive written by [`HiveEditor::finish`] has equal sequence numbers, so
//! Windows ignores any .LOG1/.LOG2 files next to it (their sequence numbers
//! are older than the hive's): the caller does not need to touch them.
//!
//! Timestamps are deterministic: `SOURCE_DATE_EPOCH` converted to a FILETIME,
//! or 0 when unset.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::{
    checksum, fold, name_hash, nk, types, u16_at, u32_at, Hive, Key, Value, ValueData,
    BASE_BLOCK_SIZE, HBIN_HEADER_SIZE, KEY_COMP_NAME, MAX_DIRECT_DATA, NO_CELL, VALUE_COMP_NAME,
};
use crate::error::{Error, Result};
use crate::limits;

/// Seconds between 1601-01-01 (FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_DIFF: u64 = 11_644_473_600;

/// The FILETIME the editor stamps: `SOURCE_DATE_EPOCH` or 0.
pub fn deterministic_filetime() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| {
            s.saturating_add(FILETIME_UNIX_DIFF)
                .saturating_mul(10_000_000)
        })
        .unwrap_or(0)
}

fn to_usize(x: u32) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

fn to_u32(x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::invalid(format!("registry hive: {x} does not fit 32 bits")))
}

fn to_u16(x: usize, what: &str) -> Result<u16> {
    u16::try_from(x).map_err(|_| Error::invalid(format!("registry {what} too long: {x}")))
}

/// Round `x` up to a multiple of `m` (a power of two), saturating.
fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m).saturating_mul(m)
}

/// Name bytes and whether they are stored compressed (Latin-1).
fn name_bytes(name: &str) -> (Vec<u8>, bool) {
    if name.chars().all(|c| u32::from(c) < 0x80) {
        (name.as_bytes().to_vec(), true)
    } else {
        (
            name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            false,
        )
    }
}

/// Length of a name in bytes as UTF-16 (what the "largest name" fields count).
fn utf16_len(name: &str) -> usize {
    name.encode_utf16().count().saturating_mul(2)
}

/// `lf` hint: the first 4 characters of the name (8-bit, zero padded).
fn lf_hint(name: &str) -> u32 {
    let mut b = [0u8; 4];
    for (slot, c) in b.iter_mut().zip(name.chars()) {
        *slot = u8::try_from(u32::from(c)).unwrap_or(b'?');
    }
    u32::from_le_bytes(b)
}

/// Encode typed data as (registry type, bytes).
pub fn encode(data: &ValueData) -> (u32, Vec<u8>) {
    let utf16z = |s: &str| -> Vec<u8> {
        let mut d: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        d.extend([0, 0]);
        d
    };
    match data {
        ValueData::None(b) => (types::REG_NONE, b.clone()),
        ValueData::String(s) => (types::REG_SZ, utf16z(s)),
        ValueData::ExpandString(s) => (types::REG_EXPAND_SZ, utf16z(s)),
        ValueData::Binary(b) => (types::REG_BINARY, b.clone()),
        ValueData::Dword(v) => (types::REG_DWORD, v.to_le_bytes().to_vec()),
        ValueData::DwordBigEndian(v) => (types::REG_DWORD_BIG_ENDIAN, v.to_be_bytes().to_vec()),
        ValueData::MultiString(items) => {
            let mut d = Vec::new();
            for i in items {
                d.extend(utf16z(i));
            }
            d.extend([0, 0]);
            (types::REG_MULTI_SZ, d)
        }
        ValueData::Qword(v) => (types::REG_QWORD, v.to_le_bytes().to_vec()),
        ValueData::Other { ty, bytes } => (*ty, bytes.clone()),
    }
}

/// Split a `\`-separated key path into its non-empty components.
fn components(path: &str) -> Vec<&str> {
    path.split(['\\', '/']).filter(|p| !p.is_empty()).collect()
}

/// An editable hive. See the module docs.
#[derive(Debug)]
pub struct HiveEditor {
    data: Vec<u8>,
    /// Free cells as (offset relative to the first bin, size).
    free: Vec<(u32, u32)>,
    filetime: u64,
    minor: u32,
}

/// A subkey list cell, decoded.
enum SubkeyList {
    /// `lf`, `lh` or `li` with its signature and the key-node offsets.
    Leaf([u8; 2], Vec<u32>),
    /// `ri`: offsets of leaf lists.
    Root(Vec<u32>),
}

impl HiveEditor {
    /// Validate `bytes` with the reader and prepare it for editing. Refuses a
    /// hive with a pending transaction log (unequal sequence numbers).
    pub fn open(mut bytes: Vec<u8>) -> Result<Self> {
        let (free, minor, end) = {
            let h = Hive::parse(&bytes)?;
            if h.pending_log() {
                let b = h.base_block();
                return Err(Error::unsupported(format!(
                    "registry hive has a pending transaction log (primary sequence {} != \
                     secondary sequence {}): its HIVE.LOG1/LOG2 must be replayed first \
                     (boot the guest once and shut it down cleanly)",
                    b.primary_sequence, b.secondary_sequence
                )));
            }
            let mut free = Vec::new();
            for &(start, bend) in &h.bins {
                let mut pos = start.saturating_add(HBIN_HEADER_SIZE);
                while pos < bend {
                    let raw = u32_at(&bytes, pos).unwrap_or_default();
                    let size = i32::from_le_bytes(raw.to_le_bytes());
                    let len = to_usize(size.unsigned_abs());
                    let cend = pos.saturating_add(len);
                    if len < 8 || !len.is_multiple_of(8) || cend > bend {
                        return Err(Error::corrupt(
                            "registry cell",
                            "size",
                            u64::try_from(pos).unwrap_or(u64::MAX),
                            format!("a multiple of 8, at least 8, ending by byte {bend}"),
                            size,
                        ));
                    }
                    if size > 0 {
                        free.push((to_u32(pos.saturating_sub(BASE_BLOCK_SIZE))?, to_u32(len)?));
                    }
                    pos = cend;
                }
            }
            let end = BASE_BLOCK_SIZE.saturating_add(to_usize(h.base_block().hive_bins_size));
            (free, h.base_block().minor_version, end)
        };
        // Drop any slack after the last bin: new bins are appended there.
        bytes.truncate(end);
        let ed = HiveEditor {
            data: bytes,
            free,
            filetime: deterministic_filetime(),
            minor,
        };
        // Every key and value must be readable before we edit anything.
        ed.validate_tree()?;
        Ok(ed)
    }

    /// Walk the whole tree with the reader (bounded depth and key count).
    fn validate_tree(&self) -> Result<()> {
        let h = self.reader()?;
        let mut stack = vec![(h.root()?, 0usize)];
        let mut seen = 0usize;
        while let Some((k, depth)) = stack.pop() {
            seen = seen.saturating_add(1);
            if depth > limits::MAX_RECURSION_DEPTH || seen > self.data.len() / 8 {
                return Err(Error::corrupt(
                    "registry hive",
                    "key tree",
                    u64::from(k.offset()),
                    format!("at most {} levels, no cycles", limits::MAX_RECURSION_DEPTH),
                    depth,
                ));
            }
            k.name()?;
            k.value_names()?;
            for c in k.subkeys()? {
                stack.push((c, depth.saturating_add(1)));
            }
        }
        Ok(())
    }

    /// A reader over the current bytes.
    pub fn reader(&self) -> Result<Hive<'_>> {
        Hive::parse(&self.data)
    }

    /// The value `name` of key `path`, if both exist.
    pub fn get(&self, path: &str, name: &str) -> Result<Option<Value>> {
        self.reader()?.get(path, name)
    }

    /// The FILETIME stamped on edited keys and the base block.
    pub fn set_filetime(&mut self, ft: u64) {
        self.filetime = ft;
    }

    // ------------------------------------------------------------ cells

    fn cell(&self, off: u32, what: &str) -> Result<Vec<u8>> {
        Ok(self.reader()?.cell(off, what)?.to_vec())
    }

    /// Write `bytes` at `rel` inside the (allocated) cell `off`.
    fn put(&mut self, off: u32, rel: usize, bytes: &[u8]) -> Result<()> {
        let len = self.reader()?.cell(off, "edited")?.len();
        let end = rel.saturating_add(bytes.len());
        if end > len {
            return Err(Error::invalid(format!(
                "registry editor: write of {end} bytes into a {len}-byte cell at {off:#x}"
            )));
        }
        let abs = BASE_BLOCK_SIZE
            .saturating_add(to_usize(off))
            .saturating_add(4)
            .saturating_add(rel);
        let dst = self
            .data
            .get_mut(abs..abs.saturating_add(bytes.len()))
            .ok_or_else(|| Error::invalid("registry editor: write past the hive"))?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    fn put_u32(&mut self, off: u32, rel: usize, v: u32) -> Result<()> {
        self.put(off, rel, &v.to_le_bytes())
    }

    fn set_raw(&mut self, abs: usize, bytes: &[u8]) -> Result<()> {
        let dst = self
            .data
            .get_mut(abs..abs.saturating_add(bytes.len()))
            .ok_or_else(|| Error::invalid("registry editor: write past the hive"))?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    /// Allocate a zeroed cell for `payload` data bytes; returns its offset.
    fn alloc(&mut self, payload: usize) -> Result<u32> {
        let need = round_up(payload.saturating_add(4), 8);
        let need32 = to_u32(need)?;
        let pos = self.free.iter().position(|&(_, s)| s >= need32);
        let off = match pos {
            Some(i) => {
                let (off, size) = self.free.get(i).copied().unwrap_or_default();
                if size == need32 {
                    self.free.swap_remove(i);
                } else {
                    let rest_off = off.saturating_add(need32);
                    let rest = size.saturating_sub(need32);
                    if let Some(e) = self.free.get_mut(i) {
                        *e = (rest_off, rest);
                    }
                    self.set_raw(
                        BASE_BLOCK_SIZE.saturating_add(to_usize(rest_off)),
                        &rest.to_le_bytes(),
                    )?;
                }
                off
            }
            None => self.append_bin(need)?,
        };
        let abs = BASE_BLOCK_SIZE.saturating_add(to_usize(off));
        let neg = i32::try_from(need32)
            .map_err(|_| Error::invalid("registry cell too large"))?
            .wrapping_neg();
        self.set_raw(abs, &neg.to_le_bytes())?;
        self.set_raw(abs.saturating_add(4), &vec![0u8; need.saturating_sub(4)])?;
        Ok(off)
    }

    /// Append a hive bin holding a cell of `need` bytes; returns the cell offset.
    fn append_bin(&mut self, need: usize) -> Result<u32> {
        let start = self.data.len();
        let rel = start.saturating_sub(BASE_BLOCK_SIZE);
        let bsize = round_up(need.saturating_add(HBIN_HEADER_SIZE), 4096);
        let new_len = start.saturating_add(bsize);
        if u64::try_from(new_len).unwrap_or(u64::MAX) > limits::MAX_HIVE_BYTES {
            return Err(Error::invalid(format!(
                "registry hive would exceed {} bytes",
                limits::MAX_HIVE_BYTES
            )));
        }
        self.data.resize(new_len, 0);
        let rel32 = to_u32(rel)?;
        self.set_raw(start, b"hbin")?;
        self.set_raw(start.saturating_add(4), &rel32.to_le_bytes())?;
        self.set_raw(start.saturating_add(8), &to_u32(bsize)?.to_le_bytes())?;
        self.set_raw(start.saturating_add(20), &self.filetime.to_le_bytes())?;
        let cell = rel32.saturating_add(to_u32(HBIN_HEADER_SIZE)?);
        let rest = bsize.saturating_sub(HBIN_HEADER_SIZE).saturating_sub(need);
        if rest > 0 {
            let rest_off = cell.saturating_add(to_u32(need)?);
            self.set_raw(
                BASE_BLOCK_SIZE.saturating_add(to_usize(rest_off)),
                &to_u32(rest)?.to_le_bytes(),
            )?;
            self.free.push((rest_off, to_u32(rest)?));
        }
        // The cell itself is marked allocated by the caller; mark it so the
        // bin walks cleanly meanwhile.
        self.set_raw(
            BASE_BLOCK_SIZE.saturating_add(to_usize(cell)),
            &to_u32(need)?.to_le_bytes(),
        )?;
        let total = to_u32(new_len.saturating_sub(BASE_BLOCK_SIZE))?;
        self.set_raw(40, &total.to_le_bytes())?;
        self.fix_checksum()?;
        Ok(cell)
    }

    fn fix_checksum(&mut self) -> Result<()> {
        let c = checksum(&self.data);
        self.set_raw(508, &c.to_le_bytes())
    }

    /// Free an allocated cell (size made positive; not merged).
    fn free_cell(&mut self, off: u32) -> Result<()> {
        let len = self.reader()?.cell(off, "freed")?.len();
        let size = to_u32(len.saturating_add(4))?;
        self.set_raw(
            BASE_BLOCK_SIZE.saturating_add(to_usize(off)),
            &size.to_le_bytes(),
        )?;
        self.free.push((off, size));
        Ok(())
    }

    fn data_cell(&mut self, d: &[u8]) -> Result<u32> {
        let c = self.alloc(d.len())?;
        self.put(c, 0, d)?;
        Ok(c)
    }

    // ------------------------------------------------------------ keys

    /// Offset of the key at `path`, if present.
    fn find_key(&self, path: &str) -> Result<Option<u32>> {
        Ok(self.reader()?.open_key(path)?.map(|k| k.offset()))
    }

    fn nk_u32(&self, key: u32, field: usize) -> Result<u32> {
        let h = self.reader()?;
        let c = Key {
            hive: &h,
            offset: key,
        }
        .nk()?;
        Ok(u32_at(c, field).unwrap_or(NO_CELL))
    }

    fn touch(&mut self, key: u32) -> Result<()> {
        let ft = self.filetime;
        self.put(key, nk::TIMESTAMP, &ft.to_le_bytes())
    }

    /// Raise the low 16 bits of a "largest length" field to at least `len`.
    fn raise_max(&mut self, key: u32, field: usize, len: usize, low16: bool) -> Result<()> {
        let cur = self.nk_u32(key, field)?;
        let len = to_u32(len)?;
        let new = if low16 {
            let lo = cur & 0xFFFF;
            if len <= lo {
                return Ok(());
            }
            (cur & 0xFFFF_0000) | len.min(0xFFFF)
        } else {
            if len <= cur {
                return Ok(());
            }
            len
        };
        self.put_u32(key, field, new)
    }

    fn read_list(&self, off: u32) -> Result<SubkeyList> {
        let c = self.cell(off, "subkey list")?;
        let sig = [
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ];
        let count = to_usize(u32::from(u16_at(&c, 2).unwrap_or_default()));
        let stride = match &sig {
            b"lf" | b"lh" => 8usize,
            b"li" | b"ri" => 4,
            _ => {
                return Err(Error::corrupt(
                    "registry subkey list",
                    "signature",
                    Hive::file_off(off),
                    "lf, lh, li or ri",
                    String::from_utf8_lossy(&sig),
                ))
            }
        };
        let mut v = Vec::with_capacity(count);
        for i in 0..count {
            let o = u32_at(&c, i.saturating_mul(stride).saturating_add(4)).ok_or_else(|| {
                Error::corrupt(
                    "registry subkey list",
                    "number of elements",
                    Hive::file_off(off),
                    "entries inside the cell",
                    count,
                )
            })?;
            v.push(o);
        }
        Ok(if &sig == b"ri" {
            SubkeyList::Root(v)
        } else {
            SubkeyList::Leaf(sig, v)
        })
    }

    fn key_name(&self, key: u32) -> Result<String> {
        let h = self.reader()?;
        Key {
            hive: &h,
            offset: key,
        }
        .name()
    }

    /// Write a new leaf list cell of kind `sig` for `entries` (sorted).
    fn write_leaf(&mut self, sig: [u8; 2], entries: &[(u32, String)]) -> Result<u32> {
        let stride = if &sig == b"li" { 4usize } else { 8 };
        let mut buf = Vec::with_capacity(entries.len().saturating_mul(stride).saturating_add(4));
        buf.extend(sig);
        buf.extend(to_u16(entries.len(), "subkey list")?.to_le_bytes());
        for (o, name) in entries {
            buf.extend(o.to_le_bytes());
            match &sig {
                b"lh" => buf.extend(name_hash(name).to_le_bytes()),
                b"lf" => buf.extend(lf_hint(name).to_le_bytes()),
                _ => {}
            }
        }
        self.data_cell(&buf)
    }

    fn leaf_entries(&self, offs: &[u32]) -> Result<Vec<(u32, String)>> {
        offs.iter().map(|&o| Ok((o, self.key_name(o)?))).collect()
    }

    /// Insert key node `child` called `name` into the subkey list of `parent`.
    fn insert_subkey(&mut self, parent: u32, child: u32, name: &str) -> Result<()> {
        let count = self.nk_u32(parent, nk::SUBKEYS)?;
        let list = self.nk_u32(parent, nk::SUBKEY_LIST)?;
        let want = fold(name);
        let new_list = if count == 0 || list == NO_CELL {
            let sig = if self.minor >= 5 { *b"lh" } else { *b"lf" };
            if count == 0 && list != NO_CELL {
                // An empty list cell left behind: reuse nothing, free it.
                self.free_cell(list)?;
            }
            self.write_leaf(sig, &[(child, name.to_string())])?
        } else {
            match self.read_list(list)? {
                SubkeyList::Leaf(sig, offs) => {
                    let new = self.leaf_with(sig, &offs, child, name, &want)?;
                    self.free_cell(list)?;
                    new
                }
                SubkeyList::Root(leaves) => {
                    // The leaf whose last name is >= the new name, else the last.
                    let mut pick = None;
                    for (i, &l) in leaves.iter().enumerate() {
                        if let SubkeyList::Leaf(_, offs) = self.read_list(l)? {
                            if let Some(&last) = offs.last() {
                                if fold(&self.key_name(last)?) >= want {
                                    pick = Some(i);
                                    break;
                                }
                            }
                        }
                    }
                    let i = pick.unwrap_or(leaves.len().saturating_sub(1));
                    let leaf = leaves.get(i).copied().ok_or_else(|| {
                        Error::corrupt(
                            "registry subkey list",
                            "number of elements",
                            Hive::file_off(list),
                            "at least 1 leaf under an index root",
                            0,
                        )
                    })?;
                    let SubkeyList::Leaf(sig, offs) = self.read_list(leaf)? else {
                        return Err(Error::corrupt(
                            "registry subkey list",
                            "signature",
                            Hive::file_off(leaf),
                            "a leaf (lf, lh, li) under an index root",
                            "ri",
                        ));
                    };
                    let new = self.leaf_with(sig, &offs, child, name, &want)?;
                    self.free_cell(leaf)?;
                    self.put_u32(list, 4usize.saturating_add(i.saturating_mul(4)), new)?;
                    list
                }
            }
        };
        self.put_u32(parent, nk::SUBKEY_LIST, new_list)?;
        self.put_u32(parent, nk::SUBKEYS, count.saturating_add(1))?;
        self.raise_max(parent, 52, utf16_len(name), true)?;
        self.touch(parent)
    }

    fn leaf_with(
        &mut self,
        sig: [u8; 2],
        offs: &[u32],
        child: u32,
        name: &str,
        want: &str,
    ) -> Result<u32> {
        let mut entries = self.leaf_entries(offs)?;
        let at = entries.partition_point(|(_, n)| fold(n).as_str() < want);
        entries.insert(at, (child, name.to_string()));
        self.write_leaf(sig, &entries)
    }

    /// Create a subkey `name` of `parent`; returns its offset.
    fn add_key(&mut self, parent: u32, name: &str) -> Result<u32> {
        if name.is_empty() || name.contains('\\') {
            return Err(Error::invalid(format!(
                "invalid registry key name {name:?}"
            )));
        }
        let (nb, comp) = name_bytes(name);
        let nl = to_u16(nb.len(), "key name")?;
        let sk = self.nk_u32(parent, nk::SECURITY)?;
        let c = self.alloc(nk::NAME.saturating_add(nb.len()))?;
        let mut buf = vec![0u8; nk::NAME];
        let mut w = |at: usize, b: &[u8]| {
            if let Some(d) = buf.get_mut(at..at.saturating_add(b.len())) {
                d.copy_from_slice(b);
            }
        };
        w(0, b"nk");
        w(
            nk::FLAGS,
            &(if comp { KEY_COMP_NAME } else { 0 }).to_le_bytes(),
        );
        w(nk::TIMESTAMP, &self.filetime.to_le_bytes());
        w(nk::PARENT, &parent.to_le_bytes());
        w(nk::SUBKEY_LIST, &NO_CELL.to_le_bytes());
        w(32, &NO_CELL.to_le_bytes());
        w(nk::VALUE_LIST, &NO_CELL.to_le_bytes());
        w(nk::SECURITY, &sk.to_le_bytes());
        w(nk::CLASS, &NO_CELL.to_le_bytes());
        w(nk::NAME_LEN, &nl.to_le_bytes());
        buf.extend(&nb);
        self.put(c, 0, &buf)?;
        if sk != NO_CELL {
            let skc = self.cell(sk, "security")?;
            if skc.get(..2) != Some(b"sk") {
                return Err(Error::corrupt(
                    "registry security cell",
                    "signature",
                    Hive::file_off(sk),
                    "\"sk\"",
                    String::from_utf8_lossy(skc.get(..2).unwrap_or_default()),
                ));
            }
            let refs = u32_at(&skc, 12).unwrap_or_default();
            self.put_u32(sk, 12, refs.saturating_add(1))?;
        }
        self.insert_subkey(parent, c, name)?;
        Ok(c)
    }

    /// Open the key at `path`, creating it and any missing parents; returns its offset.
    fn ensure_key(&mut self, path: &str) -> Result<u32> {
        let mut k = self.reader()?.base_block().root_cell;
        for part in components(path) {
            let existing = {
                let h = self.reader()?;
                Key {
                    hive: &h,
                    offset: k,
                }
                .subkey(part)?
                .map(|c| c.offset())
            };
            k = match existing {
                Some(o) => o,
                None => self.add_key(k, part)?,
            };
        }
        Ok(k)
    }

    /// Create the key at `path` (and missing parents). Existing keys are kept.
    pub fn create_key(&mut self, path: &str) -> Result<()> {
        self.ensure_key(path).map(|_| ())
    }

    // ------------------------------------------------------------ values

    /// Write a vk cell (and its data cells); returns the vk offset.
    fn write_vk(&mut self, name: &str, ty: u32, data: &[u8]) -> Result<u32> {
        let (nb, comp) = name_bytes(name);
        let nl = to_u16(nb.len(), "value name")?;
        let len = data.len();
        if u64::try_from(len).unwrap_or(u64::MAX) > limits::MAX_HIVE_BYTES {
            return Err(Error::invalid(format!("registry value of {len} bytes")));
        }
        let (size_field, data_off) = if len <= 4 {
            let mut inline = [0u8; 4];
            if let Some(d) = inline.get_mut(..len) {
                d.copy_from_slice(data);
            }
            (to_u32(len)? | 0x8000_0000, u32::from_le_bytes(inline))
        } else if len > MAX_DIRECT_DATA && self.minor >= 4 {
            let mut segs = Vec::new();
            for chunk in data.chunks(MAX_DIRECT_DATA) {
                // Segment cells keep 4 spare bytes, as Windows' do (a full
                // 16344-byte segment is a 16352-byte cell): hivex reads
                // cell size - 8 bytes of each segment.
                let c = self.alloc(chunk.len().saturating_add(4))?;
                self.put(c, 0, chunk)?;
                segs.push(c);
            }
            let list: Vec<u8> = segs.iter().flat_map(|s| s.to_le_bytes()).collect();
            let lc = self.data_cell(&list)?;
            let mut db = Vec::with_capacity(8);
            db.extend(b"db");
            db.extend(to_u16(segs.len(), "big data")?.to_le_bytes());
            db.extend(lc.to_le_bytes());
            (to_u32(len)?, self.data_cell(&db)?)
        } else {
            (to_u32(len)?, self.data_cell(data)?)
        };
        let mut vk = Vec::with_capacity(20usize.saturating_add(nb.len()));
        vk.extend(b"vk");
        vk.extend(nl.to_le_bytes());
        vk.extend(size_field.to_le_bytes());
        vk.extend(data_off.to_le_bytes());
        vk.extend(ty.to_le_bytes());
        vk.extend((if comp { VALUE_COMP_NAME } else { 0 }).to_le_bytes());
        vk.extend([0u8, 0]);
        vk.extend(&nb);
        self.data_cell(&vk)
    }

    /// Free a vk cell and its data cells.
    fn free_vk(&mut self, vk: u32) -> Result<()> {
        let c = self.cell(vk, "key value")?;
        let size = u32_at(&c, 4).unwrap_or_default();
        let doff = u32_at(&c, 8).unwrap_or(NO_CELL);
        if size & 0x8000_0000 == 0 && size > 0 && doff != NO_CELL {
            let dc = self.cell(doff, "value data")?;
            if to_usize(size) > MAX_DIRECT_DATA && self.minor >= 4 && dc.get(..2) == Some(b"db") {
                let n = to_usize(u32::from(u16_at(&dc, 2).unwrap_or_default()));
                let list = u32_at(&dc, 4).unwrap_or(NO_CELL);
                let lc = self.cell(list, "big data segment list")?;
                for i in 0..n {
                    if let Some(s) = u32_at(&lc, i.saturating_mul(4)) {
                        self.free_cell(s)?;
                    }
                }
                self.free_cell(list)?;
            }
            self.free_cell(doff)?;
        }
        self.free_cell(vk)
    }

    /// Value offsets of `key` and the index of the one named `name`.
    fn find_value(&self, key: u32, name: &str) -> Result<(Vec<u32>, Option<usize>)> {
        let h = self.reader()?;
        let k = Key {
            hive: &h,
            offset: key,
        };
        let offs = k.value_offsets()?;
        let want = fold(name);
        for (i, &o) in offs.iter().enumerate() {
            if fold(&k.vk_name(o)?.0) == want {
                return Ok((offs, Some(i)));
            }
        }
        Ok((offs, None))
    }

    fn write_value_list(&mut self, key: u32, offs: &[u32]) -> Result<()> {
        let old = self.nk_u32(key, nk::VALUE_LIST)?;
        let old_n = self.nk_u32(key, nk::VALUES)?;
        let new = if offs.is_empty() {
            NO_CELL
        } else {
            let l: Vec<u8> = offs.iter().flat_map(|o| o.to_le_bytes()).collect();
            self.data_cell(&l)?
        };
        if old != NO_CELL && old_n > 0 {
            self.free_cell(old)?;
        }
        self.put_u32(key, nk::VALUE_LIST, new)?;
        self.put_u32(key, nk::VALUES, to_u32(offs.len())?)
    }

    /// Set (add or replace) value `name` ("" = default) of the key at
    /// `key_path`, creating missing keys.
    pub fn set_value(&mut self, key_path: &str, name: &str, data: &ValueData) -> Result<()> {
        let (ty, bytes) = encode(data);
        self.set_value_raw(key_path, name, ty, &bytes)
    }

    /// [`set_value`](Self::set_value) with a raw type code and bytes.
    pub fn set_value_raw(
        &mut self,
        key_path: &str,
        name: &str,
        ty: u32,
        data: &[u8],
    ) -> Result<()> {
        let key = self.ensure_key(key_path)?;
        let (mut offs, idx) = self.find_value(key, name)?;
        let vk = self.write_vk(name, ty, data)?;
        match idx.and_then(|i| offs.get_mut(i)) {
            Some(slot) => {
                let old = std::mem::replace(slot, vk);
                self.free_vk(old)?;
                // Same count: rewrite the list in place.
                let list = self.nk_u32(key, nk::VALUE_LIST)?;
                let at = idx.unwrap_or_default().saturating_mul(4);
                self.put_u32(list, at, vk)?;
            }
            None => {
                offs.push(vk);
                self.write_value_list(key, &offs)?;
            }
        }
        self.raise_max(key, 60, utf16_len(name), false)?;
        self.raise_max(key, 64, data.len(), false)?;
        self.touch(key)
    }

    /// Delete value `name` of the key at `key_path`; `Ok(false)` if absent.
    pub fn delete_value(&mut self, key_path: &str, name: &str) -> Result<bool> {
        let Some(key) = self.find_key(key_path)? else {
            return Ok(false);
        };
        let (mut offs, idx) = self.find_value(key, name)?;
        let Some(i) = idx else {
            return Ok(false);
        };
        let old = offs.remove(i);
        self.free_vk(old)?;
        self.write_value_list(key, &offs)?;
        self.touch(key)?;
        Ok(true)
    }

    /// Delete the leaf key at `path` (no subkeys) with its values;
    /// `Ok(false)` if absent. Refuses the root and keys with subkeys.
    pub fn delete_key(&mut self, path: &str) -> Result<bool> {
        let Some(key) = self.find_key(path)? else {
            return Ok(false);
        };
        if components(path).is_empty() {
            return Err(Error::invalid(
                "cannot delete the root key of a registry hive",
            ));
        }
        if self.nk_u32(key, nk::SUBKEYS)? != 0 {
            return Err(Error::invalid(format!(
                "registry key {path:?} has subkeys: delete them first"
            )));
        }
        let parent = self.nk_u32(key, nk::PARENT)?;
        // Values.
        let (offs, _) = self.find_value(key, "")?;
        for o in offs {
            self.free_vk(o)?;
        }
        let vl = self.nk_u32(key, nk::VALUE_LIST)?;
        if vl != NO_CELL && self.nk_u32(key, nk::VALUES)? > 0 {
            self.free_cell(vl)?;
        }
        let sl = self.nk_u32(key, nk::SUBKEY_LIST)?;
        if sl != NO_CELL && self.reader()?.cell(sl, "subkey list").is_ok() {
            self.free_cell(sl)?;
        }
        let class = self.nk_u32(key, nk::CLASS)?;
        let class_len = self.nk_u32(key, 72)? >> 16;
        if class != NO_CELL && class_len > 0 {
            self.free_cell(class)?;
        }
        self.release_sk(self.nk_u32(key, nk::SECURITY)?)?;
        self.remove_subkey(parent, key)?;
        self.free_cell(key)?;
        Ok(true)
    }

    /// Decrement a security cell's reference count; unlink and free it at 0.
    fn release_sk(&mut self, sk: u32) -> Result<()> {
        if sk == NO_CELL {
            return Ok(());
        }
        let c = self.cell(sk, "security")?;
        if c.get(..2) != Some(b"sk") {
            return Err(Error::corrupt(
                "registry security cell",
                "signature",
                Hive::file_off(sk),
                "\"sk\"",
                String::from_utf8_lossy(c.get(..2).unwrap_or_default()),
            ));
        }
        let refs = u32_at(&c, 12).unwrap_or_default().saturating_sub(1);
        self.put_u32(sk, 12, refs)?;
        let flink = u32_at(&c, 4).unwrap_or(sk);
        let blink = u32_at(&c, 8).unwrap_or(sk);
        if refs == 0 && flink != sk {
            self.put_u32(blink, 4, flink)?;
            self.put_u32(flink, 8, blink)?;
            self.free_cell(sk)?;
        }
        Ok(())
    }

    /// Remove `child` from `parent`'s subkey list.
    fn remove_subkey(&mut self, parent: u32, child: u32) -> Result<()> {
        let count = self.nk_u32(parent, nk::SUBKEYS)?;
        let list = self.nk_u32(parent, nk::SUBKEY_LIST)?;
        let missing = || {
            Error::corrupt(
                "registry subkey list",
                "entries",
                Hive::file_off(list),
                format!("an entry for key {child:#x}"),
                "none",
            )
        };
        let new_list = match self.read_list(list)? {
            SubkeyList::Leaf(sig, offs) => {
                let mut e = self.leaf_entries(&offs)?;
                let i = e
                    .iter()
                    .position(|(o, _)| *o == child)
                    .ok_or_else(missing)?;
                e.remove(i);
                self.free_cell(list)?;
                if e.is_empty() {
                    NO_CELL
                } else {
                    self.write_leaf(sig, &e)?
                }
            }
            SubkeyList::Root(mut leaves) => {
                let mut found = None;
                for (li, &l) in leaves.iter().enumerate() {
                    if let SubkeyList::Leaf(sig, offs) = self.read_list(l)? {
                        if offs.contains(&child) {
                            found = Some((li, sig, offs));
                            break;
                        }
                    }
                }
                let (li, sig, offs) = found.ok_or_else(missing)?;
                let leaf = leaves.get(li).copied().unwrap_or(NO_CELL);
                let mut e = self.leaf_entries(&offs)?;
                e.retain(|(o, _)| *o != child);
                self.free_cell(leaf)?;
                if e.is_empty() {
                    leaves.remove(li);
                } else {
                    let nl = self.write_leaf(sig, &e)?;
                    if let Some(s) = leaves.get_mut(li) {
                        *s = nl;
                    }
                }
                self.free_cell(list)?;
                if leaves.is_empty() {
                    NO_CELL
                } else {
                    let mut buf = Vec::new();
                    buf.extend(b"ri");
                    buf.extend(to_u16(leaves.len(), "index root")?.to_le_bytes());
                    for l in &leaves {
                        buf.extend(l.to_le_bytes());
                    }
                    self.data_cell(&buf)?
                }
            }
        };
        self.put_u32(parent, nk::SUBKEY_LIST, new_list)?;
        self.put_u32(parent, nk::SUBKEYS, count.saturating_sub(1))?;
        self.touch(parent)
    }

    /// The finished hive: sequence numbers equal and incremented, timestamp,
    /// checksum.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let seq = u32_at(&self.data, 4).unwrap_or_default().wrapping_add(1);
        self.set_raw(4, &seq.to_le_bytes())?;
        self.set_raw(8, &seq.to_le_bytes())?;
        let ft = self.filetime;
        self.set_raw(12, &ft.to_le_bytes())?;
        self.fix_checksum()?;
        // The result must read back.
        Hive::parse(&self.data)?;
        Ok(self.data)
    }
}
