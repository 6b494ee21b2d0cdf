//! Load-balancing decisions and the per-endpoint load they read.
//!
//! The picks are pure functions over weights, costs and random numbers (tested by
//! tables); the only state is [`PeakEwma`], one per endpoint, shared by every request.
//!
//! - **P2C peak-EWMA** (the default): pick two endpoints at random, send to the cheaper,
//!   where cost = latency estimate x (outstanding requests + 1) / weight. The estimate
//!   jumps up to a slower observation at once (the peak) and decays back over ~10 s, so a
//!   slow or overloaded endpoint sheds load immediately and recovers gradually. The same
//!   idea as Finagle's and linkerd's balancers, without a shared queue in front.
//! - **Round robin**: a precomputed, smoothly interleaved schedule honouring weights.
//! - **Ring hash**: consistent hashing (ketama-style ring of xxHash64 points), so a key
//!   keeps going to the same endpoint while the set is stable.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Latency assumed for an endpoint before it has answered anything.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the estimate forgets (time constant of the exponential decay).
pub const DECAY: Duration = Duration::from_secs(10);

/// An endpoint's load: requests in flight and a peak-sensitive latency estimate.
#[derive(Debug)]
pub struct PeakEwma {
    pending: AtomicU32,
    estimate: Mutex<Estimate>,
}

#[derive(Debug)]
struct Estimate {
    rtt_ns: f64,
    at: Instant,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new(DEFAULT_RTT)
    }
}

impl PeakEwma {
    /// A fresh estimate starting at `initial`.
    pub fn new(initial: Duration) -> Self {
        Self {
            pending: AtomicU32::new(0),
            estimate: Mutex::new(Estimate {
                rtt_ns: initial.as_nanos() as f64,
                at: Instant::now(),
            }),
        }
    }

    /// Requests currently in flight.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// The current latency estimate.
    pub fn rtt(&self) -> Duration {
        let now = Instant::now();
        let est = self
            .estimate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Duration::from_nanos(decayed(est.rtt_ns, est.at, now) as u64)
    }

    /// Cost of sending one more request here (lower is better).
    pub fn cost(&self, now: Instant) -> f64 {
        let pending = f64::from(self.pending.load(Ordering::Relaxed));
        let est = self
            .estimate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        decayed(est.rtt_ns, est.at, now) * (pending + 1.0)
    }

    /// Marks a request as started; dropping the guard marks it finished.
    pub fn start(&self) -> InFlight<'_> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records an observed round trip.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let mut est = self
            .estimate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        est.rtt_ns = if rtt > est.rtt_ns {
            // Peak: a slower answer is believed at once.
            rtt
        } else {
            let elapsed = now.saturating_duration_since(est.at).as_nanos() as f64;
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            est.rtt_ns * w + rtt * (1.0 - w)
        };
        est.at = now;
    }
}

/// Decays the estimate toward zero while no answer arrives, so an endpoint that was
/// slow once is tried again eventually.
fn decayed(rtt_ns: f64, at: Instant, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(at).as_nanos() as f64;
    rtt_ns * (-elapsed / DECAY.as_nanos() as f64).exp()
}

/// A request in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight<'a>(&'a PeakEwma);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Power of two choices: of the candidates at `a` and `b` (random indexes, distinct
/// when `n > 1`), the one with the lower `cost / weight`.
pub fn p2c(
    a: usize,
    b: usize,
    cost: impl Fn(usize) -> f64,
    weight: impl Fn(usize) -> u32,
) -> usize {
    let ca = cost(a) / f64::from(weight(a).max(1));
    let cb = cost(b) / f64::from(weight(b).max(1));
    if cb < ca { b } else { a }
}

/// Two distinct random indexes below `n` (the same one when `n == 1`).
pub fn two_random(n: usize) -> (usize, usize) {
    if n < 2 {
        return (0, 0);
    }
    let a = fastrand::usize(0..n);
    let mut b = fastrand::usize(0..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

/// A weighted round-robin schedule: each index appears `weight / gcd` times, spread out
/// (smooth weighted round robin, as nginx does). Capped at `max_len` entries by scaling
/// weights down.
pub fn round_robin_schedule(weights: &[u32], max_len: usize) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0, gcd)
        .max(1);
    let mut w: Vec<u64> = weights.iter().map(|x| u64::from(x / g).max(1)).collect();
    let total: u64 = w.iter().sum();
    if total > max_len as u64 {
        let scale = total as f64 / max_len as f64;
        for x in &mut w {
            *x = ((*x as f64 / scale).round() as u64).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A consistent-hash ring: sorted (hash, endpoint index) points.
pub fn build_ring(keys: &[(String, u32)], min_size: usize) -> Vec<(u64, u32)> {
    let total: u64 = keys.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut ring = Vec::new();
    for (i, (key, weight)) in keys.iter().enumerate() {
        let points = ((min_size as u64 * u64::from(*weight)).div_ceil(total)).max(1);
        for p in 0..points {
            let h = xxhash_rust::xxh64::xxh64(format!("{key}_{p}").as_bytes(), 0);
            ring.push((h, i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// The endpoint index owning `hash` on `ring` (the first point at or after it).
pub fn ring_lookup(ring: &[(u64, u32)], hash: u64) -> Option<u32> {
    if ring.is_empty() {
        return None;
    }
    let i = ring.partition_point(|(h, _)| *h < hash);
    Some(ring[i % ring.len()].1)
}

/// The hash of a request key (a header value).
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(key, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2c_prefers_cheaper_weighted_cost() {
        let costs = [10.0, 20.0, 5.0];
        let weights = [1, 1, 1];
        // (a, b, expected)
        let cases = [(0, 1, 0), (1, 0, 0), (1, 2, 2), (2, 0, 2)];
        for (a, b, want) in cases {
            assert_eq!(p2c(a, b, |i| costs[i], |i| weights[i]), want, "{a} vs {b}");
        }
        // A weight of 4 makes cost 20 cheaper than cost 10 at weight 1.
        let weights = [1, 4, 1];
        assert_eq!(p2c(0, 1, |i| costs[i], |i| weights[i]), 1);
    }

    #[test]
    fn two_random_are_distinct() {
        for n in 2..6 {
            for _ in 0..200 {
                let (a, b) = two_random(n);
                assert!(a < n && b < n && a != b);
            }
        }
        assert_eq!(two_random(1), (0, 0));
    }

    #[test]
    fn schedule_table() {
        let cases: &[(&[u32], &[u32])] = &[
            (&[1, 1, 1], &[0, 1, 2]),
            (&[2, 1], &[0, 1, 0]),
            (&[5, 1, 1], &[0, 0, 1, 0, 2, 0, 0]),
            (&[3, 3], &[0, 1]),
        ];
        for (w, want) in cases {
            assert_eq!(round_robin_schedule(w, 1000), *want, "{w:?}");
        }
        let big = round_robin_schedule(&[1000, 1], 100);
        assert!(big.len() <= 102 && big.contains(&1));
    }

    #[test]
    fn ring_is_consistent_and_weighted() {
        let keys: Vec<(String, u32)> = vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 2)];
        let ring = build_ring(&keys, 1024);
        let mut counts = [0u32; 3];
        for k in 0..10_000u32 {
            let h = hash_key(k.to_string().as_bytes());
            let i = ring_lookup(&ring, h).unwrap();
            assert_eq!(ring_lookup(&ring, h), Some(i));
            counts[i as usize] += 1;
        }
        // c has twice the weight: roughly half the keys.
        assert!(counts[2] > 4000 && counts[2] < 6000, "{counts:?}");
        // Removing b moves b's keys; most of a's stay on a (the ring is resized to
        // keep its minimum size, so a few move to c's new points).
        let smaller: Vec<(String, u32)> = vec![("a".into(), 1), ("c".into(), 2)];
        let ring2 = build_ring(&smaller, 1024);
        let (mut on_a, mut stayed) = (0, 0);
        for k in 0..10_000u32 {
            let h = hash_key(k.to_string().as_bytes());
            if ring_lookup(&ring, h) == Some(0) {
                on_a += 1;
                stayed += usize::from(ring_lookup(&ring2, h) == Some(0));
            }
        }
        assert!(stayed * 100 >= on_a * 75, "{stayed} of {on_a} stayed");
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays() {
        let e = PeakEwma::new(Duration::from_millis(10));
        let t0 = Instant::now();
        e.observe(Duration::from_millis(100), t0);
        assert!((e.cost(t0) - 100e6).abs() < 1.0);
        // Faster answers pull the estimate down gradually, not at once.
        tokio::time::advance(Duration::from_secs(1)).await;
        e.observe(Duration::from_millis(10), Instant::now());
        let after = e.cost(Instant::now());
        assert!(after > 80e6 && after < 100e6, "{after}");
        // Outstanding requests multiply the cost.
        let _a = e.start();
        let _b = e.start();
        assert_eq!(e.pending(), 2);
        assert!(e.cost(Instant::now()) > 2.9 * after);
        drop(_a);
        assert_eq!(e.pending(), 1);
        // Idle time decays toward zero.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(e.rtt() < Duration::from_millis(1));
    }
}
