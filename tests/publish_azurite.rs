//! `onramp publish` against Azurite (the Azure Storage emulator, npm package
//! `azurite`) and the local gallery. The blob is judged by downloading it and
//! comparing bytes with the local file; every Put Page is checked at a
//! loopback proxy (512-aligned, at most 4 MiB, body length = range), which can
//! also inject 500/503, connection resets and delays.

mod common;

use common::*;
use onramp::publish::azure::client::{BlobUrl, Client, Credential, Req, RetryPolicy};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Azurite {
    fn start() -> Option<Azurite> {
        if !require(&["azurite-blob"]) {
            return None;
        }
        let dir = tempdir();
        let port = free_port();
        let child = Command::new("azurite-blob")
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
                s(dir.path()),
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn azurite-blob");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let a = Azurite {
            child,
            port,
            _dir: dir,
        };
        // Create the container with one signed request.
        let c = a.client_at("/devstoreaccount1/cont");
        let r = c
            .send(&Req::new("PUT", &[("restype", "container")]))
            .expect("create container");
        assert_eq!(
            r.status,
            201,
            "create container: {} {}",
            r.error_code(),
            String::from_utf8_lossy(&r.body)
        );
        Some(a)
    }

    fn client_at(&self, path: &str) -> Client {
        self.client_port(self.port, path)
    }

    fn client_port(&self, port: u16, path: &str) -> Client {
        let url = BlobUrl {
            scheme: "http".into(),
            authority: format!("127.0.0.1:{port}"),
            path: path.into(),
            account: ACCOUNT.into(),
            sas_in_url: None,
        };
        let key = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(KEY)
                .unwrap()
        };
        let policy = RetryPolicy {
            attempts: 1,
            ..Default::default()
        };
        Client::new(
            url,
            Credential::SharedKey {
                account: ACCOUNT.into(),
                key,
            },
            policy,
        )
    }

    fn url(&self, port: u16, blob: &str) -> String {
        format!("http://127.0.0.1:{port}/{ACCOUNT}/cont/{blob}")
    }

    fn download(&self, blob: &str) -> Vec<u8> {
        let c = self.client_at(&format!("/{ACCOUNT}/cont/{blob}"));
        let mut req = Req::new("GET", &[]);
        req.max_body = 1 << 30;
        let r = c.send(&req).expect("download");
        assert_eq!(r.status, 200);
        r.body
    }

    fn blob_client(&self, blob: &str) -> Client {
        self.client_at(&format!("/{ACCOUNT}/cont/{blob}"))
    }
}

/// One request seen at the proxy.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    #[allow(dead_code)]
    body_len: usize,
}

impl Seen {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
    fn is_put_page(&self) -> bool {
        self.method == "PUT"
            && self.target.contains("comp=page")
            && self.header("x-ms-page-write") == Some("update")
    }
    fn range(&self) -> (u64, u64) {
        let r = self.header("x-ms-range").expect("x-ms-range");
        let r = r.strip_prefix("bytes=").expect("bytes=");
        let (a, b) = r.split_once('-').expect("range");
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        (a, b - a + 1)
    }
}

#[derive(Default)]
struct Faults {
    /// Probability (per mille) of a fault per request.
    permille: u64,
    /// Faults left (the proxy stops injecting after this many).
    budget: AtomicU64,
    /// Delay added to every request.
    delay_ms: AtomicU64,
    /// Answer Put Page number N (1-based) and later with 400 (0: never).
    fatal_put_page: AtomicU64,
}

/// A loopback HTTP proxy in front of Azurite: one upstream connection per
/// request, records requests, checks Put Page shape, injects faults.
struct Proxy {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    bad: Arc<Mutex<Vec<String>>>,
    faults: Arc<Faults>,
    injected: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_head(s: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(p + 4);
            return Some((buf, rest));
        }
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

impl Proxy {
    fn start(upstream: u16, seed: u64, permille: u64, budget: u64) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Faults {
            permille,
            budget: AtomicU64::new(budget),
            delay_ms: AtomicU64::new(0),
            fatal_put_page: AtomicU64::new(0),
        });
        let injected = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(seed | 1));
        {
            let (seen, bad, faults, injected, stop) = (
                seen.clone(),
                bad.clone(),
                faults.clone(),
                injected.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(c) = conn else { continue };
                    let (seen, bad, faults, injected, rng) = (
                        seen.clone(),
                        bad.clone(),
                        faults.clone(),
                        injected.clone(),
                        rng.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = serve(c, upstream, &seen, &bad, &faults, &injected, &rng);
                    });
                }
            });
        }
        Proxy {
            port,
            seen,
            bad,
            faults,
            injected,
            stop,
        }
    }

    fn put_pages(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.is_put_page())
            .cloned()
            .collect()
    }

    fn assert_clean(&self) {
        let bad = self.bad.lock().unwrap();
        assert!(bad.is_empty(), "bad Put Page requests: {bad:?}");
    }
}

fn next_rand(rng: &Mutex<u64>) -> u64 {
    let mut x = rng.lock().unwrap();
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn serve(
    mut c: TcpStream,
    upstream: u16,
    seen: &Mutex<Vec<Seen>>,
    bad: &Mutex<Vec<String>>,
    faults: &Faults,
    injected: &AtomicU64,
    rng: &Mutex<u64>,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    // One request per connection: the response carries "Connection: close".
    {
        let Some((head, mut body)) = read_head(&mut c) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("").to_string();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut tmp = vec![0u8; 65536];
        while body.len() < len {
            let n = c.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            body.extend_from_slice(&tmp[..n]);
        }
        let s = Seen {
            method: method.clone(),
            target: target.clone(),
            headers: headers.clone(),
            body_len: body.len(),
        };
        if s.is_put_page() {
            let (o, l) = s.range();
            if o % 512 != 0 || l % 512 != 0 || l == 0 || l > 4 << 20 || l != body.len() as u64 {
                bad.lock()
                    .unwrap()
                    .push(format!("{o}+{l} body {}", body.len()));
            }
            if s.header("content-md5").is_none()
                || s.header("x-ms-if-sequence-number-eq") != Some("0")
            {
                bad.lock()
                    .unwrap()
                    .push(format!("{o}+{l}: missing md5 or sequence condition"));
            }
        }
        let fatal = faults.fatal_put_page.load(Ordering::Relaxed);
        if s.is_put_page() && fatal > 0 {
            let n = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.is_put_page())
                .count() as u64;
            if n + 1 >= fatal {
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nx-ms-error-code: InvalidHeaderValue\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                seen.lock().unwrap().push(s);
                return Ok(());
            }
        }
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        // Fault injection.
        if faults.permille > 0 && next_rand(rng) % 1000 < faults.permille {
            let left = faults.budget.load(Ordering::Relaxed);
            if left > 0
                && faults
                    .budget
                    .compare_exchange(left, left - 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                injected.fetch_add(1, Ordering::Relaxed);
                match next_rand(rng) % 4 {
                    0 => {
                        let _ = c.write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return Ok(());
                    }
                    1 => {
                        let _ = c.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return Ok(());
                    }
                    2 => {
                        // Reset: drop the connection without answering.
                        let _ = c.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                    _ => std::thread::sleep(Duration::from_millis(next_rand(rng) % 300)),
                }
            }
        }
        seen.lock().unwrap().push(s);
        // Forward with Connection: close upstream, read the response to EOF.
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        let mut out = format!("{first}\r\n");
        for (k, v) in &headers {
            if k != "connection" {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("connection: close\r\n\r\n");
        up.write_all(out.as_bytes())?;
        up.write_all(&body)?;
        let mut resp = Vec::new();
        up.read_to_end(&mut resp)?;
        c.write_all(&resp)?;
    }
    Ok(())
}

/// A 64 MiB disk with scattered data: small blocks, an unaligned run, a run
/// crossing 4 MiB boundaries, and the last sector; converted to a fixed VHD.
fn make_vhd(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let raw = dir.join(format!("{name}.raw"));
    let f = std::fs::File::create(&raw).unwrap();
    let size: u64 = 64 << 20;
    f.set_len(size).unwrap();
    let mut spots: Vec<(u64, usize)> = vec![
        (0, 4096),
        (1_000_000 + 7, 70_000),
        (7 << 20, 9 << 20),
        (size - 512, 512),
    ];
    for i in 0..40u64 {
        spots.push((
            (20 << 20) + i * 600_000 + i * 13,
            4096 + (i as usize * 1000),
        ));
    }
    for (i, (o, l)) in spots.iter().enumerate() {
        f.write_all_at(&pattern(i as u64 + 7, *l), *o).unwrap();
    }
    drop(f);
    let vhd = dir.join(format!("{name}.vhd"));
    onramp_ok(&["convert", s(&raw), s(&vhd), "--to", "azure-vhd"]);
    std::fs::remove_file(&raw).unwrap();
    vhd
}

fn publish_cmd(image: &Path, url: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(onramp_bin());
    c.args([
        "publish",
        s(image),
        "--to",
        &format!("azure:{url}"),
        "--json",
    ])
    .args(extra)
    .env("AZURE_STORAGE_ACCOUNT", ACCOUNT)
    .env("AZURE_STORAGE_KEY", KEY)
    .env_remove("AZURE_STORAGE_SAS_TOKEN");
    c
}

fn publish_json(image: &Path, url: &str, extra: &[&str]) -> serde_json::Value {
    let out = publish_cmd(image, url, extra).output().unwrap();
    assert!(
        out.status.success(),
        "publish failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn data_bytes(v: &serde_json::Value) -> u64 {
    v["size"].as_u64().unwrap() - v["azure"]["bytes_skipped_zero"].as_u64().unwrap()
}

#[test]
fn upload_download_identical() {
    let Some(az) = Azurite::start() else { return };
    let d = tempdir();
    let vhd = make_vhd(d.path(), "a");
    let proxy = Proxy::start(az.port, 1, 0, 0);
    let v = publish_json(&vhd, &az.url(proxy.port, "a.vhd"), &["--parallel", "4"]);
    assert_eq!(az.download("a.vhd"), std::fs::read(&vhd).unwrap());
    let size = std::fs::metadata(&vhd).unwrap().len();
    let sent = v["bytes_sent"].as_u64().unwrap();
    // ~9.9 MiB of data in a 64 MiB disk: bytes sent close to the data, not the size.
    assert!((9 << 20..12 << 20).contains(&sent), "sent {sent} of {size}");
    assert_eq!(sent, data_bytes(&v));
    assert_eq!(v["sha256"].as_str().unwrap(), sha256_file(&vhd));
    assert!(!v.to_string().contains(KEY));
    proxy.assert_clean();
    let pages = proxy.put_pages();
    assert_eq!(pages.len() as u64, v["ranges"].as_u64().unwrap());
    // Content-MD5 and metadata were set; the local journal is gone.
    let r = az
        .blob_client("a.vhd")
        .send(&Req::new("HEAD", &[]))
        .unwrap();
    assert!(r.header("content-md5").is_some());
    assert_eq!(
        r.header("x-ms-meta-sha256"),
        Some(sha256_file(&vhd).as_str())
    );
    assert!(!onramp::publish::azure::journal::path_for(&vhd).exists());
    // Publishing again without --force is refused (exit 2), with --force it works.
    let out = publish_cmd(&vhd, &az.url(az.port, "a.vhd"), &[])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    publish_json(&vhd, &az.url(az.port, "a.vhd"), &["--force"]);
    assert_eq!(az.download("a.vhd"), std::fs::read(&vhd).unwrap());
}

#[test]
fn faults_are_retried() {
    let Some(az) = Azurite::start() else { return };
    let d = tempdir();
    let vhd = make_vhd(d.path(), "f");
    let proxy = Proxy::start(az.port, 0xfeed, 250, 40);
    let v = publish_json(&vhd, &az.url(proxy.port, "f.vhd"), &["--parallel", "6"]);
    assert_eq!(az.download("f.vhd"), std::fs::read(&vhd).unwrap());
    let injected = proxy.injected.load(Ordering::Relaxed);
    assert!(injected >= 5, "only {injected} faults injected");
    assert!(v["retries"].as_u64().unwrap() >= 1, "{v}");
    proxy.assert_clean();
}

fn journal_ranges(vhd: &Path) -> Vec<(u64, u64)> {
    let p = onramp::publish::azure::journal::path_for(vhd);
    std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v["committed"].clone()).ok())
        .unwrap_or_default()
}

#[test]
fn killed_upload_resumes() {
    let Some(az) = Azurite::start() else { return };
    let d = tempdir();
    let vhd = make_vhd(d.path(), "k");
    let proxy = Proxy::start(az.port, 3, 0, 0);
    proxy.faults.delay_ms.store(150, Ordering::Relaxed);
    let url = az.url(proxy.port, "k.vhd");
    let mut child = publish_cmd(&vhd, &url, &["--parallel", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while journal_ranges(&vhd).iter().map(|r| r.1).sum::<u64>() < 4 << 20 {
        assert!(Instant::now() < deadline, "journal never grew");
        assert!(
            child.try_wait().unwrap().is_none(),
            "upload finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let committed = journal_ranges(&vhd);
    let first_run = proxy.put_pages().len();
    assert!(first_run > 0);
    proxy.faults.delay_ms.store(0, Ordering::Relaxed);
    let v = publish_json(&vhd, &url, &[]);
    assert_eq!(v["azure"]["resumed"], true, "{v}");
    let resumed = v["azure"]["bytes_resumed"].as_u64().unwrap();
    let committed_bytes: u64 = committed.iter().map(|r| r.1).sum();
    assert!(
        resumed >= committed_bytes && resumed > 0,
        "{resumed} < {committed_bytes}"
    );
    // No range the journal recorded was sent again.
    let second: Vec<Seen> = proxy.put_pages().into_iter().skip(first_run).collect();
    for p in &second {
        let (o, l) = p.range();
        for &(co, cl) in &committed {
            assert!(
                o + l <= co || co + cl <= o,
                "range {o}+{l} re-sent though committed {co}+{cl}"
            );
        }
    }
    assert_eq!(v["bytes_sent"].as_u64().unwrap() + resumed, data_bytes(&v));
    assert_eq!(az.download("k.vhd"), std::fs::read(&vhd).unwrap());
    proxy.assert_clean();
}

#[test]
fn junk_in_existing_blob_is_cleared() {
    let Some(az) = Azurite::start() else { return };
    let d = tempdir();
    let vhd = make_vhd(d.path(), "j");
    let size = std::fs::metadata(&vhd).unwrap().len();
    let c = az.blob_client("j.vhd");
    let r = c
        .send(
            &Req::new("PUT", &[])
                .h("x-ms-blob-type", "PageBlob")
                .h("x-ms-blob-content-length", size.to_string())
                .h("x-ms-blob-sequence-number", "5"),
        )
        .unwrap();
    assert_eq!(r.status, 201);
    // Junk where the image is zero (50 MiB..51 MiB, 60 MiB) and over data (0..4 KiB).
    for (o, l) in [(50u64 << 20, 1u64 << 20), (60 << 20, 4096), (0, 4096)] {
        let junk = vec![0xAAu8; l as usize];
        let mut req = Req::new("PUT", &[("comp", "page")])
            .h("x-ms-page-write", "update")
            .h("x-ms-range", format!("bytes={}-{}", o, o + l - 1));
        req.body = &junk;
        assert_eq!(c.send(&req).unwrap().status, 201);
    }
    let proxy = Proxy::start(az.port, 4, 0, 0);
    let v = publish_json(&vhd, &az.url(proxy.port, "j.vhd"), &["--force"]);
    assert!(
        v["azure"]["bytes_cleared"].as_u64().unwrap() >= (1 << 20) + 4096,
        "{v}"
    );
    assert_eq!(v["azure"]["created"], false);
    assert_eq!(az.download("j.vhd"), std::fs::read(&vhd).unwrap());
    proxy.assert_clean();
}

fn concurrent_writer_aborts(lease: bool) {
    let Some(az) = Azurite::start() else { return };
    let d = tempdir();
    let vhd = make_vhd(d.path(), "w");
    let proxy = Proxy::start(az.port, 5, 0, 0);
    proxy.faults.delay_ms.store(100, Ordering::Relaxed);
    let child = publish_cmd(&vhd, &az.url(proxy.port, "w.vhd"), &["--parallel", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.put_pages().len() < 3 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = az.blob_client("w.vhd");
    let r = if lease {
        c.send(
            &Req::new("PUT", &[("comp", "lease")])
                .h("x-ms-lease-action", "acquire")
                .h("x-ms-lease-duration", "-1"),
        )
        .unwrap()
    } else {
        c.send(
            &Req::new("PUT", &[("comp", "properties")])
                .h("x-ms-sequence-number-action", "increment"),
        )
        .unwrap()
    };
    assert!(r.status == 200 || r.status == 201, "{}", r.status);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("412") && err.contains("another writer"),
        "{err}"
    );
    assert!(!err.contains(KEY));
    proxy.assert_clean();
}

#[test]
fn sequence_number_change_aborts() {
    concurrent_writer_aborts(false);
}

#[test]
fn lease_midway_aborts() {
    concurrent_writer_aborts(true);
}

#[test]
fn credentials_and_validation_refusals() {
    let d = tempdir();
    let vhd = make_vhd(d.path(), "c");
    // No credentials: exit 2, before any network.
    let out = Command::new(onramp_bin())
        .args([
            "publish",
            s(&vhd),
            "--to",
            "azure:http://127.0.0.1:9/devstoreaccount1/cont/x.vhd",
        ])
        .env_remove("AZURE_STORAGE_ACCOUNT")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A SAS in the URL never shows up in errors (connection refused: exit 3).
    let out = Command::new(onramp_bin())
        .args([
            "publish",
            s(&vhd),
            "--to",
            "azure:http://127.0.0.1:9/devstoreaccount1/cont/x.vhd",
            "--sas",
            "sv=2021&sig=TOPSECRET",
            "--retries",
            "2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("TOPSECRET"), "{err}");
    // Not a fixed VHD: validation refuses (exit 1) unless --no-validate.
    let raw = d.path().join("r.raw");
    make_raw_with_holes(&raw, 3 << 20);
    let out = Command::new(onramp_bin())
        .args([
            "publish",
            s(&raw),
            "--to",
            "azure:http://127.0.0.1:9/devstoreaccount1/cont/x.vhd",
            "--sas",
            "sig=x",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(onramp_bin())
        .args(["publish", s(&raw), "--to", "dir:/nonexistent-parent/\0x"])
        .output();
    assert!(out.is_err() || !out.unwrap().status.success());
    let out = Command::new(onramp_bin())
        .args(["publish", s(&vhd), "--to", "s3:bucket"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn gallery_is_content_addressed_and_idempotent() {
    let d = tempdir();
    let vhd = make_vhd(d.path(), "g");
    let gal = d.path().join("gallery");
    let to = format!("dir:{}", gal.display());
    let sha = sha256_file(&vhd);
    let run = |name: &str| -> serde_json::Value {
        let out = onramp_ok(&["publish", s(&vhd), "--to", &to, "--name", name, "--json"]);
        serde_json::from_str(&out).unwrap()
    };
    let v1 = run("web");
    assert_eq!(v1["sha256"].as_str().unwrap(), sha);
    assert_eq!(v1["unchanged"], false);
    let stored = gal.join(&sha).join("disk.vhd");
    assert_eq!(sha256_file(&stored), sha);
    assert!(gal.join(&sha).join("manifest.json").is_file());
    let index_before = std::fs::read(gal.join("index.json")).unwrap();
    let mtime = std::fs::metadata(gal.join("index.json"))
        .unwrap()
        .modified()
        .unwrap();
    let v2 = run("web");
    assert_eq!(v2["unchanged"], true);
    assert_eq!(v2["bytes_sent"], 0);
    assert_eq!(std::fs::read(gal.join("index.json")).unwrap(), index_before);
    assert_eq!(
        std::fs::metadata(gal.join("index.json"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    // A second name for the same digest: one stored copy, two index entries.
    run("db");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gal.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["images"]["web"]["sha256"], sha.as_str());
    assert_eq!(idx["images"]["db"]["sha256"], sha.as_str());
    assert_eq!(
        idx["images"]["web"]["path"],
        format!("{sha}/disk.vhd").as_str()
    );
    let dirs: Vec<_> = std::fs::read_dir(&gal)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "no temp directories left behind");
    // A new version of "web": index updated, both versions listed.
    let vhd2 = make_vhd(d.path(), "g2");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&vhd2).unwrap();
        f.write_all_at(b"new", 30 << 20).unwrap();
    }
    let out = onramp_ok(&["publish", s(&vhd2), "--to", &to, "--name", "web", "--json"]);
    let v3: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sha2 = sha256_file(&vhd2);
    assert_eq!(v3["sha256"].as_str().unwrap(), sha2);
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gal.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["images"]["web"]["sha256"], sha2.as_str());
    assert_eq!(
        idx["images"]["web"]["versions"].as_array().unwrap().len(),
        2
    );
    assert_eq!(sha256_file(&gal.join(&sha2).join("disk.vhd")), sha2);
    // Concurrent publishers of different names: the index keeps both.
    let hs: Vec<_> = (0..4)
        .map(|i| {
            let (vhd, to) = (vhd.clone(), to.clone());
            std::thread::spawn(move || {
                onramp_ok(&["publish", s(&vhd), "--to", &to, "--name", &format!("n{i}")]);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gal.join("index.json")).unwrap()).unwrap();
    for i in 0..4 {
        assert_eq!(idx["images"][format!("n{i}")]["sha256"], sha.as_str());
    }
}

#[test]
fn gallery_copy_across_filesystems_is_sparse() {
    // /dev/shm is another file system (tmpfs) than the temp dir on most hosts;
    // when it is not, hard-linking is used and the test still checks the digest.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let d = tempdir();
    let vhd = make_vhd(d.path(), "x");
    let gal = tempfile::Builder::new()
        .prefix("onramp-gal")
        .tempdir_in(shm)
        .unwrap();
    let to = format!("dir:{}", gal.path().display());
    let v: serde_json::Value =
        serde_json::from_str(&onramp_ok(&["publish", s(&vhd), "--to", &to, "--json"])).unwrap();
    let sha = sha256_file(&vhd);
    let stored = gal.path().join(&sha).join("disk.vhd");
    assert_eq!(sha256_file(&stored), sha);
    let sent = v["bytes_sent"].as_u64().unwrap();
    assert!(sent < 12 << 20, "copied {sent}: not sparse");
    assert!(allocated(&stored) < 16 << 20);
}

#[test]
fn fatal_error_deletes_the_blob_it_created() {
    let Some(az) = Azurite::start() else { return };
    let d = tempdir();
    let vhd = make_vhd(d.path(), "z");
    let proxy = Proxy::start(az.port, 6, 0, 0);
    proxy.faults.fatal_put_page.store(5, Ordering::Relaxed);
    let out = publish_cmd(&vhd, &az.url(proxy.port, "z.vhd"), &["--parallel", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("HTTP 400") && err.contains("deleted"), "{err}");
    // A 400 is not retried: each Put Page that got it was sent once.
    let r = az
        .blob_client("z.vhd")
        .send(&Req::new("HEAD", &[]))
        .unwrap();
    assert_eq!(r.status, 404, "the blob this upload created is gone");
    assert!(!onramp::publish::azure::journal::path_for(&vhd).exists());
}

#[test]
fn publish_many_for_recipes() {
    use onramp::publish::{publish_many, PublishOptions, PublishTo};
    let d = tempdir();
    let vhd = make_vhd(d.path(), "m");
    let manifest = d.path().join("m.vhd.manifest.json");
    std::fs::write(&manifest, br#"{"recipe":"m"}"#).unwrap();
    let targets = [
        PublishTo {
            to: format!("dir:{}", d.path().join("g1").display()),
            sas: None,
        },
        PublishTo {
            to: "nowhere:x".into(),
            sas: None,
        },
    ];
    let r = publish_many(&vhd, Some(&manifest), &targets, &PublishOptions::default());
    assert_eq!(r.len(), 2);
    let ok = r[0].as_ref().unwrap();
    assert_eq!(ok.sha256, sha256_file(&vhd));
    let stored = d.path().join("g1").join(&ok.sha256).join("manifest.json");
    assert_eq!(std::fs::read(stored).unwrap(), br#"{"recipe":"m"}"#);
    assert!(r[1].is_err());
}

/// A valid account SAS for Azurite's well-known account (Azure "Create an
/// account SAS", version 2019-12-12 string-to-sign: account, permissions,
/// services, resource types, start, expiry, IP, protocol, version).
fn account_sas() -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let (sp, ss, srt, se, sv) = ("racwdl", "b", "sco", "2099-01-01T00:00:00Z", "2019-12-12");
    let sts = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n\n{sv}\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&sig={}",
        enc(se),
        enc(&sig)
    )
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn sas_token_never_appears_in_output_logs_or_manifests() {
    let Some(az) = Azurite::start() else { return };
    let d = tempdir();
    let vhd = make_vhd(d.path(), "sas");
    let sas = account_sas();
    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let leaks = |what: &str, text: &str| {
        assert!(
            !text.contains(&sas) && !text.contains(&sig) && !text.contains("sig="),
            "{what} leaks the SAS: {text}"
        );
    };
    let publish = |blob: &str, how: &str| {
        let url = az.url(az.port, blob);
        let mut c = Command::new(onramp_bin());
        c.args(["publish", s(&vhd), "--json", "--force"])
            .env_remove("AZURE_STORAGE_ACCOUNT")
            .env_remove("AZURE_STORAGE_KEY")
            .env_remove("AZURE_STORAGE_SAS_TOKEN");
        match how {
            "flag" => c.args(["--to", &format!("azure:{url}"), "--sas", &sas]),
            "url" => c.args(["--to", &format!("azure:{url}?{sas}")]),
            _ => c
                .args(["--to", &format!("azure:{url}")])
                .env("AZURE_STORAGE_SAS_TOKEN", &sas),
        };
        c.output().unwrap()
    };
    // Successful publishes, the SAS given three ways.
    for how in ["flag", "url", "env"] {
        let blob = format!("sas-{how}.vhd");
        let o = publish(&blob, how);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "publish with SAS ({how}) failed: {err}");
        leaks(&format!("stdout ({how})"), &out);
        leaks(&format!("stderr ({how})"), &err);
        assert_eq!(az.download(&blob), std::fs::read(&vhd).unwrap());
    }
    // A refused request (403: the signature is for another account) still does not echo it.
    let bad = sas.replace("sig=", "sig=AAAA");
    let o = Command::new(onramp_bin())
        .args([
            "publish",
            s(&vhd),
            "--to",
            &format!("azure:{}", az.url(az.port, "denied.vhd")),
            "--sas",
            &bad,
            "--retries",
            "1",
        ])
        .env_remove("AZURE_STORAGE_ACCOUNT")
        .env_remove("AZURE_STORAGE_KEY")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("AAAA") && !err.contains(&sig), "{err}");
    // A build that publishes to Azure: nothing it prints or writes holds the SAS.
    std::fs::copy(&vhd, d.path().join("src.vhd")).unwrap();
    let recipe = d.path().join("p.yaml");
    std::fs::write(
        &recipe,
        format!(
            "name: p\nsource:\n  path: src.vhd\ntarget:\n  format: azure-vhd\noutput:\n  dir: out\n\
             publish:\n  - to: azure:{}\n    sas: ${{ONRAMP_TEST_SAS}}\n",
            az.url(az.port, "built.vhd")
        ),
    )
    .unwrap();
    let o = Command::new(onramp_bin())
        .args(["build", s(&recipe), "--json"])
        .env("ONRAMP_TEST_SAS", &sas)
        .env_remove("AZURE_STORAGE_ACCOUNT")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "build failed: {err}");
    leaks("build stdout", &out);
    leaks("build stderr", &err);
    assert_eq!(
        az.download("built.vhd"),
        std::fs::read(d.path().join("out/p.vhd")).unwrap()
    );
    for f in files_under(d.path()) {
        if let Ok(t) = std::fs::read(&f) {
            let t = String::from_utf8_lossy(&t);
            assert!(!t.contains(&sig), "SAS written into {}", f.display());
        }
    }
}
