//! `weft`: the command line of the Weft data plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use weft_proxy::config::{self, Loaded, compile, friendly, locate};
use weft_proxy::proxy::{self, Proxy};
use weft_proxy::{demo, explain, reload, snapshot};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Weft: service-mesh sidecar and API gateway.
#[derive(Parser, Debug)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    /// Worker threads serving traffic.
    #[arg(long, global = true, default_value_t = 2, env = "WEFT_WORKERS")]
    workers: usize,
    /// Log filter in RUST_LOG syntax (default: RUST_LOG, else info).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// OTLP/gRPC collector for trace spans (e.g. http://127.0.0.1:4317); default:
    /// OTEL_EXPORTER_OTLP_ENDPOINT. Without either, no spans are recorded.
    #[arg(long, global = true)]
    otlp_endpoint: Option<String>,
    /// This proxy's workload name in metric labels.
    #[arg(long, global = true, env = "WEFT_WORKLOAD", default_value = "weft")]
    workload: String,
    /// This proxy's namespace in metric labels.
    #[arg(long, global = true, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a configuration file; reload it when it changes or on SIGHUP.
    Run {
        /// weft.yaml or an Envoy-format file.
        #[arg(short, long)]
        config: PathBuf,
        /// Admin address (overrides the file's; default 127.0.0.1:9901).
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Validate a configuration file: exit 0 if valid, 1 with every problem if not.
    /// Certificate files it names are loaded and checked too, as `weft run` would.
    Check {
        /// weft.yaml or an Envoy-format file.
        #[arg(short, long)]
        config: PathBuf,
        /// Check the configuration only, not the certificate files it names (e.g. in a
        /// pipeline that has no certificates).
        #[arg(long)]
        skip_files: bool,
    },
    /// Show how a request would be routed by a configuration file.
    Explain {
        /// weft.yaml or an Envoy-format file.
        #[arg(short, long)]
        config: PathBuf,
        /// Request method.
        method: String,
        /// URL, e.g. http://localhost:8080/products/42 or /products/42.
        url: String,
        /// Request header 'name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Listener to use (default: the one on the URL's port).
        #[arg(long)]
        listener: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the online-shop demo on loopback: the gateway and in-process services, each
    /// behind its own sidecar (mutual TLS, JWT, authorization; identities from a dev CA).
    Demo {
        /// Gateway port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin port.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// Base port for the services' sidecars (cart base+1.., product base+101.., user
        /// base+201..; 0: free ports). Default: the ports in deploy/examples/shop.yaml.
        #[arg(long)]
        services_base: Option<u16>,
    },
    /// A development certificate authority issuing SPIFFE workload certificates (for
    /// tests and demos; real deployments bring certificates from cert-manager, SPIRE or
    /// the control plane).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Reverse-proxy one address to upstreams with default policies, no file needed.
    Proxy {
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long)]
        listen: SocketAddr,
        /// Upstream addresses, comma-separated (host:port).
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Admin address.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Load balancing: p2c-ewma, round-robin or random.
        #[arg(long, default_value = "p2c-ewma")]
        lb: String,
        /// Upstream protocol: http1 or http2.
        #[arg(long, default_value = "http1")]
        upstream_protocol: String,
        /// Access log: stdout, stderr or a file path (JSON lines).
        #[arg(long)]
        access_log: Option<String>,
        /// Percentage of new traces sampled (spans need --otlp-endpoint or
        /// OTEL_EXPORTER_OTLP_ENDPOINT).
        #[arg(long)]
        trace_sample_percent: Option<f64>,
        /// Run without retries, outlier detection and circuit-breaker limits (the
        /// defaults have them; this exists to measure what they cost).
        #[arg(long)]
        no_resilience: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a CA for a trust domain: writes ca.pem and ca-key.pem into --out.
    Init {
        /// Trust domain, e.g. example.org.
        #[arg(long)]
        trust_domain: String,
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a workload certificate: writes cert.pem, key.pem and ca.pem into --out.
    Issue {
        /// Directory of the CA (from `weft ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// SPIFFE id, e.g. spiffe://example.org/ns/shop/sa/cart.
        #[arg(long)]
        id: String,
        /// Lifetime, e.g. 24h.
        #[arg(long, default_value = "24h")]
        ttl: humantime::Duration,
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

fn ca_cmd(command: CaCommand) -> anyhow::Result<ExitCode> {
    match command {
        CaCommand::Init { trust_domain, out } => {
            let td: weft_mtls::TrustDomain = trust_domain.parse()?;
            weft_mtls::init_dir(&td, &out)?;
            println!(
                "CA for trust domain {td} written to {} (ca.pem, ca-key.pem)",
                out.display()
            );
        }
        CaCommand::Issue { ca, id, ttl, out } => {
            let id: weft_mtls::SpiffeId = id.parse()?;
            weft_mtls::issue_dir(&ca, &id, ttl.into(), &out)?;
            println!(
                "certificate for {id} (valid {ttl}) written to {} (cert.pem, key.pem, ca.pem)",
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => weft_telemetry::logging::LogFormat::Text,
        LogFormat::Json => weft_telemetry::logging::LogFormat::Json,
    };
    if let Err(e) = weft_telemetry::logging::init(cli.log_level.as_deref(), format) {
        eprintln!("weft: {e}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let telemetry = weft_proxy::observe::TelemetryOptions {
        otlp_endpoint: cli.otlp_endpoint.clone(),
        workload: Some(cli.workload.clone()),
        namespace: Some(cli.namespace.clone()),
    };
    match cli.command {
        Command::Check { config, skip_files } => Ok(check(&config, skip_files)),
        Command::Ca { command } => ca_cmd(command),
        Command::Explain {
            config,
            method,
            url,
            headers,
            listener,
            json,
        } => explain_cmd(&config, &method, &url, &headers, listener, json),
        Command::Run { config, admin } => runtime(cli.workers)?.block_on(async move {
            let loaded = config::load_file(&config)?;
            let proxy = Proxy::start(
                loaded,
                proxy::Options {
                    admin,
                    no_admin: false,
                    telemetry,
                },
            )
            .await?;
            announce(&proxy);
            let _watch = reload::spawn(proxy.clone(), config.clone());
            wait_for_shutdown(proxy).await
        }),
        Command::Demo {
            port,
            admin_port,
            services_base,
        } => runtime(cli.workers)?.block_on(async move {
            let opts = demo::Options {
                port,
                admin_port,
                services_base,
                telemetry,
            };
            let d = demo::start(opts).await?;
            print_demo(&d);
            let code = wait_for_shutdown(d.proxy.clone()).await;
            d.stop().await;
            code
        }),
        Command::Proxy {
            listen,
            to,
            admin,
            lb,
            upstream_protocol,
            access_log,
            trace_sample_percent,
            no_resilience,
        } => runtime(cli.workers)?.block_on(async move {
            let loaded = reverse_proxy_config(
                listen,
                &to,
                &lb,
                &upstream_protocol,
                access_log,
                trace_sample_percent,
                no_resilience,
            )?;
            let proxy = Proxy::start(
                loaded,
                proxy::Options {
                    admin,
                    no_admin: false,
                    telemetry,
                },
            )
            .await?;
            announce(&proxy);
            wait_for_shutdown(proxy).await
        }),
    }
}

/// At most this many ready sockets are taken from the kernel before the tasks they woke
/// run (tokio's default is 1,024). A single-threaded proxy that reads 64 requests at once
/// and only then lets the HTTP/2 connection they share write them holds the next hop idle
/// for the whole batch; in small batches the hops overlap. Measured on the sidecar pair
/// (64 HTTP/1.1 connections into A, HTTP/2 over mutual TLS to B): 8 did 1.0-1.3x the
/// req/s of 1,024 and left less of the machine idle; the single-proxy rows did not move.
/// The multi-threaded runtime keeps tokio's default: there the woken task runs next
/// (its LIFO slot), and 8 cost ~5 % with two workers.
const IO_EVENTS_PER_TICK: usize = 8;

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker runs everything on the main thread: no work stealing, no cross-thread
    // wakeups. More workers share the load through tokio's multi-threaded scheduler.
    let mut builder = if workers <= 1 {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.max_io_events_per_tick(IO_EVENTS_PER_TICK);
        b
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers).thread_name("weft-worker");
        b
    };
    builder.enable_all().build().context("starting the runtime")
}

fn check(path: &std::path::Path, skip_files: bool) -> ExitCode {
    match config::load_file(path) {
        Ok(loaded) => {
            let s = &loaded.snapshot;
            let problems = if skip_files {
                Vec::new()
            } else {
                weft_proxy::tls::check_files(s)
            };
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("{}: {p}", path.display());
                }
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} listener{}, {} route{}, {} cluster{})",
                path.display(),
                s.listeners.len(),
                plural(s.listeners.len()),
                s.route_count,
                plural(s.route_count),
                s.clusters.len(),
                plural(s.clusters.len()),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn explain_cmd(
    path: &std::path::Path,
    method: &str,
    url: &str,
    headers: &[String],
    listener: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = config::load_file(path)?;
    let method = http::Method::from_bytes(method.as_bytes()).context("invalid method")?;
    let headers = headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("header {h:?}: use 'name: value'"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let q = explain::Query {
        method,
        url: url.to_owned(),
        headers,
        listener,
    };
    let e = explain::explain(&loaded.snapshot, &q)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The configuration behind `weft proxy`: one listener, every path to one cluster.
fn reverse_proxy_config(
    listen: SocketAddr,
    to: &[String],
    lb: &str,
    protocol: &str,
    access_log: Option<String>,
    trace_sample_percent: Option<f64>,
    no_resilience: bool,
) -> anyhow::Result<Loaded> {
    let off = |b: bool| no_resilience.then_some(friendly::Toggle::<friendly::Retries>::Switch(b));
    let unlimited = no_resilience.then_some(friendly::Limits {
        max_connections: Some(u32::MAX),
        max_pending: Some(u32::MAX),
        max_requests: Some(u32::MAX),
        max_retries: Some(u32::MAX),
        retry_budget: None,
    });
    let file = friendly::File {
        admin: None,
        tracing: trace_sample_percent.map(|p| friendly::Tracing {
            sample_percent: Some(p),
        }),
        listeners: vec![friendly::Listener {
            name: "proxy".to_owned(),
            address: listen.to_string(),
            protocol: friendly::Protocol::Http,
            routes: vec![friendly::Route {
                name: Some("all".to_owned()),
                matches: friendly::Match::default(),
                to: Some(friendly::Backends::One("upstream".to_owned())),
                redirect: None,
                respond: None,
                rewrite: None,
                timeout: None,
                request_headers: None,
                response_headers: None,
                retries: off(false),
                ..Default::default()
            }],
            virtual_hosts: Vec::new(),
            to: None,
            access_log: access_log.map(|path| friendly::AccessLog {
                path,
                format: friendly::LogFormat::Json,
                only_errors: false,
            }),
            ..Default::default()
        }],
        identity: None,
        clusters: [(
            "upstream".to_owned(),
            friendly::Cluster {
                endpoints: to
                    .iter()
                    .map(|t| friendly::EndpointSpec::Address(t.trim().to_owned()))
                    .collect(),
                lb: Some(lb.to_owned()),
                protocol: Some(protocol.to_owned()),
                outlier_detection: no_resilience.then_some(friendly::Toggle::Switch(false)),
                limits: unlimited,
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
    };
    let (resources, admin) = compile::compile(&file).map_err(|p| config::ConfigError::Invalid {
        origin: "command line".to_owned(),
        problems: locate::locate_all("", p),
    })?;
    let snapshot =
        snapshot::translate(&resources).map_err(|problems| config::ConfigError::Invalid {
            origin: "command line".to_owned(),
            problems,
        })?;
    Ok(Loaded {
        resources,
        snapshot,
        admin,
    })
}

fn announce(proxy: &Proxy) {
    let mut addrs: Vec<_> = proxy.listener_addrs().into_iter().collect();
    addrs.sort();
    for (name, addr) in addrs {
        eprintln!("weft: listener {name} on {addr}");
    }
    if let Some(a) = proxy.admin_addr() {
        eprintln!("weft: admin on http://{a}/ (/metrics, /config_dump, /explain, /ready)");
    }
}

fn print_demo(d: &demo::Demo) {
    let g = d.gateway;
    let admin = d
        .proxy
        .admin_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let certs = d.certs.display();
    let auth = format!("-H \"authorization: Bearer {}\"", d.token);
    println!("Weft demo: the online shop, each service behind its own sidecar");
    println!("  gateway   http://{g}   (deploy/examples/shop.yaml, embedded)");
    println!(
        "  admin     http://{admin}/   (/metrics, /stats, /clusters, /config_dump, /explain, /ready)"
    );
    println!("  sidecars  (deploy/examples/sidecar.yaml, embedded) mTLS inbound -> service");
    for r in &d.services {
        println!(
            "    {:<10} {} -> {}   as {}",
            r.name, r.sidecar, r.app, r.id
        );
    }
    println!(
        "  certs     {certs}   (dev CA for {}, valid {}h; deleted on exit)",
        demo::TRUST_DOMAIN,
        demo::LIFETIME.as_secs() / 3600
    );
    println!();
    println!("Security:");
    println!("  /products/* are open; /cart/* and /users/* need a JWT (401 without one).");
    println!(
        "  Demo token: ES256, iss {}, aud {}, sub {}, valid {}h:",
        d.issuer,
        d.audience,
        demo::TOKEN_SUBJECT,
        demo::LIFETIME.as_secs() / 3600
    );
    println!("    {}", d.token);
    println!(
        "  The gateway calls the services over mutual TLS as {}.",
        demo::GATEWAY_ID
    );
    println!("  Each sidecar lets only that identity in (authz rule gateway-only): any other");
    println!("  identity gets 403, a caller without a certificate no connection.");
    println!();
    println!("Try:");
    println!("  curl {g}/products/42");
    println!("  curl -i {g}/users/7   # 401: no token");
    println!("  curl {auth} {g}/users/7");
    println!("  curl {auth} -X POST {g}/cart/addItem -d '{{\"productId\":\"42\",\"qty\":1}}'");
    println!("  curl -s http://{admin}/metrics | grep 'weft_tls_handshakes_total.*outcome=\"ok\"'");
    if let Some(cart) = d.services.first() {
        println!(
            "  curl -sk --cert {certs}/product/cert.pem --key {certs}/product/key.pem https://{}/cart/items   # 403: not the gateway",
            cart.sidecar
        );
    }
    println!("  curl 'http://{admin}/explain?method=GET&url=/products/42'");
    println!();
    println!("Access log: one JSON line per request below, from the gateway (listener shop) and");
    println!(
        "from the sidecar that took it (listener cart-1-inbound, ...: peer_identity, authz_rule)."
    );
    if d.proxy.telemetry().tracer.is_some() {
        println!("Traces: exported to the OTLP collector (OTEL_EXPORTER_OTLP_ENDPOINT).");
    } else {
        println!("Traces: set OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4317 to export spans.");
    }
    println!("Ctrl-C stops it.");
}

async fn wait_for_shutdown(proxy: Proxy) -> anyhow::Result<ExitCode> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("weft: shutting down, draining connections");
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
