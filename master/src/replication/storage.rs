//! The raft log, hard state and snapshot in `sled` (raft-rs's `Storage`
//! trait, plus the writes the ready loop needs). The in-memory twin used by
//! unit tests is raft-rs's own `MemStorage`; both pass the same conformance
//! suite below.

use std::path::Path;
use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// Why the raft storage could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageFailure {
    /// sled refused (disk full, permissions, corruption).
    #[error("raft storage at {path}: {source}")]
    Sled {
        /// The database directory.
        path: String,
        /// sled's error.
        source: sled::Error,
    },
    /// A record on disk could not be decoded.
    #[error("raft storage at {path}: corrupt record '{key}': {reason}")]
    Corrupt {
        /// The database directory.
        path: String,
        /// Which record.
        key: String,
        /// The decoder's message.
        reason: String,
    },
}

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT: &[u8] = b"snapshot";

/// Raft storage in a sled database: tree `log` maps a big-endian index to an
/// encoded entry; tree `meta` holds the hard state, conf state and latest
/// snapshot.
#[derive(Clone)]
pub struct SledStorage {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    path: String,
    bounds: Arc<Mutex<Bounds>>,
}

/// Where the log starts and ends, kept in memory. raft asks for them, and
/// for the term at the snapshot boundary, on nearly every step; reading them
/// from sled means a scan of the log or decoding the whole stored snapshot
/// (the registry), on every call.
#[derive(Debug, Clone, Copy, Default)]
struct Bounds {
    snap_index: u64,
    snap_term: u64,
    /// The last index in the log, or `snap_index` when it is empty.
    last: u64,
}

fn other(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl SledStorage {
    /// Opens (or creates) the storage under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageFailure> {
        let path = dir.display().to_string();
        let sled_err = |source| StorageFailure::Sled {
            path: path.clone(),
            source,
        };
        // sled's background flusher holds the file lock for a moment after
        // the last handle of a previous open is dropped; wait for it rather
        // than fail a quick reopen.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .mode(sled::Mode::LowSpace)
                .open()
            {
                Ok(db) => break db,
                Err(e) if is_lock_held(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(sled_err(e)),
            }
        };
        let log = db.open_tree("log").map_err(sled_err)?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        let s = SledStorage {
            db,
            log,
            meta,
            path: path.clone(),
            bounds: Arc::default(),
        };
        // Decode everything once up front so corruption is reported at start
        // with the file named, never as a panic deep inside raft.
        s.read_meta::<HardState>(HARD_STATE)?;
        s.read_meta::<ConfState>(CONF_STATE)?;
        let snap = s.read_meta::<Snapshot>(SNAPSHOT)?;
        let (snap_index, snap_term) = (snap.get_metadata().index, snap.get_metadata().term);
        let last = match s.log.last().map_err(sled_err)? {
            Some((k, _)) => Self::key_index(&k).map_err(|e| StorageFailure::Corrupt {
                path: path.clone(),
                key: "log".into(),
                reason: e.to_string(),
            })?,
            None => snap_index,
        };
        *s.bounds() = Bounds {
            snap_index,
            snap_term,
            last: last.max(snap_index),
        };
        Ok(s)
    }

    fn bounds(&self) -> std::sync::MutexGuard<'_, Bounds> {
        // The guarded value is plain data, always consistent.
        self.bounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_meta<M: protobuf::Message + Default>(&self, key: &[u8]) -> Result<M, StorageFailure> {
        let bytes = self.meta.get(key).map_err(|source| StorageFailure::Sled {
            path: self.path.clone(),
            source,
        })?;
        match bytes {
            None => Ok(M::default()),
            Some(b) => {
                let mut m = M::default();
                m.merge_from_bytes(&b)
                    .map_err(|e| StorageFailure::Corrupt {
                        path: self.path.clone(),
                        key: String::from_utf8_lossy(key).into_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(m)
            }
        }
    }

    fn meta_or_err<M: protobuf::Message + Default>(&self, key: &[u8]) -> raft::Result<M> {
        self.read_meta(key).map_err(other)
    }

    fn put_meta<M: protobuf::Message>(&self, key: &[u8], m: &M) -> raft::Result<()> {
        let bytes = m.write_to_bytes().map_err(other)?;
        self.meta.insert(key, bytes).map_err(other)?;
        Ok(())
    }

    /// True when nothing was ever written: a brand-new group.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.meta.is_empty()
    }

    /// The latest snapshot stored (empty when none).
    pub fn stored_snapshot(&self) -> raft::Result<Snapshot> {
        self.meta_or_err(SNAPSHOT)
    }

    /// Sets the voters of a brand-new group.
    pub fn initialize(&self, voters: &[u64]) -> raft::Result<()> {
        let mut cs = ConfState::default();
        cs.set_voters(voters.to_vec());
        self.put_meta(CONF_STATE, &cs)?;
        self.flush()
    }

    /// Appends entries, first dropping any conflicting suffix of the log.
    pub fn append(&self, entries: &[Entry]) -> raft::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for kv in self.log.range(first.index.to_be_bytes()..) {
            let (k, _) = kv.map_err(other)?;
            batch.remove(k);
        }
        for e in entries {
            batch.insert(&e.index.to_be_bytes(), e.write_to_bytes().map_err(other)?);
        }
        self.log.apply_batch(batch).map_err(other)?;
        if let Some(last) = entries.last() {
            self.bounds().last = last.index;
        }
        Ok(())
    }

    /// Persists the hard state.
    pub fn set_hard_state(&self, hs: &HardState) -> raft::Result<()> {
        self.put_meta(HARD_STATE, hs)
    }

    /// Persists only the commit index of the hard state.
    pub fn set_commit(&self, commit: u64) -> raft::Result<()> {
        let mut hs: HardState = self.meta_or_err(HARD_STATE)?;
        hs.commit = commit;
        self.put_meta(HARD_STATE, &hs)
    }

    /// Installs a snapshot received from the leader: it replaces the log.
    pub fn apply_snapshot(&self, snap: &Snapshot) -> raft::Result<()> {
        let md = snap.get_metadata();
        self.put_meta(SNAPSHOT, snap)?;
        self.put_meta(CONF_STATE, md.get_conf_state())?;
        let mut hs: HardState = self.meta_or_err(HARD_STATE)?;
        hs.term = hs.term.max(md.term);
        hs.commit = hs.commit.max(md.index);
        self.put_meta(HARD_STATE, &hs)?;
        self.log.clear().map_err(other)?;
        *self.bounds() = Bounds {
            snap_index: md.index,
            snap_term: md.term,
            last: md.index,
        };
        Ok(())
    }

    /// Stores a snapshot of the applied state at `index` and drops the log up
    /// to it (log compaction).
    pub fn compact_to_snapshot(&self, index: u64, data: Vec<u8>) -> raft::Result<()> {
        let term = self.term(index)?;
        let mut md = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        md.set_conf_state(self.meta_or_err(CONF_STATE)?);
        let mut snap = Snapshot::default();
        snap.set_metadata(md);
        snap.data = data.into();
        self.put_meta(SNAPSHOT, &snap)?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=index.to_be_bytes()) {
            let (k, _) = kv.map_err(other)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(other)?;
        let mut b = self.bounds();
        b.snap_index = index;
        b.snap_term = term;
        b.last = b.last.max(index);
        Ok(())
    }

    /// fsyncs everything written so far. Call before acknowledging anything
    /// durable (sending messages, answering a client).
    pub fn flush(&self) -> raft::Result<()> {
        self.db.flush().map_err(other)?;
        Ok(())
    }

    fn entry_at(&self, idx: u64) -> raft::Result<Option<Entry>> {
        match self.log.get(idx.to_be_bytes()).map_err(other)? {
            None => Ok(None),
            Some(b) => {
                let mut e = Entry::default();
                e.merge_from_bytes(&b).map_err(other)?;
                Ok(Some(e))
            }
        }
    }

    fn key_index(k: &[u8]) -> raft::Result<u64> {
        let arr: [u8; 8] = k
            .try_into()
            .map_err(|_| other(format!("log key of {} bytes, expected 8", k.len())))?;
        Ok(u64::from_be_bytes(arr))
    }
}

impl Storage for SledStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.meta_or_err(HARD_STATE)?,
            conf_state: self.meta_or_err(CONF_STATE)?,
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.first_index()?;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index()? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        for kv in self.log.range(low.to_be_bytes()..high.to_be_bytes()) {
            let (_, v) = kv.map_err(other)?;
            let mut e = Entry::default();
            e.merge_from_bytes(&v).map_err(other)?;
            out.push(e);
        }
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let b = *self.bounds();
        if idx == b.snap_index {
            return Ok(b.snap_term);
        }
        if idx < b.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entry_at(idx)? {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.bounds().snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.bounds().last)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snap: Snapshot = self.meta_or_err(SNAPSHOT)?;
        if snap.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snap)
    }
}

/// Whether sled refused to open a database because another process holds
/// its file lock. sled reports that only as an I/O error of kind `Other`
/// with its own wording, so this is the one place that knows the wording.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

#[cfg(test)]
mod tests {
    //! One conformance suite for every `Storage` we use: raft-rs's
    //! `MemStorage` (the reference) and `SledStorage` must agree.
    use super::*;
    use raft::storage::MemStorage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}").into_bytes().into(),
            ..Default::default()
        }
    }

    trait Writable: Storage {
        fn write(&self, entries: &[Entry]);
        fn compact(&self, index: u64);
    }

    impl Writable for MemStorage {
        fn write(&self, entries: &[Entry]) {
            self.wl().append(entries).unwrap();
        }
        fn compact(&self, index: u64) {
            self.wl().compact(index + 1).unwrap();
        }
    }

    impl Writable for SledStorage {
        fn write(&self, entries: &[Entry]) {
            self.append(entries).unwrap();
        }
        fn compact(&self, index: u64) {
            self.compact_to_snapshot(index, vec![]).unwrap();
        }
    }

    fn conformance(s: &impl Writable) {
        assert_eq!(s.first_index().unwrap(), 1);
        assert_eq!(s.last_index().unwrap(), 0);
        s.write(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>());
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.term(5).unwrap(), 1);
        let got = s
            .entries(3, 6, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        // A conflicting append from a new leader replaces the suffix.
        s.write(&[entry(8, 2), entry(9, 2)]);
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(s.term(8).unwrap(), 2);
        assert_eq!(s.term(7).unwrap(), 1);
        s.compact(4);
        assert_eq!(s.first_index().unwrap(), 5);
        assert!(matches!(
            s.entries(2, 6, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let one = s
            .entries(5, 10, Some(0), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1, "max_size 0 still returns one entry");
    }

    #[test]
    fn mem_storage_conforms() {
        let mut cs = ConfState::default();
        cs.set_voters(vec![1]);
        conformance(&MemStorage::new_with_conf_state(cs));
    }

    #[test]
    fn sled_storage_conforms_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            assert!(s.is_empty());
            s.initialize(&[1]).unwrap();
            conformance(&s);
            let hs = HardState {
                term: 2,
                commit: 9,
                ..Default::default()
            };
            s.set_hard_state(&hs).unwrap();
            s.flush().unwrap();
        }
        let s = SledStorage::open(dir.path()).unwrap();
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 9);
        assert_eq!(st.conf_state.voters, vec![1]);
        assert_eq!(s.first_index().unwrap(), 5);
        assert_eq!(s.last_index().unwrap(), 9);
        // The snapshot keeps the term of the last compacted entry, which
        // raft needs to match the next append.
        assert_eq!(s.term(4).unwrap(), 1);
    }
}
