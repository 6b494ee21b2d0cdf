//! The retry decision, without I/O: what an attempt's outcome was, whether the route's
//! policy retries it for this method, and how long to back off first.

use std::time::Duration;

use http::{Method, Response};

use crate::http::{Body, BoxError, ProxyError};
use crate::snapshot::policy::RetryPolicy;

/// An attempt's outcome, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status (and `grpc-status` in the headers of a
    /// trailers-only gRPC response).
    Status {
        /// HTTP status.
        status: u16,
        /// gRPC status, when in the response headers.
        grpc: Option<u16>,
    },
    /// No connection could be made: the upstream never saw the request.
    ConnectFailure,
    /// HTTP/2 `REFUSED_STREAM`: the upstream did not process the request.
    RefusedStream,
    /// The connection was reset or closed before a complete response head, or the
    /// response was not valid HTTP.
    Reset,
    /// The attempt's per-try timeout passed.
    Timeout,
    /// A failure no policy retries (overflow, no endpoint, a broken client body, ...).
    Final,
}

/// Classifies an attempt's result.
pub fn classify(result: &Result<Response<Body>, ProxyError>) -> Outcome {
    match result {
        Ok(resp) => Outcome::Status {
            status: resp.status().as_u16(),
            grpc: resp
                .headers()
                .get("grpc-status")
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(|s| s.parse().ok()),
        },
        Err(ProxyError::ConnectFailure(_)) => Outcome::ConnectFailure,
        Err(ProxyError::UpstreamReset(e)) if is_refused_stream(e) => Outcome::RefusedStream,
        Err(ProxyError::UpstreamReset(_) | ProxyError::UpstreamProtocol(_)) => Outcome::Reset,
        Err(ProxyError::Timeout) => Outcome::Timeout,
        Err(_) => Outcome::Final,
    }
}

/// Whether an HTTP/2 stream was refused (`REFUSED_STREAM`), somewhere in the cause.
fn is_refused_stream(e: &BoxError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = c.source();
    }
    false
}

/// Whether `policy` retries `outcome` of a `method` request. Connect failures and
/// refused streams are retried whatever the method (the upstream never processed the
/// request); everything else only for methods safe to repeat (or listed by the route).
pub fn retriable(policy: &RetryPolicy, method: &Method, outcome: Outcome) -> bool {
    let on = &policy.retry_on;
    let any_failure = on.server_error || on.gateway_error;
    match outcome {
        Outcome::ConnectFailure => on.connect_failure || any_failure,
        Outcome::RefusedStream => on.refused_stream || on.reset || any_failure,
        Outcome::Final => false,
        _ if !policy.method_retriable(method) => false,
        Outcome::Reset => on.reset || any_failure,
        // Envoy's `reset` covers "disconnect/reset/read timeout".
        Outcome::Timeout => on.reset || any_failure,
        Outcome::Status { status, grpc } => {
            (on.server_error && status >= 500)
                || (on.gateway_error && matches!(status, 502..=504))
                || (on.retriable_4xx && status == 409)
                || (on.status_codes && policy.status_codes.contains(&status))
                || grpc.is_some_and(|g| {
                    (on.grpc_cancelled && g == 1)
                        || (on.grpc_deadline_exceeded && g == 4)
                        || (on.grpc_resource_exhausted && g == 8)
                        || (on.grpc_unavailable && g == 14)
                })
        }
    }
}

/// A short, static description of a response that was retried, for its attempt's span.
pub fn describe(status: u16, grpc: Option<u16>) -> &'static str {
    match (status, grpc) {
        (_, Some(1)) => "grpc-status 1 (cancelled)",
        (_, Some(4)) => "grpc-status 4 (deadline exceeded)",
        (_, Some(8)) => "grpc-status 8 (resource exhausted)",
        (_, Some(14)) => "grpc-status 14 (unavailable)",
        (500, _) => "500",
        (502, _) => "502",
        (503, _) => "503",
        (504, _) => "504",
        (409, _) => "409",
        (s, _) if s >= 500 => "5xx",
        _ => "retried",
    }
}

/// The wait before retry number `retry` (1 for the first): uniformly random below
/// `base x 2^(retry-1)`, capped by `max` (Envoy's fully jittered exponential backoff).
/// `unit` is a random number in `[0, 1)`.
pub fn backoff(retry: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let doublings = retry.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << doublings).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::policy::RetryOn;

    fn status(status: u16) -> Outcome {
        Outcome::Status { status, grpc: None }
    }

    fn grpc(g: u16) -> Outcome {
        Outcome::Status {
            status: 200,
            grpc: Some(g),
        }
    }

    #[test]
    fn istio_default_policy() {
        let p = RetryPolicy::default();
        let cases: &[(Method, Outcome, bool)] = &[
            (Method::GET, status(503), true),
            (Method::GET, status(500), false),
            (Method::GET, status(502), false),
            (Method::GET, status(200), false),
            (Method::GET, status(404), false),
            (Method::GET, Outcome::ConnectFailure, true),
            (Method::POST, Outcome::ConnectFailure, true),
            (Method::POST, Outcome::RefusedStream, true),
            (Method::POST, status(503), false),
            (Method::PUT, status(503), true),
            (Method::DELETE, status(503), true),
            (Method::PATCH, status(503), false),
            (Method::GET, Outcome::Reset, false),
            (Method::GET, Outcome::Timeout, false),
            (Method::GET, grpc(14), true),
            (Method::GET, grpc(1), true),
            (Method::GET, grpc(4), false),
            (Method::POST, grpc(14), false),
            (Method::GET, Outcome::Final, false),
        ];
        for (method, outcome, want) in cases {
            assert_eq!(
                retriable(&p, method, *outcome),
                *want,
                "{method} {outcome:?}"
            );
        }
    }

    #[test]
    fn envoy_conditions() {
        let with = |s: &str| RetryPolicy {
            retry_on: RetryOn::parse(s).unwrap(),
            status_codes: vec![418],
            ..RetryPolicy::default()
        };
        let get = Method::GET;
        let cases: &[(&str, Outcome, bool)] = &[
            ("5xx", status(500), true),
            ("5xx", status(503), true),
            ("5xx", status(499), false),
            ("5xx", Outcome::Reset, true),
            ("5xx", Outcome::Timeout, true),
            ("5xx", Outcome::ConnectFailure, true),
            ("gateway-error", status(502), true),
            ("gateway-error", status(504), true),
            ("gateway-error", status(500), false),
            ("gateway-error", Outcome::Timeout, true),
            ("reset", Outcome::Reset, true),
            ("reset", Outcome::Timeout, true),
            ("reset", status(503), false),
            ("connect-failure", Outcome::ConnectFailure, true),
            ("connect-failure", Outcome::Reset, false),
            ("refused-stream", Outcome::RefusedStream, true),
            ("refused-stream", Outcome::Reset, false),
            ("retriable-4xx", status(409), true),
            ("retriable-4xx", status(404), false),
            ("retriable-status-codes", status(418), true),
            ("retriable-status-codes", status(503), false),
            ("cancelled", grpc(1), true),
            ("deadline-exceeded", grpc(4), true),
            ("resource-exhausted", grpc(8), true),
            ("unavailable", grpc(14), true),
            ("unavailable", grpc(13), false),
        ];
        for (on, outcome, want) in cases {
            assert_eq!(
                retriable(&with(on), &get, *outcome),
                *want,
                "{on} {outcome:?}"
            );
        }
    }

    #[test]
    fn listed_methods_become_retriable() {
        let p = RetryPolicy {
            extra_methods: vec![Method::POST],
            ..RetryPolicy::default()
        };
        let cases: &[(Method, bool)] = &[
            (Method::POST, true),
            (Method::PATCH, false),
            (Method::GET, true),
        ];
        for (m, want) in cases {
            assert_eq!(retriable(&p, m, status(503)), *want, "{m}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let ms = Duration::from_millis;
        let (base, max) = (ms(25), ms(250));
        let cases: &[(u32, f64, Duration)] = &[
            (1, 0.0, ms(0)),
            (1, 0.5, Duration::from_micros(12_500)),
            (1, 0.999_999, ms(25).mul_f64(0.999_999)),
            (2, 0.5, ms(25)),
            (3, 0.5, ms(50)),
            (4, 1.0, ms(200)),
            (5, 1.0, ms(250)),
            (40, 1.0, ms(250)),
        ];
        for (retry, unit, want) in cases {
            assert_eq!(backoff(*retry, base, max, *unit), *want, "{retry} {unit}");
        }
    }
}
