//! Scenario tests of the allocator: Mesos's DRF example, starvation,
//! weights, quotas, reservations, GPUs and incremental cycles.

use mezz_proto::{AgentId, FrameworkId, Resources};

use super::*;

pub(super) fn res(s: &str) -> Resources {
    Resources::parse(s).unwrap()
}

pub(super) fn fw(role: &str, gpu: bool) -> FrameworkState {
    FrameworkState {
        role: role.into(),
        active: true,
        gpu_capable: gpu,
        allocated: Resources::new(),
    }
}

fn none(_: &FrameworkId, _: &AgentId) -> bool {
    false
}

/// Frameworks that take one task of `demand` from every offer that fits
/// it and decline the rest, until nothing more is offered.
fn run_tasks(a: &mut Allocator, demands: &[(&str, Resources)]) -> Vec<usize> {
    let mut tasks = vec![0; demands.len()];
    let mut held: Vec<Resources> = vec![Resources::new(); demands.len()];
    for _ in 0..1000 {
        let offers = a.allocate(Scope::All, &none);
        if offers.is_empty() {
            break;
        }
        let mut launched = false;
        for o in offers {
            let i = demands
                .iter()
                .position(|(id, _)| o.framework.as_str() == *id)
                .unwrap();
            let mut avail = a.agent_available(&o.agent).unwrap().clone();
            avail.add(&o.resources);
            if o.resources.contains(&demands[i].1) {
                held[i].add(&demands[i].1);
                tasks[i] += 1;
                avail.subtract(&demands[i].1);
                launched = true;
            }
            a.update_agent(&o.agent, &res("cpus:9;mem:18432"), &avail);
            let mut st = fw("r", false);
            st.allocated = held[i].clone();
            a.update_framework(&o.framework, &st);
        }
        if !launched {
            break;
        }
    }
    tasks
}

#[test]
fn mesos_drf_example() {
    // The DRF paper and Mesos docs: 9 CPUs, 18 GB; A runs <1 CPU, 4 GB>
    // tasks, B runs <3 CPUs, 1 GB>. DRF gives A three tasks, B two, both
    // at a dominant share of 2/3.
    let mut a = Allocator::new();
    a.update_agent(
        &"s1".into(),
        &res("cpus:9;mem:18432"),
        &res("cpus:9;mem:18432"),
    );
    a.update_framework(&"A".into(), &fw("r", false));
    a.update_framework(&"B".into(), &fw("r", false));
    let tasks = run_tasks(
        &mut a,
        &[("A", res("cpus:1;mem:4096")), ("B", res("cpus:3;mem:1024"))],
    );
    assert_eq!(tasks, vec![3, 2]);
}

#[test]
fn newcomer_is_not_starved() {
    let mut a = Allocator::new();
    for i in 0..10 {
        let id: AgentId = format!("a{i}").into();
        let avail = if i < 9 {
            Resources::new()
        } else {
            res("cpus:1;mem:100")
        };
        a.update_agent(&id, &res("cpus:1;mem:100"), &avail);
    }
    let mut hog = fw("r", false);
    hog.allocated = res("cpus:9;mem:900");
    a.update_framework(&"hog".into(), &hog);
    a.update_framework(&"new".into(), &fw("r", false));
    let out = a.allocate(Scope::All, &none);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].framework.as_str(), "new");
}

#[test]
fn weights_share_in_proportion() {
    let mut a = Allocator::new();
    for i in 0..30 {
        let id: AgentId = format!("a{i:02}").into();
        a.update_agent(&id, &res("cpus:1;mem:100"), &res("cpus:1;mem:100"));
    }
    a.set_role(
        "gold",
        RoleConfig {
            weight: 2.0,
            ..Default::default()
        },
    );
    a.update_framework(&"g".into(), &fw("gold", false));
    a.update_framework(&"s".into(), &fw("silver", false));
    let out = a.allocate(Scope::All, &none);
    let gold = out.iter().filter(|o| o.framework.as_str() == "g").count();
    assert_eq!((gold, out.len() - gold), (20, 10));
}

#[test]
fn quota_guarantee_is_held_back_and_limit_respected() {
    let mut a = Allocator::new();
    for i in 0..8 {
        let id: AgentId = format!("a{i}").into();
        a.update_agent(&id, &res("cpus:1;mem:100"), &res("cpus:1;mem:100"));
    }
    a.set_role(
        "q",
        RoleConfig {
            weight: 1.0,
            guarantee: res("cpus:3"),
            limit: res("cpus:5"),
        },
    );
    // Nobody in "q" yet: its 3 cpus stay unoffered.
    a.update_framework(&"other".into(), &fw("other", false));
    let out = a.allocate(Scope::All, &none);
    let cpus: f64 = out.iter().map(|o| o.resources.scalar("cpus")).sum();
    assert_eq!(cpus, 5.0);
    // "q" arrives: it gets the 3 held back, and never more than its limit.
    a.update_framework(&"qf".into(), &fw("q", false));
    let out = a.allocate(Scope::All, &none);
    let q: f64 = out
        .iter()
        .filter(|o| o.framework.as_str() == "qf")
        .map(|o| o.resources.scalar("cpus"))
        .sum();
    assert_eq!(q, 3.0);
    assert!(a.role_allocated("q").0[0] <= 5000);
}

#[test]
fn reservations_go_to_their_role_and_sub_roles() {
    let mut a = Allocator::new();
    let r = res("cpus:1;mem:100;cpus(eng):4;mem(eng):400");
    a.update_agent(&"a1".into(), &r, &r);
    a.update_framework(&"ops".into(), &fw("ops", false));
    a.update_framework(&"ml".into(), &fw("eng/ml", false));
    let out = a.allocate(Scope::All, &none);
    for o in &out {
        if o.framework.as_str() == "ops" {
            assert!(!o.resources.has_reservations(), "{}", o.resources);
        }
    }
    let ml = out.iter().find(|o| o.framework.as_str() == "ml").unwrap();
    assert_eq!(ml.resources.reserved("eng").unwrap().scalar("cpus"), 4.0);
}

#[test]
fn gpus_only_to_gpu_frameworks_and_crumbs_never() {
    let mut a = Allocator::new();
    let g = res("cpus:2;mem:200;disk:50;ports:[31000-31009];gpus:{g0}");
    a.update_agent(&"a1".into(), &g, &g);
    a.update_agent(&"a2".into(), &res("mem:10"), &res("mem:10"));
    a.update_framework(&"cpu".into(), &fw("r", false));
    // A framework without the GPU capability gets the GPU agent's cpus,
    // mem, disk and ports, less the half kept back for its idle GPU.
    let out = a.allocate(Scope::All, &none);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].framework.as_str(), "cpu");
    assert_eq!(
        out[0].resources.to_string(),
        "cpus:1;disk:50;mem:100;ports:[31000-31009]"
    );
    // A GPU framework gets the GPU and what was kept back for it.
    a.update_framework(&"gpu".into(), &fw("r", true));
    let out = a.allocate(Scope::All, &none);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].framework.as_str(), "gpu");
    assert_eq!(out[0].resources.to_string(), "cpus:1;mem:100;gpus:{g0}");
}

#[test]
fn an_explicit_reserve_holds_per_idle_gpu_and_shrinks_as_gpus_are_used() {
    let mut a = Allocator::new();
    let total = res("cpus:8;mem:8192;gpus:{g0,g1,g2}");
    let reserve = res("cpus:2;mem:1024");
    a.update_agent_with_reserve(&"a1".into(), &total, &total, Some(&reserve));
    assert_eq!(a.held_for_gpus(&"a1".into()), [6000, 3_072_000]);
    a.update_framework(&"cpu".into(), &fw("r", false));
    let out = a.allocate(Scope::All, &none);
    assert_eq!(out[0].resources.to_string(), "cpus:2;mem:5120");
    // Two GPUs taken by a task (with 1 cpu): one idle GPU holds 2 cpus.
    let mut avail = total.clone();
    avail.subtract(&res("cpus:1;mem:512;gpus:{g0,g1}"));
    a.update_agent_with_reserve(&"a1".into(), &total, &avail, Some(&reserve));
    a.update_framework(&"cpu".into(), &fw("r", false));
    assert_eq!(a.held_for_gpus(&"a1".into()), [2000, 1_024_000]);
    let out = a.allocate(Scope::All, &none);
    assert_eq!(out[0].resources.to_string(), "cpus:5;mem:6656");
}

#[test]
fn cpu_work_goes_to_agents_without_gpus_first() {
    let mut a = Allocator::new();
    let g = res("cpus:8;mem:8192;gpus:{g0}");
    // The GPU agent sorts first by name; it is still offered last.
    a.update_agent(&"a0-gpu".into(), &g, &g);
    a.update_agent(&"a1".into(), &res("cpus:1;mem:512"), &res("cpus:1;mem:512"));
    a.update_framework(&"cpu".into(), &fw("r", false));
    let out = a.allocate(Scope::All, &none);
    let agents: Vec<&str> = out.iter().map(|o| o.agent.as_str()).collect();
    assert_eq!(agents, vec!["a1"], "{out:?}");
    // Declined (filtered) there, it is offered the GPU agent's cpus.
    let mut avail = res("cpus:1;mem:512");
    a.update_agent(&"a1".into(), &res("cpus:1;mem:512"), &avail);
    a.update_framework(&"cpu".into(), &fw("r", false));
    let a1_filtered = |_: &FrameworkId, ag: &AgentId| ag.as_str() == "a1";
    let out = a.allocate(Scope::All, &a1_filtered);
    let agents: Vec<&str> = out.iter().map(|o| o.agent.as_str()).collect();
    assert_eq!(agents, vec!["a0-gpu"], "{out:?}");
    assert_eq!(out[0].resources.set_len("gpus"), 0);
    // The same in an incremental cycle over both agents.
    avail.subtract(&res("cpus:1"));
    a.update_agent(&"a1".into(), &res("cpus:1;mem:512"), &avail);
    a.update_agent(&"a0-gpu".into(), &g, &g);
    a.update_framework(&"cpu".into(), &fw("r", false));
    let both: Vec<AgentId> = vec!["a0-gpu".into(), "a1".into()];
    let out = a.allocate(Scope::Agents(&both), &none);
    let agents: Vec<&str> = out.iter().map(|o| o.agent.as_str()).collect();
    assert_eq!(agents, vec!["a1"], "{out:?}");
}

#[test]
fn incremental_cycle_looks_only_at_changed_agents_and_filters_hold() {
    let mut a = Allocator::new();
    for i in 0..3 {
        let id: AgentId = format!("a{i}").into();
        a.update_agent(&id, &res("cpus:1;mem:100"), &res("cpus:1;mem:100"));
    }
    a.update_framework(&"f1".into(), &fw("r", false));
    a.update_framework(&"f2".into(), &fw("r", false));
    let only: Vec<AgentId> = vec!["a2".into()];
    let f1_filtered = |f: &FrameworkId, _: &AgentId| f.as_str() == "f1";
    let out = a.allocate(Scope::Agents(&only), &f1_filtered);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].agent.as_str(), out[0].framework.as_str()),
        ("a2", "f2")
    );
    // Same input, same output.
    let mut b = a.clone();
    assert_eq!(a.allocate(Scope::All, &none), b.allocate(Scope::All, &none));
}
