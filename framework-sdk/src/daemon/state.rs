//! The state directory of a framework daemon and the private files in it:
//! the lock, the log, the framework id file, `daemon.json` and the
//! framework's own JSON documents. The directory is 0700 and every file
//! 0600. Only file I/O lives here.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{DaemonError, DaemonInfo};

/// The state directory of one framework daemon: one cluster's desired
/// state, the framework id, the daemon's address, secret, lock and log.
///
/// ```
/// use mezz_sdk::daemon::StateDir;
///
/// let tmp = tempfile::tempdir()?;
/// let dir = StateDir::open(tmp.path().join("state"), "the daemon secret")?;
/// assert!(dir.log_file().ends_with("daemon.log"));
/// assert!(dir.daemon()?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

/// The default state directory of the daemons of framework `kind` for
/// `masters`: `$XDG_STATE_HOME/mezz/<kind>/<masters>`, else
/// `~/.local/state/mezz/<kind>/<masters>`. The master list becomes one
/// path component: addresses joined by `+`, every character but ASCII
/// letters, digits, `.`, `-` and `+` turned into `_`.
///
/// ```
/// let d = mezz_sdk::daemon::default_dir("jupyter", &["127.0.0.1:5050".to_string()]);
/// assert!(d.unwrap().ends_with("mezz/jupyter/127.0.0.1_5050"));
/// ```
pub fn default_dir(kind: &str, masters: &[String]) -> Result<PathBuf, DaemonError> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or(DaemonError::NoStateHome)?;
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
    Ok(base.join("mezz").join(kind).join(cluster))
}

fn io_error(path: &Path, action: &'static str, e: std::io::Error) -> DaemonError {
    DaemonError::Io {
        action,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The daemon lock of a state directory, held as long as this value.
#[derive(Debug)]
pub struct DaemonLock {
    _lock: nix::fcntl::Flock<File>,
}

impl StateDir {
    /// Opens the directory `dir`, creating it 0700 when missing. One that
    /// others can enter is refused rather than changed: it may be a
    /// directory of the user's own that is shared on purpose. `holds` says
    /// in that refusal what is at stake ("notebook tokens", "the daemon
    /// secret").
    pub fn open(dir: impl Into<PathBuf>, holds: &str) -> Result<StateDir, DaemonError> {
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
            return Err(DaemonError::OpenToOthers {
                path: dir,
                mode: mode & 0o777,
                holds: holds.to_string(),
            });
        }
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The framework id file, `framework-id` (see
    /// [`DriverBuilder::framework_id_file`](crate::DriverBuilder::framework_id_file)).
    pub fn framework_id_file(&self) -> PathBuf {
        self.dir.join("framework-id")
    }

    /// The daemon's log, `daemon.log`.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    fn daemon_file(&self) -> PathBuf {
        self.dir.join("daemon.json")
    }

    /// Opens the daemon log for appending (created 0600).
    pub fn open_log(&self) -> Result<File, DaemonError> {
        self.open_log_named("daemon.log")
    }

    /// Opens the log `name` of the directory for appending (created 0600):
    /// for a process of the framework's beside the daemon.
    pub fn open_log_named(&self, name: &str) -> Result<File, DaemonError> {
        let path = self.dir.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open", e))
    }

    /// Takes the daemon lock, `daemon.lock`: one daemon per state
    /// directory. `None` when another process holds it.
    pub fn lock(&self) -> Result<Option<DaemonLock>, DaemonError> {
        self.lock_named("daemon.lock")
    }

    /// Takes the lock file `name` of the directory: one process of a kind
    /// per directory, for a framework's processes beside the daemon.
    /// `None` when another process holds it.
    pub fn lock_named(&self, name: &str) -> Result<Option<DaemonLock>, DaemonError> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open", e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(DaemonLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(DaemonError::Io {
                action: "cannot lock",
                path,
                message: e.to_string(),
            }),
        }
    }

    /// The running daemon's address and secret, if one published them. A
    /// file that does not parse counts as none: a newer daemon rewrites it.
    pub fn daemon(&self) -> Result<Option<DaemonInfo>, DaemonError> {
        let path = self.daemon_file();
        Ok(read_private(&path)?.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Publishes the daemon's address and secret in `daemon.json`.
    pub fn set_daemon(&self, info: &DaemonInfo) -> Result<(), DaemonError> {
        let text = serde_json::to_string(info).map_err(|e| DaemonError::Encode {
            what: "the daemon file".into(),
            message: e.to_string(),
        })?;
        write_private(&self.daemon_file(), text.as_bytes())
    }

    /// Withdraws `daemon.json` if daemon `pid` wrote it (the daemon is
    /// ending); one a newer daemon wrote stays.
    pub fn clear_daemon(&self, pid: u32) {
        if self.daemon().ok().flatten().is_some_and(|d| d.pid == pid) {
            let _ = std::fs::remove_file(self.daemon_file());
        }
    }

    /// The private JSON document `file` of this directory, holding the
    /// framework's `what` ("notebooks", "services": said in its errors).
    ///
    /// ```
    /// use mezz_sdk::daemon::StateDir;
    ///
    /// let tmp = tempfile::tempdir()?;
    /// let dir = StateDir::open(tmp.path().join("state"), "the daemon secret")?;
    /// let names = dir.document::<Vec<String>>("names.json", "names");
    /// assert_eq!(names.read()?, None);
    /// names.write(&vec!["a".to_string()])?;
    /// assert_eq!(names.read()?, Some(vec!["a".to_string()]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn document<T>(&self, file: &str, what: &str) -> Document<T> {
        Document {
            path: self.dir.join(file),
            what: what.to_string(),
            _of: PhantomData,
        }
    }
}

/// A JSON document kept privately and durably in a [`StateDir`] (see
/// [`StateDir::document`]): written beside, synced and renamed over, 0600.
pub struct Document<T> {
    path: PathBuf,
    what: String,
    _of: PhantomData<fn() -> T>,
}

impl<T> Clone for Document<T> {
    fn clone(&self) -> Self {
        Document {
            path: self.path.clone(),
            what: self.what.clone(),
            _of: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Document<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("path", &self.path)
            .field("what", &self.what)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Document<T> {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document; `None` when it was never written. One that does not
    /// parse is an error that says to move it away: it is never replaced
    /// silently, which would lose what it holds.
    pub fn read(&self) -> Result<Option<T>, DaemonError> {
        let Some(text) = read_private(&self.path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DaemonError::Damaged {
                path: self.path.clone(),
                what: self.what.clone(),
                message: e.to_string(),
            })
    }

    /// Stores the document durably.
    pub fn write(&self, value: &T) -> Result<(), DaemonError> {
        let text = serde_json::to_string_pretty(value).map_err(|e| DaemonError::Encode {
            what: format!("the {}", self.what),
            message: e.to_string(),
        })?;
        write_private(&self.path, text.as_bytes())
    }
}

/// The text of the file at `path`; `None` when there is none.
pub fn read_private(path: &Path) -> Result<Option<String>, DaemonError> {
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

/// Writes `data` to `path`: beside it first, synced, renamed over, the
/// directory synced; a crash leaves the old file or the new one, never half
/// of one. Created 0600.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), DaemonError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path().join("s"), "notebook tokens").unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        let doc = dir.document::<Vec<u64>>("numbers.json", "numbers");
        assert_eq!(doc.read().unwrap(), None);
        doc.write(&vec![4, 5]).unwrap();
        assert_eq!(doc.read().unwrap(), Some(vec![4, 5]));
        assert_eq!(mode(doc.path()), 0o600);
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["numbers.json".to_string()]);

        let info = DaemonInfo {
            pid: 7,
            address: "127.0.0.1:1".into(),
            secret: "s".into(),
            masters: vec!["127.0.0.1:5050".into()],
        };
        dir.set_daemon(&info).unwrap();
        assert_eq!(dir.daemon().unwrap(), Some(info));
        assert_eq!(mode(&dir.path().join("daemon.json")), 0o600);
        // Another daemon's file stays; its own goes.
        dir.clear_daemon(8);
        assert!(dir.daemon().unwrap().is_some());
        dir.clear_daemon(7);
        assert_eq!(dir.daemon().unwrap(), None);

        drop(dir.open_log().unwrap());
        assert_eq!(mode(&dir.log_file()), 0o600);
    }

    #[test]
    fn a_damaged_document_is_refused_with_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path().join("s"), "x").unwrap();
        let doc = dir.document::<Vec<u64>>("notebooks.json", "notebooks");
        std::fs::write(doc.path(), "{").unwrap();
        let err = doc.read().unwrap_err().to_string();
        assert!(
            err.contains("notebooks.json is damaged")
                && err.contains("move it away to start with no notebooks"),
            "{err}"
        );
        // Still there: the user decides.
        assert_eq!(std::fs::read_to_string(doc.path()).unwrap(), "{");
    }

    #[test]
    fn a_shared_directory_is_refused_not_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = StateDir::open(&shared, "notebook tokens")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("open to others (mode 755)")
                && err.contains("it holds notebook tokens")
                && err.contains("chmod 700"),
            "{err}"
        );
        assert_eq!(mode(&shared), 0o755);
    }

    #[test]
    fn one_daemon_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path().join("s"), "x").unwrap();
        let first = dir.lock().unwrap();
        assert!(first.is_some());
        assert!(dir.lock().unwrap().is_none());
        // The same directory opened anew shares the lock file.
        let again = StateDir::open(dir.path(), "x").unwrap();
        assert!(again.lock().unwrap().is_none());
        // Another process's lock of the same directory is its own.
        let other = dir.lock_named("proxy.lock").unwrap();
        assert!(other.is_some());
        assert!(dir.lock_named("proxy.lock").unwrap().is_none());
        drop(first);
        assert!(dir.lock().unwrap().is_some());
    }

    #[test]
    fn the_default_dir_names_the_kind_and_the_masters() {
        let masters = vec!["10.0.0.1:5050".to_string(), "h/x:1".to_string()];
        let d = default_dir("serve", &masters).unwrap();
        assert!(
            d.ends_with("mezz/serve/10.0.0.1_5050+h_x_1"),
            "{}",
            d.display()
        );
    }
}
