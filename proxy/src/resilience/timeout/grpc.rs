//! The gRPC `grpc-timeout` request header: `TimeoutValue TimeoutUnit`, at most eight
//! digits and one of `H M S m u n` (the gRPC over HTTP/2 spec).

use std::time::Duration;

use crate::snapshot::policy::GrpcTimeout;

/// Parses a `grpc-timeout` value; `None` if it is malformed.
pub fn parse(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The total timeout of a request: the route's, shortened by the caller's
/// `grpc-timeout` (less the route's offset, capped by its maximum) when it sent one.
pub fn effective(
    route: Option<Duration>,
    header: Option<&[u8]>,
    settings: &GrpcTimeout,
) -> Option<Duration> {
    let Some(caller) = header.and_then(parse) else {
        return route;
    };
    let mut t = caller.saturating_sub(settings.offset);
    if let Some(max) = settings.max {
        t = t.min(max);
    }
    if let Some(r) = route {
        t = t.min(r);
    }
    // A deadline already passed still gets one chance to fail fast, not a hang.
    Some(t.max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_units() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("200m", Some(ms(200))),
            ("1S", Some(Duration::from_secs(1))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("1500u", Some(Duration::from_micros(1500))),
            ("10n", Some(Duration::from_nanos(10))),
            ("99999999S", Some(Duration::from_secs(99_999_999))),
            ("123456789S", None), // nine digits
            ("m", None),
            ("10", None),
            ("10s", None),
            ("-1S", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn the_caller_shortens_the_route_timeout_never_lengthens_it() {
        let ms = Duration::from_millis;
        let none = GrpcTimeout::default();
        let capped = GrpcTimeout {
            max: Some(ms(100)),
            offset: ms(0),
        };
        let offset = GrpcTimeout {
            max: None,
            offset: ms(50),
        };
        type Case<'a> = (
            Option<Duration>,
            Option<&'a str>,
            &'a GrpcTimeout,
            Option<Duration>,
        );
        let cases: &[Case<'_>] = &[
            (Some(ms(1000)), None, &none, Some(ms(1000))),
            (Some(ms(1000)), Some("200m"), &none, Some(ms(200))),
            (Some(ms(100)), Some("5S"), &none, Some(ms(100))),
            (None, Some("5S"), &none, Some(Duration::from_secs(5))),
            (None, None, &none, None),
            (None, Some("5S"), &capped, Some(ms(100))),
            (None, Some("200m"), &offset, Some(ms(150))),
            (None, Some("20m"), &offset, Some(ms(1))),
            (Some(ms(1000)), Some("bogus"), &none, Some(ms(1000))),
        ];
        for (route, header, settings, want) in cases {
            let got = effective(*route, header.map(str::as_bytes), settings);
            assert_eq!(got, *want, "{route:?} {header:?} {settings:?}");
        }
    }
}
