//! Model services on Mezzanine: a framework built on `mezz-sdk` alone,
//! reached as `mezz serve`.
//!
//! One long-lived framework process (the daemon) owns every service of a
//! cluster: it keeps the desired state in a private state directory, runs
//! each service's replicas as tasks spread across agents, each on a port
//! from its offer and with an HTTP health check the agent runs, replaces a
//! failed, unhealthy or lost replica with backoff, and serves each service
//! through its own reverse proxy on a stable port of 127.0.0.1 that sends
//! requests only to healthy replicas. The proxies run in a process of
//! their own that the daemon feeds (see [`relay`]), so services answer
//! while the daemon restarts. It takes its running replicas back
//! after a restart of its own (the framework id is persisted and the
//! framework has a failover timeout). The `mezz serve` commands talk to it
//! over a small local API.
//!
//! - [`service`]: a service's record and the checks on a deploy (pure);
//! - [`store`]: the state directory (files 0600, directory 0700);
//! - [`scheduler`]: the book of services and the SDK scheduler;
//! - [`proxy`]: the per-service reverse proxy;
//! - [`relay`]: the process that runs the proxies apart from the daemon,
//!   so that services answer while the daemon restarts, and the daemon's
//!   link to it;
//! - [`metrics`]: the proxies' request counts and latency histograms;
//! - [`api`]: the local API, server and client;
//! - [`daemon`]: the process that ties them together;
//! - [`http`]: a small HTTP/1.1 client.
#![warn(missing_docs)]

pub mod api;
pub mod daemon;
pub use mezz_sdk::http;
pub mod metrics;
pub mod proxy;
pub mod relay;
pub mod scheduler;
pub mod service;
pub mod store;

pub use api::Client;
pub use scheduler::{Book, ReplicaView, ServeScheduler, ServiceView};
pub use service::{DeployRequest, Service};
pub use store::{DaemonInfo, StateDir};

/// What can go wrong; the text names the thing and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request cannot be done as asked (bad name, bad figures).
    #[error("{0}")]
    BadRequest(String),
    /// A service of that name exists already.
    #[error("{0}")]
    Conflict(String),
    /// No service of that name.
    #[error("{0}")]
    NotFound(String),
    /// The state directory cannot be used.
    #[error("{0}")]
    State(String),
    /// The daemon cannot be reached, or failed.
    #[error("{0}")]
    Daemon(String),
}
