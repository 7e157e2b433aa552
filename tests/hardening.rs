//! What a rogue peer, a failover and a full disk can do to a cluster of
//! real `mezz` processes: a client speaking the agent protocol with a known
//! agent id, or reporting another agent's task FINISHED; idle and surplus
//! connections; a data dir that fills up; the finished-task history across
//! a leader kill and a whole-cluster restart; role names and unknown paths.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mezz_proto::v1::{
    agent_gateway_client::AgentGatewayClient, agent_message, master_message, AgentInfo,
    AgentMessage, MasterMessage, RegisterAgent, StatusUpdate, TaskState, TaskStatus,
};
use mezz_proto::{Resources, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const T: Duration = Duration::from_secs(30);
const SMALL: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";

/// A client that speaks the agent protocol: its open stream.
struct Rogue {
    tx: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<MasterMessage>,
}

impl Rogue {
    /// Registers as agent `id` with `secret`; returns the stream and the
    /// master's first answer (AgentRegistered or AgentRefused).
    async fn register(addr: &str, id: &str, secret: &str) -> (Rogue, master_message::Message) {
        let mut client = AgentGatewayClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to the master");
        let (tx, rx) = mpsc::channel(16);
        tx.send(AgentMessage {
            message: Some(agent_message::Message::Register(RegisterAgent {
                protocol_version: PROTOCOL_VERSION,
                agent: Some(AgentInfo {
                    id: id.into(),
                    hostname: "rogue".into(),
                    address: "127.0.0.1:9".into(),
                    resources: Resources::parse("cpus:64;mem:65536")
                        .expect("resources")
                        .to_proto(),
                    ..Default::default()
                }),
                tasks: vec![],
                frameworks: vec![],
                secret: secret.into(),
            })),
        })
        .await
        .expect("queue the registration");
        let inbound = client
            .attach(ReceiverStream::new(rx))
            .await
            .expect("attach")
            .into_inner();
        let mut rogue = Rogue { tx, inbound };
        let first = rogue
            .next(Duration::from_secs(20))
            .await
            .expect("an answer to the registration");
        (rogue, first)
    }

    /// The next message from the master, heartbeats and launches included.
    async fn next(&mut self, within: Duration) -> Option<master_message::Message> {
        tokio::time::timeout(within, self.inbound.message())
            .await
            .ok()?
            .ok()?
            .and_then(|m| m.message)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // Worker threads drive the streams while the test waits on the cluster.
    tokio::runtime::Runtime::new().expect("runtime")
}

fn only_agent_id(c: &Cluster) -> String {
    let state = c.state();
    let agents = state["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 1, "{state}");
    agents[0]["id"].as_str().expect("agent id").to_string()
}

#[test]
fn a_rogue_agent_with_a_known_id_is_refused_and_the_real_tasks_keep_running() {
    let mut c = Cluster::start(SMALL, &[]);
    let task = c.start_sleeper();
    let id = only_agent_id(&c);
    let rt = runtime();
    for secret in ["", &"0".repeat(64)] {
        let (_rogue, answer) = rt.block_on(Rogue::register(&c.master_addr(), &id, secret));
        match answer {
            master_message::Message::Refused(r) => {
                assert!(r.message.contains(&id), "{}", r.message);
                assert!(r.message.contains("secret"), "{}", r.message);
            }
            other => panic!("a registration of {id} with secret {secret:?} got {other:?}"),
        }
    }
    // Refused before anything changed: the real agent keeps its stream and
    // its task.
    assert_eq!(c.connected_agents(), 1);
    let t = c.task(&task).expect("the task");
    assert_eq!(t["state"], "RUNNING", "{t}");
    wait_for("the refusal in the master's log", T, || {
        let log = c.master.as_ref().expect("master").log_text();
        log.contains("agent registration refused") && log.contains("127.0.0.1:")
    });
    // The real agent, restarted from its work dir, still proves its id.
    c.agents[0].as_mut().expect("agent").kill9();
    c.start_agent(0);
    c.wait_agents_connected(1);
    assert_eq!(only_agent_id(&c), id);
    let t = c.wait_task_state(&task, "RUNNING", T);
    assert_eq!(t["agent_id"], id.as_str(), "{t}");
    let secret = c.agent_work_dir(0).join("meta").join("secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret)
            .expect("the agent's secret")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
}

#[test]
fn a_spoofed_finished_for_another_agents_task_is_ignored() {
    let c = Cluster::start(SMALL, &[]);
    let task = c.start_sleeper();
    let real = only_agent_id(&c);
    let t = c.task(&task).expect("the task");
    let framework_id = t["framework_id"]
        .as_str()
        .expect("framework id")
        .to_string();
    let rt = runtime();
    // A legitimate newcomer (its own id, its own secret) speaks for the
    // real agent's task, under its own id and under the real one.
    let (rogue, answer) = rt.block_on(Rogue::register(
        &c.master_addr(),
        "rogue-agent",
        &"ab".repeat(32),
    ));
    assert!(
        matches!(answer, master_message::Message::Registered(_)),
        "{answer:?}"
    );
    for (n, as_agent) in ["rogue-agent", real.as_str()].into_iter().enumerate() {
        let status = TaskStatus {
            task_id: task.clone(),
            framework_id: framework_id.clone(),
            agent_id: as_agent.into(),
            state: TaskState::Finished as i32,
            uuid: format!("spoof-{n}"),
            timestamp: 1.0,
            ..Default::default()
        };
        rt.block_on(rogue.tx.send(AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(StatusUpdate {
                status: Some(status),
            })),
        }))
        .expect("send the update");
    }
    // The master has dealt with both once its refusals are counted.
    wait_for("the spoofed updates to be counted as refused", T, || {
        http_get(&c.master_addr(), "/metrics").is_some_and(|(_, m)| {
            m.lines()
                .filter_map(|l| l.strip_prefix("mezz_status_updates_refused_total "))
                .any(|v| v.trim().parse::<f64>().is_ok_and(|v| v >= 1.0))
        })
    });
    let t = c.task(&task).expect("the task");
    assert_eq!(t["state"], "RUNNING", "{t}");
    assert_eq!(t["agent_id"], real.as_str(), "{t}");
    // Its resources are still held: nothing else of its size was freed.
    let state = c.state();
    let agent = state["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == real.as_str()))
        .expect("the real agent")
        .clone();
    assert!(
        agent["used"]["cpus"]
            .as_f64()
            .is_some_and(|cpus| cpus > 0.09),
        "{agent}"
    );
    assert!(c
        .master
        .as_ref()
        .expect("master")
        .log_text()
        .contains("ignored"));
}

/// `n` connections to `addr` that never send a byte.
fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect()
}

/// Whether the server closed this connection (EOF or reset).
fn closed(mut s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn healthy(addr: &str) -> bool {
    http_get(addr, "/health").is_some_and(|(code, _)| code == 200)
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout_while_health_answers() {
    let c = Cluster::start(SMALL, &["--idle-timeout", "1s"]);
    let addr = c.master_addr();
    let started = Instant::now();
    let conns = idle_connections(&addr, 500);
    assert!(healthy(&addr), "/health with 500 idle connections open");
    wait_for("all 500 idle connections to be closed", T, || {
        conns.iter().all(closed)
    });
    eprintln!("500 idle connections closed after {:?}", started.elapsed());
    assert!(healthy(&addr));
    // Long-lived streams carry requests: the agent's is not cut.
    assert_eq!(c.connected_agents(), 1);
    let out = c.mezz(&["run", "--cpus", "0.1", "--mem", "32", "--", "true"], T);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn connections_beyond_the_bound_are_refused_and_logged() {
    let c = Cluster::start(SMALL, &["--max-connections", "20", "--idle-timeout", "2s"]);
    let addr = c.master_addr();
    // The agent's stream is one of the 20.
    let conns = idle_connections(&addr, 40);
    wait_for("the connections beyond the bound to be closed", T, || {
        conns.iter().filter(|s| closed(s)).count() >= 21
    });
    wait_for("the refusal in the log", T, || {
        c.master
            .as_ref()
            .expect("master")
            .log_text()
            .contains("refusing connections: too many open connections")
    });
    // Once the idle ones time out there is room again.
    wait_for("/health to answer again", T, || healthy(&addr));
    // The idle ones time out one by one and a closed connection leaves the
    // count a moment after its client saw it go, so the next request may
    // still find the bound full: ask until the master answers. The agent's
    // stream was never cut.
    let mut agents = None;
    wait_for("/api/state to answer", T, || {
        agents = c.connected_agents_if_answered();
        agents.is_some()
    });
    assert_eq!(agents, Some(1));
    drop(conns);
}

/// `mezz ARGS`, killed after `timeout`; `None` then.
fn try_mezz(args: &[&str], timeout: Duration) -> Option<Output> {
    let mut child = Command::new(MEZZ)
        .args(args)
        .env_remove("MEZZ_MASTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mezz");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A tmpfs, unmounted (lazily, while a process may still hold it) on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the full-disk test mounts a small tmpfs and needs root"
        );
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("cannot mount a tmpfs: {}", text(&out.stderr)));
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` (writes until ENOSPC).
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
#[ignore = "needs root (mounts a tmpfs)"]
fn a_master_whose_data_dir_fills_up_stops_reporting_healthy_and_recovers() {
    let mut c = Cluster {
        dir: tempfile::tempdir().expect("tempdir"),
        master_port: free_port(),
        master: None,
        master_args: vec![],
        agents: vec![None],
        agent_ports: vec![free_port()],
        agent_resources: SMALL.to_string(),
    };
    // Unmounted before the cluster's directory is removed.
    let data = c.dir.path().join("master");
    let _tmpfs = Tmpfs::mount(&data, "64m").unwrap_or_else(|why| panic!("{why}"));
    c.start_master();
    c.start_agent(0);
    c.wait_agents_connected(1);
    let agent_id = only_agent_id(&c);
    let addr = c.master_addr();
    let filler = data.join("filler");
    fill(&filler);

    // Every run writes to the replicated log (its framework, its end).
    let mut exit = None;
    let mut unhealthy = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let _ = try_mezz(
            &[
                "run", "--master", &addr, "--cpus", "0.1", "--mem", "32", "--", "true",
            ],
            Duration::from_secs(10),
        );
        if let Some(status) = c
            .master
            .as_mut()
            .expect("master")
            .child
            .try_wait()
            .expect("wait")
        {
            exit = Some(status);
            break;
        }
        if http_get(&addr, "/health").is_some_and(|(code, _)| code == 503) {
            unhealthy = true;
            break;
        }
    }
    let log = c.master.as_ref().expect("master").log_text();
    assert!(
        exit.is_some() || unhealthy,
        "the master kept saying it is healthy with its data dir full:\n{log}"
    );
    if let Some(status) = exit {
        assert!(!status.success(), "the master exited 0 on a full disk");
    } else {
        // Red, then gone: it does not linger.
        let mut m = c.master.take().expect("master");
        wait_for("the master to exit", T, || {
            m.child.try_wait().ok().flatten().is_some()
        });
        let status = m.child.try_wait().ok().flatten().expect("exited");
        assert!(!status.success(), "the master exited 0 on a full disk");
    }
    let log = std::fs::read_to_string(c.dir.path().join("master.log")).unwrap_or_default();
    eprintln!(
        "full data dir: {}",
        if unhealthy {
            "/health 503, then exit"
        } else {
            "exit"
        }
    );
    assert!(
        log.contains("cannot go on"),
        "the error is not in the master's log:\n{log}"
    );

    // Space again, and a restart: the registry is intact and work goes on.
    std::fs::remove_file(&filler).expect("remove the filler");
    c.start_master();
    c.wait_agents_connected(1);
    assert_eq!(only_agent_id(&c), agent_id);
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--",
            "echo",
            "recovered",
        ],
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "recovered\n",
        "stderr: {}",
        text(&out.stderr)
    );
}

/// Three masters and an agent.
struct Group {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    masters: Vec<Option<Proc>>,
    agent: Option<Proc>,
}

impl Group {
    fn new() -> Group {
        let mut g = Group {
            dir: tempfile::tempdir().expect("tempdir"),
            ports: vec![free_port(), free_port(), free_port()],
            masters: vec![None, None, None],
            agent: None,
        };
        for i in 0..3 {
            g.start_master(i);
        }
        let args: Vec<String> = [
            "agent",
            "--master",
            &g.list(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--work-dir",
            &g.dir.path().join("agent").display().to_string(),
            "--resources",
            SMALL,
            "--gpus",
            "none",
            "--isolation",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        g.agent = Some(spawn_logged(g.dir.path(), "agent", &args));
        g
    }

    fn list(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_master(&mut self, i: usize) {
        let args = group_master_args(self.dir.path(), &self.ports, i);
        self.masters[i] = Some(spawn_logged(
            self.dir.path(),
            &format!("master-{}", i + 1),
            &args,
        ));
    }

    fn mezz(&self, args: &[&str]) -> Output {
        let list = self.list();
        let mut full: Vec<&str> = vec![args[0], "--master", &list];
        full.extend_from_slice(&args[1..]);
        mezz(&full, T)
    }

    fn leader(&self) -> Option<usize> {
        let out = self.mezz(&["masters", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let leaders: Vec<u64> = v
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "leader")
            .filter_map(|m| m["id"].as_u64())
            .collect();
        match leaders.as_slice() {
            [id] => Some(*id as usize - 1),
            _ => None,
        }
    }

    fn wait_leader(&self) -> usize {
        let mut found = None;
        wait_for("a leader", T, || {
            found = self.leader();
            found.is_some()
        });
        found.expect("leader")
    }

    /// The finished task named `name` in `mezz ps --all --json`, with the
    /// fields every master must agree on.
    fn finished(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.mezz(&["ps", "--all", "--json"]);
        let tasks: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let t = tasks.as_array()?.iter().find(|t| t["name"] == name)?;
        let mut kept = serde_json::Map::new();
        for k in [
            "id",
            "name",
            "framework_id",
            "framework_name",
            "agent_id",
            "state",
            "reason",
            "exit_code",
            "resources",
            "command",
            "launched_at",
            "updated_at",
            "history",
        ] {
            kept.insert(k.into(), t[k].clone());
        }
        Some(serde_json::Value::Object(kept))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(a) = self.agent.as_mut() {
            a.kill9();
        }
        for m in self.masters.iter_mut().flatten() {
            m.kill9();
        }
        kill_tasks_under(self.dir.path());
        if std::thread::panicking() {
            for name in ["master-1", "master-2", "master-3", "agent"] {
                if let Ok(t) = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                {
                    let tail: Vec<&str> = t.lines().rev().take(25).collect();
                    eprintln!("---- {name} ----");
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

#[test]
fn ps_all_after_a_leader_kill_and_a_full_restart_lists_tasks_finished_before() {
    let mut g = Group::new();
    let first = g.wait_leader();
    for name in ["done-1", "done-2"] {
        let out = g.mezz(&[
            "run", "--name", name, "--cpus", "0.1", "--mem", "32", "--", "echo", name,
        ]);
        assert_eq!(
            text(&out.stdout),
            format!("{name}\n"),
            "{}",
            text(&out.stderr)
        );
    }
    let before: Vec<serde_json::Value> = ["done-1", "done-2"]
        .iter()
        .map(|n| g.finished(n).expect("the finished task in ps --all"))
        .collect();
    assert_eq!(before[0]["state"], "FINISHED", "{}", before[0]);
    assert!(before[0]["framework_name"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));

    g.masters[first].as_mut().expect("leader").kill9();
    let second = g.wait_leader();
    assert_ne!(second, first);
    for (n, want) in ["done-1", "done-2"].iter().zip(&before) {
        let got = g.finished(n);
        assert_eq!(got.as_ref(), Some(want), "after the leader kill");
    }

    for m in g.masters.iter_mut().flatten() {
        m.kill9();
    }
    for i in 0..3 {
        g.start_master(i);
    }
    g.wait_leader();
    for (n, want) in ["done-1", "done-2"].iter().zip(&before) {
        let got = g.finished(n);
        assert_eq!(got.as_ref(), Some(want), "after a restart of every master");
    }
}

#[test]
fn bad_role_names_are_refused_and_unknown_paths_answer_404() {
    let c = Cluster::start(SMALL, &[]);
    for role in ["../<script>", "eng/", "/eng", "a b", "eng/../x"] {
        let out = c.mezz(
            &[
                "run", "--role", role, "--cpus", "0.1", "--mem", "32", "--", "true",
            ],
            T,
        );
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "role {role:?} accepted");
        assert!(stderr.contains("role"), "role {role:?}: {stderr}");
    }
    let addr = c.master_addr();
    for path in ["/no-such-page", "/api/nothing", "/healthz", "/agents/x/y"] {
        let (code, body) = http_get(&addr, path).expect("an answer");
        assert_eq!(code, 404, "{path}: {body}");
    }
    // Every documented page still answers.
    let agent = only_agent_id(&c);
    for path in [
        "/".to_string(),
        "/health".into(),
        "/api/state".into(),
        "/metrics".into(),
        "/agents".into(),
        format!("/agents/{agent}"),
        "/frameworks".into(),
        "/roles".into(),
        "/tasks".into(),
    ] {
        let (code, body) = http_get(&addr, &path).expect("an answer");
        assert_eq!(code, 200, "{path}: {body}");
    }
}
