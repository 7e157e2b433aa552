//! The Mezzanine wire protocol (`mezzanine.v1`) and the vocabulary every
//! crate shares: identifiers, task-state helpers and the one resource math
//! that decides offers, validates accepts and will check quota.
//!
//! This crate holds no state and runs nothing by itself: its only I/O is
//! [`client`]'s channels to masters, made when a caller asks, and its only
//! clock read is [`unix_now`], for the shells (state machines take time as
//! a parameter). Master, agent and SDK depend on it; it depends on none of
//! them.
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod grant;
pub mod holdback;
pub mod ids;
pub mod resources;
pub mod state;

/// Generated protobuf and gRPC code for package `mezzanine.v1`.
#[allow(missing_docs)] // generated code; the .proto file carries the docs
pub mod v1 {
    tonic::include_proto!("mezzanine.v1");
}

pub use ids::{AgentId, FrameworkId, OfferId, TaskId};
pub use resources::{ResourceError, Resources};

/// The protocol version this build speaks. Peers send theirs when they
/// subscribe or register; an unknown version is refused with a clear error.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest gRPC message any Mezzanine server accepts or sends (4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Seconds since the Unix epoch, as carried in `TaskStatus.timestamp`.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
