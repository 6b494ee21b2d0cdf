//! The xDS protocol for Weft (not built yet: the control-plane issue brings it).
//!
//! This crate will own the aggregated discovery service (ADS) over gRPC, state of the
//! world and delta: one stream per control plane, resource versions and nonces, ACK and
//! NACK with `error_detail`, reconnect backoff; and a small ADS server that the tests and
//! `weft control-plane` use to push resources.
//!
//! The proxy already speaks the same resources: its file configuration compiles to
//! Envoy v3 Listener, RouteConfiguration, Cluster and ClusterLoadAssignment messages, so
//! resources from a control plane will enter the same validation and snapshot path.
//!
//! Until then it holds no code: nothing here pretends to work.
