//! Request security end to end: authorization policies (`authz:`), path normalisation
//! (`path_normalization:`), JWT authentication (`jwt_providers:` and route `jwt:`) and
//! CORS (route `cors:`), through the real proxy in front of recording upstreams.
//!
//! - [`paths`]: a deny rule on `/admin/` against every spelling of that path a client
//!   can send (dot segments, repeated and escaped slashes, backslashes, escaped
//!   letters), over HTTP/1.1 as raw bytes and over HTTP/2; what the upstream receives;
//!   bad escapes; the escaped-slash options;
//! - [`policy`]: default deny with allow rules on methods, templates, headers and the
//!   port, deny winning over allow; dry run (metrics and access log) against enforce;
//!   gRPC refusals; method spellings;
//! - [`identity`]: rules on the caller's SPIFFE id over mesh mutual TLS;
//! - [`jwt`]: valid, expired, not yet valid, wrong issuer or audience, bad signature,
//!   missing, `alg: none`, HMAC confusion, key rotation by reload, `allow_missing`,
//!   `any_of`, claim headers, claims in authorization rules;
//! - [`cors`]: preflights answered or forwarded, actual requests decorated, preflights
//!   that skip the JWT requirement.
//!
//! Every test says, in its documentation, how it was checked to fail when the
//! mechanism it covers is broken (each named change made alone in the product code,
//! the test run, the change undone). Tests of product bugs not fixed yet are
//! `#[ignore = "BUG: ..."]` and fail when run with `--ignored`.

mod cors;
mod identity;
mod jwt;
mod paths;
mod policy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use weft_tests::{Reply, TestProxy};

/// How long a test waits for an access-log record on its way to the file.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// The body of every authorization refusal: Envoy's, naming no rule.
const RBAC_DENIED: &str = "RBAC: access denied\n";

/// A temporary directory of the test's own (JWKS files, certificates, access logs),
/// removed on drop. The YAML needs these paths before the proxy (and its own directory)
/// exists.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> anyhow::Result<Scratch> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-authz-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    /// A path in the directory (as text, for YAML).
    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The access-log records in `path` that `pick` accepts, once there are at least
/// `want`: flushes the proxy's log writer and re-reads until then (bounded).
async fn log_records(
    proxy: &TestProxy,
    path: &str,
    want: usize,
    pick: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    loop {
        let p = proxy.proxy().clone();
        tokio::task::spawn_blocking(move || p.telemetry().flush(LOG_WAIT)).await?;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let mut found = Vec::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("not a JSON line ({e}): {line}"))?;
            if pick(&v) {
                found.push(v);
            }
        }
        if found.len() >= want {
            return Ok(found);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{path}: {} of {want} records within {LOG_WAIT:?}:\n{text}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 403 made by the authorization stage: Envoy's body, no rule named anywhere in the
/// response, not from an upstream.
fn assert_denied(reply: &Reply, what: &str) {
    assert_eq!(
        (reply.code(), reply.text().as_str()),
        (403, RBAC_DENIED),
        "{what}: want the proxy's 403 (headers {:?})",
        reply.headers
    );
    assert_eq!(reply.header("x-weft-error"), Some("forbidden"), "{what}");
    assert!(
        reply.upstream().is_none(),
        "{what}: answered by an upstream"
    );
}

/// A 200 from upstream `name`, which saw `path` (path and query).
fn assert_passed(reply: &Reply, name: &str, path: &str, what: &str) {
    assert_eq!(
        reply.code(),
        200,
        "{what}: status (body {:?}, headers {:?})",
        reply.text(),
        reply.headers
    );
    assert_eq!(reply.upstream(), Some(name), "{what}: answered by");
    assert_eq!(reply.seen_path(), Some(path), "{what}: the upstream saw");
}

/// `weft_authz_decisions_total` of listener `listener` for `decision` and `rule`
/// (`default` when no rule decided).
async fn decisions(
    proxy: &TestProxy,
    listener: &str,
    decision: &str,
    rule: &str,
) -> anyhow::Result<f64> {
    Ok(proxy.metrics().await?.sum(
        "weft_authz_decisions_total",
        &[
            ("listener", listener),
            ("decision", decision),
            ("rule", rule),
        ],
    ))
}

/// `GET target` over HTTP/1.1 written byte for byte on a fresh connection (so nothing
/// between the test and the proxy can tidy the path up), with `Connection: close`; the
/// answer parsed into a [`Reply`].
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> anyhow::Result<Reply> {
    raw_request(addr, "GET", target).await
}

/// As [`raw_get`], with any method token as written (`delete`, `Delete`).
async fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
) -> anyhow::Result<Reply> {
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
    let raw =
        weft_tests::client::raw_exchange(addr, request.as_bytes(), Duration::from_secs(5), 1 << 20)
            .await?;
    parse_response(&raw.bytes)
        .map_err(|e| anyhow::anyhow!("{method} {target}: {e}: {:?}", raw.text()))
}

/// An HTTP/1.1 response (content-length, chunked or until close) as a [`Reply`].
fn parse_response(bytes: &[u8]) -> anyhow::Result<Reply> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no complete response head"))?;
    let head = std::str::from_utf8(&bytes[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("bad header line {line:?}"))?;
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes())?,
            http::HeaderValue::from_str(value.trim())?,
        );
    }
    let rest = &bytes[end + 4..];
    let chunked = headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        let len = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .unwrap_or(rest.len());
        rest.get(..len)
            .ok_or_else(|| anyhow::anyhow!("body shorter than its content-length"))?
            .to_vec()
    };
    Ok(Reply {
        status: http::StatusCode::from_u16(status)?,
        version: http::Version::HTTP_11,
        headers,
        body: body.into(),
    })
}

/// The data of a chunked body.
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&rest[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(
            rest.get(..size)
                .ok_or_else(|| anyhow::anyhow!("truncated chunk"))?,
        );
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}
