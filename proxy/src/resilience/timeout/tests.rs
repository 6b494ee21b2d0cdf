use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

#[tokio::test(start_paused = true)]
async fn a_slow_call_times_out_and_marks_the_log() {
    let log = AttemptLog::default();
    let slow = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, ProxyError>("late")
    });
    let mut svc = TimeoutLayer::new(Some(Duration::from_millis(200)), &log).layer(slow);
    let started = tokio::time::Instant::now();
    let r = svc.ready().await.unwrap().call(()).await;
    assert!(matches!(r, Err(ProxyError::Timeout)));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(200),
        "paused clock"
    );
    assert!(log.expired());
}

#[tokio::test(start_paused = true)]
async fn a_fast_call_or_no_timeout_passes_through() {
    let log = AttemptLog::default();
    let fast = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, ProxyError>("ok")
    });
    let cases = [Some(Duration::from_millis(200)), None];
    for after in cases {
        let mut svc = Timeout::new(fast, after, &log);
        assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "ok");
        assert!(!log.expired(), "{after:?}");
    }
}
