//! Priority classes, preemption and start deadlines on a real cluster: a
//! master and two agents with two fake GPUs each, `mezz run` tasks of the
//! default classes (production 1000 non-preemptible, batch 500 and
//! best-effort 0 preemptible). Fake GPUs are device nodes the agent makes
//! (root), so a plain `cargo test` reports these tests as ignored (see
//! `common/needs.rs`).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The victims' grace period the master is started with.
const GRACE: Duration = Duration::from_secs(2);

/// A master with a short preemption grace period and `agents` agents of two
/// fake GPUs each.
fn gpu_cluster(agents: usize) -> Cluster {
    let mut c = Cluster {
        dir: cluster_dir(),
        master_port: free_port(),
        master: None,
        master_args: vec!["--preemption-grace".into(), format!("{}s", GRACE.as_secs())],
        agents: vec![],
        agent_ports: vec![],
        agent_resources: "cpus:4;mem:2048;disk:1000;ports:[31000-31100]".into(),
    };
    c.start_master();
    for _ in 0..agents {
        c.add_agent_with(&["--fake-gpus", "2"]);
    }
    c
}

/// `mezz run --detach` of `sleep 300` with `flags`; the task id once it
/// runs.
fn run_detached(c: &Cluster, flags: &[&str]) -> String {
    let mut args = vec!["run", "--detach", "--cpus", "0.1", "--mem", "32"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sleep", "300"]);
    let out = c.mezz(&args, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "mezz run {flags:?}: {}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    c.wait_task_state(&id, "RUNNING", Duration::from_secs(30));
    id
}

/// `mezz queue ls --json` (the master flag belongs to `ls`).
fn queue_ls(c: &Cluster) -> std::process::Output {
    let addr = c.master_addr();
    mezz(
        &["queue", "ls", "--master", &addr, "--json"],
        Duration::from_secs(20),
    )
}

fn agent_of(c: &Cluster, task: &str) -> String {
    c.task(task).expect("task")["agent_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs root (fake GPUs are device nodes)"]
fn production_preempts_best_effort_and_never_production() {
    need_root_cgroups();
    let c = gpu_cluster(2);

    // A production task on one GPU, and best-effort tasks on the other
    // three: the cluster is full.
    let prod1 = run_detached(&c, &["--gpus", "1", "--priority", "production"]);
    let best: Vec<String> = (0..3)
        .map(|_| run_detached(&c, &["--gpus", "1", "--priority", "best-effort"]))
        .collect();
    let prod_agent = agent_of(&c, &prod1);
    let (beside_prod, elsewhere): (Vec<&String>, Vec<&String>) =
        best.iter().partition(|t| agent_of(&c, t) == prod_agent);
    assert_eq!(
        (beside_prod.len(), elsewhere.len()),
        (1, 2),
        "one best-effort task beside the production one, two on the other agent"
    );

    // Two GPUs on one agent for production: only the agent without the
    // (non-preemptible) production task can give them.
    let asked = Instant::now();
    let prod2 = run_detached(&c, &["--gpus", "2", "--priority", "production"]);
    let took = asked.elapsed();
    // One allocation interval (1 s) plus the grace period, with room for a
    // busy two-core machine starting `mezz run` and the task.
    assert!(
        took < GRACE + Duration::from_secs(1) + Duration::from_secs(20),
        "production task took {took:?} to run"
    );
    eprintln!("production task running {took:?} after it was asked for");
    assert_ne!(agent_of(&c, &prod2), prod_agent);

    for victim in &elsewhere {
        let t = c.wait_task_state(victim, "KILLED", Duration::from_secs(30));
        assert_eq!(t["reason"], "PREEMPTED", "{t}");
        let message = t["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("preempted by") && message.contains("production"),
            "the message names the preemptor: {message}"
        );
    }
    // Never more than needed, never a production task.
    assert_eq!(c.task(&prod1).expect("prod1")["state"], "RUNNING");
    assert_eq!(
        c.task(beside_prod[0]).expect("best-effort")["state"],
        "RUNNING"
    );

    // Two more GPUs on one agent for production cannot be had without
    // preempting production: nothing is preempted, and the start
    // deadline ends the demand with its reason.
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--gpus",
            "2",
            "--priority",
            "production",
            "--start-deadline",
            "3s",
            "--name",
            "late",
            "--",
            "true",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("start deadline"),
        "mezz run says why: {stderr}"
    );
    let dropped = c.state()["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["name"].as_str().is_some_and(|n| n.starts_with("late")))
        .cloned()
        .expect("the late demand is remembered");
    assert_eq!(dropped["state"], "DROPPED", "{dropped}");
    assert_eq!(dropped["reason"], "DEADLINE_NOT_MET", "{dropped}");
    assert!(
        dropped["message"]
            .as_str()
            .is_some_and(|m| m.contains("gpus:2") && m.contains("production")),
        "it names what it waited for: {dropped}"
    );
    for t in [&prod1, beside_prod[0], &prod2] {
        assert_eq!(c.task(t).expect("task")["state"], "RUNNING", "{t}");
    }

    // The classes and the queue are visible.
    let out = c.mezz(&["priorities"], Duration::from_secs(20));
    let table = text(&out.stdout);
    assert!(
        table.contains("production") && table.contains("best-effort"),
        "{table}"
    );
    let out = queue_ls(&c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let queue: serde_json::Value = serde_json::from_slice(&out.stdout).expect("queue JSON");
    assert_eq!(queue, serde_json::json!([]), "nothing waits any more");
}

#[test]
#[ignore = "needs root (fake GPUs are device nodes)"]
fn waiting_demand_shows_in_the_queue_and_unknown_classes_are_refused() {
    need_root_cgroups();
    let c = gpu_cluster(1);
    let out = c.mezz(
        &["run", "--priority", "urgent", "--", "true"],
        Duration::from_secs(30),
    );
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown priority class 'urgent'")
            && stderr.contains("production, batch, best-effort"),
        "{stderr}"
    );

    let _a = run_detached(&c, &["--gpus", "2", "--priority", "production"]);
    // A batch task cannot preempt production: it waits, and says so.
    let waiter = spawn_logged(
        c.dir.path(),
        "waiter",
        &[
            "run".into(),
            "--master".into(),
            c.master_addr(),
            "--cpus".into(),
            "0.1".into(),
            "--mem".into(),
            "32".into(),
            "--gpus".into(),
            "1".into(),
            "--name".into(),
            "waiter".into(),
            "--".into(),
            "true".into(),
        ],
    );
    wait_for(
        "the waiting task in the queue",
        Duration::from_secs(30),
        || {
            let out = queue_ls(&c);
            let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            q.as_array().is_some_and(|q| {
                q.iter().any(|e| {
                    e["demand_id"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("waiter"))
                        && e["priority"] == "batch"
                        && e["position"] == 1
                        && e["resources"]
                            .as_str()
                            .is_some_and(|r| r.contains("gpus:1"))
                        && e["why"]
                            .as_str()
                            .is_some_and(|w| w.contains("would not make room"))
                })
            })
        },
    );
    drop(waiter);
}

#[test]
#[ignore = "needs root (fake GPUs are device nodes)"]
fn a_production_tf_job_preempts_best_effort_work() {
    need_root_cgroups();
    let c = gpu_cluster(1);
    let best: Vec<String> = (0..2)
        .map(|_| run_detached(&c, &["--gpus", "1", "--priority", "best-effort"]))
        .collect();
    let addr = c.master_addr();
    // `mezz tf run` submits a job; the jobs daemon it starts goes with the
    // test.
    let _jobs = JobsDaemon::of(&addr);
    let out = mezz(
        &[
            "tf",
            "run",
            "--master",
            &addr,
            "--name",
            "urgent",
            "--priority",
            "production",
            "--workers",
            "1",
            "--gpus",
            "2",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--",
            "echo cuda=$CUDA_VISIBLE_DEVICES",
        ],
        Duration::from_secs(90),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("cuda=0,1"), "{stdout}");
    for victim in &best {
        let t = c.wait_task_state(victim, "KILLED", Duration::from_secs(30));
        assert_eq!(t["reason"], "PREEMPTED", "{t}");
        assert!(
            t["message"]
                .as_str()
                .is_some_and(|m| m.contains("mezz-tf urgent")),
            "{t}"
        );
    }
}
