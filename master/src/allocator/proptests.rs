//! Property tests over random clusters, frameworks and event sequences:
//! nothing is offered twice or over-committed, limits hold, guarantees are
//! held back while unmet, reserved resources reach only their role, GPUs
//! only GPU-capable frameworks, what a GPU agent keeps back for its idle
//! GPUs never reaches the others (so CPU-only work never blocks a GPU task
//! that fits), and equal demand converges to equal shares. Case counts are
//! kept small enough for CI on two cores.

use std::collections::HashMap;

use mezz_proto::holdback::{gpus_milli, held_back_milli, per_gpu, unreserved_cpus_mem};
use mezz_proto::{AgentId, FrameworkId, Resources};
use proptest::prelude::*;

use super::share::Qty;
use super::tests::{fw, res};
use super::*;

const ROLES: [&str; 4] = ["a", "a/x", "b", "c"];

/// An agent: cpus, mem (× 256 MB), GPUs, a reservation for a role, and a
/// `--gpu-reserve` of (cpus, mem MB) per GPU.
type AgentShape = (u32, u32, u32, Option<usize>, Option<(u32, u32)>);

#[derive(Debug, Clone)]
struct World {
    agents: Vec<AgentShape>,
    frameworks: Vec<(usize, bool, bool)>,
    quotas: Vec<(usize, u32, Option<u32>)>,
    events: Vec<(u8, usize)>,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(agent_shape(), 1..10),
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

fn agent_shape() -> impl Strategy<Value = AgentShape> {
    (
        1u32..8,
        1u32..8,
        prop_oneof![Just(0u32), 1u32..4],
        prop::option::of(0usize..4),
        prop::option::of((0u32..3, 0u32..512)),
    )
}

fn shape_total(i: usize, shape: AgentShape) -> Resources {
    let (c, m, gpus, reserved, _) = shape;
    let mut r = res(&format!("cpus:{c};mem:{}", m * 256));
    if gpus > 0 {
        r.add(&Resources::new().with_set("gpus", (0..gpus).map(|g| format!("g{i}-{g}"))));
    }
    if let Some(role) = reserved {
        r.add(&res("cpus:2;mem:512").reserve(ROLES[role]));
    }
    r
}

fn shape_reserve(shape: AgentShape) -> Option<Resources> {
    shape.4.map(|(c, m)| res(&format!("cpus:{c};mem:{m}")))
}

fn agent_total(i: usize, w: &World) -> Resources {
    shape_total(i, w.agents[i])
}

/// What `total` keeps back for the idle GPUs in `available`, computed
/// from the definition in `mezz_proto::holdback`.
fn hold(total: &Resources, available: &Resources, reserve: Option<&Resources>) -> [i64; 2] {
    held_back_milli(
        unreserved_cpus_mem(total),
        gpus_milli(total),
        gpus_milli(available),
        reserve.and_then(per_gpu),
    )
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
        let reserves: Vec<Option<Resources>> = w.agents.iter().map(|&sh| shape_reserve(sh)).collect();
        for (i, id) in ids.iter().enumerate() {
            a.update_agent_with_reserve(id, &totals[i], &totals[i], reserves[i].as_ref());
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
                let st = &fws.iter().find(|(id, _)| *id == o.framework).unwrap().1;
                // GPUs only to GPU-capable frameworks, and never what a GPU
                // agent keeps back for its idle GPUs.
                if !st.gpu_capable {
                    prop_assert_eq!(o.resources.set_len("gpus"), 0, "{} got GPUs", o.framework);
                    let mut before = totals[ai].clone();
                    before.subtract(&used[ai]);
                    let held = hold(&totals[ai], &before, reserves[ai].as_ref());
                    let free = unreserved_cpus_mem(&before);
                    let got = unreserved_cpus_mem(&o.resources);
                    for d in 0..2 {
                        prop_assert!(got[d] <= (free[d] - held[d]).max(0),
                            "agent {} keeps {:?} for its idle GPUs of {:?} free; {} got {}", o.agent, held, free, o.framework, o.resources);
                    }
                }
                used[ai].add(&o.resources);
                // Never over-committed, never offered twice.
                prop_assert!(totals[ai].contains(&used[ai]), "agent {} over-committed: {} of {}", o.agent, used[ai], totals[ai]);
                let st = &fws.iter().find(|(id, _)| *id == o.framework).unwrap().1;
                prop_assert!(st.active);
                // Reservations only to their role (or a sub-role).
                for (role, _) in o.resources.reservations() {
                    prop_assert!(is_in(&st.role, role), "{} got {}'s reservation", st.role, role);
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
                a.update_agent_with_reserve(id, &totals[ai], &avail, reserves[ai].as_ref());
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
    fn cpu_work_never_blocks_a_gpu_task_that_fits_an_idle_gpu(
        gpu_agent in agent_shape().prop_filter("a GPU agent", |s| s.2 > 0),
        plain in prop::collection::vec(agent_shape().prop_map(|s| (s.0, s.1, 0, None, None)), 0..3),
        cpu_frameworks in prop::collection::vec((0usize..4, 0u32..4), 1..4),
        rounds in 1usize..5,
        gpu_held in 0u32..8,
        want_frac in 0u32..=4,
    ) {
        // CPU-only frameworks take everything they are offered, round
        // after round; then a GPU task of g idle GPUs, with at most the
        // cpus and mem kept back for g GPUs, must be offered whole.
        let mut a = Allocator::new();
        let gid: AgentId = "gpu-agent".into();
        let gtotal = shape_total(99, gpu_agent);
        let reserve = shape_reserve(gpu_agent);
        let mut gused = Resources::new();
        a.update_agent_with_reserve(&gid, &gtotal, &gtotal, reserve.as_ref());
        for (i, &sh) in plain.iter().enumerate() {
            let t = shape_total(i, sh);
            a.update_agent(&format!("p{i}").into(), &t, &t);
        }
        let mut cpu: Vec<(FrameworkId, FrameworkState)> = cpu_frameworks.iter().enumerate().map(|(i, &(role, c))| {
            let mut st = fw(ROLES[role], false);
            st.allocated = res(&format!("cpus:{c}"));
            (FrameworkId::from(format!("cpu{i}")), st)
        }).collect();
        for (id, st) in &cpu {
            a.update_framework(id, st);
        }
        for _ in 0..rounds {
            for o in a.allocate(Scope::All, &|_, _| false) {
                // Accepted whole: the resources stay taken.
                if let Some((_, st)) = cpu.iter_mut().find(|(id, _)| *id == o.framework) {
                    st.allocated.add(&o.resources);
                }
                if o.agent == gid {
                    gused.add(&o.resources);
                }
            }
            for (id, st) in &cpu {
                a.update_framework(id, st);
            }
        }
        let mut gavail = gtotal.clone();
        gavail.subtract(&gused);
        let idle = gpus_milli(&gavail) / 1000;
        prop_assert_eq!(idle, gpus_milli(&gtotal) / 1000, "CPU-only work took a GPU");
        let g = 1 + (idle - 1) * i64::from(want_frac) / 4;
        let room = held_back_milli(unreserved_cpus_mem(&gtotal), gpus_milli(&gtotal), g * 1000, reserve.as_ref().and_then(per_gpu));
        let task = Resources::new()
            .with_scalar("cpus", room[0] as f64 / 1000.0)
            .with_scalar("mem", room[1] as f64 / 1000.0);
        let mut gpu_fw = fw("c", true);
        gpu_fw.allocated = res(&format!("cpus:{gpu_held}"));
        a.update_framework(&"gpu".into(), &gpu_fw);
        let out = a.allocate(Scope::All, &|_, _| false);
        let offer = out.iter().find(|o| o.framework.as_str() == "gpu" && o.agent == gid);
        prop_assert!(offer.is_some(), "no offer of {gid} ({gavail} available) to the GPU framework: {out:?}");
        let offer = &offer.unwrap().resources;
        prop_assert!(gpus_milli(offer) >= g * 1000 && offer.unreserved().contains(&task),
            "a task of {g} GPU(s) and {task} does not fit the offer {offer}");
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
