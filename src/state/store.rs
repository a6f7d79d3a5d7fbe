//! The `StateStore` actor: the one owner of the state file.
//!
//! Namespace actors send it every change. It keeps the whole state in memory and writes it
//! atomically; changes that arrive while a write is running are grouped into the next write
//! (group commit), so a burst of anchors costs a few writes, not one each. A caller that must
//! not go on before its change is on disk (an attempt recorded before its driver runs) asks
//! for an acknowledgement. A failed write keeps everything in memory, reports it, and retries.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{Logger, error, info};
use tokio::sync::oneshot;

use super::{CadenceState, NamespaceState, StateFile, encode};
use crate::config::CadenceKind;
use crate::durable::{PRIVATE_FILE, write_atomic};
use crate::health::actor::{HealthActor, Ping, StateWritten};
use crate::metrics::Metrics;

/// How long to wait before retrying a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An acknowledgement: `Ok` once the change is on disk.
pub type Ack = oneshot::Sender<Result<(), String>>;

/// Owns and writes the state file.
pub struct StateStore {
    path: PathBuf,
    state: StateFile,
    dirty: bool,
    writing: bool,
    retry_pending: bool,
    last_error: Option<String>,
    waiting: Vec<Ack>,
    health: Addr<HealthActor>,
    metrics: Arc<Metrics>,
    log: Logger,
}

impl StateStore {
    /// A store for `path` holding `state` as loaded at start-up.
    pub fn new(path: PathBuf, state: StateFile, health: Addr<HealthActor>, metrics: Arc<Metrics>, log: Logger) -> Self {
        Self {
            path,
            state,
            dirty: false,
            writing: false,
            retry_pending: false,
            last_error: None,
            waiting: Vec::new(),
            health,
            metrics,
            log,
        }
    }

    fn maybe_write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.retry_pending || !self.dirty {
            return;
        }
        self.writing = true;
        self.dirty = false;
        let waiters = std::mem::take(&mut self.waiting);
        let bytes = encode(&self.state);
        let path = self.path.clone();
        let started = Instant::now();
        let write = async move {
            match tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, PRIVATE_FILE)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("writer thread failed: {e}")),
            }
        };
        ctx.spawn(actix::fut::wrap_future(write).map(move |result, act: &mut Self, ctx| {
            act.write_done(result, waiters, started.elapsed(), ctx);
        }));
    }

    fn write_done(&mut self, result: Result<(), String>, waiters: Vec<Ack>, took: Duration, ctx: &mut Context<Self>) {
        self.writing = false;
        self.metrics.state_write_duration.observe(took.as_secs_f64());
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics.state_writes.with_label_values(&[label]).inc();
        match &result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(self.log, "state file writable again"; "path" => %self.path.display());
                }
            }
            Err(e) => {
                // Log each distinct error once, not once per retry.
                if self.last_error.as_ref() != Some(e) {
                    error!(self.log, "cannot write state file; keeping state in memory and retrying";
                        "path" => %self.path.display(), "err" => %e);
                }
                self.last_error = Some(e.clone());
                self.dirty = true;
                self.retry_pending = true;
                ctx.run_later(RETRY_AFTER, |act, ctx| {
                    act.retry_pending = false;
                    act.maybe_write(ctx);
                });
            }
        }
        self.health.do_send(StateWritten(result.clone().map_err(|e| format!("{}: {e}", self.path.display()))));
        for w in waiters {
            // The asker may have given up (e.g. its actor stopped); nothing to do then.
            let _ = w.send(result.clone());
        }
        self.maybe_write(ctx);
    }
}

impl Actor for StateStore {
    type Context = Context<Self>;
}

/// Replaces one cadence's state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Update {
    /// Namespace name.
    pub namespace: String,
    /// Cadence.
    pub cadence: CadenceKind,
    /// Its new state.
    pub state: CadenceState,
    /// Answered once the change is on disk, if given.
    pub ack: Option<Ack>,
}

/// Asks for a namespace's state (empty if unknown).
#[derive(Message)]
#[rtype(result = "NamespaceState")]
pub struct GetNamespace(pub String);

/// Writes everything now; answered once it is on disk.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush(pub Ack);

impl Handler<Update> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Update, ctx: &mut Context<Self>) {
        self.state.namespaces.entry(msg.namespace).or_default().cadences.insert(msg.cadence, msg.state);
        self.dirty = true;
        if let Some(ack) = msg.ack {
            self.waiting.push(ack);
        }
        self.maybe_write(ctx);
    }
}

impl Handler<GetNamespace> for StateStore {
    type Result = MessageResult<GetNamespace>;
    fn handle(&mut self, msg: GetNamespace, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.namespaces.get(&msg.0).cloned().unwrap_or_default())
    }
}

impl Handler<Flush> for StateStore {
    type Result = ();
    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) {
        // Always write: at shutdown the file must reflect memory even if nothing changed
        // since a failed write.
        self.dirty = true;
        self.retry_pending = false;
        self.waiting.push(msg.0);
        self.maybe_write(ctx);
    }
}

impl Handler<Ping> for StateStore {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}
