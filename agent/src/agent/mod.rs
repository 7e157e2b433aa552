//! The agent's task table and what happens to it: launches, kills, acks and
//! exits update the table, the checkpoint and the queue of unacknowledged
//! status updates. Decisions come from `lifecycle.rs`, processes from
//! `executor.rs`; the connection to the master lives in `master_link.rs`,
//! which only calls in here. This file holds the table and its helpers;
//! each kind of event has its own module: `updates` (the update queue and
//! acks), `launch`, `kill`, `recover` (after a restart) and
//! `health_checks`; `spawned` counts the background tasks they start, so
//! that shutdown can wait for them.

mod health_checks;
mod kill;
mod launch;
mod recover;
mod spawned;
mod updates;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mezz_proto::v1::{AgentInfo, TaskState, TaskStatus};
use tokio::sync::{watch, Notify};

use crate::checkpoint::{Checkpoint, TaskRecord};

type Key = (String, String);

/// An update the master has not acknowledged.
struct Pending {
    status: TaskStatus,
    /// The stream generation it was last sent on (0 = never).
    sent_gen: u64,
    sent_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    tasks: HashMap<Key, TaskRecord>,
    unacked: BTreeMap<u64, Pending>,
}

/// What the agent found on this machine at start-up.
pub struct Machine {
    /// The isolator and whether tasks get namespaces.
    pub isolation: crate::isolation::Selected,
    /// This machine's GPUs.
    pub gpus: Vec<crate::gpu::Gpu>,
    /// Where their use is read (NVML, or the fake GPUs' files).
    pub gpu_backend: Option<Arc<dyn crate::gpu::GpuBackend>>,
    /// Who tasks run as.
    pub users: crate::task_user::Policy,
    /// Directories tasks must not see: the work dir and the
    /// `--task-hidden-path`s, absolute and validated.
    pub hidden_paths: Vec<PathBuf>,
}

/// The agent: its identity, its task table and its update queue.
pub struct Agent {
    machine: Machine,
    /// The isolation steps every launch runs through.
    steps: Arc<crate::isolation::steps::Steps>,
    /// Marks this agent's run cgroups (see `isolation::owner_tag`).
    owner: String,
    info: AgentInfo,
    work_dir: PathBuf,
    launcher: PathBuf,
    default_kill_grace: Duration,
    checkpoint: Checkpoint,
    state: Mutex<State>,
    updates_ready: Notify,
    shutdown: watch::Receiver<bool>,
    /// The background tasks, for shutdown to wait for.
    spawned: spawned::Spawned,
    /// The key of the leading master's sandbox grants, when it asks for
    /// them (see `mezz_proto::grant` and `files`).
    grant_key: std::sync::RwLock<Option<Vec<u8>>>,
}

fn state_of(rec: &TaskRecord) -> TaskState {
    rec.latest_status
        .as_ref()
        .map_or(TaskState::Staging, |s| s.state())
}

fn task_span(framework_id: &str, task_id: &str) -> tracing::Span {
    tracing::info_span!("task", framework_id = %framework_id, task_id = %task_id)
}

impl Agent {
    /// The current use of every GPU whose backend can tell (for the
    /// heartbeat). NVML answers in microseconds; fake GPUs read a small
    /// file.
    pub fn gpu_usage(&self) -> Vec<mezz_proto::v1::GpuUsage> {
        let Some(backend) = self.machine.gpu_backend.as_deref() else {
            return Vec::new();
        };
        backend
            .gpus()
            .iter()
            .filter_map(|g| {
                let u = backend.usage(g)?;
                Some(mezz_proto::v1::GpuUsage {
                    gpu: g.id.0.clone(),
                    utilization_pct: u.utilization_pct.min(100),
                    memory_used_mb: u.memory_used_mb,
                })
            })
            .collect()
    }

    /// Waits, at most `limit`, for the agent's background tasks to end
    /// once the shutdown signal is set; true when they all did.
    pub async fn wait_for_tasks(&self, limit: Duration) -> bool {
        self.spawned.wait(limit).await
    }

    /// An agent over an opened checkpoint; `shutdown` turning true stops
    /// every background job it starts.
    pub fn new(
        info: AgentInfo,
        config: &crate::Config,
        checkpoint: Checkpoint,
        machine: Machine,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut state = State::default();
        for rec in checkpoint.tasks() {
            if let Some(key) = rec.key() {
                state.tasks.insert(key, rec);
            }
        }
        for (seq, status) in checkpoint.updates() {
            state.unacked.insert(
                seq,
                Pending {
                    status,
                    sent_gen: 0,
                    sent_at: None,
                },
            );
        }
        let steps = crate::isolation::steps::Steps::standard(
            &machine.isolation,
            &machine.gpus,
            &machine.hidden_paths,
        );
        Agent {
            steps: Arc::new(steps),
            owner: crate::isolation::owner_tag(&info.id),
            machine,
            info,
            work_dir: config.work_dir.clone(),
            launcher: config.launcher.clone(),
            default_kill_grace: config.default_kill_grace,
            checkpoint,
            state: Mutex::new(state),
            updates_ready: Notify::new(),
            shutdown,
            spawned: spawned::Spawned::new(),
            grant_key: std::sync::RwLock::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The work directory.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Takes the grant key of the master this agent registered with: from
    /// then on a task's files are served only with a grant signed with it.
    /// An empty key (a master that authenticates nobody) is kept too, as
    /// "no grants": once a master asked for grants, a later one that does
    /// not is believed, since it is the one that leads.
    pub fn set_grant_key(&self, key: Vec<u8>) {
        let mut k = self.grant_key.write().unwrap_or_else(|e| e.into_inner());
        *k = (!key.is_empty()).then_some(key);
    }

    /// Checks a sandbox grant for a task (see `mezz_proto::grant`): always
    /// passes while the master asks for none.
    pub fn check_grant(
        &self,
        grant: Option<&str>,
        framework_id: &str,
        task_id: &str,
    ) -> Result<(), mezz_proto::grant::GrantError> {
        let k = self.grant_key.read().unwrap_or_else(|e| e.into_inner());
        match k.as_deref() {
            None => Ok(()),
            Some(key) => mezz_proto::grant::verify(
                key,
                grant,
                framework_id,
                task_id,
                self.id(),
                mezz_proto::unix_now(),
            ),
        }
    }

    /// Runs `fut` until it ends or the agent shuts down.
    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown.clone();
        self.spawned.spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = crate::stopped(&mut shutdown) => {}
            }
        });
    }

    fn put(&self, rec: &TaskRecord) {
        if let Err(e) = self.checkpoint.put_task(rec) {
            tracing::error!("cannot write {}: {e}", self.checkpoint.path().display());
        }
    }

    /// True when the run of this task is terminal or not on record.
    pub fn task_terminal(&self, framework_id: &str, task_id: &str) -> bool {
        self.lock()
            .tasks
            .get(&(framework_id.to_string(), task_id.to_string()))
            .is_none_or(|rec| state_of(rec).is_terminal())
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::from_secs(5))
}

impl Agent {
    /// Makes the checkpoint durable.
    pub async fn flush(&self) -> sled::Result<()> {
        self.checkpoint.flush().await
    }
}
