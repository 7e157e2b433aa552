//! The Mezzanine framework SDK: everything a framework author needs to write
//! a scheduler, and nothing more.
//!
//! Mezzanine schedules in two levels, as Mesos does. The master decides how
//! much of the cluster each framework may use and *offers* it resources;
//! your framework decides what to run on them. You write the second level:
//! a type that implements [`Scheduler`]. The SDK's driver subscribes it to
//! the master, calls it for every event, and sends what it asks for.
//!
//! # Writing a framework
//!
//! 1. **Describe the framework** with a [`proto::FrameworkInfo`]: a `name`,
//!    optionally a `role`, and a `failover_timeout_secs` if its tasks should
//!    survive the scheduler being away for a while.
//! 2. **Implement [`Scheduler`]**. The callbacks are synchronous and get a
//!    [`Driver`] to make calls with:
//!    - [`offers`](Scheduler::offers): match offered resources (see
//!      [`Resources`], the same math the master uses to decide what fits)
//!      against the work you have, then [`launch`](Driver::launch) tasks
//!      built with [`TaskBuilder`], or [`decline`](Driver::decline).
//!    - [`status_update`](Scheduler::status_update): follow your tasks
//!      through their [`TaskState`]s. Updates are acknowledged for you.
//!    - [`subscribed`](Scheduler::subscribed) and
//!      [`disconnected`](Scheduler::disconnected): the connection's life.
//!      After a reconnection the driver reconciles by itself, so the latest
//!      state of every task arrives as status updates.
//! 3. **Run it** with [`DriverBuilder`] (or the shorthand [`run`]). It
//!    returns when your scheduler calls [`Driver::stop`] or
//!    [`Driver::teardown`], handing the scheduler back, or with an
//!    [`SdkError`] when the framework is removed or no master can be
//!    reached.
//!
//! The driver survives master restarts and failovers by itself: it tries the
//! masters in order, follows a follower's hint to the leader, notices a
//! silent master by its missing heartbeats, and subscribes again with the
//! same framework id.
//!
//! # Staying alive across restarts of your own process
//!
//! Give the framework a `failover_timeout_secs` and name a file with
//! [`DriverBuilder::framework_id_file`]: the id the master assigns is kept
//! there, and a restarted scheduler subscribes with it, taking its running
//! tasks back instead of registering anew. Track tasks with a
//! [`TaskTracker`]: its attempt ids (`KEY.N`) let a restarted scheduler
//! recognise its tasks in the reconciliation answers
//! ([`TaskTracker::recover_until`]), and its [`RetryPolicy`] restarts failed
//! tasks up to N times with backoff. `examples/keeper.rs` does all of this
//! in under a hundred lines.
//!
//! # Placing tasks
//!
//! - [`place`] spreads a list of [`TaskRequest`]s over the current offers
//!   by a [`Strategy`] (first-fit, bin-pack, spread), picking ports from the
//!   offered ranges ([`PORTS`]) and GPUs from the agent's GPU identities
//!   ([`GPUS`]); [`Plan::launch`] sends one launch per offer.
//! - [`Gang`] launches a group of tasks together or not at all. It holds
//!   offers only for a bounded time and then declines them with a refuse
//!   filter, so two gangs that each hold half of a cluster never deadlock.
//!   Hand it your offers, and your [`Scheduler::wakeup`] calls (it asks for
//!   them with [`Driver::wake_after`]).
//!
//! - [`daemon`]: a kit for a framework's long-lived daemon: its private
//!   state directory, lock, log, local API secret, and run skeleton.
//! - [`http`]: a small HTTP/1.1 client for a framework daemon's local API
//!   and the plain-HTTP servers its tasks run.
//! - [`sizes`]: named sizes (`cpu-small`, `gpu-large`, or the operators'
//!   own from `$MEZZ_SIZES`), so `--size` means the same in every
//!   framework.
//!
//! Every helper decides fit with [`Resources::contains`], the very check the
//! master uses to validate an accept.
//!
//! ```no_run
//! use mezz_sdk::{proto, Driver, FrameworkId, Resources, Scheduler, TaskBuilder, TaskState};
//!
//! /// Runs one command once.
//! struct Once {
//!     launched: bool,
//!     succeeded: Option<bool>,
//! }
//!
//! impl Scheduler for Once {
//!     fn subscribed(&mut self, _: &Driver, id: &FrameworkId, _reconnected: bool) {
//!         tracing::info!(%id, "subscribed");
//!     }
//!
//!     fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
//!         let needs = Resources::new().with_scalar("cpus", 0.1).with_scalar("mem", 32.0);
//!         for offer in offers {
//!             let fits = Resources::from_proto(&offer.resources)
//!                 .is_ok_and(|offered| offered.contains(&needs));
//!             if self.launched || !fits {
//!                 driver.decline([offer.id], None);
//!                 continue;
//!             }
//!             let task = TaskBuilder::shell("once", "echo hello").resources(&needs).build(&offer);
//!             driver.launch([offer.id], vec![task]);
//!             self.launched = true;
//!         }
//!     }
//!
//!     fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
//!         if status.state().is_terminal() {
//!             self.succeeded = Some(status.state() == TaskState::Finished);
//!             driver.teardown();
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mezz_sdk::SdkError> {
//!     let framework = proto::FrameworkInfo { name: "once".into(), ..Default::default() };
//!     let scheduler = Once { launched: false, succeeded: None };
//!     let done = mezz_sdk::run(vec!["127.0.0.1:5050".into()], framework, scheduler).await?;
//!     std::process::exit(if done.succeeded == Some(true) { 0 } else { 1 });
//! }
//! ```
//!
//! `examples/hello.rs` is a complete framework in under a hundred lines:
//! `cargo run -p mezz-sdk --example hello -- --master 127.0.0.1:5050`;
//! `examples/keeper.rs` keeps long-running tasks alive across restarts of
//! the framework itself.
#![warn(missing_docs)]

mod connection;
pub mod daemon;
mod driver;
mod error;
mod framework_id;
mod gang;
pub mod http;
mod placement;
mod runtime;
mod scheduler;
mod sender;
pub mod sizes;
mod task;
mod tracker;

pub use driver::Driver;
pub use error::SdkError;
pub use gang::{Gang, GangStep};
/// The resource names, as the master and agents spell them.
pub use mezz_proto::resources::{CPUS, DISK, GPUS, MEM, PORTS};
pub use placement::{offer_host, pick_gpus, place, Placement, Plan, Strategy, TaskRequest};
pub use runtime::{run, DriverBuilder};
pub use scheduler::Scheduler;
pub use task::TaskBuilder;
pub use tracker::{Change, Phase, RetryPolicy, TaskTracker, TrackedTask};

/// Parses `ADDR[,ADDR…]` (e.g. a `--master` flag) into master addresses.
pub use mezz_proto::auth::Token;
pub use mezz_proto::client::parse_master_list;
/// The public wire protocol (`mezzanine.v1` without what only masters
/// exchange): offers, task infos, statuses.
pub use mezz_proto::public as proto;
pub use mezz_proto::public::{TaskReason, TaskState};
/// What a framework trusts (and presents) when the masters speak TLS; see
/// [`DriverBuilder::tls`].
pub use mezz_proto::tls::ClientTls;
pub use mezz_proto::{AgentId, FrameworkId, OfferId, ResourceError, Resources, TaskId};
