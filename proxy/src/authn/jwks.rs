//! JSON Web Key Sets (RFC 7517) turned into verification keys.
//!
//! A JWKS is parsed once, when the configuration is loaded, so that a request only looks
//! keys up. Only public signature keys are kept: RSA (`RS256`/`RS384`/`RS512`,
//! `PS256`/`PS384`/`PS512`), EC P-256 (`ES256`) and P-384 (`ES384`), and OKP Ed25519
//! (`EdDSA`). Each key is bound to its algorithm here, which is what stops a token from
//! choosing how it is checked (`alg: none`, or `HS256` keyed with an RSA public key).
//!
//! Keys Weft cannot use (encryption keys, symmetric `oct` keys, curves without a verifier)
//! are skipped and listed in [`Jwks::skipped`]; a key that claims to be usable but is
//! broken (bad base64, wrong length, an `alg` that does not fit its type) is an error that
//! names the key's index, and so is a document with no usable key at all.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// Smallest and largest RSA modulus the verifier accepts (aws-lc's 2048-8192 bit range);
/// a key outside it could never verify a token, so it is refused when loaded.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Base64url as RFC 7517 writes it (no padding), tolerating padding some issuers add.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The usable keys of a JWKS document.
#[derive(Clone, Debug)]
pub struct Jwks {
    /// Signature keys, in document order.
    pub keys: Vec<Key>,
    /// Why each skipped key was skipped (`keys[2]: kty "oct" ...`), for logs.
    pub skipped: Vec<String>,
}

/// One public key, bound to the algorithm it verifies.
#[derive(Clone, Debug)]
pub struct Key {
    /// The key id, matched against a token's `kid`.
    pub kid: Option<String>,
    /// The algorithm: the key's `alg`, or inferred from `kty`/`crv` (RSA: `RS256`).
    pub alg: Algorithm,
    /// Whether `alg` was given in the document. An RSA key without one also verifies
    /// the other RSA algorithms (as Envoy does); EC and OKP keys have one per curve.
    pub alg_given: bool,
    /// The public key material.
    pub decoding: DecodingKey,
}

/// Why a JWKS document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not a JSON object.
    #[error("not a JWKS: {0}")]
    Json(String),
    /// No `keys` array.
    #[error("a JWKS needs a \"keys\" array")]
    NoKeys,
    /// A key is broken.
    #[error("keys[{index}]: {reason}")]
    Key {
        /// Its position in `keys`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Nothing usable was left.
    #[error("no usable signature key{}", skipped_list(.0))]
    NoUsableKey(Vec<String>),
}

fn skipped_list(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" ({})", skipped.join("; "))
    }
}

impl Key {
    /// Whether this key verifies tokens signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        alg == self.alg || (!self.alg_given && is_rsa(alg) && is_rsa(self.alg))
    }
}

fn is_rsa(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    )
}

/// The signature algorithms Weft verifies, by their JOSE names. Everything else
/// (`none`, `HS*`, `ES512`, ...) is unsupported.
pub fn signature_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// JOSE algorithms for encryption or key agreement: a key carrying one is not for
/// signatures and is skipped rather than refused.
fn is_encryption_alg(name: &str) -> bool {
    name.starts_with("RSA-OAEP")
        || name == "RSA1_5"
        || name.starts_with("ECDH-ES")
        || name.starts_with("A128")
        || name.starts_with("A192")
        || name.starts_with("A256")
        || name == "dir"
}

impl Jwks {
    /// Parses a JWKS document.
    pub fn parse(text: &str) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| JwksError::Json(e.to_string()))?;
        let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
            return Err(if doc.is_object() {
                JwksError::NoKeys
            } else {
                JwksError::Json("expected a JSON object".to_owned())
            });
        };
        let mut out = Jwks {
            keys: Vec::new(),
            skipped: Vec::new(),
        };
        for (index, k) in keys.iter().enumerate() {
            let fail = |reason: String| JwksError::Key { index, reason };
            let Some(obj) = k.as_object() else {
                return Err(fail("not a JSON object".to_owned()));
            };
            match parse_key(obj).map_err(fail)? {
                Parsed::Key(key) => out.keys.push(key),
                Parsed::Skip(why) => out.skipped.push(format!("keys[{index}]: {why}")),
            }
        }
        if out.keys.is_empty() {
            return Err(JwksError::NoUsableKey(out.skipped));
        }
        Ok(out)
    }
}

enum Parsed {
    Key(Key),
    Skip(String),
}

fn parse_key(obj: &Map<String, Value>) -> Result<Parsed, String> {
    let kty = string_field(obj, "kty")?.ok_or("\"kty\" is required")?;
    let kid = string_field(obj, "kid")?.map(str::to_owned);
    let alg_name = string_field(obj, "alg")?;
    match string_field(obj, "use")? {
        None | Some("sig") => {}
        Some(other) => return Ok(Parsed::Skip(format!("use {other:?} (not a signature key)"))),
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("\"key_ops\" must be an array")?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Ok(Parsed::Skip(
                "key_ops does not include \"verify\"".to_owned(),
            ));
        }
    }
    if let Some(name) = alg_name
        && is_encryption_alg(name)
    {
        return Ok(Parsed::Skip(format!("alg {name:?} is for encryption")));
    }
    let (inferred, decoding) = match kty {
        "RSA" => {
            let n = b64_field(obj, "n")?;
            let e = b64_field(obj, "e")?;
            let bits = significant_bits(&n);
            if !RSA_BITS.contains(&bits) {
                return Err(format!(
                    "an RSA modulus of {bits} bits; {}-{} bits are supported",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                ));
            }
            if e.iter().all(|b| *b == 0) {
                return Err("the RSA exponent is zero".to_owned());
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        "EC" => {
            let crv = string_field(obj, "crv")?.ok_or("\"crv\" is required for kty EC")?;
            let (alg, len) = match crv {
                "P-256" => (Algorithm::ES256, 32),
                "P-384" => (Algorithm::ES384, 48),
                other => {
                    return Ok(Parsed::Skip(format!("EC curve {other:?} is not supported")));
                }
            };
            let x = b64_field(obj, "x")?;
            let y = b64_field(obj, "y")?;
            if x.len() != len || y.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes each"));
            }
            // The uncompressed point, which is what the verifier takes.
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (alg, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            let crv = string_field(obj, "crv")?.ok_or("\"crv\" is required for kty OKP")?;
            if crv != "Ed25519" {
                return Ok(Parsed::Skip(format!("OKP curve {crv:?} is not supported")));
            }
            let x = b64_field(obj, "x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key must be 32 bytes".to_owned());
            }
            (Algorithm::EdDSA, DecodingKey::from_ed_der(&x))
        }
        "oct" => {
            return Ok(Parsed::Skip(
                "kty \"oct\": symmetric (HMAC) keys are not supported".to_owned(),
            ));
        }
        other => return Ok(Parsed::Skip(format!("kty {other:?} is not supported"))),
    };
    let alg = match alg_name {
        None => inferred,
        // RFC 9864's fully specified name for EdDSA over Ed25519.
        Some("Ed25519") if inferred == Algorithm::EdDSA => inferred,
        Some(name) => {
            let alg =
                signature_alg(name).ok_or_else(|| format!("alg {name:?} is not supported"))?;
            let fits = if inferred == Algorithm::RS256 {
                is_rsa(alg)
            } else {
                alg == inferred
            };
            if !fits {
                return Err(format!("alg {name:?} does not fit the key type {kty:?}"));
            }
            alg
        }
    };
    Ok(Parsed::Key(Key {
        kid,
        alg,
        alg_given: alg_name.is_some(),
        decoding,
    }))
}

fn string_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name:?} must be a string")),
    }
}

fn b64_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = string_field(obj, name)?.ok_or_else(|| format!("{name:?} is required"))?;
    let bytes = B64URL_LENIENT
        .decode(s)
        // Some issuers write standard base64 despite RFC 7518.
        .or_else(|_| general_purpose::STANDARD.decode(s))
        .map_err(|_| format!("{name:?} is not base64url"))?;
    if bytes.is_empty() {
        return Err(format!("{name:?} is empty"));
    }
    Ok(bytes)
}

/// Bits of a big-endian unsigned integer, leading zeros not counted.
fn significant_bits(n: &[u8]) -> usize {
    let Some(first) = n.iter().position(|b| *b != 0) else {
        return 0;
    };
    (n.len() - first - 1) * 8 + (8 - n[first].leading_zeros() as usize)
}
