//! The agent's durable memory, in sled at `<work_dir>/meta/checkpoint`: its
//! id, every task run it has not yet forgotten, and the status updates the
//! master has not acknowledged, in order. Beside it, in
//! `<work_dir>/meta/secret` (mode 0600), the secret that proves the agent's
//! identity to the masters. Records are protobuf-encoded so
//! fields can be added later the same way as on the wire. This module knows
//! nothing of processes or the network; callers `flush` before they
//! acknowledge or send anything that must survive a crash.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mezz_proto::v1::{FrameworkInfo, TaskInfo, TaskStatus};
use prost::Message;

use crate::AgentError;

/// One task run as checkpointed: enough to re-attach to it or report how it
/// ended after an agent restart.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskRecord {
    /// The framework the task belongs to.
    #[prost(message, optional, tag = "1")]
    pub framework: Option<FrameworkInfo>,
    /// The task as launched.
    #[prost(message, optional, tag = "2")]
    pub task: Option<TaskInfo>,
    /// The run's sandbox directory.
    #[prost(string, tag = "3")]
    pub sandbox: String,
    /// Pid of the task wrapper (`<launcher> __launch`).
    #[prost(uint32, optional, tag = "4")]
    pub wrapper_pid: Option<u32>,
    /// Start time of the wrapper (field 22 of /proc/PID/stat), so a reused
    /// pid is not mistaken for it.
    #[prost(uint64, optional, tag = "5")]
    pub wrapper_start_time: Option<u64>,
    /// Process group of the command, once the wrapper reported it.
    #[prost(int32, optional, tag = "6")]
    pub child_pgid: Option<i32>,
    /// The latest status; STAGING until the first update.
    #[prost(message, optional, tag = "7")]
    pub latest_status: Option<TaskStatus>,
    /// A kill was asked for, so a death by signal is TASK_KILLED.
    #[prost(bool, tag = "8")]
    pub kill_requested: bool,
    /// Grace period of the requested kill, in seconds.
    #[prost(double, optional, tag = "9")]
    pub kill_grace_secs: Option<f64>,
    /// The run's cgroup (relative to the hierarchies), so a recovered task's
    /// cgroup is cleaned up when it ends.
    #[prost(string, optional, tag = "10")]
    pub cgroup: Option<String>,
    /// Why the agent itself asked for the kill (a `TaskReason`, e.g. a
    /// failed health check); unset for kills the master asked for.
    #[prost(int32, optional, tag = "11")]
    pub kill_reason: Option<i32>,
    /// The message of the agent's own kill, for the terminal update.
    #[prost(string, optional, tag = "12")]
    pub kill_message: Option<String>,
    /// When the agent took the launch, seconds since the Unix epoch (told
    /// to masters when it registers again).
    #[prost(double, optional, tag = "13")]
    pub launched_at: Option<f64>,
}

impl TaskRecord {
    /// `(framework_id, task_id)`, or `None` for a record missing either.
    pub fn key(&self) -> Option<(String, String)> {
        let fw = self.framework.as_ref()?.id.clone();
        let task = self.task.as_ref()?.task_id.clone();
        (!fw.is_empty() && !task.is_empty()).then_some((fw, task))
    }
}

const AGENT_ID: &[u8] = b"agent_id";
/// The agent's secret, beside the checkpoint database.
const SECRET_FILE: &str = "secret";
/// Random bytes in a secret (sent hex-encoded).
const SECRET_BYTES: usize = 32;

/// Handle on the checkpoint database.
pub struct Checkpoint {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    tasks: sled::Tree,
    updates: sled::Tree,
    next_seq: AtomicU64,
    /// One flush at a time: sled 0.34's `flush_async` runs on its own small
    /// thread pool, and many concurrent flushes (a burst of launches) can
    /// fill the pool with flushes that wait on each other forever.
    flush_lock: tokio::sync::Mutex<()>,
    /// Group commit: every write bumps `written` once it is in sled; a
    /// flush that read `written` = N before it started makes writes 1..=N
    /// durable and then raises `durable` to N. A caller whose writes are
    /// all counted in `durable` needs no flush of its own, so a burst of
    /// launches and exits shares a few fsyncs instead of one each.
    written: AtomicU64,
    durable: AtomicU64,
    fsyncs: AtomicU64,
}

fn task_key(framework_id: &str, task_id: &str) -> Vec<u8> {
    // Ids are validated (no '/'), so the separator is unambiguous.
    format!("{framework_id}/{task_id}").into_bytes()
}

impl Checkpoint {
    /// Opens (or creates) the checkpoint at `path`.
    pub fn open(path: &Path) -> Result<Self, AgentError> {
        let err = |e: sled::Error| AgentError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| match is_lock_held(&e) {
                true => AgentError::CheckpointLocked {
                    path: path.to_path_buf(),
                },
                false => err(e),
            })?;
        let meta = db.open_tree("meta").map_err(err)?;
        let tasks = db.open_tree("tasks").map_err(err)?;
        let updates = db.open_tree("updates").map_err(err)?;
        let next_seq = match updates.last().map_err(err)? {
            Some((k, _)) => seq_of(&k).map_or(0, |s| s + 1),
            None => 0,
        };
        Ok(Checkpoint {
            path: path.to_path_buf(),
            db,
            meta,
            tasks,
            updates,
            next_seq: AtomicU64::new(next_seq),
            flush_lock: tokio::sync::Mutex::new(()),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
        })
    }

    /// Where the database lives (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The agent id chosen on the first start, if any.
    pub fn agent_id(&self) -> Option<String> {
        match self.meta.get(AGENT_ID) {
            Ok(Some(v)) => match String::from_utf8(v.to_vec()) {
                Ok(id) if !id.is_empty() => Some(id),
                _ => {
                    tracing::warn!(
                        "checkpoint: the stored agent id is not valid text; choosing a new one"
                    );
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("checkpoint: cannot read the agent id: {e}");
                None
            }
        }
    }

    /// Stores the agent id (durably).
    pub fn set_agent_id(&self, id: &str) -> sled::Result<()> {
        self.meta.insert(AGENT_ID, id.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The agent's secret: made from 256 bits of the OS's random source on
    /// the first start and written (mode 0600, fsynced, then renamed into
    /// place) before the agent ever registers, so that a crash can never
    /// leave a master holding a secret the agent lost. The masters pin the
    /// first secret an id presents and refuse that id without it.
    pub fn secret(&self) -> Result<String, AgentError> {
        let path = self.path.with_file_name(SECRET_FILE);
        let fail = |message: String| AgentError::Checkpoint {
            path: path.clone(),
            message,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let secret = text.trim();
                if secret.len() != 2 * SECRET_BYTES
                    || !secret.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(fail(format!(
                        "the agent secret is not {} hex digits; the masters will refuse this \
                         agent's id without its secret: restore the file, or start the agent \
                         with an empty --work-dir to join as a new agent",
                        2 * SECRET_BYTES
                    )));
                }
                restrict_to_owner(&path).map_err(|e| fail(e.to_string()))?;
                Ok(secret.to_ascii_lowercase())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_new_secret(&path).map_err(|e| fail(format!("cannot write: {e}")))
            }
            Err(e) => Err(fail(format!("cannot read: {e}"))),
        }
    }

    /// Every task run on record; corrupt records are logged and skipped.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        let mut out = Vec::new();
        for item in self.tasks.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::warn!("checkpoint: cannot read a task record: {e}");
                    continue;
                }
            };
            let name = String::from_utf8_lossy(&k).into_owned();
            match TaskRecord::decode(v.as_ref()) {
                Ok(rec) if rec.key().is_some() => out.push(rec),
                Ok(_) => tracing::warn!("checkpoint: task record '{name}' lacks its ids; skipped"),
                Err(e) => {
                    tracing::warn!("checkpoint: task record '{name}' is corrupt ({e}); skipped")
                }
            }
        }
        out
    }

    /// Writes (replaces) a task record. Not durable until [`Self::flush`].
    pub fn put_task(&self, rec: &TaskRecord) -> sled::Result<()> {
        if let Some((fw, task)) = rec.key() {
            self.tasks
                .insert(task_key(&fw, &task), rec.encode_to_vec())?;
            self.wrote();
        }
        Ok(())
    }

    /// Forgets a task run.
    pub fn remove_task(&self, framework_id: &str, task_id: &str) -> sled::Result<()> {
        self.tasks.remove(task_key(framework_id, task_id))?;
        self.wrote();
        Ok(())
    }

    /// Unacknowledged updates in the order they were produced, with their
    /// sequence numbers; corrupt ones are logged and skipped.
    pub fn updates(&self) -> Vec<(u64, TaskStatus)> {
        let mut out = Vec::new();
        for item in self.updates.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::warn!("checkpoint: cannot read a status update: {e}");
                    continue;
                }
            };
            match (seq_of(&k), TaskStatus::decode(v.as_ref())) {
                (Some(seq), Ok(st)) => out.push((seq, st)),
                _ => tracing::warn!("checkpoint: a status update record is corrupt; skipped"),
            }
        }
        out
    }

    /// Appends an update; returns its sequence number. Not durable until
    /// [`Self::flush`].
    pub fn push_update(&self, status: &TaskStatus) -> sled::Result<u64> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        self.updates
            .insert(seq.to_be_bytes(), status.encode_to_vec())?;
        self.wrote();
        Ok(seq)
    }

    /// Drops an acknowledged update.
    pub fn remove_update(&self, seq: u64) -> sled::Result<()> {
        self.updates.remove(seq.to_be_bytes())?;
        self.wrote();
        Ok(())
    }

    /// Counts a write that sled has taken (see `written`).
    fn wrote(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Makes everything this caller wrote so far durable (fsync). Flushes
    /// run one at a time; a caller whose writes a flush that started after
    /// them has already covered returns without one (group commit).
    pub async fn flush(&self) -> sled::Result<()> {
        let mine = self.written.load(Ordering::SeqCst);
        let _one_at_a_time = self.flush_lock.lock().await;
        if self.durable.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        // Everything counted by now is in sled, so this flush covers it.
        let upto = self.written.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush().map(|_| ()))
            .await
            .map_err(|e| {
                sled::Error::Io(std::io::Error::other(format!("checkpoint flush task: {e}")))
            })??;
        self.fsyncs.fetch_add(1, Ordering::SeqCst);
        self.durable.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// How many flushes went to the disk so far (for tests and logs).
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::SeqCst)
    }

    /// Blocking form of [`Self::flush`], for start-up and tests.
    pub fn flush_blocking(&self) -> sled::Result<()> {
        self.db.flush().map(|_| ())
    }
}

/// Makes a secret and stores it at `path`: written to a fresh file that only
/// the owner may read, fsynced, renamed into place, and the directory
/// fsynced, so that it is either wholly there or not at all.
fn write_new_secret(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("no random source: {e}")))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_file_name(format!("{SECRET_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(secret)
}

/// Takes group and other permissions off the secret (a copy restored by
/// hand may have them).
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} was readable by others (mode {:o}); making it 0600",
            path.display(),
            mode & 0o777
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Whether sled refused to open a database because another process holds
/// its file lock. sled reports that only as an I/O error of kind `Other`
/// with its own wording, so this is the one place that knows the wording.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::v1::TaskState;

    /// Opens the checkpoint again in the same process. sled's background
    /// flusher may hold the file lock a moment after the last handle is
    /// dropped (a restarted agent is a new process and never meets this),
    /// so a busy machine gets a few seconds.
    fn reopen(path: &Path) -> Checkpoint {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Checkpoint::open(path) {
                Ok(cp) => return cp,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("reopening the checkpoint: {e}; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("cannot reopen the checkpoint: {e}"),
            }
        }
    }

    #[test]
    fn a_checkpoint_held_open_is_reported_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        let _held = Checkpoint::open(&path).unwrap();
        match Checkpoint::open(&path) {
            Err(AgentError::CheckpointLocked { path: p }) => assert_eq!(p, path),
            Err(e) => panic!("want CheckpointLocked, got {e}"),
            Ok(_) => panic!("a second open of a held checkpoint succeeded"),
        }
    }

    fn record(fw: &str, task: &str) -> TaskRecord {
        let mut status = TaskStatus {
            task_id: task.into(),
            framework_id: fw.into(),
            ..Default::default()
        };
        status.set_state(TaskState::Running);
        TaskRecord {
            framework: Some(FrameworkInfo {
                id: fw.into(),
                name: "fw".into(),
                ..Default::default()
            }),
            task: Some(TaskInfo {
                task_id: task.into(),
                ..Default::default()
            }),
            sandbox: "/tmp/x".into(),
            wrapper_pid: Some(42),
            wrapper_start_time: Some(1234),
            cgroup: Some("mezzanine/t.0123abcd".into()),
            kill_reason: Some(13),
            kill_message: Some("health check failed".into()),
            child_pgid: Some(43),
            latest_status: Some(status),
            kill_requested: true,
            kill_grace_secs: Some(1.5),
            launched_at: Some(1_700_000_000.5),
        }
    }

    #[test]
    fn round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let (s1, s2);
        {
            let cp = Checkpoint::open(&path).unwrap();
            assert_eq!(cp.agent_id(), None);
            cp.set_agent_id("agent-1").unwrap();
            cp.put_task(&record("f1", "t1")).unwrap();
            cp.put_task(&record("f1", "t2")).unwrap();
            cp.remove_task("f1", "t2").unwrap();
            let st = |id: &str| TaskStatus {
                uuid: id.into(),
                ..Default::default()
            };
            s1 = cp.push_update(&st("u1")).unwrap();
            s2 = cp.push_update(&st("u2")).unwrap();
            cp.push_update(&st("u3")).unwrap();
            cp.remove_update(s1).unwrap();
            // Garbage where a record should be must not stop the agent.
            cp.tasks.insert(b"f9/broken", &b"\xff\xff\xff"[..]).unwrap();
            cp.flush_blocking().unwrap();
        }
        let cp = reopen(&path);
        assert_eq!(cp.agent_id().as_deref(), Some("agent-1"));
        assert_eq!(cp.tasks(), vec![record("f1", "t1")]);
        let ups = cp.updates();
        assert_eq!(ups.len(), 2);
        assert_eq!(
            ups[0],
            (
                s2,
                TaskStatus {
                    uuid: "u2".into(),
                    ..Default::default()
                }
            )
        );
        assert_eq!(ups[1].1.uuid, "u3");
        // New updates continue after the highest sequence number.
        let s4 = cp.push_update(&TaskStatus::default()).unwrap();
        assert!(s4 > ups[1].0);
    }

    #[test]
    fn the_secret_is_made_once_kept_private_and_survives_a_reopen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let first = Checkpoint::open(&path).unwrap().secret().unwrap();
        assert_eq!(first.len(), 64);
        let file = dir.path().join(SECRET_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cp = reopen(&path);
        assert_eq!(
            cp.secret().unwrap(),
            first,
            "the same secret after a restart"
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "permissions tightened");
        let other = tempfile::tempdir().unwrap();
        let second = Checkpoint::open(&other.path().join("checkpoint"))
            .unwrap()
            .secret()
            .unwrap();
        assert_ne!(first, second, "every agent has its own");
        std::fs::write(&file, "not a secret").unwrap();
        let err = cp.secret().unwrap_err().to_string();
        assert!(err.contains("hex digits"), "{err}");
    }

    /// A burst of writers that each flush (a burst of launches or exits)
    /// shares fsyncs: one flush that starts after a writer's write covers
    /// it, and the writer does not flush again.
    #[tokio::test]
    async fn concurrent_flushes_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let cp = std::sync::Arc::new(Checkpoint::open(&dir.path().join("cp")).unwrap());
        // Every writer has written before any flushes (the runtime's
        // scheduling order must not decide how many flushes a burst takes).
        let written = std::sync::Arc::new(tokio::sync::Barrier::new(32));
        let writers: Vec<_> = (0..32)
            .map(|i| {
                let cp = std::sync::Arc::clone(&cp);
                let written = std::sync::Arc::clone(&written);
                tokio::spawn(async move {
                    let mut st = TaskStatus {
                        task_id: format!("t{i}"),
                        ..Default::default()
                    };
                    st.set_state(TaskState::Running);
                    cp.push_update(&st).unwrap();
                    written.wait().await;
                    cp.flush().await.unwrap();
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let fsyncs = cp.fsyncs();
        // The first flush covers all 32 writes; the other 31 skip theirs.
        assert_eq!(fsyncs, 1, "32 writers took {fsyncs} fsyncs");
        // A writer after them gets a flush of its own.
        let st = TaskStatus {
            task_id: "late".into(),
            ..Default::default()
        };
        cp.push_update(&st).unwrap();
        cp.flush().await.unwrap();
        assert_eq!(cp.fsyncs(), fsyncs + 1);
        // And a flush with nothing new written is free.
        cp.flush().await.unwrap();
        assert_eq!(cp.fsyncs(), fsyncs + 1);
        assert_eq!(cp.updates().len(), 33);
    }
}
