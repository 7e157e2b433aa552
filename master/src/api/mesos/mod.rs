//! Mesos compatibility on the master's HTTP port: `GET /version` and the v1
//! scheduler API (`POST /api/v1/scheduler`), so that Mesos frameworks
//! (pymesos, mesoshttp, hand-written v1 clients) run unchanged.
//!
//! One translation layer, no second scheduler: a Mesos call becomes the
//! same [`Input`] the gRPC scheduler service sends the actor, and our events
//! become Mesos events ([`codec`]). This module owns only what Mesos adds
//! on the wire: the `Mesos-Stream-Id` of each subscription, the RecordIO
//! stream and the HTTP status codes Mesos gives.

pub mod codec;
#[cfg(test)]
mod conformance;
pub mod protobuf;
pub mod state;

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::Stream;
use mezz_proto::v1::{event, Event};
use tokio::sync::mpsc;

use self::codec::{MasterInfo, MesosCall};
use self::protobuf::Format;
use super::auth::forbidden;
use super::guard::too_many;
use crate::cluster::{CallError, ConnId};
use crate::handle::{Handle, Input};
use crate::node::Call;
use crate::security::{Principal, RegistrationRefused};

/// The largest call body accepted (Mesos' own limit is larger, but a call
/// bigger than our gRPC message limit could not be carried on anyway).
pub const MAX_CALL_BYTES: usize = mezz_proto::MAX_MESSAGE_BYTES;
/// How long SUBSCRIBE waits for an election before answering 503: common
/// clients retry a 503 at once, in a tight loop.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// The header that ties later calls to their subscription.
const STREAM_ID: &str = "mesos-stream-id";

/// What the Mesos handlers share.
#[derive(Clone)]
pub struct Mesos {
    handle: Handle,
    /// Framework id → the stream id of its live subscription on this
    /// master. A call must carry its framework's current stream id.
    streams: Arc<Mutex<HashMap<String, String>>>,
}

/// The Mesos routes, on the master's HTTP port.
pub fn routes(handle: Handle) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api/v1/scheduler", post(scheduler))
        .route("/master/state", get(state::state))
        .route("/master/state.json", get(state::state))
        .route("/state.json", get(state::state))
        .route("/state", get(state::state))
        .route("/master/redirect", get(state::redirect))
        .with_state(Mesos {
            handle,
            streams: Arc::default(),
        })
}

async fn version() -> Response {
    axum::Json(serde_json::json!({
        "version": codec::MESOS_VERSION,
        "build_date": "2026-01-01 00:00:00",
        "build_time": 1767225600.0,
        "build_user": "mezzanine",
        "mezzanine_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

fn bad(code: StatusCode, message: impl Into<String>) -> Response {
    let mut m = message.into();
    m.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}

fn redirect(leader: &str) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, format!("//{leader}/api/v1/scheduler"))],
        format!("this master follows; the leader is {leader}\n"),
    )
        .into_response()
}

/// The status Mesos gives for a refused call.
fn refused(e: CallError) -> Response {
    match e {
        CallError::NotLeader(Some(leader)) => redirect(&leader),
        CallError::NotLeader(None) => bad(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leading master is known yet; retry shortly",
        ),
        CallError::Invalid(m) | CallError::NotFound(m) | CallError::FailedPrecondition(m) => {
            bad(StatusCode::BAD_REQUEST, m)
        }
        // No scheduler call races on a version; kept for completeness.
        CallError::Aborted(m) => bad(StatusCode::CONFLICT, m),
    }
}

async fn scheduler(State(m): State<Mesos>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = Format::of(content_type) else {
        return bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?} is not supported; send the call as \
                 application/json or application/x-protobuf"
            ),
        );
    };
    // Events go out as the client accepts them; without an Accept header,
    // in the encoding of its call.
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let events = if accept.contains("application/x-protobuf") {
        Format::Protobuf
    } else if accept.contains("application/json") {
        Format::Json
    } else {
        format
    };
    let body = match axum::body::to_bytes(body, MAX_CALL_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the call is larger than {MAX_CALL_BYTES} bytes; send less per call"),
            )
        }
    };
    let json = match format {
        Format::Json => body.to_vec(),
        Format::Protobuf => match protobuf::call_to_json(&body) {
            Ok(j) => j,
            Err(why) => return bad(StatusCode::BAD_REQUEST, why),
        },
    };
    let call = match codec::parse_call(&json) {
        Ok(c) => c,
        Err(why) => return bad(StatusCode::BAD_REQUEST, why),
    };
    // Set by the authentication layer when the master requires tokens.
    let who = parts.extensions.get::<Principal>().cloned();
    match call {
        MesosCall::Subscribe(mut info) => {
            if let Err(refusal) = may_subscribe(&m.handle, who.as_ref(), &mut info) {
                return *refusal;
            }
            subscribe(m, &parts.headers, info, events).await
        }
        MesosCall::Call {
            framework_id,
            kind,
            call,
        } => {
            if let Err(refusal) = may_call(&m.handle, who.as_ref(), &framework_id, call.as_ref()) {
                return *refusal;
            }
            let given = parts
                .headers
                .get(STREAM_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let current = m
                .streams
                .lock()
                .ok()
                .and_then(|s| s.get(&framework_id).cloned());
            match current {
                None => {
                    // A follower knows no subscriptions: send the client to
                    // the leader, where its stream lives.
                    if let Ok((false, Some(leader))) = m.handle.ask(Input::WhoLeads).await {
                        return redirect(&leader);
                    }
                    return bad(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "framework {framework_id} is not subscribed on this master; send \
                             SUBSCRIBE first"
                        ),
                    );
                }
                Some(_) if given.is_empty() => {
                    return bad(
                        StatusCode::BAD_REQUEST,
                        "all non-subscribe calls must carry the Mesos-Stream-Id header from \
                         the SUBSCRIBE response",
                    )
                }
                Some(current) if current != given => {
                    return bad(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "Mesos-Stream-Id {given} is not the current subscription of \
                             framework {framework_id}; use the id of the latest SUBSCRIBE"
                        ),
                    )
                }
                Some(_) => {}
            }
            let Some(call) = call else {
                tracing::debug!(framework_id, kind, "accepted and ignored");
                return StatusCode::ACCEPTED.into_response();
            };
            match m.handle.ask(|reply| Input::Call(call, reply)).await {
                Ok(Ok(())) => StatusCode::ACCEPTED.into_response(),
                Ok(Err(e)) => refused(e),
                Err(e) => bad(StatusCode::SERVICE_UNAVAILABLE, e.message()),
            }
        }
    }
}

/// The checks the gRPC scheduler service makes at SUBSCRIBE, the same here:
/// the framework belongs to the principal whose token registered it, and
/// the ACLs decide its role and the user its tasks run as. 403 as Mesos
/// answers an unauthorized framework.
fn may_subscribe(
    handle: &Handle,
    who: Option<&Principal>,
    info: &mut mezz_proto::v1::FrameworkInfo,
) -> Result<(), Box<Response>> {
    let guard = handle.guard();
    guard
        .rate_limit(who, 1.0)
        .map_err(|l| Box::new(too_many(l)))?;
    guard.check_registration(who, info).map_err(|r| match r {
        RegistrationRefused::NotOwner(m) => Box::new(bad(StatusCode::FORBIDDEN, m)),
        RegistrationRefused::Denied(d) => Box::new(forbidden(d)),
    })?;
    Ok(())
}

/// A call acts only for a framework its principal registered, and launches
/// only as users the ACLs allow.
fn may_call(
    handle: &Handle,
    who: Option<&Principal>,
    framework_id: &str,
    call: Option<&Call>,
) -> Result<(), Box<Response>> {
    let guard = handle.guard();
    guard
        .check_owner(who, framework_id)
        .map_err(|m| Box::new(bad(StatusCode::FORBIDDEN, m)))?;
    // As on gRPC: one token a call, an ACCEPT one per task it launches.
    let cost = match call {
        Some(Call::Accept(a)) => crate::security::accept_cost(a),
        _ => 1.0,
    };
    guard
        .rate_limit(who, cost)
        .map_err(|l| Box::new(too_many(l)))?;
    if let Some(Call::Accept(accept)) = call {
        guard
            .check_launch_users(who, accept)
            .map_err(|d| Box::new(forbidden(d)))?;
    }
    Ok(())
}

async fn subscribe(
    m: Mesos,
    headers: &HeaderMap,
    info: mezz_proto::v1::FrameworkInfo,
    format: Format,
) -> Response {
    let conn = m.handle.next_conn();
    let (tx, rx) = mpsc::channel(crate::handle::STREAM_QUEUE_LEN);
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let asked = m
            .handle
            .ask(|reply| {
                Input::Subscribe(
                    conn,
                    mezz_proto::PROTOCOL_VERSION,
                    info.clone(),
                    tx.clone(),
                    reply,
                )
            })
            .await;
        match asked {
            Ok(Ok(())) => break,
            Ok(Err(CallError::NotLeader(None))) if Instant::now() < deadline => {
                // An election is under way: hold the client rather than
                // let it spin on 503s.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => return refused(e),
            Err(e) => return bad(StatusCode::SERVICE_UNAVAILABLE, e.message()),
        }
    }
    drop(tx);
    let address = match m.handle.ask(Input::WhoLeads).await {
        Ok((_, Some(leader))) => leader,
        _ => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1:5050")
            .to_string(),
    };
    let stream_id = uuid::Uuid::new_v4().to_string();
    let events = EventStream {
        rx,
        master: MasterInfo {
            id: address.clone(),
            address,
        },
        stream_id: stream_id.clone(),
        framework_id: None,
        streams: m.streams.clone(),
        handle: m.handle.clone(),
        conn,
        format,
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type())
        .header(header::CACHE_CONTROL, "no-cache")
        .header("Mesos-Stream-Id", stream_id)
        .body(Body::from_stream(events))
        .unwrap_or_else(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A subscription's events as RecordIO records. Registers the stream id
/// once SUBSCRIBED names the framework, and tells the actor when the client
/// goes away (the body is dropped).
struct EventStream {
    rx: mpsc::Receiver<Result<Event, tonic::Status>>,
    master: MasterInfo,
    stream_id: String,
    framework_id: Option<String>,
    streams: Arc<Mutex<HashMap<String, String>>>,
    handle: Handle,
    conn: ConnId,
    format: Format,
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let ev = match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => return Poll::Ready(None),
                Poll::Ready(Some(Ok(ev))) => ev,
            };
            if let Some(event::Event::Subscribed(s)) = &ev.event {
                self.framework_id = Some(s.framework_id.clone());
                if let Ok(mut streams) = self.streams.lock() {
                    streams.insert(s.framework_id.clone(), self.stream_id.clone());
                }
            }
            let Some(json) = codec::event_json(&ev, &self.master) else {
                continue;
            };
            let data = match self.format {
                Format::Json => json.to_string().into_bytes(),
                Format::Protobuf => match protobuf::event_to_protobuf(&json) {
                    Ok(b) => b,
                    Err(why) => {
                        // The conformance tests make this unreachable; a
                        // client is better off without the one event.
                        tracing::error!("{why}");
                        continue;
                    }
                },
            };
            return Poll::Ready(Some(Ok(Bytes::from(codec::record(&data)))));
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let (Some(fid), Ok(mut streams)) = (&self.framework_id, self.streams.lock()) {
            if streams.get(fid) == Some(&self.stream_id) {
                streams.remove(fid);
            }
        }
        self.handle.send_later(Input::FrameworkGone(self.conn));
    }
}
