//! The scheduling core of a trace replay (`mezz sim replay`), sans-I/O:
//! which waiting jobs start where and which running jobs are preempted,
//! given trace time and the GPUs free on each agent; and the end-of-run
//! report. The framework shell that feeds it offers and status updates is
//! [`crate::replay_run`].
//!
//! The policies are those of the reference simulator the replay is judged
//! against (`baseline_sim.py` of the Pollux traces), so the two compare:
//!
//! - FIFO first-fit: jobs in arrival order, every one that fits starts
//!   (backfill without reservation);
//! - SJF first-fit: the same scan by increasing duration (oracle lengths);
//! - LAS: the Pollux artifact's Tiresias, discretised
//!   least-attained-service with preemption: a job moves down a queue each
//!   time the GPU-seconds it has held cross one of the thresholds, FIFO
//!   inside each queue, admission by GPU count with skip-ahead, and running
//!   jobs not admitted are preempted (they keep their progress). With one
//!   threshold of 16 GPU-hours it is the reference's two-queue Tiresias;
//!   the default adds a first threshold at 3 GPU-hours (see
//!   [`DEFAULT_LAS_THRESHOLDS_GPU_H`]).
//!
//! Placement is "spread": a job of up to one node's GPUs goes to the
//! best-fitting single agent, a larger one (or one no agent holds whole)
//! to the agents with the most free GPUs first. A job is a gang: one task
//! per agent it spans, all launched together.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::trace::Job;

/// The LAS queues' thresholds, in GPU-hours of attained service: three
/// queues, split at 3 and 16 GPU-hours. The reference's Tiresias has one
/// queue boundary (16 GPU-hours); the second, earlier one separates the
/// short runs of the mid-sized applications from the long ones, so that a
/// job of a few GPU-hours no longer waits behind every job that has held
/// less than 16 (BENCHMARKS.md, "Trace replay", has the figures).
pub const DEFAULT_LAS_THRESHOLDS_GPU_H: [f64; 2] = [3.0, 16.0];

/// In which order waiting jobs are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Arrival order, first-fit.
    Fifo,
    /// Shortest duration first, first-fit.
    Sjf,
    /// Multi-queue least attained service with preemption (Tiresias).
    Las,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fifo" => Ok(Policy::Fifo),
            "sjf" => Ok(Policy::Sjf),
            "las" => Ok(Policy::Las),
            _ => Err(format!("unknown policy '{s}'; use fifo, sjf or las")),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Fifo => "fifo",
            Policy::Sjf => "sjf",
            Policy::Las => "las",
        })
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Not arrived yet.
    Future,
    /// Arrived, holds nothing.
    Waiting,
    /// Launched at trace time `since` on `(agent, gpus)` parts.
    Running {
        /// Trace seconds when launched.
        since: f64,
    },
    /// Being killed (preempted); holds its GPUs until its tasks end.
    Stopping,
    /// Ended at trace time `at`.
    Done {
        /// Trace seconds.
        at: f64,
    },
}

/// One job as the planner tracks it.
#[derive(Debug, Clone)]
pub struct JobState {
    /// The trace's job.
    pub job: Job,
    /// Where it is.
    pub phase: Phase,
    /// Work left, trace seconds.
    pub remaining_s: f64,
    /// Trace seconds it held GPUs, all runs (Tiresias's attained service
    /// is this times its GPUs).
    pub executed_s: f64,
    /// First launch, trace seconds.
    pub first_start: Option<f64>,
    /// Times it was preempted.
    pub preemptions: u32,
    /// Tiresias queue: 0 is the first (least attained service).
    pub queue: usize,
}

/// What to do now.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decision {
    /// Jobs to launch, each with its parts: (agent, GPUs there).
    pub start: Vec<(usize, Vec<(String, usize)>)>,
    /// Running jobs to preempt.
    pub preempt: Vec<usize>,
}

/// The replay's scheduler state machine. Indices are positions in the
/// job list given to [`Planner::new`].
#[derive(Debug, Clone)]
pub struct Planner {
    policy: Policy,
    gpus_per_node: usize,
    total_gpus: usize,
    /// Ascending; a job in queue `k` moves to `k + 1` once it has held
    /// `las_thresholds_gpu_s[k]` GPU-seconds.
    las_thresholds_gpu_s: Vec<f64>,
    /// All jobs, in arrival order.
    pub jobs: Vec<JobState>,
    /// The LAS queues, first (least attained) first; each in FIFO order.
    queues: Vec<Vec<usize>>,
    next_arrival: usize,
}

impl Planner {
    /// A planner for `jobs` (sorted by arrival) on `total_gpus` GPUs,
    /// `gpus_per_node` per agent; `las_thresholds_gpu_s` are the LAS
    /// queues' boundaries in GPU-seconds (sorted here; ignored by FIFO and
    /// SJF).
    pub fn new(
        jobs: Vec<Job>,
        policy: Policy,
        total_gpus: usize,
        gpus_per_node: usize,
        las_thresholds_gpu_s: &[f64],
    ) -> Self {
        let mut thresholds = las_thresholds_gpu_s.to_vec();
        thresholds.sort_by(f64::total_cmp);
        let jobs = jobs
            .into_iter()
            .map(|job| JobState {
                remaining_s: job.duration_s,
                job,
                phase: Phase::Future,
                executed_s: 0.0,
                first_start: None,
                preemptions: 0,
                queue: 0,
            })
            .collect();
        Planner {
            policy,
            gpus_per_node: gpus_per_node.max(1),
            total_gpus,
            queues: vec![Vec::new(); thresholds.len() + 1],
            las_thresholds_gpu_s: thresholds,
            jobs,
            next_arrival: 0,
        }
    }

    /// Trace time of the next arrival, if any.
    pub fn next_arrival(&self) -> Option<f64> {
        self.jobs.get(self.next_arrival).map(|j| j.job.arrival_s)
    }

    /// Whether every job has ended.
    pub fn all_done(&self) -> bool {
        self.jobs
            .iter()
            .all(|j| matches!(j.phase, Phase::Done { .. }))
    }

    /// Jobs that arrived and hold nothing, in index order.
    pub fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.jobs.len()).filter(|&i| self.jobs[i].phase == Phase::Waiting)
    }

    fn admit(&mut self, now: f64) {
        while let Some(j) = self.jobs.get_mut(self.next_arrival) {
            if j.job.arrival_s > now {
                break;
            }
            j.phase = Phase::Waiting;
            self.queues[0].push(self.next_arrival);
            self.next_arrival += 1;
        }
    }

    /// Trace time of the next moment a running job's attained service
    /// crosses its LAS queue's threshold (a decision is due then), if any.
    pub fn next_demotion(&self, now: f64) -> Option<f64> {
        if self.policy != Policy::Las {
            return None;
        }
        let mut next: Option<f64> = None;
        for (k, &limit) in self.las_thresholds_gpu_s.iter().enumerate() {
            for &i in &self.queues[k] {
                let j = &self.jobs[i];
                if !matches!(j.phase, Phase::Running { .. }) || j.job.gpus == 0 {
                    continue;
                }
                let left = limit / j.job.gpus as f64 - self.executed(i, now);
                let at = now + left.max(0.0);
                next = Some(next.map_or(at, |n: f64| n.min(at)));
            }
        }
        next
    }

    /// Trace seconds `i` has held GPUs, up to `now`.
    fn executed(&self, i: usize, now: f64) -> f64 {
        let j = &self.jobs[i];
        match j.phase {
            Phase::Running { since } => j.executed_s + (now - since).max(0.0),
            _ => j.executed_s,
        }
    }

    /// Decides what to do at trace time `now` with `free` GPUs per agent
    /// (agents in id order; what launches and kills are under way hold is
    /// not in it). The caller carries out the decision and reports back
    /// with [`Planner::started`], [`Planner::ended`] and [`Planner::stopped`].
    pub fn plan(&mut self, now: f64, free: &BTreeMap<String, usize>) -> Decision {
        self.admit(now);
        let mut free = free.clone();
        let mut d = Decision::default();
        match self.policy {
            Policy::Fifo | Policy::Sjf => {
                let mut order: Vec<usize> = self.waiting().collect();
                if self.policy == Policy::Sjf {
                    order.sort_by(|&a, &b| {
                        self.jobs[a]
                            .job
                            .duration_s
                            .total_cmp(&self.jobs[b].job.duration_s)
                            .then(a.cmp(&b))
                    });
                }
                for i in order {
                    if free.values().all(|&f| f == 0) {
                        break;
                    }
                    if let Some(parts) = place(self.jobs[i].job.gpus, self.gpus_per_node, &mut free)
                    {
                        d.start.push((i, parts));
                    }
                }
            }
            Policy::Las => {
                // Demote running jobs past their queue's threshold, as far
                // down as their attained service takes them.
                for k in 0..self.las_thresholds_gpu_s.len() {
                    let demote: Vec<usize> = self.queues[k]
                        .iter()
                        .copied()
                        .filter(|&i| {
                            matches!(self.jobs[i].phase, Phase::Running { .. })
                                && self.executed(i, now) * self.jobs[i].job.gpus as f64
                                    >= self.las_thresholds_gpu_s[k] - 1e-6
                        })
                        .collect();
                    for i in demote {
                        self.queues[k].retain(|&x| x != i);
                        self.queues[k + 1].push(i);
                        self.jobs[i].queue = k + 1;
                    }
                }
                let mut cap = self.total_gpus;
                let mut want = Vec::new();
                for &i in self.queues.iter().flatten() {
                    let g = self.jobs[i].job.gpus;
                    if g <= cap {
                        want.push(i);
                        cap -= g;
                    }
                }
                for &i in self.queues.iter().flatten() {
                    if matches!(self.jobs[i].phase, Phase::Running { .. }) && !want.contains(&i) {
                        d.preempt.push(i);
                    }
                }
                for i in want {
                    if self.jobs[i].phase != Phase::Waiting {
                        continue;
                    }
                    if let Some(parts) = place(self.jobs[i].job.gpus, self.gpus_per_node, &mut free)
                    {
                        d.start.push((i, parts));
                    }
                }
            }
        }
        d
    }

    /// Job `i` was launched at `now`.
    pub fn started(&mut self, i: usize, now: f64) {
        let j = &mut self.jobs[i];
        j.first_start.get_or_insert(now);
        j.phase = Phase::Running { since: now };
    }

    /// Job `i` is being preempted at `now`: its work so far is kept.
    pub fn stopping(&mut self, i: usize, now: f64) {
        let j = &mut self.jobs[i];
        if let Phase::Running { since } = j.phase {
            let ran = (now - since).max(0.0);
            j.executed_s += ran;
            j.remaining_s = (j.remaining_s - ran).max(0.0);
            j.preemptions += 1;
            j.phase = Phase::Stopping;
        }
    }

    /// Job `i`'s tasks all ended without finishing (after a preemption,
    /// or one of its tasks was killed or lost): it waits again with the
    /// work it has left, in its place in its queue.
    pub fn stopped(&mut self, i: usize, now: f64) {
        if matches!(self.jobs[i].phase, Phase::Running { .. }) {
            self.stopping(i, now);
        }
        self.jobs[i].phase = Phase::Waiting;
    }

    /// Job `i` finished at `now`.
    pub fn ended(&mut self, i: usize, now: f64) {
        let j = &mut self.jobs[i];
        if let Phase::Running { since } = j.phase {
            j.executed_s += (now - since).max(0.0);
        }
        j.remaining_s = 0.0;
        j.phase = Phase::Done { at: now };
        for q in &mut self.queues {
            q.retain(|&x| x != i);
        }
    }

    /// The report of a finished replay.
    pub fn report(&self) -> Report {
        report(&self.jobs, self.total_gpus)
    }
}

/// Takes `g` GPUs out of `free` the way the reference simulator's "spread"
/// placement does; `None` (and `free` untouched) when they are not free.
///
/// ```
/// use std::collections::BTreeMap;
/// let mut free: BTreeMap<String, usize> = [("a".into(), 4), ("b".into(), 2)].into();
/// // Best fit: the agent with the fewest free GPUs that holds the job.
/// assert_eq!(mezz_sim::replay::place(2, 4, &mut free), Some(vec![("b".into(), 2)]));
/// assert_eq!(mezz_sim::replay::place(5, 4, &mut free), None);
/// ```
pub fn place(
    g: usize,
    gpus_per_node: usize,
    free: &mut BTreeMap<String, usize>,
) -> Option<Vec<(String, usize)>> {
    if g > free.values().sum::<usize>() {
        return None;
    }
    if g <= gpus_per_node {
        let best = free
            .iter()
            .filter(|(_, &f)| f >= g)
            .min_by_key(|(_, &f)| f)
            .map(|(a, _)| a.clone());
        if let Some(a) = best {
            *free.get_mut(&a)? -= g;
            return Some(vec![(a, g)]);
        }
    }
    let mut order: Vec<(String, usize)> = free.iter().map(|(a, &f)| (a.clone(), f)).collect();
    // Most free first; ties by id (stable sort keeps id order).
    order.sort_by_key(|o| std::cmp::Reverse(o.1));
    let mut parts = Vec::new();
    let mut need = g;
    for (a, f) in order {
        if need == 0 {
            break;
        }
        let take = f.min(need);
        if take > 0 {
            parts.push((a.clone(), take));
            need -= take;
            if let Some(x) = free.get_mut(&a) {
                *x -= take;
            }
        }
    }
    Some(parts)
}

/// The end-of-run numbers, in trace seconds (`mezz sim replay --json`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// Jobs in the trace.
    pub jobs: usize,
    /// Jobs that ended.
    pub finished: usize,
    /// Mean job completion time: arrival to end, queueing, launch and
    /// preemption costs included.
    pub avg_jct_s: f64,
    /// Median JCT.
    pub p50_jct_s: f64,
    /// 99th percentile JCT (nearest rank).
    pub p99_jct_s: f64,
    /// Longest JCT.
    pub max_jct_s: f64,
    /// First arrival to last end.
    pub makespan_s: f64,
    /// GPU-seconds of work done / (GPUs x makespan).
    pub gpu_util: f64,
    /// Mean arrival → first launch.
    pub avg_queue_s: f64,
    /// Preemptions, all jobs.
    pub preemptions: u64,
}

fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((p / 100.0 * sorted.len() as f64).ceil() as usize).max(1);
    sorted[k.min(sorted.len()) - 1]
}

/// The report of `jobs` on `total_gpus` GPUs (jobs not done are left out
/// of the times and counted as not finished).
pub fn report(jobs: &[JobState], total_gpus: usize) -> Report {
    let mut jct = Vec::new();
    let mut queue = Vec::new();
    let (mut t0, mut t1, mut work) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    let mut preemptions = 0;
    for j in jobs {
        preemptions += u64::from(j.preemptions);
        t0 = t0.min(j.job.arrival_s);
        if let Phase::Done { at } = j.phase {
            jct.push(at - j.job.arrival_s);
            queue.push(j.first_start.unwrap_or(at) - j.job.arrival_s);
            t1 = t1.max(at);
            work += j.job.duration_s * j.job.gpus as f64;
        }
    }
    jct.sort_by(f64::total_cmp);
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let makespan = if jct.is_empty() { 0.0 } else { t1 - t0 };
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Report {
        jobs: jobs.len(),
        finished: jct.len(),
        avg_jct_s: round(mean(&jct)),
        p50_jct_s: round(nearest_rank(&jct, 50.0)),
        p99_jct_s: round(nearest_rank(&jct, 99.0)),
        max_jct_s: round(jct.last().copied().unwrap_or(0.0)),
        makespan_s: round(makespan),
        gpu_util: if makespan > 0.0 && total_gpus > 0 {
            (work / (total_gpus as f64 * makespan) * 10_000.0).round() / 10_000.0
        } else {
            0.0
        },
        avg_queue_s: round(mean(&queue)),
        preemptions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, at: f64, gpus: usize, dur: f64) -> Job {
        Job {
            name: name.into(),
            arrival_s: at,
            gpus,
            duration_s: dur,
        }
    }

    fn free(v: &[usize]) -> BTreeMap<String, usize> {
        v.iter()
            .enumerate()
            .map(|(i, &f)| (format!("a{i}"), f))
            .collect()
    }

    /// Runs the planner as an ideal shell would: launches and kills take
    /// no time, events in time order. Returns the report.
    fn simulate(jobs: Vec<Job>, policy: Policy, nodes: usize, gpn: usize) -> Report {
        let mut p = Planner::new(jobs, policy, nodes * gpn, gpn, &[16.0 * 3600.0]);
        run_ideal(&mut p, nodes, gpn)
    }

    fn run_ideal(p: &mut Planner, nodes: usize, gpn: usize) -> Report {
        let mut held: BTreeMap<usize, Vec<(String, usize)>> = BTreeMap::new();
        let mut fr = free(&vec![gpn; nodes]);
        let mut now = 0.0;
        for _ in 0..10_000 {
            let d = p.plan(now, &fr);
            let preempted = !d.preempt.is_empty();
            for i in d.preempt {
                p.stopping(i, now);
                for (a, g) in held.remove(&i).unwrap() {
                    *fr.get_mut(&a).unwrap() += g;
                }
                p.stopped(i, now);
            }
            let d2 = if preempted {
                p.plan(now, &fr).start
            } else {
                d.start
            };
            for (i, parts) in d2 {
                for (a, g) in &parts {
                    *fr.get_mut(a).unwrap() -= g;
                }
                held.insert(i, parts);
                p.started(i, now);
            }
            if p.all_done() {
                break;
            }
            // Next event: an arrival or an end.
            let ends = held.keys().map(|&i| match p.jobs[i].phase {
                Phase::Running { since } => since + p.jobs[i].remaining_s,
                _ => f64::INFINITY,
            });
            let next = ends
                .chain(p.next_arrival())
                .chain(p.next_demotion(now))
                .fold(f64::INFINITY, f64::min);
            now = next;
            let done: Vec<usize> = held
                .keys()
                .copied()
                .filter(|&i| matches!(p.jobs[i].phase, Phase::Running { since } if since + p.jobs[i].remaining_s <= now + 1e-9))
                .collect();
            for i in done {
                for (a, g) in held.remove(&i).unwrap() {
                    *fr.get_mut(&a).unwrap() += g;
                }
                p.ended(i, now);
            }
        }
        p.report()
    }

    #[test]
    fn spread_placement_is_best_fit_then_most_free() {
        let mut f = free(&[4, 1, 3, 4]);
        assert_eq!(place(1, 4, &mut f), Some(vec![("a1".into(), 1)]));
        assert_eq!(place(3, 4, &mut f), Some(vec![("a2".into(), 3)]));
        assert_eq!(
            place(6, 4, &mut f),
            Some(vec![("a0".into(), 4), ("a3".into(), 2)])
        );
        assert_eq!(f, free(&[0, 0, 0, 2]));
        assert_eq!(place(3, 4, &mut f), None);
        // A job of one node's size spans two when no single one holds it.
        let mut f = free(&[2, 3]);
        assert_eq!(
            place(4, 4, &mut f),
            Some(vec![("a1".into(), 3), ("a0".into(), 1)])
        );
    }

    #[test]
    fn fifo_backfills_and_sjf_runs_the_short_first() {
        // 4 GPUs: a big job holds 3, then a 2-GPU job and a 1-GPU job
        // queue; first-fit lets the 1-GPU one pass.
        let jobs = vec![
            job("big", 0.0, 3, 100.0),
            job("two", 1.0, 2, 10.0),
            job("one", 2.0, 1, 10.0),
        ];
        let r = simulate(jobs.clone(), Policy::Fifo, 1, 4);
        // big 100, two 1→110 = 109, one 2→12 = 10.
        assert_eq!(
            r.avg_jct_s,
            ((100.0 + 109.0 + 10.0) / 3.0 * 100.0_f64).round() / 100.0
        );
        let jobs = vec![
            job("long", 0.0, 4, 100.0),
            job("mid", 1.0, 4, 50.0),
            job("short", 2.0, 4, 10.0),
        ];
        let fifo = simulate(jobs.clone(), Policy::Fifo, 1, 4);
        let sjf = simulate(jobs, Policy::Sjf, 1, 4);
        assert_eq!(fifo.max_jct_s, 158.0);
        assert!(sjf.avg_jct_s < fifo.avg_jct_s, "{sjf:?} vs {fifo:?}");
    }

    #[test]
    fn las_preempts_a_demoted_job_for_a_new_one_and_keeps_its_progress() {
        // Threshold 16 GPU-hours: a 4-GPU job is demoted after 4 h.
        let jobs = vec![
            job("long", 0.0, 4, 10.0 * 3600.0),
            job("new", 5.0 * 3600.0, 4, 600.0),
        ];
        let r = simulate(jobs, Policy::Las, 1, 4);
        assert_eq!(r.preemptions, 1);
        // "new" runs at once; "long" ends 600 s late.
        assert_eq!(r.max_jct_s, 10.0 * 3600.0 + 600.0);
        assert_eq!(r.p50_jct_s, 600.0);
    }

    #[test]
    fn las_before_demotion_is_fifo_with_skip_ahead() {
        let jobs = vec![
            job("a", 0.0, 3, 100.0),
            job("b", 1.0, 2, 10.0),
            job("c", 2.0, 1, 10.0),
        ];
        assert_eq!(
            simulate(jobs.clone(), Policy::Las, 1, 4).avg_jct_s,
            simulate(jobs, Policy::Fifo, 1, 4).avg_jct_s
        );
    }

    #[test]
    fn the_report_uses_nearest_rank_and_useful_work() {
        let mut p = Planner::new(
            vec![job("a", 0.0, 2, 10.0), job("b", 0.0, 2, 30.0)],
            Policy::Fifo,
            4,
            4,
            &[1.0],
        );
        p.plan(0.0, &free(&[4]));
        p.started(0, 0.0);
        p.started(1, 0.0);
        p.ended(0, 10.0);
        p.ended(1, 30.0);
        let r = p.report();
        assert_eq!((r.avg_jct_s, r.p99_jct_s, r.makespan_s), (20.0, 30.0, 30.0));
        assert_eq!(
            r.gpu_util,
            ((20.0 + 60.0) / (4.0 * 30.0) * 10_000.0_f64).round() / 10_000.0
        );
    }

    #[test]
    fn las_moves_a_job_down_one_queue_per_threshold() {
        // Thresholds at 1 and 4 GPU-hours on one 4-GPU node. "long" holds
        // 4 GPUs: second queue at 15 min. "mid" arrives at 30 min, in the
        // first queue, and preempts it; at 45 min "mid" reaches the second
        // queue too, behind "long", which takes the node back. At 75 min
        // "long" has held 4 GPU-hours and drops to the third queue: "mid"
        // preempts it again and runs its last 35 min; "long" ends last.
        let jobs = vec![
            job("long", 0.0, 4, 2.0 * 3600.0),
            job("mid", 1800.0, 4, 3000.0),
        ];
        let mut p = Planner::new(jobs, Policy::Las, 4, 4, &[3600.0, 4.0 * 3600.0]);
        let r = run_ideal(&mut p, 1, 4);
        assert_eq!((p.jobs[0].queue, p.jobs[1].queue), (2, 1));
        assert_eq!((p.jobs[0].preemptions, p.jobs[1].preemptions), (2, 1));
        assert_eq!(p.jobs[1].phase, Phase::Done { at: 110.0 * 60.0 });
        assert_eq!(r.makespan_s, 170.0 * 60.0);
        // One threshold is the reference's two queues.
        let mut p = Planner::new(
            vec![job("a", 0.0, 4, 10.0 * 3600.0)],
            Policy::Las,
            4,
            4,
            &[16.0 * 3600.0],
        );
        run_ideal(&mut p, 1, 4);
        assert_eq!(p.jobs[0].queue, 1);
    }

    fn reference_rows() -> Option<Vec<serde_json::Value>> {
        let traces = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
        let Ok(baseline) = std::fs::read_to_string(traces.join("results/baseline.jsonl")) else {
            eprintln!("skipped: no traces at {}", traces.display());
            return None;
        };
        Some(
            baseline
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        )
    }

    fn tuned_workload(f: usize) -> Vec<Job> {
        let traces = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
        let text =
            std::fs::read_to_string(traces.join(format!("resolved/workloads/workload-{f}.csv")))
                .unwrap();
        crate::trace::parse(&text).unwrap()
    }

    /// With instant launches and free preemption (the reference's
    /// mechanics), the default three LAS queues beat the reference's
    /// two-queue Tiresias on the mean of the 8 tuned workloads' average
    /// JCT (3,426 s against 3,776 s), the figure the replay through the
    /// master is judged on.
    #[test]
    fn three_las_queues_beat_the_reference_tiresias_on_the_tuned_workloads() {
        if reference_rows().is_none() {
            return;
        }
        let mean = |thresholds: &[f64]| {
            (1..=8)
                .map(|f| {
                    let mut p = Planner::new(tuned_workload(f), Policy::Las, 64, 4, thresholds);
                    run_ideal(&mut p, 16, 4).avg_jct_s
                })
                .sum::<f64>()
                / 8.0
        };
        let reference = mean(&[16.0 * 3600.0]);
        let default: Vec<f64> = DEFAULT_LAS_THRESHOLDS_GPU_H
            .iter()
            .map(|h| h * 3600.0)
            .collect();
        let ours = mean(&default);
        assert!((reference - 3776.0).abs() < 1.0, "{reference}");
        assert!(ours < 3450.0, "{ours} against the reference's {reference}");
    }

    /// With launches that take no time, the planner is the reference
    /// simulator (`baseline_sim.py` of the Pollux traces, beside the
    /// repository): same FIFO and SJF first-fit schedules, and the same
    /// two-queue Tiresias, on the 8 tuned workloads, to the second.
    /// Skipped where the traces are missing.
    #[test]
    fn fifo_sjf_and_tiresias_reproduce_the_reference_simulator() {
        let Some(reference) = reference_rows() else {
            return;
        };
        for f in 1..=8 {
            let name = format!("workloads/workload-{f}.csv");
            let jobs = tuned_workload(f);
            for (policy, theirs) in [
                (Policy::Fifo, "fifo-firstfit"),
                (Policy::Sjf, "sjf-firstfit"),
                (Policy::Las, "tiresias"),
            ] {
                let want = reference
                    .iter()
                    .find(|v| {
                        v["workload"] == name.as_str()
                            && v["policy"] == theirs
                            && v["placement"] == "spread"
                            && v["interval_s"].as_f64() == Some(0.0)
                            && v["restart_overhead_s"].as_f64() == Some(0.0)
                    })
                    .unwrap();
                let mut p = Planner::new(jobs.clone(), policy, 64, 4, &[16.0 * 3600.0]);
                let got = run_ideal(&mut p, 16, 4);
                for key in ["avg_jct_s", "p99_jct_s", "makespan_s"] {
                    let w = want[key].as_f64().unwrap();
                    let g = serde_json::to_value(&got).unwrap()[key].as_f64().unwrap();
                    assert!(
                        (g - w).abs() < 0.01,
                        "{name} {policy} {key}: {g} vs the reference's {w}"
                    );
                }
            }
        }
    }
}
