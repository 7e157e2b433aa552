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

mod replicas;
mod rolling;
#[cfg(test)]
mod tests;

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
    /// When it last turned healthy: it takes requests once the proxy holds
    /// routes taken after then. `None` for a replica whose health came
    /// without that instant (it counts as routed).
    healthy_since: Option<Instant>,
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
    /// Wakes the push of routes to the proxy at once (a replica turned
    /// healthy or stopped being so) instead of at its next tick.
    routes_changed: Arc<tokio::sync::Notify>,
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
                routes_changed: Arc::default(),
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

    /// Notified whenever the routes the proxy should have changed in a way
    /// that should reach it before the next periodic push.
    pub fn routes_changed(&self) -> Arc<tokio::sync::Notify> {
        self.lock().routes_changed.clone()
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
    /// Whether the proxy has routes taken since `r` turned healthy.
    fn routed(&self, r: &Replica) -> bool {
        let Some(since) = r.healthy_since else {
            return true;
        };
        let t = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        t.as_of.is_some_and(|at| at >= since)
    }

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
                    // Healthy, but the proxy does not route to it yet: a
                    // request now would not reach it.
                    Some(Phase::Running) if r.healthy && self.routed(&r) => "healthy",
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
