//! TLS at run time: certificate stores, listener acceptors and cluster connectors for
//! the active configuration, kept across reloads.
//!
//! Every distinct set of certificate files ([`CertFiles`]) gets one
//! [`weft_mtls::CertStore`] fed by a [`weft_mtls::FileSource`] that watches the files:
//! a rotated certificate is used by the next handshake, open connections keep theirs.
//! A reload reuses the stores (and the connectors, with their session caches) whose
//! files it still names; a configuration whose certificate files cannot be loaded is
//! rejected whole. The rustls configurations themselves (TLS 1.3 mesh mTLS with SPIFFE
//! checks, edge TLS with SNI) come from `weft-mtls`.
//!
//! On the accepting side, [`ListenerTls::accept`] runs the handshake and returns what
//! the HTTP server needs: the negotiated protocol and, for mesh listeners, the caller's
//! SPIFFE id and the `x-forwarded-client-cert` value Envoy would give the app
//! (`By=<our id>;Hash=<SHA-256 of the caller's certificate>;URI=<caller's id>`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_mtls::{AcceptPolicy, CertPaths, CertStore, Expect, FileSource, HandshakeCounters};
use weft_telemetry::{Registry, names};

use crate::snapshot::tls::{CertFiles, ClusterTls, ListenerTls as ListenerTlsSpec, PeerIds};
use crate::snapshot::{ListenerKind, Snapshot};

/// A certificate store and the task watching its files (stopped with the last user).
#[derive(Debug)]
struct Held {
    store: CertStore,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// The TLS parts of one configuration.
#[derive(Debug, Default)]
pub struct TlsRuntime {
    stores: HashMap<CertFiles, Arc<Held>>,
    connectors: HashMap<(Arc<str>, ClusterTls), Arc<MeshConnector>>,
    listeners: HashMap<(Arc<str>, ListenerTlsSpec), Arc<ListenerTls>>,
    /// Acceptors by listener index (`None`: plain TCP).
    pub by_listener: Vec<Option<Arc<ListenerTls>>>,
    /// Connectors by cluster index (`None`: plain TCP).
    pub by_cluster: Vec<Option<Arc<MeshConnector>>>,
}

impl TlsRuntime {
    /// Loads what `snapshot` needs, reusing what `prev` has. Fails, naming the listener
    /// or cluster and the file, when a certificate cannot be loaded.
    pub fn build(
        snapshot: &Snapshot,
        prev: Option<&TlsRuntime>,
        registry: &Registry,
    ) -> Result<TlsRuntime, String> {
        let mut rt = TlsRuntime::default();
        for l in &snapshot.listeners {
            let Some(spec) = &l.tls else {
                rt.by_listener.push(None);
                continue;
            };
            let key = (l.name.clone(), spec.clone());
            if let Some(old) = prev.and_then(|p| p.listeners.get(&key)) {
                for files in spec_files(spec) {
                    rt.keep(files, prev);
                }
                rt.listeners.insert(key, old.clone());
                rt.by_listener.push(Some(old.clone()));
                continue;
            }
            let place = format!("listener {:?}", l.name);
            let counters = HandshakeCounters::new(
                registry,
                "server",
                (names::label::LISTENER, l.name.to_string()),
            );
            let built = match spec {
                ListenerTlsSpec::Mesh {
                    identity,
                    trust_domains,
                } => {
                    let store = rt.store(identity, prev, registry, &place)?;
                    let alpn = match l.kind {
                        ListenerKind::Http(_) => {
                            vec![weft_mtls::ALPN_H2.to_vec(), weft_mtls::ALPN_HTTP11.to_vec()]
                        }
                        ListenerKind::Tcp(_) => vec![weft_mtls::ALPN_TCP.to_vec()],
                    };
                    let config = weft_mtls::mesh_server_config(
                        &store,
                        AcceptPolicy {
                            trust_domains: trust_domains.clone(),
                        },
                        alpn,
                    );
                    ListenerTls {
                        acceptor: TlsAcceptor::from(config),
                        mesh: Some(store),
                        handshakes: counters,
                    }
                }
                ListenerTlsSpec::Edge { certificates } => {
                    let mut stores = Vec::new();
                    for files in certificates {
                        stores.push(rt.store(files, prev, registry, &place)?);
                    }
                    let alpn = match l.kind {
                        ListenerKind::Http(_) => {
                            vec![weft_mtls::ALPN_H2.to_vec(), weft_mtls::ALPN_HTTP11.to_vec()]
                        }
                        ListenerKind::Tcp(_) => Vec::new(),
                    };
                    ListenerTls {
                        acceptor: TlsAcceptor::from(weft_mtls::edge_server_config(stores, alpn)),
                        mesh: None,
                        handshakes: counters,
                    }
                }
            };
            let built = Arc::new(built);
            rt.listeners.insert(key, built.clone());
            rt.by_listener.push(Some(built));
        }
        for c in &snapshot.clusters {
            let Some(spec) = &c.tls else {
                rt.by_cluster.push(None);
                continue;
            };
            let key = (c.name.clone(), spec.clone());
            if let Some(old) = prev.and_then(|p| p.connectors.get(&key)) {
                rt.keep(&spec.identity, prev);
                rt.connectors.insert(key, old.clone());
                rt.by_cluster.push(Some(old.clone()));
                continue;
            }
            let place = format!("cluster {:?}", c.name);
            let store = rt.store(&spec.identity, prev, registry, &place)?;
            let expect = match &spec.peer {
                PeerIds::Ids(ids) => Expect::Ids(ids.clone()),
                PeerIds::TrustDomain(td) => Expect::TrustDomain(td.clone()),
            };
            let connector = |alpn: &[u8]| {
                TlsConnector::from(weft_mtls::mesh_client_config(
                    &store,
                    expect.clone(),
                    vec![alpn.to_vec()],
                ))
            };
            let built = Arc::new(MeshConnector {
                h2: connector(weft_mtls::ALPN_H2),
                tcp: connector(weft_mtls::ALPN_TCP),
                handshakes: HandshakeCounters::new(
                    registry,
                    "client",
                    (names::label::CLUSTER, c.name.to_string()),
                ),
                _store: store,
            });
            rt.connectors.insert(key, built.clone());
            rt.by_cluster.push(Some(built));
        }
        Ok(rt)
    }

    /// Carries `files`' store over from `prev` (it is already loaded and watched).
    fn keep(&mut self, files: &CertFiles, prev: Option<&TlsRuntime>) {
        if let Some(held) = prev.and_then(|p| p.stores.get(files)) {
            self.stores
                .entry(files.clone())
                .or_insert_with(|| held.clone());
        }
    }

    /// The store for `files`: this configuration's, the previous one's, or loaded now.
    fn store(
        &mut self,
        files: &CertFiles,
        prev: Option<&TlsRuntime>,
        registry: &Registry,
        place: &str,
    ) -> Result<CertStore, String> {
        if let Some(held) = self
            .stores
            .get(files)
            .or_else(|| prev.and_then(|p| p.stores.get(files)))
            .cloned()
        {
            let store = held.store.clone();
            self.stores.insert(files.clone(), held);
            return Ok(store);
        }
        let source = files.cert.display().to_string();
        let paths = cert_paths(files);
        let creds = FileSource::load(&paths, &source).map_err(|e| format!("{place}: {e}"))?;
        let store = CertStore::new(&source, registry);
        store.publish(Ok(creds));
        let watcher = FileSource::spawn(store.clone(), paths);
        self.stores.insert(
            files.clone(),
            Arc::new(Held {
                store: store.clone(),
                watcher,
            }),
        );
        Ok(store)
    }
}

/// Loads every set of certificate files `snapshot` names, as running it would, without
/// keeping or watching anything: what `weft check` reports. One problem per set that
/// fails, naming the first listener or cluster that uses it.
pub fn check_files(snapshot: &Snapshot) -> Vec<String> {
    let listeners = snapshot.listeners.iter().flat_map(|l| {
        l.tls
            .iter()
            .flat_map(spec_files)
            .map(move |f| (format!("listener {:?}", l.name), f))
    });
    let clusters = snapshot.clusters.iter().filter_map(|c| {
        c.tls
            .as_ref()
            .map(|t| (format!("cluster {:?}", c.name), &t.identity))
    });
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for (place, files) in listeners.chain(clusters) {
        if !seen.insert(files) {
            continue;
        }
        let source = files.cert.display().to_string();
        if let Err(e) = FileSource::load(&cert_paths(files), &source) {
            problems.push(format!("{place}: {e}"));
        }
    }
    problems
}

fn cert_paths(files: &CertFiles) -> CertPaths {
    CertPaths {
        cert: files.cert.clone(),
        key: files.key.clone(),
        bundle: files.ca.clone(),
    }
}

fn spec_files(spec: &ListenerTlsSpec) -> Vec<&CertFiles> {
    match spec {
        ListenerTlsSpec::Mesh { identity, .. } => vec![identity],
        ListenerTlsSpec::Edge { certificates } => certificates.iter().collect(),
    }
}

/// A listener's TLS: the acceptor and its handshake counters.
pub struct ListenerTls {
    acceptor: TlsAcceptor,
    /// The workload identity's store (mesh listeners), for `By=` in the XFCC header.
    mesh: Option<CertStore>,
    handshakes: HandshakeCounters,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("mesh", &self.mesh.is_some())
            .finish_non_exhaustive()
    }
}

/// What a completed server handshake tells the HTTP server.
#[derive(Debug)]
pub struct Accepted {
    /// The encrypted stream.
    pub stream: tokio_rustls::server::TlsStream<TcpStream>,
    /// The ALPN protocol chosen (`None`: the client offered none).
    pub alpn: Option<Vec<u8>>,
    /// The caller's SPIFFE id (mesh listeners).
    pub peer_id: Option<Arc<str>>,
    /// The `x-forwarded-client-cert` value for the app (mesh listeners).
    pub xfcc: Option<HeaderValue>,
}

impl ListenerTls {
    /// Runs the server handshake on `stream`, within `timeout`. Failures are counted
    /// by reason and logged at debug level (a scanner or a misconfigured peer should not
    /// flood the log).
    pub async fn accept(&self, stream: TcpStream, timeout: Duration) -> Option<Accepted> {
        let peer = stream.peer_addr().ok();
        let tls = match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let outcome = weft_mtls::io_outcome(&e);
                self.handshakes.record(outcome);
                tracing::debug!(?peer, error = %e, outcome, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                self.handshakes.record("timeout");
                tracing::debug!(?peer, "TLS handshake timed out");
                return None;
            }
        };
        self.handshakes.record("ok");
        let (_, conn) = tls.get_ref();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let (peer_id, xfcc) = match (&self.mesh, conn.peer_certificates()) {
            (Some(store), Some(certs)) => {
                let id = weft_mtls::peer_id(certs);
                // Only HTTP carries the header: a TCP connection skips the hashing.
                let http = alpn.as_deref() != Some(weft_mtls::ALPN_TCP);
                let xfcc = id.as_ref().filter(|_| http).and_then(|id| {
                    let ours = store.current();
                    let by = ours.as_ref().and_then(|c| c.id()).map(|i| i.to_string());
                    xfcc_value(
                        by.as_deref(),
                        certs.first().map(|c| c.as_ref()),
                        id.as_str(),
                    )
                });
                (id.map(|i| Arc::from(i.as_str())), xfcc)
            }
            _ => (None, None),
        };
        Some(Accepted {
            stream: tls,
            alpn,
            peer_id,
            xfcc,
        })
    }
}

/// Envoy's `x-forwarded-client-cert` element: `By` (our id), `Hash` (hex SHA-256 of the
/// caller's DER certificate) and `URI` (the caller's id).
pub fn xfcc_value(by: Option<&str>, peer_der: Option<&[u8]>, uri: &str) -> Option<HeaderValue> {
    use std::fmt::Write;
    let mut v = String::with_capacity(200);
    if let Some(by) = by {
        let _ = write!(v, "By={by};");
    }
    if let Some(der) = peer_der {
        v.push_str("Hash=");
        for b in aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref() {
            let _ = write!(v, "{b:02x}");
        }
        v.push(';');
    }
    let _ = write!(v, "URI={uri}");
    HeaderValue::from_str(&v).ok()
}

/// A cluster's mesh TLS: client configurations for HTTP (ALPN `h2`) and TCP (ALPN
/// `weft-tcp`) with the cluster's expected peer identities.
pub struct MeshConnector {
    h2: TlsConnector,
    tcp: TlsConnector,
    handshakes: HandshakeCounters,
    _store: CertStore,
}

impl std::fmt::Debug for MeshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConnector").finish_non_exhaustive()
    }
}

/// Which ALPN protocol a mesh connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshAlpn {
    /// Multiplexed HTTP/2.
    H2,
    /// Opaque TCP.
    Tcp,
}

impl MeshConnector {
    /// Runs the client handshake on `stream`, within `timeout` (a handshake that does not
    /// finish in time is counted as `timeout` and fails with `TimedOut`). The server name
    /// is not checked (the peer's SPIFFE id is), so the endpoint's IP stands in for it
    /// and no SNI is sent.
    pub async fn connect(
        &self,
        stream: TcpStream,
        alpn: MeshAlpn,
        timeout: Duration,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let ip = stream.peer_addr()?.ip();
        let connector = match alpn {
            MeshAlpn::H2 => &self.h2,
            MeshAlpn::Tcp => &self.tcp,
        };
        let handshake = connector.connect(ServerName::IpAddress(ip.into()), stream);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(s)) => {
                self.handshakes.record("ok");
                Ok(s)
            }
            Ok(Err(e)) => {
                self.handshakes.record(weft_mtls::io_outcome(&e));
                Err(e)
            }
            Err(_) => {
                self.handshakes.record("timeout");
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TLS handshake not finished within {timeout:?}"),
                ))
            }
        }
    }
}
