//! The job's lifecycle as a state machine: replica states in, actions out
//! (kill these tasks, restart the gang at this time, the job is done). The
//! success policy (the chief finished; without a chief, every worker) and
//! the restart policy (the whole gang, up to N times with backoff) live
//! here, with no driver, no clock and no I/O: time is a parameter.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mezz_sdk::TaskState;

use crate::spec::{JobSpec, ReplicaId, ReplicaType};

/// How the job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The success policy was met.
    Succeeded,
    /// A replica failed with no restart left (or the job was interrupted);
    /// the text says which and why.
    Failed(String),
}

/// What the scheduler must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Kill these tasks (the current attempt's survivors).
    Kill(Vec<String>),
    /// Every replica of the attempt ended; place the whole gang again at
    /// `at` (call [`Job::restart_due`] then).
    RestartAt {
        /// When the backoff is over.
        at: Instant,
        /// The restart's number (1 for the first).
        restart: u32,
        /// Why the gang restarts.
        reason: String,
    },
    /// The job is over.
    Finish(Outcome),
}

/// Where the job is.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Waiting for offers that fit the whole gang.
    Placing,
    /// The gang was launched.
    Running,
    /// Killing the survivors of the attempt; `then` comes once all ended.
    Stopping {
        /// What follows.
        then: AfterStop,
        /// When the stop began.
        since: Instant,
    },
    /// Waiting out the backoff before the next attempt.
    BackingOff {
        /// When the gang is placed again.
        until: Instant,
    },
    /// Over.
    Done(Outcome),
}

/// What follows a stop.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterStop {
    /// The job ends so.
    Finish(Outcome),
    /// The gang is placed again after `delay`.
    Restart {
        /// The backoff.
        delay: Duration,
        /// Why.
        reason: String,
    },
}

/// A training job's lifecycle across attempts.
///
/// ```
/// use std::time::Instant;
/// use mezz_sdk::TaskState;
/// use mezz_tensorflow::{Action, Job, JobSpec, Outcome, Overrides, Sizes};
///
/// let spec = JobSpec::build(None, Overrides {
///     chief: true, ps: Some(1), workers: Some(1),
///     command: vec!["python3 train.py".into()], ..Default::default()
/// }, |n| Ok(Sizes::builtin().get(n)?)).unwrap();
/// let mut job = Job::new(spec);
/// let now = Instant::now();
/// job.launched(now);
/// for id in ["train.chief.0.0", "train.ps.0.0", "train.worker.0.0"] {
///     assert!(job.update(id, TaskState::Running, "", now).is_empty());
/// }
/// // The chief ends: the parameter server (and any worker left) is killed.
/// let actions = job.update("train.chief.0.0", TaskState::Finished, "", now);
/// assert_eq!(actions, vec![Action::Kill(vec!["train.worker.0.0".into(), "train.ps.0.0".into()])]);
/// job.update("train.ps.0.0", TaskState::Killed, "", now);
/// let done = job.update("train.worker.0.0", TaskState::Killed, "", now);
/// assert_eq!(done, vec![Action::Finish(Outcome::Succeeded)]);
/// ```
#[derive(Clone, Debug)]
pub struct Job {
    spec: JobSpec,
    attempt: u32,
    restarts: u32,
    phase: Phase,
    /// The latest state of each replica's current attempt (absent: none
    /// reported yet).
    states: BTreeMap<ReplicaId, TaskState>,
    /// When the current attempt began waiting to be placed (the start
    /// deadline counts from here); `None` until [`Job::waiting_since`].
    placing_since: Option<Instant>,
    /// The first launch (the run deadline counts from here).
    first_launch: Option<Instant>,
}

impl Job {
    /// A job about to be placed for the first time (attempt 0).
    pub fn new(spec: JobSpec) -> Job {
        Job {
            spec,
            attempt: 0,
            restarts: 0,
            phase: Phase::Placing,
            states: BTreeMap::new(),
            placing_since: None,
            first_launch: None,
        }
    }

    /// The job began waiting for its first placement at `now` (its start
    /// deadline counts from here).
    pub fn waiting_since(&mut self, now: Instant) {
        if self.phase == Phase::Placing && self.placing_since.is_none() {
            self.placing_since = Some(now);
        }
    }

    /// The spec.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The current attempt, from 0.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Gang restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Where the job is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The task id of `replica` in the current attempt.
    pub fn task_id(&self, replica: ReplicaId) -> String {
        replica.task_id(&self.spec.name, self.attempt)
    }

    /// The latest state of each replica that reported in this attempt.
    pub fn states(&self) -> &BTreeMap<ReplicaId, TaskState> {
        &self.states
    }

    /// True when every replica of the current attempt runs.
    pub fn all_running(&self) -> bool {
        self.states.len() == self.spec.replicas() as usize
            && self.states.values().all(|s| *s == TaskState::Running)
    }

    /// The whole gang was launched at `now`.
    pub fn launched(&mut self, now: Instant) {
        if self.phase == Phase::Placing {
            self.phase = Phase::Running;
            self.first_launch.get_or_insert(now);
        }
    }

    /// When the next deadline of the job's spec passes, if one still can:
    /// the start deadline while placing, the run deadline after the first
    /// launch.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Placing => {
                let start = self
                    .placing_since
                    .zip(self.spec.start_deadline)
                    .map(|(t, d)| t + d);
                let run = self.run_deadline_at();
                start.into_iter().chain(run).min()
            }
            Phase::Running | Phase::Stopping { .. } | Phase::BackingOff { .. } => {
                self.run_deadline_at()
            }
            Phase::Done(_) => None,
        }
    }

    /// How long the job may still run at `now` under its run deadline
    /// (all of it before the first launch); `None` without one.
    pub fn run_time_left(&self, now: Instant) -> Option<Duration> {
        let limit = self.spec.run_deadline?;
        Some(match self.first_launch {
            Some(t) => limit.saturating_sub(now.saturating_duration_since(t)),
            None => limit,
        })
    }

    fn run_deadline_at(&self) -> Option<Instant> {
        self.first_launch
            .zip(self.spec.run_deadline)
            .map(|(t, d)| t + d)
    }

    /// Ends the job when a deadline passed by `now`. A start deadline that
    /// passes while placing fails it at once (DEADLINE_NOT_MET; `waiting_for`
    /// says what the gang lacked); a run deadline kills every replica and
    /// fails it (DEADLINE_EXCEEDED). Nothing otherwise.
    pub fn check_deadlines(&mut self, now: Instant, waiting_for: &str) -> Vec<Action> {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(limit) = self.spec.run_deadline {
            if self.run_deadline_at().is_some_and(|at| now >= at) {
                let why = format!(
                    "DEADLINE_EXCEEDED: the job ran past its run deadline of {}",
                    human(limit)
                );
                return self.end(Outcome::Failed(why), now);
            }
        }
        if let (Phase::Placing, Some(since), Some(limit)) =
            (&self.phase, self.placing_since, self.spec.start_deadline)
        {
            if now >= since + limit {
                let mut why = format!(
                    "DEADLINE_NOT_MET: attempt {} was not placed within its start deadline of {}",
                    self.attempt,
                    human(limit)
                );
                if !waiting_for.is_empty() {
                    why.push_str("; it waited for ");
                    why.push_str(waiting_for);
                }
                return self.end(Outcome::Failed(why), now);
            }
        }
        Vec::new()
    }

    /// A status update for `task_id`. Updates of other attempts or other
    /// jobs are ignored, as are the non-answers of reconciliation
    /// (`UNKNOWN`, `UNREACHABLE`).
    pub fn update(
        &mut self,
        task_id: &str,
        state: TaskState,
        message: &str,
        now: Instant,
    ) -> Vec<Action> {
        let Some((replica, attempt)) = ReplicaId::parse_task_id(&self.spec.name, task_id) else {
            return Vec::new();
        };
        if attempt != self.attempt || matches!(state, TaskState::Unknown | TaskState::Unreachable) {
            return Vec::new();
        }
        if self.states.get(&replica).is_some_and(|s| s.is_terminal()) {
            return Vec::new();
        }
        self.states.insert(replica, state);
        match self.phase {
            Phase::Running if state == TaskState::Finished => {
                if self.succeeded() {
                    return self.stop(AfterStop::Finish(Outcome::Succeeded), now);
                }
                Vec::new()
            }
            Phase::Running if state.is_terminal() => {
                let why = format!(
                    "{replica} ended {}{}{}",
                    state.short_name(),
                    if message.is_empty() { "" } else { ": " },
                    message
                );
                let next = self.restarts + 1;
                let then = match self.spec.restart.delay(next) {
                    Some(delay) => AfterStop::Restart { delay, reason: why },
                    None => AfterStop::Finish(Outcome::Failed(why)),
                };
                self.stop(then, now)
            }
            Phase::Stopping { .. } => self.stopped(now),
            _ => Vec::new(),
        }
    }

    /// The success policy: the chief finished; without a chief, every
    /// worker finished.
    fn succeeded(&self) -> bool {
        let finished = |r: &ReplicaId| self.states.get(r) == Some(&TaskState::Finished);
        let chief = ReplicaId {
            kind: ReplicaType::Chief,
            index: 0,
        };
        if self.spec.group(ReplicaType::Chief).is_some() {
            return finished(&chief);
        }
        let workers: Vec<ReplicaId> = self
            .spec
            .replica_ids()
            .into_iter()
            .filter(|r| r.kind == ReplicaType::Worker)
            .collect();
        !workers.is_empty() && workers.iter().all(finished)
    }

    /// Stop the attempt: kill its survivors, then `then`.
    fn stop(&mut self, then: AfterStop, now: Instant) -> Vec<Action> {
        self.phase = Phase::Stopping { then, since: now };
        let survivors: Vec<String> = self
            .spec
            .replica_ids()
            .into_iter()
            .filter(|r| !self.states.get(r).is_some_and(|s| s.is_terminal()))
            .map(|r| self.task_id(r))
            .collect();
        let mut actions = Vec::new();
        if !survivors.is_empty() {
            actions.push(Action::Kill(survivors));
        }
        actions.extend(self.stopped(now));
        actions
    }

    /// Once every replica of a stopping attempt ended: what follows.
    fn stopped(&mut self, now: Instant) -> Vec<Action> {
        let Phase::Stopping { then, .. } = &self.phase else {
            return Vec::new();
        };
        let all_ended = self
            .spec
            .replica_ids()
            .iter()
            .all(|r| self.states.get(r).is_some_and(|s| s.is_terminal()));
        if !all_ended {
            return Vec::new();
        }
        self.finish_stop(then.clone(), now)
    }

    fn finish_stop(&mut self, then: AfterStop, now: Instant) -> Vec<Action> {
        match then {
            AfterStop::Finish(outcome) => {
                self.phase = Phase::Done(outcome.clone());
                vec![Action::Finish(outcome)]
            }
            AfterStop::Restart { delay, reason } => {
                let at = now + delay;
                self.phase = Phase::BackingOff { until: at };
                vec![Action::RestartAt {
                    at,
                    restart: self.restarts + 1,
                    reason,
                }]
            }
        }
    }

    /// Gives up waiting for the survivors of a stop that began more than
    /// `patience` ago (their kills were lost, say): what follows happens
    /// now. Nothing otherwise.
    pub fn stop_overdue(&mut self, now: Instant, patience: Duration) -> Vec<Action> {
        match &self.phase {
            Phase::Stopping { then, since } if now >= *since + patience => {
                self.finish_stop(then.clone(), now)
            }
            _ => Vec::new(),
        }
    }

    /// True (and the next attempt begins: placing again) when the backoff
    /// of a restart is over at `now`.
    pub fn restart_due(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::BackingOff { until } if now >= until => {
                self.attempt += 1;
                self.restarts += 1;
                self.states.clear();
                self.phase = Phase::Placing;
                self.placing_since = Some(now);
                true
            }
            _ => false,
        }
    }

    /// The placement found cannot be used (`reason` says why): before the
    /// launch, the job fails at once; later it is not a placement problem
    /// and nothing changes.
    pub fn refuse(&mut self, reason: String) -> Vec<Action> {
        match self.phase {
            Phase::Placing => {
                let outcome = Outcome::Failed(reason);
                self.phase = Phase::Done(outcome.clone());
                vec![Action::Finish(outcome)]
            }
            _ => Vec::new(),
        }
    }

    /// Ctrl-C: kill every replica and fail. Before the launch, fails at
    /// once.
    pub fn interrupt(&mut self, now: Instant) -> Vec<Action> {
        self.end(Outcome::Failed("interrupted".into()), now)
    }

    /// Ends the job with `outcome` whatever phase it is in: survivors are
    /// killed first; before the launch, or between attempts, it ends at
    /// once.
    fn end(&mut self, outcome: Outcome, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Running => self.stop(AfterStop::Finish(outcome), now),
            Phase::Stopping { .. } => {
                self.phase = Phase::Stopping {
                    then: AfterStop::Finish(outcome),
                    since: now,
                };
                self.stopped(now)
            }
            Phase::Placing | Phase::BackingOff { .. } => {
                self.phase = Phase::Done(outcome.clone());
                vec![Action::Finish(outcome)]
            }
            Phase::Done(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
