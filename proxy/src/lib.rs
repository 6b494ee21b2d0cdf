//! Weft's data plane: one binary that is both the service-mesh sidecar and the API
//! gateway.
//!
//! The map (see `ARCHITECTURE.md` for the whole picture):
//! - [`config`]: files in (friendly `weft.yaml` or Envoy format), Envoy v3 resources out;
//! - [`snapshot`]: resources validated into an immutable [`snapshot::Snapshot`];
//! - [`state`]: the active snapshot plus its runtime parts (clusters with endpoints,
//!   balancers and connection pools), swapped atomically;
//! - [`upstream`]: clusters, load balancing, pooled HTTP clients;
//! - [`http`]: the HTTP data path (server, routing, forwarding, errors, upgrades);
//! - [`tcp`]: the TCP proxy;
//! - [`observe`]: per-request metrics, access-log records and trace spans;
//! - [`listeners`]: binds sockets for the snapshot's listeners and keeps them in step;
//! - [`admin`]: the admin server; [`explain`]: how a request would be handled;
//! - [`resilience`]: timeouts, retries, circuit breaking, rate limits, fault injection;
//! - [`reload`]: file watching and SIGHUP; [`demo`]: the online-shop demo;
//! - [`proxy`]: a running proxy assembled from the above (what `weft run` starts).

pub mod admin;
pub mod authn;
pub mod authz;
pub mod config;
pub mod demo;
pub mod drain;
pub mod explain;
pub mod http;
pub mod listeners;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod resilience;
pub mod snapshot;
pub mod state;
pub mod tcp;
pub mod tls;
pub mod upstream;
