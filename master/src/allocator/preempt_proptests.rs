//! Property tests of victim selection over random clusters of GPU agents
//! and running tasks of random classes: a victim is never of the waiting
//! demand's class or higher, never non-preemptible, never of a gang taken
//! in part; victims are chosen only when the demand then fits and did not
//! fit before; and no victim could be spared. Queue order is a total
//! order that puts a higher class first.

use std::collections::{BTreeMap, BTreeSet};

use mezz_proto::{AgentId, FrameworkId, Resources, TaskId};
use proptest::prelude::*;

use super::preempt::*;

/// A running task: agent index, GPUs, class index, gang (by index), work.
type TaskShape = (usize, usize, usize, u8, u16);

const CLASSES: [(i64, bool); 4] = [(0, true), (500, true), (700, false), (1000, false)];

#[derive(Debug, Clone)]
struct World {
    /// GPUs per agent.
    agents: Vec<usize>,
    tasks: Vec<TaskShape>,
    need_gpus: usize,
    need_tasks: usize,
    value: i64,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(1usize..5, 1..5),
        prop::collection::vec((0usize..5, 1usize..3, 0usize..4, 0u8..6, 0u16..100), 0..12),
        1usize..4,
        1usize..3,
        prop_oneof![Just(0i64), Just(500), Just(600), Just(1000)],
    )
        .prop_map(|(agents, tasks, need_gpus, need_tasks, value)| World {
            agents,
            tasks,
            need_gpus,
            need_tasks,
            value,
        })
}

/// The free resources and running candidates a world describes: tasks
/// take GPUs from their agent while it has them (the rest are dropped).
fn build(w: &World) -> (BTreeMap<AgentId, Resources>, Vec<Candidate>) {
    let mut free: BTreeMap<AgentId, Resources> = BTreeMap::new();
    let mut left: Vec<Vec<String>> = Vec::new();
    for (i, &g) in w.agents.iter().enumerate() {
        left.push((0..g).map(|k| format!("a{i}-g{k}")).collect());
    }
    let mut running = Vec::new();
    for (n, &(agent, gpus, class, gang, work)) in w.tasks.iter().enumerate() {
        let agent = agent % w.agents.len();
        if left[agent].len() < gpus {
            continue;
        }
        let taken: Vec<String> = left[agent].drain(..gpus).collect();
        let (value, preemptible) = CLASSES[class];
        running.push(Candidate {
            id: (FrameworkId(format!("f{gang}")), TaskId(format!("t{n}"))),
            gang: format!("g{gang}"),
            agent: AgentId(format!("a{agent}")),
            resources: Resources::parse("cpus:1;mem:64")
                .unwrap()
                .with_set("gpus", taken),
            value,
            preemptible,
            work: work as f64,
            started: n as f64,
        });
    }
    for (i, gpus) in left.into_iter().enumerate() {
        free.insert(
            AgentId(format!("a{i}")),
            Resources::parse("cpus:8;mem:4096")
                .unwrap()
                .with_set("gpus", gpus),
        );
    }
    (free, running)
}

fn freed(
    free: &BTreeMap<AgentId, Resources>,
    running: &[Candidate],
    victims: &BTreeSet<(FrameworkId, TaskId)>,
) -> BTreeMap<AgentId, Resources> {
    let mut f = free.clone();
    for c in running.iter().filter(|c| victims.contains(&c.id)) {
        f.entry(c.agent.clone()).or_default().add(&c.resources);
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn victims_are_eligible_needed_and_enough(w in world()) {
        let (free, running) = build(&w);
        let need = Need {
            per_task: Resources::parse("cpus:1;mem:64").unwrap(),
            gpus: w.need_gpus,
            tasks: w.need_tasks,
        };
        let fits_now = place(&need, &free).is_some();
        let Some(victims) = select_victims(&need, w.value, &free, &running) else {
            // Nothing chosen: it fit already, or would not fit with every
            // eligible gang gone.
            let eligible_gangs: BTreeSet<&str> = running.iter().map(|c| c.gang.as_str()).filter(|g| {
                running.iter().filter(|c| c.gang == *g).all(|c| c.preemptible && c.value < w.value)
            }).collect();
            let all: BTreeSet<_> = running.iter().filter(|c| eligible_gangs.contains(c.gang.as_str())).map(|c| c.id.clone()).collect();
            prop_assert!(fits_now || place(&need, &freed(&free, &running, &all)).is_none());
            return Ok(());
        };
        prop_assert!(!fits_now, "preempted for a demand that fit already");
        prop_assert!(!victims.is_empty());
        let set: BTreeSet<_> = victims.iter().cloned().collect();
        for c in running.iter().filter(|c| set.contains(&c.id)) {
            prop_assert!(c.preemptible, "{:?} is not preemptible", c.id);
            prop_assert!(c.value < w.value, "{:?} is not of a lower class", c.id);
        }
        // Whole gangs only.
        for c in &running {
            let gang_hit = running.iter().any(|o| o.gang == c.gang && set.contains(&o.id));
            prop_assert_eq!(gang_hit, set.contains(&c.id), "gang {} taken in part", &c.gang);
        }
        // Enough, and no gang could be spared.
        prop_assert!(place(&need, &freed(&free, &running, &set)).is_some());
        let gangs: BTreeSet<&str> = running.iter().filter(|c| set.contains(&c.id)).map(|c| c.gang.as_str()).collect();
        for g in gangs {
            let fewer: BTreeSet<_> = running.iter().filter(|c| set.contains(&c.id) && c.gang != g).map(|c| c.id.clone()).collect();
            prop_assert!(place(&need, &freed(&free, &running, &fewer)).is_none(), "gang {} was not needed", g);
        }
    }

    #[test]
    fn queue_order_is_total_and_class_first(
        ws in prop::collection::vec((prop_oneof![Just(0i64), Just(500), Just(1000)], 0f64..1e6, 0f64..100.0), 2..20)
    ) {
        let mut q: Vec<Waiting> = ws.iter().enumerate().map(|(i, &(value, attained, since))| Waiting {
            value, attained, since, key: format!("d{i}"),
        }).collect();
        q.sort_by(queue_order);
        for pair in q.windows(2) {
            prop_assert!(pair[0].value >= pair[1].value);
            if pair[0].value == pair[1].value {
                prop_assert!(las_queue(pair[0].attained) <= las_queue(pair[1].attained));
            }
            prop_assert_ne!(queue_order(&pair[0], &pair[1]), std::cmp::Ordering::Greater);
        }
    }
}
