//! Fake GPUs for machines without NVIDIA (the DESIGN.md contract): G
//! character device nodes `<work-dir>/dev/nvidia0 … nvidia{G-1}`, major 195
//! and minor = index, ids `fake-gpu-N`. Opening one fails with ENXIO (no
//! driver), which is exactly what device-cgroup tests need to tell "allowed"
//! from "denied" (EPERM).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::{Gpu, GpuBackend, GpuError, GpuUuid, Link, Usage};
use crate::isolation::NVIDIA_MAJOR;

/// The fake backend.
pub struct FakeGpus {
    gpus: Vec<Gpu>,
}

/// `<work_dir>/dev/nvidiaN`.
pub fn node_path(work_dir: &Path, index: u32) -> PathBuf {
    work_dir.join("dev").join(format!("nvidia{index}"))
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
        Ok(FakeGpus { gpus })
    }
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
                t.insert((a.index, b.index), Link::Pcie("host bridge".into()));
            }
        }
        t
    }
    fn usage(&self, _gpu: &Gpu) -> Option<Usage> {
        Some(Usage {
            utilization_pct: 0,
            memory_used_mb: 0,
        })
    }
}
