//! End-to-end tests of [`load_str`]: friendly and Envoy-format text in, a snapshot or
//! every problem with its YAML path and line out.

use envoy_types::pb::envoy::config::route::v3 as pb_route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::Message;

use super::*;
use crate::snapshot::route::PathMatch;
use crate::snapshot::{Action, ListenerKind};

const SHOP: &str = include_str!("../../../deploy/examples/shop.yaml");

pub(super) fn load(text: &str) -> Loaded {
    match load_str(text, "test.yaml") {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

pub(super) fn problems(text: &str) -> Vec<Problem> {
    match load_str(text, "test.yaml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// A snapshot reduced to what a reader checks: listeners with their routes' paths and
/// targets, and clusters with their endpoints.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    listeners: Vec<(String, String, Vec<VhostShape>)>,
    clusters: Vec<(String, Vec<String>)>,
}

type VhostShape = (Vec<String>, Vec<(String, String, String)>);

fn shape(s: &Snapshot) -> Shape {
    let listeners = s
        .listeners
        .iter()
        .map(|l| {
            let vhosts = match &l.kind {
                ListenerKind::Http(h) => h
                    .virtual_hosts
                    .iter()
                    .map(|vh| {
                        let domains = vh.domains.iter().map(|d| format!("{d:?}")).collect();
                        let routes = vh
                            .routes
                            .iter()
                            .map(|r| {
                                let path = match &r.matcher.path {
                                    PathMatch::Exact(p) => format!("= {p}"),
                                    PathMatch::Prefix(p) => format!("{p}*"),
                                    PathMatch::Template(t) => t.to_string(),
                                    PathMatch::Regex(re) => format!("~{}", re.as_str()),
                                    PathMatch::Connect => "CONNECT".to_owned(),
                                };
                                let action = match &r.action {
                                    Action::Forward(f) => f
                                        .backends
                                        .targets
                                        .iter()
                                        .map(|t| format!("{}:{}", t.name, t.weight))
                                        .collect::<Vec<_>>()
                                        .join(","),
                                    Action::Redirect(red) => format!("redirect {}", red.status),
                                    Action::Respond(resp) => format!("respond {}", resp.status),
                                };
                                (r.name.to_string(), path, action)
                            })
                            .collect();
                        (domains, routes)
                    })
                    .collect(),
                ListenerKind::Tcp(_) => Vec::new(),
            };
            (l.name.to_string(), l.address.to_string(), vhosts)
        })
        .collect();
    let clusters = s
        .clusters
        .iter()
        .map(|c| {
            let eps = c
                .endpoints
                .iter()
                .map(|e| format!("{}:{}", e.host, e.port))
                .collect();
            (c.name.to_string(), eps)
        })
        .collect();
    Shape {
        listeners,
        clusters,
    }
}

// ---- friendly files ----

#[test]
fn shop_example_is_valid() {
    let loaded = load(SHOP);
    assert_eq!(loaded.admin, Some("127.0.0.1:9901".parse().unwrap()));
    let s = &loaded.snapshot;
    assert_eq!(s.route_count, 5);
    let got = shape(s);
    let routes = |v: &[(&str, &str, &str)]| {
        v.iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        got.listeners,
        vec![(
            "shop".to_owned(),
            "127.0.0.1:8080".to_owned(),
            vec![(
                vec!["Any".to_owned()],
                routes(&[
                    ("cart-add-item", "= /cart/addItem", "cart:1"),
                    ("cart", "/cart/*", "cart:1"),
                    ("product", "/products/{productId}", "product:1"),
                    ("user", "/users/{userId}", "user:1"),
                    ("health", "= /healthz", "respond 200 OK"),
                ])
            )]
        )]
    );
    let names: Vec<&str> = got.clusters.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["cart", "product", "user"]);
    assert_eq!(got.clusters[1].1, ["127.0.0.1:9201", "127.0.0.1:9202"]);
    // The product route: GET/HEAD only, 2s timeout.
    let ListenerKind::Http(h) = &s.listeners[0].kind else {
        panic!("shop is http")
    };
    let product = &h.virtual_hosts[0].routes[2];
    assert_eq!(product.matcher.headers.len(), 1);
    assert_eq!(product.matcher.headers[0].name, ":method");
    let Action::Forward(f) = &product.action else {
        panic!("product forwards")
    };
    assert_eq!(f.timeout, Some(std::time::Duration::from_secs(2)));
    // No timeout written means none.
    let Action::Forward(f) = &h.virtual_hosts[0].routes[0].action else {
        panic!("cart forwards")
    };
    assert_eq!(f.timeout, None);
}

#[test]
fn empty_text_is_an_empty_configuration() {
    for text in ["", "  \n", "# nothing\n"] {
        let loaded = load(text);
        assert!(loaded.snapshot.listeners.is_empty(), "{text:?}");
        assert_eq!(loaded.admin, None);
    }
}

/// (what, YAML, place, line, words the message must contain)
type ErrorCase = (
    &'static str,
    &'static str,
    &'static str,
    usize,
    &'static str,
);

#[test]
fn friendly_error_table() {
    let cases: &[ErrorCase] = &[
        (
            "unknown cluster",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { prefix: / }
        to: prodcut
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes[0].to",
            6,
            r#"unknown cluster "prodcut" (did you mean "product"?)"#,
        ),
        (
            "unknown cluster in a weighted split",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - to:
          product: 90
          product-v3: 10
clusters:
  product: { endpoints: [127.0.0.1:9201] }
  product-v2: { endpoints: [127.0.0.1:9202] }
",
            "listeners[0].routes[0].to.product-v3",
            7,
            r#"unknown cluster "product-v3" (did you mean "product-v2"?)"#,
        ),
        (
            "duplicate listener names",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }]
  - name: shop
    address: 127.0.0.1:8081
    routes: [{ to: product }]
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[1].name",
            5,
            r#"duplicate listener name "shop""#,
        ),
        (
            "duplicate listener addresses",
            "\
listeners:
  - name: a
    address: 127.0.0.1:8080
    routes: [{ to: product }]
  - name: b
    address: 127.0.0.1:8080
    routes: [{ to: product }]
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[1].address",
            6,
            "address 127.0.0.1:8080 is used by another listener",
        ),
        (
            "bad regex",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match:
          regex: \"/v[0-9\"
        to: product
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes[0].match.regex",
            6,
            r#"invalid regex "/v[0-9""#,
        ),
        (
            "bad header regex",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match:
          headers:
            x-id: { regex: \"(\" }
        to: product
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes[0].match.headers.x-id.regex",
            7,
            "invalid regex",
        ),
        (
            "bad template",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { path: \"/products/x{id}\" }
        to: product
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes[0].match.path",
            5,
            "mixes text with a variable",
        ),
        (
            "bad listener address",
            "\
listeners:
  - name: shop
    address: localhost:8080
    routes: [{ to: product }]
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].address",
            3,
            r#"invalid address "localhost:8080""#,
        ),
        (
            "bad endpoint address",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }]
clusters:
  product:
    endpoints:
      - 127.0.0.1:9201
      - 127.0.0.1
",
            "clusters.product.endpoints[1]",
            9,
            r#"invalid endpoint "127.0.0.1""#,
        ),
        (
            "bad endpoint address, long form",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }]
clusters:
  product:
    endpoints:
      - address: product.svc
        weight: 2
",
            "clusters.product.endpoints[0].address",
            8,
            r#"invalid endpoint "product.svc""#,
        ),
        (
            "endpoint weight zero",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }]
clusters:
  product:
    endpoints:
      - address: 127.0.0.1:9201
        weight: 0
",
            "clusters.product.endpoints[0].weight",
            9,
            "endpoint weight must be at least 1",
        ),
        (
            "route with two actions",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - to: product
        respond: { status: 200 }
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes[0]",
            5,
            "exactly one of `to`, `redirect` or `respond`",
        ),
        (
            "route without action",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { prefix: /a }
",
            "listeners[0].routes[0]",
            5,
            "exactly one of `to`, `redirect` or `respond`",
        ),
        (
            "ring-hash without hash_on",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }]
clusters:
  product:
    endpoints: [127.0.0.1:9201]
    lb: ring-hash
",
            "clusters.product.lb",
            8,
            "`lb: ring-hash` needs `hash_on",
        ),
        (
            "hash_on without ring-hash",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }]
clusters:
  product:
    endpoints: [127.0.0.1:9201]
    hash_on: { header: x-user }
",
            "clusters.product.hash_on",
            8,
            "`hash_on` needs `lb: ring-hash`",
        ),
        (
            "unknown lb",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }]
clusters:
  product:
    endpoints: [127.0.0.1:9201]
    lb: fastest
",
            "clusters.product.lb",
            8,
            r#"unknown lb "fastest""#,
        ),
        (
            "tcp listener without to",
            "\
listeners:
  - name: db
    address: 127.0.0.1:5432
    protocol: tcp
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            // not in the file: the line is the listener's
            "listeners[0].to",
            2,
            "a tcp listener needs `to: <cluster>`",
        ),
        (
            "tcp listener with routes",
            "\
listeners:
  - name: db
    address: 127.0.0.1:5432
    protocol: tcp
    to: product
    routes: [{ to: product }]
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes",
            6,
            "a tcp listener has no routes",
        ),
        (
            "weights add up to zero",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - to: { product: 0 }
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes[0].to",
            5,
            "weights add up to zero",
        ),
        (
            "bad method",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { path: /a, method: [GET, post] }
        to: product
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].routes[0].match.method[1]",
            5,
            r#"method "post" must be upper case"#,
        ),
        (
            "bad header name to set",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - to: product
        request_headers:
          set: { \"x bad\": v }
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            r#"listeners[0].routes[0].request_headers.set["x bad"]"#,
            7,
            r#"invalid header name "x bad""#,
        ),
        (
            "respond status out of range",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - respond:
          status: 99
",
            "listeners[0].routes[0].respond.status",
            6,
            "status 99 is not between 200 and 599",
        ),
        (
            "bad domain",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    virtual_hosts:
      - domains: [shop.example.com, \"a.*.com\"]
        routes: [{ to: product }]
clusters:
  product: { endpoints: [127.0.0.1:9201] }
",
            "listeners[0].virtual_hosts[0].domains[1]",
            5,
            r#"invalid domain "a.*.com""#,
        ),
        (
            "redirect code",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - redirect:
          scheme: https
          code: 305
",
            "listeners[0].routes[0].redirect.code",
            7,
            "redirect code 305",
        ),
    ];
    for (what, text, place, line, message) in cases {
        let found = problems(text);
        let hit = found.iter().find(|p| p.place == *place);
        let Some(p) = hit else {
            panic!("{what}: no problem at {place}; got {found:#?}");
        };
        assert_eq!(p.line.map(|l| l.0), Some(*line), "{what}: line of {p:?}");
        assert!(
            p.message.contains(message),
            "{what}: {:?} does not say {message:?}",
            p.message
        );
    }
}

/// Errors found while reading the YAML (syntax, unknown fields, wrong types): no path,
/// but the line.
#[test]
fn yaml_error_table() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "unknown field",
            "\
listeners:
  - name: shop
    adress: 127.0.0.1:8080
    routes: []
",
            3,
            "adress",
        ),
        (
            "unknown field in a cluster",
            "\
clusters:
  product:
    endpoints: [127.0.0.1:9201]
    lb_policy: round-robin
",
            4,
            "lb_policy",
        ),
        (
            "YAML syntax error",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes: [{ to: product }
clusters: {}
",
            5,
            "",
        ),
        (
            "mapping value in a plain scalar",
            "\
listeners:
  - name: shop
    address: a: b
",
            3,
            "",
        ),
        (
            "wrong type",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - respond: { status: ok }
",
            5,
            "",
        ),
        (
            "bad duration",
            "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - to: product
        timeout: soon
",
            6,
            "invalid duration",
        ),
    ];
    for (what, text, line, message) in cases {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{what}: {found:#?}");
        let p = &found[0];
        assert_eq!(p.line.map(|l| l.0), Some(*line), "{what}: {p:?}");
        assert!(p.message.contains(message), "{what}: {p:?}");
        // The message is one line; the location is not repeated in it.
        assert!(!p.message.contains('\n'), "{what}: {p:?}");
    }
}

#[test]
fn prefix_rewrite_on_a_template_route_is_located() {
    // A prefix rewrite next to a template is refused by `compile`, so the problem
    // carries its YAML path and line (not only translate's resource place).
    let text = "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { path: \"/products/{id}\" }
        to: product
        rewrite: { prefix: /p }
clusters:
  product: { endpoints: [127.0.0.1:9201] }
";
    let found = problems(text);
    assert!(
        found
            .iter()
            .any(|p| p.place == "listeners[0].routes[0].rewrite.prefix"
                && p.line.map(|l| l.0) == Some(7)),
        "{found:#?}"
    );
}

#[test]
fn every_friendly_problem_is_reported_at_once_in_file_order() {
    let text = "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { regex: \"(\" }
        to: prodcut
      - to: user
clusters:
  product:
    endpoints: [nowhere]
";
    let found = problems(text);
    let got: Vec<(&str, Option<usize>)> = found
        .iter()
        .map(|p| (p.place.as_str(), p.line.map(|l| l.0)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("listeners[0].routes[0].match.regex", Some(5)),
            ("listeners[0].routes[0].to", Some(6)),
            ("listeners[0].routes[1].to", Some(7)),
            ("clusters.product.endpoints[0]", Some(10)),
        ]
    );
    // What `weft check` prints: origin:line:col: place: message, one per line.
    let err = load_str(text, "shop.yaml").unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with("shop.yaml: 4 problems:\n"), "{shown}");
    assert!(
        shown.contains("  shop.yaml:6:9: listeners[0].routes[0].to: unknown cluster \"prodcut\""),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 5, "{shown}");
}

#[test]
fn weighted_to_compiles_to_weighted_clusters() {
    let text = "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { path: \"/products/{productId}\" }
        to: { product: 90, product-v2: 10 }
      - to: { product: 1 }
clusters:
  product: { endpoints: [127.0.0.1:9201] }
  product-v2: { endpoints: [127.0.0.1:9202] }
";
    let loaded = load(text);
    // Envoy resources: weighted_clusters with both weights, even for one target.
    let rc = &loaded.resources.route_configs[0];
    let weights = |i: usize| -> Vec<(String, u32)> {
        let Some(pb_route::route::Action::Route(a)) = &rc.virtual_hosts[0].routes[i].action else {
            panic!("route {i} forwards")
        };
        let Some(pb_route::route_action::ClusterSpecifier::WeightedClusters(w)) =
            &a.cluster_specifier
        else {
            panic!("route {i}: {:?}", a.cluster_specifier)
        };
        w.clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.map(|v| v.value).unwrap_or(0)))
            .collect()
    };
    assert_eq!(
        weights(0),
        vec![("product".to_owned(), 90), ("product-v2".to_owned(), 10)]
    );
    assert_eq!(weights(1), vec![("product".to_owned(), 1)]);
    // Snapshot: the split with cluster indexes resolved.
    let s = &loaded.snapshot;
    let ListenerKind::Http(h) = &s.listeners[0].kind else {
        panic!("http")
    };
    let Action::Forward(f) = &h.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    assert_eq!(f.backends.total_weight, 100);
    let got: Vec<(usize, &str, u32)> = f
        .backends
        .targets
        .iter()
        .map(|t| (t.cluster, &*t.name, t.weight))
        .collect();
    assert_eq!(got, vec![(0, "product", 90), (1, "product-v2", 10)]);
    // r in 0..100: the first 90 go to product.
    assert_eq!(&*f.backends.pick_with(89).name, "product");
    assert_eq!(&*f.backends.pick_with(90).name, "product-v2");
}

#[test]
fn tcp_listener_compiles() {
    let text = "\
listeners:
  - name: db
    address: 127.0.0.1:5432
    protocol: tcp
    to: { pg-a: 1, pg-b: 3 }
clusters:
  pg-a: { endpoints: [127.0.0.1:6001] }
  pg-b: { endpoints: [\"pg-b.db.svc:6002\"] }
";
    let loaded = load(text);
    let ListenerKind::Tcp(t) = &loaded.snapshot.listeners[0].kind else {
        panic!("tcp")
    };
    let got: Vec<(&str, u32)> = t
        .backends
        .targets
        .iter()
        .map(|b| (&*b.name, b.weight))
        .collect();
    assert_eq!(got, vec![("pg-a", 1), ("pg-b", 3)]);
    // A DNS name makes the cluster STRICT_DNS.
    assert_eq!(
        loaded.snapshot.clusters[1].discovery,
        crate::snapshot::Discovery::StrictDns
    );
}

// ---- Envoy format ----

const BOOTSTRAP: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 9902 } }
static_resources:
  listeners:
    - name: shop
      address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: shop
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  name: shop
                  virtual_hosts:
                    - name: shop
                      domains: ["*"]
                      routes:
                        - name: product
                          match:
                            path_match_policy:
                              name: envoy.path.match.uri_template.uri_template_matcher
                              typed_config:
                                "@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                                path_template: "/products/{productId}"
                          route: { cluster: product, timeout: 2s }
                        - name: user
                          match: { prefix: /users/ }
                          route: { cluster: user }
  clusters:
    - name: product
      type: STATIC
      lb_policy: LEAST_REQUEST
      load_assignment:
        cluster_name: product
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9201 } } }
    - name: user
      type: STRICT_DNS
      load_assignment:
        cluster_name: user
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: user.svc, port_value: 9301 } } }
"#;

const RESOURCE_LIST: &str = r#"
resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: shop
    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
    filter_chains:
      - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: shop
              http_filters:
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              rds:
                route_config_name: shop
                config_source: { ads: {} }
  - "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
    name: shop
    virtual_hosts:
      - name: shop
        domains: ["*"]
        routes:
          - name: product
            match:
              path_match_policy:
                name: envoy.path.match.uri_template.uri_template_matcher
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                  path_template: "/products/{productId}"
            route: { cluster: product, timeout: 2s }
          - name: user
            match: { prefix: /users/ }
            route: { cluster: user }
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: product
    type: EDS
    lb_policy: LEAST_REQUEST
    eds_cluster_config: { eds_config: { ads: {} } }
  - "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
    cluster_name: product
    endpoints:
      - lb_endpoints:
          - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9201 } } }
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: user
    type: STRICT_DNS
    load_assignment:
      cluster_name: user
      endpoints:
        - lb_endpoints:
            - endpoint: { address: { socket_address: { address: user.svc, port_value: 9301 } } }
"#;

fn envoy_shape() -> Shape {
    let routes = vec![
        (
            "product".to_owned(),
            "/products/{productId}".to_owned(),
            "product:1".to_owned(),
        ),
        (
            "user".to_owned(),
            "/users/*".to_owned(),
            "user:1".to_owned(),
        ),
    ];
    Shape {
        listeners: vec![(
            "shop".to_owned(),
            "127.0.0.1:8080".to_owned(),
            vec![(vec!["Any".to_owned()], routes)],
        )],
        clusters: vec![
            ("product".to_owned(), vec!["127.0.0.1:9201".to_owned()]),
            ("user".to_owned(), vec!["user.svc:9301".to_owned()]),
        ],
    }
}

#[test]
fn envoy_bootstrap_is_accepted() {
    assert!(envoy_format::looks_like_envoy(BOOTSTRAP));
    let loaded = load(BOOTSTRAP);
    assert_eq!(loaded.admin, Some("127.0.0.1:9902".parse().unwrap()));
    assert_eq!(shape(&loaded.snapshot), envoy_shape());
    let ListenerKind::Http(h) = &loaded.snapshot.listeners[0].kind else {
        panic!("http")
    };
    let Action::Forward(f) = &h.virtual_hosts[0].routes[0].action else {
        panic!("forward")
    };
    assert_eq!(f.timeout, Some(std::time::Duration::from_secs(2)));
    assert_eq!(
        loaded.snapshot.clusters[0].lb,
        crate::snapshot::LbPolicy::P2cPeakEwma
    );
}

#[test]
fn envoy_resource_list_is_accepted() {
    assert!(envoy_format::looks_like_envoy(RESOURCE_LIST));
    let loaded = load(RESOURCE_LIST);
    assert_eq!(loaded.admin, None);
    assert_eq!(loaded.resources.listeners.len(), 1);
    assert_eq!(loaded.resources.route_configs.len(), 1);
    assert_eq!(loaded.resources.clusters.len(), 2);
    assert_eq!(loaded.resources.load_assignments.len(), 1);
    assert_eq!(shape(&loaded.snapshot), envoy_shape());
}

#[test]
fn envoy_format_problems_name_the_resource() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown type",
            "resources:\n  - \"@type\": type.googleapis.com/envoy.config.core.v3.Node\n    id: x\n",
            "resources[0].@type",
        ),
        (
            "unknown field",
            "resources:\n  - \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n    name: c\n    colour: blue\n",
            "resources[0]",
        ),
        (
            "unknown cluster",
            "resources:\n  - \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n    name: db\n    address: { socket_address: { address: 127.0.0.1, port_value: 5432 } }\n    filter_chains:\n      - filters:\n          - name: envoy.filters.network.tcp_proxy\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n              stat_prefix: db\n              cluster: pg\n",
            r#"Listener "db".filter_chains[0].filters[0].cluster"#,
        ),
    ];
    for (what, text, place) in cases {
        let found = problems(text);
        assert!(
            found.iter().any(|p| p.place.starts_with(place)),
            "{what}: nothing at {place}: {found:#?}"
        );
    }
}

#[test]
fn looks_like_envoy_table() {
    let cases: &[(&str, bool)] = &[
        ("static_resources: {}\n", true),
        ("resources: []\n", true),
        ("listeners: []\n", false),
        ("", false),
        ("[1, 2]\n", false),
        ("{ not yaml", false),
    ];
    for (text, want) in cases {
        assert_eq!(envoy_format::looks_like_envoy(text), *want, "{text:?}");
    }
}

// ---- config dump ----

#[test]
fn config_dump_is_envoy_json() {
    let loaded = load(SHOP);
    let dump = loaded.resources.config_dump("7").unwrap();
    let configs = dump["configs"].as_array().unwrap();
    let types: Vec<&str> = configs
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
        ]
    );
    let listeners = &configs[0];
    assert_eq!(listeners["version_info"], "7");
    let dynamic = &listeners["dynamic_listeners"][0];
    assert_eq!(dynamic["name"], "shop");
    let listener = &dynamic["active_state"]["listener"];
    assert_eq!(
        listener["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(listener["name"], "shop");
    // Proto field names, as Envoy prints them (not the camelCase JSON names).
    assert_eq!(
        listener["address"]["socket_address"]["port_value"],
        serde_json::json!(8080)
    );
    let manager = &listener["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        manager["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    assert_eq!(manager["stat_prefix"], "shop");
    assert_eq!(manager["rds"]["route_config_name"], "shop");
    let text = dump.to_string();
    for camel in [
        "filterChains",
        "socketAddress",
        "portValue",
        "statPrefix",
        "versionInfo",
    ] {
        assert!(!text.contains(camel), "{camel} in {text}");
    }
    let cluster = &configs[2]["dynamic_active_clusters"][0]["cluster"];
    assert_eq!(cluster["name"], "cart");
    assert_eq!(cluster["connect_timeout"], "5s");
    let rc = &configs[1]["dynamic_route_configs"][0]["route_config"];
    assert_eq!(rc["virtual_hosts"][0]["routes"][0]["name"], "cart-add-item");
}

#[test]
fn config_dump_reads_back_as_the_same_configuration() {
    // The resources in a dump are an Envoy resource list: loading them gives the same
    // snapshot.
    let loaded = load(SHOP);
    let dump = loaded.resources.config_dump("1").unwrap();
    let configs = &dump["configs"];
    let mut resources = Vec::new();
    for l in configs[0]["dynamic_listeners"].as_array().unwrap() {
        resources.push(l["active_state"]["listener"].clone());
    }
    for r in configs[1]["dynamic_route_configs"].as_array().unwrap() {
        resources.push(r["route_config"].clone());
    }
    for c in configs[2]["dynamic_active_clusters"].as_array().unwrap() {
        resources.push(c["cluster"].clone());
    }
    let text = serde_json::json!({ "resources": resources }).to_string();
    let again = load(&text);
    assert_eq!(shape(&again.snapshot), shape(&loaded.snapshot));
    // Same resources. (Not byte for byte: the access log's JSON format is a protobuf
    // map, which encodes in hash order; so nested messages are compared decoded.)
    let l0 = &loaded.resources.listeners[0];
    let l1 = &again.resources.listeners[0];
    assert_eq!(l0.name, l1.name);
    assert_eq!(l0.address, l1.address);
    let manager = |l: &envoy_types::pb::envoy::config::listener::v3::Listener| {
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) = &l.filter_chains[0].filters[0].config_type
        else {
            panic!("typed_config")
        };
        hcm::HttpConnectionManager::decode(any.value.as_slice()).unwrap()
    };
    let logger = |m: &mut hcm::HttpConnectionManager| {
        use envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType;
        use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::StdoutAccessLog;
        let log = m.access_log.remove(0);
        let Some(ConfigType::TypedConfig(any)) = log.config_type else {
            panic!("typed_config")
        };
        StdoutAccessLog::decode(any.value.as_slice()).unwrap()
    };
    let (mut m0, mut m1) = (manager(l0), manager(l1));
    assert_eq!(logger(&mut m0), logger(&mut m1));
    assert_eq!(m0, m1);
}

/// An Envoy resource list with one HTTP listener whose connection manager carries
/// `extra` (indented YAML keys of the HttpConnectionManager).
fn hcm_with(extra: &str) -> String {
    format!(
        r#"
resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: edge
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }}
    filter_chains:
      - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: edge
              http_filters:
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              route_config:
                name: edge
                virtual_hosts: [ {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }} ] }} ]
{extra}"#
    )
}

fn http_listener(loaded: &Loaded) -> &crate::snapshot::HttpListener {
    match &loaded.snapshot.listeners[0].kind {
        ListenerKind::Http(h) => h,
        ListenerKind::Tcp(_) => panic!("not http"),
    }
}

#[test]
fn access_logs_and_tracing_from_friendly_and_envoy_forms() {
    use weft_telemetry::access_log::{Format, Sink};

    use crate::snapshot::LogFilter;
    // Friendly: compiled to Envoy loggers and read back.
    let loaded = load(
        "\
tracing: { sample_percent: 2.5 }
listeners:
  - name: edge
    address: 127.0.0.1:8080
    access_log: { path: /var/log/weft/edge.log, only_errors: true }
    routes: [ { respond: { status: 200 } } ]
",
    );
    let h = http_listener(&loaded);
    assert_eq!(h.access_logs.len(), 1);
    assert_eq!(
        h.access_logs[0].sink,
        Sink::File("/var/log/weft/edge.log".into())
    );
    assert_eq!(h.access_logs[0].format, Format::Json);
    assert_eq!(
        h.access_logs[0].filter,
        LogFilter {
            min_status: Some(400),
            flagged: true
        }
    );
    assert!((h.tracing.map(|t| t.sample_ratio).unwrap_or(-1.0) - 0.025).abs() < 1e-9);

    // (Envoy access_log / tracing YAML under the connection manager, expected sink,
    // format, filter, sample ratio)
    type Case = (&'static str, Option<(Sink, Format, LogFilter)>, Option<f64>);
    let cases: &[Case] = &[
        (
            "              access_log:\n                - name: envoy.access_loggers.stdout\n                  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog }\n",
            Some((Sink::Stdout, Format::Text, LogFilter::default())),
            None,
        ),
        (
            "              access_log:\n                - name: f\n                  filter: { status_code_filter: { comparison: { op: GE, value: { default_value: 500, runtime_key: k } } } }\n                  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/stderr, log_format: { json_format: { a: \"%START_TIME%\" } } }\n",
            Some((
                Sink::Stderr,
                Format::Json,
                LogFilter {
                    min_status: Some(500),
                    flagged: false,
                },
            )),
            None,
        ),
        ("              tracing: {}\n", None, Some(1.0)),
        (
            "              tracing: { random_sampling: { value: 10 }, provider: { name: envoy.tracers.opentelemetry } }\n",
            None,
            Some(0.1),
        ),
    ];
    for (extra, log, ratio) in cases {
        let loaded = load(&hcm_with(extra));
        let h = http_listener(&loaded);
        let got = h
            .access_logs
            .first()
            .map(|a| (a.sink.clone(), a.format, a.filter));
        assert_eq!(&got, log, "{extra}");
        assert_eq!(h.tracing.map(|t| t.sample_ratio), *ratio, "{extra}");
    }
}

#[test]
fn unsupported_access_log_and_tracing_settings_are_rejected_by_place() {
    // (HttpConnectionManager YAML, where the problem must be named, words of the message)
    let cases: &[(&str, &str, &str)] = &[
        (
            "              access_log:\n                - name: f\n                  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /tmp/x, log_format: { text_format: \"%START_TIME%\\n\" } }\n",
            "access_log[0].typed_config.log_format.text_format",
            "custom text formats",
        ),
        (
            "              access_log:\n                - name: f\n                  filter: { duration_filter: { comparison: { op: GE, value: { default_value: 5, runtime_key: k } } } }\n                  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog }\n",
            "access_log[0].filter",
            "unsupported access log filter",
        ),
        (
            "              access_log:\n                - name: f\n                  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog }\n",
            "access_log[0].typed_config.path",
            "file path is required",
        ),
        (
            "              tracing: { random_sampling: { value: 150 } }\n",
            "tracing.random_sampling",
            "percentage",
        ),
        (
            "              tracing: { provider: { name: envoy.tracers.zipkin } }\n",
            "tracing.provider",
            "unsupported tracer",
        ),
    ];
    for (extra, place, words) in cases {
        let found = problems(&hcm_with(extra));
        assert!(
            found
                .iter()
                .any(|p| p.place.contains(place) && p.message.contains(words)),
            "{place}: {found:#?}"
        );
    }
    // Friendly: a sampling percentage out of range names its line.
    let found = problems(
        "\
tracing: { sample_percent: 101 }
listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes: [ { respond: { status: 200 } } ]
",
    );
    assert!(
        found
            .iter()
            .any(|p| p.place.contains("tracing.sample_percent")),
        "{found:#?}"
    );
}

const RESILIENT: &str = "\
listeners:
  - name: edge
    address: 127.0.0.1:8080
    idle_timeout: 10m
    routes:
      - name: a
        match: { prefix: /a }
        to: svc
        timeout: 3s
        retries:
          max: 3
          retry_on: [5xx, reset]
          per_try_timeout: 200ms
          backoff: 10ms
          methods: [POST]
          max_body: 1KiB
        rate_limit: { requests: 100, per: 1s, burst: 150, key: { header: X-User } }
        fault: { abort: { grpc_status: 14, percent: 12.5 }, delay: { duration: 1s } }
      - name: plain
        match: { prefix: / }
        to: svc
      - name: none
        match: { prefix: /n }
        to: svc
        retries: false
clusters:
  svc:
    endpoints: [127.0.0.1:1]
    idle_timeout: 30s
    limits: { max_requests: 10, max_pending: 5, retry_budget: { percent: 25, min_per_sec: 3 } }
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 1s, success_rate: false }
    health_check: { path: /healthz, interval: 2s, expected_statuses: [200, 204] }
    panic_threshold: 30
  quiet:
    endpoints: [127.0.0.1:2]
    outlier_detection: false
";

fn forward_of<'a>(
    s: &'a Snapshot,
    name: &str,
) -> (
    &'a crate::snapshot::Route,
    &'a crate::snapshot::route::Forward,
) {
    let ListenerKind::Http(h) = &s.listeners[0].kind else {
        panic!("http listener expected")
    };
    let route = h.virtual_hosts[0]
        .routes
        .iter()
        .find(|r| &*r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"));
    let Action::Forward(f) = &route.action else {
        panic!("{name} forwards")
    };
    (route, f)
}

#[test]
fn resilience_settings_reach_the_snapshot_through_envoy_fields() {
    use std::time::Duration;

    use crate::snapshot::policy::{self, Abort, DescriptorSource, RetryOn};
    let s = load(RESILIENT).snapshot;
    let ms = Duration::from_millis;
    let (route, f) = forward_of(&s, "a");
    let retry = f.retry.as_deref().expect("retries");
    assert_eq!(retry.num_retries, 3);
    assert_eq!(retry.retry_on, RetryOn::parse("5xx,reset").unwrap());
    assert_eq!(retry.per_try_timeout, Some(ms(200)));
    assert_eq!((retry.backoff_base, retry.backoff_max), (ms(10), ms(100)));
    assert_eq!(retry.extra_methods, vec![http::Method::POST]);
    assert_eq!(retry.max_replay_bytes, 1024);
    assert!(retry.other_endpoint);
    assert_eq!(f.timeout, Some(Duration::from_secs(3)));
    let rl = route.rate_limit.as_ref().expect("rate limit");
    assert_eq!(
        rl.sources,
        vec![DescriptorSource::Header {
            header: http::HeaderName::from_static("x-user"),
            key: "x-user".to_owned()
        }]
    );
    let bucket = policy::TokenBucket {
        max_tokens: 150,
        tokens_per_fill: 100,
        fill_interval: Duration::from_secs(1),
    };
    assert_eq!(rl.descriptors, vec![("x-user".to_owned(), None, bucket)]);
    assert_eq!(rl.bucket, Some(bucket));
    assert!(rl.enforced && rl.headers);
    let fault = route.fault.as_ref().expect("fault");
    assert_eq!(fault.abort, Some((Abort::Grpc(14), 12.5)));
    assert_eq!(fault.delay, Some((Duration::from_secs(1), 100.0)));

    // No `retries`: Istio's default. `retries: false`: none.
    let (plain_route, plain) = forward_of(&s, "plain");
    assert_eq!(
        plain.retry.as_deref(),
        Some(&policy::RetryPolicy::default())
    );
    assert!(plain_route.rate_limit.is_none() && plain_route.fault.is_none());
    assert!(forward_of(&s, "none").1.retry.is_none());

    let ListenerKind::Http(h) = &s.listeners[0].kind else {
        unreachable!()
    };
    assert_eq!(h.idle_timeout, Some(Duration::from_secs(600)));

    let svc = &s.clusters[0];
    assert_eq!(svc.idle_timeout, Duration::from_secs(30));
    assert_eq!(svc.limits.max_requests, 10);
    assert_eq!(svc.limits.max_pending_requests, 5);
    assert_eq!(svc.limits.max_connections, 1024);
    assert_eq!(
        svc.limits.budget,
        policy::RetryBudget {
            percent: 0.25,
            min_per_sec: 3
        }
    );
    let outlier = svc.outlier.as_ref().expect("outlier detection");
    assert_eq!(outlier.consecutive_5xx, Some(3));
    assert_eq!(outlier.consecutive_gateway_failure, Some(5));
    assert_eq!(outlier.base_ejection_time, Duration::from_secs(1));
    assert_eq!(outlier.success_rate, None);
    let hc = svc.health_check.as_ref().expect("health check");
    assert_eq!(hc.path, "/healthz");
    assert_eq!(hc.host, "svc");
    assert_eq!(hc.interval, Duration::from_secs(2));
    assert_eq!(hc.expected_statuses, vec![(200, 201), (204, 205)]);
    assert_eq!(svc.panic_threshold, 30);

    // Defaults: outlier detection on, Envoy's limits, the default budget.
    let quiet = &s.clusters[1];
    assert!(quiet.outlier.is_none(), "outlier_detection: false");
    assert_eq!(quiet.limits, policy::Limits::default());
    assert_eq!(quiet.panic_threshold, 50);
    let defaults = load(
        "\
listeners: [ { name: e, address: 127.0.0.1:8080, routes: [ { to: c } ] } ]
clusters: { c: { endpoints: [127.0.0.1:1] } }
",
    )
    .snapshot;
    assert_eq!(
        defaults.clusters[0].outlier,
        Some(policy::OutlierDetection::default())
    );
}

#[test]
fn resilience_problems_are_located() {
    let base = |route_extra: &str, cluster_extra: &str| {
        format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes:
      - match: {{ prefix: / }}
        to: svc
        {route_extra}
      - match: {{ prefix: /r }}
        respond: {{ status: 200 }}
clusters:
  svc:
    endpoints: [127.0.0.1:1]
    {cluster_extra}
"
        )
    };
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "retries: { retry_on: [5xx, often] }",
            "",
            "listeners[0].routes[0].retries.retry_on",
            "unknown retry condition \"often\"",
        ),
        (
            // A YAML-level error: located by line (checked in yaml_error_table).
            "retries: { retry_ob: [5xx] }",
            "",
            "",
            "unknown field `retry_ob`, expected one of max, retry_on",
        ),
        (
            "retries: { methods: [\"PO ST\"] }",
            "",
            "listeners[0].routes[0].retries.methods[0]",
            "is not a method",
        ),
        (
            "retries: { backoff: 100ms, max_backoff: 10ms }",
            "",
            "listeners[0].routes[0].retries.max_backoff",
            "must not be less than `backoff`",
        ),
        (
            "rate_limit: { requests: 10, per: 10ms }",
            "",
            "listeners[0].routes[0].rate_limit.per",
            "at least 50ms",
        ),
        (
            "rate_limit: { requests: 10, key: client-ip }",
            "",
            "listeners[0].routes[0].rate_limit.key",
            "unknown key \"client-ip\"",
        ),
        (
            "fault: { abort: { status: 503, grpc_status: 14 } }",
            "",
            "listeners[0].routes[0].fault.abort",
            "one of them",
        ),
        (
            "fault: { delay: { duration: 1s, percent: 120 } }",
            "",
            "listeners[0].routes[0].fault.delay.percent",
            "from 0 to 100",
        ),
        (
            "",
            "outlier_detection: { max_ejection_percent: 101 }",
            "clusters.svc.outlier_detection.max_ejection_percent",
            "at most 100",
        ),
        (
            "",
            "health_check: { path: healthz }",
            "clusters.svc.health_check.path",
            "must start with /",
        ),
        (
            "",
            "limits: { retry_budget: { percent: 150 } }",
            "clusters.svc.limits.retry_budget.percent",
            "from 0 to 100",
        ),
        (
            "",
            "panic_threshold: 101",
            "clusters.svc.panic_threshold",
            "from 0 to 100",
        ),
    ];
    for (route_extra, cluster_extra, place, words) in cases {
        let found = problems(&base(route_extra, cluster_extra));
        assert!(
            found
                .iter()
                .any(|p| p.place.contains(place) && p.message.contains(words)),
            "{route_extra}{cluster_extra}: want {place}: {words}, got {found:#?}"
        );
    }
    // Retries on a route that answers itself.
    let text = base("", "").replace(
        "respond: { status: 200 }",
        "respond: { status: 200 }\n        retries: { max: 1 }",
    );
    let found = problems(&text);
    assert!(
        found.iter().any(|p| p.place.contains("routes[1].retries")
            && p.message.contains("only to routes with `to`")),
        "{found:#?}"
    );
}

#[test]
fn byte_sizes_parse_in_binary_and_decimal_units() {
    use super::friendly::parse_byte_size;
    let cases: &[(&str, Option<u64>)] = &[
        ("65536", Some(65536)),
        ("512B", Some(512)),
        ("64KiB", Some(64 << 10)),
        ("1MiB", Some(1 << 20)),
        ("2GiB", Some(2 << 30)),
        ("10KB", Some(10_000)),
        ("10kB", Some(10_000)),
        ("1MB", Some(1_000_000)),
        (" 8 KiB ", Some(8 << 10)),
        ("64kib", None),
        ("KiB", None),
        ("-1", None),
        ("1.5MiB", None),
        ("99999999999999999999", None),
        ("18446744073709551615GiB", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_byte_size(text), *want, "{text:?}");
    }
}
