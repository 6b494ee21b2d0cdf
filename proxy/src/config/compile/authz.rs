//! A listener's friendly `authz:` and `path_normalization:` settings compiled to Envoy:
//! RBAC HTTP filters, and the connection manager's path normalisation fields.
//!
//! ```yaml
//! listeners:
//!   - name: cart-inbound
//!     address: 0.0.0.0:16006
//!     authz:
//!       default: deny          # allow | deny (default: allow)
//!       dry_run: false         # log and count what would be denied, deny nothing
//!       rules:
//!         - name: gateway-calls-cart      # required, unique within the listener
//!           action: allow                 # allow | deny (default allow)
//!           from:                         # any of; omitted = anyone (also unauthenticated)
//!             - principal: spiffe://example.org/ns/shop/sa/gateway
//!             - principal_prefix: spiffe://example.org/ns/shop/
//!             - trust_domain: example.org
//!             - authenticated: true       # any mTLS peer
//!           to:                           # all given fields must match (each is any-of)
//!             paths: [/cart/addItem, "/users/{userId}"]   # a path with {…} or * is a template
//!             path_prefixes: [/admin/]
//!             methods: [GET, POST]
//!             ports: [16006]              # the listener's port the request came in on
//!           when:                         # all of
//!             headers: { x-tenant: [blue, green] }   # [] = header present
//!             claims: { scope: [cart:write], realm.roles: [admin] }  # verified JWT claims
//!     path_normalization:                 # optional; these are the defaults
//!       merge_slashes: true
//!       escaped_slashes: unescape         # keep | reject | unescape
//! ```
//!
//! Meaning: a matching `deny` rule denies (wherever it is in the list), else a matching
//! `allow` rule allows, else `default` decides; see [`crate::authz`]. An `allow` rule under
//! `default: allow` could never change an answer, so it is refused rather than silently
//! ignored: write `default: deny` to let in only what the allow rules allow. A claim value
//! matches a string claim equal to it or an array claim containing it; `.` in a claim
//! name separates nested names (`realm.roles`). Paths are matched after normalisation, so
//! rule paths must be written normalised (`/a/../b` is refused: write `/b`).
//!
//! Envoy form (read back by `snapshot::translate::authz`, whose documentation has the
//! whole mapping): deny rules are the policies of a `DENY` RBAC filter, allow rules those
//! of an `ALLOW` RBAC filter that is present exactly when `default: deny` (with no
//! policies it refuses everything), each policy keyed by the rule's name. `dry_run` writes
//! the same policies as `shadow_rules`. A rule's `to` is one permission (an `and_rules` of
//! an `or_rules` per field), its `from` and `when` one principal (an `and_ids` of an
//! `or_ids` of the callers, one per header and one `sourced_metadata` matcher on
//! `envoy.filters.http.jwt_authn`'s `jwt_payload` per claim). `path_normalization` is the
//! connection manager's `normalize_path` (always on), `merge_slashes` and
//! `path_with_escaped_slashes_action`, all written out even when defaulted.

use std::collections::{HashMap, HashSet};

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::rbac::v3::{
    self as pb, MetadataSource, SourcedMetadata, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, PathMatcher, StringMatcher, ValueMatcher,
    list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher,
};
use envoy_types::pb::google::protobuf::BoolValue;
use indexmap::IndexMap;
use serde::Deserialize;

use super::super::locate::YamlPath;
use super::super::resources::pack;
use super::{Compiler, checks, exact, names};
use crate::authz::{EscapedSlashes, PathOptions, normalise};
use crate::snapshot::template::Template;
use crate::snapshot::translate::authz::{JWT_AUTHN_FILTER, JWT_PAYLOAD_KEY, RBAC_FILTER};

/// A listener's `authz:` block.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzSpec {
    /// What happens to a request no rule matches: `allow` (the default) or `deny`.
    #[serde(default)]
    pub default: Effect,
    /// Decide and report (access log, metrics) but deny nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The rules; deny rules win over allow rules whatever the order.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Let the request through.
    #[default]
    Allow,
    /// Answer 403.
    Deny,
}

/// One rule: who (`from`), what (`to`) and under which conditions (`when`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique within the listener; reported with each decision it makes.
    pub name: String,
    /// `allow` (the default) or `deny`.
    #[serde(default)]
    pub action: Effect,
    /// Any of these callers; omitted: anyone, with or without an identity.
    #[serde(default)]
    pub from: Vec<SourceSpec>,
    /// What the request does; omitted: anything.
    #[serde(default)]
    pub to: Option<ToSpec>,
    /// Further conditions, all of which must hold.
    #[serde(default)]
    pub when: Option<WhenSpec>,
}

/// A caller, by its SPIFFE id (from its mTLS certificate). Give exactly one field.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// This id exactly: `spiffe://example.org/ns/shop/sa/gateway`.
    #[serde(default)]
    pub principal: Option<String>,
    /// Ids starting with this: `spiffe://example.org/ns/shop/`.
    #[serde(default)]
    pub principal_prefix: Option<String>,
    /// Ids of this trust domain: `example.org`.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// `true`: any caller with an id.
    #[serde(default)]
    pub authenticated: Option<bool>,
}

/// What a request does. Every given field must match; each is a list of alternatives.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToSpec {
    /// Whole paths, or templates (`/users/{userId}`, `/static/**`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Leading parts of paths (`/admin/`).
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// Methods (upper case).
    #[serde(default)]
    pub methods: Vec<String>,
    /// The listener ports the request came in on.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// Conditions on headers and JWT claims; all must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    /// Header name -> accepted values (exact); `[]`: the header must be present.
    #[serde(default)]
    pub headers: IndexMap<String, Vec<String>>,
    /// Claim name (`scope`, nested `realm.roles`) -> accepted values; `[]`: present.
    #[serde(default)]
    pub claims: IndexMap<String, Vec<String>>,
}

/// A listener's `path_normalization:` block (dot segments are always resolved).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathNormalizationSpec {
    /// Merge runs of `/` (default true).
    #[serde(default)]
    pub merge_slashes: Option<bool>,
    /// `%2F` and `%5C`: `unescape` (default) into `/`, `keep` as they are, or `reject`
    /// with 400.
    #[serde(default)]
    pub escaped_slashes: Option<EscapedSlashesSpec>,
}

/// What to do with `%2F` and `%5C` in a path.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashesSpec {
    /// Forward them as they are (path rules then do not see them as separators).
    Keep,
    /// Answer 400.
    Reject,
    /// Turn them into `/`.
    Unescape,
}

impl Compiler {
    /// The RBAC HTTP filters for a listener's `authz:` block (`path` is where the block
    /// is, e.g. `listeners[0].authz`): to go after JWT authentication and before the
    /// other filters and the router. Empty when the policy cannot deny anything.
    pub(super) fn compile_authz(
        &mut self,
        spec: &AuthzSpec,
        path: &YamlPath,
    ) -> Vec<hcm::HttpFilter> {
        let mut seen = HashSet::new();
        let mut deny = HashMap::new();
        let mut allow = HashMap::new();
        let mut noop_reported = false;
        for (i, r) in spec.rules.iter().enumerate() {
            let rpath = path.key("rules").index(i);
            if r.name.is_empty() {
                self.problem(rpath.key("name"), "a rule name is required");
            } else if !seen.insert(r.name.as_str()) {
                self.problem(
                    rpath.key("name"),
                    format!("duplicate rule name {:?}", r.name),
                );
            }
            if r.action == Effect::Allow && spec.default == Effect::Allow && !noop_reported {
                noop_reported = true;
                self.problem(
                    rpath.key("action"),
                    "an allow rule has no effect under `default: allow` (the default), where everything no deny rule denies is allowed: set `default: deny` to allow only what allow rules allow",
                );
            }
            let policy = self.rbac_policy(r, &rpath);
            match r.action {
                Effect::Deny => deny.insert(r.name.clone(), policy),
                Effect::Allow => allow.insert(r.name.clone(), policy),
            };
        }
        let mut out = Vec::new();
        if !deny.is_empty() {
            out.push(rbac_filter(rbac::Action::Deny, deny, spec.dry_run));
        }
        // An ALLOW filter refuses what none of its policies matches: the default deny,
        // even with no allow rules at all.
        if spec.default == Effect::Deny {
            out.push(rbac_filter(rbac::Action::Allow, allow, spec.dry_run));
        }
        out
    }

    fn rbac_policy(&mut self, r: &RuleSpec, path: &YamlPath) -> pb::Policy {
        pb::Policy {
            permissions: vec![self.permission(r.to.as_ref(), &path.key("to"))],
            principals: vec![self.principal(&r.from, r.when.as_ref(), path)],
            ..Default::default()
        }
    }

    /// `to` as one permission: all of (any of the paths, any of the methods, any of the
    /// ports).
    fn permission(&mut self, to: Option<&ToSpec>, path: &YamlPath) -> pb::Permission {
        let Some(to) = to else {
            return perm(permission::Rule::Any(true));
        };
        let mut paths = Vec::new();
        for (i, p) in to.paths.iter().enumerate() {
            let at = path.key("paths").index(i);
            if Template::is_template(p) {
                self.check(Template::parse(p), &at);
                paths.push(perm(permission::Rule::UriTemplate(TypedExtensionConfig {
                    name: names::URI_TEMPLATE_MATCHER.to_owned(),
                    typed_config: Some(pack(&UriTemplateMatchConfig {
                        path_template: p.clone(),
                    })),
                })));
            } else {
                self.rule_path(p, &at);
                paths.push(url_path(exact(p)));
            }
        }
        for (i, p) in to.path_prefixes.iter().enumerate() {
            self.rule_path(p, &path.key("path_prefixes").index(i));
            paths.push(url_path(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Prefix(p.clone())),
                ignore_case: false,
            }));
        }
        let mut methods = Vec::new();
        for (i, m) in to.methods.iter().enumerate() {
            self.check(checks::parse_method(m), &path.key("methods").index(i));
            methods.push(perm(permission::Rule::Header(header_exact(":method", m))));
        }
        let mut ports = Vec::new();
        for (i, p) in to.ports.iter().enumerate() {
            if *p == 0 {
                self.problem(path.key("ports").index(i), "a port is 1-65535");
            }
            ports.push(perm(permission::Rule::DestinationPort(u32::from(*p))));
        }
        let groups: Vec<pb::Permission> = [paths, methods, ports]
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(|g| {
                one_or(g, |rules| {
                    perm(permission::Rule::OrRules(permission::Set { rules }))
                })
            })
            .collect();
        match groups.len() {
            0 => perm(permission::Rule::Any(true)),
            _ => one_or(groups, |rules| {
                perm(permission::Rule::AndRules(permission::Set { rules }))
            }),
        }
    }

    /// `from` and `when` as one principal: all of (any of the callers, each header, each
    /// claim).
    fn principal(
        &mut self,
        from: &[SourceSpec],
        when: Option<&WhenSpec>,
        path: &YamlPath,
    ) -> pb::Principal {
        let mut ids = Vec::new();
        for (i, s) in from.iter().enumerate() {
            if let Some(p) = self.source(s, &path.key("from").index(i)) {
                ids.push(p);
            }
        }
        let mut groups = Vec::new();
        if !ids.is_empty() {
            groups.push(one_or(ids, |ids| {
                princ(principal::Identifier::OrIds(principal::Set { ids }))
            }));
        }
        if let Some(w) = when {
            let wpath = path.key("when");
            for (name, values) in &w.headers {
                let at = wpath.key("headers").key(name);
                if name.starts_with(':') {
                    self.problem(
                        at,
                        "pseudo-headers cannot be matched here: use `to.methods` for the method and `to.paths` for the path",
                    );
                    continue;
                }
                self.check(checks::parse_header_name(name), &at);
                for (j, v) in values.iter().enumerate() {
                    self.check(checks::parse_header_value(v), &at.index(j));
                }
                let name = name.to_ascii_lowercase();
                let leaves: Vec<pb::Principal> = if values.is_empty() {
                    vec![princ(principal::Identifier::Header(HeaderMatcher {
                        name,
                        header_match_specifier: Some(
                            header_matcher::HeaderMatchSpecifier::PresentMatch(true),
                        ),
                        ..Default::default()
                    }))]
                } else {
                    values
                        .iter()
                        .map(|v| princ(principal::Identifier::Header(header_exact(&name, v))))
                        .collect()
                };
                groups.push(one_or(leaves, |ids| {
                    princ(principal::Identifier::OrIds(principal::Set { ids }))
                }));
            }
            for (name, values) in &w.claims {
                let at = wpath.key("claims").key(name);
                let parts: Vec<&str> = name.split('.').collect();
                if parts.iter().any(|p| p.is_empty()) {
                    self.problem(
                        at,
                        format!("{name:?} is not a claim name: `.` separates nested names, which must not be empty"),
                    );
                    continue;
                }
                groups.push(claim_matcher(&parts, values));
            }
        }
        match groups.len() {
            0 => princ(principal::Identifier::Any(true)),
            _ => one_or(groups, |ids| {
                princ(principal::Identifier::AndIds(principal::Set { ids }))
            }),
        }
    }

    /// One `from` entry as an `authenticated` principal.
    fn source(&mut self, s: &SourceSpec, path: &YamlPath) -> Option<pb::Principal> {
        let given = [
            s.principal.is_some(),
            s.principal_prefix.is_some(),
            s.trust_domain.is_some(),
            s.authenticated.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            self.problem(
                path.clone(),
                "give exactly one of principal, principal_prefix, trust_domain and authenticated",
            );
            return None;
        }
        let name = |pattern| {
            Some(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            })
        };
        use string_matcher::MatchPattern as P;
        let principal_name = if let Some(id) = &s.principal {
            self.check(check_spiffe_id(id), &path.key("principal"))?;
            name(P::Exact(id.clone()))
        } else if let Some(prefix) = &s.principal_prefix {
            self.check(check_spiffe_prefix(prefix), &path.key("principal_prefix"))?;
            name(P::Prefix(prefix.clone()))
        } else if let Some(td) = &s.trust_domain {
            self.check(check_trust_domain(td), &path.key("trust_domain"))?;
            name(P::Prefix(format!("spiffe://{td}/")))
        } else if s.authenticated == Some(true) {
            None
        } else {
            self.problem(
                path.key("authenticated"),
                "`authenticated: false` matches nobody; leave `from` out to match anyone",
            );
            return None;
        };
        Some(princ(principal::Identifier::Authenticated(
            principal::Authenticated { principal_name },
        )))
    }

    /// A rule's exact path or prefix: absolute, and already in normalised form (requests
    /// are matched after normalisation, so another spelling would never match).
    fn rule_path(&mut self, p: &str, path: &YamlPath) {
        if p.contains(['?', '#']) {
            self.problem(
                path.clone(),
                format!("{p:?}: paths are matched without the query"),
            );
            return;
        }
        // Only what every listener's normalisation changes: slashes depend on options.
        let opts = PathOptions {
            normalize: true,
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        };
        match normalise(p, opts) {
            Err(e) => self.problem(path.clone(), format!("{p:?}: {e}")),
            Ok(n) if n != p => self.problem(
                path.clone(),
                format!(
                    "{p:?} is matched against normalised paths and would never match: write {n:?}"
                ),
            ),
            Ok(_) => {}
        }
    }
}

/// The connection manager's path normalisation for a listener's `path_normalization:`
/// (the defaults when absent), written out in full.
pub(super) fn compile_path_options(
    spec: Option<&PathNormalizationSpec>,
    m: &mut hcm::HttpConnectionManager,
) {
    use hcm::http_connection_manager::PathWithEscapedSlashesAction as A;
    let d = PathOptions::default();
    let escaped = match spec.and_then(|s| s.escaped_slashes) {
        Some(EscapedSlashesSpec::Keep) => EscapedSlashes::Keep,
        Some(EscapedSlashesSpec::Reject) => EscapedSlashes::Reject,
        Some(EscapedSlashesSpec::Unescape) => EscapedSlashes::Unescape,
        None => d.escaped_slashes,
    };
    m.normalize_path = Some(BoolValue { value: d.normalize });
    m.merge_slashes = spec
        .and_then(|s| s.merge_slashes)
        .unwrap_or(d.merge_slashes);
    m.path_with_escaped_slashes_action = match escaped {
        EscapedSlashes::Keep => A::KeepUnchanged,
        EscapedSlashes::Reject => A::RejectRequest,
        EscapedSlashes::Unescape => A::UnescapeAndForward,
    } as i32;
}

/// An RBAC HTTP filter with these policies, enforced or (dry run) as shadow rules.
fn rbac_filter(
    action: rbac::Action,
    policies: HashMap<String, pb::Policy>,
    dry_run: bool,
) -> hcm::HttpFilter {
    let rules = pb::Rbac {
        action: action as i32,
        policies,
        audit_logging_options: None,
    };
    let (rules, shadow_rules) = if dry_run {
        (None, Some(rules))
    } else {
        (Some(rules), None)
    };
    hcm::HttpFilter {
        name: RBAC_FILTER.to_owned(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
            &RbacFilter {
                rules,
                shadow_rules,
                ..Default::default()
            },
        ))),
        ..Default::default()
    }
}

/// A claim condition: a string claim equal to one of `values` or an array claim
/// containing one (written as both Envoy value matchers); `[]`: the claim is present.
fn claim_matcher(parts: &[&str], values: &[String]) -> pb::Principal {
    let string = |v: &String| ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(exact(v))),
    };
    let value = if values.is_empty() {
        value_matcher::MatchPattern::PresentMatch(true)
    } else {
        let strings: Vec<ValueMatcher> = values.iter().map(string).collect();
        let element = match strings.as_slice() {
            [one] => one.clone(),
            _ => ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                    value_matchers: strings.clone(),
                })),
            },
        };
        let list = ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                ListMatcher {
                    match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(element))),
                },
            ))),
        };
        let mut value_matchers = strings;
        value_matchers.push(list);
        value_matcher::MatchPattern::OrMatch(OrMatcher { value_matchers })
    };
    let key = |k: &str| metadata_matcher::PathSegment {
        segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_owned())),
    };
    princ(principal::Identifier::SourcedMetadata(SourcedMetadata {
        metadata_matcher: Some(MetadataMatcher {
            filter: JWT_AUTHN_FILTER.to_owned(),
            path: std::iter::once(JWT_PAYLOAD_KEY)
                .chain(parts.iter().copied())
                .map(key)
                .collect(),
            value: Some(ValueMatcher {
                match_pattern: Some(value),
            }),
            invert: false,
        }),
        metadata_source: MetadataSource::Dynamic as i32,
    }))
}

/// The single item, or all of them under `wrap` (an `or_*` or `and_*`).
fn one_or<T>(mut items: Vec<T>, wrap: impl FnOnce(Vec<T>) -> T) -> T {
    if items.len() == 1
        && let Some(one) = items.pop()
    {
        return one;
    }
    wrap(items)
}

fn perm(rule: permission::Rule) -> pb::Permission {
    pb::Permission { rule: Some(rule) }
}

fn princ(identifier: principal::Identifier) -> pb::Principal {
    pb::Principal {
        identifier: Some(identifier),
    }
}

fn url_path(s: StringMatcher) -> pb::Permission {
    perm(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(s)),
    }))
}

fn header_exact(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(
            value,
        ))),
        ..Default::default()
    }
}

/// A SPIFFE id: `spiffe://<trust domain>/<path>`, path segments of letters, digits, `.`,
/// `-`, `_` (not `.` or `..`).
fn check_spiffe_id(id: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!(
            "{id:?} is not a SPIFFE id ({why}): expected spiffe://<trust domain>/<path> such as spiffe://example.org/ns/shop/sa/gateway"
        )
    };
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| bad("no spiffe:// scheme"))?;
    let (td, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("no path after the trust domain"))?;
    check_trust_domain(td).map_err(|_| bad("invalid trust domain"))?;
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    if !path.split('/').all(segment_ok) || id.len() > 2048 {
        return Err(bad("invalid path"));
    }
    Ok(())
}

/// A prefix of SPIFFE ids: the scheme, a whole trust domain and `/`, then id characters.
fn check_spiffe_prefix(prefix: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!(
            "{prefix:?} is not a SPIFFE id prefix ({why}): expected spiffe://<trust domain>/... such as spiffe://example.org/ns/shop/ (use trust_domain for a whole trust domain)"
        )
    };
    let rest = prefix
        .strip_prefix("spiffe://")
        .ok_or_else(|| bad("no spiffe:// scheme"))?;
    // Without the `/`, `spiffe://example` would also match `spiffe://example.evil/...`.
    let (td, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("the trust domain must end with '/'"))?;
    check_trust_domain(td).map_err(|_| bad("invalid trust domain"))?;
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
        || path.contains("//")
    {
        return Err(bad("invalid path"));
    }
    Ok(())
}

/// A trust domain name: lower-case letters, digits, `.`, `-`, `_`.
fn check_trust_domain(td: &str) -> Result<(), String> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{td:?} is not a trust domain: lower-case letters, digits, '.', '-' and '_' (such as example.org)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue, Method};
    use serde_json::json;

    use super::*;
    use crate::authz::{Action, Decision, Policy, Request, Verdict, decide};
    use crate::snapshot::translate::authz::{path_options_of, policy_of_filters};

    const GATEWAY: &str = "spiffe://example.org/ns/shop/sa/gateway";

    fn at() -> YamlPath {
        YamlPath::root().key("listeners").index(0).key("authz")
    }

    fn spec(yaml: &str) -> AuthzSpec {
        match serde_saphyr::from_str(yaml) {
            Ok(s) => s,
            Err(e) => panic!("{e}\n{yaml}"),
        }
    }

    /// The filters of a spec that must compile cleanly.
    fn filters(yaml: &str) -> Vec<hcm::HttpFilter> {
        let mut cx = Compiler::default();
        let out = cx.compile_authz(&spec(yaml), &at());
        assert!(cx.problems.is_empty(), "{:#?}", cx.problems);
        out
    }

    /// Friendly spec -> Envoy filters -> the policy the snapshot gets.
    fn policy(yaml: &str) -> Option<Policy> {
        match policy_of_filters(&filters(yaml), "L") {
            Ok(p) => p,
            Err(problems) => panic!("{problems:#?}"),
        }
    }

    /// (peer, method, path, port, headers, claims)
    type Ask = (
        Option<&'static str>,
        &'static str,
        &'static str,
        u16,
        &'static [(&'static str, &'static str)],
        Option<serde_json::Value>,
    );

    fn ask(p: &Policy, (peer, m, path, port, headers, claims): &Ask) -> Decision {
        let mut map = HeaderMap::new();
        for (k, v) in *headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let claims = claims.as_ref().and_then(|c| c.as_object());
        decide(
            p,
            &Request {
                peer: *peer,
                path,
                method: &Method::from_bytes(m.as_bytes()).unwrap(),
                port: *port,
                headers: &map,
                claims,
            },
        )
    }

    const SHOP: &str = r#"
default: deny
rules:
  - name: gateway-calls-cart
    from:
      - principal: spiffe://example.org/ns/shop/sa/gateway
      - principal_prefix: spiffe://example.org/ns/ops/
      - trust_domain: partner.org
    to:
      paths: [/cart/addItem, "/users/{userId}"]
      methods: [GET, POST]
      ports: [16006]
  - name: no-admin
    action: deny
    to: { path_prefixes: [/admin/] }
  - name: tenants
    from: [{ authenticated: true }]
    to: { path_prefixes: [/tenant/] }
    when:
      headers: { X-Tenant: [blue, green], x-debug: [] }
      claims: { scope: [cart:write], realm.roles: [admin, owner], sub: [] }
  - name: health
    to: { paths: [/healthz] }
"#;

    fn shop_cases() -> Vec<(Ask, bool, Option<&'static str>)> {
        let tenant_claims =
            || Some(json!({"sub": "u1", "scope": "cart:write", "realm": {"roles": ["owner"]}}));
        vec![
            (
                (Some(GATEWAY), "POST", "/cart/addItem", 16006, &[], None),
                true,
                Some("gateway-calls-cart"),
            ),
            (
                (Some(GATEWAY), "GET", "/users/42", 16006, &[], None),
                true,
                Some("gateway-calls-cart"),
            ),
            (
                (
                    Some("spiffe://example.org/ns/ops/sa/x"),
                    "GET",
                    "/users/42",
                    16006,
                    &[],
                    None,
                ),
                true,
                Some("gateway-calls-cart"),
            ),
            (
                (
                    Some("spiffe://partner.org/a/b"),
                    "GET",
                    "/users/42",
                    16006,
                    &[],
                    None,
                ),
                true,
                Some("gateway-calls-cart"),
            ),
            (
                (
                    Some("spiffe://partner.org.evil/a"),
                    "GET",
                    "/users/42",
                    16006,
                    &[],
                    None,
                ),
                false,
                None,
            ),
            (
                (Some(GATEWAY), "GET", "/users/42", 16001, &[], None),
                false,
                None,
            ),
            (
                (Some(GATEWAY), "DELETE", "/cart/addItem", 16006, &[], None),
                false,
                None,
            ),
            (
                (
                    Some("spiffe://example.org/ns/other/sa/x"),
                    "GET",
                    "/cart/addItem",
                    16006,
                    &[],
                    None,
                ),
                false,
                None,
            ),
            (
                (None, "GET", "/cart/addItem", 16006, &[], None),
                false,
                None,
            ),
            (
                (Some(GATEWAY), "GET", "/admin/users", 16006, &[], None),
                false,
                Some("no-admin"),
            ),
            (
                (None, "GET", "/healthz", 1, &[], None),
                true,
                Some("health"),
            ),
            (
                (
                    Some("spiffe://any.org/x"),
                    "PUT",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "blue"), ("x-debug", "")],
                    tenant_claims(),
                ),
                true,
                Some("tenants"),
            ),
            (
                (
                    Some("spiffe://any.org/x"),
                    "PUT",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "blue")],
                    tenant_claims(),
                ),
                false,
                None,
            ),
            (
                (
                    Some("spiffe://any.org/x"),
                    "PUT",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "red"), ("x-debug", "1")],
                    tenant_claims(),
                ),
                false,
                None,
            ),
            (
                (
                    None,
                    "PUT",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "blue"), ("x-debug", "1")],
                    tenant_claims(),
                ),
                false,
                None,
            ),
            (
                (
                    Some("spiffe://any.org/x"),
                    "PUT",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "blue"), ("x-debug", "1")],
                    Some(json!({"sub": "u1", "scope": ["cart:write"], "realm": {"roles": "user"}})),
                ),
                false,
                None,
            ),
            (
                (
                    Some("spiffe://any.org/x"),
                    "PUT",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "blue"), ("x-debug", "1")],
                    Some(
                        json!({"sub": "u1", "scope": ["cart:write"], "realm": {"roles": "admin"}}),
                    ),
                ),
                true,
                Some("tenants"),
            ),
            (
                (
                    Some("spiffe://any.org/x"),
                    "PUT",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "blue"), ("x-debug", "1")],
                    Some(json!({"scope": ["cart:write"], "realm": {"roles": "admin"}})),
                ),
                false,
                None,
            ),
        ]
    }

    #[test]
    fn friendly_rules_reach_the_decision_through_envoy_filters() {
        let compiled = filters(SHOP);
        assert_eq!(compiled.len(), 2, "a DENY filter, then an ALLOW filter");
        let p = policy(SHOP).unwrap();
        assert_eq!(p.default, Action::Deny);
        for (q, allowed, rule) in shop_cases() {
            let d = ask(&p, &q);
            assert_eq!((d.allowed, d.rule.as_deref()), (allowed, rule), "{q:?}");
            assert_eq!(
                d.verdict,
                if allowed {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                }
            );
        }
    }

    #[test]
    fn dry_run_compiles_to_shadow_rules_and_denies_nothing() {
        let yaml = format!("dry_run: true\n{SHOP}");
        for f in filters(&yaml) {
            let Some(hcm::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("no typed config");
            };
            let cfg = <RbacFilter as prost::Message>::decode(any.value.as_slice()).unwrap();
            assert!(cfg.rules.is_none() && cfg.shadow_rules.is_some());
        }
        let p = policy(&yaml).unwrap();
        assert!(p.dry_run);
        for (q, allowed, rule) in shop_cases() {
            let d = ask(&p, &q);
            let verdict = if allowed {
                Verdict::Allow
            } else {
                Verdict::AuditDeny
            };
            assert_eq!(
                (d.allowed, d.verdict, d.rule.as_deref()),
                (true, verdict, rule),
                "{q:?}"
            );
        }
    }

    #[test]
    fn defaults_table() {
        let anyone: Ask = (None, "GET", "/", 1, &[], None);
        // (spec, filters written, allowed for a request no rule matches, or no policy)
        let cases: &[(&str, usize, Option<bool>)] = &[
            ("{}", 0, None),
            ("default: allow", 0, None),
            ("default: deny", 1, Some(false)),
            (
                "rules: [{ name: d, action: deny, to: { methods: [DELETE] } }]",
                1,
                Some(true),
            ),
            (
                "{ default: deny, rules: [{ name: a, to: { methods: [GET] } }] }",
                1,
                Some(true),
            ),
        ];
        for (yaml, count, allowed) in cases {
            assert_eq!(filters(yaml).len(), *count, "{yaml}");
            let got = policy(yaml).map(|p| ask(&p, &anyone).allowed);
            assert_eq!(got, *allowed, "{yaml}");
        }
    }

    #[test]
    fn friendly_problems_are_located() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "{ default: deny, rules: [{ name: r, from: [{ principal: gateway }] }] }",
                "listeners[0].authz.rules[0].from[0].principal",
                "not a SPIFFE id",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{ principal: 'spiffe://example.org' }] }] }",
                "listeners[0].authz.rules[0].from[0].principal",
                "no path after the trust domain",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{ principal: 'spiffe://Example.org/a' }] }] }",
                "listeners[0].authz.rules[0].from[0].principal",
                "invalid trust domain",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{ principal: 'spiffe://example.org/a//b' }] }] }",
                "listeners[0].authz.rules[0].from[0].principal",
                "invalid path",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{ principal_prefix: 'spiffe://example' }] }] }",
                "listeners[0].authz.rules[0].from[0].principal_prefix",
                "must end with '/'",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{ trust_domain: 'spiffe://example.org' }] }] }",
                "listeners[0].authz.rules[0].from[0].trust_domain",
                "not a trust domain",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{ trust_domain: example.org, authenticated: true }] }] }",
                "listeners[0].authz.rules[0].from[0]",
                "exactly one of",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{}] }] }",
                "listeners[0].authz.rules[0].from[0]",
                "exactly one of",
            ),
            (
                "{ default: deny, rules: [{ name: r, from: [{ authenticated: false }] }] }",
                "listeners[0].authz.rules[0].from[0].authenticated",
                "matches nobody",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { methods: [GET, get] } }] }",
                "listeners[0].authz.rules[0].to.methods[1]",
                "upper case",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { methods: ['G T'] } }] }",
                "listeners[0].authz.rules[0].to.methods[0]",
                "invalid method",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { paths: ['/users/{id'] } }] }",
                "listeners[0].authz.rules[0].to.paths[0]",
                "unclosed",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { paths: [/a/../b] } }] }",
                "listeners[0].authz.rules[0].to.paths[0]",
                "write \"/b\"",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { path_prefixes: ['/%61dmin/'] } }] }",
                "listeners[0].authz.rules[0].to.path_prefixes[0]",
                "write \"/admin/\"",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { paths: [admin] } }] }",
                "listeners[0].authz.rules[0].to.paths[0]",
                "must start with '/'",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { paths: ['/a?b=1'] } }] }",
                "listeners[0].authz.rules[0].to.paths[0]",
                "without the query",
            ),
            (
                "{ default: deny, rules: [{ name: r, to: { ports: [0] } }] }",
                "listeners[0].authz.rules[0].to.ports[0]",
                "1-65535",
            ),
            (
                "{ default: deny, rules: [{ name: r }, { name: s }, { name: r }] }",
                "listeners[0].authz.rules[2].name",
                "duplicate rule name \"r\"",
            ),
            (
                "{ default: deny, rules: [{ name: '' }] }",
                "listeners[0].authz.rules[0].name",
                "required",
            ),
            (
                "{ rules: [{ name: d, action: deny }, { name: a }] }",
                "listeners[0].authz.rules[1].action",
                "no effect under `default: allow`",
            ),
            (
                "{ default: deny, rules: [{ name: r, when: { headers: { ':path': [/a] } } }] }",
                "listeners[0].authz.rules[0].when.headers.:path",
                "pseudo-headers",
            ),
            (
                "{ default: deny, rules: [{ name: r, when: { headers: { 'x y': [a] } } }] }",
                "listeners[0].authz.rules[0].when.headers[\"x y\"]",
                "invalid header name",
            ),
            (
                "{ default: deny, rules: [{ name: r, when: { headers: { x: [\"a\\nb\"] } } }] }",
                "listeners[0].authz.rules[0].when.headers.x[0]",
                "invalid header value",
            ),
            (
                "{ default: deny, rules: [{ name: r, when: { claims: { 'realm..roles': [a] } } }] }",
                "listeners[0].authz.rules[0].when.claims[\"realm..roles\"]",
                "not a claim name",
            ),
        ];
        for (yaml, place, fragment) in cases {
            let mut cx = Compiler::default();
            cx.compile_authz(&spec(yaml), &at());
            assert!(
                cx.problems
                    .iter()
                    .any(|p| p.path.to_string() == *place && p.message.contains(fragment)),
                "{yaml}: want {place}: {fragment}, got {:#?}",
                cx.problems
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        for yaml in [
            "{ defualt: deny }",
            "{ rules: [{ name: r, form: [] }] }",
            "{ rules: [{ name: r, from: [{ principals: x }] }] }",
            "{ rules: [{ name: r, to: { path: /a } }] }",
            "{ rules: [{ name: r, when: { header: {} } }] }",
            "{ rules: [{ name: r, action: audit }] }",
            "{ rules: [{ action: deny }] }",
        ] {
            assert!(serde_saphyr::from_str::<AuthzSpec>(yaml).is_err(), "{yaml}");
        }
        assert!(
            serde_saphyr::from_str::<PathNormalizationSpec>("{ escaped_slashes: decode }").is_err()
        );
    }

    #[test]
    fn path_normalization_round_trips() {
        let cases = [
            ("{}", PathOptions::default()),
            (
                "{ merge_slashes: false, escaped_slashes: keep }",
                PathOptions {
                    normalize: true,
                    merge_slashes: false,
                    escaped_slashes: EscapedSlashes::Keep,
                },
            ),
            (
                "{ escaped_slashes: reject }",
                PathOptions {
                    escaped_slashes: EscapedSlashes::Reject,
                    ..PathOptions::default()
                },
            ),
        ];
        let mut m = hcm::HttpConnectionManager::default();
        compile_path_options(None, &mut m);
        assert_eq!(path_options_of(&m, "L").unwrap(), PathOptions::default());
        for (yaml, want) in cases {
            let s: PathNormalizationSpec = serde_saphyr::from_str(yaml).unwrap();
            let mut m = hcm::HttpConnectionManager::default();
            compile_path_options(Some(&s), &mut m);
            assert_eq!(path_options_of(&m, "L").unwrap(), want, "{yaml}");
        }
    }
}
