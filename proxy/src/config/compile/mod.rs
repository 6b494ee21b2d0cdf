//! The friendly `weft.yaml` compiled to Envoy v3 resources.
//!
//! Each friendly listener becomes a `Listener` (with an HTTP connection manager or a TCP
//! proxy filter) and, for HTTP, a `RouteConfiguration` of the same name; each cluster a
//! `Cluster` with its endpoints inline. The output is exactly what a control plane would
//! push, so the file path and the xDS path share all later validation.
//!
//! The checks here are the ones that need the friendly structure to name the place well
//! (unknown cluster at `listeners[0].routes[2].to`, a bad regex at its line); they call
//! the same parsers as [`crate::snapshot::translate`], which checks everything again at
//! the resource level.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, DataSource, HeaderValue, HeaderValueOption,
    Http2ProtocolOptions, HttpProtocolOptions as HttpCoreOptions, SocketAddress,
    TypedExtensionConfig, address, config_source, header_value_option::HeaderAppendAction,
    socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options, http_protocol_options::explicit_http_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use indexmap::IndexMap;

use super::Resources;
use super::friendly::{self, Backends, EndpointSpec, HeaderOps, ValueMatch};
use super::locate::{Pending, YamlPath};
use super::resources::pack;
use crate::snapshot::template::Template;
use crate::snapshot::translate::{self as checks, names};

/// Default upstream connect timeout (Envoy's).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Compiles a friendly file. On failure every problem found is returned.
pub fn compile(file: &friendly::File) -> Result<(Resources, Option<SocketAddr>), Vec<Pending>> {
    let mut cx = Compiler::default();
    let root = YamlPath::root();
    let admin = file.admin.as_ref().and_then(|a| {
        let path = root.key("admin").key("address");
        cx.socket_addr(&a.address, &path)
    });
    let mut out = Resources::default();

    let clusters_path = root.key("clusters");
    for (name, c) in &file.clusters {
        if let Some(mut cluster) = cx.cluster(name, c, &clusters_path.key(name)) {
            cluster.transport_socket = cx.cluster_tls(c, file, &clusters_path.key(name));
            out.clusters.push(cluster);
        }
    }

    let mut names_seen = HashSet::new();
    let mut addrs_seen = HashSet::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let path = root.key("listeners").index(i);
        if l.name.is_empty() {
            cx.problem(path.key("name"), "listener name must not be empty");
        } else if !names_seen.insert(l.name.as_str()) {
            cx.problem(
                path.key("name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        let addr = cx.socket_addr(&l.address, &path.key("address"));
        if let Some(a) = addr
            && a.port() != 0
            && !addrs_seen.insert(a)
        {
            cx.problem(
                path.key("address"),
                format!("address {a} is used by another listener"),
            );
        }
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        match l.protocol {
            friendly::Protocol::Tcp => {
                for (key, set) in [
                    ("authz", l.authz.is_some()),
                    ("path_normalization", l.path_normalization.is_some()),
                    ("jwt_providers", !l.jwt_providers.is_empty()),
                ] {
                    if set {
                        cx.problem(path.key(key), "applies to HTTP listeners only");
                    }
                }
                if !l.routes.is_empty() || !l.virtual_hosts.is_empty() {
                    cx.problem(
                        path.key("routes"),
                        "a tcp listener has no routes; use `to:`",
                    );
                }
                let Some(to) = &l.to else {
                    cx.problem(path.key("to"), "a tcp listener needs `to: <cluster>`");
                    continue;
                };
                let Some(spec) = cx.tcp_backends(to, &file.clusters, &path.key("to")) else {
                    continue;
                };
                let proxy = tcp::TcpProxy {
                    stat_prefix: l.name.clone(),
                    cluster_specifier: Some(spec),
                    access_log: l.access_log.iter().map(access_log).collect(),
                    ..Default::default()
                };
                let mut built = listener(&l.name, addr, names::TCP_PROXY, pack(&proxy));
                built.filter_chains[0].transport_socket = cx.listener_tls(l, file, &path);
                out.listeners.push(built);
            }
            friendly::Protocol::Http => {
                if l.to.is_some() {
                    cx.problem(
                        path.key("to"),
                        "`to:` is for tcp listeners; http listeners route with `routes:`",
                    );
                }
                if !l.routes.is_empty() && !l.virtual_hosts.is_empty() {
                    cx.problem(
                        path.key("virtual_hosts"),
                        "give either `routes` or `virtual_hosts`, not both",
                    );
                }
                let vhosts = if l.virtual_hosts.is_empty() {
                    let routes = cx.routes(&l.routes, file, &path.key("routes"));
                    vec![route::VirtualHost {
                        name: l.name.clone(),
                        domains: vec!["*".to_owned()],
                        routes,
                        ..Default::default()
                    }]
                } else {
                    cx.virtual_hosts(&l.virtual_hosts, file, &path.key("virtual_hosts"))
                };
                let has_connect = vhosts.iter().flat_map(|v| &v.routes).any(|r| {
                    matches!(
                        r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()),
                        Some(route::route_match::PathSpecifier::ConnectMatcher(_))
                    )
                });
                let mut manager = http_connection_manager(&l.name, has_connect);
                let all_routes: Vec<route::Route> = vhosts
                    .iter()
                    .flat_map(|v| v.routes.iter().cloned())
                    .collect();
                // Order: CORS (a preflight needs no token), JWT (claims for the rules),
                // authorization, then rate limits and faults, then the router.
                let mut filters = Vec::new();
                if friendly_routes(l, &path).any(|(_, r)| r.cors.is_some()) {
                    filters.push(authn::cors_filter());
                }
                let jwt_routes: Vec<(YamlPath, &JwtRouteSpec)> = friendly_routes(l, &path)
                    .filter_map(|(rp, r)| r.jwt.as_ref().map(|j| (rp.key("jwt"), j)))
                    .collect();
                if let Some(f) = cx.jwt_filter(&l.jwt_providers, &jwt_routes, &path) {
                    filters.push(f);
                }
                if let Some(a) = &l.authz {
                    filters.extend(cx.compile_authz(a, &path.key("authz")));
                }
                filters.extend(policy::policy_filters(&all_routes));
                filters.append(&mut manager.http_filters);
                manager.http_filters = filters;
                authz::compile_path_options(l.path_normalization.as_ref(), &mut manager);
                if let Some(idle) = l.idle_timeout {
                    manager.common_http_protocol_options = Some(HttpCoreOptions {
                        idle_timeout: Some(proto_duration(idle)),
                        ..Default::default()
                    });
                }
                manager.access_log = l.access_log.iter().map(access_log).collect();
                if let Some(t) = &file.tracing {
                    let percent = t.sample_percent.unwrap_or(100.0);
                    if !(0.0..=100.0).contains(&percent) {
                        cx.problem(
                            YamlPath::root().key("tracing").key("sample_percent"),
                            "a percentage from 0 to 100 is required",
                        );
                    }
                    manager.tracing = Some(hcm::http_connection_manager::Tracing {
                        random_sampling: Some(Percent { value: percent }),
                        ..Default::default()
                    });
                }
                let mut built = listener(
                    &l.name,
                    addr,
                    names::HTTP_CONNECTION_MANAGER,
                    pack(&manager),
                );
                built.filter_chains[0].transport_socket = cx.listener_tls(l, file, &path);
                out.listeners.push(built);
                out.route_configs.push(route::RouteConfiguration {
                    name: l.name.clone(),
                    virtual_hosts: vhosts,
                    ..Default::default()
                });
            }
        }
    }
    if cx.problems.is_empty() {
        Ok((out, admin))
    } else {
        Err(cx.problems)
    }
}

#[derive(Default)]
struct Compiler {
    problems: Vec<Pending>,
}

impl Compiler {
    fn problem(&mut self, path: YamlPath, message: impl Into<String>) {
        self.problems.push(Pending::new(path, message));
    }

    fn check<T, E: std::fmt::Display>(&mut self, r: Result<T, E>, path: &YamlPath) -> Option<T> {
        r.map_err(|e| self.problem(path.clone(), e.to_string()))
            .ok()
    }

    fn socket_addr(&mut self, s: &str, path: &YamlPath) -> Option<SocketAddr> {
        let r = s.parse::<SocketAddr>().map_err(|_| {
            format!("invalid address {s:?}: expected IP:port such as 0.0.0.0:8080 or [::]:8080")
        });
        self.check(r, path)
    }

    fn virtual_hosts(
        &mut self,
        vhosts: &[friendly::VirtualHost],
        file: &friendly::File,
        path: &YamlPath,
    ) -> Vec<route::VirtualHost> {
        let mut domains_seen: HashSet<String> = HashSet::new();
        let mut names_seen = HashSet::new();
        let mut out = Vec::new();
        for (i, vh) in vhosts.iter().enumerate() {
            let p = path.index(i);
            if vh.domains.is_empty() {
                self.problem(
                    p.key("domains"),
                    "a virtual host needs at least one domain (use \"*\" for any)",
                );
            }
            for (j, d) in vh.domains.iter().enumerate() {
                if checks::parse_domain(d).is_err() {
                    self.problem(
                        p.key("domains").index(j),
                        format!(
                            "invalid domain {d:?}: wildcards only as `*`, `*.suffix` or `prefix*`"
                        ),
                    );
                } else if !domains_seen.insert(d.to_ascii_lowercase()) {
                    self.problem(
                        p.key("domains").index(j),
                        format!("domain {d:?} is already used by another virtual host"),
                    );
                }
            }
            let name = vh.name.clone().unwrap_or_else(|| {
                vh.domains
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("vhost-{i}"))
            });
            if !names_seen.insert(name.clone()) {
                self.problem(
                    p.key("name"),
                    format!("duplicate virtual host name {name:?}"),
                );
            }
            let routes = self.routes(&vh.routes, file, &p.key("routes"));
            let (req_add, req_remove) =
                self.header_ops(vh.request_headers.as_ref(), &p.key("request_headers"));
            let (resp_add, resp_remove) =
                self.header_ops(vh.response_headers.as_ref(), &p.key("response_headers"));
            out.push(route::VirtualHost {
                name,
                domains: vh.domains.clone(),
                routes,
                request_headers_to_add: req_add,
                request_headers_to_remove: req_remove,
                response_headers_to_add: resp_add,
                response_headers_to_remove: resp_remove,
                ..Default::default()
            });
        }
        out
    }

    fn routes(
        &mut self,
        routes: &[friendly::Route],
        file: &friendly::File,
        path: &YamlPath,
    ) -> Vec<route::Route> {
        let mut names_seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let p = path.index(i);
            let name = match &r.name {
                Some(n) => {
                    if !names_seen.insert(n.clone()) {
                        self.problem(p.key("name"), format!("duplicate route name {n:?}"));
                    }
                    n.clone()
                }
                None => {
                    let base = derived_route_name(&r.matches);
                    let mut name = base.clone();
                    let mut n = 2;
                    while !names_seen.insert(name.clone()) {
                        name = format!("{base} #{n}");
                        n += 1;
                    }
                    name
                }
            };
            let matcher = self.route_match(&r.matches, &p.key("match"));
            let mut action = self.route_action(r, file, &p);
            let (mut typed_per_filter_config, rate_limits) = self.route_filters(r, &name, &p);
            if let Some(jwt) = &r.jwt {
                typed_per_filter_config.insert(
                    crate::authn::FILTER_NAME.to_owned(),
                    authn::jwt_route_config(jwt),
                );
            }
            if let Some(cors) = &r.cors
                && let Some(any) = self.cors_route_config(cors, &p.key("cors"))
            {
                typed_per_filter_config.insert(crate::http::cors::FILTER_NAME.to_owned(), any);
            }
            let mut request_body_buffer_limit = None;
            match &mut action {
                Some(route::route::Action::Route(a)) => {
                    a.retry_policy = self.retry_policy(r.retries.as_ref(), &p.key("retries"));
                    a.rate_limits = rate_limits;
                    request_body_buffer_limit = self.replay_limit(r.retries.as_ref());
                }
                _ => {
                    if r.retries.is_some() {
                        self.problem(p.key("retries"), "`retries` apply only to routes with `to`");
                    }
                    if !rate_limits.is_empty() {
                        self.problem(
                            p.key("rate_limit").key("key"),
                            "a keyed rate limit needs a route with `to`",
                        );
                    }
                }
            }
            let (req_add, req_remove) =
                self.header_ops(r.request_headers.as_ref(), &p.key("request_headers"));
            let (resp_add, resp_remove) =
                self.header_ops(r.response_headers.as_ref(), &p.key("response_headers"));
            out.push(route::Route {
                name,
                r#match: Some(matcher),
                action,
                request_headers_to_add: req_add,
                request_headers_to_remove: req_remove,
                response_headers_to_add: resp_add,
                response_headers_to_remove: resp_remove,
                typed_per_filter_config,
                request_body_buffer_limit,
                ..Default::default()
            });
        }
        out
    }

    fn route_match(&mut self, m: &friendly::Match, path: &YamlPath) -> route::RouteMatch {
        use route::route_match::PathSpecifier;
        let given = [
            m.path.is_some(),
            m.prefix.is_some(),
            m.regex.is_some(),
            m.connect,
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given > 1 {
            self.problem(
                path.clone(),
                "give at most one of `path`, `prefix`, `regex` and `connect`",
            );
        }
        let spec = if m.connect {
            Some(PathSpecifier::ConnectMatcher(
                route::route_match::ConnectMatcher {},
            ))
        } else if let Some(p) = &m.path {
            if Template::is_template(p) {
                self.check(Template::parse(p), &path.key("path"));
                Some(PathSpecifier::PathMatchPolicy(TypedExtensionConfig {
                    name: names::URI_TEMPLATE_MATCHER.to_owned(),
                    typed_config: Some(pack(&UriTemplateMatchConfig {
                        path_template: p.clone(),
                    })),
                }))
            } else {
                if !p.starts_with('/') {
                    self.problem(path.key("path"), format!("path {p:?} must start with '/'"));
                }
                Some(PathSpecifier::Path(p.clone()))
            }
        } else if let Some(p) = &m.prefix {
            if !p.starts_with('/') {
                self.problem(
                    path.key("prefix"),
                    format!("prefix {p:?} must start with '/'"),
                );
            }
            Some(PathSpecifier::Prefix(p.clone()))
        } else if let Some(re) = &m.regex {
            self.check(checks::parse_regex(re), &path.key("regex"));
            Some(PathSpecifier::SafeRegex(RegexMatcher {
                regex: re.clone(),
                ..Default::default()
            }))
        } else {
            Some(PathSpecifier::Prefix("/".to_owned()))
        };
        let mut headers = Vec::new();
        if let Some(methods) = &m.method {
            let list = methods.to_vec();
            for (j, meth) in list.iter().enumerate() {
                let p = match methods {
                    friendly::OneOrMany::One(_) => path.key("method"),
                    friendly::OneOrMany::Many(_) => path.key("method").index(j),
                };
                self.check(checks::parse_method(meth), &p);
            }
            let pattern = if list.len() == 1 {
                string_matcher::MatchPattern::Exact(list[0].clone())
            } else {
                string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: list
                        .iter()
                        .map(|m| regex::escape(m))
                        .collect::<Vec<_>>()
                        .join("|"),
                    ..Default::default()
                })
            };
            headers.push(route::HeaderMatcher {
                name: ":method".to_owned(),
                header_match_specifier: Some(
                    route::header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                        match_pattern: Some(pattern),
                        ignore_case: false,
                    }),
                ),
                ..Default::default()
            });
        }
        for (name, vm) in &m.headers {
            let p = path.key("headers").key(name);
            if !name.starts_with(':') {
                self.check(checks::parse_header_name(name), &p);
            }
            if let Some((spec, invert)) = self.value_match(vm, &p) {
                headers.push(route::HeaderMatcher {
                    name: name.to_ascii_lowercase(),
                    invert_match: invert,
                    header_match_specifier: Some(spec),
                    ..Default::default()
                });
            }
        }
        let mut query_parameters = Vec::new();
        for (name, vm) in &m.query {
            let p = path.key("query").key(name);
            use route::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            let spec = match vm {
                ValueMatch::Exact(s) => Some(Q::StringMatch(exact(s))),
                ValueMatch::Rule(rule) => {
                    if rule.not {
                        self.problem(p.key("not"), "`not` is not supported for query parameters");
                    }
                    match rule.present {
                        Some(false) => {
                            self.problem(
                                p.key("present"),
                                "`present: false` is not supported for query parameters",
                            );
                            None
                        }
                        Some(true) => Some(Q::PresentMatch(true)),
                        None => self.string_rule(rule, &p).map(Q::StringMatch),
                    }
                }
            };
            query_parameters.push(route::QueryParameterMatcher {
                name: name.clone(),
                query_parameter_match_specifier: spec,
            });
        }
        route::RouteMatch {
            path_specifier: spec,
            headers,
            query_parameters,
            ..Default::default()
        }
    }

    /// A header condition as an Envoy specifier plus invert flag.
    fn value_match(
        &mut self,
        vm: &ValueMatch,
        path: &YamlPath,
    ) -> Option<(route::header_matcher::HeaderMatchSpecifier, bool)> {
        use route::header_matcher::HeaderMatchSpecifier as H;
        match vm {
            ValueMatch::Exact(s) => Some((H::StringMatch(exact(s)), false)),
            ValueMatch::Rule(rule) => {
                match rule.present {
                    Some(present) => {
                        if rule.exact.is_some()
                            || rule.prefix.is_some()
                            || rule.suffix.is_some()
                            || rule.contains.is_some()
                            || rule.regex.is_some()
                        {
                            self.problem(path.clone(), "give exactly one of exact, prefix, suffix, contains, regex, present");
                        }
                        // Absent is "present, inverted"; `not` inverts once more.
                        Some((H::PresentMatch(true), present == rule.not))
                    }
                    None => self
                        .string_rule(rule, path)
                        .map(|m| (H::StringMatch(m), rule.not)),
                }
            }
        }
    }

    fn string_rule(
        &mut self,
        rule: &friendly::ValueRule,
        path: &YamlPath,
    ) -> Option<StringMatcher> {
        use string_matcher::MatchPattern as P;
        let mut found = Vec::new();
        if let Some(s) = &rule.exact {
            found.push(P::Exact(s.clone()));
        }
        if let Some(s) = &rule.prefix {
            found.push(P::Prefix(s.clone()));
        }
        if let Some(s) = &rule.suffix {
            found.push(P::Suffix(s.clone()));
        }
        if let Some(s) = &rule.contains {
            found.push(P::Contains(s.clone()));
        }
        if let Some(s) = &rule.regex {
            self.check(checks::parse_regex(s), &path.key("regex"));
            found.push(P::SafeRegex(RegexMatcher {
                regex: s.clone(),
                ..Default::default()
            }));
        }
        if found.len() != 1 {
            self.problem(
                path.clone(),
                "give exactly one of exact, prefix, suffix, contains, regex, present",
            );
            return None;
        }
        Some(StringMatcher {
            match_pattern: found.pop(),
            ignore_case: false,
        })
    }

    fn route_action(
        &mut self,
        r: &friendly::Route,
        file: &friendly::File,
        path: &YamlPath,
    ) -> Option<route::route::Action> {
        use route::route::Action;
        let given = [r.to.is_some(), r.redirect.is_some(), r.respond.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if given != 1 {
            self.problem(
                path.clone(),
                "a route needs exactly one of `to`, `redirect` or `respond`",
            );
            return None;
        }
        if (r.redirect.is_some() || r.respond.is_some())
            && (r.rewrite.is_some() || r.timeout.is_some())
        {
            self.problem(
                path.clone(),
                "`rewrite` and `timeout` apply only to routes with `to`",
            );
        }
        if let Some(resp) = &r.respond {
            self.check(
                checks::parse_status(u32::from(resp.status)),
                &path.key("respond").key("status"),
            );
            return Some(Action::DirectResponse(route::DirectResponseAction {
                status: u32::from(resp.status),
                body: resp.body.as_ref().map(|b| DataSource {
                    specifier: Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(b.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            }));
        }
        if let Some(red) = &r.redirect {
            return self
                .redirect(red, &path.key("redirect"))
                .map(Action::Redirect);
        }
        let to = r.to.as_ref()?;
        let to_path = path.key("to");
        let targets = self.backends(to, &file.clusters, &to_path)?;
        let cluster_specifier = if let [(name, _)] = targets.as_slice()
            && matches!(to, Backends::One(_))
        {
            route::route_action::ClusterSpecifier::Cluster(name.clone())
        } else {
            route::route_action::ClusterSpecifier::WeightedClusters(route::WeightedCluster {
                clusters: targets
                    .iter()
                    .map(|(name, w)| route::weighted_cluster::ClusterWeight {
                        name: name.clone(),
                        weight: Some(UInt32Value { value: *w }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        };
        // Ring-hash clusters hash on the header their `hash_on` names.
        let hash_policy = targets
            .iter()
            .filter_map(|(name, _)| file.clusters.get(name)?.hash_on.as_ref())
            .map(|h| route::route_action::HashPolicy {
                policy_specifier: Some(route::route_action::hash_policy::PolicySpecifier::Header(
                    route::route_action::hash_policy::Header {
                        header_name: h.header.to_ascii_lowercase(),
                        regex_rewrite: None,
                    },
                )),
                terminal: false,
            })
            .collect();
        let rewrite = r.rewrite.clone().unwrap_or_default();
        if let Some(h) = &rewrite.host {
            self.check(
                checks::parse_header_value(h),
                &path.key("rewrite").key("host"),
            );
        }
        let templated = r.matches.path.as_deref().is_some_and(Template::is_template);
        if let Some(p) = &rewrite.prefix
            && (r.matches.regex.is_some() || templated || r.matches.connect)
        {
            self.problem(
                path.key("rewrite").key("prefix"),
                format!("prefix rewrite {p:?} needs an exact `path` or a `prefix` match, not a regex or template"),
            );
        }
        let mut upgrade_configs = vec![route::route_action::UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..Default::default()
        }];
        if r.matches.connect {
            upgrade_configs.push(route::route_action::UpgradeConfig {
                upgrade_type: "CONNECT".to_owned(),
                connect_config: Some(Default::default()),
                ..Default::default()
            });
        }
        Some(Action::Route(route::RouteAction {
            cluster_specifier: Some(cluster_specifier),
            prefix_rewrite: rewrite.prefix.unwrap_or_default(),
            host_rewrite_specifier: rewrite
                .host
                .map(route::route_action::HostRewriteSpecifier::HostRewriteLiteral),
            // No timeout written means none (as Istio does); Envoy's own default is 15s.
            timeout: Some(proto_duration(r.timeout.unwrap_or(Duration::ZERO))),
            hash_policy,
            upgrade_configs,
            ..Default::default()
        }))
    }

    fn redirect(
        &mut self,
        red: &friendly::Redirect,
        path: &YamlPath,
    ) -> Option<route::RedirectAction> {
        use route::redirect_action::{
            PathRewriteSpecifier, RedirectResponseCode as C, SchemeRewriteSpecifier,
        };
        let code = match red.code.unwrap_or(301) {
            301 => C::MovedPermanently,
            302 => C::Found,
            303 => C::SeeOther,
            307 => C::TemporaryRedirect,
            308 => C::PermanentRedirect,
            other => {
                self.problem(
                    path.key("code"),
                    format!("redirect code {other} is not one of 301, 302, 303, 307, 308"),
                );
                return None;
            }
        };
        if let Some(s) = &red.scheme
            && s != "http"
            && s != "https"
        {
            self.problem(
                path.key("scheme"),
                format!("scheme {s:?} is not http or https"),
            );
        }
        if red.path.is_some() && red.prefix.is_some() {
            self.problem(path.clone(), "give at most one of `path` and `prefix`");
        }
        Some(route::RedirectAction {
            host_redirect: red.host.clone().unwrap_or_default(),
            port_redirect: red.port.map(u32::from).unwrap_or(0),
            response_code: code as i32,
            strip_query: red.strip_query,
            scheme_rewrite_specifier: red
                .scheme
                .clone()
                .map(SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: red
                .path
                .clone()
                .map(PathRewriteSpecifier::PathRedirect)
                .or_else(|| red.prefix.clone().map(PathRewriteSpecifier::PrefixRewrite)),
        })
    }

    /// Resolves `to:` into (cluster, weight) pairs, checking names and weights.
    fn backends(
        &mut self,
        to: &Backends,
        clusters: &IndexMap<String, friendly::Cluster>,
        path: &YamlPath,
    ) -> Option<Vec<(String, u32)>> {
        let list: Vec<(String, u32, YamlPath)> = match to {
            Backends::One(name) => vec![(name.clone(), 1, path.clone())],
            Backends::Weighted(map) => map
                .iter()
                .map(|(n, w)| (n.clone(), *w, path.key(n)))
                .collect(),
        };
        if list.is_empty() {
            self.problem(path.clone(), "`to` names no cluster");
            return None;
        }
        let mut ok = true;
        for (name, _, p) in &list {
            if !clusters.contains_key(name) {
                self.problem(p.clone(), unknown_cluster(name, clusters));
                ok = false;
            }
        }
        if list.iter().map(|(_, w, _)| u64::from(*w)).sum::<u64>() == 0 {
            self.problem(path.clone(), "weights add up to zero");
            ok = false;
        }
        ok.then(|| list.into_iter().map(|(n, w, _)| (n, w)).collect())
    }

    fn tcp_backends(
        &mut self,
        to: &Backends,
        clusters: &IndexMap<String, friendly::Cluster>,
        path: &YamlPath,
    ) -> Option<tcp::tcp_proxy::ClusterSpecifier> {
        let targets = self.backends(to, clusters, path)?;
        Some(match (to, targets.as_slice()) {
            (Backends::One(_), [(name, _)]) => {
                tcp::tcp_proxy::ClusterSpecifier::Cluster(name.clone())
            }
            _ => tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(
                tcp::tcp_proxy::WeightedCluster {
                    clusters: targets
                        .into_iter()
                        .map(
                            |(name, weight)| tcp::tcp_proxy::weighted_cluster::ClusterWeight {
                                name,
                                weight,
                                ..Default::default()
                            },
                        )
                        .collect(),
                },
            ),
        })
    }

    fn header_ops(
        &mut self,
        ops: Option<&HeaderOps>,
        path: &YamlPath,
    ) -> (Vec<HeaderValueOption>, Vec<String>) {
        let Some(ops) = ops else {
            return (Vec::new(), Vec::new());
        };
        let mut add = Vec::new();
        let sets = ops
            .set
            .iter()
            .map(|kv| (kv, HeaderAppendAction::OverwriteIfExistsOrAdd, "set"));
        let adds = ops
            .add
            .iter()
            .map(|kv| (kv, HeaderAppendAction::AppendIfExistsOrAdd, "add"));
        for ((name, value), action, key) in sets.chain(adds) {
            let p = path.key(key).key(name);
            self.check(checks::parse_header_name(name), &p);
            self.check(checks::parse_header_value(value), &p);
            add.push(HeaderValueOption {
                header: Some(HeaderValue {
                    key: name.to_ascii_lowercase(),
                    value: value.clone(),
                    ..Default::default()
                }),
                append_action: action as i32,
                ..Default::default()
            });
        }
        for (i, name) in ops.remove.iter().enumerate() {
            self.check(
                checks::parse_header_name(name),
                &path.key("remove").index(i),
            );
        }
        (
            add,
            ops.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
        )
    }

    #[allow(deprecated)] // dns_refresh_rate: still the field most configurations use
    fn cluster(&mut self, name: &str, c: &friendly::Cluster, path: &YamlPath) -> Option<Cluster> {
        use cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
        if name.is_empty() {
            self.problem(path.clone(), "cluster name must not be empty");
        }
        let mut any_dns = false;
        let mut lb_endpoints = Vec::new();
        for (i, e) in c.endpoints.iter().enumerate() {
            let p = match e {
                EndpointSpec::Address(_) => path.key("endpoints").index(i),
                EndpointSpec::Weighted(_) => path.key("endpoints").index(i).key("address"),
            };
            let (addr, weight) = e.parts();
            if weight == 0 {
                self.problem(
                    path.key("endpoints").index(i).key("weight"),
                    "endpoint weight must be at least 1",
                );
            }
            let Some((host, port)) = self.check(checks::parse_host_port(addr), &p) else {
                continue;
            };
            any_dns |= host.parse::<std::net::IpAddr>().is_err();
            lb_endpoints.push(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket_address(&host, port)),
                    ..Default::default()
                })),
                load_balancing_weight: Some(UInt32Value {
                    value: weight.max(1),
                }),
                ..Default::default()
            });
        }
        let lb = match c.lb.as_deref().unwrap_or("p2c-ewma") {
            "p2c-ewma" | "p2c" | "least-request" => LbPolicy::LeastRequest,
            "round-robin" => LbPolicy::RoundRobin,
            "ring-hash" => LbPolicy::RingHash,
            "random" => LbPolicy::Random,
            other => {
                self.problem(
                    path.key("lb"),
                    format!("unknown lb {other:?}: use p2c-ewma, round-robin, ring-hash or random"),
                );
                LbPolicy::LeastRequest
            }
        };
        if c.hash_on.is_some() && lb != LbPolicy::RingHash {
            self.problem(path.key("hash_on"), "`hash_on` needs `lb: ring-hash`");
        }
        if lb == LbPolicy::RingHash && c.hash_on.is_none() {
            self.problem(
                path.key("lb"),
                "`lb: ring-hash` needs `hash_on: { header: <name> }`",
            );
        }
        if let Some(h) = &c.hash_on {
            self.check(
                checks::parse_header_name(&h.header),
                &path.key("hash_on").key("header"),
            );
        }
        let mut options = std::collections::HashMap::new();
        let idle = c.idle_timeout.map(|d| HttpCoreOptions {
            idle_timeout: Some(proto_duration(d)),
            ..Default::default()
        });
        match c.protocol.as_deref().unwrap_or("http1") {
            "http1" => {
                if idle.is_some() {
                    let opts = HttpProtocolOptions {
                        common_http_protocol_options: idle,
                        ..Default::default()
                    };
                    options.insert(names::HTTP_PROTOCOL_OPTIONS.to_owned(), pack(&opts));
                }
            }
            "http2" => {
                let opts = HttpProtocolOptions {
                    common_http_protocol_options: idle,
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
                };
                options.insert(names::HTTP_PROTOCOL_OPTIONS.to_owned(), pack(&opts));
            }
            other => {
                self.problem(
                    path.key("protocol"),
                    format!("unknown protocol {other:?}: use http1 or http2"),
                );
            }
        }
        Some(Cluster {
            name: name.to_owned(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(if any_dns {
                DiscoveryType::StrictDns
            } else {
                DiscoveryType::Static
            } as i32)),
            connect_timeout: Some(proto_duration(
                c.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            )),
            dns_refresh_rate: c.dns_refresh.map(proto_duration),
            lb_policy: lb as i32,
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            typed_extension_protocol_options: options,
            circuit_breakers: Some(self.circuit_breakers(c.limits.as_ref(), &path.key("limits"))),
            outlier_detection: self
                .outlier_detection(c.outlier_detection.as_ref(), &path.key("outlier_detection")),
            health_checks: c
                .health_check
                .iter()
                .map(|h| self.health_check(h, name, &path.key("health_check")))
                .collect(),
            common_lb_config: self
                .common_lb_config(c.panic_threshold, &path.key("panic_threshold")),
            ..Default::default()
        })
    }
}

mod authn;
pub mod authz;
pub use self::authn::{CorsSpec, JwksSpec, JwtProviderSpec, JwtRouteSpec, JwtRule};
mod policy;
mod tls;

/// A listener's routes with their YAML paths (`path` is the listener's).
fn friendly_routes<'l>(
    l: &'l friendly::Listener,
    path: &YamlPath,
) -> impl Iterator<Item = (YamlPath, &'l friendly::Route)> + 'l {
    let base = path.clone();
    let direct = l
        .routes
        .iter()
        .enumerate()
        .map(move |(i, r)| (base.key("routes").index(i), r));
    let base = path.clone();
    let hosted = l.virtual_hosts.iter().enumerate().flat_map(move |(v, vh)| {
        let base = base.clone();
        vh.routes
            .iter()
            .enumerate()
            .map(move |(i, r)| (base.key("virtual_hosts").index(v).key("routes").index(i), r))
    });
    direct.chain(hosted)
}

fn unknown_cluster(name: &str, clusters: &IndexMap<String, friendly::Cluster>) -> String {
    let close = clusters
        .keys()
        .map(|k| (strsim::osa_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d);
    match close {
        Some((_, k)) => format!("unknown cluster {name:?} (did you mean {k:?}?)"),
        None if clusters.is_empty() => format!("unknown cluster {name:?}: no clusters are defined"),
        None => format!(
            "unknown cluster {name:?}; defined: {}",
            clusters
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn derived_route_name(m: &friendly::Match) -> String {
    let path = if m.connect {
        "CONNECT".to_owned()
    } else if let Some(p) = &m.path {
        p.clone()
    } else if let Some(p) = &m.prefix {
        format!("{p}*")
    } else if let Some(r) = &m.regex {
        format!("~{r}")
    } else {
        "/*".to_owned()
    };
    match &m.method {
        Some(methods) if !m.connect => format!("{} {path}", methods.to_vec().join(",")),
        _ => path,
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_owned())),
        ignore_case: false,
    }
}

/// `Duration` as the protobuf well-known type.
pub fn proto_duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn socket_address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn listener(
    name: &str,
    addr: SocketAddr,
    filter_name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(&addr.ip().to_string(), addr.port())),
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

/// An Envoy access-log entry: a file (or stdout/stderr) logger with a JSON format naming
/// the fields Weft writes, and for `only_errors` an or-filter of "status >= 400" and
/// "any response flag".
fn access_log(a: &friendly::AccessLog) -> AccessLog {
    use envoy_types::pb::envoy::config::accesslog::v3::{
        AccessLogFilter, ComparisonFilter, OrFilter, ResponseFlagFilter, StatusCodeFilter,
        access_log, access_log_filter::FilterSpecifier, comparison_filter,
    };
    use envoy_types::pb::envoy::config::core::v3::{
        RuntimeUInt32, SubstitutionFormatString, substitution_format_string,
    };
    use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
        FileAccessLog, file_access_log,
    };
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
        StderrAccessLog, StdoutAccessLog, stderr_access_log, stdout_access_log,
    };
    let format = match a.format {
        friendly::LogFormat::Json => Some(SubstitutionFormatString {
            format: Some(substitution_format_string::Format::JsonFormat(
                json_log_fields(),
            )),
            ..Default::default()
        }),
        friendly::LogFormat::Text => None,
    };
    let (name, config) = match a.path.as_str() {
        "stdout" | "/dev/stdout" => (
            "envoy.access_loggers.stdout",
            pack(&StdoutAccessLog {
                access_log_format: format.map(stdout_access_log::AccessLogFormat::LogFormat),
            }),
        ),
        "stderr" | "/dev/stderr" => (
            "envoy.access_loggers.stderr",
            pack(&StderrAccessLog {
                access_log_format: format.map(stderr_access_log::AccessLogFormat::LogFormat),
            }),
        ),
        path => (
            "envoy.access_loggers.file",
            pack(&FileAccessLog {
                path: path.to_owned(),
                access_log_format: format.map(file_access_log::AccessLogFormat::LogFormat),
            }),
        ),
    };
    let filter = a.only_errors.then(|| AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::OrFilter(OrFilter {
            filters: vec![
                AccessLogFilter {
                    filter_specifier: Some(FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
                        comparison: Some(ComparisonFilter {
                            op: comparison_filter::Op::Ge as i32,
                            value: Some(RuntimeUInt32 {
                                default_value: 400,
                                runtime_key: "access_log.min_status".to_owned(),
                            }),
                        }),
                    })),
                },
                AccessLogFilter {
                    filter_specifier: Some(FilterSpecifier::ResponseFlagFilter(
                        ResponseFlagFilter::default(),
                    )),
                },
            ],
        })),
    });
    AccessLog {
        name: name.to_owned(),
        filter,
        config_type: Some(access_log::ConfigType::TypedConfig(config)),
    }
}

/// The JSON record's keys with the Envoy command operator that fills each (what a
/// reader of the Envoy resources sees; Weft writes these keys in this order).
fn json_log_fields() -> envoy_types::pb::google::protobuf::Struct {
    use envoy_types::pb::google::protobuf::{Struct, Value, value};
    const FIELDS: &[(&str, &str)] = &[
        ("timestamp", "%START_TIME%"),
        ("kind", "%PROTOCOL%"),
        ("direction", "%TRAFFIC_DIRECTION%"),
        ("listener", "%LISTENER_NAME%"),
        ("route", "%ROUTE_NAME%"),
        ("cluster", "%UPSTREAM_CLUSTER%"),
        ("upstream_address", "%UPSTREAM_HOST%"),
        ("downstream_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
        ("method", "%REQ(:METHOD)%"),
        ("authority", "%REQ(:AUTHORITY)%"),
        ("path", "%REQ(:PATH)%"),
        ("protocol", "%PROTOCOL%"),
        ("status", "%RESPONSE_CODE%"),
        ("grpc_status", "%GRPC_STATUS_NUMBER%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
        ("bytes_received", "%BYTES_RECEIVED%"),
        ("bytes_sent", "%BYTES_SENT%"),
        ("duration_ms", "%DURATION%"),
        ("upstream_ttfb_ms", "%RESPONSE_DURATION%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
        ("trace_id", "%TRACE_ID%"),
        ("span_id", "%SPAN_ID%"),
        ("user_agent", "%REQ(USER-AGENT)%"),
        ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
        ("peer_identity", "%DOWNSTREAM_PEER_URI_SAN%"),
        ("authz_decision", "%DYNAMIC_METADATA(weft.authz:decision)%"),
        ("authz_rule", "%DYNAMIC_METADATA(weft.authz:rule)%"),
    ];
    Struct {
        fields: FIELDS
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    Value {
                        kind: Some(value::Kind::StringValue((*v).to_owned())),
                    },
                )
            })
            .collect(),
    }
}

fn http_connection_manager(name: &str, connect: bool) -> hcm::HttpConnectionManager {
    let mut upgrade_configs = vec![hcm::http_connection_manager::UpgradeConfig {
        upgrade_type: "websocket".to_owned(),
        ..Default::default()
    }];
    if connect {
        upgrade_configs.push(hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "CONNECT".to_owned(),
            ..Default::default()
        });
    }
    hcm::HttpConnectionManager {
        stat_prefix: name.to_owned(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        use_remote_address: Some(BoolValue { value: true }),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                route_config_name: name.to_owned(),
                config_source: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    resource_api_version: 2, // V3
                    ..Default::default()
                }),
            },
        )),
        http_filters: vec![hcm::HttpFilter {
            name: names::ROUTER.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        upgrade_configs,
        ..Default::default()
    }
}
