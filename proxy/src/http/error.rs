//! The one place where a failure becomes a response.
//!
//! Every error on the data path is a [`ProxyError`]; this module decides its status code,
//! the `x-weft-error` value that tells an operator which failure it was, the short
//! plain-text body, and the Envoy-style response flag that metrics and logs carry.

use std::fmt;

use http::{HeaderValue, Response, StatusCode};

use super::body::{Body, BoxError};

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
