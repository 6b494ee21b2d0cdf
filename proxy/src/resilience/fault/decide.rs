//! The fault decision for one request: whether to delay it, abort it, both or neither.
//!
//! Pure: the random rolls are arguments, so the table below is the whole behaviour.

use std::time::Duration;

use crate::snapshot::policy::{Abort, Fault};

/// What `fault` does to a request given two rolls uniform in `[0, 100)`: a delay when
/// `roll_delay` falls under the delay's percentage, an abort when `roll_abort` falls under
/// the abort's. Both may apply (Envoy delays, then aborts).
pub fn decide(
    fault: &Fault,
    roll_delay: f64,
    roll_abort: f64,
) -> (Option<Duration>, Option<Abort>) {
    let delay = fault
        .delay
        .and_then(|(delay, percent)| (roll_delay < percent && !delay.is_zero()).then_some(delay));
    let abort = fault
        .abort
        .and_then(|(abort, percent)| (roll_abort < percent).then_some(abort));
    (delay, abort)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_against_rolls() {
        let ms = Duration::from_millis;
        let fault = |delay: Option<f64>, abort: Option<f64>| Fault {
            delay: delay.map(|p| (ms(50), p)),
            abort: abort.map(|p| (Abort::Http(503), p)),
        };
        let (d, a) = (Some(ms(50)), Some(Abort::Http(503)));
        // (case, fault, roll_delay, roll_abort, expected)
        type Case = (
            &'static str,
            Fault,
            f64,
            f64,
            (Option<Duration>, Option<Abort>),
        );
        let cases: Vec<Case> = vec![
            (
                "nothing configured",
                Fault::default(),
                0.0,
                0.0,
                (None, None),
            ),
            (
                "0 % never, even at roll 0",
                fault(Some(0.0), Some(0.0)),
                0.0,
                0.0,
                (None, None),
            ),
            (
                "100 % always, even at roll 99.99",
                fault(Some(100.0), Some(100.0)),
                99.99,
                99.99,
                (d, a),
            ),
            (
                "50 %: roll under",
                fault(Some(50.0), Some(50.0)),
                49.9,
                10.0,
                (d, a),
            ),
            (
                "50 %: roll at the percentage misses",
                fault(Some(50.0), Some(50.0)),
                50.0,
                50.0,
                (None, None),
            ),
            (
                "50 %: rolls are independent",
                fault(Some(50.0), Some(50.0)),
                10.0,
                75.0,
                (d, None),
            ),
            (
                "50 %: abort only",
                fault(Some(50.0), Some(50.0)),
                75.0,
                10.0,
                (None, a),
            ),
            (
                "delay only configured",
                fault(Some(100.0), None),
                0.0,
                0.0,
                (d, None),
            ),
            (
                "abort only configured",
                fault(None, Some(100.0)),
                0.0,
                0.0,
                (None, a),
            ),
            (
                "a zero delay is no delay",
                Fault {
                    delay: Some((Duration::ZERO, 100.0)),
                    abort: None,
                },
                0.0,
                0.0,
                (None, None),
            ),
            (
                "gRPC abort",
                Fault {
                    delay: None,
                    abort: Some((Abort::Grpc(14), 100.0)),
                },
                0.0,
                0.0,
                (None, Some(Abort::Grpc(14))),
            ),
        ];
        for (name, fault, roll_delay, roll_abort, expected) in cases {
            assert_eq!(decide(&fault, roll_delay, roll_abort), expected, "{name}");
        }
    }
}
