//! Decision tables: policies against requests, with the verdict and the deciding rule.

use http::HeaderValue;
use serde_json::json;

use super::*;

const GATEWAY: &str = "spiffe://example.org/ns/shop/sa/gateway";
const CART: &str = "spiffe://example.org/ns/shop/sa/cart";
const OTHER_TD: &str = "spiffe://other.org/ns/x/sa/y";

/// A request as a test writes it.
#[derive(Clone)]
struct Req {
    peer: Option<&'static str>,
    method: Method,
    path: &'static str,
    port: u16,
    headers: HeaderMap,
    claims: Option<Map<String, Value>>,
}

fn req(method: &str, path: &'static str) -> Req {
    Req {
        peer: None,
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path,
        port: 16006,
        headers: HeaderMap::new(),
        claims: None,
    }
}

impl Req {
    fn from(mut self, peer: &'static str) -> Self {
        self.peer = Some(peer);
        self
    }
    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }
    fn claims(mut self, claims: Value) -> Self {
        let Value::Object(map) = claims else {
            panic!("claims must be an object")
        };
        self.claims = Some(map);
        self
    }
    fn decide(&self, policy: &Policy) -> Decision {
        decide(
            policy,
            &Request {
                peer: self.peer,
                path: self.path,
                method: &self.method,
                port: self.port,
                headers: &self.headers,
                claims: self.claims.as_ref(),
            },
        )
    }
}

fn rule(name: &str, action: Action) -> Rule {
    Rule {
        name: Arc::from(name),
        action,
        principals: Vec::new(),
        operation: Operation::default(),
        conditions: Vec::new(),
    }
}

fn paths(list: &[&str]) -> Vec<PathMatch> {
    list.iter()
        .map(|p| {
            if let Some(prefix) = p.strip_suffix('*') {
                PathMatch::Prefix(prefix.to_owned())
            } else if p.contains('{') {
                PathMatch::Template(Template::parse(p).unwrap())
            } else {
                PathMatch::Exact((*p).to_owned())
            }
        })
        .collect()
}

fn header(name: &str, values: &[&str]) -> Condition {
    Condition::Header {
        name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn claim(path: &str, values: &[&str]) -> Condition {
    Condition::Claim {
        path: path.split('.').map(str::to_owned).collect(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

/// A default-deny policy with one rule per matcher kind.
fn shop_policy() -> Policy {
    use Action::*;
    Policy {
        default: Deny,
        dry_run: false,
        rules: vec![
            Rule {
                principals: vec![PrincipalMatch::Exact(GATEWAY.into())],
                operation: Operation {
                    paths: paths(&["/cart/addItem", "/users/{id}"]),
                    methods: vec![Method::POST, Method::GET],
                    ports: Vec::new(),
                },
                ..rule("gateway", Allow)
            },
            Rule {
                principals: vec![PrincipalMatch::Prefix(
                    "spiffe://example.org/ns/shop/".into(),
                )],
                operation: Operation {
                    methods: vec![Method::GET],
                    ..Operation::default()
                },
                ..rule("shop-reads", Allow)
            },
            // Listed after allow rules that also match: deny wins anyway.
            Rule {
                operation: Operation {
                    paths: paths(&["/admin/*"]),
                    ..Operation::default()
                },
                ..rule("no-admin", Deny)
            },
            Rule {
                principals: vec![PrincipalMatch::TrustDomain("other.org".into())],
                operation: Operation {
                    ports: vec![16006],
                    ..Operation::default()
                },
                ..rule("other-td", Allow)
            },
            Rule {
                operation: Operation {
                    paths: paths(&["/healthz"]),
                    ..Operation::default()
                },
                ..rule("health", Allow)
            },
            Rule {
                principals: vec![PrincipalMatch::Authenticated],
                operation: Operation {
                    paths: paths(&["/metrics"]),
                    ..Operation::default()
                },
                ..rule("any-peer-metrics", Allow)
            },
            Rule {
                conditions: vec![header("x-tenant", &["red"])],
                ..rule("blocked-tenant", Deny)
            },
            Rule {
                conditions: vec![header("x-tenant", &["blue", "green"])],
                operation: Operation {
                    paths: paths(&["/tenant/*"]),
                    ..Operation::default()
                },
                ..rule("tenant", Allow)
            },
            Rule {
                conditions: vec![header("x-debug", &[])],
                operation: Operation {
                    paths: paths(&["/debug"]),
                    ..Operation::default()
                },
                ..rule("debug", Allow)
            },
            Rule {
                conditions: vec![claim("scope", &["cart:write"])],
                operation: Operation {
                    paths: paths(&["/orders/*"]),
                    ..Operation::default()
                },
                ..rule("writers", Allow)
            },
            Rule {
                conditions: vec![claim("realm.roles", &["admin"]), claim("sub", &[])],
                operation: Operation {
                    paths: paths(&["/realm/*"]),
                    ..Operation::default()
                },
                ..rule("realm-admin", Allow)
            },
        ],
    }
}

/// (what, request, allowed, deciding rule)
type Case = (&'static str, Req, bool, Option<&'static str>);

fn shop_cases() -> Vec<Case> {
    vec![
        (
            "exact principal, exact path, method",
            req("POST", "/cart/addItem").from(GATEWAY),
            true,
            Some("gateway"),
        ),
        (
            "template path",
            req("GET", "/users/42").from(GATEWAY),
            true,
            Some("gateway"),
        ),
        (
            "template does not match deeper paths; a later allow rule does",
            req("GET", "/users/42/x").from(GATEWAY),
            true,
            Some("shop-reads"),
        ),
        (
            "method not listed anywhere: default",
            req("DELETE", "/cart/addItem").from(GATEWAY),
            false,
            None,
        ),
        (
            "principal prefix",
            req("GET", "/anything").from(CART),
            true,
            Some("shop-reads"),
        ),
        (
            "prefix is text: /ns/shop/ is not /ns/shopping/",
            req("GET", "/anything").from("spiffe://example.org/ns/shopping/sa/x"),
            false,
            None,
        ),
        (
            "deny wins over earlier allow rules",
            req("GET", "/admin/users").from(GATEWAY),
            false,
            Some("no-admin"),
        ),
        (
            "deny applies to callers without an id",
            req("GET", "/admin/x"),
            false,
            Some("no-admin"),
        ),
        (
            "no peer: identity rules do not match",
            req("GET", "/users/42"),
            false,
            None,
        ),
        (
            "anyone may call health",
            req("GET", "/healthz"),
            true,
            Some("health"),
        ),
        (
            "trust domain on its port",
            req("POST", "/x").from(OTHER_TD),
            true,
            Some("other-td"),
        ),
        (
            "trust domain on another port",
            req("POST", "/x").from(OTHER_TD).port(16001),
            false,
            None,
        ),
        (
            "trust domain is a whole name, not a prefix",
            req("POST", "/x").from("spiffe://other.org.evil/ns/x/sa/y"),
            false,
            None,
        ),
        (
            "trust domain needs the spiffe scheme",
            req("POST", "/x").from("other.org/ns/x"),
            false,
            None,
        ),
        (
            "authenticated: any id",
            req("GET", "/metrics").from(OTHER_TD).port(1),
            true,
            Some("any-peer-metrics"),
        ),
        (
            "authenticated: not without an id",
            req("GET", "/metrics"),
            false,
            None,
        ),
        (
            "header value, name case-insensitive",
            req("GET", "/tenant/a").header("X-Tenant", "blue"),
            true,
            Some("tenant"),
        ),
        (
            "header values are exact",
            req("GET", "/tenant/a").header("x-tenant", "Blue"),
            false,
            None,
        ),
        ("header missing", req("GET", "/tenant/a"), false, None),
        (
            "a repeated header is checked value by value: the deny sees red",
            req("GET", "/tenant/a")
                .header("x-tenant", "blue")
                .header("x-tenant", "red"),
            false,
            Some("blocked-tenant"),
        ),
        (
            "header present, empty value",
            req("GET", "/debug").header("x-debug", ""),
            true,
            Some("debug"),
        ),
        ("header absent", req("GET", "/debug"), false, None),
        (
            "string claim",
            req("POST", "/orders/1").claims(json!({"scope": "cart:write"})),
            true,
            Some("writers"),
        ),
        (
            "array claim containing the value",
            req("POST", "/orders/1").claims(json!({"scope": ["cart:read", "cart:write"]})),
            true,
            Some("writers"),
        ),
        (
            "string claim with another value",
            req("POST", "/orders/1").claims(json!({"scope": "cart:read"})),
            false,
            None,
        ),
        (
            "array claim without the value",
            req("POST", "/orders/1").claims(json!({"scope": ["cart:read"]})),
            false,
            None,
        ),
        (
            "claim of another type",
            req("POST", "/orders/1").claims(json!({"scope": 5})),
            false,
            None,
        ),
        ("no verified token", req("POST", "/orders/1"), false, None),
        (
            "nested array claim, and a claim that must be present",
            req("GET", "/realm/x")
                .claims(json!({"sub": "u1", "realm": {"roles": ["user", "admin"]}})),
            true,
            Some("realm-admin"),
        ),
        (
            "nested string claim",
            req("GET", "/realm/x").claims(json!({"sub": "u1", "realm": {"roles": "admin"}})),
            true,
            Some("realm-admin"),
        ),
        (
            "present claim missing",
            req("GET", "/realm/x").claims(json!({"realm": {"roles": "admin"}})),
            false,
            None,
        ),
        (
            "nested name through a non-object",
            req("GET", "/realm/x").claims(json!({"sub": "u1", "realm": "admin"})),
            false,
            None,
        ),
    ]
}

fn check(policy: &Policy, cases: &[Case]) {
    for (what, r, allowed, rule) in cases {
        let d = r.decide(policy);
        let verdict = match (allowed, policy.dry_run) {
            (true, _) => Verdict::Allow,
            (false, false) => Verdict::Deny,
            (false, true) => Verdict::AuditDeny,
        };
        let want = Decision {
            allowed: *allowed || policy.dry_run,
            verdict,
            rule: rule.map(Arc::from),
        };
        assert_eq!(d, want, "{what}");
    }
}

#[test]
fn decision_table() {
    check(&shop_policy(), &shop_cases());
}

#[test]
fn dry_run_reports_the_same_decisions_and_denies_nothing() {
    let policy = Policy {
        dry_run: true,
        ..shop_policy()
    };
    check(&policy, &shop_cases());
    let d = req("GET", "/admin/x").decide(&policy);
    assert!(d.allowed);
    assert_eq!(d.verdict, Verdict::AuditDeny);
    assert_eq!(d.verdict.as_str(), "audit_deny");
}

#[test]
fn defaults_and_deny_only_policies() {
    use Action::*;
    let deny_only = Policy {
        default: Allow,
        dry_run: false,
        rules: vec![
            Rule {
                operation: Operation {
                    methods: vec![Method::DELETE],
                    ..Operation::default()
                },
                ..rule("no-delete", Deny)
            },
            Rule {
                principals: vec![PrincipalMatch::Any],
                operation: Operation {
                    paths: paths(&["/internal/*"]),
                    ..Operation::default()
                },
                ..rule("no-internal", Deny)
            },
        ],
    };
    check(
        &deny_only,
        &[
            ("default allow", req("GET", "/"), true, None),
            (
                "deny by method",
                req("DELETE", "/x"),
                false,
                Some("no-delete"),
            ),
            (
                "Any matches a caller without an id",
                req("GET", "/internal/x"),
                false,
                Some("no-internal"),
            ),
            (
                "Any matches a caller with an id",
                req("GET", "/internal/x").from(GATEWAY),
                false,
                Some("no-internal"),
            ),
        ],
    );

    // Under default allow, allow rules cannot change an answer; the rule that matched
    // is still reported.
    let allow_only = Policy {
        default: Allow,
        dry_run: false,
        rules: vec![Rule {
            principals: vec![PrincipalMatch::Exact(GATEWAY.into())],
            ..rule("gateway", Allow)
        }],
    };
    check(
        &allow_only,
        &[
            (
                "matching allow rule",
                req("GET", "/").from(GATEWAY),
                true,
                Some("gateway"),
            ),
            ("no rule: default allow", req("GET", "/"), true, None),
        ],
    );

    let deny_all = Policy {
        default: Deny,
        dry_run: false,
        rules: Vec::new(),
    };
    check(
        &deny_all,
        &[
            ("no rules, default deny", req("GET", "/"), false, None),
            (
                "even with an id",
                req("GET", "/").from(GATEWAY),
                false,
                None,
            ),
        ],
    );
}

#[test]
fn principal_table() {
    use PrincipalMatch::*;
    let cases: &[(PrincipalMatch, Option<&str>, bool)] = &[
        (Exact(GATEWAY.into()), Some(GATEWAY), true),
        (Exact(GATEWAY.into()), Some(CART), false),
        (Exact(GATEWAY.into()), None, false),
        (Prefix("spiffe://example.org/".into()), Some(CART), true),
        (Prefix("spiffe://example.org/".into()), None, false),
        (TrustDomain("example.org".into()), Some(CART), true),
        (
            TrustDomain("example.org".into()),
            Some("spiffe://example.org"),
            false,
        ),
        (
            TrustDomain("example.org".into()),
            Some("spiffe://example.orgx/a"),
            false,
        ),
        (TrustDomain("example.org".into()), None, false),
        (Authenticated, Some(CART), true),
        (Authenticated, None, false),
        (Any, Some(CART), true),
        (Any, None, true),
    ];
    for (m, peer, want) in cases {
        assert_eq!(m.matches(*peer), *want, "{m:?} vs {peer:?}");
    }
}
