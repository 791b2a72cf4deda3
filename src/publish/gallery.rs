//! `dir:PATH`: a local content-addressed gallery.
//!
//! Layout: `<PATH>/<sha256>/disk.<ext>` (the image, hard-linked when on the
//! same file system, else copied sparsely) and `<PATH>/<sha256>/manifest.json`
//! (the build manifest, or a small one written here); `<PATH>/index.json` maps
//! names to digests and keeps each name's versions. Publishers serialise on an
//! exclusive `flock` of `<PATH>/.onramp.lock`; the digest directory appears by
//! one rename and the index is replaced by one rename, so readers never see a
//! half-written entry. Publishing the same image under the same name again
//! changes nothing.

use super::{data_ranges, hash_sparse, hex, PublishOptions};
use crate::error::{Error, IoContext, Result};
use crate::source::raw::RawReader;
use serde_json::{json, Map, Value};
use sha2::Digest as _;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What a gallery publish did.
#[derive(Debug, Clone)]
pub struct GalleryOutcome {
    /// The stored disk.
    pub path: PathBuf,
    /// Index name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 hex.
    pub sha256: String,
    /// Bytes copied (0 when hard-linked or already stored).
    pub bytes_copied: u64,
    /// Nothing changed (already stored under this name).
    pub unchanged: bool,
}

/// Hold an exclusive lock on the gallery until dropped.
struct Lock(#[allow(dead_code)] File);

fn lock(root: &Path) -> Result<Lock> {
    let p = root.join(".onramp.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .ctx(|| format!("open {}", p.display()))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io(format!("lock {}", p.display()), e.into()))?;
    Ok(Lock(f))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".onramp-tmp-")
        .tempfile_in(dir)
        .ctx(|| format!("create temp file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .ctx(|| format!("write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("rename to {}", path.display()), e.error))?;
    Ok(())
}

/// Copy `src` to `dst` writing only non-zero data (holes stay holes), and
/// return the sha256 of what was copied and the bytes written.
fn sparse_copy(src: &Path, dst: &Path) -> Result<(String, u64)> {
    let reader = RawReader::open(src)?;
    let size = crate::block::BlockSource::size(&reader);
    let data = data_ranges(&reader)?;
    let input = File::open(src).ctx(|| format!("open {}", src.display()))?;
    let out = File::create(dst).ctx(|| format!("create {}", dst.display()))?;
    let mut h = sha2::Sha256::new();
    let mut pos = 0u64;
    let mut written = 0u64;
    let mut err: Option<Error> = None;
    hash_sparse(&input, size, &data, &mut |b| {
        h.update(b);
        if err.is_none() && b.iter().any(|&x| x != 0) {
            match out.write_all_at(b, pos) {
                Ok(()) => written += b.len() as u64,
                Err(e) => err = Some(Error::io(format!("write {}", dst.display()), e)),
            }
        }
        pos += b.len() as u64;
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    out.set_len(size)
        .and_then(|_| out.sync_all())
        .ctx(|| format!("finish {}", dst.display()))?;
    Ok((hex(&h.finalize()), written))
}

/// Publish `image` into the gallery at `root`.
pub fn publish(image: &Path, root: &Path, opts: &PublishOptions) -> Result<GalleryOutcome> {
    std::fs::create_dir_all(root).ctx(|| format!("create {}", root.display()))?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into()),
    };
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(Error::invalid(format!("bad gallery name {name:?}")));
    }
    let sha = super::sha256_sparse(image)?;
    let size = std::fs::metadata(image)
        .ctx(|| format!("stat {}", image.display()))?
        .len();
    let ext = image
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "img".into());
    let disk_name = format!("disk.{ext}");
    let _lock = lock(root)?;
    let dir = root.join(&sha);
    let disk = dir.join(&disk_name);
    let mut bytes_copied = 0;
    let mut stored = false;
    let present = std::fs::metadata(&disk)
        .map(|m| m.len() == size)
        .unwrap_or(false)
        && dir.join("manifest.json").is_file();
    if !present {
        let tmp = root.join(format!(".tmp-{sha}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        let tdisk = tmp.join(&disk_name);
        if std::fs::hard_link(image, &tdisk).is_err() {
            let (got, written) = sparse_copy(image, &tdisk)?;
            if got != sha {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(Error::invalid(format!(
                    "{} changed while publishing (sha256 {sha} then {got})",
                    image.display()
                )));
            }
            bytes_copied = written;
        }
        let manifest_src = opts.manifest.clone().or_else(|| {
            let mut n = image.file_name().unwrap_or_default().to_os_string();
            n.push(".manifest.json");
            Some(image.with_file_name(n)).filter(|p| p.is_file())
        });
        let manifest = match manifest_src {
            Some(p) => std::fs::read(&p).ctx(|| format!("read {}", p.display()))?,
            None => serde_json::to_vec_pretty(&json!({
                "source": image.file_name().map(|s| s.to_string_lossy().into_owned()),
                "file": disk_name,
                "size": size,
                "sha256": sha,
                "onramp_version": env!("CARGO_PKG_VERSION"),
            }))
            .unwrap_or_default(),
        };
        write_atomic(&tmp.join("manifest.json"), &manifest)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).ctx(|| format!("remove partial {}", dir.display()))?;
        }
        std::fs::rename(&tmp, &dir).ctx(|| format!("rename to {}", dir.display()))?;
        File::open(root)
            .and_then(|d| d.sync_all())
            .ctx(|| format!("sync {}", root.display()))?;
        stored = true;
    }

    // Index: name -> digest, with the name's version history.
    let index_path = root.join("index.json");
    let mut index: Value = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::invalid(format!("{}: not valid JSON: {e}", index_path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({"version": 1, "images": {}}),
        Err(e) => return Err(Error::io(format!("read {}", index_path.display()), e)),
    };
    let rel = format!("{sha}/{disk_name}");
    let images = index
        .as_object_mut()
        .and_then(|o| {
            o.entry("images")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
        })
        .ok_or_else(|| Error::invalid(format!("{}: no images object", index_path.display())))?;
    let current = images
        .get(&name)
        .and_then(|e| e.get("sha256"))
        .and_then(Value::as_str);
    let unchanged = current == Some(sha.as_str());
    if !unchanged {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut versions = images
            .get(&name)
            .and_then(|e| e.get("versions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        versions.push(json!({"sha256": sha, "path": rel, "size": size, "published": now}));
        images.insert(
            name.clone(),
            json!({"sha256": sha, "path": rel, "size": size, "published": now, "versions": versions}),
        );
        let body = serde_json::to_vec_pretty(&index).unwrap_or_default();
        write_atomic(&index_path, &body)?;
    }
    Ok(GalleryOutcome {
        path: disk,
        name,
        size,
        sha256: sha,
        bytes_copied,
        unchanged: unchanged && !stored,
    })
}
