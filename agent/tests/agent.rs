//! The agent against a fake master on loopback: real wrapper processes,
//! real sandboxes, real checkpoint, and a restart of the agent in between.
//!
//! One file of some 800 lines on purpose: the fake master is its harness,
//! and a second test binary would link the agent again for no new seam.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use mezz_proto::v1::{
    agent_files_client::AgentFilesClient,
    agent_gateway_server::{AgentGateway, AgentGatewayServer},
    agent_message, health_check, master_message, AgentMessage, AgentRegistered, CommandInfo,
    FrameworkInfo, HealthCheck, HttpHealthCheck, KillTask, LaunchTask, ListFilesRequest,
    MasterMessage, ReadFileRequest, RegisterAgent, StatusAck, TailFileRequest, TaskInfo,
    TaskReason, TaskState, TaskStatus, TcpHealthCheck,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const DEADLINE: Duration = Duration::from_secs(20);

/// One agent stream as the fake master sees it.
struct Conn {
    register: RegisterAgent,
    inbound: mpsc::UnboundedReceiver<AgentMessage>,
    out: mpsc::UnboundedSender<Result<MasterMessage, Status>>,
}

struct FakeMaster {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl AgentGateway for FakeMaster {
    type AttachStream =
        Pin<Box<dyn futures::Stream<Item = Result<MasterMessage, Status>> + Send + 'static>>;

    async fn attach(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut stream = request.into_inner();
        let register = match stream.message().await? {
            Some(AgentMessage {
                message: Some(agent_message::Message::Register(r)),
            }) => r,
            _ => return Err(Status::invalid_argument("RegisterAgent must come first")),
        };
        let (out, out_rx) = mpsc::unbounded_channel();
        let _ = out.send(Ok(MasterMessage {
            message: Some(master_message::Message::Registered(AgentRegistered {
                protocol_version: mezz_proto::PROTOCOL_VERSION,
                agent_id: register
                    .agent
                    .as_ref()
                    .map(|a| a.id.clone())
                    .unwrap_or_default(),
                master_id: "fake".into(),
                heartbeat_interval_secs: 0.5,
                grant_key: Vec::new(),
            })),
        }));
        let (in_tx, inbound) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                if in_tx.send(m).is_err() {
                    break;
                }
            }
        });
        let _ = self.conns.send(Conn {
            register,
            inbound,
            out,
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            out_rx,
        ))))
    }
}

/// A fake master serving on `addr` until the returned sender is dropped.
async fn start_master(
    addr: SocketAddr,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Conn>,
    oneshot::Sender<()>,
) {
    // A restarted master reuses its port: retry until the old listener has
    // let go of it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind the fake master on {addr}: {e}"),
        }
    };
    let bound = listener.local_addr().unwrap();
    let (conns, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentGatewayServer::new(FakeMaster { conns }))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    (bound, rx, stop_tx)
}

struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), mezz_agent::AgentError>>,
}

impl RunningAgent {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(DEADLINE, &mut self.handle)
            .await
            .expect("agent did not stop");
        r.expect("agent task panicked").expect("agent failed");
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn start_agent(master: SocketAddr, work_dir: &Path) -> RunningAgent {
    let mut config = mezz_agent::Config::new(
        vec![master.to_string()],
        "127.0.0.1:0".parse().unwrap(),
        work_dir.to_path_buf(),
        PathBuf::from(env!("CARGO_BIN_EXE_task-wrapper")),
    );
    config.resources = Some(mezz_proto::Resources::parse("cpus:2;mem:1024").unwrap());
    config.hostname = Some("test-host".into());
    let (stop, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(mezz_agent::run(config, async {
        let _ = stop_rx.await;
    }));
    RunningAgent {
        stop: Some(stop),
        handle,
    }
}

async fn next_conn(conns: &mut mpsc::UnboundedReceiver<Conn>) -> Conn {
    tokio::time::timeout(DEADLINE, conns.recv())
        .await
        .expect("agent did not register in time")
        .expect("master gone")
}

impl Conn {
    fn send(&self, m: master_message::Message) {
        self.out
            .send(Ok(MasterMessage { message: Some(m) }))
            .unwrap();
    }

    /// The next status update (heartbeats skipped); acknowledged when `ack`.
    async fn update(&mut self, ack: bool) -> TaskStatus {
        loop {
            let m = tokio::time::timeout(DEADLINE, self.inbound.recv())
                .await
                .expect("no status update in time")
                .expect("agent stream closed");
            if let Some(agent_message::Message::StatusUpdate(u)) = m.message {
                let s = u.status.unwrap();
                if ack {
                    self.send(master_message::Message::Ack(StatusAck {
                        framework_id: s.framework_id.clone(),
                        task_id: s.task_id.clone(),
                        uuid: s.uuid.clone(),
                    }));
                }
                return s;
            }
        }
    }

    fn agent_address(&self) -> String {
        self.register.agent.as_ref().unwrap().address.clone()
    }
}

fn framework() -> FrameworkInfo {
    FrameworkInfo {
        id: "fw1".into(),
        name: "test".into(),
        ..Default::default()
    }
}

fn launch(task_id: &str, command: CommandInfo) -> master_message::Message {
    master_message::Message::Launch(LaunchTask {
        framework: Some(framework()),
        task: Some(TaskInfo {
            task_id: task_id.into(),
            name: task_id.into(),
            command: Some(command),
            ..Default::default()
        }),
    })
}

fn shell(cmd: &str) -> CommandInfo {
    CommandInfo {
        value: cmd.into(),
        shell: true,
        ..Default::default()
    }
}

fn kill(task_id: &str, grace: Option<f64>) -> master_message::Message {
    master_message::Message::Kill(KillTask {
        framework_id: "fw1".into(),
        task_id: task_id.into(),
        grace_period_secs: grace,
        reason: 0,
        message: String::new(),
    })
}

/// Waits (with a deadline) until `cond` holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sandbox(work: &Path, task: &str) -> PathBuf {
    work.join("sandboxes/fw1").join(task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_command_and_serves_its_output() {
    let work = tempfile::tempdir().unwrap();
    let (maddr, mut conns, master_stop) = start_master("127.0.0.1:0".parse().unwrap()).await;
    let agent = start_agent(maddr, work.path());
    let mut conn = next_conn(&mut conns).await;
    let reg = &conn.register;
    assert_eq!(reg.protocol_version, mezz_proto::PROTOCOL_VERSION);
    let info = reg.agent.as_ref().unwrap();
    assert_eq!(info.hostname, "test-host");
    let res = mezz_proto::Resources::from_proto(&info.resources).unwrap();
    assert_eq!(res.scalar("cpus"), 2.0);
    assert_eq!(res.range_count("ports"), 1001);
    let agent_id = info.id.clone();

    conn.send(launch(
        "t1",
        shell("echo hi; echo \"$MEZZ_TASK_ID $PORT0\" >&2; exit 3"),
    ));
    let running = conn.update(true).await;
    assert_eq!(running.state(), TaskState::Running);
    assert_eq!(running.agent_id, agent_id);
    let done = conn.update(true).await;
    assert_eq!(done.state(), TaskState::Failed, "{done:?}");
    assert_eq!(done.reason(), TaskReason::CommandExited);
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.message, "command exited with code 3");
    assert_ne!(done.uuid, running.uuid);
    let sb = sandbox(work.path(), "t1");
    assert_eq!(std::fs::read_to_string(sb.join("stdout")).unwrap(), "hi\n");
    assert_eq!(std::fs::read_to_string(sb.join("stderr")).unwrap(), "t1 \n");
    assert!(sb.join("tmp").is_dir());

    let mut files = AgentFilesClient::connect(format!("http://{}", conn.agent_address()))
        .await
        .unwrap();
    let read = |path: &str| ReadFileRequest {
        framework_id: "fw1".into(),
        task_id: "t1".into(),
        path: path.into(),
        offset: 0,
        length: 0,
    };
    let r = files.read_file(read("stdout")).await.unwrap().into_inner();
    assert_eq!(r.data, b"hi\n");
    assert_eq!(r.size, 3);
    assert!(r.task_terminal);
    let e = files.read_file(read("../../../meta")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut other = read("stdout");
    other.task_id = "nope".into();
    let e = files.read_file(other).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("'nope'"));

    // A kill for a task the agent has never heard of: TASK_LOST.
    conn.send(kill("ghost", None));
    let lost = conn.update(true).await;
    assert_eq!(
        (lost.state(), lost.task_id.as_str()),
        (TaskState::Lost, "ghost")
    );
    assert_eq!(lost.message, "unknown task");
    // An invalid launch: TASK_ERROR naming the problem.
    conn.send(launch("bad/id", shell("true")));
    let err = conn.update(true).await;
    assert_eq!(err.state(), TaskState::Error);
    assert_eq!(err.reason(), TaskReason::InvalidTask);
    assert!(err.message.contains("'/'"), "{}", err.message);

    // The master restarts on the same address: the agent comes back alone,
    // with the same id.
    drop(conn);
    let _ = master_stop.send(());
    let (_, mut conns2, _stop2) = start_master(maddr).await;
    let conn = next_conn(&mut conns2).await;
    assert_eq!(conn.register.agent.as_ref().unwrap().id, agent_id);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_escalates_and_exec_failure_is_reported() {
    let work = tempfile::tempdir().unwrap();
    let (maddr, mut conns, _ms) = start_master("127.0.0.1:0".parse().unwrap()).await;
    let agent = start_agent(maddr, work.path());
    let mut conn = next_conn(&mut conns).await;

    conn.send(launch(
        "stubborn",
        shell("trap '' TERM; echo ready; sleep 30"),
    ));
    assert_eq!(conn.update(true).await.state(), TaskState::Running);
    let out = sandbox(work.path(), "stubborn").join("stdout");
    wait_until("the task to trap SIGTERM", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("ready"))
    })
    .await;
    let asked = std::time::Instant::now();
    conn.send(kill("stubborn", Some(0.3)));
    let killed = conn.update(true).await;
    assert_eq!(killed.state(), TaskState::Killed, "{killed:?}");
    assert_eq!(killed.reason(), TaskReason::KilledByRequest);
    assert_eq!(killed.signal, Some(9));
    assert!(asked.elapsed() < Duration::from_secs(10));
    // Killing it again is ignored: the next update is the launch failure.
    conn.send(kill("stubborn", None));

    conn.send(launch(
        "nocmd",
        CommandInfo {
            value: "nosuchcmd-mezz".into(),
            ..Default::default()
        },
    ));
    let failed = conn.update(true).await;
    assert_eq!(failed.task_id, "nocmd");
    assert_eq!(failed.state(), TaskState::Failed);
    assert_eq!(failed.reason(), TaskReason::LaunchFailed);
    assert_eq!(failed.message, "command 'nosuchcmd-mezz' not found");
    agent.stop().await;
}

fn pid_gone(pid: i32) -> bool {
    // Gone or a zombie (the test process may be its parent).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_an_agent_restart() {
    let work = tempfile::tempdir().unwrap();
    let (maddr, mut conns, _ms) = start_master("127.0.0.1:0".parse().unwrap()).await;
    let agent = start_agent(maddr, work.path());
    let mut conn = next_conn(&mut conns).await;
    let agent_id = conn.register.agent.as_ref().unwrap().id.clone();
    conn.send(launch("keep", shell("sleep 60")));
    conn.send(launch("dies", shell("sleep 60")));
    for _ in 0..2 {
        assert_eq!(conn.update(true).await.state(), TaskState::Running);
    }
    agent.stop().await;
    drop(conn);

    // While the agent is down, "dies" is killed from outside.
    let child: i32 = std::fs::read_to_string(sandbox(work.path(), "dies").join(".mezz/child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe {
        libc::killpg(child, libc::SIGKILL);
    }
    let exit_file = sandbox(work.path(), "dies").join(".mezz/exit_status.json");
    wait_until("the wrapper to record the exit", || exit_file.exists()).await;
    let keep_child: i32 =
        std::fs::read_to_string(sandbox(work.path(), "keep").join(".mezz/child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert!(!pid_gone(keep_child), "the agent's stop killed a task");

    let agent = start_agent(maddr, work.path());
    let mut conn = next_conn(&mut conns).await;
    assert_eq!(conn.register.agent.as_ref().unwrap().id, agent_id);
    let mut reported: Vec<(String, TaskState)> = conn
        .register
        .tasks
        .iter()
        .map(|t| {
            let s = t.latest_status.as_ref().unwrap();
            (s.task_id.clone(), s.state())
        })
        .collect();
    reported.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reported,
        vec![
            ("dies".to_string(), TaskState::Failed),
            ("keep".to_string(), TaskState::Running)
        ]
    );
    assert_eq!(conn.register.frameworks.len(), 1);
    // The terminal update of "dies" is sent after registration (possibly
    // after re-sent RUNNING updates whose acks the old agent never read).
    let dies = loop {
        let u = conn.update(true).await;
        if u.state() != TaskState::Running {
            break u;
        }
    };
    assert_eq!(dies.task_id, "dies");
    assert_eq!(dies.reason(), TaskReason::CommandSignaled);
    assert_eq!(dies.message, "command was killed by signal 9 (SIGKILL)");

    conn.send(kill("keep", Some(5.0)));
    let killed = conn.update(true).await;
    assert_eq!(
        (killed.task_id.as_str(), killed.state()),
        ("keep", TaskState::Killed)
    );
    assert_eq!(killed.signal, Some(15));
    wait_until("the task's process to end", || pid_gone(keep_child)).await;
    agent.stop().await;
}

// ------------------------------------------------------------ health checks

fn launch_checked(
    task_id: &str,
    command: CommandInfo,
    check: health_check::Check,
    failures: u32,
    grace: f64,
    port: Option<u16>,
) -> master_message::Message {
    let mut resources = Vec::new();
    if let Some(p) = port {
        resources = mezz_proto::Resources::parse(&format!("ports:[{p}-{p}]"))
            .unwrap()
            .to_proto();
    }
    master_message::Message::Launch(LaunchTask {
        framework: Some(framework()),
        task: Some(TaskInfo {
            task_id: task_id.into(),
            name: task_id.into(),
            command: Some(command),
            resources,
            health_check: Some(HealthCheck {
                check: Some(check),
                interval_secs: 0.1,
                timeout_secs: 2.0,
                grace_period_secs: grace,
                consecutive_failures: failures,
            }),
            ..Default::default()
        }),
    })
}

impl Conn {
    /// Acknowledges updates until one matches `want`; returns it.
    async fn update_where(&mut self, what: &str, want: impl Fn(&TaskStatus) -> bool) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let s = tokio::time::timeout_at(deadline, self.update(true))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            if want(&s) {
                return s;
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_check_kills_the_task() {
    let work = tempfile::tempdir().unwrap();
    let (maddr, mut conns, _ms) = start_master("127.0.0.1:0".parse().unwrap()).await;
    let agent = start_agent(maddr, work.path());
    let mut conn = next_conn(&mut conns).await;

    // The check runs in the sandbox with the task's environment: it fails
    // until the task says otherwise, then passes, then fails for good.
    conn.send(launch_checked(
        "sick",
        CommandInfo {
            value: "touch ok; sleep 0.5; rm ok; exec sleep 60".into(),
            shell: true,
            environment: [("WANT".to_string(), "ok".to_string())].into(),
            ..Default::default()
        },
        health_check::Check::Command("test -f \"$WANT\" || { echo not ready >&2; exit 1; }".into()),
        2,
        5.0,
        None,
    ));
    let s = conn.update(true).await;
    assert_eq!((s.state(), s.healthy), (TaskState::Running, None));
    let s = conn.update(true).await;
    assert_eq!(
        (s.state(), s.healthy),
        (TaskState::Running, Some(true)),
        "{s:?}"
    );
    assert_eq!(s.reason(), TaskReason::Unspecified);
    let s = conn.update(true).await;
    assert_eq!(
        (s.state(), s.healthy),
        (TaskState::Running, Some(false)),
        "{s:?}"
    );
    assert!(s.message.contains("not ready"), "{}", s.message);
    let s = conn.update(true).await;
    assert_eq!(s.state(), TaskState::Killed, "{s:?}");
    assert_eq!(s.reason(), TaskReason::HealthCheckFailed);
    assert!(
        s.message.contains("command 'test -f")
            && s.message.contains("2 time(s)")
            && s.message.contains("exited with code 1: not ready"),
        "{}",
        s.message
    );
    assert_eq!(s.signal, Some(15));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_checks_on_the_tasks_port() {
    let work = tempfile::tempdir().unwrap();
    let (maddr, mut conns, _ms) = start_master("127.0.0.1:0".parse().unwrap()).await;
    let agent = start_agent(maddr, work.path());
    let mut conn = next_conn(&mut conns).await;
    let port = free_port();

    // A web server on its port; failures while it starts are in the grace
    // period.
    conn.send(launch_checked(
        "web",
        shell("exec python3 -m http.server \"$PORT0\" --bind 127.0.0.1"),
        health_check::Check::Http(HttpHealthCheck {
            port: port.into(),
            path: "/stdout".into(),
            ..Default::default()
        }),
        1,
        15.0,
        Some(port),
    ));
    let s = conn
        .update_where("web healthy", |s| s.task_id == "web" && s.healthy.is_some())
        .await;
    assert_eq!(
        (s.state(), s.healthy),
        (TaskState::Running, Some(true)),
        "{s:?}"
    );
    assert!(s.message.contains("http GET 127.0.0.1:"), "{}", s.message);

    // TCP: the same port is open; a closed one kills its task.
    conn.send(launch_checked(
        "open",
        shell("exec sleep 60"),
        health_check::Check::Tcp(TcpHealthCheck { port: port.into() }),
        1,
        0.0,
        None,
    ));
    let s = conn
        .update_where("open healthy", |s| {
            s.task_id == "open" && s.healthy.is_some()
        })
        .await;
    assert_eq!(s.healthy, Some(true), "{s:?}");
    let closed = free_port();
    conn.send(launch_checked(
        "closed",
        shell("exec sleep 60"),
        health_check::Check::Tcp(TcpHealthCheck {
            port: closed.into(),
        }),
        1,
        0.0,
        None,
    ));
    let s = conn
        .update_where("closed killed", |s| {
            s.task_id == "closed" && s.state().is_terminal()
        })
        .await;
    assert_eq!(
        (s.state(), s.reason()),
        (TaskState::Killed, TaskReason::HealthCheckFailed),
        "{s:?}"
    );
    assert!(
        s.message.contains(&format!("tcp 127.0.0.1:{closed}")),
        "{}",
        s.message
    );
    assert!(s.message.contains("cannot connect"), "{}", s.message);

    // An invalid check is refused at launch.
    conn.send(launch_checked(
        "bad",
        shell("true"),
        health_check::Check::Tcp(TcpHealthCheck { port: 0 }),
        1,
        0.0,
        None,
    ));
    let s = conn
        .update_where("bad refused", |s| s.task_id == "bad")
        .await;
    assert_eq!(s.state(), TaskState::Error);
    assert!(s.message.contains("port 0"), "{}", s.message);

    // "open" first: its check needs the web server.
    for t in ["open", "web"] {
        conn.send(kill(t, Some(1.0)));
        let s = conn
            .update_where("kill", |s| s.task_id == t && s.state().is_terminal())
            .await;
        assert_eq!(
            (s.state(), s.reason()),
            (TaskState::Killed, TaskReason::KilledByRequest),
            "{s:?}"
        );
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_listing_and_tail_stay_inside() {
    let work = tempfile::tempdir().unwrap();
    let (maddr, mut conns, _ms) = start_master("127.0.0.1:0".parse().unwrap()).await;
    let agent = start_agent(maddr, work.path());
    let mut conn = next_conn(&mut conns).await;
    let secret = work.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    conn.send(launch(
        "lister",
        shell(&format!(
            "mkdir -p out/deep; seq 1 1000; echo x > out/deep/f; ln -s {} escape; ln -s .. up",
            secret.display()
        )),
    ));
    conn.update_where("lister done", |s| s.state().is_terminal())
        .await;

    let mut files = AgentFilesClient::connect(format!("http://{}", conn.agent_address()))
        .await
        .unwrap();
    let list = |path: &str| ListFilesRequest {
        framework_id: "fw1".into(),
        task_id: "lister".into(),
        path: path.into(),
    };
    let r = files.list_files(list("")).await.unwrap().into_inner();
    assert!(r.task_terminal);
    let names: Vec<&str> = r.entries.iter().map(|e| e.name.as_str()).collect();
    for want in ["escape", "out", "stderr", "stdout", "tmp", "up"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // The agent's own files of the run (the launch spec holds the task's
    // environment) are neither listed nor served.
    assert!(!names.contains(&".mezz"), "{names:?}");
    let stdout = r.entries.iter().find(|e| e.name == "stdout").unwrap();
    assert_eq!(stdout.size, 3893);
    assert!(!stdout.is_dir && stdout.mtime > 0.0);
    assert!(r.entries.iter().any(|e| e.name == "escape" && e.is_symlink));
    let r = files
        .list_files(list("out/deep"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.entries.len(), 1);
    assert_eq!((r.entries[0].name.as_str(), r.entries[0].size), ("f", 2));
    for (path, code) in [
        ("..", tonic::Code::InvalidArgument),
        ("out/../..", tonic::Code::InvalidArgument),
        ("/etc", tonic::Code::InvalidArgument),
        ("up", tonic::Code::PermissionDenied),
        ("stdout", tonic::Code::InvalidArgument),
        ("nope", tonic::Code::NotFound),
    ] {
        let e = files.list_files(list(path)).await.unwrap_err();
        assert_eq!(e.code(), code, "{path}: {}", e.message());
    }

    let tail = |path: &str, length: u64| TailFileRequest {
        framework_id: "fw1".into(),
        task_id: "lister".into(),
        path: path.into(),
        length,
    };
    let r = files
        .tail_file(tail("stdout", 9))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.data, b"999\n1000\n");
    assert_eq!((r.offset, r.size), (3884, 3893));
    assert!(r.task_terminal);
    let r = files
        .tail_file(tail("stdout", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.offset, r.data.len()), (0, 3893));
    let e = files.tail_file(tail("escape", 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = files
        .tail_file(tail(&secret.display().to_string(), 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = files
        .tail_file(tail("../lister/stdout", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = files.tail_file(tail("up", 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    for meta in [".mezz/launch.json", "./.mezz/launch.json"] {
        let e = files.tail_file(tail(meta, 0)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{meta}");
        assert!(e.message().contains(".mezz"), "{}", e.message());
    }
    let e = files.list_files(list(".mezz")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    agent.stop().await;
}
