//! The audit log: every operator action, every kill, the first use of a
//! token from a new client address, and every denial, as one JSON object
//! per line, appended to `--audit-log FILE` and kept (the latest
//! [`RECENT`]) in memory for `GET /api/audit`. An entry names tokens by
//! their id only: a secret never reaches it.
//!
//! The caller passes the time in; only the file append is I/O.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// How many entries are kept in memory.
pub const RECENT: usize = 1000;
/// How many (token, address) pairs are remembered as seen; past it the
/// oldest are forgotten (and logged again when seen again).
const SEEN: usize = 10_000;

/// The audit log. See the module docs.
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<(PathBuf, Mutex<File>)>,
    recent: Mutex<VecDeque<String>>,
    seen: Mutex<Seen>,
}

/// (token id, address) pairs seen, and the order they came in.
type Pair = (String, String);
type Seen = (HashSet<Pair>, VecDeque<Pair>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A writer that panicked left whole entries behind: keep auditing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Audit {
    /// An audit log kept in memory only.
    pub fn in_memory() -> Audit {
        Audit::default()
    }

    /// An audit log that also appends to `path` (created mode 0600 when
    /// missing, its directory too).
    pub fn to_file(path: &Path) -> Result<Audit, String> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("--audit-log: cannot create {}: {e}", dir.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                format!(
                    "--audit-log: cannot open {} for appending: {e}",
                    path.display()
                )
            })?;
        Ok(Audit {
            file: Some((path.to_path_buf(), Mutex::new(f))),
            ..Audit::default()
        })
    }

    /// Records `event` by `principal` at `now` (Unix seconds) with
    /// `fields` (an object; never give it a secret).
    pub fn record(&self, now: f64, event: &str, principal: &str, fields: Value) {
        let mut entry = Map::new();
        entry.insert("time".into(), json!(now));
        entry.insert("event".into(), json!(event));
        entry.insert("principal".into(), json!(principal));
        if let Value::Object(f) = fields {
            entry.extend(f);
        }
        let line = Value::Object(entry).to_string();
        if let Some((path, f)) = &self.file {
            let mut f = lock(f);
            // One write per entry, so that a reader never sees half a line.
            if let Err(e) = f.write_all(format!("{line}\n").as_bytes()) {
                tracing::error!(path = %path.display(), "cannot append to the audit log: {e}");
            }
        }
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(line);
    }

    /// Records the use of token `token_id` by `principal` from `address`
    /// the first time that pair is seen.
    pub fn token_used(&self, now: f64, token_id: &str, principal: &str, address: &str) {
        let key = (token_id.to_string(), address.to_string());
        {
            let mut seen = lock(&self.seen);
            if seen.0.contains(&key) {
                return;
            }
            if seen.1.len() == SEEN {
                if let Some(old) = seen.1.pop_front() {
                    seen.0.remove(&old);
                }
            }
            seen.0.insert(key.clone());
            seen.1.push_back(key);
        }
        self.record(
            now,
            "token_first_use",
            principal,
            json!({"token_id": token_id, "address": address}),
        );
    }

    /// The latest `limit` entries (all kept when 0), oldest first.
    pub fn recent(&self, limit: usize) -> Vec<String> {
        let recent = lock(&self.recent);
        let skip = if limit == 0 {
            0
        } else {
            recent.len().saturating_sub(limit)
        };
        recent.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_to_the_file_and_memory_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let a = Audit::to_file(&path).unwrap();
        a.record(1.0, "set_quota", "alice", json!({"role": "eng"}));
        a.token_used(2.0, "tok1", "alice", "127.0.0.1");
        a.token_used(3.0, "tok1", "alice", "127.0.0.1");
        a.token_used(4.0, "tok1", "alice", "127.0.0.2");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["event"], "set_quota");
        assert_eq!(lines[0]["role"], "eng");
        assert_eq!(lines[1]["address"], "127.0.0.1");
        assert_eq!(lines[2]["address"], "127.0.0.2");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the audit log is private: {mode:o}");
        assert_eq!(a.recent(0).len(), 3);
        assert_eq!(a.recent(1), vec![text.lines().last().unwrap().to_string()]);

        let m = Audit::in_memory();
        for i in 0..RECENT + 5 {
            m.record(i as f64, "kill", "p", json!({}));
        }
        let r = m.recent(0);
        assert_eq!(r.len(), RECENT);
        assert!(r[0].contains("\"time\":5.0"), "{}", r[0]);
    }
}
