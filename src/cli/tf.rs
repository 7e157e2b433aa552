//! `mezz tf`: distributed TensorFlow (and PyTorch) training jobs. `run`
//! submits a job to the `mezz-tensorflow` framework (gang-placed replicas
//! with TF_CONFIG, restarts) and streams every replica's output prefixed
//! with `type/index`; `status` shows a job's replicas. The framework itself
//! lives in `frameworks/tensorflow`; this is the terminal around it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use mezz_sdk::{proto, TaskState};
use mezz_tensorflow::{
    Flavor, JobEvent, JobFile, JobSpec, LaunchedReplica, Outcome, Overrides, RestartPolicy, Sizes,
    TfScheduler,
};
use tokio::sync::{mpsc, watch};

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
130 after Ctrl-C. `mezz logs JOB/worker/1` shows one replica's output.")]
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
    r: &LaunchedReplica,
    framework_id: &str,
    finished: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    ["stdout", "stderr"]
        .into_iter()
        .map(|path| {
            let (addr, fid, tid, fin) = (
                r.agent_address.clone(),
                framework_id.to_string(),
                r.task_id.clone(),
                finished.clone(),
            );
            let mut sink = Prefixed {
                prefix: format!("[{}] ", r.replica),
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
    let spec = spec_of(&args, &super::sizes::menu(&masters).await?)?;
    if args.print_job {
        return super::job::print_job(&mezz_jobs::gang::tf_job_file(
            &spec,
            &args.role,
            args.priority.as_deref(),
        ));
    }
    let name = spec.name.clone();
    let gpus = spec.groups.values().any(|g| g.gpus > 0);
    let replicas = spec.replicas();
    if !args.wait {
        refuse_what_never_fits(&masters, &spec, &args.role).await?;
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let scheduler = TfScheduler::new(spec, move |e| {
        let _ = tx.send(e);
    });
    let interrupt = scheduler.interrupt_handle();
    let framework = proto::FrameworkInfo {
        name: format!("mezz-tf {name}"),
        role: args.role.clone(),
        priority: args.priority.clone().unwrap_or_default(),
        failover_timeout_secs: 60.0,
        user: std::env::var("USER").unwrap_or_default(),
        // Only frameworks that declare it are offered GPUs.
        capabilities: if gpus {
            vec![proto::Capability::GpuResources as i32]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mut driver_run = tokio::spawn(
        crate::client::driver()?
            .masters(masters)
            .framework(framework)
            .connect_timeout(Duration::from_secs(8))
            .run(scheduler),
    );

    let (finished, finished_rx) = watch::channel(false);
    let mut tails = Vec::new();
    let mut tailed: HashSet<String> = HashSet::new();
    let mut launched: BTreeMap<String, LaunchedReplica> = BTreeMap::new();
    let mut framework_id = String::new();
    let mut waiting_said = String::new();
    let mut placing_since = Instant::now();
    let mut outcome: Option<Outcome> = None;
    let mut driver_error: Option<String> = None;
    let mut interrupted = 0u32;
    let mut driver_done = false;
    let ctrl_c = super::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(JobEvent::Waiting(why)) => {
                    if placing_since.elapsed() > Duration::from_secs(1) && why != waiting_said {
                        eprintln!("mezz tf: waiting to place all {replicas} replicas of {name} at once: {why}");
                        waiting_said = why;
                    }
                }
                Some(JobEvent::Launched { attempt, framework_id: fid, replicas: rs }) => {
                    framework_id = fid;
                    let agents: HashSet<&str> = rs.iter().map(|r| r.agent_address.as_str()).collect();
                    eprintln!(
                        "mezz tf: {name}: launched {} replicas on {} agent(s){} after {} ms",
                        rs.len(),
                        agents.len(),
                        if attempt > 0 { format!(" (attempt {attempt})") } else { String::new() },
                        submitted.elapsed().as_millis()
                    );
                    for r in rs {
                        launched.insert(r.task_id.clone(), r);
                    }
                }
                Some(JobEvent::Replica { replica, attempt, state, message, stopping }) => {
                    let task_id = replica.task_id(&name, attempt);
                    let starts = state == TaskState::Running || state.is_terminal();
                    if starts && !tailed.contains(&task_id) {
                        if let Some(r) = launched.get(&task_id) {
                            tailed.insert(task_id.clone());
                            tails.extend(tail_replica(r, &framework_id, &finished_rx));
                        }
                    }
                    if state.is_terminal() && state != TaskState::Finished && !stopping {
                        eprintln!("mezz tf: {replica} {}{}{message}", state.short_name(), if message.is_empty() { "" } else { ": " });
                    }
                }
                Some(JobEvent::AllRunning { attempt }) => {
                    eprintln!(
                        "mezz tf: {name}: all {replicas} replicas RUNNING{} {} ms after submit",
                        if attempt > 0 { format!(" (attempt {attempt})") } else { String::new() },
                        submitted.elapsed().as_millis()
                    );
                }
                Some(JobEvent::Restarting { restart, after, reason }) => {
                    eprintln!("mezz tf: {reason}; restarting the whole gang (restart {restart}) in {} ms", after.as_millis());
                    placing_since = Instant::now() + after;
                    waiting_said.clear();
                }
                Some(JobEvent::Done(o)) => outcome = Some(o),
                Some(JobEvent::Notice(m)) => eprintln!("mezz tf: {m}"),
                None => break,
            },
            done = &mut driver_run, if !driver_done => {
                driver_done = true;
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => driver_error = Some(e.to_string()),
                    Err(e) => return Err(anyhow!("the framework driver failed: {e}")),
                }
            }
            _ = &mut ctrl_c => {
                interrupted += 1;
                if interrupted == 1 && interrupt.trigger() {
                    eprintln!("mezz tf: killing every replica of {name} (Ctrl-C again to leave now)…");
                    ctrl_c.set(super::shutdown_signal());
                } else {
                    if let Some(d) = interrupt.driver() { d.teardown(); }
                    return Ok(ExitCode::from(130));
                }
            }
        }
    }
    let _ = finished.send(true);
    super::logs::drain(tails, "mezz tf").await;
    match outcome {
        Some(Outcome::Succeeded) => {
            eprintln!("mezz tf: {name} succeeded");
            Ok(ExitCode::SUCCESS)
        }
        Some(Outcome::Failed(why)) => {
            eprintln!("mezz tf: {name} failed: {why}");
            Ok(ExitCode::from(if interrupted > 0 { 130 } else { 1 }))
        }
        None => Err(anyhow!(
            "{}",
            driver_error.unwrap_or_else(|| format!("the framework of job {name} ended early"))
        )),
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
    let prefix = format!("{}/", args.job);
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
        .find(|f| f.name == format!("mezz-tf {}", args.job));
    let running = latest.values().filter(|t| t.state == "RUNNING").count();
    println!(
        "job {}: {} of {} replicas RUNNING; framework {}",
        args.job,
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
