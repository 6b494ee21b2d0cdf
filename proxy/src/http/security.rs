//! The security stage of a request, between routing and forwarding: path
//! normalisation (before routing), then for the chosen route a CORS preflight answer, JWT
//! authentication and the listener's authorization policy.
//!
//! The decisions themselves are pure and live elsewhere ([`crate::authz`],
//! [`crate::authn`], [`super::cors`]); this module applies them to a request, counts the
//! outcomes and turns refusals into [`ProxyError`]s (401 with `www-authenticate`, 403
//! with the deciding rule kept for the access log only). A listener with none of these
//! features costs one branch per request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Request, Response, Uri, header};
use metrics::Counter;
use weft_telemetry::{Registry, names};

use super::{Body, ProxyError};
use crate::authz::{self, Verdict};
use crate::observe::Detail;
use crate::snapshot::{HttpListener, Route};

/// Rewrites the request's path to its normal form (the form routing, authorization and
/// the upstream see). A path that cannot be normalised (bad escapes, control bytes, an
/// escaped slash where the listener rejects them) is a 400.
pub fn normalise_path<B>(req: &mut Request<B>, opts: authz::PathOptions) -> Result<(), ProxyError> {
    // `CONNECT host:port` and `OPTIONS *` have no path to normalise.
    if !req.uri().path().starts_with('/') {
        return Ok(());
    }
    let normal = match authz::normalise(req.uri().path(), opts) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(p)) => p,
        Err(_) => return Err(ProxyError::BadRequest("invalid path")),
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    let with_query = match parts.path_and_query.as_ref().and_then(|pq| pq.query()) {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    parts.path_and_query = Some(
        with_query
            .parse()
            .map_err(|_| ProxyError::BadRequest("invalid path"))?,
    );
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid path"))?;
    Ok(())
}

/// What the gate decided for a request that may go on.
#[derive(Debug, Default)]
pub struct Passed {
    /// The request's `Origin`, when the route answers CORS (for the response headers).
    pub origin: Option<HeaderValue>,
}

/// The outcome of [`check`].
#[derive(Debug)]
pub enum Gate {
    /// Go on.
    Pass(Passed),
    /// Answer with this response (a CORS preflight).
    Answer(Response<Body>),
    /// Refuse (the refusal carries CORS headers too, so that a browser page can read
    /// it).
    Refuse(ProxyError, Passed),
}

/// Runs the route's CORS preflight, JWT requirement and the listener's authorization
/// policy on `req` (from `peer`, the caller's SPIFFE id on a mesh listener, arriving on
/// local `port`). Verified claims are written to headers as configured; claim headers
/// a client sent are dropped first.
#[allow(clippy::too_many_arguments)]
pub fn check<B>(
    http: &HttpListener,
    route: &Route,
    req: &mut Request<B>,
    peer: Option<&str>,
    port: u16,
    stats: &SecurityStats,
    detail: Option<&mut Detail>,
) -> Gate {
    let mut passed = Passed::default();
    if let Some(cors) = &route.cors {
        if let Some(answer) = super::cors::preflight(cors, req.headers(), req.method()) {
            let (parts, ()) = answer.into_parts();
            return Gate::Answer(Response::from_parts(parts, Body::Empty));
        }
        passed.origin = req.headers().get(header::ORIGIN).cloned();
    }
    let mut claims = None;
    if let Some(jwt) = &http.jwt {
        crate::authn::strip_claim_headers(&jwt.providers, req.headers_mut());
        let preflight_bypass =
            jwt.bypass_cors_preflight && super::cors::is_preflight(req.headers(), req.method());
        if let Some(requirement) = route.jwt.as_ref().filter(|_| !preflight_bypass) {
            match crate::authn::authenticate(
                &jwt.providers,
                requirement,
                req.headers(),
                SystemTime::now(),
            ) {
                Ok(verified) => {
                    stats.jwt(&route.name, "ok").increment(1);
                    if let Some(v) = verified {
                        if let Some(p) = jwt.providers.get(v.provider) {
                            crate::authn::apply(p, &v, req.headers_mut());
                        }
                        claims = Some(v.claims);
                    }
                }
                Err(e) => {
                    stats.jwt(&route.name, e.metric_outcome()).increment(1);
                    let challenge = if jwt.strip_failure_response {
                        HeaderValue::from_static("Bearer")
                    } else {
                        e.www_authenticate(&realm(req))
                    };
                    return Gate::Refuse(ProxyError::Unauthenticated(e, challenge), passed);
                }
            }
        }
    }
    if let Some(policy) = &http.authz {
        let decision = authz::decide(
            policy,
            &authz::Request {
                peer,
                path: req.uri().path(),
                method: req.method(),
                port,
                headers: req.headers(),
                claims: claims.as_ref(),
            },
        );
        stats
            .authz(decision.verdict.as_str(), decision.rule.as_ref())
            .increment(1);
        if let Some(d) = detail {
            d.authz_decision = Some(decision.verdict.as_str());
            d.authz_rule = decision.rule.clone();
        }
        match decision.verdict {
            Verdict::Deny if !decision.allowed => {
                return Gate::Refuse(ProxyError::Forbidden, passed);
            }
            Verdict::AuditDeny => tracing::info!(
                route = %route.name,
                rule = decision.rule.as_deref().unwrap_or("default"),
                peer,
                path = req.uri().path(),
                "authorization (dry run): would deny"
            ),
            _ => {}
        }
    }
    Gate::Pass(passed)
}

/// Adds the CORS response headers for an allowed origin.
pub fn decorate(route: &Route, passed: &Passed, headers: &mut HeaderMap) {
    if let Some(cors) = &route.cors {
        super::cors::decorate(cors, passed.origin.as_ref(), headers);
    }
}

/// The realm of a `www-authenticate` challenge: the request's URL, as Envoy sends it.
fn realm<B>(req: &Request<B>) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    format!("http://{host}{}", req.uri().path())
}

/// A verdict and the rule that made it (`None`: the default).
type AuthzKey = (&'static str, Option<Arc<str>>);

/// Counters of a listener's authentication and authorization outcomes, made on first
/// use (the label values are bounded by the configuration: rule and route names, and a
/// fixed set of outcomes).
#[derive(Debug)]
pub struct SecurityStats {
    registry: Registry,
    listener: Arc<str>,
    authz: RwLock<HashMap<AuthzKey, Counter>>,
    jwt: RwLock<HashMap<(Arc<str>, &'static str), Counter>>,
}

impl SecurityStats {
    /// Counters for listener `listener`.
    pub fn new(registry: &Registry, listener: &Arc<str>) -> Self {
        Self {
            registry: registry.clone(),
            listener: listener.clone(),
            authz: RwLock::default(),
            jwt: RwLock::default(),
        }
    }

    fn authz(&self, decision: &'static str, rule: Option<&Arc<str>>) -> Counter {
        cached(&self.authz, (decision, rule.cloned()), || {
            self.registry.counter(
                names::AUTHZ_DECISIONS_TOTAL,
                &[
                    (names::label::LISTENER, self.listener.to_string()),
                    (names::label::DECISION, decision.to_owned()),
                    (
                        names::label::RULE,
                        rule.map_or_else(|| "default".to_owned(), |r| r.to_string()),
                    ),
                ],
            )
        })
    }

    fn jwt(&self, route: &Arc<str>, outcome: &'static str) -> Counter {
        cached(&self.jwt, (route.clone(), outcome), || {
            self.registry.counter(
                names::JWT_AUTHN_TOTAL,
                &[
                    (names::label::LISTENER, self.listener.to_string()),
                    (names::label::ROUTE, route.to_string()),
                    (names::label::OUTCOME, outcome.to_owned()),
                ],
            )
        })
    }
}

/// The counter under `key` in `map`, made by `make` (and kept) the first time: label
/// sets come from the configuration, so the map stays as small as the rules and routes.
fn cached<K: std::hash::Hash + Eq>(
    map: &RwLock<HashMap<K, Counter>>,
    key: K,
    make: impl FnOnce() -> Counter,
) -> Counter {
    if let Some(c) = map
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return c.clone();
    }
    map.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(key)
        .or_insert_with(make)
        .clone()
}
