//! The operator API (`mezzanine.v1.Operator`) the CLI uses: cluster state,
//! who leads, and killing a task by id.

use mezz_proto::v1::{
    operator_server::Operator, ClusterState, GetLeaderRequest, GetLeaderResponse, GetStateRequest,
    OperatorKillRequest, OperatorKillResponse,
};
use tonic::{Request, Response, Status};

use super::status_from;
use crate::server::{Handle, Input};

/// Serves the operator API.
pub struct OperatorApi {
    handle: Handle,
}

impl OperatorApi {
    /// A service over the actor behind `handle`.
    pub fn new(handle: Handle) -> Self {
        OperatorApi { handle }
    }
}

#[tonic::async_trait]
impl Operator for OperatorApi {
    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<ClusterState>, Status> {
        let completed = request.into_inner().completed;
        Ok(Response::new(
            self.handle.ask(|r| Input::State(completed, r)).await?,
        ))
    }

    async fn get_leader(
        &self,
        _request: Request<GetLeaderRequest>,
    ) -> Result<Response<GetLeaderResponse>, Status> {
        let state = self.handle.ask(|r| Input::State(false, r)).await?;
        let me = state.masters.iter().find(|m| !m.role.is_empty());
        Ok(Response::new(GetLeaderResponse {
            is_leader: me.is_some_and(|m| m.role == "leader"),
            leader: state.leader,
            id: me.map(|m| m.id).unwrap_or_default(),
        }))
    }

    async fn kill_task(
        &self,
        request: Request<OperatorKillRequest>,
    ) -> Result<Response<OperatorKillResponse>, Status> {
        let req = request.into_inner();
        if req.task_id.is_empty() {
            return Err(Status::invalid_argument("task_id is empty"));
        }
        let (fid, tid) = self
            .handle
            .ask(|r| Input::OperatorKill(req.task_id, req.framework_id, r))
            .await?
            .map_err(status_from)?;
        Ok(Response::new(OperatorKillResponse {
            framework_id: fid.0,
            task_id: tid.0,
        }))
    }
}
