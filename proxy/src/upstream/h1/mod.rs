//! A lean HTTP/1.1 client connection, driven by the task of the request that uses it.
//!
//! Why not hyper's client here: hyper drives each client connection in a task of its
//! own and hands requests and responses across channels, which on a proxy's hot path
//! (every request a write, a read and a handful of headers) costs more CPU than the
//! proxying itself. This module writes the request head and reads the response head
//! (with `httparse`) in the caller's task, and decodes the response body (length,
//! chunked or until close) as the downstream side reads it. It is deliberately small:
//! upgrades (`101`) and HTTP/2 still go through hyper (`super::client`).
//!
//! Framing follows RFC 9112: the request gets `content-length` when its size is known
//! and `transfer-encoding: chunked` otherwise; a response's length comes from the
//! request method and status, then `transfer-encoding`, then `content-length`, else
//! the connection's end. A connection is reusable only when both messages were framed,
//! complete, and the upstream did not ask to close it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::task::AbortOnDropHandle;

use super::head::RequestHead;
use crate::http::{Body, BoxError, ProxyError, wire};
use crate::snapshot::policy;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;
/// Read buffer growth per read.
const READ_CHUNK: usize = 16 * 1024;
/// Headers a response map has room for at least. hyper's server keeps the map of the
/// response it wrote (cleared) and parses the connection's next request into it, and the
/// proxy then adds its forwarding headers: sized for a browser's request plus those,
/// the map never grows (a grow rehashes every header: ~850 instructions a request).
/// The price is ~2.5 KB per map, which an idle HTTP/1.1 client connection keeps.
const RESPONSE_MAP_ROOM: usize = 24;
/// Largest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// An idle, reusable connection.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    scratch: Scratch,
}

/// Buffers an exchange needs and the next exchange on the connection reuses, so that a
/// request costs no allocation for them.
#[derive(Debug, Default)]
struct Scratch {
    /// The encoded request head (and a body that was already there).
    out: Vec<u8>,
    /// Where each response header's name and value sit in the head.
    spans: Vec<(usize, usize, usize, usize)>,
    /// The cluster's connection-limit permit, given back when the connection closes
    /// (it travels with the connection through every exchange).
    permit: Option<crate::resilience::breaker::Permit>,
}

impl Conn {
    /// A fresh connection.
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            scratch: Scratch::default(),
        }
    }

    /// The connection, counting against a connection limit while it lives.
    pub fn holding(mut self, permit: crate::resilience::breaker::Permit) -> Self {
        self.scratch.permit = Some(permit);
        self
    }

    /// Whether an idle connection can still be used: not closed by the upstream and
    /// without unexpected bytes waiting (an upstream must not speak unasked).
    pub fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.io.try_read(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }
}

/// Where a connection goes when its exchange ended cleanly.
pub trait Release: Send + Sync + 'static {
    /// Takes back a reusable connection.
    fn release(&self, conn: Conn);
}

/// What went wrong, and whether the request may be sent again on another connection
/// (nothing of it was taken by the upstream, and no response byte came back).
#[derive(Debug)]
pub struct SendError {
    /// The cause as a proxy error (reset or protocol error).
    pub error: ProxyError,
    /// The request's body, when the request can be sent again as is on another
    /// connection (the head is the caller's).
    /// (Boxed: it is rarely there, and the error travels by value.)
    pub retry: Option<Box<Body>>,
}

/// Sends a request with `head` (origin-form URI, hop-by-hop headers already removed;
/// without a `Host`, `host` is sent) and `body` on `conn` and reads the response head.
/// The response body reads from the connection; when it ends cleanly the connection
/// goes to `release`.
pub async fn send(
    conn: Conn,
    head: &RequestHead,
    host: &HeaderValue,
    mut body: Body,
    release: std::sync::Arc<dyn Release>,
) -> Result<Response<Body>, SendError> {
    let parts = head;
    let head_method = parts.method == Method::HEAD;
    let Conn {
        io,
        buf,
        mut scratch,
    } = conn;
    let mut out = std::mem::take(&mut scratch.out);
    out.clear();
    let framing = encode_head(parts, host, &body, &mut out);
    // Take what the body already has without waiting: most request bodies are small
    // and arrive with their head, so head and body leave in one write.
    let mut body_done = body.is_end_stream();
    let mut body_taken = false;
    let mut trailers = None;
    while !body_done {
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => {
                body_taken = true;
                match frame.into_trailers() {
                    Ok(t) => trailers = Some(t),
                    Err(frame) => encode_frame(frame, framing, &mut out),
                }
                body_done = body.is_end_stream();
            }
            Some(None) => body_done = true,
            Some(Some(Err(e))) => {
                return Err(SendError {
                    error: ProxyError::DownstreamReset(e),
                    retry: None,
                });
            }
            None => break,
        }
    }
    if body_done && framing == ReqFraming::Chunked {
        wire::last_chunk(trailers.as_ref(), &mut out);
    }
    let reset = |e: std::io::Error| ProxyError::UpstreamReset(e.into());
    // A request may go again on another connection only if it is idempotent, carried
    // no body bytes, and the upstream answered nothing at all: the signature of a
    // reused keep-alive connection that the upstream closed as we sent.
    let retriable = !body_taken && body_done && policy::is_idempotent(&parts.method);

    let mut read: Reader;
    // Aborted when dropped: if the exchange ends without a response (timeout, error,
    // the client gone), the body stops flowing to the upstream with it.
    let mut writer: Option<AbortOnDropHandle<Option<OwnedWriteHalf>>> = None;
    let mut unsent = None;
    let mut io = io;
    if body_done {
        if let Err(e) = io.write_all(&out).await {
            let retry = retriable.then(|| Box::new(body));
            return Err(SendError {
                error: reset(e),
                retry,
            });
        }
        read = Reader::Whole(io);
        unsent = Some(body);
        scratch.out = out;
    } else {
        // The body streams on: write it from a task of its own so that the response can
        // be read at the same time (an upstream may answer before reading it all).
        let (r, mut w) = io.into_split();
        writer = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            w.write_all(&out).await.ok()?;
            stream_body(&mut w, body, framing).await.ok()?;
            Some(w)
        })));
        read = Reader::Split(r);
    }
    let mut buf = buf;
    // Whether the upstream sent anything at all: a request it answered in part is never
    // sent again.
    let mut received_any = !buf.is_empty();
    let head = loop {
        match parse_head(&mut buf, &mut scratch.spans) {
            Ok(Some(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                // Upgrades go through hyper; here a 101 was not asked for and what follows
                // it is not HTTP: the connection is dropped, never pooled.
                return Err(SendError {
                    error: ProxyError::UpstreamProtocol(
                        "101 Switching Protocols without an upgrade request",
                    ),
                    retry: None,
                });
            }
            Ok(Some(head)) if head.status.is_informational() => {
                // 100 Continue, 103 Early Hints: not the response yet.
                continue;
            }
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(why) => {
                return Err(SendError {
                    error: ProxyError::UpstreamProtocol(why),
                    retry: None,
                });
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(SendError {
                error: ProxyError::UpstreamProtocol("response head too large"),
                retry: None,
            });
        }
        let read_result = std::future::poll_fn(|cx| read.poll_fill(cx, &mut buf)).await;
        // Closed or reset before any byte of an answer: what a reused keep-alive
        // connection that the upstream had just closed looks like.
        let closed_unanswered = !received_any
            && match &read_result {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
        match read_result {
            Ok(n) if n > 0 => received_any = true,
            other => {
                let retry = match unsent.take() {
                    Some(body) if retriable && closed_unanswered => Some(Box::new(body)),
                    _ => None,
                };
                let error = match other {
                    Err(e) => reset(e),
                    _ => ProxyError::UpstreamReset(
                        "upstream closed the connection without a response".into(),
                    ),
                };
                return Err(SendError { error, retry });
            }
        }
    };
    let framing = match response_framing(head_method, &head) {
        Ok(f) => f,
        Err(why) => {
            return Err(SendError {
                error: ProxyError::UpstreamProtocol(why),
                retry: None,
            });
        }
    };
    let mut head = head;
    let mut keep_alive = head.keep_alive && framing != RespFraming::UntilClose;
    if head.transfer_encoding.is_some() {
        // RFC 9112 section 6.3: the transfer coding wins over a content-length sent with
        // it, which must not travel on (the client would frame by it); such a message is
        // suspect, so its connection is not reused.
        if head.headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
    } else if let RespFraming::Length(n) = framing
        && head.content_length_repeated
    {
        // `content-length: 5, 5` (or two equal lines) goes on as one number.
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let mut resp = Response::new(());
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    let body = ResponseBody {
        scratch,
        read: Some(read),
        writer,
        buf,
        framing,
        keep_alive,
        release: Some(release),
    };
    let mut resp = resp.map(|()| Body::Upstream(Box::new(body)));
    if let Body::Upstream(b) = resp.body_mut() {
        b.finish_if_empty();
    }
    Ok(resp)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length,
    Chunked,
}

/// Writes the request line and headers into `out`, with framing for `body`.
fn encode_head(
    parts: &RequestHead,
    host: &HeaderValue,
    body: &Body,
    out: &mut Vec<u8>,
) -> ReqFraming {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // HTTP/1.1 requires a Host; a client that sent none (HTTP/1.0) gets the endpoint's.
    if !parts.headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        // Framing is ours to decide; hop-by-hop headers are already gone.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match body.size_hint().exact() {
        Some(0) => {
            // A request without a body needs no framing, but servers (nginx among them)
            // want a length on methods that usually carry one.
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            ReqFraming::None
        }
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
            ReqFraming::Length
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            ReqFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// Appends one data frame in the request's framing.
fn encode_frame(frame: Frame<Bytes>, framing: ReqFraming, out: &mut Vec<u8>) {
    let Ok(data) = frame.into_data() else { return };
    if data.is_empty() {
        return;
    }
    if framing == ReqFraming::Chunked {
        wire::chunk(&data, out);
    } else {
        out.extend_from_slice(&data);
    }
}

/// Streams the rest of a request body.
async fn stream_body(
    w: &mut OwnedWriteHalf,
    mut body: Body,
    framing: ReqFraming,
) -> Result<(), BoxError> {
    let mut trailers: Option<HeaderMap> = None;
    let mut size_line = Vec::with_capacity(20);
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let frame = match frame.into_trailers() {
            Ok(t) => {
                trailers = Some(t);
                continue;
            }
            Err(f) => f,
        };
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            if framing == ReqFraming::Chunked {
                // Size line, data and CRLF in one vectored write; the data is not copied.
                size_line.clear();
                wire::chunk_head(data.len(), &mut size_line);
                let mut parts = size_line.as_slice().chain(&data[..]).chain(&b"\r\n"[..]);
                w.write_all_buf(&mut parts).await?;
            } else {
                w.write_all(&data).await?;
            }
        }
    }
    if framing == ReqFraming::Chunked {
        let mut end = Vec::new();
        wire::last_chunk(trailers.as_ref(), &mut end);
        w.write_all(&end).await?;
    }
    w.flush().await?;
    Ok(())
}

/// A parsed response head, with the framing facts gathered while reading its headers
/// (so that framing needs no header lookups afterwards).
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    keep_alive: bool,
    /// `Some(last coding is chunked)` when `transfer-encoding` is present.
    transfer_encoding: Option<bool>,
    /// The content length, if any, or why it is unusable.
    content_length: Result<Option<u64>, &'static str>,
    /// The content length came as a list or on several lines (`5, 5`).
    content_length_repeated: bool,
}

/// Parses a response head from the front of `buf`, consuming it; `None` if incomplete.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<(usize, usize, usize, usize)>,
) -> Result<Option<Head>, &'static str> {
    // Offsets are recorded first so that the head can be cut from the buffer and its
    // values shared without copying. Nothing here is zero-filled per response: the
    // header slots start uninitialised and the offsets go to the connection's reused
    // scratch vector.
    spans.clear();
    let (len, code, minor) = {
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
            Err(_) => return Err("malformed response head"),
        };
        let base = buf.as_ptr() as usize;
        spans.extend(resp.headers.iter().map(|h| {
            (
                h.name.as_ptr() as usize - base,
                h.name.len(),
                h.value.as_ptr() as usize - base,
                h.value.len(),
            )
        }));
        (len, resp.code.unwrap_or(0), resp.version.unwrap_or(1))
    };
    // The head is copied out (a few hundred bytes) so that the read buffer stays the
    // connection's own and is reused as is for the next response, instead of being
    // shared with header values that live until the response is written downstream.
    let head = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    let status = StatusCode::from_u16(code).map_err(|_| "invalid status code")?;
    let mut headers = HeaderMap::with_capacity(spans.len().max(RESPONSE_MAP_ROOM));
    let mut close = minor == 0;
    let mut transfer_encoding = None;
    let mut content_length: Result<Option<u64>, &'static str> = Ok(None);
    let mut content_length_repeated = false;
    for &(ns, nl, vs, vl) in spans.iter() {
        let name = HeaderName::from_bytes(&head[ns..ns + nl]).map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
            .map_err(|_| "invalid header value")?;
        if name == header::CONNECTION {
            let mut names_others = false;
            for token in wire::tokens(value.as_bytes()) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close &= minor != 0;
                } else if !token.eq_ignore_ascii_case(b"upgrade") {
                    names_others = true;
                }
            }
            // Hop-by-hop: never forwarded, so the usual `keep-alive` / `close` is read
            // here and left out of the map (adding it only for the proxy to remove it
            // again cost ~500 instructions a response). One that names other headers
            // stays, for the proxy's hop-by-hop removal to find those.
            if !names_others {
                continue;
            }
        } else if name == header::TRANSFER_ENCODING {
            // The last coding of the last line decides.
            if let Some(chunked) = wire::last_coding_is_chunked(value.as_bytes()) {
                transfer_encoding = Some(chunked);
            }
        } else if name == header::CONTENT_LENGTH {
            content_length_repeated |=
                content_length != Ok(None) || value.as_bytes().contains(&b',');
            content_length = wire::fold_content_length(content_length, value.as_bytes());
        }
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version: if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        headers,
        keep_alive: !close,
        transfer_encoding,
        content_length,
        content_length_repeated,
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RespFraming {
    Empty,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// The response body's framing (RFC 9112 section 6.3).
fn response_framing(head_request: bool, head: &Head) -> Result<RespFraming, &'static str> {
    let s = head.status;
    if head_request
        || s.is_informational()
        || s == StatusCode::NO_CONTENT
        || s == StatusCode::NOT_MODIFIED
    {
        return Ok(RespFraming::Empty);
    }
    if let Some(chunked) = head.transfer_encoding {
        return Ok(if chunked {
            RespFraming::Chunked(Chunk::Size)
        } else {
            RespFraming::UntilClose
        });
    }
    Ok(match head.content_length? {
        Some(0) => RespFraming::Empty,
        Some(n) => RespFraming::Length(n),
        None => RespFraming::UntilClose,
    })
}

/// The read side of a connection in use.
#[derive(Debug)]
enum Reader {
    Whole(TcpStream),
    Split(OwnedReadHalf),
}

impl Reader {
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        buf.reserve(READ_CHUNK);
        match self {
            Self::Whole(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, buf),
            Self::Split(r) => tokio_util::io::poll_read_buf(Pin::new(r), cx, buf),
        }
    }
}

/// A response body read straight from the upstream connection.
pub struct ResponseBody {
    scratch: Scratch,
    read: Option<Reader>,
    writer: Option<AbortOnDropHandle<Option<OwnedWriteHalf>>>,
    buf: BytesMut,
    framing: RespFraming,
    keep_alive: bool,
    release: Option<std::sync::Arc<dyn Release>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    fn finish_if_empty(&mut self) {
        if self.framing == RespFraming::Empty {
            self.done();
        }
    }

    /// The body ended cleanly: hand the connection back if it can carry another
    /// exchange.
    fn done(&mut self) {
        self.framing = RespFraming::Empty;
        let (Some(read), Some(release)) = (self.read.take(), self.release.take()) else {
            return;
        };
        if !self.keep_alive || !self.buf.is_empty() {
            return;
        }
        match (read, self.writer.take()) {
            (Reader::Whole(io), None) => release.release(Conn {
                io,
                buf: std::mem::take(&mut self.buf),
                scratch: std::mem::take(&mut self.scratch),
            }),
            (Reader::Split(r), Some(writer)) => {
                // Reuse the connection only if the request body was written in full; a
                // writer still going is aborted as it drops.
                if writer.is_finished()
                    && let Some(Ok(Some(w))) = writer.now_or_never()
                    && let Ok(io) = r.reunite(w)
                {
                    release.release(Conn {
                        io,
                        buf: BytesMut::new(),
                        scratch: std::mem::take(&mut self.scratch),
                    });
                }
            }
            _ => {}
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.framing {
                RespFraming::Empty => {
                    self.done();
                    return Poll::Ready(None);
                }
                RespFraming::Length(0) => {
                    self.done();
                    return Poll::Ready(None);
                }
                RespFraming::Length(rem) => {
                    if !self.buf.is_empty() {
                        let n = (self.buf.len() as u64).min(rem) as usize;
                        self.framing = RespFraming::Length(rem - n as u64);
                        let data = self.buf.split_to(n).freeze();
                        if rem == n as u64 {
                            self.done();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ready!(self.fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(
                            "upstream closed the connection before the body's end".into(),
                        )));
                    }
                }
                RespFraming::UntilClose => {
                    if !self.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(self.buf.split().freeze()))));
                    }
                    if ready!(self.fill(cx))? == 0 {
                        // The end of the connection is the end of the body; not reusable.
                        self.keep_alive = false;
                        self.done();
                        return Poll::Ready(None);
                    }
                }
                RespFraming::Chunked(state) => {
                    match decode_chunk(state, &mut self.buf) {
                        Ok(Step::Data(data, next)) => {
                            self.framing = RespFraming::Chunked(next);
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Ok(Step::Next(next)) => {
                            self.framing = RespFraming::Chunked(next);
                            continue;
                        }
                        Ok(Step::End(trailers)) => {
                            self.done();
                            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                        }
                        Ok(Step::NeedMore) => {}
                        Err(why) => return Poll::Ready(Some(Err(why.into()))),
                    }
                    if ready!(self.fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(
                            "upstream closed the connection inside a chunked body".into(),
                        )));
                    }
                }
            }
        }
    }

    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        match self.read.as_mut() {
            Some(r) => r.poll_fill(cx, &mut self.buf),
            None => Poll::Ready(Ok(0)),
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.poll_data(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            // A broken body leaves the connection unusable.
            self.keep_alive = false;
            self.read = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.framing == RespFraming::Empty || self.framing == RespFraming::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            RespFraming::Empty => SizeHint::with_exact(0),
            RespFraming::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

enum Step {
    Data(Bytes, Chunk),
    Next(Chunk),
    End(Option<HeaderMap>),
    NeedMore,
}

/// One step of chunked decoding over the bytes in `buf`.
fn decode_chunk(state: Chunk, buf: &mut BytesMut) -> Result<Step, &'static str> {
    match state {
        Chunk::Size => {
            let Some(end) = find_crlf(buf) else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err("chunk size line too long")
                } else {
                    Ok(Step::NeedMore)
                };
            };
            let line = &buf[..end];
            // chunk-size = 1*HEXDIG, then optional whitespace before any extension.
            let size_part = line
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii_end();
            if size_part.is_empty()
                || size_part.len() > 16
                || !size_part.iter().all(u8::is_ascii_hexdigit)
            {
                return Err("invalid chunk size");
            }
            let size = std::str::from_utf8(size_part)
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or("invalid chunk size")?;
            buf.advance(end + 2);
            Ok(Step::Next(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(rem) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = (buf.len() as u64).min(rem) as usize;
            let data = buf.split_to(n).freeze();
            let next = if rem == n as u64 {
                Chunk::DataEnd
            } else {
                Chunk::Data(rem - n as u64)
            };
            Ok(Step::Data(data, next))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err("chunk data not followed by CRLF");
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Trailers => {
            // Trailer lines up to an empty line.
            let mut pos = 0;
            let mut trailers = HeaderMap::new();
            loop {
                let Some(end) = find_crlf(&buf[pos..]) else {
                    return if buf.len() > MAX_HEAD {
                        Err("trailers too large")
                    } else {
                        Ok(Step::NeedMore)
                    };
                };
                if end == 0 {
                    let trailers_present = !trailers.is_empty();
                    buf.advance(pos + 2);
                    return Ok(Step::End(trailers_present.then_some(trailers)));
                }
                let line = &buf[pos..pos + end];
                if let Some(colon) = line.iter().position(|b| *b == b':')
                    && let Ok(name) = HeaderName::from_bytes(line[..colon].trim_ascii())
                    && let Ok(value) = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
                {
                    trailers.append(name, value);
                }
                pos += end + 2;
            }
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests;
