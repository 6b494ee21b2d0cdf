//! A development token issuer, for `weft demo` and tests: one ES256 (P-256) signing key
//! held in memory, its public half as a JWKS, and tokens signed with it.
//!
//! It is what an identity provider does, cut down to what a demo needs to show JWT
//! authentication end to end without one: the proxy is configured with
//! [`DevIssuer::jwks`] and a client sends [`DevIssuer::token`]. Not for production: the
//! key lives only as long as the process, and there is no rotation, revocation or login.
//! Nothing here does I/O; the clock is a parameter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Why a key could not be made or a token signed.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    /// Key generation failed.
    #[error("generating the signing key: {0}")]
    Key(#[from] rcgen::Error),
    /// The generated key is not an uncompressed P-256 point (a bug).
    #[error("unexpected public key encoding ({0} bytes)")]
    PublicKey(usize),
    /// Signing failed.
    #[error("signing the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// An ES256 signing key and the JWKS that verifies its tokens.
pub struct DevIssuer {
    kid: String,
    key: EncodingKey,
    /// The public point's coordinates, base64url without padding (JWK `x`, `y`).
    x: String,
    y: String,
}

impl std::fmt::Debug for DevIssuer {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a token says: issuer, audience, subject and lifetime.
#[derive(Clone, Debug)]
pub struct TokenSpec<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `sub`.
    pub subject: &'a str,
    /// `iat` and `nbf`.
    pub issued_at: SystemTime,
    /// `exp` is `issued_at` plus this.
    pub ttl: Duration,
}

impl DevIssuer {
    /// A new P-256 key; tokens carry `kid` in their header.
    pub fn generate(kid: &str) -> Result<DevIssuer, DevIssuerError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        // SEC 1 uncompressed point: 0x04 || X || Y, 32 bytes each.
        let point = pair.public_key_raw();
        if point.len() != 65 || point[0] != 0x04 {
            return Err(DevIssuerError::PublicKey(point.len()));
        }
        Ok(DevIssuer {
            kid: kid.to_owned(),
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            x: URL_SAFE_NO_PAD.encode(&point[1..33]),
            y: URL_SAFE_NO_PAD.encode(&point[33..]),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (RFC 7517) with the public key, one line of JSON.
    pub fn jwks(&self) -> String {
        json!({ "keys": [{
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": self.kid,
            "x": self.x,
            "y": self.y,
        }]})
        .to_string()
    }

    /// A token over `claims`, signed ES256 with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String, DevIssuerError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }

    /// A token with `iss`, `aud`, `sub`, `iat`, `nbf` and `exp` from `spec`.
    pub fn token(&self, spec: &TokenSpec<'_>) -> Result<String, DevIssuerError> {
        let iat = spec
            .issued_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.sign(&json!({
            "iss": spec.issuer,
            "aud": spec.audience,
            "sub": spec.subject,
            "iat": iat,
            "nbf": iat,
            "exp": iat.saturating_add(spec.ttl.as_secs()),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::{HeaderMap, HeaderValue, header};

    use super::*;
    use crate::authn::{self, AuthnError, Jwks, Provider, Requirement, TokenLocation};

    fn provider(jwks: &str) -> Provider {
        Provider {
            name: "dev".into(),
            issuer: Some("https://auth.test".to_owned()),
            audiences: vec!["api".to_owned()],
            jwks: Jwks::parse(jwks).unwrap(),
            clock_skew: authn::DEFAULT_CLOCK_SKEW,
            forward: false,
            claims_to_headers: Vec::new(),
            from: vec![TokenLocation::bearer()],
        }
    }

    fn check(p: &Provider, token: &str, now: SystemTime) -> Result<String, AuthnError> {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        let verified = authn::authenticate(
            std::slice::from_ref(p),
            &Requirement::Provider(0),
            &headers,
            now,
        )?;
        Ok(verified.unwrap().claims["sub"].as_str().unwrap().to_owned())
    }

    #[test]
    fn its_tokens_verify_against_its_jwks_only() {
        let issuer = DevIssuer::generate("k1").unwrap();
        let other = DevIssuer::generate("k1").unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let spec = TokenSpec {
            issuer: "https://auth.test",
            audience: "api",
            subject: "alice",
            issued_at: t0,
            ttl: Duration::from_secs(3600),
        };
        let token = issuer.token(&spec).unwrap();
        let p = provider(&issuer.jwks());
        // (token, clock, expected)
        let cases: &[(&str, SystemTime, Result<&str, AuthnError>)] = &[
            (&token, t0, Ok("alice")),
            (
                &token,
                t0 + Duration::from_secs(7200),
                Err(AuthnError::Expired),
            ),
            (
                &other.token(&spec).unwrap(),
                t0,
                Err(AuthnError::BadSignature),
            ),
            (
                &issuer
                    .token(&TokenSpec {
                        audience: "else",
                        ..spec.clone()
                    })
                    .unwrap(),
                t0,
                Err(AuthnError::BadAudience),
            ),
        ];
        for (i, (token, now, want)) in cases.iter().enumerate() {
            let got = check(&p, token, *now);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "case {i}");
        }
    }
}
