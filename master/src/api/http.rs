//! HTTP next to gRPC on the master's port: `/health`, `/api/state` (JSON,
//! documented in `docs/api-state.md`), `/api/jobs` (JSON, documented in
//! `docs/api-jobs.md`), `/metrics` (Prometheus text), the
//! status pages (see [`super::page`]) and
//! `/api/tasks/{framework_id}/{task_id}/files/{stdout|stderr}`, which reads a
//! task's output through its agent's sandbox API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mezz_proto::v1::agent_files_client::AgentFilesClient;
use mezz_proto::v1::{ClusterState, JobList, ListJobsRequest, ReadFileRequest};
use mezz_proto::MAX_MESSAGE_BYTES;

use super::auth::forbidden;
use super::metrics::GrpcStats;
use super::page::{self, layout, Ctx, JobFilter, LogPane, TaskFilter};
use crate::handle::{Handle, Input, JobViewer};
use crate::security::{self, Action, Principal};

/// The most bytes one file read returns, and the tail a task page shows.
pub const MAX_FILE_CHUNK: u64 = 64 * 1024;
/// Sandbox files a browser may read.
const FILES: [&str; 2] = ["stdout", "stderr"];

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct Http {
    handle: Handle,
    grpc: Arc<GrpcStats>,
}

/// The HTTP routes.
pub fn routes(handle: Handle, grpc: Arc<GrpcStats>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/state", get(api_state))
        .route("/metrics", get(metrics))
        .route(layout::SCRIPT_PATH, get(script))
        .route("/", get(overview))
        .route("/agents", get(agents))
        .route("/agents/{id}", get(agent))
        .route("/frameworks", get(frameworks))
        .route("/roles", get(roles))
        .route("/services", get(services))
        .route("/tasks", get(tasks))
        .route("/tasks/{framework_id}/{task_id}", get(task))
        .route("/api/jobs", get(api_jobs))
        .route("/jobs", get(jobs))
        .route("/jobs/{name}", get(job))
        .route(
            "/api/tasks/{framework_id}/{task_id}/files/{file}",
            get(task_file),
        )
        .with_state(Http { handle, grpc })
}

/// 200 while the master serves; 503 from the moment its state machine is
/// gone (the process is about to exit), so that probes notice.
async fn health(State(h): State<Http>) -> Response {
    match h.handle.failure() {
        None => "ok\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
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
            [(
                header::LOCATION,
                format!("{}://{leader}{path_and_query}", mezz_proto::tls::scheme()),
            )],
            format!("this master follows; the leader is {leader}\n"),
        )
            .into_response(),
    )
}

/// The caller's principal, when it presented a token.
type Caller = Option<axum::Extension<Principal>>;

/// `state` as `who` may view it (all of it while ACLs are off).
fn visible(h: &Http, who: &Caller, state: &mut ClusterState) {
    if let Some(acls) = h.handle.guard().acls() {
        let anonymous = Principal(security::ANONYMOUS.into());
        let who = who.as_ref().map(|e| &e.0).unwrap_or(&anonymous);
        security::filter_state(state, &acls, who);
    }
}

/// Whether `who` may view a task of `role`: a 403 naming who, what and
/// which role when not.
fn may_view(h: &Http, who: &Caller, role: &str) -> Option<Response> {
    h.handle
        .guard()
        .check(who.as_ref().map(|e| &e.0), Action::View(role))
        .err()
        .map(forbidden)
}

async fn api_state(
    State(h): State<Http>,
    who: Caller,
    Query(q): Query<StateQuery>,
    uri: axum::http::Uri,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/api/state");
    if let Some(r) = redirect_to_leader(&h.handle, path).await {
        return r;
    }
    match h.handle.ask(|r| Input::State(q.completed, r)).await {
        Ok(mut state) => {
            visible(&h, &who, &mut state);
            axum::Json(state).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// `/api/jobs` query: `ListJobsRequest` as query parameters, `state` a
/// comma-separated list.
#[derive(Debug, Default, serde::Deserialize)]
struct JobsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    since: f64,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    summary: bool,
}

impl JobsQuery {
    fn request(&self) -> ListJobsRequest {
        ListJobsRequest {
            states: self
                .state
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_uppercase)
                .collect(),
            since: self.since,
            parent: self.parent.clone(),
            limit: self.limit,
            summary: self.summary,
            active: self.active,
        }
    }
}

/// Who reads jobs, where ACLs are on (see [`JobViewer`]).
fn job_viewer(h: &Http, who: &Caller) -> Option<JobViewer> {
    h.handle.guard().acls().map(|acls| JobViewer {
        acls,
        principal: who
            .as_ref()
            .map(|e| e.0.clone())
            .unwrap_or_else(|| Principal(security::ANONYMOUS.into())),
    })
}

/// The jobs `q` asks for that `who` may view, or the response that says
/// why not.
async fn list_jobs(h: &Http, who: &Caller, q: ListJobsRequest) -> Result<JobList, Response> {
    let viewer = job_viewer(h, who);
    h.handle
        .ask(|r| Input::ListJobs(q, viewer, r))
        .await
        .map_err(unavailable)?
        .map_err(|e| bad_request(e.to_string()))
}

async fn api_jobs(
    State(h): State<Http>,
    who: Caller,
    Query(q): Query<JobsQuery>,
    uri: axum::http::Uri,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/api/jobs");
    if let Some(r) = redirect_to_leader(&h.handle, path).await {
        return r;
    }
    match list_jobs(&h, &who, q.request()).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(r) => r,
    }
}

async fn jobs(State(h): State<Http>, who: Caller, Query(f): Query<JobFilter>) -> Response {
    let (leads, leader) = match h.handle.ask(Input::WhoLeads).await {
        Ok(x) => x,
        Err(e) => return unavailable(e),
    };
    let q = ListJobsRequest {
        states: (!f.state.is_empty())
            .then(|| f.state.to_ascii_uppercase())
            .into_iter()
            .collect(),
        parent: f.parent.clone(),
        limit: f.limit.unwrap_or(0),
        ..Default::default()
    };
    let ctx = Ctx {
        leads,
        leader,
        now: mezz_proto::unix_now(),
    };
    match list_jobs(&h, &who, q).await {
        Ok(list) => html(true, page::jobs(&list, &ctx, &f)),
        Err(r) => r,
    }
}

async fn job(State(h): State<Http>, who: Caller, Path(name): Path<String>) -> Response {
    let (leads, leader) = match h.handle.ask(Input::WhoLeads).await {
        Ok(x) => x,
        Err(e) => return unavailable(e),
    };
    let key = name.clone();
    let detail = match h.handle.ask(|r| Input::JobDetail(key, r)).await {
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let ctx = Ctx {
        leads,
        leader,
        now: mezz_proto::unix_now(),
    };
    let Some(mut d) = detail else {
        let (found, body) = page::job(None, &ctx, &name);
        return html(found, body);
    };
    if let Some(r) = may_view(&h, &who, &d.job.role) {
        return r;
    }
    if let Some(v) = job_viewer(&h, &who) {
        // Neighbours in roles the caller may not view show as unknown.
        for (_, dep) in d.waits_for.iter_mut() {
            if dep.as_ref().is_some_and(|j| !v.may_view(&j.role)) {
                *dep = None;
            }
        }
        d.waited_on_by.retain(|j| v.may_view(&j.role));
        d.runs.retain(|j| v.may_view(&j.role));
    }
    let (found, body) = page::job(Some(&d), &ctx, &name);
    html(found, body)
}

async fn metrics(State(h): State<Http>) -> Response {
    match h.handle.ask(Input::Metrics).await {
        Ok(mut text) => {
            text.push_str(&h.grpc.text());
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        layout::SCRIPT,
    )
        .into_response()
}

/// The state (with completed tasks) and the page context, from this
/// master's own view: a follower renders its registry and says who leads.
async fn snapshot(h: &Http, who: &Caller) -> Result<(ClusterState, Ctx), Response> {
    let (mut state, ctx) = snapshot_all(h).await?;
    visible(h, who, &mut state);
    Ok((state, ctx))
}

/// [`snapshot`] with everything in it, whoever asks.
async fn snapshot_all(h: &Http) -> Result<(ClusterState, Ctx), Response> {
    let (leads, leader) = h.handle.ask(Input::WhoLeads).await.map_err(unavailable)?;
    let state = h
        .handle
        .ask(|r| Input::State(true, r))
        .await
        .map_err(unavailable)?;
    let ctx = Ctx {
        leads,
        leader,
        now: mezz_proto::unix_now(),
    };
    Ok((state, ctx))
}

fn html(found: bool, body: String) -> Response {
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

macro_rules! simple_page {
    ($name:ident, $render:path) => {
        async fn $name(State(h): State<Http>, who: Caller) -> Response {
            match snapshot(&h, &who).await {
                Ok((s, ctx)) => html(true, $render(&s, &ctx)),
                Err(r) => r,
            }
        }
    };
}

simple_page!(overview, page::overview);
simple_page!(agents, page::agents);
simple_page!(frameworks, page::frameworks);
simple_page!(roles, page::roles);
simple_page!(services, page::services);

async fn agent(State(h): State<Http>, who: Caller, Path(id): Path<String>) -> Response {
    match snapshot(&h, &who).await {
        Ok((s, ctx)) => {
            let (found, body) = page::agent(&s, &ctx, &id);
            html(found, body)
        }
        Err(r) => r,
    }
}

async fn tasks(State(h): State<Http>, who: Caller, Query(f): Query<TaskFilter>) -> Response {
    match snapshot(&h, &who).await {
        Ok((s, ctx)) => html(true, page::tasks(&s, &ctx, &f)),
        Err(r) => r,
    }
}

async fn task(
    State(h): State<Http>,
    who: Caller,
    Path((framework_id, task_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let refresh = headers.contains_key("x-mezz-live");
    let (s, ctx) = match snapshot_all(&h).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(t) = s
        .tasks
        .iter()
        .find(|t| t.framework_id == framework_id && t.id == task_id)
    {
        if let Some(r) = may_view(&h, &who, &t.role) {
            return r;
        }
    }
    let mut s = s;
    visible(&h, &who, &mut s);
    let agent = s
        .tasks
        .iter()
        .find(|t| t.framework_id == framework_id && t.id == task_id)
        .map(|t| (t.agent_address.clone(), t.agent_id.clone()));
    let mut panes = Vec::new();
    // The live part of the page is refreshed by the script, which follows
    // the logs by itself: skip the agent round trips for those requests.
    if let Some((addr, agent_id)) = agent.filter(|a| !a.0.is_empty() && !refresh) {
        // Checked above: this caller may view the task's role.
        let grant = super::guard::page_grant(&h.handle, &framework_id, &task_id, &agent_id);
        for file in FILES {
            panes.push(tail(&addr, &grant, &framework_id, &task_id, file).await);
        }
    }
    let (found, body) = page::task(&s, &ctx, &framework_id, &task_id, &panes);
    html(found, body)
}

/// Reads the last [`MAX_FILE_CHUNK`] bytes of a sandbox file.
async fn tail(addr: &str, grant: &str, framework_id: &str, task_id: &str, file: &str) -> LogPane {
    let pane = |error: Option<String>| LogPane {
        file: file.to_string(),
        text: String::new(),
        skipped: 0,
        next_offset: 0,
        error,
    };
    let first = match read(addr, grant, framework_id, task_id, file, 0).await {
        Ok(r) => r,
        Err(e) => return pane(Some(e)),
    };
    let r = if first.size > first.data.len() as u64 {
        match read(
            addr,
            grant,
            framework_id,
            task_id,
            file,
            first.size.saturating_sub(MAX_FILE_CHUNK),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return pane(Some(e)),
        }
    } else {
        first
    };
    let (text, used) = utf8_prefix(&r.data);
    LogPane {
        text,
        skipped: r.offset,
        next_offset: r.offset + used as u64,
        ..pane(None)
    }
}

/// The longest prefix of `data` that does not end inside a UTF-8
/// character, as text (invalid bytes replaced), and its length in bytes.
fn utf8_prefix(data: &[u8]) -> (String, usize) {
    let used = match std::str::from_utf8(data) {
        Ok(_) => data.len(),
        // An incomplete character at the end waits for the next read.
        Err(e) if e.error_len().is_none() && data.len() - e.valid_up_to() < 4 => e.valid_up_to(),
        Err(_) => data.len(),
    };
    (String::from_utf8_lossy(&data[..used]).into_owned(), used)
}

async fn read(
    addr: &str,
    grant: &str,
    framework_id: &str,
    task_id: &str,
    file: &str,
    offset: u64,
) -> Result<mezz_proto::v1::ReadFileResponse, String> {
    let channel = mezz_proto::client::connect(addr)
        .await
        .map_err(|e| format!("cannot reach agent {addr}: {e}"))?;
    let mut client = AgentFilesClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut request = tonic::Request::new(ReadFileRequest {
        framework_id: framework_id.to_string(),
        task_id: task_id.to_string(),
        path: file.to_string(),
        offset,
        length: MAX_FILE_CHUNK,
    });
    if let Ok(v) = grant.parse() {
        if !grant.is_empty() {
            request
                .metadata_mut()
                .insert(mezz_proto::grant::GRANT_METADATA, v);
        }
    }
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.read_file(request))
        .await
        .map_err(|_| format!("agent {addr} did not answer within 5 s"))?
        .map_err(|e| format!("agent {addr}: {}", e.message()))?;
    let mut r = resp.into_inner();
    r.data.truncate(MAX_FILE_CHUNK as usize);
    Ok(r)
}

#[derive(serde::Deserialize)]
struct FileQuery {
    #[serde(default)]
    offset: u64,
}

#[derive(serde::Serialize)]
struct FileChunk {
    data: String,
    offset: u64,
    next_offset: u64,
    size: u64,
    eof: bool,
    task_terminal: bool,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, msg + "\n").into_response()
}

async fn task_file(
    State(h): State<Http>,
    who: Caller,
    Path((framework_id, task_id, file)): Path<(String, String, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    if let Err(e) = mezz_proto::ids::validate_id("framework", &framework_id)
        .and_then(|_| mezz_proto::ids::validate_id("task", &task_id))
    {
        return bad_request(e);
    }
    if !FILES.contains(&file.as_str()) {
        return bad_request(format!(
            "file '{file}' is not readable here; ask for stdout or stderr"
        ));
    }
    let state = match h.handle.ask(|r| Input::State(true, r)).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let found = state
        .tasks
        .iter()
        .find(|t| t.framework_id == framework_id && t.id == task_id);
    if let Some(t) = found {
        if let Some(r) = may_view(&h, &who, &t.role) {
            return r;
        }
    }
    let Some((addr, agent_id)) = found
        .map(|t| (t.agent_address.clone(), t.agent_id.clone()))
        .filter(|a| !a.0.is_empty())
    else {
        return (
            StatusCode::NOT_FOUND,
            format!("no task '{task_id}' of framework '{framework_id}' with a known agent\n"),
        )
            .into_response();
    };
    // Checked above: this caller may view the task's role.
    let grant = super::guard::page_grant(&h.handle, &framework_id, &task_id, &agent_id);
    match read(&addr, &grant, &framework_id, &task_id, &file, q.offset).await {
        Ok(r) => {
            let (data, used) = utf8_prefix(&r.data);
            let next_offset = r.offset + used as u64;
            axum::Json(FileChunk {
                data,
                offset: r.offset,
                next_offset,
                size: r.size,
                eof: next_offset >= r.size,
                task_terminal: r.task_terminal,
            })
            .into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e + "\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::utf8_prefix;

    #[test]
    fn a_split_character_waits_for_the_next_read() {
        let s = "héllo".as_bytes();
        assert_eq!(utf8_prefix(&s[..2]), ("h".to_string(), 1));
        assert_eq!(utf8_prefix(s), ("héllo".to_string(), 6));
        assert_eq!(utf8_prefix(b"a\xffb").1, 3);
    }
}
