//! Friendly TLS settings written as Envoy transport sockets (see
//! `snapshot/translate/tls.rs` for the mapping read back).
//!
//! ```yaml
//! identity: { cert: certs/cert.pem, key: certs/key.pem, ca: certs/ca.pem }
//! listeners:
//!   - name: inbound                 # mesh mutual TLS, callers from these trust domains
//!     address: 0.0.0.0:16006
//!     mtls: { trust_domains: [example.org] }      # or `mtls: true`: the identity's own
//!   - name: edge                    # TLS for external clients, certificate by SNI
//!     address: 0.0.0.0:8443
//!     tls: { certificates: [{ cert: edge.pem, key: edge-key.pem }] }
//! clusters:
//!   cart:
//!     endpoints: [10.0.1.5:16006]
//!     mtls: { identity: spiffe://example.org/ns/shop/sa/cart }   # or trust_domain: x
//! ```

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SubjectAltNameMatcher,
    TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context::ValidationContextType,
    subject_alt_name_matcher::SanType, tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::BoolValue;
use weft_mtls::{SpiffeId, TrustDomain};

use super::Compiler;
use crate::config::friendly::{self, Toggle};
use crate::config::locate::YamlPath;
use crate::config::resources::pack;
use crate::snapshot::translate::TLS_TRANSPORT_SOCKET;

impl Compiler {
    /// The transport socket of a listener with `tls:` or `mtls:`.
    pub(super) fn listener_tls(
        &mut self,
        l: &friendly::Listener,
        file: &friendly::File,
        path: &YamlPath,
    ) -> Option<TransportSocket> {
        match (&l.tls, &l.mtls) {
            (Some(_), Some(m)) if !matches!(m, Toggle::Switch(false)) => {
                self.problem(
                    path.key("mtls"),
                    "give either `tls` (edge) or `mtls` (mesh), not both",
                );
                None
            }
            (Some(edge), _) => {
                if edge.certificates.is_empty() {
                    self.problem(
                        path.key("tls").key("certificates"),
                        "at least one certificate is required",
                    );
                    return None;
                }
                let ctx = DownstreamTlsContext {
                    common_tls_context: Some(CommonTlsContext {
                        tls_params: Some(versions(TlsProtocol::TlSv12, TlsProtocol::TlSv13)),
                        tls_certificates: edge
                            .certificates
                            .iter()
                            .map(|c| certificate(&c.cert, &c.key))
                            .collect(),
                        alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                Some(socket(pack(&ctx)))
            }
            (None, None | Some(Toggle::Switch(false))) => None,
            (None, Some(m)) => {
                let id = self.identity(file, &path.key("mtls"))?;
                let domains = match m {
                    Toggle::Set(s) => s.trust_domains.clone(),
                    Toggle::Switch(_) => Vec::new(),
                };
                let mut sans = Vec::new();
                for (i, d) in domains.iter().enumerate() {
                    let p = path.key("mtls").key("trust_domains").index(i);
                    if let Some(td) = self.check(d.parse::<TrustDomain>(), &p) {
                        sans.push(uri_san(MatchPattern::Prefix(td.id_prefix())));
                    }
                }
                let alpn = match l.protocol {
                    friendly::Protocol::Http => vec!["h2".into(), "http/1.1".into()],
                    friendly::Protocol::Tcp => vec!["weft-tcp".into()],
                };
                let ctx = DownstreamTlsContext {
                    common_tls_context: Some(mesh_context(id, sans, alpn)),
                    require_client_certificate: Some(BoolValue { value: true }),
                    ..Default::default()
                };
                Some(socket(pack(&ctx)))
            }
        }
    }

    /// The transport socket of a cluster with `mtls:`.
    pub(super) fn cluster_tls(
        &mut self,
        c: &friendly::Cluster,
        file: &friendly::File,
        path: &YamlPath,
    ) -> Option<TransportSocket> {
        let m = c.mtls.as_ref()?;
        let p = path.key("mtls");
        let id = self.identity(file, &p)?;
        let sans = match (&m.identity, &m.trust_domain) {
            (Some(ids), None) => {
                let mut sans = Vec::new();
                for (i, s) in ids.to_vec().iter().enumerate() {
                    let ip = match ids {
                        friendly::OneOrMany::One(_) => p.key("identity"),
                        friendly::OneOrMany::Many(_) => p.key("identity").index(i),
                    };
                    if let Some(id) = self.check(s.parse::<SpiffeId>(), &ip) {
                        sans.push(uri_san(MatchPattern::Exact(id.to_string())));
                    }
                }
                sans
            }
            (None, Some(td)) => {
                let td = self.check(td.parse::<TrustDomain>(), &p.key("trust_domain"))?;
                vec![uri_san(MatchPattern::Prefix(td.id_prefix()))]
            }
            _ => {
                self.problem(
                    p,
                    "give the endpoints' `identity` (a SPIFFE id or a list) or their \
                     `trust_domain`",
                );
                return None;
            }
        };
        if c.protocol.as_deref().is_some_and(|p| p != "http2") {
            self.problem(
                path.key("protocol"),
                "mesh mutual TLS speaks HTTP/2 (ALPN h2); leave `protocol` out",
            );
        }
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(mesh_context(id, sans, vec!["h2".into()])),
            ..Default::default()
        };
        Some(socket(pack(&ctx)))
    }

    fn identity<'f>(
        &mut self,
        file: &'f friendly::File,
        path: &YamlPath,
    ) -> Option<&'f friendly::Identity> {
        if file.identity.is_none() {
            self.problem(
                path.clone(),
                "mutual TLS needs this proxy's `identity` (cert, key, ca) at the top of the file",
            );
        }
        file.identity.as_ref()
    }
}

fn socket(any: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any)),
    }
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    })
}

fn certificate(cert: &str, key: &str) -> TlsCertificate {
    TlsCertificate {
        certificate_chain: file(cert),
        private_key: file(key),
        ..Default::default()
    }
}

fn versions(min: TlsProtocol, max: TlsProtocol) -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: min as i32,
        tls_maximum_protocol_version: max as i32,
        ..Default::default()
    }
}

fn uri_san(pattern: MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A TLS 1.3 context with the workload certificate and trust bundle.
fn mesh_context(
    id: &friendly::Identity,
    sans: Vec<SubjectAltNameMatcher>,
    alpn: Vec<String>,
) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(versions(TlsProtocol::TlSv13, TlsProtocol::TlSv13)),
        tls_certificates: vec![certificate(&id.cert, &id.key)],
        validation_context_type: Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: file(&id.ca),
                match_typed_subject_alt_names: sans,
                ..Default::default()
            },
        )),
        alpn_protocols: alpn,
        ..Default::default()
    }
}
