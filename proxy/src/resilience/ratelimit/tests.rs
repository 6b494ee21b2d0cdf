//! Tests for local rate limiting: the token bucket by table, the keyed map's bound,
//! descriptor matching, and the service in front of a `service_fn`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use metrics::Counter;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::bucket::{Bucket, KeyedBuckets};
use super::*;
use crate::snapshot::policy::{DescriptorSource, RateLimit as Policy};

fn tb(max_tokens: u32, tokens_per_fill: u32, fill_ms: u64) -> TokenBucket {
    TokenBucket {
        max_tokens,
        tokens_per_fill,
        fill_interval: Duration::from_millis(fill_ms),
    }
}

fn policy(bucket: Option<TokenBucket>) -> Policy {
    Policy {
        bucket,
        sources: Vec::new(),
        descriptors: Vec::new(),
        enforced: true,
        headers: false,
    }
}

fn user_header() -> DescriptorSource {
    DescriptorSource::Header {
        header: HeaderName::from_static("x-user"),
        key: "user".into(),
    }
}

fn user(name: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-user", HeaderValue::from_str(name).unwrap());
    h
}

const IP_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const IP_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

/// How many of `n` checks at `now` are allowed.
fn allowed(l: &Limiter, h: &HeaderMap, ip: IpAddr, now: Instant, n: usize) -> usize {
    (0..n)
        .filter(|_| matches!(l.check(h, ip, now), Decision::Allowed(_)))
        .count()
}

#[test]
fn bucket_levels_over_time() {
    // (case, bucket, steps: (ms after the previous step, takes, expected allowed))
    type Case = (&'static str, TokenBucket, &'static [(u64, u32, u32)]);
    let cases: &[Case] = &[
        (
            "burst of max_tokens, then limited",
            tb(10, 10, 1000),
            &[(0, 12, 10)],
        ),
        (
            "refilled after one interval, not before",
            tb(10, 5, 1000),
            &[(0, 10, 10), (999, 1, 0), (1, 6, 5)],
        ),
        (
            "several fills at once",
            tb(10, 2, 100),
            &[(0, 10, 10), (300, 10, 6)],
        ),
        (
            "capped at max_tokens",
            tb(10, 10, 1000),
            &[(0, 3, 3), (5000, 20, 10)],
        ),
        (
            "fills stay on the interval grid",
            tb(1, 1, 1000),
            &[(0, 1, 1), (1500, 1, 1), (499, 1, 0), (1, 1, 1)],
        ),
        (
            "no tokens per fill: never refilled",
            tb(2, 0, 100),
            &[(0, 3, 2), (10_000, 1, 0)],
        ),
        (
            "empty bucket: always limited",
            tb(0, 1, 100),
            &[(0, 1, 0), (1000, 1, 0)],
        ),
    ];
    for (name, spec, steps) in cases {
        let mut now = Instant::now();
        let mut bucket = Bucket::new(spec, now);
        for (i, (after, takes, expected)) in steps.iter().enumerate() {
            now += Duration::from_millis(*after);
            let got = (0..*takes)
                .filter(|_| bucket.take(spec, now).allowed)
                .count();
            assert_eq!(got, *expected as usize, "{name}, step {i}");
        }
    }
}

#[test]
fn take_reports_remaining_and_reset() {
    let spec = tb(2, 1, 10_000);
    let t0 = Instant::now();
    let mut b = Bucket::new(&spec, t0);
    let t = b.take(&spec, t0);
    assert_eq!((t.allowed, t.remaining, t.reset_secs), (true, 1, 10));
    let t = b.take(&spec, t0 + Duration::from_millis(2500));
    assert_eq!((t.allowed, t.remaining, t.reset_secs), (true, 0, 8));
    let t = b.take(&spec, t0 + Duration::from_millis(9999));
    assert_eq!((t.allowed, t.remaining, t.reset_secs), (false, 0, 1));
    // A sub-second interval still says 1 second, never 0.
    let spec = tb(1, 1, 100);
    let mut b = Bucket::new(&spec, t0);
    b.take(&spec, t0);
    assert_eq!(b.take(&spec, t0).reset_secs, 1);
}

#[test]
fn keyed_buckets_are_bounded() {
    let spec = tb(2, 1, 1000);
    let t0 = Instant::now();
    let mut m = KeyedBuckets::new(3);
    // a: empty, b and c: one token left.
    assert!(m.take(b"a", &spec, t0).is_some());
    assert!(m.take(b"a", &spec, t0).is_some());
    assert!(m.take(b"b", &spec, t0).is_some());
    assert!(m.take(b"c", &spec, t0).is_some());
    // Full, and no bucket is full again: refused; existing keys still work.
    assert_eq!(m.take(b"d", &spec, t0), None);
    assert!(m.take(b"b", &spec, t0).is_some_and(|t| t.allowed));
    assert_eq!(m.len(), 3);
    // After a fill, c is full again (it had one token left) and is forgotten; a and b
    // are not.
    let t1 = t0 + Duration::from_secs(1);
    let d = m.take(b"d", &spec, t1).unwrap();
    assert!(d.allowed && d.remaining == 1);
    assert_eq!(m.len(), 3);
    assert_eq!(m.take(b"e", &spec, t1), None);
    // A sweep that found nothing is not repeated before the pause is over.
    let t2 = t1 + Duration::from_millis(999);
    assert_eq!(m.take(b"e", &spec, t2), None);
    assert_eq!(m.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_calls_at_one_instant_let_exactly_the_burst_through() {
    let l = Limiter::new(&policy(Some(tb(100, 100, 1000))));
    let now = Instant::now();
    assert_eq!(allowed(&l, &HeaderMap::new(), IP_A, now, 1000), 100);

    // The same from four threads at once.
    let l = Limiter::new(&policy(Some(tb(100, 100, 1000))));
    let count = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let n = allowed(&l, &HeaderMap::new(), IP_A, now, 250);
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(count.load(Ordering::Relaxed), 100);
}

#[tokio::test(start_paused = true)]
async fn route_bucket_refills_after_its_interval() {
    let l = Limiter::new(&policy(Some(tb(3, 2, 1000))));
    let h = HeaderMap::new();
    assert_eq!(allowed(&l, &h, IP_A, Instant::now(), 5), 3);
    tokio::time::advance(Duration::from_millis(400)).await;
    let info = RateLimitInfo {
        limit: 3,
        reset_secs: 1,
        headers: false,
    };
    assert_eq!(l.check(&h, IP_A, Instant::now()), Decision::Limited(info));
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(allowed(&l, &h, IP_B, Instant::now(), 5), 2);
}

#[tokio::test(start_paused = true)]
async fn no_bucket_allows_everything() {
    let l = Limiter::new(&policy(None));
    let d = l.check(&HeaderMap::new(), IP_A, Instant::now());
    assert_eq!(d, Decision::Allowed(None));
}

#[tokio::test(start_paused = true)]
async fn per_ip_buckets_are_independent() {
    let mut p = policy(None);
    p.sources = vec![DescriptorSource::ClientIp];
    p.descriptors = vec![(REMOTE_ADDRESS.into(), None, tb(2, 2, 1000))];
    let l = Limiter::new(&p);
    let (h, now) = (HeaderMap::new(), Instant::now());
    assert_eq!(allowed(&l, &h, IP_A, now, 3), 2);
    assert_eq!(allowed(&l, &h, IP_B, now, 3), 2);
    // The same IPv4 client through a dual-stack socket shares its bucket.
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(allowed(&l, &h, mapped, now, 1), 0);
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    assert_eq!(allowed(&l, &h, v6, now, 3), 2);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(allowed(&l, &h, IP_A, Instant::now(), 3), 2);
}

#[tokio::test(start_paused = true)]
async fn per_header_buckets_fall_back_to_the_route_bucket() {
    let mut p = policy(Some(tb(5, 5, 1000)));
    p.sources = vec![user_header()];
    p.descriptors = vec![("user".into(), None, tb(1, 1, 1000))];
    let l = Limiter::new(&p);
    let now = Instant::now();
    assert_eq!(allowed(&l, &user("alice"), IP_A, now, 2), 1);
    assert_eq!(allowed(&l, &user("bob"), IP_A, now, 2), 1);
    // Without the header the request has no entry: the route's bucket counts it.
    match l.check(&HeaderMap::new(), IP_A, now) {
        Decision::Allowed(Some(q)) => assert_eq!((q.limit, q.remaining), (5, 4)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn descriptor_order_exact_values_and_wildcards() {
    let vip = || ("user".to_owned(), Some("vip".to_owned()), tb(3, 3, 1000));
    let anyone = || ("user".to_owned(), None, tb(1, 1, 1000));
    // (case, descriptors, user, expected allowed of 5)
    let cases = [
        (
            "exact value before the wildcard",
            vec![vip(), anyone()],
            "vip",
            3,
        ),
        ("others get the wildcard", vec![vip(), anyone()], "carol", 1),
        ("the first match wins", vec![anyone(), vip()], "vip", 1),
        ("exact value only: others pass", vec![vip()], "carol", 5),
    ];
    for (name, descriptors, who, expected) in cases {
        let mut p = policy(None);
        p.sources = vec![user_header()];
        p.descriptors = descriptors;
        let l = Limiter::new(&p);
        assert_eq!(
            allowed(&l, &user(who), IP_A, Instant::now(), 5),
            expected,
            "{name}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_later_source_matches_when_an_earlier_one_does_not() {
    let mut p = policy(None);
    p.sources = vec![user_header(), DescriptorSource::ClientIp];
    p.descriptors = vec![(
        REMOTE_ADDRESS.into(),
        Some("10.0.0.1".into()),
        tb(1, 1, 1000),
    )];
    let l = Limiter::new(&p);
    let now = Instant::now();
    assert_eq!(allowed(&l, &user("alice"), IP_A, now, 3), 1);
    assert_eq!(allowed(&l, &user("alice"), IP_B, now, 3), 3);
}

#[tokio::test(start_paused = true)]
async fn a_full_key_map_falls_back_to_the_route_bucket() {
    let mut p = policy(Some(tb(2, 1, 1000)));
    p.sources = vec![user_header()];
    p.descriptors = vec![("user".into(), None, tb(1, 1, 1000))];
    let l = Limiter::new(&p);
    let now = Instant::now();
    for i in 0..MAX_KEYS {
        let d = l.check(&user(&i.to_string()), IP_A, now);
        assert!(
            matches!(d, Decision::Allowed(Some(q)) if q.limit == 1),
            "{i}"
        );
    }
    // Every per-user bucket is in use: a new user is counted by the route's bucket.
    let newcomer = user("newcomer");
    let d = l.check(&newcomer, IP_A, now);
    assert!(
        matches!(d, Decision::Allowed(Some(q)) if q.limit == 2),
        "{d:?}"
    );
    // Once the per-user buckets are full again they are forgotten to make room.
    tokio::time::advance(Duration::from_secs(1)).await;
    let d = l.check(&newcomer, IP_A, Instant::now());
    assert!(
        matches!(d, Decision::Allowed(Some(q)) if q.limit == 1),
        "{d:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn not_enforced_only_counts() {
    let counts: [Arc<AtomicU64>; 3] = Default::default();
    let counters = RateLimitCounters {
        ok: Counter::from_arc(counts[0].clone()),
        limited: Counter::from_arc(counts[1].clone()),
        would_limit: Counter::from_arc(counts[2].clone()),
    };
    let mut p = policy(Some(tb(2, 1, 1000)));
    p.enforced = false;
    let l = Limiter::with_counters(&p, counters);
    let now = Instant::now();
    let decisions: Vec<_> = (0..3)
        .map(|_| l.check(&HeaderMap::new(), IP_A, now))
        .collect();
    assert!(matches!(decisions[2], Decision::WouldLimit(i) if i.limit == 2));
    let counts = counts.map(|c| c.load(Ordering::Relaxed));
    assert_eq!(counts, [2, 0, 1]);
}

/// An inner service that counts its calls and answers 200.
fn counting_ok(
    calls: &AtomicUsize,
) -> impl tower::Service<Request<()>, Response = Response<Body>, Error = ProxyError> + Clone + '_ {
    tower::service_fn(move |_req: Request<()>| {
        calls.fetch_add(1, Ordering::Relaxed);
        async { Ok(Response::new(Body::Empty)) }
    })
}

#[tokio::test(start_paused = true)]
async fn service_adds_headers_then_refuses_without_calling_inner() {
    let mut p = policy(Some(tb(2, 2, 5000)));
    p.headers = true;
    let l = Limiter::new(&p);
    let calls = AtomicUsize::new(0);
    let layer = RateLimitLayer::new(&l, IP_A);
    for remaining in ["1", "0"] {
        let resp = layer
            .layer(counting_ok(&calls))
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let h = resp.headers();
        assert_eq!(h["x-ratelimit-limit"], "2");
        assert_eq!(h["x-ratelimit-remaining"], remaining);
        assert_eq!(h["x-ratelimit-reset"], "5");
    }
    tokio::time::advance(Duration::from_millis(1500)).await;
    let err = layer
        .layer(counting_ok(&calls))
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    let info = RateLimitInfo {
        limit: 2,
        reset_secs: 4,
        headers: true,
    };
    assert!(
        matches!(err, ProxyError::RateLimited(i) if i == info),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn service_headers_only_when_asked_and_would_limit_forwards() {
    let calls = AtomicUsize::new(0);
    // (headers, enforced, requests, expected headers on the last, expected inner calls)
    let cases = [
        (false, true, 1, None, 1),
        (true, false, 3, Some("0"), 3),
        (false, false, 3, None, 3),
    ];
    for (headers, enforced, requests, remaining, expected_calls) in cases {
        calls.store(0, Ordering::Relaxed);
        let mut p = policy(Some(tb(1, 1, 1000)));
        (p.headers, p.enforced) = (headers, enforced);
        let l = Limiter::new(&p);
        let mut last = None;
        for _ in 0..requests {
            let svc = RateLimit::new(counting_ok(&calls), &l, IP_A);
            last = Some(svc.oneshot(Request::new(())).await.unwrap());
        }
        let last = last.unwrap();
        let got = last.headers().get("x-ratelimit-remaining");
        assert_eq!(got.map(|v| v.to_str().unwrap()), remaining, "{p:?}");
        assert_eq!(calls.load(Ordering::Relaxed), expected_calls, "{p:?}");
    }
}

#[test]
fn limiter_is_shared_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Limiter>();
}
