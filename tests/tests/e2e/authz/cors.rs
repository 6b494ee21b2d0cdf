//! CORS end to end: preflights from allowed origins answered by the proxy, from other
//! origins forwarded (Envoy's default), actual requests decorated with
//! `access-control-allow-origin` and `vary: origin`, and preflights that pass a route's
//! JWT requirement without a token (the friendly compiler sets
//! `bypass_cors_preflight`: a browser sends no credentials on a preflight).

use std::net::SocketAddr;

use http::Method;
use weft_tests::client::empty;
use weft_tests::jwt::SigningKey;
use weft_tests::{Client, Reply, TestProxy, upstream, within};

use super::Scratch;
use crate::LIMIT;

const ISS: &str = "https://auth.shop.example";

fn config(backend: SocketAddr, jwks_file: &str) -> String {
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    jwt_providers:
      shop:
        issuer: {ISS}
        jwks: {{ file: "{jwks_file}" }}
    authz:
      default: deny
      rules:
        - name: only-api
          to: {{ path_prefixes: [/api/, /plain/] }}
    routes:
      - name: api
        match: {{ prefix: /api/ }}
        to: backend
        jwt: shop
        cors:
          allow_origins: [https://shop.example, "https://*.shop.example"]
          allow_methods: [GET, POST, DELETE]
          allow_headers: [authorization, content-type]
          expose_headers: [x-request-id]
          max_age: 1h
          allow_credentials: true
      - name: plain
        match: {{ prefix: /plain/ }}
        to: backend
        jwt: shop
      - name: private
        match: {{ prefix: /private/ }}
        to: backend
        cors:
          allow_origins: [https://shop.example]
clusters:
  backend: {{ endpoints: [{backend}] }}
"#
    )
}

/// A request to `path` through `addr`, with `headers`.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    Client::http1()
        .via(addr)
        .send(
            method,
            &format!("http://api.shop.example{path}"),
            headers,
            empty(),
        )
        .await
}

/// A preflight from `origin` asking for `DELETE` with `authorization`.
async fn preflight(addr: SocketAddr, path: &str, origin: &str) -> anyhow::Result<Reply> {
    send(
        addr,
        Method::OPTIONS,
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "authorization"),
        ],
    )
    .await
}

fn has_cors_headers(reply: &Reply) -> bool {
    reply
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("access-control-"))
}

/// Preflights: from an allowed origin (exact or under the wildcard) the proxy answers
/// with the policy, without a token although the route requires one, and without the
/// upstream; from any other origin (including look-alikes of the wildcard) the
/// preflight goes to the upstream as Envoy forwards it, and comes back without CORS
/// headers. On a route without `cors:`, a preflight still passes the JWT requirement
/// (and reaches the upstream); an `OPTIONS` that is not a preflight does not.
///
/// Checked to fail: with `bypass_cors_preflight` ignored in `http/security.rs`, the
/// preflights to `/plain/` and the forwarded ones get 401; with the origin regex not
/// anchored (`parse_regex` replaced by a plain `Regex::new` in
/// `snapshot/translate/authn.rs`), `https://m.shop.example.evil.com` is answered with
/// allow headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights() -> anyhow::Result<()> {
    let scratch = Scratch::new("cors-preflight")?;
    let jwks_file = scratch.file("jwks.json");
    let key = SigningKey::es256()?;
    std::fs::write(&jwks_file, weft_tests::jwt::jwks(&[key.jwk("k")]))?;
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&config(backend.addr(), &jwks_file)).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "preflights", async {
        for origin in [
            "https://shop.example",
            "https://m.shop.example",
            "https://a.b.shop.example",
        ] {
            let reply = preflight(addr, "/api/items", origin).await?;
            let what = format!("preflight from {origin}");
            assert_eq!(reply.code(), 200, "{what}: {:?}", reply.headers);
            assert!(reply.upstream().is_none(), "{what}: answered by the proxy");
            assert_eq!(
                reply.header("access-control-allow-origin"),
                Some(origin),
                "{what}"
            );
            assert_eq!(
                reply.header("access-control-allow-methods"),
                Some("GET, POST, DELETE"),
                "{what}"
            );
            assert_eq!(
                reply.header("access-control-allow-headers"),
                Some("authorization, content-type"),
                "{what}"
            );
            assert_eq!(
                reply.header("access-control-max-age"),
                Some("3600"),
                "{what}"
            );
            assert_eq!(
                reply.header("access-control-allow-credentials"),
                Some("true"),
                "{what}"
            );
            assert_eq!(reply.header("vary"), Some("origin"), "{what}");
        }
        assert_eq!(backend.count(), 0, "{:?}", backend.requests());

        for origin in [
            "https://evil.example",
            "https://evilshop.example",
            "https://shop.example.evil.com",
            "https://m.shop.example.evil.com",
            "http://shop.example",
            "https://shop.example:8443",
        ] {
            let before = backend.count();
            let reply = preflight(addr, "/api/items", origin).await?;
            let what = format!("preflight from {origin}");
            assert_eq!(reply.code(), 200, "{what}: {:?}", reply.text());
            assert_eq!(reply.upstream(), Some("backend"), "{what}: forwarded");
            assert_eq!(backend.count(), before + 1, "{what}");
            assert!(!has_cors_headers(&reply), "{what}: {:?}", reply.headers);
        }

        // No `cors:` on the route: the preflight still skips the token check.
        let reply = preflight(addr, "/plain/x", "https://shop.example").await?;
        assert_eq!(
            reply.code(),
            200,
            "preflight on /plain/: {:?}",
            reply.text()
        );
        assert_eq!(reply.upstream(), Some("backend"));
        assert!(!has_cors_headers(&reply), "{:?}", reply.headers);
        // Not a preflight (no access-control-request-method): the token is required.
        let reply = send(
            addr,
            Method::OPTIONS,
            "/plain/x",
            &[("origin", "https://shop.example")],
        )
        .await?;
        assert_eq!(reply.code(), 401, "plain OPTIONS: {:?}", reply.text());
        let m = proxy.metrics().await?;
        assert_eq!(
            m.sum("weft_jwt_authn_total", &[("outcome", "ok")]),
            0.0,
            "preflights are not authenticated: {}",
            m.text
        );
        anyhow::Ok(())
    })
    .await?
}

/// Actual requests: from an allowed origin the upstream's answer carries
/// `access-control-allow-origin` (the origin echoed, with credentials), the exposed
/// headers and `vary: origin` (added to the upstream's own `vary`); without an origin or
/// from another origin it carries no CORS headers but is still served (the browser
/// enforces the policy, not the proxy).
///
/// Checked to fail: with `security::decorate` not called (`http/handler.rs`), the
/// allowed-origin request has no `access-control-allow-origin`; with `add_vary_origin`
/// (`http/cors.rs`) replacing `vary` instead of appending, the upstream's
/// `accept-encoding` is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_requests_are_decorated() -> anyhow::Result<()> {
    let scratch = Scratch::new("cors-actual")?;
    let jwks_file = scratch.file("jwks.json");
    let key = SigningKey::es256()?;
    std::fs::write(&jwks_file, weft_tests::jwt::jwks(&[key.jwk("k")]))?;
    let backend = upstream::http1("backend").await?;
    backend.set(weft_tests::Behavior::default().with_header("vary", "accept-encoding"));
    let proxy = TestProxy::start(&config(backend.addr(), &jwks_file)).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "actual requests", async {
        let now = weft_tests::jwt::now_secs();
        let token = key.sign(
            "k",
            &serde_json::json!({"iss": ISS, "sub": "u", "exp": now + 600}),
        )?;
        let auth = format!("Bearer {token}");

        let reply = send(
            addr,
            Method::GET,
            "/api/items",
            &[
                ("origin", "https://m.shop.example"),
                ("authorization", &auth),
            ],
        )
        .await?;
        assert_eq!(reply.code(), 200, "{:?}", reply.text());
        assert_eq!(reply.upstream(), Some("backend"));
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("https://m.shop.example")
        );
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            reply.header("access-control-expose-headers"),
            Some("x-request-id")
        );
        let vary: Vec<&str> = reply
            .headers
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        assert!(vary.contains(&"origin"), "vary: {vary:?}");
        assert!(vary.contains(&"accept-encoding"), "vary: {vary:?}");
        // Preflight-only headers are not sent on actual requests.
        assert_eq!(reply.header("access-control-allow-methods"), None);

        for headers in [
            vec![("authorization", auth.as_str())],
            vec![
                ("origin", "https://evil.example"),
                ("authorization", auth.as_str()),
            ],
        ] {
            let reply = send(addr, Method::GET, "/api/items", &headers).await?;
            assert_eq!(reply.code(), 200, "{headers:?}");
            assert!(
                !has_cors_headers(&reply),
                "{headers:?}: {:?}",
                reply.headers
            );
        }
        anyhow::Ok(())
    })
    .await?
}

/// A refusal on a CORS route must be readable by the page that made the call: with
/// the `cors` filter placed before `jwt_authn` and RBAC (as the compiler writes it),
/// Envoy runs the filter's `encodeHeaders` on their local replies too, so a 401 or 403
/// to an allowed origin carries `access-control-allow-origin`. Without it the browser
/// reports an opaque CORS error and the page cannot tell "log in again" from "network
/// down" (istio/istio#29425 is this problem with the opposite filter order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_cors_headers() -> anyhow::Result<()> {
    let scratch = Scratch::new("cors-refusals")?;
    let jwks_file = scratch.file("jwks.json");
    let key = SigningKey::es256()?;
    std::fs::write(&jwks_file, weft_tests::jwt::jwks(&[key.jwk("k")]))?;
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&config(backend.addr(), &jwks_file)).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "refusals with CORS headers", async {
        let origin = ("origin", "https://shop.example");
        let reply = send(addr, Method::GET, "/api/items", &[origin]).await?;
        assert_eq!(reply.code(), 401);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("https://shop.example"),
            "401: {:?}",
            reply.headers
        );
        assert_eq!(reply.header("vary"), Some("origin"), "401");
        // Not allowed by the policy (`only-api`): 403.
        let reply = send(addr, Method::GET, "/private/x", &[origin]).await?;
        assert_eq!(reply.code(), 403);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("https://shop.example"),
            "403: {:?}",
            reply.headers
        );
        anyhow::Ok(())
    })
    .await?
}
