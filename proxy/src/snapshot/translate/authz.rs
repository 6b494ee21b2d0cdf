//! Authorization as Envoy writes it, read into an [`authz::Policy`](Policy): a connection
//! manager's `envoy.filters.http.rbac` HTTP filters, and its path normalisation fields
//! (`normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`) as
//! [`PathOptions`].
//!
//! # The mapping
//!
//! Weft's policy is "a matching deny rule denies; else a matching allow rule allows; else
//! the default". In Envoy a request must pass every RBAC filter of the chain: a `DENY`
//! filter refuses it when one of its policies matches, an `ALLOW` filter refuses it when
//! none matches (so an `ALLOW` filter with no policies refuses everything). Hence:
//!
//! | Weft policy | Envoy HTTP filters (before the router) |
//! |---|---|
//! | deny rules D, `default: allow` | `DENY` {D} |
//! | deny rules D, allow rules A, `default: deny` | `DENY` {D}, then `ALLOW` {A} |
//! | allow rules A, `default: deny` | `ALLOW` {A} |
//! | no rules, `default: deny` | `ALLOW` {} (refuses everything) |
//! | no deny rules, `default: allow` | nothing: no request can be refused |
//! | dry run | the same filters with `shadow_rules` instead of `rules` |
//!
//! Allow rules under `default: allow` cannot change any answer, so they have no Envoy
//! form (the friendly compiler refuses them rather than drop them silently).
//!
//! Read back ([`Translator::rbac_filters`], [`combine`]): every `DENY` filter's policies
//! become deny rules; an `ALLOW` filter's policies become allow rules and make the default
//! deny; with no `ALLOW` filter the default is allow, and a chain that can refuse nothing
//! is no policy at all. The order of the filters does not change any answer (each must
//! pass either way). Refused, because Weft's model cannot say them: two `ALLOW` filters
//! (a request would have to match a policy of each), a filter with both `rules` and
//! `shadow_rules`, enforced and shadow filters in one chain, the `LOG` action.
//!
//! Policy names are the map keys; Weft orders them by name, as Envoy's engine does (it
//! keeps them in a sorted map), and the first matching one in that order is the rule
//! reported. The friendly compiler uses the rule names as keys, so a rule is reported
//! under its own name; which of several matching rules is reported may differ from the
//! file's order, the verdict never does.
//!
//! # Accepted shapes
//!
//! A policy is one rule: (any of its permissions) and (any of its principals). Weft's rule
//! is an all-of of any-of lists (paths, methods, ports, callers, each header and claim),
//! so each side must be one of:
//!
//! - one entry, which is either a *group* or `and_rules` / `and_ids` of groups, at most
//!   one group of each kind of paths, methods, ports or callers (headers and claims may
//!   repeat: they are all-of);
//! - several entries, all leaves of one kind (any-of, like an `or_rules`).
//!
//! A *group* is a leaf or an `or_rules` / `or_ids` of leaves of one kind (headers of one
//! name, claims of one path). Leaves:
//!
//! - permissions: `any: true`; `url_path` with `path.exact` or `path.prefix`;
//!   `uri_template` (a `UriTemplateMatchConfig`, as routes use); `header` `:method` with an exact
//!   value; another `header` with an exact value (`string_match.exact`, or the old
//!   `exact_match`) or `present_match: true`; `destination_port` (the listener's port);
//! - principals: `any: true`; `authenticated` with no `principal_name` (any mTLS peer),
//!   `principal_name.exact` or `principal_name.prefix` (a prefix `spiffe://<td>/` reads
//!   as the trust domain); `header` as above; `metadata` / `sourced_metadata` (`DYNAMIC`)
//!   of filter `envoy.filters.http.jwt_authn` with path `[jwt_payload, <claim>, ...]`
//!   ([`JWT_PAYLOAD_KEY`], then the claim's name and any nested names) and a value of
//!   `string_match.exact`, `list_match.one_of`, `or_match` of these, or
//!   `present_match: true`.
//!
//! Everything else in these protos is refused by name (`requested_server_name`,
//! `not_rule`, `remote_ip`, CEL `condition`, `matcher`, ...). Two liberties, both noted in
//! [`Condition`]: a claim matcher reads a string claim and an array claim alike (whichever
//! of `string_match` and `list_match` was written; the issuer, not the caller, decides a
//! claim's shape), and a repeated header is matched value by value rather than joined
//! with commas.
//!
//! # Path normalisation
//!
//! `normalize_path` absent means on (Weft's default, where Envoy's is off);
//! `merge_slashes` is a plain protobuf bool, so an Envoy-format listener merges only when
//! it says so (the friendly compiler always writes it); `path_with_escaped_slashes_action`
//! `IMPLEMENTATION_SPECIFIC_DEFAULT`, `UNESCAPE_AND_FORWARD` and `UNESCAPE_AND_REDIRECT`
//! unescape (Weft forwards the unescaped path rather than redirecting the client to it),
//! `KEEP_UNCHANGED` keeps, `REJECT_REQUEST` answers 400. `path_normalization_options`
//! (a different path for matching and forwarding) is refused: Weft forwards the path it
//! matched.

use std::sync::Arc;

use envoy_types::pb::envoy::config::rbac::v3::{
    self as pb, MetadataSource, permission, principal, rbac::Action as PbAction,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, PathMatcher, StringMatcher, ValueMatcher, list_matcher,
    metadata_matcher::path_segment, path_matcher, string_matcher, value_matcher,
};
use http::Method;
use prost::Name;

use super::super::template::Template;
use super::{Translator, names, parse_header_name, parse_method};
use crate::authz::{
    Action, Condition, EscapedSlashes, Operation, PathMatch, PathOptions, Policy, PrincipalMatch,
    Rule,
};
use crate::config::Problem;

/// The RBAC HTTP filter.
pub(crate) const RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The JWT authentication HTTP filter, whose dynamic metadata holds verified claims.
pub(crate) const JWT_AUTHN_FILTER: &str = "envoy.filters.http.jwt_authn";
/// The key under which `jwt_authn` puts a verified token's payload in its dynamic
/// metadata (its providers' `payload_in_metadata`); claim matchers read below it.
pub const JWT_PAYLOAD_KEY: &str = "jwt_payload";

/// One RBAC filter's rules, as [`Translator::rbac_filter`] reads them; [`combine`] makes
/// a listener's policy of all of them.
#[derive(Clone, Debug)]
pub(crate) struct RbacPart {
    /// Where the filter's config is, for problems found when combining.
    place: String,
    /// `DENY` or `ALLOW`.
    action: Action,
    /// Read from `shadow_rules`.
    shadow: bool,
    /// Its policies, by name.
    rules: Vec<Rule>,
}

/// Whether an HTTP filter is an RBAC filter (by name or by config type).
pub(crate) fn is_rbac(f: &hcm::HttpFilter) -> bool {
    let typed = match &f.config_type {
        Some(hcm::http_filter::ConfigType::TypedConfig(a)) => a.type_url.rsplit('/').next(),
        _ => None,
    };
    f.name == RBAC_FILTER || typed == Some(RbacFilter::full_name().as_str())
}

/// A listener's policy from its RBAC filters' parts, in filter order (see the module
/// documentation). `Ok(None)`: nothing can be refused.
pub(crate) fn combine(parts: Vec<RbacPart>) -> Result<Option<Policy>, Problem> {
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    let dry_run = first.shadow;
    if let Some(p) = parts.iter().find(|p| p.shadow != dry_run) {
        return Err(Problem::new(
            p.place.clone(),
            "enforced rules and shadow_rules in one listener are not supported: a listener's policy is enforced or a dry run as a whole",
        ));
    }
    if let Some(second) = parts.iter().filter(|p| p.action == Action::Allow).nth(1) {
        return Err(Problem::new(
            second.place.clone(),
            "a second ALLOW RBAC filter is not supported (a request would have to match a policy of each); put the policies in one filter",
        ));
    }
    let default = if parts.iter().any(|p| p.action == Action::Allow) {
        Action::Deny
    } else {
        Action::Allow
    };
    let (deny, allow): (Vec<RbacPart>, Vec<RbacPart>) =
        parts.into_iter().partition(|p| p.action == Action::Deny);
    let rules: Vec<Rule> = deny
        .into_iter()
        .chain(allow)
        .flat_map(|p| p.rules)
        .collect();
    if default == Action::Allow && rules.is_empty() {
        return Ok(None);
    }
    Ok(Some(Policy {
        default,
        rules,
        dry_run,
    }))
}

/// The attributes of one group of a rule: a kind of attribute with its any-of values.
enum Facet {
    /// Matches every request.
    Any,
    Paths(Vec<PathMatch>),
    Methods(Vec<Method>),
    Ports(Vec<u16>),
    Ids(Vec<PrincipalMatch>),
    Cond(Condition),
}

impl Facet {
    /// Several groups, any of which must match, as one; `None` when their kinds differ.
    fn any_of(all: Vec<Facet>) -> Option<Facet> {
        let mut all = all.into_iter();
        let mut acc = all.next()?;
        for f in all {
            acc = match (acc, f) {
                (Facet::Any, _) | (_, Facet::Any) => Facet::Any,
                (Facet::Paths(mut a), Facet::Paths(b)) => {
                    a.extend(b);
                    Facet::Paths(a)
                }
                (Facet::Methods(mut a), Facet::Methods(b)) => {
                    a.extend(b);
                    Facet::Methods(a)
                }
                (Facet::Ports(mut a), Facet::Ports(b)) => {
                    a.extend(b);
                    Facet::Ports(a)
                }
                (Facet::Ids(mut a), Facet::Ids(b)) => {
                    a.extend(b);
                    Facet::Ids(a)
                }
                (Facet::Cond(a), Facet::Cond(b)) => Facet::Cond(either(a, b)?),
                _ => return None,
            };
        }
        Some(acc)
    }
}

/// Two conditions on the same header or claim, either of which may hold, as one.
fn either(a: Condition, b: Condition) -> Option<Condition> {
    // "Present" (no values) or anything is "present".
    let merge = |mut a: Vec<String>, b: Vec<String>| {
        if a.is_empty() || b.is_empty() {
            return Vec::new();
        }
        for v in b {
            if !a.contains(&v) {
                a.push(v);
            }
        }
        a
    };
    match (a, b) {
        (Condition::Header { name, values: a }, Condition::Header { name: n, values: b })
            if name == n =>
        {
            Some(Condition::Header {
                name,
                values: merge(a, b),
            })
        }
        (Condition::Claim { path, values: a }, Condition::Claim { path: p, values: b })
            if path == p =>
        {
            Some(Condition::Claim {
                path,
                values: merge(a, b),
            })
        }
        _ => None,
    }
}

/// A rule's groups as they are gathered from its permissions and principals (all-of).
#[derive(Default)]
struct Gathered {
    paths: Option<Vec<PathMatch>>,
    methods: Option<Vec<Method>>,
    ports: Option<Vec<u16>>,
    ids: Option<Vec<PrincipalMatch>>,
    conditions: Vec<Condition>,
}

impl Gathered {
    /// Adds one all-of member; `Err` names the kind when it is there already (two lists
    /// of paths that must both match are not something a Weft rule can hold).
    fn add(&mut self, f: Facet) -> Result<(), &'static str> {
        fn once<T>(slot: &mut Option<T>, v: T, kind: &'static str) -> Result<(), &'static str> {
            if slot.is_some() {
                return Err(kind);
            }
            *slot = Some(v);
            Ok(())
        }
        match f {
            Facet::Any => Ok(()),
            Facet::Paths(v) => once(&mut self.paths, v, "paths"),
            Facet::Methods(v) => once(&mut self.methods, v, "methods"),
            Facet::Ports(v) => once(&mut self.ports, v, "ports"),
            Facet::Ids(v) => once(&mut self.ids, v, "principals"),
            Facet::Cond(c) => {
                self.conditions.push(c);
                Ok(())
            }
        }
    }
}

impl Translator {
    /// A connection manager's RBAC filters as its policy (`None`: no filter that can
    /// refuse a request). Other filters are left alone.
    pub(super) fn rbac_filters(
        &mut self,
        filters: &[hcm::HttpFilter],
        place: &str,
    ) -> Option<Policy> {
        let mut parts = Vec::new();
        let mut router_seen = false;
        for (i, f) in filters.iter().enumerate() {
            let fplace = format!("{place}.http_filters[{i}]");
            let router_type = match &f.config_type {
                Some(hcm::http_filter::ConfigType::TypedConfig(a)) => a
                    .type_url
                    .ends_with("envoy.extensions.filters.http.router.v3.Router"),
                _ => false,
            };
            if f.name == names::ROUTER || router_type {
                router_seen = true;
            }
            if !is_rbac(f) {
                continue;
            }
            if router_seen {
                self.problem(&fplace, "an RBAC filter after the router would never run");
            }
            if f.disabled {
                self.problem(
                    format!("{fplace}.disabled"),
                    "a disabled RBAC filter (enabled per route) is not supported",
                );
                continue;
            }
            let Some(hcm::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                self.problem(&fplace, "typed_config is required");
                continue;
            };
            let cplace = format!("{fplace}.typed_config");
            let Some(cfg) = self.unpack::<RbacFilter>(any, &cplace) else {
                continue;
            };
            parts.extend(self.rbac_filter(&cfg, &cplace));
        }
        self.rbac_policy(parts)
    }

    /// One RBAC filter's config; `None` when it has no rules (Envoy then lets every
    /// request through) or they could not be read (problems are recorded).
    pub(super) fn rbac_filter(&mut self, cfg: &RbacFilter, place: &str) -> Option<RbacPart> {
        // `rules_stat_prefix`, `shadow_rules_stat_prefix` and `track_per_rule_stats` only
        // name Envoy statistics; Weft counts decisions in its own metrics.
        if cfg.matcher.is_some() {
            self.problem(format!("{place}.matcher"), "not supported; use rules");
        }
        if cfg.shadow_matcher.is_some() {
            self.problem(
                format!("{place}.shadow_matcher"),
                "not supported; use shadow_rules",
            );
        }
        let (rules, shadow, field) = match (&cfg.rules, &cfg.shadow_rules) {
            (Some(_), Some(_)) => {
                self.problem(
                    format!("{place}.shadow_rules"),
                    "rules and shadow_rules in one filter are not supported: a policy is enforced or a dry run as a whole",
                );
                return None;
            }
            (Some(r), None) => (r, false, "rules"),
            (None, Some(r)) => (r, true, "shadow_rules"),
            (None, None) => return None,
        };
        let rplace = format!("{place}.{field}");
        let action = match PbAction::try_from(rules.action) {
            Ok(PbAction::Allow) => Action::Allow,
            Ok(PbAction::Deny) => Action::Deny,
            Ok(PbAction::Log) | Err(_) => {
                self.problem(
                    format!("{rplace}.action"),
                    "only ALLOW and DENY are supported",
                );
                return None;
            }
        };
        if rules.audit_logging_options.is_some() {
            self.problem(
                format!("{rplace}.audit_logging_options"),
                "not supported; decisions are in the access log (authz_decision, authz_rule)",
            );
        }
        let mut policies: Vec<(&String, &pb::Policy)> = rules.policies.iter().collect();
        policies.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (name, p) in policies {
            let pplace = format!("{rplace}.policies[{name:?}]");
            if let Some(rule) = self.rbac_rule(name, p, action, &pplace) {
                out.push(rule);
            }
        }
        Some(RbacPart {
            place: place.to_owned(),
            action,
            shadow,
            rules: out,
        })
    }

    /// [`combine`], with its problem recorded.
    pub(super) fn rbac_policy(&mut self, parts: Vec<RbacPart>) -> Option<Policy> {
        combine(parts).unwrap_or_else(|p| {
            self.problems.push(p);
            None
        })
    }

    /// The connection manager's path normalisation (see the module documentation).
    pub(super) fn path_options(
        &mut self,
        m: &hcm::HttpConnectionManager,
        place: &str,
    ) -> PathOptions {
        use hcm::http_connection_manager::PathWithEscapedSlashesAction as A;
        if m.path_normalization_options.is_some() {
            self.problem(
                format!("{place}.path_normalization_options"),
                "not supported: Weft forwards the path it matches",
            );
        }
        let escaped_slashes = match A::try_from(m.path_with_escaped_slashes_action) {
            Ok(A::ImplementationSpecificDefault | A::UnescapeAndForward) => {
                EscapedSlashes::Unescape
            }
            // Forwarded unescaped instead of redirecting the client to that path.
            Ok(A::UnescapeAndRedirect) => EscapedSlashes::Unescape,
            Ok(A::KeepUnchanged) => EscapedSlashes::Keep,
            Ok(A::RejectRequest) => EscapedSlashes::Reject,
            Err(_) => {
                self.problem(
                    format!("{place}.path_with_escaped_slashes_action"),
                    "unknown action",
                );
                EscapedSlashes::default()
            }
        };
        PathOptions {
            normalize: m.normalize_path.is_none_or(|b| b.value),
            merge_slashes: m.merge_slashes,
            escaped_slashes,
        }
    }

    fn rbac_rule(
        &mut self,
        name: &str,
        p: &pb::Policy,
        action: Action,
        place: &str,
    ) -> Option<Rule> {
        let unsupported = [
            (p.condition.is_some(), "condition"),
            (p.checked_condition.is_some(), "checked_condition"),
            (p.cel_config.is_some(), "cel_config"),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported (CEL)");
            }
        }
        if name.is_empty() {
            self.problem(place, "a policy name is required");
        }
        let mut g = Gathered::default();
        let permissions = self.permissions(&p.permissions, &mut g, &format!("{place}.permissions"));
        let principals = self.principals(&p.principals, &mut g, &format!("{place}.principals"));
        if !(permissions && principals) || name.is_empty() {
            return None;
        }
        Some(Rule {
            name: Arc::from(name),
            action,
            principals: g.ids.unwrap_or_default(),
            operation: Operation {
                paths: g.paths.unwrap_or_default(),
                methods: g.methods.unwrap_or_default(),
                ports: g.ports.unwrap_or_default(),
            },
            conditions: g.conditions,
        })
    }

    /// A policy's permissions into `g`; false when something could not be read.
    fn permissions(&mut self, list: &[pb::Permission], g: &mut Gathered, place: &str) -> bool {
        match list {
            [] => {
                self.problem(
                    place,
                    "at least one permission is required (any: true for all)",
                );
                false
            }
            [one] => match &one.rule {
                Some(permission::Rule::AndRules(set)) => {
                    let aplace = format!("{place}[0].and_rules.rules");
                    let groups = set
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (self.permission_group(r, &format!("{aplace}[{i}]")), i))
                        .collect();
                    self.all_of(groups, g, &aplace)
                }
                _ => {
                    let f = self.permission_group(one, &format!("{place}[0]"));
                    self.all_of(vec![(f, 0)], g, place)
                }
            },
            many => {
                let leaves: Vec<Option<Facet>> = many
                    .iter()
                    .enumerate()
                    .map(|(i, r)| self.permission_leaf(r, &format!("{place}[{i}]")))
                    .collect();
                let f = self.any_of(leaves, place);
                self.all_of(vec![(f, 0)], g, place)
            }
        }
    }

    /// A policy's principals into `g`; false when something could not be read.
    fn principals(&mut self, list: &[pb::Principal], g: &mut Gathered, place: &str) -> bool {
        match list {
            [] => {
                self.problem(
                    place,
                    "at least one principal is required (any: true for anyone)",
                );
                false
            }
            [one] => match &one.identifier {
                Some(principal::Identifier::AndIds(set)) => {
                    let aplace = format!("{place}[0].and_ids.ids");
                    let groups = set
                        .ids
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (self.principal_group(p, &format!("{aplace}[{i}]")), i))
                        .collect();
                    self.all_of(groups, g, &aplace)
                }
                _ => {
                    let f = self.principal_group(one, &format!("{place}[0]"));
                    self.all_of(vec![(f, 0)], g, place)
                }
            },
            many => {
                let leaves: Vec<Option<Facet>> = many
                    .iter()
                    .enumerate()
                    .map(|(i, p)| self.principal_leaf(p, &format!("{place}[{i}]")))
                    .collect();
                let f = self.any_of(leaves, place);
                self.all_of(vec![(f, 0)], g, place)
            }
        }
    }

    /// Groups that must all match, each with its index in `place`.
    fn all_of(
        &mut self,
        groups: Vec<(Option<Facet>, usize)>,
        g: &mut Gathered,
        place: &str,
    ) -> bool {
        if groups.is_empty() {
            self.problem(place, "must not be empty");
            return false;
        }
        let mut ok = true;
        for (f, i) in groups {
            let Some(f) = f else {
                ok = false;
                continue;
            };
            if let Err(kind) = g.add(f) {
                self.problem(
                    format!("{place}[{i}]"),
                    format!("a second group of {kind} that must also match is not supported: a rule has one any-of list of {kind}"),
                );
                ok = false;
            }
        }
        ok
    }

    /// Leaves any of which may match, as one group.
    fn any_of(&mut self, leaves: Vec<Option<Facet>>, place: &str) -> Option<Facet> {
        if leaves.is_empty() {
            self.problem(place, "must not be empty");
            return None;
        }
        let leaves: Option<Vec<Facet>> = leaves.into_iter().collect();
        let f = Facet::any_of(leaves?);
        if f.is_none() {
            self.problem(
                place,
                "alternatives of different kinds (paths or methods, a header or a claim, ...) are not supported: each alternative list must be of one kind, and a rule needs all of its lists to match",
            );
        }
        f
    }

    fn permission_group(&mut self, p: &pb::Permission, place: &str) -> Option<Facet> {
        match &p.rule {
            Some(permission::Rule::OrRules(set)) => {
                let oplace = format!("{place}.or_rules.rules");
                let leaves = set
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| self.permission_leaf(r, &format!("{oplace}[{i}]")))
                    .collect();
                self.any_of(leaves, &oplace)
            }
            _ => self.permission_leaf(p, place),
        }
    }

    #[allow(deprecated)] // `metadata` is deprecated but still named when refused
    fn permission_leaf(&mut self, p: &pb::Permission, place: &str) -> Option<Facet> {
        use permission::Rule as R;
        let refused = match &p.rule {
            Some(R::Any(true)) => return Some(Facet::Any),
            Some(R::UrlPath(m)) => return self.url_path(m, &format!("{place}.url_path")),
            Some(R::UriTemplate(ext)) => {
                let tplace = format!("{place}.uri_template.typed_config");
                let any = ext.typed_config.as_ref().or_else(|| {
                    self.problem(&tplace, "is required");
                    None
                })?;
                let cfg = self.unpack::<UriTemplateMatchConfig>(any, &tplace)?;
                let t = self.ok(Template::parse(&cfg.path_template), &tplace)?;
                return Some(Facet::Paths(vec![PathMatch::Template(t)]));
            }
            Some(R::Header(h)) => return self.header(h, &format!("{place}.header")),
            Some(R::DestinationPort(port)) => {
                return match u16::try_from(*port) {
                    Ok(p) if p > 0 => Some(Facet::Ports(vec![p])),
                    _ => {
                        self.problem(format!("{place}.destination_port"), "must be 1-65535");
                        None
                    }
                };
            }
            Some(R::Any(false)) => ("any", "must be true"),
            Some(R::AndRules(_)) => ("and_rules", NESTED),
            Some(R::OrRules(_)) => ("or_rules", NESTED),
            Some(R::DestinationIp(_)) => ("destination_ip", "not supported"),
            Some(R::DestinationPortRange(_)) => ("destination_port_range", "not supported"),
            Some(R::Metadata(_)) => ("metadata", "not supported in permissions"),
            Some(R::NotRule(_)) => ("not_rule", "not supported"),
            Some(R::RequestedServerName(_)) => ("requested_server_name", "not supported"),
            Some(R::Matcher(_)) => ("matcher", "not supported"),
            Some(R::SourcedMetadata(_)) => ("sourced_metadata", "not supported in permissions"),
            None => {
                self.problem(place, "a rule is required");
                return None;
            }
        };
        self.problem(format!("{place}.{}", refused.0), refused.1);
        None
    }

    fn principal_group(&mut self, p: &pb::Principal, place: &str) -> Option<Facet> {
        match &p.identifier {
            Some(principal::Identifier::OrIds(set)) => {
                let oplace = format!("{place}.or_ids.ids");
                let leaves = set
                    .ids
                    .iter()
                    .enumerate()
                    .map(|(i, p)| self.principal_leaf(p, &format!("{oplace}[{i}]")))
                    .collect();
                self.any_of(leaves, &oplace)
            }
            _ => self.principal_leaf(p, place),
        }
    }

    #[allow(deprecated)] // `metadata` and `source_ip` are deprecated but still read or named
    fn principal_leaf(&mut self, p: &pb::Principal, place: &str) -> Option<Facet> {
        use principal::Identifier as I;
        let refused = match &p.identifier {
            Some(I::Any(true)) => return Some(Facet::Ids(vec![PrincipalMatch::Any])),
            Some(I::Authenticated(a)) => {
                let id = match &a.principal_name {
                    None => PrincipalMatch::Authenticated,
                    Some(s) => {
                        let nplace = format!("{place}.authenticated.principal_name");
                        match self.exact_or_prefix(s, &nplace)? {
                            (true, v) => PrincipalMatch::Exact(v.to_owned()),
                            (false, v) => match trust_domain_of(v) {
                                Some(td) => PrincipalMatch::TrustDomain(td.to_owned()),
                                None => PrincipalMatch::Prefix(v.to_owned()),
                            },
                        }
                    }
                };
                return Some(Facet::Ids(vec![id]));
            }
            Some(I::Header(h)) => {
                let hplace = format!("{place}.header");
                let f = self.header(h, &hplace)?;
                if let Facet::Methods(_) = f {
                    self.problem(hplace, "match :method in permissions");
                    return None;
                }
                return Some(f);
            }
            Some(I::Metadata(m)) => return self.claim(m, &format!("{place}.metadata")),
            Some(I::SourcedMetadata(s)) => {
                let splace = format!("{place}.sourced_metadata");
                if s.metadata_source != MetadataSource::Dynamic as i32 {
                    self.problem(
                        format!("{splace}.metadata_source"),
                        "only DYNAMIC (the request's metadata) is supported",
                    );
                    return None;
                }
                let Some(m) = &s.metadata_matcher else {
                    self.problem(format!("{splace}.metadata_matcher"), "is required");
                    return None;
                };
                return self.claim(m, &format!("{splace}.metadata_matcher"));
            }
            Some(I::Any(false)) => ("any", "must be true"),
            Some(I::AndIds(_)) => ("and_ids", NESTED),
            Some(I::OrIds(_)) => ("or_ids", NESTED),
            Some(I::SourceIp(_)) => ("source_ip", "not supported"),
            Some(I::DirectRemoteIp(_)) => ("direct_remote_ip", "not supported"),
            Some(I::RemoteIp(_)) => ("remote_ip", "not supported"),
            Some(I::UrlPath(_)) => ("url_path", "not supported in principals; use a permission"),
            Some(I::FilterState(_)) => ("filter_state", "not supported"),
            Some(I::NotId(_)) => ("not_id", "not supported"),
            Some(I::Custom(_)) => ("custom", "not supported"),
            None => {
                self.problem(place, "an identifier is required");
                return None;
            }
        };
        self.problem(format!("{place}.{}", refused.0), refused.1);
        None
    }

    fn url_path(&mut self, m: &PathMatcher, place: &str) -> Option<Facet> {
        let Some(path_matcher::Rule::Path(s)) = &m.rule else {
            self.problem(format!("{place}.path"), "is required");
            return None;
        };
        let (exact, v) = self.exact_or_prefix(s, &format!("{place}.path"))?;
        let m = if exact {
            PathMatch::Exact(v.to_owned())
        } else {
            PathMatch::Prefix(v.to_owned())
        };
        Some(Facet::Paths(vec![m]))
    }

    /// A header matcher: `:method` (exact) as methods, another header (exact or
    /// present) as a condition.
    #[allow(deprecated)] // `exact_match` is deprecated but still written by older control planes
    fn header(&mut self, h: &HeaderMatcher, place: &str) -> Option<Facet> {
        use header_matcher::HeaderMatchSpecifier as S;
        if h.invert_match {
            self.problem(format!("{place}.invert_match"), "not supported");
        }
        if h.treat_missing_header_as_empty {
            self.problem(
                format!("{place}.treat_missing_header_as_empty"),
                "not supported",
            );
        }
        // `None`: present.
        let value: Option<&str> = match &h.header_match_specifier {
            Some(S::StringMatch(s)) => Some(self.exact(s, &format!("{place}.string_match"))?),
            Some(S::ExactMatch(v)) => Some(v.as_str()),
            Some(S::PresentMatch(true)) => None,
            _ => {
                self.problem(
                    place,
                    "only string_match.exact (or exact_match) and present_match: true are supported",
                );
                return None;
            }
        };
        if h.invert_match || h.treat_missing_header_as_empty {
            return None;
        }
        let name = h.name.to_ascii_lowercase();
        if name == ":method" {
            let Some(v) = value else {
                self.problem(place, "a :method matcher needs an exact value");
                return None;
            };
            let m = self.ok(parse_method(v), &format!("{place}.string_match"))?;
            return Some(Facet::Methods(vec![m]));
        }
        if name.starts_with(':') {
            self.problem(
                format!("{place}.name"),
                format!("{:?}: of the pseudo-headers only :method is supported (use url_path for the path)", h.name),
            );
            return None;
        }
        let name = self.ok(parse_header_name(&name), &format!("{place}.name"))?;
        Some(Facet::Cond(Condition::Header {
            name,
            values: value.map(str::to_owned).into_iter().collect(),
        }))
    }

    /// A metadata matcher on a verified JWT claim.
    fn claim(&mut self, m: &MetadataMatcher, place: &str) -> Option<Facet> {
        let mut ok = true;
        if m.filter != JWT_AUTHN_FILTER {
            self.problem(
                format!("{place}.filter"),
                format!("only {JWT_AUTHN_FILTER:?} metadata (verified JWT claims) is supported"),
            );
            ok = false;
        }
        if m.invert {
            self.problem(format!("{place}.invert"), "not supported");
            ok = false;
        }
        let keys: Vec<&str> = m
            .path
            .iter()
            .filter_map(|s| {
                s.segment
                    .as_ref()
                    .map(|path_segment::Segment::Key(k)| k.as_str())
            })
            .collect();
        let claim = match keys.split_first() {
            Some((&first, rest))
                if first == JWT_PAYLOAD_KEY && !rest.is_empty() && keys.len() == m.path.len() =>
            {
                rest.iter().map(|k| (*k).to_owned()).collect()
            }
            _ => {
                self.problem(
                    format!("{place}.path"),
                    format!("must be [{JWT_PAYLOAD_KEY:?}, <claim>, ...]: the key jwt_authn puts the payload under, then the claim's name (and nested names)"),
                );
                ok = false;
                Vec::new()
            }
        };
        let vplace = format!("{place}.value");
        let values = match &m.value {
            Some(ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::PresentMatch(true)),
            }) => Some(Vec::new()),
            Some(v) => {
                let mut values = Vec::new();
                self.claim_values(v, &vplace, &mut values).then_some(values)
            }
            None => {
                self.problem(&vplace, "is required");
                None
            }
        };
        let values = values?;
        ok.then_some(Facet::Cond(Condition::Claim {
            path: claim,
            values,
        }))
    }

    /// The strings a claim value matcher accepts, into `out`; false on a problem.
    fn claim_values(&mut self, v: &ValueMatcher, place: &str, out: &mut Vec<String>) -> bool {
        use value_matcher::MatchPattern as M;
        match &v.match_pattern {
            Some(M::StringMatch(s)) => match self.exact(s, &format!("{place}.string_match")) {
                Some(e) => {
                    if !out.iter().any(|o| o == e) {
                        out.push(e.to_owned());
                    }
                    true
                }
                None => false,
            },
            Some(M::ListMatch(l)) => match &l.match_pattern {
                Some(list_matcher::MatchPattern::OneOf(inner)) => {
                    self.claim_values(inner, &format!("{place}.list_match.one_of"), out)
                }
                None => {
                    self.problem(format!("{place}.list_match"), "one_of is required");
                    false
                }
            },
            Some(M::OrMatch(o)) if !o.value_matchers.is_empty() => {
                let mut ok = true;
                for (i, inner) in o.value_matchers.iter().enumerate() {
                    ok &= self.claim_values(
                        inner,
                        &format!("{place}.or_match.value_matchers[{i}]"),
                        out,
                    );
                }
                ok
            }
            _ => {
                self.problem(
                    place,
                    "only string_match.exact, list_match.one_of and or_match of them (or present_match: true alone) are supported",
                );
                false
            }
        }
    }

    /// An exact, case-sensitive string matcher's value.
    fn exact<'a>(&mut self, s: &'a StringMatcher, place: &str) -> Option<&'a str> {
        match self.exact_or_prefix(s, place)? {
            (true, v) => Some(v),
            (false, _) => {
                self.problem(format!("{place}.prefix"), "only exact is supported here");
                None
            }
        }
    }

    /// A case-sensitive exact (`true`) or prefix (`false`) string matcher.
    fn exact_or_prefix<'a>(
        &mut self,
        s: &'a StringMatcher,
        place: &str,
    ) -> Option<(bool, &'a str)> {
        if s.ignore_case {
            self.problem(format!("{place}.ignore_case"), "not supported");
            return None;
        }
        match &s.match_pattern {
            Some(string_matcher::MatchPattern::Exact(v)) => Some((true, v.as_str())),
            Some(string_matcher::MatchPattern::Prefix(v)) => Some((false, v.as_str())),
            _ => {
                self.problem(place, "only exact and prefix are supported");
                None
            }
        }
    }
}

/// Why a nested `and_*` / `or_*` is refused.
const NESTED: &str = "nested here: not supported (a rule is and_* of groups, a group is or_* of leaves; see the accepted shapes)";

/// `example.org` of a principal prefix `spiffe://example.org/`.
fn trust_domain_of(prefix: &str) -> Option<&str> {
    let td = prefix.strip_prefix("spiffe://")?.strip_suffix('/')?;
    (!td.is_empty() && !td.contains('/')).then_some(td)
}

/// The policy of a list of HTTP filters, or every problem found (tests of other modules
/// read compiled filters back with this).
#[cfg(test)]
pub(crate) fn policy_of_filters(
    filters: &[hcm::HttpFilter],
    place: &str,
) -> Result<Option<Policy>, Vec<Problem>> {
    let mut t = Translator::default();
    let policy = t.rbac_filters(filters, place);
    if t.problems.is_empty() {
        Ok(policy)
    } else {
        Err(t.problems)
    }
}

/// A connection manager's path options, or every problem found (for tests of other
/// modules).
#[cfg(test)]
pub(crate) fn path_options_of(
    m: &hcm::HttpConnectionManager,
    place: &str,
) -> Result<PathOptions, Vec<Problem>> {
    let mut t = Translator::default();
    let opts = t.path_options(m, place);
    if t.problems.is_empty() {
        Ok(opts)
    } else {
        Err(t.problems)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        ListMatcher, OrMatcher, RegexMatcher, metadata_matcher,
    };
    use envoy_types::pb::google::api::expr::v1alpha1::Expr;
    use http::{HeaderMap, HeaderValue};
    use serde_json::json;

    use super::*;
    use crate::authz::{Decision, Request, Verdict, decide};
    use crate::config::resources::pack;

    const GATEWAY: &str = "spiffe://example.org/ns/shop/sa/gateway";
    const PLACE: &str = "L";

    // ---- builders ----

    fn perm(rule: permission::Rule) -> pb::Permission {
        pb::Permission { rule: Some(rule) }
    }

    fn princ(id: principal::Identifier) -> pb::Principal {
        pb::Principal {
            identifier: Some(id),
        }
    }

    fn sm(pattern: string_matcher::MatchPattern) -> StringMatcher {
        StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        }
    }

    fn exact(v: &str) -> StringMatcher {
        sm(string_matcher::MatchPattern::Exact(v.to_owned()))
    }

    fn prefix(v: &str) -> StringMatcher {
        sm(string_matcher::MatchPattern::Prefix(v.to_owned()))
    }

    fn url(s: StringMatcher) -> pb::Permission {
        perm(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(s)),
        }))
    }

    fn template(t: &str) -> pb::Permission {
        perm(permission::Rule::UriTemplate(TypedExtensionConfig {
            name: names::URI_TEMPLATE_MATCHER.to_owned(),
            typed_config: Some(pack(&UriTemplateMatchConfig {
                path_template: t.to_owned(),
            })),
        }))
    }

    fn header_matcher(name: &str, value: Option<&str>) -> HeaderMatcher {
        HeaderMatcher {
            name: name.to_owned(),
            header_match_specifier: Some(match value {
                Some(v) => header_matcher::HeaderMatchSpecifier::StringMatch(exact(v)),
                None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
            }),
            ..Default::default()
        }
    }

    fn method(m: &str) -> pb::Permission {
        perm(permission::Rule::Header(header_matcher(":method", Some(m))))
    }

    fn port(p: u32) -> pb::Permission {
        perm(permission::Rule::DestinationPort(p))
    }

    fn and_rules(rules: Vec<pb::Permission>) -> pb::Permission {
        perm(permission::Rule::AndRules(permission::Set { rules }))
    }

    fn or_rules(rules: Vec<pb::Permission>) -> pb::Permission {
        perm(permission::Rule::OrRules(permission::Set { rules }))
    }

    fn any_perm() -> pb::Permission {
        perm(permission::Rule::Any(true))
    }

    fn anyone() -> pb::Principal {
        princ(principal::Identifier::Any(true))
    }

    fn peer(name: Option<StringMatcher>) -> pb::Principal {
        princ(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: name,
            },
        ))
    }

    fn header_id(name: &str, value: Option<&str>) -> pb::Principal {
        princ(principal::Identifier::Header(header_matcher(name, value)))
    }

    fn and_ids(ids: Vec<pb::Principal>) -> pb::Principal {
        princ(principal::Identifier::AndIds(principal::Set { ids }))
    }

    fn or_ids(ids: Vec<pb::Principal>) -> pb::Principal {
        princ(principal::Identifier::OrIds(principal::Set { ids }))
    }

    fn string_value(v: &str) -> ValueMatcher {
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(exact(v))),
        }
    }

    fn metadata(filter: &str, path: &[&str], value: ValueMatcher) -> MetadataMatcher {
        MetadataMatcher {
            filter: filter.to_owned(),
            path: path
                .iter()
                .map(|k| metadata_matcher::PathSegment {
                    segment: Some(path_segment::Segment::Key((*k).to_owned())),
                })
                .collect(),
            value: Some(value),
            invert: false,
        }
    }

    fn claim_id(path: &[&str], value: ValueMatcher) -> pb::Principal {
        let mut full = vec![JWT_PAYLOAD_KEY];
        full.extend_from_slice(path);
        princ(principal::Identifier::SourcedMetadata(
            pb::SourcedMetadata {
                metadata_matcher: Some(metadata(JWT_AUTHN_FILTER, &full, value)),
                metadata_source: MetadataSource::Dynamic as i32,
            },
        ))
    }

    fn policy(permissions: Vec<pb::Permission>, principals: Vec<pb::Principal>) -> pb::Policy {
        pb::Policy {
            permissions,
            principals,
            ..Default::default()
        }
    }

    fn rbac(action: PbAction, policies: Vec<(&str, pb::Policy)>) -> pb::Rbac {
        pb::Rbac {
            action: action as i32,
            policies: policies
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            audit_logging_options: None,
        }
    }

    fn filter_of(cfg: RbacFilter) -> hcm::HttpFilter {
        hcm::HttpFilter {
            name: RBAC_FILTER.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(&cfg))),
            ..Default::default()
        }
    }

    fn enforced(action: PbAction, policies: Vec<(&str, pb::Policy)>) -> hcm::HttpFilter {
        filter_of(RbacFilter {
            rules: Some(rbac(action, policies)),
            ..Default::default()
        })
    }

    fn shadow(action: PbAction, policies: Vec<(&str, pb::Policy)>) -> hcm::HttpFilter {
        filter_of(RbacFilter {
            shadow_rules: Some(rbac(action, policies)),
            ..Default::default()
        })
    }

    fn read(filters: &[hcm::HttpFilter]) -> Option<Policy> {
        match policy_of_filters(filters, PLACE) {
            Ok(p) => p,
            Err(problems) => panic!("{problems:#?}"),
        }
    }

    fn problems_of(filters: &[hcm::HttpFilter]) -> Vec<Problem> {
        match policy_of_filters(filters, PLACE) {
            Ok(p) => panic!("accepted: {p:#?}"),
            Err(problems) => problems,
        }
    }

    fn names_of(p: &Policy) -> Vec<(&str, Action)> {
        p.rules.iter().map(|r| (&*r.name, r.action)).collect()
    }

    fn ask(
        p: &Policy,
        peer: Option<&str>,
        m: &str,
        path: &str,
        port: u16,
        headers: &[(&str, &str)],
        claims: Option<serde_json::Value>,
    ) -> Decision {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let claims = claims.map(|c| match c {
            serde_json::Value::Object(m) => m,
            _ => panic!("claims must be an object"),
        });
        decide(
            p,
            &Request {
                peer,
                path,
                method: &Method::from_bytes(m.as_bytes()).unwrap(),
                port,
                headers: &map,
                claims: claims.as_ref(),
            },
        )
    }

    // ---- tests ----

    #[test]
    fn envoy_rbac_filters_read_as_one_policy() {
        let filters = vec![
            enforced(
                PbAction::Deny,
                vec![("no-admin", policy(vec![url(prefix("/admin/"))], vec![anyone()]))],
            ),
            enforced(
                PbAction::Allow,
                vec![
                    (
                        "b-gateway",
                        policy(
                            vec![and_rules(vec![
                                or_rules(vec![url(exact("/cart/addItem")), template("/users/{id}")]),
                                or_rules(vec![method("GET"), method("POST")]),
                                port(16006),
                            ])],
                            vec![peer(Some(exact(GATEWAY)))],
                        ),
                    ),
                    (
                        "a-trust-domain",
                        policy(vec![any_perm()], vec![peer(Some(prefix("spiffe://other.org/")))]),
                    ),
                    (
                        "c-tenant",
                        policy(
                            vec![url(prefix("/tenant/"))],
                            vec![and_ids(vec![
                                or_ids(vec![peer(None), peer(Some(prefix("spiffe://x.org/ns/")))]),
                                or_ids(vec![
                                    header_id("X-Tenant", Some("blue")),
                                    header_id("x-tenant", Some("green")),
                                ]),
                                claim_id(
                                    &["scope"],
                                    ValueMatcher {
                                        match_pattern: Some(value_matcher::MatchPattern::OrMatch(
                                            OrMatcher {
                                                value_matchers: vec![
                                                    string_value("cart:write"),
                                                    ValueMatcher {
                                                        match_pattern: Some(
                                                            value_matcher::MatchPattern::ListMatch(
                                                                Box::new(ListMatcher {
                                                                    match_pattern: Some(
                                                                        list_matcher::MatchPattern::OneOf(
                                                                            Box::new(string_value("cart:write")),
                                                                        ),
                                                                    ),
                                                                }),
                                                            ),
                                                        ),
                                                    },
                                                ],
                                            },
                                        )),
                                    },
                                ),
                            ])],
                        ),
                    ),
                    (
                        "d-either",
                        // Top-level lists are any-of, like or_rules / or_ids.
                        policy(
                            vec![url(exact("/a")), url(exact("/b"))],
                            vec![peer(Some(exact(GATEWAY))), peer(Some(exact("spiffe://x.org/y")))],
                        ),
                    ),
                ],
            ),
        ];
        let p = read(&filters).unwrap();
        assert_eq!(p.default, Action::Deny);
        assert!(!p.dry_run);
        // Deny filters' rules first, each filter's by name.
        assert_eq!(
            names_of(&p),
            [
                ("no-admin", Action::Deny),
                ("a-trust-domain", Action::Allow),
                ("b-gateway", Action::Allow),
                ("c-tenant", Action::Allow),
                ("d-either", Action::Allow),
            ]
        );
        assert_eq!(p.rules[0].principals, [PrincipalMatch::Any]);
        assert_eq!(
            p.rules[1].principals,
            [PrincipalMatch::TrustDomain("other.org".into())]
        );
        let gw = &p.rules[2];
        assert_eq!(gw.principals, [PrincipalMatch::Exact(GATEWAY.into())]);
        assert_eq!(gw.operation.paths.len(), 2);
        assert_eq!(gw.operation.methods, [Method::GET, Method::POST]);
        assert_eq!(gw.operation.ports, [16006]);
        let tenant = &p.rules[3];
        assert_eq!(
            tenant.principals,
            [
                PrincipalMatch::Authenticated,
                PrincipalMatch::Prefix("spiffe://x.org/ns/".into())
            ]
        );
        assert_eq!(
            tenant.conditions,
            [
                Condition::Header {
                    name: http::HeaderName::from_static("x-tenant"),
                    values: vec!["blue".into(), "green".into()],
                },
                Condition::Claim {
                    path: vec!["scope".into()],
                    values: vec!["cart:write".into()],
                },
            ]
        );

        // (peer, method, path, port, headers, claims) -> (allowed, rule)
        type Ask<'a> = (
            Option<&'a str>,
            &'a str,
            &'a str,
            u16,
            &'a [(&'a str, &'a str)],
            Option<serde_json::Value>,
        );
        let cases: Vec<(Ask<'_>, bool, Option<&str>)> = vec![
            (
                (Some(GATEWAY), "POST", "/cart/addItem", 16006, &[], None),
                true,
                Some("b-gateway"),
            ),
            (
                (Some(GATEWAY), "GET", "/users/7", 16006, &[], None),
                true,
                Some("b-gateway"),
            ),
            (
                (Some(GATEWAY), "GET", "/users/7", 8080, &[], None),
                false,
                None,
            ),
            (
                (Some(GATEWAY), "DELETE", "/cart/addItem", 16006, &[], None),
                false,
                None,
            ),
            (
                (Some(GATEWAY), "GET", "/admin/x", 16006, &[], None),
                false,
                Some("no-admin"),
            ),
            (
                (
                    Some("spiffe://other.org/a"),
                    "GET",
                    "/admin/x",
                    1,
                    &[],
                    None,
                ),
                false,
                Some("no-admin"),
            ),
            (
                (Some("spiffe://other.org/a"), "PUT", "/x", 1, &[], None),
                true,
                Some("a-trust-domain"),
            ),
            (
                (None, "GET", "/cart/addItem", 16006, &[], None),
                false,
                None,
            ),
            (
                (
                    Some("spiffe://z.org/q"),
                    "GET",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "green")],
                    Some(json!({"scope": ["cart:write"]})),
                ),
                true,
                Some("c-tenant"),
            ),
            (
                (
                    Some("spiffe://z.org/q"),
                    "GET",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "green")],
                    Some(json!({"scope": "cart:read"})),
                ),
                false,
                None,
            ),
            (
                (
                    None,
                    "GET",
                    "/tenant/1",
                    1,
                    &[("x-tenant", "green")],
                    Some(json!({"scope": "cart:write"})),
                ),
                false,
                None,
            ),
            (
                (Some(GATEWAY), "GET", "/b", 1, &[], None),
                true,
                Some("d-either"),
            ),
            (
                (Some("spiffe://x.org/y"), "GET", "/a", 1, &[], None),
                true,
                Some("d-either"),
            ),
        ];
        for ((peer, m, path, port, headers, claims), allowed, rule) in cases {
            let d = ask(&p, peer, m, path, port, headers, claims);
            assert_eq!(
                (d.allowed, d.rule.as_deref()),
                (allowed, rule),
                "{peer:?} {m} {path} :{port} {headers:?}"
            );
        }
    }

    #[test]
    fn filter_combinations_table() {
        let d = || ("d", policy(vec![url(prefix("/d"))], vec![anyone()]));
        let a = || ("a", policy(vec![url(prefix("/a"))], vec![anyone()]));
        // (what, filters, (default, dry_run, rules) or None)
        type Want = Option<(Action, bool, Vec<(&'static str, Action)>)>;
        let cases: Vec<(&str, Vec<hcm::HttpFilter>, Want)> = vec![
            ("no filters", vec![], None),
            (
                "deny only: default allow",
                vec![enforced(PbAction::Deny, vec![d()])],
                Some((Action::Allow, false, vec![("d", Action::Deny)])),
            ),
            (
                "allow: default deny",
                vec![enforced(PbAction::Allow, vec![a()])],
                Some((Action::Deny, false, vec![("a", Action::Allow)])),
            ),
            (
                "allow with no policies: deny everything",
                vec![enforced(PbAction::Allow, vec![])],
                Some((Action::Deny, false, vec![])),
            ),
            (
                "deny with no policies: nothing to do",
                vec![enforced(PbAction::Deny, vec![])],
                None,
            ),
            (
                "no rules at all: nothing to do",
                vec![filter_of(RbacFilter::default())],
                None,
            ),
            (
                "filter order does not matter; deny rules first",
                vec![
                    enforced(PbAction::Allow, vec![a()]),
                    enforced(PbAction::Deny, vec![d()]),
                ],
                Some((
                    Action::Deny,
                    false,
                    vec![("d", Action::Deny), ("a", Action::Allow)],
                )),
            ),
            (
                "two deny filters add up",
                vec![
                    enforced(PbAction::Deny, vec![d()]),
                    enforced(PbAction::Deny, vec![a()]),
                ],
                Some((
                    Action::Allow,
                    false,
                    vec![("d", Action::Deny), ("a", Action::Deny)],
                )),
            ),
            (
                "shadow rules: dry run",
                vec![
                    shadow(PbAction::Deny, vec![d()]),
                    shadow(PbAction::Allow, vec![a()]),
                ],
                Some((
                    Action::Deny,
                    true,
                    vec![("d", Action::Deny), ("a", Action::Allow)],
                )),
            ),
        ];
        for (what, filters, want) in cases {
            let got = read(&filters);
            let got = got.as_ref().map(|p| (p.default, p.dry_run, names_of(p)));
            let want = want.as_ref().map(|(d, r, n)| (*d, *r, n.clone()));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn dry_run_policy_reports_audit_denials() {
        let p = read(&[shadow(
            PbAction::Deny,
            vec![(
                "no-admin",
                policy(vec![url(prefix("/admin/"))], vec![anyone()]),
            )],
        )])
        .unwrap();
        let d = ask(&p, None, "GET", "/admin/x", 1, &[], None);
        assert_eq!(
            (d.allowed, d.verdict, d.rule.as_deref()),
            (true, Verdict::AuditDeny, Some("no-admin"))
        );
    }

    fn has(problems: &[Problem], place: &str, fragment: &str) -> bool {
        problems
            .iter()
            .any(|p| p.place == place && p.message.contains(fragment))
    }

    #[test]
    fn chain_problems_are_placed() {
        let d = || ("d", policy(vec![any_perm()], vec![anyone()]));
        let router = hcm::HttpFilter {
            name: names::ROUTER.to_owned(),
            ..Default::default()
        };
        let cases: Vec<(Vec<hcm::HttpFilter>, &str, &str)> = vec![
            (
                vec![
                    enforced(PbAction::Allow, vec![d()]),
                    enforced(PbAction::Allow, vec![d()]),
                ],
                "L.http_filters[1].typed_config",
                "a second ALLOW",
            ),
            (
                vec![
                    enforced(PbAction::Deny, vec![d()]),
                    shadow(PbAction::Allow, vec![d()]),
                ],
                "L.http_filters[1].typed_config",
                "enforced rules and shadow_rules",
            ),
            (
                vec![filter_of(RbacFilter {
                    rules: Some(rbac(PbAction::Deny, vec![d()])),
                    shadow_rules: Some(rbac(PbAction::Deny, vec![d()])),
                    ..Default::default()
                })],
                "L.http_filters[0].typed_config.shadow_rules",
                "rules and shadow_rules in one filter",
            ),
            (
                vec![router, enforced(PbAction::Deny, vec![d()])],
                "L.http_filters[1]",
                "after the router",
            ),
            (
                vec![hcm::HttpFilter {
                    disabled: true,
                    ..enforced(PbAction::Deny, vec![d()])
                }],
                "L.http_filters[0].disabled",
                "not supported",
            ),
            (
                vec![enforced(PbAction::Log, vec![d()])],
                "L.http_filters[0].typed_config.rules.action",
                "only ALLOW and DENY",
            ),
            (
                vec![filter_of(RbacFilter {
                    rules: Some(pb::Rbac {
                        audit_logging_options: Some(Default::default()),
                        ..rbac(PbAction::Deny, vec![d()])
                    }),
                    ..Default::default()
                })],
                "L.http_filters[0].typed_config.rules.audit_logging_options",
                "not supported",
            ),
            (
                vec![filter_of(RbacFilter {
                    matcher: Some(Default::default()),
                    ..Default::default()
                })],
                "L.http_filters[0].typed_config.matcher",
                "not supported",
            ),
        ];
        for (filters, place, fragment) in cases {
            let problems = problems_of(&filters);
            assert!(has(&problems, place, fragment), "{place}: {problems:#?}");
        }
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        use permission::Rule as R;
        use principal::Identifier as I;
        let p = |permissions: Vec<pb::Permission>| policy(permissions, vec![anyone()]);
        let q = |principals: Vec<pb::Principal>| policy(vec![any_perm()], principals);
        let bad_value = ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::BoolMatch(true)),
        };
        let cases: Vec<(pb::Policy, &str, &str)> = vec![
            (
                p(vec![perm(R::RequestedServerName(exact("x")))]),
                ".permissions[0].requested_server_name",
                "not supported",
            ),
            (
                p(vec![perm(R::NotRule(Box::new(any_perm())))]),
                ".permissions[0].not_rule",
                "not supported",
            ),
            (
                p(vec![perm(R::DestinationIp(CidrRange::default()))]),
                ".permissions[0].destination_ip",
                "not supported",
            ),
            (
                p(vec![perm(R::Any(false))]),
                ".permissions[0].any",
                "must be true",
            ),
            (p(vec![]), ".permissions", "at least one"),
            (
                p(vec![and_rules(vec![or_rules(vec![
                    url(exact("/a")),
                    method("GET"),
                ])])]),
                ".permissions[0].and_rules.rules[0].or_rules.rules",
                "different kinds",
            ),
            (
                p(vec![and_rules(vec![url(exact("/a")), url(exact("/b"))])]),
                ".permissions[0].and_rules.rules[1]",
                "a second group of paths",
            ),
            (
                p(vec![url(exact("/a")), method("GET")]),
                ".permissions",
                "different kinds",
            ),
            (
                p(vec![and_rules(vec![and_rules(vec![any_perm()])])]),
                ".permissions[0].and_rules.rules[0].and_rules",
                "nested",
            ),
            (
                p(vec![url(sm(string_matcher::MatchPattern::SafeRegex(
                    RegexMatcher::default(),
                )))]),
                ".permissions[0].url_path.path",
                "only exact and prefix",
            ),
            (
                p(vec![url(StringMatcher {
                    ignore_case: true,
                    ..exact("/a")
                })]),
                ".permissions[0].url_path.path.ignore_case",
                "not supported",
            ),
            (
                p(vec![perm(R::Header(header_matcher(":path", Some("/a"))))]),
                ".permissions[0].header.name",
                "only :method",
            ),
            (
                p(vec![perm(R::Header(HeaderMatcher {
                    invert_match: true,
                    ..header_matcher("x", Some("y"))
                }))]),
                ".permissions[0].header.invert_match",
                "not supported",
            ),
            (
                p(vec![perm(R::Header(header_matcher(":method", None)))]),
                ".permissions[0].header",
                "needs an exact value",
            ),
            (
                p(vec![method("get")]),
                ".permissions[0].header.string_match",
                "upper case",
            ),
            (
                p(vec![port(70_000)]),
                ".permissions[0].destination_port",
                "1-65535",
            ),
            (
                p(vec![template("/a/{x")]),
                ".permissions[0].uri_template.typed_config",
                "unclosed",
            ),
            (
                q(vec![princ(I::RemoteIp(CidrRange::default()))]),
                ".principals[0].remote_ip",
                "not supported",
            ),
            (
                q(vec![princ(I::NotId(Box::new(anyone())))]),
                ".principals[0].not_id",
                "not supported",
            ),
            (
                q(vec![princ(I::UrlPath(PathMatcher::default()))]),
                ".principals[0].url_path",
                "use a permission",
            ),
            (q(vec![]), ".principals", "at least one"),
            (
                q(vec![peer(Some(sm(string_matcher::MatchPattern::Suffix(
                    "x".into(),
                ))))]),
                ".principals[0].authenticated.principal_name",
                "only exact and prefix",
            ),
            (
                q(vec![header_id(":method", Some("GET"))]),
                ".principals[0].header",
                "in permissions",
            ),
            (
                q(vec![and_ids(vec![peer(None), peer(Some(exact(GATEWAY)))])]),
                ".principals[0].and_ids.ids[1]",
                "a second group of principals",
            ),
            (
                q(vec![princ(I::SourcedMetadata(pb::SourcedMetadata {
                    metadata_matcher: Some(metadata(
                        "envoy.filters.http.other",
                        &[JWT_PAYLOAD_KEY, "scope"],
                        string_value("x"),
                    )),
                    metadata_source: 0,
                }))]),
                ".principals[0].sourced_metadata.metadata_matcher.filter",
                "only \"envoy.filters.http.jwt_authn\"",
            ),
            (
                q(vec![princ(I::SourcedMetadata(pb::SourcedMetadata {
                    metadata_matcher: Some(metadata(
                        JWT_AUTHN_FILTER,
                        &["issuer-a", "scope"],
                        string_value("x"),
                    )),
                    metadata_source: 0,
                }))]),
                ".principals[0].sourced_metadata.metadata_matcher.path",
                "must be [\"jwt_payload\"",
            ),
            (
                q(vec![claim_id(&["scope"], bad_value)]),
                ".principals[0].sourced_metadata.metadata_matcher.value",
                "only string_match.exact",
            ),
            (
                q(vec![princ(I::SourcedMetadata(pb::SourcedMetadata {
                    metadata_matcher: Some(metadata(
                        JWT_AUTHN_FILTER,
                        &[JWT_PAYLOAD_KEY, "scope"],
                        string_value("x"),
                    )),
                    metadata_source: MetadataSource::Route as i32,
                }))]),
                ".principals[0].sourced_metadata.metadata_source",
                "only DYNAMIC",
            ),
            (
                pb::Policy {
                    condition: Some(Expr::default()),
                    ..q(vec![anyone()])
                },
                ".condition",
                "CEL",
            ),
        ];
        for (pol, suffix, fragment) in cases {
            let problems = problems_of(&[enforced(PbAction::Allow, vec![("p", pol)])]);
            let place = format!("L.http_filters[0].typed_config.rules.policies[\"p\"]{suffix}");
            assert!(
                has(&problems, &place, fragment),
                "{place} ({fragment}): {problems:#?}"
            );
        }
    }

    #[test]
    fn path_options_table() {
        use hcm::http_connection_manager::PathWithEscapedSlashesAction as A;
        let hcm_with =
            |normalize: Option<bool>, merge: bool, action: A| hcm::HttpConnectionManager {
                normalize_path: normalize
                    .map(|value| envoy_types::pb::google::protobuf::BoolValue { value }),
                merge_slashes: merge,
                path_with_escaped_slashes_action: action as i32,
                ..Default::default()
            };
        let opts = |normalize, merge_slashes, escaped_slashes| PathOptions {
            normalize,
            merge_slashes,
            escaped_slashes,
        };
        use EscapedSlashes::*;
        let cases = [
            (
                hcm_with(None, false, A::ImplementationSpecificDefault),
                opts(true, false, Unescape),
            ),
            (
                hcm_with(Some(true), true, A::UnescapeAndForward),
                opts(true, true, Unescape),
            ),
            (
                hcm_with(Some(false), true, A::KeepUnchanged),
                opts(false, true, Keep),
            ),
            (
                hcm_with(None, true, A::RejectRequest),
                opts(true, true, Reject),
            ),
            (
                hcm_with(None, true, A::UnescapeAndRedirect),
                opts(true, true, Unescape),
            ),
        ];
        for (m, want) in cases {
            let mut t = Translator::default();
            assert_eq!(t.path_options(&m, PLACE), want, "{m:?}");
            assert!(t.problems.is_empty());
        }
        let mut t = Translator::default();
        let m = hcm::HttpConnectionManager {
            path_normalization_options: Some(Default::default()),
            path_with_escaped_slashes_action: 99,
            ..Default::default()
        };
        t.path_options(&m, PLACE);
        assert!(has(
            &t.problems,
            "L.path_normalization_options",
            "not supported"
        ));
        assert!(has(
            &t.problems,
            "L.path_with_escaped_slashes_action",
            "unknown"
        ));
    }
}
