//! LVM2 physical volumes and the linear logical volumes they carry.
//!
//! On-disk format (lvm2 source tree, `lib/format_text/layout.h` and
//! `lib/label/label.h`; documented in lvm2's `doc/` and in the
//! "LVM2 on-disk format" notes): one of the first four 512-byte sectors holds
//! a label header: "LABELONE" @0, sector_xl u64 @8 (the sector it is in),
//! crc_xl u32 @16 (over bytes 20..512), offset_xl u32 @20 (where the PV header
//! starts, from the label sector), type "LVM2 001" @24. The PV header holds
//! the PV UUID (32 ASCII chars), device_size_xl u64, then two lists of
//! `{offset u64, size u64}` ended by a zero pair: data areas, then metadata
//! areas. A metadata area starts with an mda_header: checksum_xl u32 @0 (over
//! bytes 4..512), magic " LVM2 x[5A%r0N*>" @4, version u32 @20 (1), start u64
//! @24, size u64 @32, then raw_locn entries `{offset u64, size u64, checksum
//! u32, flags u32}` @40; the first names the current metadata text, at
//! `offset` bytes into the area (a circular buffer after its first 512 bytes).
//! Checksums are lvm2's `calc_crc`: CRC-32 (IEEE, reflected) seeded with
//! 0xf597a6cf and without final inversion.
//!
//! The metadata text is lvm2's config syntax (`name = value`, `name { ... }`,
//! values: integers, "strings", `[lists]`, `#` comments), parsed here by a
//! small bounded parser ([`parse_config`]). Logical volumes whose segments are
//! all linear (`type = "striped"`, `stripe_count = 1`) are mapped onto the PVs
//! found on this disk; any other segment type (striped over several PVs,
//! mirror, raid, thin, cache, snapshot...) is refused with a warning naming it.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use super::{Scheme, Volume};
use crate::block::BlockSource;
use crate::bytes::{le32, le64, sub, us};
use crate::error::{Error, Result};
use crate::limits::{MAX_LVM_LIST_ITEMS, MAX_LVM_METADATA_BYTES, MAX_RECURSION_DEPTH};

/// Label magic.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// Label type of LVM2 text-format PVs.
pub const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// mda_header magic (`FMTT_MAGIC`).
pub const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// Seed of lvm2's `calc_crc` (`INITIAL_CRC`).
pub const INITIAL_CRC: u32 = 0xf597_a6cf;
/// LVM sectors are 512 bytes.
const SECTOR: u64 = 512;

/// lvm2's `calc_crc(INITIAL_CRC, buf)`: reflected CRC-32 without the final xor.
pub fn lvm_crc(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!INITIAL_CRC);
    h.update(buf);
    !h.finalize()
}

/// A physical volume found on a volume.
#[derive(Debug, Clone)]
pub struct Pv {
    /// PV UUID without dashes.
    pub uuid: String,
    /// The volume group's name.
    pub vg_name: String,
    /// The VG section of the metadata.
    pub vg: Value,
    /// VG metadata sequence number.
    pub seqno: i64,
}

/// A value of lvm2's config syntax.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A string (also used for floats, kept as written).
    Str(String),
    /// `[a, b, ...]`.
    List(Vec<Value>),
    /// `{ name = value ... }`, in order.
    Section(Vec<(String, Value)>),
}

impl Value {
    /// Child `name` of a section.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
    /// As an integer.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// As a string.
    pub fn str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// Items of a section.
    pub fn items(&self) -> &[(String, Value)] {
        match self {
            Value::Section(i) => i,
            _ => &[],
        }
    }
}

/// Parse lvm2 config text into a top-level section.
pub fn parse_config(text: &str) -> Result<Value> {
    let mut p = Parser {
        b: text.as_bytes(),
        pos: 0,
    };
    let items = p.items(0, true)?;
    Ok(Value::Section(items))
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::corrupt_msg(format!("LVM metadata text at byte {}: {what}", self.pos))
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while let Some(c) = self.peek() {
                    if c == b'\n' {
                        break;
                    }
                    self.bump();
                }
            } else if c.is_ascii_whitespace() || c == 0 {
                self.bump();
            } else {
                break;
            }
        }
    }
    fn ident(&mut self) -> Option<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'+') {
                self.bump();
            } else {
                break;
            }
        }
        (self.pos > start).then(|| {
            String::from_utf8_lossy(sub(self.b, start, self.pos.saturating_sub(start))).into_owned()
        })
    }
    fn items(&mut self, depth: usize, top: bool) -> Result<Vec<(String, Value)>> {
        if depth > MAX_RECURSION_DEPTH {
            return Err(self.err(&format!(
                "sections nested deeper than {MAX_RECURSION_DEPTH}"
            )));
        }
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None if top => return Ok(out),
                None => return Err(self.err("unexpected end of text inside a section")),
                Some(b'}') if !top => {
                    self.bump();
                    return Ok(out);
                }
                _ => {}
            }
            if out.len() >= MAX_LVM_LIST_ITEMS {
                return Err(self.err("too many items in a section"));
            }
            let name = self.ident().ok_or_else(|| self.err("expected a name"))?;
            self.skip_ws();
            match self.peek() {
                Some(b'{') => {
                    self.bump();
                    let v = self.items(depth.saturating_add(1), false)?;
                    out.push((name, Value::Section(v)));
                }
                Some(b'=') => {
                    self.bump();
                    let v = self.value(depth.saturating_add(1))?;
                    out.push((name, v));
                }
                _ => return Err(self.err(&format!("expected '=' or '{{' after {name:?}"))),
            }
        }
    }
    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_RECURSION_DEPTH {
            return Err(self.err("values nested too deep"));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'"') => {
                self.bump();
                let mut s = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated string")),
                        Some(b'"') => {
                            self.bump();
                            break;
                        }
                        Some(b'\\') => {
                            self.bump();
                            if let Some(c) = self.peek() {
                                s.push(c);
                                self.bump();
                            }
                        }
                        Some(c) => {
                            s.push(c);
                            self.bump();
                        }
                    }
                }
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(b'[') => {
                self.bump();
                let mut v = Vec::new();
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.bump();
                            return Ok(Value::List(v));
                        }
                        Some(b',') => self.bump(),
                        None => return Err(self.err("unterminated list")),
                        _ => {
                            if v.len() >= MAX_LVM_LIST_ITEMS {
                                return Err(self.err("list too long"));
                            }
                            v.push(self.value(depth.saturating_add(1))?);
                        }
                    }
                }
            }
            _ => {
                let w = self.ident().ok_or_else(|| self.err("expected a value"))?;
                Ok(match w.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Str(w),
                })
            }
        }
    }
}

/// Look for an LVM2 label in the first four sectors of `src` and read its
/// metadata. `Ok(None)` when there is no label.
pub fn read_pv(src: &dyn BlockSource) -> Result<Option<Pv>> {
    if src.size() < 4 * SECTOR {
        return Ok(None);
    }
    let mut head = [0u8; 2048];
    src.read_at(0, &mut head)?;
    let mut found = None;
    for i in 0..4usize {
        let sec = sub(&head, i.saturating_mul(512), 512);
        if sub(sec, 0, 8) == LABEL_ID {
            found = Some((i, sec));
            break;
        }
    }
    let Some((i, sec)) = found else {
        return Ok(None);
    };
    let base = crate::bytes::u(i.saturating_mul(512));
    let loc = |field: &str, off: u64, exp: &dyn std::fmt::Display, got: &dyn std::fmt::Display| {
        Error::corrupt(
            "LVM2 label header",
            field,
            base.saturating_add(off),
            exp,
            got,
        )
    };
    if le64(sec, 8) != crate::bytes::u(i) {
        return Err(loc("sector_xl", 8, &i, &le64(sec, 8)));
    }
    let crc = lvm_crc(sub(sec, 20, 492));
    if crc != le32(sec, 16) {
        return Err(loc(
            "crc_xl",
            16,
            &format!("{crc:#010x}"),
            &format!("{:#010x}", le32(sec, 16)),
        ));
    }
    if sub(sec, 24, 8) != LABEL_TYPE {
        return Err(loc(
            "type",
            24,
            &"\"LVM2 001\"",
            &format!("{:?}", String::from_utf8_lossy(sub(sec, 24, 8))),
        ));
    }
    let ph = us(u64::from(le32(sec, 20)));
    if ph < 32 || ph > 512usize.saturating_sub(48) {
        return Err(loc("offset_xl", 20, &"32..=464", &ph));
    }
    let uuid = crate::bytes::cstr(sub(sec, ph, 32));
    // device_size_xl at ph+32, then disk_locn lists at ph+40.
    let mut p = ph.saturating_add(40);
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            if p.saturating_add(16) > 512 || list.len() > 16 {
                return Err(loc(
                    "disk_locn list",
                    crate::bytes::u(p),
                    &"a zero-terminated list inside the label sector",
                    &"no terminator",
                ));
            }
            let (o, s) = (le64(sec, p), le64(sec, p.saturating_add(8)));
            p = p.saturating_add(16);
            if o == 0 && s == 0 {
                break;
            }
            list.push((o, s));
        }
    }
    let [_data, mdas] = lists;
    let mut last_err = None;
    for (mda_off, mda_size) in mdas {
        match read_mda(src, mda_off, mda_size) {
            Ok(text) => {
                let cfg = parse_config(&text)?;
                let (vg_name, vg) = cfg
                    .items()
                    .iter()
                    .find(|(_, v)| matches!(v, Value::Section(_)))
                    .cloned()
                    .ok_or_else(|| {
                        Error::corrupt_msg("LVM metadata text has no volume group section")
                    })?;
                let seqno = vg.get("seqno").and_then(Value::int).unwrap_or(0);
                return Ok(Some(Pv {
                    uuid,
                    vg_name,
                    vg,
                    seqno,
                }));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        Error::unsupported(format!(
            "LVM2 PV {uuid} has no metadata area (its VG metadata lives on another PV)"
        ))
    }))
}

fn read_mda(src: &dyn BlockSource, off: u64, size: u64) -> Result<String> {
    let mut h = [0u8; 512];
    if off.checked_add(512).is_none_or(|e| e > src.size()) || size < 1024 {
        return Err(Error::corrupt(
            "LVM2 metadata area",
            "offset/size",
            off,
            "an area inside the PV",
            format!("{size} bytes"),
        ));
    }
    src.read_at(off, &mut h)?;
    let crc = lvm_crc(sub(&h, 4, 508));
    if crc != le32(&h, 0) {
        return Err(Error::corrupt(
            "LVM2 mda_header",
            "checksum_xl",
            off,
            format!("{crc:#010x}"),
            format!("{:#010x}", le32(&h, 0)),
        ));
    }
    if sub(&h, 4, 16) != MDA_MAGIC {
        return Err(Error::corrupt(
            "LVM2 mda_header",
            "magic",
            off.saturating_add(4),
            "\" LVM2 x[5A%r0N*>\"",
            "other bytes",
        ));
    }
    let rl_off = le64(&h, 40);
    let rl_size = le64(&h, 48);
    let rl_crc = le32(&h, 56);
    if rl_off == 0 || rl_size == 0 {
        return Err(Error::corrupt(
            "LVM2 mda_header",
            "raw_locn[0]",
            off.saturating_add(40),
            "a metadata location",
            "none",
        ));
    }
    if rl_size > MAX_LVM_METADATA_BYTES || rl_off < 512 || rl_off >= size {
        return Err(Error::corrupt(
            "LVM2 mda_header",
            "raw_locn[0]",
            off.saturating_add(40),
            format!("offset 512..{size}, size at most {MAX_LVM_METADATA_BYTES}"),
            format!("offset {rl_off}, size {rl_size}"),
        ));
    }
    let mut text = vec![0u8; us(rl_size)];
    let first = rl_size.min(size.saturating_sub(rl_off));
    let (a, b) = text.split_at_mut(us(first));
    src.read_at(off.saturating_add(rl_off), a)?;
    if !b.is_empty() {
        // Wrapped around the circular buffer: continue after the header.
        if crate::bytes::u(b.len()) > size.saturating_sub(1024) {
            return Err(Error::corrupt(
                "LVM2 mda_header",
                "raw_locn[0].size",
                off.saturating_add(48),
                "text that fits the area",
                rl_size,
            ));
        }
        src.read_at(off.saturating_add(512), b)?;
    }
    let crc = lvm_crc(&text);
    if crc != rl_crc {
        return Err(Error::corrupt(
            "LVM2 metadata text",
            "raw_locn[0].checksum",
            off.saturating_add(56),
            format!("{crc:#010x}"),
            format!("{rl_crc:#010x}"),
        ));
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

fn i2u(v: Option<i64>) -> Option<u64> {
    v.and_then(|x| u64::try_from(x).ok())
}

/// Map the visible linear LVs of every VG whose PVs were found (`pv_start` is
/// the PV's first byte on the disk) onto the disk.
pub fn logical_volumes(
    pvs: &[(u64, Pv)],
    disk_size: u64,
    warnings: &mut Vec<String>,
) -> Vec<Volume> {
    let mut out = Vec::new();
    let mut index = 0u32;
    let mut vgs: Vec<&str> = Vec::new();
    for (_, pv) in pvs {
        if !vgs.contains(&pv.vg_name.as_str()) {
            vgs.push(&pv.vg_name);
        }
    }
    for vg_name in vgs {
        // The newest metadata copy of this VG.
        let Some((_, meta)) = pvs
            .iter()
            .filter(|(_, p)| p.vg_name == vg_name)
            .max_by_key(|(_, p)| p.seqno)
        else {
            continue;
        };
        let vg = &meta.vg;
        let Some(extent) = i2u(vg.get("extent_size").and_then(Value::int))
            .and_then(|e| e.checked_mul(SECTOR))
            .filter(|&e| e > 0)
        else {
            warnings.push(format!("LVM VG {vg_name}: missing or bad extent_size"));
            continue;
        };
        // PV name in metadata -> byte offset of its first extent on this disk.
        let mut pe_base: Vec<(String, u64)> = Vec::new();
        if let Some(pvsec) = vg.get("physical_volumes") {
            for (name, p) in pvsec.items() {
                let id: String = p
                    .get("id")
                    .and_then(Value::str)
                    .unwrap_or("")
                    .chars()
                    .filter(|c| *c != '-')
                    .collect();
                let pe_start = i2u(p.get("pe_start").and_then(Value::int)).unwrap_or(0);
                if let Some((start, _)) = pvs.iter().find(|(_, x)| x.uuid == id) {
                    if let Some(b) = pe_start
                        .checked_mul(SECTOR)
                        .and_then(|x| x.checked_add(*start))
                    {
                        pe_base.push((name.clone(), b));
                    }
                }
            }
        }
        let Some(lvs) = vg.get("logical_volumes") else {
            continue;
        };
        for (lv_name, lv) in lvs.items() {
            let visible = matches!(lv.get("status"), Some(Value::List(l)) if l.iter().any(|s| s.str() == Some("VISIBLE")));
            if !visible {
                continue;
            }
            let full = format!("{vg_name}/{lv_name}");
            match lv_segments(lv, extent, &pe_base, disk_size) {
                Ok(segs) if !segs.is_empty() => {
                    index = index.saturating_add(1);
                    let size = segs.iter().fold(0u64, |a, (_, l)| a.saturating_add(*l));
                    let mut v = Volume::contiguous(
                        index,
                        segs.first().map_or(0, |s| s.0),
                        size,
                        Scheme::Lvm,
                    );
                    v.segments = segs;
                    v.type_id = "linear".into();
                    v.type_name = Some("LVM2 logical volume".into());
                    v.name = Some(full);
                    v.uuid = lv.get("id").and_then(Value::str).map(str::to_string);
                    out.push(v);
                }
                Ok(_) => warnings.push(format!("LVM LV {full}: has no segments")),
                Err(e) => warnings.push(format!("LVM LV {full}: {e}")),
            }
        }
    }
    out
}

fn lv_segments(
    lv: &Value,
    extent: u64,
    pe_base: &[(String, u64)],
    disk_size: u64,
) -> std::result::Result<Vec<(u64, u64)>, String> {
    let mut segs: Vec<(u64, u64, u64)> = Vec::new(); // (start_extent, disk offset, len)
    for (name, s) in lv.items() {
        if !name.starts_with("segment") || !matches!(s, Value::Section(_)) {
            continue;
        }
        let ty = s.get("type").and_then(Value::str).unwrap_or("?");
        let stripes = s.get("stripe_count").and_then(Value::int).unwrap_or(1);
        if ty != "striped" {
            return Err(format!(
                "segment type {ty:?} is not supported (only linear volumes are mapped)"
            ));
        }
        if stripes != 1 {
            return Err(format!("segment type \"striped\" with {stripes} stripes is not supported (only linear volumes are mapped)"));
        }
        let start = i2u(s.get("start_extent").and_then(Value::int))
            .ok_or("segment without start_extent")?;
        let count = i2u(s.get("extent_count").and_then(Value::int))
            .ok_or("segment without extent_count")?;
        let (pv, pv_ext) = match s.get("stripes") {
            Some(Value::List(l)) => match l.as_slice() {
                [Value::Str(pv), Value::Int(e)] => {
                    (pv.clone(), i2u(Some(*e)).ok_or("negative stripe extent")?)
                }
                _ => return Err("stripes list is not [\"pvN\", extent]".into()),
            },
            _ => return Err("segment without stripes".into()),
        };
        let base = pe_base
            .iter()
            .find(|(n, _)| *n == pv)
            .map(|(_, b)| *b)
            .ok_or_else(|| format!("segment lies on PV {pv:?}, which is not on this disk"))?;
        let off = pv_ext
            .checked_mul(extent)
            .and_then(|o| o.checked_add(base))
            .ok_or("segment offset overflows")?;
        let len = count.checked_mul(extent).ok_or("segment size overflows")?;
        if off.checked_add(len).is_none_or(|e| e > disk_size) {
            return Err(format!(
                "segment at byte {off} (+{len}) runs past the end of the disk"
            ));
        }
        if segs.len() >= MAX_LVM_LIST_ITEMS {
            return Err("too many segments".into());
        }
        segs.push((start, off, len));
    }
    segs.sort_by_key(|s| s.0);
    let mut expect = 0u64;
    for (start, _, len) in &segs {
        if *start != expect {
            return Err(format!(
                "segments are not contiguous: expected start_extent {expect}, found {start}"
            ));
        }
        expect = expect.saturating_add(len.checked_div(extent).unwrap_or(0));
    }
    Ok(segs.into_iter().map(|(_, o, l)| (o, l)).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_lvm_config() {
        let t = "vg0 {\n id = \"abc\"\n seqno = 3\n status = [\"READ\", \"WRITE\"]\n # c\n logical_volumes { root { x = 1 } }\n}\ncontents = \"Text Format Volume Group\"\nversion = 1\n";
        let c = parse_config(t).unwrap();
        let vg = c.get("vg0").unwrap();
        assert_eq!(vg.get("seqno").unwrap().int(), Some(3));
        assert!(vg.get("logical_volumes").unwrap().get("root").is_some());
        assert!(parse_config("a { b = [").is_err());
        assert!(parse_config(&"a {".repeat(100)).is_err());
    }

    #[test]
    fn crc_matches_lvm() {
        // zlib.crc32(b"abc", ~INITIAL_CRC & 0xffffffff) ^ 0xffffffff, as lvm2 computes calc_crc.
        let mut h = crc32fast::Hasher::new_with_initial(!INITIAL_CRC);
        h.update(b"abc");
        assert_eq!(lvm_crc(b"abc"), !h.finalize());
    }
}
