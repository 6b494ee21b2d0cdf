//! Process-wide structured logging through `tracing`.
//!
//! The level comes from the explicit filter if one is given, else from `RUST_LOG`, else
//! `info`, and can be changed while running ([`set_filter`], behind the admin server's
//! `/logging`). Installing twice (as tests that start several proxies do) is not an
//! error: the first subscriber stays.

use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Errors from setting up or changing logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter directive could not be parsed.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The directive as given.
        filter: String,
        /// Why it did not parse.
        source: tracing_subscriber::filter::ParseError,
    },
    /// Logging was not installed by [`init`] (another subscriber is in charge).
    #[error("the log level cannot be changed: logging was not set up by weft")]
    NotInstalled,
}

/// The handle that swaps the filter, and the filter's text (for display).
struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// The log filter without `--log-level` or `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info,rustls=error";

/// Installs the global subscriber writing to stderr.
///
/// `filter` takes `RUST_LOG` syntax (`info`, `weft_proxy=debug,hyper=warn`).
pub fn init(filter: Option<&str>, format: LogFormat) -> Result<(), LoggingError> {
    let (filter, text) = match filter {
        Some(f) => (parse(f)?, f.to_owned()),
        None => match std::env::var("RUST_LOG") {
            Ok(v) if EnvFilter::try_new(&v).is_ok() => (parse(&v)?, v),
            // rustls warns about every peer that misbehaves (a client sending an IP
            // address as SNI, a scanner): one line per handshake would flood the log,
            // and Weft counts failed handshakes itself (weft_tls_handshakes_total).
            _ => (EnvFilter::new(DEFAULT_FILTER), DEFAULT_FILTER.to_owned()),
        },
    };
    let (layer, handle) = reload::Layer::new(filter);
    // Colours only for a terminal: redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second install in the same process fails harmlessly; the first one keeps logging.
    let installed = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer)
            .with(fmt)
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer)
            .with(fmt.json().flatten_event(true))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            current: Mutex::new(text),
        });
    }
    Ok(())
}

fn parse(f: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(f).map_err(|source| LoggingError::Filter {
        filter: f.to_owned(),
        source,
    })
}

/// Replaces the active filter (`debug`, `weft_proxy=trace,info`); the old one stays if
/// the new one does not parse.
pub fn set_filter(filter: &str) -> Result<(), LoggingError> {
    let control = CONTROL.get().ok_or(LoggingError::NotInstalled)?;
    let parsed = parse(filter)?;
    control
        .handle
        .reload(parsed)
        .map_err(|_| LoggingError::NotInstalled)?;
    *control
        .current
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = filter.to_owned();
    Ok(())
}

/// The active filter, as text (`None` if logging was not set up by [`init`]).
pub fn current_filter() -> Option<String> {
    CONTROL.get().map(|c| {
        c.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    })
}
