//! Handshake accounting: `weft_tls_handshakes_total` handles for one listener or
//! cluster.
//!
//! A listener accepts many connections; looking a counter up by labels on each would
//! allocate and hash per handshake. [`HandshakeCounters`] registers one counter per
//! known outcome up front, and [`HandshakeCounters::record`] only picks one.

use std::sync::Arc;

use metrics::Counter;
use weft_telemetry::Registry;
use weft_telemetry::names::{self, label};

/// Every `outcome` label value [`crate::outcome`] produces, plus `ok`; anything else
/// is recorded as `other`.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "no_client_cert",
    "unknown_ca",
    "bad_identity",
    "expired",
    "not_yet_valid",
    "bad_eku",
    "protocol",
    "peer_refused",
    // The handshake did not finish in time: the listener's header timeout, or the
    // cluster's connect timeout on the client side (counted by the caller, which owns
    // the timer).
    "timeout",
    "other",
];

/// The index of `other` in [`OUTCOMES`].
const OTHER: usize = OUTCOMES.len() - 1;

/// The handshake counters of one listener or cluster, one per outcome. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HandshakeCounters {
    counters: Arc<[Counter]>,
}

impl HandshakeCounters {
    /// Counters for `side` (`server` or `client`) and `listener_or_cluster`: a label
    /// key and value, `(names::label::LISTENER, name)` or `(names::label::CLUSTER,
    /// name)`. The other of the two labels is set empty so that every series has the
    /// same label set; a key other than `cluster` is taken as the listener.
    pub fn new(
        registry: &Registry,
        side: &str,
        listener_or_cluster: (&'static str, String),
    ) -> HandshakeCounters {
        let (key, value) = listener_or_cluster;
        let (listener, cluster) = if key == label::CLUSTER {
            (String::new(), value)
        } else {
            (value, String::new())
        };
        let counters = OUTCOMES
            .iter()
            .map(|outcome| {
                registry.counter(
                    names::TLS_HANDSHAKES_TOTAL,
                    &[
                        (label::SIDE, side.to_owned()),
                        (label::LISTENER, listener.clone()),
                        (label::CLUSTER, cluster.clone()),
                        (label::OUTCOME, (*outcome).to_owned()),
                    ],
                )
            })
            .collect();
        HandshakeCounters { counters }
    }

    /// Counts one handshake with `outcome` (`ok`, or a value of [`crate::outcome`]).
    pub fn record(&self, outcome: &str) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(OTHER);
        if let Some(counter) = self.counters.get(i) {
            counter.increment(1);
        }
    }

    /// Counts a successful handshake.
    pub fn ok(&self) {
        self.record("ok");
    }

    /// Counts a handshake that failed with `err`, classified by [`crate::outcome`].
    pub fn failed(&self, err: &rustls::Error) {
        self.record(crate::outcome(err));
    }

    /// Counts a handshake that failed with `err` as tokio-rustls returns it.
    pub fn failed_io(&self, err: &std::io::Error) {
        self.record(crate::io_outcome(err));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_under_their_labels() {
        let registry = Registry::new();
        let server = HandshakeCounters::new(&registry, "server", (label::LISTENER, "mesh".into()));
        let client = HandshakeCounters::new(&registry, "client", (label::CLUSTER, "db".into()));
        server.ok();
        server.ok();
        server.record("expired");
        server.record("made_up");
        client.failed(&rustls::Error::NoCertificatesPresented);
        let text = registry.render();
        for line in [
            r#"weft_tls_handshakes_total{side="server",listener="mesh",cluster="",outcome="ok"} 2"#,
            r#"weft_tls_handshakes_total{side="server",listener="mesh",cluster="",outcome="expired"} 1"#,
            r#"weft_tls_handshakes_total{side="server",listener="mesh",cluster="",outcome="other"} 1"#,
            r#"weft_tls_handshakes_total{side="client",listener="",cluster="db",outcome="no_client_cert"} 1"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
