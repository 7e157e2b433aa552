//! What `mezz job` shows: one job (`show`), a list (`list`), an attempt's
//! output (`logs`), and jobs followed to their end (`submit --wait`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use mezz_jobs::record::{is_terminal, states};
use mezz_proto::v1::{ClusterState, JobAttempt, JobRecord, ListJobsRequest, TaskView};
use serde_json::json;
use tokio::sync::watch;

use super::{get_job, list_jobs, JobLogsArgs, ListArgs, ShowArgs, WAIT_POLL};
use crate::cli::logs::{self, Out, Tail};
use crate::client;

/// `2026-12-07T14:00:03Z`, or `-` for 0.
fn when(t: f64) -> String {
    if t <= 0.0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(t)).to_string()
}

/// How long from `start` to `end` (or to now while `end` is 0).
fn took(start: f64, end: f64) -> String {
    if start <= 0.0 {
        return "-".into();
    }
    let end = if end > 0.0 {
        end
    } else {
        mezz_proto::unix_now()
    };
    let d = end - start;
    // Batch attempts are often short: tenths of a second under a minute.
    if d < 60.0 {
        format!("{:.1}s", d.max(0.0))
    } else {
        mezz_proto::age_text(d)
    }
}

/// GPU-hours the job's attempts held, as the status page counts them.
fn gpu_hours(j: &JobRecord) -> f64 {
    mezz_master::job_store::gpu_hours(j, mezz_proto::unix_now())
}

/// ` , run 2` for a job past its first run; empty otherwise.
pub fn run_note(j: &JobRecord) -> String {
    if j.runs > 1 {
        format!(", run {}", j.runs)
    } else {
        String::new()
    }
}

fn attempt_json(a: &JobAttempt) -> serde_json::Value {
    json!({
        "number": a.number,
        "task_id": a.task_id,
        "agent": (!a.agent_id.is_empty()).then_some(&a.agent_id),
        "start": (a.started_at > 0.0).then_some(a.started_at),
        "end": (a.ended_at > 0.0).then_some(a.ended_at),
        "exit_code": a.has_exit_code.then_some(a.exit_code),
        "task_state": (!a.task_state.is_empty()).then_some(&a.task_state),
        "reason": (!a.reason.is_empty()).then_some(&a.reason),
        "cpu_seconds": a.cpu_seconds,
        "peak_memory_bytes": a.peak_memory_bytes,
        "gpu_utilization_pct": a.gpu_utilization_pct,
        "gpu_peak_memory_mb": a.gpu_peak_memory_mb,
    })
}

/// A job as `show --json` and `list --json` print it.
pub fn job_json(j: &JobRecord) -> serde_json::Value {
    let spec: serde_json::Value = serde_json::from_str(&j.spec_json).unwrap_or_default();
    json!({
        "name": j.name,
        "state": j.state,
        "reason": (!j.reason.is_empty()).then_some(&j.reason),
        "note": j.note.lines().collect::<Vec<_>>(),
        "kind": j.kind,
        "role": j.role,
        "principal": (!j.principal.is_empty()).then_some(&j.principal),
        "submitted_at": j.submitted_at,
        "finished_at": (j.finished_at > 0.0).then_some(j.finished_at),
        "runs": j.runs,
        "after": j.after,
        "after_any": j.after_any,
        "parent": (!j.parent.is_empty()).then_some(&j.parent),
        "schedule": (!j.schedule.is_empty()).then(|| json!({
            "cron": j.schedule,
            "timezone": j.timezone,
            "concurrency": j.concurrency,
            "missed": j.missed,
            "paused": j.paused,
            "last_fired_at": (j.last_fired_at > 0.0).then_some(j.last_fired_at),
        })),
        "resources": {"cpus": j.cpus, "mem": j.mem, "gpus": j.gpus},
        "gpu_hours": gpu_hours(j),
        "params": serde_json::from_str::<serde_json::Value>(&j.params_json).ok(),
        "metric": j.has_metric.then_some(j.metric),
        "attempts": j.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        "spec": spec,
        "version": j.version,
    })
}

pub async fn show(a: ShowArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let j = get_job(&masters, &a.name).await?;
    // The jobs waiting on this one, and this one's dependencies' states:
    // the part of the DAG around it.
    let (all, _) = list_jobs(
        &masters,
        ListJobsRequest {
            limit: 100_000,
            summary: true,
            ..Default::default()
        },
    )
    .await?;
    let by_name: BTreeMap<&str, &JobRecord> = all.iter().map(|r| (r.name.as_str(), r)).collect();
    let waiting_on: Vec<&JobRecord> = all.iter().filter(|r| r.after.contains(&j.name)).collect();
    if a.json {
        let mut v = job_json(&j);
        v["waited_on_by"] = waiting_on.iter().map(|r| r.name.clone()).collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "job {}  {}{}\n  kind {}, role {}, {} cpus, {} MB, {} GPUs\n  submitted {}",
        j.name,
        j.state,
        run_note(&j),
        j.kind,
        j.role,
        j.cpus,
        j.mem,
        j.gpus,
        when(j.submitted_at)
    );
    if !j.principal.is_empty() {
        out += &format!(" by {}", j.principal);
    }
    if j.finished_at > 0.0 {
        out += &format!(
            ", ended {} after {}",
            when(j.finished_at),
            took(j.submitted_at, j.finished_at)
        );
    }
    out.push('\n');
    if !j.reason.is_empty() {
        out += &format!("  reason: {}\n", j.reason);
    }
    if !j.note.is_empty() {
        out += "  news of the latest attempt:\n";
        for line in j.note.lines() {
            out += &format!("    {line}\n");
        }
    }
    if !j.parent.is_empty() && j.params_json.is_empty() {
        out += &format!("  a run of the scheduled job {}\n", j.parent);
    } else if !j.parent.is_empty() {
        out += &format!(
            "  a trial of the sweep {} with {}\n",
            j.parent, j.params_json
        );
    }
    if j.has_metric {
        out += &format!("  metric: {}\n", j.metric);
    }
    if j.kind == "sweep" {
        out += &format!("  trials: mezz job list --parent {}\n", j.name);
    }
    if !j.schedule.is_empty() {
        out += &format!(
            "  schedule: '{}' in {}, concurrency {}, missed fires {}{}; last fire {}\n",
            j.schedule,
            j.timezone,
            j.concurrency,
            j.missed,
            if j.paused { ", PAUSED" } else { "" },
            when(j.last_fired_at)
        );
        if let Ok(s) = mezz_jobs::schedule::Schedule::parse(&j.schedule, &j.timezone) {
            if let Some(next) = s.next_after(mezz_proto::unix_now().max(j.last_fired_at)) {
                out += &format!("  next fire {}\n", when(next));
            }
        }
    }
    if !j.after.is_empty() {
        let deps: Vec<String> = j
            .after
            .iter()
            .map(|d| match by_name.get(d.as_str()) {
                Some(r) => format!("{d} ({})", r.state),
                None => format!("{d} (no longer kept)"),
            })
            .collect();
        let how = if j.after_any {
            "after any end of"
        } else {
            "after success of"
        };
        out += &format!("  runs {how}: {}\n", deps.join(", "));
    }
    if !waiting_on.is_empty() {
        let w: Vec<String> = waiting_on
            .iter()
            .map(|r| format!("{} ({})", r.name, r.state))
            .collect();
        out += &format!("  waited on by: {}\n", w.join(", "));
    }
    if j.gpus > 0 {
        out += &format!("  GPU-hours: {:.3}\n", gpu_hours(&j));
    }
    if !j.schedule.is_empty() {
        out += &format!("  runs: mezz job list --parent {}\n", j.name);
    } else if j.attempts.is_empty() && j.kind != "sweep" {
        out += "  no attempt yet\n";
    } else {
        out += "  attempts:\n    #    TASK                           STATE            EXIT  AGENT         STARTED               TOOK      CPU      PEAK     GPU USE       REASON\n";
        for a in &j.attempts {
            out += &format!(
                "    {:<4} {:<30} {:<16} {:<5} {:<13} {:<21} {:<9} {:<8} {:<8} {:<13} {}\n",
                a.number,
                a.task_id,
                if a.task_state.is_empty() {
                    "RUNNING"
                } else {
                    a.task_state.trim_start_matches("TASK_")
                },
                if a.has_exit_code {
                    a.exit_code.to_string()
                } else {
                    "-".into()
                },
                short(&a.agent_id),
                when(a.started_at),
                took(a.started_at, a.ended_at),
                a.cpu_seconds
                    .map(|c| format!("{c:.2}s"))
                    .unwrap_or_else(|| "-".into()),
                a.peak_memory_bytes
                    .map(|m| format!("{:.1}MB", m as f64 / 1e6))
                    .unwrap_or_else(|| "-".into()),
                mezz_proto::gpu_use_text(a.gpu_utilization_pct, a.gpu_peak_memory_mb)
                    .unwrap_or_else(|| "-".into()),
                a.reason
            );
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// An agent id cut to 12 characters.
fn short(id: &str) -> String {
    if id.is_empty() {
        return "-".into();
    }
    id.chars().take(12).collect()
}

pub async fn list(a: ListArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let mut wanted = Vec::new();
    for s in &a.state {
        let up = s.trim().to_ascii_uppercase();
        if !states::ALL.contains(&up.as_str()) {
            return Err(anyhow!(
                "--state: '{s}' is not a job state; states: {}",
                states::ALL.join(", ").to_lowercase()
            ));
        }
        wanted.push(up);
    }
    let since = match &a.since {
        Some(t) => {
            let d = crate::duration::parse(t).map_err(|e| anyhow!("--since: {e}"))?;
            mezz_proto::unix_now() - d.as_secs_f64()
        }
        None => 0.0,
    };
    let (jobs, matched) = list_jobs(
        &masters,
        ListJobsRequest {
            states: wanted,
            since,
            parent: a.parent.clone().unwrap_or_default(),
            limit: a.limit,
            summary: !a.json,
            active: false,
        },
    )
    .await?;
    if a.json {
        let v: Vec<serde_json::Value> = jobs.iter().map(job_json).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"jobs": v, "matched": matched}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        errln!("no jobs match; submit one with `mezz job submit FILE`");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<34} {:<18} {:<8} {:<5} {:<8} {:<21} {:<9} {:<7} REASON",
        "NAME",
        "STATE",
        "KIND",
        "RUNS",
        "ATTEMPT",
        "SUBMITTED",
        "TOOK",
        "GPU-H"
    );
    for j in &jobs {
        let last = j
            .attempts
            .last()
            .map(|a| {
                format!(
                    "{}{}",
                    a.number,
                    if a.has_exit_code {
                        format!(":{}", a.exit_code)
                    } else {
                        String::new()
                    }
                )
            })
            .unwrap_or_else(|| "-".into());
        let took = if j.state == states::SCHEDULED {
            "-".into()
        } else {
            took(j.submitted_at, j.finished_at)
        };
        let state = if j.paused {
            format!("{} (paused)", j.state)
        } else {
            j.state.clone()
        };
        outln!(
            "{:<34} {:<18} {:<8} {:<5} {:<8} {:<21} {:<9} {:<7} {}",
            j.name,
            state,
            j.kind,
            j.runs,
            last,
            when(j.submitted_at),
            took,
            if j.gpus > 0 {
                format!("{:.2}", gpu_hours(j))
            } else {
                "-".into()
            },
            if j.has_metric && j.kind != "sweep" {
                format!("metric {} {}", j.metric, j.params_json)
            } else {
                j.reason.clone()
            }
        );
    }
    if matched > jobs.len() as u64 {
        errln!("({} of {matched} shown; --limit N shows more)", jobs.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(a: JobLogsArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let j = get_job(&masters, &a.name).await?;
    let attempt = match a.attempt {
        Some(n) => j.attempts.iter().find(|x| x.number == n).ok_or_else(|| {
            anyhow!(
                "job '{}' has no attempt {n}; its attempts: {}",
                j.name,
                j.attempts
                    .iter()
                    .map(|x| x.number.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => j
            .attempts
            .last()
            .ok_or_else(|| anyhow!("job '{}' has no attempt yet ({})", j.name, j.state))?,
    };
    // A training job's attempt shows its main replica's output.
    let task = match client::state(&masters, true).await {
        Ok(state) if mezz_jobs::gang::is_delegated_kind(&j.kind) => {
            attempt_task(state, &attempt.task_id)
                .map(|t| t.id)
                .unwrap_or_else(|| attempt.task_id.clone())
        }
        _ => attempt.task_id.clone(),
    };
    logs::main(logs::LogsArgs {
        master: a.master,
        task,
        stderr: a.stderr,
        follow: a.follow,
        tail: a.tail,
        list: None,
    })
    .await
}

/// The lines of `now` (a job's note) that `before` did not show: the note
/// only grows by lines at its end (its oldest may drop), or starts again
/// for a new attempt.
pub fn new_note_lines<'a>(before: &str, now: &'a str) -> Vec<&'a str> {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&'a str> = now.lines().collect();
    // The longest end of `old` that `new` starts with is what was shown.
    let shown = (0..=old.len().min(new.len()))
        .rev()
        .find(|&n| old[old.len() - n..] == new[..n])
        .unwrap_or(0);
    new[shown..].to_vec()
}

/// The task whose output is the attempt's, once it reached an agent: its
/// own task, or a training job's main replica (see
/// [`mezz_jobs::gang::main_task`]).
pub(super) fn attempt_task(state: ClusterState, attempt: &str) -> Option<TaskView> {
    let id = mezz_jobs::gang::main_task(
        attempt,
        state
            .tasks
            .iter()
            .filter(|t| !t.agent_address.is_empty())
            .map(|t| t.id.as_str()),
    )?
    .to_string();
    state
        .tasks
        .into_iter()
        .find(|t| t.id == id && !t.agent_address.is_empty())
}

/// Streams one attempt's output (stdout to `out`, stderr to standard
/// error) from when its task reaches an agent until `done` turns true.
async fn stream(task_id: String, out: Out, done: watch::Receiver<bool>) -> Result<()> {
    let masters = client::known_masters()?;
    // The master knows the task's agent once it was launched.
    let task = loop {
        let state = client::state(&masters, true).await?;
        if let Some(t) = attempt_task(state, &task_id) {
            break t;
        }
        if *done.borrow() {
            return Ok(());
        }
        tokio::time::sleep(WAIT_POLL).await;
    };
    let err = Tail::connect(&task.agent_address, &task.framework_id, &task.id, "stderr").await?;
    let err_done = done.clone();
    let e = tokio::spawn(async move { err.follow(Out::Stderr, err_done).await });
    Tail::connect(&task.agent_address, &task.framework_id, &task.id, "stdout")
        .await?
        .follow(out, done)
        .await?;
    e.await.map_err(|e| anyhow!("stderr stream: {e}"))?
}

/// Follows `names` to their end: each new attempt is announced and its
/// output streamed. 0 when every job succeeded.
pub async fn wait(masters: &[String], names: &[String], print_json: bool) -> Result<ExitCode> {
    let out = if print_json { Out::Stderr } else { Out::Stdout };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut ends: BTreeMap<String, watch::Sender<bool>> = BTreeMap::new();
    let mut tails = Vec::new();
    let mut last: BTreeMap<String, JobRecord> = BTreeMap::new();
    let ctrl_c = crate::cli::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        for name in names {
            let j = match get_job(masters, name).await {
                Ok(j) => j,
                Err(e) => {
                    errln!("mezz job: {e:#}; trying again");
                    continue;
                }
            };
            let prev = last.get(name);
            if prev.map(|p| p.state.as_str()) != Some(j.state.as_str())
                && j.state == states::WAITING
            {
                errln!("mezz job: {name}: waiting for {}", j.after.join(", "));
            }
            for line in new_note_lines(prev.map_or("", |p| p.note.as_str()), &j.note) {
                errln!("mezz job: {name}: {line}");
            }
            for a in j.attempts.iter().skip(j.run_start as usize) {
                if seen.insert(a.task_id.clone()) {
                    errln!(
                        "mezz job: {name}: attempt {} (task {})",
                        a.number,
                        a.task_id
                    );
                    let (tx, rx) = watch::channel(false);
                    ends.insert(a.task_id.clone(), tx);
                    tails.push(tokio::spawn(stream(a.task_id.clone(), out, rx)));
                }
                if a.ended_at > 0.0 {
                    if let Some(tx) = ends.remove(&a.task_id) {
                        let _ = tx.send(true);
                    }
                }
            }
            last.insert(name.clone(), j);
        }
        if last.len() == names.len() && last.values().all(|j| is_terminal(&j.state)) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(WAIT_POLL) => {}
            _ = &mut ctrl_c => {
                errln!("mezz job: stopped following; the jobs go on (`mezz job kill NAME` ends one)");
                return Ok(ExitCode::from(130));
            }
        }
    }
    for (_, tx) in ends {
        let _ = tx.send(true);
    }
    logs::drain(tails, "mezz job").await;
    let mut ok = true;
    for j in last.values() {
        summary(j);
        ok &= j.state == "SUCCEEDED";
    }
    if print_json {
        let v: Vec<serde_json::Value> = last.values().map(job_json).collect();
        let v = if v.len() == 1 {
            v.into_iter().next().unwrap_or_default()
        } else {
            serde_json::Value::Array(v)
        };
        outln!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A job's end and the attempts of its current run, for people, on
/// standard error.
fn summary(j: &JobRecord) {
    let reason = if j.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", j.reason)
    };
    errln!("mezz job: {}: {}{reason}", j.name, j.state);
    for a in j.attempts.iter().skip(j.run_start as usize) {
        errln!(
            "  attempt {}: {} exit {} on {} after {}",
            a.number,
            if a.reason.is_empty() { "-" } else { &a.reason },
            if a.has_exit_code {
                a.exit_code.to_string()
            } else {
                "-".into()
            },
            if a.agent_id.is_empty() {
                "-"
            } else {
                &a.agent_id
            },
            took(a.started_at, a.ended_at)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::new_note_lines;

    #[test]
    fn only_the_lines_not_shown_yet_are_new() {
        assert_eq!(new_note_lines("", "a"), ["a"]);
        assert_eq!(new_note_lines("a\nb", "a\nb\nc"), ["c"]);
        // The oldest line dropped as the note grew past its bound.
        assert_eq!(new_note_lines("a\nb\nc", "b\nc\nd"), ["d"]);
        // A new attempt starts its note again.
        assert_eq!(new_note_lines("a\nb", "x"), ["x"]);
        assert!(new_note_lines("a\nb", "a\nb").is_empty());
    }
}
