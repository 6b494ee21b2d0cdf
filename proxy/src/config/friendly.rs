//! The friendly `weft.yaml` a person writes.
//!
//! Every struct rejects unknown fields, so a typo is an error with its line, not a
//! silently ignored setting. Nothing here is interpreted: [`super::compile`] turns this
//! model into Envoy v3 resources, and all meaning lives there and in the snapshot.
//!
//! ```yaml
//! listeners:
//!   - name: edge
//!     address: 0.0.0.0:8080
//!     routes:
//!       - match: { path: /cart/addItem, method: POST }
//!         to: cart
//!       - match: { path: "/products/{productId}" }
//!         to: { product: 90, product-v2: 10 }
//!         timeout: 2s
//! clusters:
//!   cart: { endpoints: [10.0.1.5:8080, 10.0.1.6:8080] }
//! ```

use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};

/// A whole `weft.yaml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The admin server; defaults to `127.0.0.1:9901`.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Where traffic enters.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Named groups of upstream endpoints, in file order.
    #[serde(default)]
    pub clusters: IndexMap<String, Cluster>,
    /// Tracing for every HTTP listener; absent: no spans, trace headers passed as is.
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// This proxy's workload identity, for mesh mutual TLS (`mtls:` on listeners and
    /// clusters).
    #[serde(default)]
    pub identity: Option<Identity>,
}

/// A workload identity: certificate (with a `spiffe://` URI SAN), key and trust bundle,
/// as PEM files (relative paths are relative to the working directory). The files are
/// watched: a rotated certificate applies to new connections.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Certificate chain, leaf first.
    pub cert: String,
    /// The leaf's private key.
    pub key: String,
    /// Trust bundle: the CA certificates peers are verified against.
    pub ca: String,
}

/// Edge TLS on a listener: server certificates for external clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeTls {
    /// Certificates; the one whose DNS names match the client's SNI is used, the first
    /// one otherwise.
    pub certificates: Vec<CertPair>,
}

/// A certificate chain and its key (PEM files).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// Certificate chain, leaf first.
    pub cert: String,
    /// The leaf's private key.
    pub key: String,
}

/// Mesh mutual TLS on a listener.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerMtls {
    /// Trust domains whose callers are accepted (default: the identity's own).
    #[serde(default)]
    pub trust_domains: Vec<String>,
}

/// Mesh mutual TLS towards a cluster's endpoints.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMtls {
    /// The SPIFFE id (or ids) the endpoints must present.
    #[serde(default)]
    pub identity: Option<OneOrMany>,
    /// Or: any identity of this trust domain.
    #[serde(default)]
    pub trust_domain: Option<String>,
}

/// Trace sampling (the collector is a process setting: `OTEL_EXPORTER_OTLP_ENDPOINT`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Percentage of new traces sampled (0 to 100; default 100). Requests whose caller
    /// decided already follow that decision; `x-weft-debug: 1` is always sampled.
    #[serde(default)]
    pub sample_percent: Option<f64>,
}

/// An access log: one line per request (HTTP) or connection (TCP).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `stdout`, `stderr` or a file path (appended to, created if missing).
    pub path: String,
    /// `json` (default): one JSON object per line; `text`: Envoy's default line.
    #[serde(default)]
    pub format: LogFormat,
    /// Log only failures: status 400 and above, or a response flag (no route, reset,
    /// timeout, ...).
    #[serde(default)]
    pub only_errors: bool,
}

/// Access log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Envoy's default text line.
    Text,
}

/// Admin server settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:port` to serve `/live`, `/ready`, `/metrics`, `/config_dump`, `/explain` on.
    pub address: String,
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge), detected per connection.
    #[default]
    Http,
    /// Opaque TCP, proxied byte for byte to one cluster.
    Tcp,
}

/// One listening socket.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// `IP:port` to bind (`0.0.0.0:8080`, `[::]:8080`, `127.0.0.1:0`).
    pub address: String,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Routes for every host (HTTP), when no `virtual_hosts` are given.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Routes per `Host`, tried most specific domain first.
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    /// The cluster(s) a TCP listener forwards to.
    #[serde(default)]
    pub to: Option<Backends>,
    /// Where this listener's access log goes (none by default).
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// Close a client connection that has had no request in flight this long
    /// (default 1h; `0s` never).
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Edge TLS for external clients.
    #[serde(default)]
    pub tls: Option<EdgeTls>,
    /// Mesh mutual TLS with the file's `identity` (`true`, or settings).
    #[serde(default)]
    pub mtls: Option<Toggle<ListenerMtls>>,
    /// Authorization rules (HTTP listeners).
    #[serde(default)]
    pub authz: Option<super::compile::authz::AuthzSpec>,
    /// How request paths are normalised before routing and authorization (HTTP).
    #[serde(default)]
    pub path_normalization: Option<super::compile::authz::PathNormalizationSpec>,
    /// JWT issuers whose tokens routes may require (HTTP).
    #[serde(default)]
    pub jwt_providers: IndexMap<String, super::compile::JwtProviderSpec>,
}

/// Routes that apply to a set of `Host` values.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Name for metrics and explain; derived from the first domain when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `example.com`, `*.example.com`, `api.*` or `*`; a port may be included.
    pub domains: Vec<String>,
    /// Tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Header changes for every request of this virtual host.
    #[serde(default)]
    pub request_headers: Option<HeaderOps>,
    /// Header changes for every response of this virtual host.
    #[serde(default)]
    pub response_headers: Option<HeaderOps>,
}

/// One route: a match and exactly one of `to`, `redirect` or `respond`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name for metrics, logs and explain; derived from the match when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// What a request must look like; an empty match takes everything.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Forward to one cluster, or split by weight: `{ product: 90, product-v2: 10 }`.
    #[serde(default)]
    pub to: Option<Backends>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Answer directly instead of forwarding.
    #[serde(default)]
    pub respond: Option<Respond>,
    /// Path and host rewrites applied before forwarding.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Total time allowed for the upstream response headers (`2s`, `500ms`).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Header changes on the way to the upstream.
    #[serde(default)]
    pub request_headers: Option<HeaderOps>,
    /// Header changes on the way back to the client.
    #[serde(default)]
    pub response_headers: Option<HeaderOps>,
    /// Retries; absent: Istio's default (2 retries on connect failure, refused stream,
    /// gRPC unavailable/cancelled and 503, for requests safe to retry); `false`: none.
    #[serde(default)]
    pub retries: Option<Toggle<Retries>>,
    /// A local rate limit (token bucket) for this route.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Fault injection (delays and aborts), for chaos tests.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// A JWT this route requires (a provider's name, `{ any_of: [..] }`, or
    /// `{ provider, allow_missing }`).
    #[serde(default)]
    pub jwt: Option<super::compile::JwtRouteSpec>,
    /// CORS for browsers calling this route from other origins.
    #[serde(default)]
    pub cors: Option<super::compile::CorsSpec>,
}

/// `false` (off), `true` (the defaults) or settings.
#[derive(Clone, Debug)]
pub enum Toggle<T> {
    /// `false` / `true`.
    Switch(bool),
    /// Settings (unset ones take the defaults).
    Set(T),
}

// By hand rather than `untagged`, so that a mistake inside the settings is reported as
// itself (`unknown field "retry_ob"`) instead of "did not match any variant".
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Toggle<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Toggle<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or a map of settings")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Toggle::Switch(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Toggle::Set)
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// A route's retry policy; unset fields take Istio's defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first try (default 2; 0 turns retries off).
    #[serde(default)]
    pub max: Option<u32>,
    /// Conditions, as Envoy names them (`5xx`, `gateway-error`, `reset`,
    /// `connect-failure`, `refused-stream`, `retriable-4xx`, `retriable-status-codes`,
    /// `cancelled`, `deadline-exceeded`, `resource-exhausted`, `unavailable`). Not `on:`,
    /// which YAML 1.1 readers take for `true`.
    #[serde(default)]
    pub retry_on: Option<Vec<String>>,
    /// Statuses retried under `retriable-status-codes` (default `[503]`).
    #[serde(default)]
    pub status_codes: Option<Vec<u16>>,
    /// Time allowed for each try.
    #[serde(default, deserialize_with = "duration")]
    pub per_try_timeout: Option<Duration>,
    /// Backoff base (default 25ms): the n-th retry waits up to base x 2^(n-1), jittered.
    #[serde(default, deserialize_with = "duration")]
    pub backoff: Option<Duration>,
    /// Longest backoff (default 10 x base).
    #[serde(default, deserialize_with = "duration")]
    pub max_backoff: Option<Duration>,
    /// Non-idempotent methods that may be retried too (`[POST]`).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Largest request body replayed on a retry (default 64KiB); larger ones are not
    /// retried.
    #[serde(default, deserialize_with = "byte_size")]
    pub max_body: Option<u64>,
}

/// A local rate limit: `requests` per `per`, with bursts up to `burst`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub requests: u32,
    /// The period (default 1s).
    #[serde(default, deserialize_with = "duration")]
    pub per: Option<Duration>,
    /// Largest burst (default `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// One bucket per client IP (`client_ip`) or per header value
    /// (`{ header: x-user }`); absent: one bucket for the route.
    #[serde(default)]
    pub key: Option<RateKey>,
    /// `false`: only count what would have been limited (default `true`).
    #[serde(default)]
    pub enforce: Option<bool>,
}

/// What a rate limit is keyed on.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RateKey {
    /// `client_ip`
    Named(String),
    /// `{ header: x-user }`
    Header {
        /// The header whose value keys the bucket.
        header: String,
    },
}

/// Fault injection on a route.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Delay some requests.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Answer some requests with an error instead of forwarding them.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

/// An injected delay.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// How long.
    #[serde(deserialize_with = "required_duration")]
    pub duration: Duration,
    /// Share of requests delayed, 0-100 (default 100).
    #[serde(default)]
    pub percent: Option<f64>,
}

/// An injected error response.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status to answer with.
    #[serde(default)]
    pub status: Option<u16>,
    /// gRPC status to answer with (HTTP 200, trailers-only).
    #[serde(default)]
    pub grpc_status: Option<u16>,
    /// Share of requests aborted, 0-100 (default 100).
    #[serde(default)]
    pub percent: Option<f64>,
}

/// Request conditions; all given ones must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Exact path (`/cart/addItem`), or a template when it holds `{...}` or `*`
    /// (`/products/{productId}`, `/static/{rest=**}`).
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix (`/users/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Regular expression the whole path (without query) must match.
    #[serde(default)]
    pub regex: Option<String>,
    /// One method or a list of them.
    #[serde(default)]
    pub method: Option<OneOrMany>,
    /// Header conditions by name.
    #[serde(default)]
    pub headers: IndexMap<String, ValueMatch>,
    /// Query parameter conditions by name.
    #[serde(default)]
    pub query: IndexMap<String, ValueMatch>,
    /// Match `CONNECT` requests (tunnels to the route's cluster).
    #[serde(default)]
    pub connect: bool,
}

/// A single string or a list of strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `method: GET`
    One(String),
    /// `method: [GET, HEAD]`
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a slice-like list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// A condition on a header or query value: a plain string means "equals".
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ValueMatch {
    /// `x-canary: "true"`
    Exact(String),
    /// `x-user: { prefix: "vip-" }`
    Rule(ValueRule),
}

/// One way to match a value; exactly one field is given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    /// Equal to.
    #[serde(default)]
    pub exact: Option<String>,
    /// Starts with.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Ends with.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Contains.
    #[serde(default)]
    pub contains: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: present with any value; `false`: absent.
    #[serde(default)]
    pub present: Option<bool>,
    /// Invert the condition.
    #[serde(default)]
    pub not: bool,
}

/// Where a route or TCP listener sends traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Backends {
    /// `to: cart`
    One(String),
    /// `to: { product: 90, product-v2: 10 }`
    Weighted(IndexMap<String, u32>),
}

/// A redirect response; unset parts keep the request's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `https` or `http`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// New host.
    #[serde(default)]
    pub host: Option<String>,
    /// New port.
    #[serde(default)]
    pub port: Option<u16>,
    /// New path (replaces the whole path).
    #[serde(default)]
    pub path: Option<String>,
    /// Replace the matched prefix with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default)]
    pub code: Option<u16>,
    /// Drop the query string.
    #[serde(default)]
    pub strip_query: bool,
}

/// A response produced by the proxy itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// Status code.
    pub status: u16,
    /// Body text.
    #[serde(default)]
    pub body: Option<String>,
}

/// Rewrites applied to forwarded requests.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replace the matched prefix (`match.prefix`) or exact path with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Replace the `Host` header.
    #[serde(default)]
    pub host: Option<String>,
}

/// Headers to set, append or remove.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Set (replacing any existing value).
    #[serde(default)]
    pub set: IndexMap<String, String>,
    /// Append (keeping existing values).
    #[serde(default)]
    pub add: IndexMap<String, String>,
    /// Remove by name.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A group of upstream endpoints.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// `IP:port` or `dns-name:port`, optionally with a weight.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// `p2c-ewma` (default), `round-robin` or `ring-hash`.
    #[serde(default)]
    pub lb: Option<String>,
    /// What `ring-hash` hashes on.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// `http1` (default) or `http2` (prior knowledge) towards the endpoints.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Upstream connect timeout (default 5s).
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<Duration>,
    /// How often DNS names are resolved again (default 5s).
    #[serde(default, deserialize_with = "duration")]
    pub dns_refresh: Option<Duration>,
    /// Close pooled connections idle this long (default 90s).
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Circuit-breaker limits and the retry budget.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Ejecting failing endpoints; absent or `true`: the defaults; `false`: off.
    #[serde(default)]
    pub outlier_detection: Option<Toggle<OutlierDetection>>,
    /// Active HTTP health checks (off by default).
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Below this percentage of healthy endpoints, balance over all of them (default 50).
    #[serde(default)]
    pub panic_threshold: Option<u32>,
    /// Mesh mutual TLS (over HTTP/2) with the file's `identity`; the endpoints must
    /// prove the identity given here.
    #[serde(default)]
    pub mtls: Option<ClusterMtls>,
}

/// Per-cluster limits; over one, a request fails at once with 503.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Connections to all endpoints together (default 1024).
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection (default 1024).
    #[serde(default)]
    pub max_pending: Option<u32>,
    /// Requests in flight (default 1024).
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// Retries in flight (default 1024).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Retries allowed over time (default 20 % of requests plus 10 per second).
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
}

/// Retries at most `percent` of requests plus `min_per_sec` per second.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Percentage of requests (default 20).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Retries always allowed per second (default 10).
    #[serde(default)]
    pub min_per_sec: Option<u32>,
}

/// Outlier detection settings; unset ones take the defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx that eject an endpoint (default 5; 0: off).
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 or connection failures that eject (default 5; 0: off).
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejections are reviewed and success rates computed (default 10s).
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
    /// First ejection's length; the n-th lasts n times this (default 30s).
    #[serde(default, deserialize_with = "duration")]
    pub base_ejection_time: Option<Duration>,
    /// Longest ejection (default 300s).
    #[serde(default, deserialize_with = "duration")]
    pub max_ejection_time: Option<Duration>,
    /// Share of endpoints ejected at most (default 10; one may always be).
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    /// Eject endpoints whose success rate is far below the others' (default `true`).
    #[serde(default)]
    pub success_rate: Option<bool>,
}

/// An active HTTP health check.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path requested with GET.
    pub path: String,
    /// `Host` sent (default: the cluster name).
    #[serde(default)]
    pub host: Option<String>,
    /// Time between checks (default 5s).
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
    /// Time allowed per check (default 1s).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// Failures in a row that mark an endpoint unhealthy (default 3).
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    /// Successes in a row that mark it healthy again (default 2).
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Statuses that pass (default 200-299).
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
}

/// The key `ring-hash` uses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    /// Hash this request header's value.
    pub header: String,
}

/// An endpoint: `"10.0.1.5:8080"` or `{ address: "10.0.1.5:8080", weight: 3 }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum EndpointSpec {
    /// Address only, weight 1.
    Address(String),
    /// Address and weight.
    Weighted(WeightedEndpoint),
}

/// The long form of an endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    /// `IP:port` or `dns-name:port`.
    pub address: String,
    /// Relative weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl EndpointSpec {
    /// The address and weight, whichever form was written.
    pub fn parts(&self) -> (&str, u32) {
        match self {
            Self::Address(a) => (a, 1),
            Self::Weighted(w) => (&w.address, w.weight),
        }
    }
}

/// A required duration (`2s`).
fn required_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

/// A size: a number of bytes or `64KiB`, `1MiB`, `10KB`, `1MB`.
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    let Some(size) = Option::<Size>::deserialize(d)? else {
        return Ok(None);
    };
    match size {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(s) => parse_byte_size(&s).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid size {s:?}: use e.g. 65536, 64KiB or 1MiB"))
        }),
    }
}

/// Parses `65536`, `64KiB`, `1MiB`, `10KB`, `1MB`, `512B`.
pub fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Parses `2s`, `250ms`, `1m 30s` with `humantime`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        humantime::parse_duration(s.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    })
    .transpose()
}
