//! The allocator: Dominant Resource Fairness over roles, then over the
//! frameworks of a role (Mesos's hierarchical allocator, in its simplest
//! form). Pure: plain data in, offers out; no clock, no I/O, no randomness.
//! Ties are broken by id so the same input always gives the same offers.

use std::collections::{BTreeMap, BTreeSet};

use mezz_proto::{AgentId, FrameworkId, Resources};

/// An agent with resources to hand out.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    /// The agent.
    pub id: AgentId,
    /// Total minus used minus already offered.
    pub available: Resources,
}

/// A framework that may receive offers.
#[derive(Debug, Clone)]
pub struct FrameworkSlot {
    /// The framework.
    pub id: FrameworkId,
    /// Its role; DRF first shares between roles.
    pub role: String,
    /// Resources it holds now (used by tasks plus outstanding offers).
    pub allocated: Resources,
    /// Agents it declined recently (refuse-seconds filters still active).
    pub filtered: BTreeSet<AgentId>,
    /// Whether it declared the GPU capability.
    pub gpu_capable: bool,
}

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
    available.scalar("cpus") >= 0.01 || available.scalar("mem") >= 32.0
}

/// Runs one allocation cycle: each agent's available resources go, whole, to
/// the eligible framework whose role, then itself, has the lowest dominant
/// share of `total`. Frameworks without the GPU capability are never offered
/// an agent that has GPUs.
pub fn allocate(
    agents: &[AgentSlot],
    frameworks: &[FrameworkSlot],
    total: &Resources,
) -> Vec<Allocation> {
    let mut out = Vec::new();
    if frameworks.is_empty() {
        return out;
    }
    let mut allocated: Vec<Resources> = frameworks.iter().map(|f| f.allocated.clone()).collect();
    let mut role_alloc: BTreeMap<&str, Resources> = BTreeMap::new();
    for f in frameworks {
        role_alloc
            .entry(f.role.as_str())
            .or_default()
            .add(&f.allocated);
    }
    let mut order: Vec<&AgentSlot> = agents
        .iter()
        .filter(|a| allocatable(&a.available))
        .collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    for agent in order {
        let has_gpus = !agent.available.set_items("gpus").is_empty();
        let best = frameworks
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.filtered.contains(&agent.id) && (f.gpu_capable || !has_gpus))
            .min_by(|(i, a), (j, b)| {
                let ra = role_alloc[a.role.as_str()].dominant_share(total);
                let rb = role_alloc[b.role.as_str()].dominant_share(total);
                let fa = allocated[*i].dominant_share(total);
                let fb = allocated[*j].dominant_share(total);
                ra.total_cmp(&rb)
                    .then(fa.total_cmp(&fb))
                    .then_with(|| a.id.cmp(&b.id))
            })
            .map(|(i, _)| i);
        let Some(i) = best else { continue };
        let f = &frameworks[i];
        allocated[i].add(&agent.available);
        if let Some(r) = role_alloc.get_mut(f.role.as_str()) {
            r.add(&agent.available);
        }
        out.push(Allocation {
            framework: f.id.clone(),
            agent: agent.id.clone(),
            resources: agent.available.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, r: &str) -> AgentSlot {
        AgentSlot {
            id: id.into(),
            available: Resources::parse(r).unwrap(),
        }
    }

    fn fw(id: &str, role: &str, alloc: &str) -> FrameworkSlot {
        FrameworkSlot {
            id: id.into(),
            role: role.into(),
            allocated: Resources::parse(alloc).unwrap(),
            filtered: BTreeSet::new(),
            gpu_capable: false,
        }
    }

    #[test]
    fn lowest_dominant_share_wins() {
        let total = Resources::parse("cpus:10;mem:1000").unwrap();
        let agents = [agent("a1", "cpus:1;mem:100")];
        let fws = [fw("f1", "r", "cpus:5"), fw("f2", "r", "mem:100")];
        let out = allocate(&agents, &fws, &total);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].framework, FrameworkId::from("f2"));
    }

    #[test]
    fn agents_spread_across_frameworks_and_filters_hold() {
        let total = Resources::parse("cpus:4;mem:400").unwrap();
        let agents = [
            agent("a1", "cpus:1;mem:100"),
            agent("a2", "cpus:1;mem:100"),
            agent("a3", "cpus:1;mem:100"),
        ];
        let mut f2 = fw("f2", "r", "");
        f2.filtered.insert("a1".into());
        let fws = [fw("f1", "r", ""), f2];
        let out = allocate(&agents, &fws, &total);
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|a| (a.agent.as_str(), a.framework.as_str()))
            .collect();
        assert_eq!(got, vec![("a1", "f1"), ("a2", "f2"), ("a3", "f1")]);
    }

    #[test]
    fn gpu_agents_only_to_gpu_frameworks_and_crumbs_never() {
        let total = Resources::parse("cpus:4;mem:400;gpus:{g0}").unwrap();
        let agents = [
            agent("a1", "cpus:1;mem:100;gpus:{g0}"),
            agent("a2", "mem:1"),
        ];
        let fws = [fw("f1", "r", "")];
        assert!(allocate(&agents, &fws, &total).is_empty());
        let mut g = fw("g", "r", "");
        g.gpu_capable = true;
        let out = allocate(&agents, &[g], &total);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].agent, AgentId::from("a1"));
    }

    #[test]
    fn same_input_same_output() {
        let total = Resources::parse("cpus:8;mem:800").unwrap();
        let agents: Vec<_> = (0..8)
            .map(|i| agent(&format!("a{i}"), "cpus:1;mem:100"))
            .collect();
        let fws = [fw("x", "r1", ""), fw("y", "r2", ""), fw("z", "r2", "")];
        assert_eq!(
            allocate(&agents, &fws, &total),
            allocate(&agents, &fws, &total)
        );
    }
}
