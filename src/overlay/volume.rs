//! A writable view of one guest volume inside the overlay.
//!
//! Filesystem writers address their filesystem in volume-relative bytes. A
//! partition is one range of the disk; a linear LVM logical volume is several
//! (its segments, in order). [`VolumeDev`] maps every read and write through
//! that segment list onto the [`Overlay`], so a write to an LV lands at the
//! right offsets of the physical volume and never outside the volume.

use super::Overlay;
use crate::block::{check_range, BlockSource};
use crate::error::{Error, Result};
use crate::partition::{Concat, Volume};
use std::sync::Arc;

/// One volume of the overlay, read and written in volume-relative offsets.
#[derive(Clone)]
pub struct VolumeDev {
    ov: Arc<Overlay>,
    view: Arc<Concat>,
}

impl VolumeDev {
    /// The volume made of `segments` (disk offset, len) of `ov`.
    pub fn new(ov: Arc<Overlay>, segments: &[(u64, u64)]) -> Result<Self> {
        if segments.is_empty() {
            return Err(Error::invalid("a volume needs at least one segment"));
        }
        let disk: Arc<dyn BlockSource> = ov.clone();
        let view = Arc::new(Concat::new(disk, segments)?);
        Ok(VolumeDev { ov, view })
    }

    /// The volume `vol` of `ov` (a partition or a linear logical volume).
    pub fn of(ov: Arc<Overlay>, vol: &Volume) -> Result<Self> {
        Self::new(ov, &vol.segments)
    }

    /// One contiguous range of `ov`.
    pub fn range(ov: Arc<Overlay>, start: u64, len: u64) -> Result<Self> {
        Self::new(ov, &[(start, len)])
    }

    /// Size of the volume in bytes.
    pub fn len(&self) -> u64 {
        self.view.size()
    }

    /// True for an empty volume.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The volume as a read-only block source (sees every write made so far).
    pub fn source(&self) -> Arc<dyn BlockSource> {
        self.view.clone()
    }

    /// The overlay underneath.
    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.ov
    }

    /// Read `buf.len()` bytes at volume offset `off`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.view.read_at(off, buf)
    }

    /// Write `data` at volume offset `off` (copy-on-write in the overlay);
    /// a write that would leave the volume fails and writes nothing.
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        check_range(self.len(), off, len).map_err(|_| {
            Error::invalid(format!(
                "write of {len} bytes at byte {off} leaves the {}-byte volume",
                self.len()
            ))
        })?;
        for (vo, disk, l) in self.view.pieces(off, len) {
            let a = (vo - off) as usize;
            self.ov.write_at(disk, &data[a..a + l as usize])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockSource;

    struct Zeros(u64);
    impl BlockSource for Zeros {
        fn size(&self) -> u64 {
            self.0
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            check_range(self.0, offset, buf.len() as u64)?;
            buf.fill(0);
            Ok(())
        }
        fn map(&self, offset: u64, len: u64) -> Result<Vec<crate::block::Extent>> {
            let mut m = crate::block::MapBuilder::new();
            m.push(offset, len, crate::block::ExtentKind::Zero);
            Ok(m.finish())
        }
        fn format_name(&self) -> &'static str {
            "zeros"
        }
    }

    #[test]
    fn writes_follow_segments_and_stay_inside() {
        let ov = Arc::new(Overlay::new(Arc::new(Zeros(1 << 20)), None));
        // Volume = disk[64K..72K] ++ disk[8K..12K].
        let dev = VolumeDev::new(ov.clone(), &[(65536, 8192), (8192, 4096)]).unwrap();
        assert_eq!(dev.len(), 12288);
        dev.write_at(8000, &[7u8; 400]).unwrap();
        let mut b = [0u8; 400];
        dev.read_at(8000, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        let mut d = [0u8; 1];
        ov.read_at(65536 + 8191, &mut d).unwrap();
        assert_eq!(d[0], 7);
        ov.read_at(8192 + 207, &mut d).unwrap();
        assert_eq!(d[0], 7);
        ov.read_at(8192 + 208, &mut d).unwrap();
        assert_eq!(d[0], 0);
        assert!(dev.write_at(12000, &[1u8; 400]).is_err());
        ov.read_at(8192 + 4095, &mut d).unwrap();
        assert_eq!(d[0], 0, "a refused write writes nothing");
    }
}
