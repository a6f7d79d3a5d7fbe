//! How the scheduler counts time: milliseconds on two timelines.

/// Milliseconds on the monotonic timeline of one process (may be negative for events that
/// happened before the process started).
pub type MonoMs = i64;

/// Milliseconds since the Unix epoch.
pub type WallMs = i64;
