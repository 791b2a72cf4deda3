//! The library entry points the CLI calls: info, convert, compare.

use crate::block::{allocated_bytes, for_each_window, BlockSource, ExtentKind};
use crate::error::{Error, Result};
use crate::source::{self, OpenOptions};
use crate::target::{self, output::DigestAlgo, TargetFormat, WriteOptions, WriteReport};
use serde_json::{json, Map, Value};
use std::path::Path;

/// What `onramp info` reports.
pub fn info(path: &Path, opts: &OpenOptions) -> Result<Map<String, Value>> {
    let src = source::open(path, opts)?;
    let mut m = Map::new();
    m.insert("path".into(), json!(path.display().to_string()));
    m.insert("format".into(), json!(src.format_name()));
    m.insert("virtual_size".into(), json!(src.size()));
    m.insert(
        "allocated_bytes".into(),
        json!(allocated_bytes(src.as_ref()).map_err(|e| e.at(path))?),
    );
    m.insert("details".into(), Value::Object(src.details()));
    Ok(m)
}

/// A conversion request.
#[derive(Debug, Clone)]
pub struct ConvertRequest<'a> {
    /// Input image.
    pub input: &'a Path,
    /// Output path.
    pub output: &'a Path,
    /// Output format.
    pub to: TargetFormat,
    /// How to open the input.
    pub open: OpenOptions,
    /// Virtual size wanted (`--size`).
    pub size: Option<u64>,
    /// Replace an existing output.
    pub force: bool,
    /// Digests to compute while writing.
    pub digests: Vec<DigestAlgo>,
    /// Block size for formats that have one (`--block-size`).
    pub block_size: Option<u64>,
    /// Cluster compression (`--compress`).
    pub compress: Option<target::Compression>,
}

/// Convert one image in one pass.
pub fn convert(req: &ConvertRequest<'_>) -> Result<WriteReport> {
    let mut open = req.open.clone();
    if open.temp_dir.is_none() {
        open.temp_dir = req.output.parent().map(Path::to_path_buf);
    }
    if same_file(req.input, req.output) {
        return Err(Error::invalid(format!(
            "output {} is the input; onramp never writes its input",
            req.output.display()
        )));
    }
    let src = source::open(req.input, &open)?;
    let opts = WriteOptions {
        size: req.size,
        force: req.force,
        digests: req.digests.clone(),
        timestamp: target::default_timestamp()?,
        block_size: req.block_size,
        compress: req.compress,
    };
    target::write(src.as_ref(), req.to, req.output, &opts).map_err(|e| e.at(req.input))
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Result of comparing two disks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Comparison {
    /// Same size and content.
    Identical,
    /// Sizes differ.
    SizeDiffers {
        /// Size of A.
        a: u64,
        /// Size of B.
        b: u64,
    },
    /// First differing byte.
    ContentDiffers {
        /// Offset of the first differing byte.
        offset: u64,
    },
}

/// Compare two disks byte for byte, skipping ranges both maps say are zero.
pub fn compare(a: &dyn BlockSource, b: &dyn BlockSource) -> Result<Comparison> {
    if a.size() != b.size() {
        return Ok(Comparison::SizeDiffers {
            a: a.size(),
            b: b.size(),
        });
    }
    const STEP: u64 = 1 << 20;
    let mut ba = vec![0u8; STEP as usize];
    let mut bb = vec![0u8; STEP as usize];
    let mut found: Option<u64> = None;
    for_each_window(a, |ea| {
        if found.is_some() {
            return Ok(());
        }
        for eb in b.map(ea.offset, ea.len)? {
            let mut off = eb.offset;
            while off < eb.end() {
                let n = (eb.end() - off).min(STEP);
                let nu = n as usize;
                if ea.kind == ExtentKind::Zero && eb.kind == ExtentKind::Zero {
                    break;
                }
                if ea.kind == ExtentKind::Zero {
                    ba[..nu].fill(0);
                } else {
                    a.read_at(off, &mut ba[..nu])?;
                }
                if eb.kind == ExtentKind::Zero {
                    bb[..nu].fill(0);
                } else {
                    b.read_at(off, &mut bb[..nu])?;
                }
                if ba[..nu] != bb[..nu] {
                    let i = ba[..nu]
                        .iter()
                        .zip(&bb[..nu])
                        .position(|(x, y)| x != y)
                        .unwrap_or(0);
                    found = Some(off + i as u64);
                    return Ok(());
                }
                off += n;
            }
        }
        Ok(())
    })?;
    Ok(match found {
        Some(offset) => Comparison::ContentDiffers { offset },
        None => Comparison::Identical,
    })
}

/// What `onramp inspect` reports: the guest inside the image, read-only.
pub fn inspect(path: &Path, opts: &OpenOptions) -> Result<crate::guest::Inspection> {
    let src: std::sync::Arc<dyn BlockSource> = std::sync::Arc::from(source::open(path, opts)?);
    crate::guest::inspect(src).map_err(|e| e.at(path))
}

/// What `onramp customize` does.
pub struct CustomizeRequest<'a> {
    /// Input image (never written).
    pub input: &'a Path,
    /// Output path.
    pub output: &'a Path,
    /// Output format.
    pub to: TargetFormat,
    /// How to open the input.
    pub open: OpenOptions,
    /// Operations, in order.
    pub ops: Vec<crate::inject::Op>,
    /// Agent bundle (directory or .tar.gz with agent.yaml, or a .deb).
    pub agent: Option<std::path::PathBuf>,
    /// Root filesystem override: "/dev/sda1", "sda1", "1" (a volume index).
    pub root: Option<String>,
    /// Print the plan and write nothing.
    pub dry_run: bool,
    /// Replace an existing output.
    pub force: bool,
    /// Digests to compute while writing.
    pub digests: Vec<DigestAlgo>,
}

/// Result of `onramp customize`.
#[derive(Debug, serde::Serialize)]
pub struct CustomizeReport {
    /// Planned actions (their descriptions).
    pub plan: Vec<String>,
    /// What the ext4 writer did.
    pub log: Vec<String>,
    /// Things the user should know (e.g. a .deb's dependencies not installed).
    pub warnings: Vec<String>,
    /// The write report (None for dry runs).
    pub write: Option<WriteReport>,
}

/// Pick the root volume: `--root` override or the inspected "/" mount.
fn customize_root(
    insp: &crate::guest::Inspection,
    root: Option<&str>,
) -> Result<crate::partition::Volume> {
    if let Some(r) = root {
        let digits: String = r
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let idx: u32 = digits.parse().map_err(|_| {
            Error::invalid(format!(
                "--root {r:?}: expected /dev/sdaN or a volume index"
            ))
        })?;
        return insp
            .volumes
            .iter()
            .find(|v| v.volume.index == idx)
            .map(|v| v.volume.clone())
            .ok_or_else(|| Error::invalid(format!("--root {r:?}: no volume {idx} on this disk")));
    }
    insp.volumes
        .iter()
        .find(|v| matches!(v.mount_point.as_deref(), Some("/") | Some("C:")))
        .map(|v| v.volume.clone())
        .ok_or_else(|| {
            Error::unsupported(
                "customize: no Linux root filesystem or Windows system volume found (use --root)",
            )
        })
}

/// A planned guest edit: the actions, the root volume they apply to, and warnings.
pub struct CustomizePlan {
    /// Filesystem actions, agent bundle first, then the operations.
    pub actions: Vec<crate::inject::FsAction>,
    /// The root volume.
    pub root: crate::partition::Volume,
    /// Its filesystem kind ("ext4", "xfs", "ntfs", ...): picks the writer.
    pub fs_kind: &'static str,
    /// Warnings from planning (bundles).
    pub warnings: Vec<String>,
    /// Registry edits (Windows guests), one line each; the edited hives are
    /// among the actions.
    pub registry: Vec<String>,
}

/// Plan an agent bundle and the operations against the guest in `ov`.
pub fn customize_overlay(
    ov: &std::sync::Arc<crate::overlay::Overlay>,
    ops: &[crate::inject::Op],
    root: Option<&str>,
    agent: Option<&Path>,
) -> Result<CustomizePlan> {
    let disk: std::sync::Arc<dyn BlockSource> = ov.clone();
    let insp = crate::guest::inspect(disk.clone())?;
    let vol = customize_root(&insp, root)?;
    let fsrc = vol.open(&disk)?;
    let fs = crate::fs::probe(fsrc)?.ok_or_else(|| {
        Error::unsupported("customize: no filesystem onramp can read on the root volume")
    })?;
    let fs_kind = fs.kind();
    if !crate::fs::write::WRITABLE.contains(&fs_kind) {
        return Err(Error::unsupported(format!(
            "customize: the root filesystem is {fs_kind}; onramp writes {}",
            crate::fs::write::WRITABLE.join(", ")
        )));
    }
    let fs = fs.as_ref();
    if crate::guest::windows::find_system_root(fs)?.is_some() {
        let bundle = match agent {
            Some(a) => Some(crate::inject::bundle::load(a).map_err(|e| e.at(a))?),
            None => None,
        };
        let wp = crate::inject::windows::plan(ops, bundle.as_ref(), fs)?;
        return Ok(CustomizePlan {
            actions: wp.actions,
            root: vol,
            fs_kind,
            warnings: wp.warnings,
            registry: wp.registry,
        });
    }
    let mut actions = Vec::new();
    let mut warnings = Vec::new();
    if let Some(a) = agent {
        let bundle = crate::inject::bundle::load(a).map_err(|e| e.at(a))?;
        let bp = crate::inject::bundle::plan_bundle_report(
            &bundle,
            fs,
            &std::collections::BTreeMap::new(),
        )
        .map_err(|e| e.at(a))?;
        actions.extend(bp.actions);
        warnings.extend(bp.warnings);
    }
    actions.extend(crate::inject::plan(ops, fs)?);
    let force = ops
        .iter()
        .any(|o| matches!(o, crate::inject::Op::SelinuxRelabel(true)));
    let (labels, notes) = crate::inject::selinux::label(fs, &actions, force)?;
    actions.extend(labels);
    warnings.extend(notes);
    Ok(CustomizePlan {
        actions,
        root: vol,
        fs_kind,
        warnings,
        registry: Vec::new(),
    })
}

/// Apply a plan's actions to its root volume in `ov`, with the writer for
/// its filesystem; writes go through the volume's segment map.
pub fn apply_plan(
    ov: &std::sync::Arc<crate::overlay::Overlay>,
    plan: &CustomizePlan,
) -> Result<Vec<String>> {
    let dev = crate::overlay::VolumeDev::of(ov.clone(), &plan.root)?;
    crate::fs::write::apply(&dev, plan.fs_kind, &plan.actions)
}

/// `onramp customize`: open once, plan, edit in the overlay, write the target.
pub fn customize(req: &CustomizeRequest<'_>) -> Result<CustomizeReport> {
    if same_file(req.input, req.output) {
        return Err(Error::invalid(format!(
            "output {} is the input; onramp never writes its input",
            req.output.display()
        )));
    }
    let mut open = req.open.clone();
    if open.temp_dir.is_none() {
        open.temp_dir = req.output.parent().map(Path::to_path_buf);
    }
    let src: std::sync::Arc<dyn BlockSource> =
        std::sync::Arc::from(source::open(req.input, &open)?);
    let ov = std::sync::Arc::new(crate::overlay::Overlay::new(src, open.temp_dir.as_deref()));
    let cp = customize_overlay(&ov, &req.ops, req.root.as_deref(), req.agent.as_deref())?;
    let plan: Vec<String> = cp
        .actions
        .iter()
        .map(crate::inject::FsAction::describe)
        .chain(cp.registry.iter().cloned())
        .collect();
    if req.dry_run {
        return Ok(CustomizeReport {
            plan,
            log: Vec::new(),
            warnings: cp.warnings,
            write: None,
        });
    }
    let log = apply_plan(&ov, &cp)?;
    let opts = WriteOptions {
        force: req.force,
        digests: req.digests.clone(),
        timestamp: target::default_timestamp()?,
        ..WriteOptions::default()
    };
    let w = target::write(ov.as_ref(), req.to, req.output, &opts).map_err(|e| e.at(req.input))?;
    Ok(CustomizeReport {
        plan,
        log,
        warnings: cp.warnings,
        write: Some(w),
    })
}
