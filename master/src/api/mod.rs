//! The master's API services: thin adapters from gRPC and HTTP to the actor
//! in `server.rs`. They validate sizes and shapes, never state.

pub mod agent;
pub mod auth;
pub mod guard;
pub mod http;
pub mod mesos;
pub mod metrics;
pub mod operator;
pub mod page;
pub mod raft;
pub mod scheduler;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use mezz_proto::client::LEADER_HINT_KEY;
use mezz_proto::v1::{
    agent_gateway_server::AgentGatewayServer, operator_server::OperatorServer,
    raft_peer_server::RaftPeerServer, scheduler_server::SchedulerServer,
};
use mezz_proto::MAX_MESSAGE_BYTES;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::cluster::CallError;
use crate::handle::{Handle, Input};

/// The gRPC services and HTTP routes on one router, for master `me` of the
/// group `peers`.
pub fn router(handle: Handle, me: u64, peers: Vec<u64>) -> axum::Router {
    let routes = tonic::service::Routes::new(
        SchedulerServer::new(scheduler::SchedulerApi::new(handle.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        AgentGatewayServer::new(agent::AgentApi::new(handle.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        OperatorServer::new(operator::OperatorApi::new(handle.clone(), me))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        RaftPeerServer::new(raft::RaftApi::new(handle.clone(), me, peers))
            .max_decoding_message_size(crate::replication::transport::MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let grpc = metrics::GrpcStats::new();
    let guard = handle.guard().clone();
    routes
        .into_axum_router()
        .merge(guard::routes(handle.clone()))
        .merge(http::routes(handle.clone(), grpc.clone()))
        .merge(mesos::routes(handle))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            auth::AuthState::new(guard),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            grpc,
            metrics::count_grpc,
        ))
}

/// Unknown paths: 404 for HTTP, so that a probe of a mistyped path fails;
/// a gRPC call of an unknown service or method gets gRPC's UNIMPLEMENTED.
async fn not_found(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        return Status::unimplemented(format!("no gRPC method {}", req.uri().path()))
            .into_http::<axum::body::Body>()
            .into_response();
    }
    (
        axum::http::StatusCode::NOT_FOUND,
        format!(
            "no page at {}; see / for the status page, /api/state, /metrics and /health\n",
            req.uri().path()
        ),
    )
        .into_response()
}

/// Waits until this master leads or knows a leader the caller can reach
/// (the caller names the master it lost in `UNREACHABLE_KEY`), at most
/// `LEADER_HOLD`: see [`Handle::await_leader`]. A follower thus answers
/// an attach or a subscription before reading it, and during an election
/// holds it for the outcome instead of refusing it at once.
pub(crate) async fn hold_for_leader<T>(
    handle: &crate::handle::Handle,
    request: &tonic::Request<T>,
) -> Result<(), Status> {
    let unreachable = request
        .metadata()
        .get(mezz_proto::client::UNREACHABLE_KEY)
        .and_then(|v| v.to_str().ok());
    handle
        .await_leader(unreachable, crate::handle::LEADER_HOLD)
        .await
        .map_err(status_from)
}

/// Maps a refused call to a gRPC status; a non-leader answer carries the
/// leader's address in the `mezz-leader` metadata.
pub fn status_from(e: CallError) -> Status {
    match e {
        CallError::Invalid(m) => Status::invalid_argument(m),
        CallError::NotFound(m) => Status::not_found(m),
        CallError::FailedPrecondition(m) => Status::failed_precondition(m),
        CallError::Aborted(m) => Status::aborted(m),
        CallError::NotLeader(leader) => {
            let mut s = Status::unavailable(CallError::NotLeader(leader.clone()).to_string());
            if let Some(l) = leader.and_then(|l| l.parse().ok()) {
                s.metadata_mut().insert(LEADER_HINT_KEY, l);
            }
            s
        }
    }
}

/// A response stream that tells the actor when the client goes away.
pub struct GuardedStream<T> {
    inner: ReceiverStream<Result<T, Status>>,
    on_drop: Option<(Handle, Input)>,
}

impl<T> GuardedStream<T> {
    /// Wraps `inner`; `input` is queued when the stream is dropped.
    pub fn new(inner: ReceiverStream<Result<T, Status>>, handle: Handle, input: Input) -> Self {
        GuardedStream {
            inner,
            on_drop: Some((handle, input)),
        }
    }
}

impl<T> Stream for GuardedStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T> Drop for GuardedStream<T> {
    fn drop(&mut self) {
        if let Some((handle, input)) = self.on_drop.take() {
            handle.send_later(input);
        }
    }
}
