//! The cgroup v1 isolator (these machines): one cgroup per task run in the
//! cpu, cpuacct, memory, pids and devices hierarchies. cpu.shares and the
//! CFS quota follow `cpus`, memory.limit_in_bytes follows `mem`, and the
//! devices controller denies the agent's GPU nodes the task was not given
//! (`c 195:N rwm`); everything else keeps the default allow-all.

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::fs::memory::MemController;

use super::cgroup::{self, err};
use super::{IsolationError, Isolator, Limits, Prepared, NVIDIA_MAJOR};

const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "devices"];
/// The CFS period; the quota is `cpus` times it.
pub const CFS_PERIOD_US: u64 = 100_000;
/// cpu.shares per CPU (the kernel's default weight of one task).
pub const SHARES_PER_CPU: f64 = 1024.0;

/// cgroup v1 isolation under `<hierarchy>/<root>/<run>`.
pub struct CgroupV1 {
    root: String,
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
        })
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    fn apply(cg: &cgroups_rs::fs::Cgroup, path: &str, l: &Limits) -> Result<(), IsolationError> {
        if l.cpus > 0.0 {
            if let Some(cpu) = cg.controller_of::<CpuController>() {
                let shares = (l.cpus * SHARES_PER_CPU).round().max(2.0) as u64;
                cpu.set_shares(shares)
                    .map_err(|e| err(path, "set cpu.shares", e))?;
                let quota = (l.cpus * CFS_PERIOD_US as f64).round().max(1000.0) as i64;
                cpu.set_cfs_quota_and_period(Some(quota), Some(CFS_PERIOD_US))
                    .map_err(|e| err(path, "set the CFS quota", e))?;
            }
        }
        if l.mem_mb > 0.0 {
            if let Some(mem) = cg.controller_of::<MemController>() {
                let bytes = (l.mem_mb * 1024.0 * 1024.0) as i64;
                mem.set_limit(bytes)
                    .map_err(|e| err(path, "set memory.limit_in_bytes", e))?;
                // No swap beyond the limit, where swap accounting exists.
                let _ = mem.set_memswap_limit(bytes);
            }
        }
        cgroup::set_pids_max(cg, path, l.pids_max)?;
        if let Some(dev) = cg.controller_of::<DevicesController>() {
            for minor in &l.denied_gpu_minors {
                dev.deny_device(
                    DeviceType::Char,
                    NVIDIA_MAJOR as i64,
                    *minor as i64,
                    &DevicePermissions::all(),
                )
                .map_err(|e| {
                    err(
                        path,
                        &format!("deny GPU device c {NVIDIA_MAJOR}:{minor}"),
                        e,
                    )
                })?;
            }
        }
        Ok(())
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

    fn pids(&self, cgroup: &str) -> Vec<u32> {
        cgroup::pids(&cgroup::load(cgroup, CONTROLLERS))
    }

    fn cleanup(&self, cgroup: &str) -> Result<(), IsolationError> {
        cgroup::cleanup(cgroup, CONTROLLERS)
    }
}
