//! Roles through the CLI against real processes: weights and quotas are set,
//! listed, survive a master restart, and reserved resources reach only their
//! role.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

/// `mezz GROUP ACTION --master ADDR ARGS…` for the two-level commands.
fn sub(c: &Cluster, group: &str, action: &str, args: &[&str]) -> std::process::Output {
    let addr = c.master_addr();
    let mut full = vec![group, action, "--master", &addr];
    full.extend_from_slice(args);
    mezz(&full, T)
}

fn roles_json(c: &Cluster) -> Vec<serde_json::Value> {
    let out = c.mezz(&["roles", "--json"], T);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn role<'a>(roles: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    roles.iter().find(|r| r["name"] == name)
}

#[test]
fn weights_and_quotas_are_set_listed_and_survive_a_master_restart() {
    let mut c = Cluster::start("cpus:4;mem:4096;disk:1000;ports:[31000-31009]", &[]);
    let out = sub(&c, "weight", "set", &["eng/ml", "2"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = sub(
        &c,
        "quota",
        "set",
        &["eng/ml", "--cpus", "1", "--mem", "512", "--limit", "cpus:3"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    // A guarantee above the limit is refused, naming both.
    let out = sub(
        &c,
        "quota",
        "set",
        &["eng/ml", "--cpus", "8", "--limit", "cpus:3"],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("cpus") && err.contains('8') && err.contains('3'),
        "{err}"
    );

    let roles = roles_json(&c);
    let r = role(&roles, "eng/ml").expect("eng/ml listed");
    assert_eq!(r["weight"], 2.0);
    let table = text(&sub(&c, "quota", "ls", &[]).stdout);
    assert!(table.contains("eng/ml"), "{table}");

    // A task of the role runs and counts against its use.
    let out = c.mezz(
        &[
            "run", "--role", "eng/ml", "--cpus", "1", "--mem", "64", "--", "echo", "in role",
        ],
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "in role\n",
        "stderr: {}",
        text(&out.stderr)
    );

    // Over the limit: a task needing more than the role may hold waits.
    let out = c.mezz(
        &[
            "run",
            "--role",
            "eng/ml",
            "--cpus",
            "3.5",
            "--timeout",
            "2s",
            "--",
            "true",
        ],
        T,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a task over the role's limit ran"
    );

    c.master.as_mut().expect("master").kill9();
    c.start_master();
    let roles = roles_json(&c);
    let r = role(&roles, "eng/ml").expect("eng/ml still listed after a restart");
    assert_eq!(r["weight"], 2.0);
    assert!(
        !r["guarantee"]
            .as_object()
            .map(|g| g.is_empty())
            .unwrap_or(true),
        "{r}"
    );
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let c = Cluster::start(
        "cpus(ml):2;mem(ml):512;cpus:0.5;mem:256;disk:1000;ports:[31000-31009]",
        &[],
    );
    // Outside the role only the unreserved half-cpu is on offer.
    let out = c.mezz(
        &[
            "run",
            "--role",
            "other",
            "--cpus",
            "1",
            "--mem",
            "64",
            "--timeout",
            "2s",
            "--",
            "true",
        ],
        T,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a task of another role got reserved cpus"
    );
    let out = c.mezz(
        &[
            "run", "--role", "ml", "--cpus", "1.5", "--mem", "64", "--", "echo", "reserved",
        ],
        T,
    );
    assert_eq!(
        text(&out.stdout),
        "reserved\n",
        "stderr: {}",
        text(&out.stderr)
    );
}
