//! Resilience policies as tower layers: what keeps services answering when their
//! dependencies misbehave.
//!
//! ```text
//! route level:    rate limit -> fault -> forward
//! upstream level: retry (policy, budget, replay) -> per-try timeout -> endpoint
//!                 (circuit breaker, balancer skipping ejected endpoints, pool)
//! ```
//! Each layer is a folder in tower's file shape (`mod.rs` with the service, `layer.rs`,
//! `future.rs`) plus a pure decision module tested by tables. The services are built per
//! request over borrowed state (the snapshot, the cluster), so nothing is boxed or
//! reference-counted for them; their futures borrow what the request already holds.
//! Outlier detection and active health checks are endpoint state, not layers: they live
//! in [`crate::upstream::outlier`] and [`crate::upstream::health`].

pub mod fault;
pub mod ratelimit;

pub mod breaker;
pub mod retry;
pub mod timeout;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::Request;

use crate::http::Body;
use crate::upstream::head::RequestHead;

/// One upstream attempt's request, as it travels down the upstream stack.
#[derive(Debug)]
pub struct Call {
    /// The request head as the upstream gets it, shared by the request's attempts.
    pub head: Arc<RequestHead>,
    /// The body (a copy of a held body on a retry).
    pub body: Body,
    /// The request's key for ring-hash balancing.
    pub hash: Option<u64>,
    /// Endpoints already tried (a retry prefers another one).
    pub tried: Vec<SocketAddr>,
    /// Held while this attempt is a retry in flight (the cluster's retry limit).
    pub retry_permit: Option<breaker::Permit>,
}

impl Call {
    /// A first attempt.
    pub fn new(req: Request<Body>, hash: Option<u64>) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            head: Arc::new(RequestHead::from_parts(parts)),
            body,
            hash,
            tried: Vec::new(),
            retry_permit: None,
        }
    }

    /// A copy for another attempt, when the body can be sent again (empty or held
    /// whole); `None` for a streamed body. The head is shared, not copied.
    pub fn try_clone(&self) -> Option<Self> {
        let body = match &self.body {
            Body::Empty => Body::Empty,
            Body::Full(b) => Body::Full(b.clone()),
            _ => return None,
        };
        Some(Self {
            head: self.head.clone(),
            body,
            hash: self.hash,
            tried: self.tried.clone(),
            retry_permit: None,
        })
    }
}

/// What happened to a request's attempts: shared (by reference) by the layers of one
/// request, read by the handler afterwards for logs, metrics and spans.
#[derive(Debug, Default)]
pub struct AttemptLog {
    inner: Mutex<Attempts>,
    /// The request's trace context, when it is traced: each attempt gets a span id of
    /// its own, sent upstream as the parent.
    trace: Option<TraceContext>,
    /// Set by a timeout layer when it gives up on the attempt in flight, so that the
    /// endpoint charges the attempt to the endpoint (and not a client that left).
    expired: AtomicBool,
}

/// The attempts of one request.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Attempts started.
    pub count: u32,
    /// The endpoint of the last attempt.
    pub last: Option<SocketAddr>,
    /// Why a retry that was wanted did not happen (`URX`: attempts or budget
    /// exhausted, `UO`: the retry limit), for the response flags.
    pub denied: Option<&'static str>,
    /// One span per attempt, when the request is sampled.
    pub spans: Vec<crate::observe::Attempt>,
}

/// What an attempt needs to write the trace headers the upstream gets.
#[derive(Debug)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: weft_telemetry::propagation::TraceId,
    /// Whether the trace is sampled (and spans recorded).
    pub sampled: bool,
    /// The caller's `tracestate`.
    pub tracestate: Option<http::HeaderValue>,
    /// The B3 family the caller used.
    pub b3: Option<weft_telemetry::propagation::Format>,
}

impl AttemptLog {
    /// A log for a request traced with `trace` (or not traced).
    pub fn new(trace: Option<TraceContext>) -> Self {
        Self {
            trace,
            ..Self::default()
        }
    }

    /// Records the start of an attempt to `endpoint` and writes its trace headers (into
    /// a copy of the head when another attempt shares it).
    pub fn started(&self, endpoint: SocketAddr, head: &mut Arc<RequestHead>) {
        let mut a = self.lock();
        a.count += 1;
        a.last = Some(endpoint);
        self.expired.store(false, Ordering::Relaxed);
        if let Some(t) = &self.trace {
            use weft_telemetry::propagation;
            let span_id = propagation::new_span_id();
            propagation::inject(
                &mut Arc::make_mut(head).headers,
                &propagation::Outgoing {
                    trace_id: t.trace_id,
                    span_id,
                    sampled: t.sampled,
                    tracestate: t.tracestate.as_ref(),
                    also: t.b3,
                },
            );
            if t.sampled {
                a.spans.push(crate::observe::Attempt {
                    span_id,
                    start: tokio::time::Instant::now(),
                    failed: None,
                    upstream: Some(endpoint),
                });
            }
        }
    }

    /// Records that the last attempt failed with `flag`.
    pub fn failed(&self, flag: &'static str) {
        if let Some(s) = self.lock().spans.last_mut() {
            s.failed = Some((tokio::time::Instant::now(), flag));
        }
    }

    /// Takes the attempt spans.
    pub fn take_spans(&self) -> Vec<crate::observe::Attempt> {
        std::mem::take(&mut self.lock().spans)
    }

    /// Records that a wanted retry was refused, and why (a response flag).
    pub fn deny(&self, flag: &'static str) {
        self.lock().denied = Some(flag);
    }

    /// The endpoint of the last attempt.
    pub fn last(&self) -> Option<SocketAddr> {
        self.lock().last
    }

    /// Attempts so far and the refused-retry flag.
    pub fn summary(&self) -> (u32, Option<SocketAddr>, Option<&'static str>) {
        let a = self.lock();
        (a.count, a.last, a.denied)
    }

    /// Marks the attempt in flight as given up by a timeout.
    pub fn expire(&self) {
        self.expired.store(true, Ordering::Relaxed);
    }

    /// Whether the attempt in flight was given up by a timeout.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
