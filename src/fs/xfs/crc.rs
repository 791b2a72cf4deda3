//! CRC-32C (Castagnoli), the checksum of every XFS v5 metadata block.
//!
//! XFS computes it with the crc field taken as zero, seed `!0`, and stores the
//! final (inverted) value little-endian (kernel `fs/xfs/libxfs/xfs_cksum.h`,
//! `xfs_start_cksum_safe` / `xfs_end_cksum`): that is the standard CRC-32C of
//! the block with its crc field zeroed.

use crate::error::{Error, Result};

/// Continue a raw (not inverted) CRC-32C over `data`: the crate's one table,
/// shared with VHDX and the ext4 writer.
fn update(crc: u32, data: &[u8]) -> u32 {
    crate::source::vhdx::crc::update(crc, data)
}

/// The standard CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !update(!0, data)
}

/// The XFS checksum of `buf`, with the 4 bytes at `crc_off` taken as zero.
/// `None` when the field does not fit in `buf`.
pub fn xfs_cksum(buf: &[u8], crc_off: usize) -> Option<u32> {
    let head = buf.get(..crc_off)?;
    let tail = buf.get(crc_off.checked_add(4)?..)?;
    let crc = update(!0, head);
    let crc = update(crc, &[0u8; 4]);
    Some(!update(crc, tail))
}

/// Check the little-endian crc stored at `crc_off` of `buf` (an XFS v5
/// metadata block that starts at absolute byte `at`).
pub fn verify(buf: &[u8], crc_off: usize, structure: &str, field: &str, at: u64) -> Result<()> {
    let stored = buf
        .get(crc_off..)
        .and_then(|s| s.get(..4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes);
    let computed = xfs_cksum(buf, crc_off);
    match (stored, computed) {
        (Some(s), Some(c)) if s == c => Ok(()),
        (Some(s), Some(c)) => Err(Error::corrupt(
            structure,
            field,
            at.saturating_add(u64::try_from(crc_off).unwrap_or(0)),
            format!("crc32c {c:#010x}"),
            format!("{s:#010x}"),
        )),
        _ => Err(Error::corrupt(
            structure,
            field,
            at,
            format!("a crc field inside the {}-byte block", buf.len()),
            format!("offset {crc_off}"),
        )),
    }
}

/// Store the XFS checksum of `buf` at `crc_off` (for writers and test fixtures).
pub fn set(buf: &mut [u8], crc_off: usize) -> Option<()> {
    let c = xfs_cksum(buf, crc_off)?;
    buf.get_mut(crc_off..crc_off.checked_add(4)?)?
        .copy_from_slice(&c.to_le_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA; "123456789" -> 0xE3069283.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn set_then_verify() {
        let mut b = vec![7u8; 64];
        set(&mut b, 8).unwrap();
        verify(&b, 8, "x", "crc", 0).unwrap();
        b[20] ^= 1;
        assert!(verify(&b, 8, "x", "crc", 0).is_err());
        assert!(verify(&b, 62, "x", "crc", 0).is_err());
    }
}
