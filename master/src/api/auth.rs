//! Authentication, once, in front of every service on the master's port:
//! the token in `authorization` is checked by the [`Guard`] and the
//! caller's [`Principal`] goes into the request's extensions, where the
//! services find it for their ACL checks ([`principal`], [`denied`]). A
//! refusal is gRPC's UNAUTHENTICATED or HTTP's 401, with a message that
//! names the token by its id only.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::Status;

use crate::security::{classify, Denied, Guard, Principal};

/// Whether a request is a gRPC call (else HTTP).
pub fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The middleware: see the module docs.
pub async fn authenticate(
    State(guard): State<Arc<Guard>>,
    mut req: Request,
    next: Next,
) -> Response {
    let class = classify(req.uri().path());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("?"));
    match guard.authenticate(class, header, mezz_proto::unix_now()) {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => {
            tracing::info!(
                caller = class.name(),
                path = req.uri().path(),
                "call refused: {e}"
            );
            if is_grpc(&req) {
                Status::unauthenticated(e.to_string())
                    .into_http::<axum::body::Body>()
                    .into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    // Basic, so that a browser asks for the token (as the
                    // password); scripts send `Bearer` without asking.
                    [(
                        header::WWW_AUTHENTICATE,
                        "Basic realm=\"mezzanine\", charset=\"UTF-8\"",
                    )],
                    format!("{e}\n"),
                )
                    .into_response()
            }
        }
    }
}

/// The principal the middleware found for a gRPC call, if any.
pub fn principal<T>(req: &tonic::Request<T>) -> Option<Principal> {
    req.extensions().get::<Principal>().cloned()
}

/// A denial as gRPC's PERMISSION_DENIED, logged.
pub fn denied(d: Denied) -> Status {
    tracing::info!(
        principal = d.principal,
        action = d.action,
        object = d.object,
        "call denied by the ACLs"
    );
    Status::permission_denied(d.to_string())
}

/// A denial as HTTP 403, logged.
pub fn forbidden(d: Denied) -> Response {
    tracing::info!(
        principal = d.principal,
        action = d.action,
        object = d.object,
        "page denied by the ACLs"
    );
    (StatusCode::FORBIDDEN, format!("{d}\n")).into_response()
}
