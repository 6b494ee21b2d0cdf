//! The admin server: liveness, readiness, metrics, configuration dump and explain.
//!
//! | path | what |
//! |---|---|
//! | `/live` | 200 while the process runs |
//! | `/ready` | 200 once a full configuration is active and its listeners bound |
//! | `/metrics` | Prometheus text exposition |
//! | `/config_dump` | the active Envoy resources, as Envoy's `/config_dump` JSON |
//! | `/explain?method=GET&url=/path&header=k:v&listener=name[&format=json]` | how a request would be handled |
//!
//! Rendering runs on the blocking pool so a scrape never holds a worker thread that
//! traffic needs. It binds to loopback by default: it is an operator's interface.

use std::convert::Infallible;
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
        let (stream, _) = tokio::select! {
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
            let service = hyper::service::service_fn(move |req| handle(proxy.clone(), req));
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

async fn handle(proxy: Weak<Inner>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(proxy) = proxy.upgrade() else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin endpoints take GET\n",
        ));
    }
    let resp = match req.uri().path() {
        "/" => text(
            StatusCode::OK,
            "weft admin\n  /live\n  /ready\n  /metrics\n  /config_dump\n  /explain?method=GET&url=/path&header=name:value\n",
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
            let registry = proxy.registry.clone();
            match tokio::task::spawn_blocking(move || registry.render()).await {
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
        _ => text(StatusCode::NOT_FOUND, "unknown admin path; see /\n"),
    };
    Ok(resp)
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
