//! Per-task health checks (Mesos' health checks): the policy that turns a
//! stream of check results into health changes and a kill (`Tracker`, pure:
//! time is passed in), and the probes themselves (`probe`: a command in the
//! task's sandbox and environment, an HTTP GET or a TCP connect to
//! 127.0.0.1). Which task runs a check, and what an effect does to it, is
//! the agent's business (`agent/health_checks.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mezz_proto::v1::{health_check, HealthCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Defaults (Mesos' own, less the start delay: the first check runs at once).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_FAILURES: u32 = 3;
/// An HTTP answer is judged by its status line; more is not read.
const MAX_HTTP_HEAD: usize = 8192;

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `/bin/sh -c COMMAND`, healthy on exit 0.
    Command(String),
    /// GET `http://127.0.0.1:PORT/PATH`, healthy when the status is in
    /// `min..=max`.
    Http {
        /// Port on 127.0.0.1.
        port: u16,
        /// Request path, starting with '/'.
        path: String,
        /// Lowest healthy status.
        min: u16,
        /// Highest healthy status.
        max: u16,
    },
    /// A TCP connect to 127.0.0.1:PORT.
    Tcp(u16),
}

/// A validated health check with its defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// What to probe.
    pub probe: Probe,
    /// Between the starts of two checks.
    pub interval: Duration,
    /// One check's limit.
    pub timeout: Duration,
    /// Failures before this (after RUNNING) do not count, until a success.
    pub grace: Duration,
    /// Failures in a row that kill the task.
    pub failures: u32,
}

fn secs_or(what: &str, v: f64, default: Duration) -> Result<Duration, String> {
    if !v.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&v) {
        return Err(format!(
            "health check {what} {v} is not a number of seconds between 0 and a year"
        ));
    }
    Ok(if v == 0.0 {
        default
    } else {
        Duration::from_secs_f64(v)
    })
}

fn port(what: &str, p: u32) -> Result<u16, String> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{what} health check port {p} is not a port (1-65535)"))
}

impl Policy {
    /// Validates `check` (a launch with an invalid one is TASK_ERROR).
    pub fn from_proto(check: &HealthCheck) -> Result<Policy, String> {
        let probe = match &check.check {
            None => return Err("health check has no command, http or tcp check; set one".into()),
            Some(health_check::Check::Command(c)) if c.trim().is_empty() => {
                return Err("health check command is empty".into())
            }
            Some(health_check::Check::Command(c)) => Probe::Command(c.clone()),
            Some(health_check::Check::Http(h)) => {
                let (min, max) = match (h.min_status, h.max_status) {
                    (0, 0) => (200, 399),
                    (lo, 0) => (lo, 599),
                    (lo, hi) => (lo, hi),
                };
                if !(100..=599).contains(&min) || !(100..=599).contains(&max) || min > max {
                    return Err(format!(
                        "http health check status range {min}-{max} is not within 100-599"
                    ));
                }
                let path = if h.path.is_empty() {
                    "/".to_string()
                } else if h.path.starts_with('/') {
                    h.path.clone()
                } else {
                    format!("/{}", h.path)
                };
                if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!(
                        "http health check path '{path}' has spaces or control characters"
                    ));
                }
                Probe::Http {
                    port: port("http", h.port)?,
                    path,
                    min: min as u16,
                    max: max as u16,
                }
            }
            Some(health_check::Check::Tcp(t)) => Probe::Tcp(port("tcp", t.port)?),
        };
        Ok(Policy {
            probe,
            interval: secs_or("interval", check.interval_secs, DEFAULT_INTERVAL)?,
            timeout: secs_or("timeout", check.timeout_secs, DEFAULT_TIMEOUT)?,
            grace: secs_or("grace period", check.grace_period_secs, Duration::ZERO)?,
            failures: if check.consecutive_failures == 0 {
                DEFAULT_FAILURES
            } else {
                check.consecutive_failures
            },
        })
    }

    /// The check in words, for messages: `command 'curl -f …'`.
    pub fn describe(&self) -> String {
        match &self.probe {
            Probe::Command(c) => format!("command '{c}'"),
            Probe::Http { port, path, .. } => format!("http GET 127.0.0.1:{port}{path}"),
            Probe::Tcp(p) => format!("tcp 127.0.0.1:{p}"),
        }
    }
}

/// What the agent must do after a check result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Health changed: send a RUNNING update with `healthy` set.
    Health {
        /// The new health.
        healthy: bool,
        /// For people (the last error when unhealthy).
        message: String,
    },
    /// Too many failures in a row: kill the task with this message.
    Kill(String),
}

/// The health of one task run, from check results (pure; time since RUNNING
/// is passed in).
#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    healthy: Option<bool>,
    failures: u32,
    ever_healthy: bool,
    killed: bool,
}

impl Tracker {
    /// A run with no result yet.
    pub fn new(policy: Policy) -> Self {
        Tracker {
            policy,
            healthy: None,
            failures: 0,
            ever_healthy: false,
            killed: false,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A check ended `result` at `since_running` after the task ran.
    pub fn observe(&mut self, since_running: Duration, result: Result<(), String>) -> Vec<Effect> {
        if self.killed {
            return Vec::new();
        }
        let mut out = Vec::new();
        match result {
            Ok(()) => {
                self.failures = 0;
                self.ever_healthy = true;
                if self.healthy != Some(true) {
                    self.healthy = Some(true);
                    out.push(Effect::Health {
                        healthy: true,
                        message: format!("health check passed ({})", self.policy.describe()),
                    });
                }
            }
            // Mesos: failures in the grace period are ignored until the
            // task was healthy once.
            Err(_) if !self.ever_healthy && since_running < self.policy.grace => {}
            Err(why) => {
                self.failures += 1;
                if self.healthy != Some(false) {
                    self.healthy = Some(false);
                    out.push(Effect::Health {
                        healthy: false,
                        message: format!("health check failed ({}): {why}", self.policy.describe()),
                    });
                }
                if self.failures >= self.policy.failures {
                    self.killed = true;
                    out.push(Effect::Kill(format!(
                        "health check {} failed {} time(s) in a row; last: {why}",
                        self.policy.describe(),
                        self.failures
                    )));
                }
            }
        }
        out
    }
}

/// Where and as whom a command check runs: the task's own launch spec.
#[derive(Clone, Debug, Default)]
pub struct CommandContext {
    /// The task's environment.
    pub env: BTreeMap<String, String>,
    /// The sandbox.
    pub cwd: PathBuf,
    /// The task's user, if it runs as another one.
    pub user: Option<String>,
    /// The task runs in namespaces of its own: the check enters the mount
    /// namespace of the task's init (its pid given to
    /// [`CommandContext::in_task_of`]), so it sees what the task sees and
    /// nothing more (a check that runs a script of the sandbox runs the
    /// task's code).
    pub namespaces: bool,
    /// Host pid of the task's init, whose mount namespace the check enters.
    pub task_pid: Option<i32>,
}

impl CommandContext {
    /// This context for the run whose init (or command) is host pid `pid`.
    pub fn in_task_of(mut self, pid: i32) -> Self {
        self.task_pid = Some(pid);
        self
    }

    /// The context of the run in `sandbox`, from its launch spec; the bare
    /// sandbox when the spec cannot be read.
    pub fn of_sandbox(sandbox: &Path) -> Self {
        let spec = std::fs::read(
            sandbox
                .join(crate::launch_spec::META_DIR)
                .join(crate::launch_spec::SPEC_FILE),
        )
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::launch_spec::LaunchSpec>(&b).ok());
        match spec {
            Some(s) => CommandContext {
                env: s.env,
                cwd: s.cwd,
                user: s.user,
                namespaces: s.namespaces,
                task_pid: None,
            },
            None => CommandContext {
                cwd: sandbox.to_path_buf(),
                ..Default::default()
            },
        }
    }
}

/// Runs one check, bounded by `timeout`; `Err` says why it failed.
pub async fn probe(probe: &Probe, ctx: &CommandContext, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run_probe(probe, ctx)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn run_probe(probe: &Probe, ctx: &CommandContext) -> Result<(), String> {
    match probe {
        Probe::Command(c) => command(c, ctx).await,
        Probe::Tcp(port) => tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .map(drop)
            .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}")),
        Probe::Http {
            port,
            path,
            min,
            max,
        } => {
            let status = http_status(*port, path).await?;
            if (*min..=*max).contains(&status) {
                Ok(())
            } else {
                Err(format!(
                    "GET 127.0.0.1:{port}{path} answered {status} (healthy: {min}-{max})"
                ))
            }
        }
    }
}

async fn command(cmd: &str, ctx: &CommandContext) -> Result<(), String> {
    let mut c = tokio::process::Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env_clear()
        .envs(&ctx.env)
        .current_dir(&ctx.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let user = match &ctx.user {
        None => None,
        Some(name) => {
            let u = nix::unistd::User::from_name(name)
                .map_err(|e| format!("cannot look up user '{name}': {e}"))?
                .ok_or_else(|| format!("user '{name}' does not exist on this agent"))?;
            Some((u.uid.as_raw(), u.gid.as_raw()))
        }
    };
    // Entering the task's mount namespace needs root, so the user switch
    // comes after it, in the same hook (Command::uid would switch first).
    let mount_ns = match (ctx.namespaces, ctx.task_pid) {
        (true, Some(pid)) => Some(
            std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
                .map_err(|e| format!("cannot enter the task's mount namespace: {e}"))?,
        ),
        (true, None) => return Err("the task's mount namespace is not known".into()),
        (false, _) => None,
    };
    let cwd = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(ctx.cwd.as_os_str()))
        .map_err(|_| "the sandbox path contains a NUL byte".to_string())?;
    // SAFETY: the hook makes only raw system calls on data prepared above
    // (fork-safe in the agent's multi-threaded process).
    unsafe {
        c.pre_exec(move || {
            use std::os::fd::AsRawFd;
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            if let Some(ns) = &mount_ns {
                check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS))?;
                // The working directory still points into the host's view.
                check(libc::chdir(cwd.as_ptr()))?;
            }
            if let Some((uid, gid)) = user {
                check(libc::setgroups(1, &gid))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        });
    }
    let child = c
        .spawn()
        .map_err(|e| format!("cannot run /bin/sh for the check: {e}"))?;
    let pgid = child.id().map(|p| p as i32);
    // On a timeout this future is dropped: kill the check's whole group,
    // not just the shell.
    let _group = KillGroupOnDrop(pgid);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("cannot wait for the check: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    let how = match out.status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_string(),
    };
    Err(match last {
        Some(l) => format!("{how}: {}", l.chars().take(200).collect::<String>()),
        None => how,
    })
}

struct KillGroupOnDrop(Option<i32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            crate::executor::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// GET `path` from 127.0.0.1:`port`; the status code.
async fn http_status(port: u16, path: &str) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mezz-agent-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("cannot send to 127.0.0.1:{port}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end]);
        }
        if buf.len() > MAX_HTTP_HEAD {
            break;
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read from 127.0.0.1:{port}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.is_empty() {
        Err(format!("127.0.0.1:{port} closed without an answer"))
    } else {
        parse_status_line(&buf[..buf.len().min(200)])
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: '{}'", text.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::v1::{HttpHealthCheck, TcpHealthCheck};

    fn policy(failures: u32, grace: u64) -> Policy {
        Policy {
            probe: Probe::Command("false".into()),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            grace: Duration::from_secs(grace),
            failures,
        }
    }
    const FAIL: fn() -> Result<(), String> = || Err("exited with code 1".into());

    #[test]
    fn failures_in_a_row_kill() {
        let mut t = Tracker::new(policy(3, 0));
        let s = Duration::from_secs;
        let e = t.observe(s(1), FAIL());
        assert!(
            matches!(&e[..], [Effect::Health { healthy: false, message }] if message.contains("exited with code 1"))
        );
        assert!(t.observe(s(2), FAIL()).is_empty());
        assert!(matches!(
            &t.observe(s(3), Ok(()))[..],
            [Effect::Health { healthy: true, .. }]
        ));
        assert!(matches!(
            &t.observe(s(4), FAIL())[..],
            [Effect::Health { healthy: false, .. }]
        ));
        assert!(t.observe(s(5), FAIL()).is_empty());
        let e = t.observe(s(6), FAIL());
        assert_eq!(
            e,
            vec![Effect::Kill(
                "health check command 'false' failed 3 time(s) in a row; last: exited with code 1"
                    .into()
            )]
        );
        assert!(t.observe(s(7), FAIL()).is_empty(), "killed once only");
    }

    #[test]
    fn grace_period_ignores_failures_until_healthy() {
        let s = Duration::from_secs;
        let mut t = Tracker::new(policy(1, 10));
        assert!(t.observe(s(1), FAIL()).is_empty());
        assert!(t.observe(s(9), FAIL()).is_empty());
        let e = t.observe(s(10), FAIL());
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(matches!(e[1], Effect::Kill(_)));
        // A success inside the grace period ends it.
        let mut t = Tracker::new(policy(1, 10));
        assert_eq!(t.observe(s(1), Ok(())).len(), 1);
        assert!(matches!(t.observe(s(2), FAIL())[..], [_, Effect::Kill(_)]));
    }

    #[test]
    fn validation_and_defaults() {
        let p = Policy::from_proto(&HealthCheck {
            check: Some(health_check::Check::Http(HttpHealthCheck {
                port: 8080,
                path: "ready".into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            p.probe,
            Probe::Http {
                port: 8080,
                path: "/ready".into(),
                min: 200,
                max: 399
            }
        );
        assert_eq!(
            (p.interval, p.timeout, p.grace, p.failures),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Duration::ZERO, 3)
        );
        let bad = |c: HealthCheck| Policy::from_proto(&c).unwrap_err();
        assert!(bad(HealthCheck::default()).contains("no command"));
        assert!(bad(HealthCheck {
            check: Some(health_check::Check::Tcp(TcpHealthCheck { port: 70000 })),
            ..Default::default()
        })
        .contains("70000"));
        assert!(bad(HealthCheck {
            check: Some(health_check::Check::Command("true".into())),
            interval_secs: -1.0,
            ..Default::default()
        })
        .contains("interval"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.0 200 OK"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 404 Not Found"), Ok(404));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
    }

    #[tokio::test]
    async fn command_probe_runs_in_the_sandbox_with_the_task_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ready"), "").unwrap();
        let ctx = CommandContext {
            env: [("WANT".to_string(), "yes".to_string())].into(),
            cwd: dir.path().to_path_buf(),
            user: None,
            namespaces: false,
            task_pid: None,
        };
        let t = Duration::from_secs(5);
        let ok = Probe::Command("test -f ready && test \"$WANT\" = yes".into());
        assert_eq!(probe(&ok, &ctx, t).await, Ok(()));
        let e = probe(&Probe::Command("echo nope >&2; exit 4".into()), &ctx, t)
            .await
            .unwrap_err();
        assert_eq!(e, "exited with code 4: nope");
        let e = probe(
            &Probe::Command("sleep 30".into()),
            &ctx,
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
    }
}
