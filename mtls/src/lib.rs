//! Workload identity and mutual TLS for Weft.
//!
//! Proxies in the mesh talk TLS 1.3 to each other and prove who they are with X.509
//! certificates carrying a SPIFFE id (`spiffe://trust-domain/ns/NS/sa/SA`) as their one
//! URI SAN. This crate owns everything between the PEM files on disk and a rustls
//! configuration the listeners and clusters can use:
//!
//! - [`id`]: [`SpiffeId`] and [`TrustDomain`], validated on parse (SPIFFE spec rules).
//! - [`creds`]: [`Credentials`], one loaded and checked identity (certificate chain,
//!   matching key, validity, SPIFFE id, trust bundle), with the rustls pieces built
//!   once so that handshakes only read them.
//! - [`store`]: [`CertStore`], the current credentials of one identity behind a
//!   lock-free swap plus a watch channel; [`FileSource`] keeps it fed from PEM files
//!   (inotify, debounced). A bad update is refused and the previous credentials stay.
//! - [`verify`]: SPIFFE-aware rustls verifiers for both sides, [`peer_id`] and the
//!   mapping of handshake errors to metric outcomes.
//! - [`config`]: the rustls configurations: mesh server and client (TLS 1.3, mutual),
//!   and the gateway's edge server (TLS 1.2/1.3, certificate chosen by SNI).
//! - [`handshake`]: [`HandshakeCounters`], the `weft_tls_handshakes_total` handles.
//! - [`ca`]: the development CA behind `weft ca init|issue` (rcgen, ECDSA P-256).
//!
//! Rotation: the configurations read [`CertStore::current`] at every handshake, so a
//! publish affects new handshakes only; open connections keep the keys they agreed on.
//!
//! All errors at the crate boundary are one [`Error`].

#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod creds;
mod error;
pub mod handshake;
pub mod id;
mod leaf;
pub mod store;
pub mod verify;

pub use ca::{DevCa, IssueSpec, Issued, init_dir, issue_dir};
pub use config::{
    ALPN_H2, ALPN_HTTP11, ALPN_TCP, edge_server_config, install_default_provider,
    mesh_client_config, mesh_server_config,
};
pub use creds::Credentials;
pub use error::Error;
pub use handshake::HandshakeCounters;
pub use id::{SpiffeId, TrustDomain};
pub use store::{CertPaths, CertStore, FileSource};
pub use verify::{
    AcceptPolicy, Expect, IdentityError, SpiffeClientVerifier, SpiffeServerVerifier, io_outcome,
    outcome, peer_id,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
