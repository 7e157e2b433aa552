//! One allocation cycle, in two stages as in Mesos's hierarchical
//! allocator. Stage one serves roles below their quota guarantee first, up
//! to the guarantee;
//! stage two shares what is left by weighted DRF while holding back enough
//! unreserved resources to meet every unmet guarantee (the quota headroom).
//! In both, an agent's available resources go to the first eligible
//! framework in DRF order: reserved resources only to their role (or its
//! sub-roles), unreserved ones trimmed to the role's quota limit, GPUs only
//! to GPU-capable frameworks (others get a GPU agent's cpus, mem, disk and
//! ports less what it keeps back for its idle GPUs, and agents without
//! GPUs first), never crumbs, and never twice.

use mezz_proto::holdback::{without_gpus, HeldBack};
use mezz_proto::{AgentId, FrameworkId, Resources};

use super::quota::{tighter, trim};
use super::share::Qty;
use super::sorter::{Kind, Node, NodeId};
use super::{allocatable, AgentEntry, Allocation, Allocator, Scope, MIN_CPUS_MILLI, MIN_MEM_MILLI};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Roles below their guarantee only.
    Quota,
    /// Everyone, keeping the quota headroom.
    Fair,
}

pub(super) fn cycle(
    a: &mut Allocator,
    scope: Scope<'_>,
    filtered: &dyn Fn(&FrameworkId, &AgentId) -> bool,
) -> Vec<Allocation> {
    if !a.frameworks.values().any(|f| f.active) {
        return Vec::new();
    }
    let gpu_takers = a.frameworks.values().any(|f| f.active && f.gpu_capable);
    // CPU-only work goes to agents without GPUs first: they come first in
    // the cycle, and a framework without the GPU capability that got one
    // of them is not also offered a GPU agent in the same cycle.
    let ids: Vec<AgentId> = match scope {
        Scope::All => plain_first(a.agents.iter().map(|(id, e)| (id, e.has_gpus()))),
        Scope::Agents(list) => {
            let mut v: Vec<&AgentId> = list
                .iter()
                .filter(|id| a.agents.contains_key(*id))
                .collect();
            v.sort();
            v.dedup();
            plain_first(
                v.into_iter()
                    .map(|id| (id, a.agents.get(id).is_some_and(AgentEntry::has_gpus))),
            )
        }
    };
    let mut st = CycleState {
        gpu_takers,
        filtered,
        given: Vec::new(),
        got_plain: Vec::new(),
        out: Vec::new(),
    };
    for id in &ids {
        st.given.clear();
        for stage in [Stage::Quota, Stage::Fair] {
            if stage == Stage::Quota && !any_unmet(a) {
                continue;
            }
            allocate_agent(a, id, stage, &mut st);
        }
    }
    st.out
}

/// The agents without GPUs, then those with, each in the order given.
fn plain_first<'a>(agents: impl Iterator<Item = (&'a AgentId, bool)>) -> Vec<AgentId> {
    let (mut plain, mut gpu) = (Vec::new(), Vec::new());
    for (id, has_gpus) in agents {
        if has_gpus {
            gpu.push(id.clone());
        } else {
            plain.push(id.clone());
        }
    }
    plain.extend(gpu);
    plain
}

/// What one cycle carries from agent to agent.
struct CycleState<'f> {
    /// Some active framework has the GPU capability.
    gpu_takers: bool,
    filtered: &'f dyn Fn(&FrameworkId, &AgentId) -> bool,
    /// Framework nodes already given the current agent.
    given: Vec<NodeId>,
    /// By framework node: got an offer from an agent without GPUs in this
    /// cycle (grown on demand).
    got_plain: Vec<bool>,
    out: Vec<Allocation>,
}

fn any_unmet(a: &Allocator) -> bool {
    a.quotas
        .iter()
        .any(|(n, q)| !q.unmet(a.sorter.node(*n).allocated).is_zero())
}

/// Sum of every role's unmet guarantee: what must stay unoffered.
fn required_headroom(a: &Allocator) -> Qty {
    a.quotas.iter().fold(Qty::default(), |acc, (n, q)| {
        acc.plus(q.unmet(a.sorter.node(*n).allocated))
    })
}

/// Unmet guarantee along a role chain, and the tightest limit room.
fn chain_quota(a: &Allocator, role: NodeId) -> (Qty, [Option<i64>; 4]) {
    let mut unmet = Qty::default();
    let mut cap = [None; 4];
    for r in a.sorter.role_chain(role) {
        if let Some((_, q)) = a.quotas.iter().find(|(n, _)| *n == r) {
            let held = a.sorter.node(r).allocated;
            unmet = unmet.plus(q.unmet(held));
            cap = tighter(cap, q.room(held));
        }
    }
    (unmet, cap)
}

/// Whether a role's subtree could receive something from this agent.
fn worth_entering(a: &Allocator, role: NodeId, agent: &AgentEntry, stage: Stage) -> bool {
    match stage {
        Stage::Quota => {
            // The role or an ancestor is below its guarantee, or a
            // descendant is.
            if !chain_quota(a, role).0.is_zero() {
                return true;
            }
            a.quotas.iter().any(|(n, q)| {
                !q.unmet(a.sorter.node(*n).allocated).is_zero()
                    && a.sorter.role_chain(*n).any(|r| r == role)
            })
        }
        Stage::Fair => {
            if agent.available.has_reservations() {
                return true;
            }
            let (_, cap) = chain_quota(a, role);
            (0..4).any(|i| agent.free.0[i] > 0 && cap[i] != Some(0))
        }
    }
}

/// What framework node `fw` would be offered from `agent` in `stage`.
/// `gpu_hold` is set for a framework without the GPU capability on a GPU
/// agent: what the agent keeps back for its idle GPUs, which such a
/// framework is never offered, and neither are GPUs.
fn offer_for(
    a: &Allocator,
    fw: NodeId,
    agent: &AgentEntry,
    stage: Stage,
    gpu_hold: Option<HeldBack>,
) -> Option<Resources> {
    let (unmet, mut cap) = chain_quota(a, fw);
    let mut offer = Resources::new();
    if stage == Stage::Fair {
        for r in a.sorter.role_chain(fw) {
            if let Kind::Role(name) = &a.sorter.node(r).kind {
                if let Some(res) = agent.available.reserved(name) {
                    if gpu_hold.is_some() {
                        offer.add(&without_gpus(res).reserve(name));
                    } else {
                        offer.add(&res.reserve(name));
                    }
                }
            }
        }
        // Reservations count against the limit too: all or nothing.
        let held = Qty::of(&offer);
        if (0..4).any(|i| cap[i].is_some_and(|c| held.0[i] > c)) {
            offer = Resources::new();
        } else {
            for (c, h) in cap.iter_mut().zip(held.0) {
                *c = c.map(|c| c - h);
            }
        }
    }
    let serve_unreserved = match stage {
        Stage::Quota => !unmet.is_zero(),
        Stage::Fair => true,
    };
    if serve_unreserved && !agent.free.is_zero() {
        if stage == Stage::Quota {
            // Stage one tops a role up to its guarantee, no further: what
            // it took beyond that could be another role's unmet guarantee.
            let up_to: [Option<i64>; 4] =
                std::array::from_fn(|i| (unmet.0[i] > 0).then_some(unmet.0[i]));
            cap = tighter(cap, up_to);
        }
        if stage == Stage::Fair {
            let required = required_headroom(a);
            let headroom: [Option<i64>; 4] = std::array::from_fn(|i| {
                (required.0[i] > 0).then(|| (a.free.0[i] - required.0[i]).max(0) + unmet.0[i])
            });
            cap = tighter(cap, headroom);
        }
        if let Some(hold) = gpu_hold {
            let open = |i: usize| Some((agent.free.0[i] - hold[i]).max(0));
            cap = tighter(cap, [open(0), open(1), None, Some(0)]);
        }
        let mut unreserved = agent.available.unreserved();
        if cap.iter().any(Option::is_some) {
            unreserved = trim(&unreserved, cap);
        }
        if offer.is_empty() {
            offer = unreserved;
        } else {
            offer.add(&unreserved);
        }
    }
    allocatable(&offer).then_some(offer)
}

fn allocate_agent(a: &mut Allocator, agent_id: &AgentId, stage: Stage, st: &mut CycleState<'_>) {
    loop {
        let Some(agent) = a.agents.get(agent_id) else {
            return;
        };
        if !allocatable(&agent.available) {
            return;
        }
        let gpus_here = agent.has_gpus();
        let hold = agent.held_for_gpus();
        // Whether a framework without the GPU capability could get
        // anything here: reservations, or unreserved cpus or mem beyond
        // what is kept back for the idle GPUs.
        let plain_room = !gpus_here
            || agent.available.has_reservations()
            || agent.free.0[0] - hold[0] >= MIN_CPUS_MILLI
            || agent.free.0[1] - hold[1] >= MIN_MEM_MILLI;
        if !plain_room && !st.gpu_takers {
            return;
        }
        let mut chosen: Option<(FrameworkId, Resources)> = None;
        let this: &Allocator = a;
        let (given, got_plain, filtered, flags) =
            (&st.given, &st.got_plain, st.filtered, &this.flags);
        let mut enter = |id: NodeId, _: &Node| worth_entering(this, id, agent, stage);
        let mut take = |id: NodeId, node: &Node| {
            let Kind::Framework(fid) = &node.kind else {
                return false;
            };
            let Some(Some(f)) = flags.get(id) else {
                return false;
            };
            if !f.active || given.contains(&id) {
                return false;
            }
            let gpu_hold = (gpus_here && !f.gpu_capable).then_some(hold);
            if gpu_hold.is_some() && (!plain_room || got_plain.get(id) == Some(&true)) {
                return false;
            }
            if filtered(fid, agent_id) {
                return false;
            }
            match offer_for(this, id, agent, stage, gpu_hold) {
                Some(offer) => {
                    chosen = Some((fid.clone(), offer));
                    true
                }
                None => false,
            }
        };
        let picked = a.sorter.pick(&mut enter, &mut take);
        let (Some(node), Some((fid, offer))) = (picked, chosen) else {
            return;
        };
        st.given.push(node);
        if !gpus_here {
            if st.got_plain.len() <= node {
                st.got_plain.resize(node + 1, false);
            }
            st.got_plain[node] = true;
        }
        let q = Qty::of(&offer);
        // Without reservations (the common case) all of it is unreserved,
        // and no copy is needed to say so.
        let free = if offer.has_reservations() {
            Qty::of(&offer.unreserved())
        } else {
            q
        };
        if let Some(agent) = a.agents.get_mut(agent_id) {
            agent.available.subtract(&offer);
            agent.free = agent.free.minus(free);
        }
        a.free = a.free.minus(free);
        if let Some(f) = a.frameworks.get_mut(&fid) {
            f.held = f.held.plus(q);
        }
        a.sorter.change(node, q.0);
        st.out.push(Allocation {
            framework: fid,
            agent: agent_id.clone(),
            resources: offer,
        });
    }
}
