//! One HTTP request, from routing to the response: plain async code over the snapshot.
//!
//! ```text
//! request -> listener -> virtual host -> route --+-- respond / redirect (local answer)
//!                                               +-- forward: pick backend -> rewrite
//!                                                   headers -> cluster (balance, pool)
//!                                                   within the route timeout -> response
//! ```
//! Every outcome, local or proxied, is observed once with its route and destination:
//! the response body carries an [`Exchange`] that records metrics, the access-log record
//! and spans when the body ends (see [`crate::observe`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};

use super::body::Body;
use super::error::ProxyError;
use super::headers;
use super::upgrade;
use crate::observe::{Counted, Detail, Exchange, Observed, grpc_status};
use crate::resilience::breaker::CircuitBreakerLayer;
use crate::resilience::fault::FaultLayer;
use crate::resilience::ratelimit::RateLimitLayer;
use crate::resilience::retry::{RetryLayer, replay};
use crate::resilience::timeout::{self, TimeoutLayer};
use crate::resilience::{AttemptLog, Call, TraceContext};
use crate::snapshot::route::{self, Forward, RequestView, Route, VirtualHost};
use crate::snapshot::{Action, ListenerKind};
use crate::state::RoutePolicies;
use crate::state::{State, Store};
use crate::upstream::Cluster;
use crate::upstream::balance;
use crate::upstream::service::Endpoints;

/// What a connection knows about itself, shared by its requests.
#[derive(Debug)]
pub struct ConnCtx {
    /// The listener's name (looked up in the current snapshot per request).
    pub listener: Arc<str>,
    /// The listener's configured address (the lookup's fallback after a rename).
    pub address: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as a header value, made once per connection for
    /// `x-forwarded-for`.
    pub peer_ip: HeaderValue,
    /// `http` or `https`, as the client connected.
    pub scheme: &'static str,
    /// The port the connection arrived on (the listener's bound port).
    pub local_port: u16,
    /// The caller's SPIFFE id, on a mesh mutual-TLS listener.
    pub peer_id: Option<Arc<str>>,
    /// `x-forwarded-client-cert` for the app, on a mesh mutual-TLS listener.
    pub xfcc: Option<HeaderValue>,
    /// Where the current state is.
    pub store: Arc<Store>,
    /// The listener's drain signal (tunnels outlive their request and watch it).
    pub drain: crate::drain::Drain,
    /// Requests being handled on this connection (until their response head), so the
    /// idle timeout never closes a connection that waits on an upstream.
    pub in_flight: std::sync::atomic::AtomicU32,
}

/// A request counted in its connection's [`ConnCtx::in_flight`] until its response
/// body ends (it rides in the response's [`Exchange`]), so that a quiet stream is not
/// taken for an idle connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnCtx>);

impl InFlight {
    /// The connection the request came on.
    pub fn conn(&self) -> &ConnCtx {
        &self.0
    }
}

impl InFlight {
    fn new(ctx: &Arc<ConnCtx>) -> Self {
        ctx.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(ctx.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Handles one request; never fails (failures are responses).
pub async fn handle(
    ctx: Arc<ConnCtx>,
    mut req: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let in_flight = InFlight::new(&ctx);
    let state = ctx.store.load();
    let protocol = if is_grpc(&req) { "grpc" } else { "http" };
    let Some((li, listener)) = state
        .snapshot
        .listener_index(&ctx.listener, ctx.address)
        .map(|i| (i, &state.snapshot.listeners[i]))
    else {
        // The listener was removed by a reload; this connection is draining.
        return Ok(ProxyError::NoRoute.into_response());
    };
    let ListenerKind::Http(http) = &listener.kind else {
        return Ok(ProxyError::NoRoute.into_response());
    };
    // Routing, authorization and the upstream all see the normalised path.
    // Identity headers come only from this proxy: whatever a client sent is dropped,
    // and a mesh listener states who called, before routing (so routes can match on
    // the caller, as with Envoy's sanitize-set) and for the app.
    let h = req.headers_mut();
    h.remove(&headers::X_FORWARDED_CLIENT_CERT);
    if let Some(xfcc) = &ctx.xfcc {
        h.insert(headers::X_FORWARDED_CLIENT_CERT.clone(), xfcc.clone());
    }
    let normalised = super::security::normalise_path(&mut req, http.path_options);
    let checked = normalised.and_then(|()| checked_authority(&req));
    let observe = &state.observe[li];
    // Strings for a log record or a span are copied only when something will use them.
    let mut detail = (!observe.logs.is_empty() || observe.tracing.is_some()).then(|| {
        Box::new(Detail::new(
            observe.clone(),
            listener.name.clone(),
            ctx.peer,
            ctx.scheme,
            checked.as_ref().map_or("", |h| h),
            &req,
        ))
    });
    let host = match checked {
        Ok(h) => h,
        Err(err) => {
            // Counted and logged like a request no route took: it never reached one.
            let stats = &state.no_route_stats[li];
            return Ok(answer_locally(
                started, stats, protocol, err, detail, in_flight,
            ));
        }
    };
    let selected = {
        let view = RequestView {
            method: req.method(),
            host,
            path: req.uri().path(),
            query: req.uri().query(),
            scheme: ctx.scheme,
            headers: req.headers(),
        };
        route::select_vhost(&http.virtual_hosts, host)
            .and_then(|vh| route::select_route(vh, &view).map(|r| (vh, r)))
    };
    let Some((vhost, route)) = selected else {
        let stats = &state.no_route_stats[li];
        let err = ProxyError::NoRoute;
        return Ok(answer_locally(
            started, stats, protocol, err, detail, in_flight,
        ));
    };
    if let Some(d) = &mut detail {
        d.route = route.name.clone();
    }
    let mut passed = super::security::Passed::default();
    if http.authz.is_some() || http.jwt.is_some() || route.cors.is_some() {
        let gate = super::security::check(
            http,
            route,
            &mut req,
            ctx.peer_id.as_deref(),
            ctx.local_port,
            &state.security[li],
            detail.as_deref_mut(),
        );
        let stats = state.route_stats.get(route.id).and_then(|s| s.first());
        match (gate, stats) {
            (super::security::Gate::Pass(p), _) => passed = p,
            (super::security::Gate::Answer(resp), None) => return Ok(resp),
            (super::security::Gate::Refuse(e, p), None) => {
                let mut resp = local_reply(e, protocol);
                super::security::decorate(route, &p, resp.headers_mut());
                return Ok(resp);
            }
            (super::security::Gate::Answer(resp), Some(stats)) => {
                let exchange = Exchange {
                    started,
                    stats: stats.clone(),
                    protocol,
                    status: resp.status().as_u16(),
                    flags: "-",
                    grpc_status: None,
                    request_bytes: None,
                    detail,
                    in_flight: Some(in_flight),
                };
                return Ok(observed(resp, exchange));
            }
            (super::security::Gate::Refuse(e, p), Some(stats)) => {
                let mut resp = answer_locally(started, stats, protocol, e, detail, in_flight);
                super::security::decorate(route, &p, resp.headers_mut());
                return Ok(resp);
            }
        }
    }
    let mut request_bytes = None;
    let mut local_error = false;
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
                authority(&req),
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
            let mut fwd = Forwarding {
                detail: detail.as_deref_mut(),
                request_bytes: None,
                backend: 0,
                flag: None,
            };
            let policies = state
                .route_policies
                .get(route.id)
                .filter(|p| p.limiter.is_some() || p.fault.is_some());
            let route_ctx = RouteCtx {
                ctx: &ctx,
                state: &state,
                vhost,
                route,
                forward: f,
                started,
                grpc: protocol == "grpc",
            };
            let result = match policies {
                None => forward(&route_ctx, req, &mut fwd).await,
                // Boxed: only routes with a rate limit or faults take this path.
                Some(p) => Box::pin(guarded(p, &route_ctx, req, &mut fwd)).await,
            };
            request_bytes = fwd.request_bytes;
            match result {
                Ok(resp) => (resp, fwd.backend, fwd.flag.unwrap_or("-")),
                Err(e) => {
                    if matches!(e, ProxyError::Timeout) {
                        route_timeouts(&state, route.id);
                    }
                    tracing::debug!(route = %route.name, error = %e, cause = ?std::error::Error::source(&e), "local reply");
                    local_error = true;
                    let flag = e.response_flag();
                    (local_reply(e, protocol), fwd.backend, flag)
                }
            }
        }
    };
    let mut resp = resp;
    if matches!(route.action, Action::Respond(_) | Action::Redirect(_)) {
        super::error::stamp_date(resp.headers_mut());
    }
    if !local_error {
        vhost.response_headers.apply(resp.headers_mut());
        route.response_headers.apply(resp.headers_mut());
    }
    super::security::decorate(route, &passed, resp.headers_mut());
    let Some(stats) = state.route_stats.get(route.id).and_then(|s| s.get(backend)) else {
        return Ok(resp);
    };
    let exchange = Exchange {
        started,
        stats: stats.clone(),
        protocol,
        status: resp.status().as_u16(),
        flags,
        grpc_status: if protocol == "grpc" {
            grpc_status(resp.headers())
        } else {
            None
        },
        request_bytes,
        detail,
        in_flight: Some(in_flight),
    };
    Ok(observed(resp, exchange))
}

/// The proxy's own answer to a request that went no further than `err`, counted in
/// `stats` and observed like any other.
fn answer_locally(
    started: Instant,
    stats: &Arc<crate::state::RequestStats>,
    protocol: &'static str,
    err: ProxyError,
    detail: Option<Box<Detail>>,
    in_flight: InFlight,
) -> Response<Body> {
    let exchange = Exchange {
        started,
        stats: stats.clone(),
        protocol,
        status: err.status().as_u16(),
        flags: err.response_flag(),
        grpc_status: None,
        request_bytes: None,
        detail,
        in_flight: Some(in_flight),
    };
    observed(local_reply(err, protocol), exchange)
}

/// The proxy's own answer to a failure: plain text, or trailers-only for gRPC callers.
fn local_reply(e: ProxyError, protocol: &str) -> Response<Body> {
    if protocol == "grpc" {
        e.into_grpc_response()
    } else {
        e.into_response()
    }
}

/// Puts the response body under observation: the exchange finishes when it ends.
fn observed(resp: Response<Body>, exchange: Exchange) -> Response<Body> {
    resp.map(|b| Body::Observed(Box::new(Observed::new(b, exchange))))
}

fn route_timeouts(state: &State, route: usize) {
    if let Some(c) = state.route_timeouts.get(route) {
        c.increment(1);
    }
}

/// What forwarding reports back for observation.
struct Forwarding<'a> {
    detail: Option<&'a mut Detail>,
    request_bytes: Option<Arc<AtomicU64>>,
    /// The weighted backend used (for metrics).
    backend: usize,
    /// A response flag for an upstream's own failure response (a retry wanted but
    /// refused: `URX`, `UO`).
    flag: Option<&'static str>,
}

/// What forwarding a request needs to know about where it is.
struct RouteCtx<'a> {
    ctx: &'a ConnCtx,
    state: &'a State,
    vhost: &'a VirtualHost,
    route: &'a Route,
    forward: &'a Forward,
    started: Instant,
    /// The request is gRPC (`content-type: application/grpc...`).
    grpc: bool,
}

/// Forwards through the route's rate limit and fault injection (tower layers around
/// [`forward`]).
async fn guarded(
    policies: &RoutePolicies,
    rc: &RouteCtx<'_>,
    req: Request<Body>,
    fwd: &mut Forwarding<'_>,
) -> Result<Response<Body>, ProxyError> {
    // The innermost service borrows the forwarding record for the one call it gets.
    let slot = std::sync::Mutex::new(Some(Forwarding {
        detail: fwd.detail.take(),
        request_bytes: None,
        backend: 0,
        flag: None,
    }));
    let take = || slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    let inner = tower::service_fn(|req: Request<Body>| async {
        let Some(mut f) = take() else {
            return Err(ProxyError::BadRequest("request forwarded twice"));
        };
        let result = forward(rc, req, &mut f).await;
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(f);
        result
    });
    let svc = tower::ServiceBuilder::new()
        .option_layer(
            policies
                .limiter
                .as_ref()
                .map(|l| RateLimitLayer::new(l, rc.ctx.peer.ip())),
        )
        .option_layer(policies.fault.as_ref().map(FaultLayer::new))
        .service(inner);
    let result = svc.oneshot(req).await;
    if let Some(f) = slot.into_inner().unwrap_or_else(PoisonError::into_inner) {
        *fwd = f;
    }
    result
}

/// Forwards to the route's cluster through the upstream stack (total timeout, retries,
/// per-try timeout, circuit breaker, endpoints). Notes the backend used in `fwd`.
async fn forward(
    rc: &RouteCtx<'_>,
    mut req: Request<Body>,
    fwd: &mut Forwarding<'_>,
) -> Result<Response<Body>, ProxyError> {
    let RouteCtx {
        ctx,
        state,
        vhost,
        route,
        forward: f,
        started,
        grpc,
    } = *rc;
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
    fwd.backend = index;
    let backend = &f.backends.targets[index];
    if let Some(d) = fwd.detail.as_deref_mut() {
        d.cluster = backend.name.clone();
    }
    let Some(cluster) = state.clusters.get(backend.cluster) else {
        return Err(ProxyError::NoHealthyUpstream);
    };
    if req.method() == Method::CONNECT {
        // Boxed: a rare path that would otherwise enlarge every request's future.
        return Box::pin(upgrade::connect(cluster, f, req, ctx.drain.watch())).await;
    }
    // An h2c upgrade offer (what `curl --http2` sends) is declined by ignoring it, as
    // the RFC allows: the request goes on as HTTP/1.1 and the offer's headers, being
    // hop-by-hop, are dropped below.
    let hop_by_hop = headers::HopByHop::scan(req.headers());
    let upgrade = hop_by_hop
        .upgrade(req.headers())
        .filter(|p| !p.as_bytes().eq_ignore_ascii_case(b"h2c"))
        .cloned();
    if let Some(proto) = &upgrade {
        let name = proto.to_str().unwrap_or_default();
        if !f.allows_upgrade(name) {
            return Err(ProxyError::UpgradeRejected(name.to_owned()));
        }
    }
    let downstream_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let hash = f
        .hash_header
        .as_ref()
        .and_then(|h| req.headers().get(h))
        .map(|v| balance::hash_key(v.as_bytes()));

    let (mut parts, body) = req.into_parts();
    // Room for what is added below (forwarding headers, request id, Host, traceparent),
    // so the map grows once, not per insert.
    parts.headers.reserve(5);
    headers::strip_scanned(&mut parts.headers, hop_by_hop, upgrade.as_ref());
    let forwarded_for = headers::add_forwarded_scanned(
        &mut parts.headers,
        hop_by_hop.has_forwarded_for(),
        &ctx.peer_ip,
        ctx.scheme,
    );
    // The id goes to the upstream (and into logs); like Envoy, the response does not
    // echo it unless the upstream does.
    let request_id =
        headers::ensure_request_id_scanned(&mut parts.headers, hop_by_hop.has_request_id());
    // hyper answered any `Expect: 100-continue` already; the upstream must not wait for
    // a second one.
    if parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        parts.headers.remove(header::EXPECT);
    }
    // The upstream's Host is the authority the request was routed on: an absolute-form
    // URI's (or HTTP/2's `:authority`) wins over any Host header (RFC 9112 section
    // 3.2.2); the route may rewrite it.
    if let Some(h) = &f.host_rewrite {
        parts.headers.insert(header::HOST, h.clone());
    } else if let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    vhost.request_headers.apply(&mut parts.headers);
    route.request_headers.apply(&mut parts.headers);
    let target = match &f.prefix_rewrite {
        Some(to) => {
            let rewritten = headers::rewrite_prefix(
                parts.uri.path(),
                parts.uri.query(),
                &route.matcher.path,
                route.matcher.case_sensitive,
                to,
            );
            Uri::try_from(rewritten)
                .map_err(|_| ProxyError::BadRequest("invalid path after rewrite"))
        }
        None => origin_form(&parts.uri),
    };
    parts.uri = target?;
    // gRPC callers may shorten the route's timeout with `grpc-timeout` (looked up only
    // for gRPC requests: a lookup by name costs every request a hash).
    static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let total = match grpc.then(|| parts.headers.get(&GRPC_TIMEOUT)).flatten() {
        Some(v) => timeout::grpc::effective(f.timeout, Some(v.as_bytes()), &f.grpc_timeout),
        None => f.timeout,
    };
    let trace = match fwd.detail.as_deref_mut() {
        Some(d) => {
            let text = |v: &HeaderValue| v.to_str().ok().map(str::to_owned);
            d.request_id = text(&request_id);
            d.forwarded_for = text(&forwarded_for);
            d.trace.as_ref().map(|t| TraceContext {
                trace_id: t.trace_id,
                sampled: t.sampled,
                tracestate: t.tracestate.clone(),
                b3: t.b3,
            })
        }
        None => None,
    };
    let log = AttemptLog::new(trace);
    cluster.retry.budget.deposit();
    let result = send(cluster, f, parts, body, hash, total, grpc, &log, fwd).await;
    let (attempts, last, denied) = log.summary();
    if let Some(d) = fwd.detail.as_deref_mut() {
        d.upstream = last;
        d.attempts = attempts;
        if let Some(t) = &mut d.traced {
            t.attempts = log.take_spans();
        }
        if result.is_ok() {
            d.ttfb = Some(started.elapsed());
        }
    }
    let mut resp = result?;
    if resp.status().is_server_error() {
        // Envoy's URX: the retries this failure wanted were used up or refused.
        let exhausted = f.retry.as_ref().is_some_and(|r| attempts > r.num_retries);
        fwd.flag = denied.or(exhausted.then_some("URX"));
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        match downstream_upgrade {
            Some(down) => {
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(upgrade::splice(down, up, ctx.drain.watch()));
            }
            None => {
                return Err(ProxyError::UpstreamReset(
                    "unexpected 101 Switching Protocols".into(),
                ));
            }
        }
    } else {
        headers::strip_hop_by_hop(resp.headers_mut(), None);
    }
    Ok(resp)
}

/// Sends the prepared request through the upstream stack:
///
/// ```text
/// total timeout -> [retry -> per-try timeout] -> circuit breaker -> endpoints
/// ```
/// A request on a route that retries has its body held first when it is small enough
/// to replay (see [`replay`]); a body that is not held streams once, without retries.
#[allow(clippy::too_many_arguments)]
async fn send(
    cluster: &Cluster,
    f: &Forward,
    parts: http::request::Parts,
    body: Body,
    hash: Option<u64>,
    total: Option<Duration>,
    grpc: bool,
    log: &AttemptLog,
    fwd: &mut Forwarding<'_>,
) -> Result<Response<Body>, ProxyError> {
    // One deadline for everything: holding the body, every try and every backoff.
    let deadline = total.map(|t| Instant::now() + t);
    let (body, replayable) = if body.is_end_stream() {
        (Body::Empty, true)
    } else if let Some(rules) = &f.retry {
        let held = replay::hold(body, rules.max_replay_bytes);
        let (body, len) = match deadline {
            Some(d) => tokio::time::timeout_at(d, held)
                .await
                .map_err(|_| ProxyError::Timeout)??,
            None => held.await?,
        };
        match (body, len) {
            (body, None) => (counted(body, fwd), false),
            (body, len) => {
                fwd.request_bytes = len.map(|n| Arc::new(AtomicU64::new(n)));
                (body, true)
            }
        }
    } else {
        (counted(body, fwd), false)
    };
    let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let per_try = f.retry.as_ref().and_then(|r| r.per_try_timeout);
    let call = Call::new(Request::from_parts(parts, body), hash);
    let breaker =
        (!cluster.breaker.is_unlimited()).then(|| CircuitBreakerLayer::new(&cluster.breaker));
    let endpoints = ServiceBuilder::new()
        .option_layer(breaker)
        .service(Endpoints::new(cluster, log));
    match &f.retry {
        Some(rules) if replayable => {
            let stack = ServiceBuilder::new()
                .layer(TimeoutLayer::new(remaining, log))
                .layer(RetryLayer::new(
                    rules,
                    &cluster.retry,
                    &cluster.breaker,
                    log,
                    grpc,
                ))
                .layer(TimeoutLayer::new(per_try, log))
                .service(endpoints);
            stack.oneshot(call).await
        }
        // One try: a body that was not held cannot be sent again, but the per-try
        // timeout still bounds its one try.
        _ => {
            let limit = match (remaining, per_try) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            TimeoutLayer::new(limit, log)
                .layer(endpoints)
                .oneshot(call)
                .await
        }
    }
}

/// A request body streamed as it arrives, its bytes counted on the way.
fn counted(body: Body, fwd: &mut Forwarding<'_>) -> Body {
    let count = Arc::new(AtomicU64::new(0));
    fwd.request_bytes = Some(count.clone());
    Body::Counted(Box::new(Counted::new(body, count)))
}

/// The request target in origin form (`/path?query`), what an HTTP/1.1 upstream gets.
fn origin_form(uri: &Uri) -> Result<Uri, ProxyError> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(uri.clone());
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target"))
}

/// The request's authority, checked: RFC 9112 section 3.2 wants exactly one `Host` in an
/// HTTP/1.1 request (HTTP/2 has `:authority`); anything else is an error, not a choice
/// to make.
fn checked_authority<B>(req: &Request<B>) -> Result<&str, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(a) = req.uri().authority() {
        // `http://user@host/`: credentials in the target are not a host to route on.
        if a.as_str().contains('@') {
            return Err(ProxyError::BadRequest("userinfo in the request target"));
        }
        return Ok(a.as_str());
    }
    match first {
        Some(h) => Ok(h.to_str().unwrap_or_default()),
        None if req.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("missing Host header"))
        }
        None => Ok(""),
    }
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
