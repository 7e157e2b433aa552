//! The queue of status updates: each is stamped, checkpointed durably and
//! held until the master acknowledges it; the master link takes what is
//! unsent or overdue, and an acknowledged terminal update lets the agent
//! forget the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mezz_proto::v1::{
    AgentTask, FrameworkInfo, RegisterAgent, StatusAck, StatusSource, TaskReason, TaskState,
    TaskStatus,
};

use super::{state_of, Agent, Key, Pending};

impl Agent {
    /// Stamps, checkpoints (durably) and queues a status update. With
    /// `record` the task's record takes it as its latest status.
    pub(super) async fn emit(&self, mut status: TaskStatus, record: bool) {
        status.uuid = uuid::Uuid::new_v4().to_string();
        status.set_source(StatusSource::Agent);
        status.timestamp = mezz_proto::unix_now();
        status.agent_id = self.info.id.clone();
        let key = (status.framework_id.clone(), status.task_id.clone());
        let seq = {
            let mut st = self.lock();
            if record {
                if let Some(rec) = st.tasks.get_mut(&key) {
                    // A run that ended stays ended: a late health update
                    // (or any non-terminal one) is moot.
                    if state_of(rec).is_terminal() && !status.state().is_terminal() {
                        tracing::debug!(task_id = %key.1, "update after the terminal one dropped");
                        return;
                    }
                    rec.latest_status = Some(status.clone());
                    self.put(rec);
                }
            }
            match self.checkpoint.push_update(&status) {
                Ok(seq) => seq,
                Err(e) => {
                    tracing::error!("cannot checkpoint a status update: {e}");
                    return;
                }
            }
        };
        if let Err(e) = self.checkpoint.flush().await {
            tracing::error!("cannot flush {}: {e}", self.checkpoint.path().display());
        }
        let state = status.state();
        tracing::info!(
            framework_id = %key.0, task_id = %key.1,
            "task {} is {}{}",
            key.1,
            state.short_name(),
            if status.message.is_empty() { String::new() } else { format!(": {}", status.message) }
        );
        self.lock().unacked.insert(
            seq,
            Pending {
                status,
                sent_gen: 0,
                sent_at: None,
            },
        );
        self.updates_ready.notify_one();
    }

    pub(super) fn status(
        key: &Key,
        state: TaskState,
        reason: TaskReason,
        message: String,
    ) -> TaskStatus {
        let mut s = TaskStatus {
            task_id: key.1.clone(),
            framework_id: key.0.clone(),
            message,
            ..Default::default()
        };
        s.set_state(state);
        s.set_reason(reason);
        s
    }

    /// Resolves when an update was queued (a stored wake-up counts).
    pub async fn updates_ready(&self) {
        self.updates_ready.notified().await
    }

    /// Updates not yet sent on stream generation `gen`, in order; marks them
    /// sent.
    pub fn take_unsent(&self, gen: u64) -> Vec<TaskStatus> {
        let now = Instant::now();
        let mut st = self.lock();
        st.unacked
            .values_mut()
            .filter(|p| p.sent_gen != gen)
            .map(|p| {
                p.sent_gen = gen;
                p.sent_at = Some(now);
                p.status.clone()
            })
            .collect()
    }

    /// Updates sent on `gen` more than `age` ago and still unacknowledged;
    /// marks them sent again.
    pub fn take_overdue(&self, gen: u64, age: Duration) -> Vec<TaskStatus> {
        let now = Instant::now();
        let mut st = self.lock();
        st.unacked
            .values_mut()
            .filter(|p| p.sent_gen == gen && p.sent_at.is_none_or(|t| now.duration_since(t) >= age))
            .map(|p| {
                p.sent_at = Some(now);
                p.status.clone()
            })
            .collect()
    }

    /// The first message of every stream.
    pub fn register_message(&self) -> RegisterAgent {
        let st = self.lock();
        let mut frameworks: BTreeMap<String, FrameworkInfo> = BTreeMap::new();
        let mut tasks = Vec::new();
        for ((fw_id, task_id), rec) in &st.tasks {
            let latest = rec.latest_status.clone().unwrap_or_else(|| {
                Self::status(
                    &(fw_id.clone(), task_id.clone()),
                    TaskState::Staging,
                    TaskReason::Unspecified,
                    String::new(),
                )
            });
            tasks.push(AgentTask {
                framework_id: fw_id.clone(),
                task: rec.task.clone(),
                latest_status: Some(TaskStatus {
                    agent_id: self.info.id.clone(),
                    ..latest
                }),
                launched_at: rec.launched_at.unwrap_or(0.0),
            });
            if let Some(fw) = &rec.framework {
                frameworks
                    .entry(fw_id.clone())
                    .or_insert_with(|| fw.clone());
            }
        }
        RegisterAgent {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            agent: Some(self.info.clone()),
            tasks,
            frameworks: frameworks.into_values().collect(),
            // Added by the master link, which holds the secret.
            ..Default::default()
        }
    }

    /// `StatusAck`: drop the update; forget the run once its terminal
    /// update is acknowledged.
    pub fn handle_ack(&self, ack: StatusAck) {
        let key = (ack.framework_id.clone(), ack.task_id.clone());
        let mut st = self.lock();
        let found = st
            .unacked
            .iter()
            .find(|(_, p)| p.status.uuid == ack.uuid && p.status.task_id == ack.task_id)
            .map(|(seq, _)| *seq);
        match found {
            Some(seq) => {
                st.unacked.remove(&seq);
                if let Err(e) = self.checkpoint.remove_update(seq) {
                    tracing::warn!("cannot remove an acknowledged update: {e}");
                }
            }
            None => {
                tracing::debug!(task_id = %ack.task_id, uuid = %ack.uuid, "ack for an update that is not pending")
            }
        }
        let terminal_acked = st.tasks.get(&key).is_some_and(|rec| {
            rec.latest_status
                .as_ref()
                .is_some_and(|s| s.state().is_terminal() && s.uuid == ack.uuid)
        });
        if terminal_acked {
            st.tasks.remove(&key);
            if let Err(e) = self.checkpoint.remove_task(&key.0, &key.1) {
                tracing::warn!("cannot forget task {}: {e}", key.1);
            }
            // Older updates of a finished run are moot now.
            let stale: Vec<u64> = st
                .unacked
                .iter()
                .filter(|(_, p)| p.status.framework_id == key.0 && p.status.task_id == key.1)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in stale {
                st.unacked.remove(&seq);
                let _ = self.checkpoint.remove_update(seq);
            }
            tracing::debug!(framework_id = %key.0, task_id = %key.1, "terminal update acknowledged; task run forgotten");
        }
    }
}
