//! The response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Response};
use pin_project_lite::pin_project;

use super::Quota;
use crate::http::error::RateLimitInfo;
use crate::http::{Body, ProxyError};

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pin_project! {
    /// The inner service's response (with the `x-ratelimit-*` headers when asked), or
    /// the refusal of a limited request.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Forward {
            #[pin]
            future: F,
            quota: Option<Quota>,
        },
        Limited {
            info: RateLimitInfo,
        },
    }
}

impl<F> ResponseFuture<F> {
    /// The inner service's response, with `quota` as headers when given.
    pub(super) fn forward(future: F, quota: Option<Quota>) -> Self {
        Self {
            kind: Kind::Forward { future, quota },
        }
    }

    /// A refusal.
    pub(super) fn limited(info: RateLimitInfo) -> Self {
        Self {
            kind: Kind::Limited { info },
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, ProxyError>>,
{
    type Output = Result<Response<Body>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Forward { future, quota } => {
                let mut resp = ready!(future.poll(cx))?;
                if let Some(q) = quota {
                    let h = resp.headers_mut();
                    h.insert(LIMIT, HeaderValue::from(q.limit));
                    h.insert(REMAINING, HeaderValue::from(q.remaining));
                    h.insert(RESET, HeaderValue::from(q.reset_secs));
                }
                Poll::Ready(Ok(resp))
            }
            KindProj::Limited { info } => Poll::Ready(Err(ProxyError::RateLimited(*info))),
        }
    }
}
