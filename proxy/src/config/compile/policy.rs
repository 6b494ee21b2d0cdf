//! Friendly resilience settings compiled to Envoy fields: `retries` to a `RetryPolicy`,
//! `rate_limit` and `fault` to per-route configs of the `local_ratelimit` and `fault`
//! HTTP filters, and a cluster's `limits`, `outlier_detection`, `health_check`,
//! `panic_threshold` and `idle_timeout`.
//!
//! Defaults are written out, as istiod does: a route without `retries` gets Istio's
//! retry policy and a cluster without `outlier_detection` gets the default detector, so
//! `/config_dump` shows what runs and a control plane pushing the same resources gets
//! the same behaviour.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, OutlierDetection as PbOutlier, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck as PbHealthCheck, RuntimeFractionalPercent, health_check,
};
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    LocalRateLimitDescriptor, rate_limit_descriptor,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, Int64Range, Percent, TokenBucket};
use envoy_types::pb::google::protobuf::{Any, UInt32Value, UInt64Value};

use super::super::friendly::{self, Toggle};
use super::super::locate::YamlPath;
use super::super::resources::pack;
use super::{Compiler, checks, names, proto_duration};
use crate::snapshot::policy::{self, RetryOn};

/// Largest `retries.max_body`: what one request may hold in memory for replay.
const MAX_MAX_BODY: u64 = 16 << 20;

impl Compiler {
    /// A route's retry policy: Istio's default unless `retries` says otherwise; `None`
    /// when retries are off.
    pub(super) fn retry_policy(
        &mut self,
        r: Option<&Toggle<friendly::Retries>>,
        path: &YamlPath,
    ) -> Option<route::RetryPolicy> {
        let given = match r {
            Some(Toggle::Switch(false)) => return None,
            None | Some(Toggle::Switch(true)) => friendly::Retries::default(),
            Some(Toggle::Set(r)) => r.clone(),
        };
        let max = given.max.unwrap_or(2);
        if max == 0 {
            return None;
        }
        let on = match &given.retry_on {
            Some(list) => list.join(","),
            None => policy::ISTIO_RETRY_ON.to_owned(),
        };
        if let Err(name) = RetryOn::parse(&on) {
            self.problem(
                path.key("retry_on"),
                format!("unknown retry condition {name:?}: use 5xx, gateway-error, reset, connect-failure, refused-stream, retriable-4xx, retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted or unavailable"),
            );
        }
        let status_codes = given.status_codes.clone().unwrap_or_else(|| vec![503]);
        for (i, c) in status_codes.iter().enumerate() {
            if !(100..=599).contains(c) {
                self.problem(path.key("status_codes").index(i), "not an HTTP status");
            }
        }
        let mut methods = Vec::new();
        for (i, m) in given.methods.iter().enumerate() {
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                self.problem(
                    path.key("methods").index(i),
                    format!("{m:?} is not a method"),
                );
            }
            methods.push(route::HeaderMatcher {
                name: ":method".to_owned(),
                header_match_specifier: Some(
                    route::header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(
                            m.to_ascii_uppercase(),
                        )),
                        ..Default::default()
                    }),
                ),
                ..Default::default()
            });
        }
        if given.max_body.is_some_and(|b| b > MAX_MAX_BODY) {
            self.problem(
                path.key("max_body"),
                format!("at most {MAX_MAX_BODY} bytes (16MiB) are held for a retry"),
            );
        }
        let base = given.backoff.unwrap_or(policy::DEFAULT_BACKOFF_BASE);
        if base.is_zero() {
            self.problem(path.key("backoff"), "must be greater than zero");
        }
        let max_backoff = given.max_backoff.unwrap_or(base * 10);
        if max_backoff < base {
            self.problem(path.key("max_backoff"), "must not be less than `backoff`");
        }
        Some(route::RetryPolicy {
            retry_on: on,
            num_retries: Some(UInt32Value { value: max }),
            per_try_timeout: given.per_try_timeout.map(proto_duration),
            retry_host_predicate: vec![route::retry_policy::RetryHostPredicate {
                name: names::PREVIOUS_HOSTS.to_owned(),
                config_type: None,
            }],
            host_selection_retry_max_attempts: 5,
            retriable_status_codes: status_codes.into_iter().map(u32::from).collect(),
            retry_back_off: Some(route::retry_policy::RetryBackOff {
                base_interval: Some(proto_duration(base)),
                max_interval: Some(proto_duration(max_backoff)),
            }),
            retriable_request_headers: methods,
            ..Default::default()
        })
    }

    /// The body replay cap of `retries.max_body`, as the route's buffer limit.
    pub(super) fn replay_limit(
        &mut self,
        r: Option<&Toggle<friendly::Retries>>,
    ) -> Option<UInt64Value> {
        match r {
            Some(Toggle::Set(r)) => r.max_body.map(|value| UInt64Value { value }),
            _ => None,
        }
    }

    /// A route's rate limit and fault as per-filter configs, and the rate-limit actions
    /// (descriptor sources) for the route.
    pub(super) fn route_filters(
        &mut self,
        r: &friendly::Route,
        route_name: &str,
        path: &YamlPath,
    ) -> (
        std::collections::HashMap<String, Any>,
        Vec<route::RateLimit>,
    ) {
        let mut per_filter = std::collections::HashMap::new();
        let mut actions = Vec::new();
        if let Some(rl) = &r.rate_limit {
            let p = path.key("rate_limit");
            let per = rl.per.unwrap_or(Duration::from_secs(1));
            if per < Duration::from_millis(50) {
                self.problem(p.key("per"), "must be at least 50ms");
            }
            if rl.requests == 0 {
                self.problem(p.key("requests"), "must be at least 1");
            }
            let burst = rl.burst.unwrap_or(rl.requests);
            if burst == 0 {
                self.problem(p.key("burst"), "must be at least 1");
            }
            let bucket = TokenBucket {
                max_tokens: burst,
                tokens_per_fill: Some(UInt32Value { value: rl.requests }),
                fill_interval: Some(proto_duration(per)),
            };
            let (action, key) = match &rl.key {
                None => (None, ""),
                Some(friendly::RateKey::Named(n)) if n == "client_ip" => (
                    Some(route::rate_limit::action::ActionSpecifier::RemoteAddress(
                        Default::default(),
                    )),
                    "remote_address",
                ),
                Some(friendly::RateKey::Named(other)) => {
                    self.problem(
                        p.key("key"),
                        format!("unknown key {other:?}: use client_ip or {{ header: <name> }}"),
                    );
                    (None, "")
                }
                Some(friendly::RateKey::Header { header }) => {
                    self.check(
                        checks::parse_header_name(header),
                        &p.key("key").key("header"),
                    );
                    (
                        Some(route::rate_limit::action::ActionSpecifier::RequestHeaders(
                            route::rate_limit::action::RequestHeaders {
                                header_name: header.to_ascii_lowercase(),
                                descriptor_key: header.to_ascii_lowercase(),
                                skip_if_absent: true,
                            },
                        )),
                        header.as_str(),
                    )
                }
            };
            let mut descriptors = Vec::new();
            if let Some(a) = action {
                actions.push(route::RateLimit {
                    actions: vec![route::rate_limit::Action {
                        action_specifier: Some(a),
                    }],
                    ..Default::default()
                });
                // An empty value: one bucket per distinct value.
                descriptors.push(LocalRateLimitDescriptor {
                    entries: vec![rate_limit_descriptor::Entry {
                        key: key.to_ascii_lowercase(),
                        value: String::new(),
                    }],
                    token_bucket: Some(bucket),
                    ..Default::default()
                });
            }
            let all = |on: bool| {
                Some(RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        numerator: if on { 100 } else { 0 },
                        denominator: 0,
                    }),
                    runtime_key: String::new(),
                })
            };
            let config = LocalRateLimit {
                stat_prefix: route_name.to_owned(),
                // With a key, requests without it share the route bucket.
                token_bucket: Some(bucket),
                filter_enabled: all(true),
                filter_enforced: all(rl.enforce.unwrap_or(true)),
                descriptors,
                enable_x_ratelimit_headers: 1, // DRAFT_VERSION_03
                // One bucket per request: the descriptor's, else the route's.
                always_consume_default_token_bucket: Some(
                    envoy_types::pb::google::protobuf::BoolValue { value: false },
                ),
                ..Default::default()
            };
            per_filter.insert(names::LOCAL_RATELIMIT.to_owned(), pack(&config));
        }
        if let Some(f) = &r.fault {
            let p = path.key("fault");
            let percent = |cx: &mut Self, v: Option<f64>, at: YamlPath| {
                let v = v.unwrap_or(100.0);
                if !(0.0..=100.0).contains(&v) {
                    cx.problem(at, "a percentage from 0 to 100 is required");
                }
                // Per million, so fractions of a percent survive.
                Some(FractionalPercent {
                    numerator: (v.clamp(0.0, 100.0) * 10_000.0).round() as u32,
                    denominator: 2,
                })
            };
            let delay = f.delay.as_ref().map(|d| FaultDelay {
                percentage: percent(self, d.percent, p.key("delay").key("percent")),
                fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                    proto_duration(d.duration),
                )),
            });
            let abort = f.abort.as_ref().and_then(|a| {
                let ap = p.key("abort");
                let error_type = match (a.status, a.grpc_status) {
                    (Some(s), None) if (200..600).contains(&s) => {
                        fault_abort::ErrorType::HttpStatus(u32::from(s))
                    }
                    (None, Some(g)) if g <= 16 => fault_abort::ErrorType::GrpcStatus(u32::from(g)),
                    _ => {
                        self.problem(
                            ap,
                            "give `status` (200-599) or `grpc_status` (0-16), one of them",
                        );
                        return None;
                    }
                };
                Some(FaultAbort {
                    percentage: percent(self, a.percent, ap.key("percent")),
                    error_type: Some(error_type),
                    ..Default::default()
                })
            });
            if delay.is_none() && abort.is_none() {
                self.problem(p, "give `delay`, `abort` or both");
            } else {
                let config = HttpFault {
                    delay,
                    abort,
                    ..Default::default()
                };
                per_filter.insert(names::FAULT.to_owned(), pack(&config));
            }
        }
        (per_filter, actions)
    }

    /// A cluster's circuit breakers (always written, with the retry budget).
    pub(super) fn circuit_breakers(
        &mut self,
        l: Option<&friendly::Limits>,
        path: &YamlPath,
    ) -> CircuitBreakers {
        let d = policy::Limits::default();
        let l = l.cloned().unwrap_or_default();
        let budget = l.retry_budget.clone().unwrap_or_default();
        let percent = budget.percent.unwrap_or(d.budget.percent * 100.0);
        if !(0.0..=100.0).contains(&percent) {
            self.problem(
                path.key("retry_budget").key("percent"),
                "a percentage from 0 to 100 is required",
            );
        }
        let v = |x: Option<u32>, default: u32| {
            Some(UInt32Value {
                value: x.unwrap_or(default),
            })
        };
        CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_connections: v(l.max_connections, d.max_connections),
                max_pending_requests: v(l.max_pending, d.max_pending_requests),
                max_requests: v(l.max_requests, d.max_requests),
                max_retries: v(l.max_retries, d.max_retries),
                retry_budget: Some(circuit_breakers::thresholds::RetryBudget {
                    budget_percent: Some(Percent { value: percent }),
                    min_retry_concurrency: v(budget.min_per_sec, d.budget.min_per_sec),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A cluster's outlier detection: on with the defaults unless turned off.
    pub(super) fn outlier_detection(
        &mut self,
        o: Option<&Toggle<friendly::OutlierDetection>>,
        path: &YamlPath,
    ) -> Option<PbOutlier> {
        let o = match o {
            Some(Toggle::Switch(false)) => return None,
            None | Some(Toggle::Switch(true)) => friendly::OutlierDetection::default(),
            Some(Toggle::Set(o)) => o.clone(),
        };
        let d = policy::OutlierDetection::default();
        let pct = o.max_ejection_percent.unwrap_or(d.max_ejection_percent);
        if pct > 100 {
            self.problem(path.key("max_ejection_percent"), "at most 100");
        }
        let base = o.base_ejection_time.unwrap_or(d.base_ejection_time);
        if base.is_zero() {
            self.problem(path.key("base_ejection_time"), "must be greater than zero");
        }
        let u = |value: u32| Some(UInt32Value { value });
        let enforce = |n: u32| u(if n > 0 { 100 } else { 0 });
        let c5 = o.consecutive_5xx.unwrap_or(5);
        let gw = o.consecutive_gateway_errors.unwrap_or(5);
        let sr = o.success_rate.unwrap_or(true);
        let rate = d.success_rate.unwrap_or(policy::SuccessRate {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        });
        Some(PbOutlier {
            consecutive_5xx: u(c5),
            enforcing_consecutive_5xx: enforce(c5),
            consecutive_gateway_failure: u(gw),
            enforcing_consecutive_gateway_failure: enforce(gw),
            interval: Some(proto_duration(o.interval.unwrap_or(d.interval))),
            base_ejection_time: Some(proto_duration(base)),
            max_ejection_time: Some(proto_duration(
                o.max_ejection_time.unwrap_or(d.max_ejection_time),
            )),
            max_ejection_percent: u(pct.min(100)),
            enforcing_success_rate: u(if sr { 100 } else { 0 }),
            success_rate_minimum_hosts: u(rate.minimum_hosts),
            success_rate_request_volume: u(rate.request_volume),
            success_rate_stdev_factor: u(rate.stdev_factor),
            ..Default::default()
        })
    }

    /// A cluster's active health check.
    pub(super) fn health_check(
        &mut self,
        h: &friendly::HealthCheck,
        cluster: &str,
        path: &YamlPath,
    ) -> PbHealthCheck {
        if !h.path.starts_with('/') {
            self.problem(path.key("path"), "must start with /");
        }
        let interval = h.interval.unwrap_or(Duration::from_secs(5));
        let timeout = h.timeout.unwrap_or(Duration::from_secs(1));
        if interval.is_zero() {
            self.problem(path.key("interval"), "must be greater than zero");
        }
        if timeout.is_zero() {
            self.problem(path.key("timeout"), "must be greater than zero");
        }
        let mut expected = Vec::new();
        for (i, s) in h.expected_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                self.problem(path.key("expected_statuses").index(i), "not an HTTP status");
            }
            expected.push(Int64Range {
                start: i64::from(*s),
                end: i64::from(*s) + 1,
            });
        }
        PbHealthCheck {
            interval: Some(proto_duration(interval)),
            timeout: Some(proto_duration(timeout)),
            unhealthy_threshold: Some(UInt32Value {
                value: h.unhealthy_threshold.unwrap_or(3).max(1),
            }),
            healthy_threshold: Some(UInt32Value {
                value: h.healthy_threshold.unwrap_or(2).max(1),
            }),
            health_checker: Some(health_check::HealthChecker::HttpHealthCheck(
                health_check::HttpHealthCheck {
                    host: h.host.clone().unwrap_or_else(|| cluster.to_owned()),
                    path: h.path.clone(),
                    expected_statuses: expected,
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    /// The panic threshold as Envoy's `common_lb_config`.
    pub(super) fn common_lb_config(
        &mut self,
        panic: Option<u32>,
        path: &YamlPath,
    ) -> Option<cluster::CommonLbConfig> {
        let p = panic?;
        if p > 100 {
            self.problem(path.clone(), "a percentage from 0 to 100 is required");
        }
        Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent {
                value: f64::from(p.min(100)),
            }),
            ..Default::default()
        })
    }
}

/// The HTTP filters a listener needs besides the router: rate limit and fault, when
/// any of its routes uses them (each enabled per route).
pub(super) fn policy_filters(
    routes: &[route::Route],
) -> Vec<
    envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter,
> {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
    let uses = |key: &str| {
        routes
            .iter()
            .any(|r| r.typed_per_filter_config.contains_key(key))
    };
    let mut out = Vec::new();
    if uses(names::FAULT) {
        out.push(hcm::HttpFilter {
            name: names::FAULT.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &HttpFault::default(),
            ))),
            ..Default::default()
        });
    }
    if uses(names::LOCAL_RATELIMIT) {
        out.push(hcm::HttpFilter {
            name: names::LOCAL_RATELIMIT.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &LocalRateLimit {
                    stat_prefix: "local_rate_limit".to_owned(),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        });
    }
    out
}
