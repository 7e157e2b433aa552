//! The long-lived framework process (`mezz serve daemon`): one per state
//! directory (a lock file says so). It subscribes with the persisted
//! framework id and a failover timeout, so a restarted daemon takes its
//! running replicas back; serves the local API; and runs every service's
//! proxy on the port fixed at deploy.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use mezz_sdk::{proto, DriverBuilder};

use crate::scheduler::Book;
use crate::store::{random_hex, DaemonInfo, StateDir};
use crate::Error;

/// The framework's name on the cluster.
pub const FRAMEWORK_NAME: &str = "mezz-serving";

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Master addresses.
    pub masters: Vec<String>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// How long the replicas keep running while no daemon is subscribed.
    pub failover_timeout: Duration,
}

/// Runs the daemon until `shutdown` resolves (then the framework stays
/// registered: replicas keep running for the failover timeout, and the
/// next daemon takes them back) or the framework is removed. Returns
/// `Ok(false)` at once when another daemon holds this state directory.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<bool, Error> {
    // Everything this process writes is the owner's alone, the framework
    // id file the SDK writes included. The daemon is a process of its own,
    // so the process-wide mask touches nothing else.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let store = StateDir::open(&config.state_dir)?;
    let Some(_lock) = store.lock()? else {
        tracing::info!(dir = %store.path().display(), "another daemon serves this state directory");
        return Ok(false);
    };
    let book = Book::load(store.clone())?;
    // The proxies first: their ports are the services' addresses, and a
    // port taken meanwhile by something else must be said at once.
    for (name, port) in book.proxies() {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => {
                let proxy = tokio::spawn(crate::proxy::serve(
                    l,
                    name.clone(),
                    book.routes(),
                    book.metrics().clone(),
                ));
                book.set_proxy(&name, proxy.abort_handle());
            }
            Err(e) => {
                tracing::error!(service = %name, port, "cannot listen for the proxy again: {e}; `mezz serve rm {name}` and deploy it anew")
            }
        }
    }
    {
        let book = book.clone();
        tokio::spawn(async move {
            loop {
                for (name, _) in book.proxies() {
                    book.routes().set(&name, book.backends(&name));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::State(format!("cannot listen on 127.0.0.1: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::State(format!("cannot read the API address: {e}")))?
        .to_string();
    let secret = random_hex()?;
    let pid = std::process::id();
    tokio::spawn(crate::api::serve(listener, book.clone(), secret.clone()));
    store.set_daemon(&DaemonInfo {
        pid,
        address: address.clone(),
        secret,
        masters: config.masters.clone(),
    })?;
    tracing::info!(%address, dir = %store.path().display(), "serving daemon ready");

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
        .framework(framework)
        .framework_id_file(store.framework_id_file())
        .run(book.scheduler());
    tokio::pin!(driver);
    tokio::pin!(shutdown);
    let result = tokio::select! {
        done = &mut driver => done.map(|_| ()).map_err(|e| Error::Daemon(e.to_string())),
        _ = &mut shutdown => {
            tracing::info!("stopping; the replicas keep running until a daemon takes them back");
            if let Some(d) = book.driver() {
                d.stop();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut driver).await;
            }
            Ok(())
        }
    };
    store.clear_daemon(pid);
    result.map(|()| true)
}
