//! The master actor's mailbox: what the API services hand the actor
//! ([`Input`]) and the [`Handle`] they hand it through. Its own module so
//! that the services (`api`) and the shell that runs the actor (`server`)
//! both depend on it and never on each other: `server` builds the router
//! from `api`, and `api` knows only this mailbox.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mezz_proto::v1::{
    ClusterState, Event, FrameworkInfo, JobRecord, MasterMessage, RegisterAgent, TaskStatus,
};
use mezz_proto::{FrameworkId, TaskId};
use tokio::sync::{mpsc, oneshot, watch};
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

/// Who leads, as the actor last settled it: what the services answer an
/// agent's attach or a framework's subscription with before they queue
/// anything for the actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This master leads (it may still be catching up: the actor then
    /// holds what needs the leader for the moment that takes).
    pub leading: bool,
    /// The leader's address, when another master leads and is known.
    pub leader: Option<String>,
}

/// What a master does with an agent that attaches or a framework that
/// subscribes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attach {
    /// This master leads: take the call.
    Serve,
    /// Send the caller to the leader at this address.
    Redirect(String),
    /// No leader is known, or the one known is the master the caller just
    /// failed to reach: wait for news of another.
    Wait,
}

impl Leadership {
    /// What to do with a caller that could not reach `unreachable` (an
    /// address as the caller named it) last.
    pub(crate) fn attach(&self, unreachable: Option<&str>) -> Attach {
        if self.leading {
            return Attach::Serve;
        }
        match &self.leader {
            Some(leader)
                if unreachable.is_none_or(|u| {
                    mezz_proto::client::normalize(u) != mezz_proto::client::normalize(leader)
                }) =>
            {
                Attach::Redirect(leader.clone())
            }
            _ => Attach::Wait,
        }
    }
}

/// How long a follower holds an agent's attach or a framework's
/// subscription while it knows no leader the caller can reach (see
/// [`Handle::await_leader`]): longer than an election takes (raft's
/// timeout is 0.5 to 1 s), short enough that a caller which only lost its
/// own link to a live leader is soon sent back.
pub const LEADER_HOLD: Duration = Duration::from_secs(2);

/// [`Handle::await_leader`] over the leadership as `rx` publishes it.
async fn await_leader(
    mut rx: watch::Receiver<Leadership>,
    unreachable: Option<&str>,
    hold: Duration,
) -> Result<(), CallError> {
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let now = rx.borrow_and_update().clone();
        match now.attach(unreachable) {
            Attach::Serve => return Ok(()),
            Attach::Redirect(leader) => return Err(CallError::NotLeader(Some(leader))),
            Attach::Wait => {}
        }
        if !matches!(
            tokio::time::timeout_at(deadline, rx.changed()).await,
            Ok(Ok(()))
        ) {
            // No news in time (or the actor is gone): the leader known, if
            // any, is the best answer there is.
            return Err(CallError::NotLeader(now.leader));
        }
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
    /// Who leads, as the actor last settled it.
    leadership: watch::Receiver<Leadership>,
}

impl Handle {
    /// A handle on the actor that reads `tx`; `fatal` is set by the shell
    /// when the state machine stops.
    pub(crate) fn new(
        tx: mpsc::Sender<Input>,
        raft_tx: mpsc::Sender<Vec<raft::eraftpb::Message>>,
        fatal: Arc<std::sync::OnceLock<String>>,
        guard: Arc<Guard>,
        leadership: watch::Receiver<Leadership>,
    ) -> Handle {
        Handle {
            tx,
            raft_tx,
            conns: Arc::new(AtomicU64::new(1)),
            fatal,
            guard,
            leadership,
        }
    }

    /// Waits, at most `hold`, until this master leads or knows a leader
    /// other than `unreachable`: `Ok` when it leads, otherwise the
    /// refusal (`NotLeader`) that sends the caller to the leader (or, with
    /// none known by then, back to its search). A follower answers without
    /// queuing anything for the actor, and while a leader is being elected
    /// it holds agents and frameworks instead of having each poll it: after
    /// a leader dies, thousands of its agents wait here for the election's
    /// outcome.
    pub async fn await_leader(
        &self,
        unreachable: Option<&str>,
        hold: Duration,
    ) -> Result<(), CallError> {
        await_leader(self.leadership.clone(), unreachable, hold).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn follower_of(leader: Option<&str>) -> Leadership {
        Leadership {
            leading: false,
            leader: leader.map(str::to_string),
        }
    }

    #[test]
    fn a_follower_sends_agents_to_the_leader_unless_they_could_not_reach_it() {
        let leading = Leadership {
            leading: true,
            leader: None,
        };
        assert_eq!(leading.attach(Some("m1:1")), Attach::Serve);
        let follower = follower_of(Some("m1:1"));
        assert_eq!(follower.attach(None), Attach::Redirect("m1:1".into()));
        assert_eq!(
            follower.attach(Some("m2:2")),
            Attach::Redirect("m1:1".into())
        );
        // The same master however the agent spelled it.
        assert_eq!(follower.attach(Some("m1:1")), Attach::Wait);
        assert_eq!(follower.attach(Some("http://m1:1/")), Attach::Wait);
        // No leader known: an election is on.
        assert_eq!(follower_of(None).attach(None), Attach::Wait);
    }

    #[tokio::test]
    async fn an_agent_waits_on_a_follower_for_the_election_then_goes_to_the_winner() {
        let (tx, rx) = watch::channel(follower_of(Some("m1:1")));
        let hold = Duration::from_secs(20);
        let waiting = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = await_leader(rx, Some("m1:1"), hold).await;
            (r, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(follower_of(None));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "answered while no leader was known");
        tx.send_replace(follower_of(Some("m3:3")));
        let (r, waited) = waiting.await.unwrap();
        assert_eq!(r, Err(CallError::NotLeader(Some("m3:3".into()))));
        assert!(waited < hold, "held {waited:?}");
    }

    #[tokio::test]
    async fn a_follower_that_becomes_leader_serves_the_agent_it_held() {
        let (tx, rx) = watch::channel(follower_of(None));
        let waiting = tokio::spawn(await_leader(rx, None, Duration::from_secs(20)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(Leadership {
            leading: true,
            leader: None,
        });
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn without_news_the_hold_ends_with_the_leader_known() {
        let hold = Duration::from_millis(200);
        let (_tx, rx) = watch::channel(follower_of(Some("m1:1")));
        let started = std::time::Instant::now();
        let r = await_leader(rx, Some("m1:1"), hold).await;
        assert_eq!(r, Err(CallError::NotLeader(Some("m1:1".into()))));
        assert!(started.elapsed() >= hold);
        let (_tx, rx) = watch::channel(follower_of(None));
        let r = await_leader(rx, None, hold).await;
        assert_eq!(r, Err(CallError::NotLeader(None)));
    }
}
