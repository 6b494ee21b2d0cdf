//! Route matching end to end: every match kind, routes tried in order, virtual hosts by
//! `Host` / `:authority`, over HTTP/1.1 and HTTP/2 clients.
//!
//! Routes answer directly with a body naming themselves, so each case checks exactly
//! which route took the request (or that none did: 404 `no-route`).

use http::Method;
use weft_tests::{TestProxy, client, within};

use crate::{ERROR_HEADER, LIMIT, both_clients};

/// One route per match kind, in an order where the earlier ones shadow later ones.
const CONFIG: &str = r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    virtual_hosts:
      - name: shop
        domains: ["shop.example"]
        routes:
          - match: { prefix: /vh }
            respond: { status: 200, body: "vhost shop" }
      - name: wild
        domains: ["*.wild.example"]
        routes:
          - match: { prefix: /vh }
            respond: { status: 200, body: "vhost wild" }
      - name: api-prefix
        domains: ["api.*"]
        routes:
          - match: { prefix: /vh }
            respond: { status: 200, body: "vhost api-prefix" }
      - name: api-port
        domains: ["api.example:8443"]
        routes:
          - match: { prefix: /vh }
            respond: { status: 200, body: "vhost api-port" }
      - name: default
        domains: ["*"]
        routes:
          - name: exact
            match: { path: /exact }
            respond: { status: 200, body: "exact" }
          - name: template
            match: { path: "/products/{productId}" }
            respond: { status: 200, body: "template" }
          - name: template-deep
            match: { path: "/shops/{shop}/items/{item}" }
            respond: { status: 200, body: "template-deep" }
          - name: regex
            match: { regex: "/items/[0-9]+" }
            respond: { status: 200, body: "regex" }
          - name: post-only
            match: { path: /method, method: POST }
            respond: { status: 200, body: "post-only" }
          - name: get-or-put
            match: { path: /method, method: [GET, PUT] }
            respond: { status: 200, body: "get-or-put" }
          - name: hdr-exact
            match: { prefix: /hdr, headers: { x-env: canary } }
            respond: { status: 200, body: "hdr-exact" }
          - name: hdr-regex
            match: { prefix: /hdr, headers: { x-user: { regex: "vip-[0-9]+" } } }
            respond: { status: 200, body: "hdr-regex" }
          - name: hdr-absent
            match: { prefix: /hdr, headers: { x-block: { present: false } } }
            respond: { status: 200, body: "hdr-absent" }
          - name: hdr-not
            match: { prefix: /hdr, headers: { x-env: { exact: prod, not: true } } }
            respond: { status: 200, body: "hdr-not" }
          - name: hdr-present
            match: { prefix: /hdr, headers: { x-block: { present: true } } }
            respond: { status: 200, body: "hdr-present" }
          - name: hdr-rules
            match:
              prefix: /rules
              headers:
                x-a: { prefix: "pre-" }
                x-b: { suffix: "-suf" }
                x-c: { contains: "mid" }
            respond: { status: 200, body: "hdr-rules" }
          - name: query-exact
            match: { prefix: /q, query: { version: "2" } }
            respond: { status: 200, body: "query-exact" }
          - name: query-present
            match: { prefix: /q, query: { debug: { present: true } } }
            respond: { status: 200, body: "query-present" }
          - name: query-regex
            match: { prefix: /q, query: { id: { regex: "[a-f]{3}" } } }
            respond: { status: 200, body: "query-regex" }
          - name: order-first
            match: { prefix: /order/special }
            respond: { status: 200, body: "order-first" }
          - name: order-second
            match: { prefix: /order }
            respond: { status: 200, body: "order-second" }
          - name: order-shadowed
            match: { prefix: /order/special/never }
            respond: { status: 200, body: "order-shadowed" }
          - name: prefix
            match: { prefix: /pre/ }
            respond: { status: 200, body: "prefix" }
          - name: default-vh
            match: { prefix: /vh }
            respond: { status: 200, body: "vhost default" }
"#;

/// A request and the route body expected (`None`: no route, 404).
struct Case {
    method: Method,
    /// Absolute URL with any host (the client dials the proxy whatever it says) or a path
    /// (sent to the proxy's own address).
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: Option<&'static str>,
}

fn get(target: &'static str, want: Option<&'static str>) -> Case {
    Case {
        method: Method::GET,
        target,
        headers: &[],
        want,
    }
}

fn with(
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: Option<&'static str>,
) -> Case {
    Case {
        method: Method::GET,
        target,
        headers,
        want,
    }
}

fn method(method: Method, target: &'static str, want: Option<&'static str>) -> Case {
    Case {
        method,
        target,
        headers: &[],
        want,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // exact path
        get("/exact", Some("exact")),
        get("/exact?with=query", Some("exact")),
        get("/exact/more", None),
        get("/exactly", None),
        // templates with parameters
        get("/products/42", Some("template")),
        get("/products/abc-9?color=red", Some("template")),
        get("/products/42/reviews", None),
        get("/shops/7/items/99", Some("template-deep")),
        get("/shops/7/items", None),
        // regex: the whole path (not the query) must match
        get("/items/123", Some("regex")),
        get("/items/123?x=abc", Some("regex")),
        get("/items/123abc", None),
        get("/items/abc", None),
        // methods: one, or a list
        method(Method::POST, "/method", Some("post-only")),
        method(Method::GET, "/method", Some("get-or-put")),
        method(Method::PUT, "/method", Some("get-or-put")),
        method(Method::DELETE, "/method", None),
        // headers: exact, regex, absent, inverted, present
        with("/hdr", &[("x-env", "canary")], Some("hdr-exact")),
        with("/hdr", &[("X-Env", "canary")], Some("hdr-exact")),
        with("/hdr", &[("x-user", "vip-7")], Some("hdr-regex")),
        with("/hdr", &[("x-user", "vip-7x")], Some("hdr-absent")),
        with("/hdr", &[], Some("hdr-absent")),
        with(
            "/hdr",
            &[("x-block", "1"), ("x-env", "staging")],
            Some("hdr-not"),
        ),
        with(
            "/hdr",
            &[("x-block", "1"), ("x-env", "prod")],
            Some("hdr-present"),
        ),
        with(
            "/hdr",
            &[("x-block", ""), ("x-env", "prod")],
            Some("hdr-present"),
        ),
        with(
            "/rules",
            &[("x-a", "pre-1"), ("x-b", "1-suf"), ("x-c", "amidst")],
            Some("hdr-rules"),
        ),
        with(
            "/rules",
            &[("x-a", "1-pre"), ("x-b", "1-suf"), ("x-c", "amidst")],
            None,
        ),
        with(
            "/rules",
            &[("x-a", "pre-1"), ("x-b", "1-suf-no"), ("x-c", "amidst")],
            None,
        ),
        with("/rules", &[("x-a", "pre-1"), ("x-b", "1-suf")], None),
        // query parameters (percent-decoded)
        get("/q?version=2", Some("query-exact")),
        get("/q?a=1&version=2", Some("query-exact")),
        get("/q?version=%32", Some("query-exact")),
        get("/q?version=3&debug", Some("query-present")),
        get("/q?id=abc", Some("query-regex")),
        get("/q?id=abcd", None),
        get("/q?version=3", None),
        get("/q", None),
        // first match wins
        get("/order/special/x", Some("order-first")),
        get("/order/special/never", Some("order-first")),
        get("/order/other", Some("order-second")),
        // prefix
        get("/pre/anything/deeper", Some("prefix")),
        get("/pre", None),
        // virtual hosts by Host / :authority
        get("http://shop.example/vh", Some("vhost shop")),
        get("http://SHOP.Example/vh", Some("vhost shop")),
        get("http://shop.example:8080/vh", Some("vhost shop")),
        get("http://a.wild.example/vh", Some("vhost wild")),
        get("http://deep.a.wild.example/vh", Some("vhost wild")),
        get("http://wild.example/vh", Some("vhost default")),
        get("http://api.example:8443/vh", Some("vhost api-port")),
        get("http://api.example:9000/vh", Some("vhost api-prefix")),
        get("http://api.other/vh", Some("vhost api-prefix")),
        get("http://elsewhere.example/vh", Some("vhost default")),
        // a virtual host without a matching route is still no route
        get("http://shop.example/exact", None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_match_kind_over_http1_and_http2() -> anyhow::Result<()> {
    let proxy = TestProxy::start(CONFIG).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "routing table", async {
        let mut failures = Vec::new();
        for client in both_clients() {
            let client = client.via(addr);
            for case in cases() {
                let url = if case.target.starts_with('/') {
                    format!("http://{addr}{}", case.target)
                } else {
                    case.target.to_owned()
                };
                let reply = client
                    .send(case.method.clone(), &url, case.headers, client::empty())
                    .await?;
                let got = match reply.code() {
                    200 => Some(reply.text()),
                    404 if reply.header(ERROR_HEADER) == Some("no-route") => None,
                    other => Some(format!("unexpected {other}: {}", reply.text())),
                };
                if got.as_deref() != case.want {
                    failures.push(format!(
                        "{:?} {} {} {:?}: want {:?}, got {:?}",
                        client.version(),
                        case.method,
                        case.target,
                        case.headers,
                        case.want,
                        got
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} routing mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
        anyhow::Ok(())
    })
    .await?
}
