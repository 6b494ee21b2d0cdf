//! JWT authentication: Envoy's `jwt_authn` filter as pure functions.
//!
//! A listener has [`Provider`]s (an issuer, audiences, a JWKS, where the token is read
//! from); a route has a [`Requirement`] naming which providers may vouch for a request.
//! [`authenticate`] checks the request's token against it and [`apply`] then rewrites the
//! request for the upstream (claims copied into headers, the token removed). Nothing here
//! does I/O: keys are parsed when the configuration is loaded ([`jwks`]) and the clock is
//! a parameter, so every decision is tested by tables with real signed tokens.
//!
//! What is checked, in order (the signature first, so an outcome such as "expired" is
//! only ever reported for a token the issuer really signed):
//! 1. the token is `header.payload.signature` in base64url, with a JSON header;
//! 2. `alg` is one Weft verifies (`RS*`, `PS*`, `ES256`, `ES384`, `EdDSA`), never `none`
//!    or `HS*`, and the key is chosen by `kid` (else every key) among keys bound to that
//!    very algorithm, so a token cannot pick a weaker check;
//! 3. the signature;
//! 4. `iss` equals the provider's issuer, when one is set (a token without `iss` fails);
//! 5. `exp` and `nbf`, with the provider's clock skew. As in Envoy, a token without
//!    `exp` is accepted: issuers that want a lifetime put one in the token;
//! 6. `aud` (a string or an array) names one of the provider's audiences, when set.

pub mod dev;
pub mod jwks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

pub use self::jwks::{Jwks, JwksError, Key};

/// The Envoy HTTP filter (and per-route config key) this module implements.
pub const FILTER_NAME: &str = "envoy.filters.http.jwt_authn";

/// Envoy's default clock skew for `exp` and `nbf`.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The standard place of a bearer token (RFC 6750 section 2.1).
pub const BEARER_PREFIX: &str = "Bearer ";

/// A listener's JWT settings: the `jwt_authn` filter config, validated.
#[derive(Clone, Debug, Default)]
pub struct JwtConfig {
    /// Providers; a [`Requirement::Provider`] holds an index into this list.
    pub providers: Vec<Provider>,
    /// Named requirements that routes refer to (Envoy's `requirement_map`).
    pub requirements: HashMap<String, Arc<Requirement>>,
    /// CORS preflight requests (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) skip authentication.
    pub bypass_cors_preflight: bool,
    /// A rejected request gets a bare 401: no body, no `WWW-Authenticate` details.
    pub strip_failure_response: bool,
}

/// Who issues tokens and how to check them.
#[derive(Clone, Debug)]
pub struct Provider {
    /// The name configuration uses for it.
    pub name: Arc<str>,
    /// `iss` must equal this, when set.
    pub issuer: Option<String>,
    /// `aud` must name one of these, when any are set.
    pub audiences: Vec<String>,
    /// The keys that sign its tokens.
    pub jwks: Jwks,
    /// Leeway for `exp` and `nbf`.
    pub clock_skew: Duration,
    /// Keep the token in the request sent upstream (Envoy's default: removed).
    pub forward: bool,
    /// Claims copied into request headers after a successful check.
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// Where tokens are read from, in order.
    pub from: Vec<TokenLocation>,
}

/// A request header that may carry a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenLocation {
    /// The header.
    pub header: HeaderName,
    /// What precedes the token in the value (`Bearer `), compared without regard to
    /// case; empty: the whole value is the token.
    pub prefix: String,
}

impl TokenLocation {
    /// `Authorization: Bearer <token>`, the default.
    pub fn bearer() -> Self {
        Self {
            header: AUTHORIZATION,
            prefix: BEARER_PREFIX.to_owned(),
        }
    }
}

/// A claim copied into a request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimToHeader {
    /// The claim's path: `["sub"]`, or `["realm", "role"]` for a nested claim.
    pub claim: Vec<String>,
    /// The header it is written to (any copy sent by the client is removed first).
    pub header: HeaderName,
}

/// Which tokens a route accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// A valid token of this provider (an index into [`JwtConfig::providers`]).
    Provider(usize),
    /// Any one of these (Envoy's `requires_any`).
    AnyOf(Vec<Requirement>),
    /// No token is fine; a token that is there must satisfy the inner requirement
    /// (Envoy's `allow_missing`).
    AllowMissing(Box<Requirement>),
    /// Always passes; a token valid for some provider is still verified and applied
    /// (Envoy's `allow_missing_or_failed`).
    AllowMissingOrFailed,
}

/// A token that passed.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// The provider that vouched for it (an index into the providers).
    pub provider: usize,
    /// Its payload.
    pub claims: Map<String, Value>,
}

/// Why a request failed authentication. Every variant is a 401 in Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// No token where the provider reads them.
    #[error("Jwt is missing")]
    Missing,
    /// Not `header.payload.signature` of base64url JSON.
    #[error("Jwt is not in the form of Header.Payload.Signature")]
    Malformed,
    /// `alg` is `none`, symmetric or otherwise not one Weft verifies.
    #[error("Jwt algorithm is not supported")]
    UnsupportedAlg,
    /// No key with the token's `kid` and `alg`.
    #[error("Jwks has no key matching the Jwt's kid and alg")]
    UnknownKey,
    /// The signature does not verify.
    #[error("Jwt verification fails")]
    BadSignature,
    /// `exp` is past (beyond the clock skew).
    #[error("Jwt is expired")]
    Expired,
    /// `nbf` is ahead (beyond the clock skew).
    #[error("Jwt not yet valid")]
    NotYetValid,
    /// `iss` is not the provider's issuer.
    #[error("Jwt issuer is not configured")]
    BadIssuer,
    /// `aud` names none of the provider's audiences.
    #[error("Audiences in Jwt are not allowed")]
    BadAudience,
}

impl AuthnError {
    /// The `outcome` label of `weft_jwt_authn_total`.
    pub fn metric_outcome(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnsupportedAlg => "unsupported_alg",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadIssuer => "bad_issuer",
            Self::BadAudience => "bad_audience",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3): only the realm when no
    /// token came, `error="invalid_token"` with a description otherwise.
    pub fn www_authenticate(&self, realm: &str) -> HeaderValue {
        // The realm is usually the request URL; keep it a valid quoted-string.
        let realm: String = realm
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let text = match self {
            Self::Missing => format!("Bearer realm=\"{realm}\""),
            other => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{other}\""
            ),
        };
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// How far verification got, to pick the most telling error among several
    /// providers: a token whose signature verified says most about what is wrong.
    fn rank(self) -> u8 {
        match self {
            Self::Missing => 0,
            Self::Malformed | Self::UnsupportedAlg | Self::UnknownKey | Self::BadSignature => 1,
            Self::BadIssuer | Self::Expired | Self::NotYetValid | Self::BadAudience => 2,
        }
    }
}

/// Checks the request's token(s) against `req`. `Ok(None)`: the requirement let a
/// request without a (valid) token through.
pub fn authenticate(
    providers: &[Provider],
    req: &Requirement,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Option<Verified>, AuthnError> {
    match req {
        Requirement::Provider(i) => {
            // Translation only builds indexes that exist; refuse rather than panic.
            let Some(p) = providers.get(*i) else {
                return Err(AuthnError::UnknownKey);
            };
            let mut claims = None;
            // Every token the provider finds must be valid: a good token next to a bad
            // one must not let the bad one reach the upstream as if it were checked.
            for token in tokens(p, headers) {
                let c = verify(p, token?, now)?;
                claims.get_or_insert(c);
            }
            let claims = claims.ok_or(AuthnError::Missing)?;
            Ok(Some(Verified {
                provider: *i,
                claims,
            }))
        }
        Requirement::AnyOf(list) => {
            let mut passed_without_token = false;
            let mut worst: Option<AuthnError> = None;
            for r in list {
                match authenticate(providers, r, headers, now) {
                    Ok(Some(v)) => return Ok(Some(v)),
                    // Keep looking: a later branch may verify a token, whose claims
                    // the upstream should then get.
                    Ok(None) => passed_without_token = true,
                    Err(e) => {
                        if worst.is_none_or(|w| e.rank() > w.rank()) {
                            worst = Some(e);
                        }
                    }
                }
            }
            if passed_without_token {
                Ok(None)
            } else {
                Err(worst.unwrap_or(AuthnError::Missing))
            }
        }
        Requirement::AllowMissing(inner) => match authenticate(providers, inner, headers, now) {
            Err(AuthnError::Missing) => Ok(None),
            other => other,
        },
        Requirement::AllowMissingOrFailed => {
            for i in 0..providers.len() {
                if let Ok(Some(v)) =
                    authenticate(providers, &Requirement::Provider(i), headers, now)
                {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        }
    }
}

/// Rewrites a request whose token `verified` passed: removes the token unless the
/// provider forwards it, and writes the claims into their headers (after removing any
/// copies the client sent). A claim that is absent, an object, or not a valid header
/// value is left out; an array is joined with `,`.
pub fn apply(provider: &Provider, verified: &Verified, headers: &mut HeaderMap) {
    if !provider.forward {
        for loc in &provider.from {
            let carries_token = headers
                .get_all(&loc.header)
                .iter()
                .any(|v| token_in(v.as_bytes(), &loc.prefix).is_some());
            if carries_token {
                headers.remove(&loc.header);
            }
        }
    }
    for c in &provider.claims_to_headers {
        headers.remove(&c.header);
    }
    for c in &provider.claims_to_headers {
        if let Some(v) = claim_at(&verified.claims, &c.claim).and_then(header_value) {
            headers.append(c.header.clone(), v);
        }
    }
}

/// Removes every provider's claim headers, so a client cannot send its own `x-user-id`;
/// call for every request on a listener with providers, token or not.
pub fn strip_claim_headers(providers: &[Provider], headers: &mut HeaderMap) {
    for p in providers {
        for c in &p.claims_to_headers {
            headers.remove(&c.header);
        }
    }
}

/// A header a claim may be written to, lowercased. Headers that frame the message,
/// route it (`host`) or belong to the connection are refused: a claim must not be able
/// to change where or how a request goes.
pub fn claim_header(name: &str) -> Result<HeaderName, String> {
    const RESERVED: [&str; 9] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ];
    let lower = name.to_ascii_lowercase();
    let header = HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    if RESERVED.contains(&lower.as_str()) {
        return Err(format!("a claim cannot be written to {lower:?}"));
    }
    Ok(header)
}

/// The tokens found where `p` looks, in order.
fn tokens<'a>(
    p: &'a Provider,
    headers: &'a HeaderMap,
) -> impl Iterator<Item = Result<&'a str, AuthnError>> + 'a {
    p.from.iter().flat_map(move |loc| {
        headers
            .get_all(&loc.header)
            .iter()
            .filter_map(move |v| token_in(v.as_bytes(), &loc.prefix))
            .map(|t| {
                std::str::from_utf8(t)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .ok_or(AuthnError::Malformed)
            })
    })
}

/// The token in a header value, if the value starts with `prefix` (ignoring case, and
/// ignoring how much white space follows a scheme such as `Bearer `).
fn token_in<'v>(value: &'v [u8], prefix: &str) -> Option<&'v [u8]> {
    let scheme = prefix.trim_end().as_bytes();
    let head = value.get(..scheme.len())?;
    if !head.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &value[scheme.len()..];
    // `Bearer` must be followed by white space (or nothing): `Bearerish` is another scheme.
    if scheme.len() < prefix.len() && rest.first().is_some_and(|b| *b != b' ' && *b != b'\t') {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Checks one token against one provider and returns its claims.
fn verify(p: &Provider, token: &str, now: SystemTime) -> Result<Map<String, Value>, AuthnError> {
    let mut parts = token.split('.');
    let (Some(head), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthnError::Malformed);
    };
    let header = json_object(head)?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => jwks::signature_alg(name).ok_or(AuthnError::UnsupportedAlg)?,
        _ => return Err(AuthnError::Malformed),
    };
    // Extensions the token says must be understood; Weft understands none (RFC 7515 4.1.11).
    if header.contains_key("crit") {
        return Err(AuthnError::Malformed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(AuthnError::Malformed),
    };
    if URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err(AuthnError::Malformed);
    }
    let message = &token[..head.len() + 1 + payload.len()];
    let mut candidates = p
        .jwks
        .keys
        .iter()
        .filter(|k| k.accepts(alg) && (kid.is_none() || k.kid.as_deref() == kid))
        .peekable();
    if candidates.peek().is_none() {
        return Err(AuthnError::UnknownKey);
    }
    let signed = candidates.any(|k| {
        jsonwebtoken::crypto::verify(signature, message.as_bytes(), &k.decoding, alg)
            .unwrap_or(false)
    });
    if !signed {
        return Err(AuthnError::BadSignature);
    }
    let claims = json_object(payload)?;
    check_claims(p, &claims, now)?;
    Ok(claims)
}

/// The claim checks after the signature: issuer, time, audience.
fn check_claims(
    p: &Provider,
    claims: &Map<String, Value>,
    now: SystemTime,
) -> Result<(), AuthnError> {
    if let Some(issuer) = &p.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(AuthnError::BadIssuer);
    }
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let skew = p.clock_skew.as_secs_f64();
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(AuthnError::Malformed),
    };
    if let Some(exp) = time("exp")?
        && now > exp + skew
    {
        return Err(AuthnError::Expired);
    }
    if let Some(nbf) = time("nbf")?
        && now + skew < nbf
    {
        return Err(AuthnError::NotYetValid);
    }
    if !p.audiences.is_empty() {
        let named = |a: &Value| {
            a.as_str()
                .is_some_and(|a| p.audiences.iter().any(|x| x == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(list)) => list.iter().any(named),
            Some(one) => named(one),
            None => false,
        };
        if !ok {
            return Err(AuthnError::BadAudience);
        }
    }
    Ok(())
}

fn json_object(part: &str) -> Result<Map<String, Value>, AuthnError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthnError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthnError::Malformed),
    }
}

fn claim_at<'c>(claims: &'c Map<String, Value>, path: &[String]) -> Option<&'c Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |v, key| v.as_object()?.get(key))
}

/// A claim as a header value: strings, numbers and booleans as written; an array of
/// them joined with `,`; anything else (objects, nested arrays, null) left out.
fn header_value(v: &Value) -> Option<HeaderValue> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let text = match v {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    // Envoy adds nothing for an empty claim.
    if text.is_empty() {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
pub(crate) mod tests;
