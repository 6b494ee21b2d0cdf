//! Weft's test harness: real sockets, real HTTP clients and servers, the real proxy.
//!
//! - [`upstream`]: in-process HTTP/1.1 and HTTP/2 servers on `127.0.0.1:0` that record
//!   what they receive and can inject faults, plus TCP and WebSocket echo servers and a
//!   refused port;
//! - [`proxy`]: [`proxy::TestProxy`], a proxy started from YAML text written to its own
//!   temporary file (so reload tests can rewrite it), with its admin server;
//! - [`client`]: pooled HTTP/1.1 and HTTP/2 (prior knowledge) clients and raw-socket
//!   helpers;
//! - [`ca`]: [`ca::TestCa`], development CAs writing workload, edge and deliberately
//!   bad certificates to files, and [`ca::TlsClient`], a TLS client with a chosen
//!   client certificate, versions and ALPN for talking to TLS listeners directly;
//! - [`pattern`]: large deterministic bodies generated chunk by chunk and checked by
//!   position, so that streaming tests never hold a whole body;
//! - [`jwt`]: signing keys generated in the test, their JWKS, signed and forged tokens.
//!
//! The end-to-end tests that use it are one test binary, `tests/e2e/`; see `README.md`.

pub mod ca;
pub mod client;
pub mod jwt;
pub mod otlp;
pub mod pattern;
pub mod proxy;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

pub use self::client::{Client, Reply};
pub use self::proxy::{Metrics, TestProxy};
pub use self::upstream::{Behavior, Upstream};

/// Runs `fut`, failing with `what` in the message if it takes longer than `limit`.
/// Every test wraps its work in this, so a hang is a failure with a name, not a stuck CI.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: did not finish within {limit:?}"))
}

/// Polls `check` every 20 ms until it holds; fails naming `what` if `limit` passes
/// first. For effects that happen at some point (a file watcher's reload, a connection
/// closing), never for timing assertions.
pub async fn eventually(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Installs the proxy's log subscriber when `RUST_LOG` is set (logs go to stderr, which
/// the test runner does not capture, so they are off unless asked for).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = weft_telemetry::logging::init(None, weft_telemetry::logging::LogFormat::Text);
    }
}
