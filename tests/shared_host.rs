//! Several agents on one host: an agent refuses to start when another live
//! agent of the same cluster on this host already offers some of its
//! ports, and a dead agent's claim does not stand in the way.

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::*;

const SMALL: &str = "cpus:1;mem:512;disk:100;ports:[31000-31099]";

/// Starts one more agent of `c` in its own work dir offering `resources`;
/// returns it and its address.
fn spawn_agent(c: &Cluster, name: &str, resources: &str) -> (Proc, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = vec![
        "agent".into(),
        "--master".into(),
        c.master_addr(),
        "--listen".into(),
        address.clone(),
        "--work-dir".into(),
        c.dir.path().join(name).display().to_string(),
        "--resources".into(),
        resources.into(),
        "--gpus".into(),
        "none".into(),
    ];
    (spawn_logged(c.dir.path(), name, &args), address)
}

fn connected(c: &Cluster, address: &str) -> bool {
    c.state()["agents"].as_array().is_some_and(|agents| {
        agents
            .iter()
            .any(|a| a["address"] == address && a["status"] == "connected")
    })
}

fn wait_exit(p: &mut Proc, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = p.child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} still runs after {timeout:?}:\n{}",
            p.name,
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_agent_refuses_ports_another_agent_of_its_host_offers() {
    let mut c = Cluster::start(SMALL, &[]);
    // Agent 0 runs with ports 31000-31099 (see Cluster::resources_of).
    let (mut clash, _) = spawn_agent(&c, "clash", "cpus:1;mem:512;disk:100;ports:[31050-31149]");
    let status = wait_exit(&mut clash, Duration::from_secs(30));
    let log = clash.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("ports 31050-31149 overlap ports 31000-31099 of agent"),
        "{log}"
    );
    assert!(log.contains("same host (127.0.0.1)"), "{log}");
    // The hint is a range nobody of this cluster claims.
    assert!(log.contains("--resources 'ports:[31100-31199]'"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        c.connected_agents(),
        1,
        "the refused agent never registered"
    );

    // Disjoint ports are fine next to it.
    let (beside, beside_at) =
        spawn_agent(&c, "beside", "cpus:1;mem:512;disk:100;ports:[31100-31199]");
    wait_for(
        "the agent beside to register",
        Duration::from_secs(30),
        || connected(&c, &beside_at),
    );

    // Once agent 0 is dead, its claim no longer counts.
    c.agents[0].as_mut().expect("agent 0").kill9();
    let (heir, heir_at) = spawn_agent(&c, "heir", SMALL);
    wait_for(
        "an agent with the dead agent's ports to register",
        Duration::from_secs(30),
        || connected(&c, &heir_at),
    );
    assert!(
        heir.log_text().contains("ports:[31000-31099]"),
        "{}",
        heir.log_text()
    );
    drop((beside, heir));
}
