//! The driver's task: `DriverBuilder::run` subscribes, turns events into
//! scheduler callbacks one at a time, acknowledges updates, and reconnects
//! when the master goes away. Sending calls is `sender.rs`'s job; finding a
//! master is `connection.rs`'s.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::connection::{event_name, Connector, Subscription};
use crate::driver::Driver;
use crate::error::SdkError;
use crate::proto;
use crate::proto::event::Event;
use crate::scheduler::Scheduler;
use crate::sender::{self, Feedback, Link};
use crate::{AgentId, FrameworkId, OfferId};

/// Configures and runs a framework's driver.
///
/// ```no_run
/// # use mezz_sdk::{proto, DriverBuilder, Scheduler};
/// # async fn f<S: Scheduler>(my_scheduler: S) -> Result<(), mezz_sdk::SdkError> {
/// let scheduler = DriverBuilder::new()
///     .masters(["127.0.0.1:5050", "127.0.0.1:5051"])
///     .framework(proto::FrameworkInfo {
///         name: "my-framework".into(),
///         failover_timeout_secs: 60.0,
///         ..Default::default()
///     })
///     .connect_timeout(std::time::Duration::from_secs(10))
///     .run(my_scheduler)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct DriverBuilder {
    masters: Vec<String>,
    framework: proto::FrameworkInfo,
    connect_timeout: Option<Duration>,
    manual_acknowledgements: bool,
    framework_id_file: Option<PathBuf>,
    tls: Option<mezz_proto::tls::ClientTls>,
    token: Option<mezz_proto::auth::Token>,
}

impl DriverBuilder {
    /// The bearer token the framework presents to masters that require
    /// one (`mezz master --authenticate`). Without this, the driver uses
    /// the credentials file named by `$MEZZ_CREDENTIALS` (mode 0600), else
    /// `$MEZZ_TOKEN`, else none.
    ///
    /// ```no_run
    /// # use mezz_sdk::{proto, DriverBuilder, Scheduler};
    /// # async fn f<S: Scheduler>(my_scheduler: S) -> Result<(), Box<dyn std::error::Error>> {
    /// let token = mezz_sdk::Token::from_file("/etc/my-framework/credentials".as_ref())?;
    /// DriverBuilder::new()
    ///     .masters(["127.0.0.1:5050"])
    ///     .framework(proto::FrameworkInfo { name: "mine".into(), ..Default::default() })
    ///     .token(token)
    ///     .run(my_scheduler)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn token(mut self, token: mezz_proto::auth::Token) -> Self {
        self.token = Some(token);
        self
    }

    /// A builder with no masters and an empty framework.
    pub fn new() -> Self {
        Self::default()
    }

    /// Master addresses (`host:port`), tried in order; followers point the
    /// driver at the leader.
    pub fn masters<I, S>(mut self, masters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.masters = masters.into_iter().map(Into::into).collect();
        self
    }

    /// The framework to subscribe. `name` is required; an empty `user` is
    /// filled from `$USER`. Set `id` to take over an existing registration
    /// (scheduler failover), and `failover_timeout_secs` to keep the
    /// framework's tasks while the scheduler is away.
    pub fn framework(mut self, framework: proto::FrameworkInfo) -> Self {
        self.framework = framework;
        self
    }

    /// Give up when no master could be reached for this long, whether at
    /// start or after losing the connection. By default the driver retries
    /// forever.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// When on, status updates are not acknowledged automatically; call
    /// [`Driver::acknowledge`] once an update is safely handled (e.g.
    /// persisted). Off by default.
    pub fn manual_acknowledgements(mut self, on: bool) -> Self {
        self.manual_acknowledgements = on;
        self
    }

    /// Keeps the framework id in `path`, so that a restarted scheduler takes
    /// over its registration, and with it its running tasks, as long as it
    /// comes back within the framework's `failover_timeout_secs`.
    ///
    /// At start an id found in the file is used when
    /// [`proto::FrameworkInfo::id`] is empty; once subscribed, the id the
    /// master confirmed is written there (durably: written beside, synced,
    /// renamed). After a confirmed [`Driver::teardown`], or when the master
    /// reports the framework removed, the file is deleted, so the next start
    /// registers anew. A file that cannot be read or written ends the driver
    /// with [`SdkError::FrameworkIdFile`].
    ///
    /// ```no_run
    /// # use mezz_sdk::{proto, DriverBuilder, Scheduler};
    /// # async fn f<S: Scheduler>(my_scheduler: S) -> Result<(), mezz_sdk::SdkError> {
    /// DriverBuilder::new()
    ///     .masters(["127.0.0.1:5050"])
    ///     .framework(proto::FrameworkInfo {
    ///         name: "keeper".into(),
    ///         failover_timeout_secs: 300.0,
    ///         ..Default::default()
    ///     })
    ///     .framework_id_file("/var/lib/keeper/framework-id")
    ///     .run(my_scheduler)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn framework_id_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.framework_id_file = Some(path.into());
        self
    }

    /// Connect to the masters over TLS, trusting `tls`'s CA (and
    /// presenting its client certificate, if it has one), e.g.
    /// `ClientTls::load(ca, cert, key)`. Without it the driver takes
    /// `MEZZ_TLS_CA`, `MEZZ_TLS_CERT` and `MEZZ_TLS_KEY` from the
    /// environment, or connects in plaintext when they are unset. TLS is a
    /// setting of the whole process: the first one made holds.
    pub fn tls(mut self, tls: mezz_proto::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Runs `scheduler` until it calls [`Driver::stop`] or
    /// [`Driver::teardown`] (then `Ok` with the scheduler back), or until
    /// the framework is removed, refused, or no master could be reached
    /// within the connect timeout.
    pub async fn run<S: Scheduler>(self, scheduler: S) -> Result<S, SdkError> {
        let list = self.masters.join(",");
        let masters = mezz_proto::client::parse_master_list(&list).map_err(SdkError::Config)?;
        match self.tls {
            Some(tls) => {
                if !mezz_proto::tls::set_client_tls(Some(tls)) {
                    tracing::warn!(
                        "this process's TLS setting was made before the driver started; keeping it"
                    );
                }
            }
            None => mezz_proto::tls::init_client_tls_from_env()
                .map_err(|e| SdkError::Config(e.to_string()))?,
        }
        let mut framework = self.framework;
        if framework.name.trim().is_empty() {
            return Err(SdkError::Config(
                "the framework has no name; set FrameworkInfo.name".into(),
            ));
        }
        if framework.user.is_empty() {
            framework.user = std::env::var("USER").unwrap_or_default();
        }
        if let Some(path) = &self.framework_id_file {
            match crate::framework_id::load(path)? {
                Some(id) if framework.id.is_empty() => {
                    tracing::info!(framework_id = %id, file = %path.display(), "failing over to the stored framework id");
                    framework.id = id;
                }
                Some(id) if id != framework.id => tracing::warn!(
                    file = %path.display(),
                    stored = %id,
                    given = %framework.id,
                    "FrameworkInfo.id is set; ignoring the id stored in the file"
                ),
                _ => {}
            }
        }
        let token = match self.token {
            Some(t) => Some(t),
            None => mezz_proto::auth::Token::from_env_or_file(None)
                .map_err(|e| SdkError::Config(e.to_string()))?,
        };
        let span = tracing::info_span!("framework", name = %framework.name);
        let runtime = Runtime {
            scheduler,
            connector: Connector::new(masters, self.connect_timeout, token),
            framework,
            manual_acknowledgements: self.manual_acknowledgements,
            id_file: self.framework_id_file,
        };
        runtime.run().instrument(span).await
    }
}

/// Runs `scheduler` for `framework` against `masters`, retrying forever;
/// shorthand for [`DriverBuilder`].
pub async fn run<S: Scheduler>(
    masters: Vec<String>,
    framework: proto::FrameworkInfo,
    scheduler: S,
) -> Result<S, SdkError> {
    DriverBuilder::new()
        .masters(masters)
        .framework(framework)
        .run(scheduler)
        .await
}

/// The time without any event after which the master is presumed gone:
/// three heartbeats and a second.
pub(crate) fn silence_limit(heartbeat_interval_secs: f64) -> Duration {
    let beat = if heartbeat_interval_secs.is_finite() && heartbeat_interval_secs > 0.0 {
        heartbeat_interval_secs.min(3600.0)
    } else {
        15.0
    };
    Duration::from_secs_f64(3.0 * beat + 1.0)
}

struct Runtime<S> {
    scheduler: S,
    connector: Connector,
    framework: proto::FrameworkInfo,
    manual_acknowledgements: bool,
    id_file: Option<PathBuf>,
}

/// Whether the driver goes on after an event or a report.
enum Flow {
    Continue,
    Done(Result<(), SdkError>),
}

/// Ends the sender task when the driver ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<S: Scheduler> Runtime<S> {
    async fn run(self) -> Result<S, SdkError> {
        let id_file = self.id_file.clone();
        let from_file = id_file.is_some() && !self.framework.id.is_empty();
        let result = self.drive().await;
        let Some(path) = id_file else {
            return result;
        };
        match result {
            Err(SdkError::Removed { .. }) => crate::framework_id::remove(&path),
            Err(SdkError::Refused {
                framework,
                address,
                message,
            }) if from_file => {
                return Err(SdkError::Refused {
                    framework,
                    address,
                    message: format!(
                        "{message} (the framework id came from {}; delete that file to register as a new framework)",
                        path.display()
                    ),
                })
            }
            _ => {}
        }
        result
    }

    async fn drive(mut self) -> Result<S, SdkError> {
        let known_id = Some(FrameworkId(self.framework.id.clone())).filter(|id| !id.0.is_empty());
        let (driver, calls) = Driver::new(known_id);
        let (link_tx, link_rx) = watch::channel(None);
        let (feedback_tx, mut feedback) = mpsc::unbounded_channel();
        let _sender = AbortOnDrop(tokio::spawn(
            sender::run(calls, link_rx, driver.stopping(), feedback_tx).in_current_span(),
        ));
        let mut wakeups = driver
            .take_wakeups()
            .expect("a new driver has its wake-up channel");
        let mut timers: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
        let mut generation = 0;
        let mut after_failure = false;
        loop {
            let subscription = {
                let connect = self.connector.subscribe(&self.framework, after_failure);
                tokio::pin!(connect);
                loop {
                    tokio::select! {
                        result = &mut connect => break result?,
                        Some(report) = feedback.recv() => {
                            if let Flow::Done(end) = on_feedback(&mut self.scheduler, &driver, &self.framework, self.id_file.as_deref(), report) {
                                return end.map(|()| self.scheduler);
                            }
                        }
                        Some(at) = wakeups.recv() => timers.push(Reverse(at)),
                    }
                }
            };
            after_failure = true;
            let Subscription {
                address,
                client,
                subscribed,
                mut events,
            } = subscription;
            if subscribed.framework_id.is_empty() {
                return Err(SdkError::Refused {
                    framework: self.framework.name.clone(),
                    address,
                    message: "the master's Subscribed event has no framework id".into(),
                });
            }
            let reconnected = !self.framework.id.is_empty();
            let framework_id = FrameworkId(subscribed.framework_id.clone());
            self.framework.id = framework_id.0.clone();
            driver.set_framework_id(framework_id.clone());
            if let Some(path) = &self.id_file {
                if crate::framework_id::load(path)?.as_deref() != Some(framework_id.as_str()) {
                    crate::framework_id::store(path, framework_id.as_str())?;
                    tracing::info!(%framework_id, file = %path.display(), "framework id stored");
                }
            }
            generation += 1;
            link_tx.send_replace(Some(Link {
                client,
                framework_id: framework_id.clone(),
                generation,
            }));
            tracing::info!(%framework_id, master = %address, reconnected, "subscribed");
            self.scheduler
                .subscribed(&driver, &framework_id, reconnected);
            if reconnected {
                driver.reconcile(Vec::new());
            }

            let silence = silence_limit(subscribed.heartbeat_interval_secs);
            let mut deadline = Instant::now() + silence;
            loop {
                let flow = tokio::select! {
                    message = events.message() => match message {
                        Ok(Some(event)) => {
                            deadline = Instant::now() + silence;
                            self.dispatch(&driver, event)
                        }
                        Ok(None) => {
                            tracing::warn!(master = %address, "the master closed the subscription; reconnecting");
                            break;
                        }
                        Err(status) => {
                            match mezz_proto::client::leader_hint(&status) {
                                Some(leader) => self.connector.prefer(leader),
                                None => self.connector.lost(&address),
                            }
                            tracing::warn!(
                                master = %address,
                                error = %crate::connection::describe(&status),
                                "subscription broke; reconnecting"
                            );
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::warn!(master = %address, "no event from the master for {silence:?}; reconnecting");
                        self.connector.lost(&address);
                        break;
                    }
                    Some(report) = feedback.recv() => {
                        on_feedback(&mut self.scheduler, &driver, &self.framework, self.id_file.as_deref(), report)
                    }
                    Some(at) = wakeups.recv() => {
                        timers.push(Reverse(at));
                        Flow::Continue
                    }
                    _ = sleep_until_first(&timers), if !timers.is_empty() => {
                        let now = Instant::now();
                        while timers.peek().is_some_and(|Reverse(at)| *at <= now) {
                            timers.pop();
                        }
                        self.scheduler.wakeup(&driver);
                        Flow::Continue
                    }
                };
                if let Flow::Done(end) = flow {
                    return end.map(|()| self.scheduler);
                }
            }
            link_tx.send_replace(None);
            self.scheduler.disconnected(&driver);
        }
    }

    /// Hands one event to the scheduler.
    fn dispatch(&mut self, driver: &Driver, event: proto::Event) -> Flow {
        let Some(event) = event.event else {
            tracing::debug!("ignoring an event this SDK does not know");
            return Flow::Continue;
        };
        tracing::debug!(event = event_name(&event), "event");
        match event {
            Event::Offers(offers) => self.scheduler.offers(driver, offers.offers),
            Event::Rescind(rescind) => self.scheduler.rescinded(driver, &OfferId(rescind.offer_id)),
            Event::Update(update) => {
                if let Some(status) = update.status {
                    self.scheduler.status_update(driver, &status);
                    if !self.manual_acknowledgements {
                        driver.acknowledge(&status);
                    }
                }
            }
            Event::Failure(failure) => {
                self.scheduler
                    .agent_lost(driver, &AgentId(failure.agent_id), &failure.message)
            }
            Event::Error(error) if driver.tearing_down() => {
                // The removal we asked for, announced before the teardown
                // call's own answer came back.
                tracing::info!(message = %error.message, "framework torn down");
                if let Some(path) = &self.id_file {
                    crate::framework_id::remove(path);
                }
                return Flow::Done(Ok(()));
            }
            Event::Error(error) => {
                return Flow::Done(Err(SdkError::Removed {
                    framework: self.framework.name.clone(),
                    framework_id: self.framework.id.clone(),
                    message: error.message,
                }))
            }
            Event::Heartbeat(_) => {}
            Event::Subscribed(_) => tracing::debug!("ignoring a repeated Subscribed event"),
        }
        Flow::Continue
    }
}

/// Sleeps until the earliest timer (the caller checks there is one).
async fn sleep_until_first(timers: &BinaryHeap<Reverse<Instant>>) {
    if let Some(Reverse(at)) = timers.peek() {
        tokio::time::sleep_until(*at).await;
    }
}

/// Acts on what the sender reports; a confirmed teardown also forgets the
/// stored framework id.
fn on_feedback<S: Scheduler>(
    scheduler: &mut S,
    driver: &Driver,
    framework: &proto::FrameworkInfo,
    id_file: Option<&std::path::Path>,
    report: Feedback,
) -> Flow {
    if let (Feedback::TornDown(Ok(())), Some(path)) = (&report, id_file) {
        crate::framework_id::remove(path);
    }
    match report {
        Feedback::Failed(message) => {
            scheduler.error(driver, &message);
            Flow::Continue
        }
        Feedback::Stopped => {
            tracing::info!("driver stopped");
            Flow::Done(Ok(()))
        }
        Feedback::TornDown(Ok(())) => {
            tracing::info!("framework torn down");
            Flow::Done(Ok(()))
        }
        Feedback::TornDown(Err(message)) => Flow::Done(Err(SdkError::Teardown {
            framework: framework.name.clone(),
            framework_id: framework.id.clone(),
            message,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_three_heartbeats_and_a_second() {
        assert_eq!(silence_limit(2.0), Duration::from_secs(7));
        assert_eq!(silence_limit(0.0), Duration::from_secs(46));
        assert_eq!(silence_limit(f64::NAN), Duration::from_secs(46));
    }

    #[tokio::test]
    async fn configuration_errors_name_the_problem() {
        struct Nothing;
        impl Scheduler for Nothing {
            fn subscribed(&mut self, _: &Driver, _: &FrameworkId, _: bool) {}
            fn offers(&mut self, _: &Driver, _: Vec<proto::Offer>) {}
            fn status_update(&mut self, _: &Driver, _: &proto::TaskStatus) {}
        }
        let named = proto::FrameworkInfo {
            name: "x".into(),
            ..Default::default()
        };
        let err = run(vec![], named.clone(), Nothing)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("no master address")));
        let err = run(vec!["nohost".into()], named, Nothing)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("'nohost'")));
        let err = run(vec!["h:1".into()], proto::FrameworkInfo::default(), Nothing)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("no name")));
    }
}
