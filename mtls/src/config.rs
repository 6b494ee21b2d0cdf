//! The rustls configurations Weft listens and dials with.
//!
//! - Mesh ([`mesh_server_config`], [`mesh_client_config`]): TLS 1.3 only, mutual, the
//!   certificate and bundle read from a [`CertStore`] at each handshake and the peer
//!   checked by SPIFFE id ([`crate::verify`]). Proxies are the only peers, so nothing
//!   older than 1.3 is needed.
//! - Edge ([`edge_server_config`]): the gateway facing arbitrary clients: TLS 1.2 and
//!   1.3 with forward-secret AEAD suites only, no client certificates, the serving
//!   certificate chosen by SNI among several stores.
//!
//! Every configuration names the aws-lc-rs provider explicitly instead of relying on a
//! process-wide default, so that a library elsewhere in the process installing another
//! provider changes nothing here. A configuration is built once per listener or
//! cluster; rotation never rebuilds it.

use std::sync::{Arc, OnceLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, ClientConfig, ConfigBuilder, ConfigSide, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion, WantsVerifier,
};

use crate::store::CertStore;
use crate::verify::{AcceptPolicy, Expect, SpiffeClientVerifier, SpiffeServerVerifier};

/// ALPN for HTTP/2 (mesh HTTP traffic, gRPC).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN Weft uses for opaque TCP tunneled between proxies.
pub const ALPN_TCP: &[u8] = b"weft-tcp";

/// TLS 1.2 suites the edge accepts: ECDHE key exchange (forward secrecy) with an AEAD.
const EDGE_TLS12_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The aws-lc-rs provider every mesh configuration and verifier uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(aws_lc_rs::default_provider()))
        .clone()
}

/// The edge provider: aws-lc-rs with the suite list cut down to TLS 1.3 and
/// [`EDGE_TLS12_SUITES`] (explicitly, so a provider update adding weaker suites does
/// not widen the gateway's surface).
fn edge_provider() -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|suite| match suite {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(_) => EDGE_TLS12_SUITES.contains(&suite.suite()),
    });
    Arc::new(provider)
}

/// Installs aws-lc-rs as the process-wide rustls provider, for other code in the
/// process that builds configurations without naming one. Already installed (by this
/// or anything else) is fine.
pub fn install_default_provider() {
    let _ = aws_lc_rs::default_provider().install_default();
}

/// The mesh listener's configuration: TLS 1.3, client certificate required and
/// verified by [`SpiffeClientVerifier`] (`accept`), the server certificate taken from
/// `store` at each handshake (no credentials loaded: the handshake fails), `alpn` as
/// given, and no session resumption: a resumed session would carry the identity of the
/// certificate it began with, past that certificate's rotation and even its expiry.
/// Mesh connections are long-lived and multiplexed, so full handshakes are rare.
pub fn mesh_server_config(
    store: &CertStore,
    accept: AcceptPolicy,
    alpn: Vec<Vec<u8>>,
) -> Arc<ServerConfig> {
    let verifier = Arc::new(SpiffeClientVerifier::new(store.clone(), accept));
    let mut config = with_versions(
        ServerConfig::builder_with_provider(provider()),
        &[&rustls::version::TLS13],
    )
    .with_client_cert_verifier(verifier)
    .with_cert_resolver(Arc::new(StoreResolver(store.clone())));
    config.alpn_protocols = alpn;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// A mesh cluster's client configuration: TLS 1.3, presenting `store`'s current
/// certificate, verifying the server with [`SpiffeServerVerifier`] (`expect`; the
/// server name is not checked), `alpn` as given, no session resumption (see
/// [`mesh_server_config`]).
pub fn mesh_client_config(
    store: &CertStore,
    expect: Expect,
    alpn: Vec<Vec<u8>>,
) -> Arc<ClientConfig> {
    let verifier = Arc::new(SpiffeServerVerifier::new(store.clone(), expect));
    let mut config = with_versions(
        ClientConfig::builder_with_provider(provider()),
        &[&rustls::version::TLS13],
    )
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_client_cert_resolver(Arc::new(StoreResolver(store.clone())));
    config.alpn_protocols = alpn;
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The gateway's configuration for external clients: TLS 1.2 and 1.3, forward-secret
/// AEAD suites only, no client authentication, the certificate chosen by SNI among
/// `certs` (exact DNS name, then a `*.` wildcard for one label; no SNI or no match:
/// the first store), `alpn` as given.
pub fn edge_server_config(certs: Vec<CertStore>, alpn: Vec<Vec<u8>>) -> Arc<ServerConfig> {
    let mut config = with_versions(
        ServerConfig::builder_with_provider(edge_provider()),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(SniResolver { stores: certs }));
    config.alpn_protocols = alpn;
    enable_tickets(&mut config);
    Arc::new(config)
}

/// Sets the protocol versions on a builder for one of this module's providers.
fn with_versions<S: ConfigSide>(
    builder: ConfigBuilder<S, rustls::WantsVersions>,
    versions: &[&'static SupportedProtocolVersion],
) -> ConfigBuilder<S, WantsVerifier> {
    match builder.with_protocol_versions(versions) {
        Ok(builder) => builder,
        // rustls refuses only a provider without suites or key exchange groups for
        // these versions; aws-lc-rs has them all and this crate's features enable
        // TLS 1.2, so this is a build defect that every test in this crate would hit.
        Err(e) => panic!("aws-lc-rs provider cannot do the requested TLS versions: {e}"),
    }
}

/// Stateless session tickets (aws-lc-rs, rotating keys). Without them resumption
/// falls back to the server's in-memory session cache, which still works.
fn enable_tickets(config: &mut ServerConfig) {
    match aws_lc_rs::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(error) => {
            tracing::warn!(%error, "TLS session tickets unavailable; using the session cache");
        }
    }
}

/// Serves (and presents) a store's current certificate.
#[derive(Debug)]
struct StoreResolver(CertStore);

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let creds = self.0.current();
        if creds.is_none() {
            // Debug, not warn: this fires on every connection attempt until a certificate
            // is published, and failed loads are already logged by the store.
            tracing::debug!(source = %self.0.source(), "TLS handshake refused: no certificate loaded yet");
        }
        creds.map(|c| c.certified_key().clone())
    }
}

impl ResolvesClientCert for StoreResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

/// Chooses among several stores by SNI.
#[derive(Debug)]
struct SniResolver {
    stores: Vec<CertStore>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current: Vec<_> = self.stores.iter().map(CertStore::current).collect();
        let names: Vec<&[String]> = current
            .iter()
            .map(|c| c.as_deref().map_or(&[][..], |c| c.dns_names()))
            .collect();
        let chosen = choose(hello.server_name(), &names).unwrap_or(0);
        current
            .get(chosen)
            .and_then(Option::as_ref)
            .map(|c| c.certified_key().clone())
    }
}

/// The index of the certificate whose DNS names (`names[i]`, lowercase) serve `sni`:
/// an exact match first, then a wildcard; `None` when nothing matches.
fn choose(sni: Option<&str>, names: &[&[String]]) -> Option<usize> {
    let sni = sni?.trim_end_matches('.');
    let exact = names
        .iter()
        .position(|names| names.iter().any(|n| n.eq_ignore_ascii_case(sni)));
    exact.or_else(|| {
        names
            .iter()
            .position(|names| names.iter().any(|n| wildcard_matches(n, sni)))
    })
}

/// `*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_picks_exact_then_wildcard_else_none() {
        let a = vec!["api.example.com".to_owned()];
        let b = vec!["*.example.com".to_owned(), "example.org".to_owned()];
        let c = vec!["www.example.com".to_owned()];
        let names: Vec<&[String]> = vec![&a, &b, &c];
        let table: &[(Option<&str>, Option<usize>)] = &[
            (Some("api.example.com"), Some(0)),
            (Some("API.Example.com"), Some(0)),
            (Some("api.example.com."), Some(0)),
            // The exact name beats the wildcard that also covers it.
            (Some("www.example.com"), Some(2)),
            (Some("shop.example.com"), Some(1)),
            (Some("example.org"), Some(1)),
            (Some("a.b.example.com"), None),
            (Some("example.com"), None),
            (Some("other.net"), None),
            (None, None),
        ];
        for (sni, want) in table {
            assert_eq!(choose(*sni, &names), *want, "{sni:?}");
        }
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(wildcard_matches("*.e.com", "a.e.com"));
        assert!(!wildcard_matches("*.e.com", ".e.com"));
        assert!(!wildcard_matches("*.e.com", "e.com"));
        assert!(!wildcard_matches("*.e.com", "a.b.e.com"));
        assert!(!wildcard_matches("a.e.com", "a.e.com"));
    }

    #[test]
    fn edge_suites_are_forward_secret_aeads() {
        let provider = edge_provider();
        let suites: Vec<CipherSuite> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        for suite in &suites {
            let name = format!("{suite:?}");
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
        }
        assert!(suites.contains(&CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));
        assert!(suites.contains(&CipherSuite::TLS13_AES_128_GCM_SHA256));
    }
}
