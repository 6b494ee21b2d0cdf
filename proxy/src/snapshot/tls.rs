//! TLS settings of listeners and clusters, as validated data.
//!
//! Two kinds of TLS run through Weft. Between proxies it is *mesh* mutual TLS: TLS 1.3
//! only, both sides present a workload certificate naming a SPIFFE id, and each checks
//! the other's id (the server: the caller's trust domain; the client: the exact id it
//! expects for the cluster). At the edge it is *edge* TLS for external clients: TLS 1.2
//! and 1.3 with forward-secret AEAD suites, a server certificate chosen by SNI, no
//! client certificate. Certificates are named by their files; the run-time side
//! ([`crate::tls`]) loads, watches and rotates them.

use std::path::PathBuf;

use weft_mtls::{SpiffeId, TrustDomain};

/// A certificate chain and its key in PEM files, with the trust bundle for mesh
/// identities (absent for edge certificates).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// Trust bundle (CA certificates) peers are verified against.
    pub ca: Option<PathBuf>,
}

/// How a listener terminates TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenerTls {
    /// Mesh mutual TLS with this proxy's workload identity: a client certificate from
    /// one of `trust_domains` is required.
    Mesh {
        /// The workload certificate, key and trust bundle.
        identity: CertFiles,
        /// Trust domains whose callers are accepted (empty: the identity's own).
        trust_domains: Vec<TrustDomain>,
    },
    /// TLS for external clients, a certificate per server name.
    Edge {
        /// Server certificates; the one whose DNS names match the client's SNI is
        /// used, the first one when none does.
        certificates: Vec<CertFiles>,
    },
}

/// Which peer identities a cluster's endpoints may present.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerIds {
    /// Exactly one of these SPIFFE ids.
    Ids(Vec<SpiffeId>),
    /// Any id of this trust domain.
    TrustDomain(TrustDomain),
}

/// How a cluster originates mesh mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterTls {
    /// This proxy's workload certificate, key and trust bundle.
    pub identity: CertFiles,
    /// The identities the endpoints must prove.
    pub peer: PeerIds,
}
