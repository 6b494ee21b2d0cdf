//! Tests of the HTTP/1.1 client codec: tables for the pure parts (head parsing, framing,
//! chunked decoding, request encoding) and real sockets for an exchange.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// [`send`] for a whole request (the tests build requests whole).
async fn send_req(
    conn: Conn,
    req: Request<Body>,
    release: Arc<dyn Release>,
) -> Result<http::Response<Body>, SendError> {
    let (parts, body) = req.into_parts();
    let head = RequestHead::from_parts(parts);
    send(
        conn,
        &head,
        &HeaderValue::from_static("fallback"),
        body,
        release,
    )
    .await
}

fn head(text: &str) -> Result<Option<Head>, &'static str> {
    let mut buf = BytesMut::from(text.as_bytes());
    parse_head(&mut buf, &mut Vec::new())
}

#[test]
fn head_table() {
    // (response head, status, keep-alive, `connection` left in the map: only when it
    // names other headers, for the hop-by-hop removal to find them)
    let cases: &[(&str, u16, bool, bool)] = &[
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            200,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            200,
            false,
            false,
        ),
        (
            "HTTP/1.1 503 Busy\r\nconnection: keep-alive, Close\r\n\r\n",
            503,
            false,
            false,
        ),
        ("HTTP/1.0 200 OK\r\n\r\n", 200, false, false),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
            200,
            true,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\n\r\n",
            200,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n",
            200,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: upgrade, ,\r\n\r\n",
            200,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\n\r\n",
            200,
            true,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: x-secret, close\r\n\r\n",
            200,
            false,
            true,
        ),
        ("HTTP/1.1 204 No Content\r\n\r\n", 204, true, false),
    ];
    for (text, status, keep_alive, connection_kept) in cases {
        let h = head(text).unwrap().unwrap();
        assert_eq!(h.status.as_u16(), *status, "{text:?}");
        assert_eq!(h.keep_alive, *keep_alive, "{text:?}");
        assert_eq!(
            h.headers.contains_key(http::header::CONNECTION),
            *connection_kept,
            "{text:?}"
        );
        // hyper parses the connection's next request into this map: room for a
        // browser's headers and the forwarding ones, so that it never grows.
        assert!(h.headers.capacity() >= RESPONSE_MAP_ROOM, "{text:?}");
    }
    assert!(
        head("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none(),
        "partial head"
    );
    assert!(head("HTTP/1.1 2x0 OK\r\n\r\n").is_err(), "bad status");
    assert!(head("garbage\r\n\r\n").is_err());
    let many = format!(
        "HTTP/1.1 200 OK\r\n{}\r\n",
        "x: y\r\n".repeat(MAX_HEADERS + 1)
    );
    assert_eq!(head(&many).err(), Some("too many response headers"));
}

#[test]
fn head_keeps_values_and_the_rest_of_the_buffer() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nServer: t\r\n\r\nBODY"[..]);
    let h = parse_head(&mut buf, &mut Vec::new()).unwrap().unwrap();
    let all: Vec<&str> = h
        .headers
        .get_all("x-a")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(all, ["1", "2"]);
    assert_eq!(h.headers["server"], "t");
    assert_eq!(&buf[..], b"BODY");
}

#[test]
fn framing_table() {
    use RespFraming as F;
    // (head request?, response head, expected framing or error)
    let cases: &[(bool, &str, Result<F, &str>)] = &[
        (
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Ok(F::Length(5)),
        ),
        (
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Ok(F::Empty),
        ),
        (
            true,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Ok(F::Empty),
        ),
        (
            false,
            "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            Ok(F::Empty),
        ),
        (false, "HTTP/1.1 304 Not Modified\r\n\r\n", Ok(F::Empty)),
        (
            false,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Ok(F::Chunked(Chunk::Size)),
        ),
        (
            false,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
            Ok(F::Chunked(Chunk::Size)),
        ),
        (
            false,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Ok(F::UntilClose),
        ),
        (false, "HTTP/1.1 200 OK\r\n\r\n", Ok(F::UntilClose)),
        (
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n",
            Ok(F::Length(7)),
        ),
        (
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-length: 8\r\n\r\n",
            Err("conflicting content-length values"),
        ),
        (
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            Err("invalid content-length"),
        ),
        (
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
            Err("invalid content-length"),
        ),
    ];
    for (head_req, text, want) in cases {
        let h = head(text).unwrap().unwrap();
        assert_eq!(response_framing(*head_req, &h), *want, "{text:?}");
    }
}

/// Runs the chunked decoder over `input` fed in pieces of `step` bytes.
fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), &'static str> {
    let mut buf = BytesMut::new();
    let mut state = Chunk::Size;
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match decode_chunk(state, &mut buf)? {
            Step::Data(d, next) => {
                out.extend_from_slice(&d);
                state = next;
            }
            Step::Next(next) => state = next,
            Step::End(trailers) => return Ok((out, trailers)),
            Step::NeedMore => {
                if fed >= input.len() {
                    return Err("input ended");
                }
                let end = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
        }
    }
}

/// (chunked input, decoded body or the error)
type ChunkCase = (&'static [u8], Result<&'static [u8], &'static str>);

#[test]
fn chunked_table() {
    let cases: &[ChunkCase] = &[
        (b"5\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
        (
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            Ok(b"hello world"),
        ),
        (b"A\r\n0123456789\r\n0\r\n\r\n", Ok(b"0123456789")),
        (b"0\r\n\r\n", Ok(b"")),
        (b"zz\r\nhello\r\n0\r\n\r\n", Err("invalid chunk size")),
        (
            b"5\r\nhelloXX0\r\n\r\n",
            Err("chunk data not followed by CRLF"),
        ),
        (b"\r\n", Err("invalid chunk size")),
        (b"5\r\nhel", Err("input ended")),
    ];
    for (input, want) in cases {
        for step in [1, 3, 1000] {
            let got = decode_all(input, step).map(|(d, _)| d);
            let want: Result<Vec<u8>, &str> = want.map(<[u8]>::to_vec);
            assert_eq!(got, want, "{input:?} step {step}");
        }
    }
    let (data, trailers) =
        decode_all(b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t: y\r\n\r\n", 2).unwrap();
    assert_eq!(data, b"abc");
    let t = trailers.unwrap();
    assert_eq!(t["grpc-status"], "0");
    assert_eq!(t["x-t"], "y");
    let long = format!("{}\r\n", "1".repeat(MAX_CHUNK_LINE + 10));
    assert!(decode_all(long.as_bytes(), 4096).is_err());
}

#[test]
fn request_head_framing() {
    let encode = |method: Method, body: Body, extra: &[(&str, &str)]| {
        let mut req = Request::builder().method(method).uri("/p?q=1");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let (parts, body) = req.body(body).unwrap().into_parts();
        let mut out = Vec::new();
        let head = RequestHead::from_parts(parts);
        let framing = encode_head(
            &head,
            &HeaderValue::from_static("fallback"),
            &body,
            &mut out,
        );
        (String::from_utf8(out).unwrap(), framing)
    };
    let (text, f) = encode(Method::GET, Body::Empty, &[("host", "h")]);
    assert_eq!(text, "GET /p?q=1 HTTP/1.1\r\nhost: h\r\n\r\n");
    assert_eq!(f, ReqFraming::None);
    let (text, _) = encode(Method::POST, Body::Empty, &[]);
    assert!(text.contains("content-length: 0\r\n"), "{text}");
    // Without a Host (HTTP/1.0 clients), the endpoint's address goes as the Host.
    assert!(text.contains("host: fallback\r\n"), "{text}");
    // The body's real size wins over a client's content-length, and a client's
    // transfer-encoding never passes through.
    let (text, f) = encode(
        Method::PUT,
        Body::full("abc"),
        &[("content-length", "9"), ("transfer-encoding", "chunked")],
    );
    assert!(
        text.contains("content-length: 3\r\n") && !text.contains("9") && !text.contains("chunked"),
        "{text}"
    );
    assert_eq!(f, ReqFraming::Length);
}

/// Collects what `release` gets back.
#[derive(Default)]
struct Pool(Mutex<Vec<Conn>>);

impl Release for Pool {
    fn release(&self, conn: Conn) {
        self.0.lock().unwrap().push(conn);
    }
}

/// An upstream that reads one request head and answers `reply`, `times` times on one
/// connection.
async fn upstream(reply: &'static [u8], times: usize) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        for _ in 0..times {
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(reply).await.unwrap();
        }
    });
    addr
}

fn get() -> Request<Body> {
    Request::builder()
        .uri("/")
        .header("host", "t")
        .body(Body::Empty)
        .unwrap()
}

#[tokio::test]
async fn chunked_exchange_and_connection_reuse() {
    let addr = upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        2,
    )
    .await;
    let pool = Arc::new(Pool::default());
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let resp = send_req(conn, get(), pool.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"abcde");
    // Read to the end: the connection is back and carries a second exchange.
    let conn = pool.0.lock().unwrap().pop().expect("released");
    assert!(conn.is_usable());
    let resp = send_req(conn, get(), pool.clone()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"abcde");
}

#[tokio::test]
async fn close_delimited_bodies_are_not_reused() {
    let addr = upstream(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
        1,
    )
    .await;
    let pool = Arc::new(Pool::default());
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let resp = send_req(conn, get(), pool.clone()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"until the end");
    assert!(pool.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_closed_connection_gives_a_retriable_error_only_for_idempotent_requests() {
    for (method, retriable) in [(Method::GET, true), (Method::POST, false)] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            // Close without answering, as an upstream whose keep-alive timer fired.
        });
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let req = Request::builder()
            .method(method.clone())
            .uri("/")
            .body(Body::Empty)
            .unwrap();
        let err = send_req(conn, req, Arc::new(Pool::default()))
            .await
            .unwrap_err();
        assert!(
            matches!(err.error, ProxyError::UpstreamReset(_)),
            "{method}"
        );
        assert_eq!(err.retry.is_some(), retriable, "{method}");
    }
}

#[tokio::test]
async fn early_hints_are_skipped_and_short_bodies_are_errors() {
    let addr = upstream(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nshort", 1).await;
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let resp = send_req(conn, get(), Arc::new(Pool::default()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.into_body().collect().await.is_err(),
        "10 bytes promised, 5 sent"
    );
}

#[tokio::test]
async fn an_unrequested_101_is_an_error_and_the_connection_is_dropped() {
    let addr = upstream(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n", 1).await;
    let pool = Arc::new(Pool::default());
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let err = send_req(conn, get(), pool.clone()).await.unwrap_err();
    assert!(matches!(err.error, ProxyError::UpstreamProtocol(_)));
    assert!(pool.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_which_is_removed() {
    let addr = upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        1,
    )
    .await;
    let pool = Arc::new(Pool::default());
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let resp = send_req(conn, get(), pool.clone()).await.unwrap();
    assert!(!resp.headers().contains_key("content-length"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    assert!(
        pool.0.lock().unwrap().is_empty(),
        "a suspect message's connection is not reused"
    );
}

#[tokio::test]
async fn a_content_length_list_goes_on_as_one_number() {
    let addr = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc", 1).await;
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let resp = send_req(conn, get(), Arc::new(Pool::default()))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get_all("content-length")
            .iter()
            .collect::<Vec<_>>(),
        ["3"]
    );
}

#[tokio::test]
async fn a_request_answered_in_part_is_not_sent_again() {
    let addr = upstream(b"HTTP/1.1 100 Continue\r\n\r\n", 1).await;
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let err = send_req(conn, get(), Arc::new(Pool::default()))
        .await
        .unwrap_err();
    assert!(err.retry.is_none(), "a 100 came back: not unanswered");
}

#[test]
fn chunk_sizes_are_hex_digits_only() {
    for bad in [
        &b" 5\r\nhello\r\n0\r\n\r\n"[..],
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            decode_all(bad, 100).map(|(d, _)| d),
            Err("invalid chunk size"),
            "{bad:?}"
        );
    }
    assert_eq!(
        decode_all(b"5 ;x=y\r\nhello\r\n0\r\n\r\n", 100).unwrap().0,
        b"hello"
    );
}
