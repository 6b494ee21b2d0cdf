//! Refused handshakes: every reason a mesh peer is turned away, each counted in
//! `weft_tls_handshakes_total` with its own outcome by the side that detects it, and no
//! request reaching the app.
//!
//! A's cluster refuses a B with the wrong id (`bad_identity`) or a certificate from a
//! CA A does not trust (`unknown_ca`); B's inbound refuses callers with no certificate,
//! an unknown CA, an expired or not yet valid certificate, no SPIFFE id, no clientAuth
//! usage, or another trust domain than it accepts.

use std::time::Duration;

use weft_tests::ca::{CertDir, Exchange, TestCa, TlsClient};
use weft_tests::{Client, TestProxy, eventually, upstream, within};

use super::{
    HANDSHAKES, OTHER_TD, TD, TTL, a_config, assert_xfcc, b_config, client_handshakes, expect_id,
    handshake_lines, server_handshakes, start_a,
};
use crate::LIMIT;

/// How long a counter may take to show a refusal the client already saw (the server
/// counts after its side of the handshake ends).
const COUNTED: Duration = Duration::from_secs(5);

/// A request through A must fail with a local 503, the app untouched.
async fn assert_refused_through(a: &TestProxy, what: &str) -> anyhow::Result<()> {
    let reply = Client::http1().get(&a.url("edge", "/refused")).await?;
    assert_eq!(
        reply.code(),
        503,
        "{what}: {:?} {}",
        reply.headers,
        reply.text()
    );
    assert!(reply.upstream().is_none(), "{what}: answered by the proxy");
    assert!(
        reply.header(crate::ERROR_HEADER).is_some(),
        "{what}: a local error {:?}",
        reply.headers
    );
    Ok(())
}

/// A's cluster expects a different id than B presents: A's client handshake fails
/// (`bad_identity`, on A, the side that checks), the client gets 503 and the app
/// nothing. Controls: the same B is accepted by a cluster listing its id among others
/// and by one accepting B's whole trust domain; a cluster accepting another trust
/// domain refuses it (`bad_identity`).
///
/// Checked to fail: with the expected id set to B's own, the refusal case answers 200.
#[tokio::test]
async fn a_cluster_refuses_a_peer_with_another_identity() -> anyhow::Result<()> {
    let ca = TestCa::new(TD)?;
    let (a_cert, b_cert) = (ca.issue("a", TTL)?, ca.issue("b", TTL)?);
    let app = upstream::http1("app").await?;
    let b = TestProxy::start(&b_config(&b_cert, "true", app.addr(), "")).await?;
    let b_id = b_cert.id_str();
    within(LIMIT, "cluster identity checks", async {
        let cases = [
            (
                "another id",
                format!("{{ identity: {:?} }}", ca.id("not-b").as_str()),
                false,
            ),
            (
                "another trust domain",
                format!("{{ trust_domain: {OTHER_TD} }}"),
                false,
            ),
            (
                "a list with B's id",
                format!("{{ identity: [{:?}, {b_id:?}] }}", ca.id("x").as_str()),
                true,
            ),
            (
                "B's trust domain",
                format!("{{ trust_domain: {TD} }}"),
                true,
            ),
        ];
        for (what, mtls, admitted) in cases {
            let a = TestProxy::start(&a_config(&a_cert, b.addr("inbound"), &mtls, "")).await?;
            let before = app.count();
            if admitted {
                let reply = Client::http1().get(&a.url("edge", "/ok")).await?;
                assert_eq!(reply.code(), 200, "{what}: {}", reply.text());
                assert_eq!(app.count(), before + 1, "{what}");
                continue;
            }
            assert_refused_through(&a, what).await?;
            assert_eq!(app.count(), before, "{what}: nothing reached the app");
            let m = a.metrics().await?;
            assert!(
                client_handshakes(&m, "b", "bad_identity") >= 1.0,
                "{what}: {:?}",
                handshake_lines(&m)
            );
            assert_eq!(client_handshakes(&m, "b", "ok"), 0.0, "{what}");
        }
        // B completed no handshake with the refusing clusters' proxies: only the two
        // admitted ones (one connection each).
        let m = b.metrics().await?;
        assert_eq!(
            server_handshakes(&m, "inbound", "ok"),
            2.0,
            "{:?}",
            handshake_lines(&m)
        );
        anyhow::Ok(())
    })
    .await?
}

/// B presents a certificate A's bundle does not vouch for: one from an impostor CA of
/// the same trust domain (same CA name, other key, B's very id) and one from another
/// trust domain's CA. A refuses both (`unknown_ca`), the client gets 503, the app
/// nothing.
///
/// Checked to fail: with B's certificate from A's own CA the request answers 200.
#[tokio::test]
async fn a_cluster_refuses_a_peer_from_an_unknown_ca() -> anyhow::Result<()> {
    let ca = TestCa::new(TD)?;
    let impostor = TestCa::new(TD)?;
    let other = TestCa::new(OTHER_TD)?;
    let a_cert = ca.issue("a", TTL)?;
    let app = upstream::http1("app").await?;
    within(LIMIT, "unknown CA of the peer", async {
        for (what, b_cert) in [
            (
                "impostor CA, same id",
                impostor.issue(ca.id("b").as_str(), TTL)?,
            ),
            ("another trust domain's CA", other.issue("b", TTL)?),
        ] {
            let b = TestProxy::start(&b_config(&b_cert, "true", app.addr(), "")).await?;
            let a = start_a(&a_cert, &b, &b_cert).await?;
            assert_refused_through(&a, what).await?;
            assert_eq!(app.count(), 0, "{what}: nothing reached the app");
            let m = a.metrics().await?;
            assert!(
                client_handshakes(&m, "b", "unknown_ca") >= 1.0,
                "{what}: {:?}",
                handshake_lines(&m)
            );
            let m = b.metrics().await?;
            assert_eq!(server_handshakes(&m, "inbound", "ok"), 0.0, "{what}");
        }
        anyhow::Ok(())
    })
    .await?
}

/// One caller of B's inbound: its certificate, the listener it calls and what must
/// happen (`None`: admitted; else the refusal's outcome).
struct Caller<'a> {
    what: &'a str,
    cert: Option<&'a CertDir>,
    listener: &'a str,
    refused_as: Option<&'a str>,
}

/// Callers straight to B's inbound listeners, each on a fresh connection offering
/// HTTP/1.1, each refusal counted once under its own outcome (and no other), the app
/// reached only by the admitted ones. B's bundle trusts its own CA and `other.test`'s,
/// so that certificates of the other trust domain fail on the trust-domain rule, not on
/// the chain. `inbound` is `mtls: true` (B's own trust domain), `inbound-other`
/// `mtls: { trust_domains: [other.test] }`.
///
/// Checked to fail: with `mtls: { trust_domains: [mesh.test, other.test] }` on `inbound`
/// the other-trust-domain caller is admitted; each certificate helper was checked
/// against its outcome by swapping two of them (the counters then disagree).
#[tokio::test]
async fn the_inbound_refuses_callers_without_an_acceptable_certificate() -> anyhow::Result<()> {
    let ca = TestCa::new(TD)?;
    let other = TestCa::new(OTHER_TD)?;
    let stranger = TestCa::new("stranger.test")?;
    let impostor = TestCa::new(TD)?;
    let b_cert = ca.issue_trusting("b", TTL, &[&other])?;
    let app = upstream::http1("app").await?;
    let extra = r#"  - name: inbound-other
    address: 127.0.0.1:0
    mtls: { trust_domains: [other.test] }
    routes:
      - name: app
        match: { prefix: / }
        to: app"#;
    let b = TestProxy::start(&b_config(&b_cert, "true", app.addr(), extra)).await?;

    let good = ca.issue("c", TTL)?;
    let unknown = stranger.issue("c", TTL)?;
    let forged = impostor.issue(ca.id("c").as_str(), TTL)?;
    let expired = ca.expired("c")?;
    let early = ca.not_yet_valid("c")?;
    let dns = ca.dns_only("c.mesh.test")?;
    let server_only = ca.without_client_auth("c")?;
    let foreign = other.issue("c", TTL)?;
    let callers = [
        Caller {
            what: "a valid certificate",
            cert: Some(&good),
            listener: "inbound",
            refused_as: None,
        },
        Caller {
            what: "no certificate",
            cert: None,
            listener: "inbound",
            refused_as: Some("no_client_cert"),
        },
        Caller {
            what: "a CA B does not know",
            cert: Some(&unknown),
            listener: "inbound",
            refused_as: Some("unknown_ca"),
        },
        Caller {
            what: "an impostor of B's CA",
            cert: Some(&forged),
            listener: "inbound",
            refused_as: Some("unknown_ca"),
        },
        Caller {
            what: "an expired certificate",
            cert: Some(&expired),
            listener: "inbound",
            refused_as: Some("expired"),
        },
        Caller {
            what: "a certificate not valid yet",
            cert: Some(&early),
            listener: "inbound",
            refused_as: Some("not_yet_valid"),
        },
        Caller {
            what: "a DNS SAN instead of a SPIFFE id",
            cert: Some(&dns),
            listener: "inbound",
            refused_as: Some("bad_identity"),
        },
        Caller {
            what: "no clientAuth usage",
            cert: Some(&server_only),
            listener: "inbound",
            refused_as: Some("bad_eku"),
        },
        Caller {
            what: "another trust domain",
            cert: Some(&foreign),
            listener: "inbound",
            refused_as: Some("bad_identity"),
        },
        Caller {
            what: "the trust domain listed",
            cert: Some(&foreign),
            listener: "inbound-other",
            refused_as: None,
        },
        Caller {
            what: "B's own trust domain, not listed",
            cert: Some(&good),
            listener: "inbound-other",
            refused_as: Some("bad_identity"),
        },
    ];
    within(LIMIT, "inbound refusals", async {
        for c in &callers {
            let what = format!("{} at {}", c.what, c.listener);
            let before = b.metrics().await?;
            let seen = app.count();
            let client = TlsClient::mesh(&[ca.cert_pem()], c.cert, &[b"http/1.1"])?;
            let exchange = client
                .get(b.addr(c.listener), None, "app.internal", "/caller", &[])
                .await?;
            match (c.refused_as, &exchange) {
                (None, Exchange::Answered(reply)) => {
                    assert_eq!(reply.code(), 200, "{what}: {}", reply.text());
                    assert_eq!(app.count(), seen + 1, "{what}");
                    let rec = app.last().expect("a request");
                    let cert = c.cert.expect("admitted callers have a certificate");
                    assert_xfcc(&rec, &b_cert, cert, &what);
                }
                (Some(_), Exchange::Refused(why)) => {
                    eprintln!("{what}: refused: {why}");
                    assert_eq!(app.count(), seen, "{what}: nothing reached the app");
                }
                _ => panic!(
                    "{what}: want refused as {:?}, got {exchange:?}",
                    c.refused_as
                ),
            }
            let outcome = c.refused_as.unwrap_or("ok");
            let want = server_handshakes(&before, c.listener, outcome) + 1.0;
            let all_before = before.sum(HANDSHAKES, &[("listener", c.listener)]);
            let mut last = None;
            let counted = eventually(COUNTED, &what, async || {
                let m = b.metrics().await.unwrap();
                let done = server_handshakes(&m, c.listener, outcome) == want;
                last = Some(m);
                done
            })
            .await;
            let m = last.expect("scraped at least once");
            counted.map_err(|e| {
                anyhow::anyhow!("{e}: want {outcome} +1, got {:?}", handshake_lines(&m))
            })?;
            assert_eq!(
                m.sum(HANDSHAKES, &[("listener", c.listener)]),
                all_before + 1.0,
                "{what}: counted once, under {outcome} only: {:?}",
                handshake_lines(&m)
            );
        }
        anyhow::Ok(())
    })
    .await?
}

/// B's inbound as an Envoy-format file (the friendly format has no header timeout):
/// mesh mutual TLS with B's identity, and a 1 s `request_headers_timeout`, which also
/// bounds the TLS handshake.
fn b_envoy_config(b_cert: &CertDir, app: std::net::SocketAddr) -> String {
    let file = |p: &std::path::Path| format!("{{ filename: {:?} }}", p.display().to_string());
    format!(
        r#"
static_resources:
  listeners:
    - name: inbound
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                tls_params: {{ tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }}
                tls_certificates:
                  - certificate_chain: {cert}
                    private_key: {key}
                validation_context:
                  trusted_ca: {ca}
                alpn_protocols: [h2, http/1.1]
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: inbound
                request_headers_timeout: 1s
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  name: inbound
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: / }}
                          route: {{ cluster: app }}
  clusters:
    - name: app
      type: STATIC
      load_assignment:
        cluster_name: app
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#,
        cert = file(&b_cert.cert),
        key = file(&b_cert.key),
        ca = file(&b_cert.ca),
        port = app.port(),
    )
}

/// A caller that connects to B's inbound and never sends a ClientHello: B gives up
/// after its header timeout (1 s) and closes, and counts the handshake as `timeout`, one
/// of the documented outcomes of `weft_tls_handshakes_total`.
#[tokio::test]
async fn a_stalled_handshake_is_counted_as_a_timeout() -> anyhow::Result<()> {
    let ca = TestCa::new(TD)?;
    let b_cert = ca.issue("b", TTL)?;
    let app = upstream::http1("app").await?;
    let b = TestProxy::start(&b_envoy_config(&b_cert, app.addr())).await?;
    within(LIMIT, "stalled handshake", async {
        // The file is sound: a mesh caller is answered.
        let caller = ca.issue("c", TTL)?;
        let client = TlsClient::mesh(&[ca.cert_pem()], Some(&caller), &[b"http/1.1"])?;
        let exchange = client
            .get(b.addr("inbound"), None, "app.internal", "/", &[])
            .await?;
        assert!(
            matches!(exchange, Exchange::Answered(ref r) if r.code() == 200),
            "{exchange:?}"
        );

        let mut silent = tokio::net::TcpStream::connect(b.addr("inbound")).await?;
        let reply =
            weft_tests::client::read_some(&mut silent, Duration::from_secs(10), 1024).await?;
        assert!(reply.closed, "B closes a silent connection: {reply:?}");
        let mut last = None;
        let counted = eventually(COUNTED, "timeout counted", async || {
            let m = b.metrics().await.unwrap();
            let done = server_handshakes(&m, "inbound", "timeout") == 1.0;
            last = Some(m);
            done
        })
        .await;
        let m = last.expect("scraped");
        counted.map_err(|e| anyhow::anyhow!("{e}: {:?}", handshake_lines(&m)))?;
        assert_eq!(server_handshakes(&m, "inbound", "other"), 0.0);
        anyhow::Ok(())
    })
    .await?
}

/// The client side's handshake timeout: an endpoint that accepts the TCP connection and
/// never answers the ClientHello is given up on after the cluster's connect timeout.
/// The request gets a local 503, and A counts the handshake as `timeout`.
#[tokio::test]
async fn a_silent_mesh_endpoint_times_out_the_client_handshake() -> anyhow::Result<()> {
    let ca = TestCa::new(TD)?;
    let a_cert = ca.issue("a", TTL)?;
    let b_cert = ca.issue("b", TTL)?;
    // Accepts and holds every connection, saying nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = silent.local_addr()?;
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // A's usual configuration, its cluster `b` with a 1 s connect timeout.
    let mtls = format!("{}\n    connect_timeout: 1s", expect_id(&b_cert));
    let a = TestProxy::start(&a_config(&a_cert, addr, &mtls, "")).await?;
    let result = within(LIMIT, "silent endpoint", async {
        let reply = Client::http1().get(&a.url("edge", "/")).await?;
        assert_eq!(reply.code(), 503, "{:?} {}", reply.headers, reply.text());
        assert_eq!(
            reply.header(crate::ERROR_HEADER),
            Some("upstream-connect-failure"),
            "{}",
            reply.text()
        );
        let mut last = None;
        let counted = eventually(COUNTED, "client timeout counted", async || {
            let m = a.metrics().await.unwrap();
            let done = client_handshakes(&m, "b", "timeout") >= 1.0;
            last = Some(m);
            done
        })
        .await;
        let m = last.expect("scraped");
        counted.map_err(|e| anyhow::anyhow!("{e}: {:?}", handshake_lines(&m)))?;
        assert_eq!(client_handshakes(&m, "b", "ok"), 0.0);
        anyhow::Ok(())
    })
    .await;
    holder.abort();
    result?
}
