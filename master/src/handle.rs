//! The master actor's mailbox: what the API services hand the actor
//! ([`Input`]) and the [`Handle`] they hand it through. Its own module so
//! that the services (`api`) and the shell that runs the actor (`server`)
//! both depend on it and never on each other: `server` builds the router
//! from `api`, and `api` knows only this mailbox.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mezz_proto::v1::{
    ClusterState, Event, FrameworkInfo, JobRecord, MasterMessage, RegisterAgent, TaskStatus,
};
use mezz_proto::{FrameworkId, TaskId};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::cluster::{CallError, ConnId};
use crate::security::Guard;

/// Outbound queue of one stream. A peer that falls this far behind is
/// disconnected rather than letting the master's memory grow.
pub const STREAM_QUEUE_LEN: usize = 4096;
/// Sender half of an agent's response stream.
pub type AgentTx = mpsc::Sender<Result<MasterMessage, Status>>;
/// Sender half of a framework's event stream.
pub type FrameworkTx = mpsc::Sender<Result<Event, Status>>;

pub use crate::node::Call;

/// Where the answer to a change of jobs goes: the stored records of the
/// jobs it changed, once the change is applied.
pub type JobsReply = oneshot::Sender<Result<Vec<JobRecord>, CallError>>;

/// Who reads jobs while ACLs are on: they see the jobs of the roles they
/// may `view`, as with tasks.
#[derive(Debug, Clone)]
pub struct JobViewer {
    /// The ACLs in force.
    pub acls: Arc<crate::security::Acls>,
    /// The caller (`anonymous` without a token).
    pub principal: crate::security::Principal,
}

impl JobViewer {
    /// Whether the caller may see a job of `role`.
    pub fn may_view(&self, role: &str) -> bool {
        self.acls
            .allows(&self.principal, crate::security::Action::View(role))
    }
}

/// What the API services hand to the actor.
#[derive(Debug)]
pub enum Input {
    /// First message of an agent stream, and the peer it came from.
    AgentRegister(ConnId, RegisterAgent, AgentTx, Option<std::net::SocketAddr>),
    /// Agent heartbeat.
    AgentHeartbeat(ConnId, Vec<mezz_proto::v1::GpuUsage>),
    /// Agent status update.
    AgentUpdate(ConnId, TaskStatus),
    /// Agent stream ended.
    AgentGone(ConnId),
    /// A framework subscribes.
    Subscribe(
        ConnId,
        u32,
        FrameworkInfo,
        FrameworkTx,
        oneshot::Sender<Result<(), CallError>>,
    ),
    /// Framework stream ended.
    FrameworkGone(ConnId),
    /// A scheduler call.
    Call(Call, oneshot::Sender<Result<(), CallError>>),
    /// Operator kill.
    OperatorKill(
        String,
        String,
        oneshot::Sender<Result<(FrameworkId, TaskId), CallError>>,
    ),
    /// Operator: set a role's quota (role, guarantee, limit); answered
    /// once the change is durable in the replicated log.
    SetQuota(
        String,
        Vec<mezz_proto::v1::Resource>,
        Vec<mezz_proto::v1::Resource>,
        oneshot::Sender<Result<(), CallError>>,
    ),
    /// Operator: set a role's weight; answered once durable.
    SetWeight(String, f64, oneshot::Sender<Result<(), CallError>>),
    /// Operator: add a token (its salted hash); answered once durable.
    AddToken(
        mezz_proto::v1::TokenRecord,
        oneshot::Sender<Result<(), CallError>>,
    ),
    /// Operator: revoke the tokens of an id or a principal at a Unix
    /// time; answered once durable.
    RevokeTokens(String, f64, oneshot::Sender<Result<(), CallError>>),
    /// Operator: replace the ACLs (JSON; empty turns them off); answered
    /// once durable.
    SetAcls(String, oneshot::Sender<Result<(), CallError>>),
    /// Operator: add or replace a named size; answered once durable.
    SetSize(
        mezz_proto::v1::SizeView,
        oneshot::Sender<Result<(), CallError>>,
    ),
    /// Operator: remove a named size; answered once durable.
    RemoveSize(String, oneshot::Sender<Result<(), CallError>>),
    /// Read the sizes menu.
    Sizes(oneshot::Sender<Vec<mezz_proto::v1::SizeView>>),
    /// `SubmitJobs` (the jobs, the caller's principal or empty); answered
    /// with the stored records once durable.
    SubmitJobs(Vec<JobRecord>, String, JobsReply),
    /// `UpdateJob`; answered with the stored record once durable.
    UpdateJob(mezz_proto::v1::UpdateJobRequest, JobsReply),
    /// `ControlJob` (name, action, the caller's principal or empty);
    /// answered with the stored record once durable.
    ControlJob(String, String, String, JobsReply),
    /// `FireSchedule`; answered with the scheduled job's record once
    /// durable.
    FireSchedule(mezz_proto::v1::FireScheduleRequest, JobsReply),
    /// Read one job.
    GetJob(String, oneshot::Sender<Option<JobRecord>>),
    /// `ListJobs`, with only the jobs `JobViewer` may view when ACLs are
    /// on.
    ListJobs(
        mezz_proto::v1::ListJobsRequest,
        Option<JobViewer>,
        oneshot::Sender<Result<mezz_proto::v1::JobList, CallError>>,
    ),
    /// A job with the jobs it waits for, those waiting on it and its
    /// latest runs (the job's status page).
    JobDetail(String, oneshot::Sender<Option<crate::job_store::JobDetail>>),
    /// One task by framework and task id (active or recently completed).
    Task(
        String,
        String,
        oneshot::Sender<Option<mezz_proto::v1::TaskView>>,
    ),
    /// Whether this master leads, and the leader's address if known.
    WhoLeads(oneshot::Sender<(bool, Option<String>)>),
    /// Read the cluster state.
    State(bool, oneshot::Sender<ClusterState>),
    /// Prometheus text.
    Metrics(oneshot::Sender<String>),
}

impl Input {
    /// Whether only a leader whose state is current may act on this.
    pub(crate) fn needs_leader(&self) -> bool {
        matches!(
            self,
            Input::AgentRegister(..)
                | Input::Subscribe(..)
                | Input::Call(..)
                | Input::OperatorKill(..)
                | Input::SetQuota(..)
                | Input::SetWeight(..)
                | Input::AddToken(..)
                | Input::RevokeTokens(..)
                | Input::SetAcls(..)
                | Input::SetSize(..)
                | Input::RemoveSize(..)
                | Input::SubmitJobs(..)
                | Input::UpdateJob(..)
                | Input::ControlJob(..)
                | Input::FireSchedule(..)
        )
    }
}

/// A cheap handle the services use to reach the actor.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Input>,
    /// Raft messages from the peers, on their own queue: the actor takes
    /// them before any client's input, so that a flood of calls cannot hold
    /// back the heartbeats and votes that keep the group's leader.
    raft_tx: mpsc::Sender<Vec<raft::eraftpb::Message>>,
    conns: Arc<AtomicU64>,
    /// Why the state machine stopped, once it has.
    fatal: Arc<std::sync::OnceLock<String>>,
    /// Tokens and ACLs as last applied, for the API layer.
    guard: Arc<Guard>,
}

impl Handle {
    /// A handle on the actor that reads `tx`; `fatal` is set by the shell
    /// when the state machine stops.
    pub(crate) fn new(
        tx: mpsc::Sender<Input>,
        raft_tx: mpsc::Sender<Vec<raft::eraftpb::Message>>,
        fatal: Arc<std::sync::OnceLock<String>>,
        guard: Arc<Guard>,
    ) -> Handle {
        Handle {
            tx,
            raft_tx,
            conns: Arc::new(AtomicU64::new(1)),
            fatal,
            guard,
        }
    }

    /// Who may call, and do what.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// `None` while the state machine runs; otherwise why it stopped
    /// (`/health` then answers 503 until the process exits).
    pub fn failure(&self) -> Option<String> {
        if let Some(why) = self.fatal.get() {
            return Some(why.clone());
        }
        self.tx
            .is_closed()
            .then(|| "the master's state machine has stopped".to_string())
    }

    /// A fresh stream id.
    pub fn next_conn(&self) -> ConnId {
        self.conns.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues an input.
    pub async fn send(&self, input: Input) -> Result<(), Status> {
        self.tx
            .send(input)
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))
    }

    /// Queues raft messages from a peer master.
    pub async fn raft(&self, msgs: Vec<raft::eraftpb::Message>) -> Result<(), Status> {
        self.raft_tx
            .send(msgs)
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))
    }

    /// Queues an input from a context that cannot wait (a `Drop`).
    pub fn send_later(&self, input: Input) {
        let tx = self.tx.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tx.send(input).await;
            });
        }
    }

    /// Sends an input built around a reply channel and waits for the reply.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Input,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await
            .map_err(|_| Status::unavailable("the master is shutting down"))
    }
}
