//! Hot reload: the configuration file is watched (inotify on its directory, so editors
//! that replace the file and Kubernetes ConfigMap symlink swaps are seen) and re-read on
//! `SIGHUP`. Changes are debounced and a file whose bytes did not change is not
//! re-applied. A bad file is rejected whole by [`Proxy::reload`]; the running
//! configuration stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::proxy::Proxy;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches `path` for the life of the process (or until the proxy is dropped and the
/// task aborted), reloading on changes and on SIGHUP.
pub fn spawn(proxy: Proxy, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = watch(proxy, &path).await {
            tracing::error!(path = %path.display(), error = %e, "config watcher stopped; SIGHUP reloads still work only while it runs");
        }
    })
}

async fn watch(proxy: Proxy, path: &Path) -> Result<(), notify::Error> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = std::fs::read(path).ok();
    loop {
        let forced = tokio::select! {
            got = rx.recv() => {
                if got.is_none() {
                    return Ok(());
                }
                // Let a burst of events (write, rename, chmod) settle.
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return Ok(()),
                        Err(_) => break,
                    }
                }
                false
            }
            _ = async {
                match hangup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
        };
        let now = std::fs::read(path).ok();
        if !forced && now == last {
            continue;
        }
        last = now;
        tracing::info!(path = %path.display(), signal = forced, "reloading configuration");
        // Errors are logged and counted by `reload`; the old configuration keeps serving.
        let _ = proxy.reload(path).await;
    }
}
