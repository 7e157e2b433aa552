//! A framework built on the SDK (the `keeper` example) against real `mezz`
//! processes: it survives a master restart without losing track of its
//! tasks, and a keeper process killed and restarted within its failover
//! timeout gets its running tasks back through its framework id file.
//!
//! The keeper runs in a child process: this test binary re-executed with
//! `KEEPER_CHILD` set, which makes `child_keeper` run the example's code.

mod common;

#[allow(dead_code)] // the example's `main` is not called from here
#[path = "../framework-sdk/examples/keeper.rs"]
mod keeper;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);
const CHILD_ENV: &str = "KEEPER_CHILD";

/// Not a test of its own: the body of a keeper child process.
#[test]
#[ignore = "the body of a child process that the failover tests start"]
fn child_keeper() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        panic!("child_keeper is not a test of its own; leave it out with --skip child_");
    };
    let [masters, tasks, id_file] = spec.splitn(3, '|').collect::<Vec<_>>()[..] else {
        panic!("{CHILD_ENV}={spec}: expected MASTERS|TASKS|ID_FILE");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tasks = tasks.parse().expect("task count");
    let masters = vec![masters.to_string()];
    let result = runtime.block_on(keeper::keep(
        masters,
        tasks,
        PathBuf::from(id_file),
        "sleep 300",
    ));
    if let Err(e) = result {
        eprintln!("keeper: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// Starts a keeper process whose stdout and stderr go to `log`.
fn spawn_keeper(c: &Cluster, tasks: usize, id_file: &Path, log: &Path) -> Proc {
    let file = std::fs::File::create(log).expect("keeper log");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_keeper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{}|{tasks}|{}", c.master_addr(), id_file.display()),
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("spawn keeper");
    Proc {
        name: "keeper".into(),
        child,
        log: log.to_path_buf(),
    }
}

/// The keeper's log once it has a line containing `needle`.
fn wait_log(p: &Proc, needle: &str) -> String {
    wait_for(&format!("'{needle}' from the keeper"), T, || {
        p.log_text().contains(needle)
    });
    p.log_text()
}

/// Ids of the active tasks of `framework_id`, sorted.
fn active_ids(c: &Cluster, framework_id: &str) -> Vec<String> {
    let mut ids: Vec<String> = c
        .active_tasks()
        .iter()
        .filter(|t| t["framework_id"] == framework_id)
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

fn running_keeper(c: &Cluster, id_file: &Path, log: &Path) -> (Proc, String) {
    let keeper = spawn_keeper(c, 2, id_file, log);
    wait_log(&keeper, "all 2 tasks running");
    let id = std::fs::read_to_string(id_file)
        .expect("the keeper stored its framework id")
        .trim()
        .to_string();
    assert!(
        keeper
            .log_text()
            .contains(&format!("subscribed {id} reconnected=false")),
        "{}",
        keeper.log_text()
    );
    assert_eq!(
        active_ids(c, &id),
        ["keep-0.0", "keep-1.0"],
        "{}",
        c.state()
    );
    (keeper, id)
}

#[test]
fn a_restarted_framework_process_gets_its_running_tasks_back() {
    let c = Cluster::start("cpus:2;mem:1024;disk:1000", &[]);
    let id_file = c.dir.path().join("keeper").join("framework-id");
    let (mut first, id) = running_keeper(&c, &id_file, &c.dir.path().join("keeper-1.log"));

    first.kill9();
    wait_for("the master to see the keeper gone", T, || {
        c.state()["frameworks"].as_array().is_some_and(|a| {
            a.iter()
                .any(|f| f["id"] == id && f["status"] == "disconnected")
        })
    });
    assert_eq!(
        active_ids(&c, &id),
        ["keep-0.0", "keep-1.0"],
        "tasks outlive the scheduler"
    );

    let second = spawn_keeper(&c, 2, &id_file, &c.dir.path().join("keeper-2.log"));
    let log = wait_log(&second, &format!("subscribed {id} reconnected=true"));
    let log = if log.contains("all 2 tasks running") {
        log
    } else {
        wait_log(&second, "all 2 tasks running")
    };
    assert!(
        log.contains("keep-0.0 RUNNING") && log.contains("keep-1.0 RUNNING"),
        "{log}"
    );
    // Past its recovery wait it launched nothing more: the tasks are its own.
    wait_log(&second, "all 2 tasks running");
    assert_eq!(
        active_ids(&c, &id),
        ["keep-0.0", "keep-1.0"],
        "{}",
        c.state()
    );
    assert!(
        !second.log_text().contains(".1 "),
        "no second attempts: {}",
        second.log_text()
    );
    let frameworks = c.state()["frameworks"].as_array().map(Vec::len);
    assert_eq!(frameworks, Some(1), "failed over, not registered anew");
}

#[test]
fn a_framework_keeps_track_of_its_tasks_across_a_master_restart() {
    let mut c = Cluster::start("cpus:2;mem:1024;disk:1000", &[]);
    let id_file = c.dir.path().join("framework-id");
    let (keeper, id) = running_keeper(&c, &id_file, &c.dir.path().join("keeper.log"));

    c.master.as_mut().expect("master").kill9();
    c.start_master();
    c.wait_agents_connected(1);
    let reconnects = format!("subscribed {id} reconnected=true");
    wait_log(&keeper, &reconnects);
    wait_for("the framework to be connected again", T, || {
        c.state()["frameworks"].as_array().is_some_and(|a| {
            a.iter()
                .any(|f| f["id"] == id && f["status"] == "connected")
        })
    });
    assert_eq!(
        active_ids(&c, &id),
        ["keep-0.0", "keep-1.0"],
        "{}",
        c.state()
    );

    // The keeper still follows its task: an operator's kill reaches it.
    let out = c.mezz(&["kill", "keep-0.0"], T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_log(&keeper, "keep-0.0 KILLED");
    assert_eq!(active_ids(&c, &id), ["keep-1.0"], "{}", c.state());
}
