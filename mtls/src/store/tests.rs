//! Store tests: publish semantics, expiry accounting, and the file producer against
//! real files and inotify.

use std::time::Duration;

use super::*;
use crate::testutil::TempDir;
use crate::{DevCa, IssueSpec, Issued, SpiffeId, TrustDomain};

/// Bound on every wait for the file watcher.
const WAIT: Duration = Duration::from_secs(10);

fn ca() -> DevCa {
    DevCa::new(&"example.org".parse::<TrustDomain>().unwrap()).unwrap()
}

fn id(sa: &str) -> SpiffeId {
    format!("spiffe://example.org/ns/default/sa/{sa}")
        .parse()
        .unwrap()
}

fn load(issued: &Issued) -> Result<Credentials, Error> {
    Credentials::workload(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        issued.ca_pem.as_bytes(),
        "wl",
    )
}

fn has(registry: &Registry, line: &str) -> bool {
    registry.render().lines().any(|l| l == line)
}

#[test]
fn a_rejected_update_keeps_the_previous_credentials() {
    let registry = Registry::new();
    let store = CertStore::new("wl", &registry);
    let rx = store.subscribe();
    assert!(store.current().is_none());
    let ca = ca();
    assert!(store.publish(load(
        &ca.issue(&id("a"), Duration::from_secs(3600)).unwrap()
    )));
    let first = store.current().unwrap();
    assert_eq!(first.id(), Some(&id("a")));
    assert!(rx.has_changed().unwrap());

    let mut expired = IssueSpec::workload(&id("b"), Duration::from_secs(60));
    expired.not_before -= Duration::from_secs(7200);
    expired.not_after -= Duration::from_secs(3600);
    assert!(!store.publish(load(&ca.issue_with(&expired).unwrap())));
    assert!(Arc::ptr_eq(&store.current().unwrap(), &first));
    assert!(Arc::ptr_eq(rx.borrow().as_ref().unwrap(), &first));

    assert!(has(
        &registry,
        r#"weft_tls_cert_loads_total{source="wl",outcome="ok"} 1"#
    ));
    assert!(has(
        &registry,
        r#"weft_tls_cert_loads_total{source="wl",outcome="rejected"} 1"#
    ));
    let gauge = registry
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"weft_tls_cert_expiry_seconds{source="wl"} "#)
                .map(str::to_owned)
        })
        .unwrap();
    let left: f64 = gauge.parse().unwrap();
    assert!((3500.0..=3600.0).contains(&left), "{left}");
}

#[test]
fn a_certificate_near_its_end_is_counted_as_expiring() {
    let registry = Registry::new();
    let store = CertStore::new("wl", &registry);
    let ca = ca();
    // Lifetime 65 min: the threshold is 13 min (a fifth), and 5 min are left.
    let now = SystemTime::now();
    let spec = IssueSpec {
        not_before: now - Duration::from_secs(3600),
        not_after: now + Duration::from_secs(300),
        ..IssueSpec::workload(&id("a"), Duration::ZERO)
    };
    store.publish(load(&ca.issue_with(&spec).unwrap()));
    assert!(has(
        &registry,
        r#"weft_tls_cert_expiring_total{source="wl"} 1"#
    ));
    store.check_expiry();
    assert!(has(
        &registry,
        r#"weft_tls_cert_expiring_total{source="wl"} 2"#
    ));
    // A fresh certificate is not.
    store.publish(load(&ca.issue(&id("a"), Duration::from_secs(600)).unwrap()));
    assert!(has(
        &registry,
        r#"weft_tls_cert_expiring_total{source="wl"} 2"#
    ));
}

#[test]
fn expiry_threshold_is_the_smaller_of_a_fifth_and_an_hour() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let h = |hours: u64| Duration::from_secs(hours * 3600);
    let m = |minutes: u64| Duration::from_secs(minutes * 60);
    // lifetime, time left, expiring?
    let table = [
        (h(24), h(2), false),
        (h(24), m(59), true),
        (h(1), m(13), false),
        (h(1), m(11), true),
        (h(1), Duration::ZERO, true),
        (h(24 * 90), h(2), false),
        (h(24 * 90), m(30), true),
    ];
    for (lifetime, left, want) in table {
        let not_after = t0 + lifetime;
        assert_eq!(
            expiring(t0, not_after, not_after - left),
            want,
            "{lifetime:?} {left:?}"
        );
    }
    // Already expired.
    assert!(expiring(t0, t0 + h(1), t0 + h(2)));
}

#[test]
fn file_load_errors_name_the_file() {
    let dir = TempDir::new("load-errors");
    let paths = CertPaths::in_dir(dir.path());
    let err = FileSource::load(&paths, "wl").unwrap_err().to_string();
    assert!(err.starts_with(&paths.cert.display().to_string()), "{err}");

    let ca = ca();
    let a = ca.issue(&id("a"), Duration::from_secs(60)).unwrap();
    let b = ca.issue(&id("b"), Duration::from_secs(60)).unwrap();
    Issued {
        key_pem: b.key_pem,
        ..a.clone()
    }
    .write(dir.path())
    .unwrap();
    let err = FileSource::load(&paths, "wl").unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{} does not match the certificate in {} (their public keys differ)",
            paths.key.display(),
            paths.cert.display()
        )
    );

    a.write(dir.path()).unwrap();
    let creds = FileSource::load(&paths, "wl").unwrap();
    assert_eq!(creds.id(), Some(&id("a")));
    let edge = CertPaths {
        bundle: None,
        ..paths
    };
    assert!(FileSource::load(&edge, "gw").unwrap().id().is_none());
}

#[tokio::test]
async fn file_source_follows_rewritten_files_and_refuses_a_mismatched_pair() {
    let registry = Registry::new();
    let store = CertStore::new("wl", &registry);
    let dir = TempDir::new("watch");
    let ca = ca();
    let first = ca.issue(&id("a"), Duration::from_secs(3600)).unwrap();
    first.write(dir.path()).unwrap();
    let paths = CertPaths::in_dir(dir.path());
    // The owner loads first (to fail startup on bad files); the producer must not count
    // the same files again.
    store.publish(FileSource::load(&paths, "wl"));
    let task = FileSource::spawn(store.clone(), paths);
    let mut rx = store.subscribe();
    rx.mark_unchanged();

    let second = ca.issue(&id("b"), Duration::from_secs(3600)).unwrap();
    second.write(dir.path()).unwrap();
    let creds = tokio::time::timeout(
        WAIT,
        rx.wait_for(|c| c.as_ref().and_then(|c| c.id()) == Some(&id("b"))),
    )
    .await
    .expect("the rewritten files were not picked up")
    .unwrap()
    .clone()
    .unwrap();
    assert!(has(
        &registry,
        r#"weft_tls_cert_loads_total{source="wl",outcome="ok"} 2"#
    ));

    let third = ca.issue(&id("c"), Duration::from_secs(3600)).unwrap();
    Issued {
        key_pem: third.key_pem,
        ..second.clone()
    }
    .write(dir.path())
    .unwrap();
    let rejected = r#"weft_tls_cert_loads_total{source="wl",outcome="rejected"} 1"#;
    tokio::time::timeout(WAIT, async {
        while !has(&registry, rejected) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the mismatched pair was not seen");
    assert!(Arc::ptr_eq(&store.current().unwrap(), &creds));
    task.abort();
}

#[tokio::test]
async fn file_source_loads_at_start_and_ignores_untouched_bytes() {
    let registry = Registry::new();
    let store = CertStore::new("wl", &registry);
    let dir = TempDir::new("start");
    let ca = ca();
    let issued = ca.issue(&id("a"), Duration::from_secs(3600)).unwrap();
    issued.write(dir.path()).unwrap();
    let mut rx = store.subscribe();
    let task = FileSource::spawn(store.clone(), CertPaths::in_dir(dir.path()));
    tokio::time::timeout(WAIT, rx.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    // Same bytes written again (a touch, a re-sync): events fire, nothing is published.
    issued.write(dir.path()).unwrap();
    std::fs::write(dir.path().join("unrelated"), b"x").unwrap();
    tokio::time::sleep(DEBOUNCE * 4).await;
    assert!(has(
        &registry,
        r#"weft_tls_cert_loads_total{source="wl",outcome="ok"} 1"#
    ));
    task.abort();
}

#[tokio::test]
async fn file_source_sees_a_kubernetes_style_symlink_swap() {
    use std::os::unix::fs::symlink;

    let registry = Registry::new();
    let store = CertStore::new("wl", &registry);
    let dir = TempDir::new("symlinks");
    let ca = ca();
    // The kubelet's layout: files are links through `..data`, itself a link to a
    // timestamped directory; an update writes a new directory and renames a new
    // `..data` link over the old one, which is the only event in the watched directory.
    ca.issue(&id("a"), Duration::from_secs(3600))
        .unwrap()
        .write(&dir.path().join("..v1"))
        .unwrap();
    symlink("..v1", dir.path().join("..data")).unwrap();
    for name in ["cert.pem", "key.pem", "ca.pem"] {
        symlink(format!("..data/{name}"), dir.path().join(name)).unwrap();
    }
    let mut rx = store.subscribe();
    let task = FileSource::spawn(store.clone(), CertPaths::in_dir(dir.path()));
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|c| c.as_ref().and_then(|c| c.id()) == Some(&id("a"))),
    )
    .await
    .unwrap()
    .unwrap();

    ca.issue(&id("b"), Duration::from_secs(3600))
        .unwrap()
        .write(&dir.path().join("..v2"))
        .unwrap();
    symlink("..v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|c| c.as_ref().and_then(|c| c.id()) == Some(&id("b"))),
    )
    .await
    .expect("the symlink swap was not picked up")
    .unwrap();
    // Never a half-swapped pair.
    assert!(has(
        &registry,
        r#"weft_tls_cert_loads_total{source="wl",outcome="rejected"} 0"#
    ));
    task.abort();
}
