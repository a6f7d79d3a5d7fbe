//! What the scheduler tracks for one cadence, and how each event changes it.
//!
//! A cadence is always in one phase: idle until it is due, about to resume an attempt the
//! last stop left unfinished, waiting to look at a pending anchor again, or running (reading
//! the batch, recording the attempt, or with its job in the pool). Everything that happens to
//! a cadence is a method here — its timer fires, its batch is read, its attempt reaches the
//! disk, its job comes back, the config changes — that moves it on and returns the
//! [`Effect`]s to carry out, in order. Each is a pure function of the cadence's config, its
//! state and the current time (passed in as [`Now`]), so every decision is unit-tested
//! without a runtime or a real clock; the `NamespaceActor` owns the timer and does the I/O.

use std::sync::Arc;
use std::time::Duration;

use super::attempt::attempt_id;
use super::backoff::BackoffPolicy;
use super::due;
use super::effect::{Anchored, Effect, Event, Failure, Job};
use crate::anchor::pool::{JobFailed, JobFinished, JobMode, Outcome};
use crate::batch::{Batch, BatchError};
use crate::clock::{MonoMs, WallMs};
use crate::config::CadenceConfig;
use crate::health::{CadenceSnapshot, PendingSnapshot, ShownSettings, Waiting};
use crate::model::CadenceKind;
use crate::model::digest::parse_hex32;
use crate::model::receipt::Inclusion;
use crate::model::time::{OptMs, duration_ms};
use crate::model::{AnchorError, AnchorRequest, ErrorClass, Pending};
use crate::storage::state::{AttemptRecord, AttemptStatus, BatchRef, CadenceState, LastAggregate, LastError, Pause};

/// The current time on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// Wall clock, Unix ms.
    pub wall: WallMs,
    /// Monotonic clock, ms.
    pub mono: MonoMs,
}

impl Now {
    /// Places a wall-clock stamp on the monotonic timeline.
    pub(crate) fn mono_of(self, wall: WallMs) -> MonoMs {
        self.mono.saturating_sub(self.wall.saturating_sub(wall))
    }

    /// Converts a monotonic instant to wall-clock time.
    pub(crate) fn wall_of(self, mono: MonoMs) -> WallMs {
        self.wall.saturating_add(mono.saturating_sub(self.mono))
    }
}

/// How many times an anchor the target dropped is sent again before it counts as failed.
pub(crate) const MAX_RESENDS: u32 = 1;

/// Whether the namespace starts new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Cadences run as they come due.
    Active,
    /// Draining for shutdown, or leaving the config: runs under way finish, none starts.
    Quiet,
}

/// What every cadence's decisions follow besides its own config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rules {
    /// How failures back off.
    pub backoff: BackoffPolicy,
    /// How soon to look again when a due cadence had no batch.
    pub recheck: Duration,
}

/// Where a cadence is: between runs, one of three ways of waiting; else running. Each holds
/// the instants that only mean something in it.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting until it is due by period and backoff; `due` once armed.
    Idle { due: OptMs },
    /// An attempt left unfinished by a crash or shutdown: it runs as soon as the timer fires;
    /// `due` once armed.
    Resume { due: OptMs },
    /// The anchor is sent and waits for confirmations: it is looked at again at `look_at`,
    /// never sent again when its period comes round.
    Pending { look_at: MonoMs },
    /// A run is under way; the cadence's timer is not set. Boxed: a cadence is idle far more
    /// than it runs, and inline the run would grow every cadence of every namespace.
    Running(Box<Run>),
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
    /// An operator triggered it, outside the schedule: a new attempt it begins does not
    /// move the period.
    triggered: bool,
    /// When it was set to start (its due time plus its jitter): its lag counts from here.
    at: MonoMs,
}

/// Why a run began more than a period after it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
    /// The service was not running it: stopped, or another replica's until it failed over.
    Downtime,
    /// An operator had paused it.
    Paused,
    /// It was running but could not start in time: the pool, the state store or a closed
    /// start gate held it up.
    Overload,
}

impl Late {
    /// Its label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Downtime => "downtime",
            Self::Paused => "paused",
            Self::Overload => "overload",
        }
    }
}

/// An operator's request for a cadence (the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// Start nothing new until resumed; a run under way finishes.
    Pause(Pause),
    /// Undo a pause; a run that came due meanwhile runs once, at once.
    Resume,
    /// Anchor now, once, outside the schedule (after the run under way, if any).
    Trigger,
    /// Skip the next run due by period.
    Skip,
}

/// What a cadence did with a [`Control`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Controlled {
    /// Done; the state to keep changed.
    Changed,
    /// Nothing to change: it was already so.
    Unchanged,
    /// A trigger that runs once the run under way ends.
    Queued,
}

/// Why a cadence refused a [`Control`]: the operator's answer, as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub String);

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
pub(crate) struct CadenceTrack {
    config: Arc<CadenceConfig>,
    /// What is persisted; shared with the state store and /health until it changes.
    state: Arc<CadenceState>,
    /// The last success on the monotonic timeline.
    last_success_mono: OptMs,
    /// The earliest retry on the monotonic timeline.
    retry_at_mono: OptMs,
    phase: Phase,
    /// Why nothing is happening, when something blocks the cadence.
    /// Boxed: most cadences wait for nothing, and inline it would grow every one.
    waiting: Option<Box<Waiting>>,
    /// When this cadence was configured (Unix ms): the staleness reference until it succeeds.
    configured_ms: WallMs,
    /// Where a skipped run moved the next one, on the monotonic timeline.
    skipped_to_mono: OptMs,
    /// A trigger asked for while a run was under way (or an anchor pending): it runs next.
    /// Not kept across restarts.
    trigger_queued: bool,
    /// Why the next run, if it begins more than a period late, is late: set when the
    /// cadence was loaded (the service or its owner was down) and when it is resumed.
    late: Option<Late>,
    /// What its jitter offsets are drawn from (its namespace and kind).
    jitter_seed: u64,
    /// The jitter of the run the timer is armed for (ms): its grid due time is that much
    /// earlier.
    armed_jitter: i64,
}

impl CadenceTrack {
    /// A cadence resuming from persisted `state`. A level above the policy's cap (state from
    /// a run with a higher VMSH_MAX_BACKOFF) is capped, a success stamped in the future (the
    /// wall clock stepped back) counts as now, and no retry waits longer than the longest
    /// backoff, whatever the wall clock did meanwhile.
    pub(crate) fn load(
        config: Arc<CadenceConfig>,
        mut state: Arc<CadenceState>,
        now: Now,
        policy: &BackoffPolicy,
    ) -> Self {
        if state.backoff > policy.max_level {
            Arc::make_mut(&mut state).backoff = policy.max_level;
        }
        let last_success_mono = OptMs::new(state.last_success_ms.map(|w| now.mono_of(w).min(now.mono)));
        let longest = duration_ms(policy.delay(policy.max_level, ErrorClass::Auth));
        let retry_at_mono =
            OptMs::new(state.retry_at_ms.get().map(|w| now.mono_of(w).min(now.mono.saturating_add(longest))));
        // Unfinished at the last stop: resume at once (a pending anchor is looked at again).
        let unfinished = state.attempt.as_ref().is_some_and(|a| {
            matches!(a.status, AttemptStatus::Started | AttemptStatus::Interrupted | AttemptStatus::Pending)
        });
        let phase = if unfinished { Phase::Resume { due: OptMs::NONE } } else { Phase::Idle { due: OptMs::NONE } };
        let skipped_to_mono = OptMs::new(state.skipped_to_ms.get().map(|w| now.mono_of(w)));
        Self {
            config,
            state,
            last_success_mono,
            retry_at_mono,
            phase,
            waiting: None,
            configured_ms: now.wall,
            skipped_to_mono,
            trigger_queued: false,
            late: Some(Late::Downtime),
            jitter_seed: 0,
            armed_jitter: 0,
        }
    }

    /// Draws its jitter offsets for `namespace`: without it, every cadence of one kind would
    /// get the same offset.
    pub(crate) fn with_jitter_for(mut self, namespace: &str) -> Self {
        self.jitter_seed = super::jitter::seed(namespace, self.config.kind);
        self
    }

    /// Its config.
    pub(crate) fn config(&self) -> &Arc<CadenceConfig> {
        &self.config
    }

    /// What is persisted.
    pub(crate) fn state(&self) -> &Arc<CadenceState> {
        &self.state
    }

    /// What is persisted, to change: copied first while another holder shares it.
    fn state_mut(&mut self) -> &mut CadenceState {
        Arc::make_mut(&mut self.state)
    }

    /// What is persisted, kept aside when the cadence leaves the config.
    pub(crate) fn into_state(self) -> Arc<CadenceState> {
        self.state
    }

    /// Whether a run is under way (batch read, attempt record or anchor).
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running(_))
    }

    /// Whether it resumes an attempt left unfinished by the last stop when the timer fires.
    fn resumes(&self) -> bool {
        matches!(self.phase, Phase::Resume { .. })
    }

    /// Whether it retires when the run under way ends.
    fn retiring(&self) -> bool {
        matches!(&self.phase, Phase::Running(run) if run.retire)
    }

    /// Whether `target` is its configured target or that of the anchor it has in flight.
    pub(crate) fn uses_target(&self, target: &str) -> bool {
        self.config.target.is(target)
            || matches!(&self.phase, Phase::Running(run) if matches!(&run.step, Step::Dispatched { target: t, .. } if &**t == target))
    }

    /// The batches it refers to: the last anchored and the current attempt's.
    pub(crate) fn batches(&self) -> impl Iterator<Item = &BatchRef> {
        [self.state.last_batch.as_ref(), self.state.attempt.as_ref().map(|a| &a.batch)].into_iter().flatten()
    }

    /// When the run under way was due (monotonic).
    fn run_due(&self) -> Option<MonoMs> {
        match &self.phase {
            Phase::Running(run) => Some(run.due),
            _ => None,
        }
    }

    /// Records what the driver is about to send for attempt `id`; false when that attempt is no
    /// longer the current one.
    pub(crate) fn record_progress(&mut self, id: &str, progress: serde_json::Value) -> bool {
        match self.state_mut().attempt.as_mut() {
            Some(a) if a.id == id => {
                a.progress = Some(progress);
                true
            }
            _ => false,
        }
    }

    /// Records that attempt `id` is a leaf of the aggregate `inclusion` proves it in; false
    /// when that attempt is no longer the current one.
    pub(crate) fn record_membership(&mut self, id: &str, inclusion: Inclusion) -> bool {
        match self.state_mut().attempt.as_mut() {
            Some(a) if a.id == id => {
                a.aggregate = Some(inclusion);
                true
            }
            _ => false,
        }
    }

    /// The id of the attempt whose job is in the pool (or an aggregate collecting it).
    pub(crate) fn dispatched_attempt(&self) -> Option<&str> {
        self.dispatched_at().and(self.state.attempt.as_ref()).map(|a| a.id.as_str())
    }

    /// The pending anchor of the current attempt, if it is waiting for confirmations.
    fn pending(&self) -> Option<&Pending> {
        self.state.attempt.as_ref().filter(|a| a.status == AttemptStatus::Pending).and_then(|a| a.pending.as_ref())
    }

    /// When the next run is due: at once for an interrupted attempt, at the next look for a
    /// pending one (never by period: a pending anchor is not sent again), at once for a
    /// trigger, else by period, backoff and a skip.
    fn next_due(&self, now: Now) -> MonoMs {
        self.next_due_jittered(now).0
    }

    /// [`Self::next_due`], and the jitter it includes (ms): only a run due by period (on its
    /// grid, not a retry's time) is shifted.
    fn next_due_jittered(&self, now: Now) -> (MonoMs, i64) {
        match self.phase {
            Phase::Resume { .. } => (now.mono, 0),
            Phase::Pending { look_at } => (look_at, 0),
            _ if self.pending().is_some() => (now.mono, 0),
            _ if self.trigger_queued => (now.mono, 0),
            _ => {
                let (last_success, skipped_to) = (self.last_success_mono.get(), self.skipped_to_mono.get());
                let not_before = self.retry_at_mono.get().max(skipped_to);
                let period = self.config.period;
                let Some(due) = due::due_at(last_success, not_before, period) else {
                    return (now.mono, 0);
                };
                let grid = last_success.map(|t| t.saturating_add(duration_ms(period))).max(skipped_to);
                if grid != Some(due) || self.config.jitter.is_zero() {
                    return (due, 0);
                }
                // From the state's wall times, which a restart reads back as they were.
                let grid_wall = due::nominal_due(self.state.last_success_ms, period)
                    .max(self.state.skipped_to_ms.get().unwrap_or(0));
                let jitter = super::jitter::offset_ms(self.jitter_seed, grid_wall, period, self.config.jitter);
                (due.saturating_add(jitter), jitter)
            }
        }
    }

    /// When the timer is (or the run under way was) set for.
    fn armed(&self) -> Option<MonoMs> {
        match &self.phase {
            Phase::Idle { due } | Phase::Resume { due } => due.get(),
            Phase::Pending { look_at } => Some(*look_at),
            Phase::Running(run) => Some(run.due),
        }
    }

    /// Arms the cadence for its next run; returns the due time (with its jitter).
    fn arm(&mut self, now: Now) -> MonoMs {
        let (at, jitter) = self.next_due_jittered(now);
        self.armed_jitter = jitter;
        if let Phase::Idle { due } | Phase::Resume { due } = &mut self.phase {
            *due = OptMs::some(at);
        }
        at
    }

    /// The request a job sends to its target's driver.
    pub(crate) fn request(&self, namespace: &str, job: &Job) -> AnchorRequest {
        AnchorRequest {
            namespace: namespace.to_string(),
            cadence: self.config.kind,
            target: self.config.target.clone(),
            batch_id: job.record.batch.id.to_string(),
            root: job.root,
            attempt_id: job.record.id.clone(),
            confirmations: self.config.confirmations,
            policy_oid: self.config.policy_oid.clone(),
            progress: self.state.attempt.as_ref().and_then(|a| a.progress.clone()),
            membership: self.state.attempt.as_ref().and_then(|a| a.aggregate.clone()),
        }
    }

    /// Starting up: arms the cadence, saying so when it resumes an attempt the last stop left
    /// unfinished.
    pub(crate) fn start(&mut self, mode: Mode, now: Now) -> Vec<Effect> {
        let resuming = self.resumes().then_some(Effect::Emit(Event::Resuming));
        resuming.into_iter().chain(self.schedule(mode, now)).collect()
    }

    /// Arms the timer for the next run, unless a run is under way (it re-arms when it ends),
    /// the namespace is quiet or the cadence is paused.
    pub(crate) fn schedule(&mut self, mode: Mode, now: Now) -> Option<Effect> {
        (mode == Mode::Active && !self.is_running() && self.state.paused.is_none())
            .then(|| Effect::Timer(self.arm(now)))
    }

    /// The timer fired. Woken before it is due: re-arm. Due: start a run, which finishes the
    /// recorded attempt of this period first — looks at its pending anchor again, or resumes
    /// it — so one period never anchors two different roots; with none, it reads the latest
    /// batch for a new attempt. A recorded attempt for a target that is no longer the
    /// cadence's is abandoned. Nothing while a run is under way or the namespace is quiet.
    pub(crate) fn fire(&mut self, mode: Mode, now: Now) -> Vec<Effect> {
        if mode == Mode::Quiet || self.is_running() || self.state.paused.is_some() {
            return Vec::new();
        }
        if !self.resumes() && self.next_due(now) > now.mono {
            return vec![Effect::Timer(self.arm(now))];
        }
        // A trigger waits while an anchor is pending: it would be a second one in flight.
        let triggered = self.trigger_queued && self.pending().is_none();
        let by_period = !triggered && !self.resumes() && self.state.attempt.is_none();
        let at = if triggered { now.mono } else { self.armed().unwrap_or(now.mono) };
        // The grid point the run belongs to: its jitter is not part of the period.
        let due = if by_period { at.saturating_sub(self.armed_jitter) } else { at };
        self.trigger_queued &= !triggered;
        let mut effects = Vec::new();
        if by_period {
            if self.state.skip_next {
                return self.skip_run(due, now);
            }
            effects.extend(self.missed(due, now));
        }
        self.late = None;
        let triggered = triggered && self.state.attempt.is_none();
        self.phase = Phase::Running(Box::new(Run { due, step: Step::ReadingBatch, retire: false, triggered, at }));
        let Some(record) = self.state.attempt.as_deref().cloned() else {
            effects.extend([Effect::ReadBatch, Effect::Publish]);
            return effects;
        };
        let root = record.batch.root.strip_prefix("sha256:").and_then(parse_hex32);
        match root {
            Some(root) if record.target == self.config.target.to_string() => match self.pending().cloned() {
                Some(p) => {
                    let job = Job { record, root, mode: JobMode::Confirm(p), due };
                    vec![Effect::Submit(self.dispatch(job, now)), Effect::Publish]
                }
                None => {
                    // Under way when the process stopped: its receipt may be written already.
                    let stopped_midway = matches!(record.status, AttemptStatus::Started | AttemptStatus::Interrupted);
                    vec![self.record(record, root, JobMode::Anchor { resume: true, stopped_midway }, now)]
                }
            },
            _ => {
                self.state_mut().attempt = None;
                let abandoned = Event::Abandoned { attempt: record.id, was: record.target };
                vec![Effect::Emit(abandoned), Effect::ReadBatch, Effect::Publish]
            }
        }
    }

    /// The run due at `due` is skipped, as an operator asked: nothing is read or sent, and
    /// the next run by period is due a period later.
    fn skip_run(&mut self, due: MonoMs, now: Now) -> Vec<Effect> {
        self.state_mut().skip_next = false;
        self.late = None;
        let next = due.saturating_add(duration_ms(self.config.period));
        self.skipped_to_mono = OptMs::some(next);
        self.state_mut().skipped_to_ms = OptMs::some(now.wall_of(next));
        self.phase = Phase::Idle { due: OptMs::NONE };
        let skipped = Event::RunSkipped { due_ms: now.wall_of(due), next_ms: now.wall_of(next) };
        vec![Effect::Emit(skipped), Effect::Persist, Effect::Timer(self.arm(now)), Effect::Publish]
    }

    /// A run by period due at `due` begins now: more than a period late, it says how many
    /// runs were missed and why. One run makes up for all of them.
    fn missed(&self, due: MonoMs, now: Now) -> Option<Effect> {
        let period = duration_ms(self.config.period).max(1);
        let late_ms = now.mono.saturating_sub(due);
        // A cadence that never succeeded has no grid to be late on.
        if self.last_success_mono.get().is_none() || late_ms <= period {
            return None;
        }
        let reason = self.late.unwrap_or(Late::Overload);
        Some(Effect::Emit(Event::Missed { periods: u64::try_from(late_ms / period).unwrap_or(0), late_ms, reason }))
    }

    /// An operator's request: a pause, a resume, a trigger or a skip. Returns what to carry
    /// out (a changed state is written before the request is answered) and how it went.
    pub(crate) fn control(
        &mut self,
        control: Control,
        mode: Mode,
        now: Now,
    ) -> Result<(Vec<Effect>, Controlled), Refused> {
        match control {
            Control::Pause(pause) => {
                self.trigger_queued = false;
                if let Some(held) = &mut self.state_mut().paused {
                    // Paused already: since when stays; a new note replaces the old.
                    if pause.note.is_none() || held.note == pause.note {
                        return Ok((Vec::new(), Controlled::Unchanged));
                    }
                    held.note = pause.note;
                    held.by = pause.by;
                } else {
                    self.state_mut().paused = Some(Box::new(pause));
                }
                if let Phase::Idle { due } | Phase::Resume { due } = &mut self.phase {
                    *due = OptMs::NONE;
                }
                Ok((vec![Effect::Persist, Effect::Publish], Controlled::Changed))
            }
            Control::Resume => {
                if self.state_mut().paused.take().is_none() {
                    return Ok((Vec::new(), Controlled::Unchanged));
                }
                self.late = Some(Late::Paused);
                let arm = self.schedule(mode, now);
                Ok(([Effect::Persist].into_iter().chain(arm).chain([Effect::Publish]).collect(), Controlled::Changed))
            }
            Control::Trigger => {
                if self.state.paused.is_some() {
                    return Err(Refused("the cadence is paused: resume it first".into()));
                }
                if self.trigger_queued {
                    return Ok((Vec::new(), Controlled::Queued));
                }
                self.trigger_queued = true;
                if self.is_running() || self.pending().is_some() {
                    return Ok((vec![Effect::Publish], Controlled::Queued));
                }
                let mut effects = self.fire(mode, now);
                if effects.is_empty() {
                    // Quiet (draining or leaving): it runs if the namespace comes back.
                    effects.push(Effect::Publish);
                }
                Ok((effects, Controlled::Changed))
            }
            Control::Skip => {
                if self.state.skip_next {
                    return Ok((Vec::new(), Controlled::Unchanged));
                }
                if let Some(a) = self.state.attempt.as_ref().filter(|_| !self.is_running()) {
                    return Err(Refused(format!(
                        "attempt {} of this period is not finished: its next run finishes it, and cannot be skipped",
                        a.id
                    )));
                }
                self.state_mut().skip_next = true;
                Ok((vec![Effect::Persist, Effect::Publish], Controlled::Changed))
            }
        }
    }

    /// The namespace's latest batch was read. None yet: wait, and look again after
    /// `min(period, recheck)` (told once, when the wait begins). One: begin this period's
    /// attempt and record it before anything is sent. Unreadable: this cadence fails.
    pub(crate) fn batch_read(
        &mut self,
        namespace: &str,
        read: Result<Option<Batch>, BatchError>,
        rules: &Rules,
        mode: Mode,
        now: Now,
    ) -> Vec<Effect> {
        let retire = self.retiring();
        match read {
            Ok(None) => {
                let (again, began) = self.no_batch(now, rules.recheck);
                let told = began.then_some(Effect::Emit(Event::NoBatch));
                if retire || mode == Mode::Quiet {
                    told.into_iter().chain(self.ended(retire, mode, now)).collect()
                } else {
                    told.into_iter().chain([Effect::Timer(again), Effect::Publish]).collect()
                }
            }
            Ok(Some(batch)) => {
                let record = self.begin_attempt(namespace, self.config.kind, &batch, now);
                vec![self.record(record, batch.root, JobMode::Anchor { resume: false, stopped_midway: false }, now)]
            }
            Err(e) => {
                let target = self.config.target.to_string();
                let error = AnchorError::new(ErrorClass::Validation, e.to_string());
                let mut effects = vec![Effect::Emit(Event::BatchUnreadable { target: target.clone() })];
                effects.extend(self.fail(Failed { target, attempt: None, error, duration: None }, &rules.backoff, now));
                effects.extend(self.ended(retire, mode, now));
                effects
            }
        }
    }

    /// The attempt's record reached the disk, or could not. On disk: hand the job to the
    /// pool — unless the namespace went quiet or the cadence left the config meanwhile; then
    /// the run ends, and the attempt, recorded as started, is resumed when it runs again. Not
    /// on disk: send nothing, and try again after the first backoff step without raising
    /// the level.
    pub(crate) fn attempt_recorded(
        &mut self,
        job: Job,
        written: Result<(), String>,
        rules: &Rules,
        mode: Mode,
        now: Now,
    ) -> Vec<Effect> {
        let retire = self.retiring();
        match written {
            Err(reason) => self.not_recorded(now, &reason, rules.backoff.delay(0, ErrorClass::Network)),
            Ok(()) if retire || mode == Mode::Quiet => self.phase = Phase::Idle { due: OptMs::NONE },
            Ok(()) => return vec![Effect::Submit(self.dispatch(job, now)), Effect::Publish],
        }
        self.ended(retire, mode, now).collect()
    }

    /// A job came back from the pool. Final: a success. Sent and pending: look again later.
    /// Dropped by the target: sent again once, a failure the second time. Refused, or
    /// failed: a failure, which backs off. A look at a pending anchor that failed says
    /// nothing about the anchor: look again later, without backoff. Cut short by shutdown:
    /// resumed on the next start. `batch` is the reference a success records.
    pub(crate) fn job_finished(
        &mut self,
        done: JobFinished,
        batch: BatchRef,
        rules: &Rules,
        mode: Mode,
        now: Now,
    ) -> Vec<Effect> {
        let JobFinished { request, mode: job, due_mono, started_mono, duration, outcome } = done;
        let retire = self.retiring();
        let first_send = matches!(job, JobMode::Anchor { .. });
        let lag_ms = started_mono.filter(|_| first_send).map(|started| started.saturating_sub(due_mono).max(0));
        let mut effects: Vec<Effect> = lag_ms.map(|ms| Effect::Emit(Event::Lag { ms })).into_iter().collect();
        let target = request.target.to_string();
        match outcome {
            Outcome::Anchored(done) => {
                let sent = self.state.attempt.as_ref().and_then(|a| a.sent_ms);
                let run_wall = self.succeeded(batch, now);
                // For an anchor that waited for confirmations, its duration is send to final.
                let took = match sent {
                    Some(sent) => Duration::from_millis(u64::try_from(now.wall.saturating_sub(sent)).unwrap_or(0)),
                    None => duration,
                };
                let anchored = Anchored {
                    target: target.clone(),
                    batch: request.batch_id,
                    attempt: request.attempt_id,
                    receipt: done.path,
                    took,
                    lag_ms,
                    recovered: done.recovered,
                    run_wall,
                };
                effects.extend([
                    Effect::Emit(Event::Anchored(Box::new(anchored))),
                    Effect::Emit(Event::PendingEnded { target }),
                    Effect::Persist,
                ]);
            }
            Outcome::Pending(pending) => {
                let before = self.pending().cloned().map(Box::new);
                let newly = before.is_none();
                self.sent(pending.clone(), now);
                let sent_ms = self.state.attempt.as_ref().and_then(|a| a.sent_ms);
                let attempt = request.attempt_id;
                let sent = Event::Sent { target, attempt, pending, sent_ms, newly, lag_ms, before };
                effects.extend([Effect::Emit(sent), Effect::Persist]);
            }
            Outcome::Dropped(why) => {
                let reorged = self.pending().is_some_and(|p| p.depth > 0);
                effects.push(Effect::Emit(Event::PendingEnded { target: target.clone() }));
                if self.dropped()
                    && let Some(record) = self.state.attempt.as_deref().cloned()
                {
                    effects.push(Effect::Emit(Event::Resent { target, attempt: request.attempt_id, why, reorged }));
                    effects.push(self.record(
                        record,
                        request.root,
                        JobMode::Anchor { resume: false, stopped_midway: false },
                        now,
                    ));
                    return effects;
                }
                let error =
                    AnchorError::new(ErrorClass::Network, format!("dropped again after being sent again: {why}"));
                let failed = Failed { target, attempt: Some(attempt_of(request)), error, duration: None };
                effects.extend(self.fail(failed, &rules.backoff, now));
            }
            Outcome::Failed(JobFailed { error, interrupted: true }) => {
                self.interrupted();
                let interrupted = Event::Interrupted { attempt: request.attempt_id, error: error.message };
                effects.extend([Effect::Emit(interrupted), Effect::Persist]);
            }
            // The target refused the pending anchor for good (e.g. the transaction reverted).
            Outcome::Rejected(error) => {
                effects.push(Effect::Emit(Event::PendingEnded { target: target.clone() }));
                let error = AnchorError { refused: true, ..error };
                let failed = Failed { target, attempt: Some(attempt_of(request)), error, duration: None };
                effects.extend(self.fail(failed, &rules.backoff, now));
            }
            Outcome::Failed(JobFailed { error, interrupted: false }) if !first_send => {
                let wait = self.confirm_failed(&error, &rules.backoff, now);
                let check = Event::CheckFailed { attempt: request.attempt_id, error, wait };
                effects.extend([Effect::Emit(check), Effect::Persist]);
            }
            Outcome::Failed(JobFailed { error, interrupted: false }) => {
                let failed = Failed { target, attempt: Some(attempt_of(request)), error, duration: Some(duration) };
                effects.extend(self.fail(failed, &rules.backoff, now));
            }
        }
        effects.extend(self.ended(retire, mode, now));
        effects
    }

    /// The cadence left the config: it retires now, or once the run under way ends.
    pub(crate) fn remove(&mut self) -> Option<Effect> {
        match &mut self.phase {
            Phase::Running(run) => {
                run.retire = true;
                None
            }
            _ => Some(Effect::Retire),
        }
    }

    /// The cadence's config changed, or it came back before its run ended (then it does not
    /// retire). State — last success, backoff, attempt — is kept; the timer is re-armed for
    /// the new period.
    pub(crate) fn reconfigure(&mut self, config: Arc<CadenceConfig>, mode: Mode, now: Now) -> Option<Effect> {
        if let Phase::Running(run) = &mut self.phase {
            run.retire = false;
        }
        self.config = config;
        self.schedule(mode, now)
    }

    /// The run ended: retire if the cadence left the config meanwhile, else re-arm unless the
    /// namespace is quiet.
    fn ended(&mut self, retire: bool, mode: Mode, now: Now) -> impl Iterator<Item = Effect> + use<> {
        let next = if retire { Some(Effect::Retire) } else { self.schedule(mode, now) };
        next.into_iter().chain([Effect::RunEnded])
    }

    /// Marks the attempt started (again) and asks for it to be written before it is sent.
    fn record(&mut self, mut record: AttemptRecord, root: [u8; 32], mode: JobMode, now: Now) -> Effect {
        record.status = AttemptStatus::Started;
        self.state_mut().attempt = Some(Box::new(record.clone()));
        if let Phase::Running(run) = &mut self.phase {
            run.step = Step::Recording;
        }
        let lag_from = match &self.phase {
            Phase::Running(run) => run.at,
            _ => now.mono,
        };
        Effect::Record(Job { record, root, mode, due: lag_from })
    }

    /// Hands `job` on: the run is now in the pool.
    fn dispatch(&mut self, job: Job, now: Now) -> Job {
        self.dispatched(now);
        job
    }

    /// Applies a failure: backoff, then the failure told and the state written.
    fn fail(&mut self, failed: Failed, policy: &BackoffPolicy, now: Now) -> [Effect; 2] {
        let (level, delay) = self.failed(&failed.error, policy, now);
        let Failed { target, attempt, error, duration } = failed;
        let failure = Failure { target, attempt, error, level, delay, failures: self.state.failures, duration };
        [Effect::Emit(Event::Failed(Box::new(failure))), Effect::Persist]
    }

    /// The due cadence has no batch: wait, and look again after `min(period, recheck)`.
    /// Returns when to look again and whether the wait just began.
    fn no_batch(&mut self, now: Now, recheck: Duration) -> (MonoMs, bool) {
        let began = self.waiting.as_deref() != Some(&Waiting::NoBatch);
        if began {
            self.waiting = Some(Box::new(Waiting::NoBatch));
        }
        let again = now.mono.saturating_add(duration_ms(recheck.min(self.config.period)));
        self.phase = Phase::Idle { due: OptMs::some(again) };
        // A look again, not a grid point: nothing to take off for the period.
        self.armed_jitter = 0;
        (again, began)
    }

    /// A new attempt for `batch` in this period; recorded in the state before anything is sent.
    fn begin_attempt(&mut self, namespace: &str, kind: CadenceKind, batch: &Batch, now: Now) -> AttemptRecord {
        self.waiting = None;
        let triggered = matches!(&self.phase, Phase::Running(run) if run.triggered);
        // A triggered run is outside the grid: its own instant names it.
        let nominal =
            if triggered { now.wall } else { due::nominal_due(self.state.last_success_ms, self.config.period) };
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
            aggregate: None,
            triggered,
        };
        self.state_mut().attempt = Some(Box::new(record.clone()));
        record
    }

    /// The attempt could not be recorded on disk: send nothing, try again after `wait`.
    fn not_recorded(&mut self, now: Now, reason: &str, wait: Duration) {
        self.phase = Phase::Idle { due: OptMs::NONE };
        self.waiting = Some(Box::new(Waiting::StateNotWritable(reason.into())));
        self.retry_at_mono = OptMs::some(now.mono.saturating_add(duration_ms(wait)));
    }

    /// The attempt is on disk and handed to the pool.
    fn dispatched(&mut self, now: Now) {
        if matches!(self.waiting.as_deref(), Some(Waiting::StateNotWritable(_))) {
            self.waiting = None;
        }
        if let Phase::Running(run) = &mut self.phase {
            run.step = Step::Dispatched { at: now, target: self.config.target.to_string().into() };
        }
    }

    /// When the anchor in flight was handed to the pool.
    fn dispatched_at(&self) -> Option<Now> {
        match &self.phase {
            Phase::Running(run) => match run.step {
                Step::Dispatched { at, .. } => Some(at),
                _ => None,
            },
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
    fn sent(&mut self, p: Pending, now: Now) {
        let run = self.dispatched_at();
        self.phase = Phase::Idle { due: OptMs::NONE };
        if let Some(a) = self.state_mut().attempt.as_mut() {
            a.status = AttemptStatus::Pending;
            a.sent_ms = a.sent_ms.or(run.map(|r| r.wall)).or(Some(now.wall));
            let look_at = now.mono.saturating_add(i64::try_from(p.poll_ms).unwrap_or(i64::MAX));
            a.pending = Some(p);
            self.phase = Phase::Pending { look_at };
        }
    }

    /// The target dropped the pending anchor. Sent again once (returns true: the run goes on
    /// with the re-send); dropped again, it is a failure (returns false).
    fn dropped(&mut self) -> bool {
        let Some(a) = self.state_mut().attempt.as_mut() else { return false };
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
    fn confirm_failed(&mut self, error: &AnchorError, policy: &BackoffPolicy, now: Now) -> Duration {
        let wait = policy.delay(1, error.class);
        self.phase = match self.pending() {
            Some(_) => Phase::Pending { look_at: now.mono.saturating_add(duration_ms(wait)) },
            None => Phase::Idle { due: OptMs::NONE },
        };
        self.state_mut().last_error =
            Some(Box::new(LastError { class: error.class, message: error.message.clone(), at_ms: now.wall }));
        wait
    }

    /// The anchor succeeded: the period counts from when it was sent (or the run started);
    /// backoff resets.
    fn succeeded(&mut self, batch: BatchRef, now: Now) -> WallMs {
        let sent = self.state.attempt.as_ref().and_then(|a| a.sent_ms);
        let triggered = self.state.attempt.as_ref().is_some_and(|a| a.triggered);
        let run = match sent {
            Some(wall) => Now { wall, mono: now.mono_of(wall).min(now.mono) },
            None if triggered => self.dispatched_at().unwrap_or(now),
            None => self.scheduled_start(self.dispatched_at().unwrap_or(now), now),
        };
        self.phase = Phase::Idle { due: OptMs::NONE };
        self.state_mut().last_aggregate = self
            .state
            .attempt
            .as_ref()
            .and_then(|a| a.aggregate.as_ref())
            .map(|i| Box::new(LastAggregate { root: i.root.clone(), size: i.size, index: i.index }));
        if triggered {
            // Outside the schedule: the period still counts from the last run by period.
            self.state_mut().last_triggered_ms = OptMs::some(run.wall);
        } else {
            self.state_mut().last_success_ms = Some(run.wall);
            self.last_success_mono = OptMs::some(run.mono);
            self.state_mut().skipped_to_ms = OptMs::NONE;
            self.skipped_to_mono = OptMs::NONE;
        }
        self.state_mut().last_batch = Some(batch);
        self.state_mut().backoff = 0;
        self.state_mut().failures = 0;
        self.state_mut().retry_at_ms = OptMs::NONE;
        self.retry_at_mono = OptMs::NONE;
        self.state_mut().last_error = None;
        self.state_mut().attempt = None;
        self.waiting = None;
        run.wall
    }

    /// The anchor (or the batch read) failed: raise the level, set the retry time, and keep
    /// the attempt for resuming unless the target certainly refused it. Returns the new level
    /// and the delay.
    fn failed(&mut self, error: &AnchorError, policy: &BackoffPolicy, now: Now) -> (u32, Duration) {
        self.phase = Phase::Idle { due: OptMs::NONE };
        let (level, delay) = policy.after_failure(self.state.backoff, error.class);
        self.state_mut().backoff = level;
        self.state_mut().failures = self.state.failures.saturating_add(1);
        self.state_mut().retry_at_ms = OptMs::some(now.wall.saturating_add(duration_ms(delay)));
        self.retry_at_mono = OptMs::some(now.mono.saturating_add(duration_ms(delay)));
        self.state_mut().last_error =
            Some(Box::new(LastError { class: error.class, message: error.message.clone(), at_ms: now.wall }));
        if error.refused {
            self.state_mut().attempt = None;
        } else if let Some(a) = self.state_mut().attempt.as_mut() {
            a.status = AttemptStatus::Failed;
        }
        (level, delay)
    }

    /// Shutdown cancelled the job: it is resumed on the next start. A pending anchor stays
    /// pending (only a confirmation check was cut short; nothing is to be sent again) and is
    /// looked at again at once.
    fn interrupted(&mut self) {
        self.phase = Phase::Idle { due: OptMs::NONE };
        match self.state_mut().attempt.as_mut() {
            Some(a) if a.status == AttemptStatus::Pending => self.phase = Phase::Resume { due: OptMs::NONE },
            Some(a) => a.status = AttemptStatus::Interrupted,
            None => {}
        }
    }

    /// The status shown in /health.
    pub(crate) fn snapshot(&self, now: Now, draining: bool) -> CadenceSnapshot {
        let running = self.is_running();
        CadenceSnapshot {
            settings: ShownSettings(Arc::clone(&self.config)),
            state: Arc::clone(&self.state),
            configured_at_ms: self.configured_ms,
            next_due_ms: if running || draining || self.state.paused.is_some() {
                OptMs::NONE
            } else {
                OptMs::new(self.armed().map(|m| now.wall_of(m)))
            },
            in_flight: running,
            waiting: self.waiting.clone().or_else(|| {
                let fee = self.pending()?.fee.as_ref().filter(|f| f.at_cap)?;
                Some(Box::new(Waiting::AtFeeCap(fee.describe().into())))
            }),
            pending: self.state.attempt.as_ref().and_then(|a| {
                self.pending().map(|p| {
                    Box::new(PendingSnapshot {
                        depth: p.depth,
                        required: p.required,
                        sent_ms: a.sent_ms,
                        data: p.data.clone(),
                        resent: a.resent,
                        fee: p.fee.clone(),
                    })
                })
            }),
            trigger_queued: self.trigger_queued,
        }
    }
}

/// A failure before its backoff is known.
struct Failed {
    target: String,
    attempt: Option<(String, String)>,
    error: AnchorError,
    duration: Option<Duration>,
}

/// The attempt's id and batch, as a failure names them.
fn attempt_of(request: AnchorRequest) -> (String, String) {
    (request.attempt_id, request.batch_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchor::pool::Anchored as Final;
    use crate::model::Target;
    use Effect::*;
    use Mode::{Active, Quiet};

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
            jitter: Duration::ZERO,
        })
    }

    fn at(wall_offset: i64) -> Now {
        Now { wall: T0 + wall_offset, mono: 1_000 + wall_offset }
    }

    fn batch(n: u8) -> Batch {
        Batch { id: format!("b{n}"), root: [n; 32], file: "x.json".into() }
    }

    fn fresh() -> CadenceTrack {
        CadenceTrack::load(config(60, "local:j"), std::sync::Arc::new(CadenceState::default()), at(0), &POLICY)
    }

    /// The pending anchor a run looks at again, if that is what the effects start.
    fn confirms(effects: &[Effect]) -> Option<&Pending> {
        match effects {
            [Submit(Job { mode: JobMode::Confirm(p), .. }), Publish] => Some(p),
            _ => None,
        }
    }

    /// Whether the effects resume the recorded attempt: written as started again, then sent.
    fn resumes(effects: &[Effect]) -> bool {
        matches!(effects, [Record(Job { mode: JobMode::Anchor { resume: true, .. }, record, .. })]
            if record.status == AttemptStatus::Started)
    }

    #[test]
    fn a_fresh_cadence_is_due_at_once_and_reads_a_batch() {
        let mut t = fresh();
        assert_eq!(t.arm(at(0)), at(0).mono);
        assert_eq!(t.fire(Active, at(0)), [ReadBatch, Publish]);
        assert!(t.is_running());
    }

    #[test]
    fn a_success_resets_backoff_and_counts_the_period_from_when_the_run_was_due() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        assert_eq!(record.status, AttemptStatus::Started);
        // Handed to the pool late (a slow state write): the schedule does not move with it.
        t.dispatched(at(400));
        t.state_mut().backoff = 3;
        let when = t.succeeded(record.batch.clone(), at(2_000));
        assert_eq!(when, T0);
        assert!(!t.is_running());
        assert_eq!((t.state.backoff, t.state.attempt.clone()), (0, None));
        assert_eq!(t.arm(at(2_000)), at(0).mono + 60_000);
        assert_eq!(t.fire(Active, at(59_999)), [Timer(at(60_000).mono)], "woken early: armed again");

        // Due at 60 s, begun 700 ms late in a burst: the next is still due at 120 s.
        assert_eq!(succeed_run(&mut t, 2, [60_700, 60_900, 61_000]), T0 + 60_000);
        assert_eq!(t.arm(at(61_000)), at(120_000).mono);
    }

    /// Fires `t` at `fired`, begins an attempt for batch `n`, hands it to the pool at
    /// `dispatched` and succeeds at `done` (ms after T0); returns where its period counts from.
    fn succeed_run(t: &mut CadenceTrack, n: u8, [fired, dispatched, done]: [i64; 3]) -> WallMs {
        let fired_effects = t.fire(Active, at(fired));
        let started: Vec<&Effect> = fired_effects.iter().filter(|e| !matches!(e, Emit(Event::Missed { .. }))).collect();
        assert_eq!(started, [&ReadBatch, &Publish]);
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(n), at(fired));
        t.dispatched(at(dispatched));
        t.succeeded(record.batch, at(done))
    }

    #[test]
    fn a_run_begun_whole_periods_late_keeps_its_phase_and_makes_none_up() {
        let mut t = fresh();
        t.fire(Active, at(0));
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

    /// A cadence every 60 s that last succeeded at T0 and is armed for T0 + 60 s.
    fn succeeded_once() -> CadenceTrack {
        let mut t = fresh();
        t.fire(Active, at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.succeeded(record.batch, at(10));
        assert_eq!(t.arm(at(10)), at(60_000).mono);
        t
    }

    fn pause() -> Control {
        Control::Pause(Pause { since_ms: T0, by: "ops".into(), note: Some("maintenance".into()) })
    }

    fn missed(effects: &[Effect]) -> Option<(u64, Late)> {
        effects.iter().find_map(|e| match e {
            Emit(Event::Missed { periods, reason, .. }) => Some((*periods, *reason)),
            _ => None,
        })
    }

    #[test]
    fn a_run_more_than_a_period_late_says_how_many_were_missed_and_why() {
        // Loaded after downtime: the first run, 140 s late on a 60 s grid, missed two.
        let mut t = succeeded_once();
        t.late = Some(Late::Downtime);
        assert_eq!(missed(&t.fire(Active, at(200_000))), Some((2, Late::Downtime)));
        // On time, or late by less than a period: nothing to say.
        let mut t = succeeded_once();
        t.late = None;
        assert_eq!(missed(&t.fire(Active, at(119_000))), None);
        // Late while running: overload.
        let mut t = succeeded_once();
        t.late = None;
        assert_eq!(missed(&t.fire(Active, at(190_000))), Some((2, Late::Overload)));
        // A cadence that never succeeded has no grid to be late on.
        assert_eq!(missed(&fresh().fire(Active, at(500_000))), None);
    }

    #[test]
    fn a_paused_cadence_starts_nothing_keeps_its_pause_and_resumes_with_one_run() {
        let mut t = succeeded_once();
        let (effects, done) = t.control(pause(), Active, at(20)).expect("paused");
        assert_eq!((effects, done), (vec![Persist, Publish], Controlled::Changed));
        assert_eq!(t.state.paused.as_ref().and_then(|p| p.note.as_deref()), Some("maintenance"));
        assert_eq!(t.fire(Active, at(60_000)), [], "the timer set before the pause does nothing");
        assert_eq!(t.schedule(Active, at(60_000)), None, "no timer while paused");
        assert_eq!(t.snapshot(at(60_000), false).next_due_ms.get(), None);
        assert_eq!(t.control(pause(), Active, at(30)).expect("again").1, Controlled::Unchanged);
        let refused = t.control(Control::Trigger, Active, at(30)).expect_err("trigger while paused");
        assert!(refused.0.contains("paused"), "{refused}");
        // The pause is state: a restart keeps it.
        let mut t = CadenceTrack::load(config(60, "local:x"), t.state.clone(), at(300_000), &POLICY);
        assert_eq!(t.schedule(Active, at(300_000)), None);
        let (effects, done) = t.control(Control::Resume, Active, at(300_000)).expect("resumed");
        assert_eq!(done, Controlled::Changed);
        assert_eq!(effects, [Persist, Timer(at(60_000).mono), Publish], "due since 60 s: at once");
        let fired = t.fire(Active, at(300_000));
        assert_eq!(missed(&fired), Some((4, Late::Paused)));
        assert!(fired.ends_with(&[ReadBatch, Publish]), "one run: {fired:?}");
        assert_eq!(t.control(Control::Resume, Active, at(300_001)).expect("again").1, Controlled::Unchanged);
    }

    #[test]
    fn a_trigger_runs_now_without_moving_the_grid_and_once_after_a_run_in_flight() {
        let mut t = succeeded_once();
        // Idle: runs at once, an attempt of its own named by the instant it began.
        let (effects, done) = t.control(Control::Trigger, Active, at(20_000)).expect("triggered");
        assert_eq!((effects, done), (vec![ReadBatch, Publish], Controlled::Changed));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(2), at(20_000));
        assert!(record.triggered);
        assert_eq!(record.nominal_due_ms, T0 + 20_000);
        assert_ne!(record.id, attempt_id("ns", CadenceKind::Fast, &[2; 32], T0 + 60_000));
        t.dispatched(at(20_100));
        t.succeeded(record.batch, at(20_200));
        assert_eq!(t.state.last_success_ms, Some(T0), "the grid stays");
        assert_eq!(t.state.last_triggered_ms.get(), Some(T0 + 20_100));
        assert_eq!(t.arm(at(20_200)), at(60_000).mono, "still due at 60 s");
        // While a run is in flight: queued, once however often asked, run after it.
        let job = in_flight(&mut t, at(60_000), at(60_010));
        assert_eq!(t.control(Control::Trigger, Active, at(60_020)).expect("queued").1, Controlled::Queued);
        assert_eq!(t.control(Control::Trigger, Active, at(60_030)).expect("queued").1, Controlled::Queued);
        assert!(t.snapshot(at(60_030), false).trigger_queued);
        let done = finished(&t, &job, at(60_010), anchored());
        let effects = t.job_finished(done, batch_ref(1), &RULES, Active, at(60_500));
        assert!(effects.contains(&Timer(at(60_500).mono)), "the trigger comes at once: {effects:?}");
        assert_eq!(t.fire(Active, at(60_500)), [ReadBatch, Publish]);
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(3), at(60_500));
        assert!(record.triggered, "the queued trigger is its own attempt");
        t.dispatched(at(60_600));
        t.succeeded(record.batch, at(60_700));
        assert!(!t.trigger_queued);
        assert_eq!(t.arm(at(60_700)), at(120_000).mono, "the grid is the run by period's");
    }

    #[test]
    fn a_trigger_while_backing_off_retries_the_periods_attempt_now() {
        let mut t = succeeded_once();
        let job = in_flight(&mut t, at(60_000), at(60_010));
        let done = finished(&t, &job, at(60_010), failed(ErrorClass::Network, "down"));
        t.job_finished(done, batch_ref(1), &RULES, Active, at(60_400));
        assert!(t.state.backoff > 0 && t.state.attempt.is_some());
        let (effects, _) = t.control(Control::Trigger, Active, at(61_000)).expect("retry now");
        match &effects[..] {
            [Record(job)] => {
                assert_eq!(job.record.id, t.state.attempt.as_ref().map(|a| a.id.clone()).unwrap_or_default());
                assert!(!job.record.triggered, "the period's own attempt");
            }
            other => panic!("not a retry of the attempt: {other:?}"),
        }
    }

    #[test]
    fn a_skip_drops_the_next_run_by_period_and_keeps_the_grid_a_period_on() {
        let mut t = succeeded_once();
        assert_eq!(t.control(Control::Skip, Active, at(20)).expect("skip").0, [Persist, Publish]);
        assert!(t.state.skip_next);
        let effects = t.fire(Active, at(60_000));
        assert_eq!(
            effects,
            [
                Emit(Event::RunSkipped { due_ms: T0 + 60_000, next_ms: T0 + 120_000 }),
                Persist,
                Timer(at(120_000).mono),
                Publish,
            ]
        );
        assert!(!t.state.skip_next && t.state.skipped_to_ms.get() == Some(T0 + 120_000));
        // A restart keeps the moved due time.
        let mut t = CadenceTrack::load(config(60, "local:x"), t.state.clone(), at(70_000), &POLICY);
        assert_eq!(t.arm(at(70_000)), at(120_000).mono);
        assert_eq!(succeed_run(&mut t, 2, [120_000, 120_000, 120_100]), T0 + 120_000);
        assert_eq!(t.state.skipped_to_ms.get(), None, "a success clears it");
        assert_eq!(t.arm(at(120_100)), at(180_000).mono);
    }

    #[test]
    fn an_unfinished_attempt_cannot_be_skipped() {
        let mut t = succeeded_once();
        let job = in_flight(&mut t, at(60_000), at(60_010));
        let done = finished(&t, &job, at(60_010), failed(ErrorClass::Network, "down"));
        t.job_finished(done, batch_ref(1), &RULES, Active, at(60_400));
        let refused = t.control(Control::Skip, Active, at(61_000)).expect_err("refused");
        assert!(refused.0.contains("not finished"), "{refused}");
    }

    #[test]
    fn jitter_shifts_each_run_within_its_bound_keeps_the_grid_and_survives_a_restart() {
        let jittered = Arc::new(CadenceConfig { jitter: Duration::from_secs(6), ..(*config(60, "local:j")).clone() });
        let mut t =
            CadenceTrack::load(Arc::clone(&jittered), std::sync::Arc::new(CadenceState::default()), at(0), &POLICY)
                .with_jitter_for("dao:vaultmesh");
        // The first run (never anchored) is not on a grid: at once.
        assert_eq!(t.arm(at(0)), at(0).mono);
        t.fire(Active, at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.succeeded(record.batch, at(10));
        let mut grid = 60_000;
        for _ in 0..5 {
            let armed = t.arm(at(grid - 30_000));
            let offset = armed - at(grid).mono;
            assert!((0..=6_000).contains(&offset), "offset {offset}");
            // A restart arms the same run for the same instant.
            let again = CadenceTrack::load(Arc::clone(&jittered), t.state.clone(), at(grid - 20_000), &POLICY)
                .with_jitter_for("dao:vaultmesh")
                .arm(at(grid - 20_000));
            assert_eq!(again, armed, "deterministic across restarts");
            // Fired at its jittered time: the lag counts from there, the period from the grid.
            assert_eq!(t.fire(Active, at(grid + offset)), [ReadBatch, Publish]);
            match &t.batch_read("ns", Ok(Some(batch(2))), &RULES, Active, at(grid + offset))[..] {
                [Record(job)] => assert_eq!(job.due, armed, "lag counts from the jittered time"),
                other => panic!("not recorded: {other:?}"),
            }
            t.dispatched(at(grid + offset + 5));
            let from = t.succeeded(batch_ref(2), at(grid + offset + 10));
            assert_eq!(from, T0 + grid, "the grid does not drift by the jitter");
            grid += 60_000;
        }
        // Another namespace draws other offsets for the same grid.
        let other = CadenceTrack::load(jittered, t.state.clone(), at(grid - 30_000), &POLICY).with_jitter_for("other");
        let mine = t.arm(at(grid - 30_000));
        let mut other = other;
        assert_ne!(other.arm(at(grid - 30_000)), mine, "(a collision here is one chance in 6,001)");
    }

    #[test]
    fn a_possible_anchor_is_resumed_and_a_refusal_is_dropped() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.dispatched(at(0));
        let (level, delay) = t.failed(&AnchorError::new(ErrorClass::Network, "down"), &POLICY, at(100));
        assert_eq!(level, 1);
        assert_eq!(t.state.attempt.as_ref().map(|a| a.status), Some(AttemptStatus::Failed));
        // Not before the backoff delay; then the same attempt, same root.
        let retry = at(100 + duration_ms(delay));
        assert_eq!(t.fire(Active, at(100)), [Timer(retry.mono)]);
        let resumed = t.fire(Active, retry);
        assert!(resumes(&resumed), "{resumed:?}");
        assert!(matches!(&resumed[..], [Record(job)] if job.record.id == record.id && job.root == [1; 32]));
        t.dispatched(retry);
        t.failed(&AnchorError::new(ErrorClass::Auth, "no"), &POLICY, retry);
        assert_eq!(t.state.attempt, None, "an auth refusal anchored nothing");
        assert_eq!(t.state.backoff, 2);
    }

    #[test]
    fn a_guessed_class_keeps_the_attempt() {
        let mut t = fresh();
        t.fire(Active, at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.failed(&AnchorError::uncertain(ErrorClass::Auth, "403 in stderr"), &POLICY, at(1));
        assert!(t.state.attempt.is_some());
    }

    #[test]
    fn failure_delays_follow_the_policy() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let (_, d1) = t.failed(&AnchorError::new(ErrorClass::Validation, "bad"), &POLICY, at(0));
        assert_eq!(d1, POLICY.delay(1, ErrorClass::Validation));
        assert_eq!(t.arm(at(0)), at(0).mono + duration_ms(d1));
        assert_eq!(t.state.retry_at_ms.get(), Some(T0 + duration_ms(d1)));
    }

    #[test]
    fn an_interrupted_attempt_is_resumed_at_once_after_a_restart() {
        let mut t = fresh();
        t.fire(Active, at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.interrupted();
        let saved = t.state.clone();
        let mut again = CadenceTrack::load(config(60, "local:j"), saved, at(5_000), &POLICY);
        assert!(again.resumes());
        assert_eq!(again.arm(at(5_000)), at(5_000).mono);
        assert!(resumes(&again.fire(Active, at(5_000))));
    }

    #[test]
    fn a_recorded_attempt_for_an_old_target_is_abandoned() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.failed(&AnchorError::new(ErrorClass::Network, "down"), &POLICY, at(0));
        let retry = at(duration_ms(POLICY.delay(1, ErrorClass::Network)));
        assert_eq!(t.reconfigure(config(60, "local:other"), Active, at(0)), Some(Timer(retry.mono)));
        assert_eq!(
            t.fire(Active, at(1_000_000)),
            [Emit(Event::Abandoned { attempt: record.id, was: "local:j".into() }), ReadBatch, Publish]
        );
        assert_eq!(t.state.attempt, None);
    }

    #[test]
    fn loading_caps_the_level_and_tames_clock_jumps() {
        let state = CadenceState {
            backoff: 9,
            last_success_ms: Some(T0 + 3_600_000), // in the future: the clock stepped back
            retry_at_ms: OptMs::some(T0 + 86_400_000), // a day away: longer than any backoff
            ..CadenceState::default()
        };
        let t = CadenceTrack::load(config(60, "local:j"), std::sync::Arc::new(state), at(0), &POLICY);
        assert_eq!(t.state.backoff, 7);
        assert_eq!(t.last_success_mono.get(), Some(at(0).mono));
        let longest = duration_ms(POLICY.delay(7, ErrorClass::Auth));
        assert_eq!(t.retry_at_mono.get(), Some(at(0).mono + longest));
    }

    #[test]
    fn a_cadence_removed_mid_run_retires_when_the_run_ends_unless_it_comes_back() {
        let mut t = fresh();
        assert_eq!(t.remove(), Some(Retire), "nothing under way: it retires at once");
        t.fire(Active, at(0));
        assert_eq!(t.remove(), None, "a run under way finishes first");
        assert!(t.retiring());
        assert_eq!(t.reconfigure(config(60, "local:j"), Active, at(0)), None, "re-armed when the run ends");
        assert!(!t.retiring(), "back in the config: it carries on");
    }

    #[test]
    fn a_past_success_maps_onto_the_monotonic_timeline() {
        let state = CadenceState { last_success_ms: Some(T0 - 30_000), ..CadenceState::default() };
        let mut t = CadenceTrack::load(config(60, "local:j"), std::sync::Arc::new(state), at(0), &POLICY);
        assert_eq!(t.arm(at(0)), at(0).mono + 30_000);
    }

    #[test]
    fn no_batch_rechecks_soon_and_reports_when_the_wait_began() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let (again, began) = t.no_batch(at(0), Duration::from_secs(10));
        assert_eq!((again, began), (at(0).mono + 10_000, true));
        assert!(!t.is_running());
        t.fire(Active, at(10_000));
        let (_, began) = t.no_batch(at(10_000), Duration::from_secs(10));
        assert!(!began, "a continuing wait is not a new skip");
        t.fire(Active, at(20_000));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(2), at(20_000));
        assert_eq!(t.waiting, None);
    }

    #[test]
    fn an_unwritable_state_file_delays_the_run_without_raising_backoff() {
        let mut t = fresh();
        t.fire(Active, at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.not_recorded(at(0), "disk full", Duration::from_secs(5));
        assert_eq!(t.state.backoff, 0);
        assert_eq!(t.waiting.as_deref(), Some(&Waiting::StateNotWritable("disk full".into())));
        assert_eq!(t.arm(at(0)), at(0).mono + 5_000);
        t.dispatched(at(5_000));
        assert_eq!(t.waiting, None);
    }

    #[test]
    fn attempt_ids_are_stable_across_retries_of_one_period() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let a = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.state_mut().attempt = None;
        let b = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(9_999));
        assert_eq!(a.id, b.id);
        t.succeeded(b.batch.clone(), at(10_000));
        let c = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(70_000));
        assert_ne!(a.id, c.id, "the next period has its own id");
    }

    fn pending(depth: u32) -> Pending {
        Pending { data: serde_json::json!({"txHash": "0x01"}), required: 3, depth, poll_ms: 2_000, fee: None }
    }

    #[test]
    fn a_pending_anchor_is_confirmed_not_sent_again_when_its_period_comes_round() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let record = t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.dispatched(at(5));
        t.sent(pending(0), at(100));
        assert!(!t.is_running());
        let a = t.state.attempt.clone().expect("kept");
        assert_eq!((a.status, a.sent_ms), (AttemptStatus::Pending, Some(T0 + 5)));
        // Looked at again after poll_ms, and long after the period: still a confirmation.
        assert_eq!(t.arm(at(100)), at(100).mono + 2_000);
        assert_eq!(t.fire(Active, at(1_000)), [Timer(at(2_100).mono)]);
        let job = Job { record: *a.clone(), root: [1; 32], mode: JobMode::Confirm(pending(0)), due: at(2_100).mono };
        assert_eq!(t.fire(Active, at(2_100)), [Submit(job), Publish]);
        t.sent(pending(2), at(2_200));
        assert_eq!(confirms(&t.fire(Active, at(500_000))).map(|p| p.depth), Some(2));
        // Final: the period counts from when it was sent.
        let when = t.succeeded(record.batch.clone(), at(600_000));
        assert_eq!(when, T0 + 5);
        assert_eq!(t.arm(at(600_000)), at(5).mono + 60_000);
    }

    #[test]
    fn a_pending_anchor_survives_a_restart_and_is_checked_at_once() {
        let mut t = fresh();
        t.fire(Active, at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.sent(pending(1), at(0));
        let mut again = CadenceTrack::load(config(60, "local:j"), t.state.clone(), at(9_000), &POLICY);
        assert_eq!(again.arm(at(9_000)), at(9_000).mono);
        assert!(confirms(&again.fire(Active, at(9_000))).is_some());
    }

    #[test]
    fn a_confirmation_check_cut_short_by_shutdown_leaves_the_anchor_pending() {
        let mut t = fresh();
        t.fire(Active, at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.sent(pending(1), at(0));
        assert!(confirms(&t.fire(Active, at(2_000))).is_some());
        t.interrupted();
        assert_eq!(t.state.attempt.as_ref().map(|a| a.status), Some(AttemptStatus::Pending));
        let mut again = CadenceTrack::load(config(60, "local:j"), t.state.clone(), at(5_000), &POLICY);
        assert!(confirms(&again.fire(Active, at(5_000))).is_some(), "checked again, not sent again");
    }

    #[test]
    fn a_dropped_anchor_is_sent_again_once_then_fails() {
        let mut t = fresh();
        t.fire(Active, at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        let recorded = serde_json::json!({"txHash": "0x01", "raw": "0x02"});
        if let Some(a) = t.state_mut().attempt.as_mut() {
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
        t.fire(Active, at(0));
        t.begin_attempt("ns", CadenceKind::Fast, &batch(1), at(0));
        t.sent(pending(0), at(0));
        assert!(confirms(&t.fire(Active, at(2_000))).is_some());
        let wait = t.confirm_failed(&AnchorError::new(ErrorClass::Network, "node down"), &POLICY, at(2_010));
        assert_eq!(t.state.backoff, 0);
        assert!(t.pending().is_some());
        assert_eq!(t.arm(at(2_010)), at(2_010).mono + duration_ms(wait));
    }

    const RULES: Rules = Rules { backoff: POLICY, recheck: Duration::from_secs(10) };

    /// Fires a fresh cadence at `t0` and reads batch 1: the attempt's job, to be recorded.
    fn recording(t: &mut CadenceTrack, t0: Now) -> Job {
        assert_eq!(t.fire(Active, t0), [ReadBatch, Publish]);
        match &t.batch_read("ns", Ok(Some(batch(1))), &RULES, Active, t0)[..] {
            [Record(job)] => job.clone(),
            other => panic!("not recorded first: {other:?}"),
        }
    }

    /// Fires, reads batch 1 and records its attempt: the job handed to the pool at `sent`.
    fn in_flight(t: &mut CadenceTrack, t0: Now, sent: Now) -> Job {
        let job = recording(t, t0);
        match &t.attempt_recorded(job, Ok(()), &RULES, Active, sent)[..] {
            [Submit(job), Publish] => job.clone(),
            other => panic!("not submitted: {other:?}"),
        }
    }

    /// What the pool answers for `job`: a worker started it at `started` and spent 300 ms.
    fn finished(t: &CadenceTrack, job: &Job, started: Now, outcome: Outcome) -> JobFinished {
        JobFinished {
            request: t.request("ns", job),
            mode: job.mode.clone(),
            due_mono: job.due,
            started_mono: Some(started.mono),
            duration: Duration::from_millis(300),
            outcome,
        }
    }

    fn anchored() -> Outcome {
        Outcome::Anchored(Final { path: "out/r.json".into(), recovered: false, aggregate: None })
    }

    fn failed(class: ErrorClass, message: &str) -> Outcome {
        Outcome::Failed(JobFailed { error: AnchorError::new(class, message), interrupted: false })
    }

    fn batch_ref(n: u8) -> BatchRef {
        BatchRef { id: format!("b{n}").into(), root: batch(n).root_string().into() }
    }

    /// The failure told among `effects`.
    fn failure(effects: &[Effect]) -> Option<&Failure> {
        effects.iter().find_map(|e| match e {
            Emit(Event::Failed(f)) => Some(&**f),
            _ => None,
        })
    }

    fn inclusion() -> Inclusion {
        Inclusion { leaf: "01".repeat(40), index: 3, size: 8, path: vec!["aa".repeat(32)], root: "bb".repeat(32) }
    }

    #[test]
    fn an_attempt_that_joined_an_aggregate_carries_its_membership_into_every_later_job_and_its_success() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        assert_eq!(t.request("ns", &job).membership, None, "a fresh attempt is no leaf yet");
        assert_eq!(t.dispatched_attempt(), Some(job.record.id.as_str()));
        assert!(!t.record_membership("another attempt", inclusion()), "only the current attempt's");
        assert!(t.record_membership(&job.record.id, inclusion()));
        assert_eq!(t.state().attempt.as_ref().and_then(|a| a.aggregate.clone()), Some(inclusion()));
        // The aggregate failed in a way that may have anchored: the retry is of that aggregate.
        let done = finished(&t, &job, at(5), failed(ErrorClass::Network, "down"));
        t.job_finished(done, batch_ref(1), &RULES, Active, at(10));
        let due = t.state().retry_at_ms.get().expect("a retry time") - T0;
        let effects = t.fire(Active, at(due));
        let [Record(retry)] = &effects[..] else { panic!("the attempt is resumed: {effects:?}") };
        assert_eq!(retry.mode, JobMode::Anchor { resume: true, stopped_midway: false }, "a retry, not a stop");
        assert_eq!(t.request("ns", retry).membership, Some(inclusion()), "never sent on its own");
        t.attempt_recorded(retry.clone(), Ok(()), &RULES, Active, at(due));
        let done = finished(&t, retry, at(due), anchored());
        t.job_finished(done, batch_ref(1), &RULES, Active, at(due + 1));
        let shown = t.snapshot(at(due + 1), false).state.last_aggregate.clone();
        assert_eq!(shown, Some(Box::new(LastAggregate { root: "bb".repeat(32), size: 8, index: 3 })));
        assert_eq!(t.state().last_aggregate, shown, "kept in the state, so it survives a restart");
    }

    #[test]
    fn nothing_fires_while_a_run_is_under_way_or_the_namespace_is_quiet() {
        let mut t = fresh();
        assert_eq!(t.fire(Quiet, at(0)), [], "draining or leaving the config: nothing starts");
        assert!(!t.is_running());
        t.fire(Active, at(0));
        assert_eq!(t.fire(Active, at(1)), [], "runs never stack");
        assert_eq!(t.schedule(Active, at(1)), None, "re-armed only when the run ends");
    }

    #[test]
    fn starting_says_when_it_resumes_an_unfinished_attempt() {
        assert_eq!(fresh().start(Active, at(0)), [Timer(at(0).mono)]);
        let mut t = fresh();
        recording(&mut t, at(0));
        let mut again = CadenceTrack::load(config(60, "local:j"), t.state.clone(), at(5_000), &POLICY);
        assert_eq!(again.start(Active, at(5_000)), [Emit(Event::Resuming), Timer(at(5_000).mono)]);
        assert_eq!(again.start(Quiet, at(5_000)), [Emit(Event::Resuming)], "told, not armed");
        // Under way when the process stopped: its receipt may exist, so the job says so.
        let resumed = again.fire(Active, at(5_000));
        assert!(
            matches!(&resumed[..], [Record(Job { mode: JobMode::Anchor { resume: true, stopped_midway: true }, .. })]),
            "{resumed:?}"
        );
    }

    #[test]
    fn a_batch_begins_an_attempt_that_is_written_before_it_is_sent() {
        let mut t = fresh();
        let job = recording(&mut t, at(0));
        assert_eq!(
            (job.mode.clone(), job.root, job.due),
            (JobMode::Anchor { resume: false, stopped_midway: false }, [1; 32], at(0).mono)
        );
        assert_eq!(t.state.attempt.as_deref(), Some(&job.record), "in the state that is written");
        assert_eq!(job.record.status, AttemptStatus::Started);
        assert!(t.is_running());
        assert_eq!(t.attempt_recorded(job.clone(), Ok(()), &RULES, Active, at(40)), [Submit(job.clone()), Publish]);
        let shown = t.snapshot(at(40), false);
        assert!(shown.in_flight && shown.next_due_ms.get().is_none(), "{shown:?}");
        assert!(t.uses_target("local:j"));
        let request = t.request("ns", &job);
        assert_eq!((request.attempt_id, request.root, request.cadence), (job.record.id, [1; 32], CadenceKind::Fast));
    }

    #[test]
    fn a_due_cadence_without_a_batch_looks_again_soon_and_tells_the_skip_once() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let again = at(10_000);
        assert_eq!(
            t.batch_read("ns", Ok(None), &RULES, Active, at(0)),
            [Emit(Event::NoBatch), Timer(again.mono), Publish]
        );
        assert_eq!(t.snapshot(at(0), false).waiting.as_deref(), Some(&Waiting::NoBatch));
        assert_eq!(t.snapshot(at(0), false).next_due_ms.get(), Some(again.wall));
        t.fire(Active, again);
        assert_eq!(t.batch_read("ns", Ok(None), &RULES, Active, again), [Timer(at(20_000).mono), Publish]);
    }

    #[test]
    fn a_quiet_namespace_ends_a_run_that_found_no_batch() {
        let mut t = fresh();
        t.fire(Active, at(0));
        assert_eq!(t.batch_read("ns", Ok(None), &RULES, Quiet, at(0)), [Emit(Event::NoBatch), RunEnded]);
        assert!(!t.is_running());
    }

    #[test]
    fn an_unreadable_batch_fails_the_cadence_as_an_attempt() {
        let mut t = fresh();
        t.fire(Active, at(0));
        let error = BatchError::Malformed { path: "out/batches/ns/x.json".into(), reason: "not JSON".into() };
        let effects = t.batch_read("ns", Err(error), &RULES, Active, at(0));
        let delay = POLICY.delay(1, ErrorClass::Validation);
        let f = failure(&effects).expect("a failure");
        assert_eq!((f.target.as_str(), f.attempt.clone(), f.error.class), ("local:j", None, ErrorClass::Validation));
        assert_eq!((f.level, f.delay, f.failures, f.duration), (1, delay, 1, None));
        assert_eq!(effects[0], Emit(Event::BatchUnreadable { target: "local:j".into() }));
        assert_eq!(effects[2..], [Persist, Timer(at(0).mono + duration_ms(delay)), RunEnded]);
    }

    #[test]
    fn an_attempt_that_cannot_be_written_is_not_sent_and_is_retried_without_backoff() {
        let mut t = fresh();
        let job = recording(&mut t, at(0));
        let wait = POLICY.delay(0, ErrorClass::Network);
        let effects = t.attempt_recorded(job, Err("disk full".into()), &RULES, Active, at(30));
        assert_eq!(effects, [Timer(at(30).mono + duration_ms(wait)), RunEnded]);
        assert_eq!((t.state.backoff, t.is_running()), (0, false));
        assert_eq!(t.snapshot(at(30), false).waiting.as_deref(), Some(&Waiting::StateNotWritable("disk full".into())));
    }

    #[test]
    fn an_attempt_written_while_the_namespace_goes_quiet_is_kept_for_later_not_sent() {
        let mut t = fresh();
        let job = recording(&mut t, at(0));
        assert_eq!(t.attempt_recorded(job, Ok(()), &RULES, Quiet, at(30)), [RunEnded]);
        assert!(!t.is_running());
        assert_eq!(t.state.attempt.as_ref().map(|a| a.status), Some(AttemptStatus::Started));
    }

    #[test]
    fn a_final_anchor_is_told_and_written_and_the_next_run_armed() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(20));
        let done = finished(&t, &job, at(50), anchored());
        let effects = t.job_finished(done, batch_ref(1), &RULES, Active, at(400));
        let told = Anchored {
            target: "local:j".into(),
            batch: "b1".into(),
            attempt: job.record.id.clone(),
            receipt: "out/r.json".into(),
            took: Duration::from_millis(300),
            lag_ms: Some(50),
            recovered: false,
            run_wall: T0,
        };
        assert_eq!(
            effects,
            [
                Emit(Event::Lag { ms: 50 }),
                Emit(Event::Anchored(Box::new(told))),
                Emit(Event::PendingEnded { target: "local:j".into() }),
                Persist,
                Timer(at(60_000).mono),
                RunEnded,
            ]
        );
        assert_eq!((t.state.last_batch.clone(), t.state.attempt.clone()), (Some(batch_ref(1)), None));
    }

    #[test]
    fn a_pending_anchor_is_told_when_sent_then_looked_at_again_quietly_until_final() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(20));
        let effects = t.job_finished(
            finished(&t, &job, at(20), Outcome::Pending(pending(0))),
            batch_ref(1),
            &RULES,
            Active,
            at(900),
        );
        let sent = Event::Sent {
            target: "local:j".into(),
            attempt: job.record.id.clone(),
            pending: pending(0),
            sent_ms: Some(T0 + 20),
            newly: true,
            lag_ms: Some(20),
            before: None,
        };
        assert_eq!(effects, [Emit(Event::Lag { ms: 20 }), Emit(sent), Persist, Timer(at(2_900).mono), RunEnded]);
        let look = t.fire(Active, at(2_900));
        let Some(Submit(check)) = look.first().cloned() else { panic!("not looked at: {look:?}") };
        let effects = t.job_finished(
            finished(&t, &check, at(2_900), Outcome::Pending(pending(2))),
            batch_ref(1),
            &RULES,
            Active,
            at(3_000),
        );
        assert!(
            matches!(&effects[0], Emit(Event::Sent { newly: false, sent_ms: Some(sent), before: Some(b), .. })
                if *sent == T0 + 20 && **b == pending(0)),
            "the look says how the anchor stood before it: {effects:?}"
        );
        let effects =
            t.job_finished(finished(&t, &check, at(5_000), anchored()), batch_ref(1), &RULES, Active, at(5_100));
        assert!(
            matches!(&effects[0], Emit(Event::Anchored(a)) if a.took == Duration::from_millis(5_080) && a.lag_ms.is_none())
        );
    }

    #[test]
    fn a_pending_anchor_at_its_fee_cap_says_so_in_its_snapshot() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        let fee = crate::model::PendingFee {
            unit: "wei/gas".into(),
            rate: 40_000_000_000,
            tip: Some(1_500_000_000),
            cap: Some(40_000_000_000),
            replacements: 4,
            at_cap: true,
            sent_ms: None,
            sent_height: None,
        };
        let capped = Pending { fee: Some(fee.clone()), ..pending(0) };
        t.job_finished(finished(&t, &job, at(0), Outcome::Pending(capped)), batch_ref(1), &RULES, Active, at(10));
        let waiting = t.snapshot(at(20), false).waiting.map(|w| w.to_string());
        assert_eq!(
            waiting.as_deref(),
            Some(
                "stuck at the fee cap: offering 40 gwei per gas, tip 1.5 gwei (cap 40 gwei); waiting for fees to drop"
            )
        );
        let look = t.fire(Active, at(2_010));
        let Some(Submit(check)) = look.first().cloned() else { panic!("not looked at: {look:?}") };
        let moving = Pending { fee: Some(crate::model::PendingFee { at_cap: false, ..fee }), ..pending(0) };
        t.job_finished(
            finished(&t, &check, at(2_010), Outcome::Pending(moving)),
            batch_ref(1),
            &RULES,
            Active,
            at(2_020),
        );
        assert_eq!(t.snapshot(at(2_030), false).waiting, None, "no longer at the cap");
    }

    #[test]
    fn a_dropped_anchor_is_written_and_sent_again_then_fails_when_dropped_again() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        t.job_finished(finished(&t, &job, at(0), Outcome::Pending(pending(0))), batch_ref(1), &RULES, Active, at(10));
        let look = t.fire(Active, at(2_010));
        let Some(Submit(check)) = look.first().cloned() else { panic!("not looked at: {look:?}") };
        let dropped = finished(&t, &check, at(2_010), Outcome::Dropped("not in the mempool".into()));
        let effects = t.job_finished(dropped, batch_ref(1), &RULES, Active, at(2_100));
        let pending_ended = Emit(Event::PendingEnded { target: "local:j".into() });
        let resent = Emit(Event::Resent {
            target: "local:j".into(),
            attempt: job.record.id.clone(),
            why: "not in the mempool".into(),
            reorged: false,
        });
        let record = AttemptRecord { resent: 1, ..job.record.clone() };
        let again = Job {
            record,
            root: job.root,
            mode: JobMode::Anchor { resume: false, stopped_midway: false },
            due: at(2_010).mono,
        };
        assert_eq!(effects, [pending_ended.clone(), resent, Record(again.clone())]);
        assert!(t.is_running(), "the run goes on with the re-send");
        let Submit(resend) = t.attempt_recorded(again, Ok(()), &RULES, Active, at(2_200)).remove(0) else { panic!() };
        t.job_finished(
            finished(&t, &resend, at(2_200), Outcome::Pending(pending(0))),
            batch_ref(1),
            &RULES,
            Active,
            at(2_300),
        );
        let Some(Submit(check)) = t.fire(Active, at(4_300)).first().cloned() else { panic!("not looked at") };
        let dropped = finished(&t, &check, at(4_300), Outcome::Dropped("not in the mempool".into()));
        let effects = t.job_finished(dropped, batch_ref(1), &RULES, Active, at(4_400));
        assert_eq!(effects[0], pending_ended);
        let f = failure(&effects).expect("dropped twice fails");
        assert_eq!((f.error.class, f.level), (ErrorClass::Network, 1));
        assert!(f.error.message.contains("dropped again after being sent again"), "{}", f.error.message);
    }

    #[test]
    fn a_pending_anchor_the_target_refuses_fails_and_is_not_resumed() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        let refused = Outcome::Rejected(AnchorError::uncertain(ErrorClass::Validation, "reverted"));
        let effects = t.job_finished(finished(&t, &job, at(0), refused), batch_ref(1), &RULES, Active, at(10));
        assert_eq!(effects[1], Emit(Event::PendingEnded { target: "local:j".into() }));
        assert!(failure(&effects).is_some_and(|f| f.error.refused));
        assert_eq!((t.state.attempt.clone(), t.state.backoff), (None, 1));
    }

    #[test]
    fn a_failed_send_backs_off_and_counts_the_drivers_time() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        let effects = t.job_finished(
            finished(&t, &job, at(0), failed(ErrorClass::Network, "down")),
            batch_ref(1),
            &RULES,
            Active,
            at(500),
        );
        let delay = POLICY.delay(1, ErrorClass::Network);
        let f = failure(&effects).expect("a failure");
        let named = Some((job.record.id.clone(), "b1".to_string()));
        assert_eq!(
            (f.attempt.clone(), f.level, f.delay, f.duration),
            (named, 1, delay, Some(Duration::from_millis(300)))
        );
        assert_eq!(effects[2..], [Persist, Timer(at(500).mono + duration_ms(delay)), RunEnded]);
        assert_eq!(t.state.attempt.as_ref().map(|a| a.status), Some(AttemptStatus::Failed), "kept for resuming");
    }

    #[test]
    fn a_failed_look_at_a_pending_anchor_looks_again_later_without_backoff() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        t.job_finished(finished(&t, &job, at(0), Outcome::Pending(pending(1))), batch_ref(1), &RULES, Active, at(0));
        let Some(Submit(check)) = t.fire(Active, at(2_000)).first().cloned() else { panic!("not looked at") };
        let down = finished(&t, &check, at(2_000), failed(ErrorClass::Network, "node down"));
        let effects = t.job_finished(down, batch_ref(1), &RULES, Active, at(2_100));
        let wait = POLICY.delay(1, ErrorClass::Network);
        let told = Event::CheckFailed {
            attempt: job.record.id,
            error: AnchorError::new(ErrorClass::Network, "node down"),
            wait,
        };
        assert_eq!(effects, [Emit(told), Persist, Timer(at(2_100).mono + duration_ms(wait)), RunEnded]);
        assert_eq!(t.state.backoff, 0);
    }

    #[test]
    fn a_job_cut_short_by_shutdown_is_written_to_be_resumed_on_the_next_start() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        let cut =
            Outcome::Failed(JobFailed { error: AnchorError::new(ErrorClass::Unknown, "cancelled"), interrupted: true });
        let effects = t.job_finished(finished(&t, &job, at(0), cut), batch_ref(1), &RULES, Quiet, at(10));
        let told = Event::Interrupted { attempt: job.record.id.clone(), error: "cancelled".into() };
        assert_eq!(effects, [Emit(Event::Lag { ms: 0 }), Emit(told), Persist, RunEnded]);
        assert_eq!(t.state.attempt.as_ref().map(|a| a.status), Some(AttemptStatus::Interrupted));
    }

    #[test]
    fn a_cadence_removed_mid_run_retires_when_its_job_returns_even_after_a_failure() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        assert_eq!(t.remove(), None);
        let effects = t.job_finished(
            finished(&t, &job, at(0), failed(ErrorClass::Network, "down")),
            batch_ref(1),
            &RULES,
            Active,
            at(10),
        );
        assert_eq!(effects[effects.len() - 2..], [Retire, RunEnded]);
    }

    #[test]
    fn a_cadence_removed_mid_run_and_back_again_is_armed_when_its_job_returns() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        t.remove();
        t.reconfigure(config(30, "local:j"), Active, at(5));
        let effects = t.job_finished(finished(&t, &job, at(0), anchored()), batch_ref(1), &RULES, Active, at(10));
        assert_eq!(effects[effects.len() - 2..], [Timer(at(30_000).mono), RunEnded], "the new period counts");
    }

    #[test]
    fn a_reconfigured_cadence_keeps_its_in_flight_target_in_use_until_the_job_returns() {
        let mut t = fresh();
        let job = in_flight(&mut t, at(0), at(0));
        t.reconfigure(config(60, "local:other"), Active, at(5));
        assert!(t.uses_target("local:j") && t.uses_target("local:other"));
        t.job_finished(finished(&t, &job, at(0), anchored()), batch_ref(1), &RULES, Active, at(10));
        assert!(!t.uses_target("local:j"));
    }

    #[test]
    fn progress_is_recorded_only_for_the_current_attempt() {
        let mut t = fresh();
        let job = recording(&mut t, at(0));
        assert!(!t.record_progress("another", serde_json::json!({"raw": "0x01"})));
        assert!(t.record_progress(&job.record.id, serde_json::json!({"raw": "0x01"})));
        assert_eq!(t.request("ns", &job).progress, Some(serde_json::json!({"raw": "0x01"})));
    }
}
