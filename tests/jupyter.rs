//! `mezz jupyter` against real processes: `mezz dev`, the Jupyter
//! framework daemon, and real Jupyter servers from the test virtualenv.
//! A notebook runs `1+1` over its kernel's websocket, refuses requests
//! without its token, is listed, survives a restart of the framework
//! process, is restarted after its server is killed, and stops leaving
//! nothing behind; an idle one is stopped; a GPU notebook sees only its
//! own GPU; bad input is refused with one line and launches nothing.
//! Each test has its own cluster, state directory and notebook root.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Jupyter start-up on a busy two-core machine can take most of a minute.
const START: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(120);

/// The Python with Jupyter (see `need_python`).
fn jupyter_python() -> String {
    need_python("jupyter_server, ipykernel")
}

/// The `mezz` binary, copied once per test run: the daemon outlives the
/// commands that start it and is started later from the same path, so a
/// rebuild that replaces the file mid-run would mix two builds in one
/// test.
fn mezz_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = std::env::temp_dir();
        // Copies of earlier runs whose process is gone.
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("mezz-jupyter-test-")
                .and_then(|p| p.parse().ok());
            if pid.is_some_and(|p: i32| !pid_alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("mezz-jupyter-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bin dir");
        let copy = dir.join("mezz");
        // A hard link keeps this build's file even when a rebuild puts a
        // new one at the path; a copy where linking is not possible.
        if std::fs::hard_link(MEZZ, &copy).is_err() {
            std::fs::copy(MEZZ, &copy).expect("copy the mezz binary");
        }
        copy.display().to_string()
    })
}

/// `mezz dev` (one master, one agent) in a temporary directory, with a
/// private Jupyter state directory and notebook root. Dropping it stops
/// the daemon, the cluster and every task.
struct Dev {
    dir: tempfile::TempDir,
    port: u16,
    proc: Option<Proc>,
    python: String,
}

impl Dev {
    fn start(python: &str, extra: &[&str]) -> Dev {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = consecutive_free_ports(2);
        // Ports of its own for the servers: tests run side by side.
        let servers = consecutive_free_ports(10);
        let mut args: Vec<String> = [
            "dev",
            "--port",
            &port.to_string(),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--resources",
            &format!(
                "cpus:4;mem:4096;disk:1000;ports:[{servers}-{}]",
                servers + 9
            ),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
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
        let proc = Proc {
            name: "dev".into(),
            child,
            log,
        };
        let dev = Dev {
            dir,
            port,
            proc: Some(proc),
            python: python.to_string(),
        };
        let addr = dev.master();
        wait_for("a connected agent", T, || {
            http_get(&addr, "/api/state")
                .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|s| {
                    s["agents"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x["status"] == "connected"))
                })
        });
        dev
    }

    fn master(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("jupyter-state")
    }

    fn notebooks(&self) -> PathBuf {
        self.dir.path().join("notebooks")
    }

    /// `mezz jupyter SUB --master … --state-dir … ARGS`.
    fn jupyter(&self, sub: &str, args: &[&str], timeout: Duration) -> Output {
        let mut child = Command::new(mezz_bin())
            .args(["jupyter", sub, "--master", &self.master(), "--state-dir"])
            .arg(self.state_dir())
            .args(args)
            .env_remove("MEZZ_MASTER")
            .env_remove("MEZZ_JUPYTER_STATE")
            .env("MEZZ_JUPYTER_NOTEBOOKS", self.notebooks())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mezz jupyter");
        let deadline = Instant::now() + timeout;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "mezz jupyter {sub} {args:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
                    text(&out.stdout),
                    text(&out.stderr),
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    }

    /// Starts a notebook and returns the URL with its token.
    fn start_notebook(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "--name",
            name,
            "--cpus",
            "0.5",
            "--mem",
            "512",
            "--python",
            &self.python,
        ];
        args.extend_from_slice(extra);
        let out = self.jupyter("start", &args, START);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout: {}\nstderr: {}\ndaemon log:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.daemon_log()
        );
        let url = text(&out.stdout).trim().to_string();
        assert!(url.contains("?token="), "no token in {url:?}");
        assert!(
            text(&out.stderr).contains(&self.notebooks().join(name).display().to_string())
                || extra.contains(&"--notebook-dir"),
            "start does not say where the files live: {}",
            text(&out.stderr)
        );
        url
    }

    fn ls(&self) -> Vec<serde_json::Value> {
        let out = self.jupyter("ls", &["--json"], T);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("ls --json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn state(&self) -> serde_json::Value {
        let (code, body) = http_get(&self.master(), "/api/state").expect("GET /api/state");
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("state JSON")
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

    fn daemon_log(&self) -> String {
        let t = std::fs::read_to_string(self.state_dir().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
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
        if let Some(pid) = self.daemon_pid().filter(|p| *p > 1) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
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

/// `(host:port, token)` of a notebook URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, _) = rest.split_once('/').expect("a path");
    let token = url.split_once("?token=").expect("a token").1.to_string();
    (addr.to_string(), token)
}

/// One HTTP/1.1 request on loopback: (status code, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    assert!(
        addr.starts_with("127.0.0.1:"),
        "tests talk to loopback only: {addr}"
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let auth = token
        .map(|t| format!("Authorization: token {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let resp = text(&buf);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

/// Runs `code` in a new kernel of the server at `addr` over the kernel's
/// websocket (Jupyter messaging protocol v5); returns what it printed and
/// the value of its last expression.
fn run_in_kernel(addr: &str, token: &str, code: &str) -> (String, String) {
    let (status, body) = http(addr, "POST", "/api/kernels", Some(token), "{}");
    assert_eq!(status, 201, "POST /api/kernels: {body}");
    let kernel: serde_json::Value = serde_json::from_str(&body).expect("kernel JSON");
    let id = kernel["id"].as_str().expect("kernel id").to_string();

    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let url = format!("ws://{addr}/api/kernels/{id}/channels?token={token}");
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("websocket handshake");
    let msg_id = format!("t-{}", free_port());
    let request = serde_json::json!({
        "header": {
            "msg_id": msg_id, "username": "test", "session": "test-session",
            "msg_type": "execute_request", "version": "5.3", "date": ""
        },
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {
            "code": code, "silent": false, "store_history": false,
            "user_expressions": {}, "allow_stdin": false, "stop_on_error": true
        }
    });
    ws.send(tungstenite::Message::text(request.to_string()))
        .expect("send execute_request");
    let (mut printed, mut value) = (String::new(), String::new());
    // The reply comes on the shell channel and the output on iopub, in no
    // fixed order between them; iopub's `idle` follows every output of the
    // request. Done once both are in.
    let (mut replied, mut idle) = (false, false);
    let deadline = Instant::now() + T;
    while !(replied && idle) {
        assert!(Instant::now() < deadline, "no reply to execute_request");
        let msg = match ws.read().expect("websocket read") {
            tungstenite::Message::Text(t) => t.to_string(),
            _ => continue,
        };
        let m: serde_json::Value = serde_json::from_str(&msg).expect("message JSON");
        if m["parent_header"]["msg_id"] != msg_id.as_str() {
            continue;
        }
        match m["msg_type"].as_str().unwrap_or("") {
            "stream" => printed.push_str(m["content"]["text"].as_str().unwrap_or("")),
            "execute_result" => {
                value = m["content"]["data"]["text/plain"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            }
            "error" => panic!("the kernel raised: {}", m["content"]),
            "execute_reply" => replied = true,
            "status" => idle |= m["content"]["execution_state"] == "idle",
            _ => {}
        }
    }
    let _ = ws.close(None);
    (printed, value)
}

fn notebook_task(dev: &Dev, name: &str) -> Option<serde_json::Value> {
    dev.active_tasks()
        .into_iter()
        .find(|t| t["labels"]["notebook"] == name && t["state"] == "RUNNING")
}

#[test]
#[ignore = "needs jupyter-server"]
fn a_notebook_runs_code_survives_restarts_and_stops_cleanly() {
    let python = jupyter_python();
    let dev = Dev::start(&python, &[]);
    let url = dev.start_notebook("t1", &[]);
    let (addr, token) = split_url(&url);

    // The REST API answers with the token, and only with it.
    let (code, body) = http(&addr, "GET", "/api/status", Some(&token), "");
    assert_eq!(code, 200, "{body}");
    let (code, _) = http(&addr, "GET", "/api/status", None, "");
    assert_eq!(code, 403, "a request without the token must be refused");
    let (code, _) = http(&addr, "GET", "/api/kernels", Some("wrong"), "");
    assert_eq!(code, 403, "a request with a wrong token must be refused");

    let (_, value) = run_in_kernel(&addr, &token, "1+1");
    assert_eq!(value, "2");

    // Listed, without the token; on the status page, with the files' place.
    let list = dev.ls();
    assert_eq!(list.len(), 1, "{list:?}");
    let bare = url.split_once('?').unwrap().0;
    assert_eq!(list[0]["name"], "t1");
    assert_eq!(list[0]["state"], "running");
    assert_eq!(list[0]["url"], bare);
    assert!(!serde_json::to_string(&list).unwrap().contains(&token));
    let table = dev.jupyter("ls", &[], T);
    assert!(
        text(&table.stdout).contains(bare),
        "{}",
        text(&table.stdout)
    );
    let task = notebook_task(&dev, "t1").expect("the server's task");
    assert_eq!(task["labels"]["url"], bare);
    let files = dev.notebooks().join("t1");
    assert_eq!(task["labels"]["notebook_dir"], files.display().to_string());
    assert!(files.is_dir(), "the notebook directory was not made");
    let page = format!(
        "/tasks/{}/{}",
        task["framework_id"].as_str().unwrap_or(""),
        task["id"].as_str().unwrap_or("")
    );
    let (code, html) = http_get(&dev.master(), &page).expect("the task's page");
    assert_eq!(code, 200, "{page}: {html}");
    assert!(
        html.contains(&format!("href=\"{bare}\"")),
        "no link on {page}"
    );
    assert!(
        html.contains(&files.display().to_string()),
        "no files on {page}"
    );
    assert!(!task["command"].as_str().unwrap_or("").contains(&token));

    // A file written by the kernel lives in the notebook directory.
    run_in_kernel(&addr, &token, "open('kept.txt', 'w').write('x')");
    assert!(files.join("kept.txt").exists());

    // The framework process dies; the next command starts another, which
    // takes the running server back instead of launching a second one.
    let old_daemon = dev.daemon_pid().expect("daemon pid");
    unsafe {
        libc::kill(old_daemon, libc::SIGKILL);
    }
    wait_for("the old daemon to be gone", T, || !pid_alive(old_daemon));
    let first_id = task["id"].as_str().unwrap().to_string();
    let out = dev.jupyter("url", &["t1"], T);
    assert_eq!(text(&out.stdout).trim(), url, "{}", text(&out.stderr));
    assert_ne!(dev.daemon_pid(), Some(old_daemon));
    wait_for("t1 running again under the new daemon", START, || {
        dev.ls().first().is_some_and(|n| n["state"] == "running")
    });
    let ids: Vec<String> = dev
        .active_tasks()
        .iter()
        .map(|t| t["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&first_id),
        "the server was launched twice"
    );

    // A crashed server is restarted, same files, same URL.
    dev.kill_task_process(&first_id);
    wait_for("t1 restarted as a new task", START, || {
        notebook_task(&dev, "t1").is_some_and(|t| t["id"] != first_id.as_str())
    });
    wait_for("the restarted server to answer", START, || {
        dev.ls()
            .first()
            .is_some_and(|n| n["state"] == "running" && n["restarts"] == 1)
    });
    let (code, _) = http(&addr, "GET", "/api/status", Some(&token), "");
    assert_eq!(code, 200, "the restarted server is not at the same URL");
    let (printed, _) = run_in_kernel(&addr, &token, "print(open('kept.txt').read())");
    assert_eq!(printed.trim(), "x");

    // Stop leaves nothing running.
    let out = dev.jupyter("stop", &["t1"], T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dev.active_tasks().is_empty(), "{:?}", dev.active_tasks());
    assert!(dev.ls().is_empty());
    assert_eq!(
        http_get(&addr, "/api/status").map(|(c, _)| c),
        None,
        "the server still answers after stop"
    );
    assert!(files.join("kept.txt").exists(), "stop removed the files");
}

#[test]
#[ignore = "needs jupyter-server"]
fn an_idle_notebook_is_stopped_and_its_resources_freed() {
    let python = jupyter_python();
    let dev = Dev::start(&python, &[]);
    dev.start_notebook("idle", &["--idle-timeout", "3s"]);
    wait_for("the idle notebook to be stopped", T, || {
        dev.ls().is_empty() && dev.active_tasks().is_empty()
    });
    let log = std::fs::read_to_string(dev.state_dir().join("daemon.log")).unwrap_or_default();
    assert!(log.contains("Idle"), "the daemon does not say why: {log}");
}

#[test]
#[ignore = "needs jupyter-server, root and cgroups"]
fn a_gpu_notebook_sees_only_its_own_gpu() {
    let python = jupyter_python();
    need_root_cgroups();
    let dev = Dev::start(&python, &["--fake-gpus", "2"]);
    let url = dev.start_notebook("gpu", &["--gpus", "1"]);
    let (addr, token) = split_url(&url);
    let code = "import os, errno, glob\n\
        given = os.environ.get('MEZZ_GPU_DEVICES', '')\n\
        print('cuda=' + os.environ.get('CUDA_VISIBLE_DEVICES', ''))\n\
        print('given=' + given)\n\
        for p in sorted(glob.glob(os.path.join(os.path.dirname(given), 'nvidia[0-9]*'))):\n\
        \x20   try:\n\
        \x20       os.close(os.open(p, os.O_RDWR)); print(p, 'OK')\n\
        \x20   except OSError as e:\n\
        \x20       print(p, errno.errorcode[e.errno])\n";
    let (printed, _) = run_in_kernel(&addr, &token, code);
    let line = |prefix: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_default()
            .to_string()
    };
    let given = line("given=");
    let cuda = line("cuda=");
    assert!(
        cuda == "0" || cuda == "1",
        "CUDA_VISIBLE_DEVICES={cuda:?}: {printed}"
    );
    assert!(given.ends_with(&format!("nvidia{cuda}")), "{printed}");
    assert!(!given.contains(','), "more than one GPU: {printed}");
    let listed = dev.ls();
    assert_eq!(
        listed[0]["gpu_ids"].as_array().map(Vec::len),
        Some(1),
        "{listed:?}"
    );
    let other = if cuda == "0" { "nvidia1" } else { "nvidia0" };
    assert!(printed.contains(&format!("{given} ENXIO")), "{printed}");
    assert!(
        printed
            .lines()
            .any(|l| l.contains(other) && l.ends_with("EPERM")),
        "{printed}"
    );
}

#[test]
#[ignore = "needs jupyter-server"]
fn bad_input_is_refused_with_one_line_and_launches_nothing() {
    let python = jupyter_python();
    let dev = Dev::start(&python, &[]);
    let one_line = |out: &Output, needle: &str| {
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "more than one line: {err}");
    };

    let no_jupyter = dev.dir.path().join("python-without-jupyter");
    std::fs::write(&no_jupyter, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&no_jupyter, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dev.jupyter(
        "start",
        &["--name", "a", "--python", &no_jupyter.display().to_string()],
        T,
    );
    one_line(&out, "pip install jupyter-server ipykernel");

    let out = dev.jupyter(
        "start",
        &["--name", "a", "--python", &python, "--size", "huge"],
        T,
    );
    one_line(&out, "unknown size 'huge'");

    let out = dev.jupyter("start", &["--name", "Bad/Name", "--python", &python], T);
    one_line(&out, "not valid");

    let out = dev.jupyter("stop", &["nosuch"], T);
    one_line(&out, "no notebook named 'nosuch'");
    assert!(dev.active_tasks().is_empty());

    // A notebook too big for the cluster stays wanted (and launches
    // nothing); its name is then taken.
    let out = dev.jupyter(
        "start",
        &[
            "--name", "big", "--python", &python, "--cpus", "64", "--wait", "1s",
        ],
        T,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("did not answer"),
        "{}",
        text(&out.stderr)
    );
    let out = dev.jupyter("start", &["--name", "big", "--python", &python], T);
    one_line(&out, "already exists");
    assert!(dev.active_tasks().is_empty(), "{:?}", dev.active_tasks());
    let out = dev.jupyter("stop", &["big"], T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dev.ls().is_empty());
}
