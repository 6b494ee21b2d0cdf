//! Active health checking (Envoy's HTTP health checker): a task per cluster asks every
//! endpoint `GET {path}` each `interval` and marks it unhealthy after
//! `unhealthy_threshold` failed checks in a row, healthy again after `healthy_threshold`
//! passed ones. `pick` leaves unhealthy endpoints out (unless too few are left: panic
//! mode, see [`super::outlier::eligibility`]).
//!
//! Each check is one request on a fresh TCP connection, closed afterwards, so a check
//! says whether the endpoint accepts new connections, which is what a restarting or
//! overloaded server stops doing first. Checks speak HTTP/1.1 even to HTTP/2 clusters:
//! that is Envoy's default (`codec_client_type: HTTP1`), and health endpoints of gRPC
//! servers behind an HTTP/2-only port are out of reach until gRPC health checking comes.
//!
//! The state machine ([`next`]) is a pure function; the state itself lives in the
//! endpoint's [`super::outlier::EndpointHealth`], so it survives reloads that keep the
//! endpoint.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Cluster;
use crate::snapshot::policy::HealthCheck;

/// The `user-agent` of health-check requests, so upstream logs can tell them apart.
pub const USER_AGENT: &str = "weft-health-check";

/// Longest random delay before a cluster's first round of checks.
const MAX_FIRST_JITTER: Duration = Duration::from_secs(1);

/// Where an endpoint stands with its health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckState {
    /// Healthy as far as the checks go.
    pub healthy: bool,
    /// Results in a row that disagree with `healthy`.
    pub streak: u32,
    /// Whether any check has finished.
    pub checked: bool,
}

impl Default for CheckState {
    /// Healthy and unchecked: a new endpoint takes traffic at once (a deliberate
    /// difference from Envoy, which waits for a first passed check; here a new or
    /// re-resolved endpoint would otherwise sit idle for up to an interval).
    fn default() -> Self {
        Self {
            healthy: true,
            streak: 0,
            checked: false,
        }
    }
}

/// The state after one check: `unhealthy_threshold` failures in a row turn a healthy
/// endpoint unhealthy, `healthy_threshold` passes in a row turn it back; a result that
/// agrees with the state clears the streak. A threshold of 0 counts as 1.
pub fn next(
    state: CheckState,
    passed: bool,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
) -> CheckState {
    if passed == state.healthy {
        return CheckState {
            healthy: state.healthy,
            streak: 0,
            checked: true,
        };
    }
    let streak = state.streak.saturating_add(1);
    let needed = if state.healthy {
        unhealthy_threshold
    } else {
        healthy_threshold
    };
    if streak >= needed.max(1) {
        CheckState {
            healthy: passed,
            streak: 0,
            checked: true,
        }
    } else {
        CheckState {
            healthy: state.healthy,
            streak,
            checked: true,
        }
    }
}

/// Whether `status` passes: in one of the half-open `expected` ranges, or 2xx when
/// none is given.
pub fn passes(status: u16, expected: &[(u16, u16)]) -> bool {
    if expected.is_empty() {
        return (200..300).contains(&status);
    }
    expected.iter().any(|(lo, hi)| (*lo..*hi).contains(&status))
}

/// Why a check got no status.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the check's timeout.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The configured path or host does not make a request.
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// Checks the endpoints of `cluster` every `check.interval` until the cluster is
/// dropped (which also aborts this task). `host` is the `Host` header to send.
pub(super) async fn run(cluster: Weak<Cluster>, check: HealthCheck, host: String) {
    // Spread the first round so that clusters (and proxies started together) do not
    // check their endpoints in lockstep.
    let jitter = (check.interval / 10).min(MAX_FIRST_JITTER);
    let jitter = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    tokio::time::sleep(Duration::from_nanos(fastrand::u64(0..=jitter))).await;
    loop {
        // The cluster is not held across the checks: dropping it must stop this task.
        let Some(set) = cluster.upgrade().map(|c| c.endpoints()) else {
            return;
        };
        let results = futures_util::future::join_all(
            set.endpoints
                .iter()
                .map(|(e, _)| probe(e.addr, &host, &check.path, check.timeout)),
        )
        .await;
        let Some(c) = cluster.upgrade() else { return };
        for ((endpoint, _), result) in set.endpoints.iter().zip(results) {
            let passed = match result {
                Ok(status) => passes(status, &check.expected_statuses),
                Err(e) => {
                    tracing::debug!(cluster = %c.config.name, endpoint = %endpoint.addr, error = %e, "health check failed");
                    false
                }
            };
            c.record_check(endpoint, passed);
        }
        drop(c);
        tokio::time::sleep(check.interval).await;
    }
}

/// One check: `GET path` with `Host: host` on a new connection to `addr`; the status.
pub async fn probe(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<u16, ProbeError> {
    tokio::time::timeout(timeout, exchange(addr, host, path))
        .await
        .map_err(|_| ProbeError::Timeout)?
}

async fn exchange(addr: SocketAddr, host: &str, path: &str) -> Result<u16, ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    let req = Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let send = sender.send_request(req);
    let mut send = std::pin::pin!(send);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        resp = &mut send => return Ok(resp?.status().as_u16()),
        done = &mut conn => done?,
    }
    // The connection finished within the same poll that delivered the response (a
    // short answer with `Connection: close`): the response is waiting in the channel.
    Ok(send.await?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::{Arc, Mutex};

    use http::Response;
    use hyper::service::service_fn;
    use weft_telemetry::Registry;

    use super::*;
    use crate::snapshot::policy::Limits;
    use crate::snapshot::{self, Discovery, EndpointSpec, LbPolicy, UpstreamProtocol};
    use crate::upstream::outlier::ActiveHealth;

    #[test]
    fn thresholds_table() {
        let s = |healthy, streak| CheckState {
            healthy,
            streak,
            checked: true,
        };
        // (state, passed, unhealthy_threshold, healthy_threshold, expected)
        let cases = [
            (CheckState::default(), true, 3, 2, s(true, 0)),
            (CheckState::default(), false, 3, 2, s(true, 1)),
            (s(true, 1), false, 3, 2, s(true, 2)),
            (s(true, 2), false, 3, 2, s(false, 0)),
            (s(true, 2), true, 3, 2, s(true, 0)),
            (s(false, 0), false, 3, 2, s(false, 0)),
            (s(false, 0), true, 3, 2, s(false, 1)),
            (s(false, 1), false, 3, 2, s(false, 0)),
            (s(false, 1), true, 3, 2, s(true, 0)),
            // A threshold of 0 or 1 flips at once.
            (s(true, 0), false, 0, 2, s(false, 0)),
            (s(false, 0), true, 3, 1, s(true, 0)),
        ];
        for (i, (state, passed, unhealthy, healthy, want)) in cases.into_iter().enumerate() {
            assert_eq!(next(state, passed, unhealthy, healthy), want, "case {i}");
        }
    }

    #[test]
    fn expected_statuses_table() {
        type Ranges = &'static [(u16, u16)];
        // (status, expected ranges, passes)
        let cases: &[(u16, Ranges, bool)] = &[
            (200, &[], true),
            (299, &[], true),
            (300, &[], false),
            (503, &[], false),
            (204, &[(200, 201)], false),
            (200, &[(200, 201)], true),
            (404, &[(200, 300), (404, 405)], true),
        ];
        for (status, expected, want) in cases {
            assert_eq!(passes(*status, expected), *want, "{status} in {expected:?}");
        }
    }

    /// An upstream whose status can be changed, recording the `Host` and `user-agent`
    /// of what it was asked.
    async fn flippable() -> (
        SocketAddr,
        Arc<AtomicU16>,
        Arc<Mutex<Vec<(String, String)>>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, sn) = (status.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (st, sn) = (st.clone(), sn.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let get = |h| {
                            req.headers()
                                .get(h)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        sn.lock()
                            .unwrap()
                            .push((get(header::HOST), get(header::USER_AGENT)));
                        let mut resp = Response::new(Empty::<Bytes>::new());
                        *resp.status_mut() =
                            http::StatusCode::from_u16(st.load(Ordering::Relaxed)).unwrap();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, status, seen)
    }

    fn config(addr: SocketAddr) -> snapshot::Cluster {
        let ip: IpAddr = addr.ip();
        snapshot::Cluster {
            name: Arc::from("c"),
            discovery: Discovery::Static,
            endpoints: vec![EndpointSpec {
                host: ip.to_string(),
                port: addr.port(),
                weight: 1,
            }],
            lb: LbPolicy::RoundRobin,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            dns_refresh: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            limits: Limits::default(),
            outlier: None,
            health_check: Some(HealthCheck {
                path: "/healthz".to_owned(),
                host: String::new(),
                interval: Duration::from_millis(20),
                timeout: Duration::from_secs(1),
                unhealthy_threshold: 2,
                healthy_threshold: 2,
                expected_statuses: vec![(200, 300)],
            }),
            panic_threshold: 50,
            tls: None,
        }
    }

    /// Waits (boundedly) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "gave up waiting for: {what}");
    }

    #[tokio::test]
    async fn checker_follows_an_upstream_that_fails_and_recovers() {
        let (addr, status, seen) = flippable().await;
        let registry = Registry::new();
        let cluster = Cluster::build(&config(addr), None, &registry).await;
        let endpoint = cluster.endpoints().endpoints[0].0.clone();
        let view = {
            let (c, e) = (cluster.clone(), endpoint.clone());
            move || c.health_view(&e, tokio::time::Instant::now()).active
        };

        until("a first passed check", || view() == ActiveHealth::Healthy).await;
        status.store(500, Ordering::Relaxed);
        until("marked unhealthy", || view() == ActiveHealth::Unhealthy).await;
        assert!(!endpoint.health.active_healthy());
        // The only endpoint is unhealthy: panic mode still sends to it.
        assert_eq!(cluster.pick(None, &[]).unwrap().addr, addr);
        let text = registry.render();
        assert!(
            text.contains(r#"weft_endpoints_unhealthy{cluster="c"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_health_checks_total{cluster="c",result="failure"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_lb_panic_total{cluster="c"} 1"#),
            "{text}"
        );

        status.store(200, Ordering::Relaxed);
        until("healthy again", || view() == ActiveHealth::Healthy).await;
        assert!(
            registry
                .render()
                .contains(r#"weft_endpoints_unhealthy{cluster="c"} 0"#)
        );
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        for (host, agent) in seen {
            assert_eq!((host.as_str(), agent.as_str()), ("c", USER_AGENT));
        }

        // The checker does not keep its cluster alive (dropping it aborts the task).
        let weak = Arc::downgrade(&cluster);
        drop(view);
        drop(cluster);
        assert!(weak.upgrade().is_none());
    }
}
