//! Jobs: one declarative spec for a batch workload (`mezz job submit
//! job.yaml`), with a size from the cluster's menu or explicit resources,
//! retries with exponential backoff and a deadline.
//!
//! - [`spec`]: the job file (YAML, or JSON), parsed with unknown fields
//!   refused and validated with errors that name the field and its line;
//!   what a job's task runs ([`spec::JobSpec::task_command`]).
//! - [`batch`]: the batch semantics as a pure state machine (time passed
//!   in): attempts with their start, end, exit code, reason and agent;
//!   retries with backoff up to `retries`; the deadline.
//!
//! Like every framework here it depends on `mezz-sdk` only. Nothing in it
//! talks to a cluster: the runner that launches attempts is a shell around
//! [`batch::Job`].
#![warn(missing_docs)]

pub mod batch;
pub mod engine;
pub mod record;
pub mod schedule;
pub mod spec;
pub mod sweep;

pub use batch::{Action, Attempt, Job, JobState};
pub use spec::{JobSpec, Kind, SpecError};
