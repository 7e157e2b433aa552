//! `mezz sim`: Mezzanine at scale on one machine. `mezz sim agents` runs
//! thousands of simulated agents that speak the real agent protocol;
//! `mezz sim load` runs frameworks that launch at a target rate and report
//! what the cluster delivered; `mezz sim replay` replays a GPU workload
//! trace through a master and simulated agents and reports job completion
//! times. The work is in the `mezz-sim` crate.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mezz_sim::dist::TaskTime;
use mezz_sim::replay::Policy;
use mezz_sim::{fleet, load, replay_run, trace};

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
    /// Replay a GPU workload trace (CSV with name, time, gpus and duration
    /// columns, e.g. the resolved Pollux workloads) through a real master
    /// and simulated agents: each job arrives at its time divided by the
    /// speedup, waits in the chosen order, runs as a gang of tasks (one per
    /// agent it spans) for its duration divided by the speedup, and
    /// preempted jobs wait again with the work they have left. Prints the
    /// average and p99 job completion time, makespan and GPU utilisation in
    /// trace seconds. Without --master it starts a master (a child `mezz
    /// master` on a free 127.0.0.1 port with a temporary data directory)
    /// and --nodes simulated agents of --gpus-per-node GPUs, and stops them
    /// at the end.
    Replay(ReplayArgs),
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

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The trace: a CSV file with a header naming at least the columns
    /// name, time (arrival, seconds), gpus and duration (seconds).
    pub csv: std::path::PathBuf,
    /// Agents (nodes) of the cluster.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// GPUs per agent.
    #[arg(long, default_value_t = 4)]
    pub gpus_per_node: usize,
    /// Trace seconds per real second: arrivals and durations are divided
    /// by it. The master's own timing (launch, offer after a task ends,
    /// about 1-10 ms) is multiplied by it in trace time: at 1000 a 5 ms
    /// delay is 5 trace seconds, still under the 60 s scheduling tick of
    /// the Pollux simulator.
    #[arg(long, default_value_t = 100.0)]
    pub speedup: f64,
    /// Order of waiting jobs: fifo (arrival order, first-fit), sjf
    /// (shortest duration first, first-fit) or las (Tiresias: queues by
    /// attained GPU service, preempting).
    #[arg(long, default_value = "las")]
    pub policy: Policy,
    /// Where the LAS queues split, in trace GPU-hours of attained service,
    /// comma-separated: a job moves down one queue at each. `16` is the
    /// reference's two-queue Tiresias.
    #[arg(
        long,
        alias = "las-threshold-gpu-hours",
        value_name = "H[,H…]",
        value_delimiter = ',',
        default_values_t = mezz_sim::replay::DEFAULT_LAS_THRESHOLDS_GPU_H,
        value_parser = parse_gpu_hours,
    )]
    pub las_thresholds_gpu_hours: Vec<f64>,
    /// Replay through this running cluster instead of starting one (it
    /// must have the agents and GPUs given by --nodes and --gpus-per-node,
    /// and nothing else using them).
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    pub master: Option<String>,
    /// Give up after this long (real time); default: three times the
    /// trace's length at the speedup, plus a minute.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub limit: Option<Duration>,
    /// Also write every job's times here as CSV (name, arrival_s, gpus,
    /// duration_s, start_s of its first launch, end_s, preemptions; trace
    /// seconds), to compare with another scheduler job by job.
    #[arg(long, value_name = "FILE")]
    pub jobs_out: Option<std::path::PathBuf>,
    /// Print the report as one JSON object (`avg_jct_s`, `p50_jct_s`,
    /// `p99_jct_s`, `max_jct_s`, `makespan_s`, `gpu_util`, `avg_queue_s`,
    /// `preemptions`, `jobs`, `finished`, and the run's settings).
    #[arg(long)]
    pub json: bool,
}

fn parse_task_time(s: &str) -> Result<TaskTime, String> {
    TaskTime::parse(s).map_err(|e| e.to_string())
}

fn parse_gpu_hours(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(h) if h > 0.0 && h.is_finite() => Ok(h),
        _ => Err(format!(
            "bad threshold '{s}': give GPU-hours as positive numbers, e.g. 3,16"
        )),
    }
}

pub async fn main(args: SimArgs) -> Result<ExitCode> {
    match args.command {
        SimCommand::Agents(a) => agents(a).await,
        SimCommand::Load(a) => load_main(a).await,
        SimCommand::Replay(a) => replay_main(a).await,
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

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mezz master` on a free loopback port with a data directory in
/// `dir`; returns it and its address.
fn start_master(dir: &std::path::Path) -> Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port on 127.0.0.1 for the replay's master")?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("master.log"))
        .context("creating the replay master's log file")?;
    let child = std::process::Command::new(
        std::env::current_exe().context("locating the mezz binary to start a master with")?,
    )
    .args(["master", "--listen", &addr, "--data-dir"])
    .arg(dir.join("master"))
    .stdin(std::process::Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log)
    .spawn()
    .context("starting `mezz master` for the replay")?;
    Ok((Child(child), addr))
}

async fn replay_main(args: ReplayArgs) -> Result<ExitCode> {
    if args.nodes == 0 || args.gpus_per_node == 0 {
        anyhow::bail!("--nodes and --gpus-per-node must be at least 1");
    }
    if !(args.speedup > 0.0 && args.speedup.is_finite()) {
        anyhow::bail!("--speedup must be a positive number");
    }
    let text = std::fs::read_to_string(&args.csv)
        .with_context(|| format!("reading the trace {}", args.csv.display()))?;
    let jobs = trace::parse(&text).with_context(|| format!("trace {}", args.csv.display()))?;
    let total_gpus = args.nodes * args.gpus_per_node;
    if let Some(j) = jobs.iter().find(|j| j.gpus > total_gpus) {
        anyhow::bail!(
            "job '{}' needs {} GPUs, more than the cluster's {total_gpus} (--nodes x --gpus-per-node)",
            j.name,
            j.gpus
        );
    }
    let span = jobs
        .iter()
        .map(|j| j.arrival_s + j.duration_s)
        .fold(0.0, f64::max)
        + jobs.iter().map(|j| j.duration_s).sum::<f64>() / total_gpus as f64 * 4.0;
    let limit = args
        .limit
        .unwrap_or_else(|| Duration::from_secs_f64(span / args.speedup * 3.0 + 60.0));
    let token = client::credentials()?;
    // The cluster: given, or a master and simulated agents of our own.
    let dir = tempfile::tempdir().context("creating a temporary directory for the replay")?;
    let mut _master = None;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut fleet_run = None;
    let masters = match &args.master {
        Some(m) => client::masters(Some(m))?,
        None => {
            let (child, addr) = start_master(dir.path())?;
            _master = Some(child);
            let config = fleet::FleetConfig {
                masters: vec![addr.clone()],
                count: args.nodes,
                cpus: 32.0,
                mem: 131_072.0,
                disk: 1_000_000.0,
                gpus_per_agent: args.gpus_per_node,
                task_time: TaskTime::parse("1s").map_err(|e| anyhow::anyhow!("{e}"))?,
                seed: 1,
                agents_per_connection: 100,
                name: "replay".into(),
                ramp: Duration::ZERO,
                token: token.clone(),
            };
            let counters = Arc::new(fleet::FleetCounters::default());
            fleet_run = Some(tokio::spawn(fleet::run(
                config,
                Arc::clone(&counters),
                stop_rx,
            )));
            let deadline = Instant::now() + Duration::from_secs(30);
            while counters.snapshot().registered < args.nodes as u64 {
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "only {} of {} simulated agents registered with the replay's master within 30 s; its log: {}",
                        counters.snapshot().registered,
                        args.nodes,
                        std::fs::read_to_string(dir.path().join("master.log")).unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            vec![addr]
        }
    };
    let config = replay_run::ReplayConfig {
        masters,
        jobs,
        speedup: args.speedup,
        policy: args.policy,
        total_gpus,
        gpus_per_node: args.gpus_per_node,
        las_thresholds_gpu_s: args
            .las_thresholds_gpu_hours
            .iter()
            .map(|h| h * 3600.0)
            .collect(),
        name: format!("replay-{}", args.policy),
        token,
    };
    let outcome = tokio::select! {
        r = replay_run::run(config, limit) => r.map_err(|e| anyhow::anyhow!(e))?,
        _ = super::shutdown_signal() => anyhow::bail!("interrupted; no report"),
    };
    let _ = stop_tx.send(true);
    if let Some(f) = fleet_run {
        let _ = f.await;
    }
    if let Some(path) = &args.jobs_out {
        let mut csv = String::from("name,arrival_s,gpus,duration_s,start_s,end_s,preemptions\n");
        for j in &outcome.jobs {
            let end = match j.phase {
                mezz_sim::replay::Phase::Done { at } => format!("{at:.2}"),
                _ => String::new(),
            };
            let start = j.first_start.map(|s| format!("{s:.2}")).unwrap_or_default();
            csv.push_str(&format!(
                "{},{},{},{},{start},{end},{}\n",
                j.job.name, j.job.arrival_s, j.job.gpus, j.job.duration_s, j.preemptions
            ));
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    let r = &outcome.report;
    if args.json {
        let mut v = serde_json::to_value(r)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("workload".into(), args.csv.display().to_string().into());
            o.insert("policy".into(), args.policy.to_string().into());
            o.insert("nodes".into(), args.nodes.into());
            o.insert("gpus_per_node".into(), args.gpus_per_node.into());
            o.insert("speedup".into(), args.speedup.into());
            if args.policy == Policy::Las {
                o.insert(
                    "las_thresholds_gpu_hours".into(),
                    args.las_thresholds_gpu_hours.clone().into(),
                );
            }
            o.insert("launches".into(), outcome.launches.into());
            o.insert("lost".into(), outcome.lost.into());
            o.insert(
                "elapsed_s".into(),
                ((outcome.elapsed_s * 100.0).round() / 100.0).into(),
            );
        }
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        outln!(
            "{:<6} {:>5} {:>10} {:>10} {:>10} {:>11} {:>8} {:>10} {:>11}",
            "policy",
            "jobs",
            "avg JCT s",
            "p50 JCT s",
            "p99 JCT s",
            "makespan s",
            "GPU util",
            "avg queue s",
            "preemptions"
        );
        outln!(
            "{:<6} {:>5} {:>10.0} {:>10.0} {:>10.0} {:>11.0} {:>8.3} {:>10.0} {:>11}",
            args.policy,
            r.finished,
            r.avg_jct_s,
            r.p50_jct_s,
            r.p99_jct_s,
            r.makespan_s,
            r.gpu_util,
            r.avg_queue_s,
            r.preemptions
        );
        outln!(
            "(trace seconds; {} nodes x {} GPUs, speedup {}, {:.1} s of real time, {} launches)",
            args.nodes,
            args.gpus_per_node,
            args.speedup,
            outcome.elapsed_s,
            outcome.launches
        );
    }
    Ok(if r.finished == r.jobs && outcome.lost == 0 {
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
    fn the_replay_flags_of_the_issue_parse() {
        let Ok(SimCommand::Replay(r)) = parse(&[
            "sim",
            "replay",
            "workload-1.csv",
            "--nodes",
            "16",
            "--gpus-per-node",
            "4",
            "--speedup",
            "100",
            "--policy",
            "sjf",
            "--json",
        ]) else {
            panic!("mezz sim replay does not parse");
        };
        assert_eq!((r.nodes, r.gpus_per_node, r.speedup), (16, 4, 100.0));
        assert_eq!((r.policy, r.json, r.master), (Policy::Sjf, true, None));
        let Ok(SimCommand::Replay(r)) = parse(&["sim", "replay", "w.csv"]) else {
            panic!("defaults do not parse");
        };
        assert_eq!(r.policy, Policy::Las);
        assert_eq!(r.las_thresholds_gpu_hours, vec![3.0, 16.0]);
        let Ok(SimCommand::Replay(r)) =
            parse(&["sim", "replay", "w.csv", "--las-threshold-gpu-hours", "16"])
        else {
            panic!("the reference's single threshold does not parse");
        };
        assert_eq!(r.las_thresholds_gpu_hours, vec![16.0]);
        let e = parse(&[
            "sim",
            "replay",
            "w.csv",
            "--las-thresholds-gpu-hours",
            "3,-1",
        ])
        .unwrap_err();
        assert!(e.contains("'-1'"), "{e}");
        let e = parse(&["sim", "replay", "w.csv", "--policy", "srtf"]).unwrap_err();
        assert!(e.contains("unknown policy 'srtf'"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&["sim", "agents", "--task-time", "soon"]).unwrap_err();
        assert!(e.contains("bad task time 'soon'"), "{e}");
        let e = parse(&["sim", "agents", "--agents-per-connection", "500"]).unwrap_err();
        assert!(e.contains("agents-per-connection"), "{e}");
    }
}
