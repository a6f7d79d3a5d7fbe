//! The `NamespaceActor`: one per namespace. It owns its cadences' timers and does the I/O a
//! run needs — read the latest batch, record the attempt durably, hand the job to the pool,
//! write the state, log and count, report to /health. Every decision is a method of
//! [`CadenceTrack`] that returns the [`Effect`]s to carry out; the handlers only route an
//! event to its cadence's track and carry out what comes back.
//!
//! Each cadence has one due time, exact to the millisecond; the actor keeps one timer, for
//! the earliest (three per namespace were 30 MB at 100,000). A cadence never has two anchors
//! in flight (a slow anchor delays its own next run; runs do not stack). A namespace removed
//! from the config stops once its running anchors have returned, so it can be added back
//! without two runs of one cadence overlapping.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::Logger;
use tokio::sync::oneshot;

use super::alarm::{Alarm, Ring};
use super::backoff::BackoffPolicy;
use super::control::{ControlError, ControlNamespace, Controlled};
use super::effect::{Effect, Event, Job};
use super::gate::StartGate;
use super::track::{CadenceTrack, Mode, Now, Rules};
use crate::anchor::aggregate::{Aggregator, Leave};
use crate::anchor::pool::{AnchorJob, AnchorPool, AttemptProgress, Durable, JobFinished, JobMode, Recorded, Submit};
use crate::batch::{Batch, BatchError, BatchReader};
use crate::clock::{Clock, MonoMs};
use crate::config::{CadenceMap, NamespaceConfig};
use crate::health::NamespaceSnapshot;
use crate::health::actor::{HealthActor, NamespaceRemoved, NamespaceUpdate};
use crate::metrics::Metrics;
use crate::metrics::NamespaceSeries;
use crate::model::CadenceKind;
use crate::model::time::{OptMs, duration_ms};
use crate::storage::state::store::{StateStore, Update};
use crate::storage::state::{BatchRef, CadenceState, NamespaceState};
use crate::telemetry::{InternalEvent, events};

/// Longest single timer; longer waits re-arm, so absurd periods cannot overflow a deadline.
const MAX_TIMER: Duration = Duration::from_secs(86_400);

/// How soon a run held back by a closed start gate looks again.
const GATE_RECHECK: Duration = Duration::from_millis(250);

/// Each actor's name to the alarm, unique in the process.
static NEXT_ALARM_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What every namespace actor shares.
pub(crate) struct NamespaceDeps {
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// The anchor pool.
    pub pool: Addr<AnchorPool>,
    /// Where a cadence that leaves the config takes its job out of an aggregate collecting.
    pub aggregator: Option<Addr<Aggregator>>,
    /// The state owner.
    pub store: Addr<StateStore>,
    /// Where status goes.
    pub health: Addr<HealthActor>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Logger.
    pub log: Logger,
    /// VMSH_ROOT, where batches are read and receipts written.
    pub root: PathBuf,
    /// Reads the namespaces' latest batches.
    pub batches: BatchReader,
    /// Backoff settings.
    pub backoff: BackoffPolicy,
    /// How soon to look again when a due cadence had no batch.
    pub recheck: Duration,
    /// Until when runs may start (a cluster replica's lease).
    pub gate: Arc<StartGate>,
    /// Wakes each actor at its earliest due time.
    pub alarm: Alarm<NamespaceActor>,
}

impl NamespaceDeps {
    fn rules(&self) -> Rules {
        Rules { backoff: self.backoff, recheck: self.recheck }
    }
}

struct Slot {
    track: CadenceTrack,
    /// When its timer goes off (monotonic), while one is set.
    due: OptMs,
}

/// Schedules and runs the anchors of one namespace.
pub(crate) struct NamespaceActor {
    /// Its config; the name in it is the one copy, shared with what /health keeps of it.
    config: Arc<NamespaceConfig>,
    slots: CadenceMap<Slot>,
    /// What it seldom has, boxed until it has it.
    seldom: Option<Box<Seldom>>,
    deps: Arc<NamespaceDeps>,
    draining: bool,
    retiring: bool,
    series: Arc<NamespaceSeries>,
    /// When the alarm is set to wake it, for the earliest `due` of the slots; none while it
    /// is not set.
    timer_at: OptMs,
    /// Which actor it is to the alarm.
    alarm_id: u64,
}

/// What a namespace actor seldom has. Inline it would grow every namespace's task, which
/// tokio allocates in steps of 128 bytes: the actor is held to a size that fits one step
/// fewer (see the size test below).
#[derive(Default)]
struct Seldom {
    /// State of cadences not in the config (kept for when they come back).
    dormant: BTreeMap<CadenceKind, Arc<CadenceState>>,
    /// Dropped with the actor: tells whoever handed the namespace over that it stopped.
    stopped: Option<oneshot::Sender<()>>,
}

impl NamespaceActor {
    /// An actor for `config`, resuming from `state`.
    pub(crate) fn new(config: Arc<NamespaceConfig>, state: NamespaceState, deps: Arc<NamespaceDeps>) -> Self {
        let now = now(deps.clock.as_ref());
        let mut dormant = state.cadences;
        let slots = config
            .cadences
            .iter()
            .map(|(kind, c)| {
                let state = dormant.remove(kind).unwrap_or_default();
                let track = CadenceTrack::load(c.clone(), state, now, &deps.backoff).with_jitter_for(&config.name);
                (*kind, Slot { track, due: OptMs::NONE })
            })
            .collect();
        let series = deps.metrics.namespace(Arc::clone(&config.name));
        Self {
            config,
            slots,
            seldom: (!dormant.is_empty())
                .then(|| Box::new(Seldom { dormant: dormant.into_iter().collect(), stopped: None })),
            deps,
            draining: false,
            retiring: false,
            series,
            timer_at: OptMs::NONE,
            alarm_id: NEXT_ALARM_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn now(&self) -> Now {
        now(self.deps.clock.as_ref())
    }

    /// Draining for shutdown or leaving the config: nothing new starts.
    fn mode(&self) -> Mode {
        if self.draining || self.retiring { Mode::Quiet } else { Mode::Active }
    }

    /// The reference to record for a batch: the cadences of a namespace usually anchor the same
    /// batch, so they share one copy of its id and root.
    fn shared_batch(&self, id: &str, root: &str) -> BatchRef {
        self.slots
            .values()
            .flat_map(|s| s.track.batches())
            .find(|b| &*b.id == id && &*b.root == root)
            .cloned()
            .unwrap_or_else(|| BatchRef { id: id.into(), root: root.into() })
    }

    fn track_series(&mut self, kind: CadenceKind) {
        if let Some(s) = self.slots.get(&kind) {
            let target = s.track.config().target.to_string();
            self.series.init_cadence(kind, &target);
            self.series.set_period(kind, i64::try_from(s.track.config().period.as_millis()).unwrap_or(i64::MAX));
        }
    }

    /// Carries out what `kind`'s track asked for, in order.
    fn carry_out(
        &mut self,
        kind: CadenceKind,
        now: Now,
        effects: impl IntoIterator<Item = Effect>,
        ctx: &mut Context<Self>,
    ) {
        for effect in effects {
            match effect {
                Effect::Emit(event) => self.emit(kind, event),
                Effect::Persist => self.persist(kind, None),
                Effect::Record(job) => self.record(kind, job, ctx),
                Effect::ReadBatch => self.read_batch(kind, ctx),
                Effect::Submit(job) => self.submit(kind, job, ctx),
                Effect::Timer(due) => self.set_timer(kind, due, now, ctx),
                Effect::Retire => self.retire_cadence(kind, ctx),
                Effect::RunEnded => self.run_ended(ctx),
                Effect::Publish => self.publish(),
            }
        }
    }

    fn set_timer(&mut self, kind: CadenceKind, due: MonoMs, now: Now, ctx: &mut Context<Self>) {
        let at = due.min(now.mono.saturating_add(duration_ms(MAX_TIMER)));
        if let Some(slot) = self.slots.get_mut(&kind) {
            slot.due = OptMs::some(at);
        }
        self.arm(ctx);
        self.series.set_next_due(kind, now.wall_of(due));
    }

    /// Sets the alarm for the earliest due slot, or clears it when none is due.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let next = self.slots.values().filter_map(|s| s.due.get()).min();
        if self.timer_at.get() == next {
            return;
        }
        if let Some(old) = std::mem::take(&mut self.timer_at).get() {
            self.deps.alarm.clear(old, self.alarm_id);
        }
        if let Some(at) = next {
            self.deps.alarm.set(at, self.alarm_id, ctx.address().downgrade());
            self.timer_at = OptMs::some(at);
        }
    }

    /// The alarm went off: every slot due by now fires, earliest first.
    fn timer_fired(&mut self, ctx: &mut Context<Self>) {
        self.timer_at = OptMs::NONE;
        let now = self.now().mono;
        // At most one per kind: an array, not an allocation on every timer of every namespace.
        let mut due = CadenceKind::ALL
            .map(|kind| self.slots.get(&kind).and_then(|s| s.due.get()).filter(|at| *at <= now).map(|at| (at, kind)));
        due.sort_unstable();
        for (_, kind) in due.into_iter().flatten() {
            self.fire(kind, ctx);
        }
        self.arm(ctx);
    }

    /// A run ended: a reload during it may have left series of an old target or cadence
    /// behind; a retiring namespace stops once nothing runs.
    fn run_ended(&mut self, ctx: &mut Context<Self>) {
        self.forget_unused_series();
        self.refresh_backoff_gauge();
        if self.retiring {
            self.stop_if_idle(ctx);
        } else {
            self.publish();
        }
    }

    /// The timer went off.
    fn fire(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        let (now, mode) = (self.now(), self.mode());
        if !self.deps.gate.is_open(now.mono) {
            // Not now: this replica's lease cannot be counted on. The run keeps its due time
            // and starts once the gate opens, as one that started late.
            self.set_timer(kind, now.mono.saturating_add(duration_ms(GATE_RECHECK)), now, ctx);
            return;
        }
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        slot.due = OptMs::NONE;
        let effects = slot.track.fire(mode, now);
        self.carry_out(kind, now, effects, ctx);
    }

    fn read_batch(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        let read = self.deps.batches.latest(&self.config.name);
        ctx.spawn(actix::fut::wrap_future(read).map(move |result, act: &mut Self, ctx| {
            act.batch_read(kind, result, ctx);
        }));
    }

    fn batch_read(&mut self, kind: CadenceKind, result: Result<Option<Batch>, BatchError>, ctx: &mut Context<Self>) {
        let (now, mode, rules) = (self.now(), self.mode(), self.deps.rules());
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let effects = slot.track.batch_read(&self.config.name, result, &rules, mode, now);
        self.carry_out(kind, now, effects, ctx);
    }

    /// Writes the attempt durably, then reports back; nothing is sent for an attempt that is
    /// not on disk.
    fn record(&mut self, kind: CadenceKind, job: Job, ctx: &mut Context<Self>) {
        let (ack, acked) = oneshot::channel();
        self.persist(kind, Some(ack));
        ctx.spawn(actix::fut::wrap_future(acked).map(move |ack, act: &mut Self, ctx| {
            let written = ack.unwrap_or_else(|_| Err("state store stopped".to_string()));
            act.attempt_recorded(kind, job, written, ctx);
        }));
    }

    fn attempt_recorded(&mut self, kind: CadenceKind, job: Job, written: Result<(), String>, ctx: &mut Context<Self>) {
        let (now, mode, rules) = (self.now(), self.mode(), self.deps.rules());
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let effects = slot.track.attempt_recorded(job, written, &rules, mode, now);
        self.carry_out(kind, now, effects, ctx);
    }

    /// Hands a job for the cadence's attempt to the pool; a first send counts as an attempt.
    fn submit(&mut self, kind: CadenceKind, job: Job, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get(&kind) else { return };
        let request = slot.track.request(&self.config.name, &job);
        let configured = slot.track.config().target.to_string();
        events::AnchorDispatched {
            cadence: events::Cadence { series: &self.series, kind, target: &configured },
            target: &request.target.to_string(),
            attempt: &job.record.id,
            batch: &job.record.batch.id,
            mode: job.mode.name(),
            first_send: matches!(job.mode, JobMode::Anchor { .. }),
        }
        .emit(&self.deps.log, &self.deps.metrics);
        let address = ctx.address();
        self.deps.pool.do_send(Submit(AnchorJob {
            request,
            mode: job.mode,
            due_mono: job.due,
            reply_to: address.clone().recipient(),
            progress_to: address.recipient(),
            members: Vec::new(),
        }));
    }

    /// Logs and counts what happened to `kind`: the event's telemetry does both.
    fn emit(&self, kind: CadenceKind, event: Event) {
        let target = self.slots.get(&kind).map(|s| s.track.config().target.to_string()).unwrap_or_default();
        let cadence = events::Cadence { series: &self.series, kind, target: &target };
        let (log, m) = (&self.deps.log, &*self.deps.metrics);
        match event {
            Event::Resuming => events::AttemptResumed { cadence }.emit(log, m),
            Event::Abandoned { attempt, was } => {
                events::AttemptAbandoned { cadence, attempt: &attempt, was: &was }.emit(log, m)
            }
            Event::NoBatch => events::AnchorSkipped { cadence }.emit(log, m),
            Event::RunSkipped { due_ms, next_ms } => events::RunSkipped { cadence, due_ms, next_ms }.emit(log, m),
            Event::Missed { periods, late_ms, reason } => {
                events::RunsMissed { cadence, periods, late_ms, reason: reason.as_str() }.emit(log, m);
            }
            Event::BatchUnreadable { target } => events::BatchUnreadable { cadence, target: &target }.emit(log, m),
            Event::Lag { ms } => events::ScheduleLagObserved { cadence, ms }.emit(log, m),
            Event::Anchored(a) => events::AnchorSucceeded {
                cadence,
                target: &a.target,
                batch: &a.batch,
                attempt: &a.attempt,
                receipt: &a.receipt,
                took: a.took,
                lag_ms: a.lag_ms,
                recovered: a.recovered,
                run_wall: a.run_wall,
            }
            .emit(log, m),
            Event::Sent { target, attempt, pending, sent_ms, newly, lag_ms, before } => {
                events::AnchorPending {
                    cadence,
                    target: &target,
                    attempt: &attempt,
                    pending: &pending,
                    sent_ms,
                    newly,
                    lag_ms,
                    before: before.as_deref(),
                }
                .emit(log, m);
            }
            Event::PendingEnded { target } => events::AnchorPendingEnded { cadence, target: &target }.emit(log, m),
            Event::Resent { target, attempt, why, reorged } => {
                events::AnchorDropped { cadence, target: &target, attempt: &attempt, why: &why, reorged }.emit(log, m);
            }
            Event::Interrupted { attempt, error } => {
                events::AnchorInterrupted { cadence, attempt: &attempt, error: &error }.emit(log, m);
            }
            Event::CheckFailed { attempt, error, wait } => {
                events::AnchorCheckFailed { cadence, attempt: &attempt, error: &error, wait }.emit(log, m);
            }
            Event::Failed(f) => events::AnchorFailed {
                cadence,
                target: &f.target,
                attempt: f.attempt.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                error: &f.error,
                level: f.level,
                delay: f.delay,
                failures: f.failures,
                duration: f.duration,
            }
            .emit(log, m),
        }
    }

    /// Sends the cadence's state to the store; `ack` is answered once it is on disk.
    fn persist(&self, kind: CadenceKind, ack: Option<oneshot::Sender<Result<(), String>>>) {
        if let Some(s) = self.slots.get(&kind) {
            self.deps.store.do_send(Update {
                namespace: Arc::clone(&self.config.name),
                cadence: kind,
                state: s.track.state().clone(),
                ack,
            });
        }
    }

    fn refresh_backoff_gauge(&self) {
        let k = self.slots.values().map(|s| s.track.state().backoff).max().unwrap_or(0);
        self.series.set_backoff(i64::from(k));
    }

    fn publish(&self) {
        if self.retiring {
            return;
        }
        let now = self.now();
        let cadences = self.slots.iter().map(|(k, s)| (*k, s.track.snapshot(now, self.draining))).collect();
        self.deps.health.do_send(NamespaceUpdate(NamespaceSnapshot { name: self.config.name.clone(), cadences }));
    }

    /// Takes the job of `kind`'s run out of an aggregate still collecting it, so a cadence
    /// leaving the config need not wait for the window; a sealed one it cannot leave.
    fn leave_aggregate(&self, kind: CadenceKind) {
        let attempt = self.slots.get(&kind).and_then(|s| s.track.dispatched_attempt());
        if let (Some(aggregator), Some(attempt)) = (&self.deps.aggregator, attempt) {
            aggregator.do_send(Leave { attempt_id: attempt.to_string() });
        }
    }

    fn retire_cadence(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        if let Some(slot) = self.slots.remove(&kind) {
            self.arm(ctx);
            self.series.forget_cadence(kind);
            self.seldom.get_or_insert_default().dormant.insert(kind, slot.track.into_state());
        }
    }

    fn forget_unused_series(&mut self) {
        let stale = self
            .series
            .stale_targets(|kind, target| self.slots.get(&kind).is_some_and(|s| s.track.uses_target(target)));
        for (kind, target) in stale {
            self.deps.metrics.forget_cadence_target(&self.series, kind, &target);
        }
    }

    fn stop_if_idle(&mut self, ctx: &mut Context<Self>) {
        if !self.slots.values().any(|s| s.track.is_running()) {
            ctx.stop();
        }
    }

    fn cancel_timers(&mut self, ctx: &mut Context<Self>) {
        for s in self.slots.values_mut() {
            s.due = OptMs::NONE;
        }
        self.arm(ctx);
    }

    fn apply_config(&mut self, new: Arc<NamespaceConfig>, ctx: &mut Context<Self>) {
        let (now, mode) = (self.now(), self.mode());
        let removed: Vec<CadenceKind> = self.slots.keys().filter(|k| !new.cadences.contains_key(k)).copied().collect();
        for kind in removed {
            let effects = self.slots.get_mut(&kind).and_then(|s| s.track.remove());
            if effects.is_none() {
                self.leave_aggregate(kind);
            }
            self.carry_out(kind, now, effects, ctx);
        }
        for (kind, cfg) in &new.cadences {
            let effects = match self.slots.get_mut(kind) {
                Some(slot) => slot.track.reconfigure(cfg.clone(), mode, now),
                None => {
                    let state = self.seldom.as_mut().and_then(|s| s.dormant.remove(kind)).unwrap_or_default();
                    let mut track = CadenceTrack::load(cfg.clone(), state, now, &self.deps.backoff)
                        .with_jitter_for(&self.config.name);
                    let effects = track.schedule(mode, now);
                    self.slots.insert(*kind, Slot { track, due: OptMs::NONE });
                    effects
                }
            };
            self.track_series(*kind);
            self.carry_out(*kind, now, effects, ctx);
        }
        self.config = new;
        let cadences = self.config.cadences.keys().copied().collect();
        events::NamespaceReconfigured { ns: &self.config.name, cadences }.emit(&self.deps.log, &self.deps.metrics);
        self.forget_unused_series();
        self.refresh_backoff_gauge();
        self.refresh_pause_series();
        self.publish();
    }
}

fn now(clock: &dyn Clock) -> Now {
    Now { wall: clock.wall_ms(), mono: clock.mono_ms() }
}

impl Actor for NamespaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (now, mode) = (self.now(), self.mode());
        let kinds: Vec<CadenceKind> = self.slots.keys().copied().collect();
        for kind in kinds {
            self.track_series(kind);
            let Some(slot) = self.slots.get_mut(&kind) else { continue };
            if let Some(t) = slot.track.state().last_success_ms {
                self.series.set_last_success(kind, t);
            }
            let effects = slot.track.start(mode, now);
            self.carry_out(kind, now, effects, ctx);
        }
        self.refresh_backoff_gauge();
        self.refresh_pause_series();
        self.publish();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(at) = self.timer_at.get() {
            self.deps.alarm.clear(at, self.alarm_id);
        }
        // The duration histogram's series live in the registry; the rest go with the record.
        for (kind, target) in self.series.targets() {
            self.deps.metrics.forget_cadence_target(&self.series, kind, &target);
        }
        self.deps.metrics.forget_namespace(&self.series);
    }
}

/// New cadences for a running namespace (a config reload changed it).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Reconfigure(pub Arc<NamespaceConfig>);

/// Stop starting anchors (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DrainNamespace;

/// Answered once every message sent before it has been handled.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Quiesce;

/// The namespace left the config: start nothing more, and stop once running anchors return.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// Cluster mode: another replica owns the namespace now. Start nothing more, stop once
/// running anchors return; the sender is dropped when the actor has stopped, and only then
/// may the namespace's state be let go of.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct HandOff(pub oneshot::Sender<()>);

/// Cluster mode: the namespace was lost with the lease (another replica may own it now).
/// Stop at once, without waiting for anything running: whatever it would write is refused.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abandon;

/// The namespace came back before its actor stopped: carry on with this config.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Revive(pub Arc<NamespaceConfig>);

impl Handler<ControlNamespace> for NamespaceActor {
    type Result = ResponseFuture<Result<Vec<(CadenceKind, Controlled)>, ControlError>>;
    fn handle(&mut self, msg: ControlNamespace, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.control(msg, ctx);
        Box::pin(async move {
            let (outcomes, acks) = answer?;
            for ack in acks {
                match ack.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(ControlError::Unavailable(format!(
                            "done, but not yet durable (the state write is retried): {e}"
                        )));
                    }
                    Err(_) => return Err(ControlError::Unavailable("the state store stopped".into())),
                }
            }
            Ok(outcomes)
        })
    }
}

/// What a control request did, and the state writes to wait for before answering.
type ControlAnswer = (Vec<(CadenceKind, Controlled)>, Vec<oneshot::Receiver<Result<(), String>>>);

impl NamespaceActor {
    /// Applies an operator's request to one cadence or to all; a state it changes is written,
    /// and the answer waits for that.
    fn control(&mut self, msg: ControlNamespace, ctx: &mut Context<Self>) -> Result<ControlAnswer, ControlError> {
        if self.retiring || self.draining {
            return Err(ControlError::Unavailable(format!("namespace {:?} is stopping", self.config.name)));
        }
        let (now, mode) = (self.now(), self.mode());
        let kinds: Vec<CadenceKind> = match msg.cadence {
            Some(kind) => vec![kind],
            None => self.slots.keys().copied().collect(),
        };
        let (mut outcomes, mut acks) = (Vec::new(), Vec::new());
        for kind in kinds {
            let Some(slot) = self.slots.get_mut(&kind) else {
                return Err(ControlError::UnknownCadence {
                    namespace: self.config.name.to_string(),
                    cadence: kind.as_str().to_string(),
                    has: self.slots.keys().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                });
            };
            let (effects, outcome) =
                slot.track.control(msg.control.clone(), mode, now).map_err(|r| ControlError::Conflict(r.0))?;
            // The state is written with an answer to wait for, rather than fire and forget.
            let persist = effects.contains(&Effect::Persist);
            self.carry_out(kind, now, effects.into_iter().filter(|e| *e != Effect::Persist), ctx);
            if persist {
                let (ack, acked) = oneshot::channel();
                self.persist(kind, Some(ack));
                acks.push(acked);
            }
            outcomes.push((kind, outcome));
        }
        self.refresh_pause_series();
        Ok((outcomes, acks))
    }

    /// `vmsh_cadence_paused_since_timestamp_seconds` of every cadence, from its state.
    fn refresh_pause_series(&self) {
        for (kind, slot) in &self.slots {
            self.series.set_paused_since(*kind, slot.track.state().paused.as_ref().map(|p| p.since_ms));
        }
    }
}

impl Handler<Reconfigure> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) {
        self.apply_config(msg.0, ctx);
    }
}

impl Handler<JobFinished> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: JobFinished, ctx: &mut Context<Self>) {
        let kind = msg.request.cadence;
        let (now, mode, rules) = (self.now(), self.mode(), self.deps.rules());
        // Looked up before the slot is borrowed; only a success records it.
        let batch = self.shared_batch(&msg.request.batch_id, &msg.request.root_string());
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let effects = slot.track.job_finished(msg, batch, &rules, mode, now);
        self.carry_out(kind, now, effects, ctx);
    }
}

impl Handler<AttemptProgress> for NamespaceActor {
    type Result = Result<Durable, String>;
    fn handle(&mut self, msg: AttemptProgress, _: &mut Context<Self>) -> Self::Result {
        let Some(slot) = self.slots.get_mut(&msg.cadence) else {
            return Err("the cadence is no longer configured".to_string());
        };
        let current = match msg.recorded {
            Recorded::Progress(progress) => slot.track.record_progress(&msg.attempt_id, progress),
            Recorded::Membership(inclusion) => slot.track.record_membership(&msg.attempt_id, inclusion),
        };
        if !current {
            return Err("the attempt is no longer current".to_string());
        }
        // Answered now: the change is in the store's mailbox, ahead of any release of a hold.
        let (ack, durable) = oneshot::channel();
        self.persist(msg.cadence, Some(ack));
        Ok(durable)
    }
}

impl Handler<DrainNamespace> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, _: DrainNamespace, ctx: &mut Context<Self>) {
        self.draining = true;
        self.cancel_timers(ctx);
        self.publish();
    }
}

impl Handler<Quiesce> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, _: Quiesce, _: &mut Context<Self>) {}
}

impl Handler<Retire> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        events::NamespaceRemoved { ns: &self.config.name }.emit(&self.deps.log, &self.deps.metrics);
        self.leave(ctx);
        self.stop_if_idle(ctx);
    }
}

impl NamespaceActor {
    /// Stops starting anything and leaves /health: the namespace is leaving this process.
    fn leave(&mut self, ctx: &mut Context<Self>) {
        self.retiring = true;
        self.cancel_timers(ctx);
        let kinds: Vec<CadenceKind> = self.slots.keys().copied().collect();
        for kind in kinds {
            self.leave_aggregate(kind);
        }
        self.deps.health.do_send(NamespaceRemoved(self.config.name.to_string()));
    }
}

impl Handler<HandOff> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: HandOff, ctx: &mut Context<Self>) {
        events::NamespaceHandedOver { ns: &self.config.name }.emit(&self.deps.log, &self.deps.metrics);
        self.seldom.get_or_insert_default().stopped = Some(msg.0);
        self.leave(ctx);
        self.stop_if_idle(ctx);
    }
}

impl Handler<Ring> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: Ring, ctx: &mut Context<Self>) {
        // A ring for a time since replaced (the alarm had sent it already) is not this one.
        if self.timer_at.get() == Some(msg.0) {
            self.timer_fired(ctx);
        }
    }
}

impl Handler<Abandon> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, _: Abandon, ctx: &mut Context<Self>) {
        events::NamespaceLost { ns: &self.config.name }.emit(&self.deps.log, &self.deps.metrics);
        self.leave(ctx);
        ctx.stop();
    }
}

impl Handler<Revive> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: Revive, ctx: &mut Context<Self>) {
        events::NamespaceRevived { ns: &self.config.name }.emit(&self.deps.log, &self.deps.metrics);
        self.retiring = false;
        self.apply_config(msg.0, ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use actix::Context;
    use actix::dev::ContextFut;

    use crate::health::{CadenceSnapshot, NamespaceSnapshot};
    use crate::scheduler::track::CadenceTrack;
    use crate::storage::state::{CadenceState, NamespaceState};

    /// What every namespace keeps, held to its size: at 100,000 namespaces each byte of these
    /// is 100 KB to 300 KB of resident memory, and a field added inline grows all of them.
    /// Box what is seldom set rather than raise a bound.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn what_each_namespace_keeps_stays_within_its_size() {
        let sizes = [
            // tokio allocates a task as 96 bytes of its own plus the future, in steps of 128
            // bytes (x86-64): at most 672 bytes of actor and context keep it at 768.
            ("the actor's task", size_of::<ContextFut<super::NamespaceActor, Context<super::NamespaceActor>>>(), 672),
            ("NamespaceActor", size_of::<super::NamespaceActor>(), 368),
            ("CadenceTrack", size_of::<CadenceTrack>(), 96),
            ("CadenceState", size_of::<CadenceState>(), 120),
            ("NamespaceState", size_of::<NamespaceState>(), 24),
            ("CadenceSnapshot", size_of::<CadenceSnapshot>(), 56),
            ("NamespaceSnapshot", size_of::<NamespaceSnapshot>(), 184),
        ];
        for (name, size, bound) in sizes {
            assert!(size <= bound, "{name} is {size} bytes, over its {bound}");
        }
    }
}
