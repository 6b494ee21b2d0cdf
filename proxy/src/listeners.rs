//! Listening sockets kept in step with the snapshot.
//!
//! Applying a configuration is two steps. [`Listeners::prepare`] binds every socket the
//! new snapshot needs and does not have yet; if any bind fails, nothing changes and the
//! configuration is rejected. [`Listeners::commit`] (after the new state is published)
//! starts accepting on the new sockets and stops the listeners the snapshot dropped:
//! those stop accepting at once and drain their open HTTP connections gracefully.
//! A listener whose name, address and kind are unchanged keeps its socket and its
//! connections; they see the new routes from their next request on. A listener that is
//! renamed, or changes kind, on an address already listened on takes the running
//! socket over (the kernel would refuse a second one): the old accept loop stops, the
//! new one starts on the same socket, and no connection attempt is refused meanwhile.
//! Drained connections (HTTP, tunnels, TCP) that are still open after
//! [`DRAIN_TIMEOUT`] are closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_telemetry::{Registry, names};

pub use crate::drain::DRAIN_TIMEOUT;
use crate::drain::Drain;
use crate::http::handler::ConnCtx;
use crate::http::server::{self, Settings};
use crate::snapshot::{ListenerKind, Snapshot};
use crate::state::Store;

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 4096;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: cannot bind {address}: {source}")]
pub struct BindError {
    /// The listener.
    pub listener: String,
    /// The address it wanted.
    pub address: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Http,
    Tcp,
}

#[derive(Debug)]
struct Running {
    configured: SocketAddr,
    bound: SocketAddr,
    kind: Kind,
    socket: Arc<TcpListener>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

/// Sockets bound (or taken over) for a snapshot, not yet accepting.
#[derive(Debug, Default)]
pub struct Prepared {
    new: Vec<(Arc<str>, SocketAddr, Kind, Arc<TcpListener>)>,
    keep: Vec<Arc<str>>,
}

/// The set of running listeners.
#[derive(Debug)]
pub struct Listeners {
    store: Arc<Store>,
    registry: Registry,
    running: Mutex<HashMap<Arc<str>, Running>>,
}

impl Listeners {
    /// No listeners yet; they will serve the state in `store`.
    pub fn new(store: Arc<Store>, registry: Registry) -> Self {
        Self {
            store,
            registry,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Binds the sockets `snapshot` needs that are not running yet.
    pub fn prepare(&self, snapshot: &Snapshot) -> Result<Prepared, BindError> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut prepared = Prepared::default();
        for l in &snapshot.listeners {
            let kind = match l.kind {
                ListenerKind::Http(_) => Kind::Http,
                ListenerKind::Tcp(_) => Kind::Tcp,
            };
            if let Some(r) = running.get(&l.name)
                && r.configured == l.address
                && r.kind == kind
            {
                prepared.keep.push(l.name.clone());
                continue;
            }
            // An address some running listener already holds (this one under another
            // kind, or another name): take its socket over instead of binding again.
            let held = (l.address.port() != 0)
                .then(|| running.values().find(|r| r.configured == l.address))
                .flatten();
            let socket = match held {
                Some(r) => r.socket.clone(),
                None => Arc::new(bind(l.address).map_err(|source| BindError {
                    listener: l.name.to_string(),
                    address: l.address,
                    source,
                })?),
            };
            prepared.new.push((l.name.clone(), l.address, kind, socket));
        }
        Ok(prepared)
    }

    /// Starts the prepared sockets and stops listeners no longer wanted.
    pub fn commit(&self, prepared: Prepared) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted: Vec<&Arc<str>> = prepared
            .keep
            .iter()
            .chain(prepared.new.iter().map(|n| &n.0))
            .collect();
        let removed: Vec<Arc<str>> = running
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for name in removed.iter().chain(prepared.new.iter().map(|n| &n.0)) {
            if let Some(old) = running.remove(name) {
                tracing::info!(listener = %name, address = %old.bound, "listener stopped; draining its connections");
                old.stop.cancel();
            }
        }
        for (name, configured, kind, socket) in prepared.new {
            let bound = socket.local_addr().unwrap_or(configured);
            tracing::info!(listener = %name, address = %bound, kind = ?kind, "listening");
            let stop = CancellationToken::new();
            let labels = [(names::label::LISTENER, name.to_string())];
            let stats = ConnStats {
                active: self
                    .registry
                    .gauge(names::DOWNSTREAM_CONNECTIONS_ACTIVE, &labels),
                total: self
                    .registry
                    .counter(names::DOWNSTREAM_CONNECTIONS_TOTAL, &labels),
                detection: Arc::new(server::DetectCounters::new(&self.registry, &name)),
            };
            let done = tokio::spawn(accept_loop(
                socket.clone(),
                name.clone(),
                configured,
                kind,
                self.store.clone(),
                stop.clone(),
                stats,
            ));
            running.insert(
                name,
                Running {
                    configured,
                    bound,
                    kind,
                    socket,
                    stop,
                    done,
                },
            );
        }
    }

    /// Where each listener is actually bound (port 0 resolved), by name.
    pub fn addresses(&self) -> HashMap<String, SocketAddr> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running
            .iter()
            .map(|(k, r)| (k.to_string(), r.bound))
            .collect()
    }

    /// Stops every listener and waits for their connections to drain (bounded).
    pub async fn shutdown(&self) {
        let all: Vec<Running> = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            running.drain().map(|(_, r)| r).collect()
        };
        for r in &all {
            r.stop.cancel();
        }
        for r in all {
            let _ = r.done.await;
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[derive(Clone, Debug)]
struct ConnStats {
    active: Gauge,
    total: Counter,
    detection: Arc<server::DetectCounters>,
}

/// Counts a connection as open until dropped.
struct OpenConn(Gauge);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

async fn accept_loop(
    socket: Arc<TcpListener>,
    name: Arc<str>,
    configured: SocketAddr,
    kind: Kind,
    store: Arc<Store>,
    stop: CancellationToken,
    stats: ConnStats,
) {
    // Connections are tracked so that a stopped listener can wait for them to drain.
    let connections = TaskTracker::new();
    let drain = Drain::new();
    let local_port = socket.local_addr().map_or(configured.port(), |a| a.port());
    loop {
        let accepted = tokio::select! {
            // Biased: once stopped, this loop accepts nothing more, even with a
            // connection waiting (the listener taking the socket over will).
            biased;
            _ = stop.cancelled() => break,
            r = socket.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        stats.total.increment(1);
        stats.active.increment(1.0);
        let open = OpenConn(stats.active.clone());
        let tls = listener_tls(&store, &name, configured);
        match kind {
            Kind::Http => {
                let mut settings = http_settings(&store, &name);
                settings.detection = Some(stats.detection.clone());
                let ctx = ConnCtx {
                    listener: name.clone(),
                    address: configured,
                    peer,
                    peer_ip: crate::http::headers::client_ip_value(peer.ip()),
                    scheme: "http",
                    local_port,
                    peer_id: None,
                    xfcc: None,
                    store: store.clone(),
                    drain: drain.clone(),
                    in_flight: Default::default(),
                };
                let watch = drain.watch();
                connections.spawn(async move {
                    match tls {
                        None => server::serve(stream, Arc::new(ctx), settings, watch).await,
                        // The handshake runs in the connection's task, never in the
                        // accept loop: a slow client must not hold up the others.
                        Some(tls) => {
                            if let Some(a) =
                                tls.accept(stream, settings.request_headers_timeout).await
                            {
                                let ctx = Arc::new(ConnCtx {
                                    scheme: "https",
                                    peer_id: a.peer_id,
                                    xfcc: a.xfcc,
                                    ..ctx
                                });
                                server::serve_tls(
                                    a.stream,
                                    a.alpn.as_deref(),
                                    ctx,
                                    settings,
                                    watch,
                                )
                                .await;
                            }
                        }
                    }
                    drop(open);
                });
            }
            Kind::Tcp => {
                let (name, store, watch) = (name.clone(), store.clone(), drain.watch());
                // TCP has no graceful end: a drained connection runs on until it ends or
                // the drain timeout closes it.
                connections.spawn(async move {
                    match tls {
                        None => {
                            crate::tcp::proxy(
                                stream,
                                Some(peer),
                                None,
                                name,
                                configured,
                                store,
                                watch,
                            )
                            .await;
                        }
                        Some(tls) => {
                            let timeout =
                                crate::snapshot::translate::DEFAULT_REQUEST_HEADERS_TIMEOUT;
                            if let Some(a) = tls.accept(stream, timeout).await {
                                crate::tcp::proxy(
                                    a.stream,
                                    Some(peer),
                                    a.peer_id,
                                    name,
                                    configured,
                                    store,
                                    watch,
                                )
                                .await;
                            }
                        }
                    }
                    drop(open);
                });
            }
        }
    }
    drop(socket);
    // In-flight requests finish; idle keep-alive connections close; HTTP/2 gets GOAWAY.
    drain.start();
    connections.close();
    // Connections close themselves at the drain timeout; the margin covers their exit.
    if tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "connections still open after the drain timeout");
    }
}

/// The TLS acceptor of the listener, from the current state.
fn listener_tls(
    store: &Store,
    name: &str,
    address: SocketAddr,
) -> Option<Arc<crate::tls::ListenerTls>> {
    let state = store.load();
    let i = state.snapshot.listener_index(name, address)?;
    state.tls.by_listener.get(i).cloned().flatten()
}

fn http_settings(store: &Store, name: &str) -> Settings {
    let state = store.load();
    match state.snapshot.listener(name).map(|l| &l.kind) {
        Some(ListenerKind::Http(h)) => Settings {
            request_headers_timeout: h.request_headers_timeout,
            max_request_headers: h.max_request_headers,
            idle_timeout: h.idle_timeout,
            detection: None,
        },
        _ => Settings {
            request_headers_timeout: crate::snapshot::translate::DEFAULT_REQUEST_HEADERS_TIMEOUT,
            max_request_headers: crate::snapshot::translate::DEFAULT_MAX_REQUEST_HEADERS_KB
                as usize
                * 1024,
            idle_timeout: Some(crate::snapshot::translate::DEFAULT_IDLE_TIMEOUT),
            detection: None,
        },
    }
}
