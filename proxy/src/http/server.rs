//! Serves one accepted connection: HTTP/1.1, or HTTP/2 with prior knowledge, told apart
//! by peeking at the first bytes (the HTTP/2 connection preface). HTTP/1.1 starts on our
//! own loop ([`super::h1`]) and goes on with hyper's server, upgrades (WebSocket,
//! CONNECT) enabled, from the first request the loop hands off; HTTP/2 is hyper's.
//!
//! Limits come from the listener's settings: time to receive request headers (slow
//! clients are cut off: on the HTTP/1.1 loop from a head's first byte, on hyper's
//! HTTP/1.1 server from the end of the previous exchange), and the size of a request's
//! header block (beyond it: 431 on HTTP/1.1; on HTTP/2 the h2 crate closes the
//! connection with GOAWAY). When the listener drains, in-flight requests finish, idle
//! HTTP/1.1 connections close and HTTP/2 clients get a GOAWAY.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::Counter;
use tokio::net::TcpStream;

use crate::drain::{DRAIN_TIMEOUT, Watch};

use super::body::Body;
use super::h1;
use super::handler::{self, ConnCtx};

/// Protocol detection outcomes of one listener (`weft_protocol_detection_total`).
#[derive(Debug)]
pub struct DetectCounters {
    http1: Counter,
    http2: Counter,
    timeout: Counter,
    closed: Counter,
}

impl DetectCounters {
    /// Counters for listener `listener`.
    pub fn new(registry: &weft_telemetry::Registry, listener: &str) -> Self {
        use weft_telemetry::names::{PROTOCOL_DETECTION_TOTAL as N, label};
        let c = |outcome: &str| {
            registry.counter(
                N,
                &[
                    (label::LISTENER, listener.to_owned()),
                    (label::OUTCOME, outcome.to_owned()),
                ],
            )
        };
        Self {
            http1: c("http1"),
            http2: c("http2"),
            timeout: c("timeout"),
            closed: c("closed"),
        }
    }
}

/// Connection settings of an HTTP listener.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time to receive a request's headers.
    pub request_headers_timeout: Duration,
    /// Largest request header block, in bytes.
    pub max_request_headers: usize,
    /// Close the connection after this long without traffic or requests in flight.
    pub idle_timeout: Option<Duration>,
    /// Where detection outcomes are counted.
    pub detection: Option<Arc<DetectCounters>>,
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
pub async fn serve(stream: TcpStream, ctx: Arc<ConnCtx>, settings: Settings, drain: Watch) {
    let detected = tokio::time::timeout(settings.request_headers_timeout, detect(&stream)).await;
    let counters = settings.detection.as_deref();
    let protocol = match detected {
        Ok(Ok(Some(p))) => {
            if let Some(c) = counters {
                match p {
                    Protocol::Http1 => c.http1.increment(1),
                    Protocol::Http2 => c.http2.increment(1),
                }
            }
            p
        }
        // Closed, failed, or silent past the header timeout: nothing to serve.
        Ok(_) => {
            if let Some(c) = counters {
                c.closed.increment(1);
            }
            return;
        }
        Err(_) => {
            if let Some(c) = counters {
                c.timeout.increment(1);
            }
            return;
        }
    };
    serve_io(stream, protocol, ctx, settings, drain).await;
}

/// Serves a TLS connection: the protocol is the one ALPN chose (`h2`, else HTTP/1.1).
pub async fn serve_tls<I>(
    stream: I,
    alpn: Option<&[u8]>,
    ctx: Arc<ConnCtx>,
    settings: Settings,
    drain: Watch,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let protocol = if alpn == Some(b"h2".as_slice()) {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    if let Some(c) = settings.detection.as_deref() {
        match protocol {
            Protocol::Http1 => c.http1.increment(1),
            Protocol::Http2 => c.http2.increment(1),
        }
    }
    serve_io(stream, protocol, ctx, settings, drain).await;
}

async fn serve_io<I>(
    stream: I,
    protocol: Protocol,
    ctx: Arc<ConnCtx>,
    settings: Settings,
    mut drain: Watch,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let idle = settings.idle_timeout.map(|after| Idle {
        after,
        ctx: ctx.clone(),
    });
    let result = match protocol {
        Protocol::Http1 => {
            // Our own loop first; hyper's server from the first request it cannot take.
            let stop = AtomicBool::new(false);
            let mut stream = stream;
            // Grown by the loop's first read.
            let mut buf = BytesMut::new();
            let limits = h1::Limits {
                max_head: settings.max_request_headers,
                head_timeout: settings.request_headers_timeout,
            };
            let served = h1::serve(&mut stream, &mut buf, &ctx, limits, &stop);
            match drive(served, &mut drain, idle.clone(), |_| {
                stop.store(true, Relaxed)
            })
            .await
            {
                Some(h1::Ended::HandOff) => {
                    let io = TokioIo::new(h1::Rewind::new(buf.freeze(), stream));
                    let conn = http1::Builder::new()
                        .auto_date_header(false)
                        .timer(TokioTimer::new())
                        .header_read_timeout(settings.request_headers_timeout)
                        .max_buf_size(settings.max_request_headers.max(MIN_H1_BUFFER))
                        .serve_connection(io, hyper_service(ctx))
                        .with_upgrades();
                    drive(conn, &mut drain, idle, |c| c.graceful_shutdown()).await
                }
                Some(h1::Ended::Closed) => Some(Ok(())),
                None => None,
            }
        }
        Protocol::Http2 => {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(
                    u32::try_from(settings.max_request_headers).unwrap_or(u32::MAX),
                )
                .serve_connection(TokioIo::new(stream), hyper_service(ctx));
            drive(conn, &mut drain, idle, |c| c.graceful_shutdown()).await
        }
    };
    match result {
        Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        None => tracing::debug!("connection closed at the end of the drain"),
        Some(Ok(())) => {}
    }
}

/// The handler as a hyper service.
fn hyper_service(
    ctx: Arc<ConnCtx>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        // Boxed: hyper's HTTP/2 server spawns a task per stream around this future, and the
        // handler's future is ~3 KB; moved by value into the task it was copied more than
        // once per request. One allocation instead: callgrind 43.6k -> 41.0k instructions
        // per proxied h2c request (it counts a large copy's `rep movsb` per byte, so CPU
        // time gains less: below this machine's noise). Connections handed to hyper's
        // HTTP/1.1 server pay the same one allocation per request; they are off the hot
        // path (upgrades, CONNECT, streamed bodies).
        Box::pin(handler::handle(ctx.clone(), req.map(Body::Incoming)))
    })
}

/// The idle timeout of a connection.
#[derive(Clone)]
struct Idle {
    after: Duration,
    ctx: Arc<ConnCtx>,
}

/// Runs a connection to its end. When the drain starts it is asked (once) to shut down
/// gracefully and runs on while it does, for at most [`DRAIN_TIMEOUT`]; then it is
/// dropped, which closes it (`None`).
///
/// The idle timeout is checked without a clock read per event: every wakeup of the
/// connection counts as activity, and a timer that fires every `after` looks whether
/// anything but itself woke the connection since it last fired and whether a request
/// is in flight. A connection idle that long is shut down gracefully (HTTP/1.1 closes,
/// HTTP/2 sends GOAWAY), between one and two `after`s after its last activity.
async fn drive<C: Future>(
    conn: C,
    drain: &mut Watch,
    idle: Option<Idle>,
    shutdown: impl Fn(Pin<&mut C>),
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut cutoff: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut idle_timer = idle.as_ref().map(|i| Box::pin(tokio::time::sleep(i.after)));
    let mut wakeups: u64 = 0;
    let mut wakeups_at_tick: u64 = 0;
    std::future::poll_fn(|cx| {
        wakeups += 1;
        if cutoff.is_none() && drain.poll_draining(cx).is_ready() {
            shutdown(conn.as_mut());
            cutoff = Some(Box::pin(tokio::time::sleep(DRAIN_TIMEOUT)));
        }
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if let (Some(timer), Some(i)) = (idle_timer.as_mut(), idle.as_ref())
            && timer.as_mut().poll(cx).is_ready()
        {
            // Only the timer itself woke us since the last tick: nothing moved.
            let quiet = wakeups - wakeups_at_tick <= 1;
            let busy = i.ctx.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0;
            if quiet && !busy && cutoff.is_none() {
                tracing::debug!(after = ?i.after, "closing an idle connection");
                shutdown(conn.as_mut());
                cutoff = Some(Box::pin(tokio::time::sleep(DRAIN_TIMEOUT)));
                idle_timer = None;
                // Let the connection act on the shutdown now.
                cx.waker().wake_by_ref();
            } else {
                wakeups_at_tick = wakeups;
                timer.as_mut().reset(tokio::time::Instant::now() + i.after);
                let _ = timer.as_mut().poll(cx);
            }
        }
        let cut = cutoff
            .as_mut()
            .is_some_and(|c| c.as_mut().poll(cx).is_ready());
        if cut {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

const PREFACE_LIMIT: Duration = Duration::from_secs(2);

/// Which protocol the client speaks, from its first bytes (without consuming them);
/// `None` if it closed before sending anything, or began the HTTP/2 preface and did
/// not finish it in time.
async fn detect(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
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
        // A prefix of the preface so far: `peek` would return the same bytes at once,
        // so wait for the rest, backing off so that a client stalled here (or gone:
        // peeking cannot see its close while bytes are buffered) costs next to nothing.
        if waited >= PREFACE_LIMIT {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        waited += pause;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
