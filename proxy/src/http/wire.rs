//! HTTP/1.1 wire pieces shared by the server side ([`super::h1`]) and the upstream
//! client ([`crate::upstream::h1`]): header-value token lists, `content-length` and
//! `transfer-encoding` reading (RFC 9112 section 6), and chunk writing. Pure functions
//! over bytes; the table tests are in `h1/tests.rs`.

use bytes::Bytes;
use http::HeaderMap;

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a `Connection`-style list names `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// `Some(last coding is chunked)` for a `transfer-encoding` value with any coding.
pub fn last_coding_is_chunked(value: &[u8]) -> Option<bool> {
    tokens(value)
        .next_back()
        .map(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// Folds one `content-length` line into what earlier lines said: a list (`5, 5`) or
/// repeated lines must all agree, and every part must be digits only.
pub fn fold_content_length(
    so_far: Result<Option<u64>, &'static str>,
    value: &[u8],
) -> Result<Option<u64>, &'static str> {
    let mut acc = so_far?;
    let mut any = false;
    for part in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        any = true;
        if part.is_empty() {
            return Err("invalid content-length");
        }
        let mut n: u64 = 0;
        for b in part {
            n = b
                .is_ascii_digit()
                .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
                .flatten()
                .ok_or("invalid content-length")?;
        }
        match acc {
            Some(l) if l != n => return Err("conflicting content-length values"),
            _ => acc = Some(n),
        }
    }
    if any {
        Ok(acc)
    } else {
        Err("invalid content-length")
    }
}

/// Appends `name: value\r\n`.
pub fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body (nothing for empty data: an empty chunk would
/// end the body).
pub fn chunk(data: &Bytes, out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    chunk_head(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the size line of a chunk of `len` bytes (its data and `\r\n` follow).
pub fn chunk_head(len: usize, out: &mut Vec<u8>) {
    let mut hex = [0u8; 16];
    let mut n = len;
    let mut i = hex.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body, with its trailers. (Trailers cannot travel in a
/// length-framed HTTP/1.1 body; there they are dropped.)
pub fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        header_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}
