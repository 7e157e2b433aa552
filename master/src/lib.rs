//! The Mezzanine master: the cluster state machine (`cluster`), the pure
//! allocator (`allocator`), the replicated registry (`registry`) kept by raft
//! in sled (`replication`), and the thin I/O shell around them (`server`,
//! `api`) that serves gRPC and HTTP on one port.
#![warn(missing_docs)]

pub mod allocator;
pub mod api;
pub mod cluster;
pub mod handle;
pub mod hashing;
pub mod job_store;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod peer_grpc;
pub mod registry;
pub mod replication;
pub mod scheduling;
pub mod security;
pub mod server;
#[cfg(test)]
mod sim;
pub(crate) mod size_menu;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use cluster::Timeouts;
pub use server::run;

/// How a master is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address for gRPC and HTTP (one port).
    pub listen: SocketAddr,
    /// Address clients and peers are told to use; defaults to `listen`.
    pub advertise: Option<String>,
    /// Where the raft log and snapshots live.
    pub data_dir: PathBuf,
    /// This master's raft id.
    pub id: u64,
    /// Every member of the group by raft id, this one included.
    pub peers: BTreeMap<u64, String>,
    /// Timeouts and intervals.
    pub timeouts: Timeouts,
    /// Log entries applied between two snapshots (log compaction).
    pub snapshot_every: u64,
    /// Connection bounds and timeouts, and how much history to keep.
    pub limits: Limits,
    /// TLS on the master's port (`--tls-cert`, `--tls-key`, `--tls-ca`,
    /// `--tls-client-auth`); `None`: plaintext. Its own outgoing calls
    /// (peers, agents) use the process's client TLS
    /// ([`mezz_proto::tls::client_tls`]).
    pub tls: Option<std::sync::Arc<mezz_proto::tls::ServerTls>>,
    /// Who must present a token, the bootstrap token, the ACLs.
    pub security: security::SecurityConfig,
    /// Priority classes and preemption (`--priority-class`, …).
    pub scheduling: scheduling::SchedulingConfig,
}

/// What a master keeps bounded: connections, their idle time, the
/// history of finished tasks and the ended jobs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections: how many at once, idle timeout, HTTP/2 keepalive.
    pub connections: listener::ConnLimits,
    /// Finished tasks kept in the replicated history (`ps --all`).
    pub completed_tasks: usize,
    /// Ended jobs kept in the replicated registry (`mezz job list`).
    pub jobs_kept: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: listener::ConnLimits::default(),
            completed_tasks: registry::DEFAULT_FINISHED_KEPT,
            jobs_kept: job_store::DEFAULT_JOBS_KEPT,
        }
    }
}

impl Config {
    /// The address this master tells others to use.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

/// Why a master could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another master or program using that port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory could not be used.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Replication failed.
    #[error(transparent)]
    Replication(#[from] replication::ReplicationError),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(String),
}
