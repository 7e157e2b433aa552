//! The API's side of sandbox grants, the audit log and rate limits: the
//! master's answer to `GrantTaskFiles`, the key it hands agents at
//! registration, `GET /api/audit`, and how a rate-limit refusal reads over
//! gRPC (RESOURCE_EXHAUSTED with `retry-after`) and HTTP (429 with
//! `Retry-After`).

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mezz_proto::v1::{master_message, MasterMessage, TaskFilesGrant};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tonic::Status;

use super::auth::{denied, forbidden};
use crate::handle::{Handle, Input};
use crate::security::{self, Action, Guard, Limited, Principal};

fn name(who: Option<&Principal>) -> &str {
    who.map(|p| p.0.as_str()).unwrap_or(security::ANONYMOUS)
}

/// Records an operator action or a kill by `who`.
pub fn audit(guard: &Guard, who: Option<&Principal>, event: &str, fields: Value) {
    guard
        .audit()
        .record(mezz_proto::unix_now(), event, name(who), fields);
}

fn peer(req: &Request) -> String {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        // The address, not the port: a client opens many connections.
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Audits the first use of a token from a new client address.
pub fn audit_token_use(guard: &Guard, req: &Request, header: Option<&str>, who: &Principal) {
    if let Ok(token) = security::tokens::from_header(header) {
        guard
            .audit()
            .token_used(mezz_proto::unix_now(), token.id(), &who.0, &peer(req));
    }
}

/// Audits a refused token (at the refusal log's bounded rate; `count`
/// refusals since the last entry). The error names tokens by id only.
pub fn audit_refusal(
    guard: &Guard,
    req: &Request,
    class: &str,
    e: &security::AuthError,
    count: u64,
) {
    guard.audit().record(
        mezz_proto::unix_now(),
        "unauthenticated",
        security::ANONYMOUS,
        json!({
            "caller": class,
            "path": req.uri().path(),
            "address": peer(req),
            "reason": e.to_string(),
            "refusals_since_last_entry": count,
        }),
    );
}

/// A rate-limit refusal over gRPC.
pub fn limited(l: Limited) -> Status {
    tracing::debug!(principal = l.principal, "call over the rate limit");
    let mut s = Status::resource_exhausted(l.to_string());
    if let Ok(v) = l.retry_after_header().to_string().parse() {
        s.metadata_mut().insert("retry-after", v);
    }
    s
}

/// A rate-limit refusal over HTTP: 429 with `Retry-After`.
pub fn too_many(l: Limited) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, l.retry_after_header().to_string())],
        format!("{l}\n"),
    )
        .into_response()
}

/// Charges a scheduler call of `cost` to `who`.
pub fn charge(guard: &Guard, who: Option<&Principal>, cost: f64) -> Result<(), Status> {
    guard.rate_limit(who, cost).map_err(limited)
}

/// `GrantTaskFiles`: a grant for one task's sandbox, for a principal that
/// may view the task's role.
pub async fn grant_task_files(
    handle: &Handle,
    who: Option<&Principal>,
    framework_id: &str,
    task_id: &str,
) -> Result<TaskFilesGrant, Status> {
    mezz_proto::ids::validate_id("framework", framework_id)
        .and_then(|_| mezz_proto::ids::validate_id("task", task_id))
        .map_err(Status::invalid_argument)?;
    let task = handle
        .ask(|r| Input::Task(framework_id.to_string(), task_id.to_string(), r))
        .await?;
    let Some(t) = task else {
        // Unknown, or not known here yet: say so only to whoever may view
        // everything.
        handle
            .guard()
            .check(who, Action::View("*"))
            .map_err(denied)?;
        return Err(Status::not_found(format!(
            "no task '{task_id}' of framework '{framework_id}' on this master"
        )));
    };
    handle
        .guard()
        .check(who, Action::View(&t.role))
        .map_err(denied)?;
    if t.agent_id.is_empty() {
        return Err(Status::failed_precondition(format!(
            "task '{task_id}' has no agent yet"
        )));
    }
    let (grant, expires_at) =
        handle
            .guard()
            .sign_grant(framework_id, task_id, &t.agent_id, mezz_proto::unix_now());
    Ok(TaskFilesGrant {
        grant,
        agent_id: t.agent_id.clone(),
        agent_address: t.agent_address.clone(),
        expires_at,
    })
}

/// The grant the master's own pages present for a task it has checked.
pub fn page_grant(handle: &Handle, framework_id: &str, task_id: &str, agent_id: &str) -> String {
    handle
        .guard()
        .sign_grant(framework_id, task_id, agent_id, mezz_proto::unix_now())
        .0
}

/// The latest audit entries for `who`, when it may read them.
pub fn audit_lines(
    guard: &Guard,
    who: Option<&Principal>,
    limit: usize,
) -> Result<Vec<String>, security::Denied> {
    guard.check(who, Action::ReadAudit)?;
    Ok(guard.audit().recent(limit))
}

/// The agent's side of a registration answer: the grant key, when grants
/// are on. Messages pass through unchanged otherwise.
pub fn with_grant_key(
    mut from_actor: mpsc::Receiver<Result<MasterMessage, Status>>,
    guard: &Guard,
) -> mpsc::Receiver<Result<MasterMessage, Status>> {
    let Some(key) = guard.grant_key().map(<[u8]>::to_vec) else {
        return from_actor;
    };
    let (tx, rx) = mpsc::channel(crate::handle::STREAM_QUEUE_LEN);
    tokio::spawn(async move {
        while let Some(mut msg) = from_actor.recv().await {
            if let Ok(MasterMessage {
                message: Some(master_message::Message::Registered(r)),
            }) = &mut msg
            {
                r.grant_key = mezz_proto::grant::agent_key(&key, &r.agent_id);
            }
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    #[serde(default)]
    limit: usize,
}

async fn api_audit(
    State(handle): State<Handle>,
    who: Option<axum::Extension<Principal>>,
    Query(q): Query<AuditQuery>,
) -> Response {
    match audit_lines(handle.guard(), who.as_ref().map(|e| &e.0), q.limit) {
        Ok(lines) => {
            let entries: Vec<Value> = lines
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            axum::Json(json!({ "entries": entries })).into_response()
        }
        Err(d) => forbidden(d),
    }
}

/// `GET /api/audit[?limit=N]`: the latest audit entries this master kept,
/// as `{"entries": [...]}`; 403 without `read_audit`.
pub fn routes(handle: Handle) -> Router {
    Router::new()
        .route("/api/audit", get(api_audit))
        .with_state(handle)
}
