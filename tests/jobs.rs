//! Sizes and jobs against real processes: the cluster's sizes menu is set,
//! listed, used by `mezz run --size`, refused when bad, and survives a
//! restart of the masters.

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
}
