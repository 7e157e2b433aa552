//! The serving framework's state directory (see [`mezz_sdk::daemon`]): the
//! services (desired state) in `services.json`, and the proxy process's
//! admin address and secret in `proxy.json` with its lock and log, beside
//! the kit's framework id, daemon address and secret, lock and log. The
//! directory is 0700 and every file 0600: the secrets are the owner's
//! alone. Only file I/O lives here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use mezz_sdk::daemon::{DaemonInfo, Document, StateDir};

use crate::relay::ProxyInfo;
use crate::service::Service;
use crate::Error;

/// The framework's kind in the default state directory's path.
pub const KIND: &str = "serve";

/// What the state directory holds that others must not read (said when
/// one is open to them).
pub const HOLDS: &str = "the daemon secret";

/// The proxy process's lock file: one proxy process per directory.
pub const PROXY_LOCK: &str = "proxy.lock";

/// The proxy process's log.
pub const PROXY_LOG: &str = "proxy.log";

const PROXY_FILE: &str = "proxy.json";

/// The persisted services and the serial counter.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Desired {
    /// The next incarnation number.
    pub next_serial: u64,
    /// Every service, by name order.
    pub services: Vec<Service>,
}

impl From<mezz_sdk::daemon::DaemonError> for Error {
    fn from(e: mezz_sdk::daemon::DaemonError) -> Error {
        Error::State(e.to_string())
    }
}

/// Opens the state directory `dir` (see [`StateDir::open`]).
pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, Error> {
    Ok(StateDir::open(dir, HOLDS)?)
}

/// The default state directory for `masters`:
/// `$XDG_STATE_HOME/mezz/serve/<masters>`, else
/// `~/.local/state/mezz/serve/<masters>`.
///
/// ```
/// let d = mezz_serving::store::default_dir(&["127.0.0.1:5050".to_string()]);
/// assert!(d.unwrap().ends_with("mezz/serve/127.0.0.1_5050"));
/// ```
pub fn default_dir(masters: &[String]) -> Result<PathBuf, Error> {
    Ok(mezz_sdk::daemon::default_dir(KIND, masters)?)
}

/// The services file, `services.json`, of `dir`.
pub fn services(dir: &StateDir) -> Document<Desired> {
    dir.document("services.json", "services")
}

/// The proxy process's admin address and secret, if one published them. A
/// file that does not parse counts as none: a newer proxy rewrites it.
pub fn proxy(dir: &StateDir) -> Result<Option<ProxyInfo>, Error> {
    let text = mezz_sdk::daemon::read_private(&dir.path().join(PROXY_FILE))?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Publishes the proxy process's admin address and secret.
pub fn set_proxy(dir: &StateDir, info: &ProxyInfo) -> Result<(), Error> {
    let text = serde_json::to_string(info)
        .map_err(|e| Error::State(format!("cannot encode the proxy file: {e}")))?;
    Ok(mezz_sdk::daemon::write_private(
        &dir.path().join(PROXY_FILE),
        text.as_bytes(),
    )?)
}

/// Withdraws the proxy file if proxy process `pid` wrote it.
pub fn clear_proxy(dir: &StateDir, pid: u32) {
    if proxy(dir).ok().flatten().is_some_and(|p| p.pid == pid) {
        let _ = std::fs::remove_file(dir.path().join(PROXY_FILE));
    }
}

/// 32 random bytes as hex: a secret.
pub fn random_hex() -> Result<String, Error> {
    Ok(mezz_sdk::daemon::random_hex()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_proxy_keep_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(tmp.path().join("s")).unwrap();
        assert_eq!(services(&dir).read().unwrap(), None);
        let d = Desired {
            next_serial: 4,
            services: vec![],
        };
        services(&dir).write(&d).unwrap();
        assert_eq!(services(&dir).read().unwrap(), Some(d));
        assert!(dir.path().join("services.json").exists());
        std::fs::write(dir.path().join("services.json"), "{").unwrap();
        let err = services(&dir).read().unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");

        assert_eq!(proxy(&dir).unwrap(), None);
        let info = ProxyInfo {
            pid: 7,
            address: "127.0.0.1:9".into(),
            secret: "s".into(),
        };
        set_proxy(&dir, &info).unwrap();
        assert_eq!(proxy(&dir).unwrap(), Some(info));
        clear_proxy(&dir, 8);
        assert!(proxy(&dir).unwrap().is_some(), "another pid's file stays");
        clear_proxy(&dir, 7);
        assert_eq!(proxy(&dir).unwrap(), None);
    }
}
