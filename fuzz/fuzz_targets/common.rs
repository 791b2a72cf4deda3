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

// ---- writer targets (ext4_write, xfs_write) -----------------------------------

use onramp::inject::FsAction;
use onramp::overlay::Overlay;

/// A filesystem image made once per process by `mkfs` (`args`, then the
/// file) on a sparse file of `size` bytes, or read from the file named by
/// the environment variable `env` when set.
pub fn mkfs_seed(env: &str, mkfs: &str, args: &[&str], size: u64) -> Vec<u8> {
    if let Ok(p) = std::env::var(env) {
        return std::fs::read(p).expect("read the seed image named by the environment");
    }
    let path = std::env::temp_dir().join(format!("onramp-fuzz-{mkfs}-{}.img", std::process::id()));
    let f = std::fs::File::create(&path).expect("create seed image");
    f.set_len(size).expect("size seed image");
    let ok = std::process::Command::new(mkfs)
        .args(args)
        .arg(&path)
        // mkfs.xfs refuses filesystems under 300 MiB unless run as fstests does.
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .status()
        .expect("run mkfs")
        .success();
    assert!(ok, "{mkfs} failed");
    let img = std::fs::read(&path).expect("read seed image");
    let _ = std::fs::remove_file(&path);
    img
}

pub const NAMES: [&str; 8] = ["/a", "/b", "/etc", "/etc/x", "/etc/y", "/a/c", "/a/c/d", "/lost+found/z"];

pub struct Input<'a>(pub &'a [u8]);
impl Input<'_> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    pub fn path(&mut self) -> Option<String> {
        let b = self.byte()?;
        let base = NAMES[usize::from(b & 7)];
        // Rarely a generated long or numbered name (directory growth, htree).
        Some(match b >> 3 {
            0..=23 => base.to_string(),
            n => format!("{base}{}", "n".repeat(usize::from(n) * 8)),
        })
    }
}


/// Fuzz the `kind` writer: the input decodes to a few byte patches of `img`
/// (usually none, so most runs exercise the writer on a valid filesystem),
/// then a list of `FsAction`s over a small path vocabulary. After a
/// successful apply on an unpatched image, the result must probe again and
/// every file whose last action was a write must read back byte for byte.
pub fn fuzz_writer(kind: &str, mut img: Vec<u8>, data: &[u8]) {
    let mut inp = Input(data);
    let Some(npatch) = inp.byte() else { return };
    let npatch = if npatch >= 0xF0 { usize::from(npatch & 0xF) } else { 0 };
    for _ in 0..npatch {
        let (Some(off), Some(v)) = (inp.u16(), inp.byte()) else { return };
        // Patches land in the first 64 KiB: superblock and the first metadata blocks.
        img[usize::from(off)] = v;
    }
    let mut actions = Vec::new();
    while actions.len() < 24 {
        let Some(op) = inp.byte() else { break };
        let Some(path) = inp.path() else { break };
        let a = match op % 7 {
            0 => FsAction::Mkdir { path, mode: 0o755 },
            1 => {
                let n = usize::from(inp.u16().unwrap_or(0)) % 40_000;
                let fill = inp.byte().unwrap_or(1);
                let data: Vec<u8> = (0..n).map(|i| fill.wrapping_add(i as u8)).collect();
                FsAction::WriteFile { path, data, mode: 0o644, uid: 0, gid: 0 }
            }
            2 => FsAction::Symlink { target: inp.path().unwrap_or_default(), path },
            3 => FsAction::Chmod { path, mode: u32::from(inp.u16().unwrap_or(0)) & 0o7777 },
            4 => FsAction::Hardlink { target: inp.path().unwrap_or_default(), path },
            5 => {
                let n = usize::from(inp.u16().unwrap_or(0)) % 5_000;
                let name = format!("user.k{}", inp.byte().unwrap_or(0) % 16);
                FsAction::SetXattr { path, name, value: vec![b'v'; n] }
            }
            _ => FsAction::Delete { path },
        };
        actions.push(a);
    }
    let size = img.len() as u64;
    let base: Arc<dyn BlockSource> = Arc::new(Mem(img));
    let ov = Arc::new(Overlay::new(base, None));
    let Ok(dev) = onramp::overlay::VolumeDev::range(ov.clone(), 0, size) else {
        return;
    };
    let res = onramp::fs::write::apply(&dev, kind, &actions);
    if res.is_err() || npatch != 0 {
        return;
    }
    // The written filesystem still probes as `kind`, and can be walked.
    let ov_src: Arc<dyn BlockSource> = ov.clone();
    let fs = onramp::fs::probe(ov_src)
        .expect("written filesystem fails to probe")
        .expect("written filesystem not recognised");
    walk(&*fs);
    if actions.iter().any(|a| matches!(a, FsAction::Symlink { .. })) {
        return;
    }
    for (i, a) in actions.iter().enumerate() {
        let FsAction::WriteFile { path, data, .. } = a else { continue };
        let later = actions[i + 1..].iter().any(|b| {
            let p = match b {
                FsAction::Mkdir { path, .. }
                | FsAction::WriteFile { path, .. }
                | FsAction::Symlink { path, .. }
                | FsAction::Chmod { path, .. }
                | FsAction::Hardlink { path, .. }
                | FsAction::Chown { path, .. }
                | FsAction::SetTimes { path, .. }
                | FsAction::SetXattr { path, .. }
                | FsAction::Delete { path } => path,
            };
            p == path || p.starts_with(path.as_str()) || path.starts_with(p.as_str())
        });
        if !later {
            let got = fs.read_file(path, 1 << 20).expect("read back a written file");
            assert!(got == *data, "{path}: content differs after write");
        }
    }
}
