//! Clusters at run time: endpoints (resolved, weighted), their load, their pools, and the
//! pick of one endpoint per request.
//!
//! A [`Cluster`] is built from a snapshot's cluster settings. When a new snapshot keeps a
//! cluster unchanged, the running cluster is reused as is; when it changes, endpoints
//! with the same address keep their connection pool, latency estimate and health. DNS
//! clusters re-resolve in a background task that ends when the cluster is dropped.
//!
//! Health: each endpoint carries an [`outlier::EndpointHealth`]. [`Cluster::record`]
//! feeds it every attempt's outcome and ejects failing endpoints (outlier detection);
//! a task per cluster runs the detector's interval, and another the active health
//! checks ([`health`]). [`Cluster::pick`] balances over the endpoints that are neither
//! ejected nor unhealthy, or over all of them in panic mode. While every endpoint is
//! usable (the common case) `pick` reads one atomic more than it would without health.

pub mod balance;
pub mod client;
pub mod h1;
pub mod head;
pub mod health;
pub mod outlier;
pub mod service;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weft_telemetry::{Registry, names};

use self::balance::PeakEwma;
use self::client::{ConnectCounters, HttpClient};
use self::outlier::{EjectReason, Ejection, Eligibility, EndpointHealth, HealthView, Outcome};
use crate::snapshot::{self, Discovery, LbPolicy};
use crate::tls::MeshConnector;

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
    /// Passive (outlier) and active health.
    pub health: EndpointHealth,
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
    /// Endpoints of the current set that are ejected or actively unhealthy, as last
    /// counted; `pick` takes its fast path while this is 0. Recounted (under
    /// `health_lock`) after every change, so it is never 0 while one is unusable; an
    /// ejection that has just expired keeps it above 0 until `pick` or the interval
    /// tidies up.
    unavailable: AtomicUsize,
    /// Serializes ejections, unejections and recounts: the share of ejected endpoints
    /// must be judged on a settled count.
    health_lock: Mutex<()>,
    health_stats: HealthStats,
    /// Last successful resolution per DNS name, kept when a refresh fails.
    resolved: Mutex<HashMap<String, Vec<IpAddr>>>,
    /// Background tasks (DNS refresh, outlier interval, health checks), aborted on drop.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Circuit-breaker limits and counts.
    pub breaker: Arc<crate::resilience::breaker::Breaker>,
    /// Retry budget and retry counters.
    pub retry: crate::resilience::retry::RetryState,
    /// Mesh TLS towards the endpoints (`None`: plain TCP).
    pub tls: Option<Arc<MeshConnector>>,
}

fn same_tls(a: Option<&Arc<MeshConnector>>, b: Option<&Arc<MeshConnector>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Metric handles for endpoint health. Counters for what the cluster does not configure
/// are no-ops; the gauges always exist, so that a reload turning detection off sets
/// them to 0 rather than leaving the last value behind.
#[derive(Debug)]
struct HealthStats {
    ejected_5xx: Counter,
    ejected_gateway: Counter,
    ejected_success_rate: Counter,
    overflow: Counter,
    ejected: Gauge,
    panic: Counter,
    checks_passed: Counter,
    checks_failed: Counter,
    unhealthy: Gauge,
}

impl HealthStats {
    fn new(config: &snapshot::Cluster, registry: &Registry) -> Self {
        let cluster = || (names::label::CLUSTER, config.name.to_string());
        let with = |k: &'static str, v: &str| [cluster(), (k, v.to_owned())];
        let outlier = config.outlier.is_some();
        let checks = config.health_check.is_some();
        let counter = |on: bool, name, labels: &[(&'static str, String)]| {
            if on {
                registry.counter(name, labels)
            } else {
                Counter::noop()
            }
        };
        let gauge = |name| registry.gauge(name, &[cluster()]);
        let reason = |r: EjectReason| with(names::label::REASON, r.as_str());
        Self {
            ejected_5xx: counter(
                outlier,
                names::OUTLIER_EJECTIONS_TOTAL,
                &reason(EjectReason::Consecutive5xx),
            ),
            ejected_gateway: counter(
                outlier,
                names::OUTLIER_EJECTIONS_TOTAL,
                &reason(EjectReason::ConsecutiveGatewayFailure),
            ),
            ejected_success_rate: counter(
                outlier,
                names::OUTLIER_EJECTIONS_TOTAL,
                &reason(EjectReason::SuccessRate),
            ),
            overflow: counter(
                outlier,
                names::OUTLIER_EJECTIONS_OVERFLOW_TOTAL,
                &[cluster()],
            ),
            ejected: gauge(names::ENDPOINTS_EJECTED),
            panic: counter(outlier || checks, names::LB_PANIC_TOTAL, &[cluster()]),
            checks_passed: counter(
                checks,
                names::HEALTH_CHECKS_TOTAL,
                &with(names::label::RESULT, "success"),
            ),
            checks_failed: counter(
                checks,
                names::HEALTH_CHECKS_TOTAL,
                &with(names::label::RESULT, "failure"),
            ),
            unhealthy: gauge(names::ENDPOINTS_UNHEALTHY),
        }
    }

    fn ejections(&self, reason: EjectReason) -> &Counter {
        match reason {
            EjectReason::Consecutive5xx => &self.ejected_5xx,
            EjectReason::ConsecutiveGatewayFailure => &self.ejected_gateway,
            EjectReason::SuccessRate => &self.ejected_success_rate,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
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
        Self::build_with_tls(config, prev, registry, None).await
    }

    /// [`Cluster::build`] for a cluster whose connections use mesh TLS through `tls`.
    pub async fn build_with_tls(
        config: &snapshot::Cluster,
        prev: Option<&Arc<Cluster>>,
        registry: &Registry,
        tls: Option<Arc<MeshConnector>>,
    ) -> Arc<Cluster> {
        if let Some(prev) = prev
            && prev.config == *config
            && same_tls(prev.tls.as_ref(), tls.as_ref())
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
            unavailable: AtomicUsize::new(0),
            health_lock: Mutex::new(()),
            health_stats: HealthStats::new(config, registry),
            resolved: Mutex::new(prev.map(|p| p.resolved_snapshot()).unwrap_or_default()),
            tasks: Mutex::new(Vec::new()),
            // Unchanged limits keep their counts: pooled connections and responses in
            // flight still hold permits of this breaker.
            breaker: prev
                .filter(|p| p.config.limits == config.limits)
                .map_or_else(|| service::breaker(config, registry), |p| p.breaker.clone()),
            retry: service::retry_state(config, registry),
            tls,
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
            cluster.recount();
        }
        let mut tasks = Vec::new();
        let weak = || Arc::downgrade(&cluster);
        if config.discovery != Discovery::Static {
            tasks.push(tokio::spawn(dns_loop(weak(), config.dns_refresh)));
        }
        if let Some(outlier) = &config.outlier {
            tasks.push(tokio::spawn(outlier_loop(weak(), outlier.interval)));
        }
        if let Some(check) = &config.health_check {
            let host = if check.host.is_empty() {
                config.name.to_string()
            } else {
                check.host.clone()
            };
            tasks.push(tokio::spawn(health::run(weak(), check.clone(), host)));
        }
        *cluster.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
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
    /// (pools, estimates, health) with the same address from `reuse` or the current set.
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
                        && same_tls(e.client.tls(), self.tls.as_ref())
                        && e.client.protocol() == self.config.protocol
                        && e.connect_timeout == self.config.connect_timeout
                        && e.client.idle_timeout() == self.config.idle_timeout)
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
                            self.config.idle_timeout,
                            self.counters.clone(),
                            self.tls.clone(),
                        ),
                        health: EndpointHealth::new(),
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
        // Reused endpoints bring their ejections and health-check verdicts along.
        self.recount();
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

    /// Picks an endpoint; `hash` is the request's key for ring hash. Only endpoints
    /// neither ejected nor actively unhealthy are picked, unless too few are left (panic
    /// mode: any endpoint). Among those, endpoints whose address is in `avoid` (tried
    /// already by this request) are picked only when there is no other.
    pub fn pick(&self, hash: Option<u64>, avoid: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let set = self.set.load();
        if !avoid.is_empty() || self.unavailable.load(Ordering::Relaxed) != 0 {
            return self.pick_among(&set, hash, avoid);
        }
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

    /// `pick` when some endpoint is unusable or some are to be avoided: the same
    /// policies over the candidates. No allocation: the candidate test is cheap, so it
    /// is evaluated again rather than collected.
    fn pick_among(
        &self,
        set: &EndpointSet,
        hash: Option<u64>,
        avoid: &[SocketAddr],
    ) -> Option<Arc<Endpoint>> {
        let eps = &set.endpoints;
        if eps.is_empty() {
            return None;
        }
        let now = Instant::now();
        self.expire_ejections(set, now);
        let available = eps.iter().filter(|(e, _)| self.usable(e, now)).count();
        let mode = outlier::eligibility(available, eps.len(), self.config.panic_threshold);
        if mode == Eligibility::Panic {
            self.health_stats.panic.increment(1);
        }
        let eligible = |e: &Endpoint| mode != Eligibility::Available || self.usable(e, now);
        let fresh_exists = eps
            .iter()
            .any(|(e, _)| eligible(e) && !avoid.contains(&e.addr));
        let candidate = |e: &Endpoint| eligible(e) && !(fresh_exists && avoid.contains(&e.addr));
        let count = eps.iter().filter(|(e, _)| candidate(e)).count();
        let nth = |n: usize| {
            eps.iter()
                .enumerate()
                .filter(|(_, (e, _))| candidate(e))
                .nth(n)
                .map(|(i, _)| i)
        };
        let i = match (&self.config.lb, hash) {
            _ if count <= 1 => nth(0),
            (LbPolicy::P2cPeakEwma, _) => {
                let (a, b) = balance::two_random(count);
                let (a, b) = (nth(a)?, nth(b)?);
                Some(balance::p2c(
                    a,
                    b,
                    |i| eps[i].0.load.cost(now),
                    |i| eps[i].1,
                ))
            }
            (LbPolicy::RoundRobin, _) => {
                // The next candidate in schedule order from where the schedule is.
                let n = self.rr.fetch_add(1, Ordering::Relaxed);
                let len = set.schedule.len();
                (0..len)
                    .map(|k| set.schedule[(n + k) % len] as usize)
                    .find(|i| eps.get(*i).is_some_and(|(e, _)| candidate(e)))
                    .or_else(|| nth(0))
            }
            (LbPolicy::RingHash { .. }, Some(h)) if !set.ring.is_empty() => {
                // The first candidate's point at or after the key, clockwise, so keys of
                // a usable endpoint stay where they were.
                let start = set.ring.partition_point(|(p, _)| *p < h);
                let len = set.ring.len();
                (0..len)
                    .map(|k| set.ring[(start + k) % len].1 as usize)
                    .find(|i| eps.get(*i).is_some_and(|(e, _)| candidate(e)))
                    .or_else(|| nth(0))
            }
            (LbPolicy::RingHash { .. } | LbPolicy::Random, _) => nth(fastrand::usize(0..count)),
        }?;
        eps.get(i).map(|(e, _)| e.clone())
    }

    /// Whether `endpoint` may take traffic now (outside panic mode): not ejected (when
    /// this cluster detects outliers) and not failing its health checks (when it checks).
    fn usable(&self, endpoint: &Endpoint, now: Instant) -> bool {
        (self.config.outlier.is_none() || !endpoint.health.is_ejected(now))
            && (self.config.health_check.is_none() || endpoint.health.active_healthy())
    }

    /// Returns endpoints whose ejection time has passed to service (between interval
    /// ticks, so a short ejection does not last until the next tick).
    fn expire_ejections(&self, set: &EndpointSet, now: Instant) {
        if self.config.outlier.is_none()
            || !set
                .endpoints
                .iter()
                .any(|(e, _)| e.health.ejection_expired(now))
        {
            return;
        }
        let _guard = self
            .health_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (e, _) in &set.endpoints {
            if e.health.uneject_if_expired(now) {
                tracing::info!(cluster = %self.config.name, endpoint = %e.addr, "endpoint returned to service");
            }
        }
        self.recount_locked(now);
    }

    /// Feeds one attempt's outcome on `endpoint` to outlier detection, ejecting it when
    /// a consecutive-failure threshold is reached and the cluster's
    /// `max_ejection_percent` allows. Cheap: a few relaxed atomics unless it ejects.
    pub fn record(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some(config) = &self.config.outlier else {
            return;
        };
        let Some(reason) = endpoint.health.record(outcome, config) else {
            return;
        };
        let _guard = self
            .health_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let set = self.set.load();
        // An endpoint removed from the set meanwhile (reload, DNS) is not judged, as
        // in Envoy.
        if !set
            .endpoints
            .iter()
            .any(|(e, _)| std::ptr::eq(&**e, endpoint))
        {
            return;
        }
        let now = Instant::now();
        let healths = set.endpoints.iter().map(|(e, _)| &e.health);
        match outlier::eject(healths, &endpoint.health, reason, now, config) {
            Ejection::Ejected { until } => {
                self.health_stats.ejections(reason).increment(1);
                tracing::warn!(
                    cluster = %self.config.name,
                    endpoint = %endpoint.addr,
                    reason = reason.as_str(),
                    for_ms = until.saturating_duration_since(now).as_millis() as u64,
                    "endpoint ejected"
                );
                self.recount_locked(now);
            }
            Ejection::Overflow => {
                self.health_stats.overflow.increment(1);
                tracing::debug!(cluster = %self.config.name, endpoint = %endpoint.addr, reason = reason.as_str(), "ejection skipped: max_ejection_percent reached");
            }
            Ejection::AlreadyEjected => {}
        }
    }

    /// Applies one active health-check result for `endpoint` (from [`health::run`]).
    fn record_check(&self, endpoint: &Endpoint, passed: bool) {
        let Some(check) = &self.config.health_check else {
            return;
        };
        if passed {
            self.health_stats.checks_passed.increment(1);
        } else {
            self.health_stats.checks_failed.increment(1);
        }
        if let Some(healthy) = endpoint.health.record_check(passed, check) {
            if healthy {
                tracing::info!(cluster = %self.config.name, endpoint = %endpoint.addr, "endpoint passed its health checks; healthy again");
            } else {
                tracing::warn!(cluster = %self.config.name, endpoint = %endpoint.addr, "endpoint failed its health checks; marked unhealthy");
            }
            self.recount();
        }
    }

    /// One outlier-detection interval: expired ejections end, success-rate outliers are
    /// ejected, a new interval starts.
    fn outlier_tick(&self) {
        let Some(config) = &self.config.outlier else {
            return;
        };
        let _guard = self
            .health_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let set = self.set.load();
        let now = Instant::now();
        let report = outlier::tick(set.endpoints.iter().map(|(e, _)| &e.health), now, config);
        let stats = &self.health_stats;
        stats.ejected_success_rate.increment(report.ejected as u64);
        stats.overflow.increment(report.overflow as u64);
        if report.ejected > 0 {
            tracing::warn!(cluster = %self.config.name, ejected = report.ejected, "endpoints ejected for their success rate");
        }
        self.recount_locked(now);
    }

    /// Counts the unusable endpoints again (and sets the gauges).
    fn recount(&self) {
        let _guard = self
            .health_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.recount_locked(Instant::now());
    }

    /// [`Self::recount`] for a caller holding `health_lock`.
    fn recount_locked(&self, now: Instant) {
        let set = self.set.load();
        let (mut ejected, mut unhealthy, mut unusable) = (0, 0, 0);
        for (e, _) in &set.endpoints {
            let out = self.config.outlier.is_some() && e.health.is_ejected(now);
            let sick = self.config.health_check.is_some() && !e.health.active_healthy();
            ejected += usize::from(out);
            unhealthy += usize::from(sick);
            unusable += usize::from(out || sick);
        }
        self.unavailable.store(unusable, Ordering::Relaxed);
        self.health_stats.ejected.set(ejected as f64);
        self.health_stats.unhealthy.set(unhealthy as f64);
    }

    /// `endpoint`'s health as this cluster sees it at `now` (what it does not detect or
    /// check shows as not ejected and unchecked).
    pub fn health_view(&self, endpoint: &Endpoint, now: Instant) -> HealthView {
        let mut view = endpoint.health.view(now);
        if self.config.outlier.is_none() {
            view.ejected = false;
            view.ejection_remaining = Duration::ZERO;
        }
        if self.config.health_check.is_none() {
            view.active = outlier::ActiveHealth::Unchecked;
        }
        view
    }
}

async fn dns_loop(cluster: Weak<Cluster>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        c.refresh(None).await;
    }
}

async fn outlier_loop(cluster: Weak<Cluster>, every: Duration) {
    // A zero interval would spin; Envoy's default is 10 s.
    let every = every.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        c.outlier_tick();
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
            tls: None,
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
        let picks: Vec<u16> = (0..6)
            .map(|_| c.pick(None, &[]).unwrap().addr.port())
            .collect();
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
        assert!(c.pick(None, &[]).is_none());
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
            assert_ne!(c.pick(None, &[]).unwrap().addr.port(), 1002);
        }
    }

    const POLICIES: [LbPolicy; 4] = [
        LbPolicy::P2cPeakEwma,
        LbPolicy::RoundRobin,
        LbPolicy::RingHash { min_ring_size: 64 },
        LbPolicy::Random,
    ];

    const THREE: [(&str, u16, u32); 3] = [
        ("127.0.0.1", 1001, 1),
        ("127.0.0.1", 1002, 1),
        ("127.0.0.1", 1003, 1),
    ];

    /// Consecutive-failure detection (5), 30 s ejections, room to eject everything, and
    /// an interval long enough that only `pick` returns endpoints to service.
    fn detecting(lb: LbPolicy, hosts: &[(&str, u16, u32)]) -> snapshot::Cluster {
        snapshot::Cluster {
            outlier: Some(snapshot::policy::OutlierDetection {
                interval: Duration::from_secs(3600),
                max_ejection_percent: 100,
                success_rate: None,
                ..Default::default()
            }),
            ..config(lb, hosts)
        }
    }

    fn fail(c: &Cluster, port: u16) {
        let set = c.endpoints();
        let (e, _) = set
            .endpoints
            .iter()
            .find(|(e, _)| e.addr.port() == port)
            .unwrap();
        for _ in 0..5 {
            c.record(e, Outcome::Status(503));
        }
    }

    /// Ports picked in 300 tries (with a random hash key each).
    fn picks(c: &Cluster, avoid: &[SocketAddr]) -> Vec<u16> {
        let mut ports: Vec<u16> = (0..300)
            .filter_map(|_| {
                c.pick(Some(fastrand::u64(..)), avoid)
                    .map(|e| e.addr.port())
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_endpoints_are_skipped_by_every_policy_until_they_return() {
        for lb in POLICIES {
            let reg = Registry::new();
            let c = Cluster::build(&detecting(lb.clone(), &THREE), None, &reg).await;
            assert_eq!(picks(&c, &[]), [1001, 1002, 1003], "{lb:?}");
            fail(&c, 1002);
            assert_eq!(picks(&c, &[]), [1001, 1003], "{lb:?}");
            let text = reg.render();
            for line in [
                r#"weft_outlier_ejections_total{cluster="c",reason="consecutive_gateway_failure"} 1"#,
                r#"weft_endpoints_ejected{cluster="c"} 1"#,
            ] {
                assert!(text.contains(line), "{line}:\n{text}");
            }
            let e = c.endpoints().endpoints[1].0.clone();
            assert!(c.health_view(&e, Instant::now()).ejected);
            // Back after the base ejection time, without waiting for an interval.
            tokio::time::advance(Duration::from_secs(30)).await;
            assert_eq!(picks(&c, &[]), [1001, 1002, 1003], "{lb:?}");
            assert!(
                reg.render()
                    .contains(r#"weft_endpoints_ejected{cluster="c"} 0"#)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ring_hash_keys_of_usable_endpoints_stay_put() {
        let reg = Registry::new();
        let c = Cluster::build(
            &detecting(LbPolicy::RingHash { min_ring_size: 64 }, &THREE),
            None,
            &reg,
        )
        .await;
        let keys: Vec<u64> = (0..200u32)
            .map(|k| balance::hash_key(&k.to_be_bytes()))
            .collect();
        let port = |k| c.pick(Some(k), &[]).unwrap().addr.port();
        let before: Vec<u16> = keys.iter().map(|k| port(*k)).collect();
        fail(&c, 1002);
        for (k, was) in keys.iter().zip(before) {
            let now = port(*k);
            assert_ne!(now, 1002);
            if was != 1002 {
                assert_eq!(now, was);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_already_tried_are_avoided_while_others_remain() {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        for lb in POLICIES {
            let reg = Registry::new();
            let c = Cluster::build(&detecting(lb.clone(), &THREE), None, &reg).await;
            assert_eq!(picks(&c, &[addr(1001), addr(1002)]), [1003], "{lb:?}");
            // Every endpoint tried: any of them.
            let all = [addr(1001), addr(1002), addr(1003)];
            assert_eq!(picks(&c, &all), [1001, 1002, 1003], "{lb:?}");
            // Ejected ones are not a way out of the avoided ones.
            fail(&c, 1003);
            assert_eq!(picks(&c, &[addr(1001)]), [1002], "{lb:?}");
            assert_eq!(picks(&c, &all[..2]), [1001, 1002], "{lb:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn too_few_usable_endpoints_is_panic_mode() {
        let two = &THREE[..2];
        // (panic threshold, ports failed, ports picked)
        let cases: &[(u32, &[u16], &[u16])] = &[
            (50, &[1001], &[1002]),
            (60, &[1001], &[1001, 1002]),
            (0, &[1001], &[1002]),
            (50, &[1001, 1002], &[1001, 1002]),
            // Panic mode off: nothing to pick, the request fails fast.
            (0, &[1001, 1002], &[]),
        ];
        for (threshold, failed, want) in cases {
            let reg = Registry::new();
            let cfg = snapshot::Cluster {
                panic_threshold: *threshold,
                tls: None,
                ..detecting(LbPolicy::RoundRobin, two)
            };
            let c = Cluster::build(&cfg, None, &reg).await;
            for port in *failed {
                fail(&c, *port);
            }
            assert_eq!(
                picks(&c, &[]),
                *want,
                "{threshold}% with {failed:?} ejected"
            );
            let panicked = want.len() == 2 && *threshold > 0;
            assert_eq!(
                reg.render()
                    .contains(r#"weft_lb_panic_total{cluster="c"} 300"#),
                panicked,
                "{threshold}% with {failed:?} ejected"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_is_counted_as_overflow() {
        let reg = Registry::new();
        let cfg = snapshot::Cluster {
            outlier: Some(snapshot::policy::OutlierDetection {
                max_ejection_percent: 10,
                ..detecting(LbPolicy::RoundRobin, &THREE).outlier.unwrap()
            }),
            ..detecting(LbPolicy::RoundRobin, &THREE)
        };
        let c = Cluster::build(&cfg, None, &reg).await;
        fail(&c, 1001);
        fail(&c, 1002);
        assert_eq!(picks(&c, &[]), [1002, 1003]);
        let text = reg.render();
        assert!(
            text.contains(r#"weft_outlier_ejections_overflow_total{cluster="c"} 1"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_endpoint_health() {
        let reg = Registry::new();
        let c = Cluster::build(&detecting(LbPolicy::RoundRobin, &THREE[..2]), None, &reg).await;
        fail(&c, 1001);
        let c2 = Cluster::build(&detecting(LbPolicy::RoundRobin, &THREE), Some(&c), &reg).await;
        assert!(!Arc::ptr_eq(&c, &c2));
        assert!(Arc::ptr_eq(
            &c.endpoints().endpoints[0].0,
            &c2.endpoints().endpoints[0].0
        ));
        assert_eq!(picks(&c2, &[]), [1002, 1003]);
    }
}
