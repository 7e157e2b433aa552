//! The framework's book of notebooks and its SDK scheduler. The book holds
//! the desired state (persisted on every change), each server's task
//! through a [`TaskTracker`] (restarts with backoff, recognition of running
//! servers after a failover) and what the servers last reported. The
//! scheduler callbacks, the local API and the activity monitor all work on
//! one book behind a mutex, held only for short work: no network call is
//! made under it (the monitor polls first, then records), and the one disk
//! write is the small notebooks file.

use mezz_sdk::{CPUS, MEM};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mezz_sdk::{proto, Change, Driver, FrameworkId, Phase, Scheduler, TaskBuilder, TaskTracker};
use mezz_sdk::{AgentId, Resources, RetryPolicy, TaskId, GPUS, PORTS};
use serde::{Deserialize, Serialize};

use crate::notebook::{self, IdleClock, Notebook, StartRequest};
use crate::store::{self, random_hex, Desired, Document, StateDir};
use crate::Error;

/// How long a failed-over framework waits for reconciliation answers
/// before launching servers it has not heard of.
pub const RECOVERY: Duration = Duration::from_secs(3);
/// SIGTERM to SIGKILL: Jupyter shuts its kernels down on SIGTERM.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// Why a notebook is being stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `mezz jupyter stop`.
    Asked,
    /// Idle past its timeout.
    Idle(Duration),
}

/// One notebook and what is known about its server right now.
#[derive(Debug)]
struct Entry {
    notebook: Notebook,
    /// The server answered `/api/status` with the token.
    ready: bool,
    idle: IdleClock,
    gpus: Vec<String>,
    stopping: Option<StopReason>,
    message: String,
}

/// A notebook as `mezz jupyter ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NotebookView {
    /// Its name.
    pub name: String,
    /// `waiting`, `starting`, `running`, `restarting`, `stopping`, `failed`.
    pub state: String,
    /// The URL without the token.
    pub url: Option<String>,
    /// The URL with the token: only in answers about one notebook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_with_token: Option<String>,
    /// CPUs.
    pub cpus: f64,
    /// Memory in MB.
    pub mem: f64,
    /// GPUs asked for.
    pub gpus: u32,
    /// The GPUs it holds (identities).
    pub gpu_ids: Vec<String>,
    /// Seconds without activity (while running).
    pub idle_secs: Option<f64>,
    /// The idle timeout in seconds.
    pub idle_timeout_secs: Option<f64>,
    /// Where the files live, on the agent's host.
    pub notebook_dir: String,
    /// The agent it runs on.
    pub agent_id: Option<String>,
    /// The current task's id.
    pub task_id: Option<String>,
    /// Restarts after failures.
    pub restarts: u32,
    /// The latest word from the agent or the server.
    pub message: String,
}

/// What the activity monitor polls: one running server.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The notebook.
    pub name: String,
    /// Which incarnation.
    pub serial: u64,
    /// `HOST:PORT`.
    pub address: String,
    /// Its token.
    pub token: String,
}

/// The shared book; cheap to clone.
#[derive(Clone)]
pub struct Book {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    store: Document<Desired>,
    next_serial: u64,
    entries: BTreeMap<String, Entry>,
    tracker: TaskTracker,
    driver: Option<Driver>,
    framework_id: Option<FrameworkId>,
}

impl Book {
    /// The book of the notebooks stored in the state directory `dir`.
    pub fn load(dir: &StateDir) -> Result<Book, Error> {
        let store = store::notebooks(dir);
        let desired = store.read()?.unwrap_or_default();
        // Servers are long-lived: keep restarting a crashing one, backing
        // off to a minute between tries.
        let mut tracker = TaskTracker::new(
            RetryPolicy::up_to(u32::MAX).backoff(Duration::from_secs(1), Duration::from_secs(60)),
        );
        let now = Instant::now();
        let mut entries = BTreeMap::new();
        for nb in desired.notebooks {
            tracker.add(nb.key());
            entries.insert(
                nb.name.clone(),
                Entry {
                    notebook: nb,
                    ready: false,
                    idle: IdleClock::new(now),
                    gpus: Vec::new(),
                    stopping: None,
                    message: String::new(),
                },
            );
        }
        Ok(Book {
            inner: Arc::new(Mutex::new(Inner {
                store,
                next_serial: desired.next_serial,
                entries,
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
    pub fn scheduler(&self) -> JupyterScheduler {
        JupyterScheduler { book: self.clone() }
    }

    /// The framework id, once subscribed.
    pub fn framework_id(&self) -> Option<String> {
        self.lock().framework_id.as_ref().map(|f| f.0.clone())
    }

    /// The driver, once subscribed (to stop it).
    pub fn driver(&self) -> Option<Driver> {
        self.lock().driver.clone()
    }

    /// Adds a notebook; refuses a name in use.
    pub fn start(&self, req: StartRequest) -> Result<NotebookView, Error> {
        let mut b = self.lock();
        let name = match req.name.clone() {
            Some(n) => n,
            None => (1..)
                .map(|i| format!("nb-{i}"))
                .find(|n| !b.entries.contains_key(n))
                .unwrap_or_default(),
        };
        notebook::validate_name(&name)?;
        if b.entries.contains_key(&name) {
            return Err(Error::Conflict(format!(
                "a notebook named '{name}' already exists; pick another --name, or `mezz jupyter stop {name}` first"
            )));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(req.cpus) || !positive(req.mem) {
            return Err(Error::BadRequest(
                "--cpus and --mem must be positive numbers".into(),
            ));
        }
        if req.idle_timeout_secs.is_some_and(|s| !positive(s)) {
            return Err(Error::BadRequest(
                "--idle-timeout must be longer than zero".into(),
            ));
        }
        let notebook_dir = match req.notebook_dir {
            Some(d) => d,
            None => format!("{}/{name}", req.notebook_root.trim_end_matches('/')),
        };
        if !notebook_dir.starts_with('/') {
            return Err(Error::BadRequest(format!(
                "the notebook directory '{notebook_dir}' is not an absolute path"
            )));
        }
        let nb = Notebook {
            name: name.clone(),
            serial: b.next_serial,
            cpus: req.cpus,
            mem: req.mem,
            gpus: req.gpus,
            token: random_hex()?,
            idle_timeout_secs: req.idle_timeout_secs,
            notebook_dir,
            python: req.python,
            lab: req.lab,
            agent_id: None,
            host: None,
            port: None,
        };
        b.next_serial += 1;
        b.tracker.add(nb.key());
        b.entries.insert(
            name.clone(),
            Entry {
                notebook: nb,
                ready: false,
                idle: IdleClock::new(Instant::now()),
                gpus: Vec::new(),
                stopping: None,
                message: String::new(),
            },
        );
        if let Err(e) = b.persist() {
            b.entries.remove(&name);
            return Err(e);
        }
        tracing::info!(notebook = %name, "notebook added");
        if let Some(d) = &b.driver {
            d.revive();
        }
        Ok(b.view(&name, true).expect("just inserted"))
    }

    /// Stops a notebook: kills its server, and forgets it once the kill is
    /// confirmed (at once when nothing runs).
    pub fn stop(&self, name: &str, reason: StopReason) -> Result<(), Error> {
        let mut b = self.lock();
        let Some(entry) = b.entries.get_mut(name) else {
            return Err(Error::NotFound(format!(
                "no notebook named '{name}'; `mezz jupyter ls` lists them"
            )));
        };
        if entry.stopping.is_none() {
            tracing::info!(notebook = %name, ?reason, "stopping notebook");
            entry.stopping = Some(reason);
        }
        let key = entry.notebook.key();
        let task = b.tracker.get(&key).cloned();
        match task {
            Some(t) if matches!(t.phase, Phase::Launched | Phase::Running) => {
                if let (Some(id), Some(d)) = (t.task_id, &b.driver) {
                    d.kill(id, Some(KILL_GRACE));
                }
                Ok(())
            }
            _ => b.forget(name),
        }
    }

    /// Every notebook.
    pub fn list(&self) -> Vec<NotebookView> {
        let b = self.lock();
        b.entries.keys().filter_map(|n| b.view(n, false)).collect()
    }

    /// One notebook, with its token.
    pub fn get(&self, name: &str) -> Option<NotebookView> {
        self.lock().view(name, true)
    }

    /// The running servers to poll for readiness and activity.
    pub fn probes(&self) -> Vec<Probe> {
        let b = self.lock();
        b.entries
            .values()
            .filter(|e| e.stopping.is_none())
            .filter(|e| {
                b.tracker
                    .get(&e.notebook.key())
                    .is_some_and(|t| t.phase == Phase::Running)
            })
            .filter_map(|e| {
                Some(Probe {
                    name: e.notebook.name.clone(),
                    serial: e.notebook.serial,
                    address: e.notebook.address()?,
                    token: e.notebook.token.clone(),
                })
            })
            .collect()
    }

    /// Takes a poll's result: `Ok(activity)` when the server answered
    /// with the token, `Err(why)` when not. Stops a server idle past its
    /// timeout.
    pub fn observe(&self, probe: &Probe, result: Result<notebook::Activity, String>) {
        let now = Instant::now();
        let idle_stop = {
            let mut b = self.lock();
            let Some(e) = b.entries.get_mut(&probe.name) else {
                return;
            };
            if e.notebook.serial != probe.serial || e.stopping.is_some() {
                return;
            }
            match result {
                Ok(activity) => {
                    if !e.ready {
                        tracing::info!(notebook = %probe.name, address = %probe.address, "server ready");
                        e.ready = true;
                        e.idle = IdleClock::new(now);
                        e.message.clear();
                    }
                    let idle = e.idle.observe(activity, now);
                    e.notebook
                        .idle_timeout_secs
                        .filter(|t| idle.as_secs_f64() > *t)
                        .map(|_| idle)
                }
                Err(why) => {
                    if e.ready {
                        e.message = why;
                    }
                    None
                }
            }
        };
        if let Some(idle) = idle_stop {
            let _ = self.stop(&probe.name, StopReason::Idle(idle));
        }
    }
}

impl Inner {
    fn persist(&self) -> Result<(), Error> {
        Ok(self.store.write(&Desired {
            next_serial: self.next_serial,
            notebooks: self.entries.values().map(|e| e.notebook.clone()).collect(),
        })?)
    }

    fn persist_or_log(&self) {
        if let Err(e) = self.persist() {
            tracing::error!("cannot store the notebooks: {e}");
        }
    }

    fn forget(&mut self, name: &str) -> Result<(), Error> {
        if let Some(e) = self.entries.remove(name) {
            tracing::info!(notebook = %name, reason = ?e.stopping, "notebook removed");
        }
        self.persist()
    }

    fn name_of_key(&self, key: &str) -> Option<String> {
        self.entries
            .values()
            .find(|e| e.notebook.key() == key)
            .map(|e| e.notebook.name.clone())
    }

    fn view(&self, name: &str, with_token: bool) -> Option<NotebookView> {
        let e = self.entries.get(name)?;
        let nb = &e.notebook;
        let task = self.tracker.get(&nb.key());
        let phase = task.map(|t| t.phase);
        let state = if e.stopping.is_some() {
            "stopping"
        } else {
            match phase {
                Some(Phase::Running) if e.ready => "running",
                Some(Phase::Running) | Some(Phase::Launched) => "starting",
                Some(Phase::Waiting) if task.is_some_and(|t| t.restarts > 0) => "restarting",
                Some(Phase::Failed) => "failed",
                Some(Phase::Finished) | Some(Phase::Killed) => "ended",
                _ => "waiting",
            }
        };
        let running = phase == Some(Phase::Running) && e.ready;
        Some(NotebookView {
            name: nb.name.clone(),
            state: state.into(),
            url: nb.url(),
            url_with_token: if with_token {
                nb.url_with_token()
            } else {
                None
            },
            cpus: nb.cpus,
            mem: nb.mem,
            gpus: nb.gpus,
            gpu_ids: e.gpus.clone(),
            idle_secs: running.then(|| e.idle.idle(Instant::now()).as_secs_f64()),
            idle_timeout_secs: nb.idle_timeout_secs,
            notebook_dir: nb.notebook_dir.clone(),
            agent_id: nb.agent_id.clone(),
            task_id: task.and_then(|t| t.task_id.as_ref()).map(|t| t.0.clone()),
            restarts: task.map(|t| t.restarts).unwrap_or(0),
            message: e.message.clone(),
        })
    }

    /// Keys to launch now: tracked as due, still wanted, not stopping.
    fn due(&self, now: Instant) -> Vec<String> {
        self.tracker
            .due(now)
            .into_iter()
            .filter(|k| {
                self.name_of_key(k)
                    .and_then(|n| self.entries.get(&n))
                    .is_some_and(|e| e.stopping.is_none())
            })
            .collect()
    }

    fn launch(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let now = Instant::now();
        let mut used = std::collections::HashSet::new();
        for key in self.due(now) {
            let Some(name) = self.name_of_key(&key) else {
                continue;
            };
            let nb = self.entries[&name].notebook.clone();
            let base = Resources::new()
                .with_scalar(CPUS, nb.cpus)
                .with_scalar(MEM, nb.mem);
            let found = offers
                .iter()
                .filter(|o| !used.contains(&o.id))
                .find_map(|o| {
                    if nb.agent_id.as_ref().is_some_and(|a| *a != o.agent_id) {
                        return None;
                    }
                    claim(o, &base, nb.gpus as usize, nb.port).map(|c| (o, c))
                });
            let Some((offer, (needs, port, gpus))) = found else {
                let wants = format!(
                    "waiting for an offer with {base} + 1 port{}{}",
                    if nb.gpus > 0 {
                        format!(" + {} GPU(s)", nb.gpus)
                    } else {
                        String::new()
                    },
                    nb.agent_id
                        .as_ref()
                        .map(|a| format!(" on agent {a}, where its files are"))
                        .unwrap_or_default()
                );
                if let Some(e) = self.entries.get_mut(&name) {
                    e.message = wants;
                }
                continue;
            };
            let host = agent_host(offer);
            let Some(task_id) = self
                .tracker
                .launched(&key, Some(AgentId(offer.agent_id.clone())))
            else {
                continue;
            };
            used.insert(offer.id.clone());
            let placed = Notebook {
                agent_id: Some(offer.agent_id.clone()),
                host: Some(host.clone()),
                port: Some(port),
                ..nb
            };
            let task = server_task(&placed, &task_id, &needs, &host, port).build(offer);
            tracing::info!(notebook = %name, task = %task_id, agent = %offer.agent_id, %host, port, "launching server");
            driver.launch([offer.id.clone()], vec![task]);
            if let Some(e) = self.entries.get_mut(&name) {
                e.notebook = placed;
                e.gpus = gpus;
                e.ready = false;
            }
            self.persist_or_log();
        }
        let unused: Vec<_> = offers
            .iter()
            .filter(|o| !used.contains(&o.id))
            .map(|o| o.id.clone())
            .collect();
        if !unused.is_empty() {
            // Waiting work wants to see these again soon; otherwise ask for
            // no more offers until there is some.
            if self.due(now).is_empty() {
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
        let Some(name) = self.name_of_key(&key) else {
            return;
        };
        let current = self
            .tracker
            .get(&key)
            .and_then(|t| t.task_id.clone())
            .is_some_and(|id| id.0 == status.task_id);
        if let Some(e) = self.entries.get_mut(&name) {
            if current && !status.message.is_empty() {
                e.message = status.message.clone();
            }
            if current && e.notebook.agent_id.is_none() && !status.agent_id.is_empty() {
                e.notebook.agent_id = Some(status.agent_id.clone());
            }
        }
        let stopping = self.entries.get(&name).and_then(|e| e.stopping.clone());
        match change {
            Some(Change::Running) => {
                tracing::info!(notebook = %name, task = %status.task_id, "server task running");
                if let Some(e) = self.entries.get_mut(&name) {
                    e.ready = false;
                    e.idle = IdleClock::new(now);
                }
                // A server taken back after a failover may have had a
                // stop under way: finish it.
                if stopping.is_some() {
                    driver.kill(TaskId(status.task_id.clone()), Some(KILL_GRACE));
                }
            }
            Some(Change::Restart { at }) => {
                if stopping.is_some() {
                    let _ = self.forget(&name);
                    return;
                }
                tracing::warn!(notebook = %name, task = %status.task_id, state = status.state().short_name(), "server ended; restarting it");
                if let Some(e) = self.entries.get_mut(&name) {
                    e.ready = false;
                }
                driver.wake_after(at.saturating_duration_since(now));
            }
            Some(Change::Killed) | Some(Change::Finished) => {
                // Killed on request, or shut down from its own menu: the
                // notebook is over either way.
                let _ = self.forget(&name);
            }
            Some(Change::GaveUp) if stopping.is_some() => {
                let _ = self.forget(&name);
            }
            Some(Change::GaveUp) | None => {}
        }
    }
}

/// What a notebook takes from `offer`: cpus and mem, one port (`want` when
/// offered, so a restart keeps its URL) and `gpus` GPUs. `None` when it
/// does not fit. Fit is decided by [`Resources::contains`], the master's
/// own check.
fn claim(
    offer: &proto::Offer,
    base: &Resources,
    gpus: usize,
    want: Option<u16>,
) -> Option<(Resources, u16, Vec<String>)> {
    let offered = Resources::from_proto(&offer.resources).ok()?;
    let ranges = offered.ranges(PORTS);
    let inside = |p: u64| ranges.iter().any(|&(b, e)| b <= p && p <= e);
    let port = want.map(u64::from).filter(|p| inside(*p)).or_else(|| {
        ranges
            .iter()
            .map(|&(b, _)| b)
            .find(|p| u16::try_from(*p).is_ok())
    })?;
    let port = u16::try_from(port).ok()?;
    let ids = mezz_sdk::pick_gpus(offer, &offered, gpus)?;
    let mut needs = base
        .clone()
        .with_ranges(PORTS, &[(u64::from(port), u64::from(port))]);
    if gpus > 0 {
        needs = needs.with_set(GPUS, ids.iter().cloned());
    }
    offered.contains(&needs).then_some((needs, port, ids))
}

/// The host clients reach an agent at: its advertised API address's host,
/// else its hostname.
fn agent_host(offer: &proto::Offer) -> String {
    match offer.agent_address.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => host.trim_matches(['[', ']']).to_string(),
        _ => offer.hostname.clone(),
    }
}

/// The server's task.
fn server_task(
    nb: &Notebook,
    task_id: &TaskId,
    needs: &Resources,
    host: &str,
    port: u16,
) -> TaskBuilder {
    let argv = notebook::server_argv(&nb.python, nb.lab, host, port, &nb.notebook_dir);
    let mut t = TaskBuilder::exec(task_id.clone(), argv[0].clone(), argv[1..].to_vec())
        .name(format!("jupyter/{}", nb.name))
        .resources(needs)
        .kill_grace(KILL_GRACE)
        .label("notebook", nb.name.clone())
        .label("notebook_dir", nb.notebook_dir.clone());
    if let Some(url) = nb.url() {
        t = t.label("url", url);
    }
    for (k, v) in notebook::server_env(nb) {
        t = t.env(k, v);
    }
    t
}

/// The SDK scheduler over a [`Book`].
pub struct JupyterScheduler {
    book: Book,
}

impl Scheduler for JupyterScheduler {
    fn subscribed(&mut self, driver: &Driver, id: &FrameworkId, reconnected: bool) {
        tracing::info!(%id, reconnected, "subscribed");
        let mut b = self.book.lock();
        b.driver = Some(driver.clone());
        b.framework_id = Some(id.clone());
        if reconnected {
            // The driver reconciles: learn which servers still run before
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
        } else if let Some(at) = b.tracker.next_retry() {
            driver.wake_after(at.saturating_duration_since(now));
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
