//! Edge TLS for external clients: the certificate chosen by SNI, ALPN `h2` and
//! `http/1.1`, TLS 1.2 and 1.3 with forward-secret suites only; and what the `openssl`
//! command line gets from an edge listener and from a mesh listener.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use http::Version;
use rustls::ProtocolVersion;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use weft_tests::ca::{CertDir, TestCa, TlsClient, http_get};
use weft_tests::{Metrics, TestProxy, Upstream, eventually, upstream, within};

use super::{FORGED_XFCC, HANDSHAKES, Mesh, TTL, XFCC, handshake_lines, server_handshakes};
use crate::LIMIT;

/// The bound on one `openssl s_client` run.
const OPENSSL_LIMIT: Duration = Duration::from_secs(10);

/// A gateway with the edge TLS listener `web` (certificates for `shop.example`, then
/// for `api.example` and `*.api.example`) in front of an app.
struct Edge {
    ca: TestCa,
    shop: CertDir,
    api: CertDir,
    app: Upstream,
    proxy: TestProxy,
}

impl Edge {
    async fn start() -> anyhow::Result<Edge> {
        let ca = TestCa::new("edge.test")?;
        let shop = ca.server(&["shop.example"])?;
        let api = ca.server(&["api.example", "*.api.example"])?;
        let app = upstream::http1("app").await?;
        let proxy = TestProxy::start(&format!(
            r#"
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: {{ certificates: [{shop}, {api}] }}
    routes:
      - name: app
        match: {{ prefix: / }}
        to: app
clusters:
  app: {{ endpoints: ["{app}"] }}
"#,
            shop = shop.edge_yaml(),
            api = api.edge_yaml(),
            app = app.addr(),
        ))
        .await?;
        Ok(Edge {
            ca,
            shop,
            api,
            app,
            proxy,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr("web")
    }
}

/// Clients with and without SNI (exact names, a wildcard, an unknown name, none) get the
/// matching certificate, the first one when nothing matches; ALPN picks HTTP/2 when
/// offered, HTTP/1.1 otherwise; a TLS 1.2-only client is served with an ECDHE suite.
/// Every request reaches the app, marked `x-forwarded-proto: https`, without the
/// client's `x-forwarded-client-cert` (an edge listener vouches for no client).
///
/// Checked to fail: with the two certificates listed the other way round, the no-SNI and
/// unknown-name cases get `api`'s certificate.
#[tokio::test]
async fn edge_tls_picks_the_certificate_by_sni_and_speaks_h2_and_tls12() -> anyhow::Result<()> {
    let e = Edge::start().await?;
    let both: [&'static rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    within(LIMIT, "edge tls", async {
        let h2_or_h1 = TlsClient::new(&[e.ca.cert_pem()], None, &both, &[b"h2", b"http/1.1"])?;
        let cases = [
            (Some("shop.example"), &e.shop),
            (Some("api.example"), &e.api),
            (Some("www.api.example"), &e.api),
            (Some("unknown.example"), &e.shop),
            (None, &e.shop),
        ];
        for (sni, want) in cases {
            let what = format!("SNI {sni:?}");
            let conn = h2_or_h1.connect(e.addr(), sni).await?;
            let (_, tls) = conn.get_ref();
            assert_eq!(
                tls.peer_certificates().unwrap()[0],
                want.cert_der()?,
                "{what}"
            );
            assert_eq!(tls.alpn_protocol(), Some(&b"h2"[..]), "{what}: ALPN");
            assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_3));
            let host = sni.unwrap_or("shop.example");
            let reply = http_get(conn, true, host, "/sni", &[(XFCC, FORGED_XFCC)]).await?;
            assert_eq!(reply.code(), 200, "{what}: {}", reply.text());
            assert_eq!(reply.version, Version::HTTP_2, "{what}");
            let rec = e.app.last().expect("a request");
            assert_eq!(rec.header("x-forwarded-proto"), Some("https"), "{what}");
            assert!(rec.header_all(XFCC).is_empty(), "{what}: {:?}", rec.headers);
        }

        let h1 = TlsClient::new(&[e.ca.cert_pem()], None, &both, &[b"http/1.1"])?;
        let conn = h1.connect(e.addr(), Some("shop.example")).await?;
        assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let reply = http_get(conn, false, "shop.example", "/h1", &[]).await?;
        assert_eq!((reply.code(), reply.version), (200, Version::HTTP_11));

        let tls12 = TlsClient::new(
            &[e.ca.cert_pem()],
            None,
            &[&rustls::version::TLS12],
            &[b"h2"],
        )?;
        let conn = tls12.connect(e.addr(), Some("api.example")).await?;
        let (_, tls) = conn.get_ref();
        assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        let suite = format!("{:?}", tls.negotiated_cipher_suite().unwrap().suite());
        assert!(suite.starts_with("TLS_ECDHE_"), "TLS 1.2 suite {suite}");
        assert_eq!(tls.peer_certificates().unwrap()[0], e.api.cert_der()?);
        let reply = http_get(conn, true, "api.example", "/tls12", &[]).await?;
        assert_eq!(reply.code(), 200);

        assert_eq!(e.app.count(), 7);
        let m = e.proxy.metrics().await?;
        assert_eq!(
            server_handshakes(&m, "web", "ok"),
            7.0,
            "{:?}",
            handshake_lines(&m)
        );
        anyhow::Ok(())
    })
    .await?
}

/// What one `openssl s_client` run printed, and whether it ran at all.
struct SClient {
    /// Exit status success.
    success: bool,
    /// Standard output and error, together.
    output: String,
}

impl SClient {
    /// Whether the HTTP request got the app's answer.
    fn answered(&self) -> bool {
        self.output.contains("HTTP/1.1 200") && self.output.contains("upstream app")
    }
}

/// Whether the `openssl` command line is here (tests that need it say so and skip
/// when it is not).
async fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: the `openssl` command line is not installed");
    }
    found
}

/// Runs `openssl s_client -connect ADDR -servername shop.example -ign_eof ARGS` with
/// an HTTP/1.1 `GET /openssl` (`Connection: close`) on its input, within
/// [`OPENSSL_LIMIT`] (killed beyond).
async fn s_client(addr: SocketAddr, args: &[&str]) -> anyhow::Result<SClient> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "shop.example", "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // The request may meet a closed pipe when the handshake failed: not an error here.
    let _ = stdin
        .write_all(b"GET /openssl HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
        .await;
    drop(stdin);
    let out = tokio::time::timeout(OPENSSL_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("openssl s_client {args:?} did not end"))??;
    Ok(SClient {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// The edge listener's handshake count for `outcome`, once it reached `n`.
async fn wait_counted(proxy: &TestProxy, outcome: &str, n: f64) -> anyhow::Result<Metrics> {
    let mut last = None;
    let done = eventually(Duration::from_secs(5), outcome, async || {
        let m = proxy.metrics().await.unwrap();
        let reached = server_handshakes(&m, "web", outcome) >= n;
        last = Some(m);
        reached
    })
    .await;
    let m = last.expect("scraped");
    done.map_err(|e| anyhow::anyhow!("{e}: {:?}", handshake_lines(&m)))?;
    Ok(m)
}

/// `openssl s_client` against the edge listener: TLS 1.0 and 1.1 are refused (the
/// client is allowed them with `@SECLEVEL=0`, whatever the system's `openssl.cnf` says,
/// so that the ClientHello reaches the proxy), as is TLS 1.2 with a suite without
/// forward secrecy (`AES128-SHA`), each counted by the proxy as `protocol`; TLS 1.2 with
/// `ECDHE-ECDSA-AES128-GCM-SHA256` and TLS 1.3 complete an HTTP request.
///
/// Checked to fail: pointing the refused runs at a closed port (a failure that is not
/// the proxy's) leaves the `protocol` count at 0, so only the proxy's own refusals pass.
#[tokio::test]
async fn edge_tls_refuses_old_protocols_and_suites_without_forward_secrecy() -> anyhow::Result<()> {
    if !have_openssl().await {
        return Ok(());
    }
    let e = Edge::start().await?;
    within(LIMIT, "openssl against the edge", async {
        let cases: [(&str, &[&str], bool); 5] = [
            (
                "TLS 1.0",
                &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
                false,
            ),
            (
                "TLS 1.1",
                &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
                false,
            ),
            (
                "TLS 1.2, no forward secrecy",
                &["-tls1_2", "-cipher", "AES128-SHA"],
                false,
            ),
            (
                "TLS 1.2, ECDHE",
                &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                true,
            ),
            ("TLS 1.3", &["-tls1_3"], true),
        ];
        let mut refused = 0.0;
        for (what, args, works) in cases {
            let run = s_client(e.addr(), args).await?;
            let seen = e.app.count();
            if works {
                assert!(run.answered(), "{what}: want an answer:\n{}", run.output);
                continue;
            }
            assert!(
                !run.success && !run.answered(),
                "{what}: want a failed handshake:\n{}",
                run.output
            );
            assert_eq!(e.app.count(), seen, "{what}: nothing reached the app");
            refused += 1.0;
            let m = wait_counted(&e.proxy, "protocol", refused).await?;
            assert_eq!(server_handshakes(&m, "web", "protocol"), refused, "{what}");
        }
        let m = e.proxy.metrics().await?;
        assert_eq!(
            server_handshakes(&m, "web", "ok"),
            2.0,
            "{:?}",
            handshake_lines(&m)
        );
        assert_eq!(m.sum(HANDSHAKES, &[("listener", "web")]), 5.0);
        anyhow::Ok(())
    })
    .await?
}

/// `openssl s_client` against a mesh listener: without a client certificate the TLS 1.3
/// handshake ends in the server's `certificate required` alert and no HTTP answer ever
/// comes (counted `no_client_cert`); with a mesh certificate and key the same command
/// gets the app's answer (so the command itself is sound).
///
/// Checked to fail: with B's listener on `mtls: false` (plain HTTP) the run without a
/// certificate fails the TLS handshake instead of being refused for want of one, and is
/// not counted as `no_client_cert`.
#[tokio::test]
async fn openssl_without_a_certificate_gets_nothing_from_a_mesh_listener() -> anyhow::Result<()> {
    if !have_openssl().await {
        return Ok(());
    }
    let m = Mesh::start().await?;
    let caller = m.ca.issue("c", TTL)?;
    within(LIMIT, "openssl against the mesh", async {
        let inbound = m.b.addr("inbound");
        let run = s_client(inbound, &["-tls1_3"]).await?;
        assert!(
            !run.answered() && !run.output.contains("HTTP/1.1"),
            "{}",
            run.output
        );
        eventually(
            Duration::from_secs(5),
            "no_client_cert counted",
            async || {
                let metrics = m.b.metrics().await.unwrap();
                server_handshakes(&metrics, "inbound", "no_client_cert") == 1.0
            },
        )
        .await?;
        assert_eq!(m.app.count(), 0);

        let (cert, key, ca) = (
            caller.cert.display().to_string(),
            caller.key.display().to_string(),
            caller.ca.display().to_string(),
        );
        let run = s_client(
            inbound,
            &["-tls1_3", "-cert", &cert, "-key", &key, "-CAfile", &ca],
        )
        .await?;
        assert!(run.answered(), "with a certificate:\n{}", run.output);
        assert_eq!(m.app.count(), 1);
        anyhow::Ok(())
    })
    .await?
}
