//! Certificates and TLS clients for the identity and security tests.
//!
//! [`TestCa`] is a [`weft_mtls::DevCa`] for one trust domain with a temporary directory:
//! [`TestCa::issue`] writes a workload certificate (`cert.pem`, `key.pem`, `ca.pem`,
//! through [`weft_mtls::Issued::write`], as `weft ca issue` does) into a directory of
//! its own and returns a [`CertDir`] with the paths to put in a proxy's YAML. The
//! helpers beside it make the certificates a mesh listener must refuse: expired, not yet
//! valid, a DNS SAN instead of a SPIFFE id, no clientAuth usage; and the edge's server
//! certificates. [`CertDir::rotate`] rewrites a directory with a new certificate for the
//! same identity (what a certificate agent does), [`CertDir::write_key`] with a key that
//! does not match (a bad rotation).
//!
//! [`TlsClient`] talks TLS to a listener directly: tokio-rustls with the trust bundle of
//! one or more CAs, an optional client certificate (any [`CertDir`], also the bad ones:
//! the client presents whatever it is given), chosen protocol versions and ALPN. The
//! server certificate is checked against the bundle (chain, validity) but not by name,
//! since mesh certificates name a SPIFFE id and tests compare the certificate they got
//! with the one they expect instead. [`TlsClient::get`] runs a whole HTTP exchange
//! (HTTP/2 when ALPN picked `h2`, else HTTP/1.1) and returns an [`Exchange`]: the
//! response, or the reason the handshake or the request failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use http::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weft_mtls::{DevCa, IssueSpec, Issued, SpiffeId, TrustDomain};

use crate::client::{Reply, empty};

/// A development CA for one trust domain, with a temporary directory for what it issues
/// (removed when the CA is dropped).
#[derive(Debug)]
pub struct TestCa {
    ca: DevCa,
    dir: PathBuf,
    next: AtomicUsize,
}

/// A certificate, its key and the trust bundle in files, as a proxy's `identity` (or an
/// edge listener's `certificates` entry) names them.
#[derive(Clone, Debug)]
pub struct CertDir {
    /// The directory holding the three files.
    pub dir: PathBuf,
    /// `cert.pem`: the leaf certificate.
    pub cert: PathBuf,
    /// `key.pem`: its private key.
    pub key: PathBuf,
    /// `ca.pem`: the trust bundle.
    pub ca: PathBuf,
    /// The SPIFFE id the certificate names (`None` for DNS-only certificates).
    pub id: Option<SpiffeId>,
    issued: Issued,
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestCa {
    /// A new CA for trust domain `td` (`mesh.test`).
    pub fn new(td: &str) -> anyhow::Result<TestCa> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let td: TrustDomain = td.parse()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "weft-tests-ca-{}-{n}-{}",
            std::process::id(),
            td.as_str()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TestCa {
            ca: DevCa::new(&td)?,
            dir,
            next: AtomicUsize::new(0),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.ca.trust_domain()
    }

    /// The CA certificate, PEM (the trust bundle).
    pub fn cert_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// `spiffe://TD/ns/default/sa/NAME`, or `name` itself when it is already a SPIFFE id.
    ///
    /// # Panics
    /// When the result is not a valid SPIFFE id (a test mistake).
    pub fn id(&self, name: &str) -> SpiffeId {
        let text = if name.starts_with("spiffe://") {
            name.to_owned()
        } else {
            format!("spiffe://{}/ns/default/sa/{name}", self.trust_domain())
        };
        text.parse()
            .unwrap_or_else(|e| panic!("test SPIFFE id {text:?}: {e}"))
    }

    /// A workload certificate for `name_or_id` (see [`TestCa::id`]) valid for `ttl`
    /// (from a minute ago), written into a new directory.
    pub fn issue(&self, name_or_id: &str, ttl: Duration) -> anyhow::Result<CertDir> {
        let id = self.id(name_or_id);
        self.write(name_or_id, Some(id.clone()), self.ca.issue(&id, ttl)?)
    }

    /// As [`TestCa::issue`], with the bundle also trusting the `others` CAs (a proxy
    /// that can verify certificates of other trust domains).
    pub fn issue_trusting(
        &self,
        name_or_id: &str,
        ttl: Duration,
        others: &[&TestCa],
    ) -> anyhow::Result<CertDir> {
        let id = self.id(name_or_id);
        let mut issued = self.ca.issue(&id, ttl)?;
        for other in others {
            issued.ca_pem.push_str(other.cert_pem());
        }
        self.write(name_or_id, Some(id), issued)
    }

    /// A certificate exactly as `spec` says (see [`weft_mtls::IssueSpec`]), written
    /// into a new directory named after `label`.
    pub fn issue_with(&self, label: &str, spec: &IssueSpec) -> anyhow::Result<CertDir> {
        let id = match spec.uri_sans.as_slice() {
            [one] => one.parse().ok(),
            _ => None,
        };
        self.write(label, id, self.ca.issue_with(spec)?)
    }

    /// A workload certificate for `name` that expired an hour ago.
    pub fn expired(&self, name: &str) -> anyhow::Result<CertDir> {
        let now = SystemTime::now();
        let mut spec = IssueSpec::workload(&self.id(name), Duration::from_secs(60));
        spec.not_before = now - Duration::from_secs(7200);
        spec.not_after = now - Duration::from_secs(3600);
        self.issue_with(name, &spec)
    }

    /// A workload certificate for `name` valid only from an hour from now.
    pub fn not_yet_valid(&self, name: &str) -> anyhow::Result<CertDir> {
        let now = SystemTime::now();
        let mut spec = IssueSpec::workload(&self.id(name), Duration::from_secs(60));
        spec.not_before = now + Duration::from_secs(3600);
        spec.not_after = now + Duration::from_secs(7200);
        self.issue_with(name, &spec)
    }

    /// A certificate naming `dns` as a DNS SAN and no URI SAN: no SPIFFE id (even when
    /// `dns` spells one's host part), otherwise a valid client and server certificate.
    pub fn dns_only(&self, dns: &str) -> anyhow::Result<CertDir> {
        let mut spec = IssueSpec::workload(&self.id("unused"), Duration::from_secs(3600));
        spec.uri_sans.clear();
        spec.dns_sans = vec![dns.to_owned()];
        self.issue_with(dns, &spec)
    }

    /// A workload certificate for `name` whose extended key usage lists serverAuth only.
    pub fn without_client_auth(&self, name: &str) -> anyhow::Result<CertDir> {
        let mut spec = IssueSpec::workload(&self.id(name), Duration::from_secs(3600));
        spec.client_auth = false;
        self.issue_with(name, &spec)
    }

    /// An edge (gateway) server certificate for `dns_names`, valid for an hour.
    pub fn server(&self, dns_names: &[&str]) -> anyhow::Result<CertDir> {
        let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let issued = self.ca.issue_server(&names, Duration::from_secs(3600))?;
        self.write(dns_names.first().copied().unwrap_or("server"), None, issued)
    }

    /// A new certificate for `dir`'s identity, valid for `ttl`, not written anywhere.
    pub fn reissue(&self, dir: &CertDir, ttl: Duration) -> anyhow::Result<Issued> {
        let id = dir
            .id
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{} names no SPIFFE id", dir.dir.display()))?;
        Ok(self.ca.issue(id, ttl)?)
    }

    fn write(&self, label: &str, id: Option<SpiffeId>, issued: Issued) -> anyhow::Result<CertDir> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = self.dir.join(format!("{n}-{safe}"));
        issued.write(&dir)?;
        Ok(CertDir {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
            dir,
            id,
            issued,
        })
    }
}

impl CertDir {
    /// What is in the files now (as far as this value wrote them).
    pub fn issued(&self) -> &Issued {
        &self.issued
    }

    /// The SPIFFE id, as text.
    ///
    /// # Panics
    /// For a certificate without one (a test mistake).
    pub fn id_str(&self) -> &str {
        self.id
            .as_ref()
            .map(SpiffeId::as_str)
            .unwrap_or_else(|| panic!("{} names no SPIFFE id", self.dir.display()))
    }

    /// The leaf certificate, DER.
    pub fn cert_der(&self) -> anyhow::Result<CertificateDer<'static>> {
        leaf_der(&self.issued.cert_pem)
    }

    /// The proxy's top-level `identity:` value, in YAML flow style.
    pub fn identity_yaml(&self) -> String {
        format!(
            "{{ cert: {:?}, key: {:?}, ca: {:?} }}",
            self.cert.display().to_string(),
            self.key.display().to_string(),
            self.ca.display().to_string()
        )
    }

    /// An edge listener's `certificates` entry, in YAML flow style.
    pub fn edge_yaml(&self) -> String {
        format!(
            "{{ cert: {:?}, key: {:?} }}",
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }

    /// Rewrites the files with `issued` (atomically per file: [`Issued::write`]), as a
    /// certificate agent rotating them does.
    pub fn rotate(&mut self, issued: Issued) -> anyhow::Result<()> {
        issued.write(&self.dir)?;
        self.issued = issued;
        Ok(())
    }

    /// Replaces `key.pem` alone (atomically) with `key_pem`: with another certificate's
    /// key, a rotation gone wrong.
    pub fn write_key(&self, key_pem: &str) -> anyhow::Result<()> {
        let tmp = self.dir.join(".key.pem.bad");
        std::fs::write(&tmp, key_pem)?;
        std::fs::rename(&tmp, &self.key)?;
        Ok(())
    }
}

/// The first certificate in `pem`, DER.
pub fn leaf_der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate in PEM"))?
        .context("parsing a PEM certificate")
}

/// Lowercase hex SHA-256 of `bytes` (what `x-forwarded-client-cert`'s `Hash=` holds for
/// the caller's DER certificate), with the hash rustls's own provider uses.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let suite = aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let Some(tls13) = suite.tls13() else {
        unreachable!("a TLS 1.3 suite is a TLS 1.3 suite")
    };
    let digest = tls13.common.hash_provider.hash(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The answer to one request over a fresh TLS connection.
#[derive(Debug)]
pub enum Exchange {
    /// A complete HTTP response.
    Answered(Reply),
    /// No response: the handshake failed, or the connection ended (often with the
    /// peer's TLS alert) before a response came. The text says why.
    Refused(String),
}

impl Exchange {
    /// The response, if there was one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Exchange::Answered(r) => Some(r),
            Exchange::Refused(_) => None,
        }
    }
}

/// A TLS client with its own configuration: trusted CAs, an optional client
/// certificate, protocol versions and ALPN. Each connection is a full handshake (no
/// session is kept between connections).
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// A mesh-style client: TLS 1.3 only, trusting `trust` (PEM bundles), presenting
    /// `cert` when given, offering `alpn`.
    pub fn mesh(trust: &[&str], cert: Option<&CertDir>, alpn: &[&[u8]]) -> anyhow::Result<Self> {
        Self::new(trust, cert, &[&rustls::version::TLS13], alpn)
    }

    /// A client with the given protocol versions (e.g. TLS 1.2 only).
    pub fn new(
        trust: &[&str],
        cert: Option<&CertDir>,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for pem in trust {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(der?)?;
            }
        }
        let verifier = Arc::new(ChainOnly {
            roots: Arc::new(roots),
            algorithms: provider.signature_verification_algorithms,
        });
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match cert {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(c.issued.cert_pem.as_bytes())
                        .collect::<Result<_, _>>()?;
                let key = PrivateKeyDer::from_pem_slice(c.issued.key_pem.as_bytes())?;
                builder.with_client_auth_cert(chain, key)?
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Every connection a full handshake: the tests look at certificates.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Connects and runs the handshake, sending `sni` as the server name (none when
    /// `None`). In TLS 1.3 the client finishes before the server has checked its
    /// certificate: a refusal of the client shows on the first read, not here.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        sni: Option<&str>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = match sni {
            Some(s) => ServerName::try_from(s.to_owned())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            // rustls sends no SNI for an IP address.
            None => ServerName::IpAddress(addr.ip().into()),
        };
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }

    /// A fresh connection to `addr` (SNI `sni`), one `GET path` with `Host: host` and
    /// `headers`, the response collected; a failed handshake or a connection that ends
    /// without a response is [`Exchange::Refused`].
    pub async fn get(
        &self,
        addr: SocketAddr,
        sni: Option<&str>,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Exchange> {
        let tls = match self.connect(addr, sni).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(e).context(format!("connecting to {addr}"));
            }
            Err(e) => return Ok(Exchange::Refused(format!("handshake: {e}"))),
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(match http_get(tls, h2, host, path, headers).await {
            Ok(reply) => Exchange::Answered(reply),
            Err(e) => Exchange::Refused(format!("{e:#}")),
        })
    }
}

/// One `GET path` (authority `host`, extra `headers`) over an established stream:
/// HTTP/2 when `h2`, else HTTP/1.1.
pub async fn http_get<S>(
    stream: S,
    h2: bool,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let mut req = if h2 {
        Request::get(format!("https://{host}{path}")).version(Version::HTTP_2)
    } else {
        Request::get(path).header(http::header::HOST, host)
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(empty())?;
    let resp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    Reply::collect(resp).await
}

/// Checks the server's chain against the bundle and its validity, not its name.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
