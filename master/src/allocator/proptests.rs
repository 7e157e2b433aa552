//! Property tests over random clusters, frameworks and event sequences:
//! nothing is offered twice or over-committed, limits hold, guarantees are
//! held back while unmet, reserved resources reach only their role, GPU
//! agents only GPU-capable frameworks, and equal demand converges to equal
//! shares. Case counts are kept small enough for CI on two cores.

use std::collections::HashMap;

use mezz_proto::{AgentId, FrameworkId, Resources};
use proptest::prelude::*;

use super::share::Qty;
use super::tests::{fw, res};
use super::*;

const ROLES: [&str; 4] = ["a", "a/x", "b", "c"];

#[derive(Debug, Clone)]
struct World {
    agents: Vec<(u32, u32, bool, Option<usize>)>,
    frameworks: Vec<(usize, bool, bool)>,
    quotas: Vec<(usize, u32, Option<u32>)>,
    events: Vec<(u8, usize)>,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(
            (1u32..8, 1u32..8, any::<bool>(), prop::option::of(0usize..4)),
            1..10,
        ),
        prop::collection::vec((0usize..4, any::<bool>(), any::<bool>()), 1..6),
        prop::collection::vec((0usize..4, 0u32..6, prop::option::of(0u32..8)), 0..3),
        prop::collection::vec((0u8..3, 0usize..10), 1..8),
    )
        .prop_map(|(agents, frameworks, quotas, events)| World {
            agents,
            frameworks,
            quotas,
            events,
        })
}

fn agent_total(i: usize, w: &World) -> Resources {
    let (c, m, gpu, reserved) = w.agents[i];
    let mut r = res(&format!("cpus:{c};mem:{}", m * 256));
    if gpu {
        r.add(&Resources::new().with_set("gpus", [format!("g{i}")]));
    }
    if let Some(role) = reserved {
        r.add(&res("cpus:2;mem:512").reserve(ROLES[role]));
    }
    r
}

fn is_in(role: &str, of: &str) -> bool {
    role == of || role.starts_with(&format!("{of}/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_event_sequences(w in world()) {
        let mut a = Allocator::new();
        let ids: Vec<AgentId> = (0..w.agents.len()).map(|i| format!("a{i}").into()).collect();
        let totals: Vec<Resources> = (0..w.agents.len()).map(|i| agent_total(i, &w)).collect();
        let mut used: Vec<Resources> = vec![Resources::new(); ids.len()];
        for (i, id) in ids.iter().enumerate() {
            a.update_agent(id, &totals[i], &totals[i]);
        }
        for &(role, g, l) in &w.quotas {
            let limit = l.map(|l| res(&format!("cpus:{}", l.max(g)))).unwrap_or_default();
            a.set_role(ROLES[role], RoleConfig { weight: 1.0, guarantee: res(&format!("cpus:{g}")), limit });
        }
        let fws: Vec<(FrameworkId, FrameworkState)> = w.frameworks.iter().enumerate().map(|(i, &(role, gpu, active))| {
            let mut st = fw(ROLES[role], gpu);
            st.active = active || i == 0;
            (FrameworkId::from(format!("f{i}")), st)
        }).collect();
        for (id, st) in &fws {
            a.update_framework(id, st);
        }
        let mut held: HashMap<FrameworkId, Resources> = HashMap::new();
        for &(kind, which) in &w.events {
            let free_before = a.free();
            let out = a.allocate(Scope::All, &|_, _| false);
            // Roles with no guarantee in their chain never eat into the
            // headroom that unmet guarantees still need after the cycle.
            // (A child role's allocation counts towards its parent's
            // guarantee, so what is unmet is measured after stage one.)
            let required_after = a.quotas.iter().fold(Qty::default(), |acc, (n, q)| acc.plus(q.unmet(a.sorter.node(*n).allocated)));
            let mut to_others = Qty::default();
            let mut to_guaranteed = Qty::default();
            for o in &out {
                let st = &fws.iter().find(|(id, _)| *id == o.framework).unwrap().1;
                let guaranteed = a.role_configs().iter().any(|(r, c)| is_in(&st.role, r) && !c.guarantee.is_empty());
                let q = Qty::of(&o.resources.unreserved());
                if guaranteed {
                    to_guaranteed = to_guaranteed.plus(q);
                } else {
                    to_others = to_others.plus(q);
                }
            }
            for d in 0..4 {
                let room = (free_before.0[d] - to_guaranteed.0[d] - required_after.0[d]).max(0);
                prop_assert!(to_others.0[d] <= room,
                    "others got {:?} of free {:?}; guaranteed roles got {:?} and still miss {:?}", to_others, free_before, to_guaranteed, required_after);
            }
            for o in &out {
                let ai = ids.iter().position(|i| *i == o.agent).unwrap();
                used[ai].add(&o.resources);
                // Never over-committed, never offered twice.
                prop_assert!(totals[ai].contains(&used[ai]), "agent {} over-committed: {} of {}", o.agent, used[ai], totals[ai]);
                let st = &fws.iter().find(|(id, _)| *id == o.framework).unwrap().1;
                prop_assert!(st.active);
                // Reservations only to their role (or a sub-role).
                for (role, _) in o.resources.reservations() {
                    prop_assert!(is_in(&st.role, role), "{} got {}'s reservation", st.role, role);
                }
                // GPU agents only to GPU-capable frameworks.
                if totals[ai].set_len("gpus") > 0 {
                    prop_assert!(st.gpu_capable);
                }
                held.entry(o.framework.clone()).or_default().add(&o.resources);
            }
            // Limits are never exceeded.
            for (role, cfg) in a.role_configs() {
                let q = Quota::of(cfg);
                let have = a.role_allocated(role);
                for d in 0..4 {
                    if let Some(l) = q.limit[d] {
                        prop_assert!(have.0[d] <= l, "role {role} holds {:?} over limit {:?}", have, q.limit);
                    }
                }
            }
            // Then an event: release an offer or half of it, or nothing.
            let Some((fid, h)) = held.iter().nth(which % held.len().max(1)).map(|(f, h)| (f.clone(), h.clone())) else { continue };
            if kind == 0 {
                continue;
            }
            for (ai, id) in ids.iter().enumerate() {
                let back = if kind == 1 { used[ai].clone() } else { Resources::new() };
                used[ai].subtract(&back);
                let mut avail = totals[ai].clone();
                avail.subtract(&used[ai]);
                a.update_agent(id, &totals[ai], &avail);
            }
            if kind == 1 {
                held.clear();
                for (id, st) in &fws {
                    a.update_framework(id, st);
                }
            } else {
                let _ = (fid, h);
            }
        }
    }

    #[test]
    fn equal_demand_converges_within_one_task(n_fw in 2usize..6, n_agents in 4usize..40, seed in 0u64..1000) {
        // Every agent fits exactly one task; frameworks accept everything.
        let mut a = Allocator::new();
        for i in 0..n_agents {
            let id: AgentId = format!("a{:03}", (i as u64 * 7919 + seed) % 1000).into();
            a.update_agent(&id, &res("cpus:1;mem:128"), &res("cpus:1;mem:128"));
        }
        for i in 0..n_fw {
            a.update_framework(&format!("f{i}").into(), &fw("r", false));
        }
        let out = a.allocate(Scope::All, &|_, _| false);
        let mut counts: HashMap<FrameworkId, usize> = HashMap::new();
        for o in out {
            *counts.entry(o.framework).or_default() += 1;
        }
        let max = counts.values().copied().max().unwrap_or(0);
        let min = if counts.len() < n_fw { 0 } else { counts.values().copied().min().unwrap_or(0) };
        prop_assert!(max - min <= 1, "{counts:?}");
    }
}
