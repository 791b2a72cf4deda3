//! CRC-32C (Castagnoli), as VHDX checksums its headers, region tables and log
//! entries (VHDX spec v1.0 §2.2.2: "CRC-32C ... Castagnoli polynomial
//! 0x1EDC6F41", reflected form 0x82F63B78, initial value and final XOR all ones).
//! Table-driven, written here rather than pulled in as a dependency.

/// The reflected polynomial.
const POLY: u32 = 0x82F6_3B78;

// Bounded loops over a 256-entry table (i < 256, k < 8): no overflow, no out-of-range index.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
const fn make_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0usize;
    while i < 256 {
        // `i < 256` so the cast is exact.
        #[allow(clippy::as_conversions)]
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = make_table();

/// Continue a CRC-32C over `data` from the raw (un-finalised) state `crc`.
pub(crate) fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        let idx = usize::from((crc.to_le_bytes()[0]) ^ b);
        crc = (crc >> 8) ^ TABLE.get(idx).copied().unwrap_or(0);
    }
    crc
}

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !update(!0, data)
}

/// CRC-32C of `data` with the four bytes at `field` taken as zero (how VHDX
/// computes a structure's checksum over itself).
pub fn crc32c_without(data: &[u8], field: usize) -> u32 {
    let end = field.saturating_add(4).min(data.len());
    let field = field.min(end);
    let a = data.get(..field).unwrap_or(&[]);
    let b = data.get(end..).unwrap_or(&[]);
    let zeros = [0u8; 4];
    let crc = update(!0, a);
    let crc = update(crc, zeros.get(..end.saturating_sub(field)).unwrap_or(&[]));
    !update(crc, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 appendix B.4 test vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let mut v = b"abcd\x01\x02\x03\x04efgh".to_vec();
        let c = crc32c_without(&v, 4);
        v[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(c, crc32c(&v));
    }
}
