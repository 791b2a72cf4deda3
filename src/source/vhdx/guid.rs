//! GUIDs as VHDX stores them: 16 bytes, the first three fields little-endian
//! (Microsoft's mixed-endian layout).

/// A GUID in its on-disk byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parse the textual form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (as the
    /// spec prints it) into the on-disk order: the first three fields are
    /// stored little-endian, the last two as written.
    // Only for `const` items holding the spec's GUIDs: the compiler evaluates
    // it on literals, so a malformed literal (bad digit, wrong length) is a
    // build error, never a panic at run time on input bytes.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::panic
    )]
    pub const fn parse(text: &str) -> Guid {
        const fn hex(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("GUID literal: not a hex digit"),
            }
        }
        let s = text.as_bytes();
        assert!(s.len() == 36, "GUID literal: not 36 characters");
        let mut t = [0u8; 16];
        let (mut i, mut o) = (0, 0);
        while i < s.len() {
            if s[i] == b'-' {
                i += 1;
                continue;
            }
            t[o] = (hex(s[i]) << 4) | hex(s[i + 1]);
            o += 1;
            i += 2;
        }
        Guid([
            t[3], t[2], t[1], t[0], t[5], t[4], t[7], t[6], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15],
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
        let g = Guid::parse("2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(g.to_string(), "2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(
            g.0,
            [
                0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
                0x4A, 0x08
            ]
        );
    }
}
