//! Tests for resource validation: Envoy v3 resources in, a snapshot or every problem with
//! its place out.

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers as PbBreakers, Cluster as PbCluster, OutlierDetection as PbOutlier, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, HeaderValue as PbHeaderValue, HeaderValueOption, Http2ProtocolOptions,
    SocketAddress, TypedExtensionConfig, address, socket_address,
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck as PbHealthCheck, health_check as pb_hc,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, Listener as PbListener, filter,
};
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options, http_protocol_options::explicit_http_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use http::{HeaderMap, Method};

use super::*;
use crate::config::resources::pack;
use crate::snapshot::route::{Mismatch, RequestView};

// ---- builders ----

fn socket(host: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn lbe(host: &str, port: u32, weight: Option<u32>) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(host, port)),
            ..Default::default()
        })),
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        ..Default::default()
    }
}

fn assignment(name: &str, endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn cluster_of(name: &str, kind: cluster::DiscoveryType, endpoints: &[(&str, u32)]) -> PbCluster {
    PbCluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        load_assignment: Some(assignment(
            name,
            endpoints.iter().map(|(h, p)| lbe(h, *p, None)).collect(),
        )),
        ..Default::default()
    }
}

fn static_cluster(name: &str, endpoints: &[(&str, u32)]) -> PbCluster {
    cluster_of(name, cluster::DiscoveryType::Static, endpoints)
}

fn listener_with(name: &str, host: &str, port: u32, filter_name: &str, config: Any) -> PbListener {
    PbListener {
        name: name.to_owned(),
        address: Some(socket(host, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: filter_name.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(config)),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn router_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: names::ROUTER.to_owned(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..Default::default()
    }
}

fn manager(
    route_specifier: hcm::http_connection_manager::RouteSpecifier,
) -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        stat_prefix: "test".to_owned(),
        route_specifier: Some(route_specifier),
        http_filters: vec![router_filter()],
        ..Default::default()
    }
}

fn rds(name: &str) -> hcm::http_connection_manager::RouteSpecifier {
    hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
        route_config_name: name.to_owned(),
        config_source: None,
    })
}

fn http_listener(name: &str, host: &str, port: u32, route_config: &str) -> PbListener {
    listener_with(
        name,
        host,
        port,
        names::HTTP_CONNECTION_MANAGER,
        pack(&manager(rds(route_config))),
    )
}

fn tcp_listener(name: &str, port: u32, cluster: &str) -> PbListener {
    let proxy = tcp::TcpProxy {
        stat_prefix: name.to_owned(),
        cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(
            cluster.to_owned(),
        )),
        ..Default::default()
    };
    listener_with(name, "127.0.0.1", port, names::TCP_PROXY, pack(&proxy))
}

fn route_config(name: &str, vhosts: Vec<pb::VirtualHost>) -> pb::RouteConfiguration {
    pb::RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: name.to_owned(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        routes,
        ..Default::default()
    }
}

fn prefix(p: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path_specifier: Some(pb::route_match::PathSpecifier::Prefix(p.to_owned())),
        ..Default::default()
    }
}

fn path_template(t: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path_specifier: Some(pb::route_match::PathSpecifier::PathMatchPolicy(
            TypedExtensionConfig {
                name: names::URI_TEMPLATE_MATCHER.to_owned(),
                typed_config: Some(pack(&UriTemplateMatchConfig {
                    path_template: t.to_owned(),
                })),
            },
        )),
        ..Default::default()
    }
}

fn path_regex(re: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path_specifier: Some(pb::route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: re.to_owned(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn to_cluster(name: &str) -> pb::route::Action {
    pb::route::Action::Route(pb::RouteAction {
        cluster_specifier: Some(pb::route_action::ClusterSpecifier::Cluster(name.to_owned())),
        ..Default::default()
    })
}

fn weighted(targets: &[(&str, u32)]) -> pb::route::Action {
    pb::route::Action::Route(pb::RouteAction {
        cluster_specifier: Some(pb::route_action::ClusterSpecifier::WeightedClusters(
            pb::WeightedCluster {
                clusters: targets
                    .iter()
                    .map(|(n, w)| pb::weighted_cluster::ClusterWeight {
                        name: (*n).to_owned(),
                        weight: Some(UInt32Value { value: *w }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        )),
        ..Default::default()
    })
}

fn respond(status: u32, body: &str) -> pb::route::Action {
    pb::route::Action::DirectResponse(pb::DirectResponseAction {
        status,
        body: Some(DataSource {
            specifier: Some(
                envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                    body.to_owned(),
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn route(name: &str, m: pb::RouteMatch, action: pb::route::Action) -> pb::Route {
    pb::Route {
        name: name.to_owned(),
        r#match: Some(m),
        action: Some(action),
        ..Default::default()
    }
}

fn header_value_option(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn header_exact(name: &str, value: &str) -> pb::HeaderMatcher {
    pb::HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(pb::header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
                ignore_case: false,
            },
        )),
        ..Default::default()
    }
}

/// One HTTP listener `edge` on 127.0.0.1:8080 with route configuration `edge`: a
/// virtual host `all` for `*` whose only route `r0` sends `/` to cluster `cart`.
fn base() -> Resources {
    Resources {
        listeners: vec![http_listener("edge", "127.0.0.1", 8080, "edge")],
        route_configs: vec![route_config(
            "edge",
            vec![vhost(
                "all",
                &["*"],
                vec![route("r0", prefix("/"), to_cluster("cart"))],
            )],
        )],
        clusters: vec![static_cluster(
            "cart",
            &[("127.0.0.1", 9101), ("127.0.0.1", 9102)],
        )],
        load_assignments: Vec::new(),
    }
}

fn first_route(r: &mut Resources) -> &mut pb::Route {
    &mut r.route_configs[0].virtual_hosts[0].routes[0]
}

fn first_action(r: &mut Resources) -> &mut pb::RouteAction {
    match &mut first_route(r).action {
        Some(pb::route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

fn first_match(r: &mut Resources) -> &mut pb::RouteMatch {
    first_route(r).r#match.as_mut().unwrap()
}

fn http(s: &Snapshot, listener: usize) -> &HttpListener {
    match &s.listeners[listener].kind {
        ListenerKind::Http(h) => h,
        ListenerKind::Tcp(_) => panic!("listener {listener} is tcp"),
    }
}

fn forward(r: &Route) -> &Forward {
    match &r.action {
        Action::Forward(f) => f,
        other => panic!("route {} does not forward: {other:?}", r.name),
    }
}

fn targets(b: &Backends) -> Vec<(String, u32)> {
    b.targets
        .iter()
        .map(|t| (t.name.to_string(), t.weight))
        .collect()
}

fn problems(r: &Resources) -> Vec<Problem> {
    match translate(r) {
        Ok(_) => panic!("translate accepted invalid resources"),
        Err(p) => p,
    }
}

// ---- snapshots ----

#[test]
fn base_translates() {
    let s = translate(&base()).unwrap();
    assert_eq!(s.listeners.len(), 1);
    let l = &s.listeners[0];
    assert_eq!(&*l.name, "edge");
    assert_eq!(l.address, "127.0.0.1:8080".parse().unwrap());
    let h = http(&s, 0);
    assert_eq!(&*h.route_config, "edge");
    assert_eq!(h.request_headers_timeout, DEFAULT_REQUEST_HEADERS_TIMEOUT);
    assert_eq!(
        h.max_request_headers,
        DEFAULT_MAX_REQUEST_HEADERS_KB as usize * 1024
    );
    assert_eq!(h.virtual_hosts.len(), 1);
    let vh = &h.virtual_hosts[0];
    assert_eq!(&*vh.name, "all");
    assert_eq!(vh.domains, vec![Domain::Any]);
    assert_eq!(vh.routes.len(), 1);
    let r = &vh.routes[0];
    assert_eq!((r.id, &*r.name), (0, "r0"));
    assert!(matches!(&r.matcher.path, PathMatch::Prefix(p) if p == "/"));
    let f = forward(r);
    assert_eq!(targets(&f.backends), vec![("cart".to_owned(), 1)]);
    assert_eq!(f.backends.total_weight, 1);
    assert_eq!(f.backends.targets[0].cluster, s.cluster_id("cart").unwrap());
    // No timeout written: Envoy's default.
    assert_eq!(f.timeout, Some(ENVOY_DEFAULT_ROUTE_TIMEOUT));
    assert_eq!(s.route_count, 1);

    assert_eq!(s.clusters.len(), 1);
    let c = &s.clusters[0];
    assert_eq!(&*c.name, "cart");
    assert_eq!(c.discovery, Discovery::Static);
    assert_eq!(
        c.endpoints,
        vec![
            EndpointSpec {
                host: "127.0.0.1".into(),
                port: 9101,
                weight: 1
            },
            EndpointSpec {
                host: "127.0.0.1".into(),
                port: 9102,
                weight: 1
            },
        ]
    );
    // lb_policy 0 is ROUND_ROBIN in Envoy's enum.
    assert_eq!(c.lb, LbPolicy::RoundRobin);
    assert_eq!(c.protocol, UpstreamProtocol::Http1);
    assert_eq!(
        c.connect_timeout,
        crate::config::compile::DEFAULT_CONNECT_TIMEOUT
    );
    assert_eq!(c.dns_refresh, DEFAULT_DNS_REFRESH);
}

#[test]
fn empty_resources_translate_to_an_empty_snapshot() {
    let s = translate(&Resources::default()).unwrap();
    assert!(s.listeners.is_empty() && s.clusters.is_empty());
    assert_eq!(s.route_count, 0);
}

#[test]
fn route_kinds_translate() {
    let mut r = base();
    r.clusters
        .push(static_cluster("product", &[("10.0.0.1", 80)]));
    r.clusters
        .push(static_cluster("product-v2", &[("10.0.0.2", 80)]));
    let mut ci = prefix("/Cart/");
    ci.case_sensitive = Some(BoolValue { value: false });
    let mut with_timeout = route("timeout", prefix("/t"), to_cluster("cart"));
    if let Some(pb::route::Action::Route(a)) = &mut with_timeout.action {
        a.timeout = Some(PbDuration {
            seconds: 2,
            nanos: 500_000_000,
        });
        a.prefix_rewrite = "/x".to_owned();
    }
    let mut no_timeout = route("no-timeout", prefix("/n"), to_cluster("cart"));
    if let Some(pb::route::Action::Route(a)) = &mut no_timeout.action {
        a.timeout = Some(PbDuration::default());
    }
    r.route_configs[0].virtual_hosts = vec![
        vhost(
            "shop",
            &["shop.example.com", "*.shop.example.com", "api.*"],
            vec![
                route(
                    "product",
                    path_template("/products/{productId}"),
                    to_cluster("product"),
                ),
                route(
                    "split",
                    prefix("/split"),
                    weighted(&[("product", 90), ("product-v2", 10), ("cart", 0)]),
                ),
                route("regex", path_regex("/v[0-9]+/.*"), to_cluster("cart")),
                route("ci", ci, to_cluster("cart")),
                with_timeout,
                no_timeout,
                // an unnamed route gets `vhost/index`
                route("", prefix("/health"), respond(200, "ok")),
            ],
        ),
        vhost(
            "rest",
            &["*"],
            vec![route("all", prefix("/"), to_cluster("cart"))],
        ),
    ];
    let s = translate(&r).unwrap();
    let vhosts = &http(&s, 0).virtual_hosts;
    assert_eq!(
        vhosts[0].domains,
        vec![
            Domain::Exact("shop.example.com".into()),
            Domain::Suffix(".shop.example.com".into()),
            Domain::Prefix("api.".into()),
        ]
    );
    let routes = &vhosts[0].routes;
    let names: Vec<&str> = routes.iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "product",
            "split",
            "regex",
            "ci",
            "timeout",
            "no-timeout",
            "shop/6"
        ]
    );
    let ids: Vec<usize> = routes
        .iter()
        .chain(&vhosts[1].routes)
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert_eq!(s.route_count, 8);

    assert!(
        matches!(&routes[0].matcher.path, PathMatch::Template(t) if t.as_str() == "/products/{productId}")
    );
    // zero-weight targets are dropped
    let split = forward(&routes[1]);
    assert_eq!(
        targets(&split.backends),
        vec![("product".to_owned(), 90), ("product-v2".to_owned(), 10)]
    );
    assert_eq!(split.backends.total_weight, 100);
    assert_eq!(
        split.backends.targets[1].cluster,
        s.cluster_id("product-v2").unwrap()
    );
    assert!(
        matches!(&routes[2].matcher.path, PathMatch::Regex(re) if re.is_match("/v2/x") && !re.is_match("/a/v2/x"))
    );
    // case-insensitive matches store the pattern lowercase
    assert!(!routes[3].matcher.case_sensitive);
    assert!(matches!(&routes[3].matcher.path, PathMatch::Prefix(p) if p == "/cart/"));
    let t = forward(&routes[4]);
    assert_eq!(t.timeout, Some(Duration::from_millis(2500)));
    assert_eq!(t.prefix_rewrite.as_deref(), Some("/x"));
    assert_eq!(forward(&routes[5]).timeout, None);
    match &routes[6].action {
        Action::Respond(resp) => {
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(&resp.body[..], b"ok");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn translated_routes_decide_like_envoy() {
    // The snapshot's decision functions, end to end from resources.
    let mut r = base();
    let mut m = prefix("/");
    m.headers.push(header_exact(":method", "GET"));
    m.headers.push(pb::HeaderMatcher {
        name: "X-Canary".to_owned(),
        header_match_specifier: Some(pb::header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
        ..Default::default()
    });
    m.query_parameters.push(pb::QueryParameterMatcher {
        name: "v".to_owned(),
        query_parameter_match_specifier: Some(
            pb::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact("TWO".to_owned())),
                ignore_case: true,
            }),
        ),
    });
    *first_match(&mut r) = m;
    let s = translate(&r).unwrap();
    let matcher = &http(&s, 0).virtual_hosts[0].routes[0].matcher;
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", "1".parse().unwrap());
    let none = HeaderMap::new();
    type Case<'a> = (Method, Option<&'a str>, &'a HeaderMap, Result<(), Mismatch>);
    let cases: &[Case<'_>] = &[
        (Method::GET, Some("v=two"), &canary, Ok(())),
        (Method::GET, Some("v=Two"), &canary, Ok(())),
        (
            Method::GET,
            Some("v=three"),
            &canary,
            Err(Mismatch::Query("v".into())),
        ),
        (
            Method::GET,
            Some("v=two"),
            &none,
            Err(Mismatch::Header("x-canary".into())),
        ),
        (
            Method::POST,
            Some("v=two"),
            &canary,
            Err(Mismatch::Header(":method".into())),
        ),
    ];
    for (method, query, headers, want) in cases {
        let view = RequestView {
            method,
            host: "h",
            path: "/",
            query: *query,
            scheme: "http",
            headers,
        };
        assert_eq!(matcher.check(&view), *want, "{method} {query:?}");
    }
}

#[test]
fn header_ops_translate_with_append_actions() {
    let mut r = base();
    #[allow(deprecated)]
    let legacy = |append: bool| HeaderValueOption {
        append: Some(BoolValue { value: append }),
        ..header_value_option("x-legacy", "1", HeaderAppendAction::AddIfAbsent)
    };
    let rt = first_route(&mut r);
    rt.request_headers_to_add = vec![
        header_value_option("X-Append", "a", HeaderAppendAction::AppendIfExistsOrAdd),
        header_value_option("x-absent", "b", HeaderAppendAction::AddIfAbsent),
        header_value_option("x-over", "c", HeaderAppendAction::OverwriteIfExistsOrAdd),
        header_value_option("x-if", "d", HeaderAppendAction::OverwriteIfExists),
        legacy(true),
        legacy(false),
    ];
    rt.request_headers_to_remove = vec!["X-Remove".to_owned()];
    rt.response_headers_to_add = vec![header_value_option(
        "x-served-by",
        "weft",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    r.route_configs[0].request_headers_to_add = vec![header_value_option(
        "x-global",
        "g",
        HeaderAppendAction::AppendIfExistsOrAdd,
    )];
    r.route_configs[0].virtual_hosts[0].request_headers_to_remove = vec!["x-vhost".to_owned()];
    let s = translate(&r).unwrap();
    let vh = &http(&s, 0).virtual_hosts[0];
    let route = &vh.routes[0];
    let got: Vec<(&str, &str, AppendAction)> = route
        .request_headers
        .add
        .iter()
        .map(|(n, v, a)| (n.as_str(), v.to_str().unwrap(), *a))
        .collect();
    assert_eq!(
        got,
        vec![
            ("x-append", "a", AppendAction::Append),
            ("x-absent", "b", AppendAction::AddIfAbsent),
            ("x-over", "c", AppendAction::Overwrite),
            ("x-if", "d", AppendAction::OverwriteIfExists),
            // the deprecated `append` wins over append_action
            ("x-legacy", "1", AppendAction::Append),
            ("x-legacy", "1", AppendAction::Overwrite),
        ]
    );
    assert_eq!(route.request_headers.remove, vec!["x-remove"]);
    assert_eq!(route.response_headers.add.len(), 1);
    // route configuration headers are folded into every virtual host
    assert_eq!(vh.request_headers.add.len(), 1);
    assert_eq!(vh.request_headers.add[0].0, "x-global");
    assert_eq!(vh.request_headers.remove, vec!["x-vhost"]);
}

#[test]
fn tcp_listener_translates() {
    let mut r = base();
    r.listeners.push(tcp_listener("db", 5432, "cart"));
    let s = translate(&r).unwrap();
    let l = s.listener("db").unwrap();
    assert_eq!(l.address.port(), 5432);
    match &l.kind {
        ListenerKind::Tcp(t) => {
            assert_eq!(targets(&t.backends), vec![("cart".to_owned(), 1)]);
            assert_eq!(t.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
        }
        ListenerKind::Http(_) => panic!("db is not tcp"),
    }
}

#[test]
fn inline_route_config_translates() {
    let mut r = base();
    let rc = r.route_configs.remove(0);
    r.listeners[0] = listener_with(
        "edge",
        "::1",
        8080,
        names::HTTP_CONNECTION_MANAGER,
        pack(&manager(
            hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc),
        )),
    );
    let s = translate(&r).unwrap();
    assert_eq!(s.listeners[0].address, "[::1]:8080".parse().unwrap());
    assert_eq!(http(&s, 0).virtual_hosts[0].routes.len(), 1);
}

#[test]
fn cluster_settings_translate() {
    use cluster::{DiscoveryType as D, LbPolicy as L};
    let mut r = Resources::default();
    let mut dns = cluster_of("dns", D::StrictDns, &[("Cart.Shop.svc", 8080)]);
    dns.lb_policy = L::LeastRequest as i32;
    #[allow(deprecated)]
    {
        dns.dns_refresh_rate = Some(PbDuration {
            seconds: 30,
            nanos: 0,
        });
    }
    dns.connect_timeout = Some(PbDuration {
        seconds: 1,
        nanos: 0,
    });
    r.clusters.push(dns);
    let mut logical = cluster_of("logical", D::LogicalDns, &[("example.com", 443)]);
    logical.lb_policy = L::Random as i32;
    r.clusters.push(logical);
    let mut ring = static_cluster("ring", &[("10.0.0.1", 80)]);
    ring.lb_policy = L::RingHash as i32;
    ring.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
        cluster::RingHashLbConfig {
            minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 64 }),
            ..Default::default()
        },
    ));
    r.clusters.push(ring);
    let mut h2 = static_cluster("h2", &[("10.0.0.2", 80)]);
    h2.typed_extension_protocol_options.insert(
        names::HTTP_PROTOCOL_OPTIONS.to_owned(),
        pack(&HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Http2ProtocolOptions::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        }),
    );
    r.clusters.push(h2);
    // EDS: endpoints come from the load assignment named by service_name.
    let mut eds = PbCluster {
        name: "eds".to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(D::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            service_name: "eds-service".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    eds.lb_policy = L::RoundRobin as i32;
    r.clusters.push(eds);
    let mut unhealthy = lbe("10.0.0.9", 80, None);
    unhealthy.health_status = 2; // UNHEALTHY: left out, as Envoy does
    r.load_assignments.push(assignment(
        "eds-service",
        vec![lbe("10.0.0.3", 80, Some(3)), unhealthy],
    ));
    let s = translate(&r).unwrap();
    let c = |name: &str| &s.clusters[s.cluster_id(name).unwrap()];

    assert_eq!(c("dns").discovery, Discovery::StrictDns);
    assert_eq!(c("dns").endpoints[0].host, "Cart.Shop.svc");
    assert_eq!(c("dns").lb, LbPolicy::P2cPeakEwma);
    assert_eq!(c("dns").dns_refresh, Duration::from_secs(30));
    assert_eq!(c("dns").connect_timeout, Duration::from_secs(1));
    assert_eq!(c("logical").discovery, Discovery::LogicalDns);
    assert_eq!(c("logical").lb, LbPolicy::Random);
    assert_eq!(c("ring").lb, LbPolicy::RingHash { min_ring_size: 64 });
    assert_eq!(c("h2").protocol, UpstreamProtocol::Http2);
    assert_eq!(c("eds").discovery, Discovery::Static);
    assert_eq!(
        c("eds").endpoints,
        vec![EndpointSpec {
            host: "10.0.0.3".into(),
            port: 80,
            weight: 3
        }]
    );
}

// ---- problems ----

/// Each case breaks the base resources one way and names the place and message.
#[test]
fn problem_table() {
    type Case = (&'static str, fn(&mut Resources), &'static str, &'static str);
    let cases: &[Case] = &[
        (
            "unknown cluster in a route",
            |r| first_route(r).action = Some(to_cluster("nope")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.cluster"#,
            r#"unknown cluster "nope""#,
        ),
        (
            "unknown cluster in weighted clusters",
            |r| first_route(r).action = Some(weighted(&[("cart", 1), ("cart-v2", 1)])),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.cluster"#,
            r#"unknown cluster "cart-v2""#,
        ),
        (
            "unknown cluster in tcp_proxy",
            |r| r.listeners.push(tcp_listener("db", 5432, "postgres")),
            r#"Listener "db".filter_chains[0].filters[0].cluster"#,
            r#"unknown cluster "postgres""#,
        ),
        (
            "duplicate listener name",
            |r| {
                r.listeners
                    .push(http_listener("edge", "127.0.0.1", 8081, "edge"))
            },
            r#"Listener "edge""#,
            "duplicate listener name",
        ),
        (
            "duplicate listener address",
            |r| {
                r.listeners
                    .push(http_listener("edge-2", "127.0.0.1", 8080, "edge"))
            },
            r#"Listener "edge-2""#,
            "address 127.0.0.1:8080 is used by another listener",
        ),
        (
            "empty listener name",
            |r| r.listeners[0].name.clear(),
            r#"Listener """#,
            "name must not be empty",
        ),
        (
            "listener address is a name",
            |r| r.listeners[0].address = Some(socket("localhost", 8080)),
            r#"Listener "edge".address"#,
            r#""localhost" is not an IP address"#,
        ),
        (
            "listener port out of range",
            |r| r.listeners[0].address = Some(socket("127.0.0.1", 70000)),
            r#"Listener "edge".address"#,
            "port_value must be 0-65535",
        ),
        (
            "listener without address",
            |r| r.listeners[0].address = None,
            r#"Listener "edge".address"#,
            "a socket_address is required",
        ),
        (
            "bad path regex",
            |r| first_route(r).r#match = Some(path_regex("/a(")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].match.safe_regex"#,
            r#"invalid regex "/a(""#,
        ),
        (
            "bad header regex",
            |r| {
                first_match(r).headers.push(pb::HeaderMatcher {
                    name: "x-id".to_owned(),
                    header_match_specifier: Some(
                        pb::header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::SafeRegex(
                                RegexMatcher {
                                    regex: "[".to_owned(),
                                    ..Default::default()
                                },
                            )),
                            ignore_case: false,
                        }),
                    ),
                    ..Default::default()
                })
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].match.headers[0].safe_regex"#,
            "invalid regex",
        ),
        (
            "bad template",
            |r| first_route(r).r#match = Some(path_template("/products/x{id}")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].match.path_match_policy"#,
            "mixes text with a variable",
        ),
        (
            "template with rest not last",
            |r| first_route(r).r#match = Some(path_template("/a/**/b")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].match.path_match_policy"#,
            "'**' may only be the last segment",
        ),
        (
            "unsupported network filter",
            |r| {
                r.listeners[0] = listener_with(
                    "edge",
                    "127.0.0.1",
                    8080,
                    "envoy.filters.network.redis_proxy",
                    Any {
                        type_url: "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy".to_owned(),
                        value: Vec::new(),
                    },
                )
            },
            r#"Listener "edge".filter_chains[0].filters[0]"#,
            r#"unsupported network filter "envoy.filters.network.redis_proxy""#,
        ),
        (
            "unsupported HTTP filter",
            |r| {
                let mut m = manager(rds("edge"));
                m.http_filters.insert(
                    0,
                    hcm::HttpFilter {
                        name: "envoy.filters.http.ext_authz".to_owned(),
                        ..Default::default()
                    },
                );
                r.listeners[0] = listener_with(
                    "edge",
                    "127.0.0.1",
                    8080,
                    names::HTTP_CONNECTION_MANAGER,
                    pack(&m),
                );
            },
            r#"Listener "edge".filter_chains[0].filters[0].http_filters[0]"#,
            r#"unsupported HTTP filter "envoy.filters.http.ext_authz""#,
        ),
        (
            "two filter chains",
            |r| {
                let chain = r.listeners[0].filter_chains[0].clone();
                r.listeners[0].filter_chains.push(chain);
            },
            r#"Listener "edge".filter_chains"#,
            "exactly one filter chain",
        ),
        (
            "STATIC cluster with a DNS name",
            |r| r.clusters[0] = static_cluster("cart", &[("cart.shop.svc", 80)]),
            r#"Cluster "cart".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"#,
            r#""cart.shop.svc" is not an IP address"#,
        ),
        (
            "endpoint weight zero",
            |r| {
                r.clusters[0].load_assignment = Some(assignment(
                    "cart",
                    vec![lbe("10.0.0.1", 80, Some(1)), lbe("10.0.0.2", 80, Some(0))],
                ))
            },
            r#"Cluster "cart".load_assignment.endpoints[0].lb_endpoints[1]"#,
            "load_balancing_weight must be at least 1",
        ),
        (
            "endpoint port out of range",
            |r| r.clusters[0] = static_cluster("cart", &[("10.0.0.1", 65536)]),
            r#"Cluster "cart".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"#,
            "port_value must be 0-65535",
        ),
        (
            "duplicate cluster",
            |r| r.clusters.push(static_cluster("cart", &[("10.0.0.1", 80)])),
            r#"Cluster "cart""#,
            "duplicate cluster name",
        ),
        (
            "ORIGINAL_DST cluster",
            |r| r.clusters[0] = cluster_of("cart", cluster::DiscoveryType::OriginalDst, &[]),
            r#"Cluster "cart".type"#,
            "only STATIC, STRICT_DNS, LOGICAL_DNS and EDS",
        ),
        (
            "route weights add up to zero",
            |r| first_route(r).action = Some(weighted(&[("cart", 0)])),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.cluster"#,
            "weights add up to zero",
        ),
        (
            "tcp weights add up to zero",
            |r| {
                let proxy = tcp::TcpProxy {
                    stat_prefix: "db".to_owned(),
                    cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(
                        tcp::tcp_proxy::WeightedCluster {
                            clusters: vec![tcp::tcp_proxy::weighted_cluster::ClusterWeight {
                                name: "cart".to_owned(),
                                weight: 0,
                                ..Default::default()
                            }],
                        },
                    )),
                    ..Default::default()
                };
                r.listeners.push(listener_with(
                    "db",
                    "127.0.0.1",
                    5432,
                    names::TCP_PROXY,
                    pack(&proxy),
                ));
            },
            r#"Listener "db".filter_chains[0].filters[0].cluster"#,
            "weights add up to zero",
        ),
        (
            "unknown route configuration in rds",
            |r| r.route_configs[0].name = "other".to_owned(),
            r#"Listener "edge".filter_chains[0].filters[0].rds.route_config_name"#,
            r#"unknown route configuration "edge""#,
        ),
        (
            "duplicate route configuration",
            |r| {
                let rc = r.route_configs[0].clone();
                r.route_configs.push(rc);
            },
            r#"RouteConfiguration "edge""#,
            "duplicate name",
        ),
        (
            "invalid header name to add",
            |r| {
                first_route(r).request_headers_to_add = vec![header_value_option(
                    "bad header",
                    "v",
                    HeaderAppendAction::AppendIfExistsOrAdd,
                )]
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].request_headers_to_add[0]"#,
            r#"invalid header name "bad header""#,
        ),
        (
            "invalid header name to remove",
            |r| {
                r.route_configs[0].virtual_hosts[0].response_headers_to_remove =
                    vec!["a:b".to_owned()]
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].response_headers_to_remove[0]"#,
            r#"invalid header name "a:b""#,
        ),
        (
            "invalid header value",
            |r| {
                first_route(r).response_headers_to_add = vec![header_value_option(
                    "x-a",
                    "line\nbreak",
                    HeaderAppendAction::AppendIfExistsOrAdd,
                )]
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].response_headers_to_add[0]"#,
            r#"invalid value for header "x-a""#,
        ),
        (
            "invalid header name in a match",
            |r| first_match(r).headers.push(header_exact("x y", "1")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].match.headers[0]"#,
            r#"invalid header name "x y""#,
        ),
        (
            "unknown pseudo-header in a match",
            |r| first_match(r).headers.push(header_exact(":status", "200")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].match.headers[0]"#,
            r#"unknown pseudo-header ":status""#,
        ),
        (
            "status below 200",
            |r| first_route(r).action = Some(respond(199, "")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].direct_response.status"#,
            "status 199 is not between 200 and 599",
        ),
        (
            "status above 599",
            |r| first_route(r).action = Some(respond(600, "")),
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].direct_response.status"#,
            "status 600 is not between 200 and 599",
        ),
        (
            "invalid domain",
            |r| r.route_configs[0].virtual_hosts[0].domains = vec!["a.*.com".to_owned()],
            r#"RouteConfiguration "edge".virtual_hosts[0].domains[0]"#,
            r#"invalid domain "a.*.com""#,
        ),
        (
            "domain in two virtual hosts",
            |r| {
                let vh = vhost("again", &["*"], Vec::new());
                r.route_configs[0].virtual_hosts.push(vh);
            },
            r#"RouteConfiguration "edge".virtual_hosts[1].domains[0]"#,
            r#"domain "*" appears in two virtual hosts"#,
        ),
        (
            "route without action",
            |r| first_route(r).action = None,
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0]"#,
            "a route needs route, redirect or direct_response",
        ),
        (
            "route without match",
            |r| first_route(r).r#match = None,
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].match"#,
            "match is required",
        ),
        (
            "unknown retry condition",
            |r| {
                first_action(r).retry_policy = Some(pb::RetryPolicy {
                    retry_on: "5xx,sometimes".to_owned(),
                    ..Default::default()
                })
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.retry_policy.retry_on"#,
            "unknown retry condition \"sometimes\"",
        ),
        (
            "unsupported retry field",
            |r| {
                first_action(r).retry_policy = Some(pb::RetryPolicy {
                    retry_on: "5xx".to_owned(),
                    per_try_idle_timeout: Some(Default::default()),
                    ..Default::default()
                })
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.retry_policy.per_try_idle_timeout"#,
            "not supported yet",
        ),
        (
            "retriable request header other than :method",
            |r| {
                first_action(r).retry_policy = Some(pb::RetryPolicy {
                    retry_on: "5xx".to_owned(),
                    retriable_request_headers: vec![pb::HeaderMatcher {
                        name: "x-retry".to_owned(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.retry_policy.retriable_request_headers[0]"#,
            "only exact `:method` matchers",
        ),
        (
            "per-route filter config for a filter the listener lacks",
            |r| {
                first_route(r).typed_per_filter_config.insert(
                    names::LOCAL_RATELIMIT.to_owned(),
                    pack(&envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit::default()),
                );
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.local_ratelimit"]"#,
            "the listener has no local_ratelimit HTTP filter",
        ),
        (
            "partial outlier enforcement",
            |r| {
                r.clusters[0].outlier_detection = Some(PbOutlier {
                    enforcing_consecutive_5xx: Some(UInt32Value { value: 50 }),
                    ..Default::default()
                })
            },
            r#"Cluster "cart".outlier_detection.enforcing_consecutive_5xx"#,
            "only 0 or 100 is supported",
        ),
        (
            "two default-priority thresholds",
            |r| {
                r.clusters[0].circuit_breakers = Some(PbBreakers {
                    thresholds: vec![Default::default(), Default::default()],
                    ..Default::default()
                })
            },
            r#"Cluster "cart".circuit_breakers.thresholds[1]"#,
            "a second DEFAULT-priority threshold",
        ),
        (
            "health check with request headers",
            |r| {
                r.clusters[0].health_checks = vec![PbHealthCheck {
                    interval: Some(proto_secs(1)),
                    timeout: Some(proto_secs(1)),
                    health_checker: Some(pb_hc::HealthChecker::HttpHealthCheck(
                        pb_hc::HttpHealthCheck {
                            path: "/healthz".to_owned(),
                            request_headers_to_remove: vec!["x".to_owned()],
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }]
            },
            r#"Cluster "cart".health_checks[0].http_health_check.request_headers_to_add/remove"#,
            "not supported yet",
        ),
        (
            "per-route config of an unknown filter",
            |r| {
                first_route(r).typed_per_filter_config.insert(
                    "envoy.filters.http.ext_authz".to_owned(),
                    pack(&pb::RetryPolicy::default()),
                );
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.ext_authz"]"#,
            "no such HTTP filter in Weft",
        ),
        (
            "prefix rewrite on a regex route",
            |r| {
                first_route(r).r#match = Some(path_regex("/a.*"));
                first_action(r).prefix_rewrite = "/b".to_owned();
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.prefix_rewrite"#,
            "needs a prefix or path match",
        ),
        (
            "duplicate route name",
            |r| {
                let again = route("r0", prefix("/b"), to_cluster("cart"));
                r.route_configs[0].virtual_hosts[0].routes.push(again);
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[1].name"#,
            r#"duplicate route name "r0""#,
        ),
        (
            "connect route without connect_config",
            |r| {
                first_route(r).r#match = Some(pb::RouteMatch {
                    path_specifier: Some(pb::route_match::PathSpecifier::ConnectMatcher(
                        pb::route_match::ConnectMatcher {},
                    )),
                    ..Default::default()
                })
            },
            r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route"#,
            "CONNECT routes need upgrade_configs",
        ),
    ];
    for (label, breaks, place, message) in cases {
        let mut r = base();
        breaks(&mut r);
        let found = problems(&r);
        assert!(
            found
                .iter()
                .any(|p| p.place == *place && p.message.contains(message)),
            "{label}: no problem at {place} saying {message:?}; got {found:#?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut r = base();
    r.clusters
        .push(static_cluster("dns", &[("cart.shop.svc", 80)]));
    r.listeners
        .push(http_listener("edge", "127.0.0.1", 8081, "edge"));
    r.listeners.push(tcp_listener("db", 5432, "postgres"));
    let vh = &mut r.route_configs[0].virtual_hosts[0];
    vh.routes[0].action = Some(to_cluster("nope"));
    vh.routes
        .push(route("re", path_regex("("), to_cluster("cart")));
    vh.routes.push(route("st", prefix("/s"), respond(42, "")));
    let found = problems(&r);
    let places: Vec<&str> = found.iter().map(|p| p.place.as_str()).collect();
    let want = [
        r#"Cluster "dns".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"#,
        r#"Listener "edge""#,
        r#"RouteConfiguration "edge".virtual_hosts[0].routes[0].route.cluster"#,
        r#"RouteConfiguration "edge".virtual_hosts[0].routes[1].match.safe_regex"#,
        r#"RouteConfiguration "edge".virtual_hosts[0].routes[2].direct_response.status"#,
        r#"Listener "db".filter_chains[0].filters[0].cluster"#,
    ];
    for w in want {
        assert!(places.contains(&w), "missing {w}; got {places:#?}");
    }
}

#[test]
fn header_matcher_treat_missing_header_as_empty_is_carried() {
    let mut r = base();
    let mut h = header_exact("x-a", "");
    h.treat_missing_header_as_empty = true;
    first_match(&mut r).headers.push(h);
    let s = translate(&r).unwrap();
    let ListenerKind::Http(http) = &s.listeners[0].kind else {
        panic!("not http")
    };
    let cond = &http.virtual_hosts[0].routes[0].matcher.headers[0];
    assert!(cond.missing_as_empty);
}

// ---- parsers ----

#[test]
fn parse_host_port_table() {
    let cases: &[(&str, Option<(&str, u16)>)] = &[
        ("10.0.1.5:8080", Some(("10.0.1.5", 8080))),
        ("[::1]:80", Some(("::1", 80))),
        ("[2001:db8::1]:443", Some(("2001:db8::1", 443))),
        ("cart.shop.svc:8080", Some(("cart.shop.svc", 8080))),
        ("Cart.Shop.SVC:8080", Some(("cart.shop.svc", 8080))),
        ("localhost:1", Some(("localhost", 1))),
        ("my_service-1:65535", Some(("my_service-1", 65535))),
        ("10.0.1.5", None),
        ("cart", None),
        ("cart:", None),
        (":80", None),
        ("cart:http", None),
        ("cart:65536", None),
        ("cart:0", None),
        ("-cart:80", None),
        ("a..b:80", None),
        ("a b:80", None),
        ("::1:80", None),
        ("[::1]", None),
        ("", None),
    ];
    for (input, want) in cases {
        let got = parse_host_port(input);
        match want {
            Some((h, p)) => assert_eq!(got, Ok(((*h).to_owned(), *p)), "{input:?}"),
            None => {
                let e = got.expect_err(input);
                assert!(e.contains(&format!("{input:?}")), "{input:?}: {e}");
            }
        }
    }
    let long_label = format!("{}.com:80", "a".repeat(64));
    assert!(parse_host_port(&long_label).is_err());
}

#[test]
fn parse_host_port_refuses_port_zero_for_ips_too() {
    // Nothing can be reached at port 0, whether the host is a name or an IP.
    assert!(parse_host_port("cart:0").is_err());
    assert!(parse_host_port("10.0.1.5:0").is_err());
    assert!(parse_host_port("[::1]:0").is_err());
}

#[test]
fn parse_method_table() {
    let cases: &[(&str, Option<Method>)] = &[
        ("GET", Some(Method::GET)),
        ("POST", Some(Method::POST)),
        ("CONNECT", Some(Method::CONNECT)),
        ("PURGE", Some(Method::from_bytes(b"PURGE").unwrap())),
        ("get", None),
        ("Get", None),
        ("", None),
        ("G T", None),
        ("GET\n", None),
    ];
    for (input, want) in cases {
        assert_eq!(parse_method(input).ok(), *want, "{input:?}");
    }
    assert!(parse_method("get").unwrap_err().contains("upper case"));
}

#[test]
fn parse_status_table() {
    let cases: &[(u32, Option<u16>)] = &[
        (0, None),
        (99, None),
        (100, None),
        (199, None),
        (200, Some(200)),
        (204, Some(204)),
        (418, Some(418)),
        (599, Some(599)),
        (600, None),
        (1000, None),
        (65_536 + 200, None),
        (u32::MAX, None),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_status(*input).ok().map(|s| s.as_u16()),
            *want,
            "{input}"
        );
    }
}

#[test]
fn parse_regex_is_anchored() {
    let cases: &[(&str, &str, bool)] = &[
        ("/a", "/a", true),
        ("/a", "/a/b", false),
        ("/a", "x/a", false),
        ("a|b", "a", true),
        ("a|b", "ab", false),
        ("^/a$", "/a", true),
        ("/v[0-9]+", "/v12", true),
        ("/v[0-9]+", "/v12x", false),
        (".*", "", true),
        ("(?i)/cart", "/CART", true),
    ];
    for (re, input, want) in cases {
        let r = parse_regex(re).unwrap();
        assert_eq!(r.is_match(input), *want, "{re:?} on {input:?}");
    }
    for bad in ["(", "[a-", "a{2,1}", "\\"] {
        let e = parse_regex(bad).unwrap_err();
        assert!(e.starts_with(&format!("invalid regex {bad:?}")), "{e}");
    }
    // Size-limited: a configuration cannot make the proxy build a huge automaton.
    assert!(parse_regex(r"(?:\w{100}){100}").is_err());
}

#[test]
fn parse_header_name_and_value() {
    let names: &[(&str, Option<&str>)] = &[
        ("x-a", Some("x-a")),
        ("X-Forwarded-For", Some("x-forwarded-for")),
        ("a b", None),
        ("a:b", None),
        ("", None),
    ];
    for (input, want) in names {
        assert_eq!(
            parse_header_name(input).ok().as_ref().map(|n| n.as_str()),
            *want,
            "{input:?}"
        );
    }
    let values: &[(&str, bool)] = &[
        ("ok", true),
        ("a b", true),
        ("", true),
        ("a\nb", false),
        ("a\rb", false),
    ];
    for (input, ok) in values {
        assert_eq!(parse_header_value(input).is_ok(), *ok, "{input:?}");
    }
}

#[test]
fn parse_domain_names_the_rule() {
    assert_eq!(parse_domain("*.a.com"), Ok(Domain::Suffix(".a.com".into())));
    let e = parse_domain("a*b").unwrap_err();
    assert!(e.contains(r#""a*b""#) && e.contains("`*.suffix`"), "{e}");
}

fn proto_secs(n: i64) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: n,
        nanos: 0,
    }
}

#[test]
fn envoy_cluster_limits_follow_envoy_defaults() {
    use crate::snapshot::policy::Limits;
    // (thresholds given, max_retries expected)
    let cases: &[(Option<PbBreakers>, u32)] = &[
        (None, Limits::default().max_retries),
        (
            Some(PbBreakers {
                thresholds: vec![Default::default()],
                ..Default::default()
            }),
            3,
        ),
        (
            Some(PbBreakers {
                thresholds: vec![
                    envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds {
                        retry_budget: Some(Default::default()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            u32::MAX,
        ),
    ];
    for (breakers, want) in cases {
        let mut r = base();
        r.clusters[0].circuit_breakers = breakers.clone();
        let s = translate(&r).expect("valid");
        assert_eq!(s.clusters[0].limits.max_retries, *want, "{breakers:?}");
    }
}
