//! Tests for compiling friendly JWT and CORS settings: the example compiles to the shared
//! Envoy form (which the translator's tests take on to snapshot types), and every
//! mistake is reported at its YAML path.

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{
    Cors, CorsPolicy as PbCorsPolicy,
};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, PerRouteConfig, per_route_config,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::*;
use crate::authn::tests::{TestKey, envoy_form};

fn unpack<T: Message + Name + Default>(any: &Any) -> T {
    assert_eq!(any.type_url, T::type_url());
    T::decode(any.value.as_slice()).unwrap()
}

fn filter_config<T: Message + Name + Default>(f: &hcm::HttpFilter) -> T {
    match &f.config_type {
        Some(hcm::http_filter::ConfigType::TypedConfig(any)) => unpack(any),
        other => panic!("no typed config: {other:?}"),
    }
}

fn listener() -> YamlPath {
    YamlPath::root().key("listeners").index(0)
}

fn route_path(i: usize, field: &str) -> YamlPath {
    listener().key("routes").index(i).key(field)
}

fn providers(yaml: &str) -> IndexMap<String, JwtProviderSpec> {
    serde_saphyr::from_str(yaml).unwrap()
}

fn route_spec(yaml: &str) -> JwtRouteSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn problems(cx: &Compiler) -> Vec<String> {
    cx.problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

/// A file in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn jwks_text(key: &TestKey, kid: &str) -> String {
    serde_json::json!({ "keys": [key.jwk(Some(kid))] }).to_string()
}

#[test]
fn the_example_compiles_to_the_shared_envoy_form() {
    let shop_jwks = jwks_text(&TestKey::es256(), "s1");
    let file = TempFile::new(
        "compile-partner.json",
        &jwks_text(&TestKey::ed25519(), "p1"),
    );
    let yaml = envoy_form::PROVIDERS_YAML
        .replace("{SHOP_JWKS}", &shop_jwks)
        .replace("{PARTNER_FILE}", &file.path());
    let specs: Vec<JwtRouteSpec> = envoy_form::ROUTES
        .iter()
        .map(|(y, _)| route_spec(y))
        .collect();
    let routes: Vec<(YamlPath, &JwtRouteSpec)> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (route_path(i, "jwt"), s))
        .collect();
    let mut cx = Compiler::default();
    let filter = cx
        .jwt_filter(&providers(&yaml), &routes, &listener())
        .unwrap();
    assert!(cx.problems.is_empty(), "{:?}", problems(&cx));
    assert_eq!(filter.name, "envoy.filters.http.jwt_authn");
    assert_eq!(
        filter_config::<JwtAuthentication>(&filter),
        envoy_form::jwt_authentication(&shop_jwks, &file.path())
    );
    for (spec, (_, name)) in specs.iter().zip(envoy_form::ROUTES) {
        let per_route: PerRouteConfig = unpack(&jwt_route_config(spec));
        assert_eq!(
            per_route.requirement_specifier,
            Some(per_route_config::RequirementSpecifier::RequirementName(
                name.to_owned()
            ))
        );
    }

    let cors: CorsSpec = serde_saphyr::from_str(envoy_form::CORS_YAML).unwrap();
    let any = cx.cors_route_config(&cors, &route_path(0, "cors")).unwrap();
    assert!(cx.problems.is_empty(), "{:?}", problems(&cx));
    assert_eq!(unpack::<PbCorsPolicy>(&any), envoy_form::cors_policy());
    let filter = cors_filter();
    assert_eq!(filter.name, "envoy.filters.http.cors");
    assert_eq!(filter_config::<Cors>(&filter), Cors {});
}

#[test]
fn the_same_requirement_is_written_once() {
    let jwks = jwks_text(&TestKey::es256(), "k");
    let p = providers(&format!(
        "a: {{ jwks: {{ inline: '{jwks}' }} }}\nb: {{ jwks: {{ inline: '{jwks}' }} }}"
    ));
    let specs = [
        route_spec("a"),
        route_spec("{ provider: a }"),
        route_spec("{ any_of: [b, a] }"),
        route_spec("{ any_of: [a, b] }"),
        route_spec("{ any_of: [a] }"),
    ];
    let routes: Vec<(YamlPath, &JwtRouteSpec)> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (route_path(i, "jwt"), s))
        .collect();
    let mut cx = Compiler::default();
    let filter = cx.jwt_filter(&p, &routes, &listener()).unwrap();
    let mut names: Vec<String> = filter_config::<JwtAuthentication>(&filter)
        .requirement_map
        .into_keys()
        .collect();
    names.sort();
    assert_eq!(names, ["a", "any:a,b"]);
}

#[test]
fn a_listener_without_providers_gets_no_filter() {
    let mut cx = Compiler::default();
    assert!(cx.jwt_filter(&IndexMap::new(), &[], &listener()).is_none());
    assert!(cx.problems.is_empty());
}

#[test]
fn route_spec_forms() {
    let cases: [(&str, Result<JwtRouteSpec, &str>); 5] = [
        ("shop", Ok(JwtRouteSpec::Provider("shop".into()))),
        (
            "{ any_of: [a, b] }",
            Ok(JwtRouteSpec::Rule(JwtRule {
                any_of: vec!["a".into(), "b".into()],
                ..Default::default()
            })),
        ),
        (
            "{ provider: a, allow_missing: true }",
            Ok(JwtRouteSpec::Rule(JwtRule {
                provider: Some("a".into()),
                allow_missing: true,
                ..Default::default()
            })),
        ),
        (
            "{ provider: a, alow_missing: true }",
            Err("unknown field `alow_missing`"),
        ),
        ("[a, b]", Err("a provider name or a map")),
    ];
    for (yaml, want) in cases {
        let got = serde_saphyr::from_str::<JwtRouteSpec>(yaml).map_err(|e| e.to_string());
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{yaml}"),
            (Err(g), Err(w)) => assert!(g.contains(w), "{yaml}: {g}"),
            (g, w) => panic!("{yaml}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn jwt_problems_are_located() {
    let jwks = jwks_text(&TestKey::es256(), "k");
    let garbage = TempFile::new("compile-garbage.json", "not json");
    let garbage_path = garbage.path();
    let good = format!("shop: {{ jwks: {{ inline: '{jwks}' }} }}");
    let shop = "listeners[0].jwt_providers.shop";
    // (providers YAML, route specs, expected "path: message" prefix)
    let cases: Vec<(String, Vec<&str>, String)> = vec![
        (
            good.clone(),
            vec!["shop", "shopp"],
            "listeners[0].routes[1].jwt: unknown JWT provider \"shopp\" (did you mean \"shop\"?)".into(),
        ),
        (
            good.clone(),
            vec!["{ any_of: [shop, other] }"],
            "listeners[0].routes[0].jwt: unknown JWT provider \"other\"; defined: shop".into(),
        ),
        (
            String::new(),
            vec!["shop"],
            "listeners[0].routes[0].jwt: unknown JWT provider \"shop\": the listener has no jwt_providers".into(),
        ),
        (
            good.clone(),
            vec!["{ provider: shop, any_of: [shop] }"],
            "listeners[0].routes[0].jwt: give exactly one of `provider` and `any_of`".into(),
        ),
        (
            good.clone(),
            vec!["{ allow_missing: true }"],
            "listeners[0].routes[0].jwt: give exactly one of `provider` and `any_of`".into(),
        ),
        (
            good.clone(),
            vec!["{ any_of: [shop, shop] }"],
            "listeners[0].routes[0].jwt: a provider is listed twice".into(),
        ),
        (
            "shop: { jwks: { file: /nonexistent/jwks.json } }".into(),
            vec![],
            format!("{shop}.jwks: cannot read \"/nonexistent/jwks.json\""),
        ),
        (
            format!("shop: {{ jwks: {{ file: '{garbage_path}' }} }}"),
            vec![],
            format!("{shop}.jwks: {garbage_path}: not a JWKS"),
        ),
        (
            r#"shop: { jwks: { inline: '{"keys": []}' } }"#.into(),
            vec![],
            format!("{shop}.jwks: no usable signature key"),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}', file: /x }} }}"),
            vec![],
            format!("{shop}.jwks: give exactly one of `file` and `inline`"),
        ),
        (
            "shop: { jwks: {} }".into(),
            vec![],
            format!("{shop}.jwks: give exactly one of `file` and `inline`"),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}' }}, clock_skew: 0s }}"),
            vec![],
            format!("{shop}.clock_skew: give whole seconds, at least 1s"),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}' }}, clock_skew: 1500ms }}"),
            vec![],
            format!("{shop}.clock_skew: give whole seconds, at least 1s"),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}' }}, claims_to_headers: {{ sub: 'x user' }} }}"),
            vec![],
            format!("{shop}.claims_to_headers.sub: invalid header name \"x user\""),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}' }}, claims_to_headers: {{ sub: Host }} }}"),
            vec![],
            format!("{shop}.claims_to_headers.sub: a claim cannot be written to \"host\""),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}' }}, claims_to_headers: {{ a..b: x-ab }} }}"),
            vec![],
            format!("{shop}.claims_to_headers[\"a..b\"]: invalid claim name \"a..b\""),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}' }}, issuer: '' }}"),
            vec![],
            format!("{shop}.issuer: must not be empty"),
        ),
        (
            format!("shop: {{ jwks: {{ inline: '{jwks}' }}, audiences: [a, ''] }}"),
            vec![],
            format!("{shop}.audiences[1]: must not be empty"),
        ),
        (
            format!("'my shop': {{ jwks: {{ inline: '{jwks}' }} }}"),
            vec![],
            "listeners[0].jwt_providers[\"my shop\"]: provider name \"my shop\": use letters, digits".into(),
        ),
    ];
    for (yaml, routes, want) in cases {
        let p = if yaml.is_empty() {
            IndexMap::new()
        } else {
            providers(&yaml)
        };
        let specs: Vec<JwtRouteSpec> = routes.iter().map(|y| route_spec(y)).collect();
        let routes: Vec<(YamlPath, &JwtRouteSpec)> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (route_path(i, "jwt"), s))
            .collect();
        let mut cx = Compiler::default();
        cx.jwt_filter(&p, &routes, &listener());
        let found = problems(&cx);
        assert!(
            found.iter().any(|p| p.starts_with(&want)),
            "want {want:?}, got {found:?}"
        );
    }
}

#[test]
fn cors_problems_are_located() {
    let at = "listeners[0].routes[0].cors";
    let cases: Vec<(&str, String)> = vec![
        (
            "allow_origins: []",
            format!("{at}.allow_origins: list at least one origin"),
        ),
        (
            "allow_origins: [shop.example]",
            format!("{at}.allow_origins[0]: invalid origin \"shop.example\""),
        ),
        (
            "allow_origins: ['https://shop.example/']",
            format!("{at}.allow_origins[0]: invalid origin"),
        ),
        (
            "allow_origins: ['https://shop.example:0']",
            format!("{at}.allow_origins[0]: invalid origin"),
        ),
        (
            "allow_origins: ['https://shop.*.example']",
            format!("{at}.allow_origins[0]: invalid origin"),
        ),
        (
            "allow_origins: ['https://*.*.example']",
            format!("{at}.allow_origins[0]: invalid origin"),
        ),
        (
            "allow_origins: ['https://user@shop.example']",
            format!("{at}.allow_origins[0]: invalid origin"),
        ),
        (
            "allow_origins: ['null']",
            format!("{at}.allow_origins[0]: the \"null\" origin"),
        ),
        (
            "{ allow_origins: ['*'], allow_credentials: true }",
            format!("{at}.allow_origins[0]: \"*\" with allow_credentials"),
        ),
        (
            "{ allow_origins: ['*'], allow_methods: [get] }",
            format!("{at}.allow_methods[0]: method \"get\" must be upper case"),
        ),
        (
            "{ allow_origins: ['*'], allow_headers: ['x a'] }",
            format!("{at}.allow_headers[0]: invalid header name \"x a\""),
        ),
        (
            "{ allow_origins: ['*'], expose_headers: [ok, 'x a'] }",
            format!("{at}.expose_headers[1]: invalid header name \"x a\""),
        ),
        (
            "{ allow_origins: ['*'], max_age: 1500ms }",
            format!("{at}.max_age: give whole seconds"),
        ),
    ];
    for (yaml, want) in cases {
        let spec: CorsSpec = serde_saphyr::from_str(yaml).unwrap();
        let mut cx = Compiler::default();
        assert!(
            cx.cors_route_config(&spec, &route_path(0, "cors"))
                .is_none(),
            "{yaml}: accepted"
        );
        let found = problems(&cx);
        assert!(
            found.iter().any(|p| p.starts_with(&want)),
            "{yaml}: want {want:?}, got {found:?}"
        );
    }
}

#[test]
fn origin_patterns() {
    use string_matcher::MatchPattern as P;
    // (pattern, Envoy matcher, origins it must and must not allow)
    let cases: [(&str, P, &[&str], &[&str]); 6] = [
        ("*", P::Exact("*".into()), &[], &[]),
        (
            "https://Shop.Example",
            P::Exact("https://shop.example".into()),
            &["https://shop.example"],
            &["https://shop.example:443", "http://shop.example"],
        ),
        (
            "http://localhost:3000",
            P::Exact("http://localhost:3000".into()),
            &["http://localhost:3000"],
            &["http://localhost:3001"],
        ),
        (
            "http://[::1]:8080",
            P::Exact("http://[::1]:8080".into()),
            &["http://[::1]:8080"],
            &[],
        ),
        (
            "https://*.shop.example",
            P::SafeRegex(RegexMatcher {
                regex: r"https://(?:[a-z0-9-]+\.)+shop\.example".into(),
                ..Default::default()
            }),
            &["https://a.shop.example", "https://a-1.b.shop.example"],
            &[
                "https://shop.example",
                "https://evilshop.example",
                "https://a.shop.example.evil",
                "https://a.shop.example:8443",
                "http://a.shop.example",
            ],
        ),
        (
            "https://*.shop.example:8443",
            P::SafeRegex(RegexMatcher {
                regex: r"https://(?:[a-z0-9-]+\.)+shop\.example:8443".into(),
                ..Default::default()
            }),
            &["https://a.shop.example:8443"],
            &["https://a.shop.example"],
        ),
    ];
    for (pattern, want, allowed, refused) in cases {
        let m = origin_matcher(pattern).unwrap();
        assert_eq!(m.match_pattern.as_ref(), Some(&want), "{pattern}");
        let test = |origin: &str| match &want {
            P::Exact(e) => e == origin,
            P::SafeRegex(re) => checks::parse_regex(&re.regex).unwrap().is_match(origin),
            _ => unreachable!(),
        };
        for o in allowed {
            assert!(test(o), "{pattern} should allow {o}");
        }
        for o in refused {
            assert!(!test(o), "{pattern} should refuse {o}");
        }
    }
}
