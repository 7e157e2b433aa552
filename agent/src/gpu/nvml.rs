//! The NVML backend (nvml-wrapper, which loads libnvidia-ml.so at run time:
//! no driver is an error value, handled by `discover`). Reads each GPU's
//! index, UUID, name, memory and minor number once at start-up; topology
//! (NVLink or the PCIe common ancestor) and usage are asked on demand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nvml_wrapper::enum_wrappers::device::TopologyLevel;
use nvml_wrapper::Nvml;

use super::{Gpu, GpuBackend, GpuError, GpuUuid, Link, Usage};

/// NVLinks per GPU NVML is asked about.
const MAX_NVLINKS: u32 = 18;

/// The NVML backend.
pub struct NvmlGpus {
    nvml: Nvml,
    gpus: Vec<Gpu>,
}

impl NvmlGpus {
    /// Loads NVML and lists the GPUs.
    pub fn init() -> Result<NvmlGpus, GpuError> {
        let e = |e: nvml_wrapper::error::NvmlError| GpuError::Nvml(e.to_string());
        let nvml = Nvml::init().map_err(e)?;
        let count = nvml.device_count().map_err(e)?;
        let mut gpus = Vec::new();
        for i in 0..count {
            let d = nvml.device_by_index(i).map_err(e)?;
            let minor = d.minor_number().map_err(e)?;
            gpus.push(Gpu {
                id: GpuUuid(d.uuid().map_err(e)?),
                index: d.index().unwrap_or(i),
                minor,
                name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                memory_mb: d.memory_info().map_or(0, |m| m.total / (1024 * 1024)),
                device: PathBuf::from(format!("/dev/nvidia{minor}")),
            });
        }
        Ok(NvmlGpus { nvml, gpus })
    }
}

impl GpuBackend for NvmlGpus {
    fn kind(&self) -> &'static str {
        "nvml"
    }
    fn gpus(&self) -> &[Gpu] {
        &self.gpus
    }
    fn topology(&self) -> BTreeMap<(u32, u32), Link> {
        let mut out = BTreeMap::new();
        for a in &self.gpus {
            let Ok(da) = self.nvml.device_by_index(a.index) else {
                continue;
            };
            for b in self.gpus.iter().filter(|b| b.index > a.index) {
                let Ok(db) = self.nvml.device_by_index(b.index) else {
                    continue;
                };
                let bus_b = db.pci_info().map(|p| p.bus_id).ok();
                let nvlinks = (0..MAX_NVLINKS)
                    .filter(|l| {
                        let link = da.link_wrapper_for(*l);
                        link.is_active().unwrap_or(false)
                            && link.remote_pci_info().ok().map(|p| p.bus_id) == bus_b
                    })
                    .count() as u32;
                let link = if nvlinks > 0 {
                    Link::NvLink(nvlinks)
                } else {
                    // What NVML cannot tell counts as the slowest path.
                    da.topology_common_ancestor(db)
                        .map_or(Link::System, |l| match l {
                            // Two GPUs on one board sit behind its switch.
                            TopologyLevel::Internal | TopologyLevel::Single => Link::PcieSwitch,
                            TopologyLevel::Multiple => Link::PcieSwitches,
                            TopologyLevel::HostBridge => Link::HostBridge,
                            TopologyLevel::Node => Link::NumaNode,
                            TopologyLevel::System => Link::System,
                        })
                };
                out.insert((a.index, b.index), link);
            }
        }
        out
    }
    fn usage(&self, gpu: &Gpu) -> Option<Usage> {
        let d = self.nvml.device_by_index(gpu.index).ok()?;
        Some(Usage {
            utilization_pct: d.utilization_rates().ok()?.gpu,
            memory_used_mb: d.memory_info().ok()?.used / (1024 * 1024),
        })
    }
}
