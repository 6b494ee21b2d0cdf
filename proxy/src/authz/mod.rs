//! Authorization: a listener's policy and the per-request decision.
//!
//! A [`Policy`] is what `snapshot::translate` makes of a listener's RBAC HTTP filters
//! (or, through them, of the friendly `authz:` block): rules that allow or deny, a
//! default, and a dry-run switch. [`decide`] answers one request from its caller's
//! identity (the peer's SPIFFE id from mTLS), its normalised path ([`path::normalise`]),
//! method, the listener's port, headers and verified JWT claims.
//!
//! The decision, in order:
//! 1. any matching `deny` rule denies, wherever it is in the list (deny wins);
//! 2. else any matching `allow` rule allows;
//! 3. else the default decides.
//!
//! So under `default: allow` an allow rule can never change an answer (nothing is denied
//! that a deny rule does not deny); allow rules matter with `default: deny`, where they
//! are the only way in. In dry-run the same answer is computed and reported
//! ([`Verdict::AuditDeny`] for a would-be denial) but the request always goes on.
//!
//! Everything here is data and pure functions, with no protobuf and no I/O; [`decide`]
//! runs on every request of a listener with a policy and does not allocate.

pub mod path;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use serde_json::{Map, Value};

use crate::snapshot::template::Template;

pub use self::path::{EscapedSlashes, PathError, PathOptions, normalise};

/// A listener's authorization policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// What happens to a request no rule matches.
    pub default: Action,
    /// The rules; deny rules win over allow rules whatever the order. When several rules
    /// of the deciding kind match, the first in this order is the one reported.
    pub rules: Vec<Rule>,
    /// Compute and report the decision, but let every request through.
    pub dry_run: bool,
}

/// Allow or deny: what a rule does when it matches, and a policy's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Answer 403.
    Deny,
}

/// One rule: who (`principals`), what (`operation`) and under which `conditions`.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique within the policy; reported with the decision (access log, metrics).
    pub name: Arc<str>,
    /// What a match does.
    pub action: Action,
    /// Any of these callers; empty: anyone, with or without an identity.
    pub principals: Vec<PrincipalMatch>,
    /// What is being done.
    pub operation: Operation,
    /// All of these must hold.
    pub conditions: Vec<Condition>,
}

/// A caller, by the SPIFFE id its mTLS certificate proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalMatch {
    /// This id exactly (`spiffe://example.org/ns/shop/sa/gateway`).
    Exact(String),
    /// Ids starting with this (`spiffe://example.org/ns/shop/`).
    Prefix(String),
    /// Ids in this trust domain (`example.org` matches `spiffe://example.org/...`).
    TrustDomain(String),
    /// Any caller with an id (any mTLS peer).
    Authenticated,
    /// Anyone, with or without an id.
    Any,
}

/// What a request does. Each list is any-of and empty means any; all given lists must
/// match.
#[derive(Clone, Debug, Default)]
pub struct Operation {
    /// Request paths (normalised, without the query).
    pub paths: Vec<PathMatch>,
    /// Request methods.
    pub methods: Vec<Method>,
    /// The listener's local port the request came in on.
    pub ports: Vec<u16>,
}

/// How a rule matches the request path.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A leading part of the path (`/admin/`); plain text, not segment-aware.
    Prefix(String),
    /// A `uri_template` (`/users/{id}`).
    Template(Template),
}

/// A request attribute besides who and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// A request header. With `values`, some value of the header must equal one of them
    /// exactly (a repeated header is looked at value by value, not joined); with no
    /// `values`, the header must be present.
    Header {
        /// Compared case-insensitively (header names are lower-cased).
        name: HeaderName,
        /// Any of these, compared exactly; empty: present.
        values: Vec<String>,
    },
    /// A claim of the verified JWT. A string claim must equal one of `values`, an array
    /// claim must contain one of them as a string; with no `values`, the claim must be
    /// present. A request without a verified token matches no claim condition.
    Claim {
        /// The claim's name, and for nested claims the names inside it
        /// (`["realm", "roles"]` for `realm.roles`).
        path: Vec<String>,
        /// Any of these; empty: present.
        values: Vec<String>,
    },
}

/// What [`decide`] looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The caller's SPIFFE id from its mTLS certificate (`spiffe://td/ns/x/sa/y`); `None`
    /// for plain-text or unauthenticated callers.
    pub peer: Option<&'a str>,
    /// The normalised path, without the query.
    pub path: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The listener's local port.
    pub port: u16,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The verified JWT's claims, if a token was verified.
    pub claims: Option<&'a Map<String, Value>>,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request goes on (always true in dry-run).
    pub allowed: bool,
    /// What the policy says, for logs and metrics.
    pub verdict: Verdict,
    /// The rule that decided; `None` when the default did.
    pub rule: Option<Arc<str>>,
}

/// What a policy says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied (403).
    Deny,
    /// Would have been denied; let through because the policy is a dry run.
    AuditDeny,
}

impl Verdict {
    /// The name in access logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::AuditDeny => "audit_deny",
        }
    }
}

/// The decision for one request. Pure; does not allocate.
pub fn decide(policy: &Policy, req: &Request<'_>) -> Decision {
    let first = |action: Action| {
        policy
            .rules
            .iter()
            .find(|r| r.action == action && r.matches(req))
    };
    let (allow, rule) = if let Some(r) = first(Action::Deny) {
        (false, Some(r))
    } else if let Some(r) = first(Action::Allow) {
        (true, Some(r))
    } else {
        (policy.default == Action::Allow, None)
    };
    let verdict = match (allow, policy.dry_run) {
        (true, _) => Verdict::Allow,
        (false, false) => Verdict::Deny,
        (false, true) => Verdict::AuditDeny,
    };
    Decision {
        allowed: allow || policy.dry_run,
        verdict,
        // A reference count, not a copy of the name.
        rule: rule.map(|r| r.name.clone()),
    }
}

impl Rule {
    /// Whether every part of the rule matches `req`.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        (self.principals.is_empty() || self.principals.iter().any(|p| p.matches(req.peer)))
            && self.operation.matches(req)
            && self.conditions.iter().all(|c| c.matches(req))
    }
}

impl PrincipalMatch {
    /// Whether a caller with id `peer` matches. Only [`PrincipalMatch::Any`] matches a
    /// caller without an id.
    pub fn matches(&self, peer: Option<&str>) -> bool {
        let Some(id) = peer else {
            return matches!(self, Self::Any);
        };
        match self {
            Self::Exact(s) => id == s,
            Self::Prefix(p) => id.starts_with(p.as_str()),
            Self::TrustDomain(td) => id
                .strip_prefix("spiffe://")
                .and_then(|rest| rest.strip_prefix(td.as_str()))
                .is_some_and(|rest| rest.starts_with('/')),
            Self::Authenticated | Self::Any => true,
        }
    }
}

impl Operation {
    /// Whether the path, method and port all match.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(req.path)))
            // Methods are case-sensitive tokens (RFC 9110), but many servers upper-case
            // what they get: `delete` must not slip past a rule on DELETE.
            && (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|m| m.as_str().eq_ignore_ascii_case(req.method.as_str())))
            && (self.ports.is_empty() || self.ports.contains(&req.port))
    }
}

impl PathMatch {
    /// Whether `path` (normalised, no query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Template(t) => t.matches(path),
        }
    }
}

impl Condition {
    /// Whether the request satisfies the condition.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        match self {
            Self::Header { name, values } if values.is_empty() => req.headers.contains_key(name),
            Self::Header { name, values } => req
                .headers
                .get_all(name)
                .iter()
                .any(|v| values.iter().any(|w| v.as_bytes() == w.as_bytes())),
            Self::Claim { path, values } => {
                let Some(claim) = req.claims.and_then(|c| claim_at(c, path)) else {
                    return false;
                };
                if values.is_empty() {
                    return true;
                }
                let listed = |v: &Value| v.as_str().is_some_and(|s| values.iter().any(|w| w == s));
                // OAuth 2 writes scopes as one space-separated string (RFC 8693 `scope`,
                // RFC 9068); Istio splits `scope` and `permission` the same way.
                let spaced = path
                    .last()
                    .is_some_and(|n| matches!(n.as_str(), "scope" | "scp" | "permission"));
                match claim {
                    Value::Array(items) => items.iter().any(listed),
                    Value::String(s) if spaced => {
                        s.split(' ').any(|part| values.iter().any(|w| w == part))
                    }
                    other => listed(other),
                }
            }
        }
    }
}

/// The claim at `path` inside nested objects.
fn claim_at<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |v, key| v.as_object()?.get(key))
}

#[cfg(test)]
mod tests;
