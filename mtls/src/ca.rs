//! The development CA: a self-signed root that issues workload and gateway certificates.
//!
//! It backs `weft ca init` and `weft ca issue` ([`init_dir`], [`issue_dir`]) so that a
//! mesh can run with mutual TLS without SPIRE or cert-manager, and it makes the
//! certificates the tests need (expired, not yet valid, wrong usages, DNS-only) through
//! [`IssueSpec`]. Everything is ECDSA P-256: small, fast to sign and verify, and
//! supported by every TLS stack a gateway client may bring. It is not a production
//! CA: no revocation, no intermediates, and the key sits in a file.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::{Error, SpiffeId, TrustDomain};

/// File names in a CA directory.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
/// File names in an issued-certificate directory (what [`crate::FileSource`] reads).
const CERT: &str = "cert.pem";
const KEY: &str = "key.pem";
/// How long a development CA is valid: long enough never to get in the way.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Back-dating of notBefore, so that a peer whose clock is a little behind accepts a
/// certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Mode of private key files: readable by the owner only.
const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public material.
const CERT_MODE: u32 = 0o644;

/// A development certificate authority for one trust domain.
pub struct DevCa {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// What a certificate issued by [`DevCa::issue_with`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueSpec {
    /// URI SANs (a SPIFFE id for a workload), written as given.
    pub uri_sans: Vec<String>,
    /// DNS SANs, written as given.
    pub dns_sans: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Whether the extended key usage lists serverAuth.
    pub server_auth: bool,
    /// Whether the extended key usage lists clientAuth.
    pub client_auth: bool,
}

/// A freshly issued certificate with its key and the CA certificate that signed it.
#[derive(Clone)]
pub struct Issued {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The issuing CA's certificate, PEM: the trust bundle for peers.
    pub ca_pem: String,
}

impl IssueSpec {
    /// A mesh workload certificate for `id`: the id as the one URI SAN, usable as
    /// client and server, valid from a minute ago (clock skew) for `ttl`.
    pub fn workload(id: &SpiffeId, ttl: Duration) -> IssueSpec {
        let now = SystemTime::now();
        IssueSpec {
            uri_sans: vec![id.as_str().to_owned()],
            dns_sans: Vec::new(),
            not_before: now - CLOCK_SKEW,
            not_after: now + ttl,
            server_auth: true,
            client_auth: true,
        }
    }
}

impl DevCa {
    /// A new self-signed CA for `td`, with `spiffe://TD` as its URI SAN.
    pub fn new(td: &TrustDomain) -> Result<DevCa, Error> {
        let key = new_key()?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Weft development CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, td.as_str());
        params.subject_alt_names = vec![uri_san(&format!("spiffe://{td}"))?];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::ca("signing the CA certificate", e))?;
        Ok(DevCa {
            trust_domain: td.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Reads a CA saved by [`DevCa::save`] from `dir` (`ca.pem`, `ca-key.pem`).
    pub fn load(dir: &Path) -> Result<DevCa, Error> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = read_string(&cert_path)?;
        let key_pem = read_string(&key_path)?;
        let origin = cert_path.display().to_string();
        let bad_cert = |reason: String| Error::BadCertificate {
            origin: origin.clone(),
            reason,
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => Error::NoCertificate {
                origin: origin.clone(),
            },
            e => bad_cert(e.to_string()),
        })?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| bad_cert(e.to_string()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::BadPrivateKey {
            origin: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
        if key.subject_public_key_info() != x509.public_key().raw {
            return Err(Error::KeyMismatch {
                cert: origin,
                key: key_path.display().to_string(),
            });
        }
        let trust_domain = ca_trust_domain(&der).map_err(bad_cert)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| bad_cert(format!("cannot issue with it: {e}")))?;
        Ok(DevCa {
            trust_domain,
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// Writes `ca.pem` and `ca-key.pem` (mode 0600) into `dir`, creating it if needed.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(dir, CA_CERT, self.cert_pem.as_bytes(), CERT_MODE)?;
        write_atomic(dir, CA_KEY, self.key_pem.as_bytes(), KEY_MODE)
    }

    /// The CA certificate, PEM: the trust bundle workloads need.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The trust domain this CA issues ids in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// A workload certificate for `id`, valid for `ttl` (see [`IssueSpec::workload`]).
    pub fn issue(&self, id: &SpiffeId, ttl: Duration) -> Result<Issued, Error> {
        self.issue_with(&IssueSpec::workload(id, ttl))
    }

    /// A gateway (edge) server certificate for `dns_names` (wildcards allowed), valid
    /// from a minute ago for `ttl`, with serverAuth only.
    pub fn issue_server(&self, dns_names: &[String], ttl: Duration) -> Result<Issued, Error> {
        let now = SystemTime::now();
        self.issue_with(&IssueSpec {
            uri_sans: Vec::new(),
            dns_sans: dns_names.to_vec(),
            not_before: now - CLOCK_SKEW,
            not_after: now + ttl,
            server_auth: true,
            client_auth: false,
        })
    }

    /// A certificate exactly as `spec` says. Nothing is checked beyond what X.509
    /// needs (a SAN, a non-empty validity): tests use this to make bad certificates.
    pub fn issue_with(&self, spec: &IssueSpec) -> Result<Issued, Error> {
        if spec.uri_sans.is_empty() && spec.dns_sans.is_empty() {
            return Err(Error::ca("issuing", "a certificate needs at least one SAN"));
        }
        if spec.not_after <= spec.not_before {
            return Err(Error::ca(
                "issuing",
                "notAfter must be later than notBefore",
            ));
        }
        let key = new_key()?;
        let mut params = CertificateParams::default();
        // The identity is in the SANs; an empty subject makes rcgen mark them critical,
        // as RFC 5280 wants.
        params.distinguished_name = DistinguishedName::new();
        for uri in &spec.uri_sans {
            params.subject_alt_names.push(uri_san(uri)?);
        }
        for dns in &spec.dns_sans {
            let name = dns
                .as_str()
                .try_into()
                .map_err(|e| Error::ca(format!("DNS SAN {dns:?}"), e))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.not_before = spec.not_before.into();
        params.not_after = spec.not_after.into();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::ca("signing a certificate", e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes `cert.pem`, `key.pem` (mode 0600) and `ca.pem` into `dir`, creating it if
    /// needed. Each file is written under a temporary name and renamed into place, so a
    /// watcher never reads half a file; the key goes first and the certificate last, so
    /// the pair is mismatched only for the instant between two renames.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(dir, KEY, self.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(dir, CA_CERT, self.ca_pem.as_bytes(), CERT_MODE)?;
        write_atomic(dir, CERT, self.cert_pem.as_bytes(), CERT_MODE)
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// `weft ca init`: a new CA for `td`, saved into `out`.
pub fn init_dir(td: &TrustDomain, out: &Path) -> Result<DevCa, Error> {
    let ca = DevCa::new(td)?;
    ca.save(out)?;
    Ok(ca)
}

/// `weft ca issue`: a workload certificate for `id` from the CA saved in `ca_dir`,
/// written into `out` (`cert.pem`, `key.pem`, `ca.pem`).
pub fn issue_dir(ca_dir: &Path, id: &SpiffeId, ttl: Duration, out: &Path) -> Result<Issued, Error> {
    let ca = DevCa::load(ca_dir)?;
    let issued = ca.issue(id, ttl)?;
    issued.write(out)?;
    Ok(issued)
}

fn new_key() -> Result<KeyPair, Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::ca("generating a P-256 key", e))
}

fn uri_san(uri: &str) -> Result<SanType, Error> {
    uri.try_into()
        .map(SanType::URI)
        .map_err(|e| Error::ca(format!("URI SAN {uri:?}"), e))
}

/// The trust domain named by a CA certificate's `spiffe://TD` URI SAN.
fn ca_trust_domain(der: &[u8]) -> Result<TrustDomain, String> {
    let leaf = crate::leaf::parse(der)?;
    let uri = leaf
        .uris
        .iter()
        .find(|u| u.starts_with("spiffe://"))
        .ok_or("no spiffe:// URI SAN naming the trust domain")?;
    uri.trim_end_matches('/')
        .parse()
        .map_err(|e: Error| e.to_string())
}

fn read_string(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Writes `name` in `dir` through a temporary file and a rename (atomic on one file
/// system), with `mode` set when the file is created so a key is never readable by
/// others, not even briefly.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    // A leftover from an interrupted write would keep its old mode; start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&tmp, e)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests;
