//! Metric names, label keys and histogram buckets.
//!
//! Request and TCP metrics carry Istio's standard names and labels
//! (`istio_requests_total`, `istio_request_duration_milliseconds`, `istio_tcp_*`) so that
//! Grafana and Kiali dashboards built for Istio read Weft unchanged. Weft's own internals
//! are `weft_*`; process figures use the Prometheus client conventions (`process_*`).
//! Labels never hold raw paths or ids: routes are identified by their configured (or
//! derived) name, so the number of series is bounded by the configuration, not by
//! traffic.

/// Requests proxied (or answered locally), by route, destination and response code.
pub const REQUESTS_TOTAL: &str = "istio_requests_total";
/// Time from the request's arrival to the end of its response, in milliseconds.
pub const REQUEST_DURATION_MS: &str = "istio_request_duration_milliseconds";
/// Request body sizes, in bytes.
pub const REQUEST_BYTES: &str = "istio_request_bytes";
/// Response body sizes, in bytes.
pub const RESPONSE_BYTES: &str = "istio_response_bytes";
/// Bytes sent to the downstream peer of a TCP-proxied connection.
pub const TCP_SENT_BYTES: &str = "istio_tcp_sent_bytes_total";
/// Bytes received from the downstream peer of a TCP-proxied connection.
pub const TCP_RECEIVED_BYTES: &str = "istio_tcp_received_bytes_total";
/// TCP-proxied connections opened.
pub const TCP_CONNECTIONS_OPENED: &str = "istio_tcp_connections_opened_total";
/// TCP-proxied connections closed.
pub const TCP_CONNECTIONS_CLOSED: &str = "istio_tcp_connections_closed_total";

/// Downstream connections currently open, per listener.
pub const DOWNSTREAM_CONNECTIONS_ACTIVE: &str = "weft_downstream_connections_active";
/// Downstream connections accepted, per listener.
pub const DOWNSTREAM_CONNECTIONS_TOTAL: &str = "weft_downstream_connections_total";
/// Protocol detection outcomes on HTTP listeners (`http1`, `http2`, `timeout`, `closed`).
pub const PROTOCOL_DETECTION_TOTAL: &str = "weft_protocol_detection_total";
/// Configuration snapshots applied.
pub const CONFIG_UPDATES_TOTAL: &str = "weft_config_updates_total";
/// Configuration updates rejected as a whole (the previous snapshot stayed active).
pub const CONFIG_REJECTIONS_TOTAL: &str = "weft_config_rejections_total";
/// Unix time of the last applied configuration, in seconds.
pub const CONFIG_LAST_APPLIED: &str = "weft_config_last_applied_timestamp_seconds";
/// Upstream connections opened, per cluster.
pub const UPSTREAM_CONNECTIONS_TOTAL: &str = "weft_upstream_connections_total";
/// Upstream connection attempts that failed, per cluster.
pub const UPSTREAM_CONNECT_FAILURES_TOTAL: &str = "weft_upstream_connect_failures_total";
/// Idle pooled upstream connections, per cluster.
pub const UPSTREAM_POOL_IDLE: &str = "weft_upstream_pool_idle_connections";
/// Upstream requests in flight, per cluster.
pub const UPSTREAM_REQUESTS_ACTIVE: &str = "weft_upstream_requests_active";
/// Requests sent again on a fresh connection after a reused pooled connection turned
/// out closed (the upstream never saw them; not a policy retry), per cluster.
pub const UPSTREAM_RETRIES_TOTAL: &str = "weft_upstream_retries_total";
/// Retries made by retry policies, per cluster.
pub const RETRIES_TOTAL: &str = "weft_retries_total";
/// Retries a retry policy wanted but the cluster's retry budget refused, per cluster.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "weft_retry_budget_exhausted_total";
/// Requests (or retries) refused because a circuit-breaker limit was reached, per
/// cluster and `limit` (`max_requests`, `max_pending_requests`, `max_connections`,
/// `max_retries`).
pub const UPSTREAM_OVERFLOW_TOTAL: &str = "weft_upstream_overflow_total";
/// Requests that hit their route timeout, per route.
pub const TIMEOUTS_TOTAL: &str = "weft_request_timeouts_total";
/// Local rate-limit decisions, per route: `result` is `ok`, `limited` (answered 429) or
/// `would_limit` (over the limit on a route that does not enforce it; forwarded).
pub const RATELIMIT_TOTAL: &str = "weft_ratelimit_total";
/// Faults injected, per route: `kind` is `delay` or `abort`.
pub const FAULT_INJECTED_TOTAL: &str = "weft_fault_injected_total";
/// Endpoints currently known per cluster (after DNS resolution).
pub const CLUSTER_ENDPOINTS: &str = "weft_cluster_endpoints";
/// Endpoints ejected by outlier detection, per cluster and `reason`
/// (`consecutive_5xx`, `consecutive_gateway_failure`, `success_rate`).
pub const OUTLIER_EJECTIONS_TOTAL: &str = "weft_outlier_ejections_total";
/// Ejections outlier detection wanted but `max_ejection_percent` prevented, per cluster.
pub const OUTLIER_EJECTIONS_OVERFLOW_TOTAL: &str = "weft_outlier_ejections_overflow_total";
/// Endpoints currently ejected by outlier detection, per cluster.
pub const ENDPOINTS_EJECTED: &str = "weft_endpoints_ejected";
/// Picks made in panic mode (too few usable endpoints: all were used), per cluster.
pub const LB_PANIC_TOTAL: &str = "weft_lb_panic_total";
/// Active health checks, per cluster and `result` (`success`, `failure`).
pub const HEALTH_CHECKS_TOTAL: &str = "weft_health_checks_total";
/// Endpoints currently marked unhealthy by active health checks, per cluster.
pub const ENDPOINTS_UNHEALTHY: &str = "weft_endpoints_unhealthy";
/// TLS handshakes, by `side` (`server`, `client`), `listener` or `cluster` (the other is
/// empty) and `outcome` (`ok`, or why it failed: `no_client_cert`, `unknown_ca`,
/// `bad_identity`, `expired`, `not_yet_valid`, `bad_eku`, `protocol`, `peer_refused`
/// (the peer sent an alert: it refused us), `timeout`, `other`).
pub const TLS_HANDSHAKES_TOTAL: &str = "weft_tls_handshakes_total";
/// Seconds until the workload (or serving) certificate expires, per `source`.
pub const TLS_CERT_EXPIRY_SECONDS: &str = "weft_tls_cert_expiry_seconds";
/// Certificate loads, per `source` and `outcome` (`ok`, `rejected`).
pub const TLS_CERT_LOADS_TOTAL: &str = "weft_tls_cert_loads_total";
/// Times a certificate was found close to expiry (less than a fifth of its lifetime
/// or an hour left), per `source`.
pub const TLS_CERT_EXPIRING_TOTAL: &str = "weft_tls_cert_expiring_total";
/// Authorization decisions, per listener, `decision` (`allow`, `deny`, `audit_deny`)
/// and `rule` (the rule that decided, or `default`).
pub const AUTHZ_DECISIONS_TOTAL: &str = "weft_authz_decisions_total";
/// JWT authentication outcomes, per route and `outcome` (`ok`, `missing`, `expired`,
/// `bad_signature`, `bad_issuer`, `bad_audience`, `malformed`, `unknown_key`, ...).
pub const JWT_AUTHN_TOTAL: &str = "weft_jwt_authn_total";
/// Access-log records written.
pub const ACCESS_LOG_WRITTEN: &str = "weft_access_log_records_total";
/// Access-log records dropped because the writer fell behind (the sink is full).
pub const ACCESS_LOG_DROPPED: &str = "weft_access_log_dropped_total";
/// Spans handed to the OTLP exporter and acknowledged.
pub const SPANS_EXPORTED: &str = "weft_trace_spans_exported_total";
/// Spans dropped: export queue full, or the export failed.
pub const SPANS_DROPPED: &str = "weft_trace_spans_dropped_total";
/// Resident memory of the process, in bytes.
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// CPU time used by the process (user + system), in seconds.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// File descriptors open in the process.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The process's file descriptor limit.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";

/// Label keys.
pub mod label {
    /// Who reports the metric: `gateway`, `source` or `destination` (Istio semantics).
    pub const REPORTER: &str = "reporter";
    /// The workload the request came from (`unknown` when the peer is not identified).
    pub const SOURCE_WORKLOAD: &str = "source_workload";
    /// The namespace of the source workload.
    pub const SOURCE_WORKLOAD_NAMESPACE: &str = "source_workload_namespace";
    /// The SPIFFE id of the source (`unknown` without mutual TLS).
    pub const SOURCE_PRINCIPAL: &str = "source_principal";
    /// The workload the request went to.
    pub const DESTINATION_WORKLOAD: &str = "destination_workload";
    /// The namespace of the destination workload.
    pub const DESTINATION_WORKLOAD_NAMESPACE: &str = "destination_workload_namespace";
    /// The SPIFFE id of the destination (`unknown` without mutual TLS).
    pub const DESTINATION_PRINCIPAL: &str = "destination_principal";
    /// The cluster a request was sent to (`unknown` for local responses).
    pub const DESTINATION_SERVICE: &str = "destination_service";
    /// `http`, `grpc` or `tcp`.
    pub const REQUEST_PROTOCOL: &str = "request_protocol";
    /// HTTP status code (`0` when no response was sent).
    pub const RESPONSE_CODE: &str = "response_code";
    /// The `grpc-status` of a gRPC response (empty for other requests).
    pub const GRPC_RESPONSE_STATUS: &str = "grpc_response_status";
    /// Envoy-style response flags explaining a failure (`NR`, `UH`, `UF`, `UC`, ...), or `-`.
    pub const RESPONSE_FLAGS: &str = "response_flags";
    /// `mutual_tls` or `none`.
    pub const CONNECTION_SECURITY_POLICY: &str = "connection_security_policy";
    /// The listener's configured name (Weft's own label).
    pub const LISTENER: &str = "listener";
    /// The route's configured or derived name (Weft's own label).
    pub const ROUTE: &str = "route_name";
    /// A cluster's name, on cluster metrics.
    pub const CLUSTER: &str = "cluster";
    /// An outcome (protocol detection).
    pub const OUTCOME: &str = "outcome";
    /// Why an endpoint was ejected (outlier detection).
    pub const REASON: &str = "reason";
    /// A rate-limit decision: `ok`, `limited` or `would_limit`.
    pub const RESULT: &str = "result";
    /// Which circuit-breaker limit (`max_requests`, ...).
    pub const LIMIT: &str = "limit";
    /// The kind of an injected fault: `delay` or `abort`.
    pub const KIND: &str = "kind";
    /// The side of a TLS handshake: `server` or `client`.
    pub const SIDE: &str = "side";
    /// Where a certificate comes from (a name given by the store's owner).
    pub const SOURCE: &str = "source";
    /// An authorization decision: `allow`, `deny` or `audit_deny`.
    pub const DECISION: &str = "decision";
    /// The authorization rule that decided (its configured name), or `default`.
    pub const RULE: &str = "rule";
}

/// Istio's default buckets for `istio_request_duration_milliseconds`.
pub const DURATION_MS_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's default buckets for `istio_request_bytes` and `istio_response_bytes`
/// (exponential, 1 to 10^8).
pub const BYTES_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    100000000.0,
];
