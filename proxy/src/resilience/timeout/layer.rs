//! The [`TimeoutLayer`].

use std::time::Duration;

use tower::Layer;

use super::Timeout;
use crate::resilience::AttemptLog;

/// Applies a timeout (none when `None`).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer<'a> {
    after: Option<Duration>,
    log: &'a AttemptLog,
}

impl<'a> TimeoutLayer<'a> {
    /// A layer failing calls after `after`, noting expiry in `log`.
    pub fn new(after: Option<Duration>, log: &'a AttemptLog) -> Self {
        Self { after, log }
    }
}

impl<'a, S> Layer<S> for TimeoutLayer<'a> {
    type Service = Timeout<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.after, self.log)
    }
}
