//! The one body type of the data path, in both directions.
//!
//! A request body arrives as hyper's `Incoming` (or, on the HTTP/1.1 loop, as the
//! `Full` bytes that came with the head) and is handed to the upstream client as is; a
//! response body comes back the same way. Nothing is collected: frames flow as they
//! arrive, so memory per request stays bounded whatever the body's size. Local answers
//! (errors, redirects, direct responses) are small `Full` bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::observe::{Counted, Observed};
use crate::upstream::h1::ResponseBody;

/// Boxed error for bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming or fixed body.
#[derive(Debug, Default)]
pub enum Body {
    /// No bytes.
    #[default]
    Empty,
    /// A fixed buffer, sent as one frame.
    Full(Option<Bytes>),
    /// Streamed from a peer.
    Incoming(Incoming),
    /// Streamed from a pooled HTTP/1.1 upstream connection, reused once this ends.
    /// (Boxed: it is large, and the body travels by value through several layers.)
    Upstream(Box<ResponseBody>),
    /// A response body whose end (or abandonment) finishes the request's metrics, log
    /// record and spans.
    Observed(Box<Observed>),
    /// A request body whose bytes are counted on the way upstream.
    Counted(Box<Counted>),
    /// A response body that holds a circuit-breaker permit until it ends.
    Held(Box<Held>),
}

/// A body and the permit it keeps while it lives.
#[derive(Debug)]
pub struct Held {
    body: Body,
    _permit: crate::resilience::breaker::Permit,
}

impl Body {
    /// `body`, holding `permit` until it is dropped.
    pub fn held(body: Body, permit: crate::resilience::breaker::Permit) -> Self {
        Self::Held(Box::new(Held {
            body,
            _permit: permit,
        }))
    }

    /// A fixed body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            Self::Empty
        } else {
            Self::Full(Some(b))
        }
    }
}

impl From<Incoming> for Body {
    fn from(b: Incoming) -> Self {
        Self::Incoming(b)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Upstream(b) => Pin::new(&mut **b).poll_frame(cx),
            Self::Observed(b) => b.poll_frame(cx),
            Self::Counted(b) => b.poll_frame(cx),
            Self::Held(b) => Pin::new(&mut b.body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(b) => b.is_none(),
            Self::Incoming(b) => b.is_end_stream(),
            Self::Upstream(b) => b.is_end_stream(),
            Self::Observed(b) => b.is_end_stream(),
            Self::Counted(b) => b.is_end_stream(),
            Self::Held(b) => b.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Incoming(b) => b.size_hint(),
            Self::Upstream(b) => b.size_hint(),
            Self::Observed(b) => b.size_hint(),
            Self::Counted(b) => b.size_hint(),
            Self::Held(b) => b.body.size_hint(),
        }
    }
}
