//! Retries: tower's [`tower::retry::Retry`] service driven by [`Attempts`], Weft's
//! [`tower::retry::Policy`]. For each failed attempt the policy asks, in order: does the
//! route retry this outcome for this method ([`policy::retriable`]), are attempts left,
//! does the cluster allow another retry in flight (circuit breaker `max_retries`), and
//! does the cluster's [`budget::Budget`] have a token. Then it notes the endpoint just
//! tried (the next pick avoids it when another exists) and waits a jittered backoff.
//!
//! Only requests whose body can be sent again are retried: no body, or a body held
//! whole because it was small enough ([`replay`]); [`crate::resilience::Call::try_clone`]
//! refuses anything else, so a streamed body is never retried.

pub mod budget;
mod layer;
pub mod policy;
pub mod replay;

use std::sync::Arc;

use http::Response;
use metrics::Counter;
use tokio::time::Sleep;

pub use self::layer::RetryLayer;
use super::breaker::{Breaker, Kind};
use super::{AttemptLog, Call};
use crate::http::{Body, ProxyError};
use crate::snapshot::policy::RetryPolicy;

/// The retry service: tower's, with [`Attempts`] as the policy.
pub type Retry<'a, S> = tower::retry::Retry<Attempts<'a>, S>;

/// What the policy reads and counts, per cluster.
#[derive(Debug)]
pub struct RetryState {
    /// The cluster's retry budget.
    pub budget: budget::Budget,
    /// Retries made.
    pub retries: Counter,
    /// Retries refused by the budget.
    pub budget_exhausted: Counter,
}

/// The retry policy of one request: the route's rules and how many retries are left.
/// tower clones it per request; it borrows everything else.
#[derive(Clone, Debug)]
pub struct Attempts<'a> {
    rules: &'a RetryPolicy,
    state: &'a RetryState,
    breaker: &'a Arc<Breaker>,
    log: &'a AttemptLog,
    /// The request is gRPC: a `200` may carry a failure in `grpc-status`.
    grpc: bool,
    made: u32,
}

impl<'a> Attempts<'a> {
    /// A fresh policy for one request.
    pub fn new(
        rules: &'a RetryPolicy,
        state: &'a RetryState,
        breaker: &'a Arc<Breaker>,
        log: &'a AttemptLog,
        grpc: bool,
    ) -> Self {
        Self {
            rules,
            state,
            breaker,
            log,
            grpc,
            made: 0,
        }
    }
}

impl tower::retry::Policy<Call, Response<Body>, ProxyError> for Attempts<'_> {
    type Future = Sleep;

    fn retry(
        &mut self,
        req: &mut Call,
        result: &mut Result<Response<Body>, ProxyError>,
    ) -> Option<Sleep> {
        // tower asks after every try; most answers are plainly final, and telling so
        // from the status alone spares every request a header lookup.
        if let Ok(resp) = result {
            let s = resp.status().as_u16();
            if s < 500
                && s != 409
                && !(self.grpc && s == 200)
                && !self.rules.status_codes.contains(&s)
            {
                return None;
            }
        }
        let outcome = policy::classify(result);
        if !policy::retriable(self.rules, &req.head.method, outcome) {
            return None;
        }
        if self.made >= self.rules.num_retries {
            self.log.deny("URX");
            return None;
        }
        let permit = match self.breaker.try_acquire(Kind::Retry) {
            Ok(p) => p,
            Err(_) => {
                self.log.deny("UO");
                return None;
            }
        };
        if !self.state.budget.withdraw() {
            self.state.budget_exhausted.increment(1);
            self.log.deny("URX");
            return None;
        }
        self.made += 1;
        self.state.retries.increment(1);
        // The attempt being retried ends here; its span says with what (failures that
        // are errors were noted by the endpoint already).
        if let policy::Outcome::Status { status, grpc } = outcome {
            self.log.failed(policy::describe(status, grpc));
        }
        if let Ok(resp) = result {
            drain_ready(resp.body_mut());
        }
        if self.rules.other_endpoint
            && let Some(last) = self.log.last()
        {
            req.tried.push(last);
        }
        req.retry_permit = Some(permit);
        let wait = policy::backoff(
            self.made,
            self.rules.backoff_base,
            self.rules.backoff_max,
            fastrand::f64(),
        );
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Call) -> Option<Call> {
        // No copy when no retry can follow (the last attempt, or a streamed body).
        if self.made >= self.rules.num_retries {
            return None;
        }
        req.try_clone()
    }
}

/// Reads what a discarded response body already has, without waiting: a short error
/// body that arrived with its head is read to its end, so its HTTP/1.1 connection goes
/// back to the pool instead of being closed. A body still on its way is dropped (and
/// its connection closed), as it would be anyway.
fn drain_ready(body: &mut Body) {
    use futures_util::FutureExt;
    use http_body_util::BodyExt;
    for _ in 0..DRAIN_FRAMES {
        match body.frame().now_or_never() {
            Some(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

/// Frames read at most from a discarded body.
const DRAIN_FRAMES: usize = 8;

#[cfg(test)]
mod tests;
