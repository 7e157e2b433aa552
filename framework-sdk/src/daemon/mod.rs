//! A kit for long-lived framework daemons: the process that owns one
//! cluster's desired state for a framework, keeps it in a private state
//! directory, subscribes with a persisted framework id (so a restarted
//! daemon takes its running tasks back), and serves a small local API on
//! 127.0.0.1 to the framework's command-line client.
//!
//! What the kit holds, and what stays the framework's own:
//!
//! - [`StateDir`]: the directory (0700; one open to others is refused),
//!   its lock `daemon.lock` (one daemon per directory), its log
//!   `daemon.log` (0600, appended), the framework id file `framework-id`,
//!   and `daemon.json` ([`DaemonInfo`]: where the API listens and its
//!   secret). [`default_dir`] names the directory of a cluster.
//! - [`Document`]: the framework's own JSON files in it (its desired
//!   state), written atomically and 0600, read back or `None`, and a
//!   damaged one refused with what to do rather than overwritten.
//! - [`random_hex`] draws secrets and tokens; [`bearer_matches`] checks an
//!   API request's secret in constant time; [`LocalClient`] is the command
//!   line's side of the API, and [`ErrorBody`] the shape of its errors.
//! - [`Daemon`]: the run skeleton. [`Daemon::start`] sets the file mask,
//!   opens the directory and takes the lock; [`Daemon::listen`] binds the
//!   API on `127.0.0.1:0` and draws its secret; the framework serves its
//!   API and calls [`Daemon::publish`]; [`Daemon::run_driver`] runs the
//!   SDK driver with the persisted framework id until shutdown, stops it
//!   within 5 s, and withdraws `daemon.json`.
//!
//! ```no_run
//! use mezz_sdk::daemon::{Daemon, DaemonError};
//! use mezz_sdk::{proto, DriverBuilder, Scheduler};
//!
//! # struct Mine;
//! # impl Scheduler for Mine {
//! #     fn subscribed(&mut self, _: &mezz_sdk::Driver, _: &mezz_sdk::FrameworkId, _: bool) {}
//! #     fn offers(&mut self, _: &mezz_sdk::Driver, _: Vec<proto::Offer>) {}
//! #     fn status_update(&mut self, _: &mezz_sdk::Driver, _: &proto::TaskStatus) {}
//! # }
//! # async fn serve_api(_: tokio::net::TcpListener, _secret: String) {}
//! async fn run(masters: Vec<String>, dir: std::path::PathBuf) -> Result<bool, Box<dyn std::error::Error>> {
//!     let Some(daemon) = Daemon::start(dir, "the daemon secret")? else {
//!         return Ok(false); // another daemon serves this directory
//!     };
//!     let (listener, info) = daemon.listen(&masters).await?;
//!     tokio::spawn(serve_api(listener, info.secret.clone()));
//!     daemon.publish(&info)?;
//!     let framework = proto::FrameworkInfo {
//!         name: "mine".into(),
//!         failover_timeout_secs: 3600.0,
//!         ..Default::default()
//!     };
//!     let builder = DriverBuilder::new().masters(masters).framework(framework);
//!     let shutdown = async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     };
//!     daemon.run_driver(builder, Mine, || None, shutdown).await?;
//!     Ok(true)
//! }
//! ```

mod client;
mod state;

use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Driver, DriverBuilder, Scheduler, SdkError};

pub use client::{decode, CallError, ErrorBody, LocalClient};
pub use state::{default_dir, read_private, write_private, DaemonLock, Document, StateDir};

/// Why a state directory or a daemon's local API cannot be used; each text
/// names the file and what to do. Frameworks wrap it in their own error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DaemonError {
    /// A file or directory cannot be created, read, written or locked.
    #[error("{action} {}: {message}", path.display())]
    Io {
        /// What failed: "cannot create", "cannot read", …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        message: String,
    },
    /// The state directory can be entered by others.
    #[error(
        "the state directory {} is open to others (mode {mode:o}); it holds {holds}: `chmod 700` it or pick another --state-dir",
        path.display()
    )]
    OpenToOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What it holds that others must not read.
        holds: String,
    },
    /// A document does not parse.
    #[error("{} is damaged ({message}); move it away to start with no {what}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What it holds ("notebooks").
        what: String,
        /// The parser's error.
        message: String,
    },
    /// A document cannot be encoded.
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encoder's error.
        message: String,
    },
    /// No default state directory can be named.
    #[error("neither $XDG_STATE_HOME nor $HOME is set; pass --state-dir")]
    NoStateHome,
    /// The system's randomness cannot be read.
    #[error("cannot read /dev/urandom: {0}")]
    Random(String),
    /// The local API cannot listen.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(String),
}

/// Where a daemon's local API listens and how to prove one may use it: the
/// content of `daemon.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DaemonInfo {
    /// The daemon's process id.
    pub pid: u32,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The bearer secret every API request carries.
    pub secret: String,
    /// The masters the daemon talks to.
    pub masters: Vec<String>,
}

impl DaemonInfo {
    /// The `Authorization` header value of a request to this daemon.
    ///
    /// ```
    /// # use mezz_sdk::daemon::{bearer_matches, DaemonInfo};
    /// let info = DaemonInfo { pid: 1, address: "127.0.0.1:1".into(), secret: "s3".into(), masters: vec![] };
    /// assert!(bearer_matches(Some(&info.authorization()), "s3"));
    /// ```
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.secret)
    }
}

/// 32 random bytes as hex (256 bits): API secrets and tokens.
///
/// ```
/// assert_eq!(mezz_sdk::daemon::random_hex().unwrap().len(), 64);
/// ```
pub fn random_hex() -> Result<String, DaemonError> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| DaemonError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether an `Authorization` header value (`None` when there is none) is
/// `Bearer SECRET` for `secret`. Equal lengths and every byte compared: no
/// early exit whose timing tells how much of a guess was right.
///
/// ```
/// use mezz_sdk::daemon::bearer_matches;
/// assert!(bearer_matches(Some("Bearer abc"), "abc"));
/// assert!(!bearer_matches(Some("Bearer abd"), "abc"));
/// assert!(!bearer_matches(None, "abc"));
/// ```
pub fn bearer_matches(authorization: Option<&str>, secret: &str) -> bool {
    let given = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// How long [`Daemon::run_driver`] waits for a stopped driver to finish
/// sending what it was asked before it gives up on it.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running framework daemon that holds its state directory's lock; see
/// the [module](self) for the order of its steps.
#[derive(Debug)]
pub struct Daemon {
    state: StateDir,
    pid: u32,
    _lock: DaemonLock,
}

impl Daemon {
    /// Makes every file this process writes the owner's alone (umask 077,
    /// the framework id file the driver writes included: call it only in a
    /// process that is the daemon), opens the state directory `dir` (see
    /// [`StateDir::open`] for `holds`) and takes its lock. `None` when
    /// another daemon holds it.
    pub fn start(dir: impl Into<PathBuf>, holds: &str) -> Result<Option<Daemon>, DaemonError> {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let state = StateDir::open(dir, holds)?;
        let Some(lock) = state.lock()? else {
            tracing::info!(dir = %state.path().display(), "another daemon serves this state directory");
            return Ok(None);
        };
        Ok(Some(Daemon {
            state,
            pid: std::process::id(),
            _lock: lock,
        }))
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Binds the local API on a free port of 127.0.0.1 and draws its
    /// secret. Serve the API on the listener, then [`publish`](Self::publish)
    /// the info.
    pub async fn listen(
        &self,
        masters: &[String],
    ) -> Result<(tokio::net::TcpListener, DaemonInfo), DaemonError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DaemonError::Listen(e.to_string()))?;
        let address = listener
            .local_addr()
            .map_err(|e| DaemonError::Listen(format!("cannot read the API address: {e}")))?
            .to_string();
        let info = DaemonInfo {
            pid: self.pid,
            address,
            secret: random_hex()?,
            masters: masters.to_vec(),
        };
        Ok((listener, info))
    }

    /// Publishes `daemon.json`: from now on clients find the API.
    pub fn publish(&self, info: &DaemonInfo) -> Result<(), DaemonError> {
        self.state.set_daemon(info)
    }

    /// Runs `scheduler` with `driver` (masters and framework set; the
    /// framework id file is the state directory's) until the driver ends or
    /// `shutdown` resolves. On shutdown the driver that `stop` hands back
    /// (the one the scheduler was given, once subscribed) is stopped, so
    /// the framework stays registered for its failover timeout and the next
    /// daemon takes its tasks back; it gets [`STOP_GRACE`] to finish. Then
    /// `daemon.json` is withdrawn and the lock released. The driver's error
    /// is returned as it is.
    pub async fn run_driver<S: Scheduler>(
        self,
        driver: DriverBuilder,
        scheduler: S,
        stop: impl FnOnce() -> Option<Driver>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SdkError> {
        let run = driver
            .framework_id_file(self.state.framework_id_file())
            .run(scheduler);
        tokio::pin!(run);
        tokio::pin!(shutdown);
        let result = tokio::select! {
            done = &mut run => done.map(|_| ()),
            _ = &mut shutdown => {
                if let Some(d) = stop() {
                    d.stop();
                    let _ = tokio::time::timeout(STOP_GRACE, &mut run).await;
                }
                Ok(())
            }
        };
        self.state.clear_daemon(self.pid);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bits() {
        let a = random_hex().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex().unwrap());
    }

    #[test]
    fn only_the_exact_bearer_secret_matches() {
        let s = "ab".repeat(32);
        assert!(bearer_matches(Some(&format!("Bearer {s}")), &s));
        assert!(!bearer_matches(Some(&s), &s), "no scheme");
        assert!(!bearer_matches(Some(&format!("Bearer {s}x")), &s));
        assert!(!bearer_matches(Some(&format!("Bearer {}", &s[1..])), &s));
        assert!(!bearer_matches(Some("Bearer "), &s));
        assert!(!bearer_matches(None, &s));
    }

    #[test]
    fn daemon_json_keeps_its_field_names() {
        let info = DaemonInfo {
            pid: 3,
            address: "127.0.0.1:9".into(),
            secret: "s".into(),
            masters: vec!["m:1".into()],
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"pid":3,"address":"127.0.0.1:9","secret":"s","masters":["m:1"]}"#
        );
    }

    struct Idle;
    impl Scheduler for Idle {
        fn subscribed(&mut self, _: &Driver, _: &crate::FrameworkId, _: bool) {}
        fn offers(&mut self, _: &Driver, _: Vec<crate::proto::Offer>) {}
        fn status_update(&mut self, _: &Driver, _: &crate::proto::TaskStatus) {}
    }

    #[tokio::test]
    async fn a_daemon_holds_its_directory_and_withdraws_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let daemon = Daemon::start(&dir, "x").unwrap().expect("the lock is free");
        assert!(
            Daemon::start(&dir, "x").unwrap().is_none(),
            "a second daemon must not serve the same directory"
        );
        let (listener, info) = daemon.listen(&["127.0.0.1:1".into()]).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().to_string(), info.address);
        assert!(info.address.starts_with("127.0.0.1:"));
        assert_eq!(info.pid, std::process::id());
        daemon.publish(&info).unwrap();
        assert_eq!(daemon.state().daemon().unwrap(), Some(info));
        // No masters: the driver ends at once with its configuration error.
        let err = daemon
            .run_driver(DriverBuilder::new(), Idle, || None, std::future::pending())
            .await
            .unwrap_err();
        assert!(matches!(err, SdkError::Config(_)), "{err}");
        let state = StateDir::open(&dir, "x").unwrap();
        assert_eq!(state.daemon().unwrap(), None);
        assert!(
            Daemon::start(&dir, "x").unwrap().is_some(),
            "the lock is released"
        );
    }
}
