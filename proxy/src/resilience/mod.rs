//! Resilience policies as tower layers: what keeps services answering when their
//! dependencies misbehave.
//!
//! ```text
//! route level:    rate limit -> fault -> forward
//! upstream level: retry (policy, budget, replay) -> per-try timeout -> endpoint
//!                 (circuit breaker, balancer skipping ejected endpoints, pool)
//! ```
//! Each layer is a folder in tower's file shape (`mod.rs` with the service, `layer.rs`,
//! `future.rs`) plus a pure decision module tested by tables. The services are built per
//! request over borrowed state (the snapshot, the cluster), so nothing is boxed or
//! reference-counted for them; their futures borrow what the request already holds.
//! Outlier detection and active health checks are endpoint state, not layers: they live
//! in [`crate::upstream::outlier`] and [`crate::upstream::health`].
