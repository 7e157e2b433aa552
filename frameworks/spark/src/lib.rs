//! Apache Spark applications on Mezzanine: a framework built on `mezz-sdk`
//! alone, reached as `mezz spark`.
//!
//! Spark 4 has no Mesos backend, so each application brings its own Spark
//! standalone cluster, made of tasks: a master, N workers (one executor
//! each) and the driver (`spark-submit --deploy-mode client`). The three
//! kinds are placed as one gang (all or nothing), every daemon binds its
//! agent's address and the ports its offer gave, the workers and the driver
//! wait for the master's port before they start, and when the driver ends
//! every other task of the application is killed.
//!
//! - [`app`]: the application spec and the command lines (pure);
//! - [`locate`]: finding Spark and a Java that runs it;
//! - [`scheduler`]: the SDK [`mezz_sdk::Scheduler`] that drives it all.
#![warn(missing_docs)]

pub mod app;
pub mod locate;
pub mod request;
pub mod scheduler;

pub use app::{parse_memory_mb, AppSpec, Endpoint, Role, SparkInstall};
pub use locate::{find_java, find_spark, java_major, LocateError};
pub use request::{AppRequest, Sizing};
pub use scheduler::{AppEvent, Interrupt, LaunchedTask, Outcome, SparkScheduler, KILL_GRACE};
