//! Time sources. Two clocks with two jobs: the monotonic clock drives every timer inside one
//! process, so a wall-clock jump neither fires a burst of anchors nor stalls a cadence; the wall
//! clock only stamps what outlives the process (state, receipts, metrics) and re-bases those
//! stamps onto the monotonic timeline at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use crate::model::time::{MonoMs, WallMs, compact_utc, rfc3339};

/// A source of both clocks; injectable so time-dependent logic is testable without waiting.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, Unix epoch milliseconds.
    fn wall_ms(&self) -> WallMs;
    /// Monotonic time in milliseconds since an arbitrary fixed origin.
    fn mono_ms(&self) -> MonoMs;

    /// Places a wall-clock stamp on the monotonic timeline, as seen from now.
    fn mono_of_wall(&self, wall: WallMs) -> MonoMs {
        self.mono_ms().saturating_sub(self.wall_ms().saturating_sub(wall))
    }

    /// Converts a point on the monotonic timeline to wall-clock time, as seen from now.
    fn wall_of_mono(&self, mono: MonoMs) -> WallMs {
        self.wall_ms() + (mono - self.mono_ms())
    }
}

/// The real clocks.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A system clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> WallMs {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A wall clock set before 1970 is nonsense; treat it as the epoch.
            Err(_) => 0,
        }
    }

    fn mono_ms(&self) -> MonoMs {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    mono: Arc<AtomicI64>,
}

impl ManualClock {
    /// A manual clock starting at the given wall time and monotonic zero.
    pub fn new(wall: WallMs) -> Self {
        Self { wall: Arc::new(AtomicI64::new(wall)), mono: Arc::new(AtomicI64::new(0)) }
    }

    /// Advances both clocks by `ms`.
    pub fn advance(&self, ms: i64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.mono.fetch_add(ms, Ordering::SeqCst);
    }

    /// Steps only the wall clock, as NTP or an operator might.
    pub fn jump_wall(&self, ms: i64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> WallMs {
        self.wall.load(Ordering::SeqCst)
    }

    fn mono_ms(&self) -> MonoMs {
        self.mono.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_stamps_map_onto_the_monotonic_timeline() {
        let clock = ManualClock::new(1_000_000);
        clock.advance(5_000);
        assert_eq!(clock.mono_of_wall(1_000_000), 0);
        assert_eq!(clock.mono_of_wall(1_004_000), 4_000);
        assert_eq!(clock.wall_of_mono(0), 1_000_000);
    }

    #[test]
    fn a_wall_jump_moves_where_old_stamps_land() {
        let clock = ManualClock::new(1_000_000);
        clock.jump_wall(-3_600_000);
        assert_eq!(clock.mono_of_wall(1_000_000), clock.mono_ms() + 3_600_000);
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(1_729_740_000_123), "2024-10-24T03:20:00.123Z");
        assert_eq!(rfc3339(1_729_740_000_000), "2024-10-24T03:20:00.000Z");
        assert_eq!(compact_utc(1_729_740_000_123), "20241024T032000.123Z");
    }
}
