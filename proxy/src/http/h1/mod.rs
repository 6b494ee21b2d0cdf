//! The HTTP/1.1 server side of the hot path: a small connection loop that parses
//! request heads (`httparse`), calls the handler and writes the response, all in the
//! connection's task, with no channel or task between the socket and the handler.
//!
//! Why not hyper's server for every request: hyper's HTTP/1.1 dispatcher (state
//! machine, buffered IO, body channel, encoder) is general; for the common exchange
//! this loop does the same work with ~2k fewer instructions per proxied request
//! (26.8k -> 24.7k, callgrind; figures in `tests/perf/README.md`). It serves requests
//! without a body or with a `content-length` body that arrived with the head, and
//! writes any response (streamed, length, chunked with trailers, or until close).
//! Everything else (an
//! `Upgrade` or `CONNECT` tunnel, `Expect: 100-continue`, a chunked body, a body still
//! to arrive) is handed to hyper's server at the request's first byte, with the bytes
//! already read, and hyper serves the connection from there on
//! ([`Ended::HandOff`], [`Rewind`]).
//!
//! Behaviour matches hyper's where a client could tell: pipelined requests are
//! answered in order; a client that closes while its request is in flight cancels it;
//! heads over the listener's limit get 431, malformed ones 400 (with `x-weft-error`
//! and a reason, where hyper sent a bare status), and the connection closes. One
//! deliberate difference: the header timeout runs from a head's first byte to its last
//! (Envoy's `request_headers_timeout`), not from the end of the previous exchange; an
//! idle keep-alive connection is the idle timeout's business.

pub mod encode;
pub mod parse;

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

use self::encode::Framing;
use self::parse::{Reject, Scanned};
use super::Body;
use super::handler::{self, ConnCtx};
use super::wire;

/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;
/// Below this much free room the read buffer grows before a read.
const MIN_READ_ROOM: usize = 1024;
/// Buffered response bytes are written out once they reach this.
const FLUSH_AT: usize = 64 * 1024;
/// A response data frame at least this large is written from its own buffer, not
/// copied into the connection's.
const WRITE_THROUGH: usize = 16 * 1024;
/// Room for headers in the map a request is parsed into (the previous response's map,
/// cleared, when there was one).
const MAP_ROOM: usize = 24;

/// How serving a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The connection is finished (closed by either side, refused, or drained).
    Closed,
    /// The request at the front of the buffer needs hyper's server; the connection
    /// and the unconsumed buffer go to it.
    HandOff,
}

/// Limits of an HTTP/1.1 connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head, in bytes.
    pub max_head: usize,
    /// Time from a head's first byte to its end.
    pub head_timeout: Duration,
}

/// Serves HTTP/1.1 requests on `io` until the connection ends or needs hyper. `buf`
/// holds what was read and not consumed (for the hand-off). `stop` asks the loop to
/// wind down: it closes when idle, and after the response in flight (which says
/// `connection: close`).
pub async fn serve<I>(
    io: &mut I,
    buf: &mut BytesMut,
    ctx: &Arc<ConnCtx>,
    limits: Limits,
    stop: &AtomicBool,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        io,
        buf,
        out: Vec::with_capacity(READ_CHUNK),
        spans: Vec::new(),
        map: None,
        timer: None,
    };
    loop {
        let facts = match conn.next_head(limits, stop).await {
            Next::Serve(f) => f,
            Next::HandOff => return Ended::HandOff,
            Next::Closed => return Ended::Closed,
            Next::Refuse(r) => {
                conn.refuse(r).await;
                return Ended::Closed;
            }
        };
        let map = conn
            .map
            .take()
            .unwrap_or_else(|| HeaderMap::with_capacity(MAP_ROOM));
        let req = match parse::build(conn.buf, &facts, &conn.spans, map) {
            Ok(r) => r,
            Err(r) => {
                conn.refuse(r).await;
                return Ended::Closed;
            }
        };
        let head_request = req.method() == Method::HEAD;
        // Pinned where it is made: the handler's future is large, and moving it costs.
        let handled = pin!(handler::handle(ctx.clone(), req.map(Body::full)));
        // `None`: the client went away; dropping the future cancels the request.
        let Some(Ok(resp)) = conn.await_watching(handled).await else {
            return Ended::Closed;
        };
        let keep_alive = facts.keep_alive && !stop.load(Ordering::Relaxed);
        if !conn
            .respond(resp, head_request, facts.http10, keep_alive)
            .await
        {
            let _ = conn.io.shutdown().await;
            return Ended::Closed;
        }
    }
}

enum Next {
    Serve(parse::Facts),
    HandOff,
    Closed,
    Refuse(Reject),
}

struct Conn<'a, I> {
    io: &'a mut I,
    buf: &'a mut BytesMut,
    /// Response bytes not yet written.
    out: Vec<u8>,
    /// Header offsets of the head being parsed.
    spans: Vec<parse::Span>,
    /// The last response's header map, cleared: the next request is parsed into it.
    map: Option<HeaderMap>,
    /// The header timeout, made on first use and reset for each head after that.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<'_, I> {
    /// Reads until a whole head is at the front of the buffer.
    async fn next_head(&mut self, limits: Limits, stop: &AtomicBool) -> Next {
        let Self {
            io,
            buf,
            spans,
            timer,
            ..
        } = self;
        let mut armed = false;
        // Bytes already found to hold no complete head. A head is parsed again only when
        // new bytes could end it (or at the size limit): re-parsing on every read would
        // make a head sent a byte at a time cost quadratic time.
        let mut scanned: usize = 0;
        std::future::poll_fn(|cx| {
            loop {
                if !buf.is_empty()
                    && (scanned == 0
                        || buf.len() >= limits.max_head
                        || parse::may_end_head(&buf[scanned.saturating_sub(3)..]))
                {
                    match parse::scan(buf, limits.max_head, spans) {
                        Ok(Scanned::Serve(f)) => return Poll::Ready(Next::Serve(f)),
                        Ok(Scanned::HandOff) => return Poll::Ready(Next::HandOff),
                        Err(r) => return Poll::Ready(Next::Refuse(r)),
                        Ok(Scanned::Partial) => scanned = buf.len(),
                    }
                } else if buf.is_empty() && stop.load(Ordering::Relaxed) {
                    return Poll::Ready(Next::Closed);
                }
                match poll_read(&mut **io, buf, cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Next::Closed),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => {}
                }
                if buf.is_empty() {
                    // Idle between requests: the idle timeout's business.
                    return Poll::Pending;
                }
                // Part of a head: from here on it must be complete in time.
                let t =
                    timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limits.head_timeout)));
                if !armed {
                    t.as_mut()
                        .reset(tokio::time::Instant::now() + limits.head_timeout);
                    armed = true;
                }
                if t.as_mut().poll(cx).is_ready() {
                    tracing::debug!("request head not complete within the header timeout");
                    return Poll::Ready(Next::Closed);
                }
                return Poll::Pending;
            }
        })
        .await
    }

    /// Awaits `fut` while watching the client: if it closes (or fails) first, `None`.
    async fn await_watching<F: Future>(&mut self, mut fut: Pin<&mut F>) -> Option<F::Output> {
        let Self { io, buf, .. } = self;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if client_gone(&mut **io, buf, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `resp`; whether the connection can serve another request.
    async fn respond(
        &mut self,
        resp: Response<Body>,
        head_request: bool,
        http10: bool,
        keep_alive: bool,
    ) -> bool {
        // No interim (1xx) response gets here: upgrades go to hyper, the upstream codec
        // skips interim responses, and local answers are 200-599.
        let (mut parts, body) = resp.into_parts();
        self.out.clear();
        let body_len = body.size_hint().exact();
        let (framing, keep) = encode::head(
            &parts,
            head_request,
            http10,
            body_len,
            keep_alive,
            &mut self.out,
        );
        parts.headers.clear();
        self.map = Some(parts.headers);
        self.write_body(body, framing).await && keep
    }

    /// Writes `body` after the head already in `out`; whether it went out whole and
    /// framed.
    async fn write_body(&mut self, mut body: Body, framing: Framing) -> bool {
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut trailers = None;
        let mut whole = true;
        if framing != Framing::Empty {
            loop {
                if body.is_end_stream() {
                    break;
                }
                let Self { io, buf, out, .. } = self;
                let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(frame) => Poll::Ready(Some(frame)),
                    // Write what is ready before waiting for more.
                    Poll::Pending if !out.is_empty() => Poll::Ready(None),
                    Poll::Pending if client_gone(&mut **io, buf, cx) => {
                        Poll::Ready(Some(Some(Err("client closed".into()))))
                    }
                    Poll::Pending => Poll::Pending,
                })
                .await;
                let frame = match next {
                    None => {
                        if !self.flush().await {
                            return false;
                        }
                        continue;
                    }
                    Some(None) => break,
                    Some(Some(Err(e))) => {
                        tracing::debug!(error = %e, "response body broke off");
                        // What is buffered goes out; the client sees the body end early.
                        let _ = self.flush().await;
                        return false;
                    }
                    Some(Some(Ok(frame))) => frame,
                };
                match frame.into_data() {
                    Ok(data) => {
                        if let Some((data, suffix)) = self.put(data, framing, &mut left, &mut whole)
                            && !self.write_through(data, suffix).await
                        {
                            return false;
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            trailers = Some(t);
                        }
                    }
                }
                if !whole {
                    break;
                }
                if self.out.len() >= FLUSH_AT && !self.flush().await {
                    return false;
                }
            }
        }
        match framing {
            Framing::Chunked => wire::last_chunk(trailers.as_ref(), &mut self.out),
            Framing::Length(_) if left > 0 => whole = false,
            _ => {}
        }
        self.flush().await && whole
    }

    /// Appends one data frame in the body's framing. A large frame is not copied: it is
    /// returned, with what must follow it (a chunk's CRLF), to be written after `out`.
    fn put(
        &mut self,
        mut data: Bytes,
        framing: Framing,
        left: &mut u64,
        whole: &mut bool,
    ) -> Option<(Bytes, &'static [u8])> {
        if let Framing::Length(_) = framing {
            let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
            if n < data.len() {
                tracing::debug!("response body longer than its content-length; cut");
                *whole = false;
                data.truncate(n);
            }
            *left -= n as u64;
        }
        let suffix: &'static [u8] = match framing {
            Framing::Empty => return None,
            Framing::Chunked if data.is_empty() => return None,
            Framing::Chunked => {
                wire::chunk_head(data.len(), &mut self.out);
                b"\r\n"
            }
            Framing::Length(_) | Framing::UntilClose => b"",
        };
        if data.len() >= WRITE_THROUGH {
            return Some((data, suffix));
        }
        self.out.extend_from_slice(&data);
        self.out.extend_from_slice(suffix);
        None
    }

    /// Writes `out`, then `data` and `suffix`, in one vectored write where the
    /// connection takes them; false if the client is gone.
    async fn write_through(&mut self, data: Bytes, suffix: &'static [u8]) -> bool {
        let Self { io, out, .. } = self;
        let mut parts = out.as_slice().chain(data).chain(suffix);
        let ok = io.write_all_buf(&mut parts).await.is_ok();
        out.clear();
        ok
    }

    /// Writes out what is buffered; false if the client is gone.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let ok = self.io.write_all(&self.out).await.is_ok();
        self.out.clear();
        ok && self.io.flush().await.is_ok()
    }

    /// Answers a refused head and leaves the connection to close.
    async fn refuse(&mut self, r: Reject) {
        let (status, code, reason) = match r {
            Reject::Bad(why) => ("400 Bad Request", "bad-request", why),
            Reject::TooLarge => (
                "431 Request Header Fields Too Large",
                "request-header-too-large",
                "request header block too large",
            ),
            Reject::UriTooLong => (
                "414 URI Too Long",
                "uri-too-long",
                "request target too long",
            ),
        };
        tracing::debug!(%status, reason, "refusing a request head");
        let body = format!("{reason}\n");
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(status.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        wire::header_line(&mut self.out, b"content-type", b"text/plain; charset=utf-8");
        wire::header_line(&mut self.out, b"x-weft-error", code.as_bytes());
        wire::header_line(
            &mut self.out,
            b"content-length",
            itoa::Buffer::new().format(body.len()).as_bytes(),
        );
        self.out.extend_from_slice(b"connection: close\r\n\r\n");
        self.out.extend_from_slice(body.as_bytes());
        if self.flush().await {
            let _ = self.io.shutdown().await;
        }
    }
}

/// Reads into `buf`, growing it first if it is nearly full.
fn poll_read<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(READ_CHUNK);
    }
    poll_read_buf(Pin::new(io), cx, buf)
}

/// Whether the client closed its connection (or it failed) while a request is in
/// flight. Bytes that arrive meanwhile (a pipelined request) stay in `buf`, and no
/// more is read until they are served.
fn client_gone<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    buf.is_empty() && matches!(poll_read(io, buf, cx), Poll::Ready(Ok(0) | Err(_)))
}

/// A connection with bytes already read from it in front: what hyper's server gets
/// after a hand-off.
#[derive(Debug)]
pub struct Rewind<I> {
    pre: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    /// `io`, whose next reads return `pre` first.
    pub fn new(pre: Bytes, io: I) -> Self {
        Self { pre, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(out.remaining());
            out.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
