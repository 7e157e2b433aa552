//! Named sizes for replica groups: the SDK's [`mezz_sdk::sizes`], applied
//! to a group (parameter servers and evaluators take a size's CPUs and
//! memory, not its GPUs).

pub use mezz_sdk::sizes::{Size, SizeError, Sizes};

use crate::spec::ReplicaGroup;
use crate::SpecError;

impl From<SizeError> for SpecError {
    fn from(e: SizeError) -> Self {
        SpecError(e.0)
    }
}

/// Sets `group`'s resources from `size`; GPUs only when `gpus` is true.
pub fn apply(size: &Size, group: &mut ReplicaGroup, gpus: bool) {
    group.cpus = size.cpus;
    group.mem = size.mem;
    if gpus {
        group.gpus = size.gpus;
    }
}
