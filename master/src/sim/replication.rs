//! The replication-level simulation: a raft group of bare [`Replica`]s,
//! each applying to its own [`Registry`], in the seeded [`world`] whose
//! network drops, delays, duplicates and partitions messages, with
//! masters crashing and restarting from their sled data. It checks what
//! the replicated registry relies on: at most one leader per term,
//! replicas that apply the same commands in the same order, and no
//! applied command ever lost. Beside agent registrations the leaders
//! propose job commands (submits, compare-and-set updates, kills) under a
//! small bound on ended jobs, so replicas that converge to equal
//! registries also show that job commands and their retention apply alike
//! on every master, through snapshots and restarts.
//!
//! The tests that drive it live in `replication_tests.rs`; a failure names
//! its seed. Replay one with
//! `MEZZ_SIM_SEED=N cargo test -p mezz-master sim::replication`.
//!
//! [`world`]: super::world

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use mezz_proto::v1::{replicated_command::Command, AgentInfo, ReplicatedCommand};

use super::world::{Clocks, Partition, Rng, SimNet};
use crate::registry::Registry;
use crate::replication::transport::Transport;
use crate::replication::{Applied, Replica};

/// A master as this simulation sees it: a replica and what it applied.
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
    /// Job commands proposed (see [`job_command`]).
    jobs_proposed: u64,
    step: u64,
}

/// Ended jobs each master keeps: small, so that retention runs often and
/// must drop the same jobs on every replica, snapshots included.
const JOBS_KEPT: usize = 4;

/// A registry as a master with [`JOBS_KEPT`] restores it.
fn restored(snap: Option<&mezz_proto::v1::ReplicatedSnapshot>) -> Registry {
    let mut r = snap.map(Registry::from_snapshot).unwrap_or_default();
    r.jobs.set_kept(JOBS_KEPT);
    r
}

fn open(dir: &std::path::Path, id: u64, voters: &[u64]) -> Result<(Replica, Registry), String> {
    let (mut r, snap) =
        Replica::open_fixed_timer(dir, id, voters).map_err(|e| format!("open {id}: {e}"))?;
    r.set_snapshot_every(20);
    Ok((r, restored(snap.as_ref())))
}

/// The `n`th job command a leader proposes: a job submitted, an update of
/// the one before at the version it was stored with (stale once anything
/// else changed it), a kill of the one before that. Some are lost with a
/// leader; those that commit must apply alike everywhere.
fn job_command(n: u64) -> ReplicatedCommand {
    use mezz_proto::v1::{JobControl, JobRecord, JobUpdate, JobsSubmitted};
    let at = n as f64;
    let name = |k: u64| format!("j{k}");
    let command = match n % 3 {
        0 => Command::JobsSubmitted(JobsSubmitted {
            jobs: vec![JobRecord {
                name: name(n),
                spec_json: "{}".into(),
                kind: "command".into(),
                state: "PENDING".into(),
                submitted_at: at,
                version: 1,
                runs: 1,
                ..Default::default()
            }],
            at,
        }),
        1 => Command::JobUpdated(JobUpdate {
            job: Some(JobRecord {
                name: name(n - 1),
                state: if n.is_multiple_of(2) {
                    "RUNNING"
                } else {
                    "SUCCEEDED"
                }
                .into(),
                ..Default::default()
            }),
            expected_version: 1,
            at,
        }),
        _ => Command::JobControl(JobControl {
            name: name(n - 2),
            action: "kill".into(),
            principal: "sim".into(),
            at,
        }),
    };
    ReplicatedCommand {
        command: Some(command),
    }
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
            jobs_proposed: 0,
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
                node.seq = if registry == restored(None) {
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
                if self.proposed.is_multiple_of(2) {
                    let _ = r.propose(&job_command(self.jobs_proposed));
                    self.jobs_proposed += 1;
                }
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
                        node.registry = restored(Some(&s));
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

/// Runs `n` masters for `steps` lossy steps from `seed`, then heals the
/// world and waits for every replica to hold every applied command.
pub(crate) fn run(seed: u64, n: u64, steps: u64) -> Result<(), String> {
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
            if first.jobs.is_empty() {
                return Err("no job command was ever committed".into());
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

#[cfg(test)]
#[path = "replication_tests.rs"]
mod tests;
