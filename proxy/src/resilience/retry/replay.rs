//! Request bodies kept for replay. A retry must send the same body again, so a request
//! that may be retried has its body read before the first attempt, but only when its
//! declared length (`content-length`) is within the route's cap (64 KiB unless
//! configured): a bigger body, or one of unknown length, streams as usual and is never
//! retried. Memory per request stays bounded by the cap.

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};

use crate::http::{Body, ProxyError};

/// The body to send: held whole (replayable) if it is small enough, else streamed.
/// Returns its length when held.
pub async fn hold(body: Body, cap: usize) -> Result<(Body, Option<u64>), ProxyError> {
    if body.is_end_stream() {
        return Ok((Body::Empty, Some(0)));
    }
    // A body that came whole with its head (see `http::h1`) is held already.
    if let Body::Full(Some(b)) = &body
        && b.len() <= cap
    {
        let n = b.len() as u64;
        return Ok((body, Some(n)));
    }
    match body.size_hint().exact() {
        Some(len) if len <= cap as u64 => {
            // `Limited` guards against a peer sending more than it declared.
            let bytes: Bytes = Limited::new(body, cap)
                .collect()
                .await
                .map_err(ProxyError::DownstreamReset)?
                .to_bytes();
            let n = bytes.len() as u64;
            Ok((Body::full(bytes), Some(n)))
        }
        _ => Ok((body, None)),
    }
}
