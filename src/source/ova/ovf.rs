//! Just enough of an OVF descriptor (DMTF DSP0243 "Open Virtualization Format
//! Specification") to find the disks: `References/File` (`ovf:id`,
//! `ovf:href`, `ovf:size`, `ovf:compression`, `ovf:chunkSize`),
//! `DiskSection/Disk` (`ovf:diskId`, `ovf:fileRef`, `ovf:capacity`,
//! `ovf:capacityAllocationUnits`, `ovf:format`) and the first
//! `VirtualSystem`'s hardware `Item`s with `rasd:ResourceType` 17 (disk drive)
//! whose `rasd:HostResource` is `ovf:/disk/<diskId>`.
//!
//! A small hand-written XML tokenizer: elements, attributes, text; comments,
//! processing instructions, CDATA and DOCTYPE are skipped; namespace prefixes
//! are dropped (local names only). The caller bounds the input size.

use crate::error::{Error, Result};
use crate::limits::MAX_RECURSION_DEPTH;

/// A `References/File`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRef {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`.
    pub href: String,
    /// `ovf:size`.
    pub size: Option<u64>,
    /// `ovf:compression` (e.g. "gzip").
    pub compression: Option<String>,
    /// `ovf:chunkSize`.
    pub chunk_size: Option<String>,
}

/// A `DiskSection/Disk`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// `ovf:fileRef`.
    pub file_ref: Option<String>,
    /// `ovf:capacity` (in allocation units).
    pub capacity: String,
    /// `ovf:capacityAllocationUnits`.
    pub units: Option<String>,
    /// `ovf:format` URI.
    pub format: Option<String>,
}

impl Disk {
    /// Capacity in bytes, when units are `byte` or `byte * 2^N`.
    pub fn capacity_bytes(&self) -> Option<u64> {
        let c: u64 = self.capacity.trim().parse().ok()?;
        let shift = match self.units.as_deref().map(str::trim) {
            None | Some("byte") => 0,
            Some(u) => {
                let compact: String = u.chars().filter(|c| !c.is_whitespace()).collect();
                compact.strip_prefix("byte*2^")?.parse::<u32>().ok()?
            }
        };
        c.checked_mul(1u64.checked_shl(shift)?)
    }
}

/// What onramp needs from an OVF descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Files in References order.
    pub files: Vec<FileRef>,
    /// Disks in DiskSection order.
    pub disks: Vec<Disk>,
    /// Disk ids referenced by the first VirtualSystem's disk drive items, in order.
    pub system_disks: Vec<String>,
    /// `ovf:id` (or `Name`) of the first VirtualSystem.
    pub system_name: Option<String>,
}

impl Envelope {
    /// Index (in [`Envelope::disks`]) of the boot disk: the first disk the first
    /// VirtualSystem's hardware references, else the first disk.
    pub fn boot_disk(&self) -> Option<usize> {
        self.system_disks
            .iter()
            .find_map(|id| self.disks.iter().position(|d| &d.disk_id == id))
            .or_else(|| (!self.disks.is_empty()).then_some(0))
    }

    /// The File a disk refers to.
    pub fn file_of(&self, disk: &Disk) -> Option<&FileRef> {
        let r = disk.file_ref.as_deref()?;
        self.files.iter().find(|f| f.id == r)
    }
}

#[derive(Debug)]
enum Token {
    Start {
        name: String,
        attrs: Vec<(String, String)>,
        empty: bool,
    },
    End(String),
    Text(String),
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i).unwrap_or(""));
        let after = rest.get(i..).unwrap_or("");
        let Some(semi) = after.find(';').filter(|&k| k <= 12) else {
            out.push('&');
            rest = after.get(1..).unwrap_or("");
            continue;
        };
        let ent = after.get(1..semi).unwrap_or("");
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(e.get(2..).unwrap_or(""), 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e
                .get(1..)
                .and_then(|d| d.parse().ok())
                .and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(after.get(..=semi).unwrap_or("")),
        }
        rest = after.get(semi.saturating_add(1)..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

fn bad(msg: &str, at: usize) -> Error {
    Error::corrupt_msg(format!("OVF descriptor: {msg} at byte {at}"))
}

/// Tokenize `x`, handing each token to `f` as it is found (no token list is
/// kept, so memory stays proportional to the input).
fn tokenize(x: &str, mut f: impl FnMut(Token) -> Result<()>) -> Result<()> {
    let mut i = 0usize;
    while i < x.len() {
        let rest = x.get(i..).unwrap_or("");
        if !rest.starts_with('<') {
            let end = rest.find('<').unwrap_or(rest.len());
            let t = rest.get(..end).unwrap_or("");
            if !t.trim().is_empty() {
                f(Token::Text(unescape(t.trim())))?;
            }
            i = i.saturating_add(end);
            continue;
        }
        let skip_to = |open: &str, close: &str| -> Option<Result<usize>> {
            rest.starts_with(open).then(|| {
                rest.find(close)
                    .map(|k| k.saturating_add(close.len()))
                    .ok_or_else(|| bad(&format!("unterminated {open}"), i))
            })
        };
        if let Some(r) = skip_to("<!--", "-->")
            .or_else(|| skip_to("<?", "?>"))
            .or_else(|| skip_to("<![CDATA[", "]]>"))
            .or_else(|| skip_to("<!", ">"))
        {
            i = i.saturating_add(r?);
            continue;
        }
        let close = find_tag_end(rest).ok_or_else(|| bad("unterminated tag", i))?;
        let inner = rest.get(1..close).unwrap_or("");
        i = i.saturating_add(close).saturating_add(1);
        if let Some(name) = inner.strip_prefix('/') {
            f(Token::End(local(name.trim()).to_string()))?;
            continue;
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(s) => (s, true),
            None => (inner, false),
        };
        let name_end = inner
            .find(|c: char| c.is_whitespace())
            .unwrap_or(inner.len());
        let name = local(inner.get(..name_end).unwrap_or("")).to_string();
        if name.is_empty() {
            return Err(bad("tag without a name", i));
        }
        let mut attrs = Vec::new();
        let mut a = inner.get(name_end..).unwrap_or("");
        loop {
            a = a.trim_start();
            if a.is_empty() {
                break;
            }
            let eq = a.find('=').ok_or_else(|| bad("attribute without '='", i))?;
            let key = local(a.get(..eq).unwrap_or("").trim()).to_string();
            let v = a.get(eq.saturating_add(1)..).unwrap_or("").trim_start();
            let q = v.chars().next().filter(|c| *c == '"' || *c == '\'');
            let q = q.ok_or_else(|| bad("unquoted attribute value", i))?;
            let body = v.get(1..).unwrap_or("");
            let endq = body
                .find(q)
                .ok_or_else(|| bad("unterminated attribute value", i))?;
            attrs.push((key, unescape(body.get(..endq).unwrap_or(""))));
            a = body.get(endq.saturating_add(1)..).unwrap_or("");
        }
        f(Token::Start { name, attrs, empty })?;
    }
    Ok(())
}

/// End of a tag (the `>` not inside a quoted attribute value).
fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (k, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"') | (None, '\'') => quote = Some(c),
            (None, '>') => return Some(k),
            _ => {}
        }
    }
    None
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parse an OVF descriptor.
pub fn parse(text: &str) -> Result<Envelope> {
    let mut env = Envelope::default();
    let mut stack: Vec<String> = Vec::new();
    let mut systems = 0usize;
    // Inside the first VirtualSystem's current Item: (resource type, host resources).
    let mut item: Option<(Option<String>, Vec<String>)> = None;
    tokenize(text, |t| {
        match t {
            Token::Start { name, attrs, empty } => {
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("References"), "File") => env.files.push(FileRef {
                        id: attr(&attrs, "id").unwrap_or("").to_string(),
                        href: attr(&attrs, "href").unwrap_or("").to_string(),
                        size: attr(&attrs, "size").and_then(|s| s.trim().parse().ok()),
                        compression: attr(&attrs, "compression").map(str::to_string),
                        chunk_size: attr(&attrs, "chunkSize").map(str::to_string),
                    }),
                    (Some("DiskSection"), "Disk") => env.disks.push(Disk {
                        disk_id: attr(&attrs, "diskId").unwrap_or("").to_string(),
                        file_ref: attr(&attrs, "fileRef").map(str::to_string),
                        capacity: attr(&attrs, "capacity").unwrap_or("").to_string(),
                        units: attr(&attrs, "capacityAllocationUnits").map(str::to_string),
                        format: attr(&attrs, "format").map(str::to_string),
                    }),
                    (_, "VirtualSystem") => {
                        systems = systems.saturating_add(1);
                        if systems == 1 {
                            env.system_name = attr(&attrs, "id").map(str::to_string);
                        }
                    }
                    (_, "Item") | (_, "StorageItem") if systems == 1 && in_system(&stack) => {
                        item = Some((None, Vec::new()));
                    }
                    _ => {}
                }
                if !empty {
                    if stack.len() >= MAX_RECURSION_DEPTH.saturating_mul(4) {
                        return Err(bad("elements nested too deeply", 0));
                    }
                    stack.push(name);
                } else if name == "Item" || name == "StorageItem" {
                    item = None;
                }
            }
            Token::End(name) => {
                if stack.pop().as_deref() != Some(name.as_str()) {
                    return Err(Error::corrupt_msg(format!(
                        "OVF descriptor: closing tag </{name}> does not match"
                    )));
                }
                if name == "Item" || name == "StorageItem" {
                    if let Some((Some(rt), hosts)) = item.take() {
                        if rt.trim() == "17" {
                            for h in hosts {
                                let id = h
                                    .trim()
                                    .strip_prefix("ovf:")
                                    .unwrap_or(h.trim())
                                    .strip_prefix("/disk/")
                                    .map(str::to_string);
                                if let Some(id) = id {
                                    env.system_disks.push(id);
                                }
                            }
                        }
                    }
                }
            }
            Token::Text(s) => {
                if let Some((rt, hosts)) = item.as_mut() {
                    match stack.last().map(String::as_str) {
                        Some("ResourceType") => *rt = Some(s),
                        Some("HostResource") => hosts.push(s),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    })?;
    if !stack.is_empty() {
        return Err(Error::corrupt_msg(format!(
            "OVF descriptor: element <{}> is not closed",
            stack.last().map(String::as_str).unwrap_or("")
        )));
    }
    Ok(env)
}

fn in_system(stack: &[String]) -> bool {
    stack.iter().any(|s| s == "VirtualSystem")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment with <tags> -->
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:href="data.vmdk" ovf:id="file2"/>
    <File ovf:href="os&amp;1.vmdk" ovf:id="file1" ovf:size="1234"/>
  </References>
  <DiskSection><Info>Disks</Info>
    <Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk2" ovf:fileRef="file2"/>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm">
    <VirtualHardwareSection>
      <Item><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item><rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;

    #[test]
    fn finds_disks_and_boot_disk() {
        let e = parse(OVF).unwrap();
        assert_eq!(e.files.len(), 2);
        assert_eq!(e.files[1].href, "os&1.vmdk");
        assert_eq!(e.files[1].size, Some(1234));
        assert_eq!(e.disks.len(), 2);
        assert_eq!(e.disks[0].capacity_bytes(), Some(2 << 30));
        assert_eq!(e.system_disks, vec!["vmdisk1", "vmdisk2"]);
        assert_eq!(e.boot_disk(), Some(1));
        assert_eq!(e.file_of(&e.disks[1]).unwrap().href, "os&1.vmdk");
        assert_eq!(e.system_name.as_deref(), Some("vm"));
    }

    #[test]
    fn rejects_broken_xml() {
        assert!(parse("<Envelope><References></Envelope>").is_err());
        assert!(parse("<Envelope a=b/>").is_err());
        assert!(parse("<Envelope").is_err());
    }
}
