//! In-process upstream servers bound to `127.0.0.1:0`.
//!
//! [`http1`] and [`http2`] start a named HTTP server (HTTP/2 with prior knowledge, h2c)
//! that records every request it receives ([`Recorded`]: method, path and query,
//! headers, body length, whether the body followed the [`crate::pattern`]) and answers
//! `200` with `upstream <name>`, an `x-upstream: <name>` header and an `x-seen-path`
//! header holding the path and query it received (so a client can tell that a response
//! is the answer to its own request). A [`Behavior`] set at
//! any time injects faults: a fixed status, a delay, closing the connection without an
//! answer, a streamed response of N bytes, or echoing the request body; and, for the
//! resilience tests, a status for a random share of requests ([`Behavior::fail_percent`]),
//! for the next N requests ([`Behavior::fail_next`]) or for one path
//! ([`Behavior::status_for_path`], e.g. a failing health-check endpoint).
//!
//! [`tcp_echo`] and [`ws_echo`] echo raw bytes and WebSocket messages; [`closed_port`]
//! is an address nothing listens on. Every server stops when its handle is dropped.

use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;

use crate::pattern::{PatternBody, PatternCheck};

/// Errors of response bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type RespBody = BoxBody<Bytes, BoxError>;

/// What an upstream does with the next requests. The default answers `200` at once.
///
/// The status of an answer is decided when the request arrives, in this order: a
/// [`Behavior::path_status`] entry for the request's path; else one of the
/// [`Behavior::fail_next`] requests; else a [`Behavior::fail_percent`] draw; else
/// [`Behavior::status`], else `200`. The body, headers and delay are the same whatever
/// the status.
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    /// Answer with this status instead of `200`.
    pub status: Option<u16>,
    /// Wait this long (after reading the request body) before answering.
    pub delay: Option<Duration>,
    /// Close the connection (HTTP/1.1) or reset the stream (HTTP/2) without answering.
    pub reset: bool,
    /// Answer with this many [`crate::pattern`] bytes, streamed in chunks.
    pub stream_bytes: Option<u64>,
    /// Send the streamed answer without a length (chunked on HTTP/1.1), instead of with
    /// `content-length`.
    pub stream_chunked: bool,
    /// Stream the request body back as the response body (instead of reading it first).
    pub echo: bool,
    /// Extra response headers (appended, so a name may repeat).
    pub response_headers: Vec<(String, String)>,
    /// `(percent, status)`: each request independently gets `status` with probability
    /// `percent` / 100.
    pub fail_percent: Option<(f64, u16)>,
    /// A number of requests still to be answered with a status; shared by the clones of
    /// this behaviour, so it counts down across all connections.
    pub fail_next: Option<FailNext>,
    /// `(path, status)`: a request for exactly this path (the query aside) gets
    /// `status`, whatever else the behaviour says about statuses.
    pub path_status: Vec<(String, u16)>,
    /// Send the response head at once and the body this much later (a quiet stream).
    pub body_pause: Option<Duration>,
}

/// The countdown behind [`Behavior::fail_next`].
#[derive(Clone, Debug)]
pub struct FailNext {
    left: Arc<AtomicU32>,
    status: u16,
}

impl FailNext {
    /// How many requests are still to fail.
    pub fn left(&self) -> u32 {
        self.left.load(Ordering::Relaxed)
    }

    /// The status they get.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Takes one failure if any is left.
    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl Behavior {
    /// Answer with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Answer `200` after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }

    /// Answer `200` at once, but send the body only after `pause`.
    pub fn body_pause(pause: Duration) -> Self {
        Self {
            body_pause: Some(pause),
            ..Self::default()
        }
    }

    /// Close the connection without answering.
    pub fn reset() -> Self {
        Self {
            reset: true,
            ..Self::default()
        }
    }

    /// Answer with `n` pattern bytes.
    pub fn stream(n: u64) -> Self {
        Self {
            stream_bytes: Some(n),
            ..Self::default()
        }
    }

    /// Answer with `n` pattern bytes and no `content-length` (chunked on HTTP/1.1).
    pub fn stream_chunked(n: u64) -> Self {
        Self {
            stream_bytes: Some(n),
            stream_chunked: true,
            ..Self::default()
        }
    }

    /// Echo the request body.
    pub fn echo() -> Self {
        Self {
            echo: true,
            ..Self::default()
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers each request with `status` with probability `percent` / 100 (drawn
    /// independently per request), else `200`.
    pub fn fail_percent(percent: f64, status: u16) -> Self {
        Self {
            fail_percent: Some((percent, status)),
            ..Self::default()
        }
    }

    /// Answers the next `n` requests (in arrival order) with `status`, then `200`.
    pub fn fail_next(n: u32, status: u16) -> Self {
        Self {
            fail_next: Some(FailNext {
                left: Arc::new(AtomicU32::new(n)),
                status,
            }),
            ..Self::default()
        }
    }

    /// Answers requests for exactly `path` (the query aside) with `status`; everything
    /// else as before. E.g. a failing health-check endpoint:
    /// `Behavior::default().status_for_path("/healthz", 500)`.
    pub fn status_for_path(mut self, path: &str, status: u16) -> Self {
        self.path_status.push((path.to_owned(), status));
        self
    }

    /// The status for a request for `path` arriving now (counts a `fail_next` request
    /// down, draws for `fail_percent`).
    fn status_for(&self, path: &str, rng: &Rng) -> u16 {
        if let Some((_, status)) = self.path_status.iter().find(|(p, _)| p == path) {
            return *status;
        }
        if let Some(next) = &self.fail_next
            && next.take()
        {
            return next.status;
        }
        if let Some((percent, status)) = self.fail_percent
            && rng.percent() < percent
        {
            return status;
        }
        self.status.unwrap_or(200)
    }
}

/// A lock-free random source (splitmix64 over an atomic counter), seeded per upstream
/// from the standard library's random hasher keys.
#[derive(Debug)]
struct Rng(AtomicU64);

impl Rng {
    fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Self(AtomicU64::new(h.finish()))
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 100)`.
    fn percent(&self) -> f64 {
        // The top 53 bits make an exact f64 in [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 100.0
    }
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: Method,
    /// Path and query as received (`/a/b?x=1`).
    pub path_and_query: String,
    /// The URI's authority (HTTP/2 `:authority`), if any.
    pub authority: Option<String>,
    /// Protocol version.
    pub version: Version,
    /// Headers as received.
    pub headers: HeaderMap,
    /// Request body bytes received (so far, while an echo is still streaming).
    pub body_len: u64,
    /// Whether the body, as far as received, followed the [`crate::pattern`].
    pub body_is_pattern: bool,
    /// Whether the whole body was received.
    pub body_complete: bool,
}

impl Recorded {
    /// A header's value as text (the first one, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header, as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }

    /// The `Host` header, else the URI's authority.
    pub fn host(&self) -> Option<&str> {
        self.header("host").or(self.authority.as_deref())
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    log: Mutex<Vec<Recorded>>,
    behavior: Mutex<Behavior>,
    connections: AtomicUsize,
    rng: Rng,
}

impl Shared {
    fn behavior(&self) -> Behavior {
        self.behavior
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn with_log<T>(&self, f: impl FnOnce(&mut Vec<Recorded>) -> T) -> T {
        f(&mut self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A running HTTP upstream. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which HTTP version an upstream serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Http1,
    Http2,
}

/// Starts an HTTP/1.1 upstream called `name`.
pub async fn http1(name: &str) -> anyhow::Result<Upstream> {
    start(name, Flavor::Http1).await
}

/// Starts an HTTP/2 (prior knowledge, cleartext) upstream called `name`.
pub async fn http2(name: &str) -> anyhow::Result<Upstream> {
    start(name, Flavor::Http2).await
}

async fn start(name: &str, flavor: Flavor) -> anyhow::Result<Upstream> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        log: Mutex::new(Vec::new()),
        behavior: Mutex::new(Behavior::default()),
        connections: AtomicUsize::new(0),
        rng: Rng::new(),
    });
    let task = tokio::spawn(accept_loop(listener, shared.clone(), flavor));
    Ok(Upstream { addr, shared, task })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, flavor: Flavor) {
    // Owning the connection tasks here means aborting this task closes them all.
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let io = TokioIo::new(stream);
            // Errors here are the connection ending (or our own injected resets).
            let _ = match flavor {
                Flavor::Http1 => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                }
                Flavor::Http2 => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                }
            };
        });
    }
}

/// The injected "reset": returning an error makes hyper drop the connection (HTTP/1.1)
/// or reset the stream (HTTP/2) without a response.
#[derive(Debug)]
struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected reset")
    }
}

impl std::error::Error for InjectedReset {}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, InjectedReset> {
    let behavior = shared.behavior();
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let index = shared.with_log(|log| {
        log.push(Recorded {
            method: parts.method.clone(),
            path_and_query: path_and_query.clone(),
            authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
            version: parts.version,
            headers: parts.headers.clone(),
            body_len: 0,
            body_is_pattern: true,
            body_complete: false,
        });
        log.len() - 1
    });
    if behavior.reset {
        return Err(InjectedReset);
    }
    let status = behavior.status_for(parts.uri.path(), &shared.rng);
    let counting = CountingBody {
        inner: body,
        shared: shared.clone(),
        index,
        check: PatternCheck::new(),
    };
    let mut resp = if behavior.echo {
        Response::new(counting.boxed())
    } else {
        // Read (and count) the whole request body before answering, as most servers do.
        let mut counting = counting;
        while let Some(frame) = counting.frame().await {
            if frame.is_err() {
                return Err(InjectedReset);
            }
        }
        if let Some(d) = behavior.delay {
            tokio::time::sleep(d).await;
        }
        let body: RespBody = match behavior.stream_bytes {
            Some(n) if behavior.stream_chunked => {
                PatternBody::chunked(n).map_err(|e| match e {}).boxed()
            }
            Some(n) => PatternBody::new(n).map_err(|e| match e {}).boxed(),
            None => {
                let text = Bytes::from(format!("upstream {}\n", shared.name));
                match behavior.body_pause {
                    Some(pause) => {
                        let late = futures_util::stream::once(async move {
                            tokio::time::sleep(pause).await;
                            Ok::<_, Infallible>(hyper::body::Frame::data(text))
                        });
                        http_body_util::StreamBody::new(late)
                            .map_err(|e: Infallible| match e {})
                            .boxed()
                    }
                    None => http_body_util::Full::new(text)
                        .map_err(|e: Infallible| match e {})
                        .boxed(),
                }
            }
        };
        Response::new(body)
    };
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        headers.insert("x-upstream", v);
    }
    if let Ok(v) = HeaderValue::from_str(&path_and_query) {
        headers.insert("x-seen-path", v);
    }
    for (k, v) in &behavior.response_headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
    Ok(resp)
}

/// The request body on its way through the upstream: counted and pattern-checked into the
/// request's [`Recorded`] entry as it goes.
struct CountingBody {
    inner: Incoming,
    shared: Arc<Shared>,
    index: usize,
    check: PatternCheck,
}

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.check.update(data);
                    let (len, ok) = (this.check.len(), this.check.ok());
                    // A consumer that trusts `is_end_stream` never polls for the end.
                    let complete = this.inner.is_end_stream();
                    this.shared.with_log(|log| {
                        if let Some(r) = log.get_mut(this.index) {
                            r.body_len = len;
                            r.body_is_pattern = ok;
                            r.body_complete |= complete;
                        }
                    });
                }
            }
            Poll::Ready(None) => this.shared.with_log(|log| {
                if let Some(r) = log.get_mut(this.index) {
                    r.body_complete = true;
                }
            }),
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Upstream {
    /// The server's name (in its responses' body and `x-upstream` header).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what it does with the next requests.
    pub fn set(&self, behavior: Behavior) {
        *self
            .shared
            .behavior
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behavior;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.with_log(|log| log.clone())
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<Recorded> {
        self.shared.with_log(|log| log.last().cloned())
    }

    /// How many requests it has received.
    pub fn count(&self) -> usize {
        self.shared.with_log(|log| log.len())
    }

    /// How many of the requests received so far satisfy `pred` (e.g. all but health
    /// checks).
    pub fn count_where(&self, pred: impl Fn(&Recorded) -> bool) -> usize {
        self.shared
            .with_log(|log| log.iter().filter(|r| pred(r)).count())
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.shared.with_log(Vec::clear);
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

/// A TCP server that echoes every byte back. Stops when dropped.
#[derive(Debug)]
pub struct TcpEcho {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpEcho {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Starts a TCP echo server.
pub async fn tcp_echo() -> anyhow::Result<TcpEcho> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            conns.spawn(echo_bytes(stream));
        }
    });
    Ok(TcpEcho {
        addr,
        connections,
        task,
    })
}

async fn echo_bytes(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A WebSocket server that echoes every text and binary message. Stops when dropped.
#[derive(Debug)]
pub struct WsEcho {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsEcho {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts a WebSocket echo server (tokio-tungstenite).
pub async fn ws_echo() -> anyhow::Result<WsEcho> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            conns.spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let echo = match msg {
                        Message::Text(_) | Message::Binary(_) => msg,
                        Message::Close(_) => {
                            let _ = ws.close(None).await;
                            return;
                        }
                        _ => continue,
                    };
                    if ws.send(echo).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(WsEcho { addr, task })
}

/// A loopback port where nothing listens: connecting is refused. The port stays bound
/// (without listening) for as long as this value lives, so no other server in the test
/// process can be given it meanwhile, as could happen with a port bound and released.
#[derive(Debug)]
pub struct ClosedPort {
    addr: SocketAddr,
    _held: tokio::net::TcpSocket,
}

impl ClosedPort {
    /// The refused address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reserves a refused loopback port (see [`ClosedPort`]).
pub async fn closed_port() -> anyhow::Result<ClosedPort> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(ClosedPort {
        addr: socket.local_addr()?,
        _held: socket,
    })
}
