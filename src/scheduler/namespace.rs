//! The `NamespaceActor`: one per namespace. It owns its cadences' timers and backoff state,
//! reads the latest batch when a cadence is due, records the attempt durably, hands the job
//! to the pool and applies the result. The decisions themselves are the pure functions in
//! [`super::due`] and [`super::backoff`].
//!
//! Each cadence has one timer, set for its exact due time; a cadence never has two anchors
//! in flight (a slow anchor delays its own next run; runs do not stack).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{Logger, debug, info, warn};
use tokio::sync::oneshot;

use super::attempt::attempt_id;
use super::backoff::BackoffPolicy;
use super::due::{self, period_ms};
use crate::anchor::pool::{AnchorJob, AnchorPool, JobFailed, JobFinished, Submit};
use crate::anchor::{AnchorError, AnchorRequest, ErrorClass};
use crate::batch::{self, Batch, BatchError};
use crate::clock::{Clock, MonoMs, WallMs};
use crate::config::{CadenceConfig, CadenceKind, NamespaceConfig};
use crate::digest::parse_hex32;
use crate::health::actor::{HealthActor, NamespaceRemoved, NamespaceUpdate};
use crate::health::{CadenceSnapshot, NO_BATCH, NamespaceSnapshot};
use crate::metrics::Metrics;
use crate::state::store::{StateStore, Update};
use crate::state::{AttemptRecord, AttemptStatus, BatchRef, CadenceState, LastError, NamespaceState};

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
    /// VMSH_ROOT, where batches are read.
    pub root: PathBuf,
    /// Backoff settings.
    pub backoff: BackoffPolicy,
    /// How soon to look again when a due cadence had no batch.
    pub recheck: Duration,
}

struct Cadence {
    config: CadenceConfig,
    state: CadenceState,
    last_success_mono: Option<MonoMs>,
    retry_at_mono: Option<MonoMs>,
    due_mono: Option<MonoMs>,
    timer: Option<SpawnHandle>,
    busy: bool,
    run_started: Option<(WallMs, MonoMs)>,
    /// Target of the job in flight: a reload may change the configured one meanwhile, and
    /// the job's result is still counted (and its series kept) under the target it used.
    in_flight_target: Option<String>,
    waiting: Option<String>,
    resume_now: bool,
    retiring: bool,
}

impl Cadence {
    fn new(config: CadenceConfig, mut state: CadenceState, clock: &dyn Clock, backoff: &BackoffPolicy) -> Self {
        let now = clock.mono_ms();
        // State from a run (or the original service) with a higher VMSH_MAX_BACKOFF.
        state.backoff = state.backoff.min(backoff.max_level);
        // A success stamped in the future (the wall clock stepped back) counts as now.
        let last_success_mono = state.last_success_ms.map(|w| clock.mono_of_wall(w).min(now));
        // A retry never waits longer than the longest backoff, whatever the wall clock did.
        let longest = period_ms(backoff.delay(backoff.max_level, ErrorClass::Auth));
        let retry_at_mono = state.retry_at_ms.map(|w| clock.mono_of_wall(w).min(now.saturating_add(longest)));
        let resume_now = state
            .attempt
            .as_ref()
            .is_some_and(|a| matches!(a.status, AttemptStatus::Started | AttemptStatus::Interrupted));
        Self {
            config,
            state,
            last_success_mono,
            retry_at_mono,
            due_mono: None,
            timer: None,
            busy: false,
            run_started: None,
            in_flight_target: None,
            waiting: None,
            resume_now,
            retiring: false,
        }
    }
}

/// Schedules and runs the anchors of one namespace.
pub struct NamespaceActor {
    name: String,
    config: Arc<NamespaceConfig>,
    cadences: BTreeMap<CadenceKind, Cadence>,
    dormant: BTreeMap<CadenceKind, CadenceState>,
    deps: Arc<NamespaceDeps>,
    since_ms: WallMs,
    draining: bool,
    series: BTreeSet<(CadenceKind, String)>,
}

impl NamespaceActor {
    /// An actor for `config`, resuming from `state`.
    pub fn new(config: Arc<NamespaceConfig>, state: NamespaceState, deps: Arc<NamespaceDeps>) -> Self {
        let since_ms = deps.clock.wall_ms();
        let mut dormant = state.cadences;
        let mut cadences = BTreeMap::new();
        for (kind, c) in &config.cadences {
            let s = dormant.remove(kind).unwrap_or_default();
            cadences.insert(*kind, Cadence::new(c.clone(), s, deps.clock.as_ref(), &deps.backoff));
        }
        Self {
            name: config.name.clone(),
            config,
            cadences,
            dormant,
            deps,
            since_ms,
            draining: false,
            series: BTreeSet::new(),
        }
    }

    fn log(&self, kind: CadenceKind) -> Logger {
        let target = self.cadences.get(&kind).map(|c| c.config.target.to_string()).unwrap_or_default();
        self.deps.log.new(slog::o!("ns" => self.name.clone(), "cadence" => kind.as_str(), "target" => target))
    }

    fn track_series(&mut self, kind: CadenceKind) {
        if let Some(c) = self.cadences.get(&kind) {
            let target = c.config.target.to_string();
            self.deps.metrics.init_cadence(&self.name, kind, &target);
            self.series.insert((kind, target));
        }
    }

    /// Arms the cadence's timer for its due time.
    fn schedule(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        let clock = Arc::clone(&self.deps.clock);
        let Some(c) = self.cadences.get_mut(&kind) else { return };
        if let Some(t) = c.timer.take() {
            ctx.cancel_future(t);
        }
        if c.busy || self.draining {
            return;
        }
        let now = clock.mono_ms();
        let due = if c.resume_now { None } else { due::due_at(c.last_success_mono, c.retry_at_mono, c.config.period) };
        c.due_mono = Some(due.unwrap_or(now));
        let delay = due::delay_until(due, now).min(MAX_TIMER);
        c.timer = Some(ctx.run_later(delay, move |act, ctx| act.fire(kind, ctx)));
        let next_due_s = clock.wall_of_mono(due.unwrap_or(now)) as f64 / 1000.0;
        self.deps.metrics.next_due.with_label_values(&[&self.name, kind.as_str()]).set(next_due_s);
    }

    /// The timer went off: start an anchor if the cadence is really due.
    fn fire(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        let now = self.deps.clock.mono_ms();
        let draining = self.draining;
        let log = self.log(kind);
        let Some(c) = self.cadences.get_mut(&kind) else { return };
        c.timer = None;
        if c.busy || draining {
            return;
        }
        if !c.resume_now && !due::is_due(c.last_success_mono, c.retry_at_mono, c.config.period, now) {
            // Woken early (a long wait re-arms in steps); wait for the rest.
            self.schedule(kind, ctx);
            return;
        }
        c.busy = true;
        c.resume_now = false;
        c.due_mono = c.due_mono.or(Some(now));

        // A recorded attempt is finished before a new one starts, so one period never
        // anchors two different roots.
        if let Some(record) = c.state.attempt.clone() {
            let current = c.config.target.to_string();
            match record.batch.root.strip_prefix("sha256:").and_then(parse_hex32) {
                Some(root) if record.target == current => {
                    self.start_attempt(kind, record, root, true, ctx);
                    return;
                }
                _ => {
                    info!(log, "abandoning recorded attempt: its target changed";
                        "attempt" => &record.id, "was" => &record.target);
                    c.state.attempt = None;
                }
            }
        }

        let root = self.deps.root.clone();
        let name = self.name.clone();
        let read = async move {
            tokio::task::spawn_blocking(move || batch::latest(&root, &name)).await.unwrap_or_else(|e| {
                Err(BatchError::Io { path: PathBuf::from("out/batches"), source: std::io::Error::other(e) })
            })
        };
        ctx.spawn(
            actix::fut::wrap_future(read).map(move |result, act: &mut Self, ctx| act.batch_read(kind, result, ctx)),
        );
    }

    fn batch_read(&mut self, kind: CadenceKind, result: Result<Option<Batch>, BatchError>, ctx: &mut Context<Self>) {
        let clock = Arc::clone(&self.deps.clock);
        let recheck = self.deps.recheck;
        let Some(c) = self.cadences.get_mut(&kind) else { return };
        match result {
            Ok(None) => {
                c.busy = false;
                if c.waiting.is_none() {
                    debug!(self.deps.log, "nothing to anchor yet: no batch"; "ns" => &self.name, "cadence" => kind.as_str());
                }
                c.waiting = Some(NO_BATCH.to_string());
                self.deps.metrics.skipped.with_label_values(&[&self.name, kind.as_str(), "no_batch"]).inc();
                // Look again soon rather than a whole period later.
                let wait = recheck.min(c.config.period);
                let now = clock.mono_ms();
                c.due_mono = Some(now.saturating_add(period_ms(wait)));
                if !self.draining {
                    c.timer = Some(ctx.run_later(wait, move |act, ctx| act.fire(kind, ctx)));
                }
                self.publish();
            }
            Ok(Some(batch)) => {
                c.waiting = None;
                let nominal = due::nominal_due(c.state.last_success_ms, c.config.period);
                let record = AttemptRecord {
                    id: attempt_id(&self.name, kind, &batch.root, nominal),
                    target: c.config.target.to_string(),
                    batch: BatchRef { id: batch.id.clone(), root: batch.root_string() },
                    nominal_due_ms: nominal,
                    started_ms: clock.wall_ms(),
                    status: AttemptStatus::Started,
                };
                self.start_attempt(kind, record, batch.root, false, ctx);
            }
            Err(e) => {
                c.waiting = None;
                let target = c.config.target.to_string();
                self.deps.metrics.attempted.with_label_values(&[&self.name, kind.as_str(), &target]).inc();
                self.fail(kind, &target, AnchorError::new(ErrorClass::Validation, e.to_string()), None);
                if let Some(c) = self.cadences.get_mut(&kind) {
                    c.busy = false;
                }
                self.schedule(kind, ctx);
                self.publish();
            }
        }
    }

    /// Records the attempt durably, then submits it.
    fn start_attempt(
        &mut self,
        kind: CadenceKind,
        mut record: AttemptRecord,
        root: [u8; 32],
        resume: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(c) = self.cadences.get_mut(&kind) else { return };
        record.status = AttemptStatus::Started;
        c.state.attempt = Some(record.clone());
        let (ack, acked) = oneshot::channel();
        self.deps.store.do_send(Update {
            namespace: self.name.clone(),
            cadence: kind,
            state: c.state.clone(),
            ack: Some(ack),
        });
        ctx.spawn(actix::fut::wrap_future(acked).map(move |ack, act: &mut Self, ctx| {
            let result = ack.unwrap_or_else(|_| Err("state store stopped".to_string()));
            act.attempt_recorded(kind, record, root, resume, result, ctx);
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
        let clock = Arc::clone(&self.deps.clock);
        let base = self.deps.backoff.delay(0, ErrorClass::Network);
        let Some(c) = self.cadences.get_mut(&kind) else { return };
        if let Err(e) = recorded {
            // Never call a driver for an attempt that is not on disk; try again shortly.
            c.busy = false;
            c.waiting = Some(format!("state file not writable: {e}"));
            c.retry_at_mono = Some(clock.mono_ms().saturating_add(period_ms(base)));
            self.schedule(kind, ctx);
            self.publish();
            return;
        }
        if self.draining {
            c.busy = false;
            self.publish();
            return;
        }
        if c.waiting.as_deref().is_some_and(|w| w.starts_with("state file")) {
            c.waiting = None;
        }
        c.run_started = Some((clock.wall_ms(), clock.mono_ms()));
        let request = AnchorRequest {
            namespace: self.name.clone(),
            cadence: kind,
            target: c.config.target.clone(),
            batch_id: record.batch.id.clone(),
            root,
            attempt_id: record.id.clone(),
            confirmations: c.config.confirmations,
            policy_oid: c.config.policy_oid.clone(),
        };
        let due_mono = c.due_mono.unwrap_or_else(|| clock.mono_ms());
        let target = c.config.target.to_string();
        c.in_flight_target = Some(target.clone());
        self.deps.metrics.attempted.with_label_values(&[&self.name, kind.as_str(), &target]).inc();
        self.series.insert((kind, target));
        debug!(self.log(kind), "anchor dispatched"; "attempt" => &record.id, "batch" => &record.batch.id, "resume" => resume);
        self.deps.pool.do_send(Submit(AnchorJob { request, resume, due_mono, reply_to: ctx.address().recipient() }));
        self.publish();
    }

    /// Applies a failure of an attempt on `target`: raise the backoff level and set the
    /// retry time.
    fn fail(&mut self, kind: CadenceKind, target: &str, error: AnchorError, duration: Option<Duration>) {
        let clock = Arc::clone(&self.deps.clock);
        let policy = self.deps.backoff;
        let log = self.log(kind);
        let Some(c) = self.cadences.get_mut(&kind) else { return };
        let (level, delay) = policy.after_failure(c.state.backoff, error.class);
        let now_wall = clock.wall_ms();
        c.state.backoff = level;
        c.state.failures = c.state.failures.saturating_add(1);
        c.state.retry_at_ms = Some(now_wall.saturating_add(period_ms(delay)));
        c.retry_at_mono = Some(clock.mono_ms().saturating_add(period_ms(delay)));
        c.state.last_error = Some(LastError { class: error.class, message: error.message.clone(), at_ms: now_wall });
        if error.class.maybe_done() {
            if let Some(a) = c.state.attempt.as_mut() {
                a.status = AttemptStatus::Failed;
            }
        } else {
            // A refusal: nothing was anchored, so the next run may take a newer batch.
            c.state.attempt = None;
        }
        let labels = [self.name.as_str(), kind.as_str(), target];
        self.deps.metrics.failed.with_label_values(&labels).inc();
        self.deps.metrics.errors.with_label_values(&[&self.name, kind.as_str(), target, error.class.as_str()]).inc();
        if let Some(d) = duration {
            self.deps
                .metrics
                .duration
                .with_label_values(&[&self.name, kind.as_str(), target, "failure"])
                .observe(d.as_secs_f64());
        }
        warn!(log, "anchor failed";
            "err" => %error.message, "class" => error.class.as_str(), "backoff" => level,
            "retry_in_s" => format!("{:.3}", delay.as_secs_f64()), "failures" => c.state.failures);
        self.persist(kind);
        self.refresh_backoff_gauge();
    }

    fn persist(&self, kind: CadenceKind) {
        if let Some(c) = self.cadences.get(&kind) {
            self.deps.store.do_send(Update {
                namespace: self.name.clone(),
                cadence: kind,
                state: c.state.clone(),
                ack: None,
            });
        }
    }

    fn refresh_backoff_gauge(&self) {
        let k = self.cadences.values().map(|c| c.state.backoff).max().unwrap_or(0);
        self.deps.metrics.backoff.with_label_values(&[&self.name]).set(i64::from(k));
    }

    fn publish(&self) {
        let clock = &self.deps.clock;
        let cadences = self
            .cadences
            .iter()
            .map(|(kind, c)| {
                let next_due_ms =
                    if c.busy || self.draining { None } else { c.due_mono.map(|m| clock.wall_of_mono(m)) };
                (
                    *kind,
                    CadenceSnapshot {
                        target: c.config.target.to_string(),
                        every: c.config.every.clone(),
                        period_seconds: c.config.period.as_secs(),
                        last_success_ms: c.state.last_success_ms,
                        next_due_ms,
                        backoff: c.state.backoff,
                        failures: c.state.failures,
                        in_flight: c.busy,
                        attempt_id: c.state.attempt.as_ref().map(|a| a.id.clone()),
                        waiting: c.waiting.clone(),
                        last_batch: c.state.last_batch.clone(),
                        last_error: c.state.last_error.clone(),
                    },
                )
            })
            .collect();
        self.deps.health.do_send(NamespaceUpdate(NamespaceSnapshot {
            name: self.name.clone(),
            since_ms: self.since_ms,
            cadences,
        }));
    }

    fn retire_cadence(&mut self, kind: CadenceKind, ctx: &mut Context<Self>) {
        if let Some(mut c) = self.cadences.remove(&kind) {
            if let Some(t) = c.timer.take() {
                ctx.cancel_future(t);
            }
            self.deps.metrics.forget_cadence(&self.name, kind);
            self.dormant.insert(kind, c.state);
        }
    }

    fn forget_unused_series(&mut self) {
        let in_use: BTreeSet<(CadenceKind, String)> = self
            .cadences
            .iter()
            .flat_map(|(k, c)| {
                std::iter::once((*k, c.config.target.to_string())).chain(c.in_flight_target.clone().map(|t| (*k, t)))
            })
            .collect();
        let stale: Vec<_> = self.series.difference(&in_use).cloned().collect();
        for (kind, target) in stale {
            self.deps.metrics.forget_cadence_target(&self.name, kind, &target);
            self.series.remove(&(kind, target));
        }
    }
}

impl Actor for NamespaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let kinds: Vec<CadenceKind> = self.cadences.keys().copied().collect();
        for kind in kinds {
            self.track_series(kind);
            if let Some(t) = self.cadences.get(&kind).and_then(|c| c.state.last_success_ms) {
                self.deps.metrics.last_success.with_label_values(&[&self.name, kind.as_str()]).set(t as f64 / 1000.0);
            }
            if self.cadences.get(&kind).is_some_and(|c| c.resume_now) {
                info!(self.log(kind), "resuming an attempt interrupted by the last shutdown or crash");
            }
            self.schedule(kind, ctx);
        }
        self.refresh_backoff_gauge();
        self.publish();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for (kind, target) in std::mem::take(&mut self.series) {
            self.deps.metrics.forget_cadence_target(&self.name, kind, &target);
            self.deps.metrics.forget_cadence(&self.name, kind);
        }
        self.deps.metrics.forget_namespace(&self.name);
        self.deps.health.do_send(NamespaceRemoved(self.name.clone()));
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

/// The namespace left the config: stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Reconfigure> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) {
        let new = msg.0;
        let removed: Vec<CadenceKind> =
            self.cadences.keys().filter(|k| !new.cadences.contains_key(k)).copied().collect();
        for kind in removed {
            if self.cadences.get(&kind).is_some_and(|c| c.busy) {
                if let Some(c) = self.cadences.get_mut(&kind) {
                    c.retiring = true;
                }
            } else {
                self.retire_cadence(kind, ctx);
            }
        }
        for (kind, cfg) in &new.cadences {
            match self.cadences.get_mut(kind) {
                Some(c) => {
                    c.retiring = false;
                    if c.config != *cfg {
                        c.config = cfg.clone();
                    }
                }
                None => {
                    let state = self.dormant.remove(kind).unwrap_or_default();
                    let c = Cadence::new(cfg.clone(), state, self.deps.clock.as_ref(), &self.deps.backoff);
                    self.cadences.insert(*kind, c);
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

impl Handler<JobFinished> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, msg: JobFinished, ctx: &mut Context<Self>) {
        let kind = msg.request.cadence;
        let clock = Arc::clone(&self.deps.clock);
        if let Some(started) = msg.started_mono {
            let lag = started.saturating_sub(msg.due_mono).max(0) as f64 / 1000.0;
            self.deps.metrics.lag.with_label_values(&[kind.as_str()]).observe(lag);
        }
        let log = self.log(kind);
        let Some(c) = self.cadences.get_mut(&kind) else { return };
        c.busy = false;
        c.in_flight_target = None;
        let target = msg.request.target.to_string();
        match msg.outcome {
            Ok(done) => {
                let (run_wall, run_mono) = c.run_started.take().unwrap_or((clock.wall_ms(), clock.mono_ms()));
                c.state.last_success_ms = Some(run_wall);
                c.last_success_mono = Some(run_mono);
                c.state.backoff = 0;
                c.state.failures = 0;
                c.state.retry_at_ms = None;
                c.retry_at_mono = None;
                c.state.last_error = None;
                c.state.attempt = None;
                c.state.last_batch =
                    Some(BatchRef { id: msg.request.batch_id.clone(), root: msg.request.root_string() });
                c.waiting = None;
                let labels = [self.name.as_str(), kind.as_str(), target.as_str()];
                self.deps.metrics.succeeded.with_label_values(&labels).inc();
                self.deps
                    .metrics
                    .duration
                    .with_label_values(&[&self.name, kind.as_str(), &target, "success"])
                    .observe(msg.duration.as_secs_f64());
                self.deps
                    .metrics
                    .last_success
                    .with_label_values(&[&self.name, kind.as_str()])
                    .set(run_wall as f64 / 1000.0);
                info!(log, "anchored";
                    "batch" => &msg.request.batch_id, "attempt" => &msg.request.attempt_id,
                    "receipt" => %done.path.display(), "duration_ms" => msg.duration.as_millis() as u64,
                    "recovered" => done.recovered);
                self.persist(kind);
                self.refresh_backoff_gauge();
            }
            Err(JobFailed { error, interrupted: true }) => {
                c.run_started = None;
                if let Some(a) = c.state.attempt.as_mut() {
                    a.status = AttemptStatus::Interrupted;
                }
                warn!(log, "anchor interrupted by shutdown; it will be resumed on the next start";
                    "attempt" => &msg.request.attempt_id, "err" => %error.message);
                self.persist(kind);
            }
            Err(JobFailed { error, interrupted: false }) => {
                c.run_started = None;
                self.fail(kind, &target, error, Some(msg.duration));
            }
        }
        if self.cadences.get(&kind).is_some_and(|c| c.retiring) {
            self.retire_cadence(kind, ctx);
        } else {
            self.schedule(kind, ctx);
        }
        // A reload during the run may have left series of an old target or cadence behind.
        self.forget_unused_series();
        self.refresh_backoff_gauge();
        self.publish();
    }
}

impl Handler<DrainNamespace> for NamespaceActor {
    type Result = ();
    fn handle(&mut self, _: DrainNamespace, ctx: &mut Context<Self>) {
        self.draining = true;
        for c in self.cadences.values_mut() {
            if let Some(t) = c.timer.take() {
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
        ctx.stop();
    }
}
