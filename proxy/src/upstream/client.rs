//! Pooled HTTP clients, one per endpoint.
//!
//! Each endpoint owns a hyper client whose connector always dials that endpoint, so the
//! request keeps its own authority (the `Host` the client sent, or the route's rewrite)
//! while the pool is per endpoint: HTTP/1.1 keeps idle keep-alive connections, HTTP/2
//! multiplexes every request over one connection. The balancer picks the endpoint; this
//! module only sends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::Counter;
use tokio::net::TcpStream;

use crate::http::{Body, ProxyError};
use crate::snapshot::UpstreamProtocol;

/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Counters a connector bumps.
#[derive(Clone, Debug)]
pub struct ConnectCounters {
    /// Connections opened.
    pub opened: Counter,
    /// Connection attempts that failed.
    pub failed: Counter,
}

/// Dials one fixed address, with a timeout and `TCP_NODELAY`.
#[derive(Clone, Debug)]
pub struct Connector {
    addr: SocketAddr,
    timeout: Duration,
    counters: ConnectCounters,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (addr, timeout, counters) = (self.addr, self.timeout, self.counters.clone());
        Box::pin(async move {
            let result = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out after {timeout:?}"),
                )),
            };
            match result {
                Ok(stream) => {
                    counters.opened.increment(1);
                    // Small requests and responses must not wait for Nagle.
                    stream.set_nodelay(true)?;
                    Ok(TokioIo::new(stream))
                }
                Err(e) => {
                    counters.failed.increment(1);
                    Err(e)
                }
            }
        })
    }
}

/// A pooled client for one endpoint.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<Connector, Body>,
    protocol: UpstreamProtocol,
}

impl HttpClient {
    /// A client for `addr` speaking `protocol`.
    pub fn new(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        counters: ConnectCounters,
    ) -> Self {
        let connector = Connector {
            addr,
            timeout: connect_timeout,
            counters,
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(protocol == UpstreamProtocol::Http2)
            // The data path sets Host itself; a request without one (HTTP/1.0) must
            // not get an invented one.
            .set_host(false)
            .http2_adaptive_window(true);
        Self {
            client: builder.build(connector),
            protocol,
        }
    }

    /// The protocol this client speaks.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Sends `req` (absolute URI; its authority is the one the upstream sees).
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        *req.version_mut() = match self.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => {
                // HTTP/2 carries the authority as `:authority` (from the URI).
                req.headers_mut().remove(http::header::HOST);
                Version::HTTP_2
            }
        };
        self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                ProxyError::ConnectFailure(e.into())
            } else {
                ProxyError::UpstreamReset(e.into())
            }
        })
    }
}
