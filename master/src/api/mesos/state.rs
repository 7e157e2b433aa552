//! Mesos operator endpoints that tools read: `/master/state` (also
//! `/state`, `/state.json`, `/master/state.json`) in Mesos' JSON shape for
//! frameworks, agents and tasks, built from our own state view, and
//! `/master/redirect`. Our `/api/state` is untouched.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mezz_proto::v1::{ClusterState, TaskView};
use serde_json::{json, Map, Value};

use super::{codec, Mesos};
use crate::handle::Input;

/// Task states our view reports that are over (`/api/state` names).
const TERMINAL: [&str; 7] = [
    "FINISHED", "FAILED", "KILLED", "LOST", "ERROR", "DROPPED", "GONE",
];

/// Mesos' resource object: scalars by name, and `ports` as `[a-b, …]`.
fn resources(quantities: &BTreeMap<String, f64>, text: &str) -> Value {
    let mut m = Map::new();
    for name in mezz_proto::resources::SHARE_NAMES {
        m.insert(
            name.into(),
            json!(quantities.get(name).copied().unwrap_or(0.0)),
        );
    }
    for (k, v) in quantities {
        m.entry(k.clone()).or_insert(json!(v));
    }
    // The `--resources` text holds ranges as `ports:[31000-32000]` or
    // `ports:31000-32000`; Mesos writes `[31000-32000]`.
    if let Some(p) = text.split(';').find_map(|part| part.strip_prefix("ports:")) {
        let p = p.trim_start_matches('[').trim_end_matches(']');
        m.insert("ports".into(), json!(format!("[{p}]")));
    }
    Value::Object(m)
}

fn task_quantities(text: &str) -> BTreeMap<String, f64> {
    text.split(';')
        .filter_map(|part| {
            let (name, v) = part.split_once(':')?;
            Some((name.to_string(), v.parse::<f64>().ok()?))
        })
        .collect()
}

fn task(t: &TaskView) -> Value {
    let statuses: Vec<Value> = t
        .history
        .iter()
        .map(|h| json!({"state": format!("TASK_{}", h.state), "timestamp": h.timestamp}))
        .collect();
    json!({
        "id": t.id,
        "name": t.name,
        "framework_id": t.framework_id,
        "executor_id": "",
        "slave_id": t.agent_id,
        "agent_id": t.agent_id,
        "state": format!("TASK_{}", t.state),
        "resources": resources(&task_quantities(&t.resources), &t.resources),
        "statuses": statuses,
    })
}

/// The Mesos shape of `s`, as the master at `me` (leading or not) sees it.
pub fn mesos_state(s: &ClusterState, me: &str) -> Value {
    let (host, port) = me.rsplit_once(':').unwrap_or((me, "5050"));
    let leader_info = |addr: &str| {
        codec::MasterInfo {
            id: addr.to_string(),
            address: addr.to_string(),
        }
        .to_json()
    };
    let frameworks: Vec<Value> = s
        .frameworks
        .iter()
        .map(|f| {
            let (done, live): (Vec<&TaskView>, Vec<&TaskView>) = s
                .tasks
                .iter()
                .filter(|t| t.framework_id == f.id)
                .partition(|t| TERMINAL.contains(&t.state.as_str()));
            json!({
                "id": f.id,
                "name": f.name,
                "user": f.user,
                "role": f.role,
                "roles": [f.role],
                "active": f.status == "connected",
                "connected": f.status == "connected",
                "failover_timeout": f.failover_timeout_secs,
                "registered_time": f.registered_at,
                "webui_url": f.webui_url,
                "capabilities": f.capabilities,
                "used_resources": resources(&f.used, ""),
                "offered_resources": resources(&f.offered, ""),
                "resources": resources(&f.used, ""),
                "tasks": live.into_iter().map(task).collect::<Vec<_>>(),
                "completed_tasks": done.into_iter().map(task).collect::<Vec<_>>(),
                "unreachable_tasks": [],
                "executors": [],
                "offers": [],
            })
        })
        .collect();
    let slaves: Vec<Value> = s
        .agents
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "hostname": a.hostname,
                "pid": format!("slave(1)@{}", a.address),
                "active": a.status == "connected",
                "registered_time": a.registered_at,
                "resources": resources(&a.total, &a.resources),
                "used_resources": resources(&a.used, ""),
                "offered_resources": resources(&a.offered, ""),
                "attributes": a.attributes,
                "version": codec::MESOS_VERSION,
            })
        })
        .collect();
    let activated = s.agents.iter().filter(|a| a.status == "connected").count();
    let mut v = json!({
        "version": codec::MESOS_VERSION,
        "id": me,
        "pid": format!("master@{me}"),
        "hostname": host,
        "port": port.parse::<u32>().unwrap_or(5050),
        "start_time": s.started_at,
        "activated_slaves": activated,
        "deactivated_slaves": s.agents.len() - activated,
        "frameworks": frameworks,
        "completed_frameworks": [],
        "unregistered_frameworks": [],
        "slaves": slaves,
    });
    if !s.leader.is_empty() {
        v["leader"] = json!(format!("master@{}", s.leader));
        v["leader_info"] = leader_info(&s.leader);
    }
    v
}

fn unavailable(e: tonic::Status) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{}\n", e.message()),
    )
        .into_response()
}

/// `/master/state` and its aliases.
pub async fn state(State(m): State<Mesos>, headers: axum::http::HeaderMap) -> Response {
    let s = match m.handle.ask(|r| Input::State(true, r)).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let me = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:5050")
        .to_string();
    axum::Json(mesos_state(&s, &me)).into_response()
}

/// `/master/redirect`: 307 to the leader's `//host:port`, as Mesos answers.
pub async fn redirect(State(m): State<Mesos>) -> Response {
    match m.handle.ask(Input::WhoLeads).await {
        Ok((_, Some(leader))) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("//{leader}"))],
        )
            .into_response(),
        Ok((_, None)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leading master is known yet; retry shortly\n",
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}
