//! Request path normalisation: the one canonical spelling of a path that routing,
//! authorization and the upstream all see.
//!
//! A path-based rule is only as strong as the agreement between the proxy and the
//! upstream on what a path means: if `deny /admin/` looks at `/public/..%2Fadmin` and the
//! upstream resolves it to `/admin`, the rule is bypassed. So before anything matches a
//! path, it is rewritten here into the form the upstream will receive:
//!
//! 1. it must start with `/`; control bytes (NUL, CR, LF, DEL, ...) are refused;
//! 2. escapes are checked (`%zz` and a truncated `%4` are refused), escapes of unreserved
//!    characters are decoded (`%61` -> `a`, `%2E` -> `.`, `%7E` -> `~`) and the hex of the
//!    others is upper-cased (`%2f` -> `%2F`), each escape decoded once only (`%252F`
//!    stays `%252F`);
//! 3. `%2F` and `%5C` (any case) are kept, refused or turned into `/`, as
//!    [`EscapedSlashes`] says;
//! 4. a literal `\` becomes `/` (some servers treat it as a separator);
//! 5. runs of `/` are merged, if asked;
//! 6. `.` and `..` segments are resolved (RFC 3986 `remove_dot_segments`; `..` at the root
//!    stays at the root).
//!
//! Steps 2 (decoding), 4 and 6 are what Envoy's `normalize_path` does and run only when
//! [`PathOptions::normalize`] is on; the checks in 1 and 2 always run (a bad escape is a
//! 400 either way). The escaped-slash step runs first and the dot segments last, so an
//! unescaped `..%2F` is resolved like a literal `../`.
//!
//! Pure and cheap: the common path (nothing to change) is scanned once and returned
//! borrowed, without allocating.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` (escaped `/` and `\`) in a path: Envoy's
/// `path_with_escaped_slashes_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Leave them escaped (`KEEP_UNCHANGED`). Authorization then sees `..%2F` as part of
    /// a segment while an upstream that decodes it sees a separator: only safe when the
    /// upstream does not decode them either.
    Keep,
    /// Refuse the request with 400 (`REJECT_REQUEST`).
    Reject,
    /// Turn them into `/` and forward (`UNESCAPE_AND_FORWARD`), so the upstream, the
    /// router and authorization all see the same separators. The default.
    #[default]
    Unescape,
}

/// How a listener normalises request paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathOptions {
    /// Decode unreserved escapes, turn `\` into `/` and resolve dot segments (Envoy's
    /// `normalize_path`).
    pub normalize: bool,
    /// Merge runs of `/` into one (Envoy's `merge_slashes`).
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C`.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    /// Everything on, slashes unescaped: what a listener gets unless configured, so that
    /// routing and authorization see the same canonical path the upstream receives.
    fn default() -> Self {
        Self {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Unescape,
        }
    }
}

/// Why a path was refused (the caller answers 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A NUL, another control byte or DEL.
    #[error("control byte {0:#04x} in the path")]
    ControlByte(u8),
    /// `%` not followed by two hex digits.
    #[error("invalid percent-escape in the path")]
    BadEscape,
    /// `%2F` or `%5C` with [`EscapedSlashes::Reject`].
    #[error("escaped slash (%2F or %5C) in the path")]
    EscapedSlash,
}

/// Normalises `path` (the part before `?`) as `opts` says. Borrowed when nothing changed.
pub fn normalise(path: &str, opts: PathOptions) -> Result<Cow<'_, str>, PathError> {
    if !needs_rewrite(path, opts)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, opts)?;
    let out = resolve_segments(&decoded, opts);
    // The fast scan is exact, but comparing is cheap insurance for the borrowed contract.
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// Validates `path` and says whether [`normalise`] would change it, in one pass.
fn needs_rewrite(path: &str, opts: PathOptions) -> Result<bool, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut change = opts.merge_slashes && bytes.get(1) == Some(&b'/');
    // Byte 0 is the leading `/`; the first segment starts after it.
    let mut segment_start = 1;
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            0x00..=0x1f | 0x7f => return Err(PathError::ControlByte(b)),
            b'%' => {
                let (hi, lo, decoded) = escape_at(bytes, i)?;
                let lower_hex = hi.is_ascii_lowercase() || lo.is_ascii_lowercase();
                change |= match (decoded, opts.escaped_slashes) {
                    (b'/' | b'\\', EscapedSlashes::Reject) => return Err(PathError::EscapedSlash),
                    (b'/' | b'\\', EscapedSlashes::Unescape) => true,
                    _ if opts.normalize => is_unreserved(decoded) || lower_hex,
                    _ => false,
                };
                i += 3;
                continue;
            }
            b'\\' if opts.normalize => change = true,
            b'/' => {
                change |= opts.normalize && is_dot_segment(bytes.get(segment_start..i));
                change |= opts.merge_slashes && bytes.get(i + 1) == Some(&b'/');
                segment_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    change |= opts.normalize && is_dot_segment(bytes.get(segment_start..));
    Ok(change)
}

/// Steps 2 to 4: escapes and backslashes. The result still has dot segments and
/// repeated slashes.
fn decode(path: &str, opts: PathOptions) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (hi, lo, decoded) = escape_at(bytes, i)?;
                match (decoded, opts.escaped_slashes) {
                    (b'/' | b'\\', EscapedSlashes::Reject) => return Err(PathError::EscapedSlash),
                    (b'/' | b'\\', EscapedSlashes::Unescape) => out.push(b'/'),
                    _ if opts.normalize && is_unreserved(decoded) => out.push(decoded),
                    _ if opts.normalize => out.extend_from_slice(&[
                        b'%',
                        hi.to_ascii_uppercase(),
                        lo.to_ascii_uppercase(),
                    ]),
                    _ => out.extend_from_slice(&[b'%', hi, lo]),
                }
                i += 3;
                continue;
            }
            b'\\' if opts.normalize => out.push(b'/'),
            _ => out.push(b),
        }
        i += 1;
    }
    // Only ASCII bytes were decoded or replaced and `%` and `\` never occur inside a
    // multi-byte character, so the bytes are still UTF-8; the lossy form is never used.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Steps 5 and 6 on a decoded path that starts with `/`.
fn resolve_segments(path: &str, opts: PathOptions) -> String {
    let mut out = String::with_capacity(path.len());
    // Where each segment kept so far starts (at its `/`), so `..` can drop the last one.
    let mut starts: Vec<usize> = Vec::new();
    let rest = path.get(1..).unwrap_or_default();
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if opts.normalize && (seg == "." || seg == "..") {
            if seg == ".."
                && let Some(start) = starts.pop()
            {
                out.truncate(start);
            }
            // `/a/.` and `/a/b/..` name the directory: they keep a trailing slash.
            if last {
                out.push('/');
            }
            continue;
        }
        // An empty segment before another one is a repeated slash; the last one is the
        // trailing slash, which is kept.
        if opts.merge_slashes && seg.is_empty() && !last {
            continue;
        }
        starts.push(out.len());
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The two hex digits after the `%` at `i` and the byte they encode.
fn escape_at(bytes: &[u8], i: usize) -> Result<(u8, u8, u8), PathError> {
    let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
        return Err(PathError::BadEscape);
    };
    match (hex(hi), hex(lo)) {
        (Some(h), Some(l)) => Ok((hi, lo, h << 4 | l)),
        _ => Err(PathError::BadEscape),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved: decoding these never changes what a path means.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_dot_segment(seg: Option<&[u8]>) -> bool {
    matches!(seg, Some(b"." | b".."))
}

#[cfg(test)]
mod tests;
