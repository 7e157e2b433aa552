//! Jobs (`mezz job`) on the leader: checking `SubmitJobs`, `UpdateJob`,
//! `ControlJob` and `FireSchedule` against the stored jobs and proposing
//! them as replicated commands (`JobsSubmitted`, `JobUpdated`,
//! `JobControl`, `JobFired`). Everything is checked before anything is
//! proposed, so a refused request stores nothing; the store
//! (`job_store.rs`) applies what commits. Times come in as the shell's
//! clock and are stamped as wall-clock seconds from it. The jobs framework
//! runs the jobs; this module never touches tasks or offers.
//!
//! `UpdateJob` is a compare-and-set on the job's version. Beside the
//! version the leader keeps the names of the jobs its own proposals touch
//! until they apply (`jobs_in_flight`): a second update read at the same
//! version is refused at once rather than accepted and then ignored when
//! the first one commits.

use std::collections::{BTreeMap, BTreeSet};

use mezz_proto::v1::{
    replicated_command::Command, FireScheduleRequest, JobControl, JobFire, JobRecord, JobUpdate,
    JobsSubmitted, ReplicatedCommand, UpdateJobRequest,
};

use super::{CallError, Cluster, Effect, Millis};
use crate::job_store::{self, is_terminal, JobStore, SCHEDULED, STATES};

/// The most jobs one `SubmitJobs` stores.
pub const MAX_SUBMIT: usize = 100;
/// The largest `spec_json`, in bytes.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// The most attempts a job keeps over all its runs.
pub const MAX_ATTEMPTS: usize = 10_000;
/// The longest job name.
pub const MAX_NAME: usize = 63;
/// The longest name of a scheduled job: its runs are named
/// `NAME.<10-digit Unix seconds>`, which must stay a valid name.
pub const MAX_SCHEDULED_NAME: usize = MAX_NAME - 11;

/// The actions of `ControlJob`.
const ACTIONS: [&str; 4] = ["kill", "rerun", "pause", "resume"];

/// Checks a job name: 1 to 63 of `[a-z0-9._-]`, starting with a letter or
/// a digit (the jobs framework's own rule), at most 52 for a scheduled job.
pub fn check_name(name: &str, scheduled: bool) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(format!(
            "'{}' cannot name a job: use 1 to {MAX_NAME} lowercase letters, digits, '-', '_' or \
             '.', starting with a letter or digit",
            name.escape_debug()
        ));
    }
    if scheduled && name.len() > MAX_SCHEDULED_NAME {
        return Err(format!(
            "scheduled job '{name}' has a name of {} characters; a scheduled job's name may have \
             at most {MAX_SCHEDULED_NAME}, so that its runs (NAME.<unix seconds>) have valid names",
            name.len()
        ));
    }
    Ok(())
}

/// The spec fields of `job` (what `SubmitJobs` reads), checked and with
/// their defaults filled in; the state and the run fields are the
/// master's to set.
fn spec_of(job: &JobRecord) -> Result<JobRecord, CallError> {
    let invalid = |what: String| CallError::Invalid(format!("job '{}': {what}", job.name));
    check_name(&job.name, !job.schedule.is_empty()).map_err(CallError::Invalid)?;
    if job.spec_json.len() > MAX_SPEC_BYTES {
        return Err(invalid(format!(
            "its spec is {} bytes of JSON, more than the {} KiB the masters keep; move large \
             inputs to files the job reads",
            job.spec_json.len(),
            MAX_SPEC_BYTES / 1024
        )));
    }
    match serde_json::from_str::<serde_json::Value>(&job.spec_json) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(other) => {
            let kind = match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Null => "null",
                _ => "a scalar",
            };
            return Err(invalid(format!(
                "spec_json is {kind}; it must be a JSON object (the job file as JSON)"
            )));
        }
        Err(e) => return Err(invalid(format!("spec_json is not JSON: {e}"))),
    }
    if job.kind.trim().is_empty() {
        return Err(invalid(
            "its kind is empty; say what runs it (e.g. 'command')".into(),
        ));
    }
    for (what, v) in [("cpus", job.cpus), ("mem", job.mem)] {
        if !v.is_finite() || v < 0.0 {
            return Err(invalid(format!(
                "{what} is {v}; it must be a number of at least 0"
            )));
        }
    }
    let role = if job.role.is_empty() {
        mezz_proto::resources::UNRESERVED_ROLE.to_string()
    } else {
        job.role.clone()
    };
    if role != mezz_proto::resources::UNRESERVED_ROLE {
        mezz_proto::resources::check_role(&role).map_err(invalid)?;
    }
    let concurrency = match job.concurrency.as_str() {
        "" => "forbid",
        c @ ("forbid" | "allow" | "replace") => c,
        other => {
            return Err(invalid(format!(
                "concurrency '{other}' is not one of forbid, allow, replace"
            )))
        }
    };
    let missed = match job.missed.as_str() {
        "" => "run_once",
        m @ ("run_once" | "run_all" | "skip") => m,
        other => {
            return Err(invalid(format!(
                "missed '{other}' is not one of run_once, run_all, skip"
            )))
        }
    };
    Ok(JobRecord {
        name: job.name.clone(),
        spec_json: job.spec_json.clone(),
        kind: job.kind.clone(),
        role,
        after: job.after.clone(),
        after_any: job.after_any,
        schedule: job.schedule.clone(),
        timezone: if job.timezone.is_empty() {
            "UTC".into()
        } else {
            job.timezone.clone()
        },
        concurrency: concurrency.into(),
        missed: missed.into(),
        cpus: job.cpus,
        mem: job.mem,
        gpus: job.gpus,
        attempt_gpus: job.attempt_gpus,
        ..Default::default()
    })
}

/// The most bytes of a running job's note the masters keep.
pub const MAX_NOTE_BYTES: usize = 1024;

/// The most bytes of a trial's parameters (JSON) the masters keep.
const MAX_PARAMS_BYTES: usize = 4096;

/// A trial's parameters: empty, or a JSON object of at most
/// [`MAX_PARAMS_BYTES`].
fn check_params(name: &str, params: &str) -> Result<(), CallError> {
    if params.is_empty() {
        return Ok(());
    }
    if params.len() > MAX_PARAMS_BYTES {
        return Err(CallError::Invalid(format!(
            "job '{name}': its parameters are {} bytes of JSON, more than {MAX_PARAMS_BYTES}",
            params.len()
        )));
    }
    match serde_json::from_str::<serde_json::Value>(params) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(CallError::Invalid(format!(
            "job '{name}': params_json must be a JSON object of the trial's parameters"
        ))),
    }
}

/// Checks the `after` of each job of `batch` (new records by name) against
/// the batch and the stored jobs: every name known, none its own, and no
/// cycle over the stored jobs plus the batch (a name of the batch replaces
/// its stored edges).
fn check_after(store: &JobStore, batch: &BTreeMap<&str, &JobRecord>) -> Result<(), CallError> {
    for job in batch.values() {
        for dep in &job.after {
            if dep == &job.name {
                return Err(CallError::Invalid(format!(
                    "job '{}' names itself in `after`; a job cannot wait for itself",
                    job.name
                )));
            }
            if !batch.contains_key(dep.as_str()) && store.get(dep).is_none() {
                return Err(CallError::NotFound(format!(
                    "job '{}' runs after '{dep}', which is neither in this request nor kept by \
                     the masters; submit '{dep}' with it or fix `after`",
                    job.name
                )));
            }
        }
    }
    let edges = |name: &str| -> Option<&[String]> {
        match batch.get(name) {
            Some(j) => Some(&j.after),
            None => store.get(name).map(|j| j.after.as_slice()),
        }
    };
    let starts: Vec<&str> = batch.keys().copied().collect();
    if let Some(cycle) = find_cycle(edges, &starts) {
        return Err(CallError::Invalid(format!(
            "jobs {} wait for each other in `after` (a cycle), so none could ever start; \
             remove one of these dependencies",
            cycle
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(" → ")
        )));
    }
    Ok(())
}

/// A cycle reachable from `starts` over `edges`, as the names along it
/// (the first repeated at the end). Iterative, as a stored chain of
/// dependencies may be long.
fn find_cycle<'a>(
    edges: impl Fn(&str) -> Option<&'a [String]>,
    starts: &[&'a str],
) -> Option<Vec<String>> {
    // On the walk's path, or done with.
    let mut on_path: BTreeSet<&str> = BTreeSet::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for &start in starts {
        if done.contains(start) {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        on_path.insert(start);
        while let Some(&(node, i)) = path.last() {
            let next = edges(node).and_then(|e| e.get(i));
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            match next {
                None => {
                    on_path.remove(node);
                    done.insert(node);
                    path.pop();
                }
                Some(n) if on_path.contains(n.as_str()) => {
                    let from = path.iter().position(|(p, _)| *p == n.as_str())?;
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|(p, _)| p.to_string()).collect();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                Some(n) if done.contains(n.as_str()) => {}
                Some(n) => {
                    on_path.insert(n);
                    path.push((n, 0));
                }
            }
        }
    }
    None
}

/// The jobs a command changes (what `jobs_in_flight` marks).
fn touched(cmd: &Command) -> Vec<&str> {
    match cmd {
        Command::JobsSubmitted(s) => s.jobs.iter().map(|j| j.name.as_str()).collect(),
        Command::JobUpdated(u) => u.job.iter().map(|j| j.name.as_str()).collect(),
        Command::JobControl(c) => vec![c.name.as_str()],
        Command::JobFired(f) => std::iter::once(f.name.as_str())
            .chain(f.run.iter().map(|r| r.name.as_str()))
            .chain(f.replace.iter().map(String::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

fn no_job(name: &str) -> CallError {
    CallError::NotFound(format!("no job '{name}'; `mezz job list` shows the jobs"))
}

impl Cluster {
    /// The stored jobs.
    pub fn jobs(&self) -> &JobStore {
        &self.registry.jobs
    }

    /// How many ended jobs this master keeps (`--jobs-kept`); call before
    /// the first settle.
    pub fn set_jobs_kept(&mut self, n: usize) {
        self.registry.jobs.set_kept(n);
    }

    /// `SubmitJobs`: stores `jobs` (new ones, or new runs of ended ones)
    /// for `principal`, all or none. Returns their names, to answer with
    /// their records once committed.
    pub fn submit_jobs(
        &mut self,
        jobs: &[JobRecord],
        principal: &str,
        now: Millis,
    ) -> Result<Vec<String>, CallError> {
        if jobs.is_empty() || jobs.len() > MAX_SUBMIT {
            return Err(CallError::Invalid(format!(
                "a submit stores 1 to {MAX_SUBMIT} jobs, not {}; split larger batches (jobs in \
                 a later batch may run after jobs of an earlier one)",
                jobs.len()
            )));
        }
        let mut specs = Vec::with_capacity(jobs.len());
        let mut seen = BTreeSet::new();
        for job in jobs {
            if !seen.insert(job.name.as_str()) {
                return Err(CallError::Invalid(format!(
                    "job '{}' appears twice in this request; give each job its own name",
                    job.name
                )));
            }
            let spec = spec_of(job)?;
            if let Some(stored) = self.registry.jobs.get(&job.name) {
                if !is_terminal(&stored.state) {
                    return Err(CallError::FailedPrecondition(format!(
                        "job '{0}' is {1}: kill it first (`mezz job kill {0}`) or use another name",
                        job.name, stored.state
                    )));
                }
            }
            if self.jobs_in_flight.contains_key(&job.name) {
                return Err(CallError::Aborted(format!(
                    "job '{}' is being changed by a request not committed yet; try again",
                    job.name
                )));
            }
            self.check_fits(&spec)?;
            let mut spec = spec;
            if !job.parent.is_empty() {
                self.check_trial(job)?;
                spec.parent = job.parent.clone();
                spec.params_json = job.params_json.clone();
            }
            specs.push(spec);
        }
        let batch: BTreeMap<&str, &JobRecord> =
            specs.iter().map(|j| (j.name.as_str(), j)).collect();
        check_after(&self.registry.jobs, &batch)?;
        let at = self.wall_time(now);
        let records: Vec<JobRecord> = specs
            .iter()
            .map(|spec| {
                let mut rec = JobRecord {
                    principal: principal.to_string(),
                    ..spec.clone()
                };
                if let Some(old) = self.registry.jobs.get(&spec.name) {
                    rec.attempts = old.attempts.clone();
                    rec.runs = old.runs;
                    rec.version = old.version;
                }
                job_store::start_run(&mut rec, at);
                rec.version += 1;
                rec
            })
            .collect();
        let names = records.iter().map(|r| r.name.clone()).collect();
        self.propose_job(Command::JobsSubmitted(JobsSubmitted { jobs: records, at }));
        Ok(names)
    }

    /// A job whose attempts no registered agent could ever hold, even
    /// idle, is refused, naming the largest agent (as `mezz job submit`
    /// says before it sends). With no agent registered yet, nothing is
    /// refused: agents may still join.
    fn check_fits(&self, job: &JobRecord) -> Result<(), CallError> {
        let need = mezz_proto::capacity::Need {
            cpus: job.cpus,
            mem: job.mem,
            gpus: job.gpus,
            role: job.role.clone(),
        };
        let agents = self.agents.values().map(|a| {
            (
                format!("{} ({})", a.info.hostname, a.info.address),
                &a.total,
            )
        });
        match mezz_proto::capacity::never_fits(agents, &need) {
            Some(why) => Err(CallError::Invalid(format!(
                "job '{}' can never run: {why}",
                job.name
            ))),
            None => Ok(()),
        }
    }

    /// A submitted job with a `parent` must be a trial of a kept sweep that
    /// has not ended, named after it.
    fn check_trial(&self, job: &JobRecord) -> Result<(), CallError> {
        let parent = &job.parent;
        let Some(sweep) = self.registry.jobs.get(parent) else {
            return Err(no_job(parent));
        };
        if sweep.kind != "sweep" || is_terminal(&sweep.state) {
            return Err(CallError::FailedPrecondition(format!(
                "job '{}' names '{parent}' as its parent, which is not a sweep that has not ended ({} {}); only a sweep's trials have a parent given at submit",
                job.name, sweep.kind, sweep.state
            )));
        }
        if !job.name.starts_with(&format!("{parent}.")) || !job.schedule.is_empty() {
            return Err(CallError::Invalid(format!(
                "trial '{}' of sweep '{parent}' must be named '{parent}.<trial>' and have no schedule",
                job.name
            )));
        }
        check_params(&job.name, &job.params_json)
    }

    /// `UpdateJob`: the jobs framework's progress on a job, taken only at
    /// the version it read. Returns the job's name.
    pub fn update_job(&mut self, req: &UpdateJobRequest, now: Millis) -> Result<String, CallError> {
        let job = req.job.as_ref().ok_or_else(|| {
            CallError::Invalid("job is missing; send the job with its progress".into())
        })?;
        let name = job.name.as_str();
        let stored = self.registry.jobs.get(name).ok_or_else(|| no_job(name))?;
        if is_terminal(&stored.state) {
            return Err(CallError::FailedPrecondition(format!(
                "job '{name}' has ended ({})",
                stored.state
            )));
        }
        if stored.state == SCHEDULED {
            return Err(CallError::FailedPrecondition(format!(
                "job '{name}' is SCHEDULED: a schedule's own record changes only by \
                 FireSchedule and ControlJob; update its runs instead"
            )));
        }
        if stored.version != req.expected_version || self.jobs_in_flight.contains_key(name) {
            return Err(CallError::Aborted(format!(
                "job '{name}' changed since it was read (now version {}); read it again",
                stored.version
            )));
        }
        if !STATES.contains(&job.state.as_str()) || job.state == SCHEDULED {
            return Err(CallError::Invalid(format!(
                "job '{name}': state '{}' is not one a job can be updated to; use one of {}",
                job.state,
                STATES[..STATES.len() - 1].join(", ")
            )));
        }
        if job.attempts.len() > MAX_ATTEMPTS {
            return Err(CallError::Invalid(format!(
                "job '{name}' has {} attempts, more than the {MAX_ATTEMPTS} the masters keep; \
                 end it",
                job.attempts.len()
            )));
        }
        let kept = stored.run_start as usize;
        if job.attempts.len() < kept || job.attempts[..kept] != stored.attempts[..kept] {
            return Err(CallError::Invalid(format!(
                "job '{name}': the attempts of its earlier runs (the first {kept}) must stay as \
                 stored; only the current run's attempts may change"
            )));
        }
        for (what, v) in [
            ("not_before", job.not_before),
            ("finished_at", job.finished_at),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(CallError::Invalid(format!(
                    "job '{name}': {what} is {v}; it must be seconds since the Unix epoch, or 0"
                )));
            }
        }
        check_params(name, &job.params_json)?;
        if job.note.len() > MAX_NOTE_BYTES {
            return Err(CallError::Invalid(format!(
                "job '{name}': its note is {} bytes, more than {MAX_NOTE_BYTES}",
                job.note.len()
            )));
        }
        if !job.metric.is_finite() {
            return Err(CallError::Invalid(format!(
                "job '{name}': metric is {}; it must be a finite number",
                job.metric
            )));
        }
        // Only what an update takes goes into the log (not the spec).
        let progress = JobRecord {
            name: name.to_string(),
            state: job.state.clone(),
            reason: job.reason.clone(),
            attempts: job.attempts.clone(),
            not_before: job.not_before,
            finished_at: job.finished_at,
            params_json: job.params_json.clone(),
            has_metric: job.has_metric,
            metric: job.metric,
            note: job.note.clone(),
            ..Default::default()
        };
        let at = self.wall_time(now);
        self.propose_job(Command::JobUpdated(JobUpdate {
            job: Some(progress),
            expected_version: req.expected_version,
            at,
        }));
        Ok(name.to_string())
    }

    /// `ControlJob`: kill, rerun, pause or resume the job `name` for
    /// `principal`. Returns the job's name.
    pub fn control_job(
        &mut self,
        name: &str,
        action: &str,
        principal: &str,
        now: Millis,
    ) -> Result<String, CallError> {
        if !ACTIONS.contains(&action) {
            return Err(CallError::Invalid(format!(
                "unknown action '{action}' for job '{name}'; use kill, rerun, pause or resume"
            )));
        }
        let job = self.registry.jobs.get(name).ok_or_else(|| no_job(name))?;
        let state = job.state.as_str();
        match action {
            "kill" if is_terminal(state) => {
                return Err(CallError::FailedPrecondition(format!(
                    "job '{name}' has already ended ({state})"
                )))
            }
            "rerun" if !is_terminal(state) => {
                return Err(CallError::FailedPrecondition(format!(
                    "job '{name}' is {state}; only an ended job can be rerun"
                )))
            }
            "rerun" => {
                if let Some(dep) = job
                    .after
                    .iter()
                    .find(|d| self.registry.jobs.get(d).is_none())
                {
                    return Err(CallError::NotFound(format!(
                        "job '{name}' runs after '{dep}', which the masters no longer keep; \
                         submit '{name}' again with another `after`"
                    )));
                }
            }
            "pause" | "resume" if state != SCHEDULED => {
                return Err(CallError::FailedPrecondition(format!(
                    "job '{name}' has no schedule running (it is {state}); only a SCHEDULED \
                     job can be paused or resumed"
                )))
            }
            _ => {}
        }
        let at = self.wall_time(now);
        self.propose_job(Command::JobControl(JobControl {
            name: name.to_string(),
            action: action.to_string(),
            principal: principal.to_string(),
            at,
        }));
        Ok(name.to_string())
    }

    /// `FireSchedule`: a scheduled job's fire at `fire_at`, with the run it
    /// makes and the runs it replaces. A fire not later than the last one
    /// changes nothing (a retried fire is one fire). Returns the scheduled
    /// job's name.
    pub fn fire_schedule(
        &mut self,
        req: &FireScheduleRequest,
        now: Millis,
    ) -> Result<String, CallError> {
        let name = req.name.as_str();
        let sched = self.registry.jobs.get(name).ok_or_else(|| no_job(name))?;
        if sched.state != SCHEDULED {
            return Err(CallError::FailedPrecondition(format!(
                "job '{name}' is {}, not SCHEDULED; only a scheduled job fires",
                sched.state
            )));
        }
        if sched.paused {
            return Err(CallError::FailedPrecondition(format!(
                "job '{name}' is paused; `mezz job resume {name}`"
            )));
        }
        if !req.fire_at.is_finite() || req.fire_at <= 0.0 {
            return Err(CallError::Invalid(format!(
                "job '{name}': fire_at {} is not a time; send the cron time in seconds since the \
                 Unix epoch",
                req.fire_at
            )));
        }
        if req.fire_at <= sched.last_fired_at {
            return Ok(name.to_string());
        }
        let at = self.wall_time(now);
        let run = match &req.run {
            None => None,
            Some(run) => {
                let expected = format!("{name}.{}", req.fire_at as u64);
                if run.name != expected {
                    return Err(CallError::Invalid(format!(
                        "the run of job '{name}' fired at {} must be named '{expected}', not '{}'",
                        req.fire_at, run.name
                    )));
                }
                if !run.schedule.is_empty() {
                    return Err(CallError::Invalid(format!(
                        "run '{expected}' has a schedule of its own; a run is fired once, from \
                         its parent's schedule"
                    )));
                }
                if self.registry.jobs.get(&expected).is_some() {
                    return Err(CallError::FailedPrecondition(format!(
                        "a job '{expected}' exists already; this fire of '{name}' has been made"
                    )));
                }
                let spec = spec_of(run)?;
                check_after(
                    &self.registry.jobs,
                    &BTreeMap::from([(spec.name.as_str(), &spec)]),
                )?;
                let mut rec = JobRecord {
                    parent: name.to_string(),
                    principal: sched.principal.clone(),
                    ..spec
                };
                job_store::start_run(&mut rec, at);
                rec.version = 1;
                Some(rec)
            }
        };
        for old in &req.replace {
            let job = self.registry.jobs.get(old).ok_or_else(|| no_job(old))?;
            if job.parent != name {
                return Err(CallError::Invalid(format!(
                    "job '{old}' is not a run of '{name}'; a fire replaces only its own \
                     schedule's runs"
                )));
            }
        }
        self.propose_job(Command::JobFired(JobFire {
            name: name.to_string(),
            fire_at: req.fire_at,
            run,
            replace: req.replace.clone(),
            at,
        }));
        Ok(name.to_string())
    }

    /// Proposes a job command and marks the jobs it touches as in flight.
    fn propose_job(&mut self, command: Command) {
        for name in touched(&command) {
            *self.jobs_in_flight.entry(name.to_string()).or_default() += 1;
        }
        self.effects.push(Effect::Propose(ReplicatedCommand {
            command: Some(command),
        }));
    }

    /// A job command applied: the jobs it touched are no longer in flight
    /// for it.
    pub(super) fn job_applied(&mut self, cmd: &ReplicatedCommand) {
        let Some(command) = &cmd.command else { return };
        for name in touched(command) {
            if let Some(n) = self.jobs_in_flight.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    self.jobs_in_flight.remove(name);
                }
            }
        }
    }
}
