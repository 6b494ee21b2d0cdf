//! Configuration updates while traffic flows: good updates take effect without one failed
//! request (by file watch and by an explicit reload), a listener added by a reload
//! accepts, and a bad update is rejected whole while the old configuration keeps serving.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use weft_tests::{Client, TestProxy, Upstream, eventually, upstream, within};

use crate::LIMIT;

/// One version of the configuration under test.
#[derive(Clone, Copy)]
struct Variant {
    /// The cluster `/svc` goes to.
    active: &'static str,
    /// Adds the route `/added` (a direct response).
    added: bool,
    /// Adds the listener `extra` (everything to green).
    extra: bool,
    /// Changes cluster `blue` in place: round robin over both upstreams.
    mixed: bool,
}

const BLUE: Variant = Variant {
    active: "blue",
    added: false,
    extra: false,
    mixed: false,
};

const GREEN: Variant = Variant {
    active: "green",
    ..BLUE
};

fn config(blue: &Upstream, green: &Upstream, v: Variant) -> String {
    let mut yaml = format!(
        r#"
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: svc
        match: {{ prefix: /svc }}
        to: {}
"#,
        v.active
    );
    if v.added {
        yaml.push_str(
            r#"      - name: added
        match: { path: /added }
        respond: { status: 200, body: "added" }
"#,
        );
    }
    if v.extra {
        yaml.push_str(
            r#"  - name: extra
    address: 127.0.0.1:0
    routes:
      - match: { prefix: / }
        to: green
"#,
        );
    }
    let blue_cluster = if v.mixed {
        format!(
            "{{ lb: round-robin, endpoints: [{}, {}] }}",
            blue.addr(),
            green.addr()
        )
    } else {
        format!("{{ endpoints: [{}] }}", blue.addr())
    };
    yaml.push_str(&format!(
        r#"clusters:
  blue: {blue_cluster}
  green: {{ endpoints: [{}] }}
"#,
        green.addr()
    ));
    yaml
}

/// Keep-alive clients looping on one URL until stopped (or a request cap), counting
/// answers by upstream and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: JoinSet<()>,
}

/// Per-client cap, so the loop is bounded whatever happens to `stop`.
const MAX_PER_CLIENT: usize = 20_000;

impl Load {
    /// Starts one looping task per client against `base` (`http://ADDR`), on paths
    /// `/svc/<client>/<n>`.
    fn start(base: String, clients: Vec<Client>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for (c, client) in clients.into_iter().enumerate() {
            let (base, stop, done) = (base.clone(), stop.clone(), done.clone());
            let (seen, failures) = (seen.clone(), failures.clone());
            tasks.spawn(async move {
                for n in 0..MAX_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A path of its own per request: each answer must be to its request.
                    let path = format!("{base_path}/{c}/{n}", base_path = "/svc");
                    let v = client.version();
                    let outcome = match client.get(&format!("{base}{path}")).await {
                        Ok(r) if r.code() == 200 && r.seen_path() == Some(path.as_str()) => {
                            Ok(r.upstream().unwrap_or("?").to_owned())
                        }
                        Ok(r) => Err(format!(
                            "{v:?} {path}: {} (answer to {:?}) {}",
                            r.code(),
                            r.seen_path(),
                            r.text()
                        )),
                        Err(e) => Err(format!("{v:?} {path}: {e:#}")),
                    };
                    match outcome {
                        Ok(name) => *seen.lock().expect("lock").entry(name).or_default() += 1,
                        Err(e) => failures.lock().expect("lock").push(e),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    // Continuous, but leaves the two cores some room for the reloads.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
        Load {
            stop,
            done,
            seen,
            failures,
            tasks,
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    fn seen(&self, name: &str) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `n` more requests have completed.
    async fn advance(&self, n: usize) -> anyhow::Result<()> {
        let target = self.done() + n;
        eventually(LIMIT, "load makes progress", async || self.done() >= target).await
    }

    async fn finish(mut self) -> (usize, HashMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let seen = self.seen.lock().expect("lock").clone();
        let failures = self.failures.lock().expect("lock").clone();
        (self.done(), seen, failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_fails_no_request() -> anyhow::Result<()> {
    let blue = upstream::http1("blue").await?;
    let green = upstream::http1("green").await?;
    let mut proxy = TestProxy::start(&config(&blue, &green, BLUE)).await?;
    proxy.watch().await;
    let edge = proxy.addr("edge");
    within(Duration::from_secs(60), "reloads under load", async {
        let clients = vec![
            Client::http1(),
            Client::http1(),
            Client::http2(),
            Client::http2(),
        ];
        let load = Load::start(format!("http://{edge}"), clients);
        load.advance(50).await?;
        assert!(load.seen("blue") > 0);

        // 1. Switch to green through the file watcher.
        proxy.rewrite_config(&config(&blue, &green, GREEN))?;
        let green_before = load.seen("green");
        eventually(LIMIT, "the watcher switches /svc to green", async || {
            load.seen("green") > green_before + 20
        })
        .await?;

        // 2. Add a route with an explicit reload.
        proxy.rewrite_config(&config(
            &blue,
            &green,
            Variant {
                added: true,
                ..GREEN
            },
        ))?;
        proxy.reload().await?;
        let reply = Client::http1().get(&proxy.url("edge", "/added")).await?;
        assert_eq!((reply.code(), reply.text().as_str()), (200, "added"));
        load.advance(50).await?;

        // 3. Back to blue and a new listener, through the watcher.
        proxy.rewrite_config(&config(
            &blue,
            &green,
            Variant {
                added: true,
                extra: true,
                ..BLUE
            },
        ))?;
        eventually(LIMIT, "the watcher adds listener extra", async || {
            proxy.proxy().listener_addr("extra").is_some()
        })
        .await?;
        let reply = Client::http1().get(&proxy.url("extra", "/any")).await?;
        assert_eq!(reply.code(), 200, "the new listener accepts");
        assert_eq!(reply.upstream(), Some("green"));
        let blue_before = load.seen("blue");
        eventually(
            LIMIT,
            "the watcher switches /svc back to blue",
            async || load.seen("blue") > blue_before + 20,
        )
        .await?;

        // 4. More explicit reloads while traffic flows: the route flips, listener
        // `extra` comes and goes, and cluster `blue` itself changes (a second endpoint
        // and another balancer) and changes back.
        let steps = [
            Variant {
                added: true,
                extra: true,
                ..GREEN
            },
            Variant {
                added: true,
                mixed: true,
                ..BLUE
            },
            Variant {
                added: true,
                extra: true,
                mixed: true,
                ..GREEN
            },
            Variant {
                added: true,
                mixed: true,
                ..BLUE
            },
            Variant {
                added: true,
                ..BLUE
            },
        ];
        for step in steps {
            proxy.rewrite_config(&config(&blue, &green, step))?;
            proxy.reload().await?;
            load.advance(20).await?;
        }

        let (total, seen, failures) = load.finish().await;
        assert!(
            failures.is_empty(),
            "{} of {total} requests failed across reloads; first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(total >= 200, "only {total} requests ran");
        assert!(seen.get("green").copied().unwrap_or(0) > 0, "{seen:?}");
        // The last configuration (blue) is the one in effect.
        let reply = Client::http2().get(&proxy.url("edge", "/svc")).await?;
        assert_eq!(reply.upstream(), Some("blue"));
        assert!(proxy.version() >= 7, "version {}", proxy.version());
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_update_is_rejected_and_the_old_configuration_keeps_serving() -> anyhow::Result<()> {
    let blue = upstream::http1("blue").await?;
    let green = upstream::http1("green").await?;
    let good = config(&blue, &green, BLUE);
    let mut proxy = TestProxy::start(&good).await?;
    let rejections = async |proxy: &TestProxy| -> anyhow::Result<f64> {
        Ok(proxy
            .metrics()
            .await?
            .sum("weft_config_rejections_total", &[]))
    };
    within(LIMIT, "bad updates", async {
        let client = Client::http1();
        let svc = proxy.url("edge", "/svc");
        assert_eq!(client.get(&svc).await?.upstream(), Some("blue"));
        assert_eq!(rejections(&proxy).await?, 0.0);
        assert!(proxy.proxy().last_rejection().is_none());

        // An unknown cluster.
        proxy.rewrite_config(&good.replace("to: blue", "to: purple"))?;
        assert!(
            proxy.reload().await.is_err(),
            "an unknown cluster is accepted"
        );
        let why = proxy.proxy().last_rejection().expect("a rejection reason");
        assert!(
            why.contains("purple"),
            "the reason names the cluster: {why}"
        );
        assert_eq!(rejections(&proxy).await?, 1.0);
        assert_eq!(proxy.version(), 1);
        assert_eq!(client.get(&svc).await?.upstream(), Some("blue"));

        // Valid as text, but its access-log file cannot be opened: rejected when the
        // run-time parts are built, naming the listener and the path.
        let missing = proxy.dir().join("no-such-dir").join("edge.log");
        proxy.rewrite_config(&good.replacen(
            "    address: 127.0.0.1:0\n",
            &format!(
                "    address: 127.0.0.1:0\n    access_log: {{ path: \"{}\" }}\n",
                missing.display()
            ),
            1,
        ))?;
        assert!(
            proxy.reload().await.is_err(),
            "an access log that cannot be opened is accepted"
        );
        let why = proxy.proxy().last_rejection().expect("a rejection reason");
        assert!(
            why.contains("\"edge\"") && why.contains("no-such-dir"),
            "the reason names the listener and the path: {why}"
        );
        assert_eq!(rejections(&proxy).await?, 2.0);
        assert_eq!(proxy.version(), 1);
        assert_eq!(client.get(&svc).await?.upstream(), Some("blue"));

        // A YAML syntax error.
        proxy.rewrite_config("listeners:\n  - name: edge\n    address: [127.0.0.1:0\n")?;
        assert!(proxy.reload().await.is_err(), "broken YAML is accepted");
        let why2 = proxy.proxy().last_rejection().expect("a rejection reason");
        assert_ne!(why, why2, "the reason is the new problem");
        assert!(
            why2.contains("weft.yaml"),
            "the reason names the file: {why2}"
        );
        assert_eq!(rejections(&proxy).await?, 3.0);
        assert_eq!(client.get(&svc).await?.upstream(), Some("blue"));
        let reply = Client::http2().get(&svc).await?;
        assert_eq!(reply.upstream(), Some("blue"));

        // A misspelled field, noticed by the watcher.
        proxy.watch().await;
        proxy.rewrite_config(&good.replace("address:", "adress:"))?;
        eventually(LIMIT, "the watcher rejects the file", async || {
            rejections(&proxy).await.unwrap_or(0.0) >= 4.0
        })
        .await?;
        let why3 = proxy.proxy().last_rejection().expect("a rejection reason");
        assert!(
            why3.contains("adress"),
            "the reason names the field: {why3}"
        );
        assert_eq!(client.get(&svc).await?.upstream(), Some("blue"));

        // A good file again: applied, and the rejection is cleared.
        proxy.rewrite_config(&config(&blue, &green, GREEN))?;
        eventually(
            LIMIT,
            "the watcher applies the fixed file",
            async || matches!(client.get(&svc).await, Ok(r) if r.upstream() == Some("green")),
        )
        .await?;
        assert!(proxy.proxy().last_rejection().is_none());
        let m = proxy.metrics().await?;
        assert_eq!(m.sum("weft_config_rejections_total", &[]), 4.0);
        assert_eq!(m.sum("weft_config_updates_total", &[]), 2.0);
        anyhow::Ok(())
    })
    .await?
}

/// A listener renamed (and turned into another kind) on the address it already listens
/// on takes the running socket over: the kernel would refuse a second bind, and the
/// update must not be rejected for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_listener_on_the_same_address_takes_the_socket_over() -> anyhow::Result<()> {
    let blue = upstream::http1("blue").await?;
    // A fixed port, so that both versions name the same address.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let http = |name: &str| {
        format!(
            r#"
listeners:
  - name: {name}
    address: 127.0.0.1:{port}
    routes: [ {{ match: {{ prefix: / }}, to: blue }} ]
clusters:
  blue: {{ endpoints: [{}] }}
"#,
            blue.addr()
        )
    };
    let proxy = TestProxy::start(&http("edge")).await?;
    within(LIMIT, "rename on the same address", async {
        let url = format!("http://127.0.0.1:{port}/x");
        let client = Client::http1();
        assert_eq!(client.get(&url).await?.code(), 200);
        proxy.rewrite_config(&http("edge-renamed"))?;
        proxy.reload().await?;
        assert_eq!(proxy.addr("edge-renamed").port(), port);
        assert_eq!(Client::http1().get(&url).await?.code(), 200);
        // And to a TCP listener on the same address: bytes now pass through unparsed.
        let echo = upstream::tcp_echo().await?;
        proxy.rewrite_config(&format!(
            r#"
listeners:
  - name: raw
    address: 127.0.0.1:{port}
    protocol: tcp
    to: echo
clusters:
  echo: {{ endpoints: [{}] }}
"#,
            echo.addr()
        ))?;
        proxy.reload().await?;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"not http\n").await?;
        let mut got = [0u8; 9];
        s.read_exact(&mut got).await?;
        assert_eq!(&got, b"not http\n");
        anyhow::Ok(())
    })
    .await?
}
