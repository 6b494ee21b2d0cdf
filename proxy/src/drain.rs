//! A drain signal for many connections whose per-poll cost is one atomic load.
//!
//! Every open connection must notice when its listener drains, so it is polled for that
//! on every wake-up, which for a busy connection is every request. Tokio's notification
//! primitives take a lock on each poll; here a connection registers its task's waker
//! once and afterwards only reads a flag. Starting the drain sets the flag and wakes
//! every registered connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How long connections get to finish once their listener drains; after it they are
/// closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The signal, held by the listener.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    draining: AtomicBool,
    next_id: AtomicU64,
    wakers: Mutex<HashMap<u64, Waker>>,
}

/// One connection's view of the signal.
#[derive(Debug)]
pub struct Watch {
    inner: Arc<Inner>,
    id: Option<u64>,
}

impl Drain {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// A watch for one connection.
    pub fn watch(&self) -> Watch {
        Watch {
            inner: self.inner.clone(),
            id: None,
        }
    }

    /// Fires the signal: every watch is woken and reports draining from now on.
    pub fn start(&self) {
        self.inner.draining.store(true, Ordering::Release);
        let wakers: Vec<Waker> = {
            let mut map = self
                .inner
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.drain().map(|(_, w)| w).collect()
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl Watch {
    /// Ready once the drain has started. The first call registers the task's waker
    /// (a connection lives in one task, whose waker does not change).
    pub fn poll_draining(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.id.is_none() {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            self.inner
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, cx.waker().clone());
            self.id = Some(id);
            // The drain may have started between the check and the registration.
            if self.inner.draining.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

impl Watch {
    /// Resolves [`DRAIN_TIMEOUT`] after the drain started: when a connection that
    /// cannot wind down by itself (a tunnel) is cut off.
    pub async fn deadline(&mut self) {
        std::future::poll_fn(|cx| self.poll_draining(cx)).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watches_wake_on_drain_and_unregister_on_drop() {
        let drain = Drain::new();
        let mut a = drain.watch();
        let mut b = drain.watch();
        let waiter =
            tokio::spawn(async move { std::future::poll_fn(|cx| a.poll_draining(cx)).await });
        // b registers, then goes away: nothing of it stays behind.
        let waker = futures_util::task::noop_waker();
        assert!(
            b.poll_draining(&mut Context::from_waker(&waker))
                .is_pending()
        );
        drop(b);
        tokio::task::yield_now().await;
        assert_eq!(drain.inner.wakers.lock().unwrap().len(), 1);
        drain.start();
        waiter.await.unwrap();
        let mut late = drain.watch();
        assert!(
            late.poll_draining(&mut Context::from_waker(&waker))
                .is_ready()
        );
    }
}
