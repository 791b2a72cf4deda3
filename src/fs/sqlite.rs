//! A minimal, read-only reader for SQLite 3 database files held in memory:
//! enough to find a table by name in `sqlite_schema` and walk its rows.
//! Used for the rpm package database (`rpmdb.sqlite`, RHEL 9 / Fedora 33+),
//! see [`crate::guest::rpmdb`].
//!
//! Format: <https://www.sqlite.org/fileformat2.html>. What is read:
//! - the 100-byte database header (§1.3): magic, page size, reserved bytes;
//! - table b-tree pages (§1.6): interior (type 5) and leaf (type 13) pages,
//!   their cell pointer arrays and cells; index b-trees are never visited;
//! - payload overflow chains (§1.6 "overflow pages", local-size formula);
//! - the record format (§2.1): header of serial-type varints, then values.
//!
//! Not read: the write-ahead log (`-wal` file; callers say when one is not
//! empty), freelists, pointer maps, index b-trees, `WITHOUT ROWID` tables.
//!
//! Every page number is checked against the file, every walk is bounded
//! ([`limits::MAX_SQLITE_BTREE_DEPTH`], a visited-page set,
//! [`limits::MAX_SQLITE_ROWS`], [`limits::MAX_SQLITE_PAYLOAD_BYTES`]), and
//! damage is an [`Error::corrupt`] naming the page and field — never a panic.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use crate::error::{Error, Result};
use crate::limits;
use std::collections::HashSet;

/// "SQLite format 3\0" (fileformat2 §1.3, offset 0).
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Size of the database header at the start of page 1 (§1.3).
const HEADER_LEN: usize = 100;
/// B-tree page types (§1.6, first byte of the page header).
const PAGE_TABLE_INTERIOR: u8 = 5;
const PAGE_TABLE_LEAF: u8 = 13;

/// One column value of a record (§2.1 serial types).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Serial type 0.
    Null,
    /// Serial types 1–6, 8 and 9.
    Int(i64),
    /// Serial type 7.
    Float(f64),
    /// Serial types N ≥ 13, odd: text of (N-13)/2 bytes (encoding as stored).
    Text(Vec<u8>),
    /// Serial types N ≥ 12, even: blob of (N-12)/2 bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// Text or blob bytes, if the value is one.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Text(b) | Value::Blob(b) => Some(b),
            _ => None,
        }
    }
    /// The integer, if the value is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A SQLite database file read into memory.
pub struct Database<'a> {
    buf: &'a [u8],
    page_size: usize,
    usable: usize,
    pages: u32,
}

fn corrupt(
    structure: &str,
    field: &str,
    off: usize,
    expected: &str,
    found: impl std::fmt::Display,
) -> Error {
    Error::corrupt(
        format!("sqlite {structure}"),
        field,
        u64::try_from(off).unwrap_or(u64::MAX),
        expected,
        found,
    )
}

fn slice<'b>(b: &'b [u8], off: usize, len: usize, what: &str) -> Result<&'b [u8]> {
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .ok_or_else(|| {
            corrupt(
                what,
                "extent",
                off,
                &format!("{len} bytes inside {} bytes", b.len()),
                "past the end",
            )
        })
}

fn be16(b: &[u8], off: usize, what: &str) -> Result<usize> {
    let s = slice(b, off, 2, what)?;
    Ok(usize::from(u16::from_be_bytes([
        s.first().copied().unwrap_or(0),
        s.get(1).copied().unwrap_or(0),
    ])))
}

fn be32(b: &[u8], off: usize, what: &str) -> Result<u32> {
    let s = slice(b, off, 4, what)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Ok(u32::from_be_bytes(a))
}

/// Read a varint (§1.6 "variable-length integer"): 1–9 bytes, big-endian,
/// seven bits per byte with the high bit as "more follows", except that the
/// ninth byte contributes all eight bits. Returns (value, bytes used).
pub fn varint(b: &[u8], off: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9usize {
        let byte = *b.get(off.checked_add(i)?)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, i.checked_add(1)?));
        }
    }
    None
}

impl<'a> Database<'a> {
    /// Check the header of an in-memory database file.
    pub fn open(buf: &'a [u8]) -> Result<Self> {
        let magic = slice(buf, 0, MAGIC.len(), "database header")?;
        if magic != MAGIC {
            return Err(corrupt(
                "database header",
                "magic",
                0,
                "\"SQLite format 3\\0\"",
                format!("{:02x?}", magic),
            ));
        }
        // §1.3.2: offset 16, a power of two in 512..=32768, or 1 meaning 65536.
        let raw = be16(buf, 16, "database header")?;
        let page_size = if raw == 1 { 65536 } else { raw };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(corrupt(
                "database header",
                "page size",
                16,
                "a power of two from 512 to 65536",
                raw,
            ));
        }
        // §1.3.4: reserved bytes at the end of each page (offset 20); the
        // usable size must stay at least 480.
        let reserved = usize::from(*buf.get(20).unwrap_or(&0));
        let usable = page_size.saturating_sub(reserved);
        if usable < 480 {
            return Err(corrupt(
                "database header",
                "reserved bytes per page",
                20,
                "a usable page size of at least 480",
                reserved,
            ));
        }
        // The page count: whole pages present in the file (the header's own
        // count at offset 28 may be stale, §1.3.7; the file cannot hold more).
        let pages =
            u32::try_from(buf.len().checked_div(page_size).unwrap_or(0)).unwrap_or(u32::MAX);
        Ok(Database {
            buf,
            page_size,
            usable,
            pages,
        })
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The bytes of page `n` (1-based), checked against the file.
    fn page(&self, n: u32, what: &str) -> Result<&'a [u8]> {
        if n == 0 || n > self.pages {
            return Err(corrupt(
                what,
                "page number",
                0,
                &format!("1..={}", self.pages),
                n,
            ));
        }
        let start = usize::try_from(n.saturating_sub(1))
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or_else(|| {
                Error::corrupt_msg(format!("sqlite page {n} beyond addressable memory"))
            })?;
        slice(self.buf, start, self.page_size, what)
    }

    fn page_offset(&self, n: u32) -> usize {
        usize::try_from(n.saturating_sub(1))
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .unwrap_or(usize::MAX)
    }

    /// Root page of the table named `name` (case-insensitive, as SQLite
    /// compares identifiers), from `sqlite_schema` (root page 1, §2.6).
    pub fn table_root(&self, name: &str) -> Result<Option<u32>> {
        let mut found = None;
        self.for_each_row(1, &mut |_, cols| {
            // Columns: type, name, tbl_name, rootpage, sql.
            let is_table = cols.first().and_then(Value::bytes) == Some(b"table");
            let n = cols.get(1).and_then(Value::bytes).unwrap_or(b"");
            if is_table && n.eq_ignore_ascii_case(name.as_bytes()) && found.is_none() {
                let root = cols.get(3).and_then(Value::int).unwrap_or(0);
                found = Some(
                    u32::try_from(root)
                        .map_err(|_| corrupt("schema", "rootpage", 0, "a page number", root))?,
                );
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Call `f(rowid, columns)` for every row of the table b-tree rooted at
    /// `root`, in rowid order. Bounded by [`limits::MAX_SQLITE_ROWS`],
    /// [`limits::MAX_SQLITE_BTREE_DEPTH`] and a visited-page set (a page
    /// reached twice is a loop and corrupt).
    pub fn for_each_row(
        &self,
        root: u32,
        f: &mut dyn FnMut(i64, Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let mut visited = HashSet::new();
        let mut rows = 0usize;
        self.walk(root, 0, &mut visited, &mut rows, f)
    }

    fn walk(
        &self,
        n: u32,
        depth: usize,
        visited: &mut HashSet<u32>,
        rows: &mut usize,
        f: &mut dyn FnMut(i64, Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        if depth >= limits::MAX_SQLITE_BTREE_DEPTH {
            return Err(corrupt(
                "table b-tree",
                "depth",
                self.page_offset(n),
                &format!("at most {}", limits::MAX_SQLITE_BTREE_DEPTH),
                depth,
            ));
        }
        if !visited.insert(n) {
            return Err(corrupt(
                "table b-tree",
                "child page",
                self.page_offset(n),
                "each page once",
                format!("page {n} again (loop)"),
            ));
        }
        let page = self.page(n, "table b-tree page")?;
        let base = self.page_offset(n);
        // Page 1 starts with the database header; its b-tree header follows.
        let hdr = if n == 1 { HEADER_LEN } else { 0 };
        let kind = *page.get(hdr).unwrap_or(&0);
        let header_len = match kind {
            PAGE_TABLE_LEAF => 8,
            PAGE_TABLE_INTERIOR => 12,
            other => {
                return Err(corrupt(
                    "table b-tree page",
                    "page type",
                    base.saturating_add(hdr),
                    "5 (table interior) or 13 (table leaf)",
                    other,
                ))
            }
        };
        let cells = be16(page, hdr.saturating_add(3), "b-tree page header")?;
        let ptrs = hdr.saturating_add(header_len);
        // Each cell pointer takes two bytes of the page.
        if cells.saturating_mul(2) > self.usable.saturating_sub(ptrs) {
            return Err(corrupt(
                "table b-tree page",
                "number of cells",
                base.saturating_add(hdr).saturating_add(3),
                "pointers that fit the page",
                cells,
            ));
        }
        let usable_page = page.get(..self.usable).unwrap_or(page);
        for i in 0..cells {
            let at = ptrs.saturating_add(i.saturating_mul(2));
            let cell = be16(usable_page, at, "cell pointer array")?;
            if cell < ptrs || cell >= self.usable {
                return Err(corrupt(
                    "table b-tree page",
                    "cell pointer",
                    base.saturating_add(at),
                    &format!("an offset inside the cell area ({ptrs}..{})", self.usable),
                    cell,
                ));
            }
            if kind == PAGE_TABLE_INTERIOR {
                // Interior cell: 4-byte left child page, varint rowid key.
                let child = be32(usable_page, cell, "interior cell")?;
                self.walk(child, depth.saturating_add(1), visited, rows, f)?;
            } else {
                let (rowid, record) = self.leaf_cell(usable_page, base, cell)?;
                *rows = rows.saturating_add(1);
                if *rows > limits::MAX_SQLITE_ROWS {
                    return Err(Error::unsupported(format!(
                        "sqlite table has more than {} rows",
                        limits::MAX_SQLITE_ROWS
                    )));
                }
                let cols = parse_record(&record).map_err(|e| {
                    Error::corrupt_msg(format!(
                        "sqlite record of row {rowid} (page {n}, cell at byte {}): {e}",
                        base.saturating_add(cell)
                    ))
                })?;
                f(rowid, cols)?;
            }
        }
        if kind == PAGE_TABLE_INTERIOR {
            let right = be32(usable_page, hdr.saturating_add(8), "b-tree page header")?;
            self.walk(right, depth.saturating_add(1), visited, rows, f)?;
        }
        Ok(())
    }

    /// A table leaf cell (§1.6): varint payload size, varint rowid, the local
    /// part of the payload, then (if it spilled) the first overflow page.
    fn leaf_cell(&self, page: &[u8], base: usize, cell: usize) -> Result<(i64, Vec<u8>)> {
        let at = base.saturating_add(cell);
        let (size, a) = varint(page, cell).ok_or_else(|| {
            corrupt(
                "table leaf cell",
                "payload size",
                at,
                "a varint",
                "truncated",
            )
        })?;
        let (rowid, b) = varint(page, cell.saturating_add(a))
            .ok_or_else(|| corrupt("table leaf cell", "rowid", at, "a varint", "truncated"))?;
        // The rowid is a 64-bit two's-complement integer stored as a varint.
        let rowid = i64::from_be_bytes(rowid.to_be_bytes());
        let max =
            limits::MAX_SQLITE_PAYLOAD_BYTES.min(u64::try_from(self.buf.len()).unwrap_or(u64::MAX));
        if size > max {
            return Err(corrupt(
                "table leaf cell",
                "payload size",
                at,
                &format!("at most {max} bytes"),
                size,
            ));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let start = cell.saturating_add(a).saturating_add(b);
        let local = self.local_payload(size);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(slice(page, start, local, "table leaf cell payload")?);
        if local < size {
            let mut next = be32(
                page,
                start.saturating_add(local),
                "table leaf cell overflow pointer",
            )?;
            let chunk = self.usable.saturating_sub(4);
            // Exactly as many overflow pages as the remaining bytes need:
            // the chain length is bounded by the payload size, so no loop.
            while out.len() < size {
                if next == 0 {
                    return Err(corrupt(
                        "overflow chain",
                        "next page",
                        at,
                        &format!("{} more payload bytes", size.saturating_sub(out.len())),
                        "end of chain (0)",
                    ));
                }
                let p = self.page(next, "overflow page")?;
                let take = chunk.min(size.saturating_sub(out.len()));
                out.extend_from_slice(slice(p, 4, take, "overflow page")?);
                next = be32(p, 0, "overflow page")?;
            }
        }
        Ok((rowid, out))
    }

    /// Bytes of a table-leaf payload of `p` bytes stored on the b-tree page
    /// itself (§1.6): all of it up to X = U-35; otherwise K = M+((P-M) mod
    /// (U-4)) if K ≤ X, else M, with M = ((U-12)·32/255)-23.
    fn local_payload(&self, p: usize) -> usize {
        let u = self.usable;
        let x = u.saturating_sub(35);
        if p <= x {
            return p;
        }
        let m = (u.saturating_sub(12).saturating_mul(32) / 255).saturating_sub(23);
        let k = m.saturating_add(
            p.saturating_sub(m)
                .checked_rem(u.saturating_sub(4))
                .unwrap_or(0),
        );
        if k <= x {
            k
        } else {
            m
        }
    }
}

/// Decode a record (§2.1): varint header size (including itself), serial
/// types, then the values in order.
pub fn parse_record(rec: &[u8]) -> Result<Vec<Value>> {
    let bad = |field: &str, off: usize, expected: &str, found: String| {
        corrupt("record", field, off, expected, found)
    };
    let (hlen, mut pos) =
        varint(rec, 0).ok_or_else(|| bad("header size", 0, "a varint", "truncated".into()))?;
    let hlen = usize::try_from(hlen).unwrap_or(usize::MAX);
    if hlen > rec.len() || hlen < pos {
        return Err(bad(
            "header size",
            0,
            &format!("{pos}..={}", rec.len()),
            hlen.to_string(),
        ));
    }
    let mut body = hlen;
    let mut out = Vec::new();
    while pos < hlen {
        let (t, used) = varint(rec, pos)
            .ok_or_else(|| bad("serial type", pos, "a varint", "truncated".into()))?;
        pos = pos.saturating_add(used);
        if out.len() >= limits::MAX_SQLITE_COLUMNS {
            return Err(bad(
                "header",
                0,
                &format!("at most {} columns", limits::MAX_SQLITE_COLUMNS),
                "more".into(),
            ));
        }
        let int_len = match t {
            1 => Some(1),
            2 => Some(2),
            3 => Some(3),
            4 => Some(4),
            5 => Some(6),
            6 => Some(8),
            _ => None,
        };
        let v = if let Some(n) = int_len {
            let s = slice(rec, body, n, "record value")?;
            body = body.saturating_add(n);
            // Big-endian two's complement of n bytes, sign-extended.
            let neg = s.first().is_some_and(|b| b & 0x80 != 0);
            let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
            if let Some(dst) = a.get_mut(8usize.saturating_sub(n)..) {
                dst.copy_from_slice(s);
            }
            Value::Int(i64::from_be_bytes(a))
        } else {
            match t {
                0 => Value::Null,
                7 => {
                    let s = slice(rec, body, 8, "record value")?;
                    body = body.saturating_add(8);
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    Value::Float(f64::from_be_bytes(a))
                }
                8 => Value::Int(0),
                9 => Value::Int(1),
                10 | 11 => {
                    return Err(bad("serial type", pos, "0-9 or at least 12", t.to_string()))
                }
                _ => {
                    let n = usize::try_from(t.saturating_sub(12) / 2).unwrap_or(usize::MAX);
                    let s = slice(rec, body, n, "record value")?.to_vec();
                    body = body.saturating_add(n);
                    if t % 2 == 0 {
                        Value::Blob(s)
                    } else {
                        Value::Text(s)
                    }
                }
            }
        };
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05], 0), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00], 0), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81], 0), None);
    }

    #[test]
    fn records() {
        // header 4 bytes: [4, NULL, int8, text len 2 (17)], body: 0xfe "hi"
        let r = parse_record(&[4, 0, 1, 17, 0xfe, b'h', b'i']).unwrap();
        assert_eq!(
            r,
            vec![Value::Null, Value::Int(-2), Value::Text(b"hi".to_vec())]
        );
        assert!(parse_record(&[4, 0, 1, 19, 0xfe, b'h', b'i']).is_err());
        assert!(parse_record(&[9, 0]).is_err());
        assert!(parse_record(&[2, 10]).is_err());
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(Database::open(b"nope").is_err());
        let mut h = vec![0u8; 4096];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert!(Database::open(&h).is_err());
        h[16..18].copy_from_slice(&4096u16.to_be_bytes());
        let db = Database::open(&h).unwrap();
        // Page 1 has page type 0: corrupt, not a panic.
        assert!(db.table_root("x").is_err());
    }
}
