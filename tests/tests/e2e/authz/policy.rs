//! Default-deny policies: allow rules on paths (exact and templates), methods, headers
//! and the listener port; deny rules winning over allow rules wherever they are listed;
//! the same policy as a dry run, reported in metrics and the access log but enforced on
//! nobody; gRPC callers refused in gRPC's terms; method spellings a method rule must not
//! miss.

use std::net::SocketAddr;

use http::Method;
use serde_json::Value;
use weft_tests::client::empty;
use weft_tests::{Client, TestProxy, upstream, within};

use super::{Scratch, assert_denied, decisions, log_records};
use crate::LIMIT;

/// One request and what the policy says about it: `Ok(rule)` allowed by `rule`,
/// `Err(rule)` denied by `rule` (`None`: by the default).
struct Case {
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    verdict: Result<&'static str, Option<&'static str>>,
}

const fn case(
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    verdict: Result<&'static str, Option<&'static str>>,
) -> Case {
    Case {
        method,
        path,
        headers,
        verdict,
    }
}

/// Each path is unique (the query tells the cases apart in the access log).
const CASES: &[Case] = &[
    case(Method::GET, "/users/7?c=1", &[], Ok("read-users")),
    case(Method::POST, "/users/7?c=2", &[], Err(None)),
    case(Method::GET, "/users/7/orders?c=3", &[], Err(None)),
    // Allowed by read-users too, but a deny rule listed after it wins.
    case(Method::GET, "/users/42?c=4", &[], Err(Some("blocked-user"))),
    case(Method::GET, "/other?c=5", &[], Err(None)),
    case(
        Method::GET,
        "/reports/q1?c=6",
        &[("x-tenant", "blue")],
        Ok("tenant-reports"),
    ),
    case(
        Method::GET,
        "/reports/q1?c=7",
        &[("x-tenant", "green")],
        Ok("tenant-reports"),
    ),
    case(
        Method::GET,
        "/reports/q1?c=8",
        &[("x-tenant", "red")],
        Err(None),
    ),
    // Values are compared exactly.
    case(
        Method::GET,
        "/reports/q1?c=9",
        &[("x-tenant", "Blue")],
        Err(None),
    ),
    case(Method::GET, "/reports/q1?c=10", &[], Err(None)),
    // A repeated header is looked at value by value.
    case(
        Method::GET,
        "/reports/q1?c=11",
        &[("x-tenant", "red"), ("x-tenant", "green")],
        Ok("tenant-reports"),
    ),
    case(
        Method::DELETE,
        "/traced?c=12",
        &[("x-trace-id", "abc")],
        Ok("traced"),
    ),
    case(Method::DELETE, "/traced?c=13", &[], Err(None)),
];

fn config(backend: SocketAddr, log: &str, dry_run: bool) -> String {
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    access_log: {{ path: "{log}" }}
    authz:
      default: deny
      dry_run: {dry_run}
      rules:
        - name: read-users
          to: {{ paths: ["/users/{{id}}"], methods: [GET] }}
        - name: tenant-reports
          to: {{ path_prefixes: [/reports/] }}
          when: {{ headers: {{ x-tenant: [blue, green] }} }}
        - name: traced
          to: {{ paths: [/traced] }}
          when: {{ headers: {{ x-trace-id: [] }} }}
        - name: blocked-user
          action: deny
          to: {{ paths: [/users/42] }}
    routes:
      - name: all
        match: {{ prefix: / }}
        to: backend
clusters:
  backend: {{ endpoints: [{backend}] }}
"#
    )
}

/// Sends every case to `addr` and returns the replies.
async fn send_all(addr: SocketAddr) -> anyhow::Result<Vec<weft_tests::Reply>> {
    let client = Client::http1();
    let mut out = Vec::new();
    for c in CASES {
        let url = format!("http://{addr}{}", c.path);
        out.push(
            client
                .send(c.method.clone(), &url, c.headers, empty())
                .await?,
        );
    }
    Ok(out)
}

/// The access-log record of each case, in case order.
async fn records(proxy: &TestProxy, log: &str) -> anyhow::Result<Vec<Value>> {
    let all = log_records(proxy, log, CASES.len(), |_| true).await?;
    CASES
        .iter()
        .map(|c| {
            all.iter()
                .find(|v| v["path"] == c.path)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no record for {}", c.path))
        })
        .collect()
}

/// Under `default: deny` only what an allow rule allows passes; a deny rule wins over an
/// allow rule listed before it; header conditions compare values exactly and look at
/// each value of a repeated header. The access log names the deciding rule (`null` for
/// the default) and the decision; the 403 names nothing.
///
/// Checked to fail (each change alone in `authz/mod.rs`): with `decide` looking for
/// allow rules before deny rules, `/users/42` passes; with `Condition::Header` looking
/// at the first value of a repeated header only, case 11 is denied; with
/// `Operation::matches` ignoring `methods`, `POST /users/7` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_deny_with_allow_and_deny_rules() -> anyhow::Result<()> {
    let scratch = Scratch::new("policy")?;
    let log = scratch.file("access.json");
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&config(backend.addr(), &log, false)).await?;
    within(LIMIT, "default deny", async {
        let replies = send_all(proxy.addr("edge")).await?;
        let records = records(&proxy, &log).await?;
        let rule_names = ["read-users", "tenant-reports", "traced", "blocked-user"];
        for ((c, reply), record) in CASES.iter().zip(&replies).zip(&records) {
            let what = format!("{} {} {:?}", c.method, c.path, c.headers);
            match c.verdict {
                Ok(rule) => {
                    assert_eq!(reply.code(), 200, "{what}: {:?}", reply.text());
                    assert_eq!(reply.seen_path(), Some(c.path), "{what}");
                    assert_eq!(record["authz_decision"], "allow", "{what}: {record}");
                    assert_eq!(record["authz_rule"], rule, "{what}: {record}");
                }
                Err(rule) => {
                    assert_denied(reply, &what);
                    for (name, value) in &reply.headers {
                        let value = value.to_str().unwrap_or_default();
                        assert!(
                            !rule_names.iter().any(|r| value.contains(r)),
                            "{what}: the response names a rule in {name}: {value}"
                        );
                    }
                    assert_eq!(record["status"], 403, "{what}: {record}");
                    assert_eq!(record["authz_decision"], "deny", "{what}: {record}");
                    match rule {
                        Some(rule) => assert_eq!(record["authz_rule"], rule, "{what}: {record}"),
                        None => assert!(record["authz_rule"].is_null(), "{what}: {record}"),
                    }
                }
            }
        }
        let allowed = CASES.iter().filter(|c| c.verdict.is_ok()).count();
        assert_eq!(backend.count(), allowed, "{:?}", backend.requests());
        for (decision, rule, want) in [
            ("allow", "read-users", 1.0),
            ("allow", "tenant-reports", 3.0),
            ("allow", "traced", 1.0),
            ("deny", "blocked-user", 1.0),
            ("deny", "default", 7.0),
        ] {
            assert_eq!(
                decisions(&proxy, "edge", decision, rule).await?,
                want,
                "{decision} by {rule}"
            );
        }
        anyhow::Ok(())
    })
    .await?
}

/// The same policy with `dry_run: true`: every request reaches the upstream; the would-be
/// denials are counted as `audit_deny` under their rule and logged as such.
///
/// Checked to fail: with the gate in `http/security.rs` refusing `AuditDeny` like
/// `Deny`, `POST /users/7` (a would-be denial) is a 403; with `decide` preferring allow
/// rules, the log says `allow` by `read-users` for `/users/42`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_but_denies_nothing() -> anyhow::Result<()> {
    let scratch = Scratch::new("dry-run")?;
    let log = scratch.file("access.json");
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&config(backend.addr(), &log, true)).await?;
    within(LIMIT, "dry run", async {
        let replies = send_all(proxy.addr("edge")).await?;
        let records = records(&proxy, &log).await?;
        for ((c, reply), record) in CASES.iter().zip(&replies).zip(&records) {
            let what = format!("{} {} {:?}", c.method, c.path, c.headers);
            assert_eq!(reply.code(), 200, "{what}: {:?}", reply.text());
            assert_eq!(reply.upstream(), Some("backend"), "{what}");
            assert_eq!(record["status"], 200, "{what}: {record}");
            let (decision, rule) = match c.verdict {
                Ok(rule) => ("allow", Some(rule)),
                Err(rule) => ("audit_deny", rule),
            };
            assert_eq!(record["authz_decision"], decision, "{what}: {record}");
            match rule {
                Some(rule) => assert_eq!(record["authz_rule"], rule, "{what}: {record}"),
                None => assert!(record["authz_rule"].is_null(), "{what}: {record}"),
            }
        }
        assert_eq!(backend.count(), CASES.len());
        for (decision, rule, want) in [
            ("allow", "read-users", 1.0),
            ("allow", "tenant-reports", 3.0),
            ("audit_deny", "blocked-user", 1.0),
            ("audit_deny", "default", 7.0),
            ("deny", "blocked-user", 0.0),
            ("deny", "default", 0.0),
        ] {
            assert_eq!(
                decisions(&proxy, "edge", decision, rule).await?,
                want,
                "{decision} by {rule}"
            );
        }
        anyhow::Ok(())
    })
    .await?
}

/// A `ports` rule matches the port the request came in on: a rule for another port
/// leaves the request to the default (403); after a reload with the listener's bound
/// port in the rule (same listener, same socket), it allows.
///
/// Checked to fail: with `Operation::matches` ignoring `ports`, the first request (a
/// rule for port 1) passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_rule_matches_the_listener_port() -> anyhow::Result<()> {
    let backend = upstream::http1("backend").await?;
    let yaml = |port: u16| {
        format!(
            r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    authz:
      default: deny
      rules:
        - name: this-port
          to: {{ ports: [{port}] }}
    routes:
      - {{ match: {{ prefix: / }}, to: backend }}
clusters:
  backend: {{ endpoints: [{backend}] }}
"#,
            backend = backend.addr()
        )
    };
    let proxy = TestProxy::start(&yaml(1)).await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "port rule", async {
        let client = Client::http1();
        assert_denied(
            &client.get(&proxy.url("edge", "/p1")).await?,
            "another port",
        );
        proxy.rewrite_config(&yaml(addr.port()))?;
        proxy.reload().await?;
        assert_eq!(proxy.addr("edge"), addr, "the reload kept the socket");
        let reply = Client::http1().get(&proxy.url("edge", "/p2")).await?;
        assert_eq!(reply.code(), 200, "{:?}", reply.text());
        assert_eq!(reply.seen_path(), Some("/p2"));
        assert_eq!(decisions(&proxy, "edge", "allow", "this-port").await?, 1.0);
        anyhow::Ok(())
    })
    .await?
}

/// Methods are case-sensitive tokens (RFC 9110 section 9.1), so `delete` is not
/// `DELETE` and a `methods: [DELETE]` deny rule does not match it; but many upstream
/// frameworks upper-case the method (Django, Werkzeug/Flask), so a request the rule did
/// not judge would be served as a `DELETE` there. Envoy closes this gap by refusing
/// methods outside the standard set (`allow_custom_methods` is off by default: 400);
/// either way the request must not reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_spelling_does_not_bypass_a_method_rule() -> anyhow::Result<()> {
    let backend = upstream::http1("backend").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    authz:
      rules:
        - name: no-delete
          action: deny
          to: {{ methods: [DELETE] }}
    routes:
      - {{ match: {{ prefix: / }}, to: backend }}
clusters:
  backend: {{ endpoints: [{backend}] }}
"#,
        backend = backend.addr()
    ))
    .await?;
    let addr = proxy.addr("edge");
    within(LIMIT, "method spellings", async {
        assert_denied(&super::raw_request(addr, "DELETE", "/x").await?, "DELETE");
        for method in ["delete", "Delete", "dElEtE"] {
            let reply = super::raw_request(addr, method, "/x").await?;
            assert!(
                matches!(reply.code(), 400 | 403 | 405 | 501),
                "{method} /x: {} from {:?}",
                reply.code(),
                reply.upstream()
            );
        }
        assert_eq!(backend.count(), 0, "{:?}", backend.requests());
        anyhow::Ok(())
    })
    .await?
}

/// A gRPC caller refused by the policy gets a gRPC answer: HTTP 200, trailers-only,
/// `grpc-status: 7` (PERMISSION_DENIED), as Envoy's RBAC filter answers gRPC.
///
/// Checked to fail: with `local_reply` answering every protocol with the plain 403, the
/// status is 403 and `grpc-status` is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_callers_get_permission_denied() -> anyhow::Result<()> {
    let backend = upstream::http2("backend").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    authz:
      default: deny
      rules:
        - name: catalog-reads
          to: {{ paths: [/shop.Catalog/Get] }}
    routes:
      - {{ match: {{ prefix: / }}, to: backend }}
clusters:
  backend: {{ endpoints: [{backend}], protocol: http2 }}
"#,
        backend = backend.addr()
    ))
    .await?;
    within(LIMIT, "gRPC refusal", async {
        let client = Client::http2();
        let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
        let reply = client
            .send(
                Method::POST,
                &proxy.url("edge", "/shop.Catalog/Delete"),
                &grpc,
                empty(),
            )
            .await?;
        assert_eq!(reply.code(), 200, "{:?}", reply.headers);
        assert_eq!(
            reply.header("grpc-status"),
            Some("7"),
            "{:?}",
            reply.headers
        );
        assert_eq!(reply.header("x-weft-error"), Some("forbidden"));
        assert!(reply.upstream().is_none());
        let reply = client
            .send(
                Method::POST,
                &proxy.url("edge", "/shop.Catalog/Get"),
                &grpc,
                empty(),
            )
            .await?;
        assert_eq!(reply.upstream(), Some("backend"), "{:?}", reply.headers);
        assert_eq!(backend.count(), 1);
        anyhow::Ok(())
    })
    .await?
}
