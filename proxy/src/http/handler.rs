//! One HTTP request, from routing to the response: plain async code over the snapshot.
//!
//! ```text
//! request -> listener -> virtual host -> route --+-- respond / redirect (local answer)
//!                                               +-- forward: pick backend -> rewrite
//!                                                   headers -> cluster (balance, pool)
//!                                                   within the route timeout -> response
//! ```
//! Every outcome, local or proxied, is counted once with its route and destination.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::Body;
use super::error::ProxyError;
use super::headers;
use super::upgrade;
use crate::snapshot::route::{self, Forward, RequestView, Route, VirtualHost};
use crate::snapshot::{Action, ListenerKind};
use crate::state::{State, Store};
use crate::upstream::balance;

/// What a connection knows about itself, shared by its requests.
#[derive(Debug)]
pub struct ConnCtx {
    /// The listener's name (looked up in the current snapshot per request).
    pub listener: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// `http` or `https`, as the client connected.
    pub scheme: &'static str,
    /// Where the current state is.
    pub store: Arc<Store>,
}

/// Handles one request; never fails (failures are responses).
pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let state = ctx.store.load();
    let protocol = if is_grpc(&req) { "grpc" } else { "http" };
    let Some((li, listener)) = state
        .snapshot
        .listeners
        .iter()
        .enumerate()
        .find(|(_, l)| *l.name == *ctx.listener)
    else {
        // The listener was removed by a reload; this connection is draining.
        return Ok(ProxyError::NoRoute.into_response());
    };
    let ListenerKind::Http(http) = &listener.kind else {
        return Ok(ProxyError::NoRoute.into_response());
    };
    // RFC 9112 section 3.2: more than one Host is an error, not a choice to make.
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        return Ok(ProxyError::BadRequest("more than one Host header").into_response());
    }
    let host = authority(&req).to_owned();
    let selected = {
        let view = RequestView {
            method: req.method(),
            host: &host,
            path: req.uri().path(),
            query: req.uri().query(),
            scheme: ctx.scheme,
            headers: req.headers(),
        };
        route::select_vhost(&http.virtual_hosts, &host)
            .and_then(|vh| route::select_route(vh, &view).map(|r| (vh, r)))
    };
    let Some((vhost, route)) = selected else {
        let err = ProxyError::NoRoute;
        state.no_route_stats[li].record(404, err.response_flag(), protocol, started.elapsed());
        return Ok(err.into_response());
    };
    let (resp, backend, flags) = match &route.action {
        Action::Respond(r) => {
            let mut resp = Response::new(Body::full(r.body.clone()));
            *resp.status_mut() = r.status;
            if !r.body.is_empty() {
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            (resp, 0, "-")
        }
        Action::Redirect(r) => {
            let location = headers::redirect_location(
                r,
                ctx.scheme,
                &host,
                req.uri().path(),
                req.uri().query(),
                &route.matcher.path,
            );
            let mut resp = Response::new(Body::Empty);
            *resp.status_mut() = r.status;
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
            }
            (resp, 0, "-")
        }
        Action::Forward(f) => {
            let (index, result) = forward(&ctx, &state, vhost, route, f, host, req).await;
            match result {
                Ok(resp) => (resp, index, "-"),
                Err(e) => {
                    let flag = e.response_flag();
                    tracing::debug!(route = %route.name, error = %e, cause = ?std::error::Error::source(&e), "local reply");
                    (e.into_response(), index, flag)
                }
            }
        }
    };
    let mut resp = resp;
    if flags == "-" {
        vhost.response_headers.apply(resp.headers_mut());
        route.response_headers.apply(resp.headers_mut());
    }
    if let Some(stats) = state.route_stats.get(route.id).and_then(|s| s.get(backend)) {
        stats.record(resp.status().as_u16(), flags, protocol, started.elapsed());
    }
    Ok(resp)
}

/// Forwards to the route's cluster. Returns the backend index used (for metrics).
async fn forward(
    ctx: &ConnCtx,
    state: &State,
    vhost: &VirtualHost,
    route: &Route,
    f: &Forward,
    host: String,
    mut req: Request<Incoming>,
) -> (usize, Result<Response<Body>, ProxyError>) {
    let index = if f.backends.targets.len() == 1 {
        0
    } else {
        let picked = f.backends.pick();
        f.backends
            .targets
            .iter()
            .position(|t| std::ptr::eq(t, picked))
            .unwrap_or(0)
    };
    let backend = &f.backends.targets[index];
    let Some(cluster) = state.clusters.get(backend.cluster) else {
        return (index, Err(ProxyError::NoHealthyUpstream));
    };
    if req.method() == Method::CONNECT {
        return (index, upgrade::connect(cluster, f, req).await);
    }
    // An h2c upgrade offer (what `curl --http2` sends) is declined by ignoring it, as
    // the RFC allows: the request goes on as HTTP/1.1 and the offer's headers, being
    // hop-by-hop, are dropped below.
    let upgrade = headers::upgrade_request(req.headers())
        .filter(|p| !p.as_bytes().eq_ignore_ascii_case(b"h2c"))
        .cloned();
    if let Some(proto) = &upgrade {
        let name = proto.to_str().unwrap_or_default();
        if !f.allows_upgrade(name) {
            return (index, Err(ProxyError::UpgradeRejected(name.to_owned())));
        }
    }
    let downstream_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let hash = f
        .hash_header
        .as_ref()
        .and_then(|h| req.headers().get(h))
        .map(|v| balance::hash_key(v.as_bytes()));

    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    headers::add_forwarded(&mut parts.headers, ctx.peer.ip(), ctx.scheme);
    let request_id = headers::ensure_request_id(&mut parts.headers);
    vhost.request_headers.apply(&mut parts.headers);
    route.request_headers.apply(&mut parts.headers);
    // hyper answered any `Expect: 100-continue` already; the upstream must not wait for
    // a second one.
    if parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        parts.headers.remove(header::EXPECT);
    }
    // The upstream's Host is the authority the request was routed on (an absolute-form
    // URI's wins over a conflicting Host, RFC 9112 section 3.2.2), or the rewrite.
    let authority = match &f.host_rewrite {
        Some(h) => {
            parts.headers.insert(header::HOST, h.clone());
            h.to_str().unwrap_or_default().to_owned()
        }
        None => {
            if let Ok(v) = HeaderValue::from_str(&host)
                && !host.is_empty()
            {
                parts.headers.insert(header::HOST, v);
            }
            host
        }
    };
    let path_and_query = match &f.prefix_rewrite {
        Some(to) => headers::rewrite_prefix(
            parts.uri.path(),
            parts.uri.query(),
            &route.matcher.path,
            route.matcher.case_sensitive,
            to,
        ),
        None => parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
    };
    parts.uri = match upstream_uri(&authority, &path_and_query) {
        Ok(u) => u,
        Err(e) => return (index, Err(e)),
    };
    let upstream_req = Request::from_parts(parts, Body::Incoming(body));
    let sent = cluster.send(upstream_req, hash);
    let result = match f.timeout {
        Some(t) => match tokio::time::timeout(t, sent).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::Timeout),
        },
        None => sent.await,
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => return (index, Err(e)),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        match downstream_upgrade {
            Some(down) => {
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(upgrade::splice(down, up));
            }
            None => {
                return (
                    index,
                    Err(ProxyError::UpstreamReset(
                        "unexpected 101 Switching Protocols".into(),
                    )),
                );
            }
        }
    } else {
        headers::strip_hop_by_hop(resp.headers_mut(), None);
    }
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID.clone(), request_id);
    (index, Ok(resp.map(Body::Incoming)))
}

fn upstream_uri(authority: &str, path_and_query: &str) -> Result<Uri, ProxyError> {
    // A request without any host (HTTP/1.0) still needs an absolute URI for the pool.
    let authority = if authority.is_empty() {
        "localhost"
    } else {
        authority
    };
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid host or path"))
}

/// The request's authority: the URI's (HTTP/2 `:authority`, absolute-form) or `Host`.
pub fn authority<B>(req: &Request<B>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
