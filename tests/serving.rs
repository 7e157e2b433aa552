//! `mezz serve` against real processes: `mezz dev` with two agents, the
//! serving framework daemon, and replicas of a small standard-library
//! Python model server (tests/serving/model.py). Three replicas answer
//! through the proxy from both agents; a killed replica is replaced while
//! every request through the proxy keeps succeeding; a daemon killed
//! under a request loop fails no request (the proxy process outlives it)
//! and takes its replicas back; a proxy port taken while the proxy was
//! down is reported and taken back; scale and rm leave exactly what they say; a
//! rolling update under a loop of 2,000 requests fails none, and a version
//! that fails its health check is rolled back by itself; a canary at
//! weight 20 gets its share and is promoted; bad input is refused with one
//! line. Each test has its own cluster and state directory.
//!
//! One file of some 850 lines on purpose: each test binary links the whole
//! workspace, and these tests share one harness (the dev cluster, the
//! daemon, the request loop), so splitting them would cost build time and
//! say nothing new.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Python start-up and health checks on a busy two-core machine.
const START: Duration = Duration::from_secs(240);
const T: Duration = Duration::from_secs(120);

/// A Python 3 to run the model server: `$MEZZ_TEST_PYTHON`, else
/// `python3` (the test suite needs one anyway: `scripts/test.sh` makes its
/// virtualenv with it).
fn python() -> String {
    let python = std::env::var("MEZZ_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import http.server, json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot run the model server; set MEZZ_TEST_PYTHON to a Python 3"
    );
    python
}

fn model_py() -> String {
    format!("{}/tests/serving/model.py", env!("CARGO_MANIFEST_DIR"))
}

/// The `mezz` binary, linked once per test run: the daemon outlives the
/// commands that start it and is started later from the same path, so a
/// rebuild that replaces the file mid-run would mix two builds in one test.
fn mezz_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("mezz-serving-test-")
                .and_then(|p| p.parse().ok());
            if pid.is_some_and(|p: i32| !pid_alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("mezz-serving-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bin dir");
        let copy = dir.join("mezz");
        if std::fs::hard_link(MEZZ, &copy).is_err() {
            std::fs::copy(MEZZ, &copy).expect("copy the mezz binary");
        }
        copy.display().to_string()
    })
}

/// `mezz dev --agents 2` in a temporary directory with a private serving
/// state directory. Dropping it stops the daemon, the cluster and every
/// task.
struct Dev {
    dir: tempfile::TempDir,
    port: u16,
    proc: Option<Proc>,
}

impl Dev {
    fn start() -> Dev {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = consecutive_free_ports(3);
        let replicas = consecutive_free_ports(10);
        let args: Vec<String> = [
            "dev",
            "--agents",
            "2",
            "--port",
            &port.to_string(),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--resources",
            &format!(
                "cpus:4;mem:4096;disk:1000;ports:[{replicas}-{}]",
                replicas + 9
            ),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = dir.path().join("dev.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(mezz_bin())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn mezz dev");
        let dev = Dev {
            dir,
            port,
            proc: Some(Proc {
                name: "dev".into(),
                child,
                log,
            }),
        };
        wait_for("two connected agents", T, || {
            dev.state()["agents"]
                .as_array()
                .is_some_and(|a| a.iter().filter(|x| x["status"] == "connected").count() == 2)
        });
        dev
    }

    fn master(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("serve-state")
    }

    /// `mezz serve SUB --master … --state-dir … ARGS`.
    fn serve(&self, sub: &str, args: &[&str], timeout: Duration) -> Output {
        let mut child = Command::new(mezz_bin())
            .args(["serve", sub, "--master", &self.master(), "--state-dir"])
            .arg(self.state_dir())
            .args(args)
            .env_remove("MEZZ_MASTER")
            .env_remove("MEZZ_SERVE_STATE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mezz serve");
        let deadline = Instant::now() + timeout;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "mezz serve {sub} {args:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
                    text(&out.stdout),
                    text(&out.stderr),
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    }

    fn ok(&self, sub: &str, args: &[&str], timeout: Duration) -> String {
        let out = self.serve(sub, args, timeout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "mezz serve {sub} {args:?}\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.daemon_log()
        );
        text(&out.stdout)
    }

    /// A refused command: its one line of error.
    fn refused(&self, sub: &str, args: &[&str]) -> String {
        let out = self.serve(sub, args, T);
        assert_ne!(
            out.status.code(),
            Some(0),
            "mezz serve {sub} {args:?} was not refused"
        );
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        err
    }

    fn show(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok("show", &[name, "--json"], T)).expect("show --json")
    }

    fn state(&self) -> serde_json::Value {
        http_get(&self.master(), "/api/state")
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }

    fn active_tasks(&self) -> Vec<serde_json::Value> {
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

    fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.state_dir().join("daemon.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    /// The proxy process's pid, from its file in the state directory.
    fn proxy_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.state_dir().join("proxy.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    fn daemon_address(&self) -> String {
        let text =
            std::fs::read_to_string(self.state_dir().join("daemon.json")).expect("daemon.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("daemon.json is JSON");
        let a = v["address"].as_str().expect("an address").to_string();
        assert!(a.starts_with("127.0.0.1:"), "{a}");
        a
    }

    /// A metric of service `m` from the daemon's `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let metrics = http_get(&self.daemon_address(), "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{service=\"m\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} of m in:\n{metrics}"))
    }

    /// The ends of the daemon's and the proxy process's logs.
    fn daemon_log(&self) -> String {
        let tail = |name: &str| {
            let t = std::fs::read_to_string(self.state_dir().join(name)).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "{}\n---- proxy log ----\n{}",
            tail("daemon.log"),
            tail("proxy.log")
        )
    }

    /// SIGKILLs the process group of a task's command (as a crash would).
    fn kill_task_process(&self, task_id: &str) {
        let out = Command::new("find")
            .arg(self.dir.path().join("data"))
            .args(["-path", &format!("*/{task_id}/*"), "-name", "child.pid"])
            .output()
            .expect("find");
        let path = text(&out.stdout).lines().next().map(str::to_string);
        let path = path.unwrap_or_else(|| panic!("no child.pid of task {task_id}"));
        let pid: i32 = std::fs::read_to_string(&path)
            .expect("child.pid")
            .trim()
            .parse()
            .expect("a pid");
        assert!(pid > 1);
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        for pid in [self.daemon_pid(), self.proxy_pid()].into_iter().flatten() {
            if pid > 1 {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.daemon_log());
        }
        if let Some(mut p) = self.proc.take() {
            unsafe {
                libc::kill(p.pid() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while p.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            p.kill9();
        }
        kill_tasks_under(self.dir.path());
    }
}

/// `127.0.0.1:PORT` of a `http://127.0.0.1:PORT/` URL.
fn address(url: &str) -> String {
    let a = url
        .trim()
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not a proxy URL: {url:?}"));
    assert!(
        a.starts_with("127.0.0.1:"),
        "tests talk to loopback only: {a}"
    );
    a.to_string()
}

/// One request through the proxy: the answering replica's port and
/// version, or why it failed.
fn ask(proxy: &str) -> Result<(u64, String), String> {
    let (code, body) = http_get(proxy, "/predict").ok_or("no HTTP answer")?;
    if code != 200 {
        return Err(format!("status {code}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((
        v["port"].as_u64().ok_or("no port")?,
        v["version"].as_str().unwrap_or_default().to_string(),
    ))
}

/// A POST with an empty body on loopback: its status, if it answered.
fn post(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    assert!(
        addr.starts_with("127.0.0.1:"),
        "tests talk to loopback only: {addr}"
    );
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Port of each healthy replica to its agent.
fn agents_by_port(show: &serde_json::Value) -> std::collections::HashMap<u64, String> {
    show["replica_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "healthy")
        .filter_map(|r| {
            let port = r["address"].as_str()?.rsplit_once(':')?.1.parse().ok()?;
            Some((port, r["agent_id"].as_str()?.to_string()))
        })
        .collect()
}

#[test]
fn replicas_spread_answer_through_the_proxy_are_replaced_and_taken_back() {
    let python = python();
    let dev = Dev::start();
    let cmd = format!("{python} {} v1", model_py());
    let url = dev.ok(
        "deploy",
        &[
            "m",
            "--replicas",
            "3",
            "--cpus",
            "0.25",
            "--mem",
            "64",
            "--",
            &cmd,
        ],
        START,
    );
    let proxy = address(&url);
    let show = dev.show("m");
    assert_eq!(show["healthy"], 3, "{show}");
    assert_eq!(show["state"], "running", "{show}");
    let agents = agents_by_port(&show);
    assert_eq!(agents.len(), 3, "{show}");

    // Answers come from replicas on both agents.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let (port, version) = ask(&proxy).expect("a request through the proxy");
        assert_eq!(version, "v1");
        seen.insert(agents.get(&port).cloned().expect("a known replica"));
    }
    assert_eq!(seen.len(), 2, "answers came from agents {seen:?} only");

    // HTTP/2 (prior knowledge) through the proxy too.
    let version = Command::new("curl").arg("--version").output();
    assert!(
        version.is_ok_and(|o| text(&o.stdout).contains("HTTP2")),
        "this test needs curl with HTTP/2 (apt-get install curl) for the proxy's HTTP/2 check"
    );
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}"])
        .arg(format!("http://{proxy}/predict"))
        .output()
        .expect("curl");
    let answer = text(&out.stdout);
    assert!(
        answer.contains("\"v1\"") && answer.ends_with("\n2"),
        "{answer}{}",
        text(&out.stderr)
    );

    // The daemon counts them, per service.
    let asked = dev.metric("mezz_serve_requests_total");
    assert!((30..=31).contains(&asked), "{asked} requests counted");
    assert_eq!(dev.metric("mezz_serve_errors_total"), 0);
    assert_eq!(
        dev.metric("mezz_serve_request_duration_seconds_count"),
        asked
    );
    assert_eq!(dev.metric("mezz_serve_replicas_healthy"), 3);

    // The status page names each replica's URL and the service's.
    let tasks = dev.active_tasks();
    assert_eq!(tasks.len(), 3);
    for t in &tasks {
        assert_eq!(t["labels"]["service_url"], url.trim(), "{t}");
        assert!(
            t["labels"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
            "{t}"
        );
    }

    // A bad request about a service that exists, or one that does not.
    let err = dev.refused("deploy", &["m", "--", &cmd]);
    assert!(err.contains("already exists"), "{err}");
    for (sub, args) in [
        ("show", vec!["nope"]),
        ("rm", vec!["nope"]),
        ("scale", vec!["nope", "2"]),
    ] {
        let err = dev.refused(sub, &args);
        assert!(err.contains("no service named 'nope'"), "{sub}: {err}");
    }
    let err = dev.refused("scale", &["m", "0"]);
    assert!(err.contains("at least 1"), "{err}");

    // Kill one replica: requests through the proxy keep succeeding while
    // it is replaced.
    let victim = show["replica_list"][0]["task_id"]
        .as_str()
        .expect("a task id")
        .to_string();
    dev.kill_task_process(&victim);
    let deadline = Instant::now() + START;
    let mut requests = 0;
    loop {
        for _ in 0..20 {
            if let Err(e) = ask(&proxy) {
                panic!("request {requests} through the proxy failed after a replica was killed: {e}\n{}", dev.daemon_log());
            }
            requests += 1;
        }
        let s = dev.show("m");
        let replaced = s["replica_list"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["restarts"].as_u64() >= Some(1) && r["state"] == "healthy");
        if replaced && s["healthy"] == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed replica was not replaced: {s}"
        );
    }
    assert!(requests >= 20);

    // Scale down to 2 while each replica works on a slow POST (which the
    // proxy never retries): the replica that goes is drained first, so
    // all three are answered.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let proxy = proxy.clone();
            std::thread::spawn(move || post(&proxy, "/slow"))
        })
        .collect();
    wait_for("three slow requests in flight", T, || {
        dev.metric("mezz_serve_requests_in_flight") == 3
    });
    dev.ok("scale", &["m", "2"], START);
    for s in slow {
        let status = s.join().expect("slow request");
        assert_eq!(
            status,
            Some(200),
            "a slow request was cut off by scaling down"
        );
    }
    wait_for("two replicas left", T, || dev.active_tasks().len() == 2);
    for _ in 0..10 {
        ask(&proxy).expect("a request after scaling down");
    }

    // A restarted daemon takes the replicas back, without restarting
    // them; the proxy process outlives it, so the service answers every
    // request throughout, on the same port.
    let before: Vec<serde_json::Value> = dev.show("m")["replica_list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["task_id"].clone())
        .collect();
    let proxy_pid = dev.proxy_pid().expect("the proxy process's pid");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let during = request_loop(proxy.clone(), stop.clone(), count.clone());
    let pid = dev.daemon_pid().expect("the daemon's pid");
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    wait_for("the old daemon gone", T, || !pid_alive(pid));
    wait_for("the replicas taken back, healthy", START, || {
        let s = dev.show("m");
        let ids: Vec<serde_json::Value> = s["replica_list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["task_id"].clone())
            .collect();
        s["healthy"] == 2 && ids == before
    });
    // And a while after, with routes from the new daemon.
    let seen = count.load(std::sync::atomic::Ordering::Relaxed);
    wait_for("requests after the restart", T, || {
        count.load(std::sync::atomic::Ordering::Relaxed) > seen + 50
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, failed, _) = during.join().expect("request loop");
    assert!(
        failed.is_empty(),
        "{} of {n} requests failed across the daemon's restart: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        dev.daemon_log()
    );
    assert_ne!(dev.daemon_pid(), Some(pid));
    assert_eq!(
        dev.proxy_pid(),
        Some(proxy_pid),
        "the proxy process was restarted"
    );
    assert_eq!(dev.active_tasks().len(), 2);

    // The proxy process and the daemon both gone, and the service's port
    // taken meanwhile by another program: `show` says so plainly, and the
    // proxy takes the port back once it is free.
    let pid = dev.daemon_pid().expect("the daemon's pid");
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::kill(proxy_pid, libc::SIGKILL);
    }
    wait_for("daemon and proxy gone", T, || {
        !pid_alive(pid) && !pid_alive(proxy_pid)
    });
    let squatter = std::net::TcpListener::bind(&proxy).expect("the freed proxy port");
    wait_for("the port conflict reported", START, || {
        dev.show("m")["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot listen on") && m.contains("another program"))
    });
    drop(squatter);
    wait_for("the proxy on its port again", START, || ask(&proxy).is_ok());
    for _ in 0..10 {
        ask(&proxy).expect("a request through the proxy on its port again");
    }
    assert!(dev.show("m")["message"]
        .as_str()
        .is_some_and(|m| !m.contains("cannot listen on")));

    // rm leaves nothing running and closes the proxy.
    dev.ok("rm", &["m"], T);
    wait_for("no replica running", T, || dev.active_tasks().is_empty());
    let ls = dev.ok("ls", &["--json"], T);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ls).unwrap(),
        serde_json::json!([])
    );
    wait_for("the proxy closed", T, || {
        std::net::TcpStream::connect(&proxy).is_err()
    });
}

#[test]
fn bad_deploys_are_refused_before_anything_runs() {
    // No cluster: each is refused before the masters are asked.
    let master = format!("127.0.0.1:{}", free_port());
    let state = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let mut all = vec!["serve", "deploy", "--master", &master, "--state-dir"];
        let dir = state.path().join("s").display().to_string();
        all.push(&dir);
        all.extend_from_slice(args);
        let out = mezz(&all, T);
        assert_ne!(out.status.code(), Some(0), "{args:?} was not refused");
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        err
    };
    let err = run(&["m", "--replicas", "0", "--", "true"]);
    assert!(err.contains("--replicas must be at least 1"), "{err}");
    let err = run(&["m", "--size", "huge", "--", "true"]);
    assert!(err.contains("huge"), "{err}");
    let err = run(&["a/b", "--", "true"]);
    assert!(err.contains("not a service name"), "{err}");
    let err = run(&["m", "--health-path", "health", "--", "true"]);
    assert!(err.contains("--health-path"), "{err}");
    // An update that could never move is refused before the daemon too.
    let dir = state.path().join("s").display().to_string();
    let out = mezz(
        &[
            "serve",
            "update",
            "--master",
            &master,
            "--state-dir",
            &dir,
            "m",
            "--max-surge",
            "0",
            "--max-unavailable",
            "0",
            "--",
            "true",
        ],
        T,
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("--max-surge 0"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(
        !state.path().join("s").join("daemon.json").exists(),
        "a refused deploy started the daemon"
    );
}

type Loop = std::thread::JoinHandle<(usize, Vec<String>, std::collections::BTreeSet<String>)>;

/// Asks through `proxy` in a loop until `stop` is set, counting in `count`:
/// (requests, failures with their reasons, versions seen).
fn request_loop(
    proxy: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Loop {
    std::thread::spawn(move || {
        let (mut n, mut failed, mut versions) = (0, Vec::new(), std::collections::BTreeSet::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match ask(&proxy) {
                Ok((_, v)) => {
                    versions.insert(v);
                }
                Err(e) => failed.push(e),
            }
            n += 1;
        }
        (n, failed, versions)
    })
}

#[test]
fn rolling_updates_and_canaries_fail_no_request() {
    let python = python();
    let dev = Dev::start();
    let model = model_py();
    let url = dev.ok(
        "deploy",
        &[
            "m",
            "--replicas",
            "2",
            "--cpus",
            "0.25",
            "--mem",
            "64",
            "--health-grace",
            "5s",
            "--",
            &python,
            &model,
            "v1",
        ],
        START,
    );
    let proxy = address(&url);

    // v1 to v2 under a loop of at least 2,000 requests: none fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let looping = request_loop(proxy.clone(), stop.clone(), count.clone());
    // Both new replicas at once (a surge of two), none short.
    dev.ok(
        "update",
        &["m", "--max-surge", "2", "--", &python, &model, "v2"],
        START,
    );
    let during = count.load(std::sync::atomic::Ordering::Relaxed);
    let show = dev.show("m");
    assert_eq!(show["version"], 2, "{show}");
    assert_eq!(show["note"], "updated to version 2", "{show}");
    let replicas = show["replica_list"].as_array().cloned().unwrap_or_default();
    assert_eq!(replicas.len(), 2, "{show}");
    assert!(
        replicas
            .iter()
            .all(|r| r["version"] == 2 && r["state"] == "healthy"),
        "{show}"
    );
    // The loop goes on to 2,000 requests in all if the update was quicker.
    wait_for("2,000 requests", START, || {
        count.load(std::sync::atomic::Ordering::Relaxed) >= 2000
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, failed, versions) = looping.join().expect("request loop");
    eprintln!("{during} requests during the update, {n} in all");
    assert!(during > 0, "no request went out during the update");
    assert!(
        failed.is_empty(),
        "{} of {n} requests failed during the update: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(n >= 2000, "only {n} requests");
    assert!(versions.contains("v2"), "{versions:?}");
    for _ in 0..10 {
        assert_eq!(ask(&proxy).expect("a request").1, "v2");
    }

    // v3 never passes its health check: the update rolls back by itself,
    // and no request fails or reaches v3.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let looping = request_loop(proxy.clone(), stop.clone(), count);
    let out = dev.serve(
        "update",
        &["m", "--", &python, &model, "v3", "--unhealthy"],
        START,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a failing update was reported done"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("rolled back") && err.contains("health check"),
        "{err}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, failed, versions) = looping.join().expect("request loop");
    assert!(
        failed.is_empty(),
        "{} of {n} requests failed during the rollback: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        vec!["v2".to_string()]
    );
    let show = dev.show("m");
    assert_eq!(show["version"], 2, "{show}");
    assert!(
        show["note"]
            .as_str()
            .is_some_and(|n| n.contains("rolled back")),
        "{show}"
    );
    wait_for("two v2 replicas and nothing else", T, || {
        let s = dev.show("m");
        let r = s["replica_list"].as_array().cloned().unwrap_or_default();
        r.len() == 2
            && r.iter()
                .all(|r| r["version"] == 2 && r["state"] == "healthy")
    });
    let shown = dev.ok("show", &["m"], T);
    assert!(shown.contains("rolled back"), "{shown}");

    // A canary at weight 20 gets between 12% and 28% of 2,000 requests;
    // promoted, it is the service.
    dev.ok(
        "canary",
        &["m", "--weight", "20", "--", &python, &model, "v4"],
        START,
    );
    let mut on_canary = 0;
    for i in 0..2000 {
        let (_, v) =
            ask(&proxy).unwrap_or_else(|e| panic!("request {i} with a canary failed: {e}"));
        match v.as_str() {
            "v4" => on_canary += 1,
            "v2" => {}
            other => panic!("an answer from version {other}"),
        }
    }
    assert!(
        (240..=560).contains(&on_canary),
        "the canary got {on_canary} of 2000 requests"
    );
    let shown = dev.ok("show", &["m"], T);
    assert!(shown.contains("canary:   20%"), "{shown}");
    dev.ok("promote", &["m"], START);
    wait_for("two v4 replicas and no canary", T, || {
        let s = dev.show("m");
        let r = s["replica_list"].as_array().cloned().unwrap_or_default();
        r.len() == 2
            && r.iter()
                .all(|r| r["canary"] == false && r["state"] == "healthy")
    });
    for _ in 0..10 {
        assert_eq!(ask(&proxy).expect("a request").1, "v4");
    }
    let err = dev.refused("rollback", &["m"]);
    assert!(err.contains("has no canary"), "{err}");

    // A command that ends at once is reported by deploy, not waited for.
    let out = dev.serve(
        "deploy",
        &["bad", "--cpus", "0.25", "--mem", "64", "--", "exit 3"],
        START,
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("without answering its health check") && last.contains("exited with code 3"),
        "{err}"
    );
    dev.ok("rm", &["bad"], T);
    dev.ok("rm", &["m"], T);
    wait_for("no replica running", T, || dev.active_tasks().is_empty());
}
