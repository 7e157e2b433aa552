//! What the cgroup v1 and v2 isolators share, through cgroups-rs: loading a
//! task's cgroup in the chosen controllers, its directories and
//! `cgroup.procs` files, the idempotent kill-then-remove of `cleanup`, and
//! finding and removing the orphans `recover` is for. Limits and OOM
//! accounting differ between the versions and live in their own modules.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
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

/// The directory of `cg` in each of its controllers, by controller name.
pub(super) fn dirs(cg: &Cgroup) -> Vec<(String, PathBuf)> {
    cg.subsystems()
        .iter()
        .map(|s| (s.controller_name(), s.to_controller().path().to_path_buf()))
        .collect()
}

/// The directory of `controller` among `dirs`.
pub(super) fn dir_of(dirs: &[(String, PathBuf)], controller: &str) -> Option<PathBuf> {
    dirs.iter()
        .find(|(c, _)| c == controller)
        .map(|(_, d)| d.clone())
}

/// The run cgroups of `owner` under the parent cgroup `root`, whose
/// directories are `parents`, that are not in `known`: every child
/// directory, in any hierarchy, named like one of `owner`'s runs (see
/// [`super::owned_by`]), as `root/<name>`, sorted and once each. Other
/// agents' cgroups and anything else under `root` are left alone.
pub(super) fn orphans(
    root: &str,
    parents: &[(String, PathBuf)],
    owner: &str,
    known: &HashSet<String>,
) -> Vec<String> {
    let mut out: Vec<String> = parents
        .iter()
        .flat_map(|(_, dir)| child_dirs(dir))
        .filter(|name| super::owned_by(name, owner))
        .map(|name| format!("{root}/{name}"))
        .filter(|path| !known.contains(path))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn child_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Kills the processes of every orphan of `owner` under `root` and removes
/// it (see [`orphans`]); returns those removed. One that cannot be removed
/// is logged and left; the others are still removed.
pub(super) fn remove_orphans(
    root: &str,
    parents: &[(String, PathBuf)],
    owner: &str,
    known: &HashSet<String>,
    controllers: &[&str],
) -> Result<Vec<String>, IsolationError> {
    let mut removed = Vec::new();
    let mut failed = None;
    for path in orphans(root, parents, owner, known) {
        match cleanup(&path, controllers) {
            Ok(()) => removed.push(path),
            Err(e) => {
                tracing::warn!("cannot remove orphaned cgroup: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) if removed.is_empty() => Err(e),
        _ => Ok(removed),
    }
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
        // cgroup v2 on Linux 5.14+ kills the whole cgroup at once
        // (`cgroup.kill`), which no fork can race; elsewhere (v1, older
        // kernels) that fails and each pid is signalled below.
        if cg.v2() && cg.kill().is_ok() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        for pid in left {
            // A member of the task's cgroup, not of the agent's; one that
            // is gone already is what we want.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as libc::pid_t),
                nix::sys::signal::Signal::SIGKILL,
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_this_agents_unknown_runs_in_any_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let parents: Vec<(String, PathBuf)> = ["cpu", "memory"]
            .iter()
            .map(|c| (c.to_string(), tmp.path().join(c).join("mezzanine")))
            .collect();
        let owner = super::super::owner_tag("5f0c2a9e-1b7d-4c3e-9a8f-0123456789ab");
        let mine_known = super::super::run_cgroup_name("web", &owner);
        let mine_lost = super::super::run_cgroup_name("db.replica", &owner);
        let half_made = super::super::run_cgroup_name("batch", &owner);
        let other_agent = super::super::run_cgroup_name(
            "web",
            &super::super::owner_tag("77777777-1b7d-4c3e-9a8f-0123456789ab"),
        );
        for name in [
            &mine_known,
            &mine_lost,
            &other_agent,
            &"t1.0a1b2c3d".to_string(),
        ] {
            for (_, dir) in &parents {
                std::fs::create_dir_all(dir.join(name)).unwrap();
            }
        }
        // A crash between two hierarchies' mkdir: only in one.
        std::fs::create_dir_all(parents[1].1.join(&half_made)).unwrap();
        // A file is no cgroup.
        std::fs::write(parents[0].1.join(format!("x.{owner}")), "").unwrap();
        let known: HashSet<String> = [format!("mezzanine/{mine_known}")].into();
        let mut want = vec![
            format!("mezzanine/{mine_lost}"),
            format!("mezzanine/{half_made}"),
        ];
        want.sort();
        assert_eq!(orphans("mezzanine", &parents, &owner, &known), want);
        // Nothing mounted there: nothing found, no error.
        let nowhere = vec![("cpu".to_string(), tmp.path().join("absent"))];
        assert!(orphans("mezzanine", &nowhere, &owner, &known).is_empty());
    }
}
