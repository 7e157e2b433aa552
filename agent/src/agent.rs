//! The agent's task table and what happens to it: launches, kills, acks and
//! exits update the table, the checkpoint and the queue of unacknowledged
//! status updates. Decisions come from `lifecycle.rs`, processes from
//! `executor.rs`; the connection to the master lives in `master_link.rs`,
//! which only calls in here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mezz_proto::v1::{
    AgentInfo, AgentTask, FrameworkInfo, KillTask, LaunchTask, RegisterAgent, StatusAck,
    StatusSource, TaskReason, TaskState, TaskStatus,
};
use nix::sys::signal::Signal;
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use crate::checkpoint::{Checkpoint, TaskRecord};
use crate::executor::{self, StartLine};
use crate::health;
use crate::lifecycle::{self, Observed};
use crate::task_user::RunAs;

type Key = (String, String);

/// Where the host mounts its cgroup hierarchies; tasks see it read-only.
const CGROUP_MOUNTS: &str = "/sys/fs/cgroup";

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
    /// Who tasks run as.
    pub users: crate::task_user::Policy,
    /// Directories tasks must not see: the work dir and the
    /// `--task-hidden-path`s, absolute and validated.
    pub hidden_paths: Vec<PathBuf>,
}

/// The agent: its identity, its task table and its update queue.
pub struct Agent {
    machine: Machine,
    info: AgentInfo,
    work_dir: PathBuf,
    launcher: PathBuf,
    default_kill_grace: Duration,
    checkpoint: Checkpoint,
    state: Mutex<State>,
    updates_ready: Notify,
    shutdown: watch::Receiver<bool>,
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
        Agent {
            machine,
            info,
            work_dir: config.work_dir.clone(),
            launcher: config.launcher.clone(),
            default_kill_grace: config.default_kill_grace,
            checkpoint,
            state: Mutex::new(state),
            updates_ready: Notify::new(),
            shutdown,
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

    /// Runs `fut` until it ends or the agent shuts down.
    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
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

    // ------------------------------------------------------------ updates

    /// Stamps, checkpoints (durably) and queues a status update. With
    /// `record` the task's record takes it as its latest status.
    async fn emit(&self, mut status: TaskStatus, record: bool) {
        status.uuid = uuid::Uuid::new_v4().to_string();
        status.set_source(StatusSource::Agent);
        status.timestamp = mezz_proto::unix_now();
        status.agent_id = self.info.id.clone();
        let key = (status.framework_id.clone(), status.task_id.clone());
        let seq = {
            let mut st = self.lock();
            if record {
                if let Some(rec) = st.tasks.get_mut(&key) {
                    // A run that ended stays ended: a late health update
                    // (or any non-terminal one) is moot.
                    if state_of(rec).is_terminal() && !status.state().is_terminal() {
                        tracing::debug!(task_id = %key.1, "update after the terminal one dropped");
                        return;
                    }
                    rec.latest_status = Some(status.clone());
                    self.put(rec);
                }
            }
            match self.checkpoint.push_update(&status) {
                Ok(seq) => seq,
                Err(e) => {
                    tracing::error!("cannot checkpoint a status update: {e}");
                    return;
                }
            }
        };
        if let Err(e) = self.checkpoint.flush().await {
            tracing::error!("cannot flush {}: {e}", self.checkpoint.path().display());
        }
        let state = status.state();
        tracing::info!(
            framework_id = %key.0, task_id = %key.1,
            "task {} is {}{}",
            key.1,
            state.short_name(),
            if status.message.is_empty() { String::new() } else { format!(": {}", status.message) }
        );
        self.lock().unacked.insert(
            seq,
            Pending {
                status,
                sent_gen: 0,
                sent_at: None,
            },
        );
        self.updates_ready.notify_one();
    }

    fn status(key: &Key, state: TaskState, reason: TaskReason, message: String) -> TaskStatus {
        let mut s = TaskStatus {
            task_id: key.1.clone(),
            framework_id: key.0.clone(),
            message,
            ..Default::default()
        };
        s.set_state(state);
        s.set_reason(reason);
        s
    }

    /// Resolves when an update was queued (a stored wake-up counts).
    pub async fn updates_ready(&self) {
        self.updates_ready.notified().await
    }

    /// Updates not yet sent on stream generation `gen`, in order; marks them
    /// sent.
    pub fn take_unsent(&self, gen: u64) -> Vec<TaskStatus> {
        let now = Instant::now();
        let mut st = self.lock();
        st.unacked
            .values_mut()
            .filter(|p| p.sent_gen != gen)
            .map(|p| {
                p.sent_gen = gen;
                p.sent_at = Some(now);
                p.status.clone()
            })
            .collect()
    }

    /// Updates sent on `gen` more than `age` ago and still unacknowledged;
    /// marks them sent again.
    pub fn take_overdue(&self, gen: u64, age: Duration) -> Vec<TaskStatus> {
        let now = Instant::now();
        let mut st = self.lock();
        st.unacked
            .values_mut()
            .filter(|p| p.sent_gen == gen && p.sent_at.is_none_or(|t| now.duration_since(t) >= age))
            .map(|p| {
                p.sent_at = Some(now);
                p.status.clone()
            })
            .collect()
    }

    /// The first message of every stream.
    pub fn register_message(&self) -> RegisterAgent {
        let st = self.lock();
        let mut frameworks: BTreeMap<String, FrameworkInfo> = BTreeMap::new();
        let mut tasks = Vec::new();
        for ((fw_id, task_id), rec) in &st.tasks {
            let latest = rec.latest_status.clone().unwrap_or_else(|| {
                Self::status(
                    &(fw_id.clone(), task_id.clone()),
                    TaskState::Staging,
                    TaskReason::Unspecified,
                    String::new(),
                )
            });
            tasks.push(AgentTask {
                framework_id: fw_id.clone(),
                task: rec.task.clone(),
                latest_status: Some(TaskStatus {
                    agent_id: self.info.id.clone(),
                    ..latest
                }),
            });
            if let Some(fw) = &rec.framework {
                frameworks
                    .entry(fw_id.clone())
                    .or_insert_with(|| fw.clone());
            }
        }
        RegisterAgent {
            protocol_version: mezz_proto::PROTOCOL_VERSION,
            agent: Some(self.info.clone()),
            tasks,
            frameworks: frameworks.into_values().collect(),
            // Added by the master link, which holds the secret.
            ..Default::default()
        }
    }

    /// `StatusAck`: drop the update; forget the run once its terminal
    /// update is acknowledged.
    pub fn handle_ack(&self, ack: StatusAck) {
        let key = (ack.framework_id.clone(), ack.task_id.clone());
        let mut st = self.lock();
        let found = st
            .unacked
            .iter()
            .find(|(_, p)| p.status.uuid == ack.uuid && p.status.task_id == ack.task_id)
            .map(|(seq, _)| *seq);
        match found {
            Some(seq) => {
                st.unacked.remove(&seq);
                if let Err(e) = self.checkpoint.remove_update(seq) {
                    tracing::warn!("cannot remove an acknowledged update: {e}");
                }
            }
            None => {
                tracing::debug!(task_id = %ack.task_id, uuid = %ack.uuid, "ack for an update that is not pending")
            }
        }
        let terminal_acked = st.tasks.get(&key).is_some_and(|rec| {
            rec.latest_status
                .as_ref()
                .is_some_and(|s| s.state().is_terminal() && s.uuid == ack.uuid)
        });
        if terminal_acked {
            st.tasks.remove(&key);
            if let Err(e) = self.checkpoint.remove_task(&key.0, &key.1) {
                tracing::warn!("cannot forget task {}: {e}", key.1);
            }
            // Older updates of a finished run are moot now.
            let stale: Vec<u64> = st
                .unacked
                .iter()
                .filter(|(_, p)| p.status.framework_id == key.0 && p.status.task_id == key.1)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in stale {
                st.unacked.remove(&seq);
                let _ = self.checkpoint.remove_update(seq);
            }
            tracing::debug!(framework_id = %key.0, task_id = %key.1, "terminal update acknowledged; task run forgotten");
        }
    }

    // ------------------------------------------------------------ launch

    /// `LaunchTask`: validates and records synchronously (so a kill that
    /// follows finds the task), then starts it in the background.
    pub fn handle_launch(self: &Arc<Self>, launch: LaunchTask) {
        let framework = launch.framework.unwrap_or_default();
        let task = launch.task.unwrap_or_default();
        let key: Key = (framework.id.clone(), task.task_id.clone());
        let span = task_span(&key.0, &key.1);
        let existing = self.lock().tasks.get(&key).map(state_of);
        if let Err(why) = lifecycle::validate_launch(&framework, &task, existing) {
            span.in_scope(|| tracing::info!("refusing launch: {why}"));
            let status = Self::status(&key, TaskState::Error, TaskReason::InvalidTask, why);
            let me = Arc::clone(self);
            self.spawn(async move { me.emit(status, false).await }.instrument(span));
            return;
        }
        let sandbox = executor::sandbox_path(&self.work_dir, &key.0, &key.1);
        let rec = TaskRecord {
            framework: Some(framework),
            task: Some(task),
            sandbox: sandbox.display().to_string(),
            latest_status: Some(Self::status(
                &key,
                TaskState::Staging,
                TaskReason::Unspecified,
                String::new(),
            )),
            ..Default::default()
        };
        self.put(&rec);
        self.lock().tasks.insert(key.clone(), rec);
        let me = Arc::clone(self);
        self.spawn(async move { me.start(key, sandbox).await }.instrument(span));
    }

    async fn start(self: Arc<Self>, key: Key, sandbox: PathBuf) {
        let Some((task, framework_user)) = self.lock().tasks.get(&key).and_then(|r| {
            let fw_user = r
                .framework
                .as_ref()
                .map(|f| f.user.clone())
                .unwrap_or_default();
            r.task.clone().map(|t| (t, fw_user))
        }) else {
            return;
        };
        let who = executor::TaskIdentity {
            framework_id: &key.0,
            agent_id: &self.info.id,
        };
        let cgroup_name = format!(
            "{}.{}",
            key.1.chars().take(64).collect::<String>(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let task_user = task.command.as_ref().map(|c| c.user.as_str()).unwrap_or("");
        let spawned = self
            .machine
            .users
            .choose(task_user, &framework_user, crate::task_user::lookup)
            .and_then(|run_as| {
                let owner = match &run_as {
                    RunAs::User(a) => Some((a.uid, a.gid)),
                    RunAs::Agent => None,
                };
                executor::prepare_sandbox(&sandbox, owner)
                    .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
                let mut spec = executor::build_spec(&task, &who, &sandbox);
                self.isolate(&key, &task, &run_as, &cgroup_name, &mut spec)?;
                executor::write_spec(&sandbox, &spec).map_err(|e| {
                    format!("cannot write the launch spec in {}: {e}", sandbox.display())
                })
            })
            .and_then(|spec_path| {
                executor::spawn_wrapper(&self.launcher, &spec_path, &sandbox).map_err(|e| {
                    format!(
                        "cannot run the task launcher {}: {e}",
                        self.launcher.display()
                    )
                })
            });
        let spawned = match spawned {
            Ok(s) => s,
            Err(why) => {
                self.cleanup_cgroup(&key).await;
                let status = Self::status(&key, TaskState::Failed, TaskReason::LaunchFailed, why);
                self.emit(status, true).await;
                return;
            }
        };
        tracing::info!(
            wrapper_pid = spawned.pid,
            "launching task {} in {}",
            key.1,
            sandbox.display()
        );
        {
            let mut st = self.lock();
            if let Some(rec) = st.tasks.get_mut(&key) {
                rec.wrapper_pid = Some(spawned.pid);
                rec.wrapper_start_time = spawned.start_time;
                self.put(rec);
            }
        }
        let executor::Spawned {
            mut child, stdout, ..
        } = spawned;
        match executor::read_start_line(stdout).await {
            StartLine::Started(pgid) => self.started(&key, pgid).await,
            StartLine::Failed(why) => {
                let _ = child.wait().await;
                self.cleanup_cgroup(&key).await;
                let status = Self::status(&key, TaskState::Failed, TaskReason::LaunchFailed, why);
                self.emit(status, true).await;
                return;
            }
            StartLine::Nothing => {}
        }
        if let Err(e) = child.wait().await {
            tracing::warn!("cannot wait for the task wrapper: {e}");
        }
        self.finish(&key, Observed::Watched).await;
    }

    /// The command runs as process group `pgid`: report RUNNING, and carry
    /// out a kill that arrived before the pgid was known.
    async fn started(self: &Arc<Self>, key: &Key, pgid: i32) {
        let pending_kill = {
            let mut st = self.lock();
            let Some(rec) = st.tasks.get_mut(key) else {
                return;
            };
            rec.child_pgid = Some(pgid);
            self.put(rec);
            rec.kill_requested
                .then(|| rec.kill_grace_secs.map_or(self.default_kill_grace, secs))
        };
        let status = Self::status(
            key,
            TaskState::Running,
            TaskReason::Unspecified,
            String::new(),
        );
        self.emit(status, true).await;
        if let Some(grace) = pending_kill {
            self.signal_and_escalate(key.clone(), pgid, grace);
        } else {
            self.start_health_checks(key, pgid);
        }
    }

    /// The run is over: report its terminal status from the exit record.
    async fn finish(&self, key: &Key, observed: Observed) {
        let (sandbox, kill_requested, kill_reason, kill_message) = {
            let st = self.lock();
            let Some(rec) = st.tasks.get(key) else {
                return;
            };
            if state_of(rec).is_terminal() {
                return;
            }
            (
                PathBuf::from(&rec.sandbox),
                rec.kill_requested,
                rec.kill_reason.and_then(|r| TaskReason::try_from(r).ok()),
                rec.kill_message.clone(),
            )
        };
        let exit = crate::launch_spec::read_exit_record(
            &sandbox
                .join(crate::launch_spec::META_DIR)
                .join(crate::launch_spec::EXIT_FILE),
        );
        // Every process of the run is gone and its cgroup removed before
        // the terminal update goes out.
        let oom = self.cleanup_cgroup(key).await;
        let o = lifecycle::with_oom(
            lifecycle::outcome(exit, kill_requested, observed),
            oom,
            kill_requested,
        );
        let o = lifecycle::with_kill_reason(o, kill_reason, kill_message.as_deref());
        let mut status = Self::status(key, o.state, o.reason, o.message);
        status.exit_code = o.exit_code;
        status.signal = o.signal;
        self.emit(status, true).await;
    }

    // ------------------------------------------------------------ isolation

    /// Fills in the spec's isolation for one run: GPUs (environment and
    /// devices), run-as user, the cgroup (created here and checkpointed)
    /// and namespaces with what the task must not see.
    fn isolate(
        &self,
        key: &Key,
        task: &mezz_proto::v1::TaskInfo,
        run_as: &RunAs,
        cgroup_name: &str,
        spec: &mut crate::launch_spec::LaunchSpec,
    ) -> Result<(), String> {
        let given: Vec<String> = task
            .resources
            .iter()
            .filter(|r| r.name == crate::gpu::RESOURCE)
            .filter_map(|r| match &r.value {
                Some(mezz_proto::v1::resource::Value::Set(s)) => Some(s.item.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let gpus = crate::gpu::assign(&self.machine.gpus, &given)?;
        spec.env.extend(gpus.env);
        if let RunAs::User(a) = run_as {
            spec.env.insert("USER".into(), a.name.clone());
            spec.user = Some(a.name.clone());
        }
        let mut limits = crate::isolation::Limits::of_task(task, self.machine.isolation.pids_cap);
        limits.denied_gpu_minors = gpus.denied_minors;
        let prepared = self
            .machine
            .isolation
            .isolator
            .prepare(cgroup_name, &limits)
            .map_err(|e| e.to_string())?;
        {
            let mut st = self.lock();
            if let Some(rec) = st.tasks.get_mut(key) {
                rec.cgroup = Some(prepared.cgroup.clone());
                self.put(rec);
            }
        }
        spec.cgroup_procs = prepared.procs_files;
        spec.namespaces = self.machine.isolation.namespaces;
        spec.hostname = Some(key.1.clone());
        if spec.namespaces {
            spec.hide = self.machine.hidden_paths.clone();
            // Fake GPU nodes live in the work dir, which is hidden: their
            // directory comes back (the wrapper binds back only what a
            // hidden directory covers; /dev is not).
            let mut expose: Vec<PathBuf> = self
                .machine
                .gpus
                .iter()
                .filter_map(|g| g.device.parent())
                .map(Path::to_path_buf)
                .collect();
            expose.dedup();
            spec.expose = expose;
            spec.read_only = vec![PathBuf::from(CGROUP_MOUNTS)];
        }
        Ok(())
    }

    /// Kills what is left of the run's cgroup and removes it; returns
    /// whether the OOM killer acted in it. Idempotent.
    async fn cleanup_cgroup(&self, key: &Key) -> bool {
        let Some(cgroup) = self.lock().tasks.get(key).and_then(|r| r.cgroup.clone()) else {
            return false;
        };
        let isolator = std::sync::Arc::clone(&self.machine.isolation.isolator);
        let done = tokio::task::spawn_blocking(move || {
            let oom = isolator.oom_killed(&cgroup);
            (oom, isolator.cleanup(&cgroup))
        })
        .await;
        match done {
            Ok((oom, Ok(()))) => oom,
            Ok((oom, Err(e))) => {
                tracing::warn!(framework_id = %key.0, task_id = %key.1, "{e}");
                oom
            }
            Err(e) => {
                tracing::warn!("cgroup cleanup task failed: {e}");
                false
            }
        }
    }

    /// The isolator in use (for tests and benchmarks).
    pub fn isolator(&self) -> &std::sync::Arc<dyn crate::isolation::Isolator> {
        &self.machine.isolation.isolator
    }

    // ------------------------------------------------------------ kill

    fn grace_for(&self, requested: Option<f64>, rec: &TaskRecord) -> Duration {
        let task_grace = rec.task.as_ref().map_or(0.0, |t| t.kill_grace_period_secs);
        match requested {
            Some(g) if g.is_finite() && g >= 0.0 => secs(g),
            _ if task_grace.is_finite() && task_grace > 0.0 => secs(task_grace),
            _ => self.default_kill_grace,
        }
    }

    /// `KillTask`.
    pub fn handle_kill(self: &Arc<Self>, kill: KillTask) {
        let key: Key = (kill.framework_id.clone(), kill.task_id.clone());
        let span = task_span(&key.0, &key.1);
        let _guard = span.enter();
        let target = {
            let mut st = self.lock();
            match st.tasks.get_mut(&key) {
                Some(rec) if !state_of(rec).is_terminal() => {
                    let grace = self.grace_for(kill.grace_period_secs, rec);
                    rec.kill_requested = true;
                    rec.kill_grace_secs = Some(grace.as_secs_f64());
                    self.put(rec);
                    Some((rec.child_pgid, grace))
                }
                Some(_) => {
                    tracing::debug!("kill of an already terminal task ignored");
                    return;
                }
                None => None,
            }
        };
        match target {
            Some((Some(pgid), grace)) => {
                tracing::info!("killing task {} (grace {:?})", key.1, grace);
                self.signal_and_escalate(key.clone(), pgid, grace);
            }
            Some((None, _)) => {
                tracing::info!(
                    "kill requested before the task started; it is killed as soon as it does"
                );
            }
            None => {
                let heard_of = crate::validate_ids(&key.0, &key.1)
                    && executor::sandbox_path(&self.work_dir, &key.0, &key.1).exists();
                if heard_of {
                    tracing::debug!("kill of a forgotten task ignored");
                    return;
                }
                let status = Self::status(
                    &key,
                    TaskState::Lost,
                    TaskReason::Unspecified,
                    "unknown task".into(),
                );
                let me = Arc::clone(self);
                drop(_guard);
                self.spawn(async move { me.emit(status, false).await }.instrument(span));
            }
        }
    }

    /// `ShutdownFramework`: kill all of its tasks.
    pub fn handle_shutdown_framework(self: &Arc<Self>, framework_id: &str) {
        let tasks: Vec<String> = self
            .lock()
            .tasks
            .iter()
            .filter(|((fw, _), rec)| fw == framework_id && !state_of(rec).is_terminal())
            .map(|((_, t), _)| t.clone())
            .collect();
        tracing::info!(
            "shutting down framework {framework_id}: killing {} task(s)",
            tasks.len()
        );
        for task_id in tasks {
            self.handle_kill(KillTask {
                framework_id: framework_id.to_string(),
                task_id,
                grace_period_secs: None,
                reason: TaskReason::FrameworkRemoved as i32,
            });
        }
    }

    /// Kills every running task and waits, up to `limit`, for them to end.
    /// Used when the agent's work dir is thrown away with it (`mezz dev`).
    pub async fn kill_all(self: &Arc<Self>, limit: Duration) {
        let active: Vec<Key> = self
            .lock()
            .tasks
            .iter()
            .filter(|(_, rec)| !state_of(rec).is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        if active.is_empty() {
            return;
        }
        tracing::info!("killing {} task(s) before stopping", active.len());
        for (framework_id, task_id) in active {
            self.handle_kill(KillTask {
                framework_id,
                task_id,
                grace_period_secs: Some(limit.as_secs_f64() / 2.0),
                reason: TaskReason::KilledByRequest as i32,
            });
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let left = self
                .lock()
                .tasks
                .values()
                .any(|rec| !state_of(rec).is_terminal());
            if !left {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("some tasks did not end within {limit:?}");
    }

    /// SIGTERM to the group now, SIGKILL after `grace` if the run is still
    /// not over.
    fn signal_and_escalate(self: &Arc<Self>, key: Key, pgid: i32, grace: Duration) {
        executor::signal_group(pgid, Signal::SIGTERM);
        let me = Arc::clone(self);
        self.spawn(async move {
            // Make the kill request durable, so a restart reports KILLED.
            let _ = me.checkpoint.flush().await;
            tokio::time::sleep(grace).await;
            let still_running = me.lock().tasks.get(&key).is_some_and(|rec| {
                !state_of(rec).is_terminal() && rec.child_pgid == Some(pgid)
            });
            if still_running {
                tracing::info!(framework_id = %key.0, task_id = %key.1, "grace period over; sending SIGKILL to process group {pgid}");
                executor::signal_group(pgid, Signal::SIGKILL);
            }
        });
    }

    // ------------------------------------------------------------ recovery

    /// After a restart: re-attach to wrappers still running, report the
    /// ending of those that are gone. Runs before the first registration.
    pub async fn recover(self: &Arc<Self>) {
        let records: Vec<(Key, TaskRecord)> = self
            .lock()
            .tasks
            .iter()
            .filter(|(_, rec)| !state_of(rec).is_terminal())
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, rec) in records {
            let span = task_span(&key.0, &key.1);
            let alive = rec
                .wrapper_pid
                .is_some_and(|pid| executor::wrapper_alive(pid, rec.wrapper_start_time));
            if !alive {
                span.in_scope(|| {
                    tracing::info!("task wrapper is gone; reporting how the task ended")
                });
                self.finish(&key, Observed::AfterAgentRestart)
                    .instrument(span)
                    .await;
                continue;
            }
            let pid = rec.wrapper_pid.unwrap_or_default();
            span.in_scope(|| {
                tracing::info!(wrapper_pid = pid, "re-attached to running task {}", key.1)
            });
            let pgid = rec
                .child_pgid
                .or_else(|| executor::recorded_child_pid(Path::new(&rec.sandbox)));
            if rec.child_pgid.is_none() {
                if let Some(pgid) = pgid {
                    self.started(&key, pgid).instrument(span.clone()).await;
                }
            } else if rec.kill_requested {
                // The kill was under way when the agent went down.
                let grace = rec.kill_grace_secs.map_or(self.default_kill_grace, secs);
                if let Some(pgid) = pgid {
                    self.signal_and_escalate(key.clone(), pgid, grace);
                }
            } else if let Some(pgid) = pgid {
                // Health is not checkpointed: checks start over.
                span.in_scope(|| self.start_health_checks(&key, pgid));
            }
            let me = Arc::clone(self);
            let start_time = rec.wrapper_start_time;
            self.spawn(
                async move {
                    executor::wait_wrapper_gone(pid, start_time).await;
                    me.finish(&key, Observed::Watched).await;
                }
                .instrument(span),
            );
        }
    }

    // ------------------------------------------------------------ health

    /// Starts the task's health checks, if it has any, for the run whose
    /// command is process group `pgid`. They end with the run (or a kill).
    fn start_health_checks(self: &Arc<Self>, key: &Key, pgid: i32) {
        let (check, sandbox) = {
            let st = self.lock();
            let Some(rec) = st.tasks.get(key) else {
                return;
            };
            let Some(check) = rec.task.as_ref().and_then(|t| t.health_check.clone()) else {
                return;
            };
            (check, PathBuf::from(&rec.sandbox))
        };
        let policy = match health::Policy::from_proto(&check) {
            Ok(p) => p,
            Err(e) => {
                // Validated at launch; only an old checkpoint gets here.
                tracing::warn!("task {}: not checking health: {e}", key.1);
                return;
            }
        };
        tracing::debug!(
            "checking health of task {} every {:?}: {}",
            key.1,
            policy.interval,
            policy.describe()
        );
        let me = Arc::clone(self);
        let key = key.clone();
        let span = task_span(&key.0, &key.1);
        self.spawn(
            async move { me.health_loop(key, pgid, policy, sandbox).await }.instrument(span),
        );
    }

    /// Is the run with process group `pgid` still one to check?
    fn health_wanted(&self, key: &Key, pgid: i32) -> bool {
        self.lock().tasks.get(key).is_some_and(|rec| {
            state_of(rec) == TaskState::Running
                && rec.child_pgid == Some(pgid)
                && !rec.kill_requested
        })
    }

    async fn health_loop(
        self: Arc<Self>,
        key: Key,
        pgid: i32,
        policy: health::Policy,
        sandbox: PathBuf,
    ) {
        let since = Instant::now();
        let ctx = tokio::task::spawn_blocking(move || health::CommandContext::of_sandbox(&sandbox))
            .await
            .unwrap_or_default()
            .in_task_of(pgid);
        let mut tick = tokio::time::interval(policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tracker = health::Tracker::new(policy);
        loop {
            tick.tick().await;
            if !self.health_wanted(&key, pgid) {
                return;
            }
            let p = tracker.policy();
            let result = health::probe(&p.probe, &ctx, p.timeout).await;
            // The run may have ended while the check ran: its result is moot.
            if !self.health_wanted(&key, pgid) {
                return;
            }
            if let Err(e) = &result {
                tracing::debug!("health check of task {} failed: {e}", key.1);
            }
            for effect in tracker.observe(since.elapsed(), result) {
                match effect {
                    health::Effect::Health { healthy, message } => {
                        let mut status = Self::status(
                            &key,
                            TaskState::Running,
                            TaskReason::Unspecified,
                            message,
                        );
                        status.healthy = Some(healthy);
                        self.emit(status, true).await;
                    }
                    health::Effect::Kill(why) => {
                        self.kill_for(&key, TaskReason::HealthCheckFailed, why);
                        return;
                    }
                }
            }
        }
    }

    /// The agent's own kill of a task (not asked for by the master): the
    /// terminal update says `reason` and `why`.
    fn kill_for(self: &Arc<Self>, key: &Key, reason: TaskReason, why: String) {
        let target = {
            let mut st = self.lock();
            let Some(rec) = st.tasks.get_mut(key) else {
                return;
            };
            if state_of(rec).is_terminal() || rec.kill_requested {
                return;
            }
            let grace = self.grace_for(None, rec);
            rec.kill_requested = true;
            rec.kill_grace_secs = Some(grace.as_secs_f64());
            rec.kill_reason = Some(reason as i32);
            rec.kill_message = Some(why.clone());
            self.put(rec);
            rec.child_pgid.map(|pgid| (pgid, grace))
        };
        tracing::info!("killing task {}: {why}", key.1);
        if let Some((pgid, grace)) = target {
            self.signal_and_escalate(key.clone(), pgid, grace);
        }
    }

    // ------------------------------------------------------------ files API

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
