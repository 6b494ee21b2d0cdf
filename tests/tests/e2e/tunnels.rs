//! Byte streams through the proxy: WebSocket upgrades, TCP listeners and terminated
//! `CONNECT` tunnels, each against an echo server.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use weft_tests::client::{read_head, read_some};
use weft_tests::{TestProxy, upstream, within};

use crate::LIMIT;

/// Writes `msg` and reads back exactly as many bytes.
async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back)).await??;
    Ok(back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_echo_through_the_proxy() -> anyhow::Result<()> {
    let echo = upstream::ws_echo().await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: /ws }}
        to: echo
clusters:
  echo: {{ endpoints: [{}] }}
"#,
        echo.addr()
    ))
    .await?;
    within(LIMIT, "websocket echo", async {
        let url = format!("ws://{}/ws/chat", proxy.addr("edge"));
        let (mut ws, resp) = tokio_tungstenite::connect_async(url.as_str()).await?;
        assert_eq!(resp.status(), 101);
        for i in 0..5 {
            let text = format!("message {i}");
            ws.send(Message::text(text.clone())).await?;
            let back = ws.next().await.expect("an echo")?;
            assert_eq!(back, Message::text(text));
        }
        let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        ws.send(Message::binary(blob.clone())).await?;
        let back = ws.next().await.expect("an echo")?;
        assert_eq!(back, Message::binary(blob));
        ws.close(None).await?;
        // The echo server answers the close; the stream then ends.
        while let Some(msg) = ws.next().await {
            if msg.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_proxies_bytes_both_ways() -> anyhow::Result<()> {
    let echo = upstream::tcp_echo().await?;
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: tcp
    address: 127.0.0.1:0
    protocol: tcp
    to: echo
clusters:
  echo: {{ endpoints: [{}] }}
"#,
        echo.addr()
    ))
    .await?;
    within(LIMIT, "tcp echo", async {
        let mut conns = Vec::new();
        for c in 0..3 {
            let mut s = TcpStream::connect(proxy.addr("tcp")).await?;
            for i in 0..5 {
                let msg = format!("conn {c} line {i}\n");
                assert_eq!(round_trip(&mut s, msg.as_bytes()).await?, msg.as_bytes());
            }
            conns.push(s);
        }
        let big: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let mut s = conns.pop().expect("a connection");
        let (mut r, mut w) = s.split();
        let write = async {
            w.write_all(&big).await?;
            anyhow::Ok(())
        };
        let read = async {
            let mut back = vec![0u8; big.len()];
            r.read_exact(&mut back).await?;
            anyhow::Ok(back)
        };
        let (wrote, back) = tokio::join!(write, read);
        wrote?;
        assert!(back? == big, "1 MiB came back intact");
        assert_eq!(echo.connections(), 3);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_with_a_refused_upstream_closes_the_connection() -> anyhow::Result<()> {
    let closed = upstream::closed_port().await?;
    let refused = closed.addr();
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: tcp
    address: 127.0.0.1:0
    protocol: tcp
    to: dead
clusters:
  dead: {{ endpoints: [{refused}] }}
"#
    ))
    .await?;
    within(LIMIT, "tcp to a refused port", async {
        let mut s = TcpStream::connect(proxy.addr("tcp")).await?;
        let _ = s.write_all(b"hello?").await;
        let reply = read_some(&mut s, Duration::from_secs(5), 1024).await?;
        assert!(
            reply.closed && reply.bytes.is_empty(),
            "the client connection is closed: {reply:?}"
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel_reaches_the_cluster() -> anyhow::Result<()> {
    let echo = upstream::tcp_echo().await?;
    let closed = upstream::closed_port().await?;
    let refused = closed.addr();
    let proxy = TestProxy::start(&format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    virtual_hosts:
      - domains: ["dead.internal:443"]
        routes:
          - match: {{ connect: true }}
            to: dead
      - domains: ["*"]
        routes:
          - match: {{ connect: true }}
            to: echo
          - match: {{ prefix: / }}
            respond: {{ status: 200, body: "plain request" }}
clusters:
  echo: {{ endpoints: [{}] }}
  dead: {{ endpoints: [{refused}] }}
"#,
        echo.addr()
    ))
    .await?;
    within(LIMIT, "CONNECT tunnel", async {
        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        s.write_all(b"CONNECT echo.internal:443 HTTP/1.1\r\nHost: echo.internal:443\r\n\r\n")
            .await?;
        let head = read_head(&mut s, Duration::from_secs(5)).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        for i in 0..5 {
            let msg = format!("through the tunnel {i}\n");
            assert_eq!(round_trip(&mut s, msg.as_bytes()).await?, msg.as_bytes());
        }
        assert_eq!(echo.connections(), 1);

        // A tunnel whose endpoint refuses: a 503 before any tunnel exists.
        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        s.write_all(b"CONNECT dead.internal:443 HTTP/1.1\r\nHost: dead.internal:443\r\n\r\n")
            .await?;
        let head = read_head(&mut s, Duration::from_secs(5)).await?;
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            head.contains("x-weft-error: upstream-connect-failure"),
            "{head}"
        );

        // Ordinary requests on the same listener are not tunnelled.
        let reply = weft_tests::Client::http1()
            .get(&proxy.url("edge", "/x"))
            .await?;
        assert_eq!(reply.text(), "plain request");
        anyhow::Ok(())
    })
    .await?
}
