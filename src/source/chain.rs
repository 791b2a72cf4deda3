//! Backing files and parents: where they may live, and loop detection.
//!
//! Any reader that follows a backing file (qcow2 backing, VHD/VHDX parent,
//! VMDK parent) resolves its name with [`resolve_inside`] — only files inside
//! the image's own directory (or below it) after following symlinks — and
//! holds a [`ChainGuard`] for each image while its parents are opened, so a
//! chain that comes back to an image already being opened is refused as a
//! loop. Depth is bounded by [`crate::limits::MAX_BACKING_DEPTH`].

use crate::error::{Error, Result};
use crate::limits;
use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};

thread_local! {
    /// Canonical paths of the images being opened on this thread, outermost first.
    static OPENING: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Marks an image as being opened until dropped.
#[derive(Debug)]
pub struct ChainGuard {
    path: PathBuf,
}

impl ChainGuard {
    /// Enter `path`; fails with "backing loop" if it is already being opened
    /// further up the chain.
    pub fn enter(path: &Path) -> Result<Self> {
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        OPENING.with(|o| {
            let mut o = o.borrow_mut();
            if o.contains(&canon) {
                let mut names: Vec<String> = o
                    .iter()
                    .skip_while(|p| **p != canon)
                    .map(|p| p.display().to_string())
                    .collect();
                names.push(canon.display().to_string());
                return Err(Error::invalid(format!(
                    "backing loop: {}",
                    names.join(" -> ")
                )));
            }
            o.push(canon.clone());
            Ok(ChainGuard { path: canon })
        })
    }
}

impl Drop for ChainGuard {
    fn drop(&mut self) {
        OPENING.with(|o| {
            let mut o = o.borrow_mut();
            if let Some(i) = o.iter().rposition(|p| *p == self.path) {
                o.remove(i);
            }
        });
    }
}

/// Check that a parent at chain depth `depth` may be opened.
pub fn check_depth(depth: usize, name: &str) -> Result<()> {
    if depth > limits::MAX_BACKING_DEPTH {
        return Err(Error::invalid(format!(
            "backing file {name:?} would make the chain deeper than {} images",
            limits::MAX_BACKING_DEPTH
        )));
    }
    Ok(())
}

/// Resolve the backing file `name` recorded in `image`, and insist that it is
/// inside the image's own directory: relative names are taken relative to
/// that directory (as qemu does), `..` components and protocol names are
/// refused, and after following symlinks the file must still be inside it.
pub fn resolve_inside(image: &Path, name: &str) -> Result<PathBuf> {
    let refuse = |why: &str| {
        Error::invalid(format!(
            "backing file {name:?} refused: {why}; onramp only follows backing files inside the image's own directory"
        ))
    };
    if name.is_empty() {
        return Err(refuse("empty name"));
    }
    if name.starts_with("json:") || name.contains("://") {
        return Err(refuse("protocol names are not followed"));
    }
    let p = Path::new(name);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(refuse("it contains `..`"));
    }
    let image_canon = std::fs::canonicalize(image)
        .map_err(|e| Error::io(format!("canonicalize {}", image.display()), e))?;
    let dir = image_canon
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let candidate = if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    };
    let canon = std::fs::canonicalize(&candidate).map_err(|e| {
        Error::invalid(format!(
            "backing file {name:?} (resolved to {}) cannot be opened: {e}",
            candidate.display()
        ))
    })?;
    if !canon.starts_with(&dir) || canon == dir {
        return Err(refuse(&format!(
            "it resolves to {}, outside {}",
            canon.display(),
            dir.display()
        )));
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_rules() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.img");
        std::fs::write(&img, b"x").unwrap();
        std::fs::write(d.path().join("b.img"), b"x").unwrap();
        assert!(resolve_inside(&img, "b.img").is_ok());
        let abs = d.path().join("b.img");
        assert!(resolve_inside(&img, abs.to_str().unwrap()).is_ok());
        assert!(resolve_inside(&img, "../b.img").is_err());
        assert!(resolve_inside(&img, "/etc/passwd").is_err());
        assert!(resolve_inside(&img, "nbd://x").is_err());
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("l.img")).unwrap();
        let e = resolve_inside(&img, "l.img").unwrap_err();
        assert!(e.message().contains("outside"), "{e}");
    }

    #[test]
    fn loops_are_found() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let g = ChainGuard::enter(&a).unwrap();
        let e = ChainGuard::enter(&a).unwrap_err();
        assert!(e.message().contains("backing loop"));
        drop(g);
        assert!(ChainGuard::enter(&a).is_ok());
    }
}
