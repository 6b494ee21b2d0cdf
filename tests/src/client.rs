//! Real HTTP clients for driving the proxy, and raw-socket helpers for what a well-behaved
//! client never sends.
//!
//! [`Client`] wraps hyper-util's pooled legacy client (keep-alive, one HTTP/2 connection
//! multiplexed), speaking HTTP/1.1 or HTTP/2 with prior knowledge. [`Client::via`] sends
//! every request to one address whatever the URL's host, so tests can use any `Host` or
//! `:authority` (`http://shop.example/`) without DNS. [`Reply`] is a collected response.
//! [`raw_exchange`] writes bytes to a socket and reads what comes back.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::upstream::BoxError;

/// The request body type clients send: anything boxed.
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// A fixed request body.
pub fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An empty request body.
pub fn empty() -> ReqBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

/// Boxes any body whose errors convert to [`BoxError`].
pub fn boxed<B>(body: B) -> ReqBody
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Dials the URI's host and port, or always one fixed address.
#[derive(Clone, Debug)]
pub struct Connector {
    target: Option<SocketAddr>,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let target = self.target;
        Box::pin(async move {
            let stream = match target {
                Some(addr) => TcpStream::connect(addr).await?,
                None => {
                    let host = uri.host().unwrap_or("127.0.0.1").to_owned();
                    let port = uri.port_u16().unwrap_or(80);
                    TcpStream::connect((host.as_str(), port)).await?
                }
            };
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A pooled HTTP client (cheap to clone; clones share the pool).
#[derive(Clone, Debug)]
pub struct Client {
    inner: legacy::Client<Connector, ReqBody>,
    version: Version,
}

impl Client {
    /// HTTP/1.1 with keep-alive, dialing each URL's host.
    pub fn http1() -> Self {
        Self::build(Version::HTTP_11, None)
    }

    /// HTTP/2 with prior knowledge (h2c), dialing each URL's host.
    pub fn http2() -> Self {
        Self::build(Version::HTTP_2, None)
    }

    /// The same kind of client, but every request goes to `addr` whatever its URL says.
    pub fn via(&self, addr: SocketAddr) -> Self {
        Self::build(self.version, Some(addr))
    }

    /// HTTP/1.1 or HTTP/2 by `version`.
    pub fn for_version(version: Version) -> Self {
        Self::build(version, None)
    }

    fn build(version: Version, target: Option<SocketAddr>) -> Self {
        let mut builder = legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(version == Version::HTTP_2);
        Self {
            inner: builder.build(Connector { target }),
            version,
        }
    }

    /// The protocol version this client speaks.
    pub fn version(&self) -> Version {
        self.version
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, &[], empty()).await
    }

    /// `GET url` with extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, headers, empty()).await
    }

    /// `POST url` with `body`.
    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> anyhow::Result<Reply> {
        self.send(Method::POST, url, &[], full(body)).await
    }

    /// Any method, headers and body; the response body is collected.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> anyhow::Result<Reply> {
        let resp = self.stream(method, url, headers, body).await?;
        Reply::collect(resp).await
    }

    /// Any method, headers and body; the response is returned with its body unread.
    pub async fn stream(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body)
            .with_context(|| format!("building {method} {url}"))?;
        self.request(req).await
    }

    /// Sends a prepared request.
    pub async fn request(&self, req: Request<ReqBody>) -> anyhow::Result<Response<Incoming>> {
        let what = format!("{} {}", req.method(), req.uri());
        self.inner
            .request(req)
            .await
            .with_context(|| format!("{what} ({:?})", self.version))
    }
}

/// A response with its body collected.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Protocol version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Reads the whole body of `resp`.
    pub async fn collect(resp: Response<Incoming>) -> anyhow::Result<Reply> {
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    /// The status as a number.
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text (the first one, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which harness upstream answered (its `x-upstream` header).
    pub fn upstream(&self) -> Option<&str> {
        self.header("x-upstream")
    }

    /// The path and query the harness upstream received (its `x-seen-path` header).
    pub fn seen_path(&self) -> Option<&str> {
        self.header("x-seen-path")
    }
}

/// What came back on a raw connection.
#[derive(Clone, Debug, Default)]
pub struct RawReply {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// Whether the peer closed (or reset) the connection, as opposed to going quiet or
    /// the byte limit being reached.
    pub closed: bool,
}

impl RawReply {
    /// The bytes as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Writes `bytes` to `addr`, then reads until the peer closes, `idle` passes without
/// new bytes, or `max` bytes arrived. A write the peer cuts short is not an error (that
/// is often the point).
pub async fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    idle: Duration,
    max: usize,
) -> anyhow::Result<RawReply> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.write_all(bytes).await;
    read_some(&mut stream, idle, max).await
}

/// Reads from `stream` until it closes, `idle` passes without new bytes, or `max` bytes.
pub async fn read_some(
    stream: &mut TcpStream,
    idle: Duration,
    max: usize,
) -> anyhow::Result<RawReply> {
    let mut out = RawReply::default();
    let mut buf = [0u8; 8192];
    while out.bytes.len() < max {
        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                out.closed = true;
                break;
            }
            Ok(Ok(n)) => out.bytes.extend_from_slice(&buf[..n]),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                out.closed = true;
                break;
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Reads an HTTP/1.1 response head (through the blank line) from `stream`, byte by byte
/// so nothing after it is consumed. Fails after `limit`.
pub async fn read_head(stream: &mut TcpStream, limit: Duration) -> anyhow::Result<String> {
    let read = async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await?;
            if n == 0 {
                anyhow::bail!(
                    "connection closed inside a response head: {:?}",
                    String::from_utf8_lossy(&head)
                );
            }
            head.push(byte[0]);
            if head.len() > 64 * 1024 {
                anyhow::bail!("response head over 64 KiB");
            }
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    };
    tokio::time::timeout(limit, read)
        .await
        .context("waiting for a response head")?
}
