//! How the scheduler counts and writes time: milliseconds on two timelines, RFC 3339 UTC.

/// Milliseconds on the monotonic timeline of one process (may be negative for events that
/// happened before the process started).
pub type MonoMs = i64;

/// Milliseconds since the Unix epoch.
pub type WallMs = i64;

/// An optional millisecond stamp (on either timeline) in 8 bytes where an `Option<i64>` takes
/// 16: kept for each cadence of every namespace, that is megabytes at 100,000 namespaces.
/// `i64::MIN`, which no clock gives, is none; a stamp of it is stored as `i64::MIN + 1`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OptMs(i64);

impl OptMs {
    /// No stamp.
    pub const NONE: Self = Self(i64::MIN);

    /// `ms`, or none.
    pub fn new(ms: Option<i64>) -> Self {
        ms.map_or(Self::NONE, Self::some)
    }

    /// The stamp `ms`.
    pub fn some(ms: i64) -> Self {
        Self(ms.max(i64::MIN + 1))
    }

    /// The stamp, if there is one.
    pub fn get(self) -> Option<i64> {
        (self != Self::NONE).then_some(self.0)
    }

    /// Whether there is no stamp (for serde's `skip_serializing_if`).
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

/// Written and read as an `Option<i64>` is: a number, or null.
impl serde::Serialize for OptMs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for OptMs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<i64>::deserialize(deserializer).map(Self::new)
    }
}

impl Default for OptMs {
    fn default() -> Self {
        Self::NONE
    }
}

impl std::fmt::Debug for OptMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// Formats a wall-clock stamp as RFC 3339 UTC with exactly three fraction digits, so
/// stamps sort and compare as text.
pub fn rfc3339(wall: WallMs) -> String {
    utc(wall, "-", ":").unwrap_or_else(|| format!("@{wall}ms"))
}

/// Formats a wall-clock stamp for file names: `20261126T233720.123Z`.
pub fn compact_utc(wall: WallMs) -> String {
    utc(wall, "", "").unwrap_or_else(|| format!("{wall}"))
}

/// `YYYY-MM-DDThh:mm:ss.mmmZ` with the given separators, or nothing for a stamp outside the
/// calendar's range.
fn utc(wall: WallMs, date_sep: &str, time_sep: &str) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall) * 1_000_000).ok()?;
    Some(format!(
        "{:04}{date_sep}{:02}{date_sep}{:02}T{:02}{time_sep}{:02}{time_sep}{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    ))
}

/// A duration in whole milliseconds, for arithmetic on the timelines (saturating).
pub fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::OptMs;

    #[test]
    fn an_optional_stamp_keeps_every_stamp_but_the_one_that_means_none() {
        for ms in [0, -1, 1, i64::MAX, i64::MIN + 1] {
            assert_eq!(OptMs::some(ms).get(), Some(ms));
            assert_eq!(OptMs::new(Some(ms)), OptMs::some(ms));
        }
        assert_eq!(OptMs::some(i64::MIN).get(), Some(i64::MIN + 1), "a stamp, never none");
        assert_eq!(OptMs::new(None).get(), None);
        assert_eq!(OptMs::default(), OptMs::NONE);
        assert_eq!(std::mem::size_of::<OptMs>(), 8);
    }

    #[test]
    fn an_optional_stamp_reads_and_writes_as_an_optional_number() {
        for (text, ms) in
            [("1729740000000", OptMs::some(1_729_740_000_000)), ("-5", OptMs::some(-5)), ("null", OptMs::NONE)]
        {
            assert_eq!(serde_json::to_string(&ms).expect("writes"), text);
            assert_eq!(serde_json::from_str::<OptMs>(text).expect("reads"), ms);
        }
        assert!(serde_json::from_str::<OptMs>("\"soon\"").is_err());
    }
}
