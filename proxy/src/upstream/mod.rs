//! Clusters at run time: endpoints (resolved, weighted), their load, their pools, and the
//! pick of one endpoint per request.
//!
//! A [`Cluster`] is built from a snapshot's cluster settings. When a new snapshot keeps a
//! cluster unchanged, the running cluster is reused as is; when it changes, endpoints
//! with the same address keep their connection pool and latency estimate. DNS clusters
//! re-resolve in a background task that ends when the cluster is dropped.

pub mod balance;
pub mod client;
pub mod h1;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use metrics::Gauge;
use tokio::time::Instant;
use weft_telemetry::{Registry, names};

use self::balance::PeakEwma;
use self::client::{ConnectCounters, HttpClient};
use crate::http::{Body, ProxyError};
use crate::snapshot::{self, Discovery, LbPolicy};

/// How long the first DNS resolution of a new cluster may take before the snapshot is
/// applied anyway (the cluster then answers 503 until names resolve).
pub const DNS_WARMING_TIMEOUT: Duration = Duration::from_secs(5);

/// Latency charged to an endpoint whose request failed, so that the balancer steers
/// away from it (a refused connection is fast, but it is not a good endpoint).
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// One upstream address with its pool and load.
#[derive(Debug)]
pub struct Endpoint {
    /// Where it is.
    pub addr: SocketAddr,
    /// Requests in flight and latency estimate.
    pub load: PeakEwma,
    /// The pooled client.
    pub client: HttpClient,
    connect_timeout: Duration,
}

/// The endpoints a cluster currently balances over.
#[derive(Debug, Default)]
pub struct EndpointSet {
    /// Endpoints with their weights.
    pub endpoints: Vec<(Arc<Endpoint>, u32)>,
    schedule: Vec<u32>,
    ring: Vec<(u64, u32)>,
}

/// A cluster at run time.
#[derive(Debug)]
pub struct Cluster {
    /// The settings it was built from.
    pub config: snapshot::Cluster,
    set: ArcSwap<EndpointSet>,
    rr: AtomicUsize,
    counters: ConnectCounters,
    endpoints_gauge: Gauge,
    /// Last successful resolution per DNS name, kept when a refresh fails.
    resolved: Mutex<HashMap<String, Vec<IpAddr>>>,
    dns_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(task) = self
            .dns_task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Cluster {
    /// Builds the run-time cluster for `config`, reusing `prev` (the running cluster of
    /// the same name, if any) where possible. DNS names are resolved before this returns,
    /// within [`DNS_WARMING_TIMEOUT`].
    pub async fn build(
        config: &snapshot::Cluster,
        prev: Option<&Arc<Cluster>>,
        registry: &Registry,
    ) -> Arc<Cluster> {
        if let Some(prev) = prev
            && prev.config == *config
        {
            return prev.clone();
        }
        let label = [(names::label::CLUSTER, config.name.to_string())];
        let cluster = Arc::new(Cluster {
            config: config.clone(),
            set: ArcSwap::from_pointee(EndpointSet::default()),
            rr: AtomicUsize::new(0),
            counters: ConnectCounters {
                opened: registry.counter(names::UPSTREAM_CONNECTIONS_TOTAL, &label),
                failed: registry.counter(names::UPSTREAM_CONNECT_FAILURES_TOTAL, &label),
                retried: registry.counter(names::UPSTREAM_RETRIES_TOTAL, &label),
            },
            endpoints_gauge: registry.gauge(names::CLUSTER_ENDPOINTS, &label),
            resolved: Mutex::new(prev.map(|p| p.resolved_snapshot()).unwrap_or_default()),
            dns_task: Mutex::new(None),
        });
        let reuse = prev.map(|p| p.endpoints());
        let warmed = tokio::time::timeout(DNS_WARMING_TIMEOUT, cluster.refresh(reuse.as_deref()))
            .await
            .is_ok();
        if !warmed
            && let Some(previous) = reuse
            && cluster.endpoints().endpoints.is_empty()
        {
            // Names are slow to resolve: keep serving from the previous cluster's
            // endpoints rather than none, until the next refresh has an answer.
            cluster.set.store(previous);
        }
        if config.discovery != Discovery::Static {
            let weak = Arc::downgrade(&cluster);
            let task = tokio::spawn(dns_loop(weak, config.dns_refresh));
            *cluster
                .dns_task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        cluster
    }

    fn resolved_snapshot(&self) -> HashMap<String, Vec<IpAddr>> {
        self.resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.set.load_full()
    }

    /// Resolves the configured endpoints and publishes the new set, reusing endpoints
    /// (pools, estimates) with the same address from `reuse` or the current set.
    async fn refresh(&self, reuse: Option<&EndpointSet>) {
        let mut addrs: Vec<(SocketAddr, u32)> = Vec::new();
        for spec in &self.config.endpoints {
            let ips = match spec.host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => self.resolve(&spec.host, spec.port).await,
            };
            for ip in ips {
                let addr = SocketAddr::new(ip, spec.port);
                if !addrs.iter().any(|(a, _)| *a == addr) {
                    addrs.push((addr, spec.weight));
                }
            }
        }
        let current = self.set.load();
        let find = |addr: SocketAddr| {
            let candidates = reuse.into_iter().chain(std::iter::once(&**current));
            candidates
                .flat_map(|s| s.endpoints.iter())
                .find_map(|(e, _)| {
                    (e.addr == addr
                        && e.client.protocol() == self.config.protocol
                        && e.connect_timeout == self.config.connect_timeout)
                        .then(|| e.clone())
                })
        };
        let endpoints: Vec<(Arc<Endpoint>, u32)> = addrs
            .iter()
            .map(|(addr, w)| {
                let ep = find(*addr).unwrap_or_else(|| {
                    Arc::new(Endpoint {
                        addr: *addr,
                        load: PeakEwma::default(),
                        client: HttpClient::new(
                            *addr,
                            self.config.protocol,
                            self.config.connect_timeout,
                            self.counters.clone(),
                        ),
                        connect_timeout: self.config.connect_timeout,
                    })
                });
                (ep, *w)
            })
            .collect();
        let unchanged = current.endpoints.len() == endpoints.len()
            && current
                .endpoints
                .iter()
                .zip(&endpoints)
                .all(|((a, wa), (b, wb))| Arc::ptr_eq(a, b) && wa == wb);
        if unchanged && !current.endpoints.is_empty() {
            return;
        }
        let weights: Vec<u32> = endpoints.iter().map(|(_, w)| *w).collect();
        let schedule = balance::round_robin_schedule(&weights, 4096);
        let ring = match self.config.lb {
            LbPolicy::RingHash { min_ring_size } => {
                let keys: Vec<(String, u32)> = endpoints
                    .iter()
                    .map(|(e, w)| (e.addr.to_string(), *w))
                    .collect();
                balance::build_ring(&keys, min_ring_size)
            }
            _ => Vec::new(),
        };
        self.endpoints_gauge.set(endpoints.len() as f64);
        self.set.store(Arc::new(EndpointSet {
            endpoints,
            schedule,
            ring,
        }));
    }

    async fn resolve(&self, host: &str, port: u16) -> Vec<IpAddr> {
        match tokio::net::lookup_host((host, port)).await {
            Ok(found) => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for sa in found {
                    if !ips.contains(&sa.ip()) {
                        ips.push(sa.ip());
                    }
                }
                if self.config.discovery == Discovery::LogicalDns {
                    ips.truncate(1);
                }
                self.resolved
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(host.to_owned(), ips.clone());
                ips
            }
            Err(e) => {
                let kept = self
                    .resolved
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(host)
                    .cloned();
                tracing::warn!(cluster = %self.config.name, host, error = %e, kept = kept.as_ref().map_or(0, Vec::len), "DNS resolution failed");
                kept.unwrap_or_default()
            }
        }
    }

    /// Picks an endpoint; `hash` is the request's key for ring hash.
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<Endpoint>> {
        let set = self.set.load();
        let eps = &set.endpoints;
        match eps.len() {
            0 => return None,
            1 => return Some(eps[0].0.clone()),
            _ => {}
        }
        let i = match self.config.lb {
            LbPolicy::P2cPeakEwma => {
                let (a, b) = balance::two_random(eps.len());
                let now = Instant::now();
                balance::p2c(a, b, |i| eps[i].0.load.cost(now), |i| eps[i].1)
            }
            LbPolicy::RoundRobin => {
                let n = self.rr.fetch_add(1, Ordering::Relaxed);
                set.schedule
                    .get(n % set.schedule.len().max(1))
                    .map_or(0, |i| *i as usize)
            }
            LbPolicy::RingHash { .. } => {
                match hash.and_then(|h| balance::ring_lookup(&set.ring, h)) {
                    Some(i) => i as usize,
                    None => fastrand::usize(0..eps.len()),
                }
            }
            LbPolicy::Random => fastrand::usize(0..eps.len()),
        };
        eps.get(i).map(|(e, _)| e.clone())
    }

    /// Sends `req` to an endpoint of this cluster, tracking its load. `started` is when
    /// the request arrived (the round trip measured includes the proxy's own few
    /// microseconds, which every endpoint pays alike). The endpoint picked is written to
    /// `upstream` as soon as it is known (so it is there even if the caller times out).
    pub async fn send(
        &self,
        req: Request<Body>,
        hash: Option<u64>,
        started: Instant,
        upstream: &mut Option<SocketAddr>,
    ) -> Result<Response<Body>, ProxyError> {
        let endpoint = self.pick(hash).ok_or(ProxyError::NoHealthyUpstream)?;
        *upstream = Some(endpoint.addr);
        let in_flight = endpoint.load.start();
        let result = endpoint.client.send(req).await;
        let now = Instant::now();
        let rtt = match &result {
            Ok(_) => now.saturating_duration_since(started),
            Err(_) => FAILURE_PENALTY,
        };
        endpoint.load.observe(rtt, now);
        drop(in_flight);
        result
    }
}

async fn dns_loop(cluster: Weak<Cluster>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        c.refresh(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{EndpointSpec, UpstreamProtocol};

    fn config(lb: LbPolicy, hosts: &[(&str, u16, u32)]) -> snapshot::Cluster {
        snapshot::Cluster {
            name: Arc::from("c"),
            discovery: if hosts.iter().all(|h| h.0.parse::<IpAddr>().is_ok()) {
                Discovery::Static
            } else {
                Discovery::StrictDns
            },
            endpoints: hosts
                .iter()
                .map(|(h, p, w)| EndpointSpec {
                    host: (*h).to_owned(),
                    port: *p,
                    weight: *w,
                })
                .collect(),
            lb,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            dns_refresh: Duration::from_secs(5),
            idle_timeout: client::POOL_IDLE_TIMEOUT,
            limits: Default::default(),
            outlier: None,
            health_check: None,
            panic_threshold: 50,
        }
    }

    #[tokio::test]
    async fn round_robin_follows_weights_and_rebuild_keeps_endpoints() {
        let reg = Registry::new();
        let cfg = config(
            LbPolicy::RoundRobin,
            &[("127.0.0.1", 1001, 2), ("127.0.0.1", 1002, 1)],
        );
        let c = Cluster::build(&cfg, None, &reg).await;
        let picks: Vec<u16> = (0..6).map(|_| c.pick(None).unwrap().addr.port()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1001).count(), 4);
        // Same config: the very same cluster.
        let same = Cluster::build(&cfg, Some(&c), &reg).await;
        assert!(Arc::ptr_eq(&c, &same));
        // Changed config: endpoints with unchanged addresses are kept.
        let cfg2 = config(
            LbPolicy::RoundRobin,
            &[("127.0.0.1", 1001, 1), ("127.0.0.1", 1003, 1)],
        );
        let c2 = Cluster::build(&cfg2, Some(&c), &reg).await;
        let old = c.endpoints();
        let new = c2.endpoints();
        assert!(Arc::ptr_eq(&old.endpoints[0].0, &new.endpoints[0].0));
        assert_eq!(new.endpoints[1].0.addr.port(), 1003);
    }

    #[tokio::test]
    async fn dns_names_resolve_and_unknown_names_give_no_endpoints() {
        let reg = Registry::new();
        let c = Cluster::build(
            &config(LbPolicy::P2cPeakEwma, &[("localhost", 1001, 1)]),
            None,
            &reg,
        )
        .await;
        assert!(!c.endpoints().endpoints.is_empty());
        let c = Cluster::build(
            &config(LbPolicy::P2cPeakEwma, &[("no-such-host.invalid", 1, 1)]),
            None,
            &reg,
        )
        .await;
        assert!(c.pick(None).is_none());
    }

    #[tokio::test]
    async fn p2c_avoids_an_endpoint_with_failures() {
        let reg = Registry::new();
        let cfg = config(
            LbPolicy::P2cPeakEwma,
            &[
                ("127.0.0.1", 1001, 1),
                ("127.0.0.1", 1002, 1),
                ("127.0.0.1", 1003, 1),
            ],
        );
        let c = Cluster::build(&cfg, None, &reg).await;
        let set = c.endpoints();
        set.endpoints[1]
            .0
            .load
            .observe(FAILURE_PENALTY, Instant::now());
        for _ in 0..300 {
            assert_ne!(c.pick(None).unwrap().addr.port(), 1002);
        }
    }
}
