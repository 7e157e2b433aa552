//! `mezz job` beyond one task per attempt, against real processes: what
//! an attempt used of its GPUs, and training jobs (`kind: tensorflow`,
//! `kind: pytorch`) whose attempts are gangs run by the training
//! framework, on two agents, with retries, logs, dependencies and kills.

mod common;

use std::time::Duration;

use common::jobs::*;
use common::*;

const T: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root and cgroups"]
fn an_attempt_keeps_the_gpu_use_of_its_task_and_cpu_work_has_none() {
    need_root_cgroups();
    // One agent with two fake GPUs: each reports its use through a file,
    // as NVML would. GPU 0 is busier than GPU 1.
    let c = Cluster::start_with_agent_args(
        "cpus:4;mem:4096;disk:1000;ports:[31000-31009]",
        &["--fake-gpus", "2"],
    );
    let dev = c.agent_work_dir(0).join("dev");
    std::fs::write(dev.join("nvidia0.usage"), "70 1024\n").expect("usage file");
    std::fs::write(dev.join("nvidia1.usage"), "30 512\n").expect("usage file");
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let out = submit(
        &c,
        work.path(),
        "both",
        "kind: command\nname: on-gpus\ncpus: 0.5\nmem: 64\ngpus: 2\ncommand: sleep 1\n\
         ---\n\
         kind: command\nname: on-cpus\ncpus: 0.5\nmem: 64\ncommand: sleep 1\n",
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let gpu = show(&c, "on-gpus");
    let a = &gpu["attempts"][0];
    // The mean of its two GPUs, and the memory they held together.
    assert_eq!(a["gpu_utilization_pct"].as_f64(), Some(50.0), "{gpu}");
    assert_eq!(a["gpu_peak_memory_mb"].as_u64(), Some(1536), "{gpu}");
    let table = text(&sub(&c, "job", "show", &["on-gpus"]).stdout);
    assert!(
        table.contains("GPU USE") && table.contains("50% 1536MB"),
        "{table}"
    );
    let page = http_get(&c.master_addr(), "/jobs/on-gpus").map(|(_, b)| b);
    assert!(
        page.as_deref().is_some_and(|p| p.contains("50% 1536MB")),
        "{page:?}"
    );
    // CPU work on the GPU agent held no GPU, so it says nothing of them.
    let cpu = show(&c, "on-cpus");
    assert_eq!(cpu["state"], "SUCCEEDED", "{cpu}");
    assert!(cpu["attempts"][0]["gpu_utilization_pct"].is_null(), "{cpu}");
}

/// The tasks in `/api/state` (ended ones included) whose name starts
/// with `prefix`, by name.
fn tasks_named(c: &Cluster, prefix: &str) -> Vec<serde_json::Value> {
    let mut found: Vec<serde_json::Value> = c.state()["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect();
    found.sort_by_key(|t| t["name"].as_str().unwrap_or("").to_string());
    found
}

#[test]
fn a_training_job_runs_as_a_gang_on_two_agents_retries_whole_and_feeds_a_dag() {
    // Two agents of one CPU: three replicas of half a CPU need both.
    let mut c = Cluster::start_with_agent_args("cpus:1;mem:1024;disk:1000", ROOT_TASKS);
    c.add_agent_with(ROOT_TASKS);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let marker = work.path().join("failed-once");
    // worker/1 fails the first attempt; the retry runs the whole gang
    // again, and then the job after it runs. Without a chief, the job
    // succeeds when every worker did.
    let job = format!(
        "kind: tensorflow\nname: train\ncpus: 0.5\nmem: 64\nretries: 1\nbackoff: 1s\n\
         command: 'echo \"$MEZZ_TF_REPLICA TF_CONFIG=$TF_CONFIG\"; \
         if [ \"$MEZZ_TF_REPLICA\" = worker/1 ] && [ ! -e {m} ]; then touch {m}; exit 3; fi'\n\
         tensorflow:\n  worker:\n    count: 3\n\
         ---\n\
         kind: command\nname: report\ncpus: 0.1\nmem: 32\nafter: [train]\ncommand: echo reported\n",
        m = marker.display()
    );
    let out = submit(&c, work.path(), "train", &job);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    let shown = show(&c, "train");
    assert_eq!(shown["state"], "SUCCEEDED", "{shown}");
    assert_eq!(shown["kind"], "tensorflow", "{shown}");
    let attempts = shown["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{shown}");
    assert_eq!(attempts[0]["task_state"], "TASK_FAILED", "{shown}");
    assert!(
        attempts[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("worker/1")),
        "the failure names the replica: {shown}"
    );
    assert_eq!(attempts[1]["exit_code"], 0, "{shown}");
    assert!(
        attempts[1]["agent"].as_str().is_some_and(|a| !a.is_empty()),
        "{shown}"
    );
    // Each attempt was a whole gang, spread over both agents, named after
    // the attempt.
    for attempt in ["train.1", "train.2"] {
        let tasks = tasks_named(&c, &format!("{attempt}/"));
        let names: Vec<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                format!("{attempt}/worker/0"),
                format!("{attempt}/worker/1"),
                format!("{attempt}/worker/2")
            ],
            "{tasks:?}"
        );
        let agents: std::collections::BTreeSet<&str> = tasks
            .iter()
            .filter_map(|t| t["agent_id"].as_str())
            .collect();
        assert_eq!(agents.len(), 2, "the gang spans both agents: {tasks:?}");
    }
    // The job's output is its main replica's (worker 0 without a chief),
    // with the cluster it was told.
    let logs = sub(&c, "job", "logs", &["train"]);
    let logs = text(&logs.stdout);
    assert!(logs.starts_with("worker/0 TF_CONFIG="), "{logs}");
    let config: serde_json::Value =
        serde_json::from_str(logs.trim().split_once('=').expect("=").1).expect("TF_CONFIG");
    assert_eq!(
        config["cluster"]["worker"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(config["task"]["index"], 0, "{config}");
    // The job after it ran once it succeeded.
    let report = show(&c, "report");
    assert_eq!(report["state"], "SUCCEEDED", "{report}");
    assert!(c.active_tasks().is_empty(), "{:?}", c.active_tasks());
}

#[test]
fn killing_a_pytorch_job_kills_its_whole_gang() {
    let c = Cluster::start_with_agent_args("cpus:2;mem:1024;disk:1000", ROOT_TASKS);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let path = work.path().join("ddp.yaml");
    std::fs::write(
        &path,
        "kind: pytorch\nname: ddp\ncpus: 0.5\nmem: 64\nretries: 3\n\
         command: 'echo \"rank $RANK of $WORLD_SIZE at $MASTER_ADDR\"; exec sleep 300'\n\
         tensorflow:\n  chief: {}\n  worker:\n    count: 1\n",
    )
    .expect("job file");
    let out = sub(&c, "job", "submit", &[path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("both replicas to run", T, || {
        tasks_named(&c, "ddp.1/")
            .iter()
            .filter(|t| t["state"] == "RUNNING")
            .count()
            == 2
    });
    wait_for("the attempt to be RUNNING on an agent", T, || {
        show(&c, "ddp")["attempts"][0]["agent"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    });
    let logs = text(&sub(&c, "job", "logs", &["ddp"]).stdout);
    assert!(logs.contains("rank 0 of 2 at 127.0.0.1"), "{logs}");
    let out = sub(&c, "job", "kill", &["ddp"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("the job to end KILLED", T, || {
        show(&c, "ddp")["state"] == "KILLED"
    });
    let states: Vec<String> = tasks_named(&c, "ddp.")
        .iter()
        .map(|t| t["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["KILLED", "KILLED"], "no retry after a kill");
    assert!(c.active_tasks().is_empty());
}

#[test]
fn job_files_of_other_frameworks_are_checked_like_their_flags() {
    let c = Cluster::start("cpus:2;mem:4096;disk:1000", &[]);
    let work = shared_dir();
    let check = |name: &str, body: &str| {
        let path = work.path().join(format!("{name}.yaml"));
        std::fs::write(&path, body).expect("job file");
        let out = sub(&c, "job", "check", &[path.to_str().expect("utf-8")]);
        (out.status.code(), text(&out.stderr))
    };
    let (code, err) = check(
        "ps",
        "kind: pytorch\nname: p\ncommand: x\ntensorflow:\n  ps:\n    count: 1\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`tensorflow`") && err.contains("not ps"),
        "{err}"
    );
    let (code, err) = check(
        "typo",
        "kind: tensorflow\nname: t\ncommand: x\ntensorflow:\n  wokrer:\n    count: 2\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("wokrer"), "{err}");
    let (code, err) = check(
        "big",
        "kind: tensorflow\nname: t\ncommand: x\ntensorflow:\n  worker:\n    count: 2\n    cpus: 64\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("can never run"), "{err}");
    let (code, err) = check(
        "misplaced",
        "kind: command\nname: t\ncommand: x\ntensorflow:\n  worker: {}\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("belongs to kinds tensorflow and pytorch"),
        "{err}"
    );
    let (code, err) = check("serve", "kind: serve\nname: s\nserve:\n  replicas: 2\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`command` is missing"), "{err}");
    let (code, err) = check(
        "nb",
        "kind: jupyter\nname: nb\njupyter:\n  python: /bin/false\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/bin/false has no Jupyter server"), "{err}");
    let (code, err) = check(
        "etl",
        "kind: spark\nname: etl\nspark:\n  app: /no/such/etl.py\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/no/such/etl.py"), "{err}");
    assert!(
        sub(&c, "job", "list", &["--json"]).stdout.len() < 40,
        "nothing stored"
    );
}

/// The state directories of the serving and Jupyter frameworks that the
/// jobs daemon starts for the test (through `$MEZZ_SERVE_STATE` and
/// `$MEZZ_JUPYTER_STATE`); dropping it kills their daemons and the serving
/// proxy, which would otherwise outlive the test.
struct ServiceStates {
    dir: tempfile::TempDir,
}

impl ServiceStates {
    fn new() -> ServiceStates {
        ServiceStates {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn serve(&self) -> std::path::PathBuf {
        self.dir.path().join("serve")
    }

    fn jupyter(&self) -> std::path::PathBuf {
        self.dir.path().join("jupyter")
    }

    /// `mezz ARGS` with the test's state directories and no other master.
    fn mezz(&self, args: &[&str], timeout: Duration) -> std::process::Output {
        let mut child = std::process::Command::new(MEZZ)
            .args(args)
            .env_remove("MEZZ_MASTER")
            .env("MEZZ_SERVE_STATE", self.serve())
            .env("MEZZ_JUPYTER_STATE", self.jupyter())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn mezz");
        let deadline = std::time::Instant::now() + timeout;
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("mezz {args:?} did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    }
}

impl Drop for ServiceStates {
    fn drop(&mut self) {
        for dir in [self.serve(), self.jupyter()] {
            for file in ["daemon.json", "proxy.json"] {
                let pid = std::fs::read_to_string(dir.join(file))
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| v["pid"].as_i64());
                if let Some(pid) = pid.filter(|p| *p > 1) {
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL);
                    }
                }
            }
            if std::thread::panicking() {
                let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
                eprintln!("---- {} ----\n{log}", dir.display());
            }
        }
    }
}

#[test]
fn a_served_job_deploys_answers_through_its_proxy_and_a_kill_removes_it() {
    let python = std::env::var("MEZZ_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let model = format!("{}/tests/serving/model.py", env!("CARGO_MANIFEST_DIR"));
    let p = consecutive_free_ports(10);
    let c = Cluster::start_with_agent_args(
        &format!("cpus:2;mem:2048;disk:1000;ports:[{p}-{}]", p + 9),
        ROOT_TASKS,
    );
    let _daemon = JobsDaemon::of(&c.master_addr());
    let states = ServiceStates::new();
    let addr = c.master_addr();
    let work = shared_dir();
    let path = work.path().join("model.yaml");
    std::fs::write(
        &path,
        format!(
            "kind: serve\nname: model.v1\ncpus: 0.2\nmem: 64\nenv:\n  VERSION: v1\n\
             command: exec {python} {model} $VERSION\nserve:\n  replicas: 2\n  health_grace: 30s\n"
        ),
    )
    .expect("job file");
    let out = states.mezz(
        &[
            "job",
            "submit",
            "--master",
            &addr,
            path.to_str().expect("utf-8"),
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // RUNNING once both replicas are healthy behind the proxy.
    wait_for("the deployment to be up", Duration::from_secs(120), || {
        show(&c, "model.v1")["attempts"][0]["agent"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    });
    let shown = states.mezz(
        &["serve", "show", "--master", &addr, "model-v1", "--json"],
        T,
    );
    let service: serde_json::Value = serde_json::from_slice(&shown.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&shown.stderr)));
    assert_eq!(service["healthy"], 2, "{service}");
    let url = service["url"].as_str().expect("the proxy's URL");
    let proxy = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (code, body) = http_get(&proxy, "/predict").expect("an answer through the proxy");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"v1\""),
        "the job's env reached the replica: {body}"
    );
    // Killing the job removes the deployment.
    let out = sub(&c, "job", "kill", &["model.v1"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("the job to end KILLED", T, || {
        show(&c, "model.v1")["state"] == "KILLED"
    });
    let ls = states.mezz(&["serve", "ls", "--master", &addr, "--json"], T);
    assert_eq!(text(&ls.stdout).trim(), "[]", "{}", text(&ls.stderr));
    wait_for("no replica to be left", T, || c.active_tasks().is_empty());
}

#[test]
#[ignore = "needs the test Python with Jupyter"]
fn a_notebook_job_runs_until_its_notebook_is_stopped() {
    let python = need_python("jupyter_server, ipykernel");
    let p = consecutive_free_ports(10);
    let c = Cluster::start_with_agent_args(
        &format!("cpus:2;mem:4096;disk:1000;ports:[{p}-{}]", p + 9),
        ROOT_TASKS,
    );
    let _daemon = JobsDaemon::of(&c.master_addr());
    let states = ServiceStates::new();
    let addr = c.master_addr();
    let work = shared_dir();
    let notebooks = work.path().join("notebooks");
    let path = work.path().join("nb.yaml");
    std::fs::write(
        &path,
        format!(
            "kind: jupyter\nname: explore\ncpus: 0.5\nmem: 512\n\
             jupyter:\n  python: {python}\n  notebook_dir: {}\n",
            notebooks.display()
        ),
    )
    .expect("job file");
    let out = states.mezz(
        &[
            "job",
            "submit",
            "--master",
            &addr,
            path.to_str().expect("utf-8"),
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("the notebook to answer", Duration::from_secs(300), || {
        show(&c, "explore")["state"] == "RUNNING"
            && show(&c, "explore")["attempts"][0]["agent"]
                .as_str()
                .is_some_and(|a| !a.is_empty())
    });
    // The notebook is the Jupyter framework's, under the job's name.
    let url = states.mezz(&["jupyter", "url", "--master", &addr, "explore"], T);
    let url = text(&url.stdout).trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("token="),
        "{url}"
    );
    let rest = url.trim_start_matches("http://");
    let (host, path_q) = rest.split_at(rest.find('/').expect("a path"));
    let token = path_q.split("token=").nth(1).expect("token");
    let (code, body) =
        http_get(host, &format!("/api/status?token={token}")).expect("the server answers");
    assert_eq!(code, 200, "{body}");
    // Stopped with its own command, the notebook ends the job's attempt.
    let out = states.mezz(&["jupyter", "stop", "--master", &addr, "explore"], T);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("the job to end", T, || {
        show(&c, "explore")["state"] == "SUCCEEDED"
    });
    let shown = show(&c, "explore");
    assert!(
        shown["attempts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the notebook stopped")),
        "{shown}"
    );
    wait_for("nothing to be left", T, || c.active_tasks().is_empty());
}

#[test]
fn the_tf_and_serve_flags_print_the_job_file_they_stand_for() {
    let c = Cluster::start_with_agent_args("cpus:2;mem:1024;disk:1000", ROOT_TASKS);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let addr = c.master_addr();
    let work = shared_dir();
    // `mezz tf run`'s flags, as a job file: submitted, it runs the gang.
    let out = mezz(
        &[
            "tf",
            "run",
            "--master",
            &addr,
            "--print-job",
            "--name",
            "gang",
            "--workers",
            "2",
            "--cpus",
            "0.5",
            "--mem",
            "64",
            "--restart",
            "on-failure:1",
            "--",
            "echo",
            "hi from",
            "$MEZZ_TF_REPLICA",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let file: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a job file");
    assert_eq!(file["kind"], "tensorflow", "{file}");
    assert_eq!(file["tensorflow"]["worker"]["count"], 2, "{file}");
    assert_eq!(file["tensorflow"]["restart"], "on-failure:1", "{file}");
    assert!(
        c.state()["tasks"].as_array().is_none_or(|t| t.is_empty()),
        "ran nothing"
    );
    let path = work.path().join("gang.json");
    std::fs::write(&path, &out.stdout).expect("job file");
    let out = sub(
        &c,
        "job",
        "submit",
        &["--wait", "--print-json", path.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // Several arguments run as they are, as `mezz tf run` runs them: each
    // kept whole, none expanded by a shell.
    let logs = text(&sub(&c, "job", "logs", &["gang"]).stdout);
    assert_eq!(logs.trim(), "hi from $MEZZ_TF_REPLICA", "{logs}");

    // `mezz serve deploy`'s flags, as a job file the jobs framework takes.
    let out = mezz(
        &[
            "serve",
            "deploy",
            "--master",
            &addr,
            "--print-job",
            "echo-svc",
            "--replicas",
            "2",
            "--mem",
            "64",
            "--",
            "python3 -m http.server $PORT",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let path = work.path().join("svc.json");
    std::fs::write(&path, &out.stdout).expect("job file");
    let out = sub(&c, "job", "check", &[path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(checked["kind"], "serve", "{checked}");
    assert_eq!(checked["serve"]["replicas"], 2, "{checked}");
    assert_eq!(
        checked["command"], "python3 -m http.server $PORT",
        "{checked}"
    );
}
