//! The `Scheduler` trait: the callbacks a framework implements. It holds no
//! networking; the driver calls it, one callback at a time, in event order.

use crate::proto;
use crate::{AgentId, Driver, FrameworkId, OfferId};

/// A framework's scheduler: the second level of two-level scheduling.
///
/// The driver calls these methods one at a time on its own task, in the
/// order the master's events arrive. They are synchronous and must return
/// quickly; anything slow belongs on a task of your own (hand it a clone of
/// the [`Driver`]). Calls made through `driver` are queued and sent in order
/// (acknowledgements beside them), never blocking the callback.
///
/// ```
/// use mezz_sdk::{proto, Driver, FrameworkId, Scheduler};
///
/// struct DeclineAll;
///
/// impl Scheduler for DeclineAll {
///     fn subscribed(&mut self, _: &Driver, id: &FrameworkId, _reconnected: bool) {
///         tracing::info!(%id, "subscribed");
///     }
///     fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
///         driver.decline(offers.into_iter().map(|o| o.id), Some(60.0));
///     }
///     fn status_update(&mut self, _: &Driver, _: &proto::TaskStatus) {}
/// }
/// ```
pub trait Scheduler: Send + 'static {
    /// The master accepted the subscription. `reconnected` is true when the
    /// framework already had an id: after a lost connection, a master
    /// failover, or when [`proto::FrameworkInfo::id`] was set to take over a
    /// registration (scheduler failover). The driver follows a reconnection
    /// with an implicit reconciliation, so the latest state of every task
    /// arrives as status updates.
    fn subscribed(&mut self, driver: &Driver, framework_id: &FrameworkId, reconnected: bool);

    /// Resources offered to the framework. Answer every offer, by
    /// [`Driver::launch`], [`Driver::accept`] or [`Driver::decline`]; an
    /// offer left alone holds its resources until it is rescinded.
    fn offers(&mut self, driver: &Driver, offers: Vec<proto::Offer>);

    /// An offer is no longer valid (its agent left, or the master took it
    /// back). Launches on it will fail.
    fn rescinded(&mut self, driver: &Driver, offer_id: &OfferId) {
        let _ = (driver, offer_id);
    }

    /// A task changed state. Updates that need it are acknowledged right
    /// after this returns (unless
    /// [`DriverBuilder::manual_acknowledgements`](crate::DriverBuilder::manual_acknowledgements)
    /// is on); until then the master resends them.
    fn status_update(&mut self, driver: &Driver, status: &proto::TaskStatus);

    /// An agent was lost; its tasks get their own status updates.
    fn agent_lost(&mut self, driver: &Driver, agent_id: &AgentId, message: &str) {
        let _ = (driver, agent_id, message);
    }

    /// A call failed and was not retried (the message names the call and
    /// gives the master's answer). The default logs it.
    fn error(&mut self, driver: &Driver, message: &str) {
        let _ = driver;
        tracing::error!("{message}");
    }

    /// A wake-up asked for with [`Driver::wake_after`] fell due. The
    /// default does nothing.
    fn wakeup(&mut self, driver: &Driver) {
        let _ = driver;
    }

    /// The connection to the master was lost. The driver reconnects by
    /// itself and then calls [`Scheduler::subscribed`] with
    /// `reconnected = true`; offers held until now are void.
    fn disconnected(&mut self, driver: &Driver) {
        let _ = driver;
    }
}
