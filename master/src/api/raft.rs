//! The peer service (`mezzanine.v1.RaftPeer`): raft messages from the other
//! masters, checked and handed to the actor.

use mezz_proto::v1::{raft_peer_server::RaftPeer, Empty, RaftBatch};
use tonic::{Request, Response, Status};

use crate::handle::Handle;
use crate::replication::transport::decode_batch;

/// Serves raft traffic from peers.
pub struct RaftApi {
    handle: Handle,
    me: u64,
    peers: Vec<u64>,
}

impl RaftApi {
    /// A service for master `me` of the group `peers`.
    pub fn new(handle: Handle, me: u64, peers: Vec<u64>) -> Self {
        RaftApi { handle, me, peers }
    }
}

#[tonic::async_trait]
impl RaftPeer for RaftApi {
    async fn send(&self, request: Request<RaftBatch>) -> Result<Response<Empty>, Status> {
        let batch = request.into_inner();
        if !self.peers.contains(&batch.from) || batch.from == self.me {
            return Err(Status::permission_denied(format!(
                "master {} is not a peer of master {} (peers {:?}); check --id and --peers",
                batch.from, self.me, self.peers
            )));
        }
        let msgs = decode_batch(self.me, &batch).map_err(Status::invalid_argument)?;
        self.handle.raft(msgs).await?;
        Ok(Response::new(Empty {}))
    }
}
