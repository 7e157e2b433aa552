//! Killing task runs: on the master's request (`KillTask`, a framework's
//! shutdown), all of them when the agent stops with its tasks, or on the
//! agent's own decision (a failed health check). A kill is SIGTERM to the
//! command's process group, then SIGKILL once the grace period is over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mezz_proto::v1::{KillTask, TaskReason, TaskState};
use nix::sys::signal::Signal;
use tracing::Instrument;

use super::{secs, state_of, task_span, Agent, Key};
use crate::checkpoint::TaskRecord;
use crate::executor;

impl Agent {
    pub(super) fn grace_for(&self, requested: Option<f64>, rec: &TaskRecord) -> Duration {
        let task_grace = rec.task.as_ref().map_or(0.0, |t| t.kill_grace_period_secs);
        match requested {
            Some(g) if g.is_finite() && g >= 0.0 => secs(g),
            _ if task_grace.is_finite() && task_grace > 0.0 => secs(task_grace),
            _ => self.default_kill_grace,
        }
    }

    /// `KillTask`.
    pub fn handle_kill(self: &Arc<Self>, kill: KillTask) {
        let key: Key = (kill.framework_id.clone(), kill.task_id.clone());
        let span = task_span(&key.0, &key.1);
        let _guard = span.enter();
        let target = {
            let mut st = self.lock();
            match st.tasks.get_mut(&key) {
                Some(rec) if !state_of(rec).is_terminal() => {
                    let grace = self.grace_for(kill.grace_period_secs, rec);
                    rec.kill_requested = true;
                    rec.kill_grace_secs = Some(grace.as_secs_f64());
                    // A kill the master decided on its own (a preemption, a
                    // run deadline) ends the task with that reason and why.
                    if matches!(
                        kill.reason(),
                        TaskReason::Preempted | TaskReason::DeadlineExceeded
                    ) && rec.kill_reason.is_none()
                    {
                        rec.kill_reason = Some(kill.reason);
                        rec.kill_message = Some(kill.message.clone());
                    }
                    self.put(rec);
                    Some((rec.child_pgid, grace))
                }
                Some(_) => {
                    tracing::debug!("kill of an already terminal task ignored");
                    return;
                }
                None => None,
            }
        };
        match target {
            Some((Some(pgid), grace)) => {
                tracing::info!("killing task {} (grace {:?})", key.1, grace);
                self.signal_and_escalate(key.clone(), pgid, grace);
            }
            Some((None, _)) => {
                tracing::info!(
                    "kill requested before the task started; it is killed as soon as it does"
                );
            }
            None => {
                let heard_of = crate::validate_ids(&key.0, &key.1)
                    && executor::sandbox_path(&self.work_dir, &key.0, &key.1).exists();
                if heard_of {
                    tracing::debug!("kill of a forgotten task ignored");
                    return;
                }
                let status = Self::status(
                    &key,
                    TaskState::Lost,
                    TaskReason::Unspecified,
                    "unknown task".into(),
                );
                let me = Arc::clone(self);
                drop(_guard);
                self.spawn(async move { me.emit(status, false).await }.instrument(span));
            }
        }
    }

    /// `ShutdownFramework`: kill all of its tasks.
    pub fn handle_shutdown_framework(self: &Arc<Self>, framework_id: &str) {
        let tasks: Vec<String> = self
            .lock()
            .tasks
            .iter()
            .filter(|((fw, _), rec)| fw == framework_id && !state_of(rec).is_terminal())
            .map(|((_, t), _)| t.clone())
            .collect();
        tracing::info!(
            "shutting down framework {framework_id}: killing {} task(s)",
            tasks.len()
        );
        for task_id in tasks {
            self.handle_kill(KillTask {
                framework_id: framework_id.to_string(),
                task_id,
                grace_period_secs: None,
                reason: TaskReason::FrameworkRemoved as i32,
                message: String::new(),
            });
        }
    }

    /// Kills every running task and waits, up to `limit`, for them to end.
    /// Used when the agent's work dir is thrown away with it (`mezz dev`).
    pub async fn kill_all(self: &Arc<Self>, limit: Duration) {
        let active: Vec<Key> = self
            .lock()
            .tasks
            .iter()
            .filter(|(_, rec)| !state_of(rec).is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        if active.is_empty() {
            return;
        }
        tracing::info!("killing {} task(s) before stopping", active.len());
        for (framework_id, task_id) in active {
            self.handle_kill(KillTask {
                framework_id,
                task_id,
                grace_period_secs: Some(limit.as_secs_f64() / 2.0),
                reason: TaskReason::KilledByRequest as i32,
                message: String::new(),
            });
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let left = self
                .lock()
                .tasks
                .values()
                .any(|rec| !state_of(rec).is_terminal());
            if !left {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("some tasks did not end within {limit:?}");
    }

    /// SIGTERM to the group now, SIGKILL after `grace` if the run is still
    /// not over.
    pub(super) fn signal_and_escalate(self: &Arc<Self>, key: Key, pgid: i32, grace: Duration) {
        executor::signal_group(pgid, Signal::SIGTERM);
        let me = Arc::clone(self);
        self.spawn(async move {
            // Make the kill request durable, so a restart reports KILLED.
            let _ = me.checkpoint.flush().await;
            tokio::time::sleep(grace).await;
            let still_running = me.lock().tasks.get(&key).is_some_and(|rec| {
                !state_of(rec).is_terminal() && rec.child_pgid == Some(pgid)
            });
            if still_running {
                tracing::info!(framework_id = %key.0, task_id = %key.1, "grace period over; sending SIGKILL to process group {pgid}");
                executor::signal_group(pgid, Signal::SIGKILL);
            }
        });
    }

    /// The agent's own kill of a task (not asked for by the master): the
    /// terminal update says `reason` and `why`.
    pub(super) fn kill_for(self: &Arc<Self>, key: &Key, reason: TaskReason, why: String) {
        let target = {
            let mut st = self.lock();
            let Some(rec) = st.tasks.get_mut(key) else {
                return;
            };
            if state_of(rec).is_terminal() || rec.kill_requested {
                return;
            }
            let grace = self.grace_for(None, rec);
            rec.kill_requested = true;
            rec.kill_grace_secs = Some(grace.as_secs_f64());
            rec.kill_reason = Some(reason as i32);
            rec.kill_message = Some(why.clone());
            self.put(rec);
            rec.child_pgid.map(|pgid| (pgid, grace))
        };
        tracing::info!("killing task {}: {why}", key.1);
        if let Some((pgid, grace)) = target {
            self.signal_and_escalate(key.clone(), pgid, grace);
        }
    }
}
