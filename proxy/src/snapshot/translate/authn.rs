//! `envoy.filters.http.jwt_authn` and `envoy.filters.http.cors` configs translated into
//! [`JwtConfig`] (providers and named requirements), a route's [`Requirement`] and a
//! route's [`CorsPolicy`].
//!
//! JWT: providers come from `providers`, with their keys from `local_jwks`; a file named
//! there is read now, at configuration load time, as Envoy does, so a reload re-reads
//! it and a request never touches the disk. `remote_jwks` is refused: Weft does not
//! fetch keys over the network. Routes choose their requirement by name
//! (`requirement_map` plus the route's `PerRouteConfig.requirement_name`); the filter's
//! own route `rules` are refused, since Weft matches routes once, in the route table.
//! `requires_any` with an `allow_missing` member reads as Envoy's documentation states
//! it ("A is optional: a token, if present, must be valid for A"), so a token of a
//! provider outside the list is refused rather than looked up by issuer.
//!
//! CORS: the per-route `CorsPolicy` of the `cors` filter; origins are string matchers,
//! and one that matches the literal `*` allows every origin, as in Envoy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as PbCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtProvider, JwtRequirement, PerRouteConfig, jwt_provider, jwt_requirement,
    per_route_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use http::{HeaderValue, Method};

use super::{Translator, parse_header_name, parse_regex};
use crate::authn::{
    self, ClaimToHeader, DEFAULT_CLOCK_SKEW, Jwks, JwtConfig, Provider, Requirement, TokenLocation,
};
use crate::http::cors::{CorsPolicy, OriginMatch};

impl Translator {
    /// The `jwt_authn` filter's config: its providers and named requirements.
    pub(super) fn jwt_authn(&mut self, cfg: &JwtAuthentication, place: &str) -> Option<JwtConfig> {
        let before = self.problems.len();
        if !cfg.rules.is_empty() {
            self.problem(
                format!("{place}.rules"),
                "not supported: name requirements in requirement_map and choose one per route with typed_per_filter_config (PerRouteConfig.requirement_name)",
            );
        }
        if cfg.filter_state_rules.is_some() {
            self.problem(format!("{place}.filter_state_rules"), "not supported");
        }
        // Sorted, so that provider indexes do not depend on map order.
        let mut names: Vec<&String> = cfg.providers.keys().collect();
        names.sort();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut providers = Vec::new();
        for name in &names {
            let pplace = format!("{place}.providers[{name:?}]");
            if let Some(p) = self.jwt_provider(name, &cfg.providers[*name], &pplace) {
                providers.push(p);
            }
        }
        let mut req_names: Vec<&String> = cfg.requirement_map.keys().collect();
        req_names.sort();
        let mut requirements = HashMap::new();
        for name in req_names {
            let rplace = format!("{place}.requirement_map[{name:?}]");
            let r = &cfg.requirement_map[name];
            if let Some(req) = self.jwt_requirement(r, &index, &rplace) {
                requirements.insert(name.clone(), Arc::new(req));
            }
        }
        (self.problems.len() == before).then_some(JwtConfig {
            providers,
            requirements,
            bypass_cors_preflight: cfg.bypass_cors_preflight,
            strip_failure_response: cfg.strip_failure_response,
        })
    }

    /// A route's `jwt_authn` per-filter config: `Some(None)` when JWT is disabled for
    /// the route, `Some(Some(requirement))` when it names one.
    pub(super) fn jwt_per_route(
        &mut self,
        cfg: &PerRouteConfig,
        jwt: &JwtConfig,
        place: &str,
    ) -> Option<Option<Arc<Requirement>>> {
        use per_route_config::RequirementSpecifier as S;
        match &cfg.requirement_specifier {
            Some(S::Disabled(true)) => Some(None),
            Some(S::RequirementName(name)) => match jwt.requirements.get(name) {
                Some(r) => Some(Some(r.clone())),
                None => {
                    let mut known: Vec<&str> =
                        jwt.requirements.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    self.problem(
                        format!("{place}.requirement_name"),
                        format!(
                            "unknown requirement {name:?}; the jwt_authn filter's requirement_map has: {}",
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    );
                    None
                }
            },
            Some(S::Disabled(false)) | None => {
                self.problem(place, "give requirement_name, or disabled: true");
                None
            }
        }
    }

    /// A route's CORS policy (the `cors` filter's per-route config).
    pub(super) fn cors_policy(&mut self, p: &PbCorsPolicy, place: &str) -> Option<CorsPolicy> {
        let before = self.problems.len();
        if p.shadow_enabled.is_some() {
            self.problem(format!("{place}.shadow_enabled"), "not supported");
        }
        let enabled = match p
            .filter_enabled
            .as_ref()
            .and_then(|f| f.default_value.as_ref())
        {
            None => true,
            Some(f) => {
                let whole = match f.denominator {
                    0 => 100,
                    1 => 10_000,
                    _ => 1_000_000,
                };
                if f.numerator != 0 && f.numerator < whole {
                    self.problem(
                        format!("{place}.filter_enabled"),
                        "only 0% or 100% is supported",
                    );
                }
                f.numerator != 0
            }
        };
        let mut allow_origins = Vec::new();
        for (i, m) in p.allow_origin_string_match.iter().enumerate() {
            let oplace = format!("{place}.allow_origin_string_match[{i}]");
            if let Some(o) = self.origin_match(m, &oplace) {
                allow_origins.push(o);
            }
        }
        let allow_methods =
            self.token_list(&p.allow_methods, &format!("{place}.allow_methods"), |m| {
                Method::from_bytes(m.as_bytes()).is_ok()
            });
        let header_name = |h: &str| parse_header_name(h).is_ok();
        let allow_headers = self.token_list(
            &p.allow_headers,
            &format!("{place}.allow_headers"),
            header_name,
        );
        let expose_headers = self.token_list(
            &p.expose_headers,
            &format!("{place}.expose_headers"),
            header_name,
        );
        let max_age = match p.max_age.trim() {
            "" => None,
            s => match s.parse::<u64>() {
                Ok(secs) => Some(Duration::from_secs(secs)),
                Err(_) => {
                    self.problem(
                        format!("{place}.max_age"),
                        format!("{s:?} is not a number of seconds"),
                    );
                    None
                }
            },
        };
        if self.problems.len() != before {
            return None;
        }
        Some(CorsPolicy {
            // A policy switched off (0 %) allows no origin: nothing is answered or added.
            allow_origins: if enabled { allow_origins } else { Vec::new() },
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials: p.allow_credentials.is_some_and(|b| b.value),
            allow_private_network: p.allow_private_network_access.is_some_and(|b| b.value),
            forward_not_matching_preflights: p
                .forward_not_matching_preflights
                .is_none_or(|b| b.value),
        })
    }

    fn jwt_provider(&mut self, name: &str, p: &JwtProvider, place: &str) -> Option<Provider> {
        let before = self.problems.len();
        // Fields that change what a request gets. `jwt_cache_config` only saves work
        // and is accepted; `pad_forward_payload_header` only shapes a refused field.
        let unsupported = [
            (p.subjects.is_some(), "subjects"),
            (p.require_expiration, "require_expiration"),
            (p.max_lifetime.is_some(), "max_lifetime"),
            (!p.from_params.is_empty(), "from_params"),
            (!p.from_cookies.is_empty(), "from_cookies"),
            (
                !p.forward_payload_header.is_empty(),
                "forward_payload_header",
            ),
            // The verified payload is what authorization rules on claims read (Envoy
            // finds it in metadata under this key).
            (
                !p.payload_in_metadata.is_empty()
                    && p.payload_in_metadata != super::authz::JWT_PAYLOAD_KEY,
                "payload_in_metadata (only \"jwt_payload\", which authorization rules on claims read)",
            ),
            (
                p.normalize_payload_in_metadata.is_some(),
                "normalize_payload_in_metadata",
            ),
            (!p.header_in_metadata.is_empty(), "header_in_metadata"),
            (
                !p.failed_status_in_metadata.is_empty(),
                "failed_status_in_metadata",
            ),
            (p.clear_route_cache, "clear_route_cache"),
        ];
        for (set, field) in unsupported {
            if set {
                self.problem(format!("{place}.{field}"), "not supported yet");
            }
        }
        use jwt_provider::JwksSourceSpecifier as J;
        let jwks = match &p.jwks_source_specifier {
            Some(J::LocalJwks(ds)) => self.jwks_source(ds, &format!("{place}.local_jwks")),
            Some(J::RemoteJwks(_)) => {
                self.problem(
                    format!("{place}.remote_jwks"),
                    "not supported: use local_jwks (Weft does not fetch keys over the network)",
                );
                None
            }
            None => {
                self.problem(place, "local_jwks is required");
                None
            }
        };
        let mut from = Vec::new();
        for (i, h) in p.from_headers.iter().enumerate() {
            let hplace = format!("{place}.from_headers[{i}]");
            if let Some(header) = self.ok(parse_header_name(&h.name), &format!("{hplace}.name")) {
                from.push(TokenLocation {
                    header,
                    prefix: h.value_prefix.clone(),
                });
            }
        }
        // Envoy's default location; its other default, the `access_token` query
        // parameter, is not read (see from_params).
        if from.is_empty() {
            from.push(TokenLocation::bearer());
        }
        let mut claims_to_headers = Vec::new();
        for (i, c) in p.claim_to_headers.iter().enumerate() {
            let cplace = format!("{place}.claim_to_headers[{i}]");
            let header = self.ok(
                authn::claim_header(&c.header_name),
                &format!("{cplace}.header_name"),
            );
            let claim: Vec<String> = match (c.claim_name.is_empty(), c.claim_path.is_empty()) {
                // Envoy splits the name on dots to reach nested claims.
                (false, true) => c.claim_name.split('.').map(str::to_owned).collect(),
                (true, false) => c.claim_path.iter().map(|s| s.key.clone()).collect(),
                _ => {
                    self.problem(&cplace, "give exactly one of claim_name and claim_path");
                    continue;
                }
            };
            if claim.iter().any(String::is_empty) {
                self.problem(&cplace, "a claim name has an empty part");
                continue;
            }
            if let Some(header) = header {
                claims_to_headers.push(ClaimToHeader { claim, header });
            }
        }
        let jwks = jwks?;
        if self.problems.len() != before {
            return None;
        }
        Some(Provider {
            name: Arc::from(name),
            issuer: (!p.issuer.is_empty()).then(|| p.issuer.clone()),
            audiences: p.audiences.clone(),
            jwks,
            // Envoy: zero means the default.
            clock_skew: match p.clock_skew_seconds {
                0 => DEFAULT_CLOCK_SKEW,
                s => Duration::from_secs(u64::from(s)),
            },
            forward: p.forward,
            claims_to_headers,
            from,
        })
    }

    fn jwks_source(&mut self, ds: &DataSource, place: &str) -> Option<Jwks> {
        if ds.watched_directory.is_some() {
            self.problem(format!("{place}.watched_directory"), "not supported");
        }
        use data_source::Specifier as S;
        let text = match &ds.specifier {
            Some(S::InlineString(s)) => s.clone(),
            Some(S::InlineBytes(b)) => self.ok(
                String::from_utf8(b.clone()).map_err(|_| "inline_bytes is not UTF-8 JSON"),
                place,
            )?,
            Some(S::Filename(f)) => self.ok(
                std::fs::read_to_string(f).map_err(|e| format!("cannot read {f:?}: {e}")),
                &format!("{place}.filename"),
            )?,
            Some(S::EnvironmentVariable(_)) => {
                self.problem(
                    format!("{place}.environment_variable"),
                    "not supported: use filename or inline_string",
                );
                return None;
            }
            None => {
                self.problem(place, "filename, inline_string or inline_bytes is required");
                return None;
            }
        };
        let jwks = self.ok(Jwks::parse(&text), place)?;
        for note in &jwks.skipped {
            tracing::warn!(place, "JWKS key skipped: {note}");
        }
        Some(jwks)
    }

    fn jwt_requirement(
        &mut self,
        r: &JwtRequirement,
        index: &HashMap<&str, usize>,
        place: &str,
    ) -> Option<Requirement> {
        use jwt_requirement::RequiresType as R;
        let every_provider =
            || Requirement::AnyOf((0..index.len()).map(Requirement::Provider).collect());
        match &r.requires_type {
            Some(R::ProviderName(name)) => match index.get(name.as_str()) {
                Some(i) => Some(Requirement::Provider(*i)),
                None => {
                    self.problem(
                        format!("{place}.provider_name"),
                        format!("unknown provider {name:?}"),
                    );
                    None
                }
            },
            Some(R::RequiresAny(list)) => {
                let mut allow_missing = false;
                let mut allow_failed = false;
                let mut any = Vec::new();
                for (i, item) in list.requirements.iter().enumerate() {
                    let iplace = format!("{place}.requires_any.requirements[{i}]");
                    match &item.requires_type {
                        Some(R::AllowMissing(_)) => allow_missing = true,
                        Some(R::AllowMissingOrFailed(_)) => allow_failed = true,
                        _ => any.extend(self.jwt_requirement(item, index, &iplace)),
                    }
                }
                if list.requirements.is_empty() {
                    self.problem(format!("{place}.requires_any"), "no requirements");
                    return None;
                }
                // Anything or nothing: the list always passes.
                if allow_failed {
                    return Some(Requirement::AllowMissingOrFailed);
                }
                let base = match any.len() {
                    0 => every_provider(),
                    1 => any.remove(0),
                    _ => Requirement::AnyOf(any),
                };
                Some(if allow_missing {
                    Requirement::AllowMissing(Box::new(base))
                } else {
                    base
                })
            }
            Some(R::AllowMissing(_)) => Some(Requirement::AllowMissing(Box::new(every_provider()))),
            Some(R::AllowMissingOrFailed(_)) => Some(Requirement::AllowMissingOrFailed),
            Some(R::ProviderAndAudiences(_)) => {
                self.problem(
                    format!("{place}.provider_and_audiences"),
                    "not supported yet: set audiences on the provider",
                );
                None
            }
            Some(R::RequiresAll(_)) => {
                self.problem(format!("{place}.requires_all"), "not supported yet");
                None
            }
            Some(R::ExtractOnlyWithoutValidation(_)) => {
                self.problem(
                    format!("{place}.extract_only_without_validation"),
                    "not supported: claims of tokens that were not verified are never used",
                );
                None
            }
            None => {
                self.problem(
                    place,
                    "an empty requirement checks nothing; to skip JWT on a route, give it `disabled: true`",
                );
                None
            }
        }
    }

    fn origin_match(&mut self, m: &StringMatcher, place: &str) -> Option<OriginMatch> {
        use string_matcher::MatchPattern as P;
        // Case-insensitive literals become regexes, so matching stays one comparison.
        let folded = |re: String| parse_regex(&format!("(?i){re}")).map(OriginMatch::Regex);
        let literal = |s: &str| regex::escape(s);
        let result = match (&m.match_pattern, m.ignore_case) {
            (Some(P::Exact(s)), false) => Ok(OriginMatch::Exact(s.clone())),
            (Some(P::Prefix(s)), false) => Ok(OriginMatch::Prefix(s.clone())),
            (Some(P::Suffix(s)), false) => Ok(OriginMatch::Suffix(s.clone())),
            (Some(P::Contains(s)), false) => Ok(OriginMatch::Contains(s.clone())),
            (Some(P::Exact(s)), true) => folded(literal(s)),
            (Some(P::Prefix(s)), true) => folded(format!("{}.*", literal(s))),
            (Some(P::Suffix(s)), true) => folded(format!(".*{}", literal(s))),
            (Some(P::Contains(s)), true) => folded(format!(".*{}.*", literal(s))),
            (Some(P::SafeRegex(re)), _) => parse_regex(&re.regex).map(OriginMatch::Regex),
            (Some(P::Custom(_)) | None, _) => {
                Err("exact, prefix, suffix, contains or safe_regex is required".to_owned())
            }
        };
        let m = self.ok(result, place)?;
        // Envoy: a matcher that accepts the literal "*" allows every origin.
        Some(if m.matches("*") { OriginMatch::Any } else { m })
    }

    /// A comma-separated header value whose items each pass `valid` (or `*`).
    fn token_list(
        &mut self,
        list: &str,
        place: &str,
        valid: impl Fn(&str) -> bool,
    ) -> Option<HeaderValue> {
        let list = list.trim();
        if list.is_empty() {
            return None;
        }
        let bad: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|item| *item != "*" && !valid(item))
            .collect();
        if !bad.is_empty() {
            self.problem(place, format!("invalid: {}", bad.join(", ")));
            return None;
        }
        self.ok(
            HeaderValue::from_str(list).map_err(|_| format!("invalid header value {list:?}")),
            place,
        )
    }
}

#[cfg(test)]
#[path = "authn_tests.rs"]
mod tests;
