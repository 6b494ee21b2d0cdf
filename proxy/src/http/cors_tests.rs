//! Table tests for CORS preflights and response decoration.

use super::*;

fn policy() -> CorsPolicy {
    CorsPolicy {
        allow_origins: vec![
            OriginMatch::Exact("https://shop.example".into()),
            OriginMatch::Regex(Regex::new(r"^https://[a-z0-9-]+\.shop\.example$").unwrap()),
        ],
        allow_methods: Some(HeaderValue::from_static("GET, POST")),
        allow_headers: Some(HeaderValue::from_static("authorization, content-type")),
        expose_headers: Some(HeaderValue::from_static("x-request-id")),
        max_age: Some(Duration::from_secs(3600)),
        allow_credentials: true,
        ..CorsPolicy::default()
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect()
}

/// Header name-value pairs, sorted, for comparing header maps.
type Pairs = Vec<(String, String)>;

fn pairs(h: &HeaderMap) -> Pairs {
    let mut v: Vec<(String, String)> = h
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn origin_matching() {
    let cases = [
        (OriginMatch::Any, "https://x.example", true),
        (
            OriginMatch::Exact("https://a.example".into()),
            "https://a.example",
            true,
        ),
        (
            OriginMatch::Exact("https://a.example".into()),
            "https://a.example:8443",
            false,
        ),
        (
            OriginMatch::Prefix("https://".into()),
            "http://a.example",
            false,
        ),
        (
            OriginMatch::Suffix(".example".into()),
            "https://a.example",
            true,
        ),
        (
            OriginMatch::Contains("shop".into()),
            "https://shop.example",
            true,
        ),
        (
            OriginMatch::Regex(Regex::new("^https://a+$").unwrap()),
            "https://aaa",
            true,
        ),
        (
            OriginMatch::Regex(Regex::new("^https://a+$").unwrap()),
            "https://ab",
            false,
        ),
    ];
    for (m, origin, want) in cases {
        assert_eq!(m.matches(origin), want, "{m:?} {origin}");
    }
}

#[test]
fn preflights() {
    let p = policy();
    let full = [
        ("access-control-allow-origin", "https://app.shop.example"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET, POST"),
        (
            "access-control-allow-headers",
            "authorization, content-type",
        ),
        ("access-control-max-age", "3600"),
        ("vary", "origin"),
    ];
    let preflight_from = |origin: &'static str| {
        headers(&[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ])
    };
    // (name, policy, method, request headers, expected answer headers or None)
    let mut strict = policy();
    strict.forward_not_matching_preflights = false;
    type Case<'a> = (&'a str, &'a CorsPolicy, Method, HeaderMap, Option<Pairs>);
    let cases: Vec<Case<'_>> = vec![
        (
            "allowed",
            &p,
            Method::OPTIONS,
            preflight_from("https://app.shop.example"),
            Some(owned(&full)),
        ),
        (
            "not allowed: forwarded",
            &p,
            Method::OPTIONS,
            preflight_from("https://evil.example"),
            None,
        ),
        (
            "not allowed, not forwarded",
            &strict,
            Method::OPTIONS,
            preflight_from("https://evil.example"),
            Some(vec![]),
        ),
        (
            "not OPTIONS",
            &p,
            Method::POST,
            preflight_from("https://shop.example"),
            None,
        ),
        (
            "no origin",
            &p,
            Method::OPTIONS,
            headers(&[("access-control-request-method", "POST")]),
            None,
        ),
        (
            "empty origin",
            &p,
            Method::OPTIONS,
            headers(&[("origin", ""), ("access-control-request-method", "POST")]),
            None,
        ),
        (
            "plain OPTIONS",
            &p,
            Method::OPTIONS,
            headers(&[("origin", "https://shop.example")]),
            None,
        ),
    ];
    for (name, policy, method, req, want) in cases {
        let got = preflight(policy, &req, &method);
        if let Some(resp) = &got {
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
        }
        assert_eq!(got.map(|r| pairs(r.headers())), want, "{name}");
    }
}

#[test]
fn preflight_variants() {
    let req = headers(&[
        ("origin", "https://any.example"),
        ("access-control-request-method", "PATCH"),
        ("access-control-request-headers", "x-a, x-b"),
        ("access-control-request-private-network", "true"),
    ]);
    let open = CorsPolicy {
        allow_origins: vec![OriginMatch::Any],
        allow_methods: Some(HeaderValue::from_static("*")),
        allow_headers: Some(HeaderValue::from_static("*")),
        allow_private_network: true,
        ..CorsPolicy::default()
    };
    let resp = preflight(&open, &req, &Method::OPTIONS).unwrap();
    assert_eq!(
        pairs(resp.headers()),
        owned(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "PATCH"),
            ("access-control-allow-headers", "x-a, x-b"),
            ("access-control-allow-private-network", "true"),
        ])
    );
    // Any origin with credentials: the origin is echoed, never `*`.
    let with_credentials = CorsPolicy {
        allow_credentials: true,
        allow_methods: None,
        allow_headers: None,
        allow_private_network: false,
        ..open
    };
    let resp = preflight(&with_credentials, &req, &Method::OPTIONS).unwrap();
    assert_eq!(
        pairs(resp.headers()),
        owned(&[
            ("access-control-allow-origin", "https://any.example"),
            ("access-control-allow-credentials", "true"),
            ("vary", "origin"),
        ])
    );
}

#[test]
fn actual_requests() {
    let p = policy();
    let open = CorsPolicy {
        allow_origins: vec![OriginMatch::Any],
        ..CorsPolicy::default()
    };
    let decorated = [
        ("access-control-allow-origin", "https://shop.example"),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "x-request-id"),
        ("content-type", "text/plain"),
        ("vary", "accept-encoding"),
        ("vary", "origin"),
    ];
    let upstream = || headers(&[("content-type", "text/plain"), ("vary", "accept-encoding")]);
    // (name, policy, origin, expected response headers)
    type Case<'a> = (
        &'a str,
        &'a CorsPolicy,
        Option<&'static str>,
        Vec<(&'a str, &'a str)>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "allowed",
            &p,
            Some("https://shop.example"),
            decorated.to_vec(),
        ),
        (
            "not allowed",
            &p,
            Some("https://evil.example"),
            vec![("content-type", "text/plain"), ("vary", "accept-encoding")],
        ),
        (
            "no origin",
            &p,
            None,
            vec![("content-type", "text/plain"), ("vary", "accept-encoding")],
        ),
        (
            "any origin",
            &open,
            Some("https://x.example"),
            vec![
                ("access-control-allow-origin", "*"),
                ("content-type", "text/plain"),
                ("vary", "accept-encoding"),
            ],
        ),
    ];
    for (name, policy, origin, want) in cases {
        let mut resp = upstream();
        let origin = origin.map(HeaderValue::from_static);
        decorate(policy, origin.as_ref(), &mut resp);
        assert_eq!(pairs(&resp), owned(&want), "{name}");
    }
}

#[test]
fn decorate_replaces_upstream_cors_headers_and_keeps_vary_once() {
    let mut resp = headers(&[
        ("access-control-allow-origin", "*"),
        ("vary", "Accept-Encoding, Origin"),
    ]);
    let origin = HeaderValue::from_static("https://shop.example");
    decorate(&policy(), Some(&origin), &mut resp);
    assert_eq!(resp["access-control-allow-origin"], "https://shop.example");
    assert_eq!(resp.get_all(VARY).iter().count(), 1);
}
