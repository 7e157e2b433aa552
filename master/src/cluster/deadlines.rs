//! Deadlines on work: a demand not placed before its start deadline ends
//! DROPPED with reason DEADLINE_NOT_MET, naming what it waited for; a task
//! past its run deadline is killed with reason DEADLINE_EXCEEDED.

use mezz_proto::v1::{StatusSource, TaskInfo, TaskReason, TaskState, TaskStatus};
use mezz_proto::{AgentId, FrameworkId, TaskId};

use super::queue::need_text;
use super::Cluster;

impl Cluster {
    /// Ends waiting demand past its start deadline: a TASK_DROPPED update
    /// for its id, reason DEADLINE_NOT_MET, naming what it waited for.
    pub(super) fn expire_start_deadlines(&mut self) {
        let now = self.now;
        let late: Vec<(FrameworkId, String)> = self
            .queue
            .waiting
            .iter()
            .filter(|(_, w)| {
                w.demand.start_deadline_secs > 0.0
                    && now.saturating_sub(w.since) as f64 >= w.demand.start_deadline_secs * 1000.0
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in late {
            let Some(w) = self.queue.waiting.get(&key).cloned() else {
                continue;
            };
            self.forget_demand(&key);
            let task_key = (key.0.clone(), TaskId(key.1.clone()));
            if self.tasks.contains_key(&task_key) {
                // Launched meanwhile under this id: nothing to end.
                continue;
            }
            let message = format!(
                "not placed within its start deadline of {}s: waited for {} task(s) of {} in \
                 priority class {} ({})",
                w.demand.start_deadline_secs,
                w.need.tasks,
                need_text(&w.need),
                w.class.name,
                w.why
            );
            tracing::info!(framework_id = %key.0, demand = %key.1, "start deadline missed");
            let status = TaskStatus {
                task_id: key.1.clone(),
                framework_id: key.0 .0.clone(),
                state: TaskState::Dropped as i32,
                reason: TaskReason::DeadlineNotMet as i32,
                message,
                timestamp: self.unix_time(),
                uuid: self.next_id("u"),
                source: StatusSource::Master as i32,
                ..Default::default()
            };
            let info = TaskInfo {
                task_id: key.1.clone(),
                name: key.1.clone(),
                priority: w.class.name.clone(),
                ..Default::default()
            };
            let mut task = self.task_record(
                &key.0,
                AgentId::default(),
                info,
                w.need.per_task.clone(),
                status.clone(),
            );
            task.launched_at = w.since_unix;
            self.record_change(&task_key, &status);
            *self.counters.terminal.entry("DROPPED").or_default() += 1;
            self.remember_completed(task);
            self.forward_update(status);
        }
    }

    /// Kills tasks that ran past their run deadline.
    pub(super) fn enforce_run_deadlines(&mut self) {
        let now = self.unix_time();
        let late: Vec<((FrameworkId, TaskId), f64)> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.info.max_run_secs > 0.0
                    && !t.kill_requested
                    && now - t.launched_at >= t.info.max_run_secs
            })
            .map(|(k, t)| (k.clone(), t.info.max_run_secs))
            .collect();
        for (key, secs) in late {
            tracing::info!(task_id = %key.1, framework_id = %key.0, "run deadline passed; killing the task");
            self.send_kill_because(
                &key,
                None,
                TaskReason::DeadlineExceeded,
                format!("ran past its run deadline of {secs}s"),
            );
        }
    }
}
