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
    /// The GPU use of running tasks that hold GPUs, sampled with each
    /// heartbeat (kept in memory: an agent restart starts it again).
    gpu_use: HashMap<Key, GpuUse>,
}

/// The GPU use of one task so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct GpuUse {
    /// Sum over the samples of the mean utilization of its GPUs.
    pct_sum: f64,
    samples: u32,
    /// The most memory its GPUs held together in one sample, MB.
    peak_mb: u64,
}

impl GpuUse {
    /// Adds one sample of the task's GPUs (`held`) from `usage`; a sample
    /// that reads none of them adds nothing.
    fn add(&mut self, held: &[&str], usage: &[mezz_proto::v1::GpuUsage]) {
        let mine: Vec<&mezz_proto::v1::GpuUsage> = usage
            .iter()
            .filter(|u| held.contains(&u.gpu.as_str()))
            .collect();
        if mine.is_empty() {
            return;
        }
        let pct: u32 = mine.iter().map(|u| u.utilization_pct).sum();
        self.pct_sum += f64::from(pct) / mine.len() as f64;
        self.samples += 1;
        self.peak_mb = self
            .peak_mb
            .max(mine.iter().map(|u| u.memory_used_mb).sum());
    }

    /// The mean utilization, percent, and the peak memory, MB; None
    /// without a sample.
    fn summary(&self) -> Option<(f64, u64)> {
        (self.samples > 0).then(|| (self.pct_sum / f64::from(self.samples), self.peak_mb))
    }
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

/// The ids of the GPUs a task was given.
fn held_gpus(rec: &TaskRecord) -> Vec<String> {
    rec.task
        .as_ref()
        .map(|t| {
            crate::resources::of_task(t)
                .set_items(crate::gpu::RESOURCE)
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn task_span(framework_id: &str, task_id: &str) -> tracing::Span {
    tracing::info_span!("task", framework_id = %framework_id, task_id = %task_id)
}

impl Agent {
    /// The current use of every GPU whose backend can tell (for the
    /// heartbeat), also added to the use of the running tasks that hold
    /// them. NVML answers in microseconds; fake GPUs read a small file.
    pub fn gpu_usage(&self) -> Vec<mezz_proto::v1::GpuUsage> {
        let usage = self.read_gpu_usage();
        if !usage.is_empty() {
            let mut st = self.lock();
            let State { tasks, gpu_use, .. } = &mut *st;
            // A task that ended another way (a failed launch) leaves no
            // use behind.
            gpu_use.retain(|k, _| tasks.get(k).is_some_and(|r| !state_of(r).is_terminal()));
            for (key, rec) in tasks.iter() {
                if state_of(rec).is_terminal() {
                    continue;
                }
                let held = held_gpus(rec);
                if !held.is_empty() {
                    let held: Vec<&str> = held.iter().map(String::as_str).collect();
                    gpu_use.entry(key.clone()).or_default().add(&held, &usage);
                }
            }
        }
        usage
    }

    /// Takes the GPU use of a task that ended, after one last sample: its
    /// mean utilization (percent) and peak memory (MB), None when it held
    /// no GPU or none could be read.
    pub(super) fn take_gpu_use(&self, key: &Key) -> Option<(f64, u64)> {
        let held = self
            .lock()
            .tasks
            .get(key)
            .map(held_gpus)
            .unwrap_or_default();
        let mut st = self.lock();
        let mut used = st.gpu_use.remove(key).unwrap_or_default();
        drop(st);
        if !held.is_empty() {
            let held: Vec<&str> = held.iter().map(String::as_str).collect();
            used.add(&held, &self.read_gpu_usage());
        }
        used.summary()
    }

    fn read_gpu_usage(&self) -> Vec<mezz_proto::v1::GpuUsage> {
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

#[cfg(test)]
mod tests {
    use super::GpuUse;
    use mezz_proto::v1::GpuUsage;

    fn u(gpu: &str, pct: u32, mb: u64) -> GpuUsage {
        GpuUsage {
            gpu: gpu.into(),
            utilization_pct: pct,
            memory_used_mb: mb,
        }
    }

    #[test]
    fn a_tasks_gpu_use_is_the_mean_over_samples_of_its_own_gpus() {
        let mut g = GpuUse::default();
        assert_eq!(g.summary(), None, "no sample, nothing to say");
        // Two GPUs held, a third (busy) one is another task's.
        let held = ["gpu-0", "gpu-1"];
        g.add(
            &held,
            &[
                u("gpu-0", 80, 1000),
                u("gpu-1", 40, 500),
                u("gpu-2", 100, 9000),
            ],
        );
        g.add(&held, &[u("gpu-0", 20, 200), u("gpu-1", 20, 100)]);
        // A sample that reads none of its GPUs does not count.
        g.add(&held, &[u("gpu-2", 100, 9000)]);
        assert_eq!(g.summary(), Some((40.0, 1500)));
    }
}
