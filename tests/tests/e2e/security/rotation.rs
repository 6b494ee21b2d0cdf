//! Certificate rotation: certificates rewritten in place (as a certificate agent does)
//! are taken by new handshakes while open connections and traffic carry on.

use std::time::Duration;

use weft_tests::ca::{CertDir, TestCa, TlsClient};
use weft_tests::{Client, Metrics, TestProxy, eventually, upstream, within};

use super::{CERT_LOADS, TD, TTL, UPSTREAM_CONNECTIONS, a_config, expect_id, xfcc_fields};
use crate::LIMIT;

/// How long a file watcher may take to load a rewritten certificate.
const LOADED: Duration = Duration::from_secs(10);

/// `weft_tls_cert_loads_total` of the store fed from `dir`'s files with `outcome`.
fn loads(m: &Metrics, dir: &CertDir, outcome: &str) -> f64 {
    let source = dir.cert.display().to_string();
    m.sum(CERT_LOADS, &[("source", &source), ("outcome", outcome)])
}

/// Waits until `proxy` has loaded `dir`'s certificate `n` times in all.
async fn wait_loaded(proxy: &TestProxy, dir: &CertDir, n: f64, what: &str) -> anyhow::Result<()> {
    eventually(LOADED, what, async || {
        loads(&proxy.metrics().await.unwrap(), dir, "ok") >= n
    })
    .await
}

/// B's YAML for the rotation tests: `inbound` (mutual TLS, to `app`) and `inbound-idle`
/// (the same, but closing connections idle for 300 ms, so that each request A sends
/// there after a pause opens a new connection: a new handshake).
fn b_rotating(identity: &CertDir, app: std::net::SocketAddr) -> String {
    let listener = |name: &str, idle: &str| {
        format!(
            r#"  - name: {name}
    address: 127.0.0.1:0
    mtls: true
{idle}    routes:
      - name: app
        match: {{ prefix: / }}
        to: app
"#
        )
    };
    format!(
        "identity: {}\nlisteners:\n{}{}clusters:\n  app: {{ endpoints: [\"{app}\"] }}\n",
        identity.identity_yaml(),
        listener("inbound", ""),
        listener("inbound-idle", "    idle_timeout: 300ms\n"),
    )
}

/// A's extra cluster `b-fresh` to B's `inbound-idle` and a route `/fresh` to it, on top
/// of [`a_config`]'s `/` to `b`.
fn a_rotating(identity: &CertDir, b: &TestProxy, b_cert: &CertDir) -> String {
    let yaml = a_config(
        identity,
        b.addr("inbound"),
        &expect_id(b_cert),
        &format!(
            "  b-fresh:\n    endpoints: [\"{}\"]\n    mtls: {}\n",
            b.addr("inbound-idle"),
            expect_id(b_cert)
        ),
    );
    yaml.replace(
        "    routes:\n",
        "    routes:\n      - name: fresh\n        match: { prefix: /fresh }\n        to: b-fresh\n",
    )
}

/// A gets a new certificate (same CA, same id) by a rewrite of its files, once its
/// first one, valid for 4 seconds only, has expired. A new connection from A to B (B's
/// idle timeout closed the first) must present the new certificate: the app's
/// `x-forwarded-client-cert` hash must be the new certificate's. B, rotated too, serves
/// its new certificate to a new caller (a client without session resumption).
///
/// Checked: with resumption disabled in `weft_mtls::mesh_client_config` (locally) this
/// test passes, so the session resumption is what carries the old identity over.
#[tokio::test]
async fn a_new_mesh_connection_presents_the_rotated_certificate() -> anyhow::Result<()> {
    let ca = TestCa::new(TD)?;
    let mut a_cert = ca.issue("a", Duration::from_secs(4))?;
    let mut b_cert = ca.issue("b", TTL)?;
    let probe = ca.issue("probe", TTL)?;
    let app = upstream::http1("app").await?;
    let b = TestProxy::start(&b_rotating(&b_cert, app.addr())).await?;
    let a = TestProxy::start(&a_rotating(&a_cert, &b, &b_cert)).await?;
    let first_expires = std::time::SystemTime::now() + Duration::from_secs(4);
    within(LIMIT, "rotation for new connections", async {
        let client = Client::http1();
        let hash = |c: &CertDir| weft_tests::ca::sha256_hex(&c.cert_der().unwrap());
        let seen_hash = || xfcc_fields(&app.last().unwrap())["Hash"].clone();
        let reply = client.get(&a.url("edge", "/fresh/1")).await?;
        assert_eq!(reply.code(), 200);
        let first_a = hash(&a_cert);
        assert_eq!(seen_hash(), first_a, "A's first certificate");

        a_cert.rotate(ca.reissue(&a_cert, TTL)?)?;
        b_cert.rotate(ca.reissue(&b_cert, TTL)?)?;
        wait_loaded(&a, &a_cert, 2.0, "A loads its new certificate").await?;
        wait_loaded(&b, &b_cert, 2.0, "B loads its new certificate").await?;
        // B's idle timeout closes A's first connection; A's first certificate expires.
        eventually(LIMIT, "the first mesh connection closed", async || {
            let m = b.metrics().await.unwrap();
            m.sum(
                "weft_downstream_connections_active",
                &[("listener", "inbound-idle")],
            ) == 0.0
        })
        .await?;
        if let Ok(left) = first_expires.duration_since(std::time::SystemTime::now()) {
            tokio::time::sleep(left + Duration::from_millis(500)).await;
        }

        // A new caller of B sees B's new certificate.
        let tls = TlsClient::mesh(&[ca.cert_pem()], Some(&probe), &[b"http/1.1"])?;
        let conn = tls.connect(b.addr("inbound-idle"), None).await?;
        let leaf = conn.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(leaf, b_cert.cert_der()?, "B serves its new certificate");
        drop(conn);

        let reply = client.get(&a.url("edge", "/fresh/2")).await?;
        assert_eq!(reply.code(), 200);
        let m = a.metrics().await?;
        assert_eq!(
            m.sum(UPSTREAM_CONNECTIONS, &[("cluster", "b-fresh")]),
            2.0,
            "the second request went on a new connection"
        );
        assert_ne!(
            seen_hash(),
            first_a,
            "B accepted A's old, expired certificate on a new connection"
        );
        assert_eq!(seen_hash(), hash(&a_cert), "A's new certificate");
        anyhow::Ok(())
    })
    .await?
}

/// How long the rotation test runs, how often it rotates, and how long its
/// certificates live: each certificate expires 15 seconds after its successor is
/// written, so a rotation that does not take makes new handshakes fail.
const RUN: Duration = Duration::from_secs(90);
const ROTATE_EVERY: Duration = Duration::from_secs(15);
const SHORT_TTL: Duration = Duration::from_secs(30);
/// How often the probes make new handshakes with B.
const PROBE_EVERY: Duration = Duration::from_secs(3);
/// Keep-alive HTTP/1.1 clients sending load through A, and the pause between their
/// requests (a bound on the request count too).
const LOADERS: usize = 4;
const LOAD_PAUSE: Duration = Duration::from_millis(20);
const MAX_PER_LOADER: usize = 10_000;

/// What one load task saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
}

/// 90 seconds of load through A to B while both rewrite their 30-second certificates
/// every 15 seconds (new certificates from the same CA, written with `Issued::write`):
///
/// - not one request fails, from four keep-alive HTTP/1.1 clients and one long-lived
///   HTTP/2 connection to A, which stays up throughout;
/// - A keeps its mesh connection to B: `weft_upstream_connections_total{cluster="b"}`
///   does not grow with rotations (at most 2), and B's `inbound` completes at most 2
///   handshakes;
/// - each rotation is loaded once by each proxy (`weft_tls_cert_loads_total` ok 6, none
///   rejected: the rewrite's transient key/certificate mismatch is never read);
/// - new handshakes get the current certificate: every 3 seconds a fresh client (no
///   resumption) handshakes with B and must see exactly the certificate last written
///   (6 distinct ones in all), and gets an answer, also after the first certificates
///   expired; a request through A on a new connection (`/fresh`, to B's listener with an
///   idle timeout) succeeds every time.
///
/// Checked to fail: with `FileSource::spawn` not started for the proxies' stores
/// (`proxy/src/tls.rs`, locally) the first rotation is never loaded (fails at 25 s);
/// with B's files left alone (only A rotating) the probe's handshake with B fails on
/// B's expired certificate at 30 s.
#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let ca = TestCa::new(TD)?;
    let mut a_cert = ca.issue("a", SHORT_TTL)?;
    let mut b_cert = ca.issue("b", SHORT_TTL)?;
    let probe = ca.issue("probe", TTL)?;
    let app = upstream::http1("app").await?;
    let b = TestProxy::start(&b_rotating(&b_cert, app.addr())).await?;
    let a = TestProxy::start(&a_rotating(&a_cert, &b, &b_cert)).await?;
    let started = tokio::time::Instant::now();
    within(
        RUN + Duration::from_secs(60),
        "rotation under load",
        async {
            let stop = Arc::new(AtomicBool::new(false));
            let mut loaders = tokio::task::JoinSet::new();
            for c in 0..LOADERS {
                let (stop, base) = (stop.clone(), a.url("edge", "/load"));
                loaders.spawn(async move {
                    let client = Client::http1();
                    let mut tally = Tally::default();
                    for n in 0..MAX_PER_LOADER {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let path = format!("/load/{c}/{n}");
                        match client.get(&format!("{base}/{c}/{n}")).await {
                            Ok(r) if r.code() == 200 && r.seen_path() == Some(path.as_str()) => {
                                tally.ok += 1;
                            }
                            Ok(r) => {
                                tally
                                    .failed
                                    .push(format!("{path}: {} {}", r.code(), r.text()))
                            }
                            Err(e) => tally.failed.push(format!("{path}: {e:#}")),
                        }
                        tokio::time::sleep(LOAD_PAUSE).await;
                    }
                    tally
                });
            }
            // One HTTP/2 connection for the whole run: any failure, or its end, shows.
            let tcp = tokio::net::TcpStream::connect(a.addr("edge")).await?;
            let (mut h2, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await?;
            let h2_conn = tokio::spawn(conn);
            let h2_stop = stop.clone();
            let h2_addr = a.addr("edge");
            let h2_load = tokio::spawn(async move {
                let mut tally = Tally::default();
                for n in 0..MAX_PER_LOADER {
                    if h2_stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let req = http::Request::get(format!("http://{h2_addr}/h2/{n}"))
                        .version(http::Version::HTTP_2)
                        .body(weft_tests::client::empty())
                        .expect("a request");
                    let sent = async {
                        h2.ready().await?;
                        let resp = h2.send_request(req).await?;
                        weft_tests::Reply::collect(resp).await
                    };
                    match sent.await {
                        Ok(r) if r.code() == 200 => tally.ok += 1,
                        Ok(r) => tally.failed.push(format!("h2 {n}: {}", r.code())),
                        Err(e) => tally.failed.push(format!("h2 {n}: {e:#}")),
                    }
                    tokio::time::sleep(LOAD_PAUSE * 5).await;
                }
                // The sender goes back with the tally: dropping it would close the
                // connection before the test looks at it.
                (tally, h2)
            });

            let fresh_client = Client::http1();
            let tls = TlsClient::mesh(&[ca.cert_pem()], Some(&probe), &[b"http/1.1"])?;
            let mut rotations = 0u32;
            let mut leaves = Vec::new();
            let mut fresh_hashes = Vec::new();
            let mut probes = 0usize;
            while started.elapsed() < RUN {
                if started.elapsed() >= ROTATE_EVERY * (rotations + 1) {
                    rotations += 1;
                    a_cert.rotate(ca.reissue(&a_cert, SHORT_TTL)?)?;
                    b_cert.rotate(ca.reissue(&b_cert, SHORT_TTL)?)?;
                    let n = f64::from(rotations + 1);
                    wait_loaded(&a, &a_cert, n, "A loads its rotated certificate").await?;
                    wait_loaded(&b, &b_cert, n, "B loads its rotated certificate").await?;
                    eprintln!("{:?}: rotation {rotations} loaded", started.elapsed());
                }
                // A new handshake with B gets the certificate last written.
                let conn = tls.connect(b.addr("inbound-idle"), None).await;
                let conn = conn.map_err(|e| {
                    anyhow::anyhow!("{:?}: probe handshake with B: {e}", started.elapsed())
                })?;
                let leaf = conn.get_ref().1.peer_certificates().unwrap()[0].clone();
                assert_eq!(
                    leaf,
                    b_cert.cert_der()?,
                    "{:?}: B's certificate after {rotations} rotations",
                    started.elapsed()
                );
                let reply =
                    weft_tests::ca::http_get(conn, false, "app.internal", "/probe", &[]).await?;
                assert_eq!(reply.code(), 200, "{:?}: probe", started.elapsed());
                if !leaves.contains(&leaf) {
                    leaves.push(leaf);
                }
                // A request through A on a new mesh connection.
                let reply = fresh_client
                    .get(&a.url("edge", &format!("/fresh/{probes}")))
                    .await?;
                assert_eq!(reply.code(), 200, "{:?}: /fresh", started.elapsed());
                let hash = xfcc_fields(&app.last().unwrap())["Hash"].clone();
                if !fresh_hashes.contains(&hash) {
                    fresh_hashes.push(hash);
                }
                probes += 1;
                tokio::time::sleep(PROBE_EVERY).await;
            }
            stop.store(true, Ordering::Relaxed);

            let mut load = Tally::default();
            while let Some(t) = loaders.join_next().await {
                let t = t?;
                load.ok += t.ok;
                load.failed.extend(t.failed);
            }
            let (h2_tally, _h2) = h2_load.await?;
            eprintln!(
                "{:?}: {} rotations, {probes} probes, load {} ok {} failed, h2 {} ok {} failed, \
             A's certificates seen by B on new connections: {}",
                started.elapsed(),
                rotations,
                load.ok,
                load.failed.len(),
                h2_tally.ok,
                h2_tally.failed.len(),
                fresh_hashes.len(),
            );
            assert!(load.failed.is_empty(), "failed requests: {:?}", load.failed);
            assert!(
                h2_tally.failed.is_empty(),
                "failed h2 requests: {:?}",
                h2_tally.failed
            );
            assert!(load.ok >= 1000 && h2_tally.ok >= 100, "the load ran");
            assert!(
                !h2_conn.is_finished(),
                "the client's HTTP/2 connection stayed up"
            );
            assert_eq!(rotations, 5);
            assert_eq!(leaves.len(), 6, "B's certificates seen by new handshakes");

            let (am, bm) = (a.metrics().await?, b.metrics().await?);
            assert_eq!(loads(&am, &a_cert, "ok"), 6.0);
            assert_eq!(loads(&bm, &b_cert, "ok"), 6.0);
            assert_eq!(loads(&am, &a_cert, "rejected"), 0.0);
            assert_eq!(loads(&bm, &b_cert, "rejected"), 0.0);
            let opened = am.sum(UPSTREAM_CONNECTIONS, &[("cluster", "b")]);
            assert!(opened <= 2.0, "A's mesh connections to B: {opened}");
            let b_ok = super::server_handshakes(&bm, "inbound", "ok");
            assert!(b_ok <= 2.0, "B's handshakes on the loaded listener: {b_ok}");
            anyhow::Ok(())
        },
    )
    .await?
}
