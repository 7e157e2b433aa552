//! The cgroup v2 isolator (unified hierarchy): cpu.max from `cpus`,
//! memory.max from `mem`, pids.max (written as files, `limit_files.rs`),
//! OOM kills from memory.events,
//! and the GPUs the task was not given denied by an eBPF device program
//! attached to the cgroup (v2 has no devices controller; see
//! `device_filter.rs`). Removing the cgroup releases the program.

use std::collections::HashSet;
use std::path::PathBuf;

use super::cgroup::{self, err};
use super::{device_filter, limit_files};
use super::{IsolationError, Isolator, Limits, Prepared};

const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// cgroup v2 isolation under `/sys/fs/cgroup/<root>/<run>`.
pub struct CgroupV2 {
    root: String,
    /// `root`'s directory, once per controller enabled in it.
    parents: Vec<(String, PathBuf)>,
}

impl CgroupV2 {
    /// Checks that `root` can be created, and caps the processes of all
    /// tasks together at `pids_cap` (`pids.max` of `root`).
    pub fn new(root: &str, pids_cap: u64) -> Result<CgroupV2, IsolationError> {
        let cg = cgroup::create(root, CONTROLLERS)?;
        cgroup::set_pids_max(&cg, root, pids_cap)?;
        Ok(CgroupV2 {
            root: root.to_string(),
            parents: cgroup::dirs(&cg),
        })
    }
}

impl Isolator for CgroupV2 {
    fn kind(&self) -> &'static str {
        "cgroup-v2"
    }

    fn prepare(&self, name: &str, l: &Limits) -> Result<Prepared, IsolationError> {
        let path = format!("{}/{name}", self.root);
        cgroup::cleanup(&path, CONTROLLERS)?;
        let cg = cgroup::create(&path, CONTROLLERS)?;
        let apply = || -> Result<(), IsolationError> {
            let dirs = cgroup::dirs(&cg);
            limit_files::write(&path, &|c| cgroup::dir_of(&dirs, c), &limit_files::v2(l))?;
            if !l.denied_gpu_minors.is_empty() {
                let dir = cg
                    .subsystems()
                    .first()
                    .map(|s| cgroups_rs::fs::Controller::path(s.to_controller()).to_path_buf())
                    .ok_or_else(|| err(&path, "confine GPU devices", "no cgroup v2 directory"))?;
                device_filter::attach(&dir, &l.denied_gpu_minors)
                    .map_err(|e| err(&path, "confine GPU devices", e))?;
            }
            Ok(())
        };
        if let Err(e) = apply() {
            let _ = cgroup::cleanup(&path, CONTROLLERS);
            return Err(e);
        }
        Ok(Prepared {
            procs_files: cgroup::procs_files(&cg),
            cgroup: path,
        })
    }

    fn oom_killed(&self, cgroup: &str) -> bool {
        let cg = cgroup::load(cgroup, CONTROLLERS);
        cg.subsystems().first().is_some_and(|s| {
            let events = cgroups_rs::fs::Controller::path(s.to_controller()).join("memory.events");
            std::fs::read_to_string(events).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    }

    fn peak_memory_bytes(&self, cgroup: &str) -> Option<u64> {
        // memory.peak exists from Linux 5.19 on.
        let cg = cgroup::load(cgroup, CONTROLLERS);
        let s = cg.subsystems().first()?;
        std::fs::read_to_string(
            cgroups_rs::fs::Controller::path(s.to_controller()).join("memory.peak"),
        )
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
    }

    fn cpu_usage_ns(&self, cgroup: &str) -> Option<u64> {
        let cg = cgroup::load(cgroup, CONTROLLERS);
        let s = cg.subsystems().first()?;
        let stat = std::fs::read_to_string(
            cgroups_rs::fs::Controller::path(s.to_controller()).join("cpu.stat"),
        )
        .ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(|us| us * 1000)
    }

    fn pids(&self, cgroup: &str) -> Vec<u32> {
        cgroup::pids(&cgroup::load(cgroup, CONTROLLERS))
    }

    fn cleanup(&self, cgroup: &str) -> Result<(), IsolationError> {
        cgroup::cleanup(cgroup, CONTROLLERS)
    }

    fn recover(&self, owner: &str, known: &HashSet<String>) -> Result<Vec<String>, IsolationError> {
        cgroup::remove_orphans(&self.root, &self.parents, owner, known, CONTROLLERS)
    }
}
