//! Trace-context propagation headers: reading the caller's context from a request and
//! writing the proxy's own context onto the request it sends upstream.
//!
//! Three header families are understood:
//!
//! - **W3C Trace Context** (level 1): `traceparent` (`version-traceid-parentid-flags`) and
//!   `tracestate` (vendor data, kept byte for byte).
//! - **B3 single**: one `b3` header, `{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`.
//! - **B3 multi**: `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, `x-b3-flags` and
//!   `x-b3-parentspanid`.
//!
//! When a request carries several, the first *valid* one wins, in this order:
//!
//! 1. `traceparent`, because it is the standard (and OpenTelemetry's default), it is
//!    specified strictly, and it is the only family that carries `tracestate`, which
//!    choosing B3 would lose. Tracers that emit both W3C and B3 write the same ids in
//!    both, so preferring one loses nothing when they agree.
//! 2. `b3`, because it is one value set in one go, whereas the five multi headers can be
//!    left half-stale by a hop that rewrites only some of them. OpenTelemetry's B3
//!    propagator gives the single header precedence for the same reason.
//! 3. the `x-b3-*` headers.
//!
//! A family whose headers are present but invalid does not hide a valid one further down
//! the list: the request's trace then stays joined instead of being restarted.
//!
//! Everything here is a pure function over an [`http::HeaderMap`]; nothing fails loudly.
//! Invalid or absent headers make [`extract`] return `None`, meaning "start a new trace",
//! as the W3C specification asks. Some choices worth knowing:
//!
//! - Hex must be lowercase in every family (both specifications say so); uppercase is
//!   invalid rather than silently folded, so two hops never disagree on what an id is.
//! - A header that appears more than once (two `traceparent` lines, say) is invalid: the
//!   request would carry two disagreeing contexts and there is no right one to pick.
//!   `tracestate` is the exception: it is a list, so its lines are joined with `,`.
//! - A `tracestate` longer than 512 bytes once joined is dropped whole. The specification
//!   allows truncating it; dropping is simpler and loses only vendor data, never the trace.
//! - A B3 context without ids (a lone `b3: 0`, or only `x-b3-sampled`) is treated like no
//!   context at all: a new trace starts and the proxy's own sampler decides. Honouring a
//!   bare "do not sample" would need a context without ids, which [`Incoming`] cannot hold.
//! - `x-b3-parentspanid` is not read (only the caller's span id matters to the proxy), and
//!   [`inject`] does not write it: the proxy's parent is the caller's span, which is
//!   already in the `traceparent` it sends.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A 128-bit trace id, big-endian, as in the headers.
pub type TraceId = [u8; 16];

/// A 64-bit span id, big-endian, as in the headers.
pub type SpanId = [u8; 8];

/// Which header family a context came in with (the proxy answers upstream in the same
/// family plus W3C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// W3C Trace Context: `traceparent` and `tracestate`.
    W3c,
    /// B3 in one `b3` header.
    B3Single,
    /// B3 in the `x-b3-*` headers.
    B3Multi,
}

/// A trace context read from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The trace the request belongs to; never all-zero.
    pub trace_id: TraceId,
    /// The caller's span, which becomes the parent of the proxy's span; never all-zero.
    pub parent_span_id: SpanId,
    /// The caller's sampling decision; `None` when it deferred the decision (B3 without a
    /// sampling state). Always `Some` for W3C.
    pub sampled: Option<bool>,
    /// B3 debug (`d`, or `x-b3-flags: 1`): forces sampling, so `sampled` is `Some(true)`.
    pub debug: bool,
    /// The W3C `tracestate`, kept as is; only ever set with [`Format::W3c`].
    pub tracestate: Option<HeaderValue>,
    /// The header family the context was read from.
    pub format: Format,
}

/// What the proxy sends upstream: the trace id, the proxy's own (client) span id, the
/// decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The trace id; must not be all-zero (take it from [`Incoming`] or [`new_trace_id`]).
    pub trace_id: TraceId,
    /// The proxy's own client span; must not be all-zero (see [`new_span_id`]).
    pub span_id: SpanId,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// The `tracestate` to forward, normally [`Incoming::tracestate`].
    pub tracestate: Option<&'a HeaderValue>,
    /// B3 headers to write as well as W3C; [`Format::W3c`] adds nothing.
    pub also: Option<Format>,
}

/// `version-traceid-parentid-flags`: 2 + 1 + 32 + 1 + 16 + 1 + 2 characters.
const TRACEPARENT_LEN: usize = 55;

/// `{trace32}-{span16}-{1|0}`, the only form [`inject`] writes.
const B3_SINGLE_LEN: usize = 51;

/// The joined `tracestate` above which it is dropped (the W3C minimum to propagate).
const TRACESTATE_MAX: usize = 512;

const HEX: &[u8; 16] = b"0123456789abcdef";

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");

/// Every header [`inject`] clears before writing.
const ALL_HEADERS: [HeaderName; 8] = [
    TRACEPARENT,
    TRACESTATE,
    B3,
    X_B3_TRACEID,
    X_B3_SPANID,
    X_B3_SAMPLED,
    X_B3_FLAGS,
    X_B3_PARENTSPANID,
];

/// Reads the trace context; invalid or absent headers give None (a new trace starts),
/// never an error.
///
/// Families are tried in the order W3C, `b3`, `x-b3-*`; the first valid one wins (see the
/// module documentation for why).
pub fn extract(headers: &HeaderMap) -> Option<Incoming> {
    if !any_propagation_header(headers) {
        return None;
    }
    extract_w3c(headers)
        .or_else(|| extract_b3_single(headers))
        .or_else(|| extract_b3_multi(headers))
}

/// Writes `traceparent` (version 00) and `tracestate` (when given) always, and when `also`
/// is B3Single/B3Multi also the B3 headers in that form (so B3-only services keep working).
/// Removes every stale propagation header of all three families first (so a request never
/// carries two disagreeing contexts).
///
/// B3 debug is not written: [`Outgoing`] carries only the decision, and `sampled` already
/// says "sample".
pub fn inject(headers: &mut HeaderMap, out: &Outgoing<'_>) {
    if any_propagation_header(headers) {
        for name in &ALL_HEADERS {
            headers.remove(name);
        }
    }

    let mut traceparent = [0u8; TRACEPARENT_LEN];
    traceparent[..3].copy_from_slice(b"00-");
    write_hex(&mut traceparent[3..35], &out.trace_id);
    traceparent[35] = b'-';
    write_hex(&mut traceparent[36..52], &out.span_id);
    traceparent[52..].copy_from_slice(if out.sampled { b"-01" } else { b"-00" });
    insert_bytes(headers, TRACEPARENT, &traceparent);

    if let Some(tracestate) = out.tracestate {
        headers.insert(TRACESTATE, tracestate.clone());
    }

    match out.also {
        Some(Format::B3Single) => {
            let mut b3 = [0u8; B3_SINGLE_LEN];
            write_hex(&mut b3[..32], &out.trace_id);
            b3[32] = b'-';
            write_hex(&mut b3[33..49], &out.span_id);
            b3[49..].copy_from_slice(if out.sampled { b"-1" } else { b"-0" });
            insert_bytes(headers, B3, &b3);
        }
        Some(Format::B3Multi) => {
            let mut trace_id = [0u8; 32];
            write_hex(&mut trace_id, &out.trace_id);
            insert_bytes(headers, X_B3_TRACEID, &trace_id);
            let mut span_id = [0u8; 16];
            write_hex(&mut span_id, &out.span_id);
            insert_bytes(headers, X_B3_SPANID, &span_id);
            let sampled = if out.sampled { "1" } else { "0" };
            headers.insert(X_B3_SAMPLED, HeaderValue::from_static(sampled));
        }
        Some(Format::W3c) | None => {}
    }
}

/// A random trace id, never all-zero (fastrand).
pub fn new_trace_id() -> TraceId {
    fastrand::u128(1..).to_be_bytes()
}

/// A random span id, never all-zero (fastrand).
pub fn new_span_id() -> SpanId {
    fastrand::u64(1..).to_be_bytes()
}

/// Lowercase hex, for logs and span attributes.
pub fn hex_trace_id(id: &TraceId) -> String {
    hex_string(id)
}

/// Lowercase hex, for logs and span attributes.
pub fn hex_span_id(id: &SpanId) -> String {
    hex_string(id)
}

/// Whether any propagation header is present: one pass over the (few) header names
/// instead of eight hashed lookups, since most requests carry none.
fn any_propagation_header(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k == "traceparent" || k == "tracestate" || k == "b3" || k.starts_with("x-b3-")
    })
}

/// A header that appears more than once where only one is allowed.
struct Repeated;

/// The header's only value: `Ok(None)` when absent.
fn only<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, Repeated> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(Repeated),
        None => Ok(first),
    }
}

fn extract_w3c(headers: &HeaderMap) -> Option<Incoming> {
    let value = only(headers, &TRACEPARENT).ok().flatten()?;
    let (trace_id, parent_span_id, sampled) = parse_traceparent(value.as_bytes())?;
    Some(Incoming {
        trace_id,
        parent_span_id,
        sampled: Some(sampled),
        debug: false,
        tracestate: joined_tracestate(headers),
        format: Format::W3c,
    })
}

/// Parses `traceparent` as W3C Trace Context level 1, section 3.2, says.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, bool)> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let (head, rest) = value.split_at(TRACEPARENT_LEN);
    if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    let [version] = parse_hex::<1>(&head[..2])?;
    match version {
        0xff => return None,
        0x00 if !rest.is_empty() => return None,
        // A later version may append fields; read the four we know if they are
        // dash-separated from the rest (forward compatibility, section 3.2.4).
        _ if rest.first().is_some_and(|&b| b != b'-') => return None,
        _ => {}
    }
    let trace_id = non_zero(parse_hex::<16>(&head[3..35])?)?;
    let parent_id = non_zero(parse_hex::<8>(&head[36..52])?)?;
    let [flags] = parse_hex::<1>(&head[53..55])?;
    Some((trace_id, parent_id, flags & 1 == 1))
}

/// All `tracestate` lines joined with `,` (it is a list), or `None` when absent, empty or
/// over [`TRACESTATE_MAX`].
fn joined_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut lines = headers
        .get_all(&TRACESTATE)
        .iter()
        .filter(|line| !line.is_empty());
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        // The common case: one line, kept as is without copying the bytes.
        return (first.len() <= TRACESTATE_MAX).then(|| first.clone());
    };
    let mut joined = Vec::with_capacity(TRACESTATE_MAX);
    joined.extend_from_slice(first.as_bytes());
    for line in std::iter::once(second).chain(lines) {
        joined.push(b',');
        joined.extend_from_slice(line.as_bytes());
        if joined.len() > TRACESTATE_MAX {
            return None;
        }
    }
    HeaderValue::from_bytes(&joined).ok()
}

fn extract_b3_single(headers: &HeaderMap) -> Option<Incoming> {
    let value = only(headers, &B3).ok().flatten()?;
    let mut fields = value.as_bytes().split(|&b| b == b'-');
    let trace_field = fields.next()?;
    // A lone sampling state (`0`, `1`, `d`) has no span id: no context to join.
    let span_field = fields.next()?;
    let state = fields.next();
    let parent_field = fields.next();
    if fields.next().is_some() {
        return None;
    }

    let trace_id = parse_b3_trace_id(trace_field)?;
    // The caller's span is the parent of the proxy's.
    let parent_span_id = non_zero(parse_hex::<8>(span_field)?)?;
    let (sampled, debug) = match state {
        None => (None, false),
        Some(b"1") => (Some(true), false),
        Some(b"0") => (Some(false), false),
        Some(b"d") => (Some(true), true),
        Some(_) => return None,
    };
    // The caller's own parent is not needed, but a malformed one means a malformed header.
    if let Some(parent) = parent_field {
        parse_hex::<8>(parent)?;
    }
    Some(Incoming {
        trace_id,
        parent_span_id,
        sampled,
        debug,
        tracestate: None,
        format: Format::B3Single,
    })
}

fn extract_b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let trace_id = only(headers, &X_B3_TRACEID).ok().flatten()?;
    let span_id = only(headers, &X_B3_SPANID).ok().flatten()?;
    let trace_id = parse_b3_trace_id(trace_id.as_bytes())?;
    let parent_span_id = non_zero(parse_hex::<8>(span_id.as_bytes())?)?;
    let sampled = match only(headers, &X_B3_SAMPLED)
        .ok()?
        .map(HeaderValue::as_bytes)
    {
        None => None,
        Some(b"1") => Some(true),
        Some(b"0") => Some(false),
        // Tracers older than the B3 specification sent `true` / `false`.
        Some(v) if v.eq_ignore_ascii_case(b"true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case(b"false") => Some(false),
        Some(_) => return None,
    };
    // `x-b3-flags` was once a bit field; only `1` (debug) means anything today.
    let debug = only(headers, &X_B3_FLAGS)
        .ok()?
        .is_some_and(|v| v.as_bytes() == b"1");
    Some(Incoming {
        trace_id,
        parent_span_id,
        // Debug implies an accept decision, whatever `x-b3-sampled` says.
        sampled: if debug { Some(true) } else { sampled },
        debug,
        tracestate: None,
        format: Format::B3Multi,
    })
}

/// A B3 trace id: 32 hex, or 16 hex left-padded with zeros to 128 bits.
fn parse_b3_trace_id(src: &[u8]) -> Option<TraceId> {
    let id = match src.len() {
        32 => parse_hex::<16>(src)?,
        16 => {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&parse_hex::<8>(src)?);
            id
        }
        _ => return None,
    };
    non_zero(id)
}

/// Exactly `2 * N` lowercase hex digits.
fn parse_hex<const N: usize>(src: &[u8]) -> Option<[u8; N]> {
    if src.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let &[high, low] = pair else { return None };
        *byte = (hex_digit(high)? << 4) | hex_digit(low)?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn non_zero<const N: usize>(id: [u8; N]) -> Option<[u8; N]> {
    (id != [0; N]).then_some(id)
}

/// Writes `src` as lowercase hex into `dst`, which is twice as long.
fn write_hex(dst: &mut [u8], src: &[u8]) {
    for (pair, byte) in dst.chunks_exact_mut(2).zip(src) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|byte| [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0f)]])
        .map(char::from)
        .collect()
}

fn insert_bytes(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    // Cannot fail: every caller passes hex digits and dashes only.
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";
    const ZERO_TRACE: &str = "00000000000000000000000000000000";
    const ZERO_SPAN: &str = "0000000000000000";

    /// Header lines, in order.
    type Lines<'a> = [(&'a str, &'a str)];

    /// What a B3 case should give: the sampling decision and the debug flag.
    type Decision = (Option<bool>, bool);

    /// A `b3` case: name, header value, and the trace id and decision it should give.
    type SingleCase<'a> = (&'a str, String, Option<(&'a str, Decision)>);

    /// An `x-b3-*` case: name, header lines, and the decision they should give.
    type MultiCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<Decision>);

    fn trace(hex: &str) -> TraceId {
        parse_b3_trace_id(hex.as_bytes()).unwrap()
    }

    fn span(hex: &str) -> SpanId {
        parse_hex::<8>(hex.as_bytes()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn incoming(format: Format, trace_id: &str, span_id: &str, sampled: Option<bool>) -> Incoming {
        Incoming {
            trace_id: trace(trace_id),
            parent_span_id: span(span_id),
            sampled,
            debug: false,
            tracestate: None,
            format,
        }
    }

    #[test]
    fn traceparent() {
        let future_long = format!("cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like");
        let cases: &[(&str, String, Option<bool>)] = &[
            ("sampled", format!("00-{TRACE}-{SPAN}-01"), Some(true)),
            ("not sampled", format!("00-{TRACE}-{SPAN}-00"), Some(false)),
            (
                "other flag bits ignored, sampled",
                format!("00-{TRACE}-{SPAN}-09"),
                Some(true),
            ),
            (
                "other flag bits ignored, not sampled",
                format!("00-{TRACE}-{SPAN}-fe"),
                Some(false),
            ),
            (
                "future version, 55 chars",
                format!("01-{TRACE}-{SPAN}-01"),
                Some(true),
            ),
            ("future version, extra fields", future_long, Some(true)),
            (
                "uppercase trace id",
                format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
                None,
            ),
            (
                "uppercase parent id",
                format!("00-{TRACE}-00F067AA0BA902B7-01"),
                None,
            ),
            ("uppercase flags", format!("00-{TRACE}-{SPAN}-0A"), None),
            ("uppercase version", format!("0A-{TRACE}-{SPAN}-01"), None),
            ("zero trace id", format!("00-{ZERO_TRACE}-{SPAN}-01"), None),
            ("zero parent id", format!("00-{TRACE}-{ZERO_SPAN}-01"), None),
            ("version ff", format!("ff-{TRACE}-{SPAN}-01"), None),
            (
                "version 00, too long",
                format!("00-{TRACE}-{SPAN}-01-"),
                None,
            ),
            (
                "version 00, extra field",
                format!("00-{TRACE}-{SPAN}-01-extra"),
                None,
            ),
            ("too short", format!("00-{TRACE}-{SPAN}-1"), None),
            (
                "short trace id",
                format!("00-{}-{SPAN}-01", &TRACE[1..]),
                None,
            ),
            (
                "future version, no dash after flags",
                format!("cc-{TRACE}-{SPAN}-01.x"),
                None,
            ),
            (
                "future version, too short",
                format!("cc-{TRACE}-{SPAN}-1"),
                None,
            ),
            (
                "underscore after version",
                format!("00_{TRACE}-{SPAN}-01"),
                None,
            ),
            (
                "underscore after trace id",
                format!("00-{TRACE}_{SPAN}-01"),
                None,
            ),
            (
                "underscore after parent id",
                format!("00-{TRACE}-{SPAN}_01"),
                None,
            ),
            (
                "non-hex trace id",
                format!("00-{}g-{SPAN}-01", &TRACE[1..]),
                None,
            ),
            (
                "non-hex parent id",
                format!("00-{TRACE}-{}x-01", &SPAN[1..]),
                None,
            ),
            ("non-hex version", format!("0g-{TRACE}-{SPAN}-01"), None),
            ("non-hex flags", format!("00-{TRACE}-{SPAN}-0x"), None),
            ("empty", String::new(), None),
        ];
        for (name, value, sampled) in cases {
            let got = extract(&headers(&[("traceparent", value)]));
            let want = sampled.map(|s| incoming(Format::W3c, TRACE, SPAN, Some(s)));
            assert_eq!(got, want, "{name}: {value}");
        }
    }

    #[test]
    fn two_traceparent_headers_are_invalid() {
        let value = format!("00-{TRACE}-{SPAN}-01");
        assert_eq!(
            extract(&headers(&[
                ("traceparent", &value),
                ("traceparent", &value)
            ])),
            None
        );
    }

    #[test]
    fn tracestate() {
        let traceparent = format!("00-{TRACE}-{SPAN}-01");
        let long = format!("a={}", "x".repeat(TRACESTATE_MAX - 2));
        let too_long = format!("a={}", "x".repeat(TRACESTATE_MAX - 1));
        let half = format!("a={}", "x".repeat(TRACESTATE_MAX / 2));
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("absent", &[], None),
            (
                "one line, kept as is",
                &["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"],
                Some("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
            ),
            (
                "two lines, joined",
                &["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"],
                Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ),
            (
                "empty lines skipped",
                &["", "a=1", "", "b=2"],
                Some("a=1,b=2"),
            ),
            ("only empty", &[""], None),
            ("512 bytes kept", &[&long], Some(&long)),
            ("513 bytes dropped", &[&too_long], None),
            ("over 512 once joined, dropped", &[&half, &half], None),
        ];
        for (name, lines, want) in cases {
            let mut pairs = vec![("traceparent", traceparent.as_str())];
            pairs.extend(lines.iter().map(|line| ("tracestate", *line)));
            let got = extract(&headers(&pairs)).unwrap().tracestate;
            assert_eq!(got.as_ref().map(|v| v.to_str().unwrap()), *want, "{name}");
        }
    }

    #[test]
    fn tracestate_needs_a_valid_traceparent() {
        let b3 = format!("{TRACE}-{SPAN}-1");
        let bad = format!("00-{TRACE}-{ZERO_SPAN}-01");
        assert_eq!(extract(&headers(&[("tracestate", "a=1")])), None);
        let got = extract(&headers(&[
            ("traceparent", &bad),
            ("tracestate", "a=1"),
            ("b3", &b3),
        ]));
        assert_eq!(
            got,
            Some(incoming(Format::B3Single, TRACE, SPAN, Some(true)))
        );
    }

    #[test]
    fn precedence() {
        let (w3c_trace, b3_trace, multi_trace) =
            ("ab".repeat(16), "cd".repeat(16), "ef".repeat(16));
        let traceparent = format!("00-{w3c_trace}-{SPAN}-01");
        let bad_traceparent = format!("00-{}-{SPAN}-01", w3c_trace.to_uppercase());
        let b3 = format!("{b3_trace}-{SPAN}-1");
        let multi = [
            ("x-b3-traceid", multi_trace.as_str()),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ];
        let all: Vec<_> = [("traceparent", traceparent.as_str()), ("b3", &b3)]
            .into_iter()
            .chain(multi)
            .collect();
        let b3_and_multi: Vec<_> = [("b3", b3.as_str())].into_iter().chain(multi).collect();
        let bad_w3c: Vec<_> = [("traceparent", bad_traceparent.as_str())]
            .into_iter()
            .chain(multi)
            .collect();
        let cases: &[(&str, &Lines<'_>, Format, &str)] = &[
            (
                "traceparent beats b3 and multi",
                &all,
                Format::W3c,
                &w3c_trace,
            ),
            ("b3 beats multi", &b3_and_multi, Format::B3Single, &b3_trace),
            ("multi alone", &multi, Format::B3Multi, &multi_trace),
            (
                "invalid traceparent falls through",
                &bad_w3c,
                Format::B3Multi,
                &multi_trace,
            ),
        ];
        for (name, pairs, format, trace_id) in cases {
            let got = extract(&headers(pairs)).unwrap();
            assert_eq!(
                (got.format, got.trace_id),
                (*format, trace(trace_id)),
                "{name}"
            );
        }
    }

    #[test]
    fn b3_single() {
        let short = &TRACE[16..];
        let cases: &[SingleCase<'_>] = &[
            (
                "ids only, decision deferred",
                format!("{TRACE}-{SPAN}"),
                Some((TRACE, (None, false))),
            ),
            (
                "sampled",
                format!("{TRACE}-{SPAN}-1"),
                Some((TRACE, (Some(true), false))),
            ),
            (
                "not sampled",
                format!("{TRACE}-{SPAN}-0"),
                Some((TRACE, (Some(false), false))),
            ),
            (
                "debug",
                format!("{TRACE}-{SPAN}-d"),
                Some((TRACE, (Some(true), true))),
            ),
            (
                "with parent",
                format!("{TRACE}-{SPAN}-1-{SPAN}"),
                Some((TRACE, (Some(true), false))),
            ),
            (
                "16-hex trace id",
                format!("{short}-{SPAN}-1"),
                Some((short, (Some(true), false))),
            ),
            ("lone 0", "0".into(), None),
            ("lone 1", "1".into(), None),
            ("lone d", "d".into(), None),
            (
                "uppercase",
                format!("{}-{SPAN}-1", TRACE.to_uppercase()),
                None,
            ),
            ("zero trace id", format!("{ZERO_TRACE}-{SPAN}-1"), None),
            ("zero span id", format!("{TRACE}-{ZERO_SPAN}-1"), None),
            ("unknown sampling state", format!("{TRACE}-{SPAN}-2"), None),
            ("bad parent", format!("{TRACE}-{SPAN}-1-xyz"), None),
            (
                "too many fields",
                format!("{TRACE}-{SPAN}-1-{SPAN}-1"),
                None,
            ),
            (
                "20-hex trace id",
                format!("{}-{SPAN}-1", &TRACE[12..]),
                None,
            ),
            ("short span id", format!("{TRACE}-{}-1", &SPAN[1..]), None),
            ("empty", String::new(), None),
            ("dash", "-".into(), None),
        ];
        for (name, value, want) in cases {
            let got = extract(&headers(&[("b3", value)]));
            let want = want.map(|(trace_id, (sampled, debug))| Incoming {
                debug,
                ..incoming(Format::B3Single, trace_id, SPAN, sampled)
            });
            assert_eq!(got, want, "{name}: {value}");
        }
        let padded = trace(short);
        assert_eq!(padded[..8], [0; 8]);
        assert_eq!(hex_trace_id(&padded), format!("0000000000000000{short}"));
    }

    #[test]
    fn b3_multi() {
        let ids = [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            ids.iter().chain(extra).copied().collect()
        };
        let cases: &[MultiCase<'_>] = &[
            (
                "ids only, decision deferred",
                with(&[]),
                Some((None, false)),
            ),
            (
                "sampled 1",
                with(&[("x-b3-sampled", "1")]),
                Some((Some(true), false)),
            ),
            (
                "sampled 0",
                with(&[("x-b3-sampled", "0")]),
                Some((Some(false), false)),
            ),
            (
                "sampled true",
                with(&[("x-b3-sampled", "true")]),
                Some((Some(true), false)),
            ),
            (
                "sampled false",
                with(&[("x-b3-sampled", "false")]),
                Some((Some(false), false)),
            ),
            (
                "sampled True",
                with(&[("x-b3-sampled", "True")]),
                Some((Some(true), false)),
            ),
            (
                "debug",
                with(&[("x-b3-flags", "1")]),
                Some((Some(true), true)),
            ),
            (
                "debug beats sampled 0",
                with(&[("x-b3-flags", "1"), ("x-b3-sampled", "0")]),
                Some((Some(true), true)),
            ),
            (
                "flags 0",
                with(&[("x-b3-flags", "0"), ("x-b3-sampled", "1")]),
                Some((Some(true), false)),
            ),
            (
                "parent ignored",
                with(&[("x-b3-parentspanid", "nonsense")]),
                Some((None, false)),
            ),
            ("unknown sampled", with(&[("x-b3-sampled", "yes")]), None),
            (
                "two sampled",
                with(&[("x-b3-sampled", "1"), ("x-b3-sampled", "0")]),
                None,
            ),
            (
                "missing span id",
                vec![("x-b3-traceid", TRACE), ("x-b3-sampled", "1")],
                None,
            ),
            (
                "missing trace id",
                vec![("x-b3-spanid", SPAN), ("x-b3-sampled", "1")],
                None,
            ),
            ("sampled only", vec![("x-b3-sampled", "0")], None),
            (
                "uppercase",
                vec![("x-b3-traceid", "4BF92F3577B34DA6"), ("x-b3-spanid", SPAN)],
                None,
            ),
        ];
        for (name, pairs, want) in cases {
            let got = extract(&headers(pairs));
            let want = want.map(|(sampled, debug)| Incoming {
                debug,
                ..incoming(Format::B3Multi, TRACE, SPAN, sampled)
            });
            assert_eq!(got, want, "{name}");
        }
        let short = extract(&headers(&[
            ("x-b3-traceid", &TRACE[16..]),
            ("x-b3-spanid", SPAN),
        ]));
        assert_eq!(short.unwrap().trace_id, trace(&TRACE[16..]));
    }

    #[test]
    fn inject_writes_each_family() {
        let tracestate = HeaderValue::from_static("a=1");
        let out = |sampled, also| Outgoing {
            trace_id: trace(TRACE),
            span_id: span(SPAN),
            sampled,
            tracestate: Some(&tracestate),
            also,
        };
        let cases: &[(Outgoing<'_>, &[(&str, String)])] = &[
            (
                out(true, None),
                &[
                    ("traceparent", format!("00-{TRACE}-{SPAN}-01")),
                    ("tracestate", "a=1".into()),
                ],
            ),
            (
                out(false, Some(Format::W3c)),
                &[
                    ("traceparent", format!("00-{TRACE}-{SPAN}-00")),
                    ("tracestate", "a=1".into()),
                ],
            ),
            (
                out(true, Some(Format::B3Single)),
                &[("b3", format!("{TRACE}-{SPAN}-1"))],
            ),
            (
                out(false, Some(Format::B3Single)),
                &[("b3", format!("{TRACE}-{SPAN}-0"))],
            ),
            (
                out(false, Some(Format::B3Multi)),
                &[
                    ("x-b3-traceid", TRACE.into()),
                    ("x-b3-spanid", SPAN.into()),
                    ("x-b3-sampled", "0".into()),
                ],
            ),
        ];
        for (out, want) in cases {
            let mut map = HeaderMap::new();
            inject(&mut map, out);
            for (name, value) in *want {
                assert_eq!(map.get(*name).unwrap(), value.as_str(), "{out:?}: {name}");
            }
            let b3_count = map
                .keys()
                .filter(|name| name.as_str().contains("b3"))
                .count();
            let want_b3 = want.iter().filter(|(name, _)| name.contains("b3")).count();
            assert_eq!(b3_count, want_b3, "{out:?}");
        }
    }

    #[test]
    fn inject_round_trip() {
        for also in [
            None,
            Some(Format::W3c),
            Some(Format::B3Single),
            Some(Format::B3Multi),
        ] {
            for sampled in [true, false] {
                let (trace_id, span_id) = (new_trace_id(), new_span_id());
                let out = Outgoing {
                    trace_id,
                    span_id,
                    sampled,
                    tracestate: None,
                    also,
                };
                let mut map = HeaderMap::new();
                inject(&mut map, &out);
                let want = Incoming {
                    trace_id,
                    parent_span_id: span_id,
                    sampled: Some(sampled),
                    debug: false,
                    tracestate: None,
                    format: Format::W3c,
                };
                assert_eq!(extract(&map), Some(want.clone()), "{out:?}");
                // The B3 headers alone say the same as the traceparent.
                map.remove(TRACEPARENT);
                let b3_only = also
                    .filter(|f| *f != Format::W3c)
                    .map(|format| Incoming { format, ..want });
                assert_eq!(extract(&map), b3_only, "{out:?} without traceparent");
            }
        }
    }

    #[test]
    fn inject_removes_stale_headers() {
        let stale = format!("00-{}-{SPAN}-01", "11".repeat(16));
        let stale_b3 = format!("{}-{SPAN}-d", "22".repeat(16));
        let before = headers(&[
            ("traceparent", &stale),
            ("traceparent", &stale),
            ("tracestate", "old=1"),
            ("b3", &stale_b3),
            ("x-b3-traceid", &"33".repeat(16)),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
            ("x-b3-flags", "1"),
            ("x-b3-parentspanid", SPAN),
            ("x-request-id", "keep-me"),
        ]);
        let cases: &[(Option<Format>, &[&str])] = &[
            (None, &["traceparent", "x-request-id"]),
            (
                Some(Format::B3Single),
                &["traceparent", "b3", "x-request-id"],
            ),
            (
                Some(Format::B3Multi),
                &[
                    "traceparent",
                    "x-b3-traceid",
                    "x-b3-spanid",
                    "x-b3-sampled",
                    "x-request-id",
                ],
            ),
        ];
        for (also, want) in cases {
            let mut map = before.clone();
            let out = Outgoing {
                trace_id: trace(TRACE),
                span_id: span(SPAN),
                sampled: false,
                tracestate: None,
                also: *also,
            };
            inject(&mut map, &out);
            let mut names: Vec<_> = map.keys().map(HeaderName::as_str).collect();
            names.sort_unstable();
            let mut want = want.to_vec();
            want.sort_unstable();
            assert_eq!(names, want, "{also:?}");
            assert_eq!(map.len(), want.len(), "{also:?}: one value per header");
            assert_eq!(
                extract(&map),
                Some(incoming(Format::W3c, TRACE, SPAN, Some(false)))
            );
        }
    }

    #[test]
    fn ids_and_hex() {
        for _ in 0..100 {
            assert_ne!(new_trace_id(), [0; 16]);
            assert_ne!(new_span_id(), [0; 8]);
        }
        assert_ne!(new_trace_id(), new_trace_id());
        assert_eq!(hex_trace_id(&trace(TRACE)), TRACE);
        assert_eq!(hex_span_id(&span(SPAN)), SPAN);
        assert_eq!(
            hex_span_id(&[0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89]),
            "abcdef0123456789"
        );
    }
}
