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
use crate::observe::{Identity, ListenerObserve, Telemetry};
use crate::resilience::fault::{FaultCounters, FaultState};
use crate::resilience::ratelimit::{Limiter, RateLimitCounters};
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
    pub route_stats: Vec<Vec<Arc<RequestStats>>>,
    /// Request metrics for requests no route took, per listener index.
    pub no_route_stats: Vec<Arc<RequestStats>>,
    /// Access logs and tracing per listener index.
    pub observe: Vec<Arc<ListenerObserve>>,
    /// Route timeouts hit, per route id.
    pub route_timeouts: Vec<Counter>,
    /// TCP metrics per listener index (`None` for HTTP listeners).
    pub tcp_stats: Vec<Option<TcpStats>>,
    /// Rate limiters and fault injectors per route id (empty for routes without).
    pub route_policies: Vec<RoutePolicies>,
    /// Certificate stores, listener acceptors and cluster connectors.
    pub tls: crate::tls::TlsRuntime,
    /// Authentication and authorization counters per listener index.
    pub security: Vec<crate::http::security::SecurityStats>,
}

/// The run-time state of a route's rate limit and fault injection. Rebuilt with every
/// configuration: a reload starts the route's token buckets full again, as Envoy does.
#[derive(Debug, Default)]
pub struct RoutePolicies {
    /// The route's token buckets.
    pub limiter: Option<Limiter>,
    /// The route's fault injection.
    pub fault: Option<FaultState>,
}

impl State {
    /// Builds the run-time parts of `snapshot`, reusing what `prev` already runs. Fails
    /// (naming the listener or cluster) when an access-log file cannot be opened or a
    /// certificate cannot be loaded.
    pub async fn build(
        version: u64,
        snapshot: Snapshot,
        resources: Resources,
        prev: Option<&State>,
        telemetry: &Telemetry,
    ) -> Result<State, String> {
        let registry = &telemetry.registry;
        let id = &telemetry.identity;
        let mut observe = Vec::with_capacity(snapshot.listeners.len());
        for l in &snapshot.listeners {
            let built = match &l.kind {
                ListenerKind::Http(h) => {
                    ListenerObserve::build(telemetry, &h.access_logs, h.tracing)
                }
                ListenerKind::Tcp(t) => ListenerObserve::build(telemetry, &t.access_logs, None),
            };
            observe.push(Arc::new(
                built.map_err(|e| format!("listener {:?}: {e}", l.name))?,
            ));
        }
        let tls = crate::tls::TlsRuntime::build(&snapshot, prev.map(|p| &p.tls), registry)?;
        let mut clusters = Vec::with_capacity(snapshot.clusters.len());
        for (i, c) in snapshot.clusters.iter().enumerate() {
            let old = prev.and_then(|p| p.clusters.iter().find(|x| x.config.name == c.name));
            let connector = tls.by_cluster.get(i).cloned().flatten();
            clusters.push(Cluster::build_with_tls(c, old, registry, connector).await);
        }
        let mut route_stats: Vec<Vec<Arc<RequestStats>>> =
            (0..snapshot.route_count).map(|_| Vec::new()).collect();
        let mut no_route_stats = Vec::new();
        let mut route_timeouts = vec![Counter::noop(); snapshot.route_count];
        let mut route_policies: Vec<RoutePolicies> = (0..snapshot.route_count)
            .map(|_| RoutePolicies::default())
            .collect();
        let mut tcp_stats = Vec::with_capacity(snapshot.listeners.len());
        for l in &snapshot.listeners {
            tcp_stats.push(match &l.kind {
                ListenerKind::Tcp(t) => Some(TcpStats {
                    registry: registry.clone(),
                    labels: t
                        .backends
                        .targets
                        .iter()
                        .map(|b| istio_labels(id, &l.name, "", &b.name))
                        .collect(),
                }),
                ListenerKind::Http(_) => None,
            });
        }
        for l in &snapshot.listeners {
            no_route_stats.push(Arc::new(RequestStats::new(registry, id, &l.name, "", "")));
            let ListenerKind::Http(h) = &l.kind else {
                continue;
            };
            for r in h.virtual_hosts.iter().flat_map(|v| &v.routes) {
                let labelled = |name: &'static str, label: &'static str, value: &str| {
                    registry.counter(
                        name,
                        &[
                            (names::label::ROUTE, r.name.to_string()),
                            (label, value.to_owned()),
                        ],
                    )
                };
                route_policies[r.id] = RoutePolicies {
                    limiter: r.rate_limit.as_ref().map(|p| {
                        let result = |v| labelled(names::RATELIMIT_TOTAL, names::label::RESULT, v);
                        Limiter::with_counters(
                            p,
                            RateLimitCounters {
                                ok: result("ok"),
                                limited: result("limited"),
                                would_limit: result("would_limit"),
                            },
                        )
                    }),
                    fault: r.fault.as_ref().map(|p| {
                        let kind = |v| labelled(names::FAULT_INJECTED_TOTAL, names::label::KIND, v);
                        FaultState::with_counters(
                            p,
                            FaultCounters {
                                delays: kind("delay"),
                                aborts: kind("abort"),
                            },
                        )
                    }),
                };
                route_timeouts[r.id] = registry.counter(
                    names::TIMEOUTS_TOTAL,
                    &[
                        (names::label::LISTENER, l.name.to_string()),
                        (names::label::ROUTE, r.name.to_string()),
                    ],
                );
                route_stats[r.id] = match &r.action {
                    Action::Forward(f) => f
                        .backends
                        .targets
                        .iter()
                        .map(|b| {
                            Arc::new(RequestStats::new(registry, id, &l.name, &r.name, &b.name))
                        })
                        .collect(),
                    _ => vec![Arc::new(RequestStats::new(
                        registry, id, &l.name, &r.name, "",
                    ))],
                };
            }
        }
        let security = snapshot
            .listeners
            .iter()
            .map(|l| crate::http::security::SecurityStats::new(registry, &l.name))
            .collect();
        Ok(State {
            version,
            snapshot: Arc::new(snapshot),
            resources: Arc::new(resources),
            clusters,
            route_stats,
            no_route_stats,
            observe,
            route_timeouts,
            tcp_stats,
            route_policies,
            tls,
            security,
        })
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

/// Istio request metrics for one (listener, route, destination), with handles cached by
/// (status, flags, protocol, gRPC status) so the data path never looks a metric up by
/// name.
#[derive(Debug)]
pub struct RequestStats {
    registry: Registry,
    labels: Vec<(&'static str, String)>,
    by_code: RwLock<Vec<CodeStats>>,
}

/// Istio's standard labels, as a gateway reports them: the gateway is the source; the
/// destination workload and the principals are `unknown` until peers are identified
/// (mutual TLS). Weft adds the listener and route names.
fn istio_labels(
    id: &Identity,
    listener: &str,
    route: &str,
    destination: &str,
) -> Vec<(&'static str, String)> {
    use names::label as l;
    let unknown = || "unknown".to_owned();
    vec![
        (l::REPORTER, "gateway".to_owned()),
        (l::SOURCE_WORKLOAD, id.workload.clone()),
        (l::SOURCE_WORKLOAD_NAMESPACE, id.namespace.clone()),
        (l::SOURCE_PRINCIPAL, unknown()),
        (l::DESTINATION_WORKLOAD, unknown()),
        (l::DESTINATION_WORKLOAD_NAMESPACE, unknown()),
        (l::DESTINATION_PRINCIPAL, unknown()),
        (
            l::DESTINATION_SERVICE,
            if destination.is_empty() {
                unknown()
            } else {
                destination.to_owned()
            },
        ),
        (l::CONNECTION_SECURITY_POLICY, unknown()),
        (l::LISTENER, listener.to_owned()),
        (l::ROUTE, route.to_owned()),
    ]
}

/// Relabels Istio labels for a caller identified by mutual TLS: the destination
/// reports, the source is the caller's SPIFFE id (and the workload and namespace its
/// `/ns/NS/sa/SA` path names).
fn mesh_source(labels: &mut [(&'static str, String)], peer: &str) {
    let id = peer.parse::<weft_mtls::SpiffeId>().ok();
    for (k, v) in labels.iter_mut() {
        match *k {
            names::label::SOURCE_PRINCIPAL => peer.clone_into(v),
            names::label::CONNECTION_SECURITY_POLICY => "mutual_tls".clone_into(v),
            names::label::REPORTER => "destination".clone_into(v),
            names::label::SOURCE_WORKLOAD => {
                if let Some(sa) = id.as_ref().and_then(|i| i.service_account()) {
                    sa.clone_into(v);
                }
            }
            names::label::SOURCE_WORKLOAD_NAMESPACE => {
                if let Some(ns) = id.as_ref().and_then(|i| i.namespace()) {
                    ns.clone_into(v);
                }
            }
            _ => {}
        }
    }
}

/// Istio TCP metrics of one TCP listener, per backend. Looked up per connection (not per
/// byte): a TCP connection lives long enough that the lookup does not matter.
#[derive(Debug)]
pub struct TcpStats {
    registry: Registry,
    labels: Vec<Vec<(&'static str, String)>>,
}

impl TcpStats {
    /// The counter `name` for backend `backend` with response flag `flags`, for a
    /// connection from `peer` (a SPIFFE id on a mesh listener).
    pub fn counter(
        &self,
        name: &'static str,
        backend: usize,
        flags: &'static str,
        peer: Option<&str>,
    ) -> Counter {
        let Some(base) = self.labels.get(backend) else {
            return Counter::noop();
        };
        let mut labels = base.clone();
        if let Some(peer) = peer {
            mesh_source(&mut labels, peer);
        }
        labels.push((names::label::REQUEST_PROTOCOL, "tcp".to_owned()));
        labels.push((names::label::RESPONSE_FLAGS, flags.to_owned()));
        self.registry.counter(name, &labels)
    }
}

/// Outcome combinations cached per route at most (codes x flags x protocols seen).
const MAX_CACHED_OUTCOMES: usize = 256;

impl RequestStats {
    fn new(
        registry: &Registry,
        id: &Identity,
        listener: &str,
        route: &str,
        destination: &str,
    ) -> Self {
        Self {
            registry: registry.clone(),
            labels: istio_labels(id, listener, route, destination),
            by_code: RwLock::new(Vec::new()),
        }
    }

    /// Counts one finished request: its status (0: none sent), response flag (`-`: none),
    /// protocol (`http`/`grpc`), gRPC status, duration and body sizes.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        peer: Option<&Arc<str>>,
        status: u16,
        flags: &'static str,
        protocol: &'static str,
        grpc: Option<u32>,
        elapsed: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let grpc = grpc.unwrap_or(u32::MAX);
        let observe = |e: &CodeStats| {
            e.count.increment(1);
            e.duration.record(ms);
            e.request_bytes.record(request_bytes as f64);
            e.response_bytes.record(response_bytes as f64);
        };
        {
            let cache = self
                .by_code
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(entry) = cache.iter().find(|e| {
                e.status == status
                    && e.flags == flags
                    && e.protocol == protocol
                    && e.grpc == grpc
                    && e.peer.as_deref() == peer.map(|p| &**p)
            }) {
                observe(entry);
                return;
            }
        }
        let mut labels = self.labels.clone();
        if let Some(peer) = peer {
            mesh_source(&mut labels, peer);
        }
        labels.push((names::label::REQUEST_PROTOCOL, protocol.to_owned()));
        labels.push((names::label::RESPONSE_CODE, status.to_string()));
        labels.push((
            names::label::GRPC_RESPONSE_STATUS,
            if grpc == u32::MAX {
                String::new()
            } else {
                grpc.to_string()
            },
        ));
        labels.push((names::label::RESPONSE_FLAGS, flags.to_owned()));
        let entry = CodeStats {
            peer: peer.cloned(),
            status,
            flags,
            protocol,
            grpc,
            count: self.registry.counter(names::REQUESTS_TOTAL, &labels),
            duration: self.registry.histogram(names::REQUEST_DURATION_MS, &labels),
            request_bytes: self.registry.histogram(names::REQUEST_BYTES, &labels),
            response_bytes: self.registry.histogram(names::RESPONSE_BYTES, &labels),
        };
        observe(&entry);
        let mut cache = self
            .by_code
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: a client sending odd gRPC statuses cannot grow it without limit (the
        // registry dedups the series; only the cache entry is skipped).
        if cache.len() < MAX_CACHED_OUTCOMES {
            cache.push(entry);
        }
    }
}

#[derive(Debug)]
struct CodeStats {
    peer: Option<Arc<str>>,
    status: u16,
    flags: &'static str,
    protocol: &'static str,
    grpc: u32,
    count: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}
