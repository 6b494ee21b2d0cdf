//! The crate's one error type.
//!
//! Every message is meant for an operator reading a log line: it names the file (or
//! the producer, for credentials that did not come from files) and says what is wrong
//! with it in words, so that the fix is obvious without reading this code.

use std::path::PathBuf;

/// Why an identity, certificate, key, bundle or CA operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string is not a valid SPIFFE id.
    #[error("invalid SPIFFE id {input:?}: {reason}")]
    InvalidSpiffeId {
        /// The rejected text.
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// A string is not a valid SPIFFE trust domain.
    #[error("invalid trust domain {input:?}: {reason}")]
    InvalidTrustDomain {
        /// The rejected text.
        input: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The certificate input holds no PEM `CERTIFICATE` block.
    #[error(
        "{origin}: no PEM certificate found (expected a \"-----BEGIN CERTIFICATE-----\" block)"
    )]
    NoCertificate {
        /// The file (or producer) it came from.
        origin: String,
    },
    /// PEM text could not be decoded.
    #[error("{origin}: malformed PEM: {reason}")]
    BadPem {
        /// The file (or producer) it came from.
        origin: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The key input holds no usable private key.
    #[error("{origin}: no usable private key: {reason}")]
    BadPrivateKey {
        /// The file (or producer) it came from.
        origin: String,
        /// Why it could not be used.
        reason: String,
    },
    /// A certificate could not be parsed as X.509.
    #[error("{origin}: not a usable X.509 certificate: {reason}")]
    BadCertificate {
        /// The file (or producer) it came from.
        origin: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("{key} does not match the certificate in {cert} (their public keys differ)")]
    KeyMismatch {
        /// Where the certificate came from.
        cert: String,
        /// Where the key came from.
        key: String,
    },
    /// The leaf certificate's validity ended.
    #[error("{origin}: certificate expired at {not_after} (now {now})")]
    Expired {
        /// The file (or producer) it came from.
        origin: String,
        /// The certificate's notAfter, UTC.
        not_after: String,
        /// The current time, UTC.
        now: String,
    },
    /// The leaf certificate's validity has not started yet.
    #[error("{origin}: certificate is not valid before {not_before} (now {now}); check the clocks")]
    NotYetValid {
        /// The file (or producer) it came from.
        origin: String,
        /// The certificate's notBefore, UTC.
        not_before: String,
        /// The current time, UTC.
        now: String,
    },
    /// A workload certificate carries no `spiffe://` URI SAN.
    #[error("{origin}: certificate has no spiffe:// URI SAN, so it names no workload identity")]
    NoSpiffeId {
        /// The file (or producer) it came from.
        origin: String,
    },
    /// A workload certificate carries more than one URI SAN.
    #[error("{origin}: certificate has {count} URI SANs; a SPIFFE certificate has exactly one")]
    ManyUriSans {
        /// The file (or producer) it came from.
        origin: String,
        /// How many it has.
        count: usize,
    },
    /// A workload certificate's URI SAN is not a valid SPIFFE id.
    #[error("{origin}: URI SAN {uri:?} is not a valid SPIFFE id: {reason}")]
    BadSpiffeId {
        /// The file (or producer) it came from.
        origin: String,
        /// The URI SAN.
        uri: String,
        /// What rule it breaks.
        reason: String,
    },
    /// The trust bundle holds no certificate.
    #[error("{origin}: trust bundle holds no PEM certificate")]
    EmptyBundle {
        /// The file (or producer) it came from.
        origin: String,
    },
    /// A trust bundle certificate cannot serve as a trust anchor.
    #[error("{origin}: trust bundle certificate #{index} is unusable: {reason}")]
    BadBundle {
        /// The file (or producer) it came from.
        origin: String,
        /// Its position in the bundle, from 1.
        index: usize,
        /// Why.
        reason: String,
    },
    /// rustls refused a piece of the configuration.
    #[error("{origin}: {reason}")]
    Tls {
        /// What was being built (or the file it came from).
        origin: String,
        /// rustls's reason.
        reason: String,
    },
    /// The development CA could not generate or sign a certificate.
    #[error("dev CA: {what}: {reason}")]
    Ca {
        /// What it was doing.
        what: String,
        /// rcgen's reason.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Ca`] from an rcgen error.
    pub(crate) fn ca(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Ca {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
