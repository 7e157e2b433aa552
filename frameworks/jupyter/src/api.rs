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

use crate::http;
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

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    error: String,
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
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// A client of the daemon described by `info`.
    pub fn new(info: DaemonInfo) -> Client {
        Client { info }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response, Error> {
        let auth = self.info.authorization();
        http::request(
            &self.info.address,
            method,
            path,
            &[("Authorization", &auth)],
            body.as_deref(),
            TIMEOUT,
        )
        .await
        .map_err(|e| Error::Daemon(format!("the jupyter daemon: {e}")))
    }

    fn decode<T: serde::de::DeserializeOwned>(r: http::Response) -> Result<T, Error> {
        if r.status >= 400 {
            let text = serde_json::from_slice::<ErrorBody>(&r.body)
                .map(|b| b.error)
                .unwrap_or_else(|_| r.text());
            return Err(match r.status {
                400 => Error::BadRequest(text),
                404 => Error::NotFound(text),
                409 => Error::Conflict(text),
                _ => Error::Daemon(format!("the jupyter daemon answered {}: {text}", r.status)),
            });
        }
        serde_json::from_slice(&r.body).map_err(|e| {
            Error::Daemon(format!(
                "the jupyter daemon's answer is not understood: {e}"
            ))
        })
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, Error> {
        Self::decode(self.call("GET", "/v1/health", None).await?)
    }

    /// Every notebook.
    pub async fn list(&self) -> Result<Vec<NotebookView>, Error> {
        Self::decode(self.call("GET", "/v1/notebooks", None).await?)
    }

    /// One notebook, with its token; `None` when there is none of that name.
    pub async fn get(&self, name: &str) -> Result<Option<NotebookView>, Error> {
        match Self::decode(
            self.call("GET", &format!("/v1/notebooks/{name}"), None)
                .await?,
        ) {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds a notebook.
    pub async fn start(&self, req: &StartRequest) -> Result<NotebookView, Error> {
        let body = serde_json::to_vec(req)
            .map_err(|e| Error::BadRequest(format!("cannot encode the request: {e}")))?;
        Self::decode(self.call("POST", "/v1/notebooks", Some(body)).await?)
    }

    /// Asks for a notebook to be stopped.
    pub async fn stop(&self, name: &str) -> Result<(), Error> {
        let r = self
            .call("DELETE", &format!("/v1/notebooks/{name}"), None)
            .await?;
        if r.status == 202 {
            return Ok(());
        }
        Self::decode::<serde_json::Value>(r).map(|_| ())
    }
}
