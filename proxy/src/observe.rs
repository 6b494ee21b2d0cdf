//! What the proxy records about each request: metrics, access-log records and trace spans.
//!
//! A request's [`Exchange`] is created when it arrives and travels inside the response
//! body ([`Observed`]); when that body is dropped (sent to the end, or abandoned because
//! the client went away) the exchange is finished once: the Istio request metrics are
//! recorded with the final status, duration and byte counts, and, only for listeners
//! that ask for them, an access-log record is queued and sampled spans are queued for
//! export. Everything that costs more than a few atomic operations happens on other
//! threads (the access-log writer, the OTLP exporter); the per-request extras (strings
//! for the log, span attributes) are built only when a log or a sampled trace needs them.
//!
//! [`Telemetry`] is the process-wide part: the metric registry, the span exporter and
//! the open access-log writers (shared by every listener writing to the same place and
//! kept across reloads).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use http_body::{Body as _, Frame, SizeHint};
use metrics::Counter;
use tokio::time::Instant;
use weft_telemetry::access_log::{self, AccessLog, AccessLogError, AccessRecord, Kind};
use weft_telemetry::propagation::{self, SpanId, TraceId};
use weft_telemetry::trace::{self, AttrValue, SpanKind, SpanRecord, Tracer};
use weft_telemetry::{Registry, names};

use crate::http::body::{Body, BoxError};
use crate::http::headers;
use crate::snapshot::{AccessLogSpec, LogFilter, TracingSpec};
use crate::state::RequestStats;

/// Process-wide settings for telemetry, from the command line.
#[derive(Clone, Debug, Default)]
pub struct TelemetryOptions {
    /// OTLP/gRPC collector for spans; `None`: `OTEL_EXPORTER_OTLP_ENDPOINT`, if set.
    pub otlp_endpoint: Option<String>,
    /// This proxy's workload name, for metric labels (default `weft`).
    pub workload: Option<String>,
    /// This proxy's namespace, for metric labels (default `default`).
    pub namespace: Option<String>,
}

/// Who this proxy is, for the Istio metric labels.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Workload name.
    pub workload: String,
    /// Namespace.
    pub namespace: String,
}

/// The process-wide telemetry parts.
#[derive(Debug)]
pub struct Telemetry {
    /// Metrics.
    pub registry: Registry,
    /// Span export, when a collector is configured.
    pub tracer: Option<Tracer>,
    /// Who this proxy is.
    pub identity: Identity,
    logs: Mutex<HashMap<(access_log::Sink, access_log::Format), AccessLog>>,
    log_written: Counter,
    log_dropped: Counter,
}

/// Formatted access-log bytes buffered per sink at most (some 20,000 lines); beyond,
/// records are dropped and counted.
const ACCESS_LOG_BUFFER: usize = 8 * 1024 * 1024;

impl Telemetry {
    /// Sets up metrics and, when a collector is configured, the span exporter.
    pub fn new(registry: Registry, options: &TelemetryOptions) -> Telemetry {
        let env_endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        let tracer = if options.otlp_endpoint.is_some() || env_endpoint {
            let config = trace::ExportConfig {
                endpoint: options.otlp_endpoint.clone(),
                ..trace::ExportConfig::default()
            };
            match Tracer::start(
                config,
                registry.counter(names::SPANS_EXPORTED, &[]),
                registry.counter(names::SPANS_DROPPED, &[]),
            ) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(error = %e, "tracing disabled");
                    None
                }
            }
        } else {
            None
        };
        Telemetry {
            log_written: registry.counter(names::ACCESS_LOG_WRITTEN, &[]),
            log_dropped: registry.counter(names::ACCESS_LOG_DROPPED, &[]),
            registry,
            tracer,
            identity: Identity {
                workload: options.workload.clone().unwrap_or_else(|| "weft".into()),
                namespace: options
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            },
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// The writer for `spec`'s sink and format, opened on first use and then shared.
    pub fn access_log(&self, spec: &AccessLogSpec) -> Result<AccessLog, AccessLogError> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (spec.sink.clone(), spec.format);
        if let Some(l) = logs.get(&key) {
            return Ok(l.clone());
        }
        let l = AccessLog::open(
            spec.sink.clone(),
            spec.format,
            ACCESS_LOG_BUFFER,
            self.log_written.clone(),
            self.log_dropped.clone(),
        )?;
        logs.insert(key, l.clone());
        Ok(l)
    }

    /// Waits (bounded) until queued log records and spans are written; for shutdown.
    pub fn flush(&self, timeout: Duration) {
        let logs: Vec<AccessLog> = self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for l in logs {
            l.flush_blocking(timeout);
        }
        if let Some(t) = &self.tracer {
            t.flush_blocking(timeout);
        }
    }
}

/// A listener's run-time observation settings.
#[derive(Debug, Default)]
pub struct ListenerObserve {
    /// Open access logs with their filters.
    pub logs: Vec<(AccessLog, LogFilter)>,
    /// Tracing, when the listener asks for it and a collector exists.
    pub tracing: Option<TracingSpec>,
    /// The exporter (a clone of the process's).
    pub tracer: Option<Tracer>,
}

impl ListenerObserve {
    /// Opens what `logs` and `tracing` need.
    pub fn build(
        telemetry: &Telemetry,
        logs: &[AccessLogSpec],
        tracing: Option<TracingSpec>,
    ) -> Result<ListenerObserve, AccessLogError> {
        let mut out = ListenerObserve::default();
        for spec in logs {
            out.logs.push((telemetry.access_log(spec)?, spec.filter));
        }
        if let (Some(t), Some(tracer)) = (tracing, &telemetry.tracer) {
            out.tracing = Some(t);
            out.tracer = Some(tracer.clone());
        }
        Ok(out)
    }

    /// Writes a record to every log whose filter takes it (built only if one does).
    pub fn log(&self, status: u16, flags: &str, make: impl FnOnce() -> AccessRecord) {
        let mut takers = self
            .logs
            .iter()
            .filter(|(_, f)| f.accepts(status, flags))
            .map(|(l, _)| l)
            .peekable();
        if takers.peek().is_none() {
            return;
        }
        let record = make();
        for log in takers {
            log.log(&record);
        }
    }
}

/// The trace side of a sampled request.
#[derive(Debug)]
pub struct Traced {
    /// The trace.
    pub trace_id: TraceId,
    /// The proxy's server span.
    pub server_span: SpanId,
    /// The caller's span, if the request carried one.
    pub parent: Option<SpanId>,
    /// One client span per upstream attempt.
    pub attempts: Vec<Attempt>,
}

/// One upstream attempt, for its client span.
#[derive(Debug)]
pub struct Attempt {
    /// Its span id (sent upstream as the parent in `traceparent`).
    pub span_id: SpanId,
    /// When it started.
    pub start: Instant,
    /// When it failed (success ends with the response body).
    pub failed: Option<(Instant, &'static str)>,
    /// The endpoint it went to.
    pub upstream: Option<SocketAddr>,
}

/// What a request's trace context decided: ids to send upstream and, if sampled, what to
/// record. Pure inputs make it testable without a proxy.
#[derive(Debug)]
pub struct TraceDecision {
    /// The trace id (the caller's, or a new one).
    pub trace_id: TraceId,
    /// Whether spans are recorded (and `sampled` is sent on).
    pub sampled: bool,
    /// The caller's span.
    pub parent: Option<SpanId>,
    /// The caller's `tracestate`, forwarded.
    pub tracestate: Option<http::HeaderValue>,
    /// The B3 family the caller used, answered in kind.
    pub b3: Option<propagation::Format>,
}

/// Reads the request's trace headers and decides.
pub fn decide_trace(headers: &HeaderMap, spec: &TracingSpec) -> TraceDecision {
    let incoming = propagation::extract(headers);
    static X_WEFT_DEBUG: http::HeaderName = http::HeaderName::from_static("x-weft-debug");
    let debug = headers
        .get(&X_WEFT_DEBUG)
        .is_some_and(|v| v.as_bytes() == b"1");
    let sampled =
        trace::should_sample(incoming.as_ref(), debug, spec.sample_ratio, fastrand::f64());
    match incoming {
        Some(i) => TraceDecision {
            trace_id: i.trace_id,
            sampled,
            parent: Some(i.parent_span_id),
            tracestate: i.tracestate,
            b3: (i.format != propagation::Format::W3c).then_some(i.format),
        },
        None => TraceDecision {
            trace_id: propagation::new_trace_id(),
            sampled,
            parent: None,
            tracestate: None,
            b3: None,
        },
    }
}

/// The request facts an access-log record or a span needs, taken before the request is
/// handed on. Only built when one of them is wanted.
#[derive(Debug)]
pub struct Detail {
    /// The listener's logs and tracer.
    pub observe: Arc<ListenerObserve>,
    /// Wall-clock arrival time.
    pub start_wall: SystemTime,
    /// Listener name.
    pub listener: Arc<str>,
    /// Route name (empty: none matched).
    pub route: Arc<str>,
    /// Cluster name (empty: not forwarded).
    pub cluster: Arc<str>,
    /// The endpoint of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// The client.
    pub downstream: SocketAddr,
    /// Request method.
    pub method: Method,
    /// Authority.
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// HTTP version.
    pub version: Version,
    /// `x-request-id` as sent upstream.
    pub request_id: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-forwarded-for` as sent upstream.
    pub forwarded_for: Option<String>,
    /// Arrival to upstream response headers.
    pub ttfb: Option<Duration>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// The trace decision, when the listener traces (made on arrival).
    pub trace: Option<TraceDecision>,
    /// The trace, when sampled.
    pub traced: Option<Traced>,
    /// The authorization verdict (`allow`, `deny`, `audit_deny`), when a policy ran.
    pub authz_decision: Option<&'static str>,
    /// The rule that decided (`None`: the default).
    pub authz_rule: Option<Arc<str>>,
}

impl Detail {
    /// Facts from the request head.
    pub fn new<B>(
        observe: Arc<ListenerObserve>,
        listener: Arc<str>,
        downstream: SocketAddr,
        scheme: &'static str,
        authority: &str,
        req: &http::Request<B>,
    ) -> Detail {
        let (method, uri, head) = (req.method(), req.uri(), req.headers());
        let text = |name: &http::HeaderName| {
            head.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // Decided on arrival, so requests the proxy answers itself (no route, direct
        // responses, redirects) are traced like forwarded ones.
        let trace = observe.tracing.map(|spec| decide_trace(head, &spec));
        let traced = trace.as_ref().filter(|t| t.sampled).map(|t| Traced {
            trace_id: t.trace_id,
            server_span: propagation::new_span_id(),
            parent: t.parent,
            attempts: Vec::new(),
        });
        Detail {
            observe,
            start_wall: SystemTime::now(),
            listener,
            route: Arc::from(""),
            cluster: Arc::from(""),
            upstream: None,
            downstream,
            method: method.clone(),
            authority: authority.to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
            scheme,
            version: req.version(),
            // The caller's id; a forwarded request's is replaced by the one the upstream
            // gets, and a request without one gets one (like Envoy) when it is logged.
            // Only an id the upstream would also get (see `headers::is_sane_request_id`).
            request_id: head
                .get(&headers::X_REQUEST_ID)
                .filter(|v| headers::is_sane_request_id(v))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            user_agent: text(&http::header::USER_AGENT),
            forwarded_for: None,
            ttfb: None,
            attempts: 0,
            trace,
            traced,
            authz_decision: None,
            authz_rule: None,
        }
    }
}

/// One request being observed; finished once, when its response body is dropped.
#[derive(Debug)]
pub struct Exchange {
    /// Arrival.
    pub started: Instant,
    /// The metrics it counts into.
    pub stats: Arc<RequestStats>,
    /// `http` or `grpc`.
    pub protocol: &'static str,
    /// Response status sent.
    pub status: u16,
    /// Response flag (`-`: none).
    pub flags: &'static str,
    /// `grpc-status`, from the response headers or trailers.
    pub grpc_status: Option<u32>,
    /// Request body bytes, when the request had a body.
    pub request_bytes: Option<Arc<AtomicU64>>,
    /// Log and trace facts, when wanted.
    pub detail: Option<Box<Detail>>,
    /// The request's place in its connection's count of requests in flight.
    pub in_flight: Option<crate::http::handler::InFlight>,
}

impl Exchange {
    fn finish(&mut self, sent: u64, complete: bool) {
        let end = Instant::now();
        let duration = end.saturating_duration_since(self.started);
        // The client left before the whole response went out (Envoy's DC).
        let flags = if !complete && self.flags == "-" {
            "DC"
        } else {
            self.flags
        };
        let received = self
            .request_bytes
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        let peer = self
            .in_flight
            .as_ref()
            .and_then(|f| f.conn().peer_id.clone());
        self.stats.record(
            peer.as_ref(),
            self.status,
            flags,
            self.protocol,
            self.grpc_status,
            duration,
            received,
            sent,
        );
        let Some(d) = self.detail.take() else {
            return;
        };
        let (status, grpc_status) = (self.status, self.grpc_status);
        if let (Some(t), Some(tracer)) = (&d.traced, &d.observe.tracer) {
            record_spans(
                &d,
                t,
                tracer,
                self.started,
                end,
                status,
                flags,
                received,
                sent,
            );
        }
        let d = *d;
        let observe = d.observe;
        let traced = d.traced;
        observe.log(status, flags, move || AccessRecord {
            start_time: d.start_wall,
            kind: Kind::Http,
            direction: "gateway",
            listener: d.listener,
            route: d.route,
            cluster: d.cluster,
            upstream_address: d.upstream,
            downstream_address: d.downstream,
            method: Some(d.method),
            authority: d.authority,
            path: d.path,
            protocol: version_name(d.version),
            status,
            grpc_status,
            response_flags: Cow::Borrowed(flags),
            attempts: d.attempts,
            bytes_received: received,
            bytes_sent: sent,
            duration,
            upstream_ttfb: d.ttfb,
            request_id: Some(d.request_id.unwrap_or_else(|| {
                headers::new_request_id()
                    .to_str()
                    .unwrap_or_default()
                    .to_owned()
            })),
            trace_id: traced
                .as_ref()
                .map(|t| propagation::hex_trace_id(&t.trace_id)),
            span_id: traced
                .as_ref()
                .map(|t| propagation::hex_span_id(&t.server_span)),
            user_agent: d.user_agent,
            forwarded_for: d.forwarded_for,
            peer_identity: peer.map(|p| p.to_string()),
            authz_decision: d.authz_decision,
            authz_rule: d.authz_rule.map(|r| r.to_string()),
        });
    }
}

/// Queues a sampled request's server span and one client span per upstream attempt.
#[allow(clippy::too_many_arguments)]
fn record_spans(
    d: &Detail,
    t: &Traced,
    tracer: &Tracer,
    started: Instant,
    end: Instant,
    status: u16,
    flags: &'static str,
    received: u64,
    sent: u64,
) {
    let wall = |at: Instant| d.start_wall + at.saturating_duration_since(started);
    let mut server = SpanRecord {
        trace_id: t.trace_id,
        span_id: t.server_span,
        parent_span_id: t.parent,
        parent_is_remote: true,
        kind: SpanKind::Server,
        name: format!("{} {}", d.method, route_label(&d.route)),
        start: d.start_wall,
        end: wall(end),
        attributes: vec![
            ("http.request.method", d.method.as_str().into()),
            ("url.path", d.path.clone().into()),
            ("url.scheme", d.scheme.into()),
            ("server.address", d.authority.clone().into()),
            (
                "network.protocol.version",
                protocol_version(d.version).into(),
            ),
            ("client.address", d.downstream.ip().to_string().into()),
            ("http.response.status_code", i64::from(status).into()),
            ("http.request.body.size", saturate(received).into()),
            ("http.response.body.size", saturate(sent).into()),
            ("weft.listener", d.listener.to_string().into()),
            ("weft.route", d.route.to_string().into()),
            ("weft.response_flags", flags.into()),
        ],
        error: (status >= 500 || flags != "-").then(|| flags.to_owned()),
    };
    if let Some(ua) = &d.user_agent {
        server
            .attributes
            .push(("user_agent.original", ua.clone().into()));
    }
    if let Some(id) = &d.request_id {
        server
            .attributes
            .push(("weft.request_id", AttrValue::Str(id.clone())));
    }
    for (i, a) in t.attempts.iter().enumerate() {
        let (a_end, error) = match a.failed {
            Some((at, why)) => (at, Some(why.to_owned())),
            None => (end, (status >= 400).then(|| status.to_string())),
        };
        let mut attrs = vec![
            ("http.request.method", d.method.as_str().into()),
            ("weft.cluster", d.cluster.to_string().into()),
        ];
        if let Some(u) = a.upstream {
            attrs.push(("server.address", u.ip().to_string().into()));
            attrs.push(("server.port", i64::from(u.port()).into()));
        }
        if a.failed.is_none() {
            attrs.push(("http.response.status_code", i64::from(status).into()));
        }
        if i > 0 {
            attrs.push(("http.request.resend_count", (i as i64).into()));
        }
        tracer.record(SpanRecord {
            trace_id: t.trace_id,
            span_id: a.span_id,
            parent_span_id: Some(t.server_span),
            parent_is_remote: false,
            kind: SpanKind::Client,
            name: d.method.as_str().to_owned(),
            start: wall(a.start),
            end: wall(a_end),
            attributes: attrs,
            error,
        });
    }
    tracer.record(server);
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn route_label(route: &str) -> &str {
    if route.is_empty() {
        "(no route)"
    } else {
        route
    }
}

/// `HTTP/1.1` and the like, for logs.
pub fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `grpc-status` of a header or trailer block. Codes outside gRPC's 0..=16 count as
/// UNKNOWN (2), as the gRPC spec says, which also keeps the metric label bounded.
pub fn grpc_status(h: &HeaderMap) -> Option<u32> {
    let v = h.get("grpc-status")?;
    Some(
        match std::str::from_utf8(v.as_bytes()).ok()?.parse::<u32>() {
            Ok(c) if c <= 16 => c,
            _ => 2,
        },
    )
}

/// A response body that finishes its [`Exchange`] when dropped.
#[derive(Debug)]
pub struct Observed {
    inner: Body,
    sent: u64,
    ended: bool,
    exchange: Exchange,
}

impl Observed {
    /// Wraps `inner`.
    pub fn new(inner: Body, exchange: Exchange) -> Observed {
        Observed {
            inner,
            sent: 0,
            ended: false,
            exchange,
        }
    }

    /// Polls the wrapped body, counting bytes and reading gRPC trailers.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(s) = grpc_status(trailers)
                {
                    self.exchange.grpc_status = Some(s);
                }
            }
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => {
                // The upstream failed mid-body: the client gets a cut-off response.
                if self.exchange.flags == "-" {
                    self.exchange.flags = "UPE";
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    /// Whether the wrapped body is done.
    pub fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    /// The wrapped body's size hint.
    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let complete = self.ended || self.inner.is_end_stream();
        self.exchange.finish(self.sent, complete);
    }
}

/// A request body that counts the bytes passing through.
#[derive(Debug)]
pub struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl Counted {
    /// Wraps `inner`, adding to `count`.
    pub fn new(inner: Body, count: Arc<AtomicU64>) -> Counted {
        Counted { inner, count }
    }

    /// Polls the wrapped body, counting data bytes.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = http_body::Body::poll_frame(Pin::new(&mut self.inner), cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled.map_err(Into::into)
    }

    /// Whether the wrapped body is done.
    pub fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    /// The wrapped body's size hint.
    pub fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters() {
        let all = LogFilter::default();
        let errors = LogFilter {
            min_status: Some(400),
            flagged: true,
        };
        let flagged = LogFilter {
            min_status: None,
            flagged: true,
        };
        // (filter, status, flags, logged)
        let table = [
            (all, 200, "-", true),
            (all, 503, "UF", true),
            (errors, 200, "-", false),
            (errors, 404, "NR", true),
            (errors, 200, "DC", true),
            (errors, 0, "-", true),
            (flagged, 500, "-", false),
            (flagged, 200, "UT", true),
        ];
        for (i, (f, status, flags, want)) in table.iter().enumerate() {
            assert_eq!(f.accepts(*status, flags), *want, "row {i}");
        }
    }

    #[test]
    fn trace_decisions_follow_the_caller() {
        let spec = TracingSpec { sample_ratio: 0.0 };
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let d = decide_trace(&h, &spec);
        assert!(d.sampled);
        assert_eq!(
            propagation::hex_trace_id(&d.trace_id),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(
            d.parent.map(|p| propagation::hex_span_id(&p)).as_deref(),
            Some("b7ad6b7169203331")
        );
        // No context, ratio 0: not sampled, but a trace id to pass on all the same.
        let d = decide_trace(&HeaderMap::new(), &spec);
        assert!(!d.sampled);
        assert_ne!(d.trace_id, [0; 16]);
        // The debug header forces sampling.
        let mut h = HeaderMap::new();
        h.insert("x-weft-debug", http::HeaderValue::from_static("1"));
        assert!(decide_trace(&h, &spec).sampled);
    }
}
