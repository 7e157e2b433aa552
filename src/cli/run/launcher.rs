//! `mezz run`'s scheduling: the launch state machine ([`Launcher`], no
//! I/O, time passed in) and the SDK scheduler around it ([`RunScheduler`]).

use super::*;

/// What the scheduler tells the foreground.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Progress {
    Waiting(String),
    /// An accept was sent for this task.
    Attempt {
        task_id: String,
        agent_address: String,
        framework_id: String,
    },
    /// The launch may not have gone through; the master is being asked.
    Unsure {
        task_id: String,
        why: String,
    },
    /// The task never started; offers are taken again.
    Retry {
        task_id: String,
        why: String,
    },
    /// An update of the task being launched or run.
    Update(proto::TaskStatus),
    Error(String),
    Disconnected,
}

/// Where the one task of `mezz run` stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Launch {
    /// No launch in flight: offers are taken.
    Waiting,
    /// An accept was sent and the task has not been seen RUNNING (nor
    /// ended). Once `unsure` (a failed call, a lost master, no news for
    /// a while) the master is asked about the task until it says: the task
    /// is launched again only when it does not know it, so it never runs
    /// twice.
    Pending {
        task_id: String,
        agent_id: String,
        since: Instant,
        unsure: bool,
        unknown_since: Option<Instant>,
    },
    /// RUNNING or ended: its updates are what counts.
    Started { task_id: String },
}

/// A call to make, as the launch state machine decides it.
#[derive(Debug)]
pub(super) enum Action {
    Launch {
        offer_id: String,
        task: Box<proto::TaskInfo>,
    },
    Decline {
        offer_ids: Vec<String>,
        refuse_seconds: f64,
    },
    Suppress,
    Revive,
    Reconcile {
        task_id: String,
        agent_id: String,
    },
    WakeAfter(Duration),
    /// Tell the master what the task waits for (empty: nothing).
    SetDemand(Vec<proto::Demand>),
    Tell(Progress),
    Stop,
    Teardown,
}

/// `mezz run`'s scheduling, without I/O: callbacks in, actions out, time
/// passed in (see [`RunScheduler`] for the shell around it).
pub(super) struct Launcher {
    pub(super) need: Resources,
    /// The framework's role: resources reserved for it are used first.
    pub(super) role: String,
    /// GPUs wanted (a count here; specific ids are picked from the offer).
    pub(super) gpus: u32,
    pub(super) template: TaskBuilder,
    /// The first attempt's task id; later ones get `.2`, `.3`, ….
    pub(super) base_id: String,
    pub(super) attempts: u32,
    pub(super) state: Launch,
    pub(super) detach: bool,
    pub(super) largest_offer: Option<(Resources, String)>,
    pub(super) next_wake: Option<Instant>,
    /// What the master is told the task waits for while no launch is in
    /// flight (its queue, preemption and start deadline); `None`: nothing.
    pub(super) demand: Option<proto::Demand>,
}

impl Launcher {
    pub(super) fn new(
        need: Resources,
        role: String,
        gpus: u32,
        template: TaskBuilder,
        base_id: String,
        detach: bool,
    ) -> Self {
        Launcher {
            need,
            role,
            gpus,
            template,
            base_id,
            attempts: 0,
            state: Launch::Waiting,
            detach,
            largest_offer: None,
            next_wake: None,
            demand: None,
        }
    }

    /// The task id of the launch in flight or running.
    pub(super) fn task_id(&self) -> Option<&str> {
        match &self.state {
            Launch::Waiting => None,
            Launch::Pending { task_id, .. } | Launch::Started { task_id } => Some(task_id),
        }
    }

    /// Asks to be woken `after` from `now`, unless an earlier wake-up is due.
    pub(super) fn wake(&mut self, now: Instant, after: Duration, out: &mut Vec<Action>) {
        let at = now + after;
        if self.next_wake.is_none_or(|w| at < w || w <= now) {
            self.next_wake = Some(at);
            out.push(Action::WakeAfter(after));
        }
    }

    /// Marks a pending launch unsure and asks the master about it.
    pub(super) fn ask(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Launch::Pending {
            task_id,
            agent_id,
            unsure,
            ..
        } = &mut self.state
        {
            *unsure = true;
            out.push(Action::Reconcile {
                task_id: task_id.clone(),
                agent_id: agent_id.clone(),
            });
            self.wake(now, ASK_EVERY, out);
        }
    }

    /// The pending launch did not happen: take offers again.
    pub(super) fn retry(&mut self, why: String, out: &mut Vec<Action>) {
        if let Some(task_id) = self.task_id().map(str::to_string) {
            self.state = Launch::Waiting;
            out.push(Action::Revive);
            if let Some(d) = &self.demand {
                out.push(Action::SetDemand(vec![d.clone()]));
            }
            out.push(Action::Tell(Progress::Retry { task_id, why }));
        }
    }

    pub(super) fn offers(&mut self, offers: Vec<proto::Offer>, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // The master takes a decline of one agent's offers at a time.
        let mut decline: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for offer in offers {
            let offered = Resources::from_proto(&offer.resources).unwrap_or_default();
            if self.state == Launch::Waiting {
                if let Some(take) = self.fit(&offer, &offered) {
                    self.attempts += 1;
                    let task_id = if self.attempts == 1 {
                        self.base_id.clone()
                    } else {
                        format!("{}.{}", self.base_id, self.attempts)
                    };
                    let mut task = self.template.clone().resources(&take).build(&offer);
                    task.task_id = task_id.clone();
                    self.state = Launch::Pending {
                        task_id: task_id.clone(),
                        agent_id: offer.agent_id.clone(),
                        since: now,
                        unsure: false,
                        unknown_since: None,
                    };
                    out.push(Action::Tell(Progress::Attempt {
                        task_id,
                        agent_address: offer.agent_address.clone(),
                        framework_id: offer.framework_id.clone(),
                    }));
                    out.push(Action::Launch {
                        offer_id: offer.id,
                        task: Box::new(task),
                    });
                    if self.demand.is_some() {
                        out.push(Action::SetDemand(Vec::new()));
                    }
                    out.push(Action::Suppress);
                    self.wake(now, LAUNCH_PATIENCE, &mut out);
                    continue;
                }
                let bigger = self.largest_offer.as_ref().is_none_or(|(r, _)| {
                    offered.dominant_share(&self.need) > r.dominant_share(&self.need)
                });
                if bigger {
                    self.largest_offer = Some((offered, offer.hostname.clone()));
                }
            }
            decline.entry(offer.agent_id).or_default().push(offer.id);
        }
        let waiting = self.state == Launch::Waiting;
        for (_, offer_ids) in decline {
            out.push(Action::Decline {
                offer_ids,
                refuse_seconds: if waiting { 1.0 } else { 3600.0 },
            });
        }
        if waiting {
            let why = match &self.largest_offer {
                Some((r, host)) => format!(
                    "needs {}; the largest offer so far is {r} on {host}",
                    self.need
                ),
                None => format!("needs {}; no offer yet", self.need),
            };
            let why = if self.gpus > 0 {
                format!("{why} (and {} GPU(s) on one agent)", self.gpus)
            } else {
                why
            };
            out.push(Action::Tell(Progress::Waiting(why)));
        }
        out
    }

    /// What to ask for from `offered` (of `offer`), when it holds the
    /// task; several GPUs are the agent's best-connected ones.
    pub(super) fn fit(&self, offer: &proto::Offer, offered: &Resources) -> Option<Resources> {
        let gpu_ids = mezz_sdk::pick_gpus(offer, offered, self.gpus as usize)?;
        let want = if self.gpus > 0 {
            self.need.clone().with_set("gpus", &gpu_ids)
        } else {
            self.need.clone()
        };
        offered.take_for_role(&want, &self.role)
    }

    pub(super) fn status(&mut self, status: &proto::TaskStatus, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // The master ends waiting demand past its start deadline.
        if self.state == Launch::Waiting
            && status.task_id == self.base_id
            && status.reason() == TaskReason::DeadlineNotMet
        {
            out.push(Action::Tell(Progress::Update(status.clone())));
            out.push(Action::Teardown);
            return out;
        }
        if self.task_id() != Some(status.task_id.as_str()) {
            return out;
        }
        let state = status.state();
        let mut retry: Option<String> = None;
        let mut wake: Option<Duration> = None;
        if let Launch::Pending {
            unknown_since,
            since,
            unsure,
            ..
        } = &mut self.state
        {
            match state {
                TaskState::Unknown => match *unknown_since {
                    Some(t) if now.duration_since(t) >= UNKNOWN_CONFIRM => {
                        retry = Some(format!(
                            "the master does not know task {}: it never started",
                            status.task_id
                        ));
                    }
                    Some(_) => {}
                    None => {
                        *unknown_since = Some(now);
                        *unsure = true;
                        wake = Some(UNKNOWN_CONFIRM);
                    }
                },
                TaskState::Unreachable => {
                    // Its agent has not re-registered with this master yet.
                    *unknown_since = None;
                    *unsure = true;
                    wake = Some(ASK_EVERY);
                }
                TaskState::Dropped if status.reason() == TaskReason::ResourcesUnavailable => {
                    retry = Some(format!(
                        "task {} was not launched ({})",
                        status.task_id, status.message
                    ));
                }
                TaskState::Staging | TaskState::Starting => {
                    // The master has it; news should follow.
                    *unknown_since = None;
                    *unsure = false;
                    *since = now;
                }
                _ => {
                    self.state = Launch::Started {
                        task_id: status.task_id.clone(),
                    };
                }
            }
            if let Some(why) = retry {
                self.retry(why, &mut out);
                return out;
            }
            if matches!(state, TaskState::Unknown | TaskState::Unreachable) {
                if let Some(after) = wake {
                    self.wake(now, after, &mut out);
                }
                return out;
            }
        } else if matches!(state, TaskState::Unknown | TaskState::Unreachable) {
            // Reconciliation answers while agents re-register are not news.
            return out;
        }
        out.push(Action::Tell(Progress::Update(status.clone())));
        if state.is_terminal() {
            out.push(Action::Teardown);
        } else if self.detach && state == TaskState::Running {
            out.push(Action::Stop);
        }
        out
    }

    /// A call failed for good (the message names it).
    pub(super) fn failed_call(&mut self, message: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.task_id().map(str::to_string) {
            Some(task_id) if matches!(self.state, Launch::Pending { .. }) => {
                out.push(Action::Tell(Progress::Unsure {
                    task_id,
                    why: message.to_string(),
                }));
                self.ask(now, &mut out);
            }
            _ => out.push(Action::Tell(Progress::Error(message.to_string()))),
        }
        out
    }

    pub(super) fn disconnected(&mut self) -> Vec<Action> {
        if let Launch::Pending { unsure, .. } = &mut self.state {
            *unsure = true;
        }
        vec![Action::Tell(Progress::Disconnected)]
    }

    pub(super) fn subscribed(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // Offers of the last master are void, and so may be an accept that
        // was on its way: ask the new one.
        self.ask(now, &mut out);
        // Demand is the leader's soft state: a new one hears it again.
        if let (Launch::Waiting, Some(d)) = (&self.state, &self.demand) {
            out.push(Action::SetDemand(vec![d.clone()]));
        }
        out
    }

    pub(super) fn wakeup(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.next_wake.is_some_and(|w| w <= now) {
            self.next_wake = None;
        }
        if let Launch::Pending { since, unsure, .. } = &self.state {
            let quiet = now.duration_since(*since);
            if *unsure || quiet >= LAUNCH_PATIENCE {
                self.ask(now, &mut out);
            } else {
                self.wake(now, LAUNCH_PATIENCE - quiet, &mut out);
            }
        }
        out
    }
}

/// The shell around [`Launcher`]: SDK callbacks in, driver calls and
/// progress out.
pub(super) struct RunScheduler {
    pub(super) launcher: Launcher,
    pub(super) tx: mpsc::UnboundedSender<Progress>,
    pub(super) driver: Arc<Mutex<Option<Driver>>>,
}

impl RunScheduler {
    pub(super) fn apply(&self, driver: &Driver, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Launch { offer_id, task } => driver.launch([offer_id], vec![*task]),
                Action::Decline {
                    offer_ids,
                    refuse_seconds,
                } => driver.decline(offer_ids, Some(refuse_seconds)),
                Action::Suppress => driver.suppress(),
                Action::Revive => driver.revive(),
                Action::Reconcile { task_id, agent_id } => {
                    driver.reconcile(vec![proto::ReconcileTask { task_id, agent_id }])
                }
                Action::WakeAfter(d) => driver.wake_after(d),
                Action::SetDemand(demands) => driver.set_demand(demands),
                Action::Tell(p) => {
                    let _ = self.tx.send(p);
                }
                Action::Stop => driver.stop(),
                Action::Teardown => driver.teardown(),
            }
        }
    }
}

impl Scheduler for RunScheduler {
    fn subscribed(&mut self, driver: &Driver, _id: &FrameworkId, _reconnected: bool) {
        if let Ok(mut d) = self.driver.lock() {
            *d = Some(driver.clone());
        }
        let actions = self.launcher.subscribed(Instant::now());
        self.apply(driver, actions);
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let actions = self.launcher.offers(offers, Instant::now());
        self.apply(driver, actions);
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let actions = self.launcher.status(status, Instant::now());
        self.apply(driver, actions);
    }

    fn error(&mut self, driver: &Driver, message: &str) {
        let actions = self.launcher.failed_call(message, Instant::now());
        self.apply(driver, actions);
    }

    fn wakeup(&mut self, driver: &Driver) {
        let actions = self.launcher.wakeup(Instant::now());
        self.apply(driver, actions);
    }

    fn disconnected(&mut self, driver: &Driver) {
        let actions = self.launcher.disconnected();
        self.apply(driver, actions);
    }
}
