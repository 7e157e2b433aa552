//! The job spec: replica groups (chief, worker, ps, evaluator) with their
//! resources, the command, environment, flavor and the restart policy;
//! parsed from a TOML or YAML file and validated. Pure data: nothing here
//! talks to a cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::sizes::Size;
use crate::SpecError;

/// The longest job name.
pub const MAX_NAME: usize = 80;

/// The kinds of replica a distributed TensorFlow job has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReplicaType {
    /// Coordinates training and writes checkpoints; its end is the job's end.
    Chief,
    /// Computes gradients.
    Worker,
    /// Parameter server: holds variables; runs until it is killed.
    Ps,
    /// Evaluates checkpoints on the side; not part of the cluster spec.
    Evaluator,
}

impl ReplicaType {
    /// Every type, in the order replicas are placed and listed.
    pub const ALL: [ReplicaType; 4] = [
        ReplicaType::Chief,
        ReplicaType::Worker,
        ReplicaType::Ps,
        ReplicaType::Evaluator,
    ];

    /// The name TensorFlow uses (`TF_CONFIG` keys, task names).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaType::Chief => "chief",
            ReplicaType::Worker => "worker",
            ReplicaType::Ps => "ps",
            ReplicaType::Evaluator => "evaluator",
        }
    }
}

impl fmt::Display for ReplicaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReplicaType {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        ReplicaType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                SpecError(format!(
                    "unknown replica type '{s}'; use chief, worker, ps or evaluator"
                ))
            })
    }
}

/// Which distributed runtime the command expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    /// `TF_CONFIG` with the cluster spec and the task's type and index.
    #[default]
    Tensorflow,
    /// `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`, `LOCAL_RANK`
    /// (torch.distributed's `env://` rendezvous).
    Pytorch,
}

impl FromStr for Flavor {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "tensorflow" | "tf" => Ok(Flavor::Tensorflow),
            "pytorch" | "torch" => Ok(Flavor::Pytorch),
            _ => Err(SpecError(format!(
                "unknown flavor '{s}'; use tensorflow or pytorch"
            ))),
        }
    }
}

/// What to do when a replica fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// The job fails with the first failed replica.
    #[default]
    Never,
    /// Restart the whole gang up to `max_restarts` times, waiting
    /// `backoff`, then twice that, … (at most a minute) before each.
    OnFailure {
        /// Gang restarts allowed.
        max_restarts: u32,
        /// The wait before the first restart.
        backoff: Duration,
    },
}

impl RestartPolicy {
    /// The wait before gang restart number `n` (1 for the first), or
    /// `None` when the policy allows no such restart.
    pub fn delay(&self, n: u32) -> Option<Duration> {
        match *self {
            RestartPolicy::Never => None,
            RestartPolicy::OnFailure {
                max_restarts,
                backoff,
            } if n >= 1 && n <= max_restarts => Some(
                backoff
                    .saturating_mul(1 << (n - 1).min(16))
                    .min(Duration::from_secs(60)),
            ),
            RestartPolicy::OnFailure { .. } => None,
        }
    }
}

impl fmt::Display for RestartPolicy {
    /// As [`RestartPolicy::from_str`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::Never => f.write_str("never"),
            RestartPolicy::OnFailure { max_restarts, .. } => {
                write!(f, "on-failure:{max_restarts}")
            }
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = SpecError;
    /// `never`, `on-failure` (3 restarts) or `on-failure:N`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let on_failure = |n| RestartPolicy::OnFailure {
            max_restarts: n,
            backoff: Duration::from_secs(1),
        };
        match s.split_once(':') {
            None if s == "never" => Ok(RestartPolicy::Never),
            None if s == "on-failure" => Ok(on_failure(3)),
            Some(("on-failure", n)) => n.trim().parse().map(on_failure).map_err(|_| {
                SpecError(format!(
                    "restart policy '{s}': '{n}' is not a number of restarts"
                ))
            }),
            _ => Err(SpecError(format!(
                "unknown restart policy '{s}'; use never, on-failure or on-failure:N"
            ))),
        }
    }
}

/// One replica group: how many, what each needs, and an optional command
/// of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaGroup {
    /// How many replicas.
    pub count: u32,
    /// CPUs of each.
    pub cpus: f64,
    /// Memory of each, in MB.
    pub mem: f64,
    /// Whole GPUs of each.
    pub gpus: u32,
    /// Runs instead of the job's command (e.g. a plain `ps` server).
    pub command: Option<Vec<String>>,
}

impl ReplicaGroup {
    /// `count` replicas of 1 CPU and 1024 MB, no GPU.
    pub fn new(count: u32) -> Self {
        ReplicaGroup {
            count,
            cpus: 1.0,
            mem: 1024.0,
            gpus: 0,
            command: None,
        }
    }
}

/// A distributed training job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The job's name: a prefix of its task ids and names.
    pub name: String,
    /// The replica groups present (count 0 groups are left out).
    pub groups: BTreeMap<ReplicaType, ReplicaGroup>,
    /// The command every replica runs unless its group has its own.
    pub command: Vec<String>,
    /// Environment added to every replica.
    pub env: BTreeMap<String, String>,
    /// Which cluster-spec environment replicas get.
    pub flavor: Flavor,
    /// What happens when a replica fails.
    pub restart: RestartPolicy,
    /// Each attempt must have its whole gang launched within this long of
    /// starting to wait for it (the job's start, or a restart's backoff
    /// ending); the job fails (DEADLINE_NOT_MET) otherwise.
    pub start_deadline: Option<Duration>,
    /// The job may run this long from its first launch, restarts
    /// included; then every replica is killed and it fails
    /// (DEADLINE_EXCEEDED).
    pub run_deadline: Option<Duration>,
}

/// The job file, as written (every field optional; flags fill in).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// `name = "mnist"`.
    pub name: Option<String>,
    /// `command = ["python3", "train.py"]` or one shell string.
    pub command: Option<Command>,
    /// `[env]` table.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `flavor = "pytorch"`.
    pub flavor: Option<String>,
    /// `restart = "on-failure:3"`.
    pub restart: Option<String>,
    /// `start_deadline = "10m"`.
    pub start_deadline: Option<String>,
    /// `run_deadline = "2h"`.
    pub run_deadline: Option<String>,
    /// `[chief]`.
    pub chief: Option<GroupFile>,
    /// `[worker]`.
    pub worker: Option<GroupFile>,
    /// `[ps]`.
    pub ps: Option<GroupFile>,
    /// `[evaluator]`.
    pub evaluator: Option<GroupFile>,
}

/// A command: a list of arguments, or one string run by the shell.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Command {
    /// `"python3 train.py --epochs 3"`.
    Shell(String),
    /// `["python3", "train.py"]`.
    Args(Vec<String>),
}

impl Command {
    fn into_args(self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec![s],
            Command::Args(a) => a,
        }
    }
}

/// One replica group in a job file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Replicas (default 1 for a group that is present).
    pub count: Option<u32>,
    /// A named size: cpus, mem and gpus in one word.
    pub size: Option<String>,
    /// CPUs of each replica.
    pub cpus: Option<f64>,
    /// Memory of each replica, in MB.
    pub mem: Option<f64>,
    /// GPUs of each replica.
    pub gpus: Option<u32>,
    /// The group's own command.
    pub command: Option<Command>,
}

impl JobFile {
    /// Reads a job file; `.yaml`/`.yml` files are YAML, others TOML.
    pub fn load(path: &Path) -> Result<JobFile, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError(format!("reading job file {}: {e}", path.display())))?;
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml {
            serde_yaml::from_str(&text)
                .map_err(|e| SpecError(format!("job file {}: {e}", path.display())))
        } else {
            JobFile::from_toml(&text)
                .map_err(|e| SpecError(format!("job file {}: {}", path.display(), e.0)))
        }
    }

    /// Parses a TOML job file.
    pub fn from_toml(text: &str) -> Result<JobFile, SpecError> {
        toml::from_str(text).map_err(|e| SpecError(e.to_string()))
    }
}

/// What the command line says; `None` leaves the file's value (or the
/// default) alone. Turned into a [`JobSpec`] by [`JobSpec::build`].
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--name`.
    pub name: Option<String>,
    /// `--chief`: one chief.
    pub chief: bool,
    /// `--workers N`.
    pub workers: Option<u32>,
    /// `--ps N`.
    pub ps: Option<u32>,
    /// `--evaluator`: one evaluator.
    pub evaluator: bool,
    /// `--size S`, already looked up.
    pub size: Option<Size>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--mem`.
    pub mem: Option<f64>,
    /// `--gpus` (chief and workers only: parameter servers and evaluators
    /// stay on CPUs unless a job file says otherwise).
    pub gpus: Option<u32>,
    /// `--env K=V`…
    pub env: Vec<(String, String)>,
    /// `--flavor`.
    pub flavor: Option<Flavor>,
    /// `--restart`.
    pub restart: Option<RestartPolicy>,
    /// `--start-deadline`.
    pub start_deadline: Option<Duration>,
    /// `--run-deadline`.
    pub run_deadline: Option<Duration>,
    /// The command after `--` (empty: the file's).
    pub command: Vec<String>,
}

impl JobSpec {
    /// Merges a job file (if any) and the command-line overrides, looks up
    /// named sizes with `size_of`, and validates the result.
    pub fn build(
        file: Option<JobFile>,
        flags: Overrides,
        size_of: impl Fn(&str) -> Result<Size, SpecError>,
    ) -> Result<JobSpec, SpecError> {
        let file = file.unwrap_or_default();
        let mut groups = BTreeMap::new();
        for (t, g) in [
            (ReplicaType::Chief, file.chief),
            (ReplicaType::Worker, file.worker),
            (ReplicaType::Ps, file.ps),
            (ReplicaType::Evaluator, file.evaluator),
        ] {
            let Some(g) = g else { continue };
            let mut group = ReplicaGroup::new(g.count.unwrap_or(1));
            if let Some(size) = &g.size {
                crate::sizes::apply(&size_of(size)?, &mut group, true);
            }
            group.cpus = g.cpus.unwrap_or(group.cpus);
            group.mem = g.mem.unwrap_or(group.mem);
            group.gpus = g.gpus.unwrap_or(group.gpus);
            group.command = g.command.map(Command::into_args);
            groups.insert(t, group);
        }
        fn want(groups: &mut BTreeMap<ReplicaType, ReplicaGroup>, t: ReplicaType, count: u32) {
            groups
                .entry(t)
                .or_insert_with(|| ReplicaGroup::new(count))
                .count = count;
        }
        if flags.chief {
            want(&mut groups, ReplicaType::Chief, 1);
        }
        if let Some(n) = flags.workers {
            want(&mut groups, ReplicaType::Worker, n);
        }
        if let Some(n) = flags.ps {
            want(&mut groups, ReplicaType::Ps, n);
        }
        if flags.evaluator {
            want(&mut groups, ReplicaType::Evaluator, 1);
        }
        if groups.is_empty() {
            want(&mut groups, ReplicaType::Worker, 1);
        }
        // Flags size the compute replicas; parameter servers and
        // evaluators take cpus and mem but never GPUs from them.
        for (t, group) in groups.iter_mut() {
            let compute = matches!(t, ReplicaType::Chief | ReplicaType::Worker);
            if let Some(size) = &flags.size {
                crate::sizes::apply(size, group, compute);
            }
            group.cpus = flags.cpus.unwrap_or(group.cpus);
            group.mem = flags.mem.unwrap_or(group.mem);
            if compute {
                group.gpus = flags.gpus.unwrap_or(group.gpus);
            }
        }
        groups.retain(|_, g| g.count > 0);

        let mut env = file.env;
        env.extend(flags.env);
        let flavor = match (flags.flavor, file.flavor) {
            (Some(f), _) => f,
            (None, Some(f)) => f.parse()?,
            (None, None) => Flavor::default(),
        };
        let restart = match (flags.restart, file.restart) {
            (Some(r), _) => r,
            (None, Some(r)) => r.parse()?,
            (None, None) => RestartPolicy::default(),
        };
        let start_deadline = match (flags.start_deadline, file.start_deadline) {
            (Some(d), _) => Some(d),
            (None, Some(t)) => Some(file_duration("start_deadline", &t)?),
            (None, None) => None,
        };
        let run_deadline = match (flags.run_deadline, file.run_deadline) {
            (Some(d), _) => Some(d),
            (None, Some(t)) => Some(file_duration("run_deadline", &t)?),
            (None, None) => None,
        };
        let command = if flags.command.is_empty() {
            file.command.map(Command::into_args).unwrap_or_default()
        } else {
            flags.command
        };
        let name = flags
            .name
            .or(file.name)
            .unwrap_or_else(|| default_name(&command));
        let spec = JobSpec {
            name,
            groups,
            command,
            env,
            flavor,
            restart,
            start_deadline,
            run_deadline,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what a cluster cannot: names, counts, resources, commands.
    pub fn validate(&self) -> Result<(), SpecError> {
        // A job run through `mezz job` is named after its attempt
        // (`train.2`), hence the dots.
        let name_ok = self.name.len() <= MAX_NAME
            && self.name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !name_ok {
            return Err(SpecError(format!(
                "job name '{}' must be 1-{MAX_NAME} letters, digits, '-', '_' or '.', starting with a letter or digit",
                self.name
            )));
        }
        if self.replicas() == 0 {
            return Err(SpecError(
                "the job has no replicas; give --workers N".into(),
            ));
        }
        if self.replicas() > 1000 {
            return Err(SpecError(format!(
                "{} replicas is more than the 1000 a job may have",
                self.replicas()
            )));
        }
        if self
            .groups
            .get(&ReplicaType::Chief)
            .is_some_and(|g| g.count > 1)
        {
            return Err(SpecError("a job has at most one chief".into()));
        }
        for (t, g) in &self.groups {
            if !(g.cpus.is_finite() && g.cpus > 0.0 && g.mem.is_finite() && g.mem > 0.0) {
                return Err(SpecError(format!(
                    "{t}: cpus and mem must be positive numbers (got cpus {} mem {})",
                    g.cpus, g.mem
                )));
            }
            if g.command.as_ref().is_some_and(Vec::is_empty) {
                return Err(SpecError(format!("{t}: its command is empty")));
            }
            if g.command.is_none() && self.command.is_empty() {
                return Err(SpecError(
                    "no command: give it after `--` (or as `command` in the job file)".into(),
                ));
            }
        }
        if self.flavor == Flavor::Pytorch {
            if let Some(t) = [ReplicaType::Ps, ReplicaType::Evaluator]
                .into_iter()
                .find(|t| self.groups.contains_key(t))
            {
                return Err(SpecError(format!(
                    "the pytorch flavor has a chief (rank 0) and workers only, not {t}"
                )));
            }
        }
        for (what, d) in [
            ("start deadline", self.start_deadline),
            ("run deadline", self.run_deadline),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(SpecError(format!(
                    "a {what} of zero can never be met; leave it out for none"
                )));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') {
                return Err(SpecError(format!(
                    "environment variable name '{k}' is not valid"
                )));
            }
        }
        Ok(())
    }

    /// How many replicas in all.
    pub fn replicas(&self) -> u32 {
        self.groups.values().map(|g| g.count).sum()
    }

    /// Every replica, in placement order: chief, workers, ps, evaluator.
    pub fn replica_ids(&self) -> Vec<ReplicaId> {
        self.groups
            .iter()
            .flat_map(|(t, g)| (0..g.count).map(|index| ReplicaId { kind: *t, index }))
            .collect()
    }

    /// The group of `t`, if the job has one.
    pub fn group(&self, t: ReplicaType) -> Option<&ReplicaGroup> {
        self.groups.get(&t)
    }

    /// The command `replica` runs.
    pub fn command_of(&self, replica: ReplicaId) -> &[String] {
        self.group(replica.kind)
            .and_then(|g| g.command.as_deref())
            .unwrap_or(&self.command)
    }
}

/// One replica: its type and its index within the type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId {
    /// The replica's type.
    pub kind: ReplicaType,
    /// Its index, from 0.
    pub index: u32,
}

impl fmt::Display for ReplicaId {
    /// `worker/1`: the prefix of its output lines and the tail of its task
    /// name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.index)
    }
}

impl ReplicaId {
    /// The task id of this replica's `attempt`: `JOB.worker.1.0`.
    pub fn task_id(&self, job: &str, attempt: u32) -> String {
        format!("{job}.{}.{}.{attempt}", self.kind, self.index)
    }

    /// The task name, the same for every attempt: `JOB/worker/1`.
    pub fn task_name(&self, job: &str) -> String {
        format!("{job}/{self}")
    }

    /// The replica and attempt of a task id made by [`ReplicaId::task_id`]
    /// for `job`.
    pub fn parse_task_id(job: &str, task_id: &str) -> Option<(ReplicaId, u32)> {
        let rest = task_id.strip_prefix(job)?.strip_prefix('.')?;
        let mut parts = rest.split('.');
        let kind = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        let attempt = parts.next()?.parse().ok()?;
        parts
            .next()
            .is_none()
            .then_some((ReplicaId { kind, index }, attempt))
    }
}

/// A duration field of a job file (`"90s"`, `"10m"`, `"1h 30m"`).
fn file_duration(field: &str, text: &str) -> Result<Duration, SpecError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        SpecError(format!(
            "{field} '{text}' is not a duration ({e}); use e.g. \"90s\", \"10m\" or \"2h\""
        ))
    })
}

/// A job name from the command: the script's or program's base name.
fn default_name(command: &[String]) -> String {
    let word = command
        .iter()
        .flat_map(|a| a.split_whitespace())
        .find(|w| w.ends_with(".py"))
        .or_else(|| command.first().and_then(|c| c.split_whitespace().next()))
        .unwrap_or("job");
    let base = word.rsplit('/').next().unwrap_or(word);
    let base = base.strip_suffix(".py").unwrap_or(base);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if clean.is_empty() {
        "job".into()
    } else {
        clean
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
