//! Authentication, once, in front of every service on the master's port:
//! the token in `authorization` is checked by the [`Guard`] and the
//! caller's [`Principal`] goes into the request's extensions, where the
//! services find it for their ACL checks ([`principal`], [`denied`]). A
//! refusal is gRPC's UNAUTHENTICATED or HTTP's 401, with a message that
//! names the token by its id only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Refusals are logged at most every this often, with a count, so that a
/// peer hammering the port with bad tokens cannot flood the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the middleware holds.
pub struct AuthState {
    guard: Arc<Guard>,
    /// Refusals since the last logged one, and when that was.
    refusals: Mutex<(u64, Option<Instant>)>,
}

impl AuthState {
    /// The middleware's state over `guard`.
    pub fn new(guard: Arc<Guard>) -> Arc<AuthState> {
        Arc::new(AuthState {
            guard,
            refusals: Mutex::new((0, None)),
        })
    }

    /// Whether to log this refusal: the refusals counted since the last
    /// logged one, this one included, when it is time to log again.
    fn log_now(&self) -> Option<u64> {
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        r.0 += 1;
        let now = Instant::now();
        if r.1
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY)
        {
            return None;
        }
        let count = r.0;
        *r = (0, Some(now));
        Some(count)
    }
}

/// The middleware: see the module docs.
pub async fn authenticate(
    State(auth): State<Arc<AuthState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let guard = &auth.guard;
    let class = classify(req.uri().path());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("?"));
    match guard.authenticate(class, header, mezz_proto::unix_now()) {
        Ok(Some(principal)) => {
            super::guard::audit_token_use(guard, &req, header, &principal);
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => {
            if let Some(refused) = auth.log_now() {
                // Audited at the log's bounded rate: a peer with bad
                // tokens must not fill the disk.
                super::guard::audit_refusal(guard, &req, class.name(), &e, refused);
                tracing::info!(
                    caller = class.name(),
                    path = req.uri().path(),
                    refused,
                    "call refused: {e} (refusals counted since the last such line)"
                );
            }
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
