//! Distributed TensorFlow (and PyTorch) training jobs on Mezzanine: a
//! framework built on `mezz-sdk` alone, reached as `mezz tf`.
//!
//! A job is a set of replica groups (chief, worker, ps, evaluator), each
//! with a count and resources, and a command. The framework places the
//! whole gang at once or not at all (the SDK's [`mezz_sdk::Gang`]), gives
//! every replica a port from its agent's offered ranges and whole GPUs,
//! tells each replica where all the others are (`TF_CONFIG`, or the
//! PyTorch `env://` variables), ends the job by its success policy, and
//! restarts the whole gang when a replica fails, as its restart policy
//! allows.
//!
//! - [`spec`]: the job spec, from flags and a TOML or YAML file;
//! - [`sizes`]: named sizes (`gpu-large` → cpus, mem, gpus);
//! - [`cluster`]: `TF_CONFIG` and the PyTorch environment (pure);
//! - [`job`]: the lifecycle: success and restart policies (pure);
//! - [`scheduler`]: the SDK [`mezz_sdk::Scheduler`] that drives them.
#![warn(missing_docs)]

pub mod cluster;
pub mod job;
pub mod scheduler;
pub mod sizes;
pub mod spec;

pub use cluster::{check_distinct_addresses, replica_env, tf_config, Endpoint};
pub use job::{Action, Job, Outcome, Phase};
pub use scheduler::{Interrupt, JobEvent, LaunchedReplica, TfScheduler, KILL_GRACE};
pub use sizes::{Size, SizeError, Sizes};
pub use spec::{
    Flavor, JobFile, JobSpec, Overrides, ReplicaGroup, ReplicaId, ReplicaType, RestartPolicy,
};

/// A job spec (or sizes file) that cannot be used; the text says what is
/// wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);
