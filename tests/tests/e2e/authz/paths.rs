//! Path-spelling bypass attempts against a deny rule, and what the upstream receives.
//!
//! The rule is only as strong as the agreement between the proxy and the upstream on
//! what a path means: the proxy normalises the path once, before routing, and both the
//! policy and the upstream see that one spelling. So every spelling that an upstream
//! could resolve to `/admin/...` must be denied, and every request that passes must
//! reach the upstream already in the normal form the policy judged.
//!
//! Case: paths are case-sensitive (RFC 3986 section 6.2.2.1; Envoy's RBAC path
//! matchers and Istio's `paths` are case-sensitive unless asked otherwise), so
//! `/ADMIN/x` is a different resource from `/admin/x`: it is not denied, and it reaches
//! the upstream unchanged (never case-folded), so an upstream that does fold case must
//! be protected by a rule written for it. The test pins that down.

use std::net::SocketAddr;

use weft_tests::{Client, Reply, TestProxy, upstream, within};

use super::{assert_denied, assert_passed, decisions, raw_get};
use crate::LIMIT;

/// Spellings of `/admin` and `/admin/...` that must be denied (the listener's default
/// normalisation: dot segments, merged slashes, `%2F`/`%5C` unescaped).
const DENIED: &[&str] = &[
    "/admin",
    "/admin/x",
    "/admin/x?q=1",
    "/admin/.",
    "//admin/x",
    "///admin//x",
    "/./admin/x",
    "/%2e/admin/x",
    "/%2e%2e/admin/x",
    "/x/../../admin/x",
    "/public/../admin/x",
    "/public/./../admin/x",
    "/public/..%2Fadmin/x",
    "/public/..%2fadmin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2E%2Fadmin/x",
    "/public/.%2e/admin/x",
    "/%61dmin/x",
    "/adm%69n/x",
    "/public/%5C../admin/x",
    "/public/%5c..%5cadmin/x",
    "/admin%2Fx",
    "/admin%2fx",
    "/public\\..\\admin/x",
    "/public/..\\admin/x",
];

/// Absolute-form request targets (HTTP/1.1 only): the path inside is normalised too.
const DENIED_ABSOLUTE: &[&str] = &[
    "http://shop.example/public/../admin/x",
    "http://shop.example//admin/x",
    "http://shop.example/%61dmin/x",
];

/// Requests that pass, and the path and query the upstream must receive.
const PASSED: &[(&str, &str)] = &[
    ("/public/x", "/public/x"),
    ("/public/./y/../x", "/public/x"),
    ("//public//x", "/public/x"),
    ("/public/%7Euser", "/public/~user"),
    ("/public/a%2fb", "/public/a/b"),
    ("/public/%e2%82%ac", "/public/%E2%82%AC"),
    // Decoded once only: an upstream decoding once more sees `/%61dmin/x`, not `/admin/x`.
    ("/%2561dmin/x", "/%2561dmin/x"),
    // The query is not a path: left exactly as sent.
    (
        "/public/x?next=/admin/../x%2F",
        "/public/x?next=/admin/../x%2F",
    ),
    // Case-sensitive (see the module documentation).
    ("/ADMIN/x", "/ADMIN/x"),
    // `/admin/` and `/admin` are the rule; a longer first segment is another resource.
    ("/administrator", "/administrator"),
];

/// Not valid paths: 400 before routing.
const BAD: &[&str] = &["/a%zz", "/a%4", "/a%", "/%g1/x", "/public/x%"];

fn config(backend: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    authz:
      rules:
        - name: no-admin
          action: deny
          to: {{ paths: [/admin], path_prefixes: [/admin/] }}
    routes:
      - name: all
        match: {{ prefix: / }}
        to: backend
clusters:
  backend: {{ endpoints: [{backend}] }}
"#
    )
}

/// `GET target` over HTTP/2 (prior knowledge) with hyper's client, which sends the
/// path as given (checked: the parsed URI keeps the spelling).
async fn h2_get(client: &Client, target: &str) -> anyhow::Result<Reply> {
    let url = format!("http://shop.example{target}");
    let uri: http::Uri = url.parse()?;
    assert_eq!(
        uri.path_and_query().map(|p| p.as_str()),
        Some(target),
        "the client would not send {target:?} as written"
    );
    client.get(&url).await
}

/// Each spelling of `/admin/...` is denied over HTTP/1.1 (raw bytes) and HTTP/2 and
/// never reaches the upstream; the other requests reach it normalised.
///
/// Checked to fail: with normalisation skipped (`normalise_path` in `http/security.rs`
/// returning at once), `//admin/x` reaches the upstream (200 instead of 403); with
/// `decode` in `authz/path.rs` keeping `%2F` under `EscapedSlashes::Unescape`,
/// `/public/..%2Fadmin/x` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_denied_path_is_denied() -> anyhow::Result<()> {
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&config(backend.addr())).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "path spellings", async {
        let h2 = Client::http2().via(addr);
        for target in DENIED {
            let reply = raw_get(addr, target).await?;
            assert_denied(&reply, &format!("HTTP/1.1 GET {target}"));
            let reply = h2_get(&h2, target).await?;
            assert_denied(&reply, &format!("HTTP/2 GET {target}"));
        }
        for target in DENIED_ABSOLUTE {
            let reply = raw_get(addr, target).await?;
            assert_denied(&reply, &format!("HTTP/1.1 GET {target}"));
        }
        assert_eq!(
            backend.count(),
            0,
            "denied requests reached the upstream: {:?}",
            backend.requests()
        );
        let denied = (DENIED.len() * 2 + DENIED_ABSOLUTE.len()) as f64;
        assert_eq!(decisions(&proxy, "edge", "deny", "no-admin").await?, denied);

        for (target, seen) in PASSED {
            let reply = raw_get(addr, target).await?;
            assert_passed(&reply, "backend", seen, &format!("HTTP/1.1 GET {target}"));
            let reply = h2_get(&h2, target).await?;
            assert_passed(&reply, "backend", seen, &format!("HTTP/2 GET {target}"));
        }
        assert_eq!(backend.count(), PASSED.len() * 2);
        // Allowed by the default: counted under `default`.
        assert_eq!(
            decisions(&proxy, "edge", "allow", "default").await?,
            (PASSED.len() * 2) as f64
        );
        anyhow::Ok(())
    })
    .await?
}

/// A path with a bad escape is a 400 before routing and authorization, over both
/// protocols, and never reaches the upstream.
///
/// Checked to fail: with `normalise_path` passing a path it cannot normalise on instead
/// of answering 400, `/a%zz` reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_escapes_are_refused() -> anyhow::Result<()> {
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&config(backend.addr())).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "bad escapes", async {
        let h2 = Client::http2().via(addr);
        for target in BAD {
            for (proto, reply) in [
                ("HTTP/1.1", raw_get(addr, target).await?),
                ("HTTP/2", h2_get(&h2, target).await?),
            ] {
                assert_eq!(
                    reply.code(),
                    400,
                    "{proto} GET {target}: {:?}",
                    reply.text()
                );
                assert_eq!(
                    reply.header("x-weft-error"),
                    Some("bad-request"),
                    "{proto} GET {target}"
                );
            }
        }
        assert_eq!(backend.count(), 0, "{:?}", backend.requests());
        // Refused before any policy looked at them.
        let m = proxy.metrics().await?;
        assert_eq!(m.sum("weft_authz_decisions_total", &[]), 0.0, "{}", m.text);
        anyhow::Ok(())
    })
    .await?
}

/// `escaped_slashes: reject` answers 400 for `%2F` and `%5C`; `keep` (with
/// `merge_slashes: false`) leaves them and repeated slashes as they are, and the
/// upstream receives exactly the spelling the policy judged (which is why `keep` is
/// only safe in front of upstreams that do not decode `%2F` or merge slashes).
///
/// Checked to fail: with the handler normalising with `PathOptions::default()` instead
/// of the listener's options, `/public/..%2Fadmin/x` on the `reject` listener is
/// unescaped and reaches the upstream (200 instead of 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slash_options() -> anyhow::Result<()> {
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: strict
    address: 127.0.0.1:0
    path_normalization: {{ escaped_slashes: reject }}
    authz:
      rules:
        - name: no-admin
          action: deny
          to: {{ path_prefixes: [/admin/] }}
    routes:
      - {{ match: {{ prefix: / }}, to: backend }}
  - name: lenient
    address: 127.0.0.1:0
    path_normalization: {{ escaped_slashes: keep, merge_slashes: false }}
    authz:
      rules:
        - name: no-admin
          action: deny
          to: {{ path_prefixes: [/admin/] }}
    routes:
      - {{ match: {{ prefix: / }}, to: backend }}
clusters:
  backend: {{ endpoints: [{backend}] }}
"#,
        backend = backend.addr()
    ))
    .await?;
    let (strict, lenient) = (proxy.addr("strict"), proxy.addr("lenient"));
    within(LIMIT, "escaped slash options", async {
        for target in ["/public/..%2Fadmin/x", "/admin%2fx", "/public/a%5Cb"] {
            let reply = raw_get(strict, target).await?;
            assert_eq!(reply.code(), 400, "strict GET {target}: {:?}", reply.text());
            assert_eq!(reply.header("x-weft-error"), Some("bad-request"));
        }
        // Dot segments are still resolved and escaped letters decoded.
        assert_denied(&raw_get(strict, "/public/../admin/x").await?, "strict ..");
        assert_denied(&raw_get(strict, "/%61dmin/x").await?, "strict %61");
        assert_eq!(backend.count(), 0, "{:?}", backend.requests());

        for (target, seen) in [
            ("/public/..%2Fadmin/x", "/public/..%2Fadmin/x"),
            ("/public/..%2fadmin/x", "/public/..%2Fadmin/x"),
            ("//admin/x", "//admin/x"),
            ("/public//x", "/public//x"),
        ] {
            let reply = raw_get(lenient, target).await?;
            assert_passed(&reply, "backend", seen, &format!("lenient GET {target}"));
        }
        assert_denied(&raw_get(lenient, "/public/../admin/x").await?, "lenient ..");
        anyhow::Ok(())
    })
    .await?
}
