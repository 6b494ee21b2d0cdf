//! Identity and security: mesh mutual TLS between two proxies, refused peers,
//! certificate rotation under load, bad certificate files, and edge TLS.
//!
//! The setting is the one of the mesh: proxy A (a gateway or a sidecar's outbound side)
//! takes plain HTTP or TCP from a client and dials proxy B's inbound listener with
//! mutual TLS (cluster `mtls: { identity: <B's id> }`); B (listener `mtls`) checks A's
//! certificate, tells the app who called (`x-forwarded-client-cert`) and forwards to an
//! in-process upstream. Every certificate comes from a [`weft_tests::ca::TestCa`] and
//! sits in files the proxies watch; every handshake is real TLS on loopback. What the
//! proxies made of a handshake is read from `weft_tls_handshakes_total`, by side,
//! listener or cluster and outcome, on the side that detects the problem.
//!
//! - [`mesh`]: HTTP/1.1, HTTP/2, gRPC and TCP through A to B; the caller's identity as
//!   the app sees it, forged identity headers dropped; connection pooling.
//! - [`refusals`]: every reason a handshake is refused, one certificate each.
//! - [`rotation`]: 30-second certificates rewritten every 15 seconds under load.
//! - [`bad_files`]: a reload naming missing or mismatched files, a bad rotated key.
//! - [`edge`]: TLS for external clients: SNI, ALPN, TLS 1.2, refused old protocols and
//!   suites (checked with the `openssl` command line).

mod bad_files;
mod edge;
mod mesh;
mod refusals;
mod rotation;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use weft_tests::ca::{CertDir, TestCa};
use weft_tests::upstream::Recorded;
use weft_tests::{Metrics, TestProxy, Upstream, upstream};

/// The mesh's trust domain.
const TD: &str = "mesh.test";

/// Another trust domain, with its own CA.
const OTHER_TD: &str = "other.test";

/// How long ordinary test certificates are valid.
const TTL: Duration = Duration::from_secs(3600);

/// The header a mesh listener tells the app its caller's identity in.
const XFCC: &str = "x-forwarded-client-cert";

/// A forged identity header a client sends, hoping the app believes it.
const FORGED_XFCC: &str =
    "By=spiffe://mesh.test/ns/default/sa/b;Hash=00;URI=spiffe://mesh.test/ns/kube-system/sa/admin";

/// The handshake counter metric.
const HANDSHAKES: &str = "weft_tls_handshakes_total";

/// Certificate loads, by `source` (the certificate file) and `outcome`.
const CERT_LOADS: &str = "weft_tls_cert_loads_total";

/// Upstream connections opened, by cluster.
const UPSTREAM_CONNECTIONS: &str = "weft_upstream_connections_total";

/// B's YAML: its `identity`, the HTTP listener `inbound` with `mtls: inbound_mtls`
/// (everything to cluster `app` at `app`), and `extra` listener YAML (indented as list
/// items under `listeners:`).
fn b_config(identity: &CertDir, inbound_mtls: &str, app: SocketAddr, extra: &str) -> String {
    format!(
        r#"
identity: {identity}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    mtls: {inbound_mtls}
    routes:
      - name: app
        match: {{ prefix: / }}
        to: app
{extra}
clusters:
  app: {{ endpoints: ["{app}"] }}
"#,
        identity = identity.identity_yaml(),
    )
}

/// A's YAML: its `identity`, the plain HTTP listener `edge` (everything to cluster `b`
/// at `b`, with `mtls: <mtls>`, e.g. `{ identity: spiffe://... }`), and `extra` YAML
/// appended (more clusters, indented under `clusters:`).
fn a_config(identity: &CertDir, b: SocketAddr, mtls: &str, extra: &str) -> String {
    format!(
        r#"
identity: {identity}
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: to-b
        match: {{ prefix: / }}
        to: b
clusters:
  b:
    endpoints: ["{b}"]
    mtls: {mtls}
{extra}
"#,
        identity = identity.identity_yaml(),
    )
}

/// The usual pair: A -> B -> `app`, with certificates from one CA.
struct Mesh {
    ca: TestCa,
    a_cert: CertDir,
    b_cert: CertDir,
    app: Upstream,
    a: TestProxy,
    b: TestProxy,
}

impl Mesh {
    /// Starts the app, B (`mtls: true`), then A (expecting B's id).
    async fn start() -> anyhow::Result<Mesh> {
        let ca = TestCa::new(TD)?;
        let a_cert = ca.issue("a", TTL)?;
        let b_cert = ca.issue("b", TTL)?;
        let app = upstream::http1("app").await?;
        let b = TestProxy::start(&b_config(&b_cert, "true", app.addr(), "")).await?;
        let a = start_a(&a_cert, &b, &b_cert).await?;
        Ok(Mesh {
            ca,
            a_cert,
            b_cert,
            app,
            a,
            b,
        })
    }

    /// `http://ADDR{path}` of A's plain listener.
    fn url(&self, path: &str) -> String {
        self.a.url("edge", path)
    }
}

/// A cluster's `mtls` value expecting exactly `peer`'s id.
fn expect_id(peer: &CertDir) -> String {
    format!("{{ identity: {:?} }}", peer.id_str())
}

/// Sidecar A with `a_cert`, its cluster aimed at B's inbound listener and expecting
/// exactly `b_cert`'s id.
async fn start_a(a_cert: &CertDir, b: &TestProxy, b_cert: &CertDir) -> anyhow::Result<TestProxy> {
    TestProxy::start(&a_config(a_cert, b.addr("inbound"), &expect_id(b_cert), "")).await
}

/// `weft_tls_handshakes_total` of a listener (`side="server"`) with `outcome`.
fn server_handshakes(m: &Metrics, listener: &str, outcome: &str) -> f64 {
    m.sum(
        HANDSHAKES,
        &[
            ("side", "server"),
            ("listener", listener),
            ("outcome", outcome),
        ],
    )
}

/// `weft_tls_handshakes_total` of a cluster (`side="client"`) with `outcome`.
fn client_handshakes(m: &Metrics, cluster: &str, outcome: &str) -> f64 {
    m.sum(
        HANDSHAKES,
        &[
            ("side", "client"),
            ("cluster", cluster),
            ("outcome", outcome),
        ],
    )
}

/// Every non-zero handshake series, for failure messages.
fn handshake_lines(m: &Metrics) -> Vec<String> {
    m.text
        .lines()
        .filter(|l| l.starts_with(HANDSHAKES) && !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

/// The one `x-forwarded-client-cert` value `rec` carried, split into its fields
/// (`By`, `Hash`, `URI`).
///
/// # Panics
/// When there is not exactly one such header, or a field is not `key=value`.
fn xfcc_fields(rec: &Recorded) -> BTreeMap<String, String> {
    let values = rec.header_all(XFCC);
    assert_eq!(
        values.len(),
        1,
        "{} {}: want exactly one {XFCC}, got {values:?}",
        rec.method,
        rec.path_and_query
    );
    values[0]
        .split(';')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{XFCC} element {kv:?} in {:?}", values[0]));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Checks that `rec`'s identity header says: called by `caller` (its certificate's
/// hash and id), received by `by`.
fn assert_xfcc(rec: &Recorded, by: &CertDir, caller: &CertDir, what: &str) {
    let fields = xfcc_fields(rec);
    let der = caller.cert_der().expect("caller certificate");
    let want: BTreeMap<String, String> = [
        ("By", by.id_str().to_owned()),
        ("Hash", weft_tests::ca::sha256_hex(&der)),
        ("URI", caller.id_str().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(fields, want, "{what}: {XFCC} as the app got it");
}
