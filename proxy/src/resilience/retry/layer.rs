//! The [`RetryLayer`].

use std::sync::Arc;

use tower::Layer;

use super::{Attempts, Retry, RetryState};
use crate::resilience::AttemptLog;
use crate::resilience::breaker::Breaker;
use crate::snapshot::policy::RetryPolicy;

/// Retries calls of one request under a route's policy.
#[derive(Clone, Debug)]
pub struct RetryLayer<'a> {
    attempts: Attempts<'a>,
}

impl<'a> RetryLayer<'a> {
    /// A layer for one request (`grpc`: a gRPC one) of a route with `rules`, on a
    /// cluster with `state` and `breaker`.
    pub fn new(
        rules: &'a RetryPolicy,
        state: &'a RetryState,
        breaker: &'a Arc<Breaker>,
        log: &'a AttemptLog,
        grpc: bool,
    ) -> Self {
        Self {
            attempts: Attempts::new(rules, state, breaker, log, grpc),
        }
    }
}

impl<'a, S> Layer<S> for RetryLayer<'a> {
    type Service = Retry<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(self.attempts.clone(), inner)
    }
}
