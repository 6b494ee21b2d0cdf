//! The one place where a failure becomes a response.
//!
//! Every error on the data path is a [`ProxyError`]; this module decides its status code,
//! the `x-weft-error` value that tells an operator which failure it was, the short
//! plain-text body, and the Envoy-style response flag that metrics and logs carry.

use std::fmt;

use http::{HeaderValue, Response, StatusCode};

use super::body::{Body, BoxError};
use crate::snapshot::policy::Abort;

/// Why the proxy answered instead of the upstream.
#[derive(Debug)]
pub enum ProxyError {
    /// No virtual host or route matched.
    NoRoute,
    /// The cluster has no endpoint to send to.
    NoHealthyUpstream,
    /// Connecting to the chosen endpoint failed (refused, unreachable, timed out).
    ConnectFailure(BoxError),
    /// The upstream closed or reset the connection before a complete response.
    UpstreamReset(BoxError),
    /// The upstream answered something that is not valid HTTP.
    UpstreamProtocol(&'static str),
    /// The client's request body broke off while it was being forwarded.
    DownstreamReset(BoxError),
    /// The route's timeout passed before the upstream's response headers.
    Timeout,
    /// An `Upgrade` the route does not allow.
    UpgradeRejected(String),
    /// The request is malformed in a way only the proxy can see (e.g. no host).
    BadRequest(&'static str),
    /// A circuit-breaker limit of the cluster is reached (which one is named).
    Overflow(&'static str),
    /// The route's local rate limit is exhausted.
    RateLimited(RateLimitInfo),
    /// Fault injection answered instead of the upstream.
    FaultAbort(crate::snapshot::policy::Abort),
    /// The route requires a JWT and the request has none or a bad one; carries the
    /// `www-authenticate` value.
    Unauthenticated(crate::authn::AuthnError, HeaderValue),
    /// An authorization rule (or the listener's default) denied the request. Which one
    /// is named in the access log, never in the response.
    Forbidden,
}

/// What a rate-limited response tells the client (IETF `RateLimit` header draft 03).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// The bucket's size (`x-ratelimit-limit`).
    pub limit: u32,
    /// Seconds until a token is available again (`retry-after`, `x-ratelimit-reset`),
    /// at least 1.
    pub reset_secs: u64,
    /// Whether the `x-ratelimit-*` headers are sent.
    pub headers: bool,
}

impl ProxyError {
    /// The response status for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoHealthyUpstream | Self::ConnectFailure(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamReset(_) | Self::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            Self::DownstreamReset(_) => StatusCode::BAD_REQUEST,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpgradeRejected(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Overflow(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::FaultAbort(Abort::Http(code)) => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::FaultAbort(Abort::Grpc(_)) => StatusCode::OK,
            Self::Unauthenticated(..) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The `x-weft-error` value: stable, machine-readable.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::NoHealthyUpstream => "no-healthy-upstream",
            Self::ConnectFailure(_) => "upstream-connect-failure",
            Self::UpstreamReset(_) => "upstream-reset",
            Self::UpstreamProtocol(_) => "upstream-protocol-error",
            Self::DownstreamReset(_) => "downstream-reset",
            Self::Timeout => "upstream-timeout",
            Self::UpgradeRejected(_) => "upgrade-rejected",
            Self::BadRequest(_) => "bad-request",
            Self::Overflow(_) => "upstream-overflow",
            Self::RateLimited(_) => "rate-limited",
            Self::FaultAbort(_) => "fault-injected",
            Self::Unauthenticated(..) => "unauthenticated",
            Self::Forbidden => "forbidden",
        }
    }

    /// Envoy's response flag for metrics and access logs.
    pub fn response_flag(&self) -> &'static str {
        match self {
            Self::NoRoute => "NR",
            Self::NoHealthyUpstream => "UH",
            Self::ConnectFailure(_) => "UF",
            Self::UpstreamReset(_) => "UC",
            Self::UpstreamProtocol(_) => "UPE",
            Self::DownstreamReset(_) => "DC",
            Self::Timeout => "UT",
            Self::UpgradeRejected(_) | Self::BadRequest(_) => "DPE",
            Self::Overflow(_) => "UO",
            Self::RateLimited(_) => "RL",
            Self::FaultAbort(_) => "FI",
            // Envoy marks local authentication and authorization refusals with UAEX
            // (its external-authorization flag) only for ext_authz; its jwt_authn and
            // RBAC filters set no flag: the status code says it.
            Self::Unauthenticated(..) | Self::Forbidden => "-",
        }
    }

    /// The response sent to the client: status, `x-weft-error`, a one-line reason.
    pub fn into_response(self) -> Response<Body> {
        let mut body = self.to_string();
        body.push('\n');
        let mut resp = Response::new(Body::full(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match &self {
            Self::RateLimited(info) => {
                h.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(info.reset_secs),
                );
                if info.headers {
                    h.insert("x-ratelimit-limit", HeaderValue::from(info.limit));
                    h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                    h.insert("x-ratelimit-reset", HeaderValue::from(info.reset_secs));
                }
            }
            Self::Unauthenticated(_, challenge) => {
                h.insert(http::header::WWW_AUTHENTICATE, challenge.clone());
            }
            Self::FaultAbort(Abort::Grpc(code)) => {
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                h.insert("grpc-status", HeaderValue::from(*code));
                h.insert(
                    "grpc-message",
                    HeaderValue::from_static("fault%20filter%20abort"),
                );
            }
            _ => {}
        }
        stamp_date(h);
        resp
    }

    /// The gRPC status a gRPC caller gets for this failure (the HTTP-to-gRPC mapping
    /// of the gRPC spec, with a timeout as `DEADLINE_EXCEEDED`).
    pub fn grpc_status(&self) -> u16 {
        match self {
            Self::Timeout => 4,
            Self::FaultAbort(Abort::Grpc(code)) => *code,
            Self::NoRoute => 12,
            Self::BadRequest(_) | Self::DownstreamReset(_) => 13,
            Self::UpgradeRejected(_) | Self::Forbidden => 7,
            Self::Unauthenticated(..) => 16,
            _ => 14,
        }
    }

    /// The response for a gRPC caller: HTTP 200, trailers-only, with `grpc-status` and
    /// `grpc-message`, plus `x-weft-error` as for any caller.
    pub fn into_grpc_response(self) -> Response<Body> {
        let status = self.grpc_status();
        let message = self.to_string().replace(' ', "%20");
        let mut resp = Response::new(Body::Empty);
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(status));
        if let Ok(v) = HeaderValue::from_str(&message) {
            h.insert("grpc-message", v);
        }
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match &self {
            Self::RateLimited(info) => {
                h.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(info.reset_secs),
                );
            }
            Self::Unauthenticated(_, challenge) => {
                h.insert(http::header::WWW_AUTHENTICATE, challenge.clone());
            }
            _ => {}
        }
        stamp_date(h);
        resp
    }
}

/// Adds `date` to a response the proxy makes itself (RFC 9110 section 6.6.1). Proxied
/// responses keep the upstream's; hyper's automatic date is off because it would cost
/// every proxied response a clock read.
pub fn stamp_date(headers: &mut http::HeaderMap) {
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    if let Ok(v) = HeaderValue::from_str(&now) {
        headers.insert(http::header::DATE, v);
    }
}

/// The header naming which failure produced a local error response.
pub const ERROR_HEADER: &str = "x-weft-error";

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRoute => f.write_str("no route matched this request"),
            Self::NoHealthyUpstream => f.write_str("no healthy upstream"),
            Self::ConnectFailure(_) => f.write_str("upstream connect error"),
            Self::UpstreamReset(_) => {
                f.write_str("upstream reset the connection before responding")
            }
            Self::UpstreamProtocol(why) => write!(f, "upstream protocol error: {why}"),
            Self::DownstreamReset(_) => f.write_str("the request body broke off"),
            Self::Timeout => f.write_str("upstream request timeout"),
            Self::UpgradeRejected(p) => write!(f, "upgrade to {p:?} is not allowed on this route"),
            Self::BadRequest(why) => write!(f, "bad request: {why}"),
            Self::Overflow(which) => write!(f, "upstream overflow: {which} limit reached"),
            Self::RateLimited(_) => f.write_str("local rate limit exceeded"),
            Self::FaultAbort(_) => f.write_str("fault filter abort"),
            Self::Unauthenticated(e, _) => write!(f, "{e}"),
            Self::Forbidden => f.write_str("RBAC: access denied"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ConnectFailure(e) | Self::UpstreamReset(e) | Self::DownstreamReset(e) => {
                Some(e.as_ref())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let io = || -> BoxError { "boom".into() };
        let cases: Vec<(ProxyError, u16, &str, &str)> = vec![
            (ProxyError::NoRoute, 404, "no-route", "NR"),
            (
                ProxyError::NoHealthyUpstream,
                503,
                "no-healthy-upstream",
                "UH",
            ),
            (
                ProxyError::ConnectFailure(io()),
                503,
                "upstream-connect-failure",
                "UF",
            ),
            (ProxyError::UpstreamReset(io()), 502, "upstream-reset", "UC"),
            (ProxyError::Timeout, 504, "upstream-timeout", "UT"),
        ];
        for (err, status, code, flag) in cases {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(err.code(), code);
            assert_eq!(err.response_flag(), flag);
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()[ERROR_HEADER], code);
            assert!(resp.headers().contains_key(http::header::DATE));
        }
    }
}
