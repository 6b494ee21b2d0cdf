//! Metric names, label keys and histogram buckets.
//!
//! Request metrics carry Istio's standard names (`istio_requests_total`,
//! `istio_request_duration_milliseconds`) so that Grafana and Kiali dashboards built for
//! Istio read Weft unchanged. Weft's own internals are `weft_*`. Labels never hold raw
//! paths or ids: routes are identified by their configured (or derived) name, so the
//! number of series is bounded by the configuration, not by traffic.

/// Requests proxied (or answered locally), by route, cluster and response code.
pub const REQUESTS_TOTAL: &str = "istio_requests_total";
/// Time from the request's arrival to its response headers, in milliseconds.
pub const REQUEST_DURATION_MS: &str = "istio_request_duration_milliseconds";
/// Downstream connections currently open, per listener.
pub const DOWNSTREAM_CONNECTIONS_ACTIVE: &str = "weft_downstream_connections_active";
/// Downstream connections accepted, per listener.
pub const DOWNSTREAM_CONNECTIONS_TOTAL: &str = "weft_downstream_connections_total";
/// Configuration snapshots applied.
pub const CONFIG_UPDATES_TOTAL: &str = "weft_config_updates_total";
/// Configuration updates rejected as a whole (the previous snapshot stayed active).
pub const CONFIG_REJECTIONS_TOTAL: &str = "weft_config_rejections_total";
/// Upstream connections opened, per cluster.
pub const UPSTREAM_CONNECTIONS_TOTAL: &str = "weft_upstream_connections_total";
/// Upstream connection attempts that failed, per cluster.
pub const UPSTREAM_CONNECT_FAILURES_TOTAL: &str = "weft_upstream_connect_failures_total";
/// Endpoints currently known per cluster (after DNS resolution).
pub const CLUSTER_ENDPOINTS: &str = "weft_cluster_endpoints";

/// Label keys.
pub mod label {
    /// Who reports the metric: `gateway`, `source` or `destination` (Istio semantics).
    pub const REPORTER: &str = "reporter";
    /// The listener's configured name.
    pub const LISTENER: &str = "listener";
    /// The route's configured or derived name.
    pub const ROUTE: &str = "route_name";
    /// The cluster a request was sent to (empty for local responses).
    pub const DESTINATION_SERVICE: &str = "destination_service";
    /// A cluster's name, on cluster metrics.
    pub const CLUSTER: &str = "cluster";
    /// `http`, `grpc` or `tcp`.
    pub const REQUEST_PROTOCOL: &str = "request_protocol";
    /// HTTP status code.
    pub const RESPONSE_CODE: &str = "response_code";
    /// Envoy-style response flags explaining a failure (`NR`, `UH`, `UF`, `UC`, ...), or `-`.
    pub const RESPONSE_FLAGS: &str = "response_flags";
}

/// Istio's default buckets for `istio_request_duration_milliseconds`.
pub const DURATION_MS_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
