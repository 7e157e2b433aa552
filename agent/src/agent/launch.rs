//! Launching a task run: the record is written synchronously, then in the
//! background the sandbox is made, the run isolated (the isolation steps
//! of `crate::isolation::steps`), its launch spec written and the wrapper
//! spawned; the wrapper's start line makes the run RUNNING and its exit
//! ends it with a terminal update, sent once the steps' cleanup has
//! removed what is left of the run.

use std::path::PathBuf;
use std::sync::Arc;

use mezz_proto::v1::{LaunchTask, TaskReason, TaskState};
use tracing::Instrument;

use super::{secs, state_of, task_span, Agent, Key};
use crate::checkpoint::TaskRecord;
use crate::executor::{self, StartLine};
use crate::isolation::steps;
use crate::lifecycle::{self, Observed};
use crate::task_user::RunAs;

impl Agent {
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
            launched_at: Some(mezz_proto::unix_now()),
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
        // The sandbox, the cgroup, the spec and the spawn are blocking
        // file-system work: off the runtime's workers, so that a burst of
        // launches does not hold up the master link (acks, kills) or each
        // other's status updates.
        let me = Arc::clone(&self);
        let k = key.clone();
        let sb = sandbox.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            me.prepare_and_spawn(&k, &task, &framework_user, &sb)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the launch's preparation failed: {e}")));
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

    /// The blocking part of a launch: the run-as user, the sandbox, the
    /// isolation steps, the launch spec and the wrapper's spawn.
    fn prepare_and_spawn(
        &self,
        key: &Key,
        task: &mezz_proto::v1::TaskInfo,
        framework_user: &str,
        sandbox: &std::path::Path,
    ) -> Result<executor::Spawned, String> {
        let who = executor::TaskIdentity {
            framework_id: &key.0,
            agent_id: &self.info.id,
        };
        let cgroup_name = crate::isolation::run_cgroup_name(&key.1, &self.owner);
        let task_user = task.command.as_ref().map(|c| c.user.as_str()).unwrap_or("");
        self.machine
            .users
            .choose(task_user, framework_user, crate::task_user::lookup)
            .and_then(|run_as| {
                let owner = match &run_as {
                    RunAs::User(a) => Some((a.uid, a.gid)),
                    RunAs::Agent => None,
                };
                executor::prepare_sandbox(sandbox, owner)
                    .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
                let mut spec = executor::build_spec(task, &who, sandbox);
                self.isolate(key, task, &run_as, &cgroup_name, &mut spec)?;
                executor::write_spec(sandbox, &spec).map_err(|e| {
                    format!("cannot write the launch spec in {}: {e}", sandbox.display())
                })
            })
            .and_then(|spec_path| {
                executor::spawn_wrapper(&self.launcher, &spec_path, sandbox).map_err(|e| {
                    format!(
                        "cannot run the task launcher {}: {e}",
                        self.launcher.display()
                    )
                })
            })
    }

    /// The command runs as process group `pgid`: report RUNNING, and carry
    /// out a kill that arrived before the pgid was known.
    pub(super) async fn started(self: &Arc<Self>, key: &Key, pgid: i32) {
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
    pub(super) async fn finish(&self, key: &Key, observed: Observed) {
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
        // The GPUs' last sample is taken while the run's processes may
        // still hold them; then every process of the run is gone and its
        // cgroup removed before the terminal update goes out.
        let gpu_use = self.take_gpu_use(key);
        let ended = self.cleanup_cgroup(key).await;
        let o = lifecycle::with_oom(
            lifecycle::outcome(exit, kill_requested, observed),
            ended.oom_killed,
            kill_requested,
        );
        let o = lifecycle::with_kill_reason(o, kill_reason, kill_message.as_deref());
        let mut status = Self::status(key, o.state, o.reason, o.message);
        status.exit_code = o.exit_code;
        status.signal = o.signal;
        status.cpu_seconds = ended.cpu_seconds;
        status.peak_memory_bytes = ended.peak_memory_bytes;
        if let Some((pct, mb)) = gpu_use {
            status.gpu_utilization_pct = Some(pct);
            status.gpu_peak_memory_mb = Some(mb);
        }
        self.emit(status, true).await;
    }

    /// Runs the isolation steps (GPUs, user, cgroup, namespaces; see
    /// `crate::isolation::steps`) over the run's spec. The cgroup they
    /// made is checkpointed even when a later step fails, so the failed
    /// launch's cleanup finds it.
    fn isolate(
        &self,
        key: &Key,
        task: &mezz_proto::v1::TaskInfo,
        run_as: &RunAs,
        cgroup_name: &str,
        spec: &mut crate::launch_spec::LaunchSpec,
    ) -> Result<(), String> {
        let mut run = steps::Run {
            task,
            run_as,
            cgroup_name,
            spec,
            denied_gpu_minors: Vec::new(),
            cgroup: None,
        };
        let prepared = self.steps.prepare(&mut run);
        if let Some(cgroup) = run.cgroup {
            let mut st = self.lock();
            if let Some(rec) = st.tasks.get_mut(key) {
                rec.cgroup = Some(cgroup);
                self.put(rec);
            }
        }
        prepared
    }

    /// Runs the isolation steps' cleanup for the run: kills what is left
    /// of its cgroup and removes it; returns what its accounting said
    /// (the OOM killer, CPU time, peak memory). Idempotent.
    pub(super) async fn cleanup_cgroup(&self, key: &Key) -> steps::Ended {
        let Some(cgroup) = self.lock().tasks.get(key).and_then(|r| r.cgroup.clone()) else {
            return steps::Ended::default();
        };
        let steps = Arc::clone(&self.steps);
        let done = tokio::task::spawn_blocking(move || steps.cleanup(&cgroup)).await;
        match done {
            Ok((ended, errors)) => {
                for e in errors {
                    tracing::warn!(framework_id = %key.0, task_id = %key.1, "{e}");
                }
                ended
            }
            Err(e) => {
                tracing::warn!("cgroup cleanup task failed: {e}");
                steps::Ended::default()
            }
        }
    }

    /// The isolator in use (for tests and benchmarks).
    pub fn isolator(&self) -> &std::sync::Arc<dyn crate::isolation::Isolator> {
        &self.machine.isolation.isolator
    }
}
