//! SPIFFE id and trust domain parsing, by tables of good and bad spellings.

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
