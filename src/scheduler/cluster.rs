//! Cluster mode, as the supervisor carries it out: it runs only the namespaces this replica
//! holds, as the [`ClusterActor`] tells it ([`Ownership`]).
//!
//! - **Gained**: the namespaces' state is read from etcd as it is now ([`Acquire`]), then
//!   their actors start.
//! - **Hand-over**: the actor stops starting runs and stops once its running anchors return;
//!   then the store makes its changes durable and drops it ([`Forget`]); only then is the
//!   claim let go ([`Released`]), so the next owner never runs it while this one may write.
//! - **Lost** (the lease expired): the actor stops at once, and the store drops whatever of
//!   the namespace is not yet durable ([`Discard`]). A new lease ([`Ownership::Rejoined`])
//!   fences the writes only once every discard is answered: a change made under the old
//!   lease must never be committed under the new one.
//! - **Valid until**: the start gate closes when the lease can no longer be counted on.
//!
//! Losses, lease switches and acquisitions run one after another, in the order the cluster
//! actor sent them; a hand-over of a namespace whose state is still being read waits for
//! that read, so the store never takes a namespace back in after it let go of it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use slog::{info, warn};
use tokio::sync::oneshot;

use super::gate::StartGate;
use super::namespace::{Abandon, HandOff, NamespaceActor};
use super::supervisor::Supervisor;
use crate::cluster::actor::{ClusterActor, Ownership, Released, SetNamespaces};
use crate::storage::state::etcd::EtcdBackend;
use crate::storage::state::store::{Acquire, Discard, Forget};

/// How soon an acquisition that etcd did not answer is tried again.
const ACQUIRE_RETRY: Duration = Duration::from_secs(1);

/// What the supervisor keeps of cluster mode.
pub(crate) struct ClusterRole {
    /// The membership's actor.
    pub(crate) actor: Addr<ClusterActor>,
    /// The state backend, whose fence moves to a new lease.
    pub(crate) backend: Arc<EtcdBackend>,
    /// The namespace actors' start gate.
    pub(crate) gate: Arc<StartGate>,
    /// Namespaces this replica holds a claim on.
    held: BTreeSet<String>,
    /// Namespaces whose state is being read (queued or under way).
    acquiring: BTreeSet<String>,
    /// Handed over while their state was being read: let go of once it is.
    deferred: BTreeSet<String>,
    /// Steps that run one after another.
    queue: VecDeque<Step>,
    busy: bool,
}

/// A step that must not overlap the others.
enum Step {
    Discard(Vec<String>),
    Switch(i64),
    Acquire(Vec<String>),
}

impl ClusterRole {
    /// The role of a replica whose cluster actor is `actor`.
    pub(crate) fn new(actor: Addr<ClusterActor>, backend: Arc<EtcdBackend>, gate: Arc<StartGate>) -> Self {
        Self {
            actor,
            backend,
            gate,
            held: BTreeSet::new(),
            acquiring: BTreeSet::new(),
            deferred: BTreeSet::new(),
            queue: VecDeque::new(),
            busy: false,
        }
    }

    /// Whether this replica holds `namespace` and has its state: it may run it.
    pub(crate) fn may_run(&self, namespace: &str) -> bool {
        self.held.contains(namespace) && !self.acquiring.contains(namespace)
    }

    /// Tells the cluster actor which namespaces are configured now.
    pub(crate) fn configured(&self, names: impl Iterator<Item = String>) {
        self.actor.do_send(SetNamespaces(Arc::new(names.collect())));
    }
}

impl Handler<Ownership> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Ownership, ctx: &mut Context<Self>) {
        let Some(role) = self.cluster.as_mut() else { return };
        match msg {
            Ownership::ValidUntil(until) => role.gate.open_until(until),
            Ownership::Gained(names) => {
                info!(self.log, "cluster: namespaces gained; loading their state"; "count" => names.len());
                role.held.extend(names.iter().cloned());
                role.acquiring.extend(names.iter().cloned());
                role.queue.push_back(Step::Acquire(names));
            }
            Ownership::Lost(names) => {
                warn!(self.log, "cluster: namespaces lost with the member lease (etcd unreachable in time, or this process was paused); stopped at once, writing nothing more for them";
                    "count" => names.len());
                for ns in &names {
                    role.held.remove(ns);
                    role.deferred.remove(ns);
                    let actor = self.actors.remove(ns.as_str()).or_else(|| self.retiring.remove(ns.as_str()));
                    if let Some(actor) = actor.or_else(|| self.handing.remove(ns)) {
                        actor.do_send(Abandon);
                    }
                }
                role.queue.push_back(Step::Discard(names));
            }
            Ownership::Rejoined(lease) => role.queue.push_back(Step::Switch(lease)),
            Ownership::HandOver(names) => {
                info!(self.log, "cluster: namespaces move to another replica; handing over once their running anchors return";
                    "count" => names.len());
                let mut now = Vec::new();
                for ns in names {
                    role.held.remove(&ns);
                    if role.acquiring.contains(&ns) {
                        role.deferred.insert(ns);
                    } else {
                        now.push(ns);
                    }
                }
                for ns in now {
                    self.hand_over(ns, ctx);
                }
            }
        }
        self.next_step(ctx);
    }
}

impl Supervisor {
    /// Stops `ns`'s actor, makes its state durable and drops it, then lets its claim go.
    fn hand_over(&mut self, ns: String, ctx: &mut Context<Self>) {
        let stopped = self.actors.remove(ns.as_str()).or_else(|| self.retiring.remove(ns.as_str())).map(|actor| {
            let (tell, told) = oneshot::channel::<()>();
            actor.do_send(HandOff(tell));
            self.handing.insert(ns.clone(), actor);
            told
        });
        let store = self.deps.store.clone();
        let name = ns.clone();
        let work = async move {
            if let Some(told) = stopped {
                // Dropped, never sent: the actor has stopped.
                let _ = told.await;
            }
            let (ack, acked) = oneshot::channel();
            store.do_send(Forget(name, ack));
            acked.await.map_err(|_| "the state store stopped".to_string()).and_then(|r| r)
        };
        ctx.spawn(actix::fut::wrap_future(work).map(move |settled, act: &mut Self, _| {
            act.handing.remove(&ns);
            let Some(role) = &act.cluster else { return };
            match settled {
                Ok(()) => role.actor.do_send(Released(ns)),
                // Not durable: the claim stays, and expires with the lease if this never
                // heals; the next owner then finds everything that was acknowledged.
                Err(e) => warn!(act.log, "cluster: cannot hand a namespace over: its state is not durable"; "ns" => ns, "err" => e),
            }
        }));
    }

    /// Runs the next queued step, unless one runs.
    fn next_step(&mut self, ctx: &mut Context<Self>) {
        let Some(role) = self.cluster.as_mut() else { return };
        if role.busy {
            return;
        }
        let Some(step) = role.queue.pop_front() else { return };
        role.busy = true;
        match step {
            Step::Discard(names) => {
                let store = self.deps.store.clone();
                let asks = names.into_iter().map(move |ns| {
                    let (ack, acked) = oneshot::channel();
                    store.do_send(Discard(ns, ack));
                    acked
                });
                let all = join_all(asks.collect::<Vec<_>>());
                ctx.spawn(actix::fut::wrap_future(all).map(|_, act: &mut Self, ctx| act.step_done(ctx)));
            }
            Step::Switch(lease) => {
                role.backend.switch_lease(lease);
                info!(self.log, "cluster: joined again under a new member lease; state writes are fenced on it"; "lease" => lease);
                self.step_done(ctx);
            }
            Step::Acquire(names) => {
                let ask = self.deps.store.send(Acquire(names.clone()));
                ctx.spawn(actix::fut::wrap_future(ask).map(move |answer, act: &mut Self, ctx| {
                    match answer.map_err(|e| e.to_string()).and_then(|r| r) {
                        Ok(states) => {
                            for (ns, state) in states {
                                act.acquired(ns, state, ctx);
                            }
                        }
                        Err(e) => {
                            warn!(act.log, "cluster: cannot read the state of namespaces gained; trying again";
                                "count" => names.len(), "err" => e);
                            let again = names.clone();
                            ctx.run_later(ACQUIRE_RETRY, move |act, ctx| {
                                if let Some(role) = act.cluster.as_mut() {
                                    role.queue.push_back(Step::Acquire(again));
                                }
                                act.next_step(ctx);
                            });
                        }
                    }
                    act.step_done(ctx);
                }));
            }
        }
    }

    fn step_done(&mut self, ctx: &mut Context<Self>) {
        if let Some(role) = self.cluster.as_mut() {
            role.busy = false;
        }
        self.next_step(ctx);
    }

    /// `ns`'s state is read: run it, or let it go if it was handed over meanwhile.
    fn acquired(&mut self, ns: String, state: crate::storage::state::NamespaceState, ctx: &mut Context<Self>) {
        let Some(role) = self.cluster.as_mut() else { return };
        role.acquiring.remove(&ns);
        if role.deferred.remove(&ns) {
            self.hand_over(ns, ctx);
            return;
        }
        if !role.held.contains(&ns) || self.draining || self.actors.contains_key(ns.as_str()) {
            return;
        }
        let Some(cfg) = self.config.namespaces.get(ns.as_str()).map(Arc::clone) else { return };
        let name = Arc::clone(&cfg.name);
        let addr = NamespaceActor::new(cfg, state, Arc::clone(&self.deps)).start();
        self.actors.insert(name, addr);
    }
}
