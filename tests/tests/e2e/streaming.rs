//! Bodies stream through the proxy: 100 MiB up and 100 MiB down with bounded memory,
//! over HTTP/1.1 end to end and over HTTP/2 end to end.
//!
//! The bodies are generated chunk by chunk and checked by position at the far end
//! ([`weft_tests::pattern`]), so neither the test nor the upstream ever holds one whole.
//! The binary's counting allocator ([`crate::ALLOC`]) gives the peak heap growth during
//! each transfer, which must stay far below the body size. All transfers run one after
//! the other in one test so they do not inflate each other's peak; other tests running
//! at the same time add a little noise, which the bound leaves room for.

use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use weft_tests::pattern::{PatternBody, PatternCheck};
use weft_tests::{Behavior, Client, TestProxy, Upstream, client, upstream, within};

use crate::ALLOC;

const SIZE: u64 = 100 * 1024 * 1024;
/// Peak heap growth allowed during one transfer: a proxy that buffered the body would
/// need at least the 100 MiB.
const MAX_GROWTH: usize = 32 * 1024 * 1024;
/// Time for one transfer (a debug build moves 100 MiB in a second or two).
const TRANSFER_LIMIT: Duration = Duration::from_secs(60);

/// Runs `transfer` and returns its result with the peak heap growth above the level
/// before it.
async fn peak_growth<F: std::future::Future>(transfer: F) -> (F::Output, usize) {
    ALLOC.reset_peak_usage();
    let before = ALLOC.current_usage();
    let out = transfer.await;
    (out, ALLOC.peak_usage().saturating_sub(before))
}

fn mib(bytes: usize) -> usize {
    bytes / (1024 * 1024)
}

/// Uploads 100 MiB through `base` to `up`, which counts and checks the bytes.
async fn upload(client: &Client, base: &str, up: &Upstream) -> anyhow::Result<()> {
    let v = client.version();
    up.set(Behavior::default());
    let url = format!("{base}/upload");
    let (reply, growth) = peak_growth(within(
        TRANSFER_LIMIT,
        "100 MiB upload",
        client.send(
            Method::POST,
            &url,
            &[],
            client::boxed(PatternBody::new(SIZE)),
        ),
    ))
    .await;
    let reply = reply??;
    eprintln!("{v:?} upload: peak heap growth {} KiB", growth / 1024);
    assert_eq!(reply.code(), 200, "{v:?}: {}", reply.text());
    let seen = up.last().expect("the upload reached the upstream");
    assert!(
        seen.body_complete,
        "{v:?}: the upstream saw the end of the body"
    );
    assert_eq!(seen.body_len, SIZE, "{v:?}: bytes received upstream");
    assert!(seen.body_is_pattern, "{v:?}: the upload arrived intact");
    assert!(
        growth < MAX_GROWTH,
        "{v:?}: heap grew by {} MiB during a 100 MiB upload",
        mib(growth)
    );
    Ok(())
}

/// Downloads 100 MiB that `up` streams through `base`, checking them as they arrive.
async fn download(client: &Client, base: &str, up: &Upstream) -> anyhow::Result<()> {
    let v = client.version();
    up.set(Behavior::stream(SIZE));
    let url = format!("{base}/download");
    let (check, growth) = peak_growth(within(TRANSFER_LIMIT, "100 MiB download", async {
        let resp = client
            .stream(Method::GET, &url, &[], client::empty())
            .await?;
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        let mut body = resp.into_body();
        let mut check = PatternCheck::new();
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                check.update(data);
            }
        }
        anyhow::Ok(check)
    }))
    .await;
    let check = check??;
    eprintln!("{v:?} download: peak heap growth {} KiB", growth / 1024);
    assert_eq!(check.len(), SIZE, "{v:?}: bytes received by the client");
    assert!(
        check.ok(),
        "{v:?}: the download arrived corrupted at byte {:?}",
        check.first_mismatch()
    );
    assert!(
        growth < MAX_GROWTH,
        "{v:?}: heap grew by {} MiB during a 100 MiB download",
        mib(growth)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_streams_with_bounded_memory() -> anyhow::Result<()> {
    let h1 = upstream::http1("sink-h1").await?;
    let h2 = upstream::http2("sink-h2").await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: /h1 }}
        to: sink-h1
      - match: {{ prefix: /h2 }}
        to: sink-h2
clusters:
  sink-h1: {{ endpoints: [{}] }}
  sink-h2: {{ endpoints: [{}], protocol: http2 }}
"#,
        h1.addr(),
        h2.addr()
    ))
    .await?;
    let legs = [
        (Client::http1(), proxy.url("edge", "/h1"), &h1),
        (Client::http2(), proxy.url("edge", "/h2"), &h2),
    ];
    for (client, base, up) in &legs {
        // Warm the pools up so that connection set-up is not counted.
        assert_eq!(client.get(&format!("{base}/warm")).await?.code(), 200);
        upload(client, base, up).await?;
        download(client, base, up).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_body_streams_both_ways_at_once() -> anyhow::Result<()> {
    let h1 = upstream::http1("echo-h1").await?;
    let h2 = upstream::http2("echo-h2").await?;
    h1.set(Behavior::echo());
    h2.set(Behavior::echo());
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: /h1 }}
        to: echo-h1
      - match: {{ prefix: /h2 }}
        to: echo-h2
clusters:
  echo-h1: {{ endpoints: [{}] }}
  echo-h2: {{ endpoints: [{}], protocol: http2 }}
"#,
        h1.addr(),
        h2.addr()
    ))
    .await?;
    // Larger than every socket and flow-control buffer on the way, so the upstream is
    // echoing the start while the client is still sending the end.
    const ECHO: u64 = 8 * 1024 * 1024;
    within(TRANSFER_LIMIT, "echo", async {
        for client in [Client::http1(), Client::http2()] {
            for (path, up) in [("/h1/echo", &h1), ("/h2/echo", &h2)] {
                let v = client.version();
                let resp = client
                    .stream(
                        Method::POST,
                        &proxy.url("edge", path),
                        &[],
                        client::boxed(PatternBody::chunked(ECHO)),
                    )
                    .await?;
                assert_eq!(resp.status(), 200, "{v:?} {path}");
                let mut body = resp.into_body();
                let mut check = PatternCheck::new();
                while let Some(frame) = body.frame().await {
                    if let Some(data) = frame?.data_ref() {
                        check.update(data);
                    }
                }
                assert_eq!(check.len(), ECHO, "{v:?} {path}: bytes echoed");
                assert!(check.ok(), "{v:?} {path}: echo corrupted");
                let seen = up.last().expect("a request");
                assert_eq!(seen.body_len, ECHO);
                assert!(seen.body_complete && seen.body_is_pattern);
            }
        }
        anyhow::Ok(())
    })
    .await?
}
