//! Bad certificate files: a configuration update naming missing or mismatched files is
//! rejected whole, and a rotation that writes a bad file is refused; either way the
//! proxy keeps serving with what it had.

use std::time::Duration;

use weft_tests::ca::{CertDir, TlsClient, leaf_der};
use weft_tests::{Client, Metrics, TestProxy, eventually, within};

use super::{CERT_LOADS, Mesh, TTL, a_config, b_config, expect_id};
use crate::LIMIT;

/// How long a file watcher may take to see a rewritten file.
const NOTICED: Duration = Duration::from_secs(10);

/// Configuration rejections so far.
fn rejections(m: &Metrics) -> f64 {
    m.sum("weft_config_rejections_total", &[])
}

/// `weft_tls_cert_loads_total` for `dir`'s certificate with `outcome`.
fn loads(m: &Metrics, dir: &CertDir, outcome: &str) -> f64 {
    let source = dir.cert.display().to_string();
    m.sum(CERT_LOADS, &[("source", &source), ("outcome", outcome)])
}

/// A request through the mesh answers 200 from the app.
async fn serves(m: &Mesh, what: &str) -> anyhow::Result<()> {
    let reply = Client::http1().get(&m.url("/still")).await?;
    assert_eq!(reply.code(), 200, "{what}: {}", reply.text());
    assert_eq!(reply.upstream(), Some("app"), "{what}");
    Ok(())
}

/// Updates of A's and B's configuration that name a missing certificate, a key that
/// does not match its certificate, or a missing trust bundle: each is rejected (the
/// error names the file), counted, and the previous configuration keeps serving
/// through the mesh; the same holds for an update the file watcher picks up. A good
/// update afterwards applies.
///
/// Checked to fail: the reload of a configuration naming a fresh, valid certificate
/// directory instead is accepted (the version moves on), so the rejections are about
/// the files. The good update's new identity is the one B sees next (the mesh
/// connections are rebuilt with the new certificate).
#[tokio::test]
async fn a_reload_naming_bad_certificate_files_is_rejected_and_the_old_one_serves()
-> anyhow::Result<()> {
    let mut m = Mesh::start().await?;
    let other = m.ca.issue("a", TTL)?;
    within(LIMIT, "bad files on reload", async {
        serves(&m, "before").await?;
        let b_addr = m.b.addr("inbound");
        let b_expect = expect_id(&m.b_cert);
        let missing = m.a_cert.dir.join("missing.pem");
        let a_with = |cert: &CertDir| a_config(cert, b_addr, &b_expect, "");

        let mut no_cert = m.a_cert.clone();
        no_cert.cert.clone_from(&missing);
        let mut mismatched = m.a_cert.clone();
        mismatched.key.clone_from(&other.key);
        let mut no_bundle = m.b_cert.clone();
        no_bundle.ca.clone_from(&missing);
        let app = m.app.addr();
        let cases: [(&str, &TestProxy, String, &str); 3] = [
            (
                "A: missing certificate",
                &m.a,
                a_with(&no_cert),
                "missing.pem",
            ),
            (
                "A: key of another certificate",
                &m.a,
                a_with(&mismatched),
                "does not match",
            ),
            (
                "B: missing trust bundle",
                &m.b,
                b_config(&no_bundle, "true", app, ""),
                "missing.pem",
            ),
        ];
        for (what, proxy, yaml, says) in cases {
            let version = proxy.version();
            let rejected = rejections(&proxy.metrics().await?);
            proxy.rewrite_config(&yaml)?;
            let err = proxy
                .reload()
                .await
                .expect_err(&format!("{what}: the update is rejected"));
            let text = format!("{err:#}");
            assert!(text.contains(says), "{what}: the error says why: {text}");
            assert_eq!(
                proxy.version(),
                version,
                "{what}: still the old configuration"
            );
            assert_eq!(
                rejections(&proxy.metrics().await?),
                rejected + 1.0,
                "{what}"
            );
            serves(&m, what).await?;
        }

        // The same through the file watcher.
        m.a.watch().await;
        let rejected = rejections(&m.a.metrics().await?);
        m.a.rewrite_config(&a_with(&no_cert))?;
        eventually(NOTICED, "the watcher rejects the update", async || {
            rejections(&m.a.metrics().await.unwrap()) == rejected + 1.0
        })
        .await?;
        assert_eq!(m.a.version(), 1);
        serves(&m, "after the watched update").await?;

        // A good update (A's certificate in another directory) applies.
        m.a.rewrite_config(&a_with(&other))?;
        eventually(NOTICED, "the watcher applies the good update", async || {
            m.a.version() == 2
        })
        .await?;
        serves(&m, "after the good update").await?;
        // A new identity means new mesh connections: B now sees the new certificate.
        let rec = m.app.last().expect("a request");
        super::assert_xfcc(&rec, &m.b_cert, &other, "after the good update");
        anyhow::Ok(())
    })
    .await?
}

/// B's certificate files are rewritten badly: first `key.pem` alone with another key
/// (the certificate no longer matches), then `cert.pem` with text that is not PEM.
/// B refuses both (`weft_tls_cert_loads_total{outcome="rejected"}`) and keeps its
/// certificate: a new caller still gets it, and requests through A still succeed. A
/// good rotation afterwards is taken.
///
/// Checked to fail: writing a matching key and certificate as the "bad" rotation makes
/// the probe see a new certificate and the rejected count stay at 0.
#[tokio::test]
async fn a_bad_rotated_file_is_refused_and_the_old_certificate_stays() -> anyhow::Result<()> {
    let mut m = Mesh::start().await?;
    let probe = m.ca.issue("probe", TTL)?;
    within(LIMIT, "bad rotation", async {
        let tls = TlsClient::mesh(&[m.ca.cert_pem()], Some(&probe), &[b"http/1.1"])?;
        let served = async |m: &Mesh| -> anyhow::Result<_> {
            let conn = tls.connect(m.b.addr("inbound"), None).await?;
            let leaf = conn.get_ref().1.peer_certificates().unwrap()[0].clone();
            let reply =
                weft_tests::ca::http_get(conn, false, "app.internal", "/probe", &[]).await?;
            assert_eq!(reply.code(), 200);
            Ok(leaf)
        };
        let original = m.b_cert.cert_der()?;
        assert_eq!(served(&m).await?, original);
        serves(&m, "before").await?;

        let stranger_key = m.ca.reissue(&m.b_cert, TTL)?.key_pem;
        m.b_cert.write_key(&stranger_key)?;
        let rejected_once =
            async || loads(&m.b.metrics().await.unwrap(), &m.b_cert, "rejected") == 1.0;
        eventually(NOTICED, "the mismatched key is refused", rejected_once).await?;
        assert_eq!(served(&m).await?, original, "B keeps its certificate");
        serves(&m, "after the bad key").await?;

        let tmp = m.b_cert.dir.join(".cert.pem.bad");
        std::fs::write(&tmp, "this is not a certificate\n")?;
        std::fs::rename(&tmp, &m.b_cert.cert)?;
        eventually(NOTICED, "the garbage certificate is refused", async || {
            loads(&m.b.metrics().await.unwrap(), &m.b_cert, "rejected") == 2.0
        })
        .await?;
        assert_eq!(served(&m).await?, original, "B keeps its certificate");
        serves(&m, "after the garbage certificate").await?;
        let metrics = m.b.metrics().await?;
        assert_eq!(
            loads(&metrics, &m.b_cert, "ok"),
            1.0,
            "nothing bad was loaded"
        );

        let good = m.ca.reissue(&m.b_cert, TTL)?;
        let new_leaf = leaf_der(&good.cert_pem)?;
        m.b_cert.rotate(good)?;
        eventually(NOTICED, "the good rotation is loaded", async || {
            loads(&m.b.metrics().await.unwrap(), &m.b_cert, "ok") == 2.0
        })
        .await?;
        assert_eq!(served(&m).await?, new_leaf, "B serves the good rotation");
        serves(&m, "after the good rotation").await?;
        anyhow::Ok(())
    })
    .await?
}

/// A reload that changes nothing about TLS (a route added on A, one on B) keeps what
/// TLS built: the certificate stores (no second load of the files), A's mesh
/// connection (no new connection, no new handshake) and B's acceptor.
///
/// Checked to fail: a reload naming A's identity in a new directory (another
/// `CertDir`) loads a second store and opens a new connection.
#[tokio::test]
async fn a_reload_that_does_not_touch_tls_keeps_connections_and_stores() -> anyhow::Result<()> {
    let m = Mesh::start().await?;
    within(LIMIT, "reload keeps tls", async {
        serves(&m, "before").await?;
        let direct = "      - name: direct\n        match: { path: /direct }\n        \
                      respond: { status: 204 }\n";
        let with_route =
            |yaml: String| yaml.replacen("    routes:\n", &format!("    routes:\n{direct}"), 1);
        m.a.rewrite_config(&with_route(a_config(
            &m.a_cert,
            m.b.addr("inbound"),
            &expect_id(&m.b_cert),
            "",
        )))?;
        m.a.reload().await?;
        m.b.rewrite_config(&with_route(b_config(&m.b_cert, "true", m.app.addr(), "")))?;
        m.b.reload().await?;
        assert_eq!((m.a.version(), m.b.version()), (2, 2));
        let reply = Client::http1().get(&m.url("/direct")).await?;
        assert_eq!(reply.code(), 204, "A's new route");
        serves(&m, "after the reloads").await?;

        let (a, b) = (m.a.metrics().await?, m.b.metrics().await?);
        assert_eq!(loads(&a, &m.a_cert, "ok"), 1.0, "A's store kept");
        assert_eq!(loads(&b, &m.b_cert, "ok"), 1.0, "B's store kept");
        assert_eq!(a.sum(super::UPSTREAM_CONNECTIONS, &[("cluster", "b")]), 1.0);
        assert_eq!(super::client_handshakes(&a, "b", "ok"), 1.0);
        assert_eq!(super::server_handshakes(&b, "inbound", "ok"), 1.0);
        anyhow::Ok(())
    })
    .await?
}
