//! The load framework (`mezz sim load`): frameworks on the SDK, exactly as
//! a third party writes one, that launch tasks at a target rate and measure
//! what the cluster delivers: how many tasks reached RUNNING per second,
//! how long from the launch call to the RUNNING update (launch → RUNNING),
//! and how long from a task's terminal update to the next offer of its
//! agent (offer latency after a resource is freed).
//!
//! Each framework keeps the offers it gets and packs tasks into them as its
//! share of the rate allows; what a launch leaves of an offer goes back at
//! once (refuse 0 s), so freed resources are offered again in the next
//! allocation. Tasks are `sleep N` commands (they run on real agents too)
//! with a label that tells a simulated agent how long to run them.
//!
//! A launch the master refuses before it starts anything (TASK_DROPPED: an
//! offer of a master that failed over, say) and a launch the master never
//! heard of (TASK_UNKNOWN to an explicit reconciliation, when the call died
//! with the old leader) ran nowhere: it is counted as `dropped` and made
//! again, as a careful framework does. Tasks still without RUNNING a while
//! after their launch are reconciled explicitly, every few seconds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezz_sdk::{proto, Driver, FrameworkId, Resources, Scheduler, TaskBuilder, TaskState};
use serde::Serialize;

use crate::agent_core::RUN_MS_LABEL;
use crate::dist::{Rng, TaskTime};
use crate::stats::{percentiles, Percentiles};

/// How often a framework looks at its held offers and its deadline.
const TICK: Duration = Duration::from_millis(20);
/// A held offer that no launch used for this long is declined.
const HOLD: Duration = Duration::from_secs(2);
/// Tasks without RUNNING this long after their launch are reconciled, and
/// this is also how often.
const RECONCILE_AFTER: Duration = Duration::from_secs(5);

/// What load to make.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Master addresses.
    pub masters: Vec<String>,
    /// How many frameworks share the rate.
    pub frameworks: usize,
    /// Target launches per second, all frameworks together.
    pub tasks_per_second: f64,
    /// How long each task runs.
    pub task_time: TaskTime,
    /// Each task's cpus.
    pub cpus: f64,
    /// Each task's memory, MB.
    pub mem: f64,
    /// Each task's GPUs (the frameworks then ask for GPU offers).
    pub gpus: usize,
    /// How long to keep launching.
    pub duration: Duration,
    /// Stop launching after this many tasks in all, even before `duration`.
    pub max_tasks: Option<u64>,
    /// After launching stops, how long to wait for the launched tasks to
    /// end before giving up on them (they are then `unfinished`).
    pub drain: Duration,
    /// The frameworks' role.
    pub role: String,
    /// Framework names are `<name>-<n>`.
    pub name: String,
    /// Seeds the run times.
    pub seed: u64,
    /// Presented to the masters when they authenticate.
    pub token: Option<mezz_sdk::Token>,
}

/// Live counters, all frameworks together (for progress lines).
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Tasks sent in launches.
    pub launched: AtomicU64,
    /// Tasks whose RUNNING update arrived.
    pub running: AtomicU64,
    /// Tasks that reached a terminal state.
    pub terminal: AtomicU64,
    /// Tasks that ended LOST or GONE.
    pub lost: AtomicU64,
    /// Launches refused before they started anything, made again.
    pub dropped: AtomicU64,
}

/// The end-of-run report (`mezz sim load --json` prints it as one object).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Frameworks that ran.
    pub frameworks: usize,
    /// The asked-for rate.
    pub target_tasks_per_second: f64,
    /// Tasks sent in launches.
    pub launched: u64,
    /// Tasks whose RUNNING update arrived.
    pub running: u64,
    /// Tasks that ended FINISHED.
    pub finished: u64,
    /// Tasks that ended FAILED or ERROR.
    pub failed: u64,
    /// Tasks that ended KILLED.
    pub killed: u64,
    /// Tasks that ended LOST or GONE.
    pub lost: u64,
    /// Launches that ran nowhere (TASK_DROPPED, or TASK_UNKNOWN to a
    /// reconciliation) and were made again; not in `launched`.
    pub dropped: u64,
    /// Launched tasks with no terminal state when the drain ran out.
    pub unfinished: u64,
    /// Tasks that reached RUNNING, per second, from the start to the last
    /// RUNNING update of the launch phase: accepted launch → RUNNING
    /// delivered to the framework.
    pub tasks_per_second: f64,
    /// Launch call → RUNNING update, milliseconds.
    pub launch_to_running_ms: Percentiles,
    /// A task's terminal update → the next offer of its agent, ms.
    pub offer_latency_ms: Percentiles,
    /// Offers received.
    pub offers: u64,
    /// Seconds from the start to the end of the drain.
    pub elapsed_s: f64,
    /// Frameworks that ended with an error, and why.
    pub errors: Vec<String>,
}

struct InFlight {
    launched_at: Instant,
    agent_id: String,
    running: bool,
}

struct Held {
    offer: proto::Offer,
    left: Resources,
    since: Instant,
}

/// One load framework.
struct Load {
    index: usize,
    rate: f64,
    quota: Option<u64>,
    start: Instant,
    launch_until: Instant,
    drain_until: Instant,
    need: Resources,
    gpus: usize,
    task_time: TaskTime,
    rng: Rng,
    counters: Arc<LoadCounters>,
    held: VecDeque<Held>,
    in_flight: HashMap<String, InFlight>,
    freed: HashMap<String, Instant>,
    next_task: u64,
    launched: u64,
    running: u64,
    last_running: Option<Instant>,
    finished: u64,
    failed: u64,
    killed: u64,
    lost: u64,
    dropped: u64,
    offers: u64,
    last_reconcile: Instant,
    launch_to_running: Vec<f64>,
    offer_latency: Vec<f64>,
    done: bool,
    /// Whether the master was last told to suppress its offers (it
    /// launches nothing more unless a dropped launch gives its place back);
    /// `None` after a subscription, when the master's view is unknown.
    suppressed: Option<bool>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Load {
    /// Launches allowed now: the share of the rate accrued since the
    /// start, less what was launched, within the quota and the deadline
    /// (a launch that was dropped gives its place back).
    fn budget(&self, now: Instant) -> u64 {
        if now >= self.launch_until {
            return 0;
        }
        let accrued = (self.rate * now.duration_since(self.start).as_secs_f64()).floor() as u64;
        let cap = self.quota.unwrap_or(u64::MAX);
        // A backlog (after a failover, say) is made up at most one
        // second's worth at a time, not in one burst.
        let burst = self.rate.ceil().max(1.0) as u64;
        accrued.min(cap).saturating_sub(self.launched).min(burst)
    }

    fn launching_over(&self, now: Instant) -> bool {
        now >= self.launch_until || self.quota.is_some_and(|q| self.launched >= q)
    }

    fn task_for(&mut self, offer: &proto::Offer, left: &Resources) -> Option<proto::TaskInfo> {
        let mut need = self.need.clone();
        if self.gpus > 0 {
            let items: Vec<String> = left
                .set_items(mezz_sdk::GPUS)
                .into_iter()
                .take(self.gpus)
                .map(str::to_string)
                .collect();
            if items.len() < self.gpus {
                return None;
            }
            need = need.with_set(mezz_sdk::GPUS, items);
        }
        if !left.contains(&need) {
            return None;
        }
        let run_for = self.task_time.sample(&mut self.rng);
        self.next_task += 1;
        let id = format!("load-{}-{}", self.index, self.next_task);
        Some(
            TaskBuilder::shell(id, format!("sleep {:.3}", run_for.as_secs_f64()))
                .resources(&need)
                .label(RUN_MS_LABEL, run_for.as_millis().to_string())
                .build(offer),
        )
    }

    /// Packs as many tasks as the budget allows into the held offers.
    fn launch_from_held(&mut self, driver: &Driver, now: Instant) {
        let mut budget = self.budget(now);
        let mut keep = VecDeque::new();
        while let Some(mut h) = self.held.pop_front() {
            if budget == 0 {
                keep.push_back(h);
                continue;
            }
            let mut tasks = Vec::new();
            while budget > 0 {
                let Some(task) = self.task_for(&h.offer, &h.left) else {
                    break;
                };
                if let Ok(used) = Resources::from_proto(&task.resources) {
                    h.left.subtract(&used);
                }
                tasks.push(task);
                budget -= 1;
            }
            if tasks.is_empty() {
                // Too small for even one task: no use holding it.
                driver.decline([h.offer.id.clone()], Some(1.0));
                continue;
            }
            for t in &tasks {
                self.in_flight.insert(
                    t.task_id.clone(),
                    InFlight {
                        launched_at: now,
                        agent_id: t.agent_id.clone(),
                        running: false,
                    },
                );
            }
            let n = tasks.len() as u64;
            self.launched += n;
            self.counters.launched.fetch_add(n, Ordering::Relaxed);
            let launch = proto::Operation {
                operation: Some(proto::operation::Operation::Launch(proto::Launch { tasks })),
            };
            // The rest of the offer goes back at once, to be offered again.
            driver.accept(
                [h.offer.id.clone()],
                vec![launch],
                Some(proto::Filters {
                    refuse_seconds: Some(0.0),
                }),
            );
        }
        // Offers held too long while the budget was spent go back.
        let (stale, fresh): (Vec<Held>, Vec<Held>) = keep
            .into_iter()
            .partition(|h| now.duration_since(h.since) >= HOLD || self.launching_over(now));
        if !stale.is_empty() {
            driver.decline(stale.into_iter().map(|h| h.offer.id), Some(1.0));
        }
        self.held = fresh.into();
    }

    /// Asks about tasks launched a while ago that never got RUNNING.
    fn reconcile_stuck(&mut self, driver: &Driver, now: Instant) {
        if now.duration_since(self.last_reconcile) < RECONCILE_AFTER {
            return;
        }
        self.last_reconcile = now;
        let stuck: Vec<proto::ReconcileTask> = self
            .in_flight
            .iter()
            .filter(|(_, f)| !f.running && now.duration_since(f.launched_at) >= RECONCILE_AFTER)
            .map(|(id, f)| proto::ReconcileTask {
                task_id: id.clone(),
                agent_id: f.agent_id.clone(),
            })
            .collect();
        if !stuck.is_empty() {
            tracing::debug!("reconciling {} task(s) without RUNNING", stuck.len());
            driver.reconcile(stuck);
        }
    }

    fn tick(&mut self, driver: &Driver) {
        let now = Instant::now();
        self.reconcile_stuck(driver, now);
        self.launch_from_held(driver, now);
        let over = self.launching_over(now);
        // A framework that wants no more offers says so, as a real one
        // should: declining each of them instead has the master offer every
        // agent to every framework over and over (10,000 agents, 20
        // frameworks: the leader did nothing else).
        if self.suppressed != Some(over) {
            if over {
                driver.suppress();
            } else {
                driver.revive();
            }
            self.suppressed = Some(over);
        }
        if (over && self.in_flight.is_empty()) || now >= self.drain_until {
            self.done = true;
            driver.teardown();
            return;
        }
        driver.wake_after(TICK);
    }
}

impl Scheduler for Load {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, reconnected: bool) {
        tracing::debug!(%id, reconnected, "load framework {} subscribed", self.index);
        // Offers of a previous connection died with it; whether a new
        // leader knows of a suppression is unknown: the next tick says
        // again what it wants.
        self.held.clear();
        self.suppressed = None;
        driver.wake_after(TICK);
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let now = Instant::now();
        for offer in offers {
            self.offers += 1;
            if let Some(freed) = self.freed.remove(&offer.agent_id) {
                self.offer_latency.push(ms(now.duration_since(freed)));
            }
            match Resources::from_proto(&offer.resources) {
                Ok(left) => self.held.push_back(Held {
                    offer,
                    left,
                    since: now,
                }),
                Err(e) => {
                    tracing::warn!("offer {} has resources the SDK cannot read: {e}", offer.id);
                    driver.decline([offer.id], None);
                }
            }
        }
        self.launch_from_held(driver, now);
    }

    fn rescinded(&mut self, _: &Driver, offer_id: &mezz_sdk::OfferId) {
        self.held.retain(|h| h.offer.id != offer_id.0);
    }

    fn status_update(&mut self, _: &Driver, status: &proto::TaskStatus) {
        let now = Instant::now();
        let state = status.state();
        let Some(f) = self.in_flight.get_mut(&status.task_id) else {
            return;
        };
        // Never started anywhere: make it again (the budget allows one
        // more launch).
        if !f.running && matches!(state, TaskState::Dropped | TaskState::Unknown) {
            tracing::debug!(task_id = %status.task_id, "launch {}: {}; making it again", state.short_name(), status.message);
            self.in_flight.remove(&status.task_id);
            self.launched -= 1;
            self.dropped += 1;
            self.counters.launched.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !f.running && (state == TaskState::Running || state.is_terminal()) {
            f.running = true;
            if state == TaskState::Running {
                self.running += 1;
                self.counters.running.fetch_add(1, Ordering::Relaxed);
                self.launch_to_running
                    .push(ms(now.duration_since(f.launched_at)));
                self.last_running = Some(now);
            }
        }
        if !state.is_terminal() {
            return;
        }
        self.in_flight.remove(&status.task_id);
        self.counters.terminal.fetch_add(1, Ordering::Relaxed);
        match state {
            TaskState::Finished => self.finished += 1,
            TaskState::Failed | TaskState::Error => self.failed += 1,
            TaskState::Killed => self.killed += 1,
            _ => {
                self.lost += 1;
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(task_id = %status.task_id, "task ended {}: {}", state.short_name(), status.message);
            }
        }
        if !status.agent_id.is_empty() {
            self.freed.entry(status.agent_id.clone()).or_insert(now);
        }
    }

    fn wakeup(&mut self, driver: &Driver) {
        if !self.done {
            self.tick(driver);
        }
    }

    fn disconnected(&mut self, _: &Driver) {
        self.held.clear();
    }
}

/// Runs the load to its end and reports; `counters` follow it live.
pub async fn run(config: LoadConfig, counters: Arc<LoadCounters>) -> LoadReport {
    let n = config.frameworks.max(1);
    let start = Instant::now();
    let launch_until = start + config.duration;
    let drain_until = launch_until + config.drain;
    let mut need = Resources::new()
        .with_scalar(mezz_sdk::CPUS, config.cpus)
        .with_scalar(mezz_sdk::MEM, config.mem);
    if need.is_empty() {
        need = Resources::new().with_scalar(mezz_sdk::CPUS, 0.01);
    }
    let mut runs = tokio::task::JoinSet::new();
    for index in 0..n {
        let quota = config
            .max_tasks
            .map(|m| m / n as u64 + u64::from((index as u64) < m % n as u64));
        let load = Load {
            index,
            rate: config.tasks_per_second / n as f64,
            quota,
            start,
            launch_until,
            drain_until,
            need: need.clone(),
            gpus: config.gpus,
            task_time: config.task_time.clone(),
            rng: Rng::new(config.seed.wrapping_add(index as u64)),
            counters: Arc::clone(&counters),
            held: VecDeque::new(),
            in_flight: HashMap::new(),
            freed: HashMap::new(),
            next_task: 0,
            launched: 0,
            running: 0,
            last_running: None,
            finished: 0,
            failed: 0,
            killed: 0,
            lost: 0,
            dropped: 0,
            offers: 0,
            last_reconcile: start,
            launch_to_running: Vec::new(),
            offer_latency: Vec::new(),
            done: false,
            suppressed: None,
        };
        let mut capabilities = Vec::new();
        if config.gpus > 0 {
            capabilities.push(proto::Capability::GpuResources as i32);
        }
        let framework = proto::FrameworkInfo {
            name: format!("{}-{index}", config.name),
            role: config.role.clone(),
            // Through a master failover the tasks must stay.
            failover_timeout_secs: 300.0,
            capabilities,
            ..Default::default()
        };
        let mut builder = mezz_sdk::DriverBuilder::new()
            .masters(config.masters.clone())
            .framework(framework);
        if let Some(t) = &config.token {
            builder = builder.token(t.clone());
        }
        runs.spawn(async move { (index, builder.run(load).await) });
    }
    let mut report = LoadReport {
        frameworks: n,
        target_tasks_per_second: config.tasks_per_second,
        ..Default::default()
    };
    let mut l2r = Vec::new();
    let mut offer_latency = Vec::new();
    let mut last_running: Option<Instant> = None;
    while let Some(joined) = runs.join_next().await {
        let (index, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                report
                    .errors
                    .push(format!("a load framework panicked: {e}"));
                continue;
            }
        };
        match result {
            Ok(load) => {
                report.launched += load.launched;
                report.running += load.running;
                report.finished += load.finished;
                report.failed += load.failed;
                report.killed += load.killed;
                report.lost += load.lost;
                report.dropped += load.dropped;
                report.unfinished += load.in_flight.len() as u64;
                report.offers += load.offers;
                l2r.extend(load.launch_to_running);
                offer_latency.extend(load.offer_latency);
                last_running = last_running.max(load.last_running);
            }
            Err(e) => report
                .errors
                .push(format!("load framework {}-{index}: {e}", config.name)),
        }
    }
    if let Some(last) = last_running {
        let secs = last.duration_since(start).as_secs_f64();
        if secs > 0.0 {
            report.tasks_per_second = report.running as f64 / secs;
        }
    }
    report.launch_to_running_ms = percentiles(&mut l2r);
    report.offer_latency_ms = percentiles(&mut offer_latency);
    report.elapsed_s = start.elapsed().as_secs_f64();
    report
}

impl LoadReport {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let p = |x: &Percentiles| format!("{:>9.1} {:>9.1} {:>9}", x.p50, x.p99, x.samples);
        let mut s = String::new();
        s.push_str(&format!(
            "frameworks {}  target {:.0}/s  achieved {:.1} tasks/s (launch → RUNNING)  elapsed {:.1}s\n",
            self.frameworks, self.target_tasks_per_second, self.tasks_per_second, self.elapsed_s
        ));
        s.push_str(&format!(
            "launched {}  running {}  finished {}  failed {}  killed {}  lost {}  unfinished {}  dropped and made again {}  offers {}\n",
            self.launched, self.running, self.finished, self.failed, self.killed, self.lost, self.unfinished, self.dropped, self.offers
        ));
        s.push_str(&format!(
            "{:<24} {:>9} {:>9} {:>9}\n",
            "latency (ms)", "p50", "p99", "samples"
        ));
        s.push_str(&format!(
            "{:<24} {}\n",
            "launch → RUNNING",
            p(&self.launch_to_running_ms)
        ));
        s.push_str(&format!(
            "{:<24} {}\n",
            "offer after free",
            p(&self.offer_latency_ms)
        ));
        for e in &self.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    }
}
