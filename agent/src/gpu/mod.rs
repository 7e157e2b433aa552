//! GPUs as named devices (never a count): discovery through a
//! [`GpuBackend`] (NVML on real machines, fake device nodes for tests), the
//! `gpus` set resource the agent advertises, and the mapping of the GPU ids
//! a task was given to its environment and device-cgroup rules. It creates
//! no cgroups and spawns nothing.

pub mod fake;
pub mod nvml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Name of the set resource whose items are GPU ids.
pub const RESOURCE: &str = mezz_proto::resources::GPUS;

/// A GPU's identity: the NVML UUID (`GPU-…`), or `fake-gpu-N`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuUuid(pub String);

impl fmt::Display for GpuUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One GPU of this machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpu {
    /// Its identity, as advertised in the `gpus` set.
    pub id: GpuUuid,
    /// Index as CUDA counts it (`CUDA_VISIBLE_DEVICES`).
    pub index: u32,
    /// Minor number of its device node (major 195).
    pub minor: u32,
    /// Model name.
    pub name: String,
    /// Total memory, MB.
    pub memory_mb: u64,
    /// Its device node.
    pub device: PathBuf,
}

/// How two GPUs are connected: NVLinks, or the PCIe path between them.
pub use mezz_proto::topology::Link;

/// Current use of one GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// GPU utilization, percent.
    pub utilization_pct: u32,
    /// Memory in use, MB.
    pub memory_used_mb: u64,
}

/// A discovery failure; names the backend and what to do.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// NVML (the driver) is not usable here.
    #[error("NVML is not available ({0}); no NVIDIA driver on this machine? advertising no GPUs")]
    Nvml(String),
    /// `--fake-gpu-topology` does not read.
    #[error("--fake-gpu-topology: {0}")]
    FakeTopology(String),
    /// A fake device node cannot be made.
    #[error("cannot create fake GPU device node {path}: {message}; the agent must run as root (mknod) with --fake-gpus")]
    FakeNode {
        /// The node.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
}

/// A source of GPUs: NVML, or fake nodes.
pub trait GpuBackend: Send + Sync {
    /// `nvml` or `fake`.
    fn kind(&self) -> &'static str;
    /// The GPUs of this machine, in index order.
    fn gpus(&self) -> &[Gpu];
    /// How every pair of GPUs is connected, keyed by their indices.
    fn topology(&self) -> BTreeMap<(u32, u32), Link>;
    /// Current use of a GPU, where the backend can tell.
    fn usage(&self, gpu: &Gpu) -> Option<Usage>;
}

/// `--gpus` / `--fake-gpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GpuMode {
    /// NVML; no driver means no GPUs (one log line).
    #[default]
    Auto,
    /// No GPUs.
    None,
    /// G fake GPUs with device nodes under `<work-dir>/dev`.
    Fake(u32),
}

/// Finds this machine's GPUs. Never fails for `Auto` (no driver: one clear
/// log line and no GPUs); fails for `Fake` when the nodes cannot be made or
/// `fake_topology` (`--fake-gpu-topology`) does not read.
pub fn discover(
    mode: GpuMode,
    work_dir: &Path,
    fake_topology: Option<&str>,
) -> Result<Option<Box<dyn GpuBackend>>, GpuError> {
    match mode {
        GpuMode::None => Ok(None),
        GpuMode::Fake(n) => {
            let mut gpus = fake::FakeGpus::create(work_dir, n)?;
            if let Some(spec) = fake_topology {
                gpus = gpus.with_topology(spec).map_err(GpuError::FakeTopology)?;
            }
            Ok(Some(Box::new(gpus)))
        }
        GpuMode::Auto => match nvml::NvmlGpus::init() {
            Ok(b) => {
                for g in b.gpus() {
                    tracing::info!(
                        "GPU {}: {} ({}, {} MB, {})",
                        g.index,
                        g.id,
                        g.name,
                        g.memory_mb,
                        g.device.display()
                    );
                }
                Ok(Some(Box::new(b)))
            }
            Err(e) => {
                tracing::info!("{e}");
                Ok(None)
            }
        },
    }
}

/// The topology a backend reports, as the agent advertises it (the
/// `gpu_topology` attribute); `None` for fewer than two GPUs. A pair the
/// backend could not tell is taken as the slowest link.
pub fn advertised_topology(backend: &dyn GpuBackend) -> Option<mezz_proto::topology::Topology> {
    let gpus = backend.gpus();
    if gpus.len() < 2 {
        return None;
    }
    let links = backend.topology();
    let ids = gpus.iter().map(|g| g.id.0.clone()).collect();
    Some(mezz_proto::topology::Topology::new(ids, |i, j| {
        let (a, b) = (gpus[i].index, gpus[j].index);
        links
            .get(&(a.min(b), a.max(b)))
            .copied()
            .unwrap_or(Link::System)
    }))
}

/// What a task gets from its GPU ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    /// Environment: `CUDA_VISIBLE_DEVICES`, `MEZZ_GPU_DEVICES` (only when
    /// the task has GPUs).
    pub env: BTreeMap<String, String>,
    /// Minors of this agent's GPUs the task must not open.
    pub denied_minors: Vec<u32>,
}

/// Maps the GPU ids a task was given to its environment and the minors to
/// deny. An id this agent does not have is an error naming it.
pub fn assign(all: &[Gpu], given: &[String]) -> Result<Assignment, String> {
    let mut mine = Vec::new();
    for id in given {
        match all.iter().find(|g| g.id.0 == *id) {
            Some(g) => mine.push(g),
            None => {
                return Err(format!(
                    "GPU '{id}' is not a GPU of this agent (it has: {})",
                    all.iter()
                        .map(|g| g.id.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    mine.sort_by_key(|g| g.index);
    let mut env = BTreeMap::new();
    if !mine.is_empty() {
        let join =
            |f: &dyn Fn(&Gpu) -> String| mine.iter().map(|g| f(g)).collect::<Vec<_>>().join(",");
        env.insert(
            "CUDA_VISIBLE_DEVICES".into(),
            join(&|g| g.index.to_string()),
        );
        env.insert(
            "MEZZ_GPU_DEVICES".into(),
            join(&|g| g.device.display().to_string()),
        );
    }
    let denied_minors = all
        .iter()
        .filter(|g| !mine.iter().any(|m| m.id == g.id))
        .map(|g| g.minor)
        .collect();
    Ok(Assignment { env, denied_minors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus() -> Vec<Gpu> {
        (0..3)
            .map(|i| Gpu {
                id: GpuUuid(format!("fake-gpu-{i}")),
                index: i,
                minor: i,
                name: "Fake".into(),
                memory_mb: 0,
                device: PathBuf::from(format!("/w/dev/nvidia{i}")),
            })
            .collect()
    }

    #[test]
    fn assignment() {
        let a = assign(&gpus(), &["fake-gpu-2".into(), "fake-gpu-0".into()]).unwrap();
        assert_eq!(a.env["CUDA_VISIBLE_DEVICES"], "0,2");
        assert_eq!(a.env["MEZZ_GPU_DEVICES"], "/w/dev/nvidia0,/w/dev/nvidia2");
        assert_eq!(a.denied_minors, vec![1]);
        let none = assign(&gpus(), &[]).unwrap();
        assert!(none.env.is_empty());
        assert_eq!(none.denied_minors, vec![0, 1, 2]);
        let e = assign(&gpus(), &["GPU-x".into()]).unwrap_err();
        assert!(e.contains("'GPU-x'"), "{e}");
    }

    /// A backend over given GPUs and links, as NVML would report them.
    struct Known(Vec<Gpu>, BTreeMap<(u32, u32), Link>);

    impl GpuBackend for Known {
        fn kind(&self) -> &'static str {
            "known"
        }
        fn gpus(&self) -> &[Gpu] {
            &self.0
        }
        fn topology(&self) -> BTreeMap<(u32, u32), Link> {
            self.1.clone()
        }
        fn usage(&self, _gpu: &Gpu) -> Option<Usage> {
            None
        }
    }

    #[test]
    fn the_advertised_topology_names_gpus_by_id_and_fills_gaps_with_the_slowest_link() {
        let links = fake::parse_topology("0-1=NV4", 3).unwrap();
        let t = advertised_topology(&Known(gpus(), links)).expect("three GPUs");
        assert_eq!(
            t.to_string(),
            "fake-gpu-0,fake-gpu-1,fake-gpu-2;NV4,PHB,PHB"
        );
        // A pair the backend could not tell: the slowest link.
        let mut partial = BTreeMap::new();
        partial.insert((1, 2), Link::PcieSwitch);
        let t = advertised_topology(&Known(gpus(), partial)).expect("three GPUs");
        assert_eq!(
            t.to_string(),
            "fake-gpu-0,fake-gpu-1,fake-gpu-2;SYS,SYS,PIX"
        );
        // One GPU has no topology to speak of.
        assert!(advertised_topology(&Known(gpus()[..1].to_vec(), BTreeMap::new())).is_none());
    }

    #[test]
    fn fake_topologies_read_pairs_and_a_default_and_name_mistakes() {
        let t = fake::parse_topology("0-1=NV4, 3-2=nv4, *=SYS", 4).unwrap();
        assert_eq!(t[&(0, 1)], Link::NvLink(4));
        assert_eq!(t[&(2, 3)], Link::NvLink(4));
        assert_eq!(t[&(0, 2)], Link::System);
        assert_eq!(t.len(), 6);
        assert_eq!(
            fake::parse_topology("", 2).unwrap()[&(0, 1)],
            Link::HostBridge
        );
        for (spec, needle) in [
            ("0-1", "'0-1' is not I-J=CODE"),
            ("0-1=FAST", "'FAST' is not a GPU link code"),
            ("0-4=NV1", "'0-4' does not name two different GPUs of the 4"),
            ("1-1=NV1", "'1-1' does not name"),
            ("a-b=NV1", "'a-b' is not a pair of GPU indices"),
        ] {
            let e = fake::parse_topology(spec, 4).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
