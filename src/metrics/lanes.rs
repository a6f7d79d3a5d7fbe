//! The anchor pool's lanes as /health shows them: each target's slots and whether it is
//! saturated. The anchor pool publishes here; the health actor reads.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::clock::MonoMs;
use crate::model::Target;

/// How a lane stands, for health and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneStatus {
    /// Jobs of the target that may run at once.
    pub concurrency: usize,
    /// Jobs running.
    pub running: usize,
    /// Jobs waiting for a slot.
    pub queued: usize,
    /// How long the oldest waiting job has waited (ms); 0 when none waits.
    pub oldest_wait_ms: MonoMs,
    /// Since when (monotonic ms) the lane has been saturated; `None` when it is not.
    pub saturated_since: Option<MonoMs>,
}

/// The lanes' standing as the pool last published it, read by the health actor.
#[derive(Debug, Default)]
pub struct LaneBoard(Mutex<Vec<(Target, LaneStatus)>>);

impl LaneBoard {
    fn lock(&self) -> MutexGuard<'_, Vec<(Target, LaneStatus)>> {
        // Nothing is left half-written under the lock: a poisoned one is as good as any.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces what is shown.
    pub(crate) fn publish(&self, lanes: Vec<(Target, LaneStatus)>) {
        *self.lock() = lanes;
    }

    /// Every lane's standing, by target.
    pub fn snapshot(&self) -> Vec<(Target, LaneStatus)> {
        self.lock().clone()
    }
}
