//! Telemetry: trace spans exported to an in-process OTLP collector and the trace context
//! sent upstream (W3C and B3 callers, new traces, sampling, a dead collector), the
//! Istio request and TCP metrics after a known mix, access-log records (JSON fields for
//! each outcome, `only_errors`, Envoy's text line, TCP), and a stalled access-log sink
//! that must cost log lines, never requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use weft_proxy::observe::TelemetryOptions;
use weft_telemetry::access_log::JSON_KEYS;
use weft_tests::client::{empty, full};
use weft_tests::otlp::{self, OtlpCollector, Span, SpanKind};
use weft_tests::upstream::Recorded;
use weft_tests::{Behavior, Client, Metrics, TestProxy, eventually, upstream, within};

use crate::LIMIT;

/// How long a test waits for spans or log records that are on their way.
const WAIT: Duration = Duration::from_secs(10);

/// The bound on one `Telemetry::flush`.
const FLUSH: Duration = Duration::from_secs(10);

/// A caller's W3C context: trace id and parent (span) id.
const W3C_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const W3C_PARENT: &str = "00f067aa0ba902b7";

/// Istio's default request-duration buckets (milliseconds).
const ISTIO_DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's byte-size buckets.
const ISTIO_BYTES_BUCKETS: [f64; 9] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

/// A request header, name and value.
type Header<'a> = (&'a str, &'a str);

/// A caller's trace context, if any: trace id and parent id.
type Caller<'a> = Option<(&'a str, &'a str)>;

/// A `traceparent` header, split.
#[derive(Debug, PartialEq, Eq)]
struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

/// Parses a version-00 `traceparent`, checking its shape (lowercase hex, non-zero ids).
fn traceparent(value: Option<&str>) -> anyhow::Result<TraceParent> {
    let value = value.ok_or_else(|| anyhow::anyhow!("no traceparent header"))?;
    let parts: Vec<&str> = value.split('-').collect();
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    anyhow::ensure!(
        parts.len() == 4
            && parts[0] == "00"
            && lower_hex(parts[1], 32)
            && lower_hex(parts[2], 16)
            && lower_hex(parts[3], 2)
            && parts[1].bytes().any(|b| b != b'0')
            && parts[2].bytes().any(|b| b != b'0'),
        "malformed traceparent {value:?}"
    );
    Ok(TraceParent {
        trace_id: parts[1].to_owned(),
        parent_id: parts[2].to_owned(),
        flags: parts[3].to_owned(),
    })
}

/// The `traceparent` the upstream received with its last request.
fn upstream_traceparent(up: &upstream::Upstream) -> anyhow::Result<TraceParent> {
    let last = up
        .last()
        .ok_or_else(|| anyhow::anyhow!("the upstream got no request"))?;
    traceparent(last.header("traceparent"))
}

/// Waits (bounded) until queued log records and spans are written or exported.
async fn flush(proxy: &TestProxy) -> anyhow::Result<()> {
    let p = proxy.proxy().clone();
    tokio::task::spawn_blocking(move || p.telemetry().flush(FLUSH)).await?;
    Ok(())
}

/// Flushes, then waits for the server and client span of trace `trace_id`.
async fn server_and_client(
    proxy: &TestProxy,
    collector: &OtlpCollector,
    trace_id: &str,
) -> anyhow::Result<(Span, Span)> {
    flush(proxy).await?;
    let spans = collector.wait_for_trace(trace_id, 2, WAIT).await?;
    let of = |k: SpanKind| -> anyhow::Result<Span> {
        let found: Vec<&Span> = spans.iter().filter(|s| otlp::kind(s) == k).collect();
        anyhow::ensure!(
            found.len() == 1,
            "trace {trace_id}: want one {k:?} span, got {:#?}",
            spans.iter().map(otlp::describe).collect::<Vec<_>>()
        );
        Ok(found[0].clone())
    };
    let (server, client) = (of(SpanKind::Server)?, of(SpanKind::Client)?);
    anyhow::ensure!(
        spans.len() == 2,
        "trace {trace_id}: want exactly a server and a client span, got {:#?}",
        spans.iter().map(otlp::describe).collect::<Vec<_>>()
    );
    Ok((server, client))
}

/// A proxy with one HTTP listener `edge` (route `api`: everything to `up`), tracing at
/// `percent`, exporting to `collector`.
async fn traced_proxy(
    up: &upstream::Upstream,
    percent: u32,
    otlp_endpoint: String,
) -> anyhow::Result<TestProxy> {
    TestProxy::start_with(
        &format!(
            r#"
tracing: {{ sample_percent: {percent} }}
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: api
        match: {{ prefix: / }}
        to: backend
clusters:
  backend: {{ endpoints: [{}] }}
"#,
            up.addr()
        ),
        TelemetryOptions {
            otlp_endpoint: Some(otlp_endpoint),
            ..Default::default()
        },
    )
    .await
}

/// Checks the two spans of one proxied request: ids and parents, kinds, names and the
/// main attributes; and that the upstream's `traceparent` names the client span.
fn check_pair(
    server: &Span,
    client: &Span,
    sent: &TraceParent,
    trace_id: &str,
    caller_parent: Option<&str>,
) {
    let hex = otlp::hex;
    assert_eq!(hex(&server.trace_id), trace_id, "server span trace id");
    assert_eq!(hex(&client.trace_id), trace_id, "client span trace id");
    assert_eq!(
        hex(&server.parent_span_id),
        caller_parent.unwrap_or(""),
        "the server span's parent is the caller's span (none for a new trace)"
    );
    assert_eq!(
        hex(&client.parent_span_id),
        hex(&server.span_id),
        "the client span's parent is the server span"
    );
    assert_ne!(server.span_id, client.span_id, "distinct span ids");
    assert_eq!(server.span_id.len(), 8, "8-byte span id");
    assert_eq!(sent.trace_id, trace_id, "upstream traceparent: trace id");
    assert_eq!(
        sent.parent_id,
        hex(&client.span_id),
        "upstream traceparent: the parent is the client span"
    );
    assert_eq!(sent.flags, "01", "upstream traceparent: sampled");
    assert_eq!(server.name, "GET api", "server span name");
    assert_eq!(
        otlp::attr_str(server, "http.request.method"),
        Some("GET"),
        "{server:#?}"
    );
    assert_eq!(
        otlp::attr_int(server, "http.response.status_code"),
        Some(200),
        "{server:#?}"
    );
    assert_eq!(otlp::attr_str(server, "weft.route"), Some("api"));
    assert!(
        server.start_time_unix_nano > 0 && server.end_time_unix_nano >= server.start_time_unix_nano,
        "server span times"
    );
    assert!(
        client.start_time_unix_nano >= server.start_time_unix_nano
            && client.end_time_unix_nano <= server.end_time_unix_nano,
        "the client span lies within the server span: {server:#?} {client:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_w3c_trace_and_name_the_client_span_upstream()
-> anyhow::Result<()> {
    let (collector, addr) = OtlpCollector::start().await?;
    let up = upstream::http1("backend").await?;
    let proxy = traced_proxy(&up, 100, format!("http://{addr}")).await?;
    within(LIMIT, "w3c trace", async {
        let client = Client::http1();
        let incoming = format!("00-{W3C_TRACE}-{W3C_PARENT}-01");
        let reply = client
            .get_with(
                &proxy.url("edge", "/traced"),
                &[("traceparent", incoming.as_str())],
            )
            .await?;
        assert_eq!(reply.code(), 200);
        let sent = upstream_traceparent(&up)?;
        let (server, client_span) = server_and_client(&proxy, &collector, W3C_TRACE).await?;
        check_pair(&server, &client_span, &sent, W3C_TRACE, Some(W3C_PARENT));
        assert_eq!(
            collector.services(),
            vec![Some("weft".to_owned()); 2],
            "service.name"
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_has_a_client_span_per_attempt() -> anyhow::Result<()> {
    let (collector, addr) = OtlpCollector::start().await?;
    let up = upstream::http1("backend").await?;
    // The first try gets a 503, which the default retry policy retries.
    up.set(Behavior::fail_next(1, 503));
    let proxy = traced_proxy(&up, 100, format!("http://{addr}")).await?;
    within(LIMIT, "retried trace", async {
        let incoming = format!("00-{W3C_TRACE}-{W3C_PARENT}-01");
        let reply = Client::http1()
            .get_with(
                &proxy.url("edge", "/retried"),
                &[("traceparent", incoming.as_str())],
            )
            .await?;
        assert_eq!(reply.code(), 200, "the retry succeeded");
        flush(&proxy).await?;
        let spans = collector.wait_for_trace(W3C_TRACE, 3, WAIT).await?;
        let server: Vec<&Span> = spans
            .iter()
            .filter(|s| otlp::kind(s) == SpanKind::Server)
            .collect();
        let mut clients: Vec<&Span> = spans
            .iter()
            .filter(|s| otlp::kind(s) == SpanKind::Client)
            .collect();
        let all: Vec<String> = spans.iter().map(otlp::describe).collect();
        assert_eq!((server.len(), clients.len()), (1, 2), "{all:#?}");
        clients.sort_by_key(|s| s.start_time_unix_nano);
        let (first, second) = (clients[0], clients[1]);
        for c in [first, second] {
            assert_eq!(c.parent_span_id, server[0].span_id, "{all:#?}");
        }
        assert_ne!(first.span_id, second.span_id);
        assert!(
            first.end_time_unix_nano <= second.start_time_unix_nano,
            "the attempts follow each other"
        );
        let message = |s: &Span| s.status.as_ref().map(|st| st.message.clone());
        assert_eq!(message(first).as_deref(), Some("503"), "{first:#?}");
        assert_eq!(
            otlp::attr_int(second, "http.response.status_code"),
            Some(200)
        );
        assert_eq!(otlp::attr_int(second, "http.request.resend_count"), Some(1));
        // Each try told the upstream its own span as the parent.
        let sent: Vec<String> = up
            .requests()
            .iter()
            .map(|r| traceparent(r.header("traceparent")).map(|t| t.parent_id))
            .collect::<anyhow::Result<_>>()?;
        assert_eq!(
            sent,
            vec![otlp::hex(&first.span_id), otlp::hex(&second.span_id)]
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_context_starts_a_new_trace() -> anyhow::Result<()> {
    let (collector, addr) = OtlpCollector::start().await?;
    let up = upstream::http1("backend").await?;
    let proxy = traced_proxy(&up, 100, format!("http://{addr}")).await?;
    within(LIMIT, "new trace", async {
        let client = Client::http1();
        let mut seen = Vec::new();
        for i in 0..2 {
            let reply = client.get(&proxy.url("edge", &format!("/new/{i}"))).await?;
            assert_eq!(reply.code(), 200);
            seen.push(upstream_traceparent(&up)?);
        }
        assert_ne!(
            seen[0].trace_id, seen[1].trace_id,
            "each request starts its own trace"
        );
        for sent in &seen {
            let (server, client_span) =
                server_and_client(&proxy, &collector, &sent.trace_id).await?;
            check_pair(&server, &client_span, sent, &sent.trace_id, None);
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b3_single_header_caller_is_continued() -> anyhow::Result<()> {
    let (collector, addr) = OtlpCollector::start().await?;
    let up = upstream::http1("backend").await?;
    let proxy = traced_proxy(&up, 100, format!("http://{addr}")).await?;
    within(LIMIT, "b3 trace", async {
        let trace = "80f198ee56343ba864fe8b2a57d3eff7";
        let parent = "e457b5a2e4d86bd1";
        let b3 = format!("{trace}-{parent}-1");
        let reply = Client::http1()
            .get_with(&proxy.url("edge", "/b3"), &[("b3", b3.as_str())])
            .await?;
        assert_eq!(reply.code(), 200);
        let last = up.last().expect("a request");
        let sent = traceparent(last.header("traceparent"))?;
        let (server, client_span) = server_and_client(&proxy, &collector, trace).await?;
        check_pair(&server, &client_span, &sent, trace, Some(parent));
        // A B3 caller's upstreams may be B3-only: the context goes on in that form too.
        assert_eq!(
            last.header("b3"),
            Some(format!("{trace}-{}-1", otlp::hex(&client_span.span_id)).as_str()),
            "b3 header sent upstream"
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_percentage_the_caller_and_the_debug_header() -> anyhow::Result<()> {
    let (collector, addr) = OtlpCollector::start().await?;
    let up = upstream::http1("backend").await?;
    let proxy = traced_proxy(&up, 0, format!("http://{addr}")).await?;
    within(LIMIT, "sampling", async {
        let client = Client::http1();
        let url = proxy.url("edge", "/sampling");
        // 0 % and no context: nothing recorded, but a context is still passed on.
        let mut unsampled = Vec::new();
        for _ in 0..20 {
            assert_eq!(client.get(&url).await?.code(), 200);
            let sent = upstream_traceparent(&up)?;
            assert_eq!(sent.flags, "00", "not sampled: flags 00 upstream");
            unsampled.push(sent.trace_id);
        }
        // A caller that decided "not sampled": followed, its trace id kept.
        let caller_no = format!("00-{W3C_TRACE}-{W3C_PARENT}-00");
        let reply = client
            .get_with(&url, &[("traceparent", caller_no.as_str())])
            .await?;
        assert_eq!(reply.code(), 200);
        let sent = upstream_traceparent(&up)?;
        assert_eq!(
            (sent.trace_id.as_str(), sent.flags.as_str()),
            (W3C_TRACE, "00")
        );
        assert_ne!(sent.parent_id, W3C_PARENT, "the proxy's own id as parent");
        unsampled.push(sent.trace_id);

        // Sampled whatever the percentage: the debug header; a caller that decided
        // "sampled"; the debug header over a caller's "not sampled". (Each trace is
        // checked after all are sent: the exporter batches for up to a second.)
        let cases: [(&[Header<'_>], Caller<'_>); 3] = [
            (&[("x-weft-debug", "1")], None),
            (
                &[(
                    "traceparent",
                    "00-11111111111111111111111111111111-2222222222222222-01",
                )],
                Some(("11111111111111111111111111111111", "2222222222222222")),
            ),
            (
                &[
                    (
                        "traceparent",
                        "00-33333333333333333333333333333333-4444444444444444-00",
                    ),
                    ("x-weft-debug", "1"),
                ],
                Some(("33333333333333333333333333333333", "4444444444444444")),
            ),
        ];
        let mut sampled = Vec::new();
        for (headers, caller) in cases {
            let reply = client.get_with(&url, headers).await?;
            assert_eq!(reply.code(), 200, "{headers:?}");
            let sent = upstream_traceparent(&up)?;
            if let Some((trace, _)) = caller {
                assert_eq!(sent.trace_id, trace, "{headers:?}");
            }
            sampled.push((sent, caller));
        }
        for (sent, caller) in &sampled {
            let (server, client_span) =
                server_and_client(&proxy, &collector, &sent.trace_id).await?;
            check_pair(
                &server,
                &client_span,
                sent,
                &sent.trace_id,
                caller.map(|(_, parent)| parent),
            );
        }

        // The sampled requests came after the others and their spans are in, so the
        // others' spans, had there been any, would be too.
        flush(&proxy).await?;
        let spans = collector.spans();
        assert_eq!(
            spans.len(),
            6,
            "only the three sampled requests have spans: {:#?}",
            spans.iter().map(otlp::describe).collect::<Vec<_>>()
        );
        for id in &unsampled {
            assert!(collector.trace(id).is_empty(), "trace {id} was not sampled");
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_of_new_traces_are_sampled_at_fifty_percent() -> anyhow::Result<()> {
    let (collector, addr) = OtlpCollector::start().await?;
    let up = upstream::http1("backend").await?;
    let proxy = traced_proxy(&up, 50, format!("http://{addr}")).await?;
    within(LIMIT, "50 % sampling", async {
        const N: usize = 400;
        let client = Client::http1();
        let url = proxy.url("edge", "/half");
        let mut sampled = 0;
        for _ in 0..N {
            assert_eq!(client.get(&url).await?.code(), 200);
            if upstream_traceparent(&up)?.flags == "01" {
                sampled += 1;
            }
        }
        // Binomial(400, 0.5): mean 200, standard deviation 10; 6 deviations either way.
        assert!(
            (140..=260).contains(&sampled),
            "{sampled} of {N} sampled at 50 %"
        );
        // Each sampled request, and only those, has its two spans.
        collector.wait_for(2 * sampled, WAIT).await?;
        flush(&proxy).await?;
        assert_eq!(collector.spans().len(), 2 * sampled);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_spans_not_requests() -> anyhow::Result<()> {
    let closed = upstream::closed_port().await?;
    let up = upstream::http1("backend").await?;
    let proxy = traced_proxy(&up, 100, format!("http://{}", closed.addr())).await?;
    within(LIMIT, "dead collector", async {
        const N: usize = 200;
        let client = Client::http1();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let (client, base) = (client.clone(), proxy.url("edge", "/dead"));
            tasks.spawn(async move {
                for i in (worker..N).step_by(8) {
                    let reply = client.get(&format!("{base}/{i}")).await?;
                    anyhow::ensure!(reply.code() == 200, "request {i}: {}", reply.code());
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        assert_eq!(up.count(), N);
        flush(&proxy).await?;
        let m = proxy.metrics().await?;
        assert!(
            m.sum("weft_trace_spans_dropped_total", &[]) > 0.0,
            "failed exports are counted as dropped spans:\n{}",
            m.text
        );
        assert_eq!(m.sum("weft_trace_spans_exported_total", &[]), 0.0);
        // Every span is accounted for: none exported, so all dropped.
        eventually(WAIT, "all 2 x N spans counted as dropped", async || {
            flush(&proxy).await.is_ok()
                && proxy
                    .metrics()
                    .await
                    .is_ok_and(|m| m.sum("weft_trace_spans_dropped_total", &[]) == (2 * N) as f64)
        })
        .await?;
        anyhow::Ok(())
    })
    .await?
}

/// Every `istio_*` label with a value fixed for a gateway without mTLS or workload
/// discovery.
const FIXED_LABELS: [(&str, &str); 8] = [
    ("reporter", "gateway"),
    ("source_workload", "weft"),
    ("source_workload_namespace", "default"),
    ("source_principal", "unknown"),
    ("destination_workload", "unknown"),
    ("destination_workload_namespace", "unknown"),
    ("destination_principal", "unknown"),
    ("connection_security_policy", "unknown"),
];

/// Checks that every series of `name` carries the fixed labels and the per-request ones.
fn check_istio_labels(m: &Metrics, name: &str, protocol: &str) {
    let samples: Vec<_> = m.samples(name, &[]).collect();
    assert!(!samples.is_empty(), "no {name} series:\n{}", m.text);
    for s in samples {
        for (k, v) in FIXED_LABELS {
            assert_eq!(s.labels.get(k), Some(v), "{name} label {k}: {:?}", s.labels);
        }
        assert_eq!(
            s.labels.get("request_protocol"),
            Some(protocol),
            "{name}: {:?}",
            s.labels
        );
        let mut need = vec!["destination_service", "listener"];
        if protocol != "tcp" {
            need.extend([
                "route_name",
                "response_code",
                "grpc_response_status",
                "response_flags",
            ]);
            assert_eq!(
                s.labels.get("grpc_response_status"),
                Some(""),
                "{name}: not gRPC: {:?}",
                s.labels
            );
        }
        for k in need {
            assert!(
                s.labels.get(k).is_some(),
                "{name} has no {k}: {:?}",
                s.labels
            );
        }
    }
}

/// The bucket bounds and counts of a histogram, checked to be cumulative and to end
/// with `+Inf`.
fn buckets(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let b = m.histogram(name, labels);
    assert!(
        b.last().is_some_and(|(le, _)| le.is_infinite()),
        "{name} {labels:?}: the last bucket is +Inf: {b:?}\n{}",
        m.text
    );
    assert!(
        b.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name}: cumulative: {b:?}"
    );
    b
}

fn bounds(b: &[(f64, f64)]) -> Vec<f64> {
    b.iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .collect()
}

/// The count of the bucket with bound `le`.
fn bucket(b: &[(f64, f64)], le: f64) -> f64 {
    b.iter().find(|(l, _)| *l == le).map_or(-1.0, |(_, c)| *c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_metrics_count_a_known_mix() -> anyhow::Result<()> {
    let up = upstream::http1("backend").await?;
    let sluggish = upstream::http1("sluggish").await?;
    sluggish.set(Behavior::delay(Duration::from_secs(5)));
    let echo = upstream::tcp_echo().await?;
    let closed = upstream::closed_port().await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: api
        match: {{ prefix: /api }}
        to: backend
      - name: down
        match: {{ prefix: /down }}
        to: dead
      - name: slow
        match: {{ prefix: /slow }}
        to: sluggish
        timeout: 100ms
  - name: tcp
    address: 127.0.0.1:0
    protocol: tcp
    to: echo
clusters:
  backend: {{ endpoints: [{up}] }}
  dead: {{ endpoints: [{dead}] }}
  sluggish: {{ endpoints: [{slow}] }}
  echo: {{ endpoints: [{echo}] }}
"#,
        up = up.addr(),
        dead = closed.addr(),
        slow = sluggish.addr(),
        echo = echo.addr(),
    ))
    .await?;
    within(LIMIT, "istio metrics", async {
        // HTTP/1.1: three POSTs with known body sizes. HTTP/2: two GETs.
        let h1 = Client::http1();
        let bodies = [10usize, 200, 3000];
        for (i, n) in bodies.iter().enumerate() {
            let reply = h1
                .post(
                    &proxy.url("edge", &format!("/api/post/{i}")),
                    vec![b'x'; *n],
                )
                .await?;
            assert_eq!(reply.code(), 200);
        }
        let h2 = Client::http2();
        for i in 0..2 {
            let reply = h2.get(&proxy.url("edge", &format!("/api/h2/{i}"))).await?;
            assert_eq!((reply.code(), reply.version), (200, http::Version::HTTP_2));
        }
        for i in 0..2 {
            let reply = h1.get(&proxy.url("edge", &format!("/none/{i}"))).await?;
            assert_eq!(reply.code(), 404);
        }
        for i in 0..2 {
            let reply = h1.get(&proxy.url("edge", &format!("/down/{i}"))).await?;
            assert_eq!(reply.code(), 503);
        }
        let reply = h1.get(&proxy.url("edge", "/slow")).await?;
        assert_eq!(reply.code(), 504);

        // One TCP connection: K bytes each way.
        const K: usize = 5000;
        let mut s = TcpStream::connect(proxy.addr("tcp")).await?;
        let data: Vec<u8> = (0..K).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).await?;
        let mut back = vec![0u8; K];
        s.read_exact(&mut back).await?;
        assert!(back == data, "echoed");
        s.shutdown().await?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await?;
        drop(s);

        const HTTP_TOTAL: f64 = 10.0;
        eventually(WAIT, "all requests and the TCP close counted", async || {
            proxy.metrics().await.is_ok_and(|m| {
                m.sum("istio_requests_total", &[]) == HTTP_TOTAL
                    && m.sum("istio_tcp_connections_closed_total", &[]) == 1.0
            })
        })
        .await?;
        let m = proxy.metrics().await?;
        let text = &m.text;
        let count = |code: &str, flags: &str, route: &str, dest: &str| {
            m.sum(
                "istio_requests_total",
                &[
                    ("listener", "edge"),
                    ("response_code", code),
                    ("response_flags", flags),
                    ("route_name", route),
                    ("destination_service", dest),
                ],
            )
        };
        assert_eq!(count("200", "-", "api", "backend"), 5.0, "{text}");
        assert_eq!(count("404", "NR", "", "unknown"), 2.0, "{text}");
        assert_eq!(count("503", "UF", "down", "dead"), 2.0, "{text}");
        assert_eq!(count("504", "UT", "slow", "sluggish"), 1.0, "{text}");
        check_istio_labels(&m, "istio_requests_total", "http");
        check_istio_labels(&m, "istio_request_duration_milliseconds", "http");
        check_istio_labels(&m, "istio_request_bytes", "http");
        check_istio_labels(&m, "istio_response_bytes", "http");
        assert_eq!(
            m.sum(
                "weft_request_timeouts_total",
                &[("listener", "edge"), ("route_name", "slow")]
            ),
            1.0,
            "{text}"
        );

        let ok = [("route_name", "api"), ("response_code", "200")];
        let d = buckets(&m, "istio_request_duration_milliseconds", &ok);
        assert_eq!(
            bounds(&d),
            ISTIO_DURATION_BUCKETS,
            "Istio's duration buckets"
        );
        assert_eq!(bucket(&d, f64::INFINITY), 5.0);
        assert_eq!(
            m.sum("istio_request_duration_milliseconds_count", &ok),
            5.0,
            "{text}"
        );
        let slow = [("route_name", "slow"), ("response_code", "504")];
        let d = buckets(&m, "istio_request_duration_milliseconds", &slow);
        assert_eq!(bucket(&d, 50.0), 0.0, "the timeout is 100 ms: {d:?}");
        assert_eq!(bucket(&d, f64::INFINITY), 1.0);

        // Request bytes: the POSTs' 10, 200 and 3000 bytes, and two empty GETs.
        let req = buckets(&m, "istio_request_bytes", &ok);
        assert_eq!(bounds(&req), ISTIO_BYTES_BUCKETS, "Istio's byte buckets");
        let want = [
            (1.0, 2.0),
            (10.0, 3.0),
            (100.0, 3.0),
            (1e3, 4.0),
            (1e4, 5.0),
            (1e8, 5.0),
            (f64::INFINITY, 5.0),
        ];
        for (le, n) in want {
            assert_eq!(bucket(&req, le), n, "request bytes le={le}: {req:?}");
        }
        assert_eq!(m.sum("istio_request_bytes_sum", &ok), 3210.0, "{text}");
        assert_eq!(m.sum("istio_request_bytes_count", &ok), 5.0);
        // Response bytes: "upstream backend\n" (17 bytes) each.
        let resp = buckets(&m, "istio_response_bytes", &ok);
        assert_eq!(bounds(&resp), ISTIO_BYTES_BUCKETS);
        assert_eq!((bucket(&resp, 10.0), bucket(&resp, 100.0)), (0.0, 5.0));
        assert_eq!(m.sum("istio_response_bytes_sum", &ok), 85.0, "{text}");
        let nr = [("response_code", "404")];
        assert_eq!(
            bucket(&buckets(&m, "istio_response_bytes", &nr), f64::INFINITY),
            2.0
        );

        // TCP.
        let tcp = [("listener", "tcp"), ("destination_service", "echo")];
        for name in [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
            "istio_tcp_sent_bytes_total",
            "istio_tcp_received_bytes_total",
        ] {
            check_istio_labels(&m, name, "tcp");
        }
        assert_eq!(
            m.sum("istio_tcp_connections_opened_total", &tcp),
            1.0,
            "{text}"
        );
        assert_eq!(
            m.sum("istio_tcp_connections_closed_total", &tcp),
            1.0,
            "{text}"
        );
        assert_eq!(
            m.sum("istio_tcp_sent_bytes_total", &tcp),
            K as f64,
            "{text}"
        );
        assert_eq!(
            m.sum("istio_tcp_received_bytes_total", &tcp),
            K as f64,
            "{text}"
        );
        assert_eq!(
            m.sum("istio_requests_total", &[("listener", "tcp")]),
            0.0,
            "a TCP connection is not a request"
        );
        anyhow::Ok(())
    })
    .await?
}

/// A temporary directory for access-log files, removed when dropped.
struct LogDir(PathBuf);

impl LogDir {
    fn new() -> anyhow::Result<LogDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-telemetry-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(LogDir(dir))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of an access-log file (none if it does not exist yet).
fn lines(path: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Waits (flushing, bounded) for the JSON record in `path` that `pick` selects; checks
/// that every line is one JSON object with the documented keys in order.
async fn record(
    proxy: &TestProxy,
    path: &Path,
    what: &str,
    pick: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        // The writer writes within milliseconds; flushing (which also waits for the
        // span exporter's batch, up to a second) only when a record is late.
        if started.elapsed() > Duration::from_millis(200) {
            flush(proxy).await?;
        }
        let mut found = None;
        for line in lines(path)? {
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("not a JSON line ({e}): {line}"))?;
            check_keys(&line, &v);
            if found.is_none() && pick(&v) {
                found = Some(v);
            }
        }
        if let Some(v) = found {
            return Ok(v);
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "{what}: no such record within {WAIT:?} in {}:\n{}",
            path.display(),
            lines(path)?.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The documented keys, each once, in order, and nothing else.
fn check_keys(line: &str, v: &Value) {
    let obj = v.as_object().expect("a JSON object per line");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = JSON_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "access-log keys: {line}");
    let positions: Vec<usize> = JSON_KEYS
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "access-log keys in the documented order: {line}"
    );
}

fn by_path(path: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["path"] == path
}

/// Fields every HTTP record of listener `listener` shares.
fn check_http_common(v: &Value, listener: &str, proxy_addr: SocketAddr) {
    let ts = v["timestamp"].as_str().unwrap_or_default();
    let shape = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").unwrap();
    assert!(shape.is_match(ts), "RFC 3339 UTC with milliseconds: {ts:?}");
    assert_eq!(v["kind"], "http", "{v}");
    assert_eq!(v["direction"], "gateway", "{v}");
    assert_eq!(v["listener"], listener, "{v}");
    let down: SocketAddr = v["downstream_address"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("downstream_address: {v}"));
    assert!(down.ip().is_loopback() && down.port() != 0, "{v}");
    assert_eq!(v["authority"], proxy_addr.to_string(), "{v}");
    for k in [
        "peer_identity",
        "authz_decision",
        "authz_rule",
        "grpc_status",
    ] {
        assert!(v[k].is_null(), "{k}: {v}");
    }
    let duration = v["duration_ms"].as_f64().unwrap_or(-1.0);
    assert!(duration >= 0.0, "duration_ms: {v}");
    if let Some(ttfb) = v["upstream_ttfb_ms"].as_f64() {
        assert!(
            (0.0..=duration).contains(&ttfb),
            "0 <= upstream_ttfb_ms <= duration_ms: {v}"
        );
    }
}

/// Checks a successful record against what the upstream received.
fn check_success(v: &Value, seen: &Recorded, up: SocketAddr, protocol: &str, body: u64) {
    assert_eq!(v["route"], "api", "{v}");
    assert_eq!(v["cluster"], "backend", "{v}");
    assert_eq!(v["upstream_address"], up.to_string(), "{v}");
    assert_eq!(v["method"], seen.method.as_str(), "{v}");
    assert_eq!(v["path"], seen.path_and_query, "{v}");
    assert_eq!(v["protocol"], protocol, "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["response_flags"], "-", "{v}");
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(v["bytes_received"], body, "{v}");
    assert_eq!(seen.body_len, body);
    assert_eq!(v["bytes_sent"], "upstream backend\n".len(), "{v}");
    assert!(v["upstream_ttfb_ms"].is_f64(), "upstream_ttfb_ms: {v}");
    assert_eq!(
        v["request_id"].as_str(),
        seen.header("x-request-id"),
        "the request id the upstream got: {v}"
    );
    assert_eq!(
        v["x_forwarded_for"].as_str(),
        seen.header("x-forwarded-for"),
        "x-forwarded-for as sent upstream: {v}"
    );
    assert!(
        seen.header("x-forwarded-for")
            .is_some_and(|x| x.ends_with("127.0.0.1")),
        "{seen:?}"
    );
    assert_eq!(v["user_agent"].as_str(), seen.header("user-agent"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_records_each_outcome() -> anyhow::Result<()> {
    let logs = LogDir::new()?;
    let json = logs.file("access.json");
    let (collector, addr) = OtlpCollector::start().await?;
    let up = upstream::http1("backend").await?;
    let sluggish = upstream::http1("sluggish").await?;
    sluggish.set(Behavior::delay(Duration::from_secs(5)));
    let resetting = upstream::http1("resetting").await?;
    resetting.set(Behavior::reset());
    let big = upstream::http1("big").await?;
    big.set(Behavior::stream(64 << 20));
    let closed = upstream::closed_port().await?;
    let proxy = TestProxy::start_with(
        &format!(
            r#"
tracing: {{ sample_percent: 100 }}
listeners:
  - name: edge
    address: 127.0.0.1:0
    access_log: {{ path: "{json}", format: json }}
    routes:
      - name: down
        match: {{ prefix: /down }}
        to: dead
      - name: slow
        match: {{ prefix: /slow }}
        to: sluggish
        timeout: 100ms
      - name: reset
        match: {{ prefix: /reset }}
        to: resetting
      - name: big
        match: {{ prefix: /big }}
        to: big
      - name: api
        match: {{ prefix: /api }}
        to: backend
clusters:
  backend: {{ endpoints: [{up}] }}
  dead: {{ endpoints: [{dead}] }}
  sluggish: {{ endpoints: [{slow}] }}
  resetting: {{ endpoints: [{reset}] }}
  big: {{ endpoints: [{big}] }}
"#,
            json = json.display(),
            up = up.addr(),
            dead = closed.addr(),
            slow = sluggish.addr(),
            reset = resetting.addr(),
            big = big.addr(),
        ),
        TelemetryOptions {
            otlp_endpoint: Some(format!("http://{addr}")),
            ..Default::default()
        },
    )
    .await?;
    let edge = proxy.addr("edge");
    within(LIMIT, "access log", async {
        let h1 = Client::http1();
        let ua = ("user-agent", "weft-e2e/1.0");

        // A success: a POST with a body, a query, a caller's trace context.
        let incoming = format!("00-{W3C_TRACE}-{W3C_PARENT}-01");
        let body = vec![b'b'; 1234];
        let reply = h1
            .send(
                Method::POST,
                &proxy.url("edge", "/api/items?color=red&n=2"),
                &[ua, ("traceparent", incoming.as_str())],
                full(body),
            )
            .await?;
        assert_eq!(reply.code(), 200);
        let seen = up.last().expect("a request");
        let v = record(
            &proxy,
            &json,
            "success",
            by_path("/api/items?color=red&n=2"),
        )
        .await?;
        check_http_common(&v, "edge", edge);
        check_success(&v, &seen, up.addr(), "HTTP/1.1", 1234);
        let (server, _) = server_and_client(&proxy, &collector, W3C_TRACE).await?;
        assert_eq!(v["trace_id"], W3C_TRACE, "{v}");
        assert_eq!(
            v["span_id"],
            otlp::hex(&server.span_id),
            "the log names the exported server span: {v}"
        );

        // The same over HTTP/2.
        let reply = Client::http2()
            .get_with(&proxy.url("edge", "/api/h2"), &[ua])
            .await?;
        assert_eq!(reply.code(), 200);
        let seen = up.last().expect("a request");
        let v = record(&proxy, &json, "HTTP/2 success", by_path("/api/h2")).await?;
        check_http_common(&v, "edge", edge);
        check_success(&v, &seen, up.addr(), "HTTP/2", 0);
        let sent = traceparent(seen.header("traceparent"))?;
        assert_eq!(v["trace_id"].as_str(), Some(sent.trace_id.as_str()), "{v}");

        // No route.
        let reply = h1.get_with(&proxy.url("edge", "/nowhere"), &[ua]).await?;
        assert_eq!(reply.code(), 404);
        let v = record(&proxy, &json, "404", by_path("/nowhere")).await?;
        check_http_common(&v, "edge", edge);
        assert_eq!(v["status"], 404, "{v}");
        assert_eq!(v["response_flags"], "NR", "{v}");
        assert_eq!(v["route"], "", "{v}");
        assert_eq!(v["cluster"], "", "{v}");
        assert!(v["upstream_address"].is_null(), "{v}");
        assert!(v["upstream_ttfb_ms"].is_null(), "{v}");
        assert_eq!(v["attempts"], 0, "{v}");
        assert_eq!(
            v["bytes_sent"].as_u64(),
            Some(reply.body.len() as u64),
            "{v}"
        );
        // A local answer has its own request id and (sampled here) trace.
        assert!(
            v["request_id"].as_str().is_some_and(|s| s.len() == 36),
            "{v}"
        );
        assert!(v["trace_id"].as_str().is_some_and(|s| s.len() == 32), "{v}");

        // A refused upstream.
        let reply = h1.get(&proxy.url("edge", "/down")).await?;
        assert_eq!(reply.code(), 503);
        let v = record(&proxy, &json, "503", by_path("/down")).await?;
        check_http_common(&v, "edge", edge);
        assert_eq!(v["status"], 503, "{v}");
        assert_eq!(v["response_flags"], "UF", "{v}");
        assert_eq!(
            (&v["route"], &v["cluster"]),
            (&"down".into(), &"dead".into())
        );
        assert_eq!(v["upstream_address"], closed.addr().to_string(), "{v}");
        assert!(v["upstream_ttfb_ms"].is_null(), "{v}");

        // The route timeout.
        let reply = h1.get(&proxy.url("edge", "/slow")).await?;
        assert_eq!(reply.code(), 504);
        let v = record(&proxy, &json, "504", by_path("/slow")).await?;
        check_http_common(&v, "edge", edge);
        assert_eq!(
            (&v["status"], &v["response_flags"]),
            (&504.into(), &"UT".into()),
            "{v}"
        );
        assert_eq!(v["upstream_address"], sluggish.addr().to_string(), "{v}");
        assert!(
            v["duration_ms"].as_f64().is_some_and(|d| d >= 100.0),
            "not before the 100 ms timeout: {v}"
        );
        assert!(v["upstream_ttfb_ms"].is_null(), "{v}");

        // An upstream that closes without answering.
        let reply = h1.get(&proxy.url("edge", "/reset")).await?;
        assert_eq!(reply.code(), 502);
        let v = record(&proxy, &json, "502", by_path("/reset")).await?;
        check_http_common(&v, "edge", edge);
        assert_eq!(
            (&v["status"], &v["response_flags"]),
            (&502.into(), &"UC".into()),
            "{v}"
        );
        assert!(v["attempts"].as_u64().is_some_and(|a| a >= 1), "{v}");

        // A client that goes away in the middle of a 64 MiB response.
        let leaving = Client::http1();
        let resp = leaving
            .stream(Method::GET, &proxy.url("edge", "/big"), &[], empty())
            .await?;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = http_body_util::BodyExt::frame(&mut body).await;
        assert!(first.is_some_and(|f| f.is_ok()), "a first chunk");
        drop(body);
        drop(leaving);
        let v = record(&proxy, &json, "client gone", by_path("/big")).await?;
        check_http_common(&v, "edge", edge);
        assert_eq!(
            (&v["status"], &v["response_flags"]),
            (&200.into(), &"DC".into()),
            "{v}"
        );
        assert!(
            v["bytes_sent"].as_u64().is_some_and(|n| n < 64 << 20),
            "cut short: {v}"
        );

        // Every request above was sampled: each forwarded one's record names its own
        // trace, and carries the request id sent upstream. (The no-route answer has
        // neither yet: see `local_answers_have_a_request_id_and_a_server_span`.)
        for line in lines(&json)? {
            let v: Value = serde_json::from_str(&line)?;
            if v["path"] == "/nowhere" {
                continue;
            }
            assert!(
                v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
                "request_id: {v}"
            );
            assert!(
                v["trace_id"].as_str().is_some_and(|t| t.len() == 32)
                    && v["span_id"].as_str().is_some_and(|s| s.len() == 16),
                "trace and span ids: {v}"
            );
        }
        anyhow::Ok(())
    })
    .await?
}

// Answers the proxy makes itself (`GET /nowhere`: no route; `GET /teapot`: a `respond`
// route) get a request id and, when sampled, a server span, as Envoy's connection
// manager gives every request before routing: a 404 can be found by id and in the
// trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answers_have_a_request_id_and_a_server_span() -> anyhow::Result<()> {
    let logs = LogDir::new()?;
    let json = logs.file("access.json");
    let (collector, addr) = OtlpCollector::start().await?;
    let proxy = TestProxy::start_with(
        &format!(
            r#"
tracing: {{ sample_percent: 100 }}
listeners:
  - name: edge
    address: 127.0.0.1:0
    access_log: {{ path: "{json}" }}
    routes:
      - name: teapot
        match: {{ path: /teapot }}
        respond: {{ status: 418, body: "short and stout" }}
"#,
            json = json.display(),
        ),
        TelemetryOptions {
            otlp_endpoint: Some(format!("http://{addr}")),
            ..Default::default()
        },
    )
    .await?;
    within(LIMIT, "local answers", async {
        let client = Client::http1();
        let incoming = format!("00-{W3C_TRACE}-{W3C_PARENT}-01");
        let cases = [
            ("/nowhere", 404, vec![("traceparent", incoming.as_str())]),
            ("/nowhere/new", 404, vec![]),
            ("/teapot", 418, vec![]),
        ];
        for (path, status, headers) in cases {
            let reply = client.get_with(&proxy.url("edge", path), &headers).await?;
            assert_eq!(reply.code(), status, "{path}");
            let v = record(&proxy, &json, path, by_path(path)).await?;
            assert!(
                v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
                "{path}: a request id: {v}"
            );
            let trace = v["trace_id"].as_str().unwrap_or_default();
            assert_eq!(trace.len(), 32, "{path}: a trace id: {v}");
            if !headers.is_empty() {
                assert_eq!(trace, W3C_TRACE, "{path}: the caller's trace");
            }
            flush(&proxy).await?;
            let spans = collector.wait_for_trace(trace, 1, WAIT).await?;
            assert_eq!(spans.len(), 1, "{path}: one span, no client span");
            let server = &spans[0];
            assert_eq!(otlp::kind(server), SpanKind::Server, "{path}");
            assert_eq!(v["span_id"], otlp::hex(&server.span_id), "{path}: {v}");
            assert!(server.name.starts_with("GET "), "{path}: {}", server.name);
            assert_eq!(
                otlp::attr_int(server, "http.response.status_code"),
                Some(i64::from(status)),
                "{path}"
            );
            if !headers.is_empty() {
                assert_eq!(otlp::hex(&server.parent_span_id), W3C_PARENT, "{path}");
            }
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_filter_text_format_and_tcp_records() -> anyhow::Result<()> {
    let logs = LogDir::new()?;
    let (errors, text, tcp_log) = (
        logs.file("errors.json"),
        logs.file("access.txt"),
        logs.file("tcp.json"),
    );
    let up = upstream::http1("backend").await?;
    let echo = upstream::tcp_echo().await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: picky
    address: 127.0.0.1:0
    access_log: {{ path: "{errors}", only_errors: true }}
    routes:
      - name: api
        match: {{ prefix: /api }}
        to: backend
  - name: plain
    address: 127.0.0.1:0
    access_log: {{ path: "{text}", format: text }}
    routes:
      - name: api
        match: {{ prefix: /api }}
        to: backend
  - name: tcp
    address: 127.0.0.1:0
    protocol: tcp
    to: echo
    access_log: {{ path: "{tcp_log}" }}
clusters:
  backend: {{ endpoints: [{up}] }}
  echo: {{ endpoints: [{echo}] }}
"#,
        errors = errors.display(),
        text = text.display(),
        tcp_log = tcp_log.display(),
        up = up.addr(),
        echo = echo.addr(),
    ))
    .await?;
    within(LIMIT, "log filter, text, tcp", async {
        let h1 = Client::http1();

        // only_errors: the 200 is not logged, the 404 is.
        assert_eq!(h1.get(&proxy.url("picky", "/api/fine")).await?.code(), 200);
        assert_eq!(h1.get(&proxy.url("picky", "/missing")).await?.code(), 404);
        let v = record(&proxy, &errors, "only_errors 404", by_path("/missing")).await?;
        assert_eq!((&v["status"], &v["response_flags"]), (&404.into(), &"NR".into()));
        // A request refused before routing (two Host headers: 400) is logged too.
        let reply = weft_tests::client::raw_exchange(
            proxy.addr("picky"),
            b"GET /api/twice HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            Duration::from_millis(500),
            65536,
        )
        .await?;
        assert!(reply.text().starts_with("HTTP/1.1 400"), "{}", reply.text());
        let v = record(&proxy, &errors, "400", by_path("/api/twice")).await?;
        assert_eq!((&v["status"], &v["response_flags"]), (&400.into(), &"DPE".into()));
        assert_eq!(v["route"], "", "{v}");
        flush(&proxy).await?;
        let logged = lines(&errors)?;
        assert_eq!(logged.len(), 2, "only the 404 and the 400: {logged:#?}");

        // Envoy's default text line.
        let reply = h1
            .get_with(
                &proxy.url("plain", "/api/text?q=1"),
                &[("user-agent", "weft-e2e/1.0")],
            )
            .await?;
        assert_eq!(reply.code(), 200);
        let seen = up.last().expect("a request");
        let want = format!(
            r#"^\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] "GET /api/text\?q=1 HTTP/1\.1" 200 - 0 17 \d+ \d+ "{xff}" "weft-e2e/1\.0" "{rid}" "{authority}" "{upstream}"$"#,
            xff = regex::escape(seen.header("x-forwarded-for").unwrap_or("?")),
            rid = regex::escape(seen.header("x-request-id").unwrap_or("?")),
            authority = regex::escape(&proxy.addr("plain").to_string()),
            upstream = regex::escape(&up.addr().to_string()),
        );
        let want = regex::Regex::new(&want)?;
        let deadline = Instant::now() + WAIT;
        let line = loop {
            flush(&proxy).await?;
            if let Some(l) = lines(&text)?.into_iter().next() {
                break l;
            }
            anyhow::ensure!(Instant::now() < deadline, "no text line within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(want.is_match(&line), "text line {line:?}\ndoes not match {want}");
        // DURATION >= UPSTREAM_TTFB (whole milliseconds).
        let numbers: Vec<u64> = line
            .split("\" ")
            .nth(1)
            .unwrap_or_default()
            .split(' ')
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(
            numbers.len() >= 5 && numbers[3] >= numbers[4],
            "duration >= upstream time: {line}"
        );

        // A TCP connection: K bytes each way.
        const K: usize = 1000;
        let mut s = TcpStream::connect(proxy.addr("tcp")).await?;
        let client_addr = s.local_addr()?;
        s.write_all(&[7u8; K]).await?;
        let mut back = vec![0u8; K];
        s.read_exact(&mut back).await?;
        s.shutdown().await?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await?;
        drop(s);
        let v = record(&proxy, &tcp_log, "tcp", |v| v["kind"] == "tcp").await?;
        assert_eq!(v["protocol"], "TCP", "{v}");
        assert_eq!(v["listener"], "tcp", "{v}");
        assert_eq!(v["cluster"], "echo", "{v}");
        assert_eq!(v["route"], "", "{v}");
        assert_eq!(v["upstream_address"], echo.addr().to_string(), "{v}");
        assert_eq!(v["downstream_address"], client_addr.to_string(), "{v}");
        assert_eq!(v["response_flags"], "-", "{v}");
        assert_eq!(v["bytes_received"], K, "{v}");
        assert_eq!(v["bytes_sent"], K, "{v}");
        assert!(v["method"].is_null(), "{v}");
        assert!(v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{v}");

        // Four lines written (the 404 and the 400, the text line, the TCP line), none
        // dropped.
        flush(&proxy).await?;
        let m = proxy.metrics().await?;
        assert_eq!(m.sum("weft_access_log_records_total", &[]), 4.0, "{}", m.text);
        assert_eq!(m.sum("weft_access_log_dropped_total", &[]), 0.0);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_access_log_sink_drops_records_not_requests() -> anyhow::Result<()> {
    let logs = LogDir::new()?;
    let fifo = logs.file("stalled.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(made.success(), "mkfifo failed");
    // Read-write: opening never blocks, and keeps a reader that never reads, so the
    // proxy's open succeeds and its writes block once the pipe buffer is full.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)?;
    let up = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    access_log: {{ path: "{fifo}" }}
    routes:
      - name: api
        match: {{ prefix: / }}
        to: backend
clusters:
  backend: {{ endpoints: [{up}] }}
"#,
        fifo = fifo.display(),
        up = up.addr(),
    ))
    .await?;
    // The proxy queues 16 Ki records; past that (and the pipe's 64 KiB) they drop.
    const ROUND: usize = 1000;
    const MAX_ROUNDS: usize = 40;
    const WORKERS: usize = 16;
    let result = within(Duration::from_secs(60), "stalled sink", async {
        let client = Client::http1();
        let url = proxy.url("edge", "/stall");
        let mut sent = 0;
        for _ in 0..MAX_ROUNDS {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..WORKERS {
                let (client, url) = (client.clone(), url.clone());
                tasks.spawn(async move {
                    for _ in 0..ROUND / WORKERS {
                        let reply = client.get(&url).await?;
                        anyhow::ensure!(reply.code() == 200, "status {}", reply.code());
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            sent += ROUND / WORKERS * WORKERS;
            let m = proxy.metrics().await?;
            if m.sum("weft_access_log_dropped_total", &[]) > 0.0 {
                break;
            }
        }
        let m = proxy.metrics().await?;
        let dropped = m.sum("weft_access_log_dropped_total", &[]);
        let written = m.sum("weft_access_log_records_total", &[]);
        assert!(
            dropped > 0.0,
            "{sent} requests through a stalled sink: none dropped ({written} written)"
        );
        assert!(
            written < sent as f64,
            "the stalled sink cannot have taken all {sent} records ({written} written)"
        );
        assert_eq!(up.count(), sent, "every request reached the upstream");
        anyhow::Ok(())
    })
    .await;
    // Unblock the writer thread (its writes now fail) before the proxy goes away.
    drop(reader);
    result?
}
