//! Tests for the fault service: delays in paused time, aborts, counting.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use metrics::Counter;
use tower::{Layer, ServiceExt};

use super::*;

/// An inner service that counts its calls and answers 200.
fn counting_ok(
    calls: &AtomicUsize,
) -> impl Service<Request<()>, Response = Response<Body>, Error = ProxyError> + Clone + '_ {
    tower::service_fn(move |_req: Request<()>| {
        calls.fetch_add(1, Ordering::Relaxed);
        async { Ok(Response::new(Body::Empty)) }
    })
}

/// Polls `fut` once (the test drives time, so nothing needs waking).
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

fn fault(delay: Option<(u64, f64)>, abort: Option<(Abort, f64)>) -> policy::Fault {
    policy::Fault {
        delay: delay.map(|(ms, p)| (Duration::from_millis(ms), p)),
        abort,
    }
}

#[tokio::test(start_paused = true)]
async fn a_delayed_request_is_forwarded_when_the_delay_is_over() {
    let state = FaultState::new(&fault(Some((2000, 100.0)), None));
    let calls = AtomicUsize::new(0);
    let svc = FaultLayer::new(&state).layer(counting_ok(&calls));
    let mut fut = pin!(svc.oneshot(Request::new(())));
    assert!(poll_once(fut.as_mut()).is_pending());
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "called before the delay was over"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    match poll_once(fut.as_mut()) {
        Poll::Ready(Ok(resp)) => assert_eq!(resp.status(), 200),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_abort_answers_after_the_delay_without_calling_inner() {
    let state = FaultState::new(&fault(Some((500, 100.0)), Some((Abort::Grpc(14), 100.0))));
    let calls = AtomicUsize::new(0);
    let mut fut = pin!(Fault::new(counting_ok(&calls), &state).oneshot(Request::new(())));
    assert!(poll_once(fut.as_mut()).is_pending());
    tokio::time::advance(Duration::from_millis(500)).await;
    match poll_once(fut.as_mut()) {
        Poll::Ready(Err(ProxyError::FaultAbort(Abort::Grpc(14)))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn aborts_at_once_and_zero_percent_forwards_at_once() {
    let calls = AtomicUsize::new(0);
    // (fault, aborted with, inner calls)
    let cases = [
        (fault(None, Some((Abort::Http(503), 100.0))), Some(503), 0),
        (
            fault(Some((1000, 0.0)), Some((Abort::Http(503), 0.0))),
            None,
            1,
        ),
        (fault(None, None), None, 1),
    ];
    for (f, aborted, expected_calls) in cases {
        calls.store(0, Ordering::Relaxed);
        let state = FaultState::new(&f);
        let mut fut = pin!(Fault::new(counting_ok(&calls), &state).oneshot(Request::new(())));
        // Ready on the first poll: no delay was slept.
        let got = match poll_once(fut.as_mut()) {
            Poll::Ready(Err(ProxyError::FaultAbort(Abort::Http(code)))) => Some(code),
            Poll::Ready(Ok(_)) => None,
            other => panic!("{f:?}: {other:?}"),
        };
        assert_eq!(got, aborted, "{f:?}");
        assert_eq!(calls.load(Ordering::Relaxed), expected_calls, "{f:?}");
    }
}

#[test]
fn injected_faults_are_counted() {
    let (delays, aborts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counters = FaultCounters {
        delays: Counter::from_arc(delays.clone()),
        aborts: Counter::from_arc(aborts.clone()),
    };
    let f = fault(Some((10, 100.0)), Some((Abort::Http(500), 0.0)));
    let state = FaultState::with_counters(&f, counters);
    for _ in 0..3 {
        assert_eq!(state.roll(), (Some(Duration::from_millis(10)), None));
    }
    assert_eq!(delays.load(Ordering::Relaxed), 3);
    assert_eq!(aborts.load(Ordering::Relaxed), 0);
}

#[test]
fn state_is_shared_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FaultState>();
}
