//! JSON Web Tokens for the authentication tests: key pairs generated in the test, their
//! public halves as a JWKS document, and tokens signed with `jsonwebtoken`.
//!
//! [`SigningKey`] makes ES256 (P-256), RS256 (2048-bit RSA) and EdDSA (Ed25519) keys
//! with `rcgen`; [`SigningKey::jwk`] is the public key as a JWK (with a `kid` and its
//! `alg`), [`jwks`] a document of several, [`SigningKey::sign`] a token over any claims.
//! The forgeries a verifier must refuse are built here too: [`unsigned`] (`alg: none`)
//! and [`hs256`] (an HMAC "signature" keyed with bytes an attacker knows, such as the
//! RSA public key: the algorithm-confusion attack).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A private key that signs tokens, with its public half as a JWK.
pub struct SigningKey {
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK members (`kty`, `crv`, `x`, `y`, `n`, `e`) without `kid`/`alg`.
    public: Value,
    /// The public key in the DER form `rcgen` gives (PKCS#1 `RSAPublicKey` for RSA, the
    /// raw point for EC and Ed25519).
    public_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of test output.
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new ECDSA P-256 key (`ES256`).
    pub fn es256() -> anyhow::Result<Self> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating a P-256 key")?;
        let raw = kp.public_key_raw();
        anyhow::ensure!(
            raw.len() == 65 && raw[0] == 0x04,
            "expected an uncompressed P-256 point"
        );
        Ok(Self {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&kp.serialize_der()),
            public: json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..])}),
            public_der: raw.to_vec(),
        })
    }

    /// A new Ed25519 key (`EdDSA`).
    pub fn ed25519() -> anyhow::Result<Self> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .context("generating an Ed25519 key")?;
        Ok(Self {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&kp.serialize_der()),
            public: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key_raw())}),
            public_der: kp.public_key_raw().to_vec(),
        })
    }

    /// A new 2048-bit RSA key (`RS256`).
    pub fn rs256() -> anyhow::Result<Self> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .context("generating an RSA key")?;
        // jsonwebtoken signs with a PKCS#1 RSAPrivateKey: unwrap it from the PKCS#8
        // PrivateKeyInfo (SEQUENCE { version, algorithm, OCTET STRING { key } }).
        let pkcs8 = kp.serialize_der();
        let (_, info, _) = der(&pkcs8)?;
        let (_, _version, rest) = der(info)?;
        let (_, _algorithm, rest) = der(rest)?;
        let (tag, pkcs1, _) = der(rest)?;
        anyhow::ensure!(tag == 0x04, "PKCS#8 wraps the RSA key in an OCTET STRING");
        // The public key is SEQUENCE { modulus, publicExponent }.
        let public_der = kp.public_key_raw().to_vec();
        let (_, seq, _) = der(&public_der)?;
        let (_, n, rest) = der(seq)?;
        let (_, e, _) = der(rest)?;
        // DER writes a leading zero to keep the integer positive; JWK does not.
        let n = n.strip_prefix(&[0]).unwrap_or(n);
        let public = json!({"kty": "RSA", "n": b64(n), "e": b64(e)});
        Ok(Self {
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(pkcs1),
            public,
            public_der,
        })
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public key as a JWK with `kid`, `alg` and `use: sig`.
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = json!(kid);
        // serde writes the JOSE name (`ES256`, `EdDSA`, `RS256`).
        jwk["alg"] = serde_json::to_value(self.alg).unwrap_or(Value::Null);
        jwk["use"] = json!("sig");
        jwk
    }

    /// The public key's DER bytes (what an algorithm-confusion forgery keys its HMAC
    /// with).
    pub fn public_der(&self) -> &[u8] {
        &self.public_der
    }

    /// A token over `claims`, signed with this key, its header naming `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing a token")
    }
}

/// A JWKS document (`{"keys": [...]}`) of these JWKs.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// An `alg: none` token: the claims with no signature at all (`header.payload.`).
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An `HS256` token whose HMAC key is `secret` (e.g. [`SigningKey::public_der`]: a
/// verifier that let the token choose the algorithm would check it with the public key
/// as the HMAC secret and accept it).
pub fn hs256(secret: &[u8], kid: &str, claims: &Value) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
        .context("signing an HS256 token")
}

/// Seconds since the Unix epoch, now (for `iat`, `exp` and `nbf`).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One DER element of `input`: (tag, contents, what follows).
fn der(input: &[u8]) -> anyhow::Result<(u8, &[u8], &[u8])> {
    let short = || anyhow::anyhow!("truncated DER");
    let (&tag, rest) = input.split_first().ok_or_else(short)?;
    let (&first, rest) = rest.split_first().ok_or_else(short)?;
    let (len, rest) = if first & 0x80 == 0 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        anyhow::ensure!(n <= 4, "DER length of {n} bytes");
        let bytes = rest.get(..n).ok_or_else(short)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    let contents = rest.get(..len).ok_or_else(short)?;
    Ok((tag, contents, &rest[len..]))
}
