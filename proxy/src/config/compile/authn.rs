//! Friendly JWT and CORS settings compiled to Envoy's `jwt_authn` and `cors` HTTP
//! filters.
//!
//! ```yaml
//! listeners:
//!   - name: edge
//!     address: 0.0.0.0:8080
//!     jwt_providers:
//!       shop:
//!         issuer: https://auth.shop.example    # optional: `iss` must equal it
//!         audiences: [shop-api]                # optional: `aud` must name one
//!         jwks: { file: /etc/weft/jwks.json }  # or { inline: '{"keys":[...]}' }
//!         clock_skew: 60s                      # default 60s, whole seconds
//!         forward: false                       # keep the token upstream (default: removed)
//!         claims_to_headers: { sub: x-user-id, realm.team: x-team }
//!     routes:
//!       - match: { prefix: /cart/ }
//!         to: cart
//!         jwt: shop                            # or { any_of: [shop, partner] }
//!                                              # or { provider: shop, allow_missing: true }
//!         cors:
//!           allow_origins: [https://shop.example, "https://*.shop.example"]
//!           allow_methods: [GET, POST]
//!           allow_headers: [authorization, content-type]
//!           expose_headers: [x-request-id]
//!           max_age: 1h
//!           allow_credentials: true
//! ```
//!
//! What is written, and why:
//! - A listener with `jwt_providers` gets the `jwt_authn` filter (even if no route uses
//!   it yet, so that claim headers sent by clients are always removed) with each
//!   provider's keys as `local_jwks` (`filename` for `file:`, so a reload re-reads the
//!   file); the file is also read here, to report a bad JWKS at its line.
//! - Every distinct route `jwt:` becomes one `requirement_map` entry named after it
//!   (`shop`, `any:partner,shop`, `optional:shop`), and the route names it in its
//!   `typed_per_filter_config`. A route without `jwt:` gets nothing: no requirement,
//!   no check, as in Envoy. `allow_missing` is written as Envoy's documented idiom,
//!   `requires_any: [<provider>, allow_missing: {}]`.
//! - `bypass_cors_preflight` is on: a browser sends a preflight without credentials, so
//!   demanding a token would break every cross-origin call.
//! - A route's `cors:` is the `cors` filter's per-route `CorsPolicy`; the filter is
//!   placed before `jwt_authn` so a preflight is answered before a token is asked for.
//!   Origins are lowercased, as browsers send them. `https://*.shop.example` (one
//!   leading `*.`) matches one or more labels before `.shop.example` but not the
//!   domain itself; `*` is any origin and cannot be combined with `allow_credentials`,
//!   which would let every site make credentialed calls; `null` is refused.

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{
    Cors, CorsPolicy as PbCorsPolicy,
};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtProvider, JwtRequirement, JwtRequirementOrList,
    PerRouteConfig, jwt_provider, jwt_requirement, per_route_config,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Empty};
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};

use super::super::locate::YamlPath;
use super::super::resources::pack;
use super::{Compiler, checks};
use crate::authn::{self, Jwks};

/// One entry of a listener's `jwt_providers`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderSpec {
    /// `iss` must equal this; absent: any issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` must name one of these; empty: not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The public keys that sign the tokens.
    pub jwks: JwksSpec,
    /// Leeway for `exp` and `nbf` (default 60s, whole seconds).
    #[serde(default, deserialize_with = "opt_duration")]
    pub clock_skew: Option<Duration>,
    /// Keep the token in the request sent upstream (default: removed).
    #[serde(default)]
    pub forward: bool,
    /// Claim (a dotted path for nested claims) to request header, written after a
    /// successful check; copies sent by the client are always removed.
    #[serde(default)]
    pub claims_to_headers: IndexMap<String, String>,
}

/// Where a provider's JWKS is: exactly one of `file` and `inline`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSpec {
    /// A JWKS file, read at load time and on every reload.
    #[serde(default)]
    pub file: Option<String>,
    /// The JWKS document itself.
    #[serde(default)]
    pub inline: Option<String>,
}

/// A route's `jwt:`: which providers' tokens it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtRouteSpec {
    /// `jwt: shop`
    Provider(String),
    /// `jwt: { any_of: [shop, partner] }` or `jwt: { provider: shop, allow_missing: true }`
    Rule(JwtRule),
}

/// The long form of a route's `jwt:`; exactly one of `provider` and `any_of`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    /// One provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// Any of these providers.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// A request without a token passes (one with a bad token does not).
    #[serde(default)]
    pub allow_missing: bool,
}

// By hand rather than `untagged`, so that a mistake inside the long form is reported as
// itself (`unknown field "alow_missing"`) instead of "did not match any variant".
impl<'de> Deserialize<'de> for JwtRouteSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JwtRouteSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a provider name or a map with provider/any_of/allow_missing")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JwtRouteSpec::Provider(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                JwtRule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(JwtRouteSpec::Rule)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A route's `cors:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSpec {
    /// `https://shop.example`, `https://*.shop.example` or `*`.
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for (`[GET, POST]`).
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the page may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer (whole seconds).
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_age: Option<Duration>,
    /// Allow cookies and HTTP authentication on cross-origin calls.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// A route `jwt:` in its one meaning: these providers, optional or not.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Need {
    providers: Vec<String>,
    optional: bool,
}

impl Need {
    fn of(spec: &JwtRouteSpec) -> Result<Self, String> {
        let (providers, optional) = match spec {
            JwtRouteSpec::Provider(p) => (vec![p.clone()], false),
            JwtRouteSpec::Rule(r) => match (&r.provider, r.any_of.is_empty()) {
                (Some(p), true) => (vec![p.clone()], r.allow_missing),
                (None, false) => (r.any_of.clone(), r.allow_missing),
                _ => return Err("give exactly one of `provider` and `any_of`".to_owned()),
            },
        };
        // One order, so that the same set of providers is one requirement.
        let set: BTreeSet<String> = providers.iter().cloned().collect();
        if set.len() != providers.len() {
            return Err("a provider is listed twice".to_owned());
        }
        Ok(Self {
            providers: set.into_iter().collect(),
            optional,
        })
    }

    /// The `requirement_map` key.
    fn name(&self) -> String {
        let base = match self.providers.as_slice() {
            [one] => one.clone(),
            many => format!("any:{}", many.join(",")),
        };
        if self.optional {
            format!("optional:{base}")
        } else {
            base
        }
    }

    fn requirement(&self) -> JwtRequirement {
        use jwt_requirement::RequiresType as R;
        let by_name = |p: &String| JwtRequirement {
            requires_type: Some(R::ProviderName(p.clone())),
        };
        let mut items: Vec<JwtRequirement> = self.providers.iter().map(by_name).collect();
        if self.optional {
            items.push(JwtRequirement {
                requires_type: Some(R::AllowMissing(Empty {})),
            });
        }
        if items.len() == 1 {
            return items.remove(0);
        }
        JwtRequirement {
            requires_type: Some(R::RequiresAny(JwtRequirementOrList {
                requirements: items,
            })),
        }
    }
}

impl Compiler {
    /// The listener's `jwt_authn` filter: its providers and one named requirement per
    /// distinct route `jwt:` (`routes` holds each such route's `jwt` path and spec).
    /// `None` when the listener has no providers.
    pub(super) fn jwt_filter(
        &mut self,
        providers: &IndexMap<String, JwtProviderSpec>,
        routes: &[(YamlPath, &JwtRouteSpec)],
        listener: &YamlPath,
    ) -> Option<hcm::HttpFilter> {
        let mut requirement_map = std::collections::HashMap::new();
        for (path, spec) in routes {
            let need = match Need::of(spec) {
                Ok(n) => n,
                Err(e) => {
                    self.problem(path.clone(), e);
                    continue;
                }
            };
            for p in &need.providers {
                if !providers.contains_key(p) {
                    self.problem(path.clone(), unknown_provider(p, providers));
                }
            }
            requirement_map.insert(need.name(), need.requirement());
        }
        if providers.is_empty() {
            return None;
        }
        let base = listener.key("jwt_providers");
        let mut out = std::collections::HashMap::new();
        for (name, spec) in providers {
            let path = base.key(name);
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                self.problem(
                    path.clone(),
                    format!("provider name {name:?}: use letters, digits, '-', '_' and '.'"),
                );
            }
            out.insert(name.clone(), self.jwt_provider(spec, &path));
        }
        let config = JwtAuthentication {
            providers: out,
            requirement_map,
            bypass_cors_preflight: true,
            ..Default::default()
        };
        Some(hcm::HttpFilter {
            name: authn::FILTER_NAME.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(&config))),
            ..Default::default()
        })
    }

    fn jwt_provider(&mut self, spec: &JwtProviderSpec, path: &YamlPath) -> JwtProvider {
        if spec.issuer.as_deref() == Some("") {
            self.problem(
                path.key("issuer"),
                "must not be empty (leave it out to accept any issuer)",
            );
        }
        for (i, a) in spec.audiences.iter().enumerate() {
            if a.is_empty() {
                self.problem(path.key("audiences").index(i), "must not be empty");
            }
        }
        let jwks_path = path.key("jwks");
        let specifier = match (&spec.jwks.file, &spec.jwks.inline) {
            (Some(file), None) => {
                match std::fs::read_to_string(file) {
                    Ok(text) => {
                        if let Err(e) = Jwks::parse(&text) {
                            self.problem(jwks_path, format!("{file}: {e}"));
                        }
                    }
                    Err(e) => self.problem(jwks_path, format!("cannot read {file:?}: {e}")),
                }
                Some(data_source::Specifier::Filename(file.clone()))
            }
            (None, Some(text)) => {
                if let Err(e) = Jwks::parse(text) {
                    self.problem(jwks_path, e.to_string());
                }
                Some(data_source::Specifier::InlineString(text.clone()))
            }
            _ => {
                self.problem(jwks_path, "give exactly one of `file` and `inline`");
                None
            }
        };
        let clock_skew_seconds = match spec.clock_skew {
            None => 0,
            Some(d) => {
                let secs = u32::try_from(d.as_secs()).ok().filter(|s| *s > 0);
                if secs.is_none() || d.subsec_nanos() != 0 {
                    // Envoy reads 0 as "the default", so zero cannot be written.
                    self.problem(path.key("clock_skew"), "give whole seconds, at least 1s");
                }
                secs.unwrap_or(0)
            }
        };
        let mut claim_to_headers = Vec::new();
        for (claim, header) in &spec.claims_to_headers {
            let cpath = path.key("claims_to_headers").key(claim);
            if claim.is_empty() || claim.split('.').any(str::is_empty) {
                self.problem(cpath.clone(), format!("invalid claim name {claim:?}"));
            }
            self.check(authn::claim_header(header), &cpath);
            claim_to_headers.push(JwtClaimToHeader {
                header_name: header.to_ascii_lowercase(),
                claim_name: claim.clone(),
                ..Default::default()
            });
        }
        JwtProvider {
            issuer: spec.issuer.clone().unwrap_or_default(),
            audiences: spec.audiences.clone(),
            forward: spec.forward,
            clock_skew_seconds,
            claim_to_headers,
            // Where Envoy puts the verified claims for authorization rules to read.
            payload_in_metadata: crate::snapshot::translate::JWT_PAYLOAD_KEY.to_owned(),
            jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
                specifier,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// A route's `cors:` as the `cors` filter's per-route config.
    pub(super) fn cors_route_config(&mut self, spec: &CorsSpec, path: &YamlPath) -> Option<Any> {
        let before = self.problems.len();
        if spec.allow_origins.is_empty() {
            self.problem(
                path.key("allow_origins"),
                "list at least one origin (or \"*\" for any)",
            );
        }
        let mut matchers = Vec::new();
        for (i, o) in spec.allow_origins.iter().enumerate() {
            let opath = path.key("allow_origins").index(i);
            if o == "*" && spec.allow_credentials {
                self.problem(
                    opath.clone(),
                    "\"*\" with allow_credentials would let every site make calls with the user's credentials; list the origins",
                );
            }
            if let Some(m) = self.check(origin_matcher(o), &opath) {
                matchers.push(m);
            }
        }
        for (i, m) in spec.allow_methods.iter().enumerate() {
            if m != "*" {
                self.check(checks::parse_method(m), &path.key("allow_methods").index(i));
            }
        }
        for field in ["allow_headers", "expose_headers"] {
            let list = if field == "allow_headers" {
                &spec.allow_headers
            } else {
                &spec.expose_headers
            };
            for (i, h) in list.iter().enumerate() {
                if h != "*" {
                    self.check(checks::parse_header_name(h), &path.key(field).index(i));
                }
            }
        }
        if spec.max_age.is_some_and(|d| d.subsec_nanos() != 0) {
            self.problem(path.key("max_age"), "give whole seconds");
        }
        if self.problems.len() != before {
            return None;
        }
        let policy = PbCorsPolicy {
            allow_origin_string_match: matchers,
            allow_methods: spec.allow_methods.join(", "),
            allow_headers: lowercase_list(&spec.allow_headers),
            expose_headers: lowercase_list(&spec.expose_headers),
            max_age: spec
                .max_age
                .map(|d| d.as_secs().to_string())
                .unwrap_or_default(),
            allow_credentials: spec.allow_credentials.then_some(BoolValue { value: true }),
            ..Default::default()
        };
        Some(pack(&policy))
    }
}

/// A route's `jwt_authn` per-filter config: the name of its requirement. (An invalid
/// `jwt:` is reported by [`Compiler::jwt_filter`].)
pub(super) fn jwt_route_config(spec: &JwtRouteSpec) -> Any {
    let name = Need::of(spec).map(|n| n.name()).unwrap_or_default();
    pack(&PerRouteConfig {
        requirement_specifier: Some(per_route_config::RequirementSpecifier::RequirementName(
            name,
        )),
    })
}

/// The `cors` HTTP filter; policies are per route.
pub(super) fn cors_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: crate::http::cors::FILTER_NAME.to_owned(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(&Cors {}))),
        ..Default::default()
    }
}

fn lowercase_list(items: &[String]) -> String {
    items
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_provider(name: &str, providers: &IndexMap<String, JwtProviderSpec>) -> String {
    let close = providers
        .keys()
        .map(|k| (strsim::osa_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d);
    match close {
        Some((_, k)) => format!("unknown JWT provider {name:?} (did you mean {k:?}?)"),
        None if providers.is_empty() => {
            format!("unknown JWT provider {name:?}: the listener has no jwt_providers")
        }
        None => format!(
            "unknown JWT provider {name:?}; defined: {}",
            providers
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An allowed origin as an Envoy string matcher: `*`, an exact origin (ignoring case),
/// or one with a leading wildcard label (a regex).
fn origin_matcher(origin: &str) -> Result<StringMatcher, String> {
    let bad = || {
        format!(
            "invalid origin {origin:?}: use scheme://host[:port] (https://shop.example), one leading wildcard label (https://*.shop.example) or \"*\""
        )
    };
    let matcher = |p: string_matcher::MatchPattern, ignore_case: bool| StringMatcher {
        match_pattern: Some(p),
        ignore_case,
    };
    if origin == "*" {
        return Ok(matcher(
            string_matcher::MatchPattern::Exact("*".into()),
            false,
        ));
    }
    if origin.eq_ignore_ascii_case("null") {
        return Err(
            "the \"null\" origin is sent by sandboxed frames and local files, any of which could then call; list real origins"
                .to_owned(),
        );
    }
    let (scheme, authority) = origin.split_once("://").ok_or_else(bad)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    // `[v6]` has colons of its own; a port follows the bracket.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !authority.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name_ok = if name.starts_with('[') && name.ends_with(']') && !wildcard {
        name[1..name.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    } else {
        !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !(scheme_ok && port_ok && name_ok) {
        return Err(bad());
    }
    // Browsers send origins in lower case (the URL standard's serialization), so the
    // pattern is lowercased once instead of folding every request's origin.
    if !wildcard {
        return Ok(matcher(
            string_matcher::MatchPattern::Exact(origin.to_ascii_lowercase()),
            false,
        ));
    }
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let regex = format!(
        "{}://(?:[a-z0-9-]+\\.)+{}{}",
        regex::escape(&scheme.to_ascii_lowercase()),
        regex::escape(&name.to_ascii_lowercase()),
        regex::escape(&port)
    );
    Ok(matcher(
        string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex,
            ..Default::default()
        }),
        false,
    ))
}

/// Parses `2s`, `1h`, `90s` with `humantime`.
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    humantime::parse_duration(s.trim())
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

#[cfg(test)]
#[path = "authn_tests.rs"]
mod tests;
