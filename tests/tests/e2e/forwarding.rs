//! What a forwarded request and its response look like on the other side: forwarding
//! headers, request ids, hop-by-hop removal, `Host`, rewrites, header operations, local
//! answers (direct responses, redirects), and HTTP/2 on either side.

use std::time::Duration;

use http::{Method, Version};
use weft_tests::client::{self, raw_exchange};
use weft_tests::pattern::PatternCheck;
use weft_tests::upstream::Recorded;
use weft_tests::{Behavior, Client, TestProxy, Upstream, upstream, within};

use crate::{LIMIT, both_clients};

/// Routes over one HTTP/1.1 upstream (`plain`) and one HTTP/2 upstream (`h2`).
fn config(plain: &Upstream, h2: &Upstream) -> String {
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: api
        match: {{ prefix: /api/ }}
        rewrite: {{ prefix: /v2/ }}
        to: plain
      - name: internal
        match: {{ prefix: /internal }}
        rewrite: {{ host: internal.svc.local }}
        to: plain
      - name: headers
        match: {{ prefix: /headers }}
        request_headers:
          set: {{ x-set: new }}
          add: {{ x-add: added }}
          remove: [x-remove]
        response_headers:
          set: {{ x-resp-set: new }}
          add: {{ x-resp-add: added }}
          remove: [x-resp-remove]
        to: plain
      - name: teapot
        match: {{ path: /teapot }}
        respond: {{ status: 418, body: "short and stout" }}
      - name: to-https
        match: {{ prefix: /secure }}
        redirect: {{ scheme: https }}
      - name: moved
        match: {{ prefix: /old-page }}
        redirect: {{ host: new.example, path: /landing, code: 302, strip_query: true }}
      - name: v1-to-v2
        match: {{ prefix: /v1/ }}
        redirect: {{ prefix: /v2/, code: 308 }}
      - name: other-port
        match: {{ prefix: /port }}
        redirect: {{ port: 9443, code: 307 }}
      - name: h2-upstream
        match: {{ prefix: /h2/ }}
        to: h2
      - name: products
        match: {{ path: "/products/{{productId}}" }}
        to: plain
      - name: rest
        match: {{ prefix: / }}
        to: plain
clusters:
  plain: {{ endpoints: [{plain}] }}
  h2: {{ endpoints: [{h2}], protocol: http2 }}
"#,
        plain = plain.addr(),
        h2 = h2.addr()
    )
}

struct Setup {
    plain: Upstream,
    h2: Upstream,
    proxy: TestProxy,
}

async fn setup() -> anyhow::Result<Setup> {
    let plain = upstream::http1("plain").await?;
    let h2 = upstream::http2("h2").await?;
    let proxy = TestProxy::start(&config(&plain, &h2)).await?;
    Ok(Setup { plain, h2, proxy })
}

fn last(u: &Upstream) -> Recorded {
    u.last()
        .unwrap_or_else(|| panic!("upstream {} received nothing", u.name()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_request_ids() -> anyhow::Result<()> {
    let s = setup().await?;
    within(LIMIT, "forwarding headers", async {
        for client in both_clients() {
            let v = client.version();
            let url = s.proxy.url("edge", "/fwd");

            // No incoming forwarding headers: the proxy creates them and an id.
            let reply = client.get(&url).await?;
            assert_eq!(reply.code(), 200, "{v:?}");
            let seen = last(&s.plain);
            assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"), "{v:?}");
            assert_eq!(seen.header("x-forwarded-proto"), Some("http"), "{v:?}");
            let id = seen
                .header("x-request-id")
                .unwrap_or_else(|| panic!("{v:?}: no x-request-id upstream"))
                .to_owned();
            assert_eq!(id.len(), 36, "{v:?}: a generated id is a UUID, got {id:?}");
            assert_eq!(
                reply.header("x-request-id"),
                None,
                "{v:?}: like Envoy, the response does not echo the id"
            );

            // Incoming ones: x-forwarded-for is appended to, the proto overwritten, the
            // id kept.
            let reply = client
                .get_with(
                    &url,
                    &[
                        ("x-forwarded-for", "203.0.113.7"),
                        ("x-forwarded-proto", "https"),
                        ("x-request-id", "my-id-42"),
                    ],
                )
                .await?;
            assert_eq!(reply.code(), 200);
            let seen = last(&s.plain);
            assert_eq!(
                seen.header_all("x-forwarded-for"),
                vec!["203.0.113.7, 127.0.0.1".to_owned()],
                "{v:?}"
            );
            assert_eq!(seen.header("x-forwarded-proto"), Some("http"), "{v:?}");
            assert_eq!(seen.header("x-request-id"), Some("my-id-42"), "{v:?}");

            // Two generated ids differ.
            client.get(&url).await?;
            let a = last(&s.plain).header("x-request-id").map(str::to_owned);
            client.get(&url).await?;
            let b = last(&s.plain).header("x-request-id").map(str::to_owned);
            assert!(a.is_some(), "{v:?}");
            assert_ne!(a, b, "{v:?}: ids are unique");
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_preserved_and_path_and_query_pass_unchanged() -> anyhow::Result<()> {
    let s = setup().await?;
    let addr = s.proxy.addr("edge");
    within(LIMIT, "host and path", async {
        for client in both_clients() {
            let v = client.version();
            let client = client.via(addr);
            let reply = client
                .get("http://keep.example:8080/products/42?color=red&size=%20L")
                .await?;
            assert_eq!(reply.code(), 200, "{v:?}");
            assert_eq!(reply.upstream(), Some("plain"));
            let seen = last(&s.plain);
            assert_eq!(
                seen.host(),
                Some("keep.example:8080"),
                "{v:?}: Host preserved"
            );
            assert_eq!(
                seen.path_and_query, "/products/42?color=red&size=%20L",
                "{v:?}: path and query unchanged"
            );
            assert_eq!(seen.method, Method::GET);
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_removed_and_te_trailers_kept() -> anyhow::Result<()> {
    let s = setup().await?;
    let addr = s.proxy.addr("edge");
    within(LIMIT, "hop-by-hop request headers", async {
        // Raw bytes, so that the proxy gets exactly these headers (a chunked body too).
        let request = "POST /hop HTTP/1.1\r\n\
            Host: hop.example\r\n\
            Connection: keep-alive, x-hop\r\n\
            x-hop: secret\r\n\
            Keep-Alive: timeout=5\r\n\
            Proxy-Connection: keep-alive\r\n\
            Upgrade: foo/1\r\n\
            Trailer: x-checksum\r\n\
            TE: trailers\r\n\
            x-end-to-end: kept\r\n\
            Transfer-Encoding: chunked\r\n\
            \r\n\
            5\r\nhello\r\n0\r\n\r\n";
        let resp =
            raw_exchange(addr, request.as_bytes(), Duration::from_millis(500), 65536).await?;
        let resp = resp.text();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let seen = last(&s.plain);
        for gone in [
            "x-hop",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "connection",
        ] {
            assert!(
                seen.header(gone).is_none(),
                "{gone} reached the upstream: {:?}",
                seen.headers
            );
        }
        // `Trailer` declares end-to-end trailer fields (RFC 9110 section 6.6.2): kept.
        assert_eq!(seen.header("trailer"), Some("x-checksum"));
        // The upstream hop has its own framing; the client's must not be passed on as
        // well (at most one transfer-encoding, and the body arrives whole).
        assert!(
            seen.header_all("transfer-encoding").len() <= 1,
            "{:?}",
            seen.headers
        );
        assert_eq!(seen.body_len, 5);
        assert_eq!(
            seen.header("te"),
            Some("trailers"),
            "te: trailers is end to end"
        );
        assert_eq!(seen.header("x-end-to-end"), Some("kept"));

        // Any other TE value is hop-by-hop.
        for client in both_clients() {
            let reply = client
                .get_with(&s.proxy.url("edge", "/te"), &[("te", "gzip")])
                .await?;
            assert_eq!(reply.code(), 200);
            assert!(last(&s.plain).header("te").is_none(), "te: gzip passed");
        }
        // Over HTTP/2, te: trailers (the only TE it allows) still reaches the upstream.
        let reply = Client::http2()
            .get_with(&s.proxy.url("edge", "/te"), &[("te", "trailers")])
            .await?;
        assert_eq!(reply.code(), 200);
        assert_eq!(last(&s.plain).header("te"), Some("trailers"));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_removed() -> anyhow::Result<()> {
    let s = setup().await?;
    s.plain.set(
        Behavior::default()
            .with_header("connection", "x-hop-resp")
            .with_header("x-hop-resp", "secret")
            .with_header("keep-alive", "timeout=5")
            .with_header("proxy-connection", "keep-alive")
            .with_header("upgrade", "foo/1")
            .with_header("trailer", "x-checksum")
            .with_header("x-end-to-end", "kept"),
    );
    within(LIMIT, "hop-by-hop response headers", async {
        for client in both_clients() {
            let v = client.version();
            let reply = client.get(&s.proxy.url("edge", "/hop")).await?;
            assert_eq!(reply.code(), 200, "{v:?}");
            for gone in [
                "x-hop-resp",
                "keep-alive",
                "proxy-connection",
                "upgrade",
                "connection",
            ] {
                assert!(
                    reply.header(gone).is_none(),
                    "{v:?}: {gone} reached the client: {:?}",
                    reply.headers
                );
            }
            assert_eq!(reply.header("x-end-to-end"), Some("kept"), "{v:?}");
            assert_eq!(
                reply.header("trailer"),
                Some("x-checksum"),
                "{v:?}: end to end"
            );
            assert_eq!(reply.text(), "upstream plain\n");
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upstream_answer_reaches_an_http10_client_without_transfer_encoding()
-> anyhow::Result<()> {
    let s = setup().await?;
    // The upstream answers chunked; the client speaks HTTP/1.0, which has no chunked
    // coding. The upstream's Transfer-Encoding belongs to the upstream hop: the client
    // must get the body delimited by the connection's close, and no such header.
    s.plain.set(Behavior::stream_chunked(50_000));
    within(LIMIT, "HTTP/1.0 client, chunked upstream", async {
        let reply = raw_exchange(
            s.proxy.addr("edge"),
            b"GET /chunked HTTP/1.0\r\nHost: old.example\r\n\r\n",
            Duration::from_secs(5),
            1 << 20,
        )
        .await?;
        assert!(
            reply.closed,
            "HTTP/1.0 without keep-alive: the proxy closes"
        );
        let split = reply
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head: {:?}", reply.text()));
        let head = String::from_utf8_lossy(&reply.bytes[..split]).into_owned();
        let body = &reply.bytes[split + 4..];
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "a chunked coding went to an HTTP/1.0 client: {head}"
        );
        let mut check = PatternCheck::new();
        check.update(body);
        assert_eq!(check.len(), 50_000, "{head}");
        assert!(check.ok(), "the body arrived unframed and intact");
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_and_host_rewrites() -> anyhow::Result<()> {
    let s = setup().await?;
    within(LIMIT, "rewrites", async {
        for client in both_clients() {
            let v = client.version();
            let reply = client.get(&s.proxy.url("edge", "/api/users/7?x=1")).await?;
            assert_eq!(reply.code(), 200, "{v:?}");
            assert_eq!(last(&s.plain).path_and_query, "/v2/users/7?x=1", "{v:?}");

            let reply = client.get(&s.proxy.url("edge", "/internal/status")).await?;
            assert_eq!(reply.code(), 200, "{v:?}");
            let seen = last(&s.plain);
            assert_eq!(seen.host(), Some("internal.svc.local"), "{v:?}");
            assert_eq!(seen.path_and_query, "/internal/status", "{v:?}");
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_set_add_remove_on_requests_and_responses() -> anyhow::Result<()> {
    let s = setup().await?;
    s.plain.set(
        Behavior::default()
            .with_header("x-resp-set", "old")
            .with_header("x-resp-add", "original")
            .with_header("x-resp-remove", "gone"),
    );
    within(LIMIT, "header operations", async {
        for client in both_clients() {
            let v = client.version();
            let reply = client
                .get_with(
                    &s.proxy.url("edge", "/headers"),
                    &[
                        ("x-set", "old"),
                        ("x-add", "original"),
                        ("x-remove", "gone"),
                    ],
                )
                .await?;
            assert_eq!(reply.code(), 200, "{v:?}");
            let seen = last(&s.plain);
            assert_eq!(seen.header_all("x-set"), vec!["new"], "{v:?}");
            assert_eq!(seen.header_all("x-add"), vec!["original", "added"], "{v:?}");
            assert!(seen.header("x-remove").is_none(), "{v:?}");

            let values = |name: &str| -> Vec<&str> {
                reply
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect()
            };
            assert_eq!(values("x-resp-set"), vec!["new"], "{v:?}");
            assert_eq!(values("x-resp-add"), vec!["original", "added"], "{v:?}");
            assert!(values("x-resp-remove").is_empty(), "{v:?}");
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_responses_and_redirects() -> anyhow::Result<()> {
    let s = setup().await?;
    let addr = s.proxy.addr("edge");
    within(LIMIT, "local answers", async {
        for client in both_clients() {
            let v = client.version();
            let client = client.via(addr);
            let before = s.plain.count();

            let reply = client.get("http://shop.example/teapot").await?;
            assert_eq!(reply.code(), 418, "{v:?}");
            assert_eq!(reply.text(), "short and stout", "{v:?}");
            assert!(
                reply
                    .header("content-type")
                    .is_some_and(|c| c.starts_with("text/plain")),
                "{v:?}"
            );

            let cases = [
                (
                    "http://shop.example:8080/secure/cart?q=1",
                    301,
                    "https://shop.example/secure/cart?q=1",
                ),
                (
                    "http://shop.example/old-page/x?q=1",
                    302,
                    "http://new.example/landing",
                ),
                (
                    "http://shop.example:8080/v1/items?q=1",
                    308,
                    "http://shop.example:8080/v2/items?q=1",
                ),
                (
                    "http://shop.example/port/a",
                    307,
                    "http://shop.example:9443/port/a",
                ),
            ];
            for (url, code, location) in cases {
                let reply = client.get(url).await?;
                assert_eq!(reply.code(), code, "{v:?} {url}");
                assert_eq!(reply.header("location"), Some(location), "{v:?} {url}");
            }
            assert_eq!(
                s.plain.count(),
                before,
                "{v:?}: local answers never reach the upstream"
            );
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_on_either_side() -> anyhow::Result<()> {
    let s = setup().await?;
    within(LIMIT, "HTTP/2 upstream and downstream", async {
        // h2c downstream to an HTTP/1.1 upstream.
        let reply = Client::http2().get(&s.proxy.url("edge", "/plain")).await?;
        assert_eq!(reply.code(), 200);
        assert_eq!(reply.version, Version::HTTP_2, "the client spoke h2c");
        assert_eq!(reply.text(), "upstream plain\n");
        assert_eq!(last(&s.plain).version, Version::HTTP_11);

        // Either client to an HTTP/2 (prior knowledge) upstream cluster, with a body.
        for client in both_clients() {
            let v = client.version();
            let reply = client
                .send(
                    Method::POST,
                    &s.proxy.url("edge", "/h2/things?id=3"),
                    &[("x-check", "1")],
                    client::full(vec![1u8; 10_000]),
                )
                .await?;
            assert_eq!(reply.code(), 200, "{v:?}");
            assert_eq!(reply.version, v);
            assert_eq!(reply.text(), "upstream h2\n", "{v:?}");
            let seen = last(&s.h2);
            assert_eq!(seen.version, Version::HTTP_2, "{v:?}");
            assert_eq!(seen.path_and_query, "/h2/things?id=3");
            assert_eq!(seen.header("x-check"), Some("1"));
            assert_eq!(seen.body_len, 10_000);
            assert!(seen.body_complete);
        }
        // Several requests multiplexed over the one upstream HTTP/2 connection.
        let client = Client::http2();
        let url = s.proxy.url("edge", "/h2/many");
        let replies = futures_util::future::join_all((0..20).map(|_| client.get(&url))).await;
        for r in replies {
            assert_eq!(r?.code(), 200);
        }
        assert_eq!(s.h2.connections(), 1, "one pooled h2 connection upstream");
        anyhow::Ok(())
    })
    .await?
}

/// Upstreams and a proxy with one virtual host per name, for `Host` handling tests.
async fn vhost_setup() -> anyhow::Result<(Upstream, Upstream, TestProxy)> {
    let abs = upstream::http1("abs").await?;
    let other = upstream::http1("other").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    virtual_hosts:
      - domains: ["abs.example"]
        routes:
          - match: {{ prefix: / }}
            to: abs
      - domains: ["*"]
        routes:
          - match: {{ prefix: / }}
            to: other
clusters:
  abs: {{ endpoints: [{}] }}
  other: {{ endpoints: [{}] }}
"#,
        abs.addr(),
        other.addr()
    ))
    .await?;
    Ok((abs, other, proxy))
}

// With an absolute-form request target, the URI's host is routed on and forwarded as
// `Host`; a conflicting `Host` header is ignored (RFC 9112 section 3.2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_wins_over_a_conflicting_host_header() -> anyhow::Result<()> {
    let (abs, other, proxy) = vhost_setup().await?;
    within(LIMIT, "absolute-form", async {
        let request = "GET http://abs.example/abs HTTP/1.1\r\n\
            Host: other.example\r\n\
            Connection: close\r\n\r\n";
        let reply = raw_exchange(
            proxy.addr("edge"),
            request.as_bytes(),
            Duration::from_secs(2),
            65536,
        )
        .await?;
        assert!(reply.text().starts_with("HTTP/1.1 200"), "{}", reply.text());
        assert_eq!(other.count(), 0, "routed by the URI's host");
        assert_eq!(
            last(&abs).host(),
            Some("abs.example"),
            "the upstream sees the host the request was routed on"
        );
        anyhow::Ok(())
    })
    .await?
}

// A request with two `Host` headers gets 400 (RFC 9112 section 3.2), so the proxy and
// the upstream can never disagree about the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_a_400() -> anyhow::Result<()> {
    let (abs, other, proxy) = vhost_setup().await?;
    within(LIMIT, "duplicate Host", async {
        let request = "GET /dup HTTP/1.1\r\n\
            Host: abs.example\r\n\
            Host: other.example\r\n\
            Connection: close\r\n\r\n";
        let reply = raw_exchange(
            proxy.addr("edge"),
            request.as_bytes(),
            Duration::from_secs(2),
            65536,
        )
        .await?;
        assert!(reply.text().starts_with("HTTP/1.1 400"), "{}", reply.text());
        assert_eq!(abs.count() + other.count(), 0, "nothing forwarded");
        anyhow::Ok(())
    })
    .await?
}

// An HTTP/1.1 request offering an h2c upgrade (`Connection: Upgrade, HTTP2-Settings`,
// `Upgrade: h2c`, as `curl --http2 http://...` sends) is served over HTTP/1.1 with the
// offer ignored (RFC 9110 section 7.8), as Envoy does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_offer_is_ignored_and_served_over_http1() -> anyhow::Result<()> {
    let s = setup().await?;
    within(LIMIT, "h2c offer", async {
        let request = "GET /h2c-offer HTTP/1.1\r\n\
            Host: h2c.example\r\n\
            Connection: Upgrade, HTTP2-Settings\r\n\
            Upgrade: h2c\r\n\
            HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
            \r\n";
        let reply = raw_exchange(
            s.proxy.addr("edge"),
            request.as_bytes(),
            Duration::from_millis(500),
            65536,
        )
        .await?;
        assert!(reply.text().starts_with("HTTP/1.1 200"), "{}", reply.text());
        let seen = last(&s.plain);
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(seen.header(gone).is_none(), "{gone}: {:?}", seen.headers);
        }
        anyhow::Ok(())
    })
    .await?
}

// Several `x-forwarded-for` lines mean their comma-joined value (RFC 9110 section 5.3):
// they are folded in order and the client is appended, so no hop is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_x_forwarded_for_lines_are_folded_in_order() -> anyhow::Result<()> {
    let s = setup().await?;
    within(LIMIT, "x-forwarded-for lines", async {
        for client in both_clients() {
            let v = client.version();
            let reply = client
                .get_with(
                    &s.proxy.url("edge", "/xff"),
                    &[
                        ("x-forwarded-for", "1.1.1.1"),
                        ("x-forwarded-for", "2.2.2.2"),
                    ],
                )
                .await?;
            assert_eq!(reply.code(), 200);
            assert_eq!(
                last(&s.plain).header_all("x-forwarded-for"),
                vec!["1.1.1.1, 2.2.2.2, 127.0.0.1".to_owned()],
                "{v:?}"
            );
        }
        anyhow::Ok(())
    })
    .await?
}
