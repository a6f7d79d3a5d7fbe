//! The `Aggregator`: one actor for every target that aggregates. The pool hands it each
//! member's job; it collects them per group ([`group`]) and, at the seal, anchors the root of
//! their Merkle tree once, for all of them.
//!
//! Exactly once per member, across crashes, rests on one rule: an aggregate's durable state
//! is its members' attempt records, not a store of its own. At the seal every member's record
//! gets its membership (leaf, index, size, path, root) and the aggregate is sent only once
//! every member has acknowledged it on disk. Whatever the aggregate's driver records before
//! sending (a signed transaction) is fanned out to every member's record the same way. So any
//! one member that comes back — after a failure, a restart or with its confirmation look —
//! brings with it all it takes to rebuild the same request (root and size name it; the
//! recorded progress repeats the same transaction), and never anchors that period alone.
//!
//! An aggregate is live while its one job runs; members that come back meanwhile attach to it
//! and get its answer. A small cache of recently finished aggregates writes the receipts of
//! members that come back later without asking the target again.

pub(crate) mod group;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::Logger;
use tokio::sync::oneshot;

use self::group::{Departed, Groups, Joined};
use super::pool::{
    AggregateDone, AnchorJob, AnchorPool, Anchored, AttemptProgress, Durable, JobFailed, JobFinished, MemberProof,
    Outcome, Recorded, Submit, interrupted_outcome,
};
use crate::clock::{Clock, MonoMs};
use crate::config::aggregate::AggregateSpec;
use crate::metrics::Metrics;
use crate::model::aggregate::{self, GroupKey};
use crate::model::digest::{parse_hex32, to_hex};
use crate::model::merkle::Hash;
use crate::model::receipt::Inclusion;
use crate::model::{AnchorError, AnchorRequest, Attestation, ErrorClass};
use crate::storage::receipts::ReceiptWriter;
use crate::storage::state::store::{Hold, Release, StateStore};
use crate::telemetry::{InternalEvent, events};

/// How many finished aggregates' proofs are kept for members that come back late.
const FINISHED: usize = 64;

/// How often the collecting-age gauge is refreshed.
const AGE_REFRESH: Duration = Duration::from_secs(1);

/// A member's job, with its proof once sealed.
struct Attached {
    job: AnchorJob,
    inclusion: Inclusion,
}

/// An aggregate whose job runs.
struct Live {
    /// The aggregate's own request.
    request: AnchorRequest,
    /// The members its job writes receipts for.
    members: Vec<Attached>,
    /// Members that came back while the job ran: they get its answer too.
    late: Vec<Attached>,
}

/// Collects the members of every aggregating target and anchors each aggregate once.
pub(crate) struct Aggregator {
    pool: Addr<AnchorPool>,
    /// Held while members record their membership or progress, so it lands in one commit.
    store: Addr<StateStore>,
    /// The last hold's id.
    holds: u64,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    receipts: ReceiptWriter,
    log: Logger,
    groups: Groups<AnchorJob>,
    /// Attempts whose cadence left before their job came.
    departed: Departed,
    live: HashMap<Hash, Live>,
    finished: VecDeque<(Hash, Attestation)>,
    /// Targets with an age series, so one whose aggregates are all sealed shows 0.
    aged: BTreeSet<String>,
    draining: bool,
}

impl Aggregator {
    /// An aggregator sending its aggregates' jobs to `pool`; late receipts go through
    /// `receipts`.
    pub(crate) fn new(
        pool: Addr<AnchorPool>,
        store: Addr<StateStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        receipts: ReceiptWriter,
        log: Logger,
    ) -> Self {
        Self {
            pool,
            store,
            holds: 0,
            clock,
            metrics,
            receipts,
            log,
            groups: Groups::default(),
            departed: Departed::default(),
            live: HashMap::new(),
            finished: VecDeque::new(),
            aged: BTreeSet::new(),
            draining: false,
        }
    }

    /// A fresh member joins its group's collecting aggregate.
    fn collect(&mut self, job: AnchorJob, spec: AggregateSpec, ctx: &mut Context<Self>) {
        let key = GroupKey::of(&job.request);
        match self.groups.join(key.clone(), spec, job, self.clock.mono_ms(), self.clock.wall_ms()) {
            Joined::Opened { id, seal_at } => {
                let sleep = actix::fut::wrap_future(self.clock.sleep_until(seal_at));
                ctx.spawn(sleep.map(move |(), act: &mut Self, ctx| {
                    let now = act.clock.mono_ms();
                    if let Some(jobs) = act.groups.window_over(&key, id, now) {
                        act.seal(key, jobs, ctx);
                    }
                    act.refresh_ages();
                }));
            }
            Joined::Added => {}
            Joined::Full(jobs) => self.seal(key, jobs, ctx),
        }
        self.refresh_ages();
    }

    /// Builds the tree over `jobs`' members and records each one's membership; the aggregate
    /// is sent once every record is on disk.
    fn seal(&mut self, key: GroupKey, jobs: Vec<AnchorJob>, ctx: &mut Context<Self>) {
        let mut members = Vec::with_capacity(jobs.len());
        let mut kept = Vec::with_capacity(jobs.len());
        for job in jobs {
            match aggregate::member_of(&job.request) {
                Some(m) => {
                    members.push(m);
                    kept.push(job);
                }
                None => {
                    let e = AnchorError::new(ErrorClass::Validation, "its attempt id is not a SHA-256 hash in hex");
                    answer(job, failed(e), None, Duration::ZERO);
                }
            }
        }
        if kept.is_empty() {
            return;
        }
        let sealed = match aggregate::seal(&members) {
            Ok(sealed) => sealed,
            Err(e) => {
                for job in kept {
                    let why = format!("cannot be a leaf of an aggregate: {e}");
                    answer(job, failed(AnchorError::new(ErrorClass::Validation, why)), None, Duration::ZERO);
                }
                return;
            }
        };
        events::AggregateSealed {
            target: &key.target.to_string(),
            cadence: key.cadence.as_str(),
            root: &to_hex(&sealed.root),
            size: sealed.size,
        }
        .emit(&self.log, &self.metrics);
        let request = key.request(sealed.root, sealed.size, None);
        let attached: Vec<Attached> =
            kept.into_iter().zip(sealed.proofs).map(|(job, inclusion)| Attached { job, inclusion }).collect();
        let asks = attached
            .iter()
            .map(|a| {
                let ask = AttemptProgress {
                    cadence: a.job.request.cadence,
                    attempt_id: a.job.request.attempt_id.clone(),
                    recorded: Recorded::Membership(a.inclusion.clone()),
                };
                (a.job.progress_to.clone(), ask)
            })
            .collect();
        let recorded = self.record_together(asks);
        ctx.spawn(actix::fut::wrap_future(recorded).map(move |why, act: &mut Self, ctx| {
            act.membership_recorded(request, attached, why, ctx);
        }));
    }

    /// Records `asks` in the members' attempt records in one commit of the state store, so a
    /// crash keeps all of them or none, and answers once they are durable: with why not, if
    /// one is not. A member whose actor is gone is passed over (its leaf stays in the tree).
    fn record_together(
        &mut self,
        asks: Vec<(Recipient<AttemptProgress>, AttemptProgress)>,
    ) -> impl std::future::Future<Output = Option<String>> + use<> {
        self.holds += 1;
        let (id, store) = (self.holds, self.store.clone());
        store.do_send(Hold(id));
        async move {
            let queued = futures_util::future::join_all(asks.into_iter().map(|(to, ask)| to.send(ask))).await;
            // Every change is in the store's mailbox now, ahead of the release.
            store.do_send(Release(id));
            let mut why = None;
            let mut durables = Vec::with_capacity(queued.len());
            for answer in queued {
                match answer {
                    Ok(Ok(durable)) => durables.push(durable),
                    Err(MailboxError::Closed) => {}
                    Ok(Err(e)) => why = why.or(Some(e)),
                    Err(MailboxError::Timeout) => why = why.or(Some("the namespace did not answer in time".into())),
                }
            }
            for durable in futures_util::future::join_all(durables).await {
                match durable {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => why = why.or(Some(e)),
                    Err(_) => why = why.or(Some("the state store stopped".into())),
                }
            }
            why
        }
    }

    /// Every member answered the record of its membership: send the aggregate, or, if any
    /// record is not on disk, nothing (each member starts anew: nothing was anchored).
    fn membership_recorded(
        &mut self,
        request: AnchorRequest,
        attached: Vec<Attached>,
        not_recorded: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(why) = not_recorded {
            let error = AnchorError {
                refused: true,
                ..AnchorError::new(
                    ErrorClass::Unknown,
                    format!("not sent: the aggregate's membership could not be recorded for every member ({why})"),
                )
            };
            for a in attached {
                answer(a.job, failed(error.clone()), None, Duration::ZERO);
            }
            return;
        }
        let root = request.root;
        self.live.insert(root, Live { request, members: attached, late: Vec::new() });
        self.run(root, super::pool::JobMode::Anchor { resume: false, stopped_midway: false }, ctx);
    }

    /// Hands the live aggregate `root`'s job to the pool.
    fn run(&mut self, root: Hash, mode: super::pool::JobMode, ctx: &mut Context<Self>) {
        let Some(live) = self.live.get(&root) else { return };
        let members = live
            .members
            .iter()
            .map(|a| MemberProof { request: a.job.request.clone(), inclusion: a.inclusion.clone() })
            .collect();
        let due_mono = live.members.iter().map(|a| a.job.due_mono).min().unwrap_or_else(|| self.clock.mono_ms());
        let address = ctx.address();
        self.pool.do_send(Submit(AnchorJob {
            request: live.request.clone(),
            mode,
            due_mono,
            reply_to: address.clone().recipient(),
            progress_to: address.recipient(),
            members,
        }));
    }

    /// A member whose attempt is a leaf of the aggregate its `inclusion` names comes back: it
    /// gets the receipt of an aggregate just finished, attaches to the one running, or runs
    /// the aggregate again from what it recorded.
    fn attach(&mut self, job: AnchorJob, inclusion: Inclusion, ctx: &mut Context<Self>) {
        let Some(root) = parse_hex32(&inclusion.root) else {
            let e = AnchorError::new(ErrorClass::Validation, "its recorded aggregate root is not a hash in hex");
            return answer(job, failed(e), None, Duration::ZERO);
        };
        let attached = Attached { job, inclusion };
        if let Some(attestation) = self.finished.iter().find(|(r, _)| *r == root).map(|(_, a)| a.clone()) {
            return self.write_late(attached, attestation, ctx);
        }
        if let Some(live) = self.live.get_mut(&root) {
            live.late.push(attached);
            return;
        }
        if self.draining {
            return answer(
                attached.job,
                interrupted_outcome("not sent: the scheduler is shutting down"),
                None,
                Duration::ZERO,
            );
        }
        // The same request as when it was sealed: root and size name it, and the member's
        // record holds what the aggregate's driver recorded before it sent.
        let key = GroupKey::of(&attached.job.request);
        let request = key.request(root, attached.inclusion.size, attached.job.request.progress.clone());
        let mode = attached.job.mode.clone();
        self.live.insert(root, Live { request, members: vec![attached], late: Vec::new() });
        self.run(root, mode, ctx);
    }

    /// Writes the receipt of a member of an aggregate already final, then answers it.
    fn write_late(&self, a: Attached, attestation: Attestation, ctx: &mut Context<Self>) {
        let receipts = self.receipts.clone();
        let now = self.clock.wall_ms();
        let write = async move {
            let written = receipts.commit_with(&a.job.request, Some(a.inclusion.clone()), attestation, None, now).await;
            (a, written)
        };
        ctx.spawn(actix::fut::wrap_future(write).map(|(a, written), _: &mut Self, _| {
            let outcome = match written {
                Ok((_, path)) => Outcome::Anchored(Anchored { path, recovered: true, aggregate: None }),
                Err(e) => failed(e),
            };
            answer(a.job, outcome, None, Duration::ZERO);
        }));
    }

    /// Keeps a finished aggregate's proof for members that come back late.
    fn remember(&mut self, root: Hash, attestation: Attestation) {
        if self.finished.len() >= FINISHED {
            self.finished.pop_front();
        }
        self.finished.push_back((root, attestation));
    }

    /// Sets each target's collecting age (its oldest open aggregate's) and waiting members;
    /// 0 for a target with none.
    fn refresh_ages(&mut self) {
        let now = self.clock.mono_ms();
        let mut ages: HashMap<String, (MonoMs, usize)> = HashMap::new();
        for (key, opened, members) in self.groups.opened() {
            let age = now.saturating_sub(opened).max(0);
            let (oldest, waiting) = ages.entry(key.target.to_string()).or_insert((age, 0));
            *oldest = (*oldest).max(age);
            *waiting += members;
        }
        for target in &self.aged {
            if !ages.contains_key(target) {
                self.metrics.aggregate_age.with_label_values(&[target]).set(0.0);
                self.metrics.aggregate_waiting.with_label_values(&[target]).set(0);
            }
        }
        for (target, (age, waiting)) in ages {
            self.metrics.aggregate_age.with_label_values(&[&target]).set(age as f64 / 1000.0);
            self.metrics
                .aggregate_waiting
                .with_label_values(&[&target])
                .set(i64::try_from(waiting).unwrap_or(i64::MAX));
            self.aged.insert(target);
        }
    }
}

/// Why a member's record was not written, when it was not. A member whose actor is gone
/// stays in the tree: its receipt is still written.
fn failed(error: AnchorError) -> Outcome {
    Outcome::Failed(JobFailed { error, interrupted: false })
}

/// Answers a member's job with `outcome`.
fn answer(job: AnchorJob, outcome: Outcome, started_mono: Option<MonoMs>, duration: Duration) {
    job.reply_to.do_send(JobFinished {
        request: job.request,
        mode: job.mode,
        due_mono: job.due_mono,
        started_mono,
        duration,
        outcome,
    });
}

impl Actor for Aggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(AGE_REFRESH, |act, _| act.refresh_ages());
    }
}

/// A member's job, from the pool: a first send for a target that aggregates (`spec` is how),
/// or any job of an attempt recorded as a leaf of an aggregate.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Join {
    /// The member's job.
    pub job: AnchorJob,
    /// How its target aggregates now.
    pub spec: Option<AggregateSpec>,
}

/// The attempt's cadence left the config: its job leaves the aggregate collecting it, if
/// it is not sealed yet, and is answered as cancelled.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Leave {
    /// The attempt's id.
    pub attempt_id: String,
}

/// Shutdown: members still collecting are answered as cancelled; sealed aggregates go on.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DrainAggregates;

impl Handler<Join> for Aggregator {
    type Result = ();
    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let Join { job, spec } = msg;
        if let Some(inclusion) = job.request.membership.clone() {
            return self.attach(job, inclusion, ctx);
        }
        match spec {
            _ if self.departed.take(&job.request.attempt_id) => {
                let outcome = interrupted_outcome("left the aggregate before it was sealed: the cadence was removed");
                answer(job, outcome, None, Duration::ZERO);
            }
            _ if self.draining => {
                answer(job, interrupted_outcome("not sent: the scheduler is shutting down"), None, Duration::ZERO);
            }
            Some(spec) => self.collect(job, spec, ctx),
            // The pool sends a fresh member only with its target's spec.
            None => {
                let e = AnchorError::new(ErrorClass::Unknown, "not sent: its target no longer aggregates");
                answer(job, failed(AnchorError { refused: true, ..e }), None, Duration::ZERO);
            }
        }
    }
}

impl Handler<Leave> for Aggregator {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if let Some(job) = self.groups.leave(|j| j.request.attempt_id == msg.attempt_id) {
            let outcome = interrupted_outcome("left the aggregate before it was sealed: the cadence was removed");
            answer(job, outcome, None, Duration::ZERO);
            self.refresh_ages();
        } else if !self
            .live
            .values()
            .any(|l| l.members.iter().chain(&l.late).any(|a| a.job.request.attempt_id == msg.attempt_id))
        {
            // Not collecting and not sealed: its job is still on its way through the pool.
            self.departed.remember(msg.attempt_id);
        }
    }
}

impl Handler<DrainAggregates> for Aggregator {
    type Result = ();
    fn handle(&mut self, _: DrainAggregates, _: &mut Context<Self>) {
        self.draining = true;
        for job in self.groups.drain() {
            answer(job, interrupted_outcome("not sent: the scheduler is shutting down"), None, Duration::ZERO);
        }
        self.refresh_ages();
    }
}

/// The aggregate's job came back: every member attached gets its answer.
impl Handler<JobFinished> for Aggregator {
    type Result = ();
    fn handle(&mut self, msg: JobFinished, ctx: &mut Context<Self>) {
        let root = msg.request.root;
        let Some(live) = self.live.remove(&root) else { return };
        let JobFinished { started_mono, duration, outcome, .. } = msg;
        let done = match outcome {
            Outcome::Anchored(Anchored { recovered, aggregate: Some(done), .. }) => (recovered, *done),
            Outcome::Anchored(_) => {
                let e = AnchorError::uncertain(ErrorClass::Unknown, "the aggregate's job wrote no receipts");
                for a in live.members.into_iter().chain(live.late) {
                    answer(a.job, failed(e.clone()), started_mono, duration);
                }
                return;
            }
            other => {
                for a in live.members.into_iter().chain(live.late) {
                    answer(a.job, other.clone(), started_mono, duration);
                }
                return;
            }
        };
        let (recovered, AggregateDone { attestation, receipts }) = done;
        let written = receipts.iter().filter(|r| r.is_ok()).count();
        let size = live.members.first().map_or(0, |a| a.inclusion.size);
        for (a, receipt) in live.members.into_iter().zip(receipts) {
            let outcome = match receipt {
                Ok(path) => Outcome::Anchored(Anchored { path, recovered, aggregate: None }),
                Err(e) => failed(e),
            };
            answer(a.job, outcome, started_mono, duration);
        }
        events::AggregateAnchored {
            target: &live.request.target.to_string(),
            root: &to_hex(&root),
            size,
            receipts: written,
            recovered,
        }
        .emit(&self.log, &self.metrics);
        // A receipt written shows the proof's own write (a journal line) is durable: only then
        // may later receipts name it without waiting for its round.
        if written > 0 {
            self.remember(root, attestation.clone());
            for a in live.late {
                self.write_late(a, attestation.clone(), ctx);
            }
        } else {
            let e = AnchorError::uncertain(ErrorClass::Unknown, "the aggregate's receipts could not be written");
            for a in live.late {
                answer(a.job, failed(e.clone()), started_mono, duration);
            }
        }
    }
}

/// The aggregate's driver records what it is about to send: in every attached member's
/// record, all on disk before the driver sends.
impl Handler<AttemptProgress> for Aggregator {
    type Result = Result<Durable, String>;
    fn handle(&mut self, msg: AttemptProgress, ctx: &mut Context<Self>) -> Self::Result {
        let live = parse_hex32(&msg.attempt_id).and_then(|root| self.live.get_mut(&root));
        let (Some(live), Recorded::Progress(progress)) = (live, msg.recorded) else {
            return Err("the aggregate is no longer running".to_string());
        };
        live.request.progress = Some(progress.clone());
        let asks = live
            .members
            .iter()
            .chain(&live.late)
            .map(|a| {
                let ask = AttemptProgress {
                    cadence: a.job.request.cadence,
                    attempt_id: a.job.request.attempt_id.clone(),
                    recorded: Recorded::Progress(progress.clone()),
                };
                (a.job.progress_to.clone(), ask)
            })
            .collect();
        let recorded = self.record_together(asks);
        let (tell, durable) = oneshot::channel();
        ctx.spawn(actix::fut::wrap_future(async move {
            let _ = tell.send(recorded.await.map_or(Ok(()), |why| Err(format!("a member's record: {why}"))));
        }));
        Ok(durable)
    }
}
