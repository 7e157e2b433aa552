//! The operator API (`mezzanine.v1.Operator`) the CLI uses: cluster state,
//! who leads, killing a task by id, role weights and quotas, tokens, ACLs,
//! the sizes menu, and jobs (`mezz job` and the jobs framework).
//!
//! Jobs are authorized by their role, with the actions that already say
//! what a job does in it: storing or running one (SubmitJobs, a rerun,
//! UpdateJob, FireSchedule) is `register_frameworks` in the job's role, as
//! the jobs framework runs it there; stopping or holding one (kill, pause,
//! resume) is `kill_tasks` in its role; reading them is `view`.

use mezz_proto::auth::Token;
use mezz_proto::v1::{
    operator_server::Operator, AclDocument, ClusterState, CreateTokenRequest, CreateTokenResponse,
    Empty, GetAclsRequest, GetLeaderRequest, GetLeaderResponse, GetStateRequest, ListRolesRequest,
    ListRolesResponse, ListTokensRequest, ListTokensResponse, OperatorKillRequest,
    OperatorKillResponse, RevokeTokenRequest, RevokeTokenResponse, SetQuotaRequest,
    SetWeightRequest,
};
use mezz_proto::v1::{AuditEntries, GetAuditRequest, GrantTaskFilesRequest, TaskFilesGrant};
use mezz_proto::v1::{
    ControlJobRequest, FireScheduleRequest, GetJobRequest, JobList, JobRecord, ListJobsRequest,
    SubmitJobsRequest, UpdateJobRequest,
};
use mezz_proto::v1::{ListSizesRequest, ListSizesResponse, RemoveSizeRequest, SetSizeRequest};
use serde_json::json;
use tonic::{Request, Response, Status};

use super::auth::{denied, principal};
use super::guard::audit;
use super::status_from;
use crate::handle::{Handle, Input, JobViewer};
use crate::security::{self, Action, Principal};

/// The longest a token may be valid for: ten years.
const MAX_TOKEN_SECS: f64 = 10.0 * 365.0 * 86400.0;

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

    fn check(&self, who: Option<&Principal>, action: Action<'_>) -> Result<(), Status> {
        self.handle.guard().check(who, action).map_err(denied)
    }

    /// The cluster state as `who` may see it.
    async fn state_for(
        &self,
        who: Option<&Principal>,
        completed: bool,
    ) -> Result<ClusterState, Status> {
        let mut state = self.handle.ask(|r| Input::State(completed, r)).await?;
        if let Some(acls) = self.handle.guard().acls() {
            let anonymous = Principal(security::ANONYMOUS.into());
            security::filter_state(&mut state, &acls, who.unwrap_or(&anonymous));
        }
        Ok(state)
    }
}

#[tonic::async_trait]
impl Operator for OperatorApi {
    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<ClusterState>, Status> {
        let who = principal(&request);
        let completed = request.into_inner().completed;
        Ok(Response::new(
            self.state_for(who.as_ref(), completed).await?,
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
        let who = principal(&request);
        let req = request.into_inner();
        if req.task_id.is_empty() {
            return Err(Status::invalid_argument("task_id is empty"));
        }
        if self.handle.guard().acls().is_some() {
            // The object is the role of the task's framework.
            let state = self.handle.ask(|r| Input::State(false, r)).await?;
            let task = state.tasks.iter().find(|t| {
                t.id == req.task_id
                    && (req.framework_id.is_empty() || t.framework_id == req.framework_id)
            });
            if let Some(t) = task {
                self.check(who.as_ref(), Action::KillTask(&t.role))?;
            } else {
                // Unknown here; refuse the way an unknown task is refused
                // only to those who may kill anything.
                self.check(who.as_ref(), Action::KillTask("*"))?;
            }
        }
        let (fid, tid) = self
            .handle
            .ask(|r| Input::OperatorKill(req.task_id, req.framework_id, r))
            .await?
            .map_err(status_from)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "kill",
            json!({"framework_id": fid.0, "task_id": tid.0, "by": "operator"}),
        );
        Ok(Response::new(OperatorKillResponse {
            framework_id: fid.0,
            task_id: tid.0,
        }))
    }

    async fn set_quota(
        &self,
        request: Request<SetQuotaRequest>,
    ) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        if req.role.is_empty() {
            return Err(Status::invalid_argument("role is empty; name the role"));
        }
        self.check(who.as_ref(), Action::SetQuota(&req.role))?;
        let role = req.role.clone();
        self.handle
            .ask(|r| Input::SetQuota(req.role, req.guarantee, req.limit, r))
            .await?
            .map_err(status_from)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "set_quota",
            json!({"role": role}),
        );
        Ok(Response::new(Empty {}))
    }

    async fn set_weight(
        &self,
        request: Request<SetWeightRequest>,
    ) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        if req.role.is_empty() {
            return Err(Status::invalid_argument("role is empty; name the role"));
        }
        self.check(who.as_ref(), Action::SetWeight(&req.role))?;
        let (role, weight) = (req.role.clone(), req.weight);
        self.handle
            .ask(|r| Input::SetWeight(req.role, req.weight, r))
            .await?
            .map_err(status_from)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "set_weight",
            json!({"role": role, "weight": weight}),
        );
        Ok(Response::new(Empty {}))
    }

    async fn list_roles(
        &self,
        request: Request<ListRolesRequest>,
    ) -> Result<Response<ListRolesResponse>, Status> {
        let who = principal(&request);
        let state = self.state_for(who.as_ref(), false).await?;
        Ok(Response::new(ListRolesResponse { roles: state.roles }))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        self.check(who.as_ref(), Action::CreateToken)?;
        security::tokens::check_principal(&req.principal).map_err(Status::invalid_argument)?;
        let secs = req.expires_in_secs;
        if !secs.is_finite() || !(0.0..=MAX_TOKEN_SECS).contains(&secs) {
            return Err(Status::invalid_argument(format!(
                "expires_in_secs {secs} must be 0 (never) or a positive number of seconds up to ten years"
            )));
        }
        let token = Token::generate().map_err(Status::internal)?;
        let salt = Token::generate().map_err(Status::internal)?;
        let now = mezz_proto::unix_now();
        let expires_at = if secs > 0.0 { now + secs } else { 0.0 };
        let record = security::tokens::record(
            &token,
            &req.principal,
            salt.id().as_bytes(),
            now,
            expires_at,
        );
        self.handle
            .ask(|r| Input::AddToken(record, r))
            .await?
            .map_err(status_from)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "create_token",
            json!({"token_id": token.id(), "for": req.principal, "expires_at": expires_at}),
        );
        tracing::info!(
            token_id = token.id(),
            principal = req.principal,
            by = who
                .as_ref()
                .map(|p| p.0.as_str())
                .unwrap_or(security::ANONYMOUS),
            "token created"
        );
        Ok(Response::new(CreateTokenResponse {
            token: token.expose(),
            id: token.id().to_string(),
            expires_at,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        self.check(who.as_ref(), Action::CreateToken)?;
        let which = req.id_or_principal.trim().to_string();
        if which.is_empty() {
            return Err(Status::invalid_argument(
                "name a token id or a principal to revoke",
            ));
        }
        let ids = self.handle.guard().to_revoke(&which);
        self.handle
            .ask(|r| Input::RevokeTokens(which.clone(), mezz_proto::unix_now(), r))
            .await?
            .map_err(status_from)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "revoke_token",
            json!({"which": which, "token_ids": ids}),
        );
        tracing::info!(tokens = ?ids, "tokens revoked");
        Ok(Response::new(RevokeTokenResponse { ids }))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        self.check(principal(&request).as_ref(), Action::CreateToken)?;
        Ok(Response::new(ListTokensResponse {
            tokens: self.handle.guard().token_views(),
        }))
    }

    async fn get_acls(
        &self,
        request: Request<GetAclsRequest>,
    ) -> Result<Response<AclDocument>, Status> {
        self.check(principal(&request).as_ref(), Action::ManageAcls)?;
        Ok(Response::new(AclDocument {
            json: self.handle.guard().acls_json(),
            seed: false,
        }))
    }

    async fn set_acls(&self, request: Request<AclDocument>) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        self.check(who.as_ref(), Action::ManageAcls)?;
        let json = request.into_inner().json;
        let cleared = json.trim().is_empty();
        if !json.trim().is_empty() {
            let acls = security::Acls::parse(&json).map_err(Status::invalid_argument)?;
            let anonymous = Principal(security::ANONYMOUS.into());
            let me = who.as_ref().unwrap_or(&anonymous);
            if !acls.allows(me, Action::ManageAcls) {
                return Err(Status::invalid_argument(format!(
                    "these ACLs would deny you ('{me}') manage_acls, so nobody could change them \
                     again; add a `manage_acls` rule for '{me}'"
                )));
            }
        }
        self.handle
            .ask(|r| Input::SetAcls(json, r))
            .await?
            .map_err(status_from)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "set_acls",
            json!({"cleared": cleared}),
        );
        tracing::info!("ACLs replaced");
        Ok(Response::new(Empty {}))
    }

    async fn grant_task_files(
        &self,
        request: Request<GrantTaskFilesRequest>,
    ) -> Result<Response<TaskFilesGrant>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        super::guard::grant_task_files(&self.handle, who.as_ref(), &req.framework_id, &req.task_id)
            .await
            .map(Response::new)
    }

    async fn get_audit(
        &self,
        request: Request<GetAuditRequest>,
    ) -> Result<Response<AuditEntries>, Status> {
        let who = principal(&request);
        let limit = request.into_inner().limit as usize;
        let lines =
            super::guard::audit_lines(self.handle.guard(), who.as_ref(), limit).map_err(denied)?;
        Ok(Response::new(AuditEntries { lines }))
    }

    /// Anyone who may reach the master may read the menu: sizes are what
    /// users type, not a secret.
    async fn list_sizes(
        &self,
        _request: Request<ListSizesRequest>,
    ) -> Result<Response<ListSizesResponse>, Status> {
        let sizes = self.handle.ask(Input::Sizes).await?;
        Ok(Response::new(ListSizesResponse { sizes }))
    }

    async fn set_size(&self, request: Request<SetSizeRequest>) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        self.check(who.as_ref(), Action::ManageSizes)?;
        let size = request
            .into_inner()
            .size
            .ok_or_else(|| Status::invalid_argument("size is missing; send the size to set"))?;
        let detail = json!({"name": size.name, "cpus": size.cpus, "mem": size.mem,
            "gpus": size.gpus, "gpu_model": size.gpu_model});
        self.handle
            .ask(|r| Input::SetSize(size, r))
            .await?
            .map_err(status_from)?;
        audit(self.handle.guard(), who.as_ref(), "set_size", detail);
        Ok(Response::new(Empty {}))
    }

    async fn remove_size(
        &self,
        request: Request<RemoveSizeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let who = principal(&request);
        self.check(who.as_ref(), Action::ManageSizes)?;
        let name = request.into_inner().name;
        let detail = json!({"name": name});
        self.handle
            .ask(|r| Input::RemoveSize(name, r))
            .await?
            .map_err(status_from)?;
        audit(self.handle.guard(), who.as_ref(), "remove_size", detail);
        Ok(Response::new(Empty {}))
    }

    async fn submit_jobs(
        &self,
        request: Request<SubmitJobsRequest>,
    ) -> Result<Response<JobList>, Status> {
        let who = principal(&request);
        let jobs = request.into_inner().jobs;
        for job in &jobs {
            self.check(who.as_ref(), Action::RegisterFramework(job_role(job)))?;
        }
        let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
        let by = who.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        let jobs = self
            .handle
            .ask(|r| Input::SubmitJobs(jobs, by, r))
            .await?
            .map_err(status_from)?;
        audit(
            self.handle.guard(),
            who.as_ref(),
            "submit_jobs",
            json!({"jobs": names}),
        );
        let matched = jobs.len() as u64;
        Ok(Response::new(JobList { jobs, matched }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<JobRecord>, Status> {
        let who = principal(&request);
        let name = request.into_inner().name;
        let job = self.stored_job(&name).await?;
        self.check(who.as_ref(), Action::View(job_role(&job)))?;
        Ok(Response::new(job))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<JobList>, Status> {
        let who = principal(&request);
        let viewer = self.job_viewer(who);
        let req = request.into_inner();
        let list = self
            .handle
            .ask(|r| Input::ListJobs(req, viewer, r))
            .await?
            .map_err(status_from)?;
        Ok(Response::new(list))
    }

    async fn update_job(
        &self,
        request: Request<UpdateJobRequest>,
    ) -> Result<Response<JobRecord>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let name = req.job.as_ref().map(|j| j.name.clone()).unwrap_or_default();
        let stored = self.stored_job(&name).await?;
        self.check(who.as_ref(), Action::RegisterFramework(job_role(&stored)))?;
        let job = self
            .handle
            .ask(|r| Input::UpdateJob(req, r))
            .await?
            .map_err(status_from)?;
        one(job)
    }

    async fn control_job(
        &self,
        request: Request<ControlJobRequest>,
    ) -> Result<Response<JobRecord>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let stored = self.stored_job(&req.name).await?;
        let role = job_role(&stored);
        match req.action.as_str() {
            "rerun" => self.check(who.as_ref(), Action::RegisterFramework(role))?,
            // An unknown action is refused by the state machine, naming
            // the four; kill_tasks is checked first so that it is refused
            // the same way whoever asks.
            _ => self.check(who.as_ref(), Action::KillTask(role))?,
        }
        let by = who.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        let detail = json!({"job": req.name, "action": req.action});
        let job = self
            .handle
            .ask(|r| Input::ControlJob(req.name, req.action, by, r))
            .await?
            .map_err(status_from)?;
        audit(self.handle.guard(), who.as_ref(), "control_job", detail);
        one(job)
    }

    async fn fire_schedule(
        &self,
        request: Request<FireScheduleRequest>,
    ) -> Result<Response<JobRecord>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let stored = self.stored_job(&req.name).await?;
        self.check(who.as_ref(), Action::RegisterFramework(job_role(&stored)))?;
        if let Some(run) = &req.run {
            self.check(who.as_ref(), Action::RegisterFramework(job_role(run)))?;
        }
        let job = self
            .handle
            .ask(|r| Input::FireSchedule(req, r))
            .await?
            .map_err(status_from)?;
        one(job)
    }
}

/// The role a job's ACLs are checked against: its own, `*` when it names
/// none (as the masters store it).
fn job_role(job: &JobRecord) -> &str {
    if job.role.is_empty() {
        mezz_proto::resources::UNRESERVED_ROLE
    } else {
        &job.role
    }
}

/// The one record a change of one job is answered with.
fn one(mut jobs: Vec<JobRecord>) -> Result<Response<JobRecord>, Status> {
    jobs.pop()
        .map(Response::new)
        .ok_or_else(|| Status::internal("the masters answered a change of a job with no job"))
}

impl OperatorApi {
    /// The stored job called `name`, or NOT_FOUND (read before an ACL
    /// check that needs its role).
    async fn stored_job(&self, name: &str) -> Result<JobRecord, Status> {
        let key = name.to_string();
        self.handle
            .ask(|r| Input::GetJob(key, r))
            .await?
            .ok_or_else(|| {
                Status::not_found(format!("no job '{name}'; `mezz job list` shows the jobs"))
            })
    }

    /// Who reads jobs, where ACLs are on.
    fn job_viewer(&self, who: Option<Principal>) -> Option<JobViewer> {
        self.handle.guard().acls().map(|acls| JobViewer {
            acls,
            principal: who.unwrap_or_else(|| Principal(security::ANONYMOUS.into())),
        })
    }
}
