//! The `HealthActor`: collects status from the namespace actors, the supervisor and the
//! state store, and answers /health, /readyz and /livez from memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde::ser::SerializeMap as _;

use super::contract::Cluster as ClusterReport;
use super::fleet::{self, Ledger};
use super::{
    CadenceSnapshot, NamespaceSnapshot, NamespaceStatus, OverallStatus, ServiceSignals, StatusCounts, cadence_status,
    overall_status_of,
};
use crate::batch::{ReaderMonitor, ReaderReport};
use crate::clock::{Clock, MonoMs, WallMs};
use crate::cluster::actor::ClusterUpdate;
use crate::metrics::fleet::{FleetBoard, Mode};
use crate::metrics::lanes::{LaneBoard, LaneStatus};
use crate::metrics::{TsaBoard, TsaUrlStatus};
use crate::model::{Ping, Target};
use crate::storage::state::store::StateWritten;
use slog::Logger;

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
    namespaces: BTreeMap<Arc<str>, Arc<NamespaceSnapshot>>,
    /// When to rebuild `namespaces` packed.
    packing: crate::heap::Packing,
    last_tick: Option<(WallMs, MonoMs)>,
    config: ConfigReport,
    state: StateReport,
    ready: bool,
    draining: bool,
    batches: Option<ReaderMonitor>,
    /// The rfc3161 drivers' board of TSA URLs, once start-up hands it over.
    tsa: Option<Arc<TsaBoard>>,
    /// Cluster mode: the last round's report and until when (monotonic ms) the lease holds.
    cluster: Option<(ClusterReport, MonoMs)>,
    /// The admin API, when it is on: why its token file on disk is refused, if it is.
    admin: Option<AdminReport>,
    /// The anchor pool's lanes, once start-up hands their board over.
    lanes: Option<Arc<LaneBoard>>,
    /// Where fleet mode's metrics take the judgement of the fleet, the log that says when the
    /// mode changes, and the mode last said.
    fleet: Option<(Arc<FleetBoard>, Logger, Mode)>,
    /// A publication of the judgement is due shortly ([`HealthActor::judge_soon`]).
    judge_pending: bool,
    /// Every namespace's status, kept as they report.
    ledger: Ledger,
}

/// How soon after namespaces report their judgement is published to the metrics.
const JUDGE_SOON: Duration = Duration::from_millis(100);

/// Whether `name` contains `query` (already lower case), in any case; without allocating
/// for ASCII names, which most are.
fn contains_folded(name: &str, query: &str) -> bool {
    if name.is_ascii() && query.is_ascii() {
        let (name, query) = (name.as_bytes(), query.as_bytes());
        return query.is_empty() || name.windows(query.len()).any(|w| w.eq_ignore_ascii_case(query));
    }
    name.to_lowercase().contains(query)
}

/// The admin API, as /health shows it (only when it is on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AdminReport {
    /// Why the token file on disk is not in force (the tokens read before are); null when it is.
    pub token_file_error: Option<String>,
}

/// The admin API is on; its token file is in force, or refused for this reason.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct AdminTokensReport(pub Option<String>);

impl Handler<AdminTokensReport> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: AdminTokensReport, _: &mut Context<Self>) {
        self.admin = Some(AdminReport { token_file_error: msg.0 });
    }
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
            packing: crate::heap::Packing::default(),
            last_tick: None,
            config,
            state,
            ready: false,
            draining: false,
            batches: None,
            tsa: None,
            cluster: None,
            admin: None,
            lanes: None,
            fleet: None,
            judge_pending: false,
            ledger: Ledger::default(),
        }
    }

    /// Judges the fleet for fleet mode's metrics on every config tick, and says in `log`
    /// when the mode changes.
    pub fn with_fleet(mut self, board: Arc<FleetBoard>, log: Logger) -> Self {
        // Said at the first tick when it starts in fleet mode.
        self.fleet = Some((board, log, Mode::Namespaces));
        self
    }

    /// Publishes the judgement shortly once namespaces reported: the metrics should not
    /// wait for the next config tick. However many report meanwhile, one publication covers
    /// them.
    fn judge_soon(&mut self, ctx: &mut Context<Self>) {
        if self.fleet.is_none() || self.judge_pending {
            return;
        }
        self.judge_pending = true;
        ctx.run_later(JUDGE_SOON, |act, _| {
            act.judge_pending = false;
            act.publish_fleet();
        });
    }

    /// Publishes the judgement of the fleet to fleet mode's metrics; says so when the mode
    /// changed since the last time.
    fn publish_fleet(&mut self) {
        if self.fleet.is_none() {
            return;
        }
        self.advance(self.clock.wall_ms());
        let Some((board, log, said)) = &mut self.fleet else { return };
        let policy = board.policy();
        let snapshots = &self.namespaces;
        let judged = self.ledger.judged(policy.troubled_max, |name| snapshots.get(name).map(|ns| &**ns));
        let troubled = judged.troubled;
        board.publish(judged);
        let (mode, namespaces) = (board.mode(), board.namespaces());
        if mode != *said {
            *said = mode;
            if mode == Mode::Namespaces {
                board.fill(snapshots.iter().map(|(name, ns)| (Arc::clone(name), fleet::gauges(ns))).collect());
            }
            match mode {
                Mode::Fleet => {
                    slog::info!(log, "metrics in fleet mode: counters by cadence and target, own series only for namespaces not ok; /health answers a summary";
                    "namespaces" => namespaces, "troubled" => troubled, "setting" => policy.setting.as_str(),
                    "fleet_above" => policy.fleet_above, "troubled_max" => policy.troubled_max)
                }
                Mode::Namespaces => slog::info!(log, "metrics per namespace again";
                    "namespaces" => namespaces, "setting" => policy.setting.as_str(), "fleet_above" => policy.fleet_above),
            }
        }
    }

    /// The metrics section of /health, when fleet mode is judged.
    fn metrics_report(&self) -> Option<MetricsReport> {
        let (board, _, _) = self.fleet.as_ref()?;
        let policy = board.policy();
        let judged = board.judged();
        let mode = board.mode();
        Some(MetricsReport {
            mode: mode.as_str(),
            setting: policy.setting.as_str(),
            fleet_above: policy.fleet_above,
            troubled_max: policy.troubled_max,
            troubled: judged.troubled,
            shown: board.shown_count(self.namespaces.len()),
        })
    }

    /// Shows each target's slots (`targets`), as the anchor pool publishes them on `board`;
    /// a saturated target degrades the service.
    pub fn with_lanes(mut self, board: Arc<LaneBoard>) -> Self {
        self.lanes = Some(board);
        self
    }

    /// The cluster section as of now: the lease's figures move with the clock.
    fn cluster_now(&self, now_mono: MonoMs) -> Option<ClusterReport> {
        let (report, valid_until) = self.cluster.as_ref()?;
        let mut report = report.clone();
        let left = valid_until.saturating_sub(now_mono);
        report.lease_valid = left > 0;
        report.lease_valid_for_s = left.max(0) as f64 / 1000.0;
        Some(report)
    }

    /// Reports the batch reader's condition too: stuck reads degrade the service, a reader
    /// that cannot go on makes it unhealthy.
    pub fn with_batch_reader(mut self, monitor: ReaderMonitor) -> Self {
        self.batches = Some(monitor);
        self
    }

    /// Shows each TSA URL's health (`tsa`), as the rfc3161 drivers report it on `board`.
    pub fn with_tsa(mut self, board: Arc<TsaBoard>) -> Self {
        self.tsa = Some(board);
        self
    }

    fn tick_stalled(&self, now_mono: MonoMs) -> bool {
        let limit = i64::try_from(self.tick.as_millis()).unwrap_or(i64::MAX).saturating_mul(3).saturating_add(5_000);
        let since = self.last_tick.map_or(self.started_mono, |(_, m)| m);
        now_mono.saturating_sub(since) > limit
    }

    /// The whole /health answer, for the tests.
    #[cfg(test)]
    fn report(&mut self) -> HealthResponse {
        self.report_as(&View::Default)
    }

    /// Brings the ledger of statuses up to `now`: the namespaces time alone made stale.
    fn advance(&mut self, now: WallMs) {
        let namespaces = &self.namespaces;
        self.ledger.advance(
            now,
            self.anchor_timeout,
            |name| namespaces.get(name).map(|ns| &**ns),
            namespaces.values().map(|ns| &**ns),
        );
    }

    /// A namespace with its status as the ledger judged it.
    fn judged(&self, ns: &Arc<NamespaceSnapshot>) -> (Arc<NamespaceSnapshot>, NamespaceStatus) {
        (Arc::clone(ns), self.ledger.status(&ns.name).unwrap_or(NamespaceStatus::Ok))
    }

    /// The /health answer in one of its views. Only cheap work happens here, on the actors'
    /// thread: statuses and `Arc` clones of the snapshots; the JSON is written by whoever
    /// serializes the body. The overall status is judged on every namespace whatever the
    /// view shows.
    fn report_as(&mut self, view: &View) -> HealthResponse {
        let now = self.clock.wall_ms();
        let now_mono = self.clock.mono_ms();
        self.advance(now);
        let batch_reader = self.batches.as_ref().map(ReaderMonitor::report);
        let cluster = self.cluster_now(now_mono);
        let targets = self.lanes.as_ref().map(|b| b.snapshot()).unwrap_or_default();
        let signals = ServiceSignals {
            tick_stalled: self.tick_stalled(now_mono),
            reload_failed: self.config.last_reload.as_ref().is_some_and(|r| r.result == "failure")
                || self.admin.as_ref().is_some_and(|a| a.token_file_error.is_some()),
            state_failing: self.state.error.is_some(),
            draining: self.draining,
            batches_stuck: batch_reader.as_ref().is_some_and(|r| !r.stuck.is_empty()),
            batches_blocked: batch_reader.as_ref().is_some_and(|r| r.error.is_some()),
            cluster_lease_lost: cluster.as_ref().is_some_and(|c| !c.lease_valid),
            targets_saturated: targets.iter().any(|(_, l)| l.saturated_since.is_some()),
        };
        let counts = StatusCounts {
            total: self.ledger.len(),
            ok: self.ledger.count(NamespaceStatus::Ok),
            stale: self.ledger.count(NamespaceStatus::Stale),
        };
        let status = overall_status_of(counts, signals);
        let metrics = self.metrics_report();
        // In fleet mode the plain /health is the summary: the whole document grows with the fleet.
        let view = match view {
            View::Default if metrics.as_ref().is_some_and(|m| m.mode == "fleet") => &View::Summary,
            View::Default => &View::Full,
            other => other,
        };
        let code = if status == OverallStatus::Unhealthy { 503 } else { 200 };
        let (namespaces, shown) = match view {
            View::Summary => {
                let by_status = self.ledger.by_status().map(|(st, n)| (st.as_str(), n)).collect();
                let worst = self
                    .ledger
                    .worst()
                    .take(WORST_SHOWN)
                    .filter_map(|name| self.namespaces.get(name))
                    .map(|ns| self.judged(ns))
                    .collect();
                (worst, Shown::Summary { total: self.ledger.len(), by_status })
            }
            View::Full | View::Default => (self.namespaces.values().map(|ns| self.judged(ns)).collect(), Shown::All),
        };
        let body = HealthBody {
            status,
            uptime: (now_mono - self.started_mono) as f64 / 1000.0,
            last_tick: self.last_tick.map(|(w, _)| w),
            now_ms: now,
            ready: self.readiness(now_mono).is_ok(),
            draining: self.draining,
            cluster,
            admin: self.admin.clone(),
            config: self.config.clone(),
            state: self.state.clone(),
            namespaces,
            anchor_timeout: self.anchor_timeout,
            batch_reader,
            tsa: self.tsa.as_ref().map(|b| b.snapshot()).unwrap_or_default(),
            targets,
            now_mono,
            metrics,
            shown,
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
    cluster: Option<ClusterReport>,
    admin: Option<AdminReport>,
    config: ConfigReport,
    state: StateReport,
    namespaces: Vec<(Arc<NamespaceSnapshot>, NamespaceStatus)>,
    anchor_timeout: Duration,
    batch_reader: Option<ReaderReport>,
    tsa: Vec<TsaUrlStatus>,
    /// Each target's slots, and the monotonic time they are judged at.
    targets: Vec<(Target, LaneStatus)>,
    now_mono: MonoMs,
    /// How /metrics shows the fleet, when that is judged.
    metrics: Option<MetricsReport>,
    /// How the namespaces are shown: all by name (the default), or a summary.
    shown: Shown,
}

/// The `metrics` section of /health: how /metrics shows the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetricsReport {
    mode: &'static str,
    setting: &'static str,
    fleet_above: usize,
    troubled_max: usize,
    troubled: usize,
    shown: usize,
}

/// Which namespaces /health shows, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// The whole document, or the summary in fleet mode: what a plain `/health` answers.
    Default,
    /// Every namespace, by name: the document as it always was.
    Full,
    /// Counts by status and the worst namespaces, instead of every one.
    Summary,
}

/// How a body shows its namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    /// All of them, under `namespaces`.
    All,
    /// A `summary`: how many in all, how many by status; the worst ones are the body's.
    Summary { total: usize, by_status: BTreeMap<&'static str, usize> },
}

/// How many namespaces a summary lists.
pub(crate) const WORST_SHOWN: usize = 20;

/// A page of namespaces, for `/health/namespaces`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "NamespacesPage")]
pub struct GetNamespaces {
    /// Names containing this text (any case); all when empty.
    pub query: String,
    /// Only namespaces with this status.
    pub status: Option<NamespaceStatus>,
    /// How many matching namespaces to pass over, in name order.
    pub offset: usize,
    /// How many to show at most.
    pub limit: usize,
}

/// One namespace by name, for `/health/namespaces/{name}`; `None` when it is not one.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Option<NamespacesPage>")]
pub struct GetNamespace(pub String);

/// Some namespaces with what they are judged against, ready to serialize off the actors'
/// thread.
#[derive(Debug, Clone)]
pub struct NamespacesPage {
    /// How many matched.
    pub total: usize,
    /// Where the page starts among them.
    pub offset: usize,
    /// The page's size asked for.
    pub limit: usize,
    namespaces: Vec<(Arc<NamespaceSnapshot>, NamespaceStatus)>,
    now_ms: WallMs,
    anchor_timeout: Duration,
}

impl NamespacesPage {
    /// The one namespace of a [`GetNamespace`] answer, as `{"name", …}`.
    pub fn one(&self) -> Option<impl Serialize + '_> {
        self.namespaces.first().map(|(ns, status)| NamespaceView::named(ns, *status, self.now_ms, self.anchor_timeout))
    }
}

impl Serialize for NamespacesPage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list: Vec<NamespaceView<'_>> = self
            .namespaces
            .iter()
            .map(|(ns, status)| NamespaceView::named(ns, *status, self.now_ms, self.anchor_timeout))
            .collect();
        let mut m = serializer.serialize_map(Some(4))?;
        m.serialize_entry("limit", &self.limit)?;
        m.serialize_entry("namespaces", &list)?;
        m.serialize_entry("offset", &self.offset)?;
        m.serialize_entry("total", &self.total)?;
        m.end()
    }
}

impl HealthActor {
    fn page(
        &self,
        namespaces: Vec<(Arc<NamespaceSnapshot>, NamespaceStatus)>,
        total: usize,
        offset: usize,
        limit: usize,
    ) -> NamespacesPage {
        NamespacesPage {
            total,
            offset,
            limit,
            namespaces,
            now_ms: self.clock.wall_ms(),
            anchor_timeout: self.anchor_timeout,
        }
    }
}

impl Handler<GetNamespaces> for HealthActor {
    type Result = MessageResult<GetNamespaces>;
    fn handle(&mut self, msg: GetNamespaces, _: &mut Context<Self>) -> Self::Result {
        self.advance(self.clock.wall_ms());
        let query = msg.query.to_lowercase();
        let ledger = &self.ledger;
        // Names are kept sorted: the page is in name order. Only the page's namespaces are
        // cloned; the others are only counted.
        let matching = self
            .namespaces
            .iter()
            .filter(|(name, _)| query.is_empty() || contains_folded(name, &query))
            .filter(|(name, _)| msg.status.is_none_or(|want| ledger.status(name) == Some(want)));
        let mut total = 0;
        let mut shown = Vec::new();
        for (i, (_, ns)) in matching.enumerate() {
            total += 1;
            if i >= msg.offset && shown.len() < msg.limit {
                shown.push(self.judged(ns));
            }
        }
        MessageResult(self.page(shown, total, msg.offset, msg.limit))
    }
}

impl Handler<GetNamespace> for HealthActor {
    type Result = Option<NamespacesPage>;
    fn handle(&mut self, msg: GetNamespace, _: &mut Context<Self>) -> Self::Result {
        self.advance(self.clock.wall_ms());
        let ns = self.namespaces.get(msg.0.as_str())?;
        Some(self.page(vec![self.judged(ns)], 1, 0, 1))
    }
}

impl Serialize for HealthBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let optional = usize::from(self.cluster.is_some())
            + usize::from(self.admin.is_some())
            + usize::from(self.metrics.is_some());
        let mut m = serializer.serialize_map(Some(14 + optional))?;
        if let Some(admin) = &self.admin {
            m.serialize_entry("admin", admin)?;
        }
        m.serialize_entry("batchReader", &self.batch_reader)?;
        if let Some(cluster) = &self.cluster {
            m.serialize_entry("cluster", cluster)?;
        }
        m.serialize_entry("config", &self.config)?;
        m.serialize_entry("draining", &self.draining)?;
        m.serialize_entry("lastTick", &self.last_tick)?;
        if let Some(metrics) = &self.metrics {
            m.serialize_entry("metrics", metrics)?;
        }
        match &self.shown {
            Shown::All => m.serialize_entry("namespaces", &NamespacesView(self))?,
            Shown::Summary { total, by_status } => {
                let worst: Vec<NamespaceView<'_>> = self
                    .namespaces
                    .iter()
                    .map(|(ns, status)| NamespaceView::named(ns, *status, self.now_ms, self.anchor_timeout))
                    .collect();
                m.serialize_entry("summary", &SummaryView { total: *total, by_status, worst })?;
            }
        }
        m.serialize_entry("nowMs", &self.now_ms)?;
        m.serialize_entry("ready", &self.ready)?;
        m.serialize_entry("service", super::SERVICE)?;
        m.serialize_entry("state", &self.state)?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("targets", &LanesView { lanes: &self.targets, now: self.now_mono })?;
        m.serialize_entry("tsa", &TsaView(&self.tsa))?;
        m.serialize_entry("uptime", &self.uptime)?;
        m.serialize_entry("version", crate::VERSION)?;
        m.end()
    }
}

/// `targets`: each target's slots, as `contract::TargetLane` reads them.
struct LanesView<'a> {
    lanes: &'a [(Target, LaneStatus)],
    now: MonoMs,
}

impl Serialize for LanesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Lane {
            target: String,
            concurrency: usize,
            running: usize,
            queued: usize,
            oldest_wait_s: f64,
            saturated: bool,
            saturated_for_s: Option<f64>,
        }
        let now = self.now;
        serializer.collect_seq(self.lanes.iter().map(|(target, l)| Lane {
            target: target.to_string(),
            concurrency: l.concurrency,
            running: l.running,
            queued: l.queued,
            oldest_wait_s: l.oldest_wait_ms as f64 / 1000.0,
            saturated: l.saturated_since.is_some(),
            saturated_for_s: l.saturated_since.map(|since| now.saturating_sub(since) as f64 / 1000.0),
        }))
    }
}

// -- rfc3161 TSAs --

/// `tsa`: every URL of every rfc3161 entry, as `contract::TsaUrl` reads it.
struct TsaView<'a>(&'a [TsaUrlStatus]);

impl Serialize for TsaView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Url<'a> {
            entry: &'a str,
            url: &'a str,
            up: Option<bool>,
            consecutive_failures: u32,
            last_error: Option<Failure<'a>>,
            last_success_ms: Option<WallMs>,
            cert_not_after_ms: Option<WallMs>,
            tried_last_until_ms: Option<WallMs>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Failure<'a> {
            class: crate::model::ErrorClass,
            message: &'a str,
            at_ms: WallMs,
        }
        serializer.collect_seq(self.0.iter().map(|u| Url {
            entry: &u.entry,
            url: &u.url,
            up: u.up,
            consecutive_failures: u.consecutive_failures,
            last_error: u.last_error.as_ref().map(|e| Failure { class: e.class, message: &e.message, at_ms: e.at_ms }),
            last_success_ms: u.last_success_ms,
            cert_not_after_ms: u.cert_not_after_ms,
            tried_last_until_ms: u.tried_last_until_ms,
        }))
    }
}

// -- end of rfc3161 TSAs --

struct NamespacesView<'a>(&'a HealthBody);

impl Serialize for NamespacesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = self.0;
        let mut m = serializer.serialize_map(Some(body.namespaces.len()))?;
        for (ns, status) in &body.namespaces {
            let view =
                NamespaceView { ns, status: *status, now: body.now_ms, timeout: body.anchor_timeout, named: false };
            m.serialize_entry(&ns.name, &view)?;
        }
        m.end()
    }
}

/// One namespace: the seed's fields (`lastAnchor`, `backoff`, `status`) and its cadences,
/// with its `name` where it is listed rather than keyed by name.
struct NamespaceView<'a> {
    ns: &'a NamespaceSnapshot,
    status: NamespaceStatus,
    /// What its cadences are judged against.
    now: WallMs,
    timeout: Duration,
    named: bool,
}

impl<'a> NamespaceView<'a> {
    fn named(ns: &'a NamespaceSnapshot, status: NamespaceStatus, now: WallMs, timeout: Duration) -> Self {
        Self { ns, status, now, timeout, named: true }
    }
}

impl Serialize for NamespaceView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Cadences by name (cold, fast, strong), as a sorted object lists them.
        let mut sorted: Vec<_> = self.ns.cadences.iter().collect();
        sorted.sort_by_key(|(k, _)| k.as_str());
        let backoff = self.ns.cadences.values().map(|c| c.state.backoff).max().unwrap_or(0);
        let (now, timeout) = (self.now, self.timeout);
        let cadences: Vec<(&str, CadenceView<'_>)> = sorted
            .iter()
            .map(|(k, c)| (k.as_str(), CadenceView { status: cadence_status(c, now, timeout), snapshot: c }))
            .collect();
        let last_anchor: Vec<(&str, i64)> = sorted
            .iter()
            .filter_map(|(k, c)| c.state.last_success_ms.map(|t| (k.as_str(), t.div_euclid(1000))))
            .collect();
        let mut m = serializer.serialize_map(Some(4 + usize::from(self.named)))?;
        m.serialize_entry("backoff", &backoff)?;
        m.serialize_entry("cadences", &Pairs(&cadences))?;
        m.serialize_entry("lastAnchor", &Pairs(&last_anchor))?;
        if self.named {
            m.serialize_entry("name", &self.ns.name)?;
        }
        m.serialize_entry("status", &self.status)?;
        m.end()
    }
}

/// `summary`: the namespaces counted by status, and the worst of them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryView<'a> {
    #[serde(rename = "namespaces")]
    total: usize,
    by_status: &'a BTreeMap<&'static str, usize>,
    worst: Vec<NamespaceView<'a>>,
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

/// Asks for the /health answer, in a view.
#[derive(Message, Debug, Clone)]
#[rtype(result = "HealthResponse")]
pub struct GetHealth(pub View);

/// Asks whether the service is ready, and why not.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct GetReady;

impl Handler<NamespaceUpdate> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: NamespaceUpdate, ctx: &mut Context<Self>) {
        self.ledger.update(&msg.0, self.clock.wall_ms(), self.anchor_timeout);
        self.namespaces.insert(Arc::clone(&msg.0.name), Arc::new(msg.0));
        self.judge_soon(ctx);
    }
}

impl Handler<NamespaceRemoved> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: NamespaceRemoved, ctx: &mut Context<Self>) {
        self.ledger.remove(&msg.0);
        if self.namespaces.remove(msg.0.as_str()).is_some() {
            self.judge_soon(ctx);
        }
    }
}

impl Handler<Tick> for HealthActor {
    type Result = ();
    fn handle(&mut self, _: Tick, _: &mut Context<Self>) {
        self.last_tick = Some((self.clock.wall_ms(), self.clock.mono_ms()));
        if self.packing.pack(&mut self.namespaces) {
            // The fleet grew by a quarter or more: the ledger's spare room goes too.
            self.ledger.shrink_to_fit();
        }
        self.publish_fleet();
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
    fn handle(&mut self, msg: GetHealth, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.report_as(&msg.0))
    }
}

impl HealthActor {
    /// Ready, or why not: what /readyz answers.
    fn readiness(&self, now_mono: MonoMs) -> Result<(), String> {
        if self.draining {
            return Err("shutting down".into());
        }
        if !self.ready {
            return Err("starting: config, state or actors not ready yet".into());
        }
        // A replica whose lease cannot be counted on starts nothing: it is not ready.
        if let Some(c) = self.cluster_now(now_mono)
            && !c.lease_valid
        {
            let why = c.error.unwrap_or_else(|| "etcd has not answered in time".into());
            return Err(format!("cluster: the member lease cannot be counted on, so nothing is started: {why}"));
        }
        Ok(())
    }
}

impl Handler<GetReady> for HealthActor {
    type Result = Result<(), String>;
    fn handle(&mut self, _: GetReady, _: &mut Context<Self>) -> Self::Result {
        self.readiness(self.clock.mono_ms())
    }
}

/// The cadences an operator paused, as their namespaces last reported them.
#[derive(Message)]
#[rtype(result = "Vec<PausedCadence>")]
pub(crate) struct GetPaused;

/// A paused cadence, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PausedCadence {
    /// The namespace.
    pub namespace: String,
    /// The cadence.
    pub cadence: &'static str,
    /// The pause: since when, by which token, and the note.
    #[serde(flatten)]
    pub pause: crate::storage::state::Pause,
}

impl Handler<GetPaused> for HealthActor {
    type Result = MessageResult<GetPaused>;
    fn handle(&mut self, _: GetPaused, _: &mut Context<Self>) -> Self::Result {
        let paused = self
            .namespaces
            .values()
            .flat_map(|ns| {
                ns.cadences.iter().filter_map(|(kind, c)| {
                    Some(PausedCadence {
                        namespace: ns.name.to_string(),
                        cadence: kind.as_str(),
                        pause: (**c.state.paused.as_ref()?).clone(),
                    })
                })
            })
            .collect();
        MessageResult(paused)
    }
}

impl Handler<ClusterUpdate> for HealthActor {
    type Result = ();
    fn handle(&mut self, msg: ClusterUpdate, _: &mut Context<Self>) {
        self.cluster = Some((msg.0, msg.1));
    }
}

impl Handler<Ping> for HealthActor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use crate::model::time::OptMs;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::batch::StuckRead;
    use crate::clock::ManualClock;
    use crate::config::CadenceConfig;
    use crate::health::contract::{self, Health};
    use crate::health::{PendingSnapshot, ShownSettings, Waiting};
    use crate::model::{CadenceKind, ErrorClass, Target};
    use crate::storage::state::{AttemptRecord, AttemptStatus, BatchRef, CadenceState, LastError};

    const T0: WallMs = 1_795_737_200_000;

    fn cadence(kind: CadenceKind, target: &str, every: &str, period: u64) -> CadenceSnapshot {
        CadenceSnapshot {
            settings: ShownSettings(Arc::new(CadenceConfig {
                kind,
                target: Target::parse(target).expect("target"),
                every: every.into(),
                period: Duration::from_secs(period),
                confirmations: None,
                policy_oid: None,
                jitter: Duration::ZERO,
            })),
            state: Arc::default(),
            configured_at_ms: T0,
            next_due_ms: OptMs::NONE,
            in_flight: false,
            waiting: None,
            pending: None,
            trigger_queued: false,
        }
    }

    fn actor(clock: &ManualClock) -> HealthActor {
        HealthActor::new(
            Arc::new(clock.clone()),
            Duration::from_secs(1),
            Duration::from_secs(10),
            ConfigReport {
                path: "namespaces.yaml".into(),
                hash: "c41f".into(),
                loaded_at_ms: T0,
                ..Default::default()
            },
            StateReport { path: "/var/lib/vmsh/scheduler.json".into(), origin: "fresh".into(), ..Default::default() },
        )
    }

    /// A body with every optional part filled in: errors, pending anchors, a rejected reload,
    /// a stuck batch read, and names and messages that need escaping.
    fn busy_body() -> HealthBody {
        let clock = ManualClock::new(T0);
        let mut a = actor(&clock);
        clock.advance(3_723_500);
        let now = clock.wall_ms();
        a.last_tick = Some((now - 100, clock.mono_ms() - 100));
        a.ready = true;
        a.config.targets_path = Some("anchors.yaml".into());
        a.config.targets_hash = Some("8a9d".into());
        a.config.last_reload = Some(ReloadReport {
            result: "failure",
            at_ms: now - 10_000,
            hash: "ff".into(),
            errors: vec!["namespaces.yaml: namespace \"x\": cadence.fast.every: \"0s\" is zero".into()],
        });
        a.state.last_write_ms = Some(now - 1_000);
        a.state.error = Some("disk full".into());

        let mut fast = cadence(CadenceKind::Fast, "eip155:8453", "89s", 89);
        fast.next_due_ms = OptMs::some(now + 84_000);
        let batch = BatchRef { id: "dao-0001".into(), root: format!("sha256:{}", "11".repeat(32)).into() };
        fast.state = Arc::new(CadenceState {
            last_success_ms: Some(now - 5_000),
            last_batch: Some(batch.clone()),
            last_aggregate: Some(Box::new(crate::storage::state::LastAggregate {
                root: "22".repeat(32),
                size: 20,
                index: 7,
            })),
            attempt: Some(Box::new(AttemptRecord {
                id: "0a1b2c".into(),
                target: "eip155:8453".into(),
                batch,
                nominal_due_ms: now - 20_000,
                started_ms: now - 20_000,
                status: AttemptStatus::Pending,
                progress: None,
                pending: None,
                sent_ms: Some(now - 20_000),
                resent: 1,
                aggregate: None,
                triggered: false,
            })),
            ..CadenceState::default()
        });
        fast.pending = Some(Box::new(PendingSnapshot {
            depth: 1,
            required: 3,
            sent_ms: Some(now - 20_000),
            data: json!({"txHash": "0xabc", "nonce": 7}),
            resent: 1,
            fee: Some(crate::model::PendingFee {
                unit: "wei/gas".into(),
                rate: 45_000_000_000,
                tip: Some(2_000_000_000),
                cap: Some(45_000_000_000),
                replacements: 3,
                at_cap: true,
                sent_ms: Some(now - 6_000),
                sent_height: Some(21_000_000),
            }),
        }));
        let mut strong = cadence(CadenceKind::Strong, "btc:mainnet", "34*fast", 3026);
        strong.in_flight = true;
        strong.state = Arc::new(CadenceState {
            backoff: 2,
            failures: 2,
            last_error: Some(Box::new(LastError {
                class: ErrorClass::Network,
                message: "ECONNREFUSED\n\u{1b}[2Jgone \"quoted\"".into(),
                at_ms: now - 4_000,
            })),
            ..CadenceState::default()
        });
        let cold = cadence(CadenceKind::Cold, "rfc3161:tsa", "1d", 86_400);
        let mut idle = cadence(CadenceKind::Fast, "local:later", "5s", 5);
        idle.waiting = Some(Box::new(Waiting::NoBatch));
        idle.next_due_ms = OptMs::some(now + 200);
        let namespaces = [
            (
                "dao:vaultmesh",
                vec![(CadenceKind::Fast, fast), (CadenceKind::Strong, strong), (CadenceKind::Cold, cold)],
            ),
            ("<script>\"ü\"</script>", vec![(CadenceKind::Fast, idle)]),
        ];
        for (name, cadences) in namespaces {
            let snapshot = NamespaceSnapshot { name: name.into(), cadences: cadences.into_iter().collect() };
            a.namespaces.insert(name.into(), Arc::new(snapshot));
        }
        let tsa = Arc::new(TsaBoard::new(Arc::new(clock.clone())));
        tsa.register("tsa", &["https://tsa.example".into(), "http://[::1]:3180".into()], 2_592_000_000);
        tsa.failed(
            "tsa",
            "https://tsa.example",
            ErrorClass::Validation,
            "untrusted \"token\"\n",
            clock.mono_ms() + 60_000,
        );
        tsa.succeeded("tsa", "http://[::1]:3180", Some(("c1", now + 86_400_000)));
        a.tsa = Some(tsa);
        a.cluster = Some((cluster_status("etcd is slow \"today\""), clock.mono_ms() + 5_000));
        let mut body = a.report().body;
        body.batch_reader = Some(ReaderReport {
            stuck: vec![StuckRead { path: "/srv/out/batches/a/1.json".into(), since_ms: now - 65_000 }],
            stuck_total: 3,
            error: Some("no batch can be read: 4 batch reads have not returned".into()),
        });
        body
    }

    fn cluster_status(error: &str) -> ClusterReport {
        ClusterReport {
            node: "r1".into(),
            prefix: "/vmsh-scheduler/".into(),
            lease_valid: false,
            lease_renewed_ago_s: Some(1.5),
            lease_valid_for_s: 0.0,
            lease_ttl_s: 10,
            members: [("r0".to_string(), 3), ("r1".to_string(), 4)].into(),
            owned: 4,
            unowned: 1,
            unowned_for_s: 2.0,
            last_round_ms: Some(T0),
            error: Some(error.into()),
        }
    }

    #[test]
    fn a_replica_is_ready_only_while_its_lease_can_be_counted_on_and_says_why_not() {
        let clock = ManualClock::new(T0);
        let mut a = actor(&clock);
        a.ready = true;
        a.last_tick = Some((T0, clock.mono_ms()));
        assert_eq!(a.readiness(clock.mono_ms()), Ok(()), "a single process has no lease");
        a.cluster = Some((cluster_status("etcd is unavailable: no leader"), clock.mono_ms() + 2_000));
        assert_eq!(a.readiness(clock.mono_ms()), Ok(()));
        let report = a.report();
        let c = report.body.cluster.as_ref().expect("cluster section");
        assert!(c.lease_valid && (c.lease_valid_for_s - 2.0).abs() < 1e-9, "{c:?}");
        clock.advance(2_000);
        let why = a.readiness(clock.mono_ms()).expect_err("not ready past the lease");
        assert!(why.contains("lease") && why.contains("no leader"), "{why}");
        let report = a.report();
        assert_eq!((report.code, report.body.status), (503, OverallStatus::Unhealthy));
        assert!(!report.body.ready);
    }

    /// A body with every optional part empty: no tick yet, no namespaces, no reader, nothing
    /// written, draining.
    fn quiet_body() -> HealthBody {
        let clock = ManualClock::new(T0);
        let mut a = actor(&clock);
        a.draining = true;
        a.report().body
    }

    /// Serves `body`, reads it as the contract and writes that back: the same JSON, byte for
    /// byte, so the contract has every field, with the server's names, nesting and nulls.
    fn served_and_read(body: &HealthBody) -> Health {
        let served = serde_json::to_string(body).expect("serialize the served body");
        let read: Health = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&served))
            .unwrap_or_else(|e| panic!("the contract does not read what is served: {e}\n{served}"));
        let written = serde_json::to_string(&read).expect("serialize the contract");
        let as_value = |s: &str| serde_json::from_str::<Value>(s).expect("JSON");
        assert_eq!(as_value(&written), as_value(&served), "field for field");
        assert_eq!(written, served, "byte for byte");
        read
    }

    #[test]
    fn the_health_contract_reads_and_writes_back_exactly_what_is_served() {
        let busy = served_and_read(&busy_body());
        let quiet = served_and_read(&quiet_body());

        // The parts read as what the server meant.
        assert_eq!(busy.service.as_deref(), Some(crate::health::SERVICE));
        assert_eq!(busy.status, OverallStatus::Degraded);
        assert_eq!(busy.uptime, Some(3723.5));
        let fast = busy.cadence("dao:vaultmesh", "fast").expect("fast");
        assert_eq!(fast.pending.as_ref().map(|p| (p.depth, p.required, p.resent)), Some((1, 3, 1)));
        assert_eq!(fast.status, Some(NamespaceStatus::Ok.into()));
        let strong = busy.cadence("dao:vaultmesh", "strong").expect("strong");
        assert_eq!(strong.last_error.as_ref().map(|e| &e.class), Some(&ErrorClass::Network.into()));
        assert_eq!(busy.namespace("dao:vaultmesh").map(|n| n.backoff), Some(2));
        let reload = busy.config.as_ref().and_then(|c| c.last_reload.as_ref()).expect("last reload");
        assert_eq!(reload.result, contract::ReloadResult::Failure);
        assert_eq!(busy.batch_reader.as_ref().map(|r| r.stuck.len()), Some(1));
        assert!(quiet.draining && !quiet.ready && quiet.last_tick.is_none() && quiet.batch_reader.is_none());
        let tsa: Vec<(&str, Option<bool>, u32)> =
            busy.tsa.iter().map(|u| (u.url.as_str(), u.up, u.consecutive_failures)).collect();
        assert_eq!(tsa, [("https://tsa.example", Some(false), 1), ("http://[::1]:3180", Some(true), 0)]);
        assert_eq!(busy.tsa[0].tried_last_until_ms, Some(busy.now_ms.expect("now") + 60_000));
        assert!(quiet.tsa.is_empty());
        assert_eq!(quiet.namespaces.as_ref().map(BTreeMap::len), Some(0));
    }
}
