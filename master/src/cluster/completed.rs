//! The finished tasks a master keeps, newest first, with an index by
//! framework and task id.
//!
//! Registrations and status updates ask "did this task already end?" for
//! every task an agent reports; without the index each question was a scan
//! of the whole list (a thousand tasks by default), which dominated a
//! leader taking back thousands of agents.

use std::collections::VecDeque;

use mezz_proto::{AgentId, FrameworkId, TaskId};

use super::{Map, Task};

/// Finished tasks, newest first.
#[derive(Debug, Default)]
pub(crate) struct Completed {
    list: VecDeque<Task>,
    /// How many entries of `list` have each (framework, task) id: a task id
    /// may be used again once its task ended.
    index: Map<(FrameworkId, TaskId), u32>,
}

fn key(t: &Task) -> (FrameworkId, TaskId) {
    (t.framework_id.clone(), TaskId(t.info.task_id.clone()))
}

impl Completed {
    /// Adds the newest finished task.
    pub fn push_front(&mut self, task: Task) {
        *self.index.entry(key(&task)).or_default() += 1;
        self.list.push_front(task);
    }

    /// Keeps the newest `n`.
    pub fn truncate(&mut self, n: usize) {
        while self.list.len() > n {
            let Some(t) = self.list.pop_back() else { break };
            let k = key(&t);
            if let Some(c) = self.index.get_mut(&k) {
                *c -= 1;
                if *c == 0 {
                    self.index.remove(&k);
                }
            }
        }
    }

    /// Newest first.
    pub fn iter(&self) -> std::collections::vec_deque::Iter<'_, Task> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether a task of this framework and id is among them.
    pub fn has(&self, framework_id: &FrameworkId, task_id: &str) -> bool {
        // Most questions are about tasks that did not end: answered
        // without a scan.
        self.index
            .contains_key(&(framework_id.clone(), TaskId(task_id.to_string())))
    }

    /// The newest of them with this framework and id.
    pub fn find(&self, framework_id: &FrameworkId, task_id: &str) -> Option<&Task> {
        if !self.has(framework_id, task_id) {
            return None;
        }
        self.list
            .iter()
            .find(|c| c.framework_id == *framework_id && c.info.task_id == task_id)
    }

    /// Whether this task ended on `agent_id`.
    pub fn ended_on(&self, framework_id: &FrameworkId, task_id: &str, agent_id: &AgentId) -> bool {
        self.has(framework_id, task_id)
            && self.list.iter().any(|c| {
                c.framework_id == *framework_id
                    && c.info.task_id == task_id
                    && c.agent_id == *agent_id
            })
    }
}

impl FromIterator<Task> for Completed {
    /// From tasks newest first.
    fn from_iter<I: IntoIterator<Item = Task>>(tasks: I) -> Completed {
        let mut c = Completed::default();
        for t in tasks {
            *c.index.entry(key(&t)).or_default() += 1;
            c.list.push_back(t);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(fw: &str, id: &str, agent: &str) -> Task {
        Task {
            info: mezz_proto::v1::TaskInfo {
                task_id: id.into(),
                ..Default::default()
            },
            framework_id: FrameworkId(fw.into()),
            framework_name: String::new(),
            framework_role: String::new(),
            agent_id: AgentId(agent.into()),
            resources: Default::default(),
            status: Default::default(),
            launched_at: 0.0,
            kill_requested: false,
        }
    }

    #[test]
    fn the_index_follows_the_list_through_pushes_cuts_and_reused_ids() {
        let f = FrameworkId("f".into());
        let mut c = Completed::default();
        c.push_front(task("f", "t", "a1"));
        c.push_front(task("f", "u", "a1"));
        // The same id again, ended on another agent.
        c.push_front(task("f", "t", "a2"));
        assert!(c.has(&f, "t") && c.has(&f, "u"));
        assert!(!c.has(&FrameworkId("g".into()), "t"));
        assert!(c.ended_on(&f, "t", &AgentId("a1".into())));
        assert!(c.ended_on(&f, "t", &AgentId("a2".into())));
        assert_eq!(c.find(&f, "t").unwrap().agent_id.0, "a2", "the newest");
        // Cutting the oldest "t" keeps the newer one.
        c.truncate(2);
        assert!(c.has(&f, "t"));
        assert!(!c.ended_on(&f, "t", &AgentId("a1".into())));
        c.truncate(1);
        assert!(!c.has(&f, "u"));
        assert_eq!(c.index.len(), 1);
        c.truncate(0);
        assert!(c.index.is_empty() && c.is_empty());
        let back: Completed = vec![task("f", "x", "a"), task("f", "x", "b")]
            .into_iter()
            .collect();
        assert_eq!(back.find(&f, "x").unwrap().agent_id.0, "a");
        assert_eq!(back.index[&(f.clone(), TaskId("x".into()))], 2);
    }
}
