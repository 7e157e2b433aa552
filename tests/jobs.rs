//! Sizes and jobs against real processes: the cluster's sizes menu is set,
//! listed, used by `mezz run --size`, refused when bad, and survives a
//! restart of the masters; jobs retry, meet their deadline, install their
//! Python requirements, and bad job files are refused before anything runs.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

/// `mezz GROUP ACTION --master ADDR ARGS…` for the two-level commands.
fn sub(c: &Cluster, group: &str, action: &str, args: &[&str]) -> std::process::Output {
    let addr = c.master_addr();
    let mut full = vec![group, action, "--master", &addr];
    full.extend_from_slice(args);
    mezz(&full, T)
}

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

/// Writes `text` as a job file in `dir` and runs `mezz job submit --wait
/// --print-json FILE` against `c`.
fn submit(c: &Cluster, dir: &std::path::Path, name: &str, text: &str) -> std::process::Output {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write the job file");
    sub(
        c,
        "job",
        "submit",
        &["--wait", "--print-json", path.to_str().expect("utf-8 path")],
    )
}

fn record(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no job record on stdout ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// A temporary directory the agent's task user may write in.
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod the shared dir");
    dir
}

#[test]
fn a_job_that_fails_twice_succeeds_on_its_third_attempt() {
    let c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
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
}

#[test]
fn a_deadline_kills_the_attempt_and_fails_the_job() {
    let c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
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
            "kind: command\nname: sched\ncommand: true\nschedule: '0 3 * * *'\n",
            &["`schedule`", "not available"],
        ),
        (
            "spark",
            "kind: spark\nname: spark\ncommand: true\n",
            &["mezz spark submit"],
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
}
