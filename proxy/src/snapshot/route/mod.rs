//! Routes and the pure decisions over them: which virtual host, which route, and why a
//! route did not match.
//!
//! Everything here is a function of the request's method, host, path, query and
//! headers, without I/O, so it is tested by tables and shared by the data path and
//! `explain` (the data path throws the reasons away; explain prints them).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::ClusterId;
use super::template::Template;

/// The parts of a request that routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2), possibly with a port.
    pub host: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// Routes for a set of hosts.
#[derive(Debug)]
pub struct VirtualHost {
    /// Name, for metrics and explain.
    pub name: Arc<str>,
    /// Host patterns.
    pub domains: Vec<Domain>,
    /// Tried in order.
    pub routes: Vec<Route>,
    /// Applied to every request of this host (before the route's own).
    pub request_headers: HeaderOps,
    /// Applied to every response of this host (before the route's own).
    pub response_headers: HeaderOps,
}

/// A `domains` entry of a virtual host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// `*`
    Any,
    /// `example.com` (lowercase)
    Exact(String),
    /// `*.example.com` stored as `.example.com`
    Suffix(String),
    /// `api.*` stored as `api.`
    Prefix(String),
}

impl Domain {
    /// Parses a `domains` entry; `None` for a wildcard in the middle.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        if s == "*" {
            return Some(Self::Any);
        }
        if let Some(rest) = s.strip_prefix('*') {
            return (!rest.is_empty() && !rest.contains('*'))
                .then(|| Self::Suffix(rest.to_owned()));
        }
        if let Some(rest) = s.strip_suffix('*') {
            return (!rest.is_empty() && !rest.contains('*'))
                .then(|| Self::Prefix(rest.to_owned()));
        }
        (!s.is_empty() && !s.contains('*')).then_some(Self::Exact(s))
    }

    /// How specific a match on `host` is, or `None` if it does not match. Higher wins:
    /// exact, then the longest suffix, then the longest prefix, then `*` (Envoy's order).
    fn score(&self, host: &str) -> Option<(u8, usize)> {
        match self {
            Self::Exact(d) => d.eq_ignore_ascii_case(host).then_some((3, d.len())),
            Self::Suffix(d) => {
                (host.len() > d.len() && ends_with_ignore_case(host, d)).then_some((2, d.len()))
            }
            Self::Prefix(d) => {
                (host.len() > d.len() && starts_with_ignore_case(host, d)).then_some((1, d.len()))
            }
            Self::Any => Some((0, 0)),
        }
    }
}

/// Picks the virtual host for `host`: the most specific domain wins; the full `Host`
/// (with port) is tried first, then the host without its port.
pub fn select_vhost<'a>(vhosts: &'a [VirtualHost], host: &str) -> Option<&'a VirtualHost> {
    // The common gateway shape: one virtual host for every host.
    if let [only] = vhosts
        && only.domains.contains(&Domain::Any)
    {
        return Some(only);
    }
    let best = |h: &str| {
        vhosts
            .iter()
            .filter_map(|vh| {
                vh.domains
                    .iter()
                    .filter_map(|d| d.score(h))
                    .max()
                    .map(|s| (s, vh))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(std::cmp::Ordering::Greater))
    };
    let with_port = best(host);
    let bare = strip_port(host);
    let without_port = if bare.len() != host.len() {
        best(bare)
    } else {
        None
    };
    match (with_port, without_port) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b.1 } else { a.1 }),
        (a, b) => a.or(b).map(|x| x.1),
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.find(']') {
            Some(i) => &host[..i + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Picks the first route of `vhost` that matches.
pub fn select_route<'a>(vhost: &'a VirtualHost, req: &RequestView<'_>) -> Option<&'a Route> {
    vhost.routes.iter().find(|r| r.matcher.check(req).is_ok())
}

/// A route: conditions, what to do, and header changes.
#[derive(Debug)]
pub struct Route {
    /// Index of this route among all routes of the snapshot (for per-route state).
    pub id: usize,
    /// Name, for metrics, logs and explain.
    pub name: Arc<str>,
    /// Conditions.
    pub matcher: RouteMatch,
    /// What to do with a matching request.
    pub action: Action,
    /// Request header changes (after the virtual host's).
    pub request_headers: HeaderOps,
    /// Response header changes (after the virtual host's).
    pub response_headers: HeaderOps,
    /// Local rate limit, checked before the action (`None`: unlimited).
    pub rate_limit: Option<super::policy::RateLimit>,
    /// Fault injection, applied before the action (`None`: none).
    pub fault: Option<super::policy::Fault>,
    /// The JWT this route requires (`None`: none).
    pub jwt: Option<Arc<crate::authn::Requirement>>,
    /// CORS for cross-origin browser calls (`None`: no CORS headers).
    pub cors: Option<Arc<crate::http::cors::CorsPolicy>>,
}

/// All conditions a request must meet.
#[derive(Debug)]
pub struct RouteMatch {
    /// The path condition.
    pub path: PathMatch,
    /// Whether `path` and prefix comparisons ignore case.
    pub case_sensitive: bool,
    /// Header conditions (`:method`, `:authority`, `:scheme`, `:path` included).
    pub headers: Vec<HeaderCondition>,
    /// Query parameter conditions.
    pub query: Vec<QueryCondition>,
}

/// The path condition of a route.
#[derive(Debug)]
pub enum PathMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// A path template.
    Template(Template),
    /// The whole path matches this regular expression.
    Regex(Regex),
    /// A `CONNECT` request (no path).
    Connect,
}

/// Why a route did not take a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The path condition failed.
    Path,
    /// The request is a CONNECT and the route is not (or the reverse).
    Connect,
    /// This header condition failed.
    Header(String),
    /// This query condition failed.
    Query(String),
}

impl RouteMatch {
    /// `Ok` when every condition holds, else the first that fails.
    pub fn check(&self, req: &RequestView<'_>) -> Result<(), Mismatch> {
        let is_connect = req.method == Method::CONNECT;
        match &self.path {
            PathMatch::Connect => {
                if !is_connect {
                    return Err(Mismatch::Connect);
                }
            }
            _ if is_connect => return Err(Mismatch::Connect),
            PathMatch::Exact(p) => {
                let ok = if self.case_sensitive {
                    req.path == p
                } else {
                    req.path.eq_ignore_ascii_case(p)
                };
                if !ok {
                    return Err(Mismatch::Path);
                }
            }
            PathMatch::Prefix(p) => {
                let ok = if self.case_sensitive {
                    req.path.starts_with(p.as_str())
                } else {
                    starts_with_ignore_case(req.path, p)
                };
                if !ok {
                    return Err(Mismatch::Path);
                }
            }
            PathMatch::Template(t) => {
                if !t.matches(req.path) {
                    return Err(Mismatch::Path);
                }
            }
            PathMatch::Regex(r) => {
                if !r.is_match(req.path) {
                    return Err(Mismatch::Path);
                }
            }
        }
        for h in &self.headers {
            if !h.check(req) {
                return Err(Mismatch::Header(h.name.clone()));
            }
        }
        for q in &self.query {
            if !q.check(req.query) {
                return Err(Mismatch::Query(q.name.clone()));
            }
        }
        Ok(())
    }
}

/// A condition on a value.
#[derive(Debug)]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// The whole value matches.
    Regex(Regex),
}

impl StringMatch {
    fn check(&self, value: &str, ignore_case: bool) -> bool {
        if ignore_case {
            let v = value.to_ascii_lowercase();
            // Patterns are lowercased at translate time when ignore_case is set.
            return self.check(&v, false);
        }
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Contains(s) => value.contains(s.as_str()),
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// What a header or query condition tests.
#[derive(Debug)]
pub enum ValueCondition {
    /// The value matches (a missing value fails).
    Matches {
        /// The test.
        pattern: StringMatch,
        /// Compare lowercase.
        ignore_case: bool,
    },
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

/// A condition on a request header (or a pseudo-header such as `:method`).
#[derive(Debug)]
pub struct HeaderCondition {
    /// Lowercase header name, or `:method` / `:authority` / `:scheme` / `:path`.
    pub name: String,
    /// The test.
    pub condition: ValueCondition,
    /// Negate the result.
    pub invert: bool,
    /// A missing header is compared as an empty value (Envoy's
    /// `treat_missing_header_as_empty`).
    pub missing_as_empty: bool,
}

impl HeaderCondition {
    fn check(&self, req: &RequestView<'_>) -> bool {
        let value: Option<Cow<'_, str>> = match self.name.as_str() {
            ":method" => Some(Cow::Borrowed(req.method.as_str())),
            ":authority" => Some(Cow::Borrowed(req.host)),
            ":scheme" => Some(Cow::Borrowed(req.scheme)),
            // Envoy's `:path` is the request target, query included.
            ":path" => Some(match req.query {
                Some(q) => Cow::Owned(format!("{}?{q}", req.path)),
                None => Cow::Borrowed(req.path),
            }),
            name => {
                let mut values = req.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(v), None) => Some(String::from_utf8_lossy(v.as_bytes())),
                    // Several values are compared joined by ',' (as Envoy does).
                    (Some(_), Some(_)) => {
                        let all: Vec<Cow<'_, str>> = req
                            .headers
                            .get_all(name)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()))
                            .collect();
                        Some(Cow::Owned(all.join(",")))
                    }
                }
            }
        };
        let value = match value {
            None if self.missing_as_empty => Some(Cow::Borrowed("")),
            v => v,
        };
        value_check(&self.condition, value.as_deref()) != self.invert
    }
}

fn value_check(cond: &ValueCondition, value: Option<&str>) -> bool {
    match cond {
        ValueCondition::Present(want) => value.is_some() == *want,
        ValueCondition::Matches {
            pattern,
            ignore_case,
        } => value.is_some_and(|v| pattern.check(v, *ignore_case)),
    }
}

/// A condition on a query parameter (compared percent-decoded).
#[derive(Debug)]
pub struct QueryCondition {
    /// Parameter name.
    pub name: String,
    /// The test.
    pub condition: ValueCondition,
}

impl QueryCondition {
    fn check(&self, query: Option<&str>) -> bool {
        let value = query.and_then(|q| query_param(q, &self.name));
        value_check(&self.condition, value.as_deref())
    }
}

/// The first value of `name` in a query string, percent-decoded (`+` is a space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// What a matching route does.
#[derive(Debug)]
pub enum Action {
    /// Proxy to a cluster (or a weighted split).
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    Respond(Respond),
}

/// Forwarding settings.
#[derive(Debug)]
pub struct Forward {
    /// Target clusters with weights.
    pub backends: Backends,
    /// Replace the matched prefix (or exact path) with this.
    pub prefix_rewrite: Option<String>,
    /// Replace the `Host` header.
    pub host_rewrite: Option<HeaderValue>,
    /// Total time for the upstream response headers.
    pub timeout: Option<Duration>,
    /// The request header `ring-hash` clusters hash on.
    pub hash_header: Option<HeaderName>,
    /// `Upgrade` protocols allowed through (lowercase, e.g. `websocket`).
    pub upgrades: Vec<String>,
    /// CONNECT is terminated here and tunnelled to the cluster as raw TCP.
    pub connect_terminate: bool,
    /// Retries (`None`: one try only). Boxed: most of a route's size otherwise.
    pub retry: Option<Box<super::policy::RetryPolicy>>,
    /// How a caller's `grpc-timeout` is honoured.
    pub grpc_timeout: super::policy::GrpcTimeout,
}

impl Forward {
    /// Whether an `Upgrade: <proto>` request may pass.
    pub fn allows_upgrade(&self, proto: &str) -> bool {
        self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(proto))
    }
}

/// One or more clusters with weights.
#[derive(Debug)]
pub struct Backends {
    /// Targets with positive weights, in configuration order.
    pub targets: Vec<Backend>,
    /// Sum of the weights.
    pub total_weight: u64,
}

/// One weighted target.
#[derive(Debug)]
pub struct Backend {
    /// The cluster's index in the snapshot.
    pub cluster: ClusterId,
    /// The cluster's name.
    pub name: Arc<str>,
    /// Relative weight.
    pub weight: u32,
}

impl Backends {
    /// Picks a target for the random number `r` in `0..total_weight`.
    pub fn pick_with(&self, r: u64) -> &Backend {
        let mut acc = 0u64;
        for t in &self.targets {
            acc += u64::from(t.weight);
            if r < acc {
                return t;
            }
        }
        // Unreachable for r < total_weight; the last target is the safe answer.
        &self.targets[self.targets.len() - 1]
    }

    /// Picks a target at random by weight.
    pub fn pick(&self) -> &Backend {
        if self.targets.len() == 1 {
            return &self.targets[0];
        }
        self.pick_with(fastrand::u64(0..self.total_weight.max(1)))
    }
}

/// A redirect answer.
#[derive(Debug)]
pub struct Redirect {
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// How the path changes.
    pub path: PathRedirect,
    /// Status code (301, 302, 303, 307, 308).
    pub status: StatusCode,
    /// Drop the query.
    pub strip_query: bool,
}

/// How a redirect changes the path.
#[derive(Debug)]
pub enum PathRedirect {
    /// Keep the request's path.
    Keep,
    /// Replace the whole path.
    Replace(String),
    /// Replace the matched prefix.
    Prefix(String),
}

/// A fixed answer.
#[derive(Debug)]
pub struct Respond {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: bytes::Bytes,
}

/// Header changes.
#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    /// Names to remove.
    pub remove: Vec<HeaderName>,
    /// Headers to add or set, in order.
    pub add: Vec<(HeaderName, HeaderValue, AppendAction)>,
}

/// What adding a header does when it exists (Envoy's `append_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    /// Append a value (add if absent).
    Append,
    /// Add only if absent.
    AddIfAbsent,
    /// Replace all values (add if absent).
    Overwrite,
    /// Replace only if present.
    OverwriteIfExists,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Applies removals, then additions, to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, action) in &self.add {
            match action {
                AppendAction::Append => {
                    headers.append(name.clone(), value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                AppendAction::Overwrite => {
                    headers.insert(name.clone(), value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
