//! Mesh mutual TLS: who is accepted, who is refused and why, rotation, resumption.

use std::time::{Duration, SystemTime};

use rustls::{HandshakeKind, ProtocolVersion, SupportedProtocolVersion};

use super::*;
use crate::{
    ALPN_H2, ALPN_TCP, AcceptPolicy, DevCa, Expect, IssueSpec, SpiffeServerVerifier, TrustDomain,
    mesh_client_config, mesh_server_config,
};

const TTL: Duration = Duration::from_secs(3600);

/// A trust domain with its CA.
struct Domain {
    td: TrustDomain,
    ca: DevCa,
}

impl Domain {
    fn new(td: &str) -> Domain {
        let td: TrustDomain = td.parse().unwrap();
        let ca = DevCa::new(&td).unwrap();
        Domain { td, ca }
    }

    fn id(&self, sa: &str) -> SpiffeId {
        SpiffeId::workload(&self.td, "default", sa).unwrap()
    }

    fn issue(&self, sa: &str) -> Issued {
        self.ca.issue(&self.id(sa), TTL).unwrap()
    }

    /// A workload store for `sa` trusting this domain's CA only.
    fn store(&self, sa: &str) -> CertStore {
        workload_store(&self.issue(sa), self.ca.cert_pem())
    }

    /// A certificate for `sa` changed by `edit`.
    fn issue_edited(&self, sa: &str, edit: impl FnOnce(&mut IssueSpec)) -> Issued {
        let mut spec = IssueSpec::workload(&self.id(sa), TTL);
        edit(&mut spec);
        self.ca.issue_with(&spec).unwrap()
    }
}

fn server(store: &CertStore) -> Arc<ServerConfig> {
    mesh_server_config(
        store,
        AcceptPolicy::default(),
        vec![ALPN_H2.to_vec(), ALPN_TCP.to_vec()],
    )
}

fn client(store: &CertStore, expect: Expect) -> Arc<ClientConfig> {
    mesh_client_config(store, expect, vec![ALPN_TCP.to_vec()])
}

/// A client that verifies the server like a mesh client (trusting `trust`'s bundle)
/// but presents `cert` as given, even one a [`Credentials`] would refuse to load; no
/// certificate at all when `None`.
fn client_presenting(
    trust: &CertStore,
    td: &TrustDomain,
    cert: Option<&Issued>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let verifier = SpiffeServerVerifier::new(trust.clone(), Expect::TrustDomain(td.clone()));
    let builder = ClientConfig::builder_with_provider(crate::config::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    Arc::new(match cert {
        Some(issued) => builder
            .with_client_auth_cert(chain(&issued.cert_pem), key(&issued.key_pem))
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

fn tls13() -> &'static [&'static SupportedProtocolVersion] {
    static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    &TLS13
}

#[tokio::test]
async fn mutual_tls_proves_both_identities() {
    let d = Domain::new("example.org");
    let (srv, cli) = (d.store("server"), d.store("client"));
    let (s, c) = open(
        server(&srv),
        client(&cli, Expect::Ids(vec![d.id("server")])),
        mesh_name(),
    )
    .await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await.unwrap();
    let (sc, cc) = (s.get_ref().1, c.get_ref().1);
    assert_eq!(
        crate::peer_id(sc.peer_certificates().unwrap()),
        Some(d.id("client"))
    );
    assert_eq!(
        crate::peer_id(cc.peer_certificates().unwrap()),
        Some(d.id("server"))
    );
    assert_eq!(cc.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(cc.alpn_protocol(), Some(ALPN_TCP));
    assert_eq!(sc.alpn_protocol(), Some(ALPN_TCP));

    // Any id of the trust domain will do when that is what the cluster expects.
    let a = attempt(
        server(&srv),
        client(&cli, Expect::TrustDomain(d.td.clone())),
    )
    .await;
    assert_eq!(a.server, Ok(Some(d.id("client"))));
    assert_eq!(a.client, Ok(Some(d.id("server"))));
}

#[tokio::test]
async fn the_client_refuses_a_server_that_is_not_the_expected_id() {
    let d = Domain::new("example.org");
    let (srv, cli) = (d.store("server"), d.store("client"));
    let a = attempt(server(&srv), client(&cli, Expect::Ids(vec![d.id("db")]))).await;
    assert_eq!(a.client, Err("bad_identity"), "{a:?}");
    assert_eq!(a.server, Err("peer_refused"), "{a:?}");

    let elsewhere = Expect::TrustDomain("other.org".parse().unwrap());
    let a = attempt(server(&srv), client(&cli, elsewhere)).await;
    assert_eq!(a.client, Err("bad_identity"), "{a:?}");
}

#[tokio::test]
async fn the_error_tells_which_identity_was_refused() {
    let d = Domain::new("example.org");
    let (srv, cli) = (d.store("server"), d.store("client"));
    let (_, c) = open(
        server(&srv),
        client(&cli, Expect::Ids(vec![d.id("db")])),
        mesh_name(),
    )
    .await;
    let err = c.unwrap_err();
    let rustls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap();
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = rustls_err
    else {
        panic!("{rustls_err:?}");
    };
    assert!(other.0.is::<crate::IdentityError>());
    assert_eq!(
        err.to_string(),
        "invalid peer certificate: Other(OtherError(peer spiffe://example.org/ns/default/sa/server \
         is not the expected identity (spiffe://example.org/ns/default/sa/db)))"
    );
}

#[tokio::test]
async fn a_client_from_another_trust_domain_is_refused_unless_accepted() {
    let home = Domain::new("example.org");
    let away = Domain::new("other.org");
    // Federated bundles: both sides trust both roots, so only the identity check can
    // tell the domains apart.
    let bundle = format!("{}{}", home.ca.cert_pem(), away.ca.cert_pem());
    let srv = workload_store(&home.issue("server"), &bundle);
    let cli = workload_store(&away.issue("client"), &bundle);
    let expect = Expect::TrustDomain(home.td.clone());

    let a = attempt(server(&srv), client(&cli, expect.clone())).await;
    assert_eq!(a.server, Err("bad_identity"), "{a:?}");
    assert_eq!(a.client, Err("peer_refused"), "{a:?}");

    let both = AcceptPolicy {
        trust_domains: vec![home.td.clone(), away.td.clone()],
    };
    let a = attempt(
        mesh_server_config(&srv, both, vec![ALPN_TCP.to_vec()]),
        client(&cli, expect),
    )
    .await;
    assert_eq!(a.server, Ok(Some(away.id("client"))));
}

#[tokio::test]
async fn certificates_from_an_unknown_ca_are_refused_on_either_side() {
    let d = Domain::new("example.org");
    // Same trust domain, same CA name, different key: the impostor case.
    let rogue = Domain::new("example.org");
    let srv = d.store("server");
    let expect = Expect::TrustDomain(d.td.clone());

    let cli = workload_store(&rogue.issue("client"), d.ca.cert_pem());
    let a = attempt(server(&srv), client(&cli, expect.clone())).await;
    assert_eq!(a.server, Err("unknown_ca"), "{a:?}");
    assert_eq!(a.client, Err("peer_refused"), "{a:?}");

    let rogue_srv = workload_store(&rogue.issue("server"), d.ca.cert_pem());
    let a = attempt(server(&rogue_srv), client(&d.store("client"), expect)).await;
    assert_eq!(a.client, Err("unknown_ca"), "{a:?}");
    assert_eq!(a.server, Err("peer_refused"), "{a:?}");
}

#[tokio::test]
async fn client_certificates_out_of_their_validity_are_refused() {
    let d = Domain::new("example.org");
    let srv = d.store("server");
    let now = SystemTime::now();
    let expired = d.issue_edited("client", |s| {
        s.not_before = now - Duration::from_secs(7200);
        s.not_after = now - Duration::from_secs(3600);
    });
    let early = d.issue_edited("client", |s| {
        s.not_before = now + Duration::from_secs(3600);
        s.not_after = now + Duration::from_secs(7200);
    });
    for (cert, want) in [(expired, "expired"), (early, "not_yet_valid")] {
        let cli = client_presenting(&srv, &d.td, Some(&cert), tls13());
        let a = attempt(server(&srv), cli).await;
        assert_eq!(a.server, Err(want), "{a:?}");
        assert_eq!(a.client, Err("peer_refused"), "{a:?}");
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let d = Domain::new("example.org");
    let srv = d.store("server");
    let a = attempt(server(&srv), client_presenting(&srv, &d.td, None, tls13())).await;
    assert_eq!(a.server, Err("no_client_cert"), "{a:?}");
    assert_eq!(a.client, Err("peer_refused"), "{a:?}");
}

#[tokio::test]
async fn dns_names_do_not_count_as_identity() {
    let d = Domain::new("example.org");
    let srv = d.store("server");
    for dns in [
        "client.example.org",
        "spiffe://example.org/ns/default/sa/client",
    ] {
        let cert = d.issue_edited("client", |s| {
            s.uri_sans.clear();
            s.dns_sans = vec![dns.to_owned()];
        });
        let a = attempt(
            server(&srv),
            client_presenting(&srv, &d.td, Some(&cert), tls13()),
        )
        .await;
        assert_eq!(a.server, Err("bad_identity"), "{dns}: {a:?}");
    }
}

#[tokio::test]
async fn key_usages_are_enforced_per_side() {
    let d = Domain::new("example.org");
    let srv = d.store("server");
    let server_only = d.issue_edited("client", |s| s.client_auth = false);
    let cli = workload_store(&server_only, d.ca.cert_pem());
    let a = attempt(
        server(&srv),
        client(&cli, Expect::TrustDomain(d.td.clone())),
    )
    .await;
    assert_eq!(a.server, Err("bad_eku"), "{a:?}");

    let client_only = d.issue_edited("server", |s| s.server_auth = false);
    let srv = workload_store(&client_only, d.ca.cert_pem());
    let a = attempt(
        server(&srv),
        client(&d.store("client"), Expect::TrustDomain(d.td.clone())),
    )
    .await;
    assert_eq!(a.client, Err("bad_eku"), "{a:?}");
}

#[tokio::test]
async fn a_server_without_credentials_refuses_and_tls12_is_not_spoken() {
    let d = Domain::new("example.org");
    let cli = d.store("client");
    let empty = CertStore::new("empty", &Registry::new());
    let a = attempt(
        server(&empty),
        client(&cli, Expect::TrustDomain(d.td.clone())),
    )
    .await;
    assert!(a.server.is_err() && a.client.is_err(), "{a:?}");

    let srv = d.store("server");
    let old = client_presenting(
        &srv,
        &d.td,
        Some(&d.issue("client")),
        &[&rustls::version::TLS12],
    );
    let a = attempt(server(&srv), old).await;
    assert_eq!(a.server, Err("protocol"), "{a:?}");
    assert_eq!(a.client, Err("protocol"), "{a:?}");
}

#[tokio::test]
async fn rotation_serves_new_handshakes_and_keeps_open_connections() {
    let d = Domain::new("example.org");
    let srv = d.store("server");
    let cli = d.store("client");
    let server_config = server(&srv);
    // A fresh client configuration per connection: a resumed session would report the
    // certificate of the session it resumes.
    let fresh = || client(&cli, Expect::Ids(vec![d.id("server")]));
    let leaf_seen = |c: &ClientStream| c.get_ref().1.peer_certificates().unwrap()[0].clone();

    let (s1, c1) = open(server_config.clone(), fresh(), mesh_name()).await;
    let (mut s1, mut c1) = (s1.unwrap(), c1.unwrap());
    let old_leaf = srv.current().unwrap().leaf().clone();
    assert_eq!(leaf_seen(&c1), old_leaf);

    let rotated = d.issue("server");
    assert!(srv.publish(Credentials::workload(
        rotated.cert_pem.as_bytes(),
        rotated.key_pem.as_bytes(),
        rotated.ca_pem.as_bytes(),
        "test",
    )));
    let new_leaf = srv.current().unwrap().leaf().clone();
    assert_ne!(new_leaf, old_leaf);

    let (s2, c2) = open(server_config, fresh(), mesh_name()).await;
    let (mut s2, mut c2) = (s2.unwrap(), c2.unwrap());
    assert_eq!(leaf_seen(&c2), new_leaf);
    exchange(&mut s2, &mut c2).await.unwrap();
    // The connection opened before the rotation still carries data.
    exchange(&mut s1, &mut c1).await.unwrap();
}

#[tokio::test]
async fn reconnects_never_resume_so_a_rotated_identity_is_never_replayed() {
    let d = Domain::new("example.org");
    let srv = d.store("server");
    let server_config = server(&srv);
    let client_config = client(&d.store("client"), Expect::Ids(vec![d.id("server")]));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (s, c) = open(server_config.clone(), client_config.clone(), mesh_name()).await;
        let (mut s, mut c) = (s.unwrap(), c.unwrap());
        // Reading lets the client take in the session tickets sent after the handshake.
        exchange(&mut s, &mut c).await.unwrap();
        kinds.push(c.get_ref().1.handshake_kind());
        assert_eq!(
            crate::peer_id(s.get_ref().1.peer_certificates().unwrap()),
            Some(d.id("client"))
        );
    }
    // A resumed session would carry the first handshake's client certificate past its
    // rotation (and expiry): every mesh handshake is a full one.
    assert_eq!(
        kinds,
        [Some(HandshakeKind::Full), Some(HandshakeKind::Full)]
    );
}
