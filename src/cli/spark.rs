//! `mezz spark`: Apache Spark applications. `submit` is sugar for a job
//! of kind `spark`: it checks Java, Spark and the cluster, makes the job
//! file of its flags (`--print-job` shows it) and submits it to the jobs
//! framework, which runs the application with the `mezz-spark` framework
//! (a standalone master, workers and the driver as tasks); `submit` then
//! streams the driver's output and exits with its code. `ls` lists the
//! applications, `kill` ends one. The framework itself lives in
//! `frameworks/spark`, the jobs framework in `frameworks/jobs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use mezz_proto::v1::{ClusterState, OperatorKillRequest, TaskView};
use mezz_sdk::sizes::Sizes;
use mezz_sdk::Resources;
use mezz_spark::app::{FRAMEWORK_PREFIX, LABEL_ROLE};
use mezz_spark::{AppRequest, AppSpec, Role};
use tokio::sync::watch;

use super::logs::{Out, Tail};
use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct SparkArgs {
    #[command(subcommand)]
    pub command: SparkCommand,
}

#[derive(Subcommand, Debug)]
pub enum SparkCommand {
    /// Run a Spark application on the cluster and stream the driver's output.
    Submit(Box<SubmitArgs>),
    /// List the Spark applications on the cluster.
    Ls(LsArgs),
    /// Kill a Spark application: its driver, workers and master.
    Kill(KillArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    mezz spark submit --executors 2 job.py\n  \
    mezz spark submit --executors 4 --executor-memory 2g --conf spark.sql.shuffle.partitions=8 etl.py in/ out/\n  \
    mezz spark submit --class org.example.Main --spark-home /opt/spark app.jar\n\n\
Each application runs its own Spark standalone cluster as tasks: a master,\n\
one worker per executor (spread over the agents) and the driver\n\
(spark-submit --deploy-mode client). All start together or not at all.\n\
Spark is taken from --spark-home, $SPARK_HOME, or the pyspark package of\n\
--python / $PYSPARK_PYTHON / python3; it needs Java 17 or 21. Spark, Java,\n\
Python and the application must be at the same paths on every agent.\n\
The driver's output is streamed here; the exit code is the driver's (130\n\
after Ctrl-C). When the driver ends, or this command is interrupted, every\n\
task of the application is killed. The application is a job of the jobs\n\
framework (`mezz job`, started when none runs): it outlives this command\n\
(`mezz job show`, `mezz job kill` and `mezz spark kill` reach it), and it\n\
ends with that framework, 20 s after it is gone.")]
pub struct SubmitArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// Executors, each on a worker task of its own.
    #[arg(long, default_value_t = 2)]
    pub executors: u32,
    /// Cores of each executor (default 1, or the --size's CPUs).
    #[arg(long)]
    pub executor_cores: Option<u32>,
    /// Heap of each executor, e.g. 512m or 2g (default 1g). The worker
    /// task gets 768 MB more for the JVM and Python.
    #[arg(long)]
    pub executor_memory: Option<String>,
    /// Heap of the driver (default 1g).
    #[arg(long, default_value = "1g")]
    pub driver_memory: String,
    /// A named size for each executor's worker task: cpu-small, cpu-medium,
    /// cpu-large, gpu-small, gpu-large, or another size on the cluster's
    /// menu (`mezz sizes`). --executor-cores, --executor-memory and
    /// --gpus-per-executor override it.
    #[arg(long)]
    pub size: Option<String>,
    /// Whole GPUs for each executor's worker task (CUDA_VISIBLE_DEVICES).
    #[arg(long)]
    pub gpus_per_executor: Option<u32>,
    /// A Spark setting, K=V; repeat for more.
    #[arg(long = "conf", value_name = "K=V")]
    pub conf: Vec<String>,
    /// Python files for the executors' path (comma-separated).
    #[arg(long, value_name = "FILES")]
    pub py_files: Option<String>,
    /// The Python with pyspark, for the driver and the executors (default
    /// $PYSPARK_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Spark's directory (default $SPARK_HOME, else the pyspark package).
    #[arg(long)]
    pub spark_home: Option<PathBuf>,
    /// The application's name (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// The main class of a jar application.
    #[arg(long)]
    pub class: Option<String>,
    /// How long to wait for room for the whole application before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub wait: u64,
    /// Workers replaced at most when they die while the application runs.
    #[arg(long, default_value_t = 3)]
    pub max_replacements: u32,
    /// Role to run under (for fair sharing and quota).
    #[arg(long, default_value = "*")]
    pub role: String,
    /// Print the job file these flags make, and run nothing: `mezz job
    /// submit` of it runs the same application under the jobs framework
    /// (retries, schedules, dependencies, history).
    #[arg(long)]
    pub print_job: bool,
    /// The application: a .py file or a jar.
    pub app: PathBuf,
    /// The application's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub master: MasterArg,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// The application's id (see `mezz spark ls`), or its name when only
    /// one application has it.
    pub app: String,
}

pub async fn main(args: SparkArgs) -> Result<ExitCode> {
    match args.command {
        SparkCommand::Submit(a) => submit(*a).await,
        SparkCommand::Ls(a) => ls(a).await,
        SparkCommand::Kill(a) => kill(a).await,
    }
}

/// The application spec from the flags, with every local check done:
/// the files exist, Java and Spark are there.
/// The request the flags make: the same form as a job file's `spark:`
/// section (see [`mezz_spark::request`]).
pub fn request_of(args: &SubmitArgs) -> Result<AppRequest> {
    let mut conf = std::collections::BTreeMap::new();
    for kv in &args.conf {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| anyhow!("--conf '{kv}' is not K=V"))?;
        conf.insert(k.trim().to_string(), v.to_string());
    }
    Ok(AppRequest {
        app: args.app.display().to_string(),
        args: args.args.clone(),
        class: args.class.clone(),
        executors: Some(args.executors),
        executor_cores: args.executor_cores,
        executor_memory: args.executor_memory.clone(),
        driver_memory: Some(args.driver_memory.clone()),
        gpus_per_executor: args.gpus_per_executor,
        conf,
        py_files: args
            .py_files
            .as_deref()
            .map(|l| l.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        python: args.python.as_ref().map(|p| p.display().to_string()),
        spark_home: args.spark_home.as_ref().map(|p| p.display().to_string()),
        max_replacements: Some(args.max_replacements),
    })
}

/// A flag's name from its field's.
fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

fn spec_of(args: &SubmitArgs, sizes: &Sizes) -> Result<AppSpec> {
    let size = match &args.size {
        Some(s) => Some(sizes.get(s)?),
        None => None,
    };
    let request = request_of(args)?;
    // Checked before the id is made, so that a bad flag is named first.
    request
        .sizing(size.as_ref(), &flag)
        .map_err(|e| anyhow!(e))?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.app
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "spark".into())
    });
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let suffix = format!("{:x}", super::run::mezz_random());
    let id = format!("{clean}-{}", &suffix[..suffix.len().min(6)]);
    mezz_proto::ids::validate_id("task", &format!("{id}.worker.0.0"))
        .map_err(|e| anyhow!("--name: {e}"))?;
    let mut spec = request
        .resolve(&id, size.as_ref(), &flag)
        .map_err(|e| anyhow!(e))?;
    spec.name = name;
    Ok(spec)
}

/// Refuses an application whose executor (or master, or driver) fits no
/// connected agent, naming the largest one.
fn check_fits(spec: &AppSpec, state: &ClusterState) -> Result<()> {
    let agents: Vec<(Resources, &str, usize)> = state
        .agents
        .iter()
        .filter(|a| a.status == "connected")
        .filter_map(|a| {
            Resources::parse(&a.resources)
                .ok()
                .map(|r| (r, a.hostname.as_str(), a.gpus.len()))
        })
        .collect();
    if agents.is_empty() {
        bail!("no agent is connected to the cluster; start one with `mezz agent` (or `mezz dev`)");
    }
    let largest = agents
        .iter()
        .max_by(|a, b| {
            let c = |r: &Resources| (r.scalar("cpus"), r.scalar("mem"));
            c(&a.0)
                .partial_cmp(&c(&b.0))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|(r, host, _)| format!("the largest agent ({host}) has {r}"))
        .unwrap_or_default();
    for (role, what) in [
        (
            Role::Worker(0),
            "an executor's worker (--executor-cores, --executor-memory + 768 MB)",
        ),
        (Role::Master, "the Spark master"),
        (Role::Driver, "the driver (--driver-memory + 512 MB)"),
    ] {
        let need = spec.resources(role);
        let gpus = if role == Role::Worker(0) {
            spec.gpus_per_executor as usize
        } else {
            0
        };
        if !agents
            .iter()
            .any(|(r, _, g)| r.contains(&need) && *g >= gpus)
        {
            let gpus = if gpus > 0 {
                format!(" and {gpus} GPU(s)")
            } else {
                String::new()
            };
            bail!("{what} needs {need}{gpus}, more than any agent has; {largest}");
        }
    }
    Ok(())
}

async fn submit(args: SubmitArgs) -> Result<ExitCode> {
    let submitted = Instant::now();
    let masters = client::masters(args.master.master.as_deref())?;
    let sizes = match args.size {
        Some(_) => super::sizes::menu(&masters).await?,
        None => Sizes::builtin(),
    };
    let spec = spec_of(&args, &sizes)?;
    let mut request = request_of(&args)?;
    request.app = spec.app.display().to_string();
    request.py_files.clone_from(&spec.py_files);
    // The job is named as the application was: its name and a random
    // suffix (lowercase, as job names are), so each submit is its own.
    let name = spec.id.to_ascii_lowercase();
    let file = mezz_jobs::gang::spark_job_file(&name, &request, args.size.as_deref(), &args.role);
    if args.print_job {
        return super::job::print_job(&file);
    }
    let state = client::state(&masters, false)
        .await
        .context("reading the cluster state")?;
    check_fits(&spec, &state)?;
    let job =
        mezz_jobs::JobSpec::parse(&file.to_string(), &sizes).map_err(|e| anyhow!("{}", e.0))?;
    super::job::submit_for(&masters, &[job]).await?;
    follow(&masters, &name, Duration::from_secs(args.wait), submitted).await
}

/// Follows the application's job `name` to its end: the attempt's news
/// (launched, with the UIs; workers replaced), the driver's output, and
/// the driver's exit code. Not launched within `wait`, it is killed. Ctrl-C
/// kills it (again: leaves at once).
async fn follow(
    masters: &[String],
    name: &str,
    wait: Duration,
    submitted: Instant,
) -> Result<ExitCode> {
    let (finished, finished_rx) = watch::channel(false);
    let mut tails: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    let mut note = String::new();
    let mut launched = false;
    let mut interrupted = 0u32;
    let mut gave_up = false;
    let ctrl_c = super::shutdown_signal();
    tokio::pin!(ctrl_c);
    let j = loop {
        let j = match super::job::job_named(masters, name).await {
            Ok(j) => j,
            Err(e) => {
                eprintln!("mezz spark: {e:#}; trying again");
                tokio::time::sleep(FOLLOW_POLL).await;
                continue;
            }
        };
        for line in super::job::new_note_lines(&note, &j.note) {
            eprintln!("mezz spark: {name}: {line}");
        }
        note.clone_from(&j.note);
        let attempt = j.attempts.last();
        launched |= attempt.is_some_and(|a| !a.agent_id.is_empty());
        if let (Some(a), true) = (attempt, tails.is_empty()) {
            if let Some(driver) = placed_task(masters, &format!("{}.driver", a.task_id)).await {
                for (path, out) in [("stdout", Out::Stdout), ("stderr", Out::Stderr)] {
                    let (addr, fid, tid, fin) = (
                        driver.agent_address.clone(),
                        driver.framework_id.clone(),
                        driver.id.clone(),
                        finished_rx.clone(),
                    );
                    tails.push(tokio::spawn(async move {
                        Tail::connect(&addr, &fid, &tid, path)
                            .await?
                            .follow(out, fin)
                            .await
                    }));
                }
            }
        }
        if mezz_jobs::record::is_terminal(&j.state) {
            break j;
        }
        if !launched && !gave_up && submitted.elapsed() > wait {
            gave_up = true;
            let why = note.lines().last().unwrap_or("no offer came").to_string();
            eprintln!(
                "mezz spark: could not place {name} within {}s (--wait): {why}",
                wait.as_secs()
            );
            super::job::kill_job(masters, name).await?;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = &mut ctrl_c => {
                interrupted += 1;
                if interrupted > 1 {
                    return Ok(ExitCode::from(130));
                }
                match super::job::kill_job(masters, name).await {
                    Ok(_) => eprintln!("mezz spark: killing every task of {name} (Ctrl-C again to leave now)…"),
                    Err(e) => eprintln!("mezz spark: {e:#}"),
                }
                ctrl_c.set(super::shutdown_signal());
            }
        }
    };
    let _ = finished.send(true);
    super::logs::drain(tails, "mezz spark").await;
    let driver_task = j
        .attempts
        .last()
        .map(|a| format!("{}.driver", a.task_id))
        .unwrap_or_default();
    if j.state == "SUCCEEDED" {
        eprintln!(
            "mezz spark: {name} succeeded after {} ms",
            submitted.elapsed().as_millis()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "mezz spark: {name} ended after {} ms: {} (`mezz logs {driver_task} --stderr` has the driver's log)",
        submitted.elapsed().as_millis(),
        super::job::outcome_of(&j)
    );
    // The driver's exit code, as a shell would give it; 130 after Ctrl-C.
    let code = j
        .attempts
        .last()
        .filter(|a| a.has_exit_code && a.exit_code != 0)
        .map(|a| u8::try_from(a.exit_code).unwrap_or(1))
        .unwrap_or(1);
    Ok(ExitCode::from(if interrupted > 0 { 130 } else { code }))
}

/// How often `follow` reads the job.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The task `id`, once it reached an agent.
async fn placed_task(masters: &[String], id: &str) -> Option<TaskView> {
    let state = client::state(masters, true).await.ok()?;
    state
        .tasks
        .into_iter()
        .find(|t| t.id == id && !t.agent_address.is_empty())
}

/// The active tasks of each Spark application, by framework id.
fn app_tasks<'a>(state: &'a ClusterState, framework_id: &str) -> Vec<&'a TaskView> {
    const ACTIVE: [&str; 5] = ["STAGING", "STARTING", "RUNNING", "KILLING", "UNREACHABLE"];
    state
        .tasks
        .iter()
        .filter(|t| t.framework_id == framework_id && ACTIVE.contains(&t.state.as_str()))
        .collect()
}

async fn ls(args: LsArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, false)
        .await
        .context("reading the cluster state")?;
    println!(
        "{:<24} {:<13} {:<9} {:<10} {:<28} APP UI",
        "APP", "FRAMEWORK", "DRIVER", "EXECUTORS", "MASTER UI"
    );
    for f in state
        .frameworks
        .iter()
        .filter(|f| f.name.starts_with(FRAMEWORK_PREFIX))
    {
        let tasks = app_tasks(&state, &f.id);
        let of_role = |role: &'static str| {
            tasks.iter().filter(move |t| {
                t.labels
                    .get(LABEL_ROLE)
                    .is_some_and(|r| r.starts_with(role))
            })
        };
        let url = |role: &'static str| {
            of_role(role)
                .find_map(|t| t.labels.get("url").cloned())
                .unwrap_or_else(|| "-".into())
        };
        let driver = of_role("driver")
            .next()
            .map(|t| t.state.clone())
            .unwrap_or_else(|| "-".into());
        let workers = of_role("worker").filter(|t| t.state == "RUNNING").count();
        let master_ui = if f.webui_url.is_empty() {
            url("master")
        } else {
            f.webui_url.clone()
        };
        println!(
            "{:<24} {:<13} {:<9} {:<10} {:<28} {}",
            f.name.strip_prefix(FRAMEWORK_PREFIX).unwrap_or(&f.name),
            f.status,
            driver,
            workers,
            master_ui,
            url("driver"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn kill(args: KillArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    let state = client::state(&masters, false)
        .await
        .context("reading the cluster state")?;
    let apps: Vec<&str> = state
        .frameworks
        .iter()
        .filter_map(|f| f.name.strip_prefix(FRAMEWORK_PREFIX))
        .collect();
    let exact = apps.iter().find(|a| **a == args.app);
    let by_name: Vec<&&str> = apps
        .iter()
        .filter(|a| a.rsplit_once('-').is_some_and(|(n, _)| n == args.app))
        .collect();
    let app = match (exact, by_name.as_slice()) {
        (Some(a), _) => *a,
        (None, [one]) => **one,
        (None, []) => bail!(
            "no Spark application '{}' on the cluster; `mezz spark ls` lists them",
            args.app
        ),
        (None, many) => bail!(
            "{} applications are named '{}' ({}); give the id",
            many.len(),
            args.app,
            many.iter().map(|a| **a).collect::<Vec<_>>().join(", ")
        ),
    };
    let framework = state
        .frameworks
        .iter()
        .find(|f| f.name == format!("{FRAMEWORK_PREFIX}{app}"))
        .ok_or_else(|| anyhow!("application {app} vanished"))?;
    let mut tasks = app_tasks(&state, &framework.id);
    // The driver first: its end is the application's end, and its
    // framework then kills the rest by itself.
    tasks.sort_by_key(|t| t.labels.get(LABEL_ROLE).map(|r| r != "driver"));
    let (mut c, addr) = client::leader(&masters).await?;
    for t in &tasks {
        c.kill_task(OperatorKillRequest {
            task_id: t.id.clone(),
            framework_id: t.framework_id.clone(),
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))
        .with_context(|| format!("killing task {} through {addr}", t.id))?;
    }
    println!("killing Spark application {app} ({} task(s))", tasks.len());
    Ok(ExitCode::SUCCESS)
}
