use std::sync::Arc;

use tower::{Service, ServiceExt, service_fn};
use weft_telemetry::Registry;

use super::*;
use crate::snapshot::policy::Limits;

fn breaker(limits: Limits) -> (Arc<Breaker>, Registry) {
    let reg = Registry::new();
    let c = |name: &'static str| reg.counter(name, &[]);
    let overflow = OverflowCounters {
        requests: c("t_req"),
        pending: c("t_pending"),
        connections: c("t_conn"),
        retries: c("t_retry"),
    };
    (Arc::new(Breaker::new(limits, overflow)), reg)
}

#[test]
fn permits_count_up_to_each_limit_and_are_given_back() {
    let limits = Limits {
        max_connections: 1,
        max_pending_requests: 2,
        max_requests: 3,
        max_retries: 0,
        ..Limits::default()
    };
    let (b, _reg) = breaker(limits);
    let cases = [
        (Kind::Connection, 1),
        (Kind::Pending, 2),
        (Kind::Request, 3),
        (Kind::Retry, 0),
    ];
    for (kind, limit) in cases {
        let held: Vec<Permit> = (0..limit).map(|_| b.try_acquire(kind).unwrap()).collect();
        assert_eq!(b.in_use(kind), limit, "{kind:?}");
        let over = b.try_acquire(kind).unwrap_err();
        assert_eq!(over.code(), "upstream-overflow", "{kind:?}");
        assert!(over.to_string().contains(kind.name()), "{over}");
        assert_eq!(b.in_use(kind), limit, "an overflow takes nothing");
        drop(held);
        assert_eq!(b.in_use(kind), 0, "{kind:?} given back");
    }
}

#[tokio::test]
async fn the_layer_holds_a_request_permit_until_the_body_is_dropped() {
    let limits = Limits {
        max_requests: 1,
        ..Limits::default()
    };
    let (b, _reg) = breaker(limits);
    let inner = service_fn(|_c: Call| async { Ok(Response::new(Body::full("ok"))) });
    let mut svc = CircuitBreakerLayer::new(&b).layer(inner);
    let call = || Call::new(http::Request::new(Body::Empty), None);
    let first = svc.ready().await.unwrap().call(call()).await.unwrap();
    assert_eq!(b.in_use(Kind::Request), 1, "held by the response body");
    let second = svc.ready().await.unwrap().call(call()).await;
    assert_eq!(second.unwrap_err().response_flag(), "UO");
    drop(first);
    assert_eq!(b.in_use(Kind::Request), 0);
    let third = svc.ready().await.unwrap().call(call()).await;
    assert!(third.is_ok());
}

use tower::Layer;
