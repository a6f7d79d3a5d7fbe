//! When a sender replaces a transaction that is not mined: `bumpAfter`, a duration
//! (`"3m"`) or a number of blocks (`"4 blocks"`).

use std::time::Duration;

use super::duration::parse_duration;

/// Most blocks `bumpAfter` may count: more would leave a stuck transaction for days.
pub(crate) const MAX_BLOCKS: u64 = 1_000;

/// How long an unmined transaction waits before it is replaced at a higher fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BumpAfter {
    /// After this long since it was sent.
    Time(Duration),
    /// After this many blocks were mined without it since it was sent.
    Blocks(u64),
}

impl BumpAfter {
    /// Whether a transaction sent at `sent_ms` (wall clock) and chain height `sent_height` is
    /// due for a replacement at `now_ms` and height `height`. A count of blocks without the
    /// height it was sent at falls back to never: the next send records it.
    pub fn due(self, sent_ms: Option<i64>, now_ms: i64, sent_height: Option<u64>, height: Option<u64>) -> bool {
        match self {
            BumpAfter::Time(d) => sent_ms.is_some_and(|sent| {
                let waited = u64::try_from(now_ms.saturating_sub(sent)).unwrap_or(0);
                waited >= u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }),
            BumpAfter::Blocks(n) => match (sent_height, height) {
                (Some(sent), Some(now)) => now.saturating_sub(sent) >= n,
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for BumpAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BumpAfter::Time(d) => write!(f, "{}s", d.as_secs_f64()),
            BumpAfter::Blocks(1) => f.write_str("1 block"),
            BumpAfter::Blocks(n) => write!(f, "{n} blocks"),
        }
    }
}

/// Parses `bumpAfter`: `<n> block(s)` with 1 ≤ n ≤ [`MAX_BLOCKS`], or a duration as
/// [`parse_duration`] reads it. The error does not repeat the value.
pub(crate) fn parse_bump_after(raw: &str) -> Result<BumpAfter, String> {
    let s = raw.trim();
    let blocks = s.strip_suffix("blocks").or_else(|| s.strip_suffix("block"));
    if let Some(n) = blocks {
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err("is not a number of blocks; write e.g. \"3 blocks\"".into());
        }
        return match n.parse::<u64>() {
            Ok(0) => Err("is zero blocks".into()),
            Ok(n) if n <= MAX_BLOCKS => Ok(BumpAfter::Blocks(n)),
            _ => Err(format!("is more than {MAX_BLOCKS} blocks")),
        };
    }
    parse_duration(s)
        .map(BumpAfter::Time)
        .map_err(|e| if e.starts_with("is not") { format!("{e}, or a number of blocks as \"3 blocks\"") } else { e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_durations_and_block_counts_and_refuses_the_rest() {
        assert_eq!(parse_bump_after("90s"), Ok(BumpAfter::Time(Duration::from_secs(90))));
        assert_eq!(parse_bump_after("3 blocks"), Ok(BumpAfter::Blocks(3)));
        assert_eq!(parse_bump_after("1 block"), Ok(BumpAfter::Blocks(1)));
        assert_eq!(parse_bump_after("2blocks"), Ok(BumpAfter::Blocks(2)));
        for bad in ["", "0 blocks", "blocks", "-1 blocks", "1.5 blocks", "1001 blocks", "5", "0s", "2d"] {
            assert!(parse_bump_after(bad).is_err(), "{bad}");
        }
        assert!(parse_bump_after("soon").is_err_and(|e| e.contains("3 blocks")));
    }

    #[test]
    fn is_due_after_its_time_or_its_blocks() {
        let time = BumpAfter::Time(Duration::from_secs(60));
        assert!(!time.due(Some(1_000), 60_999, None, None));
        assert!(time.due(Some(1_000), 61_000, None, None));
        assert!(!time.due(None, 1_000_000, None, None), "never sent: nothing to replace");
        let blocks = BumpAfter::Blocks(3);
        assert!(!blocks.due(Some(0), 0, Some(10), Some(12)));
        assert!(blocks.due(Some(0), 0, Some(10), Some(13)));
        assert!(!blocks.due(Some(0), 0, None, Some(13)), "height unknown at send");
        assert!(!blocks.due(Some(0), 0, Some(10), Some(9)), "a head below the send height is no progress");
    }
}
