//! Envoy v3 resources -> validated [`Snapshot`].
//!
//! Every resource is checked; every problem is collected with its place (resource type
//! and name, then the field path) and the whole set is rejected if any is found, so a
//! half-applied configuration never exists. Fields that would change behaviour but that
//! Weft does not implement yet are rejected by name rather than silently ignored.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster as PbCluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValueOption, address, data_source, header_value_option::HeaderAppendAction,
    socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener as PbListener, filter};
use envoy_types::pb::envoy::config::route::v3 as pb_route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options, http_protocol_options::explicit_http_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Any;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use prost::{Message, Name};
use regex::Regex;

use super::route::{
    self, Action, AppendAction, Backend, Backends, Domain, Forward, HeaderCondition, HeaderOps,
    PathMatch, PathRedirect, QueryCondition, Redirect, Respond, Route, RouteMatch, StringMatch,
    ValueCondition, VirtualHost,
};
use super::template::Template;
use super::{
    Cluster, ClusterId, Discovery, EndpointSpec, HttpListener, LbPolicy, Listener, ListenerKind,
    Snapshot, TcpListener, UpstreamProtocol,
};
use crate::config::{Problem, Resources};

/// Well-known Envoy extension names and type URLs.
pub mod names {
    /// The HTTP connection manager network filter.
    pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
    /// The TCP proxy network filter.
    pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
    /// The router HTTP filter.
    pub const ROUTER: &str = "envoy.filters.http.router";
    /// The URI template path matcher extension.
    pub const URI_TEMPLATE_MATCHER: &str = "envoy.path.match.uri_template.uri_template_matcher";
    /// Key of upstream HTTP options in a cluster's `typed_extension_protocol_options`.
    pub const HTTP_PROTOCOL_OPTIONS: &str =
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    /// The local rate-limit HTTP filter (and its per-route config key).
    pub const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
    /// The fault-injection HTTP filter (and its per-route config key).
    pub const FAULT: &str = "envoy.filters.http.fault";
    /// Envoy's retry host predicate that avoids hosts already tried.
    pub const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
}

/// Envoy's default route timeout, for routes that do not set one.
pub const ENVOY_DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time to receive request headers (slow-loris protection).
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// Default downstream idle timeout (Envoy's: one hour).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default largest request header block (Envoy's: 60 KiB).
pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// Default DNS refresh interval (Envoy's).
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
/// Default ring size for ring hash (Envoy's `minimum_ring_size`).
pub const DEFAULT_MIN_RING_SIZE: usize = 1024;

/// Validates `resources` and builds a snapshot, or returns every problem found.
pub fn translate(resources: &Resources) -> Result<Snapshot, Vec<Problem>> {
    let mut t = Translator::default();
    for (i, c) in resources.clusters.iter().enumerate() {
        let place = format!("Cluster {:?}", c.name);
        if let Some(c) = t.cluster(c, &resources.load_assignments, &place, i) {
            t.snapshot.clusters.push(c);
        }
    }
    let cluster_ids: HashMap<String, ClusterId> = t
        .snapshot
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.to_string(), i))
        .collect();
    t.cluster_ids = cluster_ids;

    let mut route_config_names = HashSet::new();
    for rc in &resources.route_configs {
        if !route_config_names.insert(rc.name.as_str()) {
            t.problem(
                format!("RouteConfiguration {:?}", rc.name),
                "duplicate name",
            );
        }
    }
    let route_configs: HashMap<&str, &pb_route::RouteConfiguration> = resources
        .route_configs
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect();

    let mut listener_names = HashSet::new();
    let mut addresses = HashSet::new();
    for l in &resources.listeners {
        let place = format!("Listener {:?}", l.name);
        if l.name.is_empty() {
            t.problem(&place, "name must not be empty");
        } else if !listener_names.insert(l.name.as_str()) {
            t.problem(&place, "duplicate listener name");
        }
        if let Some(listener) = t.listener(l, &route_configs, &place) {
            if listener.address.port() != 0 && !addresses.insert(listener.address) {
                t.problem(
                    &place,
                    format!("address {} is used by another listener", listener.address),
                );
            }
            t.snapshot.listeners.push(listener);
        }
    }
    if t.problems.is_empty() {
        Ok(t.snapshot)
    } else {
        Err(t.problems)
    }
}

#[derive(Default)]
struct Translator {
    snapshot: Snapshot,
    cluster_ids: HashMap<String, ClusterId>,
    problems: Vec<Problem>,
    /// The listener being translated: its rate-limit and fault filter configs.
    filter_defaults: policy::FilterDefaults,
    /// The virtual host being translated: its retry policy and body buffer limit.
    vhost_retry: (Option<pb_route::RetryPolicy>, Option<usize>),
}

impl Translator {
    fn problem(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(place, message));
    }

    fn ok<T, E: std::fmt::Display>(&mut self, r: Result<T, E>, place: &str) -> Option<T> {
        r.map_err(|e| self.problem(place, e.to_string())).ok()
    }

    // ---- clusters ----

    fn cluster(
        &mut self,
        c: &PbCluster,
        assignments: &[ClusterLoadAssignment],
        place: &str,
        index: usize,
    ) -> Option<Cluster> {
        let _ = index;
        if c.name.is_empty() {
            self.problem(place, "name must not be empty");
            return None;
        }
        if self.snapshot.clusters.iter().any(|x| *x.name == *c.name) {
            self.problem(place, "duplicate cluster name");
            return None;
        }
        if !c.transport_socket_matches.is_empty() {
            self.problem(
                format!("{place}.transport_socket_matches"),
                "not supported; set transport_socket",
            );
        }
        let tls = c
            .transport_socket
            .as_ref()
            .and_then(|t| self.cluster_tls(t, &format!("{place}.transport_socket")));
        if c.load_balancing_policy.is_some() {
            self.problem(
                format!("{place}.load_balancing_policy"),
                "not supported; use lb_policy",
            );
        }
        use cluster::DiscoveryType as D;
        let discovery = match &c.cluster_discovery_type {
            None => Some(Discovery::Static),
            Some(cluster::ClusterDiscoveryType::Type(t)) => match D::try_from(*t) {
                Ok(D::Static) | Ok(D::Eds) => Some(Discovery::Static),
                Ok(D::StrictDns) => Some(Discovery::StrictDns),
                Ok(D::LogicalDns) => Some(Discovery::LogicalDns),
                Ok(D::OriginalDst) | Err(_) => {
                    self.problem(
                        format!("{place}.type"),
                        "only STATIC, STRICT_DNS, LOGICAL_DNS and EDS are supported",
                    );
                    None
                }
            },
            Some(cluster::ClusterDiscoveryType::ClusterType(ct)) => {
                self.problem(
                    format!("{place}.cluster_type"),
                    format!("custom cluster type {:?} is not supported", ct.name),
                );
                None
            }
        }?;
        let is_eds = matches!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(t)) if t == D::Eds as i32
        );
        let assignment = if is_eds {
            let service = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&c.name);
            assignments.iter().find(|a| a.cluster_name == service)
        } else {
            c.load_assignment.as_ref()
        };
        let mut endpoints = Vec::new();
        if let Some(a) = assignment {
            for (i, locality) in a.endpoints.iter().enumerate() {
                for (j, lbe) in locality.lb_endpoints.iter().enumerate() {
                    let eplace =
                        format!("{place}.load_assignment.endpoints[{i}].lb_endpoints[{j}]");
                    // Envoy leaves unhealthy, draining and timed-out endpoints out.
                    if matches!(lbe.health_status, 2..=4) {
                        continue;
                    }
                    let weight = lbe.load_balancing_weight.map(|w| w.value).unwrap_or(1);
                    if weight == 0 {
                        self.problem(&eplace, "load_balancing_weight must be at least 1");
                        continue;
                    }
                    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lbe.host_identifier
                    else {
                        self.problem(&eplace, "endpoint has no address");
                        continue;
                    };
                    let Some((host, port)) = self
                        .socket_address(ep.address.as_ref(), &format!("{eplace}.endpoint.address"))
                    else {
                        continue;
                    };
                    if discovery == Discovery::Static && host.parse::<IpAddr>().is_err() {
                        self.problem(
                            format!("{eplace}.endpoint.address"),
                            format!("{host:?} is not an IP address; a STATIC cluster needs IPs (use STRICT_DNS for names)"),
                        );
                        continue;
                    }
                    endpoints.push(EndpointSpec { host, port, weight });
                }
            }
        }
        use cluster::LbPolicy as L;
        let lb = match L::try_from(c.lb_policy) {
            Ok(L::RoundRobin) => LbPolicy::RoundRobin,
            Ok(L::LeastRequest) => LbPolicy::P2cPeakEwma,
            Ok(L::RingHash) => {
                let min = match &c.lb_config {
                    Some(cluster::LbConfig::RingHashLbConfig(r)) => r
                        .minimum_ring_size
                        .map(|m| m.value as usize)
                        .unwrap_or(DEFAULT_MIN_RING_SIZE),
                    _ => DEFAULT_MIN_RING_SIZE,
                };
                LbPolicy::RingHash {
                    min_ring_size: min.clamp(1, 1 << 23),
                }
            }
            Ok(L::Random) => LbPolicy::Random,
            _ => {
                self.problem(
                    format!("{place}.lb_policy"),
                    "only ROUND_ROBIN, LEAST_REQUEST, RING_HASH and RANDOM are supported",
                );
                LbPolicy::RoundRobin
            }
        };
        // Mesh links speak HTTP/2 (ALPN h2), whatever the protocol options say.
        let protocol = match tls {
            Some(_) => UpstreamProtocol::Http2,
            None => self.upstream_protocol(c, place),
        };
        let (limits, outlier, health_check, panic_threshold) = self.cluster_policies(c, place);
        let idle_timeout = self.upstream_idle_timeout(c, place);
        Some(Cluster {
            name: Arc::from(c.name.as_str()),
            discovery,
            endpoints,
            lb,
            protocol,
            connect_timeout: c
                .connect_timeout
                .as_ref()
                .map(duration)
                .unwrap_or(crate::config::compile::DEFAULT_CONNECT_TIMEOUT),
            // Deprecated in favour of the DNS cluster extension, still what most configs use.
            #[allow(deprecated)]
            dns_refresh: c
                .dns_refresh_rate
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_DNS_REFRESH),
            idle_timeout,
            limits,
            outlier,
            health_check,
            panic_threshold,
            tls,
        })
    }

    /// `common_http_protocol_options.idle_timeout` of the upstream HTTP options (Envoy's
    /// default: one hour; Weft's pool default is shorter, see [`POOL_IDLE_TIMEOUT`]).
    ///
    /// [`POOL_IDLE_TIMEOUT`]: crate::upstream::client::POOL_IDLE_TIMEOUT
    fn upstream_idle_timeout(&mut self, c: &PbCluster, place: &str) -> Duration {
        let default = crate::upstream::client::POOL_IDLE_TIMEOUT;
        let Some(any) = c
            .typed_extension_protocol_options
            .get(names::HTTP_PROTOCOL_OPTIONS)
        else {
            return default;
        };
        let Some(opts) = self.unpack::<HttpProtocolOptions>(any, place) else {
            return default;
        };
        opts.common_http_protocol_options
            .and_then(|o| o.idle_timeout)
            .as_ref()
            .map(duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(default)
    }

    fn upstream_protocol(&mut self, c: &PbCluster, place: &str) -> UpstreamProtocol {
        #[allow(deprecated)]
        let legacy_h2 = c.http2_protocol_options.is_some();
        if legacy_h2 {
            return UpstreamProtocol::Http2;
        }
        let Some(any) = c
            .typed_extension_protocol_options
            .get(names::HTTP_PROTOCOL_OPTIONS)
        else {
            return UpstreamProtocol::Http1;
        };
        let place = format!(
            "{place}.typed_extension_protocol_options[{:?}]",
            names::HTTP_PROTOCOL_OPTIONS
        );
        let Some(opts) = self.unpack::<HttpProtocolOptions>(any, &place) else {
            return UpstreamProtocol::Http1;
        };
        use explicit_http_config::ProtocolConfig as P;
        match opts.upstream_protocol_options {
            Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
                match e.protocol_config {
                    Some(P::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                    Some(P::HttpProtocolOptions(_)) | None => UpstreamProtocol::Http1,
                    Some(P::Http3ProtocolOptions(_)) => {
                        self.problem(place, "HTTP/3 upstreams are not supported");
                        UpstreamProtocol::Http1
                    }
                }
            }
            None => UpstreamProtocol::Http1,
            Some(_) => {
                self.problem(place, "only explicit_http_config is supported");
                UpstreamProtocol::Http1
            }
        }
    }

    fn socket_address(&mut self, addr: Option<&Address>, place: &str) -> Option<(String, u16)> {
        let Some(address::Address::SocketAddress(sa)) = addr.and_then(|a| a.address.as_ref())
        else {
            self.problem(place, "a socket_address is required");
            return None;
        };
        let port = match sa.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p).ok(),
            _ => None,
        };
        let Some(port) = port else {
            self.problem(place, "port_value must be 0-65535");
            return None;
        };
        if sa.address.is_empty() {
            self.problem(place, "address must not be empty");
            return None;
        }
        Some((sa.address.clone(), port))
    }

    fn unpack<T: Message + Name + Default>(&mut self, any: &Any, place: &str) -> Option<T> {
        if any.type_url.rsplit('/').next() != Some(T::full_name().as_str()) {
            self.problem(
                place,
                format!("expected {}, got {:?}", T::full_name(), any.type_url),
            );
            return None;
        }
        self.ok(T::decode(any.value.as_slice()), place)
    }

    // ---- listeners ----

    fn listener(
        &mut self,
        l: &PbListener,
        route_configs: &HashMap<&str, &pb_route::RouteConfiguration>,
        place: &str,
    ) -> Option<Listener> {
        let (host, port) = self.socket_address(l.address.as_ref(), &format!("{place}.address"))?;
        let Ok(ip) = host.parse::<IpAddr>() else {
            self.problem(
                format!("{place}.address"),
                format!("{host:?} is not an IP address"),
            );
            return None;
        };
        let address = SocketAddr::new(ip, port);
        if l.filter_chains.len() != 1 || l.default_filter_chain.is_some() {
            self.problem(
                format!("{place}.filter_chains"),
                "exactly one filter chain is supported",
            );
            return None;
        }
        let chain = &l.filter_chains[0];
        if chain.filter_chain_match.is_some() {
            self.problem(
                format!("{place}.filter_chains[0].filter_chain_match"),
                "not supported yet",
            );
        }
        let tls = match &chain.transport_socket {
            Some(t) => {
                Some(self.listener_tls(t, &format!("{place}.filter_chains[0].transport_socket"))?)
            }
            None => None,
        };
        if !l.listener_filters.is_empty() {
            self.problem(
                format!("{place}.listener_filters"),
                "listener filters are not supported yet",
            );
        }
        let [filter] = chain.filters.as_slice() else {
            self.problem(
                format!("{place}.filter_chains[0].filters"),
                "exactly one network filter (http_connection_manager or tcp_proxy) is supported",
            );
            return None;
        };
        let fplace = format!("{place}.filter_chains[0].filters[0]");
        let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            self.problem(&fplace, "typed_config is required");
            return None;
        };
        let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
        let kind = if type_name == hcm::HttpConnectionManager::full_name() {
            let manager = self.unpack::<hcm::HttpConnectionManager>(any, &fplace)?;
            ListenerKind::Http(self.http_listener(&manager, route_configs, &fplace)?)
        } else if type_name == tcp::TcpProxy::full_name() {
            let proxy = self.unpack::<tcp::TcpProxy>(any, &fplace)?;
            ListenerKind::Tcp(self.tcp_listener(&proxy, &fplace)?)
        } else {
            self.problem(
                &fplace,
                format!("unsupported network filter {:?} ({type_name})", filter.name),
            );
            return None;
        };
        Some(Listener {
            name: Arc::from(l.name.as_str()),
            address,
            kind,
            tls,
        })
    }

    fn tcp_listener(&mut self, p: &tcp::TcpProxy, place: &str) -> Option<TcpListener> {
        use tcp::tcp_proxy::ClusterSpecifier as C;
        let targets: Vec<(String, u32)> = match &p.cluster_specifier {
            Some(C::Cluster(name)) => vec![(name.clone(), 1)],
            Some(C::WeightedClusters(w)) => w
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.weight))
                .collect(),
            None => {
                self.problem(place, "tcp_proxy needs a cluster");
                return None;
            }
        };
        let backends = self.backends(&targets, &format!("{place}.cluster"))?;
        let idle = p
            .idle_timeout
            .as_ref()
            .map(duration)
            .unwrap_or(DEFAULT_IDLE_TIMEOUT);
        Some(TcpListener {
            backends,
            idle_timeout: (!idle.is_zero()).then_some(idle),
            access_logs: self.access_logs(&p.access_log, place),
        })
    }

    fn http_listener(
        &mut self,
        m: &hcm::HttpConnectionManager,
        route_configs: &HashMap<&str, &pb_route::RouteConfiguration>,
        place: &str,
    ) -> Option<HttpListener> {
        use hcm::http_connection_manager::RouteSpecifier as R;
        self.filter_defaults = policy::FilterDefaults::default();
        for (i, f) in m.http_filters.iter().enumerate() {
            let typed = match &f.config_type {
                Some(hcm::http_filter::ConfigType::TypedConfig(a)) => Some(a),
                _ => None,
            };
            let type_is = |suffix: &str| typed.is_some_and(|a| a.type_url.ends_with(suffix));
            let is_router = f.name == names::ROUTER
                || type_is("envoy.extensions.filters.http.router.v3.Router");
            let fplace = format!("{place}.http_filters[{i}]");
            if f.name == names::LOCAL_RATELIMIT
                || type_is("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit")
            {
                self.filter_defaults.ratelimit_filter = true;
                // A bucket on the filter itself would be one bucket for the whole
                // listener; Weft's buckets are per route, so it must be set there.
                let own = typed.and_then(|a| {
                    self.unpack::<envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit>(a, &fplace)
                });
                if own.is_some_and(|r| r.token_bucket.is_some() || !r.descriptors.is_empty()) {
                    self.problem(
                        format!("{fplace}.typed_config"),
                        "a listener-wide bucket is not supported; set token_bucket per route (typed_per_filter_config)",
                    );
                }
            } else if f.name == names::FAULT
                || type_is("envoy.extensions.filters.http.fault.v3.HTTPFault")
            {
                self.filter_defaults.fault_filter = true;
                self.filter_defaults.fault = typed
                    .and_then(|a| self.unpack::<envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault>(a, &fplace))
                    // An empty fault filter config is the usual way to enable it per route.
                    .filter(|f| f.delay.is_some() || f.abort.is_some());
            } else if authz::is_rbac(f) {
                // Read together below: deny and allow filters make one policy.
            } else if f.name == crate::authn::FILTER_NAME
                || type_is("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication")
            {
                self.filter_defaults.jwt = typed
                    .and_then(|a| self.unpack::<envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::JwtAuthentication>(a, &fplace))
                    .and_then(|c| self.jwt_authn(&c, &fplace))
                    .map(Arc::new);
            } else if f.name == crate::http::cors::FILTER_NAME
                || type_is("envoy.extensions.filters.http.cors.v3.Cors")
            {
                self.filter_defaults.cors_filter = true;
            } else if !is_router && !f.is_optional {
                self.problem(
                    format!("{place}.http_filters[{i}]"),
                    format!("unsupported HTTP filter {:?}", f.name),
                );
            }
        }
        let mut upgrades: Vec<String> = m
            .upgrade_configs
            .iter()
            .filter(|u| u.enabled.map(|e| e.value).unwrap_or(true))
            .map(|u| u.upgrade_type.to_ascii_lowercase())
            .collect();
        upgrades.dedup();
        let (rc, rc_place) = match &m.route_specifier {
            Some(R::Rds(rds)) => match route_configs.get(rds.route_config_name.as_str()) {
                Some(rc) => (
                    *rc,
                    format!("RouteConfiguration {:?}", rds.route_config_name),
                ),
                None => {
                    self.problem(
                        format!("{place}.rds.route_config_name"),
                        format!("unknown route configuration {:?}", rds.route_config_name),
                    );
                    return None;
                }
            },
            Some(R::RouteConfig(rc)) => (rc, format!("{place}.route_config")),
            _ => {
                self.problem(
                    place,
                    "rds or route_config is required (scoped routes are not supported)",
                );
                return None;
            }
        };
        let authz = self.rbac_filters(&m.http_filters, place).map(Arc::new);
        let path_options = self.path_options(m, place);
        let virtual_hosts = self.route_configuration(rc, &upgrades, &rc_place);
        Some(HttpListener {
            authz,
            path_options,
            jwt: self.filter_defaults.jwt.clone(),
            route_config: Arc::from(rc.name.as_str()),
            virtual_hosts,
            request_headers_timeout: m
                .request_headers_timeout
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_REQUEST_HEADERS_TIMEOUT),
            max_request_headers: m
                .max_request_headers_kb
                .map(|k| k.value)
                .unwrap_or(DEFAULT_MAX_REQUEST_HEADERS_KB)
                as usize
                * 1024,
            access_logs: self.access_logs(&m.access_log, place),
            tracing: self.tracing(m.tracing.as_ref(), place),
            // Envoy's default downstream idle timeout is one hour; zero turns it off.
            idle_timeout: match m
                .common_http_protocol_options
                .as_ref()
                .and_then(|o| o.idle_timeout.as_ref())
            {
                Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
                None => Some(DEFAULT_IDLE_TIMEOUT),
            },
        })
    }

    fn route_configuration(
        &mut self,
        rc: &pb_route::RouteConfiguration,
        upgrades: &[String],
        place: &str,
    ) -> Vec<VirtualHost> {
        let global_req = self.header_ops(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            &format!("{place}.request_headers"),
        );
        let global_resp = self.header_ops(
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
            &format!("{place}.response_headers"),
        );
        let mut seen_domains = HashSet::new();
        let mut out = Vec::new();
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            let vplace = format!("{place}.virtual_hosts[{i}]");
            let mut domains = Vec::new();
            for (j, d) in vh.domains.iter().enumerate() {
                match parse_domain(d) {
                    Ok(dom) => {
                        if !seen_domains.insert(d.to_ascii_lowercase()) {
                            self.problem(
                                format!("{vplace}.domains[{j}]"),
                                format!("domain {d:?} appears in two virtual hosts"),
                            );
                        }
                        domains.push(dom);
                    }
                    Err(e) => self.problem(format!("{vplace}.domains[{j}]"), e),
                }
            }
            if domains.is_empty() {
                self.problem(
                    format!("{vplace}.domains"),
                    "at least one domain is required",
                );
            }
            let mut request_headers = global_req.clone();
            let vreq = self.header_ops(
                &vh.request_headers_to_add,
                &vh.request_headers_to_remove,
                &format!("{vplace}.request_headers"),
            );
            request_headers.remove.extend(vreq.remove);
            request_headers.add.extend(vreq.add);
            let mut response_headers = global_resp.clone();
            let vresp = self.header_ops(
                &vh.response_headers_to_add,
                &vh.response_headers_to_remove,
                &format!("{vplace}.response_headers"),
            );
            response_headers.remove.extend(vresp.remove);
            response_headers.add.extend(vresp.add);
            let mut names = HashSet::new();
            let mut routes = Vec::new();
            for (j, r) in vh.routes.iter().enumerate() {
                let rplace = format!("{vplace}.routes[{j}]");
                if !r.name.is_empty() && !names.insert(r.name.as_str()) {
                    self.problem(
                        format!("{rplace}.name"),
                        format!("duplicate route name {:?}", r.name),
                    );
                }
                self.vhost_retry = (vh.retry_policy.clone(), vhost_buffer_limit(vh));
                if let Some(route) = self.route(r, upgrades, &rplace, vh, j) {
                    routes.push(route);
                }
            }
            out.push(VirtualHost {
                name: Arc::from(vh.name.as_str()),
                domains,
                routes,
                request_headers,
                response_headers,
            });
        }
        out
    }

    fn route(
        &mut self,
        r: &pb_route::Route,
        upgrades: &[String],
        place: &str,
        vh: &pb_route::VirtualHost,
        index: usize,
    ) -> Option<Route> {
        let vhost = vh.name.as_str();
        let matcher = self.route_match(r.r#match.as_ref(), &format!("{place}.match"))?;
        let action = match &r.action {
            Some(pb_route::route::Action::Route(a)) => {
                let aplace = format!("{place}.route");
                let mut f = self.forward(a, upgrades, &matcher, &aplace)?;
                let buffer = route_buffer_limit(r).or(self.vhost_retry.1);
                let (policy, pplace) = match (&a.retry_policy, self.vhost_retry.0.clone()) {
                    (Some(p), _) => (Some(p.clone()), format!("{aplace}.retry_policy")),
                    (None, Some(p)) => (Some(p), format!("virtual host {vhost:?} retry_policy")),
                    (None, None) => (None, String::new()),
                };
                f.retry = policy
                    .and_then(|p| self.retry_policy(&p, buffer, &pplace))
                    .filter(|p| p.num_retries > 0 && !p.retry_on.is_empty())
                    .map(Box::new);
                f.grpc_timeout = self.grpc_timeout(a.max_stream_duration.as_ref(), &aplace);
                Action::Forward(f)
            }
            Some(pb_route::route::Action::Redirect(a)) => {
                Action::Redirect(self.redirect(a, &format!("{place}.redirect"))?)
            }
            Some(pb_route::route::Action::DirectResponse(a)) => {
                Action::Respond(self.direct_response(a, &format!("{place}.direct_response"))?)
            }
            _ => {
                self.problem(place, "a route needs route, redirect or direct_response");
                return None;
            }
        };
        let request_headers = self.header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &format!("{place}.request_headers"),
        );
        let response_headers = self.header_ops(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            &format!("{place}.response_headers"),
        );
        // Per-filter configs: the route's own win over its virtual host's.
        let mut per_filter = vh.typed_per_filter_config.clone();
        per_filter.extend(r.typed_per_filter_config.clone());
        let actions: &[pb_route::RateLimit] = match &r.action {
            Some(pb_route::route::Action::Route(a)) if !a.rate_limits.is_empty() => &a.rate_limits,
            _ => &vh.rate_limits,
        };
        let filters = self.route_filters(&per_filter, actions, place);
        let id = self.snapshot.route_count;
        self.snapshot.route_count += 1;
        let name = if r.name.is_empty() {
            format!("{vhost}/{index}")
        } else {
            r.name.clone()
        };
        Some(Route {
            id,
            name: Arc::from(name.as_str()),
            matcher,
            action,
            request_headers,
            response_headers,
            rate_limit: filters.ratelimit,
            fault: filters.fault,
            jwt: filters.jwt,
            cors: filters.cors,
        })
    }

    fn route_match(&mut self, m: Option<&pb_route::RouteMatch>, place: &str) -> Option<RouteMatch> {
        use pb_route::route_match::PathSpecifier as P;
        let Some(m) = m else {
            self.problem(place, "match is required");
            return None;
        };
        let unsupported = [
            (m.runtime_fraction.is_some(), "runtime_fraction"),
            (m.grpc.is_some(), "grpc"),
            (m.tls_context.is_some(), "tls_context"),
            (!m.dynamic_metadata.is_empty(), "dynamic_metadata"),
            (!m.cookies.is_empty(), "cookies"),
            (!m.filter_state.is_empty(), "filter_state"),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported yet");
            }
        }
        let case_sensitive = m.case_sensitive.map(|b| b.value).unwrap_or(true);
        let fold = |s: &str| {
            if case_sensitive {
                s.to_owned()
            } else {
                s.to_ascii_lowercase()
            }
        };
        let path = match &m.path_specifier {
            Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(P::Path(p)) => PathMatch::Exact(fold(p)),
            Some(P::SafeRegex(re)) => {
                PathMatch::Regex(self.ok(parse_regex(&re.regex), &format!("{place}.safe_regex"))?)
            }
            Some(P::ConnectMatcher(_)) => PathMatch::Connect,
            Some(P::PathMatchPolicy(ext)) => {
                let tplace = format!("{place}.path_match_policy");
                let any = ext.typed_config.as_ref().or_else(|| {
                    self.problem(&tplace, "typed_config is required");
                    None
                })?;
                let cfg = self.unpack::<UriTemplateMatchConfig>(any, &tplace)?;
                PathMatch::Template(self.ok(Template::parse(&cfg.path_template), &tplace)?)
            }
            Some(P::PathSeparatedPrefix(_)) => {
                self.problem(
                    format!("{place}.path_separated_prefix"),
                    "not supported yet; use prefix",
                );
                return None;
            }
            None => {
                self.problem(place, "a path specifier (prefix, path, safe_regex, path_match_policy or connect_matcher) is required");
                return None;
            }
        };
        let mut headers = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            let hplace = format!("{place}.headers[{i}]");
            let name = h.name.to_ascii_lowercase();
            if !name.starts_with(':') {
                self.ok(parse_header_name(&name), &hplace)?;
            } else if ![":method", ":authority", ":scheme", ":path"].contains(&name.as_str()) {
                self.problem(&hplace, format!("unknown pseudo-header {name:?}"));
            }
            if let Some(condition) = self.header_condition(h, &hplace) {
                headers.push(HeaderCondition {
                    name,
                    condition,
                    invert: h.invert_match,
                    missing_as_empty: h.treat_missing_header_as_empty,
                });
            }
        }
        let mut query = Vec::new();
        for (i, q) in m.query_parameters.iter().enumerate() {
            use pb_route::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            let qplace = format!("{place}.query_parameters[{i}]");
            let condition = match &q.query_parameter_match_specifier {
                Some(Q::StringMatch(s)) => self.string_condition(s, &qplace),
                Some(Q::PresentMatch(p)) => Some(ValueCondition::Present(*p)),
                None => Some(ValueCondition::Present(true)),
            };
            if let Some(condition) = condition {
                query.push(QueryCondition {
                    name: q.name.clone(),
                    condition,
                });
            }
        }
        Some(RouteMatch {
            path,
            case_sensitive,
            headers,
            query,
        })
    }

    fn header_condition(
        &mut self,
        h: &pb_route::HeaderMatcher,
        place: &str,
    ) -> Option<ValueCondition> {
        use pb_route::header_matcher::HeaderMatchSpecifier as H;
        let plain = |p: StringMatch| ValueCondition::Matches {
            pattern: p,
            ignore_case: false,
        };
        #[allow(deprecated)]
        let cond = match &h.header_match_specifier {
            None => ValueCondition::Present(true),
            Some(H::PresentMatch(p)) => ValueCondition::Present(*p),
            Some(H::StringMatch(s)) => return self.string_condition(s, place),
            Some(H::ExactMatch(s)) => plain(StringMatch::Exact(s.clone())),
            Some(H::PrefixMatch(s)) => plain(StringMatch::Prefix(s.clone())),
            Some(H::SuffixMatch(s)) => plain(StringMatch::Suffix(s.clone())),
            Some(H::ContainsMatch(s)) => plain(StringMatch::Contains(s.clone())),
            Some(H::SafeRegexMatch(re)) => {
                plain(StringMatch::Regex(self.ok(parse_regex(&re.regex), place)?))
            }
            Some(H::RangeMatch(_)) => {
                self.problem(place, "range_match is not supported yet");
                return None;
            }
        };
        Some(cond)
    }

    fn string_condition(&mut self, s: &StringMatcher, place: &str) -> Option<ValueCondition> {
        use string_matcher::MatchPattern as P;
        let ic = s.ignore_case;
        let fold = |v: &str| {
            if ic {
                v.to_ascii_lowercase()
            } else {
                v.to_owned()
            }
        };
        let pattern = match &s.match_pattern {
            Some(P::Exact(v)) => StringMatch::Exact(fold(v)),
            Some(P::Prefix(v)) => StringMatch::Prefix(fold(v)),
            Some(P::Suffix(v)) => StringMatch::Suffix(fold(v)),
            Some(P::Contains(v)) => StringMatch::Contains(fold(v)),
            Some(P::SafeRegex(re)) => {
                StringMatch::Regex(self.ok(parse_regex(&re.regex), &format!("{place}.safe_regex"))?)
            }
            Some(P::Custom(_)) | None => {
                self.problem(
                    place,
                    "a string_match needs exact, prefix, suffix, contains or safe_regex",
                );
                return None;
            }
        };
        Some(ValueCondition::Matches {
            pattern,
            // A regex decides case itself; ignore_case applies to the literal forms.
            ignore_case: ic && !matches!(s.match_pattern, Some(P::SafeRegex(_))),
        })
    }

    fn forward(
        &mut self,
        a: &pb_route::RouteAction,
        hcm_upgrades: &[String],
        matcher: &RouteMatch,
        place: &str,
    ) -> Option<Forward> {
        use pb_route::route_action::ClusterSpecifier as C;
        let unsupported = [
            (
                a.retry_policy_typed_config.is_some(),
                "retry_policy_typed_config",
            ),
            (a.hedge_policy.is_some(), "hedge_policy"),
            (
                !a.request_mirror_policies.is_empty(),
                "request_mirror_policies",
            ),
            (
                #[allow(deprecated)]
                a.cors.is_some(),
                "cors",
            ),
            (a.regex_rewrite.is_some(), "regex_rewrite"),
            (a.path_rewrite_policy.is_some(), "path_rewrite_policy"),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported yet");
            }
        }
        let targets: Vec<(String, u32)> = match &a.cluster_specifier {
            Some(C::Cluster(name)) => vec![(name.clone(), 1)],
            Some(C::WeightedClusters(w)) => w
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.weight.map(|v| v.value).unwrap_or(0)))
                .collect(),
            _ => {
                self.problem(place, "cluster or weighted_clusters is required (cluster_header and plugins are not supported)");
                return None;
            }
        };
        let backends = self.backends(&targets, &format!("{place}.cluster"))?;
        let prefix_rewrite = (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone());
        if prefix_rewrite.is_some()
            && matches!(matcher.path, PathMatch::Regex(_) | PathMatch::Template(_))
        {
            self.problem(
                format!("{place}.prefix_rewrite"),
                "needs a prefix or path match",
            );
        }
        let host_rewrite = match &a.host_rewrite_specifier {
            Some(pb_route::route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
                Some(self.ok(
                    parse_header_value(h),
                    &format!("{place}.host_rewrite_literal"),
                )?)
            }
            None => None,
            Some(_) => {
                self.problem(
                    format!("{place}.host_rewrite"),
                    "only host_rewrite_literal is supported",
                );
                None
            }
        };
        let timeout = match &a.timeout {
            Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
            None => Some(ENVOY_DEFAULT_ROUTE_TIMEOUT),
        };
        let mut hash_header = None;
        for (i, hp) in a.hash_policy.iter().enumerate() {
            match &hp.policy_specifier {
                Some(pb_route::route_action::hash_policy::PolicySpecifier::Header(h)) => {
                    if hash_header.is_none() {
                        hash_header = self.ok(
                            parse_header_name(&h.header_name),
                            &format!("{place}.hash_policy[{i}]"),
                        );
                    }
                }
                _ => self.problem(
                    format!("{place}.hash_policy[{i}]"),
                    "only header hash policies are supported",
                ),
            }
        }
        // Upgrades enabled on the connection manager, adjusted by the route's own list.
        let mut upgrades: Vec<String> = hcm_upgrades.to_vec();
        let mut connect_terminate = false;
        for u in &a.upgrade_configs {
            let kind = u.upgrade_type.to_ascii_lowercase();
            let enabled = u.enabled.map(|e| e.value).unwrap_or(true);
            if enabled {
                if !upgrades.contains(&kind) {
                    upgrades.push(kind.clone());
                }
                if kind == "connect" && u.connect_config.is_some() {
                    connect_terminate = true;
                }
            } else {
                upgrades.retain(|x| *x != kind);
            }
        }
        if matches!(matcher.path, PathMatch::Connect) && !connect_terminate {
            self.problem(place, "CONNECT routes need upgrade_configs [{upgrade_type: CONNECT, connect_config: {}}] (forwarding CONNECT upstream is not supported)");
        }
        Some(Forward {
            backends,
            prefix_rewrite,
            host_rewrite,
            timeout,
            hash_header,
            upgrades,
            connect_terminate,
            // Set by the caller, which knows the route's and virtual host's settings.
            retry: None,
            grpc_timeout: Default::default(),
        })
    }

    fn backends(&mut self, targets: &[(String, u32)], place: &str) -> Option<Backends> {
        let mut out = Vec::new();
        let mut ok = true;
        for (name, weight) in targets {
            match self.cluster_ids.get(name) {
                Some(&cluster) => {
                    if *weight > 0 {
                        out.push(Backend {
                            cluster,
                            name: self.snapshot.clusters[cluster].name.clone(),
                            weight: *weight,
                        });
                    }
                }
                None => {
                    self.problem(place, format!("unknown cluster {name:?}"));
                    ok = false;
                }
            }
        }
        let total_weight: u64 = out.iter().map(|b| u64::from(b.weight)).sum();
        if ok && total_weight == 0 {
            self.problem(place, "weights add up to zero");
            ok = false;
        }
        ok.then_some(Backends {
            targets: out,
            total_weight,
        })
    }

    fn redirect(&mut self, a: &pb_route::RedirectAction, place: &str) -> Option<Redirect> {
        use pb_route::redirect_action::{
            PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
        };
        let status = match C::try_from(a.response_code) {
            Ok(C::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
            Ok(C::Found) => StatusCode::FOUND,
            Ok(C::SeeOther) => StatusCode::SEE_OTHER,
            Ok(C::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
            Ok(C::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
            Err(_) => {
                self.problem(format!("{place}.response_code"), "unknown redirect code");
                return None;
            }
        };
        let scheme = match &a.scheme_rewrite_specifier {
            Some(S::HttpsRedirect(true)) => Some("https".to_owned()),
            Some(S::SchemeRedirect(s)) if !s.is_empty() => Some(s.to_ascii_lowercase()),
            _ => None,
        };
        let path = match &a.path_rewrite_specifier {
            Some(P::PathRedirect(p)) => PathRedirect::Replace(p.clone()),
            Some(P::PrefixRewrite(p)) => PathRedirect::Prefix(p.clone()),
            None => PathRedirect::Keep,
            Some(_) => {
                self.problem(format!("{place}.regex_rewrite"), "not supported yet");
                return None;
            }
        };
        let port = match a.port_redirect {
            0 => None,
            p => Some(self.ok(
                u16::try_from(p).map_err(|_| "port_redirect must be 1-65535"),
                &format!("{place}.port_redirect"),
            )?),
        };
        Some(Redirect {
            scheme,
            host: (!a.host_redirect.is_empty()).then(|| a.host_redirect.clone()),
            port,
            path,
            status,
            strip_query: a.strip_query,
        })
    }

    fn direct_response(
        &mut self,
        a: &pb_route::DirectResponseAction,
        place: &str,
    ) -> Option<Respond> {
        let status = self.ok(parse_status(a.status), &format!("{place}.status"))?;
        let body = match a.body.as_ref().and_then(|b| b.specifier.as_ref()) {
            None => bytes::Bytes::new(),
            Some(data_source::Specifier::InlineString(s)) => bytes::Bytes::from(s.clone()),
            Some(data_source::Specifier::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
            Some(_) => {
                self.problem(
                    format!("{place}.body"),
                    "only inline_string and inline_bytes bodies are supported",
                );
                return None;
            }
        };
        Some(Respond { status, body })
    }

    fn header_ops(
        &mut self,
        add: &[HeaderValueOption],
        remove: &[String],
        place: &str,
    ) -> HeaderOps {
        let mut ops = HeaderOps::default();
        for (i, name) in remove.iter().enumerate() {
            if let Some(n) = self.ok(parse_header_name(name), &format!("{place}_to_remove[{i}]")) {
                ops.remove.push(n);
            }
        }
        for (i, opt) in add.iter().enumerate() {
            let hplace = format!("{place}_to_add[{i}]");
            let Some(h) = &opt.header else {
                self.problem(&hplace, "header is required");
                continue;
            };
            let name = self.ok(parse_header_name(&h.key), &hplace);
            let raw = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                &h.raw_value
            };
            let value = self.ok(
                HeaderValue::from_bytes(raw)
                    .map_err(|_| format!("invalid value for header {:?}", h.key)),
                &hplace,
            );
            #[allow(deprecated)]
            let action = match (
                opt.append.map(|b| b.value),
                HeaderAppendAction::try_from(opt.append_action),
            ) {
                (Some(true), _) => AppendAction::Append,
                (Some(false), _) => AppendAction::Overwrite,
                (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => AppendAction::Append,
                (None, Ok(HeaderAppendAction::AddIfAbsent)) => AppendAction::AddIfAbsent,
                (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => AppendAction::Overwrite,
                (None, Ok(HeaderAppendAction::OverwriteIfExists)) => {
                    AppendAction::OverwriteIfExists
                }
                (None, Err(_)) => {
                    self.problem(&hplace, "unknown append_action");
                    continue;
                }
            };
            // Envoy drops headers whose value is empty unless told to keep them.
            let keep = value
                .as_ref()
                .is_some_and(|v| !v.is_empty() || opt.keep_empty_value);
            if let (Some(n), Some(v)) = (name, value)
                && keep
            {
                ops.add.push((n, v, action));
            }
        }
        ops
    }
}

/// A route's request body buffer limit (the retry replay cap), if set.
fn route_buffer_limit(r: &pb_route::Route) -> Option<usize> {
    #[allow(deprecated)]
    let legacy = r.per_request_buffer_limit_bytes;
    buffer_limit(
        r.request_body_buffer_limit.map(|v| v.value),
        legacy.map(|v| v.value),
    )
}

/// A virtual host's request body buffer limit, if set.
fn vhost_buffer_limit(vh: &pb_route::VirtualHost) -> Option<usize> {
    #[allow(deprecated)]
    let legacy = vh.per_request_buffer_limit_bytes;
    buffer_limit(
        vh.request_body_buffer_limit.map(|v| v.value),
        legacy.map(|v| v.value),
    )
}

/// `request_body_buffer_limit`, else the deprecated `per_request_buffer_limit_bytes`.
fn buffer_limit(limit: Option<u64>, legacy: Option<u32>) -> Option<usize> {
    limit
        .or(legacy.map(u64::from))
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
}

fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Duration {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    Duration::new(secs, nanos.min(999_999_999))
}

// ---- parsers shared with the friendly compiler ----

/// Compiles a regular expression that must match the whole input. Size-limited so that
/// a configuration cannot make the proxy build a huge automaton.
pub fn parse_regex(re: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            format!(
                "invalid regex {re:?}: {}",
                e.to_string().lines().last().unwrap_or_default().trim()
            )
        })
}

/// A header name as it may appear on the wire (lowercased).
pub fn parse_header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))
}

/// A header value (visible ASCII and spaces, no control characters).
pub fn parse_header_value(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| format!("invalid header value {value:?}"))
}

/// An HTTP method token.
pub fn parse_method(m: &str) -> Result<Method, String> {
    let method = Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method {m:?}"))?;
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "method {m:?} must be upper case (methods are case-sensitive)"
        ));
    }
    Ok(method)
}

/// A response status between 200 and 599 (1xx cannot be sent as a final response).
pub fn parse_status(code: u32) -> Result<StatusCode, String> {
    u16::try_from(code)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("status {code} is not between 200 and 599"))
}

/// `host:port` or `[v6]:port`, where host is an IP literal or a DNS name.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || {
        format!(
            "invalid endpoint {s:?}: expected host:port such as 10.0.1.5:8080 or cart.shop.svc:8080"
        )
    };
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(bad());
        }
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    // A fully qualified name may end with a dot (`cart.shop.svc.cluster.local.`).
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        });
    if !valid_name || port == 0 {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// A virtual host domain pattern.
pub fn parse_domain(d: &str) -> Result<Domain, String> {
    Domain::parse(d).ok_or_else(|| {
        format!("invalid domain {d:?}: wildcards only as `*`, `*.suffix` or `prefix*`")
    })
}

/// Re-exported for the data path: the route module's decision functions.
pub use route::{select_route, select_vhost};

mod authn;
pub(crate) mod authz;
mod observe;
mod policy;
mod tls;
pub use self::authz::JWT_PAYLOAD_KEY;
pub use self::tls::TLS_TRANSPORT_SOCKET;
#[cfg(test)]
mod tests;
