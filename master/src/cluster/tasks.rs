//! A task's state as the leader keeps it: updates the master makes itself,
//! each task's record and short history, the resources held while a kill
//! is under way, and forwarding updates to frameworks until acknowledged.

use mezz_proto::v1::{
    event, Event, ReplicatedCommand, StatusSource, TaskInfo, TaskReason, TaskState,
    TaskStateChange, TaskStatus,
};
use mezz_proto::{AgentId, FrameworkId, Resources, TaskId};

use super::{Cluster, Effect, Set, Task, TASK_HISTORY_KEPT};

impl Cluster {
    /// Makes a master-generated status update for a task.
    pub(super) fn master_status(
        &mut self,
        task: &Task,
        state: TaskState,
        reason: TaskReason,
        message: String,
        with_uuid: bool,
    ) -> TaskStatus {
        TaskStatus {
            task_id: task.info.task_id.clone(),
            framework_id: task.framework_id.0.clone(),
            agent_id: task.agent_id.0.clone(),
            state: state as i32,
            reason: reason as i32,
            message,
            timestamp: self.unix_time(),
            uuid: if with_uuid {
                self.next_id("u")
            } else {
                String::new()
            },
            exit_code: None,
            signal: None,
            source: StatusSource::Master as i32,
            healthy: None,
            cpu_seconds: None,
            peak_memory_bytes: None,
            gpu_utilization_pct: None,
            gpu_peak_memory_mb: None,
        }
    }

    /// Records a new state for an active task; a terminal state frees its
    /// resources and moves it to the completed list.
    pub(super) fn set_task_status(&mut self, key: &(FrameworkId, TaskId), status: TaskStatus) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let previous = std::mem::replace(&mut task.status, status);
        let current = task.status.clone();
        self.record_change(key, &previous);
        self.record_change(key, &current);
        let state = current.state();
        if !state.is_terminal() {
            return;
        }
        let Some(task) = self.tasks.remove(key) else {
            return;
        };
        *self
            .counters
            .terminal
            .entry(state.short_name())
            .or_default() += 1;
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.used.subtract(&task.resources);
        }
        if let Some(fw) = self.frameworks.get_mut(&task.framework_id) {
            fw.used.subtract(&task.resources);
        }
        self.dirty_agents.insert(task.agent_id.clone());
        self.dirty_frameworks.insert(task.framework_id.clone());
        self.remember_completed(task);
    }

    /// Keeps `resources` taken on `agent_id` while the agent kills a task
    /// the master no longer tracks.
    pub(super) fn hold_while_killing(
        &mut self,
        agent_id: &AgentId,
        key: &(FrameworkId, TaskId),
        resources: &Resources,
    ) {
        if let Some(agent) = self.agents.get_mut(agent_id) {
            if !agent.killing.contains_key(key) {
                agent.killing.insert(key.clone(), resources.clone());
                agent.used.add(resources);
                self.dirty_agents.insert(agent_id.clone());
            }
        }
    }

    /// The agent says a task being killed has ended: its resources are
    /// free.
    pub(super) fn release_killed(
        &mut self,
        agent_id: &AgentId,
        key: &(FrameworkId, TaskId),
    ) -> Option<Resources> {
        let agent = self.agents.get_mut(agent_id)?;
        let res = agent.killing.remove(key)?;
        agent.used.subtract(&res);
        self.dirty_agents.insert(agent_id.clone());
        Some(res)
    }

    /// Remembers, for `ps --all` and reconciliation, a task that ended
    /// while this master did not track it, unless already remembered.
    pub(super) fn remember_ended(
        &mut self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        info: TaskInfo,
        resources: Resources,
        status: TaskStatus,
    ) {
        let known = self.completed.has(framework_id, &info.task_id);
        if !known {
            let task = self.task_record(framework_id, agent_id.clone(), info, resources, status);
            self.remember_completed(task);
        }
    }

    /// An agent back from removal whose old tasks are all dead is an
    /// ordinary agent again; the group records it so that no later leader
    /// kills what it runs from now on.
    pub(super) fn maybe_agent_returned(&mut self, agent_id: &AgentId) {
        let settled = self
            .agents
            .get(agent_id)
            .is_some_and(|a| a.conn.is_some() && a.killing.is_empty());
        if settled && self.registry.removed_agents.contains(agent_id) {
            tracing::info!(agent_id = %agent_id, "agent back from removal has no old tasks left");
            self.effects.push(Effect::Propose(ReplicatedCommand {
                command: Some(mezz_proto::v1::replicated_command::Command::AgentReturned(
                    agent_id.0.clone(),
                )),
            }));
        }
    }

    /// A task record, named after its framework (kept so finished tasks
    /// still show it after the framework is gone).
    pub(super) fn task_record(
        &self,
        framework_id: &FrameworkId,
        agent_id: AgentId,
        info: TaskInfo,
        resources: Resources,
        status: TaskStatus,
    ) -> Task {
        let framework = self.frameworks.get(framework_id);
        Task {
            framework_name: framework.map(|f| f.info.name.clone()).unwrap_or_default(),
            framework_role: framework.map(|f| f.info.role.clone()).unwrap_or_default(),
            info,
            framework_id: framework_id.clone(),
            agent_id,
            resources,
            status,
            launched_at: self.unix_time(),
            kill_requested: false,
        }
    }

    /// Appends `status` to the task's history unless it repeats the last
    /// state seen.
    pub(super) fn record_change(&mut self, key: &(FrameworkId, TaskId), status: &TaskStatus) {
        let h = self.history.entry(key.clone()).or_default();
        let state = status.state().short_name();
        if h.back().is_some_and(|last| last.state == state) {
            return;
        }
        h.push_back(TaskStateChange {
            state: state.to_string(),
            timestamp: status.timestamp,
            reason: status.reason().short_name().to_string(),
            message: status.message.clone(),
        });
        while h.len() > TASK_HISTORY_KEPT {
            h.pop_front();
        }
    }

    /// Drops the history of tasks the master no longer remembers, once it
    /// holds twice as many entries as there are tasks (amortised O(1)).
    pub(super) fn prune_history(&mut self) {
        let live = self.tasks.len() + self.completed.len();
        if self.history.len() <= 2 * live + 64 {
            return;
        }
        let keep: Set<(FrameworkId, TaskId)> = self
            .tasks
            .keys()
            .cloned()
            .chain(
                self.completed
                    .iter()
                    .map(|t| (t.framework_id.clone(), TaskId(t.info.task_id.clone()))),
            )
            .collect();
        self.history.retain(|k, _| keep.contains(k));
    }

    /// Sends a status update to its framework and keeps it until
    /// acknowledged (when it carries a uuid).
    pub(super) fn forward_update(&mut self, status: TaskStatus) {
        let fid = FrameworkId(status.framework_id.clone());
        let Some(fw) = self.frameworks.get_mut(&fid) else {
            return;
        };
        if !status.uuid.is_empty() {
            fw.unacked.insert(status.clone());
        }
        if let Some(conn) = fw.conn {
            self.effects.push(Effect::ToFramework(
                conn,
                Event {
                    event: Some(event::Event::Update(mezz_proto::v1::Update {
                        status: Some(status),
                    })),
                },
            ));
        }
    }
}
