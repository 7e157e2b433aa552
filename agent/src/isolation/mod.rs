//! The isolation seam (Mesos "isolators"): a cgroup per task run with its
//! cpu, memory, pids and devices limits. `prepare` creates it before the
//! wrapper spawns (the wrapper's command joins it by writing to the
//! returned `cgroup.procs` files), `cleanup` kills what is left in it and
//! removes it (idempotent), `oom_killed` explains a death, and `recover`
//! removes, at agent start, the cgroups of runs the agent no longer knows.
//! The backend is chosen once at start-up by [`select`]. The launch runs
//! through the ordered [`steps`] (GPUs, user, cgroup, namespaces), of
//! which the cgroup step drives the isolator. Namespaces, the task's
//! mounts and its privileges are made by the wrapper, not here (see
//! `namespaces.rs`, `mounts.rs`, `capabilities.rs`).

mod cgroup;
pub mod cgroup_v1;
pub mod cgroup_v2;
pub mod device_filter;
pub mod limit_files;
pub mod none;
pub mod steps;

// Made by the wrapper (its own crate); re-exported where they always were.
pub use mezz_task_wrapper::{capabilities, mounts, namespaces};

use std::collections::HashSet;
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

/// `pids.max` of a task without cpus, and the least any task gets: a
/// shell, a Python interpreter with its helper threads, a small JVM.
pub const PIDS_FLOOR: u64 = 256;
/// `pids.max` per cpu: thread pools (JVM, BLAS, data loaders) and worker
/// processes are sized by the cores a task has, so its processes and
/// threads grow with its cpus, not with its memory.
pub const PIDS_PER_CPU: f64 = 1024.0;

/// `pids.max` of a task with `cpus`: `max(PIDS_FLOOR, ceil(1024 × cpus))`,
/// never above `host_cap` (the agent's parent cgroup's limit, which bounds
/// all tasks together anyway).
pub fn task_pids_max(cpus: f64, host_cap: u64) -> u64 {
    let by_cpus = if cpus.is_finite() && cpus > 0.0 {
        (cpus * PIDS_PER_CPU).ceil().min(u64::MAX as f64) as u64
    } else {
        0
    };
    by_cpus.max(PIDS_FLOOR).min(host_cap.max(1))
}

/// The limit on processes and threads of all tasks together (`pids.max`
/// of the agent's parent cgroup): half of the kernel's `pid_max`, so that
/// tasks, however many, leave the other half to the host's own services,
/// the agent and its task wrappers.
pub fn host_pids_cap(pid_max: u64) -> u64 {
    (pid_max / 2).max(PIDS_FLOOR)
}

/// The kernel's `pid_max` (`/proc/sys/kernel/pid_max`); its default when
/// unreadable.
pub fn kernel_pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768)
}

impl Limits {
    /// The limits of `task` from its scalar resources, its `pids_max` from
    /// [`task_pids_max`] under `host_cap`; `denied_gpu_minors` is filled in
    /// by the caller, which knows the agent's GPUs.
    pub fn of_task(task: &TaskInfo, host_cap: u64) -> Limits {
        use mezz_proto::resources::{CPUS, MEM};
        let r = crate::resources::of_task(task);
        let cpus = r.scalar(CPUS).max(0.0);
        Limits {
            cpus,
            mem_mb: r.scalar(MEM).max(0.0),
            pids_max: task_pids_max(cpus, host_cap),
            denied_gpu_minors: Vec::new(),
        }
    }
}

/// The tag that marks an agent's run cgroups as its own: `a` and the first
/// twelve letters and digits of its id. Several agents can share a host
/// and a cgroup root; `recover` removes only cgroups with its own tag.
pub fn owner_tag(agent_id: &str) -> String {
    let id: String = agent_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("a{id}")
}

/// The cgroup name of a new run of `task_id` for the agent tagged `owner`:
/// `<task id (64 characters at most)>.<8 random hex digits>.<owner>`.
pub fn run_cgroup_name(task_id: &str, owner: &str) -> String {
    format!(
        "{}.{}.{owner}",
        task_id.chars().take(64).collect::<String>(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Is `name` (a child of the cgroup root) a run cgroup of `owner`?
pub fn owned_by(name: &str, owner: &str) -> bool {
    name.strip_suffix(owner)
        .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
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
    /// The most memory the cgroup held at once, in bytes, where the kernel
    /// keeps it.
    fn peak_memory_bytes(&self, _cgroup: &str) -> Option<u64> {
        None
    }
    /// Pids (host view) in the cgroup.
    fn pids(&self, cgroup: &str) -> Vec<u32>;
    /// Kills every process of the cgroup and removes it. Idempotent: a
    /// cgroup that is already gone is fine.
    fn cleanup(&self, cgroup: &str) -> Result<(), IsolationError>;
    /// At agent start: kills and removes every run cgroup of the agent
    /// tagged `owner` (see [`owner_tag`]) that is not in `known` (the
    /// cgroups on record, as `prepare` returned them): left by a crash
    /// between creating a cgroup and checkpointing it, or by a run whose
    /// record is gone. Returns the cgroups removed.
    fn recover(
        &self,
        _owner: &str,
        _known: &HashSet<String>,
    ) -> Result<Vec<String>, IsolationError> {
        Ok(Vec::new())
    }
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
    /// `pids.max` of the parent cgroup, the bound of every task's own.
    pub pids_cap: u64,
}

/// Why isolation asked for with `--isolation cgroups` cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("--isolation cgroups: {0}; run the agent as root on a machine with cgroups mounted, or pass --isolation none")]
pub struct Unavailable(pub String);

/// Chooses the isolator at start-up. `root` is the name of the parent
/// cgroup under each hierarchy (e.g. `mezzanine`), whose `pids.max` is set
/// to `pids_cap` (`None`: [`host_pids_cap`] of the kernel's `pid_max`).
pub fn select(
    mode: IsolationMode,
    root: &str,
    pids_cap: Option<u64>,
) -> Result<Selected, Unavailable> {
    let pids_cap = pids_cap.unwrap_or_else(|| host_pids_cap(kernel_pid_max()));
    let none = || Selected {
        isolator: Arc::new(none::NoIsolation),
        namespaces: false,
        pids_cap,
    };
    if mode == IsolationMode::None {
        tracing::warn!(
            "isolation is off (--isolation none): tasks are not confined by cgroups or namespaces"
        );
        return Ok(none());
    }
    let probe = probe(root, pids_cap);
    match (probe, mode) {
        (Ok(sel), _) => {
            tracing::info!(
                "isolation: {} cgroups under '{root}' (at most {pids_cap} processes for all tasks), PID/mount/UTS namespaces per task",
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

fn probe(root: &str, pids_cap: u64) -> Result<Selected, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the agent is not running as root".into());
    }
    let isolator: Arc<dyn Isolator> = if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
        Arc::new(cgroup_v2::CgroupV2::new(root, pids_cap).map_err(|e| e.to_string())?)
    } else {
        Arc::new(cgroup_v1::CgroupV1::new(root, pids_cap).map_err(|e| e.to_string())?)
    };
    Ok(Selected {
        isolator,
        namespaces: namespaces::available(),
        pids_cap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_follow_cpus_between_the_floor_and_the_host_cap() {
        let cap = host_pids_cap(32768);
        assert_eq!(cap, 16384);
        assert_eq!(task_pids_max(0.0, cap), 256);
        assert_eq!(task_pids_max(0.1, cap), 256);
        assert_eq!(task_pids_max(0.5, cap), 512);
        assert_eq!(task_pids_max(1.0, cap), 1024);
        assert_eq!(task_pids_max(2.5, cap), 2560);
        assert_eq!(task_pids_max(64.0, cap), 16384);
        assert_eq!(task_pids_max(f64::NAN, cap), 256);
        assert_eq!(task_pids_max(f64::INFINITY, cap), 256);
        // A tiny pid_max still leaves tasks the floor.
        assert_eq!(host_pids_cap(300), 256);
    }

    #[test]
    fn run_cgroups_carry_their_agents_tag() {
        let owner = owner_tag("5F0C2A9E-1b7d-4c3e-9a8f-0123456789ab");
        assert_eq!(owner, "a5f0c2a9e1b7d");
        let name = run_cgroup_name("web.v2", &owner);
        assert!(name.starts_with("web.v2."), "{name}");
        assert!(owned_by(&name, &owner), "{name}");
        assert!(!owned_by(&name, &owner_tag("77777777")), "{name}");
        // Names of an earlier version, and the bare tag, are nobody's.
        assert!(!owned_by("web.0a1b2c3d", &owner));
        assert!(!owned_by(&owner, &owner));
        assert!(!owned_by(&format!(".{owner}"), &owner));
        assert!(!owned_by(&format!("x{owner}"), &owner));
        let long = "t".repeat(128);
        assert!(run_cgroup_name(&long, &owner).len() < 100);
    }
}
