//! One simulated agent's state, as a sans-I/O core: what it runs, the
//! status updates it owes the master and which of them are acknowledged.
//! It follows the real agent (`mezz-agent`) message for message: a launch
//! becomes RUNNING at once (the task is a timer, not a process), the end of
//! the timer FINISHED, a kill KILLED, a kill of an unknown task LOST; every
//! update carries a fresh uuid and is held until its `StatusAck`, re-sent on
//! a new stream and when overdue; an acknowledged terminal update forgets
//! the run. It keeps everything in memory: a restart of the simulator is a
//! fresh set of machines. No sockets or clocks here: the shell passes time
//! in and carries out what comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mezz_proto::v1::{
    AgentInfo, AgentTask, FrameworkInfo, KillTask, LaunchTask, RegisterAgent, StatusAck,
    StatusSource, TaskInfo, TaskReason, TaskState, TaskStatus,
};

/// (framework id, task id).
pub type Key = (String, String);

/// The label a load framework sets to say how long its task runs on a
/// simulated agent, in milliseconds; without it the agent draws a run time
/// from its own `--task-time`.
pub const RUN_MS_LABEL: &str = "mezz-sim/run-ms";

struct Run {
    framework: FrameworkInfo,
    task: TaskInfo,
    latest: TaskStatus,
}

struct Pending {
    status: TaskStatus,
    sent_gen: u64,
    sent_at: Option<Instant>,
}

/// What a `LaunchTask` asks of the shell.
#[derive(Debug, PartialEq)]
pub enum Launched {
    /// Start a timer: after this long, call [`SimAgent::finish`].
    Timer(Key, Option<Duration>),
    /// Refused (an ERROR update is queued); nothing to start.
    Refused,
}

/// A simulated agent.
pub struct SimAgent {
    info: AgentInfo,
    secret: String,
    runs: BTreeMap<Key, Run>,
    unacked: BTreeMap<u64, Pending>,
    next_seq: u64,
}

impl SimAgent {
    /// An agent that registers as `info` and proves it with `secret` (64
    /// hex digits, as a real agent's).
    pub fn new(info: AgentInfo, secret: String) -> SimAgent {
        SimAgent {
            info,
            secret,
            runs: BTreeMap::new(),
            unacked: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Tasks not yet in a terminal state.
    pub fn active(&self) -> usize {
        self.runs
            .values()
            .filter(|r| !r.latest.state().is_terminal())
            .count()
    }

    /// Updates the master has not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// The first message of every stream: who the agent is and every run
    /// it still holds, with the frameworks of those runs.
    pub fn register_message(&self) -> RegisterAgent {
        let mut frameworks: BTreeMap<String, FrameworkInfo> = BTreeMap::new();
        let tasks = self
            .runs
            .iter()
            .map(|((fw, _), run)| {
                frameworks
                    .entry(fw.clone())
                    .or_insert_with(|| run.framework.clone());
                AgentTask {
                    framework_id: fw.clone(),
                    task: Some(run.task.clone()),
                    latest_status: Some(run.latest.clone()),
                    launched_at: 0.0,
                }
            })
            .collect();
        RegisterAgent {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            agent: Some(self.info.clone()),
            tasks,
            frameworks: frameworks.into_values().collect(),
            secret: self.secret.clone(),
        }
    }

    /// Stamps and queues an update; with `record` the run takes it as its
    /// latest status (a refused duplicate launch must not touch the run
    /// already active under the same key).
    fn emit(&mut self, key: &Key, status: (TaskState, TaskReason, &str), now: f64, record: bool) {
        let (state, reason, message) = status;
        let mut status = TaskStatus {
            task_id: key.1.clone(),
            framework_id: key.0.clone(),
            agent_id: self.info.id.clone(),
            message: message.to_string(),
            timestamp: now,
            uuid: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        status.set_state(state);
        status.set_reason(reason);
        status.set_source(StatusSource::Agent);
        if let Some(run) = self.runs.get_mut(key).filter(|_| record) {
            run.latest = status.clone();
        }
        self.next_seq += 1;
        self.unacked.insert(
            self.next_seq,
            Pending {
                status,
                sent_gen: 0,
                sent_at: None,
            },
        );
    }

    /// `LaunchTask`: the run starts at once and is RUNNING. `now` is the
    /// wall clock in seconds since the Unix epoch (the updates' timestamp).
    pub fn launch(&mut self, launch: LaunchTask, now: f64) -> Launched {
        let framework = launch.framework.unwrap_or_default();
        let task = launch.task.unwrap_or_default();
        let key: Key = (framework.id.clone(), task.task_id.clone());
        let active = self
            .runs
            .get(&key)
            .is_some_and(|r| !r.latest.state().is_terminal());
        let why = if framework.id.is_empty() || task.task_id.is_empty() {
            Some("a launch needs a framework id and a task id".to_string())
        } else if active {
            Some(format!(
                "task '{}' of framework '{}' is already active on this agent; task ids must be unique within a framework",
                key.1, key.0
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.emit(
                &key,
                (TaskState::Error, TaskReason::InvalidTask, &why),
                now,
                false,
            );
            return Launched::Refused;
        }
        let run_for = task
            .labels
            .get(RUN_MS_LABEL)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis);
        self.runs.insert(
            key.clone(),
            Run {
                framework,
                task,
                latest: TaskStatus::default(),
            },
        );
        self.emit(
            &key,
            (TaskState::Running, TaskReason::Unspecified, ""),
            now,
            true,
        );
        Launched::Timer(key, run_for)
    }

    /// The timer of `key` ran out: FINISHED, unless the run already ended.
    pub fn finish(&mut self, key: &Key, now: f64) {
        if self
            .runs
            .get(key)
            .is_some_and(|r| !r.latest.state().is_terminal())
        {
            self.emit(
                key,
                (
                    TaskState::Finished,
                    TaskReason::Unspecified,
                    "command exited with code 0",
                ),
                now,
                true,
            );
        }
    }

    /// `KillTask`: a timer dies at once, KILLED; a task this agent never
    /// heard of is LOST (as the real agent answers).
    pub fn kill(&mut self, kill: &KillTask, now: f64) {
        let key: Key = (kill.framework_id.clone(), kill.task_id.clone());
        match self.runs.get(&key) {
            Some(run) if run.latest.state().is_terminal() => {}
            Some(_) => {
                // A kill the master decided on its own (a preemption, a run
                // deadline) ends the task with that reason and why, as the
                // real agent's does.
                let (reason, why) = match kill.reason() {
                    r @ (TaskReason::Preempted | TaskReason::DeadlineExceeded) => {
                        (r, kill.message.as_str())
                    }
                    _ => (TaskReason::KilledByRequest, "killed on request"),
                };
                self.emit(&key, (TaskState::Killed, reason, why), now, true)
            }
            None => self.emit(
                &key,
                (TaskState::Lost, TaskReason::Unspecified, "unknown task"),
                now,
                false,
            ),
        }
    }

    /// `ShutdownFramework`: kill all of its runs.
    pub fn shutdown_framework(&mut self, framework_id: &str, now: f64) {
        let keys: Vec<Key> = self
            .runs
            .iter()
            .filter(|((fw, _), r)| fw == framework_id && !r.latest.state().is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        for (fw, task) in keys {
            self.kill(
                &KillTask {
                    framework_id: fw,
                    task_id: task,
                    grace_period_secs: None,
                    reason: TaskReason::FrameworkRemoved as i32,
                    message: String::new(),
                },
                now,
            );
        }
    }

    /// `StatusAck`: drop the update; forget the run once its terminal
    /// update is acknowledged, with any older updates of it.
    pub fn ack(&mut self, ack: &StatusAck) {
        let found = self
            .unacked
            .iter()
            .find(|(_, p)| p.status.uuid == ack.uuid && p.status.task_id == ack.task_id)
            .map(|(seq, _)| *seq);
        if let Some(seq) = found {
            self.unacked.remove(&seq);
        }
        let key: Key = (ack.framework_id.clone(), ack.task_id.clone());
        let terminal_acked = self
            .runs
            .get(&key)
            .is_some_and(|r| r.latest.state().is_terminal() && r.latest.uuid == ack.uuid);
        if terminal_acked {
            self.runs.remove(&key);
            self.unacked
                .retain(|_, p| !(p.status.framework_id == key.0 && p.status.task_id == key.1));
        }
    }

    /// Updates not yet sent on stream generation `gen`, in order; marks
    /// them sent.
    pub fn take_unsent(&mut self, gen: u64, now: Instant) -> Vec<TaskStatus> {
        self.unacked
            .values_mut()
            .filter(|p| p.sent_gen != gen)
            .map(|p| {
                p.sent_gen = gen;
                p.sent_at = Some(now);
                p.status.clone()
            })
            .collect()
    }

    /// Updates sent on `gen` at least `age` ago and still unacknowledged;
    /// marks them sent again.
    pub fn take_overdue(&mut self, gen: u64, age: Duration, now: Instant) -> Vec<TaskStatus> {
        self.unacked
            .values_mut()
            .filter(|p| p.sent_gen == gen && p.sent_at.is_none_or(|t| now.duration_since(t) >= age))
            .map(|p| {
                p.sent_at = Some(now);
                p.status.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> SimAgent {
        SimAgent::new(
            AgentInfo {
                id: "sim-1".into(),
                ..Default::default()
            },
            "ab".repeat(32),
        )
    }

    fn launch(task: &str, labels: &[(&str, &str)]) -> LaunchTask {
        LaunchTask {
            framework: Some(FrameworkInfo {
                id: "fw".into(),
                ..Default::default()
            }),
            task: Some(TaskInfo {
                task_id: task.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn ack_of(s: &TaskStatus) -> StatusAck {
        StatusAck {
            framework_id: s.framework_id.clone(),
            task_id: s.task_id.clone(),
            uuid: s.uuid.clone(),
        }
    }

    #[test]
    fn a_run_goes_running_then_finished_and_is_forgotten_once_acked() {
        let mut a = agent();
        let t0 = Instant::now();
        let l = a.launch(launch("t1", &[(RUN_MS_LABEL, "250")]), 1.0);
        let key = ("fw".to_string(), "t1".to_string());
        assert_eq!(
            l,
            Launched::Timer(key.clone(), Some(Duration::from_millis(250)))
        );
        let sent = a.take_unsent(1, t0);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].state(), TaskState::Running);
        assert_eq!(sent[0].agent_id, "sim-1");
        a.ack(&ack_of(&sent[0]));
        assert_eq!(a.unacked(), 0);
        assert_eq!(a.active(), 1);
        a.finish(&key, 2.0);
        let sent = a.take_unsent(1, t0);
        assert_eq!(sent[0].state(), TaskState::Finished);
        // Unacknowledged, the run is still reported on re-registration.
        assert_eq!(a.register_message().tasks.len(), 1);
        a.ack(&ack_of(&sent[0]));
        assert_eq!(a.register_message().tasks.len(), 0);
        assert_eq!(a.unacked(), 0);
    }

    #[test]
    fn unacknowledged_updates_go_again_on_a_new_stream_and_when_overdue() {
        let mut a = agent();
        let t0 = Instant::now();
        a.launch(launch("t1", &[]), 1.0);
        assert_eq!(a.take_unsent(1, t0).len(), 1);
        assert!(a.take_unsent(1, t0).is_empty());
        assert!(a.take_overdue(1, Duration::from_secs(5), t0).is_empty());
        let later = t0 + Duration::from_secs(5);
        assert_eq!(a.take_overdue(1, Duration::from_secs(5), later).len(), 1);
        // A new stream (after a failover) gets everything unacknowledged.
        assert_eq!(a.take_unsent(2, later).len(), 1);
        let reg = a.register_message();
        assert_eq!(reg.tasks.len(), 1);
        assert_eq!(reg.frameworks.len(), 1);
        assert_eq!(
            reg.tasks[0].latest_status.as_ref().unwrap().state(),
            TaskState::Running
        );
    }

    #[test]
    fn a_preemption_ends_the_task_with_its_reason_and_message() {
        let mut a = agent();
        let t0 = Instant::now();
        a.launch(launch("t1", &[]), 1.0);
        a.kill(
            &KillTask {
                framework_id: "fw".into(),
                task_id: "t1".into(),
                grace_period_secs: None,
                reason: TaskReason::Preempted as i32,
                message: "preempted for prod/t9".into(),
            },
            2.0,
        );
        let sent = a.take_unsent(1, t0);
        let last = sent.last().expect("the kill's update");
        assert_eq!(last.state(), TaskState::Killed);
        assert_eq!(last.reason(), TaskReason::Preempted);
        assert_eq!(last.message, "preempted for prod/t9");
    }

    #[test]
    fn kills_duplicates_and_unknown_tasks_are_answered_as_the_real_agent_does() {
        let mut a = agent();
        let t0 = Instant::now();
        a.launch(launch("t1", &[]), 1.0);
        assert_eq!(a.launch(launch("t1", &[]), 1.0), Launched::Refused);
        assert_eq!(a.active(), 1, "a refused duplicate leaves the run alone");
        let kill = |t: &str| KillTask {
            framework_id: "fw".into(),
            task_id: t.into(),
            grace_period_secs: None,
            reason: 0,
            message: String::new(),
        };
        a.kill(&kill("t1"), 2.0);
        a.kill(&kill("nope"), 2.0);
        let states: Vec<TaskState> = a.take_unsent(1, t0).iter().map(|s| s.state()).collect();
        assert_eq!(
            states,
            [
                TaskState::Running,
                TaskState::Error,
                TaskState::Killed,
                TaskState::Lost
            ]
        );
        // A killed run's timer ending later changes nothing.
        a.finish(&("fw".into(), "t1".into()), 3.0);
        assert!(a.take_unsent(1, t0).is_empty());
        assert_eq!(a.active(), 0);
    }

    #[test]
    fn shutdown_framework_kills_its_runs() {
        let mut a = agent();
        a.launch(launch("t1", &[]), 1.0);
        a.launch(launch("t2", &[]), 1.0);
        a.shutdown_framework("fw", 2.0);
        assert_eq!(a.active(), 0);
    }
}
