//! Weft's observability plumbing, shared by every role.
//!
//! - [`logging`]: the process-wide `tracing` subscriber (text or JSON, level from a flag
//!   or `RUST_LOG`, changeable at run time).
//! - [`metrics`]: a Prometheus registry owned by one proxy instance, so two proxies in one
//!   process (as in the tests) never mix their numbers, and handles that the data path
//!   caches instead of looking metrics up per request.
//! - [`names`]: every metric name and label Weft exports, in one place. Request metrics
//!   use Istio's standard names so existing dashboards work unchanged.
//! - [`access_log`]: access-log records and their writer, off the data path.
//! - [`propagation`]: W3C and B3 trace-context headers, read and written.
//! - [`trace`]: sampling, spans and their OTLP export, off the data path.
//! - [`process`]: `process_*` figures (memory, CPU, file descriptors) at scrape time.

pub mod access_log;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod process;
pub mod propagation;
pub mod trace;

pub use crate::metrics::Registry;
