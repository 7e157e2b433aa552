//! The menu of named sizes (`--size gpu-large` → cpus, mem, gpus) as the
//! protocol carries it: the built-in menu every cluster starts with, and
//! the one check a size must pass before the masters store it. The masters
//! keep the menu in their replicated state; the SDK and the CLI read it
//! from there.

use crate::v1::SizeView;

/// The most GPUs one size may ask for: a typo (`--gpus 80`) is caught here
/// rather than as a task that never fits.
pub const MAX_GPUS: u32 = 64;

/// The menu a cluster starts with: `cpu-small` (1 CPU, 2 GB),
/// `cpu-medium` (2, 4 GB), `cpu-large` (4, 8 GB), `gpu-small` (4 CPUs,
/// 16 GB, 1 GPU), `gpu-large` (8 CPUs, 32 GB, 2 GPUs).
pub fn builtin() -> Vec<SizeView> {
    let s = |name: &str, cpus, mem, gpus| SizeView {
        name: name.to_string(),
        cpus,
        mem,
        gpus,
        gpu_model: String::new(),
    };
    vec![
        s("cpu-small", 1.0, 2048.0, 0),
        s("cpu-medium", 2.0, 4096.0, 0),
        s("cpu-large", 4.0, 8192.0, 0),
        s("gpu-small", 4.0, 16384.0, 1),
        s("gpu-large", 8.0, 32768.0, 2),
    ]
}

/// Whether `name` can name a size: 1 to 63 characters of lowercase
/// letters, digits, `-` and `_`, starting with a letter (it is typed on
/// command lines and written in job files).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() < 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' cannot name a size: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter"
        ))
    }
}

/// Whether a size may go on the menu; the error names the size and the
/// field. A size is multiplied into every task's request: a zero or
/// negative figure would ask for nothing and fit anywhere.
pub fn check(size: &SizeView) -> Result<(), String> {
    check_name(&size.name)?;
    let name = &size.name;
    if !(size.cpus.is_finite() && size.cpus > 0.0) {
        return Err(format!(
            "size '{name}': cpus must be a positive number, not {}",
            size.cpus
        ));
    }
    if !(size.mem.is_finite() && size.mem > 0.0) {
        return Err(format!(
            "size '{name}': mem must be a positive number of MB, not {}",
            size.mem
        ));
    }
    if size.gpus > MAX_GPUS {
        return Err(format!(
            "size '{name}': gpus {} is more than {MAX_GPUS}",
            size.gpus
        ));
    }
    if !size.gpu_model.is_empty() && size.gpus == 0 {
        return Err(format!(
            "size '{name}': a GPU model ('{}') needs gpus of at least 1",
            size.gpu_model
        ));
    }
    if size.gpu_model.len() > 128 || size.gpu_model.chars().any(char::is_control) {
        return Err(format!(
            "size '{name}': the GPU model must be at most 128 printable characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_menu_passes_its_own_check() {
        for s in builtin() {
            check(&s).unwrap();
        }
    }

    #[test]
    fn bad_sizes_name_the_field() {
        let base = builtin().remove(0);
        let bad = |f: &dyn Fn(&mut SizeView)| {
            let mut s = base.clone();
            f(&mut s);
            check(&s).unwrap_err()
        };
        assert!(bad(&|s| s.cpus = 0.0).contains("cpus"));
        assert!(bad(&|s| s.mem = f64::NAN).contains("mem"));
        assert!(bad(&|s| s.gpus = 1000).contains("gpus"));
        assert!(bad(&|s| s.gpu_model = "A100".into()).contains("GPU model"));
        assert!(bad(&|s| s.name = "GPU Large".into()).contains("cannot name a size"));
        assert!(bad(&|s| s.name = String::new()).contains("cannot name a size"));
    }
}
