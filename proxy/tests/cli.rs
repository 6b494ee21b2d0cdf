//! Tests of the `weft` binary: `check`, `explain`, `demo` and `proxy`, run as a user
//! runs them, with real sockets on 127.0.0.1 and real HTTP/1.1 requests.
//!
//! Long-running commands are started through [`Running`], which kills the child when
//! dropped (also when an assertion fails), and announce their addresses on stdout or
//! stderr; nothing here depends on timing except a generous guard against hangs.

// A panic is how a test reports failure, helpers included.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// How long to wait for a child to announce itself or a socket to answer before the
/// test is declared hung (a guard, not an assertion about speed).
const HANG: Duration = Duration::from_secs(60);

fn shop_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/shop.yaml")
}

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("weft-cli-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---- weft check ----

#[test]
fn check_accepts_the_shop_example() {
    // Its certificates are issued by whoever runs it (`weft demo` makes its own).
    let out = weft(&["check", "--skip-files", "-c", shop_yaml().to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("ok (1 listener, 5 routes, 3 clusters)"),
        "{stdout}"
    );
}

#[test]
fn check_prints_every_problem_with_file_and_line() {
    let file = TempFile::new(
        "broken.yaml",
        "\
listeners:
  - name: shop
    address: 127.0.0.1:8080
    routes:
      - match: { regex: \"/v[0-9\" }
        to: prodcut
      - match: { path: \"/products/x{id}\" }
        to: product
clusters:
  product:
    endpoints: [127.0.0.1]
",
    );
    let out = weft(&["check", "-c", file.path()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let p = file.path();
    let want = [
        format!("{p}: 4 problems:"),
        format!("{p}:5:"),
        "listeners[0].routes[0].match.regex: invalid regex".to_owned(),
        format!("{p}:6:9: listeners[0].routes[0].to: unknown cluster \"prodcut\""),
        "did you mean \"product\"".to_owned(),
        format!("{p}:7:"),
        "listeners[0].routes[1].match.path".to_owned(),
        format!("{p}:11:"),
        "clusters.product.endpoints[0]: invalid endpoint \"127.0.0.1\"".to_owned(),
    ];
    for w in want {
        assert!(stderr.contains(&w), "missing {w:?} in:\n{stderr}");
    }
    // One line per problem, each with its file:line.
    let problem_lines: Vec<&str> = stderr.lines().skip(1).collect();
    assert_eq!(problem_lines.len(), 4, "{stderr}");
    for line in problem_lines {
        assert!(line.trim_start().starts_with(&format!("{p}:")), "{line}");
    }
}

#[test]
fn check_reports_yaml_errors_with_their_line() {
    let file = TempFile::new(
        "typo.yaml",
        "listeners:\n  - name: shop\n    adress: 127.0.0.1:8080\n",
    );
    let out = weft(&["check", "-c", file.path()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:5: unknown field `adress`", file.path())),
        "{stderr}"
    );
}

/// `weft check` loads the certificate files a configuration names, as `weft run` would:
/// missing files and a key that does not match its certificate are problems, named with
/// the listener or cluster that uses them; `--skip-files` checks the configuration only.
#[test]
fn check_loads_the_certificate_files() {
    let dir = std::env::temp_dir().join(format!("weft-cli-{}-certs", std::process::id()));
    let d = |sub: &str| dir.join(sub).to_str().unwrap().to_owned();
    let ok = |out: &Output| assert!(out.status.success(), "{}", text(&out.stderr));
    ok(&weft(&[
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        &d("ca"),
    ]));
    for sa in ["b", "c"] {
        let id = format!("spiffe://example.org/ns/a/sa/{sa}");
        ok(&weft(&[
            "ca",
            "issue",
            "--ca",
            &d("ca"),
            "--id",
            &id,
            "--ttl",
            "1h",
            "--out",
            &d(sa),
        ]));
    }
    let config = |cert: &str, key: &str| {
        format!(
            "identity: {{ cert: {cert}, key: {key}, ca: {ca} }}\n\
             listeners:\n  - name: inbound\n    address: 127.0.0.1:0\n    mtls: true\n    \
             routes:\n      - to: app\n\
             clusters:\n  app: {{ endpoints: [127.0.0.1:1] }}\n",
            ca = d("b/ca.pem"),
        )
    };
    let good = TempFile::new("tls-good.yaml", &config(&d("b/cert.pem"), &d("b/key.pem")));
    let out = weft(&["check", "-c", good.path()]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("ok (1 listener"),
        "{}",
        text(&out.stdout)
    );

    let cases = [
        (
            "missing",
            config(&d("nowhere/cert.pem"), &d("b/key.pem")),
            "nowhere/cert.pem",
        ),
        (
            "mismatched",
            config(&d("b/cert.pem"), &d("c/key.pem")),
            "listener \"inbound\"",
        ),
    ];
    for (what, yaml, named) in cases {
        let file = TempFile::new("tls-bad.yaml", &yaml);
        let out = weft(&["check", "-c", file.path()]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{what}: {stderr}");
        assert!(stderr.contains("listener \"inbound\""), "{what}: {stderr}");
        assert!(stderr.contains(named), "{what}: {stderr}");
        // The configuration itself is sound.
        ok(&weft(&["check", "--skip-files", "-c", file.path()]));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_fails_on_a_missing_file() {
    let out = weft(&["check", "-c", "/nonexistent/weft.yaml"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/weft.yaml"),
        "{}",
        text(&out.stderr)
    );
}

// ---- weft explain ----

#[test]
fn explain_names_listener_route_cluster_and_params() {
    let shop = shop_yaml();
    let out = weft(&[
        "explain",
        "-c",
        shop.to_str().unwrap(),
        "GET",
        "http://localhost:8080/products/42",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let want = [
        "listener:     shop",
        "host:         localhost:8080",
        "route:        product",
        "cluster:      product",
        "params:       productId=42",
        "upstream path: /products/42",
        "timeout:      2000ms",
        r#"skipped route "cart-add-item": path "/products/42" is not "/cart/addItem""#,
        r#"skipped route "cart": path "/products/42" does not start with "/cart/""#,
    ];
    for w in want {
        assert!(stdout.contains(w), "missing {w:?} in:\n{stdout}");
    }
    // Routes after the match are not tried.
    assert!(!stdout.contains(r#"skipped route "user""#), "{stdout}");
}

#[test]
fn explain_table() {
    let shop = shop_yaml();
    // (method, URL, lines the output must have)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "POST",
            "/cart/addItem",
            &["route:        cart-add-item", "cluster:      cart"],
        ),
        (
            "GET",
            "http://localhost:8080/cart/addItem",
            &[
                r#"skipped route "cart-add-item": method GET is not allowed"#,
                "route:        cart",
            ],
        ),
        (
            "HEAD",
            "/products/7?full=1",
            &[
                "route:        product",
                "params:       productId=7",
                "upstream path: /products/7?full=1",
            ],
        ),
        (
            "GET",
            "/users/7",
            &[
                "route:        user",
                "cluster:      user",
                "params:       userId=7",
            ],
        ),
        (
            "GET",
            "/healthz",
            &[
                "route:        health",
                "respond:      200 (direct response)",
            ],
        ),
        (
            "DELETE",
            "/products/42",
            &[
                r#"skipped route "product": method DELETE is not allowed"#,
                r#"skipped route "user": path "/products/42" does not fit template "/users/{userId}""#,
                r#"skipped route "health": path "/products/42" is not "/healthz""#,
                "result:       404 no route matched",
            ],
        ),
    ];
    for (method, url, want) in cases {
        let out = weft(&["explain", "-c", shop.to_str().unwrap(), method, url]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{method} {url}: {}",
            text(&out.stderr)
        );
        for w in *want {
            assert!(
                stdout.contains(w),
                "{method} {url}: missing {w:?} in:\n{stdout}"
            );
        }
    }
}

#[test]
fn explain_json_parses() {
    let shop = shop_yaml();
    let out = weft(&[
        "explain",
        "-c",
        shop.to_str().unwrap(),
        "GET",
        "http://localhost:8080/products/42",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listener"], "shop");
    assert_eq!(v["virtual_host"], "shop");
    assert_eq!(v["route"], "product");
    assert_eq!(v["path"], "/products/42");
    assert_eq!(v["params"], serde_json::json!([["productId", "42"]]));
    assert_eq!(v["action"]["kind"], "forward");
    assert_eq!(v["action"]["clusters"], serde_json::json!([["product", 1]]));
    assert_eq!(v["action"]["timeout_ms"], 2000);
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["route"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["cart-add-item", "cart"]);
    assert!(
        v["skipped"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("does not start with \"/cart/\"")
    );
}

#[test]
fn explain_header_option_takes_part() {
    let file = TempFile::new(
        "canary.yaml",
        "\
listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes:
      - name: canary
        match: { prefix: /, headers: { x-canary: \"true\" } }
        to: v2
      - name: stable
        to: v1
clusters:
  v1: { endpoints: [127.0.0.1:9001] }
  v2: { endpoints: [127.0.0.1:9002] }
",
    );
    let cases: &[(&[&str], &str)] = &[
        (&[], "route:        stable"),
        (&["-H", "x-canary: true"], "route:        canary"),
        (&["-H", "x-canary: false"], "route:        stable"),
    ];
    for (headers, want) in cases {
        let mut args = vec!["explain", "-c", file.path(), "GET", "/"];
        args.extend_from_slice(headers);
        let out = weft(&args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{headers:?}: {}", text(&out.stderr));
        assert!(stdout.contains(want), "{headers:?}: {stdout}");
    }
}

#[test]
fn explain_rejects_bad_input() {
    let shop = shop_yaml();
    let shop = shop.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["explain", "-c", shop, "GET", "/x", "--listener", "nope"],
        &["explain", "-c", shop, "GET", "/x", "-H", "no-colon"],
        &["explain", "-c", "/nonexistent.yaml", "GET", "/x"],
    ];
    for args in cases {
        let out = weft(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

// ---- running commands ----

/// A running `weft`, killed when dropped.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(WEFT)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Threads drain both pipes so the child never blocks on a full pipe.
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Reads stdout (or stderr) until `find` accepts a line, returning what it found.
    fn wait_for<T>(&mut self, on_stderr: bool, find: impl Fn(&str) -> Option<T>) -> T {
        loop {
            let source = if on_stderr {
                &self.stderr
            } else {
                &self.stdout
            };
            match source.recv_timeout(HANG) {
                Ok(line) => {
                    let found = find(&line);
                    self.seen.push(line);
                    if let Some(v) = found {
                        return v;
                    }
                }
                Err(e) => {
                    // Collect whatever the other stream said, for the message.
                    let other = if on_stderr {
                        &self.stdout
                    } else {
                        &self.stderr
                    };
                    self.seen.extend(other.try_iter());
                    panic!(
                        "weft did not announce itself ({e}); status {:?}; output:\n{}",
                        self.child.try_wait(),
                        self.seen.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            // The receiver may be gone; keep draining anyway.
            let _ = tx.send(line);
        }
    });
    rx
}

/// The address after `marker` on a line, if the line has it.
fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let word = rest.split_whitespace().next()?;
    word.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .ok()
}

// ---- a small HTTP/1.1 client ----

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", text(&self.body)))
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the answer.
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HANG)).unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", text(raw)));
    let head = text(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = text(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).unwrap();
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

// ---- weft demo ----

/// The gateway's identity: the only one the demo's sidecars let in.
const GATEWAY_ID: &str = "spiffe://shop.local/ns/shop/sa/gateway";

/// A running `weft demo` and what it printed.
struct Demo {
    running: Running,
    gateway: SocketAddr,
    admin: SocketAddr,
    token: String,
    certs: PathBuf,
    /// (replica, sidecar inbound address)
    sidecars: Vec<(String, SocketAddr)>,
    /// Everything printed before the access log.
    printed: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A killed demo cannot remove its certificates itself.
        let _ = self.running.child.kill();
        let _ = self.running.child.wait();
        let dir = self.certs.parent();
        if dir
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with("weft-demo-"))
        {
            let _ = std::fs::remove_dir_all(dir.unwrap());
        }
    }
}

impl Demo {
    /// Starts `weft demo` on free ports and reads its announcement.
    fn start() -> Self {
        let mut running = Running::start(&[
            "demo",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--services-base",
            "0",
        ]);
        running.wait_for(false, |l| l.starts_with("Ctrl-C").then_some(()));
        let lines = running.seen.clone();
        let printed = lines.join("\n");
        let find = |prefix: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{printed}"))
        };
        let gateway = addr_after(&lines[find("  gateway")], "gateway").unwrap();
        let admin = addr_after(&lines[find("  admin")], "admin").unwrap();
        let certs = lines[find("  certs")]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .into();
        // The token is on the line after its description.
        let token = lines[find("  Demo token") + 1].trim().to_owned();
        let sidecars = lines
            .iter()
            .filter_map(|l| {
                let mut words = l.strip_prefix("    ")?.split_whitespace();
                let name = words.next()?;
                let addr = words.next()?.parse().ok()?;
                (words.next()? == "->").then(|| (name.to_owned(), addr))
            })
            .collect();
        Self {
            running,
            gateway,
            admin,
            token,
            certs,
            sidecars,
            printed,
        }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn sidecar(&self, replica: &str) -> SocketAddr {
        self.sidecars
            .iter()
            .find(|(n, _)| n == replica)
            .unwrap_or_else(|| panic!("no sidecar {replica} in:\n{}", self.printed))
            .1
    }
}

#[test]
fn demo_serves_the_shop() {
    let demo = Demo::start();
    let gateway = demo.gateway;
    let bearer = demo.bearer();

    // The announcement: the commands are ready to paste, token included, and it says
    // what protects what.
    let with_token = format!("curl -H \"authorization: Bearer {}\" ", demo.token);
    for w in [
        format!("curl {gateway}/products/42"),
        format!("{with_token}{gateway}/users/7"),
        format!(
            "{with_token}-X POST {gateway}/cart/addItem -d '{{\"productId\":\"42\",\"qty\":1}}'"
        ),
        "weft_tls_handshakes_total".to_owned(),
        GATEWAY_ID.to_owned(),
        "mutual TLS".to_owned(),
    ] {
        assert!(
            demo.printed.contains(&w),
            "missing {w:?} in:\n{}",
            demo.printed
        );
    }
    let replicas: Vec<&str> = demo.sidecars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        replicas,
        [
            "cart-1",
            "cart-2",
            "product-1",
            "product-2",
            "user-1",
            "user-2"
        ]
    );

    // (method, target, body, service, (param, value), token)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
        bool,
    );
    let cases: &[Case] = &[
        (
            "GET",
            "/products/42",
            "",
            "product",
            Some(("productId", "42")),
            false,
        ),
        ("GET", "/users/7", "", "user", Some(("userId", "7")), true),
        ("GET", "/cart/items", "", "cart", None, true),
        (
            "POST",
            "/cart/addItem",
            r#"{"productId":"42","qty":2}"#,
            "cart",
            None,
            true,
        ),
    ];
    for (method, target, body, service, param, token) in cases {
        let mut headers = vec![];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        if *token {
            headers.push(("Authorization", bearer.as_str()));
        }
        let resp = request(gateway, method, target, &headers, body.as_bytes());
        assert_eq!(resp.status, 200, "{method} {target}: {resp:?}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{method} {target}"
        );
        let v = resp.json();
        assert_eq!(v["service"], *service, "{method} {target}: {v}");
        let replica = v["replica"].as_str().unwrap();
        assert!(
            replica == format!("{service}-1") || replica == format!("{service}-2"),
            "{method} {target}: {v}"
        );
        assert_eq!(v["path"], *target, "{v}");
        if let Some((name, value)) = param {
            assert_eq!(v["params"][name], *value, "{method} {target}: {v}");
        }
        if *method == "POST" {
            assert_eq!(v["added"]["productId"], "42", "{v}");
            assert_eq!(v["added"]["qty"], 2, "{v}");
        }
        // The service saw the gateway's identity (checked by its sidecar) and, behind
        // a token, the user the gateway verified.
        assert_eq!(
            v["caller"]["identity"], GATEWAY_ID,
            "{method} {target}: {v}"
        );
        let user = if *token { "demo-user" } else { "" };
        assert_eq!(
            v["caller"]["user"].as_str().unwrap_or_default(),
            user,
            "{method} {target}: {v}"
        );
    }

    // Answered by the gateway itself.
    let health = request(gateway, "GET", "/healthz", &[], b"");
    assert_eq!((health.status, text(&health.body).as_str()), (200, "ok"));
    let none = request(gateway, "GET", "/nowhere", &[], b"");
    assert_eq!(none.status, 404, "{none:?}");
    assert_eq!(none.header("x-weft-error"), Some("no-route"));
    // The product route takes GET and HEAD only.
    let post = request(gateway, "POST", "/products/42", &[], b"");
    assert_eq!(post.status, 404, "{post:?}");

    // The admin server is up, explains like the CLI and counts the mesh handshakes.
    let admin = demo.admin;
    let ready = request(admin, "GET", "/ready", &[], b"");
    assert_eq!(ready.status, 200, "{ready:?}");
    let explain = request(
        admin,
        "GET",
        "/explain?method=GET&url=/products/42",
        &[],
        b"",
    );
    assert_eq!(explain.status, 200, "{explain:?}");
    assert!(
        text(&explain.body).contains("productId"),
        "{}",
        text(&explain.body)
    );
    let metrics = text(&request(admin, "GET", "/metrics", &[], b"").body);
    for cluster in ["cart", "product", "user"] {
        let series = format!(
            "weft_tls_handshakes_total{{side=\"client\",listener=\"\",cluster=\"{cluster}\",outcome=\"ok\"}} "
        );
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series:?} in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(count >= 1, "{series}{count}");
    }
}

#[test]
fn demo_requires_a_token_for_cart_and_users() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let demo = Demo::start();
    // The same token with another `sub`: the signature no longer fits.
    let parts: Vec<&str> = demo.token.split('.').collect();
    assert_eq!(parts.len(), 3, "{}", demo.token);
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["sub"], "demo-user");
    assert_eq!(claims["iss"], "https://auth.shop.local");
    assert_eq!(claims["aud"], "shop");
    claims["sub"] = "admin".into();
    let forged = format!(
        "Bearer {}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );

    // (method, target, authorization, expected error in www-authenticate)
    let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        ("GET", "/users/7", None, None),
        ("GET", "/cart/items", None, None),
        ("POST", "/cart/addItem", None, None),
        (
            "GET",
            "/users/7",
            Some(&forged),
            Some("error_description=\"Jwt verification fails\""),
        ),
        (
            "POST",
            "/cart/addItem",
            Some(&forged),
            Some("error_description=\"Jwt verification fails\""),
        ),
        (
            "GET",
            "/cart/items",
            Some("Bearer not-a-token"),
            Some("error=\"invalid_token\""),
        ),
    ];
    for (method, target, auth, error) in cases {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let resp = request(demo.gateway, method, target, &headers, b"{}");
        assert_eq!(resp.status, 401, "{method} {target} {auth:?}: {resp:?}");
        let challenge = resp
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("{method} {target}: no www-authenticate: {resp:?}"));
        assert!(challenge.starts_with("Bearer realm="), "{challenge}");
        match error {
            Some(e) => assert!(challenge.contains(e), "{method} {target}: {challenge}"),
            None => assert!(!challenge.contains("error="), "{challenge}"),
        }
    }
    // Products stay open, with or without a token.
    let open = request(demo.gateway, "GET", "/products/42", &[], b"");
    assert_eq!(open.status, 200, "{open:?}");
}

#[test]
fn demo_sidecars_let_only_the_gateway_in() {
    use std::sync::Arc;

    use weft_mtls::{CertPaths, CertStore, Expect, FileSource, SpiffeServerVerifier};

    let demo = Demo::start();
    let cart = demo.sidecar("cart-1");
    let cart_id: weft_mtls::SpiffeId = "spiffe://shop.local/ns/shop/sa/cart".parse().unwrap();
    // A client with one of the demo's identities (issued by its CA), checking that the
    // sidecar is the Cart service's.
    let client = |identity: &str| {
        let store = CertStore::new(identity, &weft_telemetry::Registry::new());
        let paths = CertPaths::in_dir(&demo.certs.join(identity));
        assert!(store.publish(FileSource::load(&paths, identity)));
        (store.clone(), Expect::Ids(vec![cart_id.clone()]))
    };
    let with_cert = |identity: &str| {
        let (store, expect) = client(identity);
        weft_mtls::mesh_client_config(&store, expect, vec![b"http/1.1".to_vec()])
    };

    // Plain HTTP: no HTTP answer, the port speaks TLS only.
    let mut plain = TcpStream::connect(cart).unwrap();
    plain.set_read_timeout(Some(HANG)).unwrap();
    let _ = plain.write_all(b"GET /cart/items HTTP/1.1\r\nHost: cart\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{:?}", text(&answer));

    // TLS without a client certificate: refused in the handshake, no HTTP answer.
    let (store, expect) = client("product");
    let mut no_cert = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(store, expect)))
    .with_no_client_auth();
    no_cert.alpn_protocols = vec![b"http/1.1".to_vec()];
    let refused = tls_get(cart, Arc::new(no_cert), "/cart/items");
    assert!(
        refused.as_ref().is_err() || refused.as_ref().is_ok_and(|a| a.is_empty()),
        "{:?}",
        refused.map(|a| text(&a))
    );

    // A valid identity of the mesh that is not the gateway's: 403 from the policy.
    let product = parse_response(&tls_get(cart, with_cert("product"), "/cart/items").unwrap());
    assert_eq!(product.status, 403, "{product:?}");
    // The gateway's identity is let in (the policy, not the client, made the difference).
    let gateway = parse_response(&tls_get(cart, with_cert("gateway"), "/cart/items").unwrap());
    assert_eq!(gateway.status, 200, "{gateway:?}");
    assert_eq!(gateway.json()["caller"]["identity"], GATEWAY_ID);
}

/// A `GET target` over TLS with `config`, `Connection: close`; the raw answer.
fn tls_get(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    target: &str,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(HANG))?;
    let name = rustls::pki_types::ServerName::try_from("cart.shop.local").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)?;
    Ok(raw)
}

// ---- weft proxy ----

/// An upstream that answers every request with `<name> <method> <target>` and closes.
fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || answer(stream, name));
        }
    });
    addr
}

fn answer(mut stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(HANG));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let reply = format!("{name} {method} {target}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn proxy_forwards_to_its_upstreams() {
    let a = upstream("a");
    let b = upstream("b");
    let to = format!("{a},{b}");
    let mut proxy = Running::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &to,
        "--lb",
        "round-robin",
        "--admin",
        "127.0.0.1:0",
    ]);
    // `weft proxy` announces the bound address on stderr.
    let listen = proxy.wait_for(true, |l| addr_after(l, "weft: listener proxy on"));
    let mut seen = Vec::new();
    for i in 0..4 {
        let target = format!("/hello/{i}?x=1");
        let resp = request(listen, "GET", &target, &[], b"");
        assert_eq!(resp.status, 200, "{resp:?}");
        let body = text(&resp.body);
        let (name, rest) = body.split_once(' ').unwrap();
        assert_eq!(rest, format!("GET {target}"), "{body}");
        seen.push(name.to_owned());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"], "round robin reaches both upstreams");
    // A body goes through.
    let resp = request(listen, "POST", "/submit", &[], b"{\"k\":1}");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(text(&resp.body).ends_with("POST /submit"), "{resp:?}");
}

#[test]
fn single_worker_proxy_serves_more_ready_connections_than_one_batch() {
    // `--workers 1` runs the single-threaded runtime, which takes only a few ready
    // sockets from the kernel per tick (`IO_EVENTS_PER_TICK` in main.rs, 8). Every
    // request here is written before any response is read, so far more connections than
    // that are ready at once; each must still be answered, none left waiting.
    let up = upstream("one");
    let to = up.to_string();
    let mut proxy = Running::start(&[
        "--workers",
        "1",
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &to,
        "--admin",
        "127.0.0.1:0",
    ]);
    let listen = proxy.wait_for(true, |l| addr_after(l, "weft: listener proxy on"));
    let mut streams: Vec<TcpStream> = (0..48)
        .map(|i| {
            let mut s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(HANG)).unwrap();
            let head =
                format!("GET /batch/{i} HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n");
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let resp = parse_response(&raw);
        assert_eq!(resp.status, 200, "connection {i}: {resp:?}");
        assert_eq!(text(&resp.body), format!("one GET /batch/{i}"), "{resp:?}");
    }
}

#[test]
fn proxy_on_a_chosen_port_reports_upstream_failure() {
    // A free port: bind, read it, let it go.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens on a port just released either.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listen = format!("127.0.0.1:{port}");
    let dead = dead.to_string();
    let mut proxy = Running::start(&[
        "proxy",
        "--listen",
        &listen,
        "--to",
        &dead,
        "--admin",
        "127.0.0.1:0",
    ]);
    let addr = proxy.wait_for(true, |l| addr_after(l, "weft: listener proxy on"));
    assert_eq!(addr.port(), port);
    let resp = request(addr, "GET", "/", &[], b"");
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(
        resp.header("x-weft-error"),
        Some("upstream-connect-failure")
    );
}

#[test]
fn proxy_runs_with_the_default_retries_and_without_them_on_request() {
    let live = upstream("live");
    // Nothing listens on a port just released.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let to = format!("{live},{dead}");
    // (extra flags, requests expected to fail): round robin sends every other request
    // to the dead endpoint; the default policy retries a refused connection elsewhere.
    let cases: &[(&[&str], bool)] = &[(&[], false), (&["--no-resilience"], true)];
    for (extra, some_fail) in cases {
        let mut args = vec![
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &to,
            "--lb",
            "round-robin",
            "--admin",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut proxy = Running::start(&args);
        let listen = proxy.wait_for(true, |l| addr_after(l, "weft: listener proxy on"));
        let statuses: Vec<u16> = (0..6)
            .map(|i| request(listen, "GET", &format!("/r/{i}"), &[], b"").status)
            .collect();
        let failed = statuses.iter().filter(|s| **s != 200).count();
        if *some_fail {
            assert!(failed > 0, "{extra:?}: {statuses:?}");
            assert!(
                statuses.iter().all(|s| *s == 200 || *s == 503),
                "{statuses:?}"
            );
        } else {
            assert_eq!(failed, 0, "default retries: {statuses:?}");
        }
    }
}

#[test]
fn proxy_rejects_bad_arguments() {
    let cases: &[&[&str]] = &[
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "nowhere",
            "--admin",
            "127.0.0.1:0",
        ],
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:1",
            "--lb",
            "fastest",
            "--admin",
            "127.0.0.1:0",
        ],
        &["proxy", "--listen", "localhost", "--to", "127.0.0.1:1"],
    ];
    for args in cases {
        let out = weft(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
