//! Process-wide structured logging through `tracing`.
//!
//! The level comes from the explicit filter if one is given, else from `RUST_LOG`, else
//! `info`. Installing twice (as tests that start several proxies do) is not an error: the
//! first subscriber stays.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Errors from setting up logging.
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
}

/// Installs the global subscriber writing to stderr.
///
/// `filter` takes `RUST_LOG` syntax (`info`, `weft_proxy=debug,hyper=warn`).
pub fn init(filter: Option<&str>, format: LogFormat) -> Result<(), LoggingError> {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).map_err(|source| LoggingError::Filter {
            filter: f.to_owned(),
            source,
        })?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only for a terminal: redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second install in the same process fails harmlessly; the first one keeps logging.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
