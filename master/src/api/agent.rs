//! The agent gateway (`mezzanine.v1.AgentGateway`): one bidirectional
//! stream per agent. The first message must register; heartbeats and status
//! updates follow.

use futures::StreamExt;
use mezz_proto::v1::{
    agent_gateway_server::AgentGateway, agent_message, AgentMessage, MasterMessage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::GuardedStream;
use crate::handle::{Handle, Input};

/// Serves the agent gateway.
pub struct AgentApi {
    handle: Handle,
}

impl AgentApi {
    /// A service over the actor behind `handle`.
    pub fn new(handle: Handle) -> Self {
        AgentApi { handle }
    }
}

#[tonic::async_trait]
impl AgentGateway for AgentApi {
    type AttachStream = GuardedStream<MasterMessage>;

    async fn attach(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.handle
            .guard()
            .check(
                super::auth::principal(&request).as_ref(),
                crate::security::Action::RegisterAgent,
            )
            .map_err(super::auth::denied)?;
        // A follower answers before reading the registration, let alone
        // queuing it for the actor.
        super::hold_for_leader(&self.handle, &request).await?;
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        let mut incoming = request.into_inner();
        let first = incoming.next().await.ok_or_else(|| {
            Status::invalid_argument("the agent stream closed before registering")
        })??;
        let Some(agent_message::Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message on an agent stream must be RegisterAgent",
            ));
        };
        let conn = self.handle.next_conn();
        let (tx, rx) = mpsc::channel(crate::handle::STREAM_QUEUE_LEN);
        self.handle
            .send(Input::AgentRegister(conn, register, tx, peer))
            .await?;
        let handle = self.handle.clone();
        tokio::spawn(async move {
            while let Some(msg) = incoming.next().await {
                let input = match msg {
                    Ok(AgentMessage {
                        message: Some(agent_message::Message::Heartbeat(hb)),
                    }) => Input::AgentHeartbeat(conn, hb.gpus),
                    Ok(AgentMessage {
                        message: Some(agent_message::Message::StatusUpdate(u)),
                    }) => match u.status {
                        Some(s) => Input::AgentUpdate(conn, s),
                        None => continue,
                    },
                    Ok(_) => {
                        tracing::warn!(conn, "unexpected message on an agent stream; closing it");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(conn, "agent stream error: {e}");
                        break;
                    }
                };
                if handle.send(input).await.is_err() {
                    return;
                }
            }
            let _ = handle.send(Input::AgentGone(conn)).await;
        });
        Ok(Response::new(GuardedStream::new(
            ReceiverStream::new(super::guard::with_grant_key(rx, self.handle.guard())),
            self.handle.clone(),
            Input::AgentGone(conn),
        )))
    }
}
