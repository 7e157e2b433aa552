//! The cgroup v1 isolator (these machines): one cgroup per task run in the
//! cpu, cpuacct, memory, pids and devices hierarchies. cpu.shares and the
//! CFS quota follow `cpus`, memory.limit_in_bytes follows `mem`, and the
//! devices controller denies the agent's GPU nodes the task was not given
//! (`c 195:N rwm`); everything else keeps the default allow-all. The
//! values are written as files (`limit_files.rs`).

use std::collections::HashSet;
use std::path::PathBuf;

use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::memory::MemController;

use super::cgroup::{self, err};
use super::limit_files;
use super::{IsolationError, Isolator, Limits, Prepared};

pub use super::limit_files::{CFS_PERIOD_US, SHARES_PER_CPU};

const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "devices"];

/// cgroup v1 isolation under `<hierarchy>/<root>/<run>`.
pub struct CgroupV1 {
    root: String,
    /// `root`'s directory in each hierarchy, by controller.
    parents: Vec<(String, PathBuf)>,
}

impl CgroupV1 {
    /// Checks that every needed hierarchy is mounted and `root` can be
    /// created in each, and caps the processes of all tasks together at
    /// `pids_cap` (`pids.max` of `root`).
    pub fn new(root: &str, pids_cap: u64) -> Result<CgroupV1, IsolationError> {
        let cg = cgroup::create(root, CONTROLLERS)?;
        cgroup::set_pids_max(&cg, root, pids_cap)?;
        let have: Vec<String> = cg
            .subsystems()
            .iter()
            .map(|s| s.controller_name())
            .collect();
        let missing: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !have.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            return Err(err(
                root,
                "use it",
                format!("cgroup v1 controller(s) {} not mounted", missing.join(", ")),
            ));
        }
        Ok(CgroupV1 {
            root: root.to_string(),
            parents: cgroup::dirs(&cg),
        })
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    /// Writes `l` into the run's cgroup `cg` (at `path`), through its
    /// directories in each hierarchy.
    fn apply(cg: &cgroups_rs::fs::Cgroup, path: &str, l: &Limits) -> Result<(), IsolationError> {
        let dirs = cgroup::dirs(cg);
        limit_files::write(path, &|c| cgroup::dir_of(&dirs, c), &limit_files::v1(l))
    }
}

impl Isolator for CgroupV1 {
    fn kind(&self) -> &'static str {
        "cgroup-v1"
    }

    fn prepare(&self, name: &str, limits: &Limits) -> Result<Prepared, IsolationError> {
        let path = self.path(name);
        // A leftover of a crashed earlier run of the same name goes first.
        cgroup::cleanup(&path, CONTROLLERS)?;
        let cg = cgroup::create(&path, CONTROLLERS)?;
        if let Err(e) = Self::apply(&cg, &path, limits) {
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
        cg.controller_of::<MemController>().is_some_and(|m| {
            let stat = m.memory_stat();
            stat.oom_control.oom_kill > 0 || stat.oom_control.under_oom
        })
    }

    fn cpu_usage_ns(&self, cgroup: &str) -> Option<u64> {
        let cg = cgroup::load(cgroup, CONTROLLERS);
        cg.controller_of::<CpuAcctController>()
            .filter(|c| cgroups_rs::fs::Controller::exists(*c))
            .map(|c| c.cpuacct().usage)
    }

    fn peak_memory_bytes(&self, cgroup: &str) -> Option<u64> {
        let cg = cgroup::load(cgroup, CONTROLLERS);
        cg.controller_of::<MemController>()
            .filter(|m| cgroups_rs::fs::Controller::exists(*m))
            .map(|m| m.memory_stat().max_usage_in_bytes)
            .filter(|b| *b > 0)
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
