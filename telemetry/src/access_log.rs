//! Access logs: one line per HTTP request and per TCP connection, written off the data path.
//!
//! When a request (or connection) ends the proxy fills an [`AccessRecord`] and calls
//! [`AccessLog::log`], which formats it ([`format_json`] or [`format_text`]) straight into
//! a bounded in-memory buffer shared with a writer thread (`weft-access-log`). Every few
//! milliseconds that thread swaps the buffer for an empty one and writes what it took with
//! one `write`. So the data path pays for formatting a line and one uncontended lock, and
//! nothing per record otherwise: no allocation, no queue message, no wake-up of another
//! thread, no memory freed on another thread.
//!
//! Why a thread at all: a sink can stall. A full disk, a slow network file system, or a
//! pipe on stdout that nobody reads (a container runtime whose log collector is wedged) all
//! block `write`. If the request path wrote the line itself, every worker thread would end
//! up blocked in `write` and traffic would stop because logging stopped. With the buffer in
//! between, a stalled sink costs only log lines: when the buffer is full, [`AccessLog::log`]
//! drops the record and increments the `dropped` counter, so the loss is visible on a
//! dashboard instead of as an outage. Records that reach the sink are counted in `written`;
//! a record is always counted exactly once, in one or the other.
//!
//! Each record is exactly one line whatever its fields contain: JSON strings are escaped,
//! and the quoted fields of the text format escape quotes, backslashes and control
//! characters, so a hostile header can't forge or split a line.

use std::borrow::Cow;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::Counter;

/// The keys of a JSON record, in the order they are written (the README documents
/// them; tests here and in the end-to-end suite hold the writer to this list).
pub const JSON_KEYS: [&str; 28] = [
    "timestamp",
    "kind",
    "direction",
    "listener",
    "route",
    "cluster",
    "upstream_address",
    "downstream_address",
    "method",
    "authority",
    "path",
    "protocol",
    "status",
    "grpc_status",
    "response_flags",
    "attempts",
    "bytes_received",
    "bytes_sent",
    "duration_ms",
    "upstream_ttfb_ms",
    "request_id",
    "trace_id",
    "span_id",
    "user_agent",
    "x_forwarded_for",
    "peer_identity",
    "authz_decision",
    "authz_rule",
];

/// How long the writer rests between writes. Lines reach the sink at most this late
/// (a flush cuts it short); under load each write carries this long's worth of lines.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// The writer keeps at most this much buffer capacity between writes, so a burst does not
/// pin its memory forever.
const MAX_IDLE_BUFFER: usize = 1024 * 1024;

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sink {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
    /// A file, opened for append and created if missing.
    File(PathBuf),
}

/// Line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// One JSON object per line (see [`format_json`]).
    #[default]
    Json,
    /// Envoy's default text format (see [`format_text`]).
    Text,
}

/// What a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One HTTP request (serialized as `"http"`).
    Http,
    /// One TCP connection (serialized as `"tcp"`).
    Tcp,
}

/// One access-log record, built by the proxy per request (or per TCP connection).
///
/// Every field is owned or cheap to move, so handing a record to [`AccessLog::log`] costs a
/// move and one allocation (the queue holds records boxed).
#[derive(Clone, Debug)]
pub struct AccessRecord {
    /// When the request (or TCP connection) arrived.
    pub start_time: SystemTime,
    /// HTTP request or TCP connection.
    pub kind: Kind,
    /// `"gateway"`, `"inbound"` or `"outbound"`.
    pub direction: &'static str,
    /// Name of the listener that accepted the connection.
    pub listener: Arc<str>,
    /// Name of the matched route; empty when no route matched.
    pub route: Arc<str>,
    /// Name of the upstream cluster; empty when the request was not forwarded.
    pub cluster: Arc<str>,
    /// Address of the upstream endpoint of the last attempt, if one was picked.
    pub upstream_address: Option<SocketAddr>,
    /// Address of the downstream peer.
    pub downstream_address: SocketAddr,
    /// Request method; `None` for TCP.
    pub method: Option<http::Method>,
    /// `:authority` or `Host`.
    pub authority: String,
    /// Path and query as received.
    pub path: String,
    /// `"HTTP/1.0"`, `"HTTP/1.1"`, `"HTTP/2"` or `"TCP"`.
    pub protocol: &'static str,
    /// Response status; 0 when no response was sent (TCP, or the client went away first).
    pub status: u16,
    /// `grpc-status` of the response, for gRPC.
    pub grpc_status: Option<u32>,
    /// Envoy response flags (`"NR"`, `"UF"`, `"UT"`, `"UC"`, `"DC"`, `"URX"`, `"RL"`,
    /// `"UAEX"`, comma-separated when several), `"-"` when none.
    pub response_flags: Cow<'static, str>,
    /// Upstream attempts made (retries included).
    pub attempts: u32,
    /// Request body bytes (TCP: bytes from downstream).
    pub bytes_received: u64,
    /// Response body bytes (TCP: bytes to downstream).
    pub bytes_sent: u64,
    /// Total time, from arrival to the last byte (TCP: to connection close).
    pub duration: Duration,
    /// Time from arrival to the first byte (headers) of the upstream response.
    pub upstream_ttfb: Option<Duration>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// Trace id, lowercase hex.
    pub trace_id: Option<String>,
    /// Span id, lowercase hex.
    pub span_id: Option<String>,
    /// `user-agent` of the request.
    pub user_agent: Option<String>,
    /// `x-forwarded-for` as sent upstream.
    pub forwarded_for: Option<String>,
    /// SPIFFE id of the peer (`None` until mTLS exists).
    pub peer_identity: Option<String>,
    /// `"allow"` or `"deny"` (`None` until authorization exists).
    pub authz_decision: Option<&'static str>,
    /// Name of the authorization rule that decided.
    pub authz_rule: Option<String>,
}

/// A writer of access-log lines, shared by every listener that logs to the same sink.
///
/// Cheap to clone. The writer thread ends, after writing what is still buffered, when the
/// last clone is dropped.
#[derive(Clone, Debug)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    sink: Sink,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the writer writes what is left and ends.
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// The buffer between the data path and the writer thread.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer before its pause ends (a flush, the end).
    wake: Condvar,
    /// Buffered bytes above which records are dropped.
    max_bytes: usize,
    format: Format,
    dropped: Counter,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    lines: u64,
    flushes: Vec<Sender<()>>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why an access log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for append.
    #[error("cannot open access log {path}: {source}")]
    Open {
        /// The file's path.
        path: PathBuf,
        /// Why it could not be opened.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the access-log writer thread: {0}")]
    Spawn(#[source] io::Error),
}

impl AccessLog {
    /// Opens the sink and starts the writer thread (named `weft-access-log`).
    ///
    /// A [`Sink::File`] is opened here, so a bad path is an error now rather than a stream of
    /// dropped records later. `max_bytes` bounds the formatted lines waiting to be written;
    /// `written` and `dropped` are incremented per record written and per record lost.
    pub fn open(
        sink: Sink,
        format: Format,
        max_bytes: usize,
        written: Counter,
        dropped: Counter,
    ) -> Result<AccessLog, AccessLogError> {
        let writer: Box<dyn Write + Send> = match &sink {
            Sink::Stdout => Box::new(io::stdout()),
            Sink::Stderr => Box::new(io::stderr()),
            Sink::File(path) => Box::new(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        Self::open_writer(sink, writer, format, max_bytes, written, dropped)
    }

    /// [`AccessLog::open`] over an already open writer; `sink` only labels it.
    fn open_writer(
        sink: Sink,
        writer: Box<dyn Write + Send>,
        format: Format,
        max_bytes: usize,
        written: Counter,
        dropped: Counter,
    ) -> Result<AccessLog, AccessLogError> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            max_bytes: max_bytes.max(1),
            format,
            dropped: dropped.clone(),
        });
        let writer = Writer::new(sink.clone(), writer, written, dropped);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("weft-access-log".to_owned())
            .spawn(move || writer.run(&thread_shared))
            .map_err(AccessLogError::Spawn)?;
        Ok(AccessLog {
            inner: Arc::new(Inner { shared, sink }),
        })
    }

    /// Formats `record` into the buffer. Never blocks on the sink: when the buffer is full
    /// (the writer is stuck), the record is dropped and counted in `dropped`.
    pub fn log(&self, record: &AccessRecord) {
        let shared = &self.inner.shared;
        let mut p = shared.lock();
        if p.buf.len() >= shared.max_bytes || p.closed {
            drop(p);
            shared.dropped.increment(1);
            return;
        }
        match shared.format {
            Format::Json => format_json(record, &mut p.buf),
            Format::Text => format_text(record, &mut p.buf),
        }
        p.lines += 1;
    }

    /// Where this log writes.
    pub fn sink(&self) -> &Sink {
        &self.inner.sink
    }

    /// The line format of this log.
    pub fn format(&self) -> Format {
        self.inner.shared.format
    }

    /// Waits until every record logged before this call has been written (or dropped after
    /// a write error) and the sink flushed. Returns false when that did not happen within
    /// `timeout`, or the writer thread is gone.
    ///
    /// Blocks the calling thread: for tests and shutdown, never for the data path.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let (ack, acked) = mpsc::channel();
        self.inner.shared.lock().flushes.push(ack);
        self.inner.shared.wake.notify_one();
        acked.recv_timeout(timeout).is_ok()
    }
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    out: Box<dyn Write + Send>,
    /// The lines being written; swapped with the shared buffer each round.
    buf: Vec<u8>,
    written: Counter,
    dropped: Counter,
    /// The last write failed and was reported; the next failure stays quiet.
    failing: bool,
    /// A failed write left part of a line in the sink; the next write starts a new line.
    torn: bool,
}

impl Writer {
    fn new(sink: Sink, out: Box<dyn Write + Send>, written: Counter, dropped: Counter) -> Writer {
        Writer {
            sink,
            out,
            buf: Vec::new(),
            written,
            dropped,
            failing: false,
            torn: false,
        }
    }

    /// Writes what the data path buffered, every [`BATCH_PAUSE`] or at once for a flush,
    /// until every handle is gone and the buffer is empty.
    fn run(mut self, shared: &Shared) {
        loop {
            let (lines, flushes, closed) = {
                let p = shared.lock();
                let (mut p, _) = shared
                    .wake
                    .wait_timeout_while(p, BATCH_PAUSE, |p| p.flushes.is_empty() && !p.closed)
                    .unwrap_or_else(PoisonError::into_inner);
                // Take the lines; hand back an empty buffer with the old one's capacity.
                self.buf.clear();
                std::mem::swap(&mut self.buf, &mut p.buf);
                (
                    std::mem::take(&mut p.lines),
                    std::mem::take(&mut p.flushes),
                    p.closed,
                )
            };
            self.write_lines(lines);
            for ack in flushes {
                // The flusher may have given up waiting; nothing to do then.
                let _ = ack.send(());
            }
            if closed && shared.lock().buf.is_empty() {
                return;
            }
        }
    }

    /// Writes and flushes `self.buf` (holding `lines` lines), counting every line as
    /// written or dropped.
    fn write_lines(&mut self, lines: u64) {
        if lines == 0 {
            return;
        }
        match self.write_buf() {
            Ok(()) => {
                self.written.increment(lines);
                if self.failing {
                    self.failing = false;
                    tracing::info!(sink = ?self.sink, "access log writes resumed");
                }
                if let Err(error) = self.out.flush() {
                    // The lines were accepted by the sink; only their delivery is delayed.
                    self.report(&error);
                }
            }
            Err((written_bytes, error)) => {
                let complete = count_lines(&self.buf[..written_bytes]);
                self.written.increment(complete);
                self.dropped.increment(lines - complete);
                self.torn = written_bytes > 0 && self.buf.get(written_bytes - 1) != Some(&b'\n');
                self.report(&error);
            }
        }
        if self.buf.capacity() > MAX_IDLE_BUFFER {
            self.buf = Vec::with_capacity(MAX_IDLE_BUFFER);
        }
    }

    /// `write_all` of `buf` that also says how many bytes reached the sink before an error,
    /// so fully written lines are not counted as dropped.
    fn write_buf(&mut self) -> Result<(), (usize, io::Error)> {
        if self.torn {
            write_all(&mut self.out, b"\n").map_err(|(_, error)| (0, error))?;
            self.torn = false;
        }
        write_all(&mut self.out, &self.buf)
    }

    /// Logs a sink error once per run of failures, so a dead sink doesn't flood the log.
    fn report(&mut self, error: &io::Error) {
        if !self.failing {
            self.failing = true;
            tracing::warn!(
                sink = ?self.sink,
                %error,
                "access log write failed; records that cannot be written are counted as dropped"
            );
        }
    }
}

fn write_all(out: &mut dyn Write, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut pos = 0;
    while pos < buf.len() {
        match out.write(&buf[pos..]) {
            Ok(0) => return Err((pos, io::ErrorKind::WriteZero.into())),
            Ok(n) => pos += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err((pos, error)),
        }
    }
    Ok(())
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Formats `r` as one JSON object on one line (with the trailing `'\n'`), appended to `out`.
///
/// Written by hand rather than through serde: this runs once per request on a worker
/// thread, in the data path.
/// Strings are escaped as JSON requires (quotes, backslashes, control characters), so a
/// record is always exactly one line.
pub fn format_json(r: &AccessRecord, out: &mut Vec<u8>) {
    // Room for a typical line, so the appends below do not grow the buffer piecemeal.
    out.reserve(640);
    out.extend_from_slice(b"{\"timestamp\":\"");
    push_timestamp(out, r.start_time);
    out.push(b'"');
    json_str(out, b",\"kind\":", Some(r.kind.as_str()));
    json_str(out, b",\"direction\":", Some(r.direction));
    json_str(out, b",\"listener\":", Some(&r.listener));
    json_str(out, b",\"route\":", Some(&r.route));
    json_str(out, b",\"cluster\":", Some(&r.cluster));
    json_addr(out, b",\"upstream_address\":", r.upstream_address);
    json_addr(out, b",\"downstream_address\":", Some(r.downstream_address));
    json_str(
        out,
        b",\"method\":",
        r.method.as_ref().map(http::Method::as_str),
    );
    json_str(out, b",\"authority\":", Some(&r.authority));
    json_str(out, b",\"path\":", Some(&r.path));
    json_str(out, b",\"protocol\":", Some(r.protocol));
    json_num(out, b",\"status\":", Some(u64::from(r.status)));
    json_num(out, b",\"grpc_status\":", r.grpc_status.map(u64::from));
    json_str(out, b",\"response_flags\":", Some(&r.response_flags));
    json_num(out, b",\"attempts\":", Some(u64::from(r.attempts)));
    json_num(out, b",\"bytes_received\":", Some(r.bytes_received));
    json_num(out, b",\"bytes_sent\":", Some(r.bytes_sent));
    json_millis(out, b",\"duration_ms\":", Some(r.duration));
    json_millis(out, b",\"upstream_ttfb_ms\":", r.upstream_ttfb);
    json_str(out, b",\"request_id\":", r.request_id.as_deref());
    json_str(out, b",\"trace_id\":", r.trace_id.as_deref());
    json_str(out, b",\"span_id\":", r.span_id.as_deref());
    json_str(out, b",\"user_agent\":", r.user_agent.as_deref());
    json_str(out, b",\"x_forwarded_for\":", r.forwarded_for.as_deref());
    json_str(out, b",\"peer_identity\":", r.peer_identity.as_deref());
    json_str(out, b",\"authz_decision\":", r.authz_decision);
    json_str(out, b",\"authz_rule\":", r.authz_rule.as_deref());
    out.extend_from_slice(b"}\n");
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tcp => "tcp",
        }
    }
}

fn json_str(out: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
    // `key` is spelled out whole by the caller: `,"name":`.
    out.extend_from_slice(key);
    match v {
        None => out.extend_from_slice(b"null"),
        Some(v) => {
            out.push(b'"');
            json_escape(out, v);
            out.push(b'"');
        }
    }
}

fn json_num(out: &mut Vec<u8>, key: &[u8], v: Option<u64>) {
    out.extend_from_slice(key);
    match v {
        None => out.extend_from_slice(b"null"),
        Some(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
    }
}

/// Milliseconds with microsecond precision: `1.234`.
fn json_millis(out: &mut Vec<u8>, key: &[u8], v: Option<Duration>) {
    out.extend_from_slice(key);
    let Some(d) = v else {
        out.extend_from_slice(b"null");
        return;
    };
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn json_addr(out: &mut Vec<u8>, key: &[u8], v: Option<SocketAddr>) {
    out.extend_from_slice(key);
    match v {
        None => out.extend_from_slice(b"null"),
        Some(SocketAddr::V4(a)) => {
            out.push(b'"');
            let mut b = itoa::Buffer::new();
            for (i, octet) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(b.format(*octet).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(b.format(a.port()).as_bytes());
            out.push(b'"');
        }
        // IPv6 text has no characters that need escaping.
        Some(a) => {
            let _ = write!(out, "\"{a}\"");
        }
    }
}

/// JSON string escaping (RFC 8259 section 7): `"` and `\\` escaped, control characters
/// as `\\n`-style or `\\u00XX` escapes; everything else, UTF-8 included, as is.
fn json_escape(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Nearly every value needs no escaping: find out eight bytes at a time, then copy it
    // whole.
    let clean = !needs_escape(bytes);
    if clean {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX_DIGITS[usize::from(b >> 4)]);
                out.push(HEX_DIGITS[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Whether `bytes` holds a `"`, a `\\` or a control character, tested a word at a time
/// with the classic bit tricks ("determine if a word has a byte less than n / equal to
/// n"): exact, no false positives, and non-ASCII bytes never match.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGHS: u64 = ONES * 0x80;
    let has_less = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if has_less(x, 0x20)
            | has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// RFC 3339 UTC with milliseconds, written digit by digit.
fn push_timestamp(out: &mut Vec<u8>, t: SystemTime) {
    let (year, month, day, h, m, sec, ms) = Rfc3339Millis(t).parts();
    if !(0..=9999).contains(&year) {
        push_display(out, Rfc3339Millis(t));
        return;
    }
    let two = |out: &mut Vec<u8>, v: u32, sep: u8| {
        out.push(b'0' + (v / 10 % 10) as u8);
        out.push(b'0' + (v % 10) as u8);
        out.push(sep);
    };
    let y = year as u32;
    out.extend_from_slice(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
        b'-',
    ]);
    two(out, month, b'-');
    two(out, day, b'T');
    two(out, h, b':');
    two(out, m, b':');
    two(out, sec, b'.');
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// Formats `r` in Envoy's default access-log format (with the trailing `'\n'`), appended to
/// `out`:
///
/// ```text
/// [START_TIME] "METHOD PATH PROTOCOL" STATUS FLAGS BYTES_RECEIVED BYTES_SENT DURATION_MS UPSTREAM_TTFB_MS "X-FORWARDED-FOR" "USER-AGENT" "REQUEST-ID" "AUTHORITY" "UPSTREAM_HOST"
/// ```
///
/// Absent values are `-`, durations are whole milliseconds. Quotes, backslashes and control
/// characters inside fields are escaped (`\"`, `\\`, `\n`, `\xNN`, `\u{NNNN}`) so a field
/// can't end its quotes early or start a new line.
pub fn format_text(r: &AccessRecord, out: &mut Vec<u8>) {
    out.push(b'[');
    push_display(out, Rfc3339Millis(r.start_time));
    out.extend_from_slice(b"] \"");
    push_escaped(out, r.method.as_ref().map(http::Method::as_str));
    out.push(b' ');
    push_escaped(out, Some(&r.path));
    out.push(b' ');
    push_escaped(out, Some(r.protocol));
    out.extend_from_slice(b"\" ");
    push_display(out, r.status);
    out.push(b' ');
    push_escaped(out, Some(&r.response_flags));
    out.push(b' ');
    push_display(out, r.bytes_received);
    out.push(b' ');
    push_display(out, r.bytes_sent);
    out.push(b' ');
    push_display(out, r.duration.as_millis());
    out.push(b' ');
    match r.upstream_ttfb {
        Some(ttfb) => push_display(out, ttfb.as_millis()),
        None => out.push(b'-'),
    }
    let upstream_host = r.upstream_address.map(|addr| addr.to_string());
    for field in [
        r.forwarded_for.as_deref(),
        r.user_agent.as_deref(),
        r.request_id.as_deref(),
        Some(r.authority.as_str()),
        upstream_host.as_deref(),
    ] {
        out.extend_from_slice(b" \"");
        push_escaped(out, field);
        out.push(b'"');
    }
    out.push(b'\n');
}

fn push_display(out: &mut Vec<u8>, value: impl fmt::Display) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// Appends `value` with quotes, backslashes and control characters escaped; `-` when absent
/// or empty.
fn push_escaped(out: &mut Vec<u8>, value: Option<&str>) {
    let value = match value {
        Some(v) if !v.is_empty() => v,
        _ => {
            out.push(b'-');
            return;
        }
    };
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if c.is_ascii_control() => push_display(out, format_args!("\\x{:02x}", c as u32)),
            // C1 controls, line/paragraph separators and bidi overrides: they can break or
            // visually reorder a line in a terminal or log viewer.
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                push_display(out, format_args!("\\u{{{:04x}}}", c as u32));
            }
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

/// A time shown as RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T14:50:01.123Z`.
#[derive(Clone, Copy)]
struct Rfc3339Millis(SystemTime);

impl Rfc3339Millis {
    /// (year, month, day, hour, minute, second, millisecond), floored to the millisecond
    /// (also before 1970).
    fn parts(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        // The common case in plain 64-bit arithmetic (the 128-bit path below costs a
        // library division per line).
        if let Ok(after) = self.0.duration_since(UNIX_EPOCH) {
            let secs = after.as_secs();
            let days = (secs / 86_400) as i64;
            let of_day = (secs % 86_400) as u32;
            let (year, month, day) = civil_from_days(days);
            return (
                year,
                month,
                day,
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60,
                after.subsec_millis(),
            );
        }
        let millis: i128 = match self.0.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_millis() as i128,
            Err(before) => (-(before.duration().as_nanos() as i128)).div_euclid(1_000_000),
        };
        let secs = millis.div_euclid(1000);
        let ms = millis.rem_euclid(1000) as u32;
        let days = secs.div_euclid(86_400) as i64;
        let of_day = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        (
            year,
            month,
            day,
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            ms,
        )
    }
}

impl fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, h, m, s, ms) = self.parts();
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z"
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>):
/// shift the epoch to 0000-03-01 so the leap day ends the year, then split into 400-year eras
/// of 146,097 days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use std::sync::mpsc::Receiver;

    use serde_json::{Value, json};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn counter() -> (Counter, Arc<AtomicU64>) {
        let value = Arc::new(AtomicU64::new(0));
        (Counter::from_arc(value.clone()), value)
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn http_record() -> AccessRecord {
        AccessRecord {
            start_time: at(1_795_704_601, 123),
            kind: Kind::Http,
            direction: "outbound",
            listener: "outbound_0.0.0.0_15001".into(),
            route: "reviews-v1".into(),
            cluster: "outbound|9080||reviews.default.svc.cluster.local".into(),
            upstream_address: Some("10.0.0.7:9080".parse().unwrap()),
            downstream_address: "10.0.0.3:51234".parse().unwrap(),
            method: Some(http::Method::GET),
            authority: "reviews:9080".to_owned(),
            path: "/reviews/0?x=1".to_owned(),
            protocol: "HTTP/1.1",
            status: 200,
            grpc_status: None,
            response_flags: "-".into(),
            attempts: 1,
            bytes_received: 0,
            bytes_sent: 358,
            duration: Duration::from_micros(12_345),
            upstream_ttfb: Some(Duration::from_micros(10_001)),
            request_id: Some("6d5c5b8e-1f0a-4b7e-9a3c-2f1d0e9c8b7a".to_owned()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
            span_id: Some("00f067aa0ba902b7".to_owned()),
            user_agent: Some("curl/8.5.0".to_owned()),
            forwarded_for: Some("192.0.2.1, 10.0.0.3".to_owned()),
            peer_identity: Some("spiffe://cluster.local/ns/default/sa/reviews".to_owned()),
            authz_decision: Some("allow"),
            authz_rule: Some("allow-productpage".to_owned()),
        }
    }

    fn tcp_record() -> AccessRecord {
        AccessRecord {
            start_time: at(0, 0),
            kind: Kind::Tcp,
            direction: "inbound",
            listener: "inbound_15006".into(),
            route: "".into(),
            cluster: "".into(),
            upstream_address: None,
            downstream_address: "[2001:db8::1]:40000".parse().unwrap(),
            method: None,
            authority: String::new(),
            path: String::new(),
            protocol: "TCP",
            status: 0,
            grpc_status: None,
            response_flags: "UF,URX".into(),
            attempts: 2,
            bytes_received: 17,
            bytes_sent: 0,
            duration: Duration::from_millis(3),
            upstream_ttfb: None,
            request_id: None,
            trace_id: None,
            span_id: None,
            user_agent: None,
            forwarded_for: None,
            peer_identity: None,
            authz_decision: None,
            authz_rule: None,
        }
    }

    fn json_line(r: &AccessRecord) -> (String, Value) {
        let mut out = Vec::new();
        format_json(r, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(
            line.matches('\n').count(),
            1,
            "one record, one line: {line:?}"
        );
        let value = serde_json::from_str(&line).unwrap();
        (line, value)
    }

    fn text_line(r: &AccessRecord) -> String {
        let mut out = Vec::new();
        format_text(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_success_record() {
        let (line, value) = json_line(&http_record());
        assert_eq!(
            value,
            json!({
                "timestamp": "2026-11-26T14:50:01.123Z",
                "kind": "http",
                "direction": "outbound",
                "listener": "outbound_0.0.0.0_15001",
                "route": "reviews-v1",
                "cluster": "outbound|9080||reviews.default.svc.cluster.local",
                "upstream_address": "10.0.0.7:9080",
                "downstream_address": "10.0.0.3:51234",
                "method": "GET",
                "authority": "reviews:9080",
                "path": "/reviews/0?x=1",
                "protocol": "HTTP/1.1",
                "status": 200,
                "grpc_status": null,
                "response_flags": "-",
                "attempts": 1,
                "bytes_received": 0,
                "bytes_sent": 358,
                "duration_ms": 12.345,
                "upstream_ttfb_ms": 10.001,
                "request_id": "6d5c5b8e-1f0a-4b7e-9a3c-2f1d0e9c8b7a",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": "00f067aa0ba902b7",
                "user_agent": "curl/8.5.0",
                "x_forwarded_for": "192.0.2.1, 10.0.0.3",
                "peer_identity": "spiffe://cluster.local/ns/default/sa/reviews",
                "authz_decision": "allow",
                "authz_rule": "allow-productpage",
            })
        );
        // Keys come out in the documented order.
        let keys = JSON_KEYS;
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{line}");
    }

    #[test]
    fn json_tcp_record() {
        let (_, value) = json_line(&tcp_record());
        assert_eq!(
            value,
            json!({
                "timestamp": "1970-01-01T00:00:00.000Z",
                "kind": "tcp",
                "direction": "inbound",
                "listener": "inbound_15006",
                "route": "",
                "cluster": "",
                "upstream_address": null,
                "downstream_address": "[2001:db8::1]:40000",
                "method": null,
                "authority": "",
                "path": "",
                "protocol": "TCP",
                "status": 0,
                "grpc_status": null,
                "response_flags": "UF,URX",
                "attempts": 2,
                "bytes_received": 17,
                "bytes_sent": 0,
                "duration_ms": 3.0,
                "upstream_ttfb_ms": null,
                "request_id": null,
                "trace_id": null,
                "span_id": null,
                "user_agent": null,
                "x_forwarded_for": null,
                "peer_identity": null,
                "authz_decision": null,
                "authz_rule": null,
            })
        );
    }

    const HOSTILE: &str =
        "a\"b\\c\nd\re\tf\u{0}\u{1b}[31mg\u{7f}h\u{85}i\u{2028}j\u{202e}k é 日本 🦀\"}\n{\"x\":1";

    #[test]
    fn json_escapes_hostile_strings() {
        let mut r = http_record();
        r.path = HOSTILE.to_owned();
        r.authority = HOSTILE.to_owned();
        r.user_agent = Some(HOSTILE.to_owned());
        r.forwarded_for = Some(HOSTILE.to_owned());
        r.authz_rule = Some(HOSTILE.to_owned());
        r.listener = HOSTILE.into();
        r.response_flags = Cow::Owned(HOSTILE.to_owned());
        r.method = Some(http::Method::from_bytes(b"PURGE").unwrap());
        r.grpc_status = Some(14);
        let (_, value) = json_line(&r);
        for key in [
            "path",
            "authority",
            "user_agent",
            "x_forwarded_for",
            "authz_rule",
            "listener",
            "response_flags",
        ] {
            assert_eq!(value[key], HOSTILE, "{key}");
        }
        assert_eq!(value["method"], "PURGE");
        assert_eq!(value["grpc_status"], 14);
        assert_eq!(value.as_object().unwrap().len(), 28);
    }

    #[test]
    fn escape_detection_matches_the_simple_rule() {
        // Every byte value at every position of a 17-byte string (two words and a tail).
        for pos in 0..17 {
            for b in 0..=255u8 {
                let mut v = vec![b'a'; 17];
                v[pos] = b;
                let simple = v.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
                assert_eq!(needs_escape(&v), simple, "byte {b:#x} at {pos}");
            }
        }
    }

    #[test]
    fn timestamps() {
        let cases = [
            (at(0, 0), "1970-01-01T00:00:00.000Z"),
            (at(0, 1), "1970-01-01T00:00:00.001Z"),
            (at(86_399, 999), "1970-01-01T23:59:59.999Z"),
            (at(946_684_799, 999), "1999-12-31T23:59:59.999Z"),
            (at(951_782_400, 0), "2000-02-29T00:00:00.000Z"),
            (at(1_709_251_199, 500), "2024-02-29T23:59:59.500Z"),
            (at(1_795_704_601, 123), "2026-11-26T14:50:01.123Z"),
            (at(4_102_444_799, 0), "2099-12-31T23:59:59.000Z"),
            (at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z"),
            (at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z"),
            (at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z"),
            // Sub-millisecond parts are truncated, not rounded.
            (
                at(0, 0) + Duration::from_micros(1_999),
                "1970-01-01T00:00:00.001Z",
            ),
            // Before 1970 (a clock set back): floor, not toward zero.
            (
                UNIX_EPOCH - Duration::from_micros(1),
                "1969-12-31T23:59:59.999Z",
            ),
            (
                UNIX_EPOCH - Duration::from_secs(86_400),
                "1969-12-31T00:00:00.000Z",
            ),
        ];
        for (time, want) in cases {
            assert_eq!(Rfc3339Millis(time).to_string(), want);
        }
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            text_line(&http_record()),
            "[2026-11-26T14:50:01.123Z] \"GET /reviews/0?x=1 HTTP/1.1\" 200 - 0 358 12 10 \
             \"192.0.2.1, 10.0.0.3\" \"curl/8.5.0\" \"6d5c5b8e-1f0a-4b7e-9a3c-2f1d0e9c8b7a\" \
             \"reviews:9080\" \"10.0.0.7:9080\"\n"
        );
        assert_eq!(
            text_line(&tcp_record()),
            "[1970-01-01T00:00:00.000Z] \"- - TCP\" 0 UF,URX 17 0 3 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
        );
    }

    #[test]
    fn text_escapes_hostile_strings() {
        let mut r = tcp_record();
        r.user_agent = Some(HOSTILE.to_owned());
        let line = text_line(&r);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(
            line.contains(
                r#" "a\"b\\c\nd\re\tf\x00\x1b[31mg\x7fh\u{0085}i\u{2028}j\u{202e}k é 日本 🦀\"}\n{\"x\":1" "#
            ),
            "{line}"
        );
    }

    fn temp_path() -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        std::env::temp_dir().join(format!(
            "weft-access-log-test-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    #[test]
    fn writes_to_a_file_and_appends() {
        let path = temp_path();
        let (written, written_n) = counter();
        let (dropped, dropped_n) = counter();
        for round in 1..=2 {
            let log = AccessLog::open(
                Sink::File(path.clone()),
                Format::Json,
                1 << 20,
                written.clone(),
                dropped.clone(),
            )
            .unwrap();
            assert_eq!(log.sink(), &Sink::File(path.clone()));
            assert_eq!(log.format(), Format::Json);
            for i in 0..500 {
                let mut r = http_record();
                r.attempts = i;
                log.log(&r);
            }
            assert!(log.flush_blocking(WAIT));
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 500 * round);
            let attempts: Vec<u64> = lines
                .iter()
                .map(|v| v["attempts"].as_u64().unwrap())
                .collect();
            assert_eq!(
                attempts[500 * (round - 1)..],
                (0..500).collect::<Vec<_>>()[..]
            );
        }
        assert_eq!(written_n.load(Ordering::Relaxed), 1000);
        assert_eq!(dropped_n.load(Ordering::Relaxed), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_bad_path_fails_at_open() {
        let path = temp_path().join("no-such-dir").join("access.log");
        let err = AccessLog::open(
            Sink::File(path.clone()),
            Format::Text,
            10,
            Counter::noop(),
            Counter::noop(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, AccessLogError::Open { path: p, .. } if *p == path),
            "{err}"
        );
    }

    /// A sink that records what reached it and can be told to block or fail.
    #[derive(Clone, Default)]
    struct TestSink {
        bytes: Arc<Mutex<Vec<u8>>>,
    }

    impl TestSink {
        fn lines(&self) -> Vec<String> {
            let bytes = self.bytes.lock().unwrap();
            String::from_utf8(bytes.clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Blocks its first write until released.
    struct Gated {
        sink: TestSink,
        entered: Option<Sender<()>>,
        release: Receiver<()>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(entered) = self.entered.take() {
                entered.send(()).unwrap();
                self.release.recv().unwrap();
            }
            self.sink.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_drops_instead_of_blocking() {
        let sink = TestSink::default();
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let gated = Gated {
            sink: sink.clone(),
            entered: Some(entered_tx),
            release: release_rx,
        };
        let (written, written_n) = counter();
        let (dropped, dropped_n) = counter();
        let mut one = Vec::new();
        format_json(&http_record(), &mut one);
        // Room for exactly 100 lines.
        let log = AccessLog::open_writer(
            Sink::Stdout,
            Box::new(gated),
            Format::Json,
            100 * one.len(),
            written,
            dropped,
        )
        .unwrap();

        // The first record is taken and its write blocks; everything after is buffered or
        // dropped, and `log` keeps returning at once.
        log.log(&http_record());
        entered.recv_timeout(WAIT).unwrap();
        for _ in 1..10_000 {
            log.log(&http_record());
        }
        let dropped_while_stalled = dropped_n.load(Ordering::Relaxed);
        // Exactly: one record in flight, 100 buffered.
        assert_eq!(dropped_while_stalled, 10_000 - 1 - 100);
        assert_eq!(written_n.load(Ordering::Relaxed), 0);

        release.send(()).unwrap();
        assert!(log.flush_blocking(WAIT));
        let written = written_n.load(Ordering::Relaxed);
        assert_eq!(written, 101);
        assert_eq!(written + dropped_n.load(Ordering::Relaxed), 10_000);
        assert_eq!(sink.lines().len(), 101);
    }

    /// Fails its first write after taking `first_bytes` bytes of it.
    struct Failing {
        sink: TestSink,
        first_bytes: Option<usize>,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.first_bytes.take() {
                Some(0) => Err(io::Error::other("disk full")),
                Some(n) => {
                    self.sink.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                    // The next call is the one that fails.
                    self.first_bytes = Some(0);
                    Ok(n)
                }
                None => {
                    self.sink.bytes.lock().unwrap().extend_from_slice(buf);
                    Ok(buf.len())
                }
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_counts_what_was_lost_and_keeps_lines_whole() {
        let sink = TestSink::default();
        let mut line = Vec::new();
        format_json(&http_record(), &mut line);
        // Two whole lines and half of the third reach the sink before the error.
        let failing = Failing {
            sink: sink.clone(),
            first_bytes: Some(line.len() * 2 + line.len() / 2),
        };
        let (written, written_n) = counter();
        let (dropped, dropped_n) = counter();
        // Two batches, each ended by a flush: five records (the failing write), then three.
        let log = AccessLog::open_writer(
            Sink::Stderr,
            Box::new(failing),
            Format::Json,
            1 << 20,
            written,
            dropped,
        )
        .unwrap();
        for _ in 0..5 {
            log.log(&http_record());
        }
        assert!(log.flush_blocking(WAIT));
        for _ in 0..3 {
            log.log(&http_record());
        }
        assert!(log.flush_blocking(WAIT));

        let written = written_n.load(Ordering::Relaxed);
        let dropped = dropped_n.load(Ordering::Relaxed);
        assert_eq!(written + dropped, 8);
        assert_eq!((written, dropped), (5, 3));
        let lines = sink.lines();
        // The torn line is terminated before the next batch, so the later lines parse.
        let whole = lines
            .iter()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .count() as u64;
        assert_eq!(whole, written);
        assert_eq!(lines.len() as u64, written + 1);
        assert!(serde_json::from_str::<Value>(lines.last().unwrap()).is_ok());
    }

    /// Reports when the writer thread drops it.
    struct Dropped {
        sink: TestSink,
        _gone: Sender<()>,
    }

    impl Write for Dropped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sink.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_writer_drains_the_queue_and_ends_when_the_last_clone_drops() {
        let sink = TestSink::default();
        let (gone, gone_rx) = mpsc::channel::<()>();
        let writer = Dropped {
            sink: sink.clone(),
            _gone: gone,
        };
        let (written, written_n) = counter();
        let log = AccessLog::open_writer(
            Sink::Stdout,
            Box::new(writer),
            Format::Text,
            1 << 20,
            written,
            Counter::noop(),
        )
        .unwrap();
        let other = log.clone();
        for _ in 0..300 {
            log.log(&tcp_record());
            other.log(&http_record());
        }
        drop(log);
        drop(other);
        assert_eq!(
            gone_rx.recv_timeout(WAIT),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        assert_eq!(sink.lines().len(), 600);
        assert_eq!(written_n.load(Ordering::Relaxed), 600);
    }
}
