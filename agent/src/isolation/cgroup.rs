//! What the cgroup v1 and v2 isolators share, through cgroups-rs: loading a
//! task's cgroup in the chosen controllers, its `cgroup.procs` files, and
//! the idempotent kill-then-remove of `cleanup`. Limits and OOM accounting
//! differ between the versions and live in their own modules.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cgroups_rs::fs::{hierarchies, Cgroup, Subsystem};

use super::IsolationError;

/// How long `cleanup` keeps killing and retrying the removal.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(5);

pub(super) fn err(cgroup: &str, action: &str, e: impl std::fmt::Display) -> IsolationError {
    IsolationError::Cgroup {
        cgroup: cgroup.to_string(),
        action: action.to_string(),
        message: e.to_string(),
    }
}

/// The cgroup at `path` in `controllers` of the mounted hierarchy (not
/// created).
pub(super) fn load(path: &str, controllers: &[&str]) -> Cgroup {
    Cgroup::load_with_specified_controllers(
        hierarchies::auto(),
        path,
        controllers.iter().map(|c| c.to_string()).collect(),
    )
}

/// Creates the cgroup at `path`.
pub(super) fn create(path: &str, controllers: &[&str]) -> Result<Cgroup, IsolationError> {
    let cg = load(path, controllers);
    cg.create().map_err(|e| err(path, "create it", e))?;
    Ok(cg)
}

/// Sets `pids.max` of `cg` (the cgroup at `path`), where the pids
/// controller is there.
pub(super) fn set_pids_max(cg: &Cgroup, path: &str, max: u64) -> Result<(), IsolationError> {
    if let Some(pids) = cg.controller_of::<cgroups_rs::fs::pid::PidController>() {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        pids.set_pid_max(cgroups_rs::fs::MaxValue::Value(max))
            .map_err(|e| err(path, "set pids.max", e))?;
    }
    Ok(())
}

/// The distinct `cgroup.procs` files of `cg` (v2 has one; v1 one per
/// hierarchy).
pub(super) fn procs_files(cg: &Cgroup) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = cg
        .subsystems()
        .iter()
        .map(|s| s.to_controller().path().join("cgroup.procs"))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Pids of every process in any of `cg`'s hierarchies.
pub(super) fn pids(cg: &Cgroup) -> Vec<u32> {
    let mut all: Vec<u32> = cg
        .subsystems()
        .iter()
        .flat_map(|s| s.to_controller().procs())
        .map(|p| p.pid as u32)
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Kills every process of the cgroup at `path` until none is left, then
/// removes it. Gone already is fine.
pub(super) fn cleanup(path: &str, controllers: &[&str]) -> Result<(), IsolationError> {
    let cg = load(path, controllers);
    if !cg.subsystems().iter().any(|s| s.to_controller().exists()) {
        return Ok(());
    }
    let deadline = Instant::now() + CLEANUP_DEADLINE;
    loop {
        let left = pids(&cg);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(IsolationError::Survivors {
                cgroup: path.to_string(),
                left: left.len(),
            });
        }
        for pid in left {
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // a member of the task's cgroup, not of the agent's.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The last exits can keep the cgroup busy for a moment.
    loop {
        let remaining: Vec<&Subsystem> = cg
            .subsystems()
            .iter()
            .filter(|s| s.to_controller().exists())
            .collect();
        if remaining.is_empty() {
            return Ok(());
        }
        let mut last_err = None;
        for s in remaining {
            if let Err(e) = std::fs::remove_dir(s.to_controller().path()) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    last_err = Some(e);
                }
            }
        }
        match last_err {
            None => return Ok(()),
            Some(e) if Instant::now() >= deadline => return Err(err(path, "remove it", e)),
            Some(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
