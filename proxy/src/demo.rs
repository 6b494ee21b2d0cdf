//! `weft demo`: the online shop on loopback, no files needed.
//!
//! The gateway runs the real `deploy/examples/shop.yaml` (embedded in the binary) with
//! its listener, admin and endpoint ports replaced by the ones asked for; the Cart,
//! Product and User services run in-process, two replicas each, and answer JSON naming
//! the service, the replica and the path parameter. Against real services on the file's
//! ports, `weft run -c deploy/examples/shop.yaml` behaves the same.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{self, ConfigError, Loaded, compile, friendly, locate};
use crate::http::Body;
use crate::proxy::{self, Proxy};
use crate::snapshot;

/// The shop's configuration, as shipped in `deploy/examples/shop.yaml`.
pub const SHOP_YAML: &str = include_str!("../../deploy/examples/shop.yaml");

/// Largest request body a demo service reads.
const MAX_BODY: usize = 64 * 1024;

/// Ports for the demo; 0 picks a free port.
#[derive(Clone, Debug)]
pub struct Options {
    /// Gateway port on 127.0.0.1.
    pub port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
    /// Services: `None` keeps the file's ports (9101, 9102, 9201, ...); `Some(base)`
    /// puts cluster k's replica i on `base + 100 k + i + 1` (`Some(0)`: free ports).
    pub services_base: Option<u16>,
    /// Span export and metric identity.
    pub telemetry: crate::observe::TelemetryOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: 8080,
            admin_port: 9901,
            services_base: None,
            telemetry: crate::observe::TelemetryOptions::default(),
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
    /// The embedded configuration did not compile (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The gateway did not start.
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
    /// Replicas: (name, address).
    pub services: Vec<(String, SocketAddr)>,
}

/// Starts the services and the gateway.
pub async fn start(opts: Options) -> Result<Demo, DemoError> {
    let mut file =
        config::friendly_from_str(SHOP_YAML).map_err(|problems| ConfigError::Invalid {
            origin: "shop.yaml (embedded)".to_owned(),
            problems,
        })?;
    let mut services = Vec::new();
    for (k, (name, cluster)) in file.clusters.iter_mut().enumerate() {
        let mut endpoints = Vec::new();
        for (i, ep) in cluster.endpoints.iter().enumerate() {
            let configured: SocketAddr = ep
                .parts()
                .0
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
            let address = match opts.services_base {
                None => configured,
                Some(0) => SocketAddr::from(([127, 0, 0, 1], 0)),
                Some(base) => {
                    SocketAddr::from(([127, 0, 0, 1], base + 100 * k as u16 + i as u16 + 1))
                }
            };
            let replica = format!("{name}-{}", i + 1);
            let socket = TcpListener::bind(address)
                .await
                .map_err(|source| DemoError::Bind {
                    service: replica.clone(),
                    address,
                    source,
                })?;
            let bound = socket.local_addr().unwrap_or(address);
            tokio::spawn(serve_service(
                socket,
                Arc::new(Service::new(name, &replica)),
            ));
            services.push((replica, bound));
            endpoints.push(friendly::EndpointSpec::Address(bound.to_string()));
        }
        cluster.endpoints = endpoints;
    }
    for l in &mut file.listeners {
        l.address = format!("127.0.0.1:{}", opts.port);
    }
    file.admin = Some(friendly::Admin {
        address: format!("127.0.0.1:{}", opts.admin_port),
    });
    let (resources, admin) = compile::compile(&file).map_err(|p| ConfigError::Invalid {
        origin: "shop.yaml (embedded)".to_owned(),
        problems: locate::locate_all(SHOP_YAML, p),
    })?;
    let snapshot = snapshot::translate(&resources).map_err(|problems| ConfigError::Invalid {
        origin: "shop.yaml (embedded)".to_owned(),
        problems,
    })?;
    let loaded = Loaded {
        resources,
        snapshot,
        admin,
    };
    let proxy = Proxy::start(
        loaded,
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
    })
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
        let base = |extra: serde_json::Value| {
            let mut v = json!({ "service": self.name, "replica": self.replica, "path": path });
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
