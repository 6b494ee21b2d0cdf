//! The HTTP/1.1 server loop (`proxy/src/http/h1`) on raw sockets: pipelined requests,
//! `HEAD`, HTTP/1.0 keep-alive, the hand-off to hyper in the middle of a connection
//! (chunked bodies, `Expect: 100-continue`), heads split across reads, the header
//! timeout (from a head's first byte, not between requests), refused heads, and a
//! client that leaves while its request is in flight.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::client::{raw_exchange, read_head, read_some};
use weft_tests::pattern::PatternCheck;
use weft_tests::{Behavior, TestProxy, Upstream, eventually, upstream, within};

use crate::{LIMIT, edge_to};

const READ: Duration = Duration::from_secs(5);

async fn setup() -> anyhow::Result<(Upstream, TestProxy)> {
    let up = upstream::http1("loop").await?;
    let proxy = edge_to(&up).await?;
    Ok((up, proxy))
}

/// Reads one response (head, then a `content-length` body) from `s`.
async fn response(s: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let head = read_head(s, READ).await?;
    let len = header(&head, "content-length")
        .ok_or_else(|| anyhow::anyhow!("no content-length: {head}"))?
        .parse::<usize>()?;
    let mut body = vec![0u8; len];
    tokio::time::timeout(READ, s.read_exact(&mut body)).await??;
    Ok((head, body))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() -> anyhow::Result<()> {
    let (up, proxy) = setup().await?;
    within(LIMIT, "pipelined", async {
        let reply = raw_exchange(
            proxy.addr("edge"),
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            READ,
            1 << 20,
        )
        .await?;
        let text = reply.text();
        assert!(
            reply.closed,
            "closed after the `Connection: close` request: {text}"
        );
        let seen: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("x-seen-path: "))
            .collect();
        assert_eq!(seen, ["/one", "/two", "/three"], "{text}");
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
        assert!(text.contains("connection: close"), "{text}");
        let posted = up
            .requests()
            .into_iter()
            .find(|r| r.path_and_query == "/two");
        assert_eq!(posted.map(|r| r.body_len), Some(5));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_goes_on_after_the_hand_off_to_hyper() -> anyhow::Result<()> {
    let (up, proxy) = setup().await?;
    within(LIMIT, "hand-off", async {
        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        s.write_all(b"GET /mine HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        let (head, _) = response(&mut s).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // A chunked body is hyper's: the connection is handed over with the bytes read.
        s.write_all(
            b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await?;
        let (head, _) = response(&mut s).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "x-seen-path"), Some("/chunked"));
        // `Expect: 100-continue`: the interim answer first, then the body is sent.
        s.write_all(
            b"PUT /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .await?;
        let interim = read_head(&mut s, READ).await?;
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        s.write_all(b"data").await?;
        let (head, _) = response(&mut s).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // And plain requests still work on the same connection.
        s.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        let (head, _) = response(&mut s).await?;
        assert_eq!(header(&head, "x-seen-path"), Some("/after"), "{head}");
        let lens: Vec<(String, u64)> = up
            .requests()
            .into_iter()
            .map(|r| (r.path_and_query, r.body_len))
            .collect();
        assert_eq!(
            lens,
            [
                ("/mine".to_owned(), 0),
                ("/chunked".to_owned(), 11),
                ("/expect".to_owned(), 4),
                ("/after".to_owned(), 0)
            ]
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_have_no_body_and_http10_keeps_alive_when_asked() -> anyhow::Result<()> {
    let (up, proxy) = setup().await?;
    up.set(Behavior::stream(1000));
    within(LIMIT, "HEAD and HTTP/1.0", async {
        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        s.write_all(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n").await?;
        let head = read_head(&mut s, READ).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "content-length"), Some("1000"), "{head}");
        // No body followed: the next response starts right where this head ended.
        s.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        let (head, body) = response(&mut s).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), 1000);

        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        for path in ["/old1", "/old2"] {
            s.write_all(
                format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            let (head, _) = response(&mut s).await?;
            assert!(head.starts_with("HTTP/1.0 200"), "{head}");
            assert_eq!(header(&head, "connection"), Some("keep-alive"), "{head}");
        }
        s.write_all(b"GET /old3 HTTP/1.0\r\nHost: a\r\n\r\n")
            .await?;
        let rest = read_some(&mut s, READ, 1 << 20).await?;
        assert!(
            rest.closed,
            "HTTP/1.0 without keep-alive closes: {}",
            rest.text()
        );
        assert!(rest.text().starts_with("HTTP/1.0 200"), "{}", rest.text());
        anyhow::Ok(())
    })
    .await?
}

/// Large response bodies, with a length and chunked, arrive whole: frames big enough to
/// be written from their own buffers (not copied) interleave correctly with the
/// framing the loop writes around them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_arrive_whole_in_both_framings() -> anyhow::Result<()> {
    const SIZE: u64 = 3 << 20;
    let (up, proxy) = setup().await?;
    within(LIMIT, "large bodies", async {
        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        up.set(Behavior::stream(SIZE));
        s.write_all(b"GET /sized HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        let (head, body) = response(&mut s).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut check = PatternCheck::new();
        check.update(&body);
        assert!(
            check.len() == SIZE && check.ok(),
            "{head} {:?}",
            check.first_mismatch()
        );

        up.set(Behavior::stream_chunked(SIZE));
        s.write_all(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        let head = read_head(&mut s, READ).await?;
        assert_eq!(
            header(&head, "transfer-encoding"),
            Some("chunked"),
            "{head}"
        );
        let mut check = PatternCheck::new();
        loop {
            let line = read_line(&mut s).await?;
            let n = usize::from_str_radix(line.trim(), 16)?;
            let mut data = vec![0u8; n + 2];
            tokio::time::timeout(READ, s.read_exact(&mut data)).await??;
            if n == 0 {
                assert_eq!(data, b"\r\n", "no trailers, then the end");
                break;
            }
            assert_eq!(&data[n..], b"\r\n", "chunk of {n} ends with CRLF");
            check.update(&data[..n]);
        }
        assert!(
            check.len() == SIZE && check.ok(),
            "{:?}",
            check.first_mismatch()
        );
        // The connection is still in step for the next request.
        up.set(Behavior::default());
        s.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        let (head, _) = response(&mut s).await?;
        assert_eq!(header(&head, "x-seen-path"), Some("/after"), "{head}");
        anyhow::Ok(())
    })
    .await?
}

/// Reads one CRLF-terminated line, byte by byte.
async fn read_line(s: &mut TcpStream) -> anyhow::Result<String> {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(READ, s.read(&mut b)).await??;
        anyhow::ensure!(
            n == 1,
            "closed inside a line: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// A listener that is drained (here: removed by a reload) lets the request in flight
/// finish, says `connection: close` on its response and closes; an idle connection is
/// closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_listener_finishes_the_request_in_flight_then_closes() -> anyhow::Result<()> {
    let (up, proxy) = setup().await?;
    up.set(Behavior::delay(Duration::from_millis(800)));
    within(LIMIT, "drain", async {
        let mut idle = TcpStream::connect(proxy.addr("edge")).await?;
        idle.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        response(&mut idle).await?;
        let mut busy = TcpStream::connect(proxy.addr("edge")).await?;
        busy.write_all(b"GET /inflight HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        eventually(Duration::from_secs(10), "request upstream", async || {
            up.requests()
                .iter()
                .any(|r| r.path_and_query == "/inflight")
        })
        .await?;
        // The listener `edge` goes away: its connections drain.
        proxy.rewrite_config(&format!(
            "listeners:\n  - name: other\n    address: 127.0.0.1:0\n    routes:\n      \
             - match: {{ prefix: / }}\n        to: loop\n\
             clusters:\n  loop: {{ endpoints: [{}] }}\n",
            up.addr()
        ))?;
        proxy.reload().await?;
        let (head, _) = response(&mut busy).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "connection"), Some("close"), "{head}");
        let rest = read_some(&mut busy, READ, 1024).await?;
        assert!(rest.closed && rest.bytes.is_empty(), "{}", rest.text());
        let rest = read_some(&mut idle, READ, 1024).await?;
        assert!(rest.closed && rest.bytes.is_empty(), "{}", rest.text());
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_heads_say_why_and_close() -> anyhow::Result<()> {
    let (_up, proxy) = setup().await?;
    within(LIMIT, "refused heads", async {
        let cases: &[(&[u8], &str, &str)] = &[
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
                "HTTP/1.1 400",
                "conflicting content-length values",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                "HTTP/1.1 400",
                "transfer-encoding without chunked last",
            ),
        ];
        for (raw, status, reason) in cases {
            let reply = raw_exchange(proxy.addr("edge"), raw, READ, 1 << 16).await?;
            let text = reply.text();
            assert!(text.starts_with(status), "{text}");
            assert!(text.contains("x-weft-error: bad-request"), "{text}");
            assert!(text.contains(reason), "{text}");
            assert!(reply.closed, "{text}");
        }
        anyhow::Ok(())
    })
    .await?
}

/// The header timeout runs from a head's first byte: a head that arrives in pieces in
/// time is served, one that stalls is cut off, and a keep-alive connection may sit idle
/// between requests for longer than the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timeout_runs_from_a_heads_first_byte() -> anyhow::Result<()> {
    let up = upstream::http1("loop").await?;
    let proxy = TestProxy::start(&format!(
        r#"
static_resources:
  listeners:
    - name: edge
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: edge
                request_headers_timeout: 1s
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  name: edge
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: / }}
                          route: {{ cluster: loop }}
  clusters:
    - name: loop
      type: STATIC
      load_assignment:
        cluster_name: loop
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#,
        port = up.addr().port()
    ))
    .await?;
    within(LIMIT, "header timeout", async {
        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        s.write_all(b"GET /split HT").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"TP/1.1\r\nHost: a\r\n\r\n").await?;
        let (head, _) = response(&mut s).await?;
        assert_eq!(header(&head, "x-seen-path"), Some("/split"), "{head}");
        // A byte per write: the blank line that ends the head is found across reads.
        s.set_nodelay(true)?;
        for b in b"GET /drip HTTP/1.1\r\nHost: a\r\n\r\n" {
            s.write_all(&[*b]).await?;
            s.flush().await?;
        }
        let (head, _) = response(&mut s).await?;
        assert_eq!(header(&head, "x-seen-path"), Some("/drip"), "{head}");
        // Idle past the header timeout between two requests: still open.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.write_all(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        let (head, _) = response(&mut s).await?;
        assert_eq!(header(&head, "x-seen-path"), Some("/later"), "{head}");
        // A head begun and never finished is cut off.
        s.write_all(b"GET /stalled HTTP/1.1\r\nHost: a\r\n").await?;
        let rest = read_some(&mut s, Duration::from_secs(10), 1024).await?;
        assert!(rest.closed, "a stalled head is cut off: {}", rest.text());
        assert!(rest.bytes.is_empty(), "{}", rest.text());
        anyhow::Ok(())
    })
    .await?
}

/// A client that closes its connection while its request waits on the upstream
/// cancels the request: the proxy's upstream request ends long before the upstream
/// would have answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_request() -> anyhow::Result<()> {
    let (up, proxy) = setup().await?;
    up.set(Behavior::delay(Duration::from_secs(60)));
    within(LIMIT, "client leaves", async {
        let active = async || {
            proxy
                .metrics()
                .await
                .map(|m| m.sum("weft_upstream_requests_active", &[]))
                .unwrap_or(-1.0)
        };
        let mut s = TcpStream::connect(proxy.addr("edge")).await?;
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await?;
        eventually(Duration::from_secs(10), "request upstream", async || {
            active().await == 1.0
        })
        .await?;
        drop(s);
        eventually(Duration::from_secs(10), "request cancelled", async || {
            active().await == 0.0
        })
        .await?;
        anyhow::Ok(())
    })
    .await?
}
