//! Raw disk images: the file is the disk. The allocation map comes from the
//! host filesystem's SEEK_DATA / SEEK_HOLE, so holes are never read.

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, IoContext, Result};
use rustix::fs::SeekFrom;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A raw image file read positionally.
#[derive(Debug)]
pub struct RawReader {
    file: File,
    path: PathBuf,
    size: u64,
    /// The file system supports SEEK_DATA (else the whole file is Data).
    seek_data: bool,
}

impl RawReader {
    /// Open `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
        Self::from_file(file, path)
    }

    /// Use an already open file (e.g. a member of a container at offset 0).
    pub fn from_file(file: File, path: &Path) -> Result<Self> {
        let size = file.metadata().ctx(|| "stat".into())?.len();
        // ENXIO means "no data after this offset" (an all-hole file): supported.
        let seek_data = matches!(
            rustix::fs::seek(&file, SeekFrom::Data(0)),
            Ok(_) | Err(rustix::io::Errno::NXIO)
        );
        Ok(RawReader {
            file,
            path: path.to_path_buf(),
            size,
            seek_data,
        })
    }
}

/// Read exactly `buf.len()` bytes at `offset` of `file`.
pub fn read_exact_at(file: &File, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt_msg(format!(
                "{what}: {} bytes at byte {offset} run past the end of the file",
                buf.len()
            ))
        } else {
            Error::io(format!("read {what} at byte {offset}"), e)
        }
    })
}

impl BlockSource for RawReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(
            self.size,
            offset,
            u64::try_from(buf.len()).unwrap_or(u64::MAX),
        )?;
        self.file
            .read_exact_at(buf, offset)
            .ctx(|| format!("read {} at byte {offset}", self.path.display()))
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        let end = offset.saturating_add(len);
        let mut m = MapBuilder::new();
        if !self.seek_data {
            m.push(offset, len, ExtentKind::Data);
            return Ok(m.finish());
        }
        let mut pos = offset;
        while pos < end {
            let data = match rustix::fs::seek(&self.file, SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => end,
                Err(e) => return Err(Error::io("SEEK_DATA", e.into())),
            };
            let data = data.clamp(pos, end);
            m.push(pos, data.saturating_sub(pos), ExtentKind::Zero);
            if data >= end {
                break;
            }
            let hole = match rustix::fs::seek(&self.file, SeekFrom::Hole(data)) {
                Ok(h) => h,
                Err(e) => return Err(Error::io("SEEK_HOLE", e.into())),
            };
            // A hole must lie strictly after data; guard against a file system
            // that says otherwise so the loop always advances.
            let hole = hole.clamp(data.saturating_add(1), end);
            m.push(data, hole.saturating_sub(data), ExtentKind::Data);
            pos = hole;
        }
        Ok(m.finish())
    }

    fn format_name(&self) -> &'static str {
        "raw"
    }
}
