//! Tests for the `jwt_authn` and `cors` translation: protos built here, translated, and
//! compared with the expected providers, requirements and policies (or problems).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{DataSource, RuntimeFractionalPercent, data_source};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as PbCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, PerRouteConfig, RemoteJwks, RequirementRule,
    jwt_claim_to_header, jwt_provider, jwt_requirement, per_route_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::{BoolValue, Empty};
use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use serde_json::json;

use super::super::Translator;
use crate::authn::tests::{TestKey, now};
use crate::authn::{ClaimToHeader, Requirement, TokenLocation, authenticate};
use crate::http::cors::{CorsPolicy, OriginMatch};

const PLACE: &str = "Listener \"edge\".http_filters[0]";

fn inline(text: String) -> Option<jwt_provider::JwksSourceSpecifier> {
    Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
        specifier: Some(data_source::Specifier::InlineString(text)),
        ..Default::default()
    }))
}

fn jwks_text(key: &TestKey, kid: &str) -> String {
    json!({ "keys": [key.jwk(Some(kid))] }).to_string()
}

fn by_name(name: &str) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.into())),
    }
}

fn any_of(items: Vec<JwtRequirement>) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
            JwtRequirementOrList {
                requirements: items,
            },
        )),
    }
}

fn allow_missing() -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    }
}

fn allow_missing_or_failed() -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissingOrFailed(
            Empty {},
        )),
    }
}

fn problems(t: &Translator) -> Vec<String> {
    t.problems.iter().map(ToString::to_string).collect()
}

/// A file in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn providers_and_requirements() {
    let shop_key = TestKey::es256();
    let partner_key = TestKey::ed25519();
    let file = TempFile::new("partner-jwks.json", &jwks_text(&partner_key, "p1"));
    let cfg = JwtAuthentication {
        providers: HashMap::from([
            (
                "shop".to_owned(),
                JwtProvider {
                    issuer: "https://auth.shop.example".into(),
                    audiences: vec!["shop-api".into()],
                    forward: true,
                    clock_skew_seconds: 30,
                    claim_to_headers: vec![
                        JwtClaimToHeader {
                            header_name: "X-User-Id".into(),
                            claim_name: "sub".into(),
                            ..Default::default()
                        },
                        JwtClaimToHeader {
                            header_name: "x-team".into(),
                            claim_name: "realm.team".into(),
                            ..Default::default()
                        },
                        JwtClaimToHeader {
                            header_name: "x-parent".into(),
                            claim_path: vec![jwt_claim_to_header::PathSegment {
                                key: "https://example.org/parent".into(),
                            }],
                            ..Default::default()
                        },
                    ],
                    jwks_source_specifier: inline(jwks_text(&shop_key, "s1")),
                    ..Default::default()
                },
            ),
            (
                "partner".to_owned(),
                JwtProvider {
                    from_headers: vec![JwtHeader {
                        name: "x-partner-jwt".into(),
                        value_prefix: String::new(),
                    }],
                    jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(
                        DataSource {
                            specifier: Some(data_source::Specifier::Filename(
                                file.0.to_string_lossy().into_owned(),
                            )),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            ),
        ]),
        requirement_map: HashMap::from([
            ("shop".to_owned(), by_name("shop")),
            (
                "either".to_owned(),
                any_of(vec![by_name("shop"), by_name("partner")]),
            ),
            (
                "shop-optional".to_owned(),
                any_of(vec![by_name("shop"), allow_missing()]),
            ),
            ("anyone-optional".to_owned(), allow_missing()),
            ("loose".to_owned(), allow_missing_or_failed()),
            (
                "loose-list".to_owned(),
                any_of(vec![by_name("shop"), allow_missing_or_failed()]),
            ),
        ]),
        bypass_cors_preflight: true,
        ..Default::default()
    };
    let mut t = Translator::default();
    let jwt = t.jwt_authn(&cfg, PLACE).unwrap();
    assert!(t.problems.is_empty(), "{:?}", problems(&t));
    assert!(jwt.bypass_cors_preflight);
    assert!(!jwt.strip_failure_response);

    // Providers in name order: partner = 0, shop = 1.
    let names: Vec<&str> = jwt.providers.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["partner", "shop"]);
    let partner = &jwt.providers[0];
    assert_eq!(partner.issuer, None);
    assert!(partner.audiences.is_empty());
    assert_eq!(partner.clock_skew, Duration::from_secs(60));
    assert!(!partner.forward);
    assert_eq!(
        partner.from,
        [TokenLocation {
            header: HeaderName::from_static("x-partner-jwt"),
            prefix: String::new(),
        }]
    );
    assert_eq!(partner.jwks.keys[0].kid.as_deref(), Some("p1"));
    let shop = &jwt.providers[1];
    assert_eq!(shop.issuer.as_deref(), Some("https://auth.shop.example"));
    assert_eq!(shop.audiences, ["shop-api"]);
    assert_eq!(shop.clock_skew, Duration::from_secs(30));
    assert!(shop.forward);
    assert_eq!(shop.from, [TokenLocation::bearer()]);
    let claim = |path: &[&str], header: &'static str| ClaimToHeader {
        claim: path.iter().map(|s| (*s).to_owned()).collect(),
        header: HeaderName::from_static(header),
    };
    assert_eq!(
        shop.claims_to_headers,
        [
            claim(&["sub"], "x-user-id"),
            claim(&["realm", "team"], "x-team"),
            claim(&["https://example.org/parent"], "x-parent"),
        ]
    );

    use Requirement::*;
    let want: [(&str, Requirement); 6] = [
        ("shop", Provider(1)),
        ("either", AnyOf(vec![Provider(1), Provider(0)])),
        ("shop-optional", AllowMissing(Box::new(Provider(1)))),
        (
            "anyone-optional",
            AllowMissing(Box::new(AnyOf(vec![Provider(0), Provider(1)]))),
        ),
        ("loose", AllowMissingOrFailed),
        ("loose-list", AllowMissingOrFailed),
    ];
    assert_eq!(jwt.requirements.len(), want.len());
    for (name, req) in want {
        assert_eq!(*jwt.requirements[name], req, "{name}");
    }

    // The translated providers verify real tokens.
    let token = partner_key.sign(
        Some("p1"),
        &json!({"sub": "bob", "exp": crate::authn::tests::NOW + 60}),
    );
    let mut headers = HeaderMap::new();
    headers.insert("x-partner-jwt", HeaderValue::from_str(&token).unwrap());
    let v = authenticate(&jwt.providers, &jwt.requirements["either"], &headers, now())
        .unwrap()
        .unwrap();
    assert_eq!((v.provider, v.claims["sub"].as_str()), (0, Some("bob")));
}

#[test]
fn jwt_problems() {
    let key = TestKey::es256();
    let good = || JwtProvider {
        jwks_source_specifier: inline(jwks_text(&key, "k")),
        ..Default::default()
    };
    let with_provider = |p: JwtProvider| JwtAuthentication {
        providers: HashMap::from([("shop".to_owned(), p)]),
        ..Default::default()
    };
    let with_requirement = |r: JwtRequirement| JwtAuthentication {
        providers: HashMap::from([("shop".to_owned(), good())]),
        requirement_map: HashMap::from([("r".to_owned(), r)]),
        ..Default::default()
    };
    let p = format!("{PLACE}.providers[\"shop\"]");
    let r = format!("{PLACE}.requirement_map[\"r\"]");
    let cases: Vec<(&str, JwtAuthentication, String)> = vec![
        (
            "remote jwks",
            with_provider(JwtProvider {
                jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(
                    RemoteJwks::default(),
                )),
                ..Default::default()
            }),
            format!(
                "{p}.remote_jwks: not supported: use local_jwks (Weft does not fetch keys over the network)"
            ),
        ),
        (
            "no jwks",
            with_provider(JwtProvider::default()),
            format!("{p}: local_jwks is required"),
        ),
        (
            "bad jwks",
            with_provider(JwtProvider {
                jwks_source_specifier: inline(r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#.into()),
                ..Default::default()
            }),
            format!(
                "{p}.local_jwks: no usable signature key (keys[0]: kty \"oct\": symmetric (HMAC) keys are not supported)"
            ),
        ),
        (
            "unreadable file",
            with_provider(JwtProvider {
                jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(
                    DataSource {
                        specifier: Some(data_source::Specifier::Filename(
                            "/nonexistent/jwks.json".into(),
                        )),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            format!("{p}.local_jwks.filename: cannot read \"/nonexistent/jwks.json\""),
        ),
        (
            "environment variable",
            with_provider(JwtProvider {
                jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(
                    DataSource {
                        specifier: Some(data_source::Specifier::EnvironmentVariable("JWKS".into())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            format!("{p}.local_jwks.environment_variable: not supported"),
        ),
        (
            "query parameter tokens",
            with_provider(JwtProvider {
                from_params: vec!["access_token".into()],
                ..good()
            }),
            format!("{p}.from_params: not supported yet"),
        ),
        (
            "payload header",
            with_provider(JwtProvider {
                forward_payload_header: "x-jwt-payload".into(),
                ..good()
            }),
            format!("{p}.forward_payload_header: not supported yet"),
        ),
        (
            "require expiration",
            with_provider(JwtProvider {
                require_expiration: true,
                ..good()
            }),
            format!("{p}.require_expiration: not supported yet"),
        ),
        (
            "claim to host",
            with_provider(JwtProvider {
                claim_to_headers: vec![JwtClaimToHeader {
                    header_name: "Host".into(),
                    claim_name: "sub".into(),
                    ..Default::default()
                }],
                ..good()
            }),
            format!("{p}.claim_to_headers[0].header_name: a claim cannot be written to \"host\""),
        ),
        (
            "claim name and path",
            with_provider(JwtProvider {
                claim_to_headers: vec![JwtClaimToHeader {
                    header_name: "x-sub".into(),
                    claim_name: "sub".into(),
                    claim_path: vec![jwt_claim_to_header::PathSegment { key: "sub".into() }],
                }],
                ..good()
            }),
            format!("{p}.claim_to_headers[0]: give exactly one of claim_name and claim_path"),
        ),
        (
            "bad token header",
            with_provider(JwtProvider {
                from_headers: vec![JwtHeader {
                    name: "bad header".into(),
                    value_prefix: String::new(),
                }],
                ..good()
            }),
            format!("{p}.from_headers[0].name: invalid header name \"bad header\""),
        ),
        (
            "route rules",
            JwtAuthentication {
                providers: HashMap::from([("shop".to_owned(), good())]),
                rules: vec![RequirementRule::default()],
                ..Default::default()
            },
            format!("{PLACE}.rules: not supported"),
        ),
        (
            "unknown provider",
            with_requirement(by_name("shopp")),
            format!("{r}.provider_name: unknown provider \"shopp\""),
        ),
        (
            "unknown provider in a list",
            with_requirement(any_of(vec![by_name("shop"), by_name("partner")])),
            format!("{r}.requires_any.requirements[1].provider_name: unknown provider \"partner\""),
        ),
        (
            "requires all",
            with_requirement(JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::RequiresAll(
                    JwtRequirementAndList::default(),
                )),
            }),
            format!("{r}.requires_all: not supported yet"),
        ),
        (
            "empty requirement",
            with_requirement(JwtRequirement::default()),
            format!("{r}: an empty requirement checks nothing"),
        ),
        (
            "extract only",
            with_requirement(JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::ExtractOnlyWithoutValidation(
                    Default::default(),
                )),
            }),
            format!("{r}.extract_only_without_validation: not supported"),
        ),
    ];
    for (name, cfg, want) in cases {
        let mut t = Translator::default();
        let got = t.jwt_authn(&cfg, PLACE);
        assert!(got.is_none(), "{name}: accepted");
        let found = problems(&t);
        assert!(
            found.iter().any(|p| p.starts_with(&want)),
            "{name}: want {want:?}, got {found:?}"
        );
    }
}

#[test]
fn per_route_requirements() {
    let jwt = crate::authn::JwtConfig {
        requirements: HashMap::from([("shop".to_owned(), Arc::new(Requirement::Provider(0)))]),
        ..Default::default()
    };
    use per_route_config::RequirementSpecifier as S;
    let place = "RouteConfiguration \"edge\".virtual_hosts[0].routes[2].typed_per_filter_config[\"envoy.filters.http.jwt_authn\"]";
    type Want = Result<Option<Requirement>, String>;
    let cases: Vec<(Option<S>, Want)> = vec![
        (Some(S::Disabled(true)), Ok(None)),
        (
            Some(S::RequirementName("shop".into())),
            Ok(Some(Requirement::Provider(0))),
        ),
        (
            Some(S::RequirementName("admin".into())),
            Err(format!(
                "{place}.requirement_name: unknown requirement \"admin\"; the jwt_authn filter's requirement_map has: shop"
            )),
        ),
        (
            Some(S::Disabled(false)),
            Err(format!("{place}: give requirement_name, or disabled: true")),
        ),
        (
            None,
            Err(format!("{place}: give requirement_name, or disabled: true")),
        ),
    ];
    for (spec, want) in cases {
        let mut t = Translator::default();
        let cfg = PerRouteConfig {
            requirement_specifier: spec.clone(),
        };
        let got = t
            .jwt_per_route(&cfg, &jwt, place)
            .map(|r| r.map(|r| (*r).clone()))
            .ok_or_else(|| problems(&t).join("; "));
        assert_eq!(got, want, "{spec:?}");
    }
}

fn matcher(p: string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case,
    }
}

#[test]
fn cors_policies() {
    use string_matcher::MatchPattern as P;
    let p = PbCorsPolicy {
        allow_origin_string_match: vec![
            matcher(P::Exact("https://shop.example".into()), false),
            matcher(P::Suffix(".shop.example".into()), false),
            matcher(P::Prefix("https://Admin.".into()), true),
            matcher(
                P::SafeRegex(RegexMatcher {
                    regex: r"https://[a-z]+\.partner\.example".into(),
                    ..Default::default()
                }),
                false,
            ),
        ],
        allow_methods: "GET, POST".into(),
        allow_headers: "authorization,content-type".into(),
        expose_headers: "x-request-id".into(),
        max_age: "3600".into(),
        allow_credentials: Some(BoolValue { value: true }),
        allow_private_network_access: Some(BoolValue { value: true }),
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    };
    let mut t = Translator::default();
    let got = t.cors_policy(&p, "route").unwrap();
    assert!(t.problems.is_empty(), "{:?}", problems(&t));
    let want = CorsPolicy {
        allow_origins: vec![
            OriginMatch::Exact("https://shop.example".into()),
            OriginMatch::Suffix(".shop.example".into()),
            OriginMatch::Regex(Regex::new(r"^(?:(?i)https://Admin\..*)$").unwrap()),
            OriginMatch::Regex(Regex::new(r"^(?:https://[a-z]+\.partner\.example)$").unwrap()),
        ],
        allow_methods: Some(HeaderValue::from_static("GET, POST")),
        allow_headers: Some(HeaderValue::from_static("authorization,content-type")),
        expose_headers: Some(HeaderValue::from_static("x-request-id")),
        max_age: Some(Duration::from_secs(3600)),
        allow_credentials: true,
        allow_private_network: true,
        forward_not_matching_preflights: false,
    };
    assert_eq!(got, want);
    assert!(got.allows("https://admin.shop.example"));
    assert!(got.allows("https://ADMIN.example"));
    assert!(!got.allows("https://x.partner.example.evil"));

    // Defaults, and matchers that accept "*" meaning any origin.
    let any = PbCorsPolicy {
        allow_origin_string_match: vec![matcher(P::Exact("*".into()), false)],
        ..Default::default()
    };
    let mut t = Translator::default();
    assert_eq!(
        t.cors_policy(&any, "route").unwrap(),
        CorsPolicy {
            allow_origins: vec![OriginMatch::Any],
            ..CorsPolicy::default()
        }
    );
    let regex_any = PbCorsPolicy {
        allow_origin_string_match: vec![matcher(
            P::SafeRegex(RegexMatcher {
                regex: ".*".into(),
                ..Default::default()
            }),
            false,
        )],
        ..Default::default()
    };
    assert_eq!(
        t.cors_policy(&regex_any, "route").unwrap().allow_origins,
        [OriginMatch::Any]
    );
    // Switched off: no origin is allowed, so nothing is answered or added.
    let off = PbCorsPolicy {
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 0,
                denominator: 0,
            }),
            runtime_key: String::new(),
        }),
        ..any
    };
    assert!(
        t.cors_policy(&off, "route")
            .unwrap()
            .allow_origins
            .is_empty()
    );
    assert!(t.problems.is_empty(), "{:?}", problems(&t));
}

#[test]
fn cors_problems() {
    use string_matcher::MatchPattern as P;
    let base = || PbCorsPolicy {
        allow_origin_string_match: vec![matcher(P::Exact("https://shop.example".into()), false)],
        ..Default::default()
    };
    let half = RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 50,
            denominator: 0,
        }),
        runtime_key: String::new(),
    };
    let cases: Vec<(&str, PbCorsPolicy, &str)> = vec![
        (
            "bad regex",
            PbCorsPolicy {
                allow_origin_string_match: vec![matcher(
                    P::SafeRegex(RegexMatcher {
                        regex: "(".into(),
                        ..Default::default()
                    }),
                    false,
                )],
                ..Default::default()
            },
            "route.allow_origin_string_match[0]: invalid regex \"(\"",
        ),
        (
            "no pattern",
            PbCorsPolicy {
                allow_origin_string_match: vec![StringMatcher::default()],
                ..Default::default()
            },
            "route.allow_origin_string_match[0]: exact, prefix, suffix, contains or safe_regex is required",
        ),
        (
            "bad method",
            PbCorsPolicy {
                allow_methods: "GET, P O S T".into(),
                ..base()
            },
            "route.allow_methods: invalid: P O S T",
        ),
        (
            "bad header",
            PbCorsPolicy {
                expose_headers: "x-ok, x bad".into(),
                ..base()
            },
            "route.expose_headers: invalid: x bad",
        ),
        (
            "bad max age",
            PbCorsPolicy {
                max_age: "1h".into(),
                ..base()
            },
            "route.max_age: \"1h\" is not a number of seconds",
        ),
        (
            "partial rollout",
            PbCorsPolicy {
                filter_enabled: Some(half.clone()),
                ..base()
            },
            "route.filter_enabled: only 0% or 100% is supported",
        ),
        (
            "shadow",
            PbCorsPolicy {
                shadow_enabled: Some(half),
                ..base()
            },
            "route.shadow_enabled: not supported",
        ),
    ];
    for (name, p, want) in cases {
        let mut t = Translator::default();
        assert!(t.cors_policy(&p, "route").is_none(), "{name}: accepted");
        let found = problems(&t);
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{name}: want {want:?}, got {found:?}"
        );
    }
}

/// The second half of the round trip: the Envoy form the friendly example compiles to
/// (checked in the compiler's tests) becomes these providers, requirements and policy.
#[test]
fn the_friendly_example_round_trips() {
    use crate::authn::tests::envoy_form;
    let shop_key = TestKey::es256();
    let partner_key = TestKey::ed25519();
    let file = TempFile::new("translate-partner.json", &jwks_text(&partner_key, "p1"));
    let cfg =
        envoy_form::jwt_authentication(&jwks_text(&shop_key, "s1"), &file.0.to_string_lossy());
    let mut t = Translator::default();
    let jwt = t.jwt_authn(&cfg, PLACE).unwrap();
    assert!(t.problems.is_empty(), "{:?}", problems(&t));
    assert!(jwt.bypass_cors_preflight);
    let [partner, shop] = jwt.providers.as_slice() else {
        panic!("two providers");
    };
    assert_eq!((&*partner.name, &*shop.name), ("partner", "shop"));
    assert!(partner.forward && !shop.forward);
    assert_eq!(partner.issuer, None);
    assert_eq!(shop.issuer.as_deref(), Some("https://auth.shop.example"));
    assert_eq!(shop.audiences, ["shop-api"]);
    assert_eq!(shop.clock_skew, Duration::from_secs(30));
    assert_eq!(shop.from, [TokenLocation::bearer()]);
    assert_eq!(
        shop.claims_to_headers,
        [
            ClaimToHeader {
                claim: vec!["sub".into()],
                header: HeaderName::from_static("x-user-id"),
            },
            ClaimToHeader {
                claim: vec!["realm".into(), "team".into()],
                header: HeaderName::from_static("x-team"),
            },
        ]
    );
    use Requirement::*;
    for (_, name) in envoy_form::ROUTES {
        let route = PerRouteConfig {
            requirement_specifier: Some(per_route_config::RequirementSpecifier::RequirementName(
                name.to_owned(),
            )),
        };
        let got = t.jwt_per_route(&route, &jwt, "route").unwrap().unwrap();
        let want = match name {
            "shop" => Provider(1),
            "any:partner,shop" => AnyOf(vec![Provider(0), Provider(1)]),
            "optional:shop" => AllowMissing(Box::new(Provider(1))),
            other => panic!("unexpected requirement {other}"),
        };
        assert_eq!(*got, want, "{name}");
    }

    // Tokens through the translated configuration.
    let n = crate::authn::tests::NOW;
    let shop_token = shop_key.sign(
        Some("s1"),
        &json!({"iss": "https://auth.shop.example", "aud": "shop-api", "sub": "alice",
                "realm": {"team": "payments"}, "exp": n + 60}),
    );
    let partner_token = partner_key.sign(Some("p1"), &json!({"sub": "bob"}));
    let bearer = |t: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    };
    let any = &jwt.requirements["any:partner,shop"];
    let v = authenticate(&jwt.providers, any, &bearer(&partner_token), now())
        .unwrap()
        .unwrap();
    assert_eq!(v.provider, 0);
    let mut headers = bearer(&shop_token);
    headers.insert("x-team", HeaderValue::from_static("spoofed"));
    let v = authenticate(&jwt.providers, &jwt.requirements["shop"], &headers, now())
        .unwrap()
        .unwrap();
    crate::authn::apply(&jwt.providers[v.provider], &v, &mut headers);
    assert_eq!(headers["x-user-id"], "alice");
    assert_eq!(headers["x-team"], "payments");
    assert!(!headers.contains_key("authorization"));
    let optional = &jwt.requirements["optional:shop"];
    assert_eq!(
        authenticate(&jwt.providers, optional, &HeaderMap::new(), now()),
        Ok(None)
    );

    let cors = t.cors_policy(&envoy_form::cors_policy(), "route").unwrap();
    assert!(t.problems.is_empty(), "{:?}", problems(&t));
    assert_eq!(
        cors,
        CorsPolicy {
            allow_origins: vec![
                OriginMatch::Exact("https://shop.example".into()),
                OriginMatch::Regex(
                    Regex::new(r"^(?:https://(?:[a-z0-9-]+\.)+shop\.example)$").unwrap()
                ),
            ],
            allow_methods: Some(HeaderValue::from_static("GET, POST")),
            allow_headers: Some(HeaderValue::from_static("authorization, content-type")),
            expose_headers: Some(HeaderValue::from_static("x-request-id")),
            max_age: Some(Duration::from_secs(3600)),
            allow_credentials: true,
            allow_private_network: false,
            forward_not_matching_preflights: true,
        }
    );
    for (origin, allowed) in [
        ("https://shop.example", true),
        ("https://app.shop.example", true),
        ("https://shop.example.evil", false),
        ("https://evil.example", false),
    ] {
        assert_eq!(cors.allows(origin), allowed, "{origin}");
    }
}
