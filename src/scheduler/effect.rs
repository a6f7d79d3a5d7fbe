//! What a cadence's decisions ask the `NamespaceActor` to do.
//!
//! Each [`CadenceTrack`](super::track::CadenceTrack) method that handles something happening
//! returns a list of [`Effect`]s, carried out in order: the decision stays a pure function
//! and the actor only does the I/O. What is logged and counted is an [`Event`], emitted in
//! one place, so a handler never interleaves log lines and metric updates.

use std::path::PathBuf;
use std::time::Duration;

use crate::anchor::pool::JobMode;
use crate::clock::{MonoMs, WallMs};
use crate::model::{AnchorError, Pending};
use crate::storage::state::AttemptRecord;

/// Something the actor does for a cadence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Log and count what happened.
    Emit(Event),
    /// Write the cadence's state; nothing waits for it.
    Persist,
    /// Write the cadence's state and, once it is on disk, report to
    /// [`attempt_recorded`](super::track::CadenceTrack::attempt_recorded) with this job:
    /// nothing is sent for an attempt a crash could forget.
    Record(Job),
    /// Read the namespace's latest batch and report it to
    /// [`batch_read`](super::track::CadenceTrack::batch_read).
    ReadBatch,
    /// Count a first send, then hand the job to the pool; its result comes back to
    /// [`job_finished`](super::track::CadenceTrack::job_finished).
    Submit(Job),
    /// Set the cadence's timer for this instant (monotonic), replacing the one set before.
    Timer(MonoMs),
    /// The cadence left the config: put its state aside for when it comes back.
    Retire,
    /// A run ended: drop the metric series of targets no longer in use, refresh the
    /// namespace's backoff gauge, then stop a namespace that left the config once nothing
    /// runs, or else publish.
    RunEnded,
    /// Send the namespace's status to /health.
    Publish,
}

/// An attempt to hand to the pool.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Job {
    /// The attempt.
    pub record: AttemptRecord,
    /// Its batch's root.
    pub root: [u8; 32],
    /// Send, resume or confirm.
    pub mode: JobMode,
    /// When its run was due (monotonic), for the lag measurement.
    pub due: MonoMs,
}

/// Something that happened to a cadence, to log and count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// An attempt left unfinished by the last shutdown or crash is resumed.
    Resuming,
    /// A recorded attempt was dropped: its target is no longer the cadence's.
    Abandoned {
        /// The attempt's id.
        attempt: String,
        /// The target it was for.
        was: String,
    },
    /// Due with no batch to anchor: a skip, told once when the wait begins.
    NoBatch,
    /// The run due at `due_ms` was skipped, as an operator asked; the next is due at
    /// `next_ms` (Unix ms).
    RunSkipped {
        /// When the skipped run was due.
        due_ms: WallMs,
        /// When the next run by period is due.
        next_ms: WallMs,
    },
    /// A run by period began more than a period late: `periods` runs were missed.
    Missed {
        /// Whole periods between when it was due and now.
        periods: u64,
        /// How late it began.
        late_ms: i64,
        /// Why.
        reason: super::track::Late,
    },
    /// The batch could not be read: an attempt, which fails at once.
    BatchUnreadable {
        /// The cadence's target.
        target: String,
    },
    /// A first send began this long after its run was due.
    Lag {
        /// Milliseconds late, never negative.
        ms: i64,
    },
    /// The anchor is final and its receipt durable.
    Anchored(Box<Anchored>),
    /// The anchor is sent and waits for confirmations.
    Sent {
        /// The target it went to.
        target: String,
        /// The attempt's id.
        attempt: String,
        /// How deep it is.
        pending: Pending,
        /// When it was first sent (Unix ms).
        sent_ms: Option<WallMs>,
        /// Seen pending for the first time, rather than looked at again.
        newly: bool,
        /// How late its first send began, when this job was one.
        lag_ms: Option<i64>,
        /// The pending anchor as it stood before this look, if it was pending.
        before: Option<Box<Pending>>,
    },
    /// The anchor is no longer pending: final, dropped or refused.
    PendingEnded {
        /// The target it went to.
        target: String,
    },
    /// The target dropped the pending anchor, which is sent again.
    Resent {
        /// The target that dropped it.
        target: String,
        /// The attempt's id.
        attempt: String,
        /// What the driver saw.
        why: String,
        /// It had been mined (had confirmations) before it was gone: a reorg took it.
        reorged: bool,
    },
    /// Shutdown cut the job short; the attempt is resumed on the next start.
    Interrupted {
        /// The attempt's id.
        attempt: String,
        /// What the pool said.
        error: String,
    },
    /// Looking at the pending anchor failed; it is looked at again after `wait`.
    CheckFailed {
        /// The attempt's id.
        attempt: String,
        /// Why.
        error: AnchorError,
        /// Until the next look.
        wait: Duration,
    },
    /// The anchor, or the batch read before it, failed.
    Failed(Box<Failure>),
}

/// A final anchor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Anchored {
    /// The target it went to.
    pub target: String,
    /// The batch anchored.
    pub batch: String,
    /// The attempt's id.
    pub attempt: String,
    /// Where its receipt is.
    pub receipt: PathBuf,
    /// From the send to final (or the driver's time, when it was final at once).
    pub took: Duration,
    /// How late its first send began, when this job was one.
    pub lag_ms: Option<i64>,
    /// The target already held it: nothing was sent this time.
    pub recovered: bool,
    /// Where the cadence's period now counts from (Unix ms).
    pub run_wall: WallMs,
}

/// A failed anchor, and the backoff it caused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    /// The target it failed on.
    pub target: String,
    /// The attempt's id and batch, when an attempt had begun (a batch that cannot be read
    /// fails before that).
    pub attempt: Option<(String, String)>,
    /// What went wrong.
    pub error: AnchorError,
    /// The backoff level now.
    pub level: u32,
    /// Until the retry.
    pub delay: Duration,
    /// Failures since the last success.
    pub failures: u32,
    /// Time spent in the driver, when it is a failure of the driver's own.
    pub duration: Option<Duration>,
}
