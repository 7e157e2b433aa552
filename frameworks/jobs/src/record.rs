//! A job as the masters keep it ([`proto::JobRecord`]) and as the batch
//! state machine works on it ([`Job`]): the record made at submit, a
//! scheduled job's run, and the two directions between record and
//! machine. Times are seconds since the Unix epoch in records and
//! milliseconds since it in [`Job`].

use mezz_sdk::proto;

use crate::batch::{Attempt, Job, JobState, Millis};
use crate::spec::JobSpec;

/// The states of a record that are not [`JobState`]s.
pub mod states {
    /// Waiting for the jobs in its `after` list.
    pub const WAITING: &str = "WAITING";
    /// A scheduled job: it fires runs of itself.
    pub const SCHEDULED: &str = "SCHEDULED";
    /// Every state a record may be in, for `--state` and messages.
    pub const ALL: [&str; 8] = [
        "PENDING",
        WAITING,
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "DEADLINE_EXCEEDED",
        "KILLED",
        SCHEDULED,
    ];
}

/// Whether a record's state will never change again (short of a rerun).
pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "SUCCEEDED" | "FAILED" | "DEADLINE_EXCEEDED" | "KILLED"
    )
}

fn parse_state(s: &str) -> Option<JobState> {
    Some(match s {
        "PENDING" | states::WAITING => JobState::Pending,
        "RUNNING" => JobState::Running,
        "SUCCEEDED" => JobState::Succeeded,
        "FAILED" => JobState::Failed,
        "DEADLINE_EXCEEDED" => JobState::DeadlineExceeded,
        "KILLED" => JobState::Killed,
        _ => return None,
    })
}

fn secs(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

fn millis(secs: f64) -> Millis {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0).round() as Millis
    } else {
        0
    }
}

/// The record `mezz job submit` sends for `spec`: the spec fields only;
/// the masters set the state, times, version and principal.
pub fn submitted(spec: &JobSpec) -> proto::JobRecord {
    let spec_json = serde_json::to_string(spec).unwrap_or_default();
    let (schedule, timezone, concurrency, missed) = match &spec.schedule {
        Some(s) => (
            s.cron.clone(),
            s.timezone.clone(),
            s.concurrency.name().to_string(),
            s.missed.name().to_string(),
        ),
        None => Default::default(),
    };
    proto::JobRecord {
        name: spec.name.clone(),
        spec_json,
        kind: spec.kind_name().to_string(),
        role: spec.role.clone(),
        after: spec.after.clone(),
        after_any: spec.after_any,
        schedule,
        timezone,
        concurrency,
        missed,
        cpus: spec.cpus,
        mem: spec.mem,
        gpus: spec.gpus,
        attempt_gpus: spec.attempt_gpus(),
        ..Default::default()
    }
}

/// The name of the run a scheduled job `name` fires at `fire_at`.
pub fn run_name(name: &str, fire_at: f64) -> String {
    format!("{name}.{}", fire_at as u64)
}

/// The run a scheduled job fires at `fire_at`: its spec without the
/// schedule, under the run's name.
pub fn scheduled_run(parent: &proto::JobRecord, fire_at: f64) -> Result<proto::JobRecord, String> {
    let mut spec = spec_of(parent)?;
    spec.name = run_name(&parent.name, fire_at);
    spec.schedule = None;
    let mut run = submitted(&spec);
    run.parent = parent.name.clone();
    Ok(run)
}

/// The spec stored with a record.
pub fn spec_of(r: &proto::JobRecord) -> Result<JobSpec, String> {
    serde_json::from_str(&r.spec_json)
        .map_err(|e| format!("the job's stored spec cannot be read ({e}); submit it again"))
}

/// The batch state machine of a PENDING or RUNNING record (WAITING and
/// SCHEDULED ones are not run by it).
pub fn to_job(r: &proto::JobRecord) -> Result<Job, String> {
    let spec = spec_of(r)?;
    let state = parse_state(&r.state).ok_or_else(|| format!("unknown state '{}'", r.state))?;
    let attempts = r
        .attempts
        .iter()
        .map(|a| Attempt {
            number: a.number,
            task_id: a.task_id.clone(),
            agent: (!a.agent_id.is_empty()).then(|| a.agent_id.clone()),
            start: millis(a.started_at),
            end: (a.ended_at > 0.0).then(|| millis(a.ended_at)),
            exit_code: a.has_exit_code.then_some(a.exit_code),
            reason: (!a.reason.is_empty()).then(|| a.reason.clone()),
        })
        .collect();
    Ok(Job::restore(
        spec,
        millis(r.submitted_at),
        state,
        attempts,
        r.run_start as usize,
        millis(r.not_before),
        r.kill_requested,
    ))
}

/// What the end of an attempt's task said beyond what [`Job`] keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ending {
    /// The attempt's task.
    pub task_id: String,
    /// Its final state (`TASK_FINISHED`, …).
    pub task_state: String,
    /// What it used, as far as its agent said.
    pub used: Used,
}

/// What an attempt used, from the terminal update of its task: each field
/// only where its agent could tell.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Used {
    /// CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// The most memory held at once, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Mean utilization of its GPUs, in percent.
    pub gpu_utilization_pct: Option<f64>,
    /// The most GPU memory held at once, in MB.
    pub gpu_peak_memory_mb: Option<u64>,
}

impl Used {
    /// What a task's terminal update says.
    pub fn of_status(s: &proto::TaskStatus) -> Used {
        Used {
            cpu_seconds: s.cpu_seconds,
            peak_memory_bytes: s.peak_memory_bytes,
            gpu_utilization_pct: s.gpu_utilization_pct,
            gpu_peak_memory_mb: s.gpu_peak_memory_mb,
        }
    }

    /// What an attempt already recorded.
    fn of_attempt(a: &proto::JobAttempt) -> Used {
        Used {
            cpu_seconds: a.cpu_seconds,
            peak_memory_bytes: a.peak_memory_bytes,
            gpu_utilization_pct: a.gpu_utilization_pct,
            gpu_peak_memory_mb: a.gpu_peak_memory_mb,
        }
    }
}

/// `r` with the progress of `job`: its state, attempts and backoff, and
/// what `endings` say of attempts that just ended.
pub fn with_progress(r: &proto::JobRecord, job: &Job, endings: &[Ending]) -> proto::JobRecord {
    let mut out = r.clone();
    out.state = job.state.name().to_string();
    out.not_before = secs(job.not_before);
    // Notes speak of the latest attempt: a new one starts without.
    if job.attempts.len() > r.attempts.len() {
        out.note.clear();
    }
    out.attempts = job
        .attempts
        .iter()
        .map(|a| {
            let old = r.attempts.iter().find(|o| o.task_id == a.task_id);
            let ending = endings.iter().find(|e| e.task_id == a.task_id);
            let task_state = match ending {
                Some(e) => e.task_state.clone(),
                None => old.map(|o| o.task_state.clone()).unwrap_or_default(),
            };
            let used = match ending {
                Some(e) => e.used,
                None => old.map(Used::of_attempt).unwrap_or_default(),
            };
            proto::JobAttempt {
                number: a.number,
                task_id: a.task_id.clone(),
                agent_id: a.agent.clone().unwrap_or_default(),
                started_at: secs(a.start),
                ended_at: a.end.map(secs).unwrap_or(0.0),
                has_exit_code: a.exit_code.is_some(),
                exit_code: a.exit_code.unwrap_or(0),
                task_state,
                reason: a.reason.clone().unwrap_or_default(),
                cpu_seconds: used.cpu_seconds,
                peak_memory_bytes: used.peak_memory_bytes,
                gpu_utilization_pct: used.gpu_utilization_pct,
                gpu_peak_memory_mb: used.gpu_peak_memory_mb,
            }
        })
        .collect();
    if job.state.is_terminal() && out.finished_at == 0.0 {
        out.finished_at = job
            .attempts
            .last()
            .and_then(|a| a.end)
            .map(secs)
            .unwrap_or(0.0);
    }
    out
}

/// The job whose attempt `task_id` is (`NAME.N`), if it names one.
pub fn job_of_task(task_id: &str) -> Option<&str> {
    let (name, n) = task_id.rsplit_once('.')?;
    n.parse::<u32>().ok().map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_sdk::sizes::Sizes;

    #[test]
    fn a_record_round_trips_through_the_machine() {
        let spec = JobSpec::parse(
            "kind: command\nname: etl\ncommand: ./etl.sh\nretries: 2\ndeadline: 1h\n",
            &Sizes::builtin(),
        )
        .unwrap();
        let mut r = submitted(&spec);
        assert_eq!(spec_of(&r).unwrap(), spec, "the stored spec reads back");
        r.state = "PENDING".into();
        r.submitted_at = 1_000.0;
        let mut job = to_job(&r).unwrap();
        job.started(1, "etl.1", 1_000_500);
        job.placed("etl.1", "agent-7");
        job.ended("etl.1", Some(3), "FAILED", 1_002_000);
        let ending = Ending {
            task_id: "etl.1".into(),
            task_state: "TASK_FAILED".into(),
            used: Used {
                cpu_seconds: Some(0.25),
                peak_memory_bytes: Some(1 << 20),
                gpu_utilization_pct: Some(42.5),
                gpu_peak_memory_mb: Some(900),
            },
        };
        let r2 = with_progress(&r, &job, &[ending]);
        assert_eq!(r2.attempts[0].cpu_seconds, Some(0.25));
        let r3 = with_progress(&r2, &job, &[]);
        assert_eq!(
            r3.attempts[0].peak_memory_bytes,
            Some(1 << 20),
            "kept once known"
        );
        assert_eq!(r3.attempts[0].gpu_utilization_pct, Some(42.5));
        assert_eq!(r3.attempts[0].gpu_peak_memory_mb, Some(900));
        assert_eq!(r2.state, "PENDING");
        assert_eq!(r2.attempts[0].agent_id, "agent-7");
        assert_eq!(r2.attempts[0].task_state, "TASK_FAILED");
        assert!(r2.attempts[0].has_exit_code && r2.attempts[0].exit_code == 3);
        assert_eq!(r2.not_before, 1_012.0, "10 s of default backoff");
        let back = to_job(&r2).unwrap();
        assert_eq!(back.attempts, job.attempts);
        assert_eq!(back.not_before, job.not_before);
        assert_eq!(job_of_task("etl.1"), Some("etl"));
        assert_eq!(
            job_of_task("nightly.1796612400.2"),
            Some("nightly.1796612400")
        );
        assert_eq!(job_of_task("etl"), None);
    }
}
