//! The isolation seam (Mesos "isolators"): a cgroup per task run with its
//! cpu, memory, pids and devices limits. `prepare` creates it before the
//! wrapper spawns (the wrapper's command joins it by writing to the
//! returned `cgroup.procs` files), `cleanup` kills what is left in it and
//! removes it (idempotent), `oom_killed` explains a death. The backend is
//! chosen once at start-up by [`select`]. Namespaces are entered by the
//! wrapper, not here (see `namespaces.rs`); this module never spawns.

mod cgroup;
pub mod cgroup_v1;
pub mod cgroup_v2;
pub mod device_filter;
pub mod namespaces;
pub mod none;

use std::path::PathBuf;
use std::sync::Arc;

use mezz_proto::v1::TaskInfo;

/// The major number of NVIDIA GPU device nodes (`/dev/nvidiaN`).
pub const NVIDIA_MAJOR: u32 = 195;

/// What one task run is allowed.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// CPU shares and CFS quota; 0 = no CPU limit.
    pub cpus: f64,
    /// Memory limit in MB; 0 = no memory limit.
    pub mem_mb: f64,
    /// Most processes (and threads) at once.
    pub pids_max: u64,
    /// Minors (major [`NVIDIA_MAJOR`]) of this agent's GPUs the task was
    /// not given: the devices controller denies them.
    pub denied_gpu_minors: Vec<u32>,
}

/// Default `pids_max` when the agent is not told otherwise.
pub const DEFAULT_PIDS_MAX: u64 = 4096;

impl Limits {
    /// The limits of `task` from its scalar resources; `denied_gpu_minors`
    /// is filled in by the caller, which knows the agent's GPUs.
    pub fn of_task(task: &TaskInfo) -> Limits {
        let scalar = |name: &str| {
            task.resources
                .iter()
                .filter(|r| r.name == name)
                .filter_map(|r| match r.value {
                    Some(mezz_proto::v1::resource::Value::Scalar(v)) if v.is_finite() => Some(v),
                    _ => None,
                })
                .sum::<f64>()
        };
        Limits {
            cpus: scalar("cpus").max(0.0),
            mem_mb: scalar("mem").max(0.0),
            pids_max: DEFAULT_PIDS_MAX,
            denied_gpu_minors: Vec::new(),
        }
    }
}

/// A prepared cgroup.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// Its path relative to each hierarchy's root, e.g. `mezzanine/<run>`;
    /// what the checkpoint records and `cleanup` takes.
    pub cgroup: String,
    /// The `cgroup.procs` files the command writes `0` to, to join.
    pub procs_files: Vec<PathBuf>,
}

/// Errors of an isolator; each names the cgroup and the operation.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// A cgroup operation failed.
    #[error("cgroup '{cgroup}': cannot {action}: {message}")]
    Cgroup {
        /// The cgroup path (relative to the hierarchies).
        cgroup: String,
        /// What was being done.
        action: String,
        /// What the kernel or cgroups-rs said.
        message: String,
    },
    /// Processes were still in the cgroup after every attempt to kill them.
    #[error("cgroup '{cgroup}': {left} process(es) survived SIGKILL; the cgroup is left in place")]
    Survivors {
        /// The cgroup.
        cgroup: String,
        /// How many were left.
        left: usize,
    },
}

/// One isolation backend (cgroup v1, cgroup v2, none).
pub trait Isolator: Send + Sync {
    /// `cgroup-v1`, `cgroup-v2` or `none`, for logs.
    fn kind(&self) -> &'static str;
    /// Creates the cgroup `name` (one per task run) with `limits`.
    fn prepare(&self, name: &str, limits: &Limits) -> Result<Prepared, IsolationError>;
    /// True when the kernel's OOM killer acted in the cgroup.
    fn oom_killed(&self, cgroup: &str) -> bool;
    /// CPU time used by the cgroup so far, in nanoseconds.
    fn cpu_usage_ns(&self, cgroup: &str) -> Option<u64>;
    /// Pids (host view) in the cgroup.
    fn pids(&self, cgroup: &str) -> Vec<u32>;
    /// Kills every process of the cgroup and removes it. Idempotent: a
    /// cgroup that is already gone is fine.
    fn cleanup(&self, cgroup: &str) -> Result<(), IsolationError>;
}

/// Which isolator to use (`mezz agent --isolation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IsolationMode {
    /// cgroups (v1 or v2, whichever is mounted) and namespaces when the
    /// agent runs as root and they are usable; none, with a warning, else.
    #[default]
    Auto,
    /// cgroups and namespaces; fail to start when they are unusable.
    Cgroups,
    /// No isolation (tasks share the agent's view of the machine).
    None,
}

/// The isolator and whether tasks get their own namespaces.
#[derive(Clone)]
pub struct Selected {
    /// The cgroup backend.
    pub isolator: Arc<dyn Isolator>,
    /// Tasks run in their own PID, mount and UTS namespaces.
    pub namespaces: bool,
}

/// Why isolation asked for with `--isolation cgroups` cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("--isolation cgroups: {0}; run the agent as root on a machine with cgroups mounted, or pass --isolation none")]
pub struct Unavailable(pub String);

/// Chooses the isolator at start-up. `root` is the name of the parent
/// cgroup under each hierarchy (e.g. `mezzanine`).
pub fn select(mode: IsolationMode, root: &str) -> Result<Selected, Unavailable> {
    let none = || Selected {
        isolator: Arc::new(none::NoIsolation),
        namespaces: false,
    };
    if mode == IsolationMode::None {
        tracing::warn!(
            "isolation is off (--isolation none): tasks are not confined by cgroups or namespaces"
        );
        return Ok(none());
    }
    let probe = probe(root);
    match (probe, mode) {
        (Ok(sel), _) => {
            tracing::info!(
                "isolation: {} cgroups under '{root}', PID/mount/UTS namespaces per task",
                sel.isolator.kind()
            );
            Ok(sel)
        }
        (Err(why), IsolationMode::Cgroups) => Err(Unavailable(why)),
        (Err(why), _) => {
            tracing::warn!("isolation unavailable ({why}); tasks run WITHOUT cgroups or namespaces (pass --isolation cgroups to make this an error)");
            Ok(none())
        }
    }
}

fn probe(root: &str) -> Result<Selected, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the agent is not running as root".into());
    }
    let isolator: Arc<dyn Isolator> = if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
        Arc::new(cgroup_v2::CgroupV2::new(root).map_err(|e| e.to_string())?)
    } else {
        Arc::new(cgroup_v1::CgroupV1::new(root).map_err(|e| e.to_string())?)
    };
    Ok(Selected {
        isolator,
        namespaces: namespaces::available(),
    })
}
