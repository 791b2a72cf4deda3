//! Initramfs images: concatenated cpio archives, each uncompressed or
//! compressed (gzip, zstd, xz, lz4 legacy or frame), as the kernel unpacks them
//! (Documentation/driver-api/early-userspace/buffer-format.rst). An
//! uncompressed early-microcode archive often comes first, then a compressed
//! one with the real root.
//!
//! cpio "newc" (magic 070701) and "crc" (070702) headers are 110 ASCII bytes:
//! magic, then 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime,
//! filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check); the
//! name (namesize bytes, NUL included) is padded so header+name is a multiple
//! of 4, the data likewise; "TRAILER!!!" ends an archive.
//!
//! Only names are kept: entry data is skipped while streaming, so the memory
//! used is bounded by the names, not the image.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use crate::bytes::{sub, u, us};
use crate::error::{Error, Result};
use crate::limits::{MAX_CPIO_ENTRIES, MAX_CPIO_NAME, MAX_INITRAMFS_BYTES, MAX_INITRAMFS_UNPACKED};
use std::io::Read;

/// What an initramfs holds, as far as inspection needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    /// Compression of each archive segment in order: "none", "gzip", "zstd", "xz", "lz4".
    pub segments: Vec<String>,
    /// Count of entries in all archives.
    pub entries: usize,
    /// Kernel module file names (basenames: `hv_vmbus.ko`, `hv_storvsc.ko.xz`), sorted, unique.
    pub modules: Vec<String>,
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos = self.pos.saturating_add(u(n));
        Ok(n)
    }
}

fn hex8(h: &[u8], field: usize) -> Result<u64> {
    let s = sub(h, 6usize.saturating_add(field.saturating_mul(8)), 8);
    let t = std::str::from_utf8(s).unwrap_or("");
    u64::from_str_radix(t, 16).map_err(|_| {
        Error::corrupt(
            "cpio newc header",
            format!("field {field}"),
            0,
            "8 hex digits",
            format!("{t:?}"),
        )
    })
}

fn skip<R: Read>(r: &mut R, n: u64) -> Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())
        .map_err(|e| Error::corrupt_msg(format!("initramfs: {e}")))?;
    if copied != n {
        return Err(Error::corrupt_msg(
            "initramfs: cpio entry data runs past the end of the archive",
        ));
    }
    Ok(())
}

fn pad4(pos: u64) -> u64 {
    pos.wrapping_neg() & 3
}

/// Parse cpio archives from a stream until its end; archives may follow each
/// other with zero padding between them.
fn parse_stream<R: Read>(r: R, out: &mut Listing) -> Result<()> {
    let mut r = Counting {
        inner: r.take(MAX_INITRAMFS_UNPACKED),
        pos: 0,
    };
    loop {
        // Skip zero padding between archives; stop at a clean end.
        let mut first = [0u8; 1];
        loop {
            match r.read(&mut first) {
                Ok(0) => return Ok(()),
                Ok(_) if first[0] == 0 => continue,
                Ok(_) => break,
                Err(e) => return Err(Error::corrupt_msg(format!("initramfs: {e}"))),
            }
        }
        let mut h = [0u8; 110];
        h[0] = first[0];
        r.read_exact(h.get_mut(1..).unwrap_or(&mut []))
            .map_err(|_| {
                Error::corrupt_msg(format!(
                    "initramfs: truncated cpio header at byte {}",
                    r.pos
                ))
            })?;
        let magic = sub(&h, 0, 6);
        if magic != b"070701" && magic != b"070702" {
            return Err(Error::corrupt(
                "cpio header",
                "c_magic",
                r.pos.saturating_sub(110),
                "070701 (newc) or 070702 (crc)",
                format!("{:?}", String::from_utf8_lossy(magic)),
            ));
        }
        let filesize = hex8(&h, 6)?;
        let namesize = hex8(&h, 11)?;
        if namesize == 0 || namesize > MAX_CPIO_NAME {
            return Err(Error::corrupt(
                "cpio header",
                "c_namesize",
                r.pos.saturating_sub(110),
                format!("1..={MAX_CPIO_NAME}"),
                namesize,
            ));
        }
        let mut name = vec![0u8; us(namesize)];
        r.read_exact(&mut name)
            .map_err(|_| Error::corrupt_msg("initramfs: truncated cpio name"))?;
        let pad = pad4(r.pos);
        skip(&mut r, pad)?;
        let name = crate::bytes::cstr(&name);
        if name == "TRAILER!!!" {
            continue;
        }
        out.entries = out.entries.saturating_add(1);
        if out.entries > MAX_CPIO_ENTRIES {
            return Err(Error::corrupt_msg(format!(
                "initramfs has more than {MAX_CPIO_ENTRIES} entries"
            )));
        }
        let base = name.rsplit('/').next().unwrap_or("");
        if [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|s| base.ends_with(s))
        {
            out.modules.push(base.to_string());
        }
        skip(&mut r, filesize)?;
        let pad = pad4(r.pos);
        skip(&mut r, pad)?;
    }
}

fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut p = 4usize;
    while p.saturating_add(4) <= data.len() {
        let n = us(u64::from(crate::bytes::le32(data, p)));
        if n == 0x184C_2102 || n == 0 {
            break;
        }
        p = p.saturating_add(4);
        let block = data
            .get(p..p.saturating_add(n))
            .ok_or_else(|| Error::corrupt_msg("initramfs lz4: block runs past the end"))?;
        let d = lz4_flex::block::decompress(block, 8 << 20)
            .map_err(|e| Error::corrupt_msg(format!("initramfs lz4: {e}")))?;
        if u(out.len()).saturating_add(u(d.len())) > MAX_INITRAMFS_BYTES {
            return Err(Error::corrupt_msg("decompressed initramfs is too large"));
        }
        out.extend_from_slice(&d);
        p = p.saturating_add(n);
    }
    Ok(out)
}

/// List an initramfs image.
pub fn list(data: &[u8]) -> Result<Listing> {
    let mut out = Listing::default();
    let mut p = 0usize;
    loop {
        while data.get(p) == Some(&0) {
            p = p.saturating_add(1);
        }
        let rest = data.get(p..).unwrap_or(&[]);
        if rest.is_empty() {
            break;
        }
        if rest.starts_with(b"0707") {
            // Uncompressed archive(s): parse until the first TRAILER-terminated
            // archive ends and continue after it with the next segment.
            let mut c = std::io::Cursor::new(rest);
            parse_one_archive(&mut c, &mut out)?;
            out.segments.push("none".into());
            p = p.saturating_add(us(c.position()));
            continue;
        }
        let kind = if rest.starts_with(&[0x1f, 0x8b]) {
            parse_stream(flate2::read::MultiGzDecoder::new(rest), &mut out)?;
            "gzip"
        } else if rest.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let d = zstd::stream::read::Decoder::new(rest)
                .map_err(|e| Error::corrupt_msg(format!("initramfs zstd: {e}")))?;
            parse_stream(d, &mut out)?;
            "zstd"
        } else if rest.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            parse_stream(liblzma::read::XzDecoder::new_multi_decoder(rest), &mut out)?;
            "xz"
        } else if rest.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
            parse_stream(lz4_legacy(rest)?.as_slice(), &mut out)?;
            "lz4"
        } else if rest.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
            parse_stream(lz4_flex::frame::FrameDecoder::new(rest), &mut out)?;
            "lz4"
        } else {
            let what = if rest.starts_with(b"BZh") {
                "bzip2"
            } else if rest.starts_with(&[0x89, b'L', b'Z', b'O']) {
                "lzop"
            } else if rest.starts_with(&[0x5d, 0, 0]) {
                "lzma"
            } else {
                "unknown"
            };
            return Err(Error::unsupported(format!(
                "initramfs segment at byte {p}: {what} compression is not supported \
                 (gzip, zstd, xz and lz4 are)"
            )));
        };
        out.segments.push(kind.into());
        // A compressed segment runs to the end of the image.
        break;
    }
    out.modules.sort();
    out.modules.dedup();
    Ok(out)
}

fn parse_one_archive(c: &mut std::io::Cursor<&[u8]>, out: &mut Listing) -> Result<()> {
    // Parse entry by entry, stopping at the trailer.
    let start = c.position();
    let data = *c.get_ref();
    let mut pos = us(start);
    loop {
        let h = data.get(pos..pos.saturating_add(110)).ok_or_else(|| {
            Error::corrupt_msg(format!("initramfs: truncated cpio header at byte {pos}"))
        })?;
        let magic = sub(h, 0, 6);
        if magic != b"070701" && magic != b"070702" {
            return Err(Error::corrupt(
                "cpio header",
                "c_magic",
                u(pos),
                "070701 (newc) or 070702 (crc)",
                format!("{:?}", String::from_utf8_lossy(magic)),
            ));
        }
        let filesize = hex8(h, 6)?;
        let namesize = hex8(h, 11)?;
        if namesize == 0 || namesize > MAX_CPIO_NAME {
            return Err(Error::corrupt(
                "cpio header",
                "c_namesize",
                u(pos),
                format!("1..={MAX_CPIO_NAME}"),
                namesize,
            ));
        }
        let name_end = pos.saturating_add(110).saturating_add(us(namesize));
        let name = crate::bytes::cstr(data.get(pos.saturating_add(110)..name_end).unwrap_or(&[]));
        let data_start = u(name_end).saturating_add(pad4(u(name_end)));
        let data_end = data_start.saturating_add(filesize);
        if data_end > u(data.len()) {
            return Err(Error::corrupt_msg(format!(
                "initramfs: cpio entry {name:?} runs past the end of the image"
            )));
        }
        pos = us(data_end.saturating_add(pad4(data_end)));
        if name == "TRAILER!!!" {
            break;
        }
        out.entries = out.entries.saturating_add(1);
        if out.entries > MAX_CPIO_ENTRIES {
            return Err(Error::corrupt_msg(format!(
                "initramfs has more than {MAX_CPIO_ENTRIES} entries"
            )));
        }
        let base = name.rsplit('/').next().unwrap_or("");
        if [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|s| base.ends_with(s))
        {
            out.modules.push(base.to_string());
        }
    }
    c.set_position(u(pos.min(data.len())));
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v =
            format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1, 0o100644, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        )
            .into_bytes();
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn lists_plain_then_gzip() {
        let mut a = entry("kernel/x86/microcode/GenuineIntel.bin", b"ucode");
        a.extend(entry("TRAILER!!!", b""));
        a.resize(512, 0);
        let mut b = entry(
            "usr/lib/modules/6.1/kernel/drivers/hv/hv_vmbus.ko.xz",
            b"xx",
        );
        b.extend(entry("TRAILER!!!", b""));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &b).unwrap();
        a.extend(gz.finish().unwrap());
        let l = list(&a).unwrap();
        assert_eq!(l.segments, vec!["none", "gzip"]);
        assert_eq!(l.modules, vec!["hv_vmbus.ko.xz"]);
        assert_eq!(l.entries, 2);
        // Garbage: an error, no panic.
        let mut bad = a.clone();
        bad[3] = b'x';
        assert!(list(&bad).is_err());
        assert!(list(&a[..100]).is_err());
        // A truncated gzip stream: an error or a partial listing, never a panic.
        let _ = list(&a[..a.len() - 8]);
    }
}
