use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;
use crate::snapshot::policy::SuccessRate;

const S: Outcome = Outcome::Success;
const LOCAL: Outcome = Outcome::LocalFailure;

fn status(s: u16) -> Outcome {
    Outcome::Status(s)
}

/// Envoy's defaults with nothing but the consecutive counters on, and room for every
/// ejection unless a test says otherwise.
fn consecutive_only() -> OutlierDetection {
    OutlierDetection {
        success_rate: None,
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    }
}

fn eject_now(all: &[EndpointHealth], i: usize, cfg: &OutlierDetection) -> Ejection {
    eject(
        all.iter(),
        &all[i],
        EjectReason::Consecutive5xx,
        Instant::now(),
        cfg,
    )
}

#[tokio::test(start_paused = true)]
async fn consecutive_counters_ask_for_ejection_exactly_at_threshold() {
    /// The outcome index that asks for ejection, and why.
    type Asked = Option<(usize, EjectReason)>;
    let gateway_off = OutlierDetection {
        consecutive_gateway_failure: None,
        ..consecutive_only()
    };
    let on = consecutive_only();
    let five_503 = [status(503); 5];
    // (config, outcomes, the outcome index that asks for ejection and why)
    let cases: Vec<(&OutlierDetection, Vec<Outcome>, Asked)> = vec![
        (
            &on,
            five_503.to_vec(),
            Some((4, EjectReason::ConsecutiveGatewayFailure)),
        ),
        (
            &gateway_off,
            five_503.to_vec(),
            Some((4, EjectReason::Consecutive5xx)),
        ),
        (
            &on,
            vec![LOCAL; 5],
            Some((4, EjectReason::ConsecutiveGatewayFailure)),
        ),
        // A 500 is a 5xx but not a gateway failure: it resets the gateway counter.
        (
            &on,
            vec![
                status(503),
                status(503),
                status(500),
                status(503),
                status(503),
            ],
            Some((4, EjectReason::Consecutive5xx)),
        ),
        // A 200 in between resets both.
        (
            &on,
            [
                [status(503); 4].as_slice(),
                &[status(200)],
                &[status(503); 4],
            ]
            .concat(),
            None,
        ),
        (
            &on,
            [[status(503); 4].as_slice(), &[S], &[status(503); 4]].concat(),
            None,
        ),
        // 4xx are successes as far as the server's health goes.
        (&on, vec![status(404); 10], None),
        // Past the threshold it does not ask again: one bout, one ejection.
        (
            &gateway_off,
            vec![status(500); 7],
            Some((4, EjectReason::Consecutive5xx)),
        ),
    ];
    for (n, (cfg, outcomes, want)) in cases.into_iter().enumerate() {
        let h = EndpointHealth::new();
        let asked: Vec<(usize, EjectReason)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| h.record(*o, cfg).map(|r| (i, r)))
            .collect();
        assert_eq!(asked.first().copied(), want, "case {n}");
        assert!(asked.len() <= 1, "case {n}: {asked:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn five_503s_eject_and_the_ejection_expires_after_base_time() {
    let cfg = consecutive_only();
    let all = [EndpointHealth::new(), EndpointHealth::new()];
    let mut asked = None;
    for _ in 0..5 {
        assert!(asked.is_none());
        asked = all[0].record(status(503), &cfg);
    }
    let reason = asked.unwrap();
    let now = Instant::now();
    let got = eject(all.iter(), &all[0], reason, now, &cfg);
    assert_eq!(
        got,
        Ejection::Ejected {
            until: now + cfg.base_ejection_time
        }
    );
    assert!(all[0].is_ejected(Instant::now()));
    assert_eq!(eject_now(&all, 0, &cfg), Ejection::AlreadyEjected);

    advance(cfg.base_ejection_time - Duration::from_millis(1)).await;
    assert!(all[0].is_ejected(Instant::now()));
    advance(Duration::from_millis(1)).await;
    assert!(!all[0].is_ejected(Instant::now()));
    assert!(all[0].ejection_expired(Instant::now()));
    assert!(all[0].uneject_if_expired(Instant::now()));
    assert!(!all[0].uneject_if_expired(Instant::now()));
    assert_eq!(all[0].view(Instant::now()).consecutive_5xx, 0);

    // Ejected again before an interval in service: twice as long.
    let now = Instant::now();
    assert_eq!(
        eject_now(&all, 0, &cfg),
        Ejection::Ejected {
            until: now + cfg.base_ejection_time * 2
        }
    );
    let view = all[0].view(now);
    assert_eq!((view.ejections, view.ejection_multiplier), (2, 2));
    assert_eq!(view.ejection_remaining, cfg.base_ejection_time * 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_and_shrinks_per_interval_in_service() {
    let cfg = OutlierDetection {
        base_ejection_time: Duration::from_secs(30),
        max_ejection_time: Duration::from_secs(60),
        ..consecutive_only()
    };
    let all = [EndpointHealth::new()];
    let mut lengths = Vec::new();
    for _ in 0..3 {
        let now = Instant::now();
        let Ejection::Ejected { until } = eject_now(&all, 0, &cfg) else {
            panic!("not ejected");
        };
        lengths.push((until - now).as_secs());
        advance(until - now).await;
        // The tick that returns it does not shorten the backoff.
        let report = tick(all.iter(), Instant::now(), &cfg);
        assert_eq!(report.unejected, 1);
    }
    assert_eq!(lengths, [30, 60, 60]);
    // Each interval in service takes one off (and never goes below zero): the next
    // ejection is back to the base time.
    let m = all[0].view(Instant::now()).ejection_multiplier;
    for _ in 0..m + 2 {
        tick(all.iter(), Instant::now(), &cfg);
    }
    let now = Instant::now();
    assert_eq!(
        eject_now(&all, 0, &cfg),
        Ejection::Ejected {
            until: now + Duration::from_secs(30)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_still_ejects_one() {
    // (ejected, total, max_percent, may eject one more)
    let cases = [
        (0, 3, 10, true),
        (1, 3, 10, false),
        (0, 1, 0, true),
        (1, 10, 20, true),
        (2, 10, 20, false),
        (2, 3, 100, true),
        (1, 2, 50, false),
        (1, 4, 50, true),
    ];
    for (ejected, total, max, want) in cases {
        assert_eq!(
            may_eject(ejected, total, max),
            want,
            "{ejected}/{total} at {max}%"
        );
    }
    let cfg = OutlierDetection {
        max_ejection_percent: 10,
        ..consecutive_only()
    };
    let all = [
        EndpointHealth::new(),
        EndpointHealth::new(),
        EndpointHealth::new(),
    ];
    assert!(matches!(eject_now(&all, 0, &cfg), Ejection::Ejected { .. }));
    assert_eq!(eject_now(&all, 1, &cfg), Ejection::Overflow);
    assert!(!all[1].is_ejected(Instant::now()));
    // The counter that asked is reset either way, so the next bout asks again.
    for _ in 0..4 {
        all[1].record(status(503), &cfg);
    }
    assert_eq!(all[1].view(Instant::now()).consecutive_5xx, 4);
    assert_eq!(
        eject(
            all.iter(),
            &all[1],
            EjectReason::Consecutive5xx,
            Instant::now(),
            &cfg
        ),
        Ejection::Overflow
    );
    assert_eq!(all[1].view(Instant::now()).consecutive_5xx, 0);
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejects_the_outlier() {
    let cfg = OutlierDetection {
        consecutive_5xx: None,
        consecutive_gateway_failure: None,
        success_rate: Some(SuccessRate {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        }),
        ..OutlierDetection::default()
    };
    // (requests per endpoint: five healthy ones then the failing one, failing share of
    // the last, endpoints ejected)
    let cases = [
        (120, 2, 1),
        // Too few requests in the interval: nobody is judged.
        (99, 2, 0),
        // Everyone equal: nobody is an outlier.
        (120, 0, 0),
    ];
    for (requests, fail_every, want) in cases {
        let all: Vec<EndpointHealth> = (0..6).map(|_| EndpointHealth::new()).collect();
        for (i, h) in all.iter().enumerate() {
            for n in 0..requests {
                let failed = i == 5 && fail_every > 0 && n % fail_every == 0;
                h.record(if failed { status(500) } else { S }, &cfg);
            }
        }
        let report = tick(all.iter(), Instant::now(), &cfg);
        assert_eq!(report.ejected, want, "{requests} requests, 1/{fail_every}");
        assert_eq!(all[5].is_ejected(Instant::now()), want == 1);
        assert!(all[..5].iter().all(|h| !h.is_ejected(Instant::now())));
        // The interval's counts start again.
        assert_eq!(tick(all.iter(), Instant::now(), &cfg).ejected, 0);
    }

    // Fewer judged endpoints than minimum_hosts: nobody is judged.
    let few: Vec<EndpointHealth> = (0..4).map(|_| EndpointHealth::new()).collect();
    for (i, h) in few.iter().enumerate() {
        for n in 0..200 {
            h.record(if i == 3 && n % 2 == 0 { status(503) } else { S }, &cfg);
        }
    }
    assert_eq!(tick(few.iter(), Instant::now(), &cfg).ejected, 0);
}

#[test]
fn success_rate_threshold_table() {
    // (rates, factor, threshold)
    let cases: &[(&[f64], u32, f64)] = &[
        (&[1.0, 1.0, 1.0], 1900, 1.0),
        (&[1.0, 0.0], 1000, 0.0),
        (&[0.9, 0.7], 1900, 0.8 - 0.1 * 1.9),
        (&[], 1900, 0.0),
    ];
    for (rates, factor, want) in cases {
        let got = success_rate_threshold(rates, *factor);
        assert!((got - want).abs() < 1e-9, "{rates:?}: {got} != {want}");
    }
}

#[test]
fn eligibility_table() {
    use Eligibility::*;
    // (available, total, panic_threshold, expected)
    let cases = [
        (3, 3, 50, All),
        (2, 3, 50, Available),
        (1, 2, 50, Available),
        (1, 3, 50, Panic),
        (0, 3, 50, Panic),
        (0, 3, 0, Available),
        (1, 3, 0, Available),
        (9, 10, 100, Panic),
        (9, 10, 90, Available),
        (1, 1, 50, All),
        (0, 1, 50, Panic),
    ];
    for (available, total, threshold, want) in cases {
        assert_eq!(
            eligibility(available, total, threshold),
            want,
            "{available}/{total} at {threshold}%"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn health_checks_flip_the_active_flag() {
    let check = HealthCheck {
        path: "/".into(),
        host: String::new(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        unhealthy_threshold: 2,
        healthy_threshold: 1,
        expected_statuses: Vec::new(),
    };
    let h = EndpointHealth::new();
    assert!(h.active_healthy());
    assert_eq!(h.view(Instant::now()).active, ActiveHealth::Unchecked);
    assert_eq!(h.record_check(false, &check), None);
    assert_eq!(h.record_check(false, &check), Some(false));
    assert!(!h.active_healthy());
    assert_eq!(h.view(Instant::now()).active, ActiveHealth::Unhealthy);
    assert_eq!(h.record_check(true, &check), Some(true));
    assert_eq!(h.view(Instant::now()).active, ActiveHealth::Healthy);
}
