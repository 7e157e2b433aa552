//! Health checks and the sandbox listing end to end: real `mezz master` and
//! `mezz agent` processes, driven through `mezz run`, `mezz ps` and
//! `mezz logs`.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);
const SMALL: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";

#[test]
fn a_task_failing_its_health_check_is_killed() {
    let c = Cluster::start(SMALL, &[]);
    let out = c.mezz(
        &[
            "run",
            "--cpus",
            "0.1",
            "--mem",
            "32",
            "--name",
            "sick",
            "--health-cmd",
            "false",
            "--health-failures",
            "2",
            "--health-interval",
            "100ms",
            "--",
            "sh",
            "-c",
            "seq 1 50; exec sleep 60",
        ],
        T,
    );
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("is unhealthy"), "stderr: {stderr}");
    assert!(
        stderr.contains("health check command 'false'"),
        "stderr: {stderr}"
    );

    let ps = c.mezz(&["ps", "--all", "--json"], T);
    let tasks: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("ps --json");
    let task = tasks
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "sick"))
        .expect("the task in ps --all")
        .clone();
    assert_eq!(task["state"], "KILLED", "{task}");
    assert_eq!(task["reason"], "HEALTH_CHECK_FAILED", "{task}");
    let id = task["id"].as_str().expect("id");

    // Its sandbox, listed, and the end of its output.
    let ls = c.mezz(&["logs", id, "--list"], T);
    let listing = text(&ls.stdout);
    assert_eq!(ls.status.code(), Some(0), "{}", text(&ls.stderr));
    assert!(listing.starts_with("TYPE"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("file") && l.ends_with(" stdout")),
        "{listing}"
    );
    assert!(listing.lines().any(|l| l.ends_with(" tmp/")), "{listing}");
    let tail = c.mezz(&["logs", id, "--tail", "2"], T);
    assert_eq!(text(&tail.stdout), "49\n50\n");
    let e = c.mezz(&["logs", id, "--list", ".."], T);
    assert_ne!(e.status.code(), Some(0));
    assert!(text(&e.stderr).contains("'..'"), "{}", text(&e.stderr));
}
