//! Serves one accepted connection: HTTP/1.1 or HTTP/2 with prior knowledge, told apart by
//! the first bytes (the HTTP/2 preface), with upgrades (WebSocket, CONNECT) enabled.
//!
//! Limits come from the listener's settings: time to receive request headers (slow
//! clients are cut off), and the size of a request's header block (beyond it: 431 on
//! HTTP/1.1; on HTTP/2 the h2 crate closes the connection with GOAWAY).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;

use super::handler::{self, ConnCtx};

/// Connection settings of an HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Time to receive a request's headers.
    pub request_headers_timeout: Duration,
    /// Largest request header block, in bytes.
    pub max_request_headers: usize,
}

/// Smallest read buffer hyper accepts for HTTP/1.
const MIN_H1_BUFFER: usize = 8192;

/// Serves `stream` until the client closes it or a graceful shutdown drains it.
pub async fn serve(stream: TcpStream, ctx: Arc<ConnCtx>, settings: Settings, graceful: Watcher) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_headers_timeout)
        .max_buf_size(settings.max_request_headers.max(MIN_H1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(settings.max_request_headers).unwrap_or(u32::MAX));
    let service = hyper::service::service_fn(move |req| handler::handle(ctx.clone(), req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = graceful.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
