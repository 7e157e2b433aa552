//! A seeded simulation of whole masters at work: three or five [`Node`]s
//! (state machine and raft, exactly as a running master glues them) on an
//! in-memory network that drops, delays, duplicates and partitions raft
//! messages (a partition also cuts off the clients on each side from the
//! masters on the other), with masters crashing and restarting from their
//! sled data,
//! while simulated agents run tasks and simulated frameworks take offers,
//! launch, acknowledge and reconcile. Client streams break at random and
//! clients find the leader again the way real ones do: by trying a master
//! and following its hint. A master just elected holds client messages
//! until its state is current, with the shell's own rules
//! ([`crate::node::Waiting`]).
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
//! crate's tests hash with a fixed key); a failure names its seed. The
//! tests that drive it live in `tests.rs` beside it; replay one with
//! `MEZZ_SIM_SEED=N cargo test -p mezz-master sim::node`.
//!
//! The masters' network, partitions and clocks are the shared
//! [`world`](super::world); this module adds the client side and the
//! cast:
//! - [`streams`]: client streams to masters, and how clients find one;
//! - [`masters`]: masters starting, crashing and hanging up;
//! - [`agents`], [`frameworks`], [`rogue`]: the actors;
//! - [`checks`]: the invariants above.

use std::collections::{BTreeMap, BTreeSet};

use mezz_proto::v1::FrameworkInfo;
use mezz_proto::{Resources, PROTOCOL_VERSION};

use super::world::{Clocks, Partition, Rng, SimNet};
use crate::cluster::{ConnId, Millis, Timeouts};
use crate::node::{Node, Waiting};
use crate::replication::transport::Transport;

mod agents;
mod checks;
mod frameworks;
mod masters;
mod rogue;
mod streams;
#[cfg(test)]
mod tests;

use agents::SimAgent;
use frameworks::SimFramework;
use masters::{Master, SimOutbox, HELD_INPUTS};
use rogue::Rogue;
use streams::{Client, Conns, Down, Up};

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
        gpu_idle_after: 10_000,
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
                waiting: Waiting::new(HELD_INPUTS),
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
            let Master { node, waiting, .. } = &mut self.masters[i];
            let node = node.as_mut().expect("checked");
            for (conn, msg) in inbox {
                trace(step, &format!("master {id} <- {conn}"), &msg);
                let needs_leader = msg.needs_leader();
                if let Some((conn, msg)) = waiting.hold(node, (conn, msg), needs_leader) {
                    deliver(node, &mut self.conns, step, conn, msg);
                }
            }
            if self.clocks.ticks(&mut self.rng, id, step) {
                node.tick(t);
            }
            // Settle; then what was held while this leader caught up is
            // handled at once and settled again, as the shell does.
            loop {
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
                    // The shell drops every stream on a change of
                    // leadership, but not one whose first message it holds:
                    // that stream is not among its streams yet.
                    let held: BTreeSet<ConnId> =
                        waiting.held_inputs().iter().map(|(c, _)| *c).collect();
                    for (conn, c) in self.conns.map.iter_mut() {
                        if c.master == id && !held.contains(conn) {
                            c.closed_by_master = true;
                        }
                    }
                }
                let released = waiting.release(node);
                if released.is_empty() {
                    break;
                }
                for (conn, msg) in released {
                    deliver(node, &mut self.conns, step, conn, msg);
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
}

/// What one run exercised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) launches: u64,
    pub(crate) failovers: u64,
    pub(crate) duplicates: u64,
    /// Registrations of the rogue that were refused.
    pub(crate) refused: u64,
    /// Spoofed updates the rogue sent (none may get through).
    pub(crate) spoofed: u64,
    /// Accepts whose call or answer was lost.
    pub(crate) accepts_lost: u64,
}

impl Summary {
    /// Adds another run's counts.
    pub(crate) fn add(&mut self, o: &Summary) {
        self.launches += o.launches;
        self.failovers += o.failovers;
        self.duplicates += o.duplicates;
        self.refused += o.refused;
        self.spoofed += o.spoofed;
        self.accepts_lost += o.accepts_lost;
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} launches, {} elections won, {} updates delivered again, \
             rogue refused {} times, {} spoofed updates sent (none got through), {} accepts lost",
            self.launches,
            self.failovers,
            self.duplicates,
            self.refused,
            self.spoofed,
            self.accepts_lost
        )
    }
}

/// Runs `n` masters for `steps` hostile steps from `seed`, then stops the
/// faults and waits for the cluster to settle; the summary says how much
/// the run exercised (the tests check that a set of seeds, together,
/// exercised every kind of fault).
pub(crate) fn run(seed: u64, n: u64, steps: u64) -> Result<Summary, String> {
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
                return Ok(Summary {
                    launches: sim.launches,
                    failovers: sim.failovers,
                    duplicates: sim.frameworks.iter().map(|f| f.duplicates).sum(),
                    refused: sim.rogue.refused,
                    spoofed: sim.rogue.spoofed,
                    accepts_lost: sim.accepts_lost,
                });
            }
            Some(w) => why = w,
        }
    }
    Err(format!(
        "the cluster did not settle after the faults stopped: {why}"
    ))
}

/// One client message handled by a master, as the shell handles it.
fn deliver(node: &mut Node, conns: &mut Conns, step: u64, conn: ConnId, msg: Up) {
    let t = now(step);
    let leader_hint = node.replica().leader_id();
    match msg {
        Up::Register(reg) => {
            if let Err(e) = node.agent_register(conn, reg, t) {
                conns.push_down(conn, step + 1, Down::Refused(e, leader_hint));
                if let Some(c) = conns.map.get_mut(&conn) {
                    c.closed_by_master = true;
                }
            }
        }
        Up::Heartbeat => node.agent_heartbeat(conn, &[], t),
        Up::Update(s) => node.agent_update(conn, s, t),
        Up::Subscribe(info) => {
            if let Err(e) = node.subscribe(conn, PROTOCOL_VERSION, info, t) {
                conns.push_down(conn, step + 1, Down::Refused(e, leader_hint));
                if let Some(c) = conns.map.get_mut(&conn) {
                    c.closed_by_master = true;
                }
            }
        }
        Up::Call(call, launching) => {
            let result = node.call(call, t);
            if !launching.is_empty() {
                conns.push_down(conn, step + 1, Down::Accepted(launching, result));
            }
        }
    }
}
