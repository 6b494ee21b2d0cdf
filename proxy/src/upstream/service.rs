//! The bottom of the upstream stack: one attempt, to one endpoint of a cluster.
//!
//! [`Endpoints`] is the tower service the resilience layers wrap. Each call picks an
//! endpoint (skipping ejected and unhealthy ones, and the ones this request already
//! tried when another exists), writes the attempt's trace headers, sends through the
//! endpoint's pool under the cluster's connection limits, and reports the outcome to
//! the balancer (latency) and to outlier detection. An attempt that a timeout cuts short
//! is charged to its endpoint as a local failure when its future is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use tokio::time::Instant;
use tower::Service;
use weft_telemetry::{Registry, names};

use super::outlier::Outcome;
use super::{Cluster, Endpoint, FAILURE_PENALTY};
use crate::http::{Body, ProxyError};
use crate::resilience::breaker::{Breaker, Kind, OverflowCounters};
use crate::resilience::retry::{RetryState, budget::Budget};
use crate::resilience::{AttemptLog, Call};
use crate::snapshot;

/// The cluster as a service of attempts.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints<'a> {
    cluster: &'a Cluster,
    log: &'a AttemptLog,
}

impl<'a> Endpoints<'a> {
    /// Attempts on `cluster`, noted in `log`.
    pub fn new(cluster: &'a Cluster, log: &'a AttemptLog) -> Self {
        Self { cluster, log }
    }
}

/// The future of one attempt (boxed: the pool's send future is large, and one box per
/// attempt keeps every layer above it small to move).
pub type AttemptFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a>>;

impl<'a> Service<Call> for Endpoints<'a> {
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = AttemptFuture<'a>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        Box::pin(self.cluster.attempt(call, self.log))
    }
}

impl Cluster {
    /// One attempt: pick, send, account.
    pub async fn attempt(
        &self,
        mut call: Call,
        log: &AttemptLog,
    ) -> Result<Response<Body>, ProxyError> {
        let endpoint = self
            .pick(call.hash, &call.tried)
            .ok_or(ProxyError::NoHealthyUpstream)?;
        log.started(endpoint.addr, &mut call.head);
        // The endpoint is charged for its own attempt only, not for earlier tries,
        // backoff, a held body or an injected delay.
        let attempt_start = Instant::now();
        let mut charge = Charge {
            cluster: self,
            endpoint: &endpoint,
            log,
            settled: false,
        };
        self.make_room(&endpoint);
        let in_flight = endpoint.load.start();
        let result = endpoint
            .client
            .send(&call.head, call.body, &self.breaker)
            .await;
        charge.settled = true;
        let now = Instant::now();
        let outcome = match &result {
            Ok(resp) if resp.status().is_server_error() => {
                Some(Outcome::Status(resp.status().as_u16()))
            }
            Ok(_) => Some(Outcome::Success),
            Err(
                ProxyError::ConnectFailure(_)
                | ProxyError::UpstreamReset(_)
                | ProxyError::UpstreamProtocol(_),
            ) => Some(Outcome::LocalFailure),
            // Not the endpoint's doing (a limit, the client's body).
            Err(_) => None,
        };
        let rtt = match outcome {
            Some(Outcome::LocalFailure) => FAILURE_PENALTY,
            _ => now.saturating_duration_since(attempt_start),
        };
        endpoint.load.observe(rtt, now);
        drop(in_flight);
        if let Some(o) = outcome {
            self.record(&endpoint, o);
        }
        if let Err(e) = &result {
            log.failed(e.response_flag());
        }
        // The retry permit (if this is a retry) is released with the attempt.
        drop(call.retry_permit.take());
        result
    }
}

impl Cluster {
    /// At the connection limit, an endpoint without an idle connection would overflow
    /// while other endpoints (often ejected or unhealthy ones) sit on idle connections
    /// holding permits: close one of those first.
    fn make_room(&self, endpoint: &Endpoint) {
        let limit = self.breaker.limits().max_connections;
        if self.breaker.in_use(Kind::Connection) < limit || endpoint.client.idle_connections() > 0 {
            return;
        }
        let set = self.endpoints();
        let _ = set
            .endpoints
            .iter()
            .filter(|(e, _)| e.addr != endpoint.addr)
            .any(|(e, _)| e.client.close_one_idle());
    }
}

/// Charges an attempt that never finished because a timeout gave up on it.
struct Charge<'a> {
    cluster: &'a Cluster,
    endpoint: &'a Arc<Endpoint>,
    log: &'a AttemptLog,
    settled: bool,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        // Dropped unsettled: cut short. A timeout is the endpoint's failure; a client
        // that went away is not.
        if !self.settled && self.log.expired() {
            self.endpoint.load.observe(FAILURE_PENALTY, Instant::now());
            self.cluster.record(self.endpoint, Outcome::LocalFailure);
            self.log.failed("UT");
        }
    }
}

/// The circuit breaker of a cluster built from `config`.
pub(super) fn breaker(config: &snapshot::Cluster, registry: &Registry) -> Arc<Breaker> {
    let counter = |limit: &'static str| {
        registry.counter(
            names::UPSTREAM_OVERFLOW_TOTAL,
            &[
                (names::label::CLUSTER, config.name.to_string()),
                (names::label::LIMIT, limit.to_owned()),
            ],
        )
    };
    Arc::new(Breaker::new(
        config.limits,
        OverflowCounters {
            requests: counter("max_requests"),
            pending: counter("max_pending_requests"),
            connections: counter("max_connections"),
            retries: counter("max_retries"),
        },
    ))
}

/// The retry state of a cluster built from `config`.
pub(super) fn retry_state(config: &snapshot::Cluster, registry: &Registry) -> RetryState {
    let label = [(names::label::CLUSTER, config.name.to_string())];
    RetryState {
        budget: Budget::new(&config.limits.budget),
        retries: registry.counter(names::RETRIES_TOTAL, &label),
        budget_exhausted: registry.counter(names::RETRY_BUDGET_EXHAUSTED_TOTAL, &label),
    }
}
