//! Format detection by magic numbers.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Every input format onramp recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A plain disk image.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// Microsoft Virtual Hard Disk (fixed, dynamic, differencing).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// VMware VMDK (sparse, streamOptimized, or a text descriptor).
    Vmdk,
    /// VirtualBox VDI.
    Vdi,
    /// Open Virtual Appliance (a tar with an OVF descriptor).
    Ova,
    /// gzip-compressed image (or a GCE tar.gz).
    Gzip,
    /// xz-compressed image.
    Xz,
    /// zstd-compressed image.
    Zstd,
}

impl Format {
    /// Lower-case name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Ova => "ova",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
        }
    }
}

/// Bytes read from the start of a file for detection.
const HEAD_BYTES: usize = 1024;

/// Magic of formats we recognise but do not read: (name, offset, magic).
const KNOWN_UNSUPPORTED: &[(&str, u64, &[u8])] = &[
    ("qed", 0, b"QED\0"),
    ("bochs", 0, b"Bochs Virtual HD Image"),
    ("parallels", 0, b"WithoutFreeSpace"),
    ("parallels", 0, b"WithouFreSpacExt"),
    ("cloop", 0, b"#!/bin/sh\n#V2.0 Format"),
    ("vvfat/dmg", 0, b"koly"),
];

/// Detect the format of `path` from its magic numbers.
pub fn detect(path: &Path) -> Result<Format> {
    let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let len = file.metadata().ctx(|| "stat".into())?.len();
    let mut head = [0u8; HEAD_BYTES];
    let n = read_prefix(&file, 0, &mut head)?;
    let head = head.get(..n).unwrap_or(&[]);
    let mut tail = [0u8; 512];
    let tail_ok = len >= 512 && read_prefix(&file, len.saturating_sub(512), &mut tail)? == 512;
    detect_bytes(head, tail_ok.then_some(&tail[..]))
}

fn read_prefix(file: &File, offset: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = buf.get_mut(done..).unwrap_or(&mut []);
        let off = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
        match file.read_at(rest, off) {
            Ok(0) => break,
            Ok(k) => done = done.saturating_add(k),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read header for detection", e)),
        }
    }
    Ok(done)
}

fn at(buf: &[u8], off: usize, magic: &[u8]) -> bool {
    off.checked_add(magic.len())
        .and_then(|end| buf.get(off..end))
        .is_some_and(|s| s == magic)
}

/// Detect from the first bytes and the last 512 bytes of a file.
pub fn detect_bytes(head: &[u8], tail: Option<&[u8]>) -> Result<Format> {
    for (name, off, magic) in KNOWN_UNSUPPORTED {
        if at(head, usize::try_from(*off).unwrap_or(usize::MAX), magic) {
            return Err(Error::unsupported(format!("unsupported format: {name}")));
        }
    }
    let mut found: Vec<Format> = Vec::new();
    if at(head, 0, b"QFI\xfb") {
        found.push(Format::Qcow2);
    }
    if at(head, 0, b"vhdxfile") {
        found.push(Format::Vhdx);
    }
    // Dynamic VHDs start with a footer copy; fixed VHDs end with the footer.
    if at(head, 0, b"conectix") || tail.is_some_and(|t| at(t, 0, b"conectix")) {
        found.push(Format::Vhd);
    }
    if at(head, 0, b"KDMV") || at(head, 0, b"# Disk DescriptorFile") || at(head, 0, b"COWD") {
        found.push(Format::Vmdk);
    }
    if at(head, 0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        found.push(Format::Vdi);
    }
    if at(head, 257, b"ustar") {
        found.push(Format::Ova);
    }
    if at(head, 0, &[0x1f, 0x8b]) {
        found.push(Format::Gzip);
    }
    if at(head, 0, &[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        found.push(Format::Xz);
    }
    if at(head, 0, &[0x28, 0xb5, 0x2f, 0xfd]) {
        found.push(Format::Zstd);
    }
    match found.as_slice() {
        [] => Ok(Format::Raw),
        [one] => Ok(*one),
        many => {
            let names: Vec<&str> = many.iter().map(|f| f.name()).collect();
            Err(Error::invalid(format!(
                "ambiguous format: looks like {}; pass --from to choose",
                names.join(" and ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        assert_eq!(
            detect_bytes(b"QFI\xfb\0\0\0\x03", None).ok(),
            Some(Format::Qcow2)
        );
        assert_eq!(detect_bytes(b"hello", None).ok(), Some(Format::Raw));
        assert!(detect_bytes(b"QED\0", None).is_err());
        let mut tail = [0u8; 512];
        tail[..8].copy_from_slice(b"conectix");
        assert_eq!(detect_bytes(b"xx", Some(&tail)).ok(), Some(Format::Vhd));
        let e = detect_bytes(b"QFI\xfb", Some(&tail)).err();
        assert!(e.is_some_and(|e| e.message().contains("ambiguous")));
    }
}
