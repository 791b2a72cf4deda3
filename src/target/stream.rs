//! The one-pass conversion engine.
//!
//! [`stream`] walks a source's allocation map in order and delivers it as
//! [`Piece`]s cut on an absolute grid of `chunk` bytes. Data pieces are read
//! (and optionally transformed: compressed, checked for zeros) on rayon
//! workers in batches, while the caller's sink consumes the previous batch in
//! order on the calling thread. Zero extents are never read. Memory in flight
//! is bounded by [`BATCH_BYTES`] times the channel depth.

use crate::block::{for_each_window, BlockSource, ExtentKind};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

/// Bytes of data read per parallel batch: 16 MiB.
pub const BATCH_BYTES: u64 = 16 << 20;

/// Batches queued between the readers and the writer.
const QUEUE_DEPTH: usize = 2;

/// One piece of the disk, in order.
#[derive(Debug)]
pub enum Piece<T> {
    /// Allocated bytes at `offset`, with the worker's result for them.
    Data {
        /// Offset in the virtual disk.
        offset: u64,
        /// The bytes read.
        buf: Vec<u8>,
        /// What the transform returned.
        extra: T,
    },
    /// `len` bytes at `offset` that read as zeros (not read).
    Zero {
        /// Offset in the virtual disk.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

enum Task {
    Data { offset: u64, len: usize },
    Zero { offset: u64, len: u64 },
}

/// Stream `src` in order; see the module docs. `work` runs in parallel on each
/// data piece (it may rewrite the buffer); `sink` runs in order.
pub fn stream<T: Send>(
    src: &dyn BlockSource,
    chunk: u64,
    work: impl Fn(u64, &mut Vec<u8>) -> Result<T> + Sync,
    mut sink: impl FnMut(Piece<T>) -> Result<()>,
) -> Result<()> {
    let chunk = chunk.max(512);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<Vec<Piece<T>>>>(QUEUE_DEPTH);
        let work = &work;
        let producer = scope.spawn(move || {
            let mut batch: Vec<Task> = Vec::new();
            let mut batch_bytes = 0u64;
            let flush = |batch: &mut Vec<Task>| -> bool {
                let tasks = std::mem::take(batch);
                let out: Result<Vec<Piece<T>>> = tasks
                    .into_par_iter()
                    .map(|t| match t {
                        Task::Zero { offset, len } => Ok(Piece::Zero { offset, len }),
                        Task::Data { offset, len } => {
                            let mut buf = take_buffer(len);
                            src.read_at(offset, &mut buf)?;
                            let extra = work(offset, &mut buf)?;
                            Ok(Piece::Data { offset, buf, extra })
                        }
                    })
                    .collect();
                let failed = out.is_err();
                tx.send(out).is_ok() && !failed
            };
            let walked = for_each_window(src, |ext| {
                match ext.kind {
                    ExtentKind::Zero => batch.push(Task::Zero {
                        offset: ext.offset,
                        len: ext.len,
                    }),
                    ExtentKind::Data => {
                        let mut off = ext.offset;
                        while off < ext.end() {
                            let grid_end = (off / chunk + 1).saturating_mul(chunk);
                            let end = grid_end.min(ext.end());
                            let len = usize::try_from(end - off)
                                .map_err(|_| Error::invalid("chunk too large"))?;
                            batch.push(Task::Data { offset: off, len });
                            batch_bytes += end - off;
                            off = end;
                            if batch_bytes >= BATCH_BYTES {
                                batch_bytes = 0;
                                if !flush(&mut batch) {
                                    return Err(Error::invalid("stopped"));
                                }
                            }
                        }
                    }
                }
                if batch.len() >= 4096 {
                    batch_bytes = 0;
                    if !flush(&mut batch) {
                        return Err(Error::invalid("stopped"));
                    }
                }
                Ok(())
            });
            match walked {
                Ok(()) => {
                    flush(&mut batch);
                }
                Err(e) => {
                    // A read error was already sent by flush; a map error is sent here.
                    if e.message() != "stopped" {
                        let _ = tx.send(Err(e));
                    }
                }
            }
        });
        let mut result = Ok(());
        for batch in rx {
            match batch {
                Ok(pieces) => {
                    for p in pieces {
                        if let Err(e) = sink(p) {
                            result = Err(e);
                            break;
                        }
                    }
                }
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                break;
            }
        }
        // Dropping rx (by leaving the loop) makes the producer stop at its next send.
        let joined = producer.join();
        match (result, joined) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(_)) => Err(Error::new(
                crate::error::ErrorKind::Io,
                "a reader thread panicked",
            )),
            (Ok(()), Ok(())) => Ok(()),
        }
    })
}

/// Chunk buffers kept for reuse. A fresh 1 MiB allocation is a fresh mmap:
/// page faults, kernel page clearing and unmapping for every MiB converted
/// cost more than the copy itself; reused buffers stay mapped.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Buffers the pool keeps at most (the rest are freed): about what is in
/// flight in the pipeline, so reuse does not raise the memory bound.
const POOL_MAX: usize = 64;

/// Largest buffer the pool keeps.
const POOL_MAX_CAPACITY: usize = 4 << 20;

/// A zero-filled buffer of `len` bytes, reused from the pool when one is free.
pub fn take_buffer(len: usize) -> Vec<u8> {
    let reused = POOL.lock().ok().and_then(|mut p| p.pop());
    match reused {
        Some(mut b) => {
            b.clear();
            b.resize(len, 0);
            b
        }
        None => vec![0u8; len],
    }
}

/// Give a buffer back to the pool (dropped when the pool is full or the
/// buffer is too large to keep).
pub fn give_buffer(buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY {
        return;
    }
    if let Ok(mut p) = POOL.lock() {
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    }
}

/// Give a shared buffer back when this was its last reference.
pub fn give_shared(buf: Arc<Vec<u8>>) {
    if let Ok(b) = Arc::try_unwrap(buf) {
        give_buffer(b);
    }
}

/// Granularity at which data pieces are checked for zeros, so that zeroed
/// blocks inside allocated extents also become holes: 4 KiB (qemu-img's `-S` default).
pub const ZERO_GRAIN: usize = 4096;

/// Write one data piece into `out`, turning all-zero 4 KiB grains (on the
/// absolute grid) into holes and coalescing the rest into large writes.
pub fn write_sparse(out: &mut super::output::OutputFile, offset: u64, buf: Vec<u8>) -> Result<()> {
    let buf = Arc::new(buf);
    let mut i = 0usize;
    let n = buf.len();
    let mut run_start: Option<usize> = None;
    let mut zero_run = 0u64;
    while i < n {
        let abs = offset + i as u64;
        let to_grid = ZERO_GRAIN - (abs % ZERO_GRAIN as u64) as usize;
        let end = (i + to_grid).min(n);
        let zero = crate::block::is_zero(&buf[i..end]);
        if zero {
            if let Some(s) = run_start.take() {
                out.write_shared(buf.clone(), s..i)?;
            }
            zero_run += (end - i) as u64;
        } else {
            if zero_run > 0 {
                out.skip_zeros(zero_run)?;
                zero_run = 0;
            }
            if run_start.is_none() {
                run_start = Some(i);
            }
        }
        i = end;
    }
    if let Some(s) = run_start {
        out.write_shared(buf.clone(), s..n)?;
    }
    // The hasher may still hold it; then it gives it back itself.
    give_shared(buf);
    out.skip_zeros(zero_run)
}
