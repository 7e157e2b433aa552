//! The command line of `mezz run`.

use std::time::Duration;

use clap::Args;

use crate::duration;

use super::super::MasterArg;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  mezz run -- echo hello\n  mezz run --cpus 2 --mem 4096 -- python train.py --epochs 3\n  mezz run --detach --name nightly -- ./etl.sh\n  mezz run --health-cmd 'test -f ready' --health-interval 5s --health-failures 3 -- ./serve.sh\n\nA task failing its health check --health-failures times in a row is killed\n(KILLED, reason HEALTH_CHECK_FAILED); HTTP and TCP checks go to 127.0.0.1.\nA single argument with spaces or shell symbols runs through /bin/sh -c.\nThe task starts in its own sandbox directory on the agent."
)]
pub struct RunArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// CPUs for the task.
    #[arg(long, default_value_t = 1.0)]
    pub cpus: f64,
    /// Memory for the task, in MB.
    #[arg(long, default_value_t = 256.0)]
    pub mem: f64,
    /// GPUs for the task.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// A named size from the cluster's menu (`mezz sizes`), instead of
    /// --cpus, --mem and --gpus.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["cpus", "mem", "gpus"])]
    pub size: Option<String>,
    /// Role to run under (for fair sharing and quota).
    #[arg(long, default_value = "*")]
    pub role: String,
    /// Task name (and id prefix); defaults to the program's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable for the task, K=V; repeat for more.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// A label for the task, K=V (shown in `/api/state`; `mezz job` labels
    /// its attempts with `job` and `priority`); repeat for more.
    #[arg(long = "label", value_name = "K=V")]
    pub label: Vec<String>,
    /// A secret environment variable for the task: K=V, or K alone to pass
    /// this shell's $K (which keeps the value off the command line, where
    /// `ps` on this machine would show it). The task sees it like --env;
    /// Mezzanine never shows or logs its value. Repeat for more.
    #[arg(long = "secret-env", value_name = "K[=V]")]
    pub secret_env: Vec<String>,
    /// Give up if the task has not started within this time: waiting for
    /// an offer, for the launch, and for a new master after a failover all
    /// count. The task is then killed if it was launched.
    #[arg(long, value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// The task's priority class (see `mezz priorities`): a higher class is
    /// queued first and may preempt tasks of lower, preemptible classes.
    /// Default: the cluster's default class.
    #[arg(long, value_name = "CLASS")]
    pub priority: Option<String>,
    /// Give up unless the master places the task within this time: it
    /// then ends DROPPED with reason DEADLINE_NOT_MET, saying what it
    /// waited for (the master's clock, unlike --timeout).
    #[arg(long, value_parser = duration::parse, value_name = "DUR")]
    pub start_deadline: Option<Duration>,
    /// The run deadline: the master kills the task (KILLED, reason
    /// DEADLINE_EXCEEDED) once it has run this long.
    #[arg(long, value_parser = duration::parse, value_name = "DUR")]
    pub run_deadline: Option<Duration>,
    /// Wait for a big enough agent to join even when no registered agent
    /// could ever hold the task (without it, such a request is refused at
    /// once, naming the largest agent).
    #[arg(long)]
    pub wait: bool,
    /// Print the task id once it runs and return; the task keeps running.
    #[arg(long)]
    pub detach: bool,
    /// Health check: a shell command run in the task's sandbox with its
    /// environment; healthy when it exits 0.
    #[arg(
        long,
        value_name = "CMD",
        group = "health",
        help_heading = "Health check"
    )]
    pub health_cmd: Option<String>,
    /// Health check: HTTP GET to 127.0.0.1:PORT/PATH; healthy on 200-399.
    #[arg(
        long,
        value_name = "PORT[/PATH]",
        group = "health",
        help_heading = "Health check"
    )]
    pub health_http: Option<String>,
    /// Health check: a TCP connect to 127.0.0.1:PORT.
    #[arg(
        long,
        value_name = "PORT",
        group = "health",
        help_heading = "Health check"
    )]
    pub health_tcp: Option<u16>,
    /// Time between checks [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = duration::parse, requires = "health", help_heading = "Health check")]
    pub health_interval: Option<Duration>,
    /// A check that takes longer failed [default: 20s].
    #[arg(long, value_name = "DUR", value_parser = duration::parse, requires = "health", help_heading = "Health check")]
    pub health_timeout: Option<Duration>,
    /// Failures this soon after the task starts do not count, until it is
    /// healthy once [default: 0].
    #[arg(long, value_name = "DUR", value_parser = duration::parse, requires = "health", help_heading = "Health check")]
    pub health_grace: Option<Duration>,
    /// Failures in a row after which the task is killed [default: 3].
    #[arg(
        long,
        value_name = "N",
        requires = "health",
        help_heading = "Health check"
    )]
    pub health_failures: Option<u32>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}
