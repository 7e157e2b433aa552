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

#[test]
#[ignore = "needs the test Python (pymesos and mesoshttp are installed into it)"]
fn pymesos_scheduler_runs_unchanged() {
    let python = mesos_clients_python();
    let mut c = Cluster::start(RESOURCES, &[]);
    c.add_agent();
    let run = Script::start(
        c.dir.path(),
        &python,
        "pymesos_scheduler.py",
        &[&c.master_addr()],
    );
    let steps = run.wait_ok(Duration::from_secs(240));
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "subscribed",
            "offers",
            "launched",
            "finished",
            "reconciled",
            "filtered",
            "revived",
            "torn_down"
        ]
    );
    assert_eq!(steps[0]["version"], "1.11.0");
    // The task ran through the agent's normal launch path: its output is in
    // its sandbox, read through the master's API.
    let fid = steps[0]["framework_id"].as_str().expect("framework id");
    let tid = steps[2]["task_id"].as_str().expect("task id");
    let task = c.task(tid).expect("the task in /api/state");
    assert_eq!(task["state"], "FINISHED");
    assert_eq!(task["framework_id"], fid);
    let (code, out) = http_get(
        &c.master_addr(),
        &format!("/api/tasks/{fid}/{tid}/files/stdout"),
    )
    .expect("GET stdout");
    assert_eq!(code, 200, "{out}");
    assert!(out.contains("hello from mesos"), "stdout: {out:?}");
    // TEARDOWN removed the framework.
    wait_for("the framework to be gone", Duration::from_secs(20), || {
        c.state()["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["id"] != fid))
    });
}

#[test]
fn protobuf_clients_get_protobuf_events() {
    use mezz_proto::mesos::v1::scheduler::{call, event, Call, Event};
    use mezz_proto::mesos::v1::{FrameworkId, FrameworkInfo};
    use prost::Message as _;

    let c = Cluster::start(RESOURCES, &[]);
    let addr = c.master_addr();
    let subscribe = Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: FrameworkInfo {
                user: "nobody".into(),
                name: "protobuf".into(),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut sub =
        RawSubscription::start(&addr, "application/x-protobuf", &subscribe.encode_to_vec());
    let first = Event::decode(sub.next_bytes().as_slice()).expect("a protobuf Event");
    assert_eq!(first.r#type(), event::Type::Subscribed);
    let fid = first.subscribed.expect("subscribed").framework_id;
    let offer = loop {
        let ev = Event::decode(sub.next_bytes().as_slice()).expect("a protobuf Event");
        if let Some(o) = ev.offers.and_then(|o| o.offers.into_iter().next()) {
            break o;
        }
    };
    let cpus = offer
        .resources
        .iter()
        .find(|r| r.name == "cpus")
        .and_then(|r| r.scalar.as_ref())
        .map(|s| s.value);
    assert_eq!(cpus, Some(2.0), "{offer:?}");
    let decline = Call {
        framework_id: Some(FrameworkId {
            value: fid.value.clone(),
        }),
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            offer_ids: vec![offer.id.clone()],
            filters: None,
        }),
        ..Default::default()
    };
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        &decline.encode_to_vec(),
    );
    assert_eq!(code, 202, "{body}");
    // The declined offer is gone: a second DECLINE of it names it.
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        &decline.encode_to_vec(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains(&offer.id.value), "{body}");
}

/// An HTTP answer: status, lower-cased headers, body.
type Answer = (u16, Vec<(String, String)>, String);

#[test]
#[ignore = "needs the test Python (pymesos and mesoshttp are installed into it)"]
fn mesoshttp_scheduler_runs_unchanged() {
    let python = mesos_clients_python();
    let c = Cluster::start(RESOURCES, &[]);
    let run = Script::start(
        c.dir.path(),
        &python,
        "mesoshttp_scheduler.py",
        &[&format!("http://{}", c.master_addr())],
    );
    let steps = run.wait_ok(Duration::from_secs(300));
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "subscribed",
            "launched",
            "finished",
            "reconciled",
            "revived",
            "torn_down"
        ]
    );
    assert_eq!(steps[3]["state"], "TASK_FINISHED");
    let fid = steps[0]["framework_id"].as_str().expect("framework id");
    let tid = steps[1]["task_id"].as_str().expect("task id");
    let (code, out) = http_get(
        &c.master_addr(),
        &format!("/api/tasks/{fid}/{tid}/files/stdout"),
    )
    .expect("GET stdout");
    assert_eq!(code, 200, "{out}");
    assert!(out.contains("hello from mesoshttp"), "stdout: {out:?}");
    wait_for("the framework to be gone", Duration::from_secs(20), || {
        c.state()["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["id"] != fid))
    });
}

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

#[test]
fn bad_calls_get_mesos_status_codes() {
    let c = Cluster::start(RESOURCES, &[]);
    let addr = c.master_addr();
    let json = [("Content-Type", "application/json")];

    let (code, _, body) = request(&addr, "GET", "/version", &[], b"");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("version JSON");
    for part in v["version"].as_str().expect("version").split('.') {
        part.parse::<u32>().expect("dotted integers");
    }

    let (code, _, body) = request(&addr, "POST", "/api/v1/scheduler", &json, b"{not json");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not valid JSON"), "{body}");

    let decline = |fid: &str| {
        format!(
            r#"{{"type":"DECLINE","framework_id":{{"value":"{fid}"}},"decline":{{"offer_ids":[]}}}}"#
        )
    };
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &json,
        decline("nobody-subscribed").as_bytes(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("SUBSCRIBE first"), "{body}");

    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "text/plain")],
        b"SUBSCRIBE",
    );
    assert_eq!(code, 415, "{body}");
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "application/x-protobuf")],
        b"\xff\xff\xff",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a protobuf"), "{body}");

    let big = vec![b' '; 5 * 1024 * 1024];
    let (code, _, body) = request(&addr, "POST", "/api/v1/scheduler", &json, &big);
    assert_eq!(code, 413, "{body}");

    let mut sub = RawSubscription::open(&addr);
    let fid = sub.framework_id.clone();
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &json,
        decline(&fid).as_bytes(),
    );
    assert_eq!(code, 400, "no stream id: {body}");
    assert!(body.contains("Mesos-Stream-Id"), "{body}");
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json[0], ("Mesos-Stream-Id", "not-the-stream")],
        decline(&fid).as_bytes(),
    );
    assert_eq!(code, 400, "wrong stream id: {body}");
    assert!(body.contains("not-the-stream"), "{body}");

    let stream_id = sub.stream_id.clone();
    let with_id = [json[0], ("Mesos-Stream-Id", stream_id.as_str())];
    let post = |body: &str| {
        request(
            &addr,
            "POST",
            "/api/v1/scheduler",
            &with_id,
            body.as_bytes(),
        )
    };
    let accept = format!(
        r#"{{"type":"ACCEPT","framework_id":{{"value":"{fid}"}},"accept":{{"offer_ids":[{{"value":"no-such-offer"}}],"operations":[]}}}}"#
    );
    let (code, _, body) = post(&accept);
    assert_eq!(code, 400, "unknown offer: {body}");
    assert!(body.contains("no-such-offer"), "{body}");

    // A launch bigger than its offer: accepted as a call and answered, as
    // Mesos does, with TASK_ERROR naming the shortfall; nothing runs.
    let next_offer = |sub: &mut RawSubscription| loop {
        let ev = sub.next_record();
        if ev["type"] == "OFFERS" {
            break ev["offers"]["offers"][0].clone();
        }
    };
    let launch = |offer: &serde_json::Value, task: &str, cpus: f64| {
        serde_json::json!({"type": "ACCEPT", "framework_id": {"value": fid},
            "accept": {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH",
            "launch": {"task_infos": [{"name": "t", "task_id": {"value": task},
            "agent_id": offer["agent_id"],
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}}],
            "command": {"value": "sleep 30"}}]}}]}})
        .to_string()
    };
    let offer = next_offer(&mut sub);
    let (code, _, body) = post(&launch(&offer, "too-big", 64.0));
    assert_eq!(code, 202, "launch over the offer: {body}");
    let update = loop {
        let ev = sub.next_record();
        if ev["type"] == "UPDATE" {
            break ev;
        }
    };
    let st = &update["update"]["status"];
    assert_eq!(st["task_id"]["value"], "too-big", "{update}");
    assert_eq!(st["state"], "TASK_ERROR", "{update}");
    assert!(
        st["message"].as_str().is_some_and(|m| m.contains("cpus")),
        "{update}"
    );
    assert!(c.active_tasks().is_empty(), "nothing was launched");

    let offer = next_offer(&mut sub);
    let (code, _, body) = post(&launch(&offer, "t1", 0.5));
    assert_eq!(code, 202, "launch within the offer: {body}");
    assert!(body.is_empty());
    // The same offer again: as in Mesos, the call is taken and the task
    // dropped with a message that names the offer.
    let (code, _, body) = post(&launch(&offer, "t2", 0.5));
    assert_eq!(code, 202, "the same offer accepted twice: {body}");

    // UPDATEs carry agent_id and task_id with their uuid; KILL ends the task.
    let kill = format!(
        r#"{{"type":"KILL","framework_id":{{"value":"{fid}"}},"kill":{{"task_id":{{"value":"t1"}}}}}}"#
    );
    let mut states = vec![];
    let mut t2_dropped = false;
    while !states.contains(&"TASK_KILLED".to_string()) || !t2_dropped {
        let ev = sub.next_record();
        if ev["type"] != "UPDATE" {
            continue;
        }
        let st = &ev["update"]["status"];
        if st["task_id"]["value"] == "t2" {
            assert!(
                ["TASK_DROPPED", "TASK_LOST", "TASK_ERROR"]
                    .contains(&st["state"].as_str().unwrap_or("")),
                "{ev}"
            );
            let m = st["message"].as_str().unwrap_or("");
            assert!(
                m.contains("no longer valid")
                    && m.contains(offer["id"]["value"].as_str().unwrap_or("?")),
                "{ev}"
            );
            t2_dropped = true;
            continue;
        }
        assert_eq!(st["task_id"]["value"], "t1", "{ev}");
        if st.get("uuid").is_some() {
            assert!(st["agent_id"]["value"].is_string(), "{ev}");
            let ack = serde_json::json!({"type": "ACKNOWLEDGE", "framework_id": {"value": fid},
                "acknowledge": {"agent_id": st["agent_id"], "task_id": st["task_id"],
                "uuid": st["uuid"]}});
            let (code, _, body) = post(&ack.to_string());
            assert_eq!(code, 202, "{body}");
        }
        let state = st["state"].as_str().expect("state").to_string();
        if state == "TASK_RUNNING" {
            let (code, _, body) = post(&kill);
            assert_eq!(code, 202, "{body}");
        }
        states.push(state);
    }
    assert!(states.contains(&"TASK_RUNNING".to_string()), "{states:?}");
    assert!(
        c.task("t2").is_none_or(|t| t["state"] != "RUNNING"),
        "t2 never ran"
    );

    // What operator tools read, in Mesos' shape, while the framework is
    // still subscribed.
    for path in ["/master/state", "/state.json", "/master/state.json"] {
        let (code, _, body) = request(&addr, "GET", path, &[], b"");
        assert_eq!(code, 200, "{path}: {body}");
        let s: serde_json::Value = serde_json::from_str(&body).expect("state JSON");
        assert_eq!(s["leader"], format!("master@{addr}"), "{path}");
        assert_eq!(s["activated_slaves"], 1, "{path}");
        assert_eq!(s["slaves"][0]["resources"]["cpus"], 2.0, "{path}");
        assert_eq!(
            s["slaves"][0]["resources"]["ports"], "[31000-31099]",
            "{path}"
        );
        let fw = s["frameworks"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == fid.as_str()))
            .unwrap_or_else(|| panic!("{path}: framework {fid} missing: {s}"));
        assert_eq!(fw["name"], "raw");
        assert_eq!(fw["active"], true);
        let done = fw["completed_tasks"].as_array().expect("completed_tasks");
        assert!(
            done.iter()
                .any(|t| t["id"] == "t1" && t["state"] == "TASK_KILLED"),
            "{path}: {fw}"
        );
    }
    let (code, headers, _) = request(&addr, "GET", "/master/redirect", &[], b"");
    assert_eq!(code, 307);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("//{addr}").as_str())
    );
}

/// Three masters in one raft group and one agent that knows them all.
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
        let peers = (0..3)
            .map(|j| format!("{}={}", j + 1, self.addr(j)))
            .collect::<Vec<_>>()
            .join(",");
        let args: Vec<String> = vec![
            "master".into(),
            "--listen".into(),
            self.addr(i),
            "--data-dir".into(),
            self.dir.path().join(format!("m{i}")).display().to_string(),
            "--id".into(),
            (i + 1).to_string(),
            "--peers".into(),
            peers,
        ];
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

#[test]
#[ignore = "needs the test Python (pymesos and mesoshttp are installed into it)"]
fn pymesos_framework_survives_leader_failover() {
    let python = mesos_clients_python();
    let mut g = Group::start();
    let leader = g.wait_leader();
    wait_for("the agent to register", Duration::from_secs(30), || {
        g.connected_agents(leader) == 1
    });
    let follower = (0..3).find(|&i| i != leader).expect("a follower");

    // A follower sends SUBSCRIBE to the leader.
    let body =
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"nobody","name":"x"}}}"#;
    let (code, headers, _) = request(
        &g.addr(follower),
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(code, 307);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("//{}/api/v1/scheduler", g.addr(leader)).as_str())
    );

    // pymesos is pointed at the follower and follows the redirect.
    let run = Script::start(
        g.dir.path(),
        &python,
        "pymesos_failover.py",
        &[&g.addr(follower)],
    );
    wait_for("the task to run", Duration::from_secs(60), || {
        run.steps()
            .iter()
            .any(|s| s["step"] == "state" && s["state"] == "TASK_RUNNING")
    });
    let subscribed = run.step("subscribed").expect("subscribed");
    assert_eq!(subscribed["master"], g.addr(leader), "{subscribed}");

    // Kill the leader; a supervisor would restart it, and so does this
    // test once a new leader is elected: pymesos reconnects to the address
    // it last used (there is no ZooKeeper to tell it otherwise) and is
    // redirected from there.
    if let Some(p) = g.masters[leader].as_mut() {
        p.kill9();
    }
    g.masters[leader] = None;
    let new_leader = g.wait_leader();
    assert_ne!(new_leader, leader);
    g.start_master(leader);

    let steps = run.wait_ok(Duration::from_secs(180));
    let last = steps.last().expect("steps");
    assert_eq!(last["step"], "finished", "{steps:?}");
    assert_eq!(last["reregistered"], true, "{steps:?}");
    assert_eq!(last["master"], g.addr(new_leader), "{steps:?}");
    assert!(
        last["states"]
            .as_array()
            .is_some_and(|s| s.last() == Some(&serde_json::json!("TASK_FINISHED"))),
        "{steps:?}"
    );
}

#[test]
fn unacknowledged_updates_are_sent_again() {
    let c = Cluster::start(RESOURCES, &[]);
    let addr = c.master_addr();
    let mut sub = RawSubscription::open(&addr);
    let offer = loop {
        let ev = sub.next_record();
        if ev["type"] == "OFFERS" {
            break ev["offers"]["offers"][0].clone();
        }
    };
    let launch = serde_json::json!({"type": "ACCEPT",
        "framework_id": {"value": sub.framework_id},
        "accept": {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH",
        "launch": {"task_infos": [{"name": "s", "task_id": {"value": "s1"},
        "agent_id": offer["agent_id"],
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
        "command": {"value": "sleep 60"}}]}}]}});
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            ("Content-Type", "application/json"),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        launch.to_string().as_bytes(),
    );
    assert_eq!(code, 202, "{body}");
    // The first update that needs an acknowledgement, never acknowledged:
    // it comes again, with the same uuid, as in Mesos.
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the update was not sent again");
        let ev = sub.next_record();
        if ev["type"] != "UPDATE" {
            continue;
        }
        let st = ev["update"]["status"].clone();
        let Some(uuid) = st["uuid"].as_str().map(str::to_string) else {
            continue;
        };
        match &first {
            None => first = Some((uuid, st["state"].clone())),
            Some((u, state)) if *u == uuid => {
                assert_eq!(st["state"], *state);
                break;
            }
            Some(_) => {}
        }
    }
}

#[test]
fn subscribe_waits_for_an_election_then_answers_503() {
    let mut g = Group::start();
    let leader = g.wait_leader();
    // Leave one master: it can never win an election alone.
    let survivor = (0..3).find(|&i| i != leader).expect("a follower");
    for i in (0..3).filter(|&i| i != survivor) {
        if let Some(p) = g.masters[i].as_mut() {
            p.kill9();
        }
        g.masters[i] = None;
    }
    let addr = g.addr(survivor);
    wait_for(
        "the survivor to know no leader",
        Duration::from_secs(30),
        || try_request(&addr, "/master/redirect").is_some_and(|(code, _, _)| code == 503),
    );
    let body =
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"nobody","name":"x"}}}"#;
    let asked = Instant::now();
    let (code, _, text) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let held = asked.elapsed();
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("no leading master"), "{text}");
    // Held for the election rather than answered at once (the wait is 5 s;
    // a lower bound only, so a slow machine cannot fail it).
    assert!(held >= Duration::from_secs(4), "answered after {held:?}");
}

/// With tokens and ACLs on, the Mesos API makes the checks the gRPC
/// scheduler service makes: no token is 401; a principal the ACLs do not
/// let register in a role is 403, naming principal, action and role; a
/// framework is acted for only by the principal that registered it (403
/// for another, even one holding its stream id); and calls over a
/// principal's rate limit get 429 with `Retry-After`.
#[test]
fn the_mesos_api_checks_tokens_acls_owners_and_rate_limits() {
    const T: Duration = Duration::from_secs(30);
    let dir = cluster_dir();
    let addr = format!("127.0.0.1:{}", free_port());
    let acls = dir.path().join("acls.json");
    std::fs::write(
        &acls,
        r#"{
  "register_frameworks": [
    {"principals": ["alice"], "roles": ["eng"]},
    {"principals": ["bob"], "roles": ["ops"]}
  ],
  "run_tasks": [{"principals": ["alice", "bob"], "users": "ANY"}],
  "create_tokens": [{"principals": ["admin"]}],
  "manage_acls": [{"principals": ["admin"]}]
}"#,
    )
    .expect("acls");
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"principals": {"alice": {"calls_per_sec": 0.2, "burst": 3}}}"#,
    )
    .expect("limits");
    let admin_file = dir.path().join("admin.token");
    let flags: Vec<String> = vec![
        "--acls".into(),
        acls.display().to_string(),
        "--rate-limits".into(),
        limits.display().to_string(),
    ];
    let (_master, _) = start_master_with_admin(dir.path(), &addr, &flags);
    let admin = admin_file.display().to_string();
    let token = |who: &str| {
        let mut made = None;
        wait_for(&format!("a token for {who}"), T, || {
            let out = mezz(
                &[
                    "token",
                    "create",
                    who,
                    "--master",
                    &addr,
                    "--credentials",
                    &admin,
                ],
                T,
            );
            made = Some(text(&out.stdout).trim().to_string());
            out.status.success()
        });
        format!("Bearer {}", made.expect("a token"))
    };
    let (alice, bob, carol) = (token("alice"), token("bob"), token("carol"));
    let json = ("Content-Type", "application/json");
    let subscribe = |role: &str, id: Option<&str>| {
        let id = id.map_or(String::new(), |i| format!(r#","id":{{"value":"{i}"}}"#));
        format!(
            r#"{{"type":"SUBSCRIBE","subscribe":{{"framework_info":{{"user":"nobody","name":"m","roles":["{role}"],"capabilities":[{{"type":"MULTI_ROLE"}}]{id}}}}}}}"#
        )
    };

    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json],
        subscribe("eng", None).as_bytes(),
    );
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json, ("Authorization", &carol)],
        subscribe("eng", None).as_bytes(),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("carol") && body.contains("register_frameworks") && body.contains("eng"),
        "{body}"
    );

    let mut sub = RawSubscription::start_with(
        &addr,
        "application/json",
        subscribe("eng", None).as_bytes(),
        &[("Authorization", &alice)],
    );
    let first = sub.next_record();
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");
    let fid = first["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("framework id")
        .to_string();

    // Bob may register in ops, but not take over alice's framework, nor act
    // for it with its stream id.
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json, ("Authorization", &bob)],
        subscribe("ops", Some(&fid)).as_bytes(),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("alice"), "{body}");
    let decline = format!(
        r#"{{"type":"DECLINE","framework_id":{{"value":"{fid}"}},"decline":{{"offer_ids":[]}}}}"#
    );
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            json,
            ("Authorization", &bob),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        decline.as_bytes(),
    );
    assert_eq!(code, 403, "{body}");

    // Alice's own calls pass until her bucket (burst 3, one SUBSCRIBE
    // spent) is empty; then 429 with a Retry-After.
    let mut answers = vec![];
    let revive = format!(r#"{{"type":"REVIVE","framework_id":{{"value":"{fid}"}}}}"#);
    for _ in 0..6 {
        let (code, headers, body) = request(
            &addr,
            "POST",
            "/api/v1/scheduler",
            &[
                json,
                ("Authorization", &alice),
                ("Mesos-Stream-Id", &sub.stream_id),
            ],
            revive.as_bytes(),
        );
        answers.push((
            code,
            header(&headers, "retry-after").map(str::to_string),
            body,
        ));
    }
    assert_eq!(answers[0].0, 202, "{answers:?}");
    let limited = answers
        .iter()
        .find(|(code, _, _)| *code == 429)
        .unwrap_or_else(|| panic!("no call was rate limited: {answers:?}"));
    assert!(
        limited
            .1
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{answers:?}"
    );
    assert!(limited.2.contains("alice"), "{answers:?}");
}
