//! Shared helpers for the fuzz targets: an in-memory block source, a
//! temp-file harness for the path-based image readers, and bounded walks.
#![allow(dead_code)]

use onramp::block::{check_range, BlockSource};
use onramp::fs::{FileSystem, FileType};
use onramp::source::{open, Format, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// A disk held in memory.
pub struct Mem(pub Vec<u8>);

impl BlockSource for Mem {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> onramp::Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
    fn format_name(&self) -> &'static str {
        "mem"
    }
}

/// Most bytes of virtual disk data read per input.
const READ_BUDGET: u64 = 4 << 20;
/// Most map extents looked at per input.
const MAP_BUDGET: usize = 4096;

fn temp_path() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!(
        "onramp-fuzz-{}-{:?}.img",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// Exercise a whole block source: size, map, reads (bounded), details.
pub fn exercise(src: &dyn BlockSource) {
    let size = src.size();
    let _ = src.details();
    let Ok(map) = src.map(0, size) else { return };
    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; 64 << 10];
    for e in map.iter().take(MAP_BUDGET) {
        assert!(e.len > 0, "empty extent in map");
        if budget == 0 {
            break;
        }
        // The first and last window of each extent.
        for off in [
            e.offset,
            e.end().saturating_sub(buf.len() as u64).max(e.offset),
        ] {
            let n = (buf.len() as u64).min(e.end() - off).min(budget) as usize;
            if n == 0 {
                continue;
            }
            budget -= n as u64;
            let _ = src.read_at(off, &mut buf[..n]);
        }
    }
    // Map must cover [0, size) exactly when it succeeds.
    let mut at = 0u64;
    for e in &map {
        assert_eq!(e.offset, at, "map has a gap or overlap");
        at = e.end();
    }
    assert_eq!(at, size, "map does not cover the disk");
    // Past-the-end reads fail.
    let mut one = [0u8; 1];
    assert!(
        src.read_at(size, &mut one).is_err(),
        "read past the end succeeded"
    );
}

/// Write `data` to a temp file and open it as `format` (or detect when None).
pub fn fuzz_image(data: &[u8], format: Option<Format>) {
    let path = temp_path();
    {
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(data).expect("write temp file");
    }
    let opts = OpenOptions {
        format,
        allow_backing: false,
        temp_dir: Some(path.parent().expect("dir").to_path_buf()),
        disk: None,
    };
    if let Ok(src) = open(&path, &opts) {
        exercise(&*src);
    }
    let _ = std::fs::remove_file(&path);
}

/// Walk a filesystem tree breadth-first with bounds, reading small files and links.
pub fn walk(fs: &dyn FileSystem) {
    let _ = fs.uuid();
    let _ = fs.label();
    let mut todo = vec!["/".to_string()];
    let mut visited = 0usize;
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries.into_iter().take(256) {
            visited += 1;
            if visited > 2048 {
                return;
            }
            let p = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            let Ok(Some(md)) = fs.stat(&p) else { continue };
            match md.file_type {
                FileType::Dir => {
                    if todo.len() < 256 {
                        todo.push(p)
                    }
                }
                FileType::File => {
                    let _ = fs.read_file(&p, 1 << 20);
                }
                FileType::Symlink => {
                    let _ = fs.read_link(&p);
                    let _ = onramp::fs::resolve(fs, &p, true);
                }
                FileType::Other => {}
            }
        }
    }
}

/// Probe a filesystem on an in-memory volume and walk it.
pub fn fuzz_fs(data: &[u8]) {
    let src: Arc<dyn BlockSource> = Arc::new(Mem(data.to_vec()));
    if let Ok(Some(fs)) = onramp::fs::probe(src) {
        walk(&*fs);
    }
}
