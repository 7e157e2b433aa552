//! The framework scheduler of one Spark application. It places the whole
//! application (workers, master, driver) as one [`Gang`], replaces workers
//! that die while the driver runs (bounded), and when the driver ends, the
//! master dies or the user interrupts, kills every task that is left and
//! tears the framework down. What happens is reported as [`AppEvent`]s to
//! a sink the caller gives (the CLI prints them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mezz_sdk::{
    place, proto, Driver, FrameworkId, Gang, GangStep, OfferId, Placement, Plan, Scheduler,
    Strategy, TaskReason, TaskState,
};

use crate::app::{ui_url, AppSpec, Endpoint, Role};

pub use crate::app::KILL_GRACE;

/// How long a stop waits for killed tasks before it gives up on them (the
/// teardown that follows makes the master kill what is left).
const STOP_PATIENCE: Duration = Duration::from_secs(20);

/// How long the gang holds offers that do not fit it before it gives them
/// back (and takes new ones).
const GANG_HOLD: Duration = Duration::from_secs(2);

/// How the application ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code for `mezz spark submit`: the driver's, as a shell
    /// would give it.
    pub code: u8,
    /// Why, when it is not a plain success.
    pub message: Option<String>,
}

/// A task as launched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchedTask {
    /// Its role.
    pub role: Role,
    /// Its task id.
    pub task_id: String,
    /// Its agent.
    pub agent_id: String,
    /// Its agent's API address (for its sandbox files).
    pub agent_address: String,
}

/// What the scheduler reports.
#[derive(Clone, Debug, PartialEq)]
pub enum AppEvent {
    /// The gang does not fit yet; the text says what is missing.
    Waiting(String),
    /// The whole application was launched.
    Launched {
        /// The framework's id.
        framework_id: String,
        /// `spark://HOST:PORT`.
        master_url: String,
        /// The master's web UI.
        master_ui: String,
        /// The application's web UI (the driver's).
        app_ui: String,
        /// Every task.
        tasks: Vec<LaunchedTask>,
    },
    /// A worker died while the application ran; a new one is placed.
    Replacing {
        /// Which worker.
        index: u32,
        /// Replacements so far, this one included.
        replacement: u32,
        /// Why.
        reason: String,
    },
    /// A replacement worker was launched.
    Replaced(LaunchedTask),
    /// A task changed state.
    Task {
        /// Its role.
        role: Role,
        /// Its task id.
        task_id: String,
        /// Its new state.
        state: TaskState,
        /// The agent's message.
        message: String,
        /// The application was already stopping (the end is ours).
        stopping: bool,
    },
    /// The application is over; every task is gone.
    Done(Outcome),
    /// A call failed, or the connection was lost (the driver reconnects).
    Notice(String),
}

/// Asks a running [`SparkScheduler`] to kill every task and end (Ctrl-C).
#[derive(Clone, Default)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    driver: Arc<Mutex<Option<Driver>>>,
}

impl Interrupt {
    /// Kills every task; the application then ends with code 130.
    /// Returns false when the scheduler is not subscribed yet.
    pub fn trigger(&self) -> bool {
        self.flag.store(true, Ordering::SeqCst);
        match self.driver() {
            Some(d) => {
                d.wake_after(Duration::ZERO);
                true
            }
            None => false,
        }
    }

    /// The driver, once subscribed (to tear the framework down by force).
    pub fn driver(&self) -> Option<Driver> {
        self.driver.lock().ok().and_then(|d| d.clone())
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Placing,
    Running,
    Stopping {
        overdue_at: Instant,
        outcome: Outcome,
    },
    Done,
}

/// The Spark framework's scheduler: one application.
pub struct SparkScheduler {
    spec: AppSpec,
    phase: Phase,
    gang: Gang,
    /// Offers seen and not yet answered, by id.
    offers: HashMap<String, proto::Offer>,
    framework_id: String,
    master: Option<Endpoint>,
    /// Tasks launched and not yet terminal.
    active: BTreeSet<String>,
    /// The current attempt of each worker.
    workers: BTreeMap<u32, u32>,
    /// Workers waiting for a replacement's offer.
    replace: BTreeSet<u32>,
    replacements: u32,
    max_replacements: u32,
    interrupt: Interrupt,
    sink: Box<dyn FnMut(AppEvent) + Send>,
    publish_webui: bool,
    /// The master UI's URL, once launched, until the caller took it to
    /// subscribe again with it as the framework's `webui_url`.
    webui_to_publish: Option<String>,
}

impl SparkScheduler {
    /// A scheduler for `spec`, reporting to `sink`; at most
    /// `max_replacements` workers are replaced over the application's life.
    pub fn new(
        spec: AppSpec,
        max_replacements: u32,
        sink: impl FnMut(AppEvent) + Send + 'static,
    ) -> SparkScheduler {
        let gang = Gang::new(spec.gang())
            .strategy(Strategy::Spread)
            .hold(GANG_HOLD)
            .refuse(GANG_HOLD / 2);
        SparkScheduler {
            spec,
            phase: Phase::Placing,
            gang,
            offers: HashMap::new(),
            framework_id: String::new(),
            master: None,
            active: BTreeSet::new(),
            workers: BTreeMap::new(),
            replace: BTreeSet::new(),
            replacements: 0,
            max_replacements,
            interrupt: Interrupt::default(),
            sink: Box::new(sink),
            publish_webui: false,
            webui_to_publish: None,
        }
    }

    /// Publish the Spark master's UI as the framework's `webui_url` (shown
    /// on the status page next to the framework). Its port comes from an
    /// offer, so it is known only after the subscription: once the
    /// application is launched the scheduler stops its driver, and the
    /// caller subscribes again with the same framework id and
    /// [`SparkScheduler::take_webui_url`] set in its `FrameworkInfo`.
    pub fn publish_webui(mut self, on: bool) -> Self {
        self.publish_webui = on;
        self
    }

    /// The `webui_url` to subscribe again with, once (see
    /// [`SparkScheduler::publish_webui`]).
    pub fn take_webui_url(&mut self) -> Option<String> {
        self.webui_to_publish.take()
    }

    /// The framework's id, once subscribed.
    pub fn framework_id(&self) -> &str {
        &self.framework_id
    }

    /// A handle to interrupt the application from another task.
    pub fn interrupt_handle(&self) -> Interrupt {
        self.interrupt.clone()
    }

    fn emit(&mut self, e: AppEvent) {
        (self.sink)(e);
    }

    fn host_of(&self, p: &Placement) -> (String, String) {
        let offer = self.offers.get(p.offer_id.as_str());
        let address = offer.map(|o| o.agent_address.clone()).unwrap_or_default();
        (offer.map(agent_host).unwrap_or_default(), address)
    }

    fn launch_gang(&mut self, driver: &Driver, plan: Plan, decline: Vec<OfferId>) {
        let spec = self.spec.clone();
        let mut at: BTreeMap<usize, Endpoint> = BTreeMap::new();
        let mut tasks = Vec::new();
        for p in &plan.placed {
            let (host, agent_address) = self.host_of(p);
            at.insert(
                p.request,
                Endpoint {
                    host,
                    ports: p.ports.clone(),
                },
            );
            let role = spec.gang_role(p.request);
            tasks.push(LaunchedTask {
                role,
                task_id: p.key.clone(),
                agent_id: p.agent_id.to_string(),
                agent_address,
            });
        }
        let master_index = spec.executors as usize;
        let driver_index = master_index + 1;
        let (Some(master), Some(driver_at)) = (
            at.get(&master_index).cloned(),
            at.get(&driver_index).cloned(),
        ) else {
            // A complete plan places every request; nothing to launch.
            return;
        };
        plan.launch(driver, |p| {
            let role = spec.gang_role(p.request);
            let here = at
                .get(&p.request)
                .cloned()
                .unwrap_or_else(|| master.clone());
            spec.task(role, 0, &here, &master)
        });
        for id in plan.used_offers().iter().chain(&decline) {
            self.offers.remove(id.as_str());
        }
        if !decline.is_empty() {
            decline_each(driver, decline, None);
        }
        // The application is whole; offers are of no use until a worker
        // needs replacing.
        driver.suppress();
        self.active = tasks.iter().map(|t| t.task_id.clone()).collect();
        self.workers = (0..spec.executors).map(|i| (i, 0)).collect();
        self.phase = Phase::Running;
        let master_url = format!("spark://{}:{}", master.host, master.ports[0]);
        let master_ui = ui_url(&master.host, master.ports[1]);
        let app_ui = ui_url(&driver_at.host, driver_at.ports[2]);
        self.master = Some(master);
        let framework_id = self.framework_id.clone();
        if self.publish_webui {
            self.webui_to_publish = Some(master_ui.clone());
            // Every call queued above is sent before the driver ends.
            driver.stop();
        }
        self.emit(AppEvent::Launched {
            framework_id,
            master_url,
            master_ui,
            app_ui,
            tasks,
        });
    }

    /// Places the workers that wait for a replacement on `offers`.
    fn launch_replacements(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let ids: Vec<OfferId> = offers.iter().map(|o| OfferId(o.id.clone())).collect();
        let Some(master) = self.master.clone() else {
            decline_each(driver, ids, None);
            return;
        };
        let wanted: Vec<(u32, u32)> = self
            .replace
            .iter()
            .map(|i| (*i, self.workers.get(i).copied().unwrap_or(0) + 1))
            .collect();
        let requests: Vec<_> = wanted
            .iter()
            .map(|(i, attempt)| self.spec.request(Role::Worker(*i), *attempt))
            .collect();
        let plan = place(Strategy::Spread, &offers, &requests);
        for p in &plan.placed {
            let (i, attempt) = wanted[p.request];
            let (host, agent_address) = self.host_of(p);
            let here = Endpoint {
                host,
                ports: p.ports.clone(),
            };
            let task = p.task(self.spec.task(Role::Worker(i), attempt, &here, &master));
            driver.launch([p.offer_id.clone()], vec![task]);
            self.workers.insert(i, attempt);
            self.replace.remove(&i);
            self.active.insert(p.key.clone());
            self.emit(AppEvent::Replaced(LaunchedTask {
                role: Role::Worker(i),
                task_id: p.key.clone(),
                agent_id: p.agent_id.to_string(),
                agent_address,
            }));
        }
        for id in &ids {
            self.offers.remove(id.as_str());
        }
        let unused = plan.unused_offers();
        if !unused.is_empty() {
            decline_each(driver, unused, Some(1.0));
        }
        if self.replace.is_empty() {
            driver.suppress();
        }
    }

    /// Ends the application: kills what is left, then tears down.
    fn stop(&mut self, driver: &Driver, outcome: Outcome) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Done) {
            return;
        }
        for o in self.gang.held() {
            driver.decline([o], None);
        }
        for id in &self.active {
            driver.kill(id.as_str(), Some(KILL_GRACE));
        }
        self.phase = Phase::Stopping {
            overdue_at: Instant::now() + STOP_PATIENCE,
            outcome,
        };
        driver.wake_after(STOP_PATIENCE);
        self.finish_if_stopped(driver, false);
    }

    fn finish_if_stopped(&mut self, driver: &Driver, overdue: bool) {
        let Phase::Stopping { outcome, .. } = &self.phase else {
            return;
        };
        if self.active.is_empty() || overdue {
            let outcome = outcome.clone();
            if overdue && !self.active.is_empty() {
                let left: Vec<&str> = self.active.iter().map(String::as_str).collect();
                let text = format!(
                    "tasks {} did not end within {}s of their kill; the teardown kills them",
                    left.join(", "),
                    STOP_PATIENCE.as_secs()
                );
                self.emit(AppEvent::Notice(text));
            }
            self.phase = Phase::Done;
            self.emit(AppEvent::Done(outcome));
            driver.teardown();
        }
    }

    fn on_task_end(
        &mut self,
        driver: &Driver,
        role: Role,
        attempt: u32,
        status: &proto::TaskStatus,
    ) {
        let state = status.state();
        let what = format!(
            "{role} {}{}{}",
            state.short_name(),
            if status.message.is_empty() { "" } else { ": " },
            status.message
        );
        match role {
            Role::Driver => {
                let outcome = driver_outcome(status);
                self.stop(driver, outcome);
            }
            Role::Master => self.stop(
                driver,
                Outcome {
                    code: 1,
                    message: Some(format!("the Spark master ended ({what})")),
                },
            ),
            Role::Worker(i) => {
                if self.workers.get(&i) != Some(&attempt) {
                    return;
                }
                if self.replacements >= self.max_replacements {
                    self.emit(AppEvent::Notice(format!(
                        "{what}; not replaced: all {} replacements are used",
                        self.max_replacements
                    )));
                    return;
                }
                self.replacements += 1;
                self.replace.insert(i);
                let replacement = self.replacements;
                self.emit(AppEvent::Replacing {
                    index: i,
                    replacement,
                    reason: what,
                });
                driver.revive();
            }
        }
    }

    fn gang_step(&mut self, driver: &Driver, step: GangStep) {
        match step {
            GangStep::Launch { plan, decline } => self.launch_gang(driver, plan, decline),
            GangStep::Hold { until } => {
                driver.wake_after(until.saturating_duration_since(Instant::now()));
                self.say_missing();
            }
            GangStep::Decline {
                offers,
                refuse_seconds,
            } => {
                self.say_missing();
                for o in &offers {
                    self.offers.remove(o.as_str());
                }
                decline_each(driver, offers, Some(refuse_seconds));
            }
            GangStep::Idle => {}
        }
    }

    fn say_missing(&mut self) {
        let held: Vec<proto::Offer> = self
            .gang
            .held()
            .iter()
            .filter_map(|id| self.offers.get(id.as_str()).cloned())
            .collect();
        let text = missing(&self.spec, &held);
        self.emit(AppEvent::Waiting(text));
    }

    fn check_timers(&mut self, driver: &Driver) {
        if self.interrupt.flag.swap(false, Ordering::SeqCst) {
            let outcome = Outcome {
                code: 130,
                message: Some("interrupted".into()),
            };
            if self.phase == Phase::Placing {
                self.phase = Phase::Stopping {
                    overdue_at: Instant::now(),
                    outcome,
                };
                for o in self.gang.held() {
                    driver.decline([o], None);
                }
                self.finish_if_stopped(driver, true);
            } else {
                self.stop(driver, outcome);
            }
        }
        match &self.phase {
            Phase::Placing => {
                let step = self.gang.expire(Instant::now());
                self.gang_step(driver, step);
            }
            Phase::Stopping { overdue_at, .. } if Instant::now() >= *overdue_at => {
                self.finish_if_stopped(driver, true);
            }
            _ => {}
        }
    }
}

/// The outcome the driver's end gives, with the exit code a local
/// `spark-submit` would have had.
pub fn driver_outcome(status: &proto::TaskStatus) -> Outcome {
    let state = status.state();
    let msg = || {
        Some(format!(
            "the driver {}{}{}",
            state.short_name(),
            if status.message.is_empty() { "" } else { ": " },
            status.message
        ))
    };
    match state {
        TaskState::Finished => Outcome {
            code: 0,
            message: None,
        },
        _ if status.reason() == TaskReason::LaunchFailed => Outcome {
            code: 127,
            message: msg(),
        },
        _ if status.exit_code.is_some() => Outcome {
            code: status
                .exit_code
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1)
                .max(1),
            message: msg(),
        },
        _ => Outcome {
            code: status
                .signal
                .and_then(|s| u8::try_from(128 + s).ok())
                .unwrap_or(1),
            message: msg(),
        },
    }
}

/// What the held offers lack for the whole application, in words.
pub fn missing(spec: &AppSpec, held: &[proto::Offer]) -> String {
    let requests = spec.gang();
    if held.is_empty() {
        return format!(
            "needs {} tasks (master, {} worker(s), driver) placed at once; no offer yet",
            requests.len(),
            spec.executors
        );
    }
    let plan = place(Strategy::Spread, held, &requests);
    let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &plan.unplaced {
        let role = match spec.gang_role(i) {
            Role::Worker(_) => "worker".to_string(),
            r => r.to_string(),
        };
        let r = &requests[i];
        let gpus = if r.gpus > 0 {
            format!(" + {} GPU(s)", r.gpus)
        } else {
            String::new()
        };
        *wanted
            .entry(format!(
                "{role} ({}{gpus} + {} ports)",
                r.resources, r.ports
            ))
            .or_default() += 1;
    }
    let lacking: Vec<String> = wanted
        .into_iter()
        .map(|(what, n)| format!("{n} × {what}"))
        .collect();
    let agents: BTreeSet<&str> = held.iter().map(|o| o.agent_id.as_str()).collect();
    format!(
        "{} of {} tasks fit the {} agent(s) offered now; missing: {}",
        plan.placed.len(),
        requests.len(),
        agents.len(),
        lacking.join(", ")
    )
}

/// Declines offers one call each: one decline may not combine offers of
/// different agents, and a refused one would hold its resources until the
/// offer times out.
fn decline_each(driver: &Driver, offers: impl IntoIterator<Item = OfferId>, refuse: Option<f64>) {
    for o in offers {
        driver.decline([o], refuse);
    }
}

/// The host other tasks reach an agent at: its API address's host (agents
/// advertise the address peers can reach), else its hostname.
fn agent_host(offer: &proto::Offer) -> String {
    match offer.agent_address.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => host.trim_matches(['[', ']']).to_string(),
        _ => offer.hostname.clone(),
    }
}

impl Scheduler for SparkScheduler {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, _reconnected: bool) {
        self.framework_id = id.to_string();
        if let Ok(mut d) = self.interrupt.driver.lock() {
            *d = Some(driver.clone());
        }
        if self.interrupt.flag.load(Ordering::SeqCst) {
            driver.wake_after(Duration::ZERO);
        }
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        for o in &offers {
            self.offers.insert(o.id.clone(), o.clone());
        }
        match self.phase {
            Phase::Placing => {
                let step = self.gang.offers(offers, Instant::now());
                self.gang_step(driver, step);
            }
            Phase::Running if !self.replace.is_empty() => {
                self.launch_replacements(driver, offers);
            }
            _ => {
                for o in &offers {
                    self.offers.remove(&o.id);
                }
                decline_each(
                    driver,
                    offers.into_iter().map(|o| OfferId(o.id)),
                    Some(30.0),
                );
            }
        }
    }

    fn rescinded(&mut self, _driver: &Driver, offer_id: &OfferId) {
        self.gang.rescinded(offer_id);
        self.offers.remove(offer_id.as_str());
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let state = status.state();
        let Some((role, attempt)) = self.spec.role_of(&status.task_id) else {
            return;
        };
        if matches!(state, TaskState::Unknown | TaskState::Unreachable) {
            return;
        }
        let stopping = matches!(self.phase, Phase::Stopping { .. } | Phase::Done);
        self.emit(AppEvent::Task {
            role,
            task_id: status.task_id.clone(),
            state,
            message: status.message.clone(),
            stopping,
        });
        if !state.is_terminal() {
            return;
        }
        let was_active = self.active.remove(&status.task_id);
        match self.phase {
            Phase::Running if was_active => self.on_task_end(driver, role, attempt, status),
            Phase::Stopping { .. } => self.finish_if_stopped(driver, false),
            _ => {}
        }
    }

    fn error(&mut self, _driver: &Driver, message: &str) {
        self.emit(AppEvent::Notice(message.to_string()));
    }

    fn wakeup(&mut self, driver: &Driver) {
        self.check_timers(driver);
    }

    fn disconnected(&mut self, _driver: &Driver) {
        self.gang.disconnected();
        self.offers.clear();
        self.emit(AppEvent::Notice("lost the master; reconnecting…".into()));
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
