//! Errors that stop the agent. Everything else (an unreachable master, a
//! task that fails) is logged and retried or reported as a task status.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A fatal local problem: the agent cannot do its job on this machine as
/// configured.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The work directory (or a directory in it) cannot be created or used.
    #[error("work dir '{path}' is unusable: {source}; pass a writable --work-dir")]
    WorkDir {
        /// The directory that failed.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process holds the checkpoint database's lock (another
    /// agent on this `--work-dir`, or one that is just exiting).
    #[error(
        "checkpoint '{path}' is locked by another process; is another agent using this --work-dir?"
    )]
    CheckpointLocked {
        /// The database directory.
        path: PathBuf,
    },
    /// The checkpoint database cannot be opened or written.
    #[error("checkpoint '{path}' is unusable: {message}; is another agent using this --work-dir?")]
    Checkpoint {
        /// The database directory.
        path: PathBuf,
        /// What sled said.
        message: String,
    },
    /// The agent API address cannot be bound.
    #[error("cannot listen on {addr} (--listen): {source}; choose a free address")]
    Listen {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The agent API server stopped with an error.
    #[error("agent API server on {addr} failed: {message}")]
    Serve {
        /// The address it served on.
        addr: SocketAddr,
        /// What tonic said.
        message: String,
    },
    /// The task launcher program is missing.
    #[error("task launcher '{path}' is not usable: {message}")]
    Launcher {
        /// The configured launcher.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Isolation was required but cannot be had.
    #[error("{0}")]
    Isolation(String),
    /// GPUs were asked for but cannot be set up.
    #[error("{0}")]
    Gpus(String),
    /// Another agent of this host already offers some of the same ports.
    #[error("{0}")]
    Ports(String),
    /// Tasks could not run as configured: the task user is missing, or
    /// cannot reach the work dir, or a hidden path is unusable.
    #[error("{0}")]
    Tasks(String),
}
