//! Access logs and tracing settings: Envoy's `access_log` entries (connection manager and
//! TCP proxy) and the connection manager's `tracing`.
//!
//! Weft writes one fixed record per request, so what it reads from an access-log entry
//! is where the lines go, whether they are JSON or text, and which requests are logged.
//! A JSON `log_format` selects Weft's JSON record whatever its keys (the keys Weft writes
//! are documented in the README); a custom text format is rejected rather than silently
//! replaced by a different line. Filters: a status-code filter (`>=`), a response-flag
//! filter with no flag list (any flag), or an `or_filter` of the two.

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, access_log, access_log_filter::FilterSpecifier,
    comparison_filter::Op,
};
use envoy_types::pb::envoy::config::core::v3::{
    SubstitutionFormatString, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StderrAccessLog, StdoutAccessLog, stderr_access_log, stdout_access_log,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use prost::Name;
use weft_telemetry::access_log::{Format, Sink};

use super::super::{AccessLogSpec, LogFilter, TracingSpec};
use super::Translator;

impl Translator {
    /// Reads a listener's access-log entries.
    pub(super) fn access_logs(&mut self, logs: &[AccessLog], place: &str) -> Vec<AccessLogSpec> {
        let mut out = Vec::new();
        for (i, log) in logs.iter().enumerate() {
            let place = format!("{place}.access_log[{i}]");
            let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
                self.problem(&place, "typed_config is required");
                continue;
            };
            let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
            let tplace = format!("{place}.typed_config");
            let (sink, format) = if type_name == FileAccessLog::full_name() {
                let Some(f) = self.unpack::<FileAccessLog>(any, &tplace) else {
                    continue;
                };
                if f.path.is_empty() {
                    self.problem(format!("{tplace}.path"), "a file path is required");
                    continue;
                }
                let format = match &f.access_log_format {
                    None => Some(Format::Text),
                    Some(file_access_log::AccessLogFormat::LogFormat(s)) => {
                        self.log_format(s, &format!("{tplace}.log_format"))
                    }
                    #[allow(deprecated)]
                    Some(file_access_log::AccessLogFormat::JsonFormat(_))
                    | Some(file_access_log::AccessLogFormat::TypedJsonFormat(_)) => {
                        Some(Format::Json)
                    }
                    #[allow(deprecated)]
                    Some(file_access_log::AccessLogFormat::Format(text)) => {
                        self.text_format(text, &format!("{tplace}.format"))
                    }
                };
                let sink = match f.path.as_str() {
                    "/dev/stdout" => Sink::Stdout,
                    "/dev/stderr" => Sink::Stderr,
                    p => Sink::File(p.into()),
                };
                (sink, format)
            } else if type_name == StdoutAccessLog::full_name() {
                let Some(s) = self.unpack::<StdoutAccessLog>(any, &tplace) else {
                    continue;
                };
                let format = match &s.access_log_format {
                    None => Some(Format::Text),
                    Some(stdout_access_log::AccessLogFormat::LogFormat(s)) => {
                        self.log_format(s, &format!("{tplace}.log_format"))
                    }
                };
                (Sink::Stdout, format)
            } else if type_name == StderrAccessLog::full_name() {
                let Some(s) = self.unpack::<StderrAccessLog>(any, &tplace) else {
                    continue;
                };
                let format = match &s.access_log_format {
                    None => Some(Format::Text),
                    Some(stderr_access_log::AccessLogFormat::LogFormat(s)) => {
                        self.log_format(s, &format!("{tplace}.log_format"))
                    }
                };
                (Sink::Stderr, format)
            } else {
                self.problem(
                    &tplace,
                    format!(
                        "unsupported access logger {type_name:?} (file, stdout and stderr are supported)"
                    ),
                );
                continue;
            };
            let filter = match &log.filter {
                None => Some(LogFilter::default()),
                Some(f) => self.log_filter(f, &format!("{place}.filter")),
            };
            if let (Some(format), Some(filter)) = (format, filter) {
                out.push(AccessLogSpec {
                    sink,
                    format,
                    filter,
                });
            }
        }
        out
    }

    fn log_format(&mut self, s: &SubstitutionFormatString, place: &str) -> Option<Format> {
        use substitution_format_string::Format as F;
        match &s.format {
            Some(F::JsonFormat(_)) => Some(Format::Json),
            #[allow(deprecated)]
            Some(F::TextFormat(text)) => self.text_format(text, &format!("{place}.text_format")),
            Some(F::TextFormatSource(_)) => {
                self.problem(
                    format!("{place}.text_format_source"),
                    "custom text formats are not supported; use json_format, or no format for Envoy's default line",
                );
                None
            }
            None => Some(Format::Text),
        }
    }

    fn text_format(&mut self, text: &str, place: &str) -> Option<Format> {
        if text.is_empty() {
            return Some(Format::Text);
        }
        self.problem(
            place,
            "custom text formats are not supported; use json_format, or no format for Envoy's default line",
        );
        None
    }

    fn log_filter(&mut self, f: &AccessLogFilter, place: &str) -> Option<LogFilter> {
        let mut out = LogFilter::default();
        match &f.filter_specifier {
            Some(FilterSpecifier::OrFilter(or)) => {
                for (i, sub) in or.filters.iter().enumerate() {
                    let sub =
                        self.simple_filter(sub, &format!("{place}.or_filter.filters[{i}]"))?;
                    out.min_status = out.min_status.or(sub.min_status);
                    out.flagged |= sub.flagged;
                }
                if or.filters.is_empty() {
                    self.problem(format!("{place}.or_filter"), "an or_filter needs filters");
                    return None;
                }
                Some(out)
            }
            _ => self.simple_filter(f, place),
        }
    }

    fn simple_filter(&mut self, f: &AccessLogFilter, place: &str) -> Option<LogFilter> {
        match &f.filter_specifier {
            Some(FilterSpecifier::StatusCodeFilter(s)) => {
                let c = s.comparison.as_ref();
                let value = c
                    .and_then(|c| c.value.as_ref())
                    .map(|v| v.default_value)
                    .unwrap_or(0);
                if c.map(|c| c.op) != Some(Op::Ge as i32) || !(100..=599).contains(&value) {
                    self.problem(
                        format!("{place}.status_code_filter"),
                        "only `op: GE` with a status from 100 to 599 is supported",
                    );
                    return None;
                }
                Some(LogFilter {
                    min_status: u16::try_from(value).ok(),
                    flagged: false,
                })
            }
            Some(FilterSpecifier::ResponseFlagFilter(r)) => {
                if !r.flags.is_empty() {
                    self.problem(
                        format!("{place}.response_flag_filter.flags"),
                        "only an empty flag list (any response flag) is supported",
                    );
                    return None;
                }
                Some(LogFilter {
                    min_status: None,
                    flagged: true,
                })
            }
            _ => {
                self.problem(
                    place,
                    "unsupported access log filter (status_code_filter, response_flag_filter and an or_filter of them are supported)",
                );
                None
            }
        }
    }

    /// Reads a connection manager's `tracing`.
    pub(super) fn tracing(&mut self, t: Option<&Tracing>, place: &str) -> Option<TracingSpec> {
        let t = t?;
        let place = format!("{place}.tracing");
        let percent =
            |p: &Option<envoy_types::pb::envoy::r#type::v3::Percent>| p.as_ref().map(|p| p.value);
        // Envoy's default for random_sampling is 100%: tracing on means every new trace.
        let random = percent(&t.random_sampling).unwrap_or(100.0);
        let overall = percent(&t.overall_sampling).unwrap_or(100.0);
        for (name, v) in [("random_sampling", random), ("overall_sampling", overall)] {
            if !(0.0..=100.0).contains(&v) {
                self.problem(
                    format!("{place}.{name}.value"),
                    "a percentage from 0 to 100 is required",
                );
                return None;
            }
        }
        if let Some(p) = &t.provider {
            // One exporter serves every listener: its collector is a process setting
            // (OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint), so an OpenTelemetry
            // provider's own collector reference is not used.
            let otel = p.name == "envoy.tracers.opentelemetry"
                || matches!(&p.config_type, Some(envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType::TypedConfig(a))
                    if a.type_url.ends_with("envoy.config.trace.v3.OpenTelemetryConfig"));
            if !otel {
                self.problem(
                    format!("{place}.provider"),
                    format!(
                        "unsupported tracer {:?} (Weft exports OTLP: envoy.tracers.opentelemetry)",
                        p.name
                    ),
                );
                return None;
            }
        }
        Some(TracingSpec {
            sample_ratio: random / 100.0 * (overall / 100.0),
        })
    }
}
