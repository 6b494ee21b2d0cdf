//! A Prometheus registry per proxy instance.
//!
//! The data path never looks a metric up by name per request: it asks the [`Registry`]
//! once for a handle (a cheap atomic cell) and keeps it in its per-route state. Rendering
//! (the admin `/metrics` scrape) walks the registry without blocking those handles.

use std::fmt;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
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
        r.describe_counter(
            names::REQUESTS_TOTAL.into(),
            None,
            "Requests handled, by route, destination and response code.".into(),
        );
        r.describe_histogram(
            names::REQUEST_DURATION_MS.into(),
            Some(Unit::Milliseconds),
            "Time from request arrival to the end of its response.".into(),
        );
        r.describe_gauge(
            names::DOWNSTREAM_CONNECTIONS_ACTIVE.into(),
            None,
            "Downstream connections currently open.".into(),
        );
        r.describe_counter(
            names::DOWNSTREAM_CONNECTIONS_TOTAL.into(),
            None,
            "Downstream connections accepted.".into(),
        );
        r.describe_counter(
            names::CONFIG_UPDATES_TOTAL.into(),
            None,
            "Configuration snapshots applied.".into(),
        );
        r.describe_counter(
            names::CONFIG_REJECTIONS_TOTAL.into(),
            None,
            "Configuration updates rejected; the previous snapshot stayed active.".into(),
        );
        r.describe_counter(
            names::UPSTREAM_CONNECTIONS_TOTAL.into(),
            None,
            "Upstream connections opened.".into(),
        );
        r.describe_counter(
            names::UPSTREAM_CONNECT_FAILURES_TOTAL.into(),
            None,
            "Upstream connection attempts that failed.".into(),
        );
        r.describe_gauge(
            names::CLUSTER_ENDPOINTS.into(),
            None,
            "Endpoints currently known per cluster.".into(),
        );
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
}
