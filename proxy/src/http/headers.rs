//! Header and path rewriting on the way through: pure functions over header maps and
//! strings, tested by tables.
//!
//! - Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection and are removed
//!   in both directions, including every header the `Connection` header names.
//! - `x-forwarded-for` gets the client's address appended, `x-forwarded-proto` is set to
//!   the scheme the client used, and `x-request-id` is kept if sane or generated.
//! - Prefix rewrites and redirect locations.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::snapshot::route::{PathMatch, PathRedirect, Redirect};

/// `x-forwarded-for`
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Envoy's header telling an app which client certificate the proxy verified.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// `x-request-id`
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

// `Trailer` is not here: it names end-to-end trailer fields (RFC 9110 section 6.6.2).
static HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const CONNECTION_BIT: u8 = 1 << 0;
const UPGRADE_BIT: u8 = 1 << 4;
const TE_BIT: u8 = 1 << 5;
const FORWARDED_FOR_BIT: u8 = 1 << 6;
const REQUEST_ID_BIT: u8 = 1 << 7;

/// Which hop-by-hop headers a message carries, and whether it has `x-forwarded-for` and
/// `x-request-id`, found in one pass over its header names: most messages carry none of
/// them (or only `Connection`), so what follows touches only what is there instead of
/// looking every name up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopByHop(u8);

impl HopByHop {
    /// Scans `headers`.
    pub fn scan(headers: &HeaderMap) -> Self {
        let mut bits = 0u8;
        for name in headers.keys() {
            for (i, h) in HOP_BY_HOP.iter().enumerate() {
                if name == h {
                    bits |= 1 << i;
                }
            }
            if name == header::TE {
                bits |= TE_BIT;
            } else if name == X_FORWARDED_FOR {
                bits |= FORWARDED_FOR_BIT;
            } else if name == X_REQUEST_ID {
                bits |= REQUEST_ID_BIT;
            }
        }
        Self(bits)
    }

    /// Whether `x-forwarded-for` was there.
    pub fn has_forwarded_for(&self) -> bool {
        self.0 & FORWARDED_FOR_BIT != 0
    }

    /// Whether `x-request-id` was there.
    pub fn has_request_id(&self) -> bool {
        self.0 & REQUEST_ID_BIT != 0
    }

    /// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` plus
    /// `Upgrade: <proto>`), if any.
    pub fn upgrade<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        if self.0 & (CONNECTION_BIT | UPGRADE_BIT) != CONNECTION_BIT | UPGRADE_BIT {
            return None;
        }
        let asks = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        if asks {
            headers.get(header::UPGRADE)
        } else {
            None
        }
    }
}

/// Removes hop-by-hop headers. `te: trailers` survives (gRPC needs it end to end); when
/// `upgrade` is given, `Upgrade` is kept and `Connection: upgrade` re-added so that the
/// upstream sees the upgrade request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    let found = HopByHop::scan(headers);
    strip_scanned(headers, found, upgrade);
}

/// [`strip_hop_by_hop`] with the scan already done.
pub fn strip_scanned(headers: &mut HeaderMap, found: HopByHop, upgrade: Option<&HeaderValue>) {
    let bits = found.0;
    if bits & CONNECTION_BIT != 0 && names_others(headers) {
        // Headers the Connection header names are hop-by-hop too; the usual tokens
        // (keep-alive, close, upgrade) name nothing else worth a lookup.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    && !t.eq_ignore_ascii_case(b"close")
                    && !t.eq_ignore_ascii_case(b"upgrade")
                    // A client cannot make the proxy drop the Host it routes on.
                    && !t.eq_ignore_ascii_case(b"host")
            })
            .filter_map(|t| HeaderName::from_bytes(&t.to_ascii_lowercase()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if bits & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if bits & TE_BIT != 0
        && let Some(te) = headers.get(header::TE)
    {
        let trailers = te
            .as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(header::TE);
        }
    }
    if let Some(proto) = upgrade {
        headers.insert(header::UPGRADE, proto.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether `Connection` names anything beyond its usual tokens (and so needs the
/// headers it names removed).
fn names_others(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` plus
/// `Upgrade: <proto>`), if any.
pub fn upgrade_request(headers: &HeaderMap) -> Option<&HeaderValue> {
    HopByHop::scan(headers).upgrade(headers)
}

/// Appends the client address to `x-forwarded-for` (folding several incoming lines into
/// one, in order) and sets `x-forwarded-proto`. `client_ip` is the client's address as
/// a header value (made once per connection).
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: &HeaderValue, scheme: &'static str) {
    let present = headers.contains_key(&X_FORWARDED_FOR);
    add_forwarded_scanned(headers, present, client_ip, scheme);
}

/// [`add_forwarded`] when a scan already told whether `x-forwarded-for` is there.
pub fn add_forwarded_scanned(
    headers: &mut HeaderMap,
    present: bool,
    client_ip: &HeaderValue,
    scheme: &'static str,
) -> HeaderValue {
    let value = if present {
        let mut xff = Vec::with_capacity(64);
        for v in headers.get_all(&X_FORWARDED_FOR) {
            let v = v.as_bytes().trim_ascii();
            if !v.is_empty() {
                xff.extend_from_slice(v);
                xff.extend_from_slice(b", ");
            }
        }
        xff.extend_from_slice(client_ip.as_bytes());
        HeaderValue::from_maybe_shared(bytes::Bytes::from(xff))
            .unwrap_or_else(|_| client_ip.clone())
    } else {
        client_ip.clone()
    };
    headers.insert(X_FORWARDED_FOR.clone(), value.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    value
}

/// The client address as it goes into `x-forwarded-for`.
pub fn client_ip_value(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Keeps a well-formed incoming `x-request-id` (1-128 visible ASCII characters) or sets
/// a new UUID; returns the value in effect (for logs).
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let present = headers.contains_key(&X_REQUEST_ID);
    ensure_request_id_scanned(headers, present)
}

/// [`ensure_request_id`] when a scan already told whether `x-request-id` is there.
pub fn ensure_request_id_scanned(headers: &mut HeaderMap, present: bool) -> HeaderValue {
    if present
        && let Some(v) = headers.get(&X_REQUEST_ID)
        && is_sane_request_id(v)
    {
        let v = v.clone();
        // One id per request: a second line would give the upstream two.
        headers.insert(X_REQUEST_ID.clone(), v.clone());
        return v;
    }
    let v = new_request_id();
    headers.insert(X_REQUEST_ID.clone(), v.clone());
    v
}

/// Whether an incoming `x-request-id` is kept: 1-128 visible ASCII characters.
pub fn is_sane_request_id(v: &HeaderValue) -> bool {
    (1..=128).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

/// A new request id: a version-4 UUID from the thread's fast generator (ids need to be
/// unique, not unguessable).
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf);
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(id.as_bytes()))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The path (and query) after a prefix rewrite: the part the route matched is replaced.
/// Exact matches replace the whole path; prefix matches replace the prefix.
pub fn rewrite_prefix(
    path: &str,
    query: Option<&str>,
    matched: &PathMatch,
    case_sensitive: bool,
    to: &str,
) -> String {
    let rest = match matched {
        PathMatch::Exact(_) => "",
        PathMatch::Prefix(p) => {
            let n = p.len().min(path.len());
            let prefix_ok = if case_sensitive {
                path.starts_with(p.as_str())
            } else {
                path[..n].eq_ignore_ascii_case(p)
            };
            if prefix_ok { &path[n..] } else { path }
        }
        _ => path,
    };
    let mut out = String::with_capacity(to.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(to);
    // `/api/` + `/x` would give `//x`; Envoy joins naively, we avoid the double slash.
    if out.ends_with('/') && rest.starts_with('/') {
        out.push_str(&rest[1..]);
    } else {
        out.push_str(rest);
    }
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The `Location` of a redirect for a request to `scheme://host{path}?{query}`.
pub fn redirect_location(
    r: &Redirect,
    scheme: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
    matched: &PathMatch,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let bare_host = crate::snapshot::route::strip_port(host);
    let request_port = &host[bare_host.len()..];
    let mut host_part = r.host.clone().unwrap_or_else(|| bare_host.to_owned());
    match r.port {
        Some(p) => {
            let default = (scheme == "https" && p == 443) || (scheme == "http" && p == 80);
            if !default {
                host_part.push_str(&format!(":{p}"));
            }
        }
        // Changing the scheme drops the port of the old one (as Envoy does).
        None if r.scheme.is_none() && r.host.is_none() => host_part.push_str(request_port),
        None => {}
    }
    let new_path = match &r.path {
        PathRedirect::Keep => path.to_owned(),
        PathRedirect::Replace(p) => p.clone(),
        PathRedirect::Prefix(p) => rewrite_prefix(path, None, matched, true, p),
    };
    let mut loc = format!("{scheme}://{host_part}{new_path}");
    if let Some(q) = query
        && !r.strip_query
    {
        loc.push('?');
        loc.push_str(q);
    }
    loc
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// (input headers, keep the upgrade, header names expected to remain)
    type Case = (
        &'static [(&'static str, &'static str)],
        bool,
        &'static [&'static str],
    );

    #[test]
    fn hop_by_hop_table() {
        let cases: &[Case] = &[
            (
                &[
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                    ("x-a", "1"),
                ],
                false,
                &["x-a"],
            ),
            (
                &[
                    ("connection", "close, x-secret"),
                    ("x-secret", "s"),
                    ("x-a", "1"),
                ],
                false,
                &["x-a"],
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("trailer", "x"),
                    ("proxy-connection", "k"),
                ],
                false,
                &["trailer"],
            ),
            (
                &[("connection", "host, x-a"), ("host", "h"), ("x-a", "1")],
                false,
                &["host"],
            ),
            (&[("te", "trailers"), ("x-a", "1")], false, &["te", "x-a"]),
            (&[("te", "gzip")], false, &[]),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                true,
                &["upgrade", "connection"],
            ),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                false,
                &[],
            ),
        ];
        for (input, upgrade, left) in cases {
            let mut h = map(input);
            let up = HeaderValue::from_static("websocket");
            strip_hop_by_hop(&mut h, upgrade.then_some(&up));
            let mut got: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            got.sort();
            let mut want = left.to_vec();
            want.sort();
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn forwarded_headers() {
        let ip = client_ip_value("10.1.2.3".parse().unwrap());
        let mut h = map(&[]);
        add_forwarded(&mut h, &ip, "http");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(&mut h, &ip, "http");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn request_ids() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut h), "abc-123");
        let mut h = map(&[]);
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h["x-request-id"], id);
        let long = "a".repeat(200);
        let mut h = map(&[("x-request-id", long.as_str())]);
        assert_eq!(ensure_request_id(&mut h).len(), 36);
    }

    #[test]
    fn prefix_rewrite_table() {
        let pre = |p: &str| PathMatch::Prefix(p.to_owned());
        let cases: &[(&str, Option<&str>, PathMatch, &str, &str)] = &[
            ("/api/users/7", None, pre("/api/"), "/", "/users/7"),
            (
                "/api/users/7",
                Some("a=1"),
                pre("/api"),
                "/v2",
                "/v2/users/7?a=1",
            ),
            ("/api", None, pre("/api"), "/", "/"),
            (
                "/old",
                None,
                PathMatch::Exact("/old".into()),
                "/new",
                "/new",
            ),
            ("/a/b", None, pre("/a/"), "/x/", "/x/b"),
        ];
        for (path, q, m, to, want) in cases {
            assert_eq!(rewrite_prefix(path, *q, m, true, to), *want, "{path} {to}");
        }
    }

    #[test]
    fn redirect_table() {
        let base = Redirect {
            scheme: None,
            host: None,
            port: None,
            path: PathRedirect::Keep,
            status: StatusCode::MOVED_PERMANENTLY,
            strip_query: false,
        };
        let https = Redirect {
            scheme: Some("https".into()),
            ..clone(&base)
        };
        let moved = Redirect {
            host: Some("new.example".into()),
            path: PathRedirect::Replace("/x".into()),
            strip_query: true,
            ..clone(&base)
        };
        let prefix = Redirect {
            path: PathRedirect::Prefix("/v2/".into()),
            ..clone(&base)
        };
        let m = PathMatch::Prefix("/v1/".into());
        let cases: Vec<(&Redirect, &str, &str, Option<&str>, &str)> = vec![
            (
                &https,
                "shop.example:8080",
                "/a",
                Some("q=1"),
                "https://shop.example/a?q=1",
            ),
            (
                &moved,
                "shop.example",
                "/a",
                Some("q=1"),
                "http://new.example/x",
            ),
            (
                &prefix,
                "shop.example:8080",
                "/v1/items",
                None,
                "http://shop.example:8080/v2/items",
            ),
        ];
        for (r, host, path, q, want) in cases {
            assert_eq!(redirect_location(r, "http", host, path, q, &m), want);
        }
    }

    fn clone(r: &Redirect) -> Redirect {
        Redirect {
            scheme: r.scheme.clone(),
            host: r.host.clone(),
            port: r.port,
            path: match &r.path {
                PathRedirect::Keep => PathRedirect::Keep,
                PathRedirect::Replace(p) => PathRedirect::Replace(p.clone()),
                PathRedirect::Prefix(p) => PathRedirect::Prefix(p.clone()),
            },
            status: r.status,
            strip_query: r.strip_query,
        }
    }
}
