//! The 1024-byte dynamic disk header of dynamic and differencing VHDs
//! (Microsoft "Virtual Hard Disk Image Format Specification" v1.0, "Dynamic
//! Disk Header Format"), with its eight parent locator entries.
//!
//! All fields are big-endian; the checksum is the one's complement of the byte
//! sum with the checksum field (bytes 36..40) taken as zero.

use super::footer::{be32, be64, check_cookie_and_checksum, ones_complement_sum, printable};
use super::locate::{utf16be, utf16le};
use crate::error::{Error, Result};

/// Header size in bytes.
pub const HEADER_SIZE: usize = 1024;
/// `cookie`: "cxsparse".
pub const COOKIE: &[u8; 8] = b"cxsparse";
/// `header_version` the spec defines.
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// Platform code "W2ru": Windows relative path, UTF-16LE.
pub const PLATFORM_W2RU: u32 = u32::from_be_bytes(*b"W2ru");
/// Platform code "W2ku": Windows absolute path, UTF-16LE.
pub const PLATFORM_W2KU: u32 = u32::from_be_bytes(*b"W2ku");
/// Longest parent locator payload read (a UTF-16 Windows path): 64 KiB.
pub const MAX_LOCATOR_BYTES: u32 = 64 << 10;

/// One parent locator entry (spec "Parent Locator Entry").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// Platform code (W2ru, W2ku, Wi2r, Wi2k, Mac , MacX) or 0 when unused.
    pub platform_code: u32,
    /// Space reserved for the locator (sectors per the spec; bytes as Hyper-V writes it).
    pub platform_data_space: u32,
    /// Length of the locator in bytes.
    pub platform_data_length: u32,
    /// Absolute byte offset of the locator in the file.
    pub platform_data_offset: u64,
}

impl Locator {
    /// The platform code as text.
    pub fn code_str(&self) -> String {
        printable(&self.platform_code.to_be_bytes())
    }

    /// Decode the locator bytes as this platform stores paths.
    pub fn decode(&self, bytes: &[u8]) -> String {
        match self.platform_code {
            PLATFORM_W2RU | PLATFORM_W2KU => utf16le(bytes),
            _ => String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_string(),
        }
    }
}

/// A parsed dynamic disk header; field names follow the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    /// Absolute byte offset of the header in the file.
    pub offset: u64,
    /// Next structure (unused, all ones).
    pub data_offset: u64,
    /// Absolute byte offset of the BAT.
    pub table_offset: u64,
    /// 0x00010000.
    pub header_version: u32,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Bytes of data per block (a power of two; 2 MiB by default).
    pub block_size: u32,
    /// Checksum as stored.
    pub checksum: u32,
    /// Unique id of the parent (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// Parent modification time (seconds since 2000-01-01).
    pub parent_time_stamp: u32,
    /// Parent file name, UTF-16BE in the header.
    pub parent_unicode_name: String,
    /// The eight parent locator entries (unused ones have platform code 0).
    pub locators: Vec<Locator>,
}

/// One's complement of the byte sum, bytes 36..40 taken as zero.
pub fn checksum(b: &[u8; HEADER_SIZE]) -> u32 {
    ones_complement_sum(b, 36..40)
}

impl DynHeader {
    /// Parse and check the header read at byte `offset`.
    pub fn parse(b: &[u8; HEADER_SIZE], offset: u64) -> Result<DynHeader> {
        const S: &str = "VHD dynamic disk header";
        let at = |o: u64| offset.saturating_add(o);
        let stored = check_cookie_and_checksum(S, b, offset, COOKIE, 36..40)?;
        let header_version = be32(b, 24);
        if header_version != HEADER_VERSION {
            return Err(Error::corrupt(
                S,
                "header_version",
                at(24),
                "0x00010000",
                format!("{header_version:#010x}"),
            ));
        }
        let block_size = be32(b, 32);
        // The spec's default is 2 MiB; qemu requires a power of two of at
        // least one sector (vpc.c); we follow that.
        if block_size < 512 || !block_size.is_power_of_two() {
            return Err(Error::corrupt(
                S,
                "block_size",
                at(32),
                "a power of two of at least 512",
                block_size,
            ));
        }
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(b.get(40..56).unwrap_or(&[0; 16]));
        let locators = (0..8usize)
            .map(|i| {
                let o = 576usize.saturating_add(i.saturating_mul(24));
                Locator {
                    platform_code: be32(b, o),
                    platform_data_space: be32(b, o.saturating_add(4)),
                    platform_data_length: be32(b, o.saturating_add(8)),
                    platform_data_offset: be64(b, o.saturating_add(16)),
                }
            })
            .collect();
        Ok(DynHeader {
            offset,
            data_offset: be64(b, 8),
            table_offset: be64(b, 16),
            header_version,
            max_table_entries: be32(b, 28),
            block_size,
            checksum: stored,
            parent_unique_id,
            parent_time_stamp: be32(b, 56),
            parent_unicode_name: utf16be(b.get(64..576).unwrap_or(&[])),
            locators,
        })
    }

    /// Byte offset of locator `i`'s `platform_data_offset` field (for errors).
    pub fn locator_field_offset(&self, i: usize) -> u64 {
        let rel = u64::try_from(i)
            .unwrap_or(0)
            .saturating_mul(24)
            .saturating_add(576);
        self.offset.saturating_add(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_cookie_and_checksum() {
        let mut b = [0u8; HEADER_SIZE];
        b[..8].copy_from_slice(COOKIE);
        b[24..28].copy_from_slice(&HEADER_VERSION.to_be_bytes());
        b[32..36].copy_from_slice(&(2u32 << 20).to_be_bytes());
        let c = checksum(&b);
        b[36..40].copy_from_slice(&c.to_be_bytes());
        assert!(DynHeader::parse(&b, 512).is_ok());
        let mut bad = b;
        bad[30] ^= 1;
        assert!(DynHeader::parse(&bad, 512).is_err());
        let mut bad = b;
        bad[0] = b'x';
        assert!(DynHeader::parse(&bad, 512).is_err());
    }
}
