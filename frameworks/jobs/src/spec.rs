//! The job file: what `mezz job submit` reads. YAML (or JSON, which is
//! YAML too), every field checked: an unknown field, a size that is not
//! on the cluster's menu, a bad duration or a kind not available yet is
//! refused with a message that names the field and its line. Pure data:
//! nothing here talks to a cluster.
//!
//! The smallest job:
//!
//! ```
//! use mezz_jobs::spec::{JobSpec, Kind};
//! use mezz_sdk::sizes::Sizes;
//! let spec = JobSpec::parse(
//!     "kind: command\nname: nightly-etl\ncpus: 1\nmem: 512\nretries: 3\ncommand: python etl.py --date today\n",
//!     &Sizes::builtin(),
//! )
//! .unwrap();
//! assert_eq!(spec.kind, Kind::Command);
//! assert_eq!(spec.retries, 3);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use mezz_sdk::sizes::Sizes;

/// A job file that cannot be used; the text names the field, its line
/// where known, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// The most jobs one `after` list may name.
pub const MAX_AFTER: usize = 32;
/// The most jobs one file may hold.
pub const MAX_JOBS_PER_FILE: usize = 100;
/// The longest name of a scheduled job: its runs add `.` and ten digits.
pub const MAX_SCHEDULED_NAME: usize = 52;

/// The most retries a job may ask for.
pub const MAX_RETRIES: u32 = 100;
/// The first retry waits this long unless the file says (`backoff`).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// No retry waits longer than this unless the file says (`max_backoff`).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// CPUs of a job that names neither a size nor `cpus` (as `mezz run`).
pub const DEFAULT_CPUS: f64 = 1.0;
/// Memory (MB) of a job that names neither a size nor `mem`.
pub const DEFAULT_MEM: f64 = 256.0;

/// What a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A shell command (`command:`).
    Command,
    /// A Python program (`entrypoint:` or `command:`), with an optional
    /// requirements file installed into a cached per-job virtualenv.
    Python,
    /// Hyper-parameter tuning: trials of a job over a parameter space
    /// (see [`crate::sweep`]).
    Sweep,
    /// A Java program: a `jar`, or a `main_class` on a `classpath`.
    Jvm,
    /// Distributed TensorFlow training: a gang of replicas with
    /// `TF_CONFIG` (see [`crate::gang`]).
    Tensorflow,
    /// Distributed PyTorch training: a gang of replicas with
    /// torch.distributed's environment (see [`crate::gang`]).
    Pytorch,
    /// An Apache Spark application: a standalone master, a worker per
    /// executor and the driver, as one gang (see [`crate::gang`]).
    Spark,
    /// A Jupyter notebook server, run by the Jupyter framework; an attempt
    /// lasts as long as the notebook (see [`crate::service`]).
    Jupyter,
    /// A served model: replicas behind a proxy, run by the serving
    /// framework; an attempt lasts as long as the deployment (see
    /// [`crate::service`]).
    Serve,
}

impl Kind {
    /// Whether an attempt is run by another framework of this tree (a
    /// gang, or a service), rather than being one task of the jobs
    /// framework.
    pub fn is_delegated(self) -> bool {
        matches!(
            self,
            Kind::Tensorflow | Kind::Pytorch | Kind::Spark | Kind::Jupyter | Kind::Serve
        )
    }

    /// Whether an attempt is a long-running service (a notebook, a
    /// deployment) that a new jobs framework takes back rather than ends.
    pub fn is_service(self) -> bool {
        matches!(self, Kind::Jupyter | Kind::Serve)
    }
}

/// What a scheduled job's fire does while an earlier run has not ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// The fire is skipped (the default).
    Forbid,
    /// The new run starts beside the old one.
    Allow,
    /// The old run is killed and the new one starts.
    Replace,
}

impl Concurrency {
    /// The name the job file and the masters use.
    pub fn name(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }
}

/// What a schedule does with the fire times it missed while no jobs
/// framework ran (a fire is missed when it is found more than
/// [`crate::schedule::ON_TIME`] late).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// One run for all the missed fires, at the latest of them (the
    /// default).
    RunOnce,
    /// A run for every missed fire (the latest 100 at most).
    RunAll,
    /// No run for a missed fire.
    Skip,
}

impl Missed {
    /// The name the job file and the masters use.
    pub fn name(self) -> &'static str {
        match self {
            Missed::RunOnce => "run_once",
            Missed::RunAll => "run_all",
            Missed::Skip => "skip",
        }
    }
}

/// A job's schedule: it fires a run of itself at each cron time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// What a fire does while a run has not ended.
    pub concurrency: Concurrency,
    /// What is done with missed fires.
    pub missed: Missed,
}

/// The file as written (before validation).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JobFile {
    kind: Option<String>,
    name: Option<String>,
    size: Option<String>,
    cpus: Option<f64>,
    mem: Option<f64>,
    gpus: Option<u32>,
    command: Option<String>,
    entrypoint: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    workdir: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    requirements: Option<String>,
    python: Option<String>,
    jar: Option<String>,
    main_class: Option<String>,
    #[serde(default)]
    classpath: Vec<String>,
    #[serde(default)]
    jvm_args: Vec<String>,
    java: Option<String>,
    #[serde(default)]
    retries: u32,
    backoff: Option<String>,
    max_backoff: Option<String>,
    deadline: Option<String>,
    priority: Option<String>,
    role: Option<String>,
    after: Option<Vec<String>>,
    after_any: Option<Vec<String>>,
    schedule: Option<String>,
    timezone: Option<String>,
    concurrency: Option<String>,
    missed: Option<String>,
    tensorflow: Option<crate::gang::TfSection>,
    spark: Option<mezz_spark::AppRequest>,
    jupyter: Option<crate::service::JupyterSection>,
    serve: Option<crate::service::ServeSection>,
}

/// A validated job. It is stored with the job in the masters as JSON
/// (durations in milliseconds), and read back by the jobs framework.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// What it runs.
    pub kind: Kind,
    /// Its name, unique among the jobs a user submits; task ids start with
    /// it.
    pub name: String,
    /// The size it was given, if any (already resolved into the fields
    /// below).
    pub size: Option<String>,
    /// CPUs of each attempt's task.
    pub cpus: f64,
    /// Memory (MB) of each attempt's task.
    pub mem: f64,
    /// Whole GPUs of each attempt's task.
    pub gpus: u32,
    /// A shell command (kind `command`, or `python` without an entrypoint).
    pub command: Option<String>,
    /// A Python script (kind `python`), run with `args`.
    pub entrypoint: Option<String>,
    /// Arguments of the entrypoint.
    pub args: Vec<String>,
    /// Where the task starts (absolute); default: its sandbox.
    pub workdir: Option<String>,
    /// Environment variables of the task.
    pub env: BTreeMap<String, String>,
    /// A Python requirements file (absolute, or relative to `workdir`).
    pub requirements: Option<String>,
    /// The Python interpreter that makes the virtualenv and runs the
    /// entrypoint (default `python3`).
    pub python: String,
    /// Kind `jvm`: the jar to run (`java -jar`), or none with `main_class`.
    #[serde(default)]
    pub jar: Option<String>,
    /// Kind `jvm`: the class whose `main` runs, on `classpath`.
    #[serde(default)]
    pub main_class: Option<String>,
    /// Kind `jvm`: the class path of `main_class`.
    #[serde(default)]
    pub classpath: Vec<String>,
    /// Kind `jvm`: options of the JVM (`-Xmx4g`, `-Dkey=value`).
    #[serde(default)]
    pub jvm_args: Vec<String>,
    /// Kind `jvm`: the `java` launcher (default `java` on `PATH`).
    #[serde(default)]
    pub java: Option<String>,
    /// Attempts after the first one that failed.
    pub retries: u32,
    /// The wait before the first retry; each further retry waits twice
    /// the previous, up to `max_backoff`.
    #[serde(with = "ms")]
    pub backoff: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "ms")]
    pub max_backoff: Duration,
    /// The job fails with DEADLINE_EXCEEDED when it has not succeeded this
    /// long after it was submitted (its attempt is killed).
    #[serde(with = "ms_opt", default)]
    pub deadline: Option<Duration>,
    /// A priority class name: each attempt's task runs in it (and carries
    /// it as its `priority` label).
    pub priority: Option<String>,
    /// The role the job's tasks run under (default `*`).
    pub role: String,
    /// Jobs that must end before this one starts.
    #[serde(default)]
    pub after: Vec<String>,
    /// With `after`: true when each need only end (`after_any`), false
    /// when each must succeed (`after`).
    #[serde(default)]
    pub after_any: bool,
    /// When the job runs on a schedule.
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// A sweep's trial, space and method (kind `sweep` only).
    #[serde(default)]
    pub sweep: Option<crate::sweep::SweepSpec>,
    /// The replica groups of a training job (kinds `tensorflow` and
    /// `pytorch` only).
    #[serde(default)]
    pub tensorflow: Option<crate::gang::TfGang>,
    /// The application of a Spark job (kind `spark` only).
    #[serde(default)]
    pub spark: Option<mezz_spark::AppRequest>,
    /// The notebook server of a Jupyter job (kind `jupyter` only).
    #[serde(default)]
    pub jupyter: Option<crate::service::JupyterSection>,
    /// The deployment of a served job (kind `serve` only).
    #[serde(default)]
    pub serve: Option<crate::service::ServeSection>,
}

/// Durations as whole milliseconds in the stored JSON.
mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// An optional duration as whole milliseconds, or null.
mod ms_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::ms::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// The line (1-based) where `key:` starts at the top level of `text`.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
                || l.trim_start().strip_prefix(&format!("\"{key}\"")).is_some()
        })
        .map(|i| i + 1)
}

/// An error about `field`, with its line when the text has it.
fn field_error(text: &str, field: &str, what: String) -> SpecError {
    match line_of(text, field) {
        Some(line) => SpecError(format!("`{field}` (line {line}): {what}")),
        None => SpecError(format!("`{field}`: {what}")),
    }
}

/// Whether `name` may name a job: 1 to 63 lowercase letters, digits, `-`,
/// `_` or `.`, starting with a letter or digit (it starts task ids).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() < 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' cannot name a job: use 1 to 63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// Refuses the first field of `fields` that is present (`(name, present)`)
/// with `why`, naming the field and its line.
fn refuse_present(text: &str, fields: &[(&str, bool)], why: String) -> Result<(), SpecError> {
    match fields.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(field_error(text, field, why)),
        None => Ok(()),
    }
}

fn duration(text: &str, field: &str, value: &str) -> Result<Duration, SpecError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        field_error(
            text,
            field,
            format!("'{value}' is not a duration ({e}); write e.g. 30s, 10m, 2h"),
        )
    })?;
    if d.is_zero() {
        return Err(field_error(text, field, "must be longer than 0".into()));
    }
    Ok(d)
}

fn positive(text: &str, field: &str, v: f64) -> Result<f64, SpecError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(field_error(
            text,
            field,
            format!("{v} is not a positive number"),
        ))
    }
}

impl JobSpec {
    /// Parses and validates a job file (YAML or JSON); `sizes` is the
    /// cluster's menu, for `size:`.
    pub fn parse(text: &str, sizes: &Sizes) -> Result<JobSpec, SpecError> {
        #[derive(Deserialize)]
        struct KindOnly {
            kind: Option<String>,
        }
        if let Ok(KindOnly { kind: Some(k) }) = serde_yaml::from_str::<KindOnly>(text) {
            if k == "sweep" {
                return crate::sweep::parse(text, sizes);
            }
        }
        let file: JobFile = serde_yaml::from_str(text).map_err(|e| {
            // serde_yaml says "unknown field `x`, expected one of … at line
            // N column M": the field and the line, as wanted.
            SpecError(format!("the job file does not parse: {e}"))
        })?;
        Self::validate(file, text, sizes)
    }

    fn validate(f: JobFile, text: &str, sizes: &Sizes) -> Result<JobSpec, SpecError> {
        let kind_text = f.kind.as_deref().ok_or_else(|| {
            SpecError(
                "`kind` is missing: say what the job runs (kind: command or kind: python)".into(),
            )
        })?;
        let kind = match kind_text {
            "command" => Kind::Command,
            "python" => Kind::Python,
            "jvm" => Kind::Jvm,
            "tensorflow" => Kind::Tensorflow,
            "pytorch" => Kind::Pytorch,
            "spark" => Kind::Spark,
            "jupyter" => Kind::Jupyter,
            "serve" => Kind::Serve,
            other => {
                return Err(field_error(
                    text,
                    "kind",
                    format!(
                        "unknown kind '{other}'; use command, python, jvm, tensorflow, pytorch, spark, jupyter, serve or sweep"
                    ),
                ))
            }
        };
        let name = f
            .name
            .ok_or_else(|| SpecError("`name` is missing: give the job a name".into()))?;
        check_name(&name).map_err(|e| field_error(text, "name", e))?;
        let (after, after_any) = match (f.after, f.after_any) {
            (Some(_), Some(_)) => {
                return Err(field_error(
                    text,
                    "after_any",
                    "give either `after` (each must succeed) or `after_any` (each need only end), not both".into(),
                ))
            }
            (Some(a), None) => (a, false),
            (None, Some(a)) => (a, true),
            (None, None) => (Vec::new(), false),
        };
        let after_field = if after_any { "after_any" } else { "after" };
        for dep in &after {
            check_name(dep).map_err(|e| field_error(text, after_field, e))?;
            if *dep == name {
                return Err(field_error(
                    text,
                    after_field,
                    format!("job '{name}' cannot wait for itself"),
                ));
            }
        }
        if after.len() > MAX_AFTER {
            return Err(field_error(
                text,
                after_field,
                format!("{} jobs is more than {MAX_AFTER}", after.len()),
            ));
        }
        let schedule = match f.schedule {
            None => {
                refuse_present(
                    text,
                    &[
                        ("timezone", f.timezone.is_some()),
                        ("concurrency", f.concurrency.is_some()),
                        ("missed", f.missed.is_some()),
                    ],
                    "goes with `schedule`; this job has none".into(),
                )?;
                None
            }
            Some(cron) => Some(Self::schedule(
                text,
                &name,
                cron,
                f.timezone,
                f.concurrency,
                f.missed,
            )?),
        };
        if schedule.is_some() && !after.is_empty() {
            return Err(field_error(
                text,
                after_field,
                "a scheduled job cannot wait for other jobs; schedule the jobs that wait instead"
                    .into(),
            ));
        }

        let (mut cpus, mut mem, mut gpus) = (DEFAULT_CPUS, DEFAULT_MEM, 0);
        if let Some(size) = &f.size {
            if f.cpus.is_some() || f.mem.is_some() || f.gpus.is_some() {
                return Err(field_error(
                    text,
                    "size",
                    "give either a size or cpus/mem/gpus, not both".into(),
                ));
            }
            let s = sizes
                .get(size)
                .map_err(|e| field_error(text, "size", e.0))?;
            (cpus, mem, gpus) = (s.cpus, s.mem, s.gpus);
        }
        if let Some(c) = f.cpus {
            cpus = positive(text, "cpus", c)?;
        }
        if let Some(m) = f.mem {
            mem = positive(text, "mem", m)?;
        }
        if let Some(g) = f.gpus {
            gpus = g;
        }

        let nonempty = |s: Option<String>| s.filter(|c| !c.trim().is_empty());
        let command = nonempty(f.command);
        let entrypoint = nonempty(f.entrypoint);
        match kind {
            // Parsed by `crate::sweep::parse`; never here.
            Kind::Sweep => {}
            Kind::Jvm => {
                if f.jar.is_some() == f.main_class.is_some() {
                    return Err(SpecError(
                        "a jvm job needs exactly one of `jar` (run with java -jar) or `main_class` (with `classpath`)"
                            .into(),
                    ));
                }
                if f.jar.is_some() && !f.classpath.is_empty() {
                    return Err(field_error(
                        text,
                        "classpath",
                        "goes with `main_class`; a jar names its own class path".into(),
                    ));
                }
                refuse_present(
                    text,
                    &[
                        ("command", command.is_some()),
                        ("entrypoint", entrypoint.is_some()),
                        ("requirements", f.requirements.is_some()),
                        ("python", f.python.is_some()),
                    ],
                    "does not go with kind jvm; it runs `jar` or `main_class` with `args`".into(),
                )?;
            }
            Kind::Command => {
                if command.is_none() {
                    return Err(SpecError(
                        "`command` is missing: a job of kind command runs a shell command".into(),
                    ));
                }
                refuse_present(
                    text,
                    &[
                        ("entrypoint", entrypoint.is_some()),
                        ("requirements", f.requirements.is_some()),
                        ("python", f.python.is_some()),
                        ("args", !f.args.is_empty()),
                    ],
                    "belongs to kind python; a command job runs `command` only".into(),
                )?;
            }
            Kind::Tensorflow | Kind::Pytorch => {
                refuse_present(
                    text,
                    &[
                        ("entrypoint", entrypoint.is_some()),
                        ("requirements", f.requirements.is_some()),
                        ("python", f.python.is_some()),
                        ("args", !f.args.is_empty()),
                    ],
                    "does not go with a training job; its replicas run `command` (or their group's)"
                        .into(),
                )?;
            }
            Kind::Spark => {
                refuse_present(
                    text,
                    &[
                        ("command", command.is_some()),
                        ("entrypoint", entrypoint.is_some()),
                        ("args", !f.args.is_empty()),
                        ("workdir", f.workdir.is_some()),
                        ("requirements", f.requirements.is_some()),
                        ("python", f.python.is_some()),
                        ("env", !f.env.is_empty()),
                        ("cpus", f.cpus.is_some()),
                        ("mem", f.mem.is_some()),
                        ("gpus", f.gpus.is_some()),
                    ],
                    "does not go with kind spark; the `spark` section says what runs \
                     (app, args, python, conf) and how big (executors, executor_cores, \
                     executor_memory, driver_memory, gpus_per_executor, or the job's `size`)"
                        .into(),
                )?;
            }
            Kind::Jupyter => {
                refuse_present(
                    text,
                    &[
                        ("command", command.is_some()),
                        ("entrypoint", entrypoint.is_some()),
                        ("args", !f.args.is_empty()),
                        ("workdir", f.workdir.is_some()),
                        ("requirements", f.requirements.is_some()),
                        ("python", f.python.is_some()),
                        ("env", !f.env.is_empty()),
                    ],
                    "does not go with kind jupyter; the `jupyter` section says how the \
                     server runs (python, notebook_dir, idle_timeout)"
                        .into(),
                )?;
            }
            Kind::Serve => {
                if command.is_none() {
                    return Err(SpecError(
                        "`command` is missing: each replica of a served job runs it, listening on $PORT".into(),
                    ));
                }
                refuse_present(
                    text,
                    &[
                        ("entrypoint", entrypoint.is_some()),
                        ("args", !f.args.is_empty()),
                        ("requirements", f.requirements.is_some()),
                        ("python", f.python.is_some()),
                    ],
                    "does not go with kind serve; its replicas run `command`".into(),
                )?;
            }
            Kind::Python => {
                if command.is_some() == entrypoint.is_some() {
                    return Err(SpecError(
                        "a python job needs exactly one of `entrypoint` (a script) or `command`"
                            .into(),
                    ));
                }
                if command.is_some() && !f.args.is_empty() {
                    return Err(field_error(
                        text,
                        "args",
                        "goes with `entrypoint`; put the arguments in `command`".into(),
                    ));
                }
            }
        }
        if kind != Kind::Jvm {
            refuse_present(
                text,
                &[
                    ("jar", f.jar.is_some()),
                    ("main_class", f.main_class.is_some()),
                    ("classpath", !f.classpath.is_empty()),
                    ("jvm_args", !f.jvm_args.is_empty()),
                    ("java", f.java.is_some()),
                ],
                "belongs to kind jvm".into(),
            )?;
        }
        if let Some(w) = &f.workdir {
            if !w.starts_with('/') {
                return Err(field_error(
                    text,
                    "workdir",
                    format!("'{w}' is not an absolute path"),
                ));
            }
        }
        for k in f.env.keys() {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(field_error(
                    text,
                    "env",
                    format!("'{k}' is not an environment variable name"),
                ));
            }
        }
        if let Some(r) = &f.requirements {
            if r.trim().is_empty() {
                return Err(field_error(text, "requirements", "is empty".into()));
            }
            if !r.starts_with('/') && f.workdir.is_none() {
                return Err(field_error(
                    text,
                    "requirements",
                    format!(
                        "'{r}' is relative: give an absolute path, or a workdir it is relative to"
                    ),
                ));
            }
        }
        if f.retries > MAX_RETRIES {
            return Err(field_error(
                text,
                "retries",
                format!("{} is more than {MAX_RETRIES}", f.retries),
            ));
        }
        let backoff = match &f.backoff {
            Some(b) => duration(text, "backoff", b)?,
            None => DEFAULT_BACKOFF,
        };
        let max_backoff = match &f.max_backoff {
            Some(b) => duration(text, "max_backoff", b)?,
            None => DEFAULT_MAX_BACKOFF.max(backoff),
        };
        if max_backoff < backoff {
            return Err(field_error(
                text,
                "max_backoff",
                "is shorter than `backoff`".into(),
            ));
        }
        let deadline = f
            .deadline
            .as_deref()
            .map(|d| duration(text, "deadline", d))
            .transpose()?;
        if let Some(p) = &f.priority {
            let ok = !p.is_empty()
                && p.len() < 64
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !ok {
                return Err(field_error(
                    text,
                    "priority",
                    format!(
                        "'{p}' is not a priority class name (lowercase letters, digits, '-', '_')"
                    ),
                ));
            }
        }
        let role = f.role.unwrap_or_else(|| "*".into());
        if role.is_empty() || role.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(field_error(
                text,
                "role",
                format!("'{role}' is not a role name"),
            ));
        }
        if !matches!(kind, Kind::Tensorflow | Kind::Pytorch) && f.tensorflow.is_some() {
            return Err(field_error(
                text,
                "tensorflow",
                "belongs to kinds tensorflow and pytorch".into(),
            ));
        }
        for (field, present, owner) in [
            ("spark", f.spark.is_some(), Kind::Spark),
            ("jupyter", f.jupyter.is_some(), Kind::Jupyter),
            ("serve", f.serve.is_some(), Kind::Serve),
        ] {
            if present && kind != owner {
                return Err(field_error(text, field, format!("belongs to kind {field}")));
            }
        }
        if kind.is_service() {
            // A notebook or replica that names no size or memory gets
            // what `mezz jupyter start` and `mezz serve deploy` give.
            if f.size.is_none() && f.mem.is_none() {
                mem = if kind == Kind::Jupyter {
                    crate::service::JUPYTER_MEM
                } else {
                    crate::service::SERVE_MEM
                };
            }
        }
        let explicit = (f.cpus, f.mem, f.gpus);
        let mut spec = JobSpec {
            kind,
            name,
            size: f.size,
            cpus,
            mem,
            gpus,
            command,
            entrypoint,
            args: f.args,
            workdir: f.workdir,
            env: f.env,
            requirements: f.requirements,
            python: f.python.unwrap_or_else(|| "python3".into()),
            jar: f.jar,
            main_class: f.main_class,
            classpath: f.classpath,
            jvm_args: f.jvm_args,
            java: f.java,
            retries: f.retries,
            backoff,
            max_backoff,
            deadline,
            priority: f.priority,
            role,
            after,
            after_any,
            schedule,
            sweep: None,
            tensorflow: None,
            spark: None,
            jupyter: None,
            serve: None,
        };
        if kind == Kind::Jupyter {
            let section = f.jupyter.unwrap_or_default();
            section
                .check()
                .map_err(|e| field_error(text, "jupyter", e))?;
            spec.jupyter = Some(section);
        }
        if kind == Kind::Serve {
            let section = f.serve.unwrap_or_default();
            section.check().map_err(|e| field_error(text, "serve", e))?;
            spec.serve = Some(section);
        }
        if kind == Kind::Spark {
            let app = f.spark.ok_or_else(|| {
                SpecError("a spark job needs a `spark` section with at least `app`".into())
            })?;
            let (app, sizing) = crate::gang::spark_request(app, spec.size.as_deref(), sizes)
                .map_err(|e| field_error(text, "spark", e))?;
            // What one agent must hold: the largest task.
            (spec.cpus, spec.mem, spec.gpus) = sizing.largest_task();
            spec.spark = Some(app);
        } else if matches!(kind, Kind::Tensorflow | Kind::Pytorch) {
            let gang = crate::gang::tf_gang(f.tensorflow, &spec, explicit, sizes)
                .map_err(|e| field_error(text, "tensorflow", e.0))?;
            // What one agent must hold: the largest replica.
            (spec.cpus, spec.mem, spec.gpus) = gang.largest();
            spec.tensorflow = Some(gang);
        }
        Ok(spec)
    }

    /// Validates a schedule: the cron expression parses in its time zone,
    /// the name leaves room for the runs' names.
    fn schedule(
        text: &str,
        name: &str,
        cron: String,
        timezone: Option<String>,
        concurrency: Option<String>,
        missed: Option<String>,
    ) -> Result<ScheduleSpec, SpecError> {
        if name.len() > MAX_SCHEDULED_NAME {
            return Err(field_error(
                text,
                "name",
                format!(
                    "a scheduled job's name may be at most {MAX_SCHEDULED_NAME} characters (its runs are named NAME.<time>)"
                ),
            ));
        }
        let timezone = timezone.unwrap_or_else(|| "UTC".into());
        crate::schedule::Schedule::parse(&cron, &timezone).map_err(|e| {
            let field = if e.starts_with("time zone") {
                "timezone"
            } else {
                "schedule"
            };
            field_error(text, field, e)
        })?;
        let concurrency = match concurrency.as_deref() {
            None | Some("forbid") => Concurrency::Forbid,
            Some("allow") => Concurrency::Allow,
            Some("replace") => Concurrency::Replace,
            Some(other) => {
                return Err(field_error(
                    text,
                    "concurrency",
                    format!("'{other}' is not one of forbid, allow, replace"),
                ))
            }
        };
        let missed = match missed.as_deref() {
            None | Some("run_once") => Missed::RunOnce,
            Some("run_all") => Missed::RunAll,
            Some("skip") => Missed::Skip,
            Some(other) => {
                return Err(field_error(
                    text,
                    "missed",
                    format!("'{other}' is not one of run_once, run_all, skip"),
                ))
            }
        };
        Ok(ScheduleSpec {
            cron,
            timezone,
            concurrency,
            missed,
        })
    }

    /// Parses a file of one or more jobs (YAML documents separated by
    /// `---`), checks that their names differ and that their `after`
    /// lists make no cycle among them. Jobs named in `after` but not in
    /// the file must already be on the cluster (the masters check).
    pub fn parse_all(text: &str, sizes: &Sizes) -> Result<Vec<JobSpec>, SpecError> {
        let docs = split_documents(text);
        if docs.len() > MAX_JOBS_PER_FILE {
            return Err(SpecError(format!(
                "the file holds {} jobs; at most {MAX_JOBS_PER_FILE} are submitted together",
                docs.len()
            )));
        }
        let mut specs: Vec<JobSpec> = Vec::with_capacity(docs.len());
        for (i, (first_line, doc)) in docs.iter().enumerate() {
            let spec = Self::parse(doc, sizes).map_err(|e| {
                if docs.len() == 1 {
                    e
                } else {
                    SpecError(format!("job {} (from line {first_line}): {}", i + 1, e.0))
                }
            })?;
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(SpecError(format!(
                    "the file names job '{}' twice (line {first_line})",
                    spec.name
                )));
            }
            specs.push(spec);
        }
        if let Some(cycle) = find_cycle(&specs) {
            return Err(SpecError(format!(
                "the jobs' `after` lists make a cycle: {}",
                cycle.join(" -> ")
            )));
        }
        Ok(specs)
    }

    /// The kind's name, as the file writes it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Command => "command",
            Kind::Python => "python",
            Kind::Sweep => "sweep",
            Kind::Jvm => "jvm",
            Kind::Tensorflow => "tensorflow",
            Kind::Pytorch => "pytorch",
            Kind::Spark => "spark",
            Kind::Jupyter => "jupyter",
            Kind::Serve => "serve",
        }
    }

    /// The GPUs one attempt holds in all: a training gang's, a Spark
    /// application's executors', a deployment's replicas', else `gpus`.
    pub fn attempt_gpus(&self) -> u32 {
        match (&self.tensorflow, &self.spark, &self.serve) {
            (Some(g), _, _) => g.gpus(),
            (_, Some(a), _) => a.executors.unwrap_or(0) * a.gpus_per_executor.unwrap_or(0),
            (_, _, Some(s)) => s.replicas.unwrap_or(1) * self.gpus,
            _ => self.gpus,
        }
    }

    /// The labels of the job's tasks: `job` (its name), and `priority`
    /// when it has one.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([("job".to_string(), self.name.clone())]);
        if let Some(p) = &self.priority {
            l.insert("priority".into(), p.clone());
        }
        l
    }

    /// What an attempt's task runs, through `/bin/sh -c`. A python job
    /// with requirements installs them once into a virtualenv kept per
    /// job and requirements file (by its SHA-256) under
    /// `${MEZZ_JOBS_VENVS:-${TMPDIR:-/tmp}/mezz-job-venvs}` on the agent,
    /// made beside its final place and renamed into it, so two attempts
    /// never see half a virtualenv. The base interpreter's packages stay
    /// visible (`--system-site-packages`): what is installed there already
    /// needs no download.
    pub fn task_command(&self) -> String {
        let mut s = String::from("set -e\n");
        if let Some(w) = &self.workdir {
            s += &format!("cd {}\n", quote(w));
        }
        let run = match self.kind {
            // A gang's tasks are made by its framework (see
            // `crate::gang`); it has no task of its own.
            Kind::Command
            | Kind::Tensorflow
            | Kind::Pytorch
            | Kind::Spark
            | Kind::Jupyter
            | Kind::Serve => return s + self.command.as_deref().unwrap_or("true"),
            // A sweep runs no task of its own: its trials do.
            Kind::Sweep => return s + "true",
            Kind::Jvm => return s + &self.java_command(),
            Kind::Python => match (&self.entrypoint, &self.command) {
                (Some(e), _) => {
                    let mut r = format!("exec \"$PY\" {}", quote(e));
                    for a in &self.args {
                        r += " ";
                        r += &quote(a);
                    }
                    r
                }
                (None, Some(c)) => c.clone(),
                (None, None) => "true".into(),
            },
        };
        match &self.requirements {
            None => {
                s += &format!("PY={}\n", quote(&self.python));
            }
            Some(req) => {
                s += &format!(
                    "REQ={req}\n\
                     ROOT=\"${{MEZZ_JOBS_VENVS:-${{TMPDIR:-/tmp}}/mezz-job-venvs}}\"\n\
                     SUM=$(sha256sum \"$REQ\" | cut -c1-16)\n\
                     VENV=\"$ROOT/{name}-$SUM\"\n\
                     if [ ! -x \"$VENV/bin/python\" ]; then\n\
                     \x20 mkdir -p \"$ROOT\"\n\
                     \x20 TMPV=\"$VENV.new.$$\"\n\
                     \x20 rm -rf \"$TMPV\"\n\
                     \x20 {py} -m venv --system-site-packages \"$TMPV\"\n\
                     \x20 \"$TMPV/bin/python\" -m pip install --disable-pip-version-check -q -r \"$REQ\"\n\
                     \x20 mv -T \"$TMPV\" \"$VENV\" 2>/dev/null || rm -rf \"$TMPV\"\n\
                     fi\n\
                     PY=\"$VENV/bin/python\"\n\
                     export VIRTUAL_ENV=\"$VENV\" PATH=\"$VENV/bin:$PATH\"\n",
                    req = quote(req),
                    name = self.name,
                    py = quote(&self.python),
                );
            }
        }
        s + &run
    }
}

/// The YAML documents of `text` with the line each starts on; a file
/// without `---` lines is one document.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() || docs.is_empty() {
        docs.push((start, current));
    }
    docs
}

/// A cycle among `specs`' `after` lists, as the names along it (the first
/// repeated at the end), if there is one.
fn find_cycle(specs: &[JobSpec]) -> Option<Vec<String>> {
    let by_name: BTreeMap<&str, &JobSpec> = specs.iter().map(|s| (s.name.as_str(), s)).collect();
    // 0: not seen, 1: on the current path, 2: done.
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        n: &'a str,
        by_name: &BTreeMap<&'a str, &'a JobSpec>,
        mark: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        let spec = by_name.get(n)?;
        mark.insert(n, 1);
        path.push(n);
        for dep in &spec.after {
            if let Some(c) = visit(dep, by_name, mark, path) {
                return Some(c);
            }
        }
        path.pop();
        mark.insert(n, 2);
        None
    }
    for s in specs {
        if let Some(c) = visit(&s.name, &by_name, &mut mark, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

impl JobSpec {
    /// Kind `jvm`: the `java` command line. The JVM sizes its heap from
    /// the task's memory limit (its cgroup) at 75% unless `jvm_args` say
    /// otherwise (`-Xmx…` or `-XX:MaxRAMPercentage=…`).
    fn java_command(&self) -> String {
        let mut c = format!("exec {}", quote(self.java.as_deref().unwrap_or("java")));
        let sized = self
            .jvm_args
            .iter()
            .any(|a| a.starts_with("-Xmx") || a.starts_with("-XX:MaxRAMPercentage"));
        if !sized {
            c += " -XX:MaxRAMPercentage=75";
        }
        for a in &self.jvm_args {
            c += " ";
            c += &quote(a);
        }
        match (&self.jar, &self.main_class) {
            (Some(jar), _) => {
                c += " -jar ";
                c += &quote(jar);
            }
            (None, Some(main)) => {
                if !self.classpath.is_empty() {
                    c += " -cp ";
                    c += &quote(&self.classpath.join(":"));
                }
                c += " ";
                c += &quote(main);
            }
            (None, None) => {}
        }
        for a in &self.args {
            c += " ";
            c += &quote(a);
        }
        c
    }
}

/// `s` quoted for the shell.
pub(crate) fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests;
