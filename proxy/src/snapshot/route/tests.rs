//! Table tests for routing decisions.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::*;
use crate::snapshot::translate::parse_regex;

// ---- helpers ----

fn vhost(name: &str, domains: &[&str]) -> VirtualHost {
    VirtualHost {
        name: Arc::from(name),
        domains: domains
            .iter()
            .map(|d| Domain::parse(d).unwrap_or_else(|| panic!("bad domain {d}")))
            .collect(),
        routes: Vec::new(),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

fn matcher(path: PathMatch) -> RouteMatch {
    RouteMatch {
        path,
        case_sensitive: true,
        headers: Vec::new(),
        query: Vec::new(),
    }
}

fn exact(p: &str) -> RouteMatch {
    matcher(PathMatch::Exact(p.to_owned()))
}

fn prefix(p: &str) -> RouteMatch {
    matcher(PathMatch::Prefix(p.to_owned()))
}

fn template(t: &str) -> RouteMatch {
    matcher(PathMatch::Template(Template::parse(t).unwrap()))
}

fn regex(r: &str) -> RouteMatch {
    matcher(PathMatch::Regex(parse_regex(r).unwrap()))
}

/// `m`, ignoring case (translate lowercases the pattern, as here).
fn ignoring_case(m: RouteMatch) -> RouteMatch {
    RouteMatch {
        case_sensitive: false,
        ..m
    }
}

/// A catch-all route with one header condition.
fn with_header(h: HeaderCondition) -> RouteMatch {
    RouteMatch {
        headers: vec![h],
        ..prefix("/")
    }
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// Runs `m` against a request; `target` is the path with an optional `?query`.
fn check(
    m: &RouteMatch,
    method: &str,
    host: &str,
    target: &str,
    headers: &HeaderMap,
) -> Result<(), Mismatch> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let view = RequestView {
        method: &method,
        host,
        path,
        query,
        scheme: "http",
        headers,
    };
    m.check(&view)
}

fn matches(pattern: StringMatch) -> ValueCondition {
    ValueCondition::Matches {
        pattern,
        ignore_case: false,
    }
}

fn header(name: &str, condition: ValueCondition) -> HeaderCondition {
    HeaderCondition {
        name: name.to_owned(),
        condition,
        invert: false,
        missing_as_empty: false,
    }
}

/// Header `name` equals `value`.
fn header_is(name: &str, value: &str) -> HeaderCondition {
    header(name, matches(StringMatch::Exact(value.to_owned())))
}

/// Header `name` is present (`true`) or absent (`false`).
fn header_present(name: &str, present: bool) -> HeaderCondition {
    header(name, ValueCondition::Present(present))
}

fn inverted(h: HeaderCondition) -> HeaderCondition {
    HeaderCondition { invert: true, ..h }
}

fn query(name: &str, condition: ValueCondition) -> QueryCondition {
    QueryCondition {
        name: name.to_owned(),
        condition,
    }
}

fn query_is(name: &str, value: &str) -> QueryCondition {
    query(name, matches(StringMatch::Exact(value.to_owned())))
}

fn backends(weights: &[u32]) -> Backends {
    Backends {
        targets: weights
            .iter()
            .enumerate()
            .map(|(i, w)| Backend {
                cluster: i,
                name: Arc::from(format!("c{i}").as_str()),
                weight: *w,
            })
            .collect(),
        total_weight: weights.iter().map(|w| u64::from(*w)).sum(),
    }
}

// ---- domains and virtual hosts ----

#[test]
fn domain_parse_table() {
    use Domain::*;
    let cases: &[(&str, Option<Domain>)] = &[
        ("*", Some(Any)),
        ("example.com", Some(Exact("example.com".into()))),
        ("Example.COM", Some(Exact("example.com".into()))),
        ("example.com:8080", Some(Exact("example.com:8080".into()))),
        ("[::1]", Some(Exact("[::1]".into()))),
        ("*.example.com", Some(Suffix(".example.com".into()))),
        ("*-bar.example.com", Some(Suffix("-bar.example.com".into()))),
        ("*.Example.com", Some(Suffix(".example.com".into()))),
        ("api.*", Some(Prefix("api.".into()))),
        ("API-*", Some(Prefix("api-".into()))),
        ("", None),
        ("**", None),
        ("*.*", None),
        ("a.*.com", None),
        ("*.example.*", None),
        ("ex*ample.com", None),
    ];
    for (input, want) in cases {
        assert_eq!(Domain::parse(input), *want, "Domain::parse({input:?})");
    }
}

#[test]
fn select_vhost_table() {
    let vhosts = vec![
        vhost("any", &["*"]),
        vhost("prefix-api", &["api.*"]),
        vhost("prefix-api-long", &["api.example.*"]),
        vhost("suffix", &["*.example.com"]),
        vhost("suffix-long", &["*.shop.example.com"]),
        vhost("exact", &["www.example.com"]),
        vhost("exact-port", &["www.example.com:8443"]),
        vhost("v6", &["[::1]"]),
        vhost("v6-port", &["[2001:db8::1]:8080"]),
        vhost("ip", &["10.0.0.1"]),
    ];
    let cases: &[(&str, &str)] = &[
        // exact beats every wildcard
        ("www.example.com", "exact"),
        ("WWW.Example.Com", "exact"),
        // suffix wildcard beats prefix wildcard and `*`
        ("api.example.com", "suffix"),
        ("cart.example.com", "suffix"),
        // longest suffix wins
        ("cart.shop.example.com", "suffix-long"),
        // a suffix wildcard needs at least one more character
        ("example.com", "any"),
        // prefix wildcard beats `*`; longest prefix wins
        ("api.internal", "prefix-api"),
        ("api.example.org", "prefix-api-long"),
        // `*` takes the rest
        ("other.org", "any"),
        ("", "any"),
        // with a port: tried with the port, then without
        ("www.example.com:8080", "exact"),
        ("www.example.com:8443", "exact-port"),
        ("cart.example.com:8080", "suffix"),
        ("api.internal:80", "prefix-api"),
        ("other.org:80", "any"),
        // IP literals
        ("10.0.0.1", "ip"),
        ("10.0.0.1:8080", "ip"),
        ("[::1]", "v6"),
        ("[::1]:8080", "v6"),
        ("[2001:db8::1]:8080", "v6-port"),
        ("[2001:db8::1]:9090", "any"),
        ("[2001:db8::1]", "any"),
    ];
    for (host, want) in cases {
        let got = select_vhost(&vhosts, host).map(|v| &*v.name);
        assert_eq!(got, Some(*want), "Host {host:?}");
    }
}

#[test]
fn select_vhost_without_catch_all() {
    let vhosts = vec![vhost("a", &["a.example.com"]), vhost("b", &["*.b.com"])];
    let cases: &[(&str, Option<&str>)] = &[
        ("a.example.com", Some("a")),
        ("a.example.com:80", Some("a")),
        ("x.b.com", Some("b")),
        ("b.com", None),
        ("nope.org", None),
        ("", None),
    ];
    for (host, want) in cases {
        let got = select_vhost(&vhosts, host).map(|v| &*v.name);
        assert_eq!(got, *want, "Host {host:?}");
    }
    assert!(select_vhost(&[], "a.example.com").is_none());
}

#[test]
fn select_vhost_ties_go_to_the_first() {
    let vhosts = vec![vhost("first", &["*"]), vhost("second", &["*"])];
    assert_eq!(&*select_vhost(&vhosts, "x").unwrap().name, "first");
}

#[test]
fn strip_port_table() {
    let cases: &[(&str, &str)] = &[
        ("example.com", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com:", "example.com"),
        ("example.com:http", "example.com:http"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("[::1]", "[::1]"),
        ("[::1]:80", "[::1]"),
        ("[2001:db8::1]:8443", "[2001:db8::1]"),
        // a bare IPv6 literal has no port to strip
        ("::1", "::1"),
        ("2001:db8::1", "2001:db8::1"),
        // unterminated bracket: left alone
        ("[::1", "[::1"),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(strip_port(input), *want, "strip_port({input:?})");
    }
}

// ---- route matching ----

#[test]
fn path_match_table() {
    use Mismatch::{Connect, Path};
    /// (what, matcher, method, target, result)
    type Case = (
        &'static str,
        RouteMatch,
        &'static str,
        &'static str,
        Result<(), Mismatch>,
    );
    let products = "/products/{productId}";
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("exact", exact("/a"), "GET", "/a", Ok(())),
        ("exact ignores the query", exact("/a"), "GET", "/a?x=1", Ok(())),
        ("exact, trailing slash", exact("/a"), "GET", "/a/", Err(Path)),
        ("exact, longer", exact("/a"), "GET", "/ab", Err(Path)),
        ("exact, other case", exact("/a"), "GET", "/A", Err(Path)),
        ("exact ignoring case", ignoring_case(exact("/cart")), "GET", "/CaRt", Ok(())),
        ("exact ignoring case, longer", ignoring_case(exact("/cart")), "GET", "/carts", Err(Path)),
        ("prefix", prefix("/users/"), "GET", "/users/7", Ok(())),
        ("prefix, equal", prefix("/users/"), "GET", "/users/", Ok(())),
        ("prefix, shorter", prefix("/users/"), "GET", "/users", Err(Path)),
        ("prefix, other case", prefix("/users/"), "GET", "/Users/7", Err(Path)),
        ("prefix ignoring case", ignoring_case(prefix("/users/")), "GET", "/USERS/7", Ok(())),
        ("prefix /", prefix("/"), "POST", "/anything", Ok(())),
        ("template", template(products), "GET", "/products/42", Ok(())),
        ("template ignores the query", template(products), "GET", "/products/42?a=b", Ok(())),
        ("template, empty segment", template(products), "GET", "/products/", Err(Path)),
        ("template, too deep", template(products), "GET", "/products/4/2", Err(Path)),
        ("template rest", template("/static/{rest=**}"), "GET", "/static/a/b.css", Ok(())),
        // a regex must match the whole path
        ("regex", regex("/v[0-9]+/.*"), "GET", "/v1/items", Ok(())),
        ("regex anchored at the start", regex("/v[0-9]+/.*"), "GET", "/api/v1/x", Err(Path)),
        ("regex anchored at the end", regex("/v[0-9]+"), "GET", "/v1/items", Err(Path)),
        ("regex alternation, anchored", regex("/a|/b"), "GET", "/a/b", Err(Path)),
        ("regex alternation", regex("/a|/b"), "GET", "/b", Ok(())),
        ("regex ignores the query", regex("/q"), "GET", "/q?x=1", Ok(())),
        // CONNECT requests match CONNECT routes only, and the other way round
        ("connect", matcher(PathMatch::Connect), "CONNECT", "/", Ok(())),
        ("connect needs CONNECT", matcher(PathMatch::Connect), "GET", "/", Err(Connect)),
        ("prefix refuses CONNECT", prefix("/"), "CONNECT", "/", Err(Connect)),
        ("exact refuses CONNECT", exact("/"), "CONNECT", "/", Err(Connect)),
        ("regex refuses CONNECT", regex(".*"), "CONNECT", "/", Err(Connect)),
    ];
    let none = HeaderMap::new();
    for (what, m, method, target, want) in &cases {
        let got = check(m, method, "example.com", target, &none);
        assert_eq!(got, *want, "{what}: {method} {target}");
    }
}

#[test]
fn header_condition_table() {
    /// (what, condition, method, host, headers, whether it holds)
    type Case = (
        &'static str,
        HeaderCondition,
        &'static str,
        &'static str,
        Headers,
        bool,
    );
    type Headers = &'static [(&'static str, &'static str)];
    let value = |name: &str, pattern: StringMatch| header(name, matches(pattern));
    let digits = || StringMatch::Regex(parse_regex("[0-9]+").unwrap());
    let get_or_head = || StringMatch::Regex(parse_regex("GET|HEAD").unwrap());
    let true_any_case = ValueCondition::Matches {
        pattern: StringMatch::Exact("true".into()),
        ignore_case: true,
    };
    let shop = "shop.example.com";
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // pseudo-headers
        ("method", header_is(":method", "GET"), "GET", "h", &[], true),
        ("method, other", header_is(":method", "GET"), "POST", "h", &[], false),
        ("method list", value(":method", get_or_head()), "HEAD", "h", &[], true),
        ("method inverted", inverted(header_is(":method", "GET")), "POST", "h", &[], true),
        ("authority", header_is(":authority", "a.com:8080"), "GET", "a.com:8080", &[], true),
        ("authority, other", header_is(":authority", shop), "GET", "evil.com", &[], false),
        (
            "authority suffix",
            value(":authority", StringMatch::Suffix(".example.com".into())),
            "GET",
            shop,
            &[],
            true,
        ),
        ("scheme", header_is(":scheme", "http"), "GET", "h", &[], true),
        ("path", header_is(":path", "/"), "GET", "h", &[], true),
        // plain headers
        ("exact", header_is("x-canary", "true"), "GET", "h", &[("x-canary", "true")], true),
        ("exact, other", header_is("x-canary", "true"), "GET", "h", &[("x-canary", "no")], false),
        ("exact, absent", header_is("x-canary", "true"), "GET", "h", &[], false),
        ("exact, case", header_is("x-canary", "true"), "GET", "h", &[("x-canary", "TRUE")], false),
        ("ignoring case", header("x-canary", true_any_case), "GET", "h", &[("x-canary", "TrUe")], true),
        (
            "prefix",
            value("x-user", StringMatch::Prefix("vip-".into())),
            "GET",
            "h",
            &[("x-user", "vip-7")],
            true,
        ),
        (
            "suffix",
            value("x-user", StringMatch::Suffix("-7".into())),
            "GET",
            "h",
            &[("x-user", "vip-8")],
            false,
        ),
        (
            "contains",
            value("user-agent", StringMatch::Contains("curl".into())),
            "GET",
            "h",
            &[("user-agent", "curl/8.0")],
            true,
        ),
        ("regex", value("x-id", digits()), "GET", "h", &[("x-id", "12")], true),
        ("regex, whole value", value("x-id", digits()), "GET", "h", &[("x-id", "12a")], false),
        // several values are compared joined by ','
        ("joined", header_is("x-tag", "a,b"), "GET", "h", &[("x-tag", "a"), ("x-tag", "b")], true),
        ("not the first", header_is("x-tag", "a"), "GET", "h", &[("x-tag", "a"), ("x-tag", "b")], false),
        (
            "joined, three",
            header_is("x-tag", "a,b,c"),
            "GET",
            "h",
            &[("x-tag", "a"), ("x-tag", "b"), ("x-tag", "c")],
            true,
        ),
        // present / absent
        ("present", header_present("x-debug", true), "GET", "h", &[("x-debug", "")], true),
        ("present, missing", header_present("x-debug", true), "GET", "h", &[], false),
        ("absent", header_present("x-debug", false), "GET", "h", &[], true),
        ("absent, there", header_present("x-debug", false), "GET", "h", &[("x-debug", "1")], false),
        // invert
        ("not equal, equal", inverted(header_is("x-c", "true")), "GET", "h", &[("x-c", "true")], false),
        ("not equal, other", inverted(header_is("x-c", "true")), "GET", "h", &[("x-c", "no")], true),
        ("not equal, absent", inverted(header_is("x-c", "true")), "GET", "h", &[], true),
        ("not present, absent", inverted(header_present("x-d", true)), "GET", "h", &[], true),
        ("not present, there", inverted(header_present("x-d", true)), "GET", "h", &[("x-d", "1")], false),
        ("not absent, there", inverted(header_present("x-d", false)), "GET", "h", &[("x-d", "1")], true),
    ];
    for (what, cond, method, host, headers, holds) in cases {
        let name = cond.name.clone();
        let got = check(&with_header(cond), method, host, "/", &header_map(headers));
        let want = if holds {
            Ok(())
        } else {
            Err(Mismatch::Header(name))
        };
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn header_conditions_report_the_first_failure() {
    let m = RouteMatch {
        headers: vec![
            header_is(":method", "GET"),
            header_present("x-a", true),
            header_present("x-b", true),
        ],
        ..prefix("/")
    };
    type Headers = &'static [(&'static str, &'static str)];
    let cases: &[(&str, Headers, Result<(), Mismatch>)] = &[
        ("GET", &[("x-a", "1"), ("x-b", "1")], Ok(())),
        ("GET", &[("x-b", "1")], Err(Mismatch::Header("x-a".into()))),
        ("GET", &[("x-a", "1")], Err(Mismatch::Header("x-b".into()))),
        ("POST", &[], Err(Mismatch::Header(":method".into()))),
    ];
    for (method, headers, want) in cases {
        let got = check(&m, method, "h", "/", &header_map(headers));
        assert_eq!(got, *want, "{method} {headers:?}");
    }
    // The path is checked before any header.
    let got = check(&m, "POST", "h", "x", &HeaderMap::new());
    assert_eq!(got, Err(Mismatch::Path));
}

#[test]
fn header_present_with_non_ascii_value() {
    // A value with bytes outside visible ASCII is still present (Envoy compares bytes).
    let m = with_header(header_present("x-name", true));
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-name",
        HeaderValue::from_bytes("José".as_bytes()).unwrap(),
    );
    assert_eq!(check(&m, "GET", "h", "/", &headers), Ok(()));
}

#[test]
fn path_pseudo_header_includes_the_query() {
    // Envoy's `:path` is the whole request target, query included.
    let m = with_header(header_is(":path", "/search?q=1"));
    let none = HeaderMap::new();
    assert_eq!(check(&m, "GET", "h", "/search?q=1", &none), Ok(()));
}

#[test]
fn query_condition_table() {
    let digits = || matches(StringMatch::Regex(parse_regex("[0-9]+").unwrap()));
    let present = |name: &str, p: bool| query(name, ValueCondition::Present(p));
    // (what, condition, target, whether it holds)
    #[rustfmt::skip]
    let cases: Vec<(&str, QueryCondition, &str, bool)> = vec![
        ("exact", query_is("v", "2"), "/?v=2", true),
        ("exact, other", query_is("v", "2"), "/?v=3", false),
        ("no query", query_is("v", "2"), "/", false),
        ("among others", query_is("v", "2"), "/?a=1&v=2&b=3", true),
        ("the first value counts", query_is("v", "2"), "/?v=1&v=2", false),
        ("percent-decoded", query_is("q", "hello world"), "/?q=hello%20world", true),
        ("'+' is a space", query_is("q", "hello world"), "/?q=hello+world", true),
        ("encoded '+'", query_is("q", "1+1"), "/?q=1%2B1", true),
        ("decoded name", query_is("my key", "v"), "/?my%20key=v", true),
        ("UTF-8", query_is("city", "Zürich"), "/?city=Z%C3%BCrich", true),
        ("prefix", query("u", matches(StringMatch::Prefix("vip-".into()))), "/?u=vip-7", true),
        ("regex", query("id", digits()), "/?id=42", true),
        ("regex, whole value", query("id", digits()), "/?id=42x", false),
        ("present", present("debug", true), "/?debug", true),
        ("present, empty", present("debug", true), "/?debug=", true),
        ("present, missing", present("debug", true), "/?x=1", false),
        ("present, no query", present("debug", true), "/", false),
        ("absent", present("debug", false), "/", true),
        ("absent, there", present("debug", false), "/?debug=1", false),
        ("the name is not a prefix", present("debug", true), "/?debugging=1", false),
    ];
    for (what, cond, target, holds) in cases {
        let name = cond.name.clone();
        let m = RouteMatch {
            query: vec![cond],
            ..prefix("/")
        };
        let got = check(&m, "GET", "h", target, &HeaderMap::new());
        let want = if holds {
            Ok(())
        } else {
            Err(Mismatch::Query(name))
        };
        assert_eq!(got, want, "{what}: {target}");
    }
}

#[test]
fn query_param_table() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("a=1&b=2", "a", Some("1")),
        ("a=1&b=2", "b", Some("2")),
        ("a=1&b=2", "c", None),
        ("a=1&a=2", "a", Some("1")),
        ("flag", "flag", Some("")),
        ("flag&x=1", "flag", Some("")),
        ("a=", "a", Some("")),
        ("a=x=y", "a", Some("x=y")),
        ("q=a+b", "q", Some("a b")),
        ("q=a%20b", "q", Some("a b")),
        ("q=a%2Bb", "q", Some("a+b")),
        ("q=%26%3D", "q", Some("&=")),
        ("a%5B%5D=1", "a[]", Some("1")),
        ("first+name=Ann", "first name", Some("Ann")),
        // an invalid escape is kept as written
        ("q=%zz", "q", Some("%zz")),
        ("", "a", None),
    ];
    for (query, name, want) in cases {
        assert_eq!(
            query_param(query, name).as_deref(),
            *want,
            "query_param({query:?}, {name:?})"
        );
    }
}

#[test]
fn select_route_takes_the_first_match() {
    let route = |id: usize, name: &str, m: RouteMatch| Route {
        id,
        name: Arc::from(name),
        matcher: m,
        action: Action::Respond(Respond {
            status: http::StatusCode::OK,
            body: bytes::Bytes::new(),
        }),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        rate_limit: None,
        fault: None,
        jwt: None,
        cors: None,
    };
    let mut vh = vhost("v", &["*"]);
    vh.routes = vec![
        route(0, "exact", exact("/a")),
        route(1, "prefix-a", prefix("/a")),
        route(2, "all", prefix("/")),
    ];
    let cases: &[(&str, Option<&str>)] = &[
        ("/a", Some("exact")),
        ("/ab", Some("prefix-a")),
        ("/b", Some("all")),
        ("b", None),
    ];
    let method = Method::GET;
    let headers = HeaderMap::new();
    for (path, want) in cases {
        let view = RequestView {
            method: &method,
            host: "h",
            path,
            query: None,
            scheme: "http",
            headers: &headers,
        };
        let got = select_route(&vh, &view).map(|r| &*r.name);
        assert_eq!(got, *want, "{path}");
    }
}

// ---- backends and header changes ----

#[test]
fn pick_with_boundaries() {
    let cases: &[(&[u32], u64, usize)] = &[
        (&[1], 0, 0),
        (&[90, 10], 0, 0),
        (&[90, 10], 89, 0),
        (&[90, 10], 90, 1),
        (&[90, 10], 99, 1),
        (&[1, 1, 1], 0, 0),
        (&[1, 1, 1], 1, 1),
        (&[1, 1, 1], 2, 2),
        (&[3, 0, 2], 2, 0),
        (&[3, 0, 2], 3, 2),
        (&[u32::MAX, u32::MAX], u64::from(u32::MAX) - 1, 0),
        (&[u32::MAX, u32::MAX], u64::from(u32::MAX), 1),
        // out of range: the last target
        (&[90, 10], 100, 1),
        (&[90, 10], u64::MAX, 1),
    ];
    for (weights, r, want) in cases {
        let b = backends(weights);
        assert_eq!(
            b.pick_with(*r).cluster,
            *want,
            "weights {weights:?}, r = {r}"
        );
    }
}

#[test]
fn pick_single_target() {
    let b = backends(&[5]);
    for _ in 0..10 {
        assert_eq!(b.pick().cluster, 0);
    }
}

#[test]
fn header_ops_apply_table() {
    use AppendAction::*;
    type Headers = &'static [(&'static str, &'static str)];
    /// (what, names to remove, headers to add, headers before, headers after)
    type Case = (
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, &'static str, AppendAction)],
        Headers,
        Headers,
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("append to existing", &[], &[("x", "v", Append)], &[("x", "1")], &[("x", "1"), ("x", "v")]),
        ("append when absent", &[], &[("x", "v", Append)], &[], &[("x", "v")]),
        ("add-if-absent, existing", &[], &[("x", "v", AddIfAbsent)], &[("x", "1")], &[("x", "1")]),
        ("add-if-absent, absent", &[], &[("x", "v", AddIfAbsent)], &[("y", "1")], &[("y", "1"), ("x", "v")]),
        ("overwrite replaces all values", &[], &[("x", "v", Overwrite)], &[("x", "1"), ("x", "2")], &[("x", "v")]),
        ("overwrite when absent", &[], &[("x", "v", Overwrite)], &[], &[("x", "v")]),
        ("overwrite-if-exists, existing", &[], &[("x", "v", OverwriteIfExists)], &[("x", "1"), ("x", "2")], &[("x", "v")]),
        ("overwrite-if-exists, absent", &[], &[("x", "v", OverwriteIfExists)], &[("y", "1")], &[("y", "1")]),
        ("remove", &["x"], &[], &[("x", "1"), ("x", "2"), ("y", "1")], &[("y", "1")]),
        ("remove, absent", &["x"], &[], &[("y", "1")], &[("y", "1")]),
        ("remove before add", &["x"], &[("x", "v", Append)], &[("x", "1")], &[("x", "v")]),
        ("remove, then overwrite-if-exists", &["x"], &[("x", "v", OverwriteIfExists)], &[("x", "1")], &[]),
        ("adds in order", &[], &[("x", "a", Overwrite), ("x", "b", Append)], &[("x", "1")], &[("x", "a"), ("x", "b")]),
        ("add-if-absent sees an earlier add", &[], &[("x", "a", Append), ("x", "b", AddIfAbsent)], &[], &[("x", "a")]),
        ("nothing", &[], &[], &[("x", "1")], &[("x", "1")]),
    ];
    for (what, remove, add, before, after) in cases {
        let ops = HeaderOps {
            remove: remove.iter().map(|n| HeaderName::from_static(n)).collect(),
            add: add
                .iter()
                .map(|(n, v, a)| (HeaderName::from_static(n), HeaderValue::from_static(v), *a))
                .collect(),
        };
        assert_eq!(
            ops.is_empty(),
            remove.is_empty() && add.is_empty(),
            "{what}"
        );
        let mut headers = header_map(before);
        ops.apply(&mut headers);
        // Order between names is not meaningful; the order of one name's values is.
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let got = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let want = after
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(sorted(got), sorted(want), "{what}");
    }
}

#[test]
fn allows_upgrade_ignores_case() {
    let f = Forward {
        backends: backends(&[1]),
        prefix_rewrite: None,
        host_rewrite: None,
        timeout: None,
        hash_header: None,
        upgrades: vec!["websocket".into()],
        connect_terminate: false,
        retry: None,
        grpc_timeout: Default::default(),
    };
    let cases: &[(&str, bool)] = &[("websocket", true), ("WebSocket", true), ("h2c", false)];
    for (proto, want) in cases {
        assert_eq!(f.allows_upgrade(proto), *want, "{proto}");
    }
}

#[test]
fn missing_header_as_empty() {
    let cond = HeaderCondition {
        missing_as_empty: true,
        ..header_is("x-a", "")
    };
    let headers = HeaderMap::new();
    let method = Method::GET;
    let req = RequestView {
        method: &method,
        host: "h",
        path: "/",
        query: None,
        scheme: "http",
        headers: &headers,
    };
    assert!(cond.check(&req), "a missing header compares as empty");
    let strict = header_is("x-a", "");
    assert!(
        !strict.check(&req),
        "without the flag a missing header fails"
    );
}
