//! The Grafana dashboard in `deploy/grafana/weft.json` reads only what Weft exports.
//!
//! Every PromQL expression in the dashboard is lexed; the metric names it selects must be
//! constants of [`weft_telemetry::names`] (histograms only through their `_bucket`, `_sum`
//! and `_count` series), the labels it groups by or matches on must be constants of
//! [`weft_telemetry::names::label`] (or `instance`, `job` and `le`, which Prometheus adds),
//! and the dashboard variables it uses must be defined.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;
use weft_telemetry::names::{self, label};

/// Counters and gauges Weft exports, selected by their own name.
const SERIES: &[&str] = &[
    names::REQUESTS_TOTAL,
    names::TCP_SENT_BYTES,
    names::TCP_RECEIVED_BYTES,
    names::TCP_CONNECTIONS_OPENED,
    names::TCP_CONNECTIONS_CLOSED,
    names::DOWNSTREAM_CONNECTIONS_ACTIVE,
    names::DOWNSTREAM_CONNECTIONS_TOTAL,
    names::PROTOCOL_DETECTION_TOTAL,
    names::CONFIG_UPDATES_TOTAL,
    names::CONFIG_REJECTIONS_TOTAL,
    names::CONFIG_LAST_APPLIED,
    names::UPSTREAM_CONNECTIONS_TOTAL,
    names::UPSTREAM_CONNECT_FAILURES_TOTAL,
    names::UPSTREAM_POOL_IDLE,
    names::UPSTREAM_REQUESTS_ACTIVE,
    names::UPSTREAM_RETRIES_TOTAL,
    names::TIMEOUTS_TOTAL,
    names::CLUSTER_ENDPOINTS,
    names::ACCESS_LOG_WRITTEN,
    names::ACCESS_LOG_DROPPED,
    names::SPANS_EXPORTED,
    names::SPANS_DROPPED,
    names::PROCESS_RSS,
    names::PROCESS_CPU,
    names::PROCESS_OPEN_FDS,
    names::PROCESS_MAX_FDS,
    names::RETRIES_TOTAL,
    names::RETRY_BUDGET_EXHAUSTED_TOTAL,
    names::UPSTREAM_OVERFLOW_TOTAL,
    names::OUTLIER_EJECTIONS_TOTAL,
    names::OUTLIER_EJECTIONS_OVERFLOW_TOTAL,
    names::ENDPOINTS_EJECTED,
    names::LB_PANIC_TOTAL,
    names::HEALTH_CHECKS_TOTAL,
    names::ENDPOINTS_UNHEALTHY,
    names::RATELIMIT_TOTAL,
    names::FAULT_INJECTED_TOTAL,
];

/// Histograms Weft exports: Prometheus holds them as `<name>_bucket`, `_sum`, `_count`.
const HISTOGRAMS: &[&str] = &[
    names::REQUEST_DURATION_MS,
    names::REQUEST_BYTES,
    names::RESPONSE_BYTES,
];

const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// Label keys Weft sets.
const LABELS: &[&str] = &[
    label::REPORTER,
    label::SOURCE_WORKLOAD,
    label::SOURCE_WORKLOAD_NAMESPACE,
    label::SOURCE_PRINCIPAL,
    label::DESTINATION_WORKLOAD,
    label::DESTINATION_WORKLOAD_NAMESPACE,
    label::DESTINATION_PRINCIPAL,
    label::DESTINATION_SERVICE,
    label::REQUEST_PROTOCOL,
    label::RESPONSE_CODE,
    label::GRPC_RESPONSE_STATUS,
    label::RESPONSE_FLAGS,
    label::CONNECTION_SECURITY_POLICY,
    label::LISTENER,
    label::ROUTE,
    label::CLUSTER,
    label::OUTCOME,
    label::REASON,
    label::RESULT,
    label::KIND,
    label::LIMIT,
];

/// Labels Prometheus adds itself (target labels, and `le` on histogram buckets).
const PROMETHEUS_LABELS: &[&str] = &["instance", "job", "le"];

/// Grafana's built-in variables.
const GRAFANA_VARIABLES: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
];

/// PromQL words that take a label list in parentheses.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// PromQL words that are not metric names even when no `(` follows: binary and modifier
/// keywords, literals, and aggregation operators (`sum by (le) (...)`).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

fn dashboard() -> Result<Value, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/weft.json");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

/// Every panel, rows and the panels folded inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(inner) = panel.get("panels") {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(list) = dashboard.get("panels") {
        walk(list, &mut out);
    }
    out
}

fn title(panel: &Value) -> String {
    let id = panel.get("id").map(Value::to_string).unwrap_or_default();
    let title = panel.get("title").and_then(Value::as_str).unwrap_or("");
    format!("panel {id} \"{title}\"")
}

/// `(panel title, expr)` for every query target of every panel.
fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(expr) = target.get("expr").and_then(Value::as_str) {
                out.push((title(panel), expr.to_owned()));
            }
        }
    }
    out
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

/// A query variable's query: a plain string, or the Prometheus editor's object form.
fn variable_query(variable: &Value) -> Option<&str> {
    let query = variable.get("query")?;
    query
        .as_str()
        .or_else(|| query.get("query").and_then(Value::as_str))
}

#[derive(Debug)]
enum Token {
    Ident(String),
    Str(String),
    Var(String),
    Number,
    Punct(String),
}

/// Splits a PromQL expression (with Grafana variables) into tokens.
fn lex(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let take_while = |mut i: usize, f: &dyn Fn(char) -> bool| {
        while i < chars.len() && f(chars[i]) {
            i += 1;
        }
        i
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut value = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(format!("unterminated string in `{expr}`")),
                    Some(&q) if q == c => break,
                    Some('\\') if c != '`' => {
                        value.extend(chars.get(j + 1));
                        j += 2;
                    }
                    Some(&other) => {
                        value.push(other);
                        j += 1;
                    }
                }
            }
            tokens.push(Token::Str(value));
            i = j + 1;
        } else if c == '$' && chars.get(i + 1) == Some(&'{') {
            let end = take_while(i + 2, &|c| c != '}');
            let inner: String = chars[i + 2..end].iter().collect();
            let name = inner.split(':').next().unwrap_or("").to_owned();
            tokens.push(Token::Var(name));
            i = end + 1;
        } else if c == '$' {
            let end = take_while(i + 1, &|c| c.is_ascii_alphanumeric() || c == '_');
            tokens.push(Token::Var(chars[i + 1..end].iter().collect()));
            i = end;
        } else if c == '[' && chars.get(i + 1) == Some(&'[') {
            let end = take_while(i + 2, &|c| c != ']');
            tokens.push(Token::Var(chars[i + 2..end].iter().collect()));
            i = end + 2;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = take_while(i, &is_ident);
            tokens.push(Token::Ident(chars[i..end].iter().collect()));
            i = end;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let end = take_while(i, &|c| c.is_ascii_alphanumeric() || c == '.');
            tokens.push(Token::Number);
            i = end;
        } else {
            let pair: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["=~", "!~", "!=", "==", "<=", ">="].contains(&pair.as_str()) {
                tokens.push(Token::Punct(pair));
                i += 2;
            } else {
                tokens.push(Token::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// A label matcher inside a selector's braces.
#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// What an expression reads: metric selectors with their matchers, and grouping labels.
#[derive(Debug, Default)]
struct Analysis {
    selectors: Vec<(String, Vec<Matcher>)>,
    grouping: Vec<String>,
}

fn is_punct(token: Option<&Token>, p: &str) -> bool {
    matches!(token, Some(Token::Punct(q)) if q == p)
}

/// Reads `{label op "value", ...}` starting at the `{`; returns the matchers and the index
/// after the `}`.
fn matchers(tokens: &[Token], mut i: usize, expr: &str) -> Result<(Vec<Matcher>, usize), String> {
    let mut out = Vec::new();
    i += 1;
    loop {
        match (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2)) {
            (Some(Token::Punct(p)), _, _) if p == "}" => return Ok((out, i + 1)),
            (Some(Token::Ident(label)), Some(Token::Punct(op)), Some(Token::Str(value)))
                if ["=", "!=", "=~", "!~"].contains(&op.as_str()) =>
            {
                out.push(Matcher {
                    label: label.clone(),
                    op: op.clone(),
                    value: value.clone(),
                });
                i += 3;
                if is_punct(tokens.get(i), ",") {
                    i += 1;
                }
            }
            _ => return Err(format!("cannot read the label matchers in `{expr}`")),
        }
    }
}

fn analyze(expr: &str) -> Result<Analysis, String> {
    let tokens = lex(expr)?;
    let mut analysis = Analysis::default();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(word) if is_punct(tokens.get(i + 1), "(") => {
                if GROUPING.contains(&word.as_str()) {
                    i += 2;
                    while !is_punct(tokens.get(i), ")") {
                        match tokens.get(i) {
                            Some(Token::Ident(label)) => analysis.grouping.push(label.clone()),
                            Some(Token::Punct(p)) if p == "," => {}
                            _ => return Err(format!("cannot read `{word} (...)` in `{expr}`")),
                        }
                        i += 1;
                    }
                }
                // A function call (or a grouping clause, now read): go on with its arguments.
                i += 1;
            }
            Token::Ident(word) if KEYWORDS.contains(&word.as_str()) => i += 1,
            Token::Ident(name) => {
                if is_punct(tokens.get(i + 1), "{") {
                    let (found, next) = matchers(&tokens, i + 1, expr)?;
                    analysis.selectors.push((name.clone(), found));
                    i = next;
                } else {
                    analysis.selectors.push((name.clone(), Vec::new()));
                    i += 1;
                }
            }
            Token::Punct(p) if p == "{" => {
                return Err(format!("a selector without a metric name in `{expr}`"));
            }
            _ => i += 1,
        }
    }
    Ok(analysis)
}

/// Names of the dashboard variables `text` refers to (`$x`, `${x}`, `${x:format}`, `[[x]]`),
/// in order, inside quoted strings too.
fn variable_refs(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for token in lex(text)? {
        match token {
            Token::Var(name) => out.push(name),
            Token::Str(value) => out.extend(variable_refs(&value)?),
            _ => {}
        }
    }
    Ok(out)
}

fn known_metric(name: &str) -> bool {
    SERIES.contains(&name)
        || HISTOGRAM_SUFFIXES.iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

fn known_label(name: &str) -> bool {
    LABELS.contains(&name) || PROMETHEUS_LABELS.contains(&name)
}

/// The problems in one expression: unknown metrics and unknown labels.
fn check_names(context: &str, expr: &str) -> Vec<String> {
    let analysis = match analyze(expr) {
        Ok(analysis) => analysis,
        Err(e) => return vec![format!("{context}: {e}")],
    };
    let mut problems = Vec::new();
    for (metric, found) in &analysis.selectors {
        if !known_metric(metric) {
            problems.push(format!(
                "{context}: `{metric}` is not a metric Weft exports"
            ));
        }
        for m in found {
            if !known_label(&m.label) {
                problems.push(format!(
                    "{context}: label `{}` (on `{metric}`) is not one Weft sets",
                    m.label
                ));
            }
        }
    }
    for name in &analysis.grouping {
        if !known_label(name) {
            problems.push(format!(
                "{context}: grouping label `{name}` is not one Weft sets"
            ));
        }
    }
    problems
}

fn report(problems: &[String]) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("\n{}", problems.join("\n")))
    }
}

#[test]
fn dashboard_is_importable() -> Result<(), String> {
    let d = dashboard()?;
    let mut problems = Vec::new();
    if d.get("uid").and_then(Value::as_str) != Some("weft-overview") {
        problems.push("uid is not \"weft-overview\"".to_owned());
    }
    if d.get("title").and_then(Value::as_str) != Some("Weft") {
        problems.push("title is not \"Weft\"".to_owned());
    }
    if d.get("schemaVersion").and_then(Value::as_u64) != Some(39) {
        problems.push("schemaVersion is not 39".to_owned());
    }
    let has_input = d
        .get("__inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|input| {
            input.get("name").and_then(Value::as_str) == Some("DS_PROMETHEUS")
                && input.get("pluginId").and_then(Value::as_str) == Some("prometheus")
        });
    if !has_input {
        problems.push("no DS_PROMETHEUS Prometheus datasource in __inputs".to_owned());
    }
    let required: HashSet<&str> = d
        .get("__requires")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("id").and_then(Value::as_str))
        .collect();
    let mut needed: BTreeSet<&str> = ["grafana", "prometheus"].into();
    needed.extend(
        panels(&d)
            .into_iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .filter(|t| *t != "row"),
    );
    for id in needed {
        if !required.contains(id) {
            problems.push(format!("`{id}` is missing from __requires"));
        }
    }
    // Panels and queries read the datasource the `datasource` variable selects.
    for panel in panels(&d) {
        let targets = panel.get("targets").and_then(Value::as_array);
        let sources = panel.get("datasource").into_iter().chain(
            targets
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("datasource")),
        );
        for source in sources {
            if source.get("uid").and_then(Value::as_str) != Some("${datasource}") {
                problems.push(format!(
                    "{}: datasource {source} is not ${{datasource}}",
                    title(panel)
                ));
            }
        }
    }
    report(&problems)
}

#[test]
fn panels_have_unique_ids_and_non_overlapping_grid_positions() -> Result<(), String> {
    let d = dashboard()?;
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    let all = panels(&d);
    if all.is_empty() {
        problems.push("the dashboard has no panels".to_owned());
    }
    for panel in all {
        let name = title(panel);
        match panel.get("id").and_then(Value::as_u64) {
            Some(id) if !ids.insert(id) => problems.push(format!("{name}: id {id} is not unique")),
            Some(_) => {}
            None => problems.push(format!("{name}: no numeric id")),
        }
        let field = |f: &str| {
            panel
                .pointer(&format!("/gridPos/{f}"))
                .and_then(Value::as_u64)
        };
        match (field("x"), field("y"), field("w"), field("h")) {
            (Some(x), Some(y), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24 => {
                for (other, [ox, oy, ow, oh]) in &boxes {
                    if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                        problems.push(format!("{name} overlaps {other}"));
                    }
                }
                boxes.push((name, [x, y, w, h]));
            }
            _ => problems.push(format!(
                "{name}: no gridPos with x, y, w, h inside the 24-column grid"
            )),
        }
    }
    report(&problems)
}

#[test]
fn expressions_read_only_metrics_and_labels_weft_exports() -> Result<(), String> {
    let d = dashboard()?;
    let exprs = exprs(&d);
    let mut problems = Vec::new();
    if exprs.is_empty() {
        problems.push("the dashboard has no query expressions".to_owned());
    }
    for (panel, expr) in &exprs {
        problems.extend(check_names(panel, expr));
    }
    for variable in variables(&d) {
        let Some(query) = variable_query(variable) else {
            continue;
        };
        if variable.get("type").and_then(Value::as_str) != Some("query") {
            continue;
        }
        let name = variable.get("name").and_then(Value::as_str).unwrap_or("");
        let context = format!("variable `{name}`");
        // `label_values(selector, label)`: the selector is an expression, the last argument
        // a label.
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'));
        match inner.and_then(|inner| inner.rsplit_once(',')) {
            Some((selector, label)) => {
                problems.extend(check_names(&context, selector));
                if !known_label(label.trim()) {
                    problems.push(format!(
                        "{context}: label `{}` is not one Weft sets",
                        label.trim()
                    ));
                }
            }
            None => problems.push(format!(
                "{context}: `{query}` is not label_values(selector, label)"
            )),
        }
    }
    report(&problems)
}

#[test]
fn every_exported_metric_has_a_panel() -> Result<(), String> {
    let d = dashboard()?;
    let mut used = HashSet::new();
    for (_, expr) in exprs(&d) {
        for (metric, _) in analyze(&expr)?.selectors {
            let base = HISTOGRAM_SUFFIXES
                .iter()
                .find_map(|suffix| metric.strip_suffix(suffix))
                .filter(|base| HISTOGRAMS.contains(base))
                .map_or(metric.clone(), str::to_owned);
            used.insert(base);
        }
    }
    let problems: Vec<String> = SERIES
        .iter()
        .chain(HISTOGRAMS)
        .filter(|name| !used.contains(**name))
        .map(|name| format!("no panel shows `{name}`"))
        .collect();
    report(&problems)
}

#[test]
fn every_selector_filters_by_instance() -> Result<(), String> {
    let d = dashboard()?;
    let mut problems = Vec::new();
    for (panel, expr) in exprs(&d) {
        for (metric, found) in analyze(&expr)?.selectors {
            let filtered = found
                .iter()
                .any(|m| m.label == "instance" && m.op == "=~" && m.value == "$instance");
            if !filtered {
                problems.push(format!(
                    "{panel}: `{metric}` is not filtered by instance=~\"$instance\""
                ));
            }
        }
    }
    report(&problems)
}

#[test]
fn variables_used_are_defined() -> Result<(), String> {
    let d = dashboard()?;
    let mut problems = Vec::new();
    let defined: HashSet<String> = variables(&d)
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    for name in [
        "datasource",
        "instance",
        "destination_service",
        "route_name",
    ] {
        if !defined.contains(name) {
            problems.push(format!("variable `{name}` is not defined"));
        }
    }
    let mut texts: Vec<(String, String)> = exprs(&d);
    for panel in panels(&d) {
        for target in panel
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(legend) = target.get("legendFormat").and_then(Value::as_str) {
                texts.push((title(panel), legend.to_owned()));
            }
        }
    }
    for variable in variables(&d) {
        let name = variable.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some(query) = variable_query(variable) {
            texts.push((format!("variable `{name}`"), query.to_owned()));
        }
    }
    for (context, text) in texts {
        for name in variable_refs(&text)? {
            if !defined.contains(&name) && !GRAFANA_VARIABLES.contains(&name.as_str()) {
                problems.push(format!("{context}: `${name}` is not a defined variable"));
            }
        }
    }
    report(&problems)
}

/// The checks above would pass vacuously if the lexer found nothing: make sure they catch
/// what they are meant to.
#[test]
fn checks_catch_unknown_names() -> Result<(), String> {
    let good = r#"histogram_quantile(0.99, sum by (le, destination_service) (rate(istio_request_duration_milliseconds_bucket{instance=~"$instance", response_code!~"5..|0"}[$__rate_interval])))"#;
    if let Err(e) = report(&check_names("good", good)) {
        return Err(format!("a valid expression was rejected: {e}"));
    }
    let bad = [
        r#"sum(rate(weft_bogus_total{instance=~"$instance"}[5m]))"#,
        r#"sum(rate(istio_request_duration_milliseconds{instance=~"$instance"}[5m]))"#,
        r#"sum(rate(istio_requests_total_count{instance=~"$instance"}[5m]))"#,
        r#"sum(rate(istio_requests_total{pod=~"$instance"}[5m]))"#,
        r#"sum by (pod) (rate(istio_requests_total{instance=~"$instance"}[5m]))"#,
        r#"sum(up)"#,
        r#"sum by (le) (up{instance=~"$instance"})"#,
    ];
    for expr in bad {
        if check_names("bad", expr).is_empty() {
            return Err(format!("`{expr}` was accepted"));
        }
    }
    let refs = variable_refs(r#"x{a=~"$one", b="${two:regex}"}[$__rate_interval] [[three]]"#)?;
    if refs != ["one", "two", "__rate_interval", "three"] {
        return Err(format!("variable references read as {refs:?}"));
    }
    Ok(())
}
