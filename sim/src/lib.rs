//! Mezzanine at scale on one machine, as a library the CLI (`mezz sim`) and
//! later tools (trace replay) share:
//!
//! - [`agent_core`]: one simulated agent as a sans-I/O state machine that
//!   answers the master exactly as `mezz-agent` does;
//! - [`fleet`]: thousands of them over the real agent protocol (gRPC), in
//!   one process, with tasks as timers;
//! - [`load`]: frameworks on the SDK that launch at a target rate and
//!   measure throughput and latencies;
//! - [`trace`], [`replay`], [`replay_run`]: a GPU workload trace replayed
//!   through the real master by a framework on the SDK, with FIFO, SJF or
//!   LAS (Tiresias) job order, reported in trace seconds;
//! - [`dist`], [`stats`]: run-time distributions and percentiles.
//!
//! It depends on the public protocol and the SDK only, never on master or
//! agent internals: what it measures is what any agent and framework see.

#![warn(missing_docs)]

pub mod agent_core;
pub mod dist;
pub mod fleet;
pub mod load;
pub mod replay;
pub mod replay_run;
pub mod stats;
pub mod trace;
