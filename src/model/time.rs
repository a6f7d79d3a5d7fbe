//! How the scheduler counts and writes time: milliseconds on two timelines, RFC 3339 UTC.

/// Milliseconds on the monotonic timeline of one process (may be negative for events that
/// happened before the process started).
pub type MonoMs = i64;

/// Milliseconds since the Unix epoch.
pub type WallMs = i64;

/// Formats a wall-clock stamp as RFC 3339 UTC with exactly three fraction digits, so
/// stamps sort and compare as text.
pub fn rfc3339(wall: WallMs) -> String {
    let nanos = i128::from(wall) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("@{wall}ms"),
    }
}

/// Formats a wall-clock stamp for file names: `20261126T233720.123Z`.
pub fn compact_utc(wall: WallMs) -> String {
    let nanos = i128::from(wall) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("{wall}"),
    }
}

/// A duration in whole milliseconds, for arithmetic on the timelines (saturating).
pub fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
