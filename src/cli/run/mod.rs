//! `mezz run`: run one command on the cluster as if it ran here. It is a
//! small framework built on the SDK (as `mesos-execute` is on Mesos): wait
//! for an offer that fits, launch, stream stdout and stderr, and exit with
//! the task's exit code.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use mezz_sdk::{
    proto, Driver, FrameworkId, Resources, Scheduler, TaskBuilder, TaskReason, TaskState,
};
use tokio::sync::{mpsc, watch};

use super::capacity::{never_fits, why_not_offered, Need};
use super::logs::{Out, Sandbox};
use crate::client;

/// How long after Ctrl-C or SIGTERM `mezz run` waits for its task to end
/// before it tears its framework down (which kills the task) and leaves.
pub const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long `mezz run` waits for its launch before it asks whether any
/// agent could ever hold the task (and fails at once if none could).
const FITS_CHECK_AFTER: Duration = Duration::from_millis(300);
/// How long a teardown may take to reach the master before `mezz run`
/// leaves anyway (the master then removes the framework after its
/// failover timeout, killing what it ran).
const TEARDOWN_WAIT: Duration = Duration::from_secs(3);
/// How often a launch whose fate is unsure is asked about.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// A launch without news for this long is asked about.
const LAUNCH_PATIENCE: Duration = Duration::from_secs(5);
/// Two TASK_UNKNOWN answers at least this far apart: the task was never
/// launched (one answer could overtake an accept still on its way).
const UNKNOWN_CONFIRM: Duration = Duration::from_secs(1);

mod args;
mod launcher;
#[cfg(test)]
mod tests;

pub use args::RunArgs;

use launcher::*;

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
    if let Some(limit) = args.run_deadline {
        b = b.max_run(limit);
    }
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
    for kv in &args.label {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow!("--label '{kv}' is not K=V"))?;
        b = b.label(k, v);
    }
    for kv in &args.secret_env {
        // The value never goes into a message: only the key.
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let v = std::env::var(kv).map_err(|_| {
                    anyhow!("--secret-env {kv}: ${kv} is not set here; set it, or give {kv}=VALUE")
                })?;
                (kv.clone(), v)
            }
        };
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(anyhow!(
                "--secret-env: a variable name is empty or has blanks"
            ));
        }
        b = b.secret_env(k, v);
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

pub async fn main(mut args: RunArgs) -> Result<ExitCode> {
    let masters = client::masters(args.master.master.as_deref())?;
    if let Some(name) = &args.size {
        let size = super::sizes::menu(&masters).await?.get(name)?;
        (args.cpus, args.mem, args.gpus) = (size.cpus, size.mem, size.gpus);
    }
    if !(args.cpus.is_finite() && args.cpus >= 0.0 && args.mem.is_finite() && args.mem >= 0.0) {
        return Err(anyhow!("--cpus and --mem must be non-negative numbers"));
    }
    if args.cpus == 0.0 && args.mem == 0.0 {
        return Err(anyhow!("give the task some --cpus or --mem"));
    }
    let need = Resources::new()
        .with_scalar("cpus", args.cpus)
        .with_scalar("mem", args.mem);
    let request = Need {
        cpus: args.cpus,
        mem: args.mem,
        gpus: args.gpus,
        role: args.role.clone(),
    };
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
    let mut launcher = Launcher::new(
        need.clone(),
        args.role.clone(),
        args.gpus,
        builder,
        task_id.clone(),
        args.detach,
    );
    launcher.demand = Some(proto::Demand {
        id: task_id.clone(),
        resources: need
            .clone()
            .with_scalar("gpus", args.gpus as f64)
            .to_proto(),
        tasks: 1,
        priority: String::new(),
        start_deadline_secs: args.start_deadline.map_or(0.0, |d| d.as_secs_f64()),
    });
    let scheduler = RunScheduler {
        launcher,
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
        priority: args.priority.clone().unwrap_or_default(),
        // Only frameworks that declare it are offered GPUs.
        capabilities: if args.gpus > 0 {
            vec![proto::Capability::GpuResources as i32]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mut driver_run = tokio::spawn(
        crate::client::driver()?
            .masters(masters.clone())
            .framework(framework)
            .connect_timeout(Duration::from_secs(8))
            .run(scheduler),
    );

    let started = Instant::now();
    let deadline = args.timeout.map(|t| started + t);
    // Whether any agent could ever hold the task, asked only if no launch
    // went out soon: a task that fits is launched long before, and the
    // cluster's whole state is not read (by the master, and over the
    // wire) for every `mezz run`.
    let (fits_tx, mut fits_rx) = mpsc::unbounded_channel::<Option<String>>();
    let launched = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if !args.wait {
        let (masters, request, launched) = (masters.clone(), request.clone(), launched.clone());
        tokio::spawn(async move {
            tokio::time::sleep(FITS_CHECK_AFTER).await;
            if launched.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let state =
                tokio::time::timeout(Duration::from_secs(5), client::state(&masters, false));
            if let Ok(Ok(s)) = state.await {
                let _ = fits_tx.send(never_fits(&s.agents, &request));
            }
        });
    }
    // Why each agent is not offering the task, asked now and then while
    // waiting.
    let (why_tx, mut why_rx) = mpsc::unbounded_channel::<Vec<String>>();
    let mut next_why = Some(started + Duration::from_millis(1500));
    let (finished, finished_rx) = watch::channel(false);
    let mut tails: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    // The launch in flight or running: (task id, agent address, framework).
    let mut attempt: Option<(String, String, String)> = None;
    // The launch's sandbox being reached, for its output.
    let mut sandbox: Option<tokio::task::JoinHandle<Result<Sandbox>>> = None;
    let mut last_status: Option<proto::TaskStatus> = None;
    let mut waiting_said = String::new();
    let mut why_said = String::new();
    let mut interrupted = 0u32;
    let mut killing_since: Option<Instant> = None;
    let mut running = false;
    let mut driver_done = false;
    let mut detached = false;
    let mut driver_error: Option<String> = None;
    let driver = || driver_slot.lock().ok().and_then(|d| d.clone());
    let far = || Instant::now() + Duration::from_secs(86400);

    let ctrl_c = super::shutdown_signal();
    tokio::pin!(ctrl_c);
    // Set once standard output's reader went away: the task is killed, as
    // a local program writing to a closed pipe dies, and the exit status
    // is the one a shell gives a program killed by SIGPIPE.
    let mut reader_gone = false;
    loop {
        let task_now = attempt
            .as_ref()
            .map(|a| a.0.clone())
            .unwrap_or_else(|| task_id.clone());
        tokio::select! {
            progress = rx.recv() => match progress {
                Some(Progress::Waiting(why)) => {
                    if started.elapsed() > Duration::from_millis(500) && why != waiting_said {
                        errln!("mezz run: waiting for resources: {why}");
                        waiting_said = why;
                    }
                }
                Some(Progress::Attempt { task_id, agent_address, framework_id }) => {
                    launched.store(true, std::sync::atomic::Ordering::Relaxed);
                    // The connection to the agent and the grant to read the
                    // sandbox are made while the task launches, not after.
                    if !args.detach {
                        let reach = reach_sandbox(&agent_address, &framework_id, &task_id);
                        if let Some(old) = sandbox.replace(reach) {
                            old.abort();
                        }
                    }
                    attempt = Some((task_id, agent_address, framework_id));
                }
                Some(Progress::Unsure { task_id, why }) => {
                    errln!("mezz run: {why}; asking the master whether task {task_id} started…");
                }
                Some(Progress::Retry { why, .. }) => {
                    errln!("mezz run: {why}; launching it again");
                    attempt = None;
                    // The next launch may land on another agent.
                    if let Some(old) = sandbox.take() {
                        old.abort();
                    }
                    next_why = Some(Instant::now() + Duration::from_millis(1500));
                }
                Some(Progress::Update(status)) => {
                    let state = status.state();
                    if let (TaskState::Running, Some(healthy)) = (state, status.healthy) {
                        errln!(
                            "mezz run: task {} is {}{}",
                            status.task_id,
                            if healthy { "healthy" } else { "unhealthy" },
                            if healthy { String::new() } else { format!(": {}", status.message) }
                        );
                    }
                    if (state == TaskState::Running || state.is_terminal()) && !running {
                        running = true;
                        let prepared = sandbox.take().or_else(|| {
                            attempt.as_ref().map(|(tid, addr, fid)| reach_sandbox(addr, fid, tid))
                        });
                        if let (Some(prepared), false) = (prepared, args.detach) {
                            let fin = finished_rx.clone();
                            tails.push(tokio::spawn(async move {
                                let sandbox = prepared
                                    .await
                                    .map_err(|e| anyhow!("connecting for the task's output failed: {e}"))??;
                                let (out, err) = tokio::join!(
                                    sandbox.tail("stdout").follow(Out::Stdout, fin.clone()),
                                    sandbox.tail("stderr").follow(Out::Stderr, fin)
                                );
                                match (out, err) {
                                    (Err(a), Err(b)) => Err(anyhow!("{a:#}; {b:#}")),
                                    (a, b) => a.and(b),
                                }
                            }));
                        }
                    }
                    if args.detach && state == TaskState::Running && !detached {
                        if !super::print_line(&status.task_id) {
                            reader_gone = true;
                        }
                        detached = true;
                    }
                    if state.is_terminal() {
                        let _ = finished.send(true);
                        last_status = Some(status);
                    }
                }
                Some(Progress::Error(m)) => errln!("mezz run: {m}"),
                Some(Progress::Disconnected) => errln!("mezz run: lost the master; reconnecting…"),
                None => break,
            },
            done = &mut driver_run, if !driver_done => {
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
            Some(verdict) = fits_rx.recv() => {
                if let (Some(why), None) = (verdict, &attempt) {
                    leave(driver(), &mut driver_run, driver_done, TEARDOWN_WAIT).await;
                    return Err(anyhow!("{why}; pass --wait to wait for a bigger agent to join"));
                }
            }
            _ = tokio::time::sleep_until(next_why.unwrap_or_else(far).into()), if next_why.is_some() && attempt.is_none() && !running => {
                next_why = None;
                let (masters, request, why_tx) = (masters.clone(), request.clone(), why_tx.clone());
                tokio::spawn(async move {
                    let state = tokio::time::timeout(Duration::from_secs(5), client::state(&masters, false));
                    let why = match state.await {
                        Ok(Ok(s)) => why_not_offered(&s.agents, &request),
                        _ => Vec::new(),
                    };
                    let _ = why_tx.send(why);
                });
            }
            Some(why) = why_rx.recv() => {
                next_why = Some(Instant::now() + Duration::from_secs(5));
                let why = why.join("; ");
                if attempt.is_none() && !running && !why.is_empty() && why != why_said {
                    errln!("mezz run: waiting for resources: needs {}; {why}", request.describe());
                    why_said = why;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far).into()), if deadline.is_some() && !running => {
                let timeout = humantime(args.timeout.unwrap_or_default());
                let message = match &attempt {
                    Some((tid, _, _)) => format!("task {tid} did not start within {timeout}; killing it"),
                    None => format!(
                        "no agent offered {} within {timeout}; {}",
                        request.describe(),
                        why_waiting(&masters, &request).await
                    ),
                };
                errln!("mezz run: {message}");
                leave(driver(), &mut driver_run, driver_done, TEARDOWN_WAIT).await;
                return Ok(ExitCode::from(1));
            }
            _ = tokio::time::sleep_until(killing_since.map_or_else(far, |t| t + KILL_GRACE).into()), if killing_since.is_some() => {
                errln!(
                    "mezz run: task {task_now} did not end within {}; tearing the framework down, which kills it",
                    humantime(KILL_GRACE)
                );
                leave(driver(), &mut driver_run, driver_done, TEARDOWN_WAIT).await;
                return Ok(ExitCode::from(130));
            }
            _ = super::logs::stdout_closed().notified(), if !reader_gone => {
                reader_gone = true;
                let Some(d) = driver() else { return Ok(ExitCode::from(SIGPIPE_EXIT)) };
                if attempt.is_some() && last_status.is_none() && killing_since.is_none() {
                    errln!("mezz run: the output's reader went away; killing task {task_now}…");
                    d.kill(task_now.as_str(), None);
                    killing_since = Some(Instant::now());
                }
            }
            _ = &mut ctrl_c => {
                interrupted += 1;
                let Some(d) = driver() else { return Ok(ExitCode::from(130)) };
                if interrupted == 1 && attempt.is_some() && last_status.is_none() {
                    errln!(
                        "mezz run: killing task {task_now} (waiting up to {} for it to end; Ctrl-C again to leave now)…",
                        humantime(KILL_GRACE)
                    );
                    d.kill(task_now.as_str(), None);
                    killing_since = Some(Instant::now());
                    ctrl_c.set(super::shutdown_signal());
                } else {
                    let wait = if interrupted == 1 { TEARDOWN_WAIT } else { Duration::ZERO };
                    leave(Some(d), &mut driver_run, driver_done, wait).await;
                    return Ok(ExitCode::from(130));
                }
            }
        }
    }
    // The progress channel closes as the driver ends (it drops the
    // scheduler on its way out), and the loop may see that first: the
    // driver's error (a refused subscription) still counts.
    if !driver_done {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), &mut driver_run).await
        {
            driver_error = Some(e.to_string());
        }
    }
    for t in tails {
        match t.await {
            Ok(Err(e)) => errln!("mezz run: {e:#}"),
            Err(e) => errln!("mezz run: output stream failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    let task_id = attempt.map(|a| a.0).unwrap_or(task_id);
    // The output's last lines may have met the closed pipe only now.
    reader_gone |= super::logs::stdout_is_closed();
    if args.detach {
        // The task's id could not be printed: the caller never learns it.
        if reader_gone {
            return Ok(ExitCode::from(SIGPIPE_EXIT));
        }
        return match last_status {
            Some(s) if s.state() != TaskState::Finished => {
                let (code, msg) = exit_code(&s);
                errln!(
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
        // Why the driver ended (a refused subscription, say) says more
        // than that it did.
        return Err(anyhow!(
            "{}",
            driver_error.unwrap_or_else(|| format!(
                "the framework ended before task {task_id} reported an outcome"
            ))
        ));
    };
    if reader_gone {
        return Ok(ExitCode::from(SIGPIPE_EXIT));
    }
    let (code, msg) = exit_code(&status);
    if let Some(m) = msg {
        errln!("mezz run: {m}");
    }
    Ok(ExitCode::from(code))
}

/// Connects to the agent holding a task's sandbox and asks for the grant
/// to read it, in the background.
fn reach_sandbox(
    agent_address: &str,
    framework_id: &str,
    task_id: &str,
) -> tokio::task::JoinHandle<Result<Sandbox>> {
    let (addr, fid, tid) = (
        agent_address.to_string(),
        framework_id.to_string(),
        task_id.to_string(),
    );
    tokio::spawn(async move {
        let sandbox = Sandbox::connect(&addr, &fid, &tid).await?;
        // Early and best-effort: a refusal is reported by the first read,
        // which asks again.
        let _ = sandbox.fresh_grant().await;
        Ok(sandbox)
    })
}

/// What a shell reports for a program killed by SIGPIPE (128 + 13).
const SIGPIPE_EXIT: u8 = 141;

/// Tears the framework down before `mezz run` exits (which kills its task,
/// if launched) and waits at most `wait` for the master to hear it: past
/// that the master removes the framework after its failover timeout.
async fn leave(
    driver: Option<Driver>,
    run: &mut tokio::task::JoinHandle<Result<RunScheduler, mezz_sdk::SdkError>>,
    done: bool,
    wait: Duration,
) {
    let Some(d) = driver else { return };
    d.teardown();
    if !done {
        let _ = tokio::time::timeout(wait, run).await;
    }
}

/// Why nothing was offered: each agent's reason, else the largest agent.
async fn why_waiting(masters: &[String], need: &Need) -> String {
    let state = tokio::time::timeout(Duration::from_secs(3), client::state(masters, false)).await;
    match state {
        Ok(Ok(s)) => {
            let why = why_not_offered(&s.agents, need);
            if why.is_empty() {
                largest_agent(&s.agents)
            } else {
                why.join("; ")
            }
        }
        Ok(Err(e)) => format!("and the cluster state could not be read: {e}"),
        Err(_) => "and the cluster state could not be read in time".into(),
    }
}

/// What the largest agent has, for "why is my task waiting" messages.
fn largest_agent(agents: &[proto::AgentView]) -> String {
    agents
        .iter()
        .filter(|a| a.status == "connected")
        .max_by(|a, b| {
            let c =
                |m: &std::collections::BTreeMap<String, f64>| m.get("cpus").copied().unwrap_or(0.0);
            c(&a.total).total_cmp(&c(&b.total))
        })
        .map(|a| {
            format!(
                "the largest agent ({}) has {} in total",
                a.hostname, a.resources
            )
        })
        .unwrap_or_else(|| "no agent is connected".into())
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
