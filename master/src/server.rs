//! The master's shell: one actor task owns the state machine and the raft
//! replica, takes [`Input`]s from the API services, and carries out the
//! effects (stream sends, proposals). Also binds the port and serves gRPC
//! and HTTP on it until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezz_proto::v1::{
    AcceptRequest, ClusterState, Event, FrameworkInfo, MasterMessage, MasterView, ReconcileTask,
    RegisterAgent, TaskStatus,
};
use mezz_proto::{FrameworkId, TaskId};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::cluster::{CallError, Cluster, ConnId, Effect, Millis};
use crate::registry::Registry;
use crate::replication::transport::{GrpcTransport, PeerReport, Transport};
use crate::replication::{Applied, Replica};
use crate::{Config, MasterError};

/// Outbound queue of one stream. A peer that falls this far behind is
/// disconnected rather than letting the master's memory grow.
pub const STREAM_QUEUE_LEN: usize = 4096;
/// Inputs waiting for the actor.
const INPUT_QUEUE: usize = 16384;
/// Raft and timer tick: with raft's election timeout of 10 ticks, a
/// leader that dies is replaced within 0.5 to 1 s.
const TICK: Duration = Duration::from_millis(50);

/// Sender half of an agent's response stream.
pub type AgentTx = mpsc::Sender<Result<MasterMessage, Status>>;
/// Sender half of a framework's event stream.
pub type FrameworkTx = mpsc::Sender<Result<Event, Status>>;

/// A scheduler call answered by the actor.
#[derive(Debug)]
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
    /// RECONCILE.
    Reconcile(String, Vec<ReconcileTask>),
    /// TEARDOWN.
    Teardown(String),
}

/// What the API services hand to the actor.
#[derive(Debug)]
pub enum Input {
    /// First message of an agent stream.
    AgentRegister(ConnId, RegisterAgent, AgentTx),
    /// Agent heartbeat.
    AgentHeartbeat(ConnId),
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
    /// Raft messages from a peer master.
    Raft(Vec<raft::eraftpb::Message>),
    /// Whether this master leads, and the leader's address if known.
    WhoLeads(oneshot::Sender<(bool, Option<String>)>),
    /// Read the cluster state.
    State(bool, oneshot::Sender<ClusterState>),
    /// Prometheus text.
    Metrics(oneshot::Sender<String>),
}

/// Where the answer to an operator change goes.
type Reply = oneshot::Sender<Result<(), CallError>>;

/// A cheap handle the services use to reach the actor.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Input>,
    conns: Arc<AtomicU64>,
}

impl Handle {
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

struct Actor {
    cluster: Cluster,
    replica: Replica,
    config: Config,
    started: Instant,
    started_unix: f64,
    agents: HashMap<ConnId, AgentTx>,
    frameworks: HashMap<ConnId, FrameworkTx>,
    /// Answers to send once the proposals queued with them are durable.
    after_settle: Vec<(Reply, Result<(), CallError>)>,
    /// Answers waiting for the log to be applied up to an index.
    awaiting_commit: Vec<(u64, Reply, Result<(), CallError>)>,
    /// Raft messages to the other masters (none in a group of one).
    transport: Option<GrpcTransport>,
    was_leader: bool,
    /// Wall time of allocation cycles, for `/metrics`.
    allocation_time: crate::api::metrics::Histogram,
}

impl Actor {
    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn leader_address(&self) -> Option<String> {
        self.replica
            .leader_id()
            .and_then(|id| self.config.peers.get(&id).cloned())
    }

    fn not_leader(&self) -> CallError {
        CallError::NotLeader(self.leader_address())
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        let leader = self.replica.is_leader();
        match input {
            Input::AgentRegister(conn, msg, tx) => {
                if !leader {
                    let _ = tx.try_send(Err(crate::api::status_from(self.not_leader())));
                    return;
                }
                self.agents.insert(conn, tx);
                self.cluster.agent_register(conn, msg, now);
            }
            Input::AgentHeartbeat(conn) => self.cluster.agent_heartbeat(conn, now),
            Input::AgentUpdate(conn, status) => self.cluster.agent_status_update(conn, status, now),
            Input::AgentGone(conn) => {
                self.agents.remove(&conn);
                self.cluster.agent_disconnected(conn, now);
            }
            Input::Subscribe(conn, version, info, tx, reply) => {
                if !leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                let result = self.cluster.subscribe(conn, version, info, now);
                if result.is_ok() {
                    self.frameworks.insert(conn, tx);
                }
                let _ = reply.send(result);
            }
            Input::FrameworkGone(conn) => {
                self.frameworks.remove(&conn);
                self.cluster.framework_disconnected(conn, now);
            }
            Input::Call(call, reply) => {
                // Launching on an offer needs the same lease as making it.
                let leased =
                    leader && (self.replica.has_lease() || !matches!(call, Call::Accept(_)));
                let result = if leased {
                    self.call(call, now)
                } else {
                    Err(self.not_leader())
                };
                let _ = reply.send(result);
            }
            Input::OperatorKill(task, fw, reply) => {
                let result = if leader {
                    self.cluster.operator_kill(&task, &fw, now)
                } else {
                    Err(self.not_leader())
                };
                let _ = reply.send(result);
            }
            Input::SetQuota(role, guarantee, limit, reply) => {
                let result = if leader {
                    self.cluster.set_quota(&role, guarantee, limit)
                } else {
                    Err(self.not_leader())
                };
                self.after_settle.push((reply, result));
            }
            Input::SetWeight(role, weight, reply) => {
                let result = if leader {
                    self.cluster.set_weight(&role, weight)
                } else {
                    Err(self.not_leader())
                };
                self.after_settle.push((reply, result));
            }
            Input::Raft(msgs) => {
                for m in msgs {
                    // Stale and duplicate messages are raft's to ignore.
                    if let Err(e) = self.replica.step(m) {
                        tracing::debug!("raft message refused: {e}");
                    }
                }
            }
            Input::WhoLeads(reply) => {
                let _ = reply.send((leader, self.leader_address()));
            }
            Input::State(completed, reply) => {
                let _ = reply.send(self.state(completed));
            }
            Input::Metrics(reply) => {
                let shell = crate::api::metrics::ShellMetrics {
                    leader,
                    term: self.replica.term(),
                    last_index: self.replica.last_index(),
                    commit_index: self.replica.committed(),
                    applied_index: self.replica.applied(),
                    allocation: self.allocation_time.clone(),
                };
                let _ = reply.send(crate::api::metrics::metrics_text(
                    &self.cluster,
                    &self.state(false),
                    &shell,
                ));
            }
        }
    }

    fn call(&mut self, call: Call, now: Millis) -> Result<(), CallError> {
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
            Call::Reconcile(f, tasks) => c.reconcile(&f, tasks, now),
            Call::Teardown(f) => c.teardown(&f, now),
        }
    }

    fn state(&self, completed: bool) -> ClusterState {
        let me = self.config.id;
        let leader = self.replica.leader_id();
        let masters = self
            .config
            .peers
            .iter()
            .map(|(&id, addr)| {
                let role = match leader {
                    Some(l) if l == id => "leader",
                    Some(_) => "follower",
                    None if id == me => "candidate",
                    None => "unknown",
                };
                // Others' progress is known to the leader only: how far
                // their log matches its own.
                let (term, applied_index) = if id == me {
                    (self.replica.term(), self.replica.applied())
                } else {
                    (
                        if leader.is_some() {
                            self.replica.term()
                        } else {
                            0
                        },
                        self.replica.peer_matched(id).unwrap_or(0),
                    )
                };
                MasterView {
                    id,
                    address: addr.clone(),
                    role: role.into(),
                    term,
                    applied_index,
                }
            })
            .collect();
        self.cluster.view(
            completed,
            masters,
            self.leader_address().unwrap_or_default(),
            self.started_unix,
        )
    }

    /// Runs the state machine and raft until nothing is left to do, then
    /// sends what the state machine asked for. Proposals are durable
    /// (fsynced) before anything that depends on them is sent, because the
    /// state machine only acts on them once they come back applied.
    fn settle(&mut self) -> Result<(), MasterError> {
        loop {
            let now = self.now();
            let leader = self.replica.is_leader();
            // Offers only from a leader that knows a majority still follows.
            let can_offer = leader && self.replica.has_lease();
            if can_offer && self.cluster.allocation_due() {
                let started = Instant::now();
                self.cluster.allocate(now);
                self.allocation_time
                    .observe(started.elapsed().as_secs_f64());
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
                            tracing::error!("cannot replicate {cmd:?}: {err}");
                        }
                    }
                    other => sends.push(other),
                }
            }
            self.dispatch(sends);
            let (applied, messages) = self.replica.handle_ready()?;
            if let Some(t) = self.transport.as_mut() {
                t.send(messages);
            }
            if applied.is_empty() && !(can_offer && self.cluster.allocation_due()) {
                let registry = self.cluster.registry().clone();
                self.replica.maybe_compact(|| registry.to_snapshot())?;
                return Ok(());
            }
            let now = self.now();
            for a in applied {
                match a {
                    Applied::Command(cmd) => self.cluster.apply(&cmd, now),
                    Applied::Restore(snap) => self.cluster.restore(Registry::from_snapshot(&snap)),
                }
            }
        }
    }

    fn dispatch(&mut self, effects: Vec<Effect>) {
        let mut dropped_agents = Vec::new();
        let mut dropped_frameworks = Vec::new();
        for e in effects {
            match e {
                Effect::ToAgent(conn, msg) => {
                    if let Some(tx) = self.agents.get(&conn) {
                        if tx.try_send(Ok(msg)).is_err() {
                            tracing::warn!(
                                conn,
                                "agent stream is full or closed; disconnecting it"
                            );
                            dropped_agents.push(conn);
                        }
                    }
                }
                Effect::ToFramework(conn, ev) => {
                    if let Some(tx) = self.frameworks.get(&conn) {
                        if tx.try_send(Ok(ev)).is_err() {
                            tracing::warn!(
                                conn,
                                "framework stream is full or closed; disconnecting it"
                            );
                            dropped_frameworks.push(conn);
                        }
                    }
                }
                Effect::CloseAgent(conn) => {
                    self.agents.remove(&conn);
                }
                Effect::CloseFramework(conn) => {
                    self.frameworks.remove(&conn);
                }
                Effect::Propose(_) => {}
            }
        }
        let now = self.now();
        for conn in dropped_agents {
            self.agents.remove(&conn);
            self.cluster.agent_disconnected(conn, now);
        }
        for conn in dropped_frameworks {
            self.frameworks.remove(&conn);
            self.cluster.framework_disconnected(conn, now);
        }
    }

    /// Operator changes are answered once applied, which in a group of
    /// several masters means committed by a majority.
    fn answer_durable(&mut self) {
        let last = self.replica.last_index();
        for (reply, result) in self.after_settle.drain(..) {
            match result {
                Ok(()) => self.awaiting_commit.push((last, reply, Ok(()))),
                err => {
                    let _ = reply.send(err);
                }
            }
        }
        let applied = self.replica.applied();
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .awaiting_commit
            .drain(..)
            .partition(|(i, _, _)| *i <= applied);
        self.awaiting_commit = waiting;
        for (_, reply, result) in done {
            let _ = reply.send(result);
        }
    }

    /// On a change of leadership every client stream is closed (clients
    /// reconnect and find the leader) and the soft state starts afresh from
    /// the replicated registry: offers of an old leader are void, agents
    /// re-register with their tasks, frameworks re-subscribe.
    fn follow_leadership(&mut self) -> Result<(), MasterError> {
        let leader = self.replica.is_leader();
        if leader == self.was_leader {
            return Ok(());
        }
        self.was_leader = leader;
        self.agents.clear();
        self.frameworks.clear();
        let not_leader = self.not_leader();
        for (_, reply, _) in self.awaiting_commit.drain(..) {
            let _ = reply.send(Err(not_leader.clone()));
        }
        let now = self.now();
        let registry = self.cluster.registry().clone();
        let master_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        self.cluster = Cluster::new(master_id, self.config.timeouts.clone(), registry, now);
        if leader {
            tracing::info!(term = self.replica.term(), "this master is now the leader");
        } else {
            tracing::info!(
                term = self.replica.term(),
                leader = self.leader_address().unwrap_or_default(),
                "this master follows"
            );
        }
        self.settle()
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut reports: mpsc::UnboundedReceiver<PeerReport>,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), MasterError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = rx.recv() => {
                    let Some(input) = input else { return Ok(()) };
                    self.handle(input);
                    // Batch whatever else is already queued before settling.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    self.replica.tick();
                    if self.replica.is_leader() {
                        let now = self.now();
                        self.cluster.tick(now);
                    }
                }
                Some(report) = reports.recv() => self.replica.report(report),
                _ = &mut stop => return Ok(()),
            }
            self.settle()?;
            self.follow_leadership()?;
            self.answer_durable();
        }
    }
}

/// Runs a master until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    if !config.peers.contains_key(&config.id) {
        return Err(MasterError::Config(format!(
            "master id {} is not among the peers {:?}",
            config.id,
            config.peers.keys().collect::<Vec<_>>()
        )));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| MasterError::DataDir {
        path: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let voters: Vec<u64> = config.peers.keys().copied().collect();
    let raft_dir = config.data_dir.join("raft");
    let (mut replica, snapshot) = Replica::open(&raft_dir, config.id, &voters)?;
    replica.set_snapshot_every(config.snapshot_every);
    let registry = snapshot
        .map(|s| Registry::from_snapshot(&s))
        .unwrap_or_default();
    let master_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    tracing::info!(master_id, data_dir = %config.data_dir.display(), "master starting");
    let cluster = Cluster::new(master_id, config.timeouts.clone(), registry, 0);
    let mut actor = Actor {
        cluster,
        replica,
        config: config.clone(),
        started: Instant::now(),
        started_unix: mezz_proto::unix_now(),
        agents: HashMap::new(),
        frameworks: HashMap::new(),
        after_settle: Vec::new(),
        awaiting_commit: Vec::new(),
        transport: None,
        was_leader: false,
        allocation_time: Default::default(),
    };
    // Replay the log; a group of one also wins its election before serving.
    // A group of several elects once the peers can talk, i.e. after serving.
    for _ in 0..50 {
        actor.settle()?;
        actor.follow_leadership()?;
        if actor.replica.is_leader() || config.peers.len() > 1 {
            break;
        }
        actor.replica.tick();
    }
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    if config.peers.len() > 1 {
        actor.transport = Some(GrpcTransport::start(config.id, &config.peers, report_tx));
    }
    tracing::info!(
        agents = actor.cluster.registry().agents.len(),
        frameworks = actor.cluster.registry().frameworks.len(),
        "registry recovered"
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| MasterError::Bind {
            addr: config.listen,
            source,
        })?;
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let handle = Handle {
        tx,
        conns: Arc::new(AtomicU64::new(1)),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let actor_task = tokio::spawn(actor.run(rx, report_rx, stop_rx));
    let router = crate::api::router(handle, config.id, config.peers.keys().copied().collect());
    tracing::info!("master listening on {} (gRPC and HTTP)", config.listen);
    // Stopping the actor first drops every stream's sender, which ends the
    // long-lived agent and framework streams so the server can drain.
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(());
        let _ = drain_tx.send(());
    });
    // Small gRPC frames must not wait for Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = drain_rx.await;
        })
        .await;
    let acted = actor_task
        .await
        .map_err(|e| MasterError::Serve(format!("state machine task failed: {e}")))?;
    served.map_err(|e| MasterError::Serve(e.to_string()))?;
    acted
}
