//! Time sources. Two clocks with two jobs: the monotonic clock drives every timer inside one
//! process, so a wall-clock jump neither fires a burst of anchors nor stalls a cadence; the wall
//! clock only stamps what outlives the process (state, receipts, metrics) and re-bases those
//! stamps onto the monotonic timeline at start-up.
//!
//! Timers wait on the monotonic clock too ([`Clock::sleep_until`]), so a test that injects a
//! [`ManualClock`] decides when every cadence, retry and config tick fires, and hours of
//! schedule pass in milliseconds of real time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

pub use crate::model::time::{MonoMs, WallMs, compact_utc, rfc3339};

/// A source of both clocks; injectable so time-dependent logic is testable without waiting.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, Unix epoch milliseconds.
    fn wall_ms(&self) -> WallMs;
    /// Monotonic time in milliseconds since an arbitrary fixed origin.
    fn mono_ms(&self) -> MonoMs;

    /// Completes once the monotonic clock reaches `at` (at once if it has). Dropping the
    /// future cancels the wait. Polled only inside a tokio runtime.
    fn sleep_until(&self, at: MonoMs) -> BoxFuture<'static, ()>;

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

    fn sleep_until(&self, at: MonoMs) -> BoxFuture<'static, ()> {
        let deadline = self.origin.checked_add(Duration::from_millis(u64::try_from(at).unwrap_or(0)));
        Box::pin(async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                // Beyond what an `Instant` can hold: never, for any process that runs today.
                None => std::future::pending().await,
            }
        })
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    mono: Arc<AtomicI64>,
    /// Sleeps not yet due, woken by [`ManualClock::advance`].
    sleepers: Arc<Mutex<Vec<Sleeper>>>,
}

#[derive(Debug)]
struct Sleeper {
    at: MonoMs,
    wake: oneshot::Sender<()>,
}

impl ManualClock {
    /// A manual clock starting at the given wall time and monotonic zero.
    pub fn new(wall: WallMs) -> Self {
        Self { wall: Arc::new(AtomicI64::new(wall)), ..Self::default() }
    }

    /// Advances both clocks by `ms`, and wakes every sleep that is then due.
    pub fn advance(&self, ms: i64) {
        // Under the sleepers' lock, so a sleep begun meanwhile either sees the new time or is
        // woken here.
        let mut sleepers = self.sleepers.lock().unwrap_or_else(PoisonError::into_inner);
        self.wall.fetch_add(ms, Ordering::SeqCst);
        let now = self.mono.fetch_add(ms, Ordering::SeqCst) + ms;
        for sleeper in sleepers.extract_if(.., |s| s.at <= now) {
            let _ = sleeper.wake.send(());
        }
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

    fn sleep_until(&self, at: MonoMs) -> BoxFuture<'static, ()> {
        let mut sleepers = self.sleepers.lock().unwrap_or_else(PoisonError::into_inner);
        if self.mono.load(Ordering::SeqCst) >= at {
            return Box::pin(std::future::ready(()));
        }
        // Cancelled sleeps (a timer replaced, an actor stopped) go as new ones come.
        sleepers.retain(|s| !s.wake.is_closed());
        let (wake, woken) = oneshot::channel();
        sleepers.push(Sleeper { at, wake });
        Box::pin(async move {
            // The sender only goes with the clock: then the time never comes.
            if woken.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
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

    fn poll(sleep: &mut BoxFuture<'static, ()>) -> std::task::Poll<()> {
        sleep.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_manual_sleep_ends_when_the_clock_is_advanced_to_it_and_not_before() {
        let clock = ManualClock::new(0);
        let mut sleep = clock.sleep_until(1_000);
        clock.advance(999);
        assert!(poll(&mut sleep).is_pending());
        clock.advance(1);
        assert!(poll(&mut sleep).is_ready());
        assert!(poll(&mut clock.sleep_until(1_000)).is_ready(), "a time already passed is no wait");
    }

    #[test]
    fn a_wall_jump_wakes_no_sleep() {
        let clock = ManualClock::new(0);
        let mut sleep = clock.sleep_until(1_000);
        clock.jump_wall(3_600_000);
        assert!(poll(&mut sleep).is_pending());
    }

    #[test]
    fn a_dropped_sleep_is_forgotten() {
        let clock = ManualClock::new(0);
        drop(clock.sleep_until(1_000));
        let _kept = clock.sleep_until(2_000);
        assert_eq!(clock.sleepers.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn a_system_sleep_ends_at_its_monotonic_time() {
        let clock = SystemClock::new();
        let started = Instant::now();
        clock.sleep_until(clock.mono_ms() + 50).await;
        assert!(started.elapsed() >= Duration::from_millis(49), "woke after {:?}", started.elapsed());
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(1_729_740_000_123), "2024-10-24T03:20:00.123Z");
        assert_eq!(rfc3339(1_729_740_000_000), "2024-10-24T03:20:00.000Z");
        assert_eq!(compact_utc(1_729_740_000_123), "20241024T032000.123Z");
    }
}
