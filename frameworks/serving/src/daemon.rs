//! The long-lived framework process (`mezz serve daemon`): one per state
//! directory (a lock file says so). It subscribes with the persisted
//! framework id and a failover timeout, so a restarted daemon takes its
//! running replicas back; serves the local API; and keeps the proxy
//! process (see [`crate::relay`]) fed with every service's healthy
//! replicas.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezz_sdk::daemon::Daemon;
use mezz_sdk::{proto, DriverBuilder};

use crate::relay::Link;
use crate::scheduler::Book;
use crate::{store, Error};

/// The framework's name on the cluster.
pub const FRAMEWORK_NAME: &str = "mezz-serving";

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Master addresses.
    pub masters: Vec<String>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// How long the replicas keep running while no daemon is subscribed
    /// (and the proxy process while no daemon speaks to it).
    pub failover_timeout: Duration,
    /// The program and leading arguments that run the proxy process
    /// (`mezz serve proxy`); `None` runs the proxies in the daemon, where
    /// they stop with it.
    pub proxy_command: Option<Vec<OsString>>,
}

/// Runs the daemon until `shutdown` resolves (then the framework stays
/// registered: replicas keep running for the failover timeout, and the
/// next daemon takes them back) or the framework is removed. Returns
/// `Ok(false)` at once when another daemon holds this state directory.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<bool, Error> {
    let Some(daemon) = Daemon::start(&config.state_dir, store::HOLDS)? else {
        return Ok(false);
    };
    let book = Book::load(daemon.state())?;
    let link = Arc::new(Link::new(
        daemon.state().clone(),
        config.proxy_command.clone(),
        config.failover_timeout,
    ));
    // The proxy first: a proxy process that outlived the last daemon keeps
    // serving the routes it has; one that is gone is started again, and
    // takes the services' ports once the replicas' health is known.
    if let Err(e) = link.hold().await.client().await {
        tracing::error!("{e}");
    }
    let pusher = tokio::spawn(push_routes(book.clone(), link.clone()));
    let (listener, info) = daemon.listen(&config.masters).await?;
    tokio::spawn(crate::api::serve(
        listener,
        book.clone(),
        link.clone(),
        info.secret.clone(),
    ));
    daemon.publish(&info)?;
    tracing::info!(address = %info.address, dir = %daemon.state().path().display(), "serving daemon ready");

    let framework = proto::FrameworkInfo {
        name: FRAMEWORK_NAME.into(),
        failover_timeout_secs: config.failover_timeout.as_secs_f64(),
        user: std::env::var("USER").unwrap_or_default(),
        // Models may ask for GPUs: only frameworks that say so are offered
        // GPU agents.
        capabilities: vec![proto::Capability::GpuResources as i32],
        ..Default::default()
    };
    let driver = DriverBuilder::new()
        .masters(config.masters.clone())
        .framework(framework);
    let shutdown = async {
        shutdown.await;
        tracing::info!("stopping; the replicas keep running, and the proxy serving them, until a daemon takes them back");
    };
    let result = daemon
        .run_driver(driver, book.scheduler(), || book.driver(), shutdown)
        .await;
    pusher.abort();
    result
        .map(|()| true)
        .map_err(|e| Error::Daemon(e.to_string()))
}

/// How often the routes go to the proxy, changed or not: also the
/// daemon's sign of life to the proxy process.
pub const PUSH_EVERY: Duration = Duration::from_millis(200);

/// Pushes the book's routes to the proxy, forever.
async fn push_routes(book: Book, link: Arc<Link>) {
    let mut tick = tokio::time::interval(PUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let changed = book.routes_changed();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = changed.notified() => {}
        }
        if let Err(e) = push_once(&book, &link).await {
            if !failing {
                tracing::warn!("cannot give the proxy its routes: {e}; trying again");
            }
            failing = true;
        } else if failing {
            tracing::info!("the proxy has its routes again");
            failing = false;
        }
    }
}

/// One push of the routes, when the book has them (see
/// [`Book::route_table`]).
pub(crate) async fn push_once(book: &Book, link: &Link) -> Result<(), Error> {
    let mut held = link.hold().await;
    let client = held.client().await?;
    let as_of = Instant::now();
    let Some(table) = book.route_table() else {
        return Ok(());
    };
    match client.push(&table).await {
        Ok(answer) => {
            book.proxy_said(answer, as_of);
            Ok(())
        }
        Err(e) => {
            held.forget();
            Err(e)
        }
    }
}
