//! Jobs whose attempt is a gang of tasks run by another framework of this
//! tree: `kind: tensorflow` and `kind: pytorch` (the distributed-training
//! framework, `mezz-tensorflow`). The job file's `tensorflow:` section
//! holds the replica groups; everything else (command, resources, env,
//! retries, deadline, schedule, dependencies) is the job's, as for any
//! kind. `mezz tf run` builds the same [`mezz_tensorflow::JobSpec`] from
//! its flags with the same [`mezz_tensorflow::JobSpec::build`].
//!
//! An attempt runs as one training job named after the attempt
//! (`train.2`: replicas `train.2/worker/0`, task ids
//! `train.2.worker.0.0`), under a framework of its own that the jobs
//! framework drives in its process ([`run_tensorflow`]). What the jobs
//! engine sees of it is one status per attempt, with the attempt's task id:
//! RUNNING when the whole gang is launched (with the agent of its main
//! replica), then FINISHED or FAILED with the training job's outcome.

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

/// Whether a stored job's kind (`JobRecord.kind`) runs its attempts as
/// gangs.
pub fn is_gang_kind(kind: &str) -> bool {
    matches!(kind, "tensorflow" | "pytorch")
}

/// The task whose output is an attempt's output, among the task ids of
/// the cluster: the attempt's own task, or for a gang its main replica
/// (the chief, else worker 0), latest restart first.
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
            ["chief", "0", _] => 0,
            ["worker", "0", _] => 1,
            _ => continue,
        };
        let restart: u32 = parts[2].parse().unwrap_or(0);
        let better = best
            .is_none_or(|(r, n, _)| (rank, std::cmp::Reverse(restart)) < (r, std::cmp::Reverse(n)));
        if better {
            best = Some((rank, restart, id));
        }
    }
    best.map(|(_, _, id)| id)
}

/// A gang attempt to start: the job and the attempt's task id.
pub struct GangStart {
    /// The job.
    pub spec: JobSpec,
    /// The attempt's task id (`NAME.N`).
    pub task_id: String,
}

/// Stops a running gang attempt.
pub struct GangHandle {
    kill: Box<dyn Fn() + Send + Sync>,
}

impl GangHandle {
    /// A handle whose kill runs `kill`.
    pub fn new(kill: impl Fn() + Send + Sync + 'static) -> GangHandle {
        GangHandle {
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

/// How long a gang's framework outlives a jobs framework that died: then
/// the master kills the attempt's tasks.
pub const GANG_FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a training job's attempt under a framework of its own, driven by
/// `builder` (masters and credentials set), and tells `events` its
/// statuses (see the module's text). The handle kills it.
pub fn run_tensorflow(
    start: GangStart,
    builder: mezz_sdk::DriverBuilder,
    user: String,
    events: UnboundedSender<Event>,
) -> GangHandle {
    let GangStart { spec, task_id } = start;
    let role = spec.role.clone();
    let tell = {
        let events = events.clone();
        let role = role.clone();
        move |status: proto::TaskStatus| {
            let _ = events.send(Event::Status {
                role: role.clone(),
                status,
            });
        }
    };
    let training = spec
        .tensorflow
        .as_ref()
        .ok_or_else(|| "the job has no `tensorflow` section".to_string())
        .and_then(|g| g.training_job(&spec, &task_id));
    let training = match training {
        Ok(t) => t,
        Err(e) => {
            tell(attempt_status(
                &task_id,
                TaskState::Failed,
                "",
                None,
                format!("the training job cannot be made: {e}"),
            ));
            return GangHandle::new(|| {});
        }
    };
    let gpus = training.groups.values().any(|g| g.gpus > 0);
    let main = tf::ReplicaId {
        kind: if training.groups.contains_key(&tf::ReplicaType::Chief) {
            tf::ReplicaType::Chief
        } else {
            tf::ReplicaType::Worker
        },
        index: 0,
    };
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    let scheduler = tf::TfScheduler::new(training, move |e| {
        let _ = etx.send(e);
    });
    let interrupt = scheduler.interrupt_handle();
    let framework = proto::FrameworkInfo {
        name: format!("mezz-tf {task_id}"),
        role: role.clone(),
        priority: spec.priority.clone().unwrap_or_default(),
        failover_timeout_secs: GANG_FAILOVER_TIMEOUT.as_secs_f64(),
        user,
        capabilities: if gpus {
            vec![proto::Capability::GpuResources as i32]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let driver = tokio::spawn(
        builder
            .framework(framework)
            .connect_timeout(Duration::from_secs(8))
            .run(scheduler),
    );
    let abort = driver.abort_handle();
    let attempt = task_id.clone();
    tokio::spawn(async move {
        let mut driver = driver;
        let mut outcome: Option<tf::Outcome> = None;
        let mut running_said = false;
        let mut waiting_said = String::new();
        let mut handle_event = |e: tf::JobEvent, outcome: &mut Option<tf::Outcome>| match e {
            tf::JobEvent::Launched { replicas, .. } if !running_said => {
                running_said = true;
                let agent = replicas
                    .iter()
                    .find(|r| r.replica == main)
                    .or(replicas.first())
                    .map(|r| r.agent_id.clone())
                    .unwrap_or_default();
                tracing::info!(attempt = %attempt, replicas = replicas.len(), "the gang is launched");
                tell(attempt_status(
                    &attempt,
                    TaskState::Running,
                    &agent,
                    None,
                    String::new(),
                ));
            }
            tf::JobEvent::Waiting(why) if why != waiting_said => {
                tracing::info!(attempt = %attempt, "waiting to place the gang: {why}");
                waiting_said = why;
            }
            tf::JobEvent::Restarting { reason, .. } => {
                tracing::info!(attempt = %attempt, "restarting the gang: {reason}");
            }
            tf::JobEvent::Notice(m) => tracing::info!(attempt = %attempt, "{m}"),
            tf::JobEvent::Done(o) => *outcome = Some(o),
            _ => {}
        };
        let ended = loop {
            tokio::select! {
                Some(e) = erx.recv() => handle_event(e, &mut outcome),
                done = &mut driver => break done,
            }
        };
        while let Ok(e) = erx.try_recv() {
            handle_event(e, &mut outcome);
        }
        let status = match (outcome, ended) {
            (Some(tf::Outcome::Succeeded), _) => {
                attempt_status(&attempt, TaskState::Finished, "", Some(0), String::new())
            }
            (Some(tf::Outcome::Failed(why)), _) => {
                attempt_status(&attempt, TaskState::Failed, "", Some(1), why)
            }
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
                format!("the training job's framework failed: {e}"),
            ),
            (None, _) => attempt_status(
                &attempt,
                TaskState::Failed,
                "",
                None,
                "the training job's framework ended early".into(),
            ),
        };
        tell(status);
    });
    GangHandle::new(move || {
        if !interrupt.trigger() {
            match interrupt.driver() {
                Some(d) => d.teardown(),
                None => abort.abort(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
