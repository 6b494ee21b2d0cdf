//! The gateway's edge configuration: certificate selection by SNI, versions and suites.

use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::{CipherSuite, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme};

use super::*;
use crate::{ALPN_H2, ALPN_HTTP11, DevCa, TrustDomain, edge_server_config};

const TTL: Duration = Duration::from_secs(3600);

/// Two serving certificates: `api.example.com` (the default) and `*.example.org`.
struct Gateway {
    ca: DevCa,
    api: CertStore,
    wild: CertStore,
    config: Arc<ServerConfig>,
}

impl Gateway {
    fn new() -> Gateway {
        let ca = DevCa::new(&"example.org".parse::<TrustDomain>().unwrap()).unwrap();
        let store = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let issued = ca.issue_server(&names, TTL).unwrap();
            let store = CertStore::new("edge", &Registry::new());
            assert!(store.publish(Credentials::edge(
                issued.cert_pem.as_bytes(),
                issued.key_pem.as_bytes(),
                "edge",
            )));
            store
        };
        let api = store(&["api.example.com"]);
        let wild = store(&["*.example.org"]);
        let config = edge_server_config(
            vec![api.clone(), wild.clone()],
            vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
        );
        Gateway {
            ca,
            api,
            wild,
            config,
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(chain(self.ca.cert_pem()).remove(0)).unwrap();
        Arc::new(roots)
    }

    /// A browser-like client: verifies chain and name against the dev CA.
    fn strict_client(&self, provider: Arc<CryptoProvider>) -> Arc<ClientConfig> {
        let versions = provider_versions(&provider);
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&versions)
                .unwrap()
                .with_root_certificates(self.roots())
                .with_no_client_auth(),
        )
    }

    /// A client that checks the chain and signatures but accepts any name, so that
    /// the certificate the gateway falls back to can be looked at.
    fn lenient_client(&self) -> Arc<ClientConfig> {
        let provider = crate::config::provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots(), provider.clone())
            .build()
            .unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
                .with_no_client_auth(),
        )
    }
}

fn provider_versions(provider: &CryptoProvider) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut versions = Vec::new();
    if provider
        .cipher_suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS13)
    {
        versions.push(&rustls::version::TLS13);
    }
    if provider
        .cipher_suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS12)
    {
        versions.push(&rustls::version::TLS12);
    }
    versions
}

/// Full verification except the name.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

/// The leaf the gateway served for `name`.
async fn served(
    gw: &Gateway,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> CertificateDer<'static> {
    let (s, c) = open(gw.config.clone(), client, name).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await.unwrap();
    c.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn leaf(store: &CertStore) -> CertificateDer<'static> {
    store.current().unwrap().leaf().clone()
}

#[tokio::test]
async fn sni_selects_the_certificate_exact_wildcard_or_default() {
    let gw = Gateway::new();
    let strict = gw.strict_client(crate::config::provider());
    assert_eq!(
        served(&gw, strict.clone(), dns("api.example.com")).await,
        leaf(&gw.api)
    );
    assert_eq!(
        served(&gw, strict, dns("shop.example.org")).await,
        leaf(&gw.wild)
    );
    let lenient = gw.lenient_client();
    assert_eq!(
        served(&gw, lenient.clone(), dns("other.net")).await,
        leaf(&gw.api)
    );
    // An IP address sends no SNI at all.
    assert_eq!(served(&gw, lenient, mesh_name()).await, leaf(&gw.api));
}

#[tokio::test]
async fn tls12_with_an_ecdhe_aead_suite_is_accepted() {
    let gw = Gateway::new();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    let client = gw.strict_client(Arc::new(provider));
    let (s, c) = open(gw.config.clone(), client, dns("api.example.com")).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await.unwrap();
    let conn = c.get_ref().1;
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
}

#[tokio::test]
async fn tls12_without_forward_secrecy_is_refused() {
    let gw = Gateway::new();
    let (mut raw, pipe) = tokio::io::duplex(1 << 16);
    let accept = tokio::spawn(TlsAcceptor::from(gw.config.clone()).accept(pipe));
    // rustls cannot offer static-RSA suites, so the old client is a hand-written TLS 1.2
    // ClientHello offering only TLS_RSA_WITH_AES_128_GCM_SHA256 and
    // TLS_RSA_WITH_AES_128_CBC_SHA (no ECDHE: no forward secrecy).
    raw.write_all(&rsa_only_client_hello()).await.unwrap();
    let mut reply = [0u8; 7];
    raw.read_exact(&mut reply).await.unwrap();
    // An alert record: fatal (2), handshake_failure (40).
    assert_eq!((reply[0], reply[5], reply[6]), (0x15, 2, 40), "{reply:?}");
    let err = accept.await.unwrap().unwrap_err();
    assert_eq!(io_outcome(&err), "protocol", "{err}");
}

/// A TLS 1.2 ClientHello record offering only static-RSA key exchange.
fn rsa_only_client_hello() -> Vec<u8> {
    fn with_len16(body: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }
    let mut extensions = Vec::new();
    // supported_groups: secp256r1
    extensions.extend_from_slice(&[0x00, 0x0a]);
    extensions.extend(with_len16(&with_len16(&[0x00, 0x17])));
    // ec_point_formats: uncompressed
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
    extensions.extend_from_slice(&[0x00, 0x0d]);
    extensions.extend(with_len16(&with_len16(&[0x04, 0x03, 0x08, 0x04])));

    let mut hello = vec![0x03, 0x03]; // client_version TLS 1.2
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend(with_len16(&[0x00, 0x9c, 0x00, 0x2f])); // cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    hello.extend(with_len16(&extensions));

    let len = u32::try_from(hello.len()).unwrap().to_be_bytes();
    let mut handshake = vec![0x01, len[1], len[2], len[3]]; // client_hello
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, legacy version
    record.extend(with_len16(&handshake));
    record
}
