//! Agent registrations per second through a group of three masters, end to
//! end over their real ports: each registration is an agent's Attach stream
//! on the leader's gRPC port, replicated to the followers through the gRPC
//! peer transport over loopback TCP, fsynced by a majority, applied, and
//! answered with AgentRegistered. Each master runs on its own runtime and
//! threads, as separate processes would; nothing is shared but loopback.
//!
//! Run: `cargo bench -p mezz-master --bench registrations` (optionally
//! `-- AGENTS CONCURRENCY`, default 20000 2000).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezz_proto::v1::{
    agent_gateway_client::AgentGatewayClient, agent_message, master_message,
    operator_client::OperatorClient, AgentInfo, AgentMessage, GetLeaderRequest, RegisterAgent,
};
use mezz_proto::{Resources, PROTOCOL_VERSION};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// Agents sharing one client connection.
const AGENTS_PER_CONNECTION: u64 = 100;

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let agents = args.first().copied().unwrap_or(20_000);
    let concurrency = args.get(1).copied().unwrap_or(2_000).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_port())).collect();
    let peers: BTreeMap<u64, String> = addrs.iter().map(|(&k, a)| (k, a.to_string())).collect();

    // Three masters, each on its own runtime and threads.
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for (&id, &listen) in &addrs {
        let config = mezz_master::Config {
            listen,
            advertise: Some(listen.to_string()),
            data_dir: dir.path().join(format!("master-{id}")),
            id,
            peers: peers.clone(),
            timeouts: mezz_master::Timeouts {
                // The bench's agents send no heartbeats.
                agent_heartbeat: 600_000,
                ..Default::default()
            },
            snapshot_every: 1_000,
            limits: Default::default(),
            tls: None,
            security: Default::default(),
            scheduling: Default::default(),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(mezz_master::run(config, async move {
                let _ = stop_rx.await;
            }))
            .expect("master runs");
        }));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let leader = find_leader(&peers).await;
        // Agents keep their streams open, and a connection carries at most
        // a couple of hundred streams at once (HTTP/2's concurrent stream
        // limit), so agents share connections in groups.
        let mut channels = Vec::new();
        for _ in 0..agents.div_ceil(AGENTS_PER_CONNECTION) {
            channels.push(mezz_proto::client::connect(&leader).await.expect("connect"));
        }
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let channels = channels.clone();
            let next = next.clone();
            workers.push(tokio::spawn(async move {
                let mut kept = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= agents {
                        return kept;
                    }
                    let channel = channels[(i / AGENTS_PER_CONNECTION) as usize].clone();
                    kept.push(register(&mut AgentGatewayClient::new(channel), i).await);
                }
            }));
        }
        let mut streams = Vec::new();
        for w in workers {
            streams.push(w.await.expect("worker"));
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "agent registrations through 3 masters over gRPC: {agents} in {secs:.2} s = {:.0}/s \
             ({concurrency} at a time, leader {leader})",
            agents as f64 / secs
        );
        drop(streams);
    });
    for s in stops {
        let _ = s.send(());
    }
    for t in threads {
        let _ = t.join();
    }
}

async fn find_leader(peers: &BTreeMap<u64, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for addr in peers.values() {
            let Ok(channel) = mezz_proto::client::connect(addr).await else {
                continue;
            };
            if let Ok(r) = OperatorClient::new(channel)
                .get_leader(GetLeaderRequest {})
                .await
            {
                if r.get_ref().is_leader {
                    // Let it commit its first entry and take clients.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return addr.clone();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader elected within 30 s");
}

/// Registers agent `i` and returns its open stream (dropping it would
/// disconnect the agent).
async fn register(
    client: &mut AgentGatewayClient<tonic::transport::Channel>,
    i: u64,
) -> (
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<mezz_proto::v1::MasterMessage>,
) {
    let (tx, rx) = mpsc::channel(4);
    let info = AgentInfo {
        id: format!("bench-agent-{i}"),
        hostname: format!("host-{i}"),
        address: "127.0.0.1:5051".into(),
        resources: Resources::parse("cpus:8;mem:32768")
            .expect("resources")
            .to_proto(),
        ..Default::default()
    };
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Register(RegisterAgent {
            protocol_version: PROTOCOL_VERSION,
            agent: Some(info),
            tasks: vec![],
            frameworks: vec![],
            secret: format!("{i:064x}"),
        })),
    })
    .await
    .expect("queue the registration");
    let mut inbound = client
        .attach(ReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    loop {
        match inbound.message().await.expect("stream").map(|m| m.message) {
            Some(Some(master_message::Message::Registered(_))) => return (tx, inbound),
            Some(Some(master_message::Message::Refused(r))) => panic!("refused: {}", r.message),
            Some(_) => {}
            None => panic!("the stream ended before AgentRegistered"),
        }
    }
}
