//! GUIDs as VHDX stores them: 16 bytes, the first three fields little-endian
//! (Microsoft's mixed-endian layout).

/// A GUID in its on-disk byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Build from the textual form's fields (as printed, e.g. in the spec).
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// Read 16 bytes at `off` of `b` (zero GUID when out of range).
    pub fn read(b: &[u8], off: usize) -> Guid {
        let mut g = [0u8; 16];
        if let Some(s) = b.get(off..off.saturating_add(16)) {
            g.copy_from_slice(s);
        }
        Guid(g)
    }

    /// All zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 16]
    }
}

impl std::fmt::Display for Guid {
    /// Upper-case `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        let a = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
        let b = u16::from_le_bytes([g[4], g[5]]);
        let c = u16::from_le_bytes([g[6], g[7]]);
        write!(f, "{a:08X}-{b:04X}-{c:04X}-{:02X}{:02X}-", g[8], g[9])?;
        for x in &g[10..16] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_spec() {
        let g = Guid::from_fields(
            0x2DC2_7766,
            0xF623,
            0x4200,
            [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
        );
        assert_eq!(g.to_string(), "2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(g.0[0], 0x66);
    }
}
