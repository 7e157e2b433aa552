//! The isolator for machines without usable cgroups: nothing is created or
//! limited, and `select` has already warned the operator once.

use super::{IsolationError, Isolator, Limits, Prepared};

/// No isolation at all.
pub struct NoIsolation;

impl Isolator for NoIsolation {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn prepare(&self, name: &str, _limits: &Limits) -> Result<Prepared, IsolationError> {
        Ok(Prepared {
            cgroup: name.to_string(),
            procs_files: Vec::new(),
        })
    }
    fn oom_killed(&self, _cgroup: &str) -> bool {
        false
    }
    fn cpu_usage_ns(&self, _cgroup: &str) -> Option<u64> {
        None
    }
    fn pids(&self, _cgroup: &str) -> Vec<u32> {
        Vec::new()
    }
    fn cleanup(&self, _cgroup: &str) -> Result<(), IsolationError> {
        Ok(())
    }
}
