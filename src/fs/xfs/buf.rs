//! Bounds-checked big-endian field access over one on-disk XFS structure.

use crate::error::{Error, Result};

/// A borrowed block of metadata with the name of the structure it holds and
/// its absolute byte position (for error messages).
#[derive(Clone, Copy)]
pub struct Buf<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// Structure name used in errors, e.g. "xfs superblock".
    pub structure: &'a str,
    /// Absolute byte offset of `data[0]` in the filesystem.
    pub at: u64,
}

impl<'a> Buf<'a> {
    /// Wrap `data` (which starts at filesystem byte `at`).
    pub fn new(data: &'a [u8], structure: &'a str, at: u64) -> Self {
        Buf {
            data,
            structure,
            at,
        }
    }

    /// Absolute byte offset of `off` inside the block.
    pub fn pos(&self, off: usize) -> u64 {
        self.at
            .saturating_add(u64::try_from(off).unwrap_or(u64::MAX))
    }

    /// `len` bytes at `off`, or a corruption naming `field`.
    pub fn bytes(&self, off: usize, len: usize, field: &str) -> Result<&'a [u8]> {
        off.checked_add(len)
            .and_then(|end| self.data.get(off..end))
            .ok_or_else(|| {
                Error::corrupt(
                    self.structure,
                    field,
                    self.pos(off),
                    format!("{len} bytes inside the {}-byte block", self.data.len()),
                    format!("offset {off}"),
                )
            })
    }

    fn array<const N: usize>(&self, off: usize, field: &str) -> Result<[u8; N]> {
        let s = self.bytes(off, N, field)?;
        <[u8; N]>::try_from(s)
            .map_err(|_| Error::corrupt(self.structure, field, self.pos(off), N, s.len()))
    }

    /// One byte.
    pub fn u8(&self, off: usize, field: &str) -> Result<u8> {
        Ok(self.array::<1>(off, field)?[0])
    }

    /// Big-endian u16.
    pub fn u16(&self, off: usize, field: &str) -> Result<u16> {
        self.array(off, field).map(u16::from_be_bytes)
    }

    /// Big-endian u32.
    pub fn u32(&self, off: usize, field: &str) -> Result<u32> {
        self.array(off, field).map(u32::from_be_bytes)
    }

    /// Big-endian u64.
    pub fn u64(&self, off: usize, field: &str) -> Result<u64> {
        self.array(off, field).map(u64::from_be_bytes)
    }

    /// 16 raw bytes (a UUID).
    pub fn uuid(&self, off: usize, field: &str) -> Result<[u8; 16]> {
        self.array(off, field)
    }

    /// A corruption of `field` at `off` inside this block.
    pub fn corrupt(
        &self,
        off: usize,
        field: &str,
        expected: impl std::fmt::Display,
        found: impl std::fmt::Display,
    ) -> Error {
        Error::corrupt(self.structure, field, self.pos(off), expected, found)
    }
}
