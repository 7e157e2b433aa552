//! The cluster state machine: agents, frameworks, tasks and offers as the
//! leading master sees them. Sans-I/O in the style of raft-rs: every entry
//! point takes the current time (milliseconds on a monotonic clock) and
//! queues [`Effect`]s that the shell in `server.rs` carries out. It never
//! touches a socket, a disk or a clock.
//!
//! What must survive a failover goes through raft: the state machine asks
//! for it with [`Effect::Propose`] and acts when the command comes back
//! through [`Cluster::apply`].

mod agents;
mod completed;
mod deadlines;
mod frameworks;
mod gpu_usage;
mod history;
pub mod identity;
mod jobs;
mod launch;
mod offers;
mod queue;
mod roles;
mod security;
pub mod services;
pub(crate) mod sizes;
mod task_table;
mod tasks;
mod view;
pub use view::Gauges;

pub use frameworks::MAX_FAILOVER_SECS;

use std::collections::{BTreeMap, VecDeque};

pub(crate) use crate::hashing::{Map, Set};

use mezz_proto::v1::{
    event, AgentInfo, Event, FrameworkInfo, MasterMessage, RegisterAgent, ReplicatedCommand,
    TaskInfo, TaskStateChange, TaskStatus,
};
use mezz_proto::{AgentId, FrameworkId, OfferId, Resources, TaskId};

use crate::allocator::Allocator;
use crate::registry::Registry;

/// Identifies one open stream (an agent's Attach or a framework's
/// Subscribe) in the shell.
pub type ConnId = u64;
/// Milliseconds on the shell's monotonic clock.
pub type Millis = u64;

/// Something the shell must do.
// Effects are short-lived and moved, never stored in bulk; boxing the
// protobuf messages would only add an allocation per send.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send on an agent's stream.
    ToAgent(ConnId, MasterMessage),
    /// Send on a framework's event stream.
    ToFramework(ConnId, Event),
    /// End an agent's stream.
    CloseAgent(ConnId),
    /// End a framework's event stream.
    CloseFramework(ConnId),
    /// Append a command to the replicated log.
    Propose(ReplicatedCommand),
}

/// Timeouts and intervals of the master, in milliseconds.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Outstanding offers are rescinded after this long.
    pub offer: Millis,
    /// A disconnected agent's tasks become LOST after this long.
    pub agent_reregister: Millis,
    /// How often agents send heartbeats.
    pub agent_heartbeat: Millis,
    /// How often the master sends HEARTBEAT events to frameworks.
    pub framework_heartbeat: Millis,
    /// Refuse-seconds when a decline or accept does not say.
    pub default_refuse: Millis,
    /// Full allocation sweeps (after a subscribe, a revive, a role change)
    /// run at most this often; 0 leaves coalescing to the shell, which
    /// settles once per batch of queued inputs. Changed agents are always
    /// offered at once, in an incremental cycle over just them.
    pub allocation_batch: Millis,
    /// A full sweep runs at least this often even when nothing asks.
    pub allocation_sweep: Millis,
    /// A GPU a task holds is flagged idle after this long at most 5% busy.
    pub gpu_idle_after: Millis,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            offer: 30_000,
            agent_reregister: 60_000,
            agent_heartbeat: 5_000,
            framework_heartbeat: 15_000,
            default_refuse: 5_000,
            allocation_batch: 0,
            allocation_sweep: 1_000,
            gpu_idle_after: gpu_usage::DEFAULT_IDLE_AFTER,
        }
    }
}

/// Why a call from a framework or operator was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// Malformed or inconsistent request; the message says which field.
    #[error("{0}")]
    Invalid(String),
    /// The framework, task or agent named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request came too early or too late (framework not subscribed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request lost a race with another change of the same thing (a
    /// job updated since it was read); read it again and retry.
    #[error("{0}")]
    Aborted(String),
    /// This master does not lead; the leader's address when known.
    #[error("this master is not the leader{}", .0.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader(Option<String>),
}

/// How many finished tasks the master remembers for `ps --all`, unless
/// configured otherwise (`--max-completed-tasks`).
pub const COMPLETED_TASKS_KEPT: usize = crate::registry::DEFAULT_FINISHED_KEPT;

/// How many state changes the master remembers per task (status page).
pub const TASK_HISTORY_KEPT: usize = 16;

/// A connected (or recently disconnected) agent.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub info: AgentInfo,
    pub conn: Option<ConnId>,
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
    pub last_seen: Millis,
    pub disconnected_since: Option<Millis>,
    pub registered_at: f64,
    /// Tasks this agent still runs that the master no longer tracks (their
    /// framework was removed, or they were declared LOST) and has asked the
    /// agent to kill. Their resources stay in `used` until the agent says
    /// they ended, so they are not offered while still taken.
    pub killing: Map<(FrameworkId, TaskId), Resources>,
    /// Its removal (gone past the re-register timeout) is proposed and not
    /// yet committed.
    pub removal_proposed: bool,
    /// Its GPUs' use, by GPU id, from its heartbeats (leader's soft state).
    pub gpu_usage: BTreeMap<String, gpu_usage::GpuHistory>,
}

impl Agent {
    pub fn available(&self) -> Resources {
        let mut a = self.total.clone();
        a.subtract(&self.used);
        a.subtract(&self.offered);
        a
    }
}

/// A subscribed (or failing-over) framework.
#[derive(Debug, Clone)]
pub(crate) struct Framework {
    pub info: FrameworkInfo,
    pub conn: Option<ConnId>,
    pub disconnected_since: Option<Millis>,
    pub suppressed: bool,
    /// Refuse-seconds filters: agent → until when.
    pub filters: Map<AgentId, Millis>,
    /// Status updates forwarded and not yet acknowledged, by uuid.
    pub unacked: Unacked,
    pub used: Resources,
    pub offered: Resources,
    pub registered_at: f64,
}

/// Status updates forwarded to a framework and not yet acknowledged, kept
/// in the order they came. They are sent again in that order when the
/// framework re-subscribes, so it never sees a task's updates reordered
/// (a RUNNING after the FINISHED that followed it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Unacked {
    by_seq: BTreeMap<u64, TaskStatus>,
    seq_of: Map<String, u64>,
    next: u64,
    /// Updates kept from before the last subscription still to be sent
    /// again on it: from the first sequence number to the second.
    resend: Option<(u64, u64)>,
}

/// Updates sent again at once to a framework that subscribes; the rest
/// follow one per acknowledgement. Sending them all at once overflowed the
/// stream's queue (`STREAM_QUEUE_LEN`) of a framework more than that many
/// behind: the master closed it, the framework subscribed again, and so on
/// forever.
pub(crate) const RESEND_WINDOW: usize = 1024;

impl Unacked {
    /// Keeps an update with a uuid; one resent keeps its first place.
    fn insert(&mut self, status: TaskStatus) {
        if self.seq_of.contains_key(&status.uuid) {
            return;
        }
        self.next += 1;
        self.seq_of.insert(status.uuid.clone(), self.next);
        self.by_seq.insert(self.next, status);
    }

    /// Forgets the update acknowledged by `uuid`.
    fn remove(&mut self, uuid: &str) -> Option<TaskStatus> {
        let seq = self.seq_of.remove(uuid)?;
        self.by_seq.remove(&seq)
    }

    fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Starts sending again, in order, every update kept so far (a new
    /// subscription).
    fn begin_resend(&mut self) {
        self.resend = (self.next > 0).then_some((1, self.next));
    }

    /// The next `n` updates to send again, in order.
    fn take_resend(&mut self, n: usize) -> Vec<TaskStatus> {
        let Some((from, to)) = self.resend else {
            return Vec::new();
        };
        let out: Vec<(u64, TaskStatus)> = self
            .by_seq
            .range(from..=to)
            .take(n)
            .map(|(&s, t)| (s, t.clone()))
            .collect();
        self.resend = match out.last() {
            Some(&(last, _)) if last < to && out.len() == n => Some((last + 1, to)),
            _ => None,
        };
        out.into_iter().map(|(_, t)| t).collect()
    }
}

/// A task the master knows about.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub info: TaskInfo,
    pub framework_id: FrameworkId,
    /// Kept so finished tasks still show it after the framework is gone.
    pub framework_name: String,
    /// The framework's role, kept for the same reason (ACLs on viewing).
    pub framework_role: String,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub status: TaskStatus,
    pub launched_at: f64,
    pub kill_requested: bool,
}

/// An outstanding offer.
#[derive(Debug, Clone)]
pub(crate) struct OfferRecord {
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub created: Millis,
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Offers sent.
    pub offers_sent: u64,
    /// Offers declined.
    pub offers_declined: u64,
    /// Offers rescinded (timeout, agent lost).
    pub offers_rescinded: u64,
    /// Offers accepted.
    pub offers_accepted: u64,
    /// Tasks launched.
    pub tasks_launched: u64,
    /// Status updates received from agents.
    pub status_updates: u64,
    /// Status updates ignored: for a task the agent does not run.
    pub status_updates_refused: u64,
    /// Agent registrations refused (bad secret, malformed, wrong version).
    pub agent_registrations_refused: u64,
    /// Terminal task states by name.
    pub terminal: BTreeMap<&'static str, u64>,
    /// Allocation cycles run.
    pub allocation_runs: u64,
}

/// The state machine. See the module docs.
pub struct Cluster {
    master_id: String,
    timeouts: Timeouts,
    now: Millis,
    /// Unix time, in seconds, at `Millis` 0 of the shell's clock: the
    /// state machine reads no clock, and stamps wall-clock times (a
    /// registration, a launch, a status) from `now` and this.
    wall_epoch: f64,
    registry: Registry,
    agents: Map<AgentId, Agent>,
    frameworks: Map<FrameworkId, Framework>,
    tasks: task_table::TaskTable,
    completed: completed::Completed,
    offers: Map<OfferId, OfferRecord>,
    agent_conns: Map<ConnId, AgentId>,
    framework_conns: Map<ConnId, FrameworkId>,
    pending_agents: Map<AgentId, (ConnId, RegisterAgent)>,
    pending_frameworks: Map<FrameworkId, ConnId>,
    effects: Vec<Effect>,
    /// A full allocation sweep is wanted.
    alloc_dirty: bool,
    /// The next full sweep also brings every agent's mirror in the
    /// allocator up to date (a start, a new leader), not only those that
    /// changed.
    resync_all: bool,
    /// Where the next full sweep's slice of agents re-synced anyway starts
    /// (see [`Cluster::allocate`]).
    resync_cursor: usize,
    /// Agents and frameworks whose resources changed since the last cycle.
    dirty_agents: Set<AgentId>,
    dirty_frameworks: Set<FrameworkId>,
    last_sweep: Option<Millis>,
    allocator: Allocator,
    seq: u64,
    last_framework_heartbeat: Millis,
    counters: Counters,
    /// The last [`TASK_HISTORY_KEPT`] state changes of active and
    /// completed tasks, oldest first. Kept beside `Task` so that the places
    /// that build tasks need not know about it; pruned with `completed`.
    history: Map<(FrameworkId, TaskId), VecDeque<TaskStateChange>>,
    /// Tasks finished since the last [`Cluster::take_effects`], to be
    /// replicated in one command (see `history`).
    finished_outbox: Vec<mezz_proto::v1::FinishedTask>,
    /// Records this instance proposed and already holds in `completed`:
    /// when they come back applied they are not added again.
    finished_proposed: Set<String>,
    /// Changes with every applied change of tokens, ACLs or framework
    /// registrations, and every restore: the shell republishes them to the
    /// API layer when it moves (with `master_id`, unique per instance).
    security_epoch: u64,
    /// Priority classes, waiting demand, holds and preemption (see
    /// `queue.rs`).
    queue: queue::Queue,
    /// Jobs named by a command this leader proposed and has not applied
    /// yet, with how many such commands (see `jobs.rs`): a compare-and-set
    /// of one waits for them. Soft state, empty again on a change of
    /// leadership.
    jobs_in_flight: Map<String, u32>,
}

impl Cluster {
    /// A time of the state machine's clock as seconds since the Unix epoch.
    pub(crate) fn wall_time(&self, at: Millis) -> f64 {
        self.wall_epoch + at as f64 / 1000.0
    }

    /// Sets the Unix time, in seconds, of `Millis` 0 of the shell's
    /// clock (0 until set: times then count from the shell's start).
    pub fn set_wall_epoch(&mut self, unix_secs: f64) {
        self.wall_epoch = unix_secs;
    }

    /// See [`Cluster::set_wall_epoch`].
    pub fn wall_epoch(&self) -> f64 {
        self.wall_epoch
    }

    /// The wall-clock time of `now`, in Unix seconds.
    pub(crate) fn unix_time(&self) -> f64 {
        self.wall_epoch + self.now as f64 / 1000.0
    }

    /// A state machine for the master `master_id`, starting from `registry`
    /// (restored from a snapshot, or empty).
    pub fn new(master_id: String, timeouts: Timeouts, registry: Registry, now: Millis) -> Self {
        let mut c = Cluster {
            master_id,
            timeouts,
            now,
            wall_epoch: 0.0,
            registry: Registry::default(),
            agents: Map::default(),
            frameworks: Map::default(),
            tasks: task_table::TaskTable::default(),
            completed: Default::default(),
            offers: Map::default(),
            agent_conns: Map::default(),
            framework_conns: Map::default(),
            pending_agents: Map::default(),
            pending_frameworks: Map::default(),
            effects: Vec::new(),
            alloc_dirty: false,
            resync_all: true,
            resync_cursor: 0,
            dirty_agents: Set::default(),
            dirty_frameworks: Set::default(),
            last_sweep: None,
            allocator: Allocator::new(),
            seq: 0,
            last_framework_heartbeat: now,
            counters: Counters::default(),
            history: Map::default(),
            finished_outbox: Vec::new(),
            finished_proposed: Set::default(),
            security_epoch: 0,
            queue: queue::Queue::default(),
            jobs_in_flight: Map::default(),
        };
        c.restore(registry);
        c
    }

    /// The effects queued since the last call, in order; the tasks that
    /// finished meanwhile go last, replicated in one command.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.propose_finished();
        std::mem::take(&mut self.effects)
    }

    /// The replicated registry as applied so far.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Moves whenever the tokens, the ACLs or the frameworks' principals
    /// may have changed (see the field).
    pub fn security_epoch(&self) -> u64 {
        self.security_epoch
    }

    /// Counters for `/metrics`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Outstanding offers: to which framework, on which agent, what.
    pub fn outstanding_offers(
        &self,
    ) -> impl Iterator<Item = (&FrameworkId, &AgentId, &Resources)> + '_ {
        self.offers
            .values()
            .map(|o| (&o.framework_id, &o.agent_id, &o.resources))
    }

    /// This master's id (fresh at every start, as in Mesos).
    pub fn master_id(&self) -> &str {
        &self.master_id
    }

    fn next_id(&mut self, kind: &str) -> String {
        self.seq += 1;
        format!("{}-{kind}{}", self.master_id, self.seq)
    }

    /// Replaces the registry (a snapshot from the leader, or start-up) and
    /// rebuilds the runtime entries for agents and frameworks that are not
    /// connected yet.
    pub fn restore(&mut self, mut registry: Registry) {
        // The bound is this master's setting, not the snapshot's.
        registry.finished_kept = self.registry.finished_kept;
        registry.finished.truncate(registry.finished_kept);
        registry.jobs.set_kept(self.registry.jobs.kept());
        self.registry = registry;
        self.security_epoch += 1;
        self.restore_finished();
        let agents: Vec<AgentInfo> = self.registry.agents.values().cloned().collect();
        for info in agents {
            self.ensure_agent(&info);
        }
        let fws: Vec<FrameworkInfo> = self.registry.frameworks.values().cloned().collect();
        for info in fws {
            self.ensure_framework(&info);
        }
        let roles: Vec<mezz_proto::v1::RoleConfig> =
            self.registry.roles.values().cloned().collect();
        for cfg in roles {
            self.apply_role(&cfg);
        }
        self.alloc_dirty = true;
        self.resync_all = true;
    }

    /// Applies a committed replicated command, then finishes whatever was
    /// waiting for it (a registration, a subscription).
    pub fn apply(&mut self, cmd: &ReplicatedCommand, now: Millis) {
        use mezz_proto::v1::replicated_command::Command;
        self.now = now;
        self.registry.apply(cmd);
        if matches!(
            cmd.command,
            Some(Command::RegisterFramework(_))
                | Some(Command::RemoveFramework(_))
                | Some(Command::AddToken(_))
                | Some(Command::RevokeTokens(_))
                | Some(Command::SetAcls(_))
        ) {
            self.security_epoch += 1;
        }
        match &cmd.command {
            Some(Command::RegisterAgent(info)) => {
                self.ensure_agent(info);
                let id = AgentId(info.id.clone());
                if let Some((conn, msg)) = self.pending_agents.remove(&id) {
                    self.complete_agent_registration(conn, msg);
                }
            }
            Some(Command::RegisterFramework(info)) => {
                self.ensure_framework(info);
                let id = FrameworkId(info.id.clone());
                if let Some(conn) = self.pending_frameworks.remove(&id) {
                    self.complete_subscription(conn, &id);
                }
            }
            Some(Command::SetRole(cfg)) => self.apply_role(cfg),
            Some(Command::AgentReturned(id)) => {
                self.dirty_agents.insert(AgentId(id.clone()));
            }
            Some(Command::RemoveAgent(id)) => self.agent_removed(&AgentId(id.clone())),
            Some(Command::TasksFinished(batch)) => self.apply_finished(batch),
            Some(Command::RemoveFramework(_))
            | Some(Command::PinAgentSecret(_))
            | Some(Command::AddToken(_))
            | Some(Command::RevokeTokens(_))
            | Some(Command::SetAcls(_))
            | None => {}
            Some(Command::SetSize(_)) | Some(Command::RemoveSize(_)) => {}
            Some(
                Command::JobsSubmitted(_)
                | Command::JobUpdated(_)
                | Command::JobControl(_)
                | Command::JobFired(_),
            ) => self.job_applied(cmd),
        }
    }

    fn ensure_agent(&mut self, info: &AgentInfo) {
        let id = AgentId(info.id.clone());
        let total = Resources::from_proto(&info.resources).unwrap_or_default();
        let (now, unix) = (self.now, self.unix_time());
        let agent = self.agents.entry(id).or_insert_with(|| Agent {
            info: info.clone(),
            conn: None,
            total: total.clone(),
            used: Resources::new(),
            offered: Resources::new(),
            last_seen: now,
            disconnected_since: Some(now),
            registered_at: unix,
            killing: Map::default(),
            removal_proposed: false,
            gpu_usage: BTreeMap::new(),
        });
        agent.info = info.clone();
        agent.total = total;
        self.dirty_agents.insert(AgentId(info.id.clone()));
    }

    fn ensure_framework(&mut self, info: &FrameworkInfo) {
        let id = FrameworkId(info.id.clone());
        let (now, unix) = (self.now, self.unix_time());
        let fw = self.frameworks.entry(id).or_insert_with(|| Framework {
            info: info.clone(),
            conn: None,
            disconnected_since: Some(now),
            suppressed: false,
            filters: Map::default(),
            unacked: Unacked::default(),
            used: Resources::new(),
            offered: Resources::new(),
            registered_at: unix,
        });
        fw.info = info.clone();
        self.dirty_frameworks.insert(FrameworkId(info.id.clone()));
    }

    /// Timers: offer timeouts, filter expiry, agents and frameworks that
    /// stayed away too long, heartbeats. Call every ~100 ms.
    pub fn tick(&mut self, now: Millis) {
        self.now = now;
        self.expire_offers();
        self.expire_filters();
        self.expire_agents();
        self.expire_frameworks();
        self.run_queue();
        // The periodic sweep re-syncs every agent into the allocator (with
        // 10,000 agents, most of an idle master's CPU): not worth it while
        // no framework could take an offer. A subscribe or a revive asks
        // for a sweep of its own.
        let someone_to_offer = !self.queue.waiting.is_empty()
            || !self.queue.holds.is_empty()
            || self
                .frameworks
                .values()
                .any(|f| f.conn.is_some() && !f.suppressed);
        if someone_to_offer
            && self
                .last_sweep
                .is_none_or(|t| now.saturating_sub(t) >= self.timeouts.allocation_sweep)
        {
            self.alloc_dirty = true;
        }
        if now.saturating_sub(self.last_framework_heartbeat) >= self.timeouts.framework_heartbeat {
            self.last_framework_heartbeat = now;
            let conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
            for conn in conns {
                self.effects.push(Effect::ToFramework(
                    conn,
                    Event {
                        event: Some(event::Event::Heartbeat(Default::default())),
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
