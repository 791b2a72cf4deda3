//! [`FileRange`]: a window `[base, base+len)` of an open host file, read
//! positionally. VMDK extents, flat extent files and members of an OVA tar are
//! all read through it, so the readers never care whether their bytes are a
//! whole file or a piece of an archive. Reads past the window are corrupt-image
//! errors (the structure pointing there lies), never reads of the neighbour.

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, IoContext, Result};
use rustix::fs::SeekFrom;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `len` bytes of `file` starting at `base`.
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<File>,
    path: PathBuf,
    base: u64,
    len: u64,
}

impl FileRange {
    /// The whole of `path`, opened read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
        Self::whole(file, path)
    }

    /// The whole of an opened `file` (found at `path`).
    fn whole(file: File, path: &Path) -> Result<Self> {
        let len = file.metadata().ctx(|| "stat".into())?.len();
        Ok(FileRange {
            file: Arc::new(file),
            path: path.to_path_buf(),
            base: 0,
            len,
        })
    }

    /// The whole of `path`, refusing a symbolic link (O_NOFOLLOW): for files
    /// an image names beside itself (extents, parents), so a link planted
    /// next to the image cannot make onramp read a file elsewhere.
    pub fn open_beside(path: &Path, what: &str) -> Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                Error::invalid(format!(
                    "{what} {} is a symbolic link; onramp reads only plain files \
                     in the image's own directory",
                    path.display()
                ))
            } else {
                Error::io(format!("open {what} {}", path.display()), e.into())
            }
        })?;
        Self::whole(File::from(fd), path)
    }

    /// A window of this range; fails if it does not lie inside.
    pub fn sub(&self, offset: u64, len: u64, what: &str) -> Result<Self> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(FileRange {
                file: Arc::clone(&self.file),
                path: self.path.clone(),
                base: self.base.saturating_add(offset),
                len,
            }),
            _ => Err(Error::corrupt_msg(format!(
                "{what}: {len} bytes at byte {offset} run past the end of the {}-byte file",
                self.len
            ))),
        }
    }

    /// Length of the window.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the window starts in the host file.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The host file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read exactly `buf.len()` bytes at `offset` of the window; `what` names
    /// the structure for the error when the range runs past the window.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let n = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        match offset.checked_add(n) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(Error::corrupt_msg(format!(
                    "{what}: {n} bytes at byte {offset} run past the end of the {}-byte file",
                    self.len
                ))
                .at(&self.path))
            }
        }
        let abs = self.base.saturating_add(offset);
        self.file.read_exact_at(buf, abs).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt_msg(format!(
                    "{what}: {n} bytes at byte {offset} run past the end of the file (truncated?)"
                ))
                .at(&self.path)
            } else {
                Error::io(format!("read {what} at byte {offset}"), e).at(&self.path)
            }
        })
    }

    /// Read up to `max` bytes from `offset` (fewer at the end of the window).
    pub fn read_up_to(&self, offset: u64, max: u64, what: &str) -> Result<Vec<u8>> {
        let n = self.len.saturating_sub(offset).min(max);
        let mut v = vec![0u8; usize::try_from(n).unwrap_or(0)];
        self.read_exact_at(offset, &mut v, what)?;
        Ok(v)
    }

    /// Push the host file system's data/hole map of `[offset, offset+len)` of
    /// the window onto `m`, with virtual offsets shifted by `virt - offset`.
    /// Without SEEK_DATA support the whole range is Data.
    pub fn push_map(&self, offset: u64, len: u64, virt: u64, m: &mut MapBuilder) -> Result<()> {
        check_range(self.len, offset, len)?;
        let start = self.base.saturating_add(offset);
        let end = start.saturating_add(len);
        let to_virt = |abs: u64| virt.saturating_add(abs.saturating_sub(start));
        let mut pos = start;
        while pos < end {
            let data = match rustix::fs::seek(&*self.file, SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => end,
                Err(_) => {
                    // No SEEK_DATA here: all data.
                    m.push(to_virt(pos), end.saturating_sub(pos), ExtentKind::Data);
                    return Ok(());
                }
            };
            let data = data.clamp(pos, end);
            m.push(to_virt(pos), data.saturating_sub(pos), ExtentKind::Zero);
            if data >= end {
                break;
            }
            let hole = match rustix::fs::seek(&*self.file, SeekFrom::Hole(data)) {
                Ok(h) => h,
                Err(e) => return Err(Error::io("SEEK_HOLE", e.into()).at(&self.path)),
            };
            let hole = hole.clamp(data.saturating_add(1), end);
            m.push(to_virt(data), hole.saturating_sub(data), ExtentKind::Data);
            pos = hole;
        }
        Ok(())
    }
}

/// A [`FileRange`] seen as a raw disk (a raw member of an OVA).
impl BlockSource for FileRange {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(
            self.len,
            offset,
            u64::try_from(buf.len()).unwrap_or(u64::MAX),
        )?;
        self.read_exact_at(offset, buf, "raw data")
    }
    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.len, offset, len)?;
        let mut m = MapBuilder::new();
        self.push_map(offset, len, offset, &mut m)?;
        Ok(m.finish())
    }
    fn format_name(&self) -> &'static str {
        "raw"
    }
}
