//! φ-backoff: after a failure, a cadence waits `base · φ^k · m` seconds, where k is its
//! failure level (capped) and m the error class's multiplier. A success resets k to 0.

use std::time::Duration;

use crate::model::ErrorClass;

/// The golden ratio.
pub const PHI: f64 = 1.618_033_988_749_895;

/// Backoff settings (`VMSH_BASE_BACKOFF`, `VMSH_MAX_BACKOFF`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Base delay in seconds.
    pub base_secs: f64,
    /// Highest level k.
    pub max_level: u32,
}

impl BackoffPolicy {
    /// The level after one more failure at `level`.
    pub fn next_level(&self, level: u32) -> u32 {
        level.saturating_add(1).min(self.max_level)
    }

    /// The delay before retrying at `level` after a failure of `class`.
    pub fn delay(&self, level: u32, class: ErrorClass) -> Duration {
        let exp = i32::try_from(level.min(self.max_level)).unwrap_or(i32::MAX);
        let secs = self.base_secs * PHI.powi(exp) * class.multiplier();
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// Level and delay after a failure of `class` at `level`.
    pub fn after_failure(&self, level: u32, class: ErrorClass) -> (u32, Duration) {
        let next = self.next_level(level);
        (next, self.delay(next, class))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BackoffPolicy = BackoffPolicy { base_secs: 5.0, max_level: 7 };

    fn close(a: Duration, secs: f64) -> bool {
        (a.as_secs_f64() - secs).abs() < 1e-6
    }

    #[test]
    fn first_failure_waits_base_times_phi() {
        let (k, d) = POLICY.after_failure(0, ErrorClass::Network);
        assert_eq!(k, 1);
        assert!(close(d, 5.0 * PHI), "{d:?}");
    }

    #[test]
    fn class_multipliers_scale_the_delay() {
        assert!(close(POLICY.delay(2, ErrorClass::Network), 5.0 * PHI * PHI));
        assert!(close(POLICY.delay(2, ErrorClass::Auth), 2.0 * 5.0 * PHI * PHI));
        assert!(close(POLICY.delay(2, ErrorClass::Validation), 0.5 * 5.0 * PHI * PHI));
        assert!(close(POLICY.delay(2, ErrorClass::Unknown), 5.0 * PHI * PHI));
    }

    #[test]
    fn level_is_capped_at_max() {
        let mut k = 0;
        for _ in 0..20 {
            k = POLICY.next_level(k);
        }
        assert_eq!(k, 7);
        assert!(close(POLICY.delay(k, ErrorClass::Network), 5.0 * PHI.powi(7)));
        assert_eq!(POLICY.delay(99, ErrorClass::Network), POLICY.delay(7, ErrorClass::Network));
    }

    #[test]
    fn delays_grow_with_every_failure_until_the_cap() {
        let mut k = 0;
        let mut last = Duration::ZERO;
        for _ in 0..7 {
            let (next, d) = POLICY.after_failure(k, ErrorClass::Network);
            assert!(d > last);
            (k, last) = (next, d);
        }
        assert_eq!(POLICY.after_failure(k, ErrorClass::Network), (7, last));
    }
}
