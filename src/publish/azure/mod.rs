//! Azure Blob Storage: upload a fixed VHD as a page blob over the REST API.
//!
//! Steps: create the page blob at the exact file size (or resume one this
//! upload created, from the journal plus Get Page Ranges), Put Page only the
//! non-zero 512-byte sectors in ranges of at most 4 MiB, several at once, each
//! with a transactional Content-MD5 and `x-ms-if-sequence-number-eq: 0` so a
//! concurrent writer makes it fail with 412; clear pages a pre-existing blob
//! holds where the image is zero; verify with Get Page Ranges and ranged reads
//! compared by digest; finally set Content-MD5 and metadata.
//!
//! The client is hand-written on `ureq` (see [`client`]): the official Rust
//! SDK is async-only (tokio) and lacks Shared Key auth for blobs, while the
//! handful of REST calls a page blob upload needs are small and documented.

pub mod client;
pub mod journal;
pub mod plan;

use crate::error::{Error, ErrorKind, IoContext, Result};
use base64::Engine as _;
use client::{BlobUrl, Client, Credential, Req, Resp, RetryPolicy};
use md5::Digest as _;
use plan::{covered, normalise, plan_ranges, subtract};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Options of an Azure upload.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// Requests in flight.
    pub parallel: usize,
    /// Overwrite an existing blob.
    pub force: bool,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What is known about the local image before uploading.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Size in bytes.
    pub size: u64,
    /// mtime in ns.
    pub mtime_ns: i128,
    /// sha256 hex of the whole image.
    pub sha256: String,
    /// Non-zero byte ranges, sorted and merged.
    pub nonzero: Vec<(u64, u64)>,
}

/// What an Azure upload did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AzureOutcome {
    /// Bytes sent in Put Page requests (this run).
    pub bytes_sent: u64,
    /// Bytes not sent because they are zero.
    pub bytes_skipped_zero: u64,
    /// Bytes not sent because an earlier run committed them.
    pub bytes_resumed: u64,
    /// Bytes cleared on a pre-existing blob.
    pub bytes_cleared: u64,
    /// Put Page (update) requests that succeeded in this run.
    pub put_pages: u64,
    /// Put Page (clear) requests.
    pub clear_pages: u64,
    /// Ranges in the plan (all runs).
    pub ranges: u64,
    /// Requests retried.
    pub retries: u64,
    /// The blob was created by this upload (or its resumed predecessor).
    pub created: bool,
    /// This run resumed an earlier one.
    pub resumed: bool,
    /// Content-MD5 set on the blob (base64).
    pub content_md5: String,
    /// Bytes read back for verification.
    pub bytes_verified: u64,
}

/// Resolve the credential: `--sas`, a SAS in the URL, AZURE_STORAGE_SAS_TOKEN,
/// then AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY.
pub fn credential(url: &BlobUrl, sas: Option<&str>) -> Result<Credential> {
    let clean = |s: &str| s.trim().trim_start_matches('?').to_string();
    if let Some(s) = sas.filter(|s| !s.trim().is_empty()) {
        return Ok(Credential::Sas(clean(s)));
    }
    if let Some(s) = &url.sas_in_url {
        return Ok(Credential::Sas(clean(s)));
    }
    if let Ok(s) = std::env::var("AZURE_STORAGE_SAS_TOKEN") {
        if !s.trim().is_empty() {
            return Ok(Credential::Sas(clean(&s)));
        }
    }
    match (
        std::env::var("AZURE_STORAGE_ACCOUNT"),
        std::env::var("AZURE_STORAGE_KEY"),
    ) {
        (Ok(account), Ok(key)) if !key.trim().is_empty() => {
            if account != url.account {
                return Err(Error::invalid(format!(
                    "AZURE_STORAGE_ACCOUNT is {account:?} but the URL names account {:?}",
                    url.account
                )));
            }
            let key = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| Error::invalid("AZURE_STORAGE_KEY is not valid base64"))?;
            Ok(Credential::SharedKey { account, key })
        }
        _ => Err(Error::invalid(
            "no Azure credentials: pass --sas TOKEN or set AZURE_STORAGE_SAS_TOKEN, \
             or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY",
        )),
    }
}

fn publish_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Publish, msg)
}

fn range_header(off: u64, len: u64) -> String {
    format!("bytes={}-{}", off, off + len - 1)
}

/// Describe an unexpected response.
fn unexpected(client: &Client, what: &str, r: &Resp) -> Error {
    if r.status == 412 {
        return publish_err(format!(
            "{what} {}: HTTP 412 {}: another writer changed the blob (its lease or sequence number); upload aborted",
            client.url.display(),
            r.error_code()
        ));
    }
    let hint = match r.status {
        401 | 403 => " (check the SAS token or account key and its permissions)",
        _ => "",
    };
    publish_err(format!(
        "{what} {}: HTTP {} {}{hint}",
        client.url.display(),
        r.status,
        r.error_code()
    ))
}

struct Remote {
    length: u64,
    sequence: u64,
    page_blob: bool,
}

fn head(client: &Client) -> Result<Option<Remote>> {
    let r = client.send(&Req::new("HEAD", &[]))?;
    match r.status {
        200 => Ok(Some(Remote {
            length: r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            sequence: r
                .header("x-ms-blob-sequence-number")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            page_blob: r.header("x-ms-blob-type") == Some("PageBlob"),
        })),
        404 => Ok(None),
        _ => Err(unexpected(client, "Get Blob Properties", &r)),
    }
}

/// Get Page Ranges (all pages, following NextMarker).
pub fn page_ranges(client: &Client) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut marker = String::new();
    for _ in 0..100_000 {
        let q_marker;
        let mut q: Vec<(&str, &str)> = vec![("comp", "pagelist")];
        if !marker.is_empty() {
            q_marker = marker.clone();
            q.push(("marker", q_marker.as_str()));
        }
        let mut req = Req::new("GET", &q);
        req.max_body = 256 << 20;
        let r = client.send(&req)?;
        if r.status != 200 {
            return Err(unexpected(client, "Get Page Ranges", &r));
        }
        let xml = String::from_utf8_lossy(&r.body);
        out.extend(client::parse_page_ranges(&xml)?);
        marker = xml
            .find("<NextMarker>")
            .and_then(|s| {
                let rest = &xml[s + "<NextMarker>".len()..];
                rest.find("</NextMarker>").map(|e| rest[..e].to_string())
            })
            .unwrap_or_default();
        if marker.is_empty() {
            return Ok(normalise(out));
        }
    }
    Err(publish_err(
        "Get Page Ranges: too many continuation markers",
    ))
}

/// Outcome of the worker pool.
enum Failure {
    /// Keep the blob and journal: a re-run can resume.
    Resumable(Error),
    /// Another writer owns the blob now.
    Conflict(Error),
    /// Anything else.
    Fatal(Error),
}

impl Failure {
    fn error(self) -> Error {
        match self {
            Failure::Resumable(e) | Failure::Conflict(e) | Failure::Fatal(e) => e,
        }
    }
}

/// Upload `image` (described by `local`) to the page blob at `url`.
pub fn upload(
    image: &Path,
    url: &str,
    sas: Option<&str>,
    local: &LocalImage,
    opts: &AzureOptions,
) -> Result<AzureOutcome> {
    let blob = BlobUrl::parse(url)?;
    let cred = credential(&blob, sas)?;
    if !local.size.is_multiple_of(plan::PAGE) || local.size == 0 {
        return Err(Error::invalid(format!(
            "{}: size {} is not a non-zero multiple of 512 bytes: not a page blob image",
            image.display(),
            local.size
        )));
    }
    let client = Client::new(blob, cred, opts.retry);
    let file = File::open(image).ctx(|| format!("open {}", image.display()))?;
    let jpath = journal::path_for(image);
    let key = journal::JournalKey {
        url: client.url.display(),
        size: local.size,
        mtime_ns: local.mtime_ns,
        sha256_prefix: local.sha256.chars().take(16).collect(),
    };
    let old = journal::load(&jpath, &key);
    let mut out = AzureOutcome::default();

    // Decide: resume, reuse (with --force), or create.
    let remote = head(&client)?;
    let mut trust_zero = true;
    let mut remote_ranges = Vec::new();
    let mut committed: Vec<(u64, u64)> = Vec::new();
    let mut owned = false; // delete on fatal failure
    match (&remote, &old) {
        (Some(r), Some(j))
            if j.created && r.page_blob && r.length == local.size && r.sequence == 0 =>
        {
            out.resumed = true;
            out.created = true;
            owned = true;
            committed = normalise(j.committed.clone());
            remote_ranges = page_ranges(&client)?;
        }
        (Some(_), _) if !opts.force => {
            return Err(Error::invalid(format!(
                "{} already exists; pass --force to overwrite it",
                client.url.display()
            )));
        }
        (Some(r), _) if r.page_blob && r.length == local.size => {
            // Reuse in place: reset the sequence number, then clear stale pages.
            let req = Req::new("PUT", &[("comp", "properties")])
                .h("x-ms-sequence-number-action", "update")
                .h("x-ms-blob-sequence-number", "0");
            let resp = client.send(&req)?;
            if resp.status != 200 {
                return Err(unexpected(&client, "Set Blob Properties", &resp));
            }
            trust_zero = false;
            remote_ranges = page_ranges(&client)?;
        }
        _ => {
            let mut req = Req::new("PUT", &[])
                .h("x-ms-blob-type", "PageBlob")
                .h("x-ms-blob-content-length", local.size.to_string())
                .h("x-ms-blob-sequence-number", "0")
                .h("x-ms-blob-content-type", "application/octet-stream");
            if remote.is_none() {
                req = req.h("if-none-match", "*");
            }
            let resp = client.send(&req)?;
            if resp.status != 201 {
                if resp.status == 409 || resp.status == 412 {
                    return Err(publish_err(format!(
                        "Put Blob {}: HTTP {} {}: the blob appeared while onramp was creating it (another writer)",
                        client.url.display(),
                        resp.status,
                        resp.error_code()
                    )));
                }
                return Err(unexpected(&client, "Put Blob", &resp));
            }
            out.created = true;
            owned = remote.is_none();
        }
    }
    let mut jr = journal::Journal {
        version: 1,
        key,
        created: out.created,
        committed: committed.clone(),
    };
    journal::save(&jpath, &jr)?;

    let result = transfer(
        &client,
        &file,
        local,
        opts,
        trust_zero,
        &remote_ranges,
        &committed,
        &mut jr,
        &jpath,
        &mut out,
    );
    match result {
        Ok(()) => {
            let _ = std::fs::remove_file(&jpath);
            out.retries = client.retries();
            Ok(out)
        }
        Err(Failure::Fatal(e)) if owned => {
            let _ = client.send(&Req::new("DELETE", &[]));
            let _ = std::fs::remove_file(&jpath);
            Err(publish_err(format!(
                "{e}; the blob this upload created was deleted"
            )))
        }
        Err(Failure::Resumable(e)) => Err(publish_err(format!(
            "{e}; run the same command again to resume (journal {})",
            jpath.display()
        ))),
        Err(f) => Err(f.error()),
    }
}

/// One unit of work for the pool.
#[derive(Clone, Copy)]
enum Job {
    Put(u64, u64),
    Clear(u64, u64),
}

#[allow(clippy::too_many_arguments)]
fn transfer(
    client: &Client,
    file: &File,
    local: &LocalImage,
    opts: &AzureOptions,
    trust_zero: bool,
    remote_ranges: &[(u64, u64)],
    committed: &[(u64, u64)],
    jr: &mut journal::Journal,
    jpath: &Path,
    out: &mut AzureOutcome,
) -> std::result::Result<(), Failure> {
    let planned = plan_ranges(&local.nonzero, local.size);
    out.ranges = planned.len() as u64;
    let data_bytes: u64 = planned.iter().map(|r| r.1).sum();
    out.bytes_skipped_zero = local.size - data_bytes;
    let mut jobs = Vec::new();
    for &(o, l) in &planned {
        if trust_zero && covered(committed, o, l) && covered(remote_ranges, o, l) {
            out.bytes_resumed += l;
        } else {
            jobs.push(Job::Put(o, l));
        }
    }
    // Pages the blob holds where the image is zero: clear them.
    let stale = subtract(remote_ranges, &normalise(planned.clone()));
    for (o, l) in plan_ranges(&stale, local.size) {
        jobs.push(Job::Clear(o, l));
    }
    let to_send: u64 = jobs
        .iter()
        .map(|j| if let Job::Put(_, l) = j { *l } else { 0 })
        .sum();

    let pb = opts.progress.then(|| {
        let pb = indicatif::ProgressBar::new(to_send);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} sent {msg} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_message(format!(
            "({} zero skipped, {} resumed)",
            indicatif::HumanBytes(out.bytes_skipped_zero),
            indicatif::HumanBytes(out.bytes_resumed)
        ));
        pb
    });

    // MD5 of the whole file, in parallel with the upload.
    let md5_handle = {
        let f = file
            .try_clone()
            .map_err(|e| Failure::Fatal(Error::io("dup image", e)))?;
        let size = local.size;
        let nonzero = local.nonzero.clone();
        std::thread::spawn(move || md5_sparse(&f, size, &nonzero))
    };

    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = crossbeam_channel::unbounded::<std::result::Result<Job, Failure>>();
    let workers = opts.parallel.clamp(1, 64);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (jobs, next, stop) = (&jobs, &next, &stop);
            s.spawn(move || {
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&job) = jobs.get(i) else { break };
                    let r = run_job(client, file, job, &mut buf);
                    let failed = r.is_err();
                    let _ = tx.send(r.map(|()| job));
                    if failed {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut failure: Option<Failure> = None;
        let mut last_save = Instant::now();
        let mut dirty = 0usize;
        for r in rx {
            match r {
                Ok(Job::Put(o, l)) => {
                    out.put_pages += 1;
                    out.bytes_sent += l;
                    jr.committed.push((o, l));
                    dirty += 1;
                    if let Some(pb) = &pb {
                        pb.inc(l);
                    }
                }
                Ok(Job::Clear(_, l)) => {
                    out.clear_pages += 1;
                    out.bytes_cleared += l;
                }
                Err(f) => {
                    if failure.is_none() {
                        failure = Some(f);
                    }
                }
            }
            if dirty > 0 && (dirty >= 64 || last_save.elapsed() >= Duration::from_millis(250)) {
                jr.committed = normalise(std::mem::take(&mut jr.committed));
                if let Err(e) = journal::save(jpath, jr) {
                    failure.get_or_insert(Failure::Resumable(e));
                    stop.store(true, Ordering::Relaxed);
                }
                dirty = 0;
                last_save = Instant::now();
            }
        }
        jr.committed = normalise(std::mem::take(&mut jr.committed));
        let saved = journal::save(jpath, jr);
        if let Some(f) = failure {
            return Err(f);
        }
        saved.map_err(Failure::Resumable)
    })?;
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }

    // Verify: the page list equals the plan, and every range reads back identical.
    let remote = page_ranges(client).map_err(Failure::Resumable)?;
    let want = normalise(planned.clone());
    let missing = subtract(&want, &remote);
    let extra = subtract(&remote, &want);
    if let Some(&(o, l)) = missing.first() {
        return Err(Failure::Fatal(publish_err(format!(
            "verify {}: bytes {o}..{} hold data locally but the blob has no pages there",
            client.url.display(),
            o + l
        ))));
    }
    if let Some(&(o, l)) = extra.first() {
        return Err(Failure::Fatal(publish_err(format!(
            "verify {}: the blob has pages at bytes {o}..{} where the image is zero",
            client.url.display(),
            o + l
        ))));
    }
    out.bytes_verified = verify_reads(client, file, &planned, opts.parallel)?;

    let md5 = md5_handle
        .join()
        .map_err(|_| Failure::Fatal(publish_err("md5 thread panicked")))?
        .map_err(Failure::Fatal)?;
    let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
    let r = client
        .send(
            &Req::new("PUT", &[("comp", "properties")])
                .h("x-ms-blob-content-md5", md5_b64.clone())
                .h("x-ms-blob-content-type", "application/octet-stream"),
        )
        .map_err(Failure::Resumable)?;
    if r.status != 200 {
        return Err(classify(
            unexpected(client, "Set Blob Properties", &r),
            r.status,
        ));
    }
    let r = client
        .send(
            &Req::new("PUT", &[("comp", "metadata")])
                .h("x-ms-meta-sha256", local.sha256.clone())
                .h("x-ms-meta-onramp_version", env!("CARGO_PKG_VERSION")),
        )
        .map_err(Failure::Resumable)?;
    if r.status != 200 {
        return Err(classify(
            unexpected(client, "Set Blob Metadata", &r),
            r.status,
        ));
    }
    out.content_md5 = md5_b64;
    Ok(())
}

fn classify(e: Error, status: u16) -> Failure {
    if status == 412 {
        Failure::Conflict(e)
    } else {
        Failure::Fatal(e)
    }
}

fn run_job(
    client: &Client,
    file: &File,
    job: Job,
    buf: &mut Vec<u8>,
) -> std::result::Result<(), Failure> {
    let (req, what) = match job {
        Job::Put(o, l) => {
            buf.resize(l as usize, 0);
            file.read_exact_at(buf, o)
                .map_err(|e| Failure::Fatal(Error::io(format!("read image at byte {o}"), e)))?;
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&buf[..]));
            let mut req = Req::new("PUT", &[("comp", "page")])
                .h("x-ms-page-write", "update")
                .h("x-ms-range", range_header(o, l))
                .h("content-md5", md5)
                .h("x-ms-if-sequence-number-eq", "0");
            req.body = &buf[..];
            (req, "Put Page")
        }
        Job::Clear(o, l) => (
            Req::new("PUT", &[("comp", "page")])
                .h("x-ms-page-write", "clear")
                .h("x-ms-range", range_header(o, l))
                .h("x-ms-if-sequence-number-eq", "0"),
            "Put Page (clear)",
        ),
    };
    let r = match client.send(&req) {
        Ok(r) => r,
        Err(e) => return Err(Failure::Resumable(e)),
    };
    if r.status == 201 {
        return Ok(());
    }
    let e = unexpected(client, what, &r);
    Err(classify(e, r.status))
}

fn verify_reads(
    client: &Client,
    file: &File,
    planned: &[(u64, u64)],
    parallel: usize,
) -> std::result::Result<u64, Failure> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let total = std::sync::atomic::AtomicU64::new(0);
    let first_err: std::sync::Mutex<Option<Failure>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, 64) {
            s.spawn(|| {
                let mut local = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(o, l)) = planned.get(i) else { break };
                    let r = (|| -> std::result::Result<(), Failure> {
                        let mut req = Req::new("GET", &[]).h("x-ms-range", range_header(o, l));
                        req.max_body = l + 1;
                        let r = client.send(&req).map_err(Failure::Resumable)?;
                        if r.status != 206 && r.status != 200 {
                            let st = r.status;
                            return Err(classify(unexpected(client, "Get Blob (verify)", &r), st));
                        }
                        local.resize(l as usize, 0);
                        file.read_exact_at(&mut local, o).map_err(|e| {
                            Failure::Fatal(Error::io(format!("read image at byte {o}"), e))
                        })?;
                        if r.body.len() as u64 != l
                            || sha2::Sha256::digest(&r.body) != sha2::Sha256::digest(&local)
                        {
                            return Err(Failure::Fatal(publish_err(format!(
                                "verify {}: bytes {o}..{} read back differ from the image",
                                client.url.display(),
                                o + l
                            ))));
                        }
                        total.fetch_add(l, Ordering::Relaxed);
                        Ok(())
                    })();
                    if let Err(f) = r {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut g) = first_err.lock() {
                            g.get_or_insert(f);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(f) = first_err.into_inner().ok().flatten() {
        return Err(f);
    }
    Ok(total.load(Ordering::Relaxed))
}

/// MD5 of the whole file, reading only `nonzero` ranges and hashing zeros elsewhere.
fn md5_sparse(file: &File, size: u64, nonzero: &[(u64, u64)]) -> Result<[u8; 16]> {
    let mut h = md5::Md5::new();
    super::hash_sparse(file, size, nonzero, &mut |b| h.update(b))?;
    Ok(h.finalize().into())
}
