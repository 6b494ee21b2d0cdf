//! The [`CircuitBreakerLayer`].

use std::sync::Arc;

use tower::Layer;

use super::{Breaker, CircuitBreaker};

/// Applies a cluster's circuit breaker to an upstream service.
#[derive(Clone, Copy, Debug)]
pub struct CircuitBreakerLayer<'a> {
    breaker: &'a Arc<Breaker>,
}

impl<'a> CircuitBreakerLayer<'a> {
    /// A layer counting against `breaker`.
    pub fn new(breaker: &'a Arc<Breaker>) -> Self {
        Self { breaker }
    }
}

impl<'a, S> Layer<S> for CircuitBreakerLayer<'a> {
    type Service = CircuitBreaker<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker)
    }
}
