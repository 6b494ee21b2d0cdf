//! The admin server: `/metrics` counts a known mix of requests (parsed with
//! prometheus-parse), `/live` and `/ready` answer, `/config_dump` is JSON holding the
//! listener, `/explain` names the route; `/clusters`, `/stats`, the process metrics and
//! `/logging` (show, change, refuse a bad filter), protocol-detection outcomes.

use weft_tests::{Client, TestProxy, eventually, upstream, within};

use crate::LIMIT;

const REQUESTS: &str = "istio_requests_total";
const DURATION: &str = "istio_request_duration_milliseconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_mix_of_requests() -> anyhow::Result<()> {
    let up = upstream::http1("fine").await?;
    let closed = upstream::closed_port().await?;
    let refused = closed.addr();
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: ok
        match: {{ prefix: /ok }}
        to: fine
      - name: down
        match: {{ prefix: /down }}
        to: refused
clusters:
  fine: {{ endpoints: [{}] }}
  refused: {{ endpoints: [{refused}] }}
"#,
        up.addr()
    ))
    .await?;
    within(LIMIT, "metrics mix", async {
        // HTTP/1.1: 3 ok, 2 down, 1 no route. HTTP/2: 2 ok, 1 down, 1 no route.
        let plan = [(Client::http1(), 3, 2, 1), (Client::http2(), 2, 1, 1)];
        for (client, ok, down, none) in plan {
            for _ in 0..ok {
                assert_eq!(client.get(&proxy.url("edge", "/ok")).await?.code(), 200);
            }
            for _ in 0..down {
                assert_eq!(client.get(&proxy.url("edge", "/down")).await?.code(), 503);
            }
            for _ in 0..none {
                assert_eq!(client.get(&proxy.url("edge", "/none")).await?.code(), 404);
            }
        }
        let m = proxy.metrics().await?;
        let count = |labels: &[(&str, &str)]| m.sum(REQUESTS, labels);
        let edge = ("listener", "edge");
        assert_eq!(
            count(&[edge, ("route_name", "ok"), ("response_code", "200")]),
            5.0,
            "{}",
            m.text
        );
        assert_eq!(
            count(&[edge, ("route_name", "ok"), ("destination_service", "fine")]),
            5.0
        );
        assert_eq!(
            count(&[edge, ("route_name", "down"), ("response_code", "503")]),
            3.0
        );
        assert_eq!(
            count(&[("route_name", "down"), ("response_flags", "UF")]),
            3.0,
            "a refused connection is flagged UF"
        );
        assert_eq!(count(&[edge, ("response_code", "404")]), 2.0);
        assert_eq!(
            count(&[("response_code", "404"), ("response_flags", "NR")]),
            2.0
        );
        assert_eq!(count(&[edge]), 10.0, "every request counted once");
        assert_eq!(
            count(&[("reporter", "gateway"), ("request_protocol", "http")]),
            10.0
        );

        // Durations: a histogram per series, with Istio's buckets.
        let buckets = m.histogram(DURATION, &[("route_name", "ok"), ("response_code", "200")]);
        assert!(buckets.len() >= 10, "buckets: {buckets:?}");
        let (le, total) = *buckets.last().expect("a +Inf bucket");
        assert!(le.is_infinite(), "the last bucket is +Inf: {buckets:?}");
        assert_eq!(total, 5.0);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
        assert!(buckets.iter().any(|(le, _)| *le == 5000.0), "{buckets:?}");
        assert_eq!(
            m.sum(
                &format!("{DURATION}_count"),
                &[("route_name", "ok"), ("response_code", "200")]
            ),
            5.0
        );

        assert_eq!(m.sum("weft_config_updates_total", &[]), 1.0);
        assert_eq!(m.sum("weft_config_rejections_total", &[]), 0.0);
        assert!(
            m.samples("weft_downstream_connections_active", &[edge])
                .next()
                .is_some(),
            "connection gauge per listener"
        );
        // At least one connection per client (a pooled client may open a second one
        // when a request overtakes the return of the first connection to its pool).
        let accepted = m.sum("weft_downstream_connections_total", &[edge]);
        assert!((2.0..=10.0).contains(&accepted), "{accepted} connections");
        // The clients are gone (dropped with `plan`): their connections close and the
        // gauge comes back to zero.
        eventually(
            LIMIT,
            "the active-connections gauge returns to 0",
            async || match proxy.metrics().await {
                Ok(m) => m.sum("weft_downstream_connections_active", &[edge]) == 0.0,
                Err(_) => false,
            },
        )
        .await?;
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ready_config_dump_and_explain() -> anyhow::Result<()> {
    let up = upstream::http1("fine").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: products
        match: {{ path: "/products/{{productId}}" }}
        to: fine
clusters:
  fine: {{ endpoints: [{}] }}
"#,
        up.addr()
    ))
    .await?;
    within(LIMIT, "admin endpoints", async {
        let admin = Client::http1();
        for path in ["/live", "/ready"] {
            let reply = admin.get(&proxy.admin_url(path)).await?;
            assert_eq!(reply.code(), 200, "{path}: {}", reply.text());
        }

        let reply = admin.get(&proxy.admin_url("/config_dump")).await?;
        assert_eq!(reply.code(), 200);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|c| c.contains("json"))
        );
        let dump: serde_json::Value = serde_json::from_slice(&reply.body)?;
        assert!(
            has_string(&dump, "edge"),
            "the listener is in the dump: {dump:#}"
        );
        assert!(has_string(&dump, "fine"), "the cluster is in the dump");

        let reply = admin
            .get(&proxy.admin_url("/explain?method=GET&url=/products/42"))
            .await?;
        assert_eq!(reply.code(), 200, "{}", reply.text());
        assert!(reply.text().contains("products"), "{}", reply.text());
        assert!(reply.text().contains("fine"), "{}", reply.text());

        let reply = admin.get(&proxy.admin_url("/no-such-page")).await?;
        assert_eq!(reply.code(), 404);
        anyhow::Ok(())
    })
    .await?
}

/// Whether `needle` is a string value anywhere in `v`.
fn has_string(v: &serde_json::Value, needle: &str) -> bool {
    match v {
        serde_json::Value::String(s) => s == needle,
        serde_json::Value::Array(a) => a.iter().any(|x| has_string(x, needle)),
        serde_json::Value::Object(o) => o.values().any(|x| has_string(x, needle)),
        _ => false,
    }
}

/// `/clusters` lists every endpoint with its weight, health, latency estimate and load;
/// `/stats` is the counters and gauges without histogram buckets; `/metrics` carries the
/// process figures; `/logging` shows and changes the log filter and refuses a bad one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_stats_process_metrics_and_logging() -> anyhow::Result<()> {
    let up = upstream::http1("fine").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes: [ {{ name: ok, to: fine }} ]
clusters:
  fine: {{ endpoints: [{{ address: "{}", weight: 3 }}] }}
"#,
        up.addr()
    ))
    .await?;
    // Logging as `weft` sets it up (the first install in this process wins; the filter
    // is what /logging reports and changes).
    let _ = weft_telemetry::logging::init(Some("error"), weft_telemetry::logging::LogFormat::Text);
    within(LIMIT, "admin endpoints", async {
        let client = Client::http1();
        assert_eq!(client.get(&proxy.url("edge", "/x")).await?.code(), 200);

        let text = client.get(&proxy.admin_url("/clusters")).await?.text();
        let a = up.addr();
        for line in [
            format!("fine::{a}::weight::3"),
            format!("fine::{a}::health_flags::healthy"),
            format!("fine::{a}::rq_active::0"),
            format!("fine::{a}::cx_idle::1"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(
            &client
                .get(&proxy.admin_url("/clusters?format=json"))
                .await?
                .text(),
        )?;
        let ep = &json["clusters"][0]["endpoints"][0];
        assert_eq!(json["clusters"][0]["name"], "fine", "{json}");
        assert_eq!(ep["address"], a.to_string(), "{json}");
        assert_eq!(ep["weight"], 3, "{json}");
        assert!(
            ep["ewma_latency_ms"].as_f64().is_some_and(|v| v > 0.0),
            "{json}"
        );

        let stats = client.get(&proxy.admin_url("/stats")).await?.text();
        assert!(
            stats
                .lines()
                .any(|l| l.starts_with("istio_requests_total{")),
            "{stats}"
        );
        assert!(!stats.contains("_bucket{"), "{stats}");
        assert!(!stats.contains("# TYPE"), "{stats}");

        // Protocol detection: the HTTP/1.1 request above, and a connection that closes
        // before sending anything.
        drop(tokio::net::TcpStream::connect(proxy.addr("edge")).await?);
        eventually(LIMIT, "a silent connection is counted", async || {
            proxy.metrics().await.is_ok_and(|m| {
                m.sum("weft_protocol_detection_total", &[("outcome", "closed")]) >= 1.0
            })
        })
        .await?;
        let m = proxy.metrics().await?;
        assert_eq!(
            m.sum("weft_protocol_detection_total", &[("outcome", "http1")]),
            1.0,
            "{}",
            m.text
        );
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(
                m.scrape.samples.iter().any(|s| s.metric == name),
                "{name} missing:\n{}",
                m.text
            );
        }

        let logging = proxy.admin_url("/logging");
        let set = client
            .post(&format!("{logging}?level=weft_proxy%3Dwarn,error"), "")
            .await?;
        assert_eq!(set.code(), 200, "{}", set.text());
        let shown = client.get(&logging).await?.text();
        assert!(shown.contains("weft_proxy=warn,error"), "{shown}");
        let bad = client
            .post(&format!("{logging}?level=%3D%3D%3D"), "")
            .await?;
        assert_eq!(bad.code(), 400, "{}", bad.text());
        // The rejected filter did not replace the good one.
        let shown = client.get(&logging).await?.text();
        assert!(shown.contains("weft_proxy=warn,error"), "{shown}");
        anyhow::Ok(())
    })
    .await?
}
