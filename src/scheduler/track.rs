//! What the scheduler tracks for one cadence, and how each event changes it.
//!
//! A cadence is always in one [`Phase`]: idle until it is due, about to resume an attempt the
//! last stop left unfinished, waiting to look at a pending anchor again, or running (reading
//! the batch, recording the attempt, or with its job in the pool). Every decision the
//! `NamespaceActor` makes about a cadence is a method here: a pure function of the cadence's
//! config, its state and the current time (passed in as [`Now`]), so it is unit-tested
//! without a runtime or a real clock. The actor only owns the timer and does the I/O these
//! methods ask for.

use std::sync::Arc;
use std::time::Duration;

use super::attempt::attempt_id;
use super::backoff::BackoffPolicy;
use super::due;
use crate::batch::Batch;
use crate::clock::{MonoMs, WallMs};
use crate::config::CadenceConfig;
use crate::health::{CadenceSnapshot, PendingSnapshot, Settings, Waiting};
use crate::model::CadenceKind;
use crate::model::digest::parse_hex32;
use crate::model::time::duration_ms;
use crate::model::{AnchorError, ErrorClass, Pending};
use crate::state::{AttemptRecord, AttemptStatus, BatchRef, CadenceState, LastError};

/// The current time on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall clock, Unix ms.
    pub wall: WallMs,
    /// Monotonic clock, ms.
    pub mono: MonoMs,
}

impl Now {
    /// Places a wall-clock stamp on the monotonic timeline.
    pub fn mono_of(self, wall: WallMs) -> MonoMs {
        self.mono.saturating_sub(self.wall.saturating_sub(wall))
    }

    /// Converts a monotonic instant to wall-clock time.
    pub fn wall_of(self, mono: MonoMs) -> WallMs {
        self.wall.saturating_add(mono.saturating_sub(self.mono))
    }
}

/// How many times an anchor the target dropped is sent again before it counts as failed.
pub const MAX_RESENDS: u32 = 1;

/// What to do when the timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fire {
    /// Not due yet (woken early); re-arm.
    NotDue,
    /// Finish the recorded attempt of this period: ask the target, re-send if needed.
    Resume(AttemptRecord, [u8; 32]),
    /// Look at the pending anchor of this attempt again.
    Confirm(AttemptRecord, [u8; 32], Pending),
    /// Start a new attempt with the latest batch. `abandoned` names a recorded attempt that
    /// was dropped because its target is no longer the cadence's target.
    ReadBatch {
        /// The dropped attempt, if any.
        abandoned: Option<AttemptRecord>,
    },
}

/// Where a cadence is: between runs, one of three ways of waiting; else running. Each holds
/// the instants that only mean something in it.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting until it is due by period and backoff; `due` once armed.
    Idle { due: Option<MonoMs> },
    /// An attempt left unfinished by a crash or shutdown: it runs as soon as the timer fires;
    /// `due` once armed.
    Resume { due: Option<MonoMs> },
    /// The anchor is sent and waits for confirmations: it is looked at again at `look_at`,
    /// never sent again when its period comes round.
    Pending { look_at: MonoMs },
    /// A run is under way; the cadence's timer is not set.
    Running(Run),
}

/// A run under way.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    /// When it was due: the period of a success counts from there.
    due: MonoMs,
    /// How far it got.
    step: Step,
    /// The cadence left the config meanwhile: it retires when the run ends.
    retire: bool,
}

/// How far a run got.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Asking for the namespace's latest batch.
    ReadingBatch,
    /// Writing the attempt to the state file; nothing is sent before it is on disk.
    Recording,
    /// Handed to the pool `at`, for `target` (a reload may change the configured one meanwhile).
    Dispatched { at: Now, target: Box<str> },
}

/// One cadence's schedule and state.
#[derive(Debug, Clone, PartialEq)]
pub struct CadenceTrack {
    config: Arc<CadenceConfig>,
    /// What is persisted.
    state: CadenceState,
    /// The last success on the monotonic timeline.
    last_success_mono: Option<MonoMs>,
    /// The earliest retry on the monotonic timeline.
    retry_at_mono: Option<MonoMs>,
    phase: Phase,
    /// Why nothing is happening, when something blocks the cadence.
    waiting: Option<Waiting>,
    /// When this cadence was configured (Unix ms): the staleness reference until it succeeds.
    configured_ms: WallMs,
}

impl CadenceTrack {
    /// A cadence resuming from persisted `state`. A level above the policy's cap (state from
    /// a run with a higher VMSH_MAX_BACKOFF) is capped, a success stamped in the future (the
    /// wall clock stepped back) counts as now, and no retry waits longer than the longest
    /// backoff, whatever the wall clock did meanwhile.
    pub fn load(config: Arc<CadenceConfig>, mut state: CadenceState, now: Now, policy: &BackoffPolicy) -> Self {
        state.backoff = state.backoff.min(policy.max_level);
        let last_success_mono = state.last_success_ms.map(|w| now.mono_of(w).min(now.mono));
        let longest = duration_ms(policy.delay(policy.max_level, ErrorClass::Auth));
        let retry_at_mono = state.retry_at_ms.map(|w| now.mono_of(w).min(now.mono.saturating_add(longest)));
        // Unfinished at the last stop: resume at once (a pending anchor is looked at again).
        let unfinished = state.attempt.as_ref().is_some_and(|a| {
            matches!(a.status, AttemptStatus::Started | AttemptStatus::Interrupted | AttemptStatus::Pending)
        });
        let phase = if unfinished { Phase::Resume { due: None } } else { Phase::Idle { due: None } };
        Self { config, state, last_success_mono, retry_at_mono, phase, waiting: None, configured_ms: now.wall }
    }

    /// Its config.
    pub fn config(&self) -> &Arc<CadenceConfig> {
        &self.config
    }

    /// What is persisted.
    pub fn state(&self) -> &CadenceState {
        &self.state
    }

    /// What is persisted, kept aside when the cadence leaves the config.
    pub fn into_state(self) -> CadenceState {
        self.state
    }

    /// Whether a run is under way (batch read, attempt record or anchor).
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running(_))
    }

    /// Whether it resumes an attempt left unfinished by the last stop when the timer fires.
    pub fn resumes(&self) -> bool {
        matches!(self.phase, Phase::Resume { .. })
    }

    /// Whether it retires when the run under way ends.
    pub fn retiring(&self) -> bool {
        matches!(self.phase, Phase::Running(Run { retire: true, .. }))
    }

    /// Whether `target` is its configured target or that of the anchor it has in flight.
    pub fn uses_target(&self, target: &str) -> bool {
        self.config.target.is(target)
            || matches!(&self.phase, Phase::Running(Run { step: Step::Dispatched { target: t, .. }, .. }) if &**t == target)
    }

    /// The batches it refers to: the last anchored and the current attempt's.
    pub fn batches(&self) -> impl Iterator<Item = &BatchRef> {
        [self.state.last_batch.as_ref(), self.state.attempt.as_ref().map(|a| &a.batch)].into_iter().flatten()
    }

    /// When the run under way was due (monotonic), for the lag of its job.
    pub fn run_due(&self) -> Option<MonoMs> {
        match &self.phase {
            Phase::Running(run) => Some(run.due),
            _ => None,
        }
    }

    /// Records what the driver is about to send for attempt `id`; false when that attempt is no
    /// longer the current one.
    pub fn record_progress(&mut self, id: &str, progress: serde_json::Value) -> bool {
        match self.state.attempt.as_mut() {
            Some(a) if a.id == id => {
                a.progress = Some(progress);
                true
            }
            _ => false,
        }
    }

    /// The pending anchor of the current attempt, if it is waiting for confirmations.
    pub fn pending(&self) -> Option<&Pending> {
        self.state.attempt.as_ref().filter(|a| a.status == AttemptStatus::Pending).and_then(|a| a.pending.as_ref())
    }

    /// When the next run is due: at once for an interrupted attempt, at the next look for a
    /// pending one (never by period: a pending anchor is not sent again), else by period and
    /// backoff.
    fn next_due(&self, now: Now) -> MonoMs {
        match self.phase {
            Phase::Resume { .. } => now.mono,
            Phase::Pending { look_at } => look_at,
            _ if self.pending().is_some() => now.mono,
            _ => due::due_at(self.last_success_mono, self.retry_at_mono, self.config.period).unwrap_or(now.mono),
        }
    }

    /// When the timer is (or the run under way was) set for.
    fn armed(&self) -> Option<MonoMs> {
        match &self.phase {
            Phase::Idle { due } | Phase::Resume { due } => *due,
            Phase::Pending { look_at } => Some(*look_at),
            Phase::Running(run) => Some(run.due),
        }
    }

    /// Arms the cadence for its next run; returns the due time.
    pub fn arm(&mut self, now: Now) -> MonoMs {
        let at = self.next_due(now);
        if let Phase::Idle { due } | Phase::Resume { due } = &mut self.phase {
            *due = Some(at);
        }
        at
    }

    /// The timer fired: decide what the run does. Starts a run unless not due.
    pub fn fire(&mut self, now: Now) -> Fire {
        if !self.resumes() && self.next_due(now) > now.mono {
            return Fire::NotDue;
        }
        let due = self.armed().unwrap_or(now.mono);
        self.phase = Phase::Running(Run { due, step: Step::ReadingBatch, retire: false });
        // A recorded attempt is finished before a new one starts, so one period never
        // anchors two different roots.
        let Some(record) = self.state.attempt.as_deref().cloned() else { return Fire::ReadBatch { abandoned: None } };
        let root = record.batch.root.strip_prefix("sha256:").and_then(parse_hex32);
        match root {
            Some(root) if record.target == self.config.target.to_string() => match self.pending() {
                Some(p) => Fire::Confirm(record.clone(), root, p.clone()),
                None => Fire::Resume(record, root),
            },
            _ => {
                self.state.attempt = None;
                Fire::ReadBatch { abandoned: Some(record) }
            }
        }
    }

    /// The due cadence has no batch: wait, and look again after `min(period, recheck)`.
    /// Returns when to look again and whether the wait just began.
    pub fn no_batch(&mut self, now: Now, recheck: Duration) -> (MonoMs, bool) {
        let began = self.waiting != Some(Waiting::NoBatch);
        self.waiting = Some(Waiting::NoBatch);
        let again = now.mono.saturating_add(duration_ms(recheck.min(self.config.period)));
        self.phase = Phase::Idle { due: Some(again) };
        (again, began)
    }

    /// A new attempt for `batch` in this period; recorded in the state before anything is sent.
    pub fn begin_attempt(&mut self, namespace: &str, kind: CadenceKind, batch: &Batch, now: Now) -> AttemptRecord {
        self.waiting = None;
        let nominal = due::nominal_due(self.state.last_success_ms, self.config.period);
        let record = AttemptRecord {
            id: attempt_id(namespace, kind, &batch.root, nominal),
            target: self.config.target.to_string(),
            batch: BatchRef { id: batch.id.as_str().into(), root: batch.root_string().into() },
            nominal_due_ms: nominal,
            started_ms: now.wall,
            status: AttemptStatus::Started,
            progress: None,
            pending: None,
            sent_ms: None,
            resent: 0,
        };
        self.state.attempt = Some(Box::new(record.clone()));
        record
    }

    /// Marks a recorded attempt as started again (it is about to be written to the state
    /// file, then handed to a driver).
    pub fn restart_attempt(&mut self, record: &AttemptRecord) {
        let mut record = record.clone();
        record.status = AttemptStatus::Started;
        self.state.attempt = Some(Box::new(record));
        if let Phase::Running(run) = &mut self.phase {
            run.step = Step::Recording;
        }
    }

    /// The attempt could not be recorded on disk: send nothing, try again after `wait`.
    pub fn not_recorded(&mut self, now: Now, reason: &str, wait: Duration) {
        self.phase = Phase::Idle { due: None };
        self.waiting = Some(Waiting::StateNotWritable(reason.into()));
        self.retry_at_mono = Some(now.mono.saturating_add(duration_ms(wait)));
    }

    /// The attempt is on disk, but the namespace is draining or leaving the config: the run
    /// ends without sending; the attempt, recorded as started, is resumed when it runs again.
    pub fn recorded_only(&mut self) {
        self.phase = Phase::Idle { due: None };
    }

    /// The attempt is on disk and handed to the pool; returns the target it runs on.
    pub fn dispatched(&mut self, now: Now) -> String {
        if matches!(self.waiting, Some(Waiting::StateNotWritable(_))) {
            self.waiting = None;
        }
        let target = self.config.target.to_string();
        if let Phase::Running(run) = &mut self.phase {
            run.step = Step::Dispatched { at: now, target: target.as_str().into() };
        }
        target
    }

    /// When the anchor in flight was handed to the pool.
    fn dispatched_at(&self) -> Option<Now> {
        match &self.phase {
            Phase::Running(Run { step: Step::Dispatched { at, .. }, .. }) => Some(*at),
            _ => None,
        }
    }

    /// Where the period of a successful run counts from: the last time the run was due on its
    /// cadence's grid (its due time, plus any whole periods it began late), so a run that
    /// began late (a burst of due cadences, a slow state write, downtime) keeps its cadence's
    /// phase. Counting from the late start instead made every cadence held up by one slow
    /// moment come due together from then on, and the bunch queued again every period. The
    /// next run is due less than a period after this one began: missed periods are not made
    /// up.
    fn scheduled_start(&self, start: Now, now: Now) -> Now {
        match self.run_due() {
            Some(due) if due <= start.mono => {
                let period = duration_ms(self.config.period).max(1);
                let on_grid = due.saturating_add((start.mono - due) / period * period);
                Now { wall: now.wall_of(on_grid), mono: on_grid }
            }
            _ => start,
        }
    }

    /// The anchor is sent and waits for confirmations: look again after `p.poll_ms`.
    pub fn sent(&mut self, p: Pending, now: Now) {
        let run = self.dispatched_at();
        self.phase = Phase::Idle { due: None };
        if let Some(a) = self.state.attempt.as_mut() {
            a.status = AttemptStatus::Pending;
            a.sent_ms = a.sent_ms.or(run.map(|r| r.wall)).or(Some(now.wall));
            let look_at = now.mono.saturating_add(i64::try_from(p.poll_ms).unwrap_or(i64::MAX));
            a.pending = Some(p);
            self.phase = Phase::Pending { look_at };
        }
    }

    /// The target dropped the pending anchor. Sent again once (returns true: the run goes on
    /// with the re-send); dropped again, it is a failure (returns false).
    pub fn dropped(&mut self) -> bool {
        let Some(a) = self.state.attempt.as_mut() else { return false };
        if a.resent >= MAX_RESENDS {
            return false;
        }
        a.resent += 1;
        a.status = AttemptStatus::Started;
        a.pending = None;
        // The progress stays: the driver sends the recorded transaction again as it is
        // before it builds anything new, so the drop never becomes a second anchor.
        a.sent_ms = None;
        true
    }

    /// Looking at a pending anchor failed (e.g. the node is down): keep it pending, look
    /// again after a backoff step; the anchor itself did not fail.
    pub fn confirm_failed(&mut self, error: &AnchorError, policy: &BackoffPolicy, now: Now) -> Duration {
        let wait = policy.delay(1, error.class);
        self.phase = match self.pending() {
            Some(_) => Phase::Pending { look_at: now.mono.saturating_add(duration_ms(wait)) },
            None => Phase::Idle { due: None },
        };
        self.state.last_error =
            Some(Box::new(LastError { class: error.class, message: error.message.clone(), at_ms: now.wall }));
        wait
    }

    /// The anchor succeeded: the period counts from when it was sent (or the run started);
    /// backoff resets.
    pub fn succeeded(&mut self, batch: BatchRef, now: Now) -> WallMs {
        let sent = self.state.attempt.as_ref().and_then(|a| a.sent_ms);
        let run = match sent {
            Some(wall) => Now { wall, mono: now.mono_of(wall).min(now.mono) },
            None => self.scheduled_start(self.dispatched_at().unwrap_or(now), now),
        };
        self.phase = Phase::Idle { due: None };
        self.state.last_success_ms = Some(run.wall);
        self.last_success_mono = Some(run.mono);
        self.state.last_batch = Some(batch);
        self.state.backoff = 0;
        self.state.failures = 0;
        self.state.retry_at_ms = None;
        self.retry_at_mono = None;
        self.state.last_error = None;
        self.state.attempt = None;
        self.waiting = None;
        run.wall
    }

    /// The anchor (or the batch read) failed: raise the level, set the retry time, and keep
    /// the attempt for resuming unless the target certainly refused it. Returns the new level
    /// and the delay.
    pub fn failed(&mut self, error: &AnchorError, policy: &BackoffPolicy, now: Now) -> (u32, Duration) {
        self.phase = Phase::Idle { due: None };
        let (level, delay) = policy.after_failure(self.state.backoff, error.class);
        self.state.backoff = level;
        self.state.failures = self.state.failures.saturating_add(1);
        self.state.retry_at_ms = Some(now.wall.saturating_add(duration_ms(delay)));
        self.retry_at_mono = Some(now.mono.saturating_add(duration_ms(delay)));
        self.state.last_error =
            Some(Box::new(LastError { class: error.class, message: error.message.clone(), at_ms: now.wall }));
        if error.refused {
            self.state.attempt = None;
        } else if let Some(a) = self.state.attempt.as_mut() {
            a.status = AttemptStatus::Failed;
        }
        (level, delay)
    }

    /// Shutdown cancelled the job: it is resumed on the next start. A pending anchor stays
    /// pending (only a confirmation check was cut short; nothing is to be sent again) and is
    /// looked at again at once.
    pub fn interrupted(&mut self) {
        self.phase = Phase::Idle { due: None };
        match self.state.attempt.as_mut() {
            Some(a) if a.status == AttemptStatus::Pending => self.phase = Phase::Resume { due: None },
            Some(a) => a.status = AttemptStatus::Interrupted,
            None => {}
        }
    }

    /// The cadence left the config. Returns true when it retires now; false when a run is
    /// under way, which it then finishes before retiring.
    pub fn remove(&mut self) -> bool {
        match &mut self.phase {
            Phase::Running(run) => {
                run.retire = true;
                false
            }
            _ => true,
        }
    }

    /// Applies a changed config; state (last success, backoff, attempt) is kept, and a cadence
    /// that was to retire stays.
    pub fn reconfigure(&mut self, config: Arc<CadenceConfig>) {
        if let Phase::Running(run) = &mut self.phase {
            run.retire = false;
        }
        self.config = config;
    }

    /// The status shown in /health.
    pub fn snapshot(&self, now: Now, draining: bool) -> CadenceSnapshot {
        let running = self.is_running();
        CadenceSnapshot {
            settings: Settings(Arc::clone(&self.config)),
            configured_at_ms: self.configured_ms,
            last_success_ms: self.state.last_success_ms,
            next_due_ms: if running || draining { None } else { self.armed().map(|m| now.wall_of(m)) },
            backoff: self.state.backoff,
            failures: self.state.failures,
            in_flight: running,
            attempt_id: self.state.attempt.as_ref().map(|a| a.id.as_str().into()),
            waiting: self.waiting.clone(),
            last_batch: self.state.last_batch.clone(),
            last_error: self.state.last_error.clone(),
            pending: self.state.attempt.as_ref().and_then(|a| {
                self.pending().map(|p| {
                    Box::new(PendingSnapshot {
                        depth: p.depth,
                        required: p.required,
                        sent_ms: a.sent_ms,
                        data: p.data.clone(),
                        resent: a.resent,
                    })
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Target;

    const POLICY: BackoffPolicy = BackoffPolicy { base_secs: 5.0, max_level: 7 };
    const T0: WallMs = 1_800_000_000_000;

    fn config(every_secs: u64, target: &str) -> Arc<CadenceConfig> {
        Arc::new(CadenceConfig {
            kind: CadenceKind::Fast,
            target: Target::parse(target).expect("target"),
            every: format!("{every_secs}s"),
            period: Duration::from_secs(every_secs),
            confirmations: None,
            policy_oid: None,
        })
    }

    fn at(wall_offset: i64) -> Now {
        Now { wall: T0 + wall_offset, mono: 1_000 + wall_offset }
    }

    fn batch(n: u8) -> Batch {
        Batch { id: format!("b{n}"), root: [n; 32], file: "x.json".into() }
    }

    fn fresh() -> CadenceTrack {
        CadenceTrack::load(config(60, "local:j"), CadenceState::default(), at(0), &POLICY)
    }

    #[test]
    fn a_fresh_cadence_is_due_at_once_and_reads_a_batch() {
        let mut t = fresh();
        assert_eq!(t.arm(at(0)), at(0).mono);
        assert_eq!(t.fire(at(0)), Fire::ReadBatch { abandoned: None });
        assert!(t.is_running());
    }

    #[test]
    fn a_success_resets_backoff_and_counts_the_period_from_when_the_run_was_due() {
        let mut t = fresh();
        t.fire(at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        assert_eq!(record.status, AttemptStatus::Started);
        // Handed to the pool late (a slow state write): the schedule does not move with it.
        t.dispatched(at(400));
        t.state.backoff = 3;
        let when = t.succeeded(record.batch.clone(), at(2_000));
        assert_eq!(when, T0);
        assert!(!t.is_running());
        assert_eq!((t.state.backoff, t.state.attempt.clone()), (0, None));
        assert_eq!(t.arm(at(2_000)), at(0).mono + 60_000);
        assert_eq!(t.fire(at(59_999)), Fire::NotDue);

        // Due at 60 s, begun 700 ms late in a burst: the next is still due at 120 s.
        assert_eq!(succeed_run(&mut t, 2, [60_700, 60_900, 61_000]), T0 + 60_000);
        assert_eq!(t.arm(at(61_000)), at(120_000).mono);
    }

    /// Fires `t` at `fired`, begins an attempt for batch `n`, hands it to the pool at
    /// `dispatched` and succeeds at `done` (ms after T0); returns where its period counts from.
    fn succeed_run(t: &mut CadenceTrack, n: u8, [fired, dispatched, done]: [i64; 3]) -> WallMs {
        assert!(matches!(t.fire(at(fired)), Fire::ReadBatch { .. }));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(n), at(fired));
        t.dispatched(at(dispatched));
        t.succeeded(record.batch, at(done))
    }

    #[test]
    fn a_run_begun_whole_periods_late_keeps_its_phase_and_makes_none_up() {
        let mut t = fresh();
        t.fire(at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.succeeded(record.batch.clone(), at(10));
        assert_eq!(t.arm(at(10)), at(60_000).mono);
        // Due at 60 s, down until 200 s: one run now, counted from 180 s (the last time it was
        // due on its grid), so the next is due at 240 s; the runs due at 120 s and 180 s are
        // not made up.
        assert_eq!(succeed_run(&mut t, 2, [200_000, 200_000, 200_050]), T0 + 180_000);
        assert_eq!(t.arm(at(200_050)), at(240_000).mono);
        // Exactly on a later grid point: counted from there.
        assert_eq!(succeed_run(&mut t, 3, [360_000, 360_000, 360_001]), T0 + 360_000);
        assert_eq!(t.arm(at(360_001)), at(420_000).mono);
    }

    #[test]
    fn a_possible_anchor_is_resumed_and_a_refusal_is_dropped() {
        let mut t = fresh();
        t.fire(at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.dispatched(at(0));
        let (level, delay) = t.failed(&AnchorError::new(ErrorClass::Network, "down"), &POLICY, at(100));
        assert_eq!(level, 1);
        assert_eq!(t.state.attempt.as_ref().map(|a| a.status), Some(AttemptStatus::Failed));
        // Not before the backoff delay; then the same attempt, same root.
        let retry = at(100 + duration_ms(delay));
        assert_eq!(t.fire(at(100)), Fire::NotDue);
        assert_eq!(t.fire(retry), Fire::Resume(*t.state.attempt.clone().expect("kept"), [1; 32]));
        t.restart_attempt(&record);
        t.dispatched(retry);
        t.failed(&AnchorError::new(ErrorClass::Auth, "no"), &POLICY, retry);
        assert_eq!(t.state.attempt, None, "an auth refusal anchored nothing");
        assert_eq!(t.state.backoff, 2);
    }

    #[test]
    fn a_guessed_class_keeps_the_attempt() {
        let mut t = fresh();
        t.fire(at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.failed(&AnchorError::uncertain(ErrorClass::Auth, "403 in stderr"), &POLICY, at(1));
        assert!(t.state.attempt.is_some());
    }

    #[test]
    fn failure_delays_follow_the_policy() {
        let mut t = fresh();
        t.fire(at(0));
        let (_, d1) = t.failed(&AnchorError::new(ErrorClass::Validation, "bad"), &POLICY, at(0));
        assert_eq!(d1, POLICY.delay(1, ErrorClass::Validation));
        assert_eq!(t.arm(at(0)), at(0).mono + duration_ms(d1));
        assert_eq!(t.state.retry_at_ms, Some(T0 + duration_ms(d1)));
    }

    #[test]
    fn an_interrupted_attempt_is_resumed_at_once_after_a_restart() {
        let mut t = fresh();
        t.fire(at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.interrupted();
        let saved = t.state.clone();
        let mut again = CadenceTrack::load(config(60, "local:j"), saved, at(5_000), &POLICY);
        assert!(again.resumes());
        assert_eq!(again.arm(at(5_000)), at(5_000).mono);
        assert!(matches!(again.fire(at(5_000)), Fire::Resume(_, _)));
    }

    #[test]
    fn a_recorded_attempt_for_an_old_target_is_abandoned() {
        let mut t = fresh();
        t.fire(at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.failed(&AnchorError::new(ErrorClass::Network, "down"), &POLICY, at(0));
        t.reconfigure(config(60, "local:other"));
        assert_eq!(
            t.fire(at(1_000_000)),
            Fire::ReadBatch { abandoned: Some(AttemptRecord { status: AttemptStatus::Failed, ..record }) }
        );
        assert_eq!(t.state.attempt, None);
    }

    #[test]
    fn loading_caps_the_level_and_tames_clock_jumps() {
        let state = CadenceState {
            backoff: 9,
            last_success_ms: Some(T0 + 3_600_000), // in the future: the clock stepped back
            retry_at_ms: Some(T0 + 86_400_000),    // a day away: longer than any backoff
            ..CadenceState::default()
        };
        let t = CadenceTrack::load(config(60, "local:j"), state, at(0), &POLICY);
        assert_eq!(t.state.backoff, 7);
        assert_eq!(t.last_success_mono, Some(at(0).mono));
        let longest = duration_ms(POLICY.delay(7, ErrorClass::Auth));
        assert_eq!(t.retry_at_mono, Some(at(0).mono + longest));
    }

    #[test]
    fn a_cadence_removed_mid_run_retires_when_the_run_ends_unless_it_comes_back() {
        let mut t = fresh();
        assert!(t.remove(), "nothing under way: it retires at once");
        t.fire(at(0));
        assert!(!t.remove(), "a run under way finishes first");
        assert!(t.retiring());
        t.reconfigure(config(60, "local:j"));
        assert!(!t.retiring(), "back in the config: it carries on");
    }

    #[test]
    fn a_past_success_maps_onto_the_monotonic_timeline() {
        let state = CadenceState { last_success_ms: Some(T0 - 30_000), ..CadenceState::default() };
        let mut t = CadenceTrack::load(config(60, "local:j"), state, at(0), &POLICY);
        assert_eq!(t.arm(at(0)), at(0).mono + 30_000);
    }

    #[test]
    fn no_batch_rechecks_soon_and_reports_when_the_wait_began() {
        let mut t = fresh();
        t.fire(at(0));
        let (again, began) = t.no_batch(at(0), Duration::from_secs(10));
        assert_eq!((again, began), (at(0).mono + 10_000, true));
        assert!(!t.is_running());
        t.fire(at(10_000));
        let (_, began) = t.no_batch(at(10_000), Duration::from_secs(10));
        assert!(!began, "a continuing wait is not a new skip");
        t.fire(at(20_000));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(2), at(20_000));
        assert_eq!(t.waiting, None);
    }

    #[test]
    fn an_unwritable_state_file_delays_the_run_without_raising_backoff() {
        let mut t = fresh();
        t.fire(at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.not_recorded(at(0), "disk full", Duration::from_secs(5));
        assert_eq!(t.state.backoff, 0);
        assert_eq!(t.waiting, Some(Waiting::StateNotWritable("disk full".into())));
        assert_eq!(t.arm(at(0)), at(0).mono + 5_000);
        t.dispatched(at(5_000));
        assert_eq!(t.waiting, None);
    }

    #[test]
    fn attempt_ids_are_stable_across_retries_of_one_period() {
        let mut t = fresh();
        t.fire(at(0));
        let a = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.state.attempt = None;
        let b = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(9_999));
        assert_eq!(a.id, b.id);
        t.succeeded(b.batch.clone(), at(10_000));
        let c = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(70_000));
        assert_ne!(a.id, c.id, "the next period has its own id");
    }

    fn pending(depth: u32) -> Pending {
        Pending { data: serde_json::json!({"txHash": "0x01"}), required: 3, depth, poll_ms: 2_000 }
    }

    #[test]
    fn a_pending_anchor_is_confirmed_not_sent_again_when_its_period_comes_round() {
        let mut t = fresh();
        t.fire(at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.dispatched(at(5));
        t.sent(pending(0), at(100));
        assert!(!t.is_running());
        let a = t.state.attempt.clone().expect("kept");
        assert_eq!((a.status, a.sent_ms), (AttemptStatus::Pending, Some(T0 + 5)));
        // Looked at again after poll_ms, and long after the period: still a confirmation.
        assert_eq!(t.arm(at(100)), at(100).mono + 2_000);
        assert_eq!(t.fire(at(1_000)), Fire::NotDue);
        assert_eq!(t.fire(at(2_100)), Fire::Confirm(*a.clone(), [1; 32], pending(0)));
        t.sent(pending(2), at(2_200));
        assert!(matches!(t.fire(at(500_000)), Fire::Confirm(_, _, p) if p.depth == 2));
        // Final: the period counts from when it was sent.
        let when = t.succeeded(record.batch.clone(), at(600_000));
        assert_eq!(when, T0 + 5);
        assert_eq!(t.arm(at(600_000)), at(5).mono + 60_000);
    }

    #[test]
    fn a_pending_anchor_survives_a_restart_and_is_checked_at_once() {
        let mut t = fresh();
        t.fire(at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.sent(pending(1), at(0));
        let mut again = CadenceTrack::load(config(60, "local:j"), t.state.clone(), at(9_000), &POLICY);
        assert_eq!(again.arm(at(9_000)), at(9_000).mono);
        assert!(matches!(again.fire(at(9_000)), Fire::Confirm(..)));
    }

    #[test]
    fn a_confirmation_check_cut_short_by_shutdown_leaves_the_anchor_pending() {
        let mut t = fresh();
        t.fire(at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.sent(pending(1), at(0));
        assert!(matches!(t.fire(at(2_000)), Fire::Confirm(..)));
        t.interrupted();
        assert_eq!(t.state.attempt.as_ref().map(|a| a.status), Some(AttemptStatus::Pending));
        let mut again = CadenceTrack::load(config(60, "local:j"), t.state.clone(), at(5_000), &POLICY);
        assert!(matches!(again.fire(at(5_000)), Fire::Confirm(..)), "checked again, not sent again");
    }

    #[test]
    fn a_dropped_anchor_is_sent_again_once_then_fails() {
        let mut t = fresh();
        t.fire(at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        let recorded = serde_json::json!({"txHash": "0x01", "raw": "0x02"});
        if let Some(a) = t.state.attempt.as_mut() {
            a.progress = Some(recorded.clone());
        }
        t.sent(pending(0), at(0));
        assert!(t.dropped(), "first drop: send again");
        let a = t.state.attempt.clone().expect("kept");
        assert_eq!((a.status, a.resent, a.pending), (AttemptStatus::Started, 1, None));
        assert_eq!(a.progress, Some(recorded), "the recorded transaction is sent again as it is");
        t.sent(pending(0), at(10));
        assert!(!t.dropped(), "second drop: give up");
    }

    #[test]
    fn a_failed_check_keeps_the_anchor_pending_without_backoff() {
        let mut t = fresh();
        t.fire(at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.sent(pending(0), at(0));
        assert!(matches!(t.fire(at(2_000)), Fire::Confirm(..)));
        let wait = t.confirm_failed(&AnchorError::new(ErrorClass::Network, "node down"), &POLICY, at(2_010));
        assert_eq!(t.state.backoff, 0);
        assert!(t.pending().is_some());
        assert_eq!(t.arm(at(2_010)), at(2_010).mono + duration_ms(wait));
    }
}
