//! [`TestProxy`]: the real proxy, started in-process from YAML text.
//!
//! The YAML (with the test's upstream addresses formatted in, listeners on
//! `127.0.0.1:0`) is written to a file in a fresh temporary directory, loaded with
//! `weft_proxy::config::load_file` and served by `weft_proxy::proxy::Proxy::start` with
//! the admin server on `127.0.0.1:0`. Reload tests rewrite that file
//! ([`TestProxy::rewrite_config`], atomically by rename) and either call
//! [`TestProxy::reload`] or let the file watcher ([`TestProxy::watch`]) notice.
//! [`TestProxy::metrics`] scrapes `/metrics` over HTTP and parses it with
//! `prometheus-parse`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use prometheus_parse::{Sample, Scrape, Value};
use tokio::task::JoinHandle;
use weft_proxy::proxy::{Options, Proxy};

use crate::client::Client;

/// Time for a new file watcher to read the file and register with inotify.
const WATCHER_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// A proxy running in this process, with its configuration file.
#[derive(Debug)]
pub struct TestProxy {
    proxy: Proxy,
    dir: PathBuf,
    path: PathBuf,
    watcher: Option<JoinHandle<()>>,
    admin: Client,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        // Stop accepting now; the runtime's end takes care of the drained tasks.
        let proxy = self.proxy.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { proxy.shutdown().await });
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory of its own for each proxy, so one proxy's file watcher never sees
/// another's writes.
fn fresh_dir() -> anyhow::Result<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weft-tests-{}-{n}", std::process::id()));
    // A stale directory from an earlier run with the same pid is simply reused.
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl TestProxy {
    /// Writes `yaml` to a fresh file and starts a proxy serving it, admin on
    /// `127.0.0.1:0`.
    pub async fn start(yaml: &str) -> anyhow::Result<TestProxy> {
        Self::start_with(yaml, weft_proxy::observe::TelemetryOptions::default()).await
    }

    /// As [`TestProxy::start`], with telemetry options (an OTLP collector address).
    pub async fn start_with(
        yaml: &str,
        telemetry: weft_proxy::observe::TelemetryOptions,
    ) -> anyhow::Result<TestProxy> {
        crate::init_logging();
        let dir = fresh_dir()?;
        let path = dir.join("weft.yaml");
        write_atomically(&path, yaml)?;
        let loaded = weft_proxy::config::load_file(&path)
            .with_context(|| format!("test configuration does not load:\n{yaml}"))?;
        let options = Options {
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            no_admin: false,
            telemetry,
        };
        let proxy = Proxy::start(loaded, options)
            .await
            .context("starting the proxy")?;
        Ok(TestProxy {
            proxy,
            dir,
            path,
            watcher: None,
            admin: Client::http1(),
        })
    }

    /// Starts watching the configuration file (`weft_proxy::reload::spawn`), as
    /// `weft run` does, and gives the watcher a moment to register: a write before that
    /// would be taken as the starting contents rather than a change.
    pub async fn watch(&mut self) {
        if self.watcher.is_none() {
            self.watcher = Some(weft_proxy::reload::spawn(
                self.proxy.clone(),
                self.path.clone(),
            ));
            tokio::time::sleep(WATCHER_SETTLE).await;
        }
    }

    /// The running proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// The proxy's own temporary directory (for access-log files; removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where listener `name` is bound.
    ///
    /// # Panics
    /// If there is no such listener (a test mistake, or a listener a reload removed).
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.proxy.listener_addr(name).unwrap_or_else(|| {
            panic!(
                "no listener {name:?}; running: {:?}",
                self.proxy.listener_addrs()
            )
        })
    }

    /// `http://ADDR{path}` for listener `name`.
    ///
    /// # Panics
    /// As [`TestProxy::addr`].
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(name))
    }

    /// The admin server's address.
    ///
    /// # Panics
    /// Never for a proxy started here (it always has an admin server).
    pub fn admin_addr(&self) -> SocketAddr {
        self.proxy
            .admin_addr()
            .unwrap_or_else(|| panic!("the test proxy runs without an admin server"))
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    /// Scrapes `/metrics` from the admin server and parses it.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let reply = self.admin.get(&self.admin_url("/metrics")).await?;
        anyhow::ensure!(reply.status == 200, "/metrics answered {}", reply.status);
        Metrics::parse(&reply.text())
    }

    /// Replaces the configuration file's contents (atomically: write, then rename).
    pub fn rewrite_config(&self, yaml: &str) -> anyhow::Result<()> {
        write_atomically(&self.path, yaml)
    }

    /// Reloads the configuration file now (`Proxy::reload`).
    pub async fn reload(&self) -> Result<u64, weft_proxy::proxy::Error> {
        self.proxy.reload(&self.path).await
    }

    /// The version of the active configuration (1 at start, +1 per applied update).
    pub fn version(&self) -> u64 {
        self.proxy.state().version
    }

    /// Stops the proxy: listeners stop accepting and connections drain.
    pub async fn shutdown(&self) {
        self.proxy.shutdown().await;
    }
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// A parsed `/metrics` scrape.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// What `prometheus-parse` made of it.
    pub scrape: Scrape,
    /// The text as served.
    pub text: String,
}

impl Metrics {
    /// Parses Prometheus text exposition.
    pub fn parse(text: &str) -> anyhow::Result<Metrics> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = Scrape::parse(lines).context("parsing /metrics")?;
        Ok(Metrics {
            scrape,
            text: text.to_owned(),
        })
    }

    /// Samples of metric `name` whose labels include all of `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.scrape.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The sum of the counter, gauge or untyped samples of `name` matching `labels`
    /// (0 when there are none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                _ => 0.0,
            })
            .sum()
    }

    /// The histogram buckets (`le`, cumulative count) of `name` matching `labels`,
    /// summed over the matching series.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        for s in self.samples(name, labels) {
            if let Value::Histogram(buckets) = &s.value {
                for b in buckets {
                    match out.iter_mut().find(|(le, _)| *le == b.less_than) {
                        Some(entry) => entry.1 += b.count,
                        None => out.push((b.less_than, b.count)),
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}
