//! The anchor worker pool: an `AnchorPool` actor that queues jobs by target and hands each to
//! an idle `AnchorActor` (started when none is idle) once its target has a free slot
//! ([`super::lanes`]). Every job runs under the pool's time limit, so a hung target holds one
//! slot for at most that long, and a slow target fills only its own slots.
//!
//! A job that comes from a recorded attempt first asks the driver whether the target
//! already holds it ([`Driver::recover`]); only if not is it sent again. A pending anchor
//! (sent, not yet deep enough) comes back as a confirmation job until it is final.
//!
//! A job for a target that aggregates goes to the [`Aggregator`] instead: a first send, or any
//! job of an attempt already recorded as a leaf of an aggregate. The aggregator sends one job
//! per aggregate back here, carrying its members; its worker writes every member's receipt.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use super::aggregate::{Aggregator, DrainAggregates, Join};
use super::lanes::{Change, LaneBoard, Lanes};
use super::{BoxFuture, Drivers, ProgressSink};
use crate::clock::{Clock, MonoMs};
use crate::metrics::Metrics;
use crate::model::receipt::Inclusion;
use crate::model::{
    AnchorError, AnchorRequest, Attestation, CadenceKind, Confirmation, ErrorClass, Pending, Ping, Recovery, Submitted,
    Target,
};
use crate::storage::receipts::ReceiptWriter;

/// What a job does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobMode {
    /// Send the anchor; with `resume`, first ask the target whether this recorded attempt
    /// already happened.
    Anchor {
        /// The attempt was recorded earlier (a retry, or resumed after a restart).
        resume: bool,
        /// It was under way when the process stopped (a crash, or cancelled at shutdown), so
        /// its receipt may be written already. Only then is its folder searched for one: a
        /// retry within one run knows it was not.
        stopped_midway: bool,
    },
    /// Look at a pending anchor again.
    Confirm(Pending),
}

impl JobMode {
    /// What the job does, as logs name it: `anchor`, `resume` or `confirm`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            JobMode::Anchor { resume: false, .. } => "anchor",
            JobMode::Anchor { resume: true, .. } => "resume",
            JobMode::Confirm(_) => "confirm",
        }
    }
}

/// One anchor to run.
pub(crate) struct AnchorJob {
    /// What to anchor.
    pub request: AnchorRequest,
    /// What to do.
    pub mode: JobMode,
    /// When the cadence was due (monotonic ms), for the lag measurement.
    pub due_mono: MonoMs,
    /// Where the result goes.
    pub reply_to: Recipient<JobFinished>,
    /// Where a driver's progress is recorded before it sends.
    pub progress_to: Recipient<AttemptProgress>,
    /// For an aggregate's job, its members: each one's receipt is written once the aggregate
    /// is final. Empty for a namespace's own job.
    pub members: Vec<MemberProof>,
}

impl AnchorJob {
    /// Whether the job anchors an aggregate for its members.
    pub(crate) fn is_aggregate(&self) -> bool {
        !self.members.is_empty()
    }
}

/// A member of an aggregate, as its job carries it: its request and its proof of inclusion.
#[derive(Debug, Clone)]
pub(crate) struct MemberProof {
    /// The member's own request.
    pub request: AnchorRequest,
    /// Its leaf's proof under the aggregate's root.
    pub inclusion: Inclusion,
}

/// What is recorded in an attempt's record before anything is sent.
#[derive(Debug, Clone)]
pub(crate) enum Recorded {
    /// What the driver is about to send (a signed transaction).
    Progress(serde_json::Value),
    /// The aggregate the attempt is a leaf of.
    Membership(Inclusion),
}

/// Says when a recorded change is durable: `Ok` once it is on disk.
pub(crate) type Durable = oneshot::Receiver<Result<(), String>>;

/// A driver's progress on an attempt, or the aggregate it joined, to be recorded durably
/// before anything is sent. Answered as soon as the change is on its way to the state store,
/// with what says when it is durable: whoever records in many attempts at once (an
/// aggregate's members) holds the store's commits back meanwhile, so that all of them land
/// in one commit.
#[derive(Message)]
#[rtype(result = "Result<Durable, String>")]
pub(crate) struct AttemptProgress {
    /// The cadence whose attempt made progress.
    pub cadence: CadenceKind,
    /// The attempt the progress belongs to; progress of another attempt is refused.
    pub attempt_id: String,
    /// What to record.
    pub recorded: Recorded,
}

struct ActorSink {
    to: Recipient<AttemptProgress>,
    cadence: CadenceKind,
    attempt_id: String,
}

impl ProgressSink for ActorSink {
    fn record<'a>(&'a self, progress: serde_json::Value) -> BoxFuture<'a, Result<(), AnchorError>> {
        Box::pin(async move {
            let ask = AttemptProgress {
                cadence: self.cadence,
                attempt_id: self.attempt_id.clone(),
                recorded: Recorded::Progress(progress),
            };
            let durable = match self.to.send(ask).await {
                Ok(Ok(durable)) => durable.await.unwrap_or_else(|_| Err("the state store stopped".to_string())),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.to_string()),
            };
            // Not on disk: sending now could leave an anchor nobody can find after a crash.
            durable.map_err(|e| AnchorError::new(ErrorClass::Unknown, format!("not sent: progress not recorded: {e}")))
        })
    }
}

/// A successful anchor.
#[derive(Debug, Clone)]
pub(crate) struct Anchored {
    /// Where its receipt was written.
    pub path: PathBuf,
    /// Whether the target already held the attempt (nothing was sent this time).
    pub recovered: bool,
    /// For an aggregate's job: the proof and each member's receipt.
    pub aggregate: Option<Box<AggregateDone>>,
}

/// An aggregate made final: its proof, and what became of each member's receipt, in the
/// order of the job's members.
#[derive(Debug, Clone)]
pub(crate) struct AggregateDone {
    /// The target's proof of the aggregate's root.
    pub attestation: Attestation,
    /// Each member's receipt, or why it could not be written.
    pub receipts: Vec<Result<PathBuf, AnchorError>>,
}

/// What came of a job.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Final: the receipt is written.
    Anchored(Anchored),
    /// Sent (or found sent), not yet deep enough.
    Pending(Pending),
    /// The target dropped the pending anchor: it must be sent again.
    Dropped(String),
    /// The target refused the pending anchor for good.
    Rejected(AnchorError),
    /// Failed or cancelled.
    Failed(JobFailed),
}

/// A failed or cancelled anchor.
#[derive(Debug, Clone)]
pub(crate) struct JobFailed {
    /// What went wrong.
    pub error: AnchorError,
    /// Cancelled by shutdown rather than failed.
    pub interrupted: bool,
}

/// The result of a job, sent to the job's namespace actor.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct JobFinished {
    /// The request that ran.
    pub request: AnchorRequest,
    /// What the job did.
    pub mode: JobMode,
    /// When the job was due (monotonic ms).
    pub due_mono: MonoMs,
    /// When a worker started it (monotonic ms); `None` if it never started.
    pub started_mono: Option<MonoMs>,
    /// Time spent in the driver.
    pub duration: Duration,
    /// What happened.
    pub outcome: Outcome,
}

/// How often lanes are judged for saturation and their standing published.
const OBSERVE_EVERY: Duration = Duration::from_millis(500);

/// How many jobs of a target run at once, how long each job may take, and where receipts go.
#[derive(Clone)]
pub(crate) struct PoolSettings {
    /// Jobs of a target whose entry sets no `concurrency` that may run at once
    /// (`VMSH_ANCHOR_WORKERS`); its scheme's default when `None`.
    pub concurrency: Option<usize>,
    /// Time limit of one job.
    pub timeout: Duration,
    /// Makes every anchor's receipt durable.
    pub receipts: ReceiptWriter,
}

/// Dispatches jobs to workers.
pub(crate) struct AnchorPool {
    settings: PoolSettings,
    drivers: Drivers,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Every worker started, and the target of the job each runs (`None` when idle).
    workers: Vec<(Addr<AnchorActor>, Option<Target>)>,
    /// Where jobs for aggregating targets go.
    aggregator: Option<Addr<Aggregator>>,
    idle: Vec<usize>,
    lanes: Lanes<AnchorJob>,
    /// The targets the running config names, once the supervisor said.
    in_use: Option<std::collections::BTreeSet<Target>>,
    /// Where the lanes' standing is shown to the health actor.
    board: Arc<LaneBoard>,
    log: slog::Logger,
    draining: bool,
    cancel: watch::Sender<bool>,
    /// Told once no job runs: how a shutdown learns the drain is over without asking again
    /// and again.
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl AnchorPool {
    /// A pool with the given drivers.
    pub(crate) fn new(settings: PoolSettings, drivers: Drivers, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        let (cancel, _) = watch::channel(false);
        Self {
            settings,
            drivers,
            clock,
            metrics,
            workers: Vec::new(),
            aggregator: None,
            idle: Vec::new(),
            lanes: Lanes::default(),
            in_use: None,
            board: Arc::default(),
            log: slog::Logger::root(slog::Discard, slog::o!()),
            draining: false,
            cancel,
            idle_waiters: Vec::new(),
        }
    }

    /// Sends the jobs of aggregating targets to `aggregator`.
    pub(crate) fn with_aggregator(mut self, aggregator: Addr<Aggregator>) -> Self {
        self.aggregator = Some(aggregator);
        self
    }

    /// Shows the lanes' standing on `board`, and says in `log` when a target saturates.
    pub(crate) fn with_board(mut self, board: Arc<LaneBoard>, log: slog::Logger) -> Self {
        self.board = board;
        self.log = log;
        self
    }

    /// How many of `target`'s jobs may run at once: its entry's `concurrency`, else
    /// `VMSH_ANCHOR_WORKERS`, else its scheme's default.
    fn limit(&self, target: &Target) -> usize {
        let (own, _) = self.drivers.concurrency(target);
        own.map(|n| n as usize)
            .or(self.settings.concurrency)
            .unwrap_or_else(|| crate::config::concurrency::scheme_default(target.scheme) as usize)
    }

    /// Where `job` goes: the aggregator takes a job whose attempt is a leaf of an aggregate,
    /// and a first send for a target that aggregates. Gives back the job to run here.
    fn route(&self, job: AnchorJob) -> Option<AnchorJob> {
        let Some(aggregator) = &self.aggregator else { return Some(job) };
        if job.is_aggregate() {
            return Some(job);
        }
        let spec = self.drivers.aggregation(&job.request.target);
        // A first send joins; a send again of what an attempt of its own recorded (a dropped
        // transaction) finishes on its own, or the recorded one could be mined beside it.
        let fresh = matches!(job.mode, JobMode::Anchor { resume: false, .. }) && job.request.progress.is_none();
        let joins = job.request.membership.is_some() || (spec.is_some() && fresh);
        if !joins {
            return Some(job);
        }
        aggregator.do_send(Join { job, spec });
        None
    }

    fn running(&self) -> usize {
        self.lanes.running()
    }

    /// Tells those waiting for the pool to be idle, once it is.
    fn notify_if_idle(&mut self) {
        if self.running() == 0 {
            for waiter in self.idle_waiters.drain(..) {
                // A waiter that went away (a forced exit) needs no answer.
                let _ = waiter.send(());
            }
        }
    }

    /// Queues `job` in its target's lane, and starts it if the lane has a free slot.
    fn enqueue(&mut self, job: AnchorJob, ctx: &mut Context<Self>) {
        let target = job.request.target.clone();
        let limit = self.limit(&target);
        if let Some(job) = self.lanes.admit(&target, limit, job, self.clock.mono_ms()) {
            self.start(job, ctx);
        }
        self.update_gauges();
    }

    /// Hands `job`, whose lane slot is taken, to an idle worker, starting one if none is.
    fn start(&mut self, job: AnchorJob, ctx: &mut Context<Self>) {
        let id = match self.idle.pop() {
            Some(id) => id,
            None => {
                // Workers are actors on this arbiter waiting on I/O: one more costs a mailbox.
                let id = self.workers.len();
                let worker = AnchorActor {
                    id,
                    pool: ctx.address(),
                    clock: Arc::clone(&self.clock),
                    timeout: self.settings.timeout,
                    receipts: self.settings.receipts.clone(),
                };
                self.workers.push((worker.start(), None));
                id
            }
        };
        // A recorded attempt of a target that aggregates now, which the target turns out not
        // to hold, joins an aggregate rather than being sent alone.
        let rejoin = self.aggregator.is_some()
            && !job.is_aggregate()
            && job.request.membership.is_none()
            && job.request.progress.is_none()
            && self.drivers.aggregation(&job.request.target).is_some();
        let (worker, running) = &mut self.workers[id];
        *running = Some(job.request.target.clone());
        worker.do_send(Run { job, drivers: self.drivers.clone(), cancel: self.cancel.subscribe(), rejoin });
    }

    fn update_gauges(&self) {
        self.metrics.queued.set(i64::try_from(self.lanes.queued()).unwrap_or(i64::MAX));
        self.metrics.in_flight.set(i64::try_from(self.running()).unwrap_or(i64::MAX));
    }

    /// Keeps a lane for each target in use, and drops the idle lanes (and their series) of
    /// the others.
    fn keep_lanes(&mut self) {
        let Some(in_use) = self.in_use.take() else { return };
        let limits: std::collections::HashMap<&Target, usize> = in_use.iter().map(|t| (t, self.limit(t))).collect();
        let gone = self.lanes.keep(&in_use, |t| limits.get(t).copied().unwrap_or(1), self.clock.mono_ms());
        for target in gone {
            let label = target.to_string();
            let label = [label.as_str()];
            let m = &self.metrics;
            // A series never made is no error worth telling.
            let _ = m.target_concurrency.remove_label_values(&label);
            let _ = m.target_running.remove_label_values(&label);
            let _ = m.target_queued.remove_label_values(&label);
            let _ = m.target_saturated.remove_label_values(&label);
            let _ = m.target_saturated_seconds.remove_label_values(&label);
        }
        self.in_use = Some(in_use);
        // New lanes show at once, not at the next look.
        self.publish_lanes(self.clock.mono_ms());
    }

    /// Judges the lanes' saturation, says what changed, and publishes their standing.
    fn observe(&mut self) {
        let now = self.clock.mono_ms();
        let metrics = Arc::clone(&self.metrics);
        let changes = self.lanes.observe(now, |target, ms| {
            let label = target.to_string();
            metrics.target_saturated_seconds.with_label_values(&[label.as_str()]).inc_by(ms as f64 / 1000.0);
        });
        for change in changes {
            match change {
                Change::Saturated(target, status) => {
                    let (own, field) = self.drivers.concurrency(&target);
                    let now_from = match (own, self.settings.concurrency) {
                        (Some(_), _) => "its entry".to_string(),
                        (None, Some(_)) => "VMSH_ANCHOR_WORKERS".to_string(),
                        (None, None) => format!("the {} default", target.scheme),
                    };
                    slog::warn!(self.log, "target saturated: anchors wait for a free slot; raise {field} in the targets file";
                        "target" => %target, "concurrency" => status.concurrency, "set_by" => now_from,
                        "running" => status.running, "queued" => status.queued,
                        "oldest_wait_s" => status.oldest_wait_ms as f64 / 1000.0, "setting" => %field);
                }
                Change::Cleared(target, ms) => {
                    slog::info!(self.log, "target no longer saturated"; "target" => %target,
                        "saturated_for_s" => ms as f64 / 1000.0);
                }
            }
        }
        self.publish_lanes(now);
    }

    /// Sets every lane's series and shows the lanes on the board.
    fn publish_lanes(&mut self, now: MonoMs) {
        let status = self.lanes.status(now);
        for (target, s) in &status {
            let label = target.to_string();
            let label = [label.as_str()];
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.metrics.target_concurrency.with_label_values(&label).set(count(s.concurrency));
            self.metrics.target_running.with_label_values(&label).set(count(s.running));
            self.metrics.target_queued.with_label_values(&label).set(count(s.queued));
            self.metrics.target_saturated.with_label_values(&label).set(i64::from(s.saturated_since.is_some()));
            // Present from the first job on, so `rate()` has a start.
            self.metrics.target_saturated_seconds.with_label_values(&label).inc_by(0.0);
        }
        self.board.publish(status);
    }

    fn interrupt(&self, job: AnchorJob) {
        job.reply_to.do_send(JobFinished {
            request: job.request,
            mode: job.mode,
            due_mono: job.due_mono,
            started_mono: None,
            duration: Duration::ZERO,
            outcome: interrupted_outcome("not started: the scheduler is shutting down"),
        });
    }
}

/// A job's outcome when it was cut short before anything was sent.
pub(crate) fn interrupted_outcome(why: &str) -> Outcome {
    Outcome::Failed(JobFailed { error: AnchorError::new(ErrorClass::Unknown, why), interrupted: true })
}

impl Actor for AnchorPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(OBSERVE_EVERY, |pool, _| pool.observe());
    }
}

/// Queues a job.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Submit(pub AnchorJob);

/// Replaces the drivers after a targets reload; running jobs keep the ones they started with.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct UpdateDrivers(pub Drivers);

/// The targets the running config names: each gets a lane (shown before its first job), and
/// the lanes of the others go once their jobs are done.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TargetsInUse(pub std::collections::BTreeSet<Target>);

impl Handler<TargetsInUse> for AnchorPool {
    type Result = ();
    fn handle(&mut self, msg: TargetsInUse, _: &mut Context<Self>) {
        self.in_use = Some(msg.0);
        self.keep_lanes();
    }
}

/// Stops dispatching: queued jobs are answered as interrupted; running jobs go on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// Cancels running jobs (the shutdown grace period is over).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abort;

/// Asks how many jobs are running and queued.
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub(crate) struct Stats;

/// Asks to be told once no job runs; the answer resolves at once when none does.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub(crate) struct WhenIdle;

#[derive(Message)]
#[rtype(result = "()")]
struct WorkerIdle(usize);

impl Handler<Submit> for AnchorPool {
    type Result = ();
    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) {
        if self.draining {
            self.interrupt(msg.0);
            return;
        }
        if let Some(job) = self.route(msg.0) {
            self.enqueue(job, ctx);
        }
    }
}

/// A worker gives back a recorded attempt that the target does not hold, for an aggregate.
#[derive(Message)]
#[rtype(result = "()")]
struct Rejoin(AnchorJob);

impl Handler<Rejoin> for AnchorPool {
    type Result = ();
    fn handle(&mut self, msg: Rejoin, ctx: &mut Context<Self>) {
        let job = msg.0;
        match (&self.aggregator, self.drivers.aggregation(&job.request.target)) {
            _ if self.draining => self.interrupt(job),
            (Some(aggregator), Some(spec)) => aggregator.do_send(Join { job, spec: Some(spec) }),
            // The target stopped aggregating meanwhile: the job runs on its own again.
            _ => self.enqueue(job, ctx),
        }
    }
}

impl Handler<UpdateDrivers> for AnchorPool {
    type Result = ();
    fn handle(&mut self, msg: UpdateDrivers, ctx: &mut Context<Self>) {
        self.drivers = msg.0;
        if self.draining {
            return;
        }
        // A limit raised by the reload lets waiting jobs start now.
        let limits: std::collections::HashMap<Target, usize> =
            self.lanes.status(0).into_iter().map(|(t, _)| (t.clone(), self.limit(&t))).collect();
        let ready = self.lanes.relimit(|t| limits.get(t).copied().unwrap_or(1), self.clock.mono_ms());
        for (job, _) in ready {
            self.start(job, ctx);
        }
        self.update_gauges();
    }
}

impl Handler<Drain> for AnchorPool {
    type Result = ();
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.draining = true;
        for job in self.lanes.take_queued() {
            self.interrupt(job);
        }
        if let Some(aggregator) = &self.aggregator {
            aggregator.do_send(DrainAggregates);
        }
        self.update_gauges();
    }
}

impl Handler<Abort> for AnchorPool {
    type Result = ();
    fn handle(&mut self, _: Abort, _: &mut Context<Self>) {
        self.cancel.send_replace(true);
    }
}

impl Handler<Stats> for AnchorPool {
    type Result = MessageResult<Stats>;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.running(), self.lanes.queued()))
    }
}

impl Handler<WhenIdle> for AnchorPool {
    type Result = MessageResult<WhenIdle>;
    fn handle(&mut self, _: WhenIdle, _: &mut Context<Self>) -> Self::Result {
        let (tell, told) = oneshot::channel();
        self.idle_waiters.push(tell);
        self.notify_if_idle();
        MessageResult(told)
    }
}

impl Handler<WorkerIdle> for AnchorPool {
    type Result = ();
    fn handle(&mut self, msg: WorkerIdle, ctx: &mut Context<Self>) {
        let Some((_, running)) = self.workers.get_mut(msg.0) else { return };
        let Some(target) = running.take() else { return };
        self.idle.push(msg.0);
        if let Some((job, _)) = self.lanes.finished(&target, self.clock.mono_ms()) {
            if self.draining {
                self.interrupt(job);
            } else {
                self.start(job, ctx);
            }
        } else if self.in_use.as_ref().is_some_and(|in_use| !in_use.contains(&target)) {
            // The last job of a target the config no longer names: its lane goes now.
            self.keep_lanes();
        }
        self.update_gauges();
        self.notify_if_idle();
    }
}

impl Handler<Ping> for AnchorPool {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

/// One worker: runs one job at a time.
pub(crate) struct AnchorActor {
    id: usize,
    pool: Addr<AnchorPool>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    receipts: ReceiptWriter,
}

impl Actor for AnchorActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Run {
    job: AnchorJob,
    drivers: Drivers,
    cancel: watch::Receiver<bool>,
    /// Give the job back for an aggregate when the target does not hold it.
    rejoin: bool,
}

impl Handler<Run> for AnchorActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Run, _: &mut Context<Self>) -> Self::Result {
        let Run { job, drivers, mut cancel, rejoin } = msg;
        let clock = Arc::clone(&self.clock);
        let timeout = self.timeout;
        let receipts = self.receipts.clone();
        let pool = self.pool.clone();
        let work = async move {
            let started_mono = clock.mono_ms();
            let t0 = Instant::now();
            let sink = ActorSink {
                to: job.progress_to.clone(),
                cadence: job.request.cadence,
                attempt_id: job.request.attempt_id.clone(),
            };
            let run = execute(&drivers, &job, rejoin, &sink, &receipts, clock.as_ref());
            let outcome = tokio::select! {
                result = tokio::time::timeout(timeout, run) => match result {
                    Ok(Executed::Rejoin) => {
                        pool.do_send(Rejoin(job));
                        return;
                    }
                    Ok(Executed::Done(outcome)) => outcome,
                    Err(_) => Outcome::Failed(JobFailed {
                        error: AnchorError::new(
                            ErrorClass::Network,
                            format!("{} did not answer within {:.1}s (VMSH_ANCHOR_TIMEOUT_S)", job.request.target, timeout.as_secs_f64()),
                        ),
                        interrupted: false,
                    }),
                },
                _ = cancel.wait_for(|c| *c) => Outcome::Failed(JobFailed {
                    error: AnchorError::new(ErrorClass::Unknown, "cancelled: the shutdown grace period ran out"),
                    interrupted: true,
                }),
            };
            job.reply_to.do_send(JobFinished {
                request: job.request,
                mode: job.mode,
                due_mono: job.due_mono,
                started_mono: Some(started_mono),
                duration: t0.elapsed(),
                outcome,
            });
        };
        Box::pin(actix::fut::wrap_future(work).map(|(), act: &mut Self, _| {
            act.pool.do_send(WorkerIdle(act.id));
        }))
    }
}

/// What a worker made of a job.
enum Executed {
    /// The job's outcome.
    Done(Outcome),
    /// The target does not hold the recorded attempt: it joins an aggregate instead.
    Rejoin,
}

/// For a job resumed after a stop, the receipt each of its attempts wrote before it, if any:
/// one per member of an aggregate, else one. Looked for together, once.
async fn written_before(job: &AnchorJob, receipts: &ReceiptWriter) -> Vec<Option<PathBuf>> {
    let requests: Vec<&AnchorRequest> =
        if job.is_aggregate() { job.members.iter().map(|m| &m.request).collect() } else { vec![&job.request] };
    futures_util::future::join_all(requests.into_iter().map(|r| receipts.existing(r))).await
}

/// The outcome of a job all of whose receipts were `written` before: for an aggregate, every
/// member's.
fn finished_before(job: &AnchorJob, written: &[Option<PathBuf>]) -> Option<Outcome> {
    let paths: Vec<PathBuf> = written.iter().cloned().collect::<Option<_>>()?;
    let first = paths.first()?.clone();
    if !job.is_aggregate() {
        return Some(Outcome::Anchored(Anchored { path: first, recovered: true, aggregate: None }));
    }
    // The proof of the root is in the receipts; the aggregate's answer carries it for members
    // that come back later.
    let receipt = crate::model::receipt::parse(&std::fs::read(&first).ok()?).ok()?;
    let attestation = Attestation { data: receipt.attestation, anchored_at: Some(receipt.time_ms) };
    let done = AggregateDone { attestation, receipts: paths.into_iter().map(Ok).collect() };
    Some(Outcome::Anchored(Anchored { path: PathBuf::new(), recovered: true, aggregate: Some(Box::new(done)) }))
}

async fn execute(
    drivers: &Drivers,
    job: &AnchorJob,
    rejoin: bool,
    sink: &dyn ProgressSink,
    receipts: &ReceiptWriter,
    clock: &dyn Clock,
) -> Executed {
    let (req, mode) = (&job.request, &job.mode);
    let fail = |error: AnchorError| Executed::Done(Outcome::Failed(JobFailed { error, interrupted: false }));
    let driver = match drivers.for_target(&req.target) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // A resumed attempt that wrote its receipt before a crash (and did not live to record its
    // success) is done: asking or sending again could anchor it twice (an exec command runs
    // again, a TSA stamps again), and a second receipt would name the same attempt.
    let before = if matches!(mode, JobMode::Anchor { stopped_midway: true, .. }) {
        written_before(job, receipts).await
    } else {
        Vec::new()
    };
    if let Some(done) = finished_before(job, &before) {
        return Executed::Done(done);
    }
    // `after`: the storage round holding the proof's own write, which the receipt must follow.
    let (attestation, recovered, after) = match mode {
        JobMode::Confirm(pending) => match driver.confirm(req, pending, sink).await {
            Ok(Confirmation::Confirmed(att)) => (att, false, None),
            Ok(Confirmation::Waiting(p)) => return Executed::Done(Outcome::Pending(p)),
            Ok(Confirmation::Dropped(why)) => return Executed::Done(Outcome::Dropped(why)),
            Ok(Confirmation::Rejected(e)) => return Executed::Done(Outcome::Rejected(e)),
            Err(e) => return fail(e),
        },
        JobMode::Anchor { resume, .. } => {
            let known = if *resume { driver.recover(req).await } else { Recovery::Unknown };
            match known {
                Recovery::Done(att) => (att, true, None),
                Recovery::Pending(p) => return Executed::Done(Outcome::Pending(p)),
                // The target could answer later: sending now might make a second anchor.
                Recovery::Later(e) => return fail(AnchorError::uncertain(e.class, e.message)),
                Recovery::NotDone | Recovery::Unknown if rejoin => return Executed::Rejoin,
                Recovery::NotDone | Recovery::Unknown => match driver.anchor(req, sink).await {
                    Ok(Submitted::Anchored(att)) => (att, false, None),
                    Ok(Submitted::Written { attestation, round }) => (attestation, false, Some(round)),
                    Ok(Submitted::Pending(p)) => return Executed::Done(Outcome::Pending(p)),
                    Err(e) => return fail(e),
                },
            }
        }
    };
    let now = clock.wall_ms();
    if job.is_aggregate() {
        // Every member's receipt, written together so they share the storage rounds.
        // A member whose receipt was written before the stop keeps it.
        let kept = before.iter().map(Option::as_ref).chain(std::iter::repeat(None));
        let writes = job.members.iter().zip(kept).map(|(m, kept)| {
            let attestation = attestation.clone();
            async move {
                if let Some(path) = kept {
                    return Ok(path.clone());
                }
                let written = receipts.commit_with(&m.request, Some(m.inclusion.clone()), attestation, after, now);
                written.await.map(|(_, path)| path)
            }
        });
        let receipts = futures_util::future::join_all(writes).await;
        let done = AggregateDone { attestation, receipts };
        return Executed::Done(Outcome::Anchored(Anchored {
            path: PathBuf::new(),
            recovered,
            aggregate: Some(Box::new(done)),
        }));
    }
    // Every scheme's anchor counts only once its receipt is durable, written here alone.
    match receipts.commit(req, attestation, after, now).await {
        Ok((_, path)) => Executed::Done(Outcome::Anchored(Anchored { path, recovered, aggregate: None })),
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[actix_rt::test]
    async fn an_idle_pool_says_so_at_once_draining_or_not() {
        let root = tempfile::tempdir().expect("tempdir");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        let writer = Arc::new(crate::storage::writer::Writer::default());
        let drivers = Drivers::new(root.path().to_path_buf(), &Arc::default(), Arc::clone(&clock), Arc::clone(&writer));
        let receipts = ReceiptWriter::new(root.path().to_path_buf(), writer);
        let settings = PoolSettings { concurrency: Some(2), timeout: Duration::from_secs(5), receipts };
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let pool = AnchorPool::new(settings, drivers, clock, metrics).start();
        let told = pool.send(WhenIdle).await.expect("pool answers");
        tokio::time::timeout(Duration::from_secs(5), told).await.expect("told at once").expect("sender kept");
        pool.send(Drain).await.expect("drained");
        let told = pool.send(WhenIdle).await.expect("pool answers");
        tokio::time::timeout(Duration::from_secs(5), told).await.expect("told at once").expect("sender kept");
    }
}
