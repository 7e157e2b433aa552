//! `mezz run`: run one command on the cluster as if it ran here. It is a
//! small framework built on the SDK (as `mesos-execute` is on Mesos): wait
//! for an offer that fits, launch, stream stdout and stderr, and exit with
//! the task's exit code.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::Args;
use mezz_sdk::{
    proto, Driver, DriverBuilder, FrameworkId, OfferId, Resources, Scheduler, TaskBuilder,
    TaskReason, TaskState,
};
use tokio::sync::{mpsc, watch};

use super::logs::{Out, Tail};
use super::MasterArg;
use crate::{client, duration};

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
    /// Role to run under (for fair sharing and quota).
    #[arg(long, default_value = "*")]
    pub role: String,
    /// Task name (and id prefix); defaults to the program's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable for the task, K=V; repeat for more.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Give up if no agent offers enough resources within this time.
    #[arg(long, value_parser = duration::parse)]
    pub timeout: Option<Duration>,
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

/// What the scheduler tells the foreground.
#[derive(Debug)]
enum Progress {
    Waiting(String),
    Launched {
        agent_address: String,
        framework_id: String,
    },
    Update(proto::TaskStatus),
    Error(String),
    Disconnected,
}

struct RunScheduler {
    need: Resources,
    /// The framework's role: resources reserved for it are used first.
    role: String,
    /// GPUs wanted (a count here; specific ids are picked from the offer).
    gpus: u32,
    task: Option<TaskBuilder>,
    task_id: String,
    launched: bool,
    detach: bool,
    largest_offer: Option<(Resources, String)>,
    tx: mpsc::UnboundedSender<Progress>,
    driver: Arc<Mutex<Option<Driver>>>,
}

impl Scheduler for RunScheduler {
    fn subscribed(&mut self, driver: &Driver, _id: &FrameworkId, _reconnected: bool) {
        if let Ok(mut d) = self.driver.lock() {
            *d = Some(driver.clone());
        }
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let mut decline: Vec<OfferId> = Vec::new();
        for offer in offers {
            let offered = Resources::from_proto(&offer.resources).unwrap_or_default();
            let gpu_ids: Vec<String> = offered
                .set_items("gpus")
                .into_iter()
                .take(self.gpus as usize)
                .map(str::to_string)
                .collect();
            let want = if self.gpus > 0 {
                self.need.clone().with_set("gpus", &gpu_ids)
            } else {
                self.need.clone()
            };
            let take = (gpu_ids.len() == self.gpus as usize)
                .then(|| offered.take_for_role(&want, &self.role))
                .flatten();
            if let (false, Some(take)) = (self.launched, take) {
                if let Some(mut task) = self.task.take() {
                    task = task.resources(&take);
                    self.launched = true;
                    let _ = self.tx.send(Progress::Launched {
                        agent_address: offer.agent_address.clone(),
                        framework_id: offer.framework_id.clone(),
                    });
                    driver.launch([offer.id.clone()], vec![task.build(&offer)]);
                    driver.suppress();
                    continue;
                }
            }
            let bigger = self.largest_offer.as_ref().is_none_or(|(r, _)| {
                offered.dominant_share(&self.need) > r.dominant_share(&self.need)
            });
            if bigger {
                self.largest_offer = Some((offered, offer.hostname.clone()));
            }
            decline.push(OfferId(offer.id));
        }
        if !decline.is_empty() {
            driver.decline(decline, Some(if self.launched { 3600.0 } else { 1.0 }));
        }
        if !self.launched {
            let why = match &self.largest_offer {
                Some((r, host)) => format!(
                    "needs {}; the largest offer so far is {r} on {host}",
                    self.need
                ),
                None => format!("needs {}; no offer yet", self.need),
            };
            let why = if self.gpus > 0 {
                format!("{why} (and {} GPU(s) on one agent)", self.gpus)
            } else {
                why
            };
            let _ = self.tx.send(Progress::Waiting(why));
        }
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        if status.task_id != self.task_id {
            return;
        }
        let state = status.state();
        // Reconciliation answers while agents re-register are not news.
        if matches!(state, TaskState::Unknown | TaskState::Unreachable) {
            return;
        }
        let _ = self.tx.send(Progress::Update(status.clone()));
        if state.is_terminal() {
            driver.teardown();
        } else if self.detach && state == TaskState::Running {
            driver.stop();
        }
    }

    fn error(&mut self, _driver: &Driver, message: &str) {
        let _ = self.tx.send(Progress::Error(message.to_string()));
    }

    fn disconnected(&mut self, _driver: &Driver) {
        let _ = self.tx.send(Progress::Disconnected);
    }
}

fn task_builder(args: &RunArgs, task_id: &str, need: &Resources) -> Result<TaskBuilder> {
    let cmd = &args.command;
    let shellish = |s: &str| {
        s.chars()
            .any(|c| c.is_whitespace() || "|&;<>()$`\\\"'*?[#~=%".contains(c))
    };
    let mut b = if cmd.len() == 1 && shellish(&cmd[0]) {
        TaskBuilder::shell(task_id, cmd[0].clone())
    } else {
        TaskBuilder::exec(task_id, cmd[0].clone(), cmd[1..].iter().cloned())
    };
    b = b
        .name(args.name.clone().unwrap_or_else(|| program_name(&cmd[0])))
        .resources(need);
    if let Some(check) = health_check(args)? {
        b = b.health_check(check);
    }
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow!("--env '{kv}' is not K=V"))?;
        b = b.env(k, v);
    }
    Ok(b)
}

/// The `--health-*` flags as a `HealthCheck`; `None` without a check.
fn health_check(args: &RunArgs) -> Result<Option<proto::HealthCheck>> {
    use proto::health_check::Check;
    let check = if let Some(c) = &args.health_cmd {
        Check::Command(c.clone())
    } else if let Some(h) = &args.health_http {
        let (port, path) = match h.split_once('/') {
            Some((p, path)) => (p, format!("/{path}")),
            None => (h.as_str(), "/".to_string()),
        };
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            anyhow!("--health-http '{h}': give PORT or PORT/PATH, e.g. 8080/ready")
        })?;
        Check::Http(proto::HttpHealthCheck {
            port: port.into(),
            path,
            ..Default::default()
        })
    } else if let Some(p) = args.health_tcp {
        if p == 0 {
            return Err(anyhow!("--health-tcp: 0 is not a port"));
        }
        Check::Tcp(proto::TcpHealthCheck { port: p.into() })
    } else {
        return Ok(None);
    };
    let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    if args.health_failures == Some(0) {
        return Err(anyhow!("--health-failures must be at least 1"));
    }
    Ok(Some(proto::HealthCheck {
        check: Some(check),
        interval_secs: secs(args.health_interval),
        timeout_secs: secs(args.health_timeout),
        grace_period_secs: secs(args.health_grace),
        consecutive_failures: args.health_failures.unwrap_or(0),
    }))
}

fn program_name(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or("task");
    let base = first.rsplit('/').next().unwrap_or(first);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if clean.is_empty() {
        "task".into()
    } else {
        clean
    }
}

/// The exit code a local shell would give for this outcome.
fn exit_code(status: &proto::TaskStatus) -> (u8, Option<String>) {
    let state = status.state();
    let msg = || {
        format!(
            "task {} {}: {}",
            status.task_id,
            state.short_name(),
            status.message
        )
    };
    match state {
        TaskState::Finished => (0, None),
        _ if status.reason() == TaskReason::LaunchFailed => (127, Some(msg())),
        _ if status.exit_code.is_some() => {
            let code = status.exit_code.unwrap_or(1);
            let note = (state == TaskState::Killed).then(msg);
            (u8::try_from(code).unwrap_or(1).max(1), note)
        }
        _ if status.signal.is_some() => {
            let sig = status.signal.unwrap_or(9);
            (u8::try_from(128 + sig).unwrap_or(137), Some(msg()))
        }
        _ => (1, Some(msg())),
    }
}

pub async fn main(args: RunArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    if !(args.cpus.is_finite() && args.cpus >= 0.0 && args.mem.is_finite() && args.mem >= 0.0) {
        return Err(anyhow!("--cpus and --mem must be non-negative numbers"));
    }
    if args.cpus == 0.0 && args.mem == 0.0 {
        return Err(anyhow!("give the task some --cpus or --mem"));
    }
    let need = Resources::new()
        .with_scalar("cpus", args.cpus)
        .with_scalar("mem", args.mem);
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| program_name(&args.command[0]));
    let suffix: String = format!("{:x}", mezz_random());
    let task_id = format!("{name}-{}", &suffix[..suffix.len().min(8)]);
    mezz_proto::ids::validate_id("task", &task_id).map_err(|e| anyhow!("--name: {e}"))?;
    let builder = task_builder(&args, &task_id, &need)?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver_slot = Arc::new(Mutex::new(None::<Driver>));
    let scheduler = RunScheduler {
        need: need.clone(),
        role: args.role.clone(),
        gpus: args.gpus,
        task: Some(builder),
        task_id: task_id.clone(),
        launched: false,
        detach: args.detach,
        largest_offer: None,
        tx,
        driver: driver_slot.clone(),
    };
    let framework = proto::FrameworkInfo {
        name: format!("mezz-run {name}"),
        role: args.role.clone(),
        failover_timeout_secs: if args.detach { 7.0 * 86400.0 } else { 60.0 },
        user: std::env::var("USER").unwrap_or_default(),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        // Only frameworks that declare it are offered GPU agents.
        capabilities: if args.gpus > 0 {
            vec![proto::Capability::GpuResources as i32]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mut driver_run = tokio::spawn(
        DriverBuilder::new()
            .masters(masters.clone())
            .framework(framework)
            .connect_timeout(Duration::from_secs(8))
            .run(scheduler),
    );

    let started = Instant::now();
    let deadline = args.timeout.map(|t| started + t);
    let (finished, finished_rx) = watch::channel(false);
    let mut tails: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    let mut agent: Option<(String, String)> = None;
    let mut last_status: Option<proto::TaskStatus> = None;
    let mut waiting_said = String::new();
    let mut interrupted = 0u32;
    let mut running = false;
    let mut driver_done = false;
    let mut detached = false;
    let mut driver_error: Option<String> = None;
    let driver = || driver_slot.lock().ok().and_then(|d| d.clone());

    let ctrl_c = super::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        let wait_left = match (deadline, agent.is_some()) {
            (Some(d), false) => d.saturating_duration_since(Instant::now()),
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            progress = rx.recv() => match progress {
                Some(Progress::Waiting(why)) => {
                    if started.elapsed() > Duration::from_millis(500) && why != waiting_said {
                        eprintln!("mezz run: waiting for resources: {why}");
                        waiting_said = why;
                    }
                }
                Some(Progress::Launched { agent_address, framework_id }) => {
                    agent = Some((agent_address, framework_id));
                }
                Some(Progress::Update(status)) => {
                    let state = status.state();
                    if let (TaskState::Running, Some(healthy)) = (state, status.healthy) {
                        eprintln!(
                            "mezz run: task {task_id} is {}{}",
                            if healthy { "healthy" } else { "unhealthy" },
                            if healthy { String::new() } else { format!(": {}", status.message) }
                        );
                    }
                    if (state == TaskState::Running || state.is_terminal()) && !running && !args.detach {
                        running = true;
                        if let Some((addr, fid)) = &agent {
                            for (path, out) in [("stdout", Out::Stdout), ("stderr", Out::Stderr)] {
                                let (addr, fid, tid, fin) = (addr.clone(), fid.clone(), task_id.clone(), finished_rx.clone());
                                tails.push(tokio::spawn(async move {
                                    Tail::connect(&addr, &fid, &tid, path).await?.follow(out, fin).await
                                }));
                            }
                        }
                    }
                    if args.detach && state == TaskState::Running && !detached {
                        println!("{task_id}");
                        detached = true;
                    }
                    if state.is_terminal() {
                        let _ = finished.send(true);
                        last_status = Some(status);
                    }
                }
                Some(Progress::Error(m)) => eprintln!("mezz run: {m}"),
                Some(Progress::Disconnected) => eprintln!("mezz run: lost the master; reconnecting…"),
                None => break,
            },
            done = &mut driver_run, if driver_error.is_none() && !driver_done => {
                // The scheduler (and with it the progress sender) is dropped
                // here, so the loop handles what it said last and then ends
                // when the channel closes.
                driver_done = true;
                let _ = finished.send(true);
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => driver_error = Some(e.to_string()),
                    Err(e) => return Err(anyhow!("the framework driver failed: {e}")),
                }
            }
            _ = tokio::time::sleep(wait_left), if deadline.is_some() && agent.is_none() => {
                let largest = largest_agent(&masters).await;
                if let Some(d) = driver() { d.teardown(); }
                eprintln!(
                    "mezz run: no agent offered {need} within {}; {largest}",
                    humantime(args.timeout.unwrap_or_default())
                );
                return Ok(ExitCode::from(1));
            }
            _ = &mut ctrl_c => {
                interrupted += 1;
                let Some(d) = driver() else { return Ok(ExitCode::from(130)) };
                if interrupted == 1 && agent.is_some() {
                    eprintln!("mezz run: killing task {task_id} (Ctrl-C again to leave it)…");
                    d.kill(task_id.as_str(), None);
                    ctrl_c.set(super::shutdown_signal());
                } else {
                    d.teardown();
                    return Ok(ExitCode::from(130));
                }
            }
        }
    }
    for t in tails {
        match t.await {
            Ok(Err(e)) => eprintln!("mezz run: {e:#}"),
            Err(e) => eprintln!("mezz run: output stream failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    if args.detach {
        return match last_status {
            Some(s) if s.state() != TaskState::Finished => {
                let (code, msg) = exit_code(&s);
                eprintln!(
                    "mezz run: {}",
                    msg.unwrap_or_else(|| format!("task {task_id} ended"))
                );
                Ok(ExitCode::from(code))
            }
            Some(_) => Ok(ExitCode::SUCCESS),
            None if detached => Ok(ExitCode::SUCCESS),
            None => Err(anyhow!(
                "{}",
                driver_error
                    .unwrap_or_else(|| format!("the framework ended before task {task_id} ran"))
            )),
        };
    }
    let Some(status) = last_status else {
        return Err(anyhow!(
            "the framework ended before task {task_id} reported an outcome"
        ));
    };
    let (code, msg) = exit_code(&status);
    if let Some(m) = msg {
        eprintln!("mezz run: {m}");
    }
    Ok(ExitCode::from(code))
}

/// What the largest agent has, for "why is my task waiting" messages.
async fn largest_agent(masters: &[String]) -> String {
    match client::state(masters, false).await {
        Ok(s) => s
            .agents
            .iter()
            .filter(|a| a.status == "connected")
            .max_by(|a, b| {
                let c = |m: &std::collections::BTreeMap<String, f64>| {
                    m.get("cpus").copied().unwrap_or(0.0)
                };
                c(&a.total).total_cmp(&c(&b.total))
            })
            .map(|a| {
                format!(
                    "the largest agent ({}) has {} in total",
                    a.hostname, a.resources
                )
            })
            .unwrap_or_else(|| "no agent is connected".into()),
        Err(e) => format!("and the cluster state could not be read: {e}"),
    }
}

fn humantime(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A task-id suffix: unique enough across concurrent `mezz run`s.
pub(super) fn mezz_random() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pid = u64::from(std::process::id());
    // SplitMix64 over time and pid.
    let mut z = nanos ^ pid.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(
        state: TaskState,
        reason: TaskReason,
        code: Option<i32>,
        sig: Option<i32>,
    ) -> proto::TaskStatus {
        proto::TaskStatus {
            state: state as i32,
            reason: reason as i32,
            exit_code: code,
            signal: sig,
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(
            exit_code(&st(
                TaskState::Finished,
                TaskReason::Unspecified,
                Some(0),
                None
            ))
            .0,
            0
        );
        assert_eq!(
            exit_code(&st(
                TaskState::Failed,
                TaskReason::CommandExited,
                Some(3),
                None
            )),
            (3, None)
        );
        assert_eq!(
            exit_code(&st(TaskState::Failed, TaskReason::LaunchFailed, None, None)).0,
            127
        );
        assert_eq!(
            exit_code(&st(
                TaskState::Killed,
                TaskReason::KilledByRequest,
                None,
                Some(15)
            ))
            .0,
            143
        );
        assert_eq!(
            exit_code(&st(TaskState::Lost, TaskReason::AgentRemoved, None, None)).0,
            1
        );
    }

    #[test]
    fn program_names_make_task_ids() {
        assert_eq!(program_name("/usr/bin/python3"), "python3");
        assert_eq!(program_name("echo hi && ls"), "echo");
        assert_eq!(program_name("a.b"), "a-b");
    }
}
