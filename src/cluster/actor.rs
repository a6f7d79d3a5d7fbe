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
}

impl ClusterActor {
    /// An actor for `membership`, with rounds every `every`, telling `to`.
    pub fn new(membership: Membership, every: Duration, clock: Arc<dyn Clock>, to: Recipient<Ownership>) -> Self {
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
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        let Some(mut membership) = self.membership.take() else { return };
        let namespaces = Arc::clone(&self.namespaces);
        let released = std::mem::take(&mut self.released);
        let work = async move {
            let mut failed = None;
            for ns in &released {
                if let Err(e) = membership.release(ns).await {
                    failed = Some(e);
                }
            }
            let round = membership.round(&namespaces).await;
            (membership, released, failed, round)
        };
        ctx.spawn(actix::fut::wrap_future(work).map(|(membership, released, failed, round), act: &mut Self, ctx| {
            act.membership = Some(membership);
            if let Some(e) = failed {
                // Not released: the next round releases them again.
                act.released.extend(released);
                act.last_error = Some(e.to_string());
            } else {
                for ns in &released {
                    act.handing_over.remove(ns);
                }
            }
            act.rounded(round);
            if !act.leaving.is_empty() {
                act.leave(ctx);
                return;
            }
            let every = act.every;
            ctx.run_later(every, |act, ctx| act.round(ctx));
        }));
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
                return;
            }
        };
        self.last_error = None;
        self.to.do_send(Ownership::ValidUntil(round.valid_until));
        if !round.lost.is_empty() {
            for ns in &round.lost {
                self.handing_over.remove(ns);
            }
            self.to.do_send(Ownership::Lost(round.lost));
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

impl ClusterActor {
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
    fn handle(&mut self, msg: Released, _: &mut Context<Self>) {
        if self.handing_over.contains(&msg.0) {
            self.released.push(msg.0);
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
