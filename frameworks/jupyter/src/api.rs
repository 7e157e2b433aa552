//! The daemon's local API, on 127.0.0.1 only, each request carrying the
//! bearer secret from the 0600 state directory: `GET /v1/health`,
//! `GET /v1/notebooks`, `POST /v1/notebooks`, `GET|DELETE
//! /v1/notebooks/NAME`. The server half and the client half (what the CLI
//! uses) both live here, so they cannot drift apart.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use mezz_sdk::daemon::{decode, CallError, ErrorBody, LocalClient};

use crate::notebook::StartRequest;
use crate::scheduler::{Book, NotebookView, StopReason};
use crate::store::DaemonInfo;
use crate::Error;
use mezz_sdk::daemon::bearer_matches;

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

/// `None` when the request carries the secret, else the refusal.
fn refused(api: &Api, headers: &HeaderMap) -> Option<Response> {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    (!bearer_matches(given, &api.secret))
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

async fn start(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(req): Json<StartRequest>,
) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.start(req) {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get_one(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.get(&name) {
        Some(view) => Json(view).into_response(),
        None => Error::NotFound(format!(
            "no notebook named '{name}'; `mezz jupyter ls` lists them"
        ))
        .into_response(),
    }
}

async fn stop(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused(&api, &headers) {
        return r;
    }
    match api.book.stop(&name, StopReason::Asked) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, book: Book, secret: String) {
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/notebooks", get(list).post(start))
        .route("/v1/notebooks/{name}", get(get_one).delete(stop))
        .with_state(Api { book, secret });
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
        e @ CallError::Refused { .. } => Error::Daemon(format!("the jupyter daemon {e}")),
        CallError::Unreachable(m) => Error::Daemon(format!("the jupyter daemon: {m}")),
        CallError::Garbled(m) => Error::Daemon(format!(
            "the jupyter daemon's answer is not understood: {m}"
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

    /// Every notebook.
    pub async fn list(&self) -> Result<Vec<NotebookView>, Error> {
        self.ask("GET", "/v1/notebooks", NO_BODY).await
    }

    /// One notebook, with its token; `None` when there is none of that name.
    pub async fn get(&self, name: &str) -> Result<Option<NotebookView>, Error> {
        match self
            .ask("GET", &format!("/v1/notebooks/{name}"), NO_BODY)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds a notebook.
    pub async fn start(&self, req: &StartRequest) -> Result<NotebookView, Error> {
        self.ask("POST", "/v1/notebooks", Some(req)).await
    }

    /// Asks for a notebook to be stopped.
    pub async fn stop(&self, name: &str) -> Result<(), Error> {
        let path = format!("/v1/notebooks/{name}");
        let r = self.api.call("DELETE", &path, None).await.map_err(failed)?;
        if r.status == 202 {
            return Ok(());
        }
        decode::<serde_json::Value>(r).map(|_| ()).map_err(failed)
    }
}
