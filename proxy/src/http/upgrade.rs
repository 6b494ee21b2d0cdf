//! Tunnels: WebSocket (and other HTTP/1.1 `Upgrade`s) and terminated `CONNECT`.
//!
//! For an upgrade, the request goes to the upstream like any other; when the upstream
//! answers `101 Switching Protocols`, both connections are taken over from hyper and
//! spliced byte for byte. For `CONNECT` (HTTP/1.1 or HTTP/2), the proxy itself connects
//! to an endpoint of the route's cluster and answers `200` only once that worked.

use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::Body;
use super::error::ProxyError;
use crate::drain::Watch;
use crate::snapshot::route::Forward;
use crate::upstream::Cluster;

/// Splices two upgraded connections until either side closes, or the listener's drain
/// times out.
pub async fn splice(down: OnUpgrade, up: OnUpgrade, mut drain: Watch) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut down, &mut up) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        _ = drain.deadline() => tracing::debug!("upgraded connection closed at the end of the drain"),
    }
}

/// Terminates a `CONNECT`: dials an endpoint of `cluster`, then answers 200 and splices
/// the client's tunnel to it.
pub async fn connect(
    cluster: &Cluster,
    f: &Forward,
    mut req: Request<Body>,
    mut drain: Watch,
) -> Result<Response<Body>, ProxyError> {
    if !f.connect_terminate {
        return Err(ProxyError::UpgradeRejected("CONNECT".to_owned()));
    }
    let endpoint = cluster
        .pick(None, &[])
        .ok_or(ProxyError::NoHealthyUpstream)?;
    let timeout = cluster.config.connect_timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ProxyError::ConnectFailure(e.into())),
        Err(_) => {
            return Err(ProxyError::ConnectFailure(
                format!("connect timed out after {timeout:?}").into(),
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let down = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut upstream = stream;
        match down.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "CONNECT tunnel ended with an error");
                        }
                    }
                    _ = drain.deadline() => tracing::debug!("CONNECT tunnel closed at the end of the drain"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade did not complete"),
        }
    });
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}
