//! Task tracking: the tasks a framework wants, the latest status of each,
//! and the retry policy frameworks keep rewriting (restart a failed task up
//! to N times, with exponential backoff). Pure: statuses and the time in,
//! decisions out; launching and waking up stay with the scheduler.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::proto;
use crate::{AgentId, TaskId, TaskState};

/// When to restart a task that failed.
///
/// ```
/// use std::time::Duration;
/// use mezz_sdk::RetryPolicy;
/// let policy = RetryPolicy::up_to(3).backoff(Duration::from_secs(1), Duration::from_secs(5));
/// assert_eq!(policy.delay(1), Duration::from_secs(1));
/// assert_eq!(policy.delay(3), Duration::from_secs(4));
/// assert_eq!(policy.delay(9), Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Restarts allowed after the first attempt.
    pub max_restarts: u32,
    /// The wait before the first restart; it doubles for each next one.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::up_to(0)
    }
}

impl RetryPolicy {
    /// Never restart.
    pub fn never() -> Self {
        RetryPolicy::up_to(0)
    }

    /// Restart up to `n` times, waiting 1 s, 2 s, 4 s, … up to 60 s.
    pub fn up_to(n: u32) -> Self {
        RetryPolicy {
            max_restarts: n,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }

    /// Sets the backoff's first wait and its ceiling.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// The wait before restart number `restart` (1 for the first).
    pub fn delay(&self, restart: u32) -> Duration {
        let doublings = restart.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// Where a tracked task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// To be launched (first time, or after a failure once its backoff
    /// passed).
    Waiting,
    /// Launched; not running yet.
    Launched,
    /// Running.
    Running,
    /// Finished successfully. Final.
    Finished,
    /// Killed on request. Final.
    Killed,
    /// Failed with no restart left. Final.
    Failed,
}

impl Phase {
    /// True for the phases that never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Finished | Phase::Killed | Phase::Failed)
    }
}

/// One task the framework wants, across its attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackedTask {
    /// The framework's name for it; attempts are named `KEY.N`.
    pub key: String,
    /// Where it is.
    pub phase: Phase,
    /// The current (or last) attempt, from 0.
    pub attempt: u32,
    /// The task id of the current attempt, once launched or learnt.
    pub task_id: Option<TaskId>,
    /// Where the current attempt runs.
    pub agent_id: Option<AgentId>,
    /// The latest status of the current attempt.
    pub latest: Option<proto::TaskStatus>,
    /// Restarts used so far.
    pub restarts: u32,
    /// When it may be launched again, after a failure.
    pub retry_at: Option<Instant>,
}

/// What a status update meant for a tracked task.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The task runs.
    Running,
    /// It finished successfully.
    Finished,
    /// It was killed on request; not restarted.
    Killed,
    /// It failed and will be launched again once `at` passed (see
    /// [`TaskTracker::due`]).
    Restart {
        /// When it may be launched again.
        at: Instant,
    },
    /// It failed with no restart left.
    GaveUp,
}

/// A small store of a framework's tasks and their latest status, with a
/// [`RetryPolicy`].
///
/// Each wanted task has a key; its attempts get task ids `KEY.0`, `KEY.1`,
/// … so a scheduler that restarts (and fails over with
/// [`DriverBuilder::framework_id_file`](crate::DriverBuilder::framework_id_file))
/// recognises its running tasks in the reconciliation answers: call
/// [`TaskTracker::recover_until`] on such a start so nothing is launched
/// twice while the answers arrive.
///
/// ```
/// use std::time::{Duration, Instant};
/// use mezz_sdk::{proto, Change, RetryPolicy, TaskState, TaskTracker};
///
/// let mut tasks = TaskTracker::new(RetryPolicy::up_to(1));
/// tasks.add("worker");
/// let now = Instant::now();
/// assert_eq!(tasks.due(now), vec!["worker".to_string()]);
/// let id = tasks.launched("worker", None).unwrap();
/// assert_eq!(id.as_str(), "worker.0");
///
/// let failed = proto::TaskStatus {
///     task_id: id.0.clone(),
///     state: TaskState::Failed as i32,
///     ..Default::default()
/// };
/// let Some(Change::Restart { at }) = tasks.update(&failed, now) else { panic!() };
/// assert!(tasks.due(now).is_empty());
/// assert_eq!(tasks.due(at), vec!["worker".to_string()]);
/// assert_eq!(tasks.launched("worker", None).unwrap().as_str(), "worker.1");
/// ```
#[derive(Clone, Debug, Default)]
pub struct TaskTracker {
    policy: RetryPolicy,
    tasks: BTreeMap<String, TrackedTask>,
    by_id: HashMap<TaskId, String>,
    recover_until: Option<Instant>,
}

impl TaskTracker {
    /// An empty store with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        TaskTracker {
            policy,
            ..Default::default()
        }
    }

    /// Wants a task named `key` (no-op when it is tracked already).
    pub fn add(&mut self, key: impl Into<String>) {
        let key = key.into();
        self.tasks.entry(key.clone()).or_insert(TrackedTask {
            key,
            phase: Phase::Waiting,
            attempt: 0,
            task_id: None,
            agent_id: None,
            latest: None,
            restarts: 0,
            retry_at: None,
        });
    }

    /// After a failover: launch nothing before `deadline` unless every
    /// task's current attempt is known by then, so the reconciliation
    /// answers can tell which tasks still run.
    pub fn recover_until(&mut self, deadline: Instant) {
        self.recover_until = Some(deadline);
    }

    /// True while [`TaskTracker::recover_until`] holds launches back.
    pub fn recovering(&self, now: Instant) -> bool {
        self.recover_until.is_some_and(|d| now < d)
            && self.tasks.values().any(|t| t.task_id.is_none())
    }

    /// Keys to launch now, in key order.
    pub fn due(&self, now: Instant) -> Vec<String> {
        if self.recovering(now) {
            return Vec::new();
        }
        self.tasks
            .values()
            .filter(|t| t.phase == Phase::Waiting && t.retry_at.is_none_or_before(now))
            .map(|t| t.key.clone())
            .collect()
    }

    /// The earliest pending restart, to ask a wake-up for.
    pub fn next_retry(&self) -> Option<Instant> {
        self.tasks
            .values()
            .filter(|t| t.phase == Phase::Waiting)
            .filter_map(|t| t.retry_at)
            .min()
    }

    /// Records that `key`'s next attempt is being launched (on `agent_id`,
    /// when known) and returns its task id; `None` when `key` is not
    /// waiting.
    pub fn launched(&mut self, key: &str, agent_id: Option<AgentId>) -> Option<TaskId> {
        let task = self.tasks.get_mut(key)?;
        if task.phase != Phase::Waiting {
            return None;
        }
        if task.task_id.is_some() {
            task.attempt += 1;
        }
        let id = TaskId(format!("{key}.{}", task.attempt));
        task.task_id = Some(id.clone());
        task.agent_id = agent_id;
        task.phase = Phase::Launched;
        task.latest = None;
        task.retry_at = None;
        self.by_id.insert(id.clone(), key.to_string());
        Some(id)
    }

    /// Takes a status update (also a reconciliation answer for an attempt
    /// this store did not launch, e.g. before a restart) and applies the
    /// retry policy. `None` when it changes nothing: an update of an old
    /// attempt, a repeat, or a task this store does not track.
    pub fn update(&mut self, status: &proto::TaskStatus, now: Instant) -> Option<Change> {
        let id = TaskId(status.task_id.clone());
        let key = match self.by_id.get(&id) {
            Some(key) => key.clone(),
            None => self.adopt(&id)?,
        };
        let policy = self.policy;
        let task = self.tasks.get_mut(&key)?;
        if task.task_id.as_ref() != Some(&id) || task.phase.is_final() {
            return None;
        }
        if !status.agent_id.is_empty() {
            task.agent_id = Some(AgentId(status.agent_id.clone()));
        }
        task.latest = Some(status.clone());
        let state = status.state();
        match state {
            TaskState::Running if task.phase != Phase::Running => {
                task.phase = Phase::Running;
                Some(Change::Running)
            }
            TaskState::Finished => {
                task.phase = Phase::Finished;
                Some(Change::Finished)
            }
            TaskState::Killed => {
                task.phase = Phase::Killed;
                Some(Change::Killed)
            }
            // The master does not know the attempt: it is gone.
            s if s.is_terminal() || s == TaskState::Unknown => {
                if task.phase == Phase::Waiting {
                    return None;
                }
                if task.restarts >= policy.max_restarts {
                    task.phase = Phase::Failed;
                    return Some(Change::GaveUp);
                }
                task.restarts += 1;
                let at = now + policy.delay(task.restarts);
                task.phase = Phase::Waiting;
                task.retry_at = Some(at);
                Some(Change::Restart { at })
            }
            _ => None,
        }
    }

    /// Claims an attempt id `KEY.N` of a tracked key that this store has
    /// not launched (it was launched before a restart), when it is not
    /// older than what the store knows.
    fn adopt(&mut self, id: &TaskId) -> Option<String> {
        let (key, attempt) = id.0.rsplit_once('.')?;
        let attempt: u32 = attempt.parse().ok()?;
        let task = self.tasks.get_mut(key)?;
        let newer = match &task.task_id {
            None => true,
            Some(_) => attempt > task.attempt,
        };
        if !newer {
            return None;
        }
        task.attempt = attempt;
        task.task_id = Some(id.clone());
        task.phase = Phase::Launched;
        task.retry_at = None;
        self.by_id.insert(id.clone(), key.to_string());
        Some(key.to_string())
    }

    /// A tracked task by key.
    pub fn get(&self, key: &str) -> Option<&TrackedTask> {
        self.tasks.get(key)
    }

    /// The key of an attempt's task id.
    pub fn key_of(&self, task_id: &TaskId) -> Option<&str> {
        self.by_id.get(task_id).map(String::as_str)
    }

    /// Every tracked task, in key order.
    pub fn tasks(&self) -> impl Iterator<Item = &TrackedTask> {
        self.tasks.values()
    }

    /// True when every task reached a final phase.
    pub fn is_done(&self) -> bool {
        self.tasks.values().all(|t| t.phase.is_final())
    }

    /// The current attempts, for an explicit [`Driver::reconcile`](crate::Driver::reconcile).
    pub fn reconcile_tasks(&self) -> Vec<proto::ReconcileTask> {
        self.tasks
            .values()
            .filter(|t| !t.phase.is_final())
            .filter_map(|t| {
                Some(proto::ReconcileTask {
                    task_id: t.task_id.as_ref()?.0.clone(),
                    agent_id: t.agent_id.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// `Option<Instant>` read as "no later than": `None` is always due.
trait DueBy {
    fn is_none_or_before(&self, now: Instant) -> bool;
}

impl DueBy for Option<Instant> {
    fn is_none_or_before(&self, now: Instant) -> bool {
        match self {
            None => true,
            Some(at) => *at <= now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, state: TaskState) -> proto::TaskStatus {
        proto::TaskStatus {
            task_id: id.into(),
            agent_id: "a1".into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn restarts_up_to_the_limit_with_backoff() {
        let policy = RetryPolicy::up_to(2).backoff(Duration::from_secs(1), Duration::from_secs(10));
        let mut t = TaskTracker::new(policy);
        t.add("w");
        let now = Instant::now();
        let id0 = t.launched("w", None).expect("waiting");
        assert_eq!(
            t.update(&status(&id0.0, TaskState::Running), now),
            Some(Change::Running)
        );
        assert_eq!(t.update(&status(&id0.0, TaskState::Running), now), None);
        let Some(Change::Restart { at }) = t.update(&status(&id0.0, TaskState::Failed), now) else {
            panic!("expected a restart");
        };
        assert_eq!(at, now + Duration::from_secs(1));
        // A repeated terminal update (reconciliation) is not a second failure.
        assert_eq!(t.update(&status(&id0.0, TaskState::Failed), now), None);
        assert_eq!(t.next_retry(), Some(at));
        let id1 = t.launched("w", None).expect("waiting");
        assert_eq!(id1.as_str(), "w.1");
        let Some(Change::Restart { at }) = t.update(&status(&id1.0, TaskState::Lost), now) else {
            panic!("expected a restart");
        };
        assert_eq!(at, now + Duration::from_secs(2));
        let id2 = t.launched("w", None).expect("waiting");
        assert_eq!(
            t.update(&status(&id2.0, TaskState::Error), now),
            Some(Change::GaveUp)
        );
        assert_eq!(t.get("w").map(|w| w.phase), Some(Phase::Failed));
        assert!(t.is_done());
        // Old attempts change nothing.
        assert_eq!(t.update(&status(&id0.0, TaskState::Running), now), None);
    }

    #[test]
    fn a_restarted_framework_adopts_its_running_tasks() {
        let mut t = TaskTracker::new(RetryPolicy::never());
        t.add("a");
        t.add("b");
        let now = Instant::now();
        t.recover_until(now + Duration::from_secs(5));
        assert!(t.due(now).is_empty());
        assert_eq!(
            t.update(&status("a.3", TaskState::Running), now),
            Some(Change::Running)
        );
        assert!(t.due(now).is_empty(), "b is not known yet");
        assert_eq!(t.due(now + Duration::from_secs(5)), vec!["b".to_string()]);
        assert_eq!(t.get("a").map(|a| a.attempt), Some(3));
        assert_eq!(t.update(&status("a.2", TaskState::Failed), now), None);
        assert_eq!(t.update(&status("zzz.1", TaskState::Running), now), None);
        assert_eq!(t.reconcile_tasks().len(), 1);
        assert_eq!(t.launched("a", None), None, "a runs");
    }

    #[test]
    fn kills_and_finishes_are_final() {
        let mut t = TaskTracker::new(RetryPolicy::up_to(5));
        t.add("k");
        t.add("f");
        let now = Instant::now();
        let k = t.launched("k", None).expect("waiting");
        let f = t.launched("f", None).expect("waiting");
        assert_eq!(
            t.update(&status(&k.0, TaskState::Killed), now),
            Some(Change::Killed)
        );
        assert_eq!(
            t.update(&status(&f.0, TaskState::Finished), now),
            Some(Change::Finished)
        );
        assert!(t.is_done());
        assert!(t.due(now).is_empty());
    }
}
