//! Resilience settings: a route's `retry_policy`, `max_stream_duration` and per-filter
//! configs of `envoy.filters.http.local_ratelimit` and `envoy.filters.http.fault` (with the
//! route's `rate_limits` actions), and a cluster's `circuit_breakers`,
//! `outlier_detection`, `health_checks`, panic threshold and upstream idle timeout.
//!
//! Envoy's meaning is kept where Weft has the same mechanism. Where it differs, on
//! purpose: a retry budget is read as a rate (`budget_percent` of the requests plus
//! `min_retry_concurrency` retries per second, the Linkerd/Finagle budget) rather than a
//! concurrency cap; `retriable_request_headers` may only list `:method` values, which
//! add non-idempotent methods to the idempotent ones that are always retriable. Anything
//! else Weft cannot honour is rejected by name.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster as PbCluster, circuit_breakers};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck as PbHealthCheck, RoutingPriority, health_check,
};
use envoy_types::pb::envoy::config::route::v3 as pb_route;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, TokenBucket as PbTokenBucket};
use envoy_types::pb::google::protobuf::Any;
use http::Method;

use super::super::policy::{
    Abort, DescriptorSource, Fault, GrpcTimeout, HealthCheck, Limits, OutlierDetection, RateLimit,
    RetryBudget, RetryOn, RetryPolicy, SuccessRate, TokenBucket,
};
use super::names as filters;

/// Envoy's default `max_retries` (retries in flight) when no retry budget is set.
const ENVOY_MAX_RETRIES: u32 = 3;

/// Largest request body a retry policy may hold for replay.
pub(super) const MAX_REPLAY_LIMIT: usize = 16 << 20;
use std::sync::Arc;

use super::{Translator, duration, parse_header_name};

/// Listener-wide filter configs: what a route without its own per-filter config gets.
#[derive(Clone, Debug, Default)]
pub(super) struct FilterDefaults {
    /// The connection manager has a local rate-limit filter.
    pub ratelimit_filter: bool,
    /// The connection manager has a fault filter.
    pub fault_filter: bool,
    /// The filter's own config.
    pub fault: Option<HttpFault>,
    /// The connection manager's JWT providers and named requirements.
    pub jwt: Option<Arc<crate::authn::JwtConfig>>,
    /// The connection manager has a CORS filter.
    pub cors_filter: bool,
}

/// A route's per-filter policies.
#[derive(Debug, Default)]
pub(super) struct RouteFilters {
    /// Local rate limit.
    pub ratelimit: Option<RateLimit>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// The JWT the route requires.
    pub jwt: Option<Arc<crate::authn::Requirement>>,
    /// CORS.
    pub cors: Option<Arc<crate::http::cors::CorsPolicy>>,
}

impl Translator {
    /// A route's retry policy (the route's own, else the virtual host's).
    pub(super) fn retry_policy(
        &mut self,
        p: &pb_route::RetryPolicy,
        buffer_limit: Option<usize>,
        place: &str,
    ) -> Option<RetryPolicy> {
        let retry_on = match RetryOn::parse(&p.retry_on) {
            Ok(r) => r,
            Err(name) => {
                self.problem(
                    format!("{place}.retry_on"),
                    format!("unknown retry condition {name:?}"),
                );
                return None;
            }
        };
        let unsupported = [
            (p.per_try_idle_timeout.is_some(), "per_try_idle_timeout"),
            (p.retry_priority.is_some(), "retry_priority"),
            (
                !p.retry_options_predicates.is_empty(),
                "retry_options_predicates",
            ),
            (
                p.rate_limited_retry_back_off.is_some(),
                "rate_limited_retry_back_off",
            ),
            (!p.retriable_headers.is_empty(), "retriable_headers"),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported yet");
            }
        }
        let mut other_endpoint = false;
        for (i, pred) in p.retry_host_predicate.iter().enumerate() {
            if pred.name == filters::PREVIOUS_HOSTS {
                other_endpoint = true;
            } else {
                self.problem(
                    format!("{place}.retry_host_predicate[{i}]"),
                    format!("only {:?} is supported", filters::PREVIOUS_HOSTS),
                );
            }
        }
        let mut status_codes = Vec::new();
        for (i, code) in p.retriable_status_codes.iter().enumerate() {
            match u16::try_from(*code) {
                Ok(c) if (100..=599).contains(&c) => status_codes.push(c),
                _ => self.problem(
                    format!("{place}.retriable_status_codes[{i}]"),
                    "not an HTTP status",
                ),
            }
        }
        let mut extra_methods = Vec::new();
        for (i, m) in p.retriable_request_headers.iter().enumerate() {
            let mplace = format!("{place}.retriable_request_headers[{i}]");
            use pb_route::header_matcher::HeaderMatchSpecifier as H;
            let exact = match &m.header_match_specifier {
                #[allow(deprecated)]
                Some(H::ExactMatch(e)) => Some(e.as_str()),
                Some(H::StringMatch(s)) => match &s.match_pattern {
                    Some(string_matcher::MatchPattern::Exact(e)) => Some(e.as_str()),
                    _ => None,
                },
                _ => None,
            };
            match (m.name.as_str(), exact, m.invert_match) {
                (":method", Some(e), false) => match Method::from_bytes(e.as_bytes()) {
                    Ok(method) => extra_methods.push(method),
                    Err(_) => self.problem(&mplace, format!("{e:?} is not a method")),
                },
                _ => self.problem(
                    &mplace,
                    "only exact `:method` matchers are supported (they list methods that may be retried)",
                ),
            }
        }
        let defaults = RetryPolicy::default();
        let (backoff_base, backoff_max) = match &p.retry_back_off {
            Some(b) => {
                let base = b
                    .base_interval
                    .as_ref()
                    .map(duration)
                    .unwrap_or(defaults.backoff_base);
                if base.is_zero() {
                    self.problem(
                        format!("{place}.retry_back_off.base_interval"),
                        "must be greater than zero",
                    );
                }
                let max = b.max_interval.as_ref().map(duration).unwrap_or(base * 10);
                if max < base {
                    self.problem(
                        format!("{place}.retry_back_off.max_interval"),
                        "must not be less than base_interval",
                    );
                }
                (base, max)
            }
            None => (defaults.backoff_base, defaults.backoff_max),
        };
        Some(RetryPolicy {
            retry_on,
            status_codes,
            // Envoy's default when the field is absent.
            num_retries: p.num_retries.map(|n| n.value).unwrap_or(1),
            per_try_timeout: p
                .per_try_timeout
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero()),
            backoff_base,
            backoff_max,
            extra_methods,
            max_replay_bytes: match buffer_limit {
                Some(n) if n > MAX_REPLAY_LIMIT => {
                    self.problem(
                        format!("{place} request_body_buffer_limit"),
                        format!("at most {MAX_REPLAY_LIMIT} bytes are held for a retry"),
                    );
                    MAX_REPLAY_LIMIT
                }
                Some(n) => n,
                None => defaults.max_replay_bytes,
            },
            other_endpoint,
        })
    }

    /// `max_stream_duration`: only the gRPC timeout header settings are read.
    pub(super) fn grpc_timeout(
        &mut self,
        m: Option<&pb_route::route_action::MaxStreamDuration>,
        place: &str,
    ) -> GrpcTimeout {
        let Some(m) = m else {
            return GrpcTimeout::default();
        };
        if m.max_stream_duration.is_some() {
            self.problem(
                format!("{place}.max_stream_duration.max_stream_duration"),
                "not supported yet; use timeout",
            );
        }
        GrpcTimeout {
            max: m
                .grpc_timeout_header_max
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero()),
            offset: m
                .grpc_timeout_header_offset
                .as_ref()
                .map(duration)
                .unwrap_or_default(),
        }
    }

    /// A route's per-filter configs: rate limit and fault (each falling back to the
    /// listener's filter config). Other keys are rejected.
    pub(super) fn route_filters(
        &mut self,
        per_filter: &std::collections::HashMap<String, Any>,
        actions: &[pb_route::RateLimit],
        place: &str,
    ) -> RouteFilters {
        let defaults = self.filter_defaults.clone();
        let mut ratelimit = None;
        let mut fault = defaults.fault.clone();
        let mut jwt = None;
        let mut cors = None;
        for (key, any) in per_filter {
            let fplace = format!("{place}.typed_per_filter_config[{key:?}]");
            match key.as_str() {
                filters::LOCAL_RATELIMIT => {
                    if !defaults.ratelimit_filter {
                        self.problem(&fplace, "the listener has no local_ratelimit HTTP filter");
                    }
                    ratelimit = self.unpack::<LocalRateLimit>(any, &fplace);
                }
                filters::FAULT => {
                    if !defaults.fault_filter {
                        self.problem(&fplace, "the listener has no fault HTTP filter");
                    }
                    fault = self.unpack::<HttpFault>(any, &fplace);
                }
                crate::authn::FILTER_NAME => {
                    let Some(config) = &defaults.jwt else {
                        self.problem(&fplace, "the listener has no jwt_authn HTTP filter");
                        continue;
                    };
                    jwt = self
                        .unpack::<envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::PerRouteConfig>(any, &fplace)
                        .and_then(|c| self.jwt_per_route(&c, config, &fplace))
                        .flatten();
                }
                crate::http::cors::FILTER_NAME => {
                    if !defaults.cors_filter {
                        self.problem(&fplace, "the listener has no cors HTTP filter");
                    }
                    cors = self
                        .unpack::<envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy>(any, &fplace)
                        .and_then(|c| self.cors_policy(&c, &fplace))
                        .map(Arc::new);
                }
                _ => self.problem(&fplace, "no such HTTP filter in Weft"),
            }
        }
        let ratelimit = ratelimit.and_then(|r| {
            self.local_ratelimit(
                &r,
                actions,
                &format!("{place}.{}", filters::LOCAL_RATELIMIT),
            )
        });
        let fault = fault.and_then(|f| self.fault(&f, &format!("{place}.{}", filters::FAULT)));
        RouteFilters {
            ratelimit,
            fault,
            jwt,
            cors,
        }
    }

    fn local_ratelimit(
        &mut self,
        r: &LocalRateLimit,
        actions: &[pb_route::RateLimit],
        place: &str,
    ) -> Option<RateLimit> {
        let unsupported = [
            (r.status.is_some(), "status"),
            (
                !r.request_headers_to_add_when_not_enforced.is_empty(),
                "request_headers_to_add_when_not_enforced",
            ),
            (
                !r.response_headers_to_add.is_empty(),
                "response_headers_to_add",
            ),
            (
                r.local_cluster_rate_limit.is_some(),
                "local_cluster_rate_limit",
            ),
            (
                r.local_rate_limit_per_downstream_connection,
                "local_rate_limit_per_downstream_connection",
            ),
            (!r.rate_limits.is_empty(), "rate_limits"),
            (
                r.rate_limited_as_resource_exhausted,
                "rate_limited_as_resource_exhausted",
            ),
            (r.stage != 0, "stage"),
            (r.vh_rate_limits != 0, "vh_rate_limits"),
            (
                r.max_dynamic_descriptors.is_some(),
                "max_dynamic_descriptors",
            ),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported yet");
            }
        }
        // Envoy: an unset `filter_enabled` or `filter_enforced` means 0 %.
        let enabled = self.all_or_nothing(
            r.filter_enabled
                .as_ref()
                .and_then(|f| f.default_value.as_ref()),
            &format!("{place}.filter_enabled"),
        );
        if !enabled {
            return None;
        }
        let enforced = self.all_or_nothing(
            r.filter_enforced
                .as_ref()
                .and_then(|f| f.default_value.as_ref()),
            &format!("{place}.filter_enforced"),
        );
        let bucket = r
            .token_bucket
            .as_ref()
            .and_then(|b| self.token_bucket(b, &format!("{place}.token_bucket")));
        let mut sources = Vec::new();
        for (i, rl) in actions.iter().enumerate() {
            for (j, a) in rl.actions.iter().enumerate() {
                use pb_route::rate_limit::action::ActionSpecifier as A;
                let aplace = format!("{place}.rate_limits[{i}].actions[{j}]");
                match &a.action_specifier {
                    Some(A::RemoteAddress(_)) => sources.push(DescriptorSource::ClientIp),
                    Some(A::RequestHeaders(h)) => {
                        if let Some(header) = self.ok(parse_header_name(&h.header_name), &aplace) {
                            sources.push(DescriptorSource::Header {
                                header,
                                key: h.descriptor_key.clone(),
                            });
                        }
                    }
                    _ => self.problem(
                        aplace,
                        "only remote_address and request_headers actions are supported",
                    ),
                }
            }
        }
        let mut descriptors = Vec::new();
        for (i, d) in r.descriptors.iter().enumerate() {
            let dplace = format!("{place}.descriptors[{i}]");
            let [entry] = d.entries.as_slice() else {
                self.problem(&dplace, "exactly one entry per descriptor is supported");
                continue;
            };
            if d.shadow_mode {
                self.problem(format!("{dplace}.shadow_mode"), "not supported yet");
            }
            let Some(b) = d
                .token_bucket
                .as_ref()
                .and_then(|b| self.token_bucket(b, &format!("{dplace}.token_bucket")))
            else {
                self.problem(&dplace, "a token_bucket is required");
                continue;
            };
            let produced = sources.iter().any(|s| match s {
                DescriptorSource::ClientIp => entry.key == "remote_address",
                DescriptorSource::Header { key, .. } => *key == entry.key,
            });
            if !produced {
                self.problem(
                    format!("{dplace}.entries[0].key"),
                    format!(
                        "no rate_limits action of the route produces {:?}",
                        entry.key
                    ),
                );
            }
            let value = (!entry.value.is_empty()).then(|| entry.value.clone());
            descriptors.push((entry.key.clone(), value, b));
        }
        // Envoy's default also spends the route bucket for a request a descriptor took;
        // Weft takes one bucket per request, so that must be said explicitly.
        if !descriptors.is_empty()
            && r.always_consume_default_token_bucket.map(|b| b.value) != Some(false)
        {
            self.problem(
                format!("{place}.always_consume_default_token_bucket"),
                "must be false with descriptors (a request spends one bucket: its descriptor's, else the route's)",
            );
        }
        if bucket.is_none() && descriptors.is_empty() {
            self.problem(place, "a token_bucket or descriptors are required");
            return None;
        }
        Some(RateLimit {
            bucket,
            sources,
            descriptors,
            enforced,
            headers: r.enable_x_ratelimit_headers != 0,
        })
    }

    fn token_bucket(&mut self, b: &PbTokenBucket, place: &str) -> Option<TokenBucket> {
        if b.tokens_per_fill.is_some_and(|t| t.value == 0) {
            self.problem(format!("{place}.tokens_per_fill"), "must be at least 1");
            return None;
        }
        let fill_interval = b.fill_interval.as_ref().map(duration).unwrap_or_default();
        if fill_interval < Duration::from_millis(50) {
            self.problem(
                format!("{place}.fill_interval"),
                "must be at least 50ms (Envoy's minimum)",
            );
            return None;
        }
        if b.max_tokens == 0 {
            self.problem(format!("{place}.max_tokens"), "must be at least 1");
            return None;
        }
        Some(TokenBucket {
            max_tokens: b.max_tokens,
            tokens_per_fill: b.tokens_per_fill.map(|t| t.value).unwrap_or(1),
            fill_interval,
        })
    }

    fn fault(&mut self, f: &HttpFault, place: &str) -> Option<Fault> {
        let unsupported = [
            (!f.upstream_cluster.is_empty(), "upstream_cluster"),
            (!f.headers.is_empty(), "headers"),
            (!f.downstream_nodes.is_empty(), "downstream_nodes"),
            (f.max_active_faults.is_some(), "max_active_faults"),
            (f.response_rate_limit.is_some(), "response_rate_limit"),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported yet");
            }
        }
        let delay = f.delay.as_ref().and_then(|d| {
            let dplace = format!("{place}.delay");
            let Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) = &d.fault_delay_secifier
            else {
                self.problem(&dplace, "only fixed_delay is supported");
                return None;
            };
            Some((
                duration(fixed),
                self.percent(d.percentage.as_ref(), &dplace)?,
            ))
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let aplace = format!("{place}.abort");
            let what = match a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(s)) if (200..600).contains(&s) => {
                    Abort::Http(s as u16)
                }
                Some(fault_abort::ErrorType::GrpcStatus(s)) if s <= 16 => Abort::Grpc(s as u16),
                _ => {
                    self.problem(
                        &aplace,
                        "http_status (200-599) or grpc_status (0-16) is required",
                    );
                    return None;
                }
            };
            Some((what, self.percent(a.percentage.as_ref(), &aplace)?))
        });
        (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
    }

    /// A fractional percent as 0.0-100.0 (Envoy's default when unset: 100 %... of the
    /// fault filter, whose `percentage` defaults to 0; unset is rejected to be clear).
    fn percent(&mut self, p: Option<&FractionalPercent>, place: &str) -> Option<f64> {
        let Some(p) = p else {
            self.problem(format!("{place}.percentage"), "a percentage is required");
            return None;
        };
        let denominator = match p.denominator {
            0 => 100.0,
            1 => 10_000.0,
            2 => 1_000_000.0,
            _ => {
                self.problem(format!("{place}.percentage.denominator"), "unknown");
                return None;
            }
        };
        Some((f64::from(p.numerator) * 100.0 / denominator).min(100.0))
    }

    /// A runtime fraction that must be 0 % or 100 % (no runtime, no partial rollout).
    fn all_or_nothing(&mut self, p: Option<&FractionalPercent>, place: &str) -> bool {
        let Some(p) = p else { return false };
        match self.percent(Some(p), place) {
            Some(v) if v >= 100.0 => true,
            Some(v) if v <= 0.0 => false,
            Some(_) => {
                self.problem(place, "only 0% or 100% is supported");
                false
            }
            None => false,
        }
    }

    /// A cluster's circuit breakers, outlier detection, health checks, panic threshold
    /// and upstream idle timeout.
    pub(super) fn cluster_policies(
        &mut self,
        c: &PbCluster,
        place: &str,
    ) -> (Limits, Option<OutlierDetection>, Option<HealthCheck>, u32) {
        let limits = c
            .circuit_breakers
            .as_ref()
            .map(|cb| self.limits(cb, &format!("{place}.circuit_breakers")))
            .unwrap_or_default();
        let outlier = c.outlier_detection.as_ref().map(|o| {
            let oplace = format!("{place}.outlier_detection");
            if o.split_external_local_origin_errors {
                self.problem(
                    format!("{oplace}.split_external_local_origin_errors"),
                    "not supported yet",
                );
            }
            if o.failure_percentage_threshold.is_some() {
                self.problem(
                    format!("{oplace}.failure_percentage_threshold"),
                    "not supported yet",
                );
            }
            let d = OutlierDetection::default();
            // Enforcement is all or nothing in Weft; a share in between is refused.
            let partial = [
                ("enforcing_consecutive_5xx", o.enforcing_consecutive_5xx),
                (
                    "enforcing_consecutive_gateway_failure",
                    o.enforcing_consecutive_gateway_failure,
                ),
                ("enforcing_success_rate", o.enforcing_success_rate),
            ];
            for (field, v) in partial {
                if v.is_some_and(|v| v.value != 0 && v.value != 100) {
                    self.problem(format!("{oplace}.{field}"), "only 0 or 100 is supported");
                }
            }
            if o.max_ejection_percent.is_some_and(|v| v.value > 100) {
                self.problem(format!("{oplace}.max_ejection_percent"), "at most 100");
            }
            let enforcing = |v: Option<u32>, default: u32| v.unwrap_or(default) > 0;
            let consecutive_5xx = o.consecutive_5xx.map(|v| v.value).unwrap_or(5);
            let gateway = o.consecutive_gateway_failure.map(|v| v.value).unwrap_or(5);
            let base = o
                .base_ejection_time
                .as_ref()
                .map(duration)
                .unwrap_or(d.base_ejection_time);
            OutlierDetection {
                consecutive_5xx: (enforcing(o.enforcing_consecutive_5xx.map(|v| v.value), 100)
                    && consecutive_5xx > 0)
                    .then_some(consecutive_5xx),
                // Envoy enforces gateway-failure ejection 0 % of the time by default.
                consecutive_gateway_failure: (enforcing(
                    o.enforcing_consecutive_gateway_failure.map(|v| v.value),
                    0,
                ) && gateway > 0)
                    .then_some(gateway),
                interval: o
                    .interval
                    .as_ref()
                    .map(duration)
                    .filter(|d| !d.is_zero())
                    .unwrap_or(d.interval),
                base_ejection_time: base,
                max_ejection_time: o
                    .max_ejection_time
                    .as_ref()
                    .map(duration)
                    .unwrap_or(d.max_ejection_time)
                    .max(base),
                max_ejection_percent: o
                    .max_ejection_percent
                    .map(|v| v.value)
                    .unwrap_or(10)
                    .min(100),
                success_rate: enforcing(o.enforcing_success_rate.map(|v| v.value), 100).then(
                    || SuccessRate {
                        minimum_hosts: o.success_rate_minimum_hosts.map(|v| v.value).unwrap_or(5),
                        request_volume: o
                            .success_rate_request_volume
                            .map(|v| v.value)
                            .unwrap_or(100),
                        stdev_factor: o.success_rate_stdev_factor.map(|v| v.value).unwrap_or(1900),
                    },
                ),
            }
        });
        let health_check = match c.health_checks.as_slice() {
            [] => None,
            [hc] => self.health_check(hc, &format!("{place}.health_checks[0]")),
            _ => {
                self.problem(
                    format!("{place}.health_checks"),
                    "at most one health check is supported",
                );
                None
            }
        };
        let panic = c
            .common_lb_config
            .as_ref()
            .and_then(|l| l.healthy_panic_threshold.as_ref())
            .map(|p| p.value.clamp(0.0, 100.0) as u32)
            .unwrap_or(50);
        (limits, outlier, health_check, panic)
    }

    fn limits(
        &mut self,
        cb: &envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers,
        place: &str,
    ) -> Limits {
        if !cb.per_host_thresholds.is_empty() {
            self.problem(format!("{place}.per_host_thresholds"), "not supported yet");
        }
        let mut limits = Limits::default();
        let mut seen_default = false;
        for (i, t) in cb.thresholds.iter().enumerate() {
            // Weft has one priority; HIGH thresholds would never apply.
            if t.priority != RoutingPriority::Default as i32 {
                self.problem(
                    format!("{place}.thresholds[{i}].priority"),
                    "only DEFAULT priority is supported",
                );
                continue;
            }
            if std::mem::replace(&mut seen_default, true) {
                self.problem(
                    format!("{place}.thresholds[{i}]"),
                    "a second DEFAULT-priority threshold",
                );
            }
            let d = Limits::default();
            limits = Limits {
                max_connections: t
                    .max_connections
                    .map(|v| v.value)
                    .unwrap_or(d.max_connections),
                max_pending_requests: t
                    .max_pending_requests
                    .map(|v| v.value)
                    .unwrap_or(d.max_pending_requests),
                max_requests: t.max_requests.map(|v| v.value).unwrap_or(d.max_requests),
                // Envoy: 3 retries in flight, unless a retry budget governs them.
                max_retries: t.max_retries.map(|v| v.value).unwrap_or(
                    if t.retry_budget.is_some() {
                        u32::MAX
                    } else {
                        ENVOY_MAX_RETRIES
                    },
                ),
                budget: self.budget(t.retry_budget.as_ref(), &format!("{place}.thresholds[{i}]")),
            };
        }
        limits
    }

    fn budget(
        &mut self,
        b: Option<&circuit_breakers::thresholds::RetryBudget>,
        place: &str,
    ) -> RetryBudget {
        let d = RetryBudget::default();
        let Some(b) = b else { return d };
        let percent = b.budget_percent.as_ref().map(|p| p.value).unwrap_or(20.0);
        if !(0.0..=100.0).contains(&percent) {
            self.problem(
                format!("{place}.retry_budget.budget_percent"),
                "must be 0-100",
            );
        }
        RetryBudget {
            percent: percent.clamp(0.0, 100.0) / 100.0,
            min_per_sec: b
                .min_retry_concurrency
                .map(|v| v.value)
                .unwrap_or(d.min_per_sec),
        }
    }

    fn health_check(&mut self, hc: &PbHealthCheck, place: &str) -> Option<HealthCheck> {
        let Some(health_check::HealthChecker::HttpHealthCheck(h)) = &hc.health_checker else {
            self.problem(place, "only http_health_check is supported");
            return None;
        };
        let unsupported = [
            (
                h.send.is_some() || !h.receive.is_empty(),
                "http_health_check.send/receive",
            ),
            (
                !h.request_headers_to_add.is_empty() || !h.request_headers_to_remove.is_empty(),
                "http_health_check.request_headers_to_add/remove",
            ),
            (
                !h.retriable_statuses.is_empty(),
                "http_health_check.retriable_statuses",
            ),
            (
                h.codec_client_type != 0,
                "http_health_check.codec_client_type (HTTP/1.1 only)",
            ),
            (h.method > 1, "http_health_check.method (GET only)"),
            (
                h.service_name_matcher.is_some(),
                "http_health_check.service_name_matcher",
            ),
            (hc.alt_port.is_some(), "alt_port"),
            (hc.no_traffic_interval.is_some(), "no_traffic_interval"),
            (hc.unhealthy_interval.is_some(), "unhealthy_interval"),
            (
                hc.unhealthy_edge_interval.is_some(),
                "unhealthy_edge_interval",
            ),
            (hc.healthy_edge_interval.is_some(), "healthy_edge_interval"),
            (hc.tls_options.is_some(), "tls_options"),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported yet");
            }
        }
        let interval = hc.interval.as_ref().map(duration).unwrap_or_default();
        let timeout = hc.timeout.as_ref().map(duration).unwrap_or_default();
        if interval.is_zero() {
            self.problem(format!("{place}.interval"), "is required");
        }
        if timeout.is_zero() {
            self.problem(format!("{place}.timeout"), "is required");
        }
        if !h.path.starts_with('/') {
            self.problem(
                format!("{place}.http_health_check.path"),
                "must start with /",
            );
        }
        let mut expected = Vec::new();
        for (i, r) in h.expected_statuses.iter().enumerate() {
            if !(100..=600).contains(&r.start) || r.end <= r.start || r.end > 600 {
                self.problem(
                    format!("{place}.http_health_check.expected_statuses[{i}]"),
                    "must be a range within [100, 600)",
                );
                continue;
            }
            expected.push((r.start as u16, r.end as u16));
        }
        if expected.is_empty() {
            expected.push((200, 300));
        }
        Some(HealthCheck {
            path: h.path.clone(),
            host: h.host.clone(),
            interval,
            timeout,
            unhealthy_threshold: hc.unhealthy_threshold.map(|v| v.value).unwrap_or(3).max(1),
            healthy_threshold: hc.healthy_threshold.map(|v| v.value).unwrap_or(2).max(1),
            expected_statuses: expected,
        })
    }
}
