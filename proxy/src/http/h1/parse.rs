//! A request head, from bytes to a request: [`scan`] finds the head and decides what
//! the connection does with it (serve it here, hand the connection to hyper, or refuse
//! it) without allocating; [`build`] then cuts the head from the buffer and makes the
//! `http::Request`, its header values sharing the head's bytes.
//!
//! The checks are hyper's server's (RFC 9112 sections 3 and 6): one `content-length`
//! value however often repeated, `transfer-encoding` only on HTTP/1.1 and only with
//! `chunked` last, and a request with both is not kept alive.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use crate::http::wire;

/// Most header lines a request may have (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Longest request target accepted (hyper's limit).
const MAX_URI_LEN: usize = u16::MAX as usize - 1;

/// Why a request head is refused; the connection answers and closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// 400, with the reason.
    Bad(&'static str),
    /// 431: the head is larger than the listener allows, or has too many lines.
    TooLarge,
    /// 414.
    UriTooLong,
}

/// What [`scan`] found at the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// Not a whole head yet.
    Partial,
    /// A request this module serves: no body, or a `content-length` body that is
    /// already in the buffer.
    Serve(Facts),
    /// A request only hyper's server handles: an `Upgrade` or `CONNECT` tunnel,
    /// `Expect: 100-continue`, a chunked body, or a body still to arrive. The
    /// connection goes to hyper from this request on, with the buffer unconsumed.
    HandOff,
}

/// What serving a request needs to know beyond the request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Length of the head in the buffer.
    pub head_len: usize,
    /// Offset and length of the method in the head (empty lines may come first).
    pub method: (usize, usize),
    /// Offset and length of the request target in the head.
    pub target: (usize, usize),
    /// Length of the body that follows it.
    pub body_len: usize,
    /// The client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `HTTP/1.0`.
    pub http10: bool,
}

/// Offsets of one header line in the buffer: name start, name length, value start,
/// value length.
pub type Span = (usize, usize, usize, usize);

/// Looks for a request head at the front of `buf` (at most `max_head` bytes) and
/// decides what to do with it. Header offsets go to `spans` (reused per connection).
pub fn scan(buf: &[u8], max_head: usize, spans: &mut Vec<Span>) -> Result<Scanned, Reject> {
    spans.clear();
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err(Reject::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Scanned::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooLarge),
        Err(httparse::Error::Version) => return Err(Reject::Bad("unsupported HTTP version")),
        Err(httparse::Error::Token) if req.method.is_none() => {
            return Err(Reject::Bad("invalid method"));
        }
        Err(httparse::Error::Token) => return Err(Reject::Bad("invalid request target")),
        Err(_) => return Err(Reject::Bad("malformed request head")),
    };
    if head_len > max_head {
        return Err(Reject::TooLarge);
    }
    if req.path.map_or(0, str::len) > MAX_URI_LEN {
        return Err(Reject::UriTooLong);
    }
    let http11 = req.version == Some(1);
    let mut keep_alive = http11;
    let mut saw_close = false;
    let mut te: Option<bool> = None;
    let mut length: Result<Option<u64>, &'static str> = Ok(None);
    let mut hand_off = req.method == Some("CONNECT");
    let base = buf.as_ptr() as usize;
    for h in req.headers.iter() {
        spans.push((
            h.name.as_ptr() as usize - base,
            h.name.len(),
            h.value.as_ptr() as usize - base,
            h.value.len(),
        ));
        let (name, value) = (h.name.as_bytes(), h.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            length = wire::fold_content_length(length, value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !http11 {
                return Err(Reject::Bad("transfer-encoding in an HTTP/1.0 request"));
            }
            te = Some(wire::last_coding_is_chunked(value).unwrap_or(false));
        } else if name.eq_ignore_ascii_case(b"connection") {
            // Once any line asks to close, a later `keep-alive` does not undo it.
            if saw_close || wire::has_token(value, b"close") {
                saw_close = true;
                keep_alive = false;
            } else if !http11 {
                keep_alive = wire::has_token(value, b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            hand_off |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            hand_off |= http11;
        }
    }
    let body_len = match te {
        Some(false) => return Err(Reject::Bad("transfer-encoding without chunked last")),
        // Chunked (with or without a content-length, which it overrides): hyper's.
        Some(true) => return Ok(Scanned::HandOff),
        None => match length {
            Ok(n) => n.unwrap_or(0),
            Err(why) => return Err(Reject::Bad(why)),
        },
    };
    if hand_off || body_len > (buf.len() - head_len) as u64 {
        return Ok(Scanned::HandOff);
    }
    Ok(Scanned::Serve(Facts {
        head_len,
        method: req
            .method
            .map_or((0, 0), |m| (m.as_ptr() as usize - base, m.len())),
        target: req
            .path
            .map_or((0, 0), |p| (p.as_ptr() as usize - base, p.len())),
        // At most the buffer's length, so it fits.
        body_len: usize::try_from(body_len).unwrap_or(usize::MAX),
        keep_alive,
        http10: !http11,
    }))
}

/// Whether `bytes` hold the blank line that ends a head (`\n\n` or `\n\r\n`).
pub fn may_end_head(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .any(|(i, _)| matches!(&bytes[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// Cuts the head and body that [`scan`] found from `buf` and makes the request, its
/// header map taken from `headers` (a cleared map with room, reused per connection).
pub fn build(
    buf: &mut BytesMut,
    facts: &Facts,
    spans: &[Span],
    mut headers: HeaderMap,
) -> Result<Request<Bytes>, Reject> {
    let head = buf.split_to(facts.head_len).freeze();
    let body = buf.split_to(facts.body_len).freeze();
    let (ms, ml) = facts.method;
    let method =
        Method::from_bytes(&head[ms..ms + ml]).map_err(|_| Reject::Bad("invalid method"))?;
    let (ts, tl) = facts.target;
    let uri = Uri::from_maybe_shared(head.slice(ts..ts + tl))
        .map_err(|_| Reject::Bad("invalid request target"))?;
    headers.reserve(spans.len());
    for &(ns, nl, vs, vl) in spans {
        let name = HeaderName::from_bytes(&head[ns..ns + nl])
            .map_err(|_| Reject::Bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
            .map_err(|_| Reject::Bad("invalid header value"))?;
        headers.append(name, value);
    }
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if facts.http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    Ok(req)
}
