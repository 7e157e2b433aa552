//! The allocator: hierarchical Dominant Resource Fairness over roles (with
//! weights, quotas and reservations), then over the frameworks of a role,
//! as Mesos's hierarchical allocator does. Pure: the cluster state machine
//! tells it what agents and frameworks hold, asks for a cycle and gets
//! offers back; no clock, no I/O, no randomness, and ties are broken by
//! name so the same input always gives the same offers.
//!
//! It keeps its own compact mirror of what it needs (per agent: what is
//! available; per framework: what it holds, in a [`sorter::Sorter`] tree),
//! refreshed by the state machine for whatever changed since the last
//! cycle, so that a cycle after one event looks at one agent and walks the
//! tree in O(depth · log n) rather than scanning every framework.
//!
//! Must not depend on tokio, tonic or sled.

pub mod drf;
pub mod preempt;
pub mod quota;
pub mod share;
pub mod sorter;

#[cfg(test)]
mod preempt_proptests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::hashing::Map;

use mezz_proto::holdback::{gpus_milli, held_back_milli, per_gpu, unreserved_cpus_mem, HeldBack};
use mezz_proto::{AgentId, FrameworkId, Resources};

pub use quota::{Quota, RoleConfig};
use share::Qty;
use sorter::{NodeId, Sorter};

/// One offer decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// Who receives it.
    pub framework: FrameworkId,
    /// Whose resources.
    pub agent: AgentId,
    /// What is offered.
    pub resources: Resources,
}

/// Whether `available` is worth offering: Mesos's minimum allocatable
/// resources, so nobody is offered crumbs.
pub fn allocatable(available: &Resources) -> bool {
    available.scalar_milli("cpus") >= MIN_CPUS_MILLI
        || available.scalar_milli("mem") >= MIN_MEM_MILLI
        || available.set_len("gpus") > 0
}

/// The minimum cpus worth offering (0.01, in thousandths).
pub const MIN_CPUS_MILLI: i64 = 10;
/// The minimum memory worth offering (32 MB, in thousandths).
pub const MIN_MEM_MILLI: i64 = 32_000;

/// A framework as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkState {
    /// Its role (hierarchical, `eng/ml`).
    pub role: String,
    /// Connected and not suppressed: may receive offers.
    pub active: bool,
    /// Declared the GPU capability.
    pub gpu_capable: bool,
    /// Resources it holds (used by tasks plus outstanding offers).
    pub allocated: Resources,
}

/// What a cycle needs to know of a framework to pass over it, kept by
/// sorter node so that passing over one costs no lookup by id (a GPU agent
/// late in a big cycle passes over most frameworks).
#[derive(Debug, Clone, Copy)]
struct FwFlags {
    active: bool,
    gpu_capable: bool,
}

#[derive(Debug, Clone)]
struct FrameworkEntry {
    node: NodeId,
    active: bool,
    gpu_capable: bool,
    held: Qty,
}

#[derive(Debug, Clone)]
struct AgentEntry {
    total: Qty,
    /// All its GPUs, in thousandths (0: not a GPU agent).
    gpus_total: i64,
    /// Unreserved cpus and mem in total: what the GPU hold-back is a
    /// share of.
    base: HeldBack,
    /// `--gpu-reserve` per idle GPU; `None`: the proportional default.
    per_gpu: Option<HeldBack>,
    available: Resources,
    /// Unreserved part of `available`, compact.
    free: Qty,
}

impl AgentEntry {
    fn has_gpus(&self) -> bool {
        self.gpus_total > 0
    }

    /// What it keeps back now for its idle GPUs (see
    /// [`mezz_proto::holdback`]): never offered to frameworks without the
    /// GPU capability.
    fn held_for_gpus(&self) -> HeldBack {
        if !self.has_gpus() {
            return [0, 0];
        }
        held_back_milli(
            self.base,
            self.gpus_total,
            gpus_milli(&self.available),
            self.per_gpu,
        )
    }
}

/// Which agents a cycle looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every agent (the periodic sweep, or after a framework-side change).
    All,
    /// Only these (the agents whose resources changed since the last cycle).
    Agents(&'a [AgentId]),
}

/// The allocator's state. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    sorter: Sorter,
    frameworks: Map<FrameworkId, FrameworkEntry>,
    agents: BTreeMap<AgentId, AgentEntry>,
    /// Each framework's flags by its sorter node (`None`: a role node, or
    /// no framework there now); follows `frameworks`.
    flags: Vec<Option<FwFlags>>,
    roles: BTreeMap<String, RoleConfig>,
    quotas: Vec<(NodeId, Quota)>,
    total: Qty,
    free: Qty,
}

impl Allocator {
    /// An allocator with nothing in it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a role's weight and quota (the default config removes them).
    pub fn set_role(&mut self, role: &str, cfg: RoleConfig) {
        let node = self.sorter.role(role);
        self.sorter.set_weight(role, cfg.weight);
        self.quotas.retain(|(n, _)| *n != node);
        let q = Quota::of(&cfg);
        if !q.is_none() {
            self.quotas.push((node, q));
            self.quotas.sort_by_key(|(n, _)| *n);
        }
        if cfg == RoleConfig::default() {
            self.roles.remove(role);
        } else {
            self.roles.insert(role.to_string(), cfg);
        }
    }

    /// The configured roles.
    pub fn role_configs(&self) -> &BTreeMap<String, RoleConfig> {
        &self.roles
    }

    /// Adds or refreshes an agent: its total and what is available now.
    /// A GPU agent keeps back the default share for its idle GPUs.
    pub fn update_agent(&mut self, id: &AgentId, total: &Resources, available: &Resources) {
        self.update_agent_with_reserve(id, total, available, None);
    }

    /// [`Allocator::update_agent`] with the agent's own reserve per idle
    /// GPU (`mezz agent --gpu-reserve`; `None` or naming neither cpus nor
    /// mem: the default share).
    pub fn update_agent_with_reserve(
        &mut self,
        id: &AgentId,
        total: &Resources,
        available: &Resources,
        gpu_reserve: Option<&Resources>,
    ) {
        let entry = AgentEntry {
            total: Qty::of(total),
            gpus_total: gpus_milli(total),
            base: unreserved_cpus_mem(total),
            per_gpu: gpu_reserve.and_then(per_gpu),
            available: available.clone(),
            free: Qty::of(&available.unreserved()),
        };
        // In place when known: one lookup, and the tree keeps its shape.
        let (total, free) = (entry.total, entry.free);
        match self.agents.get_mut(id) {
            Some(old) => {
                self.total = self.total.minus(old.total);
                self.free = self.free.minus(old.free);
                *old = entry;
            }
            None => {
                self.agents.insert(id.clone(), entry);
            }
        }
        self.total = self.total.plus(total);
        self.free = self.free.plus(free);
        self.sorter.set_total(self.total);
    }

    /// Removes an agent (disconnected or gone).
    pub fn remove_agent(&mut self, id: &AgentId) {
        self.forget_agent(id);
        self.sorter.set_total(self.total);
    }

    fn forget_agent(&mut self, id: &AgentId) {
        if let Some(old) = self.agents.remove(id) {
            self.total = self.total.minus(old.total);
            self.free = self.free.minus(old.free);
        }
    }

    /// Adds or refreshes a framework.
    pub fn update_framework(&mut self, id: &FrameworkId, f: &FrameworkState) {
        let node = self.sorter.add_framework(id, &f.role);
        let held = Qty::of(&f.allocated);
        if let Some(moved) = self.frameworks.get(id).filter(|e| e.node != node) {
            if let Some(slot) = self.flags.get_mut(moved.node) {
                *slot = None;
            }
        }
        let before = self.frameworks.get(id).filter(|e| e.node == node);
        let old = before.map(|e| e.held).unwrap_or_default();
        self.sorter.change(node, held.delta(old));
        if self.flags.len() <= node {
            self.flags.resize(node + 1, None);
        }
        self.flags[node] = Some(FwFlags {
            active: f.active,
            gpu_capable: f.gpu_capable,
        });
        self.frameworks.insert(
            id.clone(),
            FrameworkEntry {
                node,
                active: f.active,
                gpu_capable: f.gpu_capable,
                held,
            },
        );
    }

    /// Removes a framework and what it held.
    pub fn remove_framework(&mut self, id: &FrameworkId) {
        if let Some(gone) = self.frameworks.remove(id) {
            if let Some(slot) = self.flags.get_mut(gone.node) {
                *slot = None;
            }
        }
        self.sorter.remove_framework(id);
    }

    /// What a role holds now (its subtree), or nothing.
    pub fn role_allocated(&self, role: &str) -> Qty {
        self.sorter
            .find_role(role)
            .map(|n| self.sorter.node(n).allocated)
            .unwrap_or_default()
    }

    /// What an agent has available, as the allocator last saw it.
    pub fn agent_available(&self, id: &AgentId) -> Option<&Resources> {
        self.agents.get(id).map(|a| &a.available)
    }

    /// What an agent keeps back for its idle GPUs now, in thousandths of
    /// cpus and mem (zero for agents without GPUs or unknown ones).
    pub fn held_for_gpus(&self, id: &AgentId) -> HeldBack {
        self.agents
            .get(id)
            .map_or([0, 0], AgentEntry::held_for_gpus)
    }

    /// Sum of every agent's total.
    pub fn total(&self) -> Qty {
        self.total
    }

    /// Unreserved resources not held by anyone, over all agents.
    pub fn free(&self) -> Qty {
        self.free
    }

    /// How many agents and frameworks it tracks.
    pub fn sizes(&self) -> (usize, usize) {
        (self.agents.len(), self.frameworks.len())
    }

    /// Runs an allocation cycle over `scope`; see [`drf`]. `filtered`
    /// says whether a framework declined an agent recently (a refuse filter
    /// still active).
    pub fn allocate(
        &mut self,
        scope: Scope<'_>,
        filtered: &dyn Fn(&FrameworkId, &AgentId) -> bool,
    ) -> Vec<Allocation> {
        drf::cycle(self, scope, filtered)
    }
}
