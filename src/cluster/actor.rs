//! `ClusterActor`: drives a replica's [`Membership`], a round about three times per lease
//! TTL, and tells whoever runs the namespaces what to start, what to hand over and what was
//! lost.
//!
//! A hand-over is a conversation: the runner stops the namespace, makes its state durable
//! (`StateStore`'s `Forget`) and answers [`Released`]; only then is the claim deleted, so the
//! next owner never starts while this replica may still write.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::etcd::EtcdError;
use super::member::{Membership, Round};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::time::MonoMs;

/// What the cluster tells whoever runs the namespaces.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Ownership {
    /// Claimed: load their state and run them.
    Gained(Vec<String>),
    /// Another replica should own them: stop them, make their state durable, then answer
    /// [`Released`] for each.
    HandOver(Vec<String>),
    /// No longer held (the lease expired): stop them at once, and write nothing for them.
    Lost(Vec<String>),
    /// Until when (monotonic ms) this replica may start anything; in the past when etcd could
    /// not be reached in time.
    ValidUntil(MonoMs),
    /// The lease expired and this replica joined again under this new one. Sent after the
    /// [`Ownership::Lost`] of everything held under the old one: writes may be fenced on the
    /// new lease once those are discarded, not before.
    Rejoined(i64),
}

/// A namespace handed over is stopped and its state durable: its claim may go.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Released(pub String);

/// The namespaces configured now, among which this replica claims its share.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetNamespaces(pub Arc<BTreeSet<String>>);

/// Leaves the cluster (a clean stop, after every namespace stopped): answered once the lease
/// is revoked, or could not be.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), String>")]
pub struct Leave;

/// Drives one replica's membership (see the module docs).
pub struct ClusterActor {
    /// Out while a round runs (it needs the membership mutably across awaits).
    membership: Option<Membership>,
    namespaces: Arc<BTreeSet<String>>,
    every: Duration,
    clock: Arc<dyn Clock>,
    to: Recipient<Ownership>,
    /// Handed over, waiting for [`Released`].
    handing_over: BTreeSet<String>,
    /// Released by the runner while a round ran: their claims go when it ends.
    released: Vec<String>,
    /// The last round's error, if it failed.
    last_error: Option<String>,
    /// Asked to leave while a round ran: answered when it ends.
    leaving: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
    /// Where the cluster section of /health and the cluster metrics go.
    report: Option<Reporting>,
    /// The lease the last round ended with.
    lease: i64,
    /// When the last renewal that etcd answered was sent (monotonic ms).
    renewed: Option<MonoMs>,
    /// Configured namespaces without an owner, since when (monotonic ms).
    unowned_since: std::collections::BTreeMap<String, MonoMs>,
    /// The last round's report, kept between rounds.
    last: Option<ClusterStatus>,
    /// The next round, scheduled between rounds: brought forward when a hand-over ends.
    next: Option<SpawnHandle>,
    /// Whether the last round found namespaces this replica waits for another to let go of.
    awaiting: bool,
}

/// How long released namespaces wait for others to be released with them before their
/// claims are deleted: hand-overs finish one namespace at a time, and one etcd round trip
/// for a batch is cheaper than one each.
const RELEASE_BATCH: Duration = Duration::from_millis(20);

/// Cluster mode, as one replica sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// This replica's node id.
    pub node: String,
    /// The etcd key prefix the replicas share.
    pub prefix: String,
    /// Whether this replica's member lease can be counted on now: if not, it starts nothing.
    pub lease_valid: bool,
    /// Seconds since the lease was last renewed (the request that etcd answered was sent);
    /// null before the first renewal.
    pub lease_renewed_ago_s: Option<f64>,
    /// Seconds the lease can still be counted on (0 once it cannot).
    pub lease_valid_for_s: f64,
    /// The lease TTL asked for, in seconds.
    pub lease_ttl_s: u64,
    /// The live members and how many namespaces each holds, as the last round read them.
    pub members: std::collections::BTreeMap<String, usize>,
    /// Namespaces this replica holds.
    pub owned: usize,
    /// Configured namespaces nobody held at the last round.
    pub unowned: usize,
    /// Seconds the longest-unowned of them has been without an owner.
    pub unowned_for_s: f64,
    /// When the last round ended (Unix ms); null before the first.
    pub last_round_ms: Option<i64>,
    /// Why the last round failed; null when it did not.
    pub error: Option<String>,
}

/// The last round's status, and until when (monotonic ms) the lease holds: for /health.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ClusterUpdate(pub ClusterStatus, pub MonoMs);

/// Where a [`ClusterActor`] reports.
pub struct Reporting {
    /// The health actor.
    pub health: Recipient<ClusterUpdate>,
    /// The cluster metrics.
    pub metrics: Arc<Metrics>,
    /// The key prefix, shown in /health.
    pub prefix: String,
    /// The lease TTL asked for, shown in /health.
    pub ttl_s: u64,
}

impl ClusterActor {
    /// An actor for `membership`, with rounds every `every`, telling `to`.
    pub fn new(membership: Membership, every: Duration, clock: Arc<dyn Clock>, to: Recipient<Ownership>) -> Self {
        let lease = membership.lease();
        Self {
            membership: Some(membership),
            namespaces: Arc::default(),
            every,
            clock,
            to,
            handing_over: BTreeSet::new(),
            released: Vec::new(),
            last_error: None,
            leaving: Vec::new(),
            report: None,
            lease,
            renewed: None,
            unowned_since: std::collections::BTreeMap::new(),
            last: None,
            next: None,
            awaiting: false,
        }
    }

    /// Claims among `namespaces` from the first round on.
    pub fn with_namespaces(mut self, namespaces: Arc<BTreeSet<String>>) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Reports every round to /health and the metrics.
    pub fn reporting(mut self, reporting: Reporting) -> Self {
        self.report = Some(reporting);
        self
    }

    /// Tells /health and the metrics how the last round went.
    fn publish(&mut self, round: Option<&Round>) {
        let Some(r) = &self.report else { return };
        let (node, valid_until) = match &self.membership {
            Some(m) => (m.node().to_string(), m.valid_until()),
            None => return,
        };
        let now = self.clock.mono_ms();
        if let Some(round) = round {
            self.unowned_since.retain(|ns, _| round.unowned.contains(ns));
            for ns in &round.unowned {
                self.unowned_since.entry(ns.clone()).or_insert(now);
            }
            r.metrics.members.set(i64::try_from(round.members.len()).unwrap_or(i64::MAX));
            r.metrics.owned.set(i64::try_from(round.held.len()).unwrap_or(i64::MAX));
            r.metrics.unowned.set(i64::try_from(round.unowned.len()).unwrap_or(i64::MAX));
            let members =
                round.members.iter().map(|m| (m.clone(), round.owners.get(m).copied().unwrap_or(0))).collect();
            self.last = Some(ClusterStatus {
                node,
                prefix: r.prefix.clone(),
                lease_valid: false,
                lease_renewed_ago_s: None,
                lease_valid_for_s: 0.0,
                lease_ttl_s: r.ttl_s,
                members,
                owned: round.held.len(),
                unowned: round.unowned.len(),
                unowned_for_s: 0.0,
                last_round_ms: None,
                error: None,
            });
        }
        let oldest = self.unowned_since.values().min().map_or(0, |since| now.saturating_sub(*since));
        r.metrics.unowned_age.set(oldest as f64 / 1000.0);
        r.metrics.lease_valid.set(i64::from(now < valid_until));
        let Some(mut report) = self.last.clone() else { return };
        report.lease_renewed_ago_s = self.renewed.map(|t| now.saturating_sub(t) as f64 / 1000.0);
        report.unowned_for_s = oldest as f64 / 1000.0;
        report.last_round_ms = Some(self.clock.wall_ms());
        report.error = self.last_error.clone();
        r.health.do_send(ClusterUpdate(report, valid_until));
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        let Some(mut membership) = self.membership.take() else { return };
        let namespaces = Arc::clone(&self.namespaces);
        let released = std::mem::take(&mut self.released);
        let sent = self.clock.mono_ms();
        let work = async move {
            let failed = membership.release_all(&released).await.err();
            let round = membership.round(&namespaces).await;
            (membership, released, failed, round)
        };
        ctx.spawn(actix::fut::wrap_future(work).map(
            move |(membership, released, failed, round), act: &mut Self, ctx| {
                act.membership = Some(membership);
                if round.is_ok() {
                    act.renewed = Some(sent);
                }
                act.rounded(round);
                if let Some(e) = failed {
                    // Not released: the next round, at the renewal cadence, releases them again.
                    act.released.extend(released);
                    act.last_error = Some(e.to_string());
                    act.publish(None);
                } else {
                    for ns in &released {
                        act.handing_over.remove(ns);
                    }
                    if let Some(r) = &act.report
                        && !released.is_empty()
                    {
                        r.metrics.ownership_changes.with_label_values(&["released"]).inc_by(released.len() as u64);
                    }
                }
                if !act.leaving.is_empty() {
                    act.leave(ctx);
                    return;
                }
                act.schedule(ctx);
            },
        ));
    }

    fn rounded(&mut self, round: Result<Round, EtcdError>) {
        let round = match round {
            Ok(r) => r,
            Err(e) => {
                self.last_error = Some(e.to_string());
                // Nothing is known: the lease may be gone. Past its validity, start nothing.
                if let Some(m) = &self.membership
                    && !m.can_start()
                {
                    self.to.do_send(Ownership::ValidUntil(self.clock.mono_ms()));
                }
                self.publish(None);
                return;
            }
        };
        self.last_error = None;
        self.awaiting = round.awaited > 0;
        self.publish(Some(&round));
        if !round.lost.is_empty() {
            for ns in &round.lost {
                self.handing_over.remove(ns);
            }
            if let Some(r) = &self.report {
                r.metrics.ownership_changes.with_label_values(&["lost"]).inc_by(round.lost.len() as u64);
            }
            self.to.do_send(Ownership::Lost(round.lost));
        }
        // After the losses, so the runner discards them before it writes under the new lease.
        if round.lease != self.lease {
            self.lease = round.lease;
            self.to.do_send(Ownership::Rejoined(round.lease));
        }
        self.to.do_send(Ownership::ValidUntil(round.valid_until));
        if let Some(r) = &self.report
            && !round.gained.is_empty()
        {
            r.metrics.ownership_changes.with_label_values(&["gained"]).inc_by(round.gained.len() as u64);
        }
        if !round.gained.is_empty() {
            self.to.do_send(Ownership::Gained(round.gained));
        }
        let new: Vec<String> = round.to_release.into_iter().filter(|ns| self.handing_over.insert(ns.clone())).collect();
        if !new.is_empty() {
            self.to.do_send(Ownership::HandOver(new));
        }
    }
}

/// How long until the next round, given the renewal cadence `every`: soon when claims wait
/// to be let go of (`releasing`) or this replica waits for another to let go (`awaiting`),
/// but never sooner than `every` after a failure, so a struggling etcd is not hurried.
fn next_round_in(every: Duration, failed: bool, releasing: bool, awaiting: bool) -> Duration {
    if failed {
        every
    } else if releasing {
        RELEASE_BATCH.min(every)
    } else if awaiting {
        every / 3
    } else {
        every
    }
}

impl ClusterActor {
    /// Schedules the next round, sooner than the renewal cadence when there is a hand-over
    /// to finish: namespaces released while the last round ran (their claims go at once),
    /// or namespaces this replica waits for another to let go of. A namespace moving
    /// between replicas anchors nowhere, so its move is worth a few extra etcd reads.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let after = next_round_in(self.every, self.last_error.is_some(), !self.released.is_empty(), self.awaiting);
        self.next = Some(ctx.run_later(after, |act, ctx| {
            act.next = None;
            act.round(ctx);
        }));
    }

    /// Revokes the lease and answers whoever asked to leave; no round runs after.
    fn leave(&mut self, ctx: &mut Context<Self>) {
        let Some(membership) = self.membership.take() else { return };
        let waiters = std::mem::take(&mut self.leaving);
        ctx.spawn(actix::fut::wrap_future(async move {
            let result = membership.leave().await.map_err(|e| e.to_string());
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }));
    }
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.round(ctx);
    }
}

impl Handler<Released> for ClusterActor {
    type Result = ();
    fn handle(&mut self, msg: Released, ctx: &mut Context<Self>) {
        if !self.handing_over.contains(&msg.0) {
            return;
        }
        let first = self.released.is_empty();
        self.released.push(msg.0);
        // The next owner waits on this claim: let go of it now rather than at the next
        // round. During a round, the round's end schedules the release.
        if first
            && self.membership.is_some()
            && let Some(next) = self.next.take()
        {
            ctx.cancel_future(next);
            self.schedule(ctx);
        }
    }
}

impl Handler<SetNamespaces> for ClusterActor {
    type Result = ();
    fn handle(&mut self, msg: SetNamespaces, _: &mut Context<Self>) {
        self.namespaces = msg.0;
    }
}

impl Handler<Leave> for ClusterActor {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, _: Leave, ctx: &mut Context<Self>) -> Self::Result {
        let (tell, told) = tokio::sync::oneshot::channel();
        self.leaving.push(tell);
        // Between rounds: leave now. During one: when it ends.
        if self.membership.is_some() {
            self.leave(ctx);
        }
        Box::pin(async move { told.await.unwrap_or_else(|_| Err("the cluster actor stopped".to_string())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_comes_at_the_renewal_cadence_when_nothing_moves() {
        assert_eq!(next_round_in(Duration::from_secs(3), false, false, false), Duration::from_secs(3));
    }

    #[test]
    fn released_claims_go_at_once_and_awaited_ones_are_looked_for_three_times_as_often() {
        let every = Duration::from_secs(3);
        assert_eq!(next_round_in(every, false, true, true), RELEASE_BATCH);
        assert_eq!(next_round_in(every, false, false, true), Duration::from_secs(1));
        // A cadence shorter than the batch window is not lengthened by it.
        assert_eq!(next_round_in(Duration::from_millis(5), false, true, false), Duration::from_millis(5));
    }

    #[test]
    fn after_a_failure_etcd_is_not_hurried() {
        let every = Duration::from_secs(3);
        assert_eq!(next_round_in(every, true, true, true), every);
    }
}
