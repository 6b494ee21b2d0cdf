//! The admin server: liveness, readiness, metrics, configuration dump and explain.
//!
//! | path | what |
//! |---|---|
//! | `/live` | 200 while the process runs |
//! | `/ready` | 200 once a full configuration is active and its listeners bound |
//! | `/metrics` | Prometheus text exposition |
//! | `/config_dump` | the active Envoy resources, as Envoy's `/config_dump` JSON |
//! | `/explain?method=GET&url=/path&header=k:v&listener=name[&format=json]` | how a request would be handled |
//! | `/clusters[?format=json]` | endpoints per cluster: weight, health (ejection, active checks), latency estimate, requests in flight |
//! | `/stats` | every counter and gauge as `name{labels} value` lines |
//! | `/logging[?level=FILTER]` | shows, or (POST, loopback clients only) sets, the log filter |
//!
//! Rendering runs on the blocking pool so a scrape never holds a worker thread that
//! traffic needs. It binds to loopback by default: it is an operator's interface.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::explain::{self, Query};
use crate::http::Body;
use crate::proxy::Inner;

/// Serves admin requests on `socket` until `stop`.
pub(crate) async fn serve(socket: TcpListener, proxy: Weak<Inner>, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(proxy.clone(), peer, req));
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn handle(
    proxy: Weak<Inner>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let Some(proxy) = proxy.upgrade() else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
    };
    if req.uri().path() == "/logging" {
        return Ok(logging(&req, peer));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin endpoints take GET\n",
        ));
    }
    let resp = match req.uri().path() {
        "/" => text(
            StatusCode::OK,
            "weft admin\n  /live\n  /ready\n  /metrics\n  /stats\n  /clusters\n  /config_dump\n  /explain?method=GET&url=/path&header=name:value\n  /logging (POST ?level=debug)\n",
        ),
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            let state = proxy.store.load();
            if state.version >= 1 {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "no configuration yet\n")
            }
        }
        "/metrics" => {
            pool_gauges(&proxy);
            let registry = proxy.registry.clone();
            let render = move || registry.render() + &weft_telemetry::process::render();
            match tokio::task::spawn_blocking(render).await {
                Ok(body) => with_type(
                    StatusCode::OK,
                    body,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        "/config_dump" => {
            let state = proxy.store.load();
            let dump = tokio::task::spawn_blocking(move || {
                state
                    .resources
                    .config_dump(&state.version.to_string())
                    .and_then(|v| serde_json::to_string_pretty(&v).map_err(|e| e.to_string()))
            })
            .await;
            match dump {
                Ok(Ok(json)) => with_type(StatusCode::OK, json + "\n", "application/json"),
                Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        "/explain" => explain_endpoint(&proxy, req.uri().query().unwrap_or_default()),
        "/clusters" => clusters(&proxy, req.uri().query().unwrap_or_default()),
        "/stats" => {
            let registry = proxy.registry.clone();
            match tokio::task::spawn_blocking(move || stats_text(&registry.render())).await {
                Ok(body) => with_type(StatusCode::OK, body, "text/plain; charset=utf-8"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "unknown admin path; see /\n"),
    };
    Ok(resp)
}

/// `/logging`: GET shows the filter; POST `?level=...` sets it, from loopback only (a
/// remote client turning on trace logging could fill the disk).
fn logging(req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    use weft_telemetry::logging;
    let pairs = query_pairs(req.uri().query().unwrap_or_default());
    let level = pairs
        .iter()
        .find(|(k, _)| k == "level")
        .map(|(_, v)| v.clone());
    match (req.method(), level) {
        (&Method::POST, Some(level)) => {
            if !peer.ip().is_loopback() {
                return text(
                    StatusCode::FORBIDDEN,
                    "the log level can be changed from loopback only\n",
                );
            }
            match logging::set_filter(&level) {
                Ok(()) => {
                    tracing::info!(filter = %level, "log filter changed");
                    text(StatusCode::OK, &format!("log filter: {level}\n"))
                }
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            }
        }
        (&Method::GET | &Method::HEAD, None) => match logging::current_filter() {
            Some(f) => text(StatusCode::OK, &format!("log filter: {f}\n")),
            None => text(StatusCode::OK, "log filter: (not managed by weft)\n"),
        },
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /logging shows the filter; POST /logging?level=debug sets it\n",
        ),
    }
}

/// Sets the per-cluster pool gauges from the live endpoints, just before a scrape (the
/// data path does not keep sums that only a scrape reads).
fn pool_gauges(proxy: &Inner) {
    use weft_telemetry::names;
    let state = proxy.store.load();
    for c in &state.clusters {
        let set = c.endpoints();
        let (idle, active) = set.endpoints.iter().fold((0usize, 0u64), |(i, a), (e, _)| {
            (
                i + e.client.idle_connections(),
                a + u64::from(e.load.pending()),
            )
        });
        let labels = [(names::label::CLUSTER, c.config.name.to_string())];
        proxy
            .registry
            .gauge(names::UPSTREAM_POOL_IDLE, &labels)
            .set(idle as f64);
        proxy
            .registry
            .gauge(names::UPSTREAM_REQUESTS_ACTIVE, &labels)
            .set(active as f64);
    }
}

/// `/stats`: the Prometheus text without comments and histogram buckets.
fn stats_text(prometheus: &str) -> String {
    prometheus
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter(|l| {
            !l.split(['{', ' '])
                .next()
                .is_some_and(|n| n.ends_with("_bucket"))
        })
        .fold(String::new(), |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        })
}

/// `/clusters`: Envoy's `cluster::address::field::value` lines, or JSON.
///
/// Health per endpoint: `health_flags` as Envoy writes them (`healthy`, or
/// `/failed_active_hc` and `/failed_outlier_check`), whether it is ejected and for how
/// much longer, its ejection backoff and count, its active health (`healthy`,
/// `unhealthy`, or `unchecked` when the cluster has no health check or none has
/// finished), and its consecutive-failure counters.
fn clusters(proxy: &Arc<Inner>, query: &str) -> Response<Body> {
    use crate::upstream::outlier::ActiveHealth;
    let state = proxy.store.load();
    let json = query_pairs(query)
        .iter()
        .any(|(k, v)| k == "format" && v == "json");
    let now = tokio::time::Instant::now();
    let mut out = String::new();
    let mut list = Vec::new();
    for c in &state.clusters {
        let set = c.endpoints();
        let mut eps = Vec::new();
        for (e, weight) in &set.endpoints {
            let rtt_ms = e.load.rtt().as_secs_f64() * 1000.0;
            let pending = e.load.pending();
            let idle = e.client.idle_connections();
            let h = c.health_view(e, now);
            let failed_hc = h.active == ActiveHealth::Unhealthy;
            let flags = match (failed_hc, h.ejected) {
                (false, false) => "healthy",
                (true, false) => "/failed_active_hc",
                (false, true) => "/failed_outlier_check",
                (true, true) => "/failed_active_hc/failed_outlier_check",
            };
            let remaining_ms = h.ejection_remaining.as_millis() as u64;
            if json {
                eps.push(serde_json::json!({
                    "address": e.addr.to_string(),
                    "weight": weight,
                    // Healthy: balanced over outside panic mode.
                    "health": if failed_hc || h.ejected { "unhealthy" } else { "healthy" },
                    "health_flags": flags,
                    "ejected": h.ejected,
                    "ejection_remaining_ms": remaining_ms,
                    "ejection_multiplier": h.ejection_multiplier,
                    "ejections": h.ejections,
                    "active_health": h.active.as_str(),
                    "consecutive_5xx": h.consecutive_5xx,
                    "consecutive_gateway_failures": h.consecutive_gateway_failures,
                    "ewma_latency_ms": rtt_ms,
                    "active_requests": pending,
                    "idle_connections": idle,
                }));
            } else {
                let name = &c.config.name;
                let a = e.addr;
                let _ = writeln!(out, "{name}::{a}::weight::{weight}");
                let _ = writeln!(out, "{name}::{a}::health_flags::{flags}");
                let _ = writeln!(out, "{name}::{a}::ejected::{}", h.ejected);
                let _ = writeln!(out, "{name}::{a}::ejection_remaining_ms::{remaining_ms}");
                let _ = writeln!(
                    out,
                    "{name}::{a}::ejection_multiplier::{}",
                    h.ejection_multiplier
                );
                let _ = writeln!(out, "{name}::{a}::ejections::{}", h.ejections);
                let _ = writeln!(out, "{name}::{a}::active_health::{}", h.active.as_str());
                let _ = writeln!(out, "{name}::{a}::consecutive_5xx::{}", h.consecutive_5xx);
                let _ = writeln!(
                    out,
                    "{name}::{a}::consecutive_gateway_failures::{}",
                    h.consecutive_gateway_failures
                );
                let _ = writeln!(out, "{name}::{a}::ewma_latency_ms::{rtt_ms:.3}");
                let _ = writeln!(out, "{name}::{a}::rq_active::{pending}");
                let _ = writeln!(out, "{name}::{a}::cx_idle::{idle}");
            }
        }
        if json {
            list.push(serde_json::json!({
                "name": &*c.config.name,
                "endpoints": eps,
            }));
        }
    }
    if json {
        match serde_json::to_string_pretty(&serde_json::json!({ "clusters": list })) {
            Ok(j) => with_type(StatusCode::OK, j + "\n", "application/json"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        }
    } else {
        with_type(StatusCode::OK, out, "text/plain; charset=utf-8")
    }
}

fn explain_endpoint(proxy: &Arc<Inner>, query: &str) -> Response<Body> {
    let pairs = query_pairs(query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(url) = get("url") else {
        return text(
            StatusCode::BAD_REQUEST,
            "explain needs url=..., e.g. /explain?method=GET&url=/products/42\n",
        );
    };
    let method = get("method").unwrap_or_else(|| "GET".to_owned());
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return text(StatusCode::BAD_REQUEST, "invalid method\n");
    };
    let mut headers = Vec::new();
    for (k, v) in pairs.iter().filter(|(k, _)| k == "header") {
        let _ = k;
        match v.split_once(':') {
            Some((name, value)) => headers.push((name.trim().to_owned(), value.trim().to_owned())),
            None => return text(StatusCode::BAD_REQUEST, "header=name:value\n"),
        }
    }
    let q = Query {
        method,
        url,
        headers,
        listener: get("listener"),
    };
    let state = proxy.store.load();
    match explain::explain(&state.snapshot, &q) {
        Ok(e) if get("format").as_deref() == Some("json") => match serde_json::to_string_pretty(&e)
        {
            Ok(j) => with_type(StatusCode::OK, j + "\n", "application/json"),
            Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
        },
        Ok(e) => text(StatusCode::OK, &e.to_string()),
        Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    }
}

/// `a=1&b=x%20y` -> [("a","1"), ("b","x y")]
fn query_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
