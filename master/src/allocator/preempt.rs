//! Preemption and the cluster-wide queue order, as pure functions: which
//! running tasks to revoke so that a waiting demand of a higher priority
//! class fits (Mesos's revocable resources, Nomad's preemption), and in
//! which order waiting demands are served. No clock, no I/O: the cluster
//! state machine passes in what is free, what runs and the time, and
//! carries out the kills itself.
//!
//! What a task needs is checked with [`Resources::contains`], the one
//! definition of "fits", over the scalars; GPUs are named devices, and a
//! task asking for `n` of them fits on an agent with `n` free.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use mezz_proto::{AgentId, FrameworkId, Resources, TaskId};

/// The name of the GPU set resource.
const GPUS: &str = "gpus";

/// What a waiting demand needs: `tasks` tasks of `per_task` scalars and
/// `gpus` GPUs each, every task on one agent, all placed together.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// Scalars per task (cpus, mem, disk); no GPUs.
    pub per_task: Resources,
    /// GPUs per task, from one agent.
    pub gpus: usize,
    /// Tasks of the gang (at least 1).
    pub tasks: usize,
}

/// A running task that might be preempted.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Which task.
    pub id: (FrameworkId, TaskId),
    /// Tasks with the same gang key are preempted together.
    pub gang: String,
    /// Where it runs.
    pub agent: AgentId,
    /// What it holds (its GPUs by name).
    pub resources: Resources,
    /// Its priority class's value.
    pub value: i64,
    /// Whether its class may be preempted.
    pub preemptible: bool,
    /// Work lost if it is killed now (GPU-seconds, or seconds for a task
    /// without GPUs: how long it ran times what it holds).
    pub work: f64,
    /// When it started (any monotonic unit; larger is younger).
    pub started: f64,
}

/// Where each task of a [`Need`] would go, when it fits in `free`:
/// first-fit over agents in id order.
pub fn place(need: &Need, free: &BTreeMap<AgentId, Resources>) -> Option<Vec<AgentId>> {
    let mut free: BTreeMap<&AgentId, Resources> =
        free.iter().map(|(a, r)| (a, r.unreserved())).collect();
    let mut placed = Vec::with_capacity(need.tasks.max(1));
    for _ in 0..need.tasks.max(1) {
        let (agent, left) = free
            .iter_mut()
            .find(|(_, r)| r.contains(&need.per_task) && r.set_len(GPUS) >= need.gpus)?;
        let gpus: Vec<String> = left
            .set_items(GPUS)
            .into_iter()
            .take(need.gpus)
            .map(str::to_string)
            .collect();
        let taken = need.per_task.clone().with_set(GPUS, gpus);
        left.subtract(&taken);
        placed.push((*agent).clone());
    }
    Some(placed)
}

/// One gang of candidates, in victim order.
#[derive(Debug, Clone)]
struct Gang {
    members: Vec<usize>,
    /// The highest class among its members: a gang is no cheaper than its
    /// most important task.
    value: i64,
    work: f64,
    /// Its youngest member's start.
    started: f64,
}

/// Victim order: lowest class first, then least work lost, then youngest,
/// then by id (deterministic).
fn victim_order(a: &Gang, b: &Gang, key: impl Fn(&Gang) -> String) -> Ordering {
    a.value
        .cmp(&b.value)
        .then(a.work.total_cmp(&b.work))
        .then(b.started.total_cmp(&a.started))
        .then_with(|| key(a).cmp(&key(b)))
}

/// The running tasks to preempt so that `need`, of class `value`, fits:
/// `None` when it fits already (nothing to do) or would not fit even with
/// every eligible task gone (preempting would be waste). Eligible are the
/// preemptible tasks of a strictly lower class; a gang is taken whole and
/// only when all its members are eligible. Gangs are taken in victim
/// order (class, then least work lost, then youngest) until the need
/// fits; then any gang not needed after all is given back, so that no
/// victim could be spared.
pub fn select_victims(
    need: &Need,
    value: i64,
    free: &BTreeMap<AgentId, Resources>,
    candidates: &[Candidate],
) -> Option<Vec<(FrameworkId, TaskId)>> {
    if place(need, free).is_some() {
        return None;
    }
    let mut gangs: BTreeMap<&str, Gang> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        let g = gangs.entry(c.gang.as_str()).or_insert(Gang {
            members: Vec::new(),
            value: i64::MIN,
            work: 0.0,
            started: f64::MIN,
        });
        g.members.push(i);
        g.value = g.value.max(if c.preemptible { c.value } else { i64::MAX });
        g.work += c.work;
        g.started = g.started.max(c.started);
    }
    let key = |g: &Gang| candidates[g.members[0]].gang.clone();
    let mut eligible: Vec<Gang> = gangs.into_values().filter(|g| g.value < value).collect();
    eligible.sort_by(|a, b| victim_order(a, b, key));
    let with = |chosen: &[&Gang]| {
        let mut f = free.clone();
        for g in chosen {
            for &i in &g.members {
                let c = &candidates[i];
                f.entry(c.agent.clone()).or_default().add(&c.resources);
            }
        }
        f
    };
    let all: Vec<&Gang> = eligible.iter().collect();
    place(need, &with(&all))?;
    let mut chosen: Vec<&Gang> = Vec::new();
    for g in &eligible {
        chosen.push(g);
        if place(need, &with(&chosen)).is_some() {
            break;
        }
    }
    // Spare what the fit does not need, most valuable first.
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        let mut without = chosen.clone();
        without.remove(i);
        if place(need, &with(&without)).is_some() {
            chosen = without;
        }
    }
    let mut victims: Vec<(FrameworkId, TaskId)> = chosen
        .iter()
        .flat_map(|g| g.members.iter().map(|&i| candidates[i].id.clone()))
        .collect();
    victims.sort();
    Some(victims)
}

/// Tiresias's discretized least-attained-service: attained GPU-seconds
/// fall into queues at these thresholds; within a priority class a lower
/// queue goes first, and within a queue the older demand.
pub const LAS_THRESHOLDS: [f64; 3] = [3_600.0, 36_000.0, 360_000.0];

/// The LAS queue of `attained` GPU-seconds (0 is the first).
pub fn las_queue(attained: f64) -> usize {
    LAS_THRESHOLDS
        .iter()
        .take_while(|&&t| attained >= t)
        .count()
}

/// A waiting demand as the queue order sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// The class's value.
    pub value: i64,
    /// GPU-seconds its framework attained so far.
    pub attained: f64,
    /// When it started waiting (any monotonic unit).
    pub since: f64,
    /// A unique, stable key (framework and demand id).
    pub key: String,
}

/// The cluster-wide queue order: higher class first, then the lower LAS
/// queue, then the one waiting longest, then by key.
pub fn queue_order(a: &Waiting, b: &Waiting) -> Ordering {
    b.value
        .cmp(&a.value)
        .then(las_queue(a.attained).cmp(&las_queue(b.attained)))
        .then(a.since.total_cmp(&b.since))
        .then_with(|| a.key.cmp(&b.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(names: &[&str]) -> Resources {
        Resources::parse("cpus:1;mem:128")
            .unwrap()
            .with_set(GPUS, names.iter().copied())
    }

    fn cand(task: &str, agent: &str, value: i64, preemptible: bool, g: &[&str]) -> Candidate {
        Candidate {
            id: (FrameworkId(format!("f-{task}")), TaskId(task.into())),
            gang: task.into(),
            agent: AgentId(agent.into()),
            resources: gpus(g),
            value,
            preemptible,
            work: 10.0,
            started: 0.0,
        }
    }

    fn need(gpus: usize, tasks: usize) -> Need {
        Need {
            per_task: Resources::parse("cpus:1;mem:128").unwrap(),
            gpus,
            tasks,
        }
    }

    fn empty(agents: &[&str]) -> BTreeMap<AgentId, Resources> {
        agents
            .iter()
            .map(|a| (AgentId((*a).into()), Resources::new()))
            .collect()
    }

    #[test]
    fn lowest_class_goes_first_and_the_protected_never() {
        let running = vec![
            cand("batch", "a1", 500, true, &["g0", "g1"]),
            cand("best", "a2", 0, true, &["g2", "g3"]),
            cand("prod", "a3", 1000, false, &["g4", "g5"]),
        ];
        let v = select_victims(&need(2, 1), 1000, &empty(&["a1", "a2", "a3"]), &running);
        assert_eq!(
            v,
            Some(vec![(FrameworkId("f-best".into()), TaskId("best".into()))])
        );
        // Three agents' worth cannot be had without the production task.
        assert_eq!(
            select_victims(&need(2, 3), 1000, &empty(&["a1", "a2", "a3"]), &running),
            None
        );
    }

    #[test]
    fn least_work_lost_then_youngest() {
        let mut old = cand("old", "a1", 0, true, &["g0"]);
        old.work = 100.0;
        let mut young = cand("young", "a2", 0, true, &["g1"]);
        young.work = 100.0;
        young.started = 50.0;
        let mut cheap = cand("cheap", "a3", 0, true, &["g2"]);
        cheap.work = 1.0;
        let free = empty(&["a1", "a2", "a3"]);
        let running = vec![old, young, cheap.clone()];
        let v = select_victims(&need(1, 1), 500, &free, &running).unwrap();
        assert_eq!(v[0].1 .0, "cheap");
        let v = select_victims(&need(1, 1), 500, &free, &running[..2]).unwrap();
        assert_eq!(v[0].1 .0, "young");
    }

    #[test]
    fn a_gang_goes_whole() {
        let mut a = cand("w0", "a1", 0, true, &["g0"]);
        let mut b = cand("w1", "a2", 0, true, &["g1"]);
        a.gang = "job".into();
        b.gang = "job".into();
        let v = select_victims(&need(1, 1), 500, &empty(&["a1", "a2"]), &[a, b]).unwrap();
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn nothing_when_it_fits_already() {
        let mut free = empty(&["a1"]);
        free.insert(AgentId("a1".into()), gpus(&["g0"]));
        let running = vec![cand("x", "a1", 0, true, &["g1"])];
        assert_eq!(select_victims(&need(1, 1), 500, &free, &running), None);
    }

    #[test]
    fn queue_goes_by_class_then_attained_then_age() {
        let w = |value, attained, since, key: &str| Waiting {
            value,
            attained,
            since,
            key: key.into(),
        };
        let mut q = [
            w(0, 0.0, 0.0, "best-effort"),
            w(500, 50_000.0, 1.0, "batch-long"),
            w(500, 10.0, 5.0, "batch-new"),
            w(500, 20.0, 2.0, "batch-older"),
            w(1000, 1e9, 9.0, "prod"),
        ];
        q.sort_by(queue_order);
        let keys: Vec<&str> = q.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "prod",
                "batch-older",
                "batch-new",
                "batch-long",
                "best-effort"
            ]
        );
        assert_eq!(
            (las_queue(0.0), las_queue(3_600.0), las_queue(1e9)),
            (0, 1, 3)
        );
    }
}
