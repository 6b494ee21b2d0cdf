//! TLS transport sockets: a listener's `DownstreamTlsContext` and a cluster's
//! `UpstreamTlsContext`, read into [`ListenerTls`] and [`ClusterTls`].
//!
//! The mapping (what the friendly compiler writes, and what an Envoy-format file may
//! say):
//! - Listener, `require_client_certificate: true`: mesh mutual TLS. One
//!   `tls_certificates` entry (files), a `validation_context` with `trusted_ca` (file)
//!   and optionally `match_typed_subject_alt_names` of type `URI` with a `prefix` of
//!   `spiffe://<trust domain>/` per accepted trust domain. TLS 1.3 only.
//! - Listener otherwise: edge TLS. One or more `tls_certificates` (files), picked by
//!   SNI; no validation context (client certificates are not asked for); minimum
//!   version TLS 1.2 (older ones are refused by name).
//! - Cluster: mesh mutual TLS towards the endpoints. One `tls_certificates` entry, a
//!   `validation_context` with `trusted_ca` and `match_typed_subject_alt_names` of type
//!   `URI`: `exact` ids (the peer must be one of them) or a single `prefix`
//!   `spiffe://<trust domain>/`. Mesh links always speak HTTP/2 (ALPN `h2`; TCP
//!   proxying uses ALPN `weft-tcp`), so such a cluster is an HTTP/2 cluster.
//!
//! Certificates come from files only (`filename` data sources); SDS arrives with the
//! control plane. Every other field that would change a handshake is refused by name.

use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsParameters,
    UpstreamTlsContext, common_tls_context::ValidationContextType,
    subject_alt_name_matcher::SanType, tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use weft_mtls::{SpiffeId, TrustDomain};

use super::Translator;
use crate::snapshot::tls::{CertFiles, ClusterTls, ListenerTls, PeerIds};

/// The transport socket name Envoy gives TLS.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// What a subject-alt-name matcher list says about the peer.
enum SanRule {
    /// No matcher: any identity the trust bundle vouches for.
    Any,
    /// `exact` URI matchers.
    Exact(Vec<SpiffeId>),
    /// `prefix` URI matchers of `spiffe://td/`.
    Domains(Vec<TrustDomain>),
}

impl Translator {
    /// A listener's transport socket.
    pub(super) fn listener_tls(
        &mut self,
        ts: &TransportSocket,
        place: &str,
    ) -> Option<ListenerTls> {
        let any = self.tls_any(ts, place)?;
        let place = format!("{place}.typed_config");
        let ctx = self.unpack::<DownstreamTlsContext>(any, &place)?;
        let mut ok = true;
        if ctx.require_sni.is_some_and(|b| b.value) {
            self.problem(format!("{place}.require_sni"), "not supported");
            ok = false;
        }
        if ctx.ocsp_staple_policy != 0 || ctx.session_ticket_keys_type.is_some() {
            self.problem(
                &place,
                "ocsp_staple_policy and session ticket keys are not supported",
            );
            ok = false;
        }
        let Some(common) = &ctx.common_tls_context else {
            self.problem(
                format!("{place}.common_tls_context"),
                "required (certificates)",
            );
            return None;
        };
        let cplace = format!("{place}.common_tls_context");
        ok &= self.common_unsupported(common, &cplace);
        let mutual = ctx.require_client_certificate.is_some_and(|b| b.value);
        let certs = self.certificates(common, &cplace)?;
        if mutual {
            ok &= self.mesh_versions(common, &cplace);
            let [cert] = certs.as_slice() else {
                self.problem(
                    format!("{cplace}.tls_certificates"),
                    "mutual TLS needs exactly one certificate (the workload's)",
                );
                return None;
            };
            let (ca, sans) = self.validation(common, &cplace)?;
            let trust_domains = match sans {
                SanRule::Any => Vec::new(),
                SanRule::Domains(d) => d,
                SanRule::Exact(_) => {
                    self.problem(
                        format!("{cplace}.validation_context.match_typed_subject_alt_names"),
                        "a listener accepts callers by trust domain: use URI prefix matchers \
                         (spiffe://<trust domain>/); authorization rules name single callers",
                    );
                    return None;
                }
            };
            ok.then(|| ListenerTls::Mesh {
                identity: CertFiles {
                    cert: cert.0.clone(),
                    key: cert.1.clone(),
                    ca: Some(ca),
                },
                trust_domains,
            })
        } else {
            if common.validation_context_type.is_some() {
                self.problem(
                    format!("{cplace}.validation_context"),
                    "client certificates at the edge are not supported; set \
                     require_client_certificate for mesh mutual TLS",
                );
                ok = false;
            }
            let (min, _) = self.versions(common.tls_params.as_ref());
            if !matches!(min, TlsProtocol::TlsAuto | TlsProtocol::TlSv12) {
                self.problem(
                    format!("{cplace}.tls_params.tls_minimum_protocol_version"),
                    "edge TLS is TLS 1.2 and 1.3 (TLSv1_2 or TLS_AUTO)",
                );
                ok = false;
            }
            if certs.is_empty() {
                self.problem(
                    format!("{cplace}.tls_certificates"),
                    "at least one certificate is required",
                );
                return None;
            }
            ok.then(|| ListenerTls::Edge {
                certificates: certs
                    .into_iter()
                    .map(|(cert, key)| CertFiles {
                        cert,
                        key,
                        ca: None,
                    })
                    .collect(),
            })
        }
    }

    /// A cluster's transport socket.
    pub(super) fn cluster_tls(&mut self, ts: &TransportSocket, place: &str) -> Option<ClusterTls> {
        let any = self.tls_any(ts, place)?;
        let place = format!("{place}.typed_config");
        let ctx = self.unpack::<UpstreamTlsContext>(any, &place)?;
        let mut ok = true;
        if !ctx.sni.is_empty() || ctx.auto_host_sni || ctx.auto_sni_san_validation {
            self.problem(
                format!("{place}.sni"),
                "SNI is not sent on mesh links (the peer is checked by SPIFFE id)",
            );
            ok = false;
        }
        if ctx.allow_renegotiation {
            self.problem(format!("{place}.allow_renegotiation"), "not supported");
            ok = false;
        }
        let Some(common) = &ctx.common_tls_context else {
            self.problem(
                format!("{place}.common_tls_context"),
                "required (certificate and trust bundle)",
            );
            return None;
        };
        let cplace = format!("{place}.common_tls_context");
        ok &= self.common_unsupported(common, &cplace);
        ok &= self.mesh_versions(common, &cplace);
        let certs = self.certificates(common, &cplace)?;
        let [cert] = certs.as_slice() else {
            self.problem(
                format!("{cplace}.tls_certificates"),
                "mutual TLS needs exactly one certificate (the workload's)",
            );
            return None;
        };
        let (ca, sans) = self.validation(common, &cplace)?;
        let peer = match sans {
            SanRule::Exact(ids) => PeerIds::Ids(ids),
            SanRule::Domains(mut d) if d.len() == 1 => PeerIds::TrustDomain(d.remove(0)),
            _ => {
                self.problem(
                    format!("{cplace}.validation_context.match_typed_subject_alt_names"),
                    "name the identities the endpoints must have: URI exact matchers, or one \
                     URI prefix spiffe://<trust domain>/",
                );
                return None;
            }
        };
        ok.then(|| ClusterTls {
            identity: CertFiles {
                cert: cert.0.clone(),
                key: cert.1.clone(),
                ca: Some(ca),
            },
            peer,
        })
    }

    fn tls_any<'a>(
        &mut self,
        ts: &'a TransportSocket,
        place: &str,
    ) -> Option<&'a envoy_types::pb::google::protobuf::Any> {
        use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
        if ts.name != TLS_TRANSPORT_SOCKET {
            self.problem(
                format!("{place}.name"),
                format!("only {TLS_TRANSPORT_SOCKET:?} is supported"),
            );
            return None;
        }
        match &ts.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(any),
            None => {
                self.problem(format!("{place}.typed_config"), "required");
                None
            }
        }
    }

    /// Refuses the common-context fields Weft does not implement.
    fn common_unsupported(&mut self, c: &CommonTlsContext, place: &str) -> bool {
        let unsupported = [
            (
                !c.tls_certificate_sds_secret_configs.is_empty(),
                "tls_certificate_sds_secret_configs (SDS comes with the control plane)",
            ),
            (
                c.tls_certificate_provider_instance.is_some()
                    || c.custom_tls_certificate_selector.is_some(),
                "certificate providers",
            ),
            (c.custom_handshaker.is_some(), "custom_handshaker"),
            (c.key_log.is_some(), "key_log"),
            (
                c.tls_params.as_ref().is_some_and(|p| {
                    !p.cipher_suites.is_empty()
                        || !p.ecdh_curves.is_empty()
                        || !p.signature_algorithms.is_empty()
                        || !p.compliance_policies.is_empty()
                }),
                "tls_params cipher_suites, ecdh_curves, signature_algorithms and \
                 compliance_policies (Weft offers only forward-secret AEAD suites)",
            ),
        ];
        let mut ok = true;
        for (set, what) in unsupported {
            if set {
                self.problem(place, format!("not supported: {what}"));
                ok = false;
            }
        }
        for (i, p) in c.alpn_protocols.iter().enumerate() {
            if !matches!(p.as_str(), "h2" | "http/1.1" | "weft-tcp") {
                self.problem(
                    format!("{place}.alpn_protocols[{i}]"),
                    format!("{p:?}: Weft speaks h2, http/1.1 and weft-tcp"),
                );
                ok = false;
            }
        }
        ok
    }

    /// Mesh links are TLS 1.3 only: any other version setting is refused.
    fn mesh_versions(&mut self, c: &CommonTlsContext, place: &str) -> bool {
        let (min, max) = self.versions(c.tls_params.as_ref());
        let ok = [min, max]
            .iter()
            .all(|v| matches!(v, TlsProtocol::TlsAuto | TlsProtocol::TlSv13));
        if !ok {
            self.problem(
                format!("{place}.tls_params"),
                "mesh mutual TLS is TLS 1.3 only",
            );
        }
        ok
    }

    fn versions(&mut self, p: Option<&TlsParameters>) -> (TlsProtocol, TlsProtocol) {
        let read = |v: i32| TlsProtocol::try_from(v).unwrap_or(TlsProtocol::TlsAuto);
        let Some(p) = p else {
            return (TlsProtocol::TlsAuto, TlsProtocol::TlsAuto);
        };
        (
            read(p.tls_minimum_protocol_version),
            read(p.tls_maximum_protocol_version),
        )
    }

    /// The certificate/key file pairs of a context.
    fn certificates(
        &mut self,
        c: &CommonTlsContext,
        place: &str,
    ) -> Option<Vec<(std::path::PathBuf, std::path::PathBuf)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, t) in c.tls_certificates.iter().enumerate() {
            let tplace = format!("{place}.tls_certificates[{i}]");
            if t.private_key_provider.is_some()
                || t.password.is_some()
                || t.ocsp_staple.is_some()
                || !t.signed_certificate_timestamp.is_empty()
                || t.watched_directory.is_some()
            {
                self.problem(
                    &tplace,
                    "only certificate_chain and private_key (files) are supported",
                );
                ok = false;
                continue;
            }
            let cert = self.file(
                t.certificate_chain.as_ref(),
                &format!("{tplace}.certificate_chain"),
            );
            let key = self.file(t.private_key.as_ref(), &format!("{tplace}.private_key"));
            match (cert, key) {
                (Some(c), Some(k)) => out.push((c, k)),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn file(&mut self, d: Option<&DataSource>, place: &str) -> Option<std::path::PathBuf> {
        match d.and_then(|d| d.specifier.as_ref()) {
            Some(data_source::Specifier::Filename(f)) if !f.is_empty() => Some(f.into()),
            _ => {
                self.problem(
                    place,
                    "a filename is required (inline certificates and keys are not supported: \
                     files are watched and rotated)",
                );
                None
            }
        }
    }

    /// The trust bundle file and the subject-alt-name rule of a context.
    fn validation(
        &mut self,
        c: &CommonTlsContext,
        place: &str,
    ) -> Option<(std::path::PathBuf, SanRule)> {
        let vplace = format!("{place}.validation_context");
        let v: &CertificateValidationContext = match &c.validation_context_type {
            Some(ValidationContextType::ValidationContext(v)) => v,
            Some(_) => {
                self.problem(
                    &vplace,
                    "only an inline validation_context is supported (no SDS, no combined \
                     context)",
                );
                return None;
            }
            None => {
                self.problem(&vplace, "required: the trust bundle (trusted_ca)");
                return None;
            }
        };
        #[allow(deprecated)]
        let legacy_sans = !v.match_subject_alt_names.is_empty();
        if v.ca_certificate_provider_instance.is_some()
            || v.system_root_certs.is_some()
            || v.watched_directory.is_some()
            || !v.verify_certificate_spki.is_empty()
            || !v.verify_certificate_hash.is_empty()
            || v.require_signed_certificate_timestamp.is_some()
            || v.crl.is_some()
            || v.allow_expired_certificate
            || v.trust_chain_verification != 0
            || v.custom_validator_config.is_some()
            || legacy_sans
        {
            self.problem(
                &vplace,
                "only trusted_ca (a file) and match_typed_subject_alt_names are supported",
            );
            return None;
        }
        let ca = self.file(v.trusted_ca.as_ref(), &format!("{vplace}.trusted_ca"))?;
        let mut exact = Vec::new();
        let mut domains = Vec::new();
        let mut ok = true;
        for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
            let mplace = format!("{vplace}.match_typed_subject_alt_names[{i}]");
            if m.san_type != SanType::Uri as i32 {
                self.problem(
                    format!("{mplace}.san_type"),
                    "only URI (SPIFFE ids) is supported: a DNS name does not identify a workload",
                );
                ok = false;
                continue;
            }
            let pattern = m
                .matcher
                .as_ref()
                .filter(|s| !s.ignore_case)
                .and_then(|s| s.match_pattern.as_ref());
            match pattern {
                Some(MatchPattern::Exact(id)) => match id.parse::<SpiffeId>() {
                    Ok(id) => exact.push(id),
                    Err(e) => {
                        self.problem(format!("{mplace}.matcher.exact"), e.to_string());
                        ok = false;
                    }
                },
                Some(MatchPattern::Prefix(p)) => {
                    let td = p
                        .strip_prefix("spiffe://")
                        .and_then(|r| r.strip_suffix('/'))
                        .map(str::parse::<TrustDomain>);
                    match td {
                        Some(Ok(td)) => domains.push(td),
                        _ => {
                            self.problem(
                                format!("{mplace}.matcher.prefix"),
                                format!("{p:?}: expected spiffe://<trust domain>/"),
                            );
                            ok = false;
                        }
                    }
                }
                _ => {
                    self.problem(
                        format!("{mplace}.matcher"),
                        "only exact (a SPIFFE id) and prefix (spiffe://<trust domain>/) are \
                         supported, case-sensitive",
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let rule = match (exact.is_empty(), domains.is_empty()) {
            (true, true) => SanRule::Any,
            (false, true) => SanRule::Exact(exact),
            (true, false) => SanRule::Domains(domains),
            (false, false) => {
                self.problem(
                    format!("{vplace}.match_typed_subject_alt_names"),
                    "mix of exact ids and trust-domain prefixes: use one kind",
                );
                return None;
            }
        };
        Some((ca, rule))
    }
}
