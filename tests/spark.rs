//! `mezz spark` against real `mezz` processes and real Spark (the pyspark
//! package of the test Python, on Java 17 or 21): a PySpark application on
//! executors of two agents, a failing one, Ctrl-C, a killed worker that is
//! replaced, bad input refused before anything is launched, a submitter
//! that dies (the jobs framework keeps the application), and the same
//! application as a job file (`kind: spark`) with a job waiting for it. Spark
//! JVMs are slow to start on a small machine, so the tests that start
//! Spark run one at a time, with generous deadlines.
//!
//! Every Spark daemon binds 127.0.0.1 (the agents' advertised host) and
//! the ports of its offer; each agent here offers a range of ports found
//! free, so nothing uses Spark's fixed default ports.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// Tests that start Spark JVMs take turns.
static SPARK: Mutex<()> = Mutex::new(());

/// How long one application may take, start to end, on a loaded 2-core
/// machine where each JVM takes many seconds to start.
const APP_DEADLINE: Duration = Duration::from_secs(420);

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/spark")
        .join(name)
        .display()
        .to_string()
}

/// Whether `java -version` says 17 or 21.
fn java_ok() -> bool {
    Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| {
            let t = String::from_utf8_lossy(&o.stderr);
            t.contains("version \"17") || t.contains("version \"21")
        })
}

/// The Python with pyspark (see `need_python`), with Java 17 or 21 on
/// PATH.
fn spark_python() -> String {
    let python = need_python("pyspark");
    assert!(
        java_ok(),
        "the Spark tests need Java 17 or 21 on PATH (apt-get install openjdk-17-jre-headless)"
    );
    python
}

/// A master and two agents, each offering its own range of free ports.
fn two_agents() -> Cluster {
    let ports = |p: u16| format!("cpus:4;mem:6144;disk:2000;ports:[{p}-{}]", p + 99);
    // Tasks run the test's Python and Spark, which may live where only
    // root can reach them.
    // One free run of 200 ports: agent i offers the i-th block of 100 of
    // it (see `Cluster::resources_of`). Two runs looked for apart could
    // overlap, since offered ports are not held until a task binds them.
    let mut c = Cluster::start_with_agent_args(&ports(consecutive_free_ports(200)), ROOT_TASKS);
    c.add_agent_with(ROOT_TASKS);
    c
}

/// `mezz spark submit …` in the background, its output in files. The jobs
/// daemon it starts (the application runs there) is stopped with it.
struct Submit {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    daemon: JobsDaemon,
}

impl Submit {
    fn start(c: &Cluster, python: &str, args: &[&str]) -> Submit {
        let out = c.dir.path().join(format!("submit-{}.out", free_port()));
        let err = out.with_extension("err");
        let child = Command::new(MEZZ)
            .args(["spark", "submit", "--master", &c.master_addr()])
            .args(["--python", python])
            .args(args)
            .env_remove("MEZZ_MASTER")
            .env_remove("SPARK_HOME")
            .env_remove("PYSPARK_PYTHON")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&err).expect("err file"))
            .spawn()
            .expect("spawn mezz spark submit");
        Submit {
            child,
            out,
            err,
            daemon: JobsDaemon::of(&c.master_addr()),
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for `what` to appear on stdout, while the command runs.
    fn wait_stdout(&mut self, what: &str) {
        let deadline = Instant::now() + APP_DEADLINE;
        while !self.stdout().contains(what) {
            if let Some(s) = self.child.try_wait().expect("wait") {
                panic!(
                    "mezz spark submit exited ({s}) before printing {what:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within {APP_DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the exit; returns (code, stdout, stderr).
    fn wait(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + APP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), self.stdout(), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "mezz spark submit did not finish within {APP_DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Submit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose working directory is under `dir` (tasks' sandboxes),
/// as "pid: command line".
fn processes_under(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)))
        .map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            format!("{}: {}", e.file_name().to_string_lossy(), cmd)
        })
        .collect()
}

/// Nothing of any application is left: no active task, no process in a
/// sandbox.
fn assert_nothing_left(c: &Cluster) {
    let active = c.active_tasks();
    assert!(active.is_empty(), "tasks left: {active:#?}");
    wait_for(
        "every process of the application to exit",
        Duration::from_secs(30),
        || processes_under(c.dir.path()).is_empty(),
    );
}

fn tasks_of(c: &Cluster, app_prefix: &str) -> Vec<serde_json::Value> {
    c.state()["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["id"].as_str().is_some_and(|n| n.starts_with(app_prefix)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs pyspark and Java 17 or 21"]
fn a_pyspark_application_runs_on_executors_of_both_agents_and_leaves_nothing() {
    let python = spark_python();
    let _turn = SPARK.lock().unwrap_or_else(|p| p.into_inner());
    let c = two_agents();
    let n = "200000";
    let app = Submit::start(
        &c,
        &python,
        &[
            "--executors",
            "2",
            "--executor-memory",
            "512m",
            "--driver-memory",
            "512m",
            "--name",
            "squares",
            &script("sum_squares.py"),
            n,
            "2",
        ],
    );
    let (code, out, err) = app.wait();
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    // The closed forms over 1..200000.
    assert!(
        out.contains("sum=20000100000 sum_of_squares=2666686666700000 multiples_of_7=28571"),
        "{out}"
    );
    assert!(out.contains("executors registered: 2"), "{out}");
    // Partitions ran in executors under each agent's work directory.
    let ran: Vec<&str> = out.lines().filter(|l| l.starts_with("ran in ")).collect();
    for i in 0..2 {
        let dir = c.agent_work_dir(i).display().to_string();
        assert!(
            ran.iter().any(|l| l.contains(&dir)),
            "no executor ran under agent {i} ({dir}): {ran:?}"
        );
    }
    // The driver's JVM keeps its scratch files in its sandbox, which the
    // agent cleans, not in the shared /tmp.
    let tmp = out
        .lines()
        .find_map(|l| l.strip_prefix("driver tmpdir "))
        .unwrap_or_else(|| panic!("no driver tmpdir line: {out}"));
    assert!(
        (0..2).any(|i| tmp.starts_with(&c.agent_work_dir(i).display().to_string())),
        "the driver's java.io.tmpdir is {tmp}, outside every agent's work directory"
    );
    // The UIs were printed and published: the master's on its task, the
    // application's on the driver's.
    assert!(err.contains("master UI http://127.0.0.1:"), "{err}");
    assert!(err.contains("application UI http://127.0.0.1:"), "{err}");
    let tasks = tasks_of(&c, "squares-");
    assert_eq!(tasks.len(), 4, "master, 2 workers, driver: {tasks:#?}");
    for t in &tasks {
        let id = t["id"].as_str().unwrap_or_default();
        if id.ends_with(".master") || id.ends_with(".driver") {
            let url = t["labels"]["url"].as_str().unwrap_or_default();
            assert!(url.starts_with("http://127.0.0.1:"), "{id}: {t}");
        }
    }
    let frameworks = c.state()["frameworks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let spark_framework = frameworks.iter().find(|f| {
        f["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("mezz-spark squares-"))
    });
    assert!(
        spark_framework.is_none(),
        "the framework is gone: {frameworks:#?}"
    );
    assert_nothing_left(&c);
}

#[test]
#[ignore = "needs pyspark and Java 17 or 21"]
fn a_failing_application_exits_non_zero_with_sparks_error() {
    let python = spark_python();
    let _turn = SPARK.lock().unwrap_or_else(|p| p.into_inner());
    let c = two_agents();
    let app = Submit::start(
        &c,
        &python,
        &[
            "--executors",
            "1",
            "--executor-memory",
            "512m",
            "--driver-memory",
            "512m",
            &script("fails.py"),
        ],
    );
    let (code, out, err) = app.wait();
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        err.contains("deliberate failure on element 3"),
        "Spark's error reaches the terminal:\n{err}"
    );
    assert!(!out.contains("unreachable"), "{out}");
    assert!(err.contains("the driver FAILED"), "{err}");
    assert_nothing_left(&c);
}

#[test]
#[ignore = "needs pyspark and Java 17 or 21"]
fn ctrl_c_kills_the_whole_application() {
    let python = spark_python();
    let _turn = SPARK.lock().unwrap_or_else(|p| p.into_inner());
    let c = two_agents();
    let mut app = Submit::start(
        &c,
        &python,
        &[
            "--executors",
            "2",
            "--executor-memory",
            "512m",
            "--driver-memory",
            "512m",
            "--name",
            "held",
            &script("hold.py"),
            "2",
            "sleep",
        ],
    );
    app.wait_stdout("ready: executors");
    // `mezz spark ls` shows it while it runs.
    let ls = mezz(
        &["spark", "ls", "--master", &c.master_addr()],
        Duration::from_secs(30),
    );
    let listing = text(&ls.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with("held-"))
        .unwrap_or_else(|| {
            panic!(
                "held in `mezz spark ls`:\n{listing}\nstderr: {}",
                text(&ls.stderr)
            )
        });
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["connected", "RUNNING", "2"], "{line}");
    assert!(cols[4].starts_with("http://127.0.0.1:"), "{line}");
    assert_eq!(c.active_tasks().len(), 4);
    // The master's UI is the framework's web UI on the status page.
    let frameworks = c.state()["frameworks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let held = frameworks
        .iter()
        .find(|f| {
            f["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("mezz-spark held-"))
        })
        .expect("the framework");
    assert_eq!(held["webui_url"].as_str(), Some(cols[4]), "{held}");

    unsafe {
        libc::kill(app.child.id() as i32, libc::SIGINT);
    }
    let (code, out, err) = app.wait();
    assert_eq!(code, Some(130), "stdout:\n{out}\nstderr:\n{err}");
    assert_nothing_left(&c);
}

#[test]
#[ignore = "needs pyspark and Java 17 or 21"]
fn a_worker_that_dies_is_replaced_and_the_application_finishes() {
    let python = spark_python();
    let _turn = SPARK.lock().unwrap_or_else(|p| p.into_inner());
    let c = two_agents();
    let mut app = Submit::start(
        &c,
        &python,
        &[
            "--executors",
            "2",
            "--executor-memory",
            "512m",
            "--driver-memory",
            "512m",
            "--name",
            "phoenix",
            &script("hold.py"),
            "2",
            "replace",
            "1000",
        ],
    );
    app.wait_stdout("ready: executors");
    let worker = tasks_of(&c, "phoenix-")
        .into_iter()
        .find(|t| t["id"].as_str().is_some_and(|id| id.contains(".worker.0.")))
        .expect("worker 0");
    let id = worker["id"].as_str().expect("id").to_string();
    // Kill the worker's whole process group (the worker and its
    // executor), as a crash would: not through the framework.
    let pid_file = std::process::Command::new("find")
        .arg(c.dir.path())
        .args(["-path", &format!("*/{id}/*"), "-name", "child.pid"])
        .output()
        .expect("find");
    let path = text(&pid_file.stdout);
    let pid: i32 = std::fs::read_to_string(path.trim())
        .expect("child.pid")
        .trim()
        .parse()
        .expect("pid");
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let (code, out, err) = app.wait();
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("new executor"), "{out}");
    assert!(out.contains("sum=500500"), "{out}");
    assert!(err.contains("launching a new worker/0"), "{err}");
    let replacement = id.rsplit_once('.').map(|(head, _)| format!("{head}.1"));
    assert!(
        tasks_of(&c, "phoenix-")
            .iter()
            .any(|t| Some(t["id"].as_str().unwrap_or_default().to_string()) == replacement),
        "a replacement task {replacement:?}"
    );
    assert_nothing_left(&c);
}

#[test]
fn bad_input_is_refused_before_anything_is_launched() {
    let c = Cluster::start("cpus:2;mem:4096;disk:1000", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Looks like a Spark distribution: enough to get past the search, so
    // the cluster checks come next.
    let home = dir.path().join("spark");
    std::fs::create_dir_all(home.join("bin")).expect("bin");
    std::fs::create_dir_all(home.join("jars")).expect("jars");
    for f in ["bin/spark-class", "bin/spark-submit"] {
        std::fs::write(home.join(f), "#!/bin/sh\nexit 1\n").expect("file");
    }
    let app = dir.path().join("app.py");
    std::fs::write(&app, "print('never runs')\n").expect("app");
    let (home, app) = (home.display().to_string(), app.display().to_string());
    let submit = |extra: &[&str], path: Option<&str>| {
        let mut cmd = Command::new(MEZZ);
        cmd.args(["spark", "submit", "--master", &c.master_addr()])
            .args(extra)
            .env_remove("MEZZ_MASTER")
            .env_remove("SPARK_HOME")
            .env_remove("JAVA_HOME")
            .stdin(Stdio::null());
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let out = cmd.output().expect("run mezz spark submit");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        err
    };
    let err = submit(&["--executors", "0", &app], None);
    assert!(err.contains("--executors 0"), "{err}");
    let err = submit(&["--spark-home", &home, "/no/such/app.py"], None);
    assert!(err.contains("/no/such/app.py"), "{err}");
    let err = submit(&["--size", "huge", &app], None);
    assert!(err.contains("unknown size 'huge'"), "{err}");
    let err = submit(&["--spark-home", "/no/spark", &app], None);
    if java_ok() {
        assert!(
            err.contains("--spark-home /no/spark is not a Spark"),
            "{err}"
        );
        let err = submit(
            &["--spark-home", &home, "--executor-memory", "64g", &app],
            None,
        );
        assert!(err.contains("needs cpus:1;mem:66304"), "{err}");
        assert!(err.contains("the largest agent"), "{err}");
    }
    // Without Java on PATH, Java is what is missing.
    let err = submit(&["--spark-home", &home, &app], Some("/nonexistent"));
    assert!(err.contains("no Java found"), "{err}");
    assert!(err.contains("openjdk-17"), "{err}");
    let frameworks = c.state()["frameworks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(frameworks.is_empty(), "nothing registered: {frameworks:#?}");
}

#[test]
#[ignore = "needs pyspark and Java 17 or 21"]
fn a_submitter_that_dies_leaves_its_application_to_the_jobs_framework() {
    let python = spark_python();
    let _turn = SPARK.lock().unwrap_or_else(|p| p.into_inner());
    let c = two_agents();
    let mut app = Submit::start(
        &c,
        &python,
        &[
            "--executors",
            "1",
            "--executor-memory",
            "512m",
            "--driver-memory",
            "512m",
            "--name",
            "orphan",
            &script("hold.py"),
            "1",
            "sleep",
        ],
    );
    app.wait_stdout("ready: executors");
    assert_eq!(c.active_tasks().len(), 3);
    // No Ctrl-C, no goodbye: the application is a job, and the jobs
    // framework goes on running it.
    app.child.kill().expect("SIGKILL mezz spark submit");
    let _ = app.child.wait();
    let jobs = mezz(
        &["job", "list", "--master", &c.master_addr(), "--json"],
        Duration::from_secs(30),
    );
    let jobs: serde_json::Value = serde_json::from_slice(&jobs.stdout).expect("jobs JSON");
    let job = jobs["jobs"]
        .as_array()
        .and_then(|j| j.first())
        .cloned()
        .expect("the application's job");
    assert!(
        job["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("orphan-")),
        "{job}"
    );
    assert_eq!(job["state"], "RUNNING", "{job}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.active_tasks().len(),
        3,
        "still running after the submitter"
    );
    // The jobs framework dying too takes the application with it: its
    // framework's failover timeout (20 s) expires and the master kills
    // every task.
    app.daemon.kill();
    wait_for(
        "the master to kill the orphaned application",
        Duration::from_secs(120),
        || c.active_tasks().is_empty(),
    );
    assert_nothing_left(&c);
}

#[test]
#[ignore = "needs pyspark and Java 17 or 21"]
fn spark_kill_ends_an_application_by_name() {
    let python = spark_python();
    let _turn = SPARK.lock().unwrap_or_else(|p| p.into_inner());
    let c = two_agents();
    let master = c.master_addr();
    let t = Duration::from_secs(30);
    // An application that is not there: one clear line, nothing killed.
    let out = mezz(&["spark", "kill", "nosuch", "--master", &master], t);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("no Spark application 'nosuch'") && err.trim().lines().count() == 1,
        "{err}"
    );
    let mut app = Submit::start(
        &c,
        &python,
        &[
            "--executors",
            "1",
            "--executor-memory",
            "512m",
            "--driver-memory",
            "512m",
            "--name",
            "victim",
            &script("hold.py"),
            "1",
            "sleep",
        ],
    );
    app.wait_stdout("ready: executors");
    assert_eq!(c.active_tasks().len(), 3);
    // From another terminal, by the name it was submitted with.
    let out = mezz(&["spark", "kill", "victim", "--master", &master], t);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("killing Spark application victim-") && said.contains("3 task(s)"),
        "{said}"
    );
    // The submitter sees its driver killed and says so, non-zero.
    let (code, out, err) = app.wait();
    assert!(
        code.is_some_and(|c| c != 0),
        "a killed application exited {code:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(err.contains("KILLED"), "{err}");
    assert_nothing_left(&c);
}

#[test]
#[ignore = "needs pyspark and Java 17 or 21"]
fn a_spark_job_runs_through_the_jobs_framework_and_what_waits_for_it_follows() {
    let python = spark_python();
    let _turn = SPARK.lock().unwrap_or_else(|p| p.into_inner());
    let c = two_agents();
    let _daemon = JobsDaemon::of(&c.master_addr());
    // The application as a job file: the same request `mezz spark submit`
    // makes of its flags, with retries, history and a job after it.
    let file = c.dir.path().join("squares.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: spark\nname: squares\nretries: 1\n\
             spark:\n  app: {app}\n  args: ['200000', '2']\n  executors: 2\n  \
             executor_memory: 512m\n  driver_memory: 512m\n  python: {python}\n\
             ---\n\
             kind: command\nname: publish\ncpus: 0.1\nmem: 32\nafter: [squares]\ncommand: echo published\n",
            app = script("sum_squares.py"),
        ),
    )
    .expect("job file");
    let out = Command::new(MEZZ)
        .args([
            "job",
            "submit",
            "--master",
            &c.master_addr(),
            "--wait",
            "--print-json",
        ])
        .arg(&file)
        .env_remove("MEZZ_MASTER")
        .env_remove("SPARK_HOME")
        .env_remove("PYSPARK_PYTHON")
        .stdin(Stdio::null())
        .output()
        .expect("run mezz job submit");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The driver's output was streamed (to stderr beside --print-json).
    let sums = "sum=20000100000 sum_of_squares=2666686666700000 multiples_of_7=28571";
    assert!(stderr.contains(sums), "{stderr}");
    let jobs: serde_json::Value = serde_json::from_str(&stdout).expect("jobs JSON");
    let squares = jobs
        .as_array()
        .and_then(|a| a.iter().find(|j| j["name"] == "squares"))
        .cloned()
        .unwrap_or_else(|| jobs.clone());
    assert_eq!(squares["state"], "SUCCEEDED", "{squares}");
    assert_eq!(squares["kind"], "spark", "{squares}");
    assert_eq!(squares["attempts"][0]["exit_code"], 0, "{squares}");
    // The attempt was one application named after it: master, two
    // workers and the driver, with executors under both agents.
    let tasks = tasks_of(&c, "squares.1.");
    assert_eq!(tasks.len(), 4, "{tasks:#?}");
    let agents: std::collections::BTreeSet<&str> = tasks
        .iter()
        .filter_map(|t| t["agent_id"].as_str())
        .collect();
    assert_eq!(agents.len(), 2, "{tasks:#?}");
    // `mezz job logs` shows the driver's output; the job after it ran.
    let addr = c.master_addr();
    let logs = mezz(
        &["job", "logs", "--master", &addr, "squares"],
        Duration::from_secs(30),
    );
    assert!(
        text(&logs.stdout).contains(sums),
        "{}\n{}",
        text(&logs.stdout),
        text(&logs.stderr)
    );
    let publish = mezz(
        &["job", "show", "--master", &addr, "publish", "--json"],
        Duration::from_secs(30),
    );
    let publish: serde_json::Value = serde_json::from_slice(&publish.stdout).expect("JSON");
    assert_eq!(publish["state"], "SUCCEEDED", "{publish}");
    assert_nothing_left(&c);
}
