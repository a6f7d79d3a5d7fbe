//! When a cadence is due: pure functions of (period, last success, retry time, now).
//!
//! A cadence is due when `now - last_success >= period`, and never before a pending backoff
//! retry. A cadence that never succeeded is due at once. After downtime the due time lies in
//! the past, so the cadence runs once, immediately, and the next due time counts from that
//! run: missed periods are not replayed.

use std::time::Duration;

use crate::clock::{MonoMs, WallMs};
use crate::model::time::duration_ms;

/// The instant a cadence is next due on the monotonic timeline; `None` means "now".
pub(crate) fn due_at(last_success: Option<MonoMs>, retry_at: Option<MonoMs>, period: Duration) -> Option<MonoMs> {
    let by_period = last_success.map(|t| t.saturating_add(duration_ms(period)));
    match (by_period, retry_at) {
        (Some(p), Some(r)) => Some(p.max(r)),
        (p, r) => p.or(r),
    }
}

/// The nominal due time of the period an attempt belongs to, in wall-clock time: the last
/// success plus one period, or 0 when the cadence never succeeded. It is the same for every
/// retry of one period and survives restarts, which makes it part of the attempt id.
pub(crate) fn nominal_due(last_success_wall: Option<WallMs>, period: Duration) -> WallMs {
    last_success_wall.map_or(0, |t| t.saturating_add(duration_ms(period)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a cadence is due at `now`.
    fn is_due(last_success: Option<MonoMs>, retry_at: Option<MonoMs>, period: Duration, now: MonoMs) -> bool {
        due_at(last_success, retry_at, period).is_none_or(|due| due <= now)
    }

    /// How long to wait from `now` until `due`.
    fn delay_until(due: Option<MonoMs>, now: MonoMs) -> Duration {
        let ms = due.map_or(0, |d| d.saturating_sub(now).max(0));
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    const P: Duration = Duration::from_secs(60);

    #[test]
    fn never_anchored_is_due_at_once() {
        assert_eq!(due_at(None, None, P), None);
        assert!(is_due(None, None, P, 0));
        assert_eq!(delay_until(None, 123), Duration::ZERO);
    }

    #[test]
    fn due_one_period_after_the_last_success() {
        assert_eq!(due_at(Some(1_000), None, P), Some(61_000));
        assert!(!is_due(Some(1_000), None, P, 60_999));
        assert!(is_due(Some(1_000), None, P, 61_000));
        assert_eq!(delay_until(Some(61_000), 31_000), Duration::from_secs(30));
    }

    #[test]
    fn a_backoff_retry_is_never_brought_forward() {
        assert_eq!(due_at(Some(0), Some(90_000), P), Some(90_000));
        assert!(!is_due(Some(0), Some(90_000), P, 80_000));
        assert_eq!(due_at(None, Some(5_000), P), Some(5_000));
    }

    #[test]
    fn after_downtime_a_missed_cadence_runs_once() {
        // Last success ten periods ago: due now, and after this run the next due time is one
        // period from the run, not from the old success.
        let now = 600_000;
        assert_eq!(delay_until(due_at(Some(0), None, P), now), Duration::ZERO);
        assert_eq!(due_at(Some(now), None, P), Some(now + 60_000));
    }

    #[test]
    fn nominal_due_is_stable_per_period() {
        assert_eq!(nominal_due(None, P), 0);
        assert_eq!(nominal_due(Some(1_000), P), 61_000);
    }
}
