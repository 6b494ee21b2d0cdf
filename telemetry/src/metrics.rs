//! A Prometheus registry per proxy instance.
//!
//! The data path never looks a metric up by name per request: it asks the [`Registry`]
//! once for a handle (a cheap atomic cell) and keeps it in its per-route state. Rendering
//! (the admin `/metrics` scrape) walks the registry without blocking those handles.

use std::fmt;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::names;

/// One proxy's metrics: handles are created here and rendered as Prometheus text.
#[derive(Clone)]
pub struct Registry {
    recorder: std::sync::Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The `# HELP` text of every metric the registry holds (the `process_*` figures are
/// rendered by [`crate::process`] with their own).
const DESCRIPTIONS: &[(&str, Kind, &str)] = {
    use names::*;
    &[
        (
            REQUESTS_TOTAL,
            Kind::Counter,
            "Requests handled, by route, destination and response code.",
        ),
        (
            REQUEST_DURATION_MS,
            Kind::Histogram,
            "Time from request arrival to the end of its response, in milliseconds.",
        ),
        (
            REQUEST_BYTES,
            Kind::Histogram,
            "Request body sizes, in bytes.",
        ),
        (
            RESPONSE_BYTES,
            Kind::Histogram,
            "Response body sizes, in bytes.",
        ),
        (
            TCP_SENT_BYTES,
            Kind::Counter,
            "Bytes sent to downstream peers of TCP-proxied connections.",
        ),
        (
            TCP_RECEIVED_BYTES,
            Kind::Counter,
            "Bytes received from downstream peers of TCP-proxied connections.",
        ),
        (
            TCP_CONNECTIONS_OPENED,
            Kind::Counter,
            "TCP-proxied connections opened.",
        ),
        (
            TCP_CONNECTIONS_CLOSED,
            Kind::Counter,
            "TCP-proxied connections closed, by response flag.",
        ),
        (
            DOWNSTREAM_CONNECTIONS_ACTIVE,
            Kind::Gauge,
            "Downstream connections currently open.",
        ),
        (
            DOWNSTREAM_CONNECTIONS_TOTAL,
            Kind::Counter,
            "Downstream connections accepted.",
        ),
        (
            PROTOCOL_DETECTION_TOTAL,
            Kind::Counter,
            "Protocol detection outcomes on HTTP listeners.",
        ),
        (
            CONFIG_UPDATES_TOTAL,
            Kind::Counter,
            "Configuration snapshots applied.",
        ),
        (
            CONFIG_REJECTIONS_TOTAL,
            Kind::Counter,
            "Configuration updates rejected; the previous snapshot stayed active.",
        ),
        (
            CONFIG_LAST_APPLIED,
            Kind::Gauge,
            "Unix time of the last applied configuration, in seconds.",
        ),
        (
            UPSTREAM_CONNECTIONS_TOTAL,
            Kind::Counter,
            "Upstream connections opened.",
        ),
        (
            UPSTREAM_CONNECT_FAILURES_TOTAL,
            Kind::Counter,
            "Upstream connection attempts that failed.",
        ),
        (
            UPSTREAM_POOL_IDLE,
            Kind::Gauge,
            "Idle pooled upstream connections.",
        ),
        (
            UPSTREAM_REQUESTS_ACTIVE,
            Kind::Gauge,
            "Upstream requests in flight.",
        ),
        (
            UPSTREAM_RETRIES_TOTAL,
            Kind::Counter,
            "Requests sent again after a reused connection turned out closed.",
        ),
        (
            RETRIES_TOTAL,
            Kind::Counter,
            "Retries made by retry policies.",
        ),
        (
            RETRY_BUDGET_EXHAUSTED_TOTAL,
            Kind::Counter,
            "Retries refused by the cluster's retry budget.",
        ),
        (
            UPSTREAM_OVERFLOW_TOTAL,
            Kind::Counter,
            "Requests or retries refused at a circuit-breaker limit.",
        ),
        (
            TIMEOUTS_TOTAL,
            Kind::Counter,
            "Requests that hit their route timeout.",
        ),
        (
            RATELIMIT_TOTAL,
            Kind::Counter,
            "Local rate-limit decisions, per route: ok, limited or would_limit.",
        ),
        (
            FAULT_INJECTED_TOTAL,
            Kind::Counter,
            "Faults injected, per route: delay or abort.",
        ),
        (
            TLS_HANDSHAKES_TOTAL,
            Kind::Counter,
            "TLS handshakes, by side, listener or cluster, and outcome (ok or why it failed).",
        ),
        (
            TLS_CERT_EXPIRY_SECONDS,
            Kind::Gauge,
            "Seconds until the certificate from this source expires (negative: expired).",
        ),
        (
            TLS_CERT_LOADS_TOTAL,
            Kind::Counter,
            "Certificate loads, by source and outcome (ok, rejected: the previous one kept).",
        ),
        (
            TLS_CERT_EXPIRING_TOTAL,
            Kind::Counter,
            "Times a certificate was found close to expiry, by source.",
        ),
        (
            AUTHZ_DECISIONS_TOTAL,
            Kind::Counter,
            "Authorization decisions, by listener, decision and the rule that decided.",
        ),
        (
            JWT_AUTHN_TOTAL,
            Kind::Counter,
            "JWT authentication outcomes, by listener, route and outcome.",
        ),
        (
            CLUSTER_ENDPOINTS,
            Kind::Gauge,
            "Endpoints currently known per cluster.",
        ),
        (
            OUTLIER_EJECTIONS_TOTAL,
            Kind::Counter,
            "Endpoints ejected by outlier detection, by reason.",
        ),
        (
            OUTLIER_EJECTIONS_OVERFLOW_TOTAL,
            Kind::Counter,
            "Ejections prevented because max_ejection_percent of the endpoints were ejected.",
        ),
        (
            ENDPOINTS_EJECTED,
            Kind::Gauge,
            "Endpoints currently ejected by outlier detection.",
        ),
        (
            LB_PANIC_TOTAL,
            Kind::Counter,
            "Endpoint picks in panic mode: too few usable endpoints, so all were used.",
        ),
        (
            HEALTH_CHECKS_TOTAL,
            Kind::Counter,
            "Active health checks, by result.",
        ),
        (
            ENDPOINTS_UNHEALTHY,
            Kind::Gauge,
            "Endpoints currently marked unhealthy by active health checks.",
        ),
        (
            ACCESS_LOG_WRITTEN,
            Kind::Counter,
            "Access-log records written.",
        ),
        (
            ACCESS_LOG_DROPPED,
            Kind::Counter,
            "Access-log records dropped because the sink fell behind.",
        ),
        (
            SPANS_EXPORTED,
            Kind::Counter,
            "Spans exported to the OTLP collector.",
        ),
        (
            SPANS_DROPPED,
            Kind::Counter,
            "Spans dropped: export queue full, or the export failed.",
        ),
    ]
};

static METADATA: Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Registry {
    /// A fresh, empty registry with Weft's histogram buckets and metric descriptions.
    pub fn new() -> Self {
        // The buckets are a non-empty constant, the one input that can make this fail;
        // without them the histogram would still render (as a summary).
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(names::REQUEST_DURATION_MS.to_owned()),
                names::DURATION_MS_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(names::REQUEST_BYTES.to_owned()),
                    names::BYTES_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(names::RESPONSE_BYTES.to_owned()),
                    names::BYTES_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let this = Self {
            recorder: std::sync::Arc::new(recorder),
            handle,
        };
        this.describe();
        this
    }

    fn describe(&self) {
        let r = &self.recorder;
        for (name, kind, help) in DESCRIPTIONS {
            let (name, help) = ((*name).into(), (*help).into());
            match kind {
                Kind::Counter => r.describe_counter(name, None, help),
                Kind::Gauge => r.describe_gauge(name, None, help),
                Kind::Histogram => r.describe_histogram(name, None, help),
            }
        }
    }

    /// A counter handle for `name` with `labels`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// A gauge handle for `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// A histogram handle for `name` with `labels`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, String)]) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// The registry as Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets. Call periodically (the proxy
    /// does every few seconds) so that memory stays bounded between scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect();
    Key::from_parts(name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_independent_and_render_labels() {
        let a = Registry::new();
        let b = Registry::new();
        a.counter(
            names::REQUESTS_TOTAL,
            &[(names::label::RESPONSE_CODE, "200".into())],
        )
        .increment(3);
        a.histogram(names::REQUEST_DURATION_MS, &[]).record(7.0);
        let text = a.render();
        assert!(
            text.contains(r#"istio_requests_total{response_code="200"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"istio_request_duration_milliseconds_bucket{le="10"} 1"#),
            "{text}"
        );
        assert!(!b.render().contains("istio_requests_total{"));
    }

    #[test]
    fn metrics_render_with_their_help_text() {
        let r = Registry::new();
        r.histogram(names::REQUEST_BYTES, &[]).record(10.0);
        r.counter(names::TCP_CONNECTIONS_CLOSED, &[]).increment(1);
        r.gauge(names::UPSTREAM_POOL_IDLE, &[]).set(2.0);
        let text = r.render();
        for name in [
            names::REQUEST_BYTES,
            names::TCP_CONNECTIONS_CLOSED,
            names::UPSTREAM_POOL_IDLE,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
        assert!(
            text.contains(r#"istio_request_bytes_bucket{le="10"} 1"#),
            "{text}"
        );
    }
}
