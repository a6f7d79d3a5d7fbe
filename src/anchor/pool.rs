//! The anchor worker pool: an `AnchorPool` actor that queues jobs and hands each to an idle
//! `AnchorActor`. Every job runs under the pool's time limit, so a hung target holds one
//! worker for at most that long and never the namespaces queued behind it for longer.
//!
//! A job that comes from a recorded attempt first asks the driver whether the target
//! already holds it ([`Driver::recover`]); only if not is it sent again. A pending anchor
//! (sent, not yet deep enough) comes back as a confirmation job until it is final.
//!
//! A job for a target that aggregates goes to the [`Aggregator`] instead: a first send, or any
//! job of an attempt already recorded as a leaf of an aggregate. The aggregator sends one job
//! per aggregate back here, carrying its members; its worker writes every member's receipt.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use super::aggregate::{Aggregator, DrainAggregates, Join};
use super::{BoxFuture, Drivers, ProgressSink};
use crate::clock::{Clock, MonoMs};
use crate::metrics::Metrics;
use crate::model::receipt::Inclusion;
use crate::model::{
    AnchorError, AnchorRequest, Attestation, CadenceKind, Confirmation, ErrorClass, Pending, Ping, Recovery, Submitted,
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

/// How many workers run jobs, how long each job may take, and where receipts go.
#[derive(Clone)]
pub(crate) struct PoolSettings {
    /// Number of workers.
    pub workers: usize,
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
    workers: Vec<Addr<AnchorActor>>,
    /// Where jobs for aggregating targets go.
    aggregator: Option<Addr<Aggregator>>,
    idle: Vec<usize>,
    queue: VecDeque<AnchorJob>,
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
            queue: VecDeque::new(),
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
        self.workers.len() - self.idle.len()
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

    fn dispatch(&mut self) {
        while !self.draining {
            let Some(worker) = self.idle.pop() else { break };
            let Some(job) = self.queue.pop_front() else {
                self.idle.push(worker);
                break;
            };
            // A recorded attempt of a target that aggregates now, which the target turns out not
            // to hold, joins an aggregate rather than being sent alone.
            let rejoin = self.aggregator.is_some()
                && !job.is_aggregate()
                && job.request.membership.is_none()
                && job.request.progress.is_none()
                && self.drivers.aggregation(&job.request.target).is_some();
            self.workers[worker].do_send(Run {
                job,
                drivers: self.drivers.clone(),
                cancel: self.cancel.subscribe(),
                rejoin,
            });
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        self.metrics.queued.set(i64::try_from(self.queue.len()).unwrap_or(i64::MAX));
        self.metrics.in_flight.set(i64::try_from(self.running()).unwrap_or(i64::MAX));
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
        let pool = ctx.address();
        for id in 0..self.settings.workers {
            let worker = AnchorActor {
                id,
                pool: pool.clone(),
                clock: Arc::clone(&self.clock),
                timeout: self.settings.timeout,
                receipts: self.settings.receipts.clone(),
            };
            self.workers.push(worker.start());
            self.idle.push(id);
        }
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
    fn handle(&mut self, msg: Submit, _: &mut Context<Self>) {
        if self.draining {
            self.interrupt(msg.0);
            return;
        }
        if let Some(job) = self.route(msg.0) {
            self.queue.push_back(job);
            self.dispatch();
        }
    }
}

/// A worker gives back a recorded attempt that the target does not hold, for an aggregate.
#[derive(Message)]
#[rtype(result = "()")]
struct Rejoin(AnchorJob);

impl Handler<Rejoin> for AnchorPool {
    type Result = ();
    fn handle(&mut self, msg: Rejoin, _: &mut Context<Self>) {
        let job = msg.0;
        match (&self.aggregator, self.drivers.aggregation(&job.request.target)) {
            _ if self.draining => self.interrupt(job),
            (Some(aggregator), Some(spec)) => aggregator.do_send(Join { job, spec: Some(spec) }),
            // The target stopped aggregating meanwhile: the job runs on its own again.
            _ => {
                self.queue.push_back(job);
                self.dispatch();
            }
        }
    }
}

impl Handler<UpdateDrivers> for AnchorPool {
    type Result = ();
    fn handle(&mut self, msg: UpdateDrivers, _: &mut Context<Self>) {
        self.drivers = msg.0;
    }
}

impl Handler<Drain> for AnchorPool {
    type Result = ();
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.draining = true;
        while let Some(job) = self.queue.pop_front() {
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
        MessageResult((self.running(), self.queue.len()))
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
    fn handle(&mut self, msg: WorkerIdle, _: &mut Context<Self>) {
        self.idle.push(msg.0);
        self.dispatch();
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
        let settings = PoolSettings { workers: 2, timeout: Duration::from_secs(5), receipts };
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let pool = AnchorPool::new(settings, drivers, clock, metrics).start();
        let told = pool.send(WhenIdle).await.expect("pool answers");
        tokio::time::timeout(Duration::from_secs(5), told).await.expect("told at once").expect("sender kept");
        pool.send(Drain).await.expect("drained");
        let told = pool.send(WhenIdle).await.expect("pool answers");
        tokio::time::timeout(Duration::from_secs(5), told).await.expect("told at once").expect("sender kept");
    }
}
