//! Tests for JWT authentication with real keys and real signed tokens: key pairs are
//! generated here, their public halves written as a JWKS, tokens signed with
//! `jsonwebtoken` and checked at a fixed clock.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

// ---- keys and tokens ----

/// The test clock.
pub(crate) const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://auth.shop.example";
const AUD: &str = "shop-api";

pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// A generated key pair: the private half signs, the public half goes into a JWKS.
pub(crate) struct TestKey {
    enc: EncodingKey,
    alg: Algorithm,
    /// The public JWK members without `kid`, `alg` and `use`.
    public: Value,
    /// RSA only: the public key as PKCS#1 DER (what an HMAC confusion attack uses).
    public_der: Vec<u8>,
}

impl TestKey {
    pub(crate) fn es256() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        assert_eq!(
            (raw.len(), raw[0]),
            (65, 0x04),
            "an uncompressed P-256 point"
        );
        Self {
            enc: EncodingKey::from_ec_der(&kp.serialize_der()),
            alg: Algorithm::ES256,
            public: json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..])}),
            public_der: Vec::new(),
        }
    }

    pub(crate) fn ed25519() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Self {
            enc: EncodingKey::from_ed_der(&kp.serialize_der()),
            alg: Algorithm::EdDSA,
            public: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key_raw())}),
            public_der: Vec::new(),
        }
    }

    fn rsa() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        // jsonwebtoken signs with a PKCS#1 RSAPrivateKey: unwrap it from PKCS#8.
        let pkcs8 = kp.serialize_der();
        let (_, info, _) = der(&pkcs8);
        let (_, _version, rest) = der(info);
        let (_, _algorithm, rest) = der(rest);
        let (tag, pkcs1, _) = der(rest);
        assert_eq!(tag, 0x04, "PKCS#8 wraps the key in an OCTET STRING");
        let public_der = kp.public_key_raw().to_vec();
        let (_, seq, _) = der(&public_der);
        let (_, n, rest) = der(seq);
        let (_, e, _) = der(rest);
        let n = n.strip_prefix(&[0]).unwrap_or(n);
        Self {
            enc: EncodingKey::from_rsa_der(pkcs1),
            alg: Algorithm::RS256,
            public: json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
            public_der,
        }
    }

    /// The public JWK, with a `kid` and `alg` when given.
    pub(crate) fn jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = self.public.clone();
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk["alg"] = serde_json::to_value(self.alg).unwrap();
        jwk
    }

    /// A token over `claims`, signed with this key's algorithm.
    pub(crate) fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        self.sign_as(self.alg, kid, claims)
    }

    fn sign_as(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.enc).unwrap()
    }
}

// Two RSA keys, generated once: RSA generation is the slow part of these tests.
static RSA_A: LazyLock<TestKey> = LazyLock::new(TestKey::rsa);
static RSA_B: LazyLock<TestKey> = LazyLock::new(TestKey::rsa);

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One DER element: (tag, contents, what follows).
fn der(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let (len, header) = if input[1] & 0x80 == 0 {
        (usize::from(input[1]), 2)
    } else {
        let n = usize::from(input[1] & 0x7f);
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (
        input[0],
        &input[header..header + len],
        &input[header + len..],
    )
}

pub(crate) fn jwks_of(keys: &[Value]) -> Jwks {
    Jwks::parse(&json!({ "keys": keys }).to_string()).unwrap()
}

fn provider(jwks: Jwks) -> Provider {
    Provider {
        name: Arc::from("shop"),
        issuer: Some(ISS.to_owned()),
        audiences: vec![AUD.to_owned()],
        jwks,
        clock_skew: DEFAULT_CLOCK_SKEW,
        forward: false,
        claims_to_headers: Vec::new(),
        from: vec![TokenLocation::bearer()],
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": NOW, "exp": NOW + 3600})
}

/// `claims()` with some members replaced (`null` removes one).
fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn check(p: &Provider, headers: &HeaderMap) -> Result<Option<Verified>, AuthnError> {
    authenticate(
        std::slice::from_ref(p),
        &Requirement::Provider(0),
        headers,
        now(),
    )
}

/// A token with a hand-written header and payload and a junk signature.
fn forged(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

// ---- verification ----

#[test]
fn valid_tokens_of_each_algorithm_pass() {
    let es = TestKey::es256();
    let ed = TestKey::ed25519();
    let cases: [(&str, &TestKey); 3] = [("RS256", &RSA_A), ("ES256", &es), ("EdDSA", &ed)];
    for (name, key) in cases {
        let p = provider(jwks_of(&[key.jwk(Some("k1"))]));
        let token = key.sign(Some("k1"), &claims());
        let v = check(&p, &bearer(&token))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap();
        assert_eq!(v.provider, 0, "{name}");
        assert_eq!(v.claims["sub"], "alice", "{name}");
    }
}

#[test]
fn time_and_claim_checks() {
    let key = TestKey::es256();
    let p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    let n = NOW as i64;
    let cases: &[(&str, Value, Result<(), AuthnError>)] = &[
        ("expired", json!({"exp": n - 120}), Err(AuthnError::Expired)),
        ("expired within skew", json!({"exp": n - 30}), Ok(())),
        (
            "expired at the edge of skew",
            json!({"exp": n - 60}),
            Ok(()),
        ),
        ("no exp (Envoy accepts)", json!({"exp": null}), Ok(())),
        (
            "exp not a number",
            json!({"exp": "soon"}),
            Err(AuthnError::Malformed),
        ),
        (
            "not yet valid",
            json!({"nbf": n + 120}),
            Err(AuthnError::NotYetValid),
        ),
        ("nbf within skew", json!({"nbf": n + 30}), Ok(())),
        ("nbf past", json!({"nbf": n - 30}), Ok(())),
        (
            "wrong issuer",
            json!({"iss": "https://evil.example"}),
            Err(AuthnError::BadIssuer),
        ),
        (
            "no issuer",
            json!({"iss": null}),
            Err(AuthnError::BadIssuer),
        ),
        (
            "wrong audience",
            json!({"aud": "other-api"}),
            Err(AuthnError::BadAudience),
        ),
        (
            "no audience",
            json!({"aud": null}),
            Err(AuthnError::BadAudience),
        ),
        ("audience array", json!({"aud": ["other-api", AUD]}), Ok(())),
        (
            "audience array without ours",
            json!({"aud": ["a", "b"]}),
            Err(AuthnError::BadAudience),
        ),
        (
            "audience not a string",
            json!({"aud": 7}),
            Err(AuthnError::BadAudience),
        ),
    ];
    for (name, changes, want) in cases {
        let token = key.sign(Some("k1"), &claims_with(changes.clone()));
        let got = check(&p, &bearer(&token)).map(|v| assert!(v.is_some()));
        assert_eq!(got, *want, "{name}");
    }
}

#[test]
fn issuer_and_audiences_unset_are_not_checked() {
    let key = TestKey::es256();
    let mut p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    p.issuer = None;
    p.audiences.clear();
    let token = key.sign(
        Some("k1"),
        &claims_with(json!({"iss": "anyone", "aud": "anything"})),
    );
    assert!(check(&p, &bearer(&token)).unwrap().is_some());
}

#[test]
fn clock_skew_is_the_providers() {
    let key = TestKey::es256();
    let mut p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    p.clock_skew = Duration::from_secs(5);
    let token = key.sign(Some("k1"), &claims_with(json!({"exp": NOW - 30})));
    assert_eq!(check(&p, &bearer(&token)), Err(AuthnError::Expired));
}

#[test]
fn a_token_signed_by_another_key_with_the_same_kid_is_refused() {
    let p = provider(jwks_of(&[RSA_A.jwk(Some("k1"))]));
    let token = RSA_B.sign(Some("k1"), &claims());
    assert_eq!(check(&p, &bearer(&token)), Err(AuthnError::BadSignature));
    // A tampered payload under a genuine signature, likewise.
    let good = RSA_A.sign(Some("k1"), &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims_with(json!({"sub": "admin"})).to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(check(&p, &bearer(&tampered)), Err(AuthnError::BadSignature));
}

#[test]
fn algorithm_confusion_is_refused() {
    let p = provider(jwks_of(&[RSA_A.jwk(Some("k1"))]));
    // `alg: none` with an empty signature, as an attacker writes it.
    let none = forged(&json!({"alg": "none", "kid": "k1"}), &claims(), "");
    assert_eq!(check(&p, &bearer(&none)), Err(AuthnError::UnsupportedAlg));
    let none_no_kid = forged(&json!({"alg": "none"}), &claims(), "");
    assert_eq!(
        check(&p, &bearer(&none_no_kid)),
        Err(AuthnError::UnsupportedAlg)
    );
    // HS256 keyed with the RSA public key, which the attacker knows.
    let hmac = TestKey {
        enc: EncodingKey::from_secret(&RSA_A.public_der),
        alg: Algorithm::HS256,
        public: Value::Null,
        public_der: Vec::new(),
    };
    let confused = hmac.sign(Some("k1"), &claims());
    assert_eq!(
        check(&p, &bearer(&confused)),
        Err(AuthnError::UnsupportedAlg)
    );
    // An algorithm the key is not bound to: no key, never a fallback.
    let ps = RSA_A.sign_as(Algorithm::PS256, Some("k1"), &claims());
    assert_eq!(check(&p, &bearer(&ps)), Err(AuthnError::UnknownKey));
    let es = TestKey::es256().sign(Some("k1"), &claims());
    assert_eq!(check(&p, &bearer(&es)), Err(AuthnError::UnknownKey));
}

#[test]
fn an_rsa_key_without_alg_verifies_every_rsa_algorithm() {
    let mut jwk = RSA_A.jwk(None);
    jwk.as_object_mut().unwrap().remove("alg");
    let p = provider(jwks_of(&[jwk]));
    for alg in [Algorithm::RS256, Algorithm::PS256, Algorithm::RS512] {
        let token = RSA_A.sign_as(alg, None, &claims());
        assert!(check(&p, &bearer(&token)).unwrap().is_some(), "{alg:?}");
    }
}

#[test]
fn key_rotation() {
    let old = TestKey::es256();
    let new = TestKey::es256();
    let old_token = old.sign(Some("2024"), &claims());
    let new_token = new.sign(Some("2025"), &claims());
    let both = provider(jwks_of(&[old.jwk(Some("2024")), new.jwk(Some("2025"))]));
    assert!(check(&both, &bearer(&old_token)).unwrap().is_some());
    assert!(check(&both, &bearer(&new_token)).unwrap().is_some());
    let only_new = provider(jwks_of(&[new.jwk(Some("2025"))]));
    assert!(check(&only_new, &bearer(&new_token)).unwrap().is_some());
    assert_eq!(
        check(&only_new, &bearer(&old_token)),
        Err(AuthnError::UnknownKey)
    );
}

#[test]
fn without_kid_every_key_of_the_algorithm_is_tried() {
    let a = TestKey::es256();
    let b = TestKey::es256();
    let ed = TestKey::ed25519();
    let p = provider(jwks_of(&[ed.jwk(None), a.jwk(Some("a")), b.jwk(Some("b"))]));
    let token = b.sign(None, &claims());
    assert!(check(&p, &bearer(&token)).unwrap().is_some());
    let stranger = TestKey::es256().sign(None, &claims());
    assert_eq!(check(&p, &bearer(&stranger)), Err(AuthnError::BadSignature));
}

#[test]
fn malformed_tokens() {
    let key = TestKey::es256();
    let p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    let good = key.sign(Some("k1"), &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(&str, String, AuthnError)> = vec![
        ("one part", "abc".into(), AuthnError::Malformed),
        (
            "two parts",
            format!("{}.{}", parts[0], parts[1]),
            AuthnError::Malformed,
        ),
        ("four parts", format!("{good}.x"), AuthnError::Malformed),
        (
            "header not base64url",
            format!("%%%.{}.{}", parts[1], parts[2]),
            AuthnError::Malformed,
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", b64(b"alg"), parts[1], parts[2]),
            AuthnError::Malformed,
        ),
        (
            "header not an object",
            forged(&json!(["ES256"]), &claims(), parts[2]),
            AuthnError::Malformed,
        ),
        (
            "no alg",
            forged(&json!({"kid": "k1"}), &claims(), parts[2]),
            AuthnError::Malformed,
        ),
        (
            "kid not a string",
            forged(&json!({"alg": "ES256", "kid": 1}), &claims(), parts[2]),
            AuthnError::Malformed,
        ),
        (
            "crit",
            forged(
                &json!({"alg": "ES256", "kid": "k1", "crit": ["b64"]}),
                &claims(),
                parts[2],
            ),
            AuthnError::Malformed,
        ),
        (
            "signature not base64url",
            format!("{}.{}.%%", parts[0], parts[1]),
            AuthnError::Malformed,
        ),
        (
            "padded signature",
            format!("{good}="),
            AuthnError::Malformed,
        ),
        (
            "unknown alg",
            forged(&json!({"alg": "ES512"}), &claims(), parts[2]),
            AuthnError::UnsupportedAlg,
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(check(&p, &bearer(&token)), Err(want), "{name}");
    }
    // A payload that is not JSON, validly signed, is malformed too.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let head = b64(serde_json::to_string(&header).unwrap().as_bytes());
    let body = b64(b"not json");
    let sig = jsonwebtoken::crypto::sign(
        format!("{head}.{body}").as_bytes(),
        &key.enc,
        Algorithm::ES256,
    )
    .unwrap();
    assert_eq!(
        check(&p, &bearer(&format!("{head}.{body}.{sig}"))),
        Err(AuthnError::Malformed)
    );
}

#[test]
fn token_locations() {
    let key = TestKey::es256();
    let token = key.sign(Some("k1"), &claims());
    let p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    let with = |name: &str, value: &str| {
        let mut h = HeaderMap::new();
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    };
    let cases: Vec<(&str, HeaderMap, Result<(), AuthnError>)> = vec![
        ("no header", HeaderMap::new(), Err(AuthnError::Missing)),
        (
            "bearer",
            with("authorization", &format!("Bearer {token}")),
            Ok(()),
        ),
        (
            "scheme ignores case",
            with("authorization", &format!("bEARER {token}")),
            Ok(()),
        ),
        (
            "extra spaces",
            with("authorization", &format!("Bearer   {token} ")),
            Ok(()),
        ),
        (
            "basic is not a token",
            with("authorization", "Basic YWxhZGRpbjpvcGVu"),
            Err(AuthnError::Missing),
        ),
        (
            "another scheme",
            with("authorization", &format!("Bearerish {token}")),
            Err(AuthnError::Missing),
        ),
        (
            "bearer without token",
            with("authorization", "Bearer"),
            Err(AuthnError::Malformed),
        ),
        (
            "other header",
            with("x-jwt", &token),
            Err(AuthnError::Missing),
        ),
    ];
    for (name, headers, want) in cases {
        assert_eq!(check(&p, &headers).map(|_| ()), want, "{name}");
    }
    let mut custom = provider(jwks_of(&[key.jwk(Some("k1"))]));
    custom.from = vec![TokenLocation {
        header: HeaderName::from_static("x-jwt"),
        prefix: String::new(),
    }];
    assert!(check(&custom, &with("x-jwt", &token)).unwrap().is_some());
    assert_eq!(
        check(&custom, &bearer(&token)),
        Err(AuthnError::Missing),
        "only the configured locations are read"
    );
}

#[test]
fn every_token_found_must_be_valid() {
    let key = TestKey::es256();
    let p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    let good = key.sign(Some("k1"), &claims());
    let bad = key.sign(Some("k1"), &claims_with(json!({"exp": NOW - 3600})));
    let mut h = bearer(&good);
    h.append(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {bad}")).unwrap(),
    );
    assert_eq!(check(&p, &h), Err(AuthnError::Expired));
}

// ---- requirements ----

#[test]
fn requirements() {
    let shop_key = TestKey::es256();
    let partner_key = TestKey::ed25519();
    let shop = provider(jwks_of(&[shop_key.jwk(Some("s"))]));
    let mut partner = provider(jwks_of(&[partner_key.jwk(Some("p"))]));
    partner.name = Arc::from("partner");
    partner.issuer = Some("https://partner.example".into());
    let providers = [shop, partner];
    let shop_token = shop_key.sign(Some("s"), &claims());
    let partner_claims = claims_with(json!({"iss": "https://partner.example"}));
    let partner_token = partner_key.sign(Some("p"), &partner_claims);
    let partner_expired = partner_key.sign(
        Some("p"),
        &claims_with(json!({"iss": "https://partner.example", "exp": NOW - 3600})),
    );
    let garbage = "not.a.token";
    use Requirement::*;
    let any = AnyOf(vec![Provider(0), Provider(1)]);
    let optional_shop = AllowMissing(Box::new(Provider(0)));
    let empty = AnyOf(vec![]);
    // (requirement, token, expected: Ok(Some(provider)) / Ok(None) / Err)
    type Case<'a> = (&'a str, &'a Requirement, Option<&'a str>, Want);
    type Want = Result<Option<usize>, AuthnError>;
    let cases: Vec<Case<'_>> = vec![
        (
            "shop: shop token",
            &Provider(0),
            Some(&shop_token),
            Ok(Some(0)),
        ),
        (
            "shop: partner token",
            &Provider(0),
            Some(&partner_token),
            Err(AuthnError::UnknownKey),
        ),
        ("shop: none", &Provider(0), None, Err(AuthnError::Missing)),
        ("any: shop token", &any, Some(&shop_token), Ok(Some(0))),
        (
            "any: partner token",
            &any,
            Some(&partner_token),
            Ok(Some(1)),
        ),
        ("any: none", &any, None, Err(AuthnError::Missing)),
        // The partner key verified the token, so its error is the telling one.
        (
            "any: expired partner",
            &any,
            Some(&partner_expired),
            Err(AuthnError::Expired),
        ),
        (
            "any: garbage",
            &any,
            Some(garbage),
            Err(AuthnError::Malformed),
        ),
        ("optional: none", &optional_shop, None, Ok(None)),
        (
            "optional: shop token",
            &optional_shop,
            Some(&shop_token),
            Ok(Some(0)),
        ),
        (
            "optional: garbage",
            &optional_shop,
            Some(garbage),
            Err(AuthnError::Malformed),
        ),
        (
            "optional: partner token",
            &optional_shop,
            Some(&partner_token),
            Err(AuthnError::UnknownKey),
        ),
        (
            "missing-or-failed: none",
            &AllowMissingOrFailed,
            None,
            Ok(None),
        ),
        (
            "missing-or-failed: garbage",
            &AllowMissingOrFailed,
            Some(garbage),
            Ok(None),
        ),
        (
            "missing-or-failed: expired",
            &AllowMissingOrFailed,
            Some(&partner_expired),
            Ok(None),
        ),
        (
            "missing-or-failed: partner",
            &AllowMissingOrFailed,
            Some(&partner_token),
            Ok(Some(1)),
        ),
        (
            "empty any-of",
            &empty,
            Some(&shop_token),
            Err(AuthnError::Missing),
        ),
        (
            "bad index",
            &Provider(9),
            Some(&shop_token),
            Err(AuthnError::UnknownKey),
        ),
    ];
    for (name, req, token, want) in cases {
        let headers = token.map(bearer).unwrap_or_default();
        let got = authenticate(&providers, req, &headers, now()).map(|v| v.map(|v| v.provider));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn any_of_prefers_a_verified_token_over_a_missing_one() {
    let shop_key = TestKey::es256();
    let shop = provider(jwks_of(&[shop_key.jwk(Some("s"))]));
    let mut other = shop.clone();
    other.from = vec![TokenLocation {
        header: HeaderName::from_static("x-other"),
        prefix: String::new(),
    }];
    let providers = [other, shop];
    let req = Requirement::AnyOf(vec![
        Requirement::AllowMissing(Box::new(Requirement::Provider(0))),
        Requirement::Provider(1),
    ]);
    let token = shop_key.sign(Some("s"), &claims());
    let got = authenticate(&providers, &req, &bearer(&token), now()).unwrap();
    assert_eq!(got.map(|v| v.provider), Some(1));
    let got = authenticate(&providers, &req, &HeaderMap::new(), now()).unwrap();
    assert_eq!(got, None);
}

// ---- applying a verified token ----

fn claim(path: &str, header: &'static str) -> ClaimToHeader {
    ClaimToHeader {
        claim: path.split('.').map(str::to_owned).collect(),
        header: HeaderName::from_static(header),
    }
}

#[test]
fn claims_to_headers() {
    let key = TestKey::es256();
    let mut p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    p.claims_to_headers = vec![
        claim("sub", "x-user-id"),
        claim("tier", "x-tier"),
        claim("admin", "x-admin"),
        claim("roles", "x-roles"),
        claim("realm.team", "x-team"),
        claim("realm", "x-realm"),
        claim("bad", "x-bad"),
        claim("empty", "x-empty"),
        claim("absent", "x-absent"),
        claim("mixed", "x-mixed"),
    ];
    let token = key.sign(
        Some("k1"),
        &claims_with(json!({
            "tier": 3,
            "admin": false,
            "roles": ["buyer", "seller"],
            "realm": {"team": "payments"},
            "bad": "line\nbreak",
            "empty": "",
            "mixed": ["a", {"b": 1}],
        })),
    );
    let mut headers = bearer(&token);
    headers.insert("x-user-id", HeaderValue::from_static("spoofed"));
    headers.insert("x-bad", HeaderValue::from_static("spoofed"));
    headers.insert("x-keep", HeaderValue::from_static("1"));
    let v = check(&p, &headers).unwrap().unwrap();
    apply(&p, &v, &mut headers);
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(get("x-user-id").as_deref(), Some("alice"));
    assert_eq!(get("x-tier").as_deref(), Some("3"));
    assert_eq!(get("x-admin").as_deref(), Some("false"));
    assert_eq!(get("x-roles").as_deref(), Some("buyer,seller"));
    assert_eq!(get("x-team").as_deref(), Some("payments"));
    for absent in ["x-realm", "x-bad", "x-empty", "x-absent", "x-mixed"] {
        assert_eq!(get(absent), None, "{absent}");
    }
    assert_eq!(headers.get_all("x-user-id").iter().count(), 1);
    assert_eq!(get("x-keep").as_deref(), Some("1"));
    assert_eq!(
        get("authorization"),
        None,
        "the token is not forwarded by default"
    );
}

#[test]
fn forward_keeps_the_token() {
    let key = TestKey::es256();
    let mut p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    p.forward = true;
    let mut headers = bearer(&key.sign(Some("k1"), &claims()));
    let v = check(&p, &headers).unwrap().unwrap();
    apply(&p, &v, &mut headers);
    assert!(headers.contains_key("authorization"));
}

#[test]
fn only_the_header_that_carried_the_token_is_removed() {
    let key = TestKey::es256();
    let mut p = provider(jwks_of(&[key.jwk(Some("k1"))]));
    p.from.push(TokenLocation {
        header: HeaderName::from_static("x-jwt"),
        prefix: String::new(),
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_static("Basic YWxhZGRpbjpvcGVu"),
    );
    headers.insert(
        "x-jwt",
        HeaderValue::from_str(&key.sign(Some("k1"), &claims())).unwrap(),
    );
    let v = check(&p, &headers).unwrap().unwrap();
    apply(&p, &v, &mut headers);
    assert!(!headers.contains_key("x-jwt"));
    assert!(
        headers.contains_key("authorization"),
        "a Basic credential was not the token"
    );
}

#[test]
fn spoofed_claim_headers_are_stripped_without_a_token() {
    let key = TestKey::es256();
    let mut a = provider(jwks_of(&[key.jwk(Some("k1"))]));
    a.claims_to_headers = vec![claim("sub", "x-user-id")];
    let mut b = a.clone();
    b.claims_to_headers = vec![claim("email", "x-email")];
    let mut headers = HeaderMap::new();
    headers.append("x-user-id", HeaderValue::from_static("admin"));
    headers.append("x-user-id", HeaderValue::from_static("root"));
    headers.insert("x-email", HeaderValue::from_static("ceo@shop.example"));
    headers.insert("x-other", HeaderValue::from_static("kept"));
    strip_claim_headers(&[a, b], &mut headers);
    assert_eq!(headers.len(), 1);
    assert!(headers.contains_key("x-other"));
}

// ---- errors ----

#[test]
fn error_outcomes_and_challenges() {
    use AuthnError::*;
    let cases = [
        (
            Missing,
            "missing",
            r#"Bearer realm="https://shop.example/cart""#,
        ),
        (
            Malformed,
            "malformed",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Jwt is not in the form of Header.Payload.Signature""#,
        ),
        (
            UnsupportedAlg,
            "unsupported_alg",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Jwt algorithm is not supported""#,
        ),
        (
            UnknownKey,
            "unknown_key",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Jwks has no key matching the Jwt's kid and alg""#,
        ),
        (
            BadSignature,
            "bad_signature",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Jwt verification fails""#,
        ),
        (
            Expired,
            "expired",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Jwt is expired""#,
        ),
        (
            NotYetValid,
            "not_yet_valid",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Jwt not yet valid""#,
        ),
        (
            BadIssuer,
            "bad_issuer",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Jwt issuer is not configured""#,
        ),
        (
            BadAudience,
            "bad_audience",
            r#"Bearer realm="https://shop.example/cart", error="invalid_token", error_description="Audiences in Jwt are not allowed""#,
        ),
    ];
    for (e, outcome, challenge) in cases {
        assert_eq!(e.metric_outcome(), outcome);
        assert_eq!(
            e.www_authenticate("https://shop.example/cart")
                .to_str()
                .unwrap(),
            challenge
        );
    }
    assert_eq!(
        Missing.www_authenticate("a\"b\\c\nd").to_str().unwrap(),
        r#"Bearer realm="a\"b\\cd""#
    );
}

// ---- JWKS ----

#[test]
fn jwks_documents() {
    let es = TestKey::es256();
    let ed = TestKey::ed25519();
    let mut no_alg = es.jwk(Some("e"));
    no_alg.as_object_mut().unwrap().remove("alg");
    let mut rsa_no_alg = RSA_A.jwk(Some("r"));
    rsa_no_alg.as_object_mut().unwrap().remove("alg");
    let mut enc = RSA_A.jwk(Some("enc"));
    enc["use"] = json!("enc");
    let parsed = Jwks::parse(
        &json!({"keys": [
            no_alg,
            rsa_no_alg,
            ed.jwk(None),
            enc,
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "x": b64(&[1; 32])},
            {"kty": "RSA", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "key_ops": ["encrypt"], "x": "AA", "y": "AA"},
            {"kty": "PQC"},
        ]})
        .to_string(),
    )
    .unwrap();
    let summary: Vec<(Option<&str>, Algorithm, bool)> = parsed
        .keys
        .iter()
        .map(|k| (k.kid.as_deref(), k.alg, k.alg_given))
        .collect();
    assert_eq!(
        summary,
        [
            (Some("e"), Algorithm::ES256, false),
            (Some("r"), Algorithm::RS256, false),
            (None, Algorithm::EdDSA, true),
        ]
    );
    assert_eq!(parsed.skipped.len(), 7, "{:?}", parsed.skipped);
    assert!(parsed.skipped[0].starts_with("keys[3]: use \"enc\""));
    assert!(parsed.skipped[6].starts_with("keys[9]: kty \"PQC\""));
}

#[test]
fn broken_jwks_documents() {
    let es = TestKey::es256();
    let with = |changes: Value| {
        let mut k = es.jwk(Some("k"));
        for (name, v) in changes.as_object().unwrap() {
            k[name] = v.clone();
        }
        json!({"keys": [es.jwk(Some("ok")), k]}).to_string()
    };
    let short_rsa = json!({"keys": [{"kty": "RSA", "n": b64(&[0xff; 128]), "e": "AQAB"}]});
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{".into(), "not a JWKS"),
        (
            "not an object",
            "[]".into(),
            "not a JWKS: expected a JSON object",
        ),
        ("no keys", "{}".into(), "a JWKS needs a \"keys\" array"),
        ("empty", r#"{"keys": []}"#.into(), "no usable signature key"),
        (
            "only symmetric",
            r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#.into(),
            "no usable signature key (keys[0]: kty \"oct\": symmetric (HMAC) keys are not supported)",
        ),
        (
            "key not an object",
            r#"{"keys": [1]}"#.into(),
            "keys[0]: not a JSON object",
        ),
        (
            "no kty",
            r#"{"keys": [{"n": "AA"}]}"#.into(),
            "keys[0]: \"kty\" is required",
        ),
        (
            "bad base64",
            with(json!({"x": "@@"})),
            "keys[1]: \"x\" is not base64url",
        ),
        (
            "short coordinate",
            with(json!({"x": b64(&[1; 31])})),
            "keys[1]: P-256 coordinates must be 32 bytes each",
        ),
        (
            "alg of another curve",
            with(json!({"alg": "ES384"})),
            "keys[1]: alg \"ES384\" does not fit the key type \"EC\"",
        ),
        (
            "alg of another type",
            with(json!({"alg": "RS256"})),
            "keys[1]: alg \"RS256\" does not fit the key type \"EC\"",
        ),
        (
            "HMAC alg",
            with(json!({"alg": "HS256"})),
            "keys[1]: alg \"HS256\" is not supported",
        ),
        (
            "kid not a string",
            with(json!({"kid": 5})),
            "keys[1]: \"kid\" must be a string",
        ),
        (
            "short RSA",
            short_rsa.to_string(),
            "keys[0]: an RSA modulus of 1024 bits; 2048-8192 bits are supported",
        ),
    ];
    for (name, doc, want) in cases {
        let err = Jwks::parse(&doc).unwrap_err().to_string();
        assert!(err.starts_with(want), "{name}: {err}");
    }
}

// ---- the friendly example in Envoy form ----

/// The Envoy resources the friendly example of `config/compile/authn.rs` compiles to.
/// The compiler's tests check they produce exactly these, and the translator's tests
/// check what these become: together, friendly -> Envoy -> snapshot.
pub(crate) mod envoy_form {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
        JwtAuthentication, JwtClaimToHeader, JwtProvider, JwtRequirement, JwtRequirementOrList,
        jwt_provider, jwt_requirement,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        RegexMatcher, StringMatcher, string_matcher,
    };
    use envoy_types::pb::google::protobuf::{BoolValue, Empty};

    /// `jwt_providers` of the example: `shop` (inline JWKS) and `partner` (JWKS file).
    pub(crate) const PROVIDERS_YAML: &str = r#"
shop:
  issuer: https://auth.shop.example
  audiences: [shop-api]
  jwks: { inline: '{SHOP_JWKS}' }
  clock_skew: 30s
  claims_to_headers: { sub: x-user-id, realm.team: X-Team }
partner:
  jwks: { file: '{PARTNER_FILE}' }
  forward: true
"#;

    /// The example's route `jwt:` settings, with their requirement names.
    pub(crate) const ROUTES: [(&str, &str); 3] = [
        ("shop", "shop"),
        ("{ any_of: [shop, partner] }", "any:partner,shop"),
        ("{ provider: shop, allow_missing: true }", "optional:shop"),
    ];

    /// A route's `cors:` in the example.
    pub(crate) const CORS_YAML: &str = r#"
allow_origins: [https://Shop.example, "https://*.shop.example"]
allow_methods: [GET, POST]
allow_headers: [Authorization, content-type]
expose_headers: [x-request-id]
max_age: 1h
allow_credentials: true
"#;

    fn by_name(name: &str) -> JwtRequirement {
        JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.into())),
        }
    }

    fn local(specifier: data_source::Specifier) -> Option<jwt_provider::JwksSourceSpecifier> {
        Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(specifier),
            ..Default::default()
        }))
    }

    /// The `jwt_authn` filter config.
    pub(crate) fn jwt_authentication(shop_jwks: &str, partner_file: &str) -> JwtAuthentication {
        let claim = |claim: &str, header: &str| JwtClaimToHeader {
            header_name: header.into(),
            claim_name: claim.into(),
            ..Default::default()
        };
        JwtAuthentication {
            providers: HashMap::from([
                (
                    "shop".to_owned(),
                    JwtProvider {
                        issuer: "https://auth.shop.example".into(),
                        audiences: vec!["shop-api".into()],
                        clock_skew_seconds: 30,
                        claim_to_headers: vec![
                            claim("sub", "x-user-id"),
                            claim("realm.team", "x-team"),
                        ],
                        jwks_source_specifier: local(data_source::Specifier::InlineString(
                            shop_jwks.into(),
                        )),
                        payload_in_metadata: "jwt_payload".into(),
                        ..Default::default()
                    },
                ),
                (
                    "partner".to_owned(),
                    JwtProvider {
                        forward: true,
                        jwks_source_specifier: local(data_source::Specifier::Filename(
                            partner_file.into(),
                        )),
                        payload_in_metadata: "jwt_payload".into(),
                        ..Default::default()
                    },
                ),
            ]),
            requirement_map: HashMap::from([
                ("shop".to_owned(), by_name("shop")),
                (
                    "any:partner,shop".to_owned(),
                    JwtRequirement {
                        requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                            JwtRequirementOrList {
                                requirements: vec![by_name("partner"), by_name("shop")],
                            },
                        )),
                    },
                ),
                (
                    "optional:shop".to_owned(),
                    JwtRequirement {
                        requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                            JwtRequirementOrList {
                                requirements: vec![
                                    by_name("shop"),
                                    JwtRequirement {
                                        requires_type: Some(
                                            jwt_requirement::RequiresType::AllowMissing(Empty {}),
                                        ),
                                    },
                                ],
                            },
                        )),
                    },
                ),
            ]),
            bypass_cors_preflight: true,
            ..Default::default()
        }
    }

    /// The route's `cors` per-filter config.
    pub(crate) fn cors_policy() -> CorsPolicy {
        let matcher = |p: string_matcher::MatchPattern| StringMatcher {
            match_pattern: Some(p),
            ignore_case: false,
        };
        CorsPolicy {
            allow_origin_string_match: vec![
                matcher(string_matcher::MatchPattern::Exact(
                    "https://shop.example".into(),
                )),
                matcher(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: r"https://(?:[a-z0-9-]+\.)+shop\.example".into(),
                    ..Default::default()
                })),
            ],
            allow_methods: "GET, POST".into(),
            allow_headers: "authorization, content-type".into(),
            expose_headers: "x-request-id".into(),
            max_age: "3600".into(),
            allow_credentials: Some(BoolValue { value: true }),
            ..Default::default()
        }
    }
}
