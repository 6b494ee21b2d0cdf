//! Passive health (Envoy's outlier detection): endpoints whose answers say they are
//! failing are ejected from balancing for a while; and the rule that says which
//! endpoints the balancer may use, with Envoy's panic mode.
//!
//! Everything here is state and decisions without I/O. The clock is passed in
//! ([`tokio::time::Instant`], so tests run on paused time). [`super::Cluster`] feeds it:
//! [`EndpointHealth::record`] after every attempt, [`eject`] when a counter reaches its
//! threshold, [`tick`] every `interval` from a background task, and [`eligibility`] in
//! `pick`.
//!
//! The semantics are Envoy's (non-split local-origin errors):
//! - a 5xx or a local failure (connect failure, reset, timeout) adds one to the
//!   consecutive-5xx counter; anything else resets it. 502, 503, 504 and local failures
//!   add one to the consecutive-gateway-failure counter; anything else resets it.
//! - a counter reaching its threshold ejects the endpoint, unless the cluster would then
//!   have more than `max_ejection_percent` of its endpoints ejected; one endpoint may
//!   always be ejected. The counter is reset either way, so the next bout of failures
//!   is judged afresh.
//! - the n-th ejection in a row lasts `base_ejection_time * n`, at most
//!   `max(max_ejection_time, base_ejection_time)`; every interval an endpoint spends in
//!   service takes one off `n`.
//! - every interval, among the endpoints with at least `request_volume` requests in the
//!   interval (when there are at least `minimum_hosts` of them), those whose success
//!   rate is below `mean - stdev * stdev_factor / 1000` are ejected.
//!
//! Active health checks ([`super::health`]) only flip [`EndpointHealth`]'s healthy flag;
//! the state lives here so that one place answers "may this endpoint be used".

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::health::{self, CheckState};
use crate::snapshot::policy::{HealthCheck, OutlierDetection};

/// What one attempt on an endpoint came to, as outlier detection counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a 5xx.
    Success,
    /// A response with this status.
    Status(u16),
    /// No response: connect failure, reset or timeout. Counts as a 5xx and as a gateway
    /// failure (Envoy's local-origin errors when they are not split out).
    LocalFailure,
}

impl Outcome {
    fn is_5xx(self) -> bool {
        match self {
            Self::Success => false,
            Self::Status(s) => (500..600).contains(&s),
            Self::LocalFailure => true,
        }
    }

    fn is_gateway_failure(self) -> bool {
        matches!(self, Self::Status(502..=504) | Self::LocalFailure)
    }
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectReason {
    /// `consecutive_5xx` failures in a row.
    Consecutive5xx,
    /// `consecutive_gateway_failure` gateway failures in a row.
    ConsecutiveGatewayFailure,
    /// A success rate far below the cluster's.
    SuccessRate,
}

impl EjectReason {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consecutive5xx => "consecutive_5xx",
            Self::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Self::SuccessRate => "success_rate",
        }
    }
}

/// What came of asking to eject an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ejection {
    /// Ejected until then.
    Ejected {
        /// When it returns to service.
        until: Instant,
    },
    /// Not ejected: too many endpoints of the cluster are ejected already.
    Overflow,
    /// It was ejected already.
    AlreadyEjected,
}

/// An endpoint's active health, as the admin page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveHealth {
    /// No health check configured, or none has finished yet.
    Unchecked,
    /// Passing (or not yet failed enough to be marked unhealthy).
    Healthy,
    /// Marked unhealthy by its health checks.
    Unhealthy,
}

impl ActiveHealth {
    /// `unchecked`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchecked => "unchecked",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// An endpoint's health at one instant, for the admin page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthView {
    /// Ejected by outlier detection now.
    pub ejected: bool,
    /// Time left until it returns (zero when not ejected).
    pub ejection_remaining: Duration,
    /// Ejection backoff (Envoy's): the latest ejection lasted this many times the base
    /// time (at most the maximum); one less per interval in service, and the next
    /// ejection lasts one more.
    pub ejection_multiplier: u32,
    /// Ejections since the endpoint was created.
    pub ejections: u32,
    /// Active health-check state.
    pub active: ActiveHealth,
    /// Consecutive 5xx (and local failures).
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures.
    pub consecutive_gateway_failures: u32,
}

/// One endpoint's passive and active health. Lives in the endpoint, so an endpoint kept
/// across a reload keeps it; shared by every request, hence atomics.
#[derive(Debug)]
pub struct EndpointHealth {
    /// The origin of `ejected_until` (an `Instant` does not fit an atomic).
    base: Instant,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// This interval's requests (high 32 bits) and successes (low 32 bits), one atomic
    /// add per request.
    interval_counts: AtomicU64,
    /// Nanoseconds after `base` when the ejection ends; 0 when in service.
    ejected_until: AtomicU64,
    /// How many times longer than the base time the next ejection lasts, minus one.
    multiplier: AtomicU32,
    ejections: AtomicU32,
    /// Read by every pick; mirrors `check.healthy`.
    active_healthy: AtomicBool,
    check: Mutex<CheckState>,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointHealth {
    /// A healthy endpoint that nothing has been recorded for.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            interval_counts: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            multiplier: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            active_healthy: AtomicBool::new(true),
            check: Mutex::new(CheckState::default()),
        }
    }

    /// Counts one attempt's outcome; returns the reason to eject the endpoint when a
    /// consecutive counter just reached its threshold (exactly then, as Envoy does, so
    /// one bout of failures asks once). Gateway failures are judged first.
    pub fn record(&self, outcome: Outcome, config: &OutlierDetection) -> Option<EjectReason> {
        let failed = outcome.is_5xx();
        if config.success_rate.is_some() {
            self.interval_counts
                .fetch_add((1 << 32) | u64::from(!failed), Relaxed);
        }
        if !failed {
            // Loads first: on the common path nothing is written, so the cache line
            // stays shared between the cores that answer for this endpoint.
            if self.consecutive_5xx.load(Relaxed) != 0 {
                self.consecutive_5xx.store(0, Relaxed);
            }
            if self.consecutive_gateway.load(Relaxed) != 0 {
                self.consecutive_gateway.store(0, Relaxed);
            }
            return None;
        }
        let gateway = if outcome.is_gateway_failure() {
            self.consecutive_gateway.fetch_add(1, Relaxed) + 1
        } else {
            if self.consecutive_gateway.load(Relaxed) != 0 {
                self.consecutive_gateway.store(0, Relaxed);
            }
            0
        };
        let fives = self.consecutive_5xx.fetch_add(1, Relaxed) + 1;
        let reached = |threshold: Option<u32>, n: u32| threshold.is_some_and(|t| t > 0 && n == t);
        if reached(config.consecutive_gateway_failure, gateway) {
            Some(EjectReason::ConsecutiveGatewayFailure)
        } else if reached(config.consecutive_5xx, fives) {
            Some(EjectReason::Consecutive5xx)
        } else {
            None
        }
    }

    /// Whether it is ejected at `now` (an ejection whose time has passed is over, even
    /// before [`Self::uneject_if_expired`] tidies up).
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && self.offset(now) < until
    }

    /// Whether an ejection is recorded whose time has passed.
    pub fn ejection_expired(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && self.offset(now) >= until
    }

    /// Returns the endpoint to service if its ejection time has passed, resetting its
    /// consecutive counters; true if this call did it (concurrent callers: exactly one).
    pub fn uneject_if_expired(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Relaxed);
        if until == 0 || self.offset(now) < until {
            return false;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
        true
    }

    /// Whether active health checks consider it healthy (true until they say otherwise).
    pub fn active_healthy(&self) -> bool {
        self.active_healthy.load(Relaxed)
    }

    /// Applies one health-check result; returns the new healthy value when it changed.
    pub fn record_check(&self, passed: bool, check: &HealthCheck) -> Option<bool> {
        let mut state = self.check.lock().unwrap_or_else(PoisonError::into_inner);
        let before = *state;
        *state = health::next(
            before,
            passed,
            check.unhealthy_threshold,
            check.healthy_threshold,
        );
        self.active_healthy.store(state.healthy, Relaxed);
        (state.healthy != before.healthy).then_some(state.healthy)
    }

    /// The state at `now`, for display.
    pub fn view(&self, now: Instant) -> HealthView {
        let check = *self.check.lock().unwrap_or_else(PoisonError::into_inner);
        let until = self.ejected_until.load(Relaxed);
        let remaining = until.saturating_sub(self.offset(now));
        HealthView {
            ejected: remaining > 0,
            ejection_remaining: Duration::from_nanos(remaining),
            ejection_multiplier: self.multiplier.load(Relaxed),
            ejections: self.ejections.load(Relaxed),
            active: match (check.checked, check.healthy) {
                (false, _) => ActiveHealth::Unchecked,
                (true, true) => ActiveHealth::Healthy,
                (true, false) => ActiveHealth::Unhealthy,
            },
            consecutive_5xx: self.consecutive_5xx.load(Relaxed),
            consecutive_gateway_failures: self.consecutive_gateway.load(Relaxed),
        }
    }

    fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn reset_counter(&self, reason: EjectReason) {
        match reason {
            EjectReason::Consecutive5xx => self.consecutive_5xx.store(0, Relaxed),
            EjectReason::ConsecutiveGatewayFailure => self.consecutive_gateway.store(0, Relaxed),
            EjectReason::SuccessRate => {}
        }
    }

    /// Ejects it from `now` for its backed-off time; returns when it ends.
    fn eject_at(&self, now: Instant, config: &OutlierDetection) -> Instant {
        let base = config.base_ejection_time;
        let max = config.max_ejection_time.max(base);
        let mut multiplier = self.multiplier.load(Relaxed);
        // Envoy's rule: grow the backoff while it is below max + base, so that it stops
        // growing once ejections last the maximum.
        if base.saturating_mul(multiplier) < max.saturating_add(base) {
            multiplier = multiplier.saturating_add(1);
            self.multiplier.store(multiplier, Relaxed);
        }
        self.ejections.fetch_add(1, Relaxed);
        let until = now + base.saturating_mul(multiplier).min(max);
        self.ejected_until.store(self.offset(until).max(1), Relaxed);
        until
    }

    /// Takes this interval's (requests, successes), starting the next interval.
    fn take_interval(&self) -> (u32, u32) {
        let counts = self.interval_counts.swap(0, Relaxed);
        ((counts >> 32) as u32, counts as u32)
    }
}

/// Whether one more endpoint may be ejected when `ejected` of `total` are: if the share
/// after ejecting stays within `max_percent`, and always when none is (Envoy: "will
/// eject at least one host regardless of the value").
pub fn may_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    ejected == 0 || (ejected as u64 + 1) * 100 <= u64::from(max_percent) * total as u64
}

/// Ejects `target` for `reason` if the cluster (`cluster`, every endpoint including
/// `target`) allows it; the counter that asked is reset either way. The caller
/// serializes ejections of one cluster, so the share is judged on a settled count.
pub fn eject<'a>(
    cluster: impl Iterator<Item = &'a EndpointHealth>,
    target: &EndpointHealth,
    reason: EjectReason,
    now: Instant,
    config: &OutlierDetection,
) -> Ejection {
    if target.is_ejected(now) {
        return Ejection::AlreadyEjected;
    }
    target.uneject_if_expired(now);
    let (total, ejected) = cluster.fold((0, 0), |(t, e), h| {
        (t + 1, e + usize::from(h.is_ejected(now)))
    });
    target.reset_counter(reason);
    if !may_eject(ejected, total, config.max_ejection_percent) {
        return Ejection::Overflow;
    }
    Ejection::Ejected {
        until: target.eject_at(now, config),
    }
}

/// What one interval tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Endpoints returned to service.
    pub unejected: usize,
    /// Endpoints ejected for their success rate.
    pub ejected: usize,
    /// Success-rate ejections prevented by `max_ejection_percent`.
    pub overflow: usize,
}

/// The interval's work over a cluster's endpoints: return those whose ejection time
/// passed, shorten the backoff of those in service, eject success-rate outliers, and
/// start a new interval. Allocates (this runs once per interval, not per request).
pub fn tick<'a, I>(cluster: I, now: Instant, config: &OutlierDetection) -> TickReport
where
    I: Iterator<Item = &'a EndpointHealth> + Clone,
{
    let mut report = TickReport::default();
    for h in cluster.clone() {
        if h.uneject_if_expired(now) {
            report.unejected += 1;
        } else if !h.is_ejected(now) {
            let m = h.multiplier.load(Relaxed);
            if m > 0 {
                h.multiplier.store(m - 1, Relaxed);
            }
        }
    }
    // Every endpoint's interval ends now, judged or not.
    let counts: Vec<(&EndpointHealth, u32, u32)> = cluster
        .clone()
        .map(|h| {
            let (total, ok) = h.take_interval();
            (h, total, ok)
        })
        .collect();
    let Some(sr) = config.success_rate else {
        return report;
    };
    let judged: Vec<(&EndpointHealth, f64)> = counts
        .into_iter()
        .filter(|(h, total, _)| *total >= sr.request_volume.max(1) && !h.is_ejected(now))
        .map(|(h, total, ok)| (h, f64::from(ok) / f64::from(total)))
        .collect();
    if judged.is_empty() || judged.len() < sr.minimum_hosts as usize {
        return report;
    }
    let rates: Vec<f64> = judged.iter().map(|(_, r)| *r).collect();
    let threshold = success_rate_threshold(&rates, sr.stdev_factor);
    for (h, rate) in judged {
        if rate < threshold {
            match eject(cluster.clone(), h, EjectReason::SuccessRate, now, config) {
                Ejection::Ejected { .. } => report.ejected += 1,
                Ejection::Overflow => report.overflow += 1,
                Ejection::AlreadyEjected => {}
            }
        }
    }
    report
}

/// The success rate below which an endpoint is an outlier: mean - stdev * factor / 1000
/// (population standard deviation, as Envoy computes it).
pub fn success_rate_threshold(rates: &[f64], stdev_factor: u32) -> f64 {
    if rates.is_empty() {
        return 0.0;
    }
    let n = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let variance = rates.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / n;
    mean - variance.sqrt() * f64::from(stdev_factor) / 1000.0
}

/// Which endpoints the balancer may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eligibility {
    /// Every endpoint is available.
    All,
    /// Only the available ones.
    Available,
    /// Too few are available: ignore health and use all of them (Envoy's panic mode).
    Panic,
}

/// The balancer's rule: with `available` of `total` endpoints neither ejected nor
/// actively unhealthy, use those; but when none is, or their share is below
/// `panic_threshold` percent, use every endpoint, since concentrating all traffic on a
/// few survivors (or answering 503 to everything) is worse than trying the rest.
pub fn eligibility(available: usize, total: usize, panic_threshold: u32) -> Eligibility {
    if available >= total {
        Eligibility::All
    } else if panic_threshold == 0 {
        // Envoy: a threshold of 0 turns panic mode off; with none available, requests
        // fail fast (no healthy upstream).
        Eligibility::Available
    } else if available == 0
        || (available as u64) * 100 < u64::from(panic_threshold.min(100)) * total as u64
    {
        Eligibility::Panic
    } else {
        Eligibility::Available
    }
}

#[cfg(test)]
mod tests;
