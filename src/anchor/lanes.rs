//! Per-target lanes of the anchor pool: each target has its own queue and its own limit on
//! how many of its jobs run at once, so a slow target (an exec command, a TSA round trip, an
//! EVM send waiting for its nonce) fills its own slots and never anyone else's.
//!
//! A lane is *saturated* while a job of it has waited for a slot longer than
//! [`SATURATED_AFTER_MS`], and stays so until its queue is empty: anchors of that target start
//! late because its limit is too low for its load. The pool shows that in /health, a metric
//! and the log; this module only keeps the books, so it is tested without a runtime.

use std::collections::{BTreeMap, VecDeque};

use crate::clock::MonoMs;
pub use crate::metrics::lanes::{LaneBoard, LaneStatus};
use crate::model::Target;

/// How long a job may wait for a slot before its lane counts as saturated. A burst of runs
/// that come due together (a fleet on one grid) waits briefly even under a fitting limit;
/// a second is far past that and far below any period.
pub(crate) const SATURATED_AFTER_MS: MonoMs = 1_000;

/// One target's queue and slots.
#[derive(Debug)]
struct Lane<J> {
    limit: usize,
    running: usize,
    /// Waiting jobs with when each was queued.
    queue: VecDeque<(J, MonoMs)>,
    /// Since when the lane has been saturated.
    saturated_since: Option<MonoMs>,
    /// Saturated time already counted by [`Lanes::observe`], up to `counted_to`.
    counted_to: MonoMs,
}

impl<J> Lane<J> {
    /// An idle lane of `limit` slots (at least one).
    fn new(limit: usize, now: MonoMs) -> Self {
        Self { limit: limit.max(1), running: 0, queue: VecDeque::new(), saturated_since: None, counted_to: now }
    }
}

/// What [`Lanes::observe`] saw change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// The lane became saturated.
    Saturated(Target, LaneStatus),
    /// The lane is saturated no more; it was for this long (ms).
    Cleared(Target, MonoMs),
}

/// Every target's lane.
#[derive(Debug)]
pub(crate) struct Lanes<J> {
    lanes: BTreeMap<Target, Lane<J>>,
}

impl<J> Default for Lanes<J> {
    fn default() -> Self {
        Self { lanes: BTreeMap::new() }
    }
}

impl<J> Lanes<J> {
    /// Takes a job of `target`, whose limit is `limit`: gives it back to run now when a slot
    /// is free and nobody waits before it (the slot is then taken), else queues it.
    pub(crate) fn admit(&mut self, target: &Target, limit: usize, job: J, now: MonoMs) -> Option<J> {
        let lane = self.lanes.entry(target.clone()).or_insert_with(|| Lane::new(limit, now));
        lane.limit = limit.max(1);
        if lane.running < lane.limit && lane.queue.is_empty() {
            lane.running += 1;
            return Some(job);
        }
        lane.queue.push_back((job, now));
        None
    }

    /// A job of `target` is over: its slot goes to the next waiting job, given back to run
    /// (with how long it waited), if the limit still allows one.
    pub(crate) fn finished(&mut self, target: &Target, now: MonoMs) -> Option<(J, MonoMs)> {
        let lane = self.lanes.get_mut(target)?;
        lane.running = lane.running.saturating_sub(1);
        Self::next(lane, now)
    }

    fn next(lane: &mut Lane<J>, now: MonoMs) -> Option<(J, MonoMs)> {
        if lane.running >= lane.limit {
            return None;
        }
        let (job, queued_at) = lane.queue.pop_front()?;
        lane.running += 1;
        Some((job, now.saturating_sub(queued_at)))
    }

    /// Sets the limits anew (after a targets reload) by `limit_of`; gives back the waiting
    /// jobs a raised limit lets start.
    pub(crate) fn relimit(&mut self, limit_of: impl Fn(&Target) -> usize, now: MonoMs) -> Vec<(J, MonoMs)> {
        let mut ready = Vec::new();
        for (target, lane) in &mut self.lanes {
            lane.limit = limit_of(target).max(1);
            while let Some(job) = Self::next(lane, now) {
                ready.push(job);
            }
        }
        ready
    }

    /// Makes a lane for each of `targets` that has none (so each shows before its first
    /// job), and drops the idle lanes of every other target; gives back the targets dropped.
    pub(crate) fn keep(
        &mut self,
        targets: &std::collections::BTreeSet<Target>,
        limit_of: impl Fn(&Target) -> usize,
        now: MonoMs,
    ) -> Vec<Target> {
        for target in targets {
            self.lanes.entry(target.clone()).or_insert_with(|| Lane::new(limit_of(target), now));
        }
        // A lane with jobs goes once they are done (a later call), not before.
        let gone: Vec<Target> = self
            .lanes
            .iter()
            .filter(|(t, l)| !targets.contains(*t) && l.running == 0 && l.queue.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        for target in &gone {
            self.lanes.remove(target);
        }
        gone
    }

    /// Takes every waiting job out (a drain), leaving the running ones counted.
    pub(crate) fn take_queued(&mut self) -> Vec<J> {
        self.lanes.values_mut().flat_map(|l| l.queue.drain(..).map(|(j, _)| j)).collect()
    }

    /// Jobs running, in all lanes.
    pub(crate) fn running(&self) -> usize {
        self.lanes.values().map(|l| l.running).sum()
    }

    /// Jobs waiting, in all lanes.
    pub(crate) fn queued(&self) -> usize {
        self.lanes.values().map(|l| l.queue.len()).sum()
    }

    /// Judges every lane's saturation as of `now`; says which changed, and adds to `spent`
    /// each saturated lane's saturated time since the last look (ms).
    pub(crate) fn observe(&mut self, now: MonoMs, mut spent: impl FnMut(&Target, MonoMs)) -> Vec<Change> {
        let mut changes = Vec::new();
        for (target, lane) in &mut self.lanes {
            let oldest = lane.queue.front().map_or(0, |(_, at)| now.saturating_sub(*at));
            match lane.saturated_since {
                None if oldest >= SATURATED_AFTER_MS => {
                    // Saturated from when the oldest job had waited long enough.
                    let since = now - oldest + SATURATED_AFTER_MS;
                    lane.saturated_since = Some(since);
                    lane.counted_to = since;
                    changes.push(Change::Saturated(target.clone(), Self::status_of(lane, now)));
                }
                Some(since) if lane.queue.is_empty() => {
                    lane.saturated_since = None;
                    changes.push(Change::Cleared(target.clone(), now.saturating_sub(since)));
                }
                _ => {}
            }
            if lane.saturated_since.is_some() || matches!(changes.last(), Some(Change::Cleared(t, _)) if t == target) {
                spent(target, now.saturating_sub(lane.counted_to));
            }
            lane.counted_to = now;
        }
        changes
    }

    fn status_of(lane: &Lane<J>, now: MonoMs) -> LaneStatus {
        LaneStatus {
            concurrency: lane.limit,
            running: lane.running,
            queued: lane.queue.len(),
            oldest_wait_ms: lane.queue.front().map_or(0, |(_, at)| now.saturating_sub(*at)),
            saturated_since: lane.saturated_since,
        }
    }

    /// Every lane's standing, by target.
    pub(crate) fn status(&self, now: MonoMs) -> Vec<(Target, LaneStatus)> {
        self.lanes.iter().map(|(t, l)| (t.clone(), Self::status_of(l, now))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).expect("a target")
    }

    #[test]
    fn a_lane_runs_up_to_its_limit_and_hands_each_freed_slot_to_the_oldest_waiting_job() {
        let mut lanes = Lanes::default();
        let exec = t("exec:slow");
        assert_eq!(lanes.admit(&exec, 2, 1, 0), Some(1));
        assert_eq!(lanes.admit(&exec, 2, 2, 0), Some(2));
        assert_eq!(lanes.admit(&exec, 2, 3, 10), None);
        assert_eq!(lanes.admit(&exec, 2, 4, 20), None);
        assert_eq!((lanes.running(), lanes.queued()), (2, 2));
        assert_eq!(lanes.finished(&exec, 110), Some((3, 100)));
        assert_eq!(lanes.finished(&exec, 120), Some((4, 100)));
        assert_eq!(lanes.finished(&exec, 130), None);
        assert_eq!((lanes.running(), lanes.queued()), (1, 0));
    }

    #[test]
    fn a_full_lane_does_not_hold_back_another_targets_jobs() {
        let mut lanes = Lanes::default();
        let (slow, fast) = (t("exec:slow"), t("local:demo"));
        assert_eq!(lanes.admit(&slow, 1, "a", 0), Some("a"));
        assert_eq!(lanes.admit(&slow, 1, "b", 0), None);
        assert_eq!(lanes.admit(&fast, 1, "c", 0), Some("c"));
    }

    #[test]
    fn a_queued_job_keeps_its_place_before_a_later_one_even_when_a_slot_is_free() {
        let mut lanes = Lanes::default();
        let exec = t("exec:slow");
        assert_eq!(lanes.admit(&exec, 1, 1, 0), Some(1));
        assert_eq!(lanes.admit(&exec, 1, 2, 0), None);
        // A raised limit starts the waiting job first.
        assert_eq!(lanes.relimit(|_| 2, 5), vec![(2, 5)]);
        assert_eq!(lanes.admit(&exec, 2, 3, 6), None);
        // Lowered: running jobs finish; nothing starts until there is room under the new limit.
        assert!(lanes.relimit(|_| 1, 7).is_empty());
        assert_eq!(lanes.finished(&exec, 8), None);
        assert_eq!(lanes.finished(&exec, 9), Some((3, 3)));
    }

    #[test]
    fn a_lane_is_saturated_once_a_job_waited_a_second_and_until_its_queue_is_empty() {
        let mut lanes = Lanes::default();
        let exec = t("exec:slow");
        let mut spent = 0;
        lanes.admit(&exec, 1, 1, 0);
        lanes.admit(&exec, 1, 2, 0);
        assert!(lanes.observe(999, |_, ms| spent += ms).is_empty(), "not yet a second");
        let changes = lanes.observe(1_500, |_, ms| spent += ms);
        let [Change::Saturated(target, status)] = changes.as_slice() else { panic!("saturated: {changes:?}") };
        assert_eq!(target, &exec);
        assert_eq!((status.concurrency, status.running, status.queued, status.oldest_wait_ms), (1, 1, 1, 1_500));
        assert_eq!(status.saturated_since, Some(1_000));
        assert_eq!(spent, 500, "counted from when the wait passed a second");
        // The queue moves but is not empty: still saturated.
        lanes.admit(&exec, 1, 3, 1_600);
        assert_eq!(lanes.finished(&exec, 1_700), Some((2, 1_700)));
        assert!(lanes.observe(2_000, |_, ms| spent += ms).is_empty());
        assert_eq!(spent, 1_000);
        assert_eq!(lanes.finished(&exec, 2_100), Some((3, 500)));
        assert_eq!(lanes.observe(2_500, |_, ms| spent += ms), vec![Change::Cleared(exec.clone(), 1_500)]);
        assert_eq!(spent, 1_500);
        assert!(lanes.observe(9_000, |_, ms| spent += ms).is_empty());
        assert_eq!(spent, 1_500, "no time counted once cleared");
    }

    #[test]
    fn lanes_are_made_for_the_targets_in_use_and_an_unused_one_goes_once_idle() {
        let mut lanes = Lanes::default();
        let (old, new) = (t("exec:old"), t("local:new"));
        lanes.admit(&old, 1, 1, 0);
        let in_use: std::collections::BTreeSet<Target> = [new.clone()].into();
        assert!(lanes.keep(&in_use, |_| 7, 0).is_empty(), "a lane with a job running stays");
        let shown: Vec<(Target, usize)> = lanes.status(0).into_iter().map(|(t, s)| (t, s.concurrency)).collect();
        assert_eq!(shown, vec![(new.clone(), 7), (old.clone(), 1)]);
        assert_eq!(lanes.finished(&old, 5), None);
        assert_eq!(lanes.keep(&in_use, |_| 7, 5), vec![old]);
        assert_eq!(lanes.status(5).len(), 1);
    }

    #[test]
    fn a_drain_takes_the_waiting_jobs_and_keeps_the_running_ones_counted() {
        let mut lanes = Lanes::default();
        let exec = t("exec:slow");
        lanes.admit(&exec, 1, 1, 0);
        lanes.admit(&exec, 1, 2, 0);
        lanes.admit(&t("btc:main"), 1, 3, 0);
        assert_eq!(lanes.take_queued(), vec![2]);
        assert_eq!((lanes.running(), lanes.queued()), (2, 0));
    }
}
