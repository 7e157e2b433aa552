//! Prometheus text exposition (format 0.0.4) for `/metrics`: the state
//! machine's counters, gauges counted over the cluster, raft progress, the
//! allocation cycle time, and gRPC request counts and latencies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::cluster::{Cluster, Gauges};
// Defined in a leaf module so that `node` need not import `api`.
pub use crate::metrics::{Histogram, LATENCY_BUCKETS};

/// What the shell (not the state machine) measures: raft progress and the
/// allocation cycle time.
#[derive(Debug, Clone, Default)]
pub struct ShellMetrics {
    /// This master leads.
    pub leader: bool,
    /// Current raft term.
    pub term: u64,
    /// Index of the last entry in the local log.
    pub last_index: u64,
    /// Index of the last entry known to be committed.
    pub commit_index: u64,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Wall time of each `Cluster::allocate` call.
    pub allocation: Histogram,
}

/// gRPC requests by method and HTTP status, with latencies to the
/// response head (for streaming calls: the time to open the stream).
#[derive(Debug, Default)]
pub struct GrpcStats {
    by_method: Mutex<BTreeMap<(String, u16), Histogram>>,
}

impl GrpcStats {
    /// A shared, empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(GrpcStats::default())
    }

    fn observe(&self, method: &str, status: u16, secs: f64) {
        if let Ok(mut m) = self.by_method.lock() {
            // Methods come from our own service table; an unknown path
            // (a scanner) is folded into one series so labels stay bounded.
            let key = if method.starts_with("/mezzanine.v1.") && method.len() < 80 {
                method.to_string()
            } else {
                "other".to_string()
            };
            m.entry((key, status)).or_default().observe(secs);
        }
    }

    /// The Prometheus text for the gRPC series.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let Ok(m) = self.by_method.lock() else {
            return out;
        };
        out.push_str("# HELP mezz_grpc_requests_total gRPC requests by method and HTTP status.\n# TYPE mezz_grpc_requests_total counter\n");
        for ((method, status), h) in m.iter() {
            let _ = writeln!(
                out,
                "mezz_grpc_requests_total{{method=\"{}\",status=\"{status}\"}} {}",
                label(method),
                h.count()
            );
        }
        out.push_str("# HELP mezz_grpc_request_duration_seconds Time to the response head of gRPC requests.\n# TYPE mezz_grpc_request_duration_seconds histogram\n");
        for ((method, status), h) in m.iter() {
            h.write(
                &mut out,
                "mezz_grpc_request_duration_seconds",
                &format!("method=\"{}\",status=\"{status}\",", label(method)),
            );
        }
        out
    }
}

/// Axum middleware that counts gRPC requests (content type `application/grpc`).
pub async fn count_grpc(State(stats): State<Arc<GrpcStats>>, req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        return next.run(req).await;
    }
    let method = req.uri().path().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    stats.observe(
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Each GPU's latest use, and how many held GPUs are idle.
fn gpu_usage_metrics(out: &mut String, s: &Gauges) {
    let gpus = || s.gpu_usage.iter();
    type Value = fn(&mezz_proto::v1::GpuUsageView) -> u64;
    let per_gpu: [(&str, &str, Value); 2] = [
        (
            "mezz_gpu_utilization_percent",
            "Each GPU's utilization in its agent's latest heartbeat.",
            |g| u64::from(g.utilization_pct),
        ),
        (
            "mezz_gpu_memory_used_megabytes",
            "Each GPU's memory in use in its agent's latest heartbeat.",
            |g| g.memory_used_mb,
        ),
    ];
    for (name, help, value) in per_gpu {
        family(out, name, "gauge", help);
        for (a, g) in gpus() {
            let _ = writeln!(
                out,
                "{name}{{agent=\"{}\",gpu=\"{}\"}} {}",
                label(a),
                label(&g.gpu),
                value(g)
            );
        }
    }
    family(
        out,
        "mezz_gpus_allocated_idle",
        "gauge",
        "GPUs held by a task and idle for --gpu-idle-after.",
    );
    let _ = writeln!(
        out,
        "mezz_gpus_allocated_idle {}",
        gpus().filter(|(_, g)| g.idle).count()
    );
}

/// Prometheus text for the counters and gauges of a master.
pub fn metrics_text(c: &Cluster, s: &Gauges, shell: &ShellMetrics) -> String {
    let k = c.counters();
    let mut out = String::new();
    for (name, help, v) in [
        (
            "mezz_offers_sent_total",
            "Offers sent to frameworks.",
            k.offers_sent,
        ),
        (
            "mezz_offers_declined_total",
            "Decline calls.",
            k.offers_declined,
        ),
        (
            "mezz_offers_accepted_total",
            "Accept calls that used valid offers.",
            k.offers_accepted,
        ),
        (
            "mezz_offers_rescinded_total",
            "Offers rescinded.",
            k.offers_rescinded,
        ),
        (
            "mezz_tasks_launched_total",
            "Tasks sent to agents.",
            k.tasks_launched,
        ),
        (
            "mezz_status_updates_total",
            "Status updates received from agents.",
            k.status_updates,
        ),
        (
            "mezz_status_updates_refused_total",
            "Status updates ignored because the agent does not run the task.",
            k.status_updates_refused,
        ),
        (
            "mezz_agent_registrations_refused_total",
            "Agent registrations refused (wrong or missing secret, malformed).",
            k.agent_registrations_refused,
        ),
        (
            "mezz_allocation_runs_total",
            "Allocation cycles.",
            k.allocation_runs,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        "mezz_tasks_terminal_total",
        "counter",
        "Tasks that reached a terminal state.",
    );
    for (state, n) in &k.terminal {
        let _ = writeln!(
            out,
            "mezz_tasks_terminal_total{{state=\"{}\"}} {n}",
            label(state)
        );
    }
    family(&mut out, "mezz_tasks", "gauge", "Active tasks by state.");
    for (state, n) in &s.tasks_by_state {
        let _ = writeln!(out, "mezz_tasks{{state=\"{}\"}} {n}", label(state));
    }
    let connected = s.agents_connected;
    family(&mut out, "mezz_agents", "gauge", "Agents by status.");
    let _ = writeln!(
        out,
        "mezz_agents{{status=\"connected\"}} {connected}\nmezz_agents{{status=\"disconnected\"}} {}",
        s.agents - connected
    );
    let fw_connected = s.frameworks_connected;
    family(
        &mut out,
        "mezz_frameworks",
        "gauge",
        "Registered frameworks by status.",
    );
    let _ = writeln!(
        out,
        "mezz_frameworks{{status=\"connected\"}} {fw_connected}\nmezz_frameworks{{status=\"disconnected\"}} {}",
        s.frameworks - fw_connected
    );
    gpu_usage_metrics(&mut out, s);
    family(&mut out, "mezz_tasks_active", "gauge", "Active tasks.");
    let _ = writeln!(out, "mezz_tasks_active {}", s.tasks_active);
    family(
        &mut out,
        "mezz_resources_total",
        "gauge",
        "Resources of all agents.",
    );
    let mut used_lines = String::new();
    for res in mezz_proto::resources::SHARE_NAMES {
        let total = s.total.get(res).copied().unwrap_or(0.0);
        let used = s.used.get(res).copied().unwrap_or(0.0);
        let _ = writeln!(out, "mezz_resources_total{{resource=\"{res}\"}} {total}");
        let _ = writeln!(
            used_lines,
            "mezz_resources_used{{resource=\"{res}\"}} {used}"
        );
    }
    family(
        &mut out,
        "mezz_resources_used",
        "gauge",
        "Resources held by tasks.",
    );
    out.push_str(&used_lines);
    family(
        &mut out,
        "mezz_master_is_leader",
        "gauge",
        "1 when this master leads.",
    );
    let _ = writeln!(out, "mezz_master_is_leader {}", u8::from(shell.leader));
    family(&mut out, "mezz_raft_term", "gauge", "Current raft term.");
    let _ = writeln!(out, "mezz_raft_term {}", shell.term);
    family(
        &mut out,
        "mezz_raft_last_index",
        "gauge",
        "Index of the last entry in this master's log.",
    );
    let _ = writeln!(out, "mezz_raft_last_index {}", shell.last_index);
    family(
        &mut out,
        "mezz_raft_commit_index",
        "gauge",
        "Index of the last entry known to be committed by a majority.",
    );
    let _ = writeln!(out, "mezz_raft_commit_index {}", shell.commit_index);
    family(
        &mut out,
        "mezz_raft_applied_index",
        "gauge",
        "Index of the last applied log entry.",
    );
    let _ = writeln!(out, "mezz_raft_applied_index {}", shell.applied_index);
    family(
        &mut out,
        "mezz_allocation_cycle_seconds",
        "histogram",
        "Wall time of allocation cycles.",
    );
    shell
        .allocation
        .write(&mut out, "mezz_allocation_cycle_seconds", "");
    out
}
