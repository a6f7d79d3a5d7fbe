//! How the scheduler counts and writes time: milliseconds on two timelines, RFC 3339 UTC.

/// Milliseconds on the monotonic timeline of one process (may be negative for events that
/// happened before the process started).
pub type MonoMs = i64;

/// Milliseconds since the Unix epoch.
pub type WallMs = i64;

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
