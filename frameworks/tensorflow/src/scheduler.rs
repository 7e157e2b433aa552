//! The framework scheduler: the thin shell around [`Job`] and the SDK's
//! [`Gang`]. It places the whole gang at once (a port per replica, whole
//! GPUs, workers' GPUs packed onto few agents), builds each replica's
//! cluster-spec environment, and carries out the job's actions through the
//! [`Driver`]. What happens is reported as [`JobEvent`]s to a sink the
//! caller gives (the CLI prints them).

use mezz_sdk::{CPUS, MEM};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mezz_sdk::{
    offer_host, place, proto, Driver, FrameworkId, Gang, GangStep, OfferId, Resources, Scheduler,
    Strategy, TaskBuilder, TaskRequest, TaskState,
};

use crate::cluster::{check_distinct_addresses, replica_env, Endpoint};
use crate::job::{Action, Job, Outcome, Phase};
use crate::spec::{JobSpec, ReplicaId};

/// Time between SIGTERM and SIGKILL for a replica: TensorFlow catches
/// SIGTERM and may never exit on it.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// How long a stop waits for killed replicas before it gives up on them.
const STOP_PATIENCE: Duration = Duration::from_secs(20);

/// How long after a job's run deadline (and the kill grace) the master
/// kills replicas the framework did not.
const RUN_DEADLINE_BACKSTOP: Duration = Duration::from_secs(10);

/// A replica as launched.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchedReplica {
    /// Which replica.
    pub replica: ReplicaId,
    /// Its task id in this attempt.
    pub task_id: String,
    /// Its agent.
    pub agent_id: String,
    /// Its agent's API address (for its sandbox output).
    pub agent_address: String,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// The GPU identities it was given.
    pub gpus: Vec<String>,
}

/// What the scheduler reports.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// The gang does not fit yet; the text says what is missing.
    Waiting(String),
    /// The whole gang of `attempt` was launched.
    Launched {
        /// The attempt, from 0.
        attempt: u32,
        /// The framework's id (sandbox files are under it).
        framework_id: String,
        /// Every replica.
        replicas: Vec<LaunchedReplica>,
    },
    /// A replica changed state.
    Replica {
        /// Which.
        replica: ReplicaId,
        /// In which attempt.
        attempt: u32,
        /// Its new state.
        state: TaskState,
        /// The agent's message.
        message: String,
        /// The job was already stopping this attempt (the end is ours).
        stopping: bool,
    },
    /// Every replica of `attempt` runs.
    AllRunning {
        /// The attempt.
        attempt: u32,
    },
    /// A replica failed; the whole gang is placed again after `after`.
    Restarting {
        /// The restart's number (1 for the first).
        restart: u32,
        /// The backoff.
        after: Duration,
        /// Why.
        reason: String,
    },
    /// The job is over.
    Done(Outcome),
    /// A call failed, or the connection was lost (the driver reconnects).
    Notice(String),
}

/// Asks a running [`TfScheduler`] to kill every replica and end (Ctrl-C).
#[derive(Clone, Default)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    driver: Arc<Mutex<Option<Driver>>>,
}

impl Interrupt {
    /// Kills every replica; the job then ends as failed ("interrupted").
    /// Returns false when the scheduler is not subscribed yet.
    pub fn trigger(&self) -> bool {
        self.flag.store(true, Ordering::SeqCst);
        let driver = self.driver.lock().ok().and_then(|d| d.clone());
        match driver {
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

/// The distributed-training framework's scheduler.
pub struct TfScheduler {
    job: Job,
    gang: Gang,
    /// Offers seen and not yet answered, by id: the hosts for the cluster
    /// spec, and what the gang holds for "what is missing".
    offers: HashMap<String, proto::Offer>,
    framework_id: String,
    interrupt: Interrupt,
    sink: Box<dyn FnMut(JobEvent) + Send>,
    all_running_said: bool,
    hold: Duration,
    /// What the gang lacked when it last did not fit (a start deadline
    /// that passes names it).
    waiting_for: String,
}

impl TfScheduler {
    /// A scheduler for `spec`, reporting to `sink`.
    pub fn new(spec: JobSpec, sink: impl FnMut(JobEvent) + Send + 'static) -> TfScheduler {
        let hold = Duration::from_secs(2);
        let gang = gang_for(&spec, 0, hold);
        let mut job = Job::new(spec);
        job.waiting_since(Instant::now());
        TfScheduler {
            job,
            gang,
            offers: HashMap::new(),
            framework_id: String::new(),
            interrupt: Interrupt::default(),
            sink: Box::new(sink),
            all_running_said: false,
            hold,
            waiting_for: String::new(),
        }
    }

    /// How long offers are held while the gang does not fit (default 2 s).
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self.gang = gang_for(self.job.spec(), self.job.attempt(), hold);
        self
    }

    /// A handle to interrupt the job from another task.
    pub fn interrupt_handle(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }

    fn emit(&mut self, e: JobEvent) {
        (self.sink)(e);
    }

    fn act(&mut self, driver: &Driver, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Kill(ids) => {
                    for id in ids {
                        driver.kill(id.as_str(), Some(KILL_GRACE));
                    }
                    driver.wake_after(STOP_PATIENCE);
                }
                Action::RestartAt {
                    at,
                    restart,
                    reason,
                } => {
                    let after = at.saturating_duration_since(Instant::now());
                    self.emit(JobEvent::Restarting {
                        restart,
                        after,
                        reason,
                    });
                    driver.wake_after(after);
                }
                Action::Finish(outcome) => {
                    self.emit(JobEvent::Done(outcome));
                    driver.teardown();
                }
            }
        }
    }

    /// Carries out a gang step that launches nothing.
    fn gang_step(&mut self, driver: &Driver, step: GangStep) {
        match step {
            GangStep::Launch { plan, decline } => self.launch(driver, plan, decline),
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
                driver.decline(offers, Some(refuse_seconds));
            }
            GangStep::Idle => {}
        }
    }

    /// Tells what the offers held now lack.
    fn say_missing(&mut self) {
        let held: Vec<proto::Offer> = self
            .gang
            .held()
            .iter()
            .filter_map(|id| self.offers.get(id.as_str()).cloned())
            .collect();
        let text = missing(self.job.spec(), self.gang.requests(), &held);
        // Between offers the text says only that none is held: keep the
        // last one that said what the offers lacked.
        if !held.is_empty() || self.waiting_for.is_empty() {
            self.waiting_for.clone_from(&text);
        }
        self.emit(JobEvent::Waiting(text));
    }

    fn launch(&mut self, driver: &Driver, plan: mezz_sdk::Plan, decline: Vec<OfferId>) {
        let spec = self.job.spec().clone();
        let attempt = self.job.attempt();
        let ids = spec.replica_ids();
        let mut placed: BTreeMap<ReplicaId, Endpoint> = BTreeMap::new();
        let mut launched = Vec::new();
        for p in &plan.placed {
            let replica = ids[p.request];
            let offer = self.offers.get(p.offer_id.as_str());
            let agent_address = offer.map(|o| o.agent_address.clone()).unwrap_or_default();
            let host = offer.map(offer_host).unwrap_or_default();
            let endpoint = Endpoint {
                host,
                port: p.ports.first().copied().unwrap_or(0),
            };
            placed.insert(replica, endpoint.clone());
            launched.push(LaunchedReplica {
                replica,
                task_id: p.key.clone(),
                agent_id: p.agent_id.0.clone(),
                agent_address,
                endpoint,
                gpus: p.gpus.clone(),
            });
        }
        if let Err(e) = check_distinct_addresses(&placed) {
            // Launching would start a replica that cannot bind, or join
            // the wrong peer: nothing starts, and the job says why.
            let offers: Vec<OfferId> = plan.used_offers().into_iter().chain(decline).collect();
            for id in &offers {
                self.offers.remove(id.as_str());
            }
            driver.decline(offers, None);
            let actions = self.job.refuse(e.to_string());
            self.act(driver, actions);
            return;
        }
        // The master kills a replica a little after the job's run deadline
        // should have (this framework kills first): a backstop for when
        // the framework is gone.
        let backstop = self
            .job
            .run_time_left(Instant::now())
            .map(|left| left + KILL_GRACE + RUN_DEADLINE_BACKSTOP);
        plan.launch(driver, |p| {
            let replica = ids[p.request];
            let mut b = command_builder(&p.key, spec.command_of(replica))
                .name(replica.task_name(&spec.name))
                .label("mezz-tf-job", spec.name.clone())
                .label("mezz-tf-replica", replica.to_string())
                // The replicas are one gang: preempted together or not at all.
                .label("gang", spec.name.clone())
                .kill_grace(KILL_GRACE);
            for (k, v) in replica_env(&spec, &placed, replica) {
                b = b.env(k, v);
            }
            if let Some(limit) = backstop {
                b = b.max_run(limit);
            }
            b
        });
        for id in plan.used_offers().iter().chain(&decline) {
            self.offers.remove(id.as_str());
        }
        if !decline.is_empty() {
            driver.decline(decline, None);
        }
        // The gang is whole; more offers are of no use until a restart.
        driver.suppress();
        driver.set_demand(Vec::new());
        self.job.launched(Instant::now());
        self.arm_deadline(driver);
        self.all_running_said = false;
        let framework_id = self.framework_id.clone();
        self.emit(JobEvent::Launched {
            attempt,
            framework_id,
            replicas: launched,
        });
    }

    /// A wake-up when the job's next deadline passes.
    fn arm_deadline(&self, driver: &Driver) {
        if let Some(at) = self.job.next_deadline() {
            driver.wake_after(at.saturating_duration_since(Instant::now()));
        }
    }

    /// Carries out actions that may end the job before its gang was
    /// launched: offers it still holds go back.
    fn act_ending(&mut self, driver: &Driver, actions: Vec<Action>) {
        if matches!(self.job.phase(), Phase::Done(_)) {
            for o in self.gang.held() {
                driver.decline([o], None);
            }
        }
        self.act(driver, actions);
    }

    fn check_timers(&mut self, driver: &Driver) {
        let now = Instant::now();
        if self.interrupt.flag.swap(false, Ordering::SeqCst) {
            let actions = self.job.interrupt(now);
            self.act_ending(driver, actions);
        }
        let waiting_for = self.waiting_for.clone();
        let actions = self.job.check_deadlines(now, &waiting_for);
        self.act_ending(driver, actions);
        let overdue = self.job.stop_overdue(now, STOP_PATIENCE);
        self.act(driver, overdue);
        if self.job.restart_due(now) {
            self.gang = gang_for(self.job.spec(), self.job.attempt(), self.hold);
            self.waiting_for.clear();
            driver.revive();
            driver.set_demand(demands(self.job.spec()));
            self.arm_deadline(driver);
        }
        if self.job.phase() == &Phase::Placing {
            let step = self.gang.expire(now);
            self.gang_step(driver, step);
        }
    }
}

/// The gang of one attempt: a request per replica (a port each, whole
/// GPUs), bin-packed when GPUs are asked for so workers' GPUs share as few
/// machines as possible, spread otherwise.
fn gang_for(spec: &JobSpec, attempt: u32, hold: Duration) -> Gang {
    let requests = requests_for(spec, attempt);
    let gpus = requests.iter().any(|r| r.gpus > 0);
    Gang::new(requests)
        .strategy(if gpus {
            Strategy::BinPack
        } else {
            Strategy::Spread
        })
        .hold(hold)
        .refuse(hold / 2)
}

/// One placement request per replica, keyed by its task id.
pub fn requests_for(spec: &JobSpec, attempt: u32) -> Vec<TaskRequest> {
    spec.replica_ids()
        .into_iter()
        .map(|r| {
            let g = spec.group(r.kind).cloned().unwrap_or_else(|| {
                // replica_ids only yields types that have a group.
                crate::spec::ReplicaGroup::new(0)
            });
            let need = Resources::new()
                .with_scalar(CPUS, g.cpus)
                .with_scalar(MEM, g.mem);
            TaskRequest::new(r.task_id(&spec.name, attempt), need)
                .ports(1)
                .gpus(g.gpus as usize)
        })
        .collect()
}

/// What the held offers lack for the whole gang, in words.
pub fn missing(spec: &JobSpec, requests: &[TaskRequest], held: &[proto::Offer]) -> String {
    if held.is_empty() {
        return format!(
            "needs {} replica(s) placed at once; no offer holds any of them yet",
            requests.len()
        );
    }
    let plan = place(Strategy::FirstFit, held, requests);
    let ids = spec.replica_ids();
    let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &plan.unplaced {
        let r = &requests[i];
        let gpus = if r.gpus > 0 {
            format!(" + {} GPU(s)", r.gpus)
        } else {
            String::new()
        };
        *wanted
            .entry(format!("{} ({}{gpus} + 1 port)", ids[i].kind, r.resources))
            .or_default() += 1;
    }
    let lacking: Vec<String> = wanted
        .into_iter()
        .map(|(what, n)| format!("{n} × {what}"))
        .collect();
    let agents: std::collections::BTreeSet<&str> =
        held.iter().map(|o| o.agent_id.as_str()).collect();
    format!(
        "{} of {} replicas fit the {} agent(s) offered now; missing: {}",
        plan.placed.len(),
        requests.len(),
        agents.len(),
        lacking.join(", ")
    )
}

/// A task running `command`: one argument with spaces or shell symbols
/// runs through `/bin/sh -c` (as with `mezz run`), otherwise it is exec'd.
fn command_builder(task_id: &str, command: &[String]) -> TaskBuilder {
    let shellish = |s: &str| {
        s.chars()
            .any(|c| c.is_whitespace() || "|&;<>()$`\\\"'*?[#~=%".contains(c))
    };
    match command {
        [one] if shellish(one) => TaskBuilder::shell(task_id, one.clone()),
        [program, args @ ..] => TaskBuilder::exec(task_id, program.clone(), args.iter().cloned()),
        [] => TaskBuilder::shell(task_id, "true"),
    }
}

/// What a job waits for, as the master's queue sees it: one demand per
/// replica group (a demand has one shape per task), `JOB-GROUP`, of all
/// the group's replicas together.
pub fn demands(spec: &JobSpec) -> Vec<proto::Demand> {
    spec.groups
        .iter()
        .map(|(kind, g)| proto::Demand {
            id: format!("{}-{kind}", spec.name),
            resources: Resources::new()
                .with_scalar("cpus", g.cpus)
                .with_scalar("mem", g.mem)
                .with_scalar("gpus", g.gpus as f64)
                .to_proto(),
            tasks: g.count,
            priority: String::new(),
            start_deadline_secs: 0.0,
        })
        .collect()
}

impl Scheduler for TfScheduler {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, _reconnected: bool) {
        self.framework_id = id.to_string();
        if let Ok(mut d) = self.interrupt.driver.lock() {
            *d = Some(driver.clone());
        }
        if self.interrupt.flag.load(Ordering::SeqCst) {
            driver.wake_after(Duration::ZERO);
        }
        // The master's queue (and preemption for a higher class) hears
        // what the job waits for; demand is soft state, so again after
        // every re-subscription.
        if self.job.phase() == &Phase::Placing {
            driver.set_demand(demands(self.job.spec()));
        }
        self.arm_deadline(driver);
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        if self.job.phase() != &Phase::Placing {
            driver.decline(offers.into_iter().map(|o| o.id), Some(30.0));
            return;
        }
        for o in &offers {
            self.offers.insert(o.id.clone(), o.clone());
        }
        let step = self.gang.offers(offers, Instant::now());
        self.gang_step(driver, step);
    }

    fn rescinded(&mut self, _driver: &Driver, offer_id: &OfferId) {
        self.gang.rescinded(offer_id);
        self.offers.remove(offer_id.as_str());
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let state = status.state();
        let name = self.job.spec().name.clone();
        let stopping = matches!(self.job.phase(), Phase::Stopping { .. } | Phase::Done(_));
        if let Some((replica, attempt)) = ReplicaId::parse_task_id(&name, &status.task_id) {
            if !matches!(state, TaskState::Unknown | TaskState::Unreachable) {
                self.emit(JobEvent::Replica {
                    replica,
                    attempt,
                    state,
                    message: status.message.clone(),
                    stopping,
                });
            }
        }
        let actions = self
            .job
            .update(&status.task_id, state, &status.message, Instant::now());
        if !self.all_running_said && self.job.all_running() {
            self.all_running_said = true;
            let attempt = self.job.attempt();
            self.emit(JobEvent::AllRunning { attempt });
        }
        self.act(driver, actions);
    }

    fn error(&mut self, _driver: &Driver, message: &str) {
        self.emit(JobEvent::Notice(message.to_string()));
    }

    fn wakeup(&mut self, driver: &Driver) {
        self.check_timers(driver);
    }

    fn disconnected(&mut self, _driver: &Driver) {
        self.gang.disconnected();
        self.offers.clear();
        self.emit(JobEvent::Notice("lost the master; reconnecting…".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Overrides;

    fn offer(id: &str, res: &str) -> proto::Offer {
        proto::Offer {
            id: id.into(),
            agent_id: format!("agent-{id}"),
            agent_address: "127.0.0.1:5051".into(),
            resources: Resources::parse(res).expect("valid").to_proto(),
            ..Default::default()
        }
    }

    fn spec(o: Overrides) -> JobSpec {
        let o = Overrides {
            name: Some("j".into()),
            command: vec!["t".into()],
            ..o
        };
        JobSpec::build(None, o, |n| Ok(crate::Sizes::builtin().get(n)?)).expect("valid")
    }

    #[test]
    fn requests_take_a_port_each_and_gpus_for_compute_replicas() {
        let s = spec(Overrides {
            chief: true,
            workers: Some(2),
            ps: Some(1),
            gpus: Some(1),
            ..Default::default()
        });
        let r = requests_for(&s, 3);
        let keys: Vec<&str> = r.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            ["j.chief.0.3", "j.worker.0.3", "j.worker.1.3", "j.ps.0.3"]
        );
        assert!(r.iter().all(|r| r.ports == 1));
        let gpus: Vec<usize> = r.iter().map(|r| r.gpus).collect();
        assert_eq!(gpus, [1, 1, 1, 0]);
    }

    #[test]
    fn missing_names_what_does_not_fit() {
        let s = spec(Overrides {
            workers: Some(4),
            cpus: Some(1.0),
            mem: Some(64.0),
            ..Default::default()
        });
        let r = requests_for(&s, 0);
        let held = [offer("a", "cpus:3;mem:1024;ports:[31000-31010]")];
        let text = missing(&s, &r, &held);
        assert!(
            text.starts_with("3 of 4 replicas fit the 1 agent(s)"),
            "{text}"
        );
        assert!(
            text.contains("1 × worker (cpus:1;mem:64 + 1 port)"),
            "{text}"
        );
        assert!(missing(&s, &r, &[]).contains("no offer"));
    }

    #[test]
    fn gpu_gangs_pack_onto_few_agents() {
        let s = spec(Overrides {
            workers: Some(2),
            gpus: Some(1),
            ..Default::default()
        });
        let mut gang = gang_for(&s, 0, Duration::from_secs(1));
        let offers = vec![
            offer("a", "cpus:8;mem:8192;ports:[1-10];gpus:{g0,g1,g2,g3}"),
            offer("b", "cpus:8;mem:8192;ports:[1-10];gpus:{g0,g1}"),
        ];
        let GangStep::Launch { plan, .. } = gang.offers(offers, Instant::now()) else {
            panic!("the gang fits")
        };
        let agents: std::collections::BTreeSet<_> =
            plan.placed.iter().map(|p| p.agent_id.as_str()).collect();
        assert_eq!(agents.len(), 1, "{plan:?}");
        let gpus: std::collections::BTreeSet<_> =
            plan.placed.iter().flat_map(|p| p.gpus.clone()).collect();
        assert_eq!(gpus.len(), 2, "distinct GPUs");
    }

    #[test]
    fn commands_run_like_mezz_run() {
        let t = command_builder("x", &["python3 t.py".into()]).build(&proto::Offer::default());
        assert!(t.command.as_ref().is_some_and(|c| c.shell));
        let t = command_builder("x", &["python3".into(), "t.py".into()])
            .build(&proto::Offer::default());
        assert_eq!(t.command.map(|c| c.arguments), Some(vec!["t.py".into()]));
        assert_eq!(offer_host(&offer("a", "cpus:1")), "127.0.0.1");
    }
}
