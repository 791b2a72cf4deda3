//! `onramp build`: verify the source, plan, convert in one pass with the
//! output digest, write the manifest, skip work already done.
//!
//! A build is keyed by the onramp version, the recipe's digest and the
//! source's digest: when the output directory already holds a manifest with
//! the same key and its artifact is present with the recorded size, the build
//! is skipped (unless `--rebuild`), since the same inputs give a byte-identical
//! artifact.

use super::{load, Loaded};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::source::{self, OpenOptions};
use crate::target::output::{hex, DigestAlgo};
use crate::target::{self, WriteOptions};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `onramp build`.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Override every recipe's output directory.
    pub out: Option<PathBuf>,
    /// Print the plan, write nothing.
    pub dry_run: bool,
    /// Build even when an identical build is already in the output directory.
    pub rebuild: bool,
}

/// What happened to one recipe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutcome {
    /// The recipe file.
    pub recipe: PathBuf,
    /// "built", "skipped" (up to date) or "planned" (dry run).
    pub status: &'static str,
    /// The artifact path.
    pub artifact: PathBuf,
    /// The manifest path.
    pub manifest_path: PathBuf,
    /// The manifest (or, for a dry run, the plan).
    pub manifest: Value,
}

/// SHA-256 of a whole file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(hex(&h.finalize()))
}

fn build_key(l: &Loaded, source_sha: &str, edits: &[crate::inject::FsAction]) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update([0]);
    h.update(l.digest.as_bytes());
    h.update([0]);
    h.update(source_sha.as_bytes());
    // The planned edits with their bytes: a changed agent bundle or uploaded
    // host file is a different build even when the recipe text is the same.
    for a in edits {
        h.update([0]);
        h.update(a.describe().as_bytes());
        match a {
            crate::inject::FsAction::WriteFile { data, .. } => h.update(data),
            crate::inject::FsAction::SetXattr { value, .. } => h.update(value),
            _ => {}
        }
    }
    hex(&h.finalize())
}

fn up_to_date(manifest_path: &Path, artifact: &Path, key: &str) -> Option<Value> {
    let text = std::fs::read_to_string(manifest_path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let size = std::fs::metadata(artifact).ok()?.len();
    (v["build_key"].as_str() == Some(key)
        && v["output"]["file_size"].as_u64() == Some(size)
        && v["validation"]["status"].as_str() != Some("failed"))
    .then_some(v)
}

/// Build one recipe.
// Option structs grow fields as stages land; `..default()` keeps this call stable.
#[allow(clippy::needless_update)]
pub fn build_one(file: &Path, opts: &BuildOptions) -> Result<BuildOutcome> {
    let started = Instant::now();
    let l = load(file, opts.out.as_deref())?;
    let r = &l.recipe;
    let field = |name: &str, msg: String| Error::invalid(format!("field {name}: {msg}")).at(file);

    if !l.source_path.is_file() {
        return Err(field(
            "source.path",
            format!(
                "{} does not exist or is not a file",
                l.source_path.display()
            ),
        ));
    }
    let t0 = Instant::now();
    let source_sha = sha256_file(&l.source_path)?;
    if let Some(want) = &r.source.sha256 {
        if !want.eq_ignore_ascii_case(&source_sha) {
            return Err(field(
                "source.sha256",
                format!(
                    "{} has sha256 {source_sha}, the recipe expects {}",
                    l.source_path.display(),
                    want.to_ascii_lowercase()
                ),
            ));
        }
    }
    let verify_s = t0.elapsed().as_secs_f64();

    let open = OpenOptions {
        format: l.source_format,
        allow_backing: r.source.allow_backing,
        temp_dir: Some(l.out_dir.clone()).filter(|d| d.is_dir()),
        ..OpenOptions::default()
    };
    let src = source::open(&l.source_path, &open)?;
    if let Some(s) = l.size {
        if s < src.size() {
            return Err(field(
                "target.size",
                format!(
                    "{s} bytes is smaller than the source disk ({} bytes); onramp never shrinks a disk",
                    src.size()
                ),
            ));
        }
    }
    // Guest edits: planned against the guest now (so --dry-run shows them),
    // applied in a copy-on-write overlay; the source is never written.
    let src: std::sync::Arc<dyn crate::block::BlockSource> = std::sync::Arc::from(src);
    let overlay = std::sync::Arc::new(crate::overlay::Overlay::new(
        src.clone(),
        open.temp_dir.as_deref(),
    ));
    let edit_plan = if l.agent.is_some() || !l.ops.is_empty() {
        Some(
            crate::pipeline::customize_overlay(&overlay, &l.ops, None, l.agent.as_deref())
                .map_err(|e| e.at(file))?,
        )
    } else {
        None
    };
    let edits: Vec<String> = edit_plan
        .as_ref()
        .map(|p| {
            p.actions
                .iter()
                .map(crate::inject::FsAction::describe)
                .chain(p.registry.iter().cloned())
                .collect()
        })
        .unwrap_or_default();
    let edit_warnings: Vec<String> = edit_plan
        .as_ref()
        .map(|p| p.warnings.clone())
        .unwrap_or_default();

    let artifact = l.out_dir.join(&l.file_name);
    let manifest_path = l.out_dir.join(format!("{}.manifest.json", l.file_name));
    let key = build_key(
        &l,
        &source_sha,
        edit_plan.as_ref().map_or(&[][..], |p| p.actions.as_slice()),
    );
    let source_json = json!({
        "path": l.source_path.display().to_string(),
        "sha256": source_sha,
        "format": src.format_name(),
        "virtual_size": src.size(),
        "file_size": std::fs::metadata(&l.source_path).map(|m| m.len()).unwrap_or(0),
    });
    let plan = json!({
        "name": r.name,
        "recipe": {"path": file.display().to_string(), "sha256": l.digest},
        "source": source_json,
        "target": {"format": l.target.name(), "size": l.size, "cloud": r.target.cloud, "generation": r.target.generation},
        "edits": edits,
        "warnings": edit_warnings,
        "artifact": artifact.display().to_string(),
        "publish": l.publish.iter().map(|p| crate::publish::redact_url(&p.to)).collect::<Vec<_>>(),
    });
    if opts.dry_run {
        return Ok(BuildOutcome {
            recipe: file.to_path_buf(),
            status: "planned",
            artifact,
            manifest_path,
            manifest: plan,
        });
    }
    if !opts.rebuild {
        if let Some(v) = up_to_date(&manifest_path, &artifact, &key) {
            return Ok(BuildOutcome {
                recipe: file.to_path_buf(),
                status: "skipped",
                artifact,
                manifest_path,
                manifest: v,
            });
        }
    }

    std::fs::create_dir_all(&l.out_dir).ctx(|| format!("create {}", l.out_dir.display()))?;
    let t1 = Instant::now();
    let wopts = WriteOptions {
        size: l.size,
        force: true,
        digests: vec![DigestAlgo::Sha256],
        timestamp: target::default_timestamp()?,
        ..WriteOptions::default()
    };
    let report = match &edit_plan {
        Some(p) => {
            crate::pipeline::apply_plan(&overlay, p).map_err(|e| e.at(file))?;
            target::write(overlay.as_ref(), l.target, &artifact, &wopts)?
        }
        None => target::write(src.as_ref(), l.target, &artifact, &wopts)?,
    };
    let convert_s = t1.elapsed().as_secs_f64();

    // Validate the artifact itself (its footer, partitions and guest).
    let t2 = Instant::now();
    let validation = run_validation(&l, &artifact)?;
    let validate_s = t2.elapsed().as_secs_f64();
    let out_sha = report
        .output
        .digests
        .iter()
        .find(|(a, _)| *a == DigestAlgo::Sha256)
        .map(|(_, h)| h.clone())
        .unwrap_or_default();

    let manifest = json!({
        "onramp_version": env!("CARGO_PKG_VERSION"),
        "name": r.name,
        "build_key": key,
        "recipe": {"path": file.display().to_string(), "sha256": l.digest},
        "source": source_json,
        "output": {
            "path": artifact.display().to_string(),
            "format": l.target.name(),
            "sha256": out_sha,
            "virtual_size": report.virtual_size,
            "file_size": report.output.file_size,
            "allocated_bytes": report.output.bytes_written,
        },
        "edits": edits,
        "validation": validation.summary,
        "notes": report.notes,
        "timings": {"verify_source_s": verify_s, "convert_s": convert_s, "validate_s": validate_s, "total_s": started.elapsed().as_secs_f64()},
    });
    write_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    if !validation.passed {
        return Err(Error::new(
            ErrorKind::Validation,
            format!(
                "{} failed validation ({}); see {}",
                artifact.display(),
                validation.failed.join(", "),
                manifest_path.display()
            ),
        )
        .at(file));
    }
    let mut published = Vec::new();
    if !l.publish.is_empty() {
        let base = crate::publish::PublishOptions {
            parallel: 8,
            validate: true,
            name: Some(r.name.clone()),
            ..crate::publish::PublishOptions::default()
        };
        for (t, res) in l.publish.iter().zip(crate::publish::publish_many(
            &artifact,
            Some(&manifest_path),
            &l.publish,
            &base,
        )) {
            let rep = res.map_err(|e| e.at(file))?;
            published.push(json!({
                "to": crate::publish::redact_url(&t.to),
                "report": serde_json::to_value(&rep).unwrap_or(Value::Null),
            }));
        }
    }
    let mut manifest = manifest;
    if !published.is_empty() {
        manifest["published"] = Value::Array(published);
    }
    Ok(BuildOutcome {
        recipe: file.to_path_buf(),
        status: "built",
        artifact,
        manifest_path,
        manifest,
    })
}

struct Validation {
    summary: Value,
    passed: bool,
    failed: Vec<String>,
}

/// The profile a recipe validates with: `validate.profile`, else the target cloud.
fn profile_for(l: &Loaded) -> Option<String> {
    let v = l.recipe.validate.as_ref();
    v.and_then(|v| v.profile.clone())
        .or_else(|| l.recipe.target.cloud.clone())
}

fn run_validation(l: &Loaded, artifact: &Path) -> Result<Validation> {
    let Some(profile) = profile_for(l) else {
        return Ok(Validation {
            summary: json!({"status": "not-run", "reason": "the recipe names no validate.profile and no target.cloud"}),
            passed: true,
            failed: Vec::new(),
        });
    };
    let spec = l.recipe.validate.clone().unwrap_or_default();
    let req = crate::validate::Request {
        profile,
        waivers: spec
            .waivers
            .iter()
            .map(|w| (w.rule.clone(), w.reason.clone()))
            .collect(),
        generation: l.recipe.target.generation,
        data_disk: false,
        specialized: spec.specialized,
    };
    let open = OpenOptions {
        format: Some(l.target_source_format()),
        ..OpenOptions::default()
    };
    let report = crate::validate::validate(artifact, &open, &req)?;
    let passed = report.passes(spec.strict);
    let failed: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.status == crate::validate::Status::Fail)
        .map(|f| f.rule.clone())
        .collect();
    Ok(Validation {
        summary: json!({
            "status": if passed { "passed" } else { "failed" },
            "profile": report.profile,
            "strict": spec.strict,
            "judged_on": report.judged_on,
            "summary": report.summary,
            "failed": failed,
            "waived": report.findings.iter().filter(|f| f.status == crate::validate::Status::Waived)
                .map(|f| json!({"rule": f.rule, "reason": f.waiver})).collect::<Vec<_>>(),
        }),
        passed,
        failed,
    })
}

/// Write a small file atomically (temporary file, flush, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = crate::target::output::OutputFile::create(path, true, &[])?;
    out.write(bytes)?;
    out.finish().map(|_| ())
}

/// Build several recipes, `jobs` at a time. Returns one result per recipe, in order.
pub fn build_many(
    files: &[PathBuf],
    opts: &BuildOptions,
    jobs: usize,
) -> Vec<Result<BuildOutcome>> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build();
    match pool {
        Ok(p) => p.install(|| files.par_iter().map(|f| build_one(f, opts)).collect()),
        Err(e) => files
            .iter()
            .map(|_| Err(Error::new(ErrorKind::Io, format!("thread pool: {e}"))))
            .collect(),
    }
}
