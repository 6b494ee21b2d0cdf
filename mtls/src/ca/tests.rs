//! Dev CA tests: what the issued certificates say, saving and loading.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::testutil::TempDir;

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

#[test]
fn ca_certificate_names_its_trust_domain() {
    let ca = DevCa::new(&td()).unwrap();
    let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
    assert_eq!(ca_trust_domain(&der).unwrap(), td());
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(x509.is_ca());
    let usage = x509.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
}

#[test]
fn issued_workload_certificate_says_what_a_svid_says() {
    let ca = DevCa::new(&td()).unwrap();
    let id = SpiffeId::workload(&td(), "default", "web").unwrap();
    let issued = ca.issue(&id, Duration::from_secs(3600)).unwrap();
    assert_eq!(issued.ca_pem, ca.cert_pem());
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!x509.is_ca());
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(x509.key_usage().unwrap().unwrap().value.digital_signature());
    let leaf = crate::leaf::parse(&der).unwrap();
    assert_eq!(leaf.uris, vec![id.to_string()]);
    assert!(leaf.dns.is_empty());
    let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
    assert_eq!(lifetime, Duration::from_secs(3660));
}

#[test]
fn bad_specs_are_refused() {
    let ca = DevCa::new(&td()).unwrap();
    let mut spec = IssueSpec::workload(
        &SpiffeId::workload(&td(), "a", "b").unwrap(),
        Duration::from_secs(60),
    );
    spec.not_after = spec.not_before;
    assert!(
        ca.issue_with(&spec)
            .unwrap_err()
            .to_string()
            .contains("notAfter")
    );
    spec.not_after = spec.not_before + Duration::from_secs(1);
    spec.uri_sans.clear();
    assert!(
        ca.issue_with(&spec)
            .unwrap_err()
            .to_string()
            .contains("SAN")
    );
}

#[test]
fn saved_ca_loads_and_keeps_issuing_under_the_same_root() {
    let dir = TempDir::new("ca-save");
    let ca = init_dir(&td(), dir.path()).unwrap();
    assert_eq!(mode_of(&dir.path().join(CA_KEY)), 0o600);
    assert_eq!(mode_of(&dir.path().join(CA_CERT)), 0o644);
    let out = dir.path().join("web");
    let id = SpiffeId::workload(&td(), "default", "web").unwrap();
    let issued = issue_dir(dir.path(), &id, Duration::from_secs(600), &out).unwrap();
    assert_eq!(issued.ca_pem, ca.cert_pem());
    assert_eq!(fs::read_to_string(out.join(CERT)).unwrap(), issued.cert_pem);
    assert_eq!(fs::read_to_string(out.join(KEY)).unwrap(), issued.key_pem);
    assert_eq!(
        fs::read_to_string(out.join(CA_CERT)).unwrap(),
        ca.cert_pem()
    );
    assert_eq!(mode_of(&out.join(KEY)), 0o600);
    // The loaded CA's certificates chain to the original root.
    let creds = crate::Credentials::workload(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
        "test",
    )
    .unwrap();
    assert_eq!(creds.id(), Some(&id));
    assert_eq!(DevCa::load(dir.path()).unwrap().trust_domain(), &td());
}

#[test]
fn loading_a_ca_with_the_wrong_key_names_both_files() {
    let dir = TempDir::new("ca-mismatch");
    DevCa::new(&td()).unwrap().save(dir.path()).unwrap();
    let other = DevCa::new(&td()).unwrap();
    write_atomic(dir.path(), CA_KEY, other.key_pem.as_bytes(), KEY_MODE).unwrap();
    let err = DevCa::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca-key.pem") && err.contains("ca.pem"),
        "{err}"
    );
    let err = DevCa::load(&dir.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere/ca.pem"), "{err}");
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}
