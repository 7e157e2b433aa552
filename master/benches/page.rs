//! Status page render time for a large cluster: 1,000 agents (8 GPUs each)
//! and 10,000 tasks across 20 frameworks and 4 roles (the first framework's
//! 500 labelled as replicas of 50 services), seeded straight into a
//! `ClusterState` (no processes), every GPU with an hour of use. Times each page's render function and the
//! `/api/state` JSON, and fails if any page takes a second or more.
//!
//! `cargo bench -p mezz-master --bench page`; figures in BENCHMARKS.md.

use std::time::{Duration, Instant};

use mezz_master::api::page::{self, Ctx, LogPane, TaskFilter};
use mezz_proto::v1::{
    AgentView, ClusterState, FrameworkView, GpuUsageView, MasterView, RoleView, TaskStateChange,
    TaskView,
};

const AGENTS: usize = 1_000;
const TASKS: usize = 10_000;
const FRAMEWORKS: usize = 20;
/// Services among the first framework's tasks.
const SERVICES: usize = 50;

fn map(pairs: &[(&str, f64)]) -> std::collections::BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A GPU's use with an hour of history (60 chart points).
fn usage(agent: usize, g: usize, now: f64) -> GpuUsageView {
    GpuUsageView {
        gpu: format!("GPU-{agent:05}-{g}"),
        utilization_pct: ((agent * 7 + g * 13) % 101) as u32,
        memory_used_mb: 40_000,
        sampled_at: now - 2.0,
        task_id: String::new(),
        idle: g == 7,
        history_pct: (0..60).map(|p| ((p * 17 + g * 5) % 101) as u32).collect(),
        history_secs: 3600.0,
    }
}

fn seed() -> ClusterState {
    let now = mezz_proto::unix_now();
    let agents = (0..AGENTS)
        .map(|i| AgentView {
            id: format!("agent-{i:05}"),
            hostname: format!("node-{i:05}.rack{}.example", i % 40),
            address: format!("10.0.{}.{}:5051", i / 250, i % 250),
            status: if i % 97 == 0 {
                "disconnected"
            } else {
                "connected"
            }
            .into(),
            resources: "cpus:64;mem:262144;disk:1000000;gpus:{...}".into(),
            total: map(&[
                ("cpus", 64.0),
                ("mem", 262_144.0),
                ("disk", 1e6),
                ("gpus", 8.0),
            ]),
            used: map(&[
                ("cpus", 10.0),
                ("mem", 20_480.0),
                ("disk", 1000.0),
                ("gpus", 8.0),
            ]),
            offered: map(&[("cpus", 4.0)]),
            gpus: (0..8).map(|g| format!("GPU-{i:05}-{g}")).collect(),
            gpu_usage: (0..8).map(|g| usage(i, g, now)).collect(),
            registered_at: now - 3600.0,
            last_seen: now - 2.0,
            attributes: [
                ("gpu_model".to_string(), "NVIDIA H100 80GB HBM3".to_string()),
                ("gpu_memory_mb".to_string(), "81559".to_string()),
            ]
            .into(),
            ..Default::default()
        })
        .collect();
    let frameworks = (0..FRAMEWORKS)
        .map(|f| FrameworkView {
            id: format!("fw-{f:03}"),
            name: format!("framework-{f}"),
            role: format!("role{}", f % 4),
            user: "svc".into(),
            status: "connected".into(),
            failover_timeout_secs: 60.0,
            used: map(&[("cpus", 500.0), ("mem", 1e6), ("gpus", 400.0)]),
            offered: map(&[("cpus", 40.0)]),
            active_tasks: (TASKS / FRAMEWORKS) as u32,
            registered_at: now - 600.0,
            capabilities: vec!["GPU_RESOURCES".into()],
            offers_outstanding: 12,
            webui_url: format!("http://node-00000.rack0.example:{}/", 4040 + f),
        })
        .collect();
    let states = [
        "RUNNING", "RUNNING", "RUNNING", "STAGING", "FINISHED", "FAILED",
    ];
    let tasks = (0..TASKS)
        .map(|t| {
            let agent = t % AGENTS;
            let state = states[t % states.len()];
            TaskView {
                id: format!("task-{t:06}"),
                name: format!("trainer-{}", t % 300),
                framework_id: format!("fw-{:03}", t % FRAMEWORKS),
                framework_name: format!("framework-{}", t % FRAMEWORKS),
                role: format!("team-{}", t % FRAMEWORKS),
                agent_id: format!("agent-{agent:05}"),
                agent_address: format!("10.0.{}.{}:5051", agent / 250, agent % 250),
                hostname: format!("node-{agent:05}.rack{}.example", agent % 40),
                state: state.into(),
                reason: if state == "FAILED" {
                    "COMMAND_EXITED".into()
                } else {
                    String::new()
                },
                message: if state == "FAILED" {
                    "exited with status 1".into()
                } else {
                    String::new()
                },
                exit_code: (state == "FAILED").then_some(1),
                signal: None,
                resources: format!("cpus:1;mem:2048;gpus:{{GPU-{agent:05}-{}}}", t % 8),
                command: "python train.py --epochs 10".into(),
                launched_at: now - 500.0 + t as f64 * 0.01,
                updated_at: now - 100.0 + t as f64 * 0.01,
                gpus: vec![format!("GPU-{agent:05}-{}", t % 8)],
                gpu_usage: vec![usage(agent, t % 8, now)],
                history: ["STAGING", "STARTING", state]
                    .iter()
                    .enumerate()
                    .map(|(i, s)| TaskStateChange {
                        state: s.to_string(),
                        timestamp: now - 500.0 + i as f64,
                        reason: String::new(),
                        message: String::new(),
                    })
                    .collect(),
                healthy: (t % 4 != 3).then_some(t % 7 != 0),
                labels: service_labels(t, agent),
                priority: "batch".into(),
            }
        })
        .collect::<Vec<_>>();
    let services = mezz_master::cluster::services::services(&tasks);
    let roles = (0..4)
        .map(|r| RoleView {
            name: format!("role{r}"),
            weight: 1.0 + r as f64,
            frameworks: 5,
            used: map(&[("cpus", 2000.0)]),
            guarantee: map(&[("cpus", 1000.0)]),
            limit: map(&[("cpus", 16_000.0)]),
            offered: map(&[("cpus", 100.0)]),
            reserved: Default::default(),
        })
        .collect();
    ClusterState {
        protocol_version: 1,
        version: "bench".into(),
        leader: "127.0.0.1:5050".into(),
        masters: (1..=3)
            .map(|id| MasterView {
                id,
                address: format!("127.0.0.1:{}", 5049 + id),
                role: if id == 1 { "leader" } else { "follower" }.into(),
                term: 7,
                applied_index: 123_456,
            })
            .collect(),
        agents,
        frameworks,
        tasks,
        roles,
        started_at: now - 86_400.0,
        services,
        sizes: Vec::new(),
        priority_classes: vec![],
        queue: vec![],
    }
}

/// Every task serves a URL; those of the first framework are also replicas
/// of one of [`SERVICES`] services, some of them canaries.
fn service_labels(t: usize, agent: usize) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::from([(
        "url".to_string(),
        format!("http://node-{agent:05}.rack0.example:8888/"),
    )]);
    if t.is_multiple_of(FRAMEWORKS) {
        let svc = t / FRAMEWORKS % SERVICES;
        let canary = t.is_multiple_of(7);
        for (k, v) in [
            ("service", format!("model-{svc}")),
            ("service_url", format!("http://127.0.0.1:{}/", 40_000 + svc)),
            ("version", if canary { "2" } else { "1" }.to_string()),
        ] {
            labels.insert(k.to_string(), v);
        }
        if canary {
            labels.insert("canary".into(), "true".into());
            labels.insert("weight".into(), "10".into());
        }
    }
    labels
}

fn time(name: &str, runs: usize, mut f: impl FnMut() -> usize) -> Duration {
    let mut samples = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        bytes = std::hint::black_box(f());
        samples.push(t.elapsed());
    }
    samples.sort();
    let median = samples[runs / 2];
    println!(
        "{name:<34} median {:>8.2} ms  max {:>8.2} ms  ({} KiB)",
        median.as_secs_f64() * 1e3,
        samples[runs - 1].as_secs_f64() * 1e3,
        bytes / 1024
    );
    samples[runs - 1]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs one quick pass.
    let runs = if std::env::args().any(|a| a == "--bench") {
        21
    } else {
        1
    };
    let s = seed();
    let ctx = Ctx {
        leads: true,
        leader: Some(s.leader.clone()),
        now: mezz_proto::unix_now(),
    };
    let panes = [LogPane {
        file: "stdout".into(),
        text: "epoch 1 loss 0.93\n".repeat(3000),
        skipped: 0,
        next_offset: 54_000,
        error: None,
    }];
    println!("status page, {AGENTS} agents, {TASKS} tasks, {runs} run(s):");
    let all = TaskFilter {
        limit: Some(TASKS),
        ..Default::default()
    };
    let worst = [
        time("/", runs, || page::overview(&s, &ctx).len()),
        time("/agents", runs, || page::agents(&s, &ctx).len()),
        time("/agents/{id}", runs, || {
            page::agent(&s, &ctx, "agent-00500").1.len()
        }),
        time("/frameworks", runs, || page::frameworks(&s, &ctx).len()),
        time("/roles", runs, || page::roles(&s, &ctx).len()),
        time("/services", runs, || page::services(&s, &ctx).len()),
        time("/tasks (first 1000)", runs, || {
            page::tasks(&s, &ctx, &TaskFilter::default()).len()
        }),
        time("/tasks?limit=10000 (all)", runs, || {
            page::tasks(&s, &ctx, &all).len()
        }),
        time("/tasks?state=FAILED&name=trainer-1", runs, || {
            let f = TaskFilter {
                state: "FAILED".into(),
                name: "trainer-1".into(),
                ..Default::default()
            };
            page::tasks(&s, &ctx, &f).len()
        }),
        time("/tasks/{fw}/{task} (54 KB log)", runs, || {
            page::task(&s, &ctx, "fw-005", "task-005005", &panes)
                .1
                .len()
        }),
        time("/api/state JSON", runs, || {
            serde_json::to_vec(&s).map(|v| v.len()).unwrap_or(0)
        }),
    ];
    let slowest = worst.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "a page took {slowest:?} to render; the target is under 1 s"
    );
}
