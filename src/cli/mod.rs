//! The command line: one module per subcommand. `--help` is the user
//! documentation, so it is written for people.

mod agent;
mod dev;
mod inspect;
mod logs;
mod master;
mod masters;
mod roles;
mod run;
mod spark;
mod tf;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// Hidden subcommand the agent runs to start each task (see
/// `mezz_agent::launch_main`).
pub const LAUNCH_SUBCOMMAND: &str = "__launch";

/// Mezzanine: a two-level resource scheduler for ML and data platforms.
#[derive(Parser, Debug)]
#[command(name = "mezz", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log filter (e.g. `info`, `mezz_master=debug`); `RUST_LOG` works too.
    #[arg(long, global = true, env = "MEZZ_LOG")]
    pub log: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line,
    /// with span fields) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MEZZ_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where client commands find the cluster.
#[derive(Args, Debug, Clone)]
pub struct MasterArg {
    /// Master address(es), HOST:PORT[,HOST:PORT…]. Defaults to
    /// $MEZZ_MASTER, then 127.0.0.1:5050. The leader is found by itself.
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    pub master: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a whole local cluster (master and agents) in the foreground.
    Dev(dev::DevArgs),
    /// Run a master.
    Master(master::MasterArgs),
    /// Run an agent that offers this machine's resources to a master.
    Agent(agent::AgentArgs),
    /// Run a command on the cluster and stream its output, like running it here.
    Run(run::RunArgs),
    /// List tasks.
    Ps(inspect::PsArgs),
    /// Print a task's stdout (or stderr).
    Logs(logs::LogsArgs),
    /// Kill a task.
    Kill(inspect::KillArgs),
    /// List agents.
    Agents(inspect::ListArgs),
    /// List frameworks.
    Frameworks(inspect::ListArgs),
    /// List the masters: who leads, terms and replication progress.
    Masters(masters::MastersArgs),
    /// Set and list role quotas (guarantees and limits).
    Quota(roles::QuotaArgs),
    /// Set role weights.
    Weight(roles::WeightArgs),
    /// List roles: weight, frameworks, usage against quota.
    Roles(roles::ListArgs),
    /// Distributed TensorFlow/PyTorch training: `mezz tf run`, `mezz tf status`.
    Tf(tf::TfArgs),
    /// Apache Spark applications: `mezz spark submit`, `mezz spark ls`, `mezz spark kill`.
    Spark(spark::SparkArgs),
}

/// Logs go to stderr. Daemons default to `info`; commands people type
/// default to `warn` so their output stays clean.
pub fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Master(_) | Command::Agent(_) | Command::Dev(_) => "info",
        _ => "warn",
    };
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Dev(a) => dev::main(a).await,
        Command::Master(a) => master::main(a).await,
        Command::Agent(a) => agent::main(a).await,
        Command::Run(a) => run::main(a).await,
        Command::Ps(a) => inspect::ps(a).await,
        Command::Logs(a) => logs::main(a).await,
        Command::Kill(a) => inspect::kill(a).await,
        Command::Agents(a) => inspect::agents(a).await,
        Command::Frameworks(a) => inspect::frameworks(a).await,
        Command::Masters(a) => masters::main(a).await,
        Command::Quota(a) => roles::quota(a).await,
        Command::Weight(a) => roles::weight(a).await,
        Command::Roles(a) => roles::roles(a).await,
        Command::Tf(a) => tf::main(a).await,
        Command::Spark(a) => spark::main(a).await,
    }
}

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
