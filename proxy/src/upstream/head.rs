//! A request head that attempts share: the method, target, version and headers an
//! upstream gets, without the body.
//!
//! A request that may be retried keeps its head for the next try. Held in an `Arc`,
//! keeping it costs a reference count, not a copy of every header: the HTTP/1.1 codec
//! encodes straight from a shared head. Only what must own a `Request` (the HTTP/2 and
//! upgrade clients) copies it, and only a traced request, whose every try carries its own
//! `traceparent`, copies it to write that.

use http::{HeaderMap, Method, Request, Uri, Version};

/// What an upstream request is apart from its body.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// Target (origin form for HTTP/1.1 upstreams).
    pub uri: Uri,
    /// Version the client used (the upstream's is the cluster's).
    pub version: Version,
    /// Headers, hop-by-hop ones already removed.
    pub headers: HeaderMap,
}

impl RequestHead {
    /// The head of `parts` (its extensions are dropped: nothing upstream reads them).
    pub fn from_parts(parts: http::request::Parts) -> Self {
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        }
    }

    /// An owned request with this head and `body`.
    pub fn to_request<B>(&self, body: B) -> Request<B> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}
