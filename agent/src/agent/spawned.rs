//! The agent's own tokio tasks (launch monitors, wrapper watchers, kill
//! escalations, health loops, update senders), counted so that shutdown can
//! wait for them before the final checkpoint flush, as mini-redis does:
//! every task holds a clone of one channel sender, and once the agent lets
//! go of its own, the channel closes when the last task ends.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

/// Tasks spawned through it, until [`Spawned::wait`].
pub(super) struct Spawned {
    /// `None` once waiting began: later tasks are not waited for.
    tx: Mutex<Option<mpsc::Sender<()>>>,
    rx: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Spawned {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Spawned {
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Runs `fut` as a task that [`Spawned::wait`] waits for.
    pub(super) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let held = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tokio::spawn(async move {
            fut.await;
            // Dropped here, after the work: this task no longer counts.
            drop(held);
        });
    }

    /// Waits, at most `limit`, for every task spawned so far to end;
    /// true when they all did. The tasks must have been told to stop.
    pub(super) async fn wait(&self, limit: Duration) -> bool {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rx) = rx else {
            return true;
        };
        // No task ever sends: `recv` ends with `None` once all are gone.
        tokio::time::timeout(limit, rx.recv()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn wait_returns_once_every_task_has_ended() {
        let spawned = Spawned::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ended = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let mut stop = stop_rx.clone();
            let ended = Arc::clone(&ended);
            spawned.spawn(async move {
                let _ = stop.wait_for(|v| *v).await;
                // Work after the stop signal still counts.
                tokio::task::yield_now().await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        stop_tx.send(true).unwrap();
        assert!(spawned.wait(Duration::from_secs(30)).await);
        assert_eq!(ended.load(Ordering::SeqCst), 5);
        // Waiting again is harmless.
        assert!(spawned.wait(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn wait_gives_up_after_its_bound() {
        let spawned = Spawned::new();
        let (_never_tx, mut never) = tokio::sync::watch::channel(false);
        spawned.spawn(async move {
            let _ = never.wait_for(|v| *v).await;
        });
        assert!(!spawned.wait(Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn with_no_tasks_there_is_nothing_to_wait_for() {
        assert!(Spawned::new().wait(Duration::from_millis(1)).await);
    }
}
