//! NTFS writer: applies [`FsAction`]s to an NTFS volume inside a copy-on-write
//! [`Overlay`](crate::overlay::Overlay) (the input image is never written).
//!
//! The reader in the parent module uses the `ntfs` crate; the writer parses
//! and edits the on-disk structures itself, from the layouts documented by the
//! Linux-NTFS project ("NTFS Documentation", Richard Russon and Yuval Fledel:
//! boot sector, FILE records and update sequence arrays, attribute headers,
//! mapping pairs, `$STANDARD_INFORMATION`, `$FILE_NAME`, `$INDEX_ROOT`,
//! `$INDEX_ALLOCATION` and INDX records, `$Bitmap`, `$Volume`, `$LogFile`
//! restart area) and [MS-FSCC] for the attribute flags.
//!
//! What it does:
//! - replaces a file's `$DATA` (resident when it fits in the record,
//!   otherwise non-resident: the clusters already owned are reused in place,
//!   extra clusters come from `$Bitmap`, surplus ones are freed), keeping the
//!   sizes of `$FILE_NAME` in the record and in the parent's `$I30` entries;
//! - creates files and directories (`mkdir -p`): an MFT record from the
//!   `$MFT` `$BITMAP` (record 24 upwards; the `$MFT` grows by 64 records when
//!   none is free), `$STANDARD_INFORMATION` (v3, security id inherited from
//!   the parent, else a copy of the parent's small resident
//!   `$SECURITY_DESCRIPTOR`, else the Administrators/Everyone descriptor
//!   ntfs-3g gives new files),
//!   `$FILE_NAME` in the Win32&DOS namespace when the name is already a valid
//!   upper-case 8.3 name, Win32 otherwise (no generated short name: Windows
//!   does the same with 8dot3 creation disabled), POSIX for names Win32
//!   forbids; an empty `$INDEX_ROOT` for directories;
//! - sets access and modification times (`SetTimes`);
//! - deletes files and empty directories (clusters, record and its bitmap bit
//!   freed, sequence number bumped, index entries removed);
//! - keeps `$MFTMirr` equal to the first records of `$MFT` and leaves
//!   `$LogFile` untouched (it must be clean on open).
//!
//! Directory indexes: a changed `$I30` index is rewritten whole as a balanced
//! B-tree, from the sorted entry list (collation `COLLATION_FILE_NAME`: names
//! compared after up-casing through `$UpCase`): in `$INDEX_ROOT` when it fits
//! the record, otherwise leaves and inner nodes packed into INDX records of
//! `$INDEX_ALLOCATION` (created, with the index `$BITMAP`, the first time the
//! root overflows; extended by whole index blocks). Every node split and merge
//! case is covered by this one construction.
//!
//! Refused, naming the reason: a dirty volume (`VOLUME_IS_DIRTY`), an active
//! `hiberfil.sys` ("hibr"/"wake" header), a `$LogFile` that is neither empty
//! nor clean, NTFS versions other than 3.x, an `$MFT` with an attribute list,
//! and edits of files with an attribute list, compressed, encrypted or sparse
//! data, reparse points, or several hard links.
//!
//! Arithmetic works on values bounded at open (cluster size at most 2 MiB,
//! record and index block sizes at most 64 KiB, cluster counts from the boot
//! sector checked against the volume size), so the module allows plain
//! arithmetic and `as` casts between those widths; slice access goes through
//! checked helpers.
#![allow(clippy::arithmetic_side_effects, clippy::as_conversions)]

use crate::bytes::{le16, le32, le64, sub, u8_at};
use crate::error::{Error, Result};
use crate::inject::FsAction;
use crate::limits;
use crate::overlay::VolumeDev;
use std::collections::BTreeSet;

// Attribute types (NTFS Documentation, "Attributes").
const AT_STANDARD_INFORMATION: u32 = 0x10;
const AT_ATTRIBUTE_LIST: u32 = 0x20;
const AT_FILE_NAME: u32 = 0x30;
const AT_SECURITY_DESCRIPTOR: u32 = 0x50;
const AT_VOLUME_INFORMATION: u32 = 0x70;
const AT_DATA: u32 = 0x80;
const AT_INDEX_ROOT: u32 = 0x90;
const AT_INDEX_ALLOCATION: u32 = 0xA0;
const AT_BITMAP: u32 = 0xB0;
const AT_END: u32 = 0xFFFF_FFFF;

// Attribute header flags ([MS-FSCC] / NTFS Documentation "Attribute header").
const ATTR_COMPRESSED: u16 = 0x00FF;
const ATTR_ENCRYPTED: u16 = 0x4000;
const ATTR_SPARSE: u16 = 0x8000;

// FILE record flags.
const MFT_IN_USE: u16 = 0x1;
const MFT_DIRECTORY: u16 = 0x2;

// File attribute flags ($STANDARD_INFORMATION, $FILE_NAME).
const FILE_ATTR_ARCHIVE: u32 = 0x20;
const FILE_ATTR_REPARSE_POINT: u32 = 0x400;
const FILE_ATTR_DUP_I30: u32 = 0x1000_0000;

// $VOLUME_INFORMATION flags.
const VOLUME_IS_DIRTY: u16 = 0x0001;

// $FILE_NAME namespaces.
const NS_POSIX: u8 = 0;
const NS_WIN32: u8 = 1;
const NS_DOS: u8 = 2;
const NS_WIN32_AND_DOS: u8 = 3;

// Index entry flags and header flags.
const INDEX_ENTRY_NODE: u16 = 0x1;
const INDEX_ENTRY_END: u16 = 0x2;
const LARGE_INDEX: u8 = 0x1;
const COLLATION_FILE_NAME: u32 = 0x1;

// $LogFile restart area (NTFS Documentation "$LogFile"; ntfs-3g logfile.h).
const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;
const LOGFILE_NO_CLIENT: u16 = 0xFFFF;

/// Update sequence stride: fixups protect the last two bytes of every
/// 512-byte block of a FILE or INDX record, whatever the sector size.
const USA_STRIDE: usize = 512;
/// System records reserved by NTFS: new files start at record 24.
const FIRST_USER_RECORD: u64 = 24;
/// Records added when the `$MFT` grows.
const MFT_GROW_RECORDS: u64 = 64;
/// Attributes walked in one record (a 4 KiB record holds at most ~170).
const MAX_ATTRS: usize = 512;
/// Depth of an `$I30` B-tree walk (a balanced tree of 4 Mi entries is < 10).
const MAX_INDEX_DEPTH: usize = 32;
/// Data runs of one attribute.
const MAX_RUNS: usize = 1 << 20;

/// Largest parent `$SECURITY_DESCRIPTOR` copied into a new record.
const MAX_COPIED_SD: usize = 256;

/// Seconds from 1601-01-01 to 1970-01-01.
const FILETIME_UNIX_OFFSET: u64 = 11_644_473_600;

fn w16(b: &mut [u8], off: usize, v: u16) {
    put(b, off, &v.to_le_bytes());
}
fn w32(b: &mut [u8], off: usize, v: u32) {
    put(b, off, &v.to_le_bytes());
}
fn w64(b: &mut [u8], off: usize, v: u64) {
    put(b, off, &v.to_le_bytes());
}
fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(d) = off.checked_add(v.len()).and_then(|e| b.get_mut(off..e)) {
        d.copy_from_slice(v);
    }
}
fn align8(v: usize) -> usize {
    (v + 7) & !7
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::corrupt_msg(format!("NTFS: {}", what.into()))
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn utf16_bytes(n: &[u16]) -> Vec<u8> {
    n.iter().flat_map(|c| c.to_le_bytes()).collect()
}

fn name_from_key(key: &[u8]) -> Vec<u16> {
    let n = usize::from(u8_at(key, 0x40));
    sub(key, 0x42, n * 2)
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .collect()
}

/// Undo the update sequence fixups of a FILE/INDX record in place.
fn unfix(buf: &mut [u8], what: &str) -> Result<()> {
    let usa_ofs = usize::from(le16(buf, 4));
    let count = usize::from(le16(buf, 6));
    let blocks = buf.len() / USA_STRIDE;
    if blocks == 0 || count != blocks + 1 || usa_ofs < 0x28 || usa_ofs + 2 * count > USA_STRIDE - 2
    {
        return Err(corrupt(format!(
            "{what}: update sequence array ({count} entries at {usa_ofs}) does not fit {} bytes",
            buf.len()
        )));
    }
    let usn = [u8_at(buf, usa_ofs), u8_at(buf, usa_ofs + 1)];
    for i in 1..count {
        let end = i * USA_STRIDE - 2;
        if sub(buf, end, 2) != usn {
            return Err(corrupt(format!(
                "{what}: update sequence mismatch at byte {end} (torn write)"
            )));
        }
        let orig = [u8_at(buf, usa_ofs + 2 * i), u8_at(buf, usa_ofs + 2 * i + 1)];
        put(buf, end, &orig);
    }
    Ok(())
}

/// Apply the update sequence fixups (with the next sequence number).
fn fix(buf: &mut [u8]) {
    let usa_ofs = usize::from(le16(buf, 4));
    let count = usize::from(le16(buf, 6));
    let mut usn = le16(buf, usa_ofs).wrapping_add(1);
    if usn == 0 || usn == 0xFFFF {
        usn = 1;
    }
    w16(buf, usa_ofs, usn);
    for i in 1..count {
        let end = i * USA_STRIDE - 2;
        let orig = [u8_at(buf, end), u8_at(buf, end + 1)];
        put(buf, usa_ofs + 2 * i, &orig);
        w16(buf, end, usn);
    }
}

/// One data run: `len` clusters at virtual cluster `vcn`, at `lcn` (None: sparse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    vcn: u64,
    lcn: Option<u64>,
    len: u64,
}

fn decode_runs(mp: &[u8], total_clusters: u64, what: &str) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut pos = 0usize;
    let mut vcn = 0u64;
    let mut lcn = 0i64;
    loop {
        let Some(&h) = mp.get(pos) else {
            return Err(corrupt(format!(
                "{what}: mapping pairs run past the attribute"
            )));
        };
        if h == 0 {
            break;
        }
        let ls = usize::from(h & 0xF);
        let os = usize::from(h >> 4);
        if ls == 0 || ls > 8 || os > 8 {
            return Err(corrupt(format!("{what}: mapping pair header {h:#04x}")));
        }
        let lb = sub(mp, pos + 1, ls);
        let ob = sub(mp, pos + 1 + ls, os);
        if lb.len() != ls || ob.len() != os {
            return Err(corrupt(format!(
                "{what}: mapping pairs run past the attribute"
            )));
        }
        let mut len = 0u64;
        for (i, b) in lb.iter().enumerate() {
            len |= u64::from(*b) << (8 * i);
        }
        if len == 0 || len > total_clusters {
            return Err(corrupt(format!("{what}: run of {len} clusters")));
        }
        let at = if os == 0 {
            None
        } else {
            let mut d = 0i64;
            for (i, b) in ob.iter().enumerate() {
                d |= i64::from(*b) << (8 * i);
            }
            if os < 8 && ob.last().is_some_and(|b| b & 0x80 != 0) {
                d |= -1i64 << (8 * os);
            }
            lcn = lcn
                .checked_add(d)
                .ok_or_else(|| corrupt(format!("{what}: LCN overflow")))?;
            let l = u64::try_from(lcn).map_err(|_| corrupt(format!("{what}: negative LCN")))?;
            if l.saturating_add(len) > total_clusters {
                return Err(corrupt(format!(
                    "{what}: run at cluster {l} of {len} clusters leaves the {total_clusters}-cluster volume"
                )));
            }
            Some(l)
        };
        runs.push(Run { vcn, lcn: at, len });
        if runs.len() > MAX_RUNS {
            return Err(corrupt(format!("{what}: more than {MAX_RUNS} data runs")));
        }
        vcn += len;
        pos += 1 + ls + os;
    }
    Ok(runs)
}

fn encode_runs(runs: &[Run]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = 0i64;
    for r in runs {
        let mut lb = r.len.to_le_bytes().to_vec();
        while lb.len() > 1 && lb.last() == Some(&0) {
            lb.pop();
        }
        if lb.last().is_some_and(|b| b & 0x80 != 0) {
            lb.push(0); // lengths are read as signed by some implementations
        }
        let ob = match r.lcn {
            None => Vec::new(),
            Some(l) => {
                let d = l as i64 - prev;
                prev = l as i64;
                let mut n = 8usize;
                while n > 1 {
                    let shift = 8 * (n - 1) - 1;
                    let top = d >> shift;
                    if top == 0 || top == -1 {
                        n -= 1;
                    } else {
                        break;
                    }
                }
                d.to_le_bytes().get(..n).unwrap_or_default().to_vec()
            }
        };
        out.push(((ob.len() as u8) << 4) | lb.len() as u8);
        out.extend_from_slice(&lb);
        out.extend_from_slice(&ob);
    }
    out.push(0);
    out
}

/// Merge adjacent contiguous runs and renumber VCNs.
fn normalize(runs: Vec<Run>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut vcn = 0;
    for r in runs {
        if let Some(last) = out.last_mut() {
            let contiguous = match (last.lcn, r.lcn) {
                (Some(a), Some(b)) => a + last.len == b,
                (None, None) => true,
                _ => false,
            };
            if contiguous {
                last.len += r.len;
                vcn += r.len;
                continue;
            }
        }
        out.push(Run {
            vcn,
            lcn: r.lcn,
            len: r.len,
        });
        vcn += r.len;
    }
    out
}

fn run_clusters(runs: &[Run]) -> u64 {
    runs.iter().map(|r| r.len).sum()
}

/// An MFT record split into its header (up to the first attribute) and its
/// attributes (each a full attribute with header).
#[derive(Clone)]
struct Record {
    hdr: Vec<u8>,
    attrs: Vec<Vec<u8>>,
    size: usize,
}

impl Record {
    fn parse(buf: &[u8], what: &str) -> Result<Record> {
        if sub(buf, 0, 4) != b"FILE" {
            return Err(corrupt(format!("{what}: no FILE signature")));
        }
        let first = usize::from(le16(buf, 0x14));
        let used = le32(buf, 0x18) as usize;
        if first < 0x30 || first > buf.len() || used > buf.len() || first > used {
            return Err(corrupt(format!(
                "{what}: attribute offset {first} / bytes in use {used} outside the {}-byte record",
                buf.len()
            )));
        }
        let mut attrs = Vec::new();
        let mut p = first;
        loop {
            let ty = le32(buf, p);
            if ty == AT_END {
                break;
            }
            let len = le32(buf, p + 4) as usize;
            if len < 0x18 || !len.is_multiple_of(8) || p + len > used {
                return Err(corrupt(format!(
                    "{what}: attribute {ty:#x} at byte {p} has length {len} (record uses {used})"
                )));
            }
            let a = sub(buf, p, len).to_vec();
            check_attr(&a, what)?;
            attrs.push(a);
            if attrs.len() > MAX_ATTRS {
                return Err(corrupt(format!("{what}: more than {MAX_ATTRS} attributes")));
            }
            p += len;
        }
        Ok(Record {
            hdr: sub(buf, 0, first).to_vec(),
            attrs,
            size: buf.len(),
        })
    }

    fn flags(&self) -> u16 {
        le16(&self.hdr, 0x16)
    }

    fn set_flags(&mut self, f: u16) {
        w16(&mut self.hdr, 0x16, f);
    }

    fn seq(&self) -> u16 {
        le16(&self.hdr, 0x10)
    }

    fn used(&self) -> usize {
        self.hdr.len() + self.attrs.iter().map(Vec::len).sum::<usize>() + 8
    }

    fn fits(&self) -> bool {
        self.used() <= self.size
    }

    fn serialize(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.size];
        put(&mut b, 0, &self.hdr);
        let mut p = self.hdr.len();
        for a in &self.attrs {
            put(&mut b, p, a);
            p += a.len();
        }
        w32(&mut b, p, AT_END);
        w32(&mut b, 0x18, (p + 8) as u32);
        w32(&mut b, 0x1C, self.size as u32);
        b
    }

    fn find(&self, ty: u32, name: &[u16]) -> Option<usize> {
        self.attrs
            .iter()
            .position(|a| attr_type(a) == ty && attr_name(a) == name)
    }

    fn get(&self, ty: u32, name: &[u16]) -> Option<&Vec<u8>> {
        self.find(ty, name).and_then(|i| self.attrs.get(i))
    }

    fn has(&self, ty: u32) -> bool {
        self.attrs.iter().any(|a| attr_type(a) == ty)
    }

    fn next_instance(&mut self) -> u16 {
        let i = le16(&self.hdr, 0x28);
        w16(&mut self.hdr, 0x28, i.wrapping_add(1));
        i
    }

    /// Insert `a` (its instance is assigned here) in type order.
    fn insert(&mut self, mut a: Vec<u8>) {
        let inst = self.next_instance();
        w16(&mut a, 0x0E, inst);
        let ty = attr_type(&a);
        let pos = self
            .attrs
            .iter()
            .position(|x| attr_type(x) > ty)
            .unwrap_or(self.attrs.len());
        self.attrs.insert(pos, a);
    }

    /// Replace the attribute at `i` by `a`, keeping its instance number.
    fn replace(&mut self, i: usize, mut a: Vec<u8>) {
        if let Some(old) = self.attrs.get_mut(i) {
            w16(&mut a, 0x0E, le16(old, 0x0E));
            *old = a;
        }
    }
}

fn attr_type(a: &[u8]) -> u32 {
    le32(a, 0)
}
fn attr_nonres(a: &[u8]) -> bool {
    u8_at(a, 8) != 0
}
fn attr_flags(a: &[u8]) -> u16 {
    le16(a, 0x0C)
}
fn attr_name(a: &[u8]) -> Vec<u16> {
    let n = usize::from(u8_at(a, 9));
    let o = usize::from(le16(a, 0x0A));
    sub(a, o, 2 * n)
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .collect()
}
/// Mapping pairs of a non-resident attribute.
fn mapping_pairs(a: &[u8]) -> &[u8] {
    a.get(usize::from(le16(a, 0x20))..).unwrap_or_default()
}
/// Value of a resident attribute (empty for a non-resident one).
fn attr_value(a: &[u8]) -> &[u8] {
    if attr_nonres(a) {
        return &[];
    }
    sub(a, usize::from(le16(a, 0x14)), le32(a, 0x10) as usize)
}

fn check_attr(a: &[u8], what: &str) -> Result<()> {
    let n = usize::from(u8_at(a, 9));
    let o = usize::from(le16(a, 0x0A));
    if n > 0 && o + 2 * n > a.len() {
        return Err(corrupt(format!(
            "{what}: attribute name outside the attribute"
        )));
    }
    if attr_nonres(a) {
        if a.len() < 0x40 || usize::from(le16(a, 0x20)) >= a.len() {
            return Err(corrupt(format!("{what}: non-resident attribute header")));
        }
    } else {
        let vo = usize::from(le16(a, 0x14));
        let vl = le32(a, 0x10) as usize;
        if vo + vl > a.len() {
            return Err(corrupt(format!(
                "{what}: resident value of {vl} bytes at {vo} outside the {}-byte attribute",
                a.len()
            )));
        }
    }
    Ok(())
}

fn resident_attr(ty: u32, name: &[u16], value: &[u8], indexed: bool) -> Vec<u8> {
    let vo = align8(0x18 + 2 * name.len());
    let len = align8(vo + value.len());
    let mut a = vec![0u8; len];
    w32(&mut a, 0, ty);
    w32(&mut a, 4, len as u32);
    put(&mut a, 9, &[name.len() as u8]);
    w16(&mut a, 0x0A, 0x18);
    w32(&mut a, 0x10, value.len() as u32);
    w16(&mut a, 0x14, vo as u16);
    put(&mut a, 0x16, &[u8::from(indexed)]);
    put(&mut a, 0x18, &utf16_bytes(name));
    put(&mut a, vo, value);
    a
}

fn nonres_attr(ty: u32, name: &[u16], runs: &[Run], cs: u64, data_size: u64) -> Vec<u8> {
    let mp = encode_runs(runs);
    let mo = align8(0x40 + 2 * name.len());
    let len = align8(mo + mp.len());
    let clusters = run_clusters(runs);
    let mut a = vec![0u8; len];
    w32(&mut a, 0, ty);
    w32(&mut a, 4, len as u32);
    put(&mut a, 8, &[1, name.len() as u8]);
    w16(&mut a, 0x0A, 0x40);
    w64(&mut a, 0x10, 0);
    w64(&mut a, 0x18, clusters.wrapping_sub(1));
    w16(&mut a, 0x20, mo as u16);
    w64(&mut a, 0x28, clusters * cs);
    w64(&mut a, 0x30, data_size);
    w64(&mut a, 0x38, data_size);
    put(&mut a, 0x40, &utf16_bytes(name));
    put(&mut a, mo, &mp);
    a
}

/// Entries of an index node (each with its child VCN) and the end entry's child.
type Node = (Vec<(IEntry, Option<u64>)>, Option<u64>);

/// One `$I30` index entry: the file reference and its `$FILE_NAME` key.
#[derive(Clone, Debug)]
struct IEntry {
    fileref: u64,
    key: Vec<u8>,
}

impl IEntry {
    fn record(&self) -> u64 {
        self.fileref & 0x0000_FFFF_FFFF_FFFF
    }
    fn size(&self, child: bool) -> usize {
        align8(0x10 + self.key.len()) + if child { 8 } else { 0 }
    }
}

fn end_size(child: bool) -> usize {
    0x10 + if child { 8 } else { 0 }
}

/// Serialize node entries (with optional child VCNs) and the end entry.
fn node_bytes(items: &[(IEntry, Option<u64>)], end_child: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for (e, c) in items {
        let len = e.size(c.is_some());
        let mut b = vec![0u8; len];
        w64(&mut b, 0, e.fileref);
        w16(&mut b, 8, len as u16);
        w16(&mut b, 10, e.key.len() as u16);
        w16(&mut b, 12, if c.is_some() { INDEX_ENTRY_NODE } else { 0 });
        put(&mut b, 0x10, &e.key);
        if let Some(v) = c {
            w64(&mut b, len - 8, *v);
        }
        out.extend_from_slice(&b);
    }
    let len = end_size(end_child.is_some());
    let mut b = vec![0u8; len];
    w16(&mut b, 8, len as u16);
    w16(
        &mut b,
        12,
        INDEX_ENTRY_END
            | if end_child.is_some() {
                INDEX_ENTRY_NODE
            } else {
                0
            },
    );
    if let Some(v) = end_child {
        w64(&mut b, len - 8, v);
    }
    out.extend_from_slice(&b);
    out
}

/// Parse the entries of an index node whose index header is at `h` in `b`.
fn parse_node(b: &[u8], h: usize, what: &str) -> Result<Node> {
    let start = h + le32(b, h) as usize;
    let end = h + le32(b, h + 4) as usize;
    if start > end || end > b.len() {
        return Err(corrupt(format!(
            "{what}: index entries {start}..{end} outside the {}-byte node",
            b.len()
        )));
    }
    let mut items = Vec::new();
    let mut p = start;
    loop {
        let len = usize::from(le16(b, p + 8));
        let klen = usize::from(le16(b, p + 10));
        let flags = le16(b, p + 12);
        if len < 0x10 || p + len > end || 0x10 + klen > len {
            return Err(corrupt(format!(
                "{what}: index entry at byte {p} of length {len} (key {klen}) leaves the node"
            )));
        }
        let child = if flags & INDEX_ENTRY_NODE != 0 {
            if len < 0x18 {
                return Err(corrupt(format!(
                    "{what}: index entry at byte {p} too short for its VCN"
                )));
            }
            Some(le64(b, p + len - 8))
        } else {
            None
        };
        if flags & INDEX_ENTRY_END != 0 {
            return Ok((items, child));
        }
        if klen < 0x42 {
            return Err(corrupt(format!(
                "{what}: $I30 key of {klen} bytes at byte {p}"
            )));
        }
        items.push((
            IEntry {
                fileref: le64(b, p),
                key: sub(b, p + 0x10, klen).to_vec(),
            },
            child,
        ));
        if items.len() > limits::MAX_NTFS_INDEX_ENTRIES {
            return Err(corrupt(format!("{what}: too many index entries")));
        }
        p += len;
    }
}

fn filetime(unix: u64) -> u64 {
    (unix + FILETIME_UNIX_OFFSET) * 10_000_000
}

/// The security descriptor ntfs-3g gives files when the volume has no
/// inheritable security id: self-relative ([MS-DTYP] 2.4.6), owner and group
/// BUILTIN\\Administrators (S-1-5-32-544), a DACL with one ACE allowing
/// Everyone (S-1-1-0) full control (0x1F01FF), inherited by objects and
/// containers (flags OI|CI).
fn default_sd() -> Vec<u8> {
    let admins: [u8; 16] = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 0x02, 0, 0];
    let mut v = vec![0u8; 80];
    put(&mut v, 0, &[1, 0]);
    w16(&mut v, 2, 0x8004); // SE_SELF_RELATIVE | SE_DACL_PRESENT
    w32(&mut v, 4, 0x30); // owner
    w32(&mut v, 8, 0x40); // group
    w32(&mut v, 16, 0x14); // DACL
    put(&mut v, 0x14, &[2, 0]);
    w16(&mut v, 0x16, 28);
    w16(&mut v, 0x18, 1);
    put(&mut v, 0x1C, &[0, 0x3]); // ACCESS_ALLOWED, OI|CI
    w16(&mut v, 0x1E, 20);
    w32(&mut v, 0x20, 0x001F_01FF);
    put(&mut v, 0x24, &[1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    put(&mut v, 0x30, &admins);
    put(&mut v, 0x40, &admins);
    v
}

/// FILETIME of a Unix time that may precede 1970 (clamped at 1601).
fn filetime_signed(unix: i64) -> u64 {
    let secs = unix.saturating_add(FILETIME_UNIX_OFFSET as i64).max(0) as u64;
    secs.saturating_mul(10_000_000)
}

/// Namespace for a new name: Win32&DOS when it is already a valid upper-case
/// 8.3 name, POSIX when Win32 forbids it, Win32 otherwise.
fn namespace_for(name: &str) -> u8 {
    let bad_win32 = name
        .chars()
        .any(|c| (c as u32) < 0x20 || "\"*:<>?\\|".contains(c))
        || name.ends_with(' ')
        || name.ends_with('.');
    if bad_win32 {
        return NS_POSIX;
    }
    let dos_char =
        |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || "!#$%&'()-@^_`{}~".contains(c);
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) => (b, Some(e)),
        None => (name, None),
    };
    let ok = !base.is_empty()
        && base.len() <= 8
        && base.chars().all(dos_char)
        && ext.is_none_or(|e| !e.is_empty() && e.len() <= 3 && e.chars().all(dos_char));
    if ok {
        NS_WIN32_AND_DOS
    } else {
        NS_WIN32
    }
}

/// The NTFS writer state for one volume.
pub struct NtfsWriter {
    dev: VolumeDev,
    cs: u64,
    rec_size: usize,
    clusters: u64,
    mft_runs: Vec<Run>,
    mft_records: u64,
    mirr_lcn: u64,
    mirr_records: u64,
    bitmap_runs: Vec<Run>,
    bitmap: Vec<u8>,
    bitmap_dirty: BTreeSet<usize>,
    mft_bitmap: Vec<u8>,
    mft_bitmap_dirty: bool,
    upcase: Vec<u16>,
    now: u64,
    hint: u64,
}

fn refuse(why: impl Into<String>) -> Error {
    Error::unsupported(format!("NTFS volume cannot be written: {}", why.into()))
}

impl NtfsWriter {
    /// Open the NTFS volume on `dev` for writing, refusing (naming the
    /// reason) what this writer cannot keep consistent.
    pub fn open(dev: VolumeDev) -> Result<Self> {
        let mut bs = [0u8; 512];
        dev.read_at(0, &mut bs)?;
        if sub(&bs, 3, 8) != super::OEM_ID {
            return Err(corrupt("boot sector: no \"NTFS    \" OEM id"));
        }
        let bps = u64::from(le16(&bs, 0x0B));
        if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(corrupt(format!("boot sector: {bps} bytes per sector")));
        }
        let spc_raw = u8_at(&bs, 0x0D);
        let spc = if spc_raw > 0x80 {
            1u64 << (256 - u32::from(spc_raw)).min(20)
        } else {
            u64::from(spc_raw)
        };
        let cs = bps * spc;
        if cs == 0 || !cs.is_power_of_two() || cs > 2 << 20 {
            return Err(corrupt(format!("boot sector: cluster size {cs}")));
        }
        let size_of = |v: i8| -> u64 {
            if v < 0 {
                1u64 << u32::from(v.unsigned_abs()).min(31)
            } else {
                u64::from(v.unsigned_abs()) * cs
            }
        };
        let rec_size = size_of(i8::from_le_bytes([u8_at(&bs, 0x40)]));
        let ibs = size_of(i8::from_le_bytes([u8_at(&bs, 0x44)]));
        if !(512..=65536).contains(&rec_size) || !rec_size.is_power_of_two() {
            return Err(corrupt(format!("boot sector: MFT record size {rec_size}")));
        }
        if !(512..=65536).contains(&ibs) || !ibs.is_power_of_two() {
            return Err(corrupt(format!("boot sector: index block size {ibs}")));
        }
        let total_sectors = le64(&bs, 0x28);
        let clusters = total_sectors.saturating_mul(bps) / cs;
        if clusters == 0 || clusters.saturating_mul(cs) > dev.len() {
            return Err(corrupt(format!(
                "boot sector: {total_sectors} sectors exceed the {}-byte volume",
                dev.len()
            )));
        }
        let mft_lcn = le64(&bs, 0x30);
        let mirr_lcn = le64(&bs, 0x38);
        if mft_lcn >= clusters || mirr_lcn >= clusters {
            return Err(corrupt(
                "boot sector: $MFT or $MFTMirr LCN beyond the volume",
            ));
        }
        let rec_size = rec_size as usize;
        let mirr_records = if cs <= 4 * rec_size as u64 {
            4
        } else {
            cs / rec_size as u64
        };
        let mut w = NtfsWriter {
            dev,
            cs,
            rec_size,
            clusters,
            mft_runs: vec![Run {
                vcn: 0,
                lcn: Some(mft_lcn),
                len: (rec_size as u64).div_ceil(cs).max(1),
            }],
            mft_records: 1,
            mirr_lcn,
            mirr_records,
            bitmap_runs: Vec::new(),
            bitmap: Vec::new(),
            bitmap_dirty: BTreeSet::new(),
            mft_bitmap: Vec::new(),
            mft_bitmap_dirty: false,
            upcase: Vec::new(),
            now: filetime(crate::target::default_timestamp()?),
            hint: 0,
        };
        // $MFT itself.
        let m = w.record(0)?;
        if m.has(AT_ATTRIBUTE_LIST) {
            return Err(refuse(
                "the $MFT has an attribute list (it is too fragmented for this writer)",
            ));
        }
        let (runs, size) = w.nonres_runs(&m, AT_DATA, &[], "$MFT $DATA")?;
        if run_clusters(&runs) * cs < size || runs.iter().any(|r| r.lcn.is_none()) {
            return Err(corrupt("$MFT $DATA: runs do not map its data size"));
        }
        w.mft_runs = runs;
        w.mft_records = size / rec_size as u64;
        w.mft_bitmap = w.read_attr_value(&m, AT_BITMAP, &[], 64 << 20, "$MFT $BITMAP")?;
        if (w.mft_bitmap.len() as u64) * 8 < w.mft_records.min(1 << 40) {
            w.mft_records = w.mft_bitmap.len() as u64 * 8;
        }
        // New data goes after the MFT zone (an eighth of the volume after
        // the $MFT, as mkntfs and Windows reserve it) so the $MFT can grow.
        w.hint = mft_lcn
            .saturating_add(clusters / 8)
            .min(clusters.saturating_sub(1));
        // $Volume.
        let v = w.record(3)?;
        let vi = v
            .get(AT_VOLUME_INFORMATION, &[])
            .map(|a| attr_value(a).to_vec())
            .ok_or_else(|| corrupt("$Volume has no $VOLUME_INFORMATION"))?;
        let (major, minor, vflags) = (u8_at(&vi, 8), u8_at(&vi, 9), le16(&vi, 10));
        if major != 3 {
            return Err(refuse(format!(
                "NTFS version {major}.{minor} (this writer handles 3.0 and 3.1)"
            )));
        }
        if vflags & VOLUME_IS_DIRTY != 0 {
            return Err(refuse(
                "the volume is marked dirty (VOLUME_IS_DIRTY in $Volume); let Windows run chkdsk, or clear it with ntfsfix -d if you know it is consistent",
            ));
        }
        // $LogFile.
        w.check_logfile()?;
        // $UpCase.
        let u = w.record(10)?;
        let up = w.read_attr_value(&u, AT_DATA, &[], 1 << 20, "$UpCase")?;
        w.upcase = up
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .collect();
        // $Bitmap.
        let b = w.record(6)?;
        let (bruns, bsize) = w.nonres_runs(&b, AT_DATA, &[], "$Bitmap $DATA")?;
        if bsize * 8 < clusters || bsize > limits::MAX_TABLE_BYTES {
            return Err(corrupt(format!(
                "$Bitmap: {bsize} bytes for {clusters} clusters"
            )));
        }
        w.bitmap_runs = bruns;
        let mut bm = vec![0u8; bsize as usize];
        w.stream_read(&w.bitmap_runs, 0, &mut bm)?;
        w.bitmap = bm;
        // Hibernation.
        if let Some((rec, _)) = w.lookup("/hiberfil.sys")? {
            let r = w.record(rec)?;
            let mut head = w.read_attr_prefix(&r, 4)?;
            head.make_ascii_lowercase();
            if head == b"hibr" || head == b"wake" {
                return Err(refuse(
                    "Windows is hibernated (hiberfil.sys has an active header; Fast Startup leaves one too): boot Windows and shut it down fully (shutdown /s /t 0) first",
                ));
            }
        }
        Ok(w)
    }

    fn check_logfile(&self) -> Result<()> {
        let l = self.record(2)?;
        let (runs, size) = self.nonres_runs(&l, AT_DATA, &[], "$LogFile $DATA")?;
        let n = size.min(8192) as usize;
        let mut page = vec![0u8; n];
        self.stream_read(&runs, 0, &mut page)?;
        if page.iter().all(|&b| b == 0xFF) {
            return Ok(()); // empty: as mkntfs and ntfs-3g leave it
        }
        let magic = sub(&page, 0, 4);
        if magic != b"RSTR" {
            return Err(refuse(format!(
                "$LogFile does not start with a restart page ({:?}); the volume was not shut down cleanly",
                String::from_utf8_lossy(magic)
            )));
        }
        let ra = usize::from(le16(&page, 0x18));
        let flags = le16(&page, ra + 0x0E);
        let in_use = le16(&page, ra + 0x0C);
        if in_use != LOGFILE_NO_CLIENT && flags & RESTART_VOLUME_IS_CLEAN == 0 {
            return Err(refuse(
                "$LogFile has log records to replay (the restart area is not clean): Windows was not shut down cleanly; boot it and shut it down, or run chkdsk",
            ));
        }
        Ok(())
    }

    // ---- cluster-level I/O ----------------------------------------------

    fn pieces(&self, runs: &[Run], off: u64, len: u64) -> Result<Vec<(Option<u64>, u64)>> {
        let mut out = Vec::new();
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let vcn = pos / self.cs;
            let r = runs
                .iter()
                .find(|r| r.vcn <= vcn && vcn < r.vcn + r.len)
                .ok_or_else(|| {
                    corrupt(format!("byte {pos} of a stream is not mapped by its runs"))
                })?;
            let run_end = (r.vcn + r.len) * self.cs;
            let n = (run_end - pos).min(end - pos);
            out.push((r.lcn.map(|l| l * self.cs + (pos - r.vcn * self.cs)), n));
            pos += n;
        }
        Ok(out)
    }

    fn stream_read(&self, runs: &[Run], off: u64, buf: &mut [u8]) -> Result<()> {
        let mut p = 0usize;
        for (at, n) in self.pieces(runs, off, buf.len() as u64)? {
            let n = n as usize;
            let part = buf.get_mut(p..p + n).unwrap_or_default();
            match at {
                Some(a) => self.dev.read_at(a, part)?,
                None => part.fill(0),
            }
            p += n;
        }
        Ok(())
    }

    fn stream_write(&self, runs: &[Run], off: u64, data: &[u8]) -> Result<()> {
        let mut p = 0usize;
        for (at, n) in self.pieces(runs, off, data.len() as u64)? {
            let n = n as usize;
            let a = at.ok_or_else(|| Error::unsupported("NTFS: writing into a sparse run"))?;
            self.dev.write_at(a, sub(data, p, n))?;
            p += n;
        }
        Ok(())
    }

    // ---- MFT records --------------------------------------------------------

    fn record_raw(&self, n: u64) -> Result<Vec<u8>> {
        if n >= self.mft_records.max(1) {
            return Err(corrupt(format!(
                "MFT record {n} beyond the {} records of the $MFT",
                self.mft_records
            )));
        }
        let mut b = vec![0u8; self.rec_size];
        self.stream_read(&self.mft_runs, n * self.rec_size as u64, &mut b)?;
        Ok(b)
    }

    fn record(&self, n: u64) -> Result<Record> {
        let mut b = self.record_raw(n)?;
        let what = format!("MFT record {n}");
        if sub(&b, 0, 4) != b"FILE" {
            return Err(corrupt(format!("{what}: no FILE signature")));
        }
        unfix(&mut b, &what)?;
        if le16(&b, 0x16) & MFT_IN_USE == 0 {
            return Err(corrupt(format!("{what} is referenced but not in use")));
        }
        if le64(&b, 0x20) & 0x0000_FFFF_FFFF_FFFF != 0 {
            return Err(corrupt(format!("{what} is an extension record")));
        }
        Record::parse(&b, &what)
    }

    fn write_record(&self, n: u64, r: &Record) -> Result<()> {
        if !r.fits() {
            return Err(Error::unsupported(format!(
                "NTFS: MFT record {n} would need {} bytes, more than its {} (an attribute list is not supported)",
                r.used(),
                r.size
            )));
        }
        let mut b = r.serialize();
        fix(&mut b);
        self.stream_write(&self.mft_runs, n * self.rec_size as u64, &b)?;
        if n < self.mirr_records {
            self.dev
                .write_at(self.mirr_lcn * self.cs + n * self.rec_size as u64, &b)?;
        }
        Ok(())
    }

    fn nonres_runs(
        &self,
        r: &Record,
        ty: u32,
        name: &[u16],
        what: &str,
    ) -> Result<(Vec<Run>, u64)> {
        let a = r
            .get(ty, name)
            .ok_or_else(|| corrupt(format!("{what}: attribute missing")))?;
        if !attr_nonres(a) {
            return Err(corrupt(format!(
                "{what}: expected a non-resident attribute"
            )));
        }
        let runs = decode_runs(mapping_pairs(a), self.clusters, what)?;
        let size = le64(a, 0x30);
        let alloc = le64(a, 0x28);
        if alloc > run_clusters(&runs) * self.cs || size > alloc {
            return Err(corrupt(format!(
                "{what}: sizes (data {size}, allocated {alloc}) exceed its runs"
            )));
        }
        Ok((runs, size))
    }

    fn read_attr_value(
        &self,
        r: &Record,
        ty: u32,
        name: &[u16],
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let a = r
            .get(ty, name)
            .ok_or_else(|| corrupt(format!("{what}: attribute missing")))?;
        if !attr_nonres(a) {
            return Ok(attr_value(a).to_vec());
        }
        let (runs, size) = self.nonres_runs(r, ty, name, what)?;
        if size > limit {
            return Err(corrupt(format!("{what}: {size} bytes (at most {limit})")));
        }
        let mut b = vec![0u8; size as usize];
        let init = le64(a, 0x38).min(size) as usize;
        self.stream_read(&runs, 0, b.get_mut(..init).unwrap_or_default())?;
        Ok(b)
    }

    fn read_attr_prefix(&self, r: &Record, n: usize) -> Result<Vec<u8>> {
        let Some(a) = r.get(AT_DATA, &[]) else {
            return Ok(Vec::new());
        };
        if !attr_nonres(a) {
            return Ok(attr_value(a).get(..n).unwrap_or(attr_value(a)).to_vec());
        }
        let (runs, size) = self.nonres_runs(r, AT_DATA, &[], "$DATA")?;
        let mut b = vec![0u8; (size as usize).min(n)];
        if le64(a, 0x38) >= b.len() as u64 {
            self.stream_read(&runs, 0, &mut b)?;
        }
        Ok(b)
    }

    // ---- allocation -----------------------------------------------------

    fn bit(&self, c: u64) -> bool {
        self.bitmap
            .get((c / 8) as usize)
            .is_some_and(|b| b & (1 << (c % 8)) != 0)
    }

    fn set_bits(&mut self, lcn: u64, len: u64, on: bool) {
        for c in lcn..lcn + len {
            let i = (c / 8) as usize;
            if let Some(b) = self.bitmap.get_mut(i) {
                if on {
                    *b |= 1 << (c % 8);
                } else {
                    *b &= !(1 << (c % 8));
                }
                self.bitmap_dirty.insert(i / 4096);
            }
        }
    }

    fn free_runs(&mut self, runs: &[Run]) {
        for r in runs {
            if let Some(l) = r.lcn {
                self.set_bits(l, r.len, false);
            }
        }
    }

    /// Allocate `n` clusters, contiguous when possible, first after `near`.
    fn alloc(&mut self, n: u64, near: Option<u64>) -> Result<Vec<Run>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let start = near.unwrap_or(self.hint).min(self.clusters);
        // Contiguous first: after `start`, then from 0.
        for (from, to) in [(start, self.clusters), (0, start)] {
            let mut c = from;
            let mut run_start = from;
            let mut run_len = 0u64;
            while c < to {
                if c % 8 == 0 && c + 8 <= to && self.bitmap.get((c / 8) as usize) == Some(&0xFF) {
                    run_len = 0;
                    c += 8;
                    run_start = c;
                    continue;
                }
                if self.bit(c) {
                    run_len = 0;
                    run_start = c + 1;
                } else {
                    run_len += 1;
                    if run_len == n {
                        self.set_bits(run_start, n, true);
                        self.hint = run_start + n;
                        return Ok(vec![Run {
                            vcn: 0,
                            lcn: Some(run_start),
                            len: n,
                        }]);
                    }
                }
                c += 1;
            }
        }
        // Fragments, first fit.
        let mut out = Vec::new();
        let mut need = n;
        let mut c = 0u64;
        while c < self.clusters && need > 0 {
            if !self.bit(c) {
                let s = c;
                while c < self.clusters && !self.bit(c) && c - s < need {
                    c += 1;
                }
                out.push(Run {
                    vcn: 0,
                    lcn: Some(s),
                    len: c - s,
                });
                need -= c - s;
            } else {
                c += 1;
            }
        }
        if need > 0 {
            return Err(Error::invalid(format!(
                "NTFS: volume full ({n} clusters of {} bytes needed)",
                self.cs
            )));
        }
        for r in &out {
            if let Some(l) = r.lcn {
                self.set_bits(l, r.len, true);
            }
        }
        let mut vcn = 0;
        for r in &mut out {
            r.vcn = vcn;
            vcn += r.len;
        }
        Ok(out)
    }

    fn mft_bit(&self, n: u64) -> bool {
        self.mft_bitmap
            .get((n / 8) as usize)
            .is_some_and(|b| b & (1 << (n % 8)) != 0)
    }

    fn set_mft_bit(&mut self, n: u64, on: bool) {
        if let Some(b) = self.mft_bitmap.get_mut((n / 8) as usize) {
            if on {
                *b |= 1 << (n % 8);
            } else {
                *b &= !(1 << (n % 8));
            }
            self.mft_bitmap_dirty = true;
        }
    }

    /// A free MFT record number (≥ 24), growing the `$MFT` when needed.
    fn alloc_record(&mut self) -> Result<u64> {
        for _ in 0..2 {
            let n = (FIRST_USER_RECORD..self.mft_records).find(|&n| !self.mft_bit(n));
            if let Some(n) = n {
                self.set_mft_bit(n, true);
                return Ok(n);
            }
            self.grow_mft()?;
        }
        Err(Error::invalid(
            "NTFS: no free MFT record after growing the $MFT",
        ))
    }

    fn grow_mft(&mut self) -> Result<()> {
        let mut m = self.record(0)?;
        let rs = self.rec_size as u64;
        let old_records = self.mft_records;
        let new_records = old_records + MFT_GROW_RECORDS;
        let need_bytes = new_records * rs;
        let have_clusters = run_clusters(&self.mft_runs);
        let need_clusters = need_bytes.div_ceil(self.cs);
        let mut runs = self.mft_runs.clone();
        if need_clusters > have_clusters {
            let near = runs.last().and_then(|r| r.lcn.map(|l| l + r.len));
            let extra = self.alloc(need_clusters - have_clusters, near)?;
            runs.extend(extra);
            runs = normalize(runs);
        }
        // The bitmap must cover the new records (it grows in 8-byte steps).
        let bm_bytes = (new_records.div_ceil(8) as usize).div_ceil(8) * 8;
        let bi = m
            .find(AT_BITMAP, &[])
            .ok_or_else(|| corrupt("$MFT has no $BITMAP"))?;
        let ba = m.attrs.get(bi).cloned().unwrap_or_default();
        if attr_nonres(&ba) {
            let alloc = le64(&ba, 0x28);
            let mut ba2 = ba.clone();
            if (bm_bytes as u64) > alloc {
                return Err(Error::unsupported(
                    "NTFS: the $MFT bitmap would need another cluster (not supported)",
                ));
            }
            if (bm_bytes as u64) > le64(&ba, 0x30) {
                w64(&mut ba2, 0x30, bm_bytes as u64);
                w64(&mut ba2, 0x38, bm_bytes as u64);
            }
            m.replace(bi, ba2);
        } else {
            let mut v = attr_value(&ba).to_vec();
            if v.len() < bm_bytes {
                v.resize(bm_bytes, 0);
            }
            m.replace(bi, resident_attr(AT_BITMAP, &[], &v, false));
        }
        if self.mft_bitmap.len() < bm_bytes {
            self.mft_bitmap.resize(bm_bytes, 0);
        }
        let di = m
            .find(AT_DATA, &[])
            .ok_or_else(|| corrupt("$MFT has no $DATA"))?;
        m.replace(di, nonres_attr(AT_DATA, &[], &runs, self.cs, need_bytes));
        // Format the new records (not in use) before publishing them.
        self.mft_runs = runs;
        self.mft_records = new_records;
        for n in old_records..new_records {
            let mut r = self.empty_record(n, 1);
            r.set_flags(0);
            self.write_record(n, &r)?;
        }
        self.write_record(0, &m)?;
        Ok(())
    }

    fn empty_record(&self, n: u64, seq: u16) -> Record {
        let usa_count = self.rec_size / USA_STRIDE + 1;
        let first = align8(0x30 + 2 * usa_count);
        let mut hdr = vec![0u8; first];
        put(&mut hdr, 0, b"FILE");
        w16(&mut hdr, 4, 0x30);
        w16(&mut hdr, 6, usa_count as u16);
        w16(&mut hdr, 0x10, seq);
        w16(&mut hdr, 0x12, 1);
        w16(&mut hdr, 0x14, first as u16);
        w16(&mut hdr, 0x16, MFT_IN_USE);
        w32(&mut hdr, 0x2C, n as u32);
        Record {
            hdr,
            attrs: Vec::new(),
            size: self.rec_size,
        }
    }

    // ---- names and indexes ------------------------------------------------

    fn up(&self, c: u16) -> u16 {
        self.upcase.get(usize::from(c)).copied().unwrap_or(c)
    }

    fn collate(&self, a: &[u16], b: &[u16]) -> std::cmp::Ordering {
        let ua = a.iter().map(|&c| self.up(c));
        let ub = b.iter().map(|&c| self.up(c));
        ua.cmp(ub).then_with(|| a.cmp(b))
    }

    fn same_name(&self, a: &[u16], b: &[u16]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| self.up(x) == self.up(y))
    }

    /// Geometry of a directory's index: (index block size, VCN unit bytes).
    fn index_geometry(&self, root: &[u8]) -> Result<(usize, u64)> {
        let ibs = le32(root, 8) as usize;
        if !(512..=65536).contains(&ibs) || !ibs.is_power_of_two() {
            return Err(corrupt(format!("$INDEX_ROOT: index block size {ibs}")));
        }
        let unit = if ibs as u64 >= self.cs { self.cs } else { 512 };
        Ok((ibs, unit))
    }

    /// All entries of the `$I30` index of directory record `dir`, in order.
    fn dir_entries(&self, dir: u64) -> Result<Vec<IEntry>> {
        let r = self.record(dir)?;
        let what = format!("$I30 of MFT record {dir}");
        let root = r
            .get(AT_INDEX_ROOT, &utf16("$I30"))
            .map(|a| attr_value(a).to_vec())
            .ok_or_else(|| Error::invalid(format!("NTFS: MFT record {dir} is not a directory")))?;
        if le32(&root, 0) != AT_FILE_NAME || le32(&root, 4) != COLLATION_FILE_NAME {
            return Err(corrupt(format!("{what}: not a file-name index")));
        }
        let (ibs, unit) = self.index_geometry(&root)?;
        let alloc = match r.get(AT_INDEX_ALLOCATION, &utf16("$I30")) {
            Some(_) => Some(self.nonres_runs(&r, AT_INDEX_ALLOCATION, &utf16("$I30"), &what)?),
            None => None,
        };
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let (items, end) = parse_node(&root, 0x10, &what)?;
        self.walk(
            &items,
            end,
            alloc.as_ref(),
            ibs,
            unit,
            0,
            &mut seen,
            &mut out,
            &what,
        )?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        items: &[(IEntry, Option<u64>)],
        end: Option<u64>,
        alloc: Option<&(Vec<Run>, u64)>,
        ibs: usize,
        unit: u64,
        depth: usize,
        seen: &mut BTreeSet<u64>,
        out: &mut Vec<IEntry>,
        what: &str,
    ) -> Result<()> {
        let visit = |vcn: u64, out: &mut Vec<IEntry>, seen: &mut BTreeSet<u64>| -> Result<()> {
            if depth >= MAX_INDEX_DEPTH || !seen.insert(vcn) {
                return Err(corrupt(format!(
                    "{what}: index node VCN {vcn} loops or nests too deep"
                )));
            }
            let (ci, ce) = self.read_index_block(alloc, vcn, ibs, unit, what)?;
            self.walk(&ci, ce, alloc, ibs, unit, depth + 1, seen, out, what)
        };
        for (e, c) in items {
            if let Some(v) = c {
                visit(*v, out, seen)?;
            }
            out.push(e.clone());
            if out.len() > limits::MAX_NTFS_INDEX_ENTRIES {
                return Err(corrupt(format!("{what}: too many entries")));
            }
        }
        if let Some(v) = end {
            visit(v, out, seen)?;
        }
        Ok(())
    }

    fn read_index_block(
        &self,
        alloc: Option<&(Vec<Run>, u64)>,
        vcn: u64,
        ibs: usize,
        unit: u64,
        what: &str,
    ) -> Result<Node> {
        let (runs, size) = alloc
            .ok_or_else(|| corrupt(format!("{what}: child node without $INDEX_ALLOCATION")))?;
        let off = vcn.saturating_mul(unit);
        if off.saturating_add(ibs as u64) > *size {
            return Err(corrupt(format!(
                "{what}: index node VCN {vcn} beyond the allocation"
            )));
        }
        let mut b = vec![0u8; ibs];
        self.stream_read(runs, off, &mut b)?;
        let w = format!("{what}: INDX record at VCN {vcn}");
        if sub(&b, 0, 4) != b"INDX" {
            return Err(corrupt(format!("{w}: no INDX signature")));
        }
        unfix(&mut b, &w)?;
        parse_node(&b, 0x18, &w)
    }

    /// Find `name` in directory `dir`: (record, is directory).
    fn find_in_dir(&self, dir: u64, name: &str) -> Result<Option<(u64, bool)>> {
        let want = utf16(name);
        for e in self.dir_entries(dir)? {
            if self.same_name(&name_from_key(&e.key), &want) {
                let is_dir = le32(&e.key, 0x38) & FILE_ATTR_DUP_I30 != 0;
                return Ok(Some((e.record(), is_dir)));
            }
        }
        Ok(None)
    }

    /// Look `path` up from the root: (record, is directory).
    fn lookup(&self, path: &str) -> Result<Option<(u64, bool)>> {
        let mut cur = (super::ROOT_RECORD, true);
        for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if !cur.1 {
                return Err(Error::invalid(format!(
                    "NTFS: {path}: a path component is not a directory"
                )));
            }
            match self.find_in_dir(cur.0, c)? {
                Some(x) => cur = x,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Rewrite the `$I30` index of directory `dir` with `entries` (sorted here).
    fn write_index(&mut self, dir: u64, mut entries: Vec<IEntry>) -> Result<()> {
        entries.sort_by(|a, b| {
            self.collate(&name_from_key(&a.key), &name_from_key(&b.key))
                .then(u8_at(&a.key, 0x41).cmp(&u8_at(&b.key, 0x41)))
        });
        let i30 = utf16("$I30");
        let r = self.record(dir)?;
        let ri = r
            .find(AT_INDEX_ROOT, &i30)
            .ok_or_else(|| corrupt(format!("MFT record {dir} has no $INDEX_ROOT")))?;
        let root_attr = r.attrs.get(ri).cloned().unwrap_or_default();
        let root_val = attr_value(&root_attr).to_vec();
        let (ibs, unit) = self.index_geometry(&root_val)?;
        let root_with = |items: &[(IEntry, Option<u64>)], end: Option<u64>| -> Vec<u8> {
            let nb = node_bytes(items, end);
            let mut v = sub(&root_val, 0, 0x10).to_vec();
            let mut h = vec![0u8; 0x10];
            w32(&mut h, 0, 0x10);
            w32(&mut h, 4, (0x10 + nb.len()) as u32);
            w32(&mut h, 8, (0x10 + nb.len()) as u32);
            put(&mut h, 12, &[if end.is_some() { LARGE_INDEX } else { 0 }]);
            v.extend_from_slice(&h);
            v.extend_from_slice(&nb);
            resident_attr(AT_INDEX_ROOT, &i30, &v, false)
        };
        // Small index: everything in the root.
        let items: Vec<(IEntry, Option<u64>)> =
            entries.iter().cloned().map(|e| (e, None)).collect();
        let mut small = r.clone();
        small.replace(ri, root_with(&items, None));
        if small.fits() {
            if small.get(AT_INDEX_ALLOCATION, &i30).is_some() {
                self.set_index_bitmap(&mut small, 0)?;
            }
            return self.write_record(dir, &small);
        }
        // Large index: pack levels into INDX blocks until the top fits the root.
        let usa_count = ibs / USA_STRIDE + 1;
        let entries_start = align8(0x28 + 2 * usa_count);
        let cap = ibs - entries_start;
        let mut blocks: Vec<Vec<u8>> = Vec::new(); // node bytes per block number
        let mut level = items;
        let mut level_end: Option<u64> = None;
        let vcn_of = |b: usize| (b * ibs) as u64 / unit;
        // Room the allocation and bitmap attributes will take in the record.
        let reserve = if r.get(AT_INDEX_ALLOCATION, &i30).is_some() {
            32
        } else {
            0x48 + 0x20 + 0x30 + 16
        };
        loop {
            if level_end.is_some() {
                let mut top = r.clone();
                top.replace(ri, root_with(&level, level_end));
                if top.used() + reserve <= top.size {
                    break;
                }
            }
            let internal = level_end.is_some();
            let mut next: Vec<(IEntry, Option<u64>)> = Vec::new();
            let n = level.len();
            let mut i = 0usize;
            loop {
                let a = i;
                let mut used = end_size(internal);
                while let Some((e, c)) = level.get(i) {
                    let s = e.size(c.is_some());
                    if used + s > cap {
                        break;
                    }
                    used += s;
                    i += 1;
                }
                if i == a {
                    return Err(corrupt(format!(
                        "$I30 of MFT record {dir}: an index entry larger than a block"
                    )));
                }
                if i + 1 == n && i - a > 1 {
                    i -= 1; // leave an entry for the last node
                }
                let b = blocks.len();
                let node: Vec<(IEntry, Option<u64>)> = level.get(a..i).unwrap_or_default().to_vec();
                match level.get(i).cloned() {
                    Some((sep, sep_child)) => {
                        // level[i] moves up; its child becomes this node's end child.
                        blocks.push(node_bytes(&node, sep_child));
                        next.push((sep, Some(vcn_of(b))));
                        i += 1;
                        if i == n {
                            let b2 = blocks.len();
                            blocks.push(node_bytes(&[], level_end));
                            level_end = Some(vcn_of(b2));
                            break;
                        }
                    }
                    None => {
                        blocks.push(node_bytes(&node, level_end));
                        level_end = Some(vcn_of(b));
                        break;
                    }
                }
            }
            level = next;
        }
        // Make room: $INDEX_ALLOCATION with enough blocks, and its $BITMAP.
        let nblocks = blocks.len();
        let mut top = r.clone();
        top.replace(ri, root_with(&level, level_end));
        let runs = self.ensure_index_alloc(&mut top, dir, nblocks, ibs)?;
        self.set_index_bitmap(&mut top, nblocks)?;
        if !top.fits() {
            return Err(Error::unsupported(format!(
                "NTFS: the index of MFT record {dir} does not fit its record"
            )));
        }
        for (b, nb) in blocks.iter().enumerate() {
            let mut blk = vec![0u8; ibs];
            put(&mut blk, 0, b"INDX");
            w16(&mut blk, 4, 0x28);
            w16(&mut blk, 6, usa_count as u16);
            w64(&mut blk, 0x10, vcn_of(b));
            w32(&mut blk, 0x18, (entries_start - 0x18) as u32);
            w32(&mut blk, 0x1C, (entries_start - 0x18 + nb.len()) as u32);
            w32(&mut blk, 0x20, (ibs - 0x18) as u32);
            let has_children = parse_node_flags_children(nb);
            put(&mut blk, 0x24, &[u8::from(has_children)]);
            put(&mut blk, entries_start, nb);
            fix(&mut blk);
            self.stream_write(&runs, (b * ibs) as u64, &blk)?;
        }
        self.write_record(dir, &top)
    }

    /// Ensure the directory has an `$INDEX_ALLOCATION` of at least `nblocks` blocks.
    fn ensure_index_alloc(
        &mut self,
        r: &mut Record,
        dir: u64,
        nblocks: usize,
        ibs: usize,
    ) -> Result<Vec<Run>> {
        let i30 = utf16("$I30");
        let need = ((nblocks * ibs) as u64).div_ceil(self.cs);
        let (mut runs, _) = match r.find(AT_INDEX_ALLOCATION, &i30) {
            Some(_) => self.nonres_runs(
                r,
                AT_INDEX_ALLOCATION,
                &i30,
                &format!("$I30 allocation of MFT record {dir}"),
            )?,
            None => (Vec::new(), 0),
        };
        let have = run_clusters(&runs);
        if need > have || r.find(AT_INDEX_ALLOCATION, &i30).is_none() {
            let near = runs.last().and_then(|x| x.lcn.map(|l| l + x.len));
            let extra = self.alloc(need.saturating_sub(have).max(u64::from(have == 0)), near)?;
            runs.extend(extra);
            runs = normalize(runs);
        }
        let total = run_clusters(&runs) * self.cs;
        let size = total / ibs as u64 * ibs as u64;
        let a = nonres_attr(AT_INDEX_ALLOCATION, &i30, &runs, self.cs, size);
        match r.find(AT_INDEX_ALLOCATION, &i30) {
            Some(i) => r.replace(i, a),
            None => r.insert(a),
        }
        Ok(runs)
    }

    /// Set the index `$BITMAP` to `used` leading blocks in use.
    fn set_index_bitmap(&mut self, r: &mut Record, used: usize) -> Result<()> {
        let i30 = utf16("$I30");
        let ia = r
            .get(AT_INDEX_ALLOCATION, &i30)
            .ok_or_else(|| corrupt("index $BITMAP without $INDEX_ALLOCATION"))?;
        let ibs = attr_value(
            r.get(AT_INDEX_ROOT, &i30)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        );
        let ibs = le32(ibs, 8).max(512) as u64;
        let blocks = le64(ia, 0x30) / ibs;
        let bytes = (blocks.div_ceil(8) as usize).div_ceil(8).max(1) * 8;
        let mut v = vec![0u8; bytes];
        for b in 0..used {
            if let Some(x) = v.get_mut(b / 8) {
                *x |= 1 << (b % 8);
            }
        }
        match r.find(AT_BITMAP, &i30) {
            Some(i) => {
                let old = r.attrs.get(i).cloned().unwrap_or_default();
                if attr_nonres(&old) {
                    let (runs, _) = self.nonres_runs(r, AT_BITMAP, &i30, "index $BITMAP")?;
                    let alloc = le64(&old, 0x28);
                    if v.len() as u64 > alloc {
                        return Err(Error::unsupported(
                            "NTFS: a non-resident index $BITMAP would need to grow (not supported)",
                        ));
                    }
                    let mut full = vec![0u8; le64(&old, 0x30).max(v.len() as u64) as usize];
                    put(&mut full, 0, &v);
                    self.stream_write(&runs, 0, &full)?;
                    let mut a = old.clone();
                    w64(&mut a, 0x30, full.len() as u64);
                    w64(&mut a, 0x38, full.len() as u64);
                    r.replace(i, a);
                } else {
                    r.replace(i, resident_attr(AT_BITMAP, &i30, &v, false));
                }
            }
            None => r.insert(resident_attr(AT_BITMAP, &i30, &v, false)),
        }
        Ok(())
    }

    // ---- operations ---------------------------------------------------------

    fn split(path: &str) -> Result<(String, String)> {
        let comps: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let Some((last, parent)) = comps.split_last() else {
            return Err(Error::invalid(
                "NTFS: the root directory cannot be replaced",
            ));
        };
        if comps.contains(&"..") {
            return Err(Error::invalid(format!("NTFS: {path}: '..' in a path")));
        }
        Ok((format!("/{}", parent.join("/")), (*last).to_string()))
    }

    fn mkdir_p(&mut self, path: &str, log: &mut Vec<String>) -> Result<u64> {
        let mut cur = super::ROOT_RECORD;
        let mut done = String::new();
        for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            done.push('/');
            done.push_str(c);
            cur = match self.find_in_dir(cur, c)? {
                Some((rec, true)) => rec,
                Some((_, false)) => {
                    return Err(Error::invalid(format!(
                        "NTFS: {done} exists and is not a directory"
                    )))
                }
                None => {
                    let rec = self.create(cur, c, None)?;
                    log.push(format!("mkdir {done}"));
                    rec
                }
            };
        }
        Ok(cur)
    }

    fn validate_name(name: &str) -> Result<Vec<u16>> {
        let n = utf16(name);
        if n.is_empty() || n.len() > 255 || name.contains('\0') || name == ".." {
            return Err(Error::invalid(format!("NTFS: invalid file name {name:?}")));
        }
        Ok(n)
    }

    /// Standard information value (v3, 72 bytes).
    fn std_info(&self, attrs: u32, security_id: u32) -> Vec<u8> {
        let mut v = vec![0u8; 72];
        for o in [0, 8, 16, 24] {
            w64(&mut v, o, self.now);
        }
        w32(&mut v, 0x20, attrs);
        w32(&mut v, 0x34, security_id);
        v
    }

    fn file_name(
        &self,
        parent_ref: u64,
        name: &[u16],
        ns: u8,
        alloc: u64,
        size: u64,
        attrs: u32,
    ) -> Vec<u8> {
        let mut v = vec![0u8; 0x42 + 2 * name.len()];
        w64(&mut v, 0, parent_ref);
        for o in [8, 16, 24, 32] {
            w64(&mut v, o, self.now);
        }
        w64(&mut v, 0x28, alloc);
        w64(&mut v, 0x30, size);
        w32(&mut v, 0x38, attrs);
        put(&mut v, 0x40, &[name.len() as u8, ns]);
        put(&mut v, 0x42, &utf16_bytes(name));
        v
    }

    /// Build the `$DATA` attribute for `data` into `r` (replacing `old_runs`'
    /// clusters: reused first, surplus freed). Returns (allocated, size).
    fn set_data(&mut self, r: &mut Record, data: &[u8], old_runs: Vec<Run>) -> Result<(u64, u64)> {
        let len = data.len() as u64;
        let di = r.find(AT_DATA, &[]);
        // Resident when it fits.
        let mut trial = r.clone();
        let res = resident_attr(AT_DATA, &[], data, false);
        match di {
            Some(i) => trial.replace(i, res),
            None => trial.insert(res),
        }
        if trial.fits() {
            self.free_runs(&old_runs);
            *r = trial;
            return Ok((align8(data.len()) as u64, len));
        }
        let need = len.div_ceil(self.cs);
        let mut runs = Vec::new();
        let mut have = 0u64;
        let mut surplus = Vec::new();
        for mut run in old_runs {
            if run.lcn.is_none() {
                return Err(Error::unsupported("NTFS: sparse data runs"));
            }
            if have >= need {
                surplus.push(run);
                continue;
            }
            if have + run.len > need {
                let keep = need - have;
                surplus.push(Run {
                    vcn: 0,
                    lcn: run.lcn.map(|l| l + keep),
                    len: run.len - keep,
                });
                run.len = keep;
            }
            have += run.len;
            runs.push(run);
        }
        self.free_runs(&surplus);
        if have < need {
            let near = runs.last().and_then(|x| x.lcn.map(|l| l + x.len));
            runs.extend(self.alloc(need - have, near)?);
        }
        let runs = normalize(runs);
        let a = nonres_attr(AT_DATA, &[], &runs, self.cs, len);
        match r.find(AT_DATA, &[]) {
            Some(i) => r.replace(i, a),
            None => r.insert(a),
        }
        if !r.fits() {
            return Err(Error::unsupported(format!(
                "NTFS: the {} data runs of a {len}-byte file do not fit its MFT record (an attribute list is not supported)",
                runs.len()
            )));
        }
        let mut padded = data.to_vec();
        padded.resize((need * self.cs) as usize, 0);
        self.stream_write(&runs, 0, &padded)?;
        Ok((need * self.cs, len))
    }

    /// Create `name` in directory `parent`: a file with `data`, or a directory.
    fn create(&mut self, parent: u64, name: &str, data: Option<&[u8]>) -> Result<u64> {
        let uname = Self::validate_name(name)?;
        let ns = namespace_for(name);
        let pr = self.record(parent)?;
        let parent_ref = parent | (u64::from(pr.seq()) << 48);
        let psi = pr
            .get(AT_STANDARD_INFORMATION, &[])
            .map(|a| attr_value(a).to_vec())
            .unwrap_or_default();
        let sec_id = if psi.len() >= 72 { le32(&psi, 0x34) } else { 0 };
        let sd = if sec_id == 0 {
            Some(
                pr.get(AT_SECURITY_DESCRIPTOR, &[])
                    .filter(|a| !attr_nonres(a) && attr_value(a).len() <= MAX_COPIED_SD)
                    .map(|a| attr_value(a).to_vec())
                    .unwrap_or_else(default_sd),
            )
        } else {
            None
        };
        let n = self.alloc_record()?;
        let raw = self.record_raw(n)?;
        let seq = if sub(&raw, 0, 4) == b"FILE" {
            le16(&raw, 0x10).max(1)
        } else {
            1
        };
        let mut r = self.empty_record(n, seq);
        let is_dir = data.is_none();
        let fattrs = if is_dir { 0 } else { FILE_ATTR_ARCHIVE };
        r.set_flags(MFT_IN_USE | if is_dir { MFT_DIRECTORY } else { 0 });
        r.insert(resident_attr(
            AT_STANDARD_INFORMATION,
            &[],
            &self.std_info(fattrs, sec_id),
            false,
        ));
        let fn_attrs = fattrs | if is_dir { FILE_ATTR_DUP_I30 } else { 0 };
        let placeholder = self.file_name(parent_ref, &uname, ns, 0, 0, fn_attrs);
        r.insert(resident_attr(AT_FILE_NAME, &[], &placeholder, true));
        if let Some(sd) = &sd {
            r.insert(resident_attr(AT_SECURITY_DESCRIPTOR, &[], sd, false));
        }
        let (alloc, size) = match data {
            Some(d) => self.set_data(&mut r, d, Vec::new())?,
            None => {
                let mut v = vec![0u8; 0x20];
                w32(&mut v, 0, AT_FILE_NAME);
                w32(&mut v, 4, COLLATION_FILE_NAME);
                let ibs = self.dir_ibs(&pr);
                w32(&mut v, 8, ibs as u32);
                let cpb = if ibs as u64 >= self.cs {
                    (ibs as u64 / self.cs) as u8
                } else {
                    (ibs / 512) as u8
                };
                put(&mut v, 12, &[cpb]);
                let nb = node_bytes(&[], None);
                w32(&mut v, 0x10, 0x10);
                w32(&mut v, 0x14, (0x10 + nb.len()) as u32);
                w32(&mut v, 0x18, (0x10 + nb.len()) as u32);
                v.extend_from_slice(&nb);
                r.insert(resident_attr(AT_INDEX_ROOT, &utf16("$I30"), &v, false));
                (0, 0)
            }
        };
        let key = self.file_name(parent_ref, &uname, ns, alloc, size, fn_attrs);
        if let Some(i) = r.find(AT_FILE_NAME, &[]) {
            r.replace(i, resident_attr(AT_FILE_NAME, &[], &key, true));
        }
        self.write_record(n, &r)?;
        let mut entries = self.dir_entries(parent)?;
        entries.push(IEntry {
            fileref: n | (u64::from(seq) << 48),
            key,
        });
        self.write_index(parent, entries)?;
        Ok(n)
    }

    fn dir_ibs(&self, parent: &Record) -> usize {
        parent
            .get(AT_INDEX_ROOT, &utf16("$I30"))
            .map(|a| le32(attr_value(a), 8) as usize)
            .filter(|v| (512..=65536).contains(v) && v.is_power_of_two())
            .unwrap_or(4096)
    }

    /// Refuse records this writer cannot edit safely.
    fn check_editable(&self, r: &Record, path: &str) -> Result<()> {
        if r.has(AT_ATTRIBUTE_LIST) {
            return Err(Error::unsupported(format!(
                "NTFS: {path} has an attribute list (not supported)"
            )));
        }
        let si = r
            .get(AT_STANDARD_INFORMATION, &[])
            .map(|a| attr_value(a).to_vec())
            .unwrap_or_default();
        if le32(&si, 0x20) & FILE_ATTR_REPARSE_POINT != 0 {
            return Err(Error::unsupported(format!(
                "NTFS: {path} is a reparse point (link, junction, dedup or WOF file)"
            )));
        }
        for a in &r.attrs {
            if attr_type(a) == AT_DATA {
                let f = attr_flags(a);
                let what = if f & ATTR_ENCRYPTED != 0 {
                    "encrypted"
                } else if f & ATTR_SPARSE != 0 {
                    "sparse"
                } else if f & ATTR_COMPRESSED != 0 {
                    "compressed"
                } else {
                    continue;
                };
                return Err(Error::unsupported(format!(
                    "NTFS: {path} is {what} (not supported by the writer)"
                )));
            }
        }
        let links = r
            .attrs
            .iter()
            .filter(|a| attr_type(a) == AT_FILE_NAME && u8_at(attr_value(a), 0x41) != NS_DOS)
            .count();
        if links > 1 {
            return Err(Error::unsupported(format!(
                "NTFS: {path} has {links} hard links (not supported)"
            )));
        }
        Ok(())
    }

    fn write_file(&mut self, path: &str, data: &[u8], log: &mut Vec<String>) -> Result<()> {
        let (parent_path, name) = Self::split(path)?;
        let parent = self.mkdir_p(&parent_path, log)?;
        match self.find_in_dir(parent, &name)? {
            Some((_, true)) => Err(Error::invalid(format!("NTFS: {path} is a directory"))),
            Some((rec, false)) => {
                self.replace(rec, path, data)?;
                log.push(format!("replace {path} ({} bytes)", data.len()));
                Ok(())
            }
            None => {
                self.create(parent, &name, Some(data))?;
                log.push(format!("create {path} ({} bytes)", data.len()));
                Ok(())
            }
        }
    }

    fn replace(&mut self, rec: u64, path: &str, data: &[u8]) -> Result<()> {
        if rec < 16 {
            return Err(Error::invalid(format!("NTFS: {path} is a system file")));
        }
        let mut r = self.record(rec)?;
        self.check_editable(&r, path)?;
        let old_runs = match r.get(AT_DATA, &[]) {
            Some(a) if attr_nonres(a) => {
                self.nonres_runs(&r, AT_DATA, &[], &format!("$DATA of {path}"))?
                    .0
            }
            _ => Vec::new(),
        };
        let (alloc, size) = self.set_data(&mut r, data, old_runs)?;
        let now = self.now;
        self.stamp(rec, r, Some((alloc, size)), now, now)
    }

    /// Write record `rec` with new times (and sizes) in `$STANDARD_INFORMATION`,
    /// every `$FILE_NAME`, and the parents' index entries for it.
    fn stamp(
        &mut self,
        rec: u64,
        mut r: Record,
        sizes: Option<(u64, u64)>,
        mtime: u64,
        atime: u64,
    ) -> Result<()> {
        let now = self.now;
        let set = |v: &mut Vec<u8>, base: usize| {
            w64(v, base + 8, mtime);
            w64(v, base + 16, now);
            w64(v, base + 24, atime);
        };
        if let Some(i) = r.find(AT_STANDARD_INFORMATION, &[]) {
            let mut v = attr_value(r.attrs.get(i).map(Vec::as_slice).unwrap_or_default()).to_vec();
            set(&mut v, 0);
            r.replace(i, resident_attr(AT_STANDARD_INFORMATION, &[], &v, false));
        }
        let fix_key = |v: &mut Vec<u8>| {
            if let Some((alloc, size)) = sizes {
                w64(v, 0x28, alloc);
                w64(v, 0x30, size);
            }
            set(v, 8);
        };
        let mut parents = BTreeSet::new();
        let fns: Vec<usize> = (0..r.attrs.len())
            .filter(|&i| r.attrs.get(i).is_some_and(|a| attr_type(a) == AT_FILE_NAME))
            .collect();
        for i in fns {
            let mut v = attr_value(r.attrs.get(i).map(Vec::as_slice).unwrap_or_default()).to_vec();
            fix_key(&mut v);
            parents.insert(le64(&v, 0) & 0x0000_FFFF_FFFF_FFFF);
            r.replace(i, resident_attr(AT_FILE_NAME, &[], &v, true));
        }
        self.write_record(rec, &r)?;
        for p in parents {
            let mut entries = self.dir_entries(p)?;
            for e in entries.iter_mut().filter(|e| e.record() == rec) {
                fix_key(&mut e.key);
            }
            self.write_index(p, entries)?;
        }
        Ok(())
    }

    fn set_times(
        &mut self,
        path: &str,
        atime: i64,
        mtime: i64,
        log: &mut Vec<String>,
    ) -> Result<()> {
        let (rec, _) = self
            .lookup(path)?
            .ok_or_else(|| Error::invalid(format!("NTFS: no such file: {path}")))?;
        if rec < 16 {
            return Err(Error::invalid(format!("NTFS: {path} is a system file")));
        }
        let r = self.record(rec)?;
        self.check_editable(&r, path)?;
        self.stamp(rec, r, None, filetime_signed(mtime), filetime_signed(atime))?;
        log.push(format!("set times of {path}"));
        Ok(())
    }

    fn delete(&mut self, path: &str, log: &mut Vec<String>) -> Result<()> {
        let (parent_path, name) = Self::split(path)?;
        let Some((parent, true)) = self.lookup(&parent_path)? else {
            log.push(format!("delete {path}: absent"));
            return Ok(());
        };
        let Some((rec, is_dir)) = self.find_in_dir(parent, &name)? else {
            log.push(format!("delete {path}: absent"));
            return Ok(());
        };
        if rec < 16 {
            return Err(Error::invalid(format!("NTFS: {path} is a system file")));
        }
        let mut r = self.record(rec)?;
        self.check_editable(&r, path)?;
        if is_dir && !self.dir_entries(rec)?.is_empty() {
            return Err(Error::invalid(format!(
                "NTFS: directory {path} is not empty"
            )));
        }
        let mut runs = Vec::new();
        for a in &r.attrs {
            if attr_nonres(a) {
                runs.extend(decode_runs(mapping_pairs(a), self.clusters, path)?);
            }
        }
        self.free_runs(&runs);
        let flags = r.flags() & !MFT_IN_USE;
        r.set_flags(flags);
        let mut seq = r.seq().wrapping_add(1);
        if seq == 0 {
            seq = 1;
        }
        w16(&mut r.hdr, 0x10, seq);
        self.write_record(rec, &r)?;
        self.set_mft_bit(rec, false);
        let entries: Vec<IEntry> = self
            .dir_entries(parent)?
            .into_iter()
            .filter(|e| e.record() != rec)
            .collect();
        self.write_index(parent, entries)?;
        log.push(format!("delete {path}"));
        Ok(())
    }

    /// Apply one action.
    pub fn apply_action(&mut self, a: &FsAction, log: &mut Vec<String>) -> Result<()> {
        match a {
            FsAction::Mkdir { path, .. } => self.mkdir_p(path, log).map(|_| ()),
            FsAction::WriteFile { path, data, .. } => self.write_file(path, data, log),
            FsAction::Delete { path } => self.delete(path, log),
            FsAction::SetTimes { path, atime, mtime } => self.set_times(path, *atime, *mtime, log),
            other => Err(Error::unsupported(format!(
                "the NTFS writer cannot {} (NTFS has no POSIX modes, owners, symlinks or xattrs here)",
                other.describe()
            ))),
        }
    }

    /// Write the cluster bitmap and `$MFT` bitmap changes. Call once at the end.
    pub fn finish(mut self) -> Result<()> {
        let dirty = std::mem::take(&mut self.bitmap_dirty);
        for chunk in dirty {
            let off = chunk * 4096;
            let end = (off + 4096).min(self.bitmap.len());
            self.stream_write(
                &self.bitmap_runs,
                off as u64,
                sub(&self.bitmap, off, end - off),
            )?;
        }
        if self.mft_bitmap_dirty {
            let mut m = self.record(0)?;
            let i = m
                .find(AT_BITMAP, &[])
                .ok_or_else(|| corrupt("$MFT has no $BITMAP"))?;
            let a = m.attrs.get(i).cloned().unwrap_or_default();
            if attr_nonres(&a) {
                let (runs, size) = self.nonres_runs(&m, AT_BITMAP, &[], "$MFT $BITMAP")?;
                let n = (size as usize).min(self.mft_bitmap.len());
                self.stream_write(&runs, 0, sub(&self.mft_bitmap, 0, n))?;
            } else {
                let v = self.mft_bitmap.clone();
                m.replace(i, resident_attr(AT_BITMAP, &[], &v, false));
                self.write_record(0, &m)?;
            }
        }
        Ok(())
    }
}

fn parse_node_flags_children(nb: &[u8]) -> bool {
    // The end entry is last; its NODE flag says whether the node has children.
    let mut p = 0usize;
    loop {
        let len = usize::from(le16(nb, p + 8));
        let flags = le16(nb, p + 12);
        if flags & INDEX_ENTRY_END != 0 || len == 0 {
            return flags & INDEX_ENTRY_NODE != 0;
        }
        p += len;
    }
}

impl crate::fs::write::FsWriter for NtfsWriter {
    fn apply_one(&mut self, action: &FsAction, log: &mut Vec<String>) -> Result<()> {
        self.apply_action(action, log)
    }
    fn finish(self) -> Result<()> {
        NtfsWriter::finish(self)
    }
}

/// Apply `actions` to the NTFS volume `dev`; returns a log line per change.
pub fn apply(dev: &VolumeDev, actions: &[FsAction]) -> Result<Vec<String>> {
    crate::fs::write::run(NtfsWriter::open(dev.clone())?, actions)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn mapping_pairs_round_trip() {
        let runs = vec![
            Run {
                vcn: 0,
                lcn: Some(0x1000),
                len: 0x80,
            },
            Run {
                vcn: 0x80,
                lcn: Some(0x20),
                len: 1,
            },
            Run {
                vcn: 0x81,
                lcn: None,
                len: 0x10,
            },
            Run {
                vcn: 0x91,
                lcn: Some(0x7F_FFFF),
                len: 0x1_0000,
            },
            Run {
                vcn: 0x1_0091,
                lcn: Some(0x7F),
                len: 3,
            },
        ];
        let mp = encode_runs(&runs);
        // 0x80 clusters need a second length byte (lengths are signed-safe).
        assert_eq!(&mp[..5], &[0x22, 0x80, 0x00, 0x00, 0x10]);
        assert_eq!(decode_runs(&mp, 1 << 30, "t").unwrap(), runs);
        // A one-byte negative delta: 0x1000 then -0x80.
        let d = decode_runs(&[0x21, 1, 0x00, 0x10, 0x11, 1, 0x80, 0], 1 << 20, "t").unwrap();
        assert_eq!(d[1].lcn, Some(0xF80));
        assert!(decode_runs(&[0x21, 1], 100, "t").is_err());
        assert!(decode_runs(&[0x11, 5, 200, 0], 100, "t").is_err());
    }

    #[test]
    fn namespaces() {
        assert_eq!(namespace_for("SYSTEM"), NS_WIN32_AND_DOS);
        assert_eq!(namespace_for("README.TXT"), NS_WIN32_AND_DOS);
        assert_eq!(namespace_for("readme.txt"), NS_WIN32);
        assert_eq!(namespace_for("SetupComplete.cmd"), NS_WIN32);
        assert_eq!(namespace_for("LONGNAME9.TXT"), NS_WIN32);
        assert_eq!(namespace_for("A.B.C"), NS_WIN32);
        assert_eq!(namespace_for("a:b"), NS_POSIX);
        assert_eq!(namespace_for("trailing."), NS_POSIX);
    }

    #[test]
    fn fixups_round_trip_and_detect_torn_writes() {
        let mut b = vec![0u8; 1024];
        b[..4].copy_from_slice(b"FILE");
        w16(&mut b, 4, 0x30);
        w16(&mut b, 6, 3);
        b[510] = 0xAB;
        b[1023] = 0xCD;
        let orig = b.clone();
        fix(&mut b);
        assert_eq!(le16(&b, 510), le16(&b, 0x30));
        let mut c = b.clone();
        unfix(&mut c, "t").unwrap();
        assert_eq!(&c[..0x30], &orig[..0x30]);
        assert_eq!(&c[0x36..], &orig[0x36..]);
        b[1022] ^= 1;
        assert!(unfix(&mut b, "t").is_err());
    }
}
