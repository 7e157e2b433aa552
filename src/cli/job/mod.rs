//! `mezz job`: batch jobs from one declarative file (see docs/jobs.md).
//! Jobs live in the masters' replicated state: `mezz job submit`
//! validates the file against the cluster (its sizes menu, its largest
//! agent) and stores its jobs there, then makes sure a jobs daemon runs
//! (`mezz job daemon`, started in the background when none answers). The
//! daemon runs the attempts and records them in the masters, so `show`,
//! `list`, `logs`, `kill`, `rerun`, `pause` and `resume` work from any
//! machine, after a failover and after a restart of every master.

mod daemon;
mod services;
mod view;

pub(crate) use view::new_note_lines;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use mezz_jobs::record::{self, is_terminal};
use mezz_jobs::JobSpec;
use mezz_proto::v1::{
    ControlJobRequest, GetJobRequest, JobRecord, ListJobsRequest, SubmitJobsRequest,
};

use super::capacity::{never_fits, Need};
use super::daemon_start::FrameworkDaemon;
use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Validate a job file and store its jobs on the cluster; with --wait,
    /// follow them to their end.
    Submit(SubmitArgs),
    /// Validate a job file against the cluster (sizes, the largest agent)
    /// without storing it; prints each job as it would run, as JSON.
    Check(CheckArgs),
    /// A job, its state, its dependencies and its attempts.
    Show(ShowArgs),
    /// Jobs kept by the cluster, newest first.
    #[command(alias = "ls")]
    List(ListArgs),
    /// An attempt's output (the latest attempt unless --attempt).
    Logs(JobLogsArgs),
    /// End a job: its running attempt is killed and no retry follows; a
    /// scheduled job fires no more runs.
    Kill(NameArgs),
    /// Run an ended job again, as a new run with its own retries.
    Rerun(RerunArgs),
    /// Stop a scheduled job from firing runs until resumed.
    Pause(NameArgs),
    /// Let a paused scheduled job fire runs again.
    Resume(NameArgs),
    /// Run the jobs framework (started by `mezz job submit` when none
    /// runs; run it under systemd on a production cluster).
    Daemon(DaemonArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  mezz job submit nightly.yaml\n  mezz job submit --wait nightly.yaml\n  echo '{\"kind\":\"command\",\"name\":\"hi\",\"command\":\"echo hi\"}' | mezz job submit --wait --json\n\nA file may hold several jobs separated by --- lines (a small DAG with after:);\nthey are stored together or not at all. The schema is in docs/jobs.md.\nExit status with --wait: 0 when every job succeeded, 1 when one failed, was\nkilled or passed its deadline, 2 when the file was refused."
)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub master: MasterArg,
    #[command(flatten)]
    pub input: JobFileArg,
    /// Follow the jobs to their end, streaming each attempt's output; the
    /// exit status says whether they succeeded. Ctrl-C stops following
    /// (the jobs go on; `mezz job kill NAME` ends one).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: at the end, print the jobs and their attempts as JSON
    /// on standard output (the attempts' output then goes to standard
    /// error).
    #[arg(long, requires = "wait")]
    pub print_json: bool,
    #[command(flatten)]
    pub daemon: DaemonDirArg,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub master: MasterArg,
    #[command(flatten)]
    pub input: JobFileArg,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The job's name.
    pub name: String,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  mezz job list\n  mezz job list --state failed --since 1d --json\n  mezz job list --parent nightly-etl"
)]
pub struct ListArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// Only jobs in these states (comma-separated, any case): pending,
    /// waiting, running, succeeded, failed, deadline_exceeded, killed,
    /// scheduled.
    #[arg(long, value_delimiter = ',')]
    pub state: Vec<String>,
    /// Only jobs submitted within this long (30m, 1d, 2h 30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Only the runs of this scheduled job.
    #[arg(long)]
    pub parent: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print the jobs as JSON (with their attempts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct JobLogsArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The job's name.
    pub name: String,
    /// The attempt's number (see `mezz job show`); default: the latest.
    #[arg(long)]
    pub attempt: Option<u32>,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing new output until the attempt ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Print only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The job's name.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct RerunArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The job's name.
    pub name: String,
    /// Follow the new run to its end (as `submit --wait`).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub daemon: DaemonDirArg,
}

/// Where a job file comes from: a path, or standard input.
#[derive(Args, Debug)]
pub struct JobFileArg {
    /// The job file (YAML or JSON).
    #[arg(required_unless_present = "json")]
    pub file: Option<PathBuf>,
    /// Read the job as JSON from standard input.
    #[arg(long, conflicts_with = "file")]
    pub json: bool,
}

/// Where the jobs daemon keeps its lock, log and framework ids.
#[derive(Args, Debug, Clone)]
pub struct DaemonDirArg {
    /// The jobs daemon's state directory. Default:
    /// `$XDG_STATE_HOME/mezz/jobs/<master>`, else
    /// `~/.local/state/mezz/jobs/<master>`.
    #[arg(long, env = "MEZZ_JOBS_STATE", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub master: MasterArg,
    #[command(flatten)]
    pub daemon: DaemonDirArg,
    /// How long running attempts keep running while no daemon is
    /// subscribed (the next daemon takes them back).
    #[arg(long, default_value = "1h")]
    pub failover_timeout: String,
}

/// How `mezz job` finds or starts its daemon.
const DAEMON: FrameworkDaemon = FrameworkDaemon {
    command: "job",
    name: "jobs",
    kind: daemon::KIND,
};

pub async fn main(a: JobArgs) -> Result<ExitCode> {
    match a.command {
        JobCommand::Submit(s) => submit(s).await,
        JobCommand::Check(c) => check(c).await,
        JobCommand::Show(s) => view::show(s).await,
        JobCommand::List(l) => view::list(l).await,
        JobCommand::Logs(l) => view::logs(l).await,
        JobCommand::Kill(n) => control(n, "kill").await,
        JobCommand::Rerun(r) => rerun(r).await,
        JobCommand::Pause(n) => control(n, "pause").await,
        JobCommand::Resume(n) => control(n, "resume").await,
        JobCommand::Daemon(d) => run_daemon(d).await,
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

/// Parses and validates the file's jobs against the cluster: its sizes
/// menu and whether any agent could ever hold one attempt of each. Nothing
/// is stored before this passes.
async fn validated(masters: &[String], file: Option<&PathBuf>) -> Result<Vec<JobSpec>> {
    let text = read_text(file)?;
    let menu = super::sizes::menu(masters).await?;
    let where_ = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "standard input".into());
    let specs = JobSpec::parse_all(&text, &menu).map_err(|e| anyhow!("job {where_}: {e}"))?;
    let state = client::state(masters, false).await?;
    for spec in &specs {
        let need = Need {
            cpus: spec.cpus,
            mem: spec.mem,
            gpus: spec.gpus,
            role: spec.role.clone(),
        };
        if let Some(why) = never_fits(&state.agents, &need) {
            return Err(anyhow!("job '{}' can never run: {why}", spec.name));
        }
        // Java, Spark and the application's files are looked for here
        // too, as `mezz spark submit` does: the same paths hold where the
        // jobs framework runs and on every agent.
        if spec.kind == mezz_jobs::Kind::Spark {
            mezz_jobs::gang::spark_app(spec, &format!("{}.1", spec.name))
                .map_err(|e| anyhow!("job '{}' cannot run: {e}", spec.name))?;
        }
        services::check(spec).map_err(|e| anyhow!("job '{}' cannot run: {e:#}", spec.name))?;
    }
    Ok(specs)
}

async fn check(a: CheckArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let specs = match validated(&masters, a.input.file.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            errln!("mezz job: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let out: Vec<serde_json::Value> = specs
        .iter()
        .map(|spec| {
            let mut v = serde_json::to_value(spec).unwrap_or_default();
            v["task_command"] = spec.task_command().into();
            v
        })
        .collect();
    let v = if out.len() == 1 {
        out.into_iter().next().unwrap_or_default()
    } else {
        serde_json::Value::Array(out)
    };
    outln!("{}", serde_json::to_string_pretty(&v)?);
    Ok(ExitCode::SUCCESS)
}

/// Makes sure a jobs daemon runs for `masters`, starting one in the
/// background when none answers.
/// Makes sure a jobs daemon runs for `masters` (starting one in the
/// background when none answers) and wakes it: it reads the jobs at once.
async fn ensure_daemon(masters: &[String], dir: &DaemonDirArg) -> Result<()> {
    let (masters, dir) = DAEMON.resolve(Some(&masters.join(",")), dir.state_dir.as_deref())?;
    let state = mezz_sdk::daemon::StateDir::open(&dir, daemon::HOLDS)?;
    let info = DAEMON
        .client(&masters, &state, |info| async move {
            daemon::answers(&info).await.then_some(info)
        })
        .await?;
    daemon::wake(&info).await;
    Ok(())
}

/// Submits `specs` for a framework command that is sugar for them (`mezz
/// tf run`, `mezz spark submit`) and makes sure a jobs daemon runs them
/// (its state directory from `$MEZZ_JOBS_STATE`, else the default). A
/// refusal of the masters is the error, in their words.
pub(crate) async fn submit_for(masters: &[String], specs: &[JobSpec]) -> Result<Vec<JobRecord>> {
    let (mut op, addr) = client::leader(masters).await?;
    let jobs: Vec<JobRecord> = specs.iter().map(record::submitted).collect();
    let stored = match op.submit_jobs(SubmitJobsRequest { jobs }).await {
        Ok(r) => r.into_inner().jobs,
        Err(s) => return Err(anyhow!("submitting to {addr}: {}", s.message())),
    };
    let dir = DaemonDirArg {
        state_dir: std::env::var_os("MEZZ_JOBS_STATE")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
    };
    ensure_daemon(masters, &dir).await.context(
        "the job is stored, but no jobs daemon runs it; start one with `mezz job daemon`",
    )?;
    Ok(stored)
}

/// The job `name`, for the framework commands that follow one.
pub(crate) async fn job_named(masters: &[String], name: &str) -> Result<JobRecord> {
    get_job(masters, name).await
}

/// Why a job that did not succeed ended: its last attempt's outcome (the
/// gang's own words, without the task state around them), else the job's
/// reason, else its state.
pub(crate) fn outcome_of(j: &JobRecord) -> String {
    let attempt = j
        .attempts
        .last()
        .map(|a| a.reason.as_str())
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once(" (") {
            Some((_, inner)) if inner.ends_with(')') => inner[..inner.len() - 1].to_string(),
            _ => r.to_string(),
        });
    attempt
        .or_else(|| (!j.reason.is_empty()).then(|| j.reason.clone()))
        .unwrap_or_else(|| j.state.clone())
}

/// Kills the job `name` (Ctrl-C of a framework command that follows it).
pub(crate) async fn kill_job(masters: &[String], name: &str) -> Result<JobRecord> {
    control_call(masters, name, "kill").await
}

async fn submit(a: SubmitArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let specs = match validated(&masters, a.input.file.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            errln!("mezz job: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let (mut op, addr) = client::leader(&masters).await?;
    let jobs: Vec<JobRecord> = specs.iter().map(record::submitted).collect();
    let stored = match op.submit_jobs(SubmitJobsRequest { jobs }).await {
        Ok(r) => r.into_inner().jobs,
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::NotFound
            ) =>
        {
            errln!("mezz job: {}", s.message());
            return Ok(ExitCode::from(2));
        }
        Err(s) => return Err(anyhow!("submitting to {addr}: {}", s.message())),
    };
    for j in &stored {
        errln!(
            "mezz job: {} submitted ({}{})",
            j.name,
            j.state,
            view::run_note(j)
        );
    }
    ensure_daemon(&masters, &a.daemon).await.context(
        "the jobs are stored, but no jobs daemon runs them; start one with `mezz job daemon`",
    )?;
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<String> = stored.iter().map(|j| j.name.clone()).collect();
    view::wait(&masters, &names, a.print_json).await
}

async fn rerun(a: RerunArgs) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let j = control_call(&masters, &a.name, "rerun").await?;
    errln!(
        "mezz job: {} run {} submitted ({})",
        j.name,
        j.runs,
        j.state
    );
    ensure_daemon(&masters, &a.daemon).await?;
    if a.wait {
        return view::wait(&masters, &[j.name], false).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn control(a: NameArgs, action: &str) -> Result<ExitCode> {
    let masters = client::masters(a.master.master.as_deref())?;
    let j = control_call(&masters, &a.name, action).await?;
    let what = match action {
        "kill" if j.kill_requested && !is_terminal(&j.state) => {
            "is being killed (its running attempt is killed, no retry follows)".to_string()
        }
        "kill" => format!("is {}", j.state),
        "pause" => "is paused: it fires no runs until `mezz job resume`".into(),
        _ => "fires runs again".into(),
    };
    errln!("mezz job: {} {what}", j.name);
    Ok(ExitCode::SUCCESS)
}

/// One ControlJob call on the leader.
async fn control_call(masters: &[String], name: &str, action: &str) -> Result<JobRecord> {
    let (mut op, addr) = client::leader(masters).await?;
    op.control_job(ControlJobRequest {
        name: name.to_string(),
        action: action.to_string(),
    })
    .await
    .map(|r| r.into_inner())
    .map_err(|s| anyhow!("{action} {name} on {addr}: {}", s.message()))
}

/// One job from the leader.
async fn get_job(masters: &[String], name: &str) -> Result<JobRecord> {
    let (mut op, addr) = client::leader(masters).await?;
    op.get_job(GetJobRequest { name: name.into() })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| anyhow!("{addr}: {}", s.message()))
}

/// Jobs from the leader.
async fn list_jobs(masters: &[String], req: ListJobsRequest) -> Result<(Vec<JobRecord>, u64)> {
    let (mut op, addr) = client::leader(masters).await?;
    let r = op
        .list_jobs(req)
        .await
        .map_err(|s| anyhow!("{addr}: {}", s.message()))?
        .into_inner();
    Ok((r.jobs, r.matched))
}

async fn run_daemon(a: DaemonArgs) -> Result<ExitCode> {
    let (masters, dir) =
        DAEMON.resolve(a.master.master.as_deref(), a.daemon.state_dir.as_deref())?;
    let failover = crate::duration::parse(&a.failover_timeout)
        .map_err(|e| anyhow!("--failover-timeout: {e}"))?;
    if !daemon::run(masters, &dir, failover, super::shutdown_signal()).await? {
        errln!("mezz job: a jobs daemon already serves {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `--wait` looks at its jobs.
const WAIT_POLL: Duration = Duration::from_millis(300);

/// Prints the job file that a framework command's flags make (`--print-job`
/// of `mezz tf run`, `mezz spark submit`, `mezz jupyter start` and `mezz
/// serve deploy`): JSON, which `mezz job submit` reads as the YAML it is.
pub(crate) fn print_job(job: &serde_json::Value) -> Result<ExitCode> {
    outln!("{}", serde_json::to_string_pretty(job)?);
    Ok(ExitCode::SUCCESS)
}
