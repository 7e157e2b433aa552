//! Fake GPUs for machines without NVIDIA (the DESIGN.md contract): G
//! character device nodes `<work-dir>/dev/nvidia0 … nvidia{G-1}`, major 195
//! and minor = index, ids `fake-gpu-N`. Opening one fails with ENXIO (no
//! driver), which is exactly what device-cgroup tests need to tell "allowed"
//! from "denied" (EPERM). A fake GPU's use is what the file
//! `<work-dir>/dev/nvidiaN.usage` says: `UTIL_PCT MEMORY_MB` (`87 2048`);
//! no file is an idle GPU.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::{Gpu, GpuBackend, GpuError, GpuUuid, Link, Usage};
use crate::isolation::NVIDIA_MAJOR;

/// The fake backend.
pub struct FakeGpus {
    gpus: Vec<Gpu>,
    work_dir: PathBuf,
    /// Links by index pair (lower first); pairs not named go through the
    /// host bridge.
    links: BTreeMap<(u32, u32), Link>,
}

/// `<work_dir>/dev/nvidiaN`.
pub fn node_path(work_dir: &Path, index: u32) -> PathBuf {
    work_dir.join("dev").join(format!("nvidia{index}"))
}

/// `<work_dir>/dev/nvidiaN.usage`: what fake GPU N reports as its use.
pub fn usage_path(work_dir: &Path, index: u32) -> PathBuf {
    work_dir.join("dev").join(format!("nvidia{index}.usage"))
}

/// Reads a usage file's `UTIL_PCT MEMORY_MB`; `None` when it does not
/// read (it is being written, say).
fn parse_usage(text: &str) -> Option<Usage> {
    let mut words = text.split_whitespace();
    let utilization_pct: u32 = words.next()?.parse().ok()?;
    let memory_used_mb: u64 = words.next().map_or(Some(0), |w| w.parse().ok())?;
    (utilization_pct <= 100 && words.next().is_none()).then_some(Usage {
        utilization_pct,
        memory_used_mb,
    })
}

impl FakeGpus {
    /// Creates (or keeps) the `n` nodes.
    pub fn create(work_dir: &Path, n: u32) -> Result<FakeGpus, GpuError> {
        let dir = work_dir.join("dev");
        std::fs::create_dir_all(&dir).map_err(|e| GpuError::FakeNode {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        let mut gpus = Vec::new();
        for i in 0..n {
            let path = node_path(work_dir, i);
            let want = makedev(NVIDIA_MAJOR as u64, i as u64);
            let ok = std::fs::metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                m.file_type().is_char_device() && m.rdev() == want
            });
            if !ok {
                let _ = std::fs::remove_file(&path);
                mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), want).map_err(
                    |e| GpuError::FakeNode {
                        path: path.clone(),
                        message: e.to_string(),
                    },
                )?;
            }
            // Open to everyone, like the driver's nodes (the umask took
            // bits away from mknod's): tasks run as an unprivileged user,
            // and the devices cgroup, not the mode, decides who gets which.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(
                |e| GpuError::FakeNode {
                    path: path.clone(),
                    message: e.to_string(),
                },
            )?;
            gpus.push(Gpu {
                id: GpuUuid(format!("fake-gpu-{i}")),
                index: i,
                minor: i,
                name: "Mezzanine fake GPU".into(),
                memory_mb: 16 * 1024,
                device: path,
            });
        }
        Ok(FakeGpus {
            gpus,
            work_dir: work_dir.to_path_buf(),
            links: BTreeMap::new(),
        })
    }
}

impl FakeGpus {
    /// Takes the links between the fake GPUs from `spec`
    /// (`--fake-gpu-topology`): comma-separated `I-J=CODE` pairs by index,
    /// and optionally `*=CODE` for every pair not named (else `PHB`), with
    /// the codes of `nvidia-smi topo -m` (`NV<n>`, `PIX`, `PXB`, `PHB`,
    /// `NODE`, `SYS`). `0-1=NV4,2-3=NV4,*=SYS` is two NVLink pairs on two
    /// NUMA nodes.
    pub fn with_topology(mut self, spec: &str) -> Result<FakeGpus, String> {
        self.links = parse_topology(spec, self.gpus.len() as u32)?;
        Ok(self)
    }
}

/// Reads a `--fake-gpu-topology` for `n` GPUs: a link for every pair.
pub fn parse_topology(spec: &str, n: u32) -> Result<BTreeMap<(u32, u32), Link>, String> {
    let mut default = Link::HostBridge;
    let mut links = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (pair, code) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not I-J=CODE or *=CODE"))?;
        let link = Link::parse(code).map_err(|e| e.to_string())?;
        if pair.trim() == "*" {
            default = link;
            continue;
        }
        let index = |s: &str| s.trim().parse::<u32>().ok();
        let (a, b) = pair
            .split_once('-')
            .and_then(|(a, b)| Some((index(a)?, index(b)?)))
            .ok_or_else(|| format!("'{pair}' is not a pair of GPU indices like 0-1"))?;
        if a == b || a >= n || b >= n {
            return Err(format!(
                "'{pair}' does not name two different GPUs of the {n} fake ones (0-{})",
                n.saturating_sub(1)
            ));
        }
        links.insert((a.min(b), a.max(b)), link);
    }
    for a in 0..n {
        for b in a + 1..n {
            links.entry((a, b)).or_insert(default);
        }
    }
    Ok(links)
}

impl GpuBackend for FakeGpus {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn gpus(&self) -> &[Gpu] {
        &self.gpus
    }
    fn topology(&self) -> BTreeMap<(u32, u32), Link> {
        let mut t = BTreeMap::new();
        for a in &self.gpus {
            for b in self.gpus.iter().filter(|b| b.index > a.index) {
                let link = self.links.get(&(a.index, b.index)).copied();
                t.insert((a.index, b.index), link.unwrap_or(Link::HostBridge));
            }
        }
        t
    }
    fn usage(&self, gpu: &Gpu) -> Option<Usage> {
        match std::fs::read_to_string(usage_path(&self.work_dir, gpu.index)) {
            Ok(text) => parse_usage(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Usage {
                utilization_pct: 0,
                memory_used_mb: 0,
            }),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_files_read_as_percent_and_megabytes() {
        let u = |t| parse_usage(t).map(|u| (u.utilization_pct, u.memory_used_mb));
        assert_eq!(u("87 2048\n"), Some((87, 2048)));
        assert_eq!(u("40"), Some((40, 0)));
        assert_eq!(u("101 0"), None, "over 100%");
        assert_eq!(u("half"), None);
        assert_eq!(u(""), None);
        assert_eq!(u("1 2 3"), None);
    }
}
