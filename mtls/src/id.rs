//! SPIFFE ids and trust domains, validated when parsed.
//!
//! A workload's identity in the mesh is a SPIFFE id, `spiffe://trust-domain/path`,
//! carried as the one URI SAN of its certificate. Authorization and metrics key on it,
//! so a value of these types is always well formed: the rules of the SPIFFE ID spec are
//! checked once, in [`FromStr`], and never again. Weft's own paths are
//! `/ns/NAMESPACE/sa/SERVICE_ACCOUNT` (Kubernetes-style); any valid path is accepted.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The URI scheme of every SPIFFE id.
const SCHEME: &str = "spiffe://";
/// The SPIFFE spec's limit on the length of a whole id, in bytes.
const MAX_ID_LEN: usize = 2048;

/// A SPIFFE trust domain (`example.org`): the authority that issues ids under it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A SPIFFE id (`spiffe://example.org/ns/default/sa/web`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole id, as parsed (it is already canonical: nothing is normalized).
    text: String,
    /// Where the path starts in `text` (the `/` after the trust domain).
    path_at: usize,
}

impl TrustDomain {
    /// The trust domain name, without scheme (`example.org`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix every id in this trust domain starts with: `spiffe://example.org/`.
    pub fn id_prefix(&self) -> String {
        format!("{SCHEME}{}/", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = Error;

    /// Accepts `example.org` and, as SPIFFE tooling commonly writes it,
    /// `spiffe://example.org`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let name = s.strip_prefix(SCHEME).unwrap_or(s);
        check_trust_domain(name).map_err(|reason| Error::InvalidTrustDomain {
            input: s.to_owned(),
            reason,
        })?;
        Ok(Self(name.to_owned()))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl SpiffeId {
    /// Weft's id for a Kubernetes-style workload: `spiffe://TD/ns/NS/sa/SA`.
    /// `ns` and `sa` must each be one path segment.
    pub fn workload(td: &TrustDomain, ns: &str, sa: &str) -> Result<SpiffeId, Error> {
        let text = format!("{SCHEME}{td}/ns/{ns}/sa/{sa}");
        if ns.contains('/') || sa.contains('/') {
            // Otherwise the id would parse, but not back into this namespace and account.
            return Err(Error::InvalidSpiffeId {
                input: text,
                reason: "the namespace and service account must be single path segments",
            });
        }
        text.parse()
    }

    /// The whole id (`spiffe://example.org/ns/default/sa/web`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The trust domain part (`example.org`).
    pub fn trust_domain(&self) -> &str {
        &self.text[SCHEME.len()..self.path_at]
    }

    /// The path, starting with `/` (`/ns/default/sa/web`).
    pub fn path(&self) -> &str {
        &self.text[self.path_at..]
    }

    /// The namespace, when the path is `/ns/NS/sa/SA`.
    pub fn namespace(&self) -> Option<&str> {
        self.ns_sa().map(|(ns, _)| ns)
    }

    /// The service account, when the path is `/ns/NS/sa/SA`.
    pub fn service_account(&self) -> Option<&str> {
        self.ns_sa().map(|(_, sa)| sa)
    }

    /// Whether this id belongs to `td`.
    pub fn is_in(&self, td: &TrustDomain) -> bool {
        self.trust_domain() == td.as_str()
    }

    fn ns_sa(&self) -> Option<(&str, &str)> {
        let mut parts = self.path().strip_prefix('/')?.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidSpiffeId {
            input: s.to_owned(),
            reason,
        };
        let path_at = check_id(s).map_err(invalid)?;
        Ok(Self {
            text: s.to_owned(),
            path_at,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.text)
    }
}

/// Checks a whole id and returns where its path starts.
fn check_id(s: &str) -> Result<usize, &'static str> {
    if s.len() > MAX_ID_LEN {
        return Err("longer than 2048 bytes");
    }
    let Some(rest) = s.strip_prefix(SCHEME) else {
        return Err("must start with \"spiffe://\" (lowercase scheme)");
    };
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not allowed");
    }
    let slash = rest.find('/').ok_or("the path is empty")?;
    check_trust_domain(&rest[..slash])?;
    check_path(&rest[slash..])?;
    Ok(SCHEME.len() + slash)
}

fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("the trust domain is empty");
    }
    if td.contains('@') {
        return Err("userinfo is not allowed in the trust domain");
    }
    if td.contains(':') {
        return Err("a port is not allowed in the trust domain");
    }
    if td.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("the trust domain must be lowercase");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("the trust domain may hold only a-z, 0-9, '.', '-' and '_'");
    }
    Ok(())
}

/// `path` starts with `/`.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path == "/" || path.ends_with('/') {
        return Err("the path must not end with '/'");
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return Err("the path has an empty segment (\"//\")"),
            "." | ".." => return Err("the path must not hold '.' or '..' segments"),
            _ => {}
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err("path segments may hold only A-Z, a-z, 0-9, '.', '-' and '_'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
