//! The cgroup v2 isolator (unified hierarchy): cpu.weight and cpu.max from
//! `cpus`, memory.max from `mem`, pids.max, OOM kills from memory.events,
//! and the GPUs the task was not given denied by an eBPF device program
//! attached to the cgroup (v2 has no devices controller; see
//! `device_filter.rs`). Removing the cgroup releases the program.

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;

use super::cgroup::{self, err};
use super::device_filter;
use super::{IsolationError, Isolator, Limits, Prepared};

const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];
/// The CFS period; the quota is `cpus` times it.
const CFS_PERIOD_US: u64 = 100_000;

/// cgroup v2 isolation under `/sys/fs/cgroup/<root>/<run>`.
pub struct CgroupV2 {
    root: String,
}

impl CgroupV2 {
    /// Checks that `root` can be created, and caps the processes of all
    /// tasks together at `pids_cap` (`pids.max` of `root`).
    pub fn new(root: &str, pids_cap: u64) -> Result<CgroupV2, IsolationError> {
        let cg = cgroup::create(root, CONTROLLERS)?;
        cgroup::set_pids_max(&cg, root, pids_cap)?;
        Ok(CgroupV2 {
            root: root.to_string(),
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
            if l.cpus > 0.0 {
                if let Some(cpu) = cg.controller_of::<CpuController>() {
                    let quota = (l.cpus * CFS_PERIOD_US as f64).round().max(1000.0) as i64;
                    cpu.set_cfs_quota_and_period(Some(quota), Some(CFS_PERIOD_US))
                        .map_err(|e| err(&path, "set cpu.max", e))?;
                }
            }
            if l.mem_mb > 0.0 {
                if let Some(mem) = cg.controller_of::<MemController>() {
                    mem.set_limit((l.mem_mb * 1024.0 * 1024.0) as i64)
                        .map_err(|e| err(&path, "set memory.max", e))?;
                }
            }
            cgroup::set_pids_max(&cg, &path, l.pids_max)?;
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
}
