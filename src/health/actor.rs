//! The `HealthActor`: collects status from the namespace actors, the supervisor and the
//! state store, and answers /health, /readyz and /livez from memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde::ser::SerializeMap as _;

use super::{
    CadenceSnapshot, NamespaceSnapshot, NamespaceStatus, OverallStatus, ServiceSignals, cadence_stale,
    namespace_status, overall_status,
};
use crate::batch::{ReaderMonitor, ReaderReport};
use crate::clock::{Clock, MonoMs, WallMs};
use crate::model::Ping;
use crate::state::store::StateWritten;

/// The running config, as shown in /health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReport {
    /// Namespaces file.
    pub path: String,
    /// Its SHA-256.
    pub hash: String,
    /// Targets file, if any.
    pub targets_path: Option<String>,
    /// Its SHA-256.
    pub targets_hash: Option<String>,
    /// When this config was loaded (Unix ms).
    pub loaded_at_ms: WallMs,
    /// The last change seen on disk and what became of it.
    pub last_reload: Option<ReloadReport>,
}

/// The outcome of the last config change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// `success` or `failure`.
    pub result: &'static str,
    /// When (Unix ms).
    pub at_ms: WallMs,
    /// SHA-256 of the namespaces file that was read.
    pub hash: String,
    /// Every problem, one line each (empty on success).
    pub errors: Vec<String>,
}

/// The state file, as shown in /health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    /// The state file.
    pub path: String,
    /// How it was found at start-up: fresh, current or migrated.
    pub origin: String,
    /// Last successful write (Unix ms).
    pub last_write_ms: Option<WallMs>,
    /// The last write's error, while writes fail.
    pub error: Option<String>,
}

/// Collects and judges status.
pub struct HealthActor {
    clock: Arc<dyn Clock>,
    started_mono: MonoMs,
    tick: Duration,
    anchor_timeout: Duration,
    namespaces: BTreeMap<String, Arc<NamespaceSnapshot>>,
    last_tick: Option<(WallMs, MonoMs)>,
    config: ConfigReport,
    state: StateReport,
    ready: bool,
    draining: bool,
    batches: Option<ReaderMonitor>,
}

impl HealthActor {
    /// A health actor; `tick` and `anchor_timeout` set the stall and staleness thresholds.
    pub fn new(
        clock: Arc<dyn Clock>,
        tick: Duration,
        anchor_timeout: Duration,
        config: ConfigReport,
        state: StateReport,
    ) -> Self {
        let started_mono = clock.mono_ms();
        Self {
            clock,
            started_mono,
            tick,
            anchor_timeout,
            namespaces: BTreeMap::new(),
            last_tick: None,
            config,
            state,
            ready: false,
            draining: false,
            batches: None,
        }
    }

    /// Reports the batch reader's condition too: stuck reads degrade the service, a reader
    /// that cannot go on makes it unhealthy.
    pub fn with_batch_reader(mut self, monitor: ReaderMonitor) -> Self {
        self.batches = Some(monitor);
        self
    }

    fn tick_stalled(&self, now_mono: MonoMs) -> bool {
        let limit = i64::try_from(self.tick.as_millis()).unwrap_or(i64::MAX).saturating_mul(3).saturating_add(5_000);
        let since = self.last_tick.map_or(self.started_mono, |(_, m)| m);
        now_mono.saturating_sub(since) > limit
    }

    /// The /health answer. Only cheap work happens here, on the actors' thread: statuses and
    /// `Arc` clones of the snapshots; the JSON is written by whoever serializes the body.
    fn report(&self) -> HealthResponse {
        let now = self.clock.wall_ms();
        let now_mono = self.clock.mono_ms();
        let namespaces: Vec<(Arc<NamespaceSnapshot>, NamespaceStatus)> = self
            .namespaces
            .values()
            .map(|ns| (Arc::clone(ns), namespace_status(ns, now, self.anchor_timeout)))
            .collect();
        let statuses: Vec<NamespaceStatus> = namespaces.iter().map(|(_, s)| *s).collect();
        let batch_reader = self.batches.as_ref().map(ReaderMonitor::report);
        let signals = ServiceSignals {
            tick_stalled: self.tick_stalled(now_mono),
            reload_failed: self.config.last_reload.as_ref().is_some_and(|r| r.result == "failure"),
            state_failing: self.state.error.is_some(),
            draining: self.draining,
            batches_stuck: batch_reader.as_ref().is_some_and(|r| !r.stuck.is_empty()),
            batches_blocked: batch_reader.as_ref().is_some_and(|r| r.error.is_some()),
        };
        let status = overall_status(&statuses, signals);
        let code = if status == OverallStatus::Unhealthy { 503 } else { 200 };
        let body = HealthBody {
            status,
            uptime: (now_mono - self.started_mono) as f64 / 1000.0,
            last_tick: self.last_tick.map(|(w, _)| w),
            now_ms: now,
            ready: self.ready && !self.draining,
            draining: self.draining,
            config: self.config.clone(),
            state: self.state.clone(),
            namespaces,
            anchor_timeout: self.anchor_timeout,
            batch_reader,
        };
        HealthResponse { code, body }
    }
}

/// The /health document. Keys are written in sorted order, as the JSON object it replaced
/// had them.
#[derive(Debug, Clone)]
pub struct HealthBody {
    status: OverallStatus,
    uptime: f64,
    last_tick: Option<WallMs>,
    // The server's clock, so readers (the status page, `vmsh-scheduler status`) compute ages
    // and due times without trusting their own clock.
    now_ms: WallMs,
    ready: bool,
    draining: bool,
    config: ConfigReport,
    state: StateReport,
    namespaces: Vec<(Arc<NamespaceSnapshot>, NamespaceStatus)>,
    anchor_timeout: Duration,
    batch_reader: Option<ReaderReport>,
}

impl Serialize for HealthBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(12))?;
        m.serialize_entry("batchReader", &self.batch_reader)?;
        m.serialize_entry("config", &self.config)?;
        m.serialize_entry("draining", &self.draining)?;
        m.serialize_entry("lastTick", &self.last_tick)?;
        m.serialize_entry("namespaces", &NamespacesView(self))?;
        m.serialize_entry("nowMs", &self.now_ms)?;
        m.serialize_entry("ready", &self.ready)?;
        m.serialize_entry("service", super::SERVICE)?;
        m.serialize_entry("state", &self.state)?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("uptime", &self.uptime)?;
        m.serialize_entry("version", crate::VERSION)?;
        m.end()
    }
}

struct NamespacesView<'a>(&'a HealthBody);

impl Serialize for NamespacesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = self.0;
        let mut m = serializer.serialize_map(Some(body.namespaces.len()))?;
        for (ns, status) in &body.namespaces {
            m.serialize_entry(&ns.name, &NamespaceView { ns, status: *status, body })?;
        }
        m.end()
    }
}

/// One namespace: the seed's fields (`lastAnchor`, `backoff`, `status`) and its cadences.
struct NamespaceView<'a> {
    ns: &'a NamespaceSnapshot,
    status: NamespaceStatus,
    body: &'a HealthBody,
}

impl Serialize for NamespaceView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Cadences by name (cold, fast, strong), as a sorted object lists them.
        let mut sorted: Vec<_> = self.ns.cadences.iter().collect();
        sorted.sort_by_key(|(k, _)| k.as_str());
        let backoff = self.ns.cadences.values().map(|c| c.backoff).max().unwrap_or(0);
        let (now, timeout) = (self.body.now_ms, self.body.anchor_timeout);
        let cadences: Vec<(&str, CadenceView<'_>)> = sorted
            .iter()
            .map(|(k, c)| (k.as_str(), CadenceView { status: cadence_status(c, now, timeout), snapshot: c }))
            .collect();
        let last_anchor: Vec<(&str, i64)> =
            sorted.iter().filter_map(|(k, c)| c.last_success_ms.map(|t| (k.as_str(), t.div_euclid(1000)))).collect();
        let mut m = serializer.serialize_map(Some(4))?;
        m.serialize_entry("backoff", &backoff)?;
        m.serialize_entry("cadences", &Pairs(&cadences))?;
        m.serialize_entry("lastAnchor", &Pairs(&last_anchor))?;
        m.serialize_entry("status", &self.status)?;
        m.end()
    }
}

/// A list of pairs written as a JSON object.
struct Pairs<'a, V>(&'a [(&'a str, V)]);

impl<V: Serialize> Serialize for Pairs<'_, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A cadence in /health: its snapshot plus its own status, so the status page can colour each
/// cadence and not only the namespace.
#[derive(Serialize)]
struct CadenceView<'a> {
    #[serde(flatten)]
    snapshot: &'a CadenceSnapshot,
    status: NamespaceStatus,
}

/// One cadence judged alone, by the rules a namespace is judged by.
fn cadence_status(c: &CadenceSnapshot, now: WallMs, anchor_timeout: Duration) -> NamespaceStatus {
    if cadence_stale(c, now, anchor_timeout) {
        NamespaceStatus::Stale
    } else if c.backoff > 0 {
        NamespaceStatus::BackingOff
    } else {
        NamespaceStatus::Ok
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;
}

/// The /health answer.
#[derive(Debug, Clone)]
pub struct HealthResponse {
    /// 200 when healthy or degraded, 503 when unhealthy.
    pub code: u16,
    /// The JSON document, to serialize off the actors' thread.
    pub body: HealthBody,
}

/// A namespace actor's latest status.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NamespaceUpdate(pub NamespaceSnapshot);

/// A namespace left the config.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NamespaceRemoved(pub String);

/// The supervisor's config tick ran.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// A config (initial or reloaded) is running.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigApplied(pub ConfigReport);

/// A config change on disk was rejected; the old config keeps running.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadRejected {
    /// SHA-256 of the rejected namespaces file.
    pub hash: String,
    /// Every problem, one line each.
    pub errors: Vec<String>,
}

/// Start-up finished: config and state loaded, actors started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetReady;

/// Shutdown began.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDraining;

/// Asks for the /health answer.
#[derive(Message)]
#[rtype(result = "HealthResponse")]
pub struct GetHealth;

/// Asks whether the service is ready, and why not.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct GetReady;

impl Handler<NamespaceUpdate> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: NamespaceUpdate, _: &mut Context<Self>) {
        self.namespaces.insert(msg.0.name.clone(), Arc::new(msg.0));
    }
}

impl Handler<NamespaceRemoved> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: NamespaceRemoved, _: &mut Context<Self>) {
        self.namespaces.remove(&msg.0);
    }
}

impl Handler<Tick> for HealthActor {
    type Result = ();
    fn handle(&mut self, _: Tick, _: &mut Context<Self>) {
        self.last_tick = Some((self.clock.wall_ms(), self.clock.mono_ms()));
    }
}

impl Handler<ConfigApplied> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: ConfigApplied, _: &mut Context<Self>) {
        self.config = msg.0;
    }
}

impl Handler<ReloadRejected> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: ReloadRejected, _: &mut Context<Self>) {
        self.config.last_reload =
            Some(ReloadReport { result: "failure", at_ms: self.clock.wall_ms(), hash: msg.hash, errors: msg.errors });
    }
}

impl Handler<StateWritten> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: StateWritten, _: &mut Context<Self>) {
        match msg.0 {
            Ok(()) => {
                self.state.last_write_ms = Some(self.clock.wall_ms());
                self.state.error = None;
            }
            Err(e) => self.state.error = Some(e),
        }
    }
}

impl Handler<SetReady> for HealthActor {
    type Result = ();
    fn handle(&mut self, _: SetReady, _: &mut Context<Self>) {
        self.ready = true;
    }
}

impl Handler<SetDraining> for HealthActor {
    type Result = ();
    fn handle(&mut self, _: SetDraining, _: &mut Context<Self>) {
        self.draining = true;
    }
}

impl Handler<GetHealth> for HealthActor {
    type Result = MessageResult<GetHealth>;
    fn handle(&mut self, _: GetHealth, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.report())
    }
}

impl Handler<GetReady> for HealthActor {
    type Result = Result<(), String>;
    fn handle(&mut self, _: GetReady, _: &mut Context<Self>) -> Self::Result {
        if self.draining {
            Err("shutting down".into())
        } else if !self.ready {
            Err("starting: config, state or actors not ready yet".into())
        } else {
            Ok(())
        }
    }
}

impl Handler<Ping> for HealthActor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}
