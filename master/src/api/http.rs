//! HTTP next to gRPC on the master's port: `/health`, `/api/state` (JSON),
//! `/metrics` (Prometheus text) and `/`, a plain status page that refreshes
//! itself.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mezz_proto::v1::ClusterState;

use crate::cluster::Cluster;
use crate::server::{Handle, Input};

/// The HTTP routes.
pub fn routes(handle: Handle) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/api/state", get(api_state))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .with_state(handle)
}

#[derive(serde::Deserialize)]
struct StateQuery {
    #[serde(default = "yes")]
    completed: bool,
}

fn yes() -> bool {
    true
}

fn unavailable(e: tonic::Status) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.message().to_string()).into_response()
}

/// A follower sends `/api/*` readers to the leader, whose view is current.
async fn redirect_to_leader(h: &Handle, path_and_query: &str) -> Option<Response> {
    let (leads, leader) = h.ask(Input::WhoLeads).await.ok()?;
    if leads {
        return None;
    }
    let leader = leader?;
    Some(
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{leader}{path_and_query}"))],
            format!("this master follows; the leader is {leader}\n"),
        )
            .into_response(),
    )
}

async fn api_state(
    State(h): State<Handle>,
    Query(q): Query<StateQuery>,
    uri: axum::http::Uri,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/api/state");
    if let Some(r) = redirect_to_leader(&h, path).await {
        return r;
    }
    match h.ask(|r| Input::State(q.completed, r)).await {
        Ok(state) => axum::Json(state).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn metrics(State(h): State<Handle>) -> Response {
    match h.ask(Input::Metrics).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => unavailable(e),
    }
}

/// Prometheus text for the counters and gauges of a master.
pub fn metrics_text(c: &Cluster, s: &ClusterState, leader: bool) -> String {
    let k = c.counters();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        "mezz_offers_sent_total",
        "Offers sent to frameworks.",
        k.offers_sent,
    );
    counter(
        "mezz_offers_declined_total",
        "Decline calls.",
        k.offers_declined,
    );
    counter(
        "mezz_offers_accepted_total",
        "Accept calls that used valid offers.",
        k.offers_accepted,
    );
    counter(
        "mezz_offers_rescinded_total",
        "Offers rescinded.",
        k.offers_rescinded,
    );
    counter(
        "mezz_tasks_launched_total",
        "Tasks sent to agents.",
        k.tasks_launched,
    );
    counter(
        "mezz_status_updates_total",
        "Status updates received from agents.",
        k.status_updates,
    );
    counter(
        "mezz_allocation_runs_total",
        "Allocation cycles.",
        k.allocation_runs,
    );
    let _ = writeln!(out, "# HELP mezz_tasks_terminal_total Tasks that reached a terminal state.\n# TYPE mezz_tasks_terminal_total counter");
    for (state, n) in &k.terminal {
        let _ = writeln!(out, "mezz_tasks_terminal_total{{state=\"{state}\"}} {n}");
    }
    let connected = s.agents.iter().filter(|a| a.status == "connected").count();
    let _ = writeln!(
        out,
        "# HELP mezz_agents Agents by status.\n# TYPE mezz_agents gauge\nmezz_agents{{status=\"connected\"}} {connected}\nmezz_agents{{status=\"disconnected\"}} {}",
        s.agents.len() - connected
    );
    let _ = writeln!(out, "# HELP mezz_frameworks Registered frameworks.\n# TYPE mezz_frameworks gauge\nmezz_frameworks {}", s.frameworks.len());
    let _ = writeln!(out, "# HELP mezz_tasks_active Active tasks.\n# TYPE mezz_tasks_active gauge\nmezz_tasks_active {}", s.tasks.len());
    for res in ["cpus", "mem", "disk", "gpus"] {
        let total: f64 = s.agents.iter().filter_map(|a| a.total.get(res)).sum();
        let used: f64 = s.agents.iter().filter_map(|a| a.used.get(res)).sum();
        let _ = writeln!(out, "mezz_resources_total{{resource=\"{res}\"}} {total}\nmezz_resources_used{{resource=\"{res}\"}} {used}");
    }
    let _ = writeln!(out, "# HELP mezz_master_is_leader 1 when this master leads.\n# TYPE mezz_master_is_leader gauge\nmezz_master_is_leader {}", u8::from(leader));
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn scalar(m: &std::collections::BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

async fn page(State(h): State<Handle>) -> Response {
    let s = match h.ask(|r| Input::State(true, r)).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>Mezzanine</title><style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse;margin-bottom:2em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
         .RUNNING{{color:#060}}.FAILED,.LOST,.ERROR{{color:#a00}}</style></head><body>\
         <h1>Mezzanine</h1><p>Leader {} · {} agents · {} frameworks · {} tasks · <a href=/api/state>/api/state</a> · <a href=/metrics>/metrics</a></p>",
        esc(&s.leader), s.agents.len(), s.frameworks.len(), s.tasks.len()
    );
    b.push_str("<h2>Agents</h2><table><tr><th>Host</th><th>Id</th><th>Status</th><th>CPUs used/total</th><th>Mem MB used/total</th><th>GPUs</th></tr>");
    for a in &s.agents {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}/{}</td><td>{}</td></tr>",
            esc(&a.hostname),
            esc(&a.id),
            esc(&a.status),
            scalar(&a.used, "cpus"),
            scalar(&a.total, "cpus"),
            scalar(&a.used, "mem"),
            scalar(&a.total, "mem"),
            esc(&a.gpus.join(", "))
        );
    }
    b.push_str("</table><h2>Frameworks</h2><table><tr><th>Name</th><th>Id</th><th>Role</th><th>Status</th><th>Active tasks</th></tr>");
    for f in &s.frameworks {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            esc(&f.id),
            esc(&f.role),
            esc(&f.status),
            f.active_tasks
        );
    }
    b.push_str("</table><h2>Tasks</h2><table><tr><th>Id</th><th>Name</th><th>State</th><th>Framework</th><th>Host</th><th>Resources</th><th>Message</th></tr>");
    for t in &s.tasks {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.id), esc(&t.name), esc(&t.state), esc(&t.state), esc(&t.framework_name),
            esc(&t.hostname), esc(&t.resources), esc(&t.message)
        );
    }
    b.push_str("</table></body></html>");
    Html(b).into_response()
}
