//! Replicated writes per second through a raft group of three masters'
//! replicas (raft-rs + our sled storage with fsync), with proposals batched
//! per ready cycle. Messages between replicas are delivered in process, so
//! this measures consensus and storage, not gRPC.
//!
//! Run: `cargo bench -p mezz-master --bench replication` (optionally
//! `-- WRITES BATCH`, default 20000 500).

use std::time::Instant;

use mezz_master::replication::Replica;
use mezz_proto::v1::{replicated_command::Command, AgentInfo, ReplicatedCommand};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let writes = args.first().copied().unwrap_or(20_000);
    let batch = args.get(1).copied().unwrap_or(500).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let voters = [1u64, 2, 3];
    let mut nodes: Vec<Replica> = voters
        .iter()
        .map(|&id| {
            Replica::open(&dir.path().join(format!("m{id}")), id, &voters)
                .expect("open")
                .0
        })
        .collect();

    // Elect a leader.
    let mut leader = None;
    for _ in 0..1000 {
        for n in nodes.iter_mut() {
            n.tick();
        }
        pump(&mut nodes);
        leader = nodes.iter().position(|n| n.is_leader());
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("a leader");

    let started = Instant::now();
    let mut sent = 0u64;
    while sent < writes {
        for _ in 0..batch.min(writes - sent) {
            let cmd = ReplicatedCommand {
                command: Some(Command::RegisterAgent(AgentInfo {
                    id: format!("agent-{sent}"),
                    hostname: format!("host-{sent}"),
                    address: "10.0.0.1:5051".into(),
                    ..Default::default()
                })),
            };
            nodes[leader].propose(&cmd).expect("propose");
            sent += 1;
        }
        pump(&mut nodes);
    }
    while nodes[leader].applied() < nodes[leader].last_index() {
        pump(&mut nodes);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replicated writes through 3 replicas: {writes} in {secs:.2} s = {:.0}/s (batches of {batch})",
        writes as f64 / secs
    );
}

/// Runs every replica's ready loop and delivers the messages until quiet.
fn pump(nodes: &mut [Replica]) {
    loop {
        let mut msgs = Vec::new();
        for n in nodes.iter_mut() {
            let (_, out) = n.handle_ready().expect("ready");
            msgs.extend(out);
        }
        if msgs.is_empty() {
            return;
        }
        for m in msgs {
            let to = m.to as usize - 1;
            let _ = nodes[to].step(m);
        }
    }
}
