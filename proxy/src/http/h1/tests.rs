//! Table tests of the request-head decisions and the response framing.

use bytes::BytesMut;
use http::StatusCode;

use super::encode::{self, Framing};
use super::parse::{self, Reject, Scanned};

fn scan(raw: &str) -> Result<Scanned, Reject> {
    parse::scan(raw.as_bytes(), 8192, &mut Vec::new())
}

#[test]
fn request_heads_are_served_handed_off_or_refused() {
    use Scanned::{HandOff, Partial};
    let bad = |why| Err(Reject::Bad(why));
    // (request, expected outcome; for served ones: (body length, keep-alive, HTTP/1.0))
    type Want = Result<Result<(usize, bool, bool), Scanned>, Reject>;
    let serve = |b, k, h10| Ok(Ok((b, k, h10)));
    let other = |s| Ok(Err(s));
    let table: &[(&str, Want)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", serve(0, true, false)),
        (
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            serve(0, true, false),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            serve(0, false, false),
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
            serve(0, false, false),
        ),
        ("GET / HTTP/1.0\r\n\r\n", serve(0, false, true)),
        (
            "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            serve(0, true, true),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            serve(3, true, false),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabcGET",
            serve(3, true, false),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            serve(0, true, false),
        ),
        // The body is not all here yet: hyper streams it.
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            other(HandOff),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            other(HandOff),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            other(HandOff),
        ),
        (
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            other(HandOff),
        ),
        (
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            other(HandOff),
        ),
        (
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            other(HandOff),
        ),
        // HTTP/1.0 has no upgrades: the header is just a header.
        (
            "GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n",
            serve(0, false, true),
        ),
        ("GET / HTTP/1.1\r\nHost: a\r\n", other(Partial)),
        ("GET / HT", other(Partial)),
        (
            "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            bad("invalid content-length"),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            bad("invalid content-length"),
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            bad("conflicting content-length values"),
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            bad("transfer-encoding without chunked last"),
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            bad("transfer-encoding in an HTTP/1.0 request"),
        ),
        ("GET / HTTP/7.3\r\n\r\n", bad("unsupported HTTP version")),
        ("G T / HTTP/1.1\r\n\r\n", bad("unsupported HTTP version")),
        (
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            bad("malformed request head"),
        ),
        ("\x00\x01garbage\r\n\r\n", bad("invalid method")),
    ];
    for (raw, want) in table {
        let got = scan(raw).map(|s| match s {
            Scanned::Serve(f) => Ok((f.body_len, f.keep_alive, f.http10)),
            other => Err(other),
        });
        assert_eq!(&got, want, "{raw:?}");
    }
}

#[test]
fn content_length_lines_fold_into_one_value() {
    use crate::http::wire::fold_content_length as fold;
    let bad = Err("invalid content-length");
    type Folded = Result<Option<u64>, &'static str>;
    // (what earlier lines said, this line, the result)
    let table: &[(Folded, &str, Folded)] = &[
        (Ok(None), "5", Ok(Some(5))),
        (Ok(None), " 5 , 5", Ok(Some(5))),
        (Ok(Some(5)), "5", Ok(Some(5))),
        (Ok(Some(5)), "6", Err("conflicting content-length values")),
        (Ok(None), "5, 6", Err("conflicting content-length values")),
        (Ok(None), "18446744073709551615", Ok(Some(u64::MAX))),
        (Ok(None), "18446744073709551616", bad),
        (Ok(None), "", bad),
        (Ok(None), "5,", bad),
        (Ok(None), "+5", bad),
        (Ok(None), "0x5", bad),
        (bad, "5", bad),
    ];
    for (so_far, value, want) in table {
        assert_eq!(
            fold(*so_far, value.as_bytes()),
            *want,
            "{so_far:?} + {value:?}"
        );
    }
}

#[test]
fn only_a_blank_line_can_end_a_head() {
    let table: &[(&[u8], bool)] = &[
        (b"\r\n\r\n", true),
        (b"\n\n", true),
        (b"a\n\r\nb", true),
        (b"Host: a\r\n", false),
        (b"\r\n\r", false),
        (b"", false),
        (b"\n", false),
    ];
    for (bytes, want) in table {
        assert_eq!(parse::may_end_head(bytes), *want, "{bytes:?}");
    }
}

#[test]
fn oversized_heads_are_refused_with_431() {
    let long = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(scan(&long), Err(Reject::TooLarge));
    // Not yet complete, but already past the limit.
    assert_eq!(scan(&long[..8500]), Err(Reject::TooLarge));
    let many: String = (0..parse::MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    assert_eq!(
        scan(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
        Err(Reject::TooLarge)
    );
    // A listener may allow heads larger than a request target may be: 414.
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000));
    assert_eq!(
        parse::scan(long_target.as_bytes(), 128 * 1024, &mut Vec::new()),
        Err(Reject::UriTooLong)
    );
}

#[test]
fn build_makes_the_request_and_leaves_what_follows() {
    let raw = "\r\nPOST /a/b?q=1 HTTP/1.1\r\nHost: shop\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n";
    let mut spans = Vec::new();
    let Ok(Scanned::Serve(facts)) = parse::scan(raw.as_bytes(), 8192, &mut spans) else {
        panic!("not served");
    };
    let mut buf = BytesMut::from(raw);
    let req = parse::build(&mut buf, &facts, &spans, http::HeaderMap::new()).unwrap();
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri(), "/a/b?q=1");
    assert_eq!(req.version(), http::Version::HTTP_11);
    assert_eq!(req.headers()["host"], "shop");
    let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert_eq!(req.body().as_ref(), b"abc");
    assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
}

#[test]
fn response_framing_follows_rfc_9112() {
    use Framing::*;
    let (ok, nc, nm, cont) = (
        StatusCode::OK,
        StatusCode::NO_CONTENT,
        StatusCode::NOT_MODIFIED,
        StatusCode::CONTINUE,
    );
    // (HEAD request, status, HTTP/1.0, content-length header, body length) -> framing, announced
    let table = [
        (false, ok, false, None, Some(5), (Length(5), Some(5))),
        (false, ok, false, Some(5), None, (Length(5), Some(5))),
        // The body's own length is what goes out.
        (false, ok, false, Some(9), Some(5), (Length(5), Some(5))),
        (false, ok, false, None, Some(0), (Length(0), Some(0))),
        (false, ok, false, None, None, (Chunked, None)),
        (false, ok, true, None, None, (UntilClose, None)),
        (false, ok, true, None, Some(2), (Length(2), Some(2))),
        // A HEAD answer announces the length the body would have had.
        (true, ok, false, Some(1234), Some(0), (Empty, Some(1234))),
        (true, ok, false, None, Some(0), (Empty, None)),
        (true, ok, false, None, None, (Empty, None)),
        (false, nc, false, Some(5), Some(0), (Empty, None)),
        (false, nm, false, Some(5), Some(0), (Empty, Some(5))),
        (false, cont, false, None, None, (Empty, None)),
    ];
    for (i, (head, status, h10, header, body, want)) in table.into_iter().enumerate() {
        assert_eq!(
            encode::framing(head, status, h10, || header, body),
            want,
            "row {i}"
        );
    }
}

#[test]
fn response_heads_carry_our_framing_and_connection_headers() {
    let head = |status: u16, headers: &[(&str, &str)], h10, body, keep| {
        let mut resp = http::Response::new(());
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        for (n, v) in headers {
            resp.headers_mut().append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        let (_, kept) = encode::head(&parts, false, h10, body, keep, &mut out);
        (String::from_utf8(out).unwrap(), kept)
    };
    // (status, headers, HTTP/1.0, body length, keep-alive wanted, head written, kept open)
    type Row<'a> = (
        u16,
        &'a [(&'a str, &'a str)],
        bool,
        Option<u64>,
        bool,
        &'a str,
        bool,
    );
    let table: &[Row<'_>] = &[
        (
            200,
            &[("x-a", "1")],
            false,
            Some(2),
            true,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n",
            true,
        ),
        (
            404,
            &[],
            false,
            Some(0),
            false,
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            false,
        ),
        // Framing and connection headers the response carries are replaced by ours.
        (
            200,
            &[("transfer-encoding", "chunked"), ("connection", "close")],
            false,
            None,
            true,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            true,
        ),
        (
            200,
            &[],
            true,
            Some(1),
            true,
            "HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n",
            true,
        ),
        // HTTP/1.0, length unknown: the end of the connection ends the body.
        (200, &[], true, None, true, "HTTP/1.0 200 OK\r\n\r\n", false),
        (
            599,
            &[],
            false,
            Some(0),
            true,
            "HTTP/1.1 599 <none>\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
    ];
    for (status, headers, h10, body, keep, want, want_kept) in table {
        let (got, kept) = head(*status, headers, *h10, *body, *keep);
        assert_eq!(
            (got.as_str(), kept),
            (*want, *want_kept),
            "{status} {headers:?}"
        );
    }
}

/// Mutated requests (bytes flipped, cut, duplicated, spliced from other requests) never
/// panic the parser, and whatever `scan` accepts, `build` turns into a request or
/// refuses: every input ends in one of the defined outcomes. Seeded, so a failure
/// repeats.
#[test]
fn mutated_requests_end_in_a_defined_outcome() {
    let seeds: &[&[u8]] = &[
        b"GET /a?b=c HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\r\n",
        b"POST /cart/addItem HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"GET http://x/y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
        b"\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\nX: \xff\xfe\r\n\r\n",
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut spans = Vec::new();
    let mut served = 0;
    for _ in 0..20_000 {
        let mut input = seeds[rng.usize(..seeds.len())].to_vec();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..=input.len());
            match rng.u8(..5) {
                0 if at < input.len() => input[at] = rng.u8(..),
                1 => input.truncate(at),
                2 => input.insert(
                    at,
                    *rng.choice(b"\r\n :,\t\x00\x7fA0".iter()).unwrap_or(&b'x'),
                ),
                3 => {
                    let other = seeds[rng.usize(..seeds.len())];
                    let from = rng.usize(..other.len());
                    input.splice(at..at, other[from..].iter().copied());
                }
                _ => input.extend_from_slice(&input.clone()),
            }
        }
        if let Ok(Scanned::Serve(facts)) = parse::scan(&input, 4096, &mut spans) {
            served += 1;
            let mut buf = BytesMut::from(&input[..]);
            if let Ok(req) = parse::build(&mut buf, &facts, &spans, http::HeaderMap::new()) {
                assert_eq!(req.body().len(), facts.body_len);
                assert_eq!(buf.len(), input.len() - facts.head_len - facts.body_len);
            }
        }
    }
    // The mutations leave enough requests intact for `build` to be exercised.
    assert!(served > 1000, "{served}");
}
