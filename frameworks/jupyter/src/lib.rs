//! Jupyter notebook servers on Mezzanine: a framework built on `mezz-sdk`
//! alone, reached as `mezz jupyter`.
//!
//! One long-lived framework process (the daemon) owns every notebook of a
//! cluster: it keeps the desired state in a private state directory, runs
//! each notebook's Jupyter server as a task on a port from its offer with a
//! generated token, restarts a crashed server with backoff on the same
//! agent (and port, when offered), stops a server idle past its timeout,
//! and takes its running servers back after a restart of its own (the
//! framework id is persisted and the framework has a failover timeout).
//! The `mezz jupyter` commands talk to it over a small local API.
//!
//! - [`notebook`]: a notebook's record, the server command, URLs, the idle
//!   clock (pure);
//! - [`store`]: the notebooks file in the state directory (the rest of
//!   the directory is the SDK's daemon kit, [`mezz_sdk::daemon`]);
//! - [`scheduler`]: the book of notebooks and the SDK scheduler;
//! - [`api`]: the local API, server and client;
//! - [`daemon`]: the process that ties them together;
//! - [`http`]: a small HTTP/1.1 client.
#![warn(missing_docs)]

pub mod api;
pub mod daemon;
pub use mezz_sdk::http;
pub mod notebook;
pub mod scheduler;
pub mod store;

pub use api::Client;
pub use notebook::{Notebook, StartRequest};
pub use scheduler::{Book, JupyterScheduler, NotebookView};
pub use store::{DaemonInfo, StateDir};

/// What can go wrong; the text names the thing and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request cannot be done as asked (bad name, bad figures).
    #[error("{0}")]
    BadRequest(String),
    /// A notebook of that name exists already.
    #[error("{0}")]
    Conflict(String),
    /// No notebook of that name.
    #[error("{0}")]
    NotFound(String),
    /// The state directory or the local API cannot be used.
    #[error(transparent)]
    State(#[from] mezz_sdk::daemon::DaemonError),
    /// The daemon cannot be reached, or failed.
    #[error("{0}")]
    Daemon(String),
}
