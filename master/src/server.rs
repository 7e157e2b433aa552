//! The master's shell: one actor task owns the state machine and the raft
//! replica, takes [`Input`]s from the API services, and carries out the
//! effects (stream sends, proposals). Also binds the port and serves gRPC
//! and HTTP on it until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezz_proto::v1::{ClusterState, MasterView};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::{CallError, ConnId, Effect, Millis};
use crate::handle::{AgentTx, FrameworkTx, Handle, Input, JobsReply, Leadership};
use crate::node::{Dropped, Node, Outbox, Waiting};
use crate::peer_grpc::GrpcTransport;
use crate::replication::transport::{PeerReport, Transport};
use crate::security::Guard;
use crate::{Config, MasterError};

/// Inputs waiting for the actor.
const INPUT_QUEUE: usize = 16384;
/// Batches of raft messages from the peers waiting for the actor.
const RAFT_QUEUE: usize = 1024;

/// What the actor reads, most urgent first: raft messages from the peers,
/// what the transport learned about them, then clients' inputs.
struct Queues {
    inputs: mpsc::Receiver<Input>,
    raft: mpsc::Receiver<Vec<raft::eraftpb::Message>>,
    reports: mpsc::UnboundedReceiver<PeerReport>,
}
/// Raft and timer tick: with raft's election timeout of 10 ticks, a
/// leader that dies is replaced within 0.5 to 1 s.
const TICK: Duration = Duration::from_millis(50);
/// At most this many raft ticks are made up after a long turn of the
/// actor's loop (a heartbeat is due every 2).
const MAX_OWED_TICKS: u32 = 4;
/// How long the actor takes queued inputs before it settles them.
const BATCH_TIME: Duration = Duration::from_millis(20);
/// A turn of the actor's loop this long is logged (at most every
/// `SLOW_SAID_EVERY`).
const SLOW_TURN: Duration = Duration::from_millis(250);
const SLOW_SAID_EVERY: Duration = Duration::from_secs(10);

/// Where the answer to an operator change goes, sent once the change is
/// applied (see [`Waiting`]).
enum Reply {
    /// The change's outcome only.
    Done(oneshot::Sender<Result<(), CallError>>),
    /// The stored records of the jobs named, as they are once the change
    /// is applied.
    Jobs(Vec<String>, JobsReply),
}

impl Reply {
    /// Sends `result`; a job answer reads the records from `jobs` now.
    fn send(self, result: Result<(), CallError>, jobs: &crate::job_store::JobStore) {
        match self {
            Reply::Done(tx) => {
                let _ = tx.send(result);
            }
            Reply::Jobs(names, tx) => {
                let records = result.and_then(|()| {
                    names
                        .iter()
                        .map(|n| {
                            jobs.get(n).cloned().ok_or_else(|| {
                                CallError::NotFound(format!(
                                    "job '{n}' was changed and then dropped at once by the                                      masters' bound on ended jobs (--jobs-kept)"
                                ))
                            })
                        })
                        .collect()
                });
                let _ = tx.send(records);
            }
        }
    }
}

/// The client streams and peer transport a master writes to.
struct Streams {
    agents: HashMap<ConnId, AgentTx>,
    /// Where each agent stream came from, for the log of refusals.
    agent_peers: HashMap<ConnId, std::net::SocketAddr>,
    frameworks: HashMap<ConnId, FrameworkTx>,
    /// Raft messages to the other masters (none in a group of one).
    transport: Option<GrpcTransport>,
}

impl Outbox for Streams {
    fn deliver(&mut self, effects: Vec<Effect>) -> Dropped {
        let mut dropped = Dropped::default();
        for e in effects {
            match e {
                Effect::ToAgent(conn, msg) => {
                    if let Some(mezz_proto::v1::master_message::Message::Refused(r)) = &msg.message
                    {
                        tracing::warn!(
                            conn,
                            peer = self
                                .agent_peers
                                .get(&conn)
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            "agent registration refused: {}",
                            r.message
                        );
                    }
                    if let Some(tx) = self.agents.get(&conn) {
                        if tx.try_send(Ok(msg)).is_err() {
                            tracing::warn!(
                                conn,
                                "agent stream is full or closed; disconnecting it"
                            );
                            self.agents.remove(&conn);
                            self.agent_peers.remove(&conn);
                            dropped.agents.push(conn);
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
                            self.frameworks.remove(&conn);
                            dropped.frameworks.push(conn);
                        }
                    }
                }
                Effect::CloseAgent(conn) => {
                    self.agents.remove(&conn);
                    self.agent_peers.remove(&conn);
                }
                Effect::CloseFramework(conn) => {
                    self.frameworks.remove(&conn);
                }
                Effect::Propose(_) => {}
            }
        }
        dropped
    }

    fn send_raft(&mut self, msgs: Vec<raft::eraftpb::Message>) {
        if let Some(t) = self.transport.as_mut() {
            t.send(msgs);
        }
    }
}

struct Actor {
    node: Node,
    config: Config,
    started: Instant,
    started_unix: f64,
    streams: Streams,
    /// Inputs held while this leader catches up, and answers waiting for
    /// their changes to be applied (the node's rules, see [`Waiting`]).
    waiting: Waiting<Input, Reply>,
    /// Whether the last settle left this master a current leader.
    was_current: bool,
    /// Where the applied tokens and ACLs are published.
    guard: Arc<Guard>,
    /// The (state machine instance, epoch) last published to `guard`.
    published: Option<(String, u64)>,
    /// Who leads, for the API layer (see [`Handle::await_leader`]).
    leadership: watch::Sender<Leadership>,
    /// The bootstrap token's record (`--bootstrap-token-file`), proposed
    /// whenever this master becomes a current leader of a group that
    /// holds no token.
    bootstrap: Option<mezz_proto::v1::TokenRecord>,
}

impl Actor {
    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn leader_address(&self) -> Option<String> {
        self.node
            .replica()
            .leader_id()
            .and_then(|id| self.config.peers.get(&id).cloned())
    }

    fn not_leader(&self) -> CallError {
        CallError::NotLeader(self.leader_address())
    }

    /// Adds the leader's address to a node's refusal.
    fn hint<T>(&self, result: Result<T, CallError>) -> Result<T, CallError> {
        match result {
            Err(CallError::NotLeader(None)) => Err(self.not_leader()),
            other => other,
        }
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        let needs_leader = input.needs_leader();
        let Some(input) = self.waiting.hold(&self.node, input, needs_leader) else {
            return;
        };
        match input {
            Input::AgentRegister(conn, msg, tx, peer) => {
                match self.node.agent_register(conn, msg, now) {
                    Ok(()) => {
                        self.streams.agents.insert(conn, tx);
                        if let Some(peer) = peer {
                            self.streams.agent_peers.insert(conn, peer);
                        }
                    }
                    Err(e) => {
                        let e = self.hint::<()>(Err(e)).unwrap_err();
                        let _ = tx.try_send(Err(crate::api::status_from(e)));
                    }
                }
            }
            Input::AgentHeartbeat(conn, gpus) => self.node.agent_heartbeat(conn, &gpus, now),
            Input::AgentUpdate(conn, status) => self.node.agent_update(conn, status, now),
            Input::AgentGone(conn) => {
                self.streams.agents.remove(&conn);
                self.streams.agent_peers.remove(&conn);
                self.node.agent_gone(conn, now);
            }
            Input::Subscribe(conn, version, info, tx, reply) => {
                let result = self.node.subscribe(conn, version, info, now);
                if result.is_ok() {
                    self.streams.frameworks.insert(conn, tx);
                }
                let _ = reply.send(self.hint(result));
            }
            Input::FrameworkGone(conn) => {
                self.streams.frameworks.remove(&conn);
                self.node.framework_gone(conn, now);
            }
            Input::Call(call, reply) => {
                let result = self.node.call(call, now);
                let _ = reply.send(self.hint(result));
            }
            Input::OperatorKill(task, fw, reply) => {
                let result = self.node.operator_kill(&task, &fw, now);
                let _ = reply.send(self.hint(result));
            }
            Input::SetQuota(role, guarantee, limit, reply) => {
                let result = self.node.set_quota(&role, guarantee, limit);
                self.waiting
                    .answer_when_applied(Reply::Done(reply), self.hint(result));
            }
            Input::SetWeight(role, weight, reply) => {
                let result = self.node.set_weight(&role, weight);
                self.waiting
                    .answer_when_applied(Reply::Done(reply), self.hint(result));
            }
            Input::AddToken(record, reply) => {
                let result = self.node.add_token(record);
                self.waiting
                    .answer_when_applied(Reply::Done(reply), self.hint(result));
            }
            Input::RevokeTokens(which, at, reply) => {
                let result = self.node.revoke_tokens(&which, at).map(|_| ());
                self.waiting
                    .answer_when_applied(Reply::Done(reply), self.hint(result));
            }
            Input::SetAcls(json, reply) => {
                let result = self.node.set_acls(&json, false);
                self.waiting
                    .answer_when_applied(Reply::Done(reply), self.hint(result));
            }
            Input::SetSize(size, reply) => {
                let result = self.node.set_size(size);
                self.waiting
                    .answer_when_applied(Reply::Done(reply), self.hint(result));
            }
            Input::RemoveSize(name, reply) => {
                let result = self.node.remove_size(&name);
                self.waiting
                    .answer_when_applied(Reply::Done(reply), self.hint(result));
            }
            Input::Sizes(reply) => {
                let _ = reply.send(self.node.cluster().sizes());
            }
            Input::SubmitJobs(jobs, principal, reply) => {
                let result = self.node.submit_jobs(&jobs, &principal, now);
                self.answer_jobs(result, reply);
            }
            Input::UpdateJob(req, reply) => {
                let result = self.node.update_job(&req, now).map(|n| vec![n]);
                self.answer_jobs(result, reply);
            }
            Input::ControlJob(name, action, principal, reply) => {
                let result = self
                    .node
                    .control_job(&name, &action, &principal, now)
                    .map(|n| vec![n]);
                self.answer_jobs(result, reply);
            }
            Input::FireSchedule(req, reply) => {
                let result = self.node.fire_schedule(&req, now).map(|n| vec![n]);
                self.answer_jobs(result, reply);
            }
            Input::GetJob(name, reply) => {
                let _ = reply.send(self.node.cluster().jobs().get(&name).cloned());
            }
            Input::ListJobs(req, viewer, reply) => {
                let may = viewer.map(|v| move |j: &mezz_proto::v1::JobRecord| v.may_view(&j.role));
                let result = self
                    .node
                    .cluster()
                    .jobs()
                    .list(&req, may.as_ref().map(|f| f as &dyn Fn(&_) -> bool))
                    .map_err(|e| CallError::Invalid(e.0));
                let _ = reply.send(result);
            }
            Input::JobDetail(name, reply) => {
                let _ = reply.send(self.node.cluster().jobs().detail(&name));
            }
            Input::WhoLeads(reply) => {
                let _ = reply.send((self.node.is_leader(), self.leader_address()));
            }
            Input::Task(framework_id, task_id, reply) => {
                let _ = reply.send(self.node.cluster().task(&framework_id, &task_id));
            }
            Input::State(completed, reply) => {
                let _ = reply.send(self.state(completed));
            }
            Input::Metrics(reply) => {
                let replica = self.node.replica();
                let shell = crate::api::metrics::ShellMetrics {
                    leader: replica.is_leader(),
                    term: replica.term(),
                    last_index: replica.last_index(),
                    commit_index: replica.committed(),
                    applied_index: replica.applied(),
                    allocation: self.node.allocation_time().clone(),
                };
                let cluster = self.node.cluster();
                let _ = reply.send(crate::api::metrics::metrics_text(
                    cluster,
                    &cluster.gauges(),
                    &shell,
                ));
            }
        }
    }

    /// Answers a change of jobs with the records of the jobs it names once
    /// applied, or its refusal.
    fn answer_jobs(&mut self, result: Result<Vec<String>, CallError>, reply: JobsReply) {
        match self.hint(result) {
            Ok(names) => self
                .waiting
                .answer_when_applied(Reply::Jobs(names, reply), Ok(())),
            Err(e) => self
                .waiting
                .answer_when_applied(Reply::Jobs(Vec::new(), reply), Err(e)),
        }
    }

    fn state(&self, completed: bool) -> ClusterState {
        let me = self.config.id;
        let replica = self.node.replica();
        let leader = replica.leader_id();
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
                    (replica.term(), replica.applied())
                } else {
                    (
                        if leader.is_some() { replica.term() } else { 0 },
                        replica.peer_matched(id).unwrap_or(0),
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
        self.node.cluster().view(
            completed,
            masters,
            self.leader_address().unwrap_or_default(),
            self.started_unix,
        )
    }

    /// Settles the node. On a change of leadership every client stream is
    /// closed (clients reconnect and find the leader) and answers waiting
    /// for a commit are refused: the new leader may never commit them.
    fn settle(&mut self) -> Result<(), MasterError> {
        let now = self.now();
        let Some(leader) = self.node.settle(now, &mut self.streams)? else {
            return Ok(());
        };
        self.streams.agents.clear();
        self.streams.agent_peers.clear();
        self.streams.frameworks.clear();
        let not_leader = self.not_leader();
        for (reply, result) in self.waiting.refuse_waiting(&not_leader) {
            reply.send(result, self.node.cluster().jobs());
        }
        if !leader {
            tracing::info!(
                leader = self.leader_address().unwrap_or_default(),
                "following the leader"
            );
        }
        Ok(())
    }

    /// Hands the applied tokens and ACLs to the API layer (before answers
    /// go out, so that a revocation is in force on this master once
    /// `mezz token revoke` returns).
    fn publish_security(&mut self) {
        let cluster = self.node.cluster();
        let at = (cluster.master_id().to_string(), cluster.security_epoch());
        if self.published.as_ref() == Some(&at) {
            return;
        }
        let registry = cluster.registry();
        let owners = registry
            .frameworks
            .iter()
            .filter(|(_, f)| !f.principal.is_empty())
            .map(|(id, f)| (id.0.clone(), f.principal.clone()))
            .collect();
        self.guard.publish(&registry.tokens, &registry.acls, owners);
        self.published = Some(at);
    }

    /// A leader that just became current seeds what its flags give and
    /// the group lacks: the bootstrap token, the ACLs.
    fn seed_security(&mut self) {
        let registry = self.node.cluster().registry();
        let (no_tokens, no_acls) = (registry.tokens.is_empty(), registry.acls.is_empty());
        let differs = self.config.security.acls.as_ref().is_some_and(|json| {
            crate::security::Acls::canonical(json).ok().as_deref() != Some(registry.acls.as_str())
        });
        if let (Some(record), true) = (self.bootstrap.clone(), no_tokens) {
            let id = record.id.clone();
            match self.node.add_token(record) {
                Ok(()) => tracing::info!(token_id = id, "proposing the bootstrap token"),
                Err(e) => tracing::warn!("cannot propose the bootstrap token: {e}"),
            }
        }
        match self.config.security.acls.clone() {
            Some(json) if no_acls => match self.node.set_acls(&json, true) {
                Ok(()) => tracing::info!("seeding the ACLs from --acls"),
                Err(e) => tracing::warn!("cannot seed the ACLs: {e}"),
            },
            Some(_) if differs => tracing::warn!(
                "the ACLs in force differ from this master's --acls file (changed with \
                 `mezz acl set`); the replicated ones apply"
            ),
            _ => {}
        }
    }

    /// Tells the API layer who leads now, when that changed.
    fn publish_leadership(&self) {
        let now = Leadership {
            leading: self.node.is_leader(),
            leader: if self.node.is_leader() {
                None
            } else {
                self.leader_address()
            },
        };
        self.leadership.send_if_modified(|l| {
            let changed = *l != now;
            *l = now;
            changed
        });
    }

    /// Operator changes are answered once applied, which in a group of
    /// several masters means committed by a majority.
    fn answer_durable(&mut self) {
        for (reply, result) in self.waiting.answers(&self.node) {
            reply.send(result, self.node.cluster().jobs());
        }
    }

    async fn run(
        mut self,
        queues: Queues,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), MasterError> {
        let Queues {
            inputs: mut rx,
            raft: mut raft_rx,
            mut reports,
        } = queues;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticked = Instant::now();
        let mut slow_said: Option<Instant> = None;
        loop {
            let turn = Instant::now();
            let mut what = "";
            // Raft first: what the peers said, then the clock, then clients.
            // A leader busy with clients still answers and sends its
            // heartbeats, instead of being voted out by idle followers.
            tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                Some(msgs) = raft_rx.recv() => {
                    what = "raft";
                    self.node.step_raft(msgs);
                    // Whatever else the peers sent, up to a bound.
                    for _ in 0..256 {
                        match raft_rx.try_recv() {
                            Ok(msgs) => self.node.step_raft(msgs),
                            Err(_) => break,
                        }
                    }
                }
                Some(report) = reports.recv() => {
                    self.node.report(report);
                    // Everything the peers already said, so that the ticks
                    // below never find their answers still queued.
                    while let Ok(report) = reports.try_recv() {
                        self.node.report(report);
                    }
                }
                _ = tick.tick() => {
                    what = "tick";
                    let now = self.now();
                    self.node.tick(now);
                    // A turn of this loop that took longer than a tick
                    // (a large batch and its allocation) owes raft the
                    // ticks it missed: the leader's heartbeats keep wall
                    // time, up to a bound.
                    let owed = (ticked.elapsed().as_millis() / TICK.as_millis()) as u32;
                    for _ in 1..owed.min(MAX_OWED_TICKS) {
                        self.node.tick_raft();
                    }
                    ticked = Instant::now();
                }
                input = rx.recv() => {
                    let Some(input) = input else { return Ok(()) };
                    what = "inputs";
                    self.handle(input);
                    // Batch whatever else is already queued before settling,
                    // within a bound of time, so that a flood of calls
                    // still leaves the loop turning.
                    let batch = Instant::now();
                    for _ in 0..1024 {
                        if batch.elapsed() > BATCH_TIME {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
            }
            let handled = turn.elapsed();
            self.settle()?;
            if self.node.is_current_leader() != self.was_current {
                self.was_current = !self.was_current;
                if self.was_current {
                    tracing::info!(
                        held = self.waiting.held(),
                        "this leader's state is current; serving clients"
                    );
                    self.seed_security();
                    self.settle()?;
                }
            }
            // Inputs held while this leader caught up, a batch per turn
            // as queued inputs are: after a failover they are every agent
            // and framework of the cluster.
            let mut released = self.waiting.release(&self.node).into_iter();
            if released.len() > 0 {
                let batch = Instant::now();
                for input in released.by_ref() {
                    self.handle(input);
                    if batch.elapsed() > BATCH_TIME {
                        break;
                    }
                }
                self.waiting.hold_again(released.collect());
                self.settle()?;
            }
            self.publish_security();
            self.publish_leadership();
            self.answer_durable();
            // A turn near raft's election timeout (10 ticks) risks an
            // election: say so, at most every so often.
            if turn.elapsed() > SLOW_TURN && slow_said.is_none_or(|t| t.elapsed() > SLOW_SAID_EVERY)
            {
                slow_said = Some(Instant::now());
                tracing::warn!(
                    ms = turn.elapsed().as_millis() as u64,
                    handling_ms = handled.as_millis() as u64,
                    woken_by = what,
                    "one turn of the state machine took long; a turn near raft's election timeout (0.5 s) risks an election"
                );
            }
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
    let fresh_id = || uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let mut node = Node::open(
        &raft_dir,
        config.id,
        &voters,
        config.snapshot_every,
        config.timeouts.clone(),
        Box::new(fresh_id),
    )?;
    node.set_finished_kept(config.limits.completed_tasks);
    node.set_jobs_kept(config.limits.jobs_kept);
    node.set_scheduling(config.scheduling.clone());
    tracing::info!(master_id = node.cluster().master_id(), data_dir = %config.data_dir.display(), "master starting");
    // The shell's clock starts here; the state machine stamps wall-clock
    // times from it and reads no clock itself.
    let (started, started_unix) = (Instant::now(), mezz_proto::unix_now());
    node.set_wall_epoch(started_unix);
    let bootstrap = match &config.security.bootstrap_token_file {
        Some(path) => Some(bootstrap_record(
            path,
            &config.security.bootstrap_principal,
        )?),
        None => None,
    };
    let audit = match &config.security.audit_log {
        Some(path) => crate::security::Audit::to_file(path).map_err(MasterError::Config)?,
        None => crate::security::Audit::in_memory(),
    };
    let guard = Guard::with(
        config.security.classes,
        audit,
        config.security.rate_limits.clone(),
    )
    .map_err(MasterError::Config)?;
    let mut actor = Actor {
        node,
        config: config.clone(),
        started,
        started_unix,
        streams: Streams {
            agents: HashMap::new(),
            agent_peers: HashMap::new(),
            frameworks: HashMap::new(),
            transport: None,
        },
        waiting: Waiting::new(INPUT_QUEUE),
        was_current: false,
        guard: Arc::clone(&guard),
        published: None,
        leadership: watch::channel(Leadership::default()).0,
        bootstrap,
    };
    // Replay the log; a group of one also wins its election before serving.
    // A group of several elects once the peers can talk, i.e. after serving.
    for _ in 0..50 {
        actor.settle()?;
        if actor.node.is_leader() || config.peers.len() > 1 {
            break;
        }
        let now = actor.now();
        actor.node.tick(now);
    }
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    if config.peers.len() > 1 {
        actor.streams.transport = Some(GrpcTransport::start(config.id, &config.peers, report_tx));
    }
    actor.publish_security();
    actor.publish_leadership();
    tracing::info!(
        agents = actor.node.cluster().registry().agents.len(),
        frameworks = actor.node.cluster().registry().frameworks.len(),
        "registry recovered"
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| MasterError::Bind {
            addr: config.listen,
            source,
        })?;
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let (raft_tx, raft_rx) = mpsc::channel(RAFT_QUEUE);
    let fatal = Arc::new(std::sync::OnceLock::new());
    let handle = Handle::new(
        tx,
        raft_tx,
        Arc::clone(&fatal),
        guard,
        actor.leadership.subscribe(),
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut actor_task = tokio::spawn(actor.run(
        Queues {
            inputs: rx,
            raft: raft_rx,
            reports: report_rx,
        },
        stop_rx,
    ));
    let router = crate::api::router(handle, config.id, config.peers.keys().copied().collect());
    tracing::info!(
        "master listening on {} (gRPC and HTTP{})",
        config.listen,
        if config.tls.is_some() { ", TLS" } else { "" }
    );
    let (serve_stop_tx, serve_stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::listener::serve_with_tls(
        listener,
        router,
        config.limits.connections.clone(),
        config.tls.clone(),
        async move {
            let _ = serve_stop_rx.await;
        },
    ));
    let joined = |r: Result<Result<(), MasterError>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| {
            Err(MasterError::Serve(format!(
                "state machine task failed: {e}"
            )))
        })
    };
    // The state machine ends on shutdown, or on its own when it cannot go
    // on (its raft log or state cannot be written: a full disk, a failed
    // device). Then the master must not linger answering 503 while
    // `/health` says all is well: the error is logged at once, `/health`
    // turns red, and the process exits non-zero for its supervisor to
    // restart it once the cause is gone.
    tokio::pin!(shutdown);
    let acted = tokio::select! {
        _ = &mut shutdown => {
            // Stopping the actor first drops every stream's sender, which
            // ends the long-lived agent and framework streams so the
            // server can drain.
            let _ = stop_tx.send(());
            joined(actor_task.await)
        }
        r = &mut actor_task => match joined(r) {
            Ok(()) => Err(MasterError::Serve("the state machine stopped unexpectedly".into())),
            failed => failed,
        },
    };
    if let Err(e) = &acted {
        let _ = fatal.set(e.to_string());
        tracing::error!("the master cannot go on and stops: {e}");
    }
    let _ = serve_stop_tx.send(());
    server
        .await
        .map_err(|e| MasterError::Serve(format!("server task failed: {e}")))?;
    acted
}

/// The record of the bootstrap token in `path`: read when the file exists
/// (it must be private), else made and written there (mode 0600) first.
fn bootstrap_record(
    path: &std::path::Path,
    principal: &str,
) -> Result<mezz_proto::v1::TokenRecord, MasterError> {
    use mezz_proto::auth::Token;
    let bad = |reason: String| {
        MasterError::Config(format!(
            "--bootstrap-token-file {}: {reason}",
            path.display()
        ))
    };
    crate::security::tokens::check_principal(principal).map_err(bad)?;
    let token = if path.exists() {
        Token::from_file(path).map_err(|e| bad(e.to_string()))?
    } else {
        let t = Token::generate().map_err(bad)?;
        t.write_new_file(path).map_err(|e| bad(e.to_string()))?;
        tracing::info!(path = %path.display(), token_id = t.id(), "wrote a new bootstrap token");
        t
    };
    // The salt need not be secret, only unique: the token id is random.
    let mut record = crate::security::tokens::record(
        &token,
        principal,
        token.id().as_bytes(),
        mezz_proto::unix_now(),
        0.0,
    );
    record.bootstrap = true;
    Ok(record)
}
