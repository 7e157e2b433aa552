//! `mezz tf` against real `mezz` processes: TensorFlow MultiWorkerMirrored
//! training on one agent and across two agents of one host, a PyTorch
//! rendezvous across two agents, a parameter-server job's TF_CONFIG, gang
//! placement that waits for the whole job, a gang restart after a worker
//! is killed, start and run deadlines, and GPUs. Only the
//! MultiWorkerMirrored tests import TensorFlow (it is slow to start); the
//! others run plain shell or Python commands.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tf")
        .join(name)
        .display()
        .to_string()
}

/// `mezz tf run …` in the background, its output in files. The jobs
/// daemon it starts (the job runs there) is stopped with it.
struct Job {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _daemon: JobsDaemon,
}

impl Job {
    fn start(c: &Cluster, args: &[&str]) -> Job {
        let out = c.dir.path().join(format!("tf-{}.out", free_port()));
        let err = out.with_extension("err");
        let addr = c.master_addr();
        let child = Command::new(MEZZ)
            .args(["tf", "run", "--master", &addr])
            .args(args)
            .env_remove("MEZZ_MASTER")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&err).expect("err file"))
            .spawn()
            .expect("spawn mezz tf run");
        Job {
            child,
            out,
            err,
            _daemon: JobsDaemon::of(&addr),
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for the exit; returns (code, stdout, stderr).
    fn wait(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), self.stdout(), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "mezz tf run did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tasks_named(c: &Cluster, prefix: &str) -> Vec<serde_json::Value> {
    c.state()["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
#[ignore = "needs TensorFlow and a network namespace (root)"]
fn two_workers_train_with_multi_worker_mirrored_strategy() {
    const NAME: &str = "two_workers_train_with_multi_worker_mirrored_strategy";
    let python = need_python("tensorflow");
    // TensorFlow binds the wildcard address.
    if !private_network(NAME, Duration::from_secs(300), Netns::Needed) {
        return;
    }
    let c = Cluster::start_with_agent_args("cpus:4;mem:8192;disk:1000", ROOT_TASKS);
    let started = Instant::now();
    let train = script("mwms_train.py");
    let job = Job::start(
        &c,
        &[
            "--name",
            "mwms",
            "--workers",
            "2",
            "--cpus",
            "1",
            "--mem",
            "2048",
            "--",
            &python,
            &train,
        ],
    );
    let (code, out, err) = job.wait(Duration::from_secs(150));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let losses: Vec<&str> = lines_with(&out, "final loss")
        .iter()
        .filter_map(|l| l.split("final loss ").nth(1))
        .collect();
    assert_eq!(losses.len(), 2, "both workers report a loss:\n{out}");
    assert_eq!(losses[0], losses[1], "the workers agree:\n{out}");
    assert!(
        lines_with(&out, "[worker/0] final loss").len() == 1,
        "{out}"
    );
    assert!(
        lines_with(&out, "[worker/1] final loss").len() == 1,
        "{out}"
    );
    assert!(c.active_tasks().is_empty(), "no task of the job remains");
    eprintln!("MWMS job took {:?}", started.elapsed());
}

/// The TF_CONFIG a worker printed (see `mwms_train.py`).
fn tf_config_of(out: &str, worker: usize) -> serde_json::Value {
    let prefix = format!("[worker/{worker}] TF_CONFIG ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("worker/{worker} printed no TF_CONFIG:\n{out}"))
}

/// The case: two agents on one host (as `mezz dev --agents 2`
/// makes), one worker on each. Both used to get 127.0.0.1:31000 and the
/// second could not start its gRPC server. TensorFlow binds the wildcard
/// address, so the whole cluster runs in a network namespace of its own.
#[test]
#[ignore = "needs TensorFlow and a network namespace (root)"]
fn two_workers_on_two_agents_of_one_host_train_with_mwms() {
    const NAME: &str = "two_workers_on_two_agents_of_one_host_train_with_mwms";
    let python = need_python("tensorflow");
    if !private_network(NAME, Duration::from_secs(400), Netns::Needed) {
        return;
    }
    // Each worker needs a whole agent, so the two go to different agents.
    let mut c = Cluster::start_with_agent_args("cpus:1;mem:3072;disk:1000", ROOT_TASKS);
    c.add_agent_with(ROOT_TASKS);
    let train = script("mwms_train.py");
    let job = Job::start(
        &c,
        &[
            "--name",
            "mwms2",
            "--workers",
            "2",
            "--cpus",
            "1",
            "--mem",
            "2048",
            "--",
            &python,
            &train,
        ],
    );
    let (code, out, err) = job.wait(Duration::from_secs(300));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let losses: Vec<&str> = lines_with(&out, "final loss")
        .iter()
        .filter_map(|l| l.split("final loss ").nth(1))
        .collect();
    assert_eq!(losses.len(), 2, "both workers report a loss:\n{out}");
    assert_eq!(losses[0], losses[1], "the workers agree:\n{out}");

    let spec = tf_config_of(&out, 0)["cluster"]["worker"].clone();
    assert_eq!(tf_config_of(&out, 1)["cluster"]["worker"], spec, "{out}");
    let addresses: Vec<&str> = spec
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(addresses.len(), 2, "{spec}");
    assert_ne!(addresses[0], addresses[1], "{spec}");

    let agents: std::collections::BTreeSet<String> = tasks_named(&c, "mwms2.1/")
        .iter()
        .filter_map(|t| t["agent_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(agents.len(), 2, "one worker on each agent: {agents:?}");
    assert!(c.active_tasks().is_empty(), "no task of the job remains");
}

/// The PyTorch flavor across two agents of one host: the replicas meet at
/// MASTER_ADDR:MASTER_PORT (a standard-library rendezvous, see
/// `rendezvous.py`; rank 0 listens on the loopback address it is given)
/// and agree on WORLD_SIZE and distinct RANKs, so the address and port
/// handed out are reachable and free.
#[test]
fn pytorch_replicas_on_two_agents_meet_at_master_addr() {
    const NAME: &str = "pytorch_replicas_on_two_agents_meet_at_master_addr";
    if !private_network(NAME, Duration::from_secs(180), Netns::Wanted) {
        return;
    }
    let mut c = Cluster::start_with_agent_args("cpus:1;mem:512;disk:1000", ROOT_TASKS);
    c.add_agent_with(ROOT_TASKS);
    let rendezvous = script("rendezvous.py");
    let job = Job::start(
        &c,
        &[
            "--name",
            "torch2",
            "--flavor",
            "pytorch",
            "--workers",
            "2",
            "--cpus",
            "1",
            "--mem",
            "128",
            "--",
            "python3",
            &rendezvous,
        ],
    );
    let (code, out, err) = job.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for rank in 0..2 {
        assert_eq!(
            lines_with(
                &out,
                &format!("[worker/{rank}] rank {rank}: agreed ranks=[0, 1]")
            )
            .len(),
            1,
            "{out}"
        );
    }
    let agents: std::collections::BTreeSet<String> = tasks_named(&c, "torch2.1/")
        .iter()
        .filter_map(|t| t["agent_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(agents.len(), 2, "one replica on each agent: {agents:?}");
}

#[test]
fn a_parameter_server_job_gets_tf_config_and_ends_with_its_chief() {
    const NAME: &str = "a_parameter_server_job_gets_tf_config_and_ends_with_its_chief";
    // Its replicas bind their ports, from 31000 up.
    if !private_network(NAME, Duration::from_secs(180), Netns::Wanted) {
        return;
    }
    let c = Cluster::start_with_agent_args("cpus:4;mem:4096;disk:1000", ROOT_TASKS);
    let ps = script("ps_job.py");
    let job = Job::start(
        &c,
        &[
            "--name",
            "psjob",
            "--chief",
            "--ps",
            "1",
            "--workers",
            "2",
            "--cpus",
            "0.5",
            "--mem",
            "128",
            "--",
            "python3",
            &ps,
        ],
    );
    let (code, out, err) = job.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let mut cluster: Option<serde_json::Value> = None;
    for (kind, index) in [("chief", 0), ("ps", 0), ("worker", 0), ("worker", 1)] {
        let prefix = format!("[{kind}/{index}] TF_CONFIG=");
        let line = lines_with(&out, &prefix);
        assert_eq!(line.len(), 1, "one TF_CONFIG from {kind}/{index}:\n{out}");
        let config: serde_json::Value =
            serde_json::from_str(line[0].split_once('=').expect("json").1).expect("JSON");
        assert_eq!(config["task"]["type"], kind);
        assert_eq!(config["task"]["index"], index);
        let counts: Vec<usize> = ["chief", "ps", "worker"]
            .iter()
            .map(|k| config["cluster"][k].as_array().map_or(0, |a| a.len()))
            .collect();
        assert_eq!(counts, [1, 1, 2], "{config}");
        for addr in config["cluster"]
            .as_object()
            .expect("cluster")
            .values()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        {
            assert!(
                addr.as_str().is_some_and(|a| a.starts_with("127.0.0.1:")),
                "{addr}"
            );
        }
        // Every replica is told the same cluster.
        match &cluster {
            None => cluster = Some(config["cluster"].clone()),
            Some(c) => assert_eq!(c, &config["cluster"]),
        }
    }
    assert!(out.contains("[chief/0] chief saw 3 peers"), "{out}");
    // The chief ended the job: the parameter server and workers were killed.
    let tasks = tasks_named(&c, "psjob.1/");
    let ps = tasks
        .iter()
        .find(|t| t["name"] == "psjob.1/ps/0")
        .expect("ps task");
    assert_eq!(ps["state"], "KILLED", "{ps}");
    assert!(c.active_tasks().is_empty());
    // `mezz tf status` and `mezz logs` by replica name.
    let addr = c.master_addr();
    let st = mezz(
        &["tf", "status", "--master", &addr, "psjob"],
        Duration::from_secs(10),
    );
    let st_out = text(&st.stdout);
    assert!(
        st_out.contains("chief/0") && st_out.contains("FINISHED"),
        "stdout:\n{st_out}\nstderr:\n{}",
        text(&st.stderr)
    );
    let logs = c.mezz(&["logs", "psjob.1/worker/1"], Duration::from_secs(10));
    assert!(
        text(&logs.stdout).contains("\"type\": \"worker\""),
        "{}",
        text(&logs.stdout)
    );
}

#[test]
fn a_gang_that_does_not_fit_waits_whole_until_an_agent_joins() {
    let mut c = Cluster::start_with_agent_args("cpus:3;mem:1024;disk:1000", ROOT_TASKS);
    let job = Job::start(
        &c,
        &[
            "--name",
            "gang",
            "--workers",
            "4",
            "--cpus",
            "1",
            "--mem",
            "64",
            "--",
            "echo hello from $MEZZ_TF_REPLICA",
        ],
    );
    wait_for(
        "the CLI to say what is missing",
        Duration::from_secs(20),
        || job.stderr().contains("missing: 1 × worker"),
    );
    assert!(
        tasks_named(&c, "gang.1/").is_empty(),
        "nothing launched in part"
    );
    let i = c.agents.len();
    c.agent_ports.push(free_port());
    c.agents.push(None);
    c.start_agent_with(i, ROOT_TASKS);
    c.wait_agents_connected(i + 1);
    let (code, out, err) = job.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for i in 0..4 {
        assert!(
            out.contains(&format!("[worker/{i}] hello from worker/{i}")),
            "{out}"
        );
    }
    assert_eq!(tasks_named(&c, "gang.1/").len(), 4);
}

#[test]
fn a_start_deadline_fails_a_gang_not_placed_in_time() {
    let c = Cluster::start_with_agent_args("cpus:3;mem:1024;disk:1000", ROOT_TASKS);
    let job = Job::start(
        &c,
        &[
            "--name",
            "late",
            "--workers",
            "4",
            "--cpus",
            "1",
            "--mem",
            "64",
            "--start-deadline",
            "5s",
            "--",
            "true",
        ],
    );
    let (code, out, err) = job.wait(Duration::from_secs(30));
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    let failed = lines_with(&err, "late failed: DEADLINE_NOT_MET");
    assert_eq!(failed.len(), 1, "{err}");
    assert!(
        failed[0].contains("start deadline of 5s") && failed[0].contains("missing: 1 × worker"),
        "the failure names the deadline and what the gang lacked: {err}"
    );
    assert!(tasks_named(&c, "late.1/").is_empty(), "nothing launched");
}

#[test]
fn a_run_deadline_kills_every_replica_and_fails_without_a_restart() {
    let c = Cluster::start_with_agent_args("cpus:4;mem:1024;disk:1000", ROOT_TASKS);
    let job = Job::start(
        &c,
        &[
            "--name",
            "long",
            "--workers",
            "2",
            "--cpus",
            "0.5",
            "--mem",
            "64",
            "--restart",
            "on-failure:3",
            "--run-deadline",
            "3s",
            "--",
            "exec sleep 300",
        ],
    );
    let (code, out, err) = job.wait(Duration::from_secs(40));
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        lines_with(&err, "long failed: DEADLINE_EXCEEDED").len(),
        1,
        "{err}"
    );
    assert!(lines_with(&err, "restarting").is_empty(), "{err}");
    let states: Vec<String> = tasks_named(&c, "long.1/")
        .iter()
        .map(|t| t["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["KILLED", "KILLED"], "one attempt, both killed");
    assert!(c.active_tasks().is_empty());
}

/// The host pid of a process whose command line is exactly `argv`.
fn pid_of(argv: &[&str]) -> Option<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
    })
}

#[test]
fn a_killed_worker_restarts_the_gang_once_then_the_job_succeeds() {
    let c = Cluster::start_with_agent_args("cpus:4;mem:1024;disk:1000", ROOT_TASKS);
    let marker = format!("{}", 40000 + free_port() % 20000);
    let cmd = format!(
        "case $MEZZ_TASK_ID in *.worker.1.0) exec sleep {marker};; *.0) exec sleep 300;; \
         *) echo done $MEZZ_TF_REPLICA;; esac"
    );
    let job = Job::start(
        &c,
        &[
            "--name",
            "rs",
            "--workers",
            "2",
            "--cpus",
            "0.5",
            "--mem",
            "64",
            "--restart",
            "on-failure:1",
            "--",
            &cmd,
        ],
    );
    let mut pid = None;
    wait_for("worker/1's process", Duration::from_secs(20), || {
        pid = pid_of(&["sleep", &marker]);
        pid.is_some()
    });
    unsafe {
        libc::kill(pid.expect("pid"), libc::SIGKILL);
    }
    let (code, out, err) = job.wait(Duration::from_secs(40));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        lines_with(&err, "restarting the whole gang").len(),
        1,
        "{err}"
    );
    assert!(out.contains("[worker/0] done worker/0"), "{out}");
    assert!(out.contains("[worker/1] done worker/1"), "{out}");
    let attempts: Vec<String> = tasks_named(&c, "rs.1/")
        .iter()
        .map(|t| format!("{} {}", t["id"].as_str().unwrap_or(""), t["state"]))
        .collect();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(c.active_tasks().is_empty());
}

#[test]
fn gpu_workers_get_distinct_gpus() {
    let c = Cluster::start_with_agent_args(
        "cpus:4;mem:1024;disk:1000",
        &[
            "--fake-gpus",
            "2",
            "--task-user",
            "root",
            "--allow-root-tasks",
        ],
    );
    let job = Job::start(
        &c,
        &[
            "--name",
            "gpus",
            "--workers",
            "2",
            "--gpus",
            "1",
            "--cpus",
            "0.5",
            "--mem",
            "64",
            "--",
            "echo cuda=$CUDA_VISIBLE_DEVICES dev=$MEZZ_GPU_DEVICES",
        ],
    );
    let (code, out, err) = job.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let mut seen: Vec<(String, String)> = lines_with(&out, "cuda=")
        .iter()
        .filter_map(|l| {
            let rest = l.split_once("cuda=")?.1;
            let (cuda, dev) = rest.split_once(" dev=")?;
            Some((cuda.to_string(), dev.to_string()))
        })
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 2, "{out}");
    assert_eq!(seen[0].0, "0", "{out}");
    assert_eq!(seen[1].0, "1", "{out}");
    assert!(
        seen[0].1.ends_with("nvidia0") && seen[1].1.ends_with("nvidia1"),
        "{out}"
    );
}

/// The scheduler's time to start a 16-replica job: from submit to all
/// replicas RUNNING (the CLI reports it), with `sleep` as the command so no
/// interpreter start-up counts. `cargo test --release --test tensorflow --
/// --ignored --nocapture` prints the figures for BENCHMARKS.md.
#[test]
#[ignore = "benchmark; run by hand"]
fn bench_sixteen_replicas_to_running() {
    let mut times = Vec::new();
    for i in 0..6 {
        // A fresh cluster each time: a job's first offers, not leftovers.
        let err = run_sixteen_replicas(&format!("bench{i}"));
        // `… all 16 replicas RUNNING N ms after the attempt started, M ms
        // after submit`.
        let ms: Option<u64> = lines_with(&err, "replicas RUNNING")
            .first()
            .and_then(|l| l.split_whitespace().rev().nth(3)?.parse().ok());
        if i > 0 {
            times.push(ms.unwrap_or_else(|| panic!("no RUNNING line:\n{err}")));
        }
    }
    times.sort();
    eprintln!(
        "16 replicas, submit to all RUNNING: median {} ms, min {} ms, max {} ms",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}

/// Runs a 16-replica job (1 chief, 3 ps, 12 workers, `sleep 1`) on a fresh
/// cluster, asserts it succeeds and returns the CLI's stderr.
fn run_sixteen_replicas(name: &str) -> String {
    let c = Cluster::start_with_agent_args("cpus:16;mem:16384;disk:1000", ROOT_TASKS);
    let job = Job::start(
        &c,
        &[
            "--name",
            name,
            "--chief",
            "--ps",
            "3",
            "--workers",
            "12",
            "--cpus",
            "0.5",
            "--mem",
            "64",
            "--",
            "sleep 1",
        ],
    );
    let (code, _, err) = job.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    err
}

/// Sixteen replicas launched in one accept all start and finish: a burst of
/// concurrent launches once deadlocked the agent's checkpoint flushes.
#[test]
fn sixteen_replicas_launched_at_once_all_run_and_finish() {
    let err = run_sixteen_replicas("burst");
    assert_eq!(lines_with(&err, "replicas RUNNING").len(), 1, "{err}");
}
