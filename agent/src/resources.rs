//! What this machine offers: cpus, mem, disk and ports, detected from the
//! OS and overridden name by name by `--resources`. Reads /proc and statvfs
//! only; it does not track what tasks use (the master does).

use mezz_proto::resources::{CPUS, DISK, MEM, PORTS};
use std::path::Path;

use mezz_proto::v1::TaskInfo;
use mezz_proto::Resources;

/// A task's resources, read through the one resource math. The master
/// validated them before the launch; anything it let through that does not
/// parse is logged and read as nothing (no limits, no ports, no GPUs).
pub fn of_task(task: &TaskInfo) -> Resources {
    Resources::from_proto(&task.resources).unwrap_or_else(|e| {
        tracing::warn!(task = %task.task_id, "the task's resources do not parse ({e}); reading none");
        Resources::new()
    })
}

/// Port range advertised when `--resources` names no `ports`.
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// The resources to advertise: detected values, with every resource named
/// in `overrides` taking the place of the detected one.
pub fn advertised(work_dir: &Path, overrides: Option<&Resources>) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_else(|e| {
        tracing::warn!(
            "cannot read /proc/meminfo ({e}); advertising no memory unless --resources names mem"
        );
        String::new()
    });
    let disk = disk_free_mb(work_dir).unwrap_or_else(|e| {
        tracing::warn!(
            "cannot stat the filesystem of {} ({e}); advertising no disk unless --resources names disk",
            work_dir.display()
        );
        0
    });
    let detected = detected(cpus, &meminfo, disk);
    match overrides {
        Some(o) => merge(&detected, o),
        None => detected,
    }
}

/// Detected resources from raw facts (pure, for tests).
pub fn detected(cpus: usize, meminfo: &str, disk_free_mb: u64) -> Resources {
    let mut r = Resources::new()
        .with_scalar(CPUS, cpus as f64)
        .with_ranges(PORTS, &[DEFAULT_PORTS]);
    if let Some(total) = mem_total_mb(meminfo) {
        r.set_scalar(MEM, usable_mem_mb(total) as f64);
    }
    r.set_scalar(DISK, disk_free_mb as f64);
    r
}

/// `detected` with each resource named in `overrides` replaced by it.
pub fn merge(detected: &Resources, overrides: &Resources) -> Resources {
    let given = overrides.to_proto();
    let mut all: Vec<_> = detected
        .to_proto()
        .into_iter()
        .filter(|d| !given.iter().any(|o| o.name == d.name))
        .collect();
    all.extend(given);
    // Both inputs are valid and names no longer repeat, so this cannot fail;
    // fall back to the overrides alone rather than panic.
    Resources::from_proto(&all).unwrap_or_else(|_| overrides.clone())
}

/// `MemTotal` of /proc/meminfo, in MB.
fn mem_total_mb(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024)
    })
}

/// Memory left to tasks: all but 1 GB for the OS on a big machine, half on
/// a small one.
fn usable_mem_mb(total_mb: u64) -> u64 {
    if total_mb > 2048 {
        total_mb - 1024
    } else {
        total_mb / 2
    }
}

fn disk_free_mb(path: &Path) -> nix::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)?;
    let bytes = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    Ok(bytes / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        8388608 kB\nMemFree:         1000 kB\n";

    #[test]
    fn detection_from_facts() {
        let r = detected(4, MEMINFO, 5000);
        assert_eq!(r.scalar("cpus"), 4.0);
        assert_eq!(r.scalar("mem"), 8192.0 - 1024.0);
        assert_eq!(r.scalar("disk"), 5000.0);
        assert_eq!(r.ranges("ports"), &[DEFAULT_PORTS]);
        let small = detected(1, "MemTotal: 2097152 kB\n", 0);
        assert_eq!(small.scalar("mem"), 1024.0);
        assert_eq!(detected(1, "garbage", 0).scalar("mem"), 0.0);
    }

    #[test]
    fn overrides_replace_by_name() {
        let d = detected(4, MEMINFO, 5000);
        let o = Resources::parse("cpus:2;ports:[40000-40010];gpus:{a}").unwrap();
        let r = merge(&d, &o);
        assert_eq!(r.scalar("cpus"), 2.0);
        assert_eq!(r.scalar("mem"), 7168.0);
        assert_eq!(r.scalar("disk"), 5000.0);
        assert_eq!(r.ranges("ports"), &[(40000, 40010)]);
        assert_eq!(r.set_items("gpus"), vec!["a"]);
    }

    #[test]
    fn real_machine_has_cpus() {
        let dir = tempfile::tempdir().unwrap();
        let r = advertised(dir.path(), None);
        assert!(r.scalar("cpus") >= 1.0);
        assert!(r.scalar("disk") > 0.0);
    }
}
