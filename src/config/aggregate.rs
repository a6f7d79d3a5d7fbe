//! `aggregate: {window, maxLeaves}`, which any entry of the targets file may carry: the runs
//! that come due for the target within one window are anchored together, as the leaves of one
//! Merkle tree whose root is anchored once. Each driver's section reads it through
//! [`AggregateRaw::build`], so every section accepts and refuses the same values.

use std::time::Duration;

use serde::Deserialize;

use super::duration::parse_duration;
use super::targets::{Flex, Problem};

/// Shortest window: shorter ones save little and only add timers. The longest is the longest
/// duration of the targets file, a day.
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(100);

/// Most leaves one tree may have.
pub(crate) const MAX_LEAVES: u32 = 65_536;

/// Leaves of one tree when `maxLeaves` is not given.
pub(crate) const DEFAULT_MAX_LEAVES: u32 = 1_024;

/// `aggregate`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AggregateRaw {
    window: String,
    max_leaves: Option<Flex<u32>>,
}

/// How a target aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateSpec {
    /// How long an aggregate collects members after its first arrived.
    pub window: Duration,
    /// An aggregate with this many members is sealed at once.
    pub max_leaves: u32,
}

impl AggregateRaw {
    /// The spec, or what is wrong with it; `prefix` is the entry's field (`eip155.base`).
    pub(crate) fn build(&self, prefix: &str) -> Result<AggregateSpec, Vec<Problem>> {
        let mut problems = Vec::new();
        let window = match parse_duration(&self.window) {
            Ok(w) if w < MIN_WINDOW => {
                problems.push((format!("{prefix}.aggregate.window"), "is shorter than 100ms".to_string()));
                None
            }
            Ok(w) => Some(w),
            Err(e) => {
                problems.push((format!("{prefix}.aggregate.window"), e));
                None
            }
        };
        let max_leaves = self.max_leaves.map_or(DEFAULT_MAX_LEAVES, |Flex(n)| n);
        if !(1..=MAX_LEAVES).contains(&max_leaves) {
            problems.push((format!("{prefix}.aggregate.maxLeaves"), format!("must be 1 to {MAX_LEAVES}")));
        }
        match window {
            Some(window) if problems.is_empty() => Ok(AggregateSpec { window, max_leaves }),
            _ => Err(problems),
        }
    }
}

/// The spec of an entry's optional `aggregate`, or its problems.
pub(crate) fn build(raw: Option<&AggregateRaw>, prefix: &str) -> Result<Option<AggregateSpec>, Vec<Problem>> {
    raw.map(|r| r.build(prefix)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> AggregateRaw {
        serde_yaml::from_str(yaml).expect("shaped as aggregate")
    }

    #[test]
    fn a_window_and_max_leaves_within_their_limits_are_taken_and_max_leaves_defaults() {
        assert_eq!(
            raw("{window: 10s, maxLeaves: 8}").build("local.j"),
            Ok(AggregateSpec { window: Duration::from_secs(10), max_leaves: 8 })
        );
        assert_eq!(
            raw("{window: 100ms}").build("local.j"),
            Ok(AggregateSpec { window: MIN_WINDOW, max_leaves: DEFAULT_MAX_LEAVES })
        );
        assert_eq!(raw("{window: 24h, maxLeaves: '65536'}").build("x").map(|s| s.max_leaves), Ok(65_536));
    }

    #[test]
    fn a_window_or_max_leaves_out_of_bounds_names_the_field_and_why() {
        let cases = [
            ("{window: 99ms}", "local.j.aggregate.window", "shorter than 100ms"),
            ("{window: 25h}", "local.j.aggregate.window", "longer than a day"),
            ("{window: soon}", "local.j.aggregate.window", "not a duration"),
            ("{window: 1s, maxLeaves: 0}", "local.j.aggregate.maxLeaves", "1 to 65536"),
            ("{window: 1s, maxLeaves: 65537}", "local.j.aggregate.maxLeaves", "1 to 65536"),
        ];
        for (yaml, field, why) in cases {
            let problems = raw(yaml).build("local.j").expect_err(yaml);
            assert!(problems.iter().any(|(f, r)| f == field && r.contains(why)), "{yaml}: {problems:?}");
        }
    }
}
