//! Named sizes (`--size gpu-large` → cpus, mem, gpus): the cluster's menu,
//! kept by the masters (`mezz sizes`, read with [`Sizes::from_views`]), or
//! the built-in defaults replaced or extended by a TOML file (`$MEZZ_SIZES`,
//! else `~/.config/mezz/sizes.toml`) where a master is too old to keep a
//! menu. The one switch from a CPU job to a GPU job, shared by every
//! framework so that a size means the same thing to `mezz tf run`,
//! `mezz spark submit` and the rest.

use mezz_proto::resources::{CPUS, MEM};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use mezz_proto::Resources;

/// A size name that is unknown, or a sizes file that cannot be used; the
/// text says which and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SizeError(pub String);

/// What one named size gives each replica.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// CPUs.
    pub cpus: f64,
    /// Memory in MB.
    pub mem: f64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u32,
}

impl Size {
    /// The size's cpus and mem as resources (GPUs are picked by identity
    /// from an offer, so they are not part of this).
    ///
    /// ```
    /// use mezz_sdk::sizes::Sizes;
    /// let small = Sizes::builtin().get("cpu-small").unwrap();
    /// assert_eq!(small.resources().to_string(), "cpus:1;mem:2048");
    /// ```
    pub fn resources(&self) -> Resources {
        Resources::new()
            .with_scalar(CPUS, self.cpus)
            .with_scalar(MEM, self.mem)
    }
}

/// The named sizes a cluster offers.
///
/// ```
/// use mezz_sdk::sizes::Sizes;
/// let sizes = Sizes::builtin()
///     .merge_toml("[gpu-large]\ncpus = 16\nmem = 65536\ngpus = 4\n")
///     .unwrap();
/// assert_eq!(sizes.get("gpu-large").unwrap().gpus, 4);
/// assert_eq!(sizes.get("cpu-small").unwrap().gpus, 0);
/// assert!(sizes.get("huge").unwrap_err().0.contains("cpu-small"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Sizes {
    sizes: BTreeMap<String, Size>,
}

impl Sizes {
    /// The defaults: `cpu-small` (1 CPU, 2 GB), `cpu-medium` (2, 4 GB),
    /// `cpu-large` (4, 8 GB), `gpu-small` (4 CPUs, 16 GB, 1 GPU),
    /// `gpu-large` (8 CPUs, 32 GB, 2 GPUs).
    pub fn builtin() -> Sizes {
        Sizes::from_views(&mezz_proto::sizes::builtin())
    }

    /// The menu a master sent (`ListSizes`).
    ///
    /// ```
    /// use mezz_sdk::sizes::Sizes;
    /// let menu = mezz_proto::sizes::builtin();
    /// assert_eq!(Sizes::from_views(&menu), Sizes::builtin());
    /// ```
    pub fn from_views(views: &[mezz_proto::v1::SizeView]) -> Sizes {
        Sizes {
            sizes: views
                .iter()
                .map(|v| {
                    let size = Size {
                        cpus: v.cpus,
                        mem: v.mem,
                        gpus: v.gpus,
                    };
                    (v.name.clone(), size)
                })
                .collect(),
        }
    }

    /// The built-in sizes with those of a TOML text on top: one table per
    /// size (`[gpu-large]` with `cpus`, `mem`, optional `gpus`).
    pub fn merge_toml(mut self, text: &str) -> Result<Sizes, SizeError> {
        let more: BTreeMap<String, Size> =
            toml::from_str(text).map_err(|e| SizeError(e.to_string()))?;
        for (name, size) in &more {
            // A size is multiplied into every replica's request: a zero or
            // negative figure would ask for nothing and fit anywhere.
            if !(size.cpus.is_finite() && size.cpus > 0.0) {
                return Err(SizeError(format!(
                    "size '{name}': cpus must be a positive number, not {}",
                    size.cpus
                )));
            }
            if !(size.mem.is_finite() && size.mem > 0.0) {
                return Err(SizeError(format!(
                    "size '{name}': mem must be a positive number of MB, not {}",
                    size.mem
                )));
            }
        }
        self.sizes.extend(more);
        Ok(self)
    }

    /// The sizes file to read: `$MEZZ_SIZES`, else
    /// `~/.config/mezz/sizes.toml` when it exists.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("MEZZ_SIZES").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".config/mezz/sizes.toml");
        p.exists().then_some(p)
    }

    /// The built-in sizes, with `path`'s on top when given.
    pub fn load(path: Option<&Path>) -> Result<Sizes, SizeError> {
        let Some(path) = path else {
            return Ok(Sizes::builtin());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| SizeError(format!("reading sizes file {}: {e}", path.display())))?;
        Sizes::builtin()
            .merge_toml(&text)
            .map_err(|e| SizeError(format!("sizes file {}: {}", path.display(), e.0)))
    }

    /// The size called `name`.
    pub fn get(&self, name: &str) -> Result<Size, SizeError> {
        self.sizes.get(name).copied().ok_or_else(|| {
            let known: Vec<&str> = self.sizes.keys().map(String::as_str).collect();
            SizeError(format!(
                "unknown size '{name}'; known sizes: {} (see `mezz sizes`; an operator adds one with `mezz sizes set`)",
                known.join(", ")
            ))
        })
    }

    /// Every size, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Size)> {
        self.sizes.iter().map(|(n, s)| (n.as_str(), s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_replaces_and_extends_the_builtin_sizes() {
        let sizes = Sizes::builtin()
            .merge_toml("[cpu-small]\ncpus = 2\nmem = 1024\n[tiny]\ncpus = 0.5\nmem = 256\n")
            .unwrap();
        assert_eq!(sizes.get("cpu-small").unwrap().cpus, 2.0);
        assert_eq!(
            sizes.get("tiny").unwrap().resources().to_string(),
            "cpus:0.5;mem:256"
        );
        assert_eq!(sizes.get("gpu-large").unwrap().gpus, 2);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = Sizes::builtin()
            .merge_toml("[x]\ncpus = 0\nmem = 1\n")
            .unwrap_err();
        assert!(err.0.contains("size 'x': cpus"), "{err}");
        let err = Sizes::builtin()
            .merge_toml("[x]\ncpus = 1\nmem = -5\n")
            .unwrap_err();
        assert!(err.0.contains("size 'x': mem"), "{err}");
        let err = Sizes::builtin()
            .merge_toml("[x]\ncpus = 1\nmem = 5\ngpu = 1\n")
            .unwrap_err();
        assert!(err.0.contains("gpu"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("sizes.toml");
        let err = Sizes::load(Some(&missing)).unwrap_err();
        assert!(err.0.contains("sizes.toml"), "{err}");
    }
}
