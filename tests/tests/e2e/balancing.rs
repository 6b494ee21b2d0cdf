//! Traffic distribution: weighted splits between clusters and P2C peak-EWMA balancing
//! within one. Counts are checked against wide statistical bounds (several standard
//! deviations), never timings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use weft_tests::{Behavior, Client, TestProxy, upstream, within};

use crate::LIMIT;

/// Sends `total` GETs to `url` from `concurrency` keep-alive clients and counts the
/// answers by upstream name (`x-upstream`); anything but a 200 from an upstream fails.
async fn spread(
    url: &str,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<HashMap<String, usize>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (url, next) = (url.to_owned(), next.clone());
        tasks.spawn(async move {
            let client = Client::http1();
            let mut seen: HashMap<String, usize> = HashMap::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let reply = client.get(&url).await?;
                anyhow::ensure!(
                    reply.code() == 200,
                    "{url}: {} {}",
                    reply.code(),
                    reply.text()
                );
                let name = reply
                    .upstream()
                    .ok_or_else(|| anyhow::anyhow!("no x-upstream header"))?;
                *seen.entry(name.to_owned()).or_default() += 1;
            }
            anyhow::Ok(seen)
        });
    }
    let mut all: HashMap<String, usize> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        for (k, v) in done?? {
            *all.entry(k).or_default() += v;
        }
    }
    eprintln!("{url}: {all:?}");
    Ok(all)
}

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_70_30_within_5_points_over_2000_requests() -> anyhow::Result<()> {
    let a = upstream::http1("seventy").await?;
    let b = upstream::http1("thirty").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: split
        match: {{ prefix: / }}
        to: {{ seventy: 70, thirty: 30 }}
clusters:
  seventy: {{ endpoints: [{a}] }}
  thirty: {{ endpoints: [{b}] }}
"#,
        a = a.addr(),
        b = b.addr()
    ))
    .await?;
    let counts = within(
        LIMIT,
        "2000 requests",
        spread(&proxy.url("edge", "/"), 2000, 8),
    )
    .await??;
    let total: usize = counts.values().sum();
    assert_eq!(total, 2000, "{counts:?}");
    // Binomial sd is ~1 point here: 5 points is ~5 sd.
    let seventy = share(&counts, "seventy");
    assert!(
        (0.65..=0.75).contains(&seventy),
        "70/30 split gave {:.1}% / {:.1}% ({counts:?})",
        seventy * 100.0,
        share(&counts, "thirty") * 100.0
    );
    assert_eq!(a.count() + b.count(), 2000);
    Ok(())
}

fn three_endpoint_config(addrs: &[std::net::SocketAddr]) -> String {
    format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        to: pool
clusters:
  pool:
    lb: p2c-ewma
    endpoints: [{}, {}, {}]
"#,
        addrs[0], addrs[1], addrs[2]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_spreads_load_over_three_equal_upstreams() -> anyhow::Result<()> {
    let ups = [
        upstream::http1("one").await?,
        upstream::http1("two").await?,
        upstream::http1("three").await?,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr()).collect();
    let proxy = TestProxy::start(&three_endpoint_config(&addrs)).await?;
    let counts = within(
        LIMIT,
        "900 requests",
        spread(&proxy.url("edge", "/"), 900, 6),
    )
    .await??;
    for u in &ups {
        let s = share(&counts, u.name());
        // A fair share is a third; P2C with equal endpoints stays near it. The bound is
        // loose because a latency spike (2 cores, other tests running) makes peak-EWMA
        // avoid an endpoint for a while, which is what it is for.
        assert!(
            s >= 0.15,
            "{} got {:.1}% of the requests ({counts:?})",
            u.name(),
            s * 100.0
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_shifts_load_away_from_a_slow_upstream() -> anyhow::Result<()> {
    let ups = [
        upstream::http1("fast-1").await?,
        upstream::http1("fast-2").await?,
        upstream::http1("slow").await?,
    ];
    ups[2].set(Behavior::delay(Duration::from_millis(50)));
    let addrs: Vec<_> = ups.iter().map(|u| u.addr()).collect();
    let proxy = TestProxy::start(&three_endpoint_config(&addrs)).await?;
    let counts = within(
        LIMIT,
        "600 requests",
        spread(&proxy.url("edge", "/"), 600, 6),
    )
    .await??;
    let slow = share(&counts, "slow");
    // Random or round-robin picks would send it a third of the requests.
    assert!(
        slow < 0.15,
        "the slow upstream still got {:.1}% of the requests ({counts:?})",
        slow * 100.0
    );
    for fast in ["fast-1", "fast-2"] {
        assert!(
            share(&counts, fast) > 0.25,
            "{fast} got too little: {counts:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_endpoint_weights_exactly() -> anyhow::Result<()> {
    let heavy = upstream::http1("heavy").await?;
    let light = upstream::http1("light").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        to: pool
clusters:
  pool:
    lb: round-robin
    endpoints: [{{ address: "{}", weight: 3 }}, "{}"]
"#,
        heavy.addr(),
        light.addr()
    ))
    .await?;
    // Sequential, so the schedule is followed exactly: 3 to 1.
    let counts = within(
        LIMIT,
        "400 requests",
        spread(&proxy.url("edge", "/"), 400, 1),
    )
    .await??;
    assert_eq!(counts.get("heavy"), Some(&300), "{counts:?}");
    assert_eq!(counts.get("light"), Some(&100), "{counts:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_key_on_one_endpoint() -> anyhow::Result<()> {
    let ups = [
        upstream::http1("r1").await?,
        upstream::http1("r2").await?,
        upstream::http1("r3").await?,
    ];
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        to: pool
clusters:
  pool:
    lb: ring-hash
    hash_on: {{ header: x-user }}
    endpoints: [{}, {}, {}]
"#,
        ups[0].addr(),
        ups[1].addr(),
        ups[2].addr()
    ))
    .await?;
    within(LIMIT, "ring hash", async {
        let client = Client::http2();
        let url = proxy.url("edge", "/");
        let mut owners: HashMap<String, String> = HashMap::new();
        for round in 0..4 {
            for user in 0..40 {
                let key = format!("user-{user}");
                let reply = client.get_with(&url, &[("x-user", &key)]).await?;
                assert_eq!(reply.code(), 200);
                let name = reply.upstream().unwrap_or_default().to_owned();
                let owner = owners.entry(key.clone()).or_insert_with(|| name.clone());
                assert_eq!(*owner, name, "{key} moved in round {round}");
            }
        }
        let mut used: Vec<&String> = owners.values().collect();
        used.sort();
        used.dedup();
        assert!(used.len() >= 2, "40 keys all hashed to {used:?}");
        anyhow::Ok(())
    })
    .await?
}
