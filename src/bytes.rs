//! Little-endian field access on byte slices read from untrusted disks.
//!
//! Every accessor is bounds-checked and returns 0 (or an empty slice) when the
//! field lies outside the buffer, so parsers never panic on short input; they
//! read fixed-size structures into buffers of the right size first.
#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

/// `len` bytes at `off`, or an empty slice when out of range.
pub fn sub(b: &[u8], off: usize, len: usize) -> &[u8] {
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .unwrap_or(&[])
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    <[u8; N]>::try_from(sub(b, off, N)).unwrap_or([0; N])
}

/// The byte at `off` (0 when out of range).
pub fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// Little-endian u16 at `off`.
pub fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(arr(b, off))
}

/// Little-endian u32 at `off`.
pub fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

/// Little-endian u64 at `off`.
pub fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}

/// Big-endian u32 at `off`.
pub fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(arr(b, off))
}

/// `usize` from a disk value (saturates on 32-bit hosts; callers bound it first).
pub fn us(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// `u64` from a `usize`.
pub fn u(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Text of a NUL-padded field (lossy UTF-8, trailing NULs and spaces trimmed).
pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or(&[]))
        .trim_end()
        .to_string()
}

/// A mixed-endian GUID (first three fields little-endian), lower-case with dashes.
pub fn guid(b: &[u8]) -> String {
    let g: [u8; 16] = <[u8; 16]>::try_from(sub(b, 0, 16)).unwrap_or([0; 16]);
    let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = g;
    let [d0, d1, e0, e1, e2, e3, e4, e5] = d;
    format!(
        "{a3:02x}{a2:02x}{a1:02x}{a0:02x}-{b1:02x}{b0:02x}-{c1:02x}{c0:02x}-{d0:02x}{d1:02x}-{e0:02x}{e1:02x}{e2:02x}{e3:02x}{e4:02x}{e5:02x}"
    )
}

/// A big-endian (RFC 4122 byte order) UUID, lower-case with dashes.
pub fn uuid_be(b: &[u8]) -> String {
    let g: [u8; 16] = <[u8; 16]>::try_from(sub(b, 0, 16)).unwrap_or([0; 16]);
    let h: Vec<String> = g.iter().map(|x| format!("{x:02x}")).collect();
    let h = h.concat();
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or(""),
        h.get(8..12).unwrap_or(""),
        h.get(12..16).unwrap_or(""),
        h.get(16..20).unwrap_or(""),
        h.get(20..32).unwrap_or("")
    )
}

/// A zeroed buffer of `len` bytes whose allocation failure (an address-space
/// limit, a hostile size that passed its limit check) is an error, not an abort.
pub fn zeroed(len: u64) -> crate::error::Result<Vec<u8>> {
    let n = usize::try_from(len)
        .map_err(|_| crate::error::Error::invalid(format!("{len} bytes do not fit in memory")))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        crate::error::Error::invalid(format!("cannot allocate {len} bytes to read into"))
    })?;
    v.resize(n, 0);
    Ok(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn guid_mixed_endian() {
        // EFI System Partition type GUID as stored on disk.
        let b = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(guid(&b), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(le32(&b, 14), 0);
        assert!(sub(&b, 15, 4).is_empty());
    }
}
