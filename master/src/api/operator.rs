//! The operator API (`mezzanine.v1.Operator`) the CLI uses: cluster state,
//! who leads, killing a task by id, and role weights and quotas.

use mezz_proto::v1::{
    operator_server::Operator, ClusterState, Empty, GetLeaderRequest, GetLeaderResponse,
    GetStateRequest, ListRolesRequest, ListRolesResponse, OperatorKillRequest,
    OperatorKillResponse, SetQuotaRequest, SetWeightRequest,
};
use tonic::{Request, Response, Status};

use super::status_from;
use crate::server::{Handle, Input};

/// Serves the operator API.
pub struct OperatorApi {
    handle: Handle,
    me: u64,
}

impl OperatorApi {
    /// A service over the actor behind `handle`.
    pub fn new(handle: Handle, me: u64) -> Self {
        OperatorApi { handle, me }
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
        let (is_leader, leader) = self.handle.ask(Input::WhoLeads).await?;
        Ok(Response::new(GetLeaderResponse {
            is_leader,
            leader: leader.unwrap_or_default(),
            id: self.me,
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

    async fn set_quota(
        &self,
        request: Request<SetQuotaRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        if req.role.is_empty() {
            return Err(Status::invalid_argument("role is empty; name the role"));
        }
        self.handle
            .ask(|r| Input::SetQuota(req.role, req.guarantee, req.limit, r))
            .await?
            .map_err(status_from)?;
        Ok(Response::new(Empty {}))
    }

    async fn set_weight(
        &self,
        request: Request<SetWeightRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        if req.role.is_empty() {
            return Err(Status::invalid_argument("role is empty; name the role"));
        }
        self.handle
            .ask(|r| Input::SetWeight(req.role, req.weight, r))
            .await?
            .map_err(status_from)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_roles(
        &self,
        _request: Request<ListRolesRequest>,
    ) -> Result<Response<ListRolesResponse>, Status> {
        let state = self.handle.ask(|r| Input::State(false, r)).await?;
        Ok(Response::new(ListRolesResponse { roles: state.roles }))
    }
}
