//! The long-lived framework process (`mezz jupyter daemon`): one per state
//! directory (a lock file says so), it subscribes with the persisted
//! framework id and a failover timeout, so a restarted daemon takes its
//! running servers back; serves the local API; and polls every running
//! server's `/api/status` and `/api/kernels` with its token, for readiness
//! and for activity. The skeleton is the SDK's daemon kit
//! ([`mezz_sdk::daemon::Daemon`]).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use mezz_sdk::daemon::Daemon;
use mezz_sdk::{proto, DriverBuilder};

use crate::notebook::Activity;
use crate::scheduler::{Book, Probe};
use crate::{http, store, Error};

/// The framework's name on the cluster.
pub const FRAMEWORK_NAME: &str = "mezz-jupyter";

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Master addresses.
    pub masters: Vec<String>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// How long the servers keep running while no daemon is subscribed.
    pub failover_timeout: Duration,
    /// How often each running server is polled.
    pub poll_interval: Duration,
}

/// Runs the daemon until `shutdown` resolves (then the framework stays
/// registered: servers keep running for the failover timeout, and the next
/// daemon takes them back) or the framework is removed. Returns
/// `Ok(false)` at once when another daemon holds this state directory.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<bool, Error> {
    let Some(daemon) = Daemon::start(&config.state_dir, store::HOLDS)? else {
        return Ok(false);
    };
    let book = Book::load(daemon.state())?;
    let (listener, info) = daemon.listen(&config.masters).await?;
    tokio::spawn(crate::api::serve(
        listener,
        book.clone(),
        info.secret.clone(),
    ));
    daemon.publish(&info)?;
    tracing::info!(address = %info.address, dir = %daemon.state().path().display(), "jupyter daemon serving");
    let monitor = tokio::spawn(monitor(book.clone(), config.poll_interval));

    let framework = proto::FrameworkInfo {
        name: FRAMEWORK_NAME.into(),
        failover_timeout_secs: config.failover_timeout.as_secs_f64(),
        user: std::env::var("USER").unwrap_or_default(),
        // Notebooks may ask for GPUs: only frameworks that say so are
        // offered GPU agents.
        capabilities: vec![proto::Capability::GpuResources as i32],
        ..Default::default()
    };
    let driver = DriverBuilder::new()
        .masters(config.masters.clone())
        .framework(framework);
    let shutdown = async {
        shutdown.await;
        tracing::info!("stopping; the notebooks keep running until a daemon takes them back");
    };
    let result = daemon
        .run_driver(driver, book.scheduler(), || book.driver(), shutdown)
        .await;
    monitor.abort();
    result
        .map(|()| true)
        .map_err(|e| Error::Daemon(e.to_string()))
}

/// Polls every running server, forever.
async fn monitor(book: Book, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for probe in book.probes() {
            let result = poll(&probe).await;
            book.observe(&probe, result);
        }
    }
}

/// One poll: `/api/status` and `/api/kernels`, with the token, marked so
/// they do not count as activity themselves.
async fn poll(probe: &Probe) -> Result<Activity, String> {
    let auth = format!("token {}", probe.token);
    let get = |path: &'static str| {
        let auth = auth.clone();
        async move {
            let r = http::request(
                &probe.address,
                "GET",
                path,
                &[("Authorization", &auth)],
                None,
                Duration::from_secs(5),
            )
            .await?;
            if r.status != 200 {
                return Err(format!("{path} answered {}", r.status));
            }
            r.json()
        }
    };
    let status = get("/api/status?no_track_activity=1").await?;
    let kernels = get("/api/kernels?no_track_activity=1").await?;
    Ok(Activity::from_api(&status, &kernels))
}
