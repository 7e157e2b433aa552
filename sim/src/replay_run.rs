//! The replay framework (`mezz sim replay`): one framework on the SDK that
//! submits a trace's jobs at their arrival times divided by the speedup,
//! tells the master what it waits for (`SetDemand`: one demand per waiting
//! job, a gang of one-GPU tasks), launches on the offers it holds as the
//! [`Planner`] decides, and records when each job arrived, started and
//! ended, in trace seconds.
//!
//! It holds every offer it gets (it is the only framework of a replay
//! cluster), so the GPUs in its held offers are exactly the free GPUs of
//! the cluster. A job becomes one task per agent it spans, all launched in
//! one go; tasks carry [`RUN_MS_LABEL`] so simulated agents run them as
//! timers of the job's remaining work divided by the speedup. A job one of
//! whose tasks ends without finishing (KILLED by a preemption, the master's
//! or the planner's, LOST, DROPPED) is stopped whole and waits again with
//! the work it has left.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mezz_sdk::{proto, Driver, FrameworkId, Resources, Scheduler, TaskBuilder, TaskState};

use crate::agent_core::RUN_MS_LABEL;
use crate::replay::{Decision, JobState, Phase, Planner, Policy, Report};
use crate::trace::Job;

/// How often the framework looks at the clock when nothing happens.
const TICK: Duration = Duration::from_millis(2);
/// The longest the planner waits for GPUs known to be free (a task ended
/// on them, or a launch left them) to be offered again.
const REOFFER_WAIT: Duration = Duration::from_millis(100);

/// What to replay, and where.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Master addresses.
    pub masters: Vec<String>,
    /// The trace's jobs, sorted by arrival.
    pub jobs: Vec<Job>,
    /// Trace seconds per real second.
    pub speedup: f64,
    /// How waiting jobs are served.
    pub policy: Policy,
    /// GPUs of the cluster, all agents together.
    pub total_gpus: usize,
    /// GPUs per agent (placement packs this many per agent).
    pub gpus_per_node: usize,
    /// Where the LAS queues split, trace GPU-seconds.
    pub las_thresholds_gpu_s: Vec<f64>,
    /// The framework's name.
    pub name: String,
    /// Presented to the masters when they authenticate.
    pub token: Option<mezz_sdk::Token>,
}

struct Attempt {
    tasks: Vec<String>,
    /// The GPUs of each task, by task id.
    gpus: HashMap<String, Vec<String>>,
    live: usize,
    finished: usize,
    failed: bool,
}

struct Replay {
    planner: Planner,
    speedup: f64,
    origin_trace_s: f64,
    start: Option<Instant>,
    /// Held offers by agent.
    held: BTreeMap<String, Vec<(proto::Offer, Resources)>>,
    /// Task id → (job, attempt number).
    tasks: HashMap<String, (usize, u32)>,
    attempts: HashMap<usize, (u32, Attempt)>,
    demand_sent: Vec<usize>,
    /// GPUs known to be free but not offered again yet, and since when.
    /// The planner waits for them (up to [`REOFFER_WAIT`]): deciding on a
    /// part of what is free favours small jobs over large ones, which
    /// the reference, deciding on everything free at once, does not.
    reoffer: HashMap<String, Instant>,
    done: bool,
    launches: u64,
    lost: u64,
}

impl Replay {
    fn now(&self) -> f64 {
        match self.start {
            Some(s) => self.origin_trace_s + s.elapsed().as_secs_f64() * self.speedup,
            None => self.origin_trace_s,
        }
    }

    fn free(&self) -> BTreeMap<String, usize> {
        self.held
            .iter()
            .map(|(a, offers)| {
                (
                    a.clone(),
                    offers.iter().map(|(_, r)| r.set_len(mezz_sdk::GPUS)).sum(),
                )
            })
            .collect()
    }

    /// Marks `gpus` as coming back, unless an offer already holds them.
    fn expect_back(&mut self, gpus: &[String]) {
        let at = Instant::now();
        for g in gpus {
            let held = self
                .held
                .values()
                .flatten()
                .any(|(_, r)| r.set_items(mezz_sdk::GPUS).contains(&g.as_str()));
            if !held {
                self.reoffer.insert(g.clone(), at);
            }
        }
    }

    fn step(&mut self, driver: &Driver) {
        if self.done || self.start.is_none() {
            return;
        }
        self.reoffer.retain(|g, since| {
            let wait = since.elapsed() < REOFFER_WAIT;
            if !wait {
                tracing::debug!(gpu = %g, "GPU not offered again in time; planning without it");
            }
            wait
        });
        if !self.reoffer.is_empty() {
            return;
        }
        let now = self.now();
        let d = self.planner.plan(now, &self.free());
        self.carry_out(driver, d, now);
        self.send_demand(driver);
        if self.planner.all_done() {
            self.done = true;
            driver.teardown();
        }
    }

    fn carry_out(&mut self, driver: &Driver, d: Decision, now: f64) {
        for i in d.preempt {
            self.planner.stopping(i, now);
            let mut freed = Vec::new();
            if let Some((_, a)) = self.attempts.get(&i) {
                for t in &a.tasks {
                    driver.kill(t.clone(), None);
                }
                freed = a.gpus.values().flatten().cloned().collect();
            }
            self.expect_back(&freed);
        }
        // All tasks bound for one agent go in one accept of all its offers.
        let mut per_agent: BTreeMap<String, Vec<proto::TaskInfo>> = BTreeMap::new();
        for (i, parts) in d.start {
            let n = self.attempts.get(&i).map_or(1, |(n, _)| n + 1);
            let remaining = self.planner.jobs[i].remaining_s;
            let run_ms = (remaining / self.speedup * 1000.0).round().max(1.0) as u64;
            let name = self.planner.jobs[i].job.name.clone();
            let mut ids = Vec::new();
            let mut task_gpus = HashMap::new();
            for (p, (agent, g)) in parts.into_iter().enumerate() {
                let Some(offers) = self.held.get_mut(&agent) else {
                    continue;
                };
                // Take g GPU names out of the agent's held offers.
                let mut gpus = Vec::new();
                for (_, left) in offers.iter_mut() {
                    let want = g - gpus.len();
                    let names: Vec<String> = left
                        .set_items(mezz_sdk::GPUS)
                        .into_iter()
                        .take(want)
                        .map(str::to_string)
                        .collect();
                    left.subtract(&Resources::new().with_set(mezz_sdk::GPUS, names.clone()));
                    gpus.extend(names);
                }
                let need = Resources::new()
                    .with_scalar(mezz_sdk::CPUS, 0.1)
                    .with_scalar(mezz_sdk::MEM, 16.0)
                    .with_set(mezz_sdk::GPUS, gpus.clone());
                let id = format!("{name}.{n}.{p}");
                task_gpus.insert(id.clone(), gpus);
                let task =
                    TaskBuilder::shell(id.clone(), format!("sleep {:.3}", run_ms as f64 / 1000.0))
                        .resources(&need)
                        .label(RUN_MS_LABEL, run_ms.to_string())
                        .label("gang", format!("{name}.{n}"))
                        .build_on(&mezz_sdk::AgentId(agent.clone()));
                self.tasks.insert(id.clone(), (i, n));
                ids.push(id);
                per_agent.entry(agent).or_default().push(task);
            }
            self.launches += 1;
            self.attempts.insert(
                i,
                (
                    n,
                    Attempt {
                        live: ids.len(),
                        tasks: ids,
                        gpus: task_gpus,
                        finished: 0,
                        failed: false,
                    },
                ),
            );
            self.planner.started(i, now);
        }
        for (agent, tasks) in per_agent {
            let Some(offers) = self.held.remove(&agent) else {
                continue;
            };
            // What the launch leaves of the agent's GPUs comes back in a
            // new offer.
            let left: Vec<String> = offers
                .iter()
                .flat_map(|(_, r)| r.set_items(mezz_sdk::GPUS))
                .map(str::to_string)
                .collect();
            self.expect_back(&left);
            let launch = proto::Operation {
                operation: Some(proto::operation::Operation::Launch(proto::Launch { tasks })),
            };
            // What the launch leaves is offered again at once.
            driver.accept(
                offers.into_iter().map(|(o, _)| o.id),
                vec![launch],
                Some(proto::Filters {
                    refuse_seconds: Some(0.0),
                }),
            );
        }
    }

    /// Tells the master what waits (when that changed): one demand per
    /// waiting job, its GPUs as a gang of one-GPU tasks.
    fn send_demand(&mut self, driver: &Driver) {
        let waiting: Vec<usize> = self.planner.waiting().collect();
        if waiting == self.demand_sent {
            return;
        }
        let per_task = Resources::new()
            .with_scalar(mezz_sdk::CPUS, 0.1)
            .with_scalar(mezz_sdk::MEM, 16.0)
            .with_scalar(mezz_sdk::GPUS, 1.0)
            .to_proto();
        let demands = waiting
            .iter()
            .map(|&i| proto::Demand {
                id: self.planner.jobs[i].job.name.clone(),
                resources: per_task.clone(),
                tasks: self.planner.jobs[i].job.gpus as u32,
                ..Default::default()
            })
            .collect();
        driver.set_demand(demands);
        self.demand_sent = waiting;
    }

    fn tick_delay(&self) -> Duration {
        let now = self.now();
        let next = match (self.planner.next_arrival(), self.planner.next_demotion(now)) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        };
        match (next, self.start) {
            (Some(at), Some(_)) => {
                let real = ((at - now) / self.speedup).max(0.0);
                TICK.min(Duration::from_secs_f64(real))
                    .max(Duration::from_micros(200))
            }
            _ => TICK,
        }
    }
}

impl Scheduler for Replay {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, reconnected: bool) {
        tracing::info!(%id, reconnected, "replay framework subscribed");
        self.held.clear();
        self.reoffer.clear();
        self.demand_sent.clear();
        if self.start.is_none() {
            self.start = Some(Instant::now());
        }
        driver.wake_after(Duration::ZERO);
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        for offer in offers {
            match Resources::from_proto(&offer.resources) {
                Ok(r) => {
                    for g in r.set_items(mezz_sdk::GPUS) {
                        self.reoffer.remove(g);
                    }
                    self.held
                        .entry(offer.agent_id.clone())
                        .or_default()
                        .push((offer, r));
                }
                Err(e) => {
                    tracing::warn!("offer {} has resources the SDK cannot read: {e}", offer.id);
                    driver.decline([offer.id], None);
                }
            }
        }
        self.step(driver);
    }

    fn rescinded(&mut self, _: &Driver, offer_id: &mezz_sdk::OfferId) {
        for offers in self.held.values_mut() {
            offers.retain(|(o, _)| o.id != offer_id.0);
        }
        self.held.retain(|_, v| !v.is_empty());
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let state = status.state();
        if !state.is_terminal() {
            return;
        }
        let Some(&(i, n)) = self.tasks.get(&status.task_id) else {
            return;
        };
        let now = self.now();
        let Some((current, a)) = self.attempts.get_mut(&i) else {
            return;
        };
        if *current != n || a.live == 0 {
            return;
        }
        self.tasks.remove(&status.task_id);
        // The gang's first task to end: all its GPUs are coming back, and
        // the planner waits for all of them (as the reference frees a
        // job's GPUs at once), so that a large job can take what a large
        // job left instead of small ones taking it part by part.
        let freed: Vec<String> = if a.live == a.tasks.len() {
            a.gpus.values().flatten().cloned().collect()
        } else {
            Vec::new()
        };
        a.live -= 1;
        if state == TaskState::Finished {
            a.finished += 1;
        } else {
            if !matches!(state, TaskState::Killed) {
                self.lost += 1;
                tracing::warn!(task_id = %status.task_id, "task ended {}: {}", state.short_name(), status.message);
            }
            if !a.failed {
                a.failed = true;
                // One part gone: the gang stops whole.
                if matches!(self.planner.jobs[i].phase, Phase::Running { .. }) {
                    self.planner.stopping(i, now);
                }
                for t in a.tasks.clone() {
                    if self.tasks.contains_key(&t) {
                        driver.kill(t, None);
                    }
                }
            }
        }
        let (live, failed) = (a.live, a.failed);
        self.expect_back(&freed);
        if live == 0 {
            if failed {
                self.planner.stopped(i, now);
            } else {
                self.planner.ended(i, now);
            }
        }
        self.step(driver);
    }

    fn wakeup(&mut self, driver: &Driver) {
        if self.done {
            return;
        }
        self.step(driver);
        driver.wake_after(self.tick_delay());
    }

    fn disconnected(&mut self, _: &Driver) {
        self.held.clear();
        self.reoffer.clear();
    }
}

/// What a replay produced.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// The numbers, trace seconds.
    pub report: Report,
    /// Every job as it ended (arrival, first start, end, preemptions).
    pub jobs: Vec<JobState>,
    /// Job launches (starts and restarts).
    pub launches: u64,
    /// Tasks that ended LOST, FAILED, DROPPED or the like.
    pub lost: u64,
    /// Real seconds the replay took.
    pub elapsed_s: f64,
}

/// Replays `config.jobs` through the cluster at `config.masters` until every
/// job ended or `limit` passed (jobs not ended then are not in the times).
pub async fn run(config: ReplayConfig, limit: Duration) -> Result<ReplayOutcome, String> {
    let origin = config.jobs.first().map_or(0.0, |j| j.arrival_s);
    let replay = Replay {
        planner: Planner::new(
            config.jobs,
            config.policy,
            config.total_gpus,
            config.gpus_per_node,
            &config.las_thresholds_gpu_s,
        ),
        speedup: config.speedup,
        origin_trace_s: origin,
        start: None,
        held: BTreeMap::new(),
        tasks: HashMap::new(),
        attempts: HashMap::new(),
        demand_sent: Vec::new(),
        reoffer: HashMap::new(),
        done: false,
        launches: 0,
        lost: 0,
    };
    let framework = proto::FrameworkInfo {
        name: config.name.clone(),
        failover_timeout_secs: 60.0,
        capabilities: vec![proto::Capability::GpuResources as i32],
        ..Default::default()
    };
    let mut builder = mezz_sdk::DriverBuilder::new()
        .masters(config.masters.clone())
        .framework(framework);
    if let Some(t) = &config.token {
        builder = builder.token(t.clone());
    }
    let started = Instant::now();
    let replay = match tokio::time::timeout(limit, builder.run(replay)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("replay framework {}: {e}", config.name)),
        Err(_) => {
            return Err(format!(
                "the replay did not end within {}",
                humantime::format_duration(limit)
            ))
        }
    };
    Ok(ReplayOutcome {
        report: replay.planner.report(),
        jobs: replay.planner.jobs.clone(),
        launches: replay.launches,
        lost: replay.lost,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
