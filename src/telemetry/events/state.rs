//! What happens to the state's writes: every write is counted and timed
//! (`vmsh_state_writes_total{result}`, `vmsh_state_write_duration_seconds`); a failure is told
//! once per distinct error, and so is the recovery.

use std::time::Duration;

use slog::{Logger, error, info, warn};

use super::millis;
use crate::metrics::Metrics;
use crate::telemetry::InternalEvent;

/// A state write (a log append or a snapshot) is durable.
pub(crate) struct StateWriteSucceeded {
    /// How long it took.
    pub took: Duration,
}

impl InternalEvent for StateWriteSucceeded {
    fn emit(self, _: &Logger, metrics: &Metrics) {
        metrics.state_write_duration.observe(self.took.as_secs_f64());
        metrics.state_writes.with_label_values(&["success"]).inc();
    }
}

/// A state write failed; the state stays in memory and the write is retried.
pub(crate) struct StateWriteFailed<'a> {
    /// Where the state is written.
    pub path: &'a str,
    /// Why it failed.
    pub error: &'a str,
    /// How long it took to fail.
    pub took: Duration,
    /// The last write failed with the same error: counted, but not told again.
    pub repeated: bool,
}

impl InternalEvent for StateWriteFailed<'_> {
    fn emit(self, log: &Logger, metrics: &Metrics) {
        metrics.state_write_duration.observe(self.took.as_secs_f64());
        metrics.state_writes.with_label_values(&["failure"]).inc();
        if !self.repeated {
            error!(log, "cannot write state; keeping state in memory and retrying";
                "path" => self.path, "err" => %self.error);
        }
    }
}

/// A state write succeeded after failures.
pub(crate) struct StateWritableAgain<'a> {
    /// Where the state is written.
    pub path: &'a str,
}

impl InternalEvent for StateWritableAgain<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        info!(log, "state file writable again"; "path" => self.path);
    }
}

/// The state log was folded into a snapshot (in the background, or as the last write of a
/// shutdown). Counted as a write by [`StateWriteSucceeded`].
pub(crate) struct StateSnapshotWritten {
    /// The snapshot's size.
    pub bytes: u64,
    /// How long it took.
    pub took: Duration,
    /// It was the shutdown's last write.
    pub last: bool,
}

impl InternalEvent for StateSnapshotWritten {
    fn emit(self, log: &Logger, _: &Metrics) {
        info!(log, "state snapshot written"; "bytes" => self.bytes, "took_ms" => millis(self.took), "final" => self.last);
    }
}

/// The shutdown's last write could not fold the log into the state file. Nothing is lost:
/// every change is in the log, which the next start replays.
pub(crate) struct StateFoldFailed<'a> {
    /// Where the state is written.
    pub path: &'a str,
    /// Why it failed.
    pub error: &'a str,
}

impl InternalEvent for StateFoldFailed<'_> {
    fn emit(self, log: &Logger, _: &Metrics) {
        warn!(log, "could not fold the state log into the state file at shutdown; the log is kept and replayed at the next start";
            "path" => self.path, "err" => %self.error);
    }
}

/// Shutdown asked for the last write while writes were failing: it is tried once more now.
pub(crate) struct StateFlushRetried;

impl InternalEvent for StateFlushRetried {
    fn emit(self, log: &Logger, _: &Metrics) {
        warn!(log, "shutting down while the state cannot be written; trying once more");
    }
}

#[cfg(test)]
mod tests {
    use slog::Level;

    use super::*;
    use crate::telemetry::capture::{Capture, sample};

    fn writes(m: &Metrics, result: &str) -> Option<f64> {
        sample(m, &format!("vmsh_state_writes_total{{result=\"{result}\"}}"))
    }

    fn timed(m: &Metrics) -> (Option<f64>, Option<f64>) {
        (sample(m, "vmsh_state_write_duration_seconds_count"), sample(m, "vmsh_state_write_duration_seconds_sum"))
    }

    #[test]
    fn a_durable_write_is_counted_and_timed_without_a_line() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        StateWriteSucceeded { took: Duration::from_millis(2) }.emit(&capture.logger(), &m);
        assert_eq!((writes(&m, "success"), writes(&m, "failure")), (Some(1.0), Some(0.0)));
        assert_eq!(timed(&m), (Some(1.0), Some(0.002)));
        assert!(capture.lines().is_empty());
    }

    #[test]
    fn a_failed_write_is_counted_timed_and_told_once_per_distinct_error() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        let failed = |repeated| StateWriteFailed {
            path: "s.json",
            error: "disk full",
            took: Duration::from_millis(4),
            repeated,
        };
        failed(false).emit(&capture.logger(), &m);
        failed(true).emit(&capture.logger(), &m);
        assert_eq!((writes(&m, "success"), writes(&m, "failure")), (Some(0.0), Some(2.0)));
        assert_eq!(timed(&m), (Some(2.0), Some(0.008)));
        let line = capture.only();
        assert_eq!(line.level, Level::Error);
        assert_eq!(line.msg, "cannot write state; keeping state in memory and retrying");
        assert_eq!((line.field("path"), line.field("err")), ("s.json", "disk full"));
    }

    #[test]
    fn writes_succeeding_again_are_told_at_info() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        StateWritableAgain { path: "s.json" }.emit(&capture.logger(), &m);
        let line = capture.only();
        assert_eq!(
            (line.level, line.msg.as_str(), line.field("path")),
            (Level::Info, "state file writable again", "s.json")
        );
        assert_eq!(writes(&m, "success"), Some(0.0), "the write itself is counted by its own event");
    }

    #[test]
    fn a_snapshot_is_told_with_its_size_time_and_whether_it_was_the_last() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        StateSnapshotWritten { bytes: 4_096, took: Duration::from_millis(7), last: true }.emit(&capture.logger(), &m);
        let line = capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Info, "state snapshot written"));
        assert_eq!((line.field("bytes"), line.field("took_ms"), line.field("final")), ("4096", "7", "true"));
        assert_eq!(timed(&m).0, Some(0.0), "the write itself is counted by its own event");
    }

    #[test]
    fn a_last_fold_that_failed_is_warned_of_with_the_path_and_error() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        StateFoldFailed { path: "s.json", error: "read-only file system" }.emit(&capture.logger(), &m);
        let line = capture.only();
        assert_eq!(line.level, Level::Warning);
        assert_eq!(
            line.msg,
            "could not fold the state log into the state file at shutdown; the log is kept and replayed at the next start"
        );
        assert_eq!((line.field("path"), line.field("err")), ("s.json", "read-only file system"));
    }

    #[test]
    fn a_shutdown_while_writes_fail_is_warned_of_before_one_more_try() {
        let (capture, m) = (Capture::default(), Metrics::new().expect("metrics"));
        StateFlushRetried.emit(&capture.logger(), &m);
        let line = capture.only();
        assert_eq!(line.level, Level::Warning);
        assert_eq!(line.msg, "shutting down while the state cannot be written; trying once more");
    }
}
