//! The response future of [`Fault`](super::Fault).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use crate::http::{Body, ProxyError};
use crate::snapshot::policy::Abort;

pin_project! {
    /// The inner service's response, possibly after an injected delay, or an injected
    /// abort.
    #[derive(Debug)]
    pub struct ResponseFuture<S, B, F> {
        #[pin]
        state: State<S, B, F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<S, B, F> {
        // Waiting out the delay; then the abort if there is one, else the call to the
        // inner service (ready, moved here from the `Fault`; taken when the delay is
        // over).
        Delaying {
            #[pin]
            sleep: Sleep,
            abort: Option<Abort>,
            forward: Option<(S, Request<B>)>,
        },
        Forwarding {
            #[pin]
            future: F,
        },
        Aborted {
            abort: Abort,
        },
    }
}

impl<S, B, F> ResponseFuture<S, B, F> {
    /// The inner service's response future, as is.
    pub(super) fn forward(future: F) -> Self {
        Self {
            state: State::Forwarding { future },
        }
    }

    /// An abort without a delay.
    pub(super) fn abort(abort: Abort) -> Self {
        Self {
            state: State::Aborted { abort },
        }
    }

    /// `sleep`, then call `inner` with `req`.
    pub(super) fn delay_then_forward(sleep: Sleep, inner: S, req: Request<B>) -> Self {
        Self {
            state: State::Delaying {
                sleep,
                abort: None,
                forward: Some((inner, req)),
            },
        }
    }

    /// `sleep`, then abort.
    pub(super) fn delay_then_abort(sleep: Sleep, abort: Abort) -> Self {
        Self {
            state: State::Delaying {
                sleep,
                abort: Some(abort),
                forward: None,
            },
        }
    }
}

impl<S, B, F> Future for ResponseFuture<S, B, F>
where
    S: Service<Request<B>, Response = Response<Body>, Error = ProxyError, Future = F>,
    F: Future<Output = Result<Response<Body>, ProxyError>>,
{
    type Output = Result<Response<Body>, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            match state.as_mut().project() {
                StateProj::Delaying {
                    sleep,
                    abort,
                    forward,
                } => {
                    ready!(sleep.poll(cx));
                    let next = match (*abort, forward.take()) {
                        (Some(abort), _) => State::Aborted { abort },
                        (None, Some((mut inner, req))) => State::Forwarding {
                            future: inner.call(req),
                        },
                        // The state changes in the same poll that takes `forward`, so a
                        // delay is never seen without it; `Future` lets a future polled
                        // after completing do anything, and waiting is harmless.
                        (None, None) => return Poll::Pending,
                    };
                    state.set(next);
                }
                StateProj::Forwarding { future } => return future.poll(cx),
                StateProj::Aborted { abort } => {
                    return Poll::Ready(Err(ProxyError::FaultAbort(*abort)));
                }
            }
        }
    }
}
