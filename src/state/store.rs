//! The `StateStore` actor: the one owner of the state file and its log.
//!
//! Namespace actors send it every change. It keeps the whole state in memory and makes each
//! change durable by appending it to the log ([`super::wal`]); changes that arrive while an
//! append is running are grouped into the next one (group commit: one fsync for all of them),
//! so a burst of anchors costs a few small appends. A caller that must not go on before its
//! change is on disk (an attempt recorded before its driver runs) asks for an
//! acknowledgement. Once the log outgrows the last snapshot, it is rotated and a new snapshot
//! is written in the background from a copy-on-write view of memory. A failed write keeps
//! everything in memory, reports it, and retries; at shutdown a last snapshot leaves the
//! state file complete on its own.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use serde::ser::SerializeMap;
use slog::{Logger, error, info, warn};
use tokio::sync::oneshot;

use super::wal::{self, Record};
use super::{CadenceState, NamespaceState, STATE_VERSION, StateFile};
use crate::durable::{PRIVATE_FILE, sync_dir, write_atomic};
use crate::metrics::Metrics;
use crate::model::CadenceKind;
use crate::model::Ping;

/// Outcome of a state write, as the store reports it to whoever watches its health.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StateWritten(pub Result<(), String>);

/// How long to wait before retrying a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The log is folded into a snapshot once it is larger than the last snapshot, and at
/// least this large: start-up then replays at most about one snapshot's worth of records.
const MIN_LOG_BEFORE_SNAPSHOT: u64 = 4 * 1024 * 1024;

/// An acknowledgement: `Ok` once the change is on disk.
pub type Ack = oneshot::Sender<Result<(), String>>;

/// What start-up found of the log, so appends continue where the last run stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOnDisk {
    /// Length of the live log's complete records (a torn tail beyond it is cut off).
    pub valid_len: u64,
    /// Whether a snapshot is due at once: a rotated log waits to be folded into one, or the
    /// state file is in the original service's format.
    pub snapshot_due: bool,
    /// Size of the snapshot file.
    pub snapshot_len: u64,
}

/// The live log file, used by one blocking task at a time. It is opened for each append
/// and closed after it: an open file would keep its file system from being remounted (an
/// operator's fix for a full or failing disk), and an open costs little beside an fsync.
struct LogFile {
    path: PathBuf,
    rotated_path: PathBuf,
    /// Length of what is durably appended; anything beyond is a failed append's debris.
    valid_len: u64,
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

/// A point-in-time view of every namespace's state, cheap to take: namespaces are shared
/// with memory until memory changes them.
struct Snapshot(BTreeMap<String, Arc<NamespaceState>>);

impl Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Namespaces<'a>(&'a BTreeMap<String, Arc<NamespaceState>>);
        impl Serialize for Namespaces<'_> {
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
        map.serialize_entry("namespaces", &Namespaces(&self.0))?;
        map.end()
    }
}

impl Snapshot {
    fn encode(&self) -> Vec<u8> {
        // Plain maps of plain data always serialise.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Owns the state file and its log.
pub struct StateStore {
    path: PathBuf,
    namespaces: BTreeMap<String, Arc<NamespaceState>>,
    log_file: Arc<Mutex<LogFile>>,
    /// Encoded records not yet appended, and who waits for them.
    queued: Vec<u8>,
    waiting: Vec<Ack>,
    appending: bool,
    compacting: bool,
    retry_pending: bool,
    /// Live log size, last snapshot size, and whether a snapshot is due (a rotated log
    /// awaits it, or the file is in the original format).
    log_len: u64,
    snapshot_len: u64,
    rotated: bool,
    /// Shutdown asked for a last snapshot; answered once written (or found impossible).
    flushing: Vec<Ack>,
    /// Least log size worth a snapshot.
    compact_after: u64,
    last_error: Option<String>,
    health: Recipient<StateWritten>,
    metrics: Arc<Metrics>,
    log: Logger,
}

impl StateStore {
    /// A store for `path` holding `state` as loaded at start-up, with its log as found.
    pub fn new(
        path: PathBuf,
        state: StateFile,
        on_disk: LogOnDisk,
        health: Recipient<StateWritten>,
        metrics: Arc<Metrics>,
        log: Logger,
    ) -> Self {
        let log_file =
            LogFile { path: wal::path(&path), rotated_path: wal::rotated_path(&path), valid_len: on_disk.valid_len };
        Self {
            namespaces: state.namespaces.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            log_file: Arc::new(Mutex::new(log_file)),
            path,
            queued: Vec::new(),
            waiting: Vec::new(),
            appending: false,
            compacting: false,
            retry_pending: false,
            log_len: on_disk.valid_len,
            snapshot_len: on_disk.snapshot_len,
            rotated: on_disk.snapshot_due,
            flushing: Vec::new(),
            compact_after: MIN_LOG_BEFORE_SNAPSHOT,
            last_error: None,
            health,
            metrics,
            log,
        }
    }

    /// Folds the log into a snapshot once it reaches `bytes` (and outgrows the snapshot)
    /// instead of the default 4 MiB.
    pub fn compact_after(mut self, bytes: u64) -> Self {
        self.compact_after = bytes;
        self
    }

    /// Starts whatever write is due: an append of queued records, a snapshot, or the last
    /// snapshot of a shutdown. One write runs at a time, except a background snapshot.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.retry_pending {
            return;
        }
        // A background snapshot writes other files than appends do, so both may run at once.
        if self.rotated && !self.compacting && self.flushing.is_empty() {
            self.snapshot(false, ctx);
        }
        if self.appending {
            return;
        }
        if !self.queued.is_empty() {
            self.append(ctx);
        } else if !self.flushing.is_empty() && !self.compacting {
            self.snapshot(true, ctx);
        }
    }

    fn append(&mut self, ctx: &mut Context<Self>) {
        self.appending = true;
        let bytes = std::mem::take(&mut self.queued);
        let waiters = std::mem::take(&mut self.waiting);
        // Rotate with this append once the log has outgrown the snapshot; the snapshot, taken
        // now, holds everything the rotated log holds.
        let rotate = !self.rotated
            && !self.compacting
            && self.flushing.is_empty()
            && self.log_len >= self.compact_after.max(self.snapshot_len);
        let file = Arc::clone(&self.log_file);
        let started = Instant::now();
        let write = async move {
            let task = tokio::task::spawn_blocking(move || -> (bool, Result<u64, (String, Vec<u8>)>) {
                let Ok(mut log) = file.lock() else { return (false, Err(("state log lock poisoned".into(), bytes))) };
                if rotate && let Err(e) = log.rotate() {
                    return (false, Err((format!("cannot rotate the state log: {e}"), bytes)));
                }
                match log.append(&bytes) {
                    Ok(()) => (rotate, Ok(log.valid_len)),
                    Err(e) => (rotate, Err((format!("{}: {e}", log.path.display()), bytes))),
                }
            });
            task.await.unwrap_or_else(|e| (false, Err((format!("writer thread failed: {e}"), Vec::new()))))
        };
        ctx.spawn(actix::fut::wrap_future(write).map(move |(rotated, result), act: &mut Self, ctx| {
            act.appended(result, rotated, waiters, started.elapsed(), ctx);
        }));
    }

    /// `rotated`: the log was renamed aside, whether or not the append after it succeeded.
    fn appended(
        &mut self,
        result: Result<u64, (String, Vec<u8>)>,
        rotated: bool,
        waiters: Vec<Ack>,
        took: Duration,
        ctx: &mut Context<Self>,
    ) {
        self.appending = false;
        // Once renamed aside, the log waits for its snapshot even if the append after the
        // rename failed: renaming again would put the next log over it.
        if rotated {
            self.rotated = true;
            self.log_len = 0;
        }
        let result = match result {
            Ok(len) => {
                self.log_len = len;
                Ok(())
            }
            Err((e, bytes)) => {
                // Not on disk: put the records back in front of newer ones and try again.
                let mut again = bytes;
                again.append(&mut self.queued);
                self.queued = again;
                Err(e)
            }
        };
        self.written(&result, took, ctx);
        for w in waiters {
            // The asker may have given up (e.g. its actor stopped); nothing to do then.
            let _ = w.send(result.clone());
        }
        if result.is_err() {
            // A shutdown waiting for everything to be durable learns that it is not.
            for w in std::mem::take(&mut self.flushing) {
                let _ = w.send(result.clone());
            }
        }
        self.drive(ctx);
    }

    /// Writes a snapshot of memory: in the background once a log was rotated, or as the last
    /// write of a shutdown (`last`), after which no log is needed.
    fn snapshot(&mut self, last: bool, ctx: &mut Context<Self>) {
        self.compacting = true;
        if last {
            self.appending = true;
        }
        let snapshot = Snapshot(self.namespaces.clone());
        let file = Arc::clone(&self.log_file);
        let path = self.path.clone();
        let started = Instant::now();
        let write = async move {
            let task = tokio::task::spawn_blocking(move || -> Result<u64, String> {
                let bytes = snapshot.encode();
                write_atomic(&path, &bytes, PRIVATE_FILE).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut log = file.lock().map_err(|_| "state log lock poisoned".to_string())?;
                let removed = if last {
                    log.remove_all()
                } else {
                    match std::fs::remove_file(&log.rotated_path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => sync_dir(parent(&log.rotated_path)),
                    }
                };
                removed.map_err(|e| format!("cannot remove the state log folded into the snapshot: {e}"))?;
                Ok(bytes.len() as u64)
            });
            task.await.unwrap_or_else(|e| Err(format!("writer thread failed: {e}")))
        };
        ctx.spawn(actix::fut::wrap_future(write).map(move |result, act: &mut Self, ctx| {
            act.snapshot_written(result, last, started.elapsed(), ctx);
        }));
    }

    fn snapshot_written(&mut self, result: Result<u64, String>, last: bool, took: Duration, ctx: &mut Context<Self>) {
        self.compacting = false;
        if last {
            self.appending = false;
        }
        if let Ok(len) = &result {
            info!(self.log, "state snapshot written"; "bytes" => len, "took_ms" => took.as_millis() as u64, "final" => last);
        }
        let result = result.map(|len| {
            self.snapshot_len = len;
            self.rotated = false;
            if last {
                self.log_len = 0;
            }
        });
        if last && let Err(e) = &result {
            // Nothing is lost: every change is in the log, which the next start replays.
            warn!(self.log, "could not fold the state log into the state file at shutdown; the log is kept and replayed at the next start";
                "path" => %self.path.display(), "err" => %e);
        }
        self.written(&result, took, ctx);
        if last {
            for w in std::mem::take(&mut self.flushing) {
                let _ = w.send(Ok(()));
            }
        }
        self.drive(ctx);
    }

    /// Records the outcome of any write in metrics, logs and health; schedules a retry.
    fn written(&mut self, result: &Result<(), String>, took: Duration, ctx: &mut Context<Self>) {
        self.metrics.state_write_duration.observe(took.as_secs_f64());
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics.state_writes.with_label_values(&[label]).inc();
        match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(self.log, "state file writable again"; "path" => %self.path.display());
                }
            }
            Err(e) => {
                // Log each distinct error once, not once per retry.
                if self.last_error.as_ref() != Some(e) {
                    error!(self.log, "cannot write state; keeping state in memory and retrying";
                        "path" => %self.path.display(), "err" => %e);
                }
                self.last_error = Some(e.clone());
                if !self.retry_pending {
                    self.retry_pending = true;
                    ctx.run_later(RETRY_AFTER, |act, ctx| {
                        act.retry_pending = false;
                        act.drive(ctx);
                    });
                }
            }
        }
        self.health.do_send(StateWritten(result.clone().map_err(|e| format!("{}: {e}", self.path.display()))));
    }
}

impl Actor for StateStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A rotated log left by a crash is folded into a snapshot without waiting for a change.
        self.drive(ctx);
    }
}

/// Replaces one cadence's state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Update {
    /// Namespace name.
    pub namespace: String,
    /// Cadence.
    pub cadence: CadenceKind,
    /// Its new state.
    pub state: CadenceState,
    /// Answered once the change is on disk, if given.
    pub ack: Option<Ack>,
}

/// Asks for a namespace's state (empty if unknown).
#[derive(Message)]
#[rtype(result = "NamespaceState")]
pub struct GetNamespace(pub String);

/// Makes everything durable and writes a last snapshot; answered once it is on disk.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush(pub Ack);

impl Handler<Update> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Update, ctx: &mut Context<Self>) {
        let record = Record { ns: msg.namespace, cadence: msg.cadence, state: msg.state };
        wal::encode_into(&mut self.queued, &record);
        let ns = self.namespaces.entry(record.ns).or_default();
        Arc::make_mut(ns).cadences.insert(record.cadence, record.state);
        if let Some(ack) = msg.ack {
            self.waiting.push(ack);
        }
        self.drive(ctx);
    }
}

impl Handler<GetNamespace> for StateStore {
    type Result = MessageResult<GetNamespace>;
    fn handle(&mut self, msg: GetNamespace, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.namespaces.get(&msg.0).map(|ns| (**ns).clone()).unwrap_or_default())
    }
}

impl Handler<Flush> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) {
        // At shutdown a write is tried now, even if a retry is still waiting.
        if self.retry_pending {
            warn!(self.log, "shutting down while the state cannot be written; trying once more");
        }
        self.retry_pending = false;
        self.flushing.push(msg.0);
        self.drive(ctx);
    }
}

impl Handler<Ping> for StateStore {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::health::actor::{ConfigReport, HealthActor, StateReport};
    use crate::state::{Origin, load_with_log};

    fn log_file(dir: &Path) -> LogFile {
        let state = dir.join("s.json");
        LogFile { path: wal::path(&state), rotated_path: wal::rotated_path(&state), valid_len: 0 }
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

    fn update(ns: &str, last: i64) -> (Update, oneshot::Receiver<Result<(), String>>) {
        let (ack, acked) = oneshot::channel();
        let state = CadenceState { last_success_ms: Some(last), ..CadenceState::default() };
        (Update { namespace: ns.into(), cadence: CadenceKind::Fast, state, ack: Some(ack) }, acked)
    }

    fn last_of(state: &StateFile, ns: &str) -> Option<i64> {
        state.namespaces.get(ns)?.cadences.get(&CadenceKind::Fast)?.last_success_ms
    }

    #[actix_rt::test]
    async fn changes_are_durable_when_acknowledged_and_the_log_is_folded_into_snapshots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/s.json");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("state dir");
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(SystemClock::new());
        let report = StateReport { path: String::new(), origin: "fresh".into(), last_write_ms: None, error: None };
        let health =
            HealthActor::new(clock, Duration::from_secs(1), Duration::from_secs(1), ConfigReport::default(), report)
                .start();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let log = Logger::root(slog::Discard, slog::o!());
        let store =
            StateStore::new(path.clone(), StateFile::default(), LogOnDisk::default(), health.recipient(), metrics, log)
                .compact_after(4096)
                .start();
        for i in 0..400 {
            let (msg, acked) = update(&format!("ns{}", i % 40), i);
            store.do_send(msg);
            acked.await.expect("answered").expect("durable");
            // Acknowledged means on disk: a restart now would see it.
            if i % 97 == 0 {
                let loaded = load_with_log(&path).expect("loads");
                assert_eq!(last_of(&loaded.state, &format!("ns{}", i % 40)), Some(i), "change {i}");
            }
        }
        // 400 records are far more than 4 KiB: the log was rotated and folded at least once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() || wal::rotated_path(&path).exists() {
            assert!(Instant::now() < deadline, "no snapshot was written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (snapshot, origin) = crate::state::parse(&std::fs::read(&path).expect("snapshot")).expect("parses");
        assert_eq!(origin, Origin::Current);
        assert_eq!(snapshot.namespaces.len(), 40, "the snapshot holds every namespace");
        let loaded = load_with_log(&path).expect("loads");
        for n in 0..40 {
            assert_eq!(last_of(&loaded.state, &format!("ns{n}")), Some(360 + n), "ns{n}");
        }
        // A shutdown leaves the state file complete and no log.
        let (ack, flushed) = oneshot::channel();
        store.do_send(Flush(ack));
        flushed.await.expect("answered").expect("flushed");
        assert!(!wal::path(&path).exists() && !wal::rotated_path(&path).exists());
        let (alone, _) = crate::state::parse(&std::fs::read(&path).expect("snapshot")).expect("parses");
        assert_eq!(alone, loaded.state);
    }
}
