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
#[derive(Clone, Debug, Deserialize)]
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
#[derive(Clone, Debug, Deserialize)]
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

/// Parses `2s`, `250ms`, `1m 30s` with `humantime`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        humantime::parse_duration(s.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    })
    .transpose()
}
