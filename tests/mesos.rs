//! The Mesos v1 scheduler API against real `mezz` processes: a real,
//! unmodified pymesos 0.3.15 scheduler (installed by `tests/mesos/install.py`
//! into the test venv), the HTTP status codes Mesos gives for bad calls, and
//! a leader failover that a subscribed pymesos framework rides through.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const RESOURCES: &str = "cpus:2;mem:2048;disk:1000;ports:[31000-31099]";

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mesos")
        .join(name)
        .display()
        .to_string()
}

/// The test Python with pymesos and mesoshttp installed (idempotently, by
/// `tests/mesos/install.py`).
fn mesos_clients_python() -> String {
    let python = need_python("json");
    let out = Command::new(&python)
        .arg(script("install.py"))
        .output()
        .expect("run install.py");
    assert!(
        out.status.success(),
        "cannot install pymesos and mesoshttp into {python}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    python
}

/// A Python scheduler script in the background, its output in files.
struct Script {
    child: Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Script {
    fn start(dir: &Path, python: &str, name: &str, args: &[&str]) -> Script {
        let out = dir.join(format!("{name}-{}.out", free_port()));
        let err = out.with_extension("err");
        let child = Command::new(python)
            .arg(script(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&err).expect("err file"))
            .spawn()
            .expect("spawn the scheduler script");
        Script { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The milestones printed so far, as JSON.
    fn steps(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn step(&self, name: &str) -> Option<serde_json::Value> {
        self.steps().into_iter().find(|s| s["step"] == name)
    }

    /// Waits for a clean exit; panics with both outputs otherwise.
    fn wait_ok(mut self, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let err = std::fs::read_to_string(&self.err).unwrap_or_default();
                assert!(
                    status.success(),
                    "scheduler script failed ({status})\nstdout:\n{}\nstderr:\n{err}",
                    self.stdout()
                );
                return self.steps();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "scheduler script did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, lower-cased headers, body.
type Answer = (u16, Vec<(String, String)>, String);

/// One HTTP/1.1 request.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    // A server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let resp = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A raw SUBSCRIBE: the open stream, its `Mesos-Stream-Id` and the
/// framework id from the first record (SUBSCRIBED).
struct RawSubscription {
    reader: BufReader<TcpStream>,
    stream_id: String,
    framework_id: String,
}

impl RawSubscription {
    fn open(addr: &str) -> RawSubscription {
        let body =
            r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"nobody","name":"raw"}}}"#;
        let mut sub = RawSubscription::start(addr, "application/json", body.as_bytes());
        let first = sub.next_record();
        assert_eq!(first["type"], "SUBSCRIBED", "{first}");
        sub.framework_id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .expect("framework id")
            .to_string();
        sub
    }

    /// Posts a SUBSCRIBE encoded as `content_type` (events are asked for in
    /// the same encoding) and reads the response head.
    fn start(addr: &str, content_type: &str, body: &[u8]) -> RawSubscription {
        RawSubscription::start_with(addr, content_type, body, &[])
    }

    /// [`RawSubscription::start`] with more request headers.
    fn start_with(
        addr: &str,
        content_type: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> RawSubscription {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(
            s,
            "POST /api/v1/scheduler HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
             Accept: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("write");
        s.write_all(body).expect("write");
        let mut reader = BufReader::new(s);
        let mut stream_id = String::new();
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "SUBSCRIBE answered {status}");
        let mut chunked = false;
        let mut media = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("mesos-stream-id:") {
                stream_id = v.trim().to_string();
            }
            if let Some(v) = lower.strip_prefix("content-type:") {
                media = v.trim().to_string();
            }
            chunked |= lower == "transfer-encoding: chunked";
        }
        assert!(chunked, "the event stream is chunked");
        assert!(!stream_id.is_empty(), "a Mesos-Stream-Id header");
        assert_eq!(media, content_type, "events come as asked");
        RawSubscription {
            reader,
            stream_id,
            framework_id: String::new(),
        }
    }

    /// The next RecordIO record as JSON.
    fn next_record(&mut self) -> serde_json::Value {
        serde_json::from_slice(&self.next_bytes()).expect("record JSON")
    }

    /// The next RecordIO record, read through the HTTP chunking.
    fn next_bytes(&mut self) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            // A record is `LEN\nJSON`; chunk boundaries may fall anywhere.
            if let Some(nl) = data.iter().position(|&b| b == b'\n') {
                let len: usize = std::str::from_utf8(&data[..nl])
                    .expect("length")
                    .parse()
                    .expect("decimal length");
                if data.len() >= nl + 1 + len {
                    assert_eq!(data.len(), nl + 1 + len, "one record per read here");
                    return data[nl + 1..].to_vec();
                }
            }
            let mut size = String::new();
            self.reader.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).expect("chunk");
            data.extend_from_slice(&chunk[..n]);
        }
    }
}

struct Group {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    masters: Vec<Option<Proc>>,
    agent: Option<Proc>,
}

impl Group {
    fn start() -> Group {
        let mut g = Group {
            dir: cluster_dir(),
            ports: vec![free_port(), free_port(), free_port()],
            masters: vec![None, None, None],
            agent: None,
        };
        for i in 0..3 {
            g.start_master(i);
        }
        let list = (0..3).map(|i| g.addr(i)).collect::<Vec<_>>().join(",");
        let args: Vec<String> = [
            "agent",
            "--master",
            &list,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--work-dir",
            &g.dir.path().join("agent").display().to_string(),
            "--resources",
            RESOURCES,
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

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    fn start_master(&mut self, i: usize) {
        let args = group_master_args(self.dir.path(), &self.ports, i);
        self.masters[i] = Some(spawn_logged(
            self.dir.path(),
            &format!("master-{}", i + 1),
            &args,
        ));
    }

    /// The leader's index, once every running master names the same
    /// running leader at `/master/redirect`.
    fn leader(&self) -> Option<usize> {
        let mut named = None;
        for i in (0..3).filter(|&i| self.masters[i].is_some()) {
            let (code, headers, _) = try_request(&self.addr(i), "/master/redirect")?;
            if code != 307 {
                return None;
            }
            let loc = header(&headers, "location")?
                .trim_start_matches("//")
                .to_string();
            if named.as_ref().is_some_and(|n| *n != loc) {
                return None;
            }
            named = Some(loc);
        }
        let named = named?;
        (0..3).find(|&i| self.masters[i].is_some() && self.addr(i) == named)
    }

    fn wait_leader(&self) -> usize {
        let mut found = None;
        wait_for(
            "one leader named by all masters",
            Duration::from_secs(30),
            || {
                found = self.leader();
                found.is_some()
            },
        );
        found.expect("leader")
    }

    fn connected_agents(&self, leader: usize) -> usize {
        http_get(&self.addr(leader), "/api/state")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| {
                v["agents"]
                    .as_array()
                    .map(|a| a.iter().filter(|x| x["status"] == "connected").count())
            })
            .unwrap_or(0)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in self.masters.iter().chain([&self.agent]).flatten() {
                eprintln!("---- {} log ----\n{}", p.name, p.log_text());
            }
        }
        self.agent = None;
        kill_tasks_under(&self.dir.path().join("agent"));
    }
}

/// GET without panicking on a refused connection.
fn try_request(addr: &str, path: &str) -> Option<Answer> {
    TcpStream::connect(addr).ok()?;
    Some(request(addr, "GET", path, &[], b""))
}

mod mesos {
    mod clients;
    mod failover;
    mod security;
    mod wire;
}
