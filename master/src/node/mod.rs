//! One master as a whole, without sockets: the cluster state machine and
//! its raft replica glued together the way every master runs them. Its
//! only I/O is the replica's own storage (sled on disk, the same code in a
//! temporary directory under the simulation), and its only clock read
//! times an allocation cycle for the metrics, never deciding anything. The
//! shell in `server.rs` feeds it from sockets and a clock; the simulation
//! in `sim/node/` (run by its tests in `sim/node/tests.rs`) feeds several of
//! them from a seeded, faulty network.
//! Both therefore exercise the same rules:
//!
//! - only the leader takes registrations, subscriptions and calls;
//! - offers are made, and launches accepted, only under the leader lease;
//! - whatever must survive a failover is applied only once committed;
//! - a leader just elected holds client inputs until its state is
//!   current, and operator changes are answered only once applied
//!   ([`Waiting`], which the shell and the simulation both use);
//! - on a change of leadership the soft state starts afresh from the
//!   replicated registry, so offers of an old leader are void.

use std::path::Path;
use std::time::{Duration, Instant};

use mezz_proto::v1::{
    AcceptRequest, FrameworkInfo, GpuUsage, ReconcileTask, RegisterAgent, ReplicatedSnapshot,
    TaskStatus,
};
use mezz_proto::{FrameworkId, TaskId};
use raft::eraftpb::Message as RaftMessage;

use crate::cluster::{CallError, Cluster, ConnId, Effect, Millis, Timeouts};
use crate::metrics::Histogram;
use crate::registry::Registry;
use crate::replication::transport::PeerReport;
use crate::replication::{Applied, Replica};
use crate::MasterError;

mod waiting;

pub use waiting::Waiting;

/// How long one call of `settle` may spend in allocation cycles (see
/// `Node::run_until_quiet`).
const ALLOCATION_PER_SETTLE: Duration = Duration::from_millis(50);

/// The name of a replicated command's kind, for logs.
fn kind(cmd: &mezz_proto::v1::ReplicatedCommand) -> &'static str {
    use mezz_proto::v1::replicated_command::Command;
    match &cmd.command {
        Some(Command::RegisterAgent(_)) => "register-agent",
        Some(Command::RemoveAgent(_)) => "remove-agent",
        Some(Command::RegisterFramework(_)) => "register-framework",
        Some(Command::RemoveFramework(_)) => "remove-framework",
        Some(Command::SetRole(_)) => "set-role",
        Some(Command::AgentReturned(_)) => "agent-returned",
        Some(Command::PinAgentSecret(_)) => "pin-agent-secret",
        Some(Command::TasksFinished(_)) => "tasks-finished",
        Some(Command::AddToken(_)) => "add-token",
        Some(Command::RevokeTokens(_)) => "revoke-tokens",
        Some(Command::SetAcls(_)) => "set-acls",
        Some(Command::SetSize(_)) => "set-size",
        Some(Command::RemoveSize(_)) => "remove-size",
        Some(Command::JobsSubmitted(_)) => "jobs-submitted",
        Some(Command::JobUpdated(_)) => "job-updated",
        Some(Command::JobControl(_)) => "job-control",
        Some(Command::JobFired(_)) => "job-fired",
        None => "empty",
    }
}

/// A scheduler call.
#[derive(Debug, Clone)]
pub enum Call {
    /// ACCEPT.
    Accept(AcceptRequest),
    /// DECLINE.
    Decline {
        /// Framework.
        framework_id: String,
        /// Offers.
        offer_ids: Vec<String>,
        /// Filter length.
        refuse_seconds: Option<f64>,
    },
    /// REVIVE.
    Revive(String),
    /// SUPPRESS.
    Suppress(String),
    /// KILL.
    Kill {
        /// Framework.
        framework_id: String,
        /// Task.
        task_id: String,
        /// Grace period override.
        grace: Option<f64>,
    },
    /// ACKNOWLEDGE.
    Acknowledge {
        /// Framework.
        framework_id: String,
        /// Agent.
        agent_id: String,
        /// Task.
        task_id: String,
        /// Update id.
        uuid: String,
    },
    /// Several ACKNOWLEDGEs of one framework: (agent, task, update id).
    AcknowledgeMany {
        /// Framework.
        framework_id: String,
        /// Agent, task and update id of each.
        acks: Vec<(String, String, String)>,
    },
    /// RECONCILE.
    Reconcile(String, Vec<ReconcileTask>),
    /// TEARDOWN.
    Teardown(String),
    /// SET_DEMAND: what the framework waits to place.
    SetDemand(mezz_proto::v1::SetDemandRequest),
}

/// Where a node's output goes.
pub trait Outbox {
    /// Carries out stream effects (sends and closes) in order. Returns the
    /// agent and framework streams that could not take a message and must
    /// be treated as gone.
    fn deliver(&mut self, effects: Vec<Effect>) -> Dropped;
    /// Sends raft messages to the other masters.
    fn send_raft(&mut self, msgs: Vec<RaftMessage>);
}

/// Streams an [`Outbox`] could not deliver to.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Agent streams.
    pub agents: Vec<ConnId>,
    /// Framework streams.
    pub frameworks: Vec<ConnId>,
}

/// One master: see the module docs.
pub struct Node {
    cluster: Cluster,
    replica: Replica,
    timeouts: Timeouts,
    was_leader: bool,
    /// A fresh master id for every term this master leads (as in Mesos,
    /// a new id tells clients they talk to a new incarnation).
    fresh_id: Box<dyn FnMut() -> String + Send>,
    allocation_time: Histogram,
}

impl Node {
    /// Opens the master with raft id `id` in the group `voters`, its log
    /// under `dir`. The registry starts from the stored snapshot; the log
    /// after it is replayed by the first [`Node::settle`].
    pub fn open(
        dir: &Path,
        id: u64,
        voters: &[u64],
        snapshot_every: u64,
        timeouts: Timeouts,
        fresh_id: Box<dyn FnMut() -> String + Send>,
    ) -> Result<Self, MasterError> {
        let (replica, snapshot) = Replica::open(dir, id, voters)?;
        Ok(Self::from_replica(
            replica,
            snapshot,
            snapshot_every,
            timeouts,
            fresh_id,
        ))
    }

    /// A node around an opened replica and the snapshot it returned.
    pub fn from_replica(
        mut replica: Replica,
        snapshot: Option<ReplicatedSnapshot>,
        snapshot_every: u64,
        timeouts: Timeouts,
        mut fresh_id: Box<dyn FnMut() -> String + Send>,
    ) -> Self {
        replica.set_snapshot_every(snapshot_every);
        let registry = snapshot
            .map(|s| Registry::from_snapshot(&s))
            .unwrap_or_default();
        let cluster = Cluster::new(fresh_id(), timeouts.clone(), registry, 0);
        Node {
            cluster,
            replica,
            timeouts,
            was_leader: false,
            fresh_id,
            allocation_time: Histogram::default(),
        }
    }

    /// Sets the Unix time, in seconds, at which the shell's clock read 0
    /// (see [`Cluster::set_wall_epoch`]).
    pub fn set_wall_epoch(&mut self, unix_secs: f64) {
        self.cluster.set_wall_epoch(unix_secs);
    }

    /// How many finished tasks this master keeps in its replicated history
    /// (`--max-completed-tasks`); call before the first settle.
    pub fn set_finished_kept(&mut self, n: usize) {
        self.cluster.set_finished_kept(n);
    }

    /// How many ended jobs this master keeps (`--jobs-kept`); call before
    /// the first settle.
    pub fn set_jobs_kept(&mut self, n: usize) {
        self.cluster.set_jobs_kept(n);
    }

    /// The priority classes and preemption limits (`--priority-class`).
    pub fn set_scheduling(&mut self, config: crate::scheduling::SchedulingConfig) {
        self.cluster.set_scheduling(config);
    }

    /// The state machine.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The raft replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Wall time of allocation cycles.
    pub fn allocation_time(&self) -> &Histogram {
        &self.allocation_time
    }

    /// True while this master leads.
    pub fn is_leader(&self) -> bool {
        self.replica.is_leader()
    }

    /// True while this master leads and its state is current (it has
    /// applied an entry of its own term).
    pub fn is_current_leader(&self) -> bool {
        self.replica.is_current_leader()
    }

    /// True while this master may hand out resources: it leads and a
    /// majority answered it recently (the lease).
    pub fn may_offer(&self) -> bool {
        self.replica.is_current_leader() && self.replica.has_lease()
    }

    fn not_leader(&self) -> CallError {
        CallError::NotLeader(None)
    }

    /// Clients are served by a leader whose state is current (see
    /// [`Replica::is_current_leader`]); a leader just elected refuses them
    /// for the moment it takes to commit its first entry, and they retry.
    fn lead(&self) -> Result<(), CallError> {
        if self.replica.is_current_leader() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    /// An agent (re-)registers on `conn`. A follower refuses; the shell
    /// adds the leader's address.
    pub fn agent_register(
        &mut self,
        conn: ConnId,
        msg: RegisterAgent,
        now: Millis,
    ) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.agent_register(conn, msg, now);
        Ok(())
    }

    /// A heartbeat on an agent stream.
    pub fn agent_heartbeat(&mut self, conn: ConnId, gpus: &[GpuUsage], now: Millis) {
        self.cluster.agent_heartbeat(conn, gpus, now);
    }

    /// A status update on an agent stream.
    pub fn agent_update(&mut self, conn: ConnId, status: TaskStatus, now: Millis) {
        self.cluster.agent_status_update(conn, status, now);
    }

    /// An agent stream ended.
    pub fn agent_gone(&mut self, conn: ConnId, now: Millis) {
        self.cluster.agent_disconnected(conn, now);
    }

    /// A framework subscribes on `conn`.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        version: u32,
        info: FrameworkInfo,
        now: Millis,
    ) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.subscribe(conn, version, info, now)
    }

    /// A framework stream ended.
    pub fn framework_gone(&mut self, conn: ConnId, now: Millis) {
        self.cluster.framework_disconnected(conn, now);
    }

    /// A scheduler call. Launching on an offer needs the same lease as
    /// making it, and so does answering a reconciliation: a leader cut off
    /// from the majority may already have been replaced, and what it would
    /// answer may be stale.
    pub fn call(&mut self, call: Call, now: Millis) -> Result<(), CallError> {
        self.lead()?;
        if matches!(call, Call::Accept(_) | Call::Reconcile(..)) && !self.replica.has_lease() {
            return Err(self.not_leader());
        }
        let c = &mut self.cluster;
        match call {
            Call::Accept(req) => c.accept(req, now),
            Call::Decline {
                framework_id,
                offer_ids,
                refuse_seconds,
            } => c.decline(&framework_id, &offer_ids, refuse_seconds, now),
            Call::Revive(f) => c.revive(&f, now),
            Call::Suppress(f) => c.suppress(&f, now),
            Call::Kill {
                framework_id,
                task_id,
                grace,
            } => c.kill(&framework_id, &task_id, grace, now),
            Call::Acknowledge {
                framework_id,
                agent_id,
                task_id,
                uuid,
            } => c.acknowledge(&framework_id, &agent_id, &task_id, &uuid, now),
            Call::AcknowledgeMany { framework_id, acks } => {
                // Validated whole by the API: a failure here is the
                // framework's (gone), the same for every entry.
                for (agent_id, task_id, uuid) in acks {
                    c.acknowledge(&framework_id, &agent_id, &task_id, &uuid, now)?;
                }
                Ok(())
            }
            Call::Reconcile(f, tasks) => c.reconcile(&f, tasks, now),
            Call::Teardown(f) => c.teardown(&f, now),
            Call::SetDemand(req) => c.set_demand(req, now),
        }
    }

    /// Operator kill by task id.
    pub fn operator_kill(
        &mut self,
        task: &str,
        framework: &str,
        now: Millis,
    ) -> Result<(FrameworkId, TaskId), CallError> {
        self.lead()?;
        self.cluster.operator_kill(task, framework, now)
    }

    /// Operator: a role's quota. Durable once the log is applied up to
    /// [`Replica::last_index`] after the next settle.
    pub fn set_quota(
        &mut self,
        role: &str,
        guarantee: Vec<mezz_proto::v1::Resource>,
        limit: Vec<mezz_proto::v1::Resource>,
    ) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.set_quota(role, guarantee, limit)
    }

    /// Operator: adds or replaces a size; durable as for
    /// [`Node::set_quota`].
    pub fn set_size(&mut self, size: mezz_proto::v1::SizeView) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.set_size(size)
    }

    /// Operator: removes a size; durable as for [`Node::set_quota`].
    pub fn remove_size(&mut self, name: &str) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.remove_size(name)
    }

    /// `SubmitJobs` for `principal`; durable as for [`Node::set_quota`].
    /// Returns the names of the jobs stored, to answer with their records.
    pub fn submit_jobs(
        &mut self,
        jobs: &[mezz_proto::v1::JobRecord],
        principal: &str,
        now: Millis,
    ) -> Result<Vec<String>, CallError> {
        self.lead()?;
        self.cluster.submit_jobs(jobs, principal, now)
    }

    /// `UpdateJob`; durable as for [`Node::set_quota`]. Returns the job's
    /// name.
    pub fn update_job(
        &mut self,
        req: &mezz_proto::v1::UpdateJobRequest,
        now: Millis,
    ) -> Result<String, CallError> {
        self.lead()?;
        self.cluster.update_job(req, now)
    }

    /// `ControlJob` for `principal`; durable as for [`Node::set_quota`].
    /// Returns the job's name.
    pub fn control_job(
        &mut self,
        name: &str,
        action: &str,
        principal: &str,
        now: Millis,
    ) -> Result<String, CallError> {
        self.lead()?;
        self.cluster.control_job(name, action, principal, now)
    }

    /// `FireSchedule`; durable as for [`Node::set_quota`]. Returns the
    /// scheduled job's name.
    pub fn fire_schedule(
        &mut self,
        req: &mezz_proto::v1::FireScheduleRequest,
        now: Millis,
    ) -> Result<String, CallError> {
        self.lead()?;
        self.cluster.fire_schedule(req, now)
    }

    /// Operator: a role's weight; durable as for [`Node::set_quota`].
    pub fn set_weight(&mut self, role: &str, weight: f64) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.set_weight(role, weight)
    }

    /// Operator: adds a token; durable as for [`Node::set_quota`].
    pub fn add_token(&mut self, record: mezz_proto::v1::TokenRecord) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.add_token(record)
    }

    /// Operator: revokes tokens by id or principal; durable as for
    /// [`Node::set_quota`].
    pub fn revoke_tokens(
        &mut self,
        id_or_principal: &str,
        at: f64,
    ) -> Result<Vec<String>, CallError> {
        self.lead()?;
        self.cluster.revoke_tokens(id_or_principal, at)
    }

    /// Operator: replaces the ACLs; durable as for [`Node::set_quota`].
    pub fn set_acls(&mut self, json: &str, seed: bool) -> Result<(), CallError> {
        self.lead()?;
        self.cluster.set_acls(json, seed)
    }

    /// Raft messages from another master. Stale and duplicate messages are
    /// raft's to ignore.
    pub fn step_raft(&mut self, msgs: Vec<RaftMessage>) {
        for m in msgs {
            if let Err(e) = self.replica.step(m) {
                tracing::debug!("raft message refused: {e}");
            }
        }
    }

    /// What the transport learned about a peer.
    pub fn report(&mut self, report: PeerReport) {
        self.replica.report(report);
    }

    /// One tick of the clock: raft's timers, and the state machine's
    /// timeouts on a leader that holds the lease (they remove agents and
    /// frameworks, which a leader that may have been replaced must not).
    pub fn tick(&mut self, now: Millis) {
        self.replica.tick();
        if self.may_offer() {
            self.cluster.tick(now);
        }
    }

    /// A raft tick alone: one the shell owes raft after a turn of its loop
    /// that took longer than a tick.
    pub fn tick_raft(&mut self) {
        self.replica.tick();
    }

    /// Runs the state machine and raft until nothing is left to do, sending
    /// what they ask for through `out`. Proposals are durable (fsynced)
    /// before anything that depends on them is sent, because the state
    /// machine only acts on them once they come back applied. Then follows
    /// a change of leadership, if there was one, and returns it: `Some(true)`
    /// when this master now leads, `Some(false)` when it stopped. The shell
    /// must then drop every client stream it holds; clients reconnect and
    /// find the leader.
    pub fn settle(
        &mut self,
        now: Millis,
        out: &mut dyn Outbox,
    ) -> Result<Option<bool>, MasterError> {
        self.run_until_quiet(now, out)?;
        let leader = self.replica.is_leader();
        if leader == self.was_leader {
            return Ok(None);
        }
        self.was_leader = leader;
        let registry = self.cluster.registry().clone();
        let wall_epoch = self.cluster.wall_epoch();
        self.cluster = Cluster::new((self.fresh_id)(), self.timeouts.clone(), registry, now);
        self.cluster.set_wall_epoch(wall_epoch);
        if leader {
            tracing::info!(term = self.replica.term(), "this master is now the leader");
        } else {
            tracing::info!(term = self.replica.term(), "this master follows");
        }
        self.run_until_quiet(now, out)?;
        Ok(Some(leader))
    }

    fn run_until_quiet(&mut self, now: Millis, out: &mut dyn Outbox) -> Result<(), MasterError> {
        // Allocation cycles stop for this call once they took this long:
        // what is left (agents changed by the offers just made, a backlog
        // of changed agents) waits for the next call, at the latest a tick
        // away, so that raft's messages and timers are never held back
        // long.
        let mut allocating = Duration::ZERO;
        loop {
            let leader = self.replica.is_leader();
            // Offers only from a leader that knows a majority still follows.
            let can_offer = self.may_offer() && allocating < ALLOCATION_PER_SETTLE;
            if can_offer && self.cluster.allocation_due() {
                let started = Instant::now();
                self.cluster.allocate(now);
                self.allocation_time
                    .observe(started.elapsed().as_secs_f64());
                allocating += started.elapsed();
            }
            let mut effects = self.cluster.take_effects();
            if !leader {
                // A follower keeps its registry current and nothing else;
                // whatever the state machine would do is the leader's job.
                effects.clear();
            }
            let mut sends = Vec::new();
            for e in effects {
                match e {
                    Effect::Propose(cmd) => {
                        if let Err(err) = self.replica.propose(&cmd) {
                            // The kind only: a command may carry the hash
                            // of an agent's secret.
                            tracing::error!("cannot replicate a {} command: {err}", kind(&cmd));
                        }
                    }
                    other => sends.push(other),
                }
            }
            let dropped = if sends.is_empty() {
                Dropped::default()
            } else {
                out.deliver(sends)
            };
            let any_dropped = !(dropped.agents.is_empty() && dropped.frameworks.is_empty());
            for conn in dropped.agents {
                self.cluster.agent_disconnected(conn, now);
            }
            for conn in dropped.frameworks {
                self.cluster.framework_disconnected(conn, now);
            }
            let (applied, messages) = self.replica.handle_ready()?;
            if !messages.is_empty() {
                out.send_raft(messages);
            }
            if applied.is_empty() && !any_dropped && !(can_offer && self.cluster.allocation_due()) {
                let cluster = &self.cluster;
                self.replica
                    .maybe_compact(cluster.registry().records(), || {
                        cluster.registry().to_snapshot()
                    })?;
                return Ok(());
            }
            for a in applied {
                match a {
                    Applied::Command(cmd) => self.cluster.apply(&cmd, now),
                    Applied::Restore(snap) => self.cluster.restore(Registry::from_snapshot(&snap)),
                }
            }
        }
    }
}
