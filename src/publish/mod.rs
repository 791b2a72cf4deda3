//! `onramp publish`: hand a finished image to where it will run.
//!
//! Targets:
//! - `azure:URL` — an Azure page blob (real Azure, sovereign clouds, Azurite),
//!   uploaded over the Blob REST API by [`azure`]: only a fixed VHD that passes
//!   `validate --profile azure` is uploaded, only its non-zero sectors are sent,
//!   and the result is verified before the blob's Content-MD5 and metadata are set.
//! - `dir:PATH` — a local content-addressed gallery ([`gallery`]) for QEMU/libvirt
//!   runtimes and CI caches.
//!
//! Secrets (SAS tokens, account keys) never appear in reports, errors or logs:
//! URLs are printed without their query string ([`redact_url`]).

pub mod azure;
pub mod gallery;

use crate::block::{BlockSource, ExtentKind};
use crate::error::{Error, IoContext, Result};
use crate::source::raw::RawReader;
use serde::Serialize;
use sha2::Digest as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local content-addressed gallery directory.
    Dir(PathBuf),
    /// An Azure page blob URL (may carry a SAS in its query).
    Azure(String),
}

impl Target {
    /// Parse `dir:PATH` or `azure:URL`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("dir:") {
            if p.is_empty() {
                return Err(Error::invalid("dir: target needs a PATH"));
            }
            return Ok(Target::Dir(PathBuf::from(p)));
        }
        if let Some(u) = s.strip_prefix("azure:") {
            azure::client::BlobUrl::parse(u)?;
            return Ok(Target::Azure(u.to_string()));
        }
        Err(Error::invalid(format!(
            "unknown publish target {:?}: expected dir:PATH or azure:URL",
            redact_text(s)
        )))
    }

    /// The target as text, without secrets.
    pub fn display(&self) -> String {
        match self {
            Target::Dir(p) => format!("dir:{}", p.display()),
            Target::Azure(u) => format!("azure:{}", redact_url(u)),
        }
    }
}

/// Options of a publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// SAS token for Azure (else the URL's query or the environment).
    pub sas: Option<String>,
    /// Requests in flight (Azure).
    pub parallel: usize,
    /// Overwrite an existing blob (Azure).
    pub force: bool,
    /// Validate against the azure profile before an Azure upload.
    pub validate: bool,
    /// Name in the gallery index (default: the image's file stem).
    pub name: Option<String>,
    /// Manifest to store with the image in a gallery (default: `<image>.manifest.json` if present).
    pub manifest: Option<PathBuf>,
    /// Progress bar on stderr.
    pub progress: bool,
    /// Retry policy for remote requests.
    pub retry: azure::client::RetryPolicy,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            sas: None,
            parallel: 8,
            force: false,
            validate: true,
            name: None,
            manifest: None,
            progress: false,
            retry: azure::client::RetryPolicy::default(),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// The target, without secrets.
    pub target: String,
    /// `azure` or `dir`.
    pub kind: &'static str,
    /// Blob URL without query (Azure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Path of the stored disk (gallery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Name in the gallery index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image size in bytes.
    pub size: u64,
    /// sha256 of the image.
    pub sha256: String,
    /// Bytes sent (Azure) or copied (gallery).
    pub bytes_sent: u64,
    /// Bytes not sent: zero, or already committed (Azure), or hard-linked/already stored (gallery).
    pub bytes_skipped: u64,
    /// Put Page ranges planned (Azure).
    pub ranges: u64,
    /// Requests retried (Azure).
    pub retries: u64,
    /// Seconds taken.
    pub duration_secs: f64,
    /// Validation ran and passed (false with --no-validate or for a gallery).
    pub validated: bool,
    /// Nothing changed: already published (gallery).
    pub unchanged: bool,
    /// Azure details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure: Option<azure::AzureOutcome>,
}

/// A URL without its query string (where SAS tokens live) or user info.
pub fn redact_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = auth.rsplit('@').next().unwrap_or(auth);
            let q = if no_query.len() < url.len() {
                "?<redacted>"
            } else {
                ""
            };
            format!("{scheme}://{host}{path}{q}")
        }
        None => no_query.to_string(),
    }
}

/// Redact every URL query and `sig=` value in free text.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, tok) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if tok.contains("://") {
            out.push_str(&redact_url(tok));
        } else if let Some(p) = tok.find("sig=") {
            out.push_str(&tok[..p]);
            out.push_str("sig=<redacted>");
        } else {
            out.push_str(tok);
        }
    }
    out
}

/// Feed the whole file to `f` in order, reading only `data` ranges (sorted,
/// disjoint) and feeding zeros elsewhere.
pub fn hash_sparse(
    file: &File,
    size: u64,
    data: &[(u64, u64)],
    f: &mut dyn FnMut(&[u8]),
) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0u64;
    let feed_zeros = |from: u64, to: u64, f: &mut dyn FnMut(&[u8])| {
        let mut p = from;
        while p < to {
            let n = (to - p).min(CHUNK);
            f(&zeros[..n as usize]);
            p += n;
        }
    };
    for &(o, l) in data {
        let (o, e) = (o.max(pos).min(size), (o + l).min(size));
        if e <= o {
            continue;
        }
        feed_zeros(pos, o, f);
        let mut p = o;
        while p < e {
            let n = (e - p).min(CHUNK) as usize;
            file.read_exact_at(&mut buf[..n], p)
                .ctx(|| format!("read at byte {p}"))?;
            f(&buf[..n]);
            p += n as u64;
        }
        pos = e;
    }
    feed_zeros(pos, size, f);
    Ok(())
}

/// The allocated ranges of a file (SEEK_DATA/SEEK_HOLE).
pub fn data_ranges(reader: &RawReader) -> Result<Vec<(u64, u64)>> {
    Ok(reader
        .map(0, reader.size())?
        .into_iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| (e.offset, e.len))
        .collect())
}

/// sha256 of a file, reading only its allocated ranges.
pub fn sha256_sparse(path: &Path) -> Result<String> {
    let reader = RawReader::open(path)?;
    let data = data_ranges(&reader)?;
    let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    hash_sparse(&file, reader.size(), &data, &mut |b| h.update(b))?;
    Ok(hex(&h.finalize()))
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mtime_ns(path: &Path) -> Result<i128> {
    let m = std::fs::metadata(path).ctx(|| format!("stat {}", path.display()))?;
    Ok(m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0))
}

/// Scan the image: sha256 (over allocated data, zeros elsewhere) and the
/// non-zero sector ranges, on two threads.
pub fn scan_local(image: &Path) -> Result<azure::LocalImage> {
    let reader = RawReader::open(image)?;
    let size = reader.size();
    let mtime = mtime_ns(image)?;
    let data = data_ranges(&reader)?;
    let file = File::open(image).ctx(|| format!("open {}", image.display()))?;
    let (sha, nonzero) = std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<String> {
            let mut h = sha2::Sha256::new();
            hash_sparse(&file, size, &data, &mut |b| h.update(b))?;
            Ok(hex(&h.finalize()))
        });
        let nz = azure::plan::scan_nonzero(&reader);
        let sha = h
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("hash thread panicked")));
        (sha, nz)
    });
    Ok(azure::LocalImage {
        size,
        mtime_ns: mtime,
        sha256: sha?,
        nonzero: azure::plan::normalise(nonzero?),
    })
}

/// Publish `image` to `target`.
pub fn publish(image: &Path, target: &Target, opts: &PublishOptions) -> Result<PublishReport> {
    let started = Instant::now();
    match target {
        Target::Dir(root) => {
            let g = gallery::publish(image, root, opts)?;
            Ok(PublishReport {
                target: target.display(),
                kind: "dir",
                url: None,
                path: Some(g.path),
                name: Some(g.name),
                size: g.size,
                sha256: g.sha256,
                bytes_sent: g.bytes_copied,
                bytes_skipped: g.size - g.bytes_copied.min(g.size),
                ranges: 0,
                retries: 0,
                duration_secs: started.elapsed().as_secs_f64(),
                validated: false,
                unchanged: g.unchanged,
                azure: None,
            })
        }
        Target::Azure(url) => {
            let mut validated = false;
            if opts.validate {
                let req = crate::validate::Request {
                    profile: "azure".into(),
                    ..Default::default()
                };
                let report =
                    crate::validate::validate(image, &crate::source::OpenOptions::default(), &req)?;
                if !report.passes(false) {
                    return Err(Error::new(
                        crate::error::ErrorKind::Validation,
                        format!(
                            "{} does not pass validation for Azure; nothing uploaded \
                             (see `onramp validate {}`; --no-validate overrides):\n{}",
                            image.display(),
                            image.display(),
                            report.to_text(false).trim_end()
                        ),
                    ));
                }
                validated = true;
            }
            let local = scan_local(image)?;
            let aopts = azure::AzureOptions {
                parallel: opts.parallel,
                force: opts.force,
                retry: opts.retry,
                progress: opts.progress,
            };
            let a = azure::upload(image, url, opts.sas.as_deref(), &local, &aopts)?;
            Ok(PublishReport {
                target: target.display(),
                kind: "azure",
                url: Some(redact_url(url)),
                path: None,
                name: None,
                size: local.size,
                sha256: local.sha256,
                bytes_sent: a.bytes_sent,
                bytes_skipped: a.bytes_skipped_zero + a.bytes_resumed,
                ranges: a.ranges,
                retries: a.retries,
                duration_secs: started.elapsed().as_secs_f64(),
                validated,
                unchanged: false,
                azure: Some(a),
            })
        }
    }
}

/// One publish request of a recipe: `to` is `dir:PATH` or `azure:URL`; `sas`
/// overrides the environment for that target.
#[derive(Debug, Clone, Default)]
pub struct PublishTo {
    /// Target text.
    pub to: String,
    /// SAS token for this target.
    pub sas: Option<String>,
}

/// Publish a built artifact (and its manifest) to several targets, one after
/// the other; one result per target, in order. A recipe build calls this
/// after writing `artifact` and `manifest`.
pub fn publish_many(
    artifact: &Path,
    manifest: Option<&Path>,
    targets: &[PublishTo],
    base: &PublishOptions,
) -> Vec<Result<PublishReport>> {
    targets
        .iter()
        .map(|t| {
            let target = Target::parse(&t.to)?;
            let mut o = base.clone();
            if t.sas.is_some() {
                o.sas = t.sas.clone();
            }
            if manifest.is_some() {
                o.manifest = manifest.map(Path::to_path_buf);
            }
            publish(artifact, &target, &o)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_redaction() {
        assert_eq!(
            Target::parse("dir:/x/y").unwrap(),
            Target::Dir("/x/y".into())
        );
        let t =
            Target::parse("azure:https://a.blob.core.windows.net/c/d.vhd?sv=1&sig=SECRET").unwrap();
        assert!(!t.display().contains("SECRET"));
        assert!(Target::parse("s3:bucket").is_err());
        assert!(Target::parse("dir:").is_err());
        let e = Target::parse("azure:http://h/x?sig=SECRET").unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert_eq!(
            redact_url("http://u:p@h:1/a/b?sig=x"),
            "http://h:1/a/b?<redacted>"
        );
        let t = redact_text("PUT http://h/a?comp=page&sig=abc: failed sig=zzz");
        assert!(!t.contains("abc") && !t.contains("zzz"), "{t}");
    }
}
