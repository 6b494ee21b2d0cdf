//! Workload identity and mutual TLS for Weft (not built yet: the identity-and-security
//! issue brings it).
//!
//! This crate will own:
//! - `SpiffeId` (`spiffe://trust-domain/ns/NS/sa/SA`), validated on parse;
//! - the certificate store: workload cert, key and trust bundle from PEM files (or any
//!   other producer, such as SDS), published through a watch channel, rotated without
//!   touching open connections;
//! - rustls client and server configurations for TLS 1.3 mTLS between proxies, with the
//!   peer's URI SAN checked against the identity expected for the cluster;
//! - the development CA behind `weft ca init|issue` (rcgen, ECDSA P-256).
//!
//! Until then it holds no code: nothing here pretends to work.
