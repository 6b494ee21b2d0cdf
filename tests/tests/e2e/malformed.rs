//! Malformed input: garbage on the HTTP listener gets a 400 or a closed connection and
//! the proxy keeps serving; an oversized header block gets 431 on HTTP/1.1.

use std::time::Duration;

use weft_tests::client::raw_exchange;
use weft_tests::{Client, TestProxy, Upstream, upstream, within};

use crate::{LIMIT, both_clients, edge_to};

async fn setup() -> anyhow::Result<(Upstream, TestProxy)> {
    let up = upstream::http1("fine").await?;
    let proxy = edge_to(&up).await?;
    Ok((up, proxy))
}

async fn still_serving(proxy: &TestProxy, after: &str) -> anyhow::Result<()> {
    for client in both_clients() {
        let reply = client.get(&proxy.url("edge", "/ok")).await?;
        assert_eq!(reply.code(), 200, "{:?} after {after}", client.version());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_400_or_a_closed_connection_and_serving_goes_on() -> anyhow::Result<()> {
    let (up, proxy) = setup().await?;
    let addr = proxy.addr("edge");
    let cases: &[(&str, &[u8])] = &[
        ("binary noise", b"\x00\x01\x02\xff\xfe\x80garbage\r\n\r\n"),
        (
            "TLS hello on a cleartext port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ),
        (
            "header without a colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        ),
        ("unknown version", b"GET / HTTP/7.3\r\nHost: x\r\n\r\n"),
        ("space in the method", b"G T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "bad content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        ),
        (
            "two content-lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "half an HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        ),
    ];
    within(LIMIT, "garbage", async {
        for (what, bytes) in cases {
            let reply = raw_exchange(addr, bytes, Duration::from_secs(5), 65536).await?;
            let text = reply.text();
            assert!(
                text.starts_with("HTTP/1.1 400") || (reply.bytes.is_empty() && reply.closed),
                "{what}: want a 400 or a closed connection, got {text:?} (closed: {})",
                reply.closed
            );
            still_serving(&proxy, what).await?;
        }
        // A valid HTTP/2 preface followed by a SETTINGS frame of an impossible length
        // (5, not a multiple of 6): a connection error, so GOAWAY and close, and nothing
        // else suffers.
        let mut h2_garbage = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2_garbage.extend_from_slice(&[0, 0, 5, 0x4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]);
        let reply = raw_exchange(addr, &h2_garbage, Duration::from_secs(5), 65536).await?;
        assert!(reply.closed, "the HTTP/2 connection with garbage is closed");
        still_serving(&proxy, "HTTP/2 garbage").await?;
        assert!(
            up.requests().iter().all(|r| r.path_and_query == "/ok"),
            "garbage reached the upstream: {:?}",
            up.requests()
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_block_gets_431() -> anyhow::Result<()> {
    let (up, proxy) = setup().await?;
    within(LIMIT, "oversized headers", async {
        let url = proxy.url("edge", "/big");
        // Well under the 60 KiB default: passes.
        let medium = "m".repeat(20 * 1024);
        let reply = Client::http1()
            .get_with(&url, &[("x-medium", &medium)])
            .await?;
        assert_eq!(reply.code(), 200);
        assert_eq!(
            up.last().and_then(|r| r.header("x-medium").map(str::len)),
            Some(medium.len())
        );

        // Far over it: 431 on HTTP/1.1.
        let big = "b".repeat(200 * 1024);
        let reply = Client::http1().get_with(&url, &[("x-big", &big)]).await?;
        assert_eq!(reply.code(), 431, "{}", reply.text());

        // HTTP/2: refused one way or another (a 431 or a stream error), never forwarded.
        let before = up.count();
        match Client::http2().get_with(&url, &[("x-big", &big)]).await {
            Ok(reply) => assert_eq!(reply.code(), 431, "{}", reply.text()),
            Err(e) => eprintln!("HTTP/2 oversized headers refused: {e:#}"),
        }
        assert_eq!(
            up.count(),
            before,
            "the oversized request reached the upstream"
        );
        still_serving(&proxy, "oversized headers").await?;
        anyhow::Ok(())
    })
    .await?
}
