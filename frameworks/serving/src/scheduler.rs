//! The framework's book of services and its SDK scheduler. The book holds
//! the desired state (persisted on every change), each replica slot's task
//! through a [`TaskTracker`] (restarts with backoff, recognition of running
//! replicas after a failover) and the health the agents report. The
//! scheduler callbacks, the local API and the proxies all work on one book
//! behind a mutex, held only for short work: no network call is made under
//! it, and the one disk write is the small services file.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mezz_sdk::{offer_host, place, proto, Change, Driver, FrameworkId, Phase, Scheduler};
use mezz_sdk::{AgentId, Resources, RetryPolicy, Strategy, TaskBuilder, TaskId, TaskReason};
use mezz_sdk::{TaskRequest, TaskTracker};
use serde::{Deserialize, Serialize};

use crate::service::{Canary, DeployRequest, Pace, Service, Slot, Update};
use crate::store::{Desired, Document, StateDir};
use crate::Error;

/// How long a failed-over framework waits for reconciliation answers
/// before launching replicas it has not heard of.
pub const RECOVERY: Duration = Duration::from_secs(3);
/// SIGTERM to SIGKILL for a replica.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long a replica being stopped may take to finish the requests the
/// proxy sent it before it is killed anyway.
pub const DRAIN: Duration = Duration::from_secs(30);

/// What is known about one replica slot right now.
#[derive(Clone, Debug, Default)]
struct Replica {
    healthy: bool,
    message: String,
}

/// One service and what is known about its replicas.
struct Entry {
    service: Service,
    replicas: HashMap<String, Replica>,
    /// Replacements of replicas killed for failing health, in a row: the
    /// backoff before the next one.
    replaced: u32,
    message: String,
    /// Why the proxy cannot serve the service, when it cannot.
    proxy_error: Option<String>,
}

/// A replica as `mezz serve show` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplicaView {
    /// A canary replica.
    pub canary: bool,
    /// The service version it runs.
    pub version: u64,
    /// The slot's key.
    pub key: String,
    /// The current task's id.
    pub task_id: Option<String>,
    /// `waiting`, `starting`, `healthy`, `unhealthy`, `restarting`,
    /// `stopping`.
    pub state: String,
    /// The agent it runs on.
    pub agent_id: Option<String>,
    /// `HOST:PORT`, once placed.
    pub address: Option<String>,
    /// Restarts after failures.
    pub restarts: u32,
    /// The latest word from the agent.
    pub message: String,
}

/// A service as `mezz serve ls` and `show` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// `starting`, `running` (every replica healthy), `degraded`,
    /// `removing`.
    pub state: String,
    /// The proxy's URL.
    pub url: String,
    /// Replicas wanted.
    pub replicas: u32,
    /// Replicas healthy (taking traffic).
    pub healthy: u32,
    /// CPUs per replica.
    pub cpus: f64,
    /// MB per replica.
    pub mem: f64,
    /// GPUs per replica.
    pub gpus: u32,
    /// The health check's path.
    pub health_path: String,
    /// The command.
    pub command: String,
    /// Every replica, retiring ones included.
    pub replica_list: Vec<ReplicaView>,
    /// The latest word about the service.
    pub message: String,
    /// The version replicas are wanted at.
    pub version: u64,
    /// `updating`, `rolling back`, or empty.
    pub update: String,
    /// What the last update came to.
    pub note: String,
    /// The canary's share of the requests, in percent, while there is one.
    pub canary_weight: Option<u32>,
}

/// The shared book; cheap to clone.
#[derive(Clone)]
pub struct Book {
    inner: Arc<Mutex<Inner>>,
}

/// Requests in flight per replica address, as the proxy last said, and
/// when the routes it had then were taken from the book.
#[derive(Clone, Debug, Default)]
struct InFlight {
    counts: HashMap<String, usize>,
    as_of: Option<Instant>,
}

type SharedInFlight = Arc<Mutex<InFlight>>;

/// How long a replica being stopped waits for a word from the proxy before
/// it is stopped anyway (no proxy: nothing to drain).
const PROXY_SILENT: Duration = Duration::from_secs(2);

struct Inner {
    store: Document<Desired>,
    next_serial: u64,
    services: BTreeMap<String, Entry>,
    /// Tracker key to service name.
    owner: HashMap<String, String>,
    /// Replacement slots held back until then.
    not_before: HashMap<String, Instant>,
    tracker: TaskTracker,
    driver: Option<Driver>,
    framework_id: Option<FrameworkId>,
    in_flight: SharedInFlight,
}

fn tracker() -> TaskTracker {
    // Services are long-lived: keep restarting a crashing replica, backing
    // off to a minute between tries.
    TaskTracker::new(
        RetryPolicy::up_to(u32::MAX).backoff(Duration::from_secs(1), Duration::from_secs(60)),
    )
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!(
        "no service named '{name}'; `mezz serve ls` lists them"
    ))
}

impl Book {
    /// The book of the services stored in `store`. The proxies are fed
    /// from [`Book::route_table`].
    pub fn load(dir: &StateDir) -> Result<Book, Error> {
        let store = crate::store::services(dir);
        let desired = store.read()?.unwrap_or_default();
        let mut tracker = tracker();
        let mut owner = HashMap::new();
        let mut services = BTreeMap::new();
        for svc in desired.services {
            for slot in &svc.slots {
                tracker.add(slot.key.clone());
                owner.insert(slot.key.clone(), svc.spec.name.clone());
            }
            services.insert(
                svc.spec.name.clone(),
                Entry {
                    service: svc,
                    replicas: HashMap::new(),
                    replaced: 0,
                    message: String::new(),
                    proxy_error: None,
                },
            );
        }
        Ok(Book {
            inner: Arc::new(Mutex::new(Inner {
                in_flight: SharedInFlight::default(),
                store,
                next_serial: desired.next_serial,
                services,
                owner,
                not_before: HashMap::new(),
                tracker,
                driver: None,
                framework_id: None,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scheduler that drives this book.
    pub fn scheduler(&self) -> ServeScheduler {
        ServeScheduler { book: self.clone() }
    }

    /// The framework id, once subscribed.
    pub fn framework_id(&self) -> Option<String> {
        self.lock().framework_id.as_ref().map(|f| f.0.clone())
    }

    /// The driver, once subscribed (to stop it).
    pub fn driver(&self) -> Option<Driver> {
        self.lock().driver.clone()
    }

    /// The routes the proxy should have now: every service's port and
    /// healthy replicas. `None` until the replicas' health is known after a
    /// (re)subscription: until then the proxy keeps the routes it has, so
    /// a restarting daemon takes no replica out of service.
    pub fn route_table(&self) -> Option<crate::relay::RouteTable> {
        let names: Vec<String> = {
            let b = self.lock();
            if b.framework_id.is_none() || b.tracker.recovering(Instant::now()) {
                return None;
            }
            b.services.keys().cloned().collect()
        };
        let services = names
            .into_iter()
            .filter_map(|n| {
                let port = self.lock().services.get(&n)?.service.proxy_port;
                let backends = self.backends(&n);
                Some((n, crate::relay::Route { port, backends }))
            })
            .collect();
        Some(crate::relay::RouteTable { services })
    }

    /// What the proxy said after a push of routes taken at `as_of`: the
    /// services it cannot serve, and the requests in flight per replica.
    pub fn proxy_said(&self, answer: crate::relay::PushAnswer, as_of: Instant) {
        let mut b = self.lock();
        for (name, e) in b.services.iter_mut() {
            let now = answer.failed.get(name).cloned();
            if now != e.proxy_error {
                if let Some(why) = &now {
                    tracing::error!(service = %name, "{why}");
                }
                e.proxy_error = now;
            }
        }
        let mut f = b.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        f.counts = answer.in_flight;
        f.as_of = Some(as_of);
    }

    /// Adds a service whose proxy listens on `proxy_port`; refuses a name
    /// in use.
    pub fn deploy(&self, req: DeployRequest, proxy_port: u16) -> Result<ServiceView, Error> {
        req.validate()?;
        let mut b = self.lock();
        let name = req.name.clone();
        if b.services.contains_key(&name) {
            return Err(Error::Conflict(format!(
                "a service named '{name}' already exists; pick another name, `mezz serve scale {name} N` to resize it, or `mezz serve rm {name}` first"
            )));
        }
        let svc = Service {
            spec: req,
            proxy_port,
            slots: Vec::new(),
            removing: false,
            version: 1,
            last_version: 1,
            update: None,
            canary: None,
            note: String::new(),
        };
        let count = svc.spec.replicas;
        b.services.insert(
            name.clone(),
            Entry {
                service: svc,
                replicas: HashMap::new(),
                replaced: 0,
                message: String::new(),
                proxy_error: None,
            },
        );
        for _ in 0..count {
            b.add_slot(&name, None);
        }

        if let Err(e) = b.persist() {
            b.services.remove(&name);
            return Err(e);
        }
        tracing::info!(service = %name, replicas = count, proxy_port, "service deployed");
        if let Some(d) = &b.driver {
            d.revive();
        }
        Ok(b.view(&name).expect("just inserted"))
    }

    /// Sets a service's replica count: new slots, or the newest retired.
    pub fn scale(&self, name: &str, replicas: u32) -> Result<ServiceView, Error> {
        if replicas == 0 {
            return Err(Error::BadRequest(format!(
                "a service needs at least 1 replica; `mezz serve rm {name}` removes it"
            )));
        }
        let mut b = self.lock();
        let Some(e) = b.services.get_mut(name) else {
            return Err(not_found(name));
        };
        if e.service.removing {
            return Err(Error::Conflict(format!(
                "service '{name}' is being removed"
            )));
        }
        e.service.spec.replicas = replicas;
        let live: Vec<String> = e
            .service
            .slots
            .iter()
            .filter(|s| !s.retiring && !s.canary)
            .map(|s| s.key.clone())
            .collect();
        let have = live.len() as u32;
        for _ in have..replicas {
            b.add_slot(name, None);
        }
        if have > replicas {
            // Unhealthy replicas go first: they take no traffic.
            let healthy =
                |b: &Inner, k: &String| b.services[name].replicas.get(k).is_some_and(|r| r.healthy);
            let mut order = live;
            order.sort_by_key(|k| healthy(&b, k));
            for key in order.into_iter().take((have - replicas) as usize) {
                b.retire(name, &key);
            }
        }
        b.persist()?;
        tracing::info!(service = %name, replicas, "service scaled");
        if let Some(d) = &b.driver {
            d.revive();
        }
        Ok(b.view(name).expect("present"))
    }

    /// Removes a service: kills its replicas, and forgets it (and ends its
    /// proxy) once every kill is confirmed.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let mut b = self.lock();
        let Some(e) = b.services.get_mut(name) else {
            return Err(not_found(name));
        };
        e.service.removing = true;
        let keys: Vec<String> = e.service.slots.iter().map(|s| s.key.clone()).collect();
        for key in keys {
            b.retire(name, &key);
        }
        b.finish_removal(name);
        b.persist()
    }

    /// Starts a rolling update of `name` to `command`: new replicas are
    /// started one at a time and an old one is stopped only once a new one
    /// is healthy; a new replica that fails rolls the update back.
    pub fn update(&self, name: &str, command: String, pace: Pace) -> Result<ServiceView, Error> {
        let mut b = self.lock();
        b.start_update(name, command, pace)?;
        Ok(b.view(name).expect("present"))
    }

    /// Every service.
    pub fn list(&self) -> Vec<ServiceView> {
        let b = self.lock();
        b.services.keys().filter_map(|n| b.view(n)).collect()
    }

    /// One service.
    pub fn get(&self, name: &str) -> Option<ServiceView> {
        self.lock().view(name)
    }

    /// The addresses of a service's healthy replicas: where its proxy may
    /// send requests; the canary's apart, with its weight.
    pub fn backends(&self, name: &str) -> Backends {
        let b = self.lock();
        let Some(e) = b.services.get(name) else {
            return Backends::default();
        };
        let healthy = |canary: bool| -> Vec<String> {
            e.service
                .slots
                .iter()
                .filter(|s| s.canary == canary)
                .filter(|s| !s.retiring)
                .filter(|s| e.replicas.get(&s.key).is_some_and(|r| r.healthy))
                .filter(|s| {
                    b.tracker
                        .get(&s.key)
                        .is_some_and(|t| t.phase == Phase::Running)
                })
                .filter_map(|s| s.address.clone())
                .collect()
        };
        Backends {
            stable: healthy(false),
            canary: healthy(true),
            weight: e.service.canary.as_ref().map(|c| c.weight).unwrap_or(0),
        }
    }

    /// Starts a canary of `name`: one replica of `command` taking
    /// `weight` percent of the requests once healthy.
    pub fn canary(&self, name: &str, command: String, weight: u32) -> Result<ServiceView, Error> {
        let mut b = self.lock();
        let Some(e) = b.services.get_mut(name) else {
            return Err(not_found(name));
        };
        if !(1..=99).contains(&weight) {
            return Err(Error::BadRequest(format!(
                "--weight {weight} is not a share: give 1 to 99 (percent)"
            )));
        }
        if command.trim().is_empty() {
            return Err(Error::BadRequest(
                "no command: put it after `--`, e.g. `-- python3 model.py`".into(),
            ));
        }
        if e.service.removing || e.service.update.is_some() || e.service.canary.is_some() {
            return Err(Error::Conflict(format!(
                "service '{name}' has a canary, an update or a removal under way; `mezz serve show {name}` says which"
            )));
        }
        let version = e.service.version.max(e.service.last_version) + 1;
        e.service.last_version = version;
        e.service.canary = Some(Canary {
            version,
            command,
            weight,
        });
        e.service.note = format!("canary version {version} at {weight}%");
        b.add_canary_slot(name);
        b.persist()?;
        if let Some(d) = &b.driver {
            d.revive();
        }
        Ok(b.view(name).expect("present"))
    }

    /// Makes the canary the service's command (a rolling update) and
    /// stops the canary replica.
    pub fn promote(&self, name: &str) -> Result<ServiceView, Error> {
        let mut b = self.lock();
        let Some(e) = b.services.get_mut(name) else {
            return Err(not_found(name));
        };
        let Some(c) = e.service.canary.take() else {
            return Err(Error::BadRequest(format!(
                "service '{name}' has no canary; `mezz serve canary {name} --weight 10 -- CMD` starts one"
            )));
        };
        if let Err(err) = b.start_update(name, c.command.clone(), Pace::default()) {
            if let Some(e) = b.services.get_mut(name) {
                e.service.canary = Some(c);
            }
            return Err(err);
        }
        b.retire_canary(name);
        b.persist()?;
        Ok(b.view(name).expect("present"))
    }

    /// Stops the canary; the service keeps its command.
    pub fn rollback(&self, name: &str) -> Result<ServiceView, Error> {
        let mut b = self.lock();
        let Some(e) = b.services.get_mut(name) else {
            return Err(not_found(name));
        };
        let Some(c) = e.service.canary.take() else {
            return Err(Error::BadRequest(format!("service '{name}' has no canary")));
        };
        e.service.note = format!("canary version {} rolled back", c.version);
        b.retire_canary(name);
        b.persist()?;
        Ok(b.view(name).expect("present"))
    }
}

pub use crate::proxy::Backends;

/// Whether the proxy is done with `address`: it said so with routes taken
/// after `since`, or it has said nothing for a while (no proxy, nothing to
/// drain).
fn drained(table: &SharedInFlight, address: &str, since: Instant) -> bool {
    let t = table.lock().unwrap_or_else(|p| p.into_inner());
    match t.as_of {
        Some(at) if at > since => t.counts.get(address).copied().unwrap_or(0) == 0,
        Some(at) => at.elapsed() > PROXY_SILENT && since.elapsed() > PROXY_SILENT,
        None => since.elapsed() > PROXY_SILENT,
    }
}

impl Inner {
    fn persist(&self) -> Result<(), Error> {
        Ok(self.store.write(&Desired {
            next_serial: self.next_serial,
            services: self.services.values().map(|e| e.service.clone()).collect(),
        })?)
    }

    fn persist_or_log(&self) {
        if let Err(e) = self.persist() {
            tracing::error!("cannot store the services: {e}");
        }
    }

    /// A new canary slot of `name`.
    fn add_canary_slot(&mut self, name: &str) {
        let Some(c) = self
            .services
            .get(name)
            .and_then(|e| e.service.canary.clone())
        else {
            return;
        };
        self.add_slot(name, None);
        if let Some(s) = self
            .services
            .get_mut(name)
            .and_then(|e| e.service.slots.last_mut())
        {
            s.canary = true;
            s.version = c.version;
            s.command = c.command;
        }
    }

    /// Stops every canary replica of `name`.
    fn retire_canary(&mut self, name: &str) {
        let keys: Vec<String> = self
            .services
            .get(name)
            .map(|e| {
                e.service
                    .slots
                    .iter()
                    .filter(|s| s.canary && !s.retiring)
                    .map(|s| s.key.clone())
                    .collect()
            })
            .unwrap_or_default();
        for key in keys {
            self.retire(name, &key);
        }
    }

    /// A new slot of `name`, launched no sooner than `not_before`.
    fn add_slot(&mut self, name: &str, not_before: Option<Instant>) {
        let key = format!("serve-{name}-{}", self.next_serial);
        self.next_serial += 1;
        self.tracker.add(key.clone());
        self.owner.insert(key.clone(), name.to_string());
        if let Some(at) = not_before {
            self.not_before.insert(key.clone(), at);
        }
        if let Some(e) = self.services.get_mut(name) {
            e.service.slots.push(Slot {
                key,
                retiring: false,
                address: None,
                version: e.service.version,
                command: e.service.spec.command.clone(),
                canary: false,
            });
        }
    }

    /// Gives a slot up: kills its task, or forgets it when none runs.
    fn retire(&mut self, name: &str, key: &str) {
        let Some(e) = self.services.get_mut(name) else {
            return;
        };
        if let Some(s) = e.service.slots.iter_mut().find(|s| s.key == key) {
            s.retiring = true;
        }
        if let Some(r) = e.replicas.get_mut(key) {
            r.healthy = false;
        }
        let address = e
            .service
            .slots
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.address.clone());
        let task = self.tracker.get(key).cloned();
        match task {
            Some(t) if matches!(t.phase, Phase::Launched | Phase::Running) => {
                if let (Some(id), Some(d)) = (t.task_id, &self.driver) {
                    // It takes no new requests once the proxy has the
                    // routes without it; the ones the proxy sent it finish
                    // first (up to DRAIN).
                    match (tokio::runtime::Handle::try_current(), address) {
                        (Ok(rt), Some(address)) => {
                            let (d, table) = (d.clone(), self.in_flight.clone());
                            let since = Instant::now();
                            rt.spawn(async move {
                                let deadline = since + DRAIN;
                                while !drained(&table, &address, since) && Instant::now() < deadline
                                {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                d.kill(id, Some(KILL_GRACE));
                            });
                        }
                        _ => d.kill(id, Some(KILL_GRACE)),
                    }
                }
            }
            _ => self.forget_slot(name, key),
        }
    }

    fn forget_slot(&mut self, name: &str, key: &str) {
        if let Some(e) = self.services.get_mut(name) {
            e.service.slots.retain(|s| s.key != key);
            e.replicas.remove(key);
        }
        self.not_before.remove(key);
        self.finish_removal(name);
    }

    /// Drops a removed service once its last replica is gone.
    fn finish_removal(&mut self, name: &str) {
        let done = self
            .services
            .get(name)
            .is_some_and(|e| e.service.removing && e.service.slots.is_empty());
        if done && self.services.remove(name).is_some() {
            tracing::info!(service = %name, "service removed");
        }
    }

    fn view(&self, name: &str) -> Option<ServiceView> {
        let e = self.services.get(name)?;
        let svc = &e.service;
        let mut healthy = 0;
        let replica_list: Vec<ReplicaView> = svc
            .slots
            .iter()
            .map(|s| {
                let t = self.tracker.get(&s.key);
                let r = e.replicas.get(&s.key).cloned().unwrap_or_default();
                let state = match t.map(|t| t.phase) {
                    _ if s.retiring => "stopping",
                    Some(Phase::Running) if r.healthy => "healthy",
                    Some(Phase::Running) | Some(Phase::Launched) => "starting",
                    Some(Phase::Waiting) if t.is_some_and(|t| t.restarts > 0) => "restarting",
                    Some(Phase::Failed) => "failed",
                    _ => "waiting",
                };
                if state == "healthy" && !s.canary {
                    healthy += 1;
                }
                ReplicaView {
                    canary: s.canary,
                    version: s.version,
                    key: s.key.clone(),
                    task_id: t.and_then(|t| t.task_id.as_ref()).map(|i| i.0.clone()),
                    state: state.into(),
                    agent_id: t.and_then(|t| t.agent_id.as_ref()).map(|a| a.0.clone()),
                    address: s.address.clone(),
                    restarts: t.map(|t| t.restarts).unwrap_or(0),
                    message: r.message,
                }
            })
            .collect();
        let state = if svc.removing {
            "removing"
        } else if healthy >= svc.spec.replicas {
            "running"
        } else if healthy > 0 {
            "degraded"
        } else {
            "starting"
        };
        Some(ServiceView {
            name: svc.spec.name.clone(),
            state: state.into(),
            url: svc.url(),
            replicas: svc.spec.replicas,
            healthy,
            cpus: svc.spec.cpus,
            mem: svc.spec.mem,
            gpus: svc.spec.gpus,
            health_path: svc.spec.health_path.clone(),
            command: svc.spec.command.clone(),
            replica_list,
            message: match &e.proxy_error {
                Some(why) => why.clone(),
                None => e.message.clone(),
            },
            version: svc.version,
            update: match &svc.update {
                Some(u) if u.rolling_back => "rolling back".into(),
                Some(_) => "updating".into(),
                None => String::new(),
            },
            note: svc.note.clone(),
            canary_weight: svc.canary.as_ref().map(|c| c.weight),
        })
    }

    fn slot(&self, key: &str) -> Option<(&Entry, &Slot)> {
        let name = self.owner.get(key)?;
        let e = self.services.get(name)?;
        let s = e.service.slots.iter().find(|s| s.key == key)?;
        Some((e, s))
    }

    /// Keys to launch now: due in the tracker, of a live slot, past any
    /// hold-back.
    fn due(&self, now: Instant) -> Vec<String> {
        self.tracker
            .due(now)
            .into_iter()
            .filter(|k| self.slot(k).is_some_and(|(_, s)| !s.retiring))
            .filter(|k| self.not_before.get(k).is_none_or(|at| *at <= now))
            .collect()
    }

    /// How many replicas of `name` run or start on each agent.
    fn per_agent(&self, name: &str) -> HashMap<String, usize> {
        let mut n = HashMap::new();
        if let Some(e) = self.services.get(name) {
            for s in e.service.slots.iter().filter(|s| !s.retiring) {
                if let Some(t) = self.tracker.get(&s.key) {
                    if matches!(t.phase, Phase::Launched | Phase::Running) {
                        if let Some(a) = &t.agent_id {
                            *n.entry(a.0.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
        n
    }

    fn launch(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let now = Instant::now();
        let mut used = std::collections::HashSet::new();
        for key in self.due(now) {
            let Some(name) = self.owner.get(&key).cloned() else {
                continue;
            };
            let svc = self.services[&name].service.clone();
            let resources = Resources::new()
                .with_scalar("cpus", svc.spec.cpus)
                .with_scalar("mem", svc.spec.mem);
            let request = TaskRequest::new(key.clone(), resources.clone())
                .ports(1)
                .gpus(svc.spec.gpus as usize);
            // Spread: the agent with the fewest replicas of this service
            // first. One replica per offer and round keeps the count true.
            let counts = self.per_agent(&name);
            let mut candidates: Vec<&proto::Offer> =
                offers.iter().filter(|o| !used.contains(&o.id)).collect();
            candidates.sort_by_key(|o| counts.get(&o.agent_id).copied().unwrap_or(0));
            let found = candidates.into_iter().find_map(|o| {
                let plan = place(
                    Strategy::FirstFit,
                    std::slice::from_ref(o),
                    std::slice::from_ref(&request),
                );
                plan.placed.into_iter().next().map(|p| (o, p))
            });
            let Some((offer, placement)) = found else {
                if let Some(e) = self.services.get_mut(&name) {
                    e.message = format!(
                        "waiting for an offer with {resources} + 1 port{}",
                        if svc.spec.gpus > 0 {
                            format!(" + {} GPU(s)", svc.spec.gpus)
                        } else {
                            String::new()
                        }
                    );
                }
                continue;
            };
            let Some(port) = placement.ports.first().and_then(|p| u16::try_from(*p).ok()) else {
                continue;
            };
            let Some(task_id) = self
                .tracker
                .launched(&key, Some(AgentId(offer.agent_id.clone())))
            else {
                continue;
            };
            used.insert(offer.id.clone());
            let host = offer_host(offer);
            let address = format!("{host}:{port}");
            let slot = svc.slots.iter().find(|s| s.key == key);
            let command = slot
                .map(|s| s.command.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| svc.spec.command.clone());
            let (version, canary) = slot
                .map(|s| (s.version, s.canary))
                .unwrap_or((svc.version, false));
            let mut builder = replica_task(&svc, &command, &task_id, &address, port)
                .label("version", version.to_string());
            if canary {
                let weight = svc.canary.as_ref().map(|c| c.weight).unwrap_or(0);
                builder = builder
                    .label("canary", "true")
                    .label("weight", weight.to_string());
            }
            let task = placement.task(builder);
            tracing::info!(service = %name, task = %task_id, agent = %offer.agent_id, %address, "launching replica");
            driver.launch([offer.id.clone()], vec![task]);
            if let Some(e) = self.services.get_mut(&name) {
                e.message.clear();
                e.replicas.insert(key.clone(), Replica::default());
                if let Some(s) = e.service.slots.iter_mut().find(|s| s.key == key) {
                    s.address = Some(address);
                }
            }
            self.not_before.remove(&key);
            self.persist_or_log();
        }
        let unused: Vec<_> = offers
            .iter()
            .filter(|o| !used.contains(&o.id))
            .map(|o| o.id.clone())
            .collect();
        if !unused.is_empty() {
            if self.due(now).is_empty() && self.not_before.is_empty() {
                driver.suppress();
                driver.decline(unused, Some(30.0));
            } else {
                driver.decline(unused, Some(1.0));
            }
        }
    }

    fn update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let now = Instant::now();
        let change = self.tracker.update(status, now);
        let Some(key) = self
            .tracker
            .key_of(&TaskId(status.task_id.clone()))
            .map(str::to_string)
        else {
            return;
        };
        let Some(name) = self.owner.get(&key).cloned() else {
            return;
        };
        let current = self
            .tracker
            .get(&key)
            .and_then(|t| t.task_id.clone())
            .is_some_and(|id| id.0 == status.task_id);
        let retiring = self.slot(&key).is_some_and(|(_, s)| s.retiring);
        let was_canary = self.slot(&key).is_some_and(|(_, s)| s.canary);
        if current {
            if let Some(e) = self.services.get_mut(&name) {
                let r = e.replicas.entry(key.clone()).or_default();
                if !status.message.is_empty() {
                    r.message = status.message.clone();
                }
                let running = status.state() == mezz_sdk::TaskState::Running;
                match status.healthy {
                    Some(h) if running && !retiring => {
                        if h && !r.healthy {
                            tracing::info!(service = %name, task = %status.task_id, "replica healthy");
                            e.replaced = 0;
                        }
                        r.healthy = h;
                    }
                    _ if !running => r.healthy = false,
                    _ => {}
                }
            }
        }
        // A replica of the version being rolled out that fails, before the
        // update is done, fails the update.
        let failing_update = self.slot(&key).is_some_and(|(e, s)| {
            !s.retiring
                && !s.canary
                && s.version == e.service.version
                && e.service.update.as_ref().is_some_and(|u| !u.rolling_back)
        });
        match change {
            Some(Change::Running) => {
                tracing::info!(service = %name, task = %status.task_id, "replica running");
                // A replica taken back after a failover may have had a
                // kill under way: finish it.
                if retiring {
                    driver.kill(TaskId(status.task_id.clone()), Some(KILL_GRACE));
                }
            }
            Some(Change::Restart { at }) => {
                if retiring {
                    self.forget_slot(&name, &key);
                    self.persist_or_log();
                } else if failing_update {
                    let why = format!(
                        "replica {} ended ({})",
                        status.task_id,
                        status.state().short_name()
                    );
                    self.roll_back(&name, &why);
                } else {
                    tracing::warn!(service = %name, task = %status.task_id, state = status.state().short_name(), "replica ended; restarting it");
                    driver.wake_after(at.saturating_duration_since(now));
                }
            }
            Some(Change::Killed) | Some(Change::Finished) | Some(Change::GaveUp) => {
                let health = status.reason() == TaskReason::HealthCheckFailed;
                let wanted = self
                    .services
                    .get(&name)
                    .is_some_and(|e| !e.service.removing);
                if failing_update && !retiring {
                    let why = if health {
                        format!("replica {} failed its health check", status.task_id)
                    } else {
                        format!("replica {} ended", status.task_id)
                    };
                    self.forget_slot(&name, &key);
                    self.roll_back(&name, &why);
                } else if !retiring && wanted {
                    self.forget_slot(&name, &key);
                    // Killed for failing its health check, or ended on its
                    // own: a new slot takes its place, after a backoff that
                    // grows while replacements keep failing.
                    let replaced = self.services.get(&name).map(|e| e.replaced).unwrap_or(0);
                    let delay =
                        Duration::from_secs(1 << replaced.min(6)).min(Duration::from_secs(60));
                    tracing::warn!(service = %name, task = %status.task_id, health, ?delay, "replica lost; replacing it");
                    if let Some(e) = self.services.get_mut(&name) {
                        e.replaced += 1;
                        e.message = if health {
                            format!(
                                "replica {} failed its health check; replaced",
                                status.task_id
                            )
                        } else {
                            format!("replica {} ended; replaced", status.task_id)
                        };
                    }
                    if was_canary {
                        self.add_canary_slot(&name);
                        if let Some(at) = self
                            .services
                            .get(&name)
                            .and_then(|e| e.service.slots.last())
                        {
                            self.not_before.insert(at.key.clone(), now + delay);
                        }
                    } else {
                        self.add_slot(&name, Some(now + delay));
                    }
                    driver.wake_after(delay);
                } else {
                    self.forget_slot(&name, &key);
                }
                self.persist_or_log();
            }
            None => {}
        }
        self.roll(&name);
    }

    /// Starts a rolling update of `name` to `command`.
    fn start_update(&mut self, name: &str, command: String, pace: Pace) -> Result<(), Error> {
        pace.validate()?;
        let Some(e) = self.services.get_mut(name) else {
            return Err(not_found(name));
        };
        if e.service.removing {
            return Err(Error::Conflict(format!(
                "service '{name}' is being removed"
            )));
        }
        if e.service.update.is_some() {
            return Err(Error::Conflict(format!(
                "service '{name}' is being updated already; `mezz serve show {name}` shows how far"
            )));
        }
        if command.trim().is_empty() {
            return Err(Error::BadRequest(
                "no command: put it after `--`, e.g. `-- python3 model.py`".into(),
            ));
        }
        if command == e.service.spec.command {
            return Err(Error::BadRequest(format!(
                "service '{name}' runs that command already"
            )));
        }
        // Versions are never reused: a rolled-back one's number included.
        let next = e
            .service
            .slots
            .iter()
            .map(|s| s.version)
            .chain([e.service.version, e.service.last_version])
            .max()
            .unwrap_or(0)
            + 1;
        e.service.last_version = next;
        e.service.update = Some(Update {
            from_version: e.service.version,
            from_command: std::mem::replace(&mut e.service.spec.command, command),
            rolling_back: false,
            pace,
        });
        e.service.version = next;
        e.service.note = format!("updating to version {next}");
        tracing::info!(service = %name, version = next, "rolling update started");
        self.roll(name);
        self.persist()
    }

    /// Goes back to the version an update started from: its replicas that
    /// do not answer are stopped at once, the rest once the old version
    /// is back in full.
    fn roll_back(&mut self, name: &str, why: &str) {
        let Some(e) = self.services.get_mut(name) else {
            return;
        };
        let Some(u) = e.service.update.take() else {
            return;
        };
        let failed = e.service.version;
        tracing::warn!(service = %name, version = failed, "update failed: {why}; rolling back");
        e.service.note = format!("update to version {failed} rolled back: {why}");
        e.service.update = Some(Update {
            from_version: failed,
            from_command: std::mem::replace(&mut e.service.spec.command, u.from_command),
            rolling_back: true,
            pace: u.pace,
        });
        e.service.version = u.from_version;
        let doomed: Vec<String> = e
            .service
            .slots
            .iter()
            .filter(|s| !s.retiring && s.version == failed)
            .filter(|s| !e.replicas.get(&s.key).is_some_and(|r| r.healthy))
            .map(|s| s.key.clone())
            .collect();
        for key in doomed {
            self.retire(name, &key);
        }
        self.roll(name);
        self.persist_or_log();
    }

    /// One step of an update, repeated while it changes something: a new
    /// replica while there are fewer new ones than wanted and fewer than
    /// wanted + max surge run, and an old one stopped only when the
    /// healthy new ones and the other old ones make at least the number
    /// wanted less max unavailable. Done when no old replica is left.
    fn roll(&mut self, name: &str) {
        for _ in 0..64 {
            if !self.roll_once(name) {
                return;
            }
        }
    }

    fn roll_once(&mut self, name: &str) -> bool {
        let Some(e) = self.services.get(name) else {
            return false;
        };
        if e.service.removing || e.service.update.is_none() {
            return false;
        }
        let target = e.service.version;
        let wanted = e.service.spec.replicas as usize;
        let pace = e
            .service
            .update
            .as_ref()
            .map(|u| u.pace)
            .unwrap_or_default();
        let floor = wanted.saturating_sub(pace.max_unavailable as usize);
        let healthy = |k: &str| {
            e.replicas.get(k).is_some_and(|r| r.healthy)
                && self
                    .tracker
                    .get(k)
                    .is_some_and(|t| t.phase == Phase::Running)
        };
        let live: Vec<&Slot> = e
            .service
            .slots
            .iter()
            .filter(|s| !s.retiring && !s.canary)
            .collect();
        let new: Vec<&Slot> = live
            .iter()
            .copied()
            .filter(|s| s.version == target)
            .collect();
        let mut old: Vec<&Slot> = live
            .iter()
            .copied()
            .filter(|s| s.version != target)
            .collect();
        let healthy_new = new.iter().filter(|s| healthy(&s.key)).count();
        if !old.is_empty() && healthy_new + old.len() > floor {
            old.sort_by_key(|s| healthy(&s.key));
            let key = old[0].key.clone();
            self.retire(name, &key);
            self.persist_or_log();
            return true;
        }
        if new.len() < wanted && live.len() < wanted + pace.max_surge as usize {
            self.add_slot(name, None);
            if let Some(d) = &self.driver {
                d.revive();
            }
            self.persist_or_log();
            return true;
        }
        // Done once only new replicas are left and all of them answer: a
        // new version that fails before then is still rolled back.
        if old.is_empty() && healthy_new >= wanted {
            let rolled_back = e.service.update.as_ref().is_some_and(|u| u.rolling_back);
            let e = self.services.get_mut(name).expect("present");
            e.service.update = None;
            if !rolled_back {
                e.service.note = format!("updated to version {target}");
            }
            tracing::info!(service = %name, version = target, "update done");
            self.persist_or_log();
        }
        false
    }
}

/// A replica's task: the command by `/bin/sh -c` with its port in
/// `port_env` (and `PORT0`), an HTTP health check on that port, and its
/// own and its service's URLs as labels for the status page (the caller
/// adds its version, and for a canary its weight).
fn replica_task(
    svc: &Service,
    command: &str,
    task_id: &TaskId,
    address: &str,
    port: u16,
) -> TaskBuilder {
    let check = proto::HealthCheck {
        check: Some(proto::health_check::Check::Http(proto::HttpHealthCheck {
            port: u32::from(port),
            path: svc.spec.health_path.clone(),
            ..Default::default()
        })),
        interval_secs: 1.0,
        timeout_secs: 2.0,
        // A model can take long to load; failures before the first
        // success within this count for nothing.
        grace_period_secs: svc.spec.health_grace_secs,
        consecutive_failures: 3,
    };
    TaskBuilder::shell(task_id.clone(), command.to_string())
        .name(format!("serve/{}", svc.spec.name))
        .kill_grace(KILL_GRACE)
        .env(svc.spec.port_env.clone(), port.to_string())
        .label("service", svc.spec.name.clone())
        .label("url", format!("http://{address}/"))
        .label("service_url", svc.url())
        .health_check(check)
}

/// The SDK scheduler over a [`Book`].
pub struct ServeScheduler {
    book: Book,
}

impl Scheduler for ServeScheduler {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, reconnected: bool) {
        tracing::info!(%id, reconnected, "subscribed");
        let mut b = self.book.lock();
        b.driver = Some(driver.clone());
        b.framework_id = Some(id.clone());
        if reconnected {
            // The driver reconciles: learn which replicas still run before
            // launching any.
            b.tracker.recover_until(Instant::now() + RECOVERY);
            driver.wake_after(RECOVERY);
        }
        driver.revive();
    }

    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        self.book.lock().launch(driver, offers);
    }

    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        self.book.lock().update(driver, status);
    }

    fn wakeup(&mut self, driver: &Driver) {
        let b = self.book.lock();
        let now = Instant::now();
        if !b.due(now).is_empty() {
            driver.revive();
        } else {
            let next = b
                .tracker
                .next_retry()
                .into_iter()
                .chain(b.not_before.values().copied())
                .min();
            if let Some(at) = next {
                driver.wake_after(
                    at.saturating_duration_since(now)
                        .max(Duration::from_millis(50)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_task_carries_port_health_check_and_urls() {
        let svc = Service {
            spec: DeployRequest {
                name: "m".into(),
                replicas: 1,
                cpus: 0.5,
                mem: 64.0,
                gpus: 0,
                health_path: "/health".into(),
                port_env: "PORT".into(),
                health_grace_secs: 120.0,
                command: "python3 model.py".into(),
            },
            proxy_port: 40000,
            slots: vec![],
            removing: false,
            version: 1,
            last_version: 1,
            update: None,
            canary: None,
            note: String::new(),
        };
        let offer = proto::Offer {
            id: "o".into(),
            agent_id: "a1".into(),
            ..Default::default()
        };
        let t = replica_task(
            &svc,
            "python3 model.py",
            &TaskId("serve-m-0.0".into()),
            "127.0.0.1:31000",
            31000,
        )
        .build(&offer);
        assert_eq!(t.labels["url"], "http://127.0.0.1:31000/");
        assert_eq!(t.labels["service_url"], "http://127.0.0.1:40000/");
        assert_eq!(t.command.unwrap().environment["PORT"], "31000");
        let Some(proto::health_check::Check::Http(h)) = t.health_check.unwrap().check else {
            panic!("no HTTP health check")
        };
        assert_eq!((h.port, h.path.as_str()), (31000, "/health"));
    }

    fn running(b: &mut Inner, key: &str, healthy: bool) {
        let id = b.tracker.launched(key, None).expect("waiting");
        let status = proto::TaskStatus {
            task_id: id.0.clone(),
            state: mezz_sdk::TaskState::Running as i32,
            ..Default::default()
        };
        b.tracker.update(&status, Instant::now());
        let name = b.owner[key].clone();
        let e = b.services.get_mut(&name).unwrap();
        e.replicas.entry(key.to_string()).or_default().healthy = healthy;
        if let Some(s) = e.service.slots.iter_mut().find(|s| s.key == key) {
            s.address = Some(format!("127.0.0.1:{}", 31000 + b.next_serial));
        }
    }

    /// A book in `tmp` with service `m` of `replicas` replicas of `v1`.
    fn deployed(tmp: &tempfile::TempDir, replicas: u32) -> Book {
        let book = Book::load(&crate::store::open(tmp.path().join("s")).unwrap()).unwrap();
        let req = DeployRequest {
            name: "m".into(),
            replicas,
            cpus: 0.5,
            mem: 64.0,
            gpus: 0,
            health_path: "/health".into(),
            port_env: "PORT".into(),
            health_grace_secs: 1.0,
            command: "v1".into(),
        };
        book.deploy(req, 40000).unwrap();
        book
    }

    fn live(b: &Inner, version: u64) -> Vec<String> {
        b.services["m"]
            .service
            .slots
            .iter()
            .filter(|s| !s.retiring && s.version == version)
            .map(|s| s.key.clone())
            .collect()
    }

    #[test]
    fn an_update_surges_by_one_and_stops_old_only_for_healthy_new() {
        let tmp = tempfile::tempdir().unwrap();
        let book = deployed(&tmp, 2);
        let mut b = book.lock();
        for k in live(&b, 1) {
            running(&mut b, &k, true);
        }
        b.start_update("m", "v2".into(), Pace::default()).unwrap();
        // One new replica beside the two old ones; none stopped yet.
        assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (2, 1));
        // Started but not healthy: still nothing stopped.
        let first = live(&b, 2)[0].clone();
        running(&mut b, &first, false);
        b.roll("m");
        assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (2, 1));
        // Healthy: one old one goes, and the next new one is wanted.
        b.services
            .get_mut("m")
            .unwrap()
            .replicas
            .get_mut(&first)
            .unwrap()
            .healthy = true;
        b.roll("m");
        assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (1, 2));
        let second = live(&b, 2).into_iter().find(|k| *k != first).unwrap();
        running(&mut b, &second, true);
        b.roll("m");
        assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (0, 2));
        let svc = &b.services["m"].service;
        assert!(svc.update.is_none());
        assert_eq!(svc.note, "updated to version 2");
        assert_eq!(b.view("m").unwrap().healthy, 2);
    }

    #[test]
    fn the_pace_bounds_extra_and_missing_replicas() {
        let tmp = tempfile::tempdir().unwrap();
        let book = deployed(&tmp, 4);
        let mut b = book.lock();
        for k in live(&b, 1) {
            running(&mut b, &k, true);
        }
        let stuck = Pace {
            max_surge: 0,
            max_unavailable: 0,
        };
        assert!(b.start_update("m", "v2".into(), stuck).is_err());
        assert!(b.services["m"].service.update.is_none());
        // No surge, two short: two old ones stop at once and two new ones
        // take their places; never more than four run.
        let pace = Pace {
            max_surge: 0,
            max_unavailable: 2,
        };
        b.start_update("m", "v2".into(), pace).unwrap();
        assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (2, 2));
        let first = live(&b, 2);
        for k in &first {
            running(&mut b, k, true);
        }
        b.roll("m");
        assert_eq!((live(&b, 1).len(), live(&b, 2).len()), (0, 4));
        // Not done until the last new ones answer too.
        assert!(b.services["m"].service.update.is_some());
        for k in live(&b, 2).iter().filter(|k| !first.contains(k)) {
            running(&mut b, k, true);
        }
        b.roll("m");
        assert!(b.services["m"].service.update.is_none());
        drop(b);
        // A surge of three, none short: three new ones beside the four old.
        let mut b = book.lock();
        let pace = Pace {
            max_surge: 3,
            max_unavailable: 0,
        };
        b.start_update("m", "v3".into(), pace).unwrap();
        assert_eq!((live(&b, 2).len(), live(&b, 3).len()), (4, 3));
    }

    #[test]
    fn a_failing_update_goes_back_to_the_old_command() {
        let tmp = tempfile::tempdir().unwrap();
        let book = deployed(&tmp, 1);
        let mut b = book.lock();
        let old = live(&b, 1)[0].clone();
        running(&mut b, &old, true);
        b.start_update("m", "v2".into(), Pace::default()).unwrap();
        assert!(
            b.start_update("m", "v3".into(), Pace::default()).is_err(),
            "two updates at once"
        );
        let new = live(&b, 2)[0].clone();
        b.roll_back("m", "replica x failed its health check");
        let svc = &b.services["m"].service;
        assert_eq!((svc.version, svc.spec.command.as_str()), (1, "v1"));
        assert!(
            svc.note.contains("rolled back: replica x failed"),
            "{}",
            svc.note
        );
        // The new replica never ran: it is gone; the old one stays.
        assert!(svc.slots.iter().all(|s| s.key != new));
        assert_eq!(live(&b, 1), vec![old]);
        assert!(svc.update.is_none());
        // The next update gets a version of its own.
        b.start_update("m", "v3".into(), Pace::default()).unwrap();
        assert_eq!(b.services["m"].service.version, 3);
    }
}
