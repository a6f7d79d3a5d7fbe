//! The series labelled by namespace, kept beside the Prometheus registry rather than in it.
//!
//! A `prometheus` vector child costs a few hundred bytes (label pairs as owned strings, a hash
//! map entry, an `Arc`), and every scrape clones and sorts all of them before encoding. At
//! 10,000 namespaces that was most of the process's memory and the whole of a scrape's time.
//! Here each namespace owns one small record of plain numbers behind an uncontended lock, and a
//! scrape writes the text straight from those records. Names, labels and values are exactly
//! those of the registry series they replace.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix_web::web::Bytes;

use super::fleet::{Counted, FleetBoard, Mode, Totals};
use crate::clock::WallMs;
use crate::model::CadenceKind;
use crate::model::ErrorClass;

/// What kind of series a family holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic counter.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family as declared: name, help, type and label names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Family {
    /// Metric name.
    pub name: &'static str,
    /// `# HELP` text.
    pub help: &'static str,
    /// Series type.
    pub kind: Kind,
    /// Label names, in the (alphabetical) order the text shows them.
    pub labels: &'static [&'static str],
}

pub(super) const fn family(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
) -> Family {
    Family { name, help, kind, labels }
}

const CNT: &[&str] = &["cadence", "namespace", "target"];
const CN: &[&str] = &["cadence", "namespace"];

// Indexes into FAMILIES, one per series a record can hold.
pub(super) const ATTEMPTED: usize = 0;
pub(super) const SUCCEEDED: usize = 1;
pub(super) const FAILED: usize = 2;
pub(super) const ERRORS: usize = 3;
pub(super) const SKIPPED: usize = 4;
pub(super) const RESENT: usize = 5;
const PENDING: usize = 6;
const PENDING_SINCE: usize = 7;
const CONFIRMATIONS: usize = 8;
const LAST_SUCCESS: usize = 9;
const NEXT_DUE: usize = 10;
const BACKOFF: usize = 11;
pub(super) const REPLACED: usize = 12;
pub(super) const REORGED: usize = 13;
const FEE: usize = 14;
const AT_CAP: usize = 15;
const PAUSED_SINCE: usize = 16;
pub(super) const MISSED: usize = 17;
const PERIOD: usize = 18;

/// Why due runs were skipped, in the order the skip counters are kept.
pub(crate) const SKIP_REASONS: [&str; 2] = ["no_batch", "operator"];

/// Why runs were missed, in the order [`CadenceSeries::missed`] counts them.
pub(crate) const MISSED_REASONS: [&str; 3] = ["downtime", "paused", "overload"];

/// Every family this table serves, in the order they are written.
pub(crate) const FAMILIES: [Family; 19] = [
    family("vmsh_anchors_attempted_total", "Anchor attempts started", Kind::Counter, CNT),
    family("vmsh_anchors_succeeded_total", "Anchor attempts that succeeded", Kind::Counter, CNT),
    family("vmsh_anchors_failed_total", "Anchor attempts that failed", Kind::Counter, CNT),
    family(
        "vmsh_anchor_errors_total",
        "Failed anchor attempts by error class (network, auth, validation, unknown)",
        Kind::Counter,
        &["cadence", "class", "namespace", "target"],
    ),
    family(
        "vmsh_anchors_skipped_total",
        "Due cadences that had nothing to anchor",
        Kind::Counter,
        &["cadence", "namespace", "reason"],
    ),
    family(
        "vmsh_anchors_resent_total",
        "Pending anchors sent again because the target dropped them",
        Kind::Counter,
        CNT,
    ),
    family(
        "vmsh_anchor_pending",
        "1 while the cadence's anchor is sent and waiting for confirmations",
        Kind::Gauge,
        CNT,
    ),
    family(
        "vmsh_anchor_pending_since_timestamp_seconds",
        "When the pending anchor was sent, Unix seconds",
        Kind::Gauge,
        CN,
    ),
    family("vmsh_anchor_confirmations", "Confirmations the pending anchor has so far", Kind::Gauge, CN),
    family(
        "vmsh_last_success_timestamp_seconds",
        "When the last successful anchor's run was due (its period counts from here), Unix seconds",
        Kind::Gauge,
        CN,
    ),
    family(
        "vmsh_next_due_timestamp_seconds",
        "When the cadence is next due (including backoff), Unix seconds",
        Kind::Gauge,
        CN,
    ),
    family(
        "vmsh_backoff_state",
        "Highest backoff level k of the namespace's cadences (0 = healthy)",
        Kind::Gauge,
        &["namespace"],
    ),
    family(
        "vmsh_anchor_replacements_total",
        "Pending transactions replaced by one offering a higher fee",
        Kind::Counter,
        CNT,
    ),
    family(
        "vmsh_anchor_reorgs_total",
        "Pending anchors whose block left the chain before they were final",
        Kind::Counter,
        CNT,
    ),
    family(
        "vmsh_anchor_pending_fee",
        "Fee rate the pending transaction offers, in its unit: wei_per_gas (EVM fee cap) or sat_per_kvb (Bitcoin)",
        Kind::Gauge,
        &["cadence", "namespace", "unit"],
    ),
    family(
        "vmsh_anchor_fee_capped",
        "1 while the pending transaction offers its cap and is not mined: it waits for fees to drop",
        Kind::Gauge,
        CN,
    ),
    family(
        "vmsh_cadence_paused_since_timestamp_seconds",
        "When an operator paused the cadence, Unix seconds; absent while it is not paused",
        Kind::Gauge,
        CN,
    ),
    family(
        "vmsh_runs_missed_total",
        "Runs by period not made because the run began more than a period late (one catch-up run makes up for them), by reason: downtime, paused, overload",
        Kind::Counter,
        &["cadence", "namespace", "reason"],
    ),
    family(
        "vmsh_cadence_period_seconds",
        "The cadence's configured period, seconds: staleness is two periods plus the anchor timeout",
        Kind::Gauge,
        CN,
    ),
];

/// A pending transaction's fee, as its series show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeSeries {
    /// The rate offered, in `unit`.
    pub rate: u64,
    /// `wei_per_gas` or `sat_per_kvb`.
    pub unit: FeeUnit,
    /// At its cap and not mined.
    pub at_cap: bool,
}

/// The unit of a fee rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeeUnit {
    /// Wei per gas (EVM).
    WeiPerGas,
    /// Satoshis per 1,000 virtual bytes (Bitcoin).
    SatPerKvb,
}

impl FeeUnit {
    /// The unit a driver names (`wei/gas`, `sat/kvB`); `None` for any other.
    pub fn from_driver(unit: &str) -> Option<Self> {
        match unit {
            "wei/gas" => Some(FeeUnit::WeiPerGas),
            "sat/kvB" => Some(FeeUnit::SatPerKvb),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            FeeUnit::WeiPerGas => "wei_per_gas",
            FeeUnit::SatPerKvb => "sat_per_kvb",
        }
    }
}

/// A pending anchor, as its series show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingSeries {
    /// Confirmations so far.
    pub depth: i64,
    /// When it was first sent (Unix ms).
    pub sent_ms: Option<WallMs>,
    /// What its transaction offers, for senders that raise it.
    pub fee: Option<FeeSeries>,
}

impl PendingSeries {
    /// A pending anchor at `depth`, sent at `sent_ms`, offering `fee` (a unit other than
    /// the two known leaves the fee out).
    pub fn of(depth: u32, sent_ms: Option<WallMs>, fee: Option<&crate::model::PendingFee>) -> Self {
        let fee = fee.and_then(|f| {
            let unit = FeeUnit::from_driver(&f.unit)?;
            Some(FeeSeries { rate: f.rate, unit, at_cap: f.at_cap })
        });
        Self { depth: i64::from(depth), sent_ms, fee }
    }
}

/// A namespace's gauges as /health last saw them: what fleet mode writes for a namespace it
/// shows, and what fills a record when per-namespace series come back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    /// `vmsh_backoff_state`: the highest backoff level of its cadences.
    pub backoff: i64,
    /// Its cadences.
    pub cadences: Vec<CadenceGauges>,
}

/// One cadence's gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct CadenceGauges {
    /// Which cadence.
    pub kind: CadenceKind,
    /// Its target, as its series label it.
    pub target: String,
    /// When its last successful anchor's run was due (Unix ms).
    pub last_success: Option<WallMs>,
    /// When it is next due (Unix ms).
    pub next_due: Option<WallMs>,
    /// Its period, ms.
    pub period_ms: i64,
    /// Its pending anchor.
    pub pending: Option<PendingSeries>,
    /// When an operator paused it (Unix ms).
    pub paused_since: Option<WallMs>,
}

impl Record {
    /// A record holding `gauges` and no counters, to write them as a record's are written.
    fn of_gauges(gauges: &Gauges) -> Self {
        let mut r = Record { backoff: Some(gauges.backoff), ..Record::default() };
        for g in &gauges.cadences {
            let c = &mut r.cadences[g.kind.index()];
            c.last_success = MaybeInt::set(g.last_success);
            c.next_due = MaybeInt::set(g.next_due);
            c.period = MaybeInt::set(Some(g.period_ms));
            c.targets.push(TargetSeries {
                target: Arc::from(g.target.as_str()),
                attempted: 0,
                succeeded: 0,
                failed: 0,
                // 0 or 1 always: a shown namespace's pending panel has its cadences either way.
                pending: Some(g.pending.is_some()),
                rare: None,
            });
            if g.pending.is_some() || g.paused_since.is_some() {
                let rare = c.rare();
                if let Some(p) = g.pending {
                    rare.confirmations = MaybeInt::set(Some(p.depth));
                    rare.pending_since = MaybeInt::set(p.sent_ms);
                    rare.fee = p.fee;
                }
                rare.paused_since = MaybeInt::set(g.paused_since);
            }
        }
        r
    }
}

// Optional values in 8 bytes rather than an Option's 16: a record per namespace holds a few
// dozen of them, and at 10,000 namespaces the difference is megabytes.

/// A counter that may not exist yet; `u64::MAX`, which no counter here reaches, means absent.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MaybeCount(u64);

impl MaybeCount {
    const NONE: Self = Self(u64::MAX);

    fn get(self) -> Option<u64> {
        (self != Self::NONE).then_some(self.0)
    }

    fn bump(&mut self) {
        self.0 = self.get().map_or(1, |n| n.saturating_add(1).min(u64::MAX - 1));
    }
}

/// A gauge that may be unset; `i64::MIN` means absent.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MaybeInt(i64);

impl MaybeInt {
    const NONE: Self = Self(i64::MIN);

    fn get(self) -> Option<i64> {
        (self != Self::NONE).then_some(self.0)
    }

    fn set(v: Option<i64>) -> Self {
        v.map_or(Self::NONE, |v| Self(v.max(i64::MIN + 1)))
    }
}

/// The series of one (cadence, target) pair.
#[derive(Debug)]
struct TargetSeries {
    target: Arc<str>,
    attempted: u64,
    succeeded: u64,
    failed: u64,
    pending: Option<bool>,
    /// The counters most pairs never count, once one of them does: at 100,000 namespaces
    /// they were 17 MB, nearly all absent.
    rare: Option<Box<TargetRare>>,
}

/// A pair's counters of what seldom happens.
#[derive(Debug)]
struct TargetRare {
    resent: MaybeCount,
    replaced: MaybeCount,
    reorged: MaybeCount,
    errors: [MaybeCount; ErrorClass::ALL.len()],
}

impl TargetRare {
    const NONE: Self = Self {
        resent: MaybeCount::NONE,
        replaced: MaybeCount::NONE,
        reorged: MaybeCount::NONE,
        errors: [MaybeCount::NONE; ErrorClass::ALL.len()],
    };
}

impl Default for TargetRare {
    fn default() -> Self {
        Self::NONE
    }
}

impl TargetSeries {
    fn rare(&mut self) -> &mut TargetRare {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// The series of one cadence. Usually one target; two while an anchor to a target that a
/// reload replaced is still running.
#[derive(Debug)]
struct CadenceSeries {
    // Timestamps in Unix milliseconds, as the scheduler's clocks give them; written as seconds.
    last_success: MaybeInt,
    next_due: MaybeInt,
    period: MaybeInt,
    /// What only a pending anchor, a pause, a skip or a missed run sets, once one does: at
    /// 100,000 namespaces it was 24 MB, nearly all absent.
    rare: Option<Box<CadenceRare>>,
    targets: Vec<TargetSeries>,
}

/// A cadence's series of what seldom happens.
#[derive(Debug)]
struct CadenceRare {
    pending_since: MaybeInt,
    confirmations: MaybeInt,
    fee: Option<FeeSeries>,
    skipped_no_batch: MaybeCount,
    skipped_operator: MaybeCount,
    paused_since: MaybeInt,
    missed: [MaybeCount; MISSED_REASONS.len()],
}

impl CadenceRare {
    const NONE: Self = Self {
        pending_since: MaybeInt::NONE,
        confirmations: MaybeInt::NONE,
        fee: None,
        skipped_no_batch: MaybeCount::NONE,
        skipped_operator: MaybeCount::NONE,
        paused_since: MaybeInt::NONE,
        missed: [MaybeCount::NONE; MISSED_REASONS.len()],
    };
}

impl Default for CadenceRare {
    fn default() -> Self {
        Self::NONE
    }
}

impl Default for CadenceSeries {
    fn default() -> Self {
        Self {
            last_success: MaybeInt::NONE,
            next_due: MaybeInt::NONE,
            period: MaybeInt::NONE,
            rare: None,
            targets: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Record {
    backoff: Option<i64>,
    cadences: [CadenceSeries; 3],
}

fn class_slot(class: ErrorClass) -> usize {
    ErrorClass::ALL.iter().position(|c| *c == class).unwrap_or(0)
}

impl CadenceSeries {
    fn rare(&mut self) -> &mut CadenceRare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The series of `target`, and whether they were created just now.
    fn target(&mut self, target: &str, name: impl FnOnce() -> Arc<str>) -> (&mut TargetSeries, bool) {
        let (at, added) = match self.targets.iter().position(|t| &*t.target == target) {
            Some(i) => (i, false),
            None => {
                // Almost always the only one: no room for more than asked.
                self.targets.reserve_exact(1);
                self.targets.push(TargetSeries {
                    target: name(),
                    attempted: 0,
                    succeeded: 0,
                    failed: 0,
                    pending: None,
                    rare: None,
                });
                (self.targets.len() - 1, true)
            }
        };
        (&mut self.targets[at], added)
    }
}

/// How many namespaces have series for each target, per cadence.
///
/// Without its `namespace` label the duration histogram is shared by every namespace on a
/// (cadence, target), so its series may go only when the last of them drops that target;
/// kept forever instead, a config that moves through targets would leave one behind per
/// target it ever named.
#[derive(Debug, Default)]
struct TargetUsers(Mutex<HashMap<Arc<str>, [usize; 3]>>);

impl TargetUsers {
    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, [usize; 3]>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, kind: CadenceKind, target: &Arc<str>) {
        self.map().entry(Arc::clone(target)).or_default()[kind.index()] += 1;
    }

    /// One namespace fewer on (`kind`, `target`); `last` runs, under the lock so that no
    /// namespace joins meanwhile, when it was the last.
    fn leave(&self, kind: CadenceKind, target: &str, last: impl FnOnce()) {
        let mut map = self.map();
        let Some(counts) = map.get_mut(target) else { return };
        let count = &mut counts[kind.index()];
        *count = count.saturating_sub(1);
        if *count == 0 {
            last();
            if counts.iter().all(|n| *n == 0) {
                map.remove(target);
            }
        }
    }
}

/// One namespace's series. Cheap to update from its actor; read by scrapes.
///
/// In fleet mode a namespace keeps no record: its counters go to the totals only, and the
/// namespaces shown have their gauges written from /health's judgement ([`Gauges`]). At
/// 100,000 namespaces the records were 45 MB, for the few hundred namespaces shown.
#[derive(Debug)]
pub struct NamespaceSeries {
    name: Arc<str>,
    /// None in fleet mode, and in namespace mode until the first event.
    record: Mutex<Option<Box<Record>>>,
    /// What every namespace of the table shares: one pointer, not three, in each.
    shared: Arc<Shared>,
}

/// What a table's namespaces share.
#[derive(Debug, Default)]
struct Shared {
    /// How many namespaces have series for each target, when the table counts them.
    users: Option<Arc<TargetUsers>>,
    /// The counters summed over every namespace, which each event adds to.
    totals: Arc<Totals>,
    /// The mode (which says whether a namespace keeps a record), and which namespaces fleet
    /// mode shows.
    board: Arc<FleetBoard>,
}

impl NamespaceSeries {
    fn lock(&self) -> MutexGuard<'_, Option<Box<Record>>> {
        // Every update leaves the record consistent, so a panic elsewhere poisons nothing real.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the record, created in namespace mode; in fleet mode there is none (one
    /// left from namespace mode goes) and `f` does not run.
    fn edit<R>(&self, f: impl FnOnce(&mut Record) -> R) -> Option<R> {
        let mut record = self.lock();
        if self.shared.board.mode() == Mode::Fleet {
            *record = None;
            return None;
        }
        Some(f(record.get_or_insert_with(Box::default)))
    }

    /// The namespace these series are labelled with.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn cadence(&self, kind: CadenceKind, f: impl FnOnce(&mut CadenceSeries)) {
        self.edit(|r| f(&mut r.cadences[kind.index()]));
    }

    /// Runs `f` on the series of (`kind`, `target`), created if needed (not in fleet mode),
    /// and counts `what` in the totals.
    fn with_target(&self, kind: CadenceKind, target: &str, what: Counted, f: impl FnOnce(&mut TargetSeries)) {
        let counted = self.edit(|r| {
            let (t, added) = r.cadences[kind.index()].target(target, || self.shared.totals.name(target));
            if added && let Some(users) = &self.shared.users {
                users.join(kind, &t.target);
            }
            self.shared.totals.count(kind, &t.target, what);
            f(t);
        });
        if counted.is_none() {
            self.shared.totals.count_named(kind, target, what);
        }
    }

    /// Creates a cadence's counters at zero so rates and alerts see them before the first event.
    pub fn init_cadence(&self, kind: CadenceKind, target: &str) {
        self.with_target(kind, target, Counted::Touched, |_| ());
        self.edit(|r| {
            r.backoff.get_or_insert(0);
        });
    }

    /// Sets each gauge of `gauges` that this record has no value for: per-namespace series
    /// come back after fleet mode with counters from zero, and the gauges the namespace's
    /// actor has not set since are taken from its last report to /health.
    pub fn fill_absent(&self, gauges: &Gauges) {
        for c in &gauges.cadences {
            let pending = c.pending.is_some();
            self.with_target(c.kind, &c.target, Counted::Touched, |t| {
                t.pending.get_or_insert(pending);
            });
            self.cadence(c.kind, |s| {
                for (slot, value) in [
                    (&mut s.last_success, c.last_success),
                    (&mut s.next_due, c.next_due),
                    (&mut s.period, Some(c.period_ms)),
                ] {
                    if slot.get().is_none() {
                        *slot = MaybeInt::set(value);
                    }
                }
                if let Some(p) = c.pending
                    && s.rare.as_ref().is_none_or(|r| r.confirmations.get().is_none())
                {
                    let rare = s.rare();
                    rare.confirmations = MaybeInt::set(Some(p.depth));
                    rare.pending_since = MaybeInt::set(p.sent_ms);
                    rare.fee = p.fee;
                }
                if c.paused_since.is_some() && s.rare.as_ref().is_none_or(|r| r.paused_since.get().is_none()) {
                    s.rare().paused_since = MaybeInt::set(c.paused_since);
                }
            });
        }
        self.edit(|r| {
            r.backoff.get_or_insert(gauges.backoff);
        });
    }

    /// `vmsh_anchors_attempted_total` + 1.
    pub fn attempted(&self, kind: CadenceKind, target: &str) {
        self.with_target(kind, target, Counted::Attempted, |t| t.attempted += 1);
    }

    /// `vmsh_anchors_succeeded_total` + 1.
    pub fn succeeded(&self, kind: CadenceKind, target: &str) {
        self.with_target(kind, target, Counted::Succeeded, |t| t.succeeded += 1);
    }

    /// `vmsh_anchors_failed_total` and `vmsh_anchor_errors_total{class}` + 1.
    pub fn failed(&self, kind: CadenceKind, target: &str, class: ErrorClass) {
        self.with_target(kind, target, Counted::Failed(class), |t| {
            t.failed += 1;
            t.rare().errors[class_slot(class)].bump();
        });
    }

    /// `vmsh_anchors_resent_total` + 1.
    pub fn resent(&self, kind: CadenceKind, target: &str) {
        self.with_target(kind, target, Counted::Resent, |t| t.rare().resent.bump());
    }

    /// `vmsh_anchors_skipped_total{reason="no_batch"}` + 1.
    pub fn skipped_no_batch(&self, kind: CadenceKind) {
        self.shared.totals.skipped(kind, 0);
        self.cadence(kind, |c| c.rare().skipped_no_batch.bump());
    }

    /// `vmsh_anchors_skipped_total{reason="operator"}` + 1: a run skipped as an operator asked.
    pub fn skipped_by_operator(&self, kind: CadenceKind) {
        self.shared.totals.skipped(kind, 1);
        self.cadence(kind, |c| c.rare().skipped_operator.bump());
    }

    /// `vmsh_cadence_paused_since_timestamp_seconds`: set while paused, absent otherwise. A
    /// paused cadence is due at no time: its `vmsh_next_due_timestamp_seconds` goes.
    pub fn set_paused_since(&self, kind: CadenceKind, ms: Option<WallMs>) {
        self.cadence(kind, |c| {
            if ms.is_none() {
                if let Some(rare) = c.rare.as_mut() {
                    rare.paused_since = MaybeInt::NONE;
                }
                return;
            }
            c.next_due = MaybeInt::NONE;
            let rare = c.rare();
            rare.paused_since = MaybeInt::set(ms);
            // At zero from the pause on, so that a rate sees the runs the pause misses.
            let paused = &mut rare.missed[1];
            if paused.get().is_none() {
                paused.0 = 0;
            }
        });
        if ms.is_some() {
            self.shared.totals.missed(kind, 1, 0);
        }
    }

    /// `vmsh_runs_missed_total{reason}` + `periods`; `reason` is one of [`MISSED_REASONS`].
    pub fn missed(&self, kind: CadenceKind, reason: &str, periods: u64) {
        let Some(at) = MISSED_REASONS.iter().position(|r| *r == reason) else { return };
        self.shared.totals.missed(kind, at, periods);
        self.cadence(kind, |c| {
            let n = &mut c.rare().missed[at];
            n.0 = n.get().unwrap_or(0).saturating_add(periods).min(u64::MAX - 1);
        });
    }

    /// `vmsh_last_success_timestamp_seconds`.
    pub fn set_last_success(&self, kind: CadenceKind, ms: WallMs) {
        self.cadence(kind, |c| c.last_success = MaybeInt::set(Some(ms)));
    }

    /// `vmsh_cadence_period_seconds`, from the period in milliseconds.
    pub fn set_period(&self, kind: CadenceKind, ms: i64) {
        self.cadence(kind, |c| c.period = MaybeInt::set(Some(ms)));
    }

    /// `vmsh_next_due_timestamp_seconds`.
    pub fn set_next_due(&self, kind: CadenceKind, ms: WallMs) {
        self.cadence(kind, |c| c.next_due = MaybeInt::set(Some(ms)));
    }

    /// `vmsh_anchor_replacements_total` + `n`.
    pub fn replaced(&self, kind: CadenceKind, target: &str, n: u64) {
        self.with_target(kind, target, Counted::Replaced(n), |t| {
            for _ in 0..n {
                t.rare().replaced.bump();
            }
        });
    }

    /// `vmsh_anchor_reorgs_total` + 1.
    pub fn reorged(&self, kind: CadenceKind, target: &str) {
        self.with_target(kind, target, Counted::Reorged, |t| t.rare().reorged.bump());
    }

    /// Marks the cadence's anchor on `target` pending with its depth, send time and fee, or
    /// not pending (which removes them).
    pub fn set_pending(&self, kind: CadenceKind, target: &str, pending: Option<PendingSeries>) {
        self.with_target(kind, target, Counted::Touched, |t| t.pending = Some(pending.is_some()));
        self.cadence(kind, |c| match pending {
            Some(p) => {
                let rare = c.rare();
                rare.confirmations = MaybeInt::set(Some(p.depth));
                if let Some(sent) = p.sent_ms {
                    rare.pending_since = MaybeInt::set(Some(sent));
                }
                rare.fee = p.fee;
            }
            None => {
                if let Some(rare) = c.rare.as_mut() {
                    rare.confirmations = MaybeInt::NONE;
                    rare.pending_since = MaybeInt::NONE;
                    rare.fee = None;
                }
            }
        });
    }

    /// `vmsh_backoff_state`.
    pub fn set_backoff(&self, level: i64) {
        self.edit(|r| r.backoff = Some(level));
    }

    /// The (cadence, target) pairs that have series.
    pub fn targets(&self) -> Vec<(CadenceKind, String)> {
        let r = self.lock();
        let Some(r) = r.as_deref() else { return Vec::new() };
        CadenceKind::ALL
            .iter()
            .zip(&r.cadences)
            .flat_map(|(k, c)| c.targets.iter().map(|t| (*k, t.target.to_string())))
            .collect()
    }

    /// The (cadence, target) pairs with series that `in_use` does not claim; usually none,
    /// and then nothing is allocated (this runs after every anchor).
    pub fn stale_targets(&self, in_use: impl Fn(CadenceKind, &str) -> bool) -> Vec<(CadenceKind, String)> {
        let r = self.lock();
        let Some(r) = r.as_deref() else { return Vec::new() };
        CadenceKind::ALL
            .iter()
            .zip(&r.cadences)
            .flat_map(|(k, c)| c.targets.iter().map(move |t| (*k, &t.target)))
            .filter(|(k, t)| !in_use(*k, t))
            .map(|(k, t)| (k, t.to_string()))
            .collect()
    }

    /// Removes the series of one (cadence, target); `last` runs when no namespace of the
    /// table has series for it any more (only for a table that counts them, see
    /// [`SeriesTable::counting_target_users`]).
    pub fn forget_cadence_target(&self, kind: CadenceKind, target: &str, last: impl FnOnce()) {
        let removed = self.edit(|r| {
            let c = &mut r.cadences[kind.index()];
            let before = c.targets.len();
            c.targets.retain(|t| &*t.target != target);
            c.targets.len() != before
        });
        if removed == Some(true)
            && let Some(users) = &self.shared.users
        {
            users.leave(kind, target, last);
        }
    }

    /// Removes the per-cadence series that do not depend on the target.
    pub fn forget_cadence(&self, kind: CadenceKind) {
        self.cadence(kind, |c| {
            let targets = std::mem::take(&mut c.targets);
            *c = CadenceSeries { targets, ..CadenceSeries::default() };
        });
    }

    /// Writes this namespace's samples, one buffer per family of [`FAMILIES`].
    fn write(&self, out: &mut [String; FAMILIES.len()], labels: &mut String) {
        if let Some(r) = self.lock().as_deref() {
            write_record(&self.name, r, out, labels, false);
        }
    }
}

/// Writes the samples of namespace `name`'s record, one buffer per family of [`FAMILIES`];
/// with `gauges_only`, none of its counters (fleet mode writes them summed).
fn write_record(name: &str, r: &Record, out: &mut [String; FAMILIES.len()], labels: &mut String, gauges_only: bool) {
    let ns = escape(name);
    for (kind, c) in CadenceKind::ALL.iter().zip(&r.cadences) {
        let cad = kind.as_str();
        for t in &c.targets {
            let tg = escape(&t.target);
            set_labels(labels, &[("cadence", cad), ("namespace", &ns), ("target", &tg)]);
            if gauges_only {
                if let Some(v) = t.pending {
                    sample(&mut out[PENDING], PENDING, labels, Value::Count(u64::from(v)));
                }
                continue;
            }
            sample(&mut out[ATTEMPTED], ATTEMPTED, labels, Value::Count(t.attempted));
            sample(&mut out[SUCCEEDED], SUCCEEDED, labels, Value::Count(t.succeeded));
            sample(&mut out[FAILED], FAILED, labels, Value::Count(t.failed));
            let tr = t.rare.as_deref().unwrap_or(&TargetRare::NONE);
            if let Some(v) = tr.resent.get() {
                sample(&mut out[RESENT], RESENT, labels, Value::Count(v));
            }
            if let Some(v) = tr.replaced.get() {
                sample(&mut out[REPLACED], REPLACED, labels, Value::Count(v));
            }
            if let Some(v) = tr.reorged.get() {
                sample(&mut out[REORGED], REORGED, labels, Value::Count(v));
            }
            if let Some(v) = t.pending {
                sample(&mut out[PENDING], PENDING, labels, Value::Count(u64::from(v)));
            }
            for (class, n) in ErrorClass::ALL.iter().zip(&tr.errors) {
                if let Some(n) = n.get() {
                    set_labels(
                        labels,
                        &[("cadence", cad), ("class", class.as_str()), ("namespace", &ns), ("target", &tg)],
                    );
                    sample(&mut out[ERRORS], ERRORS, labels, Value::Count(n));
                }
            }
        }
        set_labels(labels, &[("cadence", cad), ("namespace", &ns)]);
        let cr = c.rare.as_deref().unwrap_or(&CadenceRare::NONE);
        for (family, value) in [
            (LAST_SUCCESS, c.last_success.get().map(Value::Millis)),
            (NEXT_DUE, c.next_due.get().map(Value::Millis)),
            (PENDING_SINCE, cr.pending_since.get().map(Value::Millis)),
            (CONFIRMATIONS, cr.confirmations.get().map(Value::Int)),
            (PAUSED_SINCE, cr.paused_since.get().map(Value::Millis)),
            (PERIOD, c.period.get().map(Value::Millis)),
        ] {
            if let Some(v) = value {
                sample(&mut out[family], family, labels, v);
            }
        }
        if let Some(fee) = cr.fee {
            sample(&mut out[AT_CAP], AT_CAP, labels, Value::Count(u64::from(fee.at_cap)));
            set_labels(labels, &[("cadence", cad), ("namespace", &ns), ("unit", fee.unit.label())]);
            sample(&mut out[FEE], FEE, labels, Value::Count(fee.rate));
        }
        if gauges_only {
            continue;
        }
        for (reason, n) in SKIP_REASONS.iter().zip([cr.skipped_no_batch, cr.skipped_operator]) {
            if let Some(v) = n.get() {
                set_labels(labels, &[("cadence", cad), ("namespace", &ns), ("reason", reason)]);
                sample(&mut out[SKIPPED], SKIPPED, labels, Value::Count(v));
            }
        }
        for (reason, n) in MISSED_REASONS.iter().zip(cr.missed) {
            if let Some(v) = n.get() {
                set_labels(labels, &[("cadence", cad), ("namespace", &ns), ("reason", reason)]);
                sample(&mut out[MISSED], MISSED, labels, Value::Count(v));
            }
        }
    }
    if let Some(v) = r.backoff {
        set_labels(labels, &[("namespace", &ns)]);
        sample(&mut out[BACKOFF], BACKOFF, labels, Value::Int(v));
    }
}

/// A sample's value: counters and levels are integers; timestamps are Unix milliseconds, written as seconds.
#[derive(Clone, Copy)]
pub(super) enum Value {
    Count(u64),
    Int(i64),
    Millis(WallMs),
}

/// Fills `buf` with `{name="value",…}`. Scrapes write hundreds of thousands of these, so this
/// appends pieces rather than going through the formatting machinery.
pub(super) fn set_labels(buf: &mut String, pairs: &[(&str, &str)]) {
    buf.clear();
    buf.push('{');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            buf.push(',');
        }
        buf.push_str(name);
        buf.push_str("=\"");
        buf.push_str(value);
        buf.push('"');
    }
    buf.push('}');
}

pub(super) fn sample(out: &mut String, family: usize, labels: &str, value: Value) {
    out.push_str(FAMILIES[family].name);
    out.push_str(labels);
    out.push(' ');
    match value {
        Value::Count(v) => push_int(out, false, v),
        Value::Int(v) => push_int(out, v < 0, v.unsigned_abs()),
        Value::Millis(ms) => push_seconds(out, ms),
    }
    out.push('\n');
}

/// Appends Unix milliseconds as seconds, exactly as `{}` writes `ms as f64 / 1000.0`: the
/// shortest decimal that reads back as that number, which for whole milliseconds is the
/// seconds with up to three decimals and no trailing zeros.
fn push_seconds(out: &mut String, ms: WallMs) {
    let (whole, frac) = (ms.unsigned_abs() / 1000, ms.unsigned_abs() % 1000);
    push_int(out, ms < 0, whole);
    if frac != 0 {
        out.push('.');
        let digits = [frac / 100, frac / 10 % 10, frac % 10];
        let used = if frac % 100 == 0 {
            1
        } else if frac % 10 == 0 {
            2
        } else {
            3
        };
        for d in &digits[..used] {
            out.push(char::from(b'0' + *d as u8));
        }
    }
}

/// Appends an integer in decimal, given its sign and magnitude.
fn push_int(out: &mut String, negative: bool, magnitude: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = magnitude;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        out.push('-');
    }
    for d in &digits[at..] {
        out.push(char::from(*d));
    }
}

/// A label value as the text format writes it.
pub(crate) fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        return value.into();
    }
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// Every namespace's series.
#[derive(Debug, Default)]
pub struct SeriesTable {
    namespaces: Mutex<BTreeMap<Arc<str>, Arc<NamespaceSeries>>>,
    /// When to rebuild `namespaces` packed (locked after it).
    packing: Mutex<crate::heap::Packing>,
    /// Each family's text size at the last scrape.
    sizes: [AtomicUsize; FAMILIES.len()],
    /// What the namespaces share with the table.
    shared: Arc<Shared>,
}

impl SeriesTable {
    fn map(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, Arc<NamespaceSeries>>> {
        self.namespaces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A table that also counts how many namespaces have series for each (cadence, target),
    /// for series shared by them (see [`NamespaceSeries::forget_cadence_target`]).
    pub fn counting_target_users() -> Self {
        Self { shared: Arc::new(Shared { users: Some(Arc::default()), ..Shared::default() }), ..Self::default() }
    }

    /// The series of `name`, created empty on first use; an `Arc` name is shared, not copied.
    pub fn namespace<N: AsRef<str> + Into<Arc<str>>>(&self, name: N) -> Arc<NamespaceSeries> {
        let mut map = self.map();
        if let Some(s) = map.get(name.as_ref()) {
            return Arc::clone(s);
        }
        let name: Arc<str> = name.into();
        let series = Arc::new(NamespaceSeries {
            name: Arc::clone(&name),
            record: Mutex::default(),
            shared: Arc::clone(&self.shared),
        });
        map.insert(name, Arc::clone(&series));
        self.count(&map);
        series
    }

    /// Rebuilds the map of namespaces packed once enough were added one by one.
    pub fn pack(&self) {
        let mut map = self.map();
        self.packing.lock().unwrap_or_else(PoisonError::into_inner).pack(&mut map);
    }

    /// Sets the mode for the namespaces of `map`. Into fleet mode every record goes at once,
    /// rather than at each namespace's next event, and with them the count of target users,
    /// which fleet mode does not keep (the config's targets decide which shared series stay).
    fn count(&self, map: &BTreeMap<Arc<str>, Arc<NamespaceSeries>>) {
        if self.shared.board.set_namespaces(map.len()) && self.shared.board.mode() == Mode::Fleet {
            for series in map.values() {
                *series.lock() = None;
            }
            if let Some(users) = &self.shared.users {
                users.map().clear();
            }
        }
    }

    /// Drops `series` and everything it holds, unless a newer record took its name; `last`
    /// runs for each (cadence, target) that no namespace has series for any more.
    pub fn forget(&self, series: &Arc<NamespaceSeries>, mut last: impl FnMut(CadenceKind, &str)) {
        for (kind, target) in series.targets() {
            series.forget_cadence_target(kind, &target, || last(kind, &target));
        }
        let mut map = self.map();
        if map.get(&series.name).is_some_and(|s| Arc::ptr_eq(s, series)) {
            map.remove(&series.name);
        }
        self.count(&map);
    }

    /// Every family's samples in the text format, one chunk per family (its `# HELP` and
    /// `# TYPE` lines first); a family without samples is left out, as the registry leaves
    /// out a vector without children. Chunks rather than one text: at 10,000 namespaces the
    /// text is 15 MB, and copying it into one buffer cost a tenth of a scrape in copying and
    /// fresh pages.
    pub fn render_chunks(&self) -> Vec<Bytes> {
        let fleet = self.shared.board.mode() == Mode::Fleet;
        // Scrapes must not hold the map (and with it namespace start and stop) while writing.
        let (all, count): (Vec<Arc<NamespaceSeries>>, usize) = {
            let map = self.map();
            if fleet {
                (Vec::new(), map.len())
            } else {
                for (name, gauges) in self.shared.board.take_fills() {
                    if let Some(series) = map.get(&name) {
                        series.fill_absent(&gauges);
                    }
                }
                (map.values().cloned().collect(), map.len())
            }
        };
        // Sized from the last scrape: growing a buffer of megabytes by doubling copies it and
        // faults in fresh pages each time.
        let mut out: [String; FAMILIES.len()] = std::array::from_fn(|i| {
            let f = &FAMILIES[i];
            let mut b = String::with_capacity(self.sizes[i].load(Ordering::Relaxed));
            let _ = writeln!(b, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind.as_str());
            b
        });
        let headers: [usize; FAMILIES.len()] = std::array::from_fn(|i| out[i].len());
        let mut labels = String::with_capacity(256);
        if fleet {
            self.shared.totals.write(&mut out, &mut labels);
            for (name, gauges) in &self.shared.board.judged().shown {
                write_record(name, &Record::of_gauges(gauges), &mut out, &mut labels, true);
            }
        }
        for s in &all {
            s.write(&mut out, &mut labels);
        }
        let mut chunks = Vec::with_capacity(FAMILIES.len());
        for ((body, size), header) in out.into_iter().zip(&self.sizes).zip(headers) {
            // A little headroom so a fleet that grows between scrapes rarely reallocates.
            size.store(body.len() + body.len() / 16, Ordering::Relaxed);
            if body.len() > header {
                chunks.push(Bytes::from(body));
            }
        }
        chunks.push(self.shared.board.render(count));
        chunks
    }

    /// Shows `board`'s mode and judgement from now on.
    pub fn with_board(mut self, board: Arc<FleetBoard>) -> Self {
        board.set_namespaces(self.map().len());
        let shared = Shared { users: self.shared.users.clone(), totals: Arc::clone(&self.shared.totals), board };
        self.shared = Arc::new(shared);
        self
    }

    /// Drops fleet mode's totals of every target `keep` refuses; returns the (cadence,
    /// target) pairs dropped.
    pub fn retain_totals(&self, keep: impl Fn(&str) -> bool) -> Vec<(CadenceKind, Arc<str>)> {
        self.shared.totals.retain(keep)
    }

    /// The mode, and which namespaces fleet mode shows.
    pub fn board(&self) -> &Arc<FleetBoard> {
        &self.shared.board
    }

    /// Appends the text of [`Self::render_chunks`].
    pub fn render_into(&self, text: &mut String) {
        for chunk in self.render_chunks() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(t: &SeriesTable) -> String {
        let mut s = String::new();
        t.render_into(&mut s);
        s
    }

    #[test]
    fn compact_optional_values_round_trip_and_never_turn_absent() {
        let mut n = MaybeCount::NONE;
        assert_eq!(n.get(), None);
        n.bump();
        assert_eq!(n.get(), Some(1));
        let mut high = MaybeCount(u64::MAX - 1);
        high.bump();
        assert_eq!(high.get(), Some(u64::MAX - 1), "a counter at its limit stays a counter");
        assert_eq!(MaybeInt::set(Some(-3)).get(), Some(-3));
        assert_eq!(MaybeInt::set(Some(i64::MIN)).get(), Some(i64::MIN + 1));
        assert_eq!(MaybeInt::set(None).get(), None);
    }

    #[test]
    fn timestamps_are_written_as_float_formatting_writes_them() {
        let mut cases: Vec<WallMs> = vec![0, 1, -1, 10, 100, 999, 1_000, -1_000, -500, 1_500, 1_764_220_000_000];
        // A spread of realistic and awkward values, reproducible without a random source.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(1_600_000_000_000 + (x % 400_000_000_000) as i64);
            cases.push((x % 100_000) as i64 - 50_000);
        }
        for ms in cases {
            let mut ours = String::new();
            push_seconds(&mut ours, ms);
            assert_eq!(ours, format!("{}", ms as f64 / 1000.0), "{ms} ms");
        }
    }

    #[test]
    fn a_new_cadence_shows_zero_counters_and_no_optional_series() {
        let t = SeriesTable::default();
        t.namespace("a").init_cadence(CadenceKind::Fast, "local:a");
        let text = rendered(&t);
        assert!(text.contains("# TYPE vmsh_anchors_attempted_total counter\n"), "{text}");
        assert!(text.contains("vmsh_anchors_attempted_total{cadence=\"fast\",namespace=\"a\",target=\"local:a\"} 0\n"));
        assert!(text.contains("vmsh_anchors_failed_total{cadence=\"fast\",namespace=\"a\",target=\"local:a\"} 0\n"));
        assert!(text.contains("vmsh_backoff_state{namespace=\"a\"} 0\n"));
        for absent in ["vmsh_anchor_errors_total", "vmsh_anchor_pending", "vmsh_anchors_skipped_total"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }

    #[test]
    fn events_count_under_their_labels() {
        let t = SeriesTable::default();
        let s = t.namespace("a");
        s.init_cadence(CadenceKind::Strong, "btc:main");
        s.attempted(CadenceKind::Strong, "btc:main");
        s.failed(CadenceKind::Strong, "btc:main", ErrorClass::Auth);
        s.failed(CadenceKind::Strong, "btc:main", ErrorClass::Auth);
        s.skipped_no_batch(CadenceKind::Cold);
        let fee = Some(FeeSeries { rate: 2_500, unit: FeeUnit::SatPerKvb, at_cap: true });
        s.set_pending(CadenceKind::Strong, "btc:main", Some(PendingSeries { depth: 2, sent_ms: Some(1_500), fee }));
        s.replaced(CadenceKind::Strong, "btc:main", 2);
        s.reorged(CadenceKind::Strong, "btc:main");
        s.set_backoff(3);
        let text = rendered(&t);
        for line in [
            "vmsh_anchors_attempted_total{cadence=\"strong\",namespace=\"a\",target=\"btc:main\"} 1",
            "vmsh_anchors_failed_total{cadence=\"strong\",namespace=\"a\",target=\"btc:main\"} 2",
            "vmsh_anchor_errors_total{cadence=\"strong\",class=\"auth\",namespace=\"a\",target=\"btc:main\"} 2",
            "vmsh_anchors_skipped_total{cadence=\"cold\",namespace=\"a\",reason=\"no_batch\"} 1",
            "vmsh_anchor_pending{cadence=\"strong\",namespace=\"a\",target=\"btc:main\"} 1",
            "vmsh_anchor_confirmations{cadence=\"strong\",namespace=\"a\"} 2",
            "vmsh_anchor_pending_since_timestamp_seconds{cadence=\"strong\",namespace=\"a\"} 1.5",
            "vmsh_anchor_pending_fee{cadence=\"strong\",namespace=\"a\",unit=\"sat_per_kvb\"} 2500",
            "vmsh_anchor_fee_capped{cadence=\"strong\",namespace=\"a\"} 1",
            "vmsh_anchor_replacements_total{cadence=\"strong\",namespace=\"a\",target=\"btc:main\"} 2",
            "vmsh_anchor_reorgs_total{cadence=\"strong\",namespace=\"a\",target=\"btc:main\"} 1",
            "vmsh_backoff_state{namespace=\"a\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        s.set_pending(CadenceKind::Strong, "btc:main", None);
        let text = rendered(&t);
        assert!(text.contains("vmsh_anchor_pending{cadence=\"strong\",namespace=\"a\",target=\"btc:main\"} 0\n"));
        assert!(!text.contains("vmsh_anchor_confirmations"), "{text}");
        assert!(!text.contains("vmsh_anchor_pending_fee{") && !text.contains("vmsh_anchor_fee_capped{"), "{text}");
    }

    #[test]
    fn forgetting_removes_exactly_what_it_names() {
        let t = SeriesTable::default();
        let s = t.namespace("a");
        s.init_cadence(CadenceKind::Fast, "local:old");
        s.init_cadence(CadenceKind::Fast, "local:new");
        s.set_next_due(CadenceKind::Fast, 10_000);
        s.forget_cadence_target(CadenceKind::Fast, "local:old", || ());
        let text = rendered(&t);
        assert!(!text.contains("local:old") && text.contains("local:new"), "{text}");
        s.forget_cadence(CadenceKind::Fast);
        let text = rendered(&t);
        assert!(!text.contains("vmsh_next_due_timestamp_seconds"), "{text}");
        assert!(text.contains("local:new"), "{text}");
        t.forget(&s, |_, _| ());
        let text = rendered(&t);
        assert!(!text.contains("namespace=") && !text.contains("vmsh_anchors_"), "{text}");
        assert!(text.contains("vmsh_metrics_namespaces_shown 0\n"), "{text}");
    }

    #[test]
    fn a_stale_record_does_not_forget_its_successor() {
        let t = SeriesTable::default();
        let old = t.namespace("a");
        t.forget(&old, |_, _| ());
        let new = t.namespace("a");
        new.set_backoff(1);
        t.forget(&old, |_, _| ());
        assert!(rendered(&t).contains("vmsh_backoff_state{namespace=\"a\"} 1"));
    }

    #[test]
    fn fleet_mode_sums_counters_and_writes_gauges_only_for_the_namespaces_shown() {
        use crate::metrics::fleet::{FleetPolicy, Judged, ModeSetting};
        let board = Arc::new(FleetBoard::new(FleetPolicy { fleet_above: 2, ..FleetPolicy::default() }));
        let t = SeriesTable::default().with_board(Arc::clone(&board));
        for name in ["a", "b", "c"] {
            let s = t.namespace(name);
            s.init_cadence(CadenceKind::Fast, "local:j");
            s.attempted(CadenceKind::Fast, "local:j");
            s.set_backoff(0);
            s.set_next_due(CadenceKind::Fast, 5_000);
        }
        t.namespace("b").failed(CadenceKind::Fast, "local:j", ErrorClass::Network);
        t.namespace("b").set_backoff(2);
        assert_eq!(board.mode(), Mode::Fleet, "three namespaces are above two");
        assert!(t.map().values().all(|s| s.lock().is_none()), "fleet mode keeps no namespace's record");
        // The gauges of the namespaces shown are /health's, as it judged them.
        let gauges = Gauges {
            backoff: 2,
            cadences: vec![CadenceGauges {
                kind: CadenceKind::Fast,
                target: "local:j".into(),
                last_success: None,
                next_due: Some(5_000),
                period_ms: 1_000,
                pending: None,
                paused_since: None,
            }],
        };
        let shown = vec![(Arc::from("b"), gauges.clone())];
        board.publish(Judged { namespaces: 3, shown, troubled: 1, cadences: vec![] });
        let text = rendered(&t);
        for line in [
            "vmsh_anchors_attempted_total{cadence=\"fast\",target=\"local:j\"} 3",
            "vmsh_anchors_failed_total{cadence=\"fast\",target=\"local:j\"} 1",
            "vmsh_anchor_errors_total{cadence=\"fast\",class=\"network\",target=\"local:j\"} 1",
            "vmsh_backoff_state{namespace=\"b\"} 2",
            "vmsh_next_due_timestamp_seconds{cadence=\"fast\",namespace=\"b\"} 5",
            "vmsh_metrics_fleet_mode 1",
            "vmsh_metrics_namespaces_shown 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        for absent in ["namespace=\"a\"", "namespace=\"c\"", "vmsh_anchors_attempted_total{cadence=\"fast\",namespace"]
        {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        // Back under the threshold: every namespace's own series again, counters from zero and
        // gauges filled from /health's reports where the namespace set none since.
        t.forget(&t.namespace("c"), |_, _| ());
        assert_eq!(board.mode(), Mode::Namespaces);
        t.namespace("a").attempted(CadenceKind::Fast, "local:j");
        t.namespace("a").set_next_due(CadenceKind::Fast, 9_000);
        board.fill(["a", "b"].map(|n| (Arc::from(n), gauges.clone())).to_vec());
        let text = rendered(&t);
        for line in [
            "vmsh_anchors_attempted_total{cadence=\"fast\",namespace=\"a\",target=\"local:j\"} 1",
            "vmsh_anchors_attempted_total{cadence=\"fast\",namespace=\"b\",target=\"local:j\"} 0",
            "vmsh_next_due_timestamp_seconds{cadence=\"fast\",namespace=\"a\"} 9",
            "vmsh_next_due_timestamp_seconds{cadence=\"fast\",namespace=\"b\"} 5",
            "vmsh_cadence_period_seconds{cadence=\"fast\",namespace=\"a\"} 1",
            "vmsh_backoff_state{namespace=\"b\"} 2",
            "vmsh_metrics_fleet_mode 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(board.take_fills().is_empty(), "filled once");
        let fixed = FleetBoard::new(FleetPolicy { setting: ModeSetting::Namespaces, fleet_above: 0, troubled_max: 1 });
        fixed.set_namespaces(1_000_000);
        assert_eq!(fixed.mode(), Mode::Namespaces, "namespaces whatever the fleet");
    }

    #[test]
    fn label_values_are_escaped() {
        let t = SeriesTable::default();
        t.namespace("a\"b\\c\nd").set_backoff(0);
        assert!(rendered(&t).contains("vmsh_backoff_state{namespace=\"a\\\"b\\\\c\\nd\"} 0"));
    }
}
