//! The health judgement as fleet mode's metrics need it ([`judge`]): which namespaces are in
//! trouble, worst first, and how many cadences of each (cadence, target) have each status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{NamespaceSnapshot, NamespaceStatus, cadence_status, namespace_status};
use crate::clock::WallMs;
use crate::metrics::fleet::Judged;
use crate::model::{CadenceKind, Target};

/// How bad a namespace in trouble is, worst first; `None` when it is ok.
fn trouble(ns: &NamespaceSnapshot, now: WallMs, anchor_timeout: Duration) -> Option<u8> {
    match namespace_status(ns, now, anchor_timeout) {
        NamespaceStatus::Stale => Some(0),
        NamespaceStatus::BackingOff => Some(1),
        NamespaceStatus::Paused => Some(2),
        // Not late yet, but a transaction at its fee cap waits for fees to drop: it will be.
        NamespaceStatus::Ok => ns
            .cadences
            .values()
            .any(|c| c.pending.as_ref().and_then(|p| p.fee.as_ref()).is_some_and(|f| f.at_cap))
            .then_some(3),
    }
}

/// Judges `namespaces` as of `now`: the troubled ones, worst first then by name, at most
/// `max` of them named; and the cadences counted by (cadence, target, status).
pub(crate) fn judge<'a>(
    namespaces: impl ExactSizeIterator<Item = &'a NamespaceSnapshot>,
    now: WallMs,
    anchor_timeout: Duration,
    max: usize,
) -> Judged {
    let total = namespaces.len();
    let mut troubled: Vec<(u8, &str)> = Vec::new();
    let mut counts: HashMap<(CadenceKind, &Target, &'static str), usize> = HashMap::new();
    for ns in namespaces {
        if let Some(how_bad) = trouble(ns, now, anchor_timeout) {
            troubled.push((how_bad, &ns.name));
        }
        for (kind, c) in &ns.cadences {
            let status = cadence_status(c, now, anchor_timeout).as_str();
            *counts.entry((*kind, &c.settings.0.target, status)).or_default() += 1;
        }
    }
    let count = troubled.len();
    troubled.sort_unstable();
    troubled.truncate(max);
    let mut cadences: Vec<(CadenceKind, String, &'static str, usize)> =
        counts.into_iter().map(|((kind, target, status), n)| (kind, target.to_string(), status, n)).collect();
    cadences.sort_unstable_by(|a, b| (a.0.as_str(), &a.1, a.2).cmp(&(b.0.as_str(), &b.1, b.2)));
    Judged {
        namespaces: total,
        shown: troubled.into_iter().map(|(_, name)| Arc::from(name)).collect(),
        troubled: count,
        cadences,
    }
}
