//! The tasks a master tracks (not yet ended), by (framework, task id) and
//! by agent.
//!
//! An agent's registration asks which tracked tasks it did not report,
//! and an agent's removal which tasks it ran; without the index by agent
//! each question was a scan of every task in the cluster, so a leader
//! taking back 10,000 agents with 100,000 tasks compared a billion agent
//! ids and fell behind its agents' registration timeouts.

use std::ops::Deref;

use mezz_proto::{AgentId, FrameworkId, TaskId};

use super::{Map, Set, Task};

/// A task's key: (framework, task id).
pub(crate) type TaskKey = (FrameworkId, TaskId);

/// Tracked tasks. Reads go through `Deref` to the map; changes go through
/// [`TaskTable::insert`], [`TaskTable::remove`] and
/// [`TaskTable::get_mut`], which keep the index by agent.
#[derive(Debug, Default)]
pub(crate) struct TaskTable {
    tasks: Map<TaskKey, Task>,
    by_agent: Map<AgentId, Set<TaskKey>>,
}

impl TaskTable {
    /// Tracks `task` under `key`, replacing (and unindexing) any task of
    /// that key.
    pub fn insert(&mut self, key: TaskKey, task: Task) {
        self.by_agent
            .entry(task.agent_id.clone())
            .or_default()
            .insert(key.clone());
        if let Some(old) = self.tasks.insert(key.clone(), task) {
            if old.agent_id != self.tasks[&key].agent_id {
                self.unindex(&old.agent_id, &key);
            }
        }
    }

    /// Stops tracking `key`; gives its task back.
    pub fn remove(&mut self, key: &TaskKey) -> Option<Task> {
        let task = self.tasks.remove(key)?;
        self.unindex(&task.agent_id, key);
        Some(task)
    }

    /// The task of `key`, to change. Its `agent_id` must stay as it is
    /// (a task never moves; the index by agent relies on it).
    pub fn get_mut(&mut self, key: &TaskKey) -> Option<&mut Task> {
        self.tasks.get_mut(key)
    }

    /// The keys of the tasks tracked on `agent`.
    pub fn on_agent(&self, agent: &AgentId) -> impl Iterator<Item = &TaskKey> {
        self.by_agent.get(agent).into_iter().flatten()
    }

    fn unindex(&mut self, agent: &AgentId, key: &TaskKey) {
        if let Some(keys) = self.by_agent.get_mut(agent) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_agent.remove(agent);
            }
        }
    }
}

impl Deref for TaskTable {
    type Target = Map<TaskKey, Task>;

    fn deref(&self) -> &Self::Target {
        &self.tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::v1::{TaskInfo, TaskStatus};

    fn task(fw: &str, id: &str, agent: &str) -> (TaskKey, Task) {
        let key = (FrameworkId(fw.into()), TaskId(id.into()));
        let task = Task {
            info: TaskInfo {
                task_id: id.into(),
                ..Default::default()
            },
            framework_id: key.0.clone(),
            framework_name: fw.into(),
            framework_role: "*".into(),
            agent_id: AgentId(agent.into()),
            resources: Default::default(),
            status: TaskStatus::default(),
            launched_at: 0.0,
            kill_requested: false,
        };
        (key, task)
    }

    fn on(table: &TaskTable, agent: &str) -> Vec<String> {
        let mut ids: Vec<String> = table
            .on_agent(&AgentId(agent.into()))
            .map(|k| format!("{}/{}", k.0 .0, k.1 .0))
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_index_by_agent_follows_inserts_replacements_and_removals() {
        let mut t = TaskTable::default();
        for (fw, id, agent) in [("f1", "t1", "a1"), ("f1", "t2", "a1"), ("f2", "t1", "a2")] {
            let (k, v) = task(fw, id, agent);
            t.insert(k, v);
        }
        assert_eq!(on(&t, "a1"), ["f1/t1", "f1/t2"]);
        assert_eq!(on(&t, "a2"), ["f2/t1"]);
        assert!(on(&t, "a3").is_empty());
        // The same key again, on another agent (a task id used again
        // after its task ended elsewhere): indexed there only.
        let (k, v) = task("f1", "t2", "a2");
        t.insert(k.clone(), v);
        assert_eq!(on(&t, "a1"), ["f1/t1"]);
        assert_eq!(on(&t, "a2"), ["f1/t2", "f2/t1"]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.remove(&k).map(|t| t.agent_id), Some(AgentId("a2".into())));
        assert!(t.remove(&k).is_none());
        assert_eq!(on(&t, "a2"), ["f2/t1"]);
        let (k, _) = task("f2", "t1", "a2");
        t.remove(&k);
        assert!(on(&t, "a2").is_empty());
        assert!(
            !t.by_agent.contains_key(&AgentId("a2".into())),
            "emptied entries go"
        );
    }
}
