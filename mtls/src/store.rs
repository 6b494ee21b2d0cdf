//! The certificate store: the current credentials of one identity, and their producers.
//!
//! A [`CertStore`] holds one identity's current [`Credentials`] (the proxy's workload
//! identity, or one of the gateway's serving certificates). Handshakes read it through
//! [`CertStore::current`], a lock-free load, so rotation is a single swap: handshakes
//! started after a publish see the new certificate, connections already open keep
//! what they negotiated. Owners that rebuild something on change subscribe to a watch
//! channel instead of polling.
//!
//! Producers only ever call [`CertStore::publish`] with a load result: on success the
//! credentials are swapped in; on failure the error is logged and counted and the
//! previous credentials stay, so a bad rotation never takes the mesh down. The store
//! also keeps `weft_tls_cert_expiry_seconds` up to date and warns when the certificate
//! is about to expire. [`FileSource`] is the producer for PEM files on disk (inotify,
//! debounced); an SDS producer later only needs to call `publish` the same way.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use metrics::{Counter, Gauge};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use weft_telemetry::Registry;
use weft_telemetry::names::{self, label};

use crate::creds::Origin;
use crate::leaf::utc;
use crate::{Credentials, Error};

/// Quiet time after the last file event before re-reading: a rotation writes several
/// files (and Kubernetes swaps a symlink), and reading between them would see a
/// mismatched pair.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often the files are re-read and the expiry re-checked without any event: the
/// expiry gauge and warning must move even when nothing is written, and a missed
/// inotify event (some volume types send none) is caught up.
const RECHECK: Duration = Duration::from_secs(60);
/// The "close to expiry" threshold is the smaller of a fifth of the lifetime and this.
const EXPIRY_WARNING_CAP: Duration = Duration::from_secs(3600);

/// The current credentials of one identity, shared by every configuration that serves
/// or verifies with them. Cheap to clone.
#[derive(Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    current: ArcSwapOption<Credentials>,
    changes: watch::Sender<Option<Arc<Credentials>>>,
    loads_ok: Counter,
    loads_rejected: Counter,
    expiry_seconds: Gauge,
    expiring: Counter,
}

/// Where a [`FileSource`] reads PEM files from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
    /// The trust bundle; `None` for an edge (gateway) certificate.
    pub bundle: Option<PathBuf>,
}

/// The PEM-file producer: loads credentials from [`CertPaths`] and keeps a store up to
/// date as the files change.
#[derive(Debug)]
pub struct FileSource;

impl CertStore {
    /// An empty store; `source` names it in logs and in the `source` label of its
    /// metrics (`weft_tls_cert_loads_total`, `weft_tls_cert_expiry_seconds`,
    /// `weft_tls_cert_expiring_total`).
    pub fn new(source: &str, registry: &Registry) -> CertStore {
        let src = || (label::SOURCE, source.to_owned());
        let loads = |outcome: &str| {
            registry.counter(
                names::TLS_CERT_LOADS_TOTAL,
                &[src(), (label::OUTCOME, outcome.to_owned())],
            )
        };
        CertStore {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                current: ArcSwapOption::empty(),
                changes: watch::Sender::new(None),
                loads_ok: loads("ok"),
                loads_rejected: loads("rejected"),
                expiry_seconds: registry.gauge(names::TLS_CERT_EXPIRY_SECONDS, &[src()]),
                expiring: registry.counter(names::TLS_CERT_EXPIRING_TOTAL, &[src()]),
            }),
        }
    }

    /// The name given to [`CertStore::new`].
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The credentials to use now, if any were loaded. Lock-free; called per handshake.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.inner.current.load_full()
    }

    /// A receiver that sees every successful publish.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.inner.changes.subscribe()
    }

    /// Offers a load result: `Ok` credentials replace the current ones (true is
    /// returned); an `Err` is logged and counted as rejected and the current
    /// credentials stay (false). Either way the expiry gauge is refreshed.
    pub fn publish(&self, loaded: Result<Credentials, Error>) -> bool {
        let accepted = match loaded {
            Ok(creds) => {
                tracing::info!(
                    source = %self.inner.source,
                    id = creds.id().map(|id| id.as_str()).unwrap_or("-"),
                    dns = ?creds.dns_names(),
                    not_after = %utc(creds.not_after()),
                    "certificate loaded"
                );
                let creds = Arc::new(creds);
                // Counted before subscribers wake, so they see the count they caused.
                self.inner.loads_ok.increment(1);
                self.inner.current.store(Some(creds.clone()));
                self.inner.changes.send_replace(Some(creds));
                true
            }
            Err(error) => {
                tracing::error!(
                    source = %self.inner.source,
                    %error,
                    kept_previous = self.inner.current.load().is_some(),
                    "certificate update rejected; the previous certificate stays in use"
                );
                self.inner.loads_rejected.increment(1);
                false
            }
        };
        self.check_expiry();
        accepted
    }

    /// Refreshes `weft_tls_cert_expiry_seconds` (negative once expired) and, when the
    /// current certificate is close to expiry, logs a warning and counts it in
    /// `weft_tls_cert_expiring_total`. Producers call it periodically.
    ///
    /// "Close" is less than a fifth of the certificate's lifetime or an hour left,
    /// whichever is smaller: short-lived certificates are renewed at half-life or so,
    /// so the warning fires only when renewal is clearly late, never in routine
    /// operation; dashboards that want earlier notice use the gauge.
    pub fn check_expiry(&self) {
        let Some(creds) = self.current() else {
            return;
        };
        let now = SystemTime::now();
        let left = match creds.not_after().duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        };
        self.inner.expiry_seconds.set(left);
        if expiring(creds.not_before(), creds.not_after(), now) {
            tracing::warn!(
                source = %self.inner.source,
                not_after = %utc(creds.not_after()),
                seconds_left = left,
                "certificate is close to expiry and has not been renewed"
            );
            self.inner.expiring.increment(1);
        }
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("source", &self.inner.source)
            .field("current", &self.current())
            .finish()
    }
}

impl CertPaths {
    /// `cert.pem`, `key.pem` and `ca.pem` in `dir`: what [`crate::Issued::write`] and
    /// `weft ca issue` produce.
    pub fn in_dir(dir: &Path) -> CertPaths {
        CertPaths {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            bundle: Some(dir.join("ca.pem")),
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            cert: self.cert.display().to_string(),
            key: self.key.display().to_string(),
            bundle: self
                .bundle
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }

    /// The directories to watch: each file's parent, once.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.bundle.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| match p.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect()
    }

    /// The files' bytes, for loading and for telling a real change from a touch.
    fn read(&self) -> Result<Contents, Error> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            bundle: self.bundle.as_deref().map(read).transpose()?,
        })
    }
}

/// The bytes of the files of one [`CertPaths`].
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    bundle: Option<Vec<u8>>,
}

impl Contents {
    fn load(&self, paths: &CertPaths, source: &str) -> Result<Credentials, Error> {
        Credentials::build(
            &self.cert,
            &self.key,
            self.bundle.as_deref(),
            source,
            &paths.origin(),
        )
    }
}

impl FileSource {
    /// Reads and checks the files now: workload credentials when `paths.bundle` is
    /// set, edge credentials otherwise. Errors name the file at fault.
    pub fn load(paths: &CertPaths, source: &str) -> Result<Credentials, Error> {
        paths.read()?.load(paths, source)
    }

    /// Keeps `store` fed from `paths` until the task is aborted: loads the files now
    /// (unless the store already holds exactly these credentials), then again whenever
    /// their directories change (debounced, and only when the bytes changed), and
    /// every minute re-checks the expiry. Must be called within a Tokio runtime.
    pub fn spawn(store: CertStore, paths: CertPaths) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { watch_files(store, paths).await })
    }
}

async fn watch_files(store: CertStore, paths: CertPaths) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    // Kept alive for as long as the task runs; dropping it stops the events.
    let watcher = watch_dirs(&paths, tx);
    let mut watching = match &watcher {
        Ok(_) => true,
        Err(error) => {
            tracing::error!(
                source = %store.source(),
                %error,
                "cannot watch the certificate directories; changes are picked up once a minute"
            );
            false
        }
    };
    let mut last = None;
    reload(&store, &paths, &mut last);
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    loop {
        tokio::select! {
            got = rx.recv(), if watching => {
                if got.is_none() {
                    watching = false;
                    continue;
                }
                // Let a burst of events (write, rename, symlink swap) settle.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                reload(&store, &paths, &mut last);
            }
            _ = recheck.tick() => {
                reload(&store, &paths, &mut last);
                store.check_expiry();
            }
        }
    }
}

fn watch_dirs(
    paths: &CertPaths,
    tx: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    })?;
    for dir in paths.dirs() {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// What the last read saw: the bytes, or the read error's text.
type LastRead = Option<Result<Contents, String>>;

/// Re-reads the files and publishes what changed since `last`.
fn reload(store: &CertStore, paths: &CertPaths, last: &mut LastRead) {
    let read = paths.read();
    let unchanged = match (&read, &*last) {
        (Ok(now), Some(Ok(before))) => now == before,
        // The same failure again (a file still missing) was reported already.
        (Err(now), Some(Err(before))) => now.to_string() == *before,
        _ => false,
    };
    if unchanged {
        return;
    }
    let (loaded, seen) = match read {
        Ok(contents) => (contents.load(paths, store.source()), Ok(contents)),
        Err(e) => {
            let text = e.to_string();
            (Err(e), Err(text))
        }
    };
    *last = Some(seen);
    if let (Ok(new), Some(current)) = (&loaded, store.current())
        && new.same_material(&current)
    {
        // Already serving exactly these (the owner loaded them before spawning us).
        return;
    }
    store.publish(loaded);
}

/// Whether a certificate valid from `not_before` to `not_after` is close to expiry at
/// `now` (see [`CertStore::check_expiry`]).
fn expiring(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let threshold = (lifetime / 5).min(EXPIRY_WARNING_CAP);
    let left = not_after.duration_since(now).unwrap_or_default();
    left < threshold || now >= not_after
}

#[cfg(test)]
mod tests;
