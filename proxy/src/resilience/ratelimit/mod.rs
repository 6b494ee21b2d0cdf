//! Local rate limiting of a route (Envoy's `local_ratelimit` filter): token buckets
//! kept in this proxy, no rate-limit service.
//!
//! A [`Limiter`] is the run-time state of one route's [`policy::RateLimit`]: built once
//! per snapshot, shared by every request of the route across tasks. For each request it
//! picks a bucket the way Envoy matches descriptors: the route's descriptor sources turn
//! the request into entries (`remote_address` = the client IP, a header's value under
//! its key); the first configured descriptor whose key matches an entry and whose value
//! equals it (or that has no value: one bucket per distinct value) gives the bucket;
//! otherwise the route-wide bucket does, and without one the request passes.
//!
//! [`RateLimit`] is the tower service in front of a route's forwarding: it asks the
//! limiter, answers [`ProxyError::RateLimited`] (429) without calling the inner service
//! when the bucket is empty, and adds the `x-ratelimit-*` headers to allowed responses
//! when the policy asks for them. A route that does not enforce its limit only counts
//! what would have been refused.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Duration;
//!
//! use tower::{Layer, ServiceExt};
//! use weft_proxy::http::{Body, ProxyError};
//! use weft_proxy::resilience::ratelimit::{Limiter, RateLimitLayer};
//! use weft_proxy::snapshot::policy::{RateLimit, TokenBucket};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limiter = Limiter::new(&RateLimit {
//!     bucket: Some(TokenBucket {
//!         max_tokens: 1,
//!         tokens_per_fill: 1,
//!         fill_interval: Duration::from_secs(1),
//!     }),
//!     sources: Vec::new(),
//!     descriptors: Vec::new(),
//!     enforced: true,
//!     headers: true,
//! });
//! let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let forward = tower::service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, ProxyError>(http::Response::new(Body::Empty))
//! });
//! let first = RateLimitLayer::new(&limiter, client)
//!     .layer(forward)
//!     .oneshot(http::Request::new(()))
//!     .await;
//! assert_eq!(first.unwrap().headers()["x-ratelimit-remaining"], "0");
//! let second = RateLimitLayer::new(&limiter, client)
//!     .layer(forward)
//!     .oneshot(http::Request::new(()))
//!     .await;
//! assert!(matches!(second, Err(ProxyError::RateLimited(_))));
//! # }
//! ```

mod bucket;
pub mod future;
mod layer;
#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use metrics::Counter;
use tokio::time::Instant;
use tower::Service;

use self::bucket::{Bucket, KeyedBuckets, Take};
use self::future::ResponseFuture;
pub use self::layer::RateLimitLayer;
use crate::http::error::RateLimitInfo;
use crate::http::{Body, ProxyError};
use crate::snapshot::policy::{self, DescriptorSource, TokenBucket};

/// Most buckets one per-value descriptor keeps (one per client IP, header value, ...).
pub const MAX_KEYS: usize = 10_000;

/// Descriptor key of the client-IP source (Envoy's `remote_address` action).
pub const REMOTE_ADDRESS: &str = "remote_address";

/// The run-time state of one route's [`policy::RateLimit`]: its buckets and counters.
///
/// `Send + Sync`: one per route and snapshot, shared by all the route's requests. A
/// check takes one short, uncontended-in-practice lock (the bucket's own, or the map's
/// for per-value buckets) and allocates only to make a per-value bucket.
#[derive(Debug)]
pub struct Limiter {
    route: Option<(TokenBucket, Mutex<Bucket>)>,
    sources: Vec<DescriptorSource>,
    descriptors: Vec<Descriptor>,
    enforced: bool,
    headers: bool,
    counters: RateLimitCounters,
}

/// A configured descriptor and its buckets.
#[derive(Debug)]
struct Descriptor {
    key: String,
    spec: TokenBucket,
    buckets: Buckets,
}

/// One bucket for one value, or one per distinct value.
#[derive(Debug)]
enum Buckets {
    Exact {
        value: Box<[u8]>,
        bucket: Mutex<Bucket>,
    },
    PerValue(Mutex<KeyedBuckets>),
}

/// Counters of a limiter's decisions (`weft_ratelimit_total{result}`); no-ops by
/// default.
#[derive(Clone, Debug)]
pub struct RateLimitCounters {
    /// Allowed requests (`result="ok"`), including those no bucket applies to.
    pub ok: Counter,
    /// Refused requests (`result="limited"`).
    pub limited: Counter,
    /// Requests over the limit on a route that does not enforce it
    /// (`result="would_limit"`); they were forwarded.
    pub would_limit: Counter,
}

impl Default for RateLimitCounters {
    /// Counters that count nothing.
    fn default() -> Self {
        Self {
            ok: Counter::noop(),
            limited: Counter::noop(),
            would_limit: Counter::noop(),
        }
    }
}

/// What a limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward; `None` when no bucket applies to the request.
    Allowed(Option<Quota>),
    /// Refuse with 429.
    Limited(RateLimitInfo),
    /// Over the limit, but the route does not enforce it: forward (and count).
    WouldLimit(RateLimitInfo),
}

/// The state of the bucket a request was counted against (the `x-ratelimit-*` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The bucket's size (`x-ratelimit-limit`).
    pub limit: u32,
    /// Tokens left (`x-ratelimit-remaining`).
    pub remaining: u32,
    /// Seconds until the next fill, at least 1 (`x-ratelimit-reset`).
    pub reset_secs: u64,
}

impl Limiter {
    /// The state for `policy`, buckets full, counters no-ops.
    pub fn new(policy: &policy::RateLimit) -> Self {
        Self::with_counters(policy, RateLimitCounters::default())
    }

    /// The state for `policy`, buckets full, counting into `counters`.
    pub fn with_counters(policy: &policy::RateLimit, counters: RateLimitCounters) -> Self {
        let now = Instant::now();
        let descriptors = policy
            .descriptors
            .iter()
            .map(|(key, value, spec)| Descriptor {
                key: key.clone(),
                spec: *spec,
                buckets: match value {
                    Some(value) => Buckets::Exact {
                        value: value.as_bytes().into(),
                        bucket: Mutex::new(Bucket::new(spec, now)),
                    },
                    None => Buckets::PerValue(Mutex::new(KeyedBuckets::new(MAX_KEYS))),
                },
            })
            .collect();
        Self {
            route: policy
                .bucket
                .map(|spec| (spec, Mutex::new(Bucket::new(&spec, now)))),
            sources: policy.sources.clone(),
            descriptors,
            enforced: policy.enforced,
            headers: policy.headers,
            counters,
        }
    }

    /// Whether allowed responses get the `x-ratelimit-*` headers.
    pub fn sends_headers(&self) -> bool {
        self.headers
    }

    /// Counts a request with `req_headers` from `client_ip` at `now` against its bucket.
    pub fn check(&self, req_headers: &HeaderMap, client_ip: IpAddr, now: Instant) -> Decision {
        let take = self
            .descriptor_take(req_headers, client_ip, now)
            .or_else(|| {
                self.route
                    .as_ref()
                    .map(|(spec, bucket)| (spec.max_tokens, lock(bucket).take(spec, now)))
            });
        let Some((limit, take)) = take else {
            self.counters.ok.increment(1);
            return Decision::Allowed(None);
        };
        if take.allowed {
            self.counters.ok.increment(1);
            return Decision::Allowed(Some(Quota {
                limit,
                remaining: take.remaining,
                reset_secs: take.reset_secs,
            }));
        }
        let info = RateLimitInfo {
            limit,
            reset_secs: take.reset_secs,
            headers: self.headers,
        };
        if self.enforced {
            self.counters.limited.increment(1);
            Decision::Limited(info)
        } else {
            self.counters.would_limit.increment(1);
            Decision::WouldLimit(info)
        }
    }

    /// The token taken from the first descriptor matching one of the request's entries
    /// (with that descriptor's size); `None` when none matches, or when a per-value map
    /// is full (the route's bucket then applies).
    fn descriptor_take(
        &self,
        req_headers: &HeaderMap,
        client_ip: IpAddr,
        now: Instant,
    ) -> Option<(u32, Take)> {
        if self.descriptors.is_empty() {
            return None;
        }
        for source in &self.sources {
            let ip;
            let (key, value): (&str, &[u8]) = match source {
                DescriptorSource::ClientIp => {
                    ip = IpText::new(client_ip);
                    (REMOTE_ADDRESS, ip.as_bytes())
                }
                DescriptorSource::Header { header, key } => match req_headers.get(header) {
                    Some(v) => (key, v.as_bytes()),
                    None => continue,
                },
            };
            for d in self.descriptors.iter().filter(|d| d.key == key) {
                match &d.buckets {
                    Buckets::Exact { value: v, bucket } if **v == *value => {
                        return Some((d.spec.max_tokens, lock(bucket).take(&d.spec, now)));
                    }
                    Buckets::Exact { .. } => {}
                    Buckets::PerValue(map) => {
                        return lock(map)
                            .take(value, &d.spec, now)
                            .map(|take| (d.spec.max_tokens, take));
                    }
                }
            }
        }
        None
    }
}

/// Locks a bucket. A panic while one is held cannot leave it inconsistent (the updates
/// are plain stores), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An IP address as text, on the stack: the `remote_address` descriptor value, without
/// an allocation per request.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut buf = [0; 48];
        // An IPv4 client on a dual-stack socket shows as `::ffff:a.b.c.d`; it is the same
        // client as `a.b.c.d` and must count against the same bucket.
        let ip = ip.to_canonical();
        let mut rest = &mut buf[..];
        // The longest IPv6 text is 45 bytes; the write cannot run out of room.
        let _ = write!(rest, "{ip}");
        let len = 48 - rest.len();
        Self { buf, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Local rate limiting in front of `S` for one request (see the module docs).
#[derive(Clone, Debug)]
pub struct RateLimit<'a, S> {
    inner: S,
    limiter: &'a Limiter,
    client_ip: IpAddr,
}

impl<'a, S> RateLimit<'a, S> {
    /// `inner` limited by `limiter`, for a request from `client_ip`.
    pub fn new(inner: S, limiter: &'a Limiter, client_ip: IpAddr) -> Self {
        Self {
            inner,
            limiter,
            client_ip,
        }
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for RateLimit<'_, S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = ProxyError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let headers = self.limiter.sends_headers();
        match self
            .limiter
            .check(req.headers(), self.client_ip, Instant::now())
        {
            Decision::Allowed(quota) => {
                ResponseFuture::forward(self.inner.call(req), quota.filter(|_| headers))
            }
            Decision::WouldLimit(info) => {
                let quota = headers.then_some(Quota {
                    limit: info.limit,
                    remaining: 0,
                    reset_secs: info.reset_secs,
                });
                ResponseFuture::forward(self.inner.call(req), quota)
            }
            Decision::Limited(info) => ResponseFuture::limited(info),
        }
    }
}
