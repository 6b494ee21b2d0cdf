//! The validated, immutable configuration the data path runs on.
//!
//! A [`Snapshot`] is what [`translate`] makes of a set of Envoy v3 resources once every
//! one of them checked out. It holds no protobuf types: addresses are parsed, regexes and
//! templates compiled, cluster references resolved to indexes. The data path reads it
//! through an `Arc` and never locks; a new configuration is a new snapshot swapped in
//! whole (see [`crate::state`]).

pub mod policy;
pub mod route;
pub mod template;
pub mod tls;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use self::route::{Action, Backends, Route, VirtualHost};
pub use self::translate::translate;

/// Index of a cluster in [`Snapshot::clusters`].
pub type ClusterId = usize;

/// A whole validated configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Listeners, in configuration order.
    pub listeners: Vec<Listener>,
    /// Clusters; routes refer to them by index.
    pub clusters: Vec<Cluster>,
    /// Number of routes over all listeners (route ids are `0..route_count`).
    pub route_count: usize,
}

impl Snapshot {
    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// The listener a connection accepted as `name` on `address` belongs to: by name,
    /// else (renamed by a reload while the connection was being accepted) by address.
    pub fn listener_index(&self, name: &str, address: SocketAddr) -> Option<usize> {
        self.listeners
            .iter()
            .position(|l| &*l.name == name)
            .or_else(|| {
                self.listeners
                    .iter()
                    .position(|l| l.address == address && address.port() != 0)
            })
    }

    /// The cluster called `name`.
    pub fn cluster_id(&self, name: &str) -> Option<ClusterId> {
        self.clusters.iter().position(|c| &*c.name == name)
    }
}

/// A listening socket and what it serves.
#[derive(Debug)]
pub struct Listener {
    /// Unique name.
    pub name: Arc<str>,
    /// Address to bind.
    pub address: SocketAddr,
    /// HTTP or TCP.
    pub kind: ListenerKind,
    /// TLS terminated on accepted connections (`None`: plain TCP).
    pub tls: Option<tls::ListenerTls>,
}

/// What a listener does with connections.
#[derive(Debug)]
pub enum ListenerKind {
    /// HTTP/1.1 and HTTP/2 with routing.
    Http(HttpListener),
    /// Opaque TCP to a cluster.
    Tcp(TcpListener),
}

/// An HTTP connection manager: virtual hosts and connection-level settings.
#[derive(Debug)]
pub struct HttpListener {
    /// Authorization rules (`None`: everything allowed).
    pub authz: Option<Arc<crate::authz::Policy>>,
    /// How request paths are normalised before routing and authorization.
    pub path_options: crate::authz::PathOptions,
    /// JWT providers routes may require.
    pub jwt: Option<Arc<crate::authn::JwtConfig>>,
    /// Name of the route configuration (for explain and config dumps).
    pub route_config: Arc<str>,
    /// Virtual hosts, selected by `Host`.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Time allowed to receive a request's headers.
    pub request_headers_timeout: Duration,
    /// Largest request header block accepted, in bytes.
    pub max_request_headers: usize,
    /// Access logs written for every request (that passes each log's filter).
    pub access_logs: Vec<AccessLogSpec>,
    /// Tracing: `None` leaves trace headers alone and records no spans.
    pub tracing: Option<TracingSpec>,
    /// Idle time after which a client connection with no request in flight is closed
    /// (`None`: never).
    pub idle_timeout: Option<Duration>,
}

/// One access log of a listener (Envoy's `access_log` entries).
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogSpec {
    /// Where the lines go.
    pub sink: weft_telemetry::access_log::Sink,
    /// JSON (Weft's record) or text (Envoy's default line).
    pub format: weft_telemetry::access_log::Format,
    /// Which requests are logged.
    pub filter: LogFilter,
}

/// Which requests an access log records. With neither condition set, every one; with
/// both, those meeting either (Envoy's `or_filter` of a status-code filter and a
/// response-flag filter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Log responses with at least this status (and requests that got no response).
    pub min_status: Option<u16>,
    /// Log requests with any response flag (a local failure: no route, reset, ...).
    pub flagged: bool,
}

impl LogFilter {
    /// Whether a request that ended with `status` and `flags` (`-` for none) is logged.
    pub fn accepts(&self, status: u16, flags: &str) -> bool {
        if self.min_status.is_none() && !self.flagged {
            return true;
        }
        self.min_status.is_some_and(|m| status >= m || status == 0)
            || (self.flagged && flags != "-")
    }
}

/// Tracing settings of a listener (Envoy's `tracing` in the connection manager).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracingSpec {
    /// Share of new traces sampled, 0.0 to 1.0 (Envoy's `random_sampling` / 100).
    /// Requests whose caller already decided follow that decision.
    pub sample_ratio: f64,
}

/// A TCP proxy.
#[derive(Debug)]
pub struct TcpListener {
    /// Where connections go.
    pub backends: Backends,
    /// Idle time after which a proxied connection is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Access logs written for every connection (that passes each log's filter).
    pub access_logs: Vec<AccessLogSpec>,
}

/// How a cluster finds its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Fixed IP addresses.
    Static,
    /// Resolve every host name; all addresses are endpoints (Envoy `STRICT_DNS`).
    StrictDns,
    /// Resolve host names; only the first address is used (Envoy `LOGICAL_DNS`).
    LogicalDns,
}

/// How a cluster picks an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    /// Power of two choices over peak-EWMA latency times outstanding requests
    /// (Envoy's `LEAST_REQUEST`).
    P2cPeakEwma,
    /// Weighted round robin.
    RoundRobin,
    /// Consistent hashing on the route's hash header (Envoy's `RING_HASH`).
    RingHash {
        /// Points on the ring (at least; Envoy's `minimum_ring_size`).
        min_ring_size: usize,
    },
    /// Uniformly at random.
    Random,
}

/// What a cluster's endpoints speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool.
    Http1,
    /// HTTP/2 with prior knowledge, multiplexed.
    Http2,
}

/// A configured endpoint: an IP or a name to resolve, a port and a weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// IP literal or DNS name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Relative weight (> 0).
    pub weight: u32,
}

/// A cluster's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Unique name.
    pub name: Arc<str>,
    /// Static or DNS.
    pub discovery: Discovery,
    /// Endpoints as configured (names unresolved).
    pub endpoints: Vec<EndpointSpec>,
    /// Balancing policy.
    pub lb: LbPolicy,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// DNS refresh interval.
    pub dns_refresh: Duration,
    /// Idle time after which a pooled upstream connection is closed.
    pub idle_timeout: Duration,
    /// Circuit-breaker limits and the retry budget.
    pub limits: policy::Limits,
    /// Passive health (`None`: endpoints are never ejected).
    pub outlier: Option<policy::OutlierDetection>,
    /// Active health checking (`None`: off).
    pub health_check: Option<policy::HealthCheck>,
    /// Percentage of healthy endpoints below which the balancer ignores health and
    /// balances over all of them (Envoy `healthy_panic_threshold`, default 50).
    pub panic_threshold: u32,
    /// Mesh mutual TLS towards the endpoints (`None`: plain TCP).
    pub tls: Option<tls::ClusterTls>,
}
