//! The jobs of `mezz job` as the replicated registry keeps them: every
//! [`JobRecord`] by name, the indexes that keep `ListJobs` fast at 100,000
//! jobs, how a committed job command changes them, and the retention bound
//! on ended jobs. Plain data with no other module of the master below it
//! (like `size_menu.rs`); the state machine's side (checking requests and
//! proposing commands) is in `cluster/jobs.rs`.
//!
//! Applying is deterministic and re-checks what the proposing leader
//! checked against the stored state (a version, a state, a fire time), so a
//! command proposed on a state that changed before it committed is ignored
//! the same way on every master.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use mezz_proto::v1::{
    replicated_command::Command, JobAttempt, JobControl, JobFire, JobList, JobRecord, JobUpdate,
    JobsSubmitted, ListJobsRequest,
};

/// How many ended jobs the registry keeps unless told otherwise
/// (`mezz master --jobs-kept`).
pub const DEFAULT_JOBS_KEPT: usize = 10_000;
/// Rows `ListJobs` returns when the request does not say.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
/// The most rows one `ListJobs` returns.
pub const MAX_LIST_LIMIT: usize = 100_000;

/// Waiting for nothing; the jobs framework starts it when it can.
pub const PENDING: &str = "PENDING";
/// Waiting for the jobs in its `after`.
pub const WAITING: &str = "WAITING";
/// An attempt runs.
pub const RUNNING: &str = "RUNNING";
/// Ended well.
pub const SUCCEEDED: &str = "SUCCEEDED";
/// Ended badly (its attempts failed, or a dependency did).
pub const FAILED: &str = "FAILED";
/// Ran past its deadline.
pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
/// Killed by an operator.
pub const KILLED: &str = "KILLED";
/// A scheduled job's own record: its runs are jobs of their own.
pub const SCHEDULED: &str = "SCHEDULED";

/// Every state a job may be in, in the order they are listed in errors.
pub const STATES: [&str; 8] = [
    PENDING,
    WAITING,
    RUNNING,
    SUCCEEDED,
    FAILED,
    DEADLINE_EXCEEDED,
    KILLED,
    SCHEDULED,
];

/// Whether a job in `state` has ended (and counts against the retention
/// bound). A scheduled job's own record never ends by itself.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, SUCCEEDED | FAILED | DEADLINE_EXCEEDED | KILLED)
}

/// Seconds `a` ran: to its end, to its job's end when the job ended
/// without one recorded, or to `now` while it runs.
pub fn attempt_secs(job: &JobRecord, a: &JobAttempt, now: f64) -> f64 {
    if a.started_at <= 0.0 {
        return 0.0;
    }
    let end = if a.ended_at > 0.0 {
        a.ended_at
    } else if is_terminal(&job.state) {
        job.finished_at
    } else {
        now
    };
    (end - a.started_at).max(0.0)
}

/// GPU-hours of every attempt of every run: the GPUs an attempt holds in
/// all (`attempt_gpus`, else `gpus`) times how long each attempt held
/// them. The status page and `mezz job` show this one figure.
pub fn gpu_hours(job: &JobRecord, now: f64) -> f64 {
    let secs: f64 = job.attempts.iter().map(|a| attempt_secs(job, a, now)).sum();
    let gpus = if job.attempt_gpus > 0 {
        job.attempt_gpus
    } else {
        job.gpus
    };
    f64::from(gpus) * secs / 3600.0
}

/// The state a job starts a run in: a schedule waits for its fires, a job
/// with dependencies for them, any other is pending.
pub fn initial_state(job: &JobRecord) -> &'static str {
    if !job.schedule.is_empty() {
        SCHEDULED
    } else if !job.after.is_empty() {
        WAITING
    } else {
        PENDING
    }
}

/// Starts a new run of `job` at `at` (a resubmit of an ended job, or a
/// rerun): its attempts so far are kept, the run's first attempt will be
/// the next one, and a schedule starts over from `at`.
pub fn start_run(job: &mut JobRecord, at: f64) {
    job.state = initial_state(job).to_string();
    job.submitted_at = at;
    job.finished_at = 0.0;
    job.reason = String::new();
    job.not_before = 0.0;
    job.kill_requested = false;
    job.run_start = job.attempts.len() as u32;
    job.runs += 1;
    if !job.schedule.is_empty() {
        job.schedule_from = at;
        job.last_fired_at = 0.0;
        job.paused = false;
    }
}

/// Ends `job` the way a kill does, at `at`: a job that has not started
/// ends KILLED at once; a running one is asked to end (the jobs framework
/// kills the attempt and records KILLED). Returns whether anything
/// changed; the caller bumps the version.
pub fn kill(job: &mut JobRecord, reason: &str, at: f64) -> bool {
    if is_terminal(&job.state) {
        return false;
    }
    if job.state == RUNNING {
        if job.kill_requested {
            return false;
        }
        job.kill_requested = true;
        return true;
    }
    job.state = KILLED.to_string();
    job.finished_at = at;
    job.reason = reason.to_string();
    true
}

/// The reason a kill by `principal` records.
pub fn killed_by(principal: &str) -> String {
    if principal.is_empty() {
        "killed by an operator".to_string()
    } else {
        format!("killed by {principal}")
    }
}

/// A job's place in listings: newest `submitted_at` first, ties by name.
#[derive(Debug, Clone)]
struct ListKey {
    submitted_at: f64,
    name: String,
}

impl ListKey {
    fn of(job: &JobRecord) -> Self {
        ListKey {
            submitted_at: job.submitted_at,
            name: job.name.clone(),
        }
    }
}

impl Ord for ListKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .submitted_at
            .total_cmp(&self.submitted_at)
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for ListKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ListKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ListKey {}

/// An ended job's place in the retention order: oldest `finished_at`
/// first, ties by name.
#[derive(Debug, Clone)]
struct EndKey {
    finished_at: f64,
    name: String,
}

impl Ord for EndKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.finished_at
            .total_cmp(&other.finished_at)
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for EndKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for EndKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for EndKey {}

/// The jobs as the registry keeps them, with their indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStore {
    /// By name. Hashed, not ordered: listings walk the indexes below and
    /// look every row up here, so a lookup must be cheap at 100,000 jobs;
    /// whatever is shown in name order is sorted when shown.
    jobs: crate::hashing::Map<String, JobRecord>,
    /// Every job in listing order.
    all: BTreeSet<ListKey>,
    /// Jobs by state, in listing order.
    by_state: BTreeMap<String, BTreeSet<ListKey>>,
    /// Runs by the scheduled job they were fired from, in listing order.
    by_parent: BTreeMap<String, BTreeSet<ListKey>>,
    /// For each name some job's `after` names: the jobs that name it.
    waiters: BTreeMap<String, BTreeSet<String>>,
    /// Ended jobs, oldest first (what retention drops).
    ended: BTreeSet<EndKey>,
    /// The bound on ended jobs (a master flag, not replicated, like the
    /// bound on finished tasks).
    kept: usize,
}

impl Default for JobStore {
    fn default() -> Self {
        JobStore::with_kept(DEFAULT_JOBS_KEPT)
    }
}

/// How many runs of a schedule a job's page shows.
pub const DETAIL_RUNS: usize = 50;

/// A job with its neighbours, for its status page.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDetail {
    /// The job.
    pub job: JobRecord,
    /// Each name of its `after`, with the job of that name if still kept.
    pub waits_for: Vec<(String, Option<JobRecord>)>,
    /// The jobs whose `after` names it, by name.
    pub waited_on_by: Vec<JobRecord>,
    /// Its latest runs, newest first, when it is a schedule.
    pub runs: Vec<JobRecord>,
    /// How many runs of it are kept.
    pub runs_kept: usize,
}

/// A `ListJobs` request the store cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(pub String);

impl JobStore {
    /// An empty store that keeps at most `kept` ended jobs.
    pub fn with_kept(kept: usize) -> Self {
        JobStore {
            jobs: Default::default(),
            all: BTreeSet::new(),
            by_state: BTreeMap::new(),
            by_parent: BTreeMap::new(),
            waiters: BTreeMap::new(),
            ended: BTreeSet::new(),
            kept,
        }
    }

    /// The store a snapshot holds, keeping at most `kept` ended jobs.
    pub fn from_snapshot(jobs: &[JobRecord], kept: usize) -> Self {
        let mut s = JobStore::with_kept(kept);
        for j in jobs {
            s.put(j.clone());
        }
        s.retain();
        s
    }

    /// Every job, sorted by name (what a snapshot carries).
    pub fn to_snapshot(&self) -> Vec<JobRecord> {
        self.iter().cloned().collect()
    }

    /// Sets the bound on ended jobs and drops what is over it.
    pub fn set_kept(&mut self, kept: usize) {
        self.kept = kept;
        self.retain();
    }

    /// The bound on ended jobs.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// How many jobs are stored.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is stored.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Option<&JobRecord> {
        self.jobs.get(name)
    }

    /// Every job, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &JobRecord> {
        let mut jobs: Vec<&JobRecord> = self.jobs.values().collect();
        jobs.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        jobs.into_iter()
    }

    /// The jobs whose `after` names `name`, by name.
    pub fn waiters(&self, name: &str) -> impl Iterator<Item = &JobRecord> {
        self.waiters
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|n| self.jobs.get(n))
    }

    /// The job called `name` with its neighbours (see [`JobDetail`]).
    pub fn detail(&self, name: &str) -> Option<JobDetail> {
        let job = self.jobs.get(name)?.clone();
        let runs = self.by_parent.get(name);
        Some(JobDetail {
            waits_for: job
                .after
                .iter()
                .map(|d| (d.clone(), self.jobs.get(d).cloned()))
                .collect(),
            waited_on_by: self.waiters(name).cloned().collect(),
            runs: runs
                .into_iter()
                .flatten()
                .take(DETAIL_RUNS)
                .filter_map(|k| self.jobs.get(&k.name).cloned())
                .collect(),
            runs_kept: runs.map_or(0, BTreeSet::len),
            job,
        })
    }

    /// Applies a committed job command (others are not for the store),
    /// then drops ended jobs over the bound.
    pub fn apply(&mut self, cmd: &Command) {
        match cmd {
            Command::JobsSubmitted(s) => self.apply_submitted(s),
            Command::JobUpdated(u) => self.apply_update(u),
            Command::JobControl(c) => self.apply_control(c),
            Command::JobFired(f) => self.apply_fire(f),
            _ => return,
        }
        self.retain();
    }

    /// Stores the records as the leader made them, all or none: a name
    /// whose job is stored and has not ended (another submit committed
    /// first) refuses the whole command.
    fn apply_submitted(&mut self, s: &JobsSubmitted) {
        if let Some(busy) = s.jobs.iter().find(|j| {
            self.jobs
                .get(&j.name)
                .is_some_and(|o| !is_terminal(&o.state))
        }) {
            tracing::warn!(
                job = busy.name,
                "ignoring a submit of a job that has not ended"
            );
            return;
        }
        for j in &s.jobs {
            self.put(j.clone());
        }
    }

    /// Takes the framework's progress at the version it read, if the job is
    /// still at that version, has not ended and is not a schedule.
    fn apply_update(&mut self, u: &JobUpdate) {
        let Some(new) = &u.job else { return };
        let Some(stored) = self.jobs.get(&new.name) else {
            return;
        };
        if stored.version != u.expected_version
            || is_terminal(&stored.state)
            || stored.state == SCHEDULED
        {
            tracing::debug!(job = new.name, "ignoring a stale job update");
            return;
        }
        let mut job = stored.clone();
        job.state = new.state.clone();
        job.reason = new.reason.clone();
        job.attempts = new.attempts.clone();
        job.not_before = new.not_before;
        job.params_json = new.params_json.clone();
        job.has_metric = new.has_metric;
        job.metric = new.metric;
        job.note = new.note.clone();
        job.finished_at = match (is_terminal(&job.state), new.finished_at) {
            (false, _) => 0.0,
            (true, 0.0) => u.at,
            (true, f) => f,
        };
        job.version += 1;
        self.put(job);
    }

    /// kill, rerun, pause or resume, where the stored state allows it.
    fn apply_control(&mut self, c: &JobControl) {
        let Some(mut job) = self.jobs.get(&c.name).cloned() else {
            return;
        };
        let changed = match c.action.as_str() {
            "kill" => kill(&mut job, &killed_by(&c.principal), c.at),
            "rerun" if is_terminal(&job.state) => {
                start_run(&mut job, c.at);
                true
            }
            "pause" | "resume" if job.state == SCHEDULED => {
                let paused = c.action == "pause";
                let changed = job.paused != paused;
                job.paused = paused;
                changed
            }
            _ => false,
        };
        if changed {
            job.version += 1;
            self.put(job);
        }
    }

    /// A schedule's fire later than its last one: the runs it replaces are
    /// killed, its run (if any, and new) stored, and `last_fired_at` moved.
    fn apply_fire(&mut self, f: &JobFire) {
        let Some(mut sched) = self.jobs.get(&f.name).cloned() else {
            return;
        };
        if sched.state != SCHEDULED || sched.paused || f.fire_at <= sched.last_fired_at {
            return;
        }
        let reason = match &f.run {
            Some(run) => format!("replaced by {} (concurrency replace)", run.name),
            None => "replaced by a later fire (concurrency replace)".to_string(),
        };
        for name in &f.replace {
            if let Some(mut old) = self.jobs.get(name).cloned() {
                if old.parent == f.name && kill(&mut old, &reason, f.at) {
                    old.version += 1;
                    self.put(old);
                }
            }
        }
        if let Some(run) = &f.run {
            if !self.jobs.contains_key(&run.name) {
                self.put(run.clone());
            }
        }
        sched.last_fired_at = f.fire_at;
        sched.version += 1;
        self.put(sched);
    }

    /// Stores `job`, replacing the one of its name, and keeps the indexes.
    fn put(&mut self, job: JobRecord) {
        self.remove(&job.name.clone());
        let key = ListKey::of(&job);
        self.all.insert(key.clone());
        self.by_state
            .entry(job.state.clone())
            .or_default()
            .insert(key.clone());
        if !job.parent.is_empty() {
            self.by_parent
                .entry(job.parent.clone())
                .or_default()
                .insert(key);
        }
        for dep in &job.after {
            self.waiters
                .entry(dep.clone())
                .or_default()
                .insert(job.name.clone());
        }
        if is_terminal(&job.state) {
            self.ended.insert(EndKey {
                finished_at: job.finished_at,
                name: job.name.clone(),
            });
        }
        self.jobs.insert(job.name.clone(), job);
    }

    /// Forgets the job called `name` and its index entries.
    fn remove(&mut self, name: &str) -> Option<JobRecord> {
        let job = self.jobs.remove(name)?;
        let key = ListKey::of(&job);
        self.all.remove(&key);
        remove_from(&mut self.by_state, &job.state, &key);
        if !job.parent.is_empty() {
            remove_from(&mut self.by_parent, &job.parent, &key);
        }
        for dep in &job.after {
            remove_from(&mut self.waiters, dep, &job.name);
        }
        if is_terminal(&job.state) {
            self.ended.remove(&EndKey {
                finished_at: job.finished_at,
                name: job.name.clone(),
            });
        }
        Some(job)
    }

    /// Drops the ended jobs over the bound, oldest `finished_at` first
    /// (ties by name). A job that has not ended is never dropped, and
    /// neither is an ended one that a job which has not ended waits for:
    /// the jobs framework still needs its outcome to start (or fail) the
    /// waiting job.
    fn retain(&mut self) {
        let excess = self.ended.len().saturating_sub(self.kept);
        if excess == 0 {
            return;
        }
        let drop: Vec<String> = self
            .ended
            .iter()
            .filter(|k| !self.waiters(&k.name).any(|w| !is_terminal(&w.state)))
            .take(excess)
            .map(|k| k.name.clone())
            .collect();
        for name in drop {
            self.remove(&name);
        }
    }

    /// `ListJobs`: the jobs matching `q` that `visible` lets through,
    /// newest first, at most `q.limit`, with how many matched. Answered
    /// from the indexes: the smallest index that covers the filters is
    /// walked in listing order, and the walk stops at the first job
    /// submitted before `q.since`.
    pub fn list(
        &self,
        q: &ListJobsRequest,
        visible: Option<&dyn Fn(&JobRecord) -> bool>,
    ) -> Result<JobList, BadQuery> {
        if let Some(bad) = q.states.iter().find(|s| !STATES.contains(&s.as_str())) {
            return Err(BadQuery(format!(
                "unknown job state '{bad}'; the states are {}",
                STATES.join(", ")
            )));
        }
        let limit = match q.limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let state_ok = |s: &str| {
            (q.states.is_empty() || q.states.iter().any(|w| w == s))
                && (!q.active || !is_terminal(s))
        };
        // The index to walk, and whether it alone decides the state and
        // parent filters.
        let empty = BTreeSet::new();
        let (sources, exact): (Vec<&BTreeSet<ListKey>>, bool) = if !q.parent.is_empty() {
            let runs = self.by_parent.get(&q.parent).unwrap_or(&empty);
            (vec![runs], q.states.is_empty() && !q.active)
        } else if !q.states.is_empty() || q.active {
            let sets = self
                .by_state
                .iter()
                .filter(|(s, _)| state_ok(s))
                .map(|(_, set)| set)
                .collect();
            (sets, true)
        } else {
            (vec![&self.all], true)
        };
        let mut out = JobList::default();
        if exact && q.since <= 0.0 && visible.is_none() {
            // Counted by the index sizes; only the rows shown are read.
            out.matched = sources.iter().map(|s| s.len() as u64).sum();
            out.jobs = Merged::new(&sources)
                .take(limit)
                .filter_map(|k| self.jobs.get(&k.name))
                .map(|j| shown(j, q.summary))
                .collect();
            return Ok(out);
        }
        for key in Merged::new(&sources) {
            if key.submitted_at < q.since {
                break;
            }
            let Some(job) = self.jobs.get(&key.name) else {
                continue;
            };
            if !exact && (!state_ok(&job.state) || job.parent != q.parent) {
                continue;
            }
            if visible.is_some_and(|v| !v(job)) {
                continue;
            }
            out.matched += 1;
            if out.jobs.len() < limit {
                out.jobs.push(shown(job, q.summary));
            }
        }
        Ok(out)
    }
}

/// A job as a listing shows it: with a summary, only its last attempt.
fn shown(job: &JobRecord, summary: bool) -> JobRecord {
    if !summary || job.attempts.len() <= 1 {
        return job.clone();
    }
    let mut j = JobRecord {
        attempts: Vec::new(),
        ..job.clone()
    };
    j.attempts.extend(job.attempts.last().cloned());
    j
}

fn remove_from<K: Ord>(index: &mut BTreeMap<String, BTreeSet<K>>, at: &str, key: &K) {
    if let Some(set) = index.get_mut(at) {
        set.remove(key);
        if set.is_empty() {
            index.remove(at);
        }
    }
}

/// Several sets in listing order walked as one (a k-way merge; k is at
/// most the number of states).
struct Merged<'a> {
    iters: Vec<std::iter::Peekable<std::collections::btree_set::Iter<'a, ListKey>>>,
}

impl<'a> Merged<'a> {
    fn new(sets: &[&'a BTreeSet<ListKey>]) -> Self {
        Merged {
            iters: sets.iter().map(|s| s.iter().peekable()).collect(),
        }
    }
}

impl<'a> Iterator for Merged<'a> {
    type Item = &'a ListKey;

    fn next(&mut self) -> Option<&'a ListKey> {
        let mut best: Option<(usize, &'a ListKey)> = None;
        for (i, it) in self.iters.iter_mut().enumerate() {
            let Some(&k) = it.peek() else {
                continue;
            };
            if best.is_none_or(|(_, b)| k < b) {
                best = Some((i, k));
            }
        }
        self.iters[best?.0].next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, state: &str, submitted_at: f64) -> JobRecord {
        JobRecord {
            name: name.into(),
            state: state.into(),
            submitted_at,
            finished_at: if is_terminal(state) {
                submitted_at
            } else {
                0.0
            },
            version: 1,
            runs: 1,
            ..Default::default()
        }
    }

    fn store(jobs: &[JobRecord]) -> JobStore {
        JobStore::from_snapshot(jobs, DEFAULT_JOBS_KEPT)
    }

    fn names(l: &JobList) -> Vec<&str> {
        l.jobs.iter().map(|j| j.name.as_str()).collect()
    }

    #[test]
    fn listings_are_newest_first_and_filtered() {
        let mut run = job("nightly.100", RUNNING, 100.0);
        run.parent = "nightly".into();
        let mut s = store(&[
            job("a", PENDING, 10.0),
            job("b", SUCCEEDED, 30.0),
            job("c", KILLED, 30.0),
            job("nightly", SCHEDULED, 5.0),
            run,
        ]);
        let all = s.list(&ListJobsRequest::default(), None).unwrap();
        assert_eq!(names(&all), ["nightly.100", "b", "c", "a", "nightly"]);
        assert_eq!(all.matched, 5);
        let q = ListJobsRequest {
            active: true,
            ..Default::default()
        };
        let active = s.list(&q, None).unwrap();
        assert_eq!(names(&active), ["nightly.100", "a", "nightly"]);
        let q = ListJobsRequest {
            states: vec![KILLED.into(), PENDING.into()],
            since: 20.0,
            ..Default::default()
        };
        assert_eq!(names(&s.list(&q, None).unwrap()), ["c"]);
        let q = ListJobsRequest {
            parent: "nightly".into(),
            ..Default::default()
        };
        assert_eq!(names(&s.list(&q, None).unwrap()), ["nightly.100"]);
        let q = ListJobsRequest {
            limit: 2,
            ..Default::default()
        };
        let l = s.list(&q, None).unwrap();
        assert_eq!((l.jobs.len(), l.matched), (2, 5));
        let only_a = |j: &JobRecord| j.name == "a";
        let l = s.list(&ListJobsRequest::default(), Some(&only_a)).unwrap();
        assert_eq!((names(&l), l.matched), (vec!["a"], 1));
        let q = ListJobsRequest {
            states: vec!["DONE".into()],
            ..Default::default()
        };
        let err = s.list(&q, None).unwrap_err();
        assert!(
            err.0.contains("'DONE'") && err.0.contains("SUCCEEDED"),
            "{err}"
        );
        // The indexes follow a change of state.
        s.apply(&Command::JobControl(JobControl {
            name: "a".into(),
            action: "kill".into(),
            principal: "alice".into(),
            at: 50.0,
        }));
        let q = ListJobsRequest {
            states: vec![KILLED.into()],
            ..Default::default()
        };
        assert_eq!(names(&s.list(&q, None).unwrap()), ["c", "a"]);
        assert_eq!(s.get("a").unwrap().reason, "killed by alice");
    }

    #[test]
    fn a_summary_keeps_the_last_attempt() {
        let mut j = job("a", FAILED, 1.0);
        j.attempts = (1..=3)
            .map(|n| mezz_proto::v1::JobAttempt {
                number: n,
                ..Default::default()
            })
            .collect();
        let s = store(&[j]);
        let q = ListJobsRequest {
            summary: true,
            ..Default::default()
        };
        let l = s.list(&q, None).unwrap();
        assert_eq!(l.jobs[0].attempts.len(), 1);
        assert_eq!(l.jobs[0].attempts[0].number, 3);
    }

    #[test]
    fn retention_drops_the_oldest_ended_but_not_what_a_live_job_waits_for() {
        let mut waiting = job("w", WAITING, 9.0);
        waiting.after = vec!["old".into()];
        let mut s = JobStore::from_snapshot(
            &[
                job("old", SUCCEEDED, 1.0),
                job("mid", FAILED, 2.0),
                job("new", KILLED, 3.0),
                job("live", RUNNING, 0.5),
                waiting,
            ],
            1,
        );
        let kept: Vec<&str> = s.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(kept, ["live", "old", "w"], "old is waited for");
        // Once the waiting job ends, what it waited for may go.
        s.apply(&Command::JobControl(JobControl {
            name: "w".into(),
            action: "kill".into(),
            principal: String::new(),
            at: 10.0,
        }));
        let kept: Vec<&str> = s.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(kept, ["live", "w"]);
        assert_eq!(s.get("w").unwrap().reason, "killed by an operator");
    }
}
