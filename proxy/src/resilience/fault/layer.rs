//! The [`tower::Layer`] that puts [`Fault`] injection in front of a service.

use tower::Layer;

use super::{Fault, FaultState};

/// Wraps a service in [`Fault`] over a route's [`FaultState`].
#[derive(Clone, Copy, Debug)]
pub struct FaultLayer<'a> {
    state: &'a FaultState,
}

impl<'a> FaultLayer<'a> {
    /// Faults as `state` configures them.
    pub fn new(state: &'a FaultState) -> Self {
        Self { state }
    }
}

impl<'a, S> Layer<S> for FaultLayer<'a> {
    type Service = Fault<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault::new(inner, self.state)
    }
}
