//! The HTTP data path.
//!
//! - [`server`]: accepts a connection and serves HTTP/1.1 and HTTP/2 (prior knowledge,
//!   detected from the first bytes) on it;
//! - [`h1`]: the HTTP/1.1 connection loop (hyper's server takes over for upgrades and
//!   streamed request bodies);
//! - [`wire`]: HTTP/1.1 framing pieces shared with the upstream codec;
//! - [`handler`]: one request: route, answer locally or forward;
//! - [`headers`]: hop-by-hop removal, forwarding headers, rewrites (pure);
//! - [`upgrade`]: WebSocket and CONNECT tunnels;
//! - [`body`]: the streaming body type;
//! - [`error`]: the one mapping from failure causes to responses.

pub mod body;
pub mod cors;
pub mod error;
pub mod h1;
pub mod handler;
pub mod headers;
pub mod security;
pub mod server;
pub mod upgrade;
pub mod wire;

pub use self::body::{Body, BoxError};
pub use self::error::ProxyError;
