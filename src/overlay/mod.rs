//! Copy-on-write over a [`BlockSource`]: the source plus planned writes.
//!
//! Filesystem writers (injection) write through [`Overlay::write_at`]; the
//! target writer streams the overlay like any other source. Nothing ever
//! touches the input. Written blocks live in memory up to a bound and spill to
//! an unlinked temporary file beyond it, so a large injection stays within
//! the process's memory budget.

pub mod volume;
pub use volume::VolumeDev;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, IoContext, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Granularity of copy-on-write: 4 KiB (the common filesystem block size).
pub const OVERLAY_BLOCK: u64 = 4096;

/// Bytes of written blocks kept in memory before spilling to disk: 64 MiB.
pub const MEMORY_BOUND: usize = 64 << 20;

enum Slot {
    Mem(Box<[u8]>),
    Spilled(u64),
}

struct State {
    blocks: BTreeMap<u64, Slot>,
    mem_bytes: usize,
    spill: Option<File>,
    spill_len: u64,
}

/// The source plus planned writes.
pub struct Overlay {
    base: Arc<dyn BlockSource>,
    state: RwLock<State>,
    spill_dir: Option<std::path::PathBuf>,
    memory_bound: usize,
}

impl Overlay {
    /// An overlay over `base`; spills go to `spill_dir` (else the system temp dir).
    pub fn new(base: Arc<dyn BlockSource>, spill_dir: Option<&Path>) -> Self {
        Overlay {
            base,
            state: RwLock::new(State {
                blocks: BTreeMap::new(),
                mem_bytes: 0,
                spill: None,
                spill_len: 0,
            }),
            spill_dir: spill_dir.map(Path::to_path_buf),
            memory_bound: MEMORY_BOUND,
        }
    }

    /// Same, with a custom memory bound (tests).
    pub fn with_memory_bound(mut self, bytes: usize) -> Self {
        self.memory_bound = bytes;
        self
    }

    /// Number of blocks written so far.
    pub fn dirty_blocks(&self) -> usize {
        self.state.read().map(|s| s.blocks.len()).unwrap_or(0)
    }

    fn lock_err() -> Error {
        Error::new(crate::error::ErrorKind::Io, "overlay lock poisoned")
    }

    fn read_block(&self, st: &State, idx: u64, out: &mut [u8]) -> Result<bool> {
        match st.blocks.get(&idx) {
            Some(Slot::Mem(b)) => {
                out.copy_from_slice(b);
                Ok(true)
            }
            Some(Slot::Spilled(off)) => {
                let f = st.spill.as_ref().ok_or_else(Self::lock_err)?;
                f.read_exact_at(out, *off)
                    .ctx(|| "read overlay spill file".into())?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Write `data` at `offset` of the virtual disk (copy-on-write).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(self.base.size(), offset, data.len() as u64)?;
        let mut st = self.state.write().map_err(|_| Self::lock_err())?;
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = offset + pos as u64;
            let idx = abs / OVERLAY_BLOCK;
            let in_blk = (abs % OVERLAY_BLOCK) as usize;
            let blk_start = idx * OVERLAY_BLOCK;
            let blk_len = (self.base.size() - blk_start).min(OVERLAY_BLOCK) as usize;
            let n = (blk_len - in_blk).min(data.len() - pos);
            let mut block = vec![0u8; blk_len];
            let partial = in_blk != 0 || n != blk_len;
            if partial && !self.read_block(&st, idx, &mut block)? {
                self.base.read_at(blk_start, &mut block)?;
            }
            block[in_blk..in_blk + n].copy_from_slice(&data[pos..pos + n]);
            self.store(&mut st, idx, block)?;
            pos += n;
        }
        Ok(())
    }

    fn store(&self, st: &mut State, idx: u64, block: Vec<u8>) -> Result<()> {
        if let Some(Slot::Spilled(off)) = st.blocks.get(&idx) {
            let off = *off;
            let f = st.spill.as_ref().ok_or_else(Self::lock_err)?;
            return f
                .write_all_at(&block, off)
                .ctx(|| "write overlay spill file".into());
        }
        let len = block.len();
        let old = st.blocks.insert(idx, Slot::Mem(block.into_boxed_slice()));
        if old.is_none() {
            st.mem_bytes += len;
        }
        if st.mem_bytes > self.memory_bound {
            self.spill_all(st)?;
        }
        Ok(())
    }

    fn spill_all(&self, st: &mut State) -> Result<()> {
        if st.spill.is_none() {
            let dir = self.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
            let f = tempfile::tempfile_in(&dir)
                .ctx(|| format!("create overlay spill file in {}", dir.display()))?;
            st.spill = Some(f);
        }
        let keys: Vec<u64> = st
            .blocks
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Mem(_)))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(Slot::Mem(b)) = st.blocks.remove(&k) {
                let off = st.spill_len;
                let f = st.spill.as_ref().ok_or_else(Self::lock_err)?;
                f.write_all_at(&b, off)
                    .ctx(|| "write overlay spill file".into())?;
                st.spill_len += OVERLAY_BLOCK;
                st.blocks.insert(k, Slot::Spilled(off));
            }
        }
        st.mem_bytes = 0;
        Ok(())
    }
}

impl BlockSource for Overlay {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        self.base.read_at(offset, buf)?;
        let st = self.state.read().map_err(|_| Self::lock_err())?;
        if st.blocks.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let first = offset / OVERLAY_BLOCK;
        let last = (end - 1) / OVERLAY_BLOCK;
        let mut tmp = vec![0u8; OVERLAY_BLOCK as usize];
        for (&idx, _) in st.blocks.range(first..=last) {
            let blk_start = idx * OVERLAY_BLOCK;
            let blk_len = (self.size() - blk_start).min(OVERLAY_BLOCK) as usize;
            let t = &mut tmp[..blk_len];
            self.read_block(&st, idx, t)?;
            let s = blk_start.max(offset);
            let e = (blk_start + blk_len as u64).min(end);
            buf[(s - offset) as usize..(e - offset) as usize]
                .copy_from_slice(&t[(s - blk_start) as usize..(e - blk_start) as usize]);
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let base = self.base.map(offset, len)?;
        let st = self.state.read().map_err(|_| Self::lock_err())?;
        if st.blocks.is_empty() || len == 0 {
            return Ok(base);
        }
        let end = offset + len;
        // Written blocks are Data; everything else keeps the base's kind.
        let mut written: Vec<(u64, u64)> = Vec::new();
        for (&idx, _) in st
            .blocks
            .range(offset / OVERLAY_BLOCK..=(end - 1) / OVERLAY_BLOCK)
        {
            let s = (idx * OVERLAY_BLOCK).max(offset);
            let e = ((idx + 1) * OVERLAY_BLOCK).min(end);
            match written.last_mut() {
                Some(l) if l.1 == s => l.1 = e,
                _ => written.push((s, e)),
            }
        }
        let mut m = MapBuilder::new();
        let mut w = written.iter().peekable();
        for ext in base {
            let mut pos = ext.offset;
            while pos < ext.end() {
                while w.peek().is_some_and(|x| x.1 <= pos) {
                    w.next();
                }
                match w.peek() {
                    Some(&&(ws, we)) if ws <= pos => {
                        let e = we.min(ext.end());
                        m.push(pos, e - pos, ExtentKind::Data);
                        pos = e;
                    }
                    Some(&&(ws, _)) if ws < ext.end() => {
                        m.push(pos, ws - pos, ext.kind);
                        pos = ws;
                    }
                    _ => {
                        m.push(pos, ext.end() - pos, ext.kind);
                        pos = ext.end();
                    }
                }
            }
        }
        Ok(m.finish())
    }

    fn format_name(&self) -> &'static str {
        self.base.format_name()
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        self.base.details()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::full_map;

    struct Mem(Vec<u8>);
    impl BlockSource for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            check_range(self.size(), offset, buf.len() as u64)?;
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
            check_range(self.size(), offset, len)?;
            let mut m = MapBuilder::new();
            m.push(offset, len, ExtentKind::Zero);
            Ok(m.finish())
        }
        fn format_name(&self) -> &'static str {
            "mem"
        }
    }

    #[test]
    fn writes_read_back_and_spill_preserves_them() {
        let size = 1_000_003usize;
        let base: Arc<dyn BlockSource> = Arc::new(Mem(vec![0; size]));
        let ov = Overlay::new(base, None).with_memory_bound(3 * 4096);
        let mut model = vec![0u8; size];
        let mut x = 12345u64;
        for i in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 20) as usize % size;
            let len = ((x >> 8) as usize % 9000).min(size - off);
            let data: Vec<u8> = (0..len).map(|j| (i + j) as u8 | 1).collect();
            ov.write_at(off as u64, &data).unwrap();
            model[off..off + len].copy_from_slice(&data);
        }
        let mut got = vec![0u8; size];
        ov.read_at(0, &mut got).unwrap();
        assert!(got == model);
        let mut part = vec![0u8; 5000];
        ov.read_at(4095, &mut part).unwrap();
        assert!(part[..] == model[4095..9095]);
        let map = full_map(&ov).unwrap();
        let mut pos = 0;
        for e in &map {
            assert_eq!(e.offset, pos);
            pos = e.end();
            if e.kind == ExtentKind::Zero {
                assert!(model[e.offset as usize..e.end() as usize]
                    .iter()
                    .all(|&b| b == 0));
            }
        }
        assert_eq!(pos, size as u64);
        assert!(ov.write_at(size as u64 - 1, &[1, 2]).is_err());
    }
}
