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
pub mod capacity;
pub mod client;
pub mod grant;
pub mod holdback;
pub mod ids;
pub mod public;
pub mod resources;
pub mod sizes;
pub mod state;
pub mod tls;
pub mod topology;

/// Generated protobuf and gRPC code for package `mezzanine.v1`: every
/// file of it, public and internal (see [`public`] for the public part).
#[allow(missing_docs)] // generated code; the .proto files carry the docs
pub mod v1 {
    tonic::include_proto!("mezzanine.v1");
}

/// Mesos' own v1 protos (`mesos.v1`, `mesos.v1.scheduler`, vendored
/// unmodified from Apache Mesos 1.11.0 under `proto/mesos/`): the master's
/// Mesos API transcodes protobuf with them and checks its JSON against them.
#[allow(missing_docs, clippy::all)] // generated code from Mesos' .proto files
pub mod mesos {
    /// `mesos.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));
        /// `mesos.v1.scheduler`.
        pub mod scheduler {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
        }
    }
    /// The encoded `FileDescriptorSet` of both files, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/mesos_descriptor.bin"));
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

/// A short age for people: `42s`, `5m`, `1.5h`, `3.0d` (seconds and
/// minutes whole, hours and days to one decimal). The CLI and the status
/// page show ages this one way.
pub fn age_text(secs: f64) -> String {
    let d = secs.max(0.0);
    if d < 60.0 {
        format!("{:.0}s", d.floor())
    } else if d < 3600.0 {
        format!("{:.0}m", (d / 60.0).floor())
    } else if d < 86400.0 {
        format!("{:.1}h", d / 3600.0)
    } else {
        format!("{:.1}d", d / 86400.0)
    }
}

/// An attempt's GPU use for people, `63% 2048MB` (mean utilization,
/// peak memory); None when its agent did not say. The CLI and the status
/// page show it this one way.
pub fn gpu_use_text(utilization_pct: Option<f64>, peak_memory_mb: Option<u64>) -> Option<String> {
    let pct = utilization_pct?;
    Some(match peak_memory_mb {
        Some(mb) => format!("{pct:.0}% {mb}MB"),
        None => format!("{pct:.0}%"),
    })
}

#[cfg(test)]
mod age_tests {
    #[test]
    fn gpu_use_reads_as_percent_and_megabytes() {
        assert_eq!(
            super::gpu_use_text(Some(62.6), Some(2048)).as_deref(),
            Some("63% 2048MB")
        );
        assert_eq!(super::gpu_use_text(Some(5.0), None).as_deref(), Some("5%"));
        assert_eq!(super::gpu_use_text(None, Some(1)), None);
    }

    #[test]
    fn ages_read_the_same_everywhere() {
        let cases = [
            (-3.0, "0s"),
            (0.4, "0s"),
            (59.9, "59s"),
            (60.0, "1m"),
            (3599.0, "59m"),
            (5400.0, "1.5h"),
            (86400.0 * 3.0, "3.0d"),
        ];
        for (secs, want) in cases {
            assert_eq!(super::age_text(secs), want, "{secs}");
        }
    }
}
