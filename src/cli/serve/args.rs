//! The command line of `mezz serve`: its subcommands and their flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::super::MasterArg;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub command: ServeCommand,
}

/// Where a cluster's services are kept.
#[derive(Args, Debug, Clone)]
pub struct StateArg {
    #[command(flatten)]
    pub master: MasterArg,
    /// The framework's state directory (services, framework id, daemon
    /// log). Default: `$XDG_STATE_HOME/mezz/serve/<master>`, else
    /// `~/.local/state/mezz/serve/<master>`.
    #[arg(long, env = "MEZZ_SERVE_STATE", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Deploy a service: N replicas of a command behind a proxy; prints the proxy's URL.
    Deploy(DeployArgs),
    /// Set a service's number of replicas.
    Scale(ScaleArgs),
    /// Roll a service over to a new command, one replica at a time.
    Update(UpdateArgs),
    /// Run one replica of a new command beside the service, taking a share of the requests.
    Canary(CanaryArgs),
    /// Make the canary's command the service's (a rolling update) and stop the canary.
    Promote(NameArgs),
    /// Stop the canary; the service keeps its command.
    Rollback(NameArgs),
    /// List the services: proxy URL, replicas healthy and wanted, state.
    Ls(LsArgs),
    /// Show one service and each of its replicas.
    Show(ShowArgs),
    /// Remove a service: stop its replicas and its proxy.
    Rm(NameArgs),
    /// Run the serving framework in the foreground (the other commands run
    /// it in the background when it is not running).
    Daemon(DaemonArgs),
    /// Run the services' proxies (the daemon starts this process and feeds
    /// it; it outlives the daemon, so services answer while it restarts).
    #[command(hide = true)]
    Proxy(ProxyArgs),
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// The state directory it shares with the daemon.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// End after this long without a word from a daemon.
    #[arg(long, default_value = "24h", value_name = "DUR")]
    pub orphan_timeout: String,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    mezz serve deploy echo --replicas 2 -- 'python3 -m http.server $PORT'\n  \
    mezz serve deploy resnet --replicas 3 --size gpu-small -- python3 serve.py\n\n\
Each replica gets a port of its own in $PORT (or --port-env) and must answer\n\
GET --health-path with a 2xx or 3xx status; the agent checks it every second\n\
and a replica failing 3 checks in a row is killed and replaced. Requests go\n\
through the service's proxy on 127.0.0.1 (its URL is printed), to healthy\n\
replicas only. A single argument with spaces or shell symbols runs through\n\
/bin/sh -c; several run as they are.")]
pub struct DeployArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The service's name (letters, digits, '-', '_').
    pub name: String,
    /// How many replicas to run.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// CPUs per replica (default 1, or the size's).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory per replica in MB (default 512, or the size's).
    #[arg(long)]
    pub mem: Option<f64>,
    /// Whole GPUs per replica (default 0, or the size's).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// A named size: cpu-small, cpu-medium, cpu-large, gpu-small,
    /// gpu-large, or another size on the cluster's menu (`mezz sizes`).
    /// --cpus, --mem and --gpus override it.
    #[arg(long)]
    pub size: Option<String>,
    /// The path the health check asks on each replica.
    #[arg(long, default_value = "/health", value_name = "PATH")]
    pub health_path: String,
    /// The environment variable that carries the replica's port.
    #[arg(long, default_value = "PORT", value_name = "NAME")]
    pub port_env: String,
    /// Failed health checks this soon after a replica starts do not count,
    /// until its first success: time to load the model.
    #[arg(long, default_value = "2m", value_name = "DUR")]
    pub health_grace: String,
    /// How long to wait for every replica to be healthy.
    #[arg(long, default_value = "3m", value_name = "DUR")]
    pub wait: String,
    /// Print the job file these flags make, and deploy nothing: `mezz job
    /// submit` of it deploys the same service as a job (schedules,
    /// dependencies, history).
    #[arg(long)]
    pub print_job: bool,
    /// The command each replica runs.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The service's name.
    pub name: String,
    /// The number of replicas.
    pub replicas: u32,
    /// How long to wait for the new replicas to be healthy.
    #[arg(long, default_value = "3m", value_name = "DUR")]
    pub wait: String,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  \
    mezz serve update echo -- python3 serve.py --model v2\n\n\
By default one new replica is started at a time (--max-surge 1) and an old\n\
one is stopped only once a new one is healthy (--max-unavailable 0), so the\n\
service keeps its full number of healthy replicas throughout. Raise either\n\
to go faster: --max-surge N runs up to N replicas beyond the number wanted,\n\
--max-unavailable N lets the service be N healthy replicas short. A new\n\
replica that fails its health check or ends rolls the update back by\n\
itself; `mezz serve show` says why.")]
pub struct UpdateArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The service's name.
    pub name: String,
    /// How long to wait for the update to finish.
    #[arg(long, default_value = "10m", value_name = "DUR")]
    pub wait: String,
    /// New replicas that may run beyond the number wanted.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub max_surge: u32,
    /// Healthy replicas the service may be short of during the update.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_unavailable: u32,
    /// The new command each replica runs.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  \
    mezz serve canary echo --weight 10 -- python3 serve.py --model v2\n  \
    mezz serve promote echo     # or: mezz serve rollback echo\n\n\
The canary is one replica more, not counted among the service's; once it\n\
is healthy it gets --weight percent of the requests through the proxy.")]
pub struct CanaryArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The service's name.
    pub name: String,
    /// The canary's share of the requests, in percent (1 to 99).
    #[arg(long, default_value_t = 10)]
    pub weight: u32,
    /// How long to wait for the canary to be healthy.
    #[arg(long, default_value = "3m", value_name = "DUR")]
    pub wait: String,
    /// The canary's command.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// One JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The service's name.
    pub name: String,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The service's name.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// How long the replicas keep running while no daemon is connected; a
    /// daemon started within it takes them back.
    #[arg(long, default_value = "24h", value_name = "DUR")]
    pub failover_timeout: String,
}
