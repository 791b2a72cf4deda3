//! The one-pass conversion engine.
//!
//! [`stream`] walks a source's allocation map in order and delivers it as
//! [`Piece`]s cut on an absolute grid of `chunk` bytes. Data pieces are read
//! (and optionally transformed: compressed, checked for zeros, written) by a
//! few worker threads, while the caller's sink consumes them in order on the
//! calling thread. There is no barrier between workers: each takes the next
//! piece as soon as it is free, and finished pieces wait in a small reorder
//! buffer until their turn. Zero extents are never read. A fixed number of
//! tokens ([`IN_FLIGHT_BYTES`] worth of chunks) bounds what is in flight
//! between the map walk and the sink, so memory does not depend on the
//! disk's size.

use crate::block::{for_each_window, BlockSource, ExtentKind};
use crate::error::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Bytes of chunks in flight between the map walk and the sink (read or
/// being read, waiting to be sunk): 16 MiB (measured: 32 MiB is no faster
/// and costs more page faults for fresh buffers).
pub const IN_FLIGHT_BYTES: u64 = 16 << 20;

/// Most pieces in flight, whatever the chunk size.
const MAX_IN_FLIGHT: usize = 1024;

/// Most worker threads.
const MAX_WORKERS: usize = 8;

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

/// Worker threads: one per core (at least two, so that one reads while the
/// other waits for the disk), at most [`MAX_WORKERS`]. Measured on two
/// cores: four workers are slower than two on a loaded machine.
fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, MAX_WORKERS)
}

/// The error a producer or worker stops with when the sink has gone away.
fn stopped() -> Error {
    Error::invalid("stopped")
}

/// What the walk, the workers and the sink share, under one mutex. Waits
/// sleep on condition variables (futexes): a spinning or yielding wait would
/// give the CPU away to other processes on a loaded machine, and each one
/// costs the conversion a time slice.
struct Shared<T> {
    /// Data pieces to read: (sequence number, offset, length).
    tasks: VecDeque<(u64, u64, usize)>,
    /// Finished pieces waiting for their turn.
    done: BTreeMap<u64, Result<Piece<T>>>,
    /// Pieces handed out by the walk and not yet consumed by the sink.
    in_flight: usize,
    /// The walk has handed out its last piece.
    walked: bool,
    /// The sink stopped (error): everyone else stops too.
    stop: bool,
}

struct Engine<T> {
    state: Mutex<Shared<T>>,
    /// Signalled when a task is queued or the walk ends.
    task_ready: Condvar,
    /// Signalled when a piece is done.
    piece_done: Condvar,
    /// Signalled when the sink frees a slot or stops.
    slot_free: Condvar,
}

impl<T> Engine<T> {
    fn lock(&self) -> MutexGuard<'_, Shared<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tells the walk and the workers to stop when dropped.
struct StopOnDrop<'a, T>(&'a Engine<T>);

impl<T> Drop for StopOnDrop<'_, T> {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.slot_free.notify_all();
        self.0.task_ready.notify_all();
    }
}

fn panicked() -> Error {
    Error::new(ErrorKind::Io, "a reader thread panicked")
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
    let workers = worker_count();
    let slots = usize::try_from(IN_FLIGHT_BYTES / chunk)
        .unwrap_or(MAX_IN_FLIGHT)
        .clamp(2 * workers, MAX_IN_FLIGHT);
    let engine = Engine {
        state: Mutex::new(Shared {
            tasks: VecDeque::new(),
            done: BTreeMap::new(),
            in_flight: 0,
            walked: false,
            stop: false,
        }),
        task_ready: Condvar::new(),
        piece_done: Condvar::new(),
        slot_free: Condvar::new(),
    };
    let engine = &engine;
    let work = &work;
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers + 1);
        for _ in 0..workers {
            handles.push(scope.spawn(move || loop {
                let (seq, offset, len) = {
                    let mut g = engine.lock();
                    loop {
                        if g.stop {
                            return;
                        }
                        if let Some(t) = g.tasks.pop_front() {
                            break t;
                        }
                        if g.walked {
                            return;
                        }
                        g = engine
                            .task_ready
                            .wait(g)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                };
                let r = catch_unwind(AssertUnwindSafe(|| -> Result<Piece<T>> {
                    let mut buf = take_buffer(len);
                    src.read_at(offset, &mut buf)?;
                    let extra = work(offset, &mut buf)?;
                    Ok(Piece::Data { offset, buf, extra })
                }))
                .unwrap_or_else(|_| Err(panicked()));
                engine.lock().done.insert(seq, r);
                engine.piece_done.notify_one();
            }));
        }
        handles.push(scope.spawn(move || {
            let mut seq = 0u64;
            let mut emit = |zero: bool, offset: u64, len: u64| -> Result<()> {
                let n = usize::try_from(len).map_err(|_| Error::invalid("chunk too large"))?;
                let mut g = engine.lock();
                while g.in_flight >= slots && !g.stop {
                    g = engine
                        .slot_free
                        .wait(g)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if g.stop {
                    return Err(stopped());
                }
                g.in_flight += 1;
                if zero {
                    g.done.insert(seq, Ok(Piece::Zero { offset, len }));
                    drop(g);
                    engine.piece_done.notify_one();
                } else {
                    g.tasks.push_back((seq, offset, n));
                    drop(g);
                    engine.task_ready.notify_one();
                }
                seq += 1;
                Ok(())
            };
            let walked = catch_unwind(AssertUnwindSafe(|| {
                for_each_window(src, |ext| match ext.kind {
                    ExtentKind::Zero => emit(true, ext.offset, ext.len),
                    ExtentKind::Data => {
                        let mut off = ext.offset;
                        while off < ext.end() {
                            let grid_end = (off / chunk + 1).saturating_mul(chunk);
                            let end = grid_end.min(ext.end());
                            emit(false, off, end - off)?;
                            off = end;
                        }
                        Ok(())
                    }
                })
            }))
            .unwrap_or_else(|_| Err(panicked()));
            let mut g = engine.lock();
            if let Err(e) = walked {
                if e.message() != "stopped" {
                    // Delivered in turn, after every piece before it.
                    g.in_flight += 1;
                    g.done.insert(seq, Err(e));
                }
            }
            g.walked = true;
            drop(g);
            engine.task_ready.notify_all();
            engine.piece_done.notify_one();
        }));
        // However the sink loop ends (error or panic), the others stop.
        let stop_guard = StopOnDrop(engine);
        let mut next = 0u64;
        let mut result = Ok(());
        let mut ready = Vec::new();
        'sink: loop {
            {
                let mut g = engine.lock();
                loop {
                    while let Some(r) = g.done.remove(&(next + ready.len() as u64)) {
                        ready.push(r);
                    }
                    if !ready.is_empty() || (g.walked && g.in_flight == 0) {
                        break;
                    }
                    g = engine
                        .piece_done
                        .wait(g)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            if ready.is_empty() {
                break;
            }
            let n = ready.len();
            for r in ready.drain(..) {
                next += 1;
                if let Err(e) = r.and_then(&mut sink) {
                    result = Err(e);
                    break 'sink;
                }
            }
            engine.lock().in_flight -= n;
            engine.slot_free.notify_one();
        }
        drop(stop_guard);
        let any_panicked = handles.into_iter().any(|h| h.join().is_err());
        engine.lock().done.clear();
        match result {
            Err(e) => Err(e),
            Ok(()) if any_panicked => Err(panicked()),
            Ok(()) => Ok(()),
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

/// A buffer of `len` bytes, reused from the pool when one is free. Its
/// contents are unspecified (a reused buffer keeps what it last held, so
/// that taking one costs no memset): it is meant to be filled whole by a
/// [`BlockSource::read_at`], whose contract is to fill all of it or fail
/// (the conformance check poisons its buffers to prove every reader does).
pub fn take_buffer(len: usize) -> Vec<u8> {
    let reused = POOL.lock().ok().and_then(|mut p| p.pop());
    match reused {
        Some(mut b) if b.len() >= len => {
            b.truncate(len);
            b
        }
        Some(mut b) => {
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

/// The parts of `buf` (a data piece at disk offset `offset`) that are not
/// all-zero 4 KiB grains on the absolute grid, merged into maximal ranges.
pub fn data_runs(offset: u64, buf: &[u8]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let n = buf.len();
    let mut i = 0usize;
    while i < n {
        let abs = offset + i as u64;
        let to_grid = ZERO_GRAIN - (abs % ZERO_GRAIN as u64) as usize;
        let end = (i + to_grid).min(n);
        if !crate::block::is_zero(&buf[i..end]) {
            match runs.last_mut() {
                Some(r) if r.end == i => r.end = end,
                _ => runs.push(i..end),
            }
        }
        i = end;
    }
    runs
}

/// Account for one data piece in `out`, given its non-zero `runs` (from
/// [`data_runs`]): zero gaps become holes, runs are written with `write`.
fn put_runs(
    out: &mut super::output::OutputFile,
    buf: Vec<u8>,
    runs: &[Range<usize>],
    mut write: impl FnMut(&mut super::output::OutputFile, Arc<Vec<u8>>, Range<usize>) -> Result<()>,
) -> Result<()> {
    let n = buf.len();
    let buf = Arc::new(buf);
    let mut at = 0usize;
    for r in runs {
        out.skip_zeros((r.start - at) as u64)?;
        write(out, buf.clone(), r.clone())?;
        at = r.end;
    }
    // The hasher may still hold it; then it gives it back itself.
    give_shared(buf);
    out.skip_zeros((n - at) as u64)
}

/// Write one data piece into `out`, turning all-zero 4 KiB grains (on the
/// absolute grid) into holes and coalescing the rest into large writes.
pub fn write_sparse(out: &mut super::output::OutputFile, offset: u64, buf: Vec<u8>) -> Result<()> {
    let runs = data_runs(offset, &buf);
    put_runs(out, buf, &runs, |out, b, r| out.write_shared(b, r))
}

/// Account in `out` for a data piece whose non-zero `runs` a worker already
/// wrote in place (with an [`super::output::PlacedWriter`]): holes and the
/// digests advance as if [`write_sparse`] had written it.
pub fn placed_sparse(
    out: &mut super::output::OutputFile,
    buf: Vec<u8>,
    runs: &[Range<usize>],
) -> Result<()> {
    put_runs(out, buf, runs, |out, b, r| out.wrote_shared(b, r))
}
