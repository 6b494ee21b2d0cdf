//! The TCP proxy: each accepted connection goes to one endpoint of the listener's
//! cluster (weighted across clusters, balanced within one) and bytes are copied both
//! ways until either side closes, the connection stays idle too long, or the listener's
//! drain times out.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::drain::Watch;
use crate::snapshot::ListenerKind;
use crate::state::Store;

/// Proxies `client` for the listener called `listener`.
pub async fn proxy(
    mut client: TcpStream,
    listener: Arc<str>,
    address: std::net::SocketAddr,
    store: Arc<Store>,
    mut drain: Watch,
) {
    let state = store.load();
    let Some(l) = state
        .snapshot
        .listener_index(&listener, address)
        .map(|i| &state.snapshot.listeners[i])
    else {
        return;
    };
    let ListenerKind::Tcp(tcp) = &l.kind else {
        return;
    };
    let backend = tcp.backends.pick();
    let Some(cluster) = state.clusters.get(backend.cluster).cloned() else {
        return;
    };
    let idle = tcp.idle_timeout;
    // The state is not needed while bytes flow; let a reload free it.
    drop(state);
    let Some(endpoint) = cluster.pick(None) else {
        tracing::debug!(%listener, cluster = %cluster.config.name, "no endpoint for TCP connection");
        return;
    };
    let timeout = cluster.config.connect_timeout;
    let upstream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%listener, upstream = %endpoint.addr, error = %e, "TCP upstream connect failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%listener, upstream = %endpoint.addr, "TCP upstream connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let mut upstream = upstream;
    let _in_flight = endpoint.load.start();
    tokio::select! {
        r = copy_with_idle(&mut client, &mut upstream, idle) => {
            if let Err(e) = r {
                tracing::debug!(%listener, error = %e, "TCP proxy connection ended with an error");
            }
        }
        _ = drain.deadline() => tracing::debug!(%listener, "TCP connection closed at the end of the drain"),
    }
}

/// Copies both ways; ends when both directions closed or nothing moved for `idle`.
async fn copy_with_idle<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let Some(idle) = idle else {
        return tokio::io::copy_bidirectional(a, b).await.map(|_| ());
    };
    // The idle clock restarts whenever either direction moves bytes through `a`.
    let activity = Activity::new();
    let mut tracked = IdleTracked {
        inner: a,
        activity: activity.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut tracked, b);
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

/// A stream that reports activity in either direction.
struct IdleTracked<'a, S> {
    inner: &'a mut S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
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
