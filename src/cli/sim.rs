//! `mezz sim`: Mezzanine at scale on one machine. `mezz sim agents` runs
//! thousands of simulated agents that speak the real agent protocol;
//! `mezz sim load` runs frameworks that launch at a target rate and report
//! what the cluster delivered. The work is in the `mezz-sim` crate.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mezz_sim::dist::TaskTime;
use mezz_sim::{fleet, load};

use super::MasterArg;
use crate::client;

#[derive(Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Run simulated agents: thousands in one process, each registering
    /// with the leading master over the real agent protocol, heartbeating,
    /// running the tasks it is given as timers (RUNNING at once, FINISHED
    /// when the timer ends), re-sending unacknowledged status updates and
    /// registering again after a master failover. Runs until Ctrl-C or
    /// SIGTERM.
    Agents(AgentsArgs),
    /// Run load frameworks that launch tasks at a target rate for a while,
    /// wait for them to end, then report the achieved rate, launch →
    /// RUNNING latency and offer latency (p50, p99).
    Load(LoadArgs),
}

#[derive(Args, Debug)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// How many agents.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Each agent's cpus.
    #[arg(long, default_value_t = 32.0)]
    pub cpus: f64,
    /// Each agent's memory in MB.
    #[arg(long, default_value_t = 131072.0)]
    pub mem: f64,
    /// Each agent's disk in MB.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub disk: f64,
    /// Each agent's GPUs (named GPU-AGENT-N: the agent id, then a number;
    /// nothing real behind them).
    #[arg(long, default_value_t = 0)]
    pub gpus_per_agent: usize,
    /// How long a task runs when its launch does not say (`mezz sim load`
    /// tasks say): a duration (`5s`), `uniform:MIN..MAX` or `exp:MEAN`.
    #[arg(long, default_value = "5s", value_parser = parse_task_time)]
    pub task_time: TaskTime,
    /// Agents whose streams share one HTTP/2 connection (the master allows
    /// 200 streams on one connection).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub agents_per_connection: u64,
    /// Agent ids are NAME-00000, NAME-00001 and so on. A simulator makes
    /// new secrets each start, and masters pin an id's first secret: give
    /// a fleet started again against the same masters a new name.
    #[arg(long, default_value = "sim")]
    pub name: String,
    /// Spread the agents' first registrations over this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// Seed of the run times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A progress line on stderr this often (0s: none).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub report_every: Duration,
    /// At the end, print the counters as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub master: MasterArg,
    /// How many frameworks share the rate.
    #[arg(long, default_value_t = 10)]
    pub frameworks: usize,
    /// Target launches per second, all frameworks together.
    #[arg(long, default_value_t = 100.0)]
    pub tasks_per_second: f64,
    /// How long each task runs: a duration (`5s`), `uniform:MIN..MAX` or
    /// `exp:MEAN`. Tasks are `sleep` commands; simulated agents run them
    /// as timers of that length.
    #[arg(long, default_value = "5s", value_parser = parse_task_time)]
    pub task_time: TaskTime,
    /// Each task's cpus.
    #[arg(long, default_value_t = 1.0)]
    pub cpus: f64,
    /// Each task's memory in MB.
    #[arg(long, default_value_t = 128.0)]
    pub mem: f64,
    /// Each task's GPUs.
    #[arg(long, default_value_t = 0)]
    pub gpus: usize,
    /// How long to keep launching.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop launching after this many tasks in all, even before --duration.
    #[arg(long)]
    pub max_tasks: Option<u64>,
    /// After launching stops, how long to wait for the tasks to end; those
    /// still going then are reported as `unfinished`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// The frameworks' role.
    #[arg(long, default_value = "")]
    pub role: String,
    /// Framework names are NAME-N, N counting from 0.
    #[arg(long, default_value = "sim-load")]
    pub name: String,
    /// Seed of the run times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A progress line on stderr this often (0s: none).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub report_every: Duration,
    /// Print the report as one JSON object instead of a table (keys
    /// `launched`, `finished`, `failed`, `killed`, `lost`, `dropped`,
    /// `unfinished`, `tasks_per_second`, and `launch_to_running_ms` and
    /// `offer_latency_ms` each with `p50` and `p99`). The exit status is 1
    /// when a task was lost, did not end, or a framework failed.
    #[arg(long)]
    pub json: bool,
}

fn parse_task_time(s: &str) -> Result<TaskTime, String> {
    TaskTime::parse(s).map_err(|e| e.to_string())
}

pub async fn main(args: SimArgs) -> Result<ExitCode> {
    match args.command {
        SimCommand::Agents(a) => agents(a).await,
        SimCommand::Load(a) => load_main(a).await,
    }
}

/// Prints `line()` to stderr every `every` until `done` resolves.
async fn progress<F: Fn() -> String>(every: Duration, line: F) {
    if every.is_zero() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        errln!("{}", line());
    }
}

async fn agents(args: AgentsArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    if args.count == 0 {
        anyhow::bail!("--count must be at least 1");
    }
    let config = fleet::FleetConfig {
        masters,
        count: args.count,
        cpus: args.cpus,
        mem: args.mem,
        disk: args.disk,
        gpus_per_agent: args.gpus_per_agent,
        task_time: args.task_time,
        seed: args.seed,
        agents_per_connection: args.agents_per_connection as usize,
        name: args.name,
        ramp: args.ramp,
        token: client::credentials()?,
    };
    let counters = Arc::new(fleet::FleetCounters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let run = tokio::spawn(fleet::run(config, Arc::clone(&counters), stop_rx));
    let c = Arc::clone(&counters);
    let count = args.count;
    tokio::select! {
        _ = super::shutdown_signal() => {}
        _ = progress(args.report_every, move || {
            let s = c.snapshot();
            format!(
                "{:>6.0}s agents {}/{count} registered ({} registrations) · running {} · launched {} finished {} killed {} · updates {} (re-sent {}) acks {}",
                started.elapsed().as_secs_f64(), s.registered, s.registrations, s.running,
                s.launches, s.finished, s.killed, s.updates_sent, s.resent, s.acks,
            )
        }) => {}
    }
    let _ = stop_tx.send(true);
    run.await
        .context("the simulated agents stopped abnormally")?;
    let s = counters.snapshot();
    if args.json {
        outln!("{}", serde_json::to_string(&s)?);
    } else {
        outln!(
            "agents {count}: {} registrations, {} launches, {} finished, {} killed, {} updates sent ({} re-sent), {} acks, {} refusals",
            s.registrations, s.launches, s.finished, s.killed, s.updates_sent, s.resent, s.acks, s.refusals
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn load_main(args: LoadArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    if args.frameworks == 0 {
        anyhow::bail!("--frameworks must be at least 1");
    }
    if !(args.tasks_per_second > 0.0 && args.tasks_per_second.is_finite()) {
        anyhow::bail!("--tasks-per-second must be a positive number");
    }
    let config = load::LoadConfig {
        masters,
        frameworks: args.frameworks,
        tasks_per_second: args.tasks_per_second,
        task_time: args.task_time,
        cpus: args.cpus,
        mem: args.mem,
        gpus: args.gpus,
        duration: args.duration,
        max_tasks: args.max_tasks,
        drain: args.drain,
        role: args.role,
        name: args.name,
        seed: args.seed,
        token: client::credentials()?,
    };
    let counters = Arc::new(load::LoadCounters::default());
    let started = Instant::now();
    let c = Arc::clone(&counters);
    let report = tokio::select! {
        r = load::run(config, Arc::clone(&counters)) => r,
        _ = progress(args.report_every, move || {
            use std::sync::atomic::Ordering::Relaxed;
            format!(
                "{:>6.0}s launched {} running {} terminal {} lost {} dropped {}",
                started.elapsed().as_secs_f64(),
                c.launched.load(Relaxed), c.running.load(Relaxed),
                c.terminal.load(Relaxed), c.lost.load(Relaxed), c.dropped.load(Relaxed),
            )
        }) => unreachable!("progress never ends"),
        _ = super::shutdown_signal() => anyhow::bail!("interrupted; no report"),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!("{}", report.table().trim_end());
    }
    let ok = report.errors.is_empty()
        && report.lost == 0
        && report.unfinished == 0
        && report.launched == report.finished + report.failed + report.killed;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn parse(args: &[&str]) -> Result<SimCommand, String> {
        match Cli::try_parse_from(std::iter::once("mezz").chain(args.iter().copied())) {
            Ok(Cli {
                command: Command::Sim(SimArgs { command }),
                ..
            }) => Ok(command),
            Ok(other) => Err(format!("not mezz sim: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn the_flags_of_the_issue_parse() {
        let Ok(SimCommand::Agents(a)) = parse(&[
            "sim",
            "agents",
            "--master",
            "127.0.0.1:5050",
            "--count",
            "10000",
            "--cpus",
            "32",
            "--mem",
            "131072",
            "--gpus-per-agent",
            "8",
            "--task-time",
            "exp:5s",
        ]) else {
            panic!("mezz sim agents does not parse");
        };
        assert_eq!(a.count, 10000);
        assert_eq!(a.gpus_per_agent, 8);
        assert_eq!(a.task_time, TaskTime::Exponential(Duration::from_secs(5)));
        let Ok(SimCommand::Load(l)) = parse(&[
            "sim",
            "load",
            "--master",
            "127.0.0.1:5050",
            "--frameworks",
            "100",
            "--tasks-per-second",
            "10000",
            "--task-time",
            "5s",
            "--gpus",
            "1",
            "--duration",
            "60s",
            "--json",
        ]) else {
            panic!("mezz sim load does not parse");
        };
        assert_eq!((l.frameworks, l.gpus, l.json), (100, 1, true));
        assert_eq!(l.duration, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&["sim", "agents", "--task-time", "soon"]).unwrap_err();
        assert!(e.contains("bad task time 'soon'"), "{e}");
        let e = parse(&["sim", "agents", "--agents-per-connection", "500"]).unwrap_err();
        assert!(e.contains("agents-per-connection"), "{e}");
    }
}
