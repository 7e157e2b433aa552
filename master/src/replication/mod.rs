//! Replication of the master's registry through raft (tikv's `raft` crate).
//!
//! `Replica` wraps a `RawNode` the way raft-rs means it to be used: the
//! caller ticks it, proposes commands, and runs `handle_ready` after each
//! batch of work; this module persists to `sled` (fsync before anything
//! leaves) and hands back the commands to apply. It opens no sockets: peer
//! messages come back to the caller, which owns the transport.

pub mod storage;
pub mod transport;

use std::path::Path;

use mezz_proto::v1::{ReplicatedCommand, ReplicatedSnapshot};
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message as RaftMessage};
use raft::{RawNode, StateRole, Storage};

pub use storage::{SledStorage, StorageFailure};

/// What can go wrong in replication.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The storage could not be opened or written.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// raft refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// This master is not the leader and cannot accept writes.
    #[error("this master is not the leader")]
    NotLeader,
    /// The data directory holds a group of other members than configured.
    #[error("{0}")]
    Membership(String),
}

/// Something committed that the state machine must apply, in log order.
#[derive(Debug)]
// Applied entries are moved one at a time as the log is applied, never
// stored in bulk; boxing the command (large since a job fire carries a
// whole JobRecord) would only add an allocation per entry.
#[allow(clippy::large_enum_variant)]
pub enum Applied {
    /// A replicated command.
    Command(ReplicatedCommand),
    /// Replace the whole replicated state with this snapshot.
    Restore(ReplicatedSnapshot),
}

/// How many applied entries between two snapshots (log compaction), unless
/// set otherwise with [`Replica::set_snapshot_every`] (`mezz master
/// --snapshot-every`).
pub const SNAPSHOT_EVERY: u64 = 1000;

/// One member of the master's raft group.
pub struct Replica {
    raw: RawNode<SledStorage>,
    storage: SledStorage,
    since_snapshot: u64,
    snapshot_every: u64,
    /// Ticks each follower has spent waiting for a snapshot.
    snapshot_waits: std::collections::HashMap<u64, u32>,
    /// Logical clock, in ticks.
    ticks: u64,
    /// On the leader: the tick at which each peer last answered.
    heard: std::collections::HashMap<u64, u64>,
}

/// Forwards raft-rs's slog records to `tracing`; raft's chatty info lines
/// become debug.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", record.msg()),
            _ => tracing::trace!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

impl Replica {
    /// Opens the replica with raft id `id` in a group of `voters`, keeping
    /// its log under `dir`. Returns the replica and the snapshot the state
    /// machine must start from (entries after it are replayed through
    /// `handle_ready`).
    pub fn open(
        dir: &Path,
        id: u64,
        voters: &[u64],
    ) -> Result<(Self, Option<ReplicatedSnapshot>), ReplicationError> {
        Self::open_with(dir, id, voters, true)
    }

    /// As [`Replica::open`], with an election timeout of exactly
    /// `election_tick` ticks: raft-rs draws randomized timeouts from its own
    /// random source, which a seeded simulation cannot replay, so the
    /// simulations randomize by jittering each replica's clock instead.
    #[cfg(test)]
    pub(crate) fn open_fixed_timer(
        dir: &Path,
        id: u64,
        voters: &[u64],
    ) -> Result<(Self, Option<ReplicatedSnapshot>), ReplicationError> {
        Self::open_with(dir, id, voters, false)
    }

    fn open_with(
        dir: &Path,
        id: u64,
        voters: &[u64],
        randomized_elections: bool,
    ) -> Result<(Self, Option<ReplicatedSnapshot>), ReplicationError> {
        let storage = SledStorage::open(dir)?;
        if storage.is_empty() {
            storage.initialize(voters)?;
        } else {
            let cs = storage.initial_state()?.conf_state;
            let mut have = cs.voters.clone();
            let mut want = voters.to_vec();
            have.sort_unstable();
            want.sort_unstable();
            if have != want {
                return Err(ReplicationError::Membership(format!(
                    "data directory {} belongs to a group with members {have:?}, \
                     but this master was started with members {want:?}; \
                     start it with the same --id/--peers or use a fresh --data-dir",
                    dir.display()
                )));
            }
        }
        let snap = storage.stored_snapshot()?;
        let applied = snap.get_metadata().index;
        let restored = if applied > 0 {
            Some(ReplicatedSnapshot::decode(snap.get_data()).map_err(|e| {
                StorageFailure::Corrupt {
                    path: dir.display().to_string(),
                    key: "snapshot".into(),
                    reason: e.to_string(),
                }
            })?)
        } else {
            None
        };
        let config = raft::Config {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            applied,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_election_tick: if randomized_elections { 0 } else { 11 },
            ..Default::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => id));
        let mut raw = RawNode::new(&config, storage.clone(), &logger)?;
        if voters == [id] {
            // A group of one needs no election timeout to know it leads.
            raw.campaign()?;
        }
        Ok((
            Replica {
                raw,
                storage,
                since_snapshot: 0,
                snapshot_every: SNAPSHOT_EVERY,
                snapshot_waits: Default::default(),
                ticks: 0,
                heard: Default::default(),
            },
            restored,
        ))
    }

    /// Compacts the log every `n` applied entries (at least 1).
    pub fn set_snapshot_every(&mut self, n: u64) {
        self.snapshot_every = n.max(1);
    }

    /// Advances raft's logical clock; call every tick interval.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        self.retry_lost_snapshots();
    }

    /// raft-rs leaves a follower in the snapshot state until the
    /// application reports how the snapshot's delivery went. A snapshot
    /// message lost on the way would park the follower forever, so one not
    /// answered within an election timeout is reported as failed and sent
    /// again.
    fn retry_lost_snapshots(&mut self) {
        if !self.is_leader() {
            self.snapshot_waits.clear();
            return;
        }
        let waiting: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(_, p)| p.state == raft::ProgressState::Snapshot)
            .map(|(&id, _)| id)
            .collect();
        self.snapshot_waits.retain(|id, _| waiting.contains(id));
        let limit = self.raw.raft.election_timeout() as u32;
        for id in waiting {
            let w = self.snapshot_waits.entry(id).or_insert(0);
            *w += 1;
            if *w > limit {
                *w = 0;
                tracing::debug!(
                    peer = id,
                    "snapshot not acknowledged in time; sending it again"
                );
                self.raw.report_snapshot(id, raft::SnapshotStatus::Failure);
            }
        }
    }

    /// Tells raft what the transport learned about a peer.
    pub fn report(&mut self, report: transport::PeerReport) {
        use transport::PeerReport;
        match report {
            PeerReport::Unreachable(id) => self.raw.report_unreachable(id),
            PeerReport::SnapshotFailed(id) => {
                self.raw.report_snapshot(id, raft::SnapshotStatus::Failure)
            }
            PeerReport::SnapshotSent(id) => {
                self.raw.report_snapshot(id, raft::SnapshotStatus::Finish)
            }
        }
    }

    /// True while this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// True while this replica leads and has applied an entry of its own
    /// term. A new leader's state may lag entries that earlier leaders
    /// appended and that only its first entry commits; until that entry is
    /// applied its state is not current and it must not answer from it.
    pub fn is_current_leader(&self) -> bool {
        let raft = &self.raw.raft;
        raft.state == StateRole::Leader
            && raft.raft_log.term(raft.raft_log.applied).ok() == Some(raft.term)
    }

    /// The id of the current leader, if known.
    pub fn leader_id(&self) -> Option<u64> {
        let l = self.raw.raft.leader_id;
        (l != raft::INVALID_ID).then_some(l)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// On the leader: the highest log index known to match on peer `id`.
    pub fn peer_matched(&self, id: u64) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        self.raw.raft.prs().get(id).map(|p| p.matched)
    }

    /// The index of the last entry known to be committed.
    pub fn committed(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The index of the last entry in the log (applied or not).
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The index of the last applied entry.
    pub fn applied(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// Appends a command to the log; it is applied once committed.
    pub fn propose(&mut self, cmd: &ReplicatedCommand) -> Result<(), ReplicationError> {
        if !self.is_leader() {
            return Err(ReplicationError::NotLeader);
        }
        self.raw.propose(vec![], cmd.encode_to_vec())?;
        Ok(())
    }

    /// Whether this leader may act for the group now: a majority (itself
    /// included) answered within half an election timeout. Followers do not
    /// elect a new leader before a full election timeout without news from
    /// this one (pre-vote and check-quorum), so a leader cut off from the
    /// majority stops handing out resources before anyone else can start.
    pub fn has_lease(&self) -> bool {
        if !self.is_leader() {
            return false;
        }
        let voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        if voters.len() <= 1 {
            return true;
        }
        let lease = (self.raw.raft.election_timeout() / 2).max(1) as u64;
        let me = self.raw.raft.id;
        let recent = voters
            .iter()
            .filter(|&&id| {
                id == me
                    || self
                        .heard
                        .get(&id)
                        .is_some_and(|&t| self.ticks.saturating_sub(t) <= lease)
            })
            .count();
        recent > voters.len() / 2
    }

    /// Hands a message from a peer to raft.
    ///
    /// A replica that has just started grants no vote (nor pre-vote) until
    /// it hears from a leader or a full election timeout has passed: it
    /// cannot know whether a leader still holds a lease that its own
    /// answers, sent before it went down, helped to give. Without this, a
    /// replica that crashed and came back within the lease could elect a
    /// second leader while the first still hands out resources. Once it has
    /// heard from a leader, raft's check-quorum keeps it from voting for an
    /// election timeout after the leader's last message, as for any
    /// follower.
    pub fn step(&mut self, msg: RaftMessage) -> Result<(), ReplicationError> {
        use raft::eraftpb::MessageType;
        if matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && self.ticks < self.raw.raft.election_timeout() as u64
            && self.raw.raft.leader_id == raft::INVALID_ID
            && self.raw.raft.prs().conf().voters().ids().len() > 1
        {
            tracing::debug!(
                from = msg.from,
                "vote request ignored: started less than an election timeout ago \
                 and no leader heard from yet"
            );
            return Ok(());
        }
        if matches!(
            msg.get_msg_type(),
            MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
        ) && msg.term == self.raw.raft.term
        {
            self.heard.insert(msg.from, self.ticks);
        }
        self.raw.step(msg)?;
        Ok(())
    }

    /// Persists what raft asks for (fsync included), then returns what to
    /// apply and the messages to send to peers, in order.
    pub fn handle_ready(&mut self) -> Result<(Vec<Applied>, Vec<RaftMessage>), ReplicationError> {
        let mut applied = Vec::new();
        let mut out = Vec::new();
        if !self.raw.has_ready() {
            return Ok((applied, out));
        }
        let mut ready = self.raw.ready();
        out.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            tracing::info!(
                index = snap.get_metadata().index,
                "installing a snapshot from the leader"
            );
            self.storage.apply_snapshot(&snap)?;
            match ReplicatedSnapshot::decode(snap.get_data()) {
                Ok(s) => applied.push(Applied::Restore(s)),
                Err(e) => tracing::error!("cannot decode the snapshot from the leader: {e}"),
            }
        }
        self.collect(ready.take_committed_entries(), &mut applied)?;
        if !ready.entries().is_empty() {
            self.storage.append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.storage.set_hard_state(hs)?;
        }
        self.storage.flush()?;
        out.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit)?;
        }
        out.extend(light.take_messages());
        self.collect(light.take_committed_entries(), &mut applied)?;
        self.raw.advance_apply();
        Ok((applied, out))
    }

    fn collect(
        &mut self,
        entries: Vec<Entry>,
        applied: &mut Vec<Applied>,
    ) -> Result<(), ReplicationError> {
        for entry in entries {
            self.since_snapshot += 1;
            if entry.data.is_empty() {
                continue; // a new leader's empty entry
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => match ReplicatedCommand::decode(entry.get_data()) {
                    Ok(cmd) => applied.push(Applied::Command(cmd)),
                    Err(e) => tracing::error!(
                        index = entry.index,
                        "skipping an undecodable log entry: {e}"
                    ),
                },
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    protobuf::Message::merge_from_bytes(&mut cc, entry.get_data())
                        .map_err(|e| raft::Error::ConfChangeError(e.to_string()))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.storage.initialize(&cs.voters)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    protobuf::Message::merge_from_bytes(&mut cc, entry.get_data())
                        .map_err(|e| raft::Error::ConfChangeError(e.to_string()))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.storage.initialize(&cs.voters)?;
                }
            }
        }
        Ok(())
    }

    /// Takes a snapshot and compacts the log when enough entries were
    /// applied since the last one: at least the configured number, and at
    /// least as many as the state has records (`state_records`), so that
    /// encoding a large state is paid for by as many entries, whatever the
    /// size of the cluster. `state` encodes the applied state.
    pub fn maybe_compact(
        &mut self,
        state_records: u64,
        state: impl FnOnce() -> ReplicatedSnapshot,
    ) -> Result<(), ReplicationError> {
        if self.since_snapshot < self.snapshot_every.max(state_records) {
            return Ok(());
        }
        let index = self.applied();
        if index == 0 || index > self.storage.last_index()? {
            return Ok(());
        }
        self.storage
            .compact_to_snapshot(index, state().encode_to_vec())?;
        self.storage.flush()?;
        self.since_snapshot = 0;
        tracing::debug!(index, "raft log compacted into a snapshot");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::v1::replicated_command::Command;

    fn drain(r: &mut Replica) -> Vec<Applied> {
        let mut all = Vec::new();
        for _ in 0..10 {
            let (a, _) = r.handle_ready().unwrap();
            all.extend(a);
        }
        all
    }

    #[test]
    fn single_node_group_commits_and_replays_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut r, snap) = Replica::open(dir.path(), 1, &[1]).unwrap();
            assert!(snap.is_none());
            drain(&mut r);
            assert!(r.is_leader());
            for i in 0..3 {
                r.propose(&ReplicatedCommand {
                    command: Some(Command::RemoveFramework(format!("fw{i}"))),
                })
                .unwrap();
            }
            let applied = drain(&mut r);
            assert_eq!(applied.len(), 3);
        }
        let (mut r, _) = Replica::open(dir.path(), 1, &[1]).unwrap();
        let replayed = drain(&mut r);
        let ids: Vec<String> = replayed
            .into_iter()
            .filter_map(|a| match a {
                Applied::Command(ReplicatedCommand {
                    command: Some(Command::RemoveFramework(id)),
                }) => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec!["fw0", "fw1", "fw2"]);
    }

    #[test]
    fn compaction_keeps_state_through_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut r, _) = Replica::open(dir.path(), 1, &[1]).unwrap();
            drain(&mut r);
            for i in 0..(SNAPSHOT_EVERY + 5) {
                r.propose(&ReplicatedCommand {
                    command: Some(Command::RemoveAgent(format!("a{i}"))),
                })
                .unwrap();
                drain(&mut r);
            }
            r.maybe_compact(0, || ReplicatedSnapshot {
                removed_agents: vec!["snap".into()],
                ..Default::default()
            })
            .unwrap();
        }
        let (mut r, snap) = Replica::open(dir.path(), 1, &[1]).unwrap();
        assert_eq!(snap.unwrap().removed_agents, vec!["snap".to_string()]);
        assert!(
            drain(&mut r).is_empty(),
            "nothing after the snapshot to replay"
        );
    }

    /// Runs every replica's ready loop, delivering messages between those
    /// `up`, until quiet.
    fn pump(nodes: &mut [Replica], up: &[bool]) {
        loop {
            let mut msgs = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                let (_, out) = n.handle_ready().unwrap();
                if up[i] {
                    msgs.extend(out);
                }
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                let to = m.to as usize - 1;
                if up[to] {
                    let _ = nodes[to].step(m);
                }
            }
        }
    }

    /// Opens replica `i` (raft id `i + 1`) of a group of three.
    fn open_member(dirs: &[tempfile::TempDir], i: usize) -> Replica {
        Replica::open(dirs[i].path(), i as u64 + 1, &[1, 2, 3])
            .unwrap()
            .0
    }

    /// A group of three that has elected a leader holding its lease; the
    /// leader's position.
    fn elected_group(dirs: &[tempfile::TempDir]) -> (Vec<Replica>, usize) {
        let mut nodes: Vec<Replica> = (0..3).map(|i| open_member(dirs, i)).collect();
        let all_up = [true, true, true];
        let mut leader = None;
        for _ in 0..200 {
            nodes.iter_mut().for_each(Replica::tick);
            pump(&mut nodes, &all_up);
            leader = nodes.iter().position(Replica::is_leader);
            if leader.is_some() {
                break;
            }
        }
        let l = leader.expect("a leader");
        for _ in 0..4 {
            nodes.iter_mut().for_each(Replica::tick);
            pump(&mut nodes, &all_up);
        }
        assert!(nodes[l].has_lease());
        (nodes, l)
    }

    #[test]
    fn a_leader_loses_its_lease_before_it_could_be_replaced() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (mut nodes, l) = elected_group(&dirs);
        let all_up = [true, true, true];
        // Cut the leader off: it still believes it leads for a while, but
        // its lease ends first.
        let mut up = [false; 3];
        up[l] = true;
        let lease_ticks = nodes[l].raw.raft.election_timeout() as u64 / 2;
        for _ in 0..=lease_ticks {
            nodes[l].tick();
            pump(&mut nodes, &up);
        }
        assert!(nodes[l].is_leader(), "check-quorum must not have fired yet");
        assert!(
            !nodes[l].has_lease(),
            "a leader cut off from the majority kept its lease"
        );
        for _ in 0..4 {
            nodes.iter_mut().for_each(Replica::tick);
            pump(&mut nodes, &all_up);
        }
        assert!(nodes.iter().filter(|n| n.has_lease()).count() == 1);
    }

    #[test]
    fn a_replica_back_from_a_crash_cannot_elect_a_second_leader_during_a_lease() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (mut nodes, l) = elected_group(&dirs);
        let (x, b) = ((l + 1) % 3, (l + 2) % 3);
        // x crashes and comes back at once; b, cut off from the leader
        // only, campaigns and asks x for its vote.
        drop(nodes.remove(x));
        nodes.insert(x, open_member(&dirs, x));
        nodes[b].raw.campaign().unwrap();
        let mut up = [true; 3];
        up[l] = false;
        pump(&mut nodes, &up);
        assert!(
            nodes[l].has_lease(),
            "the old leader's lease is still running"
        );
        assert!(
            !nodes[b].is_leader(),
            "a second leader was elected during the first one's lease"
        );
    }

    #[test]
    fn other_membership_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Replica::open(dir.path(), 1, &[1]).unwrap());
        let err = Replica::open(dir.path(), 1, &[1, 2, 3]).err().unwrap();
        assert!(err.to_string().contains("--data-dir"), "{err}");
    }
}
