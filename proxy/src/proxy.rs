//! A running proxy: state store, listeners, admin server and metrics, assembled.
//!
//! [`Proxy::start`] serves a loaded configuration; [`Proxy::apply`] swaps in a new one
//! (binding new listeners first, so a configuration whose sockets cannot be bound is
//! rejected whole); [`Proxy::reload`] reads a file and applies it, keeping the current
//! configuration if anything is wrong. `weft run`, `weft proxy`, `weft demo` and the
//! tests all run this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::Counter;
use tokio_util::sync::CancellationToken;
use weft_telemetry::{Registry, names};

use crate::admin;
use crate::config::{self, ConfigError, Loaded};
use crate::listeners::{BindError, Listeners};
use crate::observe::{Telemetry, TelemetryOptions};
use crate::state::{State, Store};

/// How often histogram samples are folded into buckets between scrapes. Often enough
/// that each fold is small; it runs off the worker threads so traffic never waits.
const METRICS_UPKEEP: Duration = Duration::from_secs(1);

/// Errors at the proxy's boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A run-time part of the configuration could not be set up (an access-log file).
    #[error("{0}")]
    Setup(String),
    /// The admin server could not be bound.
    #[error("admin server: cannot bind {address}: {source}")]
    Admin {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Start-up settings not in the configuration.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Admin address; overrides the configuration's. `None` and no configured address:
    /// the default `127.0.0.1:9901`.
    pub admin: Option<SocketAddr>,
    /// Run without an admin server (tests that start many proxies).
    pub no_admin: bool,
    /// Span export and metric identity.
    pub telemetry: TelemetryOptions,
}

/// A running proxy. Cheap to clone; all clones drive the same proxy.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Arc<Store>,
    pub(crate) registry: Registry,
    pub(crate) telemetry: Arc<Telemetry>,
    listeners: Listeners,
    apply_lock: tokio::sync::Mutex<()>,
    admin_addr: Option<SocketAddr>,
    stop: CancellationToken,
    updates: Counter,
    rejections: Counter,
    last_rejection: Mutex<Option<String>>,
}

impl Proxy {
    /// Starts serving `loaded`: binds its listeners and the admin server.
    pub async fn start(loaded: Loaded, options: Options) -> Result<Proxy, Error> {
        let registry = Registry::new();
        let admin_addr = if options.no_admin {
            None
        } else {
            Some(
                options
                    .admin
                    .or(loaded.admin)
                    .unwrap_or(config::DEFAULT_ADMIN),
            )
        };
        let admin_socket = match admin_addr {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| Error::Admin { address, source })?,
            ),
            None => None,
        };
        let telemetry = Arc::new(Telemetry::new(registry.clone(), &options.telemetry));
        let state = State::build(1, loaded.snapshot, loaded.resources, None, &telemetry)
            .await
            .map_err(Error::Setup)?;
        let store = Arc::new(Store::new(state));
        let listeners = Listeners::new(store.clone(), registry.clone());
        let prepared = listeners.prepare(&store.load().snapshot)?;
        listeners.commit(prepared);
        let updates = registry.counter(names::CONFIG_UPDATES_TOTAL, &[]);
        updates.increment(1);
        mark_applied(&registry);
        let inner = Arc::new(Inner {
            store,
            rejections: registry.counter(names::CONFIG_REJECTIONS_TOTAL, &[]),
            updates,
            registry,
            telemetry,
            listeners,
            apply_lock: tokio::sync::Mutex::new(()),
            admin_addr: admin_socket.as_ref().and_then(|s| s.local_addr().ok()),
            stop: CancellationToken::new(),
            last_rejection: Mutex::new(None),
        });
        if let Some(socket) = admin_socket {
            tracing::info!(address = ?inner.admin_addr, "admin server listening");
            tokio::spawn(admin::serve(
                socket,
                Arc::downgrade(&inner),
                inner.stop.clone(),
            ));
        }
        tokio::spawn(upkeep(inner.registry.clone(), inner.stop.clone()));
        Ok(Proxy { inner })
    }

    /// Applies a new configuration. Listeners it adds are bound first; if one cannot be,
    /// nothing changes. Returns the new version.
    pub async fn apply(&self, loaded: Loaded) -> Result<u64, Error> {
        let _one_at_a_time = self.inner.apply_lock.lock().await;
        let prev = self.inner.store.load();
        let prepared = match self.inner.listeners.prepare(&loaded.snapshot) {
            Ok(p) => p,
            Err(e) => {
                self.rejected(&e.to_string());
                return Err(e.into());
            }
        };
        let version = prev.version + 1;
        let state = match State::build(
            version,
            loaded.snapshot,
            loaded.resources,
            Some(&prev),
            &self.inner.telemetry,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                // The prepared sockets are dropped unused: nothing changed.
                self.rejected(&e);
                return Err(Error::Setup(e));
            }
        };
        drop(prev);
        self.inner.store.publish(state);
        self.inner.listeners.commit(prepared);
        self.inner.updates.increment(1);
        mark_applied(&self.inner.registry);
        *self
            .inner
            .last_rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        tracing::info!(version, "configuration applied");
        Ok(version)
    }

    /// Reads `path` and applies it; on any problem the current configuration stays and
    /// the reason is logged, counted and returned.
    pub async fn reload(&self, path: &Path) -> Result<u64, Error> {
        match config::load_file(path) {
            Ok(loaded) => self.apply(loaded).await,
            Err(e) => {
                self.rejected(&e.to_string());
                Err(e.into())
            }
        }
    }

    fn rejected(&self, why: &str) {
        self.inner.rejections.increment(1);
        tracing::error!("configuration rejected, previous configuration stays active:\n{why}");
        *self
            .inner
            .last_rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why.to_owned());
    }

    /// Why the last update was rejected, if the last update was rejected.
    pub fn last_rejection(&self) -> Option<String> {
        self.inner
            .last_rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The bound address of the listener called `name` (port 0 resolved).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.inner.listeners.addresses().get(name).copied()
    }

    /// Bound addresses of all listeners, by name.
    pub fn listener_addrs(&self) -> HashMap<String, SocketAddr> {
        self.inner.listeners.addresses()
    }

    /// The admin server's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// The active state.
    pub fn state(&self) -> Arc<State> {
        self.inner.store.load()
    }

    /// This proxy's metrics as Prometheus text.
    pub fn metrics_text(&self) -> String {
        self.inner.registry.render()
    }

    /// Stops accepting, drains open connections (bounded), stops the admin server and
    /// writes out queued access-log records and spans (bounded).
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.listeners.shutdown().await;
        let telemetry = self.inner.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.flush(Duration::from_secs(5))).await;
    }

    /// The process-wide telemetry (span exporter, access-log writers).
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }
}

fn mark_applied(registry: &Registry) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    registry.gauge(names::CONFIG_LAST_APPLIED, &[]).set(now);
}

async fn upkeep(registry: Registry, stop: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let registry = registry.clone();
                let _ = tokio::task::spawn_blocking(move || registry.run_upkeep()).await;
            }
        }
    }
}
