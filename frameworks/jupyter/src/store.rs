//! The Jupyter framework's state directory (see [`mezz_sdk::daemon`]): the
//! notebooks (desired state, with their tokens) in `notebooks.json`, beside
//! the kit's framework id, daemon address and secret, lock and log. The
//! directory is 0700 and every file 0600: tokens and the secret are the
//! owner's alone.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use mezz_sdk::daemon::{DaemonInfo, Document, StateDir};

use crate::notebook::Notebook;
use crate::Error;

/// The framework's kind in the default state directory's path.
pub const KIND: &str = "jupyter";

/// What the state directory holds that others must not read (said when
/// one is open to them).
pub const HOLDS: &str = "notebook tokens";

/// The persisted notebooks and the serial counter.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Desired {
    /// The next incarnation number.
    pub next_serial: u64,
    /// Every notebook, by name order.
    pub notebooks: Vec<Notebook>,
}

/// Opens the state directory `dir` (see [`StateDir::open`]).
pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, Error> {
    Ok(StateDir::open(dir, HOLDS)?)
}

/// The default state directory for `masters`:
/// `$XDG_STATE_HOME/mezz/jupyter/<masters>`, else
/// `~/.local/state/mezz/jupyter/<masters>`.
///
/// ```
/// let d = mezz_jupyter::store::default_dir(&["127.0.0.1:5050".to_string()]);
/// assert!(d.unwrap().ends_with("mezz/jupyter/127.0.0.1_5050"));
/// ```
pub fn default_dir(masters: &[String]) -> Result<PathBuf, Error> {
    Ok(mezz_sdk::daemon::default_dir(KIND, masters)?)
}

/// The notebooks file, `notebooks.json`, of `dir`.
pub fn notebooks(dir: &StateDir) -> Document<Desired> {
    dir.document("notebooks.json", "notebooks")
}

/// 32 random bytes as hex: notebook tokens.
pub fn random_hex() -> Result<String, Error> {
    Ok(mezz_sdk::daemon::random_hex()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notebooks_keep_their_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(tmp.path().join("s")).unwrap();
        let file = notebooks(&dir);
        assert_eq!(file.read().unwrap(), None);
        let d = Desired {
            next_serial: 4,
            notebooks: vec![],
        };
        file.write(&d).unwrap();
        assert_eq!(file.read().unwrap(), Some(d));
        assert_eq!(file.path(), dir.path().join("notebooks.json"));
        std::fs::write(file.path(), "{").unwrap();
        let err = file.read().unwrap_err().to_string();
        assert!(
            err.contains("move it away to start with no notebooks"),
            "{err}"
        );
    }
}
