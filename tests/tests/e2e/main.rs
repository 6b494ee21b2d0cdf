//! End-to-end tests: the real proxy in-process, in front of in-process upstreams, driven
//! by real HTTP/1.1, HTTP/2, WebSocket and TCP clients over loopback.
//!
//! One test binary with a module per area (each extra binary would link the whole proxy
//! again). Every test is bounded in time (`weft_tests::within`) and in request count,
//! and never asserts timings beyond coarse sanity bounds. See `tests/README.md`.

// As clippy.toml says for tests: a panic here is the failure report. Helpers outside
// `#[test]` functions need the same allowance.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod admin;
mod authz;
mod balancing;
mod errors;
mod forwarding;
mod http1;
mod malformed;
mod reload;
mod resilience;
mod routing;
mod security;
mod streaming;
mod telemetry;
mod tunnels;

use std::time::Duration;

/// Counts live and peak heap bytes of this process (wraps the system allocator), for the
/// bounded-memory streaming test. `peak_alloc` holds the `unsafe` the workspace forbids.
#[global_allocator]
static ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// A proxy with one listener, `edge`, whose one route sends everything to `up` (a
/// cluster named after it).
async fn edge_to(up: &weft_tests::Upstream) -> anyhow::Result<weft_tests::TestProxy> {
    weft_tests::TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        to: {name}
clusters:
  {name}: {{ endpoints: [{addr}] }}
"#,
        name = up.name(),
        addr = up.addr()
    ))
    .await
}

/// The time limit of a typical test.
const LIMIT: Duration = Duration::from_secs(30);

/// The local-error responses carry this header naming the failure.
const ERROR_HEADER: &str = "x-weft-error";

/// A local answer: `status` with `x-weft-error: code`, made by the proxy, not by an
/// upstream.
fn assert_local(reply: &weft_tests::Reply, status: u16, code: &str, what: &str) {
    assert_eq!(
        reply.code(),
        status,
        "{what}: status (body {:?}, headers {:?})",
        reply.text(),
        reply.headers
    );
    assert_eq!(
        reply.header(ERROR_HEADER),
        Some(code),
        "{what}: {ERROR_HEADER}"
    );
    assert!(
        reply.upstream().is_none(),
        "{what}: answered by the proxy, not an upstream"
    );
}

/// Both client flavours, for tests that run over HTTP/1.1 and HTTP/2 alike.
fn both_clients() -> [weft_tests::Client; 2] {
    [weft_tests::Client::http1(), weft_tests::Client::http2()]
}
