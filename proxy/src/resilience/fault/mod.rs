//! Fault injection on a route (Envoy's `fault` filter): delay some requests, answer
//! some with an error instead of forwarding them, to test how callers cope.
//!
//! [`decide`] is the whole decision, with the random rolls as arguments. [`Fault`] is the
//! tower service in front of a route's forwarding: it rolls, sleeps the delay if one
//! applies, then answers [`ProxyError::FaultAbort`] or calls the inner service. Envoy's
//! request headers that choose faults per request (`x-envoy-fault-*`) are not honoured.
//!
//! ```
//! use std::time::Duration;
//!
//! use tower::{Layer, ServiceExt};
//! use weft_proxy::http::{Body, ProxyError};
//! use weft_proxy::resilience::fault::{FaultLayer, FaultState};
//! use weft_proxy::snapshot::policy::{Abort, Fault};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let state = FaultState::new(&Fault {
//!     delay: None,
//!     abort: Some((Abort::Http(503), 100.0)),
//! });
//! let forward = tower::service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, ProxyError>(http::Response::new(Body::Empty))
//! });
//! let resp = FaultLayer::new(&state)
//!     .layer(forward)
//!     .oneshot(http::Request::new(()))
//!     .await;
//! assert!(matches!(resp, Err(ProxyError::FaultAbort(Abort::Http(503)))));
//! # }
//! ```

mod decide;
pub mod future;
mod layer;
#[cfg(test)]
mod tests;

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use metrics::Counter;
use tower::Service;

pub use self::decide::decide;
use self::future::ResponseFuture;
pub use self::layer::FaultLayer;
use crate::http::{Body, ProxyError};
use crate::snapshot::policy::{self, Abort};

/// The run-time state of one route's [`policy::Fault`]: the configuration and its
/// counters. `Send + Sync`, one per route and snapshot.
#[derive(Debug)]
pub struct FaultState {
    fault: policy::Fault,
    counters: FaultCounters,
}

/// Counters of injected faults (`weft_fault_injected_total{kind}`); no-ops by default.
#[derive(Clone, Debug)]
pub struct FaultCounters {
    /// Requests delayed (`kind="delay"`).
    pub delays: Counter,
    /// Requests aborted (`kind="abort"`).
    pub aborts: Counter,
}

impl Default for FaultCounters {
    /// Counters that count nothing.
    fn default() -> Self {
        Self {
            delays: Counter::noop(),
            aborts: Counter::noop(),
        }
    }
}

impl FaultState {
    /// The state for `fault`, counters no-ops.
    pub fn new(fault: &policy::Fault) -> Self {
        Self::with_counters(fault, FaultCounters::default())
    }

    /// The state for `fault`, counting into `counters`.
    pub fn with_counters(fault: &policy::Fault, counters: FaultCounters) -> Self {
        Self {
            fault: fault.clone(),
            counters,
        }
    }

    /// Rolls the dice for one request and counts what it got.
    pub fn roll(&self) -> (Option<Duration>, Option<Abort>) {
        let (delay, abort) = decide(
            &self.fault,
            fastrand::f64() * 100.0,
            fastrand::f64() * 100.0,
        );
        if delay.is_some() {
            self.counters.delays.increment(1);
        }
        if abort.is_some() {
            self.counters.aborts.increment(1);
        }
        (delay, abort)
    }
}

/// Fault injection in front of `S` for one request (see the module docs).
///
/// `S: Clone` because a delayed request calls the inner service after the delay, from
/// the response future: the service that was made ready moves into the future and a
/// clone takes its place here.
#[derive(Clone, Debug)]
pub struct Fault<'a, S> {
    inner: S,
    state: &'a FaultState,
}

impl<'a, S> Fault<'a, S> {
    /// `inner` with the faults `state` configures.
    pub fn new(inner: S, state: &'a FaultState) -> Self {
        Self { inner, state }
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Fault<'_, S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = ProxyError> + Clone,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = ResponseFuture<S, B, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.state.roll() {
            (None, None) => ResponseFuture::forward(self.inner.call(req)),
            (None, Some(abort)) => ResponseFuture::abort(abort),
            (Some(delay), Some(abort)) => {
                ResponseFuture::delay_then_abort(tokio::time::sleep(delay), abort)
            }
            (Some(delay), None) => {
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::delay_then_forward(tokio::time::sleep(delay), ready, req)
            }
        }
    }
}
