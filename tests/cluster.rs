//! End-to-end tests of the first complete path: real `mezz master` and
//! `mezz agent` processes on loopback, driven through the CLI.

mod common;

use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);
const SMALL: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";

#[test]
fn run_echo_prints_and_exits_zero_then_ps_and_logs_show_it() {
    let c = Cluster::start(SMALL, &[]);
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--name",
            "greet",
            "--",
            "sh",
            "-c",
            "echo hello; echo oops >&2",
        ],
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("oops"));
    assert_eq!(out.status.code(), Some(0));

    let ps = c.mezz(&["ps", "--all", "--json"], T);
    let tasks: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("ps --json");
    let task = tasks
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "greet"))
        .expect("the task in ps --all")
        .clone();
    assert_eq!(task["state"], "FINISHED");
    assert_eq!(task["exit_code"], 0);
    let id = task["id"].as_str().expect("id");

    let logs = c.mezz(&["logs", id], T);
    assert_eq!(text(&logs.stdout), "hello\n");
    let logs = c.mezz(&["logs", id, "--stderr"], T);
    assert_eq!(text(&logs.stdout), "", "stderr goes to stderr");
    assert_eq!(text(&logs.stderr), "oops\n");

    // Active list no longer has it; the table has a header.
    let ps = c.mezz(&["ps"], T);
    assert!(text(&ps.stdout).starts_with("ID"));
    assert!(!text(&ps.stdout).contains(id));
}

#[test]
fn exit_codes_and_missing_commands_come_back() {
    let c = Cluster::start(SMALL, &[]);
    let out = c.mezz(
        &[
            "run", "--cpus", "0.1", "--mem", "32", "--name", "three", "--", "sh", "-c", "exit 3",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));

    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--name",
            "nope",
            "--",
            "no-such-command-xyz",
        ],
        T,
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("no-such-command-xyz") && err.contains("not found"),
        "{err}"
    );

    let state = c.state();
    let tasks = state["tasks"].as_array().expect("tasks");
    let three = tasks.iter().find(|t| t["name"] == "three").expect("three");
    assert_eq!(three["state"], "FAILED");
    assert_eq!(three["exit_code"], 3);
    let nope = tasks.iter().find(|t| t["name"] == "nope").expect("nope");
    assert_eq!(nope["state"], "FAILED");
    assert_eq!(nope["reason"], "LAUNCH_FAILED");
    assert!(nope["message"].as_str().unwrap_or("").contains("not found"));
}

#[test]
fn kill_makes_a_task_killed() {
    let c = Cluster::start(SMALL, &[]);
    let id = c.start_sleeper();

    let k = c.mezz(&["kill", &id], T);
    assert_eq!(k.status.code(), Some(0), "stderr: {}", text(&k.stderr));
    let task = c.wait_task_state(&id, "KILLED", T);
    assert_eq!(task["reason"], "KILLED_BY_REQUEST");

    let k = c.mezz(&["kill", "no-such-task"], T);
    assert_ne!(k.status.code(), Some(0));
    assert!(text(&k.stderr).contains("no-such-task"));
}

#[test]
fn unreachable_master_is_named_and_fails_fast() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    for args in [
        vec!["ps", "--master", &addr],
        vec!["run", "--master", &addr, "--", "true"],
    ] {
        let started = Instant::now();
        let out = mezz(&args, Duration::from_secs(20));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_ne!(out.status.code(), Some(0));
        assert!(
            text(&out.stderr).contains(&addr),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn malformed_resources_name_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = mezz(
        &[
            "agent",
            "--master",
            "127.0.0.1:1",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--work-dir",
            &dir.path().display().to_string(),
            "--resources",
            "cpus:4;mem:lots",
        ],
        T,
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("mem:lots"), "{err}");
}

#[test]
fn a_task_bigger_than_any_agent_is_refused_at_once_unless_told_to_wait() {
    let c = Cluster::start(SMALL, &[]);
    // No --timeout: without the refusal this would wait forever.
    let started = Instant::now();
    let out = c.mezz(&["run", "--cpus", "512", "--", "true"], T);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no agent can ever hold cpus:512") && err.contains("cpus:2;"),
        "{err}"
    );
    assert!(
        err.contains("the only agent") && err.contains("--wait"),
        "{err}"
    );
    eprintln!("refused after {took:?}");

    // --wait waits (here until its --timeout) and then says why.
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "64",
            "--wait",
            "--timeout",
            "2s",
            "--",
            "true",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("within 2s") && err.contains("cpus:64"),
        "{err}"
    );
    assert!(err.contains("has only cpus:2;"), "{err}");

    // The same for every replica of a `mezz tf run` gang.
    let addr = c.master_addr();
    let tf = |extra: &[&str]| {
        let mut args = vec!["tf", "run", "--master", &addr];
        args.extend_from_slice(extra);
        mezz(&args, T)
    };
    let out = tf(&["--workers", "2", "--cpus", "64", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("a worker replica cannot be placed: no agent can ever hold cpus:64")
            && err.contains("--wait"),
        "{err}"
    );
}

/// Starts `mezz run ARGS` against `c` with its output in a log file.
fn spawn_run(c: &Cluster, name: &str, args: &[&str]) -> Proc {
    let mut full: Vec<String> = vec!["run".into(), "--master".into(), c.master_addr()];
    full.extend(args.iter().map(|s| s.to_string()));
    spawn_logged(c.dir.path(), name, &full)
}

/// Sends `signal` to `p` and waits for it to exit; returns its exit code.
fn signal_and_wait(p: &mut Proc, signal: i32, within: Duration) -> Option<i32> {
    // SAFETY: a plain kill(2) of a child this test started and still owns.
    unsafe {
        libc::kill(p.pid() as i32, signal);
    }
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = p.child.try_wait().expect("wait") {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "{} still runs {within:?} after signal {signal}:\n{}",
            p.name,
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_ends_mezz_run_while_it_waits_and_when_its_kill_is_never_answered() {
    let c = Cluster::start(SMALL, &[]);
    // Waiting for resources that never come.
    let mut waiting = spawn_run(&c, "waiting", &["--cpus", "64", "--wait", "--", "true"]);
    wait_for("the run to register and wait", T, || {
        waiting.log_text().contains("waiting for resources")
    });
    assert_eq!(signal_and_wait(&mut waiting, libc::SIGTERM, T), Some(130));
    wait_for("the waiting run's framework to be gone", T, || {
        c.state()["frameworks"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });

    // Launched: SIGTERM kills the task, as Ctrl-C does, and ends the client.
    let mut running = spawn_run(
        &c,
        "running",
        &[
            "--cpus", "0.1", "--mem", "32", "--name", "held", "--", "sleep", "300",
        ],
    );
    let mut id = String::new();
    wait_for("the task to run", T, || {
        let task = c.state()["tasks"].as_array().and_then(|a| {
            a.iter()
                .find(|t| t["name"] == "held" && t["state"] == "RUNNING")
                .cloned()
        });
        id = task
            .map(|t| t["id"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        !id.is_empty()
    });
    // Its agent is frozen, so the kill is never answered: the client still
    // leaves after its grace period, tearing its framework down.
    let agent = c.agents[0].as_ref().expect("agent").pid() as i32;
    // SAFETY: plain kill(2) of a process this test started.
    unsafe {
        libc::kill(agent, libc::SIGSTOP);
    }
    let started = Instant::now();
    let code = signal_and_wait(&mut running, libc::SIGTERM, T);
    unsafe {
        libc::kill(agent, libc::SIGCONT);
    }
    eprintln!("left {:?} after SIGTERM", started.elapsed());
    assert_ne!(code, Some(0), "{}", running.log_text());
    assert!(
        running.log_text().contains("tearing the framework down"),
        "{}",
        running.log_text()
    );
    c.wait_task_state(&id, "KILLED", T);
}

#[test]
fn agent_killed_and_restarted_keeps_its_task() {
    let mut c = Cluster::start(SMALL, &[]);
    let id = c.start_sleeper();

    c.agents[0].as_mut().expect("agent").kill9();
    wait_for("the master to see the agent go", T, || {
        c.connected_agents() == 0
    });
    // The task runs on while its agent is away.
    assert_eq!(c.task(&id).expect("task")["state"], "RUNNING");

    c.start_agent(0);
    c.wait_agents_connected(1);
    let ps = c.mezz(&["ps", "--all", "--json"], T);
    let tasks: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("json");
    let t = tasks
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == id.as_str()))
        .expect("task in ps --all")
        .clone();
    assert_eq!(t["state"], "RUNNING");

    c.mezz(&["kill", &id], T);
    c.wait_task_state(&id, "KILLED", T);
}

#[test]
fn agent_gone_past_the_timeout_loses_its_task() {
    let mut c = Cluster::start(SMALL, &["--agent-timeout", "2s"]);
    let id = c.start_sleeper();
    c.agents[0].as_mut().expect("agent").kill9();
    let t = c.wait_task_state(&id, "LOST", T);
    assert_eq!(t["reason"], "AGENT_REMOVED");
    let ps = c.mezz(&["ps", "--all"], T);
    assert!(text(&ps.stdout).contains(&id));
}

#[test]
fn master_restart_agents_and_a_running_mezz_run_reconnect() {
    let mut c = Cluster::start(SMALL, &[]);
    let addr = c.master_addr();
    let agent_id = c.state()["agents"][0]["id"]
        .as_str()
        .expect("agent id")
        .to_string();
    let run = std::process::Command::new(MEZZ)
        .args([
            "run",
            "--master",
            &addr,
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--name",
            "survivor",
            "--",
            "sh",
            "-c",
            "sleep 4; echo done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn run");
    let mut run = Proc {
        name: "run".into(),
        child: run,
        log: c.dir.path().join("none"),
    };
    wait_for("the task to run", T, || {
        c.state()["tasks"].as_array().is_some_and(|a| {
            a.iter()
                .any(|t| t["name"] == "survivor" && t["state"] == "RUNNING")
        })
    });

    c.master.as_mut().expect("master").kill9();
    c.start_master();
    c.wait_agents_connected(1);
    assert_eq!(
        c.state()["agents"][0]["id"],
        agent_id.as_str(),
        "same agent re-registered"
    );

    // The run reconnects, sees the task finish and exits with its output.
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = run.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "mezz run did not finish after the master restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(run.child.stdout.as_mut().expect("stdout"), &mut stdout)
        .expect("read");
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.child.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("read");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "done\n", "stderr: {stderr}");
    let frameworks = c.state()["frameworks"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(99);
    assert_eq!(frameworks, 0, "mezz run tore its framework down");
}

#[test]
fn http_endpoints_and_list_commands() {
    let c = Cluster::start(SMALL, &[]);
    let addr = c.master_addr();
    assert_eq!(http_get(&addr, "/health").map(|r| r.0), Some(200));
    let (code, page) = http_get(&addr, "/").expect("status page");
    assert_eq!(code, 200);
    assert!(page.contains("Mezzanine") && page.contains("Agents"));
    let (code, metrics) = http_get(&addr, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mezz_agents{status=\"connected\"} 1"),
        "{metrics}"
    );

    let state = c.state();
    assert_eq!(state["agents"][0]["total"]["cpus"], 2.0);
    assert_eq!(state["masters"][0]["role"], "leader");

    let agents = c.mezz(&["agents", "--json"], T);
    let agents: serde_json::Value = serde_json::from_slice(&agents.stdout).expect("json");
    assert_eq!(agents[0]["status"], "connected");
    let table = c.mezz(&["agents"], T);
    assert!(
        text(&table.stdout).contains("2/2") || text(&table.stdout).contains("0/2"),
        "{}",
        text(&table.stdout)
    );
    let fw = c.mezz(&["frameworks"], T);
    assert!(text(&fw.stdout).starts_with("ID"));
}

#[test]
fn registrations_survive_a_master_restart() {
    let mut c = Cluster::start(SMALL, &[]);
    let id = c.start_sleeper();
    let before = c.state();
    // Stop the agent too: only the replicated registry can bring them back.
    c.agents[0].as_mut().expect("agent").kill9();
    c.master.as_mut().expect("master").kill9();
    c.start_master();
    let after = c.state();
    assert_eq!(after["agents"][0]["id"], before["agents"][0]["id"]);
    assert_eq!(after["agents"][0]["status"], "disconnected");
    assert_eq!(after["frameworks"][0]["id"], before["frameworks"][0]["id"]);
    c.start_agent(0);
    c.wait_agents_connected(1);
    c.wait_task_state(&id, "RUNNING", T);
}
