//! A seeded, deterministic simulation of a raft group of masters on an
//! in-memory network that drops, delays, duplicates and partitions
//! messages, with masters crashing and restarting from their sled data.
//! It checks what the replicated registry relies on: at most one leader per
//! term, replicas that apply the same commands in the same order, and no
//! applied command ever lost.
//!
//! Everything random comes from the seed; a failure names it. Replay one
//! with `MEZZ_SIM_SEED=N cargo test -p mezz-master replication::sim`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use mezz_proto::v1::{replicated_command::Command, AgentInfo, ReplicatedCommand};
use raft::eraftpb::Message as RaftMessage;

use super::transport::Transport;
use super::{Applied, Replica};
use crate::registry::Registry;

/// SplitMix64: small, seedable, good enough for fault schedules.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

struct Node {
    id: u64,
    dir: PathBuf,
    replica: Option<Replica>,
    registry: Registry,
    /// Commands applied since the last (re)start, when it started from an
    /// empty state; `None` once a snapshot was restored.
    seq: Option<Vec<String>>,
}

struct Faults {
    drop: f64,
    duplicate: f64,
    max_delay: u64,
    partition: f64,
    crash: f64,
    restart: f64,
}

const LOSSY: Faults = Faults {
    drop: 0.05,
    duplicate: 0.02,
    max_delay: 3,
    partition: 0.01,
    crash: 0.004,
    restart: 0.03,
};

const CALM: Faults = Faults {
    drop: 0.0,
    duplicate: 0.0,
    max_delay: 1,
    partition: 0.0,
    crash: 0.0,
    restart: 1.0,
};

/// A two-sided partition between masters, drawn from the seed.
#[derive(Default)]
pub(crate) struct Partition(Option<(BTreeSet<u64>, u64)>);

impl Partition {
    /// Heals a partition once it has lasted its time; otherwise, with
    /// chance `p`, cuts masters `1..=n` in two for 20 to 80 steps.
    pub(crate) fn evolve(&mut self, rng: &mut Rng, n: u64, step: u64, p: f64) {
        if let Some((_, until)) = &self.0 {
            if step >= *until {
                self.0 = None;
            }
        } else if rng.chance(p) {
            let mut side = BTreeSet::new();
            let size = 1 + rng.below(n - 1);
            while (side.len() as u64) < size {
                side.insert(1 + rng.below(n));
            }
            self.0 = Some((side, step + 20 + rng.below(60)));
        }
    }

    /// Whether masters `a` and `b` are on different sides.
    pub(crate) fn cut(&self, a: u64, b: u64) -> bool {
        self.0
            .as_ref()
            .is_some_and(|(side, _)| side.contains(&a) != side.contains(&b))
    }

    /// Ends the partition now.
    pub(crate) fn heal(&mut self) {
        self.0 = None;
    }
}

/// Bounded clock drift, from the seed: each replica's clock now and then
/// misses a tick, at most one in [`Clocks::EVERY`]. The replicas' election
/// timers are fixed (see [`Replica::open_fixed_timer`]); this drift is what
/// breaks ties between candidates, and it stays well inside the leader
/// lease's margin (half an election timeout), as real clock drift does.
pub(crate) struct Clocks {
    last_skip: BTreeMap<u64, u64>,
}

impl Clocks {
    pub(crate) const EVERY: u64 = 10;

    pub(crate) fn new() -> Self {
        Clocks {
            last_skip: BTreeMap::new(),
        }
    }

    /// Whether replica `id` ticks at `step`.
    pub(crate) fn ticks(&mut self, rng: &mut Rng, id: u64, step: u64) -> bool {
        let last = self.last_skip.get(&id).copied();
        if last.is_none_or(|l| step >= l + Self::EVERY) && rng.chance(0.3) {
            self.last_skip.insert(id, step);
            return false;
        }
        true
    }
}

/// The in-memory transport: messages wait in flight for a random delay,
/// and may be dropped or duplicated on the way.
pub(crate) struct SimNet {
    pub(crate) rng: Rng,
    pub(crate) now: u64,
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
    pub(crate) max_delay: u64,
    /// (deliver at step, message)
    pub(crate) in_flight: Vec<(u64, RaftMessage)>,
}

impl SimNet {
    /// A network that delivers everything at once until told otherwise.
    pub(crate) fn new(seed: u64) -> Self {
        SimNet {
            rng: Rng(seed ^ 0x005e_ed0f_7e57),
            now: 0,
            drop: 0.0,
            duplicate: 0.0,
            max_delay: 0,
            in_flight: Vec::new(),
        }
    }

    /// Takes the messages due at `step`.
    pub(crate) fn due(&mut self, step: u64) -> Vec<RaftMessage> {
        let (due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|(at, _)| *at <= step);
        self.in_flight = later;
        due.into_iter().map(|(_, m)| m).collect()
    }
}

impl Transport for SimNet {
    fn send(&mut self, msgs: Vec<RaftMessage>) {
        for m in msgs {
            if self.rng.chance(self.drop) {
                continue;
            }
            let at = self.now + self.rng.below(self.max_delay + 1);
            if self.rng.chance(self.duplicate) {
                self.in_flight.push((at + 1, m.clone()));
            }
            self.in_flight.push((at, m));
        }
    }
}

struct Sim {
    rng: Rng,
    nodes: Vec<Node>,
    voters: Vec<u64>,
    net: SimNet,
    clocks: Clocks,
    partition: Partition,
    leaders: BTreeMap<u64, u64>,
    ever_applied: BTreeSet<String>,
    proposed: u64,
    step: u64,
}

fn open(dir: &std::path::Path, id: u64, voters: &[u64]) -> Result<(Replica, Registry), String> {
    let (mut r, snap) =
        Replica::open_fixed_timer(dir, id, voters).map_err(|e| format!("open {id}: {e}"))?;
    r.set_snapshot_every(20);
    Ok((
        r,
        snap.map(|s| Registry::from_snapshot(&s))
            .unwrap_or_default(),
    ))
}

impl Sim {
    fn new(seed: u64, n: u64, root: &std::path::Path) -> Result<Self, String> {
        let voters: Vec<u64> = (1..=n).collect();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let dir = root.join(format!("m{id}"));
            let (replica, registry) = open(&dir, id, &voters)?;
            nodes.push(Node {
                id,
                dir,
                replica: Some(replica),
                registry,
                seq: Some(Vec::new()),
            });
        }
        Ok(Sim {
            rng: Rng(seed),
            nodes,
            voters,
            net: SimNet::new(seed),
            clocks: Clocks::new(),
            partition: Partition::default(),
            leaders: BTreeMap::new(),
            ever_applied: BTreeSet::new(),
            proposed: 0,
            step: 0,
        })
    }

    fn faults(&mut self, f: &Faults) -> Result<(), String> {
        let n = self.nodes.len() as u64;
        self.partition
            .evolve(&mut self.rng, n, self.step, f.partition);
        let down = self.nodes.iter().filter(|n| n.replica.is_none()).count() as u64;
        if down < (n - 1) / 2 && self.rng.chance(f.crash) {
            let i = self.rng.below(n) as usize;
            self.nodes[i].replica = None;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() && self.rng.chance(f.restart) {
                let (id, dir) = (self.nodes[i].id, self.nodes[i].dir.clone());
                let (replica, registry) = open(&dir, id, &self.voters)?;
                let node = &mut self.nodes[i];
                node.seq = if registry == Registry::default() {
                    Some(Vec::new())
                } else {
                    None
                };
                node.registry = registry;
                node.replica = Some(replica);
            }
        }
        Ok(())
    }

    fn round(&mut self, f: &Faults, propose: bool) -> Result<(), String> {
        self.faults(f)?;
        let mut outgoing = Vec::new();
        for node in &mut self.nodes {
            let Some(r) = node.replica.as_mut() else {
                continue;
            };
            if self.clocks.ticks(&mut self.rng, node.id, self.step) {
                r.tick();
            }
            if propose && r.is_leader() {
                let cmd = ReplicatedCommand {
                    command: Some(Command::RegisterAgent(AgentInfo {
                        id: format!("a{}", self.proposed),
                        ..Default::default()
                    })),
                };
                self.proposed += 1;
                let _ = r.propose(&cmd);
            }
            let (applied, msgs) = r
                .handle_ready()
                .map_err(|e| format!("node {}: {e}", node.id))?;
            for a in applied {
                match a {
                    Applied::Command(cmd) => {
                        if let Some(Command::RegisterAgent(info)) = &cmd.command {
                            self.ever_applied.insert(info.id.clone());
                            if let Some(seq) = node.seq.as_mut() {
                                seq.push(info.id.clone());
                            }
                        }
                        node.registry.apply(&cmd);
                    }
                    Applied::Restore(s) => {
                        node.registry = Registry::from_snapshot(&s);
                        node.seq = None;
                    }
                }
            }
            let registry = node.registry.clone();
            r.maybe_compact(0, || registry.to_snapshot())
                .map_err(|e| format!("node {}: {e}", node.id))?;
            if r.is_leader() {
                let term = r.term();
                if let Some(&other) = self.leaders.get(&term) {
                    if other != node.id {
                        return Err(format!(
                            "two leaders in term {term}: {other} and {}",
                            node.id
                        ));
                    }
                }
                self.leaders.insert(term, node.id);
            }
            outgoing.extend(msgs);
        }
        self.net.now = self.step;
        self.net.drop = f.drop;
        self.net.duplicate = f.duplicate;
        self.net.max_delay = f.max_delay;
        self.net.send(outgoing);
        for m in self.net.due(self.step) {
            if self.partition.cut(m.from, m.to) {
                continue;
            }
            if let Some(node) = self.nodes.iter_mut().find(|n| n.id == m.to) {
                if let Some(r) = node.replica.as_mut() {
                    // A stale or duplicate message is raft's to ignore.
                    let _ = r.step(m);
                }
            }
        }
        self.check_prefixes()?;
        self.step += 1;
        Ok(())
    }

    /// Replicas apply the same commands in the same order: of any two
    /// histories, one is a prefix of the other.
    fn check_prefixes(&self) -> Result<(), String> {
        let seqs: Vec<(u64, &Vec<String>)> = self
            .nodes
            .iter()
            .filter(|n| n.replica.is_some())
            .filter_map(|n| n.seq.as_ref().map(|s| (n.id, s)))
            .collect();
        for (i, (a, sa)) in seqs.iter().enumerate() {
            for (b, sb) in &seqs[i + 1..] {
                let k = sa.len().min(sb.len());
                if sa[..k] != sb[..k] {
                    return Err(format!(
                        "nodes {a} and {b} applied different commands (step {})",
                        self.step
                    ));
                }
            }
        }
        Ok(())
    }
}

fn run(seed: u64, n: u64, steps: u64) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut sim = Sim::new(seed, n, dir.path())?;
    for _ in 0..steps {
        sim.round(&LOSSY, true)?;
    }
    // Heal: everyone up, no faults, until all replicas agree.
    sim.partition.heal();
    for _ in 0..400 {
        sim.round(&CALM, false)?;
        let first = &sim.nodes[0].registry;
        if sim
            .nodes
            .iter()
            .all(|nd| nd.replica.is_some() && nd.registry == *first)
            && sim
                .ever_applied
                .iter()
                .all(|id| first.agents.contains_key(&mezz_proto::AgentId(id.clone())))
        {
            if sim.leaders.is_empty() || sim.ever_applied.is_empty() {
                return Err("no leader was ever elected or nothing was committed".into());
            }
            return Ok(());
        }
    }
    let sizes: Vec<usize> = sim
        .nodes
        .iter()
        .map(|nd| nd.registry.agents.len())
        .collect();
    Err(format!(
        "replicas did not converge after healing: registry sizes {sizes:?}, {} commands applied somewhere",
        sim.ever_applied.len()
    ))
}

pub(crate) fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("MEZZ_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => default.collect(),
    }
}

#[test]
fn three_masters_stay_safe_under_faults() {
    for seed in seeds(1..7) {
        if let Err(e) = run(seed, 3, 600) {
            panic!("seed {seed}: {e}\nreplay: MEZZ_SIM_SEED={seed} cargo test -p mezz-master replication::sim");
        }
    }
}

#[test]
fn five_masters_stay_safe_under_faults() {
    for seed in seeds(100..103) {
        if let Err(e) = run(seed, 5, 600) {
            panic!("seed {seed}: {e}\nreplay: MEZZ_SIM_SEED={seed} cargo test -p mezz-master replication::sim");
        }
    }
}
