//! Connections to one endpoint, pooled: HTTP/1.1 keep-alive or one multiplexed HTTP/2
//! connection.
//!
//! Each endpoint owns an [`HttpClient`]. For HTTP/1.1 it keeps idle connections in a
//! LIFO stack (the most recently used one is the most likely still open) and runs each
//! exchange with the lean codec in [`super::h1`], in the request's own task; a
//! connection goes back on the stack when its response body has been read to the end.
//! Upgrade requests (WebSocket) take a fresh hyper connection of their own, since it is
//! handed over after the `101`. For HTTP/2 every request shares one hyper connection,
//! re-established when it closes.
//!
//! A request is sent again on another connection only when the one it went to was a
//! reused connection that the upstream closed without taking anything (see
//! [`super::h1::SendError`]); any other retry is the retry policy's decision.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::Counter;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1;
use crate::http::{Body, ProxyError};
use crate::snapshot::UpstreamProtocol;

/// How long an idle HTTP/1.1 connection may wait in the pool before it is not reused.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 512;

/// Counters a client bumps.
#[derive(Clone, Debug)]
pub struct ConnectCounters {
    /// Connections opened.
    pub opened: Counter,
    /// Connection attempts that failed.
    pub failed: Counter,
}

/// A pooled client for one endpoint.
#[derive(Clone, Debug)]
pub struct HttpClient {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
    counters: ConnectCounters,
    idle: Mutex<Vec<Idle>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
}

#[derive(Debug)]
struct Idle {
    conn: h1::Conn,
    since: Instant,
}

impl HttpClient {
    /// A client for `addr` speaking `protocol`.
    pub fn new(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        counters: ConnectCounters,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                addr,
                protocol,
                connect_timeout,
                counters,
                idle: Mutex::new(Vec::new()),
                h2: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The protocol this client speaks.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.shared.protocol
    }

    /// Sends `req`. Its URI is in origin form (`/path?query`) and its `Host` header
    /// carries the authority the upstream should see.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        match self.shared.protocol {
            UpstreamProtocol::Http1 => self.send_h1(req).await,
            // Boxed: keeps the HTTP/1.1 future (the common one) small to move around.
            UpstreamProtocol::Http2 => Box::pin(self.send_h2(req)).await,
        }
    }

    async fn send_h1(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        if req.headers().contains_key(http::header::UPGRADE) {
            return Box::pin(self.send_upgrade(req)).await;
        }
        loop {
            let (conn, reused) = match self.shared.take_idle() {
                Some(c) => (c, true),
                None => (h1::Conn::new(self.shared.dial().await?), false),
            };
            let release: Arc<dyn h1::Release> = self.shared.clone();
            match h1::send(conn, req, release).await {
                Ok(resp) => return Ok(resp),
                Err(h1::SendError {
                    retry: Some(again), ..
                }) if reused => req = again,
                Err(e) => return Err(e.error),
            }
        }
    }

    /// An upgrade request on a connection of its own, driven by hyper so that the
    /// connection can be taken over after `101 Switching Protocols`.
    async fn send_upgrade(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        *req.version_mut() = Version::HTTP_11;
        let io = TokioIo::new(self.shared.dial().await?);
        let (mut sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| ProxyError::ConnectFailure(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream upgrade connection ended with an error");
            }
        });
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ProxyError::UpstreamReset(e.into()))?;
        Ok(resp.map(Body::Incoming))
    }

    async fn send_h2(&self, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        // HTTP/2 carries the authority as `:authority`, taken from an absolute URI.
        let host = req.headers_mut().remove(http::header::HOST);
        let authority = host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(
            authority
                .parse()
                .map_err(|_| ProxyError::BadRequest("invalid host"))?,
        );
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        *req.version_mut() = Version::HTTP_2;
        let mut sender = self.shared.h2_sender().await?;
        sender
            .ready()
            .await
            .map_err(|e| ProxyError::UpstreamReset(e.into()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ProxyError::UpstreamReset(e.into()))?;
        Ok(resp.map(Body::Incoming))
    }
}

impl Shared {
    /// The most recently idled connection that is still usable.
    fn take_idle(&self) -> Option<h1::Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while let Some(i) = idle.pop() {
            if now.saturating_duration_since(i.since) < POOL_IDLE_TIMEOUT && i.conn.is_usable() {
                return Some(i.conn);
            }
        }
        None
    }

    async fn dial(&self) -> Result<TcpStream, ProxyError> {
        let addr = self.addr;
        let result =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connect to {addr} timed out after {:?}",
                        self.connect_timeout
                    ),
                )),
            };
        match result {
            Ok(stream) => {
                self.counters.opened.increment(1);
                // Small requests and responses must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Err(e) => {
                self.counters.failed.increment(1);
                Err(ProxyError::ConnectFailure(e.into()))
            }
        }
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<Body>, ProxyError> {
        let mut slot = self.h2.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let io = TokioIo::new(self.dial().await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(|e| ProxyError::ConnectFailure(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

impl h1::Release for Shared {
    fn release(&self, conn: h1::Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}
