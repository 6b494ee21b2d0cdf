//! An in-process OTLP/gRPC trace collector on `127.0.0.1:0`.
//!
//! [`OtlpCollector::start`] serves `opentelemetry.proto.collector.trace.v1.TraceService`
//! with tonic and keeps every span it receives, in arrival order, with the
//! `service.name` of the resource it came under. Tests point the proxy at
//! [`OtlpCollector::endpoint`] (`TelemetryOptions::otlp_endpoint`), send requests, then
//! [`OtlpCollector::wait_for`] the spans they expect (bounded) and inspect them with the
//! helpers here ([`hex`], [`kind`], [`attr_str`], [`attr_int`]). The server stops when
//! the collector is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use opentelemetry_proto::tonic::trace::v1::Span;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// The spans received so far, and their count for waiters.
#[derive(Debug)]
struct Store {
    spans: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
    exports: watch::Sender<usize>,
}

/// One span with the `service.name` of its resource.
#[derive(Clone, Debug)]
struct Received {
    service: Option<String>,
    span: Span,
}

/// The gRPC service: appends what it is sent.
#[derive(Debug)]
struct Service {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(value_str)
                    .map(str::to_owned)
            });
            for ss in rs.scope_spans {
                for span in ss.spans {
                    received.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        let total = {
            let mut spans = self
                .store
                .spans
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            spans.extend(received);
            spans.len()
        };
        self.store.count.send_replace(total);
        self.store.exports.send_modify(|n| *n += 1);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running collector. Dropping it stops the server.
#[derive(Debug)]
pub struct OtlpCollector {
    addr: SocketAddr,
    store: Arc<Store>,
    task: JoinHandle<()>,
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpCollector {
    /// Starts a collector on `127.0.0.1:0`; returns it and its address.
    pub async fn start() -> anyhow::Result<(OtlpCollector, SocketAddr)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store {
            spans: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            exports: watch::Sender::new(0),
        });
        let service = TraceServiceServer::new(Service {
            store: store.clone(),
        });
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            // Ends only when aborted, or if the listener fails (tests then see no spans).
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        });
        Ok((OtlpCollector { addr, store, task }, addr))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for `TelemetryOptions::otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        self.with_spans(|s| s.iter().map(|r| r.span.clone()).collect())
    }

    /// The `service.name` of each resource spans arrived under (one entry per span).
    pub fn services(&self) -> Vec<Option<String>> {
        self.with_spans(|s| s.iter().map(|r| r.service.clone()).collect())
    }

    /// How many export calls it has answered.
    pub fn exports(&self) -> usize {
        *self.store.exports.borrow()
    }

    /// The spans of one trace (`trace_id` in lowercase hex).
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.with_spans(|s| {
            s.iter()
                .filter(|r| hex(&r.span.trace_id) == trace_id)
                .map(|r| r.span.clone())
                .collect()
        })
    }

    /// Waits until at least `n` spans have arrived, at most `timeout`; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Span>> {
        let mut count = self.store.count.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await;
        match reached {
            Ok(Ok(_)) => Ok(self.spans()),
            _ => {
                let got = self.spans();
                anyhow::bail!(
                    "the collector got {} spans within {timeout:?}, not {n}: {:#?}",
                    got.len(),
                    got.iter().map(describe).collect::<Vec<_>>()
                )
            }
        }
    }

    /// Waits until at least `n` spans of trace `trace_id` (lowercase hex) have arrived,
    /// at most `timeout`; returns that trace's spans.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Span>> {
        let mut count = self.store.count.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if self.trace(trace_id).len() >= n {
                    return;
                }
                if count.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let spans = self.trace(trace_id);
        anyhow::ensure!(
            waited.is_ok() && spans.len() >= n,
            "trace {trace_id}: {} spans within {timeout:?}, not {n}; all spans: {:#?}",
            spans.len(),
            self.spans().iter().map(describe).collect::<Vec<_>>()
        );
        Ok(spans)
    }

    fn with_spans<T>(&self, f: impl FnOnce(&[Received]) -> T) -> T {
        f(&self
            .store
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }
}

/// Lowercase hex of an id (`trace_id`, `span_id`, `parent_span_id`; empty stays empty).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The span's kind.
pub fn kind(span: &Span) -> SpanKind {
    SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified)
}

/// A span attribute's value, if present.
pub fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A string attribute.
pub fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    attr(span, key).and_then(value_str)
}

/// An integer attribute.
pub fn attr_int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)?.value.as_ref()? {
        any_value::Value::IntValue(v) => Some(*v),
        _ => None,
    }
}

/// A one-line summary of a span, for failure messages.
pub fn describe(span: &Span) -> String {
    format!(
        "{:?} {:?} trace={} span={} parent={}",
        kind(span),
        span.name,
        hex(&span.trace_id),
        hex(&span.span_id),
        hex(&span.parent_span_id)
    )
}

fn value_str(v: &AnyValue) -> Option<&str> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}
