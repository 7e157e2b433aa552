//! A job's batch semantics as a pure state machine in the style of the
//! master's cores: every entry point takes the time (milliseconds on the
//! caller's clock), and [`Job::next`] says what the shell must do. The
//! shell records an attempt's start before it launches and its end after
//! the task ended, so a runner that takes over from another one (after a
//! failover) finds every attempt and neither skips nor repeats one.

use std::time::Duration;

use serde::Serialize;

use crate::spec::JobSpec;

/// Milliseconds on the caller's clock.
pub type Millis = u64;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Waiting for its first attempt, or for the backoff before a retry.
    Pending,
    /// An attempt runs.
    Running,
    /// An attempt finished with exit code 0.
    Succeeded,
    /// Its last attempt failed and no retry is left.
    Failed,
    /// Its deadline passed before an attempt succeeded.
    DeadlineExceeded,
    /// Killed on request.
    Killed,
}

impl JobState {
    /// Whether the job will never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    /// The name `mezz job list --state` takes and shows.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::DeadlineExceeded => "DEADLINE_EXCEEDED",
            JobState::Killed => "KILLED",
        }
    }
}

/// One try at running the job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// The attempt's task.
    pub task_id: String,
    /// The agent it ran on, once known.
    pub agent: Option<String>,
    /// When it was launched.
    pub start: Millis,
    /// When it ended.
    pub end: Option<Millis>,
    /// The task's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Why it ended: the task's final state and reason (`FINISHED`,
    /// `FAILED`, `KILLED: deadline exceeded`, …).
    pub reason: Option<String>,
}

/// What the shell must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Launch attempt `number` with task id `task_id` (after recording
    /// its start with [`Job::started`]).
    Launch {
        /// The attempt's number.
        number: u32,
        /// The task id to use.
        task_id: String,
    },
    /// Kill the running attempt's task.
    Kill {
        /// The task to kill.
        task_id: String,
    },
    /// Nothing until this time (or until news of the task).
    WaitUntil(Millis),
    /// Nothing until news of the running task.
    Wait,
    /// The job is over.
    Done(JobState),
}

/// A job and its attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// What was submitted.
    pub spec: JobSpec,
    /// When it was submitted.
    pub submitted: Millis,
    /// Its state.
    pub state: JobState,
    /// Every attempt of every run, oldest first.
    pub attempts: Vec<Attempt>,
    /// The index in `attempts` of the current run's first attempt (a
    /// rerun starts a new run; retries count within a run).
    pub run_start: usize,
    /// The next attempt may not start before this.
    pub not_before: Millis,
    /// A kill was asked for (by an operator, or the deadline).
    kill: Option<JobState>,
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Job {
    /// A job submitted at `now`.
    pub fn new(spec: JobSpec, now: Millis) -> Job {
        Job {
            spec,
            submitted: now,
            state: JobState::Pending,
            attempts: Vec::new(),
            run_start: 0,
            not_before: now,
            kill: None,
        }
    }

    /// A job as recorded: its spec, when its current run was submitted,
    /// its state, every attempt, where the current run starts, the
    /// backoff's end, and whether a kill was asked for. What [`Job::next`]
    /// says next is what it would have said to the runner that recorded
    /// it, so a runner that takes over neither skips nor repeats a step.
    pub fn restore(
        spec: JobSpec,
        submitted: Millis,
        state: JobState,
        attempts: Vec<Attempt>,
        run_start: usize,
        not_before: Millis,
        kill_requested: bool,
    ) -> Job {
        Job {
            spec,
            submitted,
            state,
            run_start: run_start.min(attempts.len()),
            attempts,
            not_before,
            kill: kill_requested.then_some(JobState::Killed),
        }
    }

    /// The number of attempt `number` within its run (1 for a run's first).
    fn nth_in_run(&self, number: u32) -> u32 {
        number.saturating_sub(self.run_start as u32)
    }
    /// When the deadline passes, if there is one.
    pub fn deadline_at(&self) -> Option<Millis> {
        self.spec
            .deadline
            .map(|d| self.submitted.saturating_add(millis(d)))
    }

    /// The wait before the run's attempt `nth` (2 or more): `backoff`,
    /// doubled for each retry before it, at most `max_backoff`.
    pub fn backoff_before(&self, nth: u32) -> Duration {
        let factor = 2u32.saturating_pow(nth.saturating_sub(2));
        self.spec
            .backoff
            .saturating_mul(factor)
            .min(self.spec.max_backoff)
    }

    fn running(&self) -> Option<&Attempt> {
        self.attempts.last().filter(|a| a.end.is_none())
    }

    /// What to do at `now`.
    pub fn next(&mut self, now: Millis) -> Action {
        if self.state.is_terminal() {
            return Action::Done(self.state);
        }
        if self.kill.is_none() && self.deadline_at().is_some_and(|d| now >= d) {
            self.kill = Some(JobState::DeadlineExceeded);
        }
        if let Some(end) = self.kill {
            return match self.running() {
                Some(a) => Action::Kill {
                    task_id: a.task_id.clone(),
                },
                None => {
                    self.state = end;
                    Action::Done(end)
                }
            };
        }
        if self.running().is_some() {
            return match self.deadline_at() {
                Some(d) => Action::WaitUntil(d),
                None => Action::Wait,
            };
        }
        if now < self.not_before {
            let until = match self.deadline_at() {
                Some(d) => self.not_before.min(d),
                None => self.not_before,
            };
            return Action::WaitUntil(until);
        }
        let number = self.attempts.len() as u32 + 1;
        Action::Launch {
            number,
            task_id: format!("{}.{number}", self.spec.name),
        }
    }

    /// Attempt `number` was launched at `now` as `task_id`. Recording the
    /// same attempt again changes nothing.
    pub fn started(&mut self, number: u32, task_id: &str, now: Millis) {
        if self.state.is_terminal() || number as usize != self.attempts.len() + 1 {
            return;
        }
        self.attempts.push(Attempt {
            number,
            task_id: task_id.to_string(),
            agent: None,
            start: now,
            end: None,
            exit_code: None,
            reason: None,
        });
        self.state = JobState::Running;
    }

    /// The running attempt's task went to `agent`.
    pub fn placed(&mut self, task_id: &str, agent: &str) {
        if let Some(a) = self.attempts.last_mut() {
            if a.task_id == task_id && a.end.is_none() {
                a.agent = Some(agent.to_string());
            }
        }
    }

    /// The running attempt's task ended at `now`: `exit_code` 0 succeeds
    /// the job, anything else retries it after the backoff while retries
    /// are left. An end for another task, or told twice, changes nothing.
    pub fn ended(&mut self, task_id: &str, exit_code: Option<i32>, reason: &str, now: Millis) {
        let Some(a) = self.attempts.last_mut() else {
            return;
        };
        if a.task_id != task_id || a.end.is_some() {
            return;
        }
        a.end = Some(now);
        a.exit_code = exit_code;
        a.reason = Some(match self.kill {
            Some(JobState::DeadlineExceeded) => format!("{reason}: deadline exceeded"),
            Some(_) => format!("{reason}: killed on request"),
            None => reason.to_string(),
        });
        let number = a.number;
        let nth = self.nth_in_run(number);
        if let Some(end) = self.kill {
            self.state = end;
        } else if exit_code == Some(0) {
            self.state = JobState::Succeeded;
        } else if nth > self.spec.retries {
            self.state = JobState::Failed;
        } else {
            self.state = JobState::Pending;
            self.not_before = now.saturating_add(millis(self.backoff_before(nth + 1)));
        }
    }

    /// Kill on request: the running attempt is killed, no retry follows.
    pub fn kill(&mut self) {
        if !self.state.is_terminal() && self.kill.is_none() {
            self.kill = Some(JobState::Killed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_sdk::sizes::Sizes;

    fn job(extra: &str) -> Job {
        let text = format!("kind: command\nname: etl\ncommand: ./etl.sh\n{extra}");
        Job::new(JobSpec::parse(&text, &Sizes::builtin()).unwrap(), 1_000)
    }

    fn launch(j: &mut Job, now: Millis) -> String {
        match j.next(now) {
            Action::Launch { number, task_id } => {
                j.started(number, &task_id, now);
                j.placed(&task_id, "agent-1");
                task_id
            }
            other => panic!("expected a launch at {now}, got {other:?}"),
        }
    }

    #[test]
    fn fails_twice_then_succeeds_on_the_third_attempt_with_doubling_backoff() {
        let mut j = job("retries: 3\nbackoff: 2s\n");
        let t1 = launch(&mut j, 1_000);
        assert_eq!(t1, "etl.1");
        assert_eq!(j.state, JobState::Running);
        j.ended(&t1, Some(1), "FAILED", 5_000);
        assert_eq!(j.state, JobState::Pending);
        assert_eq!(
            j.next(5_000),
            Action::WaitUntil(7_000),
            "first retry after 2s"
        );
        let t2 = launch(&mut j, 7_000);
        j.ended(&t2, Some(3), "FAILED", 8_000);
        assert_eq!(j.next(8_000), Action::WaitUntil(12_000), "then 4s");
        let t3 = launch(&mut j, 12_000);
        assert_eq!(t3, "etl.3");
        j.ended(&t3, Some(0), "FINISHED", 13_000);
        assert_eq!(j.state, JobState::Succeeded);
        assert_eq!(j.next(20_000), Action::Done(JobState::Succeeded));
        let codes: Vec<Option<i32>> = j.attempts.iter().map(|a| a.exit_code).collect();
        assert_eq!(codes, [Some(1), Some(3), Some(0)]);
        assert!(j
            .attempts
            .iter()
            .all(|a| a.agent.as_deref() == Some("agent-1")));
        assert_eq!(j.attempts[1].reason.as_deref(), Some("FAILED"));
        assert_eq!(j.state.name(), "SUCCEEDED");
    }

    #[test]
    fn retries_run_out() {
        let mut j = job("retries: 1\nbackoff: 1s\n");
        let t1 = launch(&mut j, 1_000);
        j.ended(&t1, Some(2), "FAILED", 2_000);
        let t2 = launch(&mut j, 3_000);
        j.ended(&t2, Some(2), "FAILED", 4_000);
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.attempts.len(), 2);
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let j = job("retries: 10\nbackoff: 10s\nmax_backoff: 30s\n");
        let secs: Vec<u64> = (2..=6).map(|n| j.backoff_before(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 30, 30, 30]);
        assert_eq!(j.backoff_before(1000), Duration::from_secs(30));
    }

    #[test]
    fn the_deadline_kills_the_running_attempt_and_ends_the_job() {
        let mut j = job("retries: 5\ndeadline: 10s\n");
        let t1 = launch(&mut j, 1_000);
        assert_eq!(j.next(2_000), Action::WaitUntil(11_000));
        assert_eq!(
            j.next(11_000),
            Action::Kill {
                task_id: t1.clone()
            }
        );
        j.ended(&t1, None, "KILLED", 11_500);
        assert_eq!(j.state, JobState::DeadlineExceeded);
        assert_eq!(
            j.attempts[0].reason.as_deref(),
            Some("KILLED: deadline exceeded")
        );
        assert_eq!(j.next(12_000), Action::Done(JobState::DeadlineExceeded));
    }

    #[test]
    fn the_deadline_during_a_backoff_ends_the_job_without_a_new_attempt() {
        let mut j = job("retries: 5\nbackoff: 1m\ndeadline: 10s\n");
        let t1 = launch(&mut j, 1_000);
        j.ended(&t1, Some(1), "FAILED", 2_000);
        assert_eq!(
            j.next(2_000),
            Action::WaitUntil(11_000),
            "woken at the deadline"
        );
        assert_eq!(j.next(11_000), Action::Done(JobState::DeadlineExceeded));
        assert_eq!(j.attempts.len(), 1);
    }

    #[test]
    fn a_rerun_counts_its_retries_from_its_own_first_attempt() {
        let mut j = job("retries: 1\nbackoff: 1s\n");
        let t1 = launch(&mut j, 1_000);
        j.ended(&t1, Some(1), "FAILED", 2_000);
        let t2 = launch(&mut j, 3_000);
        j.ended(&t2, Some(1), "FAILED", 4_000);
        assert_eq!(j.state, JobState::Failed);
        // The rerun: the record restored with a new run after two attempts.
        let mut r = Job::restore(
            j.spec.clone(),
            10_000,
            JobState::Pending,
            j.attempts.clone(),
            2,
            0,
            false,
        );
        let t3 = launch(&mut r, 10_000);
        assert_eq!(t3, "etl.3", "numbers go on across runs");
        r.ended(&t3, Some(1), "FAILED", 11_000);
        assert_eq!(r.state, JobState::Pending, "the rerun has its own retry");
        assert_eq!(r.next(11_000), Action::WaitUntil(12_000));
    }

    #[test]
    fn a_kill_stops_the_job_and_records_are_idempotent() {
        let mut j = job("retries: 3\n");
        let t1 = launch(&mut j, 1_000);
        j.started(1, &t1, 1_500);
        assert_eq!(j.attempts.len(), 1, "the same start twice is one attempt");
        j.kill();
        assert_eq!(
            j.next(2_000),
            Action::Kill {
                task_id: t1.clone()
            }
        );
        j.ended("someone-else", Some(0), "FINISHED", 2_100);
        assert_eq!(j.state, JobState::Running, "another task's end is not ours");
        j.ended(&t1, None, "KILLED", 2_200);
        j.ended(&t1, Some(0), "FINISHED", 2_300);
        assert_eq!(j.state, JobState::Killed);
        assert_eq!(j.attempts[0].end, Some(2_200));
    }
}
