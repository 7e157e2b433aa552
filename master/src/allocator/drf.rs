//! One allocation cycle, in two stages as in Mesos's hierarchical
//! allocator. Stage one serves roles below their quota guarantee first, up
//! to the guarantee;
//! stage two shares what is left by weighted DRF while holding back enough
//! unreserved resources to meet every unmet guarantee (the quota headroom).
//! In both, an agent's available resources go to the first eligible
//! framework in DRF order: reserved resources only to their role (or its
//! sub-roles), unreserved ones trimmed to the role's quota limit, GPU
//! agents only to GPU-capable frameworks, never crumbs, and never twice.

use mezz_proto::{AgentId, FrameworkId, Resources};

use super::quota::{tighter, trim};
use super::share::Qty;
use super::sorter::{Kind, Node, NodeId};
use super::{allocatable, AgentEntry, Allocation, Allocator, Scope};

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
    let mut out = Vec::new();
    if !a.frameworks.values().any(|f| f.active) {
        return out;
    }
    let gpu_takers = a.frameworks.values().any(|f| f.active && f.gpu_capable);
    let ids: Vec<AgentId> = match scope {
        Scope::All => a.agents.keys().cloned().collect(),
        Scope::Agents(list) => {
            let mut v: Vec<AgentId> = list
                .iter()
                .filter(|id| a.agents.contains_key(*id))
                .cloned()
                .collect();
            v.sort();
            v.dedup();
            v
        }
    };
    let mut given: Vec<NodeId> = Vec::new();
    for id in &ids {
        given.clear();
        for stage in [Stage::Quota, Stage::Fair] {
            if stage == Stage::Quota && !any_unmet(a) {
                continue;
            }
            allocate_agent(a, id, stage, gpu_takers, filtered, &mut given, &mut out);
        }
    }
    out
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
fn offer_for(a: &Allocator, fw: NodeId, agent: &AgentEntry, stage: Stage) -> Option<Resources> {
    let (unmet, mut cap) = chain_quota(a, fw);
    let mut offer = Resources::new();
    if stage == Stage::Fair {
        for r in a.sorter.role_chain(fw) {
            if let Kind::Role(name) = &a.sorter.node(r).kind {
                if let Some(res) = agent.available.reserved(name) {
                    offer.add(&res.reserve(name));
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

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn allocate_agent(
    a: &mut Allocator,
    agent_id: &AgentId,
    stage: Stage,
    gpu_takers: bool,
    filtered: &dyn Fn(&FrameworkId, &AgentId) -> bool,
    given: &mut Vec<NodeId>,
    out: &mut Vec<Allocation>,
) {
    loop {
        let Some(agent) = a.agents.get(agent_id) else {
            return;
        };
        if !allocatable(&agent.available) || (agent.has_gpus && !gpu_takers) {
            return;
        }
        let mut chosen: Option<(FrameworkId, Resources)> = None;
        let this: &Allocator = a;
        let mut enter = |id: NodeId, _: &Node| worth_entering(this, id, agent, stage);
        let mut take = |id: NodeId, node: &Node| {
            let Kind::Framework(fid) = &node.kind else {
                return false;
            };
            let Some(f) = this.frameworks.get(fid) else {
                return false;
            };
            if !f.active
                || (agent.has_gpus && !f.gpu_capable)
                || given.contains(&id)
                || filtered(fid, agent_id)
            {
                return false;
            }
            match offer_for(this, id, agent, stage) {
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
        given.push(node);
        let q = Qty::of(&offer);
        let free = Qty::of(&offer.unreserved());
        if let Some(agent) = a.agents.get_mut(agent_id) {
            agent.available.subtract(&offer);
            agent.free = agent.free.minus(free);
        }
        a.free = a.free.minus(free);
        if let Some(f) = a.frameworks.get_mut(&fid) {
            f.held = f.held.plus(q);
        }
        a.sorter.change(node, q.0);
        out.push(Allocation {
            framework: fid,
            agent: agent_id.clone(),
            resources: offer,
        });
    }
}
