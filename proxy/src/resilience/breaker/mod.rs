//! Circuit breaking: per-cluster limits on requests in flight, requests waiting for a
//! connection, connections and retries in flight (Envoy's `CircuitBreakers`). Over a
//! limit a request fails at once with 503 `upstream-overflow` (flag `UO`) and the
//! overflow is counted; nothing queues.
//!
//! [`Breaker`] is the shared state of one cluster: four counters and their limits.
//! [`CircuitBreaker`] is the layer that takes a request permit per upstream attempt and
//! keeps it until the response body ends (it rides in [`Body::Held`]). The connection
//! and pending permits are taken by the pool when it opens a connection, and the retry
//! permit by the retry policy before it retries.

mod future;
mod layer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use http::Response;
use metrics::Counter;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::CircuitBreakerLayer;
use super::Call;
use crate::http::{Body, ProxyError};
use crate::snapshot::policy::Limits;

/// Which limit a permit counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Requests in flight (`max_requests`).
    Request,
    /// Requests waiting for a new connection (`max_pending_requests`).
    Pending,
    /// Open connections (`max_connections`).
    Connection,
    /// Retries in flight (`max_retries`).
    Retry,
}

impl Kind {
    /// The limit's name, as `x-weft-error` details and logs give it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "max_requests",
            Self::Pending => "max_pending_requests",
            Self::Connection => "max_connections",
            Self::Retry => "max_retries",
        }
    }
}

/// Overflow counters of a cluster, one per limit.
#[derive(Clone, Debug)]
pub struct OverflowCounters {
    /// `max_requests` overflows.
    pub requests: Counter,
    /// `max_pending_requests` overflows.
    pub pending: Counter,
    /// `max_connections` overflows.
    pub connections: Counter,
    /// `max_retries` overflows (retries not made).
    pub retries: Counter,
}

/// A cluster's circuit-breaker state.
#[derive(Debug)]
pub struct Breaker {
    limits: Limits,
    in_use: [AtomicU32; 4],
    overflow: OverflowCounters,
}

impl Breaker {
    /// Fresh counters under `limits`.
    pub fn new(limits: Limits, overflow: OverflowCounters) -> Self {
        Self {
            limits,
            in_use: Default::default(),
            overflow,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether no request limit could ever be reached (every limit at its maximum): the
    /// layer is then left out of the stack.
    pub fn is_unlimited(&self) -> bool {
        self.limits.max_requests == u32::MAX
            && self.limits.max_pending_requests == u32::MAX
            && self.limits.max_connections == u32::MAX
            && self.limits.max_retries == u32::MAX
    }

    /// How many of `kind` are in use now.
    pub fn in_use(&self, kind: Kind) -> u32 {
        self.in_use[kind as usize].load(Ordering::Relaxed)
    }

    /// Takes one of `kind`, or counts an overflow and says which limit was hit.
    pub fn try_acquire(self: &Arc<Self>, kind: Kind) -> Result<Permit, ProxyError> {
        let limit = self.limit(kind);
        let slot = &self.in_use[kind as usize];
        // Increment first, then check: cheaper than a CAS loop, and a brief overshoot
        // by concurrent racers is corrected at once by their own release.
        let before = slot.fetch_add(1, Ordering::Relaxed);
        if before >= limit {
            slot.fetch_sub(1, Ordering::Relaxed);
            self.counter(kind).increment(1);
            return Err(ProxyError::Overflow(kind.name()));
        }
        Ok(Permit {
            breaker: self.clone(),
            kind,
        })
    }

    fn limit(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Request => self.limits.max_requests,
            Kind::Pending => self.limits.max_pending_requests,
            Kind::Connection => self.limits.max_connections,
            Kind::Retry => self.limits.max_retries,
        }
    }

    fn counter(&self, kind: Kind) -> &Counter {
        match kind {
            Kind::Request => &self.overflow.requests,
            Kind::Pending => &self.overflow.pending,
            Kind::Connection => &self.overflow.connections,
            Kind::Retry => &self.overflow.retries,
        }
    }
}

/// One unit of a limit, given back on drop.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    kind: Kind,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breaker.in_use[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a request permit for each attempt; over the limit, fails the attempt with
/// [`ProxyError::Overflow`] without calling the inner service.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<'a, S> {
    inner: S,
    breaker: &'a Arc<Breaker>,
}

impl<'a, S> CircuitBreaker<'a, S> {
    /// Wraps `inner` under `breaker`'s limits.
    pub fn new(inner: S, breaker: &'a Arc<Breaker>) -> Self {
        Self { inner, breaker }
    }
}

impl<S> Service<Call> for CircuitBreaker<'_, S>
where
    S: Service<Call, Response = Response<Body>, Error = ProxyError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        match self.breaker.try_acquire(Kind::Request) {
            Ok(permit) => ResponseFuture::called(self.inner.call(call), permit),
            Err(e) => ResponseFuture::overflow(e),
        }
    }
}

#[cfg(test)]
mod tests;
