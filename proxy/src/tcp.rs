//! The TCP proxy: each accepted connection goes to one endpoint of the listener's
//! cluster (weighted across clusters, balanced within one) and bytes are copied both
//! ways until either side closes, the connection stays idle too long, or the listener's
//! drain times out. Each connection is counted in the Istio TCP metrics (opened, closed
//! with its response flag, bytes each way) and, if the listener logs, gets one
//! access-log record when it ends.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use weft_telemetry::access_log::{AccessRecord, Kind};
use weft_telemetry::names;

use crate::drain::Watch;
use crate::snapshot::ListenerKind;
use crate::state::Store;
use tokio_util::either::Either;

use crate::tls::MeshAlpn;
use crate::upstream::Cluster;

/// Proxies `client` (from `peer`, identified as `peer_id` on a mesh listener) for the
/// listener called `listener`.
pub async fn proxy<C>(
    mut client: C,
    peer: Option<std::net::SocketAddr>,
    peer_id: Option<Arc<str>>,
    listener: Arc<str>,
    address: std::net::SocketAddr,
    store: Arc<Store>,
    mut drain: Watch,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let start_wall = SystemTime::now();
    let state = store.load();
    let Some((li, l)) = state
        .snapshot
        .listener_index(&listener, address)
        .map(|i| (i, &state.snapshot.listeners[i]))
    else {
        return;
    };
    let ListenerKind::Tcp(tcp) = &l.kind else {
        return;
    };
    let picked = tcp.backends.pick();
    let backend = tcp
        .backends
        .targets
        .iter()
        .position(|t| std::ptr::eq(t, picked))
        .unwrap_or(0);
    let Some(stats) = state.tcp_stats.get(li).and_then(Option::as_ref) else {
        return;
    };
    let observe = state.observe.get(li).cloned();
    let cluster_name = picked.name.clone();
    let cluster = state.clusters.get(picked.cluster).cloned();
    stats
        .counter(
            names::TCP_CONNECTIONS_OPENED,
            backend,
            "-",
            peer_id.as_deref(),
        )
        .increment(1);
    let idle = tcp.idle_timeout;
    let mut outcome = Outcome {
        flags: "-",
        upstream: None,
        received: 0,
        sent: 0,
    };
    if let Some(cluster) = cluster {
        // The state is not needed while bytes flow; let a reload free it (the metric
        // handles and the log writer are kept by themselves).
        let closed = stats.counter(
            names::TCP_CONNECTIONS_CLOSED,
            backend,
            "-",
            peer_id.as_deref(),
        );
        let received = stats.counter(names::TCP_RECEIVED_BYTES, backend, "-", peer_id.as_deref());
        let sent = stats.counter(names::TCP_SENT_BYTES, backend, "-", peer_id.as_deref());
        let failed = |flags| {
            stats.counter(
                names::TCP_CONNECTIONS_CLOSED,
                backend,
                flags,
                peer_id.as_deref(),
            )
        };
        let closed_failed = [failed("UH"), failed("UF")];
        drop(state);
        relay(
            &mut client,
            &listener,
            &cluster,
            idle,
            &mut drain,
            &mut outcome,
        )
        .await;
        received.increment(outcome.received);
        sent.increment(outcome.sent);
        match outcome.flags {
            "UH" => closed_failed[0].increment(1),
            "UF" => closed_failed[1].increment(1),
            _ => closed.increment(1),
        }
    } else {
        outcome.flags = "UH";
        stats
            .counter(
                names::TCP_CONNECTIONS_CLOSED,
                backend,
                "UH",
                peer_id.as_deref(),
            )
            .increment(1);
        drop(state);
    }
    let Some(observe) = observe else {
        return;
    };
    let duration = started.elapsed();
    observe.log(0, outcome.flags, || AccessRecord {
        start_time: start_wall,
        kind: Kind::Tcp,
        direction: "gateway",
        listener: listener.clone(),
        route: Arc::from(""),
        cluster: cluster_name,
        upstream_address: outcome.upstream,
        downstream_address: peer.unwrap_or(address),
        method: None,
        authority: String::new(),
        path: String::new(),
        protocol: "TCP",
        status: 0,
        grpc_status: None,
        response_flags: Cow::Borrowed(outcome.flags),
        attempts: u32::from(outcome.upstream.is_some()),
        bytes_received: outcome.received,
        bytes_sent: outcome.sent,
        duration,
        upstream_ttfb: None,
        request_id: None,
        trace_id: None,
        span_id: None,
        user_agent: None,
        forwarded_for: None,
        peer_identity: peer_id.map(|p| p.to_string()),
        authz_decision: None,
        authz_rule: None,
    });
}

/// How a proxied connection went.
struct Outcome {
    flags: &'static str,
    upstream: Option<std::net::SocketAddr>,
    received: u64,
    sent: u64,
}

/// Connects to an endpoint of `cluster` and copies bytes until the end.
async fn relay<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    listener: &str,
    cluster: &Cluster,
    idle: Option<Duration>,
    drain: &mut Watch,
    outcome: &mut Outcome,
) {
    let Some(endpoint) = cluster.pick(None, &[]) else {
        tracing::debug!(%listener, cluster = %cluster.config.name, "no endpoint for TCP connection");
        outcome.flags = "UH";
        return;
    };
    outcome.upstream = Some(endpoint.addr);
    let timeout = cluster.config.connect_timeout;
    let upstream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%listener, upstream = %endpoint.addr, error = %e, "TCP upstream connect failed");
            outcome.flags = "UF";
            return;
        }
        Err(_) => {
            tracing::debug!(%listener, upstream = %endpoint.addr, "TCP upstream connect timed out");
            outcome.flags = "UF";
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let mut upstream = match &cluster.tls {
        None => Either::Left(upstream),
        Some(tls) => match tls.connect(upstream, MeshAlpn::Tcp, timeout).await {
            Ok(s) => Either::Right(Box::new(s)),
            Err(e) => {
                tracing::debug!(%listener, upstream = %endpoint.addr, error = %e, "TCP upstream TLS handshake failed");
                outcome.flags = "UF";
                return;
            }
        },
    };
    let _in_flight = endpoint.load.start();
    let mut tracked = Tracked {
        inner: client,
        activity: Activity::new(),
        received: 0,
        sent: 0,
    };
    tokio::select! {
        r = copy_with_idle(&mut tracked, &mut upstream, idle) => {
            if let Err(e) = r {
                tracing::debug!(%listener, error = %e, "TCP proxy connection ended with an error");
            }
        }
        _ = drain.deadline() => tracing::debug!(%listener, "TCP connection closed at the end of the drain"),
    }
    outcome.received = tracked.received;
    outcome.sent = tracked.sent;
}

/// Copies both ways; ends when both directions closed or nothing moved for `idle`.
async fn copy_with_idle<A, B>(
    a: &mut Tracked<'_, A>,
    b: &mut B,
    idle: Option<Duration>,
) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let Some(idle) = idle else {
        return tokio::io::copy_bidirectional(a, b).await.map(|_| ());
    };
    // The idle clock restarts whenever either direction moves bytes through `a`.
    let activity = a.activity.clone();
    let copy = tokio::io::copy_bidirectional(a, b);
    tokio::pin!(copy);
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            r = &mut copy => return r.map(|_| ()),
            _ = tokio::time::sleep_until(deadline) => {
                if activity.last() + idle <= Instant::now() {
                    return Ok(());
                }
            }
        }
    }
}

/// When bytes last moved, as milliseconds since a base instant.
#[derive(Clone)]
struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The client's stream, counting bytes and reporting activity in either direction.
struct Tracked<'a, S> {
    inner: &'a mut S,
    activity: Activity,
    /// Bytes read from the client.
    received: u64,
    /// Bytes written to the client.
    sent: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.received += n as u64;
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.sent += n as u64;
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
