//! Serves one accepted connection: HTTP/1.1, or HTTP/2 with prior knowledge, told apart
//! by peeking at the first bytes (the HTTP/2 connection preface), with upgrades
//! (WebSocket, CONNECT) enabled.
//!
//! Limits come from the listener's settings: time to receive request headers (slow
//! clients are cut off), and the size of a request's header block (beyond it: 431 on
//! HTTP/1.1; on HTTP/2 the h2 crate closes the connection with GOAWAY). When the
//! listener drains, in-flight requests finish, idle HTTP/1.1 connections close and
//! HTTP/2 clients get a GOAWAY.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::drain::Watch;

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

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves `stream` until the client closes it, or `drain` fires and it has wound down.
pub async fn serve(stream: TcpStream, ctx: Arc<ConnCtx>, settings: Settings, mut drain: Watch) {
    let protocol =
        match tokio::time::timeout(settings.request_headers_timeout, detect(&stream)).await {
            Ok(Ok(Some(p))) => p,
            // Closed, failed, or silent past the header timeout: nothing to serve.
            _ => return,
        };
    let service = hyper::service::service_fn(move |req| handler::handle(ctx.clone(), req));
    let io = TokioIo::new(stream);
    let result = match protocol {
        Protocol::Http1 => {
            let conn = http1::Builder::new()
                .auto_date_header(false)
                .timer(TokioTimer::new())
                .header_read_timeout(settings.request_headers_timeout)
                .max_buf_size(settings.max_request_headers.max(MIN_H1_BUFFER))
                .serve_connection(io, service)
                .with_upgrades();
            let mut conn = pin!(conn);
            let mut shutting_down = false;
            std::future::poll_fn(|cx| {
                if !shutting_down && drain.poll_draining(cx).is_ready() {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                conn.as_mut().poll(cx)
            })
            .await
        }
        Protocol::Http2 => {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .enable_connect_protocol()
                .max_header_list_size(
                    u32::try_from(settings.max_request_headers).unwrap_or(u32::MAX),
                )
                .serve_connection(io, service);
            let mut conn = pin!(conn);
            let mut shutting_down = false;
            std::future::poll_fn(|cx| {
                if !shutting_down && drain.poll_draining(cx).is_ready() {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                conn.as_mut().poll(cx)
            })
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Which protocol the client speaks, from its first bytes (without consuming them);
/// `None` if it closed before sending anything.
async fn detect(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(Protocol::Http1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // A prefix of the preface so far (a client writing it in pieces): `peek` would
        // return the same bytes at once, so wait a moment for the rest.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
