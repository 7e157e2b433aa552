//! A task run's limits as plain writes to cgroup files, the way youki's
//! cgroup managers set them: [`v1`] and [`v2`] say which file of which
//! controller gets which value for some [`Limits`], and [`write()`] writes
//! them under directories it is given as paths. The isolators pass the
//! run's cgroup directories in the mounted hierarchies; the tests pass a
//! temporary directory, so every limit is checked without root. Creating,
//! joining and removing cgroups is not done here (see `cgroup.rs`).

use std::io::Write as _;
use std::path::PathBuf;

use super::cgroup::err;
use super::{IsolationError, Limits, NVIDIA_MAJOR};

/// The CFS period; the quota is `cpus` times it.
pub const CFS_PERIOD_US: u64 = 100_000;
/// cpu.shares per CPU (the kernel's default weight of one task).
pub const SHARES_PER_CPU: f64 = 1024.0;

/// One value written to one control file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitWrite {
    /// The controller whose directory holds the file (`cpu`, `memory`, …).
    pub controller: &'static str,
    /// The control file, e.g. `memory.limit_in_bytes`.
    pub file: &'static str,
    /// What is written to it.
    pub value: String,
    /// A write that may fail without failing the run (memory+swap where
    /// the kernel accounts no swap).
    pub optional: bool,
}

fn required(controller: &'static str, file: &'static str, value: String) -> LimitWrite {
    LimitWrite {
        controller,
        file,
        value,
        optional: false,
    }
}

fn quota_us(cpus: f64) -> i64 {
    (cpus * CFS_PERIOD_US as f64).round().max(1000.0) as i64
}

fn mem_bytes(mem_mb: f64) -> i64 {
    (mem_mb * 1024.0 * 1024.0) as i64
}

fn pids_max(l: &Limits) -> String {
    i64::try_from(l.pids_max).unwrap_or(i64::MAX).to_string()
}

/// The writes of cgroup v1: cpu.shares and the CFS quota from `cpus`,
/// memory (and memory+swap, where accounted) from `mem`, pids.max, and a
/// `devices.deny` line per GPU the task was not given. A zero `cpus` or
/// `mem` leaves that controller at its default.
pub fn v1(l: &Limits) -> Vec<LimitWrite> {
    let mut out = Vec::new();
    if l.cpus > 0.0 {
        let shares = (l.cpus * SHARES_PER_CPU).round().max(2.0) as u64;
        out.push(required("cpu", "cpu.shares", shares.to_string()));
        out.push(required(
            "cpu",
            "cpu.cfs_quota_us",
            quota_us(l.cpus).to_string(),
        ));
        out.push(required(
            "cpu",
            "cpu.cfs_period_us",
            CFS_PERIOD_US.to_string(),
        ));
    }
    if l.mem_mb > 0.0 {
        let bytes = mem_bytes(l.mem_mb).to_string();
        out.push(required("memory", "memory.limit_in_bytes", bytes.clone()));
        // No swap beyond the limit, where swap accounting exists.
        out.push(LimitWrite {
            controller: "memory",
            file: "memory.memsw.limit_in_bytes",
            value: bytes,
            optional: true,
        });
    }
    out.push(required("pids", "pids.max", pids_max(l)));
    for minor in &l.denied_gpu_minors {
        out.push(required(
            "devices",
            "devices.deny",
            format!("c {NVIDIA_MAJOR}:{minor} rwm"),
        ));
    }
    out
}

/// The writes of cgroup v2: cpu.max from `cpus`, memory.max from `mem` and
/// pids.max. GPUs are denied by an eBPF program, not a file (see
/// `device_filter.rs`).
pub fn v2(l: &Limits) -> Vec<LimitWrite> {
    let mut out = Vec::new();
    if l.cpus > 0.0 {
        out.push(required(
            "cpu",
            "cpu.max",
            format!("{} {CFS_PERIOD_US}", quota_us(l.cpus)),
        ));
    }
    if l.mem_mb > 0.0 {
        out.push(required(
            "memory",
            "memory.max",
            mem_bytes(l.mem_mb).to_string(),
        ));
    }
    out.push(required("pids", "pids.max", pids_max(l)));
    out
}

/// Writes `writes` in order, each to `dir_of(controller)/file`; a
/// controller without a directory (not in this hierarchy) is skipped.
/// Each write is one `write(2)` in append mode, as the kernel wants
/// control files written (and so several `devices.deny` lines add up in a
/// plain directory too). `cgroup` names the run in errors.
pub fn write(
    cgroup: &str,
    dir_of: &dyn Fn(&str) -> Option<PathBuf>,
    writes: &[LimitWrite],
) -> Result<(), IsolationError> {
    for w in writes {
        let Some(dir) = dir_of(w.controller) else {
            continue;
        };
        let path = dir.join(w.file);
        let done = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .and_then(|mut f| f.write_all(w.value.as_bytes()));
        match done {
            Ok(()) => {}
            Err(_) if w.optional => {}
            Err(e) => {
                let action = if w.file == "devices.deny" {
                    format!("deny GPU device {}", w.value.trim_end_matches(" rwm"))
                } else {
                    format!("set {} to {}", w.file, w.value)
                };
                return Err(err(cgroup, &action, e));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn limits(cpus: f64, mem_mb: f64, denied: &[u32]) -> Limits {
        Limits {
            cpus,
            mem_mb,
            pids_max: super::super::task_pids_max(cpus, 16384),
            denied_gpu_minors: denied.to_vec(),
        }
    }

    /// One directory per controller under `root`, as a v1 mount has.
    fn v1_dirs(root: &Path) -> impl Fn(&str) -> Option<PathBuf> + '_ {
        move |c: &str| {
            let d = root.join(c).join("mezzanine").join("run");
            std::fs::create_dir_all(&d).unwrap();
            Some(d)
        }
    }

    fn read(root: &Path, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(root.join(controller).join("mezzanine/run").join(file)).ok()
    }

    #[test]
    fn v1_limits_land_in_their_controllers_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(
            "mezzanine/run",
            &v1_dirs(root),
            &v1(&limits(1.5, 256.0, &[1, 3])),
        )
        .unwrap();
        assert_eq!(read(root, "cpu", "cpu.shares").as_deref(), Some("1536"));
        assert_eq!(
            read(root, "cpu", "cpu.cfs_quota_us").as_deref(),
            Some("150000")
        );
        assert_eq!(
            read(root, "cpu", "cpu.cfs_period_us").as_deref(),
            Some("100000")
        );
        assert_eq!(
            read(root, "memory", "memory.limit_in_bytes").as_deref(),
            Some("268435456")
        );
        assert_eq!(
            read(root, "memory", "memory.memsw.limit_in_bytes").as_deref(),
            Some("268435456")
        );
        assert_eq!(read(root, "pids", "pids.max").as_deref(), Some("1536"));
        // One deny line per GPU not given, each its own write.
        assert_eq!(
            read(root, "devices", "devices.deny").as_deref(),
            Some("c 195:1 rwmc 195:3 rwm")
        );
    }

    #[test]
    fn v1_without_cpus_or_mem_sets_only_pids() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write("mezzanine/run", &v1_dirs(root), &v1(&limits(0.0, 0.0, &[]))).unwrap();
        assert_eq!(read(root, "cpu", "cpu.shares"), None);
        assert_eq!(read(root, "memory", "memory.limit_in_bytes"), None);
        assert_eq!(read(root, "devices", "devices.deny"), None);
        assert_eq!(read(root, "pids", "pids.max").as_deref(), Some("256"));
    }

    #[test]
    fn tiny_cpu_shares_and_quota_have_floors() {
        let w = v1(&limits(0.0001, 0.0, &[]));
        let value = |file: &str| w.iter().find(|w| w.file == file).unwrap().value.clone();
        assert_eq!(value("cpu.shares"), "2");
        assert_eq!(value("cpu.cfs_quota_us"), "1000");
    }

    #[test]
    fn v2_limits_share_one_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mezzanine/run");
        std::fs::create_dir_all(&dir).unwrap();
        let dir_of = |c: &str| (c != "devices").then(|| dir.clone());
        write("mezzanine/run", &dir_of, &v2(&limits(0.5, 64.0, &[0]))).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("pids.max"), "512");
        // v2 has no devices files: GPUs go through the eBPF filter.
        assert!(v2(&limits(0.5, 64.0, &[0]))
            .iter()
            .all(|w| w.controller != "devices"));
    }

    #[test]
    fn a_controller_not_mounted_is_skipped_and_a_failed_write_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let pids = tmp.path().join("pids");
        std::fs::create_dir_all(&pids).unwrap();
        let only_pids = |c: &str| (c == "pids").then(|| pids.clone());
        write("mezzanine/run", &only_pids, &v1(&limits(2.0, 100.0, &[]))).unwrap();
        assert_eq!(
            std::fs::read_to_string(pids.join("pids.max")).unwrap(),
            "2048"
        );
        assert!(!tmp.path().join("cpu").exists());

        // A directory where the file should be: the write fails, and the
        // error says which cgroup and which file.
        let memory = tmp.path().join("memory");
        std::fs::create_dir_all(memory.join("memory.limit_in_bytes")).unwrap();
        let only_memory = |c: &str| (c == "memory").then(|| memory.clone());
        let e = write("mezzanine/run", &only_memory, &v1(&limits(0.0, 100.0, &[])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mezzanine/run") && e.contains("memory.limit_in_bytes"),
            "{e}"
        );
    }
}
