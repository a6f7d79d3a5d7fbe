//! Fleet mode: /metrics for fleets too large for a series per namespace.
//!
//! At 10,000 namespaces a scrape with per-namespace series is 15 MB, and no Prometheus should
//! take millions of series from one target. In fleet mode the counters are summed over every
//! namespace by cadence and target ([`Totals`], kept from the first event, so a switch of mode
//! never makes a counter jump), the cadences are counted by cadence, target and status
//! (`vmsh_cadences`), and the per-namespace gauges are written only for the namespaces that are
//! not ok — stale, backing off, paused, or stuck at a fee cap — worst first, up to a cap. The
//! number of series is then bounded by the problems, not by the fleet.
//!
//! Which namespaces are in trouble is the health actor's judgement ([`Judged`]), published on
//! every config tick; which mode runs follows `VMSH_METRICS_MODE` ([`FleetPolicy`]) and the
//! number of namespaces with series, so a scrape right after start is already in its mode.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix_web::web::Bytes;

use super::namespace::{
    ATTEMPTED, ERRORS, FAILED, FAMILIES as NAMESPACE_FAMILIES, Family, Gauges, Kind, MISSED, MISSED_REASONS, REORGED,
    REPLACED, RESENT, SKIP_REASONS, SKIPPED, SUCCEEDED, Value, escape, family, sample, set_labels,
};
use crate::model::{CadenceKind, ErrorClass};

/// How the mode is chosen (`VMSH_METRICS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSetting {
    /// Fleet mode above [`FleetPolicy::fleet_above`] namespaces, per-namespace series below.
    Auto,
    /// Per-namespace series whatever the fleet.
    Namespaces,
    /// Fleet mode whatever the fleet.
    Fleet,
}

impl ModeSetting {
    /// The setting's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeSetting::Auto => "auto",
            ModeSetting::Namespaces => "namespaces",
            ModeSetting::Fleet => "fleet",
        }
    }
}

/// Which series /metrics writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every namespace's series.
    Namespaces,
    /// Aggregates, and the series of the namespaces in trouble.
    Fleet,
}

impl Mode {
    /// The mode's word, as /health and the log say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Namespaces => "namespaces",
            Mode::Fleet => "fleet",
        }
    }
}

/// When fleet mode runs, and how many namespaces it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetPolicy {
    /// `VMSH_METRICS_MODE`.
    pub setting: ModeSetting,
    /// `VMSH_METRICS_FLEET_ABOVE`: with `auto`, fleet mode runs above this many namespaces.
    pub fleet_above: usize,
    /// `VMSH_METRICS_TROUBLED_MAX`: fleet mode writes the series of at most this many
    /// namespaces in trouble.
    pub troubled_max: usize,
}

impl Default for FleetPolicy {
    fn default() -> Self {
        Self { setting: ModeSetting::Auto, fleet_above: 1_000, troubled_max: 500 }
    }
}

impl FleetPolicy {
    /// The mode for a fleet of `namespaces`.
    pub fn mode(&self, namespaces: usize) -> Mode {
        match self.setting {
            ModeSetting::Namespaces => Mode::Namespaces,
            ModeSetting::Fleet => Mode::Fleet,
            ModeSetting::Auto if namespaces > self.fleet_above => Mode::Fleet,
            ModeSetting::Auto => Mode::Namespaces,
        }
    }
}

/// The health actor's judgement of the fleet, as fleet mode shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judged {
    /// Namespaces judged.
    pub namespaces: usize,
    /// The namespaces in trouble whose series are written, worst first, at most the cap,
    /// with their gauges.
    pub shown: Vec<(Arc<str>, Gauges)>,
    /// Namespaces in trouble, shown or not.
    pub troubled: usize,
    /// Cadences by (cadence, target, status).
    pub cadences: Vec<(CadenceKind, String, &'static str, usize)>,
}

/// Counters of one (cadence, target), summed over every namespace.
#[derive(Debug, Default, Clone)]
struct TargetTotals {
    attempted: u64,
    succeeded: u64,
    failed: u64,
    resent: Option<u64>,
    replaced: Option<u64>,
    reorged: Option<u64>,
    errors: [Option<u64>; ErrorClass::ALL.len()],
}

/// Counters of one cadence kind, summed over every namespace.
#[derive(Debug, Default, Clone)]
struct CadenceTotals {
    skipped: [Option<u64>; SKIP_REASONS.len()],
    missed: [Option<u64>; MISSED_REASONS.len()],
}

/// One event, as the totals count it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counted {
    /// Created at zero.
    Touched,
    /// An attempt started.
    Attempted,
    /// An attempt succeeded.
    Succeeded,
    /// An attempt failed, with this class.
    Failed(ErrorClass),
    /// A pending anchor sent again.
    Resent,
    /// Pending transactions replaced.
    Replaced(u64),
    /// A pending anchor's block left the chain.
    Reorged,
}

fn add(n: &mut Option<u64>, by: u64) {
    *n = Some(n.unwrap_or(0).saturating_add(by));
}

#[derive(Debug, Default)]
struct TotalsInner {
    targets: BTreeMap<(usize, Arc<str>), TargetTotals>,
    /// One copy of each target's name, for every namespace's series to share.
    names: HashSet<Arc<str>>,
    cadences: [CadenceTotals; 3],
}

/// The counters summed over every namespace, counted as events happen so that they never go
/// down when a namespace goes.
#[derive(Debug, Default)]
pub(crate) struct Totals(Mutex<TotalsInner>);

impl Totals {
    fn lock(&self) -> MutexGuard<'_, TotalsInner> {
        // Every update is one addition: a poisoned lock holds nothing half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an event of (`kind`, `target`).
    pub(crate) fn count(&self, kind: CadenceKind, target: &Arc<str>, what: Counted) {
        Self::count_in(&mut self.lock(), kind, target, what);
    }

    /// Counts an event of (`kind`, `target`) by the target's name alone, under one lock.
    pub(crate) fn count_named(&self, kind: CadenceKind, target: &str, what: Counted) {
        let mut inner = self.lock();
        let name = Self::name_in(&mut inner, target);
        Self::count_in(&mut inner, kind, &name, what);
    }

    fn name_in(inner: &mut TotalsInner, target: &str) -> Arc<str> {
        if let Some(name) = inner.names.get(target) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(target);
        inner.names.insert(Arc::clone(&name));
        name
    }

    fn count_in(inner: &mut TotalsInner, kind: CadenceKind, target: &Arc<str>, what: Counted) {
        let key = (kind.index(), Arc::clone(target));
        let t = inner.targets.entry(key).or_default();
        match what {
            Counted::Touched => {}
            Counted::Attempted => t.attempted += 1,
            Counted::Succeeded => t.succeeded += 1,
            Counted::Failed(class) => {
                t.failed += 1;
                let at = ErrorClass::ALL.iter().position(|c| *c == class).unwrap_or(0);
                add(&mut t.errors[at], 1);
            }
            Counted::Resent => add(&mut t.resent, 1),
            Counted::Replaced(n) => add(&mut t.replaced, n),
            Counted::Reorged => add(&mut t.reorged, 1),
        }
    }

    /// Drops the totals of every target `keep` refuses (one no namespace names any more);
    /// returns the (cadence, target) pairs dropped.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) -> Vec<(CadenceKind, Arc<str>)> {
        let mut inner = self.lock();
        let mut dropped = Vec::new();
        inner.targets.retain(|(kind, target), _| {
            let kept = keep(target);
            if !kept && let Some(kind) = CadenceKind::ALL.get(*kind) {
                dropped.push((*kind, Arc::clone(target)));
            }
            kept
        });
        inner.names.retain(|name| keep(name));
        dropped
    }

    /// The shared copy of `target`'s name: at 100,000 namespaces a copy each was 10 MB.
    pub(crate) fn name(&self, target: &str) -> Arc<str> {
        Self::name_in(&mut self.lock(), target)
    }

    /// Counts a run skipped for `reason` (one of [`SKIP_REASONS`]).
    pub(crate) fn skipped(&self, kind: CadenceKind, reason: usize) {
        if let Some(n) = self.lock().cadences[kind.index()].skipped.get_mut(reason) {
            add(n, 1);
        }
    }

    /// Counts `periods` runs missed for `reason` (one of [`MISSED_REASONS`]); zero makes the
    /// series exist.
    pub(crate) fn missed(&self, kind: CadenceKind, reason: usize, periods: u64) {
        if let Some(n) = self.lock().cadences[kind.index()].missed.get_mut(reason) {
            add(n, periods);
        }
    }

    /// Writes the counter families without the `namespace` label, into the buffers of the
    /// per-namespace families (so each family stays one block of the text).
    pub(crate) fn write(&self, out: &mut [String; NAMESPACE_FAMILIES.len()], labels: &mut String) {
        let inner = self.lock();
        for ((at, target), t) in &inner.targets {
            let cad = CadenceKind::ALL[*at].as_str();
            let tg = escape(target);
            set_labels(labels, &[("cadence", cad), ("target", &tg)]);
            sample(&mut out[ATTEMPTED], ATTEMPTED, labels, Value::Count(t.attempted));
            sample(&mut out[SUCCEEDED], SUCCEEDED, labels, Value::Count(t.succeeded));
            sample(&mut out[FAILED], FAILED, labels, Value::Count(t.failed));
            for (family, n) in [(RESENT, t.resent), (REPLACED, t.replaced), (REORGED, t.reorged)] {
                if let Some(n) = n {
                    sample(&mut out[family], family, labels, Value::Count(n));
                }
            }
            for (class, n) in ErrorClass::ALL.iter().zip(&t.errors) {
                if let Some(n) = n {
                    set_labels(labels, &[("cadence", cad), ("class", class.as_str()), ("target", &tg)]);
                    sample(&mut out[ERRORS], ERRORS, labels, Value::Count(*n));
                }
            }
        }
        for (kind, c) in CadenceKind::ALL.iter().zip(&inner.cadences) {
            let cad = kind.as_str();
            for (reason, n) in SKIP_REASONS.iter().zip(&c.skipped) {
                if let Some(n) = n {
                    set_labels(labels, &[("cadence", cad), ("reason", reason)]);
                    sample(&mut out[SKIPPED], SKIPPED, labels, Value::Count(*n));
                }
            }
            for (reason, n) in MISSED_REASONS.iter().zip(&c.missed) {
                if let Some(n) = n {
                    set_labels(labels, &[("cadence", cad), ("reason", reason)]);
                    sample(&mut out[MISSED], MISSED, labels, Value::Count(*n));
                }
            }
        }
    }
}

/// The families fleet mode adds, written in both modes.
pub(crate) const FAMILIES: [Family; 4] = [
    family(
        "vmsh_cadences",
        "Cadences by status (ok, backing_off, stale, paused), as the health judgement last counted them",
        Kind::Gauge,
        &["cadence", "status", "target"],
    ),
    family(
        "vmsh_namespaces_troubled",
        "Namespaces that are not ok (stale, backing off, paused, or stuck at a fee cap)",
        Kind::Gauge,
        &[],
    ),
    family(
        "vmsh_metrics_fleet_mode",
        "1 while /metrics is in fleet mode: counters by cadence and target, per-namespace series only for namespaces not ok",
        Kind::Gauge,
        &[],
    ),
    family(
        "vmsh_metrics_namespaces_shown",
        "Namespaces whose own series /metrics writes (in fleet mode those not ok, up to VMSH_METRICS_TROUBLED_MAX)",
        Kind::Gauge,
        &[],
    ),
];

/// Where the health actor's judgement meets the scrape: the mode, and what was judged.
#[derive(Debug)]
pub struct FleetBoard {
    policy: FleetPolicy,
    fleet: AtomicBool,
    /// Namespaces with series, which the mode follows.
    namespaces: AtomicUsize,
    judged: Mutex<Arc<Judged>>,
    /// Gauges to fill the records of namespaces with, once per-namespace series are back.
    fills: Mutex<Vec<(Arc<str>, Gauges)>>,
}

impl Default for FleetBoard {
    fn default() -> Self {
        Self::new(FleetPolicy::default())
    }
}

impl FleetBoard {
    /// A board for `policy`, in the mode it gives an empty fleet until the first judgement.
    pub fn new(policy: FleetPolicy) -> Self {
        let fleet = policy.mode(0) == Mode::Fleet;
        Self {
            policy,
            fleet: AtomicBool::new(fleet),
            namespaces: AtomicUsize::new(0),
            judged: Mutex::default(),
            fills: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Judged>> {
        self.judged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How the mode is chosen.
    pub fn policy(&self) -> FleetPolicy {
        self.policy
    }

    /// The mode running.
    pub fn mode(&self) -> Mode {
        if self.fleet.load(Ordering::Relaxed) { Mode::Fleet } else { Mode::Namespaces }
    }

    /// Namespaces with series: what the mode follows.
    pub fn namespaces(&self) -> usize {
        self.namespaces.load(Ordering::Relaxed)
    }

    /// The last judgement.
    pub fn judged(&self) -> Arc<Judged> {
        Arc::clone(&self.lock())
    }

    /// Takes a judgement.
    pub(crate) fn publish(&self, judged: Judged) {
        *self.lock() = Arc::new(judged);
    }

    /// Sets the mode for a fleet of `namespaces`; returns whether it changed.
    pub(crate) fn set_namespaces(&self, namespaces: usize) -> bool {
        self.namespaces.store(namespaces, Ordering::Relaxed);
        let fleet = self.policy.mode(namespaces) == Mode::Fleet;
        self.fleet.swap(fleet, Ordering::Relaxed) != fleet
    }

    /// Hands over the gauges of every namespace, from /health's last reports, for the
    /// records that per-namespace series start afresh with after fleet mode.
    pub(crate) fn fill(&self, gauges: Vec<(Arc<str>, Gauges)>) {
        *self.fills.lock().unwrap_or_else(PoisonError::into_inner) = gauges;
    }

    /// The gauges handed over by [`FleetBoard::fill`], once.
    pub(crate) fn take_fills(&self) -> Vec<(Arc<str>, Gauges)> {
        std::mem::take(&mut *self.fills.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// How many namespaces' own series are written: all of `all` in namespace mode, the shown
    /// troubled ones in fleet mode.
    pub(crate) fn shown_count(&self, all: usize) -> usize {
        match self.mode() {
            Mode::Namespaces => all,
            Mode::Fleet => self.lock().shown.len(),
        }
    }

    /// The families of [`FAMILIES`], as one chunk.
    pub(crate) fn render(&self, all: usize) -> Bytes {
        let judged = self.judged();
        let mut out = String::with_capacity(512 + judged.cadences.len() * 80);
        let mut labels = String::new();
        let header = |out: &mut String, f: &Family| {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind.as_str());
        };
        if !judged.cadences.is_empty() {
            header(&mut out, &FAMILIES[0]);
            for (kind, target, status, n) in &judged.cadences {
                set_labels(&mut labels, &[("cadence", kind.as_str()), ("status", status), ("target", &escape(target))]);
                let _ = writeln!(out, "{}{labels} {n}", FAMILIES[0].name);
            }
        }
        let shown = self.shown_count(all);
        for (f, v) in FAMILIES[1..].iter().zip([judged.troubled, usize::from(self.mode() == Mode::Fleet), shown]) {
            header(&mut out, f);
            let _ = writeln!(out, "{} {v}", f.name);
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_runs_fleet_mode_above_its_threshold_and_the_other_settings_whatever_the_fleet() {
        let auto = FleetPolicy { fleet_above: 10, ..FleetPolicy::default() };
        assert_eq!(auto.mode(10), Mode::Namespaces);
        assert_eq!(auto.mode(11), Mode::Fleet);
        let fixed = |setting| FleetPolicy { setting, ..auto };
        assert_eq!(fixed(ModeSetting::Namespaces).mode(1_000_000), Mode::Namespaces);
        assert_eq!(fixed(ModeSetting::Fleet).mode(0), Mode::Fleet);
    }

    #[test]
    fn the_board_follows_the_fleet_across_the_threshold_both_ways() {
        let board = FleetBoard::new(FleetPolicy { fleet_above: 2, ..FleetPolicy::default() });
        assert_eq!(board.mode(), Mode::Namespaces);
        board.set_namespaces(2);
        assert_eq!(board.mode(), Mode::Namespaces);
        board.set_namespaces(3);
        assert_eq!(board.mode(), Mode::Fleet);
        board.set_namespaces(1);
        assert_eq!(board.mode(), Mode::Namespaces);
    }

    #[test]
    fn totals_sum_every_namespace_and_write_without_the_namespace_label() {
        let totals = Totals::default();
        let target: Arc<str> = Arc::from("exec:x");
        totals.count(CadenceKind::Fast, &target, Counted::Touched);
        totals.count(CadenceKind::Fast, &target, Counted::Attempted);
        totals.count(CadenceKind::Fast, &target, Counted::Attempted);
        totals.count(CadenceKind::Fast, &target, Counted::Failed(ErrorClass::Auth));
        totals.count(CadenceKind::Fast, &target, Counted::Succeeded);
        totals.skipped(CadenceKind::Cold, 0);
        totals.missed(CadenceKind::Fast, 1, 0);
        let mut out: [String; NAMESPACE_FAMILIES.len()] = std::array::from_fn(|_| String::new());
        totals.write(&mut out, &mut String::new());
        let text = out.concat();
        for line in [
            "vmsh_anchors_attempted_total{cadence=\"fast\",target=\"exec:x\"} 2",
            "vmsh_anchors_succeeded_total{cadence=\"fast\",target=\"exec:x\"} 1",
            "vmsh_anchors_failed_total{cadence=\"fast\",target=\"exec:x\"} 1",
            "vmsh_anchor_errors_total{cadence=\"fast\",class=\"auth\",target=\"exec:x\"} 1",
            "vmsh_anchors_skipped_total{cadence=\"cold\",reason=\"no_batch\"} 1",
            "vmsh_runs_missed_total{cadence=\"fast\",reason=\"paused\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("namespace="), "{text}");
        assert!(!text.contains("vmsh_anchors_resent_total"), "absent until it happens: {text}");
    }

    #[test]
    fn the_board_writes_cadences_by_status_and_its_own_gauges() {
        let board = FleetBoard::new(FleetPolicy { setting: ModeSetting::Fleet, ..FleetPolicy::default() });
        board.publish(Judged {
            namespaces: 3,
            shown: vec![(Arc::from("b"), Gauges::default())],
            troubled: 1,
            cadences: vec![
                (CadenceKind::Fast, "local:j".into(), "ok", 2),
                (CadenceKind::Fast, "local:j".into(), "stale", 1),
            ],
        });
        let text = String::from_utf8_lossy(&board.render(3)).into_owned();
        for line in [
            "vmsh_cadences{cadence=\"fast\",status=\"ok\",target=\"local:j\"} 2",
            "vmsh_cadences{cadence=\"fast\",status=\"stale\",target=\"local:j\"} 1",
            "vmsh_namespaces_troubled 1",
            "vmsh_metrics_fleet_mode 1",
            "vmsh_metrics_namespaces_shown 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
