//! [`Credentials`]: one loaded, checked identity, ready for handshakes.
//!
//! Everything that can be wrong with a certificate, key or bundle is found here, when
//! they are loaded, and reported with the file (or producer) at fault: a key that does
//! not match the certificate, a certificate that expired or is not valid yet, a
//! workload certificate without exactly one SPIFFE id, an empty or unusable bundle. The
//! rustls objects a handshake needs (the certified key, the root store, the webpki
//! client verifier) are built here once, so a handshake only clones `Arc`s.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::leaf::{self, utc};
use crate::{Error, SpiffeId};

/// A certificate chain with its private key, checked and ready to serve, and for a
/// workload also its SPIFFE id and the trust bundle to verify peers with.
pub struct Credentials {
    id: Option<SpiffeId>,
    dns_names: Vec<String>,
    certified_key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    source: String,
    trust: Option<Trust>,
}

/// A workload's trust bundle, in the forms the verifiers use.
pub(crate) struct Trust {
    /// The bundle as webpki trust anchors (for checking servers).
    pub(crate) roots: Arc<RootCertStore>,
    /// webpki's client verifier over the same anchors: chain, validity, clientAuth.
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
    /// The bundle's certificates, to tell a changed bundle from the same one.
    anchors: Vec<CertificateDer<'static>>,
}

/// How to name each input in error messages: file paths for files, else the producer.
pub(crate) struct Origin {
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) bundle: String,
}

impl Origin {
    /// Names for inputs handed over as bytes by the producer `source`.
    fn producer(source: &str) -> Origin {
        Origin {
            cert: format!("{source} certificate"),
            key: format!("{source} private key"),
            bundle: format!("{source} trust bundle"),
        }
    }
}

impl Credentials {
    /// A mesh workload identity: `cert_chain_pem` (leaf first, then any
    /// intermediates), the leaf's `key_pem` and the trust bundle `bundle_pem` (the
    /// roots peers must chain to). `source` names the producer, in errors and metrics.
    ///
    /// The leaf must carry exactly one URI SAN, a SPIFFE id.
    pub fn workload(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: &[u8],
        source: &str,
    ) -> Result<Credentials, Error> {
        Self::build(
            cert_chain_pem,
            key_pem,
            Some(bundle_pem),
            source,
            &Origin::producer(source),
        )
    }

    /// A gateway (edge) serving certificate: the same checks as
    /// [`Credentials::workload`] but no SPIFFE id and no bundle. The leaf's DNS SANs
    /// (lowercased, wildcards kept) are what SNI selects it by.
    pub fn edge(cert_chain_pem: &[u8], key_pem: &[u8], source: &str) -> Result<Credentials, Error> {
        Self::build(
            cert_chain_pem,
            key_pem,
            None,
            source,
            &Origin::producer(source),
        )
    }

    /// Loads and checks credentials; a `bundle` makes them a workload's.
    pub(crate) fn build(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        bundle: Option<&[u8]>,
        source: &str,
        origin: &Origin,
    ) -> Result<Credentials, Error> {
        let chain = read_certs(cert_chain_pem, &origin.cert)?;
        let leaf_der = chain.first().ok_or_else(|| Error::NoCertificate {
            origin: origin.cert.clone(),
        })?;
        let leaf = leaf::parse(leaf_der).map_err(|reason| Error::BadCertificate {
            origin: origin.cert.clone(),
            reason,
        })?;
        check_validity(&leaf, &origin.cert)?;
        let id = match bundle {
            Some(_) => Some(spiffe_id(&leaf, &origin.cert)?),
            None => None,
        };
        let certified_key = Arc::new(certified_key(chain, key_pem, origin)?);
        let trust = match bundle {
            Some(bundle) => Some(Trust::new(bundle, &origin.bundle)?),
            None => None,
        };
        Ok(Credentials {
            id,
            dns_names: leaf.dns.iter().map(|d| d.to_ascii_lowercase()).collect(),
            certified_key,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            source: source.to_owned(),
            trust,
        })
    }

    /// The workload's SPIFFE id (`None` for edge credentials).
    pub fn id(&self) -> Option<&SpiffeId> {
        self.id.as_ref()
    }

    /// The leaf's DNS SANs, lowercased.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The chain and signing key rustls serves.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// The leaf certificate, DER.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `build` refuses an empty chain, so the first certificate exists; an empty
        // slice would be an empty certificate, which no peer accepts.
        static EMPTY: CertificateDer<'static> = CertificateDer::from_slice(&[]);
        self.certified_key.cert.first().unwrap_or(&EMPTY)
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The producer these came from (the store's `source` label).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The trust bundle, for workload credentials.
    pub(crate) fn trust(&self) -> Option<&Trust> {
        self.trust.as_ref()
    }

    /// Whether `other` holds the same chain and bundle (then also the same key, since
    /// each matches its leaf), so that publishing it would change nothing.
    pub(crate) fn same_material(&self, other: &Credentials) -> bool {
        self.certified_key.cert == other.certified_key.cert
            && self.trust.as_ref().map(|t| &t.anchors) == other.trust.as_ref().map(|t| &t.anchors)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .field("id", &self.id)
            .field("dns_names", &self.dns_names)
            .field("not_after", &utc(self.not_after))
            .finish_non_exhaustive()
    }
}

impl Trust {
    fn new(bundle_pem: &[u8], origin: &str) -> Result<Trust, Error> {
        let certs = read_certs(bundle_pem, origin).map_err(|e| match e {
            Error::NoCertificate { origin } => Error::EmptyBundle { origin },
            e => e,
        })?;
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| Error::BadBundle {
                origin: origin.to_owned(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::config::provider())
                .build()
                .map_err(|e| Error::Tls {
                    origin: origin.to_owned(),
                    reason: e.to_string(),
                })?;
        Ok(Trust {
            roots,
            client_verifier,
            anchors: certs,
        })
    }
}

/// All `CERTIFICATE` blocks of `pem`; none is an error.
fn read_certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadPem {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            origin: origin.to_owned(),
        });
    }
    Ok(certs)
}

fn check_validity(leaf: &leaf::Leaf, origin: &str) -> Result<(), Error> {
    let now = SystemTime::now();
    if now < leaf.not_before {
        return Err(Error::NotYetValid {
            origin: origin.to_owned(),
            not_before: utc(leaf.not_before),
            now: utc(now),
        });
    }
    if now > leaf.not_after {
        return Err(Error::Expired {
            origin: origin.to_owned(),
            not_after: utc(leaf.not_after),
            now: utc(now),
        });
    }
    Ok(())
}

/// The leaf's one URI SAN as a SPIFFE id (the X.509-SVID rule).
fn spiffe_id(leaf: &leaf::Leaf, origin: &str) -> Result<SpiffeId, Error> {
    let uri = match leaf.uris.as_slice() {
        [uri] => uri,
        [] => {
            return Err(Error::NoSpiffeId {
                origin: origin.to_owned(),
            });
        }
        many => {
            return Err(Error::ManyUriSans {
                origin: origin.to_owned(),
                count: many.len(),
            });
        }
    };
    if !uri.starts_with("spiffe://") {
        return Err(Error::NoSpiffeId {
            origin: origin.to_owned(),
        });
    }
    uri.parse().map_err(|e: Error| Error::BadSpiffeId {
        origin: origin.to_owned(),
        uri: uri.clone(),
        reason: match e {
            Error::InvalidSpiffeId { reason, .. } => reason.to_owned(),
            e => e.to_string(),
        },
    })
}

/// The chain with its signing key, once the key is known to match the leaf.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
    origin: &Origin,
) -> Result<CertifiedKey, Error> {
    let bad_key = |reason: String| Error::BadPrivateKey {
        origin: origin.key.clone(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => bad_key(
            "no PEM private key block found (expected \"-----BEGIN PRIVATE KEY-----\" or an EC/RSA key)"
                .to_owned(),
        ),
        e => bad_key(format!("malformed PEM: {e}")),
    })?;
    let signing_key = crate::config::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad_key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(Error::KeyMismatch {
                cert: origin.cert.clone(),
                key: origin.key.clone(),
            })
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(bad_key(
            "cannot tell whether it matches the certificate (no public key)".to_owned(),
        )),
        Err(e) => Err(Error::BadCertificate {
            origin: origin.cert.clone(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;
