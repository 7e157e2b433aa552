//! `mezz job`: one declarative file for a batch workload (see
//! docs/jobs.md). `mezz job submit FILE --wait` validates the file against
//! the cluster (its sizes menu, its largest agent) before anything runs,
//! then follows the job to its end: each attempt is one `mezz run` of the
//! job's command, with its output streamed here, retried with backoff and
//! killed at the deadline, as [`mezz_jobs::batch::Job`] decides. It exits
//! 0 when the job succeeded.
//!
//! The runner lives in this command for now: the job ends when it does
//! (Ctrl-C kills the running attempt), and its record is what it prints.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use mezz_jobs::{Action, Job, JobSpec, JobState};
use tokio::process::{Child, Command};

use super::capacity::{never_fits, Need};
use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Validate a job file and run the job to its end.
    Submit(SubmitArgs),
    /// Validate a job file against the cluster (sizes, the largest agent)
    /// without running it; prints the job as it would run, as JSON.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  mezz job submit --wait nightly.yaml\n  echo '{\"kind\":\"command\",\"name\":\"hi\",\"command\":\"echo hi\"}' | mezz job submit --wait --json\n\nThe file's schema is in docs/jobs.md. Exit status: 0 when the job succeeded,\n1 when it failed, was killed or passed its deadline, 2 when the file was refused."
)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The job file (YAML or JSON).
    #[arg(required_unless_present = "json")]
    pub file: Option<PathBuf>,
    /// Read the job as JSON from standard input.
    #[arg(long, conflicts_with = "file")]
    pub json: bool,
    /// Follow the job to its end, streaming each attempt's output; the
    /// exit status says whether it succeeded. Required for now: the job
    /// runs from this command.
    #[arg(long)]
    pub wait: bool,
    /// At the end, print the job and its attempts as JSON on standard
    /// output (the attempts' own output then goes to standard error).
    #[arg(long)]
    pub print_json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The job file (YAML or JSON).
    #[arg(required_unless_present = "json")]
    pub file: Option<PathBuf>,
    /// Read the job as JSON from standard input.
    #[arg(long, conflicts_with = "file")]
    pub json: bool,
}

pub async fn main(a: JobArgs) -> Result<ExitCode> {
    match a.command {
        JobCommand::Submit(s) => submit(s).await,
        JobCommand::Check(c) => check(c).await,
    }
}

/// The job file's text: FILE, or standard input with --json.
fn read_text(file: Option<&PathBuf>) -> Result<String> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the job file {}", path.display())),
        None => {
            use std::io::Read as _;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the job from standard input")?;
            Ok(text)
        }
    }
}

/// Parses and validates the job against the cluster: its sizes menu and
/// whether any agent could ever hold one attempt. Nothing runs before this
/// passes.
async fn validated(masters: &[String], file: Option<&PathBuf>) -> Result<JobSpec> {
    let text = read_text(file)?;
    let menu = super::sizes::menu(masters).await?;
    let where_ = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "standard input".into());
    let spec = JobSpec::parse(&text, &menu).map_err(|e| anyhow!("job {where_}: {e}"))?;
    let state = client::state(masters, false).await?;
    let need = Need {
        cpus: spec.cpus,
        mem: spec.mem,
        gpus: spec.gpus,
        role: spec.role.clone(),
    };
    if let Some(why) = never_fits(&state.agents, &need) {
        return Err(anyhow!("job '{}' can never run: {why}", spec.name));
    }
    Ok(spec)
}

async fn check(a: CheckArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let spec = match validated(&masters, a.file.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            errln!("mezz job: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let job = Job::new(spec, 0);
    let mut v = job.to_json(0);
    v["task_command"] = job.spec.task_command().into();
    v["resources"] = serde_json::json!({
        "cpus": job.spec.cpus, "mem": job.spec.mem, "gpus": job.spec.gpus,
    });
    outln!("{}", serde_json::to_string_pretty(&v)?);
    Ok(ExitCode::SUCCESS)
}

/// How long a killed attempt's `mezz run` may take to kill its task and
/// leave before it is stopped hard.
const KILL_WAIT: Duration = Duration::from_secs(20);

async fn submit(a: SubmitArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let spec = match validated(&masters, a.file.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            errln!("mezz job: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if !a.wait {
        return Err(anyhow!(
            "jobs run from the submitting command for now: add --wait (job '{}' was not started)",
            spec.name
        ));
    }
    let started = Instant::now();
    let epoch_ms = (mezz_proto::unix_now() * 1000.0) as u64;
    let now = || started.elapsed().as_millis() as u64;
    let mut job = Job::new(spec, now());
    let mut child: Option<(Child, String)> = None;
    let mut killed_at: Option<Instant> = None;
    let ctrl_c = super::shutdown_signal();
    tokio::pin!(ctrl_c);
    let state = loop {
        let action = job.next(now());
        let until = match action {
            Action::Done(state) => break state,
            Action::Launch { number, task_id } => {
                job.started(number, &task_id, now());
                errln!(
                    "mezz job: {}: attempt {number} of {} (task {task_id})",
                    job.spec.name,
                    job.spec.retries + 1
                );
                let c = launch(&masters, &job.spec, &task_id, a.print_json)?;
                child = Some((c, task_id));
                continue;
            }
            Action::Kill { task_id } => {
                if killed_at.is_none() {
                    errln!("mezz job: {}: killing attempt {task_id}", job.spec.name);
                    if let Some(pid) = child.as_ref().and_then(|(c, _)| c.id()) {
                        // `mezz run` kills its task on SIGTERM and leaves.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    killed_at = Some(Instant::now());
                }
                None
            }
            Action::WaitUntil(t) => Some(t),
            Action::Wait => None,
        };
        let sleep_for = until
            .map(|t| Duration::from_millis(t.saturating_sub(now())))
            .unwrap_or(Duration::from_secs(86400))
            .min(Duration::from_secs(1));
        tokio::select! {
            status = async {
                match child.as_mut() {
                    Some((c, _)) => c.wait().await.ok(),
                    None => std::future::pending().await,
                }
            } => {
                let Some((_, task_id)) = child.take() else { continue };
                let code = status.and_then(|s| s.code());
                let (agent, reason) = task_outcome(&masters, &task_id, code).await;
                if let Some(agent) = &agent {
                    job.placed(&task_id, agent);
                }
                job.ended(&task_id, code, &reason, now());
                killed_at = None;
            }
            _ = tokio::time::sleep(sleep_for) => {
                if let (Some(t), Some((c, _))) = (killed_at, child.as_mut()) {
                    if t.elapsed() > KILL_WAIT {
                        let _ = c.start_kill();
                    }
                }
            }
            _ = &mut ctrl_c => {
                errln!("mezz job: interrupted; killing the job");
                job.kill();
            }
        }
    };
    summary(&job);
    if a.print_json {
        outln!("{}", serde_json::to_string_pretty(&job.to_json(epoch_ms))?);
    }
    Ok(if state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts one attempt: `mezz run` of the job's command, its output here
/// (standard output to standard error when `quiet_stdout`, which keeps
/// standard output for the JSON record).
fn launch(masters: &[String], spec: &JobSpec, task_id: &str, quiet_stdout: bool) -> Result<Child> {
    let exe = std::env::current_exe().context("finding the mezz binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg("--master")
        .arg(masters.join(","))
        .arg("--name")
        .arg(task_id)
        .arg("--cpus")
        .arg(spec.cpus.to_string())
        .arg("--mem")
        .arg(spec.mem.to_string())
        .arg("--gpus")
        .arg(spec.gpus.to_string())
        .arg("--role")
        .arg(&spec.role);
    for (k, v) in &spec.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    for (k, v) in spec.labels() {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    // The job's class orders it in the cluster's queue and decides what
    // it may preempt and be preempted by.
    if let Some(p) = &spec.priority {
        cmd.arg("--priority").arg(p);
    }
    cmd.arg("--")
        .arg("/bin/sh")
        .arg("-c")
        .arg(spec.task_command())
        .stdin(Stdio::null());
    if quiet_stdout {
        cmd.stdout(std::io::stderr());
    }
    cmd.spawn().context("starting an attempt with mezz run")
}

/// The agent an attempt ran on and why it ended, from the master's record
/// of its task (the task is named after the attempt).
async fn task_outcome(
    masters: &[String],
    task_id: &str,
    code: Option<i32>,
) -> (Option<String>, String) {
    let fallback = match code {
        Some(c) => format!("mezz run exited {c}"),
        None => "mezz run was killed".to_string(),
    };
    let Ok(state) = client::state(masters, true).await else {
        return (None, fallback);
    };
    match state.tasks.iter().find(|t| t.name == task_id) {
        Some(t) => {
            let reason = if t.reason.is_empty() || t.reason == "NONE" {
                t.state.clone()
            } else {
                format!("{} ({})", t.state, t.reason)
            };
            (Some(t.agent_id.clone()), reason)
        }
        None => (None, format!("not launched: {fallback}")),
    }
}

/// The job's end and its attempts, for people, on standard error.
fn summary(job: &Job) {
    errln!("mezz job: {}: {}", job.spec.name, job.state.name());
    for a in &job.attempts {
        let secs = a
            .end
            .map(|e| format!("{:.1}s", e.saturating_sub(a.start) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        errln!(
            "  attempt {}: {} exit {} on {} after {}",
            a.number,
            a.reason.as_deref().unwrap_or("-"),
            a.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            a.agent.as_deref().unwrap_or("-"),
            secs
        );
    }
}
