//! The status page in a real browser: `mezz dev --fake-gpus 2`, a task that
//! prints a known line and holds a GPU, then Debian's headless Chromium
//! opens `/`, follows the links to the task (its output is there) and to its
//! agent (its GPU is there, with its use charted from the fake GPUs' usage
//! files and the held-but-idle one flagged), and saves screenshots. Also:
//! `/metrics` passes a strict Prometheus text parser and exports GPU use.
//!
//! Chromium runs with `--headless --dump-dom` / `--screenshot` on
//! 127.0.0.1 pages only, with background networking off. A plain `cargo
//! test` reports the browser test as ignored (see `common/needs.rs`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);
const LINE: &str = "status-page-e2e: hello from the task";

struct Dev {
    _proc: Proc,
    master: String,
    /// The data dir (`agent-1/` under it is the agent's work dir).
    dir: PathBuf,
}

fn start_dev() -> Dev {
    let port = consecutive_free_ports(2);
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let log = dir.join("dev.log");
    let child = Command::new(MEZZ)
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--fake-gpus",
            "2",
            // Quick enough for a test: two heartbeats (5 s apart) of a
            // GPU doing nothing flag it.
            "--gpu-idle-after",
            "2s",
            "--data-dir",
            dir.join("data").to_str().expect("utf-8 path"),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn mezz dev");
    let proc = Proc {
        name: "dev".into(),
        child,
        log,
    };
    let master = format!("127.0.0.1:{port}");
    wait_for("one connected agent", T, || {
        http_get(&master, "/api/state")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["agents"]
                    .as_array()
                    .map(|a| a.iter().any(|x| x["status"] == "connected"))
            })
            .unwrap_or(false)
    });
    Dev {
        _proc: proc,
        master,
        dir: dir.join("data"),
    }
}

/// Headless Chromium on one loopback URL, as a one-shot command.
struct Browser {
    bin: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn run(&self, url: &str, mode: &[&str]) -> std::process::Output {
        assert!(url.starts_with("http://127.0.0.1:"), "loopback only: {url}");
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--metrics-recording-only",
                "--hide-scrollbars",
                "--window-size=1440,960",
                "--virtual-time-budget=1500",
            ])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(mode)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let deadline = Instant::now() + T;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium did not finish {url} within {T:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("chromium output")
    }

    /// The DOM after the page's scripts ran.
    fn dom(&self, url: &str) -> String {
        let out = self.run(url, &["--dump-dom"]);
        let dom = text(&out.stdout);
        assert!(
            dom.contains("<html"),
            "chromium gave no DOM for {url}: {}",
            text(&out.stderr)
        );
        dom
    }

    fn screenshot(&self, url: &str, to: &Path) {
        let out = self.run(url, &[&format!("--screenshot={}", to.display())]);
        assert!(
            to.metadata().map(|m| m.len() > 1000).unwrap_or(false),
            "no screenshot of {url} at {}: {}",
            to.display(),
            text(&out.stderr)
        );
    }
}

/// Every `href="..."` in a DOM.
fn links(dom: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|h| h.replace("&amp;", "&"))
        .collect()
}

fn follow(links: &[String], pred: impl Fn(&str) -> bool, what: &str) -> String {
    links
        .iter()
        .find(|l| pred(l))
        .cloned()
        .unwrap_or_else(|| panic!("no link to {what} among {links:?}"))
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

#[test]
#[ignore = "needs chromium"]
fn browser_follows_links_to_a_tasks_output_and_its_gpu() {
    let bin = need_chromium();
    let dev = start_dev();
    let out = mezz(
        &[
            "run",
            "--master",
            &dev.master,
            "--detach",
            "--name",
            "status-e2e",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--gpus",
            "1",
            "--",
            "sh",
            "-c",
            &format!("echo '{LINE}'; echo to-stderr >&2; sleep 300"),
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let task_id = text(&out.stdout).trim().to_string();
    wait_for("the task to run", T, || {
        http_get(&dev.master, "/api/state")
            .is_some_and(|(_, b)| b.contains(&task_id) && b.contains("RUNNING"))
    });
    // GPU use: the other fake GPU reports work through its usage file; the
    // task's GPU reports nothing, so it is held and idle.
    let state = |m: &str| -> serde_json::Value {
        http_get(m, "/api/state")
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    };
    let held = state(&dev.master)["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == task_id.as_str()))
        .and_then(|t| t["gpus"][0].as_str().map(String::from))
        .expect("the task holds a GPU");
    let busy = if held == "fake-gpu-0" { 1 } else { 0 };
    std::fs::write(
        dev.dir.join(format!("agent-1/dev/nvidia{busy}.usage")),
        "87 2048\n",
    )
    .expect("write the fake GPU's usage file");
    let busy_id = format!("fake-gpu-{busy}");
    wait_for("GPU use in /api/state, the held GPU idle", T, || {
        let s = state(&dev.master);
        let usage = s["agents"][0]["gpu_usage"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let of = |id: &str| usage.iter().find(|u| u["gpu"] == id).cloned();
        of(&busy_id).is_some_and(|u| u["utilization_pct"] == 87 && u["memory_used_mb"] == 2048)
            && of(&held).is_some_and(|u| u["idle"] == true && u["task_id"] == task_id.as_str())
    });
    let task = state(&dev.master)["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == task_id.as_str()).cloned())
        .expect("the task");
    assert_eq!(task["gpu_usage"][0]["gpu"], held.as_str(), "{task}");
    assert_eq!(task["gpu_usage"][0]["idle"], true, "{task}");
    let agents = mezz(&["agents", "--master", &dev.master], T);
    let agents = text(&agents.stdout);
    assert!(
        agents.contains("GPU USE") && agents.contains("87%") && agents.contains("0%(idle)"),
        "{agents}"
    );

    let base = format!("http://{}", dev.master);
    let browser = Browser {
        bin,
        profile: tempfile::tempdir().expect("profile dir"),
    };
    let art = artifacts();
    eprintln!("status page screenshots go to {}", art.display());

    // Overview → Tasks → the task.
    let overview = browser.dom(&format!("{base}/"));
    assert!(overview.contains("Cluster overview"), "{overview}");
    assert!(overview.contains("GPUs"), "{overview}");
    // No task is labelled as a service replica here (tests/status_services.rs
    // covers services): the section says so.
    assert!(overview.contains("No services are running."), "{overview}");
    let to_services = follow(&links(&overview), |l| l == "/services", "the services");
    let services = browser.dom(&format!("{base}{to_services}"));
    assert!(services.contains("No services are running."), "{services}");
    let to_tasks = follow(&links(&overview), |l| l == "/tasks", "the task list");
    let list = browser.dom(&format!("{base}{to_tasks}"));
    let to_task = follow(
        &links(&list),
        |l| l.starts_with("/tasks/") && l.ends_with(&format!("/{task_id}")),
        "the task",
    );
    let task_url = format!("{base}{to_task}");
    wait_for("the task's line on its page", T, || {
        browser.dom(&task_url).contains(LINE)
    });
    let page = browser.dom(&task_url);
    assert!(page.contains("fake-gpu-") || page.contains("gpu"), "{page}");
    assert!(page.contains("to-stderr"), "stderr is shown too: {page}");

    // The task page → its agent, where the GPU shows who holds it.
    let to_agent = follow(&links(&page), |l| l.starts_with("/agents/"), "the agent");
    let agent_url = format!("{base}{to_agent}");
    let agent = browser.dom(&agent_url);
    let gpu_row = agent
        .split("<tr class=\"gpu\">")
        .skip(1)
        .find(|row| row.contains(&task_id))
        .unwrap_or_else(|| panic!("no GPU row held by {task_id}: {agent}"));
    assert!(gpu_row.contains("fake-gpu-"), "{gpu_row}");
    assert!(
        gpu_row.contains("<svg class=\"spark\"") && gpu_row.contains(">idle</span>"),
        "the held GPU is charted and flagged idle: {gpu_row}"
    );
    let busy_row = agent
        .split("<tr class=\"gpu\">")
        .skip(1)
        .find(|row| row.contains(&busy_id))
        .unwrap_or_else(|| panic!("no row of {busy_id}: {agent}"));
    assert!(
        busy_row.contains("87% · 2048 MB") && !busy_row.contains(">idle<"),
        "{busy_row}"
    );
    assert!(
        page.contains("GPU use"),
        "the task page charts its GPU: {page}"
    );

    // Follow: the file endpoint the page script polls continues at an offset.
    let fid = to_task.split('/').nth(2).expect("framework id in link");
    let (code, body) = http_get(
        &dev.master,
        &format!("/api/tasks/{fid}/{task_id}/files/stdout?offset=0"),
    )
    .expect("file endpoint");
    assert_eq!(code, 200, "{body}");
    let chunk: serde_json::Value = serde_json::from_str(&body).expect("chunk JSON");
    assert_eq!(chunk["data"].as_str(), Some(format!("{LINE}\n").as_str()));
    let next = chunk["next_offset"].as_u64().expect("next_offset");
    let (_, body) = http_get(
        &dev.master,
        &format!("/api/tasks/{fid}/{task_id}/files/stdout?offset={next}"),
    )
    .expect("file endpoint");
    assert!(body.contains("\"data\":\"\""), "nothing new yet: {body}");
    let (code, _) = http_get(
        &dev.master,
        &format!("/api/tasks/{fid}/{task_id}/files/..%2Fetc%2Fpasswd"),
    )
    .expect("file endpoint");
    assert_eq!(code, 400);

    for (name, url) in [
        ("overview", format!("{base}/")),
        ("task", task_url.clone()),
        ("agent", agent_url.clone()),
    ] {
        let to = art.join(format!("{name}.png"));
        browser.screenshot(&url, &to);
        eprintln!("screenshot: {}", to.display());
    }
    if std::env::var_os("MEZZ_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::copy(art.join("overview.png"), &docs).expect("copy screenshot to docs/");
        let gpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page-gpus.png");
        std::fs::copy(art.join("agent.png"), &gpus).expect("copy screenshot to docs/");
    }

    // While the cluster is up: /metrics parses and has what operators need.
    let (code, body) = http_get(&dev.master, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let families = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    for (name, kind) in [
        ("mezz_allocation_cycle_seconds", "histogram"),
        ("mezz_offers_sent_total", "counter"),
        ("mezz_offers_accepted_total", "counter"),
        ("mezz_offers_declined_total", "counter"),
        ("mezz_offers_rescinded_total", "counter"),
        ("mezz_tasks", "gauge"),
        ("mezz_agents", "gauge"),
        ("mezz_frameworks", "gauge"),
        ("mezz_raft_term", "gauge"),
        ("mezz_raft_last_index", "gauge"),
        ("mezz_raft_applied_index", "gauge"),
        ("mezz_master_is_leader", "gauge"),
        ("mezz_grpc_requests_total", "counter"),
        ("mezz_grpc_request_duration_seconds", "histogram"),
        ("mezz_gpu_utilization_percent", "gauge"),
        ("mezz_gpu_memory_used_megabytes", "gauge"),
        ("mezz_gpus_allocated_idle", "gauge"),
    ] {
        assert_eq!(
            families.get(name).map(|f| f.kind.as_str()),
            Some(kind),
            "family {name}"
        );
    }
    let running = &families["mezz_tasks"].samples;
    assert!(
        running.iter().any(
            |s| s.labels.get("state").map(String::as_str) == Some("RUNNING") && s.value >= 1.0
        ),
        "{running:?}"
    );
    assert!(families["mezz_grpc_requests_total"]
        .samples
        .iter()
        .any(|s| s.labels["method"].ends_with("/Subscribe")
            || s.labels["method"].ends_with("/Attach")));
    assert_eq!(families["mezz_master_is_leader"].samples[0].value, 1.0);
    let util = &families["mezz_gpu_utilization_percent"].samples;
    assert!(
        util.iter()
            .any(|s| s.labels.get("gpu") == Some(&busy_id) && s.value == 87.0),
        "{util:?}"
    );
    assert_eq!(families["mezz_gpus_allocated_idle"].samples[0].value, 1.0);
}

#[derive(Debug, Default)]
struct Family {
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One histogram series: (le, cumulative count) pairs and its `_count`.
type Buckets = (Vec<(f64, f64)>, Option<f64>);

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// A strict reader of the Prometheus text format 0.0.4: every sample
/// belongs to a family declared by `# TYPE` before it, names and labels are
/// well-formed, values are floats, no series repeats, and histograms have
/// rising cumulative buckets ending in `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> Result<HashMap<String, Family>, String> {
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if valid_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    if families.contains_key(name) {
                        return Err(at("family declared twice"));
                    }
                    families.insert(
                        name.to_string(),
                        Family {
                            kind: kind.to_string(),
                            samples: Vec::new(),
                        },
                    );
                }
                _ => return Err(at("malformed comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at("value is not a float"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| at("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").ok_or_else(|| at("label"))?;
                    if !valid_name(k) {
                        return Err(at("label name"));
                    }
                    let mut val = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => val.push('\n'),
                                Some((_, c @ ('\\' | '"'))) => val.push(c),
                                _ => return Err(at("bad escape")),
                            },
                            Some((j, '"')) => break j,
                            Some((_, c)) => val.push(c),
                            None => return Err(at("unterminated label value")),
                        }
                    };
                    labels.insert(k.to_string(), val);
                    rest = &after[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(at("metric name"));
        }
        if !seen.insert(series.to_string()) {
            return Err(at("series repeated"));
        }
        let fam_name = if families.get(name).is_some_and(|f| f.kind != "histogram") {
            name
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
                .ok_or_else(|| at("sample before its # TYPE"))?
        };
        families
            .get_mut(fam_name)
            .ok_or_else(|| at("no family"))?
            .samples
            .push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
    }
    for (name, f) in &families {
        if f.kind != "histogram" {
            continue;
        }
        // Group buckets by their labels other than `le`.
        let mut groups: BTreeMap<String, Buckets> = BTreeMap::new();
        for s in &f.samples {
            let mut key = s.labels.clone();
            let le = key.remove("le");
            let key = format!("{key:?}");
            let g = groups.entry(key).or_default();
            if s.name.ends_with("_bucket") {
                let le = le.ok_or(format!("{name}: bucket without le"))?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("{name}: le {le}"))?
                };
                g.0.push((le, s.value));
            } else if s.name.ends_with("_count") {
                g.1 = Some(s.value);
            }
        }
        for (k, (buckets, count)) in groups {
            let rising = buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            let last = buckets.last().ok_or(format!("{name}{k}: no buckets"))?;
            if !rising || last.0 != f64::INFINITY || Some(last.1) != count {
                return Err(format!("{name}{k}: buckets {buckets:?}, count {count:?}"));
            }
        }
    }
    Ok(families)
}
