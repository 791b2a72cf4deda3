//! The VHDX file identifier and the two headers (VHDX spec v1.0 §2.1,
//! "Header Section"): the 64 KiB header section holds the file type
//! identifier at 0, header 1 at 64 KiB and header 2 at 128 KiB. Each header
//! is 4 KiB, little-endian, checksummed with CRC-32C over its 4 KiB; the
//! current header is the valid one with the larger `sequence_number`.

use super::crc::crc32c_without;
use super::guid::Guid;
use crate::error::{Error, Result};
use crate::source::raw::read_exact_at;
use std::fs::File;

/// File type identifier signature "vhdxfile" at byte 0 (§2.1.1).
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Byte offsets of header 1 and header 2 (§2.1).
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Bytes covered by a header's checksum (§2.1.2: "4 KB").
pub const HEADER_SIZE: usize = 4096;
/// Header signature "head" (§2.1.2).
pub const HEADER_SIGNATURE: &[u8; 4] = b"head";
/// The only `version` defined (§2.1.2).
pub const VERSION: u16 = 1;
/// The only `log_version` defined (§2.1.2).
pub const LOG_VERSION: u16 = 0;
/// Alignment of `log_offset` and `log_length` (§2.1.2: "multiple of 1 MB").
pub const MIB: u64 = 1 << 20;

/// One parsed header; field names follow the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Which header slot (1 or 2).
    pub slot: u8,
    /// Stored checksum.
    pub checksum: u32,
    /// Larger is newer.
    pub sequence_number: u64,
    /// Changes when the file is first opened for writing.
    pub file_write_guid: Guid,
    /// Changes when user-visible data is first modified; children link to it.
    pub data_write_guid: Guid,
    /// Non-zero: the log holds entries that must be replayed.
    pub log_guid: Guid,
    /// 0.
    pub log_version: u16,
    /// 1.
    pub version: u16,
    /// Bytes in the log (multiple of 1 MiB).
    pub log_length: u32,
    /// Byte offset of the log (multiple of 1 MiB).
    pub log_offset: u64,
}

/// Little-endian field access (0 when out of range), shared by the VHDX parsers.
pub use crate::bytes::{le16, le32, le64};

/// The checks a checksummed VHDX structure (header, region table) opens
/// with: the 4-byte `signature` at byte 0, then the CRC-32C at bytes 4..8
/// over `b` with that field taken as zero. `offset` is where `b` was read;
/// returns the stored checksum.
pub fn check_signature_and_crc(
    structure: &str,
    b: &[u8],
    offset: u64,
    signature: &[u8; 4],
) -> Result<u32> {
    let sig = b.get(..4).unwrap_or(&[]);
    if sig != signature {
        return Err(Error::corrupt(
            structure,
            "signature",
            offset,
            format!("{:?}", String::from_utf8_lossy(signature)),
            format!("{:?}", String::from_utf8_lossy(sig)),
        ));
    }
    let stored = le32(b, 4);
    let computed = crc32c_without(b, 4);
    if stored != computed {
        return Err(Error::corrupt(
            structure,
            "checksum",
            offset.saturating_add(4),
            format!("{computed:#010x} (CRC-32C)"),
            format!("{stored:#010x}"),
        ));
    }
    Ok(stored)
}

impl Header {
    /// Parse header slot `slot` (1 or 2) from its 4 KiB at byte `offset`.
    pub fn parse(b: &[u8], slot: u8, offset: u64, file_len: u64) -> Result<Header> {
        let s = format!("VHDX header {slot}");
        let at = |o: u64| offset.saturating_add(o);
        let stored = check_signature_and_crc(&s, b, offset, HEADER_SIGNATURE)?;
        let h = Header {
            slot,
            checksum: stored,
            sequence_number: le64(b, 8),
            file_write_guid: Guid::read(b, 16),
            data_write_guid: Guid::read(b, 32),
            log_guid: Guid::read(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        };
        if h.version != VERSION {
            return Err(Error::corrupt(&s, "version", at(66), VERSION, h.version));
        }
        if h.log_version != LOG_VERSION {
            return Err(Error::corrupt(
                &s,
                "log_version",
                at(64),
                LOG_VERSION,
                h.log_version,
            ));
        }
        let ll = u64::from(h.log_length);
        if ll == 0 || !ll.is_multiple_of(MIB) {
            return Err(Error::corrupt(
                &s,
                "log_length",
                at(68),
                "a non-zero multiple of 1 MiB",
                ll,
            ));
        }
        if h.log_offset < MIB || !h.log_offset.is_multiple_of(MIB) {
            return Err(Error::corrupt(
                &s,
                "log_offset",
                at(72),
                "a multiple of 1 MiB, at least 1 MiB",
                h.log_offset,
            ));
        }
        if h.log_offset.checked_add(ll).is_none_or(|e| e > file_len) {
            return Err(Error::corrupt(
                &s,
                "log_offset",
                at(72),
                format!("a {ll}-byte log inside the {file_len}-byte file"),
                h.log_offset,
            ));
        }
        Ok(h)
    }
}

/// The file identifier's creator string and both headers' parse results.
#[derive(Debug)]
pub struct Headers {
    /// Creator (UTF-16LE at byte 8 of the identifier).
    pub creator: String,
    /// The header in use.
    pub current: Header,
    /// The other header, if it is valid.
    pub other: Option<Header>,
    /// Why the other header is not valid, if it is not.
    pub other_error: Option<String>,
}

/// Check the file identifier and choose the current header (§2.1.2: "the
/// header with the larger sequence number among the valid ones").
pub fn read_headers(file: &File, file_len: u64) -> Result<Headers> {
    let mut ident = vec![0u8; 520];
    read_exact_at(file, 0, &mut ident, "VHDX file identifier")?;
    let sig = ident.get(..8).unwrap_or(&[]);
    if sig != FILE_SIGNATURE {
        return Err(Error::corrupt(
            "VHDX file identifier",
            "signature",
            0,
            "\"vhdxfile\"",
            format!("{:?}", String::from_utf8_lossy(sig)),
        ));
    }
    let creator = crate::source::vhd::locate::utf16le(ident.get(8..520).unwrap_or(&[]));
    let mut parsed: Vec<Result<Header>> = Vec::with_capacity(2);
    for (i, off) in HEADER_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; HEADER_SIZE];
        read_exact_at(file, *off, &mut b, "VHDX header")?;
        let slot = if i == 0 { 1 } else { 2 };
        parsed.push(Header::parse(&b, slot, *off, file_len));
    }
    let mut it = parsed.into_iter();
    let h1 = it
        .next()
        .unwrap_or_else(|| Err(Error::corrupt_msg("no header 1")));
    let h2 = it
        .next()
        .unwrap_or_else(|| Err(Error::corrupt_msg("no header 2")));
    match (h1, h2) {
        (Ok(a), Ok(b)) => {
            let (current, other) = if b.sequence_number > a.sequence_number {
                (b, a)
            } else {
                (a, b)
            };
            Ok(Headers {
                creator,
                current,
                other: Some(other),
                other_error: None,
            })
        }
        (Ok(a), Err(e)) | (Err(e), Ok(a)) => Ok(Headers {
            creator,
            current: a,
            other: None,
            other_error: Some(e.message().to_string()),
        }),
        (Err(e1), Err(e2)) => Err(Error::corrupt_msg(format!(
            "VHDX: neither header is valid: {}; {}",
            e1.message(),
            e2.message()
        ))),
    }
}
