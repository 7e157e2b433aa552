//! The history of finished tasks (`mezz ps --all`, reconciliation of ended
//! tasks): kept by the leader as tasks end, and replicated through raft so
//! that any later leader, and a whole cluster after a restart, shows the
//! same list with the same framework names, states and times.
//!
//! The cost on the launch path stays low: tasks that end while the shell
//! settles once go out in a single command, holding each task's program and
//! arguments but never its environment.

use mezz_proto::v1::{
    replicated_command::Command, CommandInfo, FinishedTask, FinishedTasks, ReplicatedCommand,
    TaskInfo,
};
use mezz_proto::{AgentId, FrameworkId, Resources, TaskId};

use super::{Cluster, Effect, Task};

impl Cluster {
    /// How many finished tasks this master keeps (at least one).
    pub fn set_finished_kept(&mut self, n: usize) {
        let n = n.max(1);
        self.registry.finished_kept = n;
        self.registry.finished.truncate(n);
        self.completed.truncate(n);
        self.prune_history();
    }

    /// Keeps a finished task for `ps --all` and reconciliation, and queues
    /// it for replication; the list (and the state histories with it) stays
    /// bounded.
    pub(super) fn remember_completed(&mut self, task: Task) {
        let record_id = self.next_id("h");
        let key = (task.framework_id.clone(), TaskId(task.info.task_id.clone()));
        let history = self
            .history
            .get(&key)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default();
        self.finished_outbox.push(FinishedTask {
            framework_id: task.framework_id.0.clone(),
            framework_name: task.framework_name.clone(),
            framework_role: task.framework_role.clone(),
            agent_id: task.agent_id.0.clone(),
            task: Some(public_part(&task.info, &task.resources)),
            status: Some(task.status.clone()),
            launched_at: task.launched_at,
            history,
            record_id: record_id.clone(),
        });
        self.finished_proposed.insert(record_id);
        self.completed.push_front(task);
        self.completed.truncate(self.registry.finished_kept);
        self.prune_history();
    }

    /// Proposes what finished since the last call, in one command. Only
    /// the newest `finished_kept` matter: older ones would be cut at once.
    pub(super) fn propose_finished(&mut self) {
        if self.finished_outbox.is_empty() {
            return;
        }
        let mut tasks = std::mem::take(&mut self.finished_outbox);
        let kept = self.registry.finished_kept;
        if tasks.len() > kept {
            let cut: Vec<FinishedTask> = tasks.drain(..tasks.len() - kept).collect();
            for t in cut {
                self.finished_proposed.remove(&t.record_id);
            }
        }
        self.effects.push(Effect::Propose(ReplicatedCommand {
            command: Some(Command::TasksFinished(FinishedTasks { tasks })),
        }));
    }

    /// Finished tasks came back applied: those another leader (or another
    /// incarnation of this one) ended join the list; this instance's own
    /// are there already.
    pub(super) fn apply_finished(&mut self, batch: &FinishedTasks) {
        for t in &batch.tasks {
            if self.finished_proposed.remove(&t.record_id) {
                continue;
            }
            let task = self.task_from_record(t);
            self.completed.push_front(task);
        }
        self.completed.truncate(self.registry.finished_kept);
        self.prune_history();
    }

    /// Rebuilds the list from the registry (a new leader, a start, a
    /// snapshot from the leader).
    pub(super) fn restore_finished(&mut self) {
        self.finished_proposed.clear();
        self.finished_outbox.clear();
        let records: Vec<FinishedTask> = self.registry.finished.iter().cloned().collect();
        self.completed = records.iter().map(|t| self.task_from_record(t)).collect();
        self.prune_history();
    }

    /// A record as a task of the completed list, its history restored.
    fn task_from_record(&mut self, t: &FinishedTask) -> Task {
        let info = t.task.clone().unwrap_or_default();
        let key = (
            FrameworkId(t.framework_id.clone()),
            TaskId(info.task_id.clone()),
        );
        if !t.history.is_empty() {
            self.history
                .insert(key.clone(), t.history.iter().cloned().collect());
        }
        Task {
            resources: Resources::from_proto(&info.resources).unwrap_or_default(),
            info,
            framework_id: key.0,
            framework_name: t.framework_name.clone(),
            framework_role: t.framework_role.clone(),
            agent_id: AgentId(t.agent_id.clone()),
            status: t.status.clone().unwrap_or_default(),
            launched_at: t.launched_at,
            kill_requested: false,
        }
    }
}

/// What of a task is kept once it ended: what `ps` shows, not its
/// environment, user, labels or health check.
fn public_part(info: &TaskInfo, resources: &Resources) -> TaskInfo {
    TaskInfo {
        task_id: info.task_id.clone(),
        name: info.name.clone(),
        agent_id: info.agent_id.clone(),
        resources: resources.to_proto(),
        command: info.command.as_ref().map(|c| CommandInfo {
            value: c.value.clone(),
            arguments: c.arguments.clone(),
            shell: c.shell,
            ..Default::default()
        }),
        ..Default::default()
    }
}
