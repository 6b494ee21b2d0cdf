//! SPIFFE-aware certificate verification for mutual TLS between proxies.
//!
//! Mesh peers are dialed by IP and named by SPIFFE id, not by DNS name, so the stock
//! rustls verifiers do half the job: they check the chain against the bundle, the
//! validity and the key usage, and this module adds the identity check: the peer's
//! certificate has exactly one URI SAN, it is a SPIFFE id, and it is one the local side
//! accepts ([`AcceptPolicy`] on servers, [`Expect`] on clients). DNS SANs never count,
//! even when they spell `spiffe://`.
//!
//! Both verifiers read the bundle from the [`CertStore`] at each handshake, so a
//! rotated bundle applies to the next handshake without rebuilding any configuration.
//!
//! Identity failures are `CertificateError::Other` holding an [`IdentityError`], so
//! they stay distinguishable from chain failures; [`outcome`] and [`io_outcome`] turn
//! any handshake error into the `outcome` label of `weft_tls_handshakes_total`.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, CertificateError, DigitallySignedStruct, DistinguishedName, Error,
    OtherError, SignatureScheme,
};

use crate::store::CertStore;
use crate::{Credentials, SpiffeId, TrustDomain};

/// Which client identities a mesh server accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptPolicy {
    /// Accepted trust domains; empty means the trust domain of the server's own
    /// current certificate.
    pub trust_domains: Vec<TrustDomain>,
}

/// Which server identity a mesh client expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// One of these ids exactly.
    Ids(Vec<SpiffeId>),
    /// Any id in this trust domain.
    TrustDomain(TrustDomain),
}

/// Why a peer's certificate, valid as a certificate, does not prove an acceptable
/// identity. Carried in `CertificateError::Other`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The leaf has no URI SAN.
    #[error("peer certificate has no URI SAN, so no SPIFFE id")]
    NoUriSan,
    /// The leaf has several URI SANs.
    #[error("peer certificate has {0} URI SANs; a SPIFFE certificate has exactly one")]
    ManyUriSans(usize),
    /// The URI SAN is not a SPIFFE id.
    #[error("peer URI SAN {uri:?} is not a valid SPIFFE id: {reason}")]
    NotSpiffe {
        /// The URI SAN.
        uri: String,
        /// What rule it breaks.
        reason: String,
    },
    /// The peer's trust domain is not accepted.
    #[error("peer {id} is not in an accepted trust domain ({accepted})")]
    UntrustedDomain {
        /// The peer's id.
        id: SpiffeId,
        /// The accepted trust domains, comma-separated.
        accepted: String,
    },
    /// The peer is not the expected workload.
    #[error("peer {id} is not the expected identity ({expected})")]
    Unexpected {
        /// The peer's id.
        id: SpiffeId,
        /// What was expected.
        expected: String,
    },
    /// The leaf could not be parsed for its SANs.
    #[error("peer certificate cannot be parsed: {0}")]
    Unparsable(String),
}

impl fmt::Debug for IdentityError {
    // rustls prints `CertificateError::Other` with `{:?}`; the sentence is what an
    // operator reading that log line needs, not the variant's fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Server side: requires and verifies the client's certificate and SPIFFE id.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    store: CertStore,
    accept: AcceptPolicy,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Client side: verifies the server's certificate and SPIFFE id, ignoring the server
/// name (mesh peers are dialed by IP).
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    store: CertStore,
    expect: Expect,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    /// Verifies clients against the bundle in `store` and the `accept` policy.
    pub fn new(store: CertStore, accept: AcceptPolicy) -> Self {
        Self {
            store,
            accept,
            algorithms: crate::config::provider().signature_verification_algorithms,
        }
    }

    fn check_identity(
        &self,
        creds: &Credentials,
        end_entity: &CertificateDer<'_>,
    ) -> Result<(), Error> {
        let id = identity(end_entity)?;
        let own;
        let accepted = if self.accept.trust_domains.is_empty() {
            // No list: the domain of our own certificate, as it is now.
            own = creds
                .id()
                .and_then(|own| own.trust_domain().parse::<TrustDomain>().ok());
            own.as_slice()
        } else {
            &self.accept.trust_domains
        };
        if accepted.iter().any(|td| id.is_in(td)) {
            return Ok(());
        }
        let accepted = accepted
            .iter()
            .map(TrustDomain::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Err(identity_error(IdentityError::UntrustedDomain {
            id,
            accepted,
        }))
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to follow the rotating bundle but are returned by
        // reference; mesh clients have one certificate and send it regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let creds = current(&self.store)?;
        let trust = creds.trust().ok_or_else(no_bundle)?;
        trust
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check_identity(&creds, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl SpiffeServerVerifier {
    /// Verifies servers against the bundle in `store`, requiring `expect`.
    pub fn new(store: CertStore, expect: Expect) -> Self {
        Self {
            store,
            expect,
            algorithms: crate::config::provider().signature_verification_algorithms,
        }
    }

    fn check_identity(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let id = identity(end_entity)?;
        let (ok, expected) = match &self.expect {
            Expect::Ids(ids) => (
                ids.contains(&id),
                ids.iter()
                    .map(SpiffeId::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Expect::TrustDomain(td) => (id.is_in(td), format!("any id in {td}")),
        };
        if ok {
            Ok(())
        } else {
            Err(identity_error(IdentityError::Unexpected { id, expected }))
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let creds = current(&self.store)?;
        let trust = creds.trust().ok_or_else(no_bundle)?;
        // Chain to the bundle, validity and the serverAuth usage; the name check is the
        // one part left out, replaced by the SPIFFE id check below.
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &trust.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        self.check_identity(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE id of a peer's leaf certificate (its one URI SAN), if it has one; use it
/// on `conn.peer_certificates()` after a handshake.
pub fn peer_id(certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    identity(certs.first()?).ok()
}

/// The `outcome` label for a failed handshake (see `weft_tls_handshakes_total`):
/// `no_client_cert`, `unknown_ca`, `bad_identity`, `expired`, `not_yet_valid`,
/// `bad_eku`, `protocol` (no common version, suite or ALPN; malformed messages),
/// `peer_refused` (the peer sent an alert: its own counter says why) or `other`.
pub fn outcome(err: &Error) -> &'static str {
    match err {
        Error::NoCertificatesPresented => "no_client_cert",
        Error::InvalidCertificate(cert) => certificate_outcome(cert),
        Error::AlertReceived(alert) => match alert {
            AlertDescription::ProtocolVersion
            | AlertDescription::HandshakeFailure
            | AlertDescription::InsufficientSecurity
            | AlertDescription::NoApplicationProtocol => "protocol",
            _ => "peer_refused",
        },
        Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::InvalidMessage(_)
        | Error::PeerIncompatible(_)
        | Error::PeerMisbehaved(_)
        | Error::NoApplicationProtocol
        | Error::PeerSentOversizedRecord
        | Error::DecryptError => "protocol",
        _ => "other",
    }
}

/// [`outcome`] for the `io::Error` tokio-rustls returns (it wraps the rustls error);
/// `other` for plain I/O failures.
pub fn io_outcome(err: &std::io::Error) -> &'static str {
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(err) => outcome(err),
        None => "other",
    }
}

fn certificate_outcome(err: &CertificateError) -> &'static str {
    match err {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not_yet_valid"
        }
        // A bad signature means the issuer's name matched a trust anchor but its key
        // did not: another CA with the same name, as unknown as any other.
        CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "bad_eku"
        }
        CertificateError::ApplicationVerificationFailure
        | CertificateError::NotValidForName
        | CertificateError::NotValidForNameContext { .. } => "bad_identity",
        CertificateError::Other(OtherError(e)) if e.is::<IdentityError>() => "bad_identity",
        _ => "other",
    }
}

/// The leaf's one URI SAN as a SPIFFE id, or why not.
fn identity(end_entity: &CertificateDer<'_>) -> Result<SpiffeId, Error> {
    let leaf =
        crate::leaf::parse(end_entity).map_err(|e| identity_error(IdentityError::Unparsable(e)))?;
    let uri = match leaf.uris.as_slice() {
        [uri] => uri,
        [] => return Err(identity_error(IdentityError::NoUriSan)),
        many => return Err(identity_error(IdentityError::ManyUriSans(many.len()))),
    };
    uri.parse().map_err(|e: crate::Error| {
        identity_error(IdentityError::NotSpiffe {
            uri: uri.clone(),
            reason: match e {
                crate::Error::InvalidSpiffeId { reason, .. } => reason.to_owned(),
                e => e.to_string(),
            },
        })
    })
}

fn identity_error(e: IdentityError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn current(store: &CertStore) -> Result<Arc<Credentials>, Error> {
    store.current().ok_or_else(|| {
        Error::General(format!(
            "no certificate loaded yet for {}; cannot verify peers",
            store.source()
        ))
    })
}

fn no_bundle() -> Error {
    Error::General("the local credentials have no trust bundle (edge certificate?)".to_owned())
}
