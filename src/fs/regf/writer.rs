//! A small hive writer: builds a valid regf file from a tree of keys and
//! values, for test fixtures (issue 11 grows it into an editor).
//!
//! Layout follows the "Windows registry file format specification" (see the
//! parent module): one shared `sk` security cell whose reference count is the
//! number of keys using it, `nk` keys whose subkeys sit in `lh` lists sorted by
//! upper-cased name with the hash of [`name_hash`] (split under an `ri` index
//! root past [`MAX_LH_ENTRIES`]), `vk` values with data resident in the offset
//! field up to 4 bytes, in a data cell up to 16344 bytes, and in `db` big data
//! segments beyond; hive bins are 4096 bytes (or the next multiple of 4096 for
//! a large cell), the remainder of each bin is one free cell; the base block
//! has equal sequence numbers and a correct checksum. Version 1.5.
//!
//! The input is trusted (built by code), so this writer may use plain
//! arithmetic and indexing into buffers it sized itself; it still refuses
//! trees deeper than the reader accepts. (The issue-11 editor, which edits
//! hives read from images, must not inherit this allowance.)
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::{
    checksum, fold, name_hash, types, Value, BASE_BLOCK_SIZE, HBIN_HEADER_SIZE, KEY_COMP_NAME,
    KEY_HIVE_ENTRY, KEY_NO_DELETE, MAX_DIRECT_DATA, NO_CELL, VALUE_COMP_NAME,
};
use crate::error::{Error, Result};
use crate::limits;

/// Most entries written into one `lh` list before splitting under an `ri`.
pub const MAX_LH_ENTRIES: usize = 512;

/// FILETIME written into the base block and keys: 2024-01-01T00:00:00Z, fixed
/// so fixtures are reproducible.
pub const FIXED_FILETIME: u64 = 133_485_408_000_000_000;

/// A key to write: its name, values and subkeys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// Name (the root's name is conventionally like "ROOT" or "CMI-CreateHive{...}").
    pub name: String,
    /// Values, written in this order.
    pub values: Vec<Value>,
    /// Subkeys (sorted by the writer).
    pub subkeys: Vec<KeySpec>,
}

impl Value {
    /// A value of any type from raw bytes.
    pub fn raw(name: &str, ty: u32, data: Vec<u8>) -> Value {
        Value {
            name: name.to_string(),
            ty,
            data,
        }
    }
    /// REG_SZ (NUL terminated UTF-16LE).
    pub fn sz(name: &str, s: &str) -> Value {
        Value::raw(name, types::REG_SZ, utf16z(s))
    }
    /// REG_EXPAND_SZ.
    pub fn expand_sz(name: &str, s: &str) -> Value {
        Value::raw(name, types::REG_EXPAND_SZ, utf16z(s))
    }
    /// REG_MULTI_SZ.
    pub fn multi_sz(name: &str, items: &[&str]) -> Value {
        let mut d = Vec::new();
        for i in items {
            d.extend(utf16z(i));
        }
        d.extend([0, 0]);
        Value::raw(name, types::REG_MULTI_SZ, d)
    }
    /// REG_DWORD.
    pub fn dword(name: &str, v: u32) -> Value {
        Value::raw(name, types::REG_DWORD, v.to_le_bytes().to_vec())
    }
    /// REG_DWORD_BIG_ENDIAN.
    pub fn dword_be(name: &str, v: u32) -> Value {
        Value::raw(name, types::REG_DWORD_BIG_ENDIAN, v.to_be_bytes().to_vec())
    }
    /// REG_QWORD.
    pub fn qword(name: &str, v: u64) -> Value {
        Value::raw(name, types::REG_QWORD, v.to_le_bytes().to_vec())
    }
    /// REG_BINARY.
    pub fn binary(name: &str, d: &[u8]) -> Value {
        Value::raw(name, types::REG_BINARY, d.to_vec())
    }
}

/// UTF-16LE with a terminating NUL.
pub fn utf16z(s: &str) -> Vec<u8> {
    let mut d: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    d.extend([0, 0]);
    d
}

impl KeySpec {
    /// A key with no values or subkeys.
    pub fn new(name: &str) -> Self {
        KeySpec {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// The key at `path` (`\`-separated, case-insensitive) below this one,
    /// created with its parents when missing.
    pub fn key(&mut self, path: &str) -> &mut KeySpec {
        let mut k = self;
        for part in path.split(['\\', '/']).filter(|p| !p.is_empty()) {
            let want = fold(part);
            let i = match k.subkeys.iter().position(|c| fold(&c.name) == want) {
                Some(i) => i,
                None => {
                    k.subkeys.push(KeySpec::new(part));
                    k.subkeys.len() - 1
                }
            };
            k = &mut k.subkeys[i];
        }
        k
    }

    /// Set (add or replace) a value of the key at `path`, creating the key.
    pub fn set(&mut self, path: &str, v: Value) -> &mut Self {
        let k = self.key(path);
        let want = fold(&v.name);
        match k.values.iter().position(|x| fold(&x.name) == want) {
            Some(i) => k.values[i] = v,
            None => k.values.push(v),
        }
        self
    }
}

/// A minimal self-relative security descriptor: owner BUILTIN\Administrators,
/// group SYSTEM, a DACL granting KEY_ALL_ACCESS to Administrators.
pub fn default_security_descriptor() -> Vec<u8> {
    let admins: [u8; 16] = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
    let system: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    let mut sd = Vec::new();
    sd.extend([1u8, 0]); // revision, sbz1
    sd.extend(0x8004u16.to_le_bytes()); // SE_SELF_RELATIVE | SE_DACL_PRESENT
    sd.extend(52u32.to_le_bytes()); // owner
    sd.extend(68u32.to_le_bytes()); // group
    sd.extend(0u32.to_le_bytes()); // sacl
    sd.extend(20u32.to_le_bytes()); // dacl
                                    // ACL header: revision 2, size 32, one ACE.
    sd.extend([2u8, 0]);
    sd.extend(32u16.to_le_bytes());
    sd.extend(1u16.to_le_bytes());
    sd.extend(0u16.to_le_bytes());
    // ACCESS_ALLOWED_ACE, CONTAINER_INHERIT_ACE, size 24, KEY_ALL_ACCESS.
    sd.extend([0u8, 2]);
    sd.extend(24u16.to_le_bytes());
    sd.extend(0x000F_003Fu32.to_le_bytes());
    sd.extend(admins);
    sd.extend(admins);
    sd.extend(system);
    sd
}

struct Bins {
    buf: Vec<u8>,
    bin_end: usize,
}

impl Bins {
    fn close_bin(&mut self) {
        let rem = self.bin_end - self.buf.len();
        if rem > 0 {
            let start = self.buf.len();
            self.buf.resize(self.bin_end, 0);
            self.buf[start..start + 4]
                .copy_from_slice(&u32::try_from(rem).unwrap_or(0).to_le_bytes());
        }
    }

    /// Allocate a cell with `payload` bytes of data; returns its offset.
    fn alloc(&mut self, payload: usize) -> u32 {
        let cell = (payload + 4).div_ceil(8) * 8;
        if self.buf.len() + cell > self.bin_end || self.buf.is_empty() {
            self.close_bin();
            let start = self.buf.len();
            let size = (cell + HBIN_HEADER_SIZE).div_ceil(4096) * 4096;
            self.buf.resize(start + HBIN_HEADER_SIZE, 0);
            self.buf[start..start + 4].copy_from_slice(b"hbin");
            self.buf[start + 4..start + 8]
                .copy_from_slice(&u32::try_from(start).unwrap_or(0).to_le_bytes());
            self.buf[start + 8..start + 12]
                .copy_from_slice(&u32::try_from(size).unwrap_or(0).to_le_bytes());
            if start == 0 {
                self.buf[20..28].copy_from_slice(&FIXED_FILETIME.to_le_bytes());
            }
            self.bin_end = start + size;
        }
        let off = self.buf.len();
        self.buf.resize(off + cell, 0);
        let neg = -i32::try_from(cell).unwrap_or(i32::MAX);
        self.buf[off..off + 4].copy_from_slice(&neg.to_le_bytes());
        u32::try_from(off).unwrap_or(NO_CELL)
    }

    /// Write `bytes` at `rel` inside the data of the cell at `cell`.
    fn put(&mut self, cell: u32, rel: usize, bytes: &[u8]) {
        let at = usize::try_from(cell).unwrap_or(0) + 4 + rel;
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn put_u16(&mut self, cell: u32, rel: usize, v: u16) {
        self.put(cell, rel, &v.to_le_bytes());
    }
    fn put_u32(&mut self, cell: u32, rel: usize, v: u32) {
        self.put(cell, rel, &v.to_le_bytes());
    }

    fn data_cell(&mut self, d: &[u8]) -> u32 {
        let c = self.alloc(d.len());
        self.put(c, 0, d);
        c
    }
}

fn name_bytes(name: &str) -> (Vec<u8>, bool) {
    if name.is_ascii() {
        (name.as_bytes().to_vec(), true)
    } else {
        (
            name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            false,
        )
    }
}

fn u32_of(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

fn u16_of(x: usize) -> Result<u16> {
    u16::try_from(x).map_err(|_| Error::invalid(format!("registry name or count too long: {x}")))
}

struct Writer {
    bins: Bins,
    sk: u32,
    keys: u32,
}

impl Writer {
    fn write_value(&mut self, v: &Value) -> Result<u32> {
        let (nb, comp) = name_bytes(&v.name);
        let vk = self.bins.alloc(20 + nb.len());
        self.bins.put(vk, 0, b"vk");
        self.bins.put_u16(vk, 2, u16_of(nb.len())?);
        let len = v.data.len();
        if len <= 4 {
            self.bins.put_u32(vk, 4, u32_of(len) | 0x8000_0000);
            let mut inline = [0u8; 4];
            inline[..len].copy_from_slice(&v.data);
            self.bins.put(vk, 8, &inline);
        } else if len > MAX_DIRECT_DATA {
            let segs: Vec<u32> = v
                .data
                .chunks(MAX_DIRECT_DATA)
                .map(|c| self.bins.data_cell(c))
                .collect();
            let list: Vec<u8> = segs.iter().flat_map(|s| s.to_le_bytes()).collect();
            let lc = self.bins.data_cell(&list);
            let db = self.bins.alloc(8);
            self.bins.put(db, 0, b"db");
            self.bins.put_u16(db, 2, u16_of(segs.len())?);
            self.bins.put_u32(db, 4, lc);
            self.bins.put_u32(vk, 4, u32_of(len));
            self.bins.put_u32(vk, 8, db);
        } else {
            let dc = self.bins.data_cell(&v.data);
            self.bins.put_u32(vk, 4, u32_of(len));
            self.bins.put_u32(vk, 8, dc);
        }
        self.bins.put_u32(vk, 12, v.ty);
        self.bins
            .put_u16(vk, 16, if comp { VALUE_COMP_NAME } else { 0 });
        self.bins.put(vk, 20, &nb);
        Ok(vk)
    }

    fn lh(&mut self, children: &[(u32, &KeySpec)]) -> Result<u32> {
        let c = self.bins.alloc(4 + 8 * children.len());
        self.bins.put(c, 0, b"lh");
        self.bins.put_u16(c, 2, u16_of(children.len())?);
        for (i, (off, k)) in children.iter().enumerate() {
            self.bins.put_u32(c, 4 + 8 * i, *off);
            self.bins.put_u32(c, 8 + 8 * i, name_hash(&k.name));
        }
        Ok(c)
    }

    fn write_key(&mut self, k: &KeySpec, parent: u32, depth: usize) -> Result<u32> {
        if depth > limits::MAX_RECURSION_DEPTH {
            return Err(Error::invalid(format!(
                "registry key tree deeper than {} levels",
                limits::MAX_RECURSION_DEPTH
            )));
        }
        let (nb, comp) = name_bytes(&k.name);
        let nk = self.bins.alloc(76 + nb.len());
        self.keys += 1;
        let mut kids: Vec<&KeySpec> = k.subkeys.iter().collect();
        kids.sort_by_key(|c| fold(&c.name));
        for w in kids.windows(2) {
            if fold(&w[0].name) == fold(&w[1].name) {
                return Err(Error::invalid(format!(
                    "duplicate registry key name {:?}",
                    w[1].name
                )));
            }
        }
        let mut offs = Vec::with_capacity(kids.len());
        for c in &kids {
            offs.push((self.write_key(c, nk, depth + 1)?, *c));
        }
        let list = if offs.is_empty() {
            NO_CELL
        } else if offs.len() <= MAX_LH_ENTRIES {
            self.lh(&offs)?
        } else {
            let mut leaves = Vec::new();
            for chunk in offs.chunks(MAX_LH_ENTRIES) {
                leaves.push(self.lh(chunk)?);
            }
            let ri = self.bins.alloc(4 + 4 * leaves.len());
            self.bins.put(ri, 0, b"ri");
            self.bins.put_u16(ri, 2, u16_of(leaves.len())?);
            for (i, l) in leaves.iter().enumerate() {
                self.bins.put_u32(ri, 4 + 4 * i, *l);
            }
            ri
        };
        let mut vks = Vec::with_capacity(k.values.len());
        for v in &k.values {
            vks.push(self.write_value(v)?);
        }
        let vlist = if vks.is_empty() {
            NO_CELL
        } else {
            let l: Vec<u8> = vks.iter().flat_map(|o| o.to_le_bytes()).collect();
            self.bins.data_cell(&l)
        };
        let max_sub = kids
            .iter()
            .map(|c| c.name.encode_utf16().count() * 2)
            .max()
            .unwrap_or(0);
        let max_vname = k
            .values
            .iter()
            .map(|v| v.name.encode_utf16().count() * 2)
            .max()
            .unwrap_or(0);
        let max_vdata = k.values.iter().map(|v| v.data.len()).max().unwrap_or(0);
        let mut flags = if comp { KEY_COMP_NAME } else { 0 };
        if depth == 0 {
            flags |= KEY_HIVE_ENTRY | KEY_NO_DELETE;
        }
        self.bins.put(nk, 0, b"nk");
        self.bins.put_u16(nk, 2, flags);
        self.bins.put(nk, 4, &FIXED_FILETIME.to_le_bytes());
        self.bins.put_u32(nk, 16, parent);
        self.bins.put_u32(nk, 20, u32_of(kids.len()));
        self.bins.put_u32(nk, 28, list);
        self.bins.put_u32(nk, 32, NO_CELL);
        self.bins.put_u32(nk, 36, u32_of(vks.len()));
        self.bins.put_u32(nk, 40, vlist);
        self.bins.put_u32(nk, 44, self.sk);
        self.bins.put_u32(nk, 48, NO_CELL);
        self.bins.put_u32(nk, 52, u32_of(max_sub));
        self.bins.put_u32(nk, 60, u32_of(max_vname));
        self.bins.put_u32(nk, 64, u32_of(max_vdata));
        self.bins.put_u16(nk, 72, u16_of(nb.len())?);
        self.bins.put(nk, 76, &nb);
        Ok(nk)
    }
}

/// Serialise `root` (and everything below it) as a complete hive file.
/// `file_name` goes into the base block (informational, e.g. `SYSTEM`).
pub fn build(root: &KeySpec, file_name: &str) -> Result<Vec<u8>> {
    let mut w = Writer {
        bins: Bins {
            buf: Vec::new(),
            bin_end: 0,
        },
        sk: 0,
        keys: 0,
    };
    let sd = default_security_descriptor();
    let sk = w.bins.alloc(20 + sd.len());
    w.sk = sk;
    let root_off = w.write_key(root, NO_CELL, 0)?;
    w.bins.put(sk, 0, b"sk");
    w.bins.put_u32(sk, 4, sk);
    w.bins.put_u32(sk, 8, sk);
    w.bins.put_u32(sk, 12, w.keys);
    w.bins.put_u32(sk, 16, u32_of(sd.len()));
    w.bins.put(sk, 20, &sd);
    w.bins.close_bin();
    let data = w.bins.buf;
    let mut out = vec![0u8; BASE_BLOCK_SIZE];
    out[0..4].copy_from_slice(b"regf");
    out[4..8].copy_from_slice(&1u32.to_le_bytes());
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    out[12..20].copy_from_slice(&FIXED_FILETIME.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..28].copy_from_slice(&5u32.to_le_bytes());
    out[28..32].copy_from_slice(&0u32.to_le_bytes());
    out[32..36].copy_from_slice(&1u32.to_le_bytes());
    out[36..40].copy_from_slice(&root_off.to_le_bytes());
    let size =
        u32::try_from(data.len()).map_err(|_| Error::invalid("registry hive larger than 4 GiB"))?;
    out[40..44].copy_from_slice(&size.to_le_bytes());
    out[44..48].copy_from_slice(&1u32.to_le_bytes());
    let fname: Vec<u8> = file_name
        .encode_utf16()
        .take(31)
        .flat_map(u16::to_le_bytes)
        .collect();
    out[48..48 + fname.len()].copy_from_slice(&fname);
    let c = checksum(&out);
    out[508..512].copy_from_slice(&c.to_le_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}
