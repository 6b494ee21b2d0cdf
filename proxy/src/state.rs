//! The active configuration and its run-time parts, published as one immutable value.
//!
//! A [`State`] bundles a [`Snapshot`] with what running it needs: clusters with live
//! endpoints and pools, and per-route metric handles. The [`Store`] holds the current
//! state behind an `ArcSwap`: a request loads it once (one atomic increment, no lock)
//! and keeps it to the end, so a reload never changes a request halfway; the next
//! request sees the new state.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram};
use weft_telemetry::{Registry, names};

use crate::config::Resources;
use crate::snapshot::{Action, ListenerKind, Snapshot};
use crate::upstream::Cluster;

/// A snapshot with its run-time parts.
#[derive(Debug)]
pub struct State {
    /// Increases with every applied configuration (starts at 1).
    pub version: u64,
    /// The validated configuration.
    pub snapshot: Arc<Snapshot>,
    /// The resources it came from (for `/config_dump`).
    pub resources: Arc<Resources>,
    /// Run-time clusters, by the snapshot's cluster index.
    pub clusters: Vec<Arc<Cluster>>,
    /// Request metrics per route id, one entry per backend (local answers: one entry).
    pub route_stats: Vec<Vec<RequestStats>>,
    /// Request metrics for requests no route took, per listener index.
    pub no_route_stats: Vec<RequestStats>,
}

impl State {
    /// Builds the run-time parts of `snapshot`, reusing what `prev` already runs.
    pub async fn build(
        version: u64,
        snapshot: Snapshot,
        resources: Resources,
        prev: Option<&State>,
        registry: &Registry,
    ) -> State {
        let mut clusters = Vec::with_capacity(snapshot.clusters.len());
        for c in &snapshot.clusters {
            let old = prev.and_then(|p| p.clusters.iter().find(|x| x.config.name == c.name));
            clusters.push(Cluster::build(c, old, registry).await);
        }
        let mut route_stats: Vec<Vec<RequestStats>> =
            (0..snapshot.route_count).map(|_| Vec::new()).collect();
        let mut no_route_stats = Vec::new();
        for l in &snapshot.listeners {
            no_route_stats.push(RequestStats::new(registry, &l.name, "", ""));
            let ListenerKind::Http(h) = &l.kind else {
                continue;
            };
            for r in h.virtual_hosts.iter().flat_map(|v| &v.routes) {
                route_stats[r.id] = match &r.action {
                    Action::Forward(f) => f
                        .backends
                        .targets
                        .iter()
                        .map(|b| RequestStats::new(registry, &l.name, &r.name, &b.name))
                        .collect(),
                    _ => vec![RequestStats::new(registry, &l.name, &r.name, "")],
                };
            }
        }
        State {
            version,
            snapshot: Arc::new(snapshot),
            resources: Arc::new(resources),
            clusters,
            route_stats,
            no_route_stats,
        }
    }
}

/// Where the current [`State`] lives.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<State>,
}

impl Store {
    /// A store holding `state`.
    pub fn new(state: State) -> Self {
        Self {
            current: ArcSwap::from_pointee(state),
        }
    }

    /// The current state; hold it for the whole request.
    pub fn load(&self) -> Arc<State> {
        self.current.load_full()
    }

    /// Publishes a new state; requests already running keep the one they loaded.
    pub fn publish(&self, state: State) {
        self.current.store(Arc::new(state));
    }
}

/// Request count and duration handles for one (listener, route, destination), cached by
/// response code so the data path never looks a metric up by name.
#[derive(Debug)]
pub struct RequestStats {
    registry: Registry,
    labels: [(&'static str, String); 4],
    by_code: RwLock<Vec<CodeStats>>,
}

impl RequestStats {
    fn new(registry: &Registry, listener: &str, route: &str, destination: &str) -> Self {
        Self {
            registry: registry.clone(),
            labels: [
                (names::label::REPORTER, "gateway".to_owned()),
                (names::label::LISTENER, listener.to_owned()),
                (names::label::ROUTE, route.to_owned()),
                (names::label::DESTINATION_SERVICE, destination.to_owned()),
            ],
            by_code: RwLock::new(Vec::new()),
        }
    }

    /// Counts one request answered with `status` after `elapsed`; `flags` is `-` for a
    /// normal answer or the Envoy response flag of a local failure.
    pub fn record(
        &self,
        status: u16,
        flags: &'static str,
        protocol: &'static str,
        elapsed: Duration,
    ) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        {
            let cache = self
                .by_code
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(entry) = cache
                .iter()
                .find(|e| e.status == status && e.flags == flags && e.protocol == protocol)
            {
                entry.count.increment(1);
                entry.duration.record(ms);
                return;
            }
        }
        let mut labels: Vec<(&'static str, String)> = self.labels.to_vec();
        labels.push((names::label::REQUEST_PROTOCOL, protocol.to_owned()));
        labels.push((names::label::RESPONSE_CODE, status.to_string()));
        labels.push((names::label::RESPONSE_FLAGS, flags.to_owned()));
        let c = self.registry.counter(names::REQUESTS_TOTAL, &labels);
        let h = self.registry.histogram(names::REQUEST_DURATION_MS, &labels);
        c.increment(1);
        h.record(ms);
        let mut cache = self
            .by_code
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A bounded cache: codes are at most a few hundred values per route.
        if cache.len() < 256 {
            cache.push(CodeStats {
                status,
                flags,
                protocol,
                count: c,
                duration: h,
            });
        }
    }
}

#[derive(Debug)]
struct CodeStats {
    status: u16,
    flags: &'static str,
    protocol: &'static str,
    count: Counter,
    duration: Histogram,
}
