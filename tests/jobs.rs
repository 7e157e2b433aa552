//! Sizes and jobs against real processes: the cluster's sizes menu is set,
//! listed, used by `mezz run --size`, refused when bad, and survives a
//! restart of the masters; jobs retry, meet their deadline, install their
//! Python requirements, run as a DAG, are killed and rerun, keep their
//! history over a restart of the master, fire on a schedule without a
//! skipped or doubled run across a restart of the daemon and the master,
//! and bad job files are refused before anything is stored.

mod common;

use std::time::Duration;

use common::jobs::*;
use common::*;

const T: Duration = Duration::from_secs(60);

fn sizes_json(c: &Cluster) -> Vec<serde_json::Value> {
    let out = c.mezz(&["sizes", "--json"], T);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn size<'a>(sizes: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    sizes.iter().find(|s| s["name"] == name)
}

#[test]
fn sizes_are_set_used_by_run_refused_when_bad_and_survive_a_master_restart() {
    let mut c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);

    // A fresh cluster has the built-in menu.
    let sizes = sizes_json(&c);
    assert_eq!(size(&sizes, "gpu-large").expect("gpu-large")["gpus"], 2);
    assert!(size(&sizes, "cpu-small").is_some(), "{sizes:?}");

    let out = sub(
        &c,
        "sizes",
        "set",
        &[
            "gpu-xl",
            "--cpus",
            "8",
            "--mem",
            "64G",
            "--gpus",
            "2",
            "--gpu-model",
            "A100",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = sub(
        &c,
        "sizes",
        "set",
        &["tiny", "--cpus", "0.5", "--mem", "96"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = sub(&c, "sizes", "rm", &["cpu-small"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    // Bad sizes are refused, naming the problem, and nothing is stored.
    let out = sub(
        &c,
        "sizes",
        "set",
        &["broken", "--cpus", "0", "--mem", "1G"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("cpus"), "{}", text(&out.stderr));
    let out = sub(&c, "sizes", "rm", &["no-such-size"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no-such-size"),
        "{}",
        text(&out.stderr)
    );

    let table = text(&c.mezz(&["sizes"], T).stdout);
    assert!(
        table.contains("gpu-xl") && table.contains("64G") && table.contains("A100"),
        "{table}"
    );

    // `mezz run --size` asks for the size's resources.
    let out = c.mezz(
        &[
            "run", "--size", "tiny", "--name", "sized", "--", "echo", "sized",
        ],
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "sized\n",
        "stderr: {}",
        text(&out.stderr)
    );
    let tasks = c.state()["tasks"].as_array().cloned().unwrap_or_default();
    let task = tasks
        .iter()
        .find(|t| t["name"] == "sized")
        .expect("the sized task in /api/state");
    let res = task["resources"].as_str().unwrap_or_default();
    assert!(res.contains("cpus:0.5") && res.contains("mem:96"), "{task}");
    // A size that is not on the menu is refused, naming the menu.
    let out = c.mezz(&["run", "--size", "cpu-small", "--", "true"], T);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("cpu-small") && err.contains("tiny"), "{err}");

    c.master.as_mut().expect("master").kill9();
    c.start_master();
    let sizes = sizes_json(&c);
    let xl = size(&sizes, "gpu-xl").expect("gpu-xl kept over the restart");
    assert_eq!(xl["mem"], 65536.0);
    assert_eq!(xl["gpu_model"], "A100");
    assert!(size(&sizes, "tiny").is_some(), "{sizes:?}");
    assert!(
        size(&sizes, "cpu-small").is_none(),
        "a removed size came back after the restart: {sizes:?}"
    );
    // /api/state shows the same menu.
    let shown = c.state()["sizes"].as_array().cloned().unwrap_or_default();
    assert_eq!(shown, sizes, "/api/state and mezz sizes --json differ");
}

#[test]
fn a_job_that_fails_twice_succeeds_on_its_third_attempt() {
    let c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let count = work.path().join("count");
    let job = format!(
        "kind: command\nname: flaky\ncpus: 0.5\nmem: 64\nretries: 3\nbackoff: 1s\n\
         priority: production\n\
         command: n=$(cat {p} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {p}; echo attempt $n; [ $n -ge 3 ] || exit 7\n",
        p = count.display()
    );
    let out = submit(&c, work.path(), "flaky", &job);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let rec = record(&out);
    assert_eq!(rec["state"], "SUCCEEDED", "{rec}");
    let attempts = rec["attempts"].as_array().expect("attempts");
    let codes: Vec<&serde_json::Value> = attempts.iter().map(|a| &a["exit_code"]).collect();
    assert_eq!(codes, [7, 7, 0], "{rec}");
    for a in attempts {
        assert!(a["agent"].as_str().is_some_and(|s| !s.is_empty()), "{a}");
        assert!(a["end"].as_f64() >= a["start"].as_f64(), "{a}");
    }
    // The retries waited their backoff: 1 s, then 2 s.
    let gap = |i: usize| {
        attempts[i + 1]["start"].as_f64().unwrap() - attempts[i]["end"].as_f64().unwrap()
    };
    assert!(gap(0) >= 0.9 && gap(1) >= 1.9, "{rec}");
    // Each attempt's output was streamed (to stderr with --print-json).
    assert!(
        err.contains("attempt 1") && err.contains("attempt 3"),
        "{err}"
    );
    // The attempts run in the job's priority class (not the default,
    // batch) and carry the job and its class as labels.
    let tasks = c.state()["tasks"].as_array().cloned().unwrap_or_default();
    let t = tasks
        .iter()
        .find(|t| t["name"] == "flaky.3")
        .expect("task flaky.3");
    assert_eq!(t["labels"]["job"], "flaky", "{t}");
    assert_eq!(t["labels"]["priority"], "production", "{t}");
    assert_eq!(t["priority"], "production", "{t}");

    // The job is kept by the masters: show, list and logs read it back.
    let shown = show(&c, "flaky");
    assert_eq!(shown["state"], "SUCCEEDED");
    // Each attempt's use, from its cgroup on the agent.
    for a in shown["attempts"].as_array().expect("attempts") {
        assert!(a["cpu_seconds"].as_f64().is_some_and(|c| c >= 0.0), "{a}");
        assert!(
            a["peak_memory_bytes"].as_u64().is_some_and(|m| m > 0),
            "{a}"
        );
    }
    assert_eq!(
        shown["attempts"].as_array().map(Vec::len),
        Some(3),
        "{shown}"
    );
    let ok = list(&c, &["--state", "succeeded", "--since", "1h"]);
    assert!(ok.iter().any(|j| j["name"] == "flaky"), "{ok:?}");
    assert!(list(&c, &["--state", "failed"]).is_empty());
    let logs = sub(&c, "job", "logs", &["flaky", "--attempt", "2"]);
    assert_eq!(
        text(&logs.stdout),
        "attempt 2\n",
        "stderr: {}",
        text(&logs.stderr)
    );
    let table = text(&sub(&c, "job", "show", &["flaky"]).stdout);
    assert!(
        table.contains("SUCCEEDED") && table.contains("flaky.3"),
        "{table}"
    );
}

#[test]
fn a_deadline_kills_the_attempt_and_fails_the_job() {
    let c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let out = submit(
        &c,
        work.path(),
        "slow",
        "kind: command\nname: slow\ncpus: 0.5\nmem: 64\nretries: 2\ndeadline: 3s\ncommand: sleep 120\n",
    );
    assert_ne!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let rec = record(&out);
    assert_eq!(rec["state"], "DEADLINE_EXCEEDED", "{rec}");
    let attempts = rec["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "no retry after the deadline: {rec}");
    let reason = attempts[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("deadline exceeded"), "{rec}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the deadline did not stop the sleep"
    );
    // The attempt's task is gone, not left running.
    wait_for("the killed attempt's task to end", T, || {
        c.active_tasks().iter().all(|t| t["name"] != "slow.1")
    });
}

#[test]
fn a_python_job_installs_its_requirements_into_a_cached_virtualenv() {
    let Some(python) = std::env::var_os("MEZZ_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: MEZZ_TEST_PYTHON is not set");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MEZZ_TEST_PYTHON is required under CI"
        );
        return;
    };
    let python = std::path::PathBuf::from(python);
    // The test interpreter may live where only root can reach it.
    let c = Cluster::start_with_agent_args(
        "cpus:4;mem:4096;disk:1000;ports:[31000-31009]",
        &["--task-user", "root", "--allow-root-tasks"],
    );
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let w = work.path();
    // A tiny wheel made here, so installing it needs no network.
    let make_wheel = format!(
        "import zipfile\n\
         with zipfile.ZipFile('{w}/jobdep-1.0-py3-none-any.whl', 'w') as z:\n\
         \x20   z.writestr('jobdep.py', 'ANSWER = 42\\n')\n\
         \x20   z.writestr('jobdep-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: jobdep\\nVersion: 1.0\\n')\n\
         \x20   z.writestr('jobdep-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
         \x20   z.writestr('jobdep-1.0.dist-info/RECORD', '')\n",
        w = w.display()
    );
    let st = std::process::Command::new(&python)
        .arg("-c")
        .arg(&make_wheel)
        .status()
        .expect("run python");
    assert!(st.success(), "making the test wheel failed");
    std::fs::write(
        w.join("requirements.txt"),
        format!("{}/jobdep-1.0-py3-none-any.whl\n", w.display()),
    )
    .expect("requirements");
    std::fs::write(
        w.join("main.py"),
        "import sys, jobdep\nprint('answer', jobdep.ANSWER, 'from', sys.prefix)\n",
    )
    .expect("main.py");
    let venvs = w.join("venvs");
    let job = format!(
        "kind: python\nname: pyjob\ncpus: 0.5\nmem: 256\nworkdir: {w}\npython: {py}\n\
         requirements: requirements.txt\nentrypoint: main.py\nenv:\n  MEZZ_JOBS_VENVS: {v}\n",
        w = w.display(),
        py = python.display(),
        v = venvs.display()
    );
    let out = submit(&c, w, "pyjob", &job);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(err.contains("answer 42 from"), "{err}");
    let made: Vec<String> = std::fs::read_dir(&venvs)
        .expect("the virtualenv cache")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].starts_with("pyjob-"), "{made:?}");
    assert!(
        err.contains(&format!("from {}", venvs.join(&made[0]).display())),
        "{err}"
    );
    // A second run reuses the virtualenv.
    let again = submit(&c, w, "pyjob", &job);
    assert_eq!(
        again.status.code(),
        Some(0),
        "stderr: {}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_dir(&venvs).expect("cache").count(), 1);
}

#[test]
fn bad_job_files_are_refused_before_anything_runs() {
    let c = Cluster::start("cpus:2;mem:2048;disk:1000;ports:[31000-31009]", &[]);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "typo",
            "kind: command\nname: typo\ncommand: true\nretires: 2\n",
            &["retires", "line 4"],
        ),
        (
            "nosize",
            "kind: command\nname: nosize\nsize: mega\ncommand: true\n",
            &["`size` (line 3)", "mega"],
        ),
        (
            "big",
            "kind: command\nname: big\ncpus: 64\nmem: 64\ncommand: true\n",
            &["never", "cpus"],
        ),
        (
            "sched",
            "kind: command\nname: sched\ncommand: true\nschedule: '0 3 * *'\n",
            &["`schedule` (line 4)", "not a cron expression"],
        ),
        (
            "cycle",
            "kind: command\nname: a\ncommand: true\nafter: [b]\n---\nkind: command\nname: b\ncommand: true\nafter: [a]\n",
            &["cycle: a -> b -> a"],
        ),
        (
            "nodep",
            "kind: command\nname: lonely\ncommand: true\nafter: [nobody]\n",
            &["nobody"],
        ),
        (
            "spark",
            "kind: spark\nname: spark\ncommand: true\n",
            &["`command` (line 3)", "does not go with kind spark"],
        ),
        (
            "cobol",
            "kind: cobol\nname: old\ncommand: true\n",
            &["unknown kind 'cobol'"],
        ),
    ];
    for (name, job, wanted) in cases {
        let out = submit(&c, work.path(), name, job);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        for w in *wanted {
            assert!(err.contains(w), "{name}: {err:?} lacks {w:?}");
        }
    }
    let tasks = c.state()["tasks"].as_array().cloned().unwrap_or_default();
    assert!(tasks.is_empty(), "a refused job ran something: {tasks:?}");
    assert!(list(&c, &[]).is_empty(), "a refused job was stored");
}

#[test]
fn a_dag_runs_in_order_and_a_failed_dependency_fails_what_waits_for_it() {
    let c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let order = work.path().join("order");
    let step = |name: &str, after: &str, extra: &str| {
        format!(
            "kind: command\nname: {name}\ncpus: 0.25\nmem: 32\n{after}command: sleep 0.3; echo {name} >> {o}{extra}\n",
            o = order.display()
        )
    };
    // Listed out of order: c waits for b, b for a.
    let dag = [
        step("dag-c", "after: [dag-b]\n", ""),
        step("dag-a", "", ""),
        step("dag-b", "after: [dag-a]\n", ""),
    ]
    .join("---\n");
    let out = submit(&c, work.path(), "dag", &dag);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let ran = std::fs::read_to_string(&order).expect("the order file");
    assert_eq!(ran, "dag-a\ndag-b\ndag-c\n");
    let c_job = show(&c, "dag-c");
    assert_eq!(c_job["after"], serde_json::json!(["dag-b"]));
    let b_job = show(&c, "dag-b");
    assert_eq!(
        b_job["waited_on_by"],
        serde_json::json!(["dag-c"]),
        "{b_job}"
    );

    // x fails for good: y (after x) fails without running, z (after_any)
    // runs anyway.
    let dag = [
        step("x", "", "; exit 3"),
        step("y", "after: [x]\n", ""),
        step("z", "after_any: [x]\n", ""),
    ]
    .join("---\n");
    let out = submit(&c, work.path(), "failing", &dag);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let y = show(&c, "y");
    assert_eq!(y["state"], "FAILED", "{y}");
    assert!(
        y["reason"].as_str().unwrap_or_default().contains("'x'"),
        "{y}"
    );
    assert_eq!(y["attempts"].as_array().map(Vec::len), Some(0), "{y}");
    assert_eq!(show(&c, "z")["state"], "SUCCEEDED");
}

#[test]
fn kill_rerun_and_history_survive_a_restart_of_the_master() {
    let mut c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
    let daemon = JobsDaemon::of(&c.master_addr());
    let work = tempfile::tempdir().expect("tempdir");
    let path = work.path().join("long.yaml");
    std::fs::write(
        &path,
        "kind: command\nname: long\ncpus: 0.25\nmem: 32\nretries: 5\ncommand: sleep 300\n",
    )
    .expect("job file");
    let out = sub(&c, "job", "submit", &[path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(daemon.pid().is_some(), "submit started no jobs daemon");
    let running = |c: &Cluster| {
        wait_for("the job's attempt to run", T, || {
            c.active_tasks()
                .iter()
                .any(|t| t["state"] == "RUNNING" && t["labels"]["job"] == "long")
        })
    };
    running(&c);
    let out = sub(&c, "job", "kill", &["long"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("the job to be KILLED", T, || {
        show(&c, "long")["state"] == "KILLED"
    });
    wait_for("the attempt's task to end", T, || {
        c.active_tasks()
            .iter()
            .all(|t| t["labels"]["job"] != "long")
    });
    // A kill is not a failure to retry.
    assert_eq!(
        show(&c, "long")["attempts"].as_array().map(Vec::len),
        Some(1)
    );
    let out = sub(&c, "job", "kill", &["long"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("already ended"),
        "{}",
        text(&out.stderr)
    );

    // A rerun is a new run of the same job with its own attempts.
    let out = sub(&c, "job", "rerun", &["long"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    running(&c);
    let j = show(&c, "long");
    assert_eq!(j["runs"], 2, "{j}");
    assert_eq!(j["attempts"][1]["task_id"], "long.2", "{j}");

    // The master restarts (the only one: every master): the job, its two
    // runs and its attempts are still there, and the running attempt is
    // still followed: a kill after the restart ends it.
    c.master.as_mut().expect("master").kill9();
    c.start_master();
    let j = show(&c, "long");
    assert_eq!(j["runs"], 2, "{j}");
    assert_eq!(j["attempts"].as_array().map(Vec::len), Some(2), "{j}");
    let out = sub(&c, "job", "kill", &["long"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("the rerun to be KILLED", T, || {
        show(&c, "long")["state"] == "KILLED"
    });
    let killed = list(&c, &["--state", "killed"]);
    assert_eq!(killed.len(), 1, "{killed:?}");
}

#[test]
fn a_schedule_fires_each_second_once_across_a_daemon_and_master_restart() {
    let mut c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
    let daemon = JobsDaemon::of(&c.master_addr());
    let work = tempfile::tempdir().expect("tempdir");
    let path = work.path().join("tick.yaml");
    // Every second (six fields, seconds first); missed fires all run.
    std::fs::write(
        &path,
        "kind: command\nname: tick\ncpus: 0.1\nmem: 16\ncommand: 'true'\n\
         schedule: '* * * * * *'\ntimezone: UTC\nconcurrency: allow\nmissed: run_all\n",
    )
    .expect("job file");
    let out = sub(&c, "job", "submit", &[path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let runs = |c: &Cluster| list(c, &["--parent", "tick", "--limit", "10000"]);
    wait_for("three runs", T, || runs(&c).len() >= 3);

    // The daemon dies; while it is away the schedule fires nothing; a new
    // daemon catches up.
    daemon.kill();
    std::thread::sleep(Duration::from_secs(2));
    // The only master restarts too, while no daemon runs.
    c.master.as_mut().expect("master").kill9();
    c.start_master();
    std::thread::sleep(Duration::from_secs(1));
    let before = runs(&c).len();
    // Any submitting command starts the daemon again: here another,
    // harmless job.
    let other = work.path().join("noop.yaml");
    std::fs::write(
        &other,
        "kind: command\nname: noop\ncpus: 0.1\nmem: 16\ncommand: 'true'\n",
    )
    .expect("noop");
    let out = sub(&c, "job", "submit", &[other.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    wait_for("the missed fires to be caught up", T, || {
        runs(&c).len() >= before + 4
    });
    let out = sub(&c, "job", "pause", &["tick"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // Let fires that were in flight land, then check: one run per second,
    // from the first to the last, none missing and none twice.
    std::thread::sleep(Duration::from_secs(2));
    let mut secs: Vec<u64> = runs(&c)
        .iter()
        .map(|j| {
            let name = j["name"].as_str().unwrap_or_default();
            name.strip_prefix("tick.")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("run name {name}"))
        })
        .collect();
    secs.sort();
    let n = secs.len();
    secs.dedup();
    assert_eq!(secs.len(), n, "a fire made two runs: {secs:?}");
    let (first, last) = (secs[0], secs[n - 1]);
    assert_eq!(
        (last - first + 1) as usize,
        n,
        "a fire was skipped between {first} and {last}: {secs:?}"
    );
    let shown = show(&c, "tick");
    assert_eq!(shown["state"], "SCHEDULED");
    assert_eq!(shown["schedule"]["paused"], true, "{shown}");
    // Runs are ordinary jobs: they succeeded.
    let all = runs(&c);
    wait_for("the runs to end", T, || {
        runs(&c).iter().all(|j| j["state"] == "SUCCEEDED")
    });
    assert!(all.len() >= 7, "{all:?}");
}

#[test]
#[ignore = "needs the test Python with scikit-learn"]
fn a_sweep_tunes_a_real_model_and_reports_the_known_best_parameters() {
    let python = need_python("sklearn");
    let c = Cluster::start_with_agent_args(
        "cpus:4;mem:4096;disk:1000;ports:[31000-31009]",
        &["--task-user", "root", "--allow-root-tasks"],
    );
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let w = work.path();
    // An RBF support-vector classifier on scikit-learn's bundled digits
    // (no download): C=10 with gamma=0.001 is far the best of the grid.
    std::fs::write(
        w.join("svm.py"),
        "import sys\n\
         from sklearn.datasets import load_digits\n\
         from sklearn.model_selection import train_test_split\n\
         from sklearn.svm import SVC\n\
         C, gamma = float(sys.argv[1]), float(sys.argv[2])\n\
         X, y = load_digits(return_X_y=True)\n\
         Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)\n\
         acc = SVC(C=C, gamma=gamma).fit(Xtr, ytr).score(Xte, yte)\n\
         print(f'metric: accuracy={acc:.4f}')\n",
    )
    .expect("svm.py");
    let sweep = format!(
        "kind: sweep\nname: tune-svm\nmetric: accuracy\ngoal: maximize\nparallelism: 2\n\
         parameters:\n  C: [0.1, 10]\n  gamma: [0.001, 1.0]\n\
         trial:\n  kind: python\n  python: {py}\n  cpus: 0.5\n  mem: 512\n  workdir: {w}\n\
         \x20 entrypoint: svm.py\n  args: ['{{C}}', '{{gamma}}']\n",
        py = python,
        w = w.display()
    );
    let out = submit(&c, w, "sweep", &sweep);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let rec = record(&out);
    assert_eq!(rec["state"], "SUCCEEDED", "{rec}");
    assert_eq!(rec["metric"], 0.9907, "{rec}");
    assert_eq!(
        rec["params"],
        serde_json::json!({"C": 10, "gamma": 0.001}),
        "{rec}"
    );
    // The trials are ordinary jobs, each with its parameters and metric.
    let trials = list(&c, &["--parent", "tune-svm"]);
    assert_eq!(trials.len(), 4, "{trials:?}");
    for t in &trials {
        assert_eq!(t["state"], "SUCCEEDED", "{t}");
        assert!(t["metric"].as_f64().is_some(), "{t}");
        assert!(t["params"]["C"].is_number(), "{t}");
    }
    let worst = trials
        .iter()
        .filter_map(|t| t["metric"].as_f64())
        .fold(1.0, f64::min);
    assert!(worst < 0.2, "gamma=1 should do badly: {trials:?}");
}

#[test]
fn a_jvm_job_runs_a_main_class_with_its_heap_sized_from_its_memory() {
    let javac = std::process::Command::new("javac").arg("-version").output();
    if !javac.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: javac is not installed");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "javac (a JDK) is required under CI"
        );
        return;
    }
    let c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
    let _daemon = JobsDaemon::of(&c.master_addr());
    let work = shared_dir();
    let w = work.path();
    std::fs::write(
        w.join("Hello.java"),
        "public class Hello {\n  public static void main(String[] a) {\n    \
         System.out.println(\"hello \" + a[0]);\n    \
         System.out.println(\"heap \" + Runtime.getRuntime().maxMemory() / (1024 * 1024));\n  }\n}\n",
    )
    .expect("Hello.java");
    let st = std::process::Command::new("javac")
        .arg("-d")
        .arg(w)
        .arg(w.join("Hello.java"))
        .status()
        .expect("javac");
    assert!(st.success(), "javac failed");
    let job = format!(
        "kind: jvm\nname: hello-jvm\ncpus: 0.5\nmem: 256\nmain_class: Hello\nclasspath: [{w}]\nargs: [world]\n",
        w = w.display()
    );
    let out = submit(&c, w, "hello-jvm", &job);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(err.contains("hello world"), "{err}");
    // The heap follows the task's 256 MB memory limit (75% of it), not
    // the machine's memory.
    let heap: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("heap ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no heap line: {err}"));
    assert!((100..=200).contains(&heap), "heap {heap} MB: {err}");
}
