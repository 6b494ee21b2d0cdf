//! The [`ResponseFuture`] of [`super::CircuitBreaker`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::Permit;
use crate::http::{Body, ProxyError};

pin_project! {
    /// The inner call holding its request permit, or an overflow answered at once.
    /// A successful response carries the permit in its body, so the request counts as
    /// in flight until the body ends.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<Permit>,
        overflow: Option<ProxyError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(inner: F, permit: Permit) -> Self {
        Self {
            inner: Some(inner),
            permit: Some(permit),
            overflow: None,
        }
    }

    pub(super) fn overflow(e: ProxyError) -> Self {
        Self {
            inner: None,
            permit: None,
            overflow: Some(e),
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, ProxyError>>,
{
    type Output = Result<Response<Body>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(this
                .overflow
                .take()
                .unwrap_or(ProxyError::Overflow("max_requests"))));
        };
        let result = ready!(inner.poll(cx));
        let permit = this.permit.take();
        Poll::Ready(result.map(|resp| match permit {
            Some(p) => resp.map(|body| Body::held(body, p)),
            None => resp,
        }))
    }
}
