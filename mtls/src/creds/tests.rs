//! Credentials tests: what loads, and the error for each thing that does not.

use std::time::Duration;

use super::*;
use crate::{DevCa, IssueSpec, TrustDomain};

fn ca() -> DevCa {
    DevCa::new(&"example.org".parse::<TrustDomain>().unwrap()).unwrap()
}

fn id(sa: &str) -> SpiffeId {
    format!("spiffe://example.org/ns/default/sa/{sa}")
        .parse()
        .unwrap()
}

fn workload(issued: &crate::Issued) -> Result<Credentials, Error> {
    Credentials::workload(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        issued.ca_pem.as_bytes(),
        "test",
    )
}

#[test]
fn issued_workload_credentials_load() {
    let ca = ca();
    let issued = ca.issue(&id("web"), Duration::from_secs(3600)).unwrap();
    let creds = workload(&issued).unwrap();
    assert_eq!(creds.id(), Some(&id("web")));
    assert_eq!(creds.source(), "test");
    assert!(creds.trust().is_some());
    assert!(creds.not_before() < SystemTime::now());
    assert!(creds.not_after() > SystemTime::now() + Duration::from_secs(3500));
    assert_eq!(creds.certified_key().cert.len(), 1);
    assert_eq!(creds.leaf(), &creds.certified_key().cert[0]);
}

#[test]
fn a_key_from_another_certificate_is_refused() {
    let ca = ca();
    let a = ca.issue(&id("a"), Duration::from_secs(60)).unwrap();
    let b = ca.issue(&id("b"), Duration::from_secs(60)).unwrap();
    let err = Credentials::workload(
        a.cert_pem.as_bytes(),
        b.key_pem.as_bytes(),
        a.ca_pem.as_bytes(),
        "sds",
    )
    .unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "sds private key does not match the certificate in sds certificate (their public keys differ)"
    );
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = ca();
    let now = SystemTime::now();
    let mut spec = IssueSpec::workload(&id("a"), Duration::from_secs(60));
    spec.not_before = now - Duration::from_secs(7200);
    spec.not_after = now - Duration::from_secs(3600);
    let err = workload(&ca.issue_with(&spec).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("expired at"), "{err}");
    spec.not_before = now + Duration::from_secs(3600);
    spec.not_after = now + Duration::from_secs(7200);
    let err = workload(&ca.issue_with(&spec).unwrap()).unwrap_err();
    assert!(matches!(err, Error::NotYetValid { .. }), "{err:?}");
    assert!(err.to_string().contains("not valid before"), "{err}");
}

#[test]
fn workload_certificates_need_exactly_one_spiffe_uri_san() {
    let ca = ca();
    let base = IssueSpec::workload(&id("a"), Duration::from_secs(60));
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&[], &["web.example.org"], "no spiffe:// URI SAN"),
        (
            &[],
            &["spiffe://example.org/ns/a/sa/b"],
            "no spiffe:// URI SAN",
        ),
        (&["https://example.org/a"], &[], "no spiffe:// URI SAN"),
        (
            &["spiffe://example.org/a", "spiffe://example.org/b"],
            &[],
            "2 URI SANs",
        ),
        (
            &["spiffe://example.org/a/"],
            &[],
            "is not a valid SPIFFE id",
        ),
    ];
    for (uris, dns, want) in cases {
        let spec = IssueSpec {
            uri_sans: uris.iter().map(|s| s.to_string()).collect(),
            dns_sans: dns.iter().map(|s| s.to_string()).collect(),
            ..base.clone()
        };
        let issued = ca.issue_with(&spec).unwrap();
        let err = workload(&issued).unwrap_err().to_string();
        assert!(err.contains(want), "{uris:?} {dns:?}: {err}");
        // Without a bundle the same certificate is a fine edge certificate.
        assert!(
            Credentials::edge(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), "e").is_ok()
        );
    }
}

#[test]
fn bad_inputs_name_what_is_wrong() {
    let ca = ca();
    let ok = ca.issue(&id("a"), Duration::from_secs(60)).unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "",
            &ok.key_pem,
            &ok.ca_pem,
            "test certificate: no PEM certificate",
        ),
        (
            &ok.cert_pem,
            "",
            &ok.ca_pem,
            "test private key: no usable private key",
        ),
        (
            &ok.cert_pem,
            &ok.key_pem,
            "",
            "test trust bundle: trust bundle holds no",
        ),
        (
            &ok.cert_pem,
            &ok.key_pem,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "test trust bundle: trust bundle certificate #1 is unusable",
        ),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &ok.key_pem,
            &ok.ca_pem,
            "test certificate: not a usable X.509 certificate",
        ),
    ];
    for (cert, key, bundle, want) in cases {
        let err = Credentials::workload(cert.as_bytes(), key.as_bytes(), bundle.as_bytes(), "test")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
    }
}

#[test]
fn edge_credentials_keep_lowercased_dns_names() {
    let ca = ca();
    let names = vec!["API.example.com".to_owned(), "*.Example.org".to_owned()];
    let issued = ca.issue_server(&names, Duration::from_secs(60)).unwrap();
    let creds =
        Credentials::edge(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), "gw").unwrap();
    assert_eq!(creds.dns_names(), ["api.example.com", "*.example.org"]);
    assert!(creds.id().is_none());
    assert!(creds.trust().is_none());
}
