//! Many short tasks at once on one agent: all finish, each in a cgroup of
//! its own, and nothing of them is left behind. Real `mezz` master and
//! agent processes; the tasks are launched by `mezz bench tasks`. Needs
//! root and cgroups, so a plain `cargo test` reports it as ignored (see
//! `common/needs.rs`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const TASKS: usize = 1000;

/// Every `stdout` file of the agent's sandboxes: `(task id, contents)`.
fn sandbox_outputs(work_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let root = work_dir.join("sandboxes");
    for fw in std::fs::read_dir(&root)
        .expect("the agent's sandboxes")
        .flatten()
    {
        for task in std::fs::read_dir(fw.path())
            .expect("a framework's sandboxes")
            .flatten()
        {
            let id = task.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(task.path().join("stdout")).unwrap_or_default();
            out.push((id, text));
        }
    }
    out
}

/// The cgroup a task's `cat /proc/self/cgroup` names for the memory
/// controller (cgroup v1) or the unified hierarchy (v2).
fn memory_cgroup(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let memory = controllers.split(',').any(|c| c == "memory");
        (memory || (controllers.is_empty() && l.starts_with("0::"))).then(|| path.to_string())
    })
}

/// Processes whose command line names `needle` (the wrappers of the
/// agent's runs name their launch spec, inside the work dir).
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(raw) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{}: {cmdline}", p.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
#[ignore = "needs root and cgroups"]
fn a_thousand_concurrent_short_tasks_all_finish_in_their_own_cgroups_and_leave_nothing() {
    need_root_cgroups();
    // Room for every task at once: 1,000 × (0.01 cpus, 8 MB).
    let c = Cluster::start("cpus:16;mem:16384;disk:1000;ports:[31000-31099]", &[]);
    let addr = c.master_addr();
    let count = TASKS.to_string();
    let out = mezz(
        &[
            "bench",
            "tasks",
            "--master",
            &addr,
            "--count",
            &count,
            "--concurrency",
            &count,
            "--cpus",
            "0.01",
            "--mem",
            "8",
            "--json",
            "--",
            "cat /proc/self/cgroup",
        ],
        Duration::from_secs(300),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["finished"], TASKS, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    for key in ["launch_to_running_ms", "launch_to_finished_ms"] {
        assert!(report[key]["p50"].as_f64().is_some(), "{key}: {report}");
        assert!(report[key]["p99"].as_f64().is_some(), "{key}: {report}");
    }
    assert!(
        report["tasks_per_second"].as_f64().is_some_and(|t| t > 0.0),
        "{report}"
    );

    // Each task ran in a cgroup of its own, named for it.
    let work_dir = c.agent_work_dir(0);
    let outputs = sandbox_outputs(&work_dir);
    assert_eq!(outputs.len(), TASKS, "one sandbox per task");
    let mut cgroups = BTreeSet::new();
    for (task, text) in &outputs {
        let cg = memory_cgroup(text)
            .unwrap_or_else(|| panic!("task {task} printed no memory cgroup: {text:?}"));
        assert!(
            cg.starts_with("/mezzanine/") && cg.contains(task.as_str()),
            "task {task} ran in {cg}, not a cgroup of its own"
        );
        cgroups.insert(cg);
    }
    assert_eq!(cgroups.len(), TASKS, "two tasks shared a cgroup");

    // Nothing is left: the agent removes a run's cgroup (which it can only
    // do once no process is in it) before it reports the run's end, and
    // every wrapper has exited.
    let hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("/sys/fs/cgroup")
        .flatten()
        .map(|h| h.path())
        .chain(std::iter::once(PathBuf::from("/sys/fs/cgroup")))
        .collect();
    let mut left = Vec::new();
    for h in &hierarchies {
        for cg in &cgroups {
            let p = h.join(cg.trim_start_matches('/'));
            if p.exists() {
                left.push(p.display().to_string());
            }
        }
    }
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    let sandboxes = work_dir.join("sandboxes").display().to_string();
    let procs = processes_naming(&sandboxes);
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}
