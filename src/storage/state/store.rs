//! The `StateStore` actor: the one owner of the state in memory, writing it through its
//! backend ([`super::backend`]).
//!
//! Namespace actors send it every change. It applies the change in memory at once and
//! commits it through the backend on a blocking thread; changes that arrive while a commit
//! runs are grouped into the next one (group commit: one fsync for all of them), so a burst of
//! anchors costs a few small writes. A caller that must not go on before its change is
//! durable (an attempt recorded before its driver runs) asks for an acknowledgement. When the
//! backend asks for a compaction, it gets a copy-on-write view of memory in the background.
//! A failed write keeps everything in memory, reports it, and retries; at shutdown the
//! backend's last write leaves the state complete on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::Logger;
use tokio::sync::oneshot;

use super::backend::{Change, Namespaces, StateBackend, StoreError};
use super::{CadenceState, NamespaceState};
use crate::metrics::Metrics;
use crate::model::CadenceKind;
use crate::model::Ping;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{
    StateFlushRetried, StateFoldFailed, StateSnapshotWritten, StateWritableAgain, StateWriteFailed, StateWriteSucceeded,
};

/// Outcome of a state write, as the store reports it to whoever watches its health.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StateWritten(pub Result<(), String>);

/// How long to wait before retrying a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest a [`Hold`] keeps commits back, should its [`Release`] never come: every change
/// is still written, only not all in one commit.
const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// An acknowledgement: `Ok` once the change is durable.
pub type Ack = oneshot::Sender<Result<(), String>>;

/// Owns the state in memory and writes it through its backend.
pub struct StateStore {
    backend: Arc<dyn StateBackend>,
    namespaces: Namespaces,
    /// Changes not yet committed, and who waits for them.
    queued: Vec<Change>,
    /// (namespace, who waits for its change).
    waiting: Vec<(Arc<str>, Ack)>,
    committing: bool,
    compacting: bool,
    retry_pending: bool,
    /// Shutdown asked for the last write; answered once done (or found impossible).
    flushing: Vec<Ack>,
    /// The shutdown's last write is done: a change after it (an attempt record acknowledged
    /// while the drain ended) is committed and then folded in by another last write, so a
    /// clean stop still leaves the state file alone.
    closed: bool,
    /// A last write is owed to fold a change committed after the shutdown's.
    refold: bool,
    /// Holds in force ([`Hold`]): no commit starts while there is one.
    holds: std::collections::BTreeSet<u64>,
    /// The namespaces the commit in flight writes.
    inflight: BTreeSet<Arc<str>>,
    /// Namespaces this process let go of ([`Forget`], [`Discard`]): changes to them are refused.
    forgotten: BTreeSet<String>,
    /// Namespaces lost ([`Discard`]): their changes not yet durable are dropped, never retried.
    discarded: BTreeSet<String>,
    /// Who waits for a namespace's changes to be durable ([`Forget`]).
    /// With the state of a namespace let go of ([`Forget`]), for its last write.
    settling: Vec<(String, Ack, Option<Arc<NamespaceState>>)>,
    last_error: Option<String>,
    health: Recipient<StateWritten>,
    metrics: Arc<Metrics>,
    log: Logger,
}

/// Runs `write` on a blocking thread, as every backend call does.
async fn blocking<T: Send + 'static>(write: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(write).await.map_err(|e| format!("writer thread failed: {e}"))
}

impl StateStore {
    /// A store writing through `backend`, holding `namespaces` as the backend loaded them
    /// (see [`super::StateFile::into_shared`]).
    pub fn new(
        backend: Arc<dyn StateBackend>,
        namespaces: Namespaces,
        health: Recipient<StateWritten>,
        metrics: Arc<Metrics>,
        log: Logger,
    ) -> Self {
        Self {
            backend,
            namespaces,
            queued: Vec::new(),
            waiting: Vec::new(),
            committing: false,
            compacting: false,
            retry_pending: false,
            flushing: Vec::new(),
            closed: false,
            refold: false,
            holds: std::collections::BTreeSet::new(),
            inflight: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            discarded: BTreeSet::new(),
            settling: Vec::new(),
            last_error: None,
            health,
            metrics,
            log,
        }
    }

    /// Starts whatever write is due: a commit of queued changes, a compaction, or the last
    /// write of a shutdown. One write runs at a time, except a compaction in the background.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.retry_pending {
            return;
        }
        if self.backend.compaction_due() && !self.compacting && self.flushing.is_empty() {
            self.compact(false, ctx);
        }
        if self.committing {
            return;
        }
        // Held: the changes on their way must land in one commit with those queued.
        if !self.holds.is_empty() && self.flushing.is_empty() {
            return;
        }
        if !self.queued.is_empty() {
            self.commit(ctx);
        } else if (!self.flushing.is_empty() || self.refold) && !self.compacting {
            self.refold = false;
            self.compact(true, ctx);
        }
    }

    fn commit(&mut self, ctx: &mut Context<Self>) {
        self.committing = true;
        let changes = std::mem::take(&mut self.queued);
        self.inflight = changes.iter().map(|c| c.namespace.clone()).collect();
        let waiters: Vec<Ack> = std::mem::take(&mut self.waiting).into_iter().map(|(_, ack)| ack).collect();
        let backend = Arc::clone(&self.backend);
        let started = Instant::now();
        let write = blocking(move || {
            let result = backend.commit(&changes);
            (changes, result)
        });
        ctx.spawn(actix::fut::wrap_future(write).map(move |result, act: &mut Self, ctx| {
            act.committed(result, waiters, started.elapsed(), ctx);
        }));
    }

    fn committed(
        &mut self,
        result: Result<(Vec<Change>, Result<(), StoreError>), String>,
        waiters: Vec<Ack>,
        took: Duration,
        ctx: &mut Context<Self>,
    ) {
        self.committing = false;
        self.inflight.clear();
        let result = match result {
            Ok((_, Ok(()))) => Ok(()),
            Ok((changes, Err(e))) => {
                if matches!(e, StoreError::Fenced { .. }) {
                    self.metrics.fenced_writes.with_label_values(&["state"]).inc();
                }
                // Not durable: put the changes back in front of newer ones and try again,
                // except those of namespaces lost meanwhile.
                let mut again = changes;
                again.retain(|c| !self.discarded.contains(&*c.namespace));
                again.append(&mut self.queued);
                self.queued = again;
                Err(e.to_string())
            }
            Err(e) => Err(e),
        };
        self.written(&result, took, ctx);
        if self.closed && result.is_ok() {
            self.refold = true;
        }
        for w in waiters {
            // The asker may have given up (e.g. its actor stopped); nothing to do then.
            let _ = w.send(result.clone());
        }
        if result.is_err() {
            // A shutdown waiting for everything to be durable learns that it is not.
            for w in std::mem::take(&mut self.flushing) {
                let _ = w.send(result.clone());
            }
        }
        self.settle_ready();
        self.drive(ctx);
    }

    /// Answers whoever waits for a namespace none of whose changes is queued or being
    /// written, and no fold of which is under way.
    fn settle_ready(&mut self) {
        if self.compacting {
            return;
        }
        let (queued, inflight) = (&self.queued, &self.inflight);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.settling)
            .into_iter()
            .partition(|(ns, _, _)| !inflight.contains(ns.as_str()) && !queued.iter().any(|c| *c.namespace == **ns));
        self.settling = waiting;
        for (ns, ack, state) in ready {
            let Some(state) = state else {
                let _ = ack.send(Ok(()));
                continue;
            };
            // Written whole before the namespace goes: its changes may be only in this
            // process's log, which a later fold deletes without it.
            let backend = Arc::clone(&self.backend);
            actix::spawn(async move {
                let written = blocking(move || backend.hand_over(&ns, &state)).await;
                let _ = ack.send(written.and_then(|r| r.map_err(|e| e.to_string())));
            });
        }
    }

    /// Hands the backend a view of memory: in the background when it asks for a compaction,
    /// or as the last write of a shutdown (`last`), which runs alone.
    fn compact(&mut self, last: bool, ctx: &mut Context<Self>) {
        self.compacting = true;
        if last {
            self.committing = true;
        }
        let view = self.namespaces.clone();
        let backend = Arc::clone(&self.backend);
        let started = Instant::now();
        let write = blocking(move || if last { backend.close(&view) } else { backend.compact(&view) });
        ctx.spawn(actix::fut::wrap_future(write).map(move |result, act: &mut Self, ctx| {
            let result = result.and_then(|r| r.map_err(|e| e.to_string()));
            act.compacted(result, last, started.elapsed(), ctx);
        }));
    }

    fn compacted(&mut self, result: Result<u64, String>, last: bool, took: Duration, ctx: &mut Context<Self>) {
        self.compacting = false;
        if last {
            self.committing = false;
        }
        if let Ok(bytes) = result {
            self.emit(StateSnapshotWritten { bytes, took, last });
        }
        let result = result.map(|_| ());
        if last && result.is_ok() {
            self.closed = true;
        }
        if last && let Err(e) = &result {
            // Nothing is lost: every change is committed, and the next start loads it.
            self.emit(StateFoldFailed { path: self.backend.location(), error: e });
        }
        self.written(&result, took, ctx);
        if last {
            for w in std::mem::take(&mut self.flushing) {
                let _ = w.send(Ok(()));
            }
        }
        self.settle_ready();
        self.drive(ctx);
    }

    fn emit(&self, event: impl InternalEvent) {
        event.emit(&self.log, &self.metrics);
    }

    /// Reports the outcome of any write to telemetry and health; schedules a retry.
    fn written(&mut self, result: &Result<(), String>, took: Duration, ctx: &mut Context<Self>) {
        let location = self.backend.location();
        match result {
            Ok(()) => {
                self.emit(StateWriteSucceeded { took });
                if self.last_error.take().is_some() {
                    self.emit(StateWritableAgain { path: location });
                }
            }
            Err(e) => {
                // Tell each distinct error once, not once per retry.
                let repeated = self.last_error.as_ref() == Some(e);
                self.emit(StateWriteFailed { path: location, error: e, took, repeated });
                self.last_error = Some(e.clone());
                if !self.retry_pending {
                    self.retry_pending = true;
                    ctx.run_later(RETRY_AFTER, |act, ctx| {
                        act.retry_pending = false;
                        act.drive(ctx);
                    });
                }
            }
        }
        self.health.do_send(StateWritten(result.clone().map_err(|e| format!("{location}: {e}"))));
    }
}

impl Actor for StateStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A compaction a crash left undone is done without waiting for a change.
        self.drive(ctx);
    }
}

/// Replaces one cadence's state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Update {
    /// Namespace name, shared with its config.
    pub namespace: Arc<str>,
    /// Cadence.
    pub cadence: CadenceKind,
    /// Its new state.
    pub state: Arc<CadenceState>,
    /// Answered once the change is durable, if given.
    pub ack: Option<Ack>,
}

/// Asks for a namespace's state (empty if unknown).
#[derive(Message)]
#[rtype(result = "NamespaceState")]
pub struct GetNamespace(pub String);

/// Lets go of a namespace (cluster mode, before its claim is released): refuses its later
/// changes and drops it from memory, so no later fold carries it; answered once every change
/// made to it before is durable, no fold that holds it is under way, and the backend has
/// written it whole ([`StateBackend::hand_over`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub String, pub Ack);

/// Drops a namespace this process lost without letting go of it (its lease expired, and
/// another process may own it now): its changes not yet durable are dropped rather than
/// committed, it leaves memory, and its later changes are refused. Answered once no write
/// that may hold it is under way; only then may the process write under a new lease.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Discard(pub String, pub Ack);

impl Handler<Discard> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Discard, _: &mut Context<Self>) {
        let Discard(ns, ack) = msg;
        self.namespaces.remove(ns.as_str());
        self.queued.retain(|c| *c.namespace != *ns);
        let (dropped, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|(n, _)| **n == *ns);
        self.waiting = kept;
        for (_, ack) in dropped {
            let _ = ack.send(Err(format!("namespace {ns} was lost to another process; its change was dropped")));
        }
        self.forgotten.insert(ns.clone());
        self.discarded.insert(ns.clone());
        self.settling.push((ns, ack, None));
        self.settle_ready();
    }
}

/// Takes namespaces this process has just come to own: their state as the backend has it
/// now (another process may have written them since this one started), in memory from here
/// on. Every namespace asked for is in the answer, empty if it never had state.
#[derive(Message)]
#[rtype(result = "Result<BTreeMap<String, NamespaceState>, String>")]
pub struct Acquire(pub Vec<String>);

impl Handler<Forget> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        let Forget(ns, ack) = msg;
        let state = self.namespaces.remove(ns.as_str()).unwrap_or_default();
        self.forgotten.insert(ns.clone());
        self.settling.push((ns, ack, Some(state)));
        self.settle_ready();
    }
}

impl Handler<Acquire> for StateStore {
    type Result = ResponseActFuture<Self, Result<BTreeMap<String, NamespaceState>, String>>;
    fn handle(&mut self, msg: Acquire, _: &mut Context<Self>) -> Self::Result {
        let backend = Arc::clone(&self.backend);
        let names = msg.0.clone();
        let load = blocking(move || backend.load_namespaces(&names));
        Box::pin(actix::fut::wrap_future(load).map(move |loaded, act: &mut Self, _| {
            let loaded = loaded.and_then(|r| r.map_err(|e| e.to_string()))?;
            let mut out = BTreeMap::new();
            for ns in msg.0 {
                act.forgotten.remove(&ns);
                act.discarded.remove(&ns);
                let state = match &loaded {
                    Some(found) => {
                        let state = found.get(&ns).cloned().unwrap_or_default();
                        act.namespaces.insert(Arc::from(ns.as_str()), Arc::new(state.clone()));
                        state
                    }
                    None => act.namespaces.get(ns.as_str()).map(|s| (**s).clone()).unwrap_or_default(),
                };
                out.insert(ns, state);
            }
            Ok(out)
        }))
    }
}

/// Makes everything durable and has the backend write its last; answered once done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush(pub Ack);

impl Handler<Update> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Update, ctx: &mut Context<Self>) {
        if self.forgotten.contains(&*msg.namespace) {
            // Another process owns it now: a late change must not reach the shared store.
            if let Some(ack) = msg.ack {
                let _ = ack.send(Err(format!("namespace {} is no longer this process's", msg.namespace)));
            }
            return;
        }
        match self.namespaces.get_mut(&msg.namespace) {
            Some(ns) => {
                Arc::make_mut(ns).cadences.insert(msg.cadence, msg.state.clone());
            }
            None => {
                let mut ns = NamespaceState::default();
                ns.cadences.insert(msg.cadence, msg.state.clone());
                self.namespaces.insert(msg.namespace.clone(), Arc::new(ns));
            }
        }
        if let Some(ack) = msg.ack {
            self.waiting.push((msg.namespace.clone(), ack));
        }
        self.queued.push(Change { namespace: msg.namespace, cadence: msg.cadence, state: msg.state });
        self.drive(ctx);
    }
}

/// Keeps the next commit back until [`Release`] with the same id (or [`HOLD_LIMIT`]), so that
/// changes several actors send meanwhile are committed together: backends commit a commit
/// whole or not at all, so after a crash either all of them are in the state or none. Whoever
/// holds sends its release once every change it waits for has reached the store's mailbox.
/// A shutdown's last write does not wait.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold(pub u64);

/// Ends the [`Hold`] of the same id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub u64);

impl Handler<Hold> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Hold, ctx: &mut Context<Self>) {
        let id = msg.0;
        if self.holds.insert(id) {
            ctx.run_later(HOLD_LIMIT, move |act, ctx| {
                if act.holds.remove(&id) {
                    act.drive(ctx);
                }
            });
        }
    }
}

impl Handler<Release> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        if self.holds.remove(&msg.0) {
            self.drive(ctx);
        }
    }
}

impl Handler<GetNamespace> for StateStore {
    type Result = MessageResult<GetNamespace>;
    fn handle(&mut self, msg: GetNamespace, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.namespaces.get(msg.0.as_str()).map(|ns| (**ns).clone()).unwrap_or_default())
    }
}

impl Handler<Flush> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) {
        // At shutdown a write is tried now, even if a retry is still waiting.
        if self.retry_pending {
            self.emit(StateFlushRetried);
        }
        self.retry_pending = false;
        self.flushing.push(msg.0);
        self.drive(ctx);
    }
}

impl Handler<Ping> for StateStore {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::storage::state::backend::StateBackend;
    use crate::storage::state::file::FileBackend;
    use crate::storage::state::memory::MemoryBackend;
    use crate::storage::state::{Origin, wal};

    /// Collects what the store reports to health.
    #[derive(Default, Clone)]
    struct Reports(Arc<Mutex<Vec<Result<(), String>>>>);

    impl Actor for Reports {
        type Context = Context<Self>;
    }

    impl Handler<StateWritten> for Reports {
        type Result = ();
        fn handle(&mut self, msg: StateWritten, _: &mut Context<Self>) {
            self.0.lock().expect("reports").push(msg.0);
        }
    }

    impl Reports {
        fn seen(&self) -> Vec<Result<(), String>> {
            self.0.lock().expect("reports").clone()
        }
    }

    fn store(backend: Arc<dyn StateBackend>, reports: &Reports, metrics: &Arc<Metrics>) -> Addr<StateStore> {
        let log = Logger::root(slog::Discard, slog::o!());
        let health = reports.clone().start().recipient();
        StateStore::new(backend, Namespaces::new(), health, Arc::clone(metrics), log).start()
    }

    fn update(ns: &str, last: i64) -> (Update, oneshot::Receiver<Result<(), String>>) {
        let (ack, acked) = oneshot::channel();
        let state = CadenceState { last_success_ms: Some(last), ..CadenceState::default() };
        (
            Update {
                namespace: ns.into(),
                cadence: CadenceKind::Fast,
                state: std::sync::Arc::new(state),
                ack: Some(ack),
            },
            acked,
        )
    }

    fn last_of(state: &crate::storage::state::StateFile, ns: &str) -> Option<i64> {
        state.namespaces.get(ns)?.cadences.get(&CadenceKind::Fast)?.last_success_ms
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn changes_made_while_a_commit_runs_are_grouped_into_the_next_commit() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        let release = backend.hold_next_commit();
        let (first, first_acked) = update("a", 1);
        store.do_send(first);
        wait_until("the first commit to begin", || backend.begun() == 1).await;
        let mut acks = Vec::new();
        for i in 2..6 {
            let (msg, acked) = update(&format!("n{i}"), i);
            store.do_send(msg);
            acks.push(acked);
        }
        release.send(()).expect("release the first commit");
        first_acked.await.expect("answered").expect("durable");
        for acked in acks {
            acked.await.expect("answered").expect("durable");
        }
        let sizes: Vec<usize> = backend.commits().iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 4], "the four changes made meanwhile shared one commit");
        let names: Vec<String> = backend.commits()[1].iter().map(|c| c.namespace.to_string()).collect();
        assert_eq!(names, ["n2", "n3", "n4", "n5"], "in the order they were made");
    }

    #[actix_rt::test]
    async fn forgetting_a_namespace_waits_for_its_commit_in_flight_then_refuses_its_changes_and_leaves_it_out() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        let release = backend.hold_next_commit();
        let (first, first_acked) = update("x", 1);
        store.do_send(first);
        wait_until("the commit to begin", || backend.begun() == 1).await;
        let (ack, mut forgotten) = oneshot::channel();
        store.send(Forget("x".into(), ack)).await.expect("store answers");
        store.send(Ping).await.expect("store answers");
        assert!(forgotten.try_recv().is_err(), "not answered while x's commit is in flight");
        release.send(()).expect("release the commit");
        first_acked.await.expect("answered").expect("durable");
        forgotten.await.expect("answered").expect("settled");
        let (late, late_acked) = update("x", 2);
        store.do_send(late);
        let refused = late_acked.await.expect("answered").expect_err("refused");
        assert!(refused.contains("no longer this process's"), "{refused}");
        assert_eq!(store.send(GetNamespace("x".into())).await.expect("answers"), NamespaceState::default());
        let (ack, flushed) = oneshot::channel();
        store.do_send(Flush(ack));
        flushed.await.expect("answered").expect("flushed");
        assert!(backend.closed().iter().all(|view| !view.contains_key("x")), "no fold carries it");
        assert_eq!(backend.commits().len(), 1, "the late change never reached the store");
    }

    #[actix_rt::test]
    async fn a_lost_namespace_is_discarded_its_failed_commit_never_retried_and_others_still_written() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        // x's change is being written (under the lease that is about to be gone) ...
        let release = backend.hold_next_commit();
        let (x1, _) = update("x", 1);
        store.do_send(x1);
        wait_until("the commit to begin", || backend.begun() == 1).await;
        // ... and more of x and of y wait behind it.
        let (x2, x2_acked) = update("x", 2);
        let (y1, y1_acked) = update("y", 1);
        store.do_send(x2);
        store.do_send(y1);
        let (ack, mut discarded) = oneshot::channel();
        store.send(Discard("x".into(), ack)).await.expect("store answers");
        store.send(Ping).await.expect("store answers");
        assert!(discarded.try_recv().is_err(), "not answered while a write holding x runs");
        // The store refuses the write under the expired lease.
        backend.fail(true);
        release.send(()).expect("release the commit");
        discarded.await.expect("answered").expect("no write holds x any more");
        backend.fail(false);
        y1_acked.await.expect("answered").expect("y is still written");
        let written: Vec<String> = backend.commits().iter().flatten().map(|c| c.namespace.to_string()).collect();
        assert_eq!(written, ["y"], "nothing of x is written after it was lost: {written:?}");
        let told = x2_acked.await.expect("answered").expect_err("not durable");
        assert!(told.contains("was lost"), "{told}");
        assert_eq!(store.send(GetNamespace("x".into())).await.expect("answers"), NamespaceState::default());
    }

    #[actix_rt::test]
    async fn acquiring_a_namespace_takes_its_state_as_the_shared_store_has_it_now() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        let (ack, forgotten) = oneshot::channel();
        store.do_send(Forget("x".into(), ack));
        forgotten.await.expect("answered").expect("settled");
        // Another process owned x meanwhile and wrote it.
        let theirs = CadenceState { last_success_ms: Some(5), ..CadenceState::default() };
        backend
            .commit(&[Change { namespace: "x".into(), cadence: CadenceKind::Fast, state: std::sync::Arc::new(theirs) }])
            .expect("commit");
        let got = store.send(Acquire(vec!["x".into(), "never".into()])).await.expect("answers").expect("loaded");
        let unknown = got.get("never").cloned();
        let got = got.get("x").cloned().expect("x answered");
        assert_eq!(got.cadences.get(&CadenceKind::Fast).and_then(|c| c.last_success_ms), Some(5));
        assert_eq!(store.send(GetNamespace("x".into())).await.expect("answers"), got, "in memory from here on");
        let (mine, acked) = update("x", 6);
        store.do_send(mine);
        acked.await.expect("answered").expect("owned again: changes are taken");
        assert_eq!(unknown, Some(NamespaceState::default()), "one never written is answered empty");
    }

    #[actix_rt::test]
    async fn changes_sent_while_held_are_committed_together_once_released() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        store.do_send(Hold(1));
        let mut acks = Vec::new();
        for i in 0..5 {
            let (msg, acked) = update(&format!("m{i}"), i);
            // Each one goes in on its own, as members' actors send theirs.
            store.send(msg).await.expect("store answers");
            acks.push(acked);
        }
        assert_eq!(backend.begun(), 0, "nothing is committed while held");
        store.do_send(Release(1));
        for acked in acks {
            acked.await.expect("answered").expect("durable");
        }
        let sizes: Vec<usize> = backend.commits().iter().map(Vec::len).collect();
        assert_eq!(sizes, [5], "the five changes made while held are one commit");
        // Released, the store commits each change as it comes again.
        let (msg, acked) = update("after", 9);
        store.do_send(msg);
        acked.await.expect("answered").expect("durable");
        assert_eq!(backend.commits().len(), 2);
    }

    #[actix_rt::test]
    async fn a_failed_commit_is_answered_with_its_error_reported_and_retried_until_it_is_durable() {
        let backend = MemoryBackend::default();
        let reports = Reports::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &reports, &metrics);
        backend.fail(true);
        let (msg, acked) = update("a", 1);
        store.do_send(msg);
        let e = acked.await.expect("answered").expect_err("a failed commit is not acknowledged");
        assert!(e.contains("told to fail"), "{e}");
        wait_until("the failure to reach health", || !reports.seen().is_empty()).await;
        assert_eq!(reports.seen()[0], Err("memory: memory: told to fail".into()));
        assert_eq!(metrics.state_writes.with_label_values(&["failure"]).get(), 1);
        // The change stays in memory for whoever asks, though it is not durable yet.
        let held = store.send(GetNamespace("a".into())).await.expect("answered");
        assert_eq!(held.cadences.get(&CadenceKind::Fast).and_then(|c| c.last_success_ms), Some(1));

        backend.fail(false);
        wait_until("the retry to commit the change", || !backend.commits().is_empty()).await;
        let restarted = backend.clone().load().expect("loads").state;
        assert_eq!(last_of(&restarted, "a"), Some(1));
        wait_until("health to hear of it", || reports.seen().last() == Some(&Ok(()))).await;
        assert_eq!(metrics.state_writes.with_label_values(&["success"]).get(), 1);
    }

    #[actix_rt::test]
    async fn a_shutdown_commits_what_is_queued_then_closes_with_every_change() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        for i in 0..3 {
            store.do_send(update(&format!("n{i}"), i).0);
        }
        let (ack, flushed) = oneshot::channel();
        store.do_send(Flush(ack));
        flushed.await.expect("answered").expect("flushed");
        let committed: usize = backend.commits().iter().map(Vec::len).sum();
        assert_eq!(committed, 3, "every change was committed before the close");
        let closed = backend.closed();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].keys().map(|k| &**k).collect::<Vec<_>>(), ["n0", "n1", "n2"]);
    }

    #[actix_rt::test]
    async fn a_change_after_the_shutdowns_last_write_is_folded_in_by_another() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        store.do_send(update("n0", 0).0);
        let (ack, flushed) = oneshot::channel();
        store.do_send(Flush(ack));
        flushed.await.expect("answered").expect("flushed");
        let (late, acked) = update("n1", 1);
        store.do_send(late);
        acked.await.expect("answered").expect("durable");
        wait_until("a second last write", || backend.closed().len() == 2).await;
        assert_eq!(backend.closed()[1].keys().map(|k| &**k).collect::<Vec<_>>(), ["n0", "n1"]);
    }

    #[actix_rt::test]
    async fn a_shutdown_while_commits_fail_is_told_that_they_do() {
        let backend = MemoryBackend::default();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let store = store(Arc::new(backend.clone()), &Reports::default(), &metrics);
        backend.fail(true);
        store.do_send(update("a", 1).0);
        let (ack, flushed) = oneshot::channel();
        store.do_send(Flush(ack));
        let e = flushed.await.expect("answered").expect_err("nothing durable");
        assert!(e.contains("told to fail"), "{e}");
        assert!(backend.closed().is_empty());
    }

    #[actix_rt::test]
    async fn changes_are_durable_when_acknowledged_and_the_log_is_folded_into_snapshots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/s.json");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("state dir");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let mut backend = FileBackend::new(path.clone()).compact_after(4096);
        backend.load().expect("loads");
        let store = store(Arc::new(backend), &Reports::default(), &metrics);
        for i in 0..400 {
            let (msg, acked) = update(&format!("ns{}", i % 40), i);
            store.do_send(msg);
            acked.await.expect("answered").expect("durable");
            // Acknowledged means on disk: a restart now would see it.
            if i % 97 == 0 {
                let (loaded, _) = crate::storage::state::load(&path).expect("loads");
                assert_eq!(last_of(&loaded, &format!("ns{}", i % 40)), Some(i), "change {i}");
            }
        }
        // 400 records are far more than 4 KiB: the log was rotated and folded at least once.
        wait_until("a snapshot", || path.exists() && !wal::rotated_path(&path).exists()).await;
        let (snapshot, origin) =
            crate::storage::state::parse(&std::fs::read(&path).expect("snapshot")).expect("parses");
        assert_eq!(origin, Origin::Current);
        assert_eq!(snapshot.namespaces.len(), 40, "the snapshot holds every namespace");
        let (loaded, _) = crate::storage::state::load(&path).expect("loads");
        for n in 0..40 {
            assert_eq!(last_of(&loaded, &format!("ns{n}")), Some(360 + n), "ns{n}");
        }
        // A shutdown leaves the state file complete and no log.
        let (ack, flushed) = oneshot::channel();
        store.do_send(Flush(ack));
        flushed.await.expect("answered").expect("flushed");
        assert!(!wal::path(&path).exists() && !wal::rotated_path(&path).exists());
        let (alone, _) = crate::storage::state::parse(&std::fs::read(&path).expect("snapshot")).expect("parses");
        assert_eq!(alone, loaded);
    }
}
