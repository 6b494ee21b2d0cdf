//! JWT authentication end to end, with keys generated here (ES256, RS256, EdDSA), their
//! JWKS in a file and inline, and tokens signed with `jsonwebtoken`
//! (`weft_tests::jwt`).
//!
//! What a route with `jwt:` must do: let valid tokens through with the configured
//! claims copied into headers (and the client's own copies of those headers dropped,
//! token or not), remove the token unless the provider forwards it, and refuse
//! everything else with 401 and an RFC 6750 challenge, without reaching the upstream.

use std::net::SocketAddr;
use std::sync::LazyLock;

use http::Method;
use serde_json::{Value, json};
use weft_tests::client::empty;
use weft_tests::jwt::{self, SigningKey};
use weft_tests::{Client, Reply, TestProxy, upstream, within};

use super::{Scratch, assert_denied, decisions};
use crate::LIMIT;

const ISS: &str = "https://auth.shop.example";
const AUD: &str = "shop-api";
const PARTNER_ISS: &str = "https://partner.example";

// Generated once for the whole binary: RSA generation is the slow part.
static ES: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::es256().expect("ES256 key"));
static RS: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::rs256().expect("RS256 key"));
static ED: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::ed25519().expect("Ed25519 key"));
/// Not in any JWKS: signs forgeries under the kid of [`ES`].
static FORGER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::es256().expect("ES256 key"));
static PARTNER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::es256().expect("ES256 key"));

/// Claims of a token valid for ten minutes from the shop issuer for the shop API, with
/// `extra` merged in (a `null` member removes a claim).
fn claims(sub: &str, extra: Value) -> Value {
    let now = jwt::now_secs();
    let mut c = json!({"iss": ISS, "aud": AUD, "sub": sub, "iat": now, "exp": now + 600});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

/// The shop JWKS: one key of each type.
fn shop_jwks() -> String {
    jwt::jwks(&[ES.jwk("es-1"), RS.jwk("rs-1"), ED.jwk("ed-1")])
}

/// A proxy configured by `config(backend, jwks file)` in front of a recording backend,
/// with `jwks` written to a scratch file (kept, with the directory, while this lives).
struct Bench {
    _scratch: Scratch,
    jwks_file: String,
    backend: upstream::Upstream,
    proxy: TestProxy,
}

async fn bench(
    name: &str,
    jwks: String,
    config: fn(SocketAddr, &str) -> String,
) -> anyhow::Result<Bench> {
    let scratch = Scratch::new(name)?;
    let jwks_file = scratch.file("jwks.json");
    std::fs::write(&jwks_file, jwks)?;
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&config(backend.addr(), &jwks_file)).await?;
    Ok(Bench {
        _scratch: scratch,
        jwks_file,
        backend,
        proxy,
    })
}

/// A listener with two providers (`shop` from a JWKS file, `partner` inline and
/// forwarding its tokens) and routes requiring one, either, or optionally `shop`.
fn config(backend: SocketAddr, jwks_file: &str) -> String {
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    jwt_providers:
      shop:
        issuer: {ISS}
        audiences: [{AUD}, shop-admin]
        jwks: {{ file: "{jwks_file}" }}
        claims_to_headers: {{ sub: x-user-id, realm.team: x-team }}
      partner:
        issuer: {PARTNER_ISS}
        jwks: {{ inline: '{partner}' }}
        forward: true
        claims_to_headers: {{ sub: x-partner-user }}
    routes:
      - name: cart
        match: {{ prefix: /cart/ }}
        to: backend
        jwt: shop
      - name: partner
        match: {{ prefix: /partner/ }}
        to: backend
        jwt: partner
      - name: either
        match: {{ prefix: /either/ }}
        to: backend
        jwt: {{ any_of: [shop, partner] }}
      - name: browse
        match: {{ prefix: /browse/ }}
        to: backend
        jwt: {{ provider: shop, allow_missing: true }}
      - name: open
        match: {{ prefix: / }}
        to: backend
clusters:
  backend: {{ endpoints: [{backend}] }}
"#,
        partner = jwt::jwks(&[PARTNER.jwk("p-1")]),
    )
}

/// `GET http://shop.example{path}` through `addr` with `headers`.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    Client::http1()
        .via(addr)
        .send(
            Method::GET,
            &format!("http://shop.example{path}"),
            headers,
            empty(),
        )
        .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `weft_jwt_authn_total` of route `route` with `outcome`.
async fn authn(proxy: &TestProxy, route: &str, outcome: &str) -> anyhow::Result<f64> {
    Ok(proxy.metrics().await?.sum(
        "weft_jwt_authn_total",
        &[
            ("listener", "edge"),
            ("route_name", route),
            ("outcome", outcome),
        ],
    ))
}

/// A 401 from the proxy with the realm of `path` and, unless the token was `missing`,
/// `error="invalid_token"` and `description`.
fn assert_unauthenticated(reply: &Reply, path: &str, description: Option<&str>, what: &str) {
    assert_eq!(
        reply.code(),
        401,
        "{what}: status (body {:?}, headers {:?})",
        reply.text(),
        reply.headers
    );
    assert_eq!(
        reply.header("x-weft-error"),
        Some("unauthenticated"),
        "{what}"
    );
    assert!(
        reply.upstream().is_none(),
        "{what}: answered by an upstream"
    );
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    let realm = format!("Bearer realm=\"http://shop.example{path}\"");
    match description {
        None => assert_eq!(challenge, realm, "{what}"),
        Some(d) => assert_eq!(
            challenge,
            format!("{realm}, error=\"invalid_token\", error_description=\"{d}\""),
            "{what}"
        ),
    }
}

/// Tokens signed by each key type pass; the upstream gets the claim headers (the
/// client's copies replaced, on every route of the listener, token or not) and no
/// token, except from the provider that forwards it.
///
/// Checked to fail: with `strip_claim_headers` not called (`http/security.rs`), the
/// spoofed `x-user-id` reaches the upstream on the open route; with `apply`
/// (`authn/mod.rs`) never removing the token, the upstream sees `authorization` on
/// `/cart/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_pass_with_claim_headers() -> anyhow::Result<()> {
    let Bench {
        _scratch,
        jwks_file: _,
        backend,
        proxy,
    } = bench("jwt-valid", shop_jwks(), config).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "valid tokens", async {
        let spoof = [("x-user-id", "admin"), ("x-team", "root")];
        for (key, kid) in [(&*ES, "es-1"), (&*RS, "rs-1"), (&*ED, "ed-1")] {
            let sub = format!("user-{:?}", key.alg());
            let token = key.sign(kid, &claims(&sub, json!({"realm": {"team": "checkout"}})))?;
            let auth = bearer(&token);
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend(spoof);
            let reply = get(addr, "/cart/items", &headers).await?;
            assert_eq!(reply.code(), 200, "{kid}: {:?}", reply.text());
            let seen = backend.last().expect("a request");
            assert_eq!(seen.header_all("x-user-id"), [sub.as_str()], "{kid}");
            assert_eq!(seen.header_all("x-team"), ["checkout"], "{kid}");
            assert_eq!(seen.header("authorization"), None, "{kid}: token removed");
        }
        // `aud` as an array naming one of the audiences; the second audience.
        for aud in [json!(["other", AUD]), json!("shop-admin")] {
            let token = ES.sign("es-1", &claims("u", json!({ "aud": aud })))?;
            let reply = get(addr, "/cart/items", &[("authorization", &bearer(&token))]).await?;
            assert_eq!(reply.code(), 200, "aud {aud}: {:?}", reply.text());
        }
        // Expired 30 s ago: within the default 60 s clock skew.
        let now = jwt::now_secs();
        let token = ES.sign("es-1", &claims("u", json!({"exp": now - 30})))?;
        let reply = get(addr, "/cart/items", &[("authorization", &bearer(&token))]).await?;
        assert_eq!(
            reply.code(),
            200,
            "within the clock skew: {:?}",
            reply.text()
        );

        // No token where none is required: the spoofed claim headers are still dropped.
        for path in ["/open/x", "/browse/x"] {
            let reply = get(addr, path, &spoof).await?;
            assert_eq!(reply.code(), 200, "{path}");
            let seen = backend.last().expect("a request");
            assert_eq!(
                seen.header("x-user-id"),
                None,
                "{path}: spoofed header dropped"
            );
            assert_eq!(
                seen.header("x-team"),
                None,
                "{path}: spoofed header dropped"
            );
        }

        // The partner provider (inline JWKS) forwards its token.
        let token = PARTNER.sign(
            "p-1",
            &json!({"iss": PARTNER_ISS, "sub": "p-user", "exp": now + 600}),
        )?;
        let auth = bearer(&token);
        let reply = get(
            addr,
            "/partner/x",
            &[("authorization", &auth), ("x-partner-user", "someone-else")],
        )
        .await?;
        assert_eq!(reply.code(), 200, "partner: {:?}", reply.text());
        let seen = backend.last().expect("a request");
        assert_eq!(seen.header("authorization"), Some(auth.as_str()));
        assert_eq!(seen.header_all("x-partner-user"), ["p-user"]);

        assert_eq!(authn(&proxy, "cart", "ok").await?, 6.0);
        assert_eq!(authn(&proxy, "partner", "ok").await?, 1.0);
        anyhow::Ok(())
    })
    .await?
}

/// Every bad or missing token is a 401 with the right challenge and outcome, and never
/// reaches the upstream.
///
/// Checked to fail: with the signature check skipped (`verify` in `authn/mod.rs`
/// taking any candidate key as verifying), the token signed by another key under the
/// same kid passes; with `exp` and `nbf` not checked, the expired token passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused() -> anyhow::Result<()> {
    let Bench {
        _scratch,
        jwks_file: _,
        backend,
        proxy,
    } = bench("jwt-bad", shop_jwks(), config).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "bad tokens", async {
        let now = jwt::now_secs();
        let good = ES.sign("es-1", &claims("u", json!({})))?;
        // The good token's header and signature around another payload.
        let tampered = {
            let parts: Vec<&str> = good.split('.').collect();
            let other = ES.sign("es-1", &claims("admin", json!({})))?;
            let payload = other.split('.').nth(1).unwrap_or_default().to_owned();
            format!("{}.{payload}.{}", parts[0], parts[2])
        };
        let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
            ("missing", None, "missing", ""),
            (
                "expired",
                Some(ES.sign("es-1", &claims("u", json!({"exp": now - 3600})))?),
                "expired",
                "Jwt is expired",
            ),
            (
                "not yet valid",
                Some(ES.sign("es-1", &claims("u", json!({"nbf": now + 3600})))?),
                "not_yet_valid",
                "Jwt not yet valid",
            ),
            (
                "wrong issuer",
                Some(RS.sign("rs-1", &claims("u", json!({"iss": "https://evil.example"})))?),
                "bad_issuer",
                "Jwt issuer is not configured",
            ),
            (
                "no issuer",
                Some(ED.sign("ed-1", &claims("u", json!({"iss": null})))?),
                "bad_issuer",
                "Jwt issuer is not configured",
            ),
            (
                "wrong audience",
                Some(ES.sign("es-1", &claims("u", json!({"aud": "other-api"})))?),
                "bad_audience",
                "Audiences in Jwt are not allowed",
            ),
            (
                "no audience",
                Some(ES.sign("es-1", &claims("u", json!({"aud": null})))?),
                "bad_audience",
                "Audiences in Jwt are not allowed",
            ),
            (
                "another key, same kid",
                Some(FORGER.sign("es-1", &claims("u", json!({})))?),
                "bad_signature",
                "Jwt verification fails",
            ),
            (
                "tampered payload",
                Some(tampered),
                "bad_signature",
                "Jwt verification fails",
            ),
            (
                "unknown kid",
                Some(ES.sign("es-9", &claims("u", json!({})))?),
                "unknown_key",
                "Jwks has no key matching the Jwt's kid and alg",
            ),
            (
                "another provider's token",
                Some(PARTNER.sign("p-1", &claims("u", json!({})))?),
                "unknown_key",
                "Jwks has no key matching the Jwt's kid and alg",
            ),
            (
                "alg none",
                Some(jwt::unsigned("es-1", &claims("u", json!({})))),
                "unsupported_alg",
                "Jwt algorithm is not supported",
            ),
            (
                "HS256 keyed with the RSA public key",
                Some(jwt::hs256(
                    RS.public_der(),
                    "rs-1",
                    &claims("u", json!({})),
                )?),
                "unsupported_alg",
                "Jwt algorithm is not supported",
            ),
            (
                "not a JWT",
                Some("not-a-jwt".to_owned()),
                "malformed",
                "Jwt is not in the form of Header.Payload.Signature",
            ),
        ];
        for (what, token, _, description) in &cases {
            let auth = token.as_deref().map(bearer);
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let reply = get(addr, "/cart/items", &headers).await?;
            let description = token.as_ref().map(|_| *description);
            assert_unauthenticated(&reply, "/cart/items", description, what);
        }
        // A good token does not vouch for a bad one beside it.
        let forged = FORGER.sign("es-1", &claims("admin", json!({})))?;
        let reply = get(
            addr,
            "/cart/items",
            &[
                ("authorization", &bearer(&good)),
                ("authorization", &bearer(&forged)),
            ],
        )
        .await?;
        assert_unauthenticated(
            &reply,
            "/cart/items",
            Some("Jwt verification fails"),
            "good and forged",
        );
        // A gRPC caller gets UNAUTHENTICATED (16), trailers-only, with the challenge.
        let reply = Client::http2()
            .via(addr)
            .send(
                Method::POST,
                "http://shop.example/cart/items",
                &[("content-type", "application/grpc"), ("te", "trailers")],
                empty(),
            )
            .await?;
        assert_eq!(reply.code(), 200, "gRPC: {:?}", reply.headers);
        assert_eq!(
            reply.header("grpc-status"),
            Some("16"),
            "{:?}",
            reply.headers
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"http://shop.example/cart/items\"")
        );
        assert_eq!(backend.count(), 0, "{:?}", backend.requests());

        let mut want: std::collections::BTreeMap<&str, f64> = Default::default();
        for (_, _, outcome, _) in &cases {
            *want.entry(outcome).or_default() += 1.0;
        }
        *want.entry("bad_signature").or_default() += 1.0;
        *want.entry("missing").or_default() += 1.0;
        for (outcome, n) in want {
            assert_eq!(authn(&proxy, "cart", outcome).await?, n, "{outcome}");
        }
        assert_eq!(authn(&proxy, "cart", "ok").await?, 0.0);
        anyhow::Ok(())
    })
    .await?
}

/// Key rotation: with the old and the new key in the JWKS file both tokens pass; after
/// the file holds only the new key and the configuration is reloaded, the old token is
/// refused and the new one passes. A JWKS file broken in between is refused by the
/// reload and the keys in force stay.
///
/// Checked to fail: without the reload (the file rewritten only), the old token still
/// passes: keys are read when the configuration is loaded, so rotation needs a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_by_reloading_the_jwks_file() -> anyhow::Result<()> {
    let Bench {
        _scratch,
        jwks_file,
        backend,
        proxy,
    } = bench(
        "jwt-rotation",
        jwt::jwks(&[ED.jwk("old"), ES.jwk("new")]),
        config,
    )
    .await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "key rotation", async {
        let old = bearer(&ED.sign("old", &claims("old-user", json!({})))?);
        let new = bearer(&ES.sign("new", &claims("new-user", json!({})))?);
        for (what, auth) in [("old", &old), ("new", &new)] {
            let reply = get(addr, "/cart/x", &[("authorization", auth)]).await?;
            assert_eq!(reply.code(), 200, "{what} key before the rotation");
        }

        // A broken file: the reload is refused, nothing changes.
        std::fs::write(&jwks_file, "{\"keys\": [{\"kty\": \"EC\"}]}")?;
        assert!(
            proxy.reload().await.is_err(),
            "a broken JWKS must be refused"
        );
        let reply = get(addr, "/cart/x", &[("authorization", &old)]).await?;
        assert_eq!(reply.code(), 200, "old key after a refused reload");

        std::fs::write(&jwks_file, jwt::jwks(&[ES.jwk("new")]))?;
        let version = proxy.version();
        proxy.reload().await?;
        assert_eq!(proxy.version(), version + 1);
        let reply = get(addr, "/cart/x", &[("authorization", &old)]).await?;
        assert_unauthenticated(
            &reply,
            "/cart/x",
            Some("Jwks has no key matching the Jwt's kid and alg"),
            "old key after the rotation",
        );
        let reply = get(addr, "/cart/x", &[("authorization", &new)]).await?;
        assert_eq!(reply.code(), 200, "new key after the rotation");
        assert_eq!(
            backend.last().expect("a request").header("x-user-id"),
            Some("new-user")
        );
        anyhow::Ok(())
    })
    .await?
}

/// `allow_missing`: no token passes (without claim headers), a bad token does not;
/// `any_of`: a token of either provider passes, none is refused.
///
/// Checked to fail: with `Requirement::AllowMissing` passing every error (not only
/// `Missing`), the expired token passes on `/browse/`; with `AnyOf` trying only its
/// first branch (providers are sorted: `partner`), the shop token is refused on
/// `/either/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_missing_and_any_of() -> anyhow::Result<()> {
    let Bench {
        _scratch,
        jwks_file: _,
        backend,
        proxy,
    } = bench("jwt-optional", shop_jwks(), config).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "allow_missing and any_of", async {
        let now = jwt::now_secs();
        let shop = bearer(&ES.sign("es-1", &claims("shopper", json!({})))?);
        let expired = bearer(&ES.sign("es-1", &claims("u", json!({"exp": now - 3600})))?);
        let partner = bearer(&PARTNER.sign(
            "p-1",
            &json!({"iss": PARTNER_ISS, "sub": "p-user", "exp": now + 600}),
        )?);

        let reply = get(addr, "/browse/x", &[]).await?;
        assert_eq!(reply.code(), 200, "browse without a token");
        assert_eq!(backend.last().expect("a request").header("x-user-id"), None);
        let reply = get(addr, "/browse/x", &[("authorization", &shop)]).await?;
        assert_eq!(reply.code(), 200, "browse with a token");
        assert_eq!(
            backend.last().expect("a request").header("x-user-id"),
            Some("shopper")
        );
        let reply = get(addr, "/browse/x", &[("authorization", &expired)]).await?;
        assert_unauthenticated(
            &reply,
            "/browse/x",
            Some("Jwt is expired"),
            "browse expired",
        );

        for (what, auth) in [("shop", &shop), ("partner", &partner)] {
            let reply = get(addr, "/either/x", &[("authorization", auth)]).await?;
            assert_eq!(reply.code(), 200, "either with a {what} token");
        }
        let reply = get(addr, "/either/x", &[]).await?;
        assert_unauthenticated(&reply, "/either/x", None, "either without a token");

        assert_eq!(authn(&proxy, "browse", "ok").await?, 2.0);
        assert_eq!(authn(&proxy, "browse", "expired").await?, 1.0);
        assert_eq!(authn(&proxy, "either", "ok").await?, 2.0);
        assert_eq!(authn(&proxy, "either", "missing").await?, 1.0);
        anyhow::Ok(())
    })
    .await?
}

/// A listener whose authorization rules look at verified claims.
fn claims_config(backend: SocketAddr, jwks_file: &str) -> String {
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    jwt_providers:
      shop:
        issuer: {ISS}
        audiences: [{AUD}]
        jwks: {{ file: "{jwks_file}" }}
        clock_skew: 5s
    authz:
      default: deny
      rules:
        - name: cart-writers
          to: {{ path_prefixes: [/cart/], methods: [POST] }}
          when: {{ claims: {{ scope: [cart:write] }} }}
        - name: cart-readers
          to: {{ path_prefixes: [/cart/], methods: [GET] }}
          when: {{ claims: {{ scope: [] }} }}
        - name: realm-admins
          to: {{ path_prefixes: [/admin/, /open/] }}
          when: {{ claims: {{ realm.roles: [admin] }} }}
    routes:
      - name: cart
        match: {{ prefix: /cart/ }}
        to: backend
        jwt: shop
      - name: admin
        match: {{ prefix: /admin/ }}
        to: backend
        jwt: {{ provider: shop, allow_missing: true }}
      - name: open
        match: {{ prefix: /open/ }}
        to: backend
clusters:
  backend: {{ endpoints: [{backend}] }}
"#
    )
}

/// Claims in authorization rules: a string claim equal to a listed value or an array
/// claim containing one; `[]` for "present"; nested claims by dotted name. Only a token
/// the route verified counts: none (allow_missing) or a token on a route that does not
/// check tokens matches no claim rule; a bad token is a 401 before any rule.
///
/// Checked to fail: with the verified claims not passed to `authz::decide`
/// (`claims: None` in `http/security.rs`), `POST /cart/a` is a 403; with the provider's
/// `clock_skew` not compiled (Envoy's 0, read as the 60 s default), the token that
/// expired 30 s ago passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_in_authorization_rules() -> anyhow::Result<()> {
    let Bench {
        _scratch,
        jwks_file: _,
        backend,
        proxy,
    } = bench("jwt-claims", shop_jwks(), claims_config).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "claims in rules", async {
        let token = |extra: Value| -> anyhow::Result<String> {
            Ok(bearer(&ES.sign("es-1", &claims("u", extra))?))
        };
        let client = Client::http1().via(addr);
        let send = |method: Method, path: &'static str, auth: Option<String>| {
            let client = client.clone();
            async move {
                let headers: Vec<(&str, &str)> =
                    auth.iter().map(|a| ("authorization", a.as_str())).collect();
                client
                    .send(
                        method,
                        &format!("http://shop.example{path}"),
                        &headers,
                        empty(),
                    )
                    .await
            }
        };
        let writer = token(json!({"scope": ["cart:read", "cart:write"]}))?;
        let writer_string = token(json!({"scope": "cart:write"}))?;
        let reader = token(json!({"scope": ["cart:read"]}))?;
        let no_scope = token(json!({}))?;
        let admin = token(json!({"realm": {"roles": ["dev", "admin"]}}))?;
        let admin_string = token(json!({"realm": {"roles": "admin"}}))?;
        let dev = token(json!({"realm": {"roles": ["dev"]}}))?;
        let forged_admin =
            bearer(&FORGER.sign("es-1", &claims("u", json!({"realm": {"roles": ["admin"]}})))?);

        let allowed = [
            (
                Method::POST,
                "/cart/a",
                Some(writer.clone()),
                "cart-writers",
            ),
            (Method::POST, "/cart/b", Some(writer_string), "cart-writers"),
            (Method::GET, "/cart/c", Some(reader.clone()), "cart-readers"),
            (Method::GET, "/admin/d", Some(admin.clone()), "realm-admins"),
            (Method::GET, "/admin/e", Some(admin_string), "realm-admins"),
        ];
        for (method, path, auth, rule) in allowed {
            let reply = send(method.clone(), path, auth).await?;
            assert_eq!(
                reply.code(),
                200,
                "{method} {path} ({rule}): {:?}",
                reply.text()
            );
            assert_eq!(reply.seen_path(), Some(path));
        }
        let denied = [
            (Method::POST, "/cart/f", Some(reader)),
            (Method::GET, "/cart/g", Some(no_scope)),
            (Method::GET, "/admin/h", Some(dev)),
            (Method::GET, "/admin/i", None),
            // The route does not check tokens, so the token's claims are unknown.
            (Method::GET, "/open/j", Some(admin)),
        ];
        for (method, path, auth) in denied {
            let reply = send(method.clone(), path, auth).await?;
            assert_denied(&reply, &format!("{method} {path}"));
        }
        // Expired 30 s ago: beyond this provider's 5 s clock skew.
        let stale = token(json!({"scope": ["cart:write"], "exp": jwt::now_secs() - 30}))?;
        for (path, auth) in [
            ("/cart/k", None),
            ("/admin/l", Some(forged_admin)),
            ("/cart/m", Some(stale)),
        ] {
            let reply = send(Method::POST, path, auth).await?;
            assert_eq!(reply.code(), 401, "POST {path}: {:?}", reply.text());
        }
        assert_eq!(backend.count(), 5, "{:?}", backend.requests());
        assert_eq!(
            decisions(&proxy, "edge", "allow", "cart-writers").await?,
            2.0
        );
        assert_eq!(
            decisions(&proxy, "edge", "allow", "realm-admins").await?,
            2.0
        );
        assert_eq!(decisions(&proxy, "edge", "deny", "default").await?, 5.0);
        anyhow::Ok(())
    })
    .await?
}

/// OAuth 2 access tokens (RFC 9068 section 2.2.3, RFC 8693 section 4.2) carry `scope` as
/// one space-delimited string, and Istio matches `request.auth.claims[scope]` against
/// each of its words (it treats `scope` and `permission` as space-delimited by
/// default). A rule `claims: { scope: [cart:write] }` should therefore allow a token
/// with `"scope": "cart:read cart:write"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_delimited_scope_claim() -> anyhow::Result<()> {
    let Bench {
        _scratch,
        jwks_file: _,
        backend: _backend,
        proxy,
    } = bench("jwt-scope", shop_jwks(), claims_config).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "space-delimited scope", async {
        let token = bearer(&ES.sign(
            "es-1",
            &claims("u", json!({"scope": "cart:read cart:write"})),
        )?);
        let reply = Client::http1()
            .via(addr)
            .send(
                Method::POST,
                "http://shop.example/cart/items",
                &[("authorization", &token)],
                empty(),
            )
            .await?;
        assert_eq!(reply.code(), 200, "{:?}", reply.text());
        anyhow::Ok(())
    })
    .await?
}
