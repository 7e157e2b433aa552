//! The daemon's local API, on 127.0.0.1 only, each request carrying the
//! bearer secret from the 0600 state directory: `GET /v1/health`,
//! `GET /v1/services`, `POST /v1/services` (deploy), `GET|DELETE
//! /v1/services/NAME`, `POST /v1/services/NAME/scale`, `…/update`,
//! `…/canary`, `…/promote` and `…/rollback`; and `GET /metrics` (see
//! [`crate::metrics`]), which needs no secret. The server half and the
//! client half (what the CLI uses) both live here, so they cannot drift
//! apart.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use mezz_sdk::daemon::{decode, CallError, ErrorBody, LocalClient};

use crate::relay::Link;
use crate::scheduler::{Book, ServiceView};
use crate::service::{DeployRequest, Pace};
use crate::store::DaemonInfo;
use crate::Error;

/// The daemon's answer to `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// The daemon's pid.
    pub pid: u32,
    /// The framework id, once subscribed.
    pub framework_id: Option<String>,
}

#[derive(Clone)]
struct Api {
    book: Book,
    link: Arc<Link>,
    secret: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = match &self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            code,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Whether `headers` carry `Authorization: Bearer SECRET`.
pub(crate) fn carries_secret(headers: &HeaderMap, secret: &str) -> bool {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    mezz_sdk::daemon::bearer_matches(given, secret)
}

/// `None` when the request carries the secret, else the refusal.
fn refused(api: &Api, headers: &HeaderMap) -> Option<Response> {
    (!carries_secret(headers, &api.secret))
        .then(|| (StatusCode::UNAUTHORIZED, "missing or wrong secret").into_response())
}

async fn health(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    Json(Health {
        pid: std::process::id(),
        framework_id: api.book.framework_id(),
    })
    .into_response()
}

async fn list(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    Json(api.book.list()).into_response()
}

async fn deploy(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(req): Json<DeployRequest>,
) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    if let Err(e) = req.validate() {
        return e.into_response();
    }
    if api.book.get(&req.name).is_some() {
        return Error::Conflict(format!(
            "a service named '{}' already exists; pick another name, or `mezz serve rm {}` first",
            req.name, req.name
        ))
        .into_response();
    }
    // The proxy's port is picked here, once: it is the service's address
    // for as long as the service lives, across restarts of the daemon and
    // of the proxy. The link is held from the new port to the book's
    // record, so no push of routes can close the port in between.
    let name = req.name.clone();
    let deployed = {
        let mut held = api.link.hold().await;
        let port = match held.client().await {
            Ok(c) => match c.listen(&name).await {
                Ok(p) => p,
                Err(e) => {
                    held.forget();
                    return e.into_response();
                }
            },
            Err(e) => return e.into_response(),
        };
        api.book.deploy(req, port)
    };
    match deployed {
        Ok(view) => {
            // The proxy learns of it now rather than at the next tick.
            if let Err(e) = crate::daemon::push_once(&api.book, &api.link).await {
                tracing::warn!(service = %name, "cannot give the proxy its routes yet: {e}");
            }
            (StatusCode::CREATED, Json(view)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn get_one(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.get(&name) {
        Some(view) => Json(view).into_response(),
        None => not_found(&name).into_response(),
    }
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!(
        "no service named '{name}'; `mezz serve ls` lists them"
    ))
}

/// The body of `POST /v1/services/NAME/scale`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScaleRequest {
    /// The new replica count.
    pub replicas: u32,
}

async fn scale(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(req): Json<ScaleRequest>,
) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.scale(&name, req.replicas) {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of `POST /v1/services/NAME/update`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UpdateRequest {
    /// The new command.
    pub command: String,
    /// How fast; one new replica at a time and none short when absent.
    #[serde(default)]
    pub pace: Pace,
}

async fn update(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(req): Json<UpdateRequest>,
) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.update(&name, req.command, req.pace) {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of `POST /v1/services/NAME/canary`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CanaryRequest {
    /// The canary's command.
    pub command: String,
    /// Its share of the requests, in percent.
    pub weight: u32,
}

async fn canary(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(req): Json<CanaryRequest>,
) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.canary(&name, req.command, req.weight) {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn promote(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.promote(&name) {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn rollback(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.rollback(&name) {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.remove(&name) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /metrics`: the proxies' metrics, in the Prometheus text format,
/// from the proxy process. Without the secret: the API listens on
/// 127.0.0.1 only, the figures hold nothing private, and a scraper should
/// not need the secret.
async fn metrics(State(api): State<Api>) -> Response {
    match api.link.metrics().await {
        Ok(text) => ([("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, book: Book, link: Arc<Link>, secret: String) {
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/services", get(list).post(deploy))
        .route("/v1/services/{name}", get(get_one).delete(remove))
        .route("/v1/services/{name}/scale", post(scale))
        .route("/v1/services/{name}/update", post(update))
        .route("/v1/services/{name}/canary", post(canary))
        .route("/v1/services/{name}/promote", post(promote))
        .route("/v1/services/{name}/rollback", post(rollback))
        .with_state(Api { book, link, secret });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the local API stopped: {e}");
    }
}

/// The CLI's side: a daemon's address and secret.
#[derive(Clone, Debug)]
pub struct Client {
    info: DaemonInfo,
    api: LocalClient,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// No request body.
const NO_BODY: Option<&()> = None;

/// What a failed call means here.
fn failed(e: CallError) -> Error {
    match e {
        CallError::Refused {
            status: 400,
            message,
        } => Error::BadRequest(message),
        CallError::Refused {
            status: 404,
            message,
        } => Error::NotFound(message),
        CallError::Refused {
            status: 409,
            message,
        } => Error::Conflict(message),
        e @ CallError::Refused { .. } => Error::Daemon(format!("the serving daemon {e}")),
        CallError::Unreachable(m) => Error::Daemon(format!("the serving daemon: {m}")),
        CallError::Garbled(m) => Error::Daemon(format!(
            "the serving daemon's answer is not understood: {m}"
        )),
    }
}

impl Client {
    /// A client of the daemon described by `info`.
    pub fn new(info: DaemonInfo) -> Client {
        let api = LocalClient::new(&info.address, &info.secret, TIMEOUT);
        Client { info, api }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        self.api.json(method, path, body).await.map_err(failed)
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, Error> {
        self.ask("GET", "/v1/health", NO_BODY).await
    }

    /// Every service.
    pub async fn list(&self) -> Result<Vec<ServiceView>, Error> {
        self.ask("GET", "/v1/services", NO_BODY).await
    }

    /// One service; `None` when there is none of that name.
    pub async fn get(&self, name: &str) -> Result<Option<ServiceView>, Error> {
        match self
            .ask("GET", &format!("/v1/services/{name}"), NO_BODY)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deploys a service.
    pub async fn deploy(&self, req: &DeployRequest) -> Result<ServiceView, Error> {
        self.ask("POST", "/v1/services", Some(req)).await
    }

    /// Sets a service's replica count.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<ServiceView, Error> {
        let path = format!("/v1/services/{name}/scale");
        self.ask("POST", &path, Some(&ScaleRequest { replicas }))
            .await
    }

    /// Starts a rolling update to `command`.
    pub async fn update(
        &self,
        name: &str,
        command: &str,
        pace: Pace,
    ) -> Result<ServiceView, Error> {
        let req = UpdateRequest {
            command: command.to_string(),
            pace,
        };
        self.ask("POST", &format!("/v1/services/{name}/update"), Some(&req))
            .await
    }

    /// Starts a canary.
    pub async fn canary(
        &self,
        name: &str,
        command: &str,
        weight: u32,
    ) -> Result<ServiceView, Error> {
        let req = CanaryRequest {
            command: command.to_string(),
            weight,
        };
        self.ask("POST", &format!("/v1/services/{name}/canary"), Some(&req))
            .await
    }

    /// Promotes the canary (`promote`) or stops it (`rollback`).
    pub async fn canary_end(&self, name: &str, how: &str) -> Result<ServiceView, Error> {
        let path = format!("/v1/services/{name}/{how}");
        self.ask("POST", &path, Some(&serde_json::json!({}))).await
    }

    /// Asks for a service to be removed.
    pub async fn remove(&self, name: &str) -> Result<(), Error> {
        let path = format!("/v1/services/{name}");
        let r = self.api.call("DELETE", &path, None).await.map_err(failed)?;
        if r.status == 202 {
            return Ok(());
        }
        decode::<serde_json::Value>(r).map(|_| ()).map_err(failed)
    }
}
