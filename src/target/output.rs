//! Atomic, sparse, hashed output files.
//!
//! An [`OutputFile`] is written strictly front to back: [`write`](OutputFile::write)
//! appends bytes, [`skip_zeros`](OutputFile::skip_zeros) appends a hole (a
//! [`PlacedWriter`] lets workers write ahead in place, accounted for in order
//! afterwards). Bytes go to a temporary file beside the destination;
//! [`finish`](OutputFile::finish) sets its length and renames it into place, so an
//! interrupted run leaves nothing under the final name (with [`FSYNC_ENV`] it is
//! also flushed to disk first). Digests are computed on a separate thread from the bytes as they are
//! written (holes hashed as zeros), never by reading the output back.

use crate::error::{Error, IoContext, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A digest algorithm onramp can compute while writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgo {
    /// SHA-256 (what manifests and galleries use).
    Sha256,
    /// MD5 (Azure's Content-MD5).
    Md5,
}

impl DigestAlgo {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgo::Sha256 => "sha256",
            DigestAlgo::Md5 => "md5",
        }
    }
}

/// What a finished output looks like.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputSummary {
    /// Final path.
    pub path: PathBuf,
    /// File size in bytes (logical).
    pub file_size: u64,
    /// Bytes actually written (holes excluded).
    pub bytes_written: u64,
    /// Requested digests, lower-case hex, in the order asked.
    pub digests: Vec<(DigestAlgo, String)>,
}

enum Msg {
    Data(Arc<Vec<u8>>, std::ops::Range<usize>),
    Zeros(u64),
}

/// Zeros fed to the hashers for holes: one static 1 MiB block (in .bss, so
/// it costs no file size and its pages stay hot in cache; no allocation per
/// hole and few calls per GiB of zeros).
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Messages queued for the hasher. Each holds at most one reference to a
/// chunk buffer (at most [`super::stream::IN_FLIGHT_BYTES`] in all is in flight
/// each), enough to keep the hash thread fed while the writer works.
const HASH_QUEUE: usize = 16;

/// Set to `1` to make [`OutputFile::finish`] durable: the data is flushed
/// to disk (`fsync`, with background `fdatasync`s while writing) before the
/// rename, and the directory after it. Off by default, as in `qemu-img
/// convert`, `cp` and `dd`: atomicity does not need it (an interrupted run
/// never leaves a partial file under the final name, the rename is the last
/// step), only surviving a power cut right after the run does, and the
/// flush is most of the run's time on a slow disk.
pub const FSYNC_ENV: &str = "ONRAMP_FSYNC";

/// Bytes written between two background flushes: writeback starts while the
/// conversion runs, so [`OutputFile::finish`]'s final sync finds little left
/// to write.
const FLUSH_EVERY: u64 = 64 << 20;

struct Hasher {
    tx: Option<Sender<Msg>>,
    handle: Option<JoinHandle<Vec<(DigestAlgo, String)>>>,
}

impl Hasher {
    fn start(algos: &[DigestAlgo]) -> Self {
        let algos: Vec<DigestAlgo> = algos.to_vec();
        let (tx, rx): (Sender<Msg>, Receiver<Msg>) = bounded(HASH_QUEUE);
        let handle = std::thread::spawn(move || {
            let mut sha = algos.contains(&DigestAlgo::Sha256).then(Sha256::new);
            let mut md5 = algos.contains(&DigestAlgo::Md5).then(Md5::new);
            let mut feed = |b: &[u8]| {
                if let Some(h) = sha.as_mut() {
                    h.update(b);
                }
                if let Some(h) = md5.as_mut() {
                    h.update(b);
                }
            };
            for msg in rx {
                match msg {
                    Msg::Data(b, r) => {
                        feed(b.get(r).unwrap_or(&[]));
                        super::stream::give_shared(b);
                    }
                    Msg::Zeros(mut n) => {
                        while n > 0 {
                            let k = n.min(ZEROS.len() as u64);
                            feed(&ZEROS[..k as usize]);
                            n -= k;
                        }
                    }
                }
            }
            let sha = sha.map(|h| hex(&h.finalize()));
            let md5 = md5.map(|h| hex(&h.finalize()));
            algos
                .iter()
                .map(|a| {
                    let v = match a {
                        DigestAlgo::Sha256 => sha.clone(),
                        DigestAlgo::Md5 => md5.clone(),
                    };
                    (*a, v.unwrap_or_default())
                })
                .collect()
        });
        Hasher {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    fn send(&self, m: Msg) {
        if let Some(tx) = &self.tx {
            // The receiver only goes away if the hash thread panicked; finish() reports that.
            let _sent = tx.send(m).is_ok();
        }
    }

    fn finish(mut self) -> Result<Vec<(DigestAlgo, String)>> {
        drop(self.tx.take());
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(v)) => Ok(v),
            _ => Err(Error::new(
                crate::error::ErrorKind::Io,
                "the hashing thread failed",
            )),
        }
    }
}

/// Starts writeback of what has been written so far on its own thread
/// (`fdatasync`), so the disk works while the conversion goes on; requests
/// while one sync runs are coalesced.
struct Flusher {
    tx: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
    next: u64,
}

impl Flusher {
    fn start(file: &File) -> Option<Self> {
        let file = file.try_clone().ok()?;
        let (tx, rx) = bounded::<()>(1);
        let handle = std::thread::spawn(move || {
            for () in rx {
                // Best effort: finish() does the sync that counts and reports errors.
                let _ = file.sync_data();
            }
        });
        Some(Flusher {
            tx: Some(tx),
            handle: Some(handle),
            next: FLUSH_EVERY,
        })
    }

    fn written(&mut self, total: u64) {
        if total >= self.next {
            self.next = total.saturating_add(FLUSH_EVERY);
            if let Some(tx) = &self.tx {
                let _ = tx.try_send(());
            }
        }
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Writes a piece of an [`OutputFile`] in place from a worker thread; see
/// [`OutputFile::placed_writer`].
pub struct PlacedWriter {
    file: File,
    base: u64,
    path: PathBuf,
}

impl PlacedWriter {
    /// Write `buf` at `offset` bytes past the position the writer was made at.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let at = self
            .base
            .checked_add(offset)
            .ok_or_else(|| Error::invalid("output size overflows"))?;
        self.file
            .write_all_at(buf, at)
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e))
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An output being written; see the module docs.
pub struct OutputFile {
    final_path: PathBuf,
    tmp_path: PathBuf,
    file: File,
    pos: u64,
    bytes_written: u64,
    hasher: Option<Hasher>,
    flusher: Option<Flusher>,
    durable: bool,
    finished: bool,
}

impl OutputFile {
    /// Start writing `path`. An existing file is refused unless `force`.
    pub fn create(path: &Path, force: bool, digests: &[DigestAlgo]) -> Result<Self> {
        if !force && path.symlink_metadata().is_ok() {
            return Err(Error::invalid(format!(
                "{} already exists (use --force to replace it)",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{} is not a file path", path.display())))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp_path = dir.join(format!(
            ".{}.onramp-tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .ctx(|| format!("create {}", tmp_path.display()))?;
        let durable = std::env::var_os(FSYNC_ENV).is_some_and(|v| v == "1");
        let flusher = if durable { Flusher::start(&file) } else { None };
        Ok(OutputFile {
            durable,
            flusher,
            final_path: path.to_path_buf(),
            tmp_path,
            file,
            pos: 0,
            bytes_written: 0,
            hasher: (!digests.is_empty()).then(|| Hasher::start(digests)),
            finished: false,
        })
    }

    /// Current length of the output (where the next byte goes).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// A scratch file beside the output (same file system, so never on a
    /// RAM-backed /tmp), already unlinked: it vanishes when dropped. Writers
    /// whose metadata precedes their data spool the data here first.
    pub fn spool_file(&self) -> Result<File> {
        let mut name = self.tmp_path.clone().into_os_string();
        name.push(".spool");
        let p = PathBuf::from(name);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .ctx(|| format!("create {}", p.display()))?;
        std::fs::remove_file(&p).ctx(|| format!("unlink {}", p.display()))?;
        Ok(f)
    }

    /// Append `buf`.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.write_owned(buf.to_vec())
    }

    /// Append an owned buffer (avoids a copy when hashing).
    pub fn write_owned(&mut self, buf: Vec<u8>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&buf, self.pos)
            .map_err(|e| Error::io(format!("write {}", self.final_path.display()), e))?;
        let n = buf.len() as u64;
        self.pos += n;
        self.bytes_written += n;
        if let Some(f) = self.flusher.as_mut() {
            f.written(self.bytes_written);
        }
        if let Some(h) = &self.hasher {
            let len = buf.len();
            h.send(Msg::Data(Arc::new(buf), 0..len));
        }
        Ok(())
    }

    /// Append a shared buffer (the hasher keeps a reference, no copy).
    pub fn write_shared(&mut self, buf: Arc<Vec<u8>>, range: std::ops::Range<usize>) -> Result<()> {
        let slice = buf.get(range.clone()).unwrap_or(&[]);
        if slice.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(slice, self.pos)
            .map_err(|e| Error::io(format!("write {}", self.final_path.display()), e))?;
        self.wrote_shared(buf, range)
    }

    /// A writer that puts bytes at their final place from any thread, ahead
    /// of this file's front-to-back accounting: offsets are relative to the
    /// current position. What it writes must then be appended, in order,
    /// with [`wrote_shared`](Self::wrote_shared) (holes with
    /// [`skip_zeros`](Self::skip_zeros)), which advances the position and
    /// feeds the digests without writing again.
    pub fn placed_writer(&self) -> Result<PlacedWriter> {
        Ok(PlacedWriter {
            file: self
                .file
                .try_clone()
                .ctx(|| format!("reopen {}", self.tmp_path.display()))?,
            base: self.pos,
            path: self.final_path.clone(),
        })
    }

    /// Append `buf[range]`, which a [`PlacedWriter`] already wrote at the
    /// current position: only the accounting and the digests.
    pub fn wrote_shared(&mut self, buf: Arc<Vec<u8>>, range: std::ops::Range<usize>) -> Result<()> {
        let n = range.len() as u64;
        if n == 0 || buf.get(range.clone()).is_none() {
            return Ok(());
        }
        self.pos += n;
        self.bytes_written += n;
        if let Some(f) = self.flusher.as_mut() {
            f.written(self.bytes_written);
        }
        if let Some(h) = &self.hasher {
            h.send(Msg::Data(buf, range));
        }
        Ok(())
    }

    /// Append `len` zero bytes as a hole (nothing is written).
    pub fn skip_zeros(&mut self, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.pos = self
            .pos
            .checked_add(len)
            .ok_or_else(|| Error::invalid("output size overflows"))?;
        if let Some(h) = &self.hasher {
            h.send(Msg::Zeros(len));
        }
        Ok(())
    }

    /// Set the final length, flush, rename into place.
    pub fn finish(mut self) -> Result<OutputSummary> {
        let path = self.final_path.clone();
        if let Some(mut f) = self.flusher.take() {
            f.stop();
        }
        self.file
            .set_len(self.pos)
            .ctx(|| format!("set length of {}", path.display()))?;
        if self.durable {
            self.file
                .sync_all()
                .ctx(|| format!("flush {}", path.display()))?;
        }
        let digests = match self.hasher.take() {
            Some(h) => h.finish()?,
            None => Vec::new(),
        };
        std::fs::rename(&self.tmp_path, &path).ctx(|| format!("rename into {}", path.display()))?;
        if let Some(dir) = path
            .parent()
            .filter(|p| self.durable && !p.as_os_str().is_empty())
        {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.finished = true;
        Ok(OutputSummary {
            path,
            file_size: self.pos,
            bytes_written: self.bytes_written,
            digests,
        })
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
