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
mod tests {
    use super::*;

    #[test]
    fn good_ids_parse_and_split() {
        // input, trust domain, path, namespace and service account
        type Row<'a> = (&'a str, &'a str, &'a str, Option<(&'a str, &'a str)>);
        let table: &[Row<'_>] = &[
            (
                "spiffe://example.org/ns/default/sa/web",
                "example.org",
                "/ns/default/sa/web",
                Some(("default", "web")),
            ),
            ("spiffe://td/a", "td", "/a", None),
            (
                "spiffe://my_td-1.local/A.b-c_D/e",
                "my_td-1.local",
                "/A.b-c_D/e",
                None,
            ),
            (
                "spiffe://e.org/ns/a/sa/b/extra",
                "e.org",
                "/ns/a/sa/b/extra",
                None,
            ),
            ("spiffe://e.org/ns/a/sa", "e.org", "/ns/a/sa", None),
            ("spiffe://e.org/x/..a/b.", "e.org", "/x/..a/b.", None),
        ];
        for (input, td, path, ns_sa) in table {
            let id: SpiffeId = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(id.as_str(), *input);
            assert_eq!(id.to_string(), *input);
            assert_eq!(id.trust_domain(), *td, "{input}");
            assert_eq!(id.path(), *path, "{input}");
            assert_eq!(id.namespace().zip(id.service_account()), *ns_sa, "{input}");
        }
    }

    #[test]
    fn bad_ids_are_refused_with_a_reason() {
        let long = format!("spiffe://e.org/{}", "a".repeat(2048));
        let table: &[(&str, &str)] = &[
            ("", "spiffe://"),
            ("http://e.org/a", "spiffe://"),
            ("SPIFFE://e.org/a", "spiffe://"),
            ("spiffe:/e.org/a", "spiffe://"),
            ("spiffe://e.org", "path is empty"),
            ("spiffe://e.org/", "end with '/'"),
            ("spiffe://e.org/a/", "end with '/'"),
            ("spiffe:///a", "trust domain is empty"),
            ("spiffe://Example.org/a", "lowercase"),
            ("spiffe://e.org:443/a", "port"),
            ("spiffe://user@e.org/a", "userinfo"),
            ("spiffe://e%2eorg/a", "trust domain may hold"),
            ("spiffe://e.org//a", "empty segment"),
            ("spiffe://e.org/a//b", "empty segment"),
            ("spiffe://e.org/./a", "'.' or '..'"),
            ("spiffe://e.org/a/..", "'.' or '..'"),
            ("spiffe://e.org/a?b=c", "query or fragment"),
            ("spiffe://e.org/a#b", "query or fragment"),
            ("spiffe://e.org/a b", "path segments may hold"),
            ("spiffe://e.org/a%20b", "path segments may hold"),
            ("spiffe://e.org/ünicode", "path segments may hold"),
            (&long, "2048"),
        ];
        for (input, reason) in table {
            let err = input.parse::<SpiffeId>().unwrap_err();
            assert!(err.to_string().contains(reason), "{input}: {err}");
        }
    }

    #[test]
    fn longest_id_is_accepted() {
        let prefix = "spiffe://e.org/";
        let id = format!("{prefix}{}", "a".repeat(MAX_ID_LEN - prefix.len()));
        assert!(id.parse::<SpiffeId>().is_ok());
    }

    #[test]
    fn trust_domains_parse_bare_or_with_scheme() {
        for (input, want) in [
            ("example.org", "example.org"),
            ("spiffe://example.org", "example.org"),
            ("a_b-c.1", "a_b-c.1"),
        ] {
            let td: TrustDomain = input.parse().unwrap();
            assert_eq!(td.as_str(), want);
            assert_eq!(td.id_prefix(), format!("spiffe://{want}/"));
        }
        for bad in [
            "",
            "Example.org",
            "e.org:80",
            "u@e.org",
            "e.org/a",
            "spiffe://",
        ] {
            assert!(bad.parse::<TrustDomain>().is_err(), "{bad}");
        }
    }

    #[test]
    fn workload_ids_are_built_and_checked() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let id = SpiffeId::workload(&td, "prod", "api").unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/ns/prod/sa/api");
        assert!(id.is_in(&td));
        assert!(SpiffeId::workload(&td, "", "api").is_err());
        assert!(SpiffeId::workload(&td, "a/b", "api").is_err());
        assert!(SpiffeId::workload(&td, "a", "b/c").is_err());
        assert!(SpiffeId::workload(&td, "..", "api").is_err());
    }
}
