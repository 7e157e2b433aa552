//! `mezz tf`: distributed TensorFlow (and PyTorch) training jobs. `run` is
//! sugar for a job of kind `tensorflow` or `pytorch`: its flags make the
//! job file (`--print-job` shows it), which is submitted to the jobs
//! framework; that runs each attempt with the `mezz-tensorflow` framework
//! (gang-placed replicas with TF_CONFIG, restarts). `run` then follows the
//! job: its news, every replica's output prefixed with `type/index`, its
//! outcome. `status` shows a job's replicas. The framework itself lives in
//! `frameworks/tensorflow`, the jobs framework in `frameworks/jobs`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use mezz_sdk::proto;
use mezz_tensorflow::{Flavor, JobFile, JobSpec, Overrides, RestartPolicy, Sizes};
use tokio::sync::watch;

use super::capacity::{gang_never_fits, Need};
use super::logs::Tail;
use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct TfArgs {
    #[command(subcommand)]
    pub command: TfCommand,
}

#[derive(Subcommand, Debug)]
pub enum TfCommand {
    /// Run a distributed training job and stream every replica's output.
    Run(Box<TfRunArgs>),
    /// Show a job's replicas and their states.
    Status(TfStatusArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    mezz tf run --workers 2 -- python3 train.py\n  \
    mezz tf run --chief --ps 1 --workers 4 --restart on-failure:3 -- python3 train.py\n  \
    mezz tf run --workers 4 --size gpu-large -- python3 train.py     # the same job on GPUs\n  \
    mezz tf run --flavor pytorch --workers 2 -- torchrun-free-script.py\n  \
    mezz tf run --workers 2 --start-deadline 10m --run-deadline 2h -- python3 train.py\n  \
    mezz tf run --file job.toml\n\n\
Every replica gets a port of its own and TF_CONFIG naming every replica's\n\
host:port (or, with --flavor pytorch, MASTER_ADDR, MASTER_PORT, WORLD_SIZE,\n\
RANK and LOCAL_RANK). All replicas start together or not at all. The job\n\
succeeds when the chief finishes (without a chief: when every worker\n\
finishes); the rest are then killed. Exit code: 0 on success, 1 otherwise,\n\
130 after Ctrl-C (which kills the job). The job is run by the jobs\n\
framework (`mezz job`, started when none runs), so it outlives this\n\
command: `mezz job show JOB` and `mezz job kill JOB` reach it, and its\n\
attempts are kept. Attempt N runs as JOB.N: `mezz logs JOB.1/worker/1`\n\
shows one replica's output.")]
pub struct TfRunArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// One chief replica (its end is the job's end).
    #[arg(long)]
    pub chief: bool,
    /// Worker replicas (default 1 when nothing else is asked for).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Parameter-server replicas.
    #[arg(long)]
    pub ps: Option<u32>,
    /// One evaluator replica (not part of the cluster spec).
    #[arg(long)]
    pub evaluator: bool,
    /// CPUs of each replica (default 1).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory of each replica in MB (default 1024).
    #[arg(long)]
    pub mem: Option<f64>,
    /// Whole GPUs of each chief and worker.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// A named size (cpus, mem and GPUs in one word): cpu-small, cpu-medium,
    /// cpu-large, gpu-small, gpu-large, or another size on the cluster's
    /// menu (`mezz sizes`). --cpus, --mem and --gpus override it.
    #[arg(long)]
    pub size: Option<String>,
    /// Environment variable for every replica, K=V; repeat for more.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// tensorflow (TF_CONFIG) or pytorch (MASTER_ADDR, RANK, …).
    #[arg(long)]
    pub flavor: Option<String>,
    /// never, on-failure (3 restarts) or on-failure:N: a failed replica
    /// restarts the whole gang, with backoff.
    #[arg(long)]
    pub restart: Option<String>,
    /// The start deadline: each attempt's whole gang must be launched
    /// within this long of starting to wait (the job's start, or a
    /// restart's backoff ending); otherwise the job fails
    /// (DEADLINE_NOT_MET), saying what the gang lacked.
    #[arg(long, value_parser = crate::duration::parse, value_name = "DUR")]
    pub start_deadline: Option<Duration>,
    /// The run deadline: this long after the first launch (restarts
    /// included) every replica is killed and the job fails
    /// (DEADLINE_EXCEEDED).
    #[arg(long, value_parser = crate::duration::parse, value_name = "DUR")]
    pub run_deadline: Option<Duration>,
    /// The job's name (task names are JOB/worker/0, …); defaults to the
    /// script's name.
    #[arg(long)]
    pub name: Option<String>,
    /// A job file (TOML, or YAML for .yaml/.yml): replica groups with
    /// count, size, cpus, mem, gpus, command; command, env, flavor,
    /// restart, start_deadline, run_deadline. Flags override it.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Role to run under (for fair sharing and quota).
    #[arg(long, default_value = "*")]
    pub role: String,
    /// The job's priority class (see `mezz priorities`). Its replicas are
    /// one gang: preempted together by a higher class, or not at all.
    #[arg(long, value_name = "CLASS")]
    pub priority: Option<String>,
    /// Wait for big enough agents to join even when no registered agent
    /// could ever hold a replica (without it, such a job is refused at
    /// once, naming the largest agent).
    #[arg(long)]
    pub wait: bool,
    /// Print the job file these flags make, and run nothing: `mezz job
    /// submit` of it runs the same gang under the jobs framework (retries,
    /// schedules, dependencies, history).
    #[arg(long)]
    pub print_job: bool,
    /// The command every replica runs, with its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TfStatusArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The job's name.
    pub job: String,
}

pub async fn main(args: TfArgs) -> Result<ExitCode> {
    match args.command {
        TfCommand::Run(a) => run(*a).await,
        TfCommand::Status(a) => status(a).await,
    }
}

fn spec_of(args: &TfRunArgs, sizes: &Sizes) -> Result<JobSpec> {
    let file = args.file.as_deref().map(JobFile::load).transpose()?;
    let mut env = Vec::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow!("--env '{kv}' is not K=V"))?;
        env.push((k.to_string(), v.to_string()));
    }
    let overrides = Overrides {
        name: args.name.clone(),
        chief: args.chief,
        workers: args.workers,
        ps: args.ps,
        evaluator: args.evaluator,
        size: args.size.as_deref().map(|s| sizes.get(s)).transpose()?,
        cpus: args.cpus,
        mem: args.mem,
        gpus: args.gpus,
        env,
        flavor: args
            .flavor
            .as_deref()
            .map(str::parse::<Flavor>)
            .transpose()?,
        restart: args
            .restart
            .as_deref()
            .map(str::parse::<RestartPolicy>)
            .transpose()?,
        start_deadline: args.start_deadline,
        run_deadline: args.run_deadline,
        command: args.command.clone(),
    };
    Ok(JobSpec::build(file, overrides, |n| Ok(sizes.get(n)?))?)
}

/// Writes whole lines with a prefix; what is left at the end is written
/// when it is dropped.
struct Prefixed {
    prefix: String,
    stderr: bool,
    buf: Vec<u8>,
}

impl Prefixed {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            self.write(&line);
        }
    }

    fn write(&self, line: &[u8]) {
        let mut out = Vec::with_capacity(self.prefix.len() + line.len() + 1);
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(line);
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        // A closed pipe (e.g. `| head`) is not worth reporting.
        let _ = if self.stderr {
            std::io::stderr().lock().write_all(&out)
        } else {
            std::io::stdout().lock().write_all(&out)
        };
    }
}

impl Drop for Prefixed {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.write(&self.buf.clone());
        }
    }
}

fn tail_replica(
    replica: &str,
    t: &proto::TaskView,
    finished: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    ["stdout", "stderr"]
        .into_iter()
        .map(|path| {
            let (addr, fid, tid, fin) = (
                t.agent_address.clone(),
                t.framework_id.clone(),
                t.id.clone(),
                finished.clone(),
            );
            let mut sink = Prefixed {
                prefix: format!("[{replica}] "),
                stderr: path == "stderr",
                buf: Vec::new(),
            };
            tokio::spawn(async move {
                Tail::connect(&addr, &fid, &tid, path)
                    .await?
                    .follow_with(move |d| sink.push(d), fin)
                    .await
            })
        })
        .collect()
}

async fn run(args: TfRunArgs) -> Result<ExitCode> {
    let submitted = Instant::now();
    let masters = client::masters(args.master.master.as_deref())?;
    let mut spec = spec_of(&args, &super::sizes::menu(&masters).await?)?;
    if args.name.is_none() {
        // Named after the script: job names are lowercase.
        spec.name = spec.name.to_ascii_lowercase();
    }
    let file = mezz_jobs::gang::tf_job_file(&spec, &args.role, args.priority.as_deref());
    if args.print_job {
        return super::job::print_job(&file);
    }
    let job = mezz_jobs::JobSpec::parse(&file.to_string(), &Sizes::builtin()).map_err(|e| {
        if e.0.contains("`name`") {
            anyhow!("--name: {}", e.0)
        } else {
            anyhow!("{}", e.0)
        }
    })?;
    if !args.wait {
        refuse_what_never_fits(&masters, &spec, &args.role).await?;
    }
    let name = spec.name.clone();
    super::job::submit_for(&masters, &[job]).await?;
    follow(&masters, &name, submitted).await
}

/// Follows the job `name` that `run` submitted to its end: the news of its
/// attempt (waiting, launched, all running, restarting), each replica's
/// output prefixed with `[type/index]`, and its outcome. Ctrl-C kills the
/// job (again: leaves at once).
async fn follow(masters: &[String], name: &str, submitted: Instant) -> Result<ExitCode> {
    let submitted_wall = mezz_proto::unix_now() - submitted.elapsed().as_secs_f64();
    let (finished, finished_rx) = watch::channel(false);
    let mut tails = Vec::new();
    let mut tailed: HashSet<String> = HashSet::new();
    let mut note = String::new();
    let mut seen_attempts = 0usize;
    let mut interrupted = 0u32;
    let ctrl_c = super::shutdown_signal();
    tokio::pin!(ctrl_c);
    let j = loop {
        let j = match super::job::job_named(masters, name).await {
            Ok(j) => j,
            Err(e) => {
                eprintln!("mezz tf: {e:#}; trying again");
                tokio::time::sleep(FOLLOW_POLL).await;
                continue;
            }
        };
        let current: Vec<&proto::JobAttempt> =
            j.attempts.iter().skip(j.run_start as usize).collect();
        if current.len() > seen_attempts {
            seen_attempts = current.len();
            note.clear();
        }
        for line in super::job::new_note_lines(&note, &j.note) {
            let since_submit = current
                .last()
                .and_then(|a| ms_after_submit(line, a.started_at, submitted_wall));
            match since_submit {
                Some(ms) => eprintln!("mezz tf: {name}: {line}, {ms} ms after submit"),
                None => eprintln!("mezz tf: {name}: {line}"),
            }
        }
        note.clone_from(&j.note);
        if let Some(a) = current.last() {
            tail_new_replicas(masters, &a.task_id, &mut tailed, &mut tails, &finished_rx).await;
        }
        if mezz_jobs::record::is_terminal(&j.state) {
            break j;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = &mut ctrl_c => {
                interrupted += 1;
                if interrupted > 1 {
                    return Ok(ExitCode::from(130));
                }
                match super::job::kill_job(masters, name).await {
                    Ok(_) => eprintln!("mezz tf: killing every replica of {name} (Ctrl-C again to leave now)…"),
                    Err(e) => eprintln!("mezz tf: {e:#}"),
                }
                ctrl_c.set(super::shutdown_signal());
            }
        }
    };
    // The last replicas to start may have ended between two reads.
    if let Some(a) = j.attempts.last() {
        tail_new_replicas(masters, &a.task_id, &mut tailed, &mut tails, &finished_rx).await;
    }
    let _ = finished.send(true);
    super::logs::drain(tails, "mezz tf").await;
    if j.state == "SUCCEEDED" {
        eprintln!(
            "mezz tf: {name} succeeded after {} ms",
            submitted.elapsed().as_millis()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("mezz tf: {name} failed: {}", super::job::outcome_of(&j));
    Ok(ExitCode::from(if interrupted > 0 { 130 } else { 1 }))
}

/// For the news that every replica runs (`… RUNNING N ms after the attempt
/// started`): how long after the submit that was, from the attempt's start
/// (seconds since the epoch, as the jobs framework recorded it).
fn ms_after_submit(line: &str, attempt_started: f64, submitted: f64) -> Option<u64> {
    let ms: f64 = line
        .strip_suffix(" ms after the attempt started")?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()?;
    line.contains("replicas RUNNING").then(|| {
        ((attempt_started - submitted) * 1000.0 + ms)
            .max(0.0)
            .round() as u64
    })
}

/// How often `follow` reads the job and its tasks.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Starts tailing each replica of `attempt` that reached an agent and was
/// not tailed yet.
async fn tail_new_replicas(
    masters: &[String],
    attempt: &str,
    tailed: &mut HashSet<String>,
    tails: &mut Vec<tokio::task::JoinHandle<Result<()>>>,
    finished: &watch::Receiver<bool>,
) {
    let Ok(state) = client::state(masters, true).await else {
        return;
    };
    let prefix = format!("{attempt}/");
    for t in &state.tasks {
        let Some(replica) = t.name.strip_prefix(&prefix) else {
            continue;
        };
        if t.state != "STAGING" && !t.agent_address.is_empty() && tailed.insert(t.id.clone()) {
            tails.extend(tail_replica(replica, t, finished));
        }
    }
}

/// Refuses a job with a replica that no registered agent could ever hold.
/// A cluster state that cannot be read, or one without agents yet, lets
/// the job wait.
async fn refuse_what_never_fits(masters: &[String], spec: &JobSpec, role: &str) -> Result<()> {
    let state = tokio::time::timeout(Duration::from_secs(5), client::state(masters, false)).await;
    let Ok(Ok(state)) = state else {
        return Ok(());
    };
    let groups: Vec<(String, Need, u32)> = spec
        .groups
        .iter()
        .map(|(kind, g)| {
            let need = Need {
                cpus: g.cpus,
                mem: g.mem,
                gpus: g.gpus,
                role: role.to_string(),
            };
            (kind.to_string(), need, g.count)
        })
        .collect();
    match gang_never_fits(&state.agents, &groups) {
        Some(why) => Err(anyhow!(
            "job {}: {why}; pass --wait to wait for a bigger agent to join",
            spec.name
        )),
        None => Ok(()),
    }
}

async fn status(args: TfStatusArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, true)
        .await
        .context("reading the cluster state")?;
    // A job's replicas are its latest attempt's (`JOB.N/worker/0`); an
    // attempt may be named too.
    let gang = match super::job::job_named(&masters, &args.job).await {
        Ok(j) => j
            .attempts
            .last()
            .map(|a| a.task_id.clone())
            .unwrap_or_else(|| args.job.clone()),
        Err(_) => args.job.clone(),
    };
    let prefix = format!("{gang}/");
    // Active tasks first, then newest first: the first of a name is the
    // replica's latest attempt.
    let mut latest: BTreeMap<String, &proto::TaskView> = BTreeMap::new();
    for t in state.tasks.iter().filter(|t| t.name.starts_with(&prefix)) {
        latest.entry(t.name.clone()).or_insert(t);
    }
    if latest.is_empty() {
        return Err(anyhow!(
            "no job '{}' known to the master (no task named {prefix}…); see `mezz ps --all`",
            args.job
        ));
    }
    let framework = state
        .frameworks
        .iter()
        .find(|f| f.name == format!("mezz-tf {gang}"));
    let running = latest.values().filter(|t| t.state == "RUNNING").count();
    println!(
        "job {gang}: {} of {} replicas RUNNING; framework {}",
        running,
        latest.len(),
        framework
            .map(|f| format!("{} ({})", f.id, f.status))
            .unwrap_or_else(|| "gone".into())
    );
    println!(
        "{:<14} {:<28} {:<9} {:<22} RESOURCES",
        "REPLICA", "TASK", "STATE", "HOST"
    );
    for (name, t) in latest {
        println!(
            "{:<14} {:<28} {:<9} {:<22} {}",
            name.strip_prefix(&prefix).unwrap_or(&name),
            t.id,
            t.state,
            t.hostname,
            t.resources
        );
    }
    Ok(ExitCode::SUCCESS)
}
