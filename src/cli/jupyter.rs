//! `mezz jupyter`: notebook servers on the cluster. `start`, `ls`, `url`
//! and `stop` talk to the cluster's Jupyter framework (the daemon, started
//! in the background on first use) over its local API; `daemon` is that
//! framework process itself. The framework lives in `frameworks/jupyter`;
//! this is the terminal around it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use mezz_jupyter::{daemon, notebook, store, Client, NotebookView, StartRequest};

use super::daemon_start::{absolute, FrameworkDaemon};
use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct JupyterArgs {
    #[command(subcommand)]
    pub command: JupyterCommand,
}

/// Where a cluster's notebooks are kept.
#[derive(Args, Debug, Clone)]
pub struct StateArg {
    #[command(flatten)]
    pub master: MasterArg,
    /// The framework's state directory (notebooks, tokens, framework id,
    /// daemon log). Default: `$XDG_STATE_HOME/mezz/jupyter/<master>`, else
    /// `~/.local/state/mezz/jupyter/<master>`.
    #[arg(long, env = "MEZZ_JUPYTER_STATE", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum JupyterCommand {
    /// Start a notebook server on the cluster and print its URL (with token).
    Start(StartArgs),
    /// List the notebooks: URL (without token), resources, GPUs, idle time, state.
    Ls(LsArgs),
    /// Print a notebook's URL with its token.
    Url(NameArgs),
    /// Stop a notebook server and free its resources (its files stay).
    Stop(NameArgs),
    /// Run the Jupyter framework in the foreground (`start` runs it in the
    /// background when it is not running).
    Daemon(DaemonArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    mezz jupyter start --name explore\n  \
    mezz jupyter start --name train --gpus 1 --idle-timeout 1h\n  \
    mezz jupyter start --size gpu-small --notebook-dir /data/me/project\n\n\
The server is JupyterLab when the Python can import jupyterlab, else the\n\
plain jupyter_server; it needs `pip install jupyter-server ipykernel`. The\n\
notebook files live in --notebook-dir, else in $MEZZ_JUPYTER_NOTEBOOKS/NAME\n\
(default ~/mezz-notebooks/NAME) on the agent's host, and stay there after\n\
the server stops. A crashed server is restarted on the same agent.")]
pub struct StartArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The notebook's name (letters, digits, '-', '_'); default nb-N.
    #[arg(long)]
    pub name: Option<String>,
    /// CPUs (default 1, or the size's).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory in MB (default 1024, or the size's).
    #[arg(long)]
    pub mem: Option<f64>,
    /// Whole GPUs (default 0, or the size's).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// A named size: cpu-small, cpu-medium, cpu-large, gpu-small,
    /// gpu-large, or another size on the cluster's menu (`mezz sizes`).
    /// --cpus, --mem and --gpus override it.
    #[arg(long)]
    pub size: Option<String>,
    /// Stop the server after this long without activity (e.g. 30m, 2h):
    /// no request, no kernel running code. Default: never.
    #[arg(long, value_name = "DUR")]
    pub idle_timeout: Option<String>,
    /// The notebook directory on the agent's host (made when missing).
    #[arg(long, value_name = "DIR")]
    pub notebook_dir: Option<PathBuf>,
    /// The Python that runs the server (on the agent's host).
    #[arg(long, default_value = "python3", value_name = "PATH")]
    pub python: String,
    /// How long to wait for the server to answer.
    #[arg(long, default_value = "3m", value_name = "DUR")]
    pub wait: String,
    /// Print the job file these flags make (with --name), and start
    /// nothing: `mezz job submit` of it starts the same notebook as a job
    /// (schedules, dependencies, history).
    #[arg(long)]
    pub print_job: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// One JSON array (no tokens).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The notebook's name.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// How long the servers keep running while no daemon is connected; a
    /// daemon started within it takes them back.
    #[arg(long, default_value = "24h", value_name = "DUR")]
    pub failover_timeout: String,
    /// How often each server is asked about its activity.
    #[arg(long, default_value = "1s", value_name = "DUR")]
    pub poll_interval: String,
}

pub async fn main(args: JupyterArgs) -> Result<ExitCode> {
    match args.command {
        JupyterCommand::Start(a) => start(a).await,
        JupyterCommand::Ls(a) => ls(a).await,
        JupyterCommand::Url(a) => url(a).await,
        JupyterCommand::Stop(a) => stop(a).await,
        JupyterCommand::Daemon(a) => run_daemon(a).await,
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration> {
    crate::duration::parse(text).map_err(|e| anyhow!("{flag}: {e}"))
}

/// The masters and the state directory of a command.
fn resolve(state: &StateArg) -> Result<(Vec<String>, PathBuf)> {
    DAEMON.resolve(state.master.master.as_deref(), state.state_dir.as_deref())
}

/// How `mezz jupyter` finds or starts its daemon.
const DAEMON: FrameworkDaemon = FrameworkDaemon {
    command: "jupyter",
    name: "jupyter",
    kind: store::KIND,
};

/// A client of the running daemon, starting one in the background (its
/// output in `daemon.log` of the state directory) when none answers.
async fn daemon_client(state: &StateArg) -> Result<Client> {
    let (masters, dir) = resolve(state)?;
    let store = store::open(&dir)?;
    DAEMON
        .client(&masters, &store, |info| async move {
            let c = Client::new(info);
            c.health().await.ok().map(|_| c)
        })
        .await
}

/// Does `python` have Jupyter? Returns whether it has JupyterLab.
fn check_python(python: &str) -> Result<bool> {
    let can_import = |module: &str| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    match can_import("jupyter_server") {
        Ok(s) if s.success() => {}
        Ok(_) => {
            return Err(anyhow!(
                "{python} has no Jupyter server: install it with `{python} -m pip install jupyter-server ipykernel` (or pass --python PATH)"
            ))
        }
        Err(e) => {
            return Err(anyhow!(
                "cannot run {python} ({e}): pass --python PATH to a Python with `pip install jupyter-server ipykernel`"
            ))
        }
    }
    Ok(can_import("jupyterlab").is_ok_and(|s| s.success()))
}

fn notebook_root() -> Result<String> {
    if let Some(root) = std::env::var_os("MEZZ_JUPYTER_NOTEBOOKS").filter(|v| !v.is_empty()) {
        return Ok(absolute(Path::new(&root))?.display().to_string());
    }
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("$HOME is not set: pass --notebook-dir DIR"))?;
    Ok(format!("{}/mezz-notebooks", home.trim_end_matches('/')))
}

/// The request to start a notebook of `(cpus, mem, gpus)`: what `mezz
/// jupyter start` sends for its flags, and the jobs framework for a job of
/// kind jupyter. The Python is checked for Jupyter here.
pub(crate) fn start_request(
    name: Option<String>,
    (cpus, mem, gpus): (f64, f64, u32),
    idle_timeout: Option<Duration>,
    notebook_dir: Option<&Path>,
    python: &str,
) -> Result<StartRequest> {
    let python = if python.contains('/') {
        absolute(Path::new(python))?.display().to_string()
    } else {
        python.to_string()
    };
    let lab = check_python(&python)?;
    Ok(StartRequest {
        name,
        cpus,
        mem,
        gpus,
        idle_timeout_secs: idle_timeout.map(|d| d.as_secs_f64()),
        notebook_dir: notebook_dir
            .map(absolute)
            .transpose()?
            .map(|d| d.display().to_string()),
        notebook_root: notebook_root()?,
        python,
        lab,
    })
}

/// A client of the Jupyter framework of `masters` (its state directory
/// from `$MEZZ_JUPYTER_STATE`, as for `mezz jupyter`, else the default),
/// starting it in the background when none answers.
pub(crate) async fn client_of(masters: &[String]) -> Result<Client> {
    daemon_client(&StateArg {
        master: MasterArg {
            master: Some(masters.join(",")),
        },
        state_dir: std::env::var_os("MEZZ_JUPYTER_STATE")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
    })
    .await
}

async fn start(args: StartArgs) -> Result<ExitCode> {
    // Everything that can be refused is checked before anything runs.
    if let Some(n) = &args.name {
        notebook::validate_name(n)?;
    }
    let size = match &args.size {
        Some(s) => {
            let (masters, _) = resolve(&args.state)?;
            Some(super::sizes::menu(&masters).await?.get(s)?)
        }
        None => None,
    };
    let idle_timeout = args
        .idle_timeout
        .as_deref()
        .map(|t| duration("--idle-timeout", t))
        .transpose()?;
    let wait = duration("--wait", &args.wait)?;
    let request = start_request(
        args.name.clone(),
        (
            args.cpus.or(size.map(|s| s.cpus)).unwrap_or(1.0),
            args.mem.or(size.map(|s| s.mem)).unwrap_or(1024.0),
            args.gpus.or(size.map(|s| s.gpus)).unwrap_or(0),
        ),
        idle_timeout,
        args.notebook_dir.as_deref(),
        &args.python,
    )?;
    if args.print_job {
        let name = args
            .name
            .clone()
            .ok_or_else(|| anyhow!("--print-job needs --name: a job is named"))?;
        let section = mezz_jobs::service::JupyterSection {
            idle_timeout: args.idle_timeout.clone(),
            notebook_dir: request.notebook_dir.clone(),
            python: Some(request.python.clone()),
        };
        return super::job::print_job(&mezz_jobs::service::jupyter_job_file(
            &name,
            (request.cpus, request.mem, request.gpus),
            &section,
        ));
    }
    // A cluster that does not answer would leave the notebook waiting
    // silently: say so now, with nothing started.
    let (masters, _) = resolve(&args.state)?;
    client::leader(&masters).await?;
    let client = daemon_client(&args.state).await?;
    let view = client.start(&request).await?;
    let name = view.name.clone();
    eprintln!(
        "mezz jupyter: starting notebook {name} ({} CPUs, {} MB{}); files in {} on the agent's host",
        view.cpus,
        view.mem,
        if view.gpus > 0 {
            format!(", {} GPU(s)", view.gpus)
        } else {
            String::new()
        },
        view.notebook_dir
    );
    let deadline = Instant::now() + wait;
    let mut said = String::new();
    loop {
        let Some(v) = client.get(&name).await? else {
            return Err(anyhow!(
                "notebook {name} ended before its server answered; see `mezz ps --all` and `mezz logs TASK --stderr`"
            ));
        };
        if v.state == "running" {
            let url = v
                .url_with_token
                .ok_or_else(|| anyhow!("notebook {name} runs but has no URL"))?;
            println!("{url}");
            return Ok(ExitCode::SUCCESS);
        }
        let now = format!("{} {}", v.state, v.message);
        if now != said && !v.message.is_empty() {
            eprintln!("mezz jupyter: {name} {}: {}", v.state, v.message);
        }
        said = now;
        if Instant::now() > deadline {
            return Err(anyhow!(
                "notebook {name} did not answer within {:?} (state {}{}); it stays wanted: `mezz jupyter ls` shows it, `mezz logs {} --stderr` shows the server's output, `mezz jupyter stop {name}` gives it up",
                wait,
                v.state,
                if v.message.is_empty() { String::new() } else { format!(": {}", v.message) },
                v.task_id.as_deref().unwrap_or("TASK")
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn fmt_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

async fn ls(args: LsArgs) -> Result<ExitCode> {
    let client = daemon_client(&args.state).await?;
    let list = client.list().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<10} {:<32} {:>5} {:>7} {:<14} {:<12} DIR",
        "NAME", "STATE", "URL", "CPUS", "MEM", "GPUS", "IDLE"
    );
    for v in list {
        println!("{}", ls_line(&v));
    }
    Ok(ExitCode::SUCCESS)
}

fn ls_line(v: &NotebookView) -> String {
    let gpus = if v.gpu_ids.is_empty() {
        v.gpus.to_string()
    } else {
        v.gpu_ids.join(",")
    };
    let idle = match (v.idle_secs, v.idle_timeout_secs) {
        (Some(i), Some(t)) => format!("{}/{}", fmt_duration(i), fmt_duration(t)),
        (Some(i), None) => fmt_duration(i),
        (None, _) => "-".into(),
    };
    format!(
        "{:<16} {:<10} {:<32} {:>5} {:>7} {:<14} {:<12} {}",
        v.name,
        v.state,
        v.url.as_deref().unwrap_or("-"),
        v.cpus,
        v.mem,
        gpus,
        idle,
        v.notebook_dir
    )
}

fn not_found(name: &str) -> anyhow::Error {
    anyhow!("no notebook named '{name}'; `mezz jupyter ls` lists them")
}

async fn url(args: NameArgs) -> Result<ExitCode> {
    if notebook::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let client = daemon_client(&args.state).await?;
    let v = client
        .get(&args.name)
        .await?
        .ok_or_else(|| not_found(&args.name))?;
    let url = v.url_with_token.ok_or_else(|| {
        anyhow!(
            "notebook {} has no URL yet (state {}); try again in a moment",
            v.name,
            v.state
        )
    })?;
    println!("{url}");
    Ok(ExitCode::SUCCESS)
}

async fn stop(args: NameArgs) -> Result<ExitCode> {
    if notebook::validate_name(&args.name).is_err() {
        return Err(not_found(&args.name));
    }
    let client = daemon_client(&args.state).await?;
    client.stop(&args.name).await?;
    // Gone from the book once the kill is confirmed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(&args.name).await?.is_some() {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "notebook {} is still stopping after 60 s; `mezz jupyter ls` shows it",
                args.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("mezz jupyter: stopped {} (its files stay)", args.name);
    Ok(ExitCode::SUCCESS)
}

async fn run_daemon(args: DaemonArgs) -> Result<ExitCode> {
    let (masters, state_dir) = resolve(&args.state)?;
    let config = daemon::Config {
        masters,
        state_dir,
        failover_timeout: duration("--failover-timeout", &args.failover_timeout)?,
        poll_interval: duration("--poll-interval", &args.poll_interval)?
            .max(Duration::from_millis(100)),
    };
    if !daemon::run(config, super::shutdown_signal()).await? {
        eprintln!("mezz jupyter: a daemon already serves this state directory");
    }
    Ok(ExitCode::SUCCESS)
}
