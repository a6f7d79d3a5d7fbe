//! Jitter: each run by period of a cadence is shifted by an offset in `[0, jitter]`, drawn
//! from (namespace, cadence, period index) by SHA-256. The same period always gets the same
//! offset, across restarts and replicas, while the cadences of a fleet that share a grid
//! spread over the window instead of firing together.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::WallMs;
use crate::model::CadenceKind;
use crate::model::time::duration_ms;

/// What a cadence's offsets are drawn from: its namespace and kind.
pub(crate) fn seed(namespace: &str, kind: CadenceKind) -> u64 {
    let mut h = Sha256::new();
    // Length-prefixed, so no two (namespace, cadence) pairs share an input.
    h.update((namespace.len() as u64).to_be_bytes());
    h.update(namespace.as_bytes());
    h.update(kind.as_str().as_bytes());
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// The offset (ms, `0..=jitter`) of the run due at `grid_wall` (Unix ms) on a grid of
/// `period`: the period index is the due time in whole periods, which a restart computes
/// again from the state.
pub(crate) fn offset_ms(seed: u64, grid_wall: WallMs, period: Duration, jitter: Duration) -> i64 {
    let bound = duration_ms(jitter);
    if bound <= 0 {
        return 0;
    }
    let index = grid_wall.div_euclid(duration_ms(period).max(1));
    let mut h = Sha256::new();
    h.update(seed.to_be_bytes());
    h.update(index.to_be_bytes());
    let draw = first_u64(&h.finalize());
    i64::try_from(draw % (u64::try_from(bound).unwrap_or(0) + 1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const T0: WallMs = 1_800_000_000_000;

    #[test]
    fn offsets_stay_within_the_bound_and_are_the_same_for_the_same_period() {
        let jitter = Duration::from_secs(6);
        for ns in 0..200 {
            let s = seed(&format!("ns{ns}"), CadenceKind::Fast);
            for k in 0..20 {
                let at = T0 + k * 60_000;
                let o = offset_ms(s, at, MINUTE, jitter);
                assert!((0..=6_000).contains(&o), "{o}");
                assert_eq!(o, offset_ms(s, at, MINUTE, jitter), "deterministic");
                // Any instant within the same period gives the period's offset.
                assert_eq!(o, offset_ms(s, at + 59_999 - at.rem_euclid(60_000), MINUTE, jitter));
            }
        }
        assert_eq!(offset_ms(seed("a", CadenceKind::Fast), T0, MINUTE, Duration::ZERO), 0);
    }

    #[test]
    fn a_fleet_on_one_grid_spreads_over_the_window() {
        let jitter = Duration::from_secs(10);
        // 1,000 namespaces due at the same instant: offsets land in every tenth of the window.
        let mut tenths = [0u32; 10];
        for ns in 0..1_000 {
            let o = offset_ms(seed(&format!("ns{ns}"), CadenceKind::Fast), T0, MINUTE, jitter);
            tenths[usize::try_from(o.min(9_999) / 1_000).unwrap_or(0)] += 1;
        }
        assert!(tenths.iter().all(|n| (60..=140).contains(n)), "{tenths:?}");
        // Cadences of one namespace, and one cadence's successive periods, draw apart.
        let a = seed("a", CadenceKind::Fast);
        assert_ne!(a, seed("a", CadenceKind::Strong));
        let draws: std::collections::BTreeSet<i64> =
            (0..50).map(|k| offset_ms(a, T0 + k * 60_000, MINUTE, jitter)).collect();
        assert!(draws.len() > 40, "{draws:?}");
    }
}
