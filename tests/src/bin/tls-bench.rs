//! `tls-bench`: new-connection rate with full mutual-TLS 1.3 handshakes, for the perf
//! harness (`tests/perf/run.sh`, the `handshake` rows).
//!
//! ```text
//! tls-bench server ADDR CERT_DIR
//! tls-bench client ADDR CERT_DIR [--conns N] [--threads N] [--duration SECS] [--max N]
//! ```
//!
//! `CERT_DIR` holds `cert.pem`, `key.pem` and `ca.pem` as `weft ca issue` writes them.
//!
//! **server**: "what rustls alone achieves": Weft's own mesh server configuration
//! ([`weft_mtls::mesh_server_config`]: aws-lc-rs, TLS 1.3 only, client certificate
//! required and checked by SPIFFE trust domain, session tickets, ALPN `h2` and
//! `http/1.1`) on a single-threaded runtime, like `weft --workers 1`, and Weft's
//! allocator. Per connection: the handshake, one request head read, a fixed
//! `200` with a 16-byte body and `connection: close`, then `close_notify` and close.
//! No HTTP stack, no routing, no proxying: the floor for the same handshake.
//!
//! **client**: `--conns` loops on a runtime of `--threads` threads, each opening a new
//! TCP connection, doing a full TLS 1.3 handshake with the certificate in `CERT_DIR`
//! (resumption disabled, so never a resumed one), sending `GET / HTTP/1.1` with
//! `connection: close`, reading the response to the end of the stream and checking its
//! status. It stops after `--duration` seconds or `--max` connections, whichever comes
//! first, each connection bounded by a 5 s timeout. The client does not verify the
//! server's certificate (a load generator's work that would only take CPU from the
//! server under test); the server verifies the client's. It prints one line:
//!
//! ```text
//! tls-bench: handshakes=N errors=N secs=S rate=R p50_us=N p99_us=N
//! ```
//!
//! `rate` is completed connections (handshake + request + response) per second; the
//! percentiles are of one connection's whole life as the client sees it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_mtls::{AcceptPolicy, CertPaths, CertStore, FileSource};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The server's one answer.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\nconnection: close\r\n\r\n0123456789abcdef";
/// The client's one request.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: perf\r\nconnection: close\r\n\r\n";
/// Longest request head the server reads.
const MAX_HEAD: usize = 8 * 1024;
/// Bound on one connection's life, either side.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's settings.
struct ClientArgs {
    addr: SocketAddr,
    dir: PathBuf,
    conns: usize,
    threads: usize,
    duration: Duration,
    max: u64,
}

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => {
            let [_, addr, dir] = args.as_slice() else {
                bail!("usage: tls-bench server ADDR CERT_DIR");
            };
            let addr: SocketAddr = addr.parse().context("ADDR")?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(server(addr, Path::new(dir)))?;
            Ok(ExitCode::SUCCESS)
        }
        Some("client") => {
            let a = client_args(&args[1..])?;
            let stats = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.threads)
                .enable_all()
                .build()?
                .block_on(client(&a))?;
            println!(
                "tls-bench: handshakes={} errors={} secs={:.3} rate={:.0} p50_us={} p99_us={}",
                stats.done,
                stats.errors,
                stats.secs,
                stats.done as f64 / stats.secs,
                percentile(&stats.latencies_us, 0.50),
                percentile(&stats.latencies_us, 0.99),
            );
            Ok(if stats.done > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        _ => {
            eprintln!(
                "usage: tls-bench server ADDR CERT_DIR\n       \
                 tls-bench client ADDR CERT_DIR [--conns N] [--threads N] [--duration SECS] [--max N]"
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn client_args(args: &[String]) -> anyhow::Result<ClientArgs> {
    let [addr, dir, flags @ ..] = args else {
        bail!("usage: tls-bench client ADDR CERT_DIR [flags]");
    };
    let mut a = ClientArgs {
        addr: addr.parse().context("ADDR")?,
        dir: PathBuf::from(dir),
        conns: 16,
        threads: 2,
        duration: Duration::from_secs(10),
        max: 10_000_000,
    };
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--conns" => a.conns = value.parse().context("--conns")?,
            "--threads" => a.threads = value.parse().context("--threads")?,
            "--duration" => {
                a.duration = Duration::from_secs_f64(value.parse().context("--duration")?);
            }
            "--max" => a.max = value.parse().context("--max")?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.conns == 0 || a.threads == 0 {
        bail!("--conns and --threads must be at least 1");
    }
    Ok(a)
}

// ---------------------------------------------------------------- server

async fn server(addr: SocketAddr, dir: &Path) -> anyhow::Result<()> {
    let creds = FileSource::load(&CertPaths::in_dir(dir), "tls-bench")?;
    let store = CertStore::new("tls-bench", &weft_telemetry::Registry::new());
    store.publish(Ok(creds));
    let config = weft_mtls::mesh_server_config(
        &store,
        AcceptPolicy::default(),
        vec![weft_mtls::ALPN_H2.to_vec(), weft_mtls::ALPN_HTTP11.to_vec()],
    );
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("tls-bench server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONN_TIMEOUT, serve(acceptor, stream)).await;
        });
    }
}

/// One connection: handshake, read a request head, answer, close.
async fn serve(acceptor: TlsAcceptor, stream: TcpStream) -> std::io::Result<()> {
    let mut tls = acceptor.accept(stream).await?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let n = tls.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if len == buf.len() {
            return Ok(());
        }
    }
    tls.write_all(RESPONSE).await?;
    tls.shutdown().await
}

// ---------------------------------------------------------------- client

/// What the client loops measured.
struct Stats {
    done: u64,
    errors: u64,
    secs: f64,
    latencies_us: Vec<u32>,
}

async fn client(a: &ClientArgs) -> anyhow::Result<Stats> {
    let connector = TlsConnector::from(client_config(&a.dir)?);
    let started = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let t0 = Instant::now();
    let deadline = t0 + a.duration;
    let mut tasks = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        let (connector, started, first_error) =
            (connector.clone(), started.clone(), first_error.clone());
        let (addr, max) = (a.addr, a.max);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(16 * 1024);
            let mut errors = 0u64;
            while started.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                match tokio::time::timeout(CONN_TIMEOUT, one(&connector, addr)).await {
                    Ok(Ok(())) => {
                        let us = t.elapsed().as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    failed => {
                        errors += 1;
                        let why = match failed {
                            Ok(Err(e)) => format!("{e:#}"),
                            _ => "timed out".to_owned(),
                        };
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(why);
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await?;
        all.extend(latencies);
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Ok(slot) = first_error.lock()
        && let Some(why) = slot.as_ref()
    {
        eprintln!("tls-bench client: {errors} failed connections; first: {why}");
    }
    all.sort_unstable();
    Ok(Stats {
        done: all.len() as u64,
        errors,
        secs,
        latencies_us: all,
    })
}

/// One connection: connect, full handshake, one request, the response to its end.
async fn one(connector: &TlsConnector, addr: SocketAddr) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.context("handshake")?;
    tls.write_all(REQUEST).await.context("request")?;
    let mut response = Vec::with_capacity(256);
    // The server closes after its answer; a missing close_notify is not our concern.
    match tls.read_to_end(&mut response).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e).context("response"),
    }
    if !response.starts_with(b"HTTP/1.1 200 ") {
        let head = String::from_utf8_lossy(&response[..response.len().min(40)]).into_owned();
        bail!("unexpected response {head:?}");
    }
    Ok(())
}

/// TLS 1.3 with the client certificate in `dir`, aws-lc-rs, no resumption, ALPN
/// `http/1.1`, and no check of the server (see the module docs).
fn client_config(dir: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let paths = CertPaths::in_dir(dir);
    let certs = CertificateDer::pem_file_iter(&paths.cert)
        .with_context(|| format!("reading {}", paths.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", paths.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .with_context(|| format!("reading {}", paths.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(certs, key)?;
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![weft_mtls::ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate and signature: the load generator spends nothing
/// on checking the server under test.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `q` quantile of sorted microsecond values (0 when empty).
fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
