//! LZNT1 decompression and NTFS compression units ([MS-XCA] 2.5 "LZNT1";
//! NTFS stores a compressed `$DATA` in units of 16 clusters: a unit whose
//! clusters are all allocated is stored raw, one with no allocated cluster is
//! sparse (zeros), and one with some allocated clusters holds LZNT1 data in
//! those clusters).
//!
//! LZNT1: a sequence of chunks, each covering 4096 uncompressed bytes. A chunk
//! starts with a 16-bit header: bits 0-11 = chunk data size - 1, bit 15 =
//! compressed. A compressed chunk is groups of a flag byte and 8 tokens (bit
//! clear: one literal byte; bit set: a 16-bit back reference whose split
//! between length and displacement depends on the position in the chunk).
//! A header of 0 ends the stream.

use crate::error::{Error, Result};

/// Uncompressed bytes covered by one LZNT1 chunk.
pub const CHUNK: usize = 4096;

fn bad(what: &str, at: usize) -> Error {
    Error::corrupt(
        "NTFS LZNT1 compressed data",
        what,
        u64::try_from(at).unwrap_or(u64::MAX),
        "a valid LZNT1 stream",
        "an impossible value",
    )
}

/// Decompress `src` (the allocated clusters of one compression unit) into at
/// most `max_out` bytes; the result is zero-padded to `max_out`.
pub fn decompress_unit(src: &[u8], max_out: usize) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(max_out);
    let mut p = 0usize;
    while out.len() < max_out {
        let Some(h) = src.get(p..p.saturating_add(2)) else {
            break;
        };
        let h = u16::from_le_bytes([
            h.first().copied().unwrap_or(0),
            h.get(1).copied().unwrap_or(0),
        ]);
        if h == 0 {
            break;
        }
        let size = usize::from(h & 0x0FFF).saturating_add(1);
        let start = p.saturating_add(2);
        let data = src
            .get(start..start.saturating_add(size))
            .ok_or_else(|| bad("chunk size", p))?;
        p = start.saturating_add(size);
        let chunk_start = out.len();
        let chunk_end = chunk_start.saturating_add(CHUNK);
        if chunk_end > max_out {
            return Err(bad("chunk count", p));
        }
        if h & 0x8000 == 0 {
            out.extend_from_slice(data);
        } else {
            let mut i = 0usize;
            while let Some(&flags) = data.get(i) {
                i = i.saturating_add(1);
                for bit in 0..8u8 {
                    if i >= data.len() {
                        break;
                    }
                    if flags & (1u8 << bit) == 0 {
                        out.push(data.get(i).copied().unwrap_or(0));
                        i = i.saturating_add(1);
                    } else {
                        let t = data
                            .get(i..i.saturating_add(2))
                            .ok_or_else(|| bad("back reference", start.saturating_add(i)))?;
                        let tok = u16::from_le_bytes([
                            t.first().copied().unwrap_or(0),
                            t.get(1).copied().unwrap_or(0),
                        ]);
                        i = i.saturating_add(2);
                        let pos = out.len().saturating_sub(chunk_start);
                        if pos == 0 {
                            return Err(bad("back reference", start.saturating_add(i)));
                        }
                        let mut len_mask: u16 = 0x0FFF;
                        let mut disp_shift: u32 = 12;
                        let mut k = pos.saturating_sub(1);
                        while k >= 0x10 {
                            len_mask >>= 1;
                            disp_shift = disp_shift.saturating_sub(1);
                            k >>= 1;
                        }
                        let length = usize::from(tok & len_mask).saturating_add(3);
                        let disp =
                            usize::from(tok.checked_shr(disp_shift).unwrap_or(0)).saturating_add(1);
                        if disp > pos || pos.saturating_add(length) > CHUNK {
                            return Err(bad("back reference", start.saturating_add(i)));
                        }
                        for _ in 0..length {
                            let b = out
                                .get(out.len().saturating_sub(disp))
                                .copied()
                                .unwrap_or(0);
                            out.push(b);
                        }
                    }
                }
            }
        }
        if out.len() > chunk_end {
            return Err(bad("chunk length", p));
        }
        // A chunk shorter than 4096 bytes is followed by zeros.
        out.resize(chunk_end.min(max_out), 0);
    }
    out.resize(max_out, 0);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_back_reference() {
        // "abcabcabc": 3 literals, then a reference (disp 3, len 6).
        // pos = 3 -> len_mask 0xFFF, shift 12: tok = ((3-1) << 12) | (6-3).
        let tok: u16 = (2 << 12) | 3;
        let mut data = vec![0b0000_1000u8, b'a', b'b', b'c'];
        data.extend(tok.to_le_bytes());
        let h: u16 = 0x8000 | (u16::try_from(data.len()).unwrap() - 1);
        let mut src = h.to_le_bytes().to_vec();
        src.extend(&data);
        let out = decompress_unit(&src, 8192).unwrap();
        assert_eq!(&out[..9], b"abcabcabc");
        assert!(out[9..].iter().all(|&b| b == 0));
    }

    #[test]
    fn hostile_streams_fail_cleanly() {
        // Reference before any literal.
        let src = [0x02u8, 0x80, 0x01, 0x00, 0x00];
        assert!(decompress_unit(&src, 4096).is_err());
        // Chunk size past the end.
        assert!(decompress_unit(&[0xFF, 0x8F, 0], 4096).is_err());
        // Every short stream: no panic.
        for a in 0..=255u8 {
            for b in [0u8, 0x80, 0xB0, 0xFF] {
                let _ = decompress_unit(&[a, b, a, 0xFF, 0xFF, a, b], 4096);
            }
        }
    }
}
