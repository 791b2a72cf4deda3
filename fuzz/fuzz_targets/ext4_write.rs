//! Fuzz the ext4 writer with structure-aware operation lists on a mkfs-seeded
//! image. The input decodes to: a few byte patches of the filesystem image
//! (usually none, so most runs exercise the writer on a valid filesystem), then
//! a list of `FsAction`s over a small path vocabulary. After a successful apply
//! on an unpatched image, the result must probe as ext4 again and every file
//! whose last action was a write must read back byte for byte.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;
use onramp::block::BlockSource;
use onramp::inject::FsAction;
use onramp::overlay::Overlay;
use std::sync::{Arc, OnceLock};

/// A 2 MiB ext4 made once per process by mkfs.ext4 (1 KiB blocks, a journal,
/// metadata_csum), or `ONRAMP_FUZZ_EXT4` when set.
fn seed_image() -> &'static Vec<u8> {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        if let Ok(p) = std::env::var("ONRAMP_FUZZ_EXT4") {
            return std::fs::read(p).expect("read ONRAMP_FUZZ_EXT4");
        }
        let path = std::env::temp_dir().join(format!("onramp-fuzz-ext4-{}.img", std::process::id()));
        let f = std::fs::File::create(&path).expect("create seed image");
        f.set_len(2 << 20).expect("size seed image");
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "1024", "-N", "64", "-E", "root_owner=0:0"])
            .arg(&path)
            .status()
            .expect("run mkfs.ext4")
            .success();
        assert!(ok, "mkfs.ext4 failed");
        let img = std::fs::read(&path).expect("read seed image");
        let _ = std::fs::remove_file(&path);
        img
    })
}

const NAMES: [&str; 8] = ["/a", "/b", "/etc", "/etc/x", "/etc/y", "/a/c", "/a/c/d", "/lost+found/z"];

struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn path(&mut self) -> Option<String> {
        let b = self.byte()?;
        let base = NAMES[usize::from(b & 7)];
        // Rarely a generated long or numbered name (directory growth, htree).
        Some(match b >> 3 {
            0..=23 => base.to_string(),
            n => format!("{base}{}", "n".repeat(usize::from(n) * 8)),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let mut img = seed_image().clone();
    let mut inp = Input(data);
    let Some(npatch) = inp.byte() else { return };
    let npatch = if npatch >= 0xF0 { usize::from(npatch & 0xF) } else { 0 };
    for _ in 0..npatch {
        let (Some(off), Some(v)) = (inp.u16(), inp.byte()) else { return };
        // Patches land in the first 64 KiB: superblock, group descriptors, bitmaps, inode table.
        img[usize::from(off)] = v;
    }
    let mut actions = Vec::new();
    while actions.len() < 24 {
        let Some(op) = inp.byte() else { break };
        let Some(path) = inp.path() else { break };
        let a = match op % 5 {
            0 => FsAction::Mkdir { path, mode: 0o755 },
            1 => {
                let n = usize::from(inp.u16().unwrap_or(0)) % 40_000;
                let fill = inp.byte().unwrap_or(1);
                let data: Vec<u8> = (0..n).map(|i| fill.wrapping_add(i as u8)).collect();
                FsAction::WriteFile { path, data, mode: 0o644, uid: 0, gid: 0 }
            }
            2 => FsAction::Symlink { target: inp.path().unwrap_or_default(), path },
            3 => FsAction::Chmod { path, mode: u32::from(inp.u16().unwrap_or(0)) & 0o7777 },
            _ => FsAction::Delete { path },
        };
        actions.push(a);
    }
    let size = img.len() as u64;
    let base: Arc<dyn BlockSource> = Arc::new(common::Mem(img));
    let ov = Arc::new(Overlay::new(base, None));
    let Ok(dev) = onramp::overlay::VolumeDev::range(ov.clone(), 0, size) else {
        return;
    };
    let res = onramp::fs::ext4::write::apply(&dev, &actions);
    if res.is_err() || npatch != 0 {
        return;
    }
    // The written filesystem still probes as ext4, and can be walked.
    let ov_src: Arc<dyn BlockSource> = ov.clone();
    let fs = onramp::fs::probe(ov_src)
        .expect("written ext4 fails to probe")
        .expect("written ext4 not recognised");
    common::walk(&*fs);
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
});
