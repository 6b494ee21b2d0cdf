//! A response head on the wire, and the framing of its body (RFC 9112 section 6.3):
//! what [`head`] writes is decided by [`framing`], a pure function of the request
//! method, status, protocol version and what is known of the body's length.

use http::header::{self, HeaderMap};
use http::{StatusCode, response};

use crate::http::wire;

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (a `HEAD` answer, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    UntilClose,
}

/// The body's framing, and the `content-length` to announce.
///
/// `header_len` gives the response's own `content-length` (a `HEAD` answer or a 304
/// announces the length the body would have had); it is asked only where it matters
/// (finding it costs a header lookup and a parse). `body_len` is the body's exact
/// length when known, which wins for a body that is sent.
pub fn framing(
    head_request: bool,
    status: StatusCode,
    http10: bool,
    header_len: impl FnOnce() -> Option<u64>,
    body_len: Option<u64>,
) -> (Framing, Option<u64>) {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return (Framing::Empty, None);
    }
    if status == StatusCode::NOT_MODIFIED {
        return (Framing::Empty, header_len());
    }
    if head_request {
        return (Framing::Empty, header_len().or(body_len.filter(|n| *n > 0)));
    }
    match body_len.or_else(header_len) {
        Some(n) => (Framing::Length(n), Some(n)),
        None if http10 => (Framing::UntilClose, None),
        None => (Framing::Chunked, None),
    }
}

/// Writes the status line and headers of `parts` into `out`, with the framing and
/// `connection` headers this server decides (any the response carries are replaced).
/// Returns the body's framing and whether the connection stays open afterwards.
pub fn head(
    parts: &response::Parts,
    head_request: bool,
    http10: bool,
    body_len: Option<u64>,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = parts.status;
    if !http10 && status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        // A reason must be written: many parsers expect one.
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let (framing, length) = framing(
        head_request,
        status,
        http10,
        || header_length(&parts.headers),
        body_len,
    );
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        wire::header_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(n) = length {
        wire::header_line(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    let keep = keep_alive && framing != Framing::UntilClose;
    // HTTP/1.1 stays open unless told; HTTP/1.0 closes unless told.
    if http10 && keep {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    } else if !http10 && !keep {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep)
}

/// The response's own `content-length`, if it has one usable value.
fn header_length(h: &HeaderMap) -> Option<u64> {
    h.get_all(header::CONTENT_LENGTH)
        .iter()
        .try_fold(None, |acc, v| {
            wire::fold_content_length(Ok(acc), v.as_bytes())
        })
        .ok()
        .flatten()
}
