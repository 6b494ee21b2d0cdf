//! Handshake tests: real rustls connections (tokio-rustls over an in-memory duplex
//! pipe) between the configurations of [`crate::config`], with certificates from the
//! dev CA. Nothing is mocked: each refusal is what a peer would see on the wire, and
//! its classification by [`crate::io_outcome`] is checked on the side that detects it.

mod edge;
mod mesh;

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use weft_telemetry::Registry;

use crate::{CertStore, Credentials, Issued, SpiffeId, io_outcome};

type ServerStream = server::TlsStream<DuplexStream>;
type ClientStream = client::TlsStream<DuplexStream>;

/// How one side of an attempted connection ended: the peer's SPIFFE id, or the
/// handshake outcome label of its error.
type SideResult = Result<Option<SpiffeId>, &'static str>;

/// Both sides of an attempted connection.
#[derive(Debug)]
struct Attempt {
    server: SideResult,
    client: SideResult,
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A store holding `issued` as workload credentials, trusting `bundle`.
fn workload_store(issued: &Issued, bundle: &str) -> CertStore {
    let store = CertStore::new("test", &Registry::new());
    let creds = Credentials::workload(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        bundle.as_bytes(),
        "test",
    );
    assert!(store.publish(creds));
    store
}

/// Runs both handshakes against each other over a fresh pipe.
async fn open(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> (io::Result<ServerStream>, io::Result<ClientStream>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::join!(
        TlsAcceptor::from(server).accept(a),
        TlsConnector::from(client).connect(name, b)
    )
}

/// Mesh peers are dialed by IP: no SNI, and the name is not what is verified.
fn mesh_name() -> ServerName<'static> {
    ServerName::IpAddress(Ipv4Addr::LOCALHOST.into())
}

/// Sends a message each way over an established connection.
async fn exchange(server: &mut ServerStream, client: &mut ClientStream) -> io::Result<()> {
    let mut buf = [0u8; 4];
    client.write_all(b"ping").await?;
    client.flush().await?;
    server.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await?;
    server.flush().await?;
    client.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"pong");
    Ok(())
}

/// Connects and, when both handshakes succeed, exchanges data; a TLS 1.3 client only
/// learns that the server refused its certificate on its first read, so a client whose
/// handshake "succeeded" against a failed server reads to get the alert.
async fn attempt(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Attempt {
    let (s, c) = open(server, client, mesh_name()).await;
    match (s, c) {
        (Ok(mut s), Ok(mut c)) => {
            exchange(&mut s, &mut c).await.unwrap();
            Attempt {
                server: Ok(crate::peer_id(
                    s.get_ref().1.peer_certificates().unwrap_or(&[]),
                )),
                client: Ok(crate::peer_id(
                    c.get_ref().1.peer_certificates().unwrap_or(&[]),
                )),
            }
        }
        (Err(s), Ok(mut c)) => {
            let mut buf = [0u8; 1];
            let client = match c.read(&mut buf).await {
                Ok(_) => Err("eof"),
                Err(e) => Err(io_outcome(&e)),
            };
            Attempt {
                server: Err(io_outcome(&s)),
                client,
            }
        }
        (s, c) => Attempt {
            server: s.map(|_| None).map_err(|e| io_outcome(&e)),
            client: c.map(|_| None).map_err(|e| io_outcome(&e)),
        },
    }
}
