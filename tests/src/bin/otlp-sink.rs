//! `otlp-sink ADDR`: an OTLP/gRPC trace collector that counts spans and keeps nothing,
//! for the perf harness (`tests/perf/run.sh`), where the proxy under test exports real
//! spans to a real collector without the collector's memory growing with the run.
//! Prints the number of spans received when it gets SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_owned())
        .parse()?;
    let spans = Arc::new(AtomicU64::new(0));
    let service = TraceServiceServer::new(Sink {
        spans: spans.clone(),
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::select! {
        r = tonic::transport::Server::builder().serve_with_incoming(service, incoming) => r?,
        () = stop => {}
    }
    println!(
        "otlp-sink: {} spans received",
        spans.load(Ordering::Relaxed)
    );
    Ok(())
}
