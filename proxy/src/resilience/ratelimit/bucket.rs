//! Token buckets for local rate limiting: one bucket, and a bounded map of buckets keyed
//! by a descriptor value (one per client IP, per header value, ...).
//!
//! Pure: every operation is given the current time, so tests drive the clock and nothing
//! runs in the background. A bucket is filled lazily when it is next used, by as many
//! fills as whole fill intervals have passed since its last fill: the level Envoy's fill
//! timer would have produced, without a timer per bucket.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::snapshot::policy::TokenBucket;

/// The level of one token bucket. Its size and fill rate ([`TokenBucket`]) are kept by
/// the owner, so that the many buckets of a keyed map share one copy.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    tokens: u32,
    /// The last fill, on the grid of fill intervals that started when the bucket did
    /// (as a periodic timer would fill it).
    last_fill: Instant,
}

/// What taking a token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Take {
    /// A token was taken.
    pub(super) allowed: bool,
    /// Tokens left afterwards.
    pub(super) remaining: u32,
    /// Whole seconds until the next fill, at least 1.
    pub(super) reset_secs: u64,
}

impl Bucket {
    /// A bucket as Envoy starts one: full.
    pub(super) fn new(spec: &TokenBucket, now: Instant) -> Self {
        Self {
            tokens: spec.max_tokens,
            last_fill: now,
        }
    }

    /// Takes one token if there is one.
    pub(super) fn take(&mut self, spec: &TokenBucket, now: Instant) -> Take {
        self.fill(spec, now);
        let allowed = self.tokens > 0;
        if allowed {
            self.tokens -= 1;
        }
        Take {
            allowed,
            remaining: self.tokens,
            reset_secs: self.reset_secs(spec, now),
        }
    }

    /// Whether the bucket is back at its full level, i.e. no different from a new one
    /// (and so can be forgotten).
    pub(super) fn is_full(&mut self, spec: &TokenBucket, now: Instant) -> bool {
        self.fill(spec, now);
        self.tokens >= spec.max_tokens
    }

    /// Adds the fills due since the last one.
    fn fill(&mut self, spec: &TokenBucket, now: Instant) {
        let interval = interval(spec);
        let elapsed = now.saturating_duration_since(self.last_fill);
        if elapsed < interval {
            return;
        }
        let (elapsed, interval) = (elapsed.as_nanos(), interval.as_nanos());
        let added = (elapsed / interval).saturating_mul(u128::from(spec.tokens_per_fill));
        let level = (u128::from(self.tokens) + added).min(u128::from(spec.max_tokens));
        self.tokens = u32::try_from(level).unwrap_or(spec.max_tokens);
        // Stay on the grid: the part of an interval already elapsed counts toward the
        // next fill, as it would with a timer.
        let into_interval = u64::try_from(elapsed % interval).unwrap_or(0);
        self.last_fill = now
            .checked_sub(Duration::from_nanos(into_interval))
            .unwrap_or(now);
    }

    /// Whole seconds until the next fill, rounded up, at least 1 (`retry-after: 0`
    /// would invite an immediate retry that is refused again).
    fn reset_secs(&self, spec: &TokenBucket, now: Instant) -> u64 {
        let wait = self
            .last_fill
            .checked_add(interval(spec))
            .map_or(Duration::ZERO, |next| next.saturating_duration_since(now));
        (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
    }
}

/// The fill interval, never zero (validation requires a positive one; this only keeps
/// the arithmetic total).
fn interval(spec: &TokenBucket) -> Duration {
    spec.fill_interval.max(Duration::from_nanos(1))
}

/// One bucket per distinct value, at most `capacity` of them.
///
/// Values come from requests (client addresses, header values), so the map must not
/// grow with whatever clients send: when it is full, buckets that are full again are
/// forgotten (a full bucket is the same as a new one); when none is, no bucket is made
/// and the caller falls back to the route's bucket.
#[derive(Debug)]
pub(super) struct KeyedBuckets {
    buckets: HashMap<Box<[u8]>, Bucket>,
    capacity: usize,
    /// After a sweep found nothing to forget, no sweep before this time: a flood of new
    /// values while the map is full of busy buckets costs one scan per second at most,
    /// not one per request.
    next_sweep: Option<Instant>,
}

/// Longest pause between sweeps of a full map.
const SWEEP_PAUSE: Duration = Duration::from_secs(1);

impl KeyedBuckets {
    /// An empty map that holds at most `capacity` buckets.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            capacity,
            next_sweep: None,
        }
    }

    /// Takes a token from `key`'s bucket, making the bucket if needed; `None` when the
    /// map is full and nothing could be forgotten.
    pub(super) fn take(&mut self, key: &[u8], spec: &TokenBucket, now: Instant) -> Option<Take> {
        if let Some(bucket) = self.buckets.get_mut(key) {
            return Some(bucket.take(spec, now));
        }
        if self.buckets.len() >= self.capacity && !self.sweep(spec, now) {
            return None;
        }
        let mut bucket = Bucket::new(spec, now);
        let take = bucket.take(spec, now);
        self.buckets.insert(key.into(), bucket);
        Some(take)
    }

    /// Forgets full buckets; whether there is room now.
    fn sweep(&mut self, spec: &TokenBucket, now: Instant) -> bool {
        if self.next_sweep.is_some_and(|at| now < at) {
            return false;
        }
        self.buckets.retain(|_, bucket| !bucket.is_full(spec, now));
        if self.buckets.len() < self.capacity {
            self.next_sweep = None;
            true
        } else {
            self.next_sweep = Some(now + interval(spec).min(SWEEP_PAUSE));
            false
        }
    }

    /// Buckets held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }
}
