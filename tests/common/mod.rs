//! Harness for process tests: real `mezz` masters and agents on free
//! loopback ports with temporary directories, killed (with every task they
//! started) when the test ends, pass or fail.
#![allow(dead_code)] // each test binary uses a different part of the harness

mod http;
pub mod jobs;
mod needs;
pub use http::*;
pub use needs::*;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MEZZ: &str = env!("CARGO_BIN_EXE_mezz");

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits for `cond` with a deadline; panics with `what` when it never holds.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A child process that is SIGKILLed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `mezz ARGS` to completion with a time limit.
pub fn mezz(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(MEZZ)
        .args(args)
        .env_remove("MEZZ_MASTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mezz");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "mezz {args:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A temporary directory for a cluster's masters and agents. Agents run
/// tasks as `nobody`, which must pass through the parents of an agent's
/// work dir to its sandbox (`mezz agent` refuses to start otherwise), so
/// the directory is 0711: passable, not listable.
pub fn cluster_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the cluster dir");
    dir
}

/// A master and agents in their own temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master_port: u16,
    pub master: Option<Proc>,
    pub master_args: Vec<String>,
    pub agents: Vec<Option<Proc>>,
    pub agent_ports: Vec<u16>,
    pub agent_resources: String,
}

impl Cluster {
    /// A master (with `master_args` added) and one agent offering
    /// `resources`, both registered before this returns.
    pub fn start(resources: &str, master_args: &[&str]) -> Cluster {
        let mut c = Cluster {
            dir: cluster_dir(),
            master_port: free_port(),
            master: None,
            master_args: master_args.iter().map(|s| s.to_string()).collect(),
            agents: vec![],
            agent_ports: vec![],
            agent_resources: resources.to_string(),
        };
        c.start_master();
        c.agent_ports.push(free_port());
        c.agents.push(None);
        c.start_agent(0);
        c.wait_agents_connected(1);
        c
    }

    pub fn master_addr(&self) -> String {
        format!("127.0.0.1:{}", self.master_port)
    }

    fn spawn(&self, name: &str, args: &[String]) -> Proc {
        spawn_logged(self.dir.path(), name, args)
    }

    pub fn start_master(&mut self) {
        let mut args: Vec<String> = vec![
            "master".into(),
            "--listen".into(),
            self.master_addr(),
            "--data-dir".into(),
            self.dir.path().join("master").display().to_string(),
        ];
        args.extend(self.master_args.iter().cloned());
        let p = self.spawn("master", &args);
        self.master = Some(p);
        let addr = self.master_addr();
        wait_for("the master's /health", Duration::from_secs(15), || {
            http_get(&addr, "/health").is_some_and(|(code, _)| code == 200)
        });
    }

    pub fn agent_work_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("agent-{i}"))
    }

    /// Like [`Cluster::start`], with `agent_args` added to the agent's
    /// command line (e.g. `--fake-gpus 2`).
    pub fn start_with_agent_args(resources: &str, agent_args: &[&str]) -> Cluster {
        let mut c = Cluster {
            dir: cluster_dir(),
            master_port: free_port(),
            master: None,
            master_args: vec![],
            agents: vec![],
            agent_ports: vec![],
            agent_resources: resources.to_string(),
        };
        c.start_master();
        c.agent_ports.push(free_port());
        c.agents.push(None);
        c.start_agent_with(0, agent_args);
        c.wait_agents_connected(1);
        c
    }

    /// Starts agent `i` with `extra` flags after the usual ones (and
    /// without the usual `--gpus none` when `extra` names GPUs).
    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.master_addr(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.agent_ports[i]),
            "--work-dir".into(),
            self.agent_work_dir(i).display().to_string(),
            "--resources".into(),
            self.resources_of(i),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let p = self.spawn(&format!("agent-{i}"), &args);
        self.agents[i] = Some(p);
    }

    /// The cluster's agent resources, with agent `i`'s own port range:
    /// agents of one host must not offer the same ports (the agent refuses
    /// to start), so agent `i` gets the `i`-th range of the given size
    /// (31000-32000 when none is given).
    pub fn resources_of(&self, i: usize) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut range = (31000u64, 32000u64);
        for part in self.agent_resources.split(';') {
            match part
                .strip_prefix("ports:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.split_once('-'))
            {
                Some((b, e)) => range = (b.parse().expect("port"), e.parse().expect("port")),
                None => parts.push(part.to_string()),
            }
        }
        let shift = (range.1 - range.0 + 1) * i as u64;
        parts.push(format!("ports:[{}-{}]", range.0 + shift, range.1 + shift));
        parts.join(";")
    }

    /// Starts agent `i` with the usual flags, and no GPUs.
    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &["--gpus", "none"]);
    }

    /// Starts one more agent offering the cluster's resources and waits
    /// until it is connected; returns its index.
    pub fn add_agent(&mut self) -> usize {
        self.add_agent_with(&["--gpus", "none"])
    }

    /// Like [`Cluster::add_agent`], with `extra` flags as in
    /// [`Cluster::start_agent_with`].
    pub fn add_agent_with(&mut self, extra: &[&str]) -> usize {
        let i = self.agents.len();
        self.agent_ports.push(free_port());
        self.agents.push(None);
        self.start_agent_with(i, extra);
        self.wait_agents_connected(i + 1);
        i
    }

    /// The tasks in `/api/state` that are not terminal.
    pub fn active_tasks(&self) -> Vec<serde_json::Value> {
        const ACTIVE: [&str; 5] = ["STAGING", "STARTING", "RUNNING", "KILLING", "UNREACHABLE"];
        self.state()["tasks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t["state"].as_str().is_some_and(|s| ACTIVE.contains(&s)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn state(&self) -> serde_json::Value {
        let (code, body) = http_get(&self.master_addr(), "/api/state").expect("GET /api/state");
        assert_eq!(code, 200, "GET /api/state: {body}");
        serde_json::from_str(&body).expect("state JSON")
    }

    pub fn connected_agents(&self) -> usize {
        self.connected_agents_if_answered().unwrap_or(0)
    }

    /// Connected agents per `/api/state`; `None` when the master did not
    /// answer (a refused connection, say).
    pub fn connected_agents_if_answered(&self) -> Option<usize> {
        http_get(&self.master_addr(), "/api/state")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| {
                v["agents"]
                    .as_array()
                    .map(|a| a.iter().filter(|x| x["status"] == "connected").count())
            })
    }

    pub fn wait_agents_connected(&self, n: usize) {
        wait_for(
            &format!("{n} connected agent(s)"),
            Duration::from_secs(20),
            || self.connected_agents() >= n,
        );
    }

    /// The task with this id in `/api/state` (completed ones included).
    pub fn task(&self, id: &str) -> Option<serde_json::Value> {
        self.state()["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
    }

    pub fn wait_task_state(&self, id: &str, state: &str, timeout: Duration) -> serde_json::Value {
        wait_for(&format!("task {id} to be {state}"), timeout, || {
            self.task(id).is_some_and(|t| t["state"] == state)
        });
        self.task(id).expect("task")
    }

    /// Starts `sleep 300` with `mezz run --detach` and waits until it runs;
    /// returns its task id.
    pub fn start_sleeper(&self) -> String {
        let t = Duration::from_secs(30);
        let out = self.mezz(
            &[
                "run", "--detach", "--cpus", "0.1", "--mem", "32", "--", "sleep", "300",
            ],
            t,
        );
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        assert!(!id.is_empty(), "mezz run --detach printed no task id");
        self.wait_task_state(&id, "RUNNING", t);
        id
    }

    /// `mezz ARGS --master <this cluster>`, the master flag placed right
    /// after the subcommand so it never lands after `--`.
    pub fn mezz(&self, args: &[&str], timeout: Duration) -> Output {
        let addr = self.master_addr();
        let mut full: Vec<&str> = vec![args[0], "--master", &addr];
        full.extend_from_slice(&args[1..]);
        mezz(&full, timeout)
    }
}

/// The command line of master `i` (0-based; raft id `i + 1`) of a group
/// listening on `ports` of loopback, its data in `dir/m<id>`.
pub fn group_master_args(dir: &Path, ports: &[u16], i: usize) -> Vec<String> {
    let peers = ports
        .iter()
        .enumerate()
        .map(|(j, p)| format!("{}=127.0.0.1:{p}", j + 1))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "master".into(),
        "--listen".into(),
        format!("127.0.0.1:{}", ports[i]),
        "--data-dir".into(),
        dir.join(format!("m{}", i + 1)).display().to_string(),
        "--id".into(),
        (i + 1).to_string(),
        "--peers".into(),
        peers,
    ]
}

/// Starts `mezz ARGS` with its output in `DIR/NAME.log`.
pub fn spawn_logged(dir: &Path, name: &str, args: &[String]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let child = Command::new(MEZZ)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("spawn");
    Proc {
        name: name.to_string(),
        child,
        log,
    }
}

/// Kills every task process the agents of a work dir started (their
/// process groups, recorded by the task wrapper).
pub fn kill_tasks_under(dir: &Path) {
    let Ok(out) = Command::new("find")
        .arg(dir)
        .args(["-name", "child.pid"])
        .output()
    else {
        return;
    };
    for path in text(&out.stdout).lines() {
        if let Ok(pid) = std::fs::read_to_string(path) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                if pid > 1 {
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

/// Removes the cgroups (`<hierarchy>/mezzanine/<task_id>.<run>`) of the
/// tasks whose sandboxes are under `dir`: a SIGKILLed agent cannot.
fn remove_task_cgroups_under(dir: &Path) {
    let Ok(out) = Command::new("find")
        .arg(dir)
        .args(["-path", "*/sandboxes/*/*", "-maxdepth", "4", "-type", "d"])
        .output()
    else {
        return;
    };
    let tasks: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| format!("{}.", n.to_string_lossy()))
        .collect();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let Ok(runs) = std::fs::read_dir(h.path().join("mezzanine")) else {
            continue;
        };
        for run in runs.flatten() {
            let name = run.file_name().to_string_lossy().into_owned();
            if tasks.iter().any(|t| name.starts_with(t.as_str())) {
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while std::fs::remove_dir(run.path()).is_err()
                    && run.path().exists()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in self.agents.iter_mut().flatten() {
            a.kill9();
        }
        if let Some(m) = self.master.as_mut() {
            m.kill9();
        }
        kill_tasks_under(self.dir.path());
        remove_task_cgroups_under(self.dir.path());
        if std::thread::panicking() {
            for name in ["master", "agent-0", "agent-1"] {
                let log = self.dir.path().join(format!("{name}.log"));
                if let Ok(t) = std::fs::read_to_string(&log) {
                    let tail: String = t
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    eprintln!("---- {name} log (last lines) ----\n{tail}");
                }
            }
        }
    }
}

/// `mezz master` on `addr` with its data under `dir`, a bootstrap admin
/// token in `dir/admin.token` and `flags`; returns once that token is in
/// force, with the process and the token.
pub fn start_master_with_admin(dir: &Path, addr: &str, flags: &[String]) -> (Proc, String) {
    let admin_file = dir.join("admin.token");
    let mut args: Vec<String> = [
        "master",
        "--listen",
        addr,
        "--data-dir",
        &dir.join("master").display().to_string(),
        "--bootstrap-token-file",
        &admin_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(flags);
    let proc = spawn_logged(dir, "master", &args);
    let mut admin = String::new();
    wait_for(
        "the master's bootstrap token in force",
        Duration::from_secs(30),
        || {
            let Ok(t) = std::fs::read_to_string(&admin_file) else {
                return false;
            };
            admin = t.trim().to_string();
            TcpStream::connect(addr).is_ok()
                && http_get_as(addr, "/api/state", Some(&bearer(&admin))).0 == 200
        },
    );
    (proc, admin)
}

pub fn pid_alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

/// `n` consecutive free loopback ports; returns the first.
///
/// They are taken below the kernel's ephemeral range: a test that makes
/// thousands of short connections leaves their client ports in TIME_WAIT
/// for a minute, and a listener cannot bind those, so blocks inside the
/// ephemeral range are soon hard to find. Below it only listeners live.
pub fn consecutive_free_ports(n: u16) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Above the ports `mezz dev` and agents offer by default (31000-32999)
    // when the range allows, else from 10000.
    let (low, high) = if ephemeral_low >= 33000 + n {
        (33000, ephemeral_low - n)
    } else {
        (10000, ephemeral_low.saturating_sub(n).max(10001))
    };
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2654435761);
    for _ in 0..200 {
        // xorshift: a different start for each try and each test process.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let p = low + (seed % u32::from(high - low)) as u16;
        let held: Vec<TcpListener> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", p + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return p;
        }
    }
    panic!("no {n} consecutive free ports between {low} and {high}");
}

/// Set in the environment of a test run again by [`private_network`].
pub const IN_NETNS: &str = "MEZZ_TEST_IN_NETNS";

/// Whether the network namespace of a test matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Netns {
    /// The test starts programs that bind the wildcard address (TensorFlow's
    /// gRPC servers): without a namespace of its own the test fails (such
    /// tests are ignored by a plain `cargo test`: they need root).
    Needed,
    /// The test binds fixed loopback ports (task ports from 31000 up) that
    /// another test of this binary, or another test run on this machine,
    /// could hold at the same time: its own namespace keeps them apart, and
    /// without one it runs here all the same.
    Wanted,
}

/// Gives the test `name` a network namespace of its own: when this process
/// runs outside one, runs the test again in a namespace with only `lo` up
/// (`unshare --net`), waits up to `timeout`, panics with its output when it
/// fails, and returns `false`; inside, returns `true`: run the test's body.
/// Without a usable `unshare --net`, see [`Netns`].
pub fn private_network(name: &str, timeout: Duration, netns: Netns) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    if !netns_usable() {
        assert!(
            netns == Netns::Wanted,
            "{name} needs a network namespace of its own: `unshare --net` with `ip` \
             (root, util-linux, iproute2)"
        );
        eprintln!("{name}: `unshare --net` is not usable here; running in this host's network");
        return true;
    }
    let me = std::env::current_exe().expect("the test binary");
    let log = std::env::temp_dir().join(format!("mezz-netns-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(&me)
        // The test may be one a plain `cargo test` ignores (it needs root).
        .args([
            "--exact",
            name,
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(IN_NETNS, "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .process_group(0)
        .spawn()
        .expect("spawn unshare");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            // The whole group: the test and the cluster it started.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    eprintln!("---- {name} in its own network namespace ----\n{output}");
    match status {
        Some(s) if s.success() && output.contains("1 passed") => false,
        Some(s) => panic!("{name} failed in its network namespace ({s}):\n{output}"),
        None => {
            panic!("{name} did not finish within {timeout:?} in its network namespace:\n{output}")
        }
    }
}

/// Agent flags for tests whose tasks run the test's Python, which may live
/// where only root can reach it (a venv under root's home): tasks run as
/// root there instead of as the default unprivileged task user.
pub const ROOT_TASKS: &[&str] = &[
    "--gpus",
    "none",
    "--task-user",
    "root",
    "--allow-root-tasks",
];

/// The jobs daemon that `mezz job submit` starts for a cluster, found in
/// its default state directory (one per master address) and killed when
/// the test ends, its log shown when the test failed.
pub struct JobsDaemon {
    pub dir: std::path::PathBuf,
}

impl JobsDaemon {
    /// The daemon of the masters `masters` (`--master` as given).
    pub fn of(masters: &str) -> JobsDaemon {
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".local/state")
            });
        JobsDaemon {
            dir: base.join("mezz/jobs").join(
                masters
                    .replace(',', "+")
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || ".-+".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>(),
            ),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("daemon.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_i64().map(|p| p as i32).filter(|p| *p > 1)
    }

    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            wait_for(
                "the jobs daemon to be gone",
                Duration::from_secs(30),
                || !pid_alive(pid),
            );
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for JobsDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- jobs daemon log ----\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
