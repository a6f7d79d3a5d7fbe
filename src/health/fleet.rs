//! The fleet's statuses kept up to date as namespaces report ([`Ledger`]), so that counting
//! them by status, naming the ones in trouble and judging the service cost nothing per
//! request and per tick however large the fleet: at 100,000 namespaces judging every one took
//! a tenth of a second, on every config tick and every `/health` request.
//!
//! A namespace is judged again when it reports, when it goes, and when time alone changes its
//! status: a cadence turns stale at a moment known from its last success and its period
//! ([`Ledger::advance`] judges those whose moment came). The wall clock stepping back can
//! make a status too pessimistic until the namespace next reports; [`Ledger::rebuild`] judges
//! everything afresh when the clock is seen to step back.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{NamespaceSnapshot, NamespaceStatus, cadence_stale, cadence_status, namespace_status, stale_after};
use crate::clock::WallMs;
use crate::config::namespaces::CadenceConfig;
use crate::metrics::fleet::Judged;
use crate::metrics::namespace::{CadenceGauges, Gauges, PendingSeries};
use crate::model::time::{OptMs, duration_ms};
use crate::model::{CadenceKind, Target};

/// The statuses, in the order of their slot in the counts.
const STATUSES: [NamespaceStatus; 4] =
    [NamespaceStatus::Ok, NamespaceStatus::BackingOff, NamespaceStatus::Stale, NamespaceStatus::Paused];

fn slot(status: NamespaceStatus) -> usize {
    STATUSES.iter().position(|s| *s == status).unwrap_or(0)
}

/// How bad a namespace in trouble is, worst first: stale, backing off, paused, then a
/// transaction at its fee cap (ok, but it will not be for long).
fn severity(status: NamespaceStatus, at_cap: bool) -> Option<u8> {
    match status {
        NamespaceStatus::Stale => Some(0),
        NamespaceStatus::BackingOff => Some(1),
        NamespaceStatus::Paused => Some(2),
        NamespaceStatus::Ok => at_cap.then_some(3),
    }
}

/// The oldest last success of a namespace's cadences (never anchored counts as oldest).
pub(crate) fn oldest_success(ns: &NamespaceSnapshot) -> WallMs {
    ns.cadences.values().map(|c| c.state.last_success_ms.unwrap_or(WallMs::MIN)).min().unwrap_or(WallMs::MIN)
}

/// The first moment after `now` at which time alone changes one of `ns`'s cadences'
/// status (one turns stale); `None` when none will.
fn next_change(ns: &NamespaceSnapshot, now: WallMs, anchor_timeout: Duration) -> Option<WallMs> {
    ns.cadences
        .values()
        .filter(|c| !cadence_stale(c, now, anchor_timeout))
        .filter_map(|c| {
            // One millisecond past the limit, as `cadence_stale` judges (more than the limit).
            let reference = c.state.last_anchored_ms().unwrap_or(c.configured_at_ms);
            let limit = duration_ms(stale_after(Duration::from_secs(c.settings.period_seconds()), anchor_timeout));
            let at = reference.saturating_add(limit).saturating_add(1);
            // A paused cadence, or one waiting for its first batch, is never stale by time.
            (c.state.paused.is_none() && at > now && cadence_stale(c, at, anchor_timeout)).then_some(at)
        })
        .min()
}

/// `ns`'s gauges, as its own series show them.
pub(crate) fn gauges(ns: &NamespaceSnapshot) -> Gauges {
    let cadences = ns
        .cadences
        .iter()
        .map(|(kind, c)| CadenceGauges {
            kind: *kind,
            target: c.settings.0.target.to_string(),
            last_success: c.state.last_success_ms,
            next_due: c.next_due_ms.get(),
            period_ms: duration_ms(c.settings.0.period),
            pending: c.pending.as_ref().map(|p| PendingSeries::of(p.depth, p.sent_ms, p.fee.as_ref())),
            paused_since: c.state.paused.as_ref().map(|p| p.since_ms),
        })
        .collect();
    let backoff = ns.cadences.values().map(|c| c.state.backoff).max().unwrap_or(0);
    Gauges { backoff: i64::from(backoff), cadences }
}

/// What a namespace adds to the counts, as it was judged. Kept for every namespace, so
/// packed: 48 bytes where plain options took 88 (4 MB at 100,000 namespaces).
#[derive(Debug, Clone)]
struct Entry {
    /// Each cadence's config (for its target), by kind: shared with the snapshot, so an
    /// entry allocates nothing of its own.
    configs: [Option<Arc<CadenceConfig>>; 3],
    /// Each cadence's status slot as counted, by kind.
    slots: [u8; 3],
    status: NamespaceStatus,
    /// Its severity among the troubled, when it is in trouble, and its oldest success.
    severity: Option<u8>,
    oldest: WallMs,
    /// When time alone next changes its status.
    next_change: OptMs,
}

impl Entry {
    /// Its place among the troubled, when it is in trouble.
    fn trouble(&self) -> Option<(u8, WallMs)> {
        self.severity.map(|s| (s, self.oldest))
    }

    /// Each cadence's config and status slot as counted, by kind.
    fn cadences(&self) -> impl Iterator<Item = (usize, &Arc<CadenceConfig>, u8)> + '_ {
        self.configs.iter().zip(self.slots).enumerate().filter_map(|(at, (c, st))| Some((at, c.as_ref()?, st)))
    }
}

/// The fleet's statuses, kept as namespaces report.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    entries: HashMap<Arc<str>, Entry>,
    /// Namespaces by status.
    by_status: [usize; STATUSES.len()],
    /// Cadences by target, kind and status.
    cadences: HashMap<Target, [[usize; STATUSES.len()]; 3]>,
    /// The namespaces in trouble, worst first, then the longest without an anchor, then by name.
    troubled: BTreeSet<(u8, WallMs, Arc<str>)>,
    /// When namespaces' statuses change by time alone (some entries out of date: checked
    /// against the namespace's own `next_change` when they come up).
    changes: BinaryHeap<Reverse<(WallMs, Arc<str>)>>,
    /// The latest `now` judged at: a clock seen before it stepped back.
    latest: WallMs,
}

impl Ledger {
    /// Judges `ns` as of `now`, in place of what it was judged before.
    pub(crate) fn update(&mut self, ns: &NamespaceSnapshot, now: WallMs, anchor_timeout: Duration) {
        self.remove(&ns.name);
        let status = namespace_status(ns, now, anchor_timeout);
        let at_cap =
            ns.cadences.values().any(|c| c.pending.as_ref().and_then(|p| p.fee.as_ref()).is_some_and(|f| f.at_cap));
        let trouble = severity(status, at_cap).map(|s| (s, oldest_success(ns)));
        let (mut configs, mut slots): ([Option<Arc<CadenceConfig>>; 3], [u8; 3]) = Default::default();
        for (kind, c) in ns.cadences.iter() {
            slots[kind.index()] = slot(cadence_status(c, now, anchor_timeout)) as u8;
            configs[kind.index()] = Some(Arc::clone(&c.settings.0));
        }
        let next_change = next_change(ns, now, anchor_timeout);
        self.by_status[slot(status)] += 1;
        let entry = Entry {
            configs,
            slots,
            status,
            severity: trouble.map(|(s, _)| s),
            oldest: trouble.map_or(WallMs::MIN, |(_, o)| o),
            next_change: OptMs::new(next_change),
        };
        for (at, config, st) in entry.cadences() {
            let counts = match self.cadences.get_mut(&config.target) {
                Some(counts) => counts,
                None => self.cadences.entry(config.target.clone()).or_default(),
            };
            counts[at][usize::from(st)] += 1;
        }
        if let Some((severity, oldest)) = trouble {
            self.troubled.insert((severity, oldest, Arc::clone(&ns.name)));
        }
        if let Some(at) = next_change {
            self.changes.push(Reverse((at, Arc::clone(&ns.name))));
        }
        self.entries.insert(Arc::clone(&ns.name), entry);
    }

    /// Forgets `name`'s part in the counts.
    pub(crate) fn remove(&mut self, name: &str) {
        let Some((name, old)) = self.entries.remove_entry(name) else { return };
        self.by_status[slot(old.status)] = self.by_status[slot(old.status)].saturating_sub(1);
        for (at, config, st) in old.cadences() {
            let target = &config.target;
            if let Some(counts) = self.cadences.get_mut(target) {
                let n = &mut counts[at][usize::from(st)];
                *n = n.saturating_sub(1);
                if counts.iter().flatten().all(|n| *n == 0) {
                    self.cadences.remove(target);
                }
            }
        }
        if let Some((severity, oldest)) = old.trouble() {
            self.troubled.remove(&(severity, oldest, name));
        }
    }

    /// Judges again, as of `now`, every namespace whose status time alone has changed since
    /// it was judged; everything when the clock stepped back. `snapshot` gives a namespace's
    /// last report.
    pub(crate) fn advance<'a>(
        &mut self,
        now: WallMs,
        anchor_timeout: Duration,
        snapshot: impl Fn(&str) -> Option<&'a NamespaceSnapshot>,
        all: impl Iterator<Item = &'a NamespaceSnapshot>,
    ) {
        if now < self.latest {
            self.rebuild(now, anchor_timeout, all);
            return;
        }
        self.latest = now;
        while let Some(Reverse((at, _))) = self.changes.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, name))) = self.changes.pop() else { break };
            // Judged again since this change was queued: its own entry says when it is due.
            if self.entries.get(&name).is_none_or(|e| e.next_change.get() != Some(at)) {
                continue;
            }
            if let Some(ns) = snapshot(&name) {
                self.update(ns, now, anchor_timeout);
            }
        }
    }

    /// Judges every namespace afresh as of `now`.
    pub(crate) fn rebuild<'a>(
        &mut self,
        now: WallMs,
        anchor_timeout: Duration,
        all: impl Iterator<Item = &'a NamespaceSnapshot>,
    ) {
        *self = Ledger { latest: now, ..Ledger::default() };
        for ns in all {
            self.update(ns, now, anchor_timeout);
        }
    }

    /// Gives back the room a growing fleet left unused.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.changes.shrink_to_fit();
    }

    /// How `name` was judged last.
    pub(crate) fn status(&self, name: &str) -> Option<NamespaceStatus> {
        self.entries.get(name).map(|e| e.status)
    }

    /// Namespaces judged.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many namespaces have each status.
    pub(crate) fn by_status(&self) -> impl Iterator<Item = (NamespaceStatus, usize)> + '_ {
        STATUSES.iter().copied().zip(self.by_status.iter().copied()).filter(|(_, n)| *n > 0)
    }

    /// How many have `status`.
    pub(crate) fn count(&self, status: NamespaceStatus) -> usize {
        self.by_status[slot(status)]
    }

    /// The namespaces not ok, worst first, then the longest without an anchor, then by name.
    pub(crate) fn worst(&self) -> impl Iterator<Item = &str> + '_ {
        self.troubled.iter().filter(|(severity, _, _)| *severity < 3).map(|(_, _, name)| &**name)
    }

    /// The judgement fleet mode's metrics show: the troubled namespaces (those at a fee cap
    /// too), at most `max` named, with their gauges from `snapshot`.
    pub(crate) fn judged<'a>(&self, max: usize, snapshot: impl Fn(&str) -> Option<&'a NamespaceSnapshot>) -> Judged {
        let mut cadences: Vec<(CadenceKind, String, &'static str, usize)> = Vec::new();
        for (target, kinds) in &self.cadences {
            for (kind, counts) in CadenceKind::ALL.iter().zip(kinds) {
                for (status, n) in STATUSES.iter().zip(counts) {
                    if *n > 0 {
                        cadences.push((*kind, target.to_string(), status.as_str(), *n));
                    }
                }
            }
        }
        cadences.sort_unstable_by(|a, b| (a.0.as_str(), &a.1, a.2).cmp(&(b.0.as_str(), &b.1, b.2)));
        Judged {
            namespaces: self.entries.len(),
            shown: self
                .troubled
                .iter()
                .take(max)
                .map(|(_, _, name)| (Arc::clone(name), snapshot(name).map(gauges).unwrap_or_default()))
                .collect(),
            troubled: self.troubled.len(),
            cadences,
        }
    }
}

#[cfg(test)]
mod tests {
    /// An entry is kept for every namespace: held to its size, as the scheduler's own
    /// per-namespace parts are (`scheduler::namespace::tests`).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_ledger_entry_stays_within_its_size() {
        assert!(std::mem::size_of::<super::Entry>() <= 48, "{}", std::mem::size_of::<super::Entry>());
    }
}
