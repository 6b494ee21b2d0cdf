//! TLS settings through the whole pipeline: friendly `identity` / `mtls` / `tls` to
//! Envoy transport sockets to the snapshot, the same read from Envoy form, and every
//! refusal reported at its place.

use std::path::PathBuf;

use super::tests::{load, problems};
use crate::snapshot::tls::{CertFiles, ClusterTls, ListenerTls, PeerIds};

const SECURED: &str = "\
identity: { cert: id/cert.pem, key: id/key.pem, ca: id/ca.pem }
listeners:
  - name: inbound
    address: 127.0.0.1:16006
    mtls: { trust_domains: [example.org, partner.org] }
    routes: [ { to: app } ]
  - name: inbound-tcp
    address: 127.0.0.1:16007
    protocol: tcp
    mtls: true
    to: app
  - name: edge
    address: 127.0.0.1:8443
    tls:
      certificates:
        - { cert: shop.pem, key: shop-key.pem }
        - { cert: api.pem, key: api-key.pem }
    routes: [ { to: cart } ]
clusters:
  app: { endpoints: [127.0.0.1:8080] }
  cart:
    endpoints: [127.0.0.1:16106]
    mtls: { identity: [spiffe://example.org/ns/shop/sa/cart, spiffe://example.org/ns/shop/sa/cart-v2] }
  user:
    endpoints: [127.0.0.1:16206]
    mtls: { trust_domain: example.org }
";

fn identity() -> CertFiles {
    CertFiles {
        cert: PathBuf::from("id/cert.pem"),
        key: PathBuf::from("id/key.pem"),
        ca: Some(PathBuf::from("id/ca.pem")),
    }
}

fn expected_listener_tls() -> Vec<Option<ListenerTls>> {
    let edge = |c: &str, k: &str| CertFiles {
        cert: c.into(),
        key: k.into(),
        ca: None,
    };
    vec![
        Some(ListenerTls::Mesh {
            identity: identity(),
            trust_domains: vec![
                "example.org".parse().unwrap(),
                "partner.org".parse().unwrap(),
            ],
        }),
        Some(ListenerTls::Mesh {
            identity: identity(),
            trust_domains: Vec::new(),
        }),
        Some(ListenerTls::Edge {
            certificates: vec![
                edge("shop.pem", "shop-key.pem"),
                edge("api.pem", "api-key.pem"),
            ],
        }),
    ]
}

fn expected_cluster_tls() -> Vec<Option<ClusterTls>> {
    vec![
        None,
        Some(ClusterTls {
            identity: identity(),
            peer: PeerIds::Ids(vec![
                "spiffe://example.org/ns/shop/sa/cart".parse().unwrap(),
                "spiffe://example.org/ns/shop/sa/cart-v2".parse().unwrap(),
            ]),
        }),
        Some(ClusterTls {
            identity: identity(),
            peer: PeerIds::TrustDomain("example.org".parse().unwrap()),
        }),
    ]
}

#[test]
fn tls_settings_reach_the_snapshot_and_survive_the_envoy_round_trip() {
    let loaded = load(SECURED);
    let listeners: Vec<_> = loaded
        .snapshot
        .listeners
        .iter()
        .map(|l| l.tls.clone())
        .collect();
    assert_eq!(listeners, expected_listener_tls());
    let clusters: Vec<_> = loaded
        .snapshot
        .clusters
        .iter()
        .map(|c| c.tls.clone())
        .collect();
    assert_eq!(clusters, expected_cluster_tls());
    // Mesh links speak HTTP/2, whatever the cluster said.
    let cart = &loaded.snapshot.clusters[1];
    assert_eq!(cart.protocol, crate::snapshot::UpstreamProtocol::Http2);

    // The config dump is Envoy JSON that loads back to the same TLS settings.
    let dump = loaded.resources.config_dump("1").unwrap();
    let text = serde_json::to_string(&dump).unwrap();
    assert!(text.contains("envoy.transport_sockets.tls"), "{text}");
    let again = load(&resources_from_dump(&dump));
    let listeners: Vec<_> = again
        .snapshot
        .listeners
        .iter()
        .map(|l| l.tls.clone())
        .collect();
    assert_eq!(listeners, expected_listener_tls());
    let clusters: Vec<_> = again
        .snapshot
        .clusters
        .iter()
        .map(|c| c.tls.clone())
        .collect();
    assert_eq!(clusters, expected_cluster_tls());
}

/// The resources of a config dump as an Envoy-format `resources:` document.
fn resources_from_dump(dump: &serde_json::Value) -> String {
    let mut resources = Vec::new();
    for config in dump["configs"].as_array().unwrap() {
        for key in [
            "dynamic_listeners",
            "dynamic_route_configs",
            "dynamic_active_clusters",
        ] {
            for entry in config[key].as_array().into_iter().flatten() {
                let r = entry
                    .get("active_state")
                    .and_then(|s| s.get("listener"))
                    .or_else(|| entry.get("route_config"))
                    .or_else(|| entry.get("cluster"))
                    .unwrap();
                resources.push(r.clone());
            }
        }
    }
    serde_json::json!({ "resources": resources }).to_string()
}

#[test]
fn friendly_tls_problems_are_located() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "mtls without identity",
            "listeners:\n  - { name: a, address: 127.0.0.1:1, mtls: true, routes: [ { respond: { status: 200 } } ] }\n",
            "listeners[0].mtls",
            "identity",
        ),
        (
            "tls and mtls together",
            "identity: { cert: c, key: k, ca: a }\nlisteners:\n  - name: a\n    address: 127.0.0.1:1\n    mtls: true\n    tls: { certificates: [ { cert: c, key: k } ] }\n    routes: [ { respond: { status: 200 } } ]\n",
            "listeners[0].mtls",
            "not both",
        ),
        (
            "edge tls without certificates",
            "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls: { certificates: [] }\n    routes: [ { respond: { status: 200 } } ]\n",
            "listeners[0].tls.certificates",
            "at least one",
        ),
        (
            "bad trust domain",
            "identity: { cert: c, key: k, ca: a }\nlisteners:\n  - name: a\n    address: 127.0.0.1:1\n    mtls: { trust_domains: [Bad_Domain!] }\n    routes: [ { respond: { status: 200 } } ]\n",
            "listeners[0].mtls.trust_domains[0]",
            "",
        ),
        (
            "bad spiffe id",
            "identity: { cert: c, key: k, ca: a }\nclusters:\n  c: { endpoints: [127.0.0.1:1], mtls: { identity: spiffe://example.org/ns/../x } }\n",
            "clusters.c.mtls.identity",
            "",
        ),
        (
            "identity and trust domain",
            "identity: { cert: c, key: k, ca: a }\nclusters:\n  c: { endpoints: [127.0.0.1:1], mtls: { identity: spiffe://example.org/a, trust_domain: example.org } }\n",
            "clusters.c.mtls",
            "identity",
        ),
        (
            "mesh cluster with protocol http1",
            "identity: { cert: c, key: k, ca: a }\nclusters:\n  c: { endpoints: [127.0.0.1:1], protocol: http1, mtls: { trust_domain: example.org } }\n",
            "clusters.c.protocol",
            "HTTP/2",
        ),
        (
            "cluster mtls without identity",
            "clusters:\n  c: { endpoints: [127.0.0.1:1], mtls: { trust_domain: example.org } }\n",
            "clusters.c.mtls",
            "identity",
        ),
    ];
    for (what, text, place, message) in cases {
        let found = problems(text);
        assert!(
            found
                .iter()
                .any(|p| p.place == *place && p.message.contains(message)),
            "{what}: nothing at {place} saying {message:?}: {found:#?}"
        );
    }
}

/// An Envoy-format listener whose filter chain has `transport_socket`.
fn listener_with_socket(socket: &str) -> String {
    format!(
        r#"
resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: edge
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8443 }} }}
    filter_chains:
      - transport_socket: {socket}
        filters:
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
"#
    )
}

fn downstream(ctx: &str) -> String {
    format!(
        r#"{{ name: envoy.transport_sockets.tls, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, {ctx} }} }}"#
    )
}

#[test]
fn envoy_tls_refusals_name_the_field() {
    let place = r#"Listener "edge".filter_chains[0].transport_socket"#;
    let cert = "tls_certificates: [ { certificate_chain: { filename: c.pem }, private_key: { filename: k.pem } } ]";
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "another transport socket",
            "{ name: envoy.transport_sockets.raw_buffer }".to_owned(),
            format!("{place}.name"),
            "only",
        ),
        (
            "inline certificate",
            downstream(
                "common_tls_context: { tls_certificates: [ { certificate_chain: { inline_string: x }, private_key: { filename: k.pem } } ] }",
            ),
            format!(
                "{place}.typed_config.common_tls_context.tls_certificates[0].certificate_chain"
            ),
            "filename",
        ),
        (
            "SDS",
            downstream(
                "common_tls_context: { tls_certificate_sds_secret_configs: [ { name: default } ] }",
            ),
            format!("{place}.typed_config.common_tls_context"),
            "SDS",
        ),
        (
            "TLS 1.0 at the edge",
            downstream(&format!(
                "common_tls_context: {{ tls_params: {{ tls_minimum_protocol_version: TLSv1_0 }}, {cert} }}"
            )),
            format!(
                "{place}.typed_config.common_tls_context.tls_params.tls_minimum_protocol_version"
            ),
            "TLS 1.2",
        ),
        (
            "TLS 1.2 for mesh mTLS",
            downstream(&format!(
                "require_client_certificate: true, common_tls_context: {{ tls_params: {{ tls_minimum_protocol_version: TLSv1_2 }}, {cert}, validation_context: {{ trusted_ca: {{ filename: ca.pem }} }} }}"
            )),
            format!("{place}.typed_config.common_tls_context.tls_params"),
            "TLS 1.3",
        ),
        (
            "DNS SAN matcher",
            downstream(&format!(
                "require_client_certificate: true, common_tls_context: {{ {cert}, validation_context: {{ trusted_ca: {{ filename: ca.pem }}, match_typed_subject_alt_names: [ {{ san_type: DNS, matcher: {{ exact: spiffe.example }} }} ] }} }}"
            )),
            format!(
                "{place}.typed_config.common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type"
            ),
            "URI",
        ),
        (
            "mutual TLS without a trust bundle",
            downstream(&format!(
                "require_client_certificate: true, common_tls_context: {{ {cert} }}"
            )),
            format!("{place}.typed_config.common_tls_context.validation_context"),
            "trusted_ca",
        ),
        (
            "cipher suites",
            downstream(&format!(
                "common_tls_context: {{ tls_params: {{ cipher_suites: [AES128-SHA] }}, {cert} }}"
            )),
            format!("{place}.typed_config.common_tls_context"),
            "cipher_suites",
        ),
    ];
    for (what, socket, at, message) in cases {
        let found = problems(&listener_with_socket(&socket));
        assert!(
            found
                .iter()
                .any(|p| p.place == at && p.message.contains(message)),
            "{what}: nothing at {at} saying {message:?}: {found:#?}"
        );
    }
}
