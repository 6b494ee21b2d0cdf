//! The [`ResponseFuture`] of [`super::Timeout`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::http::ProxyError;
use crate::resilience::AttemptLog;

pin_project! {
    /// The inner call raced against a timer.
    #[derive(Debug)]
    pub struct ResponseFuture<'a, F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        log: &'a AttemptLog,
    }
}

impl<'a, F> ResponseFuture<'a, F> {
    pub(super) fn new(inner: F, sleep: Option<Sleep>, log: &'a AttemptLog) -> Self {
        Self { inner, sleep, log }
    }
}

impl<F, T> Future for ResponseFuture<'_, F>
where
    F: Future<Output = Result<T, ProxyError>>,
{
    type Output = Result<T, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            return Poll::Ready(r);
        }
        match this.sleep.as_pin_mut().map(|s| s.poll(cx)) {
            Some(Poll::Ready(())) => {
                this.log.expire();
                Poll::Ready(Err(ProxyError::Timeout))
            }
            _ => Poll::Pending,
        }
    }
}
