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

use std::collections::VecDeque;
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
use super::head::RequestHead;
use crate::http::{Body, ProxyError};
use crate::resilience::breaker::{Breaker, Kind};
use crate::snapshot::UpstreamProtocol;
use tokio_util::either::Either;

use crate::tls::{MeshAlpn, MeshConnector};

/// How long an idle HTTP/1.1 connection may wait in the pool before it is not reused,
/// unless the cluster sets its own `idle_timeout`.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Stale idle connections closed per release at most (bounds the work under the lock).
const EVICT_PER_RELEASE: usize = 8;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 512;

/// Counters a client bumps.
#[derive(Clone, Debug)]
pub struct ConnectCounters {
    /// Connections opened.
    pub opened: Counter,
    /// Connection attempts that failed.
    pub failed: Counter,
    /// Requests sent again because a reused connection turned out closed.
    pub retried: Counter,
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
    idle_timeout: Duration,
    /// The endpoint's address as a `Host` value, for requests without one (HTTP/1.0).
    host: http::HeaderValue,
    counters: ConnectCounters,
    /// Most recently idled at the back (taken first), oldest at the front.
    idle: Mutex<VecDeque<Idle>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
    /// Mesh TLS on every connection (`None`: plain TCP).
    tls: Option<Arc<MeshConnector>>,
}

#[derive(Debug)]
struct Idle {
    conn: h1::Conn,
    since: Instant,
}

impl HttpClient {
    /// Idle pooled HTTP/1.1 connections right now.
    pub fn idle_connections(&self) -> usize {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A client for `addr` speaking `protocol`; pooled connections idle longer than
    /// `idle_timeout` are closed.
    pub fn new(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        idle_timeout: Duration,
        counters: ConnectCounters,
        tls: Option<Arc<MeshConnector>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                addr,
                protocol,
                connect_timeout,
                idle_timeout,
                host: http::HeaderValue::from_str(&addr.to_string())
                    .unwrap_or_else(|_| http::HeaderValue::from_static("localhost")),
                counters,
                idle: Mutex::new(VecDeque::new()),
                h2: tokio::sync::Mutex::new(None),
                tls,
            }),
        }
    }

    /// Closes the oldest idle connection, if there is one (to give its connection
    /// permit to a request that needs a new connection elsewhere).
    pub fn close_one_idle(&self) -> bool {
        let oldest = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        oldest.is_some()
    }

    /// How long pooled connections may idle.
    pub fn idle_timeout(&self) -> Duration {
        self.shared.idle_timeout
    }

    /// The mesh TLS its connections use.
    pub fn tls(&self) -> Option<&Arc<MeshConnector>> {
        self.shared.tls.as_ref()
    }

    /// The protocol this client speaks.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.shared.protocol
    }

    /// Sends a request with `head` and `body`. The head's URI is in origin form
    /// (`/path?query`) and its `Host` header carries the authority the upstream should
    /// see (without one, the endpoint's address is sent). A new connection counts
    /// against `breaker`'s connection and pending-request limits.
    pub async fn send(
        &self,
        head: &RequestHead,
        body: Body,
        breaker: &Arc<Breaker>,
    ) -> Result<Response<Body>, ProxyError> {
        match self.shared.protocol {
            UpstreamProtocol::Http1 => self.send_h1(head, body, breaker).await,
            // An HTTP/2 upstream (every mesh link is one) cannot take an HTTP/1.1
            // upgrade: sent on, it would arrive as a plain request and the client would
            // get a plain answer instead of its tunnel.
            UpstreamProtocol::Http2 if head.headers.contains_key(http::header::UPGRADE) => {
                Err(ProxyError::UpstreamProtocol(
                    "upgrades are not carried to HTTP/2 upstreams (mesh links included)",
                ))
            }
            // Boxed: keeps the HTTP/1.1 future (the common one) small to move around.
            UpstreamProtocol::Http2 => {
                Box::pin(self.send_h2(self.owned(head, body), breaker)).await
            }
        }
    }

    /// An owned request (for hyper's clients), with a `Host` if the head had none.
    fn owned(&self, head: &RequestHead, body: Body) -> Request<Body> {
        let mut req = head.to_request(body);
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut()
                .insert(http::header::HOST, self.shared.host.clone());
        }
        req
    }

    async fn send_h1(
        &self,
        head: &RequestHead,
        mut body: Body,
        breaker: &Arc<Breaker>,
    ) -> Result<Response<Body>, ProxyError> {
        if head.headers.contains_key(http::header::UPGRADE) {
            return Box::pin(self.send_upgrade(self.owned(head, body))).await;
        }
        loop {
            let (conn, reused) = match self.shared.take_idle() {
                Some(c) => (c, true),
                None => (self.shared.connect_h1(breaker).await?, false),
            };
            let release: Arc<dyn h1::Release> = self.shared.clone();
            match h1::send(conn, head, &self.shared.host, body, release).await {
                Ok(resp) => return Ok(resp),
                Err(h1::SendError {
                    retry: Some(again), ..
                }) if reused => {
                    self.shared.counters.retried.increment(1);
                    body = *again;
                }
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

    async fn send_h2(
        &self,
        mut req: Request<Body>,
        breaker: &Arc<Breaker>,
    ) -> Result<Response<Body>, ProxyError> {
        // HTTP/2 carries the authority as `:authority`, taken from an absolute URI.
        let host = req
            .headers_mut()
            .remove(http::header::HOST)
            .unwrap_or_else(|| self.shared.host.clone());
        let authority = host.to_str().unwrap_or_default();
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(if self.shared.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
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
        let mut sender = self.shared.h2_sender(breaker).await?;
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
    /// The most recently idled connection that is still usable. Unusable ones are
    /// closed (dropped) outside the lock.
    fn take_idle(&self) -> Option<h1::Conn> {
        let now = Instant::now();
        loop {
            let candidate = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_back()?;
            if now.saturating_duration_since(candidate.since) < self.idle_timeout
                && candidate.conn.is_usable()
            {
                return Some(candidate.conn);
            }
        }
    }

    /// A new HTTP/1.1 connection: waits as a pending request, and holds a connection
    /// permit for as long as it stays open.
    async fn connect_h1(&self, breaker: &Arc<Breaker>) -> Result<h1::Conn, ProxyError> {
        let _pending = breaker.try_acquire(Kind::Pending)?;
        let permit = breaker.try_acquire(Kind::Connection)?;
        Ok(h1::Conn::new(self.dial().await?).holding(permit))
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

    async fn h2_sender(
        &self,
        breaker: &Arc<Breaker>,
    ) -> Result<http2::SendRequest<Body>, ProxyError> {
        let mut slot = self.h2.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let _pending = breaker.try_acquire(Kind::Pending)?;
        let permit = breaker.try_acquire(Kind::Connection)?;
        let stream = self.dial().await?;
        let io = TokioIo::new(match &self.tls {
            None => Either::Left(stream),
            Some(tls) => Either::Right(Box::new(
                tls.connect(stream, MeshAlpn::H2, self.connect_timeout)
                    .await
                    .map_err(|e| ProxyError::ConnectFailure(e.into()))?,
            )),
        });
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(|e| ProxyError::ConnectFailure(e.into()))?;
        tokio::spawn(async move {
            // The connection counts against the limit while it runs.
            let _permit = permit;
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
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Under steady load only the newest connections are taken; the oldest ones are
        // looked at on every release (a few at a time) and closed once expired or closed
        // by the upstream, so the pool shrinks back after a burst instead of holding
        // sockets forever.
        let mut evicted = Vec::new();
        while evicted.len() < EVICT_PER_RELEASE
            && idle.front().is_some_and(|oldest| {
                now.saturating_duration_since(oldest.since) >= self.idle_timeout
                    || !oldest.conn.is_usable()
            })
        {
            evicted.extend(idle.pop_front());
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since: now });
        }
        drop(idle);
        drop(evicted);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;
    use weft_telemetry::Registry;

    use super::h1::Release;
    use super::*;

    /// A client connection to `l` and its server side.
    async fn pair(l: &TcpListener) -> (h1::Conn, TcpStream) {
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (h1::Conn::new(client), server)
    }

    #[tokio::test]
    async fn a_release_closes_stale_connections_at_the_bottom_of_the_pool() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reg = Registry::new();
        let counters = ConnectCounters {
            opened: reg.counter("t_opened", &[]),
            failed: reg.counter("t_failed", &[]),
            retried: reg.counter("t_retried", &[]),
        };
        let addr = l.local_addr().unwrap();
        let client = HttpClient::new(
            addr,
            UpstreamProtocol::Http1,
            Duration::from_secs(1),
            POOL_IDLE_TIMEOUT,
            counters,
            None,
        );
        let shared = client.shared.clone();
        // A connection the upstream closes while it idles at the bottom of the pool.
        let (stale, server) = pair(&l).await;
        shared.release(stale);
        drop(server);
        let closed_seen = async {
            loop {
                let gone = !shared.idle.lock().unwrap()[0].conn.is_usable();
                if gone {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed_seen)
            .await
            .unwrap();
        // The next release looks at the bottom of the pool and closes it.
        let (live, _server) = pair(&l).await;
        shared.release(live);
        let idle = shared.idle.lock().unwrap();
        assert_eq!(idle.len(), 1, "the stale connection was closed");
        assert!(idle[0].conn.is_usable());
    }

    /// An upstream answering each connection's requests with `replies` in turn (raw
    /// bytes), then closing it.
    async fn scripted(replies: &'static [&'static [u8]]) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    for reply in replies {
                        if s.read(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let _ = s.write_all(reply).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn connection_permits_are_given_back_however_a_connection_ends() {
        use http_body_util::BodyExt;

        use crate::resilience::breaker::{Breaker, Kind, OverflowCounters};
        use crate::snapshot::policy::Limits;

        const KEEP: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        const CUT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok";
        // (what the upstream answers, connections still counted after the exchange)
        let cases: &[(&'static [&'static [u8]], u32)] = &[
            (&[KEEP], 1),  // pooled: still open, still counted
            (&[CLOSE], 0), // closed after the response
            (&[CUT], 0),   // the body broke off
        ];
        for (replies, open_after) in cases {
            let reg = Registry::new();
            let c = |n: &'static str| reg.counter(n, &[]);
            let breaker = Arc::new(Breaker::new(
                Limits::default(),
                OverflowCounters {
                    requests: c("a"),
                    pending: c("b"),
                    connections: c("c"),
                    retries: c("d"),
                },
            ));
            let client = HttpClient::new(
                scripted(replies).await,
                UpstreamProtocol::Http1,
                Duration::from_secs(1),
                POOL_IDLE_TIMEOUT,
                ConnectCounters {
                    opened: c("o"),
                    failed: c("f"),
                    retried: c("r"),
                },
                None,
            );
            let req = Request::builder()
                .uri("/")
                .header("host", "x")
                .body(Body::Empty)
                .unwrap();
            let resp = client
                .send(
                    &RequestHead::from_parts(req.into_parts().0),
                    Body::Empty,
                    &breaker,
                )
                .await
                .unwrap();
            assert_eq!(breaker.in_use(Kind::Connection), 1, "{replies:?}: open");
            assert_eq!(breaker.in_use(Kind::Pending), 0, "{replies:?}: connected");
            let _ = resp.into_body().collect().await;
            // The connection goes back to the pool or closes as the body ends.
            tokio::task::yield_now().await;
            assert_eq!(
                breaker.in_use(Kind::Connection),
                *open_after,
                "{replies:?}: after the body"
            );
            assert!(!client.close_one_idle() || *open_after == 1);
            assert_eq!(
                breaker.in_use(Kind::Connection),
                0,
                "{replies:?}: all closed"
            );
        }
    }

    #[tokio::test]
    async fn a_new_connection_over_the_limit_is_an_overflow() {
        use crate::resilience::breaker::{Breaker, Kind, OverflowCounters};
        use crate::snapshot::policy::Limits;

        const KEEP: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let reg = Registry::new();
        let c = |n: &'static str| reg.counter(n, &[]);
        let breaker = Arc::new(Breaker::new(
            Limits {
                max_connections: 1,
                ..Limits::default()
            },
            OverflowCounters {
                requests: c("a"),
                pending: c("b"),
                connections: c("c"),
                retries: c("d"),
            },
        ));
        let client = HttpClient::new(
            scripted(&[KEEP, KEEP]).await,
            UpstreamProtocol::Http1,
            Duration::from_secs(1),
            POOL_IDLE_TIMEOUT,
            ConnectCounters {
                opened: c("o"),
                failed: c("f"),
                retried: c("r"),
            },
            None,
        );
        let req = || {
            Request::builder()
                .uri("/")
                .header("host", "x")
                .body(Body::Empty)
                .unwrap()
        };
        // The first response's body is not read yet: its connection is busy, so the
        // second request needs a new one, over the limit.
        let busy = client
            .send(
                &RequestHead::from_parts(req().into_parts().0),
                Body::Empty,
                &breaker,
            )
            .await
            .unwrap();
        let over = client
            .send(
                &RequestHead::from_parts(req().into_parts().0),
                Body::Empty,
                &breaker,
            )
            .await
            .unwrap_err();
        assert_eq!(
            over.to_string(),
            "upstream overflow: max_connections limit reached"
        );
        assert_eq!(
            breaker.in_use(Kind::Pending),
            0,
            "the pending permit is given back"
        );
        assert!(reg.render().contains("c 1"), "{}", reg.render());
        drop(busy);
        assert_eq!(breaker.in_use(Kind::Connection), 0);
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_clusters_idle_timeout_is_not_reused() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reg = Registry::new();
        let c = |n: &'static str| reg.counter(n, &[]);
        // (the cluster's idle_timeout, reused after idling 100 ms)
        let cases = [
            (Duration::from_millis(20), false),
            (Duration::from_secs(60), true),
        ];
        for (idle, reused) in cases {
            let client = HttpClient::new(
                l.local_addr().unwrap(),
                UpstreamProtocol::Http1,
                Duration::from_secs(1),
                idle,
                ConnectCounters {
                    opened: c("o"),
                    failed: c("f"),
                    retried: c("r"),
                },
                None,
            );
            let (conn, _server) = pair(&l).await;
            client.shared.release(conn);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(client.shared.take_idle().is_some(), reused, "{idle:?}");
        }
    }
}
