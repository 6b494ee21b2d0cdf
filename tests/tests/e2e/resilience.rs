//! Resilience (issue 4): retries (default policy, budget, body replay, per-try timeout),
//! outlier ejection, active health checks, circuit breaking, local rate limits, route and
//! gRPC timeouts, fault injection.
//!
//! Failures are injected by the harness upstreams (`Behavior::fail_percent`,
//! `fail_next`, `status_for_path`, `delay`) and by refused ports; what the proxy made of
//! them is read from the clients' answers, what the upstreams saw (every request is
//! recorded) and `/metrics`. Every load is bounded in count; the only timing assertion is
//! the p99 bound of the slow-replica test, which is the issue's own acceptance criterion.
//!
//! Not covered here: `weft proxy --to a,b,c` (its configuration is built by the `weft`
//! binary's `main.rs`, which this crate cannot call, and Cargo gives a binary's path only
//! to its own package's tests). Its cluster and route carry no resilience fields, so it
//! runs on the defaults the first tests below exercise through `weft.yaml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use tokio::sync::Barrier;
use tokio::time::Instant;
use weft_telemetry::names;
use weft_tests::client::{self, empty, full};
use weft_tests::pattern::PatternBody;
use weft_tests::{Behavior, Client, Reply, TestProxy, Upstream, eventually, upstream, within};

use crate::{ERROR_HEADER, LIMIT, assert_local, both_clients};

/// The time limit of the tests that send thousands of requests (about 8,000 requests a
/// second go through a debug build here, so this is far from what they need).
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// The default retry budget: 20 % of the requests plus 10 retries a second.
const BUDGET_PERCENT: f64 = 0.2;
const BUDGET_MIN_PER_SEC: f64 = 10.0;
/// What the budget bound allows beyond 20 % of the requests plus 10 a second, at most
/// the 10 the issue allows for accounting: the budget starts with one second's
/// allowance (10 retries), so that a cluster can retry its very first failures (the
/// one-bad-replica test needs it). Otherwise the account is exact: a retry takes a whole
/// token under a lock, so concurrent clients are never admitted over it. The seconds are
/// counted from before the proxy starts (the budget accrues from the cluster's
/// creation), to after the last response.
const BUDGET_SLACK: f64 = 10.0;

/// What a load run got back.
#[derive(Debug, Default)]
struct Load {
    /// Responses by status (`0`: no response, the client's request failed).
    codes: BTreeMap<u16, usize>,
    /// Local errors by `x-weft-error` value (`client: ...` for failed requests).
    errors: BTreeMap<String, usize>,
    /// Answers by upstream (`x-upstream`).
    upstreams: BTreeMap<String, usize>,
    /// Each request's latency (to the end of its response body).
    latencies: Vec<Duration>,
    /// From the first request sent to the last response read.
    elapsed: Duration,
}

impl Load {
    fn total(&self) -> usize {
        self.codes.values().sum()
    }

    fn count(&self, code: u16) -> usize {
        self.codes.get(&code).copied().unwrap_or(0)
    }

    fn failures(&self) -> usize {
        self.total() - self.count(200)
    }

    fn merge(&mut self, other: Load) {
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.upstreams {
            *self.upstreams.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }

    /// The `p`-th percentile latency (nearest rank).
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// Sends `total` GETs to `{base}/{n}` (a unique path each) from `concurrency` keep-alive
/// HTTP/1.1 clients with `headers`, a millisecond apart per client, and tallies the
/// answers. A `200` must be the upstream's answer to that very request (`x-seen-path`);
/// anything else fails the run at once.
async fn load(
    base: &str,
    total: usize,
    concurrency: usize,
    headers: &[(&str, &str)],
) -> anyhow::Result<Load> {
    let next = Arc::new(AtomicUsize::new(0));
    let headers: Arc<Vec<(String, String)>> = Arc::new(
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (base, next, headers) = (base.to_owned(), next.clone(), headers.clone());
        tasks.spawn(async move {
            let client = Client::http1();
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut out = Load::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let url = format!("{base}/{n}");
                let sent = Instant::now();
                let result = client.get_with(&url, &headers).await;
                out.latencies.push(sent.elapsed());
                match result {
                    Ok(reply) => tally(&mut out, &url, &reply)?,
                    Err(e) => {
                        *out.codes.entry(0).or_default() += 1;
                        *out.errors.entry(format!("client: {e:#}")).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            anyhow::Ok(out)
        });
    }
    let mut all = Load::default();
    while let Some(done) = tasks.join_next().await {
        all.merge(done??);
    }
    all.elapsed = started.elapsed();
    eprintln!(
        "{base}: {} requests in {:?}: {:?} {:?} {:?}",
        all.total(),
        all.elapsed,
        all.codes,
        all.errors,
        all.upstreams
    );
    Ok(all)
}

/// Adds one answer to `out`, checking that a `200` answers the request for `url`.
fn tally(out: &mut Load, url: &str, reply: &Reply) -> anyhow::Result<()> {
    *out.codes.entry(reply.code()).or_default() += 1;
    if let Some(e) = reply.header(ERROR_HEADER) {
        *out.errors.entry(e.to_owned()).or_default() += 1;
    }
    if let Some(u) = reply.upstream() {
        *out.upstreams.entry(u.to_owned()).or_default() += 1;
    }
    if reply.code() == 200 {
        let uri: http::Uri = url.parse()?;
        anyhow::ensure!(
            reply.seen_path() == Some(uri.path()),
            "{url}: a 200 answering {:?}",
            reply.seen_path()
        );
    }
    Ok(())
}

/// The most requests the upstreams may see for `client_requests` sent within `elapsed`
/// of the proxy's start when every retry is charged to the default budget (20 % of the
/// requests plus 10 a second), with [`BUDGET_SLACK`].
fn budget_bound(client_requests: usize, elapsed: Duration) -> f64 {
    client_requests as f64 * (1.0 + BUDGET_PERCENT)
        + BUDGET_MIN_PER_SEC * elapsed.as_secs_f64()
        + BUDGET_SLACK
}

/// A proxy config: one listener `edge` whose one route (`/` prefix, named `main`, with
/// `route_extra` YAML lines) goes to cluster `pool` (the `endpoints`, with
/// `cluster_extra` YAML lines). Extra lines are given unindented.
fn pool_config(endpoints: &[SocketAddr], route_extra: &str, cluster_extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: main
        match: {{ prefix: / }}
        to: pool
{route}
clusters:
  pool:
    endpoints: [{endpoints}]
{cluster}
"#,
        endpoints = endpoints.join(", "),
        route = indent(route_extra, 8),
        cluster = indent(cluster_extra, 4),
    )
}

fn indent(lines: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{}\n", l.trim()))
        .collect()
}

/// Starts `n` HTTP/1.1 upstreams named `{prefix}-1`...
async fn replicas(prefix: &str, n: usize) -> anyhow::Result<Vec<Upstream>> {
    let mut ups = Vec::with_capacity(n);
    for i in 1..=n {
        ups.push(upstream::http1(&format!("{prefix}-{i}")).await?);
    }
    Ok(ups)
}

fn addrs(ups: &[Upstream]) -> Vec<SocketAddr> {
    ups.iter().map(Upstream::addr).collect()
}

fn seen_by_all(ups: &[Upstream]) -> usize {
    ups.iter().map(Upstream::count).sum()
}

/// The endpoint `addr` of `cluster` as admin `/clusters?format=json` shows it.
async fn admin_endpoint(
    proxy: &TestProxy,
    cluster: &str,
    addr: SocketAddr,
) -> anyhow::Result<Value> {
    let reply = Client::http1()
        .get(&proxy.admin_url("/clusters?format=json"))
        .await?;
    anyhow::ensure!(reply.code() == 200, "/clusters answered {}", reply.code());
    let json: Value = serde_json::from_slice(&reply.body)?;
    let endpoint = json["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == cluster)
        .flat_map(|c| c["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["address"] == addr.to_string().as_str())
        .cloned();
    endpoint.ok_or_else(|| anyhow::anyhow!("no endpoint {addr} of {cluster} in {json:#}"))
}

/// A gRPC request body: one empty, uncompressed message.
fn grpc_message() -> Bytes {
    Bytes::from_static(&[0, 0, 0, 0, 0])
}

// 1. One bad replica of three: default retries hide it, outlier detection ejects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_replica_of_three_costs_no_request_and_is_ejected() -> anyhow::Result<()> {
    const TOTAL: usize = 10_000;
    const CONCURRENCY: usize = 16;
    let ups = replicas("replica", 3).await?;
    ups[2].set(Behavior::status(503));
    let bad = ups[2].addr();
    // No retries or outlier_detection: Istio's default retries (503 is retried, on
    // another endpoint) and the default detection (5 consecutive 5xx eject for 30 s).
    // Round robin, because it would keep sending the failing replica a third of the
    // requests: what keeps them away is the ejection (P2C would steer away by itself).
    let proxy = TestProxy::start(&pool_config(&addrs(&ups), "", "lb: round-robin")).await?;
    let run = within(
        LOAD_LIMIT,
        "10,000 requests",
        load(&proxy.url("edge", "/one-bad"), TOTAL, CONCURRENCY, &[]),
    )
    .await??;
    assert_eq!(run.total(), TOTAL);
    assert_eq!(
        run.failures(),
        0,
        "requests failed: {:?} {:?}",
        run.codes,
        run.errors
    );
    assert_eq!(run.upstreams.get("replica-3"), None, "{:?}", run.upstreams);
    // Ejected after 5 consecutive errors; up to one request per client may have been on
    // its way to it meanwhile. The ejection (30 s) outlasts the run, which takes a few
    // seconds; a run that took longer would have let it back once.
    let ejections_possible = 1 + usize::from(run.elapsed >= Duration::from_secs(30));
    let seen = ups[2].count();
    eprintln!("the failing replica saw {seen} requests");
    assert!(
        seen <= (5 + CONCURRENCY) * ejections_possible,
        "the failing replica saw {seen} requests in {:?}",
        run.elapsed
    );
    assert!(seen >= 5, "the failing replica saw only {seen} requests");
    within(LIMIT, "metrics and admin", async {
        let m = proxy.metrics().await?;
        let ejections = m.sum(names::OUTLIER_EJECTIONS_TOTAL, &[("cluster", "pool")]);
        assert!(ejections >= 1.0, "ejections: {ejections}");
        let endpoint = admin_endpoint(&proxy, "pool", bad).await?;
        assert_eq!(endpoint["ejected"], true, "admin /clusters: {endpoint:#}");
        for good in &ups[..2] {
            let endpoint = admin_endpoint(&proxy, "pool", good.addr()).await?;
            assert_eq!(endpoint["ejected"], false, "admin /clusters: {endpoint:#}");
        }
        anyhow::Ok(())
    })
    .await?
}

// 2. 10 % random 503s everywhere: two retries make them all but disappear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_random_503s_leave_over_99_5_percent_success() -> anyhow::Result<()> {
    const TOTAL: usize = 5_000;
    let ups = replicas("flaky", 3).await?;
    for u in &ups {
        u.set(Behavior::fail_percent(10.0, 503));
    }
    let proxy = TestProxy::start(&pool_config(&addrs(&ups), "", "")).await?;
    let run = within(
        LOAD_LIMIT,
        "5,000 requests",
        load(&proxy.url("edge", "/flaky"), TOTAL, 8, &[]),
    )
    .await??;
    assert_eq!(run.total(), TOTAL);
    // A request fails only if all three tries fail: 0.1 % expected (5 requests, sd 2.2);
    // 0.5 % is 25 requests, about 9 sd away.
    let success = run.count(200) as f64 / TOTAL as f64;
    assert!(
        success > 0.995,
        "success rate {:.2} %: {:?} {:?}",
        success * 100.0,
        run.codes,
        run.errors
    );
    // The retries were made (about one per ten requests), and only as needed.
    let seen = seen_by_all(&ups);
    assert!(
        seen > TOTAL + TOTAL / 20 && seen < TOTAL + TOTAL / 5,
        "the upstreams saw {seen} requests for {TOTAL}"
    );
    Ok(())
}

// 3. 50 % random 503s: retries would triple the load; the budget caps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_percent_503s_retries_stay_within_the_budget() -> anyhow::Result<()> {
    const TOTAL: usize = 3_000;
    let ups = replicas("half", 3).await?;
    for u in &ups {
        u.set(Behavior::fail_percent(50.0, 503));
    }
    // The default budget (20 % + 10/s), written out so the test says what it checks.
    let born = Instant::now();
    let proxy = TestProxy::start(&pool_config(
        &addrs(&ups),
        "",
        "limits: { retry_budget: { percent: 20, min_per_sec: 10 } }",
    ))
    .await?;
    let run = within(
        LOAD_LIMIT,
        "3,000 requests",
        load(&proxy.url("edge", "/half"), TOTAL, 8, &[]),
    )
    .await??;
    assert_eq!(run.total(), TOTAL);
    assert_eq!(
        run.count(200) + run.count(503),
        TOTAL,
        "{:?} {:?}",
        run.codes,
        run.errors
    );
    let lived = born.elapsed();
    let seen = seen_by_all(&ups);
    let bound = budget_bound(TOTAL, lived);
    eprintln!("the upstreams saw {seen} requests for {TOTAL}; the budget allows {bound:.0}");
    assert!(
        seen as f64 <= bound,
        "the upstreams saw {seen} requests for {TOTAL} in {lived:?}: over the budget's {bound:.0}"
    );
    // Unbudgeted, 2 retries at 50 % would be 0.75 retries a request; the budget must have
    // been used (retries happened) and must have said no.
    assert!(
        seen >= TOTAL + TOTAL / 10,
        "only {seen} upstream requests for {TOTAL}: retries were not made"
    );
    within(LIMIT, "metrics", async {
        let m = proxy.metrics().await?;
        let retries = m.sum(names::RETRIES_TOTAL, &[("cluster", "pool")]);
        assert_eq!(
            retries,
            (seen - TOTAL) as f64,
            "retries counted against what the upstreams saw beyond the first tries"
        );
        let exhausted = m.sum(names::RETRY_BUDGET_EXHAUSTED_TOTAL, &[("cluster", "pool")]);
        assert!(
            exhausted >= 1.0,
            "retries refused by the budget: {exhausted}"
        );
        anyhow::Ok(())
    })
    .await?
}

// 4. Every replica failing: fast 503s, retries within the budget, then recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_failing_answer_503_at_once_within_the_budget_and_recover()
-> anyhow::Result<()> {
    const TOTAL: usize = 600;
    let ups = replicas("down", 3).await?;
    for u in &ups {
        u.set(Behavior::status(503));
    }
    // A route timeout the run never comes near: a 504 would mean something waited.
    let born = Instant::now();
    let proxy = TestProxy::start(&pool_config(
        &addrs(&ups),
        "timeout: 10s",
        "outlier_detection: { consecutive_5xx: 5, interval: 1s, base_ejection_time: 1s }",
    ))
    .await?;
    let run = within(
        LOAD_LIMIT,
        "600 requests",
        load(&proxy.url("edge", "/down"), TOTAL, 8, &[]),
    )
    .await??;
    assert_eq!(
        run.count(503),
        TOTAL,
        "every request is a 503: {:?} {:?}",
        run.codes,
        run.errors
    );
    assert_eq!(run.count(504), 0, "{:?}", run.codes);
    let lived = born.elapsed();
    let seen = seen_by_all(&ups);
    let bound = budget_bound(TOTAL, lived);
    eprintln!("the upstreams saw {seen} requests for {TOTAL}; the budget allows {bound:.0}");
    assert!(
        seen as f64 <= bound,
        "the upstreams saw {seen} requests for {TOTAL} in {lived:?}: over the budget's {bound:.0}"
    );

    for u in &ups {
        u.set(Behavior::default());
    }
    within(Duration::from_secs(40), "recovery", async {
        let client = Client::http1();
        // Ejections expire after a second here; 35 s is the default ejection's time plus
        // an interval, should the configured one not apply.
        let mut n = 0;
        eventually(
            Duration::from_secs(35),
            "a 200 after recovery",
            async || {
                n += 1;
                client
                    .get(&proxy.url("edge", &format!("/up/{n}")))
                    .await
                    .is_ok_and(|r| r.code() == 200)
            },
        )
        .await?;
        for i in 0..30 {
            let reply = client
                .get(&proxy.url("edge", &format!("/after/{i}")))
                .await?;
            assert_eq!(
                reply.code(),
                200,
                "request {i} after recovery: {}",
                reply.text()
            );
        }
        anyhow::Ok(())
    })
    .await?
}

// 4b. Every endpoint refusing connections: 503 connect-failure, retries within budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_refusing_answer_503_connect_failure() -> anyhow::Result<()> {
    const TOTAL: usize = 300;
    let closed = [
        upstream::closed_port().await?,
        upstream::closed_port().await?,
        upstream::closed_port().await?,
    ];
    let endpoints: Vec<SocketAddr> = closed.iter().map(upstream::ClosedPort::addr).collect();
    let born = Instant::now();
    let proxy = TestProxy::start(&pool_config(&endpoints, "timeout: 10s", "")).await?;
    let run = within(
        LOAD_LIMIT,
        "300 requests",
        load(&proxy.url("edge", "/refused"), TOTAL, 8, &[]),
    )
    .await??;
    assert_eq!(run.count(503), TOTAL, "{:?} {:?}", run.codes, run.errors);
    assert_eq!(
        run.errors.get("upstream-connect-failure"),
        Some(&TOTAL),
        "{:?}",
        run.errors
    );
    let lived = born.elapsed();
    within(LIMIT, "metrics", async {
        let m = proxy.metrics().await?;
        let attempts = m.sum(names::UPSTREAM_CONNECT_FAILURES_TOTAL, &[("cluster", "pool")]);
        let bound = budget_bound(TOTAL, lived);
        assert!(
            attempts >= TOTAL as f64 && attempts <= bound,
            "{attempts} failed connection attempts for {TOTAL} requests in {lived:?} (budget {bound:.0})"
        );
        anyhow::Ok(())
    })
    .await?
}

// 5. A slow replica beside a fast one: the per-try timeout moves on quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_keeps_p99_under_500ms_beside_a_slow_replica() -> anyhow::Result<()> {
    const TOTAL: usize = 200;
    let slow = upstream::http1("slow").await?;
    slow.set(Behavior::delay(Duration::from_secs(5)));
    let fast = upstream::http1("fast").await?;
    let proxy = TestProxy::start(&pool_config(
        &[slow.addr(), fast.addr()],
        "retries: { max: 1, per_try_timeout: 200ms, retry_on: [gateway-error] }",
        "",
    ))
    .await?;
    let run = within(
        LIMIT,
        "200 requests",
        load(&proxy.url("edge", "/mixed"), TOTAL, 8, &[]),
    )
    .await??;
    assert_eq!(run.count(200), TOTAL, "{:?} {:?}", run.codes, run.errors);
    assert!(slow.count() >= 1, "the slow replica was never tried");
    // The issue's acceptance criterion, kept exactly: a try at the slow replica costs
    // the 200 ms per-try timeout, then the fast one answers.
    let p99 = run.percentile(99.0);
    eprintln!(
        "p50 {:?}, p99 {p99:?}, max {:?}; the slow replica saw {}",
        run.percentile(50.0),
        run.percentile(100.0),
        slow.count()
    );
    assert!(
        p99 < Duration::from_millis(500),
        "p99 {p99:?} (p50 {:?}, max {:?})",
        run.percentile(50.0),
        run.percentile(100.0)
    );
    Ok(())
}

// 6. Bodies are replayed for listed methods and up to the replay limit only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_only_when_its_method_is_listed_and_its_body_small() -> anyhow::Result<()>
{
    const SMALL: u64 = 1024;
    const LARGE: u64 = 1024 * 1024;
    let one = upstream::http1("one").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: post-retried
        match: {{ prefix: /replay }}
        to: one
        retries: {{ max: 2, retry_on: [gateway-error], methods: [POST] }}
      - name: post-not-listed
        match: {{ prefix: /no-methods }}
        to: one
        retries: {{ max: 2, retry_on: [gateway-error] }}
      - name: no-retries
        match: {{ prefix: /off }}
        to: one
        retries: false
      - name: defaults
        match: {{ prefix: / }}
        to: one
clusters:
  one:
    endpoints: ["{}"]
    # This test is about which requests may be retried, not how many: a budget that
    # never runs dry (every request earns a retry), whenever the test runs.
    limits: {{ retry_budget: {{ percent: 100, min_per_sec: 1000 }} }}
"#,
        one.addr()
    ))
    .await?;
    // Sends one request after arming one 503; returns the answer and what the upstream
    // saw of it.
    let attempt = async |client: &Client, method: Method, path: &str, body: u64| {
        one.clear();
        one.set(Behavior::fail_next(1, 503));
        let body = if body == 0 {
            empty()
        } else {
            client::boxed(PatternBody::new(body))
        };
        let reply = client
            .send(method, &proxy.url("edge", path), &[], body)
            .await?;
        anyhow::Ok((reply, one.requests()))
    };
    within(LIMIT, "retries with bodies", async {
        for client in both_clients() {
            let v = client.version();

            let (reply, seen) = attempt(&client, Method::POST, "/replay/small", SMALL).await?;
            assert_eq!(
                reply.code(),
                200,
                "{v:?} small POST, listed: {}",
                reply.text()
            );
            assert_eq!(seen.len(), 2, "{v:?} small POST, listed: tried twice");
            for (i, r) in seen.iter().enumerate() {
                assert_eq!(r.method, Method::POST);
                assert!(
                    r.body_complete && r.body_len == SMALL && r.body_is_pattern,
                    "{v:?} try {i}: body {} bytes, complete {}, intact {}",
                    r.body_len,
                    r.body_complete,
                    r.body_is_pattern
                );
            }

            let (reply, seen) = attempt(&client, Method::POST, "/replay/large", LARGE).await?;
            assert_eq!(reply.code(), 503, "{v:?} 1 MiB POST, listed");
            assert_eq!(
                reply.upstream(),
                Some("one"),
                "{v:?}: the upstream's own 503"
            );
            assert_eq!(
                seen.len(),
                1,
                "{v:?} 1 MiB POST: over the replay limit, not retried"
            );
            assert_eq!(seen[0].body_len, LARGE, "{v:?}: the body went through once");

            let (reply, seen) = attempt(&client, Method::POST, "/no-methods/small", SMALL).await?;
            assert_eq!(reply.code(), 503, "{v:?} small POST, not listed");
            assert_eq!(seen.len(), 1, "{v:?} small POST, not listed: not retried");

            // The control: on the same route a GET is retried.
            let (reply, seen) = attempt(&client, Method::GET, "/no-methods/get", 0).await?;
            assert_eq!(reply.code(), 200, "{v:?} GET: {}", reply.text());
            assert_eq!(seen.len(), 2, "{v:?} GET: retried");

            // `retries: false`: not even a GET.
            let (reply, seen) = attempt(&client, Method::GET, "/off/get", 0).await?;
            assert_eq!(reply.code(), 503, "{v:?} GET, retries off");
            assert_eq!(seen.len(), 1, "{v:?} GET, retries off: not retried");

            // No `retries`: Istio's default retries a 503 for a GET, not for a POST.
            let (reply, seen) = attempt(&client, Method::GET, "/default/get", 0).await?;
            assert_eq!(
                reply.code(),
                200,
                "{v:?} GET, default policy: {}",
                reply.text()
            );
            assert_eq!(seen.len(), 2, "{v:?} GET, default policy: retried");

            let (reply, seen) = attempt(&client, Method::POST, "/default/small", SMALL).await?;
            assert_eq!(reply.code(), 503, "{v:?} small POST, default policy");
            assert_eq!(
                seen.len(),
                1,
                "{v:?} small POST, default policy: not retried"
            );
        }
        anyhow::Ok(())
    })
    .await?
}

/// Sends `total` GETs to `{base}/{n}` as fast as `concurrency` pre-warmed clients can,
/// each request with the headers `headers_for(n)`, all clients starting together;
/// returns the answers and how long the burst took. `warm` is a URL on the same listener
/// outside the limit, used to open every client's connection beforehand so that
/// connecting is not part of the burst.
async fn burst(
    warm: &str,
    base: &str,
    total: usize,
    concurrency: usize,
    headers_for: fn(usize) -> Vec<(&'static str, &'static str)>,
) -> anyhow::Result<(Vec<(usize, Reply)>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Barrier::new(concurrency + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (warm, base, next, gate) =
            (warm.to_owned(), base.to_owned(), next.clone(), gate.clone());
        tasks.spawn(async move {
            let client = Client::http1();
            let warmed = client.get(&warm).await;
            gate.wait().await;
            anyhow::ensure!(warmed?.code() == 200, "warming up {warm}");
            let mut out = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let reply = client
                    .get_with(&format!("{base}/{n}"), &headers_for(n))
                    .await?;
                out.push((n, reply));
            }
            anyhow::Ok(out)
        });
    }
    gate.wait().await;
    let started = Instant::now();
    let mut all = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok((all, started.elapsed()))
}

/// Checks a rate-limited answer's headers.
fn assert_rate_limited(reply: &Reply, what: &str) {
    assert_local(reply, 429, "rate-limited", what);
    let retry_after: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: retry-after {:?}", reply.header("retry-after")));
    assert_eq!(
        retry_after, 1,
        "{what}: retry-after for a bucket filled every second"
    );
    assert_eq!(reply.header("x-ratelimit-limit"), Some("100"), "{what}");
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"), "{what}");
    assert!(
        reply.header("x-ratelimit-reset").is_some(),
        "{what}: x-ratelimit-reset"
    );
}

/// The most requests a bucket of 100 filled with 100 a second may let through in a
/// burst that took `elapsed`: the issue's 130 (100 and some slack), plus what the bucket
/// may have been given meanwhile. Its fill schedule runs from before the burst, so one
/// fill may land in even the shortest burst, and one more in each second it lasts.
fn burst_bound(elapsed: Duration) -> usize {
    130 + 100 * (elapsed.as_secs() as usize + 1)
}

// 7. A local rate limit of 100 a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_gets_about_100_through_a_limit_of_100_per_second() -> anyhow::Result<()> {
    const TOTAL: usize = 1000;
    let up = upstream::http1("limited").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: warm
        match: {{ prefix: /warm }}
        to: limited
      - name: limited
        match: {{ prefix: / }}
        to: limited
        rate_limit: {{ requests: 100, per: 1s }}
clusters:
  limited: {{ endpoints: ["{}"] }}
"#,
        up.addr()
    ))
    .await?;
    let (replies, elapsed) = within(
        LIMIT,
        "a burst of 1000",
        burst(
            &proxy.url("edge", "/warm"),
            &proxy.url("edge", "/burst"),
            TOTAL,
            16,
            |_| Vec::new(),
        ),
    )
    .await??;
    let ok = replies.iter().filter(|(_, r)| r.code() == 200).count();
    eprintln!("{ok} of {TOTAL} through in {elapsed:?}");
    for (n, reply) in &replies {
        if reply.code() != 200 {
            assert_rate_limited(reply, &format!("request {n}"));
        }
    }
    assert!(
        ok >= 100 && ok <= burst_bound(elapsed),
        "{ok} of {TOTAL} went through in {elapsed:?}"
    );
    // The limited requests never reached the upstream (16 warm-up requests did).
    assert_eq!(up.count(), ok + 16);
    within(LIMIT, "metrics", async {
        let m = proxy.metrics().await?;
        let limited = m.sum(
            names::RATELIMIT_TOTAL,
            &[("route_name", "limited"), ("result", "limited")],
        );
        assert_eq!(
            limited,
            (TOTAL - ok) as f64,
            "rate-limit decisions: limited"
        );
        let passed = m.sum(
            names::RATELIMIT_TOTAL,
            &[("route_name", "limited"), ("result", "ok")],
        );
        assert_eq!(passed, ok as f64, "rate-limit decisions: ok");
        anyhow::Ok(())
    })
    .await?
}

// 7b. Keyed by a header, each user has a bucket of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_keyed_by_header_gives_each_user_their_own_100() -> anyhow::Result<()> {
    const TOTAL: usize = 1000;
    let up = upstream::http1("limited").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: warm
        match: {{ prefix: /warm }}
        to: limited
      - name: per-user
        match: {{ prefix: / }}
        to: limited
        rate_limit: {{ requests: 100, per: 1s, key: {{ header: x-user }} }}
clusters:
  limited: {{ endpoints: ["{}"] }}
"#,
        up.addr()
    ))
    .await?;
    // Alice and Bob take turns, so that a shared bucket would split its 100 between them.
    let (replies, elapsed) = within(
        LIMIT,
        "two users' bursts",
        burst(
            &proxy.url("edge", "/warm"),
            &proxy.url("edge", "/burst"),
            TOTAL,
            16,
            |n| vec![("x-user", if n % 2 == 0 { "alice" } else { "bob" })],
        ),
    )
    .await??;
    let ok_for = |parity: usize| {
        replies
            .iter()
            .filter(|(n, r)| n % 2 == parity && r.code() == 200)
            .count()
    };
    let (alice, bob) = (ok_for(0), ok_for(1));
    eprintln!("alice {alice}, bob {bob} of {TOTAL} in {elapsed:?}");
    for (n, reply) in &replies {
        if reply.code() != 200 {
            assert_rate_limited(reply, &format!("request {n}"));
        }
    }
    for (who, ok) in [("alice", alice), ("bob", bob)] {
        assert!(
            ok >= 100 && ok <= burst_bound(elapsed),
            "{who}: {ok} of {} went through in {elapsed:?} (alice {alice}, bob {bob})",
            TOTAL / 2
        );
    }
    assert_eq!(up.count(), alice + bob + 16);
    Ok(())
}

// 8. Route timeouts and gRPC deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_timeout_is_a_504_and_a_grpc_deadline_a_grpc_status_4() -> anyhow::Result<()> {
    let slow = upstream::http2("slow").await?;
    slow.set(Behavior::delay(Duration::from_secs(5)));
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: grpc
        match: {{ prefix: /weft.test.Slow/ }}
        to: slow
        timeout: 20s
      - name: slow
        match: {{ prefix: / }}
        to: slow
        timeout: 300ms
clusters:
  slow: {{ endpoints: ["{}"], protocol: http2 }}
"#,
        slow.addr()
    ))
    .await?;
    within(LIMIT, "timeouts", async {
        for client in both_clients() {
            let v = client.version();
            let before = slow.count();
            let reply = client.get(&proxy.url("edge", "/slow")).await?;
            assert_local(
                &reply,
                504,
                "upstream-timeout",
                &format!("{v:?} route timeout"),
            );
            // The route timeout covers all tries: nothing is tried again after it.
            assert_eq!(slow.count(), before + 1, "{v:?}: tries");
        }

        // A gRPC caller's deadline (200 ms) ends the call long before the route's 20 s
        // or the upstream's 5 s: were it ignored, the upstream's plain 200 would come.
        let client = Client::http2();
        let reply = client
            .send(
                Method::POST,
                &proxy.url("edge", "/weft.test.Slow/Call"),
                &[
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("grpc-timeout", "200m"),
                ],
                full(grpc_message()),
            )
            .await?;
        assert_eq!(reply.code(), 200, "gRPC: HTTP status ({:?})", reply.headers);
        assert_eq!(
            reply.header("grpc-status"),
            Some("4"),
            "{:?}",
            reply.headers
        );
        assert_eq!(reply.header(ERROR_HEADER), Some("upstream-timeout"));
        assert!(
            reply.upstream().is_none(),
            "answered by the upstream: {:?}",
            reply.headers
        );

        let m = proxy.metrics().await?;
        assert_eq!(
            m.sum(names::TIMEOUTS_TOTAL, &[("route_name", "slow")]),
            2.0,
            "route timeouts counted"
        );
        anyhow::Ok(())
    })
    .await?
}

// 9. Circuit breaking: requests over `max_requests` fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_requests_get_503_upstream_overflow() -> anyhow::Result<()> {
    let slow = upstream::http1("slow").await?;
    slow.set(Behavior::delay(Duration::from_secs(1)));
    let proxy = TestProxy::start(&pool_config(
        &[slow.addr()],
        "",
        "limits: { max_requests: 2 }",
    ))
    .await?;
    let replies = within(LIMIT, "6 concurrent requests", async {
        let gate = Arc::new(Barrier::new(6));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..6 {
            let (url, gate) = (proxy.url("edge", &format!("/cb/{i}")), gate.clone());
            tasks.spawn(async move {
                // A client each: six connections, six requests at once.
                let client = Client::http1();
                gate.wait().await;
                client.get(&url).await
            });
        }
        let mut replies = Vec::new();
        while let Some(done) = tasks.join_next().await {
            replies.push(done??);
        }
        anyhow::Ok(replies)
    })
    .await??;
    let ok = replies.iter().filter(|r| r.code() == 200).count();
    assert_eq!(
        ok,
        2,
        "{:?}",
        replies.iter().map(Reply::code).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|r| r.code() != 200) {
        assert_local(reply, 503, "upstream-overflow", "over max_requests");
    }
    assert_eq!(
        slow.count(),
        2,
        "the refused requests never reached the upstream"
    );
    let m = within(LIMIT, "metrics", proxy.metrics()).await??;
    assert_eq!(
        m.sum(
            names::UPSTREAM_OVERFLOW_TOTAL,
            &[("cluster", "pool"), ("limit", "max_requests")]
        ),
        4.0,
        "overflows counted"
    );
    Ok(())
}

// 10. Fault injection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_answers_for_the_upstream_and_fault_delay_still_forwards() -> anyhow::Result<()>
{
    let up = upstream::http1("target").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: abort
        match: {{ prefix: /abort }}
        to: target
        fault: {{ abort: {{ status: 418, percent: 100 }} }}
      - name: grpc-abort
        match: {{ prefix: /weft.test.Faulty/ }}
        to: target
        fault: {{ abort: {{ grpc_status: 14, percent: 100 }} }}
      - name: delay
        match: {{ prefix: /delay }}
        to: target
        fault: {{ delay: {{ duration: 300ms, percent: 100 }} }}
clusters:
  target: {{ endpoints: ["{}"] }}
"#,
        up.addr()
    ))
    .await?;
    within(LIMIT, "faults", async {
        for client in both_clients() {
            let v = client.version();
            let reply = client.get(&proxy.url("edge", "/abort")).await?;
            assert_local(&reply, 418, "fault-injected", &format!("{v:?} abort"));
            assert_eq!(
                up.count(),
                0,
                "{v:?}: an aborted request reached the upstream"
            );
        }
        let reply = Client::http2()
            .send(
                Method::POST,
                &proxy.url("edge", "/weft.test.Faulty/Call"),
                &[("content-type", "application/grpc"), ("te", "trailers")],
                full(grpc_message()),
            )
            .await?;
        assert_eq!(reply.code(), 200, "gRPC abort: HTTP status");
        assert_eq!(
            reply.header("grpc-status"),
            Some("14"),
            "{:?}",
            reply.headers
        );
        assert_eq!(reply.header(ERROR_HEADER), Some("fault-injected"));
        assert_eq!(up.count(), 0, "a gRPC abort reached the upstream");

        for client in both_clients() {
            let v = client.version();
            let reply = client.get(&proxy.url("edge", "/delay")).await?;
            assert_eq!(reply.code(), 200, "{v:?} delayed: {}", reply.text());
            assert_eq!(reply.seen_path(), Some("/delay"), "{v:?}");
        }
        assert_eq!(up.count(), 2);

        let m = proxy.metrics().await?;
        let aborts = m.sum(names::FAULT_INJECTED_TOTAL, &[("kind", "abort")]);
        assert_eq!(aborts, 3.0, "injected aborts counted");
        let delays = m.sum(
            names::FAULT_INJECTED_TOTAL,
            &[("route_name", "delay"), ("kind", "delay")],
        );
        assert_eq!(delays, 2.0, "injected delays counted");
        anyhow::Ok(())
    })
    .await?
}

// 11. Active health checks take a replica that fails them out of rotation, and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_keep_traffic_off_a_failing_replica() -> anyhow::Result<()> {
    let good = upstream::http1("good").await?;
    let bad = upstream::http1("bad").await?;
    bad.set(Behavior::default().status_for_path("/healthz", 500));
    let is_check = |r: &upstream::Recorded| r.path() == "/healthz";
    // Round robin would give the failing replica every other request. One of two
    // endpoints healthy is 50 %, not below the default panic threshold (50).
    let proxy = TestProxy::start(&pool_config(
        &[good.addr(), bad.addr()],
        "",
        "lb: round-robin\n\
         health_check: { path: /healthz, interval: 100ms, timeout: 1s, unhealthy_threshold: 3, healthy_threshold: 2 }",
    ))
    .await?;
    within(LIMIT, "health checks", async {
        // Checks of one endpoint follow one another: once the fourth has come, the
        // third failure has been counted.
        eventually(
            Duration::from_secs(10),
            "4 checks of the failing replica",
            async || bad.count_where(is_check) >= 4,
        )
        .await?;
        eventually(
            Duration::from_secs(10),
            "2 checks of the good replica",
            async || good.count_where(is_check) >= 2,
        )
        .await?;
        let client = Client::http1();
        for i in 0..100 {
            let reply = client.get(&proxy.url("edge", &format!("/hc/{i}"))).await?;
            assert_eq!(reply.code(), 200, "request {i}: {}", reply.text());
            assert_eq!(reply.upstream(), Some("good"), "request {i}");
        }
        assert_eq!(
            bad.count_where(|r| !is_check(r)),
            0,
            "client requests reached the replica failing its health checks"
        );

        // It passes its checks again: after two it is back in rotation.
        bad.set(Behavior::default());
        let mut n = 0;
        eventually(
            Duration::from_secs(10),
            "the recovered replica serving",
            async || {
                n += 1;
                client
                    .get(&proxy.url("edge", &format!("/back/{n}")))
                    .await
                    .is_ok_and(|r| r.upstream() == Some("bad"))
            },
        )
        .await?;
        anyhow::Ok(())
    })
    .await?
}

// Idle timeouts: a client connection with nothing in flight is closed after the
// listener's `idle_timeout`; one waiting on a slow upstream is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed_busy_ones_are_not() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let up = upstream::http1("slow").await?;
    let config = pool_config(&[up.addr()], "", "").replace(
        "    address: 127.0.0.1:0\n",
        "    address: 127.0.0.1:0\n    idle_timeout: 300ms\n",
    );
    let proxy = TestProxy::start(&config).await?;
    within(LIMIT, "idle timeout", async {
        // A request that takes longer than the idle timeout completes.
        up.set(Behavior::delay(Duration::from_millis(1200)));
        let mut conn = tokio::net::TcpStream::connect(proxy.addr("edge")).await?;
        conn.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
            .await?;
        let mut buf = vec![0u8; 4096];
        let n = conn.read(&mut buf).await?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "slow request answered: {head:?}"
        );
        // A response whose body pauses longer than the idle timeout is not cut: the
        // request is in flight until its body ends.
        up.set(Behavior::body_pause(Duration::from_millis(1200)));
        conn.write_all(b"GET /quiet HTTP/1.1\r\nhost: a\r\n\r\n")
            .await?;
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("upstream slow") {
            let n = conn.read(&mut buf).await?;
            assert!(
                n > 0,
                "closed during a quiet body: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        // Still open for another request: nothing shut it down during the pause (a
        // graceful shutdown would have closed it after that response).
        up.set(Behavior::default());
        conn.write_all(b"GET /again HTTP/1.1\r\nhost: a\r\n\r\n")
            .await?;
        let n = conn.read(&mut buf).await?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "kept open after a quiet body: {head:?}"
        );
        // Then nothing: the proxy closes the connection (EOF), well before LIMIT.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(_))),
            "the idle connection was closed by the proxy: {closed:?}"
        );
        anyhow::Ok(())
    })
    .await?
}

// A retried 503 that arrived whole is read to its end, so its keep-alive connection is
// reused for the retry instead of closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_error_response_keeps_its_connection() -> anyhow::Result<()> {
    let up = upstream::http1("one").await?;
    let proxy = TestProxy::start(&pool_config(&[up.addr()], "", "")).await?;
    within(LIMIT, "retry on the same connection", async {
        let client = Client::http1();
        for i in 0..5 {
            up.set(Behavior::fail_next(1, 503));
            let reply = client
                .get(&proxy.url("edge", &format!("/again/{i}")))
                .await?;
            assert_eq!(reply.code(), 200, "retried: {:?}", reply.text());
        }
        assert_eq!(up.count(), 10, "each request tried twice");
        assert_eq!(
            up.connections(),
            1,
            "every try went over the one pooled connection"
        );
        anyhow::Ok(())
    })
    .await?
}

// A request on a retrying route whose body is held for replay: a client that stalls
// while sending it runs into the route's one deadline (504), and the upstream never sees
// a partial request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_being_held_for_replay_times_out() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let up = upstream::http1("held").await?;
    let config = pool_config(
        &[up.addr()],
        "        timeout: 300ms\n        retries: { methods: [POST] }",
        "",
    );
    let proxy = TestProxy::start(&config).await?;
    within(LIMIT, "stalled held body", async {
        let mut conn = tokio::net::TcpStream::connect(proxy.addr("edge")).await?;
        // 100 bytes declared, 10 sent, then nothing.
        conn.write_all(b"POST /held HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n0123456789")
            .await?;
        let mut buf = vec![0u8; 4096];
        let n = conn.read(&mut buf).await?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 504"), "{head:?}");
        assert!(head.contains("x-weft-error: upstream-timeout"), "{head:?}");
        assert_eq!(up.count(), 0, "nothing reached the upstream");
        anyhow::Ok(())
    })
    .await?
}

// At the connection limit, an idle pooled connection to one endpoint gives its slot to a
// request for another endpoint instead of that request overflowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gives_its_slot_to_another_endpoint() -> anyhow::Result<()> {
    let ups = replicas("slot", 2).await?;
    let config = pool_config(
        &addrs(&ups),
        "retries: false",
        "lb: round-robin\nlimits: { max_connections: 1 }\noutlier_detection: false",
    );
    let proxy = TestProxy::start(&config).await?;
    within(LIMIT, "one connection, two endpoints", async {
        let client = Client::http1();
        let mut seen = Vec::new();
        for i in 0..6 {
            let reply = client
                .get(&proxy.url("edge", &format!("/slot/{i}")))
                .await?;
            assert_eq!(
                reply.code(),
                200,
                "request {i}: {:?} {:?}",
                reply.text(),
                reply.headers
            );
            seen.extend(reply.upstream().map(str::to_owned));
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["slot-1", "slot-2"], "both endpoints served");
        anyhow::Ok(())
    })
    .await?
}
