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
/// job.launched();
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

    /// The whole gang was launched.
    pub fn launched(&mut self) {
        if self.phase == Phase::Placing {
            self.phase = Phase::Running;
        }
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
        let outcome = Outcome::Failed("interrupted".into());
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
mod tests {
    use super::*;
    use crate::spec::Overrides;
    use TaskState::*;

    fn job(o: Overrides) -> Job {
        let o = Overrides {
            name: Some("j".into()),
            command: vec!["t".into()],
            ..o
        };
        Job::new(JobSpec::build(None, o, |n| Ok(crate::Sizes::builtin().get(n)?)).expect("valid"))
    }

    fn run_all(j: &mut Job, now: Instant) {
        j.launched();
        for r in j.spec().replica_ids() {
            let id = j.task_id(r);
            assert!(j.update(&id, Running, "", now).is_empty());
        }
        assert!(j.all_running());
    }

    #[test]
    fn without_a_chief_all_workers_must_finish() {
        let mut j = job(Overrides {
            workers: Some(2),
            ..Default::default()
        });
        let now = Instant::now();
        run_all(&mut j, now);
        assert!(j.update("j.worker.1.0", Finished, "", now).is_empty());
        assert_eq!(
            j.update("j.worker.0.0", Finished, "", now),
            vec![Action::Finish(Outcome::Succeeded)]
        );
        assert_eq!(j.phase(), &Phase::Done(Outcome::Succeeded));
    }

    #[test]
    fn a_failure_without_restarts_kills_the_rest_and_fails() {
        let mut j = job(Overrides {
            workers: Some(2),
            ps: Some(1),
            ..Default::default()
        });
        let now = Instant::now();
        run_all(&mut j, now);
        let a = j.update("j.worker.0.0", Failed, "exited with 1", now);
        assert_eq!(
            a,
            vec![Action::Kill(vec!["j.worker.1.0".into(), "j.ps.0.0".into()])]
        );
        assert!(j.update("j.ps.0.0", Killed, "", now).is_empty());
        let a = j.update("j.worker.1.0", Killed, "", now);
        assert_eq!(
            a,
            vec![Action::Finish(Outcome::Failed(
                "worker/0 ended FAILED: exited with 1".into()
            ))]
        );
    }

    #[test]
    fn on_failure_restarts_the_whole_gang_with_backoff_then_gives_up() {
        let mut j = job(Overrides {
            workers: Some(2),
            restart: Some("on-failure:1".parse().expect("valid")),
            ..Default::default()
        });
        let t0 = Instant::now();
        run_all(&mut j, t0);
        j.update("j.worker.1.0", Failed, "", t0);
        let a = j.update("j.worker.0.0", Killed, "", t0);
        let Some(Action::RestartAt { at, restart: 1, .. }) = a.first().cloned() else {
            panic!("{a:?}")
        };
        assert_eq!(at, t0 + Duration::from_secs(1));
        assert!(!j.restart_due(t0));
        // Late news of the old attempt changes nothing.
        assert!(j.update("j.worker.0.0", Failed, "", at).is_empty());
        assert!(j.restart_due(at));
        assert_eq!((j.attempt(), j.phase()), (1, &Phase::Placing));
        assert_eq!(
            j.task_id(ReplicaId {
                kind: ReplicaType::Worker,
                index: 0
            }),
            "j.worker.0.1"
        );
        run_all(&mut j, at);
        let a = j.update("j.worker.0.1", Lost, "agent gone", at);
        assert_eq!(a, vec![Action::Kill(vec!["j.worker.1.1".into()])]);
        let a = j.update("j.worker.1.1", Killed, "", at);
        assert!(matches!(&a[..], [Action::Finish(Outcome::Failed(m))] if m.contains("LOST")));
    }

    #[test]
    fn interrupts_and_overdue_stops() {
        let mut j = job(Overrides {
            workers: Some(1),
            ..Default::default()
        });
        let t0 = Instant::now();
        assert_eq!(
            j.interrupt(t0),
            vec![Action::Finish(Outcome::Failed("interrupted".into()))]
        );
        let mut j = job(Overrides {
            workers: Some(2),
            ..Default::default()
        });
        run_all(&mut j, t0);
        assert_eq!(
            j.interrupt(t0),
            vec![Action::Kill(vec![
                "j.worker.0.0".into(),
                "j.worker.1.0".into()
            ])]
        );
        assert!(j.stop_overdue(t0, Duration::from_secs(5)).is_empty());
        let late = t0 + Duration::from_secs(5);
        assert_eq!(
            j.stop_overdue(late, Duration::from_secs(5)),
            vec![Action::Finish(Outcome::Failed("interrupted".into()))]
        );
    }

    #[test]
    fn the_chief_decides_and_ps_finishing_early_is_fine() {
        let mut j = job(Overrides {
            chief: true,
            workers: Some(1),
            ps: Some(1),
            ..Default::default()
        });
        let now = Instant::now();
        run_all(&mut j, now);
        assert!(j.update("j.worker.0.0", Finished, "", now).is_empty());
        assert!(j.update("j.ps.0.0", Finished, "", now).is_empty());
        assert!(j.update("other.chief.0.0", Finished, "", now).is_empty());
        assert_eq!(
            j.update("j.chief.0.0", Finished, "", now),
            vec![Action::Finish(Outcome::Succeeded)]
        );
    }

    #[test]
    fn a_refused_placement_fails_the_job_before_launch_only() {
        let mut j = job(Overrides {
            workers: Some(2),
            ..Default::default()
        });
        let why = "replicas worker/0 and worker/1 would both listen on h:1".to_string();
        assert_eq!(
            j.refuse(why.clone()),
            vec![Action::Finish(Outcome::Failed(why.clone()))]
        );
        assert_eq!(j.phase(), &Phase::Done(Outcome::Failed(why.clone())));

        let mut running = job(Overrides::default());
        run_all(&mut running, Instant::now());
        assert!(running.refuse(why).is_empty());
        assert_eq!(running.phase(), &Phase::Running);
    }
}
