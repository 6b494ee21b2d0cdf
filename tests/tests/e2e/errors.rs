//! Local error responses: each failure cause gets its status, its `x-weft-error` value and
//! a short plain-text body, over HTTP/1.1 and HTTP/2.

use std::time::Duration;

use tokio::time::Instant;
use weft_tests::{Behavior, Reply, TestProxy, upstream, within};

use crate::{LIMIT, assert_local, both_clients};

fn assert_local_error(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_local(reply, status, code, what);
    let ctype = reply.header("content-type").unwrap_or_default();
    assert!(
        ctype.starts_with("text/plain"),
        "{what}: content-type {ctype:?}"
    );
    let body = std::str::from_utf8(&reply.body).expect("a text body");
    assert!(
        !body.trim().is_empty() && body.len() < 512 && !body.contains('<'),
        "{what}: body should be a short plain-text reason, got {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_status_code_and_plain_text_body() -> anyhow::Result<()> {
    let resetting = upstream::http1("resetting").await?;
    resetting.set(Behavior::reset());
    let slow = upstream::http1("slow").await?;
    slow.set(Behavior::delay(Duration::from_secs(5)));
    let closed = upstream::closed_port().await?;
    let refused = closed.addr();
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: ghost
        match: {{ prefix: /ghost }}
        to: ghost
      - name: refused
        match: {{ prefix: /refused }}
        to: refused
      - name: reset
        match: {{ prefix: /reset }}
        to: resetting
      - name: slow
        match: {{ prefix: /slow }}
        to: slow
        timeout: 300ms
clusters:
  ghost: {{ endpoints: ["nothing.invalid:80"] }}
  refused: {{ endpoints: [{refused}] }}
  resetting: {{ endpoints: [{reset}] }}
  slow: {{ endpoints: [{slow}] }}
"#,
        refused = refused,
        reset = resetting.addr(),
        slow = slow.addr(),
    ))
    .await?;
    within(LIMIT, "error responses", async {
        for client in both_clients() {
            let v = client.version();
            let reply = client.get(&proxy.url("edge", "/nowhere")).await?;
            assert_local_error(&reply, 404, "no-route", &format!("{v:?} no route"));

            let reply = client.get(&proxy.url("edge", "/ghost")).await?;
            assert_local_error(
                &reply,
                503,
                "no-healthy-upstream",
                &format!("{v:?} unresolvable endpoint"),
            );

            let reply = client.get(&proxy.url("edge", "/refused")).await?;
            assert_local_error(
                &reply,
                503,
                "upstream-connect-failure",
                &format!("{v:?} refused port"),
            );

            let before = resetting.count();
            let reply = client.get(&proxy.url("edge", "/reset")).await?;
            assert_local_error(
                &reply,
                502,
                "upstream-reset",
                &format!("{v:?} upstream closed without answering"),
            );
            assert!(
                resetting.count() > before,
                "the request reached the upstream"
            );
            // The upstream recovers: the next request gets its own answer.
            resetting.set(Behavior::default());
            let reply = client.get(&proxy.url("edge", "/reset/after")).await?;
            assert_eq!(reply.code(), 200, "{v:?}: after a reset");
            assert_eq!(reply.seen_path(), Some("/reset/after"));
            resetting.set(Behavior::reset());

            let started = Instant::now();
            let reply = client.get(&proxy.url("edge", "/slow")).await?;
            assert_local_error(&reply, 504, "upstream-timeout", &format!("{v:?} timeout"));
            // Coarse sanity only: the 300ms timeout, not the upstream's 5s delay.
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{v:?}: the timeout did not cut the 5s upstream delay short ({:?})",
                started.elapsed()
            );
            // The late answer to the timed-out request never reaches a later request.
            slow.set(Behavior::default());
            let reply = client.get(&proxy.url("edge", "/slow/after")).await?;
            assert_eq!(reply.code(), 200, "{v:?}: after a timeout");
            assert_eq!(reply.seen_path(), Some("/slow/after"), "{v:?}");
            slow.set(Behavior::delay(Duration::from_secs(5)));
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_a_body_to_a_resetting_upstream_is_a_502() -> anyhow::Result<()> {
    let resetting = upstream::http1("resetting").await?;
    resetting.set(Behavior::reset());
    let proxy = crate::edge_to(&resetting).await?;
    within(LIMIT, "reset with a body", async {
        for client in both_clients() {
            let reply = client
                .post(&proxy.url("edge", "/upload"), vec![7u8; 64 * 1024])
                .await?;
            assert_local_error(
                &reply,
                502,
                "upstream-reset",
                "POST to a resetting upstream",
            );
        }
        anyhow::Ok(())
    })
    .await?
}
