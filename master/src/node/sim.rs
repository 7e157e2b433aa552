//! A seeded simulation of whole masters at work: three or five [`Node`]s
//! (state machine and raft, exactly as a running master glues them) on an
//! in-memory network that drops, delays, duplicates and partitions raft
//! messages (a partition also cuts off the clients on each side from the
//! masters on the other), with masters crashing and restarting from their
//! sled data,
//! while simulated agents run tasks and simulated frameworks take offers,
//! launch, acknowledge and reconcile. Client streams break at random and
//! clients find the leader again the way real ones do: by trying a master
//! and following its hint.
//!
//! Checked at every step:
//! - at most one leader per term;
//! - at most one master holding the lease, i.e. able to offer or launch;
//! - what that master offers on an agent, plus what really runs there,
//!   fits the agent (no resource offered twice);
//! - no agent is ever asked to run more than it has;
//! - a framework never sees a task go back from a terminal state;
//! - a rogue client that registers with the id of an agent that has
//!   registered before, with the wrong secret, is always refused;
//! - a status update a rogue agent sends for a task it does not run
//!   (FINISHED for another agent's task) never reaches a framework (and,
//!   by the check above, never frees that task's resources for another
//!   launch on its agent).
//!
//! Checked once the faults stop and the cluster has healed:
//! - every task a framework launched is accounted for: the framework's
//!   view of it matches what the agent says, or, if no agent has it, the
//!   framework was told it is gone;
//! - every status update an agent produced reached its framework, which
//!   applied it once, and the agent got its acknowledgement; a live state
//!   may be skipped only when the framework knows the task is over;
//! - a framework that never came back within its failover timeout was
//!   removed and none of its tasks still runs;
//! - a task whose accept was lost (the call, or its answer) is accounted
//!   for too: it runs where the framework is told it does, or the
//!   framework learns by reconciliation that no master knows it.
//!
//! Everything random comes from the seed and the run is deterministic (the
//! crate's tests hash with a fixed key); a failure names its seed. Replay
//! one with `MEZZ_SIM_SEED=N cargo test -p mezz-master node::sim`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use mezz_proto::v1::{
    event, master_message, operation, AcceptRequest, AgentInfo, AgentTask, CommandInfo, Event,
    Filters, FrameworkInfo, Launch, MasterMessage, Operation, ReconcileTask, RegisterAgent,
    StatusSource, TaskInfo, TaskReason, TaskState, TaskStatus,
};
use mezz_proto::{Resources, PROTOCOL_VERSION};
use raft::eraftpb::Message as RaftMessage;

use super::{Call, Dropped, Node, Outbox};
use crate::cluster::{CallError, ConnId, Effect, Millis, Timeouts};
use crate::replication::sim::{seeds, Clocks, Partition, Rng, SimNet};
use crate::replication::transport::Transport;
use crate::replication::Replica;

/// Simulated milliseconds per step (one raft tick, as in `server.rs`).
const STEP_MS: Millis = 50;
const TASK: &str = "cpus:1;mem:128";
const AGENT: &str = "cpus:4;mem:1024";
/// Tasks each framework launches at most, so that runs stay bounded.
const TASKS_PER_FRAMEWORK: u64 = 40;

fn timeouts() -> Timeouts {
    Timeouts {
        offer: 2_000,
        agent_reregister: 5_000,
        agent_heartbeat: 500,
        framework_heartbeat: 1_000,
        default_refuse: 200,
        allocation_batch: 0,
        allocation_sweep: 250,
    }
}

/// How hostile the world is.
struct Faults {
    raft_drop: f64,
    raft_duplicate: f64,
    raft_delay: u64,
    partition: f64,
    crash: f64,
    restart: f64,
    /// A client stream breaks (a TCP reset).
    conn_break: f64,
    /// A master finds a client stream full and drops it.
    stream_full: f64,
}

const HOSTILE: Faults = Faults {
    raft_drop: 0.05,
    raft_duplicate: 0.02,
    raft_delay: 3,
    partition: 0.01,
    crash: 0.004,
    restart: 0.03,
    conn_break: 0.003,
    stream_full: 0.001,
};

const CALM: Faults = Faults {
    raft_drop: 0.0,
    raft_duplicate: 0.0,
    raft_delay: 1,
    partition: 0.0,
    crash: 0.0,
    restart: 1.0,
    conn_break: 0.0,
    stream_full: 0.0,
};

/// A client message on its way to a master.
#[derive(Debug)]
enum Up {
    Register(RegisterAgent),
    Heartbeat,
    Update(TaskStatus),
    Subscribe(FrameworkInfo),
    /// A scheduler call; accepts carry the task ids they launch.
    Call(Call, Vec<String>),
}

/// A master's message on its way to a client.
#[derive(Debug)]
// Test messages, moved and never stored in bulk.
#[allow(clippy::large_enum_variant)]
enum Down {
    Agent(MasterMessage),
    Event(Event),
    /// Registration or subscription refused; the leader if known.
    Refused(CallError, Option<u64>),
    /// The answer to an accept launching these tasks.
    Accepted(Vec<String>, Result<(), CallError>),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Client {
    Agent(usize),
    Framework(usize),
    /// Speaks the agent protocol; see [`Rogue`].
    Rogue,
}

/// A client's stream to one master: ordered and reliable while it lasts,
/// like the gRPC streams it stands for.
struct Conn {
    master: u64,
    client: Client,
    up: VecDeque<(u64, Up)>,
    down: VecDeque<(u64, Down)>,
    /// The master ended its side; the client sees the end once `down` is
    /// drained.
    closed_by_master: bool,
}

struct Conns {
    map: BTreeMap<ConnId, Conn>,
    next: ConnId,
}

impl Conns {
    fn open(&mut self, master: u64, client: Client) -> ConnId {
        self.next += 1;
        self.map.insert(
            self.next,
            Conn {
                master,
                client,
                up: VecDeque::new(),
                down: VecDeque::new(),
                closed_by_master: false,
            },
        );
        self.next
    }

    /// Queues `msg` behind what is already on its way; FIFO with a delay.
    fn push_up(&mut self, conn: ConnId, at: u64, msg: Up) {
        if let Some(c) = self.map.get_mut(&conn) {
            let at = c.up.back().map_or(at, |(t, _)| at.max(*t));
            c.up.push_back((at, msg));
        }
    }

    fn push_down(&mut self, conn: ConnId, at: u64, msg: Down) {
        if let Some(c) = self.map.get_mut(&conn).filter(|c| !c.closed_by_master) {
            let at = c.down.back().map_or(at, |(t, _)| at.max(*t));
            c.down.push_back((at, msg));
        }
    }
}

struct Master {
    id: u64,
    dir: PathBuf,
    node: Option<Node>,
}

/// What one master writes to during a settle.
struct SimOutbox<'a> {
    master: u64,
    conns: &'a mut Conns,
    raft: &'a mut Vec<RaftMessage>,
    rng: &'a mut Rng,
    step: u64,
    stream_full: f64,
}

impl Outbox for SimOutbox<'_> {
    fn deliver(&mut self, effects: Vec<Effect>) -> Dropped {
        let mut dropped = Dropped::default();
        for e in effects {
            let (conn, msg) = match e {
                Effect::ToAgent(c, m) => (c, Some(Down::Agent(m))),
                Effect::ToFramework(c, ev) => (c, Some(Down::Event(ev))),
                Effect::CloseAgent(c) | Effect::CloseFramework(c) => (c, None),
                Effect::Propose(_) => continue,
            };
            let Some(c) = self.conns.map.get_mut(&conn) else {
                continue; // the client already hung up
            };
            if c.master != self.master || c.closed_by_master {
                continue;
            }
            match msg {
                None => c.closed_by_master = true,
                Some(_) if self.rng.chance(self.stream_full) => {
                    c.closed_by_master = true;
                    match c.client {
                        Client::Agent(_) | Client::Rogue => dropped.agents.push(conn),
                        Client::Framework(_) => dropped.frameworks.push(conn),
                    }
                }
                Some(m) => {
                    let at = self.step + 1 + self.rng.below(2);
                    self.conns.push_down(conn, at, m);
                }
            }
        }
        dropped
    }

    fn send_raft(&mut self, msgs: Vec<RaftMessage>) {
        self.raft.extend(msgs);
    }
}

/// A task as its agent knows it: the truth.
struct AgentTaskState {
    framework: FrameworkInfo,
    info: TaskInfo,
    status: TaskStatus,
}

struct SimAgent {
    id: String,
    /// What it proves its identity with.
    secret: String,
    total: Resources,
    tasks: BTreeMap<(String, String), AgentTaskState>,
    /// Updates not yet acknowledged, oldest first, with when last sent.
    unacked: Vec<(TaskStatus, Option<u64>)>,
    /// Every update this agent produced, by uuid: (framework, task, state).
    produced: BTreeMap<String, (String, String, TaskState)>,
    conn: Option<ConnId>,
    registered: bool,
    /// Registered at least once: its secret is pinned.
    ever_registered: bool,
    hint: Option<u64>,
    last_heartbeat: u64,
    /// The master on whose side of a partition this agent is.
    home: u64,
}

/// A task as its framework knows it.
#[derive(Debug, Clone)]
struct KnownTask {
    agent: String,
    /// The accept's answer: `None` while unknown.
    accepted: Option<bool>,
    state: Option<TaskState>,
}

struct SimFramework {
    name: String,
    info: FrameworkInfo,
    conn: Option<ConnId>,
    subscribed: bool,
    hint: Option<u64>,
    /// The master on whose side of a partition this framework is.
    home: u64,
    tasks: BTreeMap<String, KnownTask>,
    /// Updates applied, by uuid.
    applied: BTreeSet<String>,
    duplicates: u64,
    launched: u64,
    /// This framework goes away for good at this step (and its failover
    /// timeout is short).
    dies_at: Option<u64>,
    last_reconcile: u64,
    /// Ids this framework had before the master removed it.
    retired: Vec<String>,
}

impl SimFramework {
    fn dead(&self, step: u64) -> bool {
        self.dies_at.is_some_and(|d| step >= d)
    }
}

struct Sim {
    rng: Rng,
    step: u64,
    masters: Vec<Master>,
    voters: Vec<u64>,
    /// Master incarnations so far; master ids stay unique across restarts.
    incarnations: BTreeMap<u64, u64>,
    net: SimNet,
    clocks: Clocks,
    partition: Partition,
    conns: Conns,
    agents: Vec<SimAgent>,
    frameworks: Vec<SimFramework>,
    leaders: BTreeMap<u64, u64>,
    rogue: Rogue,
    /// Counters for the report.
    launches: u64,
    failovers: u64,
    /// Accepts lost on the way to the master, or their answers on the way
    /// back.
    accepts_lost: u64,
}

/// A client that speaks the agent protocol with ill intent: it registers
/// with the id of a real agent and a wrong secret, or under its own id
/// (legitimately) and then reports other agents' tasks FINISHED.
#[derive(Default)]
struct Rogue {
    conn: Option<ConnId>,
    /// The real agent it pretends to be on this stream, if any.
    impersonating: Option<usize>,
    registered: bool,
    hint: Option<u64>,
    refused: u64,
    spoofed: u64,
}

/// The rogue's own agent id and secret.
const ROGUE_ID: &str = "rogue";
const ROGUE_SECRET: &str = "0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad0bad";
/// Spoofed updates carry uuids with this prefix.
const SPOOF: &str = "spoof-";

/// `MEZZ_SIM_TRACE=text` prints every client message that mentions `text`,
/// for finding out how a replayed seed went wrong.
fn trace(step: u64, what: &str, msg: &dyn std::fmt::Debug) {
    thread_local! {
        static FILTER: Option<String> = std::env::var("MEZZ_SIM_TRACE").ok();
    }
    FILTER.with(|f| {
        if let Some(f) = f {
            let text = format!("{msg:?}");
            if text.contains(f.as_str()) {
                eprintln!("[{step}] {what}: {text}");
            }
        }
    });
}

fn now(step: u64) -> Millis {
    step * STEP_MS
}

impl Sim {
    fn new(seed: u64, n: u64, root: &std::path::Path) -> Result<Self, String> {
        let voters: Vec<u64> = (1..=n).collect();
        let mut sim = Sim {
            rng: Rng(seed),
            step: 0,
            masters: Vec::new(),
            voters,
            incarnations: BTreeMap::new(),
            net: SimNet::new(seed),
            clocks: Clocks::new(),
            partition: Partition::default(),
            conns: Conns {
                map: BTreeMap::new(),
                next: 0,
            },
            agents: Vec::new(),
            frameworks: Vec::new(),
            leaders: BTreeMap::new(),
            rogue: Rogue::default(),
            launches: 0,
            failovers: 0,
            accepts_lost: 0,
        };
        for id in 1..=n {
            let dir = root.join(format!("m{id}"));
            sim.masters.push(Master {
                id,
                dir,
                node: None,
            });
            sim.start_master(id as usize - 1)?;
        }
        for i in 0..4 {
            sim.agents.push(SimAgent {
                id: format!("agent-{i}"),
                secret: format!("{:064x}", 0xa9e0_0000u64 + i as u64),
                total: Resources::parse(AGENT).map_err(|e| e.to_string())?,
                tasks: BTreeMap::new(),
                unacked: Vec::new(),
                produced: BTreeMap::new(),
                conn: None,
                registered: false,
                ever_registered: false,
                hint: None,
                last_heartbeat: 0,
                home: 1 + i as u64 % n,
            });
        }
        for (i, (failover, dies_at)) in [(3600.0, None), (3600.0, None), (3.0, Some(250))]
            .into_iter()
            .enumerate()
        {
            let name = format!("fw-{i}");
            sim.frameworks.push(SimFramework {
                info: FrameworkInfo {
                    name: name.clone(),
                    user: "sim".into(),
                    role: "*".into(),
                    failover_timeout_secs: failover,
                    ..Default::default()
                },
                name,
                conn: None,
                subscribed: false,
                hint: None,
                home: 1 + (i as u64 + 1) % n,
                tasks: BTreeMap::new(),
                applied: BTreeSet::new(),
                duplicates: 0,
                launched: 0,
                dies_at,
                last_reconcile: 0,
                retired: Vec::new(),
            });
        }
        Ok(sim)
    }

    fn start_master(&mut self, i: usize) -> Result<(), String> {
        let id = self.masters[i].id;
        let inc = self.incarnations.entry(id).or_insert(0);
        *inc += 1;
        let (inc, mut term) = (*inc, 0u64);
        let fresh = move || {
            term += 1;
            format!("m{id}i{inc}t{term}")
        };
        let (replica, snapshot) = Replica::open_fixed_timer(&self.masters[i].dir, id, &self.voters)
            .map_err(|e| format!("master {id} cannot start: {e}"))?;
        let node = Node::from_replica(replica, snapshot, 25, timeouts(), Box::new(fresh));
        self.masters[i].node = Some(node);
        Ok(())
    }

    fn master_up(&self, id: u64) -> bool {
        self.masters.iter().any(|m| m.id == id && m.node.is_some())
    }

    /// The client side of a stream is gone: forget it and tell the master.
    fn hang_up(&mut self, conn: ConnId) {
        let Some(c) = self.conns.map.remove(&conn) else {
            return;
        };
        let t = now(self.step);
        if let Some(node) = self
            .masters
            .iter_mut()
            .find(|m| m.id == c.master)
            .and_then(|m| m.node.as_mut())
        {
            match c.client {
                Client::Agent(_) | Client::Rogue => node.agent_gone(conn, t),
                Client::Framework(_) => node.framework_gone(conn, t),
            }
        }
        self.client_lost_conn(c.client, conn);
    }

    fn client_lost_conn(&mut self, client: Client, conn: ConnId) {
        match client {
            Client::Agent(a) => {
                let agent = &mut self.agents[a];
                if agent.conn == Some(conn) {
                    agent.conn = None;
                    agent.registered = false;
                }
            }
            Client::Framework(f) => {
                let fw = &mut self.frameworks[f];
                if fw.conn == Some(conn) {
                    fw.conn = None;
                    fw.subscribed = false;
                }
            }
            Client::Rogue => {
                if self.rogue.conn == Some(conn) {
                    self.rogue.conn = None;
                }
            }
        }
    }

    fn faults(&mut self, f: &Faults) -> Result<(), String> {
        let n = self.masters.len() as u64;
        self.partition
            .evolve(&mut self.rng, n, self.step, f.partition);
        let down = self.masters.iter().filter(|m| m.node.is_none()).count() as u64;
        if down < (n - 1) / 2 && self.rng.chance(f.crash) {
            let i = self.rng.below(n) as usize;
            if self.masters[i].node.take().is_some() {
                // A crash breaks every stream to it; nothing more is sent.
                let id = self.masters[i].id;
                let gone: Vec<(ConnId, Client)> = self
                    .conns
                    .map
                    .iter()
                    .filter(|(_, c)| c.master == id)
                    .map(|(&k, c)| (k, c.client))
                    .collect();
                for (conn, client) in gone {
                    self.conns.map.remove(&conn);
                    self.client_lost_conn(client, conn);
                }
            }
        }
        for i in 0..self.masters.len() {
            if self.masters[i].node.is_none() && self.rng.chance(f.restart) {
                self.start_master(i)?;
            }
        }
        // Streams break at random, and those a partition cuts through.
        let cut: Vec<ConnId> = self
            .conns
            .map
            .iter()
            .filter(|(_, c)| !self.reachable(c.client, c.master))
            .map(|(&k, _)| k)
            .collect();
        let mut broken: Vec<ConnId> = self
            .conns
            .map
            .keys()
            .copied()
            .filter(|_| self.rng.chance(f.conn_break))
            .collect();
        broken.extend(cut);
        broken.sort_unstable();
        broken.dedup();
        for conn in broken {
            self.hang_up(conn);
        }
        Ok(())
    }

    /// One step: masters take what reached them, tick and settle; raft
    /// messages travel; clients take what reached them and act.
    fn round(&mut self, f: &Faults, heal: bool) -> Result<(), String> {
        self.faults(f)?;
        let step = self.step;
        let t = now(step);
        let mut raft_out = Vec::new();
        for i in 0..self.masters.len() {
            let id = self.masters[i].id;
            if self.masters[i].node.is_none() {
                continue;
            }
            // Client messages due at this master, stream by stream.
            let mut inbox = Vec::new();
            for (&conn, c) in self.conns.map.iter_mut().filter(|(_, c)| c.master == id) {
                while c.up.front().is_some_and(|(at, _)| *at <= step) {
                    let (_, m) = c.up.pop_front().expect("checked");
                    inbox.push((conn, m));
                }
            }
            let node = self.masters[i].node.as_mut().expect("checked");
            for (conn, msg) in inbox {
                trace(step, &format!("master {id} <- {conn}"), &msg);
                let leader_hint = node.replica().leader_id();
                match msg {
                    Up::Register(reg) => {
                        if let Err(e) = node.agent_register(conn, reg, t) {
                            self.conns
                                .push_down(conn, step + 1, Down::Refused(e, leader_hint));
                            if let Some(c) = self.conns.map.get_mut(&conn) {
                                c.closed_by_master = true;
                            }
                        }
                    }
                    Up::Heartbeat => node.agent_heartbeat(conn, t),
                    Up::Update(s) => node.agent_update(conn, s, t),
                    Up::Subscribe(info) => {
                        if let Err(e) = node.subscribe(conn, PROTOCOL_VERSION, info, t) {
                            self.conns
                                .push_down(conn, step + 1, Down::Refused(e, leader_hint));
                            if let Some(c) = self.conns.map.get_mut(&conn) {
                                c.closed_by_master = true;
                            }
                        }
                    }
                    Up::Call(call, launching) => {
                        let result = node.call(call, t);
                        if !launching.is_empty() {
                            self.conns
                                .push_down(conn, step + 1, Down::Accepted(launching, result));
                        }
                    }
                }
            }
            if self.clocks.ticks(&mut self.rng, id, step) {
                node.tick(t);
            }
            let mut out = SimOutbox {
                master: id,
                conns: &mut self.conns,
                raft: &mut raft_out,
                rng: &mut self.rng,
                step,
                stream_full: f.stream_full,
            };
            let changed = node
                .settle(t, &mut out)
                .map_err(|e| format!("master {id}: {e}"))?;
            if let Some(leads) = changed {
                if leads {
                    self.failovers += 1;
                }
                // The shell drops every stream on a change of leadership.
                for c in self.conns.map.values_mut().filter(|c| c.master == id) {
                    c.closed_by_master = true;
                }
            }
        }
        // Raft messages travel.
        self.net.now = step;
        self.net.drop = f.raft_drop;
        self.net.duplicate = f.raft_duplicate;
        self.net.max_delay = f.raft_delay;
        self.net.send(raft_out);
        for m in self.net.due(step) {
            if self.partition.cut(m.from, m.to) {
                continue;
            }
            if let Some(node) = self
                .masters
                .iter_mut()
                .find(|n| n.id == m.to)
                .and_then(|n| n.node.as_mut())
            {
                node.step_raft(vec![m]);
            }
        }
        self.check_masters()?;
        for a in 0..self.agents.len() {
            self.agent_round(a, heal)?;
        }
        for fw in 0..self.frameworks.len() {
            self.framework_round(fw, heal)?;
        }
        self.rogue_round(heal)?;
        self.step += 1;
        Ok(())
    }

    /// Messages due for a client, in order; `None` once its stream ended.
    fn client_inbox(&mut self, conn: ConnId) -> Option<Vec<Down>> {
        let step = self.step;
        let c = self.conns.map.get_mut(&conn)?;
        let mut msgs = Vec::new();
        while c.down.front().is_some_and(|(at, _)| *at <= step) {
            let m = c.down.pop_front().expect("checked").1;
            trace(
                step,
                &format!("{:?} <- master {} on {conn}", c.client, c.master),
                &m,
            );
            msgs.push(m);
        }
        if c.closed_by_master && c.down.is_empty() {
            let client = c.client;
            self.conns.map.remove(&conn);
            self.client_lost_conn(client, conn);
            if msgs.is_empty() {
                return None;
            }
        }
        Some(msgs)
    }

    /// Which master a client without a stream tries next: the hint, else
    /// any.
    /// Whether a client can reach a master across the current partition:
    /// clients are on the side of their home master.
    fn reachable(&self, client: Client, master: u64) -> bool {
        let home = match client {
            Client::Agent(a) => self.agents[a].home,
            Client::Framework(f) => self.frameworks[f].home,
            Client::Rogue => 1,
        };
        !self.partition.cut(home, master)
    }

    fn pick_master(&mut self, hint: Option<u64>) -> u64 {
        hint.unwrap_or_else(|| 1 + self.rng.below(self.masters.len() as u64))
    }

    fn agent_round(&mut self, a: usize, heal: bool) -> Result<(), String> {
        let step = self.step;
        // Connect.
        if self.agents[a].conn.is_none() {
            if !self.rng.chance(0.3) {
                return Ok(());
            }
            let hint = self.agents[a].hint.take();
            let target = self.pick_master(hint);
            if !self.master_up(target) || !self.reachable(Client::Agent(a), target) {
                return Ok(()); // refused, or no route
            }
            let conn = self.conns.open(target, Client::Agent(a));
            let reg = self.register_message(a);
            self.conns.push_up(conn, step + 1, Up::Register(reg));
            self.agents[a].conn = Some(conn);
            return Ok(());
        }
        let conn = self.agents[a].conn.expect("checked");
        let Some(msgs) = self.client_inbox(conn) else {
            return Ok(());
        };
        for m in msgs {
            self.agent_message(a, m)?;
        }
        let agent = &mut self.agents[a];
        if agent.conn != Some(conn) || !agent.registered {
            return Ok(());
        }
        // Tasks end on their own now and then.
        if !heal {
            let running: Vec<(String, String)> = agent
                .tasks
                .iter()
                .filter(|(_, t)| !t.status.state().is_terminal())
                .map(|(k, _)| k.clone())
                .collect();
            for key in running {
                if self.rng.chance(0.01) {
                    self.task_changed(a, &key, TaskState::Finished, TaskReason::CommandExited);
                }
            }
        }
        let agent = &mut self.agents[a];
        let mut send = Vec::new();
        if step >= agent.last_heartbeat + 10 {
            agent.last_heartbeat = step;
            send.push(Up::Heartbeat);
        }
        // Unacknowledged updates: new ones at once, old ones again after
        // a while (as the agent's resend timer does).
        for (status, sent) in agent.unacked.iter_mut() {
            if sent.is_none_or(|s| step >= s + 20) {
                *sent = Some(step);
                send.push(Up::Update(status.clone()));
            }
        }
        for m in send {
            self.conns.push_up(conn, step + 1, m);
        }
        Ok(())
    }

    fn register_message(&mut self, a: usize) -> RegisterAgent {
        let agent = &mut self.agents[a];
        // Every update is sent again on the new stream.
        for (_, sent) in agent.unacked.iter_mut() {
            *sent = None;
        }
        let mut frameworks: BTreeMap<String, FrameworkInfo> = BTreeMap::new();
        let tasks = agent
            .tasks
            .iter()
            .map(|((fid, _), t)| {
                frameworks.insert(fid.clone(), t.framework.clone());
                AgentTask {
                    framework_id: fid.clone(),
                    task: Some(t.info.clone()),
                    latest_status: Some(t.status.clone()),
                }
            })
            .collect();
        RegisterAgent {
            protocol_version: PROTOCOL_VERSION,
            agent: Some(AgentInfo {
                id: agent.id.clone(),
                hostname: agent.id.clone(),
                address: "127.0.0.1:1".into(),
                resources: agent.total.to_proto(),
                ..Default::default()
            }),
            tasks,
            frameworks: frameworks.into_values().collect(),
            secret: agent.secret.clone(),
        }
    }

    /// A task changes state on its agent: the agent produces an update.
    fn task_changed(
        &mut self,
        a: usize,
        key: &(String, String),
        state: TaskState,
        reason: TaskReason,
    ) {
        let uuid = format!("{:016x}", self.rng.next());
        let agent = &mut self.agents[a];
        let Some(task) = agent.tasks.get_mut(key) else {
            return;
        };
        if task.status.state().is_terminal() {
            return;
        }
        let status = TaskStatus {
            task_id: key.1.clone(),
            framework_id: key.0.clone(),
            agent_id: agent.id.clone(),
            state: state as i32,
            reason: reason as i32,
            uuid: uuid.clone(),
            source: StatusSource::Agent as i32,
            ..Default::default()
        };
        task.status = status.clone();
        agent
            .produced
            .insert(uuid, (key.0.clone(), key.1.clone(), state));
        agent.unacked.push((status, None));
    }

    fn agent_message(&mut self, a: usize, m: Down) -> Result<(), String> {
        let msg = match m {
            Down::Refused(_, hint) => {
                self.agents[a].hint = hint;
                return Ok(());
            }
            Down::Agent(msg) => msg,
            Down::Event(_) | Down::Accepted(..) => {
                return Err(format!("agent {a} got a framework's message"))
            }
        };
        use master_message::Message as M;
        match msg.message {
            Some(M::Registered(_)) => {
                self.agents[a].registered = true;
                self.agents[a].ever_registered = true;
            }
            Some(M::Launch(l)) => {
                let (Some(fw), Some(task)) = (l.framework, l.task) else {
                    return Err("a launch without framework or task".into());
                };
                let key = (fw.id.clone(), task.task_id.clone());
                let agent = &mut self.agents[a];
                if agent.tasks.contains_key(&key) {
                    return Err(format!("task {key:?} launched twice on {}", agent.id));
                }
                let mut used = Resources::new();
                for t in agent.tasks.values() {
                    if !t.status.state().is_terminal() {
                        used.add(&Resources::from_proto(&t.info.resources).unwrap_or_default());
                    }
                }
                used.add(&Resources::from_proto(&task.resources).unwrap_or_default());
                if !agent.total.contains(&used) {
                    return Err(format!(
                        "agent {} was asked to run {used} but has {} (resources handed out twice)",
                        agent.id, agent.total
                    ));
                }
                agent.tasks.insert(
                    key.clone(),
                    AgentTaskState {
                        framework: fw,
                        info: task,
                        status: TaskStatus {
                            state: TaskState::Staging as i32,
                            ..Default::default()
                        },
                    },
                );
                self.launches += 1;
                self.task_changed(a, &key, TaskState::Running, TaskReason::Unspecified);
            }
            Some(M::Kill(k)) => {
                let key = (k.framework_id, k.task_id);
                self.task_changed(a, &key, TaskState::Killed, TaskReason::KilledByRequest);
            }
            Some(M::Ack(ack)) => {
                self.agents[a].unacked.retain(|(s, _)| s.uuid != ack.uuid);
            }
            Some(M::ShutdownFramework(s)) => {
                let keys: Vec<_> = self.agents[a]
                    .tasks
                    .keys()
                    .filter(|(f, _)| *f == s.framework_id)
                    .cloned()
                    .collect();
                for key in keys {
                    self.task_changed(a, &key, TaskState::Killed, TaskReason::FrameworkRemoved);
                }
            }
            Some(M::Refused(r)) => {
                return Err(format!("agent {a} refused: {}", r.message));
            }
            None => {}
        }
        Ok(())
    }

    fn framework_round(&mut self, f: usize, heal: bool) -> Result<(), String> {
        let step = self.step;
        if self.frameworks[f].dead(step) {
            if let Some(conn) = self.frameworks[f].conn {
                self.hang_up(conn);
            }
            return Ok(());
        }
        if self.frameworks[f].conn.is_none() {
            if !self.rng.chance(0.3) {
                return Ok(());
            }
            let hint = self.frameworks[f].hint.take();
            let target = self.pick_master(hint);
            if !self.master_up(target) || !self.reachable(Client::Framework(f), target) {
                return Ok(());
            }
            let conn = self.conns.open(target, Client::Framework(f));
            let info = self.frameworks[f].info.clone();
            self.conns.push_up(conn, step + 1, Up::Subscribe(info));
            self.frameworks[f].conn = Some(conn);
            return Ok(());
        }
        let conn = self.frameworks[f].conn.expect("checked");
        let Some(msgs) = self.client_inbox(conn) else {
            return Ok(());
        };
        let mut calls = Vec::new();
        for m in msgs {
            self.framework_message(f, m, heal, &mut calls)?;
        }
        let fw = &mut self.frameworks[f];
        if fw.subscribed && step >= fw.last_reconcile + 100 {
            calls.push((
                Call::Reconcile(fw.info.id.clone(), fw.to_reconcile()),
                vec![],
            ));
            fw.last_reconcile = step;
        }
        for (call, launching) in calls {
            if !launching.is_empty() && !heal && self.rng.chance(0.05) {
                // The accept is lost: the call never reaches the master,
                // or its answer never comes back (a transport error in an
                // election). The framework does not know whether it
                // launched anything and must find out by reconciling.
                self.accepts_lost += 1;
                if self.rng.chance(0.5) {
                    continue;
                }
                self.conns.push_up(conn, step + 1, Up::Call(call, vec![]));
                continue;
            }
            self.conns
                .push_up(conn, step + 1, Up::Call(call, launching));
        }
        Ok(())
    }

    /// The rogue's step: connect as a known agent with a wrong secret (it
    /// must be refused) or as itself, and once registered as itself, report
    /// tasks of real agents FINISHED (those reports must go nowhere).
    fn rogue_round(&mut self, heal: bool) -> Result<(), String> {
        let step = self.step;
        if heal {
            if let Some(conn) = self.rogue.conn {
                self.hang_up(conn);
            }
            return Ok(());
        }
        let Some(conn) = self.rogue.conn else {
            if !self.rng.chance(0.05) {
                return Ok(());
            }
            let hint = self.rogue.hint.take();
            let target = self.pick_master(hint);
            if !self.master_up(target) || !self.reachable(Client::Rogue, target) {
                return Ok(());
            }
            let known: Vec<usize> = (0..self.agents.len())
                .filter(|&a| self.agents[a].ever_registered)
                .collect();
            let impersonate = (!known.is_empty() && self.rng.chance(0.5))
                .then(|| known[self.rng.below(known.len() as u64) as usize]);
            let reg = match impersonate {
                Some(a) => {
                    let mut reg = self.register_message(a);
                    // Its tasks, resources and all: only the secret is
                    // wrong (or missing).
                    reg.secret = if self.rng.chance(0.5) {
                        String::new()
                    } else {
                        ROGUE_SECRET.into()
                    };
                    reg
                }
                None => RegisterAgent {
                    protocol_version: PROTOCOL_VERSION,
                    agent: Some(AgentInfo {
                        id: ROGUE_ID.into(),
                        hostname: ROGUE_ID.into(),
                        address: "127.0.0.1:2".into(),
                        // Too little for any task: it is offered nothing
                        // a framework takes.
                        resources: Resources::parse("cpus:0.01;mem:1")
                            .map_err(|e| e.to_string())?
                            .to_proto(),
                        ..Default::default()
                    }),
                    secret: ROGUE_SECRET.into(),
                    ..Default::default()
                },
            };
            let conn = self.conns.open(target, Client::Rogue);
            self.conns.push_up(conn, step + 1, Up::Register(reg));
            self.rogue = Rogue {
                conn: Some(conn),
                impersonating: impersonate,
                registered: false,
                ..std::mem::take(&mut self.rogue)
            };
            return Ok(());
        };
        let Some(msgs) = self.client_inbox(conn) else {
            return Ok(());
        };
        for m in msgs {
            match m {
                Down::Refused(_, hint) => self.rogue.hint = hint,
                Down::Agent(MasterMessage {
                    message: Some(master_message::Message::Registered(_)),
                }) => {
                    if let Some(a) = self.rogue.impersonating {
                        return Err(format!(
                            "a rogue with a wrong secret registered as {}",
                            self.agents[a].id
                        ));
                    }
                    self.rogue.registered = true;
                }
                Down::Agent(MasterMessage {
                    message: Some(master_message::Message::Refused(_)),
                }) => self.rogue.refused += 1,
                // Launches (there is room for none), kills, acks: ignored.
                Down::Agent(_) => {}
                Down::Event(_) | Down::Accepted(..) => {
                    return Err("the rogue got a framework's message".into())
                }
            }
        }
        if self.rogue.conn != Some(conn) || !self.rogue.registered {
            return Ok(());
        }
        // Report a running task of a real agent FINISHED, under the
        // rogue's own id or under that agent's.
        let running: Vec<(usize, (String, String))> = self
            .agents
            .iter()
            .enumerate()
            .flat_map(|(a, agent)| {
                agent
                    .tasks
                    .iter()
                    .filter(|(_, t)| !t.status.state().is_terminal())
                    .map(move |(k, _)| (a, k.clone()))
            })
            .collect();
        if !running.is_empty() && self.rng.chance(0.2) {
            let (a, (fid, tid)) = running[self.rng.below(running.len() as u64) as usize].clone();
            let agent_id = if self.rng.chance(0.5) {
                ROGUE_ID.to_string()
            } else {
                self.agents[a].id.clone()
            };
            self.rogue.spoofed += 1;
            let status = TaskStatus {
                task_id: tid,
                framework_id: fid,
                agent_id,
                state: TaskState::Finished as i32,
                reason: TaskReason::CommandExited as i32,
                uuid: format!("{SPOOF}{}", self.rogue.spoofed),
                source: StatusSource::Agent as i32,
                ..Default::default()
            };
            self.conns.push_up(conn, step + 1, Up::Update(status));
        }
        self.conns.push_up(conn, step + 1, Up::Heartbeat);
        if self.rng.chance(0.02) {
            self.hang_up(conn);
        }
        Ok(())
    }

    fn framework_message(
        &mut self,
        f: usize,
        m: Down,
        heal: bool,
        calls: &mut Vec<(Call, Vec<String>)>,
    ) -> Result<(), String> {
        let step = self.step;
        let ev = match m {
            Down::Refused(e, hint) => {
                if matches!(e, CallError::FailedPrecondition(_)) {
                    // Away longer than its failover timeout: the framework
                    // was removed with its tasks. Start over as a new one.
                    let fw = &mut self.frameworks[f];
                    fw.retired.push(std::mem::take(&mut fw.info.id));
                    fw.tasks.clear();
                    return Ok(());
                }
                if !matches!(e, CallError::NotLeader(_)) {
                    return Err(format!("{} refused: {e}", self.frameworks[f].name));
                }
                self.frameworks[f].hint = hint;
                return Ok(());
            }
            Down::Accepted(tasks, result) => {
                let fw = &mut self.frameworks[f];
                for t in tasks {
                    if let Some(k) = fw.tasks.get_mut(&t) {
                        k.accepted = Some(result.is_ok());
                    }
                }
                return Ok(());
            }
            Down::Agent(_) => return Err(format!("framework {f} got an agent's message")),
            Down::Event(ev) => ev,
        };
        let fw = &mut self.frameworks[f];
        let fid = fw.info.id.clone();
        match ev.event {
            Some(event::Event::Subscribed(s)) => {
                fw.info.id = s.framework_id.clone();
                fw.subscribed = true;
                // As a scheduler should after (re-)subscribing: ask about
                // everything, and about each task not known to be over.
                calls.push((Call::Reconcile(s.framework_id.clone(), vec![]), vec![]));
                let unsettled = fw.to_reconcile();
                if !unsettled.is_empty() {
                    calls.push((Call::Reconcile(s.framework_id, unsettled), vec![]));
                }
                fw.last_reconcile = step;
            }
            Some(event::Event::Offers(o)) => {
                for offer in o.offers {
                    let res = Resources::from_proto(&offer.resources).unwrap_or_default();
                    let want = Resources::parse(TASK).map_err(|e| e.to_string())?;
                    let fw = &mut self.frameworks[f];
                    if !heal
                        && fw.launched < TASKS_PER_FRAMEWORK
                        && res.contains(&want)
                        && self.rng.chance(0.6)
                    {
                        let task_id = format!("{}-t{}", fw.name, fw.launched);
                        fw.launched += 1;
                        fw.tasks.insert(
                            task_id.clone(),
                            KnownTask {
                                agent: offer.agent_id.clone(),
                                accepted: None,
                                state: None,
                            },
                        );
                        let task = TaskInfo {
                            task_id: task_id.clone(),
                            name: task_id.clone(),
                            agent_id: offer.agent_id.clone(),
                            resources: want.to_proto(),
                            command: Some(CommandInfo {
                                value: "true".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        };
                        let accept = AcceptRequest {
                            framework_id: fw.info.id.clone(),
                            offer_ids: vec![offer.id],
                            operations: vec![Operation {
                                operation: Some(operation::Operation::Launch(Launch {
                                    tasks: vec![task],
                                })),
                            }],
                            filters: Some(Filters {
                                refuse_seconds: Some(0.2),
                            }),
                        };
                        calls.push((Call::Accept(accept), vec![task_id]));
                    } else {
                        calls.push((
                            Call::Decline {
                                framework_id: fw.info.id.clone(),
                                offer_ids: vec![offer.id],
                                refuse_seconds: Some(0.2),
                            },
                            vec![],
                        ));
                    }
                }
            }
            Some(event::Event::Update(u)) => {
                let Some(st) = u.status else {
                    return Err("an update without a status".into());
                };
                if st.uuid.starts_with(SPOOF) {
                    return Err(format!(
                        "{}: a spoofed {:?} of {} from a rogue agent got through",
                        self.frameworks[f].name,
                        st.state(),
                        st.task_id
                    ));
                }
                let fw = &mut self.frameworks[f];
                if !st.uuid.is_empty() && !fw.applied.insert(st.uuid.clone()) {
                    // Delivered again (at least once): acknowledge, do not
                    // apply twice.
                    fw.duplicates += 1;
                } else {
                    let known = fw.tasks.entry(st.task_id.clone()).or_insert(KnownTask {
                        agent: st.agent_id.clone(),
                        accepted: None,
                        state: None,
                    });
                    let ended = known.state.is_some_and(|s| s.is_terminal());
                    let no_news = st.reason() == TaskReason::Reconciliation
                        && matches!(st.state(), TaskState::Unknown | TaskState::Unreachable);
                    if ended && no_news {
                        // An answer to an older question from a master
                        // that does not know the task (or cannot reach its
                        // agent yet): no news about a task known to be over.
                    } else if ended && !st.state().is_terminal() {
                        return Err(format!(
                            "{}: task {} went back from {:?} to {:?} ({})",
                            fw.name,
                            st.task_id,
                            known.state.expect("checked"),
                            st.state(),
                            st.message
                        ));
                    } else {
                        known.state = Some(st.state());
                    }
                }
                if !st.uuid.is_empty() {
                    calls.push((
                        Call::Acknowledge {
                            framework_id: fid,
                            agent_id: st.agent_id,
                            task_id: st.task_id,
                            uuid: st.uuid,
                        },
                        vec![],
                    ));
                }
            }
            // A framework removed or replaced hears an error and its
            // stream ends; it subscribes again.
            Some(event::Event::Rescind(_))
            | Some(event::Event::Heartbeat(_))
            | Some(event::Event::Failure(_))
            | Some(event::Event::Error(_))
            | None => {}
        }
        Ok(())
    }

    /// Invariants across masters, every step.
    fn check_masters(&mut self) -> Result<(), String> {
        let mut leased = Vec::new();
        for m in &self.masters {
            let Some(node) = m.node.as_ref() else {
                continue;
            };
            if node.is_leader() {
                let term = node.replica().term();
                match self.leaders.insert(term, m.id) {
                    Some(other) if other != m.id => {
                        return Err(format!("two leaders in term {term}: {other} and {}", m.id))
                    }
                    _ => {}
                }
            }
            if node.may_offer() {
                leased.push(m.id);
            }
        }
        if leased.len() > 1 {
            return Err(format!(
                "masters {leased:?} may all hand out resources at once"
            ));
        }
        let Some(&leader) = leased.first() else {
            return Ok(());
        };
        let node = self.masters[leader as usize - 1]
            .node
            .as_ref()
            .expect("leased");
        let mut offered: BTreeMap<String, Resources> = BTreeMap::new();
        for (_, agent, res) in node.cluster().outstanding_offers() {
            offered.entry(agent.0.clone()).or_default().add(res);
        }
        for agent in &self.agents {
            let mut committed = offered.remove(&agent.id).unwrap_or_default();
            for t in agent.tasks.values() {
                if !t.status.state().is_terminal() {
                    committed.add(&Resources::from_proto(&t.info.resources).unwrap_or_default());
                }
            }
            if !agent.total.contains(&committed) {
                let view = node.cluster().view(false, vec![], String::new(), 0.0);
                let theirs: Vec<String> = view
                    .tasks
                    .iter()
                    .filter(|t| t.agent_id == agent.id)
                    .map(|t| format!("{}={}", t.id, t.state))
                    .collect();
                let ours: Vec<String> = agent
                    .tasks
                    .iter()
                    .map(|((_, t), s)| format!("{t}={:?}", s.status.state()))
                    .collect();
                eprintln!(
                    "step {}: master sees {theirs:?}, agent runs {ours:?}, conn {:?} registered {}",
                    self.step, agent.conn, agent.registered
                );
                return Err(format!(
                    "master {leader} offers on {} what runs there: offered plus running is \
                     {committed}, the agent has {}",
                    agent.id, agent.total
                ));
            }
        }
        Ok(())
    }

    /// What is still wrong once faults stop; `None` when all is settled.
    fn unsettled(&self) -> Option<String> {
        let leader = self
            .masters
            .iter()
            .filter_map(|m| m.node.as_ref())
            .find(|n| n.may_offer())?;
        for agent in &self.agents {
            if !agent.registered {
                return Some(format!("{} is not registered", agent.id));
            }
            if let Some((s, _)) = agent.unacked.first() {
                return Some(format!(
                    "{} still waits for an acknowledgement of {} {:?}",
                    agent.id,
                    s.task_id,
                    s.state()
                ));
            }
        }
        let step = self.step;
        for fw in &self.frameworks {
            let mut removed_ids = fw.retired.clone();
            if fw.dead(step) && !fw.info.id.is_empty() {
                removed_ids.push(fw.info.id.clone());
            }
            for id in &removed_ids {
                let removed = leader
                    .cluster()
                    .registry()
                    .removed_frameworks
                    .contains(&mezz_proto::FrameworkId(id.clone()));
                if !removed {
                    return Some(format!("{} ({id}) outlived its failover timeout", fw.name));
                }
                for agent in &self.agents {
                    for ((fid, tid), t) in &agent.tasks {
                        if fid == id && !t.status.state().is_terminal() {
                            return Some(format!(
                                "{tid} of the removed {} still runs on {}",
                                fw.name, agent.id
                            ));
                        }
                    }
                }
            }
            if fw.dead(step) {
                continue;
            }
            if !fw.subscribed {
                return Some(format!("{} is not subscribed", fw.name));
            }
            for (tid, known) in &fw.tasks {
                let truth = self
                    .agents
                    .iter()
                    .find_map(|a| a.tasks.get(&(fw.info.id.clone(), tid.clone())));
                match truth {
                    // Over is over, whoever said it last (the agent's
                    // KILLED, or a master's LOST after its removal).
                    Some(t)
                        if t.status.state().is_terminal()
                            && known.state.is_some_and(|s| s.is_terminal()) => {}
                    Some(t) if known.state != Some(t.status.state()) => {
                        return Some(format!(
                            "{} thinks {tid} is {:?}; its agent says {:?}",
                            fw.name,
                            known.state,
                            t.status.state()
                        ))
                    }
                    Some(_) => {}
                    None if known.accepted == Some(false) => {}
                    None if known
                        .state
                        .is_some_and(|s| s.is_terminal() || s == TaskState::Unknown) => {}
                    None => {
                        return Some(format!(
                            "{} thinks {tid} is {:?} (accepted: {:?}) but no agent has it",
                            fw.name, known.state, known.accepted
                        ))
                    }
                }
            }
        }
        // Every update reached its framework and was applied there once.
        for agent in &self.agents {
            for (uuid, (fid, tid, state)) in &agent.produced {
                let Some(fw) = self.frameworks.iter().find(|f| f.info.id == *fid) else {
                    continue; // a removed framework's
                };
                if fw.dead(step) {
                    continue; // acknowledged by the master on its behalf
                }
                // A live state may be skipped once the task is known to be
                // over (a stale resend after the task was declared lost);
                // an end never is.
                let superseded = !state.is_terminal()
                    && fw
                        .tasks
                        .get(tid)
                        .and_then(|t| t.state)
                        .is_some_and(|s| s.is_terminal());
                if !fw.applied.contains(uuid) && !superseded {
                    return Some(format!(
                        "{} never got the {state:?} update of {tid} from {}",
                        fw.name, agent.id
                    ));
                }
            }
        }
        None
    }
}

impl SimFramework {
    /// Tasks whose end this framework has not heard of, for explicit
    /// reconciliation.
    fn to_reconcile(&self) -> Vec<ReconcileTask> {
        self.tasks
            .iter()
            .filter(|(_, t)| {
                t.accepted != Some(false)
                    && !t
                        .state
                        .is_some_and(|s| s.is_terminal() || s == TaskState::Unknown)
            })
            .map(|(id, t)| ReconcileTask {
                task_id: id.clone(),
                agent_id: t.agent.clone(),
            })
            .collect()
    }
}

fn run(seed: u64, n: u64, steps: u64) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut sim = Sim::new(seed, n, dir.path())?;
    for _ in 0..steps {
        sim.round(&HOSTILE, false)?;
    }
    sim.partition.heal();
    let mut why = String::from("no master ever held the lease");
    for _ in 0..1500 {
        sim.round(&CALM, true)?;
        match sim.unsettled() {
            None => {
                if sim.launches == 0 {
                    return Err("no task was ever launched".into());
                }
                let duplicates: u64 = sim.frameworks.iter().map(|f| f.duplicates).sum();
                if sim.rogue.refused == 0 || sim.rogue.spoofed == 0 || sim.accepts_lost == 0 {
                    return Err(format!(
                        "the rogue was refused {} times and spoofed {} updates, {} accepts \
                         were lost: too few to test anything",
                        sim.rogue.refused, sim.rogue.spoofed, sim.accepts_lost
                    ));
                }
                return Ok(format!(
                    "{} launches, {} elections won, {duplicates} updates delivered again, \
                     rogue refused {} times, {} spoofed updates sent (none got through), {} accepts lost",
                    sim.launches,
                    sim.failovers,
                    sim.rogue.refused,
                    sim.rogue.spoofed,
                    sim.accepts_lost
                ));
            }
            Some(w) => why = w,
        }
    }
    Err(format!(
        "the cluster did not settle after the faults stopped: {why}"
    ))
}

fn check(seeds: Vec<u64>, masters: u64) {
    for seed in seeds {
        match run(seed, masters, 800) {
            Ok(summary) => eprintln!("seed {seed}: {summary}"),
            Err(e) => panic!(
                "seed {seed}: {e}\nreplay: MEZZ_SIM_SEED={seed} cargo test -p mezz-master node::sim"
            ),
        }
    }
}

#[test]
fn three_masters_with_agents_and_frameworks_stay_correct_under_faults() {
    check(seeds(1..9), 3);
}

#[test]
fn five_masters_with_agents_and_frameworks_stay_correct_under_faults() {
    check(seeds(100..104), 5);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = run(7, 3, 300);
    let b = run(7, 3, 300);
    assert_eq!(a, b);
}
