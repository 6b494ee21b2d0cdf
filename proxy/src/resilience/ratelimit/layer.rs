//! The [`tower::Layer`] that puts a [`RateLimit`] in front of a service.

use std::net::IpAddr;

use tower::Layer;

use super::{Limiter, RateLimit};

/// Wraps a service in [`RateLimit`] over a route's [`Limiter`], for one client.
#[derive(Clone, Copy, Debug)]
pub struct RateLimitLayer<'a> {
    limiter: &'a Limiter,
    client_ip: IpAddr,
}

impl<'a> RateLimitLayer<'a> {
    /// Requests from `client_ip` counted by `limiter`.
    pub fn new(limiter: &'a Limiter, client_ip: IpAddr) -> Self {
        Self { limiter, client_ip }
    }
}

impl<'a, S> Layer<S> for RateLimitLayer<'a> {
    type Service = RateLimit<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter, self.client_ip)
    }
}
