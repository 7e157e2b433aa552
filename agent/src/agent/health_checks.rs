//! A running task's health checks: one loop per run that probes on the
//! task's interval while the run is RUNNING and not being killed, reports
//! changes of health as updates and kills the run when the policy says so.
//! The policy itself lives in `crate::health`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mezz_proto::v1::{TaskReason, TaskState};
use tracing::Instrument;

use super::{state_of, task_span, Agent, Key};
use crate::health;

impl Agent {
    /// Starts the task's health checks, if it has any, for the run whose
    /// command is process group `pgid`. They end with the run (or a kill).
    pub(super) fn start_health_checks(self: &Arc<Self>, key: &Key, pgid: i32) {
        let (check, sandbox) = {
            let st = self.lock();
            let Some(rec) = st.tasks.get(key) else {
                return;
            };
            let Some(check) = rec.task.as_ref().and_then(|t| t.health_check.clone()) else {
                return;
            };
            (check, PathBuf::from(&rec.sandbox))
        };
        let policy = match health::Policy::from_proto(&check) {
            Ok(p) => p,
            Err(e) => {
                // Validated at launch; only an old checkpoint gets here.
                tracing::warn!("task {}: not checking health: {e}", key.1);
                return;
            }
        };
        tracing::debug!(
            "checking health of task {} every {:?}: {}",
            key.1,
            policy.interval,
            policy.describe()
        );
        let me = Arc::clone(self);
        let key = key.clone();
        let span = task_span(&key.0, &key.1);
        self.spawn(
            async move { me.health_loop(key, pgid, policy, sandbox).await }.instrument(span),
        );
    }

    /// Is the run with process group `pgid` still one to check?
    fn health_wanted(&self, key: &Key, pgid: i32) -> bool {
        self.lock().tasks.get(key).is_some_and(|rec| {
            state_of(rec) == TaskState::Running
                && rec.child_pgid == Some(pgid)
                && !rec.kill_requested
        })
    }

    async fn health_loop(
        self: Arc<Self>,
        key: Key,
        pgid: i32,
        policy: health::Policy,
        sandbox: PathBuf,
    ) {
        let since = Instant::now();
        let ctx = tokio::task::spawn_blocking(move || health::CommandContext::of_sandbox(&sandbox))
            .await
            .unwrap_or_default()
            .in_task_of(pgid);
        let mut tick = tokio::time::interval(policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tracker = health::Tracker::new(policy);
        loop {
            tick.tick().await;
            if !self.health_wanted(&key, pgid) {
                return;
            }
            let p = tracker.policy();
            let result = health::probe(&p.probe, &ctx, p.timeout).await;
            // The run may have ended while the check ran: its result is moot.
            if !self.health_wanted(&key, pgid) {
                return;
            }
            if let Err(e) = &result {
                tracing::debug!("health check of task {} failed: {e}", key.1);
            }
            for effect in tracker.observe(since.elapsed(), result) {
                match effect {
                    health::Effect::Health { healthy, message } => {
                        let mut status = Self::status(
                            &key,
                            TaskState::Running,
                            TaskReason::Unspecified,
                            message,
                        );
                        status.healthy = Some(healthy);
                        self.emit(status, true).await;
                    }
                    health::Effect::Kill(why) => {
                        self.kill_for(&key, TaskReason::HealthCheckFailed, why);
                        return;
                    }
                }
            }
        }
    }
}
