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
//! - [`engine`]: the jobs framework itself, over a store of job records
//!   (the masters'), launching attempts on offers.
//! - [`gang`]: kinds whose attempt is a gang run by another framework of
//!   this tree (`tensorflow`, `pytorch`, `spark`), which is why this crate
//!   depends on `mezz-tensorflow` and `mezz-spark` beside `mezz-sdk`.
//! - [`service`]: kinds whose attempt is a long-running service of
//!   another framework (`jupyter`, `serve`).
//!
//! The state machines are pure; [`engine`] and [`gang`] talk to a cluster
//! only through the store and drivers they are given.
#![warn(missing_docs)]

pub mod batch;
pub mod engine;
pub mod gang;
pub mod record;
pub mod schedule;
pub mod service;
pub mod spec;
pub mod sweep;

pub use batch::{Action, Attempt, Job, JobState};
pub use spec::{JobSpec, Kind, SpecError};
