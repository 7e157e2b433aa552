//! Jobs whose attempt is a gang of tasks run by another framework of this
//! tree:
//! - `kind: tensorflow` and `kind: pytorch`, the distributed-training
//!   framework (`mezz-tensorflow`). The job file's `tensorflow:` section
//!   holds the replica groups; the job's command, resources and env are
//!   every replica's. `mezz tf run` builds the same
//!   [`mezz_tensorflow::JobSpec`] from its flags with the same
//!   [`mezz_tensorflow::JobSpec::build`].
//! - `kind: spark`, the Spark framework (`mezz-spark`). The `spark:`
//!   section is a [`mezz_spark::AppRequest`], the form `mezz spark
//!   submit`'s flags fill in, resolved by the same
//!   [`mezz_spark::AppRequest::resolve`].
//!
//! Retries, the deadline, the schedule and dependencies are the job's, as
//! for any kind. An attempt runs as one training job or application named
//! after the attempt (`train.2`: replicas `train.2/worker/0`; `etl.3`:
//! tasks `etl.3.driver`, `etl.3.master`, `etl.3.worker.0.0`), under a
//! framework of its own that the jobs framework drives in its process
//! ([`run_tensorflow`], [`run_spark`]). What the jobs engine sees of it is
//! one status per attempt, with the attempt's task id: RUNNING when the
//! whole gang is launched (with the agent of its main task), then
//! FINISHED or FAILED with the gang's outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use mezz_sdk::proto;
use mezz_sdk::sizes::Sizes;
use mezz_sdk::TaskState;
use mezz_tensorflow as tf;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::Event;
use crate::spec::{JobSpec, Kind, SpecError};

/// The `tensorflow:` section of a job file, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TfSection {
    chief: Option<tf::spec::GroupFile>,
    worker: Option<tf::spec::GroupFile>,
    ps: Option<tf::spec::GroupFile>,
    evaluator: Option<tf::spec::GroupFile>,
    restart: Option<String>,
    start_deadline: Option<String>,
    run_deadline: Option<String>,
}

/// One replica group as kept with the job (sizes resolved).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TfGroup {
    /// Replicas of the group.
    pub count: u32,
    /// CPUs of each.
    pub cpus: f64,
    /// Memory of each, MB.
    pub mem: f64,
    /// GPUs of each.
    pub gpus: u32,
    /// The group's own command, when it has one.
    pub command: Option<Vec<String>>,
}

/// A training job's gang as kept with the job: validated, sizes resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TfGang {
    /// The groups by type (`chief`, `worker`, `ps`, `evaluator`).
    pub groups: BTreeMap<String, TfGroup>,
    /// `never` (when absent), `on-failure` or `on-failure:N`: gang
    /// restarts within one attempt (the job's `retries` start new
    /// attempts).
    pub restart: Option<String>,
    /// Each gang launch must come this long after it starts to wait, ms.
    pub start_deadline_ms: Option<u64>,
    /// The training job's own run deadline, ms.
    pub run_deadline_ms: Option<u64>,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The shell command of a training job's replicas: the job's `command`,
/// run in its `workdir` when it has one.
fn replica_command(workdir: Option<&str>, command: &str) -> String {
    match workdir {
        Some(w) => format!("cd {} && {command}", crate::spec::quote(w)),
        None => command.to_string(),
    }
}

/// Validates the `tensorflow:` section of a job of kind `tensorflow` or
/// `pytorch` against the rest of its spec, the way `mezz tf run` does its
/// flags: top-level `cpus`, `mem`, `gpus` or `size` size every replica
/// (GPUs go to the chief and workers only), `command` and `env` are every
/// replica's. Returns the gang to keep.
pub fn tf_gang(
    section: Option<TfSection>,
    spec: &JobSpec,
    explicit: (Option<f64>, Option<f64>, Option<u32>),
    sizes: &Sizes,
) -> Result<TfGang, SpecError> {
    let mut s = section.unwrap_or_default();
    let restart = s.restart.clone();
    if s.chief.is_none() && s.worker.is_none() && s.ps.is_none() && s.evaluator.is_none() {
        s.worker = Some(tf::spec::GroupFile::default());
    }
    // The job's resources are each group's defaults: a group's own size,
    // cpus, mem or gpus win. GPUs go to the chief and workers only.
    let (cpus, mem, gpus) = explicit;
    for (group, compute) in [
        (&mut s.chief, true),
        (&mut s.worker, true),
        (&mut s.ps, false),
        (&mut s.evaluator, false),
    ] {
        let Some(g) = group.as_mut() else { continue };
        if g.size.is_none() && g.cpus.is_none() && g.mem.is_none() {
            g.size.clone_from(&spec.size);
        }
        g.cpus = g.cpus.or(cpus);
        g.mem = g.mem.or(mem);
        if g.gpus.is_none() {
            g.gpus = if compute { gpus } else { Some(0) };
        }
    }
    let file = tf::JobFile {
        name: None,
        command: spec
            .command
            .as_deref()
            .map(|c| tf::spec::Command::Shell(replica_command(spec.workdir.as_deref(), c))),
        env: BTreeMap::new(),
        flavor: None,
        restart: s.restart,
        start_deadline: s.start_deadline,
        run_deadline: s.run_deadline,
        chief: s.chief,
        worker: s.worker,
        ps: s.ps,
        evaluator: s.evaluator,
    };
    let flags = tf::Overrides {
        name: Some(spec.name.clone()),
        flavor: Some(match spec.kind {
            Kind::Pytorch => tf::Flavor::Pytorch,
            _ => tf::Flavor::Tensorflow,
        }),
        ..Default::default()
    };
    let built = tf::JobSpec::build(Some(file), flags, |n| Ok(sizes.get(n)?))
        .map_err(|e| SpecError(format!("`tensorflow`: {}", e.0)))?;
    Ok(TfGang {
        groups: built
            .groups
            .iter()
            .map(|(t, g)| {
                (
                    t.as_str().to_string(),
                    TfGroup {
                        count: g.count,
                        cpus: g.cpus,
                        mem: g.mem,
                        gpus: g.gpus,
                        command: g.command.clone(),
                    },
                )
            })
            .collect(),
        restart,
        start_deadline_ms: ms(built.start_deadline),
        run_deadline_ms: ms(built.run_deadline),
    })
}

impl TfGang {
    /// The largest replica: what one agent must hold (cpus, mem, gpus).
    pub fn largest(&self) -> (f64, f64, u32) {
        self.groups.values().fold((0.0, 0.0, 0), |(c, m, g), r| {
            (c.max(r.cpus), m.max(r.mem), g.max(r.gpus))
        })
    }

    /// GPUs of the whole gang.
    pub fn gpus(&self) -> u32 {
        self.groups.values().map(|g| g.count * g.gpus).sum()
    }

    /// The training job of `job`'s attempt `attempt` (its task id, which
    /// names the training job).
    pub fn training_job(&self, job: &JobSpec, attempt: &str) -> Result<tf::JobSpec, String> {
        let mut groups = BTreeMap::new();
        for (t, g) in &self.groups {
            let t: tf::ReplicaType = t.parse().map_err(|e: tf::SpecError| e.0)?;
            let mut group = tf::ReplicaGroup::new(g.count);
            group.cpus = g.cpus;
            group.mem = g.mem;
            group.gpus = g.gpus;
            group.command = g.command.clone();
            groups.insert(t, group);
        }
        let spec = tf::JobSpec {
            name: attempt.to_string(),
            groups,
            command: job
                .command
                .as_deref()
                .map(|c| vec![replica_command(job.workdir.as_deref(), c)])
                .unwrap_or_default(),
            env: job.env.clone(),
            flavor: match job.kind {
                Kind::Pytorch => tf::Flavor::Pytorch,
                _ => tf::Flavor::Tensorflow,
            },
            restart: match &self.restart {
                Some(r) => r.parse().map_err(|e: tf::SpecError| e.0)?,
                None => tf::RestartPolicy::Never,
            },
            start_deadline: self.start_deadline_ms.map(Duration::from_millis),
            run_deadline: self.run_deadline_ms.map(Duration::from_millis),
        };
        spec.validate().map_err(|e| e.0)?;
        Ok(spec)
    }
}

/// A command as one shell string: a lone string is one already, several
/// arguments are quoted one by one.
fn shell_text(command: &[String]) -> String {
    match command {
        [one] => one.clone(),
        args => args
            .iter()
            .map(|a| crate::spec::quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The job file (as JSON) of the training job `spec` that `mezz tf run`'s
/// flags make: `mezz job submit` of it runs the same gang, through the
/// same [`TfGang::training_job`], under the jobs framework (with its
/// retries, schedule, dependencies and history).
pub fn tf_job_file(spec: &tf::JobSpec, role: &str, priority: Option<&str>) -> serde_json::Value {
    let mut section = serde_json::Map::new();
    for (t, g) in &spec.groups {
        let mut group = serde_json::json!({
            "count": g.count, "cpus": g.cpus, "mem": g.mem, "gpus": g.gpus,
        });
        if let Some(c) = &g.command {
            group["command"] = c.clone().into();
        }
        section.insert(t.as_str().into(), group);
    }
    if spec.restart != tf::RestartPolicy::Never {
        section.insert("restart".into(), spec.restart.to_string().into());
    }
    for (key, d) in [
        ("start_deadline", spec.start_deadline),
        ("run_deadline", spec.run_deadline),
    ] {
        if let Some(d) = d {
            section.insert(key.into(), humantime::format_duration(d).to_string().into());
        }
    }
    let mut job = serde_json::json!({
        "kind": match spec.flavor {
            tf::Flavor::Pytorch => "pytorch",
            tf::Flavor::Tensorflow => "tensorflow",
        },
        "name": spec.name,
        "role": role,
        "tensorflow": section,
    });
    if !spec.command.is_empty() {
        job["command"] = shell_text(&spec.command).into();
    }
    if !spec.env.is_empty() {
        job["env"] = serde_json::json!(spec.env);
    }
    if let Some(p) = priority {
        job["priority"] = p.into();
    }
    job
}

/// The job file (as JSON) of the Spark application that `mezz spark
/// submit`'s flags ask for.
pub fn spark_job_file(
    name: &str,
    app: &mezz_spark::AppRequest,
    size: Option<&str>,
    role: &str,
) -> serde_json::Value {
    let mut job = serde_json::json!({
        "kind": "spark", "name": name, "role": role, "spark": app,
    });
    if let Some(s) = size {
        job["size"] = s.into();
    }
    job
}

/// Whether a stored job's kind (`JobRecord.kind`) has its attempts run by
/// another framework (see [`crate::spec::Kind::is_delegated`]).
pub fn is_delegated_kind(kind: &str) -> bool {
    matches!(
        kind,
        "tensorflow" | "pytorch" | "spark" | "jupyter" | "serve"
    )
}

/// How `spark:` fields are named in errors.
fn spark_field(f: &str) -> String {
    format!("`spark.{f}`")
}

/// Validates a job's `spark:` section with the job's `size` (which sizes
/// each executor's worker, as `mezz spark submit --size` does) and returns
/// it with every size written out, so that it needs no menu later, and
/// the sizes of its tasks. Java, Spark and the files are looked for when
/// an attempt starts (and by `mezz job submit` before it sends).
pub fn spark_request(
    mut app: mezz_spark::AppRequest,
    size: Option<&str>,
    sizes: &Sizes,
) -> Result<(mezz_spark::AppRequest, mezz_spark::Sizing), String> {
    if !app.app.starts_with('/') {
        return Err(format!(
            "{}: '{}' is not an absolute path",
            spark_field("app"),
            app.app
        ));
    }
    let size = size.map(|s| sizes.get(s)).transpose().map_err(|e| e.0)?;
    let s = app.sizing(size.as_ref(), &spark_field)?;
    app.executors = Some(s.executors);
    app.executor_cores = Some(s.executor_cores);
    app.executor_memory = Some(format!("{}m", s.executor_memory_mb));
    app.driver_memory = Some(format!("{}m", s.driver_memory_mb));
    app.gpus_per_executor = Some(s.gpus_per_executor);
    Ok((app, s))
}

/// The Spark application of `job`'s attempt `attempt`, with Java and
/// Spark found on this machine.
pub fn spark_app(job: &JobSpec, attempt: &str) -> Result<mezz_spark::AppSpec, String> {
    let app = job
        .spark
        .as_ref()
        .ok_or_else(|| "the job has no `spark` section".to_string())?;
    let mut spec = app.resolve(attempt, None, &spark_field)?;
    spec.name = job.name.clone();
    Ok(spec)
}

/// The task whose output is an attempt's output, among the task ids of
/// the cluster: the attempt's own task, or for a gang its main task (a
/// Spark driver; a training job's chief, else worker 0, latest restart
/// first).
pub fn main_task<'a>(
    attempt: &str,
    task_ids: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(u8, u32, &str)> = None;
    for id in task_ids {
        if id == attempt {
            return Some(id);
        }
        let Some(rest) = id.strip_prefix(attempt).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let rank = match parts.as_slice() {
            ["driver"] => 0,
            ["chief", "0", _] => 1,
            ["worker", "0", _] => 2,
            _ => continue,
        };
        let restart: u32 = parts.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
        let better = best
            .is_none_or(|(r, n, _)| (rank, std::cmp::Reverse(restart)) < (r, std::cmp::Reverse(n)));
        if better {
            best = Some((rank, restart, id));
        }
    }
    best.map(|(_, _, id)| id)
}

/// A gang attempt to start: the job and the attempt's task id.
pub struct AttemptStart {
    /// The job.
    pub spec: JobSpec,
    /// The attempt's task id (`NAME.N`).
    pub task_id: String,
}

/// Stops a running gang attempt.
pub struct AttemptHandle {
    kill: Box<dyn Fn() + Send + Sync>,
}

impl AttemptHandle {
    /// A handle whose kill runs `kill`.
    pub fn new(kill: impl Fn() + Send + Sync + 'static) -> AttemptHandle {
        AttemptHandle {
            kill: Box::new(kill),
        }
    }

    /// Kills every task of the attempt; its end is then reported as for
    /// any attempt.
    pub fn kill(&self) {
        (self.kill)()
    }
}

/// The status the engine is told of a gang attempt.
fn attempt_status(
    task_id: &str,
    state: TaskState,
    agent_id: &str,
    exit_code: Option<i32>,
    message: String,
) -> proto::TaskStatus {
    proto::TaskStatus {
        task_id: task_id.to_string(),
        agent_id: agent_id.to_string(),
        state: state as i32,
        exit_code,
        message,
        timestamp: now(),
        ..Default::default()
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Tells the engine that attempt `task_id` failed before anything ran;
/// its handle has nothing to kill.
fn failed_to_start(tell: &Teller, task_id: &str, why: String) -> AttemptHandle {
    tell.status(attempt_status(task_id, TaskState::Failed, "", None, why));
    AttemptHandle::new(|| {})
}

/// ` (attempt N)` for a gang's restart N within one job attempt.
fn restart_note(attempt: u32) -> String {
    if attempt > 0 {
        format!(" (attempt {attempt})")
    } else {
        String::new()
    }
}

/// How long a gang's framework outlives a jobs framework that died: then
/// the master kills the attempt's tasks.
pub const GANG_FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// What one event of a gang's scheduler means for its attempt.
enum Step {
    /// Nothing the engine needs.
    Nothing,
    /// News short of an end, kept as the job's note.
    Note(String),
    /// The whole gang is launched; the main task is on this agent; with
    /// news of it.
    Running(String, String),
    /// The gang is over.
    Done {
        state: TaskState,
        exit_code: Option<i32>,
        message: String,
    },
}

/// Follows a gang's driver and scheduler events until the driver ends,
/// telling the engine the attempt's notes and statuses through `tell`:
/// RUNNING once, then its end (also when the driver failed or was
/// aborted).
fn supervise<E, S>(
    attempt: String,
    driver: tokio::task::JoinHandle<Result<S, mezz_sdk::SdkError>>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<E>,
    mut step: impl FnMut(E) -> Step + Send + 'static,
    tell: Teller,
) where
    E: Send + 'static,
    S: Send + 'static,
{
    tokio::spawn(async move {
        let mut driver = driver;
        let mut running_said = false;
        let mut done: Option<proto::TaskStatus> = None;
        let mut handle = |e: E, done: &mut Option<proto::TaskStatus>| match step(e) {
            Step::Note(text) => tell.note(&attempt, text),
            Step::Running(agent, text) => {
                if !running_said {
                    running_said = true;
                    tracing::info!(attempt = %attempt, agent = %agent, "the gang is launched");
                    tell.status(attempt_status(
                        &attempt,
                        TaskState::Running,
                        &agent,
                        None,
                        String::new(),
                    ));
                }
                tell.note(&attempt, text);
            }
            Step::Done {
                state,
                exit_code,
                message,
            } => *done = Some(attempt_status(&attempt, state, "", exit_code, message)),
            Step::Nothing => {}
        };
        let ended = loop {
            tokio::select! {
                Some(e) = events.recv() => handle(e, &mut done),
                r = &mut driver => break r,
            }
        };
        while let Ok(e) = events.try_recv() {
            handle(e, &mut done);
        }
        let status = match (done, ended) {
            (Some(s), _) => s,
            (None, Err(e)) if e.is_cancelled() => attempt_status(
                &attempt,
                TaskState::Killed,
                "",
                None,
                "killed before its framework subscribed".into(),
            ),
            (None, Ok(Err(e))) => attempt_status(
                &attempt,
                TaskState::Failed,
                "",
                None,
                format!("the gang's framework failed: {e}"),
            ),
            (None, _) => attempt_status(
                &attempt,
                TaskState::Failed,
                "",
                None,
                "the gang's framework ended early".into(),
            ),
        };
        tell.status(status);
    });
}

/// Tells the engine of a delegated attempt of a job in `role`.
#[derive(Clone)]
pub struct Teller {
    events: UnboundedSender<Event>,
    role: String,
}

impl Teller {
    /// A teller to `events` for a job in `role`.
    pub fn new(events: UnboundedSender<Event>, role: String) -> Teller {
        Teller { events, role }
    }

    /// The attempt's status.
    pub fn status(&self, status: proto::TaskStatus) {
        let _ = self.events.send(Event::Status {
            role: self.role.clone(),
            status,
        });
    }

    /// News of the attempt `task_id`, kept as the job's note while it runs.
    pub fn note(&self, task_id: &str, text: String) {
        let _ = self.events.send(Event::Note {
            task_id: task_id.to_string(),
            text,
        });
    }
}

/// The handle of a gang: a kill asks its scheduler to kill every task
/// (`trigger`, false before it subscribed); a driver not subscribed yet is
/// torn down, or aborted when it has not connected at all.
fn killer(
    trigger: impl Fn() -> bool + Send + Sync + 'static,
    driver: impl Fn() -> Option<mezz_sdk::Driver> + Send + Sync + 'static,
    abort: tokio::task::AbortHandle,
) -> AttemptHandle {
    AttemptHandle::new(move || {
        if !trigger() {
            match driver() {
                Some(d) => d.teardown(),
                None => abort.abort(),
            }
        }
    })
}

/// The framework of a gang attempt: in the job's role and priority class,
/// ended by the master [`GANG_FAILOVER_TIMEOUT`] after its driver is gone.
fn gang_framework(spec: &JobSpec, name: String, user: String, gpus: bool) -> proto::FrameworkInfo {
    proto::FrameworkInfo {
        name,
        role: spec.role.clone(),
        priority: spec.priority.clone().unwrap_or_default(),
        failover_timeout_secs: GANG_FAILOVER_TIMEOUT.as_secs_f64(),
        user,
        capabilities: if gpus {
            vec![proto::Capability::GpuResources as i32]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// Runs a training job's attempt under a framework of its own, driven by
/// `builder` (masters and credentials set), and tells `events` its
/// statuses (see the module's text). The handle kills it.
pub fn run_tensorflow(
    start: AttemptStart,
    builder: mezz_sdk::DriverBuilder,
    user: String,
    events: UnboundedSender<Event>,
) -> AttemptHandle {
    let AttemptStart { spec, task_id } = start;
    let tell = Teller::new(events, spec.role.clone());
    let training = spec
        .tensorflow
        .as_ref()
        .ok_or_else(|| "the job has no `tensorflow` section".to_string())
        .and_then(|g| g.training_job(&spec, &task_id));
    let training = match training {
        Ok(t) => t,
        Err(e) => {
            return failed_to_start(
                &tell,
                &task_id,
                format!("the training job cannot be made: {e}"),
            )
        }
    };
    let gpus = training.groups.values().any(|g| g.gpus > 0);
    let training_replicas = training.replicas();
    let main = tf::ReplicaId {
        kind: if training.groups.contains_key(&tf::ReplicaType::Chief) {
            tf::ReplicaType::Chief
        } else {
            tf::ReplicaType::Worker
        },
        index: 0,
    };
    let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
    let scheduler = tf::TfScheduler::new(training, move |e| {
        let _ = etx.send(e);
    });
    let interrupt = scheduler.interrupt_handle();
    let interrupt2 = interrupt.clone();
    let framework = gang_framework(&spec, format!("mezz-tf {task_id}"), user, gpus);
    let driver = tokio::spawn(
        builder
            .framework(framework)
            .connect_timeout(Duration::from_secs(8))
            .run(scheduler),
    );
    let abort = driver.abort_handle();
    let replicas = training_replicas;
    let started = std::time::Instant::now();
    let step = move |e: tf::JobEvent| match e {
        tf::JobEvent::Launched {
            replicas: launched,
            attempt,
            ..
        } => {
            let agents: std::collections::BTreeSet<&str> =
                launched.iter().map(|r| r.agent_id.as_str()).collect();
            let agent = launched
                .iter()
                .find(|r| r.replica == main)
                .or(launched.first())
                .map(|r| r.agent_id.clone())
                .unwrap_or_default();
            Step::Running(
                agent,
                format!(
                    "launched {} replicas on {} agent(s){} after {} ms",
                    launched.len(),
                    agents.len(),
                    restart_note(attempt),
                    started.elapsed().as_millis()
                ),
            )
        }
        tf::JobEvent::AllRunning { attempt } => Step::Note(format!(
            "all {replicas} replicas RUNNING{} {} ms after the attempt started",
            restart_note(attempt),
            started.elapsed().as_millis()
        )),
        tf::JobEvent::Waiting(why) => Step::Note(format!(
            "waiting to place all {replicas} replicas at once: {why}"
        )),
        tf::JobEvent::Restarting {
            restart,
            after,
            reason,
        } => Step::Note(format!(
            "{reason}; restarting the whole gang (restart {restart}) in {} ms",
            after.as_millis()
        )),
        tf::JobEvent::Notice(m) => Step::Note(m),
        tf::JobEvent::Done(tf::Outcome::Succeeded) => Step::Done {
            state: TaskState::Finished,
            exit_code: Some(0),
            message: String::new(),
        },
        tf::JobEvent::Done(tf::Outcome::Failed(why)) => Step::Done {
            state: TaskState::Failed,
            exit_code: Some(1),
            message: why,
        },
        tf::JobEvent::Replica { .. } => Step::Nothing,
    };
    supervise(task_id, driver, erx, step, tell);
    killer(
        move || interrupt.trigger(),
        move || interrupt2.driver(),
        abort,
    )
}

/// Runs a Spark job's attempt under a framework of its own (named as `mezz
/// spark submit` names it, so `mezz spark ls` and `kill` see it), driven
/// by `builder`, and tells `events` its statuses. The handle kills it.
pub fn run_spark(
    start: AttemptStart,
    builder: mezz_sdk::DriverBuilder,
    user: String,
    events: UnboundedSender<Event>,
) -> AttemptHandle {
    let AttemptStart { spec, task_id } = start;
    let tell = Teller::new(events, spec.role.clone());
    let app = match spark_app(&spec, &task_id) {
        Ok(a) => a,
        Err(e) => {
            return failed_to_start(
                &tell,
                &task_id,
                format!("the Spark application cannot be made: {e}"),
            )
        }
    };
    let max_replacements = spec
        .spark
        .as_ref()
        .and_then(|a| a.max_replacements)
        .unwrap_or(mezz_spark::request::DEFAULT_MAX_REPLACEMENTS);
    let framework = gang_framework(&spec, app.framework_name(), user, app.gpus_per_executor > 0);
    let executors_asked = app.executors;
    let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
    let scheduler = mezz_spark::SparkScheduler::new(app, max_replacements, move |e| {
        let _ = etx.send(e);
    })
    .publish_webui(true);
    let interrupt = scheduler.interrupt_handle();
    let interrupt2 = interrupt.clone();
    let driver = tokio::spawn(async move {
        let run = |framework: proto::FrameworkInfo, scheduler| {
            builder
                .clone()
                .framework(framework)
                .connect_timeout(Duration::from_secs(8))
                .run(scheduler)
        };
        let mut scheduler = run(framework.clone(), scheduler).await?;
        // Launched, with the Spark master's UI known: subscribe again, as
        // the same framework, with it as the framework's web UI.
        if let Some(url) = scheduler.take_webui_url() {
            let again = proto::FrameworkInfo {
                id: scheduler.framework_id().to_string(),
                webui_url: url,
                ..framework
            };
            scheduler = run(again, scheduler).await?;
        }
        Ok(scheduler)
    });
    let abort = driver.abort_handle();
    let executors = executors_asked;
    let started = std::time::Instant::now();
    let step = move |e: mezz_spark::AppEvent| match e {
        mezz_spark::AppEvent::Launched {
            tasks,
            master_url,
            master_ui,
            app_ui,
            ..
        } => {
            let agents: std::collections::BTreeSet<&str> =
                tasks.iter().map(|t| t.agent_id.as_str()).collect();
            Step::Running(
                tasks
                    .iter()
                    .find(|t| t.role == mezz_spark::Role::Driver)
                    .map(|t| t.agent_id.clone())
                    .unwrap_or_default(),
                format!(
                    "launched the master, {executors} worker(s) and the driver on {} agent(s) \
                     after {} ms; Spark master {master_url}, master UI {master_ui}, \
                     application UI {app_ui} (while the driver runs)",
                    agents.len(),
                    started.elapsed().as_millis()
                ),
            )
        }
        mezz_spark::AppEvent::Waiting(why) => {
            Step::Note(format!("waiting to place the application: {why}"))
        }
        mezz_spark::AppEvent::Replacing {
            index,
            replacement,
            reason,
        } => Step::Note(format!(
            "{reason}; launching a new worker/{index} (replacement {replacement})"
        )),
        mezz_spark::AppEvent::Notice(m) => Step::Note(m),
        mezz_spark::AppEvent::Done(o) => Step::Done {
            state: if o.code == 0 {
                TaskState::Finished
            } else {
                TaskState::Failed
            },
            exit_code: Some(i32::from(o.code)),
            message: o.message.unwrap_or_default(),
        },
        _ => Step::Nothing,
    };
    supervise(task_id, driver, erx, step, tell);
    killer(
        move || interrupt.trigger(),
        move || interrupt2.driver(),
        abort,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tf_flags_job_file_reads_back_as_the_same_training_job() {
        let flags = tf::Overrides {
            name: Some("mnist".into()),
            chief: true,
            workers: Some(2),
            cpus: Some(2.0),
            mem: Some(512.0),
            gpus: Some(1),
            env: vec![("EPOCHS".into(), "3".into())],
            restart: Some("on-failure:2".parse().unwrap()),
            run_deadline: Some(Duration::from_secs(5400)),
            command: vec![
                "python3".into(),
                "train.py".into(),
                "--lr".into(),
                "0.1".into(),
            ],
            ..Default::default()
        };
        let built = tf::JobSpec::build(None, flags, |n| Ok(Sizes::builtin().get(n)?)).unwrap();
        let file = tf_job_file(&built, "eng", Some("batch"));
        let job = JobSpec::parse(&serde_json::to_string(&file).unwrap(), &Sizes::builtin())
            .unwrap_or_else(|e| panic!("{e}: {file}"));
        assert_eq!(
            (job.role.as_str(), job.priority.as_deref()),
            ("eng", Some("batch"))
        );
        let again = job
            .tensorflow
            .as_ref()
            .unwrap()
            .training_job(&job, "mnist")
            .unwrap();
        assert_eq!(again.groups, built.groups);
        assert_eq!(again.env, built.env);
        assert_eq!(again.restart, built.restart);
        assert_eq!(again.run_deadline, built.run_deadline);
        assert_eq!(again.command, ["python3 train.py --lr 0.1"]);
    }

    #[test]
    fn the_main_task_is_the_attempts_own_or_its_chief_or_worker_zero() {
        let ids = [
            "train.2.ps.0.0",
            "train.2.worker.1.0",
            "train.2.worker.0.0",
            "train.2.worker.0.1",
            "train.20.chief.0.0",
        ];
        assert_eq!(
            main_task("train.2", ids),
            Some("train.2.worker.0.1"),
            "latest restart"
        );
        let with_chief = ["train.2.worker.0.0", "train.2.chief.0.0"];
        assert_eq!(main_task("train.2", with_chief), Some("train.2.chief.0.0"));
        assert_eq!(main_task("etl.1", ["etl.1", "etl.10"]), Some("etl.1"));
        assert_eq!(main_task("etl.3", ["etl.1"]), None);
        let spark = ["etl.3.master", "etl.3.worker.0.0", "etl.3.driver"];
        assert_eq!(main_task("etl.3", spark), Some("etl.3.driver"));
    }
}
