//! Health: what the namespace actors and the supervisor report, and how it is judged.
//!
//! The judgement is a pure function of the reported snapshots and the current time, so it
//! is tested without actors; [`actor::HealthActor`] only collects snapshots and answers.
//!
//! - A cadence is *stale* when its last success (or, if it never succeeded, the time it was
//!   configured) is older than two periods plus one anchor timeout. A cadence waiting for
//!   its first batch is not stale: there is nothing to anchor.
//! - A namespace is `stale` if any cadence is stale, else `backing_off` if any cadence has
//!   a backoff level above 0, else `paused` if an operator paused any cadence, else `ok`. A
//!   paused cadence is never stale.
//! - The service is `unhealthy` (HTTP 503) when its config tick has stopped for three ticks
//!   plus 5 s, when no batch can be read (too many batch reads stuck), or when every namespace
//!   is stale; `degraded` when any namespace is not `ok`, the last config change was rejected,
//!   the state file cannot be written, a batch read is stuck, or it is shutting down;
//!   `healthy` otherwise.

pub(crate) mod actor;
pub mod contract;
pub(crate) mod fleet;

use crate::model::time::OptMs;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::WallMs;
use crate::config::{CadenceConfig, CadenceMap};
use crate::model::time::duration_ms;
use crate::storage::state::CadenceState;

/// The `service` field of /health: says the document is this service's health, so a client
/// (`vmsh-scheduler status`) can tell it from another service's answer on the same address.
pub const SERVICE: &str = "vmsh-scheduler";

/// One cadence, as its namespace actor last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct CadenceSnapshot {
    /// Target, period as written and period in seconds, from the config the actor runs on.
    pub settings: ShownSettings,
    /// What is persisted: last success, backoff, failures, last batch, aggregate and error,
    /// pause, skip and last trigger. The actor's own copy, shared rather than copied: at
    /// 100,000 namespaces the copies were 35 MB.
    pub state: Arc<CadenceState>,
    /// When the cadence was configured (Unix ms): the staleness reference until it succeeds.
    pub configured_at_ms: WallMs,
    /// When it is next due (Unix ms); absent while an anchor is running or when draining.
    pub next_due_ms: OptMs,
    /// Whether an anchor is running.
    pub in_flight: bool,
    /// Why nothing is happening, when something blocks the cadence. Boxed, as the track
    /// keeps it: most cadences wait for nothing.
    pub waiting: Option<Box<Waiting>>,
    /// The anchor sent and waiting for confirmations, if any.
    pub pending: Option<Box<PendingSnapshot>>,
    /// A triggered run waits for the run under way (or the pending anchor) to end.
    pub trigger_queued: bool,
}

impl CadenceSnapshot {
    /// Id of the attempt running or to be resumed.
    pub fn attempt_id(&self) -> Option<&str> {
        self.state.attempt.as_ref().map(|a| a.id.as_str())
    }
}

impl Serialize for CadenceSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let st = &*self.state;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("target", &Shown(&self.settings.0.target))?;
        m.serialize_entry("every", &self.settings.0.every)?;
        m.serialize_entry("periodSeconds", &self.settings.period_seconds())?;
        m.serialize_entry("configuredAtMs", &self.configured_at_ms)?;
        m.serialize_entry("lastSuccessMs", &st.last_success_ms)?;
        m.serialize_entry("nextDueMs", &self.next_due_ms.get())?;
        m.serialize_entry("backoff", &st.backoff)?;
        m.serialize_entry("failures", &st.failures)?;
        m.serialize_entry("inFlight", &self.in_flight)?;
        m.serialize_entry("attemptId", &self.attempt_id())?;
        m.serialize_entry("waiting", &self.waiting)?;
        m.serialize_entry("lastBatch", &st.last_batch)?;
        m.serialize_entry("lastAggregate", &st.last_aggregate)?;
        m.serialize_entry("lastError", &st.last_error)?;
        m.serialize_entry("pending", &self.pending)?;
        if let Some(p) = &st.paused {
            m.serialize_entry("paused", p)?;
        }
        if st.skip_next {
            m.serialize_entry("skipNext", &true)?;
        }
        if self.trigger_queued {
            m.serialize_entry("triggerQueued", &true)?;
        }
        if let Some(t) = st.last_triggered_ms.get() {
            m.serialize_entry("lastTriggeredMs", &t)?;
        }
        m.end()
    }
}

/// A cadence's config as /health shows it. The actor's own copy is shared rather than copied
/// into every snapshot: at 10,000 namespaces the copies were megabytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownSettings(pub Arc<CadenceConfig>);

impl ShownSettings {
    /// The period in whole seconds, as shown.
    pub fn period_seconds(&self) -> u64 {
        self.0.period.as_secs()
    }
}

impl Serialize for ShownSettings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut s = serializer.serialize_struct("ShownSettings", 3)?;
        s.serialize_field("target", &Shown(&self.0.target))?;
        s.serialize_field("every", &self.0.every)?;
        s.serialize_field("periodSeconds", &self.period_seconds())?;
        s.end()
    }
}

/// Serializes a value as the string it displays as.
struct Shown<'a, T>(&'a T);

impl<T: std::fmt::Display> Serialize for Shown<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

/// Why a cadence is not anchoring, when something blocks it: the `waiting` field of /health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// It is due, but its namespace has no batch to anchor yet.
    NoBatch,
    /// Its attempt could not be recorded in the state file (for this reason), so nothing is
    /// sent until it can be.
    StateNotWritable(Box<str>),
    /// Its transaction offers as much as the fee cap allows and is not mined (these fees):
    /// it waits for the network's fees to drop.
    AtFeeCap(Box<str>),
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::NoBatch => f.write_str("no batch"),
            Waiting::StateNotWritable(reason) => write!(f, "state file not writable: {reason}"),
            Waiting::AtFeeCap(fees) => write!(f, "stuck at the fee cap: offering {fees}; waiting for fees to drop"),
        }
    }
}

impl Serialize for Waiting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A pending anchor, as shown in /health.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingSnapshot {
    /// Confirmations so far.
    pub depth: u32,
    /// Confirmations required.
    pub required: u32,
    /// When it was sent (Unix ms).
    pub sent_ms: Option<WallMs>,
    /// How to find it (transaction hash …).
    pub data: serde_json::Value,
    /// Times sent again after the target dropped it.
    pub resent: u32,
    /// What its transaction offers, for senders that raise it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee: Option<crate::model::PendingFee>,
}

/// One namespace, as its actor last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceSnapshot {
    /// Namespace name; one copy shared by its actor and everything /health keeps of it.
    pub name: Arc<str>,
    /// Its cadences.
    pub cadences: CadenceMap<CadenceSnapshot>,
}

/// A namespace's status, as in the original service's health JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceStatus {
    /// Anchoring on time.
    Ok,
    /// At least one cadence is failing and waiting to retry.
    BackingOff,
    /// At least one cadence missed two whole periods.
    Stale,
    /// An operator paused at least one cadence (and none is stale or backing off).
    Paused,
}

impl NamespaceStatus {
    /// As written in /health.
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceStatus::Ok => "ok",
            NamespaceStatus::BackingOff => "backing_off",
            NamespaceStatus::Stale => "stale",
            NamespaceStatus::Paused => "paused",
        }
    }
}

/// The service's overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallStatus {
    /// All well.
    Healthy,
    /// Working, with problems an operator should look at.
    Degraded,
    /// Not doing its job.
    Unhealthy,
}

impl OverallStatus {
    /// As written in /health.
    pub fn as_str(self) -> &'static str {
        match self {
            OverallStatus::Healthy => "healthy",
            OverallStatus::Degraded => "degraded",
            OverallStatus::Unhealthy => "unhealthy",
        }
    }
}

/// Whether one cadence is stale at `now`.
pub fn cadence_stale(c: &CadenceSnapshot, now: WallMs, anchor_timeout: Duration) -> bool {
    // Paused on purpose: an old pause has its own alert (VmshCadencePausedTooLong).
    if c.state.paused.is_some()
        || (c.waiting.as_deref() == Some(&Waiting::NoBatch) && c.state.last_success_ms.is_none())
    {
        return false;
    }
    let reference = c.state.last_anchored_ms().unwrap_or(c.configured_at_ms);
    let limit = duration_ms(stale_after(Duration::from_secs(c.settings.period_seconds()), anchor_timeout));
    now.saturating_sub(reference) > limit
}

/// How long after its last success a cadence counts as stale: two periods plus one anchor
/// timeout, so one slow or failed run (and its retry) does not raise the alarm, but a
/// cadence that missed two whole periods does.
pub fn stale_after(period: Duration, anchor_timeout: Duration) -> Duration {
    period.saturating_mul(2).saturating_add(anchor_timeout)
}

/// Judges a namespace.
pub fn namespace_status(ns: &NamespaceSnapshot, now: WallMs, anchor_timeout: Duration) -> NamespaceStatus {
    if ns.cadences.values().any(|c| cadence_stale(c, now, anchor_timeout)) {
        NamespaceStatus::Stale
    } else if ns.cadences.values().any(|c| c.state.backoff > 0) {
        NamespaceStatus::BackingOff
    } else if ns.cadences.values().any(|c| c.state.paused.is_some()) {
        NamespaceStatus::Paused
    } else {
        NamespaceStatus::Ok
    }
}

/// A cadence's status, judged as a namespace's is.
pub(crate) fn cadence_status(c: &CadenceSnapshot, now: WallMs, anchor_timeout: Duration) -> NamespaceStatus {
    if cadence_stale(c, now, anchor_timeout) {
        NamespaceStatus::Stale
    } else if c.state.backoff > 0 {
        NamespaceStatus::BackingOff
    } else if c.state.paused.is_some() {
        NamespaceStatus::Paused
    } else {
        NamespaceStatus::Ok
    }
}

/// Inputs to the overall judgement besides the namespaces; the default is all calm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceSignals {
    /// The config tick has stopped.
    pub tick_stalled: bool,
    /// The last config change was rejected.
    pub reload_failed: bool,
    /// The last state write failed.
    pub state_failing: bool,
    /// Shutting down.
    pub draining: bool,
    /// A batch read did not return and was left behind.
    pub batches_stuck: bool,
    /// No batch can be read at all (too many reads stuck): nothing can anchor.
    pub batches_blocked: bool,
    /// Cluster mode: the member lease cannot be counted on, so nothing is started.
    pub cluster_lease_lost: bool,
    /// A target's jobs wait for a free slot: its anchors start late.
    pub targets_saturated: bool,
}

/// How many namespaces there are, and how many are ok and stale: what the overall
/// judgement needs of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Namespaces.
    pub total: usize,
    /// Of them `ok`.
    pub ok: usize,
    /// Of them `stale`.
    pub stale: usize,
}

/// Judges the service from its namespaces' statuses and its own signals.
pub fn overall_status(statuses: &[NamespaceStatus], s: ServiceSignals) -> OverallStatus {
    let count = |want| statuses.iter().filter(|st| **st == want).count();
    let counts =
        StatusCounts { total: statuses.len(), ok: count(NamespaceStatus::Ok), stale: count(NamespaceStatus::Stale) };
    overall_status_of(counts, s)
}

/// [`overall_status`] from the counts of the namespaces' statuses.
pub fn overall_status_of(n: StatusCounts, s: ServiceSignals) -> OverallStatus {
    let all_stale = n.total > 0 && n.stale == n.total;
    if s.tick_stalled || s.batches_blocked || s.cluster_lease_lost || all_stale {
        OverallStatus::Unhealthy
    } else if s.reload_failed
        || s.state_failing
        || s.draining
        || s.batches_stuck
        || s.targets_saturated
        || n.ok < n.total
    {
        OverallStatus::Degraded
    } else {
        OverallStatus::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_scales_with_the_period() {
        const P: Duration = Duration::from_secs(60);
        assert_eq!(stale_after(P, Duration::from_secs(10)), Duration::from_secs(130));
        assert_eq!(stale_after(Duration::from_secs(86_400), Duration::ZERO), Duration::from_secs(172_800));
    }
    use crate::model::CadenceKind;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn cadence(period: u64, last: Option<WallMs>, backoff: u32) -> CadenceSnapshot {
        CadenceSnapshot {
            settings: ShownSettings(Arc::new(CadenceConfig {
                kind: CadenceKind::Fast,
                target: crate::model::Target::parse("local:x").expect("target"),
                every: format!("{period}s"),
                period: Duration::from_secs(period),
                confirmations: None,
                policy_oid: None,
                jitter: Duration::ZERO,
            })),
            state: Arc::new(CadenceState {
                last_success_ms: last,
                backoff,
                failures: backoff,
                ..CadenceState::default()
            }),
            configured_at_ms: 0,
            next_due_ms: OptMs::NONE,
            in_flight: false,
            waiting: None,
            pending: None,
            trigger_queued: false,
        }
    }

    fn ns(cadences: Vec<(CadenceKind, CadenceSnapshot)>) -> NamespaceSnapshot {
        NamespaceSnapshot { name: "n".into(), cadences: cadences.into_iter().collect() }
    }

    #[test]
    fn fleet_judgement_names_the_troubled_worst_first_up_to_the_cap_and_counts_cadences_by_status() {
        let now = 10_000_000;
        let named = |name: &str, cadences| NamespaceSnapshot { name: name.into(), ..ns(cadences) };
        let fleet = [
            named("a-ok", vec![(CadenceKind::Fast, cadence(60, Some(now), 0))]),
            named("b-backing", vec![(CadenceKind::Fast, cadence(60, Some(now), 2))]),
            named("c-stale", vec![(CadenceKind::Fast, cadence(60, Some(0), 0))]),
            named("d-backing", vec![(CadenceKind::Fast, cadence(60, Some(now), 1))]),
            named("e-ok", vec![(CadenceKind::Fast, cadence(60, Some(now), 0))]),
        ];
        let mut ledger = fleet::Ledger::default();
        for ns in &fleet {
            ledger.update(ns, now, TIMEOUT);
        }
        let judged = ledger.judged(2, |name| fleet.iter().find(|n| &*n.name == name));
        assert_eq!(judged.namespaces, 5);
        assert_eq!(judged.troubled, 3);
        let shown: Vec<&str> = judged.shown.iter().map(|(n, _)| &**n).collect();
        assert_eq!(shown, ["c-stale", "b-backing"], "the worst, then by name, up to the cap");
        // Each shown with the gauges its own series show, from its report.
        let gauges = &judged.shown[1].1;
        assert_eq!(gauges.backoff, 2);
        let fast = &gauges.cadences[0];
        assert_eq!((fast.kind, fast.target.as_str(), fast.last_success), (CadenceKind::Fast, "local:x", Some(now)));
        assert_eq!((fast.period_ms, fast.pending, fast.paused_since), (60_000, None, None));
        assert_eq!(
            judged.cadences,
            vec![
                (CadenceKind::Fast, "local:x".to_string(), "backing_off", 2),
                (CadenceKind::Fast, "local:x".to_string(), "ok", 2),
                (CadenceKind::Fast, "local:x".to_string(), "stale", 1),
            ]
        );
        let at_cap = {
            let mut c = cadence(60, Some(now), 0);
            let fee = crate::model::PendingFee {
                unit: "wei/gas".into(),
                rate: 100,
                tip: None,
                cap: Some(100),
                replacements: 3,
                at_cap: true,
                sent_ms: Some(now),
                sent_height: None,
            };
            c.pending = Some(Box::new(PendingSnapshot {
                depth: 0,
                required: 1,
                sent_ms: Some(now),
                data: serde_json::Value::Null,
                resent: 0,
                fee: Some(fee),
            }));
            named("f-capped", vec![(CadenceKind::Fast, c)])
        };
        let mut ledger = fleet::Ledger::default();
        ledger.update(&at_cap, now, TIMEOUT);
        let judged = ledger.judged(10, |_| Some(&at_cap));
        assert_eq!((judged.troubled, judged.shown.len()), (1, 1), "a transaction stuck at its fee cap is trouble");
        let pending = judged.shown[0].1.cadences[0].pending.expect("its pending anchor is shown");
        let fee = pending.fee.expect("with its fee");
        assert_eq!((pending.depth, pending.sent_ms, fee.rate, fee.at_cap), (0, Some(now), 100, true));
        assert_eq!(ledger.worst().count(), 0, "but its status is ok");
    }

    #[test]
    fn the_ledger_judges_again_when_time_alone_makes_a_cadence_stale_and_when_a_namespace_reports() {
        let now = 10_000_000;
        let named = |name: &str, cadences| NamespaceSnapshot { name: name.into(), ..ns(cadences) };
        let mut ledger = fleet::Ledger::default();
        // Period 60 s: stale once the last success is 2 × 60 s + 10 s old.
        let a = named("a", vec![(CadenceKind::Fast, cadence(60, Some(now), 0))]);
        ledger.update(&a, now, TIMEOUT);
        ledger.update(&named("b", vec![(CadenceKind::Fast, cadence(60, Some(now), 0))]), now, TIMEOUT);
        assert_eq!(ledger.count(NamespaceStatus::Ok), 2);
        let fleet = [a.clone()];
        let get = |name: &str| fleet.iter().find(|n| &*n.name == name);
        ledger.advance(now + 130_000, TIMEOUT, get, fleet.iter());
        assert_eq!(ledger.status("a"), Some(NamespaceStatus::Ok), "not stale at the limit itself");
        ledger.advance(now + 130_001, TIMEOUT, get, fleet.iter());
        assert_eq!(ledger.status("a"), Some(NamespaceStatus::Stale), "stale a millisecond past it");
        assert_eq!(ledger.worst().collect::<Vec<_>>(), ["a"]);
        // A success reported: ok again; removed: counted no more.
        ledger.update(
            &named("a", vec![(CadenceKind::Fast, cadence(60, Some(now + 131_000), 0))]),
            now + 131_000,
            TIMEOUT,
        );
        assert_eq!((ledger.count(NamespaceStatus::Ok), ledger.count(NamespaceStatus::Stale)), (2, 0));
        ledger.remove("b");
        assert_eq!((ledger.len(), ledger.count(NamespaceStatus::Ok)), (1, 1));
        assert_eq!(ledger.judged(10, |_| None).cadences, vec![(CadenceKind::Fast, "local:x".to_string(), "ok", 1)]);
        // The clock stepping back judges everything afresh.
        ledger.update(&named("b", vec![(CadenceKind::Fast, cadence(60, Some(0), 0))]), now, TIMEOUT);
        assert_eq!(ledger.status("b"), Some(NamespaceStatus::Stale));
        let fleet = [named("b", vec![(CadenceKind::Fast, cadence(60, Some(0), 0))])];
        ledger.advance(100, TIMEOUT, |n| fleet.iter().find(|x| &*x.name == n), fleet.iter());
        assert_eq!((ledger.len(), ledger.status("b")), (1, Some(NamespaceStatus::Ok)));
    }

    #[test]
    fn stale_is_two_periods_plus_a_timeout_after_the_last_success() {
        let c = cadence(60, Some(1_000_000), 0);
        assert!(!cadence_stale(&c, 1_000_000 + 130_000, TIMEOUT));
        assert!(cadence_stale(&c, 1_000_000 + 130_001, TIMEOUT));
    }

    #[test]
    fn a_daily_cadence_is_not_stale_after_an_hour() {
        let c = cadence(86_400, Some(0), 0);
        assert!(!cadence_stale(&c, 3_600_000, TIMEOUT));
    }

    #[test]
    fn a_cadence_that_never_succeeded_counts_from_when_it_was_configured() {
        let c = cadence(60, None, 1);
        assert!(!cadence_stale(&c, 100_000, TIMEOUT));
        assert!(cadence_stale(&c, 200_000, TIMEOUT));
    }

    #[test]
    fn a_cadence_added_later_counts_from_when_it_was_added() {
        let mut c = cadence(60, None, 0);
        c.configured_at_ms = 1_000_000;
        assert!(!cadence_stale(&c, 1_100_000, TIMEOUT));
        assert!(cadence_stale(&c, 1_200_000, TIMEOUT));
    }

    #[test]
    fn waiting_for_a_first_batch_is_not_stale() {
        let mut c = cadence(1, None, 0);
        c.waiting = Some(Box::new(Waiting::NoBatch));
        assert!(!cadence_stale(&c, 10_000_000, TIMEOUT));
    }

    #[test]
    fn waiting_reads_in_health_as_it_always_has() {
        let shown = |w: Waiting| serde_json::to_value(w).expect("serializes");
        assert_eq!(shown(Waiting::NoBatch), "no batch");
        assert_eq!(shown(Waiting::StateNotWritable("disk full".into())), "state file not writable: disk full");
    }

    #[test]
    fn namespace_status_prefers_stale_over_backing_off() {
        let now = 1_000_000;
        let ok = ns(vec![(CadenceKind::Fast, cadence(60, Some(now), 0))]);
        assert_eq!(namespace_status(&ok, now, TIMEOUT), NamespaceStatus::Ok);
        let backing = ns(vec![(CadenceKind::Fast, cadence(60, Some(now), 2))]);
        assert_eq!(namespace_status(&backing, now, TIMEOUT), NamespaceStatus::BackingOff);
        let stale =
            ns(vec![(CadenceKind::Fast, cadence(60, Some(now), 2)), (CadenceKind::Cold, cadence(1, Some(0), 0))]);
        assert_eq!(namespace_status(&stale, now, TIMEOUT), NamespaceStatus::Stale);
    }

    #[test]
    fn overall_status_rules() {
        let calm = ServiceSignals::default();
        use NamespaceStatus::*;
        assert_eq!(overall_status(&[Ok, Ok], calm), OverallStatus::Healthy);
        assert_eq!(overall_status(&[], calm), OverallStatus::Healthy);
        assert_eq!(overall_status(&[Ok, BackingOff], calm), OverallStatus::Degraded);
        assert_eq!(overall_status(&[Ok, Stale], calm), OverallStatus::Degraded);
        assert_eq!(overall_status(&[Stale, Stale], calm), OverallStatus::Unhealthy);
        assert_eq!(overall_status(&[Ok], ServiceSignals { reload_failed: true, ..calm }), OverallStatus::Degraded);
        assert_eq!(overall_status(&[Ok], ServiceSignals { state_failing: true, ..calm }), OverallStatus::Degraded);
        assert_eq!(overall_status(&[Ok], ServiceSignals { tick_stalled: true, ..calm }), OverallStatus::Unhealthy);
    }

    #[test]
    fn a_stuck_batch_read_degrades_and_a_reader_that_cannot_go_on_is_unhealthy() {
        let calm = ServiceSignals::default();
        use NamespaceStatus::*;
        assert_eq!(overall_status(&[Ok], ServiceSignals { batches_stuck: true, ..calm }), OverallStatus::Degraded);
        let blocked = ServiceSignals { batches_stuck: true, batches_blocked: true, ..calm };
        assert_eq!(overall_status(&[Ok], blocked), OverallStatus::Unhealthy);
    }
}
