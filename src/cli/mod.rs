//! The command line: one module per subcommand. `--help` is the user
//! documentation, so it is written for people.

/// `println!` for long-running commands (`mezz dev`): they keep SIGPIPE
/// ignored (see [`Command::keeps_running`]), and a reader that went away
/// is no reason to stop a cluster, so a failed write is dropped instead of
/// panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` for long-running commands; see [`outln!`].
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Writes `line` to standard output; false when its reader went away.
fn print_line(line: &str) -> bool {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}

mod agent;
mod auth;
mod bench;
mod capacity;
mod daemon_start;
mod dev;
mod dev_tls;
mod guard;
mod inspect;
mod job;
mod jupyter;
mod logs;
mod master;
mod masters;
mod priorities;
mod queue;
mod roles;
mod run;
mod serve;
mod sim;
mod sizes;
mod spark;
mod tf;
mod tls;

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
    /// Logs go to stderr, coloured only on a terminal and never with
    /// `NO_COLOR` set.
    #[arg(long, global = true, env = "MEZZ_LOG")]
    pub log: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line,
    /// with span fields) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MEZZ_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub tls: tls::TlsArgs,
    /// A file holding the bearer token to present to masters that require
    /// one; its mode must be 0600 or stricter. Defaults to
    /// $MEZZ_CREDENTIALS, then the token in $MEZZ_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    pub credentials: Option<std::path::PathBuf>,
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
    /// List the priority classes: value, preemptible, whether they preempt.
    Priorities(inspect::ListArgs),
    /// The cluster-wide queue of waiting work: `mezz queue ls`.
    Queue(queue::QueueArgs),
    /// Distributed TensorFlow/PyTorch training: `mezz tf run`, `mezz tf status`.
    Tf(tf::TfArgs),
    /// Jupyter notebook servers on the cluster: `mezz jupyter start|ls|url|stop`.
    Jupyter(jupyter::JupyterArgs),
    /// Apache Spark applications: `mezz spark submit`, `mezz spark ls`, `mezz spark kill`.
    Spark(spark::SparkArgs),
    /// Model services with replicas, health checks and a proxy: `mezz serve deploy|scale|update|canary|promote|rollback|ls|show|rm`.
    Serve(serve::ServeArgs),
    /// Bearer tokens of principals: `mezz token create|revoke|ls`.
    Token(auth::TokenArgs),
    /// Access control lists: `mezz acl show|set FILE`.
    Acl(auth::AclArgs),
    /// The cluster's menu of named sizes (`--size gpu-large`): list it, or
    /// (operators) add, replace and remove sizes.
    Sizes(sizes::SizesArgs),
    /// Jobs from one declarative file (docs/jobs.md): `mezz job submit
    /// FILE --wait` runs one with retries, backoff and a deadline.
    Job(job::JobArgs),
    /// Benchmarks a user can run against a cluster: `mezz bench tasks`.
    Bench(bench::BenchArgs),
    /// Scale rigs: simulated agents (`mezz sim agents`) and a load of
    /// frameworks (`mezz sim load`).
    Sim(sim::SimArgs),
}

impl Command {
    /// Whether the command runs a cluster component (`mezz master`,
    /// `mezz agent`, `mezz dev`, a framework daemon) rather than doing one thing for a person.
    /// Such a process must outlive a closed pipe: it writes to its tasks'
    /// pipes and owns tasks to stop cleanly, so it keeps SIGPIPE ignored
    /// and drops failed writes. So does `mezz run`, which owns a task: when
    /// its reader goes away it kills the task first (see
    /// [`logs::stdout_closed`]) and then exits as a program killed by
    /// SIGPIPE would. Every other command dies of SIGPIPE quietly when its
    /// reader goes away, as `ls | head` does.
    pub fn keeps_running(&self) -> bool {
        matches!(
            self,
            Command::Master(_)
                | Command::Agent(_)
                | Command::Run(_)
                | Command::Job(_)
                | Command::Dev(_)
                | Command::Jupyter(jupyter::JupyterArgs {
                    command: jupyter::JupyterCommand::Daemon(_),
                })
                | Command::Serve(serve::ServeArgs {
                    command: serve::ServeCommand::Daemon(_) | serve::ServeCommand::Proxy(_),
                })
        )
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and never with
/// `NO_COLOR` set to anything but the empty string (<https://no-color.org>).
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs go to stderr. Daemons default to `info`; commands people type
/// default to `warn` so their output stays clean.
pub fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Master(_) | Command::Agent(_) | Command::Dev(_) => "info",
        Command::Jupyter(jupyter::JupyterArgs {
            command: jupyter::JupyterCommand::Daemon(_),
        }) => "info",
        Command::Serve(serve::ServeArgs {
            command: serve::ServeCommand::Daemon(_) | serve::ServeCommand::Proxy(_),
        }) => "info",
        _ => "warn",
    };
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    // `mezz dev` makes its own TLS setting (see `mezz dev --tls`).
    if !matches!(cli.command, Command::Dev(_)) {
        cli.tls.install_client()?;
    }
    if let Some(path) = &cli.credentials {
        crate::client::use_credentials_file(path)?;
    }
    match cli.command {
        Command::Dev(a) => dev::main(a).await,
        Command::Master(a) => master::main(a, &cli.tls).await,
        Command::Agent(a) => agent::main(a, &cli.tls).await,
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
        Command::Priorities(a) => priorities::main(a).await,
        Command::Queue(a) => queue::main(a).await,
        Command::Tf(a) => tf::main(a).await,
        Command::Jupyter(a) => jupyter::main(a).await,
        Command::Spark(a) => spark::main(a).await,
        Command::Serve(a) => serve::main(a).await,
        Command::Token(a) => auth::token(a).await,
        Command::Acl(a) => auth::acl(a).await,
        Command::Sizes(a) => sizes::main(a).await,
        Command::Job(a) => job::main(a).await,
        Command::Bench(a) => bench::main(a).await,
        Command::Sim(a) => sim::main(a).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None), "a file or a pipe");
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(
            log_colours(true, Some(OsStr::new(""))),
            "an empty NO_COLOR does not count"
        );
    }

    #[test]
    fn only_cluster_components_outlive_a_closed_pipe() {
        let keeps = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("mezz").chain(args.iter().copied()))
                .expect("valid command line")
                .command
                .keeps_running()
        };
        assert!(keeps(&["dev"]));
        assert!(keeps(&[
            "master",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "d"
        ]));
        assert!(keeps(&[
            "agent",
            "--master",
            "127.0.0.1:1",
            "--work-dir",
            "w"
        ]));
        assert!(!keeps(&["ps", "--json"]));
        assert!(keeps(&["run", "--", "true"]));
        assert!(!keeps(&["tf", "status", "job"]));
    }
}
