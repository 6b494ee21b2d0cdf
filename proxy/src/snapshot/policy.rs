//! Resilience policies as plain data: what [`super::translate`] makes of Envoy's
//! `RetryPolicy`, route timeouts, `CircuitBreakers`, `OutlierDetection`, `HealthCheck`,
//! the `local_ratelimit` filter and the `fault` filter.
//!
//! The layers in [`crate::resilience`] and the endpoint bookkeeping in
//! [`crate::upstream`] read these; nothing here does I/O. The defaults are the ones a
//! route or cluster gets when its configuration says nothing (see each `Default`); the
//! friendly `weft.yaml` writes them out explicitly into the Envoy resources, as istiod
//! does, so `/config_dump` shows what runs.

use std::time::Duration;

use http::{HeaderName, Method};

/// Retry conditions, named as Envoy's `retry_on` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, a reset, a connect failure or a timeout of one try.
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504 (and what `connect-failure`/`reset` cover).
    pub gateway_error: bool,
    /// `reset`: the upstream reset or closed the connection before responding.
    pub reset: bool,
    /// `connect-failure`: the connection could not be made.
    pub connect_failure: bool,
    /// `refused-stream`: HTTP/2 `REFUSED_STREAM` (the upstream did not take it).
    pub refused_stream: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `retriable-status-codes`: the statuses in [`RetryPolicy::status_codes`].
    pub status_codes: bool,
    /// `cancelled` (gRPC status 1).
    pub grpc_cancelled: bool,
    /// `deadline-exceeded` (gRPC status 4).
    pub grpc_deadline_exceeded: bool,
    /// `resource-exhausted` (gRPC status 8).
    pub grpc_resource_exhausted: bool,
    /// `unavailable` (gRPC status 14).
    pub grpc_unavailable: bool,
}

impl RetryOn {
    /// Parses Envoy's comma-separated `retry_on`; an unknown name is returned as the error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut r = Self::default();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "5xx" => r.server_error = true,
                "gateway-error" => r.gateway_error = true,
                "reset" => r.reset = true,
                "connect-failure" => r.connect_failure = true,
                "refused-stream" => r.refused_stream = true,
                "retriable-4xx" => r.retriable_4xx = true,
                "retriable-status-codes" => r.status_codes = true,
                "cancelled" => r.grpc_cancelled = true,
                "deadline-exceeded" => r.grpc_deadline_exceeded = true,
                "resource-exhausted" => r.grpc_resource_exhausted = true,
                "unavailable" => r.grpc_unavailable = true,
                other => return Err(other.to_owned()),
            }
        }
        Ok(r)
    }

    /// Whether nothing is retried.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A route's retry policy (Envoy `RetryPolicy`).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// What is retried.
    pub retry_on: RetryOn,
    /// Statuses retried under `retriable-status-codes`.
    pub status_codes: Vec<u16>,
    /// Retries after the first try (Envoy `num_retries`; attempts = this + 1).
    pub num_retries: u32,
    /// Time allowed for each try (`None`: only the route timeout).
    pub per_try_timeout: Option<Duration>,
    /// Backoff base interval: the n-th retry waits a random time in
    /// `[0, base * 2^(n-1))`, capped by `backoff_max`.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Methods retried besides the idempotent ones (Envoy `retriable_request_headers`
    /// on `:method`). GET, HEAD, OPTIONS, TRACE, PUT and DELETE are always retriable;
    /// other methods only when listed here (connect failures and refused streams are
    /// retried for every method: the upstream never saw the request).
    pub extra_methods: Vec<Method>,
    /// Largest request body kept for replay; a larger body is never retried.
    pub max_replay_bytes: usize,
    /// Try a different endpoint than the ones already tried when one exists (Envoy's
    /// `previous_hosts` retry host predicate).
    pub other_endpoint: bool,
}

/// Istio's default retry conditions.
pub const ISTIO_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// Envoy's default backoff base interval.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Largest body replayed by default.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 * 1024;

impl Default for RetryPolicy {
    /// Istio's default: 2 retries on connect failure, refused stream, gRPC unavailable
    /// and cancelled, and 503; another endpoint for each retry.
    fn default() -> Self {
        Self {
            retry_on: RetryOn {
                connect_failure: true,
                refused_stream: true,
                grpc_unavailable: true,
                grpc_cancelled: true,
                status_codes: true,
                ..RetryOn::default()
            },
            status_codes: vec![503],
            num_retries: 2,
            per_try_timeout: None,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_BASE * 10,
            extra_methods: Vec::new(),
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
            other_endpoint: true,
        }
    }
}

impl RetryPolicy {
    /// Whether a request with `method` may be retried after the upstream may have
    /// processed it.
    pub fn method_retriable(&self, method: &Method) -> bool {
        is_idempotent(method) || self.extra_methods.contains(method)
    }
}

/// RFC 9110 section 9.2.2: methods whose repetition has the same effect as one request.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How `grpc-timeout` request headers are treated on a route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcTimeout {
    /// Cap on a caller's `grpc-timeout` (Envoy `max_stream_duration.grpc_timeout_header_max`;
    /// `None`: capped by the route timeout only).
    pub max: Option<Duration>,
    /// Subtracted from the caller's deadline so the proxy answers before the caller
    /// gives up (`grpc_timeout_header_offset`).
    pub offset: Duration,
}

/// Per-cluster limits (Envoy `CircuitBreakers`, default priority); over a limit the
/// request fails at once with 503 and the overflow is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open to all endpoints together.
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Requests in flight (until their response body ends).
    pub max_requests: u32,
    /// Retries in flight.
    pub max_retries: u32,
    /// The retry budget.
    pub budget: RetryBudget,
}

impl Default for Limits {
    /// Envoy's defaults for connections, pending and active requests (1024 each);
    /// retries in flight 1024 too, the budget being what governs them (Envoy's own
    /// default is 3 without a budget, which Envoy-format clusters get).
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 1024,
            budget: RetryBudget::default(),
        }
    }
}

/// Retries allowed per cluster: at most `percent` of the requests plus `min_per_sec`
/// per second (Envoy `retry_budget`: `budget_percent`, `min_retry_concurrency`, read as
/// a rate, the way Linkerd and Finagle budget retries).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// Retries per request, 0.0 to 1.0.
    pub percent: f64,
    /// Retries always allowed per second.
    pub min_per_sec: u32,
}

impl Eq for RetryBudget {}

impl Default for RetryBudget {
    /// 20 % plus 10 per second.
    fn default() -> Self {
        Self {
            percent: 0.2,
            min_per_sec: 10,
        }
    }
}

/// Passive health: ejecting endpoints that fail (Envoy `OutlierDetection`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx (and local failures) that eject (`None`: off).
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 and local failures that eject (`None`: off).
    pub consecutive_gateway_failure: Option<u32>,
    /// How often success rates are computed and ejections expire.
    pub interval: Duration,
    /// Ejection time for the first ejection; the n-th ejection lasts n times this.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Share of endpoints that may be ejected at once, 0-100 (at least one always may).
    pub max_ejection_percent: u32,
    /// Success-rate ejection (`None`: off).
    pub success_rate: Option<SuccessRate>,
}

/// Success-rate outlier ejection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuccessRate {
    /// Endpoints with enough requests needed before any is judged.
    pub minimum_hosts: u32,
    /// Requests in an interval an endpoint needs to be judged.
    pub request_volume: u32,
    /// Ejected when below mean - stdev * factor / 1000.
    pub stdev_factor: u32,
}

impl Default for OutlierDetection {
    /// Envoy's defaults, with gateway-failure detection on.
    fn default() -> Self {
        Self {
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: Some(5),
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate: Some(SuccessRate {
                minimum_hosts: 5,
                request_volume: 100,
                stdev_factor: 1900,
            }),
        }
    }
}

/// Active HTTP health checking (Envoy `HealthCheck` with `http_health_check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested (`GET`).
    pub path: String,
    /// `Host` sent; the cluster name when empty.
    pub host: String,
    /// Time between checks of one endpoint.
    pub interval: Duration,
    /// Time allowed for one check.
    pub timeout: Duration,
    /// Failed checks in a row that mark an endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that mark it healthy again.
    pub healthy_threshold: u32,
    /// Statuses that pass, as half-open ranges `[start, end)` (default `[200, 300)`).
    pub expected_statuses: Vec<(u16, u16)>,
}

/// A token bucket (Envoy `TokenBucket`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Burst size, and the bucket's level at start.
    pub max_tokens: u32,
    /// Tokens added per fill.
    pub tokens_per_fill: u32,
    /// Time between fills.
    pub fill_interval: Duration,
}

/// What a rate-limit descriptor entry is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DescriptorSource {
    /// The client's IP (Envoy action `remote_address`, key `remote_address`).
    ClientIp,
    /// A request header's value (action `request_headers`); a request without it
    /// gets no descriptor from this action.
    Header {
        /// Header read.
        header: HeaderName,
        /// Descriptor key it becomes (`descriptor_key`).
        key: String,
    },
}

/// A local rate limit on a route (Envoy `local_ratelimit` per-route config with the
/// route's `rate_limits` actions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The route-wide bucket: every request not taken by a descriptor (`None`: those
    /// pass).
    pub bucket: Option<TokenBucket>,
    /// Descriptor actions, in order; the first that yields a value picks the bucket.
    pub sources: Vec<DescriptorSource>,
    /// Descriptor buckets: key, value (`None`: one bucket per distinct value) and
    /// bucket.
    pub descriptors: Vec<(String, Option<String>, TokenBucket)>,
    /// Answer 429 (`false`: only count what would have been limited).
    pub enforced: bool,
    /// Send `x-ratelimit-limit`, `-remaining` and `-reset` (IETF draft 03).
    pub headers: bool,
}

/// Fault injection on a route (Envoy `HTTPFault`); percentages are 0.0 to 100.0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fault {
    /// Delay requests: (how long, percentage).
    pub delay: Option<(Duration, f64)>,
    /// Answer instead of forwarding: (what, percentage).
    pub abort: Option<(Abort, f64)>,
}

/// What an injected abort answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// This HTTP status.
    Http(u16),
    /// HTTP 200 with this `grpc-status`.
    Grpc(u16),
}
