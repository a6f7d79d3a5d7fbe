//! The file store: the state file is a snapshot, and each commit appends its changes to the
//! log beside it ([`super::wal`]) with one fsync for all of them, so recording an attempt
//! costs an append instead of a rewrite of every namespace's state.
//!
//! Once the log outgrows the last snapshot, a commit first renames it aside, and the store
//! asks for a compaction: the snapshot, written atomically ([`crate::storage::durable`]) from a view
//! of memory taken after the rename, holds everything the renamed log holds, which is then
//! removed. A log renamed aside stays until a snapshot has folded it, even if the append
//! after the rename failed: renaming again would put the next log over it. `close` writes a
//! last snapshot and removes both logs, leaving the state file complete on its own.
//!
//! Ownership is the lock on the state file, taken before `load` (`src/lockfile.rs`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde::ser::SerializeMap;

use super::backend::{Change, Namespaces, StateBackend, StoreError};
use super::{Loaded, Origin, STATE_VERSION, StateError, StateFile, wal};
use crate::storage::durable::{PRIVATE_FILE, sync_dir, write_atomic};

/// The log is folded into a snapshot once it is larger than the last snapshot, and at
/// least this large: start-up then replays at most about one snapshot's worth of records.
const MIN_LOG_BEFORE_SNAPSHOT: u64 = 4 * 1024 * 1024;

/// The state file and its logs.
pub struct FileBackend {
    path: PathBuf,
    location: String,
    log: Mutex<LogFile>,
    /// A snapshot is due: a log renamed aside waits to be folded into one, or the state file
    /// is in the original service's format. Read on every change without waiting for the
    /// log's lock, which a commit holds through its fsync.
    snapshot_due: AtomicBool,
    /// Least log size worth a snapshot.
    compact_after: u64,
}

impl FileBackend {
    /// The store of the state file at `path`; [`StateBackend::load`] reads it.
    pub fn new(path: PathBuf) -> Self {
        let log =
            LogFile { path: wal::path(&path), rotated_path: wal::rotated_path(&path), valid_len: 0, snapshot_len: 0 };
        Self {
            location: path.display().to_string(),
            path,
            log: Mutex::new(log),
            snapshot_due: AtomicBool::new(false),
            compact_after: MIN_LOG_BEFORE_SNAPSHOT,
        }
    }

    /// Folds the log into a snapshot once it reaches `bytes` (and outgrows the snapshot)
    /// instead of the default 4 MiB.
    pub fn compact_after(mut self, bytes: u64) -> Self {
        self.compact_after = bytes;
        self
    }

    fn log(&self) -> std::sync::MutexGuard<'_, LogFile> {
        // The log's fields change only once a write succeeded, so a panic elsewhere leaves
        // them as true as before.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a snapshot of `state`, then removes what it folded: the log renamed aside, or
    /// both logs when it is the last (`last`).
    fn snapshot(&self, state: &Namespaces, last: bool) -> Result<u64, StoreError> {
        let bytes = Snapshot(state).encode();
        write_atomic(&self.path, &bytes, PRIVATE_FILE).map_err(|e| StoreError::io(self.location.clone(), e))?;
        let mut log = self.log();
        let removed = if last {
            log.remove_all()
        } else {
            match std::fs::remove_file(&log.rotated_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => sync_dir(parent(&log.rotated_path)),
            }
        };
        removed.map_err(|e| StoreError::io("cannot remove the state log folded into the snapshot", e))?;
        log.snapshot_len = bytes.len() as u64;
        self.snapshot_due.store(false, Ordering::Release);
        Ok(log.snapshot_len)
    }
}

impl StateBackend for FileBackend {
    fn location(&self) -> &str {
        &self.location
    }

    /// Reads the state file, then replays the log renamed aside and the live log over it,
    /// in that order.
    fn load(&mut self) -> Result<Loaded, StateError> {
        let path = &self.path;
        let (mut state, mut origin, snapshot_len) = match read_if_exists(path)? {
            None => (StateFile { version: STATE_VERSION, ..StateFile::default() }, Origin::Fresh, 0),
            Some(bytes) => {
                let (state, origin) = super::parse(&bytes).map_err(|e| match e {
                    super::ParseError::Corrupt(reason) => StateError::Corrupt { path: path.clone(), reason },
                    super::ParseError::TooNew(version) => StateError::TooNew { path: path.clone(), version },
                })?;
                (state, origin, bytes.len() as u64)
            }
        };
        // A snapshot in the original service's format is rewritten in this one at once.
        let mut snapshot_due = origin == Origin::Migrated;
        let mut valid_len = 0;
        for (log_path, rotated) in [(wal::rotated_path(path), true), (wal::path(path), false)] {
            let Some(bytes) = read_if_exists(&log_path)? else { continue };
            let replayed = wal::replay(&mut state, &bytes)
                .map_err(|reason| StateError::Corrupt { path: log_path.clone(), reason })?;
            if origin == Origin::Fresh && replayed.records > 0 {
                origin = Origin::Current;
            }
            if rotated {
                snapshot_due = true;
            } else {
                valid_len = replayed.valid_len;
            }
        }
        for ns in state.namespaces.values_mut() {
            ns.share_batches();
        }
        let log = self.log.get_mut().unwrap_or_else(PoisonError::into_inner);
        log.valid_len = valid_len;
        log.snapshot_len = snapshot_len;
        *self.snapshot_due.get_mut() = snapshot_due;
        Ok(Loaded { state, origin })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        // One line for the whole commit: replayed whole or not at all (see `wal`).
        wal::encode_commit_into(&mut bytes, changes);
        let mut log = self.log();
        // Renamed aside once it has outgrown the snapshot; the compaction this asks for takes
        // its view later, so it holds everything the renamed log holds.
        if !self.snapshot_due.load(Ordering::Acquire) && log.valid_len >= self.compact_after.max(log.snapshot_len) {
            log.rotate().map_err(|e| StoreError::io("cannot rotate the state log", e))?;
            self.snapshot_due.store(true, Ordering::Release);
        }
        log.append(&bytes).map_err(|e| StoreError::io(log.path.display().to_string(), e))
    }

    fn compaction_due(&self) -> bool {
        self.snapshot_due.load(Ordering::Acquire)
    }

    fn compact(&self, state: &Namespaces) -> Result<u64, StoreError> {
        self.snapshot(state, false)
    }

    fn close(&self, state: &Namespaces) -> Result<u64, StoreError> {
        self.snapshot(state, true)
    }
}

/// The file's bytes, `None` when it does not exist. Only a regular file is read: a named pipe
/// in its place would block the start for good, and a device would never end.
fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match crate::fsread::read_regular(path, u64::MAX) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(crate::fsread::ReadError::Io(e)) => Err(StateError::Read { path: path.into(), source: e }),
        Err(e) => Err(StateError::Read { path: path.into(), source: std::io::Error::other(format!("it {e}")) }),
    }
}

/// The live log file. It is opened for each append and closed after it: an open file would
/// keep its file system from being remounted (an operator's fix for a full or failing disk),
/// and an open costs little beside an fsync.
struct LogFile {
    path: PathBuf,
    rotated_path: PathBuf,
    /// Length of what is durably appended; anything beyond is a failed append's debris.
    valid_len: u64,
    /// Size of the last snapshot.
    snapshot_len: u64,
}

impl LogFile {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let created = !self.path.exists();
        let mut file: File = OpenOptions::new().create(true).append(true).mode(PRIVATE_FILE).open(&self.path)?;
        // A torn record of a crash, or of a failed append, is cut off before appending.
        if file.metadata()?.len() != self.valid_len {
            file.set_len(self.valid_len)?;
        }
        if created {
            sync_dir(parent(&self.path))?;
        }
        file.write_all(bytes)?;
        file.sync_data()?;
        self.valid_len += bytes.len() as u64;
        Ok(())
    }

    /// Renames the live log aside; the next append starts a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        match std::fs::rename(&self.path, &self.rotated_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.valid_len = 0;
        sync_dir(parent(&self.path))
    }

    /// Removes both logs once a snapshot holds everything they held.
    fn remove_all(&mut self) -> std::io::Result<()> {
        for p in [&self.rotated_path, &self.path] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.valid_len = 0;
        sync_dir(parent(&self.path))
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The state file's content, written from a view of memory.
struct Snapshot<'a>(&'a Namespaces);

impl Serialize for Snapshot<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Each<'a>(&'a Namespaces);
        impl Serialize for Each<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (name, ns) in self.0 {
                    map.serialize_entry(name, &**ns)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("version", &STATE_VERSION)?;
        map.serialize_entry("namespaces", &Each(self.0))?;
        map.end()
    }
}

impl Snapshot<'_> {
    fn encode(&self) -> Vec<u8> {
        // Plain maps of plain data always serialise.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::CadenceKind;
    use crate::storage::state::CadenceState;

    fn change(ns: &str, last: i64) -> Change {
        let state = CadenceState { last_success_ms: Some(last), ..CadenceState::default() };
        Change { namespace: ns.into(), cadence: CadenceKind::Fast, state: std::sync::Arc::new(state) }
    }

    fn last_of(state: &StateFile, ns: &str) -> Option<i64> {
        state.namespaces.get(ns)?.cadences.get(&CadenceKind::Fast)?.last_success_ms
    }

    /// A store as a start opens it: made, then loaded.
    fn opened(path: &Path, compact_after: u64) -> (FileBackend, Loaded) {
        let mut store = FileBackend::new(path.to_path_buf()).compact_after(compact_after);
        let loaded = store.load().expect("loads");
        (store, loaded)
    }

    /// What the store's owner holds in memory after `changes`.
    fn apply(state: &mut StateFile, changes: &[Change]) {
        for c in changes {
            state.apply(c.clone());
        }
    }

    fn view(state: &StateFile) -> Namespaces {
        state.clone().into_shared(|_| None)
    }

    #[test]
    fn a_commit_is_durable_when_it_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let (store, loaded) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        assert_eq!(loaded.origin, Origin::Fresh);
        store.commit(&[change("a", 1), change("b", 2)]).expect("commit");
        store.commit(&[change("a", 3)]).expect("commit");
        // No close, nothing flushed on drop: what a crash right after the commit leaves.
        let (_, after) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        assert_eq!((last_of(&after.state, "a"), last_of(&after.state, "b")), (Some(3), Some(2)));
        assert_eq!(after.origin, Origin::Current);
    }

    #[test]
    fn a_crash_mid_append_replays_every_commit_before_it_and_the_next_append_cuts_the_torn_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let (store, _) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        store.commit(&[change("a", 1)]).expect("commit");
        store.commit(&[change("b", 2)]).expect("commit");
        let committed = std::fs::read(wal::path(&path)).expect("log");
        // The process died halfway through appending a third change: never acknowledged.
        OpenOptions::new()
            .append(true)
            .open(wal::path(&path))
            .and_then(|mut f| f.write_all(b"{\"ns\":\"c\",\"cad"))
            .expect("tear");
        let (restarted, loaded) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        assert_eq!((last_of(&loaded.state, "a"), last_of(&loaded.state, "b")), (Some(1), Some(2)));
        assert!(!loaded.state.namespaces.contains_key("c"), "a torn change is not replayed");
        restarted.commit(&[change("c", 3)]).expect("commit after the crash");
        let mut expected = committed;
        wal::encode_into(&mut expected, &change("c", 3));
        assert_eq!(std::fs::read(wal::path(&path)).expect("log"), expected, "the torn record was cut off first");
        let (_, again) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        assert_eq!(last_of(&again.state, "c"), Some(3));
    }

    #[test]
    fn a_commit_that_cannot_be_written_fails_naming_the_log_and_commits_when_tried_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let (store, _) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        store.commit(&[change("a", 1)]).expect("commit");
        // A folder where the log goes: every append fails, as on a failing disk.
        std::fs::rename(wal::path(&path), dir.path().join("kept")).expect("move the log away");
        std::fs::create_dir(wal::path(&path)).expect("block the log");
        let e = store.commit(&[change("b", 2)]).expect_err("a failed append is an error");
        assert!(e.to_string().starts_with(&wal::path(&path).display().to_string()), "{e}");
        std::fs::remove_dir(wal::path(&path)).expect("unblock");
        std::fs::rename(dir.path().join("kept"), wal::path(&path)).expect("put the log back");
        // The owner commits the same change again.
        store.commit(&[change("b", 2)]).expect("commit once the log is writable");
        let (_, loaded) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        assert_eq!((last_of(&loaded.state, "a"), last_of(&loaded.state, "b")), (Some(1), Some(2)));
    }

    #[test]
    fn a_log_outgrowing_the_snapshot_is_renamed_aside_then_folded_by_a_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let (store, _) = opened(&path, 512);
        let mut memory = StateFile { version: STATE_VERSION, ..StateFile::default() };
        let mut i = 0;
        while !store.compaction_due() {
            let batch = [change(&format!("ns{}", i % 7), i)];
            store.commit(&batch).expect("commit");
            apply(&mut memory, &batch);
            i += 1;
            assert!(i < 100, "512 bytes of log never asked for a compaction");
        }
        assert!(wal::rotated_path(&path).exists(), "the log was renamed aside");
        assert!(!path.exists(), "no snapshot before the compaction");
        // A crash now loses nothing: a start replays both logs and compacts at once.
        let (restarted, loaded) = opened(&path, 512);
        assert_eq!(loaded.state, memory);
        assert!(restarted.compaction_due());
        drop(restarted);

        assert!(store.compact(&view(&memory)).expect("compact") > 0);
        assert!(!store.compaction_due());
        assert!(!wal::rotated_path(&path).exists(), "the folded log is removed");
        let (snapshot, origin) =
            crate::storage::state::parse(&std::fs::read(&path).expect("snapshot")).expect("parses");
        assert_eq!((snapshot, origin), (memory.clone(), Origin::Current));

        // Closing leaves the state file complete on its own, and no log.
        let batch = [change("last", 1)];
        store.commit(&batch).expect("commit");
        apply(&mut memory, &batch);
        store.close(&view(&memory)).expect("close");
        assert!(!wal::path(&path).exists() && !wal::rotated_path(&path).exists());
        let (alone, _) = crate::storage::state::parse(&std::fs::read(&path).expect("snapshot")).expect("parses");
        assert_eq!(alone, memory);
    }

    #[test]
    fn the_logs_are_replayed_over_the_snapshot_rotated_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("s.json");
        let rec = |ns: &str, last: i64| {
            let mut out = Vec::new();
            wal::encode_into(&mut out, &change(ns, last));
            out
        };
        std::fs::write(&path, br#"{"version":1,"namespaces":{"a":{"cadences":{"fast":{"lastSuccessMs":1}}}}}"#)
            .expect("snapshot");
        std::fs::write(wal::rotated_path(&path), [rec("a", 2), rec("b", 3)].concat()).expect("rotated");
        let mut live = [rec("a", 4), rec("c", 5)].concat();
        let valid = live.len() as u64;
        live.extend_from_slice(b"{\"ns\":\"torn");
        std::fs::write(wal::path(&path), live).expect("live");
        let (store, loaded) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        let last = |ns: &str| last_of(&loaded.state, ns);
        assert_eq!((last("a"), last("b"), last("c")), (Some(4), Some(3), Some(5)));
        assert_eq!(loaded.origin, Origin::Current);
        assert_eq!(store.log().valid_len, valid, "the torn record is left out");
        assert!(store.compaction_due(), "the rotated log still waits for its snapshot");

        // A damaged record is refused like a corrupt state file, naming the log.
        std::fs::write(wal::path(&path), [b"garbage\n".to_vec(), rec("a", 9)].concat()).expect("damage");
        match FileBackend::new(path.clone()).load() {
            Err(StateError::Corrupt { path: p, .. }) => assert_eq!(p, wal::path(&path)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_state_file_in_the_original_format_asks_for_a_compaction_at_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("s.json");
        std::fs::write(&path, br#"{"dao:vaultmesh": {"last": {"fast": 1729739900}, "backoff": 0}}"#).expect("write");
        let (store, loaded) = opened(&path, MIN_LOG_BEFORE_SNAPSHOT);
        assert_eq!(loaded.origin, Origin::Migrated);
        assert!(store.compaction_due());
    }

    fn log_file(dir: &Path) -> LogFile {
        let state = dir.join("s.json");
        LogFile { path: wal::path(&state), rotated_path: wal::rotated_path(&state), valid_len: 0, snapshot_len: 0 }
    }

    #[test]
    fn an_append_after_a_torn_record_cuts_the_debris_off_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = log_file(dir.path());
        log.append(b"{\"a\":1}\n").expect("append");
        // A crash mid-append left half a record; the next run knows only the complete part.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log.path)
            .and_then(|mut f| f.write_all(b"{\"tor"))
            .expect("tear");
        let mut next = log_file(dir.path());
        next.valid_len = log.valid_len;
        next.append(b"{\"b\":2}\n").expect("append");
        assert_eq!(std::fs::read(&next.path).expect("read"), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn rotation_moves_the_log_aside_and_starts_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = log_file(dir.path());
        log.append(b"old\n").expect("append");
        log.rotate().expect("rotate");
        log.append(b"new\n").expect("append");
        assert_eq!(std::fs::read(&log.rotated_path).expect("rotated"), b"old\n");
        assert_eq!(std::fs::read(&log.path).expect("live"), b"new\n");
        log.remove_all().expect("remove");
        assert!(!log.path.exists() && !log.rotated_path.exists());
    }
}
