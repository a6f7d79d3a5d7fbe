//! The start gate: until when this process may start anything. A single process may always;
//! a cluster replica only while its member lease can be counted on, so one that was paused
//! or cut off from etcd starts nothing once it wakes, whatever its timers say.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::time::MonoMs;

/// Until when (monotonic ms) runs may start.
#[derive(Debug)]
pub(crate) struct StartGate(AtomicI64);

impl StartGate {
    /// Open for good: a single process.
    pub(crate) fn open() -> Self {
        Self(AtomicI64::new(MonoMs::MAX))
    }

    /// Closed until told otherwise: a replica before its first round.
    pub(crate) fn closed() -> Self {
        Self(AtomicI64::new(MonoMs::MIN))
    }

    /// Open until `until` (monotonic ms).
    pub(crate) fn open_until(&self, until: MonoMs) {
        self.0.store(until, Ordering::SeqCst);
    }

    /// Whether a run may start at `now` (monotonic ms).
    pub(crate) fn is_open(&self, now: MonoMs) -> bool {
        now < self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_is_open_only_before_its_deadline() {
        assert!(StartGate::open().is_open(MonoMs::MAX - 1));
        let gate = StartGate::closed();
        assert!(!gate.is_open(0));
        gate.open_until(1_000);
        assert!(gate.is_open(999) && !gate.is_open(1_000), "the deadline itself is past");
    }
}
