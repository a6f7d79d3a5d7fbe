//! The batch reader: one thread that reads the latest batch for every namespace that asks, and
//! is left behind and replaced when a read does not return.
//!
//! A run begins by reading its namespace's latest batch. On a blocking thread per read, the
//! wake-up and sleep of that thread cost more than the read; here one thread takes every
//! request queued since it last looked, and a folder asked for by several of them (the
//! shared `out/batches`) is read once for all. Every answer comes from a read that began
//! after its request arrived, so no request sees a batch older than it would have alone.
//!
//! One thread for everyone means one read that never returns (a file on a hung NFS or FUSE
//! mount: no timeout interrupts a `read(2)` there) would stop every namespace. So the thread
//! announces each step that can block (see [`Watch`]), and whoever waits for an answer looks
//! now and then whether the step under way has been going for longer than the read timeout.
//! If so, that read's request fails, the rest of the thread's work goes back to the queue and a
//! new thread takes over. The old thread cannot be killed; it ends when its read returns. Until
//! then its path, and everything under it, is not read again, so a hung mount holds one thread,
//! not one per retry. With [`MAX_STUCK_READS`] reads stuck at once no thread is started any
//! more: every request fails at once, `/livez` fails, and reading resumes if one returns.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntGauge;
use serde::Serialize;
use slog::{Logger, error, info, warn};
use tokio::sync::oneshot;

use super::{Batch, BatchError, Watch, batch_dir, latest_in};
use crate::clock::{Clock, MonoMs, WallMs};

/// Reads stuck at once beyond which no new thread is started: each holds a thread (and what
/// its file system holds for it) until it returns.
pub const MAX_STUCK_READS: usize = 4;

/// Requests taken into one pass at most, so a burst does not hold the first of them back.
const MAX_PER_PASS: usize = 1024;

type Answer = Result<Option<Batch>, BatchError>;

/// Folders already read in this pass, and what they held.
type Seen = HashMap<PathBuf, Option<Batch>>;

/// Reads one namespace's latest batch under a root; replaced in tests by reads that block.
type Source = dyn Fn(&Path, &str, &mut Seen, &mut dyn Watch) -> Answer + Send + Sync;

struct Ask {
    namespace: String,
    reply: oneshot::Sender<Answer>,
}

/// Reads namespaces' latest batches under one root, on a thread of its own.
pub struct BatchReader {
    shared: Arc<Shared>,
}

/// What the reader's threads and its askers share.
struct Shared {
    root: PathBuf,
    /// How long one read may take, and one step of it may block.
    timeout: Duration,
    max_stuck: usize,
    clock: Arc<dyn Clock>,
    source: Box<Source>,
    /// `vmsh_batch_reads_stuck`.
    stuck_gauge: IntGauge,
    log: Logger,
    state: Mutex<State>,
    /// Wakes the current thread when requests arrive or the reader closes.
    work: Condvar,
}

struct State {
    /// Requests no thread has taken yet.
    queue: VecDeque<Ask>,
    /// The current thread's number; a thread left behind keeps its old one.
    generation: u64,
    /// Whether a thread of `generation` exists.
    running: bool,
    /// The current thread's pass, so its requests can be answered or handed on without it.
    pass: Option<Pass>,
    /// Threads left behind, still blocked.
    stuck: Vec<Stuck>,
    /// Reads found stuck since start.
    stuck_total: u64,
    /// Why the last thread could not be started.
    no_thread: Option<String>,
    closed: bool,
}

struct Pass {
    /// The requests of the pass; taken out as they are answered.
    asks: Vec<Option<Ask>>,
    /// The request being read.
    active: Option<usize>,
    /// The step under way: what it touches, and since when.
    step: Option<(PathBuf, MonoMs)>,
}

struct Stuck {
    generation: u64,
    path: PathBuf,
    since: MonoMs,
}

/// The reader's condition, for `/health`, `/livez` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReaderReport {
    /// Reads that did not return within the read timeout and still have not.
    pub stuck: Vec<StuckRead>,
    /// Reads found stuck since start.
    pub stuck_total: u64,
    /// Why no batch can be read at all, when none can: the scheduler cannot make progress.
    pub error: Option<String>,
}

/// A read left behind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StuckRead {
    /// What it is blocked on.
    pub path: String,
    /// When that step began (Unix ms).
    pub since_ms: WallMs,
}

/// Looks at the reader from outside (health and probes) without asking it for anything.
#[derive(Clone)]
pub struct ReaderMonitor(Arc<Shared>);

impl ReaderMonitor {
    /// The reader's condition now; a read stuck since the last look is left behind first.
    pub fn report(&self) -> ReaderReport {
        let shared = &self.0;
        shared.check();
        let state = shared.lock();
        ReaderReport {
            stuck: state
                .stuck
                .iter()
                .map(|s| StuckRead { path: s.path.display().to_string(), since_ms: shared.clock.wall_of_mono(s.since) })
                .collect(),
            stuck_total: state.stuck_total,
            error: shared.unavailable(&state).map(|e| e.to_string()),
        }
    }
}

impl BatchReader {
    /// A reader of batches under `root/out/batches` whose reads may take `timeout`; its thread
    /// starts with the first request. `stuck_gauge` shows the reads left behind.
    pub fn new(root: PathBuf, timeout: Duration, clock: Arc<dyn Clock>, stuck_gauge: IntGauge, log: Logger) -> Self {
        Self::with_source(root, timeout, MAX_STUCK_READS, clock, stuck_gauge, log, Box::new(read_namespace))
    }

    fn with_source(
        root: PathBuf,
        timeout: Duration,
        max_stuck: usize,
        clock: Arc<dyn Clock>,
        stuck_gauge: IntGauge,
        log: Logger,
        source: Box<Source>,
    ) -> Self {
        let state = State {
            queue: VecDeque::new(),
            generation: 0,
            running: false,
            pass: None,
            stuck: Vec::new(),
            stuck_total: 0,
            no_thread: None,
            closed: false,
        };
        let shared = Shared {
            root,
            timeout,
            max_stuck,
            clock,
            source,
            stuck_gauge,
            log,
            state: Mutex::new(state),
            work: Condvar::new(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// A view of the reader's condition.
    pub fn monitor(&self) -> ReaderMonitor {
        ReaderMonitor(Arc::clone(&self.shared))
    }

    /// The latest batch of `namespace` (`None` when there is none yet).
    pub fn latest(&self, namespace: &str) -> impl Future<Output = Answer> + 'static {
        let (reply, mut answer) = oneshot::channel();
        Arc::clone(&self.shared).enqueue(Ask { namespace: namespace.to_string(), reply });
        let shared = Arc::clone(&self.shared);
        async move {
            // A read that never returns answers nobody, so whoever waits looks for one.
            let every = (shared.timeout / 2).max(Duration::from_millis(10));
            loop {
                tokio::select! {
                    got = &mut answer => return got.unwrap_or(Err(BatchError::Stopped)),
                    () = tokio::time::sleep(every) => shared.check(),
                }
            }
        }
    }
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.queue.clear();
        self.shared.work.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it; the state is whole,
        // since nothing in it is left half-changed across a call that can panic.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX)
    }

    /// Why no request can be served now, if none can.
    fn unavailable(&self, state: &State) -> Option<BatchError> {
        if state.running {
            return None;
        }
        if state.stuck.len() >= self.max_stuck {
            let mut paths: Vec<String> = state.stuck.iter().take(3).map(|s| s.path.display().to_string()).collect();
            if state.stuck.len() > 3 {
                paths.push("…".into());
            }
            return Some(BatchError::Exhausted { count: state.stuck.len(), paths: paths.join(", ") });
        }
        state.no_thread.clone().map(BatchError::NoThread)
    }

    fn enqueue(self: Arc<Self>, ask: Ask) {
        let mut state = self.lock();
        if !state.running && state.stuck.len() >= self.max_stuck {
            let error = self.unavailable(&state).unwrap_or(BatchError::Stopped);
            let _ = ask.reply.send(Err(error));
            return;
        }
        state.queue.push_back(ask);
        self.start_thread(&mut state);
        self.work.notify_one();
    }

    /// Starts a thread for the queue if none runs and one may; a failure fails the queue.
    fn start_thread(self: &Arc<Self>, state: &mut State) {
        if state.running || state.closed || state.stuck.len() >= self.max_stuck {
            return;
        }
        let generation = state.generation;
        let shared = Arc::clone(self);
        match std::thread::Builder::new().name("vmsh-batches".into()).spawn(move || work(&shared, generation)) {
            Ok(_) => {
                state.running = true;
                state.no_thread = None;
            }
            Err(e) => {
                error!(self.log, "cannot start the batch reader's thread"; "err" => %e);
                state.no_thread = Some(e.to_string());
                for ask in state.queue.drain(..) {
                    let _ = ask.reply.send(Err(BatchError::NoThread(e.to_string())));
                }
            }
        }
    }

    /// Leaves the current thread behind if its step has been going on for longer than the
    /// timeout, and starts a thread again where one may run.
    fn check(self: &Arc<Self>) {
        let now = self.clock.mono_ms();
        let mut state = self.lock();
        let overdue = match state.pass.as_ref().and_then(|p| p.step.as_ref()) {
            Some((path, since)) if now.saturating_sub(*since) > self.timeout_ms() => Some((path.clone(), *since)),
            _ => None,
        };
        if let Some((path, since)) = overdue {
            self.leave_behind(&mut state, path, since, now);
        }
        if !state.queue.is_empty() {
            self.start_thread(&mut state);
        }
    }

    fn leave_behind(&self, state: &mut State, path: PathBuf, since: MonoMs, now: MonoMs) {
        if let Some(pass) = state.pass.take() {
            let mut asks = pass.asks;
            if let Some(ask) = pass.active.and_then(|i| asks.get_mut(i)).and_then(Option::take) {
                let _ = ask.reply.send(Err(BatchError::Stuck { path: path.clone(), limit: self.timeout }));
            }
            // The rest of the pass is served by the next thread, in the order it arrived.
            for ask in asks.into_iter().rev().flatten() {
                state.queue.push_front(ask);
            }
        }
        let generation = state.generation;
        state.stuck.push(Stuck { generation, path: path.clone(), since });
        state.stuck_total += 1;
        state.generation += 1;
        state.running = false;
        self.stuck_gauge.set(i64::try_from(state.stuck.len()).unwrap_or(i64::MAX));
        warn!(self.log, "a batch read did not return in time: the batch reader goes on without it";
            "file" => %path.display(), "duration_ms" => now.saturating_sub(since), "stuck_reads" => state.stuck.len());
        if let Some(error) = self.unavailable(state) {
            error!(self.log, "no batch can be read: too many batch reads are stuck"; "err" => %error);
            let waiting: Vec<Ask> = state.queue.drain(..).collect();
            for ask in waiting {
                let _ = ask.reply.send(Err(self.unavailable(state).unwrap_or(BatchError::Stopped)));
            }
        }
    }

    /// A thread left behind came back from its read.
    fn returned(&self, state: &mut State, generation: u64) {
        let now = self.clock.mono_ms();
        if let Some(at) = state.stuck.iter().position(|s| s.generation == generation) {
            let stuck = state.stuck.remove(at);
            self.stuck_gauge.set(i64::try_from(state.stuck.len()).unwrap_or(i64::MAX));
            info!(self.log, "a stuck batch read returned";
                "file" => %stuck.path.display(), "duration_ms" => now.saturating_sub(stuck.since),
                "stuck_reads" => state.stuck.len());
        }
    }
}

/// The thread: takes passes of requests until it is left behind or the reader closes.
fn work(shared: &Arc<Shared>, generation: u64) {
    loop {
        let namespaces: Vec<String> = {
            let mut state = shared.lock();
            loop {
                if state.closed || state.generation != generation {
                    return;
                }
                if !state.queue.is_empty() {
                    break;
                }
                state = shared.work.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            let take = state.queue.len().min(MAX_PER_PASS);
            let asks: Vec<Option<Ask>> = state.queue.drain(..take).map(Some).collect();
            let namespaces = asks.iter().flatten().map(|a| a.namespace.clone()).collect();
            state.pass = Some(Pass { asks, active: None, step: None });
            namespaces
        };
        let mut seen = Seen::new();
        for (i, namespace) in namespaces.iter().enumerate() {
            {
                let mut state = shared.lock();
                let Some(pass) = state.pass.as_mut() else { break };
                if pass.asks.get(i).is_none_or(Option::is_none) {
                    continue;
                }
                pass.active = Some(i);
                pass.step = None;
            }
            let mut watch = Steps { shared, generation, deadline: shared.clock.mono_ms() + shared.timeout_ms() };
            let read =
                catch_unwind(AssertUnwindSafe(|| (shared.source)(&shared.root, namespace, &mut seen, &mut watch)));
            let answer = read.unwrap_or_else(|_| {
                Err(BatchError::Io {
                    path: shared.root.join("out").join("batches"),
                    source: std::io::Error::other(format!("reading the batch of {namespace:?} failed unexpectedly")),
                })
            });
            let mut state = shared.lock();
            if state.generation != generation {
                // Left behind while it read: its requests were answered or handed on.
                shared.returned(&mut state, generation);
                return;
            }
            if let Some(pass) = state.pass.as_mut() {
                pass.active = None;
                pass.step = None;
                if let Some(ask) = pass.asks.get_mut(i).and_then(Option::take) {
                    // The run may have been given up (a shutdown); nothing waits then.
                    let _ = ask.reply.send(answer);
                }
            }
        }
        let mut state = shared.lock();
        if state.generation == generation {
            state.pass = None;
        }
    }
}

/// Announces a thread's steps: the time of the step under way is what [`Shared::check`] looks
/// at, and a read stops at a path an earlier read is stuck in or when its time is up.
struct Steps<'a> {
    shared: &'a Shared,
    generation: u64,
    deadline: MonoMs,
}

impl Watch for Steps<'_> {
    fn step(&mut self, path: &Path) -> Result<(), BatchError> {
        let limit = self.shared.timeout;
        let now = self.shared.clock.mono_ms();
        let mut state = self.shared.lock();
        if state.generation != self.generation {
            // Left behind: nobody waits for this read any more.
            return Err(BatchError::Stuck { path: path.to_path_buf(), limit });
        }
        if let Some(stuck) = state.stuck.iter().find(|s| path.starts_with(&s.path)) {
            return Err(BatchError::StillStuck { path: path.to_path_buf(), stuck: stuck.path.clone() });
        }
        if now > self.deadline {
            return Err(BatchError::Slow { path: path.to_path_buf(), limit });
        }
        if let Some(pass) = state.pass.as_mut() {
            pass.step = Some((path.to_path_buf(), now));
        }
        Ok(())
    }
}

/// Reads a namespace's latest batch, reusing a folder already read in this pass.
fn read_namespace(root: &Path, namespace: &str, seen: &mut Seen, watch: &mut dyn Watch) -> Answer {
    let dir = batch_dir(root, namespace, watch)?;
    if let Some(batch) = seen.get(&dir) {
        return Ok(batch.clone());
    }
    let answer = latest_in(&dir, watch);
    // An error is rare and cheap to meet again; only a good read is shared.
    if let Ok(batch) = &answer {
        seen.insert(dir, batch.clone());
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::fs;
    use std::sync::mpsc;
    use std::time::Instant;

    const ROOT: &str = "sha256:5bd2f6cfdc3c4e36ce1e2a7ed6bc59c4c9a9a0a4f8c1fe3f36f3aa5b7b0c3a11";
    const LIMIT: Duration = Duration::from_secs(1);

    fn write(dir: &Path, name: &str, id: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join(name), format!(r#"{{"id":"{id}","root":"{ROOT}"}}"#)).expect("write");
    }

    fn quiet() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn gauge() -> IntGauge {
        IntGauge::new("test_stuck", "test").expect("gauge")
    }

    fn fs_reader(root: &Path) -> BatchReader {
        BatchReader::new(root.to_path_buf(), LIMIT, Arc::new(crate::clock::SystemClock::new()), gauge(), quiet())
    }

    /// Polls `done` until it holds, for at most 5 s.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A source whose namespaces named `hung…` block, as a read on a hung mount does, until
    /// released; `hold` blocks without announcing a step (a read that is merely slow); `boom`
    /// panics; `slow` takes steps while its clock runs out; any other namespace has a batch
    /// whose id is its name.
    struct Fake {
        reader: BatchReader,
        clock: ManualClock,
        gauge: IntGauge,
        /// The namespaces that reached their blocking read.
        blocked: mpsc::Receiver<String>,
        /// Opens the reads of `hung…`.
        released: Gate,
        /// Opens the read of `hold`.
        held: Gate,
    }

    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl Gate {
        fn wait(&self) {
            let (open, turn) = &*self.0;
            let mut open = open.lock().expect("gate");
            while !*open {
                open = turn.wait(open).expect("gate");
            }
        }

        fn open(&self) {
            let (open, turn) = &*self.0;
            *open.lock().expect("gate") = true;
            turn.notify_all();
        }
    }

    impl Fake {
        fn new(max_stuck: usize) -> Self {
            let clock = ManualClock::new(1_000_000);
            let (tell, blocked) = mpsc::channel();
            let (released, held) = (Gate::default(), Gate::default());
            let (hung_gate, hold_gate, ticking) = (released.clone(), held.clone(), clock.clone());
            let source = move |_: &Path, ns: &str, _: &mut Seen, watch: &mut dyn Watch| -> Answer {
                if ns.starts_with("hung") {
                    watch.step(&Path::new("/hung").join(ns))?;
                    tell.send(ns.to_string()).expect("test listens");
                    hung_gate.wait();
                } else if ns == "hold" {
                    tell.send(ns.to_string()).expect("test listens");
                    hold_gate.wait();
                } else if ns == "boom" {
                    panic!("a read that panics");
                } else if ns == "slow" {
                    loop {
                        watch.step(Path::new("/slow"))?;
                        ticking.advance(300);
                    }
                }
                Ok(Some(Batch { id: ns.to_string(), root: [0; 32], file: PathBuf::from(ns) }))
            };
            let gauge = gauge();
            let reader = BatchReader::with_source(
                PathBuf::from("/root"),
                LIMIT,
                max_stuck,
                Arc::new(clock.clone()),
                gauge.clone(),
                quiet(),
                Box::new(source),
            );
            Self { reader, clock, gauge, blocked, released, held }
        }

        fn wait_blocked(&self, ns: &str) {
            let got = self.blocked.recv_timeout(Duration::from_secs(5)).expect("a read to block");
            assert_eq!(got, ns);
        }

        fn release(&self) {
            self.released.open();
        }

        /// Lets the step under way run over its time, and has the reader look.
        fn overrun(&self) -> ReaderReport {
            self.clock.advance(1_001);
            self.reader.monitor().report()
        }
    }

    fn id(answer: Answer) -> String {
        match answer {
            Ok(Some(b)) => b.id,
            Ok(None) => "none".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[actix_rt::test]
    async fn answers_each_namespace_from_its_own_folder_or_the_shared_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("out/batches");
        write(&shared, "0001.json", "shared-1");
        write(&shared.join("own"), "0001.json", "own-1");
        let reader = fs_reader(tmp.path());
        let asks: Vec<_> = ["a", "own", "b"].iter().map(|ns| reader.latest(ns)).collect();
        let mut ids = Vec::new();
        for ask in asks {
            ids.push(ask.await.expect("read").map(|b| b.id));
        }
        assert_eq!(ids, [Some("shared-1".into()), Some("own-1".into()), Some("shared-1".into())]);
    }

    #[actix_rt::test]
    async fn a_batch_written_after_an_answer_is_seen_by_the_next_request() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reader = fs_reader(tmp.path());
        assert_eq!(reader.latest("ns").await.expect("read"), None, "no batch yet is not an error");
        write(&tmp.path().join("out/batches"), "0001.json", "b1");
        assert_eq!(reader.latest("ns").await.expect("read").map(|b| b.id), Some("b1".into()));
        write(&tmp.path().join("out/batches"), "0002.json", "b2");
        assert_eq!(reader.latest("ns").await.expect("read").map(|b| b.id), Some("b2".into()));
    }

    #[actix_rt::test]
    async fn every_request_is_answered_and_errors_reach_each_asker() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("out/batches");
        write(&shared, "0001.json", "b1");
        fs::create_dir_all(shared.join("bad")).expect("mkdir");
        fs::write(shared.join("bad").join("0001.json"), "not json").expect("write");
        let reader = fs_reader(tmp.path());
        let asks: Vec<_> = ["a", "bad", "b", "bad"].iter().map(|ns| reader.latest(ns)).collect();
        let mut got = Vec::new();
        for ask in asks {
            got.push(id(ask.await));
        }
        assert_eq!(got[0], "b1");
        assert_eq!(got[2], "b1");
        assert!(got[1].starts_with("error:") && got[1].contains("not a valid batch"), "{}", got[1]);
        assert_eq!(got[1], got[3]);
    }

    #[actix_rt::test]
    async fn a_read_that_does_not_return_fails_its_request_and_a_new_thread_serves_the_others() {
        let f = Fake::new(MAX_STUCK_READS);
        // `hold` keeps the first thread busy until the next two are queued, so they form one pass.
        let first = f.reader.latest("hold");
        f.wait_blocked("hold");
        let hung = f.reader.latest("hung-1");
        let other = f.reader.latest("a");
        f.held.open();
        assert_eq!(id(first.await), "hold");
        f.wait_blocked("hung-1");
        let report = f.overrun();
        assert_eq!(report.stuck.len(), 1, "{report:?}");
        assert_eq!(report.stuck[0].path, "/hung/hung-1");
        assert_eq!((report.stuck_total, report.error.clone()), (1, None));
        assert_eq!(f.gauge.get(), 1);
        let failed = id(hung.await);
        assert!(failed.contains("reading /hung/hung-1 did not return within 1s"), "{failed}");
        assert_eq!(id(other.await), "a", "the rest of the pass is served by a new thread");
        assert_eq!(id(f.reader.latest("b").await), "b");
        // The thread left behind ends when its read returns.
        f.release();
        eventually("the stuck read to return", || f.reader.monitor().report().stuck.is_empty());
        assert_eq!(f.gauge.get(), 0);
        assert_eq!(f.reader.monitor().report().stuck_total, 1);
    }

    #[actix_rt::test]
    async fn a_path_still_stuck_is_not_read_again() {
        let f = Fake::new(MAX_STUCK_READS);
        let hung = f.reader.latest("hung-1");
        f.wait_blocked("hung-1");
        f.overrun();
        assert!(id(hung.await).contains("did not return"));
        let again = id(f.reader.latest("hung-1").await);
        assert!(
            again.contains("/hung/hung-1 is not read: an earlier read of /hung/hung-1 has not returned"),
            "{again}"
        );
        assert!(f.blocked.try_recv().is_err(), "a second thread blocked on the same path");
        assert_eq!(f.reader.monitor().report().stuck.len(), 1);
        f.release();
    }

    #[actix_rt::test]
    async fn with_too_many_reads_stuck_every_request_fails_until_one_returns() {
        let f = Fake::new(2);
        for ns in ["hung-1", "hung-2"] {
            let hung = f.reader.latest(ns);
            f.wait_blocked(ns);
            f.overrun();
            assert!(id(hung.await).contains("did not return"));
        }
        let report = f.reader.monitor().report();
        let error = report.error.expect("the reader says it cannot go on");
        assert!(
            error.contains("no batch can be read: 2 batch reads have not returned (/hung/hung-1, /hung/hung-2)"),
            "{error}"
        );
        assert_eq!(f.gauge.get(), 2);
        let refused = id(f.reader.latest("a").await);
        assert!(refused.contains("no batch can be read"), "{refused}");
        f.release();
        eventually("the stuck reads to return", || f.reader.monitor().report().stuck.is_empty());
        assert_eq!(f.reader.monitor().report().error, None);
        assert_eq!(id(f.reader.latest("a").await), "a");
    }

    #[actix_rt::test]
    async fn a_read_that_keeps_going_past_its_time_is_given_up() {
        let f = Fake::new(MAX_STUCK_READS);
        let slow = id(f.reader.latest("slow").await);
        assert!(slow.contains("reading /slow took longer than 1s and was given up"), "{slow}");
        assert_eq!(f.reader.monitor().report().stuck_total, 0, "a read that returns is not stuck");
        assert_eq!(id(f.reader.latest("a").await), "a");
    }

    #[actix_rt::test]
    async fn a_read_that_panics_fails_only_its_request() {
        let f = Fake::new(MAX_STUCK_READS);
        let boom = id(f.reader.latest("boom").await);
        assert!(boom.contains("reading the batch of \"boom\" failed unexpectedly"), "{boom}");
        assert_eq!(id(f.reader.latest("a").await), "a");
    }

    #[test]
    fn a_step_of_a_thread_not_yet_overdue_is_left_alone() {
        let f = Fake::new(MAX_STUCK_READS);
        let _hung = f.reader.latest("hung-1");
        f.wait_blocked("hung-1");
        f.clock.advance(1_000);
        assert!(f.reader.monitor().report().stuck.is_empty(), "exactly the limit is not over it");
        f.clock.advance(1);
        assert_eq!(f.reader.monitor().report().stuck.len(), 1);
        f.release();
    }
}
