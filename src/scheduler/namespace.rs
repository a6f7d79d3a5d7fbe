//! The `NamespaceActor`: one per namespace. It owns its cadences' timers and does the I/O a
//! run needs — read the latest batch, record the attempt durably, hand the job to the pool,
//! apply the result — while every decision is a method of [`CadenceTrack`].
//!
//! Each cadence has one timer, set for its exact due time; a cadence never has two anchors
//! in flight (a slow anchor delays its own next run; runs do not stack). A namespace removed
//! from the config stops once its running anchors have returned, so it can be added back
//! without two runs of one cadence overlapping.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{Logger, debug, info, warn};
use tokio::sync::oneshot;

use super::backoff::BackoffPolicy;
use super::track::{CadenceTrack, Fire, Now};
use crate::anchor::pool::{AnchorJob, AnchorPool, AttemptProgress, JobFailed, JobFinished, JobMode, Outcome, Submit};
use crate::batch::{Batch, BatchError, BatchReader};
use crate::clock::{Clock, MonoMs};
use crate::config::{CadenceMap, NamespaceConfig};
use crate::health::NamespaceSnapshot;
use crate::health::actor::{HealthActor, NamespaceRemoved, NamespaceUpdate};
use crate::metrics::Metrics;
use crate::metrics::NamespaceSeries;
use crate::model::CadenceKind;
use crate::model::{AnchorError, AnchorRequest, ErrorClass, Pending};
use crate::state::store::{StateStore, Update};
use crate::state::{AttemptRecord, BatchRef, CadenceState, NamespaceState};

/// Longest single timer; longer waits re-arm, so absurd periods cannot overflow a deadline.
const MAX_TIMER: Duration = Duration::from_secs(86_400);

/// What every namespace actor shares.
pub struct NamespaceDeps {
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// The anchor pool.
    pub pool: Addr<AnchorPool>,
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
}

struct Slot {
    track: CadenceTrack,
    timer: Option<SpawnHandle>,
}

/// Schedules and runs the anchors of one namespace.
pub struct NamespaceActor {
    name: String,
    config: Arc<NamespaceConfig>,
    slots: CadenceMap<Slot>,
    /// State of cadences not in the config (kept for when they come back). Rarely any, so a
    /// map that allocates nothing while empty: inline slots would double the actor's size.
    dormant: BTreeMap<CadenceKind, CadenceState>,
    deps: Arc<NamespaceDeps>,
    draining: bool,
    retiring: bool,
    series: Arc<NamespaceSeries>,
}

impl NamespaceActor {
    /// An actor for `config`, resuming from `state`.
    pub fn new(config: Arc<NamespaceConfig>, state: NamespaceState, deps: Arc<NamespaceDeps>) -> Self {
        let now = now(deps.clock.as_ref());
        let mut dormant = state.cadences;
        let slots = config
            .cadences
            .iter()
            .map(|(kind, c)| {
                let state = dormant.remove(kind).unwrap_or_default();
                (*kind, Slot { track: CadenceTrack::load(c.clone(), state, now, &deps.backoff), timer: None })
            })
            .collect();
        let series = deps.metrics.namespace(&config.name);
        Self {
            name: config.name.clone(),
            config,
            slots,
            dormant: dormant.into_iter().collect(),
            deps,
            draining: false,
            retiring: false,
            series,
        }
    }

    fn now(&self) -> Now {
        now(self.deps.clock.as_ref())
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

    fn log(&self, kind: CadenceKind) -> Logger {
        let target = self.slots.get(&kind).map(|s| s.track.config().target.to_string()).unwrap_or_default();
        self.deps.log.new(slog::o!("ns" => self.name.clone(), "cadence" => kind.as_str(), "target" => target))
    }

    fn track_series(&mut self, kind: CadenceKind) {
        if let Some(s) = self.slots.get(&kind) {
            let target = s.track.config().target.to_string();
            self.series.init_cadence(kind, &target);
        }
    }

    fn set_next_due_gauge(&self, kind: CadenceKind, due: MonoMs, now: Now) {
        self.series.set_next_due(kind, now.wall_of(due));
    }

    fn set_timer(&mut self, kind: CadenceKind, due: MonoMs, now: Now, ctx: &mut Context<Self>) {
        let delay = Duration::from_millis(u64::try_from(due.saturating_sub(now.mono)).unwrap_or(0)).min(MAX_TIMER);
        let handle = ctx.run_later(delay, move |act, ctx| act.fire(kind, ctx));
        if let Some(slot) = self.slots.get_mut(&kind)
            && let Some(old) = slot.timer.replace(handle)
        {
            ctx.cancel_future(old);
        }
        self.set_next_due_gauge(kind, due, now);
    }

    /// Arms the cadence's timer for its due time.
    fn schedule(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        let now = self.now();
        let quiet = self.draining || self.retiring;
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        if let Some(t) = slot.timer.take() {
            ctx.cancel_future(t);
        }
        if slot.track.is_running() || quiet {
            return;
        }
        let due = slot.track.arm(now);
        self.set_timer(kind, due, now, ctx);
    }

    /// The run of `kind` ended (in whatever way): retire (`retire`: it left the config during
    /// the run) or re-arm, and stop a retiring namespace once nothing runs.
    fn run_ended(&mut self, kind: CadenceKind, retire: bool, ctx: &mut Context<Self>) {
        if retire {
            self.retire_cadence(kind, ctx);
        } else {
            self.schedule(kind, ctx);
        }
        // A reload during the run may have left series of an old target or cadence behind.
        self.forget_unused_series();
        self.refresh_backoff_gauge();
        if self.retiring {
            self.stop_if_idle(ctx);
        } else {
            self.publish();
        }
    }

    /// The timer went off: start a run if the cadence is really due.
    fn fire(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        let now = self.now();
        let quiet = self.draining || self.retiring;
        let log = self.log(kind);
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        slot.timer = None;
        if slot.track.is_running() || quiet {
            return;
        }
        match slot.track.fire(now) {
            Fire::NotDue => self.schedule(kind, ctx),
            Fire::Resume(record, root) => self.record_and_submit(kind, record, root, true, ctx),
            Fire::Confirm(record, root, pending) => {
                self.submit(kind, &record, root, JobMode::Confirm(pending), ctx);
                self.publish();
            }
            Fire::ReadBatch { abandoned } => {
                if let Some(old) = abandoned {
                    info!(log, "abandoning a recorded attempt: its target changed"; "attempt" => &old.id, "was" => &old.target);
                }
                let read = self.deps.batches.latest(&self.name);
                ctx.spawn(actix::fut::wrap_future(read).map(move |result, act: &mut Self, ctx| {
                    act.batch_read(kind, result, ctx);
                }));
                self.publish();
            }
        }
    }

    fn batch_read(&mut self, kind: CadenceKind, result: Result<Option<Batch>, BatchError>, ctx: &mut Context<Self>) {
        let now = self.now();
        let recheck = self.deps.recheck;
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let retire = slot.track.retiring();
        match result {
            Ok(None) => {
                let (again, began) = slot.track.no_batch(now, recheck);
                let retiring = retire || self.retiring || self.draining;
                if began {
                    debug!(self.deps.log, "nothing to anchor yet: no batch"; "ns" => &self.name, "cadence" => kind.as_str());
                    self.series.skipped_no_batch(kind);
                }
                if retiring {
                    self.run_ended(kind, retire, ctx);
                } else {
                    self.set_timer(kind, again, now, ctx);
                    self.publish();
                }
            }
            Ok(Some(batch)) => {
                let record = slot.track.begin_attempt(&self.name, kind, &batch, now);
                self.record_and_submit(kind, record, batch.root, false, ctx);
            }
            Err(e) => {
                let target = slot.track.config().target.to_string();
                self.series.attempted(kind, &target);
                self.fail(kind, &target, None, &AnchorError::new(ErrorClass::Validation, e.to_string()), None);
                self.run_ended(kind, retire, ctx);
            }
        }
    }

    /// Records the attempt durably, then submits it; nothing is sent for an attempt that is
    /// not on disk.
    fn record_and_submit(
        &mut self,
        kind: CadenceKind,
        record: AttemptRecord,
        root: [u8; 32],
        resume: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        slot.track.restart_attempt(&record);
        let (ack, acked) = oneshot::channel();
        self.deps.store.do_send(Update {
            namespace: self.name.clone(),
            cadence: kind,
            state: slot.track.state().clone(),
            ack: Some(ack),
        });
        ctx.spawn(actix::fut::wrap_future(acked).map(move |ack, act: &mut Self, ctx| {
            let recorded = ack.unwrap_or_else(|_| Err("state store stopped".to_string()));
            act.attempt_recorded(kind, record, root, resume, recorded, ctx);
        }));
    }

    fn attempt_recorded(
        &mut self,
        kind: CadenceKind,
        record: AttemptRecord,
        root: [u8; 32],
        resume: bool,
        recorded: Result<(), String>,
        ctx: &mut Context<Self>,
    ) {
        let now = self.now();
        let wait = self.deps.backoff.delay(0, ErrorClass::Network);
        let quiet = self.draining || self.retiring;
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let retire = slot.track.retiring();
        if let Err(e) = recorded {
            slot.track.not_recorded(now, &e, wait);
            self.run_ended(kind, retire, ctx);
            return;
        }
        if quiet || retire {
            // Recorded as started: the next start (or the namespace's return) resumes it.
            slot.track.recorded_only();
            self.run_ended(kind, retire, ctx);
            return;
        }
        self.submit(kind, &record, root, JobMode::Anchor { resume }, ctx);
        self.publish();
    }

    /// Hands a job for the cadence's attempt to the pool.
    fn submit(
        &mut self,
        kind: CadenceKind,
        record: &AttemptRecord,
        root: [u8; 32],
        mode: JobMode,
        ctx: &mut Context<Self>,
    ) {
        let now = self.now();
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let target = slot.track.dispatched(now);
        let request = AnchorRequest {
            namespace: self.name.clone(),
            cadence: kind,
            target: slot.track.config().target.clone(),
            batch_id: record.batch.id.to_string(),
            root,
            attempt_id: record.id.clone(),
            confirmations: slot.track.config().confirmations,
            policy_oid: slot.track.config().policy_oid.clone(),
            progress: slot.track.state().attempt.as_ref().and_then(|a| a.progress.clone()),
        };
        let due_mono = slot.track.run_due().unwrap_or(now.mono);
        if matches!(mode, JobMode::Anchor { .. }) {
            self.series.attempted(kind, &target);
        }
        debug!(self.log(kind), "job dispatched"; "attempt" => &record.id, "batch" => &record.batch.id, "mode" => mode.name());
        let address = ctx.address();
        self.deps.pool.do_send(Submit(AnchorJob {
            request,
            mode,
            due_mono,
            reply_to: address.clone().recipient(),
            progress_to: address.recipient(),
        }));
    }

    fn set_pending_gauges(&self, kind: CadenceKind, target: &str, pending: Option<(&Pending, Option<i64>)>) {
        let pending = pending.map(|(p, sent)| (i64::from(p.depth), sent));
        self.series.set_pending(kind, target, pending);
    }

    /// Applies a failure on `target`, counting it under that target; `run` names the attempt
    /// and its batch when one had begun (a batch that cannot be read fails before that).
    fn fail(
        &mut self,
        kind: CadenceKind,
        target: &str,
        run: Option<&AnchorRequest>,
        error: &AnchorError,
        duration: Option<Duration>,
    ) {
        let now = self.now();
        let policy = self.deps.backoff;
        let log = self.log(kind);
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let (level, delay) = slot.track.failed(error, &policy, now);
        let failures = slot.track.state().failures;
        let m = &self.deps.metrics;
        self.series.failed(kind, target, error.class);
        if let Some(d) = duration {
            m.observe_duration(&self.name, kind, target, "failure", d.as_secs_f64());
        }
        warn!(log, "anchor failed";
            "attempt" => run.map(|r| r.attempt_id.as_str()), "batch" => run.map(|r| r.batch_id.as_str()),
            "err" => %error.message, "class" => error.class.as_str(), "backoff" => level,
            "retry_in_s" => (delay.as_secs_f64() * 1000.0).round() / 1000.0, "failures" => failures);
        self.persist(kind);
    }

    fn persist(&self, kind: CadenceKind) {
        if let Some(s) = self.slots.get(&kind) {
            self.deps.store.do_send(Update {
                namespace: self.name.clone(),
                cadence: kind,
                state: s.track.state().clone(),
                ack: None,
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
        self.deps.health.do_send(NamespaceUpdate(NamespaceSnapshot { name: self.name.clone(), cadences }));
    }

    fn retire_cadence(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        if let Some(mut slot) = self.slots.remove(&kind) {
            if let Some(t) = slot.timer.take() {
                ctx.cancel_future(t);
            }
            self.series.forget_cadence(kind);
            self.dormant.insert(kind, slot.track.into_state());
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

    fn apply_config(&mut self, new: Arc<NamespaceConfig>, ctx: &mut Context<Self>) {
        let now = self.now();
        let removed: Vec<CadenceKind> = self.slots.keys().filter(|k| !new.cadences.contains_key(k)).copied().collect();
        for kind in removed {
            // A cadence with a run under way retires when the run ends.
            if self.slots.get_mut(&kind).is_none_or(|slot| slot.track.remove()) {
                self.retire_cadence(kind, ctx);
            }
        }
        for (kind, cfg) in &new.cadences {
            match self.slots.get_mut(kind) {
                Some(slot) => slot.track.reconfigure(cfg.clone()),
                None => {
                    let state = self.dormant.remove(kind).unwrap_or_default();
                    let track = CadenceTrack::load(cfg.clone(), state, now, &self.deps.backoff);
                    self.slots.insert(*kind, Slot { track, timer: None });
                }
            }
            self.track_series(*kind);
            self.schedule(*kind, ctx);
        }
        self.config = new;
        info!(self.deps.log, "namespace reconfigured"; "ns" => &self.name,
            "cadences" => self.config.cadences.keys().map(|k| k.as_str()).collect::<Vec<_>>().join(","));
        self.forget_unused_series();
        self.refresh_backoff_gauge();
        self.publish();
    }
}

fn now(clock: &dyn Clock) -> Now {
    Now { wall: clock.wall_ms(), mono: clock.mono_ms() }
}

impl Actor for NamespaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let kinds: Vec<CadenceKind> = self.slots.keys().copied().collect();
        for kind in kinds {
            self.track_series(kind);
            if let Some(t) = self.slots.get(&kind).and_then(|s| s.track.state().last_success_ms) {
                self.series.set_last_success(kind, t);
            }
            if self.slots.get(&kind).is_some_and(|s| s.track.resumes()) {
                info!(self.log(kind), "resuming an attempt interrupted by the last shutdown or crash");
            }
            self.schedule(kind, ctx);
        }
        self.refresh_backoff_gauge();
        self.publish();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
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
pub struct Reconfigure(pub Arc<NamespaceConfig>);

/// Stop starting anchors (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainNamespace;

/// Answered once every message sent before it has been handled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Quiesce;

/// The namespace left the config: start nothing more, and stop once running anchors return.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// The namespace came back before its actor stopped: carry on with this config.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Revive(pub Arc<NamespaceConfig>);

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
        let now = self.now();
        let first_send = matches!(msg.mode, JobMode::Anchor { .. });
        let lag_ms = msg.started_mono.filter(|_| first_send).map(|started| started.saturating_sub(msg.due_mono).max(0));
        if let Some(lag) = lag_ms {
            self.deps.metrics.lag.with_label_values(&[kind.as_str()]).observe(lag as f64 / 1000.0);
        }
        let log = self.log(kind);
        let target = msg.request.target.to_string();
        // Looked up before the slot is borrowed; only a success records it.
        let batch = self.shared_batch(&msg.request.batch_id, &msg.request.root_string());
        let Some(slot) = self.slots.get_mut(&kind) else { return };
        let retire = slot.track.retiring();
        match msg.outcome {
            Outcome::Anchored(done) => {
                let sent = slot.track.state().attempt.as_ref().and_then(|a| a.sent_ms);
                let run_wall = slot.track.succeeded(batch, now);
                // For an anchor that waited for confirmations, its duration is send to final.
                let took = match sent {
                    Some(sent) => Duration::from_millis(u64::try_from(now.wall.saturating_sub(sent)).unwrap_or(0)),
                    None => msg.duration,
                };
                let m = &self.deps.metrics;
                self.series.succeeded(kind, &target);
                m.observe_duration(&self.name, kind, &target, "success", took.as_secs_f64());
                self.series.set_last_success(kind, run_wall);
                info!(log, "anchored";
                    "batch" => &msg.request.batch_id, "attempt" => &msg.request.attempt_id,
                    "receipt" => %done.path.display(), "duration_ms" => u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    "lag_ms" => lag_ms, "recovered" => done.recovered);
                self.set_pending_gauges(kind, &target, None);
                self.persist(kind);
            }
            Outcome::Pending(p) => {
                let newly = slot.track.pending().is_none();
                slot.track.sent(p.clone(), now);
                let sent = slot.track.state().attempt.as_ref().and_then(|a| a.sent_ms);
                if newly {
                    info!(log, "anchor sent; waiting for confirmations";
                        "attempt" => &msg.request.attempt_id, "depth" => p.depth, "required" => p.required, "tx" => %p.data);
                } else {
                    debug!(log, "waiting for confirmations"; "attempt" => &msg.request.attempt_id, "depth" => p.depth, "required" => p.required);
                }
                self.set_pending_gauges(kind, &target, Some((&p, sent)));
                self.persist(kind);
            }
            Outcome::Dropped(why) => {
                let resend = if slot.track.dropped() { slot.track.state().attempt.as_deref().cloned() } else { None };
                self.set_pending_gauges(kind, &target, None);
                if let Some(record) = resend {
                    self.series.resent(kind, &target);
                    warn!(log, "the target dropped the anchor; sending it again"; "attempt" => &msg.request.attempt_id, "err" => %why);
                    self.record_and_submit(kind, record, msg.request.root, false, ctx);
                    return;
                }
                let error =
                    AnchorError::new(ErrorClass::Network, format!("dropped again after being sent again: {why}"));
                self.fail(kind, &target, Some(&msg.request), &error, None);
            }
            Outcome::Failed(JobFailed { error, interrupted: true }) => {
                slot.track.interrupted();
                warn!(log, "anchor interrupted by shutdown; it will be resumed on the next start";
                    "attempt" => &msg.request.attempt_id, "err" => %error.message);
                self.persist(kind);
            }
            // The target refused the pending anchor for good (e.g. the transaction reverted).
            Outcome::Rejected(error) => {
                self.set_pending_gauges(kind, &target, None);
                let error = AnchorError::new(error.class, error.message);
                self.fail(kind, &target, Some(&msg.request), &AnchorError { refused: true, ..error }, None);
            }
            // A check that failed says nothing about the anchor: look again later.
            Outcome::Failed(JobFailed { error, interrupted: false }) if !first_send => {
                let wait = slot.track.confirm_failed(&error, &self.deps.backoff, now);
                warn!(log, "cannot check the pending anchor; looking again later";
                    "attempt" => &msg.request.attempt_id, "err" => %error.message, "class" => error.class.as_str(),
                    "retry_in_s" => (wait.as_secs_f64() * 1000.0).round() / 1000.0);
                self.persist(kind);
            }
            Outcome::Failed(JobFailed { error, interrupted: false }) => {
                self.fail(kind, &target, Some(&msg.request), &error, Some(msg.duration));
            }
        }
        self.run_ended(kind, retire, ctx);
    }
}

impl Handler<AttemptProgress> for NamespaceActor {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: AttemptProgress, _: &mut Context<Self>) -> Self::Result {
        let Some(slot) = self.slots.get_mut(&msg.cadence) else {
            return Box::pin(async { Err("the cadence is no longer configured".to_string()) });
        };
        if !slot.track.record_progress(&msg.attempt_id, msg.progress) {
            return Box::pin(async { Err("the attempt is no longer current".to_string()) });
        }
        let (ack, acked) = oneshot::channel();
        self.deps.store.do_send(Update {
            namespace: self.name.clone(),
            cadence: msg.cadence,
            state: slot.track.state().clone(),
            ack: Some(ack),
        });
        Box::pin(async move { acked.await.unwrap_or_else(|_| Err("state store stopped".to_string())) })
    }
}

impl Handler<DrainNamespace> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, _: DrainNamespace, ctx: &mut Context<Self>) {
        self.draining = true;
        for s in self.slots.values_mut() {
            if let Some(t) = s.timer.take() {
                ctx.cancel_future(t);
            }
        }
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
        info!(self.deps.log, "namespace removed from config; stopping"; "ns" => &self.name);
        self.retiring = true;
        for s in self.slots.values_mut() {
            if let Some(t) = s.timer.take() {
                ctx.cancel_future(t);
            }
        }
        self.deps.health.do_send(NamespaceRemoved(self.name.clone()));
        self.stop_if_idle(ctx);
    }
}

impl Handler<Revive> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: Revive, ctx: &mut Context<Self>) {
        info!(self.deps.log, "namespace back in the config before it stopped; carrying on"; "ns" => &self.name);
        self.retiring = false;
        self.apply_config(msg.0, ctx);
    }
}
