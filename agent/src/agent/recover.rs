//! Recovery after an agent restart: what the isolation steps left for runs
//! no longer on record (cgroups, with their processes) is removed; runs
//! whose wrapper is still alive are re-attached (watched, their kills and
//! health checks resumed); runs whose wrapper is gone get their terminal
//! update.

use std::path::Path;
use std::sync::Arc;

use tracing::Instrument;

use super::{secs, state_of, task_span, Agent, Key};
use crate::checkpoint::TaskRecord;
use crate::executor;
use crate::isolation::steps;
use crate::lifecycle::Observed;

impl Agent {
    /// After a restart: remove orphans, re-attach to wrappers still
    /// running, report the ending of those that are gone. Runs before the
    /// first registration, so before any launch.
    pub async fn recover(self: &Arc<Self>) {
        self.recover_orphans().await;
        let records: Vec<(Key, TaskRecord)> = self
            .lock()
            .tasks
            .iter()
            .filter(|(_, rec)| !state_of(rec).is_terminal())
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, rec) in records {
            let span = task_span(&key.0, &key.1);
            let alive = rec
                .wrapper_pid
                .is_some_and(|pid| executor::wrapper_alive(pid, rec.wrapper_start_time));
            if !alive {
                span.in_scope(|| {
                    tracing::info!("task wrapper is gone; reporting how the task ended")
                });
                self.finish(&key, Observed::AfterAgentRestart)
                    .instrument(span)
                    .await;
                continue;
            }
            let pid = rec.wrapper_pid.unwrap_or_default();
            span.in_scope(|| {
                tracing::info!(wrapper_pid = pid, "re-attached to running task {}", key.1)
            });
            let pgid = rec
                .child_pgid
                .or_else(|| executor::recorded_child_pid(Path::new(&rec.sandbox)));
            if rec.child_pgid.is_none() {
                if let Some(pgid) = pgid {
                    self.started(&key, pgid).instrument(span.clone()).await;
                }
            } else if rec.kill_requested {
                // The kill was under way when the agent went down.
                let grace = rec.kill_grace_secs.map_or(self.default_kill_grace, secs);
                if let Some(pgid) = pgid {
                    self.signal_and_escalate(key.clone(), pgid, grace);
                }
            } else if let Some(pgid) = pgid {
                // Health is not checkpointed: checks start over.
                span.in_scope(|| self.start_health_checks(&key, pgid));
            }
            let me = Arc::clone(self);
            let start_time = rec.wrapper_start_time;
            self.spawn(
                async move {
                    executor::wait_wrapper_gone(pid, start_time).await;
                    me.finish(&key, Observed::Watched).await;
                }
                .instrument(span),
            );
        }
    }

    /// Runs the isolation steps' `recover`: cgroups of this agent's runs
    /// that no record names (a crash between creating a cgroup and
    /// checkpointing it, or a run whose record is gone) are killed and
    /// removed. Logs each and returns how many things were removed.
    pub async fn recover_orphans(&self) -> usize {
        let known = steps::Known {
            owner: self.owner.clone(),
            cgroups: self
                .lock()
                .tasks
                .values()
                .filter_map(|rec| rec.cgroup.clone())
                .collect(),
        };
        let steps = Arc::clone(&self.steps);
        let removed = match tokio::task::spawn_blocking(move || steps.recover(&known)).await {
            Ok(removed) => removed,
            Err(e) => {
                tracing::warn!("recovering orphaned cgroups failed: {e}");
                return 0;
            }
        };
        for what in &removed {
            tracing::info!("removed orphaned {what} and its processes: no task on record owns it");
        }
        if !removed.is_empty() {
            tracing::warn!(
                "removed {} orphan(s) left by an earlier run of this agent",
                removed.len()
            );
        }
        removed.len()
    }
}
