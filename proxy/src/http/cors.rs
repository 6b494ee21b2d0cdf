//! CORS as Envoy's `cors` filter does it, as two pure functions.
//!
//! [`preflight`] answers a browser's preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) from an allowed origin itself, without the upstream;
//! [`decorate`] adds the CORS response headers to the answer of an actual cross-origin
//! request. The browser enforces the policy; the proxy only states it, so a request
//! from an origin that is not allowed is still forwarded, just without CORS headers.
//!
//! Choices, and why:
//! - A preflight from an origin that is not allowed is forwarded to the upstream, as
//!   Envoy does by default (`forward_not_matching_preflights`): an application with its
//!   own CORS handling keeps working behind the proxy. With the setting off, the proxy
//!   answers 200 without CORS headers, which the browser reads as a refusal.
//! - `Access-Control-Allow-Origin: *` is sent only when any origin is allowed and
//!   credentials are not; otherwise the request's origin is echoed with
//!   `Vary: Origin`, so that a cache does not hand one origin's answer to another.
//!   (Envoy always echoes; for a browser both mean the same.)
//! - `allow_methods: "*"` and `allow_headers: "*"` echo what the preflight asked for, as
//!   Envoy does: with credentials a literal `*` is not a wildcard to the browser.

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use regex::Regex;

/// The Envoy HTTP filter (and per-route config key) this module implements.
pub const FILTER_NAME: &str = "envoy.filters.http.cors";

/// Private Network Access: the preflight's question and the answer.
const REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
const ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// An allowed origin (`scheme://host[:port]` as the browser sends it).
#[derive(Clone, Debug)]
pub enum OriginMatch {
    /// Any origin.
    Any,
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// The whole origin matches (anchored when compiled).
    Regex(Regex),
}

impl OriginMatch {
    /// Whether `origin` is allowed by this pattern.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => origin == s,
            Self::Prefix(s) => origin.starts_with(s.as_str()),
            Self::Suffix(s) => origin.ends_with(s.as_str()),
            Self::Contains(s) => origin.contains(s.as_str()),
            Self::Regex(r) => r.is_match(origin),
        }
    }
}

// Compared by pattern text, so that translated policies can be compared in tests.
impl PartialEq for OriginMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, Self::Any) => true,
            (Self::Exact(a), Self::Exact(b))
            | (Self::Prefix(a), Self::Prefix(b))
            | (Self::Suffix(a), Self::Suffix(b))
            | (Self::Contains(a), Self::Contains(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// A route's CORS policy.
#[derive(Clone, Debug, PartialEq)]
pub struct CorsPolicy {
    /// Origins allowed; none: CORS headers are never sent.
    pub allow_origins: Vec<OriginMatch>,
    /// `Access-Control-Allow-Methods` for preflights (`GET, POST`); `*` echoes the
    /// requested method; none: not sent (the browser then allows simple methods only).
    pub allow_methods: Option<HeaderValue>,
    /// `Access-Control-Allow-Headers` for preflights; `*` echoes the requested headers.
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers` for actual requests.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age`: how long a browser may cache a preflight answer.
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Credentials: true` (cookies and HTTP authentication).
    pub allow_credentials: bool,
    /// Answer Private Network Access preflights with
    /// `Access-Control-Allow-Private-Network: true`.
    pub allow_private_network: bool,
    /// A preflight from an origin that is not allowed goes to the upstream (Envoy's
    /// default); `false`: the proxy answers it, without CORS headers.
    pub forward_not_matching_preflights: bool,
}

impl Default for CorsPolicy {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_methods: None,
            allow_headers: None,
            expose_headers: None,
            max_age: None,
            allow_credentials: false,
            allow_private_network: false,
            forward_not_matching_preflights: true,
        }
    }
}

impl CorsPolicy {
    /// Whether `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|o| o.matches(origin))
    }

    /// `Access-Control-Allow-Origin` for an allowed origin, and whether the answer
    /// depends on the origin (so responses must vary on it).
    fn allow_origin(&self, origin: &HeaderValue) -> (HeaderValue, bool) {
        let any = self.allow_origins.contains(&OriginMatch::Any);
        if any && !self.allow_credentials {
            (HeaderValue::from_static("*"), false)
        } else {
            (origin.clone(), true)
        }
    }
}

/// Whether a request is a CORS preflight: `OPTIONS` with a non-empty `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(req: &HeaderMap, method: &Method) -> bool {
    let present = |name: &HeaderName| req.get(name).is_some_and(|v| !v.is_empty());
    method == Method::OPTIONS && present(&ORIGIN) && present(&ACCESS_CONTROL_REQUEST_METHOD)
}

/// The proxy's answer to a preflight, or `None` when the request is not a preflight
/// this policy answers (it is then routed as usual).
pub fn preflight(policy: &CorsPolicy, req: &HeaderMap, method: &Method) -> Option<Response<()>> {
    if !is_preflight(req, method) {
        return None;
    }
    let origin = req.get(ORIGIN)?;
    let allowed = origin.to_str().is_ok_and(|o| policy.allows(o));
    if !allowed && policy.forward_not_matching_preflights {
        return None;
    }
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::OK;
    if !allowed {
        return Some(resp);
    }
    let h = resp.headers_mut();
    let (allow_origin, varies) = policy.allow_origin(origin);
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if varies {
        h.insert(VARY, HeaderValue::from_static("origin"));
    }
    if policy.allow_credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let echo = |configured: &Option<HeaderValue>, asked: &HeaderName| match configured {
        Some(v) if v == "*" => req.get(asked).cloned(),
        other => other.clone(),
    };
    if let Some(v) = echo(&policy.allow_methods, &ACCESS_CONTROL_REQUEST_METHOD) {
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = echo(&policy.allow_headers, &ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(age) = policy.max_age {
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age.as_secs()));
    }
    if policy.allow_private_network
        && req
            .get(&REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v == "true")
    {
        h.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
    }
    Some(resp)
}

/// Adds CORS headers to the response of an actual request whose `Origin` is allowed
/// (replacing any the upstream set, as Envoy does); other responses are left alone.
pub fn decorate(policy: &CorsPolicy, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
    let Some(origin) = origin.filter(|o| !o.is_empty()) else {
        return;
    };
    if !origin.to_str().is_ok_and(|o| policy.allows(o)) {
        return;
    }
    let (allow_origin, varies) = policy.allow_origin(origin);
    resp.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if policy.allow_credentials {
        resp.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(v) = &policy.expose_headers {
        resp.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
    }
    if varies {
        add_vary_origin(resp);
    }
}

/// Adds `origin` to `Vary`, keeping what the upstream listed.
fn add_vary_origin(resp: &mut HeaderMap) {
    let covered = resp.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|f| f == "*" || f.eq_ignore_ascii_case("origin"))
        })
    });
    if !covered {
        resp.append(VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
#[path = "cors_tests.rs"]
mod tests;
