//! Timeouts on upstream calls: the same layer gives a route its total timeout (around
//! all attempts, retries and backoff included) and each attempt its per-try timeout.
//! Expiry answers [`ProxyError::Timeout`] (504 `upstream-timeout`, flag `UT`; a gRPC
//! caller gets `DEADLINE_EXCEEDED`), and marks the request's [`AttemptLog`] so that the
//! attempt cut short is charged to its endpoint.
//!
//! [`grpc`] reads a caller's `grpc-timeout` header; the handler turns it into the total
//! timeout, capped by the route.

mod future;
pub mod grpc;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::TimeoutLayer;
use super::AttemptLog;
use crate::http::ProxyError;

/// Fails a call that takes longer than `after` (no limit when `None`).
#[derive(Clone, Debug)]
pub struct Timeout<'a, S> {
    inner: S,
    after: Option<Duration>,
    log: &'a AttemptLog,
}

impl<'a, S> Timeout<'a, S> {
    /// Wraps `inner`; expiry is noted in `log`.
    pub fn new(inner: S, after: Option<Duration>, log: &'a AttemptLog) -> Self {
        Self { inner, after, log }
    }
}

impl<'a, S, R> Service<R> for Timeout<'a, S>
where
    S: Service<R, Error = ProxyError>,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = ResponseFuture<'a, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let sleep = self.after.map(tokio::time::sleep);
        ResponseFuture::new(self.inner.call(req), sleep, self.log)
    }
}

#[cfg(test)]
mod tests;
