//! Authorization by the caller's SPIFFE id, proven by its certificate on a mesh
//! listener (`mtls:`): `principal`, `principal_prefix`, `trust_domain` and
//! `authenticated` rules, against callers of the same trust domain, of a look-alike
//! trust domain (`example.org.evil`) and plain-text callers without an identity.
//!
//! The callers are real mesh clients: `weft_mtls::mesh_client_config` with a
//! certificate from a `weft_mtls::DevCa`, loaded from files by `FileSource::load`,
//! speaking HTTP/1.1 (hyper's client connection) over the TLS stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use weft_mtls::{CertPaths, CertStore, DevCa, Expect, FileSource, Issued, SpiffeId, TrustDomain};
use weft_tests::{Client, Reply, TestProxy, upstream, within};

use super::{Scratch, assert_denied, decisions, log_records};
use crate::LIMIT;

const TTL: Duration = Duration::from_secs(3600);

/// The paths the policy knows, in the order of the expectation rows below.
const PATHS: [&str; 5] = ["/cart/add", "/catalog/x", "/health", "/status", "/ping"];

/// A trust domain and its development CA.
struct Domain {
    td: TrustDomain,
    ca: DevCa,
}

impl Domain {
    fn new(td: &str) -> anyhow::Result<Domain> {
        let td: TrustDomain = td.parse()?;
        let ca = DevCa::new(&td)?;
        Ok(Domain { td, ca })
    }

    /// A certificate for `spiffe://TD/ns/NS/sa/SA`, written (with `bundle` as its
    /// trust bundle) into `dir`.
    fn issue(&self, ns: &str, sa: &str, bundle: &str, dir: &std::path::Path) -> anyhow::Result<()> {
        let id = SpiffeId::workload(&self.td, ns, sa)?;
        let issued = self.ca.issue(&id, TTL)?;
        Issued {
            ca_pem: bundle.to_owned(),
            ..issued
        }
        .write(dir)?;
        Ok(())
    }
}

/// A mesh client presenting the certificate in `dir`, expecting a server of `td`.
fn mesh_client(dir: &std::path::Path, td: &TrustDomain) -> anyhow::Result<Arc<ClientConfig>> {
    let store = CertStore::new("e2e-client", &weft_telemetry::Registry::new());
    anyhow::ensure!(
        store.publish(FileSource::load(&CertPaths::in_dir(dir), "e2e-client")),
        "the client certificate in {} does not load",
        dir.display()
    );
    Ok(weft_mtls::mesh_client_config(
        &store,
        Expect::TrustDomain(td.clone()),
        vec![b"http/1.1".to_vec()],
    ))
}

/// `GET path` for each of `paths` on one mutual-TLS connection to `addr`.
async fn mtls_get_all(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    paths: &[&str],
) -> anyhow::Result<Vec<Reply>> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("cart.mesh.internal")?, tcp)
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
    let driver = tokio::spawn(conn);
    let mut out = Vec::new();
    for path in paths {
        sender.ready().await?;
        let req = http::Request::get(*path)
            .header(http::header::HOST, "cart.mesh.internal")
            .body(Empty::new())?;
        out.push(Reply::collect(sender.send_request(req).await?).await?);
    }
    drop(sender);
    driver.abort();
    Ok(out)
}

/// Who gets what: `principal` for one caller, `principal_prefix` for a namespace,
/// `trust_domain` for the caller's trust domain (not a look-alike whose name merely
/// starts with it), `authenticated` for any mesh caller, a rule without `from` for
/// anyone; a plain-text caller matches only the last, whatever headers it sends.
///
/// Checked to fail: with the handler passing no peer id to the gate (`None` for
/// `ctx.peer_id` in `http/handler.rs`), the gateway is refused `/cart/add`; with
/// `PrincipalMatch::TrustDomain` not requiring the `/` after the trust domain, the
/// `example.org.evil` caller gets `/health`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_on_the_callers_identity() -> anyhow::Result<()> {
    let scratch = Scratch::new("identity")?;
    let home = Domain::new("example.org")?;
    let evil = Domain::new("example.org.evil")?;
    // Everyone trusts both CAs, so that the look-alike domain's caller gets through
    // the handshake and it is the policy that tells it apart.
    let bundle = format!("{}{}", home.ca.cert_pem(), evil.ca.cert_pem());
    let dir = |name: &str| scratch.path().join(name);
    home.issue("shop", "cart", &bundle, &dir("cart"))?;
    home.issue("shop", "gateway", &bundle, &dir("gateway"))?;
    home.issue("shop", "intruder", &bundle, &dir("intruder"))?;
    home.issue("ops", "admin", &bundle, &dir("admin"))?;
    evil.issue("shop", "gateway", &bundle, &dir("evil"))?;

    let backend = upstream::http1("backend").await?;
    let log = scratch.file("access.json");
    let policy = r#"
      default: deny
      rules:
        - name: gateway-calls-cart
          from: [{ principal: spiffe://example.org/ns/shop/sa/gateway }]
          to: { path_prefixes: [/cart/] }
        - name: shop-reads-catalog
          from: [{ principal_prefix: spiffe://example.org/ns/shop/ }]
          to: { path_prefixes: [/catalog/] }
        - name: mesh-health
          from: [{ trust_domain: example.org }]
          to: { paths: [/health] }
        - name: any-peer-status
          from: [{ authenticated: true }]
          to: { paths: [/status] }
        - name: public-ping
          to: { paths: [/ping] }"#;
    let cart = dir("cart");
    let proxy = TestProxy::start(&format!(
        r#"
identity: {{ cert: "{cert}", key: "{key}", ca: "{ca}" }}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    mtls: {{ trust_domains: [example.org, example.org.evil] }}
    access_log: {{ path: "{log}" }}
    authz:{policy}
    routes:
      - {{ match: {{ prefix: / }}, to: backend }}
  - name: plain
    address: 127.0.0.1:0
    authz:{policy}
    routes:
      - {{ match: {{ prefix: / }}, to: backend }}
clusters:
  backend: {{ endpoints: [{backend}] }}
"#,
        cert = cart.join("cert.pem").display(),
        key = cart.join("key.pem").display(),
        ca = cart.join("ca.pem").display(),
        backend = backend.addr(),
    ))
    .await?;
    let inbound = proxy.addr("inbound");
    within(LIMIT, "identity rules", async {
        // Per caller, per path of PATHS: allowed?
        let rows: [(&str, [bool; 5]); 4] = [
            ("gateway", [true, true, true, true, true]),
            ("intruder", [false, true, true, true, true]),
            ("admin", [false, false, true, true, true]),
            ("evil", [false, false, false, true, true]),
        ];
        for (name, allowed) in &rows {
            let client = mesh_client(&dir(name), &home.td)?;
            let replies = mtls_get_all(client, inbound, &PATHS).await?;
            for ((path, reply), allowed) in PATHS.iter().zip(&replies).zip(allowed) {
                let what = format!("{name} GET {path}");
                if *allowed {
                    assert_eq!(reply.code(), 200, "{what}: {:?}", reply.text());
                    assert_eq!(reply.seen_path(), Some(*path), "{what}");
                } else {
                    assert_denied(reply, &what);
                }
            }
        }
        // No identity: only the rule without `from`. A header claiming an identity
        // changes nothing (the proxy's own x-forwarded-client-cert is made from the
        // handshake, and the policy never reads headers for identities).
        let plain = Client::http1();
        let spoof = [(
            "x-forwarded-client-cert",
            "By=spiffe://example.org/ns/shop/sa/cart;URI=spiffe://example.org/ns/shop/sa/gateway",
        )];
        for path in PATHS {
            let reply = plain.get_with(&proxy.url("plain", path), &spoof).await?;
            if path == "/ping" {
                assert_eq!(reply.code(), 200, "plain GET {path}");
            } else {
                assert_denied(&reply, &format!("plain GET {path}"));
            }
        }
        for (rule, want) in [
            ("gateway-calls-cart", 1.0),
            ("shop-reads-catalog", 2.0),
            ("mesh-health", 3.0),
            ("any-peer-status", 4.0),
            ("public-ping", 4.0),
        ] {
            assert_eq!(
                decisions(&proxy, "inbound", "allow", rule).await?,
                want,
                "{rule}"
            );
        }
        assert_eq!(decisions(&proxy, "inbound", "deny", "default").await?, 6.0);
        assert_eq!(decisions(&proxy, "plain", "deny", "default").await?, 4.0);

        // The access log says who was refused.
        let refused = log_records(&proxy, &log, 1, |v| {
            v["path"] == "/cart/add"
                && v["peer_identity"] == "spiffe://example.org/ns/shop/sa/intruder"
        })
        .await?;
        assert_eq!(refused[0]["authz_decision"], "deny", "{}", refused[0]);
        assert!(refused[0]["authz_rule"].is_null(), "{}", refused[0]);
        anyhow::Ok(())
    })
    .await?
}
