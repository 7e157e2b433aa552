//! The jobs framework's engine: it reads the jobs that have not ended
//! from the masters, fires schedules, releases jobs whose dependencies
//! ended, launches attempts on offers, and records every step back in the
//! masters before acting on it. It keeps nothing of its own: a new engine
//! (after a restart, or on another machine) reads the same records and
//! goes on where the last one stopped.
//!
//! Ordering rules that make a takeover safe:
//! - an attempt's start is recorded (with the version the engine read)
//!   before its task is launched, so two engines never launch the same
//!   attempt, and a new engine finds every launched attempt;
//! - after subscribing, the engine asks the master for the state of every
//!   attempt recorded as running, so an end it missed still arrives;
//! - a fire is told to the masters with its cron time, which they only
//!   move forward, so a fire told twice makes one run.
//!
//! The engine talks to the masters through a [`Store`] and to the cluster
//! through one SDK driver per role (a framework registers in one role, and
//! a job's `role` decides its fair share and quota). An attempt of a
//! training job is a gang run by a framework of its own
//! ([`crate::gang`]), started through [`Engine::with_delegated`]; it reports
//! one status per attempt, as a task would. A gang recorded as running
//! that no gang of this engine runs (its engine stopped) is ended as
//! LOST, and its framework's tasks end with that framework; a service
//! (a notebook, a deployment) is followed again instead.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mezz_sdk::proto::{self, FireScheduleRequest, JobRecord};
use mezz_sdk::{place, Driver, Scheduler, Strategy, TaskBuilder, TaskRequest, TaskState};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::batch::{Action, Job, Millis};
use crate::gang::{is_delegated_kind, AttemptHandle, AttemptStart};
use crate::record::{self, is_terminal, states};
use crate::schedule::{self, Schedule};
use crate::spec::{Concurrency, JobSpec};
use crate::sweep;

/// How often the engine reads the masters' jobs.
pub const TICK: Duration = Duration::from_millis(500);

/// The longest note kept (see [`Event::Note`]); the masters take 1 KiB.
const NOTE_BYTES: usize = 1000;

/// `note` with `line` added last, its oldest lines dropped to stay within
/// [`NOTE_BYTES`].
fn with_line(note: &str, line: &str) -> String {
    let mut lines: Vec<&str> = note.lines().collect();
    lines.push(line);
    while lines.len() > 1 && lines.iter().map(|l| l.len() + 1).sum::<usize>() > NOTE_BYTES {
        lines.remove(0);
    }
    lines.join("\n")
}

/// How long a kill waits before it is sent again.
const KILL_AGAIN: f64 = 5.0;

/// The framework's name on the cluster.
pub const FRAMEWORK_NAME: &str = "mezz-jobs";

/// A call's future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call to the masters failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The job changed since it was read: read it again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The masters refused the change (the job ended, is paused, …).
    #[error("refused: {0}")]
    Refused(String),
    /// No master answered.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The masters' job calls the engine makes.
pub trait Store: Send + Sync + 'static {
    /// Every job that has not ended, and every scheduled job.
    fn active(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, StoreError>>;
    /// One job, or none by that name.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<JobRecord>, StoreError>>;
    /// Records the engine's progress on a job read at `expected`.
    fn update(&self, job: JobRecord, expected: u64)
        -> BoxFuture<'_, Result<JobRecord, StoreError>>;
    /// Tells a scheduled job's fire.
    fn fire(&self, fire: FireScheduleRequest) -> BoxFuture<'_, Result<JobRecord, StoreError>>;
    /// Every job whose parent is `parent` (a sweep's trials), each with
    /// its last attempt only.
    fn children<'a>(&'a self, parent: &'a str)
        -> BoxFuture<'a, Result<Vec<JobRecord>, StoreError>>;
    /// Stores new jobs (a sweep's trials), all or none.
    fn submit(&self, jobs: Vec<JobRecord>) -> BoxFuture<'_, Result<Vec<JobRecord>, StoreError>>;
    /// kill, rerun, pause or resume of a job.
    fn control<'a>(
        &'a self,
        name: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, Result<JobRecord, StoreError>>;
    /// The end of a task's standard output (its last 64 KiB at most).
    fn output<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<String, StoreError>>;
}

/// What the drivers tell the engine.
#[derive(Debug)]
pub enum Event {
    /// The role's framework subscribed (again).
    Subscribed {
        /// The role.
        role: String,
        /// Its driver.
        driver: Driver,
    },
    /// Offers to the role's framework.
    Offers {
        /// The role.
        role: String,
        /// The offers.
        offers: Vec<proto::Offer>,
    },
    /// An offer was taken back.
    Rescinded {
        /// The role.
        role: String,
        /// The offer.
        offer_id: String,
    },
    /// A task's status changed.
    Status {
        /// The role.
        role: String,
        /// The status.
        status: proto::TaskStatus,
    },
    /// The framework running a delegated attempt (a gang) has news of it
    /// short of its end: kept as the job's note while the attempt runs.
    Note {
        /// The attempt's task id.
        task_id: String,
        /// The news.
        text: String,
    },
    /// Jobs were submitted (or changed): read them now rather than at the
    /// next pass.
    Wake,
    /// The role's driver ended (the framework was removed, or no master
    /// could be reached); the next job of the role starts a new one.
    Ended {
        /// The role.
        role: String,
        /// Why.
        why: String,
    },
}

/// The scheduler each role's driver runs: it forwards every event to the
/// engine.
pub struct Forwarder {
    role: String,
    tx: UnboundedSender<Event>,
}

impl Forwarder {
    /// A forwarder for `role`'s driver.
    pub fn new(role: &str, tx: UnboundedSender<Event>) -> Forwarder {
        Forwarder {
            role: role.to_string(),
            tx,
        }
    }
}

impl Scheduler for Forwarder {
    fn subscribed(&mut self, driver: &Driver, _: &mezz_sdk::FrameworkId, _: bool) {
        let _ = self.tx.send(Event::Subscribed {
            role: self.role.clone(),
            driver: driver.clone(),
        });
    }

    fn offers(&mut self, _: &Driver, offers: Vec<proto::Offer>) {
        let _ = self.tx.send(Event::Offers {
            role: self.role.clone(),
            offers,
        });
    }

    fn rescinded(&mut self, _: &Driver, offer_id: &mezz_sdk::OfferId) {
        let _ = self.tx.send(Event::Rescinded {
            role: self.role.clone(),
            offer_id: offer_id.0.clone(),
        });
    }

    fn status_update(&mut self, _: &Driver, status: &proto::TaskStatus) {
        let _ = self.tx.send(Event::Status {
            role: self.role.clone(),
            status: status.clone(),
        });
    }
}

/// One role's framework, as the engine sees it.
#[derive(Default)]
struct RoleLink {
    driver: Option<Driver>,
    offers: Vec<proto::Offer>,
    suppressed: bool,
}

/// An attempt waiting for an offer.
struct Want {
    record: JobRecord,
    job: Job,
    number: u32,
    task_id: String,
}

/// The engine. `start_driver` starts the driver of a role (its
/// [`Forwarder`] then sends [`Event::Subscribed`]); `now` is the clock
/// (seconds since the Unix epoch), injectable for tests.
pub struct Engine<S: Store> {
    store: S,
    now: Arc<dyn Fn() -> f64 + Send + Sync>,
    start_driver: Box<dyn FnMut(&str) + Send>,
    start_gang: Option<AttemptStarter>,
    roles: BTreeMap<String, RoleLink>,
    jobs: BTreeMap<String, JobRecord>,
    killing: BTreeMap<String, f64>,
    /// The gang attempts this engine runs, by the attempt's task id.
    gangs: BTreeMap<String, AttemptHandle>,
}

/// Starts a gang attempt (see [`Engine::with_delegated`]).
pub type AttemptStarter = Box<dyn FnMut(AttemptStart) -> AttemptHandle + Send>;

impl<S: Store> Engine<S> {
    /// An engine over `store`.
    pub fn new(
        store: S,
        now: Arc<dyn Fn() -> f64 + Send + Sync>,
        start_driver: Box<dyn FnMut(&str) + Send>,
    ) -> Engine<S> {
        Engine {
            store,
            now,
            start_driver,
            start_gang: None,
            roles: BTreeMap::new(),
            jobs: BTreeMap::new(),
            killing: BTreeMap::new(),
            gangs: BTreeMap::new(),
        }
    }

    /// The engine, running the attempts of training jobs with `start`
    /// (which reports their statuses as [`Event::Status`]). Without it,
    /// such a job fails, saying that this jobs framework cannot run it.
    pub fn with_delegated(mut self, start: AttemptStarter) -> Engine<S> {
        self.start_gang = Some(start);
        self
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(
        mut self,
        mut events: UnboundedReceiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => self.tick().await,
                Some(e) = events.recv() => {
                    // What else has arrived goes with it: statuses are
                    // recorded together, after the other events in order.
                    let mut statuses = Vec::new();
                    let mut next = Some(e);
                    while let Some(e) = next {
                        match e {
                            Event::Status { status, .. } => statuses.push(status),
                            other => self.event(other).await,
                        }
                        next = events.try_recv().ok();
                    }
                    if !statuses.is_empty() {
                        self.statuses(statuses).await;
                    }
                }
            }
        }
    }

    fn now_ms(&self) -> Millis {
        ((self.now)() * 1000.0).max(0.0) as Millis
    }

    /// One pass over every job that has not ended.
    pub async fn tick(&mut self) {
        let now = (self.now)();
        match self.store.active().await {
            Ok(list) => self.jobs = list.into_iter().map(|r| (r.name.clone(), r)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the jobs; trying again");
                return;
            }
        }
        let mut wants = Vec::new();
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for name in names {
            let Some(r) = self.jobs.get(&name).cloned() else {
                continue;
            };
            match r.state.as_str() {
                states::SCHEDULED => self.fire_due(&r, now).await,
                states::WAITING => self.check_after(&r, now).await,
                "PENDING" | "RUNNING" if r.kind == "sweep" => self.sweep_step(&r).await,
                "PENDING" | "RUNNING" => {
                    if let Some(w) = self.step(r, now).await {
                        wants.push(w);
                    }
                }
                _ => {}
            }
        }
        self.launch(wants, true).await;
    }

    /// Records `out` (made from `read`); the stored record on success.
    async fn save(&mut self, read: &JobRecord, out: JobRecord) -> Option<JobRecord> {
        match self.store.update(out, read.version).await {
            Ok(stored) => {
                self.jobs.insert(stored.name.clone(), stored.clone());
                Some(stored)
            }
            Err(e) => {
                tracing::info!(job = %read.name, error = %e, "progress not recorded; read again");
                self.jobs.remove(&read.name);
                None
            }
        }
    }

    /// Ends a job that cannot run (its spec does not read, a dependency
    /// failed) with `state` and `reason`.
    async fn end(&mut self, r: &JobRecord, state: &str, reason: String) {
        tracing::info!(job = %r.name, state, reason = %reason, "job ends");
        let mut out = r.clone();
        out.state = state.to_string();
        out.reason = reason;
        self.save(r, out).await;
    }

    /// A PENDING or RUNNING job: what its state machine says to do.
    async fn step(&mut self, r: JobRecord, now: f64) -> Option<Want> {
        let mut job = match record::to_job(&r) {
            Ok(j) => j,
            Err(e) => {
                self.end(&r, "FAILED", e).await;
                return None;
            }
        };
        let before = job.state;
        let gang = job.spec.kind.is_delegated();
        if gang {
            if let Some(a) = job.attempts.last().filter(|a| a.end.is_none()) {
                if !self.gangs.contains_key(&a.task_id) && job.spec.kind.is_service() {
                    // A service outlives the jobs framework that started
                    // it: this one follows it again (and kills it if the
                    // job was killed meanwhile).
                    if let Some(start) = self.start_gang.as_mut() {
                        tracing::info!(job = %r.name, attempt = %a.task_id, "following the service again");
                        let handle = start(AttemptStart {
                            spec: job.spec.clone(),
                            task_id: a.task_id.clone(),
                        });
                        self.gangs.insert(a.task_id.clone(), handle);
                    }
                } else if !self.gangs.contains_key(&a.task_id) {
                    let lost = proto::TaskStatus {
                        task_id: a.task_id.clone(),
                        state: TaskState::Lost as i32,
                        message: "the jobs framework that ran this gang stopped; its tasks end with the gang's framework".into(),
                        ..Default::default()
                    };
                    self.statuses(vec![lost]).await;
                    return None;
                }
            }
        }
        match job.next(self.now_ms()) {
            Action::Launch { number, task_id } if gang => {
                self.start_gang_attempt(r, job, number, task_id).await;
                None
            }
            Action::Launch { number, task_id } => Some(Want {
                record: r,
                job,
                number,
                task_id,
            }),
            Action::Kill { task_id } => {
                let due = self
                    .killing
                    .get(&task_id)
                    .is_none_or(|at| now - at >= KILL_AGAIN);
                if due {
                    if let Some(g) = self.gangs.get(&task_id) {
                        tracing::info!(job = %r.name, attempt = %task_id, "killing the gang");
                        g.kill();
                        self.killing.insert(task_id, now);
                    } else if gang {
                        // Ended as LOST above once no gang runs it.
                    } else if let Some(d) = self.driver(&job.spec.role) {
                        tracing::info!(job = %r.name, task = %task_id, "killing the attempt");
                        d.kill(task_id.clone(), None);
                        self.killing.insert(task_id, now);
                    }
                }
                None
            }
            Action::Done(state) => {
                if state != before || job.state.name() != r.state {
                    let out = record::with_progress(&r, &job, &[]);
                    self.save(&r, out).await;
                }
                None
            }
            Action::Wait | Action::WaitUntil(_) => None,
        }
    }

    /// Records the start of a gang attempt, then starts it.
    async fn start_gang_attempt(
        &mut self,
        r: JobRecord,
        mut job: Job,
        number: u32,
        task_id: String,
    ) {
        if self.start_gang.is_none() {
            let why = format!(
                "this jobs framework cannot run kind {}",
                job.spec.kind_name()
            );
            self.end(&r, "FAILED", why).await;
            return;
        }
        job.started(number, &task_id, self.now_ms());
        let out = record::with_progress(&r, &job, &[]);
        if self.save(&r, out).await.is_none() {
            return;
        }
        tracing::info!(job = %r.name, attempt = %task_id, "starting the gang of attempt {number}");
        let Some(start) = self.start_gang.as_mut() else {
            return;
        };
        let handle = start(AttemptStart {
            spec: job.spec,
            task_id: task_id.clone(),
        });
        self.gangs.insert(task_id, handle);
    }

    /// A WAITING job: released once its dependencies ended as needed,
    /// failed when one of them failed (with `after`), or when its deadline
    /// passed first.
    async fn check_after(&mut self, r: &JobRecord, now: f64) {
        let spec = match record::spec_of(r) {
            Ok(s) => s,
            Err(e) => return self.end(r, "FAILED", e).await,
        };
        if let Some(d) = spec.deadline {
            if now >= r.submitted_at + d.as_secs_f64() {
                return self
                    .end(
                        r,
                        "DEADLINE_EXCEEDED",
                        "the deadline passed while it waited for its dependencies".into(),
                    )
                    .await;
            }
        }
        let mut ready = true;
        for dep in &r.after {
            let d = match self.jobs.get(dep) {
                Some(d) => Some(d.clone()),
                None => match self.store.get(dep).await {
                    Ok(d) => d,
                    Err(_) => return,
                },
            };
            match d {
                None if r.after_any => {}
                None => {
                    return self
                        .end(
                            r,
                            "FAILED",
                            format!("job '{dep}' it waits for is no longer kept"),
                        )
                        .await
                }
                Some(d) if !is_terminal(&d.state) => ready = false,
                Some(d) if d.state != "SUCCEEDED" && !r.after_any => {
                    return self
                        .end(
                            r,
                            "FAILED",
                            format!("job '{dep}' it waits for ended {}", d.state),
                        )
                        .await
                }
                Some(_) => {}
            }
        }
        if ready {
            let mut out = r.clone();
            out.state = "PENDING".into();
            out.reason.clear();
            self.save(r, out).await;
        }
    }

    /// A SCHEDULED job: tells the masters each fire that is due.
    async fn fire_due(&mut self, r: &JobRecord, now: f64) {
        if r.paused {
            return;
        }
        let sched = match record::spec_of(r).and_then(|s| {
            let spec = s
                .schedule
                .ok_or_else(|| "the stored spec has no schedule".to_string())?;
            let parsed = Schedule::parse(&spec.cron, &spec.timezone)?;
            Ok((spec, parsed))
        }) {
            Ok(s) => s,
            Err(e) => return tracing::warn!(job = %r.name, error = %e, "cannot read the schedule"),
        };
        let (spec, parsed) = sched;
        let mut active: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.parent == r.name && !is_terminal(&j.state))
            .map(|j| j.name.clone())
            .collect();
        let last = r.last_fired_at.max(r.schedule_from);
        for fire in schedule::due(&parsed, last, now, spec.missed) {
            let mut req = FireScheduleRequest {
                name: r.name.clone(),
                fire_at: fire.at,
                run: None,
                replace: Vec::new(),
            };
            if fire.run {
                match spec.concurrency {
                    Concurrency::Forbid if !active.is_empty() => {
                        tracing::info!(job = %r.name, running = ?active, "fire skipped: a run has not ended (concurrency forbid)");
                    }
                    c => {
                        if c == Concurrency::Replace {
                            req.replace = std::mem::take(&mut active);
                        }
                        match record::scheduled_run(r, fire.at) {
                            Ok(run) => req.run = Some(run),
                            Err(e) => {
                                return tracing::warn!(job = %r.name, error = %e, "cannot make a run")
                            }
                        }
                    }
                }
            }
            let run = req.run.as_ref().map(|x| x.name.clone());
            match self.store.fire(req).await {
                Ok(stored) => {
                    tracing::info!(job = %r.name, fire_at = fire.at, run = ?run, "schedule fired");
                    self.jobs.insert(stored.name.clone(), stored);
                    active.extend(run);
                }
                Err(e) => {
                    tracing::warn!(job = %r.name, error = %e, "fire not recorded; trying again");
                    return;
                }
            }
        }
    }

    /// A sweep: submits the trials its plan asks for, kills them when the
    /// sweep is killed or reached its target, and ends it with its best
    /// trial.
    async fn sweep_step(&mut self, r: &JobRecord) {
        let plan = match record::spec_of(r).and_then(|s| {
            s.sweep
                .ok_or_else(|| "the stored spec has no sweep".to_string())
        }) {
            Ok(p) => p,
            Err(e) => return self.end(r, "FAILED", e).await,
        };
        let children = match self.store.children(&r.name).await {
            Ok(c) => c,
            Err(e) => {
                return tracing::warn!(job = %r.name, error = %e, "cannot read the sweep's trials")
            }
        };
        let running: Vec<&JobRecord> = children.iter().filter(|c| !is_terminal(&c.state)).collect();
        if r.kill_requested {
            for c in &running {
                if !c.kill_requested {
                    let _ = self.store.control(&c.name, "kill").await;
                }
            }
            if running.is_empty() {
                self.end(r, "KILLED", "killed on request".into()).await;
            }
            return;
        }
        let views: Vec<sweep::TrialView> = children
            .iter()
            .map(|c| sweep::TrialView {
                name: c.name.clone(),
                ended: is_terminal(&c.state),
                metric: c.has_metric.then_some(c.metric),
            })
            .collect();
        match plan.plan(&r.name, &views) {
            sweep::Step::Submit(trials) => {
                let records: Vec<JobRecord> = trials
                    .iter()
                    .map(|t| {
                        let mut rec = record::submitted(&t.spec);
                        rec.parent = r.name.clone();
                        rec.params_json = serde_json::to_string(&t.params).unwrap_or_default();
                        rec
                    })
                    .collect();
                let names: Vec<String> = records.iter().map(|t| t.name.clone()).collect();
                match self.store.submit(records).await {
                    Ok(_) => {
                        tracing::info!(job = %r.name, trials = ?names, "sweep submitted trials");
                        if r.state == "PENDING" {
                            let mut out = r.clone();
                            out.state = "RUNNING".into();
                            self.save(r, out).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %r.name, error = %e, "trials not submitted; trying again")
                    }
                }
            }
            sweep::Step::Wait => {}
            sweep::Step::Done { best, kill } => {
                for k in &kill {
                    let _ = self.store.control(k, "kill").await;
                }
                let mut out = r.clone();
                match best {
                    Some((name, metric)) => {
                        let params = children
                            .iter()
                            .find(|c| c.name == name)
                            .map(|c| c.params_json.clone())
                            .unwrap_or_default();
                        out.state = "SUCCEEDED".into();
                        out.reason =
                            format!("best trial {name}: {}={metric} with {params}", plan.metric);
                        out.has_metric = true;
                        out.metric = metric;
                        out.params_json = params;
                    }
                    None => {
                        out.state = "FAILED".into();
                        out.reason = format!(
                            "no trial reported the metric '{}' (print `metric: {}=VALUE`)",
                            plan.metric, plan.metric
                        );
                    }
                }
                tracing::info!(job = %r.name, state = %out.state, reason = %out.reason, "sweep ended");
                self.save(r, out).await;
            }
        }
    }

    /// The attempts of `role`'s jobs held here that wait for an offer now.
    fn waiting_launches(&self, role: &str) -> Vec<Want> {
        let now = self.now_ms();
        self.jobs
            .values()
            .filter(|r| r.role == role && r.state == "PENDING" && r.kind != "sweep")
            .filter_map(|r| {
                let mut job = record::to_job(r).ok()?;
                match job.next(now) {
                    Action::Launch { number, task_id } => Some(Want {
                        record: r.clone(),
                        job,
                        number,
                        task_id,
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// The role's driver, starting one when there is none.
    fn driver(&mut self, role: &str) -> Option<Driver> {
        if !self.roles.contains_key(role) {
            tracing::info!(role, "starting the role's framework");
            (self.start_driver)(role);
            self.roles.insert(role.to_string(), RoleLink::default());
        }
        self.roles.get(role).and_then(|l| l.driver.clone())
    }

    /// Places the attempts that wait on the offers held, recording each
    /// start before its launch; declines what is left. With `settle_idle`
    /// (a full pass), roles with nothing waiting give their offers back
    /// and are suppressed.
    async fn launch(&mut self, wants: Vec<Want>, settle_idle: bool) {
        let mut by_role: BTreeMap<String, Vec<Want>> = BTreeMap::new();
        for w in wants {
            by_role.entry(w.job.spec.role.clone()).or_default().push(w);
        }
        let idle: Vec<String> = self
            .roles
            .keys()
            .filter(|r| settle_idle && !by_role.contains_key(*r))
            .cloned()
            .collect();
        for role in idle {
            let link = self.roles.get_mut(&role).expect("listed");
            if let Some(d) = &link.driver {
                let offers: Vec<String> = link.offers.drain(..).map(|o| o.id).collect();
                if !offers.is_empty() {
                    d.decline(offers, Some(5.0));
                }
                if !link.suppressed {
                    d.suppress();
                    link.suppressed = true;
                }
            }
        }
        for (role, wants) in by_role {
            let Some(driver) = self.driver(&role) else {
                continue;
            };
            let link = self.roles.get_mut(&role).expect("made by driver()");
            if link.suppressed {
                driver.revive();
                link.suppressed = false;
            }
            let offers = std::mem::take(&mut link.offers);
            if offers.is_empty() {
                continue;
            }
            let requests: Vec<TaskRequest> = wants
                .iter()
                .map(|w| {
                    let res = mezz_sdk::Resources::new()
                        .with_scalar(mezz_sdk::CPUS, w.job.spec.cpus)
                        .with_scalar(mezz_sdk::MEM, w.job.spec.mem);
                    TaskRequest::new(w.task_id.clone(), res).gpus(w.job.spec.gpus as usize)
                })
                .collect();
            let plan = place(Strategy::FirstFit, &offers, &requests);
            let mut wants: Vec<Option<Want>> = wants.into_iter().map(Some).collect();
            // Each start is recorded before its launch; the records go to
            // the masters together, so they share their commits.
            let mut staged = Vec::new();
            for p in &plan.placed {
                let Some(mut w) = wants.get_mut(p.request).and_then(Option::take) else {
                    continue;
                };
                let now = self.now_ms();
                w.job.started(w.number, &w.task_id, now);
                w.job.placed(&w.task_id, &p.agent_id.0);
                let out = record::with_progress(&w.record, &w.job, &[]);
                staged.push((p, w, out));
            }
            let store = &self.store;
            let results = futures::future::join_all(
                staged
                    .iter()
                    .map(|(_, w, out)| store.update(out.clone(), w.record.version)),
            )
            .await;
            let mut tasks_by_offer: BTreeMap<String, Vec<proto::TaskInfo>> = BTreeMap::new();
            for ((p, w, _), result) in staged.into_iter().zip(results) {
                match result {
                    Ok(stored) => {
                        self.jobs.insert(stored.name.clone(), stored);
                        tracing::info!(job = %w.record.name, task = %w.task_id, agent = %p.agent_id.0, "launching attempt {}", w.number);
                        tasks_by_offer
                            .entry(p.offer_id.0.clone())
                            .or_default()
                            .push(p.task(task_builder(&w.job.spec, &w.task_id)));
                    }
                    Err(e) => {
                        tracing::info!(job = %w.record.name, error = %e, "start not recorded; read again");
                        self.jobs.remove(&w.record.name);
                    }
                }
            }
            let mut unused = Vec::new();
            for o in offers {
                match tasks_by_offer.remove(&o.id) {
                    // What the launch leaves of the offer comes back at
                    // once (the master's default would hold it back 5 s
                    // from us while more jobs wait).
                    Some(tasks) => driver.accept(
                        [o.id.clone()],
                        vec![proto::Operation {
                            operation: Some(proto::operation::Operation::Launch(proto::Launch {
                                tasks,
                            })),
                        }],
                        Some(proto::Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    ),
                    None => unused.push(o.id),
                }
            }
            if !unused.is_empty() {
                // Something still waits: offers come back soon.
                driver.decline(unused, Some(1.0));
            }
        }
    }

    /// Handles one event of a driver.
    pub async fn event(&mut self, e: Event) {
        match e {
            Event::Subscribed { role, driver } => {
                // Ask for the state of every attempt recorded as running:
                // an end missed while no engine ran arrives as an update.
                let tasks: Vec<proto::ReconcileTask> = self
                    .jobs
                    .values()
                    .filter(|r| {
                        r.role == role && r.state == "RUNNING" && !is_delegated_kind(&r.kind)
                    })
                    .flat_map(|r| r.attempts.iter().filter(|a| a.ended_at == 0.0))
                    .map(|a| proto::ReconcileTask {
                        task_id: a.task_id.clone(),
                        agent_id: a.agent_id.clone(),
                    })
                    .collect();
                if !tasks.is_empty() {
                    driver.reconcile(tasks);
                }
                let link = self.roles.entry(role).or_default();
                link.driver = Some(driver);
                link.offers.clear();
                link.suppressed = false;
            }
            Event::Offers { role, offers } => {
                let link = self.roles.entry(role.clone()).or_default();
                link.offers.extend(offers);
                // Jobs waiting for this role's offers need not wait for
                // the next pass.
                let wants = self.waiting_launches(&role);
                if !wants.is_empty() {
                    self.launch(wants, false).await;
                }
            }
            Event::Rescinded { role, offer_id } => {
                if let Some(link) = self.roles.get_mut(&role) {
                    link.offers.retain(|o| o.id != offer_id);
                }
            }
            Event::Ended { role, why } => {
                tracing::warn!(
                    role,
                    why,
                    "the role's framework ended; the next job of the role starts it again"
                );
                self.roles.remove(&role);
            }
            Event::Status { status, .. } => self.statuses(vec![status]).await,
            Event::Note { task_id, text } => self.note(&task_id, text).await,
            Event::Wake => self.tick().await,
        }
    }

    /// Adds `text` as a line of the job's note while its attempt `task_id`
    /// is the latest (a line the note ends with already, or news of an
    /// earlier attempt, is dropped). The note keeps its newest lines
    /// within [`NOTE_BYTES`].
    async fn note(&mut self, task_id: &str, text: String) {
        let Some(name) = record::job_of_task(task_id) else {
            return;
        };
        let line: String = text
            .replace('\n', " ")
            .chars()
            .take(NOTE_BYTES / 4)
            .collect();
        for _ in 0..3 {
            let r = match self.jobs.get(name) {
                Some(r) => r.clone(),
                None => match self.store.get(name).await {
                    Ok(Some(r)) => r,
                    _ => return,
                },
            };
            let latest = r.attempts.last().is_some_and(|a| a.task_id == task_id);
            if is_terminal(&r.state) || !latest || r.note.lines().last() == Some(line.as_str()) {
                return;
            }
            let mut out = r.clone();
            out.note = with_line(&r.note, &line);
            if self.save(&r, out).await.is_some() {
                return;
            }
        }
    }

    /// Task statuses: each job's news folded into one record, and the
    /// records sent to the masters together (a burst of ends shares its
    /// commits). A job changed meanwhile is read again and folded again.
    async fn statuses(&mut self, batch: Vec<proto::TaskStatus>) {
        let mut pending: BTreeMap<String, Vec<proto::TaskStatus>> = BTreeMap::new();
        for s in batch {
            if let Some(name) = record::job_of_task(&s.task_id) {
                pending.entry(name.to_string()).or_default().push(s);
            }
        }
        for _ in 0..3 {
            if pending.is_empty() {
                return;
            }
            let mut updates = Vec::new();
            for (name, sts) in &pending {
                let r = match self.jobs.get(name) {
                    Some(r) => r.clone(),
                    None => match self.store.get(name).await {
                        Ok(Some(r)) => r,
                        _ => continue,
                    },
                };
                if let Some(out) = self.fold(&r, sts).await {
                    updates.push((name.clone(), r, out));
                }
            }
            let store = &self.store;
            let results = futures::future::join_all(
                updates
                    .iter()
                    .map(|(_, r, out)| store.update(out.clone(), r.version)),
            )
            .await;
            let mut again = BTreeMap::new();
            for ((name, _, _), result) in updates.into_iter().zip(results) {
                match result {
                    Ok(stored) => {
                        if is_terminal(&stored.state) {
                            tracing::info!(job = %name, state = %stored.state, "job ended");
                        }
                        self.jobs.insert(name, stored);
                    }
                    Err(StoreError::Conflict(_)) => {
                        self.jobs.remove(&name);
                        if let Some(sts) = pending.remove(&name) {
                            again.insert(name, sts);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, "the attempt's news was not recorded")
                    }
                }
            }
            pending = again;
        }
    }

    /// `r` with its attempts' news `sts` (their agents, or their ends), or
    /// None when nothing changes.
    async fn fold(&mut self, r: &JobRecord, sts: &[proto::TaskStatus]) -> Option<JobRecord> {
        if is_terminal(&r.state) || r.state == states::SCHEDULED {
            return None;
        }
        let mut job = record::to_job(r).ok()?;
        let mut ended = Vec::new();
        for status in sts {
            let state = status.state();
            let state_name = state
                .as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_string();
            let terminal = !matches!(
                state,
                TaskState::Staging
                    | TaskState::Starting
                    | TaskState::Running
                    | TaskState::Killing
                    | TaskState::Unreachable
                    | TaskState::Unspecified
            );
            if terminal {
                let exit = status
                    .exit_code
                    .or((state == TaskState::Finished).then_some(0));
                let reason = if status.message.is_empty() {
                    state_name.clone()
                } else {
                    format!("{state_name} ({})", status.message)
                };
                // The deadline may have passed before the end arrived: the
                // machine notes it first, so the attempt's reason says so.
                let now = self.now_ms();
                let _ = job.next(now);
                job.ended(&status.task_id, exit, &reason, now);
                self.killing.remove(&status.task_id);
                self.gangs.remove(&status.task_id);
                ended.push(record::Ending {
                    task_id: status.task_id.clone(),
                    task_state: format!("TASK_{state_name}"),
                    used: record::Used::of_status(status),
                });
            } else if !status.agent_id.is_empty() {
                job.placed(&status.task_id, &status.agent_id);
            }
        }
        let mut out = record::with_progress(r, &job, &ended);
        if out == *r {
            return None;
        }
        // A sweep's trial that ended reports its metric on stdout.
        if is_terminal(&out.state) && !r.params_json.is_empty() {
            if let (Some(metric), Some(ending)) = (job.spec.env.get("MEZZ_METRIC"), ended.last()) {
                match self.store.output(&ending.task_id).await {
                    Ok(text) => {
                        if let Some(m) = sweep::metric_in(&text, metric) {
                            out.has_metric = true;
                            out.metric = m;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %r.name, error = %e, "cannot read the trial's output")
                    }
                }
            }
        }
        Some(out)
    }
}

/// The task of one attempt.
fn task_builder(spec: &JobSpec, task_id: &str) -> TaskBuilder {
    let mut b =
        TaskBuilder::shell(task_id.to_string(), spec.task_command()).name(task_id.to_string());
    for (k, v) in &spec.env {
        b = b.env(k.clone(), v.clone());
    }
    for (k, v) in spec.labels() {
        b = b.label(k, v);
    }
    if let Some(p) = &spec.priority {
        b = b.priority(p.clone());
    }
    b
}
