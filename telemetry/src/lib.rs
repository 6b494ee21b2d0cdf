//! Weft's observability plumbing, shared by every role.
//!
//! - [`logging`]: the process-wide `tracing` subscriber (text or JSON, level from a flag
//!   or `RUST_LOG`).
//! - [`metrics`]: a Prometheus registry owned by one proxy instance, so two proxies in one
//!   process (as in the tests) never mix their numbers, and handles that the data path
//!   caches instead of looking metrics up per request.
//! - [`names`]: every metric name and label Weft exports, in one place. Request metrics
//!   use Istio's standard names so existing dashboards work unchanged.
//!
//! Traces (OTLP) and access logs will live here too; the proxy only calls this crate.

pub mod logging;
pub mod metrics;
pub mod names;

pub use crate::metrics::Registry;
