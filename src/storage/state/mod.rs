//! Persisted scheduler state: what each cadence last anchored, its backoff, and the attempt
//! it has under way. One actor ([`store::StateStore`]) owns it in memory and writes each
//! change through a [`backend::StateBackend`]: the state file with its log
//! ([`file::FileBackend`]).
//!
//! The file is JSON: `{"version": 1, "namespaces": {NAME: {"cadences": {fast: {...}}}}}`.
//! The original service's file (`{NAME: {last: {fast, strong, cold}, backoff}}`, epoch
//! seconds) is read and migrated on first start, so switching services re-anchors nothing.

pub mod backend;
pub mod etcd;
pub mod file;
#[cfg(test)]
pub(crate) mod memory;
pub mod store;
pub mod wal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use self::backend::StateBackend;

use crate::clock::WallMs;
use crate::config::CadenceMap;
use crate::model::CadenceKind;
use crate::model::ErrorClass;
use crate::model::time::OptMs;

/// The state format this build writes.
pub const STATE_VERSION: u32 = 1;

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version.
    pub version: u32,
    /// Per-namespace state, including namespaces no longer configured (kept, not discarded).
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceState>,
}

impl StateFile {
    /// Sets one cadence's state as `change` gives it.
    pub fn apply(&mut self, change: backend::Change) {
        let ns = match self.namespaces.get_mut(&*change.namespace) {
            Some(ns) => ns,
            None => self.namespaces.entry(change.namespace.to_string()).or_default(),
        };
        ns.cadences.insert(change.cadence, change.state);
    }

    /// The namespaces as the state store holds them, each keyed by the name `shared` gives
    /// for it (the config's, so a fleet's names are kept once), or by its own.
    pub fn into_shared(self, shared: impl Fn(&str) -> Option<Arc<str>>) -> backend::Namespaces {
        self.namespaces
            .into_iter()
            .map(|(name, state)| (shared(&name).unwrap_or_else(|| Arc::from(name)), Arc::new(state)))
            .collect()
    }
}

/// The state of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespaceState {
    /// Per-cadence state. Shared: the namespace's actor, the state store and /health hold
    /// the same copy until one of them changes it.
    #[serde(default)]
    pub cadences: CadenceMap<Arc<CadenceState>>,
}

impl NamespaceState {
    /// Makes cadences that last anchored the same batch share one copy of its reference, as
    /// they do while running; the file holds one copy per cadence.
    pub fn share_batches(&mut self) {
        let mut seen: Vec<BatchRef> = Vec::new();
        for state in self.cadences.values_mut() {
            let Some(batch) = Arc::make_mut(state).last_batch.as_mut() else { continue };
            match seen.iter().find(|b| *b == batch) {
                Some(b) => *batch = b.clone(),
                None => seen.push(batch.clone()),
            }
        }
    }
}

/// The state of one cadence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CadenceState {
    /// When the last successful anchor started (Unix ms); the period counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<WallMs>,
    /// The batch last anchored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch: Option<BatchRef>,
    /// Backoff level k.
    #[serde(default)]
    pub backoff: u32,
    /// Failures since the last success.
    #[serde(default)]
    pub failures: u32,
    /// Earliest retry after a failure (Unix ms).
    #[serde(default, skip_serializing_if = "OptMs::is_none")]
    pub retry_at_ms: OptMs,
    /// The last failure. Boxed: most cadences have none, and this state is kept per cadence
    /// by the actor, the state store and /health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Box<LastError>>,
    /// The attempt of the current period, recorded before its driver is called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Box<AttemptRecord>>,
    /// The aggregate the last anchor was a leaf of; none when it was anchored alone. Boxed:
    /// most cadences anchor alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_aggregate: Option<Box<LastAggregate>>,
    /// An operator's pause: nothing new starts until it is resumed. Kept across restarts
    /// and reloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Box<Pause>>,
    /// An operator asked to skip the next run due by period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_next: bool,
    /// Where a skipped run moved the next one (Unix ms): nothing runs by period before it.
    /// Cleared by the next success.
    #[serde(default, skip_serializing_if = "OptMs::is_none")]
    pub skipped_to_ms: OptMs,
    /// When the last run an operator triggered succeeded (Unix ms). A triggered run does not
    /// move the period, which still counts from `last_success_ms`.
    #[serde(default, skip_serializing_if = "OptMs::is_none")]
    pub last_triggered_ms: OptMs,
}

impl CadenceState {
    /// The last success of any run, by period or triggered (Unix ms): how fresh its anchor is.
    pub fn last_anchored_ms(&self) -> Option<WallMs> {
        self.last_success_ms.max(self.last_triggered_ms.get())
    }
}

/// An operator's pause of a cadence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// When it was paused (Unix ms).
    pub since_ms: WallMs,
    /// The name of the admin token that paused it.
    pub by: String,
    /// Why, as the operator wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The aggregate an anchor was a leaf of, as /health shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastAggregate {
    /// The tree's root, 64 lower-case hex digits.
    pub root: String,
    /// The tree's number of leaves.
    pub size: u64,
    /// The anchor's leaf index in it.
    pub index: u64,
}

/// A batch reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRef {
    /// Batch id.
    pub id: Arc<str>,
    /// Root, `sha256:<hex>`.
    pub root: Arc<str>,
}

/// A failure, as shown in /health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// Error class.
    pub class: ErrorClass,
    /// Message.
    pub message: String,
    /// When (Unix ms).
    pub at_ms: WallMs,
}

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    /// Recorded and handed to the driver; no result recorded yet. Found at start-up, it
    /// means the process died mid-anchor.
    Started,
    /// The driver failed in a way that may still have anchored (network, unknown).
    Failed,
    /// Cancelled by shutdown after the grace period.
    Interrupted,
    /// Sent; waiting for confirmations. Not sent again when the cadence comes round.
    Pending,
}

/// An attempt recorded before its driver is called, so a crash between sending and
/// recording the result is detected on restart and the same attempt resumed (asking the
/// target first) instead of a new one sent blindly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// Deterministic attempt id.
    pub id: String,
    /// Target as configured when the attempt started.
    pub target: String,
    /// Batch anchored.
    pub batch: BatchRef,
    /// The period's nominal due time (Unix ms).
    pub nominal_due_ms: WallMs,
    /// When it was first started (Unix ms).
    pub started_ms: WallMs,
    /// Where it stands.
    pub status: AttemptStatus,
    /// What the driver recorded before sending (e.g. a signed transaction and its hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
    /// The anchor sent and waiting for confirmations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::model::Pending>,
    /// When the anchor was sent (Unix ms); once confirmed, the period counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<WallMs>,
    /// Times sent again because the target dropped it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resent: u32,
    /// The aggregate the attempt is a leaf of, recorded before the aggregate is sent: the
    /// attempt is then anchored only with it, and a restart resumes that same aggregate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<crate::model::receipt::Inclusion>,
    /// An operator triggered it outside the schedule: its success does not move the period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub triggered: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid state.
    #[error(
        "state file {path} is corrupt ({reason}); refusing to start over it. Inspect or repair it, or start with --reset-corrupt-state to move it aside and begin with empty state"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A shared store (etcd) could not be read, or holds what is not state.
    #[error("cannot load the state from {location}: {reason}")]
    Remote {
        /// Where the state is.
        location: String,
        /// Why not.
        reason: String,
    },
    /// Written by a newer scheduler.
    #[error(
        "state file {path} has version {version}, newer than this scheduler understands ({STATE_VERSION}); run a newer vmsh-scheduler, or move the file aside"
    )]
    TooNew {
        /// The state file.
        path: PathBuf,
        /// Its version.
        version: u64,
    },
}

/// How the state was found at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// No file: first start.
    Fresh,
    /// This service's format.
    Current,
    /// The original service's format, migrated.
    Migrated,
}

/// The original service's per-namespace state.
#[derive(Debug, Deserialize)]
struct LegacyNamespace {
    #[serde(default)]
    last: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    backoff: Option<f64>,
}

/// Loads the state file with its logs replayed, as the file store does at start-up.
pub fn load(path: &Path) -> Result<(StateFile, Origin), StateError> {
    file::FileBackend::new(path.to_path_buf()).load().map(|l| (l.state, l.origin))
}

/// The state as found at start-up.
#[derive(Debug)]
pub struct Loaded {
    /// Every namespace's state as last committed.
    pub state: StateFile,
    /// How it was found.
    pub origin: Origin,
}

/// Why state bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not valid state.
    Corrupt(String),
    /// A newer format.
    TooNew(u64),
}

/// Parses state bytes in either format.
pub fn parse(bytes: &[u8]) -> Result<(StateFile, Origin), ParseError> {
    // The usual file, read straight into its types: going through a JSON tree first took
    // twice as long and as much memory again at 100,000 namespaces.
    if let Ok(state) = serde_json::from_slice::<StateFile>(bytes) {
        if u64::from(state.version) > u64::from(STATE_VERSION) {
            return Err(ParseError::TooNew(u64::from(state.version)));
        }
        return Ok((state, Origin::Current));
    }
    // Anything else (the original format, a newer or a broken file) is told apart here.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ParseError::Corrupt(e.to_string()))?;
    let serde_json::Value::Object(obj) = &value else {
        return Err(ParseError::Corrupt("expected a JSON object".into()));
    };
    if let Some(version) = obj.get("version") {
        let version = version.as_u64().ok_or_else(|| ParseError::Corrupt("`version` is not a whole number".into()))?;
        if version > u64::from(STATE_VERSION) {
            return Err(ParseError::TooNew(version));
        }
        let state: StateFile = serde_json::from_value(value).map_err(|e| ParseError::Corrupt(e.to_string()))?;
        return Ok((state, Origin::Current));
    }
    migrate_legacy(obj).map(|s| (s, Origin::Migrated))
}

fn migrate_legacy(obj: &serde_json::Map<String, serde_json::Value>) -> Result<StateFile, ParseError> {
    let mut namespaces = BTreeMap::new();
    for (name, value) in obj {
        let legacy: LegacyNamespace = serde_json::from_value(value.clone())
            .map_err(|e| ParseError::Corrupt(format!("namespace {name:?} in the original format: {e}")))?;
        let backoff = legacy.backoff.map_or(0, |b| b.clamp(0.0, 30.0) as u32);
        let mut cadences = CadenceMap::new();
        for (cadence, at) in legacy.last {
            let Some(kind) = CadenceKind::parse(&cadence) else { continue };
            let Some(at) = at.filter(|t| t.is_finite() && *t > 0.0) else { continue };
            cadences.insert(
                kind,
                Arc::new(CadenceState {
                    last_success_ms: Some(legacy_ms(at)),
                    // The original computed a level but never waited on it; keep the level so
                    // the operator sees it, with no retry delay pending.
                    backoff,
                    ..CadenceState::default()
                }),
            );
        }
        namespaces.insert(name.clone(), NamespaceState { cadences });
    }
    Ok(StateFile { version: STATE_VERSION, namespaces })
}

/// The original service wrote epoch seconds; a value too large to be seconds in this
/// millennium is taken as milliseconds.
fn legacy_ms(at: f64) -> WallMs {
    if at > 1e11 { at as WallMs } else { (at * 1000.0) as WallMs }
}

/// Serialises state for writing.
pub fn encode(state: &StateFile) -> Vec<u8> {
    // Serialising plain maps of plain data cannot fail.
    let mut bytes = serde_json::to_vec(state).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Moves a corrupt state file aside and returns where it went.
pub fn move_aside(path: &Path, now: WallMs) -> std::io::Result<PathBuf> {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".corrupt-{}", crate::clock::compact_utc(now)));
    let dest = path.with_file_name(name);
    std::fs::rename(path, &dest)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keys_a_configured_namespace_by_the_configs_name_and_keeps_the_others() {
        let mut file = StateFile::default();
        for name in ["kept", "configured"] {
            let change = backend::Change {
                namespace: name.into(),
                cadence: CadenceKind::Fast,
                state: Arc::new(CadenceState { backoff: 2, ..CadenceState::default() }),
            };
            file.apply(change);
        }
        let configured: Arc<str> = Arc::from("configured");
        let held = file.into_shared(|name| (name == "configured").then(|| Arc::clone(&configured)));
        let (key, state) = held.get_key_value("configured").expect("configured namespace");
        assert!(Arc::ptr_eq(key, &configured), "the config's name, not a copy");
        assert_eq!(state.cadences.get(&CadenceKind::Fast).map(|s| s.backoff), Some(2));
        assert!(held.contains_key("kept"), "a namespace no longer configured keeps its state");
    }

    #[test]
    fn cadences_that_anchored_the_same_batch_share_its_reference_after_loading() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.json");
        let batch = |id: &str| BatchRef { id: id.into(), root: format!("sha256:{}", "11".repeat(32)).into() };
        let mut ns = NamespaceState::default();
        for (kind, id) in [(CadenceKind::Fast, "b2"), (CadenceKind::Strong, "b2"), (CadenceKind::Cold, "b1")] {
            ns.cadences.insert(
                kind,
                std::sync::Arc::new(CadenceState { last_batch: Some(batch(id)), ..CadenceState::default() }),
            );
        }
        let mut state = StateFile { version: STATE_VERSION, ..StateFile::default() };
        state.namespaces.insert("n".into(), ns.clone());
        std::fs::write(&path, encode(&state)).expect("write");
        let (loaded, _) = load(&path).expect("loads");
        let loaded = &loaded.namespaces["n"];
        assert_eq!(*loaded, ns, "sharing changes no value");
        let id = |kind| loaded.cadences.get(&kind).and_then(|c| c.last_batch.as_ref()).map(|b| Arc::clone(&b.id));
        let (fast, strong, cold) = (
            id(CadenceKind::Fast).expect("fast"),
            id(CadenceKind::Strong).expect("strong"),
            id(CadenceKind::Cold).expect("cold"),
        );
        assert!(Arc::ptr_eq(&fast, &strong));
        assert!(!Arc::ptr_eq(&fast, &cold));
    }

    #[test]
    fn a_missing_file_is_a_fresh_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (state, origin) = load(&tmp.path().join("none.json")).expect("fresh");
        assert_eq!(origin, Origin::Fresh);
        assert!(state.namespaces.is_empty());
    }

    #[test]
    fn current_format_round_trips() {
        let mut state = StateFile { version: STATE_VERSION, ..StateFile::default() };
        let mut ns = NamespaceState::default();
        ns.cadences.insert(
            CadenceKind::Fast,
            std::sync::Arc::new(CadenceState {
                last_success_ms: Some(1_729_739_900_000),
                backoff: 2,
                failures: 3,
                retry_at_ms: OptMs::some(1_729_740_000_000),
                attempt: Some(Box::new(AttemptRecord {
                    id: "ab".repeat(32),
                    target: "local:demo".into(),
                    batch: BatchRef { id: "b".into(), root: format!("sha256:{}", "00".repeat(32)).into() },
                    nominal_due_ms: 5,
                    started_ms: 6,
                    status: AttemptStatus::Pending,
                    triggered: false,
                    progress: Some(serde_json::json!({"txHash": "0xab"})),
                    pending: Some(crate::model::Pending {
                        data: serde_json::json!({"txHash": "0xab"}),
                        required: 3,
                        depth: 1,
                        poll_ms: 1000,
                        fee: Some(crate::model::PendingFee {
                            unit: "wei/gas".into(),
                            rate: 30_000_000_000,
                            tip: Some(1_500_000_000),
                            cap: Some(100_000_000_000),
                            replacements: 2,
                            at_cap: false,
                            sent_ms: Some(7),
                            sent_height: Some(12),
                        }),
                    }),
                    sent_ms: Some(7),
                    resent: 1,
                    aggregate: Some(crate::model::receipt::Inclusion {
                        leaf: "01".repeat(40),
                        index: 1,
                        size: 2,
                        path: vec!["aa".repeat(32)],
                        root: "bb".repeat(32),
                    }),
                })),
                ..CadenceState::default()
            }),
        );
        state.namespaces.insert("dao:vaultmesh".into(), ns);
        let (back, origin) = parse(&encode(&state)).expect("parses");
        assert_eq!(origin, Origin::Current);
        assert_eq!(back, state);
    }

    #[test]
    fn the_original_services_state_is_migrated() {
        let legacy = br#"{
            "dao:vaultmesh": {"last": {"fast": 1729739900, "strong": 1729739800}, "backoff": 2},
            "fin:clearing": {"last": {"fast": null}, "backoff": 0}
        }"#;
        let (state, origin) = parse(legacy).expect("migrates");
        assert_eq!(origin, Origin::Migrated);
        let dao = &state.namespaces["dao:vaultmesh"].cadences;
        assert_eq!(dao[&CadenceKind::Fast].last_success_ms, Some(1_729_739_900_000));
        assert_eq!(dao[&CadenceKind::Strong].last_success_ms, Some(1_729_739_800_000));
        assert_eq!(dao[&CadenceKind::Fast].backoff, 2);
        assert!(!dao.contains_key(&CadenceKind::Cold));
        assert!(state.namespaces["fin:clearing"].cadences.is_empty());
    }

    #[test]
    fn corrupt_and_newer_files_are_refused() {
        assert!(matches!(parse(b"{\"version\":1,"), Err(ParseError::Corrupt(_))));
        assert!(matches!(parse(b"[]"), Err(ParseError::Corrupt(_))));
        assert!(matches!(parse(b""), Err(ParseError::Corrupt(_))));
        assert!(matches!(parse(b"{\"ns\": {\"last\": 5}}"), Err(ParseError::Corrupt(_))));
        assert_eq!(parse(b"{\"version\": 2, \"namespaces\": {}}"), Err(ParseError::TooNew(2)));
    }

    #[test]
    fn a_corrupt_file_can_be_moved_aside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.json");
        std::fs::write(&path, b"{garbage").expect("write");
        assert!(matches!(load(&path), Err(StateError::Corrupt { .. })));
        let dest = move_aside(&path, 1_729_740_000_000).expect("moved");
        assert!(!path.exists());
        assert_eq!(std::fs::read(&dest).expect("kept"), b"{garbage");
    }
}
