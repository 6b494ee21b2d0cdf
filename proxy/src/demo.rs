//! `weft demo`: the online shop on loopback, each service behind its own sidecar, with
//! workload identities, mutual TLS, JWT authentication and an authorization policy; no
//! files needed.
//!
//! What runs, all in this process:
//! - the gateway: the real `deploy/examples/shop.yaml` (embedded in the binary);
//! - for each replica of Cart, Product and User (two each): the service, answering JSON
//!   that names the service, the replica, the path parameter, the caller's SPIFFE id (from
//!   `x-forwarded-client-cert`) and the user (from `x-user-id`); and in front of it its
//!   sidecar, the real `deploy/examples/sidecar.yaml` filled in for that replica;
//! - a development CA for `shop.local`, in memory, that issues the gateway's and the
//!   services' identities, and a development token issuer ([`crate::authn::dev`]) whose
//!   key the gateway trusts and whose token the demo hands out.
//!
//! The proxies read their identities from PEM files, as in production: the demo writes
//! them to a fresh directory under the system's temporary directory (removed by
//! [`Demo::stop`]) and points the files' relative `certs/` paths there. That, the ports,
//! the sidecars' per-replica lines and the JWKS are changed on the parsed files;
//! everything else is as written, so `weft run` with those files behaves the same against
//! real services.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use weft_mtls::{DevCa, SpiffeId, TrustDomain};

use crate::authn::dev::{DevIssuer, DevIssuerError, TokenSpec};
use crate::config::{self, ConfigError, Loaded, Problem, compile, friendly, locate};
use crate::http::Body;
use crate::observe::TelemetryOptions;
use crate::proxy::{self, Proxy};
use crate::snapshot;

/// The gateway's configuration, as shipped in `deploy/examples/shop.yaml`.
pub const SHOP_YAML: &str = include_str!("../../deploy/examples/shop.yaml");

/// A replica's sidecar, as shipped in `deploy/examples/sidecar.yaml`.
pub const SIDECAR_YAML: &str = include_str!("../../deploy/examples/sidecar.yaml");

/// The trust domain of the demo's CA.
pub const TRUST_DOMAIN: &str = "shop.local";

/// The gateway's identity: the one the sidecars' policy lets in.
pub const GATEWAY_ID: &str = "spiffe://shop.local/ns/shop/sa/gateway";

/// The `sub` of the token the demo hands out.
pub const TOKEN_SUBJECT: &str = "demo-user";

/// Lifetime of the demo's certificates and token.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The sidecar's cluster that is the local service.
const APP_CLUSTER: &str = "app";

/// Namespace of the services' identities and metric labels.
const NAMESPACE: &str = "shop";

/// Largest request body a demo service reads.
const MAX_BODY: usize = 64 * 1024;

/// Ports for the demo; 0 picks a free port.
#[derive(Clone, Debug)]
pub struct Options {
    /// Gateway port on 127.0.0.1.
    pub port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
    /// Sidecars: `None` keeps the file's ports (9101, 9102, 9201, ...); `Some(base)`
    /// puts cluster k's replica i on `base + 100 k + i + 1` (`Some(0)`: free ports).
    /// The services behind them always take free ports.
    pub services_base: Option<u16>,
    /// Span export and metric identity.
    pub telemetry: TelemetryOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: 8080,
            admin_port: 9901,
            services_base: None,
            telemetry: TelemetryOptions::default(),
        }
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A service port is taken.
    #[error("demo service {service}: cannot bind {address}: {source}")]
    Bind {
        /// Replica name.
        service: String,
        /// Address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate directory could not be made or written.
    #[error("demo certificates: {0}")]
    Certs(#[source] std::io::Error),
    /// The development CA failed.
    #[error("demo CA: {0}")]
    Ca(#[from] weft_mtls::Error),
    /// The token could not be made.
    #[error("demo token: {0}")]
    Token(#[from] DevIssuerError),
    /// An embedded configuration did not compile (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A proxy did not start.
    #[error(transparent)]
    Proxy(#[from] proxy::Error),
}

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    /// The gateway.
    pub proxy: Proxy,
    /// Where the gateway listens.
    pub gateway: SocketAddr,
    /// The replicas, cluster by cluster.
    pub services: Vec<Replica>,
    /// The identities' directory: `<name>/cert.pem`, `key.pem`, `ca.pem` for `gateway`
    /// and each service.
    pub certs: PathBuf,
    /// A token the gateway accepts (`sub` [`TOKEN_SUBJECT`], valid for [`LIFETIME`]).
    pub token: String,
    /// The token's issuer (`iss`), as `shop.yaml` names it.
    pub issuer: String,
    /// The token's audience (`aud`), as `shop.yaml` names it.
    pub audience: String,
    /// Removes the certificates when dropped.
    _dir: TempDir,
}

/// One replica of a shop service and its sidecar.
#[derive(Debug)]
pub struct Replica {
    /// `cart-1`, `product-2`, ...
    pub name: String,
    /// The service's identity (what its sidecar presents).
    pub id: SpiffeId,
    /// The sidecar's inbound listener (mutual TLS; what the gateway calls).
    pub sidecar: SocketAddr,
    /// The service itself (plain HTTP on loopback).
    pub app: SocketAddr,
    proxy: Proxy,
}

impl Demo {
    /// Stops the sidecars (the gateway is stopped by its owner, first) and removes the
    /// certificates.
    pub async fn stop(self) {
        futures_util::future::join_all(self.services.iter().map(|r| r.proxy.shutdown())).await;
    }
}

/// Starts the identities, the services with their sidecars, and the gateway.
pub async fn start(opts: Options) -> Result<Demo, DemoError> {
    let mut shop = parse(SHOP_YAML, "shop.yaml")?;
    let sidecar = parse(SIDECAR_YAML, "sidecar.yaml")?;

    // Identities: one per cluster (each cluster's `mtls.identity`) and the gateway's.
    let dir = TempDir::new()?;
    let root = dir.0.clone();
    let certs = root.join("certs");
    let td: TrustDomain = TRUST_DOMAIN.parse()?;
    let ca = DevCa::new(&td)?;
    let gateway_id: SpiffeId = GATEWAY_ID.parse()?;
    ca.issue(&gateway_id, LIFETIME)?
        .write(&certs.join("gateway"))?;
    let mut service_ids = Vec::new();
    for (name, cluster) in &shop.clusters {
        let id = match cluster.mtls.as_ref().and_then(|m| m.identity.as_ref()) {
            Some(ids) => ids.to_vec().first().cloned().unwrap_or_default().parse()?,
            None => SpiffeId::workload(&td, NAMESPACE, name)?,
        };
        ca.issue(&id, LIFETIME)?.write(&certs.join(name))?;
        service_ids.push(id);
    }
    if let Some(id) = shop.identity.as_mut() {
        rebase_identity(id, &root, None);
    }

    // The token issuer, its key trusted by every provider of the gateway.
    let issuer = DevIssuer::generate("weft-demo")?;
    let (mut iss, mut aud) = (String::new(), String::new());
    for l in &mut shop.listeners {
        for p in l.jwt_providers.values_mut() {
            p.jwks = compile::JwksSpec {
                file: None,
                inline: Some(issuer.jwks()),
            };
            if iss.is_empty() {
                iss = p.issuer.clone().unwrap_or_default();
                aud = p.audiences.first().cloned().unwrap_or_default();
            }
        }
    }
    let token = issuer.token(&TokenSpec {
        issuer: &iss,
        audience: &aud,
        subject: TOKEN_SUBJECT,
        issued_at: SystemTime::now(),
        ttl: LIFETIME,
    })?;

    // Services and their sidecars; the gateway's endpoints become the sidecars.
    let mut services = Vec::new();
    for (k, ((name, cluster), id)) in shop.clusters.iter_mut().zip(service_ids).enumerate() {
        let mut endpoints = Vec::new();
        for (i, ep) in cluster.endpoints.iter().enumerate() {
            let replica = format!("{name}-{}", i + 1);
            let inbound = match opts.services_base {
                None => ep
                    .parts()
                    .0
                    .parse()
                    .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
                Some(0) => SocketAddr::from(([127, 0, 0, 1], 0)),
                Some(base) => {
                    SocketAddr::from(([127, 0, 0, 1], base + 100 * k as u16 + i as u16 + 1))
                }
            };
            let app = start_service(name, &replica).await?;
            let file = sidecar_file(&sidecar, &root, name, &replica, inbound, app)?;
            let telemetry = TelemetryOptions {
                workload: Some(name.clone()),
                namespace: Some(NAMESPACE.to_owned()),
                ..opts.telemetry.clone()
            };
            let proxy = Proxy::start(
                compile_file(&file, SIDECAR_YAML, "sidecar.yaml")?,
                proxy::Options {
                    no_admin: true,
                    telemetry,
                    ..proxy::Options::default()
                },
            )
            .await?;
            let bound = proxy
                .listener_addrs()
                .into_values()
                .next()
                .unwrap_or(inbound);
            endpoints.push(friendly::EndpointSpec::Address(bound.to_string()));
            services.push(Replica {
                name: replica,
                id: id.clone(),
                sidecar: bound,
                app,
                proxy,
            });
        }
        cluster.endpoints = endpoints;
    }

    // The gateway.
    for l in &mut shop.listeners {
        l.address = format!("127.0.0.1:{}", opts.port);
    }
    shop.admin = Some(friendly::Admin {
        address: format!("127.0.0.1:{}", opts.admin_port),
    });
    let proxy = Proxy::start(
        compile_file(&shop, SHOP_YAML, "shop.yaml")?,
        proxy::Options {
            telemetry: opts.telemetry.clone(),
            ..proxy::Options::default()
        },
    )
    .await?;
    let gateway = proxy
        .listener_addrs()
        .into_values()
        .next()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], opts.port)));
    Ok(Demo {
        proxy,
        gateway,
        services,
        certs,
        token,
        issuer: iss,
        audience: aud,
        _dir: dir,
    })
}

/// `sidecar.yaml` filled in for one replica: the identity's directory named after the
/// service and rebased onto `root`, the inbound listener named after the replica and on
/// `inbound`, the `app` cluster pointing at the service.
fn sidecar_file(
    template: &friendly::File,
    root: &Path,
    service: &str,
    replica: &str,
    inbound: SocketAddr,
    app: SocketAddr,
) -> Result<friendly::File, ConfigError> {
    let mut file = template.clone();
    if let Some(identity) = file.identity.as_mut() {
        rebase_identity(identity, root, Some(service));
    }
    for l in &mut file.listeners {
        l.name = format!("{replica}-inbound");
        l.address = inbound.to_string();
    }
    let Some(cluster) = file.clusters.get_mut(APP_CLUSTER) else {
        return Err(ConfigError::Invalid {
            origin: "sidecar.yaml (embedded)".to_owned(),
            problems: vec![Problem::new(
                "clusters",
                format!("the demo needs a cluster `{APP_CLUSTER}`: the service"),
            )],
        });
    };
    cluster.endpoints = vec![friendly::EndpointSpec::Address(app.to_string())];
    Ok(file)
}

fn parse(text: &str, name: &str) -> Result<friendly::File, ConfigError> {
    config::friendly_from_str(text).map_err(|problems| ConfigError::Invalid {
        origin: format!("{name} (embedded)"),
        problems,
    })
}

/// Compiles and validates a (changed) embedded file.
fn compile_file(file: &friendly::File, text: &str, name: &str) -> Result<Loaded, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        origin: format!("{name} (embedded)"),
        problems,
    };
    let (resources, admin) =
        compile::compile(file).map_err(|p| invalid(locate::locate_all(text, p)))?;
    let snapshot = snapshot::translate(&resources).map_err(invalid)?;
    Ok(Loaded {
        resources,
        snapshot,
        admin,
    })
}

/// Points an identity's relative paths into `root`; with `service`, the files'
/// directory is renamed to it first (`certs/cart/cert.pem` -> `certs/user/cert.pem`).
fn rebase_identity(id: &mut friendly::Identity, root: &Path, service: Option<&str>) {
    for path in [&mut id.cert, &mut id.key, &mut id.ca] {
        let mut p = PathBuf::from(path.as_str());
        if let (Some(service), Some(file), Some(parent)) =
            (service, p.file_name(), p.parent().and_then(Path::parent))
        {
            p = parent.join(service).join(file);
        }
        *path = root.join(p).display().to_string();
    }
}

/// A fresh private directory under the system's temporary directory, removed when
/// dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, DemoError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        let mut last = None;
        // A random name, created exclusively: never someone else's directory.
        for _ in 0..8 {
            let dir = base.join(format!(
                "weft-demo-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            match builder.create(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) => last = Some(e),
            }
        }
        Err(DemoError::Certs(last.unwrap_or_else(|| {
            std::io::Error::other("no temporary directory")
        })))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Binds a free loopback port and serves one replica of `name` on it.
async fn start_service(name: &str, replica: &str) -> Result<SocketAddr, DemoError> {
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    let socket = TcpListener::bind(address)
        .await
        .map_err(|source| DemoError::Bind {
            service: replica.to_owned(),
            address,
            source,
        })?;
    let bound = socket.local_addr().map_err(|source| DemoError::Bind {
        service: replica.to_owned(),
        address,
        source,
    })?;
    tokio::spawn(serve_service(socket, Arc::new(Service::new(name, replica))));
    Ok(bound)
}

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    AddItem,
    Cart,
    Product,
    User,
}

/// One replica of a shop service.
struct Service {
    name: String,
    replica: String,
    router: matchit::Router<Endpoint>,
}

impl Service {
    fn new(name: &str, replica: &str) -> Self {
        let mut router = matchit::Router::new();
        let routes: &[(&str, Endpoint)] = match name {
            "cart" => &[
                ("/cart/addItem", Endpoint::AddItem),
                ("/cart/{*rest}", Endpoint::Cart),
            ],
            "product" => &[("/products/{productId}", Endpoint::Product)],
            "user" => &[("/users/{userId}", Endpoint::User)],
            _ => &[],
        };
        for (path, ep) in routes {
            // The patterns are constants known to be valid.
            let _ = router.insert(*path, *ep);
        }
        Self {
            name: name.to_owned(),
            replica: replica.to_owned(),
            router,
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let (caller, user) = caller_and_user(req.headers());
        let base = |extra: serde_json::Value| {
            let mut v = json!({
                "service": self.name,
                "replica": self.replica,
                "path": path,
                "caller": { "identity": caller, "user": user },
            });
            if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
                obj.extend(more);
            }
            v
        };
        let Ok(found) = self.router.at(&path) else {
            return reply(
                StatusCode::NOT_FOUND,
                base(json!({ "error": "no such resource" })),
            );
        };
        let params: serde_json::Map<String, serde_json::Value> = found
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        match (found.value, req.method()) {
            (Endpoint::AddItem, &Method::POST) => {
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            base(json!({ "error": e.to_string() })),
                        );
                    }
                };
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(item) if item.get("productId").is_some() => {
                        let qty = item.get("qty").and_then(|q| q.as_u64()).unwrap_or(1);
                        reply(
                            StatusCode::OK,
                            base(
                                json!({ "added": { "productId": item["productId"], "qty": qty }, "params": {} }),
                            ),
                        )
                    }
                    _ => reply(
                        StatusCode::BAD_REQUEST,
                        base(
                            json!({ "error": "expected JSON like {\"productId\":\"42\",\"qty\":1}" }),
                        ),
                    ),
                }
            }
            (Endpoint::AddItem, _) => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                base(json!({ "error": "use POST" })),
            ),
            (Endpoint::Cart, _) => reply(
                StatusCode::OK,
                base(json!({ "params": params, "items": [] })),
            ),
            (Endpoint::Product, _) => {
                let id = params.get("productId").cloned().unwrap_or_default();
                reply(
                    StatusCode::OK,
                    base(
                        json!({ "params": params, "product": { "id": id, "name": format!("Product {}", id.as_str().unwrap_or_default()) } }),
                    ),
                )
            }
            (Endpoint::User, _) => {
                let id = params.get("userId").cloned().unwrap_or_default();
                reply(
                    StatusCode::OK,
                    base(json!({ "params": params, "user": { "id": id } })),
                )
            }
        }
    }
}

/// Who is calling, as the sidecar and the gateway tell the service: the caller's SPIFFE
/// id from the last element of `x-forwarded-client-cert` (`...;URI=spiffe://...`) and
/// the user from `x-user-id` (the verified token's `sub`).
fn caller_and_user(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let caller = text("x-forwarded-client-cert").and_then(|xfcc| {
        let last = xfcc.rsplit(',').next()?;
        last.split(';')
            .find_map(|kv| kv.trim().strip_prefix("URI="))
            .map(|uri| uri.trim_matches('"').to_owned())
    });
    (caller, text("x-user-id").map(str::to_owned))
}

fn reply(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut body = v.to_string();
    body.push('\n');
    let mut resp = Response::new(Body::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn serve_service(socket: TcpListener, service: Arc<Service>) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(service.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
