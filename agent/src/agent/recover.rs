//! Recovery after an agent restart: runs whose wrapper is still alive are
//! re-attached (watched, their kills and health checks resumed); runs whose
//! wrapper is gone get their terminal update.

use std::path::Path;
use std::sync::Arc;

use tracing::Instrument;

use super::{secs, state_of, task_span, Agent, Key};
use crate::checkpoint::TaskRecord;
use crate::executor;
use crate::lifecycle::Observed;

impl Agent {
    /// After a restart: re-attach to wrappers still running, report the
    /// ending of those that are gone. Runs before the first registration.
    pub async fn recover(self: &Arc<Self>) {
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
}
