//! The state directory: the services (desired state), the framework id,
//! the daemon's address and secret, its lock and its log. The directory is
//! 0700 and every file 0600: the secret is the owner's alone. Only file I/O lives here.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::service::Service;
use crate::Error;

/// Where the daemon's local API listens and how to prove one may use it.
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

/// The persisted services and the serial counter.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Desired {
    /// The next incarnation number.
    pub next_serial: u64,
    /// Every service, by name order.
    pub services: Vec<Service>,
}

/// The state directory of one cluster's services.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
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
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::State(
                        "neither $XDG_STATE_HOME nor $HOME is set; pass --state-dir".into(),
                    )
                })?;
            PathBuf::from(home).join(".local/state")
        }
    };
    let cluster: String = masters
        .join("+")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(base.join("mezz/serve").join(cluster))
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::State(format!("{what} {}: {e}", path.display()))
}

impl StateDir {
    /// Opens the directory `dir`, creating it 0700 when missing. One that
    /// others can enter is refused rather than changed: it may be a
    /// directory of the user's own that is shared on purpose.
    pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, Error> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error(&dir, "cannot create", e))?;
        let mode = std::fs::metadata(&dir)
            .map_err(|e| io_error(&dir, "cannot read", e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::State(format!(
                "the state directory {} is open to others (mode {:o}); it holds the daemon secret: `chmod 700` it or pick another --state-dir",
                dir.display(),
                mode & 0o777
            )));
        }
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The framework id file (see `DriverBuilder::framework_id_file`).
    pub fn framework_id_file(&self) -> PathBuf {
        self.dir.join("framework-id")
    }

    /// The daemon's log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    fn services_file(&self) -> PathBuf {
        self.dir.join("services.json")
    }

    fn daemon_file(&self) -> PathBuf {
        self.dir.join("daemon.json")
    }

    /// Opens the daemon log for appending (0600).
    pub fn open_log(&self) -> Result<File, Error> {
        self.open_named_log("daemon.log")
    }

    /// Opens the log `name` of the directory for appending (0600).
    pub fn open_named_log(&self, name: &str) -> Result<File, Error> {
        let path = self.dir.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open", e))
    }

    /// Takes the daemon lock: one daemon per state directory. `None` when
    /// another process holds it. The lock lasts as long as the value.
    pub fn lock(&self) -> Result<Option<nix::fcntl::Flock<File>>, Error> {
        self.lock_named("daemon.lock")
    }

    /// Takes the lock file `name` of the directory; `None` when another
    /// process holds it.
    pub fn lock_named(&self, name: &str) -> Result<Option<nix::fcntl::Flock<File>>, Error> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open", e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::State(format!("cannot lock {}: {e}", path.display()))),
        }
    }

    /// The services; empty when none were ever stored.
    pub fn load(&self) -> Result<Desired, Error> {
        let path = self.services_file();
        match read_private(&path)? {
            None => Ok(Desired::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                Error::State(format!(
                    "{} is damaged ({e}); move it away to start with no services",
                    path.display()
                ))
            }),
        }
    }

    /// Stores the services durably.
    pub fn store(&self, desired: &Desired) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(desired)
            .map_err(|e| Error::State(format!("cannot encode the services: {e}")))?;
        write_private(&self.services_file(), text.as_bytes())
    }

    /// The running daemon's address and secret, if one wrote them.
    pub fn daemon(&self) -> Result<Option<DaemonInfo>, Error> {
        let path = self.daemon_file();
        Ok(read_private(&path)?.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Publishes the daemon's address and secret.
    pub fn set_daemon(&self, info: &DaemonInfo) -> Result<(), Error> {
        let text = serde_json::to_string(info)
            .map_err(|e| Error::State(format!("cannot encode the daemon file: {e}")))?;
        write_private(&self.daemon_file(), text.as_bytes())
    }

    /// The proxy process's admin address and secret, if one wrote them.
    pub fn proxy(&self) -> Result<Option<crate::relay::ProxyInfo>, Error> {
        let path = self.dir.join("proxy.json");
        Ok(read_private(&path)?.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Publishes the proxy process's admin address and secret.
    pub fn set_proxy(&self, info: &crate::relay::ProxyInfo) -> Result<(), Error> {
        let text = serde_json::to_string(info)
            .map_err(|e| Error::State(format!("cannot encode the proxy file: {e}")))?;
        write_private(&self.dir.join("proxy.json"), text.as_bytes())
    }

    /// Withdraws the proxy file (the proxy process is ending).
    pub fn clear_proxy(&self, pid: u32) {
        if self.proxy().ok().flatten().is_some_and(|p| p.pid == pid) {
            let _ = std::fs::remove_file(self.dir.join("proxy.json"));
        }
    }

    /// Withdraws the daemon file (the daemon is ending).
    pub fn clear_daemon(&self, pid: u32) {
        if self.daemon().ok().flatten().is_some_and(|d| d.pid == pid) {
            let _ = std::fs::remove_file(self.daemon_file());
        }
    }
}

fn read_private(path: &Path) -> Result<Option<String>, Error> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_string(&mut text)
            .map_err(|e| io_error(path, "cannot read", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "cannot read", e)),
    };
    Ok(Some(text))
}

/// Writes beside, syncs, renames over: a crash leaves the old file or the
/// new one, never half of one. Created 0600.
fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir).and_then(|d| d.sync_all())
    };
    write().map_err(|e| io_error(path, "cannot write", e))
}

/// 32 random bytes as hex: the API secret.
pub fn random_hex() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::State(format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path().join("s")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(dir.load().unwrap(), Desired::default());
        let d = Desired {
            next_serial: 4,
            services: vec![],
        };
        dir.store(&d).unwrap();
        assert_eq!(dir.load().unwrap(), d);
        assert_eq!(mode(&dir.path().join("services.json")), 0o600);
        std::fs::write(dir.path().join("services.json"), "{").unwrap();
        assert!(dir.load().unwrap_err().to_string().contains("move it away"));
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = StateDir::open(&shared).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
    }

    #[test]
    fn one_daemon_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path().join("s")).unwrap();
        let first = dir.lock().unwrap();
        assert!(first.is_some());
        assert!(dir.lock().unwrap().is_none());
        drop(first);
        assert!(dir.lock().unwrap().is_some());
    }

    #[test]
    fn secrets_are_256_bits() {
        let a = random_hex().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_hex().unwrap());
    }
}
