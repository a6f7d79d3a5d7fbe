//! The /health document as owned types: the public contract that readers (`vmsh-scheduler
//! status`, the integration tests, anyone's tooling) parse.
//!
//! The server does not build these: it writes the same JSON from borrowed views over the
//! actors' snapshots ([`super::actor::HealthBody`]), so a request at 10,000 namespaces copies
//! nothing. The types here read that JSON and write it back byte for byte, and a test in
//! `actor.rs` holds the two to it.
//!
//! Reading is tolerant of older documents, because `status` is pointed at whatever runs: a
//! field some version did not send (the original service's `/health`, schedulers before
//! `service`, `nowMs` or `batchReader`, and the answer given when no report could be had,
//! which is only `service`, `status` and `error`) may be absent, and a status or class this
//! version does not know is kept as its text ([`Open::Other`]) rather than refused.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{NamespaceStatus, OverallStatus};
use crate::clock::WallMs;
use crate::model::ErrorClass;

/// The whole /health document.
///
/// Fields are declared in the order the server writes them (sorted, as the JSON object the
/// original service built had them), so writing one back gives the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The admin API, when it is on; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// The batch reader's condition; null when it is not watched, absent from older versions.
    #[serde(default)]
    pub batch_reader: Option<BatchReader>,
    /// Cluster mode: this replica's membership and who owns what; absent on a single process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// The running config; absent from the original service and when no report could be had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    /// Shutting down.
    #[serde(default)]
    pub draining: bool,
    /// Why no report could be had (the health actor did not answer); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the config tick last ran (Unix ms); null before the first.
    #[serde(default)]
    pub last_tick: Option<WallMs>,
    /// How /metrics shows the fleet; absent from older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsMode>,
    /// Every namespace of the running config, by name; absent when no report could be had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<BTreeMap<String, Namespace>>,
    /// The server's clock (Unix ms), so readers compute ages without trusting their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<WallMs>,
    /// Started and not draining: what /readyz answers.
    #[serde(default)]
    pub ready: bool,
    /// Always [`super::SERVICE`]: tells this document from another service's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// `?view=summary` only, in place of `namespaces`: counts by status and the worst ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Overall judgement: `healthy`, `degraded` or `unhealthy` (answered with 503).
    pub status: Open<OverallStatus>,
    /// Every target jobs were sent to since start, by target: its concurrency and how its
    /// slots are used; absent from older versions.
    #[serde(default)]
    pub targets: Vec<TargetLane>,
    /// Every URL of every `rfc3161` entry, by entry and in each entry's order; empty when
    /// there is none, and absent from older versions.
    #[serde(default)]
    pub tsa: Vec<TsaUrl>,
    /// Seconds since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<f64>,
    /// The scheduler's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Health {
    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.as_ref()?.get(name)
    }

    /// A namespace's cadence (`fast`, `strong` or `cold`).
    pub fn cadence(&self, namespace: &str, kind: &str) -> Option<&Cadence> {
        self.namespace(namespace)?.cadence(kind)
    }

    /// Whether the service does its job (`healthy` or `degraded`): /health answered 200.
    pub fn is_serving(&self) -> bool {
        matches!(self.status, Open::Known(OverallStatus::Healthy | OverallStatus::Degraded))
    }
}

/// How /metrics shows the fleet: per namespace, or in fleet mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsMode {
    /// `namespaces` or `fleet`.
    pub mode: String,
    /// `VMSH_METRICS_MODE`: `auto`, `namespaces` or `fleet`.
    pub setting: String,
    /// `VMSH_METRICS_FLEET_ABOVE`.
    pub fleet_above: usize,
    /// `VMSH_METRICS_TROUBLED_MAX`.
    pub troubled_max: usize,
    /// Namespaces not ok at the last config tick.
    pub troubled: usize,
    /// Namespaces whose own series /metrics writes.
    pub shown: usize,
}

/// The running config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The namespaces file.
    pub path: String,
    /// Its SHA-256, hex.
    pub hash: String,
    /// The targets file; null when there is none.
    #[serde(default)]
    pub targets_path: Option<String>,
    /// Its SHA-256, hex; null when there is none.
    #[serde(default)]
    pub targets_hash: Option<String>,
    /// When this config was loaded (Unix ms).
    pub loaded_at_ms: WallMs,
    /// The last change seen on disk and what became of it; null when none since start.
    #[serde(default)]
    pub last_reload: Option<Reload>,
}

/// The outcome of the last config change seen on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reload {
    /// `success`, or `failure` when the change was rejected and the previous config kept.
    pub result: Open<ReloadResult>,
    /// When (Unix ms).
    pub at_ms: WallMs,
    /// SHA-256 of the namespaces file that was read.
    pub hash: String,
    /// Every problem, one line each; empty on success.
    pub errors: Vec<String>,
}

/// What became of a config change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// Applied: the new config runs.
    Success,
    /// Rejected: the previous config keeps running.
    Failure,
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Its path.
    pub path: String,
    /// How it was found at start-up: `fresh`, `current` or `migrated`.
    pub origin: String,
    /// Last successful write (Unix ms); null before the first.
    #[serde(default)]
    pub last_write_ms: Option<WallMs>,
    /// The last write's error while writes fail; null otherwise.
    #[serde(default)]
    pub error: Option<String>,
}

/// The batch reader's condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReader {
    /// Reads that did not return within the read timeout and still have not.
    pub stuck: Vec<StuckRead>,
    /// Reads found stuck since start.
    pub stuck_total: u64,
    /// Why no batch can be read at all, when none can; null otherwise.
    #[serde(default)]
    pub error: Option<String>,
}

/// A batch read left behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StuckRead {
    /// The file it is blocked on.
    pub path: String,
    /// When that read began (Unix ms).
    pub since_ms: WallMs,
}

/// One namespace: the original service's fields (`backoff`, `lastAnchor`, `status`) and its
/// cadences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// The highest backoff level of its cadences.
    #[serde(default)]
    pub backoff: u32,
    /// Its cadences by kind; absent from the original service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cadences: Option<BTreeMap<String, Cadence>>,
    /// Start of each cadence's last success, Unix seconds; only cadences that anchored.
    #[serde(default)]
    pub last_anchor: BTreeMap<String, i64>,
    /// `stale` if any cadence is, else `backing_off` if any backs off, else `ok`.
    pub status: Open<NamespaceStatus>,
}

impl Namespace {
    /// A cadence by kind (`fast`, `strong` or `cold`).
    pub fn cadence(&self, kind: &str) -> Option<&Cadence> {
        self.cadences.as_ref()?.get(kind)
    }
}

/// One cadence of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cadence {
    /// Where it anchors, e.g. `eip155:8453`.
    pub target: String,
    /// The period as written in the config, e.g. `89s` or `34*fast`.
    pub every: String,
    /// The period in whole seconds.
    pub period_seconds: u64,
    /// When it was configured (Unix ms): the staleness reference until it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_at_ms: Option<WallMs>,
    /// Start of the last successful anchor (Unix ms); null before the first.
    pub last_success_ms: Option<WallMs>,
    /// When it is next due (Unix ms); null while an anchor runs and while draining.
    pub next_due_ms: Option<WallMs>,
    /// Backoff level k; 0 when not failing.
    pub backoff: u32,
    /// Failures since the last success.
    pub failures: u32,
    /// Whether an anchor is running.
    pub in_flight: bool,
    /// Id of the attempt running or to be resumed; null when none.
    pub attempt_id: Option<String>,
    /// Why nothing is happening when something blocks the cadence (e.g. `no batch`).
    pub waiting: Option<String>,
    /// The batch last anchored; null before the first.
    pub last_batch: Option<LastBatch>,
    /// The aggregate the last anchor was a leaf of; null when it was anchored alone, and
    /// absent from older versions.
    #[serde(default)]
    pub last_aggregate: Option<LastAggregate>,
    /// The last failure since the last success; null when none.
    pub last_error: Option<LastError>,
    /// The anchor sent and waiting for confirmations; null when none.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// This cadence judged alone, as a namespace is; absent from older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Open<NamespaceStatus>>,
    /// An operator's pause, while it lasts; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<crate::storage::state::Pause>,
    /// The next run by period is to be skipped; absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_next: bool,
    /// A triggered run waits for the run under way to end; absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trigger_queued: bool,
    /// When the last triggered run succeeded (Unix ms); absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_triggered_ms: Option<WallMs>,
}

/// A batch, by id and root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastBatch {
    /// The batch id.
    pub id: String,
    /// Its Merkle root, `sha256:<hex>`.
    pub root: String,
}

/// The aggregate an anchor was a leaf of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastAggregate {
    /// The tree's root, 64 lower-case hex digits: what the target anchored.
    pub root: String,
    /// The tree's number of leaves.
    pub size: u64,
    /// The anchor's leaf index in it.
    pub index: u64,
}

/// A failed anchor attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// `network`, `auth`, `validation` or `unknown`: decides the backoff multiplier.
    pub class: Open<ErrorClass>,
    /// What went wrong, as the driver said it.
    pub message: String,
    /// When (Unix ms).
    pub at_ms: WallMs,
}

/// An anchor sent and waiting for confirmations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// Confirmations so far.
    pub depth: u32,
    /// Confirmations required.
    pub required: u32,
    /// When it was sent (Unix ms); null when not known.
    #[serde(default)]
    pub sent_ms: Option<WallMs>,
    /// How the target finds it again (transaction hash …), as the driver wrote it.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Times sent again after the target dropped it.
    #[serde(default)]
    pub resent: u32,
    /// What its transaction offers, for senders that raise it; absent otherwise and from
    /// older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<crate::model::PendingFee>,
}

/// `summary` of `/health?view=summary`: the namespaces counted by status, and the worst.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// How many namespaces this process runs.
    pub namespaces: usize,
    /// How many have each status (`ok`, `backing_off`, `stale`, `paused`).
    pub by_status: BTreeMap<String, usize>,
    /// Those not `ok`, worst first (stale, backing off, paused; then the longest without an
    /// anchor), at most 20; each with its `name`.
    pub worst: Vec<NamedNamespace>,
}

/// A namespace with its name, as summaries and `/health/namespaces` list them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedNamespace {
    /// Its name.
    pub name: String,
    /// Everything `/health` says of it.
    #[serde(flatten)]
    pub namespace: Namespace,
}

/// A page of `/health/namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacesPage {
    /// How many namespaces match the query.
    pub total: usize,
    /// Where the page starts among them, in name order.
    pub offset: usize,
    /// The page size asked for.
    pub limit: usize,
    /// The page.
    pub namespaces: Vec<NamedNamespace>,
}

/// The admin API, as /health shows it while it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admin {
    /// Why the token file on disk is not in force (the tokens read before are); null when it is.
    #[serde(default)]
    pub token_file_error: Option<String>,
}

/// Cluster mode, as one replica sees it.
pub use crate::cluster::actor::ClusterStatus as Cluster;

/// One target's slots: how many of its jobs may run at once, and how they are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetLane {
    /// The target (`exec:stamp`).
    pub target: String,
    /// How many of its jobs may run at once.
    pub concurrency: usize,
    /// Its jobs running.
    pub running: usize,
    /// Its jobs waiting for a free slot.
    pub queued: usize,
    /// How long the oldest waiting job has waited, in seconds; 0 when none waits.
    pub oldest_wait_s: f64,
    /// Whether its jobs wait over a second for a slot: its concurrency is too low for its load.
    pub saturated: bool,
    /// For how long it has been saturated, in seconds; null when it is not.
    pub saturated_for_s: Option<f64>,
}

/// One URL of an `rfc3161` entry: what its requests did last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TsaUrl {
    /// The entry that lists it.
    pub entry: String,
    /// `scheme://host[:port]`; never its credentials, path or query.
    pub url: String,
    /// Whether its last request gave a usable token; null before the first.
    pub up: Option<bool>,
    /// Requests that failed since its last success.
    pub consecutive_failures: u32,
    /// Its last failure since its last success; null when none.
    pub last_error: Option<LastError>,
    /// When it last gave a usable token (Unix ms); null before the first.
    pub last_success_ms: Option<WallMs>,
    /// When the certificate that signed its last token expires (Unix ms); null when not known.
    pub cert_not_after_ms: Option<WallMs>,
    /// Until when it is tried after the entry's other URLs, after a failure (Unix ms); null
    /// when it is tried in its place.
    pub tried_last_until_ms: Option<WallMs>,
}

/// A word from a fixed vocabulary, or one this version does not know: a newer scheduler may
/// add a status, and a reader should show it rather than refuse the whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Open<T> {
    /// A word this version knows.
    Known(T),
    /// Any other word, as sent.
    Other(String),
}

/// A vocabulary whose words are written as fixed strings.
pub trait Word {
    /// The word as it is written in JSON.
    fn as_str(&self) -> &'static str;
}

impl<T: Word> Open<T> {
    /// The word as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Open::Known(w) => w.as_str(),
            Open::Other(s) => s,
        }
    }
}

impl<T> From<T> for Open<T> {
    fn from(word: T) -> Self {
        Open::Known(word)
    }
}

impl<T: PartialEq> PartialEq<T> for Open<T> {
    fn eq(&self, other: &T) -> bool {
        matches!(self, Open::Known(w) if w == other)
    }
}

impl<T: Word> fmt::Display for Open<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Word for OverallStatus {
    fn as_str(&self) -> &'static str {
        OverallStatus::as_str(*self)
    }
}

impl Word for NamespaceStatus {
    fn as_str(&self) -> &'static str {
        NamespaceStatus::as_str(*self)
    }
}

impl Word for ErrorClass {
    fn as_str(&self) -> &'static str {
        ErrorClass::as_str(*self)
    }
}

impl Word for ReloadResult {
    fn as_str(&self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// Shown as the compact JSON they were read from, e.g. in a test's failure message.
macro_rules! display_as_json {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
                f.write_str(&json)
            }
        }
    )*};
}

display_as_json!(Health, Namespace, Cadence);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_word_is_written_as_serde_writes_it() {
        fn check<T: Word + Serialize>(words: &[T]) {
            for w in words {
                assert_eq!(serde_json::to_value(w).ok(), Some(json!(w.as_str())));
            }
        }
        check(&[OverallStatus::Healthy, OverallStatus::Degraded, OverallStatus::Unhealthy]);
        check(&[NamespaceStatus::Ok, NamespaceStatus::BackingOff, NamespaceStatus::Stale, NamespaceStatus::Paused]);
        check(&ErrorClass::ALL);
        check(&[ReloadResult::Success, ReloadResult::Failure]);
    }

    #[test]
    fn a_word_this_version_does_not_know_is_kept_as_sent() {
        let h: Health = serde_json::from_value(json!({"status": "starting"})).expect("parses");
        assert_eq!(h.status, Open::Other("starting".to_string()));
        assert_eq!(h.status.as_str(), "starting");
        assert!(!h.is_serving());
        let h: Health = serde_json::from_value(json!({"status": "degraded"})).expect("parses");
        assert_eq!(h.status, OverallStatus::Degraded);
        assert!(h.is_serving());
    }

    #[test]
    fn the_original_services_health_reads_with_what_it_has() {
        let h: Health = serde_json::from_value(json!({
            "status": "healthy", "uptime": 5.2, "lastTick": 1_795_737_106_491_i64,
            "namespaces": {"dao": {"lastAnchor": {"fast": 1_795_737_104}, "backoff": 0, "status": "ok"}}
        }))
        .expect("parses");
        let dao = h.namespace("dao").expect("dao");
        assert_eq!(dao.status, NamespaceStatus::Ok);
        assert_eq!(dao.last_anchor.get("fast"), Some(&1_795_737_104));
        assert!(dao.cadences.is_none() && h.config.is_none() && h.now_ms.is_none() && h.service.is_none());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_refused_with_its_path() {
        let doc = json!({"status": "healthy", "namespaces": {"dao": {"status": "ok", "backoff": "high"}}});
        let e = serde_path_to_error::deserialize::<_, Health>(doc).expect_err("backoff is a number");
        assert_eq!(e.path().to_string(), "namespaces.dao.backoff");
    }
}
