//! How a request would be handled, and why: the listener, virtual host and route it
//! gets, what the route does, the path parameters, and for every route tried before it
//! the condition that did not hold.
//!
//! Uses the same decision functions as the data path (`snapshot::route`), so what it
//! says is what the proxy does. `weft explain` runs it against a file, admin `/explain`
//! against the live snapshot.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::Serialize;

use crate::snapshot::route::{self, Mismatch, PathMatch, RequestView};
use crate::snapshot::{Action, ListenerKind, Snapshot};

/// A request to explain.
#[derive(Clone, Debug)]
pub struct Query {
    /// Method.
    pub method: Method,
    /// Absolute (`http://host:port/path?q`) or origin-form (`/path`) URL.
    pub url: String,
    /// Extra headers (`Host` overrides the URL's authority).
    pub headers: Vec<(String, String)>,
    /// Listener to use; default: the HTTP listener on the URL's port, else the first.
    pub listener: Option<String>,
}

/// The answer.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// Listener name.
    pub listener: String,
    /// Host used for virtual host selection.
    pub host: String,
    /// Path used for matching.
    pub path: String,
    /// Selected virtual host, if any.
    pub virtual_host: Option<String>,
    /// Routes tried before the match, with the reason each did not match.
    pub skipped: Vec<Skipped>,
    /// The matching route, if any.
    pub route: Option<String>,
    /// What the route does.
    pub action: Option<ActionSummary>,
    /// Path template parameters.
    pub params: Vec<(String, String)>,
}

/// A route that did not match.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// Route name.
    pub route: String,
    /// Why not.
    pub reason: String,
}

/// What a route does, summarised.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionSummary {
    /// Forward to clusters.
    Forward {
        /// (cluster, weight) pairs.
        clusters: Vec<(String, u32)>,
        /// Path sent upstream, after rewrites.
        upstream_path: String,
        /// Route timeout in milliseconds (`None`: none).
        timeout_ms: Option<u128>,
    },
    /// Redirect.
    Redirect {
        /// Status.
        status: u16,
        /// Location.
        location: String,
    },
    /// Direct response.
    Respond {
        /// Status.
        status: u16,
    },
}

/// Why a request cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The URL did not parse.
    #[error("invalid URL {0:?}")]
    Url(String),
    /// A header did not parse.
    #[error("invalid header {0:?}: use 'name: value'")]
    Header(String),
    /// No such listener, or no HTTP listener at all.
    #[error("{0}")]
    Listener(String),
}

/// Explains `q` against `snapshot`.
pub fn explain(snapshot: &Snapshot, q: &Query) -> Result<Explanation, ExplainError> {
    let uri: Uri = q
        .url
        .parse()
        .map_err(|_| ExplainError::Url(q.url.clone()))?;
    let mut headers = HeaderMap::new();
    for (k, v) in &q.headers {
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| ExplainError::Header(k.clone()))?;
        let value = HeaderValue::from_str(v.trim())
            .map_err(|_| ExplainError::Header(format!("{k}: {v}")))?;
        headers.append(name, value);
    }
    let http_listeners = || {
        snapshot
            .listeners
            .iter()
            .filter(|l| matches!(l.kind, ListenerKind::Http(_)))
    };
    let listener = match &q.listener {
        Some(name) => snapshot
            .listener(name)
            .ok_or_else(|| ExplainError::Listener(format!("no listener named {name:?}")))?,
        None => {
            let port = uri.port_u16();
            http_listeners()
                .find(|l| Some(l.address.port()) == port)
                .or_else(|| http_listeners().next())
                .ok_or_else(|| {
                    ExplainError::Listener("the configuration has no HTTP listener".to_owned())
                })?
        }
    };
    let ListenerKind::Http(http) = &listener.kind else {
        return Err(ExplainError::Listener(format!(
            "listener {:?} is TCP, not HTTP",
            listener.name
        )));
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    let path = uri.path().to_owned();
    let scheme = uri.scheme_str().unwrap_or("http").to_owned();
    let view = RequestView {
        method: &q.method,
        host: &host,
        path: &path,
        query: uri.query(),
        scheme: &scheme,
        headers: &headers,
    };
    let mut out = Explanation {
        listener: listener.name.to_string(),
        host: host.clone(),
        path: path.clone(),
        virtual_host: None,
        skipped: Vec::new(),
        route: None,
        action: None,
        params: Vec::new(),
    };
    let Some(vhost) = route::select_vhost(&http.virtual_hosts, &host) else {
        return Ok(out);
    };
    out.virtual_host = Some(vhost.name.to_string());
    for r in &vhost.routes {
        match r.matcher.check(&view) {
            Err(why) => out.skipped.push(Skipped {
                route: r.name.to_string(),
                reason: reason(&why, &r.matcher.path, &view),
            }),
            Ok(()) => {
                out.route = Some(r.name.to_string());
                if let PathMatch::Template(t) = &r.matcher.path {
                    out.params = t.captures(&path).unwrap_or_default();
                }
                out.action = Some(match &r.action {
                    Action::Forward(f) => ActionSummary::Forward {
                        clusters: f
                            .backends
                            .targets
                            .iter()
                            .map(|b| (b.name.to_string(), b.weight))
                            .collect(),
                        upstream_path: match &f.prefix_rewrite {
                            Some(to) => crate::http::headers::rewrite_prefix(
                                &path,
                                uri.query(),
                                &r.matcher.path,
                                r.matcher.case_sensitive,
                                to,
                            ),
                            None => uri
                                .path_and_query()
                                .map_or("/".to_owned(), |p| p.to_string()),
                        },
                        timeout_ms: f.timeout.map(|t| t.as_millis()),
                    },
                    Action::Redirect(red) => ActionSummary::Redirect {
                        status: red.status.as_u16(),
                        location: crate::http::headers::redirect_location(
                            red,
                            &scheme,
                            &host,
                            &path,
                            uri.query(),
                            &r.matcher.path,
                        ),
                    },
                    Action::Respond(resp) => ActionSummary::Respond {
                        status: resp.status.as_u16(),
                    },
                });
                break;
            }
        }
    }
    Ok(out)
}

fn reason(why: &Mismatch, path: &PathMatch, req: &RequestView<'_>) -> String {
    match why {
        Mismatch::Path => match path {
            PathMatch::Exact(p) => format!("path {:?} is not {p:?}", req.path),
            PathMatch::Prefix(p) => format!("path {:?} does not start with {p:?}", req.path),
            PathMatch::Template(t) => {
                format!("path {:?} does not fit template {:?}", req.path, t.as_str())
            }
            PathMatch::Regex(r) => {
                format!("path {:?} does not match regex {:?}", req.path, r.as_str())
            }
            PathMatch::Connect => "not a CONNECT request".to_owned(),
        },
        Mismatch::Connect => match path {
            PathMatch::Connect => "route takes only CONNECT requests".to_owned(),
            _ => "CONNECT requests match only CONNECT routes".to_owned(),
        },
        Mismatch::Header(h) if h == ":method" => format!("method {} is not allowed", req.method),
        Mismatch::Header(h) => match req.headers.get(h.as_str()) {
            Some(v) => format!(
                "header {h} value {:?} does not match",
                v.to_str().unwrap_or("<binary>")
            ),
            None => format!("header {h} condition does not hold (header absent)"),
        },
        Mismatch::Query(q) => format!("query parameter {q:?} condition does not hold"),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "listener:     {}", self.listener)?;
        writeln!(
            f,
            "host:         {}",
            if self.host.is_empty() {
                "(none)"
            } else {
                &self.host
            }
        )?;
        let Some(vh) = &self.virtual_host else {
            writeln!(f, "virtual host: none matches this host")?;
            return writeln!(f, "result:       404 no route (x-weft-error: no-route)");
        };
        writeln!(f, "virtual host: {vh}")?;
        for s in &self.skipped {
            writeln!(f, "  skipped route {:?}: {}", s.route, s.reason)?;
        }
        let Some(route) = &self.route else {
            return writeln!(
                f,
                "result:       404 no route matched (x-weft-error: no-route)"
            );
        };
        writeln!(f, "route:        {route}")?;
        if !self.params.is_empty() {
            let params: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "params:       {}", params.join(", "))?;
        }
        match &self.action {
            Some(ActionSummary::Forward {
                clusters,
                upstream_path,
                timeout_ms,
            }) => {
                let cs: Vec<String> = if clusters.len() == 1 {
                    vec![clusters[0].0.clone()]
                } else {
                    let total: u64 = clusters.iter().map(|c| u64::from(c.1)).sum();
                    clusters
                        .iter()
                        .map(|(n, w)| {
                            format!("{n} ({:.1}%)", f64::from(*w) * 100.0 / total.max(1) as f64)
                        })
                        .collect()
                };
                writeln!(f, "cluster:      {}", cs.join(", "))?;
                writeln!(f, "upstream path: {upstream_path}")?;
                if let Some(t) = timeout_ms {
                    writeln!(f, "timeout:      {t}ms")?;
                }
            }
            Some(ActionSummary::Redirect { status, location }) => {
                writeln!(f, "redirect:     {status} -> {location}")?;
            }
            Some(ActionSummary::Respond { status }) => {
                writeln!(f, "respond:      {status} (direct response)")?
            }
            None => {}
        }
        Ok(())
    }
}
