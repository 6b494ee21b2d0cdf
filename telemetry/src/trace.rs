//! Distributed tracing: the sampling decision, finished spans, and their OTLP export.
//!
//! The data path never touches the OpenTelemetry SDK's span machinery. For a sampled
//! request it fills a plain [`SpanRecord`] (ids, times, a few attributes) and hands it
//! to [`Tracer::record`], which only does a `try_send` on a bounded queue: a full queue
//! (the collector is slow or down) drops the span and counts it, it never waits. One
//! thread, `weft-otlp`, owns a small Tokio runtime and the `opentelemetry-otlp` gRPC
//! exporter: it turns records into the SDK's `SpanData` there, batches them and exports.
//! So a request pays for a span only when it is sampled, and even then only for filling
//! a struct; encoding and network I/O happen on another thread.
//!
//! Why not the SDK's `BatchSpanProcessor`? It drops spans silently when its queue is
//! full, and the issue asks for every drop to be counted; it also wants every span to go
//! through the SDK's `Span` API, which costs a few allocations per attribute on the data
//! path. The export itself (protocol, endpoint and `OTEL_*` environment handling) is the
//! SDK's own.

use std::borrow::Cow;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use metrics::Counter;
use opentelemetry::trace::{SpanContext, SpanKind as OtelKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::mpsc;

use crate::propagation::{Incoming, SpanId, TraceId};

/// Whether a request is traced: the decision function, pure so it is tested by a table.
///
/// In order: a debug request (`x-weft-debug: 1`, or a B3 debug flag) is always sampled;
/// a caller that decided (W3C `sampled` flag, B3 sampling state) is followed, as a
/// parent-based sampler does, so a trace is never cut in the middle; otherwise the
/// listener's ratio decides, `draw` being a uniform number in `[0, 1)`.
pub fn should_sample(
    incoming: Option<&Incoming>,
    debug_header: bool,
    ratio: f64,
    draw: f64,
) -> bool {
    if debug_header || incoming.is_some_and(|i| i.debug) {
        return true;
    }
    if let Some(decided) = incoming.and_then(|i| i.sampled) {
        return decided;
    }
    draw < ratio
}

/// Server (the request as received) or client (one attempt to an upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A request received by the proxy.
    Server,
    /// One attempt to send the request upstream.
    Client,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_owned())
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}

/// A finished span, as the data path fills it.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    /// Its parent's id, if it has one.
    pub parent_span_id: Option<SpanId>,
    /// Whether the parent lives in another process (it came in a request header).
    pub parent_is_remote: bool,
    /// Server or client.
    pub kind: SpanKind,
    /// The span name (`GET route-name`: low cardinality, never a raw path).
    pub name: String,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Attributes, with OpenTelemetry semantic-convention keys.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Set when the operation failed: the reason.
    pub error: Option<String>,
}

/// Where and how spans are exported.
#[derive(Clone, Debug, Default)]
pub struct ExportConfig {
    /// The collector's gRPC endpoint (`http://host:4317`); `None`: from
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `service.name` of the exported resource; `None`: from `OTEL_SERVICE_NAME`, else
    /// `weft`.
    pub service_name: Option<String>,
    /// Spans queued at most before new ones are dropped (default 2048).
    pub queue: usize,
    /// Spans per export call at most (default 512).
    pub batch: usize,
    /// How long a span may wait for its batch to fill (default 1 s).
    pub interval: Duration,
}

/// Errors from starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The exporter could not be built (a malformed endpoint, usually).
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    /// The exporter thread could not be started.
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(#[from] std::io::Error),
}

enum Msg {
    Span(Box<SpanRecord>),
    Flush(std_mpsc::Sender<()>),
}

/// The handle the data path records spans through; cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    tx: mpsc::Sender<Msg>,
    dropped: Counter,
    /// Cuts the exporter's pause short (a flush should not wait out the interval).
    wake: std::sync::Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Tracer {
    /// Starts the export thread. `exported` and `dropped` count spans.
    pub fn start(
        config: ExportConfig,
        exported: Counter,
        dropped: Counter,
    ) -> Result<Tracer, TraceError> {
        let queue = if config.queue == 0 {
            2048
        } else {
            config.queue
        };
        let (tx, rx) = mpsc::channel(queue);
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let thread_dropped = dropped.clone();
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let thread_wake = wake.clone();
        std::thread::Builder::new()
            .name("weft-otlp".into())
            .spawn(move || {
                export_thread(config, rx, exported, thread_dropped, thread_wake, ready_tx)
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Tracer { tx, dropped, wake }),
            Ok(Err(e)) => Err(TraceError::Exporter(e)),
            Err(_) => Err(TraceError::Exporter("export thread ended".into())),
        }
    }

    /// Queues a finished span for export; never blocks (a full queue drops and counts).
    pub fn record(&self, span: SpanRecord) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.dropped.increment(1);
        }
    }

    /// Waits (blocking the calling thread, at most `timeout`) until every span queued
    /// so far has been through an export attempt. For shutdown and tests.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        const RETRY: Duration = Duration::from_millis(1);
        let (ack_tx, ack_rx) = std_mpsc::channel();
        let mut msg = Msg::Flush(ack_tx);
        let mut budget = timeout;
        // The marker queues behind the spans; while the queue is full, wait for room.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(m)) if budget > RETRY => {
                    msg = m;
                    budget -= RETRY;
                    std::thread::sleep(RETRY);
                }
                Err(_) => return false,
            }
        }
        self.wake.notify_one();
        ack_rx.recv_timeout(budget).is_ok()
    }
}

fn export_thread(
    config: ExportConfig,
    mut rx: mpsc::Receiver<Msg>,
    exported: Counter,
    dropped: Counter,
    wake: std::sync::Arc<tokio::sync::Notify>,
    ready: std_mpsc::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    rt.block_on(async move {
        // Built inside the runtime: the gRPC channel connects lazily and needs one.
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &config.endpoint {
            use opentelemetry_otlp::WithExportConfig as _;
            builder = builder.with_endpoint(endpoint.clone());
        }
        let mut exporter = match builder.build() {
            Ok(e) => e,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        // `Resource::builder` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
        let mut resource = Resource::builder();
        if let Some(name) = &config.service_name {
            resource = resource.with_service_name(name.clone());
        } else if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("weft");
        }
        exporter.set_resource(&resource.build());
        let _ = ready.send(Ok(()));

        let scope = InstrumentationScope::builder("weft")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let batch_max = if config.batch == 0 { 512 } else { config.batch };
        let interval = if config.interval.is_zero() {
            Duration::from_secs(1)
        } else {
            config.interval
        };
        let mut batch: Vec<SpanData> = Vec::with_capacity(batch_max);
        let mut acks: Vec<std_mpsc::Sender<()>> = Vec::new();
        let mut failing = false;
        loop {
            // Wait for the first span, then let more gather for up to `interval` without
            // waiting on the queue: while this task sleeps, queuing a span wakes nobody,
            // so the data path pays no wake-up per span.
            let first = rx.recv().await;
            let mut closed = first.is_none();
            let mut next = first;
            let mut slept = false;
            loop {
                match next.take() {
                    Some(Msg::Span(s)) => batch.push(to_span_data(*s, &scope)),
                    Some(Msg::Flush(ack)) => {
                        acks.push(ack);
                        break;
                    }
                    None => {}
                }
                if closed || batch.len() >= batch_max {
                    break;
                }
                match rx.try_recv() {
                    Ok(m) => next = Some(m),
                    Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
                    Err(mpsc::error::TryRecvError::Empty) if !slept => {
                        tokio::select! {
                            _ = tokio::time::sleep(interval) => {}
                            _ = wake.notified() => {}
                        }
                        slept = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            if !batch.is_empty() {
                let n = batch.len() as u64;
                match exporter.export(std::mem::take(&mut batch)).await {
                    Ok(()) => {
                        exported.increment(n);
                        failing = false;
                    }
                    Err(e) => {
                        dropped.increment(n);
                        // One warning per failure streak, not one per batch.
                        if !failing {
                            tracing::warn!(error = %e, "span export failed; dropping spans until it recovers");
                        }
                        failing = true;
                    }
                }
                batch.reserve(batch_max);
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            if closed {
                return;
            }
        }
    });
}

fn to_span_data(s: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let ctx = SpanContext::new(
        opentelemetry::TraceId::from_bytes(s.trace_id),
        opentelemetry::SpanId::from_bytes(s.span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let attributes = s
        .attributes
        .into_iter()
        .map(|(k, v)| match v {
            AttrValue::Str(v) => KeyValue::new(k, v),
            AttrValue::Int(v) => KeyValue::new(k, v),
        })
        .collect();
    SpanData {
        span_context: ctx,
        parent_span_id: s
            .parent_span_id
            .map(opentelemetry::SpanId::from_bytes)
            .unwrap_or(opentelemetry::SpanId::INVALID),
        parent_span_is_remote: s.parent_is_remote,
        span_kind: match s.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(s.name),
        start_time: s.start,
        end_time: s.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match s.error {
            Some(e) => Status::Error {
                description: Cow::Owned(e),
            },
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::Format;

    fn incoming(sampled: Option<bool>, debug: bool) -> Incoming {
        Incoming {
            trace_id: [1; 16],
            parent_span_id: [2; 8],
            sampled,
            debug,
            tracestate: None,
            format: Format::W3c,
        }
    }

    #[test]
    fn sampling_decisions() {
        let yes = incoming(Some(true), false);
        let no = incoming(Some(false), false);
        let deferred = incoming(None, false);
        let debug = incoming(Some(false), true);
        // (incoming, x-weft-debug, ratio, draw, expected)
        let table: &[(Option<&Incoming>, bool, f64, f64, bool)] = &[
            (None, false, 0.01, 0.5, false),
            (None, false, 0.01, 0.001, true),
            (None, false, 0.0, 0.0, false),
            (None, false, 1.0, 0.999, true),
            (None, true, 0.0, 0.9, true),
            (Some(&no), true, 0.0, 0.9, true),
            (Some(&yes), false, 0.0, 0.9, true),
            (Some(&no), false, 1.0, 0.0, false),
            (Some(&deferred), false, 0.5, 0.4, true),
            (Some(&deferred), false, 0.5, 0.6, false),
            (Some(&debug), false, 0.0, 0.9, true),
        ];
        for (i, (inc, dbg, ratio, draw, want)) in table.iter().enumerate() {
            assert_eq!(should_sample(*inc, *dbg, *ratio, *draw), *want, "row {i}");
        }
    }

    #[test]
    fn records_convert_to_span_data() {
        let scope = InstrumentationScope::builder("weft").build();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let d = to_span_data(
            SpanRecord {
                trace_id: [7; 16],
                span_id: [8; 8],
                parent_span_id: Some([9; 8]),
                parent_is_remote: true,
                kind: SpanKind::Client,
                name: "GET r".into(),
                start,
                end: start + Duration::from_millis(3),
                attributes: vec![
                    ("http.request.method", "GET".into()),
                    ("http.response.status_code", 200i64.into()),
                ],
                error: Some("reset".into()),
            },
            &scope,
        );
        assert_eq!(d.span_context.trace_id().to_bytes(), [7; 16]);
        assert_eq!(d.parent_span_id.to_bytes(), [9; 8]);
        assert!(d.parent_span_is_remote);
        assert_eq!(d.span_kind, OtelKind::Client);
        assert_eq!(d.attributes.len(), 2);
        assert!(matches!(d.status, Status::Error { .. }));
    }

    #[test]
    fn a_malformed_endpoint_is_an_error_at_start() {
        let err = Tracer::start(
            ExportConfig {
                endpoint: Some("not a url".into()),
                ..ExportConfig::default()
            },
            Counter::noop(),
            Counter::noop(),
        )
        .unwrap_err();
        assert!(matches!(err, TraceError::Exporter(_)), "{err}");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let exported = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        // Nothing listens on port 9 of loopback: every export fails fast.
        let t = Tracer::start(
            ExportConfig {
                endpoint: Some("http://127.0.0.1:9".into()),
                queue: 4,
                batch: 2,
                interval: Duration::from_millis(10),
                ..ExportConfig::default()
            },
            Counter::from_arc(exported.clone()),
            Counter::from_arc(dropped.clone()),
        )
        .unwrap();
        let span = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            parent_is_remote: false,
            kind: SpanKind::Server,
            name: "x".into(),
            start: SystemTime::now(),
            end: SystemTime::now(),
            attributes: Vec::new(),
            error: None,
        };
        for _ in 0..1000 {
            t.record(span.clone());
        }
        // Every span is accounted for: dropped at the queue or by the failed export.
        assert!(t.flush_blocking(Duration::from_secs(60)));
        assert_eq!(exported.load(Ordering::Relaxed), 0);
        assert_eq!(dropped.load(Ordering::Relaxed), 1000);
    }
}
