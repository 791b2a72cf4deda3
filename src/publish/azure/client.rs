//! A small synchronous Azure Blob REST client on `ureq`: the handful of page
//! blob operations onramp needs, Shared Key or SAS authentication, and retries.
//!
//! Shared Key: "Authorize with Shared Key" in the Azure Storage REST docs —
//! HMAC-SHA256 over VERB, the standard headers, the canonicalized `x-ms-*`
//! headers and the canonicalized resource `/<account><url path>` plus sorted
//! query parameters. With a path-style URL (Azurite, `http://host/account/...`)
//! the account therefore appears twice, which is what the emulator expects.

use crate::error::{Error, ErrorKind, Result};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The REST API version onramp speaks.
pub const API_VERSION: &str = "2021-12-02";

/// How requests are authorised.
#[derive(Clone)]
pub enum Credential {
    /// A SAS token (query string without the leading `?`).
    Sas(String),
    /// Account name and decoded account key.
    SharedKey {
        /// Account name.
        account: String,
        /// Decoded key bytes.
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Sas(_) => f.write_str("Sas(<redacted>)"),
            Credential::SharedKey { account, .. } => {
                write!(f, "SharedKey({account}, <redacted>)")
            }
        }
    }
}

/// A parsed blob URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The path as given (percent-encoded), starting with `/`.
    pub path: String,
    /// Storage account name.
    pub account: String,
    /// A SAS token that came in the URL's query, if any.
    pub sas_in_url: Option<String>,
}

impl BlobUrl {
    /// Parse `https://ACCOUNT.blob.core.windows.net/CONTAINER/NAME` or a
    /// path-style `http://HOST:PORT/ACCOUNT/CONTAINER/NAME` (Azurite, custom endpoints).
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "azure target {}: {why}",
                super::super::redact_url(url)
            ))
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected an http(s):// URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_string()).filter(|q| !q.is_empty())),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("missing host (or credentials in the host part)"));
        }
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        let host = authority.split(':').next().unwrap_or("");
        let first_label = host.split('.').next().unwrap_or("");
        let product_style = host.contains(".blob.") && !first_label.is_empty();
        let (account, min_segs) = if product_style {
            (first_label.to_string(), 2)
        } else {
            (segs.first().copied().unwrap_or("").to_string(), 3)
        };
        if segs.len() < min_segs || segs.iter().any(|s| s.is_empty()) || account.is_empty() {
            return Err(bad(if product_style {
                "expected /CONTAINER/BLOB after the host"
            } else {
                "expected /ACCOUNT/CONTAINER/BLOB after the host"
            }));
        }
        Ok(BlobUrl {
            scheme,
            authority: authority.to_string(),
            path: path.to_string(),
            account,
            sas_in_url: query,
        })
    }

    /// The URL without any query (safe to print).
    pub fn display(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path)
    }
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request (first try included).
    pub attempts: u32,
    /// First backoff.
    pub base: Duration,
    /// Longest backoff (and longest Retry-After honoured).
    pub cap: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
            timeout: Duration::from_secs(120),
        }
    }
}

/// A response, body read.
#[derive(Debug)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The storage error code (x-ms-error-code), if any.
    pub fn error_code(&self) -> String {
        self.header("x-ms-error-code").unwrap_or("").to_string()
    }
}

/// The client: one blob, one credential, a connection pool.
pub struct Client {
    agent: ureq::Agent,
    /// The blob.
    pub url: BlobUrl,
    cred: Credential,
    policy: RetryPolicy,
    retries: std::sync::atomic::AtomicU64,
    seed: std::sync::atomic::AtomicU64,
}

/// A request: method, extra query (`comp=page`), headers, body.
pub struct Req<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Extra query parameters (name, value), unencoded simple values.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: &'a [u8],
    /// Largest response body accepted.
    pub max_body: u64,
}

impl<'a> Req<'a> {
    /// A request with no body.
    pub fn new(method: &'a str, query: &'a [(&'a str, &'a str)]) -> Self {
        Req {
            method,
            query,
            headers: Vec::new(),
            body: &[],
            max_body: 1 << 20,
        }
    }

    /// Add a header.
    pub fn h(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }
}

/// Is this status worth retrying?
pub fn retryable_status(s: u16) -> bool {
    matches!(s, 408 | 500 | 502 | 503 | 504)
}

impl Client {
    /// A client for `url` with `cred`.
    pub fn new(url: BlobUrl, cred: Credential, policy: RetryPolicy) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(policy.timeout))
            .timeout_connect(Some(Duration::from_secs(15).min(policy.timeout)))
            .max_idle_connections_per_host(64)
            .user_agent(format!("onramp/{}", env!("CARGO_PKG_VERSION")))
            .build();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Client {
            agent: config.into(),
            url,
            cred,
            policy,
            retries: 0.into(),
            seed: seed.into(),
        }
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn jitter(&self, max: Duration) -> Duration {
        use std::sync::atomic::Ordering;
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(x % ms)
    }

    /// Send with retries on 408/500/502/503/504, timeouts and connection failures.
    /// Other statuses come back to the caller as a [`Resp`].
    pub fn send(&self, req: &Req<'_>) -> Result<Resp> {
        let mut attempt: u32 = 0;
        let started = Instant::now();
        loop {
            attempt += 1;
            let outcome = self.send_once(req);
            let (why, retry_after) = match outcome {
                Ok(r) if retryable_status(r.status) => {
                    let ra = r
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (format!("HTTP {} {}", r.status, r.error_code()), ra)
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    if !transient(&e) {
                        return Err(Error::new(
                            ErrorKind::Publish,
                            format!(
                                "{} {}: {}",
                                req.method,
                                self.url.display(),
                                self.scrub(&e.to_string())
                            ),
                        ));
                    }
                    (self.scrub(&e.to_string()), None)
                }
            };
            if attempt >= self.policy.attempts {
                return Err(Error::new(
                    ErrorKind::Publish,
                    format!(
                        "{} {}: gave up after {attempt} attempts in {:.1}s, last: {why}",
                        req.method,
                        self.url.display(),
                        started.elapsed().as_secs_f64()
                    ),
                ));
            }
            self.retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Capped exponential backoff with full jitter; Retry-After wins when longer.
            let exp = self
                .policy
                .base
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(self.policy.cap);
            let mut wait = exp / 2 + self.jitter(exp / 2 + Duration::from_millis(1));
            if let Some(ra) = retry_after {
                wait = wait.max(ra.min(self.policy.cap));
            }
            std::thread::sleep(wait);
        }
    }

    /// Remove anything secret from a message.
    pub fn scrub(&self, msg: &str) -> String {
        let mut m = msg.to_string();
        if let Credential::Sas(s) = &self.cred {
            if !s.is_empty() {
                m = m.replace(s.as_str(), "<redacted>");
            }
        }
        super::super::redact_text(&m)
    }

    fn send_once(&self, req: &Req<'_>) -> std::result::Result<Resp, ureq::Error> {
        let mut query: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Credential::Sas(s) = &self.cred {
            query.push(s.clone());
        }
        let mut url = self.url.display();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let mut headers = req.headers.clone();
        headers.push(("x-ms-date".into(), http_date(SystemTime::now())));
        headers.push(("x-ms-version".into(), API_VERSION.into()));
        if let Credential::SharedKey { account, key } = &self.cred {
            let sts = string_to_sign(
                req.method,
                req.body.len(),
                &headers,
                account,
                &self.url.path,
                req.query,
            );
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
                .map_err(|_| ureq::Error::BadUri("bad account key".into()))?;
            mac.update(sts.as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            headers.push(("authorization".into(), format!("SharedKey {account}:{sig}")));
        }
        let mut b = ureq::http::Request::builder().method(req.method).uri(&url);
        for (k, v) in &headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let needs_len = matches!(req.method, "PUT" | "POST");
        let mut resp = if needs_len {
            let r = b.body(req.body).map_err(ureq::Error::Http)?;
            self.agent.run(r)?
        } else {
            let r = b.body(()).map_err(ureq::Error::Http)?;
            self.agent.run(r)?
        };
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let body = if req.method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(req.max_body)
                .read_to_vec()?
        };
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_)
    )
}

/// The Shared Key string to sign (Blob service, version 2015-02-21 and later).
pub fn string_to_sign(
    method: &str,
    body_len: usize,
    headers: &[(String, String)],
    account: &str,
    path: &str,
    query: &[(&str, &str)],
) -> String {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let len = if body_len == 0 {
        String::new()
    } else {
        body_len.to_string()
    };
    let mut s = String::new();
    for part in [
        method,
        get("content-encoding"),
        get("content-language"),
        &len,
        get("content-md5"),
        get("content-type"),
        "", // Date: x-ms-date is used instead.
        get("if-modified-since"),
        get("if-match"),
        get("if-none-match"),
        get("if-unmodified-since"),
        get("range"),
    ] {
        s.push_str(part);
        s.push('\n');
    }
    let mut xms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    xms.sort();
    for (k, v) in xms {
        s.push_str(&k);
        s.push(':');
        s.push_str(&v);
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(path);
    let mut q: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    q.sort();
    for (k, v) in q {
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(v);
    }
    s
}

/// RFC 1123 date, as `x-ms-date` wants it.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[(days % 7) as usize],
        d,
        MON[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parse a Get Page Ranges response: `<PageRange><Start>s</Start><End>e</End></PageRange>`
/// (End inclusive) into `(offset, len)` ranges; `<ClearRange>` entries are skipped.
pub fn parse_page_ranges(xml: &str) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<PageRange>") {
        rest = &rest[i + "<PageRange>".len()..];
        let end = rest.find("</PageRange>").ok_or_else(|| {
            Error::new(
                ErrorKind::Publish,
                "Get Page Ranges: unterminated <PageRange>",
            )
        })?;
        let item = &rest[..end];
        let field = |name: &str| -> Result<u64> {
            let open = format!("<{name}>");
            let close = format!("</{name}>");
            let s = item.find(&open).map(|p| p + open.len());
            let e = item.find(&close);
            match (s, e) {
                (Some(s), Some(e)) if s <= e => item[s..e].trim().parse().map_err(|_| {
                    Error::new(ErrorKind::Publish, format!("Get Page Ranges: bad <{name}>"))
                }),
                _ => Err(Error::new(
                    ErrorKind::Publish,
                    format!("Get Page Ranges: missing <{name}>"),
                )),
            }
        };
        let (s, e) = (field("Start")?, field("End")?);
        if e < s {
            return Err(Error::new(
                ErrorKind::Publish,
                "Get Page Ranges: End before Start",
            ));
        }
        out.push((s, e - s + 1));
        rest = &rest[end..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = BlobUrl::parse("https://acct.blob.core.windows.net/c/d.vhd?sv=1&sig=x").unwrap();
        assert_eq!(u.account, "acct");
        assert_eq!(u.path, "/c/d.vhd");
        assert_eq!(u.sas_in_url.as_deref(), Some("sv=1&sig=x"));
        assert_eq!(u.display(), "https://acct.blob.core.windows.net/c/d.vhd");
        let a = BlobUrl::parse("http://127.0.0.1:10000/devstoreaccount1/c/d.vhd").unwrap();
        assert_eq!(a.account, "devstoreaccount1");
        assert!(BlobUrl::parse("http://127.0.0.1:10000/devstoreaccount1/c").is_err());
        assert!(BlobUrl::parse("ftp://x/a/b/c").is_err());
        let e = BlobUrl::parse("https://acct.blob.core.windows.net/c?sig=SECRET").unwrap_err();
        assert!(!e.to_string().contains("SECRET"));
    }

    #[test]
    fn dates_and_ranges() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(http_date(t), "Tue, 14 Nov 2023 22:13:20 GMT");
        let x = "<?xml?><PageList><PageRange><Start>0</Start><End>511</End></PageRange>\
                 <ClearRange><Start>512</Start><End>1023</End></ClearRange>\
                 <PageRange><Start>1024</Start><End>4095</End></PageRange></PageList>";
        assert_eq!(parse_page_ranges(x).unwrap(), vec![(0, 512), (1024, 3072)]);
    }

    #[test]
    fn signing_string() {
        let h = vec![
            ("x-ms-version".to_string(), "v".to_string()),
            ("x-ms-date".to_string(), "d".to_string()),
            ("content-md5".to_string(), "m".to_string()),
        ];
        let s = string_to_sign("PUT", 512, &h, "a", "/a/c/b", &[("comp", "page")]);
        assert_eq!(
            s,
            "PUT\n\n\n512\nm\n\n\n\n\n\n\n\nx-ms-date:d\nx-ms-version:v\n/a/a/c/b\ncomp:page"
        );
    }
}
