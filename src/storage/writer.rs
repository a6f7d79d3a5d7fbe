//! The storage writer: one thread that does the file work of every anchor's durable writes
//! (journal lines and receipts alike) in rounds of the group commit.
//!
//! Made durable one by one, each write is a sleep and a wake-up of a blocking thread, and at
//! thousands of anchors a second those thread switches cost more than the writes. Here one
//! thread takes every write queued since its last round, does them all without syncing, and
//! makes them durable together with one round of [`GroupCommit`]. A write is answered only
//! once its round has synced it, so whoever waits on it may treat the answer as durable.
//!
//! A write that needs another to be durable first (a receipt naming a journal line) names the
//! round of the first: it is done in a later round, and only if that round synced. The first
//! write is answered as soon as it is written ([`Writer::written`]), so the second reaches
//! the thread while the first's round syncs and joins the very next round, as it would if one
//! job did both.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::storage::group_commit::{GroupCommit, Touched};
use crate::worker_thread::WorkerThread;

/// Writes taken into one round at most, so a burst neither holds the first of them back for
/// long nor makes one round's list unbounded.
const MAX_PER_ROUND: usize = 512;

/// Rounds whose outcome is remembered, for writes that depend on an earlier round. A write
/// names a round at most a few rounds back; one older than this counts as not durable, which
/// only makes its anchor be resumed.
const REMEMBERED_ROUNDS: usize = 4096;

/// What is left of a write once its files are written: told whether the round made them
/// durable.
type Finish = Box<dyn FnOnce(Result<(), &io::Error>) + Send>;

/// A write for the writer thread: writes without syncing, notes the files it touched, and
/// returns what to do when the round ends (nothing if it failed before touching anything).
type Work = Box<dyn FnOnce(&mut Touched, &Round<'_>) -> Option<Finish> + Send>;

/// The round a write is done in, and what became of earlier ones.
struct Round<'a> {
    id: u64,
    outcomes: &'a Outcomes,
}

/// Whether each recent round synced, by round id; shared by the threads a writer has had,
/// so a round that never finished (its thread died) never counts as durable.
#[derive(Debug)]
struct Outcomes {
    next: AtomicU64,
    synced: Mutex<Vec<(u64, bool)>>,
}

impl Outcomes {
    fn new() -> Self {
        Self { next: AtomicU64::new(1), synced: Mutex::new(vec![(0, false); REMEMBERED_ROUNDS]) }
    }

    fn begin(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, id: u64, ok: bool) {
        let slot = usize::try_from(id).unwrap_or(0) % REMEMBERED_ROUNDS;
        self.synced.lock().unwrap_or_else(PoisonError::into_inner)[slot] = (id, ok);
    }

    fn durable(&self, id: u64) -> bool {
        let slot = usize::try_from(id).unwrap_or(0) % REMEMBERED_ROUNDS;
        self.synced.lock().unwrap_or_else(PoisonError::into_inner)[slot] == (id, true)
    }
}

/// Why a write did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The write itself failed; nothing was synced for it.
    #[error("{0}")]
    Write(E),
    /// The write went through but the round that was to make it durable failed.
    #[error("syncing the file system failed: {0}")]
    NotDurable(io::Error),
    /// The writer thread could not be started, or stopped before answering.
    #[error("the storage writer {0}")]
    Stopped(&'static str),
}

/// A queue to the storage writer thread; cheap to share.
pub struct Writer {
    thread: WorkerThread<Work>,
    commit: Arc<GroupCommit>,
    outcomes: Arc<Outcomes>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Writer {
    /// A writer whose rounds are `commit`'s; its thread starts with the first write.
    pub fn new(commit: Arc<GroupCommit>) -> Self {
        let outcomes = Arc::new(Outcomes::new());
        let (rounds, shared) = (Arc::clone(&commit), Arc::clone(&outcomes));
        Self { thread: WorkerThread::new("vmsh-storage", move |rx| run(&rx, &rounds, &shared)), commit, outcomes }
    }

    /// Runs `write` on the writer thread (it writes without syncing and notes what it
    /// touched in the [`Touched`] it is given) and answers with its value once a round of the
    /// group commit has made it durable.
    pub async fn durable<T, E>(
        &self,
        write: impl FnOnce(&mut Touched) -> Result<T, E> + Send + 'static,
    ) -> Result<T, WriteError<E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        self.durable_after(None, write).await
    }

    /// [`durable`](Self::durable), for a write that must follow round `after` (when given):
    /// it is done in a later round, and fails as not durable if round `after` did not sync.
    pub async fn durable_after<T, E>(
        &self,
        after: Option<u64>,
        write: impl FnOnce(&mut Touched) -> Result<T, E> + Send + 'static,
    ) -> Result<T, WriteError<E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T, WriteError<E>>>();
        let work: Work = Box::new(move |touched, round| {
            if let Some(earlier) = after
                && !round.outcomes.durable(earlier)
            {
                let why = io::Error::other(format!("the write it follows (round {earlier}) was not made durable"));
                let _ = answer.send(Err(WriteError::NotDurable(why)));
                return None;
            }
            match write(touched) {
                Ok(value) => Some(Box::new(move |synced: Result<(), &io::Error>| {
                    let outcome = synced
                        .map(|()| value)
                        .map_err(|e| WriteError::NotDurable(io::Error::new(e.kind(), e.to_string())));
                    // The asker may have timed out or been cancelled; its attempt is resumed.
                    let _ = answer.send(outcome);
                })),
                Err(e) => {
                    let _ = answer.send(Err(WriteError::Write(e)));
                    None
                }
            }
        });
        self.thread.send(work).map_err(|_| WriteError::Stopped("could not be started"))?;
        answered.await.unwrap_or(Err(WriteError::Stopped("stopped before the write was durable")))
    }

    /// Runs `write` on the writer thread and answers as soon as it is written, not yet
    /// durable, with the round that will make it so: a write that depends on it passes that
    /// round to [`durable_after`](Self::durable_after).
    pub async fn written<T, E>(
        &self,
        write: impl FnOnce(&mut Touched) -> Result<T, E> + Send + 'static,
    ) -> Result<(T, u64), WriteError<E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<(T, u64), WriteError<E>>>();
        let work: Work = Box::new(move |touched, round| {
            let _ = answer.send(write(touched).map(|value| (value, round.id)).map_err(WriteError::Write));
            None
        });
        self.thread.send(work).map_err(|_| WriteError::Stopped("could not be started"))?;
        answered.await.unwrap_or(Err(WriteError::Stopped("stopped before the write was done")))
    }

    /// Whether round `id` made its writes durable (false while it runs, and for a round too
    /// old to be remembered).
    pub fn round_durable(&self, id: u64) -> bool {
        self.outcomes.durable(id)
    }

    /// Rounds of the group commit run so far, by this writer or anyone sharing its commit.
    pub fn rounds(&self) -> u64 {
        self.commit.rounds()
    }
}

/// The writer's loop: it ends when every sender is dropped.
fn run(rx: &Receiver<Work>, commit: &GroupCommit, outcomes: &Outcomes) {
    while let Ok(first) = rx.recv() {
        let mut works = vec![first];
        while works.len() < MAX_PER_ROUND {
            match rx.try_recv() {
                Ok(work) => works.push(work),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        round(works, commit, outcomes);
    }
}

/// One round: does every write, syncs what they touched in one round of the group commit,
/// then tells each write how that went.
fn round(works: Vec<Work>, commit: &GroupCommit, outcomes: &Outcomes) {
    let round = Round { id: outcomes.begin(), outcomes };
    let mut touched = Touched::default();
    let finishing: Vec<Finish> = works.into_iter().filter_map(|work| work(&mut touched, &round)).collect();
    let synced = if touched.is_empty() { Ok(()) } else { commit.sync_touched(&touched) };
    outcomes.record(round.id, synced.is_ok());
    for finish in finishing {
        finish(synced.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::group_commit::failing_sync;
    use std::fs::File;
    use std::io::Write;

    fn write_file(path: std::path::PathBuf) -> impl FnOnce(&mut Touched) -> Result<String, String> + Send {
        move |touched| {
            let mut file = File::create(&path).map_err(|e| e.to_string())?;
            file.write_all(b"x").map_err(|e| e.to_string())?;
            touched.add(&Arc::new(file)).map_err(|e| e.to_string())?;
            Ok(path.display().to_string())
        }
    }

    #[actix_rt::test]
    async fn a_write_is_answered_once_a_round_has_synced_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Writer::new(Arc::new(GroupCommit::new()));
        let path = tmp.path().join("a");
        let answer = writer.durable(write_file(path.clone())).await.expect("durable");
        assert_eq!(answer, path.display().to_string());
        assert_eq!(writer.rounds(), 1);
    }

    #[actix_rt::test]
    async fn a_failed_write_is_answered_with_its_error_and_syncs_nothing() {
        let writer = Writer::new(Arc::new(GroupCommit::new()));
        let err = writer.durable(|_: &mut Touched| Err::<(), _>("disk says no")).await.expect_err("failed");
        assert!(matches!(err, WriteError::Write("disk says no")), "{err:?}");
        assert_eq!(writer.rounds(), 0, "nothing was touched, so nothing was synced");
    }

    #[actix_rt::test]
    async fn a_failed_round_fails_every_write_in_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Writer::new(Arc::new(GroupCommit::with_sync(failing_sync)));
        let err = writer.durable(write_file(tmp.path().join("a"))).await.expect_err("not durable");
        assert!(matches!(&err, WriteError::NotDurable(e) if e.to_string().contains("EIO")), "{err:?}");
    }

    #[actix_rt::test]
    async fn a_write_that_follows_a_synced_round_is_done_in_a_later_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Writer::default();
        let (_, round) = writer.written(write_file(tmp.path().join("line"))).await.expect("written");
        writer.durable_after(Some(round), write_file(tmp.path().join("receipt"))).await.expect("durable");
        assert!(writer.round_durable(round), "round {round} synced");
        assert_eq!(writer.rounds(), 2, "the dependent write had a round of its own");
    }

    #[actix_rt::test]
    async fn a_write_that_follows_a_failed_round_is_refused_and_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Writer::new(Arc::new(GroupCommit::with_sync(failing_sync)));
        let (_, round) = writer.written(write_file(tmp.path().join("line"))).await.expect("written");
        let receipt = tmp.path().join("receipt");
        let err = writer.durable_after(Some(round), write_file(receipt.clone())).await.expect_err("refused");
        assert!(matches!(&err, WriteError::NotDurable(e) if e.to_string().contains("not made durable")), "{err:?}");
        assert!(!receipt.exists(), "nothing is written after a round that failed");
        assert!(!writer.round_durable(round));
    }

    #[actix_rt::test]
    async fn a_write_that_follows_a_round_never_run_is_refused() {
        let writer = Writer::default();
        let err = writer.durable_after(Some(99), |_: &mut Touched| Ok::<_, String>(())).await.expect_err("refused");
        assert!(matches!(err, WriteError::NotDurable(_)), "{err:?}");
    }

    #[actix_rt::test]
    async fn concurrent_writes_share_rounds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let writer = Arc::new(Writer::new(Arc::new(GroupCommit::new())));
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let (writer, path) = (Arc::clone(&writer), tmp.path().join(format!("f{i}")));
                tokio::spawn(async move { writer.durable(write_file(path)).await })
            })
            .collect();
        for write in writes {
            write.await.expect("task").expect("durable");
        }
        let rounds = writer.rounds();
        assert!(rounds < 200, "200 writes took {rounds} rounds: none were shared");
    }
}
